//! The store-and-forward queue between the broker and the upstream bridge (G045 DS-1-2;
//! threat ST-G-2: telemetry stays available across an upstream outage or a restart).
//!
//! # Guarantee
//! A QoS 1 message is answered `Ok` (and so PUBACKed to the sensor) only once it is sealed
//! in the store in a committed redb transaction. It leaves the store only after the upstream
//! has PUBACKed it ([`Queue::ack`]), or, with the opt-in [`FullPolicy::DropOldest`], when
//! newer messages push it out. A crash at any point leaves either the old or the new
//! transaction on disk (redb commits atomically); [`Queue::open`] re-reads everything still
//! stored, so whatever was not acknowledged upstream is sent again: delivery is at least
//! once, in sequence order.
//!
//! # Group commit
//! [`Uplink::submit`] hands messages to one writer thread. It takes every message waiting
//! (up to [`QueueSettings::commit_max_messages`] / [`QueueSettings::commit_max_bytes`], and
//! whatever arrives within [`QueueSettings::commit_delay_us`] of the first) and
//! writes their QoS 1 messages as **one record** with one [`Store::put_many`] (one
//! transaction, one seal, one sync), then answers all their publishers. While one batch
//! syncs, the next one gathers, so the number of syncs follows the disk's speed, not the
//! message rate. A message is visible to the bridge as soon as it is accepted, so
//! forwarding does not wait for the disk (nor for the writer thread); an upstream PUBACK
//! that arrives before the commit only marks the message done, and the writer deletes the
//! record once it is on disk. One record per batch, not one per message, because record names are keyed
//! hashes: thousands of inserts per commit would touch pages all over the store's B-tree.
//!
//! # Store layout
//! Table `uplink-queue` (a [`Table::data`] table: values sealed under the store-data key,
//! record keys stored as keyed hashes):
//! - `b:<first seq as 20 decimal digits>` → the QoS 1 messages of one batch, in seq order,
//!   in the form of [`encode_batch`]: `version (2) | count (u32 BE) | count × (len (u32 BE)
//!   | message)`, each message in the form of [`encode`]: `version (1) | seq (u64 BE) |
//!   enqueued_at ms (u64 BE) | uid len (u16 BE) | uid | topic len (u16 BE) | topic |
//!   payload`.
//! - `m:<seq as 20 decimal digits>` → one message in the form of [`encode`] (written by
//!   earlier versions; still read).
//! - `next-seq` → the next sequence number (u64 BE), rewritten in every batch so that
//!   sequence numbers never repeat, even once the queue has been emptied.
//!
//! QoS 0 messages never touch the disk: they wait in memory, bounded on their own
//! ([`QueueSettings::qos0_max_messages`], [`QueueSettings::qos0_max_bytes`]), the oldest
//! dropped first and counted.
//!
//! # Deleting
//! A batch record is deleted once the upstream has acknowledged every message in it, behind
//! the acknowledgement: in the writer's next transaction (no sync of its own), or, when no
//! write comes within [`DELETE_GRACE`], in one transaction of the deleter thread for all
//! the records released since. Memory and the byte budget are freed at once, the disk a
//! little later. A crash in between, or while a batch is only partly acknowledged, only
//! means those messages are sent again after the restart (at least once).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use kawal_store::{Store, Table};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, oneshot};

use crate::{Message, Uplink, UplinkRefusal};

/// The store table of the queue.
pub const TABLE: Table = Table::data("uplink-queue");
/// The record holding the next sequence number.
const NEXT_SEQ_KEY: &str = "next-seq";
/// Prefix of single-message records (earlier versions).
const MSG_PREFIX: &str = "m:";
/// Prefix of batch records.
const BATCH_PREFIX: &str = "b:";
/// Version byte of the message format.
const RECORD_VERSION: u8 = 1;
/// Version byte of the batch record format.
const BATCH_VERSION: u8 = 2;
/// Bytes counted per message on top of uid, topic and payload (record header, sealing,
/// index): keeps tiny messages from escaping the byte budget.
pub const OVERHEAD: u64 = 64;

/// What to do with a QoS 1 message when the queue is at [`QueueSettings::max_bytes`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FullPolicy {
    /// Safe default: refuse the new message ([`UplinkRefusal::Full`]); the sensor gets no
    /// PUBACK and sends it again later. Nothing acknowledged is lost.
    #[default]
    Refuse,
    /// **Loses data**: delete the oldest messages, which were already acknowledged to their
    /// sensors, to make room. Only for deployments that prefer fresh telemetry over complete
    /// telemetry; every drop is counted in [`QueueStats::dropped_full`].
    DropOldest,
}

/// Settings of the queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct QueueSettings {
    /// Upper bound of stored (QoS 1) messages, in bytes as counted by [`message_size`].
    /// Default 64 MiB.
    pub max_bytes: u64,
    /// What happens when `max_bytes` is reached. Default [`FullPolicy::Refuse`].
    pub when_full: FullPolicy,
    /// The high-water alarm is raised at this percentage of `max_bytes` (default 80) and
    /// cleared 10 points below it.
    pub alarm_percent: u8,
    /// At most this many QoS 0 messages wait in memory (default 1,024).
    pub qos0_max_messages: usize,
    /// At most this many bytes of QoS 0 messages wait in memory (default 1 MiB).
    pub qos0_max_bytes: u64,
    /// At most this many messages go into one transaction (default 4,096).
    pub commit_max_messages: usize,
    /// At most about this many bytes go into one transaction (default 8 MiB).
    pub commit_max_bytes: u64,
    /// How long the writer waits for more messages after the first one of a batch, in
    /// microseconds (default 1,000; 0 = take only what is already waiting). Fewer, larger
    /// transactions at moderate rates; only the PUBACK waits, forwarding and local delivery
    /// do not. At most 100,000.
    pub commit_delay_us: u32,
    /// How many recent messages [`Queue::recent`] remembers (default 256).
    pub recent_len: usize,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            max_bytes: 64 << 20,
            when_full: FullPolicy::Refuse,
            alarm_percent: 80,
            qos0_max_messages: 1024,
            qos0_max_bytes: 1 << 20,
            commit_max_messages: 4096,
            commit_max_bytes: 8 << 20,
            commit_delay_us: 1000,
            recent_len: 256,
        }
    }
}

impl QueueSettings {
    /// Every problem with these settings (empty when they are usable).
    pub fn problems(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.max_bytes == 0 {
            out.push("max-bytes must be above 0");
        }
        if !(1..=100).contains(&self.alarm_percent) {
            out.push("alarm-percent must be 1-100");
        }
        if self.commit_max_messages == 0 {
            out.push("commit-max-messages must be above 0");
        }
        if self.commit_max_bytes == 0 {
            out.push("commit-max-bytes must be above 0");
        }
        if self.commit_delay_us > 100_000 {
            out.push("commit-delay-us must be at most 100000");
        }
        out
    }
}

/// Why the queue could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store could not be read or written.
    #[error("uplink queue: {0}")]
    Store(#[from] kawal_store::Error),
    /// A stored record opened fine but is not a queue record this version understands. The
    /// queue refuses to start rather than silently dropping it.
    #[error("uplink queue: record {key} is not readable: {reason}")]
    Corrupt {
        /// The record's key.
        key: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The settings are unusable (operator error).
    #[error("uplink queue settings: {}", .0.join("; "))]
    Settings(Vec<&'static str>),
    /// The writer thread could not be started.
    #[error("uplink queue: cannot start its writer thread: {0}")]
    Spawn(#[source] std::io::Error),
}

/// One message waiting for the upstream.
#[derive(Clone, PartialEq, Eq)]
pub struct Queued {
    /// Position in the queue; increases by one per accepted message, never repeats.
    pub seq: u64,
    /// The sensor that published it.
    pub uid: String,
    /// The sensor's topic.
    pub topic: String,
    /// The payload.
    pub payload: Bytes,
    /// 0 (memory only) or 1 (stored).
    pub qos: u8,
    /// When the queue accepted it, in milliseconds since the Unix epoch.
    pub enqueued_at: u64,
}

impl fmt::Debug for Queued {
    // Identifiers only, never the payload (STYLE §4).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queued")
            .field("seq", &self.seq)
            .field("uid", &self.uid)
            .field("topic", &self.topic)
            .field("payload_len", &self.payload.len())
            .field("qos", &self.qos)
            .field("enqueued_at", &self.enqueued_at)
            .finish()
    }
}

/// A recently accepted message, as the console shows it (no payload).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recent {
    /// Its sequence number.
    pub seq: u64,
    /// The sensor.
    pub uid: String,
    /// The topic.
    pub topic: String,
    /// Payload size in bytes.
    pub size: usize,
    /// 0 or 1.
    pub qos: u8,
    /// When it was accepted, ms since the Unix epoch.
    pub at: u64,
}

/// The queue's counters and levels.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct QueueStats {
    /// Messages waiting (stored and in memory).
    pub messages: u64,
    /// Their bytes as counted against the limits, including QoS 1 messages being written.
    pub bytes: u64,
    /// The limit for stored messages.
    pub max_bytes: u64,
    /// Whether usage is above the alarm threshold.
    pub high_water_alarm: bool,
    /// QoS 0 messages dropped because their memory bound was reached.
    pub dropped_qos0: u64,
    /// Stored messages deleted unsent to make room ([`FullPolicy::DropOldest`] only).
    pub dropped_full: u64,
    /// QoS 1 messages refused because the queue was full.
    pub refused_full: u64,
    /// QoS 1 messages refused because the store failed.
    pub store_errors: u64,
    /// Messages accepted.
    pub total_in: u64,
    /// Messages acknowledged by the upstream (QoS 0: handed to it).
    pub total_out: u64,
    /// Write transactions committed (each holds one batch of messages).
    pub commits: u64,
    /// Store records whose messages are all acknowledged, not yet deleted.
    pub deletes_pending: u64,
}

/// A callback told when the high-water alarm is raised (`true`) or cleared (`false`).
pub type AlarmHook = Arc<dyn Fn(bool) + Send + Sync>;

/// The bytes a message counts for against the limits.
pub fn message_size(uid: &str, topic: &str, payload_len: usize) -> u64 {
    // usize → u64 cannot lose on any supported target.
    (uid.len() + topic.len() + payload_len) as u64 + OVERHEAD
}

fn size_of(q: &Queued) -> u64 {
    message_size(&q.uid, &q.topic, q.payload.len())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn record_key(seq: u64) -> String {
    format!("{MSG_PREFIX}{seq:020}")
}

fn batch_key(first: u64) -> String {
    format!("{BATCH_PREFIX}{first:020}")
}

/// The stored form of a batch of QoS 1 messages (see the module docs); `None` if a uid or
/// topic is too long for the format.
pub fn encode_batch<'a>(msgs: impl IntoIterator<Item = &'a Queued>) -> Option<Vec<u8>> {
    let mut out = vec![BATCH_VERSION, 0, 0, 0, 0];
    let mut count = 0u32;
    for q in msgs {
        let m = encode(q)?;
        out.extend_from_slice(&u32::try_from(m.len()).ok()?.to_be_bytes());
        out.extend_from_slice(&m);
        count = count.checked_add(1)?;
    }
    out[1..5].copy_from_slice(&count.to_be_bytes());
    Some(out)
}

/// Reads what [`encode_batch`] wrote: at least one message, in strictly increasing seq order.
pub fn decode_batch(raw: &[u8]) -> Result<Vec<Queued>, &'static str> {
    let (head, mut rest) = raw.split_at_checked(5).ok_or("truncated")?;
    if head[0] != BATCH_VERSION {
        return Err("unknown record version");
    }
    let count = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
    if count == 0 {
        return Err("empty batch");
    }
    // Each message takes at least 4 + 21 bytes: a count beyond that is a lie, not an
    // allocation to make.
    if u64::from(count) * 25 > rest.len() as u64 {
        return Err("truncated");
    }
    let mut out: Vec<Queued> = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let (len, tail) = rest.split_at_checked(4).ok_or("truncated")?;
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let (m, tail) = tail.split_at_checked(len).ok_or("truncated")?;
        let q = decode(m)?;
        if out.last().is_some_and(|prev| prev.seq >= q.seq) {
            return Err("sequence numbers out of order");
        }
        out.push(q);
        rest = tail;
    }
    if !rest.is_empty() {
        return Err("trailing bytes");
    }
    Ok(out)
}

/// The stored form of a message (see the module docs).
pub fn encode(q: &Queued) -> Option<Vec<u8>> {
    let uid_len = u16::try_from(q.uid.len()).ok()?;
    let topic_len = u16::try_from(q.topic.len()).ok()?;
    let mut out = Vec::with_capacity(1 + 8 + 8 + 4 + q.uid.len() + q.topic.len() + q.payload.len());
    out.push(RECORD_VERSION);
    out.extend_from_slice(&q.seq.to_be_bytes());
    out.extend_from_slice(&q.enqueued_at.to_be_bytes());
    out.extend_from_slice(&uid_len.to_be_bytes());
    out.extend_from_slice(q.uid.as_bytes());
    out.extend_from_slice(&topic_len.to_be_bytes());
    out.extend_from_slice(q.topic.as_bytes());
    out.extend_from_slice(&q.payload);
    Some(out)
}

/// Reads what [`encode`] wrote.
pub fn decode(raw: &[u8]) -> Result<Queued, &'static str> {
    fn take<'a>(raw: &mut &'a [u8], n: usize) -> Result<&'a [u8], &'static str> {
        if raw.len() < n {
            return Err("truncated");
        }
        let (head, tail) = raw.split_at(n);
        *raw = tail;
        Ok(head)
    }
    fn u64_of(b: &[u8]) -> Result<u64, &'static str> {
        Ok(u64::from_be_bytes(b.try_into().map_err(|_| "truncated")?))
    }
    fn string(raw: &mut &[u8]) -> Result<String, &'static str> {
        let len = take(raw, 2)?;
        let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        let s = take(raw, len)?;
        String::from_utf8(s.to_vec()).map_err(|_| "not UTF-8")
    }
    let mut raw = raw;
    if take(&mut raw, 1)? != [RECORD_VERSION] {
        return Err("unknown record version");
    }
    let seq = u64_of(take(&mut raw, 8)?)?;
    let enqueued_at = u64_of(take(&mut raw, 8)?)?;
    let uid = string(&mut raw)?;
    let topic = string(&mut raw)?;
    Ok(Queued {
        seq,
        uid,
        topic,
        payload: Bytes::copy_from_slice(raw),
        qos: 1,
        enqueued_at,
    })
}

/// Where a QoS 1 publisher hears whether its message is stored.
type Reply = oneshot::Sender<Result<(), UplinkRefusal>>;

/// A message on its way to the writer thread.
/// A QoS 1 message on its way to the disk (already visible to the bridge).
struct Pending {
    q: Queued,
    size: u64,
    reply: Reply,
}

/// A stored record and how many of its messages still wait for the upstream.
struct Record {
    /// A batch record, or a single-message record of an earlier version.
    batch: bool,
    outstanding: u32,
    /// Whether its transaction has committed (messages reach the bridge before).
    written: bool,
}

#[derive(Default)]
struct State {
    /// Everything not yet acknowledged upstream, by seq.
    msgs: BTreeMap<u64, Queued>,
    /// The store records holding `msgs`' QoS 1 messages, by their first seq. A record covers
    /// the seqs from its first up to the next record's first, so a message's record is the
    /// last one starting at or before its seq.
    records: BTreeMap<u64, Record>,
    /// The next sequence number to hand out.
    next_seq: u64,
    /// Every seq below this is in a record or was never to be stored; at or above it, a
    /// stored message is still on its way to the writer.
    batched_below: u64,
    /// Messages acknowledged upstream before the writer put them into a record.
    early: BTreeSet<u64>,
    /// Bytes of stored messages in `msgs` plus QoS 1 messages being written.
    bytes: u64,
    /// Seqs of QoS 0 messages, oldest first (may hold seqs already acknowledged).
    qos0: VecDeque<u64>,
    qos0_count: usize,
    qos0_bytes: u64,
    recent: VecDeque<Recent>,
    alarm: bool,
    stats: QueueStats,
}

struct Shared {
    store: Arc<Store>,
    settings: QueueSettings,
    state: Mutex<State>,
    /// Woken when messages are added.
    added: Notify,
    deletes_pending: AtomicU64,
    /// Keys of records to delete: the writer takes them into its next transaction, the
    /// deleter thread takes what is left after [`DELETE_GRACE`].
    deletes: Mutex<Deletes>,
    deletes_cv: Condvar,
    alarm_hook: Mutex<Option<AlarmHook>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent data here (every update is a few
        // plain assignments), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Raises or clears the alarm after `st.bytes` changed; returns the change, for
    /// [`Shared::tell`] once the state lock is released.
    #[must_use]
    fn check_alarm(&self, st: &mut State) -> Option<bool> {
        let pct = u64::from(self.settings.alarm_percent);
        let used = u128::from(st.bytes) * 100;
        let max = u128::from(self.settings.max_bytes);
        let raise = used >= max * u128::from(pct);
        let clear = used < max * u128::from(pct.saturating_sub(10));
        let change = if !st.alarm && raise {
            tracing::warn!(
                bytes = st.bytes,
                max_bytes = self.settings.max_bytes,
                "uplink queue above its high-water mark: the upstream is not keeping up"
            );
            Some(true)
        } else if st.alarm && clear {
            tracing::info!(
                bytes = st.bytes,
                "uplink queue back below its high-water mark"
            );
            Some(false)
        } else {
            None
        };
        if let Some(on) = change {
            st.alarm = on;
        }
        change
    }

    /// Tells the alarm hook of a change (outside the state lock, so the hook may look at the
    /// queue).
    fn tell(&self, change: Option<bool>) {
        let Some(on) = change else {
            return;
        };
        let hook = self
            .alarm_hook
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(hook) = hook {
            hook(on);
        }
    }
}

/// The queue. Cheap to share as `Arc<Queue>`; dropping the last one finishes the batch
/// being written and stops the writer.
pub struct Queue {
    shared: Arc<Shared>,
    writer_tx: Option<mpsc::Sender<Pending>>,
    writer: Option<JoinHandle<()>>,
    deleter: Option<JoinHandle<()>>,
}

impl fmt::Debug for Queue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Queue {
    /// Opens the queue on `store`, recovering every message stored and not yet acknowledged,
    /// in sequence order.
    ///
    /// # Errors
    /// [`Error::Settings`] for unusable settings, [`Error::Store`] if the store cannot be
    /// read, [`Error::Corrupt`] for a record this version cannot read.
    pub fn open(store: Arc<Store>, settings: QueueSettings) -> Result<Arc<Self>, Error> {
        let problems = settings.problems();
        if !problems.is_empty() {
            return Err(Error::Settings(problems));
        }
        if settings.when_full == FullPolicy::DropOldest {
            tracing::warn!(
                "uplink queue policy drop-oldest: when full, messages already acknowledged to \
                 sensors are deleted unsent"
            );
        }
        let mut state = State::default();
        let mut next_seq = 1u64;
        let mut spans = Vec::new();
        for (key, value) in store.list(TABLE)? {
            if key == NEXT_SEQ_KEY {
                let b: [u8; 8] = value[..].try_into().map_err(|_| Error::Corrupt {
                    key: key.clone(),
                    reason: "not 8 bytes",
                })?;
                next_seq = next_seq.max(u64::from_be_bytes(b));
                continue;
            }
            let corrupt = |reason| Error::Corrupt {
                key: key.clone(),
                reason,
            };
            let (batch, msgs) = if key.starts_with(BATCH_PREFIX) {
                (true, decode_batch(&value).map_err(corrupt)?)
            } else {
                (false, vec![decode(&value).map_err(corrupt)?])
            };
            // Non-empty: decode_batch refuses an empty batch.
            let first = msgs[0].seq;
            let expected = if batch {
                batch_key(first)
            } else {
                record_key(first)
            };
            if key != expected {
                return Err(corrupt("key and sequence number differ"));
            }
            let outstanding = u32::try_from(msgs.len()).map_err(|_| corrupt("too many"))?;
            spans.push((first, msgs[msgs.len() - 1].seq, key.clone()));
            let record = Record {
                batch,
                outstanding,
                written: true,
            };
            if state.records.insert(first, record).is_some() {
                return Err(corrupt("two records start at the same sequence number"));
            }
            for q in msgs {
                next_seq = next_seq.max(q.seq.saturating_add(1));
                state.bytes += size_of(&q);
                if state.msgs.insert(q.seq, q).is_some() {
                    return Err(corrupt("a sequence number is stored twice"));
                }
            }
        }
        // A message's record is found by its seq, so records must not interleave.
        spans.sort_unstable();
        if let Some(w) = spans.windows(2).find(|w| w[0].1 >= w[1].0) {
            return Err(Error::Corrupt {
                key: w[1].2.clone(),
                reason: "records overlap",
            });
        }
        if !state.msgs.is_empty() {
            tracing::info!(
                messages = state.msgs.len(),
                bytes = state.bytes,
                "uplink queue recovered stored messages"
            );
        }
        state.stats.max_bytes = settings.max_bytes;
        state.next_seq = next_seq;
        state.batched_below = next_seq;
        let recent_len = settings.recent_len;
        state.recent = VecDeque::with_capacity(recent_len.min(1024));
        let shared = Arc::new(Shared {
            store,
            settings,
            state: Mutex::new(state),
            added: Notify::new(),
            deletes_pending: AtomicU64::new(0),
            deletes: Mutex::new(Deletes::default()),
            deletes_cv: Condvar::new(),
            alarm_hook: Mutex::new(None),
        });
        {
            let mut st = shared.lock();
            // No hook can be set yet; the warning is logged.
            let _ = shared.check_alarm(&mut st);
        }

        let (writer_tx, writer_rx) = mpsc::channel();
        let w = Arc::clone(&shared);
        let writer = std::thread::Builder::new()
            .name("kawal-uplink-writer".into())
            .spawn(move || run_writer(&w, &writer_rx))
            .map_err(Error::Spawn)?;
        let d = Arc::clone(&shared);
        let deleter = std::thread::Builder::new()
            .name("kawal-uplink-deleter".into())
            .spawn(move || run_deleter(&d))
            .map_err(Error::Spawn)?;
        Ok(Arc::new(Self {
            shared,
            writer_tx: Some(writer_tx),
            writer: Some(writer),
            deleter: Some(deleter),
        }))
    }

    /// Sets the callback told when the high-water alarm is raised or cleared (besides the
    /// `tracing` warning and [`QueueStats::high_water_alarm`]).
    pub fn set_alarm_hook(&self, hook: AlarmHook) {
        *self
            .shared
            .alarm_hook
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(hook);
    }

    /// The settings in force.
    pub fn settings(&self) -> &QueueSettings {
        &self.shared.settings
    }

    /// Counters and levels.
    pub fn stats(&self) -> QueueStats {
        let st = self.shared.lock();
        QueueStats {
            messages: st.msgs.len() as u64,
            bytes: st.bytes + st.qos0_bytes,
            high_water_alarm: st.alarm,
            deletes_pending: self.shared.deletes_pending.load(Ordering::Relaxed),
            ..st.stats.clone()
        }
    }

    /// Number of messages waiting.
    pub fn len(&self) -> usize {
        self.shared.lock().msgs.len()
    }

    /// Whether no message is waiting.
    pub fn is_empty(&self) -> bool {
        self.shared.lock().msgs.is_empty()
    }

    /// The last `n` messages accepted (at most [`QueueSettings::recent_len`]), newest last:
    /// for the console's live view, whether or not an upstream is configured.
    pub fn recent(&self, n: usize) -> Vec<Recent> {
        let st = self.shared.lock();
        let skip = st.recent.len().saturating_sub(n);
        st.recent.iter().skip(skip).cloned().collect()
    }

    /// Up to `max` of the oldest waiting messages, in order, without removing them; waits
    /// while the queue is empty.
    pub async fn peek_batch(&self, max: usize) -> Vec<Queued> {
        self.next_batch(0, max).await
    }

    /// Up to `max` waiting messages with a sequence number above `after`, in order; waits
    /// until there is at least one. Cancel-safe.
    pub async fn next_batch(&self, after: u64, max: usize) -> Vec<Queued> {
        let max = max.max(1);
        loop {
            let notified = self.shared.added.notified();
            tokio::pin!(notified);
            // Registered before looking, so an addition in between is not missed.
            notified.as_mut().enable();
            {
                let st = self.shared.lock();
                let out: Vec<Queued> = st
                    .msgs
                    .range(after.saturating_add(1)..)
                    .take(max)
                    .map(|(_, q)| q.clone())
                    .collect();
                if !out.is_empty() {
                    return out;
                }
            }
            notified.await;
        }
    }

    /// Removes the messages `seqs` (acknowledged by the upstream); unknown seqs are ignored.
    /// Their store records are deleted shortly after, in the background.
    pub fn ack(&self, seqs: &[u64]) {
        if seqs.is_empty() {
            return;
        }
        let mut stored = Vec::with_capacity(seqs.len());
        let change = {
            let mut st = self.shared.lock();
            for seq in seqs {
                let Some(q) = st.msgs.remove(seq) else {
                    continue;
                };
                st.stats.total_out += 1;
                if q.qos == 0 {
                    st.qos0_count = st.qos0_count.saturating_sub(1);
                    st.qos0_bytes = st.qos0_bytes.saturating_sub(size_of(&q));
                } else {
                    st.bytes = st.bytes.saturating_sub(size_of(&q));
                    stored.extend(release(&mut st, q.seq));
                }
            }
            prune_qos0(&mut st);
            self.shared.check_alarm(&mut st)
        };
        self.shared.tell(change);
        self.delete(stored);
    }

    /// Removes every message with a sequence number up to and including `seq`.
    pub fn ack_up_to(&self, seq: u64) {
        let seqs: Vec<u64> = self
            .shared
            .lock()
            .msgs
            .range(..=seq)
            .map(|(s, _)| *s)
            .collect();
        self.ack(&seqs);
    }

    fn delete(&self, keys: Vec<String>) {
        request_delete(&self.shared, keys);
    }

    /// Makes room for `size` more bytes under [`FullPolicy::DropOldest`]; returns the
    /// records left empty, for deletion.
    fn drop_oldest(&self, st: &mut State, size: u64) -> Vec<String> {
        let max = self.shared.settings.max_bytes;
        let mut dropped = 0usize;
        let mut emptied = Vec::new();
        while st.bytes + size > max {
            let Some(seq) = st.msgs.iter().find(|(_, q)| q.qos != 0).map(|(s, _)| *s) else {
                break;
            };
            if let Some(q) = st.msgs.remove(&seq) {
                st.bytes = st.bytes.saturating_sub(size_of(&q));
                st.stats.dropped_full += 1;
                dropped += 1;
                emptied.extend(release(st, seq));
            }
        }
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "uplink queue full: oldest stored messages deleted unsent (policy drop-oldest)"
            );
        }
        emptied
    }
}

/// Records to delete, and whether the queue is closing.
#[derive(Default)]
struct Deletes {
    keys: Vec<String>,
    closing: bool,
}

/// How long released records wait for a write transaction to take them along before the
/// deleter thread deletes them in one of its own: while messages flow, deleting costs no
/// extra sync.
const DELETE_GRACE: Duration = Duration::from_millis(20);

impl Shared {
    fn deletes(&self) -> MutexGuard<'_, Deletes> {
        // A plain list: usable after a panic elsewhere.
        self.deletes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes every record waiting to be deleted.
    fn take_deletes(&self) -> Vec<String> {
        std::mem::take(&mut self.deletes().keys)
    }

    /// Settles deletes taken by [`Shared::take_deletes`]: counted done, or given back.
    fn deletes_done(&self, keys: Vec<String>, ok: bool) {
        if ok {
            self.deletes_pending
                .fetch_sub(keys.len() as u64, Ordering::Relaxed);
        } else if !keys.is_empty() {
            self.deletes().keys.extend(keys);
            self.deletes_cv.notify_one();
        }
    }
}

/// Deletes `keys` with the next write transaction, or soon after on their own.
fn request_delete(shared: &Shared, keys: Vec<String>) {
    if keys.is_empty() {
        return;
    }
    shared
        .deletes_pending
        .fetch_add(keys.len() as u64, Ordering::Relaxed);
    shared.deletes().keys.extend(keys);
    shared.deletes_cv.notify_one();
}

/// Counts the stored message `seq` as gone from its record; returns the record's key once
/// none of its messages is left, for deletion.
fn release(st: &mut State, seq: u64) -> Option<String> {
    if seq >= st.batched_below {
        // The writer has not taken it yet: it counts it as done when it does.
        st.early.insert(seq);
        return None;
    }
    let (&first, record) = st.records.range_mut(..=seq).next_back()?;
    record.outstanding = record.outstanding.saturating_sub(1);
    // A record still being written is deleted by the writer once it is on disk.
    if record.outstanding > 0 || !record.written {
        return None;
    }
    let batch = record.batch;
    st.records.remove(&first);
    Some(if batch {
        batch_key(first)
    } else {
        record_key(first)
    })
}

/// Drops acknowledged seqs from the front of the QoS 0 list and compacts it when it holds
/// many acknowledged ones, so it stays about as long as the QoS 0 messages waiting.
fn prune_qos0(st: &mut State) {
    while let Some(front) = st.qos0.front() {
        if st.msgs.contains_key(front) {
            break;
        }
        st.qos0.pop_front();
    }
    if st.qos0.len() > 2 * st.qos0_count + 64 {
        let State { qos0, msgs, .. } = st;
        qos0.retain(|s| msgs.contains_key(s));
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        // Closing the channels lets the threads finish what they hold (the batch being
        // written, the deletes asked for) and end; waiting for them means the store is no
        // longer in use by the queue once it is gone.
        drop(self.writer_tx.take());
        if let Some(w) = self.writer.take()
            && w.join().is_err()
        {
            tracing::error!("the uplink queue writer panicked");
        }
        // The writer is done: the deleter deletes what is left and ends.
        self.shared.deletes().closing = true;
        self.shared.deletes_cv.notify_one();
        if let Some(d) = self.deleter.take()
            && d.join().is_err()
        {
            tracing::error!("the uplink queue deleter panicked");
        }
    }
}

impl Uplink for Queue {
    fn submit(&self, msg: Message) -> oneshot::Receiver<Result<(), UplinkRefusal>> {
        let (tx, rx) = oneshot::channel();
        let size = message_size(&msg.uid, &msg.topic, msg.payload.len());
        let at = now_ms();
        let Some(writer) = &self.writer_tx else {
            let _ = tx.send(Err(UplinkRefusal::Store));
            return rx;
        };
        if msg.qos != 0
            && (msg.uid.len() > usize::from(u16::MAX) || msg.topic.len() > usize::from(u16::MAX))
        {
            // The broker's limits keep these far shorter; the record format cannot hold them.
            let _ = tx.send(Err(UplinkRefusal::Store));
            return rx;
        }
        let mut dropped = Vec::new();
        let change = {
            let mut st = self.shared.lock();
            let max = self.shared.settings.max_bytes;
            if msg.qos != 0 {
                if st.bytes + size > max && self.shared.settings.when_full == FullPolicy::DropOldest
                {
                    dropped = self.drop_oldest(&mut st, size);
                }
                if st.bytes + size > max {
                    st.stats.refused_full += 1;
                    drop(st);
                    tracing::debug!(uid = %msg.uid, "uplink queue full: message refused");
                    let _ = tx.send(Err(UplinkRefusal::Full));
                    self.delete(dropped);
                    return rx;
                }
                // Reserved now, so that messages on their way to the disk count too.
                st.bytes += size;
            }
            let q = Queued {
                seq: st.next_seq,
                uid: msg.uid,
                topic: msg.topic,
                payload: msg.payload,
                qos: u8::from(msg.qos != 0),
                enqueued_at: at,
            };
            st.next_seq += 1;
            remember(&self.shared, &mut st, &q);
            if q.qos == 0 {
                st.stats.total_in += 1;
                st.qos0.push_back(q.seq);
                st.qos0_count += 1;
                st.qos0_bytes += size;
                st.msgs.insert(q.seq, q);
                bound_qos0(&self.shared, &mut st);
                let _ = tx.send(Ok(()));
            } else {
                // The bridge may send it at once; the publisher hears `Ok` once the writer
                // has it on disk. Sent under the lock, so the writer takes seqs in order.
                let pending = Pending {
                    q: q.clone(),
                    size,
                    reply: tx,
                };
                st.msgs.insert(q.seq, q);
                if let Err(mpsc::SendError(p)) = writer.send(pending) {
                    // The writer is gone (only at shutdown).
                    st.msgs.remove(&p.q.seq);
                    st.bytes = st.bytes.saturating_sub(size);
                    st.stats.store_errors += 1;
                    let _ = p.reply.send(Err(UplinkRefusal::Store));
                }
            }
            self.shared.check_alarm(&mut st)
        };
        self.shared.tell(change);
        self.delete(dropped);
        self.shared.added.notify_waiters();
        rx
    }
}

/// Adds a message to the console's list of recent ones.
fn remember(shared: &Shared, st: &mut State, q: &Queued) {
    let len = shared.settings.recent_len;
    if len == 0 {
        return;
    }
    if st.recent.len() >= len {
        st.recent.pop_front();
    }
    st.recent.push_back(Recent {
        seq: q.seq,
        uid: q.uid.clone(),
        topic: q.topic.clone(),
        size: q.payload.len(),
        qos: q.qos,
        at: q.enqueued_at,
    });
}

fn run_writer(shared: &Shared, rx: &mpsc::Receiver<Pending>) {
    let settings = &shared.settings;
    while let Ok(first) = rx.recv() {
        let mut batch_bytes = first.size;
        let mut batch = vec![first];
        // Everything already waiting, or arriving within the commit delay, joins this
        // transaction.
        let until =
            std::time::Instant::now() + Duration::from_micros(u64::from(settings.commit_delay_us));
        while batch.len() < settings.commit_max_messages && batch_bytes < settings.commit_max_bytes
        {
            let next = match rx.try_recv() {
                Ok(p) => Ok(p),
                Err(mpsc::TryRecvError::Empty) => {
                    match until.checked_duration_since(std::time::Instant::now()) {
                        Some(left) if !left.is_zero() => rx.recv_timeout(left).map_err(|_| ()),
                        _ => Err(()),
                    }
                }
                Err(mpsc::TryRecvError::Disconnected) => Err(()),
            };
            match next {
                Ok(p) => {
                    batch_bytes += p.size;
                    batch.push(p);
                }
                Err(()) => break,
            }
        }
        // Non-empty: it holds `first`.
        let value = encode_batch(batch.iter().map(|p| &p.q));
        let first_seq = batch[0].q.seq;
        let next_seq = register(shared, &batch);
        let written = match value {
            Some(value) => write_batch(shared, first_seq, &value, next_seq),
            None => {
                tracing::error!("uplink message with an over-long uid or topic");
                Err(UplinkRefusal::Store)
            }
        };
        finish_batch(shared, batch, written);
    }
}

/// Makes a batch's record known before it is written, counting the messages the upstream
/// already acknowledged; returns the next seq to persist.
fn register(shared: &Shared, batch: &[Pending]) -> u64 {
    let mut st = shared.lock();
    let first = batch[0].q.seq;
    let last = batch[batch.len() - 1].q.seq;
    let mut outstanding = 0u32;
    for p in batch {
        if !st.early.remove(&p.q.seq) {
            outstanding = outstanding.saturating_add(1);
        }
    }
    st.records.insert(
        first,
        Record {
            batch: true,
            outstanding,
            written: false,
        },
    );
    st.batched_below = last + 1;
    st.next_seq
}

/// Stores a batch record in one transaction.
fn write_batch(
    shared: &Shared,
    first: u64,
    value: &[u8],
    next_seq: u64,
) -> Result<(), UplinkRefusal> {
    let key = batch_key(first);
    let next = next_seq.to_be_bytes();
    // Records acknowledged since the last transaction go in this one: no sync of their own.
    let deletes = shared.take_deletes();
    let refs: Vec<&str> = deletes.iter().map(String::as_str).collect();
    let result = shared.store.put_and_delete(
        TABLE,
        &[(key.as_str(), value), (NEXT_SEQ_KEY, &next)],
        &refs,
    );
    shared.deletes_done(deletes, result.is_ok());
    match result {
        Ok(_) => {
            shared.lock().stats.commits += 1;
            Ok(())
        }
        Err(e) => {
            tracing::error!(error = %e, "uplink queue could not store messages");
            Err(UplinkRefusal::Store)
        }
    }
}

/// Settles a batch once its write ended: answers its publishers, and deletes its record if
/// the upstream already acknowledged all of it. Messages reach the bridge before they are
/// written (forwarding does not wait for the disk); nothing is lost by it: a publisher hears
/// `Ok` only once its batch is written, and a record is deleted only once written and fully
/// acknowledged. If the write fails, the publisher is refused and sends again, so the
/// upstream may see the message twice (at least once).
fn finish_batch(shared: &Shared, batch: Vec<Pending>, written: Result<(), UplinkRefusal>) {
    let first = batch[0].q.seq;
    let mut release = None;
    let change = {
        let mut st = shared.lock();
        if written.is_ok() {
            if let Some(record) = st.records.get_mut(&first) {
                record.written = true;
                if record.outstanding == 0 {
                    st.records.remove(&first);
                    release = Some(batch_key(first));
                }
            }
            st.stats.total_in += batch.len() as u64;
        } else {
            // Never on disk: nothing to delete, and nothing to send any more.
            st.records.remove(&first);
            for p in &batch {
                if st.msgs.remove(&p.q.seq).is_some() {
                    st.bytes = st.bytes.saturating_sub(p.size);
                }
                st.stats.store_errors += 1;
            }
        }
        shared.check_alarm(&mut st)
    };
    shared.tell(change);
    if let Some(key) = release {
        request_delete(shared, vec![key]);
    }
    for p in batch {
        // The publisher may have gone; the message is stored either way.
        let _ = p.reply.send(written);
    }
}

/// Drops the oldest QoS 0 messages while over their bounds.
fn bound_qos0(shared: &Shared, st: &mut State) {
    let s = &shared.settings;
    while st.qos0_count > s.qos0_max_messages || st.qos0_bytes > s.qos0_max_bytes {
        let Some(seq) = st.qos0.pop_front() else {
            break;
        };
        if let Some(q) = st.msgs.remove(&seq) {
            st.qos0_count = st.qos0_count.saturating_sub(1);
            st.qos0_bytes = st.qos0_bytes.saturating_sub(size_of(&q));
            st.stats.dropped_qos0 += 1;
        }
    }
}

fn run_deleter(shared: &Shared) {
    loop {
        {
            let mut d = shared.deletes();
            while d.keys.is_empty() && !d.closing {
                d = shared.deletes_cv.wait(d).unwrap_or_else(|p| p.into_inner());
            }
            if d.keys.is_empty() {
                return;
            }
            if !d.closing {
                // Give a write transaction the chance to take them along.
                drop(d);
                std::thread::sleep(DELETE_GRACE);
            }
        }
        let keys = shared.take_deletes();
        if keys.is_empty() {
            continue;
        }
        // One transaction for every record released and not taken by a write.
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        match shared.store.delete_many(TABLE, &refs) {
            Ok(_) => shared.deletes_done(keys, true),
            Err(e) => {
                tracing::warn!(error = %e, count = refs.len(), "uplink queue could not delete acknowledged messages");
                if shared.deletes().closing {
                    // Left for the next start, which sends them again (at least once).
                    shared.deletes_done(keys, true);
                    return;
                }
                shared.deletes_done(keys, false);
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

#[cfg(test)]
mod tests;
