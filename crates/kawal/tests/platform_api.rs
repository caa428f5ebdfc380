//! The platform over the API against the real daemon (G045 PL-1-4, PL-3-1):
//! `POST /api/v1/integrity/verify` runs the integrity check now for an administrator only,
//! records it with the actor, updates health and names a flipped file; `GET /api/v1/platform`
//! shows auditors and administrators every finding; cross-site and token-less posts are
//! refused as on every other state-changing route.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failure should stop the test loudly"
)]
mod common;

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::gateway::{Api, Gateway, set};
use common::integrity::{binary_copy, flip, install_manifest};
use reqwest::StatusCode;
use serde_json::{Value, json};

const ADMIN_PW: &str = "Platform-verify-Passw0rd!";
const INITIAL: &str = "Initial-meadow-lantern-5823";

/// A daemon whose manifest lists a copy of the kawal binary and the trust store; the
/// watchers' periods are long, so every check in the test is one it asked for (or the
/// power-up one).
struct Rig {
    gw: Gateway,
    bin: PathBuf,
}

impl Rig {
    fn new() -> Self {
        let mut gw = Gateway::start_with(|cfg| {
            set(cfg, "integrity", "period-s", 3600);
            set(cfg, "exposure", "period-s", 3600);
        });
        assert_eq!(gw.stop(), Some(0), "{}", gw.daemon_log());
        let bin = binary_copy(&gw);
        let ca = gw.data.join("pki/dev-ca.crt.pem");
        install_manifest(&gw, &[("binary", bin.clone()), ("trust-store", ca)]);
        gw.spawn();
        Self { gw, bin }
    }
}

/// An account with `role` whose initial password is changed to `pw`, logged in.
fn user(gw: &Gateway, admin: &mut Api, name: &str, role: &str, pw: &str) -> Api {
    let proof = admin.reauth(ADMIN_PW);
    let r = admin.post_reauth(
        "/api/v1/accounts",
        &json!({ "username": name, "role": role, "password": INITIAL }),
        &proof,
    );
    assert_eq!(r.status(), StatusCode::CREATED);
    let mut api = gw.client();
    assert_eq!(api.login(name, INITIAL).status(), StatusCode::OK);
    let r = api.post(
        "/api/v1/password",
        &json!({ "current": INITIAL, "new": pw }),
    );
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().unwrap();
    api.csrf = v["csrf_token"].as_str().map(str::to_owned);
    api
}

fn verify(api: &mut Api) -> (StatusCode, Value) {
    let r = api.post("/api/v1/integrity/verify", &json!({}));
    let s = r.status();
    (s, r.json().unwrap_or(Value::Null))
}

/// The `integrity.*` events the API wrote for `actor`.
fn api_events(gw: &Gateway, name: &str, actor: &str) -> Vec<Value> {
    gw.events(name)
        .into_iter()
        .filter(|e| e["details"]["trigger"] == "api" && e["actor"] == actor)
        .collect()
}

/// G045: PL-1-4
/// An administrator's check runs now: 200 with the result, `integrity.verified` recorded with
/// trigger `api` and the administrator as actor, health updated. One flipped byte in a listed
/// file: the next check answers `failed` naming the file, is recorded as `integrity.failed`,
/// and health and `GET /api/v1/platform` show it; restored, it verifies again.
#[test]
fn an_admin_verifies_now_and_a_flipped_byte_fails_naming_the_file() {
    let rig = Rig::new();
    let gw = &rig.gw;
    let mut admin = gw.admin_ready(ADMIN_PW);
    let before: Value = admin.get("/api/v1/health").json().unwrap();
    assert_eq!(before["integrity"]["trigger"], "power-up", "{before}");

    let (s, v) = verify(&mut admin);
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "ok", "{v}");
    assert_eq!(v["files_checked"], 2, "{v}");
    assert_eq!(v["files_failed"], 0, "{v}");
    assert_eq!(v["trigger"], "api", "{v}");
    let ok = api_events(gw, "integrity.verified", "admin");
    assert_eq!(ok.len(), 1, "{ok:?}");
    assert_eq!(ok[0]["details"]["files"], 2);
    let h: Value = admin.get("/api/v1/health").json().unwrap();
    assert_eq!(h["integrity"]["trigger"], "api", "{h}");
    assert_eq!(h["integrity"]["last_check"], v["last_check"], "{h}");

    let orig = flip(&rig.bin, 100);
    let (s, v) = verify(&mut admin);
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "failed", "{v}");
    assert_eq!(v["files_failed"], 1, "{v}");
    let named = rig.bin.to_str().unwrap();
    let problems = v["problems"].to_string();
    assert!(problems.contains(named), "{named} not in {problems}");
    let failed = api_events(gw, "integrity.failed", "admin");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["outcome"], "failure");
    assert!(
        failed[0]["details"]["problems"]
            .as_str()
            .unwrap()
            .contains(named),
        "{failed:?}"
    );
    let h: Value = admin.get("/api/v1/health").json().unwrap();
    assert_eq!(h["integrity"]["state"], "failed", "{h}");
    let p: Value = admin.get("/api/v1/platform").json().unwrap();
    assert_eq!(p["integrity"]["state"], "failed", "{p}");
    assert!(
        p["integrity"]["problems"].to_string().contains(named),
        "{p}"
    );

    std::fs::write(&rig.bin, orig).unwrap();
    let (s, v) = verify(&mut admin);
    assert_eq!(
        (s, v["state"].as_str()),
        (StatusCode::OK, Some("ok")),
        "{v}"
    );
    // The daemon keeps serving throughout (on-mismatch = alert by default).
    assert!(!gw.daemon_log().contains("panicked"));
}

/// G045: PL-1-4
/// Only administrators may start a check: an auditor reads `GET /api/v1/platform` but gets
/// 403 on verify (recorded as `access.denied`), an operator gets 403 on both, no session is
/// 401; a verify with a foreign `Origin` or without the CSRF token is refused (403,
/// `csrf.refused`) and runs nothing.
#[test]
fn only_admins_verify_and_cross_site_or_tokenless_posts_are_refused() {
    let rig = Rig::new();
    let gw = &rig.gw;
    let mut admin = gw.admin_ready(ADMIN_PW);
    let mut auditor = user(
        gw,
        &mut admin,
        "au1",
        "auditor",
        "Auditor-reads-platform-42",
    );
    let mut operator = user(
        gw,
        &mut admin,
        "op1",
        "operator",
        "Operator-runs-sensors-42",
    );

    let r = auditor.get("/api/v1/platform");
    assert_eq!(r.status(), StatusCode::OK);
    let p: Value = r.json().unwrap();
    for key in ["integrity", "exposure", "tamper", "log_forward"] {
        assert!(p.get(key).is_some(), "{key} missing: {p}");
    }
    assert_eq!(p["integrity"]["state"], "ok", "{p}");
    assert_eq!(p["tamper"]["state"], "disabled", "{p}");
    assert_eq!(p["log_forward"]["state"], "disabled", "{p}");

    let (s, _) = verify(&mut auditor);
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(
        gw.events("access.denied")
            .iter()
            .any(|e| e["actor"] == "au1" && e["details"]["route"] == "/api/v1/integrity/verify"),
        "the refusal is logged"
    );
    assert_eq!(
        operator.get("/api/v1/platform").status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(verify(&mut operator).0, StatusCode::FORBIDDEN);
    let mut nobody = gw.client();
    assert_eq!(
        nobody.get("/api/v1/platform").status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(verify(&mut nobody).0, StatusCode::UNAUTHORIZED);

    // Cross-site: a foreign origin, or a browser saying the request came from another site.
    let csrf_before = gw.events("csrf.refused").len();
    for (name, value) in [
        ("origin", "https://evil.example"),
        ("sec-fetch-site", "cross-site"),
    ] {
        let b = admin
            .request(reqwest::Method::POST, "/api/v1/integrity/verify")
            .header(name, value)
            .json(&json!({}));
        assert_eq!(admin.send(b).status(), StatusCode::FORBIDDEN, "{name}");
    }
    // No CSRF token, and a wrong one.
    let token = admin.csrf.take();
    assert_eq!(verify(&mut admin).0, StatusCode::FORBIDDEN, "no token");
    admin.csrf = Some("00".repeat(32));
    assert_eq!(verify(&mut admin).0, StatusCode::FORBIDDEN, "wrong token");
    admin.csrf = token;
    let deadline = Instant::now() + Duration::from_secs(5);
    while gw.events("csrf.refused").len() < csrf_before + 4 {
        assert!(Instant::now() < deadline, "csrf.refused not logged");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        api_events(gw, "integrity.verified", "admin").is_empty()
            && api_events(gw, "integrity.failed", "admin").is_empty(),
        "a refused request ran no check"
    );
    // The device's own origin passes.
    let b = admin
        .request(reqwest::Method::POST, "/api/v1/integrity/verify")
        .header("origin", format!("https://localhost:{}", gw.addr.port()))
        .header("sec-fetch-site", "same-origin")
        .json(&json!({}));
    assert_eq!(admin.send(b).status(), StatusCode::OK);
}

/// G045: PL-3-1
/// A listener outside the declared set (this test's own, on loopback) is in
/// `GET /api/v1/platform` with its severity, control, subject and owner, and what to do.
#[test]
fn platform_shows_every_finding_with_its_owner_and_what_to_do() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let subject = format!("tcp 127.0.0.1:{}", listener.local_addr().unwrap().port());
    let rig = Rig::new();
    let mut admin = rig.gw.admin_ready(ADMIN_PW);
    let deadline = Instant::now() + Duration::from_secs(20);
    let found = loop {
        let p: Value = admin.get("/api/v1/platform").json().unwrap();
        let hit = p["exposure"]["list"]
            .as_array()
            .and_then(|l| l.iter().find(|f| f["subject"] == subject.as_str()).cloned());
        if let Some(f) = hit {
            break f;
        }
        assert!(Instant::now() < deadline, "{subject} not found: {p}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        ["low", "medium", "high"].contains(&found["severity"].as_str().unwrap()),
        "{found}"
    );
    assert_eq!(found["control"], "PL-3-1", "{found}");
    assert_eq!(found["kind"], "loopback-listener", "{found}");
    let me = format!("pid {}", std::process::id());
    assert!(
        found["owner"].as_str().unwrap().contains(&me),
        "the owner names this process: {found}"
    );
    assert!(
        found["what_to_do"].as_str().is_some_and(|t| !t.is_empty()),
        "what to do: {found}"
    );
    drop(listener);
}
