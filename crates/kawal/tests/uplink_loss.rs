//! No acknowledged message is lost: with the upstream (a real Mosquitto) stopped, 10 sensors
//! publish 10,000 QoS 1 messages; the daemon is killed with SIGKILL half-way and restarted;
//! the sensors send what was not acknowledged; the upstream comes back. Every message a sensor
//! got a PUBACK for must reach the upstream subscriber, in order per sensor; duplicates are
//! counted and reported.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr,
    clippy::disallowed_macros,
    reason = "integration test: a failure should stop it loudly; the counts are printed"
)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::d;
use common::gateway::{Gateway, set};
use common::sensors::*;
use kawal_gateway::client::{Client, ClientSettings};

const ADMIN_PW: &str = "Sturdy-harbour-lantern-47";
const SENSORS: usize = 10;
const PER_SENSOR: u32 = 1000;

/// The upstream's PKI: a CA, the broker's certificate and a subscriber's.
struct UpstreamPki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    sub_cert: PathBuf,
    sub_key: PathBuf,
}

fn upstream_pki(dir: &Path) -> UpstreamPki {
    let (ca, ca_key) = test_ca(dir, "upstream test CA");
    let (server_cert, server_key) = issue(
        dir,
        (&ca, &ca_key),
        "broker",
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    );
    let (sub_cert, sub_key) = issue(
        dir,
        (&ca, &ca_key),
        "subscriber",
        "extendedKeyUsage=clientAuth\n",
    );
    UpstreamPki {
        ca,
        server_cert,
        server_key,
        sub_cert,
        sub_key,
    }
}

/// A Mosquitto upstream with mutual TLS and persistence, killed on drop.
struct Mosquitto {
    conf: PathBuf,
    child: Option<Child>,
}

impl Mosquitto {
    fn new(dir: &Path, port: u16, pki: &UpstreamPki, gateway_ca: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        // Clients from either CA: the gateway's device CA and the upstream's own.
        let bundle = dir.join("clients-ca.pem");
        let mut both = std::fs::read_to_string(&pki.ca).unwrap();
        both.push_str(gateway_ca);
        std::fs::write(&bundle, both).unwrap();
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "user root\nper_listener_settings false\nallow_anonymous false\npersistence true\n\
                 persistence_location {}/\nmax_queued_messages 0\nmax_queued_bytes 0\n\
                 max_inflight_messages 0\nlog_dest file {}/mosquitto.log\n\
                 listener {port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n\
                 require_certificate true\nuse_identity_as_username true\n",
                d(dir),
                d(dir),
                d(&bundle),
                d(&pki.server_cert),
                d(&pki.server_key)
            ),
        )
        .unwrap();
        Self { conf, child: None }
    }

    fn start(&mut self, port: u16) {
        let child = Command::new("mosquitto")
            .args(["-c", d(&self.conf)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto (Debian package mosquitto) is needed");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "mosquitto did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, so Mosquitto writes its persistent sessions.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `mosquitto_sub` with a persistent session (`-c`), writing to `out`.
fn subscriber(port: u16, pki: &UpstreamPki, out: &Path) -> Child {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(out)
        .unwrap();
    Command::new("mosquitto_sub")
        .args([
            "-h",
            "localhost",
            "-p",
            &port.to_string(),
            "--cafile",
            d(&pki.ca),
        ])
        .args(["--cert", d(&pki.sub_cert), "--key", d(&pki.sub_key)])
        .args([
            "-c",
            "-i",
            "loss-subscriber",
            "-q",
            "1",
            "-v",
            "-t",
            "kawal/gw/#",
        ])
        .stdout(Stdio::from(f))
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

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

/// Publishes `seqs` for one sensor with up to 64 in flight; returns the acknowledged ones.
/// Stops at the first error (the daemon went away) or when `stop` is set.
async fn publish(
    settings: ClientSettings,
    seqs: Vec<u32>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    acked_total: Arc<std::sync::atomic::AtomicUsize>,
) -> BTreeSet<u32> {
    use std::sync::atomic::Ordering;
    let mut acked = BTreeSet::new();
    let Ok(client) = Client::connect(&settings).await else {
        return acked;
    };
    let topic = format!("kawal/{}/up/seq", settings.client_id);
    let mut inflight = std::collections::VecDeque::new();
    for seq in seqs {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let payload = Bytes::from(format!("{}:{seq}", settings.client_id));
        match client.publish(&topic, payload, true).await {
            Ok(Some(ack)) => inflight.push_back((seq, ack)),
            _ => break,
        }
        while inflight.len() >= 64 {
            let (s, ack) = inflight.pop_front().unwrap();
            match tokio::time::timeout(Duration::from_secs(10), ack).await {
                Ok(Ok(())) => {
                    acked.insert(s);
                    acked_total.fetch_add(1, Ordering::Relaxed);
                }
                _ => return acked,
            }
        }
    }
    while let Some((s, ack)) = inflight.pop_front() {
        match tokio::time::timeout(Duration::from_secs(10), ack).await {
            Ok(Ok(())) => {
                acked.insert(s);
                acked_total.fetch_add(1, Ordering::Relaxed);
            }
            _ => break,
        }
    }
    acked
}

/// What the upstream subscriber received: distinct sequence numbers per sensor, duplicates,
/// and whether first arrivals kept each sensor's order.
fn tally(received: &Path) -> (BTreeMap<String, BTreeSet<u32>>, usize, bool) {
    let mut got: BTreeMap<String, BTreeSet<u32>> = BTreeMap::new();
    let mut last: BTreeMap<String, u32> = BTreeMap::new();
    let (mut dups, mut order_ok) = (0, true);
    for line in std::fs::read_to_string(received)
        .unwrap_or_default()
        .lines()
    {
        let Some((uid, seq)) = line.split_once(' ').and_then(|(_, p)| p.split_once(':')) else {
            continue;
        };
        let Ok(seq) = seq.parse::<u32>() else {
            continue;
        };
        if !got.entry(uid.to_owned()).or_default().insert(seq) {
            dups += 1;
            continue;
        }
        if last.get(uid).is_some_and(|l| *l > seq) {
            order_ok = false;
        }
        last.insert(uid.to_owned(), seq);
    }
    (got, dups, order_ok)
}

/// G045: DS-1-2
/// Across an upstream outage, SIGKILL of the daemon and restarts of both, every message a
/// sensor was told is delivered reaches the upstream at least once, in order per sensor.
#[test]
fn every_acknowledged_message_reaches_the_upstream_across_kill_9() {
    let up_port = common::free_port();
    let tmp = tempfile::tempdir().unwrap();
    let pki = upstream_pki(&tmp.path().join("upstream-pki"));
    let ca = pki.ca.clone();
    let mut gw = Gateway::start_with(|cfg| {
        set(cfg, "upstream", "address", format!("127.0.0.1:{up_port}"));
        set(cfg, "upstream", "server-name", "localhost");
        set(cfg, "upstream", "ca-file", d(&ca));
        // The test's sensors publish as fast as the gateway takes them.
        set(cfg, "mqtt", "messages-per-s", 100_000);
    });
    let mut mosq = Mosquitto::new(&tmp.path().join("mosq"), up_port, &pki, &gw.ca_pem);
    let received = tmp.path().join("received.txt");

    // The subscriber's persistent session exists before the outage.
    mosq.start(up_port);
    let mut sub = subscriber(up_port, &pki, &received);
    std::thread::sleep(Duration::from_millis(1500));
    let _ = sub.kill();
    let _ = sub.wait();
    mosq.stop();

    let mut api = gw.admin_ready(ADMIN_PW);
    let files: Vec<SensorFiles> = (0..SENSORS)
        .map(|i| sensor(&gw, &mut api, &format!("loss-{i}"), None))
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();

    // Phase 1: publish with the upstream away; SIGKILL the daemon half-way.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let total = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let tasks: Vec<_> = files
        .iter()
        .map(|s| {
            rt.spawn(publish(
                sensor_settings(&gw, s),
                (0..PER_SENSOR).collect(),
                Arc::clone(&stop),
                Arc::clone(&total),
            ))
        })
        .collect();
    let half = SENSORS * PER_SENSOR as usize / 2;
    let deadline = Instant::now() + Duration::from_secs(120);
    while total.load(std::sync::atomic::Ordering::Relaxed) < half {
        assert!(Instant::now() < deadline, "phase 1 too slow: {total:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
    gw.kill9();
    let mut acked: Vec<BTreeSet<u32>> =
        tasks.into_iter().map(|t| rt.block_on(t).unwrap()).collect();
    let acked_phase1: usize = acked.iter().map(BTreeSet::len).sum();
    assert!(acked_phase1 >= half, "{acked_phase1}");

    // Phase 2: restart the daemon; the sensors send what was not acknowledged.
    gw.spawn();
    let tasks: Vec<_> = files
        .iter()
        .zip(&acked)
        .map(|(s, done)| {
            let rest: Vec<u32> = (0..PER_SENSOR).filter(|q| !done.contains(q)).collect();
            rt.spawn(publish(
                sensor_settings(&gw, s),
                rest,
                Arc::new(std::sync::atomic::AtomicBool::new(false)),
                Arc::clone(&total),
            ))
        })
        .collect();
    for (t, set) in tasks.into_iter().zip(acked.iter_mut()) {
        set.extend(rt.block_on(t).unwrap());
    }
    let acked_total: usize = acked.iter().map(BTreeSet::len).sum();
    assert_eq!(
        acked_total,
        SENSORS * PER_SENSOR as usize,
        "every message acknowledged in the end"
    );

    // The upstream comes back: everything acknowledged must arrive.
    mosq.start(up_port);
    let mut sub = subscriber(up_port, &pki, &received);
    let deadline = Instant::now() + Duration::from_secs(150);
    let (got, dups, order_ok) = loop {
        let tally = tally(&received);
        let n: usize = tally.0.values().map(BTreeSet::len).sum();
        if n >= SENSORS * PER_SENSOR as usize || Instant::now() > deadline {
            break tally;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let _ = sub.kill();
    let _ = sub.wait();
    let mut lost = 0;
    for (i, set) in acked.iter().enumerate() {
        let name = format!("loss-{i}");
        let have = got.get(&name).cloned().unwrap_or_default();
        lost += set.difference(&have).count();
    }
    let arrived: usize = got.values().map(BTreeSet::len).sum();
    eprintln!(
        "loss test: {acked_phase1} acknowledged before SIGKILL, {acked_total} in all; upstream received {arrived} distinct, {dups} duplicates, {lost} lost; order per sensor {}",
        if order_ok { "kept" } else { "BROKEN" }
    );
    assert_eq!(lost, 0, "acknowledged messages lost");
    assert!(order_ok, "order per sensor broken");
    gw.stop();
}

/// G045: DS-1-2, AU-3-2
/// A command published upstream reaches the sensor through the bridge wrapped with a sequence
/// number and an expiry; the reference sensor client takes it once and refuses the replay.
#[test]
fn commands_from_upstream_reach_the_sensor_and_a_replay_is_refused() {
    use kawal_gateway::client::command::{Receiver, Refused};
    let up_port = common::free_port();
    let tmp = tempfile::tempdir().unwrap();
    let pki = upstream_pki(&tmp.path().join("upstream-pki"));
    let ca = pki.ca.clone();
    let mut gw = Gateway::start_with(|cfg| {
        set(cfg, "upstream", "address", format!("127.0.0.1:{up_port}"));
        set(cfg, "upstream", "server-name", "localhost");
        set(cfg, "upstream", "ca-file", d(&ca));
    });
    let mut mosq = Mosquitto::new(&tmp.path().join("mosq"), up_port, &pki, &gw.ca_pem);
    mosq.start(up_port);
    let mut api = gw.admin_ready(ADMIN_PW);
    let s = sensor(&gw, &mut api, "valve-9", None);
    assert!(
        wait_event(&gw, "bridge.connected", 30, |_| true),
        "the bridge did not connect: {}",
        gw.daemon_log()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = rt
        .block_on(Client::connect(&sensor_settings(&gw, &s)))
        .unwrap();
    rt.block_on(client.subscribe("kawal/valve-9/down/#"))
        .unwrap();
    let o = Command::new("mosquitto_pub")
        .args([
            "-h",
            "localhost",
            "-p",
            &up_port.to_string(),
            "--cafile",
            d(&pki.ca),
        ])
        .args(["--cert", d(&pki.sub_cert), "--key", d(&pki.sub_key)])
        .args(["-i", "operator-console", "-q", "1"])
        .args(["-t", "kawal/gw/test-gw-01/valve-9/down/set", "-m", "close"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let msg = rt
        .block_on(async {
            let mut rx = client.incoming.lock().await;
            tokio::time::timeout(Duration::from_secs(15), rx.recv()).await
        })
        .expect("no command arrived")
        .expect("connection closed");
    assert_eq!(msg.topic, "kawal/valve-9/down/set");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut sensor_side = Receiver::default();
    assert_eq!(sensor_side.accept(&msg.payload, now), Ok(b"close".to_vec()));
    assert_eq!(
        sensor_side.accept(&msg.payload, now),
        Err(Refused::Replayed),
        "a replayed command must be refused"
    );
    mosq.stop();
    gw.stop();
}
