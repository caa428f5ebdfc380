//! The signed integrity manifest end to end (G045 PL-1-4): a manifest over a provisioned
//! device's binary, configuration, trust store and sealed key; one flipped byte in any of them
//! (or in the manifest) fails `kawal integrity verify` naming the file and stops the daemon from
//! serving; at run time a flip is caught within one period; a hand edit of the configuration
//! fails until the device accepts it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::string_slice,
    reason = "test code: a failure should stop the test loudly"
)]
mod common;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::gateway::{Gateway, set};
use common::integrity::flip;
use common::*;
use serde_json::Value;

const ADMIN_PW: &str = "Integrity-check-Passw0rd!";

/// A provisioned device with a vendor key, the public half installed, and a manifest over a
/// copy of the kawal binary, the configuration, the trust store and the sealed root secret.
struct Rig {
    gw: Gateway,
    /// The files listed, by role.
    files: Vec<(&'static str, PathBuf)>,
    manifest: PathBuf,
}

impl Rig {
    fn new(change: impl FnOnce(&mut toml::Table)) -> Self {
        // Started once without a manifest (none is required by default), then stopped: the
        // device is provisioned and its configuration final.
        let mut gw = Gateway::start_with(|cfg| {
            set(cfg, "integrity", "period-s", 1);
            set(cfg, "exposure", "period-s", 3600);
        });
        assert_eq!(gw.stop(), Some(0), "{}", gw.daemon_log());
        let mut cfg: toml::Table = std::fs::read_to_string(&gw.config)
            .unwrap()
            .parse()
            .unwrap();
        change(&mut cfg);
        // A comment at the end, so a flipped byte there leaves a valid configuration.
        let mut text = toml::to_string(&cfg).unwrap();
        text.push_str("# gateway configuration, installed by the vendor\n");
        std::fs::write(&gw.config, text).unwrap();
        let files = vec![
            ("binary", integrity::binary_copy(&gw)),
            ("config", gw.config.clone()),
            ("trust-store", gw.data.join("pki/dev-ca.crt.pem")),
            ("key", gw.data.join("root.sealed")),
        ];
        let manifest = integrity::install_manifest(&gw, &files);
        Self {
            gw,
            files,
            manifest,
        }
    }

    fn verify(&self) -> Run {
        run(&["integrity", "verify", "--config", d(&self.gw.config)])
    }

    fn file(&self, role: &str) -> &Path {
        &self.files.iter().find(|(r, _)| *r == role).unwrap().1
    }
}

/// Runs the daemon and expects it to exit on its own (it must not serve).
fn daemon_refuses(config: &Path, api: std::net::SocketAddr) -> Run {
    let mut child = kawal()
        .args(["run", "--config", d(config)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline
            || std::net::TcpStream::connect_timeout(&api, Duration::from_millis(50)).is_ok()
        {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the daemon served despite a failed integrity check");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// G045: PL-1-4
/// One flipped byte in the binary, the configuration, the trust store, the sealed key or the
/// manifest itself: `kawal integrity verify` fails naming it (5 of 5), and a daemon started
/// with it refuses to serve; restored, everything verifies again.
#[test]
fn one_flipped_byte_in_any_listed_file_fails_verify_and_the_start() {
    let rig = Rig::new(|_| {});
    let ok = rig.verify();
    assert_eq!(ok.code, 0, "{}", ok.all());
    assert!(
        ok.stdout.contains("integrity ok: 4 file(s)"),
        "{}",
        ok.stdout
    );
    let mut targets: Vec<(String, PathBuf, i64, String)> = rig
        .files
        .iter()
        .map(|(role, p)| {
            // The configuration's flip lands in its closing comment, so it still parses.
            let at = if *role == "config" { -5 } else { 100 };
            (
                (*role).to_owned(),
                p.clone(),
                at,
                format!("{} ({role})", d(p)),
            )
        })
        .collect();
    targets.push((
        "manifest".into(),
        rig.manifest.clone(),
        40,
        "integrity manifest was modified after it was signed".into(),
    ));
    let mut caught = 0;
    for (role, path, at, named) in &targets {
        let orig = flip(path, *at);
        let v = rig.verify();
        assert_eq!(v.code, 65, "{role}: {}", v.all());
        assert!(
            v.all().contains(named.as_str()),
            "{role}: {named} not in {}",
            v.all()
        );
        let r = daemon_refuses(&rig.gw.config, rig.gw.addr);
        assert_eq!(r.code, 65, "{role}: {}", r.all());
        assert!(
            r.stderr.contains("integrity check failed: not serving")
                && r.stderr.contains(named.as_str()),
            "{role}: {}",
            r.stderr
        );
        std::fs::write(path, orig).unwrap();
        caught += 1;
    }
    assert_eq!(caught, 5);
    assert_eq!(rig.verify().code, 0);
    // Each refusal is in the audit log, naming the file; all but the sealed key's: a device
    // whose sealed key is damaged cannot open its log (the refusal went to stderr).
    let failed = rig.gw.events("integrity.failed");
    let power_up: Vec<&Value> = failed
        .iter()
        .filter(|e| e["details"]["trigger"] == "power-up")
        .collect();
    assert_eq!(power_up.len(), 4, "{failed:?}");
    assert!(
        power_up[2]["details"]["problems"]
            .as_str()
            .unwrap()
            .contains(d(rig.file("trust-store")))
    );
}

/// G045: PL-1-4
/// At run time (period 1 s, on-mismatch alert) a flipped byte in the trust store is logged and
/// shown in health within about one period, and the daemon keeps serving.
#[test]
fn a_flip_at_run_time_is_caught_within_one_period() {
    let mut rig = Rig::new(|_| {});
    rig.gw.spawn();
    let mut api = rig.gw.admin_ready(ADMIN_PW);
    let h: Value = api.get("/api/v1/health").json().unwrap();
    assert_eq!(h["integrity"]["state"], "ok", "{h}");
    assert_eq!(h["integrity"]["files_checked"], 4, "{h}");
    assert_eq!(h["integrity"]["on_mismatch"], "alert", "{h}");
    let ca = rig.file("trust-store").to_path_buf();
    let flipped = Instant::now();
    let _orig = flip(&ca, 100);
    let event = loop {
        if let Some(e) = rig
            .gw
            .events("integrity.failed")
            .into_iter()
            .find(|e| e["details"]["trigger"] == "periodic")
        {
            break e;
        }
        assert!(
            flipped.elapsed() < Duration::from_secs(10),
            "not caught: {}",
            rig.gw.daemon_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    // One period (1 s), the confirming re-check and the hashing.
    assert!(
        flipped.elapsed() < Duration::from_secs(4),
        "caught after {:?}",
        flipped.elapsed()
    );
    assert_eq!(event["outcome"], "failure");
    assert!(
        event["details"]["problems"]
            .as_str()
            .unwrap()
            .contains(d(&ca)),
        "{event}"
    );
    let h: Value = api.get("/api/v1/health").json().unwrap();
    assert_eq!(h["integrity"]["state"], "failed", "{h}");
    assert_eq!(h["integrity"]["files_failed"], 1, "{h}");
    // Alert only: still serving; and the same mismatch is not logged again every period.
    std::thread::sleep(Duration::from_millis(2500));
    let h: Value = api.get("/api/v1/health").json().unwrap();
    assert_eq!(h["integrity"]["state"], "failed", "{h}");
    let periodic = rig
        .gw
        .events("integrity.failed")
        .into_iter()
        .filter(|e| e["details"]["trigger"] == "periodic")
        .count();
    assert_eq!(periodic, 1);
    assert_eq!(rig.gw.stop(), Some(0));
}

/// G045: PL-1-4
/// With on-mismatch = stop-serving, a flipped byte at run time makes the daemon log the
/// mismatch, stop cleanly and exit non-zero.
#[test]
fn stop_serving_shuts_the_daemon_down_on_a_run_time_mismatch() {
    let mut rig = Rig::new(|cfg| set(cfg, "integrity", "on-mismatch", "stop-serving"));
    rig.gw.spawn();
    let before = rig.gw.events("daemon.stopped").len();
    let flipped = Instant::now();
    let config = rig.file("config").to_path_buf();
    let _orig = flip(&config, -5);
    loop {
        let stopped = rig.gw.events("daemon.stopped");
        if stopped.len() > before {
            let e = stopped.last().unwrap();
            assert_eq!(e["outcome"], "failure", "{e}");
            assert!(
                e["details"]["reason"]
                    .as_str()
                    .unwrap()
                    .contains("integrity")
            );
            break;
        }
        assert!(
            flipped.elapsed() < Duration::from_secs(15),
            "the daemon did not stop: {}",
            rig.gw.daemon_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(rig.gw.events("integrity.failed").iter().any(|e| {
        e["details"]["trigger"] == "periodic"
            && e["details"]["problems"]
                .as_str()
                .unwrap()
                .contains(d(&config))
    }));
    // Reaps the exited process: its status is the non-zero exit of an integrity stop.
    assert_eq!(rig.gw.stop(), Some(65), "{}", rig.gw.daemon_log());
    assert!(
        rig.gw.daemon_log().contains("stop-serving"),
        "{}",
        rig.gw.daemon_log()
    );
    let v = run(&["log", "verify", "--data-dir", d(&rig.gw.data)]);
    assert_eq!(v.code, 0, "the log closed cleanly: {}", v.all());
}

/// G045: PL-1-4
/// A hand edit of the configuration fails the check; `kawal integrity accept-config` (the
/// device's configuration key) makes it verify, and the daemon serves again. A file the
/// manifest does not list as configuration is refused.
#[test]
fn a_hand_edit_fails_until_the_device_accepts_the_configuration() {
    let mut rig = Rig::new(|_| {});
    let config = rig.file("config").to_path_buf();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("[audit]\ncheckpoint-every = 500\n");
    std::fs::write(&config, &text).unwrap();
    let v = rig.verify();
    assert_eq!(v.code, 65, "{}", v.all());
    assert!(
        v.all().contains(&format!("{} (config)", d(&config))),
        "{}",
        v.all()
    );
    let r = daemon_refuses(&config, rig.gw.addr);
    assert_eq!(r.code, 65, "{}", r.all());

    let a = run(&["integrity", "accept-config", "--config", d(&config)]);
    assert_eq!(a.code, 0, "{}", a.all());
    assert!(a.stdout.contains("accepted"), "{}", a.stdout);
    let v = rig.verify();
    assert_eq!(v.code, 0, "{}", v.all());
    let accepted = rig.gw.events("integrity.config-accepted");
    assert_eq!(accepted.len(), 1);
    assert_eq!(accepted[0]["details"]["path"], d(&config));
    rig.gw.spawn();
    assert_eq!(rig.gw.stop(), Some(0));

    // Another edit after acceptance fails again: the overlay vouches for one content only.
    text.push_str("# and another edit\n");
    std::fs::write(&config, &text).unwrap();
    assert_eq!(rig.verify().code, 65);

    // A configuration the manifest does not list is not signed.
    let other = rig.gw.tmp.path().join("other.toml");
    std::fs::copy(&config, &other).unwrap();
    let r = run(&["integrity", "accept-config", "--config", d(&other)]);
    assert_eq!(r.code, 77, "{}", r.all());
    assert!(r.stderr.contains("does not list"), "{}", r.stderr);
}

/// G045: PL-1-4
/// `kawal audit` verifies the manifest live: met while every file matches, not met naming the
/// file once one does not.
#[test]
fn the_report_verifies_the_manifest_live() {
    let rig = Rig::new(|_| {});
    let report = |rig: &Rig| -> Value {
        let r = run(&["audit", "--config", d(&rig.gw.config), "--format", "json"]);
        assert_eq!(r.code, 0, "{}", r.all());
        let rep: Value = serde_json::from_str(&r.stdout).unwrap();
        rep["controls"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["code"] == "PL-1-4")
            .unwrap()
            .clone()
    };
    let c = report(&rig);
    assert_eq!(c["verdict"], "met", "{c}");
    let text = c.to_string();
    assert!(
        text.contains("binary 1") && text.contains("trust-store 1"),
        "{text}"
    );
    let ca = rig.file("trust-store").to_path_buf();
    let orig = flip(&ca, 100);
    let c = report(&rig);
    assert_eq!(c["verdict"], "not-met", "{c}");
    assert!(c["reason"].as_str().unwrap().contains(d(&ca)), "{c}");
    std::fs::write(&ca, orig).unwrap();
}

/// G045: PL-1-4
/// With `enabled = true` a device without a manifest does not serve; unknown responses to a
/// mismatch are refused when the configuration is loaded.
#[test]
fn a_required_manifest_that_is_missing_stops_the_start() {
    let rig = Rig::new(|cfg| set(cfg, "integrity", "enabled", true));
    std::fs::remove_file(&rig.manifest).unwrap();
    let r = daemon_refuses(&rig.gw.config, rig.gw.addr);
    assert_eq!(r.code, 65, "{}", r.all());
    assert!(r.stderr.contains("no integrity manifest"), "{}", r.stderr);

    let bad = rig.gw.tmp.path().join("bad.toml");
    let text = std::fs::read_to_string(&rig.gw.config)
        .unwrap()
        .replace("[integrity]", "[integrity]\non-mismatch = \"reboot\"");
    std::fs::write(&bad, text).unwrap();
    let r = run(&["config", "check", d(&bad)]);
    assert_eq!(r.code, 78, "{}", r.all());
    assert!(r.stderr.contains("integrity.on-mismatch"), "{}", r.stderr);
    assert!(r.stderr.contains("needs [update]"), "{}", r.stderr);
}
