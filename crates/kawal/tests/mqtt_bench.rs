//! kawal's MQTT listener against Mosquitto 2.0 in the same run (the numbers behind
//! `docs/BENCHMARKS.md`, "MQTT: kawal vs Mosquitto").
//!
//! Both brokers get the same sensors (enrolled at the real daemon through the API and EST),
//! the same mutual TLS (a required client certificate from kawal's sensor CA, the identity
//! from the certificate), the same topic lanes and no silent drops: Mosquitto's queue and
//! in-flight limits are lifted, and kawal's per-sensor rate, connection and handshake caps
//! are raised in the benchmark configuration so that both do all the work asked of them (the
//! flood measurement also runs kawal with its shipped limits). One difference stays and is
//! the point of kawal: every QoS 1 message is sealed in the store in a committed transaction
//! before its PUBACK, while Mosquitto keeps messages in memory and writes its store only at
//! shutdown (and every 30 minutes).
//!
//! `bench_mqtt_gateway_role` is setup b, the gateway role: sensors → kawal → an upstream
//! Mosquitto → a subscriber there, against sensors → a Mosquitto bridged to the same upstream
//! (what gateways built on Mosquitto do) → the same subscriber.
//!
//! `both_brokers_take_qos1_from_five_sensors_without_loss` is the CI smoke test. The
//! `bench_*` tests are ignored; `scripts/bench.sh mqtt` runs them in release.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr,
    clippy::disallowed_macros,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "test and benchmark"
)]

mod common;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::free_port;
use common::gateway::{Gateway, set};
use common::mosquitto::{BridgeTo, Mosquitto, ServerPki, server_pki, upstream_pki};
use kawal_gateway::client::{Client, ClientSettings, read_packet};
use mqtt_proto::v3::{Connect, ConnectReturnCode, Packet};
use rustls::HandshakeKind;
use rustls::pki_types::ServerName;
use rustls::pki_types::pem::PemObject as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ADMIN_PW: &str = "Sturdy-harbour-lantern-47";
/// The subscriber: a `reader` sensor at kawal, the one user allowed `kawal/+/up/#` at Mosquitto.
const READER: &str = "bench-reader";
/// Payload bytes per message.
const PAYLOAD: usize = 100;
/// Publishers in the throughput and latency runs.
const PUBLISHERS: usize = 10;

// ---------------------------------------------------------------------------------------------
// The two brokers

/// Which limits the daemon runs with.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Limits {
    /// Raised so that kawal, like Mosquitto, takes everything offered (per-sensor message and
    /// byte rates, connections and handshakes per source, in-flight and queued bytes).
    Raised,
    /// The shipped `[mqtt]` defaults (connections and handshakes per source, in-flight and
    /// queued bytes) except `messages-per-s`, raised: every packet a sensor sends costs a
    /// token, the subscriber's PUBACKs too, so with the default 500/s a QoS 1 reader cannot
    /// take more than ~500 messages/s (measured: 557/s delivered of 1,000/s offered, p99 7.8 s).
    Shipped,
}

fn bench_config(cfg: &mut toml::Table) {
    set(cfg, "mqtt", "max-connections", 100_000);
    set(cfg, "mqtt", "max-per-source", 100_000);
    set(cfg, "mqtt", "handshakes-per-source-per-s", 100_000);
    set(cfg, "mqtt", "messages-per-s", 1_000_000);
    set(cfg, "mqtt", "bytes-per-s", i64::from(u32::MAX));
    set(cfg, "mqtt", "inflight", 65_535);
    set(cfg, "mqtt", "max-queued-bytes", 1024 * 1024 * 1024);
    // No upstream here: every QoS 1 message stays sealed in the queue; give it room.
    set(cfg, "queue", "max-mib", 4096);
}

/// A broker under test: where it listens, its process, and what clients trust to verify it.
#[derive(Clone)]
struct Target {
    name: &'static str,
    addr: SocketAddr,
    pid: u32,
}

/// A sensor's credentials (from kawal's EST; Mosquitto trusts the same CA).
#[derive(Clone)]
struct Cred {
    name: String,
    cert_pem: String,
    key_pem: String,
}

/// The daemon and a Mosquitto configured like it.
struct Rig {
    gw: Gateway,
    mosq: Mosquitto,
    /// Both servers' CAs: the device CA (kawal's listener) and the test CA (Mosquitto's).
    trust: String,
    sensor_ca_pem: String,
    pki: ServerPki,
    kawal: Target,
    mosquitto: Target,
}

impl Rig {
    fn start(limits: Limits) -> Self {
        let gw = Gateway::start_with(|cfg| match limits {
            Limits::Raised => bench_config(cfg),
            Limits::Shipped => set(cfg, "mqtt", "messages-per-s", 1_000_000),
        });
        let sensor_ca_pem = admin_ready_sensor_ca(&gw);
        let dir = gw.tmp.path().join("mosquitto");
        let pki = server_pki(&dir.join("pki"));
        let mosq = Mosquitto::start(&dir, free_port(), &sensor_ca_pem, &pki, &[READER]);
        Self::assemble(gw, mosq, pki, sensor_ca_pem)
    }

    /// The rig around a started daemon and Mosquitto.
    fn assemble(gw: Gateway, mosq: Mosquitto, pki: ServerPki, sensor_ca_pem: String) -> Self {
        let trust = format!("{}{}", gw.ca_pem, pki.ca_pem);
        let kawal = Target {
            name: "kawal",
            addr: gw.mqtt,
            pid: daemon_pid(&gw),
        };
        let mosquitto = Target {
            name: "mosquitto",
            addr: SocketAddr::from(([127, 0, 0, 1], mosq.port)),
            pid: mosq.pid(),
        };
        Self {
            gw,
            mosq,
            trust,
            sensor_ca_pem,
            pki,
            kawal,
            mosquitto,
        }
    }

    fn targets(&self) -> [Target; 2] {
        [self.kawal.clone(), self.mosquitto.clone()]
    }

    /// Enrols `names`: one-time tokens from the API (one admin session), then EST from
    /// `threads` threads at once (each a sensor making its key here and sending its CSR).
    fn enrol(&self, names: &[String], role: Option<&str>, threads: usize) -> Vec<Cred> {
        let url = self.gw.url("");
        let mut api = self.gw.client();
        assert_eq!(
            api.login("admin", ADMIN_PW).status(),
            reqwest::StatusCode::OK
        );
        let tokens: Vec<(String, String)> = names
            .iter()
            .map(|n| (n.clone(), common::sensors::enroll(&mut api, n, role)))
            .collect();
        let chunk = tokens.len().div_ceil(threads.max(1)).max(1);
        std::thread::scope(|s| {
            let hs: Vec<_> = tokens
                .chunks(chunk)
                .map(|part| {
                    let url = url.clone();
                    s.spawn(move || {
                        part.iter()
                            .map(|(name, token)| {
                                let e =
                                    kawal::est::enroll(&url, &self.gw.ca_pem, name, token).unwrap();
                                Cred {
                                    name: name.clone(),
                                    cert_pem: e.cert_pem,
                                    key_pem: e.key_pem.to_string(),
                                }
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
        })
    }

    fn reader(&self) -> Cred {
        self.enrol(&[READER.to_owned()], Some("reader"), 1)
            .pop()
            .unwrap()
    }

    fn publishers(&self, n: usize, prefix: &str) -> Vec<Cred> {
        let names: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}")).collect();
        self.enrol(&names, None, 4)
    }

    /// A rustls configuration for `c`, trusting both servers' CAs.
    fn tls(&self, c: &Cred) -> Arc<rustls::ClientConfig> {
        kawal::client::sim::sensor_tls(&self.trust, &c.cert_pem, &c.key_pem).unwrap()
    }

    /// A sensor's client configuration offering only `groups`, never resuming.
    fn tls_with(
        &self,
        c: &Cred,
        groups: &[&'static dyn rustls::crypto::SupportedKxGroup],
    ) -> Arc<rustls::ClientConfig> {
        let provider = rustls::crypto::CryptoProvider {
            kx_groups: groups.to_vec(),
            ..rustls::crypto::aws_lc_rs::default_provider()
        };
        let mut cfg =
            (*kawal::client::sim::sensor_tls_with(&self.trust, &c.cert_pem, &c.key_pem, provider)
                .unwrap())
            .clone();
        cfg.resumption = rustls::client::Resumption::disabled();
        Arc::new(cfg)
    }

    fn settings(&self, t: &Target, c: &Cred) -> ClientSettings {
        ClientSettings {
            addr: t.addr,
            server_name: "localhost".into(),
            tls: self.tls(c),
            client_id: c.name.clone(),
            keep_alive: 300,
        }
    }
}

/// Replaces the daemon's first admin password and fetches its sensor CA (PEM).
fn admin_ready_sensor_ca(gw: &Gateway) -> String {
    drop(gw.admin_ready(ADMIN_PW));
    let http = common::gateway::http_client(&gw.ca_pem, None);
    let r = http.get(gw.url("/api/v1/sensors/ca")).send().unwrap();
    assert!(r.status().is_success(), "GET /api/v1/sensors/ca");
    r.text().unwrap()
}

/// The daemon's process ID (the `kawal run` whose command line names this config).
fn daemon_pid(gw: &Gateway) -> u32 {
    let config = gw.config.to_str().unwrap().as_bytes().to_vec();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
        if args.contains(&&b"run"[..]) && args.contains(&config.as_slice()) {
            return pid;
        }
    }
    panic!("daemon process not found");
}

// ---------------------------------------------------------------------------------------------
// Process figures

/// User + system CPU seconds of a process (`/proc/<pid>/stat`).
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let (_, after) = stat.rsplit_once(") ").unwrap();
    let f: Vec<&str> = after.split(' ').collect();
    // Fields 14 and 15 of the line are the 12th and 13th after the command name.
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / clock_tick()
}

fn clock_tick() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Resident set size in KiB (`VmRSS` of `/proc/<pid>/status`).
fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// CPU seconds of the broker (one process or several: in the gateway role the upstream
/// counts too) and of this process (the load generator) over a run.
struct CpuMark {
    brokers: Vec<(String, f64)>,
    g0: f64,
}

impl CpuMark {
    fn new(t: &Target) -> Self {
        Self::of(&[t.pid])
    }

    fn of(pids: &[u32]) -> Self {
        Self {
            brokers: pids
                .iter()
                .map(|p| {
                    let p = p.to_string();
                    let c = cpu_seconds(&p);
                    (p, c)
                })
                .collect(),
            g0: cpu_seconds("self"),
        }
    }

    /// (broker, generator) CPU seconds since `new`; the broker's summed over its processes.
    fn take(&self) -> (f64, f64) {
        let (each, g) = self.take_each();
        (each.iter().sum(), g)
    }

    /// (each broker process, generator) CPU seconds since `new`.
    fn take_each(&self) -> (Vec<f64>, f64) {
        (
            self.brokers
                .iter()
                .map(|(p, c0)| cpu_seconds(p) - c0)
                .collect(),
            cpu_seconds("self") - self.g0,
        )
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The `q` quantile (nearest rank) of `v` (sorted here).
fn quantile(v: &mut [Duration], q: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort_unstable();
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

// ---------------------------------------------------------------------------------------------
// The load generator: N publishers, one subscriber on `kawal/+/up/#`

/// What to offer.
#[derive(Clone, Copy)]
struct Load {
    /// Seconds of publishing.
    secs: f64,
    /// Total messages per second; `None` = as fast as the broker takes them.
    rate: Option<f64>,
    qos1: bool,
    /// QoS 1 messages in flight per publisher (unacknowledged) at most.
    window: usize,
    /// Messages per publisher at most.
    max_per_pub: Option<u64>,
}

/// What happened.
#[derive(Default)]
struct Outcome {
    sent: u64,
    acked: u64,
    /// Messages the subscriber got (with duplicates), and without.
    received: u64,
    distinct: u64,
    /// Acknowledged (QoS 1) or sent (QoS 0) messages the subscriber never got.
    lost: u64,
    /// From the first publish to the last message at the subscriber.
    span: Duration,
    /// Publishing time.
    publish_span: Duration,
    /// End-to-end latency of every message received.
    lat: Vec<Duration>,
    /// Publishers whose connection failed, and whether the subscriber's closed.
    pub_errors: u64,
    reader_closed: bool,
    /// The subscriber stopped waiting before it had been quiet long enough (the drain limit).
    drain_cut: bool,
    broker_cpu: f64,
    /// The broker's CPU per process, in the order of [`Sink::pids`].
    broker_cpu_each: Vec<f64>,
    gen_cpu: f64,
}

impl Outcome {
    fn delivered_per_s(&self) -> f64 {
        self.distinct as f64 / self.span.as_secs_f64()
    }

    fn offered_per_s(&self) -> f64 {
        self.sent as f64 / self.publish_span.as_secs_f64()
    }

    fn describe(&mut self) -> String {
        let p50 = quantile(&mut self.lat, 0.5);
        let p99 = quantile(&mut self.lat, 0.99);
        format!(
            "sent {} ({:.0}/s over {:.1} s), acked {}, received {} ({} distinct) = {:.0}/s \
             delivered, lost {}, e2e p50 {} p99 {}, publisher errors {}, subscriber closed {}; \
             CPU broker {:.2} s, generator {:.2} s",
            self.sent,
            self.offered_per_s(),
            self.publish_span.as_secs_f64(),
            self.acked,
            self.received,
            self.distinct,
            self.delivered_per_s(),
            self.lost,
            ms(p50),
            ms(p99),
            self.pub_errors,
            self.reader_closed,
            self.broker_cpu,
            self.gen_cpu
        )
    }
}

/// `t_us(16) pub(4) seq(10)`, padded with spaces to [`PAYLOAD`] bytes.
fn payload(epoch: Instant, publisher: usize, seq: u64) -> Bytes {
    let t = epoch.elapsed().as_micros();
    let mut p = format!("{t:<16}{publisher:<4}{seq:<10}").into_bytes();
    p.resize(PAYLOAD, b' ');
    Bytes::from(p)
}

fn parse(p: &[u8]) -> Option<(u64, usize, u64)> {
    let field = |r: std::ops::Range<usize>| -> Option<u64> {
        std::str::from_utf8(p.get(r)?).ok()?.trim().parse().ok()
    };
    Some((
        field(0..16)?,
        usize::try_from(field(16..20)?).ok()?,
        field(20..30)?,
    ))
}

struct PubResult {
    sent: u64,
    acked: Vec<u64>,
    error: bool,
}

async fn publisher(
    c: Arc<Client>,
    idx: usize,
    topic: String,
    load: Load,
    epoch: Instant,
    per_pub_interval: Option<Duration>,
) -> PubResult {
    let end = Instant::now() + Duration::from_secs_f64(load.secs);
    let mut tick = per_pub_interval.map(|i| {
        let mut t = tokio::time::interval(i);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        t
    });
    let mut out = PubResult {
        sent: 0,
        acked: Vec::new(),
        error: false,
    };
    let mut window: VecDeque<(u64, tokio::sync::oneshot::Receiver<()>)> = VecDeque::new();
    loop {
        if let Some(t) = tick.as_mut() {
            t.tick().await;
        }
        if Instant::now() >= end || load.max_per_pub.is_some_and(|m| out.sent >= m) {
            break;
        }
        while window.len() >= load.window.max(1) {
            let (seq, rx) = window.pop_front().unwrap();
            match tokio::time::timeout(Duration::from_secs(30), rx).await {
                Ok(Ok(())) => out.acked.push(seq),
                _ => out.error = true,
            }
        }
        if out.error {
            break;
        }
        let seq = out.sent;
        match c.publish(&topic, payload(epoch, idx, seq), load.qos1).await {
            Ok(Some(rx)) => window.push_back((seq, rx)),
            Ok(None) => {}
            Err(_) => {
                out.error = true;
                break;
            }
        }
        out.sent += 1;
        if tick.is_none() && out.sent.is_multiple_of(64) {
            // Flat out: let the connection's writer and reader run.
            tokio::task::yield_now().await;
        }
    }
    for (seq, rx) in window {
        match tokio::time::timeout(Duration::from_secs(30), rx).await {
            Ok(Ok(())) => out.acked.push(seq),
            _ => out.error = true,
        }
    }
    out
}

/// Connects `reader` (subscribed to `kawal/+/up/#`) and `pubs` to `t`, runs `load`, waits
/// until the subscriber has been quiet for a second, and tallies.
async fn run_load(rig: &Rig, t: &Target, reader: &Cred, pubs: &[Cred], load: Load) -> Outcome {
    run_load_during(rig, t, reader, pubs, load, None).await.0
}

/// A flood to run while the load runs: bad client configurations, attempts per second, and a
/// sensor that tries to connect a second into it.
struct FloodSpec {
    configs: [Arc<rustls::ClientConfig>; 2],
    rate: f64,
    late: Cred,
}

/// Where the messages are counted: the subscriber's connection and filter, how long it must
/// be quiet before a run ends, and which processes' CPU is the broker's.
struct Sink {
    settings: ClientSettings,
    filter: String,
    /// The run ends once publishing is over and nothing arrived for this long...
    quiet: Duration,
    /// ...or this long after publishing ended, whichever comes first (keeps a run bounded).
    drain: Duration,
    pids: Vec<u32>,
}

impl Sink {
    /// The broker alone (setup a): `reader` on `kawal/+/up/#` at the broker under test.
    fn local(rig: &Rig, t: &Target, reader: &Cred) -> Self {
        Self {
            settings: rig.settings(t, reader),
            filter: "kawal/+/up/#".into(),
            quiet: Duration::from_secs(1),
            drain: Duration::from_secs(600),
            pids: vec![t.pid],
        }
    }
}

/// As [`run_load`]; with `flood`, the sensors connect first, then the flood starts, and a
/// second later the publishing (the flood lasts until it ends). Returns the flood's tally
/// and whether the late sensor could connect during it.
async fn run_load_during(
    rig: &Rig,
    t: &Target,
    reader: &Cred,
    pubs: &[Cred],
    load: Load,
    flood_spec: Option<FloodSpec>,
) -> (Outcome, Option<(Flood, Result<(), String>)>) {
    run_load_via(rig, t, &Sink::local(rig, t, reader), pubs, load, flood_spec).await
}

/// As [`run_load_during`], counting at `sink`.
async fn run_load_via(
    rig: &Rig,
    t: &Target,
    sink: &Sink,
    pubs: &[Cred],
    load: Load,
    flood_spec: Option<FloodSpec>,
) -> (Outcome, Option<(Flood, Result<(), String>)>) {
    let sub = Client::connect(&sink.settings)
        .await
        .unwrap_or_else(|e| panic!("{}: subscriber: {e}", t.name));
    sub.subscribe(&sink.filter).await.unwrap();
    let mut clients = Vec::new();
    for c in pubs {
        let cl = Client::connect(&rig.settings(t, c))
            .await
            .unwrap_or_else(|e| panic!("{}: {}: {e}", t.name, c.name));
        clients.push((c.name.clone(), Arc::new(cl)));
    }
    let mut flooding = None;
    if let Some(f) = flood_spec {
        let stop = Arc::new(AtomicBool::new(false));
        let h = tokio::spawn(flood(t.addr, f.configs, f.rate, Arc::clone(&stop)));
        tokio::time::sleep(Duration::from_secs(1)).await;
        let late = match Client::connect(&rig.settings(t, &f.late)).await {
            Ok(c) => {
                c.disconnect().await;
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        };
        flooding = Some((h, stop, late));
    }
    let epoch = Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    let n = pubs.len();
    let sub_done = Arc::clone(&done);
    let (quiet, drain) = (sink.quiet, sink.drain);
    let reader_task = tokio::spawn(async move {
        let mut seen: Vec<Vec<bool>> = vec![Vec::new(); n];
        let (mut received, mut distinct) = (0u64, 0u64);
        let mut lat = Vec::new();
        let mut last = epoch;
        let mut closed = false;
        let mut cut = false;
        let mut done_at: Option<Instant> = None;
        let mut rx = sub.incoming.lock().await;
        loop {
            if sub_done.load(Ordering::Relaxed) {
                let at = *done_at.get_or_insert_with(Instant::now);
                if at.elapsed() > drain {
                    cut = true;
                    break;
                }
            }
            match tokio::time::timeout(quiet, rx.recv()).await {
                Ok(Some(m)) => {
                    let now = Instant::now();
                    last = now;
                    received += 1;
                    if let Some((t_us, p, seq)) = parse(&m.payload) {
                        let sent_at = epoch + Duration::from_micros(t_us);
                        lat.push(now.saturating_duration_since(sent_at));
                        if let Some(bits) = seen.get_mut(p) {
                            let i = seq as usize;
                            if bits.len() <= i {
                                bits.resize(i + 1, false);
                            }
                            if !bits[i] {
                                bits[i] = true;
                                distinct += 1;
                            }
                        }
                    }
                }
                Ok(None) => {
                    closed = true;
                    break;
                }
                Err(_) if sub_done.load(Ordering::Relaxed) => break,
                Err(_) => {}
            }
        }
        drop(rx);
        (seen, received, distinct, lat, last, closed, cut, sub)
    });
    let cpu = CpuMark::of(&sink.pids);
    let interval = load
        .rate
        .map(|r| Duration::from_secs_f64(n as f64 / r.max(1.0)));
    let start = Instant::now();
    let tasks: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(i, (name, c))| {
            tokio::spawn(publisher(
                Arc::clone(c),
                i,
                format!("kawal/{name}/up/telemetry"),
                load,
                epoch,
                interval,
            ))
        })
        .collect();
    let mut results = Vec::new();
    for h in tasks {
        results.push(h.await.unwrap());
    }
    let publish_span = start.elapsed();
    let flood_result = match flooding {
        Some((h, stop, late)) => {
            stop.store(true, Ordering::Relaxed);
            Some((h.await.unwrap(), late))
        }
        None => None,
    };
    done.store(true, Ordering::Relaxed);
    let (seen, received, distinct, lat, last, reader_closed, drain_cut, sub) =
        reader_task.await.unwrap();
    let (broker_cpu_each, gen_cpu) = cpu.take_each();
    let mut o = Outcome {
        received,
        distinct,
        lat,
        reader_closed,
        drain_cut,
        broker_cpu: broker_cpu_each.iter().sum(),
        broker_cpu_each,
        gen_cpu,
        publish_span,
        span: last.saturating_duration_since(start),
        ..Outcome::default()
    };
    for (i, r) in results.iter().enumerate() {
        o.sent += r.sent;
        o.pub_errors += u64::from(r.error);
        let got = |seq: u64| seen[i].get(seq as usize).copied().unwrap_or(false);
        if load.qos1 {
            o.acked += r.acked.len() as u64;
            o.lost += r.acked.iter().filter(|s| !got(**s)).count() as u64;
        } else {
            o.lost += (0..r.sent).filter(|s| !got(*s)).count() as u64;
        }
    }
    for (_, c) in clients {
        if let Ok(c) = Arc::try_unwrap(c) {
            c.disconnect().await;
        }
    }
    sub.disconnect().await;
    // Let both sides close before the next run reuses the certificates (kawal would take a
    // second live connection with the same certificate for a clone).
    tokio::time::sleep(Duration::from_millis(300)).await;
    (o, flood_result)
}

// ---------------------------------------------------------------------------------------------
// Raw handshakes

/// TCP, TLS with `tls`, CONNECT, CONNACK, DISCONNECT; returns the kind of TLS handshake.
async fn connect_once(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    client_id: &str,
) -> Result<(HandshakeKind, String), String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("tcp: {e}"))?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let connector = tokio_rustls::TlsConnector::from(tls);
    let name = ServerName::try_from("localhost").unwrap();
    let mut s = tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
        .await
        .map_err(|_| "tls: timeout".to_owned())?
        .map_err(|e| format!("tls: {e}"))?;
    let kind = s.get_ref().1.handshake_kind().ok_or("no handshake kind")?;
    let group = s
        .get_ref()
        .1
        .negotiated_key_exchange_group()
        .map_or_else(|| "none".to_owned(), |g| format!("{:?}", g.name()));
    let connect = Packet::Connect(Connect::new(Arc::from(client_id), 60));
    s.write_all(connect.encode().unwrap().as_ref())
        .await
        .map_err(|e| format!("CONNECT: {e}"))?;
    match tokio::time::timeout(Duration::from_secs(10), read_packet(&mut s)).await {
        Ok(Ok(Packet::Connack(c))) if c.code == ConnectReturnCode::Accepted => {}
        Ok(other) => return Err(format!("CONNACK: {other:?}")),
        Err(_) => return Err("CONNACK: timeout".into()),
    }
    let _ = s
        .write_all(Packet::Disconnect.encode().unwrap().as_ref())
        .await;
    let _ = s.shutdown().await;
    // Wait for the server to close, so the certificate is free for its next connection.
    let mut b = [0u8; 64];
    let _ = tokio::time::timeout(Duration::from_secs(2), s.read(&mut b)).await;
    Ok((kind, group))
}

#[derive(Default, Debug)]
struct Handshakes {
    full: u64,
    resumed: u64,
    failed: u64,
    first_error: Option<String>,
    /// The key exchange group of the first handshake.
    group: Option<String>,
    secs: f64,
    broker_cpu: f64,
    gen_cpu: f64,
}

/// `tasks` loops of [`connect_once`] for `secs`, each over its own sensors in turn, with
/// `configs[i]` per sensor.
async fn handshakes(
    t: &Target,
    creds: &[Cred],
    configs: &[Arc<rustls::ClientConfig>],
    tasks: usize,
    secs: f64,
) -> Handshakes {
    let cpu = CpuMark::new(t);
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    let hs: Vec<_> = (0..tasks)
        .map(|k| {
            let mine: Vec<(String, Arc<rustls::ClientConfig>)> = creds
                .iter()
                .zip(configs)
                .enumerate()
                .filter(|(i, _)| i % tasks == k)
                .map(|(_, (c, cfg))| (c.name.clone(), Arc::clone(cfg)))
                .collect();
            let addr = t.addr;
            tokio::spawn(async move {
                let mut h = Handshakes::default();
                let mut i = 0;
                while Instant::now() < end {
                    let (name, cfg) = &mine[i % mine.len()];
                    i += 1;
                    match connect_once(addr, Arc::clone(cfg), name).await {
                        Ok((kind, group)) => {
                            if kind == HandshakeKind::Resumed {
                                h.resumed += 1;
                            } else {
                                h.full += 1;
                            }
                            h.group.get_or_insert(group);
                        }
                        Err(e) => {
                            h.failed += 1;
                            h.first_error.get_or_insert(e);
                        }
                    }
                }
                h
            })
        })
        .collect();
    let mut all = Handshakes::default();
    for h in hs {
        let h = h.await.unwrap();
        all.full += h.full;
        all.resumed += h.resumed;
        all.failed += h.failed;
        if all.first_error.is_none() {
            all.first_error = h.first_error;
        }
        if all.group.is_none() {
            all.group = h.group;
        }
    }
    all.secs = start.elapsed().as_secs_f64();
    (all.broker_cpu, all.gen_cpu) = cpu.take();
    all
}

// ---------------------------------------------------------------------------------------------
// The CI smoke test

/// G045: DS-1-2
/// Both the daemon and a Mosquitto configured like it take 1,000 QoS 1 messages from 5
/// enrolled sensors over mutual TLS, and the subscriber gets every acknowledged one.
#[test]
fn both_brokers_take_qos1_from_five_sensors_without_loss() {
    let rig = Rig::start(Limits::Raised);
    let reader = rig.reader();
    let pubs = rig.publishers(5, "smoke");
    let rt = runtime();
    for t in rig.targets() {
        let load = Load {
            secs: 15.0,
            rate: None,
            qos1: true,
            window: 32,
            max_per_pub: Some(200),
        };
        let mut o = rt.block_on(run_load(&rig, &t, &reader, &pubs, load));
        let report = format!("{}: {}", t.name, o.describe());
        eprintln!("{report}");
        assert_eq!(o.sent, 1000, "{report}");
        assert_eq!(o.acked, 1000, "{report}");
        assert_eq!(o.lost, 0, "{report}");
        assert_eq!(o.distinct, 1000, "{report}");
        assert_eq!(o.pub_errors, 0, "{report}");
    }
}

// ---------------------------------------------------------------------------------------------
// The benchmarks

fn ratio(k: f64, m: f64) -> String {
    if m == 0.0 {
        "n/a".into()
    } else {
        format!("{:.2}x", k / m)
    }
}

fn bench_secs() -> f64 {
    env_u64("KAWAL_BENCH_MQTT_S", 10) as f64
}

/// 1. QoS 0 throughput and 2. QoS 1 throughput without loss: 10 publishers, 1 subscriber.
#[test]
#[ignore = "benchmark: scripts/bench.sh mqtt"]
fn bench_mqtt_throughput() {
    let secs = bench_secs();
    let rt = runtime();
    // A fresh pair per QoS, so kawal's queue of sealed QoS 1 messages starts empty.
    let rig = Rig::start(Limits::Raised);
    let reader = rig.reader();
    let pubs = rig.publishers(PUBLISHERS, "pub");
    let mut rates = Vec::new();
    for t in rig.targets() {
        let load = Load {
            secs,
            rate: None,
            qos1: false,
            window: 1,
            max_per_pub: None,
        };
        let mut o = rt.block_on(run_load(&rig, &t, &reader, &pubs, load));
        eprintln!(
            "BENCH 1. QoS 0 flat out, {PUBLISHERS} publishers -> 1 subscriber, {PAYLOAD} B, \
             {secs} s | {}: {}",
            t.name,
            o.describe()
        );
        rates.push(o.delivered_per_s());
    }
    eprintln!(
        "BENCH 1. QoS 0 delivered/s: kawal {:.0}, mosquitto {:.0}, ratio {} (target >= 1.5x)",
        rates[0],
        rates[1],
        ratio(rates[0], rates[1])
    );
    drop(rig);

    let rig = Rig::start(Limits::Raised);
    let reader = rig.reader();
    let pubs = rig.publishers(PUBLISHERS, "pub");
    let window = env_u64("KAWAL_BENCH_MQTT_WINDOW", 64) as usize;
    let mut best = Vec::new();
    for t in rig.targets() {
        // Flat out first; if anything acknowledged was lost, pace at 80 % of what arrived.
        let mut rate = None;
        let mut lossless = 0.0;
        for attempt in 0..4 {
            let load = Load {
                secs,
                rate,
                qos1: true,
                window,
                max_per_pub: None,
            };
            let mut o = rt.block_on(run_load(&rig, &t, &reader, &pubs, load));
            eprintln!(
                "BENCH 2. QoS 1, window {window}/publisher, offered {} | {}: {}",
                rate.map_or("flat out".to_owned(), |r: f64| format!("{r:.0}/s")),
                t.name,
                o.describe()
            );
            if o.lost == 0 && o.pub_errors == 0 && !o.reader_closed {
                lossless = o.delivered_per_s();
                break;
            }
            if attempt == 3 {
                break;
            }
            rate = Some(o.delivered_per_s() * 0.8);
        }
        best.push(lossless);
    }
    eprintln!(
        "BENCH 2. QoS 1 highest lossless delivered/s: kawal {:.0}, mosquitto {:.0}, ratio {} \
         (target >= 1.0x)",
        best[0],
        best[1],
        ratio(best[0], best[1])
    );
}

/// 3. End-to-end latency at fixed rates.
#[test]
#[ignore = "benchmark: scripts/bench.sh mqtt"]
fn bench_mqtt_latency() {
    let secs = env_u64("KAWAL_BENCH_MQTT_LAT_S", 5) as f64;
    let rt = runtime();
    let rig = Rig::start(Limits::Raised);
    let reader = rig.reader();
    let pubs = rig.publishers(PUBLISHERS, "pub");
    for qos1 in [true, false] {
        for rate in [1_000.0, 5_000.0] {
            let mut p99 = Vec::new();
            for t in rig.targets() {
                let load = Load {
                    secs,
                    rate: Some(rate),
                    qos1,
                    window: 1024,
                    max_per_pub: None,
                };
                let mut o = rt.block_on(run_load(&rig, &t, &reader, &pubs, load));
                let report = o.describe();
                let (p50, q99) = (quantile(&mut o.lat, 0.5), quantile(&mut o.lat, 0.99));
                eprintln!(
                    "BENCH 3. QoS {} at {rate:.0}/s | {}: p50 {} p99 {} | {report}",
                    u8::from(qos1),
                    t.name,
                    ms(p50),
                    ms(q99)
                );
                p99.push(q99.as_secs_f64());
            }
            eprintln!(
                "BENCH 3. QoS {} at {rate:.0}/s p99: kawal/mosquitto {} (target <= 1.0x)",
                u8::from(qos1),
                ratio(p99[0], p99[1])
            );
        }
    }
}

/// How long the memory figure lets each broker settle before it reads the RSS: longer than
/// kawal's heap trim period (10 s).
const SETTLE: Duration = Duration::from_secs(11);

/// 4. Memory per idle connection and 6. the idle daemon's RSS.
#[test]
#[ignore = "benchmark: scripts/bench.sh mqtt"]
fn bench_mqtt_memory() {
    let n = env_u64("KAWAL_BENCH_MQTT_CONNS", 2_000) as usize;
    let rt = runtime();
    let rig = Rig::start(Limits::Raised);
    std::thread::sleep(Duration::from_secs(3));
    let (ki, mi) = (rss_kib(rig.kawal.pid), rss_kib(rig.mosquitto.pid));
    eprintln!(
        "BENCH 6. idle RSS, no sensors (kawal: whole daemon with the API, one admin session): \
         kawal {:.1} MiB, mosquitto {:.1} MiB (target: kawal <= 15 MiB)",
        ki as f64 / 1024.0,
        mi as f64 / 1024.0
    );
    let t0 = Instant::now();
    let creds = rig.publishers(n, "idle");
    eprintln!(
        "BENCH 4. enrolled {n} sensors (tokens from the API, EST from 4 threads) in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let mut per = Vec::new();
    let fds_before = open_fds();
    for t in rig.targets() {
        std::thread::sleep(Duration::from_secs(2));
        // Settled before and after alike: kawal hands freed heap pages back every 10 s.
        std::thread::sleep(SETTLE);
        let before = rss_kib(t.pid);
        let cpu = CpuMark::new(&t);
        let start = Instant::now();
        let clients = rt.block_on(async {
            let sem = Arc::new(tokio::sync::Semaphore::new(32));
            let hs: Vec<_> = creds
                .iter()
                .map(|c| {
                    let s = rig.settings(&t, c);
                    let sem = Arc::clone(&sem);
                    tokio::spawn(async move {
                        let _p = sem.acquire_owned().await.unwrap();
                        Client::connect(&s).await
                    })
                })
                .collect();
            let mut v = Vec::new();
            for h in hs {
                v.push(
                    h.await
                        .unwrap()
                        .unwrap_or_else(|e| panic!("{}: {e}", t.name)),
                );
            }
            v
        });
        let took = start.elapsed().as_secs_f64();
        let (bc, gc) = cpu.take();
        std::thread::sleep(SETTLE);
        let after = rss_kib(t.pid);
        let per_conn = (after.saturating_sub(before)) as f64 * 1024.0 / n as f64;
        eprintln!(
            "BENCH 4. {n} idle mTLS connections | {}: RSS {:.1} -> {:.1} MiB, {:.1} KiB per \
             connection; connected in {took:.1} s (32 at a time) = {:.0}/s; CPU broker {bc:.2} s, \
             generator {gc:.2} s",
            t.name,
            before as f64 / 1024.0,
            after as f64 / 1024.0,
            per_conn / 1024.0,
            n as f64 / took
        );
        per.push(per_conn);
        // For looking at the broker's memory from outside while the connections stay open.
        let hold = env_u64("KAWAL_BENCH_MQTT_HOLD_S", 0);
        if hold > 0 {
            eprintln!("BENCH 4. {}: holding {hold} s (pid {})", t.name, t.pid);
            std::thread::sleep(Duration::from_secs(hold));
        }
        rt.block_on(async {
            for c in clients {
                c.disconnect().await;
            }
            // Until the sockets are closed (bounded): with N = 10,000 the next broker's
            // connections would not fit in the descriptor limit beside them.
            let deadline = Instant::now() + Duration::from_secs(120);
            while open_fds() > fds_before + 64 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            eprintln!(
                "BENCH 4. {}: descriptors open after disconnecting: {} (before: {fds_before})",
                t.name,
                open_fds()
            );
        });
    }
    eprintln!(
        "BENCH 4. bytes per idle connection: kawal/mosquitto {} (target <= 0.5x)",
        ratio(per[0], per[1])
    );
}

/// Descriptors this process has open.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count)
}

/// 5. Full handshakes per second (no resumption) and whether resumption works.
#[test]
#[ignore = "benchmark: scripts/bench.sh mqtt"]
fn bench_mqtt_handshakes() {
    let secs = env_u64("KAWAL_BENCH_MQTT_HS_S", 5) as f64;
    let tasks = 8;
    let rt = runtime();
    let rig = Rig::start(Limits::Raised);
    let creds = rig.publishers(64, "hs");
    // The compared figure: the same handshake on both sides. Mosquitto's OpenSSL negotiates
    // X25519 with this client; kawal would negotiate the hybrid X25519MLKEM768 first (its
    // default), which costs both ends more and is shown for information.
    let x25519: Vec<_> = creds
        .iter()
        .map(|c| rig.tls_with(c, &[rustls::crypto::aws_lc_rs::kx_group::X25519]))
        .collect();
    let mut full_rates = Vec::new();
    for t in rig.targets() {
        let h = rt.block_on(handshakes(&t, &creds, &x25519, tasks, secs));
        full_rates.push(h.full as f64 / h.secs);
        print_handshakes(
            &t,
            "full mTLS handshakes + CONNECT/CONNACK, no resumption, X25519",
            &h,
        );
        if t.name == "kawal" {
            let hybrid: Vec<_> = creds
                .iter()
                .map(|c| rig.tls_with(c, rustls::crypto::aws_lc_rs::DEFAULT_KX_GROUPS))
                .collect();
            let h = rt.block_on(handshakes(&t, &creds, &hybrid, tasks, secs));
            print_handshakes(
                &t,
                "information: the same with the client's default groups (hybrid first)",
                &h,
            );
        }
        // Resumption: one configuration per sensor kept across its connections.
        let resume: Vec<_> = creds.iter().map(|c| rig.tls(c)).collect();
        let h = rt.block_on(handshakes(&t, &creds, &resume, tasks, secs));
        print_handshakes(&t, "with resumption (rustls session store per sensor)", &h);
    }
    eprintln!(
        "BENCH 5. full handshakes/s, same key exchange (X25519): kawal/mosquitto {} (target >= 2x)",
        ratio(full_rates[0], full_rates[1])
    );
}

fn print_handshakes(t: &Target, what: &str, h: &Handshakes) {
    let done = h.full + h.resumed;
    eprintln!(
        "BENCH 5. {what}, 8 at a time | {}: {:.0}/s ({} full, {} resumed, {} failed{}; group \
         {}); CPU broker {:.2} s = {:.0} µs per handshake, generator {:.2} s = {:.0} µs",
        t.name,
        done as f64 / h.secs,
        h.full,
        h.resumed,
        h.failed,
        h.first_error
            .as_deref()
            .map_or(String::new(), |e| format!(", first: {e}")),
        h.group.as_deref().unwrap_or("?"),
        h.broker_cpu,
        h.broker_cpu / done.max(1) as f64 * 1e6,
        h.gen_cpu,
        h.gen_cpu / done.max(1) as f64 * 1e6,
    );
}

/// A flood of bad handshakes: half without a client certificate, half with one from another
/// CA. Counts attempts made and how they ended.
#[derive(Default, Debug)]
struct Flood {
    attempts: u64,
    tcp_refused: u64,
    tls_refused: u64,
    /// Handshakes the client finished (TLS 1.3: the server judges the certificate after the
    /// client's Finished) and then saw closed.
    closed_after: u64,
    /// Connections still open after 2 s without an error: none expected.
    open: u64,
}

async fn flood_once(addr: SocketAddr, tls: Arc<rustls::ClientConfig>) -> u8 {
    let Ok(Ok(tcp)) =
        tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr)).await
    else {
        return 0;
    };
    let connector = tokio_rustls::TlsConnector::from(tls);
    let name = ServerName::try_from("localhost").unwrap();
    let Ok(Ok(mut s)) =
        tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp)).await
    else {
        return 1;
    };
    let mut b = [0u8; 16];
    match tokio::time::timeout(Duration::from_secs(2), s.read(&mut b)).await {
        Ok(_) => 2,
        Err(_) => 3,
    }
}

async fn flood(
    addr: SocketAddr,
    configs: [Arc<rustls::ClientConfig>; 2],
    rate: f64,
    stop: Arc<AtomicBool>,
) -> Flood {
    let counts: Arc<[AtomicU64; 4]> = Arc::new(Default::default());
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = tokio::task::JoinSet::new();
    let mut attempts = 0u64;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let cfg = Arc::clone(&configs[(attempts % 2) as usize]);
        attempts += 1;
        let counts = Arc::clone(&counts);
        tasks.spawn(async move {
            let k = flood_once(addr, cfg).await;
            counts[usize::from(k)].fetch_add(1, Ordering::Relaxed);
        });
    }
    while tasks.join_next().await.is_some() {}
    Flood {
        attempts,
        tcp_refused: counts[0].load(Ordering::Relaxed),
        tls_refused: counts[1].load(Ordering::Relaxed),
        closed_after: counts[2].load(Ordering::Relaxed),
        open: counts[3].load(Ordering::Relaxed),
    }
}

/// 7. The sensors' latency under a flood of 500 bad handshakes/s from the same machine.
#[test]
#[ignore = "benchmark: scripts/bench.sh mqtt"]
fn bench_mqtt_flood() {
    let secs = bench_secs();
    let flood_rate = env_u64("KAWAL_BENCH_MQTT_FLOOD_RATE", 500) as f64;
    let rt = runtime();
    for limits in [Limits::Shipped, Limits::Raised] {
        let rig = Rig::start(limits);
        let reader = rig.reader();
        let pubs = rig.publishers(PUBLISHERS, "pub");
        let late = rig.publishers(1, "late").pop().unwrap();
        let bad = rig.gw.tmp.path().join("rogue");
        let (rogue_cert, rogue_key) = common::sensors::other_ca_sensor(&bad, "rogue-sensor");
        let rogue = kawal::client::sim::sensor_tls(
            &rig.trust,
            &std::fs::read_to_string(&rogue_cert).unwrap(),
            &std::fs::read_to_string(&rogue_key).unwrap(),
        )
        .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls::pki_types::CertificateDer::pem_slice_iter(rig.trust.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let no_cert = Arc::new(
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
        );
        let label = match limits {
            Limits::Shipped => "kawal with its shipped [mqtt] limits (messages-per-s raised)",
            Limits::Raised => "kawal with the benchmark's raised limits",
        };
        let targets: Vec<Target> = if limits == Limits::Shipped {
            vec![rig.kawal.clone()]
        } else {
            rig.targets().to_vec()
        };
        for t in targets {
            let name = if t.name == "kawal" {
                label
            } else {
                "mosquitto"
            };
            let load = Load {
                secs,
                rate: Some(1_000.0),
                qos1: true,
                window: 1024,
                max_per_pub: None,
            };
            let mut quiet = rt.block_on(run_load(&rig, &t, &reader, &pubs, load));
            let quiet_p99 = quantile(&mut quiet.lat, 0.99);
            eprintln!(
                "BENCH 7. quiet, QoS 1 at 1000/s | {name}: {}",
                quiet.describe()
            );
            let spec = FloodSpec {
                configs: [Arc::clone(&no_cert), Arc::clone(&rogue)],
                rate: flood_rate,
                late: late.clone(),
            };
            let (mut loud, f) =
                rt.block_on(run_load_during(&rig, &t, &reader, &pubs, load, Some(spec)));
            let (f, late_ok) = f.unwrap();
            let loud_p99 = quantile(&mut loud.lat, 0.99);
            eprintln!(
                "BENCH 7. flood {flood_rate:.0} bad handshakes/s ({} attempts: {} refused at \
                 TCP/timeout, {} refused in the handshake, {} closed right after, {} left open) \
                 | {name}: {}",
                f.attempts,
                f.tcp_refused,
                f.tls_refused,
                f.closed_after,
                f.open,
                loud.describe()
            );
            eprintln!(
                "BENCH 7. {name}: p99 quiet {} vs flood {} = {} (target < 3x); disconnected \
                 during the flood: {} publishers, subscriber {}; a sensor connecting 1 s into \
                 the flood: {}",
                ms(quiet_p99),
                ms(loud_p99),
                ratio(loud_p99.as_secs_f64(), quiet_p99.as_secs_f64()),
                loud.pub_errors,
                loud.reader_closed,
                late_ok.map_or_else(|e| format!("failed ({e})"), |()| "connected".to_owned())
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Setup b: the gateway role

/// The UID `common::gateway` provisions the daemon with (`kawal init --uid`).
const GW_UID: &str = "test-gw-01";
/// The bridged Mosquitto's client ID and upstream prefix segment (`kawal/gw/<this>/...`).
const TWIN: &str = "mosquitto-twin";
/// The upstream subscriber's (and certificate's) name.
const UP_SUB: &str = "upstream-subscriber";

/// Sensors → broker → upstream Mosquitto U → subscriber, for both twins: the daemon with
/// `[upstream]` pointing at U, and a Mosquitto set up as in setup a plus a bridge to U. U
/// trusts, as client CAs, the daemon's device CA (the daemon presents its device
/// certificate) and a throw-away test CA that issued its own server certificate, the
/// Mosquitto bridge's client certificate and the subscriber's.
struct GatewayRig {
    rig: Rig,
    up: Mosquitto,
    /// U's CA (what the subscriber and both bridges pin).
    up_ca_pem: String,
    sub: Cred,
    /// kawal's `[upstream] inflight`.
    up_inflight: i64,
    /// Dropped last: U's files.
    _up_tmp: tempfile::TempDir,
}

impl GatewayRig {
    fn start() -> Self {
        let up_tmp = tempfile::tempdir().unwrap();
        let up_pki = upstream_pki(&up_tmp.path().join("pki"), &[TWIN, UP_SUB]);
        let up_port = free_port();
        // A wide window, as the Mosquitto bridge has (no limit), unless told otherwise.
        let up_inflight = i64::try_from(env_u64("KAWAL_BENCH_MQTT_UP_INFLIGHT", 256)).unwrap();
        let gw = Gateway::start_with(|cfg| {
            bench_config(cfg);
            set(cfg, "upstream", "address", format!("127.0.0.1:{up_port}"));
            set(cfg, "upstream", "server-name", "localhost");
            set(cfg, "upstream", "ca-file", common::d(&up_pki.ca));
            set(cfg, "upstream", "inflight", up_inflight);
        });
        let sensor_ca_pem = admin_ready_sensor_ca(&gw);
        // U starts once the device CA exists; the daemon's bridge retries until it is up.
        let up = Mosquitto::start_upstream(
            &up_tmp.path().join("upstream"),
            up_port,
            &format!("{}{}", up_pki.server.ca_pem, gw.ca_pem),
            &up_pki.server,
        );
        let dir = gw.tmp.path().join("mosquitto");
        let pki = server_pki(&dir.join("pki"));
        let (bridge_cert, bridge_key) = &up_pki.clients[0];
        let prefix = format!("kawal/gw/{TWIN}/");
        let to = BridgeTo {
            port: up_port,
            ca: &up_pki.ca,
            cert: bridge_cert,
            key: bridge_key,
            client_id: TWIN,
            remote_prefix: &prefix,
        };
        let mosq =
            Mosquitto::start_bridged(&dir, free_port(), &sensor_ca_pem, &pki, &[READER], &to);
        let (sub_cert, sub_key) = &up_pki.clients[1];
        let sub = Cred {
            name: UP_SUB.into(),
            cert_pem: std::fs::read_to_string(sub_cert).unwrap(),
            key_pem: std::fs::read_to_string(sub_key).unwrap(),
        };
        Self {
            rig: Rig::assemble(gw, mosq, pki, sensor_ca_pem),
            up,
            up_ca_pem: up_pki.server.ca_pem.clone(),
            sub,
            up_inflight,
            _up_tmp: up_tmp,
        }
    }

    /// The subscriber at U on `t`'s upstream topics; the broker's CPU is `t`'s and U's.
    fn sink(&self, t: &Target) -> Sink {
        Sink {
            settings: ClientSettings {
                addr: SocketAddr::from(([127, 0, 0, 1], self.up.port)),
                server_name: "localhost".into(),
                tls: kawal::client::sim::sensor_tls(
                    &self.up_ca_pem,
                    &self.sub.cert_pem,
                    &self.sub.key_pem,
                )
                .unwrap(),
                client_id: self.sub.name.clone(),
                keep_alive: 300,
            },
            filter: format!("kawal/gw/{}/+/up/#", sink_prefix(t)),
            // A bridge that reconnects waits a second or more: do not end a run in that gap.
            quiet: Duration::from_secs(3),
            drain: Duration::from_secs(300),
            pids: vec![t.pid, self.up.pid()],
        }
    }

    /// Sends a probe through `t` until one reaches the subscriber at U (at most 60 s): both
    /// bridges are connected and the topic mapping holds before anything is measured. The
    /// probe's payload does not parse as a benchmark message, so a late copy counts only as
    /// received, never as delivered.
    async fn warm_up(&self, t: &Target, probe: &Cred) {
        let sink = self.sink(t);
        let sub = Client::connect(&sink.settings)
            .await
            .unwrap_or_else(|e| panic!("upstream subscriber: {e}"));
        sub.subscribe(&sink.filter).await.unwrap();
        let p = Client::connect(&self.rig.settings(t, probe))
            .await
            .unwrap_or_else(|e| panic!("{}: {}: {e}", t.name, probe.name));
        let topic = format!("kawal/{}/up/probe", probe.name);
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut rx = sub.incoming.lock().await;
        let arrived = loop {
            if Instant::now() >= deadline {
                break None;
            }
            let _ = p
                .publish(&topic, Bytes::from_static(b"warm-up"), true)
                .await;
            if let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(1), rx.recv()).await {
                break Some(m.topic);
            }
        };
        drop(rx);
        let want = format!("kawal/gw/{}/{}/up/probe", sink_prefix(t), probe.name);
        match arrived {
            Some(topic) => assert_eq!(topic, want, "{}: upstream topic", t.name),
            None => panic!(
                "{}: no probe reached the upstream in 60 s; upstream log: {}; twin log: {}; \
                 daemon log (tail): {}",
                t.name,
                self.up.log(),
                self.rig.mosq.log(),
                tail(&self.rig.gw.daemon_log(), 4000)
            ),
        }
        p.disconnect().await;
        sub.disconnect().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The upstream topic segment after `kawal/gw/` for `t`'s messages.
fn sink_prefix(t: &Target) -> &'static str {
    if t.name == "kawal" { GW_UID } else { TWIN }
}

/// The last `n` characters of `s`.
fn tail(s: &str, n: usize) -> String {
    let skip = s.chars().count().saturating_sub(n);
    s.chars().skip(skip).collect()
}

/// How the broker's CPU (the twin's plus U's) splits, and what it comes to per message.
fn cpu_split(t: &Target, o: &Outcome) -> String {
    let each = |i: usize| o.broker_cpu_each.get(i).copied().unwrap_or(0.0);
    format!(
        "broker CPU = {} {:.2} s + upstream {:.2} s = {:.1} µs per delivered message",
        t.name,
        each(0),
        each(1),
        o.broker_cpu / o.distinct.max(1) as f64 * 1e6
    )
}

/// Setup b, the gateway role: sensors → kawal → upstream Mosquitto → subscriber, against
/// sensors → a Mosquitto bridged to the same upstream → subscriber. b.1: QoS 1 flat out with
/// [`PUBLISHERS`] publishers and `KAWAL_BENCH_MQTT_WINDOW` (64) in flight each, for
/// `KAWAL_BENCH_MQTT_S` seconds; b.2: latency at 1,000 msg/s QoS 1 for
/// `KAWAL_BENCH_MQTT_LAT_S` seconds. Delivered, lost and latency are measured at the
/// upstream subscriber; the broker's CPU is the twin's plus U's. kawal's window to the
/// upstream (`[upstream] inflight`, shipped default 32, kept small for cloud hubs) is 256
/// here unless `KAWAL_BENCH_MQTT_UP_INFLIGHT` says otherwise, since the Mosquitto bridge
/// runs with no limit at all (`max_inflight_messages 0`).
#[test]
#[ignore = "benchmark: scripts/bench.sh mqtt"]
fn bench_mqtt_gateway_role() {
    let secs = bench_secs();
    let lat_secs = env_u64("KAWAL_BENCH_MQTT_LAT_S", 5) as f64;
    let window = env_u64("KAWAL_BENCH_MQTT_WINDOW", 64) as usize;
    let rt = runtime();
    // A fresh set per measurement, so kawal's queue and both bridges start empty.
    let g = GatewayRig::start();
    let pubs = g.rig.publishers(PUBLISHERS, "pub");
    let probe = g.rig.publishers(1, "probe").pop().unwrap();
    let mut rates = Vec::new();
    let mut lost = Vec::new();
    for t in g.rig.targets() {
        rt.block_on(g.warm_up(&t, &probe));
        let load = Load {
            secs,
            rate: None,
            qos1: true,
            window,
            max_per_pub: None,
        };
        let mut o = rt
            .block_on(run_load_via(&g.rig, &t, &g.sink(&t), &pubs, load, None))
            .0;
        eprintln!(
            "BENCH b.1. gateway role, QoS 1 flat out, window {window}/publisher, {PUBLISHERS} \
             publishers -> {} -> upstream mosquitto -> 1 subscriber, {PAYLOAD} B, {secs} s, \
             kawal [upstream] inflight {} | {}: {}{}; {}",
            t.name,
            g.up_inflight,
            t.name,
            o.describe(),
            if o.drain_cut {
                " (subscriber stopped waiting: drain limit)"
            } else {
                ""
            },
            cpu_split(&t, &o)
        );
        rates.push(o.delivered_per_s());
        lost.push(o.lost);
    }
    eprintln!(
        "BENCH b.1. gateway role QoS 1 flat out, delivered/s at the upstream subscriber: kawal \
         {:.0} (lost {}), mosquitto bridge {:.0} (lost {}), ratio kawal/mosquitto {}",
        rates[0],
        lost[0],
        rates[1],
        lost[1],
        ratio(rates[0], rates[1])
    );
    drop(g);

    let g = GatewayRig::start();
    let pubs = g.rig.publishers(PUBLISHERS, "pub");
    let probe = g.rig.publishers(1, "probe").pop().unwrap();
    let rate = 1_000.0;
    let mut q = Vec::new();
    let mut cpu = Vec::new();
    for t in g.rig.targets() {
        rt.block_on(g.warm_up(&t, &probe));
        let load = Load {
            secs: lat_secs,
            rate: Some(rate),
            qos1: true,
            window: 1024,
            max_per_pub: None,
        };
        let mut o = rt
            .block_on(run_load_via(&g.rig, &t, &g.sink(&t), &pubs, load, None))
            .0;
        let report = o.describe();
        let (p50, p99) = (quantile(&mut o.lat, 0.5), quantile(&mut o.lat, 0.99));
        eprintln!(
            "BENCH b.2. gateway role, QoS 1 at {rate:.0}/s, {lat_secs} s, kawal [upstream] \
             inflight {} | {}: p50 {} p99 {} | {report}{}; {}",
            g.up_inflight,
            t.name,
            ms(p50),
            ms(p99),
            if o.drain_cut {
                " (subscriber stopped waiting: drain limit)"
            } else {
                ""
            },
            cpu_split(&t, &o)
        );
        q.push((p50.as_secs_f64(), p99.as_secs_f64()));
        cpu.push(o.broker_cpu);
    }
    eprintln!(
        "BENCH b.2. gateway role QoS 1 at {rate:.0}/s: p50 kawal/mosquitto {}, p99 \
         kawal/mosquitto {}; broker CPU (twin + upstream) kawal {:.2} s, mosquitto {:.2} s, \
         ratio {}",
        ratio(q[0].0, q[1].0),
        ratio(q[0].1, q[1].1),
        cpu[0],
        cpu[1],
        ratio(cpu[0], cpu[1])
    );
}
