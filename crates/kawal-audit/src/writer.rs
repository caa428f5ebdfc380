//! [`AuditLog`]: appends that are durable before they return, with group commit.
//!
//! Appenders put their events on a queue and wait. One writer thread takes everything queued,
//! serialises it followed by a signed checkpoint, writes it with one `write`, makes it
//! durable with one `fdatasync`, saves the anchor if it is due (see
//! [`AuditOptions::checkpoint_every`]), and only then wakes each appender with its seqs. A
//! failed write or sync is returned to every appender of that batch and of every later one:
//! the log is failed, since after a failed sync it cannot know what reached the disk. Durable batches then go to the [`Sink`]s on a thread of their own, so a
//! slow or broken sink never holds up the log.
//!
//! Other processes (the CLI) may append to the same log: each batch holds an exclusive lock
//! on `audit/lock`, and first follows whatever another process appended since our last batch,
//! which must end with a checkpoint signed with our key (else it is a tamper finding).
//!
//! Entries are stamped by the writer as it serialises them (under the lock), not when
//! `append` was called: the time of recording, at most one sync (~1 ms) after the call, and
//! in seq order across all writers of one boot.

mod group_commit;
mod recover;
mod state;

use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use self::group_commit::{Body, Queue, Shared, lock, run_writer};
use self::state::LogState;
use crate::chain::{AnchorStore, CheckpointSigner, TrustedKeys};
use crate::entry::{self, Event};
use crate::error::{Error, Result};
use crate::segment::{self, LockFile};
use crate::sink::{self, Sink};
use crate::time::Clock;

/// What to do when the log on disk disagrees with its anchor (see [`crate::TamperFinding`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TamperPolicy {
    /// Refuse: [`AuditLog::open`] (or the batch that found it) returns
    /// [`Error::Tampered`], and nothing is appended. The safe default: the caller alerts.
    #[default]
    Refuse,
    /// Continue from whatever the log holds now, after first appending a signed
    /// `audit.tamper_detected` entry that records the finding, so the damage stays visible
    /// in the log for good. Use only after the caller has raised the alert.
    RecordAndContinue,
}

/// Options for [`AuditLog::open`].
pub struct AuditOptions {
    /// How often the anchor is saved to the [`AnchorStore`]: whenever it would otherwise lag
    /// this many entries (at least 1) or more behind the log, and on
    /// [`AuditLog::checkpoint`] and [`AuditLog::close`]. Default 1000.
    ///
    /// Checkpoints themselves are not governed by it: every batch of events ends with a
    /// signed checkpoint in the same write and sync, so the log never has an unsigned tail
    /// (an open or catch-up that finds one reports [`TamperFinding::UnsignedTail`]). Saving
    /// the anchor is another durable commit, in another store, so it is done less often;
    /// removal of whole batches from the end back to the anchor is what it cannot see until
    /// the next save.
    ///
    /// [`TamperFinding::UnsignedTail`]: crate::TamperFinding::UnsignedTail
    pub checkpoint_every: u64,
    /// A new segment is started at the first batch after the current one reaches this size.
    /// Default 16 MiB.
    pub segment_max_bytes: u64,
    /// What to do on a failed anchor check. Default [`TamperPolicy::Refuse`].
    pub on_tamper: TamperPolicy,
    /// Destinations that receive each durable batch (e.g. syslog over TLS).
    pub sinks: Vec<Box<dyn Sink>>,
    /// Durable batches that may wait for the sinks before newer ones are dropped for them
    /// (and counted in [`Stats::sink_batches_dropped`]). Default 1024.
    pub sink_queue_batches: usize,
    /// The boot ID to record; default: `/proc/sys/kernel/random/boot_id`, or `unknown`.
    pub boot_id: Option<String>,
}

impl Default for AuditOptions {
    fn default() -> Self {
        Self {
            checkpoint_every: 1000,
            segment_max_bytes: 16 << 20,
            on_tamper: TamperPolicy::Refuse,
            sinks: Vec::new(),
            sink_queue_batches: 1024,
            boot_id: None,
        }
    }
}

impl fmt::Debug for AuditOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditOptions")
            .field("checkpoint_every", &self.checkpoint_every)
            .field("segment_max_bytes", &self.segment_max_bytes)
            .field("on_tamper", &self.on_tamper)
            .field("sinks", &self.sinks.len())
            .field("sink_queue_batches", &self.sink_queue_batches)
            .field("boot_id", &self.boot_id)
            .finish()
    }
}

/// Counters of the writer, for health reporting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Entries written by this process (checkpoints included).
    pub entries: u64,
    /// Checkpoints written by this process.
    pub checkpoints: u64,
    /// Batches written, each with one sync.
    pub batches: u64,
    /// Anchor saves that failed (entries durable, truncation detection stays at the
    /// previous anchor; the next batch tries again).
    pub anchor_failures: u64,
    /// Batches delivered to all sinks.
    pub sink_batches_delivered: u64,
    /// Sink deliveries that failed (one per sink and batch).
    pub sink_failures: u64,
    /// Batches not given to the sinks because their queue was full.
    pub sink_batches_dropped: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    entries: AtomicU64,
    checkpoints: AtomicU64,
    batches: AtomicU64,
    anchor_failures: AtomicU64,
    pub(crate) sink_delivered: AtomicU64,
    pub(crate) sink_failures: AtomicU64,
    sink_dropped: AtomicU64,
}

/// An open, appendable audit log. Cheap to share: `append` takes `&self`.
pub struct AuditLog {
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<Result<()>>>>,
}

impl fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditLog")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Opens (creating) the log in `dir/audit/` for the device `device_uid`.
    ///
    /// The end of the log is checked against the anchor from `anchors`: if the log is shorter
    /// than the anchored checkpoint, or its entry there is not that checkpoint, or later
    /// entries do not chain from it, or the log does not end with a checkpoint signed with
    /// `signer`'s key ([`crate::TamperFinding::UnsignedTail`]), this returns
    /// [`Error::Tampered`] unless
    /// `options.on_tamper` says to record the finding and continue. An incomplete last line
    /// (a write cut by a crash, never acknowledged) is removed and the removal recorded.
    pub fn open(
        dir: &Path,
        device_uid: &str,
        signer: Arc<dyn CheckpointSigner>,
        anchors: Arc<dyn AnchorStore>,
        clock: Arc<dyn Clock>,
        options: AuditOptions,
    ) -> Result<Self> {
        check_signer(signer.as_ref(), device_uid)?;
        let audit_dir = segment::audit_dir(dir);
        std::fs::create_dir_all(&audit_dir).map_err(|e| Error::io("create", &audit_dir, e))?;
        let lock_file = Arc::new(LockFile::open(&audit_dir)?);
        let guard = lock_file.lock()?;
        let anchor = anchors.load()?;
        let policy = options.on_tamper;
        let keys = recover::Keys {
            uid: device_uid.to_owned(),
            trusted: TrustedKeys::new().with(signer.key_version(), signer.public_key()),
        };
        let (tail, finding) = match recover::open_tail(&audit_dir, anchor.as_ref(), &keys) {
            Ok(t) => (t, None),
            Err(Error::Tampered { finding }) if policy == TamperPolicy::RecordAndContinue => {
                (recover::fallback_tail(&audit_dir)?, Some(finding))
            }
            Err(e) => return Err(e),
        };
        let (file, ino) = LogState::open_segment(&audit_dir, &tail)?;
        let boot_id = options.boot_id.clone().unwrap_or_else(read_boot_id);
        let mut state = LogState {
            audit_dir,
            uid: device_uid.to_owned(),
            boot_id: if entry::is_valid_boot_id(boot_id.as_bytes()) {
                boot_id
            } else {
                "unknown".into()
            },
            signer,
            anchors,
            clock,
            keys,
            checkpoint_every: options.checkpoint_every.max(1),
            anchored_seq: anchor.as_ref().map_or(0, |a| a.seq),
            segment_max_bytes: options.segment_max_bytes,
            policy,
            keep_entries: !options.sinks.is_empty(),
            lock: Arc::clone(&lock_file),
            file,
            ino,
            tail: tail.clone(),
            buf: Vec::with_capacity(64 << 10),
        };
        let mut notes = Vec::new();
        if let Some(finding) = finding {
            notes.push(state.on_tamper(finding, anchor.as_ref())?);
        }
        state.adopt(tail, &mut notes)?;
        if !notes.is_empty() {
            state.commit_locked(&notes, &[], false)?;
        }
        drop(guard);

        let counters = Arc::new(Counters::default());
        let sinks = sink::spawn(options.sinks, options.sink_queue_batches, &counters)?;
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            counters,
        });
        let thread_shared = Arc::clone(&shared);
        let writer = std::thread::Builder::new()
            .name("kawal-audit-writer".into())
            .spawn(move || run_writer(&thread_shared, state, sinks))
            .map_err(|e| Error::io("spawn writer thread", dir, e))?;
        Ok(Self {
            shared,
            writer: Mutex::new(Some(writer)),
        })
    }

    /// [`AuditLog::open`] with [`TamperPolicy::RecordAndContinue`]: for the daemon after it
    /// has raised the alert for an [`Error::Tampered`] from `open`.
    pub fn open_after_tamper(
        dir: &Path,
        device_uid: &str,
        signer: Arc<dyn CheckpointSigner>,
        anchors: Arc<dyn AnchorStore>,
        clock: Arc<dyn Clock>,
        options: AuditOptions,
    ) -> Result<Self> {
        let options = AuditOptions {
            on_tamper: TamperPolicy::RecordAndContinue,
            ..options
        };
        Self::open(dir, device_uid, signer, anchors, clock, options)
    }

    /// Appends one event; returns its seq once it is durable.
    pub fn append(&self, event: Event) -> Result<u64> {
        let seqs = self.append_batch(vec![event])?;
        seqs.first().copied().ok_or(Error::Closed)
    }

    /// Appends events in order (possibly with other appenders' events or a checkpoint between
    /// them); returns their seqs
    /// once all are durable. Either all are recorded or an error is returned.
    pub fn append_batch(&self, events: Vec<Event>) -> Result<Vec<u64>> {
        for e in &events {
            e.check(false)
                .map_err(|(field, reason)| Error::InvalidEvent { field, reason })?;
        }
        if events.is_empty() {
            return Ok(Vec::new());
        }
        self.shared.request(Body::Events(events))
    }

    /// Appends `event` without waiting: returns at once, and `then` is called (on the log's
    /// own thread, so it must be quick) with the event's seq once it is durable, or with the
    /// error. For callers that must not block, such as an async runtime's worker threads: a
    /// slow disk (an SD card's sync can take 100 ms) then delays the answer, not everything
    /// else the thread serves.
    pub fn append_then(&self, event: Event, then: impl FnOnce(Result<u64>) + Send + 'static) {
        if let Err((field, reason)) = event.check(false) {
            then(Err(Error::InvalidEvent { field, reason }));
            return;
        }
        self.shared.submit(
            Body::Events(vec![event]),
            Box::new(move |r: Result<Vec<u64>>| {
                then(r.and_then(|seqs| seqs.first().copied().ok_or(Error::Closed)));
            }),
        );
    }

    /// Writes a checkpoint now (unless the last entry is one) and saves the anchor; returns
    /// the checkpoint's seq.
    pub fn checkpoint(&self) -> Result<u64> {
        let seqs = self.shared.request(Body::Checkpoint)?;
        seqs.first().copied().ok_or(Error::Closed)
    }

    /// The writer's counters.
    pub fn stats(&self) -> Stats {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            entries: get(&c.entries),
            checkpoints: get(&c.checkpoints),
            batches: get(&c.batches),
            anchor_failures: get(&c.anchor_failures),
            sink_batches_delivered: get(&c.sink_delivered),
            sink_failures: get(&c.sink_failures),
            sink_batches_dropped: get(&c.sink_dropped),
        }
    }

    /// Writes what is queued and a final checkpoint, saves the anchor, and stops the writer.
    /// Dropping the log does the same but can only log an error.
    pub fn close(self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&self) -> Result<()> {
        lock(&self.shared.queue).shutdown = true;
        self.shared.wake.notify_one();
        let handle = lock(&self.writer).take();
        match handle.map(JoinHandle::join) {
            None => Ok(()),
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(Error::LogFailed {
                cause: Arc::new(Error::Closed),
            }),
        }
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::error!(error = %e, "audit log did not close cleanly");
        }
    }
}

/// Signs and verifies a probe so that a misconfigured signer is found before it writes a
/// checkpoint nobody can verify. The probe has its own domain tag, so its signature can never
/// pass for a checkpoint's.
fn check_signer(signer: &dyn CheckpointSigner, uid: &str) -> Result<()> {
    let mut msg = b"kawal-audit-signer-probe-v1".to_vec();
    msg.extend_from_slice(uid.as_bytes());
    let version = signer.key_version();
    TrustedKeys::new()
        .with(version, signer.public_key())
        .verify(version, &msg, &signer.sign(&msg))
        .map_err(|_| Error::SignerMismatch {
            key_version: version,
        })
}

fn read_boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}
