//! Time from "apply" to a committed trial boot, with the real binary in the directory-slot
//! setup (G045 PL-2-2), next to a plain `kawal run` start measured in the same run.
//!
//! The device runs under `kawal boot --supervise` as in `update_flow.rs`; the vendor's bundles
//! hold this build of kawal (the payload is the executable itself). Each round releases the next
//! version (0.2.0, 0.3.0, 0.4.0; health checks `self-test` and `integrity`), re-authenticates,
//! and then times from the apply request until the API reports the new version committed
//! (`trial == null`, `version == new`), with the steps on the way:
//! - **answered**: the apply's HTTP answer (metadata verified, bundle streamed, checked and
//!   fsynced into the other slot, trial begun);
//! - **restarted**: a new daemon process under the supervisor (the old one waits a grace period
//!   so its answer reaches the caller, then exits asking for a restart);
//! - **listening**: the new daemon accepts connections;
//! - **committed**: its health checks passed and it committed (polled every 20 ms, each poll a
//!   GET of `/api/v1/update`, after a login when the session is new).
//!
//! The baseline: after the rounds the supervisor is stopped and `kawal run` is started on the same
//! device three times, timed from the spawn to the first accepted connection.
//!
//! Run with `scripts/bench.sh update`, or
//! `cargo test --release -p kawal --test update_bench -- --ignored --nocapture`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_macros,
    clippy::print_stdout,
    clippy::cast_precision_loss,
    reason = "benchmark: a failure should stop it loudly; the measurements are printed"
)]

mod common;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::gateway::{Api, Gateway};
use common::update::{Vendor, device};
use common::{d, kawal};
use reqwest::StatusCode;
use serde_json::{Value, json};

const PW: &str = "Quiet-Harbour-Lamp-73";
const VERSIONS: [&str; 3] = ["0.2.0", "0.3.0", "0.4.0"];
const POLL: Duration = Duration::from_millis(20);

/// Logs in as admin (changing the initial password the first time).
fn admin(gw: &Gateway) -> Api {
    let mut api = gw.client();
    if api.login("admin", PW).status() == StatusCode::OK {
        return api;
    }
    gw.admin_ready(PW)
}

/// The daemon process the supervisor `sup` runs now, if any.
fn daemon_pid(sup: u32) -> Option<u32> {
    let tasks = std::fs::read_dir(format!("/proc/{sup}/task")).ok()?;
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("children")).ok())
        .find_map(|c| c.split_whitespace().next().and_then(|p| p.parse().ok()))
}

/// Whether process `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

fn accepts(gw: &Gateway) -> bool {
    std::net::TcpStream::connect_timeout(&gw.addr, Duration::from_millis(100)).is_ok()
}

/// Waits until `done` holds, checking every `every`; panics with `what` after `secs`.
fn until(gw: &Gateway, secs: u64, every: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what} not reached: {}",
            gw.daemon_log()
        );
        std::thread::sleep(every);
    }
}

/// The times of one apply, from the apply request.
struct Round {
    answered: Duration,
    restarted: Duration,
    listening: Duration,
    committed: Duration,
}

fn one_update(gw: &Gateway, version: &str) -> Round {
    let sup = gw.pid().expect("the supervisor runs");
    let old = daemon_pid(sup).expect("a daemon under the supervisor");
    let mut api = admin(gw);
    // The operator's re-authentication comes before the apply request and is not timed.
    let proof = api.reauth(PW);
    let t0 = Instant::now();
    let r = api.post_reauth("/api/v1/update/apply", &json!({}), &proof);
    let answered = t0.elapsed();
    let status = r.status();
    let body: Value = r.json().unwrap_or(Value::Null);
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["version"], version, "{body}");

    until(gw, 60, Duration::from_millis(5), "restart", || {
        daemon_pid(sup).is_some_and(|p| p != old)
    });
    let restarted = t0.elapsed();
    until(gw, 60, Duration::from_millis(5), "listening", || {
        accepts(gw)
    });
    let listening = t0.elapsed();

    let mut session: Option<Api> = None;
    until(gw, 90, POLL, "commit", || {
        if session.is_none() {
            let mut a = gw.client();
            if a.login("admin", PW).status() == StatusCode::OK {
                session = Some(a);
            }
        }
        let Some(a) = session.as_mut() else {
            return false;
        };
        match a.request(reqwest::Method::GET, "/api/v1/update").send() {
            Ok(r) if r.status() == StatusCode::OK => {
                let v: Value = r.json().unwrap();
                v["trial"].is_null() && v["version"] == version
            }
            _ => {
                session = None;
                false
            }
        }
    });
    Round {
        answered,
        restarted,
        listening,
        committed: t0.elapsed(),
    }
}

/// A `kawal run` of the test, stopped (SIGTERM, then SIGKILL) when dropped.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `kawal run` on the device: time from the spawn to the first accepted connection.
fn plain_start(gw: &Gateway, n: usize) -> Duration {
    let log = std::fs::File::create(gw.tmp.path().join(format!("plain-{n}.log"))).unwrap();
    let t0 = Instant::now();
    let child = kawal()
        .args(["run", "--config", d(&gw.config)])
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    let mut daemon = Daemon(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !accepts(gw) {
        if let Ok(Some(s)) = daemon.0.try_wait() {
            panic!(
                "kawal run exited with {s}: {}",
                std::fs::read_to_string(gw.tmp.path().join(format!("plain-{n}.log")))
                    .unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "kawal run did not listen");
        std::thread::sleep(Duration::from_millis(5));
    }
    t0.elapsed()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// G045: PL-2-2
#[test]
#[ignore = "benchmark: three updates of the release binary; run with --ignored --nocapture"]
fn apply_to_committed_trial_boot_against_a_plain_start() {
    let tmp = tempfile::tempdir().unwrap();
    let vendor = Vendor::new(tmp.path());
    let exe_bytes = std::fs::metadata(vendor.payload.join("kawal"))
        .unwrap()
        .len();
    let mut gw = device(&vendor);
    let _ = admin(&gw);

    let mut rounds = Vec::new();
    for (i, version) in VERSIONS.iter().enumerate() {
        let bundle = vendor.release(version, i as u64 + 1, &["self-test", "integrity"]);
        let r = one_update(&gw, version);
        println!(
            "BENCH update {version}: bundle {:.1} MB; apply -> answered {:.0} ms, restarted \
             {:.0} ms, listening {:.0} ms, committed {:.0} ms",
            bundle as f64 / 1e6,
            ms(r.answered),
            ms(r.restarted),
            ms(r.listening),
            ms(r.committed),
        );
        rounds.push(r);
    }
    let state = admin(&gw).get("/api/v1/update").json::<Value>().unwrap();
    assert_eq!(state["version"], VERSIONS[2], "{state}");

    // The baseline, on the same device once the supervisor has stopped.
    let daemon = daemon_pid(gw.pid().unwrap()).expect("a daemon under the supervisor");
    gw.stop();
    // The daemon holds the data folder's lock until it has exited, after it stopped listening.
    until(
        &gw,
        30,
        Duration::from_millis(20),
        "the daemon's exit",
        || !alive(daemon) && !accepts(&gw),
    );
    let starts: Vec<Duration> = (0..3).map(|n| plain_start(&gw, n)).collect();
    for (n, s) in starts.iter().enumerate() {
        println!("BENCH update plain start {}: {:.0} ms", n + 1, ms(*s));
    }

    let pick = |f: fn(&Round) -> Duration| median(rounds.iter().map(f).collect());
    let committed = pick(|r| r.committed);
    let start = median(starts);
    println!(
        "BENCH update: payload = the kawal executable, {:.1} MB; medians of {} rounds: answered \
         {:.0} ms, restarted {:.0} ms, listening {:.0} ms, committed {:.0} ms; plain `kawal run` \
         start to listening {:.0} ms (median of 3); ratio apply->commit / plain start {:.1}",
        exe_bytes as f64 / 1e6,
        rounds.len(),
        ms(pick(|r| r.answered)),
        ms(pick(|r| r.restarted)),
        ms(pick(|r| r.listening)),
        ms(committed),
        ms(start),
        committed.as_secs_f64() / start.as_secs_f64(),
    );
}
