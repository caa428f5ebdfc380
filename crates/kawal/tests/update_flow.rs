//! Signed updates end to end, with the real binary: the vendor makes a bundle and a TUF
//! repository with `kawal update bundle|repo`, the device runs under `kawal boot --supervise`,
//! an updater applies through the API (re-authenticating), the daemon restarts into the new
//! slot on trial and commits it once its health checks pass; a bundle whose health check fails
//! rolls back by itself; refusals leave the active slot untouched.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests"
)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::gateway::{Api, Gateway, set};
use common::{d, run};
use reqwest::StatusCode;
use serde_json::{Value, json};

const PW: &str = "Quiet-Harbour-Lamp-73";
const PRODUCT: &str = "kawal-gateway";
const HARDWARE: &str = "board-x1";

/// The vendor's side: a repository, and a payload folder holding this build of kawal.
struct Vendor {
    repo: PathBuf,
    published: PathBuf,
    payload: PathBuf,
    work: PathBuf,
}

impl Vendor {
    fn new(dir: &Path) -> Self {
        let v = Self {
            repo: dir.join("repo"),
            published: dir.join("published"),
            payload: dir.join("payload"),
            work: dir.to_path_buf(),
        };
        let r = run(&["update", "repo", "init", "--dir", d(&v.repo)]);
        assert_eq!(r.code, 0, "{}", r.all());
        v.publish();
        std::fs::create_dir_all(&v.payload).unwrap();
        let exe = v.payload.join("kawal");
        std::fs::copy(env!("CARGO_BIN_EXE_kawal"), &exe).unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        v
    }

    /// Makes, adds and publishes a bundle of `version`.
    fn release(&self, version: &str, security_version: u64, checks: &[&str]) {
        let out = self.work.join(format!("kawal-{version}.bundle"));
        let sv = security_version.to_string();
        let mut args = vec![
            "update",
            "bundle",
            "--payload",
            d(&self.payload),
            "--product",
            PRODUCT,
            "--version",
            version,
            "--security-version",
            &sv,
            "--hardware",
            HARDWARE,
            "--max-boots",
            "2",
            "--deadline-s",
            "60",
            "--out",
            d(&out),
        ];
        for c in checks {
            args.extend(["--check", c]);
        }
        let r = run(&args);
        assert_eq!(r.code, 0, "{}", r.all());
        let r = run(&[
            "update",
            "repo",
            "add",
            "--dir",
            d(&self.repo),
            "--bundle",
            d(&out),
        ]);
        assert_eq!(r.code, 0, "{}", r.all());
        self.publish();
    }

    fn publish(&self) {
        let r = run(&[
            "update",
            "repo",
            "publish",
            "--dir",
            d(&self.repo),
            "--out",
            d(&self.published),
        ]);
        assert_eq!(r.code, 0, "{}", r.all());
    }
}

fn device(vendor: &Vendor) -> Gateway {
    let mut gw = Gateway::provision_with(|cfg| {
        set(cfg, "update", "source", d(&vendor.published));
        set(cfg, "update", "product", PRODUCT);
        set(cfg, "update", "hardware", HARDWARE);
        set(
            cfg,
            "update",
            "root",
            d(&vendor.repo.join("metadata/1.root.json")),
        );
    });
    gw.spawn_boot();
    gw
}

/// Logs in as admin (changing the initial password the first time).
fn admin(gw: &Gateway) -> Api {
    let mut api = gw.client();
    if api.login("admin", PW).status() == StatusCode::OK {
        return api;
    }
    gw.admin_ready(PW)
}

fn status(gw: &mut Gateway) -> Value {
    gw.wait_listening();
    let mut api = admin(gw);
    let r = api.get("/api/v1/update");
    assert_eq!(r.status(), StatusCode::OK);
    r.json().unwrap()
}

/// Polls the update state until `done` says so (the daemon restarts in between).
fn wait_state(gw: &mut Gateway, secs: u64, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let ok = std::net::TcpStream::connect_timeout(&gw.addr, Duration::from_millis(200)).is_ok();
        if ok {
            let mut api = gw.client();
            if api.login("admin", PW).status() == StatusCode::OK {
                let r = api.get("/api/v1/update");
                if r.status() == StatusCode::OK {
                    let v: Value = r.json().unwrap();
                    if done(&v) {
                        return v;
                    }
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "update state not reached: {}",
            gw.daemon_log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn apply(api: &mut Api) -> (StatusCode, Value) {
    let proof = api.reauth(PW);
    let r = api.post_reauth("/api/v1/update/apply", &json!({}), &proof);
    let s = r.status();
    (s, r.json().unwrap_or(Value::Null))
}

/// G045: PL-2-1, PL-2-2, PL-2-3
/// A signed update goes into the other slot, runs on trial and is committed once its health
/// checks pass; the next one fails its health check (no upstream to reach) and the device goes
/// back to the committed slot by itself, remembers the failed version and does not offer it
/// again; every step is in the audit log.
#[test]
fn a_signed_update_commits_after_its_trial_and_a_failing_one_rolls_back() {
    let tmp = tempfile::tempdir().unwrap();
    let vendor = Vendor::new(tmp.path());
    vendor.release("0.2.0", 1, &["self-test", "integrity"]);
    let mut gw = device(&vendor);
    let first = status(&mut gw);
    assert_eq!(first["slot"], "a", "{first}");
    assert_eq!(first["version"], env!("CARGO_PKG_VERSION"), "{first}");

    let mut api = admin(&gw);
    let r = api.post("/api/v1/update/check", &json!({}));
    assert_eq!(r.status(), StatusCode::OK);
    let checked: Value = r.json().unwrap();
    assert_eq!(checked["offer"]["version"], "0.2.0", "{checked}");

    let (s, applied) = apply(&mut api);
    assert_eq!(s, StatusCode::OK, "{applied}");
    assert_eq!(applied["slot"], "b", "{applied}");
    let committed = wait_state(&mut gw, 90, |v| {
        v["version"] == "0.2.0" && v["trial"].is_null()
    });
    assert_eq!(committed["slot"], "b", "{committed}");
    assert_eq!(committed["running_slot"], "b", "{committed}");
    assert_eq!(committed["security_version"], 1, "{committed}");

    // A bundle whose health check cannot pass: the upstream check with no upstream.
    vendor.release("0.3.0", 2, &["self-test", "upstream"]);
    let mut api = admin(&gw);
    let (s, applied) = apply(&mut api);
    assert_eq!(s, StatusCode::OK, "{applied}");
    assert_eq!(applied["slot"], "a", "{applied}");
    let back = wait_state(&mut gw, 120, |v| {
        v["trial"].is_null()
            && v["failed_versions"]
                .as_array()
                .is_some_and(|f| f.iter().any(|x| x == "0.3.0"))
    });
    assert_eq!(back["version"], "0.2.0", "{back}");
    assert_eq!(back["slot"], "b", "{back}");
    assert_eq!(
        back["security_version"], 1,
        "the floor rises only on commit: {back}"
    );
    let back = wait_state(&mut gw, 60, |v| v["running_slot"] == "b");
    assert_eq!(back["version"], "0.2.0");

    // Not retried on its own: a check no longer offers it.
    let mut api = admin(&gw);
    let r = api.post("/api/v1/update/check", &json!({}));
    let checked: Value = r.json().unwrap();
    assert!(checked["offer"].is_null(), "{checked}");
    assert!(
        checked.to_string().contains("failed its trial"),
        "{checked}"
    );

    for event in [
        "update.checked",
        "update.metadata-verified",
        "update.downloading",
        "update.installed",
        "update.trial-started",
        "update.health-checked",
        "update.committed",
        "update.rolled-back",
        "update.trial-boot",
    ] {
        assert!(!gw.events(event).is_empty(), "no {event} in the audit log");
    }
    let rolled = gw.events("update.rolled-back");
    assert!(
        rolled.iter().any(|e| e["details"]["version"] == "0.3.0"),
        "{rolled:?}"
    );
}

/// G045: PL-2-1
/// Only updater and admin may apply, and only with a fresh re-authentication; an auditor is
/// refused, and an updater without the proof is refused.
#[test]
fn only_an_updater_who_re_authenticates_may_apply() {
    let tmp = tempfile::tempdir().unwrap();
    let vendor = Vendor::new(tmp.path());
    let mut gw = device(&vendor);
    let _ = status(&mut gw);
    let mut admin_api = admin(&gw);
    for (name, role) in [("upd", "updater"), ("aud", "auditor")] {
        let proof = admin_api.reauth(PW);
        let r = admin_api.post_reauth(
            "/api/v1/accounts",
            &json!({ "username": name, "role": role, "password": "Initial-meadow-lantern-5823" }),
            &proof,
        );
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let ready = |name: &str| {
        let mut api = gw.client();
        assert_eq!(
            api.login(name, "Initial-meadow-lantern-5823").status(),
            StatusCode::OK
        );
        let r = api.post(
            "/api/v1/password",
            &json!({ "current": "Initial-meadow-lantern-5823", "new": PW }),
        );
        assert_eq!(r.status(), StatusCode::OK);
        let v: Value = r.json().unwrap();
        api.csrf = v["csrf_token"].as_str().map(str::to_owned);
        api
    };
    let mut auditor = ready("aud");
    assert_eq!(
        auditor.post("/api/v1/update/check", &json!({})).status(),
        StatusCode::FORBIDDEN
    );
    let proof = auditor.reauth(PW);
    let r = auditor.post_reauth("/api/v1/update/apply", &json!({}), &proof);
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    let mut updater = ready("upd");
    let r = updater.post("/api/v1/update/apply", &json!({}));
    assert_ne!(r.status(), StatusCode::OK);
    assert!(
        !gw.events("reauth.required").is_empty(),
        "the missing proof is logged"
    );
    // With the proof the updater gets through to the update itself: nothing is offered yet.
    let (s, v) = apply(&mut updater);
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(v.to_string().contains("no update is offered"), "{v}");
}

/// G045: PL-2-3, PL-2-2
/// A published bundle changed after signing, and a bundle for other hardware, are refused with
/// the reason; the active slot and the boot state are untouched and the refusal is logged.
#[test]
fn tampered_and_foreign_bundles_are_refused_and_nothing_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let vendor = Vendor::new(tmp.path());
    vendor.release("0.2.0", 1, &["self-test"]);
    // Flip one byte of the published target.
    let targets = vendor.published.join("targets");
    let file = std::fs::read_dir(&targets)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".bundle"))
        .unwrap();
    let mut bytes = std::fs::read(&file).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(&file, &bytes).unwrap();

    let mut gw = device(&vendor);
    let before = status(&mut gw);
    let slots = gw.data.join("slots");
    let a_before = std::fs::read(slots.join("a/payload/kawal")).unwrap();
    let mut api = admin(&gw);
    let (s, v) = apply(&mut api);
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(v.to_string().contains("refused"), "{v}");
    let after = status(&mut gw);
    assert_eq!(before["version"], after["version"]);
    assert_eq!(after["slot"], "a");
    assert!(after["trial"].is_null(), "{after}");
    assert_eq!(
        std::fs::read(slots.join("a/payload/kawal")).unwrap(),
        a_before
    );
    let refused = gw.events("update.refused");
    assert!(!refused.is_empty(), "the refusal is logged");
}
