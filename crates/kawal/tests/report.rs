//! `kawal audit`: all 44 controls, verdicts from the live device, honest about what is missing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::string_slice,
    clippy::cast_precision_loss,
    reason = "test code: a failure should stop the test loudly"
)]
mod common;
use common::*;

fn report(data: &std::path::Path) -> serde_json::Value {
    let r = run(&["audit", "--data-dir", d(data), "--format", "json"]);
    assert_eq!(r.code, 0, "{}", r.all());
    serde_json::from_str(&r.stdout).unwrap()
}

fn control<'a>(rep: &'a serde_json::Value, code: &str) -> &'a serde_json::Value {
    rep["controls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["code"] == code)
        .unwrap()
}

fn verdict(rep: &serde_json::Value, code: &str) -> String {
    control(rep, code)["verdict"].as_str().unwrap().to_owned()
}

/// G045: PL-3-4, AU-3-1, AU-1-4
#[test]
fn the_report_covers_every_control_from_live_evidence() {
    let (_t, data, _) = provisioned();
    let rep = report(&data);
    assert_eq!(rep["controls"].as_array().unwrap().len(), 44);
    assert_eq!(rep["threats"].as_array().unwrap().len(), 32);
    assert_eq!(rep["device_uid"], "test-device-01");
    assert_eq!(rep["dev_device"], true);
    // No self-test has run yet: PL-3-4 and CR-1-1 cannot be met.
    assert_eq!(verdict(&rep, "PL-3-4"), "not-met");
    assert_eq!(verdict(&rep, "CR-1-1"), "not-met");
    assert_eq!(verdict(&rep, "AU-3-1"), "met");
    assert_eq!(verdict(&rep, "AU-1-4"), "met");
    // Controls that later work brings are not met, with a reason.
    for code in ["AU-1-9", "DS-1-1", "DS-2-1", "PL-2-1", "PL-1-4", "PH-2-1"] {
        assert_eq!(verdict(&rep, code), "not-met", "{code}");
    }
    // The random source behind session IDs is unproven until a self-test has run.
    assert_eq!(verdict(&rep, "DS-3-2"), "not-met");
    // The daemon has never served: remote management is for the assessor to check.
    assert_eq!(verdict(&rep, "PL-3-2"), "manual");
    // Judged by the defaults, which the evidence says.
    let au13 = control(&rep, "AU-1-3").to_string();
    assert!(
        au13.contains("defaults") && au13.contains("5 consecutive failures"),
        "{au13}"
    );
    let au11 = control(&rep, "AU-1-1").to_string();
    assert!(
        au11.contains("still on an initial password") && au11.contains("admin"),
        "{au11}"
    );
    let r = run(&["selftest", "--data-dir", d(&data)]);
    assert_eq!(r.code, 0, "{}", r.all());
    let rep = report(&data);
    assert_eq!(verdict(&rep, "PL-3-4"), "met");
    assert_eq!(verdict(&rep, "CR-1-1"), "met");
    assert_eq!(verdict(&rep, "DS-3-2"), "met");
    // Locally tamper-evident, but not protected against loss or rollback yet: not met, with evidence.
    assert_eq!(verdict(&rep, "PL-4-2"), "not-met");
    let pl42 = control(&rep, "PL-4-2").to_string();
    assert!(
        pl42.contains("chain intact") && pl42.contains("roll"),
        "{pl42}"
    );
    // This machine's root is sealed under /etc/machine-id alone unless hardware identity is
    // readable: data at rest is then honestly not met without a passphrase.
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data.join("device.json")).unwrap()).unwrap();
    if info["binding-sources"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s == "machine-id")
    {
        assert_eq!(verdict(&rep, "DS-1-3"), "not-met");
        assert_eq!(verdict(&rep, "CR-1-2"), "not-met");
    }
    let pl41 = control(&rep, "PL-4-1");
    let ev = pl41["evidence"].to_string();
    assert!(
        ev.contains("device.provisioned") && ev.contains("selftest.passed"),
        "{ev}"
    );
    // Tests backing controls are listed.
    let tests = control(&rep, "PL-3-4")["tests"].to_string();
    assert!(tests.contains("selftest"), "{tests}");
}

/// G045: PL-4-2
#[test]
fn a_tampered_log_turns_pl_4_2_to_not_met() {
    let (_t, data, _) = provisioned();
    let seg = data.join("audit/log-000001.jsonl");
    let text = std::fs::read_to_string(&seg).unwrap().replacen(
        "\"outcome\":\"success\"",
        "\"outcome\":\"failure\"",
        1,
    );
    std::fs::write(&seg, text).unwrap();
    let rep = report(&data);
    assert_eq!(verdict(&rep, "PL-4-2"), "not-met");
    let pl42 = control(&rep, "PL-4-2").to_string();
    assert!(pl42.contains("does not verify"), "{pl42}");
    assert_eq!(verdict(&rep, "PL-4-1"), "not-met");
}

#[test]
fn html_and_markdown_reports_are_written() {
    let (t, data, _) = provisioned();
    let html = t.path().join("r.html");
    let r = run(&[
        "audit",
        "--data-dir",
        d(&data),
        "--format",
        "html",
        "--out",
        d(&html),
    ]);
    assert_eq!(r.code, 0, "{}", r.all());
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("AU-1-1") && page.contains("PH-2-1") && page.contains("test-device-01"));
    assert!(
        !page.contains("<script"),
        "the report must be self-contained and script-free"
    );
    let r = run(&["audit", "--data-dir", d(&data), "--format", "md"]);
    assert_eq!(r.code, 0);
    assert!(
        r.stdout.contains("| `AU-3-1` |"),
        "{}",
        &r.stdout[..r.stdout.len().min(2000)]
    );
}
