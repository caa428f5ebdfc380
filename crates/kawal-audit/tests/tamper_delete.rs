//! Attack: removing entries (to hide an event), or whole segment files, from the middle or
//! the start of the log.

mod common;

use common::*;
use kawal_audit::{AuditOptions, Problem};

/// G045: PL-4-2
#[test]
fn detects_a_deleted_entry() {
    let fx = Fixture::new();
    fx.fill(30);
    let seg = &fx.segments()[0];
    let mut lines = read_lines(seg);
    lines.remove(7); // seq 8
    write_lines(seg, &lines);
    let b = bad(fx.verify());
    assert_eq!((b.line, b.seq), (8, Some(9)));
    assert_eq!(
        b.problem,
        Problem::Seq {
            expected: 8,
            found: 9
        }
    );
}

/// G045: PL-4-2
#[test]
fn detects_a_deleted_entry_with_seqs_renumbered_and_chain_recomputed() {
    let fx = Fixture::new();
    fx.fill(30);
    let seg = &fx.segments()[0];
    let mut lines = read_lines(seg);
    lines.remove(7);
    for line in lines.iter_mut().skip(7) {
        let mut e = parse(line);
        e.seq -= 1;
        *line = line_of(&e);
    }
    rechain(&mut lines, 7, None);
    write_lines(seg, &lines);
    let b = bad(fx.verify_without_anchor());
    assert!(matches!(b.problem, Problem::BadSignature { .. }), "{b}");
}

/// G045: PL-4-2
#[test]
fn detects_a_deleted_segment_in_the_middle_and_at_the_start() {
    let fx = Fixture::new();
    let options = AuditOptions {
        segment_max_bytes: 2_000,
        ..small_options()
    };
    let log = fx.open_with(options).unwrap();
    for i in 0..60 {
        log.append(event(i)).unwrap();
    }
    log.close().unwrap();
    let segs = fx.segments();
    assert!(
        segs.len() >= 4,
        "expected rotation, got {} segments",
        segs.len()
    );
    fx.verify().unwrap();

    let middle = std::fs::read(&segs[1]).unwrap();
    std::fs::remove_file(&segs[1]).unwrap();
    let b = bad(fx.verify());
    assert_eq!(b.segment.as_deref(), Some(segs[2].as_path()));
    assert!(matches!(b.problem, Problem::Seq { .. }), "{b}");
    std::fs::write(&segs[1], middle).unwrap();
    fx.verify().unwrap();

    std::fs::remove_file(&segs[0]).unwrap();
    let b = bad(fx.verify());
    assert!(matches!(b.problem, Problem::Seq { expected: 1, .. }), "{b}");
}
