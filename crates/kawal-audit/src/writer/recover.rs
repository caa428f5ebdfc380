//! Finding where the log ends: at open (checked against the anchor), after another process
//! appended (catch-up), and after tampering (fallback, to continue with a record of it).

use std::path::{Path, PathBuf};

use crate::canonical::{self, ParseError, Reason};
use crate::chain::{Anchor, TrustedKeys, checkpoint_message};
use crate::entry::{Checkpoint, EntryHash};
use crate::error::{Error, Result, TamperFinding};
use crate::segment::{self, split_lines};

/// The end of the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Head {
    /// Seq of the last entry (0 for an empty log).
    pub seq: u64,
    /// Its hash ([`EntryHash::ZERO`] for an empty log).
    pub hash: EntryHash,
}

impl Head {
    pub const GENESIS: Self = Self {
        seq: 0,
        hash: EntryHash::ZERO,
    };
}

/// An incomplete last line: a write cut short by a crash, never acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Torn {
    pub path: PathBuf,
    pub offset: u64,
    pub bytes: Vec<u8>,
}

/// Everything the writer must know about the end of the log.
#[derive(Debug, Clone)]
pub(crate) struct Tail {
    pub head: Head,
    /// Number of the segment to append to.
    pub segment: u64,
    /// Its length up to the end of the last complete line.
    pub len: u64,
    /// Entries after the last checkpoint.
    pub since_checkpoint: u64,
    /// The newest checkpoint seen, as an anchor.
    pub last_checkpoint: Option<Anchor>,
    /// An incomplete last line to remove.
    pub torn: Option<Torn>,
}

impl Tail {
    fn empty(segment: u64) -> Self {
        Self {
            head: Head::GENESIS,
            segment,
            len: 0,
            since_checkpoint: 0,
            last_checkpoint: None,
            torn: None,
        }
    }
}

/// Whose checkpoints the writer accepts when it follows entries it did not write: the
/// device's UID and the public key of its own signer.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    pub uid: String,
    pub trusted: TrustedKeys,
}

impl Keys {
    /// Whether `cp`, the entry `seq` following `prev`, is a checkpoint we would have written:
    /// it commits to the chain before it and its signature verifies under our key.
    fn valid(&self, seq: u64, prev: &EntryHash, cp: &Checkpoint) -> bool {
        if cp.head != *prev || cp.count != seq - 1 {
            return false;
        }
        let msg = checkpoint_message(&self.uid, seq, &cp.head, cp.count);
        self.trusted.verify(cp.key_version, &msg, &cp.sig).is_ok()
    }
}

/// `t` if every entry in it is covered by a valid checkpoint, else the finding naming those
/// that are not. Every batch a writer makes ends with a signed checkpoint in the same write,
/// so an unsigned tail is a forgery, or a crash that persisted a batch's events without its
/// checkpoint line: indistinguishable, and recorded the same way.
fn signed(t: Tail) -> Result<Tail> {
    if t.since_checkpoint == 0 {
        return Ok(t);
    }
    Err(tampered(TamperFinding::UnsignedTail {
        first_seq: t.head.seq + 1 - t.since_checkpoint,
        last_seq: t.head.seq,
    }))
}

fn tampered(finding: TamperFinding) -> Error {
    Error::Tampered { finding }
}

/// A [`TamperFinding::Corrupt`] for the line starting at byte `at` of `path`.
fn corrupt(path: &Path, at: u64, reason: ParseError) -> Error {
    let line = segment::read_from(path, 0).map_or(0, |b| {
        let end = usize::try_from(at).unwrap_or(usize::MAX).min(b.len());
        b[..end].iter().filter(|c| **c == b'\n').count() as u64 + 1
    });
    tampered(TamperFinding::Corrupt {
        path: path.to_owned(),
        line,
        reason,
    })
}

/// Follows the chain from `t` through `segs`, starting `offset` bytes into the first one.
/// Only checkpoints that `keys` finds valid count as checkpoints; any other entry (a
/// checkpoint with a bad signature too) is counted in `since_checkpoint`.
fn scan_forward(
    segs: &[(u64, PathBuf)],
    mut offset: u64,
    mut t: Tail,
    keys: &Keys,
) -> Result<Tail> {
    for (i, (n, path)) in segs.iter().enumerate() {
        let buf = segment::read_from(path, offset)?;
        let (lines, torn) = split_lines(&buf);
        for (off, line) in lines {
            let at = offset + off as u64;
            let v = canonical::parse_view(line).map_err(|r| corrupt(path, at, r))?;
            if v.seq != t.head.seq + 1 || v.prev != t.head.hash {
                return Err(tampered(TamperFinding::ChainBroken {
                    seq: v.seq,
                    path: path.clone(),
                }));
            }
            let prev = t.head.hash;
            t.head = Head {
                seq: v.seq,
                hash: EntryHash::of(line),
            };
            match v.checkpoint.filter(|cp| keys.valid(v.seq, &prev, cp)) {
                Some(cp) => {
                    t.since_checkpoint = 0;
                    t.last_checkpoint = Some(Anchor {
                        seq: v.seq,
                        head: t.head.hash,
                        sig: cp.sig,
                    });
                }
                None => t.since_checkpoint += 1,
            }
        }
        let complete = torn.unwrap_or(buf.len());
        if let Some(start) = torn {
            if i + 1 != segs.len() {
                let reason = ParseError {
                    offset: buf.len() - start,
                    reason: Reason::Expected("\\n"),
                };
                return Err(corrupt(path, offset + start as u64, reason));
            }
            let bytes = buf[start..].to_vec();
            t.torn = Some(Torn {
                path: path.clone(),
                offset: offset + start as u64,
                bytes,
            });
        }
        t.segment = *n;
        t.len = offset + complete as u64;
        offset = 0;
    }
    Ok(t)
}

/// The seq and `prev` of the first complete line of `path`, if it has one. Reads that line
/// only: open looks at the first line of several segments to find the anchored one.
fn first_seq(path: &Path) -> Result<Option<(u64, EntryHash)>> {
    use std::io::BufRead;

    let file = std::fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
    let mut line = Vec::new();
    std::io::BufReader::new(file)
        .read_until(b'\n', &mut line)
        .map_err(|e| Error::io("read", path, e))?;
    let Some(line) = line.strip_suffix(b"\n") else {
        return Ok(None);
    };
    let v = canonical::parse_view(line).map_err(|r| corrupt(path, 0, r))?;
    Ok(Some((v.seq, v.prev)))
}

/// The seq of the last entry that parses, searching from the end; 0 if none does.
fn last_parseable(segs: &[(u64, PathBuf)]) -> Result<Option<(usize, u64, Head)>> {
    for (i, (_, path)) in segs.iter().enumerate().rev() {
        let buf = segment::read_from(path, 0)?;
        let (lines, torn) = split_lines(&buf);
        let complete = torn.unwrap_or(buf.len()) as u64;
        for (_, line) in lines.iter().rev() {
            if let Ok(v) = canonical::parse_view(line) {
                return Ok(Some((
                    i,
                    complete,
                    Head {
                        seq: v.seq,
                        hash: EntryHash::of(line),
                    },
                )));
            }
        }
    }
    Ok(None)
}

/// Finds the end of the log at open and checks it against `anchor`.
///
/// With an anchor, the entry at `anchor.seq` must exist and hash to `anchor.head` (its bytes,
/// signature included, are then the anchored checkpoint), and every later entry must chain
/// from it. Without one, the last segment is followed from its first entry. Either way the
/// log must end with a checkpoint that `keys` finds valid ([`TamperFinding::UnsignedTail`]).
pub(crate) fn open_tail(audit_dir: &Path, anchor: Option<&Anchor>, keys: &Keys) -> Result<Tail> {
    let segs = segment::list_segments(audit_dir)?;
    let Some((last_n, _)) = segs.last() else {
        return match anchor {
            Some(a) => Err(tampered(TamperFinding::Truncated {
                anchor_seq: a.seq,
                last_seq: 0,
            })),
            None => Ok(Tail::empty(1)),
        };
    };
    let Some(a) = anchor else {
        // No anchor: start from the newest segment that has an entry.
        for i in (0..segs.len()).rev() {
            if let Some((seq, prev)) = first_seq(&segs[i].1)? {
                let mut t = Tail::empty(segs[i].0);
                t.head = Head {
                    seq: seq.saturating_sub(1),
                    hash: prev,
                };
                return scan_forward(&segs[i..], 0, t, keys).and_then(signed);
            }
        }
        return scan_forward(&segs, 0, Tail::empty(*last_n), keys).and_then(signed);
    };
    // The anchored entry is not where it should be: removed from the end (truncation), or
    // from the middle (then the chain is broken at the anchored seq).
    let missing = |segs: &[(u64, PathBuf)], path: &Path| -> Result<Error> {
        let last_seq = last_parseable(segs)?.map_or(0, |(_, _, h)| h.seq);
        Ok(tampered(if last_seq < a.seq {
            TamperFinding::Truncated {
                anchor_seq: a.seq,
                last_seq,
            }
        } else {
            TamperFinding::ChainBroken {
                seq: a.seq,
                path: path.to_owned(),
            }
        }))
    };
    // The newest segment that starts at or before the anchored seq holds it.
    let mut holder = None;
    for i in (0..segs.len()).rev() {
        if let Some((first, _)) = first_seq(&segs[i].1)?
            && first <= a.seq
        {
            holder = Some((i, first));
            break;
        }
    }
    let Some((i, first)) = holder else {
        return Err(missing(&segs, &segs[0].1)?);
    };
    let path = &segs[i].1;
    let buf = segment::read_from(path, 0)?;
    let (lines, _) = split_lines(&buf);
    let index = usize::try_from(a.seq - first).unwrap_or(usize::MAX);
    let Some(&(off, line)) = lines.get(index) else {
        return Err(missing(&segs, path)?);
    };
    let found = EntryHash::of(line);
    let v = canonical::parse_view(line).map_err(|r| corrupt(path, off as u64, r))?;
    if v.seq != a.seq {
        return Err(tampered(TamperFinding::ChainBroken {
            seq: v.seq,
            path: path.clone(),
        }));
    }
    if found != a.head {
        let finding = TamperFinding::AnchorMismatch {
            seq: a.seq,
            expected: a.head,
            found,
        };
        return Err(tampered(finding));
    }
    let mut t = Tail::empty(segs[i].0);
    t.head = Head {
        seq: a.seq,
        hash: a.head,
    };
    t.last_checkpoint = Some(*a);
    scan_forward(&segs[i..], (off + line.len() + 1) as u64, t, keys).and_then(signed)
}

/// After tampering was found: the end of whatever is there now, to continue from (the last
/// entry that parses, searching from the end). Appending then goes to the last segment.
pub(crate) fn fallback_tail(audit_dir: &Path) -> Result<Tail> {
    let segs = segment::list_segments(audit_dir)?;
    let Some((last_n, last_path)) = segs.last() else {
        return Ok(Tail::empty(1));
    };
    let mut t = Tail::empty(*last_n);
    let last_buf = segment::read_from(last_path, 0)?;
    let (_, torn) = split_lines(&last_buf);
    t.len = torn.unwrap_or(last_buf.len()) as u64;
    if let Some(start) = torn {
        let bytes = last_buf[start..].to_vec();
        t.torn = Some(Torn {
            path: last_path.clone(),
            offset: start as u64,
            bytes,
        });
    }
    if let Some((_, _, head)) = last_parseable(&segs)? {
        t.head = head;
        // Unknown after tampering: a checkpoint follows the tamper record at once anyway.
        t.since_checkpoint = 1;
    }
    Ok(t)
}

/// Under the lock: if another process appended since `t` (the segment grew, or a new one
/// exists), follow its entries. If our segment shrank, vanished or is another file now
/// (`ino` is the inode we write to), report tampering. What was appended must end with a
/// checkpoint signed with our key (`keys`), as every writer's batch does; entries after the
/// last valid one are reported as [`TamperFinding::UnsignedTail`], never adopted silently.
pub(crate) fn catch_up(audit_dir: &Path, t: &Tail, ino: u64, keys: &Keys) -> Result<Option<Tail>> {
    use std::os::unix::fs::MetadataExt;

    let path = segment::segment_path(audit_dir, t.segment);
    let meta = match std::fs::metadata(&path) {
        Ok(m) => Some(m),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io("stat", &path, e)),
    };
    let Some(meta) = meta.filter(|m| m.ino() == ino) else {
        return Err(tampered(TamperFinding::SegmentReplaced { path }));
    };
    let next_exists = segment::len_of(&segment::segment_path(audit_dir, t.segment + 1))?.is_some();
    if meta.len() == t.len && !next_exists {
        return Ok(None);
    }
    if meta.len() < t.len {
        let finding = TamperFinding::ShrankWhileOpen {
            path,
            expected_len: t.len,
            found_len: meta.len(),
        };
        return Err(tampered(finding));
    }
    let segs: Vec<_> = segment::list_segments(audit_dir)?
        .into_iter()
        .filter(|(n, _)| *n >= t.segment)
        .collect();
    let start = t.clone();
    scan_forward(
        &segs,
        t.len,
        Tail {
            torn: None,
            ..start
        },
        keys,
    )
    .and_then(signed)
    .map(Some)
}
