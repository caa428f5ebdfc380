//! Sessions end when they should, IDs are unpredictable, one admin session at a time.
use kawal_crypto::keys::{KeyHierarchy, KeyVersion};
use kawal_crypto::root::RootSecret;

use super::*;

fn key() -> MacKey<SessionPurpose> {
    KeyHierarchy::new(RootSecret::generate().unwrap())
        .mac(&KeyVersion::new(1).unwrap())
        .unwrap()
}

/// G045: DS-3-1
#[test]
fn idle_and_absolute_time_outs_end_sessions() {
    let (k, p) = (key(), SessionPolicy::default());
    let mut s = Sessions::default();
    let (t, _) = s.login("op", false, 1000, &k, &p).unwrap();
    assert!(s.touch(t.expose(), 1599, &k, &p).is_ok());
    assert_eq!(s.touch(t.expose(), 2199, &k, &p), Err(Some(Ended::Idle)));
    assert_eq!(
        s.touch(t.expose(), 2200, &k, &p),
        Err(None),
        "an ended session stays ended"
    );
    let (t, _) = s.login("op", false, 0, &k, &p).unwrap();
    let mut now = 0;
    while now + 500 < 8 * 3600 {
        now += 500;
        assert!(s.touch(t.expose(), now, &k, &p).is_ok());
    }
    assert_eq!(
        s.touch(t.expose(), 8 * 3600, &k, &p),
        Err(Some(Ended::Lifetime))
    );
}

/// G045: DS-3-2
#[test]
fn ids_are_unique_unpredictable_and_rotated() {
    let (k, p) = (key(), SessionPolicy::default());
    let mut s = Sessions::default();
    let mut seen = std::collections::HashSet::new();
    let mut ones = 0u64;
    let n = 20_000;
    for i in 0..n {
        let (t, _) = s.login(&format!("u{i}"), false, 0, &k, &p).unwrap();
        assert_eq!(t.expose().len(), 64);
        for c in t.expose().chars() {
            ones += u64::from(c.to_digit(16).unwrap().count_ones());
        }
        assert!(seen.insert(t.expose().to_owned()), "duplicate session ID");
    }
    // Monobit over 20,000 × 256 bits: the share of ones is within 0.5 ± 0.005 (far beyond 6σ).
    let share = ones as f64 / (f64::from(n) * 256.0);
    assert!((share - 0.5).abs() < 0.005, "{share}");
    let (old, _) = s.login("rot", false, 0, &k, &p).unwrap();
    let new = s.rotate(old.expose(), 1, true, &k).unwrap();
    assert_ne!(old.expose(), new.expose());
    assert_eq!(
        s.touch(old.expose(), 2, &k, &p),
        Err(None),
        "old ID still works"
    );
    assert!(s.touch(new.expose(), 2, &k, &p).unwrap().admin);
}

/// G045: AU-1-7
#[test]
fn one_admin_session_per_account() {
    let (k, mut p) = (key(), SessionPolicy::default());
    let mut s = Sessions::default();
    let (first, _) = s.login("admin", true, 0, &k, &p).unwrap();
    let (second, ended) = s.login("admin", true, 5, &k, &p).unwrap();
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].1, Ended::Superseded);
    // The holder of the ended session is told why, once.
    assert_eq!(
        s.touch(first.expose(), 6, &k, &p),
        Err(Some(Ended::Superseded))
    );
    assert_eq!(s.touch(first.expose(), 6, &k, &p), Err(None));
    assert!(s.touch(second.expose(), 6, &k, &p).is_ok());
    p.admin_concurrency = AdminConcurrency::RefuseNew;
    assert_eq!(
        s.login("admin", true, 7, &k, &p).err(),
        Some(Ended::AdminSessionActive)
    );
    // Operators are not limited; revoking a user ends all of theirs.
    s.login("op", false, 8, &k, &p).unwrap();
    s.login("op", false, 8, &k, &p).unwrap();
    let (op, _) = s.login("op", false, 8, &k, &p).unwrap();
    assert_eq!(s.of_user("op"), 3);
    assert_eq!(s.revoke_user("op", 9), 3);
    assert_eq!(s.touch(op.expose(), 9, &k, &p), Err(Some(Ended::Revoked)));
}

#[test]
fn a_token_never_prints() {
    let (k, p) = (key(), SessionPolicy::default());
    let (t, _) = Sessions::default().login("x", false, 0, &k, &p).unwrap();
    assert_eq!(format!("{t:?}"), "Token([REDACTED])");
}

/// G045: AU-1-7
#[test]
fn an_account_holds_at_most_its_share_of_sessions() {
    let (k, p) = (key(), SessionPolicy::default());
    let mut s = Sessions::default();
    let mut tokens = Vec::new();
    for i in 0..MAX_PER_ACCOUNT as u64 {
        let (t, ended) = s.login("op", false, 10 + i, &k, &p).unwrap();
        assert!(ended.is_empty());
        tokens.push(t);
    }
    // The first one is used again, so the second is now the least recently used.
    assert!(s.touch(tokens[0].expose(), 100, &k, &p).is_ok());
    let (_, ended) = s.login("op", false, 101, &k, &p).unwrap();
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].1, Ended::Superseded);
    assert_eq!(s.of_user("op"), MAX_PER_ACCOUNT);
    assert_eq!(
        s.touch(tokens[1].expose(), 102, &k, &p),
        Err(Some(Ended::Superseded))
    );
    assert!(s.touch(tokens[0].expose(), 102, &k, &p).is_ok());
    // Another account is not affected.
    let (_, ended) = s.login("siti", false, 103, &k, &p).unwrap();
    assert!(ended.is_empty());
}
