//! `kawal log verify` names the first bad entry and exits non-zero.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::string_slice,
    clippy::cast_precision_loss,
    reason = "test code: a failure should stop the test loudly"
)]
mod common;
use common::*;

/// G045: PL-4-2
#[test]
fn an_edited_entry_is_named_and_refused() {
    let (_t, data, _) = provisioned();
    assert_eq!(run(&["log", "verify", "--data-dir", d(&data)]).code, 0);
    let seg = data.join("audit/log-000001.jsonl");
    let text = std::fs::read_to_string(&seg).unwrap();
    let edited = text.replacen("\"user\":\"admin\"", "\"user\":\"admix\"", 1);
    assert_ne!(text, edited);
    std::fs::write(&seg, edited).unwrap();
    let r = run(&["log", "verify", "--data-dir", d(&data)]);
    assert_eq!(r.code, 65, "{}", r.all());
    assert!(r.stderr.contains("does NOT verify"), "{}", r.stderr);
    assert!(
        r.stderr.contains("seq"),
        "first bad entry not named: {}",
        r.stderr
    );
}

/// G045: PL-4-2
#[test]
fn truncation_against_the_anchor_is_detected() {
    let (_t, data, _) = provisioned();
    assert_eq!(run(&["selftest", "--data-dir", d(&data)]).code, 0);
    let seg = data.join("audit/log-000001.jsonl");
    let text = std::fs::read_to_string(&seg).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    std::fs::write(&seg, format!("{}\n", lines[..lines.len() - 2].join("\n"))).unwrap();
    let r = run(&["log", "verify", "--data-dir", d(&data)]);
    assert_eq!(r.code, 65, "{}", r.all());
}

/// G045: CR-1-2, PL-4-2
#[test]
fn rotating_keys_keeps_the_log_and_records_verifiable() {
    let (_t, data, _) = provisioned();
    for purpose in [
        "store-data",
        "pii",
        "record-index",
        "audit-signing",
        "session",
    ] {
        let r = run(&["keys", "rotate", purpose, "--data-dir", d(&data)]);
        assert_eq!(r.code, 0, "{purpose}: {}", r.all());
        assert!(r.stdout.contains("version 1 destroyed"), "{}", r.stdout);
    }
    let r = run(&["log", "verify", "--data-dir", d(&data)]);
    assert_eq!(r.code, 0, "{}", r.all());
    let r = run(&["log", "show", "--data-dir", d(&data), "--event", "keys"]);
    assert_eq!(
        r.stdout
            .lines()
            .filter(|l| l.contains("keys.rotated"))
            .count(),
        5,
        "{}",
        r.stdout
    );
    assert_eq!(
        run(&["audit", "--data-dir", d(&data), "--format", "json"]).code,
        0
    );
    let bad = run(&["keys", "rotate", "nonsense", "--data-dir", d(&data)]);
    assert_eq!(bad.code, 78);
}
