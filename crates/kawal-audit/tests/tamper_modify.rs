//! Attack: an attacker with write access to the log files edits an old entry (to hide or
//! change what happened), with or without recomputing the hash chain after it.

mod common;

use common::*;
use kawal_audit::{ClockState, Details, Entry, EntryHash, Outcome, Problem, WallTime};

type Mutation = fn(&mut Entry);

/// G045: PL-4-2
#[test]
fn detects_a_change_to_any_field_of_an_old_entry() {
    let fx = Fixture::new();
    fx.fill(40);
    fx.verify().unwrap();
    let seg = &fx.segments()[0];
    let orig = read_lines(seg);
    assert!(parse(&orig[4]).checkpoint.is_none());
    let field_edits: [(&str, Mutation); 10] = [
        ("wall", |e| {
            e.wall = WallTime::from_unix_micros(e.wall.unix_micros() - 1).unwrap();
        }),
        ("clock", |e| e.clock = ClockState::Synchronised),
        ("mono_ns", |e| e.mono_ns += 1),
        ("boot_id", |e| e.boot_id = "forged-boot".into()),
        ("event", |e| e.event = "auth.logout".into()),
        ("actor", |e| e.actor = "mallory".into()),
        ("outcome", |e| e.outcome = Outcome::Failure),
        ("details value", |e| {
            e.details = e.details.clone().with("ip", "198.51.100.1");
        }),
        ("details added", |e| {
            e.details = e.details.clone().with("note", "benign");
        }),
        ("details removed", |e| e.details = Details::new()),
    ];
    for (what, edit) in field_edits {
        let mut lines = orig.clone();
        let mut e = parse(&lines[4]);
        edit(&mut e);
        lines[4] = line_of(&e);
        assert_ne!(lines[4], orig[4], "{what}: edit changed nothing");
        write_lines(seg, &lines);
        // The edited entry is well-formed; the next entry no longer links to it.
        let b = bad(fx.verify());
        assert_eq!((b.seq, b.line), (Some(6), 6), "{what}");
        assert!(matches!(b.problem, Problem::Prev { .. }), "{what}: {b}");
    }
    let link_edits: [(&str, Mutation); 2] = [
        ("seq", |e| e.seq += 1),
        ("prev", |e| e.prev = EntryHash([1; 32])),
    ];
    for (what, edit) in link_edits {
        let mut lines = orig.clone();
        let mut e = parse(&lines[4]);
        edit(&mut e);
        lines[4] = line_of(&e);
        write_lines(seg, &lines);
        let b = bad(fx.verify());
        assert_eq!(b.line, 5, "{what}");
        assert!(
            matches!(b.problem, Problem::Seq { .. } | Problem::Prev { .. }),
            "{what}: {b}"
        );
    }
    write_lines(seg, &orig);
    fx.verify().unwrap();
}

/// G045: PL-4-2
#[test]
fn detects_a_byte_edit_that_breaks_the_canonical_form() {
    let fx = Fixture::new();
    fx.fill(15);
    let seg = &fx.segments()[0];
    let mut lines = read_lines(seg);
    // Same meaning to a lenient JSON reader, different bytes.
    lines[2] = lines[2].replacen("\"actor\":\"alice\"", "\"actor\": \"alice\"", 1);
    write_lines(seg, &lines);
    let b = bad(fx.verify());
    assert_eq!(b.line, 3);
    assert!(matches!(b.problem, Problem::Parse(_)), "{b}");
}

/// G045: PL-4-2
#[test]
fn detects_an_edit_with_the_chain_recomputed_at_the_next_checkpoint() {
    let fx = Fixture::new();
    fx.fill(40);
    let seg = &fx.segments()[0];
    let mut lines = read_lines(seg);
    let mut e = parse(&lines[4]);
    e.outcome = Outcome::Failure;
    lines[4] = line_of(&e);
    rechain(&mut lines, 5, None);
    write_lines(seg, &lines);
    let first_cp = lines
        .iter()
        .skip(5)
        .map(|l| parse(l))
        .find(|e| e.is_checkpoint())
        .unwrap();
    let b = bad(fx.verify_without_anchor());
    assert_eq!(b.seq, Some(first_cp.seq));
    assert!(
        matches!(b.problem, Problem::BadSignature { key_version: 1 }),
        "{b}"
    );
}

/// G045: PL-4-2
#[test]
fn detects_an_edit_of_the_last_checkpoint_against_the_anchor() {
    let fx = Fixture::new();
    fx.fill(12);
    let seg = &fx.segments()[0];
    let mut lines = read_lines(seg);
    let last = lines.len() - 1;
    let mut e = parse(&lines[last]);
    assert!(e.is_checkpoint());
    e.mono_ns += 1; // a field the signature does not cover; the anchor's hash does
    lines[last] = line_of(&e);
    write_lines(seg, &lines);
    let b = bad(fx.verify());
    assert!(matches!(b.problem, Problem::AnchorMismatch { .. }), "{b}");
}
