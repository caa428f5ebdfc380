//! The single writer's state: the open segment, the end of the chain, and how one batch is
//! serialised, written, synced and checkpointed.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;

use super::TamperPolicy;
use super::group_commit::Body;
use super::recover::{self, Head, Keys, Tail};
use crate::chain::{Anchor, AnchorStore, CheckpointSigner, checkpoint_message};
use crate::details::{Details, MAX_STR_LEN};
use crate::entry::{self, Checkpoint, Entry, EntryHash, Event, Fields, Outcome};
use crate::error::{Error, Result, TamperFinding};
use crate::segment::{self, LockFile};
use crate::time::Clock;

/// What a committed batch produced.
#[derive(Debug, Default)]
pub(crate) struct Committed {
    /// The seqs given to each request's events, in request order.
    pub seqs: Vec<Vec<u64>>,
    /// The entries written, for sinks (empty when there are none).
    pub entries: Vec<Entry>,
    /// How many entries were written (checkpoints included).
    pub written: u64,
    /// How many of them were checkpoints.
    pub checkpoints: u64,
    /// Whether saving the anchor failed (the entries are durable regardless).
    pub anchor_failed: bool,
}

/// The writer. Only one thread uses it; other processes are kept out by the lock file.
pub(crate) struct LogState {
    pub audit_dir: PathBuf,
    pub uid: String,
    pub boot_id: String,
    pub signer: Arc<dyn CheckpointSigner>,
    pub anchors: Arc<dyn AnchorStore>,
    pub clock: Arc<dyn Clock>,
    /// Whose checkpoints are accepted when following other writers' entries.
    pub keys: Keys,
    /// The anchor is saved once it would lag this many entries behind (and when forced).
    pub checkpoint_every: u64,
    /// The seq of the anchor this process last saved (or found at open).
    pub anchored_seq: u64,
    pub segment_max_bytes: u64,
    pub policy: TamperPolicy,
    pub keep_entries: bool,
    pub lock: Arc<LockFile>,
    pub file: File,
    pub ino: u64,
    pub tail: Tail,
    pub buf: Vec<u8>,
}

/// The chain while a batch is being built; copied into the tail only once it is durable.
struct Building {
    head: Head,
    since_checkpoint: u64,
    last_checkpoint: Option<Anchor>,
    out: Committed,
}

impl LogState {
    /// Opens the segment file `tail` points at, for appending.
    pub fn open_segment(audit_dir: &std::path::Path, tail: &Tail) -> Result<(File, u64)> {
        let path = segment::segment_path(audit_dir, tail.segment);
        let file = segment::open_append(&path)?;
        let ino = file
            .metadata()
            .map_err(|e| Error::io("stat", &path, e))?
            .ino();
        Ok((file, ino))
    }

    /// Takes the lock, catches up with other processes, and commits `reqs`; `checkpoint`
    /// forces a checkpoint at the end.
    pub fn commit(&mut self, reqs: &[&Body], checkpoint: bool) -> Result<Committed> {
        let lock = Arc::clone(&self.lock);
        let _guard = lock.lock()?;
        let mut notes = Vec::new();
        match recover::catch_up(&self.audit_dir, &self.tail, self.ino, &self.keys) {
            Ok(None) => {}
            Ok(Some(tail)) => self.adopt(tail, &mut notes)?,
            Err(Error::Tampered { finding }) => {
                let anchor = self.tail.last_checkpoint;
                notes.push(self.on_tamper(finding, anchor.as_ref())?);
                let tail = recover::fallback_tail(&self.audit_dir)?;
                self.adopt(tail, &mut notes)?;
            }
            Err(e) => return Err(e),
        }
        self.commit_locked(&notes, reqs, checkpoint)
    }

    /// Applies the tamper policy: the event to record, or the error to return.
    pub fn on_tamper(&self, finding: TamperFinding, anchor: Option<&Anchor>) -> Result<Event> {
        match self.policy {
            TamperPolicy::Refuse => Err(Error::Tampered { finding }),
            TamperPolicy::RecordAndContinue => {
                tracing::error!(%finding, "audit log tampered; continuing with a signed record");
                Ok(tamper_event(&finding, anchor))
            }
        }
    }

    /// Makes `tail` the end to append to, reopening the segment and repairing a torn line.
    pub fn adopt(&mut self, mut tail: Tail, notes: &mut Vec<Event>) -> Result<()> {
        if let Some(torn) = tail.torn.take() {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&torn.path)
                .map_err(|e| Error::io("open", &torn.path, e))?;
            f.set_len(torn.offset)
                .map_err(|e| Error::io("truncate", &torn.path, e))?;
            f.sync_data()
                .map_err(|e| Error::io("fdatasync", &torn.path, e))?;
            tracing::warn!(path = ?torn.path, bytes = torn.bytes.len(), "removed incomplete last audit line");
            let event = Event::new(entry::TAIL_REPAIRED_EVENT, entry::LOG_ACTOR, Outcome::Info)
                .with("segment", bounded(torn.path.display().to_string()))
                .with("offset", torn.offset)
                .with("bytes", torn.bytes.len())
                .with("sha256", EntryHash::of(&torn.bytes).to_hex());
            notes.push(event);
        }
        let (file, ino) = Self::open_segment(&self.audit_dir, &tail)?;
        self.file = file;
        self.ino = ino;
        self.tail = tail;
        Ok(())
    }

    /// Writes `notes` (the log's own records, followed by a checkpoint), then every request's
    /// events, then a checkpoint that signs them, in one write and one sync: no batch leaves
    /// entries unsigned (see [`recover::catch_up`]). The anchor is saved after the sync when
    /// it would otherwise lag `checkpoint_every` entries or more behind, and always when
    /// `checkpoint` (close), a [`Body::Checkpoint`] or `notes` ask for it. The caller holds
    /// the lock.
    pub fn commit_locked(
        &mut self,
        notes: &[Event],
        reqs: &[&Body],
        checkpoint: bool,
    ) -> Result<Committed> {
        if self.tail.len >= self.segment_max_bytes {
            self.rotate()?;
        }
        self.buf.clear();
        let mut b = Building {
            head: self.tail.head,
            since_checkpoint: self.tail.since_checkpoint,
            last_checkpoint: self.tail.last_checkpoint,
            out: Committed::default(),
        };
        let mut save_anchor = checkpoint || !notes.is_empty();
        for note in notes {
            self.push(&mut b, note);
        }
        if !notes.is_empty() {
            self.push_checkpoint(&mut b);
        }
        for body in reqs {
            let mut seqs = Vec::new();
            match body {
                Body::Events(events) => {
                    for event in events {
                        seqs.push(self.push(&mut b, event));
                    }
                }
                Body::Checkpoint => {
                    if b.since_checkpoint > 0 || b.head.seq == 0 {
                        self.push_checkpoint(&mut b);
                    }
                    seqs.push(b.head.seq);
                    save_anchor = true;
                }
            }
            b.out.seqs.push(seqs);
        }
        // Every batch ends signed, so a line after the last checkpoint is never ours.
        if b.since_checkpoint > 0 || (checkpoint && b.head.seq == 0) {
            self.push_checkpoint(&mut b);
        }
        self.write_and_sync()?;
        self.tail.head = b.head;
        self.tail.len += self.buf.len() as u64;
        self.tail.since_checkpoint = b.since_checkpoint;
        if let Some(anchor) = b.last_checkpoint
            && anchor.seq != self.anchored_seq
            && (save_anchor
                || anchor.seq.saturating_sub(self.anchored_seq) >= self.checkpoint_every)
        {
            // Still under the lock, so anchors are saved in log order across processes.
            match self.anchors.save(&anchor) {
                Ok(()) => self.anchored_seq = anchor.seq,
                Err(e) => {
                    tracing::error!(error = %e, seq = anchor.seq, "audit anchor not saved");
                    b.out.anchor_failed = true;
                }
            }
        }
        self.tail.last_checkpoint = b.last_checkpoint;
        Ok(b.out)
    }

    fn write_and_sync(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let path = segment::segment_path(&self.audit_dir, self.tail.segment);
        let res = self
            .file
            .write_all(&self.buf)
            .map_err(|e| Error::io("write", &path, e))
            .and_then(|()| {
                self.file
                    .sync_data()
                    .map_err(|e| Error::io("fdatasync", &path, e))
            });
        if res.is_err() {
            // Nobody was told these entries are durable; remove whatever part reached the file
            // so the next writer finds a clean end (it repairs a torn line otherwise).
            if let Err(e) = self.file.set_len(self.tail.len) {
                tracing::error!(?path, error = %e, "could not remove a failed audit write");
            }
        }
        res
    }

    fn rotate(&mut self) -> Result<()> {
        let next = Tail {
            segment: self.tail.segment + 1,
            len: 0,
            torn: None,
            ..self.tail.clone()
        };
        let (file, ino) = Self::open_segment(&self.audit_dir, &next)?;
        tracing::info!(segment = next.segment, "audit log rotated");
        self.file = file;
        self.ino = ino;
        self.tail = next;
        Ok(())
    }

    /// Serialises one event as the next entry; returns its seq.
    fn push(&mut self, b: &mut Building, event: &Event) -> u64 {
        self.push_fields(
            b,
            &event.name,
            &event.actor,
            event.outcome,
            &event.details,
            None,
        )
    }

    fn push_checkpoint(&mut self, b: &mut Building) {
        let seq = b.head.seq + 1;
        let count = b.head.seq;
        let msg = checkpoint_message(&self.uid, seq, &b.head.hash, count);
        let cp = Checkpoint {
            head: b.head.hash,
            count,
            key_version: self.signer.key_version(),
            sig: self.signer.sign(&msg),
        };
        let empty = Details::new();
        self.push_fields(
            b,
            entry::CHECKPOINT_EVENT,
            entry::LOG_ACTOR,
            Outcome::Info,
            &empty,
            Some(cp),
        );
        b.since_checkpoint = 0;
        b.last_checkpoint = Some(Anchor {
            seq,
            head: b.head.hash,
            sig: cp.sig,
        });
        b.out.checkpoints += 1;
    }

    fn push_fields(
        &mut self,
        b: &mut Building,
        event: &str,
        actor: &str,
        outcome: Outcome,
        details: &Details,
        checkpoint: Option<Checkpoint>,
    ) -> u64 {
        let ts = self.clock.now();
        let seq = b.head.seq + 1;
        let start = self.buf.len();
        let prev = b.head.hash;
        let fields = Fields {
            seq,
            ts: &ts,
            boot_id: &self.boot_id,
            event,
            actor,
            outcome,
            details,
            prev: &prev,
            checkpoint: checkpoint.as_ref(),
        };
        fields.write(&mut self.buf);
        let hash = EntryHash::of(&self.buf[start..]);
        self.buf.push(b'\n');
        b.head = Head { seq, hash };
        b.since_checkpoint += 1;
        b.out.written += 1;
        if self.keep_entries {
            b.out.entries.push(Entry {
                seq,
                wall: ts.wall,
                clock: ts.clock,
                mono_ns: ts.mono_ns,
                boot_id: self.boot_id.clone(),
                event: event.to_owned(),
                actor: actor.to_owned(),
                outcome,
                details: details.clone(),
                prev,
                checkpoint,
            });
        }
        seq
    }
}

/// The `audit.tamper_detected` event describing `finding`.
pub(crate) fn tamper_event(finding: &TamperFinding, anchor: Option<&Anchor>) -> Event {
    let mut e = Event::new(entry::TAMPER_EVENT, entry::LOG_ACTOR, Outcome::Failure)
        .with("finding", finding.kind())
        .with("description", bounded(finding.to_string()));
    if let Some(a) = anchor {
        e = e
            .with("anchor_seq", a.seq)
            .with("anchor_head", a.head.to_hex());
    }
    match finding {
        TamperFinding::Truncated { last_seq, .. } => e.with("last_seq", *last_seq),
        TamperFinding::AnchorMismatch { found, .. } => e.with("found_head", found.to_hex()),
        TamperFinding::ChainBroken { seq, .. } => e.with("seq", *seq),
        TamperFinding::Corrupt { line, .. } => e.with("line", *line),
        TamperFinding::UnsignedTail {
            first_seq,
            last_seq,
        } => e.with("first_seq", *first_seq).with("last_seq", *last_seq),
        _ => e,
    }
}

/// `s` cut to the longest detail string the log accepts (on a character boundary): the log's
/// own records must always parse, whatever path or text they quote.
fn bounded(mut s: String) -> String {
    if s.len() > MAX_STR_LEN {
        let mut end = MAX_STR_LEN;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}
