//! The check of a collector's copy (`verify_remote`): duplicates are tolerated, and gaps,
//! conflicting copies, broken links, forged checkpoints, garbage lines and a truncated local
//! log are each reported, without panicking on any input.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::string_slice,
    reason = "integration test: a failed setup is a failed test; the lines cut are ASCII"
)]

mod common;

use common::*;
use kawal_audit::forward::syslog::{EntryFields, ParseProblem, write_message};
use kawal_audit::forward::{RemoteReport, read_remote, verify_remote};
use kawal_audit::{Entry, EntryHash};

/// The collector's line for `e`, as rsyslog's `%rawmsg%` template writes it.
fn line(e: &Entry) -> String {
    let canonical = e.canonical_bytes();
    let mut out = Vec::new();
    write_message(
        &mut out,
        UID,
        &EntryFields::from(e),
        &canonical,
        &EntryHash::of(&canonical),
    );
    String::from_utf8(out).unwrap()
}

/// A log of 45 events (checkpoints every batch) and the collector lines of all its entries.
fn copy() -> (Fixture, Vec<String>) {
    let fx = Fixture::new();
    fx.fill(45);
    let lines = fx
        .all_lines()
        .into_iter()
        .map(|(_, l)| line(&parse(&l)))
        .collect();
    (fx, lines)
}

fn check(fx: &Fixture, lines: &[String]) -> RemoteReport {
    let text = lines.join("\n") + "\n";
    read_remote(text.as_bytes(), UID, &fx.trusted())
        .unwrap()
        .report()
}

/// G045: PL-4-2
#[test]
fn a_complete_copy_with_resends_and_foreign_lines_passes() {
    let (fx, mut lines) = copy();
    let n = lines.len() as u64;
    // A resend of 5 entries after a broken connection, and other senders' lines.
    let resent: Vec<String> = lines[10..15].to_vec();
    lines.splice(20..20, resent);
    lines.insert(3, "<13>1 2024-01-01T00:00:00Z other app - - - hello".into());
    lines.insert(7, "Jun  1 12:00:00 host sshd[1]: Accepted".into());
    let other_device = lines[30].replacen(UID, "KWL-OTHER-0002", 1);
    lines.push(other_device);
    let r = check(&fx, &lines);
    assert!(r.is_intact(), "{r:?}");
    assert_eq!(r.entries, n);
    assert_eq!(r.duplicates, 5);
    assert_eq!(r.foreign_lines, 3);
    assert_eq!((r.first_seq, r.last_seq), (Some(1), Some(n)));
    assert_eq!(r.signed_through, Some(n));
    assert_eq!(r.unsigned_tail, 0);
}

/// G045: PL-4-2
#[test]
fn out_of_order_arrival_is_put_back_in_seq_order() {
    let (fx, mut lines) = copy();
    lines.swap(4, 9);
    lines.reverse();
    assert!(check(&fx, &lines).is_intact());
}

/// G045: PL-4-2
#[test]
fn a_deleted_message_is_a_gap() {
    let (fx, mut lines) = copy();
    lines.remove(12);
    lines.remove(12);
    let r = check(&fx, &lines);
    assert!(!r.is_intact());
    assert_eq!(r.missing_entries, 2);
    assert_eq!(r.gaps, vec![(13, 14)]);
    // The signature after the gap still verifies, but does not cover a complete chain.
    assert!(r.signed_through.unwrap() < 13);
}

/// G045: PL-4-2
#[test]
fn a_second_copy_with_other_contents_is_a_conflict() {
    let (fx, mut lines) = copy();
    let mut e = parse(&fx.all_lines()[4].1);
    assert!(!e.is_checkpoint());
    e.actor = "mallory".into();
    lines.push(line(&e));
    let r = check(&fx, &lines);
    assert_eq!(r.conflicts, 1);
    assert_eq!(r.conflict_seqs, vec![e.seq]);
    assert!(!r.is_intact());
}

/// G045: PL-4-2
#[test]
fn an_altered_entry_breaks_the_chain_even_with_consistent_structured_data() {
    let (fx, mut lines) = copy();
    let mut e = parse(&fx.all_lines()[4].1);
    e.actor = "mallory".into();
    // The forger rewrites the SD hash to match the new JSON; the next entry's prev does not.
    lines[4] = line(&e);
    let r = check(&fx, &lines);
    assert_eq!(r.chain_breaks, 1);
    assert_eq!(r.chain_break_seqs, vec![e.seq + 1]);
    assert!(!r.is_intact());
}

/// G045: PL-4-2
#[test]
fn a_checkpoint_signed_with_another_key_is_refused() {
    let (_fx, lines) = copy();
    let other = TestSigner::new(1);
    let keys =
        kawal_audit::TrustedKeys::new().with(1, kawal_audit::CheckpointSigner::public_key(&other));
    let text = lines.join("\n") + "\n";
    let r = read_remote(text.as_bytes(), UID, &keys).unwrap().report();
    assert!(r.bad_checkpoints > 0);
    assert_eq!(r.checkpoints, 0);
    assert_eq!(r.signed_through, None);
    assert!(!r.is_intact());
}

/// G045: PL-4-2
#[test]
fn garbage_and_cut_lines_are_reported_never_panic() {
    let (fx, lines) = copy();
    let good = &lines[2];
    let mut bad = vec![
        good[..good.len() / 2].to_owned(),
        good.replacen("seq=\"3\"", "seq=\"4\"", 1),
        good.replacen("hash=\"", "hash=\"0", 1),
        format!("{good} trailing"),
        "[kawal@32473 seq=\"1\"]".to_owned(),
        format!("<0>1 - - - - - [kawal@32473 {}", "x".repeat(100)),
    ];
    for cut in (0..good.len()).step_by(7) {
        bad.push(good[..cut].to_owned() + "[kawal@32473 ");
    }
    let n_bad = bad.len() as u64;
    let mut all = lines.clone();
    all.extend(bad);
    let r = check(&fx, &all);
    assert_eq!(r.bad_lines, n_bad, "{r:?}");
    assert!(!r.is_intact());
    assert!(r.bad_listed.iter().all(|b| b.line > lines.len() as u64));
    assert_eq!(r.bad_listed[1].problem, ParseProblem::Mismatch("seq"));

    // Binary junk and a line longer than any message, without a newline at the end.
    let mut junk: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
    junk.extend(std::iter::repeat_n(b'[', 3 << 20));
    junk.extend_from_slice(b"kawal@32473 ");
    let r = read_remote(&junk[..], UID, &fx.trusted()).unwrap().report();
    assert_eq!(r.entries, 0);
    assert!(r.lines >= 1);
}

/// G045: PL-4-2
#[test]
fn the_copy_exposes_a_local_log_cut_back_after_forwarding() {
    let (fx, lines) = copy();
    let path = fx.dir().join("collected.log");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let v = verify_remote(&path, UID, &fx.trusted(), Some(fx.dir())).unwrap();
    assert!(v.passed(), "{v:?}");
    let cmp = v.local.as_ref().unwrap();
    assert_eq!(cmp.local_last_seq, lines.len() as u64);
    assert!(!cmp.local_shorter);

    // Cut the local log back by 10 entries.
    let seg = fx.segments().pop().unwrap();
    let mut local = read_lines(&seg);
    let keep = local.len() - 10;
    local.truncate(keep);
    write_lines(&seg, &local);
    let v = verify_remote(&path, UID, &fx.trusted(), Some(fx.dir())).unwrap();
    let cmp = v.local.as_ref().unwrap();
    assert!(cmp.local_shorter, "{cmp:?}");
    assert_eq!(cmp.remote_last_seq - cmp.local_last_seq, 10);
    assert!(!v.passed());

    // Alter a local entry instead: a mismatch.
    let (fx, lines) = copy();
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let seg = fx.segments().pop().unwrap();
    let mut local = read_lines(&seg);
    local[4] = local[4].replacen("alice", "alicf", 1);
    write_lines(&seg, &local);
    let v = verify_remote(&path, UID, &fx.trusted(), Some(fx.dir())).unwrap();
    let cmp = v.local.as_ref().unwrap();
    assert_eq!(cmp.mismatches, 1, "{cmp:?}");
    assert!(!v.passed());
}

/// G045: PL-4-2
#[test]
fn a_missing_copy_is_an_error_naming_the_file() {
    let fx = Fixture::new();
    let e = verify_remote(&fx.dir().join("nope.log"), UID, &fx.trusted(), None).unwrap_err();
    assert!(e.to_string().contains("nope.log"), "{e}");
}
