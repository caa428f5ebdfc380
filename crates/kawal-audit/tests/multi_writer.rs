//! PL-4-1 and PL-4-2 with two writers on one log (the daemon and a CLI command): the lock
//! file serialises their batches, and each follows the other's entries before appending.

mod common;

use std::sync::Arc;

use common::*;
use kawal_audit::AuditOptions;

/// G045: PL-4-2
#[test]
fn two_writers_interleave_into_one_valid_chain() {
    let fx = Fixture::new();
    let options = || AuditOptions {
        segment_max_bytes: 4_000,
        ..small_options()
    };
    // Two independent opens: separate lock file descriptions, exactly as two processes.
    let daemon = Arc::new(fx.open_with(options()).unwrap());
    let cli = Arc::new(fx.open_with(options()).unwrap());
    let mut handles = Vec::new();
    for (w, log) in [(0u64, &daemon), (1, &cli), (2, &daemon), (3, &cli)] {
        let log = Arc::clone(log);
        handles.push(std::thread::spawn(move || {
            (0..40)
                .map(|i| log.append(event(w * 1000 + i)).unwrap())
                .collect::<Vec<_>>()
        }));
    }
    let mut all: Vec<u64> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    Arc::try_unwrap(cli).unwrap().close().unwrap();
    Arc::try_unwrap(daemon).unwrap().close().unwrap();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 160, "no seq handed out twice");
    let report = fx.verify().unwrap();
    assert_eq!(report.entries, report.last_seq);
    assert_eq!(report.entries, 160 + report.checkpoints);
    assert!(report.segments > 1);
    // The anchor is the last checkpoint in the log: saved in log order across writers.
    assert_eq!(
        fx.anchor().unwrap().seq,
        report.last_checkpoint_seq.unwrap()
    );
}

/// G045: PL-4-2
#[test]
fn a_writer_notices_its_segment_being_replaced_and_refuses() {
    let fx = Fixture::new();
    let log = fx.open();
    log.append(event(1)).unwrap();
    let seg = fx.segments()[0].clone();
    let content = std::fs::read(&seg).unwrap();
    std::fs::remove_file(&seg).unwrap();
    std::fs::write(&seg, content).unwrap(); // same bytes, another file
    let err = log.append(event(2)).unwrap_err();
    assert!(err.to_string().contains("deleted or replaced"), "{err}");
    // The log is failed: later appends fail too rather than vanish.
    assert!(matches!(
        log.append(event(3)),
        Err(kawal_audit::Error::LogFailed { .. })
    ));
}
