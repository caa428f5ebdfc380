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
        // Read the file behind the writer's back, while it is still open: the event, then
        // the checkpoint that signs it, written and synced with it.
        let lines = fx.all_lines();
        let last = parse(&lines.last().unwrap().1);
        assert!(last.is_checkpoint());
        assert_eq!(last.seq, seq + 1);
        let event = parse(&lines[lines.len() - 2].1);
        assert_eq!(event.seq, seq);
        assert_eq!(event.details.get("marker"), Some(&format!("m-{i}").into()));
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
fn every_batch_is_signed_and_the_anchor_saved_every_n_entries_and_on_request() {
    let fx = Fixture::new();
    let log = fx.open();
    let mut anchors = std::collections::BTreeSet::new();
    for i in 0..35 {
        let seq = log.append(event(i)).unwrap();
        // The batch's checkpoint is seq + 1; the anchor lags it by fewer than 10 entries.
        let anchored = fx.anchor().map_or(0, |a| a.seq);
        assert!(
            seq + 1 - anchored < 10,
            "anchor {anchored} too far behind {seq}"
        );
        anchors.insert(anchored);
    }
    assert!(
        anchors.len() < 10,
        "the anchor is not saved for every batch: {anchors:?}"
    );
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
    // One append per batch: each event is followed at once by the checkpoint signing it.
    let lines = fx.all_lines();
    for pair in lines.chunks(2) {
        assert!(!parse(&pair[0].1).is_checkpoint());
        assert!(parse(&pair[1].1).is_checkpoint(), "an event left unsigned");
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

/// G045: PL-4-1
///
/// `append_then` returns at once and calls back only when the event is durable: the callback
/// finds the event and its checkpoint in the file. Invalid events and a closed log are
/// answered through the callback too, never dropped silently.
#[test]
fn append_then_answers_once_the_event_is_in_the_file() {
    use std::sync::mpsc;
    let fx = Fixture::new();
    let log = fx.open();
    let (tx, rx) = mpsc::channel();
    let audit_dir = fx.dir().join("audit");
    for i in 0..20u64 {
        let tx = tx.clone();
        let dir = audit_dir.clone();
        log.append_then(event(i).with("marker", format!("n-{i}")), move |r| {
            let seq = r.unwrap();
            // Read the files from the callback itself: the event must already be there.
            let found = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
                .map(|p| std::fs::read_to_string(p).unwrap_or_default())
                .any(|text| {
                    text.lines()
                        .any(|l| parse(l).seq == seq && l.contains(&format!("n-{i}")))
                });
            tx.send((i, seq, found)).unwrap();
        });
    }
    let mut got: Vec<(u64, u64, bool)> = (0..20)
        .map(|_| rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap())
        .collect();
    got.sort_unstable();
    for (i, seq, found) in &got {
        assert!(
            found,
            "event {i} (seq {seq}) not in the file when its callback ran"
        );
    }
    let mut seqs: Vec<u64> = got.iter().map(|g| g.1).collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), 20);

    let tx2 = tx;
    log.append_then(Event::new("nodots", "alice", Outcome::Info), move |r| {
        tx2.send((
            0,
            0,
            matches!(r, Err(kawal_audit::Error::InvalidEvent { .. })),
        ))
        .unwrap();
    });
    assert!(
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .unwrap()
            .2
    );
}
