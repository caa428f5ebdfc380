#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]
//! Accounts can be added, listed, given roles, disabled and removed; new accounts get the
//! least role; the last enabled admin survives; privileged accounts are kept apart.
mod common;

use common::*;
use kawal_auth::accounts::{
    ACCOUNTS, Account, AccountError, PRIVILEGED_ACCOUNTS, read_all, validate_name,
};
use kawal_auth::roles::Role;
use kawal_crypto::password::{self, Argon2Params};

fn keys_in(f: &Fixture, table: kawal_store::Table) -> Vec<String> {
    let mut k: Vec<String> = f
        .store
        .list(table)
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    k.sort();
    k
}

fn first_admin(f: &Fixture) {
    let hash = password::hash(&secret("abcd-efgh-jkmn-pqrs-tuvw"), Argon2Params::TEST).unwrap();
    f.directory()
        .create_initial_admin("admin", hash, 80, T0)
        .unwrap();
}

/// G045: AU-1-5, AU-1-6
#[test]
fn accounts_are_added_listed_assigned_disabled_and_removed() {
    let f = Fixture::new();
    first_admin(&f);
    let dir = f.directory();
    let a = dir.add("siti", None, &secret(&strong(1)), T0).unwrap();
    assert_eq!(a.role, Role::least(), "new accounts get the least role");
    assert_eq!(a.role, Role::Auditor);
    assert!(a.must_change && !a.disabled && !a.generated);
    dir.add("ravi", Some(Role::Operator), &secret(&strong(2)), T0)
        .unwrap();
    assert!(matches!(
        dir.add("ravi", None, &secret(&strong(3)), T0),
        Err(AccountError::Exists)
    ));
    assert!(matches!(
        dir.add("admin", None, &secret(&strong(3)), T0),
        Err(AccountError::Exists)
    ));
    assert!(matches!(
        dir.add("Bad Name", None, &secret(&strong(3)), T0),
        Err(AccountError::BadName(_))
    ));

    let list = dir.list().unwrap();
    let names: Vec<&str> = list.iter().map(|v| v.username.as_str()).collect();
    assert_eq!(names, ["admin", "ravi", "siti"], "sorted by name");
    let json = serde_json::to_string(&list).unwrap();
    assert!(
        !json.contains("tag") && !json.contains("salt"),
        "no verifier listed: {json}"
    );

    assert_eq!(dir.set_role("siti", Role::Updater).unwrap(), Role::Auditor);
    assert_eq!(dir.get("siti").unwrap().unwrap().role, Role::Updater);
    dir.set_disabled("ravi", true).unwrap();
    assert!(dir.get("ravi").unwrap().unwrap().disabled);
    dir.set_disabled("ravi", false).unwrap();
    dir.remove("ravi").unwrap();
    assert!(dir.get("ravi").unwrap().is_none());
    assert!(matches!(dir.remove("ravi"), Err(AccountError::NotFound)));
    assert!(matches!(
        dir.set_role("nobody", Role::Admin),
        Err(AccountError::NotFound)
    ));
    assert_eq!(dir.list().unwrap().len(), 2);
}

/// G045: AU-1-5, AU-1-6
#[test]
fn the_last_enabled_admin_cannot_be_removed_demoted_or_disabled() {
    let f = Fixture::new();
    first_admin(&f);
    let dir = f.directory();
    for refused in [
        dir.remove("admin"),
        dir.set_role("admin", Role::Operator).map(|_| ()),
        dir.set_disabled("admin", true),
    ] {
        assert!(
            matches!(refused, Err(AccountError::LastAdmin)),
            "{refused:?}"
        );
    }
    assert_eq!(dir.get("admin").unwrap().unwrap().role, Role::Admin);

    // A second admin that is disabled does not count.
    dir.add("aisyah", Some(Role::Admin), &secret(&strong(4)), T0)
        .unwrap();
    dir.set_disabled("aisyah", true).unwrap();
    assert!(matches!(dir.remove("admin"), Err(AccountError::LastAdmin)));

    // An enabled second admin does.
    dir.set_disabled("aisyah", false).unwrap();
    dir.set_role("admin", Role::Operator).unwrap();
    assert!(matches!(
        dir.set_disabled("aisyah", true),
        Err(AccountError::LastAdmin)
    ));
    dir.set_role("admin", Role::Admin).unwrap();
    dir.set_disabled("aisyah", true).unwrap();
    dir.set_disabled("aisyah", false).unwrap();
    dir.remove("admin").unwrap();
    assert!(matches!(dir.remove("aisyah"), Err(AccountError::LastAdmin)));
}

/// G045: AU-1-2, AU-1-1
#[test]
fn the_first_admin_is_privileged_and_must_change_its_generated_password() {
    let f = Fixture::new();
    first_admin(&f);
    assert_eq!(keys_in(&f, PRIVILEGED_ACCOUNTS), ["admin"]);
    assert!(keys_in(&f, ACCOUNTS).is_empty());
    let a = f.directory().get("admin").unwrap().unwrap();
    assert_eq!(a.role, Role::Admin);
    assert!(a.must_change && a.generated && !a.disabled);
    assert_eq!(a.generated_bits, Some(80));
    assert_eq!(
        a.initial.as_ref(),
        Some(&a.password),
        "the initial password can't be kept"
    );
    assert_eq!(a.password_changed_at, T0);
    assert!(matches!(
        f.directory()
            .create_initial_admin("admin", a.password, 80, T0),
        Err(AccountError::Exists)
    ));
}

/// G045: AU-1-2
#[test]
fn admin_accounts_live_in_their_own_table_and_move_on_role_change() {
    let f = Fixture::new();
    first_admin(&f);
    let dir = f.directory();
    dir.add("ravi", Some(Role::Operator), &secret(&strong(5)), T0)
        .unwrap();
    assert_eq!(keys_in(&f, PRIVILEGED_ACCOUNTS), ["admin"]);
    assert_eq!(keys_in(&f, ACCOUNTS), ["ravi"]);

    dir.set_role("ravi", Role::Admin).unwrap();
    assert_eq!(keys_in(&f, PRIVILEGED_ACCOUNTS), ["admin", "ravi"]);
    assert!(keys_in(&f, ACCOUNTS).is_empty());

    dir.set_role("admin", Role::Auditor).unwrap();
    assert_eq!(keys_in(&f, PRIVILEGED_ACCOUNTS), ["ravi"]);
    assert_eq!(keys_in(&f, ACCOUNTS), ["admin"]);
    // Moves keep everything but the role.
    let moved = dir.get("admin").unwrap().unwrap();
    assert!(moved.generated && moved.must_change && moved.initial.is_some());
}

fn put(f: &Fixture, table: kawal_store::Table, a: &Account) {
    f.store
        .put(table, &a.username, &serde_json::to_vec(a).unwrap())
        .unwrap();
}

/// G045: AU-1-2
#[test]
fn a_crash_between_the_write_and_the_delete_of_a_move_heals() {
    let f = Fixture::new();
    first_admin(&f);
    let dir = f.directory();
    dir.add("second", Some(Role::Admin), &secret(&strong(6)), T0)
        .unwrap();
    dir.add("ravi", Some(Role::Operator), &secret(&strong(7)), T0)
        .unwrap();

    // Interrupted demotion of "second": the ordinary copy was written, the privileged one
    // not yet deleted. The privileged copy wins: the demotion is undone.
    let mut demoted = dir.get("second").unwrap().unwrap();
    demoted.role = Role::Operator;
    put(&f, ACCOUNTS, &demoted);
    assert_eq!(dir.get("second").unwrap().unwrap().role, Role::Admin);
    assert_eq!(keys_in(&f, ACCOUNTS), ["ravi"], "stray copy removed");
    assert_eq!(keys_in(&f, PRIVILEGED_ACCOUNTS), ["admin", "second"]);

    // Interrupted promotion of "ravi": the privileged copy was written, the ordinary one not
    // yet deleted. The privileged copy wins: the promotion completes.
    let mut promoted = dir.get("ravi").unwrap().unwrap();
    promoted.role = Role::Admin;
    put(&f, PRIVILEGED_ACCOUNTS, &promoted);
    assert_eq!(
        read_all(&f.store)
            .unwrap()
            .iter()
            .filter(|a| a.username == "ravi")
            .count(),
        1,
        "read_all shows one copy even before healing"
    );
    assert_eq!(dir.get("ravi").unwrap().unwrap().role, Role::Admin);
    assert!(keys_in(&f, ACCOUNTS).is_empty());
    assert_eq!(
        keys_in(&f, PRIVILEGED_ACCOUNTS),
        ["admin", "ravi", "second"]
    );

    // An admin record in the ordinary table (as `kawal init` wrote before) moves over.
    let legacy = dir.get("ravi").unwrap().unwrap();
    f.store.delete(PRIVILEGED_ACCOUNTS, "ravi").unwrap();
    put(&f, ACCOUNTS, &legacy);
    assert_eq!(dir.get("ravi").unwrap().unwrap().role, Role::Admin);
    assert!(keys_in(&f, ACCOUNTS).is_empty());
}

#[test]
fn records_written_before_password_history_still_read() {
    let f = Fixture::new();
    let hash = password::hash(&secret("x"), Argon2Params::TEST).unwrap();
    let old = serde_json::json!({
        "username": "admin",
        "role": "admin",
        "password": hash,
        "must-change": true,
        "generated": true,
        "generated-bits": 80,
        "created-at": "2025-01-01T00:00:00.000000Z",
        "disabled": false,
    });
    f.store
        .put(ACCOUNTS, "admin", &serde_json::to_vec(&old).unwrap())
        .unwrap();
    let a = f.directory().get("admin").unwrap().unwrap();
    assert_eq!(a.role, Role::Admin);
    assert!(a.history.is_empty() && a.initial.is_none());
    assert_eq!(keys_in(&f, PRIVILEGED_ACCOUNTS), ["admin"]);
}

#[test]
fn a_record_under_another_name_is_corrupt_not_trusted() {
    let f = Fixture::new();
    first_admin(&f);
    let dir = f.directory();
    let mut a = dir.get("admin").unwrap().unwrap();
    a.username = "mallory".into();
    f.store
        .put(
            PRIVILEGED_ACCOUNTS,
            "admin",
            &serde_json::to_vec(&a).unwrap(),
        )
        .unwrap();
    assert!(matches!(dir.get("admin"), Err(AccountError::Corrupt(_))));
    assert!(validate_name("mallory").is_ok());
}
