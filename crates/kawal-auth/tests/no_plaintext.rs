#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]
//! No password reaches the disk: the store holds Argon2id verifiers only, sealed.
mod common;

use common::*;
use kawal_auth::accounts::{ACCOUNTS, PRIVILEGED_ACCOUNTS};
use kawal_auth::login::Authenticator;
use kawal_auth::roles::Role;

/// G045: AU-2-1
#[test]
fn the_store_never_holds_a_plaintext_password() {
    let f = Fixture::new();
    let dir = f.directory();
    let auth = Authenticator::new(dir.clone()).unwrap();
    let passwords: Vec<String> = (50..56).map(strong).collect();
    dir.add("ops", Some(Role::Operator), &secret(&passwords[0]), T0)
        .unwrap();
    dir.add("boss", Some(Role::Admin), &secret(&passwords[1]), T0)
        .unwrap();
    dir.change_password("ops", &secret(&passwords[2]), T0 + 1)
        .unwrap();
    dir.reset_password("boss", &secret(&passwords[3]), T0 + 2)
        .unwrap();
    dir.set_role("ops", Role::Admin).unwrap();
    assert!(
        auth.authenticate("ops", &secret(&passwords[2]), T0 + 3)
            .is_ok()
    );
    let _ = auth.authenticate("ops", &secret(&passwords[4]), T0 + 4);
    let _ = auth.authenticate("ghost", &secret(&passwords[5]), T0 + 5);

    // The records hold verifiers only, even before sealing.
    for table in [ACCOUNTS, PRIVILEGED_ACCOUNTS] {
        for (_, raw) in f.store.list(table).unwrap() {
            for pw in &passwords {
                assert!(!contains(&raw, pw.as_bytes()));
            }
        }
    }
    drop(auth);
    drop(dir);
    let f = f.reopen();
    let disk = f.disk_bytes();
    assert!(disk.len() > 4096, "the store file was read");
    for pw in &passwords {
        assert!(
            !contains(&disk, pw.as_bytes()),
            "plaintext password on disk"
        );
        // Nor any long piece of one.
        let piece = &pw.as_bytes()[..12];
        assert!(!contains(&disk, piece));
    }
    assert!(
        !contains(&disk, b"argon2id"),
        "records are sealed, not merely hashed"
    );
}
