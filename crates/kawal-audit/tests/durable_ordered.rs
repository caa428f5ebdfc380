//! PL-4-1: every security event is recorded, durably and in order, before `append` returns,
//! and survives a restart of the writer.

mod common;

use common::*;
use kawal_audit::{Event, Filter, Outcome};

/// G045: PL-4-1
#[test]
fn an_event_is_in_the_file_when_append_returns() {
    let fx = Fixture::new();
    let log = fx.open();
    for i in 0..25u64 {
        let seq = log
            .append(event(i).with("marker", format!("m-{i}")))
            .unwrap();
        // Read the file behind the writer's back, while it is still open.
        let lines = fx.all_lines();
        let last = parse(&lines.last().unwrap().1);
        assert_eq!(last.seq, seq);
        assert_eq!(last.details.get("marker"), Some(&format!("m-{i}").into()));
    }
    drop(log);
}

/// G045: PL-4-1
#[test]
fn seqs_are_gap_free_and_in_append_order_across_restarts() {
    let fx = Fixture::new();
    let mut seqs = Vec::new();
    for run in 0..3u64 {
        let log = fx.open();
        for i in 0..7 {
            seqs.push(log.append(event(run * 100 + i)).unwrap());
        }
        let batch: Vec<Event> = (0..5).map(|i| event(run * 100 + 50 + i)).collect();
        seqs.extend(log.append_batch(batch).unwrap());
        log.close().unwrap();
    }
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let entries: Vec<_> = kawal_audit::read_entries(fx.dir(), Filter::default())
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let logged: Vec<u64> = entries.iter().map(|e| e.seq).collect();
    assert_eq!(
        logged, seqs,
        "every appended event, in order, nothing else but checkpoints"
    );
    let ns: Vec<u64> = entries
        .iter()
        .map(|e| match e.details.get("n") {
            Some(kawal_audit::Value::Int(n)) => u64::try_from(*n).unwrap(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(ns.windows(2).all(|w| w[0] < w[1]));
    let report = fx.verify().unwrap();
    assert_eq!(report.last_seq, report.entries);
    assert_eq!(report.unsigned_tail, 0, "close() ends with a checkpoint");
}

/// G045: PL-4-1
#[test]
fn checkpoints_come_at_least_every_n_entries_and_on_request() {
    let fx = Fixture::new();
    let log = fx.open();
    for i in 0..35 {
        log.append(event(i)).unwrap();
    }
    let cp = log.checkpoint().unwrap();
    assert_eq!(
        log.checkpoint().unwrap(),
        cp,
        "no second checkpoint without new entries"
    );
    assert_eq!(
        fx.anchor().unwrap().seq,
        cp,
        "the anchor follows the durable checkpoint"
    );
    log.close().unwrap();
    let mut since = 0;
    for (_, line) in fx.all_lines() {
        if parse(&line).is_checkpoint() {
            since = 0;
        } else {
            since += 1;
            assert!(since <= 10, "more than 10 entries without a checkpoint");
        }
    }
}

/// G045: PL-4-1
#[test]
fn invalid_events_are_refused_without_touching_the_log() {
    let fx = Fixture::new();
    let log = fx.open();
    let bad = [
        Event::new("nodots", "alice", Outcome::Info),
        Event::new("auth.login", "", Outcome::Info),
        Event::new("audit.checkpoint", "alice", Outcome::Info),
        Event::new("auth.login", "alice", Outcome::Info).with("bad key", 1u8),
    ];
    for e in bad {
        assert!(matches!(
            log.append(e),
            Err(kawal_audit::Error::InvalidEvent { .. })
        ));
    }
    assert_eq!(log.append(event(1)).unwrap(), 1);
}
