//! Writing the canonical form (see [`crate::entry`]): fixed field order, minimal integers,
//! lowercase hex, and JSON strings escaped exactly as serde_json escapes them.

use super::{Checkpoint, EntryHash, Outcome};
use crate::details::{Details, Value};
use crate::time::Timestamp;

/// The fields of an entry by reference: what the writer serialises without building an
/// [`Entry`].
pub(crate) struct Fields<'a> {
    pub seq: u64,
    pub ts: &'a Timestamp,
    pub boot_id: &'a str,
    pub event: &'a str,
    pub actor: &'a str,
    pub outcome: Outcome,
    pub details: &'a Details,
    pub prev: &'a EntryHash,
    pub checkpoint: Option<&'a Checkpoint>,
}

impl Fields<'_> {
    /// Appends the canonical serialisation (see the module docs) to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"seq\":");
        push_u64(out, self.seq);
        out.extend_from_slice(b",\"wall\":\"");
        self.ts.wall.write_rfc3339(out);
        out.extend_from_slice(b"\",\"clock\":\"");
        out.extend_from_slice(self.ts.clock.as_str().as_bytes());
        out.extend_from_slice(b"\",\"mono_ns\":");
        push_u64(out, self.ts.mono_ns);
        out.extend_from_slice(b",\"boot_id\":");
        push_json_str(out, self.boot_id);
        out.extend_from_slice(b",\"event\":");
        push_json_str(out, self.event);
        out.extend_from_slice(b",\"actor\":");
        push_json_str(out, self.actor);
        out.extend_from_slice(b",\"outcome\":\"");
        out.extend_from_slice(self.outcome.as_str().as_bytes());
        out.extend_from_slice(b"\",\"details\":{");
        for (i, (k, v)) in self.details.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            push_json_str(out, k);
            out.push(b':');
            match v {
                Value::Str(s) => push_json_str(out, s),
                Value::Int(n) => push_i128(out, *n),
                Value::Bool(true) => out.extend_from_slice(b"true"),
                Value::Bool(false) => out.extend_from_slice(b"false"),
            }
        }
        out.extend_from_slice(b"},\"prev\":\"");
        push_hex(out, &self.prev.0);
        out.push(b'"');
        if let Some(cp) = self.checkpoint {
            out.extend_from_slice(b",\"kind\":\"checkpoint\",\"head\":\"");
            push_hex(out, &cp.head.0);
            out.extend_from_slice(b"\",\"count\":");
            push_u64(out, cp.count);
            out.extend_from_slice(b",\"key_version\":");
            push_u64(out, u64::from(cp.key_version));
            out.extend_from_slice(b",\"sig\":\"");
            push_hex(out, &cp.sig);
            out.push(b'"');
        }
        out.push(b'}');
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    for b in bytes {
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 15)]);
    }
}

fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + u8::try_from(n % 10).unwrap_or(0);
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

fn push_i128(out: &mut Vec<u8>, n: i128) {
    if n < 0 {
        out.push(b'-');
    }
    // Detail integers are checked to lie within i64::MIN..=u64::MAX before writing.
    push_u64(out, u64::try_from(n.unsigned_abs()).unwrap_or(u64::MAX));
}

/// Appends `s` as a JSON string, escaping exactly as serde_json's compact writer does.
pub(crate) fn push_json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if esc.is_empty() {
            out.extend_from_slice(b"\\u00");
            push_hex(out, &[b]);
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}
