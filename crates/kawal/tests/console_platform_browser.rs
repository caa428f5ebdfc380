//! The console's Platform page in a real browser (headless `chromium` through `chromedriver`)
//! against a real `kawal run` daemon with an integrity manifest installed (G045 PL-1-4,
//! PL-3-1): an administrator verifies integrity with the page's button and sees the result
//! (verified, then FAILED naming a flipped file); the findings table names this test's own
//! listener; an auditor sees the page but no button. Screenshots go to
//! `target/browser-screenshots/`; `KAWAL_SKIP_BROWSER=1` skips with a notice.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failure should stop the test loudly"
)]
mod browser;
mod common;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use browser::{Browser, launch};
use common::gateway::*;
use common::integrity::{binary_copy, flip, install_manifest};
use serde_json::json;

/// A password the policy accepts (long, no runs, not common).
const GOOD: &str = "tamarind lantern 58 over quiet dunes";
/// The auditor's initial password, and the one it changes to.
const AUDITOR_INITIAL: &str = "copper heron sleeps beside 7 grey canals";
const AUDITOR_PW: &str = "a fresh auditor passphrase 4 spring";

fn log_in(b: &Browser, gw: &Gateway, user: &str, password: &str) {
    b.goto(&gw.url("/login"));
    b.find("#username").clear().send_keys(user);
    b.find("#password").clear().send_keys(password);
    b.submit(&b.find("form[action='/login'] button[type=submit]"));
}

/// The value of the row `key` of the integrity table.
fn integrity_row(b: &Browser, key: &str) -> String {
    let rows = b.find_all("#integrity table.kv tr");
    rows.iter()
        .find(|r| r.text().starts_with(key))
        .map(|r| r.text())
        .unwrap_or_else(|| panic!("no row {key}"))
}

/// G045: PL-1-4
/// The administrator opens Platform from the dashboard's summary line, presses "Verify
/// integrity now" and sees the result of that check (started by `api`); after one flipped
/// byte the next press shows FAILED and names the file. An auditor sees the same page without
/// the button.
#[test]
fn an_admin_verifies_integrity_from_the_platform_page_and_an_auditor_has_no_button() {
    let Some(b) = launch("platform") else {
        return;
    };
    let mut gw = Gateway::start_with(|cfg| {
        set(cfg, "integrity", "period-s", 3600);
        set(cfg, "exposure", "period-s", 3600);
    });
    assert_eq!(gw.stop(), Some(0), "{}", gw.daemon_log());
    let bin = binary_copy(&gw);
    install_manifest(&gw, &[("binary", bin.clone())]);
    gw.spawn();
    let mut api = gw.admin_ready(GOOD);
    let proof = api.reauth(GOOD);
    let r = api.post_reauth(
        "/api/v1/accounts",
        &json!({ "username": "audrey", "role": "auditor", "password": AUDITOR_INITIAL }),
        &proof,
    );
    assert_eq!(r.status(), reqwest::StatusCode::CREATED);

    log_in(&b, &gw, "admin", GOOD);
    b.wait_path("/dashboard", |p| p == "/dashboard");
    let line = b.find("#platform-line");
    assert!(
        line.text().contains("integrity: verified"),
        "{}",
        line.text()
    );
    b.shot("dashboard-line");
    b.find("#platform-line a[href='/platform']").click();
    b.wait_path("/platform", |p| p == "/platform");
    assert_eq!(b.find("main h1").text(), "Platform");
    assert_eq!(b.find("#integrity-state").text(), "verified");
    assert!(integrity_row(&b, "Started by").contains("power-up"));
    b.shot("admin-platform");

    b.submit(&b.find("#verify-now"));
    b.wait_path("the page after the check", |p| {
        p == "/platform?done=verified"
    });
    assert!(
        b.find("#platform-done")
            .text()
            .contains("Integrity checked now")
    );
    assert_eq!(b.find("#integrity-state").text(), "verified");
    assert!(integrity_row(&b, "Started by").contains("api"));
    assert!(integrity_row(&b, "Files checked").contains('1'));
    b.shot("admin-verified");
    let verified = gw
        .events("integrity.verified")
        .into_iter()
        .filter(|e| e["actor"] == "admin" && e["details"]["trigger"] == "api")
        .count();
    assert_eq!(verified, 1);

    let orig = flip(&bin, 100);
    b.submit(&b.find("#verify-now"));
    assert_eq!(b.find("#integrity-state").text(), "FAILED");
    let problems = b.find("#integrity-problems").text();
    assert!(problems.contains(bin.to_str().unwrap()), "{problems}");
    b.shot("admin-failed");
    b.goto(&gw.url("/dashboard"));
    let line = b.find("#platform-line");
    assert!(line.text().contains("integrity: FAILED"), "{}", line.text());
    assert!(
        line.attr("class").is_some_and(|c| c.contains("warn")),
        "warn styling"
    );
    b.shot("dashboard-line-failed");
    std::fs::write(&bin, orig).unwrap();

    // The auditor: the page, the findings, no button.
    b.submit(&b.find("form.who button[type=submit]"));
    log_in(&b, &gw, "audrey", AUDITOR_INITIAL);
    b.wait_path("/password", |p| p == "/password");
    b.find("#current").clear().send_keys(AUDITOR_INITIAL);
    b.find("#new").clear().send_keys(AUDITOR_PW);
    b.find("#confirm").clear().send_keys(AUDITOR_PW);
    b.submit(&b.find("form[action='/password'] button[type=submit]"));
    b.wait_path("/dashboard", |p| p == "/dashboard");
    assert!(b.try_find("nav a[href='/platform']").is_some());
    b.goto(&gw.url("/platform"));
    assert_eq!(b.find("main h1").text(), "Platform");
    assert_eq!(b.find("#integrity-state").text(), "FAILED");
    assert!(
        b.try_find("#verify-now").is_none(),
        "no button for an auditor"
    );
    assert!(b.try_find("form[action='/platform/verify']").is_none());
    b.shot("auditor-platform");
}

/// G045: PL-3-1
/// A listener outside the declared set (this test's own, on loopback) is in the Platform
/// page's findings table with its severity, control, subject, owner and what to do.
#[test]
fn the_platform_page_lists_a_finding_with_its_owner_and_what_to_do() {
    let Some(b) = launch("platform-findings") else {
        return;
    };
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let subject = format!("tcp 127.0.0.1:{}", listener.local_addr().unwrap().port());
    let gw = Gateway::start_with(|cfg| set(cfg, "exposure", "period-s", 3600));
    drop(gw.admin_ready(GOOD));
    log_in(&b, &gw, "admin", GOOD);
    b.wait_path("/dashboard", |p| p == "/dashboard");
    let deadline = Instant::now() + Duration::from_secs(20);
    let row = loop {
        b.goto(&gw.url("/platform"));
        let hit = b
            .find_all("#findings-table tbody tr")
            .into_iter()
            .map(|r| r.text())
            .find(|t| t.contains(&subject));
        if let Some(t) = hit {
            break t;
        }
        assert!(Instant::now() < deadline, "{subject} not shown");
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(row.contains("PL-3-1"), "{row}");
    assert!(row.contains("loopback-listener"), "{row}");
    assert!(
        row.contains(&format!("pid {}", std::process::id())),
        "{row}"
    );
    assert!(
        ["low", "medium", "high"].iter().any(|s| row.contains(s)),
        "{row}"
    );
    b.shot("findings");
    drop(listener);
}
