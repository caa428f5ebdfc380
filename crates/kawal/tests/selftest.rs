//! The power-up self-test: every injected failure is refused, by `kawal selftest` and the daemon.
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

/// G045: PL-3-4
#[test]
fn every_check_passes_on_a_healthy_device() {
    let (_t, data, _) = provisioned();
    let r = run(&["selftest", "--data-dir", d(&data)]);
    assert_eq!(r.code, 0, "{}", r.all());
    for name in kawal_platform::selftest::check_names() {
        assert!(
            r.stdout.contains(&name),
            "{name} not reported:\n{}",
            r.stdout
        );
    }
    assert!(r.stdout.contains("self-test passed"));
}

/// G045: PL-3-4, CR-1-1
#[test]
fn each_injected_failure_is_refused() {
    let (_t, data, _) = provisioned();
    for name in kawal_platform::selftest::check_names() {
        let r = run_cmd(
            kawal()
                .args(["selftest", "--data-dir", d(&data)])
                .env("KAWAL_SELFTEST_INJECT", &name),
        );
        assert_eq!(r.code, 70, "{name}: {}", r.all());
        assert!(
            r.stdout
                .lines()
                .any(|l| l.starts_with("FAIL") && l.contains(&name)),
            "{name}:\n{}",
            r.stdout
        );
    }
    // A failed primitive writes nothing (it must not seal or sign); a failed clock check
    // is logged by the proven primitives.
    let r = run(&["log", "show", "--data-dir", d(&data), "--event", "selftest"]);
    let failed: Vec<&str> = r
        .stdout
        .lines()
        .filter(|l| l.contains("selftest.failed"))
        .collect();
    assert_eq!(failed.len(), 1, "{}", r.stdout);
    assert!(failed[0].contains("clock"), "{}", failed[0]);
}

/// G045: PL-3-4
#[test]
fn the_daemon_does_not_serve_after_a_failed_self_test() {
    let (t, data, _) = provisioned();
    let config = config_for(t.path(), &data);
    let before = run(&["log", "show", "--data-dir", d(&data), "--json"]).stdout;
    let r = run_cmd(
        kawal()
            .args(["run", "--config", d(&config)])
            .env("KAWAL_SELFTEST_INJECT", "kat:aes-256-gcm"),
    );
    assert_eq!(r.code, 70, "{}", r.all());
    assert!(r.stderr.contains("self-test failed"), "{}", r.stderr);
    let after = run(&["log", "show", "--data-dir", d(&data), "--json"]).stdout;
    assert_eq!(before, after, "a failed primitive wrote to the log");
    let r = run_cmd(
        kawal()
            .args(["run", "--config", d(&config)])
            .env("KAWAL_SELFTEST_INJECT", "clock"),
    );
    assert_eq!(r.code, 70, "{}", r.all());
    let log = run(&["log", "show", "--data-dir", d(&data)]);
    assert!(log.stdout.contains("selftest.failed"), "{}", log.stdout);
    assert!(!log.stdout.contains("daemon.started"), "{}", log.stdout);
}
