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

use std::time::{Duration, Instant};

use common::gateway::{Api, Gateway};
use common::update::{Vendor, device};
use reqwest::StatusCode;
use serde_json::{Value, json};

const PW: &str = "Quiet-Harbour-Lamp-73";

/// Logs in as admin (changing the initial password the first time), waiting out a restart.
fn admin(gw: &Gateway) -> Api {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut api = gw.client();
        match api.try_login("admin", PW) {
            Some(StatusCode::OK) => return api,
            Some(_) => return gw.admin_ready(PW),
            None => {
                assert!(Instant::now() < deadline, "no login: {}", gw.daemon_log());
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
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
        // The daemon may restart at any moment here: every call may fail, and is tried again.
        let mut api = gw.client();
        if api.try_login("admin", PW) == Some(StatusCode::OK)
            && let Some(r) = api.try_get("/api/v1/update")
            && r.status() == StatusCode::OK
            && let Ok(v) = r.json::<Value>()
            && done(&v)
        {
            return v;
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
    // The previous release is still in the other slot, and the state says so.
    assert_eq!(committed["previous"]["slot"], "a", "{committed}");
    assert_eq!(
        committed["previous"]["version"],
        env!("CARGO_PKG_VERSION"),
        "{committed}"
    );

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

/// G045: PL-2-2, PL-2-3
/// A vendor-signed bundle whose payload disagrees with its own manifest passes the signature
/// and whole-bundle checks and is installed, but `kawal boot` checks every file against the
/// manifest before it runs a slot: the trial is rolled back without running it, the version is
/// marked failed, and the previous release keeps running.
#[test]
fn a_signed_bundle_whose_files_disagree_with_its_manifest_is_never_run() {
    let tmp = tempfile::tempdir().unwrap();
    let vendor = Vendor::new(tmp.path());
    // The payload executable is nearly all of the bundle: the middle byte is inside it.
    vendor.release_edited("0.2.0", 1, &["self-test"], |bytes| {
        let at = bytes.len() / 2;
        bytes[at] ^= 0x01;
    });
    let mut gw = device(&vendor);
    let mut api = admin(&gw);
    let (s, applied) = apply(&mut api);
    assert_eq!(s, StatusCode::OK, "{applied}");
    assert_eq!(applied["slot"], "b", "{applied}");
    let back = wait_state(&mut gw, 90, |v| {
        v["trial"].is_null()
            && v["failed_versions"]
                .as_array()
                .is_some_and(|f| f.iter().any(|x| x == "0.2.0"))
    });
    assert_eq!(back["slot"], "a", "{back}");
    assert_eq!(back["version"], env!("CARGO_PKG_VERSION"), "{back}");
    let back = wait_state(&mut gw, 60, |v| v["running_slot"] == "a");
    assert_eq!(back["security_version"], 0, "{back}");
    let rolled = gw.events("update.rolled-back");
    assert!(
        rolled.iter().any(|e| e["details"]["version"] == "0.2.0"
            && e["details"]["reason"]
                .as_str()
                .is_some_and(|r| r.contains("does not verify"))),
        "{rolled:?}"
    );
    // The slot on trial never ran: nothing of it checked its health or committed.
    let checked = gw.events("update.health-checked");
    assert!(checked.is_empty(), "{checked:?}");
    assert!(gw.events("update.committed").is_empty());
}

/// The daemon under the `kawal boot --supervise` parent, if it runs.
fn daemon_pid(gw: &Gateway) -> Option<u32> {
    let sup = gw.pid()?;
    std::fs::read_to_string(format!("/proc/{sup}/task/{sup}/children"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// G045: PL-2-2
/// `kill -9` of the daemon at random moments after an apply (download, install, restart, trial,
/// commit): each time the device comes back in a slot whose files verify, and applying again
/// completes. Rounds: `KAWAL_UPDATE_KILL_ROUNDS` (default 4; the library test kills 200 times).
#[test]
fn killing_the_daemon_during_an_update_leaves_a_verified_slot_and_the_update_completes() {
    let rounds: u64 = std::env::var("KAWAL_UPDATE_KILL_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    let tmp = tempfile::tempdir().unwrap();
    let vendor = Vendor::new(tmp.path());
    let mut gw = device(&vendor);
    let _ = status(&mut gw);
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        | 1;
    for n in 0..rounds {
        let version = format!("0.{}.0", n + 2);
        vendor.release(&version, 1, &["self-test"]);
        let mut api = admin(&gw);
        let (s, v) = apply(&mut api);
        assert_eq!(s, StatusCode::OK, "{v}");
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        std::thread::sleep(Duration::from_millis(u64::from(seed % 2500)));
        if let Some(pid) = daemon_pid(&gw) {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        let state = wait_state(&mut gw, 90, |v| v["trial"].is_null());
        let running = state["running_slot"].as_str().unwrap().to_owned();
        kawal_update::install::verify_slot(&gw.data.join("slots").join(&running))
            .unwrap_or_else(|e| panic!("slot {running} does not verify: {e}"));
        if state["version"] != version.as_str() {
            let mut api = admin(&gw);
            let (s, v) = apply(&mut api);
            assert_eq!(s, StatusCode::OK, "re-applying {version}: {v}");
        }
        let done = wait_state(&mut gw, 90, |v| {
            v["version"] == version.as_str() && v["trial"].is_null()
        });
        assert_eq!(done["running_slot"], done["slot"], "{done}");
    }
}

fn rollback(api: &mut Api) -> (StatusCode, Value) {
    let proof = api.reauth(PW);
    let r = api.post_reauth("/api/v1/update/rollback", &json!({}), &proof);
    let s = r.status();
    (s, r.json().unwrap_or(Value::Null))
}

/// G045: PL-2-2
/// After a commit the operator can go back to the release still in the other slot, and the
/// device restarts into it; once a newer security version is committed, going back below it is
/// refused with the reason and nothing changes.
#[test]
fn an_operator_goes_back_to_the_previous_release_unless_it_is_below_the_security_floor() {
    let tmp = tempfile::tempdir().unwrap();
    let vendor = Vendor::new(tmp.path());
    vendor.release("0.2.0", 0, &["self-test"]);
    let mut gw = device(&vendor);
    let _ = status(&mut gw);
    let mut api = admin(&gw);
    let (s, v) = apply(&mut api);
    assert_eq!(s, StatusCode::OK, "{v}");
    wait_state(&mut gw, 90, |v| {
        v["version"] == "0.2.0" && v["trial"].is_null() && v["running_slot"] == "b"
    });

    let mut api = admin(&gw);
    let (s, v) = rollback(&mut api);
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["slot"], "a", "{v}");
    let back = wait_state(&mut gw, 90, |v| v["running_slot"] == "a");
    assert_eq!(back["version"], env!("CARGO_PKG_VERSION"), "{back}");
    assert!(!gw.events("update.reverted").is_empty());

    vendor.release("0.3.0", 1, &["self-test"]);
    let mut api = admin(&gw);
    let (s, v) = apply(&mut api);
    assert_eq!(s, StatusCode::OK, "{v}");
    wait_state(&mut gw, 90, |v| {
        v["version"] == "0.3.0" && v["trial"].is_null() && v["running_slot"] == "b"
    });
    let mut api = admin(&gw);
    let (s, v) = rollback(&mut api);
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(v.to_string().contains("security version"), "{v}");
    let still = status(&mut gw);
    assert_eq!(
        (still["version"].as_str(), still["slot"].as_str()),
        (Some("0.3.0"), Some("b"))
    );
}
