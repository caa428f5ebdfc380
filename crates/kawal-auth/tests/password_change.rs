#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]
//! A new password differs from the initial one, the current one and the last five; it passes
//! the rules; the error names the rule and never the password.
mod common;

use common::*;
use kawal_auth::accounts::{AccountError, Directory, DirectoryConfig};
use kawal_auth::policy::Rule;
use kawal_auth::roles::Role;

fn reused(r: Result<(), AccountError>) -> bool {
    r.is_err_and(|e| matches!(e, AccountError::Reused))
}

/// G045: AU-1-1
#[test]
fn a_new_password_differs_from_the_initial_the_current_and_the_last_five() {
    let f = Fixture::new();
    let dir = f.directory();
    let initial = strong(10);
    dir.add("nurul", Some(Role::Operator), &secret(&initial), T0)
        .unwrap();
    assert!(dir.get("nurul").unwrap().unwrap().must_change);
    assert!(
        reused(dir.change_password("nurul", &secret(&initial), T0)),
        "initial"
    );

    // P1 .. P7 in turn.
    for i in 1..=7 {
        dir.change_password("nurul", &secret(&strong(10 + i)), T0 + i as u64)
            .unwrap();
        let a = dir.get("nurul").unwrap().unwrap();
        assert!(!a.must_change, "cleared by the user's own choice");
        assert!(a.history.len() <= 5);
        assert_eq!(a.password_changed_at, T0 + i as u64);
    }
    // Current P7, history P6..P2; P1 fell out; the initial stays refused.
    assert!(
        reused(dir.change_password("nurul", &secret(&strong(17)), T0)),
        "current"
    );
    for i in 2..=6 {
        assert!(
            reused(dir.change_password("nurul", &secret(&strong(10 + i)), T0)),
            "P{i}"
        );
    }
    assert!(
        reused(dir.change_password("nurul", &secret(&initial), T0)),
        "initial, later"
    );
    dir.change_password("nurul", &secret(&strong(11)), T0)
        .unwrap();
}

/// G045: AU-1-1
#[test]
fn an_admin_reset_sets_a_new_initial_password_the_user_must_change() {
    let f = Fixture::new();
    let dir = f.directory();
    dir.add("ravi", Some(Role::Operator), &secret(&strong(20)), T0)
        .unwrap();
    dir.change_password("ravi", &secret(&strong(21)), T0 + 1)
        .unwrap();
    assert!(!dir.get("ravi").unwrap().unwrap().must_change);

    dir.reset_password("ravi", &secret(&strong(22)), T0 + 2)
        .unwrap();
    let a = dir.get("ravi").unwrap().unwrap();
    assert!(a.must_change && !a.generated && a.generated_bits.is_none());
    assert!(
        reused(dir.change_password("ravi", &secret(&strong(22)), T0 + 3)),
        "new initial"
    );
    assert!(
        reused(dir.change_password("ravi", &secret(&strong(21)), T0 + 3)),
        "previous"
    );
    dir.change_password("ravi", &secret(&strong(23)), T0 + 3)
        .unwrap();
    assert!(!dir.get("ravi").unwrap().unwrap().must_change);
    assert!(matches!(
        dir.reset_password("ghost", &secret(&strong(24)), T0),
        Err(AccountError::NotFound)
    ));
}

/// G045: AU-1-8
#[test]
fn weak_passwords_are_refused_by_rule_without_echoing_them() {
    let f = Fixture::new();
    let dir = f.directory();
    let cases: [(&str, Rule); 5] = [
        ("Short1!x", Rule::TooShort { min: 12 }),
        ("aaaaaaaaaaaaaaaaQ7#", Rule::RepeatedCharacters),
        ("xk9-abcdefg-Lm42", Rule::Sequence),
        ("my name is farah ok 93", Rule::ContainsUserName),
        ("device kw-test-0001 pass", Rule::ContainsDeviceUid),
    ];
    for (pw, rule) in &cases {
        let err = dir.add("farah", None, &secret(pw), T0).unwrap_err();
        let AccountError::Weak(rules) = &err else {
            panic!("{pw}: {err:?}");
        };
        assert!(rules.contains(rule), "{pw}: {rules:?}");
        for text in [err.to_string(), format!("{err:?}")] {
            assert!(!text.contains(pw), "{text}");
            assert!(
                text.contains(&rule.to_string()) || text.contains("Weak"),
                "{text}"
            );
        }
    }
    let err = dir
        .add("farah", None, &secret("password1234"), T0)
        .unwrap_err();
    assert!(matches!(&err, AccountError::Weak(r) if r.contains(&Rule::Common)));
    assert!(!err.to_string().contains("password1234"));
    assert!(dir.get("farah").unwrap().is_none(), "nothing stored");

    dir.add("farah", None, &secret(&strong(30)), T0).unwrap();
    for (pw, _) in &cases {
        let err = dir.change_password("farah", &secret(pw), T0).unwrap_err();
        assert!(matches!(err, AccountError::Weak(_)));
        assert!(!err.to_string().contains(pw));
        let err = dir.reset_password("farah", &secret(pw), T0).unwrap_err();
        assert!(matches!(err, AccountError::Weak(_)));
    }
}

/// G045: AU-1-1
#[test]
fn passwords_older_than_the_maximum_age_are_expired() {
    let f = Fixture::new();
    let dir = Directory::new(
        f.store.clone(),
        DirectoryConfig {
            max_age: Some(90 * 86_400),
            ..config()
        },
    );
    let a = dir.add("ravi", None, &secret(&strong(40)), T0).unwrap();
    assert!(!dir.password_expired(&a, T0 + 89 * 86_400));
    assert!(dir.password_expired(&a, T0 + 90 * 86_400));
    assert!(
        !f.directory().password_expired(&a, T0 + 9_000 * 86_400),
        "no maximum by default"
    );
}
