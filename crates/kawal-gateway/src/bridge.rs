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
//! # Identity
//! [`BridgeHandle::reload_identity`] puts a renewed device certificate in force without a
//! restart (G045 AU-1-10): every later handshake presents it, under the same pinned roots and
//! policy, and a live session is ended with DISCONNECT and opened again at once, so the
//! upstream sees the new certificate within a reconnect. Only the configuration in force
//! holds the key.
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
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, sleep_until, timeout, timeout_at};
use tokio_rustls::TlsConnector;

use crate::queue::{Queue, Queued};

mod settings;
mod tls;

pub use settings::BridgeSettings;
use tls::classify_tls;
pub use tls::{ClientIdentity, client_config};

/// The audit actor of bridge events.
const ACTOR: &str = "gateway-bridge";
/// How long a DISCONNECT may take at shutdown.
const GOODBYE: Duration = Duration::from_secs(2);
/// The audit event of a new device certificate put in force (G045 AU-1-10).
const EV_RELOADED: &str = "bridge.identity-reloaded";

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
    /// SHA-256 (hex) of the DER of the device certificate in force (after a reload: the one
    /// presented from the next handshake on).
    pub identity_sha256: Option<String>,
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

/// The bridge task's entry point.
pub struct Bridge;

impl Bridge {
    /// Starts the bridge on the current tokio runtime.
    ///
    /// # Errors
    /// [`Error`] for unusable settings or TLS material, or outside a runtime.
    pub fn spawn(
        mut settings: BridgeSettings,
        queue: Arc<Queue>,
        deliver_down: DeliverDown,
        audit: Arc<AuditLog>,
    ) -> Result<BridgeHandle, Error> {
        let problems = settings.problems();
        if !problems.is_empty() {
            return Err(Error::Settings(problems));
        }
        let (tls, leaf_sha256) = tls::build(&settings.ca_roots_pem, &settings.identity)?;
        let server_name = ServerName::try_from(settings.server_name.clone())
            .map_err(|_| Error::Settings(vec!["server-name is invalid".into()]))?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        // The config holds the key now; a copy kept here would outlive a reload.
        settings.identity = ClientIdentity::empty();
        let status = Arc::new(Mutex::new(BridgeStatus {
            identity_sha256: Some(leaf_sha256),
            ..BridgeStatus::default()
        }));
        let (stop_tx, stop_rx) = watch::channel(false);
        let (tls_tx, tls_rx) = watch::channel(tls);
        let reloader = Reloader {
            roots_pem: std::mem::take(&mut settings.ca_roots_pem),
            tls: tls_tx,
            audit: Arc::clone(&audit),
            runtime: runtime.clone(),
            upstream: upstream(&settings),
            server_name: settings.server_name.clone(),
        };
        let ctx = Ctx {
            prefix: settings.prefix(),
            down_filter: settings.down_filter(),
            client_id: settings
                .client_id
                .clone()
                .unwrap_or_else(|| settings.gateway_uid.clone()),
            server_name,
            settings,
            queue,
            deliver_down,
            audit,
            status: Arc::clone(&status),
            max_sent: 0,
            last_audited: None,
        };
        let task = runtime.spawn(run(ctx, stop_rx, tls_rx));
        Ok(BridgeHandle {
            status,
            stop: stop_tx,
            task: Mutex::new(Some(task)),
            reloader: Mutex::new(reloader),
        })
    }
}

/// Controls a running bridge; dropping it stops the bridge.
pub struct BridgeHandle {
    status: Arc<Mutex<BridgeStatus>>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
    /// Locked for a whole reload, so the status names the identity in force.
    reloader: Mutex<Reloader>,
}

/// What a reload needs: the pinned roots (no key: that lives only in the config in force).
struct Reloader {
    roots_pem: String,
    /// The config for every later handshake; a change also ends the live session.
    tls: watch::Sender<Arc<ClientConfig>>,
    audit: Arc<AuditLog>,
    runtime: tokio::runtime::Handle,
    upstream: String,
    server_name: String,
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

    /// Puts a renewed device certificate in force without a restart: every later handshake
    /// presents `identity` (same pinned roots and policy), and a live session is ended with
    /// DISCONNECT and opened again at once, without a back-off wait. Unacknowledged messages
    /// stay in the queue and are resent in the new session. Audited as
    /// `bridge.identity-reloaded`, with the new leaf certificate's SHA-256. Callable from any
    /// thread.
    ///
    /// # Errors
    /// [`Error::ClientCert`] or [`Error::Tls`] (also for a key that does not belong to the
    /// certificate); the bridge then goes on with the identity it had.
    pub fn reload_identity(&self, identity: ClientIdentity) -> Result<(), Error> {
        let r = lock(&self.reloader);
        let previous = lock(&self.status).identity_sha256.clone();
        let built = tls::build(&r.roots_pem, &identity);
        // Taken by value so that the key is wiped here: only the config in force holds it.
        drop(identity);
        let (config, leaf_sha256) = match built {
            Ok(built) => built,
            Err(e) => {
                tracing::warn!(upstream = %r.upstream, error = %e, "new bridge identity refused; keeping the old one");
                append_off_runtime(
                    &r.runtime,
                    Arc::clone(&r.audit),
                    event(&r.upstream, &r.server_name, EV_RELOADED, Outcome::Failure)
                        .with("reason", e.to_string()),
                );
                return Err(e);
            }
        };
        // `send_replace` stores the config even while the task is between sessions (no
        // receiver waiting is not an error here).
        r.tls.send_replace(config);
        lock(&self.status).identity_sha256 = Some(leaf_sha256.clone());
        tracing::info!(upstream = %r.upstream, cert_sha256 = %leaf_sha256, "bridge identity reloaded");
        let mut ev = event(&r.upstream, &r.server_name, EV_RELOADED, Outcome::Success)
            .with("new_cert_sha256", leaf_sha256);
        if let Some(previous) = previous {
            ev = ev.with("previous_cert_sha256", previous);
        }
        append_off_runtime(&r.runtime, Arc::clone(&r.audit), ev);
        Ok(())
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
        upstream(&self.settings)
    }

    fn audit(&self, event: Event) {
        append_off_runtime(
            &tokio::runtime::Handle::current(),
            Arc::clone(&self.audit),
            event,
        );
    }

    fn event(&self, name: &str, outcome: Outcome) -> Event {
        event(&self.upstream(), &self.settings.server_name, name, outcome)
    }
}

fn upstream(s: &BridgeSettings) -> String {
    format!("{}:{}", s.host, s.port)
}

/// A bridge audit event naming the upstream.
fn event(upstream: &str, server_name: &str, name: &str, outcome: Outcome) -> Event {
    Event::new(name, ACTOR, outcome)
        .with("upstream", upstream)
        .with("server_name", server_name)
}

fn append_off_runtime(runtime: &tokio::runtime::Handle, log: Arc<AuditLog>, event: Event) {
    // The append waits for its sync; keep that off the runtime's threads.
    runtime.spawn_blocking(move || {
        if let Err(e) = log.append(event) {
            tracing::error!(error = %e, "could not write a bridge audit event");
        }
    });
}

/// Why a session ended without a failure.
enum End {
    /// The handle asked the bridge to stop, or is gone.
    Stopped,
    /// A new identity is in force: connect again at once.
    Reload,
}

async fn run(
    mut ctx: Ctx,
    mut stop: watch::Receiver<bool>,
    mut tls: watch::Receiver<Arc<ClientConfig>>,
) {
    let mut attempt: u32 = 0;
    loop {
        if *stop.borrow() {
            return;
        }
        let mut established = false;
        let result = session(&mut ctx, &mut stop, &mut tls, &mut established).await;
        if established {
            attempt = 0;
        }
        let failure = match result {
            Ok(End::Reload) => {
                if established {
                    tracing::info!(upstream = %ctx.upstream(), "upstream bridge reconnecting with its new identity");
                    ctx.audit(
                        ctx.event("bridge.disconnected", Outcome::Info)
                            .with("reason", "identity reloaded"),
                    );
                }
                {
                    let mut st = lock(&ctx.status);
                    st.connected = false;
                    st.subscribed = false;
                }
                // A refusal of the new identity is news even if it reads like the old one's.
                ctx.last_audited = None;
                attempt = 0;
                continue;
            }
            Ok(End::Stopped) => {
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
            // The new identity may be what the upstream was refusing: try it at once.
            r = tls.changed() => {
                if r.is_err() {
                    return;
                }
                ctx.last_audited = None;
                attempt = 0;
            }
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
    tls: Arc<ClientConfig>,
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
    let connector = TlsConnector::from(tls);
    let tls = match timeout(io, connector.connect(ctx.server_name.clone(), tcp)).await {
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
    tls: &mut watch::Receiver<Arc<ClientConfig>>,
    established: &mut bool,
) -> Result<End, Failure> {
    let config = Arc::clone(&tls.borrow_and_update());
    // A stop while connecting ends the attempt at once; a new identity starts it again.
    let (mut rd, mut wr, mut buf, connack) = tokio::select! {
        r = establish(ctx, config) => r?,
        _ = stop.changed() => return Ok(End::Stopped),
        r = tls.changed() => return Ok(if r.is_ok() { End::Reload } else { End::Stopped }),
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
                goodbye(ctx, &mut rd, &mut wr, &mut buf, &mut inflight).await;
                return Ok(End::Stopped);
            }
            // A clean end, as at shutdown; what is still in flight is resent in the next
            // session.
            r = tls.changed() => {
                goodbye(ctx, &mut rd, &mut wr, &mut buf, &mut inflight).await;
                return Ok(if r.is_ok() { End::Reload } else { End::Stopped });
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

/// Ends a live session within [`GOODBYE`]: DISCONNECT and close_notify, then reads until the
/// upstream closes. Closing with its PUBACKs unread would reset the connection, and the
/// upstream could lose the DISCONNECT; reading them also spares resending what it has.
async fn goodbye(
    ctx: &Ctx,
    rd: &mut tokio::io::ReadHalf<Tls>,
    wr: &mut tokio::io::WriteHalf<Tls>,
    buf: &mut BytesMut,
    inflight: &mut VecDeque<(u16, u64)>,
) {
    let deadline = Instant::now() + GOODBYE;
    let mut out = Vec::new();
    if encode(&Packet::Disconnect, &mut out).is_ok() {
        let _ = write_all(wr, &out, GOODBYE).await;
    }
    let _ = timeout_at(deadline, wr.shutdown()).await;
    let mut acks = Vec::new();
    'drain: loop {
        loop {
            match parse_frame(buf, ctx.settings.max_packet) {
                Ok(Some(Packet::Puback(pid))) => acks.extend(take_inflight(inflight, pid)),
                // Not acknowledged now, so a QoS 1 command comes again in the next session.
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => break 'drain,
            }
        }
        buf.reserve(4096);
        match timeout_at(deadline, rd.read_buf(buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => break,
        }
    }
    if !acks.is_empty() {
        ctx.queue.ack(&acks);
        lock(&ctx.status).acked += acks.len() as u64;
    }
}

/// The sequence number acknowledged by a PUBACK for `pid`, no longer in flight.
fn take_inflight(inflight: &mut VecDeque<(u16, u64)>, pid: Pid) -> Option<u64> {
    let i = inflight.iter().position(|(p, _)| *p == pid.value())?;
    inflight.remove(i).map(|(_, seq)| seq)
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
        Packet::Puback(pid) => match take_inflight(inflight, pid) {
            Some(seq) => acks.push(seq),
            None => tracing::debug!(pid = pid.value(), "PUBACK for no message in flight"),
        },
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
