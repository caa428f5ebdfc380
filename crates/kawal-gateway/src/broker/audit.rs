//! The broker's audit writer: a dedicated thread, and flood control for what peers can cause
//! at will (see [`Auditor`]).
#[allow(
    clippy::wildcard_imports,
    reason = "the broker's own types and imports"
)]
use super::*;

/// Audit events queued for the writer thread at most; beyond that they are dropped and
/// counted ([`Stats::audit_dropped`]) rather than blocking the network.
pub const AUDIT_QUEUE: usize = 8192;
/// Audit events written in one commit at most.
const AUDIT_BATCH: usize = 1024;
pub use kawal_audit::flood::{
    INDIVIDUAL_PER_WINDOW as AUDIT_INDIVIDUAL_PER_WINDOW,
    SUMMARIES_PER_WINDOW as AUDIT_SUMMARIES_PER_WINDOW, SUMMARY_UIDS as AUDIT_SUMMARY_UIDS,
    TRACKED_SOURCES as AUDIT_TRACKED_SOURCES,
};

enum Job {
    Event(Box<Event>),
    Barrier(oneshot::Sender<()>),
}

/// Writes audit events from a dedicated thread, with flood control for what peers can cause
/// at will.
///
/// Refusals (`mqtt.refused`: source, limits, TLS, CONNECT checks, registry), denials
/// (`mqtt.denied`: ACL and payload rules) and malformed input (`mqtt.malformed`) are caused by the peer, as often as
/// it likes, so they go through [`Auditor::limited`]: per window
/// ([`Settings::audit_window`], default 60 s) each source (IPv4 address or IPv6 /64) gets its
/// first [`Settings::audit_refusals_per_source`] (default 10) events written individually,
/// and at most [`AUDIT_INDIVIDUAL_PER_WINDOW`] are written individually in total; the rest
/// are only counted. When the window ends, one `mqtt.events-suppressed` event per source
/// records the count, the kinds (`event/reason:count`) and up to [`AUDIT_SUMMARY_UIDS`] UIDs
/// (at most [`AUDIT_SUMMARIES_PER_WINDOW`] summaries, the rest folded into one with `source` =
/// `other`). So a flood writes at most about 300 events a window, whatever its size.
///
/// Events of admitted sessions (`mqtt.connected`, `mqtt.disconnected`,
/// `mqtt.clone-detected`, `mqtt.rate-limited`, `mqtt.slow-reader`, ...) are always written:
/// they need an enrolled, unrevoked certificate and are bounded by the handshake rate.
pub struct Auditor {
    tx: std::sync::mpsc::SyncSender<Job>,
    pub(super) dropped: AtomicU64,
    pub(super) flood: FloodControl,
}

impl std::fmt::Debug for Auditor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auditor")
            .field("dropped", &self.dropped)
            .finish_non_exhaustive()
    }
}

impl Auditor {
    pub(super) fn new(log: Arc<AuditLog>, settings: &Settings) -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(AUDIT_QUEUE);
        let spawned = std::thread::Builder::new()
            .name("kawal-mqtt-audit".into())
            .spawn(move || {
                // Everything queued while the last batch was being made durable goes into the
                // next one: one commit (and one fsync) for many events. Writing them one at a
                // time cost a commit per connection and per disconnection, a fifth of the
                // daemon's CPU at 1,600 handshakes/s.
                while let Ok(first) = rx.recv() {
                    let mut events = Vec::new();
                    let mut barriers = Vec::new();
                    let mut next = Some(first);
                    while let Some(job) = next {
                        match job {
                            Job::Event(e) => match e.validate() {
                                Ok(()) => events.push(*e),
                                Err(err) => tracing::error!(%err, "audit event not written"),
                            },
                            Job::Barrier(done) => barriers.push(done),
                        }
                        next = if events.len() < AUDIT_BATCH {
                            rx.try_recv().ok()
                        } else {
                            None
                        };
                    }
                    if let Err(err) = log.append_batch(events) {
                        tracing::error!(%err, "audit events not written");
                    }
                    // Every event queued before a barrier is in this batch or an earlier one.
                    for done in barriers {
                        let _ = done.send(());
                    }
                }
            });
        if let Err(err) = spawned {
            // Without the thread every event counts as dropped: visible in the stats.
            tracing::error!(%err, "could not start the MQTT audit thread");
        }
        Self {
            tx,
            dropped: AtomicU64::new(0),
            flood: FloodControl::new(
                "mqtt.events-suppressed",
                ANONYMOUS_ACTOR,
                settings.audit_refusals_per_source,
                settings.audit_window,
                Instant::now(),
            ),
        }
    }

    /// Queues `event`; if the queue is full it is dropped and counted.
    pub fn record(&self, event: Event) {
        if self.tx.try_send(Job::Event(Box::new(event))).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::error!("audit queue full: event dropped");
        }
    }

    /// Resolves once every event queued before the call has been appended (or dropped).
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.try_send(Job::Barrier(done)).is_ok() {
            let _ = wait.await;
        }
    }

    /// Records `event`, caused by the peer at `source`, under flood control (see the type's
    /// documentation). `kind` (e.g. `mqtt.refused/no-certificate`) and `uid` go into the
    /// summary when the event is only counted.
    pub fn limited(&self, source: IpAddr, kind: &str, uid: Option<&str>, event: Event) {
        self.roll(Instant::now());
        if self.flood.admit(source, kind, uid) {
            self.record(event);
        }
    }

    /// A refusal before the peer proved an identity: `mqtt.refused` with `reason`, `source`
    /// and `detail`, under flood control.
    pub fn refusal(&self, source: IpAddr, reason: &'static str, detail: Option<&str>) {
        let mut e = Event::new("mqtt.refused", ANONYMOUS_ACTOR, Outcome::Denied)
            .with("reason", reason)
            .with("source", source.to_string());
        if let Some(d) = detail {
            e = e.with("detail", d);
        }
        self.limited(source, &format!("mqtt.refused/{reason}"), None, e);
    }

    /// Writes the summaries of a window that has ended (called on every flood-controlled
    /// event and every second by the server).
    pub fn roll(&self, now: Instant) {
        for summary in self.flood.roll(now) {
            self.record(summary);
        }
    }
}

#[cfg(test)]
mod tests {
    use kawal_audit::{AuditOptions, FileAnchorStore, SystemClock};
    use kawal_crypto::keys::{AuditSigning, KeyHierarchy, KeyVersion};
    use kawal_crypto::root::RootSecret;

    use super::*;

    /// G045: PL-4-1
    /// Events queued while a commit is in flight share the next commit: 200 connection events
    /// take a handful of syncs, not 200; an invalid one is dropped alone; all valid ones are
    /// durable once `flush` returns.
    #[tokio::test]
    async fn queued_events_share_one_commit_and_a_bad_one_spoils_none() {
        let dir = tempfile::tempdir().expect("temp dir");
        let keys = KeyHierarchy::new(RootSecret::generate().expect("root"));
        let signer = keys
            .signing::<AuditSigning>(&KeyVersion::new(1).expect("version"))
            .expect("key");
        let log = Arc::new(
            AuditLog::open(
                dir.path(),
                "gw-test",
                Arc::new(signer),
                Arc::new(FileAnchorStore::new(dir.path().join("anchor.json"))),
                Arc::new(SystemClock::new()),
                AuditOptions::default(),
            )
            .expect("audit log"),
        );
        let auditor = Auditor::new(Arc::clone(&log), &Settings::default());
        let before = log.stats();
        for i in 0..200u32 {
            auditor.record(Event::new("mqtt.connected", "s1", Outcome::Success).with("n", i));
            if i == 100 {
                auditor.record(Event::new("Not A Name", "s1", Outcome::Success));
            }
        }
        auditor.flush().await;
        let after = log.stats();
        let batches = after.batches - before.batches;
        let entries = after.entries - before.entries - (after.checkpoints - before.checkpoints);
        assert_eq!(entries, 200, "every valid event is written");
        assert!(batches <= 20, "{batches} commits for 200 events");
        assert_eq!(auditor.dropped.load(Ordering::Relaxed), 0);
    }
}
