//! The byte-level scanner behind [`super::parse_prefix`]: literals, integers, strings
//! (checked eight bytes at a time), escapes, hex and the details object.

use super::{JsonStr, ParseError, Reason, ValueView};
use crate::details;
use crate::entry::Outcome;
use crate::time::ClockState;

pub(super) struct Cur<'a> {
    pub s: &'a [u8],
    pub p: usize,
}

/// Bytes that end the plain run of a JSON string: `"`, `\` and control characters.
/// Returns a word whose lowest set high bit marks the first such byte of `w` (little-endian);
/// higher marks may be false positives from borrows, so only the lowest is used.
fn special_bytes(w: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let zero_byte = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    let quote = zero_byte(w ^ (ONES * u64::from(b'"')));
    let backslash = zero_byte(w ^ (ONES * u64::from(b'\\')));
    let control = w.wrapping_sub(ONES * 0x20) & !w & HIGHS;
    quote | backslash | control | (w & HIGHS)
}

impl<'a> Cur<'a> {
    pub(super) fn err(&self, reason: Reason) -> ParseError {
        ParseError {
            offset: self.p,
            reason,
        }
    }

    pub(super) fn lit(&mut self, lit: &[u8], what: &'static str) -> Result<(), ParseError> {
        if self.s.get(self.p..self.p + lit.len()) == Some(lit) {
            self.p += lit.len();
            Ok(())
        } else {
            Err(self.err(Reason::Expected(what)))
        }
    }

    pub(super) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let out = self.s.get(self.p..self.p + n)?;
        self.p += n;
        Some(out)
    }

    fn digits(&mut self, field: &'static str) -> Result<&'a [u8], ParseError> {
        let start = self.p;
        while self.s.get(self.p).is_some_and(u8::is_ascii_digit) {
            self.p += 1;
        }
        let d = &self.s[start..self.p];
        match d {
            [] => Err(self.err(Reason::Number(field))),
            [b'0', _, ..] => Err(self.err(Reason::NotCanonical("leading zero"))),
            _ => Ok(d),
        }
    }

    pub(super) fn u64(&mut self, field: &'static str) -> Result<u64, ParseError> {
        let d = self.digits(field)?;
        d.iter()
            .try_fold(0u64, |acc, b| {
                acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
            })
            .ok_or_else(|| self.err(Reason::Number(field)))
    }

    fn int(&mut self) -> Result<i128, ParseError> {
        let neg = self.s.get(self.p) == Some(&b'-');
        self.p += usize::from(neg);
        let magnitude = i128::from(self.u64("details")?);
        if neg && magnitude == 0 {
            return Err(self.err(Reason::NotCanonical("-0")));
        }
        let v = if neg { -magnitude } else { magnitude };
        if v < i128::from(i64::MIN) {
            return Err(self.err(Reason::Number("details")));
        }
        Ok(v)
    }

    /// A string that cannot contain escapes in a valid entry (names, IDs, enum values).
    pub(super) fn simple_str(&mut self) -> Result<&'a [u8], ParseError> {
        let s = self.string()?;
        if s.escaped {
            return Err(self.err(Reason::Invalid("escape in a name")));
        }
        Ok(s.raw)
    }

    pub(super) fn string(&mut self) -> Result<JsonStr<'a>, ParseError> {
        self.lit(b"\"", "\"")?;
        let start = self.p;
        let mut escaped = false;
        let mut ascii = true;
        loop {
            // Skip eight plain bytes at a time; most of an entry is string content.
            while let Some(word) = self.s.get(self.p..self.p + 8) {
                let mut bytes = [0u8; 8];
                bytes.copy_from_slice(word);
                let special = special_bytes(u64::from_le_bytes(bytes));
                if special != 0 {
                    self.p += (special.trailing_zeros() / 8) as usize;
                    break;
                }
                self.p += 8;
            }
            let Some(&b) = self.s.get(self.p) else {
                return Err(self.err(Reason::String));
            };
            match b {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    self.escape()?;
                }
                0..=0x1f => return Err(self.err(Reason::String)),
                0x80.. => {
                    ascii = false;
                    self.p += 1;
                }
                _ => self.p += 1,
            }
        }
        let raw = &self.s[start..self.p];
        // Only strings hold non-ASCII bytes; check those are UTF-8 (most strings are ASCII).
        if !ascii && let Err(e) = std::str::from_utf8(raw) {
            return Err(ParseError {
                offset: start + e.valid_up_to(),
                reason: Reason::NotUtf8,
            });
        }
        self.p += 1;
        Ok(JsonStr { raw, escaped })
    }

    /// Checks the escape at `self.p` is the one serde_json would write, and skips it.
    fn escape(&mut self) -> Result<(), ParseError> {
        match self.s.get(self.p + 1) {
            Some(b'"' | b'\\' | b'n' | b'r' | b't' | b'b' | b'f') => {
                self.p += 2;
                Ok(())
            }
            Some(b'u') => {
                let mut code = [0u8; 2];
                let hex = self.s.get(self.p + 2..self.p + 6).unwrap_or_default();
                let ok = hex.starts_with(b"00") && decode_hex(&hex[2..], &mut code[..1]);
                let canonical_ctl = code[0] < 0x20 && !matches!(code[0], 8 | 9 | 10 | 12 | 13);
                if ok && canonical_ctl {
                    self.p += 6;
                    Ok(())
                } else {
                    Err(self.err(Reason::NotCanonical("escape")))
                }
            }
            _ => Err(self.err(Reason::NotCanonical("escape"))),
        }
    }

    pub(super) fn hex<const N: usize>(
        &mut self,
        field: &'static str,
    ) -> Result<[u8; N], ParseError> {
        self.lit(b"\"", "\"")?;
        let mut out = [0u8; N];
        let ok = self
            .s
            .get(self.p..self.p + 2 * N)
            .is_some_and(|h| decode_hex(h, &mut out));
        if !ok {
            return Err(self.err(Reason::Hex(field)));
        }
        self.p += 2 * N;
        self.lit(b"\"", "\"")?;
        Ok(out)
    }

    /// Parses the details object, calling `f` for each entry in order.
    pub(super) fn details(
        &mut self,
        mut f: impl FnMut(&'a [u8], ValueView<'a>),
    ) -> Result<(), ParseError> {
        self.lit(b"{", "{")?;
        if self.s.get(self.p) == Some(&b'}') {
            self.p += 1;
            return Ok(());
        }
        let mut prev_key: &[u8] = &[];
        for n in 0.. {
            if n == details::MAX_DETAILS {
                return Err(self.err(Reason::Invalid("details: too many")));
            }
            let key = self.simple_str()?;
            if !details::is_valid_key(key) {
                return Err(self.err(Reason::Invalid("details key")));
            }
            if n > 0 && key <= prev_key {
                return Err(self.err(Reason::NotCanonical("details keys unsorted or repeated")));
            }
            prev_key = key;
            self.lit(b":", ":")?;
            let value = match self.s.get(self.p) {
                Some(b'"') => {
                    let s = self.string()?;
                    // Raw length bounds the decoded length; decode only when it might exceed.
                    if s.raw.len() > details::MAX_STR_LEN && s.decode().len() > details::MAX_STR_LEN
                    {
                        return Err(self.err(Reason::Invalid("details: string too long")));
                    }
                    ValueView::Str(s)
                }
                Some(b't') => self.lit(b"true", "true").map(|()| ValueView::Bool(true))?,
                Some(b'f') => self
                    .lit(b"false", "false")
                    .map(|()| ValueView::Bool(false))?,
                _ => ValueView::Int(self.int()?),
            };
            let redacted = matches!(value, ValueView::Str(s) if !s.escaped && s.raw == details::REDACTED.as_bytes());
            if !redacted && details::is_secret_key_bytes(key) {
                return Err(self.err(Reason::Invalid("details: unredacted secret")));
            }
            f(key, value);
            match self.s.get(self.p) {
                Some(b',') => self.p += 1,
                Some(b'}') => {
                    self.p += 1;
                    return Ok(());
                }
                _ => return Err(self.err(Reason::Expected(", or }"))),
            }
        }
        Err(self.err(Reason::Expected("}")))
    }
}

pub(super) fn clock_state(s: &[u8]) -> Option<ClockState> {
    match s {
        b"synchronised" => Some(ClockState::Synchronised),
        b"unsynchronised" => Some(ClockState::Unsynchronised),
        b"unknown" => Some(ClockState::Unknown),
        _ => None,
    }
}

pub(super) fn outcome_of(s: &[u8]) -> Option<Outcome> {
    match s {
        b"success" => Some(Outcome::Success),
        b"failure" => Some(Outcome::Failure),
        b"denied" => Some(Outcome::Denied),
        b"info" => Some(Outcome::Info),
        _ => None,
    }
}

/// Value of each lowercase hex digit; 0xff for every other byte.
const HEX_VALUE: [u8; 256] = {
    let mut t = [0xff; 256];
    let mut d: u8 = 0;
    while d < 16 {
        let digit = if d < 10 { b'0' + d } else { b'a' + d - 10 };
        t[digit as usize] = d;
        d += 1;
    }
    t
};

/// Decodes lowercase hex `src` (exactly twice the length of `out`) into `out`.
pub(crate) fn decode_hex(src: &[u8], out: &mut [u8]) -> bool {
    if src.len() != out.len() * 2 {
        return false;
    }
    let mut bad = 0u8;
    for (o, pair) in out.iter_mut().zip(src.chunks_exact(2)) {
        let (h, l) = (
            HEX_VALUE[usize::from(pair[0])],
            HEX_VALUE[usize::from(pair[1])],
        );
        // Any invalid digit has its high bit set; check once at the end.
        bad |= h | l;
        *o = h << 4 | (l & 0x0f);
    }
    bad & 0x80 == 0
}
