//! Audit entries, their canonical serialisation and their hash.
//!
//! # Canonical form
//! An entry is stored as one line: the canonical serialisation followed by `\n`. The
//! canonical serialisation is compact JSON (no whitespace) with the fields in this order:
//!
//! `seq, wall, clock, mono_ns, boot_id, event, actor, outcome, details, prev`
//! and, for checkpoints only, `kind, head, count, key_version, sig`.
//!
//! Integers are decimal without sign (except negative detail values), leading zeros or
//! exponent; hashes and signatures are lowercase hex; `wall` is `YYYY-MM-DDTHH:MM:SS.ffffffZ`;
//! `details` keys are sorted bytewise and unique; strings escape exactly `"`, `\` and control
//! characters (`\b \f \n \r \t`, otherwise `\u00xx` with lowercase hex), as serde_json does,
//! and nothing else. [`crate::canonical`] accepts this form only, so each entry has exactly
//! one encoding, and the hash of an entry ([`EntryHash::of`]) is SHA-256 over those bytes
//! without the newline.

use std::fmt;

mod encode;

pub(crate) use self::encode::Fields;
#[cfg(test)]
use self::encode::push_json_str;
use crate::details::{Details, Value};
use crate::time::{ClockState, Timestamp, WallTime};

/// The event name of checkpoint entries.
pub const CHECKPOINT_EVENT: &str = "audit.checkpoint";
/// The event that records a failed open-time check of the log against its anchor.
pub const TAMPER_EVENT: &str = "audit.tamper_detected";
/// The event that records the removal of an incomplete last line (a write cut by a crash).
pub const TAIL_REPAIRED_EVENT: &str = "audit.tail_repaired";
/// The actor of entries the log writes itself.
pub const LOG_ACTOR: &str = "kawal-audit";
/// Longest event name, in bytes.
pub const MAX_EVENT_LEN: usize = 96;
/// Longest actor, in bytes.
pub const MAX_ACTOR_LEN: usize = 256;

/// SHA-256 of an entry's canonical bytes: the link from one entry to the next.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntryHash(pub [u8; 32]);

impl EntryHash {
    /// The `prev` of the first entry: 32 zero bytes.
    pub const ZERO: Self = Self([0; 32]);

    /// SHA-256 of `canonical` (an entry's line without its newline).
    pub fn of(canonical: &[u8]) -> Self {
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical);
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        Self(out)
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 lowercase hex digits.
    pub fn from_hex(s: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        crate::canonical::decode_hex(s.as_bytes(), &mut out).then_some(Self(out))
    }
}

impl fmt::Display for EntryHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for EntryHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EntryHash({})", self.to_hex())
    }
}

/// How the recorded action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The action succeeded.
    Success,
    /// The action was attempted and failed.
    Failure,
    /// The action was refused by policy (authorisation, lockout, ACL).
    Denied,
    /// Not an attempted action: a state change or notice.
    Info,
}

impl Outcome {
    /// The name used in the log.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Denied => "denied",
            Self::Info => "info",
        }
    }

    /// The outcome named `s` in the log, if it is one.
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "success" => Some(Self::Success),
            "failure" => Some(Self::Failure),
            "denied" => Some(Self::Denied),
            "info" => Some(Self::Info),
            _ => None,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The signed part of a checkpoint entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// Hash of the chain up to and including the entry before the checkpoint (its `prev`).
    pub head: EntryHash,
    /// Number of entries that `head` commits to: the checkpoint's `seq` minus one.
    pub count: u64,
    /// Version of the audit signing key that made `sig`.
    pub key_version: u32,
    /// Ed25519 signature over [`crate::chain::checkpoint_message`].
    pub sig: [u8; 64],
}

/// One entry of the log, as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Position in the log, from 1, without gaps.
    pub seq: u64,
    /// When the entry was written.
    pub wall: WallTime,
    /// Whether the wall clock was synchronised then.
    pub clock: ClockState,
    /// Monotonic nanoseconds since boot then.
    pub mono_ns: u64,
    /// The kernel's boot ID (`unknown` where unreadable), telling boots apart.
    pub boot_id: String,
    /// Dotted event name, e.g. `auth.login`.
    pub event: String,
    /// Who acted: an account, a sensor's ID, or a component.
    pub actor: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Plain-valued details, secrets redacted.
    pub details: Details,
    /// Hash of the previous entry ([`EntryHash::ZERO`] for `seq` 1).
    pub prev: EntryHash,
    /// Present on checkpoint entries only.
    pub checkpoint: Option<Checkpoint>,
}

impl Entry {
    /// The canonical serialisation (no trailing newline).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(384);
        self.write_canonical(&mut out);
        out
    }

    /// Appends the canonical serialisation to `out`.
    pub fn write_canonical(&self, out: &mut Vec<u8>) {
        let ts = Timestamp {
            wall: self.wall,
            clock: self.clock,
            mono_ns: self.mono_ns,
        };
        let fields = Fields {
            seq: self.seq,
            ts: &ts,
            boot_id: &self.boot_id,
            event: &self.event,
            actor: &self.actor,
            outcome: self.outcome,
            details: &self.details,
            prev: &self.prev,
            checkpoint: self.checkpoint.as_ref(),
        };
        fields.write(out);
    }

    /// This entry's hash, as the next entry's `prev` must name it.
    pub fn hash(&self) -> EntryHash {
        EntryHash::of(&self.canonical_bytes())
    }

    /// Whether this is a checkpoint entry.
    pub fn is_checkpoint(&self) -> bool {
        self.checkpoint.is_some()
    }
}

/// An event to append: what the rest of kawal hands to [`crate::AuditLog::append`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub(crate) name: String,
    pub(crate) actor: String,
    pub(crate) outcome: Outcome,
    pub(crate) details: Details,
}

impl Event {
    /// An event named `name` (dotted, `a-z 0-9 _ -` segments, e.g. `account.role-changed`) by `actor`.
    pub fn new(name: &str, actor: &str, outcome: Outcome) -> Self {
        Self {
            name: name.to_owned(),
            actor: actor.to_owned(),
            outcome,
            details: Details::new(),
        }
    }

    /// Adds one detail (redacted if its key names a secret).
    #[must_use]
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key, value);
        self
    }

    /// Replaces the details.
    #[must_use]
    pub fn details(mut self, details: Details) -> Self {
        self.details = details;
        self
    }

    /// Whether this event can be appended: `Err(Error::InvalidEvent)` naming the first
    /// problem, as [`crate::AuditLog::append`] would refuse it. Lets a caller that batches
    /// events keep one bad event from failing the others.
    ///
    /// # Errors
    /// [`crate::Error::InvalidEvent`].
    pub fn validate(&self) -> crate::Result<()> {
        self.check(false)
            .map_err(|(field, reason)| crate::Error::InvalidEvent { field, reason })
    }

    /// The first reason this event cannot be logged, as (field, reason).
    pub(crate) fn check(&self, allow_reserved: bool) -> Result<(), (&'static str, &'static str)> {
        if !is_valid_event_name(self.name.as_bytes()) {
            return Err((
                "event",
                "must be dotted a-z 0-9 _ - segments, at most 96 bytes",
            ));
        }
        let reserved = [CHECKPOINT_EVENT, TAMPER_EVENT, TAIL_REPAIRED_EVENT];
        if !allow_reserved && reserved.contains(&self.name.as_str()) {
            return Err(("event", "reserved for the audit log itself"));
        }
        if !is_valid_actor(&self.actor) {
            return Err(("actor", "must be 1-256 bytes without control characters"));
        }
        self.details.check().map_err(|reason| ("details", reason))
    }
}

/// Whether `name` is a valid dotted event name (at least two segments).
pub(crate) fn is_valid_event_name(name: &[u8]) -> bool {
    // One pass: the verifier calls this for every entry.
    let (mut segments, mut seg_len) = (1, 0);
    for &b in name {
        match b {
            b'.' if seg_len > 0 => (segments, seg_len) = (segments + 1, 0),
            b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' => seg_len += 1,
            _ => return false,
        }
    }
    name.len() <= MAX_EVENT_LEN && segments >= 2 && seg_len > 0
}

/// Whether `actor` is valid: 1–256 bytes, no control characters.
pub(crate) fn is_valid_actor(actor: &str) -> bool {
    let no_control = if actor.is_ascii() {
        !actor.bytes().any(|b| b < 0x20 || b == 0x7f)
    } else {
        !actor.chars().any(char::is_control)
    };
    (1..=MAX_ACTOR_LEN).contains(&actor.len()) && no_control
}

/// [`is_valid_actor`] for an actor known to be ASCII.
pub(crate) fn is_valid_ascii_actor(actor: &[u8]) -> bool {
    (1..=MAX_ACTOR_LEN).contains(&actor.len()) && !actor.iter().any(|b| *b < 0x20 || *b == 0x7f)
}

/// Whether `id` is a valid boot ID: 1–64 bytes of `A-Z a-z 0-9 -`.
pub(crate) fn is_valid_boot_id(id: &[u8]) -> bool {
    (1..=64).contains(&id.len()) && id.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_match_serde_json() {
        let samples = [
            "plain",
            "q\"b\\s/",
            "ctl\u{1}\u{1f}\n\r\t\u{8}\u{c}\u{7f}",
            "ünï ☃ 😀",
        ];
        for s in samples {
            let mut out = Vec::new();
            push_json_str(&mut out, s);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(s).unwrap()
            );
        }
    }

    #[test]
    fn event_names_are_checked() {
        for good in [
            "daemon.started",
            "auth.login_failed",
            "account.role-changed",
            "a.b.c",
            "x1.y2",
        ] {
            assert!(is_valid_event_name(good.as_bytes()), "{good}");
        }
        for bad in [
            "daemon",
            "Daemon.started",
            "a..b",
            ".a",
            "a.",
            "a b.c",
            "a.b\nc",
            "",
        ] {
            assert!(!is_valid_event_name(bad.as_bytes()), "{bad}");
        }
        let e = Event::new(CHECKPOINT_EVENT, "x", Outcome::Info);
        assert!(e.check(false).is_err());
        assert!(
            Event::new("a.b", "bad\nactor", Outcome::Info)
                .check(false)
                .is_err()
        );
    }
}
