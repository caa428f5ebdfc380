//! `kawal login`, `kawal logout`, `kawal user …` as clients of a real daemon's API, and the
//! local recovery `kawal recover unlock`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failure should stop the test loudly"
)]
mod common;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;

use common::gateway::*;
use common::*;
use reqwest::StatusCode;

/// The admin's password after the forced change.
const NEW: &str = "Quiet-Harbour-Lamp-73";
/// Another account's initial password.
const BOB: &str = "Silver-Meadow-Kite-58";

/// Logs the admin in through the CLI, changing the pre-installed password to [`NEW`].
fn admin_session(gw: &Gateway) -> std::path::PathBuf {
    let session = gw.tmp.path().join("cli").join("session");
    let r = cli(
        &session,
        &["login", "--config", d(&gw.config), "--user", "admin"],
        &format!("{}\n{NEW}\n", gw.admin_password),
    );
    assert_eq!(r.code, 0, "login: {}", r.all());
    session
}

/// G045: AU-1-1, AU-1-4, AU-1-2, DS-1-1
#[test]
fn login_with_the_initial_password_forces_a_change_and_logout_removes_the_private_session() {
    let gw = Gateway::start();
    let session = admin_session(&gw);
    assert!(!gw.events("password.changed").is_empty());

    let mode = std::fs::metadata(&session).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "session file mode {mode:o}");
    let dir_mode = std::fs::metadata(session.parent().unwrap())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dir_mode, 0o700, "session folder mode {dir_mode:o}");
    let bytes = std::fs::read(&session).unwrap();
    assert!(
        !contains(&bytes, NEW.as_bytes()),
        "password in the session file"
    );
    assert!(!contains(&bytes, gw.admin_password.as_bytes()));

    let list = cli(&session, &["user", "list"], "");
    assert_eq!(list.code, 0, "{}", list.all());
    assert!(list.stdout.contains("admin"), "{}", list.stdout);
    // Even the most verbose diagnostics never show the cookie or a password.
    let saved: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let cookie = saved["cookie"].as_str().unwrap().to_owned();
    assert_eq!(cookie.len(), 64);
    let mut traced = kawal();
    traced.env("KAWAL_LOG", "trace").args([
        "user",
        "passwd",
        "--session-file",
        d(&session),
        "--password-stdin",
    ]);
    let mut child = traced
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _ = child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{NEW}\n{NEW}\n").as_bytes());
    let out = child.wait_with_output().unwrap();
    assert_ne!(
        out.status.code(),
        Some(0),
        "reusing the password must be refused"
    );
    for secret in [cookie.as_str(), NEW] {
        assert!(
            !contains(&out.stderr, secret.as_bytes()),
            "secret in diagnostics"
        );
        assert!(
            !contains(&out.stdout, secret.as_bytes()),
            "secret in output"
        );
    }

    let out = cli(&session, &["logout"], "");
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(!session.exists(), "session file left after logout");
    assert!(!gw.events("session.ended").is_empty());
    let after = cli(&session, &["user", "list"], "");
    assert_eq!(after.code, 77, "{}", after.all());
    assert!(after.stderr.contains("not logged in"), "{}", after.stderr);

    // Again with --url and --ca: the changed password, no change asked for. Only the given CA
    // is trusted: pinning another certificate fails before a password is sent.
    let ca = gw.data.join("pki/dev-ca.crt.pem");
    let url = format!("https://127.0.0.1:{}", gw.addr.port());
    let other = gw.data.join("pki/device.crt.pem");
    let r = cli(
        &session,
        &["login", "--url", &url, "--ca", d(&other), "--user", "admin"],
        &format!("{NEW}\n"),
    );
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("certificate"), "{}", r.stderr);
    assert!(!session.exists());
    let r = cli(
        &session,
        &["login", "--url", &url, "--ca", d(&ca), "--user", "admin"],
        &format!("{NEW}\n"),
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(!r.stdout.contains("password changed"), "{}", r.stdout);
    // The old password is gone.
    let mut api = gw.client();
    assert_eq!(
        api.login("admin", &gw.admin_password).status(),
        StatusCode::UNAUTHORIZED
    );
}

/// G045: AU-1-5, AU-1-6, AU-1-2
#[test]
fn accounts_are_added_changed_disabled_and_removed_and_the_last_admin_stays() {
    let gw = Gateway::start();
    let session = admin_session(&gw);
    let reauth = format!("{NEW}\n");

    let add = cli(
        &session,
        &["user", "add", "bob", "--role", "operator"],
        &format!("{BOB}\n{NEW}\n"),
    );
    assert_eq!(add.code, 0, "{}", add.all());
    let list = cli(&session, &["user", "list"], "");
    let bob = list
        .stdout
        .lines()
        .find(|l| l.starts_with("bob "))
        .unwrap_or_else(|| panic!("bob listed: {}", list.stdout))
        .to_owned();
    assert!(
        bob.contains("operator") && bob.contains("must change"),
        "{bob}"
    );

    let role = cli(&session, &["user", "role", "bob", "auditor"], &reauth);
    assert_eq!(role.code, 0, "{}", role.all());
    assert!(
        role.stdout.contains("operator -> auditor"),
        "{}",
        role.stdout
    );

    let off = cli(&session, &["user", "disable", "bob"], "");
    assert_eq!(off.code, 0, "{}", off.all());
    let list = cli(&session, &["user", "list"], "");
    assert!(
        list.stdout
            .lines()
            .any(|l| l.starts_with("bob ") && l.contains("auditor") && l.contains("disabled")),
        "{}",
        list.stdout
    );
    let on = cli(&session, &["user", "enable", "bob"], "");
    assert_eq!(on.code, 0, "{}", on.all());

    // The last administrator cannot be demoted: the server's reason, exit 77.
    let demote = cli(&session, &["user", "role", "admin", "operator"], &reauth);
    assert_eq!(demote.code, 77, "{}", demote.all());
    assert!(
        demote.stderr.contains("last enabled administrator"),
        "{}",
        demote.stderr
    );
    // Bad input is refused before anything is sent.
    let bad = cli(&session, &["user", "role", "bob", "superuser"], &reauth);
    assert_eq!(bad.code, 65, "{}", bad.all());
    assert!(bad.stderr.contains("unknown role"), "{}", bad.stderr);
    // A wrong re-authentication password changes nothing.
    let wrong = cli(&session, &["user", "remove", "bob"], "not-my-password\n");
    assert_eq!(wrong.code, 77, "{}", wrong.all());

    let rm = cli(&session, &["user", "remove", "bob"], &reauth);
    assert_eq!(rm.code, 0, "{}", rm.all());
    let list = cli(&session, &["user", "list"], "");
    assert!(
        !list.stdout.lines().any(|l| l.starts_with("bob ")),
        "{}",
        list.stdout
    );
    // `account.role-changed` is checked by the test below.
    for event in [
        "account.created",
        "account.disabled",
        "account.enabled",
        "account.removed",
    ] {
        assert!(!gw.events(event).is_empty(), "{event} not logged");
    }
}

/// G045: AU-1-1, AU-1-3, AU-1-5
#[test]
fn passwords_are_changed_and_reset_and_a_locked_account_unlocked_through_the_cli() {
    const BOB2: &str = "Amber-Valley-Drum-64";
    const BOB3: &str = "Copper-Island-Fern-29";
    let gw = Gateway::start();
    let admin = admin_session(&gw);
    let add = cli(
        &admin,
        &["user", "add", "bob", "--role", "auditor"],
        &format!("{BOB}\n{NEW}\n"),
    );
    assert_eq!(add.code, 0, "{}", add.all());

    // Bob's first login forces a change; a weak new password is refused with the rules.
    let bob = gw.tmp.path().join("bob-session");
    let login = |input: &str| {
        cli(
            &bob,
            &["login", "--config", d(&gw.config), "--user", "bob"],
            input,
        )
    };
    let weak = login(&format!("{BOB}\nshort\n"));
    assert_eq!(weak.code, 65, "{}", weak.all());
    assert!(weak.stderr.contains("password rejected"), "{}", weak.stderr);
    assert!(!bob.exists(), "no session kept after a failed change");
    let r = login(&format!("{BOB}\n{BOB2}\n"));
    assert_eq!(r.code, 0, "{}", r.all());
    // Bob changes his own password; the rotated session is kept and still works.
    let own = cli(&bob, &["user", "passwd"], &format!("{BOB2}\n{BOB3}\n"));
    assert_eq!(own.code, 0, "{}", own.all());
    // An auditor may not manage accounts: the server's refusal, exit 77.
    let list = cli(&bob, &["user", "list"], "");
    assert_eq!(list.code, 77, "{}", list.all());
    assert!(list.stderr.contains("not permitted"), "{}", list.stderr);
    let out = cli(&bob, &["logout"], "");
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stdout.contains("logged out"), "{}", out.stdout);

    // The admin sets a new initial password: bob must change it again.
    let reset = cli(
        &admin,
        &["user", "passwd", "bob"],
        &format!("{BOB}\n{NEW}\n"),
    );
    assert_eq!(reset.code, 0, "{}", reset.all());
    let mut api = gw.client();
    assert_eq!(api.login("bob", BOB).status(), StatusCode::OK);
    let who: serde_json::Value = api.get("/api/v1/session").json().unwrap();
    assert_eq!(who["must_change_password"], true);

    // Locked by failures, unlocked by the admin through the API.
    for _ in 0..5 {
        assert_eq!(
            api.login("bob", "Wrong-Password-991").status(),
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(api.login("bob", BOB).status(), StatusCode::UNAUTHORIZED);
    let list = cli(&admin, &["user", "list"], "");
    assert!(
        list.stdout
            .lines()
            .any(|l| l.starts_with("bob ") && l.contains("locked")),
        "{}",
        list.stdout
    );
    let unlock = cli(&admin, &["user", "unlock", "bob"], "");
    assert_eq!(unlock.code, 0, "{}", unlock.all());
    assert!(unlock.stdout.contains("was locked"), "{}", unlock.stdout);
    assert_eq!(api.login("bob", BOB).status(), StatusCode::OK);
}

/// G045: AU-1-2, AU-2-3
#[test]
fn commands_without_a_private_session_or_with_an_unsafe_target_are_refused_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let session = tmp.path().join("session");
    let r = cli(&session, &["user", "list"], "");
    assert_eq!(r.code, 77, "{}", r.all());
    assert!(r.stderr.contains("not logged in"), "{}", r.stderr);
    assert!(r.stderr.contains("kawal login"), "{}", r.stderr);

    // A session file others can read is not used.
    std::fs::write(&session, b"{}").unwrap();
    std::fs::set_permissions(&session, std::fs::Permissions::from_mode(0o644)).unwrap();
    let r = cli(&session, &["user", "list"], "");
    assert_eq!(r.code, 77, "{}", r.all());
    assert!(r.stderr.contains("others may read it"), "{}", r.stderr);

    // Plain HTTP is never used, and a CA is required with --url.
    let r = cli(
        &session,
        &[
            "login",
            "--url",
            "http://127.0.0.1:1",
            "--ca",
            "/dev/null",
            "--user",
            "admin",
        ],
        "x\n",
    );
    assert_eq!(r.code, 78, "{}", r.all());
    assert!(r.stderr.contains("https"), "{}", r.stderr);
    let r = cli(
        &session,
        &["login", "--url", "https://127.0.0.1:1", "--user", "admin"],
        "x\n",
    );
    assert_eq!(r.code, 78, "{}", r.all());
    assert!(r.stderr.contains("--ca"), "{}", r.stderr);
}

/// G045: AU-1-3, AU-1-5
#[test]
fn recover_unlock_clears_a_locked_admin_beside_the_running_daemon_and_is_audited() {
    let gw = Gateway::start();
    drop(gw.admin_ready(NEW));
    let mut api = gw.client();
    for _ in 0..5 {
        assert_eq!(
            api.login("admin", "Wrong-Password-991").status(),
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        api.login("admin", NEW).status(),
        StatusCode::UNAUTHORIZED,
        "the account should be locked"
    );

    let r = run(&["recover", "unlock", "admin", "--config", d(&gw.config)]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("lockout cleared"), "{}", r.stdout);
    assert_eq!(api.login("admin", NEW).status(), StatusCode::OK);

    let unknown = run(&["recover", "unlock", "nobody", "--config", d(&gw.config)]);
    assert_eq!(unknown.code, 66, "{}", unknown.all());

    let events = gw.events("recovery.unlock");
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0]["actor"], "local-recovery");
    assert_eq!(events[0]["outcome"], "success");
    assert_eq!(events[0]["details"]["user"], "admin");
    assert_eq!(events[0]["details"]["was_locked"], true);
    assert_eq!(events[1]["outcome"], "denied");
}

/// G045: AU-1-5
#[test]
fn role_changes_through_the_cli_are_audited() {
    let gw = Gateway::start();
    let session = admin_session(&gw);
    let add = cli(
        &session,
        &["user", "add", "bob"],
        &format!("{BOB}\n{NEW}\n"),
    );
    assert_eq!(add.code, 0, "{}", add.all());
    let role = cli(
        &session,
        &["user", "role", "bob", "auditor"],
        &format!("{NEW}\n"),
    );
    assert_eq!(role.code, 0, "{}", role.all());
    assert!(!gw.events("account.role-changed").is_empty());
}
