//! The strict parser of the canonical entry form described in [`crate::entry`].
//!
//! It accepts exactly the bytes the writer produces and nothing else: fixed field order, no
//! whitespace, sorted unique detail keys, minimal integers, lowercase hex, the one escape form
//! per character. Hence parse-then-serialise gives back the same bytes, the hash of a line is
//! the hash of its meaning, and the verifier needs no re-serialisation. It makes one pass
//! without allocating (for valid lines), which keeps `verify` close to the speed of SHA-256.

use std::borrow::Cow;
use std::fmt;

use crate::details::{Details, Value};
use crate::entry::{self, Checkpoint, Entry, EntryHash, Outcome};
use crate::time::{ClockState, WallTime};

mod cursor;

pub(crate) use self::cursor::decode_hex;
use self::cursor::{Cur, clock_state, outcome_of};

/// Why a line is not a canonical entry, and where (byte offset within the line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseError {
    /// Byte offset in the line where parsing stopped.
    pub offset: usize,
    /// What was wrong there.
    pub reason: Reason,
}

/// What made a line fail to parse.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The line is not valid UTF-8.
    NotUtf8,
    /// A fixed part of the form (a field name, brace, quote) was expected here.
    Expected(&'static str),
    /// A malformed or out-of-range integer in the named field.
    Number(&'static str),
    /// A malformed JSON string (raw control character, bad escape, missing quote).
    String,
    /// Valid JSON, but not the canonical encoding (e.g. `\/`, leading zero, unsorted keys).
    NotCanonical(&'static str),
    /// Malformed hex in the named field.
    Hex(&'static str),
    /// `wall` is not a valid `YYYY-MM-DDTHH:MM:SS.ffffffZ` time.
    Time,
    /// A value outside the allowed set or rules of the named field.
    Invalid(&'static str),
    /// Bytes after the closing brace.
    Trailing,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at byte {}: ", self.offset)?;
        match self.reason {
            Reason::NotUtf8 => f.write_str("not UTF-8"),
            Reason::Expected(what) => write!(f, "expected {what}"),
            Reason::Number(field) => write!(f, "bad integer in {field}"),
            Reason::String => f.write_str("malformed string"),
            Reason::NotCanonical(what) => write!(f, "not canonical: {what}"),
            Reason::Hex(field) => write!(f, "bad hex in {field}"),
            Reason::Time => f.write_str("bad wall time"),
            Reason::Invalid(field) => write!(f, "invalid {field}"),
            Reason::Trailing => f.write_str("bytes after the entry"),
        }
    }
}

impl std::error::Error for ParseError {}

/// Parses one line (without its newline) into an [`Entry`].
pub fn parse_entry(line: &[u8]) -> Result<Entry, ParseError> {
    parse_view(line).map(|v| v.to_entry())
}

/// A JSON string as it appears in the line, not yet unescaped.
#[derive(Debug, Clone, Copy)]
pub(crate) struct JsonStr<'a> {
    /// The bytes between the quotes, known to be UTF-8.
    raw: &'a [u8],
    escaped: bool,
}

impl<'a> JsonStr<'a> {
    /// The string's value.
    pub fn decode(self) -> Cow<'a, str> {
        // The parser checked the bytes are UTF-8, so this borrows and replaces nothing.
        let text = String::from_utf8_lossy(self.raw);
        if !self.escaped {
            return text;
        }
        let mut out = String::with_capacity(self.raw.len());
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            // The parser admitted only canonical escapes, so each arm below is complete.
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('r') => out.push('\r'),
                Some('t') => out.push('\t'),
                Some('b') => out.push('\u{8}'),
                Some('f') => out.push('\u{c}'),
                Some('u') => {
                    let hex: String = chars.by_ref().take(4).collect();
                    let code = u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32);
                    out.push(code.unwrap_or(char::REPLACEMENT_CHARACTER));
                }
                Some(other) => out.push(other),
                None => {}
            }
        }
        Cow::Owned(out)
    }
}

/// A detail value as it appears in the line.
#[derive(Debug, Clone, Copy)]
enum ValueView<'a> {
    Str(JsonStr<'a>),
    Int(i128),
    Bool(bool),
}

/// A parsed line that borrows from it: what `verify` needs, without allocation.
#[derive(Debug, Clone)]
pub(crate) struct EntryView<'a> {
    pub seq: u64,
    pub wall: WallTime,
    pub clock: ClockState,
    pub mono_ns: u64,
    pub boot_id: &'a [u8],
    pub event: &'a [u8],
    pub actor: JsonStr<'a>,
    pub outcome: Outcome,
    /// The details object, braces included; known to be valid.
    pub details: &'a [u8],
    pub prev: EntryHash,
    pub checkpoint: Option<Checkpoint>,
}

impl EntryView<'_> {
    /// An owned copy.
    pub fn to_entry(&self) -> Entry {
        let mut details = Details::new();
        let mut cur = Cur {
            s: self.details,
            p: 0,
        };
        // Already validated once, so this cannot fail; an error would leave details empty.
        let _ = cur.details(|k, v| {
            let v = match v {
                ValueView::Str(s) => Value::Str(s.decode().into_owned()),
                ValueView::Int(i) => Value::Int(i),
                ValueView::Bool(b) => Value::Bool(b),
            };
            details.insert_parsed(String::from_utf8_lossy(k).into_owned(), v);
        });
        Entry {
            seq: self.seq,
            wall: self.wall,
            clock: self.clock,
            mono_ns: self.mono_ns,
            boot_id: String::from_utf8_lossy(self.boot_id).into_owned(),
            event: String::from_utf8_lossy(self.event).into_owned(),
            actor: self.actor.decode().into_owned(),
            outcome: self.outcome,
            details,
            prev: self.prev,
            checkpoint: self.checkpoint,
        }
    }
}

/// Parses one line (without its newline), borrowing from it.
pub(crate) fn parse_view(line: &[u8]) -> Result<EntryView<'_>, ParseError> {
    let (view, len) = parse_prefix(line)?;
    if len != line.len() {
        return Err(ParseError {
            offset: len,
            reason: Reason::Trailing,
        });
    }
    Ok(view)
}

/// Parses the entry at the start of `s` (which may go on past it); returns it and its
/// length. A valid entry never contains a newline, so parsing never runs into the next line:
/// `verify` uses this to find line ends and parse in one pass.
pub(crate) fn parse_prefix(s: &[u8]) -> Result<(EntryView<'_>, usize), ParseError> {
    let mut c = Cur { s, p: 0 };
    c.lit(b"{\"seq\":", "{\"seq\":")?;
    let seq = c.u64("seq")?;
    c.lit(b",\"wall\":\"", "\"wall\"")?;
    let wall = c
        .take(27)
        .and_then(WallTime::parse)
        .ok_or_else(|| c.err(Reason::Time))?;
    c.lit(b"\",\"clock\":", "\"clock\"")?;
    let clock = c.simple_str()?;
    let clock = clock_state(clock).ok_or_else(|| c.err(Reason::Invalid("clock")))?;
    c.lit(b",\"mono_ns\":", "\"mono_ns\"")?;
    let mono_ns = c.u64("mono_ns")?;
    c.lit(b",\"boot_id\":", "\"boot_id\"")?;
    let boot_id = c.simple_str()?;
    if !entry::is_valid_boot_id(boot_id) {
        return Err(c.err(Reason::Invalid("boot_id")));
    }
    c.lit(b",\"event\":", "\"event\"")?;
    let event = c.simple_str()?;
    if !entry::is_valid_event_name(event) {
        return Err(c.err(Reason::Invalid("event")));
    }
    c.lit(b",\"actor\":", "\"actor\"")?;
    let actor = c.string()?;
    let plain_actor = !actor.escaped && actor.raw.is_ascii();
    let actor_ok = if plain_actor {
        entry::is_valid_ascii_actor(actor.raw)
    } else {
        entry::is_valid_actor(&actor.decode())
    };
    if !actor_ok {
        return Err(c.err(Reason::Invalid("actor")));
    }
    c.lit(b",\"outcome\":", "\"outcome\"")?;
    let outcome = c.simple_str()?;
    let outcome = outcome_of(outcome).ok_or_else(|| c.err(Reason::Invalid("outcome")))?;
    c.lit(b",\"details\":", "\"details\"")?;
    let details_start = c.p;
    c.details(|_, _| {})?;
    let details = &s[details_start..c.p];
    c.lit(b",\"prev\":", "\"prev\"")?;
    let prev = EntryHash(c.hex::<32>("prev")?);
    let checkpoint = if c.s.get(c.p) == Some(&b',') {
        c.lit(b",\"kind\":\"checkpoint\",\"head\":", "checkpoint fields")?;
        let head = EntryHash(c.hex::<32>("head")?);
        c.lit(b",\"count\":", "\"count\"")?;
        let count = c.u64("count")?;
        c.lit(b",\"key_version\":", "\"key_version\"")?;
        let key_version = u32::try_from(c.u64("key_version")?)
            .map_err(|_| c.err(Reason::Number("key_version")))?;
        c.lit(b",\"sig\":", "\"sig\"")?;
        let sig = c.hex::<64>("sig")?;
        Some(Checkpoint {
            head,
            count,
            key_version,
            sig,
        })
    } else {
        None
    };
    c.lit(b"}", "}")?;
    // A checkpoint is exactly the entry the writer makes; nothing else may use its name.
    let is_cp_event = event == entry::CHECKPOINT_EVENT.as_bytes();
    let cp_shape =
        actor.raw == entry::LOG_ACTOR.as_bytes() && outcome == Outcome::Info && details == b"{}";
    if is_cp_event != checkpoint.is_some() || (is_cp_event && !cp_shape) {
        return Err(c.err(Reason::Invalid("checkpoint entry")));
    }
    let view = EntryView {
        seq,
        wall,
        clock,
        mono_ns,
        boot_id,
        event,
        actor,
        outcome,
        details,
        prev,
        checkpoint,
    };
    Ok((view, c.p))
}

#[cfg(test)]
mod tests;
