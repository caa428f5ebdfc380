//! The daemon forwards its audit log to a real collector (rsyslog, mutual TLS, RFC 5425)
//! across a collector outage and a daemon restart; `kawal log verify --remote` passes on the
//! collector's copy, and catches a local log truncated after forwarding.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::disallowed_macros,
    reason = "integration test: a failed setup is a failed test; it prints what verify found"
)]

mod common;

use std::time::{Duration, Instant};

use common::gateway::{Gateway, set};
use common::rsyslog::{Collector, CollectorPki};
use common::*;
use serde_json::Value;

const UID: &str = "test-gw-01";
const ENV: &[(&str, &str)] = &[("KAWAL_FORWARD_BACKOFF_MS", "100")];

fn wait_events(gw: &Gateway, name: &str, at_least: usize, secs: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if gw.events(name).len() >= at_least {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// A few audit events: failed logins (each one is logged).
fn make_events(gw: &Gateway, n: usize) {
    for _ in 0..n {
        let mut api = gw.client();
        let _ = api.login("admin", "not-the-password-at-all");
    }
}

/// G045: PL-4-2
#[test]
fn the_daemon_forwards_its_log_across_outages_and_restarts_and_the_copy_verifies() {
    if rsyslog::missing() {
        return;
    }
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = CollectorPki::new(pki_dir.path());
    let port = free_port();
    let ca_file = pki.ca_file.clone();
    let mut gw = Gateway::start_with(|cfg| {
        set(cfg, "log-forward", "collector", format!("127.0.0.1:{port}"));
        set(cfg, "log-forward", "server-name", "localhost");
        set(cfg, "log-forward", "ca-file", d(&ca_file));
        set(cfg, "log-forward", "confirm-interval-ms", 300);
    });
    // No collector yet: the forwarder reports the failure once.
    assert!(
        wait_events(&gw, "log.forward-failed", 1, 20),
        "{}",
        gw.daemon_log()
    );
    // Health shows the forwarder.
    let mut api = gw.admin_ready("a much better passphrase 1");
    let h: Value = api.get("/api/v1/health").json().unwrap();
    assert_eq!(h["log_forward"]["collector"], format!("127.0.0.1:{port}"));
    assert_ne!(h["log_forward"]["state"], "connected", "{h}");
    gw.stop();

    let col_dir = gw.tmp.path().join("collector");
    let mut collector = Collector::start(&col_dir, pki.tls(&gw.ca_pem, UID), port);
    gw.spawn_with_env(ENV);
    assert!(
        wait_events(&gw, "log.forward-connected", 1, 30),
        "{}\n{}",
        gw.daemon_log(),
        collector.stderr()
    );
    assert!(
        collector.wait_for("daemon.started", 20),
        "{}",
        collector.stderr()
    );
    let mut api = gw.client();
    assert_eq!(
        api.login("admin", "a much better passphrase 1").status(),
        200
    );
    let h: Value = api.get("/api/v1/health").json().unwrap();
    assert_eq!(h["log_forward"]["state"], "connected", "{h}");
    assert_eq!(h["log_forward"]["backlog_alarm"], "normal", "{h}");

    // An outage: events keep being written locally and arrive once the collector is back.
    collector.stop();
    make_events(&gw, 5);
    assert!(
        wait_events(&gw, "log.forward-failed", 2, 30),
        "{}",
        gw.daemon_log()
    );
    make_events(&gw, 5);
    collector.restart();
    assert!(
        wait_events(&gw, "log.forward-connected", 2, 30),
        "{}",
        gw.daemon_log()
    );
    // A daemon restart resumes from the cursor.
    gw.stop();
    gw.spawn_with_env(ENV);
    make_events(&gw, 3);
    assert!(wait_events(&gw, "daemon.started", 3, 20));
    assert_eq!(gw.stop(), Some(0), "{}", gw.daemon_log());
    // The daemon's final records (daemon.stopped) were sent and confirmed at its stop.
    let stopped = gw.events("daemon.stopped");
    let last_seq = stopped.last().unwrap()["seq"].as_u64().unwrap();
    assert!(
        collector.wait_for(&format!("seq=\"{last_seq}\""), 10),
        "daemon.stopped (seq {last_seq}) not forwarded"
    );
    collector.stop();

    let r = run(&[
        "log",
        "verify",
        "--data-dir",
        d(&gw.data),
        "--remote",
        d(&collector.out),
    ]);
    println!("{}", r.all());
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("remote copy OK"), "{}", r.stdout);
    assert!(r.stdout.contains("gaps 0 (0 missing)"), "{}", r.stdout);
    assert!(r.stdout.contains("not forwarded yet 0"), "{}", r.stdout);
    assert!(r.stdout.contains("unsigned tail 0"), "{}", r.stdout);

    // The device's log truncated after forwarding: the collector's copy shows it.
    let mut segs: Vec<_> = std::fs::read_dir(gw.data.join("audit"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segs.sort();
    let last = segs.last().unwrap();
    let text = std::fs::read_to_string(last).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let keep = lines.len().saturating_sub(4).max(1);
    std::fs::write(last, format!("{}\n", lines[..keep].join("\n"))).unwrap();
    let r = run(&[
        "log",
        "verify",
        "--data-dir",
        d(&gw.data),
        "--remote",
        d(&collector.out),
    ]);
    println!("{}", r.all());
    assert_eq!(r.code, 65, "{}", r.all());
    assert!(
        r.stdout.contains("local log shorter than the copy: YES"),
        "{}",
        r.stdout
    );
    assert!(r.stderr.contains("truncated on the device"), "{}", r.stderr);
}

/// G045: PL-4-2
#[test]
fn log_forward_configuration_errors_name_their_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("kawal.toml");
    std::fs::write(
        &path,
        "data-dir = \"/var/lib/kawal\"\n[log-forward]\ncollector = \"nohost\"\nca-file = \"ca.pem\"\nwhen-full = \"drop-oldest\"\nbogus = 1\n",
    )
    .unwrap();
    let r = run(&["config", "check", d(&path)]);
    assert_eq!(r.code, 78, "{}", r.all());
    assert!(r.all().contains("bogus"), "{}", r.all());
    std::fs::write(
        &path,
        "data-dir = \"/var/lib/kawal\"\n[log-forward]\ncollector = \"nohost\"\nca-file = \"ca.pem\"\nwhen-full = \"drop-oldest\"\n",
    )
    .unwrap();
    let r = run(&["config", "check", d(&path)]);
    assert_eq!(r.code, 78, "{}", r.all());
    for key in [
        "log-forward.collector",
        "log-forward.ca-file",
        "log-forward.when-full",
    ] {
        assert!(r.all().contains(key), "{key}: {}", r.all());
    }
}
