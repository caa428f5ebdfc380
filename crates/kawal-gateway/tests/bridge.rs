//! The upstream bridge against a real Mosquitto 2.0 over mutual TLS on loopback: telemetry
//! arrives under the mapped topic, nothing accepted is lost across an upstream outage,
//! commands come back down, a rogue broker gets nothing, and a renewed device certificate is
//! presented without a restart.
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
use std::time::Duration;

use bridge_support::{
    Ca, GATEWAY, Gateway, Leaf, Mosquitto, Subscriber, bridge_settings, connector, free_port,
    publish, wait_until,
};
use bytes::Bytes;
use kawal_gateway::bridge::{Bridge, BridgeHandle, ClientIdentity, DeliverDown, Error};
use kawal_gateway::{Message, Uplink};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use zeroize::Zeroizing;

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

/// An upstream Mosquitto on `port` (in its own folder, kept as long as this lives) with a
/// subscriber, already subscribed, to everything the gateway sends there.
struct Upstream {
    dir: tempfile::TempDir,
    mq: Mosquitto,
    sub: Subscriber,
    prefix: String,
}

async fn upstream(ca: &Ca, port: u16) -> Upstream {
    let dir = tempfile::tempdir().unwrap();
    let mq = Mosquitto::start_new(dir.path(), port, &ca.cert_pem, &ca.server(&["127.0.0.1"]));
    let prefix = format!("kawal/gw/{GATEWAY}");
    let sub = Subscriber::spawn(
        connector(ca, &ca.client("test-sub")),
        port,
        "test-sub",
        &format!("{prefix}/#"),
    );
    wait_until("subscriber", || {
        sub.subscribed.load(std::sync::atomic::Ordering::SeqCst)
    })
    .await;
    Upstream {
        dir,
        mq,
        sub,
        prefix,
    }
}

/// Threat: ST-G-3 — telemetry goes upstream over mutual TLS under
/// `kawal/gw/<gateway>/<uid>/up/...`, and commands published upstream to
/// `<prefix>/<uid>/down/x` reach the broker as `kawal/<uid>/down/x`.
/// G045: DS-1-2 — a message leaves the queue only once the upstream acknowledged it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_goes_up_and_commands_come_down() {
    let ca = Ca::new("upstream CA");
    let port = free_port();
    let Upstream {
        dir: _broker_dir,
        mq: _mq,
        sub,
        prefix,
    } = upstream(&ca, port).await;

    let gw = Gateway::new();
    let (down, deliver) = down_sink();
    let mut settings = bridge_settings(port, &ca.cert_pem, &ca.client(GATEWAY));
    settings.keepalive = Duration::from_secs(1);
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
    tokio::time::sleep(Duration::from_millis(3500)).await;
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
    let port = free_port();
    // A persistent session: the broker keeps what arrives while the subscriber reconnects.
    let Upstream {
        dir: _broker_dir,
        mut mq,
        sub,
        prefix,
    } = upstream(&ca, port).await;
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

    let Upstream {
        dir: _broker_dir,
        mq: _mq,
        sub,
        prefix,
    } = upstream(&ca, port).await;
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
    let port = free_port();
    let Upstream {
        dir: _broker_dir,
        mut mq,
        sub,
        prefix,
    } = upstream(&ca, port).await;
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

fn identity(leaf: &Leaf) -> ClientIdentity {
    ClientIdentity {
        cert_chain_pem: leaf.cert_pem.clone(),
        key_pkcs8_der: Zeroizing::new(leaf.key_der.clone()),
    }
}

fn leaf_sha256(leaf: &Leaf) -> String {
    let der = CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).unwrap();
    hex::encode(kawal_crypto::sha256(&der))
}

/// Mosquitto's log line part for a client whose certificate CN is `cn`
/// (`use_identity_as_username`).
fn as_user(cn: &str) -> String {
    format!("as {GATEWAY} (p2, c0, k5, u'{cn}')")
}

/// `n` messages `"<uid>:<i>"` over `uids` sensors, numbered from `from`.
fn seq_msgs(uids: usize, from: usize, n: usize) -> Vec<Message> {
    (from..from + n)
        .map(|i| {
            let uid = format!("s{}", i % uids);
            msg(&uid, "seq", format!("{uid}:{}", i / uids))
        })
        .collect()
}

/// `reload_identity` from a blocking thread, as the daemon's renewal calls it.
async fn reload(bridge: &Arc<BridgeHandle>, id: ClientIdentity) -> Result<(), Error> {
    let b = Arc::clone(bridge);
    tokio::task::spawn_blocking(move || b.reload_identity(id))
        .await
        .unwrap()
}

/// G045: AU-1-10 — a renewed device certificate is in force without a restart: after
/// `reload_identity` the bridge ends its session with DISCONNECT, reconnects at once (well
/// within its back-off) and the upstream sees the new certificate; messages queued before,
/// during and after the reload all arrive, in order per sensor; the reload is audited with the
/// new leaf's SHA-256.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewed_identity_is_presented_without_restart() {
    let ca = Ca::new("upstream CA");
    let (cert_a, cert_b) = (ca.client("gateway-cert-A"), ca.client("gateway-cert-B"));
    let port = free_port();
    let Upstream {
        dir: _broker_dir,
        mq,
        sub,
        prefix,
    } = upstream(&ca, port).await;
    let gw = Gateway::new();
    let (_down, deliver) = down_sink();
    let mut settings = bridge_settings(port, &ca.cert_pem, &cert_a);
    // Far beyond the wait for the new session below: a reconnect in time did not back off.
    settings.backoff_min = Duration::from_secs(25);
    settings.backoff_max = Duration::from_secs(25);
    let bridge =
        Arc::new(Bridge::spawn(settings, gw.queue.clone(), deliver, gw.audit.clone()).unwrap());
    wait_until("bridge connected as A", || bridge.status().connected).await;
    assert_eq!(bridge.status().identity_sha256, Some(leaf_sha256(&cert_a)));
    wait_until("upstream saw A", || {
        mq.log().contains(&as_user("gateway-cert-A"))
    })
    .await;

    const UIDS: usize = 4;
    const BEFORE: usize = 4000;
    const AFTER: usize = 1000;
    submit_all(&gw, seq_msgs(UIDS, 0, BEFORE)).await;
    sub.wait_for("the stream to be under way", |r| r.len() >= 200)
        .await;
    reload(&bridge, identity(&cert_b)).await.unwrap();
    let left = gw.queue.len();
    assert_eq!(bridge.status().identity_sha256, Some(leaf_sha256(&cert_b)));
    submit_all(&gw, seq_msgs(UIDS, BEFORE, AFTER)).await;

    tokio::time::timeout(Duration::from_secs(5), async {
        while !mq.log().contains(&as_user("gateway-cert-B")) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("upstream did not see B within 5 s:\n{}", mq.log()));

    const N: usize = BEFORE + AFTER;
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
        "identity reload: {N} messages, {left} still queued at the reload: {report}; bridge \
         sent {} acked {} reconnects {}",
        st.sent, st.acked, st.reconnects
    );
    report.assert_complete();
    assert!(st.connected, "{st:?}");
    assert_eq!(st.reconnects, 1, "{st:?}");

    // The session as A ended with DISCONNECT ("disconnected", not "closed its connection"),
    // before the one as B began.
    let log = mq.log();
    let bye = log
        .find(&format!("Client {GATEWAY} disconnected."))
        .unwrap_or_else(|| panic!("no clean disconnect:\n{log}"));
    let as_b = log.find(&as_user("gateway-cert-B")).unwrap();
    assert!(bye < as_b, "{log}");
    assert!(
        !log.contains(&format!("Client {GATEWAY} closed its connection")),
        "{log}"
    );

    let ev = gw.wait_audit("bridge.identity-reloaded").await;
    assert_eq!(ev.1, "success");
    assert!(ev.2.contains(&leaf_sha256(&cert_b)), "{ev:?}");
    assert!(ev.2.contains("new_cert_sha256"), "{ev:?}");
    let bye = gw.wait_audit("bridge.disconnected").await;
    assert_eq!(bye.1, "info");
    assert!(bye.2.contains("identity reloaded"), "{bye:?}");
    bridge.shutdown().await;
}

/// G045: AU-1-10 — a renewal that cannot be put in force (a certificate with a key that is
/// not its own, or no certificate at all) is refused by `reload_identity` and changes nothing:
/// the session as A stays up and keeps delivering, and each refusal is audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_renewal_is_refused_and_the_old_identity_stays() {
    let ca = Ca::new("upstream CA");
    let (cert_a, cert_b) = (ca.client("gateway-cert-A"), ca.client("gateway-cert-B"));
    let port = free_port();
    let Upstream {
        dir: _broker_dir,
        mq,
        sub,
        prefix,
    } = upstream(&ca, port).await;
    let gw = Gateway::new();
    let (_down, deliver) = down_sink();
    let settings = bridge_settings(port, &ca.cert_pem, &cert_a);
    let bridge =
        Arc::new(Bridge::spawn(settings, gw.queue.clone(), deliver, gw.audit.clone()).unwrap());
    wait_until("bridge connected as A", || bridge.status().connected).await;
    submit_all(&gw, seq_msgs(2, 0, 4)).await;
    sub.wait_for("the first messages", |r| r.len() >= 4).await;

    // B's certificate with A's key.
    let mismatched = ClientIdentity {
        cert_chain_pem: cert_b.cert_pem.clone(),
        key_pkcs8_der: Zeroizing::new(cert_a.key_der.clone()),
    };
    let err = reload(&bridge, mismatched).await.unwrap_err();
    assert!(matches!(err, Error::Tls(_)), "{err}");
    let no_cert = ClientIdentity {
        cert_chain_pem: "not a certificate".into(),
        key_pkcs8_der: Zeroizing::new(cert_b.key_der.clone()),
    };
    let err = reload(&bridge, no_cert).await.unwrap_err();
    assert!(matches!(err, Error::ClientCert(_)), "{err}");

    let st = bridge.status();
    assert_eq!(st.identity_sha256, Some(leaf_sha256(&cert_a)));
    submit_all(&gw, seq_msgs(2, 4, 4)).await;
    sub.wait_for("the later messages", |r| r.len() >= 8).await;
    wait_until("queue drained", || gw.queue.is_empty()).await;
    Delivery::of(&sub.snapshot(), &prefix, 2, 8).assert_complete();
    let st = bridge.status();
    assert!(st.connected && st.reconnects == 0, "{st:?}");

    let log = mq.log();
    assert!(log.contains(&as_user("gateway-cert-A")), "{log}");
    assert!(!log.contains("u'gateway-cert-B'"), "{log}");
    assert!(
        !log.contains(&format!("Client {GATEWAY} disconnected")),
        "{log}"
    );
    wait_until("both refusals audited", || {
        gw.audit_events("bridge.identity-reloaded").len() >= 2
    })
    .await;
    let events = gw.audit_events("bridge.identity-reloaded");
    assert!(events.iter().all(|e| e.1 == "failure"), "{events:?}");
    bridge.shutdown().await;
}
