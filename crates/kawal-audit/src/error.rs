//! The crate's error type.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use crate::canonical::ParseError;
use crate::entry::EntryHash;

/// A specialised `Result` for the audit log.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong when writing or reading the audit log.
///
/// Categories: [`Error::Io`] and [`Error::LogFailed`] are the environment (disk full, I/O
/// error); [`Error::Tampered`] and [`Error::Corrupt`] are caused by whoever changed the log
/// files (alert on them); [`Error::InvalidEvent`] is API misuse by the caller; [`Error::Anchor`]
/// comes from the caller's anchor store; [`Error::Closed`] means the log was shut down.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O operation on a log file or folder failed.
    #[error("audit log: {op} {path}: {source}")]
    Io {
        /// What was being done, e.g. "write", "fdatasync", "lock".
        op: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A write or sync failed earlier (or this batch's did): the log refuses further events,
    /// because after a failed sync it cannot know what reached the disk. Every appender
    /// waiting on the failed batch, and every later one, gets this error.
    #[error("audit log failed, events not recorded: {cause}")]
    LogFailed {
        /// The first error, shared by all who receive it.
        cause: Arc<Error>,
    },
    /// The log on disk disagrees with its anchor (the last checkpoint kept in the trusted
    /// store): it was truncated, rolled back or rewritten. The caller should alert; see
    /// [`crate::TamperPolicy`] to continue with a signed record of the finding.
    #[error("audit log tampered: {finding}")]
    Tampered {
        /// What the check found.
        finding: TamperFinding,
    },
    /// A line that the writer had to read (the tail) is not a canonical entry.
    #[error("audit log corrupt: {path} line {line}: {reason}")]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// 1-based line number in that file.
        line: u64,
        /// What is wrong with it.
        reason: ParseError,
    },
    /// The event given to append cannot be logged (a caller bug, never caused by the log).
    #[error("invalid audit event: {field}: {reason}")]
    InvalidEvent {
        /// The offending field: "event", "actor" or "details".
        field: &'static str,
        /// The rule it breaks.
        reason: &'static str,
    },
    /// The anchor store failed to load or save the anchor.
    #[error("audit anchor store: {0}")]
    Anchor(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The checkpoint signer's signatures do not verify under its own public key (a
    /// misconfigured key hierarchy); checked once at open so no unverifiable checkpoint is
    /// ever written.
    #[error("audit checkpoint signer (key version {key_version}) fails its own verification")]
    SignerMismatch {
        /// The signer's key version.
        key_version: u32,
    },
    /// The log has been closed. Also returned if the writer thread stopped (a bug) before
    /// answering; such an event may or may not have been recorded.
    #[error("audit log closed")]
    Closed,
}

impl Error {
    /// An [`Error::Io`] for `op` on `path`.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// What the open-time check of the log against its anchor found.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TamperFinding {
    /// The log ends before the anchored checkpoint (entries were removed from the end).
    Truncated {
        /// The anchored checkpoint's seq.
        anchor_seq: u64,
        /// The last seq found (0 for an empty log).
        last_seq: u64,
    },
    /// The entry at the anchored seq is not the anchored checkpoint (rewritten history).
    AnchorMismatch {
        /// The anchored seq.
        seq: u64,
        /// The anchored hash.
        expected: EntryHash,
        /// The hash of the entry found there.
        found: EntryHash,
    },
    /// The entries after the anchor do not chain from it, or their seqs are not consecutive.
    ChainBroken {
        /// The first seq that does not follow.
        seq: u64,
        /// The segment file holding it.
        path: PathBuf,
    },
    /// A line at or after the anchor is not a valid entry.
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// What is wrong with it.
        reason: ParseError,
    },
    /// A segment file shrank while this process was writing to it.
    ShrankWhileOpen {
        /// The segment file.
        path: PathBuf,
        /// Its length after our last write.
        expected_len: u64,
        /// Its length now.
        found_len: u64,
    },
    /// The segment file this process was appending to was deleted or replaced by another
    /// file while open.
    SegmentReplaced {
        /// The segment file.
        path: PathBuf,
    },
    /// Complete, well-chained entries follow the last checkpoint whose signature verifies.
    /// Every writer ends each durable batch with a signed checkpoint (in the same write and
    /// sync), so these were appended by someone without the signing key, or are the events
    /// of a batch whose checkpoint line a crash cut off: the two cannot be told apart.
    UnsignedTail {
        /// The first entry not covered by a valid checkpoint.
        first_seq: u64,
        /// The last entry of the log.
        last_seq: u64,
    },
}

impl TamperFinding {
    /// A short machine-readable name, as recorded in the `audit.tamper_detected` entry.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Truncated { .. } => "truncated",
            Self::AnchorMismatch { .. } => "anchor_mismatch",
            Self::ChainBroken { .. } => "chain_broken",
            Self::Corrupt { .. } => "corrupt",
            Self::ShrankWhileOpen { .. } => "shrank_while_open",
            Self::SegmentReplaced { .. } => "segment_replaced",
            Self::UnsignedTail { .. } => "unsigned_tail",
        }
    }
}

impl fmt::Display for TamperFinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated {
                anchor_seq,
                last_seq,
            } => write!(
                f,
                "log ends at seq {last_seq}, before the anchored checkpoint at seq {anchor_seq}"
            ),
            Self::AnchorMismatch {
                seq,
                expected,
                found,
            } => write!(
                f,
                "entry {seq} has hash {found}, the anchored checkpoint has {expected}"
            ),
            Self::ChainBroken { seq, path } => {
                write!(
                    f,
                    "entry {seq} in {} does not follow its predecessor",
                    path.display()
                )
            }
            Self::Corrupt { path, line, reason } => {
                write!(
                    f,
                    "{} line {line} is not a valid entry: {reason}",
                    path.display()
                )
            }
            Self::ShrankWhileOpen {
                path,
                expected_len,
                found_len,
            } => write!(
                f,
                "{} shrank from {expected_len} to {found_len} bytes while open",
                path.display()
            ),
            Self::SegmentReplaced { path } => {
                write!(f, "{} was deleted or replaced while open", path.display())
            }
            Self::UnsignedTail {
                first_seq,
                last_seq,
            } => write!(
                f,
                "entries {first_seq} to {last_seq} follow the last valid signed checkpoint \
                 (appended without the signing key, or a batch cut off by a crash)"
            ),
        }
    }
}
