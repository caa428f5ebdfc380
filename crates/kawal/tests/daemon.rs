//! `kawal run`: starts, logs, stops cleanly on SIGTERM with a signed checkpoint.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::string_slice,
    clippy::cast_precision_loss,
    reason = "test code: a failure should stop the test loudly"
)]
mod common;
use std::io::Read;
use std::time::{Duration, Instant};

use common::*;

/// A daemon that is killed if the test fails before it stops it.
struct Reaped(std::process::Child);

impl std::ops::Deref for Reaped {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Reaped {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// G045: PL-4-1, PL-4-3
#[test]
fn the_daemon_starts_and_stops_on_sigterm_and_logs_both() {
    let (t, data, _) = provisioned();
    let config = config_for(t.path(), &data);
    let mut child = Reaped(
        kawal()
            .args(["run", "--config", d(&config)])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = run(&["log", "show", "--data-dir", d(&data), "--event", "daemon"]);
        if log.stdout.contains("daemon.started") {
            break;
        }
        assert!(Instant::now() < deadline, "daemon did not start");
        assert!(child.try_wait().unwrap().is_none(), "daemon exited early");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Management commands work beside the running daemon: shared store, shared log.
    for args in [
        vec!["audit", "--data-dir", d(&data), "--format", "json"],
        vec!["keys", "rotate", "pii", "--data-dir", d(&data)],
        vec!["log", "verify", "--data-dir", d(&data)],
    ] {
        let r = run(&args);
        assert_eq!(r.code, 0, "{args:?} beside the daemon: {}", r.all());
    }
    // One daemon per data folder; the audit key is not rotated under a running daemon; no reset.
    let second = run(&["run", "--config", d(&config)]);
    assert_eq!(second.code, 77, "{}", second.all());
    assert!(
        second.stderr.contains("daemon is running"),
        "{}",
        second.stderr
    );
    let rot = run(&["keys", "rotate", "audit-signing", "--data-dir", d(&data)]);
    assert_eq!(rot.code, 77, "{}", rot.all());
    let reset = run(&["reset", "--secure", "--yes", "--data-dir", d(&data)]);
    assert_eq!(reset.code, 77, "{}", reset.all());
    // SIGTERM via kill(1): no unsafe in tests either.
    let pid = child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = child.wait().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "exit {status:?}: {err}");
    let log = run(&["log", "show", "--data-dir", d(&data), "--json"]);
    let stopped = log
        .stdout
        .lines()
        .find(|l| l.contains("daemon.stopped"))
        .expect("daemon.stopped logged");
    assert!(stopped.contains("SIGTERM"));
    assert!(stopped.contains("\"clock\":\""), "{stopped}");
    assert!(
        log.stdout
            .lines()
            .last()
            .unwrap()
            .contains("\"checkpoint\"")
            || log.stdout.lines().last().unwrap().contains("\"sig\""),
        "no final checkpoint"
    );
    let v = run(&["log", "verify", "--data-dir", d(&data)]);
    assert_eq!(v.code, 0, "{}", v.all());
    // The first start records the configuration it runs with.
    assert_eq!(
        log.stdout
            .lines()
            .filter(|l| l.contains("config.changed"))
            .count(),
        1,
        "{}",
        log.stdout
    );
}

#[test]
fn a_busy_port_is_a_clear_error() {
    let (t, data, _) = provisioned();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let config = t.path().join("busy.toml");
    std::fs::write(
        &config,
        format!(
            "data-dir = {:?}\n[listen]\napi = \"127.0.0.1:{port}\"\nmqtt = \"127.0.0.1:{}\"\n",
            d(&data),
            free_port()
        ),
    )
    .unwrap();
    let r = run(&["run", "--config", d(&config)]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains(&format!("127.0.0.1:{port}")),
        "{}",
        r.stderr
    );
}

/// Resident anonymous memory of `pid`, KiB.
fn rss_anon_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// G045: AU-1-8
/// Setting passwords does not leave the password rules' dictionaries (zxcvbn and the
/// common-password list, ~8 MiB) in the daemon: they are checked in a short-lived child
/// process, and the rules still hold (a common password is refused).
#[test]
fn password_checks_leave_no_dictionaries_in_the_daemon() {
    let gw = gateway::Gateway::start();
    let pid = gw.pid().unwrap();
    // Warm up what every request uses (TLS, a session, an Argon2id check) with logins only.
    for _ in 0..2 {
        let mut c = gw.client();
        assert_eq!(
            c.login("admin", &gw.admin_password).status(),
            reqwest::StatusCode::OK
        );
    }
    let before = rss_anon_kib(pid);
    let mut api = gw.admin_ready("Sturdy-harbour-lantern-47");
    let proof = api.reauth("Sturdy-harbour-lantern-47");
    let r = api.post_reauth(
        "/api/v1/accounts",
        &serde_json::json!({ "username": "op1", "role": "operator", "password": "password1234" }),
        &proof,
    );
    assert_eq!(
        r.status(),
        reqwest::StatusCode::BAD_REQUEST,
        "a common password was accepted"
    );
    let body = r.text().unwrap();
    assert!(body.contains("commonly used"), "{body}");
    for i in 0..3 {
        let proof = api.reauth("Sturdy-harbour-lantern-47");
        let r = api.post_reauth(
            "/api/v1/accounts",
            &serde_json::json!({
                "username": format!("op{i}"),
                "role": "operator",
                "password": format!("Quiet-orbit-tamarind-8{i}")
            }),
            &proof,
        );
        assert_eq!(r.status(), reqwest::StatusCode::CREATED);
    }
    let after = rss_anon_kib(pid);
    assert!(
        after < before + 3 * 1024,
        "anonymous memory grew from {before} KiB to {after} KiB"
    );
}
