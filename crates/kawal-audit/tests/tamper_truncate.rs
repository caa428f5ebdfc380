//! Attack: cutting entries off the end of the log (to hide the latest events), down to an
//! earlier checkpoint so that what is left is internally consistent, or removing every file.

mod common;

use common::*;
use kawal_audit::{Error, Problem, TamperFinding};

/// G045: PL-4-2
#[test]
fn detects_truncation_back_to_an_earlier_checkpoint_against_the_anchor() {
    let fx = Fixture::new();
    fx.fill(40);
    let anchor = fx.anchor().unwrap();
    let seg = &fx.segments()[0];
    let mut lines = read_lines(seg);
    // Keep everything up to the second checkpoint: a consistent, signed, shorter log.
    let cut = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| parse(l).is_checkpoint())
        .nth(1)
        .unwrap()
        .0;
    lines.truncate(cut + 1);
    write_lines(seg, &lines);
    let kept = parse(&lines[cut]).seq;

    let b = bad(fx.verify());
    assert_eq!(
        b.problem,
        Problem::Truncated {
            anchor_seq: anchor.seq,
            last_seq: kept
        }
    );

    // The writer refuses to go on from the shortened log.
    match fx.open_with(small_options()) {
        Err(Error::Tampered {
            finding:
                TamperFinding::Truncated {
                    anchor_seq,
                    last_seq,
                },
        }) => {
            assert_eq!((anchor_seq, last_seq), (anchor.seq, kept));
        }
        other => panic!("expected Tampered(Truncated), got {other:?}"),
    }
}

/// G045: PL-4-2
#[test]
fn detects_truncation_in_the_middle_of_a_line() {
    let fx = Fixture::new();
    fx.fill(20);
    let seg = &fx.segments()[0];
    let bytes = std::fs::read(seg).unwrap();
    std::fs::write(seg, &bytes[..bytes.len() - 40]).unwrap();
    let b = bad(fx.verify());
    assert!(matches!(b.problem, Problem::Truncated { .. }), "{b}");
}

/// G045: PL-4-2
#[test]
fn detects_removal_of_every_segment() {
    let fx = Fixture::new();
    fx.fill(5);
    for s in fx.segments() {
        std::fs::remove_file(s).unwrap();
    }
    let b = bad(fx.verify());
    assert!(
        matches!(b.problem, Problem::Truncated { last_seq: 0, .. }),
        "{b}"
    );
    assert!(matches!(
        fx.open_with(small_options()),
        Err(Error::Tampered {
            finding: TamperFinding::Truncated { last_seq: 0, .. }
        })
    ));
}
