//! Attack: inserting a forged entry (to fake an event, e.g. a login that never happened), or
//! replaying a copy of a real one.

mod common;

use common::*;
use kawal_audit::Problem;

/// G045: PL-4-2
#[test]
fn detects_an_inserted_forged_entry_that_links_to_its_predecessor() {
    let fx = Fixture::new();
    fx.fill(30);
    let seg = &fx.segments()[0];
    let mut lines = read_lines(seg);
    let mut forged = parse(&lines[4]);
    forged.seq += 1;
    forged.actor = "ghost".into();
    forged.prev = parse(&lines[4]).hash();
    lines.insert(5, line_of(&forged));
    write_lines(seg, &lines);
    // The entry after it repeats its seq.
    let b = bad(fx.verify());
    assert_eq!(b.line, 7);
    assert_eq!(
        b.problem,
        Problem::Seq {
            expected: 7,
            found: 6
        }
    );
}

/// G045: PL-4-2
#[test]
fn detects_an_insertion_with_renumbering_and_rechaining_at_the_next_checkpoint() {
    let fx = Fixture::new();
    fx.fill(30);
    let seg = &fx.segments()[0];
    let mut lines = read_lines(seg);
    let mut forged = parse(&lines[4]);
    forged.actor = "ghost".into();
    lines.insert(5, line_of(&forged));
    for line in lines.iter_mut().skip(5) {
        let mut e = parse(line);
        e.seq += 1;
        *line = line_of(&e);
    }
    rechain(&mut lines, 5, None);
    write_lines(seg, &lines);
    let b = bad(fx.verify_without_anchor());
    assert!(matches!(b.problem, Problem::BadSignature { .. }), "{b}");
}

/// G045: PL-4-2
#[test]
fn detects_a_replayed_copy_of_an_entry() {
    let fx = Fixture::new();
    fx.fill(30);
    let seg = &fx.segments()[0];
    let mut lines = read_lines(seg);
    let copy = lines[2].clone();
    lines.insert(3, copy);
    write_lines(seg, &lines);
    let b = bad(fx.verify());
    assert_eq!(b.line, 4);
    assert_eq!(
        b.problem,
        Problem::Seq {
            expected: 4,
            found: 3
        }
    );
}
