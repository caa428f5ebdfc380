//! The report as the running daemon serves it: access controls judged by the configuration in
//! force, the listener the daemon recorded and the lockouts in the store.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failure should stop the test loudly"
)]
mod common;
use common::gateway::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

const ADMIN_PW: &str = "Tanjung-Rambutan-Kiln-47";
const USER_PW: &str = "Seri-Kembangan-Ferry-93";

fn control(rep: &Value, code: &str) -> Value {
    rep["controls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["code"] == code)
        .cloned()
        .unwrap()
}

fn report(api: &mut Api) -> Value {
    let r = api.get("/api/v1/report?format=json");
    assert_eq!(r.status(), StatusCode::OK);
    r.json().unwrap()
}

/// G045: AU-1-1, AU-1-2, AU-1-3, AU-1-5, AU-1-6, AU-1-7, AU-1-8, AU-2-2, AU-2-3, DS-3-1, DS-3-2, PL-3-1, PL-3-2
#[test]
fn the_served_report_reads_the_access_controls_from_the_live_daemon() {
    let mut gw = Gateway::start();
    let mut admin = gw.admin_ready(ADMIN_PW);
    let rep = report(&mut admin);
    for code in [
        "AU-1-1", "AU-1-2", "AU-1-3", "AU-1-5", "AU-1-6", "AU-1-7", "AU-1-8", "AU-2-2", "AU-2-3",
        "DS-3-1", "DS-3-2", "PL-3-2",
    ] {
        assert_eq!(
            control(&rep, code)["verdict"],
            "met",
            "{code}: {}",
            control(&rep, code)
        );
    }
    // The listener as the daemon recorded it.
    let pl32 = control(&rep, "PL-3-2").to_string();
    assert!(pl32.contains(&gw.addr.to_string()), "{pl32}");
    assert!(
        pl32.contains("TLSv1_3") && pl32.contains("TLS13_AES_256_GCM_SHA384"),
        "{pl32}"
    );
    // The daemon's own confinement as it recorded it at start (the test runs it by hand,
    // as root: not confined, and said so).
    let pl31 = control(&rep, "PL-3-1");
    let confinement = pl31["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["label"] == "daemon confinement (its last start)")
        .unwrap_or_else(|| panic!("no confinement evidence: {pl31}"));
    let shown = confinement["value"].as_str().unwrap();
    let me = std::fs::read_to_string("/proc/self/status").unwrap();
    let uid = me
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next())
        .unwrap();
    assert!(shown.starts_with(&format!("uid {uid},")), "{shown}");
    if uid == "0" {
        assert!(shown.contains("runs as root"), "{shown}");
    }
    // Judged by the file in force, not the defaults.
    let au13 = control(&rep, "AU-1-3").to_string();
    assert!(au13.contains("configuration file in force"), "{au13}");
    assert!(au13.contains("127.0.0.0/8"), "exempt network shown: {au13}");

    // An account locked by failures shows up as locked, by name.
    let proof = admin.reauth(ADMIN_PW);
    let r = admin.post_reauth(
        "/api/v1/accounts",
        &json!({ "username": "siti", "password": USER_PW, "role": "auditor" }),
        &proof,
    );
    assert_eq!(r.status(), StatusCode::CREATED, "{}", r.text().unwrap());
    for _ in 0..5 {
        let r = gw.client().login("siti", "Not-Her-Password-0000");
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let rep = report(&mut admin);
    let au13 = control(&rep, "AU-1-3");
    let locked = au13["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["label"] == "locked now")
        .unwrap_or_else(|| panic!("no 'locked now' evidence: {au13}"));
    assert_eq!(locked["value"], "siti", "{au13}");
    // The new account starts on an initial password, which AU-1-1 names.
    let au11 = control(&rep, "AU-1-1").to_string();
    assert!(au11.contains("siti"), "{au11}");
    gw.stop();
}

/// G045: AU-1-3, DS-3-1
#[test]
fn loose_settings_in_force_fail_their_controls() {
    let mut gw = Gateway::start_with(|cfg| {
        set(cfg, "login", "lockout-threshold", 50);
        set(cfg, "sessions", "idle-timeout-s", 3000);
    });
    let mut admin = gw.admin_ready(ADMIN_PW);
    let rep = report(&mut admin);
    let au13 = control(&rep, "AU-1-3");
    assert_eq!(au13["verdict"], "not-met", "{au13}");
    assert!(au13.to_string().contains("too loosely"), "{au13}");
    let ds31 = control(&rep, "DS-3-1");
    assert_eq!(ds31["verdict"], "not-met", "{ds31}");
    // `kawal audit --config` beside the daemon judges by the same file.
    let r = common::run(&[
        "audit",
        "--config",
        common::d(&gw.config),
        "--format",
        "json",
    ]);
    assert_eq!(r.code, 0, "{}", r.all());
    let rep: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(control(&rep, "AU-1-3")["verdict"], "not-met");
    assert_eq!(control(&rep, "PL-3-2")["verdict"], "met");
    // Without the file, the defaults are judged, and the evidence says so.
    let r = common::run(&[
        "audit",
        "--data-dir",
        common::d(&gw.data),
        "--format",
        "json",
    ]);
    assert_eq!(r.code, 0, "{}", r.all());
    let rep: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(control(&rep, "AU-1-3")["verdict"], "met");
    assert!(control(&rep, "AU-1-3").to_string().contains("defaults"));
    gw.stop();
}
