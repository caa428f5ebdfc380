//! PL-4-1 and PL-4-2 under load: many threads appending at once (group commit) lose nothing,
//! get unique seqs, and leave a log that verifies.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use common::*;
use kawal_audit::{AuditOptions, Event, Filter, Outcome, Value};

/// G045: PL-4-1
#[test]
fn many_threads_appending_leave_every_event_once_in_a_valid_chain() {
    const THREADS: u64 = 64;
    const EACH: u64 = 60;
    let fx = Fixture::new();
    let options = AuditOptions {
        checkpoint_every: 100,
        segment_max_bytes: 64 << 10,
        ..AuditOptions::default()
    };
    let log = Arc::new(fx.open_with(options).unwrap());
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                let mut seqs = Vec::new();
                for i in 0..EACH {
                    let e = Event::new("sensor.publish", "sensor-x", Outcome::Success)
                        .with("thread", t)
                        .with("i", i);
                    if i % 10 == 0 {
                        seqs.extend(
                            log.append_batch(vec![e.clone(), e.with("dup", true)])
                                .unwrap(),
                        );
                    } else {
                        seqs.push(log.append(e).unwrap());
                    }
                }
                seqs
            })
        })
        .collect();
    let mut all = Vec::new();
    for h in handles {
        let seqs = h.join().unwrap();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "a thread's events stay in its order"
        );
        all.extend(seqs);
    }
    let stats = log.stats();
    Arc::try_unwrap(log).unwrap().close().unwrap();

    let expected = THREADS * (EACH + EACH / 10);
    let unique: BTreeSet<u64> = all.iter().copied().collect();
    assert_eq!(unique.len() as u64, expected, "seqs are unique");
    assert!(
        stats.batches < stats.entries,
        "group commit: fewer syncs than entries"
    );

    let report = fx.verify().unwrap();
    assert!(report.segments > 1, "rotation happened");
    assert_eq!(report.entries, report.last_seq, "gap-free");
    assert_eq!(report.entries, expected + report.checkpoints);
    let mut seen = BTreeSet::new();
    for e in kawal_audit::read_entries(fx.dir(), Filter::default()).unwrap() {
        let e = e.unwrap();
        assert!(unique.contains(&e.seq));
        let key = |k: &str| match e.details.get(k) {
            Some(Value::Int(n)) => *n,
            other => panic!("{other:?}"),
        };
        assert!(seen.insert((key("thread"), key("i"), e.details.get("dup").is_some())));
    }
    assert_eq!(seen.len() as u64, expected, "every event is in the log");
}
