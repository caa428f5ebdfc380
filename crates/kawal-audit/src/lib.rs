//! The tamper-evident security event log of kawal (G045 PL-4-1, PL-4-2, PL-4-3).
//!
//! Every security event becomes one JSON line in an append-only segment file
//! (`<dir>/audit/log-NNNNNN.jsonl`). Each entry carries a gap-free sequence number, a
//! timestamp with the clock's synchronisation state and a monotonic reading, and the SHA-256
//! of the previous entry, so that changing, removing, inserting or reordering any entry breaks
//! the chain. Every durable batch ends with a checkpoint entry signed with the device's Ed25519
//! audit key, so nothing can be appended without the key; every
//! [`AuditOptions::checkpoint_every`] entries (and on demand and on close) the newest
//! checkpoint is kept as an [`Anchor`] by the caller where an attacker who can rewrite the log
//! files cannot (the encrypted store), so that truncation is detected too.
//!
//! - [`entry`]: the entry, its canonical serialisation and hash.
//! - [`canonical`]: the strict parser of that serialisation (one encoding per entry).
//! - [`details`]: event details (plain values only) and secret redaction.
//! - [`time`]: timestamps, clock state and the [`Clock`] trait.
//! - [`chain`]: checkpoint signatures, trusted keys, anchors.
//! - [`writer`]: [`AuditLog`], the durable writer with group commit.
//! - [`verify()`]: the full check of a log; [`reader`]: filtered reading for display.
//! - [`sink`]: delivery of durable batches to other destinations.
//! - [`forward`]: the remote collector over syslog on mutual TLS (RFC 5424/5425), resuming
//!   from a durable cursor; [`verify_remote`] checks a collector's copy against the chain.
//!
//! Hashing and verification are plain functions over bytes; only [`writer`], [`reader`] and
//! [`verify()`] touch files.
#![forbid(unsafe_code)]

pub mod canonical;
pub mod chain;
pub mod details;
pub mod entry;
pub mod flood;
pub mod forward;
pub mod reader;
pub mod sink;
pub mod time;
pub mod verify;
pub mod writer;

mod error;
mod segment;

pub use chain::{Anchor, AnchorStore, CheckpointSigner, FileAnchorStore, TrustedKeys};
pub use details::{Details, Value};
pub use entry::{Checkpoint, Entry, EntryHash, Event, Outcome};
pub use error::{Error, Result, TamperFinding};
pub use flood::FloodControl;
pub use forward::{ForwardConfig, ForwardError, ForwardStatus, Forwarder, verify_remote};
pub use reader::{Entries, Filter, read_entries};
pub use sink::{MemorySink, Sink, SinkError};
pub use time::{Clock, ClockState, SystemClock, Timestamp, WallTime};
pub use verify::{BadEntry, Problem, VerifyError, VerifyReport, verify};
pub use writer::{AuditLog, AuditOptions, Stats, TamperPolicy};

/// The folder under the caller's directory that holds the segment files and the lock file.
pub const SUBDIR: &str = "audit";
