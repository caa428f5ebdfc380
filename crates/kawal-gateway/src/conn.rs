//! One MQTT 3.1.1 session over an authenticated TLS stream (G045 AU-3-2, DS-2-1, ST-D-10,
//! ST-G-1).
//!
//! The identity is the one the certificate proved ([`Identity`]); nothing in CONNECT changes
//! it. The session:
//!
//! - requires CONNECT first, within [`Settings::connect_timeout`]; anything else, or nothing,
//!   ends the connection (`mqtt.refused` reason `protocol` or `timeout`);
//! - accepts protocol level 4 (3.1.1) only; other levels get CONNACK 0x01 (unacceptable
//!   protocol version), reason `protocol`;
//! - requires the client identifier to equal the certificate's UID (else CONNACK 0x02,
//!   reason `client-id-mismatch`); the user name and password are ignored;
//! - asks the registry ([`crate::Directory::admit`]); a refusal gets CONNACK 0x05 (not
//!   authorised) and its reason is logged;
//! - has no persistent sessions: `clean_session = 0` is treated as 1, and CONNACK says
//!   `session_present = 0`, as the specification asks of a server without stored state;
//! - enforces the keep-alive: 1.5 times the client's value without a packet ends the
//!   connection. A client asking for more than [`Settings::keep_alive_max`] is refused with
//!   CONNACK 0x02 (reason `keep-alive-too-long`), as Mosquitto does: 3.1.1 cannot tell it to
//!   use less, and dropping it later would look like a network fault. A client asking for 0
//!   (none) is held to the maximum;
//! - takes PUBLISH QoS 0 and 1. QoS 2 ends the connection (reason `qos2`). For QoS 1 the
//!   PUBACK is sent only once the uplink has the message durably; if the uplink refuses it,
//!   no PUBACK is sent and the connection is closed so that the sensor resends later:
//!   nothing acknowledged is ever lost. PUBACKs go out in the order of the PUBLISHes, with at
//!   most [`Settings::inflight`] waiting for the store (then reading pauses);
//! - checks every PUBLISH and the will against the ACL. A denied PUBLISH ends the connection
//!   after `mqtt.denied`: MQTT 3.1.1 has no way to refuse a single PUBLISH, and acknowledging
//!   a message that was dropped would tell the sensor that its data is safe when it is not;
//!   closing makes the refusal visible and stops a misbehaving device. A denied subscription
//!   gets the SUBACK failure code 0x80 and the session goes on;
//! - checks the payload of every PUBLISH and of the will against the payload rules
//!   ([`crate::payload`], G045 PL-1-1), after the ACL: a refusal is handled as an ACL denial
//!   (`mqtt.denied` with `reason = "payload"`, the rule's topic and what failed, never the
//!   payload; no PUBACK; the connection ends, a will with CONNACK 0x05);
//! - limits each sensor's rate with two token buckets (messages and payload bytes): over the
//!   rate, reading pauses until tokens are back (throttling); a sensor that stays throttled
//!   longer than [`Settings::throttle_grace`] within twice that time is disconnected
//!   (`mqtt.rate-limited`);
//! - publishes the will on any end but DISCONNECT from the client;
//! - ends on a malformed packet with `mqtt.malformed`, and never panics.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kawal_audit::{Event, Outcome};
use mqtt_proto::v3::{
    Connack, Connect, ConnectReturnCode, LastWill, Packet, Publish, Suback, Subscribe,
    SubscribeReturnCode, Unsubscribe,
};
use mqtt_proto::{Pid, Protocol, QoS};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadHalf};
use tokio::sync::{mpsc, oneshot, watch};

use crate::acl::Action;
use crate::broker::{Broker, CloseReason, RegisterError, Session};
use crate::frame::{self, FrameError};
use crate::limits::{Settings, TokenBucket};
use crate::payload::{self, PayloadRefusal};
use crate::{Identity, UplinkRefusal};

/// How long the writer gets to flush at the end of a connection.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a session ended (the `reason` of `mqtt.disconnected`).
#[derive(Debug)]
enum End {
    /// DISCONNECT from the client: the will is discarded.
    Disconnect,
    /// The client closed the stream without DISCONNECT.
    Closed,
    /// Reading failed.
    Io,
    /// No packet within 1.5 times the keep-alive.
    KeepAlive,
    /// The broker or the server closed it.
    Broker(CloseReason),
    /// The client broke the protocol (already audited).
    Violation(&'static str),
    /// The client stayed over its rate (already audited).
    RateLimited,
}

impl End {
    fn reason(&self) -> &str {
        match self {
            Self::Disconnect => "client-disconnect",
            Self::Closed => "client-closed",
            Self::Io => "io-error",
            Self::KeepAlive => "keep-alive-timeout",
            Self::Broker(r) => r.as_str(),
            Self::Violation(r) => r,
            Self::RateLimited => "rate-limited",
        }
    }
}

/// Runs one session on `stream`, whose TLS handshake proved `identity`, until it ends.
/// Everything that happens is audited; nothing is returned.
pub async fn run<S>(
    mut stream: S,
    identity: Identity,
    peer: SocketAddr,
    broker: Arc<Broker>,
    mut shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // The CONNECT exchange is a future of its own, boxed: its state (the first packet, the
    // registry's answer) would otherwise size the session's future for the connection's life.
    let Some(opened) = Box::pin(open(&mut stream, &identity, peer, &broker, &mut shutdown)).await
    else {
        return;
    };
    let Opened {
        admitted,
        will,
        clean_session,
    } = opened;
    let session = match broker.register(&identity, &admitted.role, peer.ip()) {
        Ok(s) => s,
        Err(RegisterError::Clone) => {
            broker.count_refused("clone-detected");
            let _ = write_connack(&mut stream, ConnectReturnCode::NotAuthorized).await;
            let _ = stream.shutdown().await;
            return;
        }
    };
    {
        let dir = Arc::clone(broker.directory());
        let uid = identity.uid.clone();
        drop(tokio::task::spawn_blocking(move || dir.seen(&uid)));
    }
    let (rd, wr) = tokio::io::split(stream);
    session.send(&Packet::Connack(Connack::new(
        false,
        ConnectReturnCode::Accepted,
    )));
    broker.audit().record(
        Event::new("mqtt.connected", &identity.uid, Outcome::Success)
            .with("uid", identity.uid.as_str())
            .with("serial", identity.serial.as_str())
            .with("role", admitted.role.as_str())
            .with("source", peer.to_string())
            .with("keep_alive_s", admitted.keep_alive)
            .with("clean_session", clean_session),
    );
    tracing::info!(uid = %identity.uid, %peer, "sensor connected");

    let started = Instant::now();
    let mut s = Running {
        broker: Arc::clone(&broker),
        peer,
        session: Arc::clone(&session),
        rd,
        acks: None,
        shutdown,
        keep_alive: Duration::from_millis(u64::from(admitted.keep_alive) * 1500),
        messages: TokenBucket::new(broker.settings().messages, started),
        bytes: TokenBucket::new(broker.settings().bytes, started),
        throttle_window: started,
        throttled: Duration::ZERO,
        received: 0,
    };
    let reading = async {
        let end = s.run().await;
        let received = s.received;
        let acker = s.acks.take().map(|(_, task)| task);
        drop(s);
        if !matches!(end, End::Disconnect)
            && let Some(will) = &will
        {
            publish_will(&broker, &session, will);
        }
        broker.unregister(&session);
        if let Some(acker) = acker {
            acker.abort();
        }
        session.stop_writer();
        (end, received)
    };
    // Reading and writing share the connection's task (a task of its own per writer cost
    // every idle sensor ~0.5 KiB); the writer ends within FLUSH_TIMEOUT of the stop.
    let ((end, received), ()) = tokio::join!(reading, write_loop(wr, &session));
    let outcome = match end {
        End::Disconnect | End::Closed => Outcome::Info,
        _ => Outcome::Failure,
    };
    broker.audit().record(
        Event::new("mqtt.disconnected", &identity.uid, outcome)
            .with("uid", identity.uid.as_str())
            .with("serial", identity.serial.as_str())
            .with("reason", end.reason())
            .with("duration_s", started.elapsed().as_secs())
            .with("messages", received),
    );
    tracing::info!(uid = %identity.uid, reason = end.reason(), "sensor disconnected");
}

/// What an accepted CONNECT leaves for the session.
struct Opened {
    admitted: Admitted,
    will: Option<LastWill>,
    clean_session: bool,
}

/// Reads and checks CONNECT (within the connect time-out) and asks the registry; answers and
/// audits every refusal itself.
async fn open<S>(
    stream: &mut S,
    identity: &Identity,
    peer: SocketAddr,
    broker: &Arc<Broker>,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<Opened>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let settings = broker.settings();
    let cap = settings.max_packet_bytes;
    let first = tokio::select! {
        r = tokio::time::timeout(settings.connect_timeout, frame::read_packet(&mut *stream, cap)) => r,
        _ = shutdown.changed() => return None,
    };
    let connect = match first {
        Err(_) => {
            refuse(broker, identity, peer, "timeout", "no CONNECT in time");
            return None;
        }
        Ok(Err(FrameError::Codec(mqtt_proto::Error::UnexpectedProtocol(p)))) => {
            let _ = write_connack(stream, ConnectReturnCode::UnacceptableProtocolVersion).await;
            refuse(broker, identity, peer, "protocol", &format!("protocol {p}"));
            return None;
        }
        Ok(Err(e)) if e.is_malformed() => {
            malformed(broker, identity, peer, e.reason(), &e.to_string());
            return None;
        }
        Ok(Err(_)) => {
            refuse(broker, identity, peer, "protocol", "closed before CONNECT");
            return None;
        }
        Ok(Ok((Packet::Connect(c), _))) => c,
        Ok(Ok((other, _))) => {
            broker.count_malformed();
            refuse(
                broker,
                identity,
                peer,
                "protocol",
                &format!("{:?} before CONNECT", other.get_type()),
            );
            return None;
        }
    };
    let Some(admitted) = admit(stream, &connect, identity, peer, broker).await else {
        let _ = stream.shutdown().await;
        return None;
    };
    Some(Opened {
        admitted,
        will: connect.last_will,
        clean_session: connect.clean_session,
    })
}

struct Admitted {
    role: String,
    keep_alive: u16,
}

/// Checks CONNECT and asks the registry; answers refusals itself.
async fn admit<S: AsyncWrite + Unpin>(
    stream: &mut S,
    c: &Connect,
    identity: &Identity,
    peer: SocketAddr,
    broker: &Arc<Broker>,
) -> Option<Admitted> {
    let settings = broker.settings();
    if c.protocol != Protocol::V311 {
        let _ = write_connack(stream, ConnectReturnCode::UnacceptableProtocolVersion).await;
        refuse(
            broker,
            identity,
            peer,
            "protocol",
            &format!("protocol {}", c.protocol),
        );
        return None;
    }
    if *c.client_id != *identity.uid {
        let _ = write_connack(stream, ConnectReturnCode::IdentifierRejected).await;
        refuse(
            broker,
            identity,
            peer,
            "client-id-mismatch",
            "client identifier differs from the certificate",
        );
        return None;
    }
    let dir = Arc::clone(broker.directory());
    let id = identity.clone();
    let role = match tokio::task::spawn_blocking(move || dir.admit(&id)).await {
        Ok(Ok(role)) => role,
        Ok(Err(refusal)) => {
            let _ = write_connack(stream, ConnectReturnCode::NotAuthorized).await;
            refuse(broker, identity, peer, refusal.as_str(), "registry refused");
            return None;
        }
        Err(_) => {
            let _ = write_connack(stream, ConnectReturnCode::ServerUnavailable).await;
            refuse(
                broker,
                identity,
                peer,
                "registry-error",
                "registry check failed",
            );
            return None;
        }
    };
    if !broker.acl().has_role(&role) {
        let _ = write_connack(stream, ConnectReturnCode::NotAuthorized).await;
        refuse(broker, identity, peer, "unknown-role", &role);
        return None;
    }
    if let Some(will) = &c.last_will {
        let problem = if will.qos == QoS::Level2 {
            Some("qos2")
        } else if settings.topic.check_name(&will.topic_name).is_err() {
            Some("bad-will-topic")
        } else if !broker
            .acl()
            .may_publish(&role, &identity.uid, &will.topic_name)
        {
            denied(broker, identity, peer, &will.topic_name, Action::Publish);
            Some("will-denied")
        } else if let Err(r) = payload::check(
            &settings.payload,
            &will.topic_name,
            &identity.uid,
            &will.message,
        ) {
            payload_refused(broker, identity, peer, &will.topic_name, "will", &r);
            Some("will-payload")
        } else {
            None
        };
        if let Some(reason) = problem {
            let _ = write_connack(stream, ConnectReturnCode::NotAuthorized).await;
            refuse(broker, identity, peer, reason, "will refused");
            return None;
        }
    }
    let max = settings.keep_alive_max;
    if c.keep_alive > max {
        let _ = write_connack(stream, ConnectReturnCode::IdentifierRejected).await;
        refuse(
            broker,
            identity,
            peer,
            "keep-alive-too-long",
            &format!("{} s asked, {max} s allowed", c.keep_alive),
        );
        return None;
    }
    let keep_alive = if c.keep_alive == 0 { max } else { c.keep_alive };
    Some(Admitted { role, keep_alive })
}

async fn write_connack<S: AsyncWrite + Unpin>(
    stream: &mut S,
    code: ConnectReturnCode,
) -> std::io::Result<()> {
    let bytes = frame::encode(&Packet::Connack(Connack::new(false, code)))
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    stream.write_all(&bytes).await?;
    stream.flush().await
}

/// `name` about `identity` from `peer` with `reason`, under the audit flood control.
fn peer_event(
    broker: &Broker,
    name: &str,
    identity: &Identity,
    peer: SocketAddr,
    reason: &str,
    extra: &[(&str, &str)],
) {
    let mut e = Event::new(name, &identity.uid, Outcome::Denied)
        .with("reason", reason)
        .with("uid", identity.uid.as_str())
        .with("serial", identity.serial.as_str())
        .with("source", peer.to_string());
    for (k, v) in extra {
        e = e.with(k, *v);
    }
    broker.audit().limited(
        peer.ip(),
        &format!("{name}/{reason}"),
        Some(&identity.uid),
        e,
    );
}

fn refuse(broker: &Broker, identity: &Identity, peer: SocketAddr, reason: &str, detail: &str) {
    broker.count_refused(reason);
    peer_event(
        broker,
        "mqtt.refused",
        identity,
        peer,
        reason,
        &[("detail", detail)],
    );
    tracing::info!(uid = %identity.uid, %peer, reason, "sensor refused");
}

fn malformed(broker: &Broker, identity: &Identity, peer: SocketAddr, reason: &str, detail: &str) {
    broker.count_malformed();
    peer_event(
        broker,
        "mqtt.malformed",
        identity,
        peer,
        reason,
        &[("detail", detail)],
    );
    tracing::info!(uid = %identity.uid, %peer, reason, detail, "malformed packet");
}

fn denied(broker: &Broker, identity: &Identity, peer: SocketAddr, topic: &str, action: Action) {
    broker.count_denied();
    peer_event(
        broker,
        "mqtt.denied",
        identity,
        peer,
        "acl",
        &[("topic", topic), ("action", action.as_str())],
    );
}

/// `mqtt.denied` with `reason = "payload"`: the topic, the rule and what failed, never the
/// payload.
fn payload_refused(
    broker: &Broker,
    identity: &Identity,
    peer: SocketAddr,
    topic: &str,
    action: &str,
    refusal: &PayloadRefusal,
) {
    broker.count_payload_refused();
    peer_event(
        broker,
        "mqtt.denied",
        identity,
        peer,
        "payload",
        &[
            ("topic", topic),
            ("action", action),
            ("rule", refusal.rule()),
            ("failed", refusal.failed().as_str()),
            ("detail", &refusal.detail()),
        ],
    );
    tracing::info!(
        uid = %identity.uid,
        %peer,
        topic,
        rule = refusal.rule(),
        failed = refusal.failed().as_str(),
        "payload refused"
    );
}

fn publish_will(broker: &Broker, session: &Session, will: &LastWill) {
    // Checked against the ACL and the payload rules at CONNECT; the role cannot change within
    // a session.
    let qos = will.qos.min(QoS::Level1);
    drop(broker.publish_from(
        session,
        &will.topic_name,
        will.message.clone(),
        qos,
        will.retain,
    ));
}

/// Writes what the session queues, until told to stop.
async fn write_loop<W: AsyncWrite + Unpin>(mut wr: W, session: &Session) {
    loop {
        let batch = session.take_out();
        if batch.is_empty() {
            // What was queued before a stop is still written (e.g. a last SUBACK).
            if session.writer_stopping() {
                break;
            }
            // Woken by a queued packet and by the stop.
            session.queued().await;
            continue;
        }
        // Boxed: only a session that is writing needs this state; inline, it would size every
        // idle session's future.
        if !Box::pin(write_batch(&mut wr, batch, session)).await {
            // A packet may be half written: write nothing more.
            session.writer_gone();
            let _ = Box::pin(tokio::time::timeout(FLUSH_TIMEOUT, wr.shutdown())).await;
            return;
        }
    }
    // Flush what is already queued (e.g. a last SUBACK), within the grace: a slow reader
    // does not hold the session open.
    let _ = Box::pin(tokio::time::timeout(FLUSH_TIMEOUT, async {
        for packet in session.take_out() {
            if wr.write_all(&packet).await.is_err() {
                break;
            }
        }
        session.writer_gone();
        let _ = wr.shutdown().await;
    }))
    .await;
    session.writer_gone();
}

/// Writes `batch` and flushes; `false` if the write failed or a stop cut it.
async fn write_batch<W: AsyncWrite + Unpin>(
    wr: &mut W,
    mut batch: VecDeque<Bytes>,
    session: &Session,
) -> bool {
    let write = async {
        while let Some(packet) = batch.pop_front() {
            wr.write_all(&packet).await?;
            session.written(packet.len());
        }
        wr.flush().await
    };
    // The write first: a stop only cuts a write that is stuck on a slow reader. Unbiased,
    // a stop that came before the writer first ran could drop the dequeued packet (the
    // CONNACK) and still flush the ones after it (found by the session fuzzer).
    tokio::select! {
        biased;
        r = write => r.is_ok(),
        () = session.writer_stopped() => false,
    }
}

/// Sends PUBACKs in order as the uplink confirms; on a refusal, closes the session.
async fn ack_loop(
    mut rx: mpsc::Receiver<(Pid, oneshot::Receiver<Result<(), UplinkRefusal>>)>,
    session: Arc<Session>,
    broker: Arc<Broker>,
) {
    while let Some((pid, answer)) = rx.recv().await {
        let refusal = match answer.await {
            Ok(Ok(())) => {
                session.send(&Packet::Puback(pid));
                continue;
            }
            Ok(Err(r)) => r,
            // The uplink dropped the answer: treat as not stored.
            Err(_) => UplinkRefusal::Store,
        };
        broker.count_uplink_refused();
        let id = session.identity();
        broker.audit().record(
            Event::new("mqtt.uplink-refused", &id.uid, Outcome::Failure)
                .with("uid", id.uid.as_str())
                .with("serial", id.serial.as_str())
                .with("reason", refusal.to_string()),
        );
        session.close(CloseReason::Uplink(refusal));
        return;
    }
}

/// Where the PUBACKs wait for the uplink's answers, in order.
type AckSender = mpsc::Sender<(Pid, oneshot::Receiver<Result<(), UplinkRefusal>>)>;

struct Running<S> {
    broker: Arc<Broker>,
    peer: SocketAddr,
    session: Arc<Session>,
    rd: ReadHalf<S>,
    /// The PUBACK sender and its task, started at the first QoS 1 publish: a sensor that only
    /// subscribes, or sits idle, costs neither.
    acks: Option<(AckSender, tokio::task::JoinHandle<()>)>,
    shutdown: watch::Receiver<bool>,
    keep_alive: Duration,
    messages: TokenBucket,
    bytes: TokenBucket,
    throttle_window: Instant,
    throttled: Duration,
    received: u64,
}

impl<S: AsyncRead + Unpin> Running<S> {
    fn settings(&self) -> &Settings {
        self.broker.settings()
    }

    fn closed_reason(&self) -> End {
        End::Broker(self.session.close_reason().unwrap_or(CloseReason::Shutdown))
    }

    async fn run(&mut self) -> End {
        let cap = self.settings().max_packet_bytes;
        loop {
            if self.session.close_reason().is_some() {
                return self.closed_reason();
            }
            let read = tokio::time::timeout(self.keep_alive, frame::read_packet(&mut self.rd, cap));
            let r = tokio::select! {
                r = read => r,
                () = self.session.closed() => return self.closed_reason(),
                _ = self.shutdown.changed() => return End::Broker(CloseReason::Shutdown),
            };
            let packet = match r {
                Err(_) => return End::KeepAlive,
                Ok(Err(FrameError::Closed)) => return End::Closed,
                Ok(Err(FrameError::Io(_) | FrameError::Truncated)) => return End::Io,
                Ok(Err(e)) => {
                    self.malformed(&e);
                    return End::Violation("malformed");
                }
                Ok(Ok((p, _))) => p,
            };
            if let Some(end) = self.handle(packet).await {
                return end;
            }
        }
    }

    fn malformed(&self, e: &FrameError) {
        let id = self.session.identity();
        malformed(&self.broker, id, self.peer, e.reason(), &e.to_string());
    }

    fn violation(&self, reason: &'static str, detail: &str) -> End {
        let id = self.session.identity();
        malformed(&self.broker, id, self.peer, reason, detail);
        End::Violation(reason)
    }

    async fn handle(&mut self, packet: Packet) -> Option<End> {
        // Every packet costs a message token (a SUBSCRIBE or PINGREQ flood is a flood too);
        // PUBLISH also costs its payload bytes. A PUBACK for one of our own deliveries is
        // free: a reader must be able to take more than its own publishing rate.
        let answers_us = matches!(&packet, Packet::Puback(pid) if self.session.awaits_ack(*pid));
        if !matches!(packet, Packet::Publish(_))
            && !answers_us
            && let Some(end) = self.throttle(0).await
        {
            return Some(end);
        }
        match packet {
            Packet::Publish(p) => self.publish(p).await,
            Packet::Puback(pid) => {
                self.session.acked(pid);
                None
            }
            Packet::Subscribe(s) => {
                self.subscribe(&s);
                None
            }
            Packet::Unsubscribe(u) => {
                self.unsubscribe(&u);
                None
            }
            Packet::Pingreq => {
                self.session.send(&Packet::Pingresp);
                None
            }
            Packet::Disconnect => Some(End::Disconnect),
            Packet::Connect(_) => Some(self.violation("second-connect", "CONNECT twice")),
            other => Some(self.violation(
                "unexpected-packet",
                &format!("{:?} from a client", other.get_type()),
            )),
        }
    }

    async fn publish(&mut self, p: Publish) -> Option<End> {
        let id = self.session.identity().clone();
        let qos = p.qos_pid.qos();
        if qos == QoS::Level2 {
            refuse(&self.broker, &id, self.peer, "qos2", &p.topic_name);
            return Some(End::Violation("qos2"));
        }
        if let Err(e) = self.settings().topic.check_name(&p.topic_name) {
            return Some(self.violation("bad-topic", &e.to_string()));
        }
        if !self
            .broker
            .acl()
            .may_publish(self.session.role(), &id.uid, &p.topic_name)
        {
            denied(&self.broker, &id, self.peer, &p.topic_name, Action::Publish);
            return Some(End::Violation("publish-denied"));
        }
        if let Err(r) = payload::check(&self.settings().payload, &p.topic_name, &id.uid, &p.payload)
        {
            payload_refused(&self.broker, &id, self.peer, &p.topic_name, "publish", &r);
            return Some(End::Violation("payload-refused"));
        }
        if let Some(end) = self.throttle(p.payload.len()).await {
            return Some(end);
        }
        let retain = p.retain && self.settings().max_retained > 0;
        let answer = self
            .broker
            .publish_from(&self.session, &p.topic_name, p.payload, qos, retain);
        self.received += 1;
        if let Some(pid) = p.qos_pid.pid() {
            let inflight = self.settings().inflight;
            let (ack_tx, _) = self.acks.get_or_insert_with(|| {
                let (tx, rx) = mpsc::channel(inflight);
                let task = tokio::spawn(ack_loop(
                    rx,
                    Arc::clone(&self.session),
                    Arc::clone(&self.broker),
                ));
                (tx, task)
            });
            match ack_tx.try_send((pid, answer)) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Closed(_)) => return Some(self.closed_reason()),
                Err(mpsc::error::TrySendError::Full(item)) => {
                    // Boxed, as in `throttle`: only a sensor whose window is full waits.
                    let session = &self.session;
                    let sent = Box::pin(async move {
                        tokio::select! {
                            r = ack_tx.send(item) => r.is_ok(),
                            () = session.closed() => false,
                        }
                    })
                    .await;
                    if !sent {
                        return Some(self.closed_reason());
                    }
                }
            }
        }
        None
    }

    /// Waits while the sensor is over its rate; ends the session if that lasts too long.
    async fn throttle(&mut self, payload_len: usize) -> Option<End> {
        let grace = self.settings().throttle_grace;
        loop {
            let now = Instant::now();
            if now.saturating_duration_since(self.throttle_window) > grace * 2 {
                self.throttle_window = now;
                self.throttled = Duration::ZERO;
            }
            let wait = match self.messages.take(1, now) {
                Err(w) => w,
                Ok(()) => match self.bytes.take(payload_len as u64, now) {
                    Ok(()) => return None,
                    Err(w) => {
                        // Give the message token back: retried below.
                        self.messages.give_back(1);
                        w
                    }
                },
            };
            if self.throttled + wait > grace {
                let id = self.session.identity();
                self.broker.count_rate_limited();
                self.broker.audit().record(
                    Event::new("mqtt.rate-limited", &id.uid, Outcome::Denied)
                        .with("uid", id.uid.as_str())
                        .with("serial", id.serial.as_str())
                        .with("messages_per_s", self.settings().messages.per_s)
                        .with("bytes_per_s", self.settings().bytes.per_s),
                );
                return Some(End::RateLimited);
            }
            self.throttled += wait;
            // Boxed: a sleep is a large future, and only a throttled sensor needs one; inline,
            // it would size every session's future.
            let session = &self.session;
            let closed = Box::pin(async move {
                tokio::select! {
                    () = tokio::time::sleep(wait) => false,
                    () = session.closed() => true,
                }
            })
            .await;
            if closed {
                return Some(self.closed_reason());
            }
        }
    }

    fn subscribe(&mut self, s: &Subscribe) {
        let id = self.session.identity().clone();
        let mut codes = Vec::with_capacity(s.topics.len());
        let mut granted = Vec::new();
        for (filter, qos) in &s.topics {
            let ok_filter = self.settings().topic.check_filter(filter).is_ok();
            let allowed = ok_filter
                && self
                    .broker
                    .acl()
                    .may_subscribe(self.session.role(), &id.uid, filter);
            if !allowed {
                denied(&self.broker, &id, self.peer, filter, Action::Subscribe);
                codes.push(SubscribeReturnCode::Failure);
                continue;
            }
            let q = (*qos).min(QoS::Level1);
            let fits = self.session.subscription_count() + granted.len()
                < self.settings().max_subscriptions;
            if fits {
                codes.push(SubscribeReturnCode::from(q));
                granted.push((filter.to_string(), q));
            } else {
                codes.push(SubscribeReturnCode::Failure);
            }
        }
        self.session
            .send(&Packet::Suback(Suback::new(s.pid, codes)));
        for (filter, q) in granted {
            self.broker.subscribe(&self.session, &filter, q);
        }
    }

    fn unsubscribe(&mut self, u: &Unsubscribe) {
        for f in &u.topics {
            self.broker.unsubscribe(&self.session, f);
        }
        self.session.send(&Packet::Unsuback(u.pid));
    }
}
