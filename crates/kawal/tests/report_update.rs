//! The report's verdicts on secure update, read from a live device started under `kawal boot`:
//! the route table's update rule, the boot state and both slots verified now, the trusted TUF
//! root installed at provisioning; and a committed slot changed on disk fails PL-2-2 by name.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failure should stop the test loudly"
)]
mod common;

use common::gateway::Gateway;
use common::update::{Vendor, device};
use common::{d, run};
use serde_json::Value;
use std::os::unix::fs::FileExt;

fn audit(gw: &Gateway) -> Value {
    let r = run(&["audit", "--config", d(&gw.config), "--format", "json"]);
    assert_eq!(r.code, 0, "{}", r.all());
    serde_json::from_str(&r.stdout).unwrap()
}

fn control(rep: &Value, code: &str) -> Value {
    rep["controls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["code"] == code)
        .cloned()
        .unwrap_or_else(|| panic!("no {code} in the report"))
}

fn evidence(c: &Value, label: &str) -> String {
    c["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["label"] == label)
        .and_then(|e| e["value"].as_str())
        .unwrap_or_else(|| panic!("no evidence {label:?}: {c}"))
        .to_owned()
}

/// G045: PL-2-1, PL-2-2, PL-2-3
/// A device started under `kawal boot` with `[update]` pointing at a vendor's repository meets
/// the three update controls, with the committed slot and the root's version as evidence; once
/// the committed slot's executable is changed on disk, PL-2-2 is not met and names the slot.
#[test]
fn the_report_reads_updates_from_the_live_device_and_a_changed_committed_slot_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let vendor = Vendor::new(tmp.path());
    let mut gw = device(&vendor);

    let rep = audit(&gw);
    for code in ["PL-2-1", "PL-2-2", "PL-2-3"] {
        let c = control(&rep, code);
        assert_eq!(c["verdict"], "met", "{code}: {c}");
    }
    let pl21 = control(&rep, "PL-2-1");
    assert_eq!(
        evidence(&pl21, "POST /api/v1/update/apply"),
        "roles: admin, updater; re-authentication right before: yes (a single-use proof from POST /api/v1/reauth in X-Kawal-Reauth)"
    );
    assert!(
        evidence(&pl21, "enforced by")
            .contains("update_flow.rs::only_an_updater_who_re_authenticates_may_apply"),
        "{pl21}"
    );
    let pl22 = control(&rep, "PL-2-2");
    let committed = evidence(&pl22, "committed");
    assert!(
        committed.starts_with(&format!("slot a, version {}", env!("CARGO_PKG_VERSION"))),
        "{committed}"
    );
    assert!(
        evidence(&pl22, "slot a (committed), verified now").starts_with("verifies: version"),
        "{pl22}"
    );
    assert!(
        evidence(&pl22, "slot b (inactive), verified now").ends_with("empty"),
        "{pl22}"
    );
    let pl23 = control(&rep, "PL-2-3");
    let root = evidence(&pl23, "trusted root");
    assert!(root.contains("1.root.json: version 1, expires"), "{root}");
    assert_eq!(
        evidence(&pl23, "root's own signatures"),
        "meet the root role's threshold"
    );
    let roles = evidence(&pl23, "roles");
    for role in ["root", "timestamp", "snapshot", "targets"] {
        assert!(
            roles.contains(&format!("{role}: threshold 1 of 1 key(s)")),
            "{roles}"
        );
    }
    // Updates are now among the logged events.
    let pl41 = control(&rep, "PL-4-1");
    assert!(
        evidence(&pl41, "updates logged as").contains("update.rolled-back"),
        "{pl41}"
    );

    // One byte of the committed executable changed while the device is down.
    gw.stop();
    let exe = gw.data.join("slots/a/payload/kawal");
    // The daemon under the launcher may take a moment to exit after its launcher did; until
    // then its executable cannot be opened for writing.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let file = loop {
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&exe)
        {
            Ok(f) => break f,
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{exe:?} still running"
                );
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => panic!("{exe:?}: {e}"),
        }
    };
    let at = file.metadata().unwrap().len() / 2;
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, at).unwrap();
    byte[0] ^= 0x01;
    file.write_all_at(&byte, at).unwrap();
    drop(file);

    let rep = audit(&gw);
    let pl22 = control(&rep, "PL-2-2");
    assert_eq!(pl22["verdict"], "not-met", "{pl22}");
    let reason = pl22["reason"].as_str().unwrap();
    assert!(
        reason.contains("the committed slot a does not verify") && reason.contains("SHA-256"),
        "{reason}"
    );
    assert!(
        evidence(&pl22, "slot a (committed), verified now").starts_with("DOES NOT VERIFY"),
        "{pl22}"
    );
    // The other two do not depend on the slot's contents.
    assert_eq!(control(&rep, "PL-2-1")["verdict"], "met");
    assert_eq!(control(&rep, "PL-2-3")["verdict"], "met");
}
