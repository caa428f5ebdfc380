//! Services and interfaces (G045 PL-3-1): `kawal exposure check` and the daemon find a
//! listener outside the declared set, name the process that owns it, log it once, show it in
//! health and in the report; kawal's own listeners are part of the declared set.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failure should stop the test loudly"
)]
mod common;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::gateway::{Gateway, set};
use common::*;
use serde_json::Value;

const ADMIN_PW: &str = "Exposure-check-Passw0rd!";

/// G045: PL-3-1
/// A listener this test opens on 127.0.0.1 is found by `kawal exposure check`, owned by the
/// test process (the default policy forbids loopback listeners too); exit 1 exactly when a
/// finding is of high severity.
#[test]
fn exposure_check_finds_the_tests_listener_and_its_owner() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let subject = format!("tcp 127.0.0.1:{port}");
    let me = std::process::id();

    let r = run(&["exposure", "check", "--json"]);
    let a: Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.all()));
    let f = a["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["subject"] == subject.as_str())
        .unwrap_or_else(|| panic!("no finding for {subject}: {a}"));
    assert_eq!(f["control"], "PL-3-1");
    assert_eq!(f["kind"], "loopback-listener");
    assert!(
        f["detail"].as_str().unwrap().contains(&format!("pid {me}")),
        "{f}"
    );
    let l = a["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["port"] == port)
        .unwrap();
    assert!(
        l["owner"]["processes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["pid"] == me),
        "{l}"
    );
    let high = a["findings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["severity"] == "high");
    assert_eq!(r.code, i32::from(high), "{}", r.stderr);

    let text = run(&["exposure", "check"]);
    assert!(
        text.stdout.contains(&subject) && text.stdout.contains("held by"),
        "{}",
        text.stdout
    );
    drop(listener);
}

/// G045: PL-3-1
/// The daemon assesses at start and on its period: the test's listener is logged once as
/// `exposure.finding` with its owner (not again every period), health counts it, kawal's own
/// listeners are not findings, and the report names it under PL-3-1.
#[test]
fn the_daemon_logs_a_new_listener_once_and_shows_it() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let subject = format!("tcp 127.0.0.1:{port}");
    let gw = Gateway::start_with(|cfg| set(cfg, "exposure", "period-s", 1));
    let mine = |gw: &Gateway| -> Vec<Value> {
        gw.events("exposure.finding")
            .into_iter()
            .filter(|e| e["details"]["subject"] == subject.as_str())
            .collect()
    };
    let start = Instant::now();
    while mine(&gw).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "not logged: {}",
            gw.daemon_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Two more periods: still one event for it.
    std::thread::sleep(Duration::from_millis(2500));
    let found = mine(&gw);
    assert_eq!(found.len(), 1, "{found:?}");
    let e = &found[0]["details"];
    assert_eq!(e["control"], "PL-3-1");
    assert_eq!(e["kind"], "loopback-listener");
    assert!(
        e["owner"]
            .as_str()
            .unwrap()
            .contains(&format!("pid {}", std::process::id())),
        "{e}"
    );
    // kawal's own API and MQTT listeners are declared.
    for own in [gw.addr, gw.mqtt] {
        let s = format!("tcp {own}");
        assert!(
            gw.events("exposure.finding")
                .iter()
                .all(|e| e["details"]["subject"] != s.as_str()),
            "{s} reported"
        );
    }
    let mut api = gw.admin_ready(ADMIN_PW);
    let h: Value = api.get("/api/v1/health").json().unwrap();
    let x = &h["exposure"];
    assert!(x["findings"].as_u64().unwrap() >= 1, "{h}");
    assert!(x["last_check"].is_string(), "{h}");
    assert!(
        x["list"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["subject"] == subject.as_str()),
        "{h}"
    );

    let r = run(&["audit", "--config", d(&gw.config), "--format", "json"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let rep: Value = serde_json::from_str(&r.stdout).unwrap();
    let c = rep["controls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["code"] == "PL-3-1")
        .unwrap();
    assert_eq!(c["verdict"], "not-met", "{c}");
    assert!(c.to_string().contains(&subject), "{c}");
    for code in ["PH-1-1", "PH-1-2"] {
        let c = rep["controls"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["code"] == code)
            .unwrap();
        assert_ne!(
            c["verdict"], "met",
            "{code}: software alone cannot show it: {c}"
        );
    }
    drop(listener);
}
