//! The broker's shared state: live sessions by UID, subscriptions and routing, retained
//! messages, counters, and the audit writer (G045 AU-1-10, DS-2-1, ST-G-1).
//!
//! - **Clone detection (AU-1-10).** A sensor has at most one live session. When a second
//!   connection presents the *same certificate* (same UID and serial) while the first is
//!   live, both are dropped and `mqtt.clone-detected` is written: two devices holding one key
//!   is the sign of a copied sensor. A connection after the first closed is fine. A
//!   connection with the same UID but a *different* serial (the sensor's renewed certificate;
//!   the registry already refused any certificate but the current one) takes the session over
//!   and the old connection is closed (`mqtt.session-taken-over`).
//!   A consequence: when a sensor reconnects while the gateway still holds its previous,
//!   half-open connection (before the keep-alive runs out), that counts as a clone once and
//!   both are dropped; the sensor's next attempt succeeds.
//! - **Routing.** Every sensor publish that passed the ACL goes to the local subscribers
//!   whose filters match (QoS min(publish, subscription)) and to the [`Uplink`]; commands from
//!   upstream come in through [`Broker::publish_local`] and go to local subscribers only.
//! - **Slow readers (ST-G-1).** Each session has a byte budget for what waits to be written
//!   to it (including QoS 1 messages held back by its in-flight window); a session that goes
//!   over is closed and `mqtt.slow-reader` is written.
//! - **Audit.** Events go to a dedicated thread that appends them to the [`AuditLog`], so a
//!   slow disk never blocks the network tasks; see [`Auditor`] for flood control.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use bytes::Bytes;
use kawal_audit::{AuditLog, Event, FloodControl, Outcome};
use mqtt_proto::v3::{Packet, Publish};
use mqtt_proto::{Pid, QoS, QosPid, TopicName};
use serde::Serialize;
use tokio::sync::{Notify, oneshot};

use crate::acl::Acl;
use crate::frame;
use crate::limits::Settings;
use crate::topic::{self, TopicError};
use crate::{Directory, Identity, Message, Uplink, UplinkRefusal};

mod audit;
pub use audit::{
    AUDIT_INDIVIDUAL_PER_WINDOW, AUDIT_QUEUE, AUDIT_SUMMARIES_PER_WINDOW, AUDIT_SUMMARY_UIDS,
    AUDIT_TRACKED_SOURCES, Auditor,
};

/// Resolves once `done()` holds; `notify.notify_waiters()` follows every change that can
/// make it hold. Registered before the check, so a change in between is not missed.
async fn wait_for(notify: &Notify, done: impl Fn() -> bool) {
    loop {
        let mut notified = std::pin::pin!(notify.notified());
        notified.as_mut().enable();
        if done() {
            return;
        }
        notified.await;
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The actor of events about peers that have not proven an identity yet.
pub const ANONYMOUS_ACTOR: &str = "mqtt";

/// Why the broker closed a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// Another connection presented the same certificate.
    Clone,
    /// A newer connection of the same sensor (another certificate) took over.
    TakenOver,
    /// [`Broker::disconnect_uid`] with this reason (e.g. `revoked`).
    Requested(String),
    /// Too many bytes waiting to be written to the client.
    SlowReader,
    /// The uplink did not take a QoS 1 message.
    Uplink(UplinkRefusal),
    /// The server is shutting down.
    Shutdown,
}

impl CloseReason {
    /// The reason as written in the audit log.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Clone => "clone-detected",
            Self::TakenOver => "taken-over",
            Self::Requested(r) => r,
            Self::SlowReader => "slow-reader",
            Self::Uplink(UplinkRefusal::Full) => "uplink-full",
            Self::Uplink(UplinkRefusal::Store) => "uplink-store",
            Self::Shutdown => "shutdown",
        }
    }
}

/// Why a session could not be registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterError {
    /// The certificate is in use by a live session: both are dropped.
    Clone,
}

struct Pending {
    topic: TopicName,
    payload: Bytes,
    retain: bool,
}

#[derive(Default)]
struct OutState {
    /// Encoded packets waiting for the writer task (no allocation while empty: an idle
    /// session holds no buffer).
    outq: VecDeque<Bytes>,
    /// The writer task has ended: nothing more can be queued.
    writer_gone: bool,
    /// The writer task was asked to stop.
    stopping: bool,
    /// Bytes in `outq` plus bytes held in `pending`.
    queued: usize,
    inflight: HashMap<u16, usize>,
    pending: VecDeque<Pending>,
    next_pid: u16,
}

/// One live MQTT session (after an accepted CONNECT).
pub struct Session {
    id: u64,
    identity: Identity,
    role: String,
    /// Why the connection is asked to close (the first reason wins); `closing` wakes whoever
    /// waits for it. A mutex and a `Notify` rather than a watch channel, whose eight-way
    /// notifier cost every idle session ~0.4 KiB.
    close: Mutex<Option<CloseReason>>,
    closing: Notify,
    /// Wakes the writer task when packets are queued.
    wake: Notify,
    /// Tells the writer task to stop (see [`Session::stop_writer`]).
    stop: Notify,
    out: Mutex<OutState>,
    filters: Mutex<BTreeMap<String, QoS>>,
    max_queued: usize,
    inflight_max: usize,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("identity", &self.identity)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// The sensor.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The ACL role the registry gave it.
    pub fn role(&self) -> &str {
        &self.role
    }

    /// Asks the connection to close; the first reason wins. Returns whether this call set it.
    pub fn close(&self, reason: CloseReason) -> bool {
        {
            let mut r = lock(&self.close);
            if r.is_some() {
                return false;
            }
            *r = Some(reason);
        }
        self.closing.notify_waiters();
        true
    }

    /// Why the session was asked to close, if it was.
    pub fn close_reason(&self) -> Option<CloseReason> {
        lock(&self.close).clone()
    }

    /// Resolves once the session is asked to close.
    pub async fn closed(&self) {
        wait_for(&self.closing, || self.is_closing()).await;
    }

    fn is_closing(&self) -> bool {
        lock(&self.close).is_some()
    }

    /// Tells the writer task to stop: it writes what is queued unless the peer does not
    /// read, then ends (the connection's end only).
    pub(crate) fn stop_writer(&self) {
        lock(&self.out).stopping = true;
        self.stop.notify_waiters();
        // An idle writer waits in `queued`: a stored permit wakes it even if it is not
        // waiting yet.
        self.wake.notify_one();
    }

    /// Whether [`Session::stop_writer`] was called (the writer only).
    pub(crate) fn writer_stopping(&self) -> bool {
        lock(&self.out).stopping
    }

    /// Resolves once [`Session::stop_writer`] was called (the writer task only).
    pub(crate) async fn writer_stopped(&self) {
        wait_for(&self.stop, || self.writer_stopping()).await;
    }

    /// Queues bytes for the writer; closes the session when its budget is exceeded.
    /// Returns `false` when the bytes were not queued.
    fn push_locked(&self, out: &mut OutState, bytes: Bytes) -> bool {
        if out.queued.saturating_add(bytes.len()) > self.max_queued {
            return false;
        }
        if out.writer_gone {
            return false;
        }
        out.queued += bytes.len();
        out.outq.push_back(bytes);
        self.wake.notify_one();
        true
    }

    /// Takes every packet queued for the writer (the writer task only).
    pub(crate) fn take_out(&self) -> VecDeque<Bytes> {
        std::mem::take(&mut lock(&self.out).outq)
    }

    /// Waits until packets may have been queued (the writer task only).
    pub(crate) async fn queued(&self) {
        self.wake.notified().await;
    }

    /// The writer task has ended: later packets are refused, not queued for nobody.
    pub(crate) fn writer_gone(&self) {
        let mut out = lock(&self.out);
        out.writer_gone = true;
        out.outq.clear();
    }

    /// Queues a packet the session itself answers with (CONNACK, PUBACK, SUBACK, ...).
    /// Returns `false` when it could not be queued (the session is then over budget).
    pub fn send(&self, packet: &Packet) -> bool {
        let Ok(bytes) = frame::encode(packet) else {
            return false;
        };
        let mut out = lock(&self.out);
        self.push_locked(&mut out, bytes)
    }

    /// Called by the writer task when `n` bytes were written.
    pub fn written(&self, n: usize) {
        let mut out = lock(&self.out);
        out.queued = out.queued.saturating_sub(n);
    }

    fn next_pid(out: &mut OutState) -> Option<Pid> {
        for _ in 0..=u16::MAX {
            out.next_pid = out.next_pid.wrapping_add(1).max(1);
            if !out.inflight.contains_key(&out.next_pid) {
                return Pid::try_from(out.next_pid).ok();
            }
        }
        None
    }

    fn send_publish_locked(&self, out: &mut OutState, p: Pending, qos: QoS) -> Option<usize> {
        let qos_pid = match qos {
            QoS::Level0 => QosPid::Level0,
            _ => QosPid::Level1(Self::next_pid(out)?),
        };
        let mut publish = Publish::new(qos_pid, p.topic, p.payload);
        publish.retain = p.retain;
        let bytes = frame::encode(&Packet::Publish(publish)).ok()?;
        let n = bytes.len();
        if !self.push_locked(out, bytes) {
            return None;
        }
        if let Some(pid) = qos_pid.pid() {
            out.inflight.insert(pid.value(), n);
        }
        Some(n)
    }

    /// Delivers a message; `Err` when the session is over its budget (a slow reader).
    fn deliver(&self, p: Pending, qos: QoS) -> Result<usize, ()> {
        let mut out = lock(&self.out);
        if qos != QoS::Level0 && out.inflight.len() >= self.inflight_max {
            let n = p.payload.len() + p.topic.len() + 4;
            if out.queued.saturating_add(n) > self.max_queued {
                return Err(());
            }
            out.queued += n;
            out.pending.push_back(p);
            return Ok(0);
        }
        self.send_publish_locked(&mut out, p, qos).ok_or(())
    }

    /// Whether `pid` is a delivery to this client still waiting for its PUBACK.
    pub fn awaits_ack(&self, pid: Pid) -> bool {
        lock(&self.out).inflight.contains_key(&pid.value())
    }

    /// The client acknowledged `pid`: releases it and sends what waited for the window.
    /// Returns the bytes sent for released messages (for the counters).
    pub fn acked(&self, pid: Pid) -> usize {
        let mut out = lock(&self.out);
        if out.inflight.remove(&pid.value()).is_none() {
            return 0;
        }
        let mut sent = 0;
        while out.inflight.len() < self.inflight_max {
            let Some(p) = out.pending.pop_front() else {
                break;
            };
            let held = p.payload.len() + p.topic.len() + 4;
            out.queued = out.queued.saturating_sub(held);
            match self.send_publish_locked(&mut out, p, QoS::Level1) {
                Some(n) => sent += n,
                None => break,
            }
        }
        sent
    }

    /// The filters subscribed now.
    pub fn subscription_count(&self) -> usize {
        lock(&self.filters).len()
    }
}

/// Subscriptions as a tree of topic levels; `+` and `#` are children named so.
#[derive(Default)]
struct Node {
    children: HashMap<String, Node>,
    subs: HashMap<u64, QoS>,
}

impl Node {
    fn insert(&mut self, filter: &str, id: u64, qos: QoS) {
        let mut node = self;
        for level in filter.split(topic::SEP) {
            node = node.children.entry(level.to_owned()).or_default();
        }
        node.subs.insert(id, qos);
    }

    /// Removes `id` under `levels`; returns whether this node is now empty.
    fn remove(&mut self, levels: &[&str], id: u64) -> bool {
        match levels.split_first() {
            None => {
                self.subs.remove(&id);
            }
            Some((first, rest)) => {
                if let Some(child) = self.children.get_mut(*first)
                    && child.remove(rest, id)
                {
                    self.children.remove(*first);
                }
            }
        }
        self.subs.is_empty() && self.children.is_empty()
    }

    fn collect(&self, levels: &[&str], root: bool, out: &mut HashMap<u64, QoS>) {
        let dollar = root && levels.first().is_some_and(|l| l.starts_with('$'));
        let mut add = |subs: &HashMap<u64, QoS>| {
            for (id, q) in subs {
                let e = out.entry(*id).or_insert(*q);
                *e = (*e).max(*q);
            }
        };
        if !dollar && let Some(all) = self.children.get(topic::ALL) {
            add(&all.subs);
        }
        match levels.split_first() {
            None => add(&self.subs),
            Some((first, rest)) => {
                if let Some(c) = self.children.get(*first) {
                    c.collect(rest, false, out);
                }
                if !dollar && let Some(c) = self.children.get(topic::ONE) {
                    c.collect(rest, false, out);
                }
            }
        }
    }
}

struct Retained {
    payload: Bytes,
    qos: QoS,
}

#[derive(Default)]
struct State {
    by_uid: HashMap<String, Arc<Session>>,
    by_id: HashMap<u64, Arc<Session>>,
    subs: Node,
    retained: BTreeMap<String, Retained>,
    retained_bytes: usize,
}

#[derive(Default)]
struct Counters {
    sessions_total: AtomicU64,
    messages_in: AtomicU64,
    bytes_in: AtomicU64,
    messages_out: AtomicU64,
    bytes_out: AtomicU64,
    local_in: AtomicU64,
    denied: AtomicU64,
    payload_refused: AtomicU64,
    malformed: AtomicU64,
    clones: AtomicU64,
    rate_limited: AtomicU64,
    slow_readers: AtomicU64,
    uplink_refused: AtomicU64,
    retained_refused: AtomicU64,
    refused: Mutex<BTreeMap<String, u64>>,
}

/// A snapshot of the broker's counters, for the report and the API.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Connections open now, from TCP accept on (filled in by [`crate::server::Server::stats`]).
    pub connections_live: u64,
    /// Sessions live now (after an accepted CONNECT).
    pub sessions_live: u64,
    /// Sessions accepted since start.
    pub sessions_total: u64,
    /// Connections refused, by reason (the `reason` of `mqtt.refused`).
    pub refused: BTreeMap<String, u64>,
    /// PUBLISH packets accepted from sensors.
    pub messages_in: u64,
    /// Payload bytes of those.
    pub bytes_in: u64,
    /// Messages delivered to local subscribers.
    pub messages_out: u64,
    /// Bytes queued for local subscribers (whole packets).
    pub bytes_out: u64,
    /// Messages that came in through [`Broker::publish_local`].
    pub local_in: u64,
    /// Publishes, wills and subscriptions the ACL denied.
    pub denied: u64,
    /// Publishes and wills a payload rule refused ([`crate::payload`]).
    pub payload_refused: u64,
    /// Connections ended by a malformed packet.
    pub malformed: u64,
    /// Clone detections.
    pub clones: u64,
    /// Sensors disconnected for staying over their rate.
    pub rate_limited: u64,
    /// Sessions dropped as slow readers.
    pub slow_readers: u64,
    /// QoS 1 messages the uplink did not take (not acknowledged).
    pub uplink_refused: u64,
    /// Retained messages kept now.
    pub retained: u64,
    /// Retain requests not kept (limits).
    pub retained_refused: u64,
    /// Audit events not written because the audit queue was full.
    pub audit_dropped: u64,
    /// Refusal events folded into summaries by flood control.
    pub audit_suppressed: u64,
}

/// The broker. Shared by the server and every connection.
pub struct Broker {
    settings: Settings,
    acl: Acl,
    directory: Arc<dyn Directory>,
    uplink: Arc<dyn Uplink>,
    audit: Auditor,
    state: Mutex<State>,
    counters: Counters,
    next_id: AtomicU64,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Broker {
    /// A broker with these parts. `settings` should have passed [`Settings::validate`].
    pub fn new(
        settings: Settings,
        acl: Acl,
        directory: Arc<dyn Directory>,
        uplink: Arc<dyn Uplink>,
        audit: Arc<AuditLog>,
    ) -> Arc<Self> {
        let auditor = Auditor::new(audit, &settings);
        Arc::new(Self {
            settings,
            acl,
            directory,
            uplink,
            audit: auditor,
            state: Mutex::new(State::default()),
            counters: Counters::default(),
            next_id: AtomicU64::new(1),
        })
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The ACL.
    pub fn acl(&self) -> &Acl {
        &self.acl
    }

    /// The sensor registry.
    pub fn directory(&self) -> &Arc<dyn Directory> {
        &self.directory
    }

    /// The audit writer.
    pub fn audit(&self) -> &Auditor {
        &self.audit
    }

    /// Registers the session of a sensor whose CONNECT was accepted; its writer task takes
    /// what to write with [`Session::take_out`].
    ///
    /// # Errors
    /// [`RegisterError::Clone`] when a live session uses the same certificate; that session
    /// is closed too and `mqtt.clone-detected` is written.
    pub fn register(
        &self,
        identity: &Identity,
        role: &str,
        source: IpAddr,
    ) -> Result<Arc<Session>, RegisterError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let session = Arc::new(Session {
            id,
            identity: identity.clone(),
            role: role.to_owned(),
            close: Mutex::new(None),
            closing: Notify::new(),
            stop: Notify::new(),
            wake: Notify::new(),
            out: Mutex::new(OutState::default()),
            filters: Mutex::new(BTreeMap::new()),
            max_queued: self.settings.max_queued_bytes,
            inflight_max: self.settings.inflight,
        });
        let previous = {
            let mut st = lock(&self.state);
            let previous = st.by_uid.get(&identity.uid).cloned();
            match &previous {
                Some(old) if old.identity.serial == identity.serial && !old.is_closing() => {
                    old.close(CloseReason::Clone);
                    drop(st);
                    self.counters.clones.fetch_add(1, Ordering::Relaxed);
                    self.audit.record(
                        Event::new("mqtt.clone-detected", &identity.uid, Outcome::Denied)
                            .with("uid", identity.uid.as_str())
                            .with("serial", identity.serial.as_str())
                            .with("source", source.to_string())
                            .with("action", "both-dropped"),
                    );
                    tracing::warn!(uid = %identity.uid, %source, "clone detected: same certificate on two live connections");
                    return Err(RegisterError::Clone);
                }
                _ => {}
            }
            st.by_uid.insert(identity.uid.clone(), Arc::clone(&session));
            st.by_id.insert(id, Arc::clone(&session));
            previous
        };
        if let Some(old) = previous
            && old.close(CloseReason::TakenOver)
        {
            self.audit.record(
                Event::new("mqtt.session-taken-over", &identity.uid, Outcome::Info)
                    .with("uid", identity.uid.as_str())
                    .with("old_serial", old.identity.serial.as_str())
                    .with("serial", identity.serial.as_str()),
            );
        }
        self.counters.sessions_total.fetch_add(1, Ordering::Relaxed);
        Ok(session)
    }

    /// Removes a session and its subscriptions (when the connection ends).
    pub fn unregister(&self, session: &Session) {
        let filters = std::mem::take(&mut *lock(&session.filters));
        let mut st = lock(&self.state);
        for f in filters.keys() {
            let levels: Vec<&str> = f.split(topic::SEP).collect();
            st.subs.remove(&levels, session.id);
        }
        st.by_id.remove(&session.id);
        if st
            .by_uid
            .get(&session.identity.uid)
            .is_some_and(|s| s.id == session.id)
        {
            st.by_uid.remove(&session.identity.uid);
        }
    }

    /// Drops the live session of `uid` at once (e.g. when its certificate is revoked); the
    /// connection writes `mqtt.disconnected` with `reason`. Returns whether one was live.
    pub fn disconnect_uid(&self, uid: &str, reason: &str) -> bool {
        let session = lock(&self.state).by_uid.get(uid).cloned();
        session.is_some_and(|s| s.close(CloseReason::Requested(reason.to_owned())))
    }

    /// Asks every live session to close.
    pub fn close_all(&self, reason: &CloseReason) {
        let all: Vec<_> = lock(&self.state).by_id.values().cloned().collect();
        for s in all {
            s.close(reason.clone());
        }
    }

    /// Whether `uid` has a live session.
    pub fn is_live(&self, uid: &str) -> bool {
        lock(&self.state).by_uid.contains_key(uid)
    }

    /// Adds a (checked) subscription of `session`; returns `false` when the session already
    /// has its maximum of subscriptions (replacing an existing filter always works).
    pub fn subscribe(&self, session: &Arc<Session>, filter: &str, qos: QoS) -> bool {
        {
            let mut filters = lock(&session.filters);
            if !filters.contains_key(filter) && filters.len() >= self.settings.max_subscriptions {
                return false;
            }
            filters.insert(filter.to_owned(), qos);
        }
        let retained: Vec<(String, Bytes, QoS)> = {
            let mut st = lock(&self.state);
            st.subs.insert(filter, session.id, qos);
            st.retained
                .iter()
                .filter(|(t, _)| topic::matches(filter, t))
                .map(|(t, r)| (t.clone(), r.payload.clone(), r.qos.min(qos)))
                .collect()
        };
        for (t, payload, q) in retained {
            let Ok(topic_name) = TopicName::try_from(t.as_str()) else {
                continue;
            };
            self.deliver_to(
                session,
                Pending {
                    topic: topic_name,
                    payload,
                    retain: true,
                },
                q,
            );
        }
        true
    }

    /// Removes a subscription of `session`.
    pub fn unsubscribe(&self, session: &Session, filter: &str) {
        if lock(&session.filters).remove(filter).is_some() {
            let levels: Vec<&str> = filter.split(topic::SEP).collect();
            lock(&self.state).subs.remove(&levels, session.id);
        }
    }

    fn deliver_to(&self, session: &Session, p: Pending, qos: QoS) {
        match session.deliver(p, qos) {
            Ok(n) => {
                self.counters.messages_out.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .bytes_out
                    .fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(()) => {
                if session.close(CloseReason::SlowReader) {
                    self.counters.slow_readers.fetch_add(1, Ordering::Relaxed);
                    let id = &session.identity;
                    self.audit.record(
                        Event::new("mqtt.slow-reader", &id.uid, Outcome::Denied)
                            .with("uid", id.uid.as_str())
                            .with("serial", id.serial.as_str())
                            .with("limit_bytes", self.settings.max_queued_bytes),
                    );
                }
            }
        }
    }

    /// Sends `payload` on `topic` to every local subscriber whose filter matches.
    /// Returns how many sessions it went to.
    fn fan_out(&self, topic_name: &TopicName, payload: &Bytes, qos: QoS) -> usize {
        let targets: Vec<(Arc<Session>, QoS)> = {
            let st = lock(&self.state);
            let levels: Vec<&str> = topic_name.split(topic::SEP).collect();
            let mut hits = HashMap::new();
            st.subs.collect(&levels, true, &mut hits);
            hits.into_iter()
                .filter_map(|(id, q)| st.by_id.get(&id).map(|s| (Arc::clone(s), q.min(qos))))
                .collect()
        };
        let n = targets.len();
        for (s, q) in targets {
            if !s.is_closing() {
                self.deliver_to(
                    &s,
                    Pending {
                        topic: topic_name.clone(),
                        payload: payload.clone(),
                        retain: false,
                    },
                    q,
                );
            }
        }
        n
    }

    fn retain(&self, topic_name: &str, payload: &Bytes, qos: QoS) {
        let mut st = lock(&self.state);
        if let Some(old) = st.retained.remove(topic_name) {
            st.retained_bytes = st.retained_bytes.saturating_sub(old.payload.len());
        }
        if payload.is_empty() {
            return; // an empty retained message clears the topic
        }
        if st.retained.len() >= self.settings.max_retained
            || st.retained_bytes.saturating_add(payload.len()) > self.settings.max_retained_bytes
        {
            self.counters
                .retained_refused
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        st.retained_bytes += payload.len();
        st.retained.insert(
            topic_name.to_owned(),
            Retained {
                payload: payload.clone(),
                qos,
            },
        );
    }

    /// Routes a sensor's publish (already checked against the ACL): to local subscribers,
    /// the retained store when `retain` is set, and the uplink. Returns the uplink's answer.
    pub fn publish_from(
        &self,
        session: &Session,
        topic_name: &TopicName,
        payload: Bytes,
        qos: QoS,
        retain: bool,
    ) -> oneshot::Receiver<Result<(), UplinkRefusal>> {
        self.counters.messages_in.fetch_add(1, Ordering::Relaxed);
        self.counters
            .bytes_in
            .fetch_add(payload.len() as u64, Ordering::Relaxed);
        if retain {
            self.retain(topic_name, &payload, qos);
        }
        self.fan_out(topic_name, &payload, qos);
        self.uplink.submit(Message {
            uid: session.identity.uid.clone(),
            topic: topic_name.to_string(),
            payload,
            qos: qos as u8,
        })
    }

    /// Sends a command from upstream to the local subscribers of `topic` (QoS 0 or 1; 2 is
    /// delivered as 1). Does not go back to the uplink. Returns how many sessions it reached.
    ///
    /// # Errors
    /// [`TopicError`] if `topic` is not a valid topic name under the settings' rules.
    pub fn publish_local(
        &self,
        topic: &str,
        payload: &Bytes,
        qos: u8,
    ) -> Result<usize, TopicError> {
        self.settings.topic.check_name(topic)?;
        let topic_name = TopicName::try_from(topic).map_err(|_| TopicError::WildcardInName)?;
        self.counters.local_in.fetch_add(1, Ordering::Relaxed);
        let qos = if qos == 0 { QoS::Level0 } else { QoS::Level1 };
        Ok(self.fan_out(&topic_name, payload, qos))
    }

    /// Counts a refused connection (the caller writes the audit event).
    pub fn count_refused(&self, reason: &str) {
        *lock(&self.counters.refused)
            .entry(reason.to_owned())
            .or_insert(0) += 1;
    }

    pub(crate) fn count_denied(&self) {
        self.counters.denied.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_payload_refused(&self) {
        self.counters
            .payload_refused
            .fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_malformed(&self) {
        self.counters.malformed.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_rate_limited(&self) {
        self.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_uplink_refused(&self) {
        self.counters.uplink_refused.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn stats(&self) -> Stats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (live, retained) = {
            let st = lock(&self.state);
            (st.by_id.len() as u64, st.retained.len() as u64)
        };
        Stats {
            connections_live: 0,
            sessions_live: live,
            sessions_total: get(&c.sessions_total),
            refused: lock(&c.refused).clone(),
            messages_in: get(&c.messages_in),
            bytes_in: get(&c.bytes_in),
            messages_out: get(&c.messages_out),
            bytes_out: get(&c.bytes_out),
            local_in: get(&c.local_in),
            denied: get(&c.denied),
            payload_refused: get(&c.payload_refused),
            malformed: get(&c.malformed),
            clones: get(&c.clones),
            rate_limited: get(&c.rate_limited),
            slow_readers: get(&c.slow_readers),
            uplink_refused: get(&c.uplink_refused),
            retained,
            retained_refused: get(&c.retained_refused),
            audit_dropped: get(&self.audit.dropped),
            audit_suppressed: self.audit.flood.suppressed(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node_with(filters: &[(&str, u64)]) -> Node {
        let mut n = Node::default();
        for (f, id) in filters {
            n.insert(f, *id, QoS::Level1);
        }
        n
    }

    fn hits(n: &Node, topic_name: &str) -> Vec<u64> {
        let levels: Vec<&str> = topic_name.split('/').collect();
        let mut out = HashMap::new();
        n.collect(&levels, true, &mut out);
        let mut v: Vec<u64> = out.into_keys().collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn subscription_tree_matches_like_the_filter_rules() {
        let n = node_with(&[
            ("#", 1),
            ("kawal/+/up/#", 2),
            ("kawal/s1/down/#", 3),
            ("kawal/s1/up/t", 4),
            ("+/+", 5),
            ("$SYS/#", 6),
        ]);
        assert_eq!(hits(&n, "kawal/s1/up/t"), [1, 2, 4]);
        assert_eq!(hits(&n, "kawal/s1/up"), [1, 2]);
        assert_eq!(hits(&n, "kawal/s1/down"), [1, 3]);
        assert_eq!(hits(&n, "a/b"), [1, 5]);
        assert_eq!(hits(&n, "$SYS/x"), [6]);
        // Cross-check against topic::matches.
        let filters = [
            "#",
            "kawal/+/up/#",
            "kawal/s1/down/#",
            "kawal/s1/up/t",
            "+/+",
            "$SYS/#",
        ];
        for t in [
            "kawal/s1/up/t",
            "kawal/s2/up",
            "a/b",
            "$SYS/x",
            "x",
            "kawal/s1/down/c/d",
        ] {
            let expect: Vec<u64> = (1..=6u64)
                .zip(filters)
                .filter(|(_, f)| topic::matches(f, t))
                .map(|(i, _)| i)
                .collect();
            assert_eq!(hits(&n, t), expect, "{t}");
        }
    }

    #[test]
    fn subscription_tree_prunes_on_remove() {
        let mut n = node_with(&[("a/b/c", 1), ("a/#", 2)]);
        assert!(!n.remove(&["a", "b", "c"], 1));
        assert!(!n.children["a"].children.contains_key("b"));
        assert!(n.remove(&["a", "#"], 2));
    }
}
