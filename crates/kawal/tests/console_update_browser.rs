//! The console's Updates page in a real browser (headless `chromium` through `chromedriver`)
//! against a real daemon under `kawal boot --supervise` (G045 PL-2-1, PL-2-2): the administrator
//! checks for an update, sees the offer, applies it with the password typed into the form, and
//! after the restart sees the new version committed and the steps in the history; a wrong
//! password applies nothing. Screenshots go to `target/browser-screenshots/`;
//! `KAWAL_SKIP_BROWSER=1` skips with a notice.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failure should stop the test loudly"
)]
mod browser;
mod common;

use std::time::{Duration, Instant};

use browser::{Browser, launch};
use common::gateway::Gateway;
use common::update::{Vendor, device};

/// A password the policy accepts.
const GOOD: &str = "tamarind lantern 58 over quiet dunes";

fn log_in(b: &Browser, gw: &Gateway, password: &str) {
    b.goto(&gw.url("/login"));
    b.find("#username").clear().send_keys("admin");
    b.find("#password").clear().send_keys(password);
    b.submit(&b.find("form[action='/login'] button[type=submit]"));
}

fn row(b: &Browser, table: &str, key: &str) -> String {
    b.find_all(&format!("{table} tr"))
        .iter()
        .find(|r| r.text().starts_with(key))
        .map(|r| r.text())
        .unwrap_or_else(|| panic!("no row {key} in {table}"))
}

/// G045: PL-2-1, PL-2-2
/// Check, see the offer, apply with the password in the form (a wrong one applies nothing),
/// and after the restart the new version is committed and the history shows the trial.
#[test]
fn an_admin_applies_a_signed_update_from_the_updates_page() {
    let Some(b) = launch("update") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let vendor = Vendor::new(tmp.path());
    vendor.release("0.2.0", 1, &["self-test"]);
    let gw = device(&vendor);
    // The first login must change the one-time password.
    log_in(&b, &gw, &gw.admin_password);
    b.wait_path("password page", |p| p.starts_with("/password"));
    b.find("#current").send_keys(&gw.admin_password);
    b.find("#new").send_keys(GOOD);
    b.find("#confirm").send_keys(GOOD);
    b.submit(&b.find("form[action='/password'] button[type=submit]"));
    b.wait_path("dashboard", |p| p.starts_with("/dashboard"));

    b.find("nav a[href='/update']").click();
    b.wait_path("updates page", |p| p.starts_with("/update"));
    assert!(row(&b, "#update-state", "Active slot").ends_with('a'));
    b.submit(&b.find("#check-now"));
    assert!(
        b.find("#offered").text().contains("0.2.0"),
        "{}",
        b.source()
    );
    b.shot("offered");

    // A wrong password: refused, nothing applied.
    b.find("#apply-password")
        .send_keys("not my password at all 12");
    b.submit(&b.find("#apply-now"));
    assert!(
        b.find("#update-error")
            .text()
            .contains("Re-authentication failed"),
        "{}",
        b.source()
    );
    assert!(row(&b, "#update-state", "Installed version").ends_with(env!("CARGO_PKG_VERSION")));

    b.submit(&b.find("#check-now"));
    b.find("#apply-password").send_keys(GOOD);
    b.submit(&b.find("#apply-now"));
    assert!(
        b.find("#update-done").text().contains("on trial"),
        "{}",
        b.source()
    );
    b.shot("applied");

    // The daemon restarts into slot b, passes its health check and commits; the session ended
    // with the old process, so log in again.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        std::thread::sleep(Duration::from_millis(500));
        if std::net::TcpStream::connect_timeout(&gw.addr, Duration::from_millis(200)).is_err() {
            continue;
        }
        log_in(&b, &gw, GOOD);
        b.goto(&gw.url("/update"));
        if b.try_find("#update-state").is_some()
            && row(&b, "#update-state", "Installed version").ends_with("0.2.0")
            && b.try_find("#trial").is_none()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not committed: {}",
            gw.daemon_log()
        );
    }
    assert!(row(&b, "#update-state", "Active slot").ends_with('b'));
    let previous = row(&b, "#update-state", "Previous version");
    assert!(
        previous.contains(&format!("{} in slot a", env!("CARGO_PKG_VERSION"))),
        "{previous}"
    );
    let history = b.find("#history-table").text();
    assert!(history.contains("trial-started"), "{history}");
    assert!(history.contains("committed"), "{history}");
    b.shot("committed");
}
