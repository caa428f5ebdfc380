//! Event details: a small map of plain values, with secrets redacted on the way in.
//!
//! The API takes only strings, integers and booleans, so no structure (and no byte buffer
//! holding a key) can be logged by accident. Any key whose name suggests a secret has its
//! value replaced by [`REDACTED`] the moment it is added, so the secret never reaches the
//! writer's queue, the file or a sink.

use std::collections::BTreeMap;

/// What a redacted value is replaced by.
pub const REDACTED: &str = "[REDACTED]";

/// Substrings (compared case-insensitively) that mark a detail key as holding a secret.
pub const SECRET_KEY_MARKERS: &[&str] = &[
    "password",
    "passphrase",
    "passwd",
    "secret",
    "token",
    "key_material",
    "private",
    "credential",
    "api_key",
    "apikey",
    "psk",
    "pin",
    "otp",
    "cookie",
    "session_id",
    "seed",
];

/// Most details one event may carry.
pub const MAX_DETAILS: usize = 64;
/// Longest detail key, in bytes; keys use `A-Z a-z 0-9 _ . -` only.
pub const MAX_KEY_LEN: usize = 64;
/// Longest string value, in bytes.
pub const MAX_STR_LEN: usize = 4096;

/// One detail value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Value {
    /// A UTF-8 string of at most [`MAX_STR_LEN`] bytes.
    Str(String),
    /// An integer within the range of `i64` or `u64` (floating-point numbers are not
    /// accepted: they have no single canonical encoding; log them as strings with a unit).
    Int(i128),
    /// A boolean.
    Bool(bool),
}

impl Value {
    /// Whether this integer fits the encodable range (`i64::MIN..=u64::MAX`).
    pub(crate) fn in_range(&self) -> bool {
        match self {
            Self::Int(i) => (i128::from(i64::MIN)..=i128::from(u64::MAX)).contains(i),
            Self::Str(s) => s.len() <= MAX_STR_LEN,
            Self::Bool(_) => true,
        }
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Self::Str(v.to_owned())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Self::Str(v)
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Self::Bool(v)
    }
}

macro_rules! int_value {
    ($($t:ty),*) => {$(
        impl From<$t> for Value {
            fn from(v: $t) -> Self {
                Self::Int(i128::from(v))
            }
        }
    )*};
}
int_value!(i8, i16, i32, i64, u8, u16, u32, u64);

impl From<usize> for Value {
    fn from(v: usize) -> Self {
        // usize is at most 64 bits on every target kawal supports.
        Self::Int(i128::try_from(v).unwrap_or(i128::MAX))
    }
}

/// The details of one event: keys in sorted order (the canonical order), each at most once.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Details {
    map: BTreeMap<String, Value>,
}

impl Details {
    /// No details.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `key = value` (replacing an earlier value of the same key), redacting it if the
    /// key names a secret. Invalid keys or values are reported when the event is appended.
    #[must_use]
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.insert(key, value);
        self
    }

    /// Adds `key = value` in place; see [`Details::with`].
    pub fn insert(&mut self, key: &str, value: impl Into<Value>) {
        let value = if is_secret_key(key) {
            Value::Str(REDACTED.to_owned())
        } else {
            value.into()
        };
        self.map.insert(key.to_owned(), value);
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.map.get(key)
    }

    /// The details in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.map.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// How many details there are.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Inserts without redaction; for the parser, which reads what the writer already
    /// redacted.
    pub(crate) fn insert_parsed(&mut self, key: String, value: Value) {
        self.map.insert(key, value);
    }

    /// The first problem that would stop these details from being logged.
    pub(crate) fn check(&self) -> Result<(), &'static str> {
        if self.map.len() > MAX_DETAILS {
            return Err("more than 64 details");
        }
        for (k, v) in &self.map {
            if !is_valid_key(k.as_bytes()) {
                return Err("detail key must be 1-64 bytes of A-Z a-z 0-9 _ . -");
            }
            if !v.in_range() {
                return Err("detail value too long or integer out of range");
            }
        }
        Ok(())
    }
}

/// Whether `key` names a secret (see [`SECRET_KEY_MARKERS`]).
pub fn is_secret_key(key: &str) -> bool {
    is_secret_key_bytes(key.as_bytes())
}

/// The set of letters (and `_`) in `s`, ignoring case, as bits: a cheap test of whether `s`
/// could contain a marker at all.
const fn letters(s: &[u8]) -> u32 {
    let mut mask = 0;
    let mut i = 0;
    while i < s.len() {
        let b = s[i].to_ascii_lowercase();
        if b.is_ascii_lowercase() {
            mask |= 1 << (b - b'a');
        } else if b == b'_' {
            mask |= 1 << 26;
        }
        i += 1;
    }
    mask
}

/// [`letters`] of each marker in [`SECRET_KEY_MARKERS`].
const MARKER_LETTERS: [u32; SECRET_KEY_MARKERS.len()] = {
    let mut t = [0; SECRET_KEY_MARKERS.len()];
    let mut i = 0;
    while i < t.len() {
        t[i] = letters(SECRET_KEY_MARKERS[i].as_bytes());
        i += 1;
    }
    t
};

/// [`is_secret_key`] on bytes, without allocating. The verifier calls it for every key it
/// reads, so markers whose letters do not all occur in the key are skipped without a search.
pub(crate) fn is_secret_key_bytes(key: &[u8]) -> bool {
    let have = letters(key);
    SECRET_KEY_MARKERS
        .iter()
        .zip(MARKER_LETTERS)
        .any(|(m, need)| {
            have & need == need
                && key
                    .windows(m.len())
                    .any(|w| w.eq_ignore_ascii_case(m.as_bytes()))
        })
}

/// Whether `key` is a valid detail key.
pub(crate) fn is_valid_key(key: &[u8]) -> bool {
    (1..=MAX_KEY_LEN).contains(&key.len())
        && key
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_secret_keys_case_insensitively() {
        let d = Details::new()
            .with("user", "alice")
            .with("Password", "hunter2")
            .with("new_passphrase", "correct horse")
            .with("client_SECRET", "s3cr3t")
            .with("refresh_token", "tok")
            .with("key_material", "00ff")
            .with("privateKey", "pem")
            .with("pin_attempts_token_count", 3u32);
        assert_eq!(d.get("user"), Some(&Value::from("alice")));
        for k in [
            "Password",
            "new_passphrase",
            "client_SECRET",
            "refresh_token",
            "key_material",
            "privateKey",
            "pin_attempts_token_count",
        ] {
            assert_eq!(d.get(k), Some(&Value::from(REDACTED)), "{k}");
        }
    }

    #[test]
    fn checks_keys_and_ranges() {
        assert!(Details::new().with("ok.key-1_x", 1u8).check().is_ok());
        assert!(Details::new().with("bad key", 1u8).check().is_err());
        assert!(Details::new().with("", 1u8).check().is_err());
        assert!(
            Details::new()
                .with("n", Value::Int(i128::from(u64::MAX) + 1))
                .check()
                .is_err()
        );
        assert!(
            Details::new()
                .with("s", "x".repeat(MAX_STR_LEN + 1))
                .check()
                .is_err()
        );
    }
}
