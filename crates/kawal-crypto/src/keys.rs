//! Purpose keys, derived from the root secret with HKDF-SHA256 (CR-1-3).
//!
//! Each purpose is a type. A key is derived as
//! `HKDF(salt = version salt, ikm = root, info = "kawal/v1/key/" || LABEL || "/" || version)`,
//! so two purposes never share a key, and destroying a version's salt destroys that version.
//! Keys expose operations (seal, open, mac, sign), never their bytes, and wipe themselves on drop
//! (the derived bytes live in a [`SecretArray`] only as long as key construction takes).

use std::fmt;
use std::marker::PhantomData;

use aws_lc_rs::{aead, hkdf, hmac, signature};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::root::RootSecret;
use crate::secret::SecretArray;
use crate::{Error, Result};

mod sealed {
    pub trait Sealed {}
}

/// A single purpose a key may serve. Implemented only by the marker types of this module.
pub trait Purpose: sealed::Sealed {
    /// The label bound into derivation; unique per purpose.
    const LABEL: &'static str;
}
/// Purposes whose keys encrypt (AES-256-GCM).
pub trait AeadPurpose: Purpose {}
/// Purposes whose keys authenticate (HMAC-SHA256).
pub trait MacPurpose: Purpose {}
/// Purposes whose keys sign (Ed25519).
pub trait SigningPurpose: Purpose {}

macro_rules! purpose {
    ($(#[$doc:meta])* $name:ident, $label:literal, $kind:ident) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub enum $name {}
        impl sealed::Sealed for $name {}
        impl Purpose for $name {
            const LABEL: &'static str = $label;
        }
        impl $kind for $name {}
    };
}

purpose!(
    /// Records in the encrypted store.
    StoreData, "store-data", AeadPurpose
);
purpose!(
    /// Personally identifiable information, under its own key (DS-4-1).
    Pii, "pii", AeadPurpose
);
purpose!(
    /// Exported backups.
    Backup, "backup", AeadPurpose
);
purpose!(
    /// Keyed hashes of store record keys, so names are not readable on disk.
    RecordIndex, "record-index", MacPurpose
);
purpose!(
    /// Session tokens of the management API.
    Session, "session", MacPurpose
);
purpose!(
    /// The device's own signature over its configuration.
    ConfigMac, "config-mac", MacPurpose
);
purpose!(
    /// Signed checkpoints of the audit log.
    AuditSigning, "audit-signing", SigningPurpose
);
purpose!(
    /// The device's signature over its own configuration: the local overlay of the integrity
    /// manifest, which vouches for configuration changes the device accepted (PL-1-4).
    ConfigSigning, "config-signing", SigningPurpose
);

/// Public metadata of one key version: its number and derivation salt.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyVersion {
    /// Version number, from 1.
    pub version: u32,
    /// Random salt of this version (not secret; destroying it destroys the version).
    #[serde(with = "hex::serde")]
    pub salt: [u8; 32],
}

impl fmt::Debug for KeyVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyVersion")
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl KeyVersion {
    /// A new version with a fresh random salt.
    pub fn new(version: u32) -> Result<Self> {
        Ok(Self {
            version,
            salt: crate::rng::array()?,
        })
    }
}

/// Derives purpose keys from the root secret.
pub struct KeyHierarchy {
    root: RootSecret,
}

impl fmt::Debug for KeyHierarchy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyHierarchy([REDACTED])")
    }
}

struct Len(usize);
impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

impl KeyHierarchy {
    /// Takes ownership of the unsealed root.
    pub fn new(root: RootSecret) -> Self {
        Self { root }
    }

    fn derive<P: Purpose>(&self, kv: &KeyVersion) -> Result<SecretArray<32>> {
        let version = kv.version.to_be_bytes();
        let info: [&[u8]; 4] = [b"kawal/v1/key/", P::LABEL.as_bytes(), b"/", &version];
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &kv.salt).extract(self.root.expose());
        let mut out = Zeroizing::new([0u8; 32]);
        prk.expand(&info, Len(32))?.fill(&mut out[..])?;
        Ok(SecretArray::new(*out))
    }

    /// The derived bytes of purpose `P` at version `kv`, for tests that scan logs and files
    /// for them. Test builds only.
    #[cfg(feature = "test-export")]
    pub fn export_for_tests<P: Purpose>(&self, kv: &KeyVersion) -> Result<[u8; 32]> {
        Ok(*self.derive::<P>(kv)?.expose())
    }

    /// The AEAD key of purpose `P` at version `kv`.
    pub fn aead<P: AeadPurpose>(&self, kv: &KeyVersion) -> Result<AeadKey<P>> {
        let bytes = self.derive::<P>(kv)?;
        let key = aead::RandomizedNonceKey::new(&aead::AES_256_GCM, bytes.expose())?;
        Ok(AeadKey {
            key,
            version: kv.version,
            _purpose: PhantomData,
        })
    }

    /// The MAC key of purpose `P` at version `kv`.
    pub fn mac<P: MacPurpose>(&self, kv: &KeyVersion) -> Result<MacKey<P>> {
        let bytes = self.derive::<P>(kv)?;
        let key = hmac::Key::new(hmac::HMAC_SHA256, bytes.expose());
        Ok(MacKey {
            key,
            version: kv.version,
            _purpose: PhantomData,
        })
    }

    /// The signing key of purpose `P` at version `kv`.
    pub fn signing<P: SigningPurpose>(&self, kv: &KeyVersion) -> Result<SigningKey<P>> {
        let seed = self.derive::<P>(kv)?;
        let pair = signature::Ed25519KeyPair::from_seed_unchecked(seed.expose())
            .map_err(|_| Error::Primitive("ed25519 seed"))?;
        Ok(SigningKey {
            pair,
            version: kv.version,
            _purpose: PhantomData,
        })
    }
}

/// An AES-256-GCM key with random 96-bit nonces. Output: nonce || ciphertext || tag.
///
/// Random nonces are safe up to about 2^32 messages per key version; rotate well before.
pub struct AeadKey<P> {
    key: aead::RandomizedNonceKey,
    version: u32,
    _purpose: PhantomData<P>,
}

/// Bytes an AEAD seal adds to the plaintext.
pub const AEAD_OVERHEAD: usize = aead::NONCE_LEN + 16;

impl<P: AeadPurpose> AeadKey<P> {
    /// This key's version.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Encrypts `plaintext`, binding `aad` (the context the ciphertext belongs to).
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        let mut buf = Vec::with_capacity(plaintext.len() + AEAD_OVERHEAD);
        buf.extend_from_slice(&[0u8; aead::NONCE_LEN]);
        buf.extend_from_slice(plaintext);
        let (nonce, tag) = self
            .key
            .seal_in_place_separate_tag(aead::Aad::from(aad), &mut buf[aead::NONCE_LEN..])?;
        buf[..aead::NONCE_LEN].copy_from_slice(nonce.as_ref());
        buf.extend_from_slice(tag.as_ref());
        Ok(buf)
    }

    /// Decrypts what [`AeadKey::seal`] produced under the same `aad`.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        if sealed.len() < AEAD_OVERHEAD {
            return Err(Error::Malformed("sealed value shorter than nonce and tag"));
        }
        let (nonce, body) = sealed.split_at(aead::NONCE_LEN);
        let nonce = aead::Nonce::try_assume_unique_for_key(nonce)?;
        let mut body = Zeroizing::new(body.to_vec());
        let len = self
            .key
            .open_in_place(nonce, aead::Aad::from(aad), &mut body)
            .map_err(|_| Error::Unseal)?
            .len();
        body.truncate(len);
        Ok(body)
    }
}

/// An HMAC-SHA256 key.
pub struct MacKey<P> {
    key: hmac::Key,
    version: u32,
    _purpose: PhantomData<P>,
}

impl<P: MacPurpose> MacKey<P> {
    /// This key's version.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The 32-byte tag of `data`.
    pub fn mac(&self, data: &[u8]) -> [u8; 32] {
        let tag = hmac::sign(&self.key, data);
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// The tag of several parts, each length-prefixed so part boundaries cannot shift.
    pub fn mac_parts(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut ctx = hmac::Context::with_key(&self.key);
        for p in parts {
            ctx.update(&(p.len() as u64).to_be_bytes());
            ctx.update(p);
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }

    /// Constant-time check of `tag` over `data`.
    pub fn verify(&self, data: &[u8], tag: &[u8]) -> bool {
        hmac::verify(&self.key, data, tag).is_ok()
    }
}

/// An Ed25519 signing key.
pub struct SigningKey<P> {
    pair: signature::Ed25519KeyPair,
    version: u32,
    _purpose: PhantomData<P>,
}

impl<P: SigningPurpose> SigningKey<P> {
    /// This key's version.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Signs `msg`.
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        let sig = self.pair.sign(msg);
        let mut out = [0u8; 64];
        out.copy_from_slice(sig.as_ref());
        out
    }

    /// The public half.
    pub fn public_key(&self) -> [u8; 32] {
        use signature::KeyPair;
        let mut out = [0u8; 32];
        out.copy_from_slice(self.pair.public_key().as_ref());
        out
    }
}

macro_rules! redacted_debug {
    ($($t:ident),*) => {$(
        impl<P: Purpose> fmt::Debug for $t<P> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}<{}>(v{}, [REDACTED])", stringify!($t), P::LABEL, self.version)
            }
        }
    )*};
}
redacted_debug!(AeadKey, MacKey, SigningKey);

#[cfg(test)]
mod tests;
