//! The log forwarder against a real collector: Debian's rsyslog with its GnuTLS driver,
//! mutual TLS, octet-counted frames, written to a file with a raw-message template.
//!
//! Proves: every entry arrives, none is lost across a collector outage, duplicates stay
//! within the declared overlap, the copy passes `verify_remote` and catches a truncated
//! local log; and a collector whose certificate is not from the pinned CA gets nothing.
//!
//! rsyslog must be installed (`apt-get install rsyslog rsyslog-gnutls`); without it these
//! tests fail, unless `KAWAL_SKIP_RSYSLOG=1`. `KAWAL_FORWARD_TEST_S` sets how long events
//! are appended (default 10 s) for a longer run by hand.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr,
    clippy::print_stdout,
    clippy::disallowed_macros,
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    reason = "integration test: a failed setup is a failed test; the benchmark prints numbers"
)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use kawal_audit::forward::{ClientIdentity, ForwardConfig, Forwarder, verify_remote};
use kawal_audit::{AuditLog, AuditOptions, Event};
use kawal_testkit::free_port;
use kawal_testkit::rsyslog::{self, Collector};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use zeroize::Zeroizing;

/// Upper bound on any single wait in these tests.
const WAIT: Duration = Duration::from_secs(30);

/// `None` if the test may run; `Some(())` if it is to be skipped (KAWAL_SKIP_RSYSLOG=1 and no
/// rsyslog). Panics with instructions if rsyslog is missing otherwise.
fn rsyslog_missing() -> Option<()> {
    rsyslog::missing().then_some(())
}

/// A test CA (ECDSA P-256).
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

/// A certificate and its PKCS#8 key, PEM.
struct Leaf {
    cert_pem: String,
    key_pem: String,
}

impl Ca {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).unwrap();
        Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    fn issue(&self, cn: &str, sans: &[&str], purpose: ExtendedKeyUsagePurpose) -> Leaf {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let sans: Vec<String> = sans.iter().map(|s| (*s).to_owned()).collect();
        let mut params = CertificateParams::new(sans).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![purpose];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// The certificates of one test: the pinned CA, the collector's and the device's.
struct Pki {
    ca: Ca,
    server: Leaf,
    client: Leaf,
}

impl Pki {
    fn new() -> Self {
        let ca = Ca::new("kawal test log CA");
        let server = ca.issue(
            "collector",
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let client = ca.issue(UID, &[], ExtendedKeyUsagePurpose::ClientAuth);
        Self { ca, server, client }
    }

    fn identity(&self) -> ClientIdentity {
        ClientIdentity {
            cert_chain_pem: self.client.cert_pem.clone(),
            key_pem: Zeroizing::new(self.client.key_pem.clone()),
        }
    }
}

/// Starts the collector in `dir`: it presents `server`; clients must chain to `client_ca_pem`
/// and be named `UID`.
fn start_collector(dir: &Path, server: &Leaf, client_ca_pem: &str) -> Collector {
    let tls = rsyslog::Tls {
        server_cert_pem: &server.cert_pem,
        server_key_pem: &server.key_pem,
        client_ca_pem,
        peer: UID,
    };
    Collector::start(dir, tls, free_port())
}

fn config(collector: &Collector, pki: &Pki, cursor: &Path) -> ForwardConfig {
    let mut c = ForwardConfig::new(
        collector.address(),
        "localhost",
        pki.ca.cert_pem.clone(),
        pki.identity(),
        UID,
        cursor,
    );
    c.backoff_min = Duration::from_millis(200);
    c.backoff_max = Duration::from_secs(1);
    c.poll_interval = Duration::from_millis(200);
    c
}

fn test_seconds() -> f64 {
    std::env::var("KAWAL_FORWARD_TEST_S")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| *s >= 3.0)
        .unwrap_or(10.0)
}

/// Appends `per_second` events a second until `until`, every 10 ms as many as are due (so
/// a slow sync makes batches larger, not the rate lower); calls `at` once per tick with the
/// elapsed time. Returns the number of events appended.
fn append_steadily(
    log: &AuditLog,
    per_second: u64,
    until: Duration,
    mut at: impl FnMut(Duration),
) -> u64 {
    let start = Instant::now();
    let mut tick = 0u32;
    let mut n = 0u64;
    while start.elapsed() < until {
        let due = (start.elapsed().as_millis() as u64 * per_second / 1000).max(n + 1);
        let events: Vec<Event> = (n..due).map(event).collect();
        log.append_batch(events).unwrap();
        n = due;
        at(start.elapsed());
        tick += 1;
        let next = start + Duration::from_millis(10) * tick;
        if let Some(d) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
    }
    n
}

/// Waits until everything up to `seq` is confirmed delivered.
fn wait_confirmed(fwd: &Forwarder, seq: u64, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let s = fwd.status();
        if s.cursor_seq >= seq {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "not confirmed up to {seq} within {limit:?}: {s:?}"
        );
        fwd.wake();
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// G045: PL-4-2
/// Every entry reaches rsyslog across a collector outage: none lost, duplicates within the
/// declared overlap, the copy verifies, and it exposes a truncated local log.
#[test]
fn every_entry_reaches_rsyslog_across_an_outage() {
    if rsyslog_missing().is_some() {
        return;
    }
    let fx = Fixture::new();
    let pki = Pki::new();
    let cdir = fx.dir().join("collector");
    let mut collector = start_collector(&cdir, &pki.server, &pki.ca.cert_pem);
    let cursor = fx.dir().join("forward.cursor");
    let mut fwd = Some(Forwarder::start(fx.dir(), config(&collector, &pki, &cursor)).unwrap());
    let log = fx
        .open_with(AuditOptions {
            sinks: vec![Box::new(fwd.as_ref().unwrap().waker())],
            // Small segments, so the forwarder crosses many segment boundaries.
            segment_max_bytes: 256 << 10,
            ..small_options()
        })
        .unwrap();

    // The collector is down from 1/3 for 3 s; kawal's forwarder restarts at 2/3 (from its
    // cursor file; the new one is not woken by the log, it polls).
    let total = Duration::from_secs_f64(test_seconds());
    let (down_at, up_at) = (total / 3, total / 3 + Duration::from_secs(3));
    let restart_at = total * 2 / 3;
    let (mut down, mut up) = (false, false);
    let mut first_run = None;
    let appended = append_steadily(&log, 1000, total, |t| {
        if !down && t >= down_at {
            collector.stop();
            down = true;
        } else if down && !up && t >= up_at {
            collector.restart();
            up = true;
        } else if first_run.is_none() && t >= restart_at {
            first_run = Some(fwd.take().unwrap().stop());
            fwd = Some(Forwarder::start(fx.dir(), config(&collector, &pki, &cursor)).unwrap());
        }
    });
    assert!(down && up, "the outage happened");
    let first_run = first_run.expect("the forwarder restarted");
    assert!(
        appended as f64 >= 900.0 * total.as_secs_f64(),
        "only {appended} events appended"
    );
    log.close().unwrap();
    let local = fx.verify().unwrap();
    assert!(fx.segments().len() > 3, "several segments");
    let fwd = fwd.unwrap();
    wait_confirmed(&fwd, local.last_seq, WAIT);
    let status = fwd.stop();
    collector.stop();

    let v = verify_remote(&collector.out, UID, &fx.trusted(), Some(fx.dir())).unwrap();
    let r = &v.report;
    eprintln!(
        "first run: {first_run:?}\nsecond run: {status:?}\nremote: {r:?}\nlocal: {:?}",
        v.local
    );
    assert!(
        v.passed(),
        "{v:?}\ncollector stderr:\n{}",
        collector.stderr()
    );
    assert_eq!(r.first_seq, Some(1), "nothing lost at the start");
    assert_eq!(r.last_seq, Some(local.last_seq), "nothing lost at the end");
    assert_eq!(
        r.entries, local.entries,
        "every entry arrived exactly once after dedup"
    );
    assert_eq!(r.missing_entries, 0);
    assert_eq!(r.bad_lines, 0);
    assert_eq!(
        r.signed_through,
        Some(local.last_seq),
        "the last checkpoint signs all"
    );
    let broken = first_run.broken_connections + status.broken_connections;
    assert!(broken >= 1, "the outage broke a connection");
    // Everything sent beyond one copy per entry: the resends after the broken connection
    // (by the first run, or by the second from the cursor the first one left).
    let resent = first_run.messages_sent + status.messages_sent - local.entries;
    assert!(
        r.duplicates <= resent,
        "duplicates {} beyond what was resent {resent}",
        r.duplicates
    );
    assert!(
        resent <= broken * status.declared_overlap,
        "resent {resent} beyond the declared overlap ({broken} broken connections)"
    );
    assert_eq!(
        r.lines,
        r.entries + r.duplicates + r.foreign_lines,
        "every line is accounted for"
    );

    // The device's log is cut back after forwarding: the remote copy shows it.
    let segs = fx.segments();
    let last = segs.last().unwrap();
    let mut lines = read_lines(last);
    let keep = lines.len() / 2;
    lines.truncate(keep);
    write_lines(last, &lines);
    let v = verify_remote(&collector.out, UID, &fx.trusted(), Some(fx.dir())).unwrap();
    let cmp = v.local.clone().unwrap();
    assert!(v.report.is_intact(), "the copy itself is still intact");
    assert!(cmp.local_shorter, "{cmp:?}");
    assert!(!v.passed());
}

/// G045: PL-4-2
/// A collector whose certificate is not from the pinned CA receives nothing, and the
/// forwarder reports the refused certificate.
#[test]
fn a_collector_outside_the_pinned_ca_gets_nothing() {
    if rsyslog_missing().is_some() {
        return;
    }
    let fx = Fixture::new();
    let pki = Pki::new();
    let impostor_ca = Ca::new("someone else's CA");
    let impostor = impostor_ca.issue(
        "collector",
        &["localhost", "127.0.0.1"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    // The impostor would accept our client certificate: only our check stops it.
    let mut collector = start_collector(&fx.dir().join("impostor"), &impostor, &pki.ca.cert_pem);
    fx.fill(30);
    let fwd = Forwarder::start(
        fx.dir(),
        config(&collector, &pki, &fx.dir().join("forward.cursor")),
    )
    .unwrap();
    let deadline = Instant::now() + WAIT;
    let status = loop {
        let s = fwd.status();
        if s.last_error.is_some() {
            break s;
        }
        assert!(Instant::now() < deadline, "no error reported: {s:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    std::thread::sleep(Duration::from_millis(500));
    let status2 = fwd.stop();
    collector.stop();
    let err = status.last_error.unwrap();
    assert!(err.contains("certificate refused"), "{err}");
    assert_eq!(status2.messages_sent, 0);
    assert_eq!(status2.cursor_seq, 0);
    assert!(!status2.connected);
    assert_eq!(status2.backlog_entries, fx.verify().unwrap().last_seq);
    assert_eq!(collector.collected(), "", "the impostor received nothing");
    assert!(!fx.dir().join("forward.cursor").exists());
}

/// Waits until the forwarder reports itself stalled; returns the status.
fn wait_stalled(fwd: &Forwarder) -> kawal_audit::ForwardStatus {
    let deadline = Instant::now() + WAIT;
    loop {
        let s = fwd.status();
        if s.stalled {
            return s;
        }
        assert!(Instant::now() < deadline, "not stalled: {s:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// G045: PL-4-2
/// A local log rewritten after it was forwarded (the entry after the cursor does not chain
/// from the delivered one) is not forwarded, and the forwarder says why.
#[test]
fn a_local_log_rewritten_after_forwarding_is_not_forwarded() {
    if rsyslog_missing().is_some() {
        return;
    }
    let fx = Fixture::new();
    let pki = Pki::new();
    let mut collector = start_collector(&fx.dir().join("c"), &pki.server, &pki.ca.cert_pem);
    fx.fill(20);
    let cursor = fx.dir().join("forward.cursor");
    // The collector has entries 1..=10, but entry 10 as it had them differs from ours now.
    kawal_audit::forward::CursorFileStore::new(&cursor)
        .save(&kawal_audit::forward::Cursor {
            seq: 10,
            hash: kawal_audit::EntryHash([0xab; 32]),
        })
        .unwrap();
    let fwd = Forwarder::start(fx.dir(), config(&collector, &pki, &cursor)).unwrap();
    let s = wait_stalled(&fwd);
    let s2 = fwd.stop();
    collector.stop();
    let err = s.last_error.unwrap();
    assert!(err.contains("does not chain"), "{err}");
    assert_eq!(s2.messages_sent, 0, "{s2:?}");
    assert_eq!(s2.cursor_seq, 10);
}

/// G045: PL-4-2
/// A local log shorter than what was already delivered (truncated, or replaced by a new
/// one) stalls forwarding with the reason; nothing is sent.
#[test]
fn a_local_log_shorter_than_the_cursor_stalls_forwarding() {
    let fx = Fixture::new();
    let pki = Pki::new();
    fx.fill(5);
    let cursor = fx.dir().join("forward.cursor");
    kawal_audit::forward::CursorFileStore::new(&cursor)
        .save(&kawal_audit::forward::Cursor {
            seq: 500,
            hash: kawal_audit::EntryHash([1; 32]),
        })
        .unwrap();
    // No collector needed: the check comes first. Port 9 (discard) is closed here.
    let mut c = ForwardConfig::new(
        "127.0.0.1:9",
        "localhost",
        pki.ca.cert_pem.clone(),
        pki.identity(),
        UID,
        &cursor,
    );
    c.poll_interval = Duration::from_millis(50);
    let fwd = Forwarder::start(fx.dir(), c).unwrap();
    let s = wait_stalled(&fwd);
    let s2 = fwd.stop();
    let err = s.last_error.unwrap();
    assert!(err.contains("truncated or replaced"), "{err}");
    assert_eq!(s2.messages_sent, 0);
    assert_eq!(s2.cursor_seq, 500);
    assert_eq!(s2.local_seq, fx.verify().unwrap().last_seq);
}

/// G045: PL-4-2
/// Bad settings are all reported, and errors never quote the private key.
#[test]
fn bad_settings_are_refused_without_quoting_the_key() {
    let fx = Fixture::new();
    let pki = Pki::new();
    let mut c = ForwardConfig::new("no-port", "not a name", "", pki.identity(), "a b", "");
    c.confirm_max_entries = 0;
    c.io_timeout = Duration::ZERO;
    let fields: Vec<String> = c.problems().iter().map(ToString::to_string).collect();
    for f in [
        "collector",
        "server-name",
        "hostname",
        "cursor-path",
        "confirm-max-entries",
        "io-timeout",
    ] {
        assert!(
            fields.iter().any(|e| e.contains(f)),
            "{f} not reported: {fields:?}"
        );
    }
    assert!(
        !format!("{c:?}").contains("PRIVATE KEY"),
        "Debug shows the key"
    );

    // A key that does not parse: the error says so without quoting it.
    let secret =
        "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==\n-----END PRIVATE KEY-----\n";
    let identity = ClientIdentity {
        cert_chain_pem: pki.client.cert_pem.clone(),
        key_pem: Zeroizing::new(secret.into()),
    };
    let c = ForwardConfig::new(
        "127.0.0.1:9",
        "localhost",
        pki.ca.cert_pem.clone(),
        identity,
        UID,
        fx.dir().join("c"),
    );
    let e = Forwarder::start(fx.dir(), c).unwrap_err().to_string();
    assert!(e.contains("client-key"), "{e}");
    assert!(!e.contains("c2VjcmV0") && !e.contains("PRIVATE"), "{e}");

    // Another certificate's key: refused at start, not at the first handshake.
    let other = pki
        .ca
        .issue("other", &[], ExtendedKeyUsagePurpose::ClientAuth);
    let identity = ClientIdentity {
        cert_chain_pem: pki.client.cert_pem.clone(),
        key_pem: Zeroizing::new(other.key_pem.clone()),
    };
    let c = ForwardConfig::new(
        "127.0.0.1:9",
        "localhost",
        pki.ca.cert_pem.as_str(),
        identity,
        UID,
        fx.dir().join("c"),
    );
    let e = Forwarder::start(fx.dir(), c).unwrap_err().to_string();
    assert!(e.contains("client-key"), "{e}");
    let key_body: String = other
        .key_pem
        .lines()
        .nth(1)
        .unwrap()
        .chars()
        .take(30)
        .collect();
    assert!(!e.contains(&key_body), "{e}");
}

/// G045: PL-4-2
/// Throughput and catch-up speed against rsyslog; prints the numbers. Run by hand:
/// `cargo test -p kawal-audit --test forward_rsyslog -- --ignored --nocapture`.
#[test]
#[ignore = "benchmark: prints throughput and catch-up numbers"]
fn forwarding_throughput_and_catch_up() {
    if rsyslog_missing().is_some() {
        return;
    }
    let n: u64 = std::env::var("KAWAL_FORWARD_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200_000);
    let fx = Fixture::new();
    let pki = Pki::new();
    // A backlog of `n` events (in batches of 1000, each ending with a checkpoint).
    {
        let log = fx.open();
        let mut i = 0;
        while i < n {
            log.append_batch((i..i + 1000).map(event).collect())
                .unwrap();
            i += 1000;
        }
        log.close().unwrap();
    }
    let local = fx.verify().unwrap();
    let mut collector = start_collector(&fx.dir().join("c"), &pki.server, &pki.ca.cert_pem);
    let start = Instant::now();
    let fwd = Forwarder::start(
        fx.dir(),
        config(&collector, &pki, &fx.dir().join("forward.cursor")),
    )
    .unwrap();
    let took = wait_confirmed(&fwd, local.last_seq, Duration::from_secs(600));
    let s = fwd.stop();
    println!(
        "throughput: {} entries in {:.2} s = {:.0} entries/s ({} confirmations, {} resumed sessions)",
        local.last_seq,
        took.as_secs_f64(),
        local.last_seq as f64 / took.as_secs_f64(),
        s.confirmations,
        s.resumed_sessions
    );
    let _ = start;

    // Catch-up: 1000 events/s, the collector down for 10 s, then back.
    let fwd = Forwarder::start(
        fx.dir(),
        config(&collector, &pki, &fx.dir().join("forward.cursor")),
    )
    .unwrap();
    let log = Arc::new(
        fx.open_with(AuditOptions {
            sinks: vec![Box::new(fwd.waker())],
            ..small_options()
        })
        .unwrap(),
    );
    let (mut backlog_at_restart, mut local_at_restart) = (0, 0);
    let mut restarted_at: Option<Instant> = None;
    let mut caught_up_after = None;
    let mut down = false;
    append_steadily(&log, 1000, Duration::from_secs(20), |t| {
        if !down && t >= Duration::from_secs(3) {
            collector.stop();
            down = true;
        } else if down && restarted_at.is_none() && t >= Duration::from_secs(13) {
            collector.restart();
            let s = fwd.status();
            (backlog_at_restart, local_at_restart) = (s.backlog_entries, s.local_seq);
            restarted_at = Some(Instant::now());
        } else if let Some(at) = restarted_at
            && caught_up_after.is_none()
            && fwd.status().cursor_seq >= local_at_restart
        {
            caught_up_after = Some(at.elapsed());
        }
    });
    let log = Arc::try_unwrap(log).unwrap();
    log.close().unwrap();
    let last = fx.verify().unwrap().last_seq;
    wait_confirmed(&fwd, last, Duration::from_secs(120));
    let caught_up = caught_up_after.expect("caught up while appending");
    let _ = fwd.stop();
    collector.stop();
    println!(
        "catch-up: backlog {backlog_at_restart} entries at restart (10 s outage at ~1100 \
         entries/s), confirmed {:.2} s after the restart, while appends went on",
        caught_up.as_secs_f64()
    );
    let v = verify_remote(&collector.out, UID, &fx.trusted(), Some(fx.dir())).unwrap();
    println!(
        "remote copy: {} entries, {} duplicates, passed {}",
        v.report.entries,
        v.report.duplicates,
        v.passed()
    );
    assert!(v.passed(), "{v:?}");
}
