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

/// G045: AU-1-9, AU-3-1
/// Sensors whose certificates come from an external CA (a manufacturer's, made with openssl
/// here) are trusted once the operator imports them with `kawal sensor import`: before, the
/// gateway refuses them as not enrolled; after, `mosquitto_pub` gets through; a certificate of
/// another CA is not imported; a newer certificate from the factory supersedes the old one;
/// revocation shuts the sensor out. The gateway's own sensors are not affected.
#[test]
fn sensors_with_certificates_from_an_external_ca_are_imported_and_revocable() {
    use common::sensors::{
        SensorFiles, gateway_ca_file, issue, mosquitto_pub, test_ca, wait_event,
    };
    let tmp = tempfile::tempdir().unwrap();
    let factory = test_ca(tmp.path(), "factory CA");
    let stranger = test_ca(tmp.path(), "stranger CA");
    let ext = "subjectAltName=URI:urn:kawal:sensor:ext-7\nextendedKeyUsage=clientAuth\n\
               keyUsage=digitalSignature\n";
    let (cert, key) = issue(
        &tmp.path().join("a"),
        (&factory.0, &factory.1),
        "ext-7",
        ext,
    );
    let (cert2, key2) = issue(
        &tmp.path().join("b"),
        (&factory.0, &factory.1),
        "ext-7",
        ext,
    );
    let (fake, _) = issue(
        &tmp.path().join("c"),
        (&stranger.0, &stranger.1),
        "ext-7",
        ext,
    );
    let gw = Gateway::start_with(|cfg| {
        common::gateway::set(cfg, "sensors", "external-ca-file", d(&factory.0));
    });
    let session = admin_session(&gw);
    let files = |cert: &std::path::Path, key: &std::path::Path| SensorFiles {
        name: "ext-7".into(),
        dir: tmp.path().to_owned(),
        key: key.to_owned(),
        cert: cert.to_owned(),
        gateway_ca: gateway_ca_file(&gw),
    };
    let first = files(&cert, &key);
    let publish = |f: &SensorFiles| {
        mosquitto_pub(&gw, f, None, "kawal/ext-7/up/t", "1")
            .status
            .success()
    };

    assert!(
        !publish(&first),
        "an external certificate got in before its import"
    );
    assert!(wait_event(
        &gw,
        "mqtt.refused",
        10,
        |e| e["details"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("not-enrolled"))
            || e["details"]["detail"]
                .as_str()
                .is_some_and(|r| r.contains("not-enrolled"))
    ));

    let r = cli(&session, &["sensor", "import", "--cert", d(&fake)], "");
    assert_ne!(
        r.code,
        0,
        "another CA's certificate was imported: {}",
        r.all()
    );
    let r = cli(&session, &["sensor", "import", "--cert", d(&cert)], "");
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains("ext-7: imported certificate"),
        "{}",
        r.stdout
    );
    assert!(
        publish(&first),
        "the imported sensor was refused: {}",
        gw.daemon_log()
    );

    // The factory issued a newer certificate: importing it supersedes the first.
    let r = cli(&session, &["sensor", "import", "--cert", d(&cert2)], "");
    assert_eq!(r.code, 0, "{}", r.all());
    let second = files(&cert2, &key2);
    assert!(publish(&second));
    assert!(!publish(&first), "a superseded certificate got in");

    let r = cli(&session, &["sensor", "revoke", "ext-7"], "");
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(!publish(&second), "a revoked sensor got in");
    let issued = gw.events("sensor.certificate-issued");
    assert_eq!(
        issued
            .iter()
            .filter(|e| e["details"]["via"] == "external-ca-import")
            .count(),
        2,
        "{issued:?}"
    );

    // The gateway's own enrolment still works beside the external CA.
    let mut api = gw.client();
    assert_eq!(api.login("admin", NEW).status(), reqwest::StatusCode::OK);
    let own = common::sensors::sensor(&gw, &mut api, "own-1", None);
    assert!(
        mosquitto_pub(&gw, &own, None, "kawal/own-1/up/t", "1")
            .status
            .success()
    );
}
