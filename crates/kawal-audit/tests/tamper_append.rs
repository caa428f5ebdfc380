//! Attack: appending well-chained entries at the end of the log (seq and `prev` right, no key
//! needed), after the last checkpoint, so that the next writer signs them. Every batch a
//! writer makes ends with a signed checkpoint, so such a tail is never adopted silently: at
//! open and when a running writer catches up, it is a tamper finding.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::*;
use kawal_audit::{AuditLog, AuditOptions, Error, Outcome, SystemClock, TamperFinding};

/// Appends a forged entry that links to the last line of `seg`; returns its seq.
#[allow(clippy::unwrap_used, reason = "test helper")]
fn forge_append(seg: &Path) -> u64 {
    let mut lines = read_lines(seg);
    let last = parse(lines.last().unwrap());
    let mut e = lines
        .iter()
        .map(|l| parse(l))
        .find(|e| !e.is_checkpoint())
        .unwrap();
    e.seq = last.seq + 1;
    e.prev = last.hash();
    e.actor = "mallory".into();
    e.outcome = Outcome::Success;
    lines.push(line_of(&e));
    write_lines(seg, &lines);
    e.seq
}

#[allow(clippy::unwrap_used, reason = "test helper")]
fn open_after_tamper(fx: &Fixture) -> AuditLog {
    AuditLog::open_after_tamper(
        fx.dir(),
        UID,
        fx.signer.clone(),
        fx.anchors.clone(),
        Arc::new(SystemClock::new()),
        small_options(),
    )
    .unwrap()
}

/// G045: PL-4-2
#[test]
fn a_forged_entry_appended_at_the_end_is_refused_at_open_and_recorded_for_good() {
    let fx = Fixture::new();
    fx.fill(12);
    let seg = fx.segments()[0].clone();
    let forged = forge_append(&seg);
    // The chain alone cannot tell: verify sees an unsigned tail.
    assert_eq!(fx.verify().unwrap().unsigned_tail, 1);

    let refused = fx.open_with(small_options());
    let Err(Error::Tampered { finding }) = refused else {
        panic!("expected the open to be refused, got {refused:?}");
    };
    assert_eq!(
        finding,
        TamperFinding::UnsignedTail {
            first_seq: forged,
            last_seq: forged
        }
    );

    let log = open_after_tamper(&fx);
    log.append(event(99)).unwrap();
    log.close().unwrap();

    let report = fx.verify().unwrap();
    let record_seq = forged + 1;
    assert_eq!(report.tamper_records, vec![record_seq]);
    assert_eq!(report.unsigned_tail, 0);
    let lines = read_lines(&seg);
    let record = parse(&lines[usize::try_from(record_seq).unwrap() - 1]);
    assert_eq!(record.event, "audit.tamper_detected");
    assert_eq!(record.outcome, Outcome::Failure);
    assert_eq!(record.details.get("finding"), Some(&"unsigned_tail".into()));
    assert_eq!(record.details.get("first_seq"), Some(&forged.into()));
    assert_eq!(record.details.get("last_seq"), Some(&forged.into()));
    assert!(
        parse(&lines[usize::try_from(record_seq).unwrap()]).is_checkpoint(),
        "the record is signed at once"
    );
    // Recorded once: the log opens cleanly now.
    fx.open_with(small_options()).unwrap().close().unwrap();
    assert_eq!(fx.verify().unwrap().tamper_records, vec![record_seq]);
}

/// G045: PL-4-2
#[test]
fn a_forged_tail_with_a_checkpoint_under_another_key_is_still_unsigned() {
    let fx = Fixture::new();
    fx.fill(5);
    let seg = fx.segments()[0].clone();
    let forged = forge_append(&seg);
    // The attacker adds a checkpoint signed with a key of their own, claiming our version.
    let mut lines = read_lines(&seg);
    let mut cp = lines
        .iter()
        .map(|l| parse(l))
        .find(kawal_audit::Entry::is_checkpoint)
        .unwrap();
    cp.seq = forged + 1;
    lines.push(line_of(&cp));
    let n = lines.len();
    let attacker = TestSigner::new(1);
    rechain(
        &mut lines,
        n - 1,
        Some(&attacker as &dyn kawal_audit::CheckpointSigner),
    );
    write_lines(&seg, &lines);
    assert!(matches!(
        fx.open_with(small_options()),
        Err(Error::Tampered {
            finding: TamperFinding::UnsignedTail { first_seq, last_seq }
        }) if first_seq == forged && last_seq == forged + 1
    ));
}

/// G045: PL-4-2
#[test]
fn a_running_writer_refuses_a_forged_entry_appended_behind_its_back() {
    let fx = Fixture::new();
    let log = fx.open();
    log.append(event(1)).unwrap();
    let forged = forge_append(&fx.segments()[0]);
    let err = log.append(event(2)).unwrap_err();
    let Error::LogFailed { cause } = err else {
        panic!("expected the log to fail, got {err:?}");
    };
    assert!(
        matches!(
            &*cause,
            Error::Tampered {
                finding: TamperFinding::UnsignedTail { first_seq, last_seq }
            } if *first_seq == forged && *last_seq == forged
        ),
        "{cause}"
    );
}

/// G045: PL-4-2
#[test]
fn a_running_writer_that_continues_after_tamper_records_the_forged_entry() {
    let fx = Fixture::new();
    let log = open_after_tamper(&fx);
    log.append(event(1)).unwrap();
    let forged = forge_append(&fx.segments()[0]);
    let seq = log.append(event(2)).unwrap();
    log.close().unwrap();
    let report = fx.verify().unwrap();
    assert_eq!(report.tamper_records, vec![forged + 1]);
    assert_eq!(seq, forged + 3, "record, its checkpoint, then the event");
    let record = parse(&read_lines(&fx.segments()[0])[usize::try_from(forged).unwrap()]);
    assert_eq!(record.details.get("first_seq"), Some(&forged.into()));
}

/// G045: PL-4-2
#[test]
fn two_writers_with_the_same_key_follow_each_other_without_findings() {
    let fx = Fixture::new();
    let a = Arc::new(fx.open());
    let b = Arc::new(fx.open());
    let handles: Vec<_> = [&a, &b, &a, &b]
        .into_iter()
        .enumerate()
        .map(|(w, log)| {
            let log = Arc::clone(log);
            std::thread::spawn(move || {
                for i in 0..30u64 {
                    if i % 3 == 0 {
                        let batch = (0..4)
                            .map(|j| event(w as u64 * 1000 + i * 10 + j))
                            .collect();
                        log.append_batch(batch).unwrap();
                    } else {
                        log.append(event(w as u64 * 1000 + i)).unwrap();
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    Arc::try_unwrap(a).unwrap().close().unwrap();
    Arc::try_unwrap(b).unwrap().close().unwrap();
    let report = fx.verify().unwrap();
    assert!(report.tamper_records.is_empty());
    assert_eq!(report.unsigned_tail, 0);
    assert_eq!(report.entries, 4 * (10 * 4 + 20) + report.checkpoints);
    fx.open_with(small_options()).unwrap().close().unwrap();
}

/// G045: PL-4-2
#[test]
fn a_writer_does_not_adopt_batches_signed_with_another_key() {
    let fx = Fixture::new();
    let ours = fx.open();
    // Another writer with a key that is not ours (same version), opened on the same empty
    // log: its batches are signed, but not by us, so they are not adopted.
    let theirs = AuditLog::open(
        fx.dir(),
        UID,
        Arc::new(TestSigner::new(1)),
        Arc::new(kawal_audit::FileAnchorStore::new(
            fx.dir().join("other.json"),
        )),
        Arc::new(SystemClock::new()),
        AuditOptions::default(),
    )
    .unwrap();
    let their_seq = theirs.append(event(2)).unwrap();
    theirs.close().unwrap();
    assert_eq!(their_seq, 1);
    let err = ours.append(event(3)).unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("entries {their_seq} to {}", their_seq + 1)),
        "{err}"
    );
}
