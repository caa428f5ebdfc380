//! The syslog codec of the forwarder: RFC 5424 messages in RFC 5425 octet-counting frames,
//! and the strict parser of those messages for the remote check. No I/O.
//!
//! One entry is one message:
//!
//! ```text
//! <PRI>1 TIMESTAMP HOSTNAME kawal - MSGID [kawal@32473 seq="N" hash="H" prev="P"] JSON
//! ```
//!
//! - PRI: facility `authpriv` (10); severity from the entry: `critical` for
//!   `audit.tamper_detected` and the [`CRITICAL_EVENTS`], `warning` for `denied` and `failure`, `notice` for `success`,
//!   `info` otherwise.
//! - TIMESTAMP: the entry's wall time (`YYYY-MM-DDTHH:MM:SS.ffffffZ`).
//! - HOSTNAME: the device UID, so one collector file can hold several devices.
//! - MSGID: `checkpoint` for checkpoint entries, `audit` for the others.
//! - Structured data, in the manner of RFC 5848 (signed syslog): the entry's seq, its hash and
//!   its `prev`, so a collector's copy can be put in order, deduplicated and checked against
//!   the chain without trusting the transport. Checkpoint entries travel like any other, so
//!   their signatures reach the collector.
//! - MSG: the entry's canonical JSON, byte for byte (never longer than one line: the canonical
//!   form escapes every control character). No BOM: the message is `MSG-ANY` of RFC 5424.
//!
//! Header fields are informational; the JSON is authoritative, and the parser requires that
//! the structured data agree with it.

use std::fmt;

use crate::canonical;
use crate::entry::{self, Entry, EntryHash, Outcome};
use crate::time::WallTime;

/// The SD-ID of the element carrying seq, hash and prev. `32473` is the private enterprise
/// number that RFC 5612 reserves for documentation.
pub const SD_ID: &str = "kawal@32473";
/// The APP-NAME of every message.
pub const APP_NAME: &str = "kawal";
/// The syslog facility: `authpriv` (security/authorisation messages).
pub const FACILITY: u8 = 10;
/// The MSGID of checkpoint entries.
pub const MSGID_CHECKPOINT: &str = "checkpoint";
/// The MSGID of other entries.
pub const MSGID_AUDIT: &str = "audit";
/// Longest HOSTNAME RFC 5424 allows.
pub const MAX_HOSTNAME_LEN: usize = 255;
/// Longest message the parser accepts, in bytes: above the largest entry the writer can
/// produce (64 details of 4 KiB, each character escaped) with its header. A collector must
/// accept messages this long (rsyslog: `global(maxMessageSize="2m")`), or a large entry
/// arrives cut and fails the check.
pub const MAX_MESSAGE_LEN: usize = 2 << 20;

/// Events the device raises as critical besides the log's own tamper record: physical tamper
/// (the device destroyed its keys) and a forwarding backlog at its alarm level.
pub const CRITICAL_EVENTS: [&str; 2] = ["device.tamper", "log.forward-backlog"];

/// The syslog severity of `e` (RFC 5424 numeric code).
pub fn severity(e: &EntryFields<'_>) -> u8 {
    if e.event == entry::TAMPER_EVENT.as_bytes()
        || CRITICAL_EVENTS.iter().any(|c| e.event == c.as_bytes())
    {
        return 2;
    }
    match e.outcome {
        Outcome::Denied | Outcome::Failure => 4,
        Outcome::Success => 5,
        Outcome::Info => 6,
    }
}

/// What the codec needs of an entry besides its canonical bytes.
#[derive(Debug, Clone, Copy)]
pub struct EntryFields<'a> {
    /// The entry's seq.
    pub seq: u64,
    /// Its wall time.
    pub wall: WallTime,
    /// Its outcome.
    pub outcome: Outcome,
    /// Its event name.
    pub event: &'a [u8],
    /// Its `prev`.
    pub prev: EntryHash,
    /// Whether it is a checkpoint.
    pub checkpoint: bool,
}

impl<'a> From<&'a Entry> for EntryFields<'a> {
    fn from(e: &'a Entry) -> Self {
        Self {
            seq: e.seq,
            wall: e.wall,
            outcome: e.outcome,
            event: e.event.as_bytes(),
            prev: e.prev,
            checkpoint: e.is_checkpoint(),
        }
    }
}

/// Whether `host` can be a HOSTNAME: 1–255 printable US-ASCII characters, no space.
pub fn is_valid_hostname(host: &str) -> bool {
    (1..=MAX_HOSTNAME_LEN).contains(&host.len()) && host.bytes().all(|b| (33..=126).contains(&b))
}

/// Appends the RFC 5424 message of the entry whose canonical bytes are `canonical` (with hash
/// `hash`) to `out`. `hostname` must pass [`is_valid_hostname`].
pub fn write_message(
    out: &mut Vec<u8>,
    hostname: &str,
    e: &EntryFields<'_>,
    canonical: &[u8],
    hash: &EntryHash,
) {
    use std::io::Write as _;

    let pri = FACILITY * 8 + severity(e);
    let msgid = if e.checkpoint {
        MSGID_CHECKPOINT
    } else {
        MSGID_AUDIT
    };
    // Writing to a Vec cannot fail.
    let _ = write!(out, "<{pri}>1 ");
    e.wall.write_rfc3339(out);
    let _ = write!(
        out,
        " {hostname} {APP_NAME} - {msgid} [{SD_ID} seq=\"{}\" hash=\"{hash}\" prev=\"{}\"] ",
        e.seq, e.prev
    );
    out.extend_from_slice(canonical);
}

/// Appends one RFC 5425 frame (`MSG-LEN SP SYSLOG-MSG`) for the entry to `out`.
pub fn write_frame(
    out: &mut Vec<u8>,
    hostname: &str,
    e: &EntryFields<'_>,
    canonical: &[u8],
    hash: &EntryHash,
) {
    // The length goes first: write the message after a placeholder-free prefix by
    // formatting it into the tail, then rotating the decimal length in front of it.
    let start = out.len();
    write_message(out, hostname, e, canonical, hash);
    let len = (out.len() - start).to_string();
    out.extend_from_slice(len.as_bytes());
    out.push(b' ');
    out[start..].rotate_right(len.len() + 1);
}

/// Why a frame could not be taken from a byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// `MSG-LEN` is not a decimal number without leading zero followed by a space.
    BadLength,
    /// `MSG-LEN` exceeds [`MAX_MESSAGE_LEN`].
    TooLong(usize),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadLength => f.write_str("malformed octet count"),
            Self::TooLong(n) => write!(f, "octet count {n} above {MAX_MESSAGE_LEN}"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Takes one octet-counted frame from the start of `buf`: the message and the bytes used, or
/// `None` if `buf` does not yet hold a whole frame.
pub fn take_frame(buf: &[u8]) -> Result<Option<(&[u8], usize)>, FrameError> {
    let digits = buf.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == buf.len() {
        // Still inside the length (or empty); a length longer than any allowed is refused.
        return if digits > 7 {
            Err(FrameError::BadLength)
        } else {
            Ok(None)
        };
    }
    if digits == 0 || digits > 7 || buf[0] == b'0' || buf[digits] != b' ' {
        return Err(FrameError::BadLength);
    }
    let len: usize = std::str::from_utf8(&buf[..digits])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(FrameError::BadLength)?;
    if len > MAX_MESSAGE_LEN {
        return Err(FrameError::TooLong(len));
    }
    let end = digits + 1 + len;
    Ok(buf.get(digits + 1..end).map(|msg| (msg, end)))
}

/// A message of ours, parsed back: the entry and what the header said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<'a> {
    /// The PRI value.
    pub pri: u8,
    /// The HOSTNAME (the device UID).
    pub hostname: &'a str,
    /// The seq in the structured data (equal to the entry's).
    pub seq: u64,
    /// The hash in the structured data (equal to the hash of `json`).
    pub hash: EntryHash,
    /// The `prev` in the structured data (equal to the entry's).
    pub prev: EntryHash,
    /// The canonical JSON of the entry.
    pub json: &'a [u8],
    /// The entry.
    pub entry: Entry,
}

/// Why a line is not one of our messages.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseProblem {
    /// Not an RFC 5424 message of kawal (no [`SD_ID`] element): another sender's line.
    Foreign,
    /// Longer than [`MAX_MESSAGE_LEN`].
    TooLong(usize),
    /// A header field is malformed.
    Header(&'static str),
    /// The structured data is malformed, or lacks or repeats a parameter.
    StructuredData(&'static str),
    /// MSG is not a canonical entry.
    Entry(canonical::ParseError),
    /// The structured data disagrees with the entry (seq, hash or prev).
    Mismatch(&'static str),
}

impl fmt::Display for ParseProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Foreign => f.write_str("not a kawal audit message"),
            Self::TooLong(n) => write!(f, "{n} bytes, above {MAX_MESSAGE_LEN}"),
            Self::Header(what) => write!(f, "malformed syslog header: {what}"),
            Self::StructuredData(what) => write!(f, "malformed structured data: {what}"),
            Self::Entry(e) => write!(f, "message is not a valid audit entry ({e})"),
            Self::Mismatch(what) => {
                write!(f, "structured data {what} disagrees with the entry")
            }
        }
    }
}

impl std::error::Error for ParseProblem {}

/// A cursor over a message's bytes.
struct Cur<'a> {
    s: &'a [u8],
    pos: usize,
}

impl<'a> Cur<'a> {
    /// The bytes up to the next space (consumed, with the space).
    fn field(&mut self, what: &'static str) -> Result<&'a [u8], ParseProblem> {
        let rest = &self.s[self.pos..];
        let n = rest
            .iter()
            .position(|b| *b == b' ')
            .ok_or(ParseProblem::Header(what))?;
        self.pos += n + 1;
        if n == 0 {
            return Err(ParseProblem::Header(what));
        }
        Ok(&rest[..n])
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        let ok = self.peek() == Some(b);
        self.pos += usize::from(ok);
        ok
    }
}

/// Whether `line` carries our SD-ID at all (cheap test to tell foreign lines apart).
fn mentions_sd_id(line: &[u8]) -> bool {
    let needle = b"[kawal@32473 ";
    line.windows(needle.len()).any(|w| w == needle)
}

/// Parses one message of ours (a line of the collector's file, without its newline).
///
/// Lines without our SD-ID are [`ParseProblem::Foreign`]; any other problem means a line
/// that claims to be ours but is not well-formed, which the remote check reports.
pub fn parse_message(line: &[u8]) -> Result<Message<'_>, ParseProblem> {
    if line.len() > MAX_MESSAGE_LEN {
        return Err(if mentions_sd_id(line) {
            ParseProblem::TooLong(line.len())
        } else {
            ParseProblem::Foreign
        });
    }
    if !mentions_sd_id(line) {
        return Err(ParseProblem::Foreign);
    }
    let mut c = Cur { s: line, pos: 0 };
    let pri = parse_pri(&mut c)?;
    if c.field("version")? != b"1" {
        return Err(ParseProblem::Header("version"));
    }
    let ts = c.field("timestamp")?;
    if ts != b"-" && WallTime::parse(ts).is_none() && !plausible_timestamp(ts) {
        return Err(ParseProblem::Header("timestamp"));
    }
    let host = c.field("hostname")?;
    let hostname = std::str::from_utf8(host)
        .ok()
        .filter(|h| is_valid_hostname(h))
        .ok_or(ParseProblem::Header("hostname"))?;
    for what in ["app-name", "procid", "msgid"] {
        let f = c.field(what)?;
        if !f.iter().all(|b| (33..=126).contains(b)) {
            return Err(ParseProblem::Header(what));
        }
    }
    let sd = parse_structured_data(&mut c)?;
    // One space, then MSG (RFC 5424: MSG is optional, ours never is).
    if !c.eat(b' ') {
        return Err(ParseProblem::Header("no message"));
    }
    let json = &line[c.pos..];
    let entry = canonical::parse_entry(json).map_err(ParseProblem::Entry)?;
    if entry.seq != sd.seq {
        return Err(ParseProblem::Mismatch("seq"));
    }
    if entry.prev != sd.prev {
        return Err(ParseProblem::Mismatch("prev"));
    }
    if EntryHash::of(json) != sd.hash {
        return Err(ParseProblem::Mismatch("hash"));
    }
    Ok(Message {
        pri,
        hostname,
        seq: sd.seq,
        hash: sd.hash,
        prev: sd.prev,
        json,
        entry,
    })
}

/// An RFC 3339 timestamp other than our fixed form (a relay may rewrite it): only its
/// alphabet is checked, since the entry's own time is authoritative.
fn plausible_timestamp(ts: &[u8]) -> bool {
    ts.len() <= 32
        && ts.first().is_some_and(u8::is_ascii_digit)
        && ts
            .iter()
            .all(|b| b.is_ascii_digit() || b"-:.TZ+".contains(b))
}

fn parse_pri(c: &mut Cur<'_>) -> Result<u8, ParseProblem> {
    if !c.eat(b'<') {
        return Err(ParseProblem::Header("PRI"));
    }
    let start = c.pos;
    while c.peek().is_some_and(|b| b.is_ascii_digit()) {
        c.pos += 1;
    }
    let digits = &c.s[start..c.pos];
    if digits.is_empty() || digits.len() > 3 || (digits.len() > 1 && digits[0] == b'0') {
        return Err(ParseProblem::Header("PRI"));
    }
    let pri = digits
        .iter()
        .fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0'));
    if pri > 191 || !c.eat(b'>') {
        return Err(ParseProblem::Header("PRI"));
    }
    u8::try_from(pri).map_err(|_| ParseProblem::Header("PRI"))
}

/// seq, hash and prev from our SD element.
struct OurSd {
    seq: u64,
    hash: EntryHash,
    prev: EntryHash,
}

/// Parses STRUCTURED-DATA (one or more elements; other elements are skipped) and returns the
/// parameters of ours, which must appear exactly once.
fn parse_structured_data(c: &mut Cur<'_>) -> Result<OurSd, ParseProblem> {
    let bad = ParseProblem::StructuredData;
    let mut ours: Option<OurSd> = None;
    if c.peek() != Some(b'[') {
        return Err(bad("no element"));
    }
    while c.eat(b'[') {
        let id_start = c.pos;
        while c
            .peek()
            .is_some_and(|b| (33..=126).contains(&b) && !b"= ]\"".contains(&b))
        {
            c.pos += 1;
        }
        let id = &c.s[id_start..c.pos];
        if id.is_empty() || id.len() > 32 {
            return Err(bad("SD-ID"));
        }
        let mine = id == SD_ID.as_bytes();
        if mine && ours.is_some() {
            return Err(bad("element repeated"));
        }
        let (mut seq, mut hash, mut prev) = (None, None, None);
        while c.eat(b' ') {
            let name_start = c.pos;
            while c
                .peek()
                .is_some_and(|b| (33..=126).contains(&b) && !b"= ]\"".contains(&b))
            {
                c.pos += 1;
            }
            let name = &c.s[name_start..c.pos];
            if name.is_empty() || name.len() > 32 || !c.eat(b'=') || !c.eat(b'"') {
                return Err(bad("parameter"));
            }
            let value = param_value(c)?;
            if !mine {
                continue;
            }
            let slot = match name {
                b"seq" => &mut seq,
                b"hash" => &mut hash,
                b"prev" => &mut prev,
                _ => return Err(bad("unknown parameter")),
            };
            if slot.replace(value).is_some() {
                return Err(bad("parameter repeated"));
            }
        }
        if !c.eat(b']') {
            return Err(bad("unterminated element"));
        }
        if mine {
            let (Some(seq), Some(hash), Some(prev)) = (seq, hash, prev) else {
                return Err(bad("seq, hash or prev missing"));
            };
            let seq = parse_seq(seq).ok_or(bad("seq"))?;
            let hash = std::str::from_utf8(hash)
                .ok()
                .and_then(EntryHash::from_hex)
                .ok_or(bad("hash"))?;
            let prev = std::str::from_utf8(prev)
                .ok()
                .and_then(EntryHash::from_hex)
                .ok_or(bad("prev"))?;
            ours = Some(OurSd { seq, hash, prev });
        }
    }
    ours.ok_or(bad("no kawal element"))
}

/// The raw bytes of a PARAM-VALUE after its opening quote, up to (and consuming) the closing
/// one. Ours never need escapes; escaped values of other elements are skipped correctly.
fn param_value<'a>(c: &mut Cur<'a>) -> Result<&'a [u8], ParseProblem> {
    let start = c.pos;
    loop {
        match c.peek() {
            None => return Err(ParseProblem::StructuredData("unterminated value")),
            Some(b'\\') => c.pos += 2,
            Some(b'"') => {
                let v = &c.s[start..c.pos];
                c.pos += 1;
                return Ok(v);
            }
            Some(b']') => return Err(ParseProblem::StructuredData("unescaped ]")),
            Some(_) => c.pos += 1,
        }
    }
}

/// A decimal seq of 1 to 20 digits without leading zero.
fn parse_seq(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || s[0] == b'0' || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

#[cfg(test)]
#[path = "syslog_tests.rs"]
mod tests;
