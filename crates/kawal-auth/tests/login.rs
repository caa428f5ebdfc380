#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]
//! Logins: the right password works; every failure looks the same from outside, costs one
//! Argon2id run, and counts towards a lockout that survives a restart.
mod common;

use std::sync::Arc;

use common::*;
use kawal_auth::accounts::{Directory, LOGIN_TALLY, PRIVILEGED_ACCOUNTS};
use kawal_auth::login::{Authenticator, FailureKind, LoginFailure};
use kawal_auth::roles::Role;

fn kind(r: Result<kawal_auth::login::LoginOk, LoginFailure>) -> FailureKind {
    r.unwrap_err().kind
}

fn setup(f: &Fixture) -> (Arc<Directory>, Authenticator) {
    let dir = f.directory();
    dir.add("ravi", Some(Role::Operator), &secret(&strong(60)), T0)
        .unwrap();
    let auth = Authenticator::new(dir.clone()).unwrap();
    (dir, auth)
}

/// G045: AU-1-3
#[test]
fn the_right_password_logs_in_and_others_do_not() {
    let f = Fixture::new();
    let (dir, auth) = setup(&f);
    let ok = auth.authenticate("ravi", &secret(&strong(60)), T0).unwrap();
    assert_eq!(ok.account.username, "ravi");
    assert!(ok.account.must_change && !ok.password_expired);
    assert_eq!(
        kind(auth.authenticate("ravi", &secret(&strong(61)), T0)),
        FailureKind::WrongPassword
    );
    assert_eq!(
        kind(auth.authenticate("ghost", &secret(&strong(60)), T0)),
        FailureKind::UnknownUser
    );
    assert_eq!(
        kind(auth.authenticate("Not A Name!", &secret(&strong(60)), T0)),
        FailureKind::UnknownUser
    );
    // Unknown names leave no record of their own.
    assert!(f.store.get(LOGIN_TALLY, "ghost").unwrap().is_none());
    assert!(dir.tally("ghost").is_err());

    dir.set_disabled("ravi", true).unwrap();
    for pw in [strong(60), strong(61)] {
        assert_eq!(
            kind(auth.authenticate("ravi", &secret(&pw), T0)),
            FailureKind::Disabled
        );
    }
    assert_eq!(
        dir.tally("ravi").unwrap().consecutive,
        1,
        "disabled attempts not counted"
    );
}

/// G045: AU-1-3
#[test]
fn five_failures_lock_even_the_right_password_out_and_the_lock_survives_a_restart() {
    let f = Fixture::new();
    let (dir, auth) = setup(&f);
    let right = secret(&strong(60));
    let wrong = secret(&strong(61));
    for i in 0..4 {
        let fail = auth.authenticate("ravi", &wrong, T0 + i).unwrap_err();
        assert_eq!(fail.locked_now, None);
    }
    let fifth = auth.authenticate("ravi", &wrong, T0 + 4).unwrap_err();
    let until = T0 + 4 + 900;
    assert_eq!(fifth.kind, FailureKind::WrongPassword);
    assert_eq!(fifth.locked_now, Some(until));
    assert_eq!(
        kind(auth.authenticate("ravi", &right, T0 + 5)),
        FailureKind::Locked { until }
    );
    assert_eq!(
        kind(auth.authenticate("ravi", &wrong, T0 + 6)),
        FailureKind::Locked { until },
        "not extended by attempts while locked"
    );
    assert!(
        dir.list()
            .unwrap()
            .iter()
            .any(|v| v.locked_until == Some(until))
    );

    drop(auth);
    drop(dir);
    let f = f.reopen();
    let dir = f.directory();
    let auth = Authenticator::new(dir.clone()).unwrap();
    assert_eq!(dir.tally("ravi").unwrap().locked_until, Some(until));
    assert_eq!(
        kind(auth.authenticate("ravi", &right, T0 + 10)),
        FailureKind::Locked { until }
    );
    let ok = auth.authenticate("ravi", &right, until).unwrap();
    assert_eq!(ok.account.username, "ravi");
    assert_eq!(
        dir.tally("ravi").unwrap().locked_until,
        None,
        "success clears"
    );
}

/// G045: AU-1-3
#[test]
fn an_admin_unlocks_and_removal_forgets_the_tally() {
    let f = Fixture::new();
    let (dir, auth) = setup(&f);
    for i in 0..5 {
        let _ = auth.authenticate("ravi", &secret("wrong"), T0 + i);
    }
    assert!(dir.unlock("ravi").unwrap());
    assert!(!dir.unlock("ravi").unwrap());
    assert!(
        auth.authenticate("ravi", &secret(&strong(60)), T0 + 6)
            .is_ok()
    );
    let _ = auth.authenticate("ravi", &secret("wrong"), T0 + 7);
    dir.remove("ravi").unwrap();
    assert!(f.store.get(LOGIN_TALLY, "ravi").unwrap().is_none());
    dir.add("ravi", None, &secret(&strong(62)), T0 + 8).unwrap();
    assert_eq!(
        dir.tally("ravi").unwrap().consecutive,
        0,
        "a namesake starts clean"
    );
}

/// G045: AU-1-3
#[test]
fn concurrent_failures_are_all_counted() {
    let f = Fixture::new();
    let (dir, auth) = setup(&f);
    let auth = Arc::new(auth);
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let auth = auth.clone();
            std::thread::spawn(move || auth.authenticate("ravi", &secret("nope"), T0))
        })
        .collect();
    let locks = threads
        .into_iter()
        .filter_map(|t| t.join().unwrap().unwrap_err().locked_now)
        .count();
    assert_eq!(locks, 1, "exactly one of them caused the lock");
    let t = dir.tally("ravi").unwrap();
    assert_eq!(t.locked_until, Some(T0 + 900));
    assert_eq!(
        t.day_failures, 5,
        "attempts refused by the lock are not counted"
    );
}

/// G045: AU-2-3
#[test]
fn every_outcome_runs_exactly_one_argon2id_verification() {
    let f = Fixture::new();
    let (dir, auth) = setup(&f);
    dir.add("off", None, &secret(&strong(63)), T0).unwrap();
    dir.set_disabled("off", true).unwrap();
    dir.add("held", None, &secret(&strong(64)), T0).unwrap();
    for i in 0..5 {
        let _ = auth.authenticate("held", &secret("wrong"), T0 + i);
    }
    // A record that does not decode: the failure is internal, and still costs one run.
    f.store
        .put(PRIVILEGED_ACCOUNTS, "broken", b"{not json")
        .unwrap();

    let cases: [(&str, String, Option<FailureKind>); 7] = [
        ("ravi", strong(60), None),
        ("ravi", strong(61), Some(FailureKind::WrongPassword)),
        ("ghost", strong(60), Some(FailureKind::UnknownUser)),
        ("off", strong(63), Some(FailureKind::Disabled)),
        ("off", strong(1), Some(FailureKind::Disabled)),
        (
            "held",
            strong(64),
            Some(FailureKind::Locked {
                until: T0 + 4 + 900,
            }),
        ),
        ("broken", strong(60), Some(FailureKind::Internal)),
    ];
    for (name, pw, expected) in cases {
        let before = auth.verifications();
        let got = auth
            .authenticate(name, &secret(&pw), T0 + 10)
            .err()
            .map(|e| e.kind);
        assert_eq!(got, expected, "{name}");
        assert_eq!(auth.verifications() - before, 1, "{name}: {expected:?}");
    }
}

/// G045: AU-2-3
#[test]
fn failure_kinds_and_their_debug_output_carry_no_password() {
    let f = Fixture::new();
    let (_dir, auth) = setup(&f);
    let pw = "hunter2-but-longer-9931";
    let fail = auth.authenticate("ravi", &secret(pw), T0).unwrap_err();
    assert!(!format!("{fail:?} {}", fail.kind.as_str()).contains(pw));
    let ok = auth.authenticate("ravi", &secret(&strong(60)), T0).unwrap();
    assert!(!format!("{ok:?}").contains(&strong(60)));
}
