//! The check of a collector's copy: [`verify_remote`], [`RemoteCopy`] and the comparison with
//! the device's local log ([`RemoteCopy::compare_local`]).
//!
//! The collector writes one line per message (rsyslog: a template of `%rawmsg%\n`, see the
//! parent module). The check parses every line strictly ([`parse_message`]), keeps one entry
//! per seq (a resent entry must be byte-identical to the first copy, else it is a conflict),
//! then walks the seqs in order: gaps, `prev` links, checkpoint `head`/`count`, and every
//! checkpoint's signature with the trusted keys, using the same message and keys as the local
//! check ([`checkpoint_message`], [`TrustedKeys`]).
//!
//! Lines without kawal's structured data, or from another HOSTNAME (another device), are
//! counted as foreign and otherwise ignored; deleting a line of ours shows as a gap. Lines
//! that claim to be ours but do not parse are reported with their line numbers. No line,
//! however malformed or long, makes the check panic or hold more than
//! [`MAX_MESSAGE_LEN`] of it in memory.
//!
//! Memory: one small record per distinct seq (about 100 bytes), so a copy of ten million
//! entries needs about 1 GB; check large archives per file.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use super::syslog::{MAX_MESSAGE_LEN, ParseProblem, parse_message};
use crate::chain::{SignatureProblem, TrustedKeys, checkpoint_message};
use crate::entry::EntryHash;
use crate::reader::{Filter, read_entries};

/// At most this many individual findings of each kind are listed (all are counted).
pub const MAX_LISTED: usize = 32;

/// Why the copy could not be read at all (bad lines are findings, not errors).
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// Reading the collector's file failed.
    #[error("cannot read the collector's copy {what}: {source}")]
    Io {
        /// The file, or "input".
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Reading the local log for the comparison failed.
    #[error("cannot read the local log: {0}")]
    Local(#[source] crate::Error),
}

/// One distinct entry of the copy.
#[derive(Debug, Clone, Copy)]
struct Slot {
    hash: EntryHash,
    prev: EntryHash,
    /// 1-based line of the first copy.
    line: u64,
    checkpoint: Option<CheckpointSlot>,
}

#[derive(Debug, Clone, Copy)]
struct CheckpointSlot {
    head: EntryHash,
    count: u64,
    sig: Result<(), SignatureProblem>,
}

/// A line that claims to be ours but is not well-formed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    /// 1-based line number in the copy.
    pub line: u64,
    /// What is wrong.
    pub problem: ParseProblem,
}

/// A collector's copy, parsed and deduplicated by seq.
#[derive(Debug, Clone)]
pub struct RemoteCopy {
    device_uid: String,
    slots: BTreeMap<u64, Slot>,
    lines: u64,
    foreign_lines: u64,
    bad_lines: u64,
    bad_listed: Vec<BadLine>,
    duplicates: u64,
    conflicts: Vec<u64>,
    conflict_count: u64,
}

/// What the check of a copy found. [`RemoteReport::is_intact`] sums it up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteReport {
    /// Lines read.
    pub lines: u64,
    /// Lines of other senders or devices, ignored.
    pub foreign_lines: u64,
    /// Distinct entries (by seq).
    pub entries: u64,
    /// Extra copies of entries, identical to the first (resends after a broken connection).
    pub duplicates: u64,
    /// Lines that claim to be ours but do not parse (the first [`MAX_LISTED`] are listed).
    pub bad_lines: u64,
    /// The first bad lines.
    pub bad_listed: Vec<BadLine>,
    /// Seqs that arrived twice with different contents: a forged or altered copy.
    pub conflicts: u64,
    /// The first conflicting seqs.
    pub conflict_seqs: Vec<u64>,
    /// First and last seq present.
    pub first_seq: Option<u64>,
    /// Last seq present.
    pub last_seq: Option<u64>,
    /// Seqs missing between the first and the last.
    pub missing_entries: u64,
    /// The first missing ranges, inclusive.
    pub gaps: Vec<(u64, u64)>,
    /// Seqs whose `prev` is not the hash of the entry before (both present).
    pub chain_breaks: u64,
    /// The first such seqs.
    pub chain_break_seqs: Vec<u64>,
    /// Checkpoints whose `head`/`count` are wrong, whose key version is not trusted, or whose
    /// signature does not verify.
    pub bad_checkpoints: u64,
    /// The first such seqs.
    pub bad_checkpoint_seqs: Vec<u64>,
    /// Checkpoints with a valid signature.
    pub checkpoints: u64,
    /// The newest checkpoint that verifies and is reached by an unbroken chain from
    /// `first_seq`: every entry up to it is authentic.
    pub signed_through: Option<u64>,
    /// Entries after `signed_through`: chained, not (yet) covered by a signature.
    pub unsigned_tail: u64,
}

impl RemoteReport {
    /// No bad line, conflict, gap, chain break or bad checkpoint. Duplicates and foreign
    /// lines are allowed.
    pub fn is_intact(&self) -> bool {
        self.bad_lines == 0
            && self.conflicts == 0
            && self.missing_entries == 0
            && self.chain_breaks == 0
            && self.bad_checkpoints == 0
    }
}

/// How the local log compares with the collector's copy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalComparison {
    /// The last seq of the local log (0 if empty).
    pub local_last_seq: u64,
    /// The last seq of the copy (0 if empty).
    pub remote_last_seq: u64,
    /// The copy holds entries the local log no longer has at its end: the device's log was
    /// truncated (or deleted and restarted) after forwarding.
    pub local_shorter: bool,
    /// Seqs present in both whose contents differ: the local log (or the copy) was altered.
    pub mismatches: u64,
    /// The first such seqs.
    pub mismatch_seqs: Vec<u64>,
    /// Seqs in the copy's range, at or before the local end, missing locally or unreadable.
    pub missing_locally: u64,
    /// Local entries after the copy's last one: not forwarded yet (the backlog).
    pub not_forwarded: u64,
}

impl LocalComparison {
    /// The local log holds everything the copy holds, unchanged.
    pub fn is_consistent(&self) -> bool {
        !self.local_shorter && self.mismatches == 0 && self.missing_locally == 0
    }
}

/// The report of [`verify_remote`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteVerification {
    /// The copy on its own.
    pub report: RemoteReport,
    /// The comparison with the local log, if one was given.
    pub local: Option<LocalComparison>,
}

impl RemoteVerification {
    /// The copy is intact and, if compared, the local log agrees with it.
    pub fn passed(&self) -> bool {
        self.report.is_intact()
            && self
                .local
                .as_ref()
                .is_none_or(LocalComparison::is_consistent)
    }
}

/// Checks the collector's file `copy` for device `device_uid` against the checkpoint keys
/// `trusted` and, given `local_dir`, compares it with the local log in `local_dir/audit/`.
///
/// # Errors
/// [`RemoteError`] only if a file cannot be read; everything wrong with the contents is in
/// the returned report.
pub fn verify_remote(
    copy: &Path,
    device_uid: &str,
    trusted: &TrustedKeys,
    local_dir: Option<&Path>,
) -> Result<RemoteVerification, RemoteError> {
    let io = |source| RemoteError::Io {
        what: copy.display().to_string(),
        source,
    };
    let file = File::open(copy).map_err(io)?;
    let remote =
        RemoteCopy::read(BufReader::new(file), device_uid, trusted).map_err(|e| match e {
            RemoteError::Io { source, .. } => io(source),
            other => other,
        })?;
    let local = local_dir.map(|d| remote.compare_local(d)).transpose()?;
    Ok(RemoteVerification {
        report: remote.report(),
        local,
    })
}

impl RemoteCopy {
    /// Reads a copy line by line. Signatures are checked here, against `trusted`.
    ///
    /// # Errors
    /// [`RemoteError::Io`] if reading fails.
    pub fn read(
        mut input: impl BufRead,
        device_uid: &str,
        trusted: &TrustedKeys,
    ) -> Result<Self, RemoteError> {
        let mut copy = Self {
            device_uid: device_uid.to_owned(),
            slots: BTreeMap::new(),
            lines: 0,
            foreign_lines: 0,
            bad_lines: 0,
            bad_listed: Vec::new(),
            duplicates: 0,
            conflicts: Vec::new(),
            conflict_count: 0,
        };
        let mut buf = Vec::with_capacity(4096);
        loop {
            buf.clear();
            let (n, too_long) =
                read_bounded_line(&mut input, &mut buf).map_err(|source| RemoteError::Io {
                    what: "input".into(),
                    source,
                })?;
            if n == 0 {
                break;
            }
            copy.lines += 1;
            if too_long {
                copy.add_bad(ParseProblem::TooLong(n));
                continue;
            }
            let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            copy.add_line(line, trusted);
        }
        Ok(copy)
    }

    fn add_bad(&mut self, problem: ParseProblem) {
        self.bad_lines += 1;
        if self.bad_listed.len() < MAX_LISTED {
            self.bad_listed.push(BadLine {
                line: self.lines,
                problem,
            });
        }
    }

    fn add_line(&mut self, line: &[u8], trusted: &TrustedKeys) {
        let m = match parse_message(line) {
            Ok(m) => m,
            Err(ParseProblem::Foreign) => {
                self.foreign_lines += 1;
                return;
            }
            Err(p) => {
                self.add_bad(p);
                return;
            }
        };
        if m.hostname != self.device_uid {
            self.foreign_lines += 1;
            return;
        }
        if let Some(slot) = self.slots.get(&m.seq) {
            if slot.hash == m.hash {
                self.duplicates += 1;
            } else {
                self.conflict_count += 1;
                if self.conflicts.len() < MAX_LISTED {
                    self.conflicts.push(m.seq);
                }
            }
            return;
        }
        let checkpoint = m.entry.checkpoint.map(|cp| {
            let msg = checkpoint_message(&self.device_uid, m.seq, &cp.head, cp.count);
            CheckpointSlot {
                head: cp.head,
                count: cp.count,
                sig: trusted.verify(cp.key_version, &msg, &cp.sig),
            }
        });
        self.slots.insert(
            m.seq,
            Slot {
                hash: m.hash,
                prev: m.prev,
                line: self.lines,
                checkpoint,
            },
        );
    }

    /// The check of the copy on its own (see the module docs).
    pub fn report(&self) -> RemoteReport {
        let mut r = RemoteReport {
            lines: self.lines,
            foreign_lines: self.foreign_lines,
            entries: self.slots.len() as u64,
            duplicates: self.duplicates,
            bad_lines: self.bad_lines,
            bad_listed: self.bad_listed.clone(),
            conflicts: self.conflict_count,
            conflict_seqs: self.conflicts.clone(),
            first_seq: self.slots.keys().next().copied(),
            last_seq: self.slots.keys().next_back().copied(),
            ..RemoteReport::default()
        };
        let mut before: Option<(u64, EntryHash)> = None;
        // Whether the chain is unbroken from the first entry up to here.
        let mut unbroken = true;
        for (&seq, slot) in &self.slots {
            if let Some((prev_seq, prev_hash)) = before {
                if seq != prev_seq + 1 {
                    let gap = (prev_seq + 1, seq - 1);
                    r.missing_entries += gap.1 - gap.0 + 1;
                    push_listed(&mut r.gaps, gap);
                    unbroken = false;
                } else if slot.prev != prev_hash {
                    r.chain_breaks += 1;
                    push_listed(&mut r.chain_break_seqs, seq);
                    unbroken = false;
                }
            } else if seq == 1 && slot.prev != EntryHash::ZERO {
                r.chain_breaks += 1;
                push_listed(&mut r.chain_break_seqs, seq);
                unbroken = false;
            }
            r.unsigned_tail += 1;
            if let Some(cp) = &slot.checkpoint {
                let linked = cp.head == slot.prev && cp.count == seq - 1;
                if linked && cp.sig.is_ok() {
                    r.checkpoints += 1;
                    if unbroken {
                        r.signed_through = Some(seq);
                        r.unsigned_tail = 0;
                    }
                } else {
                    r.bad_checkpoints += 1;
                    push_listed(&mut r.bad_checkpoint_seqs, seq);
                    unbroken = false;
                }
            }
            before = Some((seq, slot.hash));
        }
        if r.signed_through.is_none() {
            r.unsigned_tail = r.entries;
        }
        r
    }

    /// The 1-based line of the first copy of `seq`, if present.
    pub fn line_of(&self, seq: u64) -> Option<u64> {
        self.slots.get(&seq).map(|s| s.line)
    }

    /// Compares the copy with the local log in `dir/audit/`: every entry of the copy must be
    /// in the local log, unchanged, and the local log must not end before the copy.
    ///
    /// # Errors
    /// [`RemoteError::Local`] if the local log's folder cannot be listed.
    pub fn compare_local(&self, dir: &Path) -> Result<LocalComparison, RemoteError> {
        let first = self.slots.keys().next().copied().unwrap_or(1);
        let remote_last_seq = self.slots.keys().next_back().copied().unwrap_or(0);
        let filter = Filter {
            since_seq: Some(first),
            include_checkpoints: true,
            ..Filter::default()
        };
        let mut c = LocalComparison {
            remote_last_seq,
            ..LocalComparison::default()
        };
        let mut seen = 0u64;
        for item in read_entries(dir, filter).map_err(RemoteError::Local)? {
            let Ok(e) = item else {
                // A corrupt local line: its seq is unknown, so it shows as missing below.
                continue;
            };
            c.local_last_seq = c.local_last_seq.max(e.seq);
            match self.slots.get(&e.seq) {
                Some(slot) => {
                    seen += 1;
                    if slot.hash != e.hash() {
                        c.mismatches += 1;
                        push_listed(&mut c.mismatch_seqs, e.seq);
                    }
                }
                None if e.seq > remote_last_seq => c.not_forwarded += 1,
                None => {}
            }
        }
        if c.local_last_seq == 0 {
            // Nothing at or after `first`: the local log may still hold earlier entries.
            c.local_last_seq = super::follow::last_seq(dir).map_err(|e| {
                RemoteError::Local(crate::Error::Io {
                    op: "read",
                    path: dir.to_owned(),
                    source: std::io::Error::other(e.to_string()),
                })
            })?;
        }
        c.local_shorter = remote_last_seq > c.local_last_seq;
        let expected = self
            .slots
            .range(..=c.local_last_seq.min(remote_last_seq))
            .count() as u64;
        c.missing_locally = expected.saturating_sub(seen);
        Ok(c)
    }
}

fn push_listed<T>(v: &mut Vec<T>, item: T) {
    if v.len() < MAX_LISTED {
        v.push(item);
    }
}

/// Reads one line into `out`, keeping at most [`MAX_MESSAGE_LEN`] + 2 bytes of it; returns
/// the bytes the line had and whether it was cut.
fn read_bounded_line(
    input: &mut impl BufRead,
    out: &mut Vec<u8>,
) -> std::io::Result<(usize, bool)> {
    let keep = MAX_MESSAGE_LEN + 2;
    let mut total = 0;
    loop {
        let avail = match input.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if avail.is_empty() {
            return Ok((total, total > keep));
        }
        let (chunk, done) = match avail.iter().position(|b| *b == b'\n') {
            Some(i) => (&avail[..=i], true),
            None => (avail, false),
        };
        let n = chunk.len();
        if out.len() < keep {
            let take = n.min(keep - out.len());
            out.extend_from_slice(&chunk[..take]);
        }
        total += n;
        input.consume(n);
        if done {
            return Ok((total, total > keep));
        }
    }
}

/// Reads a whole copy from any reader (for tests and tools).
///
/// # Errors
/// As [`RemoteCopy::read`].
pub fn read_remote(
    input: impl Read,
    device_uid: &str,
    trusted: &TrustedKeys,
) -> Result<RemoteCopy, RemoteError> {
    RemoteCopy::read(BufReader::new(input), device_uid, trusted)
}
