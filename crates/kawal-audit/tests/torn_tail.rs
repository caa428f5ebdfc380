//! A crash in the middle of a write leaves an incomplete last line. It was never
//! acknowledged, so removing it loses no recorded event; the removal itself is recorded.

mod common;

use std::io::Write;

use common::*;

/// G045: PL-4-2
#[test]
fn an_incomplete_last_line_is_reported_then_removed_with_a_record() {
    let fx = Fixture::new();
    fx.fill(8);
    let seg = fx.segments()[0].clone();
    let mut f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
    let partial = b"{\"seq\":99,\"wall\":\"2025-";
    f.write_all(partial).unwrap();
    drop(f);
    let report = fx.verify().unwrap();
    assert_eq!(report.torn_tail_bytes, Some(partial.len() as u64));

    let log = fx.open();
    log.append(event(100)).unwrap();
    log.close().unwrap();
    let report = fx.verify().unwrap();
    assert_eq!(report.torn_tail_bytes, None);
    let lines = read_lines(&seg);
    let record = lines
        .iter()
        .map(|l| parse(l))
        .find(|e| e.event == "audit.tail_repaired")
        .unwrap();
    assert_eq!(record.details.get("bytes"), Some(&partial.len().into()));
}
