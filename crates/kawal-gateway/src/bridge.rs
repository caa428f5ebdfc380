//! The upstream bridge: carries the [`Queue`] to an upstream MQTT broker over mutual TLS and
//! brings commands back down (threat ST-G-3; G045 DS-1-2).
//!
//! # Trust
//! The upstream is verified against [`BridgeSettings::ca_roots_pem`] only (the upstream's own
//! CA, pinned; never the system roots) and must present a certificate for
//! [`BridgeSettings::server_name`]. A broker with a certificate from another CA or for another
//! name fails the handshake before any MQTT byte is sent: it gets no telemetry, and the
//! refusal is written to the audit log as `bridge.refused`. The gateway proves itself with
//! its device certificate; no user name or password is sent. TLS is 1.3 or 1.2 with ECDHE and
//! AEAD suites only and the extended master secret, on the aws-lc-rs provider (the same
//! policy as the management interface, `kawal-api/src/tls.rs`).
//!
//! # Delivery
//! Every queued message is sent as a QoS 1 PUBLISH (QoS 0 ones as QoS 0), oldest first, with
//! at most [`BridgeSettings::inflight`] unacknowledged. A message leaves the queue only on the
//! upstream's PUBACK. After any disconnect the next session starts again from the oldest
//! unacknowledged message, so delivery is at least once and in sequence order (resent
//! messages carry the DUP flag).
//!
//! # Session
//! CONNECT uses `clean_session = false` by default: the upstream keeps the gateway's
//! subscription and queues QoS 1 commands while the gateway is away, so commands are not lost
//! in an outage either. The uplink does not depend on that session: the queue, not the
//! upstream, is the record of what is still to send.
//!
//! # Topics
//! A sensor's `kawal/<uid>/<rest>` goes up as `<up_prefix>/<uid>/<rest>` (any other topic as
//! `<up_prefix>/<uid>/<topic>`), so the segment after the prefix is always the UID proven by
//! the sensor's certificate. `<up_prefix>/<uid>/down/<rest>` coming down is handed to the
//! broker as `kawal/<uid>/down/<rest>`; anything else that arrives is dropped and logged.
//!
//! # Framing
//! Packets are cut here (ADR 0004): the fixed header and a remaining length of at most four
//! bytes are read first, a length over [`BridgeSettings::max_packet`] ends the session before
//! anything is buffered for it, and `mqtt_proto::v3::Packet::decode` sees complete frames
//! only.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use kawal_audit::{AuditLog, Event, Outcome};
use mqtt_proto::v3::{Connect, ConnectReturnCode, Packet, Publish, Subscribe, SubscribeReturnCode};
use mqtt_proto::{Pid, QoS, QosPid, TopicFilter, TopicName};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tokio_rustls::TlsConnector;
use zeroize::Zeroizing;

use crate::queue::{Queue, Queued};

/// The audit actor of bridge events.
const ACTOR: &str = "gateway-bridge";
/// How long a DISCONNECT may take at shutdown.
const GOODBYE: Duration = Duration::from_secs(2);

/// The gateway's TLS client identity towards the upstream.
pub struct ClientIdentity {
    /// One or more PEM `CERTIFICATE` blocks, the gateway's device certificate first.
    pub cert_chain_pem: String,
    /// The device certificate's private key, PKCS#8 DER; wiped on drop, never printed.
    pub key_pkcs8_der: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("cert_chain_pem_bytes", &self.cert_chain_pem.len())
            .field("key_pkcs8_der", &"[REDACTED]")
            .finish()
    }
}

/// Where and how to reach the upstream.
#[derive(Debug)]
pub struct BridgeSettings {
    /// Host name or address to connect to.
    pub host: String,
    /// TCP port (default 8883).
    pub port: u16,
    /// The name the upstream's certificate must carry (DNS name or IP address); also sent
    /// as SNI when it is a DNS name.
    pub server_name: String,
    /// PEM `CERTIFICATE` blocks: the only CAs trusted for the upstream (pinned).
    pub ca_roots_pem: String,
    /// The gateway's device certificate and key.
    pub identity: ClientIdentity,
    /// The gateway's UID: the default client ID and `{gateway}` in [`Self::up_prefix`].
    pub gateway_uid: String,
    /// MQTT client ID; `None` means [`Self::gateway_uid`].
    pub client_id: Option<String>,
    /// MQTT keep-alive (default 60 s; whole seconds, at most 65,535; zero turns it off).
    pub keepalive: Duration,
    /// Upstream topic prefix, `{gateway}` replaced by the gateway UID
    /// (default `kawal/gw/{gateway}`).
    pub up_prefix: String,
    /// The filter subscribed for commands; `None` means `<prefix>/+/down/#`.
    pub down_filter: Option<String>,
    /// Most QoS 1 messages sent and not yet acknowledged (default 32).
    pub inflight: usize,
    /// Shortest wait before reconnecting (default 1 s).
    pub backoff_min: Duration,
    /// Longest wait before reconnecting (default 60 s); waits are drawn uniformly between
    /// the minimum and an exponentially growing cap (full jitter).
    pub backoff_max: Duration,
    /// MQTT clean-session flag (default false: see the module docs).
    pub clean_session: bool,
    /// Largest packet accepted from the upstream, in bytes (default 1 MiB).
    pub max_packet: usize,
    /// Limit for TCP connect, TLS handshake and CONNACK each, and for one write
    /// (default 10 s).
    pub io_timeout: Duration,
}

impl BridgeSettings {
    /// Settings with every default, for the upstream at `host:8883`.
    pub fn new(
        host: impl Into<String>,
        server_name: impl Into<String>,
        ca_roots_pem: impl Into<String>,
        identity: ClientIdentity,
        gateway_uid: impl Into<String>,
    ) -> Self {
        Self {
            host: host.into(),
            port: 8883,
            server_name: server_name.into(),
            ca_roots_pem: ca_roots_pem.into(),
            identity,
            gateway_uid: gateway_uid.into(),
            client_id: None,
            keepalive: Duration::from_secs(60),
            up_prefix: "kawal/gw/{gateway}".into(),
            down_filter: None,
            inflight: 32,
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            clean_session: false,
            max_packet: 1 << 20,
            io_timeout: Duration::from_secs(10),
        }
    }

    /// The upstream prefix with `{gateway}` filled in.
    pub fn prefix(&self) -> String {
        self.up_prefix.replace("{gateway}", &self.gateway_uid)
    }

    /// The subscribed command filter.
    pub fn down_filter(&self) -> String {
        self.down_filter
            .clone()
            .unwrap_or_else(|| format!("{}/+/down/#", self.prefix()))
    }

    /// Every problem with these settings (empty when usable).
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.host.is_empty() {
            out.push("host is empty".to_owned());
        }
        if ServerName::try_from(self.server_name.as_str()).is_err() {
            out.push(format!(
                "server-name {:?} is not a DNS name or IP address",
                self.server_name
            ));
        }
        let prefix = self.prefix();
        if prefix.is_empty()
            || prefix.ends_with('/')
            || prefix.split('/').any(str::is_empty)
            || TopicName::is_invalid(&prefix)
        {
            out.push(format!("up-prefix {prefix:?} is not a valid topic prefix"));
        }
        if TopicFilter::try_from(self.down_filter().as_str()).is_err() {
            out.push("down-filter is not a valid topic filter".to_owned());
        }
        if self
            .client_id
            .as_deref()
            .unwrap_or(&self.gateway_uid)
            .is_empty()
        {
            out.push("client-id (or the gateway UID) is empty".to_owned());
        }
        if self.keepalive.as_secs() > u64::from(u16::MAX) {
            out.push("keepalive is over 65535 s".to_owned());
        }
        if !(1..=u16::MAX as usize - 1).contains(&self.inflight) {
            out.push("inflight must be 1-65534".to_owned());
        }
        if self.backoff_min.is_zero() || self.backoff_min > self.backoff_max {
            out.push("backoff-min must be above 0 and at most backoff-max".to_owned());
        }
        if self.max_packet < 64 || self.max_packet > 268_435_455 {
            out.push("max-packet must be 64 B - 256 MiB".to_owned());
        }
        if self.io_timeout.is_zero() {
            out.push("io-timeout must be above 0".to_owned());
        }
        out
    }
}

/// Why the bridge could not start (operator or provisioning errors; nothing here comes from
/// the upstream).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The settings are unusable.
    #[error("bridge settings: {}", .0.join("; "))]
    Settings(Vec<String>),
    /// The CA roots are not valid PEM or hold no usable trust anchor.
    #[error("bridge CA roots: {0}")]
    Roots(String),
    /// The client certificate chain is not valid PEM or empty.
    #[error("bridge client certificate: {0}")]
    ClientCert(String),
    /// rustls refused the policy, or the certificate and key (the key bytes are not part of
    /// the error).
    #[error("bridge TLS configuration: {0}")]
    Tls(#[source] rustls::Error),
    /// `spawn` was called outside a tokio runtime (a bug in the caller).
    #[error("the bridge must be started inside a tokio runtime")]
    NoRuntime,
}

/// The bridge's state, for the console and the health report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BridgeStatus {
    /// Whether a session with the upstream is up (CONNACK received).
    pub connected: bool,
    /// Whether the upstream granted the command subscription in this session.
    pub subscribed: bool,
    /// Why the last attempt or session ended, if it did.
    pub last_error: Option<String>,
    /// When the last session started, in seconds since the Unix epoch.
    pub last_connected_at: Option<u64>,
    /// PUBLISH packets sent (resends included).
    pub sent: u64,
    /// Messages acknowledged by the upstream (QoS 0: written to it).
    pub acked: u64,
    /// Sessions started after the first one.
    pub reconnects: u64,
    /// Commands handed down to the broker.
    pub down_delivered: u64,
    /// Messages from the upstream dropped because their topic does not map to a sensor.
    pub down_dropped: u64,
    /// Queued messages dropped because they cannot be encoded as a PUBLISH.
    pub unsendable: u64,
}

/// Where commands from the upstream go: `(local topic, payload)`.
pub type DeliverDown = Arc<dyn Fn(String, Bytes) + Send + Sync>;

/// Maps a sensor's message to its upstream topic (see the module docs).
pub fn up_topic(prefix: &str, uid: &str, topic: &str) -> String {
    let own = format!("kawal/{uid}/");
    match topic.strip_prefix(&own) {
        Some(rest) => format!("{prefix}/{uid}/{rest}"),
        None => format!("{prefix}/{uid}/{topic}"),
    }
}

/// Maps an upstream command topic to the local one, or `None` if it is not
/// `<prefix>/<uid>/down[/<rest>]` with a plain UID segment.
pub fn down_topic(prefix: &str, topic: &str) -> Option<String> {
    let rest = topic.strip_prefix(prefix)?.strip_prefix('/')?;
    let (uid, tail) = rest.split_once('/')?;
    if uid.is_empty() || uid.contains(['+', '#']) {
        return None;
    }
    if tail == "down" {
        return Some(format!("kawal/{uid}/down"));
    }
    let sub = tail.strip_prefix("down/")?;
    Some(format!("kawal/{uid}/down/{sub}"))
}

/// Why a frame could not be cut from the stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The remaining length runs over four bytes.
    #[error("malformed remaining length")]
    BadLength,
    /// The packet is larger than allowed.
    #[error("packet of {0} bytes is over the limit")]
    TooLarge(usize),
    /// The frame is not a valid MQTT 3.1.1 packet.
    #[error("malformed packet: {0}")]
    Malformed(String),
}

/// Cuts the next complete packet off `buf`; `Ok(None)` while more bytes are needed. A
/// length over `max` is refused as soon as its header is complete.
pub fn parse_frame(buf: &mut BytesMut, max: usize) -> Result<Option<Packet>, FrameError> {
    let mut len = 0usize;
    let mut header = 1usize;
    loop {
        let Some(&b) = buf.get(header) else {
            return Ok(None);
        };
        len |= usize::from(b & 0x7f) << (7 * (header - 1));
        header += 1;
        if b & 0x80 == 0 {
            break;
        }
        if header > 4 {
            return Err(FrameError::BadLength);
        }
    }
    if len > max {
        return Err(FrameError::TooLarge(len));
    }
    let total = header + len;
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    let frame = buf.split_to(total);
    match Packet::decode(&frame) {
        Ok(Some(p)) => Ok(Some(p)),
        Ok(None) => Err(FrameError::Malformed("truncated".into())),
        Err(e) => Err(FrameError::Malformed(e.to_string())),
    }
}

/// The rustls client configuration: pinned roots, the gateway's certificate, the policy
/// above.
///
/// # Errors
/// [`Error::Roots`], [`Error::ClientCert`] or [`Error::Tls`] for unusable material.
pub fn client_config(settings: &BridgeSettings) -> Result<Arc<ClientConfig>, Error> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(settings.ca_roots_pem.as_bytes()) {
        let cert = cert.map_err(|e| Error::Roots(e.to_string()))?;
        roots.add(cert).map_err(|e| Error::Roots(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(Error::Roots("no certificate found".into()));
    }
    let chain = CertificateDer::pem_slice_iter(settings.identity.cert_chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::ClientCert(e.to_string()))?;
    if chain.is_empty() {
        return Err(Error::ClientCert("no certificate found".into()));
    }
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        settings.identity.key_pkcs8_der.to_vec(),
    ));
    let mut config = ClientConfig::builder_with_provider(kawal_crypto::tls::provider())
        .with_protocol_versions(kawal_crypto::tls::PROTOCOL_VERSIONS)
        .map_err(Error::Tls)?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(Error::Tls)?;
    config.require_ems = true;
    Ok(Arc::new(config))
}

/// The bridge task's entry point.
pub struct Bridge;

impl Bridge {
    /// Starts the bridge on the current tokio runtime.
    ///
    /// # Errors
    /// [`Error`] for unusable settings or TLS material, or outside a runtime.
    pub fn spawn(
        settings: BridgeSettings,
        queue: Arc<Queue>,
        deliver_down: DeliverDown,
        audit: Arc<AuditLog>,
    ) -> Result<BridgeHandle, Error> {
        let problems = settings.problems();
        if !problems.is_empty() {
            return Err(Error::Settings(problems));
        }
        let tls = client_config(&settings)?;
        let server_name = ServerName::try_from(settings.server_name.clone())
            .map_err(|_| Error::Settings(vec!["server-name is invalid".into()]))?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let status = Arc::new(Mutex::new(BridgeStatus::default()));
        let (stop_tx, stop_rx) = watch::channel(false);
        let ctx = Ctx {
            prefix: settings.prefix(),
            down_filter: settings.down_filter(),
            client_id: settings
                .client_id
                .clone()
                .unwrap_or_else(|| settings.gateway_uid.clone()),
            connector: TlsConnector::from(tls),
            server_name,
            settings,
            queue,
            deliver_down,
            audit,
            status: Arc::clone(&status),
            max_sent: 0,
            last_audited: None,
        };
        let task = runtime.spawn(run(ctx, stop_rx));
        Ok(BridgeHandle {
            status,
            stop: stop_tx,
            task: Mutex::new(Some(task)),
        })
    }
}

/// Controls a running bridge; dropping it stops the bridge.
pub struct BridgeHandle {
    status: Arc<Mutex<BridgeStatus>>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for BridgeHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BridgeHandle")
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

impl BridgeHandle {
    /// The current state.
    pub fn status(&self) -> BridgeStatus {
        lock(&self.status).clone()
    }

    /// Stops the bridge: sends DISCONNECT if connected and waits for the task to end.
    /// Unacknowledged messages stay in the queue.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = task
            && timeout(GOODBYE * 2, task).await.is_err()
        {
            tracing::warn!("the bridge did not stop in time");
        }
    }
}

impl Drop for BridgeHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Status counters stay meaningful after a panic elsewhere.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// How a connection attempt or session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// TCP or network trouble before the session.
    Unreachable,
    /// The upstream's certificate failed verification: not our upstream.
    Refused,
    /// The upstream turned us away (TLS alert, CONNACK refusal).
    Rejected,
    /// An established session ended.
    Lost,
}

struct Failure {
    kind: Kind,
    reason: String,
}

impl Failure {
    fn new(kind: Kind, reason: impl Into<String>) -> Self {
        Self {
            kind,
            reason: reason.into(),
        }
    }
}

struct Ctx {
    settings: BridgeSettings,
    prefix: String,
    down_filter: String,
    client_id: String,
    connector: TlsConnector,
    server_name: ServerName<'static>,
    queue: Arc<Queue>,
    deliver_down: DeliverDown,
    audit: Arc<AuditLog>,
    status: Arc<Mutex<BridgeStatus>>,
    /// Highest sequence number ever sent: what is resent at or below it carries DUP.
    max_sent: u64,
    /// The last refusal written to the audit log, so a broker refused every minute does not
    /// fill the log; cleared by a successful session.
    last_audited: Option<(Kind, String)>,
}

impl Ctx {
    fn upstream(&self) -> String {
        format!("{}:{}", self.settings.host, self.settings.port)
    }

    fn audit(&self, event: Event) {
        let log = Arc::clone(&self.audit);
        // The append waits for its sync; keep that off the runtime's threads.
        tokio::task::spawn_blocking(move || {
            if let Err(e) = log.append(event) {
                tracing::error!(error = %e, "could not write a bridge audit event");
            }
        });
    }

    fn event(&self, name: &str, outcome: Outcome) -> Event {
        Event::new(name, ACTOR, outcome)
            .with("upstream", self.upstream())
            .with("server_name", self.settings.server_name.as_str())
    }
}

async fn run(mut ctx: Ctx, mut stop: watch::Receiver<bool>) {
    let mut attempt: u32 = 0;
    loop {
        if *stop.borrow() {
            return;
        }
        let mut established = false;
        let result = session(&mut ctx, &mut stop, &mut established).await;
        if established {
            attempt = 0;
        }
        let failure = match result {
            Ok(()) => {
                if established {
                    ctx.audit(
                        ctx.event("bridge.disconnected", Outcome::Info)
                            .with("reason", "shutdown"),
                    );
                }
                let mut st = lock(&ctx.status);
                st.connected = false;
                st.subscribed = false;
                return;
            }
            Err(f) => f,
        };
        tracing::warn!(upstream = %ctx.upstream(), reason = %failure.reason, "upstream bridge down");
        {
            let mut st = lock(&ctx.status);
            st.connected = false;
            st.subscribed = false;
            st.last_error = Some(failure.reason.clone());
        }
        if established {
            ctx.audit(
                ctx.event("bridge.disconnected", Outcome::Failure)
                    .with("reason", failure.reason.as_str()),
            );
        } else if matches!(failure.kind, Kind::Refused | Kind::Rejected) {
            let key = (failure.kind, failure.reason.clone());
            if ctx.last_audited.as_ref() != Some(&key) {
                let event = if failure.kind == Kind::Refused {
                    ctx.event("bridge.refused", Outcome::Denied)
                } else {
                    ctx.event("bridge.connect_failed", Outcome::Failure)
                };
                ctx.audit(event.with("reason", failure.reason.as_str()));
                ctx.last_audited = Some(key);
            }
        }
        let wait = backoff(&ctx.settings, attempt);
        attempt = attempt.saturating_add(1);
        tokio::select! {
            _ = sleep(wait) => {}
            _ = stop.changed() => return,
        }
    }
}

/// A wait drawn uniformly from `[min, min(max, min * 2^attempt)]` (full jitter).
fn backoff(s: &BridgeSettings, attempt: u32) -> Duration {
    let min = s.backoff_min.as_millis();
    let cap = min
        .saturating_mul(1u128 << attempt.min(20))
        .min(s.backoff_max.as_millis())
        .max(min);
    let r = kawal_crypto::rng::array::<8>().map_or(0, u64::from_be_bytes);
    let ms = min + u128::from(r) % (cap - min + 1);
    Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
}

fn classify_tls(e: &std::io::Error) -> Failure {
    let inner = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
    match inner {
        Some(
            err @ (rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented),
        ) => Failure::new(
            Kind::Refused,
            format!("upstream certificate refused: {err}"),
        ),
        Some(err @ rustls::Error::AlertReceived(_)) => Failure::new(
            Kind::Rejected,
            format!("upstream ended the TLS handshake: {err}"),
        ),
        Some(err) => Failure::new(Kind::Rejected, format!("TLS handshake failed: {err}")),
        None => Failure::new(Kind::Unreachable, format!("TLS handshake failed: {e}")),
    }
}

async fn write_all<W: AsyncWrite + Unpin>(
    w: &mut W,
    data: &[u8],
    limit: Duration,
) -> Result<(), Failure> {
    let io = async {
        w.write_all(data).await?;
        w.flush().await
    };
    match timeout(limit, io).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Failure::new(Kind::Lost, format!("write failed: {e}"))),
        Err(_) => Err(Failure::new(Kind::Lost, "write timed out")),
    }
}

fn encode(packet: &Packet, out: &mut Vec<u8>) -> Result<(), Failure> {
    let bytes = packet
        .encode()
        .map_err(|e| Failure::new(Kind::Lost, format!("cannot encode a packet: {e}")))?;
    out.extend_from_slice(bytes.as_ref());
    Ok(())
}

/// Packet ids in use, and the next to try.
struct Pids {
    next: u16,
}

impl Pids {
    fn take(&mut self, inflight: &VecDeque<(u16, u64)>) -> Pid {
        loop {
            self.next = self.next.wrapping_add(1);
            if self.next == 0 || inflight.iter().any(|(p, _)| *p == self.next) {
                continue;
            }
            if let Ok(pid) = Pid::try_from(self.next) {
                return pid;
            }
        }
    }
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// TCP, TLS, CONNECT and CONNACK: what comes before a session.
async fn establish(
    ctx: &Ctx,
) -> Result<
    (
        tokio::io::ReadHalf<Tls>,
        tokio::io::WriteHalf<Tls>,
        BytesMut,
        mqtt_proto::v3::Connack,
    ),
    Failure,
> {
    let s = &ctx.settings;
    let io = s.io_timeout;
    let tcp = match timeout(io, TcpStream::connect((s.host.as_str(), s.port))).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => return Err(Failure::new(Kind::Unreachable, format!("connect: {e}"))),
        Err(_) => return Err(Failure::new(Kind::Unreachable, "connect timed out")),
    };
    let _ = tcp.set_nodelay(true);
    let tls = match timeout(io, ctx.connector.connect(ctx.server_name.clone(), tcp)).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => return Err(classify_tls(&e)),
        Err(_) => return Err(Failure::new(Kind::Unreachable, "TLS handshake timed out")),
    };
    let (mut rd, mut wr) = tokio::io::split(tls);
    let mut buf = BytesMut::with_capacity(8 << 10);
    let max_packet = s.max_packet;

    let keepalive_secs = u16::try_from(s.keepalive.as_secs()).unwrap_or(u16::MAX);
    let mut connect = Connect::new(ctx.client_id.as_str().into(), keepalive_secs);
    connect.clean_session = s.clean_session;
    let mut out = Vec::new();
    encode(&Packet::Connect(connect), &mut out)?;
    write_all(&mut wr, &out, io).await?;

    // CONNACK first.
    let deadline = Instant::now() + io;
    let connack = loop {
        match parse_frame(&mut buf, max_packet) {
            Ok(Some(Packet::Connack(c))) => break c,
            Ok(Some(other)) => {
                return Err(Failure::new(
                    Kind::Rejected,
                    format!("expected CONNACK, got {:?}", other.get_type()),
                ));
            }
            Ok(None) => {}
            Err(e) => return Err(Failure::new(Kind::Rejected, format!("CONNACK: {e}"))),
        }
        buf.reserve(4096);
        match timeout(
            deadline.saturating_duration_since(Instant::now()),
            rd.read_buf(&mut buf),
        )
        .await
        {
            Ok(Ok(0)) => return Err(Failure::new(Kind::Rejected, "closed before CONNACK")),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(classify_tls(&e)),
            Err(_) => return Err(Failure::new(Kind::Rejected, "no CONNACK in time")),
        }
    };
    if connack.code != ConnectReturnCode::Accepted {
        return Err(Failure::new(
            Kind::Rejected,
            format!("upstream refused the session: {:?}", connack.code),
        ));
    }
    Ok((rd, wr, buf, connack))
}

async fn session(
    ctx: &mut Ctx,
    stop: &mut watch::Receiver<bool>,
    established: &mut bool,
) -> Result<(), Failure> {
    // A stop while connecting ends the attempt at once.
    let (mut rd, mut wr, mut buf, connack) = tokio::select! {
        r = establish(ctx) => r?,
        _ = stop.changed() => return Ok(()),
    };
    let s = &ctx.settings;
    let io = s.io_timeout;
    let max_packet = s.max_packet;
    let mut out = Vec::new();
    *established = true;
    ctx.last_audited = None;
    {
        let mut st = lock(&ctx.status);
        if st.last_connected_at.is_some() {
            st.reconnects += 1;
        }
        st.connected = true;
        st.subscribed = false;
        st.last_error = None;
        st.last_connected_at = Some(unix_now());
    }
    tracing::info!(upstream = %ctx.upstream(), session_present = connack.session_present, "upstream bridge connected");
    ctx.audit(
        ctx.event("bridge.connected", Outcome::Success)
            .with("session_present", connack.session_present),
    );

    let mut inflight: VecDeque<(u16, u64)> = VecDeque::new();
    let mut pids = Pids { next: 0 };
    let filter = TopicFilter::try_from(ctx.down_filter.as_str())
        .map_err(|e| Failure::new(Kind::Rejected, format!("down filter: {e}")))?;
    let sub_pid = pids.take(&inflight);
    out.clear();
    encode(
        &Packet::Subscribe(Subscribe::new(sub_pid, vec![(filter, QoS::Level1)])),
        &mut out,
    )?;
    write_all(&mut wr, &out, io).await?;

    let keepalive = s.keepalive;
    let window = s.inflight;
    let mut cursor = 0u64;
    let mut last_write = Instant::now();
    let mut ping_sent: Option<Instant> = None;
    loop {
        let room = window.saturating_sub(inflight.len());
        let ka_deadline = match ping_sent {
            Some(t) => t + keepalive,
            None => last_write + keepalive,
        };
        tokio::select! {
            biased;
            _ = stop.changed() => {
                out.clear();
                encode(&Packet::Disconnect, &mut out)?;
                let _ = write_all(&mut wr, &out, GOODBYE).await;
                let _ = timeout(GOODBYE, wr.shutdown()).await;
                return Ok(());
            }
            r = rd.read_buf(&mut buf) => {
                match r {
                    Ok(0) => return Err(Failure::new(Kind::Lost, "connection closed by the upstream")),
                    Ok(_) => {}
                    Err(e) => return Err(Failure::new(Kind::Lost, format!("read failed: {e}"))),
                }
                out.clear();
                let mut acks = Vec::new();
                loop {
                    let packet = match parse_frame(&mut buf, max_packet) {
                        Ok(Some(p)) => p,
                        Ok(None) => break,
                        Err(e) => return Err(Failure::new(Kind::Lost, format!("from upstream: {e}"))),
                    };
                    handle(ctx, packet, &mut inflight, &mut acks, &mut out, &mut ping_sent)?;
                }
                if !acks.is_empty() {
                    ctx.queue.ack(&acks);
                    lock(&ctx.status).acked += acks.len() as u64;
                }
                if !out.is_empty() {
                    write_all(&mut wr, &out, io).await?;
                    last_write = Instant::now();
                }
                if buf.capacity() - buf.len() < 1024 {
                    buf.reserve(4096);
                }
            }
            batch = ctx.queue.next_batch(cursor, room), if room > 0 => {
                out.clear();
                let mut qos0_done = Vec::new();
                let mut unsendable = Vec::new();
                let mut sent = 0u64;
                for q in batch {
                    cursor = q.seq;
                    let dup = q.seq <= ctx.max_sent;
                    let Some(publish) = publish_for(ctx, &q, dup, &mut pids, &inflight) else {
                        tracing::error!(seq = q.seq, uid = %q.uid, "queued message cannot be sent upstream; dropped");
                        unsendable.push(q.seq);
                        continue;
                    };
                    if let QosPid::Level1(pid) = publish.qos_pid {
                        inflight.push_back((pid.value(), q.seq));
                    } else {
                        qos0_done.push(q.seq);
                    }
                    encode(&Packet::Publish(publish), &mut out)?;
                    ctx.max_sent = ctx.max_sent.max(q.seq);
                    sent += 1;
                }
                if !out.is_empty() {
                    write_all(&mut wr, &out, io).await?;
                    last_write = Instant::now();
                }
                ctx.queue.ack(&qos0_done);
                ctx.queue.ack(&unsendable);
                let mut st = lock(&ctx.status);
                st.sent += sent;
                st.acked += qos0_done.len() as u64;
                st.unsendable += unsendable.len() as u64;
            }
            _ = sleep_until(ka_deadline), if !keepalive.is_zero() => {
                if ping_sent.is_some() {
                    return Err(Failure::new(Kind::Lost, "no PINGRESP within the keep-alive"));
                }
                out.clear();
                encode(&Packet::Pingreq, &mut out)?;
                write_all(&mut wr, &out, io).await?;
                last_write = Instant::now();
                ping_sent = Some(last_write);
            }
        }
    }
}

fn publish_for(
    ctx: &Ctx,
    q: &Queued,
    dup: bool,
    pids: &mut Pids,
    inflight: &VecDeque<(u16, u64)>,
) -> Option<Publish> {
    let topic = up_topic(&ctx.prefix, &q.uid, &q.topic);
    let topic = TopicName::try_from(topic.as_str()).ok()?;
    let qos_pid = if q.qos == 0 {
        QosPid::Level0
    } else {
        QosPid::Level1(pids.take(inflight))
    };
    let mut p = Publish::new(qos_pid, topic, q.payload.clone());
    p.dup = dup && q.qos != 0;
    Some(p)
}

/// Handles one packet from the upstream; replies go to `out`, acknowledged seqs to `acks`.
fn handle(
    ctx: &Ctx,
    packet: Packet,
    inflight: &mut VecDeque<(u16, u64)>,
    acks: &mut Vec<u64>,
    out: &mut Vec<u8>,
    ping_sent: &mut Option<Instant>,
) -> Result<(), Failure> {
    match packet {
        Packet::Puback(pid) => {
            let pid = pid.value();
            if let Some(i) = inflight.iter().position(|(p, _)| *p == pid) {
                if let Some((_, seq)) = inflight.remove(i) {
                    acks.push(seq);
                }
            } else {
                tracing::debug!(pid, "PUBACK for no message in flight");
            }
        }
        Packet::Publish(p) => {
            match down_topic(&ctx.prefix, &p.topic_name) {
                Some(local) => {
                    (ctx.deliver_down)(local, p.payload.clone());
                    lock(&ctx.status).down_delivered += 1;
                }
                None => {
                    tracing::warn!(topic = %&*p.topic_name, "upstream message on an unmapped topic dropped");
                    lock(&ctx.status).down_dropped += 1;
                }
            }
            match p.qos_pid {
                QosPid::Level0 => {}
                QosPid::Level1(pid) => encode(&Packet::Puback(pid), out)?,
                QosPid::Level2(_) => {
                    return Err(Failure::new(
                        Kind::Lost,
                        "upstream sent QoS 2 on a QoS 1 subscription",
                    ));
                }
            }
        }
        Packet::Suback(s) => {
            if s.topics
                .iter()
                .any(|c| matches!(c, SubscribeReturnCode::Failure))
            {
                tracing::warn!(filter = %ctx.down_filter, "upstream refused the command subscription");
                lock(&ctx.status).last_error = Some(format!(
                    "upstream refused the subscription to {}",
                    ctx.down_filter
                ));
            } else {
                lock(&ctx.status).subscribed = true;
            }
        }
        Packet::Pingresp => *ping_sent = None,
        other => {
            return Err(Failure::new(
                Kind::Lost,
                format!("unexpected {:?} from the upstream", other.get_type()),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
