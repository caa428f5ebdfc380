//! Ed25519 keys of the integrity manifest (aws-lc-rs): the vendor's signing key, the device's
//! configuration key, their public halves and key ids.
//!
//! Private keys are read and written as PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`, what
//! `openssl genpkey -algorithm ed25519` writes) or as a raw 32-byte seed file; public keys as
//! SubjectPublicKeyInfo PEM (`-----BEGIN PUBLIC KEY-----`), 32 raw bytes or 64 hex digits.
//! Every intermediate copy of private key bytes is wiped when dropped.

use std::fmt;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use aws_lc_rs::signature::{self, Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

use super::{Error, Result};

/// The DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410 §4); the 32 key bytes follow.
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];
/// Largest key file read (a PEM private key is about 120 bytes).
const MAX_KEY_FILE: u64 = 8192;

/// Something that signs integrity documents with Ed25519: a [`SigningKey`], or a key of
/// kawal's key hierarchy (`kawal_crypto::keys::SigningKey`).
pub trait Signer {
    /// The public half of the signing key.
    fn public_key(&self) -> PublicKey;
    /// The Ed25519 signature of `msg`.
    fn sign(&self, msg: &[u8]) -> [u8; 64];
}

impl<P: kawal_crypto::keys::SigningPurpose> Signer for kawal_crypto::keys::SigningKey<P> {
    fn public_key(&self) -> PublicKey {
        PublicKey(kawal_crypto::keys::SigningKey::public_key(self))
    }

    fn sign(&self, msg: &[u8]) -> [u8; 64] {
        kawal_crypto::keys::SigningKey::sign(self, msg)
    }
}

/// The id of a public key: SHA-256 of its 32 raw bytes, written as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId([u8; 32]);

impl KeyId {
    /// The id as lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// An Ed25519 public key that verifies integrity documents.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// The key from its 32 raw bytes or its DER SubjectPublicKeyInfo.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        // aws-lc-rs checks the encoding (raw or SPKI); the raw bytes are then taken from it.
        signature::ParsedPublicKey::new(&signature::ED25519, bytes).map_err(|_| Error::Key {
            reason: "not an Ed25519 public key",
        })?;
        let raw = match bytes.len() {
            32 => bytes,
            44 if bytes.starts_with(&SPKI_PREFIX) => &bytes[SPKI_PREFIX.len()..],
            _ => {
                return Err(Error::Key {
                    reason: "not an Ed25519 public key",
                });
            }
        };
        let mut out = [0u8; 32];
        out.copy_from_slice(raw);
        Ok(Self(out))
    }

    /// The key from a `PUBLIC KEY` PEM block.
    pub fn from_pem(pem: &str) -> Result<Self> {
        let der = pem_decode(pem, "PUBLIC KEY")?;
        Self::from_bytes(&der)
    }

    /// Reads a public key file: PEM, 32 raw bytes, or 64 hex digits (surrounding whitespace
    /// allowed).
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = read_limited(path)?;
        if bytes.starts_with(b"-----BEGIN") {
            let text = std::str::from_utf8(&bytes).map_err(|_| Error::Key {
                reason: "PEM is not UTF-8",
            })?;
            return Self::from_pem(text);
        }
        if bytes.len() == 32 {
            return Self::from_bytes(&bytes);
        }
        let trimmed = bytes.trim_ascii();
        if trimmed.len() == 64 {
            let raw = hex::decode(trimmed).map_err(|_| Error::Key {
                reason: "public key file is neither PEM, 32 raw bytes nor 64 hex digits",
            })?;
            return Self::from_bytes(&raw);
        }
        Err(Error::Key {
            reason: "public key file is neither PEM, 32 raw bytes nor 64 hex digits",
        })
    }

    /// The 32 raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The key as a `PUBLIC KEY` PEM block (SubjectPublicKeyInfo).
    pub fn to_pem(&self) -> String {
        let mut der = SPKI_PREFIX.to_vec();
        der.extend_from_slice(&self.0);
        pem_encode("PUBLIC KEY", &der).to_string()
    }

    /// This key's id.
    pub fn key_id(&self) -> KeyId {
        KeyId(kawal_crypto::sha256(&self.0))
    }

    /// Whether `sig` is this key's Ed25519 signature of `msg`.
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        kawal_crypto::sign::verify_ed25519(&self.0, msg, sig)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey(id {})", self.key_id())
    }
}

/// An Ed25519 private key for signing integrity documents (the vendor's, or a device
/// configuration key held in a file). `Debug` never shows key material.
pub struct SigningKey {
    pair: Ed25519KeyPair,
}

impl SigningKey {
    /// A fresh key from the system's CSPRNG.
    pub fn generate() -> Result<Self> {
        let pair = Ed25519KeyPair::generate().map_err(|_| Error::Key {
            reason: "key generation failed",
        })?;
        Ok(Self { pair })
    }

    /// The key from an unencrypted PKCS#8 (v1 or v2) DER document.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self> {
        let pair = Ed25519KeyPair::from_pkcs8(der).map_err(|_| Error::Key {
            reason: "not an Ed25519 PKCS#8 private key",
        })?;
        Ok(Self { pair })
    }

    /// The key from a `PRIVATE KEY` PEM block (PKCS#8).
    pub fn from_pem(pem: &str) -> Result<Self> {
        let der = pem_decode(pem, "PRIVATE KEY")?;
        Self::from_pkcs8_der(&der)
    }

    /// The key from its 32-byte seed.
    pub fn from_seed(seed: &[u8]) -> Result<Self> {
        if seed.len() != 32 {
            return Err(Error::Key {
                reason: "an Ed25519 seed is 32 bytes",
            });
        }
        let pair = Ed25519KeyPair::from_seed_unchecked(seed).map_err(|_| Error::Key {
            reason: "not an Ed25519 seed",
        })?;
        Ok(Self { pair })
    }

    /// Reads a private key file: PKCS#8 PEM, or a raw 32-byte seed. Refuses a file that group
    /// or others may access.
    pub fn load(path: &Path) -> Result<Self> {
        let meta = std::fs::metadata(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(Error::KeyFilePermissions {
                path: path.to_path_buf(),
                mode,
            });
        }
        let bytes = read_limited(path)?;
        if bytes.starts_with(b"-----BEGIN") {
            let text = std::str::from_utf8(&bytes).map_err(|_| Error::Key {
                reason: "PEM is not UTF-8",
            })?;
            return Self::from_pem(text);
        }
        Self::from_seed(&bytes)
    }

    /// The key as a `PRIVATE KEY` PEM block (PKCS#8 v1, as OpenSSL writes it).
    pub fn to_pkcs8_pem(&self) -> Result<Zeroizing<String>> {
        let doc = self.pair.to_pkcs8v1().map_err(|_| Error::Key {
            reason: "PKCS#8 encoding failed",
        })?;
        Ok(pem_encode("PRIVATE KEY", doc.as_ref()))
    }

    /// Writes the key as PKCS#8 PEM to a new file with mode 0600; refuses to overwrite.
    pub fn save(&self, path: &Path) -> Result<()> {
        let pem = self.to_pkcs8_pem()?;
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        f.write_all(pem.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)
    }
}

impl Signer for SigningKey {
    fn public_key(&self) -> PublicKey {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.pair.public_key().as_ref());
        PublicKey(out)
    }

    fn sign(&self, msg: &[u8]) -> [u8; 64] {
        let mut out = [0u8; 64];
        out.copy_from_slice(self.pair.sign(msg).as_ref());
        out
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SigningKey(id {}, [REDACTED])",
            self.public_key().key_id()
        )
    }
}

/// Reads at most [`MAX_KEY_FILE`] bytes into a buffer that is wiped on drop.
fn read_limited(path: &Path) -> Result<Zeroizing<Vec<u8>>> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let f = std::fs::File::open(path).map_err(io)?;
    let mut buf = Zeroizing::new(Vec::with_capacity(256));
    f.take(MAX_KEY_FILE + 1).read_to_end(&mut buf).map_err(io)?;
    if buf.len() as u64 > MAX_KEY_FILE {
        return Err(Error::TooLarge {
            what: "key file",
            limit: MAX_KEY_FILE,
        });
    }
    Ok(buf)
}

/// The body of the single PEM block labelled `label`; nothing but whitespace may surround it.
fn pem_decode(pem: &str, label: &str) -> Result<Zeroizing<Vec<u8>>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let inner = pem
        .trim()
        .strip_prefix(begin.as_str())
        .and_then(|rest| rest.strip_suffix(end.as_str()))
        .ok_or(Error::Key {
            reason: "not a single PEM block of the expected type",
        })?;
    let b64: Zeroizing<String> =
        Zeroizing::new(inner.chars().filter(|c| !c.is_ascii_whitespace()).collect());
    // Room for the whole result up front, so decoding never reallocates and leaves a copy behind.
    let mut out = Zeroizing::new(Vec::with_capacity(b64.len()));
    STANDARD
        .decode_vec(b64.as_bytes(), &mut out)
        .map_err(|_| Error::Key {
            reason: "PEM body is not base64",
        })?;
    Ok(out)
}

/// `der` as a PEM block labelled `label`, 64 characters a line.
fn pem_encode(label: &str, der: &[u8]) -> Zeroizing<String> {
    let b64 = Zeroizing::new(STANDARD.encode(der));
    let mut out = Zeroizing::new(String::with_capacity(b64.len() + 80));
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    for line in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}
