//! Sensors against the real daemon: enrolment through the API and EST, real Mosquitto clients
//! as third-party sensors, revocation, topic lanes, and the negative mutual-TLS suite with
//! `mosquitto_pub` and `openssl s_client`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests"
)]

mod common;

use std::time::Duration;

use common::d;
use common::gateway::Gateway;
use common::sensors::*;
use reqwest::StatusCode;
use serde_json::Value;

const ADMIN_PW: &str = "Sturdy-harbour-lantern-47";

fn output(o: &std::process::Output) -> String {
    format!(
        "status {:?}: {}{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// G045: AU-1-9, AU-3-2, DS-1-1
/// A sensor enrolled by the operator gets its certificate by EST with a key it made itself,
/// then real `mosquitto_pub` publishes over mutual TLS; a `reader` on `mosquitto_sub` receives
/// it, and the gateway's state shows it.
#[test]
fn an_enrolled_sensor_publishes_with_mosquitto_and_a_reader_receives() {
    let gw = Gateway::start();
    let mut api = gw.admin_ready(ADMIN_PW);
    let s = sensor(&gw, &mut api, "boiler-7", None);
    let reader = sensor(&gw, &mut api, "dashboard", Some("reader"));
    // The key was made by the sensor: the gateway's data folder never held it.
    let key = std::fs::read(&s.key).unwrap();
    assert!(common::holders(&gw.data, &key[30..80]).is_empty());

    let sub = Sub::start(&gw, &reader, "kawal/+/up/#");
    std::thread::sleep(Duration::from_millis(800));
    let o = mosquitto_pub(&gw, &s, None, "kawal/boiler-7/up/temp", "21.5");
    assert!(o.status.success(), "{}", output(&o));
    assert!(
        sub.wait_for(10, |l| l.iter().any(|x| x == "kawal/boiler-7/up/temp 21.5")),
        "reader got {:?}",
        sub.lines()
    );
    let v: Value = api.get("/api/v1/gateway").json().unwrap();
    let text = v.to_string();
    assert!(text.contains("kawal/boiler-7/up/temp"), "{text}");
    assert!(!gw.events("sensor.enrolled").is_empty());
    assert!(wait_event(&gw, "mqtt.connected", 5, |e| e["actor"] == "boiler-7"));
    let list: Value = api.get("/api/v1/sensors").json().unwrap();
    let mine = list["sensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["uid"] == "boiler-7")
        .unwrap()
        .clone();
    assert_eq!(mine["state"], "active", "{list}");
}

/// G045: AU-1-10
/// The enrolment token works once, and only for the name it was issued for: another
/// sensor's token yields that sensor's certificate, which the client refuses to install.
#[test]
fn an_enrolment_token_is_single_use_and_bound_to_its_name() {
    let gw = Gateway::start();
    let mut api = gw.admin_ready(ADMIN_PW);
    let token = enroll(&mut api, "pump-1", None);
    let other = enroll(&mut api, "pump-2", None);
    let dir = gw.tmp.path().join("x");
    // Another sensor's token: the certificate names pump-2, never pump-1.
    let (code, out) = est_enroll_raw(&gw, "pump-1", &other, &dir);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("issued for 'pump-2'"), "{out}");
    assert!(!dir.join("sensor.crt.pem").exists());
    let v: Value = api.get("/api/v1/sensors/pump-1").json().unwrap();
    assert!(v["serial"].is_null(), "pump-1 got a certificate: {v}");
    let (code, out) = est_enroll_raw(&gw, "pump-1", &token, &dir);
    assert_eq!(code, 0, "{out}");
    let (code, out) = est_enroll_raw(&gw, "pump-1", &token, &dir.join("again"));
    assert_ne!(code, 0, "a used token enrolled again: {out}");
    assert!(out.contains("401"), "{out}");
}

/// G045: AU-1-10
/// Revocation takes effect at once: the live connection is dropped, a new one is refused,
/// and the CRL lists the serial.
#[test]
fn a_revoked_sensor_is_dropped_at_once_and_refused_after() {
    let gw = Gateway::start();
    let mut api = gw.admin_ready(ADMIN_PW);
    let s = sensor(&gw, &mut api, "valve-3", None);
    let mut sub = Sub::start(&gw, &s, "kawal/valve-3/down/#");
    assert!(wait_event(&gw, "mqtt.connected", 10, |e| e["actor"] == "valve-3"));
    let r = api.post("/api/v1/sensors/valve-3/revoke", &serde_json::json!({}));
    assert_eq!(r.status(), StatusCode::OK);
    let serial = r.json::<Value>().unwrap()["serial"]
        .as_str()
        .unwrap()
        .to_owned();
    // mosquitto_sub reconnects on its own: the connection is dropped and every retry refused.
    assert!(
        wait_event(&gw, "mqtt.refused", 10, |e| e["details"]["reason"]
            == "revoked"
            || e["details"]["reason"] == "bad-certificate"),
        "no refusal after revocation: {:?}",
        gw.events("mqtt.refused")
    );
    drop(sub.child.kill());
    let o = mosquitto_pub(&gw, &s, None, "kawal/valve-3/up/x", "1");
    assert!(
        !o.status.success(),
        "revoked sensor published: {}",
        output(&o)
    );
    let crl = api.get("/api/v1/sensors/crl").text().unwrap();
    let f = gw.tmp.path().join("crl.pem");
    std::fs::write(&f, crl).unwrap();
    let o = openssl(&["crl", "-in", d(&f), "-noout", "-text"]);
    assert!(o.status.success(), "{}", output(&o));
    let text = String::from_utf8_lossy(&o.stdout).to_ascii_lowercase();
    assert!(
        text.contains(&serial.trim_start_matches('0').to_ascii_lowercase()),
        "serial {serial} not in CRL: {text}"
    );
}

/// G045: DS-2-1
/// A sensor is kept in its lane: publishing under another UID and subscribing to everything
/// are refused, and the audit log names the topic.
#[test]
fn a_sensor_outside_its_lane_is_denied_and_logged() {
    let gw = Gateway::start();
    let mut api = gw.admin_ready(ADMIN_PW);
    let s = sensor(&gw, &mut api, "meter-9", None);
    let o = mosquitto_pub(&gw, &s, None, "kawal/boiler-7/up/temp", "99");
    // mosquitto_pub reports success once the message is written; the gateway drops the
    // connection without a PUBACK. What counts is that nothing was accepted and it was logged.
    let _ = o;
    assert!(
        wait_event(&gw, "mqtt.denied", 10, |e| e["details"]["topic"]
            == "kawal/boiler-7/up/temp"),
        "{:?}",
        gw.events("mqtt.denied")
    );
    let v: Value = api.get("/api/v1/gateway").json().unwrap();
    assert!(!v.to_string().contains("kawal/boiler-7/up/temp"), "{v}");
    let mut sub = Sub::start(&gw, &s, "#");
    assert!(sub.exited_within(10) || sub.lines().is_empty());
    assert!(wait_event(
        &gw,
        "mqtt.denied",
        10,
        |e| e["details"]["topic"] == "#"
    ));
}

/// G045: AU-3-2, DS-1-2
/// The negative mutual-TLS suite: no certificate, a self-signed one, one from another CA, a
/// client id that is not the certificate's UID, TLS 1.1 and a weak TLS 1.2 suite are all
/// refused, and the refusals are logged.
#[test]
fn sensors_without_a_valid_identity_get_nowhere() {
    let gw = Gateway::start();
    let mut api = gw.admin_ready(ADMIN_PW);
    let good = sensor(&gw, &mut api, "good-1", None);
    let port = gw.mqtt.port().to_string();
    let ca = d(&good.gateway_ca).to_owned();
    let pub_with = |cert: Option<(&str, &str)>, id: &str| {
        let mut c = std::process::Command::new("mosquitto_pub");
        c.args(["-h", "localhost", "-p", &port, "--cafile", &ca, "-i", id]);
        if let Some((cert, key)) = cert {
            c.args(["--cert", cert, "--key", key]);
        }
        c.args(["-q", "1", "-t", &format!("kawal/{id}/up/x"), "-m", "1"]);
        c.output().unwrap()
    };
    // No client certificate.
    let o = pub_with(None, "good-1");
    assert!(!o.status.success(), "no cert: {}", output(&o));
    // Self-signed, and issued by another CA.
    let dir = gw.tmp.path().join("rogue");
    let (c, k) = self_signed(&dir, "good-1");
    let o = pub_with(Some((d(&c), d(&k))), "good-1");
    assert!(!o.status.success(), "self-signed: {}", output(&o));
    let (c, k) = other_ca_sensor(&dir.join("ca2"), "good-1");
    let o = pub_with(Some((d(&c), d(&k))), "good-1");
    assert!(!o.status.success(), "other CA: {}", output(&o));
    // The right certificate with another client id.
    let o = pub_with(Some((d(&good.cert), d(&good.key))), "someone-else");
    assert!(!o.status.success(), "client id mismatch: {}", output(&o));
    assert!(wait_event(
        &gw,
        "mqtt.refused",
        10,
        |e| e["details"]["reason"] == "client-id-mismatch"
    ));
    // Old protocol versions and weak suites, with openssl s_client; a strong TLS 1.2 suite
    // with the same certificate shows the check can see an accepted handshake.
    let connect = format!("localhost:{port}");
    let s_client = |args: &[&str]| {
        let mut c = std::process::Command::new("openssl");
        c.args(["s_client", "-connect", &connect, "-CAfile", &ca])
            .args(["-cert", d(&good.cert), "-key", d(&good.key)])
            .args(args)
            .stdin(std::process::Stdio::null());
        output(&c.output().unwrap())
    };
    let ok = s_client(&["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"]);
    assert!(ok.contains("New, TLSv1.2"), "strong TLS 1.2 refused: {ok}");
    for args in [
        &["-tls1_1"][..],
        &["-tls1_2", "-cipher", "AES128-SHA"],
        &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA"],
    ] {
        let text = s_client(args);
        assert!(!text.contains("New, TLSv"), "{args:?} was accepted: {text}");
    }
    // The good sensor still gets in.
    let o = mosquitto_pub(&gw, &good, None, "kawal/good-1/up/x", "ok");
    assert!(o.status.success(), "{}", output(&o));
    let refused = gw.events("mqtt.refused");
    assert!(refused.len() >= 4, "{refused:?}");
}

fn control(rep: &Value, code: &str) -> Value {
    rep["controls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["code"] == code)
        .cloned()
        .unwrap()
}

/// G045: AU-1-9, AU-1-10, AU-3-2, DS-1-1, DS-1-2, DS-2-1
/// The report judges the gateway controls from the live system: the listener the daemon
/// recorded, the sensors in the registry and the events in the log.
#[test]
fn the_report_reads_the_gateway_controls_from_the_live_system() {
    let gw = Gateway::start();
    let mut api = gw.admin_ready(ADMIN_PW);
    let s = sensor(&gw, &mut api, "report-1", None);
    let o = mosquitto_pub(&gw, &s, None, "kawal/other/up/x", "1");
    let _ = o;
    assert!(wait_event(&gw, "mqtt.denied", 10, |_| true));
    let rep: Value = api.get("/api/v1/report?format=json").json().unwrap();
    for code in ["AU-1-9", "AU-3-2", "DS-1-1", "DS-1-2", "DS-2-1"] {
        assert_eq!(
            control(&rep, code)["verdict"],
            "met",
            "{code}: {}",
            control(&rep, code)
        );
    }
    let au19 = control(&rep, "AU-1-9").to_string();
    assert!(au19.contains("1 active"), "{au19}");
    assert!(au19.contains(&gw.mqtt.to_string()), "{au19}");
    let ds21 = control(&rep, "DS-2-1").to_string();
    assert!(ds21.contains("kawal/{uid}/up/#"), "{ds21}");
    assert!(ds21.contains("1 publish/subscribe"), "{ds21}");
    // The gateway's own certificate has no automatic renewal yet: said, not hidden.
    let au110 = control(&rep, "AU-1-10");
    assert_eq!(au110["verdict"], "manual", "{au110}");
}

/// G045: DS-2-1
/// A topic rule that lets every sensor of a role publish outside its own lane fails DS-2-1,
/// and the start-up logs it as an insecure setting.
#[test]
fn a_shared_publish_topic_fails_the_information_flow_control() {
    let gw = Gateway::start_with(|cfg| {
        let mut acl = toml::Table::new();
        let mut role = toml::Table::new();
        role.insert(
            "publish".into(),
            toml::Value::Array(vec!["plant/all".into()]),
        );
        role.insert("subscribe".into(), toml::Value::Array(vec![]));
        acl.insert("sensor".into(), toml::Value::Table(role));
        common::gateway::set(cfg, "mqtt", "acl", acl);
    });
    let mut api = gw.admin_ready(ADMIN_PW);
    let rep: Value = api.get("/api/v1/report?format=json").json().unwrap();
    let ds21 = control(&rep, "DS-2-1");
    assert_eq!(ds21["verdict"], "not-met", "{ds21}");
    assert!(ds21.to_string().contains("plant/all"), "{ds21}");
    assert!(gw.daemon_log().contains("plant/all"), "{}", gw.daemon_log());
}

fn est_reenroll(gw: &Gateway, s: &SensorFiles) -> common::Run {
    common::run(&[
        "sensor",
        "est-reenroll",
        "--url",
        &format!("https://localhost:{}", gw.addr.port()),
        "--ca",
        d(&s.gateway_ca),
        "--name",
        &s.name,
        "--dir",
        d(&s.dir),
    ])
}

/// G045: AU-1-10
/// Renewal before expiry: the sensor re-enrols over EST with its current certificate and a
/// new key; the new certificate works at once and the old one no longer does. A revoked
/// sensor cannot renew itself.
#[test]
fn a_sensor_renews_with_its_current_certificate_and_the_old_one_stops_counting() {
    let gw = Gateway::start();
    let mut api = gw.admin_ready(ADMIN_PW);
    let s = sensor(&gw, &mut api, "renew-1", None);
    let old = gw.tmp.path().join("old-renew-1");
    std::fs::create_dir_all(&old).unwrap();
    for f in ["sensor.key.pem", "sensor.crt.pem"] {
        std::fs::copy(s.dir.join(f), old.join(f)).unwrap();
    }
    let before: Value = api.get("/api/v1/sensors/renew-1").json().unwrap();
    let r = est_reenroll(&gw, &s);
    assert_eq!(r.code, 0, "{}", r.all());
    let after: Value = api.get("/api/v1/sensors/renew-1").json().unwrap();
    assert_ne!(before["serial"], after["serial"], "{after}");
    assert_ne!(
        std::fs::read(old.join("sensor.key.pem")).unwrap(),
        std::fs::read(&s.key).unwrap(),
        "a new key was made"
    );
    let o = mosquitto_pub(&gw, &s, None, "kawal/renew-1/up/x", "new");
    assert!(o.status.success(), "{}", output(&o));
    let stale = SensorFiles {
        name: s.name.clone(),
        key: old.join("sensor.key.pem"),
        cert: old.join("sensor.crt.pem"),
        gateway_ca: s.gateway_ca.clone(),
        dir: old,
    };
    let o = mosquitto_pub(&gw, &stale, None, "kawal/renew-1/up/x", "old");
    assert!(
        !o.status.success(),
        "superseded certificate worked: {}",
        output(&o)
    );
    assert!(!gw.events("sensor.certificate-issued").is_empty());
    // Revoked: renewal with the (revoked) current certificate is refused.
    let r = api.post("/api/v1/sensors/renew-1/revoke", &serde_json::json!({}));
    assert_eq!(r.status(), StatusCode::OK);
    let r = est_reenroll(&gw, &s);
    assert_ne!(r.code, 0, "a revoked sensor renewed itself: {}", r.all());
    assert!(wait_event(&gw, "sensor.enrol-refused", 5, |e| e["details"]
        ["via"]
        == "est-simplereenroll"));
}

/// G045: AU-1-10
/// A sensor certificate that is close to expiry and not renewed is warned of in the log, once
/// per state, and shown as such in the list.
#[test]
fn an_expiring_sensor_certificate_is_warned_of_once() {
    let mut gw = Gateway::start_with(|cfg| {
        common::gateway::set(cfg, "sensors", "cert-days", 5);
    });
    gw.stop();
    gw.spawn_with_env(&[("KAWAL_DEVCERT_CHECK_S", "1")]);
    let mut api = gw.admin_ready(ADMIN_PW);
    let _s = sensor(&gw, &mut api, "short-lived", None);
    assert!(
        wait_event(
            &gw,
            "sensor.certificate-expiring",
            10,
            |e| e["details"]["uid"] == "short-lived" && e["details"]["state"] == "warn-7d"
        ),
        "{:?}",
        gw.events("sensor.certificate-expiring")
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(gw.events("sensor.certificate-expiring").len(), 1);
    let v: Value = api.get("/api/v1/sensors/short-lived").json().unwrap();
    assert_eq!(v["expiry"], "warn-7d", "{v}");
}

/// G045: AU-1-3, AU-1-1
/// Enrolment attempts with wrong tokens are refused and recorded under flood control: a
/// source's first ten a minute are written one by one, the rest counted (the health figure,
/// and a summary when the minute ends), so a flood of them cannot fill the log.
#[test]
fn est_attempts_with_wrong_tokens_are_refused_and_flood_controlled() {
    use base64::Engine as _;
    let gw = Gateway::start();
    let mut api = gw.admin_ready(ADMIN_PW);
    let http = common::gateway::http_client(&gw.ca_pem, None);
    let csr = base64::engine::general_purpose::STANDARD.encode(b"not a CSR, never reached");
    for i in 0..30 {
        let r = http
            .post(gw.url("/.well-known/est/simpleenroll"))
            .header("authorization", format!("Bearer wrong-token-{i}"))
            .header("content-type", "application/pkcs10")
            .body(csr.clone())
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "attempt {i}");
    }
    let written = gw.events("sensor.enrol-refused");
    assert_eq!(written.len(), 10, "{written:?}");
    let health: Value = api.get("/api/v1/health").json().unwrap();
    assert_eq!(health["api_events_suppressed"], 20, "{health}");
}

/// G045: AU-1-9
/// A clock that reads earlier than times the device has already lived through (here: the
/// floor set two days ahead, as after a boot without a real-time clock) does not lock sensors
/// out: certificates are checked at the floor. One valid then connects and publishes; one that
/// expired before the floor is refused as expired, though the clock still calls it valid. The
/// daemon records `clock.behind` once.
#[test]
fn sensor_certificates_are_checked_at_the_clock_floor_when_the_clock_is_behind() {
    let mut gw = Gateway::start_with(|cfg| common::gateway::set(cfg, "sensors", "cert-days", 30));
    let mut api = gw.admin_ready(ADMIN_PW);
    let long = sensor(&gw, &mut api, "meter-long", None);
    gw.stop();
    let mut cfg: toml::Table = std::fs::read_to_string(&gw.config)
        .unwrap()
        .parse()
        .unwrap();
    common::gateway::set(&mut cfg, "sensors", "cert-days", 1);
    std::fs::write(&gw.config, toml::to_string(&cfg).unwrap()).unwrap();
    gw.spawn_with_env(&[("KAWAL_CLOCK_FLOOR_AHEAD_S", "172800")]);
    let mut api = gw.client();
    assert_eq!(api.login("admin", ADMIN_PW).status(), StatusCode::OK);
    let short = sensor(&gw, &mut api, "meter-short", None);

    let o = mosquitto_pub(&gw, &long, None, "kawal/meter-long/up/t", "1");
    assert!(o.status.success(), "{}", output(&o));
    let o = mosquitto_pub(&gw, &short, None, "kawal/meter-short/up/t", "1");
    assert!(
        !o.status.success(),
        "an expired certificate got in: {}",
        output(&o)
    );
    assert!(wait_event(
        &gw,
        "mqtt.refused",
        10,
        |e| e["details"]["detail"] == "expired"
    ));
    let behind = gw.events("clock.behind");
    assert_eq!(behind.len(), 1, "{behind:?}");
    assert!(behind[0]["details"]["floor"].is_string(), "{behind:?}");
}
