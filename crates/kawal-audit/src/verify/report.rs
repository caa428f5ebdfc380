//! What [`verify()`](super::verify) reports: the summary of a good log, or the first bad
//! entry and what is wrong with it.

use std::fmt;
use std::path::PathBuf;

use crate::canonical::ParseError;
use crate::entry::EntryHash;

/// What a successful verification found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Segment files read.
    pub segments: usize,
    /// Bytes read.
    pub bytes: u64,
    /// Entries, checkpoints included.
    pub entries: u64,
    /// Checkpoints, all with valid signatures.
    pub checkpoints: u64,
    /// Seq of the last entry (0 for an empty log).
    pub last_seq: u64,
    /// Hash of the last entry.
    pub head: EntryHash,
    /// Seq of the last checkpoint.
    pub last_checkpoint_seq: Option<u64>,
    /// Entries after the last checkpoint: chained, but not yet signed.
    pub unsigned_tail: u64,
    /// Key versions that signed checkpoints, in order of first use.
    pub key_versions: Vec<u32>,
    /// Seqs of `audit.tamper_detected` entries: earlier damage the writer recorded.
    pub tamper_records: Vec<u64>,
    /// Length of an incomplete last line (a write cut by a crash, or in progress).
    pub torn_tail_bytes: Option<u64>,
    /// Whether an anchor was given and matched.
    pub anchor_checked: bool,
}

/// Why verification failed.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// A segment could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The first bad entry.
    #[error("{0}")]
    Bad(Box<BadEntry>),
}

/// The first entry that failed a check, and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadEntry {
    /// The segment file (the last one for a truncated log; none for an empty log).
    pub segment: Option<PathBuf>,
    /// 1-based line in that file (one past the end for a missing entry).
    pub line: u64,
    /// The entry's seq, where it could be read (for a missing entry, the expected one).
    pub seq: Option<u64>,
    /// What is wrong.
    pub problem: Problem,
}

impl fmt::Display for BadEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.segment {
            Some(p) => write!(f, "{} line {}", p.display(), self.line)?,
            None => f.write_str("empty log")?,
        }
        if let Some(seq) = self.seq {
            write!(f, " (seq {seq})")?;
        }
        write!(f, ": {}", self.problem)
    }
}

/// What is wrong with a [`BadEntry`].
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Not a canonical entry (modified, corrupt, or written by something else).
    Parse(ParseError),
    /// A line without its newline before the end of the log.
    MissingNewline,
    /// Not the next seq: entries before it were removed, repeated or reordered.
    Seq {
        /// The seq that should be here.
        expected: u64,
        /// The seq found.
        found: u64,
    },
    /// `prev` is not the hash of the entry before: one of the two was changed, or an entry
    /// was inserted or removed between them.
    Prev {
        /// Hash of the entry before.
        expected: EntryHash,
        /// The `prev` found.
        found: EntryHash,
    },
    /// A checkpoint's `head` is not the hash of the entry before it.
    CheckpointHead {
        /// Hash of the entry before.
        expected: EntryHash,
        /// The `head` found.
        found: EntryHash,
    },
    /// A checkpoint's `count` is not the number of entries before it.
    CheckpointCount {
        /// Entries before it.
        expected: u64,
        /// The `count` found.
        found: u64,
    },
    /// A checkpoint names a key version that is not trusted.
    UnknownKeyVersion(u32),
    /// A checkpoint's signature does not verify with the trusted key of its version: forged,
    /// or re-signed with another key after the log was changed.
    BadSignature {
        /// The key version it names.
        key_version: u32,
    },
    /// The log ends before the anchored checkpoint: entries were removed from the end.
    Truncated {
        /// The anchored seq.
        anchor_seq: u64,
        /// The last seq present.
        last_seq: u64,
    },
    /// The entry at the anchored seq is not the anchored checkpoint: the log was rewritten
    /// (e.g. truncated and continued).
    AnchorMismatch {
        /// The anchored hash.
        expected: EntryHash,
        /// The hash found.
        found: EntryHash,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Parse(e) => write!(f, "not a valid entry ({e})"),
            Self::MissingNewline => f.write_str("incomplete line before the end of the log"),
            Self::Seq { expected, found } if found > expected => {
                write!(
                    f,
                    "expected seq {expected}, found {found}: entries missing or reordered"
                )
            }
            Self::Seq { expected, found } => {
                write!(
                    f,
                    "expected seq {expected}, found {found}: entry repeated or reordered"
                )
            }
            Self::Prev { expected, found } => write!(
                f,
                "prev {found} is not the hash {expected} of the entry before: changed, inserted or removed"
            ),
            Self::CheckpointHead { expected, found } => {
                write!(
                    f,
                    "checkpoint head {found} is not the chain head {expected}"
                )
            }
            Self::CheckpointCount { expected, found } => {
                write!(
                    f,
                    "checkpoint count {found}, but {expected} entries precede it"
                )
            }
            Self::UnknownKeyVersion(v) => {
                write!(f, "checkpoint signed with untrusted key version {v}")
            }
            Self::BadSignature { key_version } => {
                write!(
                    f,
                    "checkpoint signature invalid for trusted key version {key_version}"
                )
            }
            Self::Truncated {
                anchor_seq,
                last_seq,
            } => write!(
                f,
                "log ends at seq {last_seq}, before the anchored checkpoint {anchor_seq}: truncated"
            ),
            Self::AnchorMismatch { expected, found } => write!(
                f,
                "entry has hash {found}, the anchored checkpoint has {expected}: log rewritten"
            ),
        }
    }
}
