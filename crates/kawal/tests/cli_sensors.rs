//! `kawal sensor …` and `kawal sim` against the real daemon, as an operator would use them.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests"
)]

mod common;

use common::gateway::Gateway;
use common::{cli, d};

const NEW: &str = "Quiet-Harbour-Lamp-73";

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

/// G045: AU-1-9, AU-1-10
/// The operator enrols, lists, shows and revokes sensors from the command line; the token is
/// printed once and the list shows each certificate's state.
#[test]
fn the_operator_manages_sensors_from_the_command_line() {
    let gw = Gateway::start();
    let session = admin_session(&gw);
    let r = cli(&session, &["sensor", "enroll", "tank-4"], "");
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains("one-time enrolment token"),
        "{}",
        r.stdout
    );
    let token = r.stdout.lines().nth(1).unwrap().trim().to_owned();
    assert_eq!(token.len(), 43, "{}", r.stdout);
    // The sensor enrols itself with the token.
    let dir = gw.tmp.path().join("tank-4");
    let (code, out) = common::sensors::est_enroll_raw(&gw, "tank-4", &token, &dir);
    assert_eq!(code, 0, "{out}");
    let r = cli(&session, &["sensor", "list"], "");
    assert_eq!(r.code, 0, "{}", r.all());
    let line = r.stdout.lines().find(|l| l.starts_with("tank-4")).unwrap();
    assert!(line.contains("active"), "{}", r.stdout);
    let r = cli(&session, &["sensor", "show", "tank-4"], "");
    assert!(r.stdout.contains("BEGIN CERTIFICATE"), "{}", r.stdout);
    let r = cli(&session, &["sensor", "revoke", "tank-4"], "");
    assert_eq!(r.code, 0, "{}", r.all());
    let r = cli(&session, &["sensor", "list"], "");
    let line = r.stdout.lines().find(|l| l.starts_with("tank-4")).unwrap();
    assert!(line.contains("revoked"), "{}", r.stdout);
    // Bad input: a clear refusal, no request.
    let r = cli(&session, &["sensor", "enroll", "../etc"], "");
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("sensor name"), "{}", r.stderr);
    // A second enrolment of the same name is a conflict, not a new token.
    let r = cli(&session, &["sensor", "enroll", "tank-4"], "");
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("409"), "{}", r.stderr);
}

/// G045: AU-1-9, AU-3-2
/// `kawal sim` enrols sensors through the API and EST and publishes over mutual TLS; a reader
/// measures the end-to-end latency; every QoS 1 message is acknowledged.
#[test]
fn kawal_sim_enrols_sensors_and_publishes() {
    let gw = Gateway::start();
    let session = admin_session(&gw);
    let r = cli(
        &session,
        &[
            "sim",
            "--sensors",
            "3",
            "--rate",
            "60",
            "--duration",
            "3",
            "--reader",
            "--mqtt",
            &format!("localhost:{}", gw.mqtt.port()),
        ],
        "",
    );
    assert_eq!(r.code, 0, "{}", r.all());
    let summary = r.stdout.lines().last().unwrap();
    let sent: u64 = summary.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(sent >= 100, "{summary}");
    assert!(
        summary.contains(&format!("acknowledged {sent}")),
        "{summary}"
    );
    assert!(summary.contains("end-to-end"), "{summary}");
    let e2e: u64 = summary
        .split("end-to-end (")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        e2e >= sent * 9 / 10,
        "reader saw {e2e} of {sent}: {summary}"
    );
}
