//! Denial of service at the sensor listener: a flood of bad TLS handshakes from many loopback
//! sources does not disconnect, stall or starve enrolled sensors, does not kill the daemon, and
//! does not flood the audit log (flood control counts the refusals and summarises them).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr,
    clippy::disallowed_macros,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "integration test: a failure should stop it loudly; the numbers are printed"
)]

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::gateway::Gateway;
use common::sensors::{SensorFiles, self_signed, sensor};
use kawal_gateway::client::{Client, ClientSettings};
use rustls::pki_types::ServerName;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio_rustls::TlsConnector;

const ADMIN_PW: &str = "Sturdy-harbour-lantern-47";
const SENSORS: usize = 3;
/// Each sensor's QoS 1 publish rate.
const PER_SENSOR_PER_S: u64 = 20;
const QUIET: Duration = Duration::from_secs(5);
const FLOOD: Duration = Duration::from_secs(8);
/// The flood's target rate; the test requires at least [`MIN_RATE`].
const TARGET_RATE: u64 = 500;
const MIN_RATE: f64 = 300.0;
/// Bad handshakes open at once at most (keeps the test bounded whatever the daemon does).
const MAX_OPEN: usize = 256;
/// Any single flood connection gives up after this long.
const ATTEMPT_BOUND: Duration = Duration::from_secs(2);
/// A PUBACK that takes longer than this counts as lost.
const ACK_BOUND: Duration = Duration::from_secs(10);
/// Audit entries the flood may add at most.
const AUDIT_GROWTH_MAX: usize = 2000;

fn sensor_settings(gw: &Gateway, s: &SensorFiles) -> ClientSettings {
    ClientSettings {
        addr: gw.mqtt,
        server_name: "localhost".into(),
        tls: kawal::client::sim::sensor_tls(
            &gw.ca_pem,
            &std::fs::read_to_string(&s.cert).unwrap(),
            &std::fs::read_to_string(&s.key).unwrap(),
        )
        .unwrap(),
        client_id: s.name.clone(),
        keep_alive: 30,
    }
}

/// A TLS client that trusts the gateway's CA and presents `client` (cert, key PEM), if any.
fn flood_tls(ca_pem: &str, client: Option<(&str, &str)>) -> TlsConnector {
    let config = match client {
        Some((cert, key)) => kawal::client::sim::sensor_tls(ca_pem, cert, key).unwrap(),
        None => {
            let mut roots = rustls::RootCertStore::empty();
            for c in rustls::pki_types::pem::PemObject::pem_slice_iter(ca_pem.as_bytes()) {
                roots.add(c.unwrap()).unwrap();
            }
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            Arc::new(
                rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .unwrap()
                    .with_root_certificates(roots)
                    .with_no_client_auth(),
            )
        }
    };
    TlsConnector::from(config)
}

fn p99(v: &mut [Duration]) -> Duration {
    assert!(!v.is_empty(), "no samples");
    v.sort_unstable();
    let i = ((v.len() as f64) * 0.99).ceil() as usize;
    v[i.saturating_sub(1).min(v.len() - 1)]
}

/// Samples of one sensor: (sent during the flood, latency), and whether anything went wrong.
#[derive(Default)]
struct Samples {
    quiet: Vec<Duration>,
    flood: Vec<Duration>,
    lost: u64,
}

/// Publishes QoS 1 at [`PER_SENSOR_PER_S`] until `stop`; records each PUBACK's latency under
/// the phase it was sent in.
async fn publish_loop(
    client: Arc<Client>,
    topic: String,
    flooding: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Samples>>,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / PER_SENSOR_PER_S));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut waits = tokio::task::JoinSet::new();
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        tick.tick().await;
        n += 1;
        let during_flood = flooding.load(Ordering::SeqCst);
        let sent = Instant::now();
        let ack = client
            .publish(&topic, Bytes::from(format!("{n}")), true)
            .await;
        let samples = Arc::clone(&samples);
        waits.spawn(async move {
            let ok = match ack {
                Ok(Some(rx)) => matches!(tokio::time::timeout(ACK_BOUND, rx).await, Ok(Ok(()))),
                _ => false,
            };
            let mut s = samples.lock().unwrap();
            if !ok {
                s.lost += 1;
            } else if during_flood {
                s.flood.push(sent.elapsed());
            } else {
                s.quiet.push(sent.elapsed());
            }
        });
    }
    while waits.join_next().await.is_some() {}
}

#[derive(Default)]
struct Flood {
    attempts: AtomicU64,
    answers: Mutex<BTreeMap<String, u64>>,
}

impl Flood {
    fn answered(&self, how: impl Into<String>) {
        *self.answers.lock().unwrap().entry(how.into()).or_insert(0) += 1;
    }
}

/// Summarises an error for the tally (the kind, not the details that vary per connection).
fn kind(e: &std::io::Error) -> String {
    let s = e.to_string();
    let s = s.split(':').next_back().unwrap_or(&s).trim().to_owned();
    format!("{:?}: {}", e.kind(), s.chars().take(60).collect::<String>())
}

/// One bad connection from `source`: garbage, TLS without a client certificate, or TLS with
/// a self-signed certificate. Records how the daemon answered.
async fn bad_handshake(
    i: u64,
    source: IpAddr,
    target: SocketAddr,
    no_cert: TlsConnector,
    rogue: TlsConnector,
    flood: Arc<Flood>,
) {
    let attempt = async {
        let sock = TcpSocket::new_v4().map_err(|e| format!("socket: {}", kind(&e)))?;
        sock.bind(SocketAddr::new(source, 0))
            .map_err(|e| format!("bind: {}", kind(&e)))?;
        let mut tcp = sock
            .connect(target)
            .await
            .map_err(|e| format!("tcp: {}", kind(&e)))?;
        let variant = i % 3;
        let mut buf = [0u8; 256];
        match variant {
            0 => {
                let garbage: Vec<u8> = (0..200u64).map(|k| (k * 37 + i) as u8).collect();
                let _ = tcp.write_all(&garbage).await;
                match tcp.read(&mut buf).await {
                    Ok(0) => Ok("garbage: closed".to_owned()),
                    Ok(n) => Ok(format!("garbage: {n} bytes then {}", {
                        let mut rest = [0u8; 64];
                        match tcp.read(&mut rest).await {
                            Ok(0) => "closed".to_owned(),
                            Ok(_) => "more".to_owned(),
                            Err(e) => kind(&e),
                        }
                    })),
                    Err(e) => Ok(format!("garbage: {}", kind(&e))),
                }
            }
            _ => {
                let (label, tls) = if variant == 1 {
                    ("no-cert", &no_cert)
                } else {
                    ("self-signed", &rogue)
                };
                let name = ServerName::try_from("localhost").unwrap();
                match tls.connect(name, tcp).await {
                    Err(e) => Ok(format!("{label}: handshake {}", kind(&e))),
                    // TLS 1.3: the client is done before the server has checked its
                    // certificate; the refusal comes as an alert on the first read.
                    Ok(mut s) => match s.read(&mut buf).await {
                        Ok(0) => Ok(format!("{label}: closed")),
                        Ok(_) => Ok(format!("{label}: DATA (admitted?)")),
                        Err(e) => Ok(format!("{label}: {}", kind(&e))),
                    },
                }
            }
        }
    };
    let how = match tokio::time::timeout(ATTEMPT_BOUND, attempt).await {
        Ok(Ok(how)) | Ok(Err(how)) => how,
        Err(_) => "timeout".to_owned(),
    };
    flood.answered(how);
}

fn find_u64(v: &Value, key: &str) -> Option<u64> {
    match v {
        Value::Object(m) => m
            .get(key)
            .and_then(Value::as_u64)
            .or_else(|| m.values().find_map(|x| find_u64(x, key))),
        Value::Array(a) => a.iter().find_map(|x| find_u64(x, key)),
        _ => None,
    }
}

/// G045: PL-3-1, AU-3-2
/// Threat ST-G-1 (resource exhaustion of the sensor listener by unauthenticated peers).
///
/// Three enrolled sensors publish QoS 1 at 20 msg/s each: 5 s quiet, then 8 s during a flood
/// of bad TLS handshakes (target 500/s, at least 300/s required) from 127.0.0.2–127.0.0.60:
/// garbage bytes, TLS without a client certificate, TLS with a self-signed certificate. Every
/// publish must be acknowledged, no sensor disconnected, and the PUBACK p99 during the flood
/// must stay below max(3 × quiet p99, quiet p99 + 50 ms): the second term because a quiet p99
/// of a millisecond or two on loopback would make "3×" a bound tighter than scheduler noise on
/// a 2-core machine. The daemon must still answer, its audit log must grow by at most 2,000
/// entries, and flood control must have folded refusals (`audit_suppressed` > 0 in the
/// broker's stats) and written their summary (`mqtt.events-suppressed`) when its window ended:
/// the window is set to 5 s here (`[mqtt] audit-window-s`; 60 s by default).
#[test]
fn a_flood_of_bad_handshakes_does_not_starve_enrolled_sensors() {
    let started = Instant::now();
    let gw = Gateway::start_with(|c| common::gateway::set(c, "mqtt", "audit-window-s", 5));
    let mut api = gw.admin_ready(ADMIN_PW);
    let files: Vec<SensorFiles> = (0..SENSORS)
        .map(|i| sensor(&gw, &mut api, &format!("flood-{i}"), None))
        .collect();
    let (rogue_cert, rogue_key) = self_signed(&gw.tmp.path().join("rogue"), "rogue-1");
    let rogue_cert = std::fs::read_to_string(rogue_cert).unwrap();
    let rogue_key = std::fs::read_to_string(rogue_key).unwrap();
    let no_cert = flood_tls(&gw.ca_pem, None);
    let rogue = flood_tls(&gw.ca_pem, Some((&rogue_cert, &rogue_key)));
    let settings: Vec<ClientSettings> = files.iter().map(|f| sensor_settings(&gw, f)).collect();
    let setup = started.elapsed();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let flood = Arc::new(Flood::default());
    let mqtt = gw.mqtt;
    let (samples, disconnected, audit_before, flood_elapsed) = rt.block_on(async {
        let flooding = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let disconnected = Arc::new(AtomicU64::new(0));
        let mut publishers = Vec::new();
        let mut watchers = Vec::new();
        let mut all_samples = Vec::new();
        for (s, f) in settings.iter().zip(&files) {
            let client = Arc::new(
                tokio::time::timeout(Duration::from_secs(10), Client::connect(s))
                    .await
                    .expect("connect in time")
                    .expect("sensor connects"),
            );
            let samples = Arc::new(Mutex::new(Samples::default()));
            all_samples.push(Arc::clone(&samples));
            let c = Arc::clone(&client);
            let d = Arc::clone(&disconnected);
            watchers.push(tokio::spawn(async move {
                c.closed().await;
                d.fetch_add(1, Ordering::SeqCst);
            }));
            publishers.push(tokio::spawn(publish_loop(
                client,
                format!("kawal/{}/up/load", f.name),
                Arc::clone(&flooding),
                Arc::clone(&stop),
                samples,
            )));
        }
        tokio::time::sleep(QUIET).await;

        let audit_before = gw.log_lines().len();
        flooding.store(true, Ordering::SeqCst);
        let flood_start = Instant::now();
        let open = Arc::new(tokio::sync::Semaphore::new(MAX_OPEN));
        let mut attempts = tokio::task::JoinSet::new();
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut i = 0u64;
        while flood_start.elapsed() < FLOOD {
            tick.tick().await;
            // Catch up to the target rate (a tick may come late on a busy machine).
            let due = (flood_start.elapsed().as_millis() as u64) * TARGET_RATE / 1000;
            while i < due {
                let Ok(permit) = Arc::clone(&open).try_acquire_owned() else {
                    break;
                };
                let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (i % 59) as u8));
                let (nc, rg, fl) = (no_cert.clone(), rogue.clone(), Arc::clone(&flood));
                flood.attempts.fetch_add(1, Ordering::SeqCst);
                attempts.spawn(async move {
                    bad_handshake(i, source, mqtt, nc, rg, fl).await;
                    drop(permit);
                });
                i += 1;
            }
            while attempts.try_join_next().is_some() {}
        }
        let flood_elapsed = flood_start.elapsed();
        flooding.store(false, Ordering::SeqCst);
        stop.store(true, Ordering::SeqCst);
        while attempts.join_next().await.is_some() {}
        for p in publishers {
            tokio::time::timeout(ACK_BOUND + Duration::from_secs(5), p)
                .await
                .expect("publishers end")
                .unwrap();
        }
        for w in watchers {
            w.abort();
        }
        let samples: Vec<Samples> = all_samples
            .into_iter()
            .map(|s| std::mem::take(&mut *s.lock().unwrap()))
            .collect();
        (
            samples,
            disconnected.load(Ordering::SeqCst),
            audit_before,
            flood_elapsed,
        )
    });

    // The daemon still answers, and what it counted.
    let r = api.get("/api/v1/gateway");
    assert!(
        r.status().is_success(),
        "daemon does not answer after the flood"
    );
    let state: Value = r.json().unwrap();
    let suppressed = find_u64(&state, "audit_suppressed").unwrap_or(0);
    let dropped = find_u64(&state, "audit_dropped").unwrap_or(0);
    let lines = gw.log_lines();
    let growth = lines.len().saturating_sub(audit_before);
    let summaries = lines
        .iter()
        .filter(|e| e["event"] == "mqtt.events-suppressed")
        .count();
    let refused = lines
        .iter()
        .skip(audit_before)
        .filter(|e| e["event"] == "mqtt.refused")
        .count();

    let attempts = flood.attempts.load(Ordering::SeqCst);
    let rate = attempts as f64 / flood_elapsed.as_secs_f64();
    let mut quiet: Vec<Duration> = samples.iter().flat_map(|s| s.quiet.clone()).collect();
    let mut during: Vec<Duration> = samples.iter().flat_map(|s| s.flood.clone()).collect();
    let lost: u64 = samples.iter().map(|s| s.lost).sum();
    let (nq, nf) = (quiet.len(), during.len());
    let quiet_p99 = p99(&mut quiet);
    let flood_p99 = p99(&mut during);
    let bound = (quiet_p99 * 3).max(quiet_p99 + Duration::from_millis(50));
    eprintln!(
        "flood: {attempts} bad connections in {flood_elapsed:.1?} = {rate:.0}/s from 59 sources \
         (setup {setup:.1?}, total {:.1?})",
        started.elapsed()
    );
    eprintln!("daemon answered: {:#?}", flood.answers.lock().unwrap());
    eprintln!(
        "PUBACK p99: quiet {quiet_p99:.2?} ({nq} samples), flood {flood_p99:.2?} ({nf} samples), \
         bound {bound:.2?}; lost {lost}; disconnected {disconnected}"
    );
    eprintln!(
        "audit: +{growth} entries during the flood ({refused} mqtt.refused written), \
         {suppressed} folded by flood control, {dropped} dropped, \
         {summaries} mqtt.events-suppressed so far"
    );

    assert!(rate >= MIN_RATE, "flood reached only {rate:.0}/s");
    assert_eq!(
        disconnected, 0,
        "a sensor was disconnected during the flood"
    );
    assert_eq!(lost, 0, "publishes not acknowledged");
    assert!(nf > 0 && nq > 0);
    assert!(
        flood_p99 < bound,
        "PUBACK p99 during the flood {flood_p99:?} over {bound:?} (quiet {quiet_p99:?})"
    );
    assert!(
        growth <= AUDIT_GROWTH_MAX,
        "audit log grew by {growth} entries during the flood"
    );
    assert!(suppressed > 0, "flood control folded no refusals");
    assert!(
        summaries > 0,
        "no mqtt.events-suppressed summary after a 5 s audit window"
    );
    assert_eq!(dropped, 0, "audit events were dropped");
    drop(rt);
    drop(gw);
}
