//! Argon2id password hashing (AU-1-4, AU-2-1) and the one-time password generator.
//!
//! Records keep the parameters they were made with, so the cost can be raised later without
//! invalidating existing hashes. Verification compares in constant time.

use std::fmt;

use argon2::{Algorithm, Argon2, Params, Version};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::secret::{SecretArray, SecretString};
use crate::{Error, Result};

/// Argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Argon2Params {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Passes.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

impl Argon2Params {
    /// OWASP's recommended Argon2id setting: 19 MiB, 2 passes, 1 lane.
    pub const OWASP: Self = Self {
        m_kib: 19 * 1024,
        t: 2,
        p: 1,
    };
    /// A cheap setting for unit tests only.
    pub const TEST: Self = Self {
        m_kib: 64,
        t: 1,
        p: 1,
    };
    /// Largest memory cost accepted from a stored record (1 GiB), so a forged record cannot
    /// make the device exhaust its memory.
    pub const MAX_M_KIB: u32 = 1024 * 1024;

    /// Rejects parameters outside sane bounds.
    pub fn check(&self) -> Result<()> {
        if self.m_kib < 8 * self.p.max(1) || self.m_kib > Self::MAX_M_KIB {
            return Err(Error::PasswordRecord("argon2 memory cost out of bounds"));
        }
        if self.t == 0 || self.t > 64 || self.p == 0 || self.p > 64 {
            return Err(Error::PasswordRecord(
                "argon2 time or lane cost out of bounds",
            ));
        }
        Ok(())
    }

    fn argon2(&self) -> Result<Argon2<'static>> {
        self.check()?;
        let params = Params::new(self.m_kib, self.t, self.p, Some(32))
            .map_err(|_| Error::PasswordRecord("argon2 parameters rejected"))?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }
}

/// A stored password verifier: Argon2id parameters, salt and tag. Never the password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PasswordHash {
    /// Always "argon2id".
    pub algorithm: String,
    /// The cost it was made with.
    pub params: Argon2Params,
    /// 16 random bytes.
    #[serde(with = "hex::serde")]
    pub salt: [u8; 16],
    /// The 32-byte Argon2id tag.
    #[serde(with = "hex::serde")]
    pub tag: [u8; 32],
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordHash")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

/// Hashes `password` with a fresh salt.
pub fn hash(password: &SecretString, params: Argon2Params) -> Result<PasswordHash> {
    let salt: [u8; 16] = crate::rng::array()?;
    let mut tag = Zeroizing::new([0u8; 32]);
    params
        .argon2()?
        .hash_password_into(password.expose().as_bytes(), &salt, &mut tag[..])
        .map_err(|_| Error::Primitive("argon2id"))?;
    Ok(PasswordHash {
        algorithm: "argon2id".into(),
        params,
        salt,
        tag: *tag,
    })
}

/// Checks `password` against a record in constant time.
pub fn verify(password: &SecretString, record: &PasswordHash) -> Result<bool> {
    if record.algorithm != "argon2id" {
        return Err(Error::PasswordRecord("unknown algorithm"));
    }
    let mut tag = Zeroizing::new([0u8; 32]);
    record
        .params
        .argon2()?
        .hash_password_into(password.expose().as_bytes(), &record.salt, &mut tag[..])
        .map_err(|_| Error::Primitive("argon2id"))?;
    Ok(crate::ct_eq(&tag[..], &record.tag))
}

/// Argon2id stretch of a passphrase into key material (for the KEK).
pub(crate) fn stretch(
    passphrase: &SecretString,
    salt: &[u8],
    params: Argon2Params,
) -> Result<SecretArray<32>> {
    let mut out = Zeroizing::new([0u8; 32]);
    params
        .argon2()?
        .hash_password_into(passphrase.expose().as_bytes(), salt, &mut out[..])
        .map_err(|_| Error::Primitive("argon2id"))?;
    Ok(SecretArray::new(*out))
}

/// Characters of generated passwords: no 0/O/o, 1/l/I, so a label is read without doubt.
pub const UNAMBIGUOUS: &[u8; 56] = b"23456789abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ";

/// Generates a password of at least `min_bits` bits of entropy from [`UNAMBIGUOUS`],
/// in groups of four separated by '-' for reading off a label.
pub fn generate(min_bits: u32) -> Result<SecretString> {
    // Smallest multiple of four symbols that carries min_bits.
    let mut chars = 4;
    while generated_entropy_bits(chars) < f64::from(min_bits) {
        chars += 4;
    }
    let mut out = Zeroizing::new(String::with_capacity(chars + chars / 4));
    let limit = 256 - (256 % UNAMBIGUOUS.len()); // rejection sampling: no modulo bias
    let mut taken = 0;
    while taken < chars {
        let mut buf = Zeroizing::new([0u8; 64]);
        crate::rng::fill(&mut buf[..])?;
        for &b in buf.iter() {
            if taken == chars {
                break;
            }
            if usize::from(b) >= limit {
                continue;
            }
            if taken > 0 && taken % 4 == 0 {
                out.push('-');
            }
            out.push(char::from(UNAMBIGUOUS[usize::from(b) % UNAMBIGUOUS.len()]));
            taken += 1;
        }
    }
    Ok(SecretString::new(out.to_string()))
}

/// Entropy in bits of a password made by [`generate`] with `chars` symbols.
pub fn generated_entropy_bits(chars: usize) -> f64 {
    chars as f64 * (UNAMBIGUOUS.len() as f64).log2()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// G045: AU-1-4
    #[test]
    fn generated_passwords_have_80_bits_and_no_ambiguous_chars() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let p = generate(80).unwrap();
            let symbols: Vec<char> = p.expose().chars().filter(|c| *c != '-').collect();
            assert!(generated_entropy_bits(symbols.len()) >= 80.0);
            assert!(symbols.iter().all(|c| UNAMBIGUOUS.contains(&(*c as u8))));
            assert!(seen.insert(p.expose().to_owned()), "duplicate password");
        }
    }

    /// G045: AU-2-1
    #[test]
    fn hash_verifies_only_the_right_password() {
        let p = SecretString::new("Tr0ub4dor&3-horse".into());
        let h = hash(&p, Argon2Params::TEST).unwrap();
        assert!(verify(&p, &h).unwrap());
        assert!(!verify(&SecretString::new("Tr0ub4dor&3-horsE".into()), &h).unwrap());
        let json = serde_json_like(&h);
        assert!(!json.contains("Tr0ub4dor"));
    }

    fn serde_json_like(h: &PasswordHash) -> String {
        format!("{h:?}{}{}", hex::encode(h.salt), hex::encode(h.tag))
    }

    #[test]
    fn forged_costs_are_refused() {
        let p = SecretString::new("x".into());
        let mut h = hash(&p, Argon2Params::TEST).unwrap();
        h.params.m_kib = u32::MAX;
        assert!(verify(&p, &h).is_err());
    }
}
