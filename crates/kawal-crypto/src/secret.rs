//! Zeroizing containers for secret bytes.
//!
//! They have no `Display`, no `Serialize`, and a `Debug` that prints `[REDACTED]`, so a secret
//! cannot reach a log or an error message by accident. Bytes are wiped on drop.
use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// A fixed-size secret (keys, seeds, the root secret).
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SecretArray<const N: usize>([u8; N]);

impl<const N: usize> SecretArray<N> {
    /// Wraps bytes; the caller's copy should be a temporary or zeroized too.
    pub fn new(bytes: [u8; N]) -> Self {
        Self(bytes)
    }

    /// Fresh random bytes from the OS CSPRNG.
    pub fn random() -> crate::Result<Self> {
        let mut s = Self([0u8; N]);
        crate::rng::fill(&mut s.0)?;
        Ok(s)
    }

    /// Borrow the bytes for a cryptographic operation inside this workspace.
    pub fn expose(&self) -> &[u8; N] {
        &self.0
    }
}

impl<const N: usize> fmt::Debug for SecretArray<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

/// A variable-length secret (passwords, passphrases).
#[derive(Clone, Default, Zeroize, ZeroizeOnDrop)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps a string.
    pub fn new(s: String) -> Self {
        Self(s)
    }

    /// Borrow the text for hashing or comparison.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Reads a secret from a reader, trimming one trailing newline; the buffer is zeroized.
    pub fn from_utf8(bytes: &Zeroizing<Vec<u8>>) -> Option<Self> {
        let text = std::str::from_utf8(bytes).ok()?;
        let text = text.strip_suffix('\n').unwrap_or(text);
        let text = text.strip_suffix('\r').unwrap_or(text);
        Some(Self(text.to_owned()))
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_bytes() {
        let s = SecretArray::new([0x41u8; 16]);
        assert_eq!(format!("{s:?}"), "[REDACTED]");
        let p = SecretString::new("hunter2-secret".into());
        assert!(!format!("{p:?}").contains("hunter2"));
    }

    #[test]
    fn reads_secret_without_trailing_newline() {
        let s = SecretString::from_utf8(&Zeroizing::new(b"pass phrase\n".to_vec())).unwrap();
        assert_eq!(s.expose(), "pass phrase");
        assert!(SecretString::from_utf8(&Zeroizing::new(vec![0xff, 0xfe])).is_none());
    }
}
