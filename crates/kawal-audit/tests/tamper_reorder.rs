//! Attack: reordering entries or segment files (to make an event appear before or after
//! another).

mod common;

use common::*;
use kawal_audit::{AuditOptions, Problem};

/// G045: PL-4-2
#[test]
fn detects_two_swapped_entries() {
    let fx = Fixture::new();
    fx.fill(30);
    let seg = &fx.segments()[0];
    let mut lines = read_lines(seg);
    lines.swap(3, 4);
    write_lines(seg, &lines);
    let b = bad(fx.verify());
    assert_eq!(b.line, 4);
    assert_eq!(
        b.problem,
        Problem::Seq {
            expected: 4,
            found: 5
        }
    );
}

/// G045: PL-4-2
#[test]
fn detects_swapped_entries_with_seqs_and_chain_rewritten() {
    let fx = Fixture::new();
    fx.fill(30);
    let seg = &fx.segments()[0];
    let mut lines = read_lines(seg);
    let (mut a, mut b) = (parse(&lines[3]), parse(&lines[4]));
    std::mem::swap(&mut a.seq, &mut b.seq);
    lines[3] = line_of(&b);
    lines[4] = line_of(&a);
    rechain(&mut lines, 3, None);
    write_lines(seg, &lines);
    let found = bad(fx.verify_without_anchor());
    assert!(
        matches!(found.problem, Problem::BadSignature { .. }),
        "{found}"
    );
}

/// G045: PL-4-2
#[test]
fn detects_swapped_segment_files() {
    let fx = Fixture::new();
    let log = fx
        .open_with(AuditOptions {
            segment_max_bytes: 2_000,
            ..small_options()
        })
        .unwrap();
    for i in 0..40 {
        log.append(event(i)).unwrap();
    }
    log.close().unwrap();
    let segs = fx.segments();
    assert!(segs.len() >= 3);
    let (one, two) = (
        std::fs::read(&segs[0]).unwrap(),
        std::fs::read(&segs[1]).unwrap(),
    );
    std::fs::write(&segs[0], two).unwrap();
    std::fs::write(&segs[1], one).unwrap();
    let b = bad(fx.verify());
    assert_eq!(b.segment.as_deref(), Some(segs[0].as_path()));
    assert_eq!(b.line, 1);
    assert!(matches!(b.problem, Problem::Seq { expected: 1, .. }), "{b}");
}
