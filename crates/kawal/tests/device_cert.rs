//! The gateway's own certificate (G045 AU-1-10): a renewed certificate is put in force on the
//! HTTPS API and the MQTT listener without a restart; a certificate for another key is
//! refused and the old one stays; a certificate close to its end is warned of once, shown in
//! the health answer and in the report.
//!
//! The real daemon, `kawal cert` and `openssl s_client` (to see which leaf each port serves).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod common;
#[path = "common/fleet_ca.rs"]
mod fleet_ca;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::gateway::Gateway;
use common::{d, run};
use serde_json::Value;

const ADMIN_PW: &str = "Renewal-Tests-Pass-2024!";

/// The base64 body of the first PEM certificate in `text`, whitespace removed.
fn first_cert(text: &str) -> Option<String> {
    let (_, rest) = text.split_once("-----BEGIN CERTIFICATE-----")?;
    let (body, _) = rest.split_once("-----END CERTIFICATE-----")?;
    Some(body.split_whitespace().collect())
}

/// The leaf certificate served on `port` (the MQTT listener asks for a client certificate;
/// `s_client` still sees the server's before the handshake fails without one).
fn served_leaf(port: u16) -> Option<String> {
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-servername",
            "localhost",
            "-showcerts",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    first_cert(&String::from_utf8_lossy(&out.stdout))
}

fn file_leaf(gw: &Gateway) -> String {
    first_cert(&std::fs::read_to_string(gw.data.join("pki/device.crt.pem")).unwrap()).unwrap()
}

/// Waits up to `secs` for `cond`.
fn wait(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A daemon that re-reads the certificate every second (debug builds only).
fn fast_gateway() -> Gateway {
    let mut gw = Gateway::start();
    gw.stop();
    gw.spawn_with_env(&[("KAWAL_DEVCERT_CHECK_S", "1")]);
    gw
}

fn reissue(gw: &Gateway, days: &str) {
    let r = run(&[
        "cert",
        "reissue-dev",
        "--config",
        d(&gw.config),
        "--days",
        days,
    ]);
    assert_eq!(r.code, 0, "reissue-dev failed: {}", r.all());
}

/// Events named `name` whose `details.field` is `value`.
fn events_where(gw: &Gateway, name: &str, field: &str, value: &str) -> Vec<Value> {
    gw.events(name)
        .into_iter()
        .filter(|e| e["details"][field] == value)
        .collect()
}

/// G045: AU-1-10
/// A dev device's certificate re-issued for the same key is served on both listeners within
/// the check period, by the same process, and the renewal is one audit event naming the old
/// and the new certificate.
#[test]
fn a_renewed_certificate_is_served_on_both_listeners_without_a_restart() {
    let gw = fast_gateway();
    let old = file_leaf(&gw);
    assert_eq!(served_leaf(gw.addr.port()).as_deref(), Some(old.as_str()));
    assert_eq!(served_leaf(gw.mqtt.port()).as_deref(), Some(old.as_str()));
    let pid = gw.pid();
    let starts = gw.events("daemon.started").len();

    reissue(&gw, "400");
    let new = file_leaf(&gw);
    assert_ne!(new, old);
    assert!(
        wait(20, || served_leaf(gw.addr.port()).as_deref()
            == Some(new.as_str())),
        "the API still serves the old certificate: {}",
        gw.daemon_log()
    );
    assert!(
        wait(10, || served_leaf(gw.mqtt.port()).as_deref()
            == Some(new.as_str())),
        "the MQTT listener still serves the old certificate"
    );
    assert_eq!(gw.pid(), pid);
    assert_eq!(
        gw.events("daemon.started").len(),
        starts,
        "the daemon restarted"
    );

    let renewed = gw.events("certificate.renewed");
    assert_eq!(renewed.len(), 1, "{renewed:?}");
    let e = &renewed[0]["details"];
    assert_eq!(e["certificate"], "device");
    assert_ne!(e["old_serial"], e["new_serial"]);
    assert!(e["old_not_after"].is_string() && e["new_not_after"].is_string());
    assert!(e["old_sha256"].is_string() && e["new_sha256"].is_string());
    assert_eq!(
        events_where(
            &gw,
            "certificate.installed",
            "via",
            "kawal cert reissue-dev"
        )
        .len(),
        1
    );

    // Clients trusting the device's CA carry on (the dev CA did not change), and the health
    // answer names the certificate now in force.
    let mut api = gw.admin_ready(ADMIN_PW);
    let h: Value = api.get("/api/v1/health").json().unwrap();
    assert_eq!(h["device_certificate"]["serial"], e["new_serial"], "{h}");
    assert_eq!(h["device_certificate"]["state"], "ok", "{h}");
}

/// G045: AU-1-10
/// A certificate for another key is refused by `kawal cert install`, and, copied over the file
/// by hand, by the daemon: once, with the reason, while the previous certificate stays served.
#[test]
fn a_certificate_for_another_key_is_refused_and_the_old_one_stays() {
    let gw = fast_gateway();
    let old = file_leaf(&gw);
    // Another dev device's certificate: valid, same names, another key.
    let (_other_tmp, other_data, _) = common::provisioned();
    let stranger = other_data.join("pki/device.crt.pem");

    let r = run(&[
        "cert",
        "install",
        "--config",
        d(&gw.config),
        "--cert",
        d(&stranger),
    ]);
    assert_ne!(r.code, 0, "{}", r.all());
    assert!(r.all().contains("another key"), "{}", r.all());
    assert_eq!(file_leaf(&gw), old, "a refused install changed the file");
    let refused = events_where(&gw, "certificate.refused", "via", "kawal cert install");
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["details"]["reason"], "other-key");

    // The file replaced behind kawal's back.
    std::fs::copy(&stranger, gw.data.join("pki/device.crt.pem")).unwrap();
    let by_daemon = || -> Vec<Value> {
        gw.events("certificate.refused")
            .into_iter()
            .filter(|e| e["actor"] == "kawal")
            .collect()
    };
    assert!(
        wait(20, || !by_daemon().is_empty()),
        "no refusal from the daemon: {}",
        gw.daemon_log()
    );
    assert_eq!(
        by_daemon()[0]["details"]["reason"],
        "other-key",
        "{:?}",
        by_daemon()
    );
    assert_eq!(served_leaf(gw.addr.port()).as_deref(), Some(old.as_str()));
    assert_eq!(served_leaf(gw.mqtt.port()).as_deref(), Some(old.as_str()));
    assert!(gw.events("certificate.renewed").is_empty());
    // Once per file content, not once per check.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(by_daemon().len(), 1);

    // A good certificate after the bad one is taken.
    reissue(&gw, "400");
    let new = file_leaf(&gw);
    assert!(
        wait(20, || served_leaf(gw.addr.port()).as_deref()
            == Some(new.as_str())),
        "{}",
        gw.daemon_log()
    );
}

/// G045: AU-1-10
/// A certificate with 3 days left, put in force on SIGHUP, is warned of once
/// (`certificate.expiring`, state warn-7d), also across a restart; the health answer and the
/// report's AU-1-10 show it.
#[test]
fn an_expiring_certificate_is_warned_of_once_and_shown() {
    let mut gw = Gateway::start();
    assert!(
        wait(20, || gw
            .daemon_log()
            .contains("device-certificate watch started")),
        "{}",
        gw.daemon_log()
    );
    assert!(gw.events("certificate.expiring").is_empty());
    reissue(&gw, "3");
    // The default period is a minute; SIGHUP asks for the check at once.
    let pid = gw.pid().unwrap().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    assert!(
        wait(15, || !gw.events("certificate.renewed").is_empty()),
        "SIGHUP did not put the certificate in force: {}",
        gw.daemon_log()
    );
    assert_eq!(
        gw.pid().unwrap().to_string(),
        pid,
        "SIGHUP ended the daemon"
    );
    assert!(
        wait(10, || !events_where(
            &gw,
            "certificate.expiring",
            "certificate",
            "device"
        )
        .is_empty()),
        "{}",
        gw.daemon_log()
    );
    let expiring = events_where(&gw, "certificate.expiring", "certificate", "device");
    assert_eq!(expiring.len(), 1, "{expiring:?}");
    let e = &expiring[0]["details"];
    assert_eq!(e["state"], "warn-7d");
    assert!(matches!(e["days_left"].as_i64(), Some(2 | 3)), "{e}");
    assert!(e["not_after"].is_string());
    assert!(gw.daemon_log().contains("certificate expiring"));

    let mut api = gw.admin_ready(ADMIN_PW);
    let h: Value = api.get("/api/v1/health").json().unwrap();
    assert_eq!(h["device_certificate"]["state"], "warn-7d", "{h}");
    let rep: Value = api.get("/api/v1/report?format=json").json().unwrap();
    let au110 = rep["controls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["code"] == "AU-1-10")
        .unwrap()
        .to_string();
    assert!(au110.contains("EXPIRES within 7 days"), "{au110}");
    assert!(au110.contains("1 renewal(s) in force"), "{au110}");

    // Remembered across a restart: no second warning for the same state.
    gw.stop();
    gw.spawn();
    assert!(wait(20, || gw
        .daemon_log()
        .contains("device-certificate watch started")));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        events_where(&gw, "certificate.expiring", "certificate", "device").len(),
        1
    );
}

/// G045: AU-1-10
/// With `[device.renewal]`, the daemon renews its certificate from the fleet CA over EST
/// (`simplereenroll`, authenticated by the certificate in force) once two thirds of its
/// lifetime are gone. While the CA is away, every attempt fails, is recorded with the next
/// retry, backs off, and the certificate in force serves on; when the CA is back, the renewed
/// certificate is written and served on both listeners by the same process, and no further
/// attempt follows.
#[test]
fn the_device_certificate_renews_over_est_and_serves_on_while_the_ca_is_away() {
    let tmp = tempfile::tempdir().unwrap();
    let fleet = fleet_ca::FleetCa::start(tmp.path());
    fleet.set_mode(fleet_ca::Mode::Away);
    // An upstream broker that admits clients with certificates of the fleet CA only.
    let up_port = common::free_port();
    let up = Upstream::start(&tmp.path().join("upstream"), up_port, &fleet.ca_file);
    let mut gw = Gateway::start_with(|cfg| {
        let mut r = toml::Table::new();
        r.insert("est-url".into(), fleet.url().into());
        r.insert("ca-file".into(), fleet.ca_file.to_str().unwrap().into());
        r.insert("retry-min-s".into(), 1.into());
        r.insert("retry-max-s".into(), 2.into());
        common::gateway::set(cfg, "device", "renewal", r);
        common::gateway::set(cfg, "upstream", "address", format!("127.0.0.1:{up_port}"));
        common::gateway::set(cfg, "upstream", "server-name", "localhost");
        common::gateway::set(cfg, "upstream", "ca-file", d(&up.ca));
    });
    gw.stop();
    // The operator had the fleet CA certify the device key; 20 of its 24 hours are gone.
    let csr = tmp.path().join("device.csr.pem");
    let r = run(&["cert", "csr", "--config", d(&gw.config), "--out", d(&csr)]);
    assert_eq!(r.code, 0, "{}", r.all());
    let first = tmp.path().join("first.crt.pem");
    std::fs::write(
        &first,
        fleet.issue_pem(
            &std::fs::read_to_string(&csr).unwrap(),
            -20 * 3600,
            4 * 3600,
        ),
    )
    .unwrap();
    let r = run(&[
        "cert",
        "install",
        "--config",
        d(&gw.config),
        "--cert",
        d(&first),
    ]);
    assert_eq!(r.code, 0, "{}", r.all());
    let first_leaf = file_leaf(&gw);
    gw.spawn_with_env(&[("KAWAL_DEVCERT_CHECK_S", "1")]);
    let pid = gw.pid();
    assert!(
        wait(30, || !gw.events("bridge.connected").is_empty()),
        "the bridge did not connect with the fleet certificate: {}",
        up.log()
    );

    // Away: attempts fail and back off; the certificate in force serves on.
    assert!(
        wait(30, || gw.events("certificate.renewal-failed").len() >= 3),
        "no failed attempts recorded: {}",
        gw.daemon_log()
    );
    let failed = gw.events("certificate.renewal-failed");
    for (i, e) in failed.iter().take(3).enumerate() {
        let d = &e["details"];
        assert_eq!(d["attempt"], i + 1, "{failed:?}");
        assert!(d["retry_in_s"].as_u64().unwrap() <= 2, "{failed:?}");
        assert!(
            d["reason"].as_str().is_some_and(|r| !r.is_empty()),
            "{failed:?}"
        );
        assert_eq!(d["est_url"], fleet.url().as_str());
    }
    assert_eq!(fleet.issued(), 0);
    // The health answer (and the console's dashboard) says the renewal is failing, and why.
    gw.ca_pem = std::fs::read_to_string(&fleet.ca_file).unwrap();
    let mut api = gw.admin_ready(ADMIN_PW);
    let h: Value = api.get("/api/v1/health").json().unwrap();
    let renewal = &h["device_certificate"]["renewal"];
    assert_eq!(renewal["est_url"], fleet.url().as_str(), "{h}");
    assert!(renewal["failures"].as_u64().unwrap() >= 3, "{h}");
    assert!(renewal["last_error"].is_string(), "{h}");
    assert_eq!(
        served_leaf(gw.addr.port()).as_deref(),
        Some(first_leaf.as_str())
    );
    assert_eq!(
        served_leaf(gw.mqtt.port()).as_deref(),
        Some(first_leaf.as_str())
    );

    // Back: renewed over EST and in force without a restart.
    fleet.set_mode(fleet_ca::Mode::Serve);
    assert!(
        wait(30, || !events_where(
            &gw,
            "certificate.renewed",
            "via",
            "est"
        )
        .is_empty()),
        "not renewed: {}",
        gw.daemon_log()
    );
    let renewed = events_where(&gw, "certificate.renewed", "via", "est");
    assert_eq!(renewed.len(), 1, "{renewed:?}");
    let new_leaf = file_leaf(&gw);
    assert_ne!(new_leaf, first_leaf);
    assert!(
        wait(10, || served_leaf(gw.addr.port()).as_deref()
            == Some(new_leaf.as_str())),
        "the API still serves the old certificate"
    );
    assert!(
        wait(10, || served_leaf(gw.mqtt.port()).as_deref()
            == Some(new_leaf.as_str())),
        "the MQTT listener still serves the old certificate"
    );
    assert_eq!(gw.pid(), pid, "the daemon restarted");
    assert_eq!(fleet.issued(), 1);
    let h: Value = api.get("/api/v1/health").json().unwrap();
    assert_eq!(h["device_certificate"]["renewal"]["failures"], 0, "{h}");
    assert_eq!(
        h["device_certificate"]["sha256"], renewed[0]["details"]["new_sha256"],
        "{h}"
    );
    // The upstream bridge took the renewed certificate too, and reconnected with it.
    assert_eq!(renewed[0]["details"]["in_force_on"], "api,mqtt,upstream");
    let reloaded = events_where(
        &gw,
        "bridge.identity-reloaded",
        "new_cert_sha256",
        renewed[0]["details"]["new_sha256"].as_str().unwrap(),
    );
    assert_eq!(
        reloaded.len(),
        1,
        "{:?}",
        gw.events("bridge.identity-reloaded")
    );
    assert!(
        wait(30, || gw.events("bridge.connected").len() >= 2),
        "the bridge did not reconnect with the renewed certificate: {}",
        up.log()
    );

    // The renewed certificate has most of its life ahead: no further attempt.
    let failures = gw.events("certificate.renewal-failed").len();
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(fleet.issued(), 1);
    assert_eq!(gw.events("certificate.renewal-failed").len(), failures);
}

/// A Mosquitto upstream with mutual TLS, admitting clients whose certificate the CA in
/// `client_ca` issued; killed on drop.
struct Upstream {
    ca: std::path::PathBuf,
    dir: std::path::PathBuf,
    child: std::process::Child,
}

impl Upstream {
    fn start(dir: &std::path::Path, port: u16, client_ca: &std::path::Path) -> Self {
        use common::sensors::{issue, test_ca};
        std::fs::create_dir_all(dir).unwrap();
        let (ca, ca_key) = test_ca(dir, "upstream test CA");
        let (cert, key) = issue(
            dir,
            (&ca, &ca_key),
            "broker",
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        );
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "user root\nallow_anonymous false\nlog_dest file {dir}/mosquitto.log\n\
                 listener {port} 127.0.0.1\ncafile {ca}\ncertfile {cert}\nkeyfile {key}\n\
                 require_certificate true\nuse_identity_as_username true\n",
                dir = d(dir),
                ca = d(client_ca),
                cert = d(&cert),
                key = d(&key),
            ),
        )
        .unwrap();
        let child = Command::new("mosquitto")
            .args(["-c", d(&conf)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto (Debian package mosquitto) is needed");
        assert!(
            wait(10, || std::net::TcpStream::connect(("127.0.0.1", port))
                .is_ok()),
            "mosquitto did not listen"
        );
        Self {
            ca,
            dir: dir.to_owned(),
            child,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("mosquitto.log")).unwrap_or_default()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
