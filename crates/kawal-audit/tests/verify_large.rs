//! `verify` splits large segments across threads: it must still find the first bad entry and
//! name its exact line, wherever in the segment it is.

mod common;

use common::*;
use kawal_audit::{AuditOptions, Outcome, Problem};

/// G045: PL-4-2
#[test]
fn finds_the_first_bad_entry_in_any_part_of_a_large_segment() {
    let fx = Fixture::new();
    let log = fx
        .open_with(AuditOptions {
            checkpoint_every: 500,
            ..AuditOptions::default()
        })
        .unwrap();
    for b in 0..40 {
        log.append_batch((0..100).map(|i| event(b * 100 + i)).collect())
            .unwrap();
    }
    log.close().unwrap();
    let seg = &fx.segments()[0];
    assert!(
        std::fs::metadata(seg).unwrap().len() > 1 << 20,
        "big enough to be split"
    );
    let report = fx.verify().unwrap();
    assert_eq!(report.entries, report.last_seq);

    let orig = read_lines(seg);
    // Near the start, in the middle, and near the end; the earliest of two edits is reported.
    for targets in [
        vec![10],
        vec![orig.len() / 2 + 3],
        vec![orig.len() - 20],
        vec![3000, 3500],
    ] {
        let mut lines = orig.clone();
        for &t in &targets {
            let mut e = parse(&lines[t]);
            assert!(!e.is_checkpoint());
            e.outcome = Outcome::Denied;
            lines[t] = line_of(&e);
        }
        write_lines(seg, &lines);
        let b = bad(fx.verify());
        let first = targets[0];
        assert_eq!(
            b.line,
            first as u64 + 2,
            "{targets:?}: the entry after the edit"
        );
        assert_eq!(b.seq, Some(parse(&lines[first + 1]).seq));
        assert!(matches!(b.problem, Problem::Prev { .. }), "{b}");
    }
    write_lines(seg, &orig);
    fx.verify().unwrap();
}
