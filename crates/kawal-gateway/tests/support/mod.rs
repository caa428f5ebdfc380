//! Helpers for the broker tests: a test PKI (rcgen), a fake registry, an in-memory uplink,
//! an audit log in a temp folder, a running server, and a minimal MQTT client over mutual TLS
//! built on the crate's own frame encoder.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers: a failure should stop the test loudly"
)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kawal_audit::{AuditLog, AuditOptions, FileAnchorStore, SystemClock};
use kawal_crypto::keys::{AuditSigning, KeyHierarchy, KeyVersion};
use kawal_crypto::root::RootSecret;
use kawal_gateway::acl::AclConfig;
use kawal_gateway::frame::{self, FrameError};
use kawal_gateway::limits::Settings;
use kawal_gateway::server::{Server, ServerParts, TlsMaterial};
use kawal_gateway::{Directory, Identity, Message, Refusal, Uplink, UplinkRefusal};
use mqtt_proto::v3::{Connect, ConnectReturnCode, Packet, Publish, Subscribe};
use mqtt_proto::{Pid, QoS, QosPid, TopicFilter, TopicName};
use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, RevocationReason, RevokedCertParams, SanType, SerialNumber,
};
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Upper bound of any single wait in these tests.
pub const WAIT: Duration = Duration::from_secs(20);
/// The gateway's UID (the audit log's device).
pub const GATEWAY: &str = "KWL-GW-TEST";

/// A test CA (ECDSA P-256).
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pub cert: CertificateDer<'static>,
    pub cert_pem: String,
}

/// A certificate and its key.
pub struct Leaf {
    pub cert: CertificateDer<'static>,
    pub cert_pem: String,
    pub key_pem: String,
    pub key_der: Vec<u8>,
}

impl Leaf {
    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }
}

/// A sensor certificate's fields: CN = uid, SAN URI `urn:kawal:sensor:<uid>`, clientAuth,
/// digitalSignature.
fn sensor_params(uid: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, uid);
    params.subject_alt_names = vec![SanType::URI(
        Ia5String::try_from(format!("urn:kawal:sensor:{uid}")).unwrap(),
    )];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params
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
            cert: cert.der().clone(),
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    fn sign(&self, params: &CertificateParams) -> Leaf {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert: cert.der().clone(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            key_der: key.serialize_der(),
        }
    }

    /// A sensor certificate: CN = uid, SAN URI `urn:kawal:sensor:<uid>`, clientAuth,
    /// digitalSignature.
    pub fn sensor(&self, uid: &str) -> Leaf {
        self.sensor_with_serial(uid, None)
    }

    pub fn sensor_with_serial(&self, uid: &str, serial: Option<&[u8]>) -> Leaf {
        let mut params = sensor_params(uid);
        params.serial_number = serial.map(SerialNumber::from_slice);
        self.sign(&params)
    }

    /// A sensor certificate valid from `from` to `to` (year, month, day; UTC midnight) only.
    pub fn sensor_valid(&self, uid: &str, from: (i32, u8, u8), to: (i32, u8, u8)) -> Leaf {
        let mut params = sensor_params(uid);
        params.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
        params.not_after = rcgen::date_time_ymd(to.0, to.1, to.2);
        self.sign(&params)
    }

    /// A certificate with only a CN (no sensor URI).
    pub fn cn_only(&self, cn: &str) -> Leaf {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(&params)
    }

    /// A CRL of this CA revoking the certificates with these serials.
    pub fn crl(&self, serials: &[&[u8]]) -> CertificateRevocationListDer<'static> {
        let params = CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2024, 1, 1),
            next_update: rcgen::date_time_ymd(2099, 1, 1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(s),
                    revocation_time: rcgen::date_time_ymd(2024, 1, 2),
                    reason_code: Some(RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        params.signed_by(&self.issuer).unwrap().der().clone()
    }

    /// The gateway's server certificate for 127.0.0.1.
    pub fn server(&self) -> Leaf {
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "kawal gateway");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(&params)
    }
}

/// The registry: who is enrolled with which role, and who is refused why.
#[derive(Default)]
pub struct FakeDirectory {
    pub sensors: Mutex<HashMap<String, Result<String, Refusal>>>,
    pub seen: Mutex<Vec<String>>,
}

impl FakeDirectory {
    pub fn with(entries: &[(&str, Result<&str, Refusal>)]) -> Arc<Self> {
        let d = Self::default();
        for (uid, r) in entries {
            d.sensors
                .lock()
                .unwrap()
                .insert((*uid).to_owned(), r.map(str::to_owned));
        }
        Arc::new(d)
    }

    pub fn set(&self, uid: &str, r: Result<&str, Refusal>) {
        self.sensors
            .lock()
            .unwrap()
            .insert(uid.to_owned(), r.map(str::to_owned));
    }
}

impl Directory for FakeDirectory {
    fn admit(&self, id: &Identity) -> Result<String, Refusal> {
        self.sensors
            .lock()
            .unwrap()
            .get(&id.uid)
            .cloned()
            .unwrap_or(Err(Refusal::NotEnrolled))
    }

    fn seen(&self, uid: &str) {
        self.seen.lock().unwrap().push(uid.to_owned());
    }
}

/// An uplink that keeps messages in memory and answers as told.
#[derive(Default)]
pub struct MemUplink {
    pub got: Mutex<Vec<Message>>,
    pub refuse: Mutex<Option<UplinkRefusal>>,
}

impl Uplink for MemUplink {
    fn submit(&self, msg: Message) -> tokio::sync::oneshot::Receiver<Result<(), UplinkRefusal>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let refuse = *self.refuse.lock().unwrap();
        match refuse {
            Some(r) => {
                let _ = tx.send(Err(r));
            }
            None => {
                self.got.lock().unwrap().push(msg);
                let _ = tx.send(Ok(()));
            }
        }
        rx
    }
}

impl MemUplink {
    pub fn messages(&self) -> Vec<Message> {
        self.got.lock().unwrap().clone()
    }
}

/// A running server with everything around it.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub ca: Ca,
    pub server_leaf: Leaf,
    pub directory: Arc<FakeDirectory>,
    pub uplink: Arc<MemUplink>,
    pub audit: Arc<AuditLog>,
    pub server: Server,
}

pub fn open_audit(dir: &std::path::Path) -> Arc<AuditLog> {
    let keys = KeyHierarchy::new(RootSecret::generate().unwrap());
    let signer = keys
        .signing::<AuditSigning>(&KeyVersion::new(1).unwrap())
        .unwrap();
    Arc::new(
        AuditLog::open(
            dir,
            GATEWAY,
            Arc::new(signer),
            Arc::new(FileAnchorStore::new(dir.join("anchor.json"))),
            Arc::new(SystemClock::new()),
            AuditOptions::default(),
        )
        .unwrap(),
    )
}

impl Fixture {
    /// A server on 127.0.0.1:0 with `settings` and sensors `s1`, `s2` (role sensor) and `r1`
    /// (role reader) enrolled.
    pub async fn start(settings: Settings) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("kawal test sensor CA");
        let server_leaf = ca.server();
        let directory = FakeDirectory::with(&[
            ("s1", Ok("sensor")),
            ("s2", Ok("sensor")),
            ("r1", Ok("reader")),
        ]);
        let uplink = Arc::new(MemUplink::default());
        let audit = open_audit(dir.path());
        let tls = TlsMaterial {
            chain: vec![server_leaf.cert.clone()],
            key: server_leaf.key(),
            sensor_roots: vec![ca.cert.clone()],
            external_roots: Vec::new(),
            crls: Vec::new(),
            clock_floor: None,
        };
        let server = Server::bind(
            "127.0.0.1:0".parse().unwrap(),
            ServerParts {
                settings,
                acl: AclConfig::default(),
                tls,
                directory: directory.clone(),
                uplink: uplink.clone(),
                audit: audit.clone(),
            },
        )
        .await
        .unwrap();
        Self {
            dir,
            ca,
            server_leaf,
            directory,
            uplink,
            audit,
            server,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// A connector that trusts the test CA and presents `leaf`.
    pub fn connector(&self, leaf: &Leaf) -> TlsConnector {
        connector(&self.ca, Some(leaf))
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

    /// Waits (bounded) for an audit event named `name` whose details contain `needle`.
    pub async fn wait_audit(&self, name: &str, needle: &str) -> (String, String, String) {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(e) = self
                .audit_events(name)
                .into_iter()
                .find(|e| e.0 == name && e.2.contains(needle))
            {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "no audit event {name} with {needle}; have {:#?}",
                self.audit_events("mqtt")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn stop(self) {
        self.server.shutdown().await;
    }
}

/// A connector trusting `ca` (for the server certificate) and presenting `leaf`, if any.
pub fn connector(ca: &Ca, leaf: Option<&Leaf>) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert.clone()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let config = match leaf {
        Some(leaf) => builder
            .with_client_auth_cert(vec![leaf.cert.clone()], leaf.key())
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    TlsConnector::from(Arc::new(config))
}

/// Waits (bounded) until `pred` holds.
pub async fn wait_until(what: &str, pred: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !pred() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// A minimal MQTT 3.1.1 client.
pub struct Client {
    pub s: Tls,
}

impl Client {
    /// TCP + TLS only.
    pub async fn tls(addr: SocketAddr, tls: &TlsConnector) -> std::io::Result<Self> {
        let tcp = TcpStream::connect(addr).await?;
        let s = tls
            .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
            .await?;
        Ok(Self { s })
    }

    /// TLS, CONNECT with `client_id`, and the CONNACK's return code.
    pub async fn connect(
        addr: SocketAddr,
        tls: &TlsConnector,
        client_id: &str,
    ) -> std::io::Result<(Self, ConnectReturnCode)> {
        let mut c = Self::tls(addr, tls).await?;
        c.send(&Packet::Connect(Connect::new(client_id.into(), 30)))
            .await?;
        match c.recv().await {
            Ok(Packet::Connack(a)) => Ok((c, a.code)),
            Ok(other) => Err(std::io::Error::other(format!("{other:?}"))),
            Err(e) => Err(std::io::Error::other(e.to_string())),
        }
    }

    /// Connects and asserts that the gateway accepted.
    pub async fn connected(addr: SocketAddr, tls: &TlsConnector, client_id: &str) -> Self {
        let (c, code) = Self::connect(addr, tls, client_id).await.unwrap();
        assert_eq!(code, ConnectReturnCode::Accepted);
        c
    }

    pub async fn send(&mut self, p: &Packet) -> std::io::Result<()> {
        let bytes = frame::encode(p).unwrap();
        self.send_raw(&bytes).await
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.s.write_all(bytes).await?;
        self.s.flush().await
    }

    /// The next packet (bounded wait).
    pub async fn recv(&mut self) -> Result<Packet, FrameError> {
        match tokio::time::timeout(WAIT, frame::read_packet(&mut self.s, 1 << 20)).await {
            Ok(r) => r.map(|(p, _)| p),
            Err(_) => Err(FrameError::Io(std::io::ErrorKind::TimedOut.into())),
        }
    }

    /// Whether the gateway closes the connection (within the bounded wait), skipping any
    /// packets it still sends.
    pub async fn is_closed(&mut self) -> bool {
        loop {
            match self.recv().await {
                Ok(_) => {}
                Err(FrameError::Io(e)) if e.kind() == std::io::ErrorKind::TimedOut => {
                    return false;
                }
                Err(_) => return true,
            }
        }
    }

    pub async fn publish(&mut self, topic: &str, payload: &[u8], pid: Option<u16>) {
        let qos_pid = match pid {
            Some(p) => QosPid::Level1(Pid::try_from(p).unwrap()),
            None => QosPid::Level0,
        };
        let p = Publish::new(
            qos_pid,
            TopicName::try_from(topic).unwrap(),
            Bytes::copy_from_slice(payload),
        );
        self.send(&Packet::Publish(p)).await.unwrap();
    }

    /// SUBSCRIBE and the SUBACK's codes.
    pub async fn subscribe(
        &mut self,
        filters: &[&str],
    ) -> Vec<mqtt_proto::v3::SubscribeReturnCode> {
        let topics = filters
            .iter()
            .map(|f| (TopicFilter::try_from(*f).unwrap(), QoS::Level1))
            .collect();
        self.send(&Packet::Subscribe(Subscribe::new(
            Pid::try_from(1).unwrap(),
            topics,
        )))
        .await
        .unwrap();
        match self.recv().await.unwrap() {
            Packet::Suback(s) => s.topics,
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    /// The next PUBLISH (acknowledging QoS 1).
    pub async fn next_publish(&mut self) -> Publish {
        loop {
            match self.recv().await.unwrap() {
                Packet::Publish(p) => {
                    if let Some(pid) = p.qos_pid.pid() {
                        self.send(&Packet::Puback(pid)).await.unwrap();
                    }
                    return p;
                }
                Packet::Pingresp => {}
                other => panic!("expected PUBLISH, got {other:?}"),
            }
        }
    }
}
