//! Attack: rewriting history and re-signing every checkpoint with a key the attacker holds
//! (claiming the trusted key version, or a new one).

mod common;

use common::*;
use kawal_audit::{CheckpointSigner, Outcome, Problem};

#[allow(clippy::unwrap_used, reason = "test helper")]
fn rewrite_and_resign(fx: &Fixture, attacker: &TestSigner) -> Vec<String> {
    let seg = &fx.segments()[0];
    let mut lines = read_lines(seg);
    let mut e = parse(&lines[2]);
    e.outcome = Outcome::Success;
    e.actor = "mallory".into();
    lines[2] = line_of(&e);
    // Every checkpoint, also those before the edit (each append is signed at once).
    rechain(&mut lines, 0, Some(attacker as &dyn CheckpointSigner));
    write_lines(seg, &lines);
    lines
}

/// G045: PL-4-2
#[test]
fn detects_checkpoints_resigned_with_another_key_under_the_trusted_version() {
    let fx = Fixture::new();
    fx.fill(40);
    let attacker = TestSigner::new(1);
    let lines = rewrite_and_resign(&fx, &attacker);
    let first_cp = lines
        .iter()
        .map(|l| parse(l))
        .find(|e| e.is_checkpoint())
        .unwrap();
    let b = bad(fx.verify_without_anchor());
    assert_eq!(b.seq, Some(first_cp.seq));
    assert_eq!(b.problem, Problem::BadSignature { key_version: 1 });
    // With the attacker's key trusted instead, the same log passes: the signatures are valid,
    // so it really is the key that catches it.
    let wrong = kawal_audit::TrustedKeys::new().with(1, attacker.public_key());
    kawal_audit::verify(fx.dir(), UID, &wrong, None).unwrap();
}

/// G045: PL-4-2
#[test]
fn detects_checkpoints_resigned_under_an_untrusted_key_version() {
    let fx = Fixture::new();
    fx.fill(40);
    rewrite_and_resign(&fx, &TestSigner::new(2));
    let b = bad(fx.verify_without_anchor());
    assert_eq!(b.problem, Problem::UnknownKeyVersion(2));
}

/// G045: PL-4-2
#[test]
fn accepts_checkpoints_of_an_older_trusted_key_after_rotation() {
    let fx = Fixture::new();
    fx.fill(15);
    let v1 = fx.signer.clone();
    let v2 = std::sync::Arc::new(TestSigner::new(2));
    let log = kawal_audit::AuditLog::open(
        fx.dir(),
        UID,
        v2.clone(),
        fx.anchors.clone(),
        std::sync::Arc::new(kawal_audit::SystemClock::new()),
        small_options(),
    )
    .unwrap();
    log.append(event(1)).unwrap();
    log.close().unwrap();
    let both = kawal_audit::TrustedKeys::new()
        .with(1, v1.public_key())
        .with(2, v2.public_key());
    let report = kawal_audit::verify(fx.dir(), UID, &both, fx.anchor().as_ref()).unwrap();
    assert_eq!(report.key_versions, vec![1, 2]);
    // The newest checkpoint's signature covers the chain head, so a trusted newest key vouches
    // for every entry before it, including checkpoints of a retired key.
    let only_v2 = kawal_audit::TrustedKeys::new().with(2, v2.public_key());
    assert!(kawal_audit::verify(fx.dir(), UID, &only_v2, None).is_ok());
    // Without the newest key nothing vouches for the tail: its first checkpoint is named.
    let only_v1 = kawal_audit::TrustedKeys::new().with(1, v1.public_key());
    let b = bad(kawal_audit::verify(fx.dir(), UID, &only_v1, None));
    assert_eq!(b.problem, Problem::UnknownKeyVersion(2));
}
