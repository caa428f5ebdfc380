//! The device root secret and its sealing under a key-encryption key (CR-1-2).
//!
//! The root is 256 random bits from the OS CSPRNG. At rest it exists only sealed:
//! AES-256-GCM under a KEK derived with HKDF from the machine binding (facts of this
//! machine, so a copied data folder does not open elsewhere) and, optionally, an Argon2id
//! stretch of an operator passphrase. The blob's header and the device UID are the AEAD's
//! associated data, so a blob moved to another device or edited in any byte fails to open.
//!
//! Blob layout (all integers big-endian):
//! `magic "KAWALRS1" | flags u8 | m_kib u32 | t u32 | p u32 | salt [32] | nonce [12] | ct [32] | tag [16]`.

use std::fmt;

use aws_lc_rs::{aead, hkdf};
use zeroize::Zeroizing;

use crate::password::Argon2Params;
use crate::secret::{SecretArray, SecretString};
use crate::{Error, Result};

const MAGIC: &[u8; 8] = b"KAWALRS1";
const FLAG_PASSPHRASE: u8 = 1;
const HEADER_LEN: usize = 8 + 1 + 12 + 32;
/// Length of a sealed root blob.
pub const SEALED_LEN: usize = HEADER_LEN + aead::NONCE_LEN + 32 + 16;

/// The device root secret. Every other symmetric key derives from it.
pub struct RootSecret(SecretArray<32>);

impl fmt::Debug for RootSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RootSecret([REDACTED])")
    }
}

/// What the key-encryption key is made of.
pub struct KekInputs<'a> {
    /// Facts binding the seal to this machine (see the platform crate). Not secret on its own.
    pub machine_binding: &'a [u8],
    /// Optional operator passphrase, stretched with Argon2id.
    pub passphrase: Option<&'a SecretString>,
    /// Argon2id cost for the passphrase.
    pub argon2: Argon2Params,
}

impl RootSecret {
    /// A fresh root from the OS CSPRNG.
    pub fn generate() -> Result<Self> {
        Ok(Self(SecretArray::random()?))
    }

    pub(crate) fn expose(&self) -> &[u8; 32] {
        self.0.expose()
    }

    /// The root's bytes, for tests that scan logs and files for them. Test builds only.
    #[cfg(feature = "test-export")]
    pub fn export_for_tests(&self) -> [u8; 32] {
        *self.0.expose()
    }

    /// Seals the root for storage. `context` (the device UID) is bound as associated data.
    pub fn seal(&self, kek: &KekInputs<'_>, context: &[u8]) -> Result<Vec<u8>> {
        let mut header = Vec::with_capacity(HEADER_LEN);
        header.extend_from_slice(MAGIC);
        header.push(if kek.passphrase.is_some() {
            FLAG_PASSPHRASE
        } else {
            0
        });
        header.extend_from_slice(&kek.argon2.m_kib.to_be_bytes());
        header.extend_from_slice(&kek.argon2.t.to_be_bytes());
        header.extend_from_slice(&kek.argon2.p.to_be_bytes());
        let salt: [u8; 32] = crate::rng::array()?;
        header.extend_from_slice(&salt);
        let key = derive_kek(&salt, kek.machine_binding, kek.passphrase, kek.argon2)?;
        let key = aead::RandomizedNonceKey::new(&aead::AES_256_GCM, key.expose())?;
        let mut body = self.expose().to_vec();
        let nonce = key.seal_in_place_append_tag(aad(&header, context), &mut body)?;
        let mut out = header;
        out.extend_from_slice(nonce.as_ref());
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Opens a sealed root. Fails on any changed byte, wrong machine, passphrase or context.
    pub fn unseal(blob: &[u8], kek: &KekInputs<'_>, context: &[u8]) -> Result<Self> {
        if blob.len() != SEALED_LEN {
            return Err(Error::Malformed("sealed root has the wrong length"));
        }
        if &blob[..8] != MAGIC {
            return Err(Error::Malformed("sealed root has an unknown format"));
        }
        let (header, rest) = blob.split_at(HEADER_LEN);
        let flags = header[8];
        if flags & !FLAG_PASSPHRASE != 0 {
            return Err(Error::Malformed("sealed root has unknown flags"));
        }
        let needs_passphrase = flags & FLAG_PASSPHRASE != 0;
        if needs_passphrase && kek.passphrase.is_none() {
            return Err(Error::Malformed(
                "sealed root needs a passphrase and none was given",
            ));
        }
        let be =
            |i: usize| u32::from_be_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
        let params = Argon2Params {
            m_kib: be(9),
            t: be(13),
            p: be(17),
        };
        params.check()?;
        let mut salt = [0u8; 32];
        salt.copy_from_slice(&header[21..53]);
        let passphrase = if needs_passphrase {
            kek.passphrase
        } else {
            None
        };
        let key = derive_kek(&salt, kek.machine_binding, passphrase, params)?;
        let key = aead::RandomizedNonceKey::new(&aead::AES_256_GCM, key.expose())?;
        let (nonce, body) = rest.split_at(aead::NONCE_LEN);
        let nonce = aead::Nonce::try_assume_unique_for_key(nonce)?;
        let mut body = Zeroizing::new(body.to_vec());
        let plain = key
            .open_in_place(nonce, aad(header, context), &mut body)
            .map_err(|_| Error::Unseal)?;
        let mut root = [0u8; 32];
        root.copy_from_slice(plain);
        let secret = SecretArray::new(root);
        zeroize::Zeroize::zeroize(&mut root);
        Ok(Self(secret))
    }
}

fn aad(header: &[u8], context: &[u8]) -> aead::Aad<Vec<u8>> {
    let mut a = Vec::with_capacity(header.len() + context.len() + 8);
    a.extend_from_slice(header);
    a.extend_from_slice(&(context.len() as u64).to_be_bytes());
    a.extend_from_slice(context);
    aead::Aad::from(a)
}

struct Len32;
impl hkdf::KeyType for Len32 {
    fn len(&self) -> usize {
        32
    }
}

fn derive_kek(
    salt: &[u8; 32],
    machine_binding: &[u8],
    passphrase: Option<&SecretString>,
    argon2: Argon2Params,
) -> Result<SecretArray<32>> {
    let mut ikm = Zeroizing::new(Vec::with_capacity(machine_binding.len() + 40));
    ikm.extend_from_slice(&(machine_binding.len() as u64).to_be_bytes());
    ikm.extend_from_slice(machine_binding);
    if let Some(p) = passphrase {
        let stretched = crate::password::stretch(p, &salt[..16], argon2)?;
        ikm.extend_from_slice(stretched.expose());
    }
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(&ikm);
    let mut out = Zeroizing::new([0u8; 32]);
    prk.expand(&[b"kawal/v1/kek"], Len32)?.fill(&mut out[..])?;
    Ok(SecretArray::new(*out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kek<'a>(binding: &'a [u8], pass: Option<&'a SecretString>) -> KekInputs<'a> {
        KekInputs {
            machine_binding: binding,
            passphrase: pass,
            argon2: Argon2Params::TEST,
        }
    }

    /// G045: CR-1-2
    #[test]
    fn seal_round_trips_and_binds_machine_uid_and_passphrase() {
        let root = RootSecret::generate().unwrap();
        let pass = SecretString::new("correct horse".into());
        let blob = root
            .seal(&kek(b"machine-a", Some(&pass)), b"uid-1")
            .unwrap();
        assert_eq!(blob.len(), SEALED_LEN);
        let back = RootSecret::unseal(&blob, &kek(b"machine-a", Some(&pass)), b"uid-1").unwrap();
        assert_eq!(back.expose(), root.expose());
        // Another machine, another device, another passphrase, no passphrase: all refused.
        assert!(RootSecret::unseal(&blob, &kek(b"machine-b", Some(&pass)), b"uid-1").is_err());
        assert!(RootSecret::unseal(&blob, &kek(b"machine-a", Some(&pass)), b"uid-2").is_err());
        let wrong = SecretString::new("wrong horse".into());
        assert!(RootSecret::unseal(&blob, &kek(b"machine-a", Some(&wrong)), b"uid-1").is_err());
        assert!(RootSecret::unseal(&blob, &kek(b"machine-a", None), b"uid-1").is_err());
    }

    /// G045: CR-1-2
    #[test]
    fn every_flipped_byte_is_refused() {
        let root = RootSecret::generate().unwrap();
        let blob = root.seal(&kek(b"m", None), b"u").unwrap();
        for i in 0..blob.len() {
            let mut bad = blob.clone();
            bad[i] ^= 0x01;
            assert!(
                RootSecret::unseal(&bad, &kek(b"m", None), b"u").is_err(),
                "byte {i}"
            );
        }
        assert!(RootSecret::unseal(&blob[..blob.len() - 1], &kek(b"m", None), b"u").is_err());
    }
}
