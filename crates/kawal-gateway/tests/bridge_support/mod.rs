//! Helpers for the bridge tests: a throw-away PKI (rcgen), a real Mosquitto on a loopback
//! port (killed on drop), a small MQTT test client over mutual TLS, and a queue, store and
//! audit log in a temporary folder.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers: a failure should stop the test loudly"
)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kawal_audit::{AuditLog, AuditOptions, FileAnchorStore, SystemClock};
use kawal_crypto::keys::{AuditSigning, KeyHierarchy, KeyVersion};
use kawal_crypto::root::RootSecret;
use kawal_gateway::bridge::{BridgeSettings, ClientIdentity, parse_frame};
use kawal_gateway::queue::{Queue, QueueSettings};
use kawal_store::{Sharing, Store};
use mqtt_proto::v3::{Connect, Packet, Publish, Subscribe};
use mqtt_proto::{Pid, QoS, QosPid, TopicFilter, TopicName};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use zeroize::Zeroizing;

/// Upper bound of any single wait in these tests.
pub const WAIT: Duration = Duration::from_secs(30);
/// The gateway's UID in the tests.
pub const GATEWAY: &str = "KWL-GW-TEST";

/// A test certificate authority (ECDSA P-256).
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pub cert_pem: String,
}

/// A certificate with its key.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub key_der: Vec<u8>,
}

impl Ca {
    pub fn new(name: &str) -> Self {
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
            key_der: key.serialize_der(),
        }
    }

    /// A broker certificate for the given names.
    pub fn server(&self, sans: &[&str]) -> Leaf {
        self.issue("upstream broker", sans, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate whose CN Mosquitto takes as the user name.
    pub fn client(&self, cn: &str) -> Leaf {
        self.issue(cn, &[], ExtendedKeyUsagePurpose::ClientAuth)
    }
}

pub use kawal_testkit::free_port;

/// A Mosquitto process; killed (SIGKILL) when dropped.
pub struct Mosquitto {
    child: Option<Child>,
    pub port: u16,
    conf: PathBuf,
    log: PathBuf,
}

impl Mosquitto {
    /// Writes a mutual-TLS Mosquitto configuration into `dir` (which holds the broker's
    /// persistence too) and starts the broker.
    pub fn start_new(dir: &Path, port: u16, client_ca_pem: &str, server: &Leaf) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("ca.pem"), client_ca_pem).unwrap();
        std::fs::write(dir.join("server.pem"), &server.cert_pem).unwrap();
        std::fs::write(dir.join("server.key"), &server.key_pem).unwrap();
        let d = dir.display();
        let conf = format!(
            "# Test-only configuration (loopback, throw-away PKI).\n\
             listener {port} 127.0.0.1\n\
             cafile {d}/ca.pem\n\
             certfile {d}/server.pem\n\
             keyfile {d}/server.key\n\
             require_certificate true\n\
             use_identity_as_username true\n\
             allow_anonymous false\n\
             # Tests may run as root; stay as the invoking user so the files stay readable.\n\
             user root\n\
             persistence true\n\
             persistence_location {d}/\n\
             max_queued_messages 100000\n\
             log_dest file {d}/mosquitto.log\n\
             log_type error\n\
             log_type warning\n\
             log_type notice\n\
             log_type information\n"
        );
        let conf_path = dir.join("unsafe.mosquitto.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let mut m = Self {
            child: None,
            port,
            conf: conf_path,
            log: dir.join("mosquitto.log"),
        };
        m.start();
        m
    }

    /// (Re)starts the broker with its configuration, waiting until it accepts connections.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new("/usr/sbin/mosquitto")
            .arg("-c")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto");
        self.child = Some(child);
        let deadline = Instant::now() + WAIT;
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!("mosquitto exited: {status}; log:\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "mosquitto did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the broker cleanly (SIGTERM: it saves its sessions) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kawal_testkit::stop_gracefully(&mut child, WAIT);
        }
    }

    /// The broker's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A rustls connector trusting `ca` and presenting `leaf` (the test clients).
pub fn connector(ca: &Ca, leaf: &Leaf) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca.cert_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let chain = CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf.key_der.clone()));
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .unwrap();
    TlsConnector::from(Arc::new(config))
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

async fn send(s: &mut Tls, p: Packet) -> std::io::Result<()> {
    s.write_all(p.encode().unwrap().as_ref()).await?;
    s.flush().await
}

async fn recv(s: &mut Tls, buf: &mut BytesMut) -> std::io::Result<Packet> {
    loop {
        if let Some(p) = parse_frame(buf, 1 << 20).map_err(std::io::Error::other)? {
            return Ok(p);
        }
        buf.reserve(4096);
        if s.read_buf(buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
}

async fn connect(
    tls: &TlsConnector,
    port: u16,
    client_id: &str,
    clean: bool,
) -> std::io::Result<(Tls, BytesMut)> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    let mut s = tls
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await?;
    let mut c = Connect::new(client_id.into(), 30);
    c.clean_session = clean;
    send(&mut s, Packet::Connect(c)).await?;
    let mut buf = BytesMut::new();
    match recv(&mut s, &mut buf).await? {
        Packet::Connack(_) => Ok((s, buf)),
        other => Err(std::io::Error::other(format!("{other:?}"))),
    }
}

/// A subscriber with a persistent session that reconnects until stopped and records what it
/// receives, in order.
pub struct Subscriber {
    pub received: Arc<Mutex<Vec<(String, Bytes)>>>,
    pub subscribed: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Subscriber {
    pub fn spawn(tls: TlsConnector, port: u16, client_id: &str, filter: &str) -> Self {
        let received = Arc::new(Mutex::new(Vec::new()));
        let subscribed = Arc::new(AtomicBool::new(false));
        let (r, sub, id, filter) = (
            received.clone(),
            subscribed.clone(),
            client_id.to_owned(),
            filter.to_owned(),
        );
        let task = tokio::spawn(async move {
            loop {
                sub.store(false, Ordering::SeqCst);
                let _ = Self::session(&tls, port, &id, &filter, &r, &sub).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Self {
            received,
            subscribed,
            task,
        }
    }

    async fn session(
        tls: &TlsConnector,
        port: u16,
        id: &str,
        filter: &str,
        received: &Mutex<Vec<(String, Bytes)>>,
        subscribed: &AtomicBool,
    ) -> std::io::Result<()> {
        let (mut s, mut buf) = connect(tls, port, id, false).await?;
        let f = TopicFilter::try_from(filter).unwrap();
        send(
            &mut s,
            Packet::Subscribe(Subscribe::new(
                Pid::try_from(1).unwrap(),
                vec![(f, QoS::Level1)],
            )),
        )
        .await?;
        loop {
            match recv(&mut s, &mut buf).await? {
                Packet::Suback(_) => subscribed.store(true, Ordering::SeqCst),
                Packet::Publish(p) => {
                    received
                        .lock()
                        .unwrap()
                        .push((p.topic_name.to_string(), p.payload.clone()));
                    if let QosPid::Level1(pid) = p.qos_pid {
                        send(&mut s, Packet::Puback(pid)).await?;
                    }
                }
                _ => {}
            }
        }
    }

    pub fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    pub fn snapshot(&self) -> Vec<(String, Bytes)> {
        self.received.lock().unwrap().clone()
    }

    /// Waits (bounded) until `pred` holds for what was received.
    pub async fn wait_for(&self, what: &str, pred: impl Fn(&[(String, Bytes)]) -> bool) {
        let deadline = Instant::now() + WAIT * 2;
        while !pred(&self.snapshot()) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; have {}",
                self.count()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Publishes one QoS 1 message as `client_id` and waits for its PUBACK.
pub async fn publish(tls: &TlsConnector, port: u16, client_id: &str, topic: &str, payload: &str) {
    let (mut s, mut buf) = connect(tls, port, client_id, true).await.unwrap();
    let p = Publish::new(
        QosPid::Level1(Pid::try_from(1).unwrap()),
        TopicName::try_from(topic).unwrap(),
        Bytes::from(payload.to_owned()),
    );
    send(&mut s, Packet::Publish(p)).await.unwrap();
    let ack = tokio::time::timeout(WAIT, recv(&mut s, &mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(ack, Packet::Puback(_)), "{ack:?}");
    let _ = send(&mut s, Packet::Disconnect).await;
}

/// A gateway's state in a temporary folder: store, queue, audit log.
pub struct Gateway {
    pub dir: tempfile::TempDir,
    pub keys: Arc<KeyHierarchy>,
    pub store: Arc<Store>,
    pub queue: Arc<Queue>,
    pub audit: Arc<AuditLog>,
}

impl Gateway {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let keys = Arc::new(KeyHierarchy::new(RootSecret::generate().unwrap()));
        let store = Arc::new(
            Store::create(
                &dir.path().join("store.redb"),
                keys.clone(),
                Sharing::Exclusive,
            )
            .unwrap(),
        );
        let queue = Queue::open(store.clone(), QueueSettings::default()).unwrap();
        let signer = keys
            .signing::<AuditSigning>(&KeyVersion::new(1).unwrap())
            .unwrap();
        let audit = Arc::new(
            AuditLog::open(
                dir.path(),
                GATEWAY,
                Arc::new(signer),
                Arc::new(FileAnchorStore::new(dir.path().join("anchor.json"))),
                Arc::new(SystemClock::new()),
                AuditOptions::default(),
            )
            .unwrap(),
        );
        Self {
            dir,
            keys,
            store,
            queue,
            audit,
        }
    }

    /// Drops the queue and opens it again on the same store, as after a restart.
    pub fn restart_queue(&mut self) {
        let weak = Arc::downgrade(&self.queue);
        self.queue = Queue::open(self.store.clone(), QueueSettings::default()).unwrap();
        // Whoever still held the old queue (a bridge being stopped) lets go shortly.
        let deadline = Instant::now() + WAIT;
        while weak.strong_count() > 0 {
            assert!(Instant::now() < deadline, "old queue still in use");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Audit entries whose event starts with `prefix`, as (event, outcome, details).
    pub fn audit_events(&self, prefix: &str) -> Vec<(String, String, String)> {
        let filter = kawal_audit::Filter {
            event_prefix: Some(prefix.to_owned()),
            ..Default::default()
        };
        kawal_audit::read_entries(self.dir.path(), filter)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.event.clone(),
                    e.outcome.as_str().to_owned(),
                    format!("{:?}", e.details),
                )
            })
            .collect()
    }

    /// Waits (bounded) until an audit event named `name` exists.
    pub async fn wait_audit(&self, name: &str) -> (String, String, String) {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(e) = self.audit_events(name).into_iter().find(|e| e.0 == name) {
                return e;
            }
            assert!(Instant::now() < deadline, "no audit event {name}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Bridge settings for a broker on 127.0.0.1:`port` trusting `ca`, as the gateway `leaf`,
/// with short back-off for the tests.
pub fn bridge_settings(port: u16, ca_pem: &str, leaf: &Leaf) -> BridgeSettings {
    let mut s = BridgeSettings::new(
        "127.0.0.1",
        "127.0.0.1",
        ca_pem,
        ClientIdentity {
            cert_chain_pem: leaf.cert_pem.clone(),
            key_pkcs8_der: Zeroizing::new(leaf.key_der.clone()),
        },
        GATEWAY,
    );
    s.port = port;
    s.backoff_min = Duration::from_millis(100);
    s.backoff_max = Duration::from_millis(800);
    s.keepalive = Duration::from_secs(5);
    s
}

/// Waits (bounded) until `pred` holds.
pub async fn wait_until(what: &str, pred: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT * 2;
    while !pred() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
