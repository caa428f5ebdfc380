//! The upstream bridge against a real Mosquitto 2.0 over mutual TLS on loopback: telemetry
//! arrives under the mapped topic, nothing accepted is lost across an upstream outage,
//! commands come back down, and a rogue broker gets nothing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::disallowed_macros,
    reason = "tests: a failure should stop the test loudly; the outage report is printed"
)]

mod bridge_support;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use bridge_support::{
    Ca, GATEWAY, Gateway, Mosquitto, Subscriber, bridge_settings, connector, free_port, publish,
    wait_until,
};
use bytes::Bytes;
use kawal_gateway::bridge::{Bridge, DeliverDown};
use kawal_gateway::{Message, Uplink};

fn msg(uid: &str, rest: &str, payload: String) -> Message {
    Message {
        uid: uid.to_owned(),
        topic: format!("kawal/{uid}/up/{rest}"),
        payload: Bytes::from(payload),
        qos: 1,
    }
}

async fn submit_all(gw: &Gateway, msgs: Vec<Message>) {
    let rxs: Vec<_> = msgs.into_iter().map(|m| gw.queue.submit(m)).collect();
    for rx in rxs {
        rx.await.unwrap().unwrap();
    }
}

type Down = Arc<Mutex<Vec<(String, Bytes)>>>;

/// What a subscriber received of `n` messages `"<uid>:<i>"` from `uids` sensors.
struct Delivery {
    received: usize,
    distinct: usize,
    duplicates: usize,
    lost: usize,
    /// Per sensor, the `i` of each first arrival, in arrival order.
    per_uid: BTreeMap<String, Vec<usize>>,
    uids: usize,
    n: usize,
}

impl Delivery {
    fn of(got: &[(String, Bytes)], prefix: &str, uids: usize, n: usize) -> Self {
        let got: Vec<&(String, Bytes)> =
            got.iter().filter(|(t, _)| t.ends_with("/up/seq")).collect();
        let mut per_uid: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        let mut seen = HashSet::new();
        let mut duplicates = 0;
        for (topic, payload) in &got {
            let text = std::str::from_utf8(payload).unwrap();
            let (uid, i) = text.split_once(':').unwrap();
            assert_eq!(topic, &format!("{prefix}/{uid}/up/seq"));
            if !seen.insert(text.to_owned()) {
                duplicates += 1;
                continue;
            }
            per_uid
                .entry(uid.to_owned())
                .or_default()
                .push(i.parse().unwrap());
        }
        Self {
            received: got.len(),
            distinct: seen.len(),
            duplicates,
            lost: n - seen.len(),
            per_uid,
            uids,
            n,
        }
    }

    fn assert_complete(&self) {
        assert_eq!(self.lost, 0, "{self}");
        assert_eq!(self.per_uid.len(), self.uids);
        let expected: Vec<usize> = (0..self.n / self.uids).collect();
        for (uid, order) in &self.per_uid {
            assert_eq!(order, &expected, "order for {uid}");
        }
    }
}

impl std::fmt::Display for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "received {} ({} distinct), duplicates {}, lost {}",
            self.received, self.distinct, self.duplicates, self.lost
        )
    }
}

fn down_sink() -> (Down, DeliverDown) {
    let got: Down = Arc::default();
    let g = got.clone();
    (
        got,
        Arc::new(move |topic, payload| g.lock().unwrap().push((topic, payload))),
    )
}

/// Threat: ST-G-3 — telemetry goes upstream over mutual TLS under
/// `kawal/gw/<gateway>/<uid>/up/...`, and commands published upstream to
/// `<prefix>/<uid>/down/x` reach the broker as `kawal/<uid>/down/x`.
/// G045: DS-1-2 — a message leaves the queue only once the upstream acknowledged it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_goes_up_and_commands_come_down() {
    let ca = Ca::new("upstream CA");
    let broker_dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _mq = Mosquitto::start_new(
        broker_dir.path(),
        port,
        &ca.cert_pem,
        &ca.server(&["127.0.0.1"]),
    );
    let prefix = format!("kawal/gw/{GATEWAY}");
    let sub = Subscriber::spawn(
        connector(&ca, &ca.client("test-sub")),
        port,
        "test-sub",
        &format!("{prefix}/#"),
    );
    wait_until("subscriber", || {
        sub.subscribed.load(std::sync::atomic::Ordering::SeqCst)
    })
    .await;

    let gw = Gateway::new();
    let (down, deliver) = down_sink();
    let mut settings = bridge_settings(port, &ca.cert_pem, &ca.client(GATEWAY));
    settings.keepalive = std::time::Duration::from_secs(1);
    let bridge = Bridge::spawn(settings, gw.queue.clone(), deliver, gw.audit.clone()).unwrap();

    submit_all(
        &gw,
        vec![
            msg("s1", "temp", "21.5".into()),
            msg("s2", "hum/raw", "40".into()),
            msg("s1", "temp", "21.6".into()),
        ],
    )
    .await;
    sub.wait_for("3 messages", |r| r.len() >= 3).await;
    let got = sub.snapshot();
    assert_eq!(
        got,
        [
            (format!("{prefix}/s1/up/temp"), Bytes::from("21.5")),
            (format!("{prefix}/s2/up/hum/raw"), Bytes::from("40")),
            (format!("{prefix}/s1/up/temp"), Bytes::from("21.6")),
        ]
    );
    wait_until("queue drained", || gw.queue.is_empty()).await;
    let st = bridge.status();
    assert!(st.connected);
    assert_eq!((st.sent, st.acked), (3, 3));

    // A command from the upstream, once the bridge holds its subscription.
    wait_until("bridge subscribed", || bridge.status().subscribed).await;
    let cmd = connector(&ca, &ca.client("test-cmd"));
    publish(
        &cmd,
        port,
        "test-cmd",
        &format!("{prefix}/s1/down/x"),
        "reboot",
    )
    .await;
    wait_until("command delivered", || !down.lock().unwrap().is_empty()).await;
    assert_eq!(
        down.lock().unwrap()[0],
        ("kawal/s1/down/x".to_owned(), Bytes::from("reboot"))
    );

    // QoS 0 goes up too (at QoS 0, gone from the queue once written).
    let mut m0 = msg("s3", "temp", "qos0".into());
    m0.qos = 0;
    submit_all(&gw, vec![m0]).await;
    let want = (format!("{prefix}/s3/up/temp"), Bytes::from("qos0"));
    sub.wait_for("the QoS 0 message", |r| r.contains(&want))
        .await;
    wait_until("queue drained", || gw.queue.is_empty()).await;

    // Idle for three keep-alive periods: the PINGREQs keep the session (Mosquitto drops a
    // client silent for 1.5 periods).
    tokio::time::sleep(std::time::Duration::from_millis(3500)).await;
    let st = bridge.status();
    assert!(st.connected && st.reconnects == 0, "{st:?}");

    let connected = gw.wait_audit("bridge.connected").await;
    assert_eq!(connected.1, "success");
    bridge.shutdown().await;
    assert!(!bridge.status().connected);
    let bye = gw.wait_audit("bridge.disconnected").await;
    assert_eq!(bye.1, "info");
    assert!(bye.2.contains("shutdown"), "{bye:?}");
}

/// G045: DS-1-2 / Threat: ST-G-2 — an upstream outage loses nothing: 1,000 QoS 1 messages
/// accepted while the upstream is down all arrive after it returns, in order per sensor;
/// duplicates (at-least-once) are counted and reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_outage_loses_nothing() {
    let ca = Ca::new("upstream CA");
    let broker_dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut mq = Mosquitto::start_new(
        broker_dir.path(),
        port,
        &ca.cert_pem,
        &ca.server(&["127.0.0.1"]),
    );
    let prefix = format!("kawal/gw/{GATEWAY}");
    // A persistent session: the broker keeps what arrives while the subscriber reconnects.
    let sub = Subscriber::spawn(
        connector(&ca, &ca.client("test-sub")),
        port,
        "test-sub",
        &format!("{prefix}/#"),
    );
    wait_until("subscriber", || {
        sub.subscribed.load(std::sync::atomic::Ordering::SeqCst)
    })
    .await;
    let gw = Gateway::new();
    let (_down, deliver) = down_sink();
    let settings = bridge_settings(port, &ca.cert_pem, &ca.client(GATEWAY));
    let bridge = Bridge::spawn(settings, gw.queue.clone(), deliver, gw.audit.clone()).unwrap();
    submit_all(&gw, vec![msg("s0", "warmup", "w".into())]).await;
    sub.wait_for("warm-up message", |r| !r.is_empty()).await;
    wait_until("warm-up acknowledged", || gw.queue.is_empty()).await;

    // Outage.
    mq.stop();
    wait_until("bridge notices the outage", || !bridge.status().connected).await;
    const UIDS: usize = 5;
    const N: usize = 1000;
    let msgs: Vec<Message> = (0..N)
        .map(|i| {
            let uid = format!("s{}", i % UIDS);
            msg(&uid, "seq", format!("{uid}:{}", i / UIDS))
        })
        .collect();
    submit_all(&gw, msgs).await;
    assert_eq!(gw.queue.len(), N, "all accepted and held during the outage");
    assert!(!bridge.status().connected);

    // Back up on the same port.
    mq.start();
    sub.wait_for("all 1,000 messages", |r| {
        r.iter()
            .filter(|(t, _)| t.ends_with("/up/seq"))
            .map(|(_, p)| p.clone())
            .collect::<HashSet<_>>()
            .len()
            >= N
    })
    .await;
    wait_until("queue drained", || gw.queue.is_empty()).await;

    let st = bridge.status();
    let report = Delivery::of(&sub.snapshot(), &prefix, UIDS, N);
    println!(
        "outage: {N} submitted while the upstream was down: {report}; bridge sent {} acked {} \
         reconnects {}",
        st.sent, st.acked, st.reconnects
    );
    report.assert_complete();
    assert!(st.reconnects >= 1);
    // The outage is in the audit log.
    let disconnected = gw.wait_audit("bridge.disconnected").await;
    assert_eq!(disconnected.1, "failure");
    bridge.shutdown().await;
}

/// G045: DS-1-2 — messages stored while the upstream was unreachable, and still stored when
/// the gateway restarts, are sent after the restart: the recovered queue is the record of
/// what is owed upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_messages_are_sent_after_a_restart() {
    let ca = Ca::new("upstream CA");
    let gateway_leaf = ca.client(GATEWAY);
    let port = free_port();
    let mut gw = Gateway::new();
    // Upstream not there yet: the bridge keeps failing to connect.
    let (_down, deliver) = down_sink();
    let bridge = Bridge::spawn(
        bridge_settings(port, &ca.cert_pem, &gateway_leaf),
        gw.queue.clone(),
        deliver,
        gw.audit.clone(),
    )
    .unwrap();
    const UIDS: usize = 3;
    const N: usize = 300;
    let msgs: Vec<Message> = (0..N)
        .map(|i| {
            let uid = format!("s{}", i % UIDS);
            msg(&uid, "seq", format!("{uid}:{}", i / UIDS))
        })
        .collect();
    submit_all(&gw, msgs).await;
    assert_eq!(bridge.status().sent, 0);
    // "Restart": the bridge and the queue go away, the queue comes back from the store.
    bridge.shutdown().await;
    drop(bridge);
    gw.restart_queue();
    assert_eq!(gw.queue.len(), N);

    let broker_dir = tempfile::tempdir().unwrap();
    let _mq = Mosquitto::start_new(
        broker_dir.path(),
        port,
        &ca.cert_pem,
        &ca.server(&["127.0.0.1"]),
    );
    let prefix = format!("kawal/gw/{GATEWAY}");
    let sub = Subscriber::spawn(
        connector(&ca, &ca.client("test-sub")),
        port,
        "test-sub",
        &format!("{prefix}/#"),
    );
    wait_until("subscriber", || {
        sub.subscribed.load(std::sync::atomic::Ordering::SeqCst)
    })
    .await;
    let (_down, deliver) = down_sink();
    let bridge = Bridge::spawn(
        bridge_settings(port, &ca.cert_pem, &gateway_leaf),
        gw.queue.clone(),
        deliver,
        gw.audit.clone(),
    )
    .unwrap();
    sub.wait_for("every message", |r| r.len() >= N).await;
    wait_until("queue drained", || gw.queue.is_empty()).await;
    let report = Delivery::of(&sub.snapshot(), &prefix, UIDS, N);
    println!("after a restart: {N} recovered: {report}");
    report.assert_complete();
    bridge.shutdown().await;
}

/// G045: DS-1-2 / Threat: ST-G-2 — the upstream goes away in the middle of a stream: what was
/// in flight and not acknowledged is sent again after it returns (at least once), nothing is
/// lost, and first arrivals stay in order per sensor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_mid_stream_resends_what_was_in_flight() {
    let ca = Ca::new("upstream CA");
    let broker_dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut mq = Mosquitto::start_new(
        broker_dir.path(),
        port,
        &ca.cert_pem,
        &ca.server(&["127.0.0.1"]),
    );
    let prefix = format!("kawal/gw/{GATEWAY}");
    let sub = Subscriber::spawn(
        connector(&ca, &ca.client("test-sub")),
        port,
        "test-sub",
        &format!("{prefix}/#"),
    );
    wait_until("subscriber", || {
        sub.subscribed.load(std::sync::atomic::Ordering::SeqCst)
    })
    .await;
    let gw = Gateway::new();
    let (_down, deliver) = down_sink();
    let settings = bridge_settings(port, &ca.cert_pem, &ca.client(GATEWAY));
    let bridge = Bridge::spawn(settings, gw.queue.clone(), deliver, gw.audit.clone()).unwrap();
    wait_until("bridge connected", || bridge.status().connected).await;

    const UIDS: usize = 4;
    const N: usize = 20_000;
    let msgs: Vec<Message> = (0..N)
        .map(|i| {
            let uid = format!("s{}", i % UIDS);
            msg(&uid, "seq", format!("{uid}:{}", i / UIDS))
        })
        .collect();
    submit_all(&gw, msgs).await;
    sub.wait_for("the stream to be under way", |r| r.len() >= 500)
        .await;
    mq.stop();
    let left = gw.queue.len();
    wait_until("bridge notices the outage", || !bridge.status().connected).await;
    mq.start();
    sub.wait_for("every message", |r| {
        r.iter()
            .map(|(_, p)| p.clone())
            .collect::<HashSet<_>>()
            .len()
            >= N
    })
    .await;
    wait_until("queue drained", || gw.queue.is_empty()).await;
    let st = bridge.status();
    let report = Delivery::of(&sub.snapshot(), &prefix, UIDS, N);
    println!(
        "mid-stream outage: {N} messages, {left} still queued at the stop: {report}; bridge \
         sent {} acked {} reconnects {}",
        st.sent, st.acked, st.reconnects
    );
    report.assert_complete();
    assert!(st.reconnects >= 1);
    bridge.shutdown().await;
}

/// Threat: ST-G-3 — a broker whose certificate comes from another CA, or from the right CA
/// for another name, gets nothing: the handshake fails before any MQTT packet, the refusal
/// is audited as `bridge.refused`, and the queue keeps every message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rogue_broker_gets_nothing() {
    let ca = Ca::new("upstream CA");
    let rogue_ca = Ca::new("rogue CA");
    let gateway_leaf = ca.client(GATEWAY);
    let cases = [
        (
            "certificate from another CA",
            rogue_ca.server(&["127.0.0.1"]),
            // The rogue would even accept our certificate.
            format!("{}{}", rogue_ca.cert_pem, ca.cert_pem),
        ),
        (
            "certificate for another name",
            ca.server(&["upstream.example"]),
            ca.cert_pem.clone(),
        ),
    ];
    for (case, server, client_cas) in cases {
        let broker_dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mq = Mosquitto::start_new(broker_dir.path(), port, &client_cas, &server);
        let gw = Gateway::new();
        submit_all(
            &gw,
            (0..5).map(|i| msg("s1", "temp", format!("{i}"))).collect(),
        )
        .await;
        let (_down, deliver) = down_sink();
        let settings = bridge_settings(port, &ca.cert_pem, &gateway_leaf);
        let bridge = Bridge::spawn(settings, gw.queue.clone(), deliver, gw.audit.clone()).unwrap();
        let refused = gw.wait_audit("bridge.refused").await;
        assert_eq!(refused.1, "denied", "{case}");
        println!("{case}: {}", refused.2);
        let st = bridge.status();
        assert!(!st.connected, "{case}");
        assert_eq!(st.sent, 0, "{case}");
        assert!(
            st.last_error
                .as_deref()
                .is_some_and(|e| e.contains("certificate")),
            "{case}: {st:?}"
        );
        bridge.shutdown().await;
        assert_eq!(gw.queue.len(), 5, "{case}: the queue keeps everything");
        assert!(gw.audit_events("bridge.connected").is_empty(), "{case}");
        // The broker never saw an MQTT CONNECT.
        let log = mq.log();
        assert!(!log.contains("New client connected"), "{case}: {log}");
    }
}
