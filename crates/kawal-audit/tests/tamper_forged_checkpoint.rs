//! Attack: forging a checkpoint (to make a rewritten or continued log look signed), or
//! copying a valid checkpoint from another device's log.

mod common;

use common::*;
use kawal_audit::{Checkpoint, Problem};

/// G045: PL-4-2
#[test]
fn detects_a_forged_checkpoint_signature() {
    let fx = Fixture::new();
    fx.fill(30);
    let seg = &fx.segments()[0];
    let mut lines = read_lines(seg);
    let i = lines.iter().position(|l| parse(l).is_checkpoint()).unwrap();
    let mut cp = parse(&lines[i]);
    let c = cp.checkpoint.as_mut().unwrap();
    c.sig[0] ^= 1;
    lines[i] = line_of(&cp);
    rechain(&mut lines, i + 1, None);
    write_lines(seg, &lines);
    let b = bad(fx.verify_without_anchor());
    assert_eq!(b.seq, Some(cp.seq));
    assert_eq!(b.problem, Problem::BadSignature { key_version: 1 });
}

/// G045: PL-4-2
#[test]
fn detects_a_checkpoint_with_wrong_head_or_count() {
    let fx = Fixture::new();
    fx.fill(30);
    let seg = &fx.segments()[0];
    let orig = read_lines(seg);
    let i = orig.iter().position(|l| parse(l).is_checkpoint()).unwrap();
    for (what, edit) in [
        (
            "head",
            (|c: &mut Checkpoint| c.head.0[0] ^= 1) as fn(&mut Checkpoint),
        ),
        ("count", |c: &mut Checkpoint| c.count += 1),
    ] {
        let mut lines = orig.clone();
        let mut cp = parse(&lines[i]);
        edit(cp.checkpoint.as_mut().unwrap());
        lines[i] = line_of(&cp);
        rechain(&mut lines, i + 1, None);
        write_lines(seg, &lines);
        let b = bad(fx.verify_without_anchor());
        assert_eq!(b.seq, Some(cp.seq), "{what}");
        assert!(
            matches!(
                b.problem,
                Problem::CheckpointHead { .. } | Problem::CheckpointCount { .. }
            ),
            "{what}: {b}"
        );
    }
}

/// G045: PL-4-2
#[test]
fn detects_a_log_moved_to_another_device() {
    let fx = Fixture::new();
    fx.fill(12);
    let b = bad(kawal_audit::verify(
        fx.dir(),
        "KWL-OTHER-0002",
        &fx.trusted(),
        None,
    ));
    assert!(matches!(b.problem, Problem::BadSignature { .. }), "{b}");
}
