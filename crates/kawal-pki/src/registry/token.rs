//! One-time enrolment tokens: 32 bytes from the OS CSPRNG, shown once as base64url (43
//! characters, no padding), kept only as a domain-separated SHA-256. A hash, not a password
//! hash: the token carries 256 bits of entropy, so nothing can be guessed from the hash, and a
//! fast hash keeps a wrong-token request cheap.
use std::fmt;

use base64::Engine as _;
use kawal_crypto::secret::{SecretArray, SecretString};
use zeroize::Zeroizing;

use crate::Result;

/// Bytes of entropy in a token.
pub(crate) const TOKEN_BYTES: usize = 32;
/// Failed requests (bad CSR, reused key) a token survives; the next failure burns it.
pub const TOKEN_MAX_FAILURES: u32 = 5;
/// Default lifetime of a token.
pub const DEFAULT_TOKEN_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

const DOMAIN: &[u8] = b"kawal/sensor-enrolment-token/v1\0";

/// A one-time enrolment token, as handed to the operator once. `Debug` shows no token.
pub struct EnrolToken {
    /// The sensor it enrols.
    pub uid: String,
    /// The role the sensor will have.
    pub role: String,
    /// From when it is refused, Unix seconds.
    pub expires_at: i64,
    token: SecretString,
}

impl EnrolToken {
    /// The token text (base64url, 43 characters), to show to the operator once.
    pub fn expose(&self) -> &str {
        self.token.expose()
    }
}

impl fmt::Debug for EnrolToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnrolToken")
            .field("uid", &self.uid)
            .field("role", &self.role)
            .field("expires_at", &self.expires_at)
            .field("token", &self.token)
            .finish()
    }
}

/// A fresh token for `uid` and the hex hash to store.
pub(crate) fn generate(uid: &str, role: &str, expires_at: i64) -> Result<(EnrolToken, String)> {
    let bytes = SecretArray::<TOKEN_BYTES>::random()?;
    let hash = hash(bytes.expose());
    let text = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes.expose());
    Ok((
        EnrolToken {
            uid: uid.to_owned(),
            role: role.to_owned(),
            expires_at,
            token: SecretString::new(text),
        },
        hash,
    ))
}

/// The stored hash of a presented token, or `None` if it cannot be a token of ours.
pub(crate) fn hash_of_presented(text: &str) -> Option<String> {
    let text = text.trim();
    // 32 bytes are 43 base64url characters; anything longer is not worth decoding.
    if text.len() != 43 {
        return None;
    }
    let bytes = Zeroizing::new(
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .ok()?,
    );
    (bytes.len() == TOKEN_BYTES).then(|| hash(&bytes))
}

fn hash(bytes: &[u8]) -> String {
    let mut input = Zeroizing::new(Vec::with_capacity(DOMAIN.len() + bytes.len()));
    input.extend_from_slice(DOMAIN);
    input.extend_from_slice(bytes);
    hex::encode(kawal_crypto::sha256(&input))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_unique_43_characters_and_hash_back() {
        let (a, ha) = generate("s1", "sensor", 5).unwrap();
        let (b, hb) = generate("s1", "sensor", 5).unwrap();
        assert_eq!(a.expose().len(), 43);
        assert_ne!(a.expose(), b.expose());
        assert_ne!(ha, hb);
        assert_eq!(hash_of_presented(a.expose()), Some(ha.clone()));
        assert_eq!(hash_of_presented(&format!(" {}\n", a.expose())), Some(ha));
        assert_eq!(hash_of_presented("short"), None);
        assert_eq!(hash_of_presented(&"!".repeat(43)), None);
        let debug = format!("{a:?}");
        assert!(debug.contains("[REDACTED]"));
        assert!(!debug.contains(a.expose()));
    }
}
