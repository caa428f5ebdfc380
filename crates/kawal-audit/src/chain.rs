//! Checkpoint signatures, the keys trusted to verify them, and the anchor that pins the
//! newest checkpoint outside the log files.
//!
//! A checkpoint signs, with the device's Ed25519 audit key, the message
//! `"kawal-audit-checkpoint-v1" || len(uid) as u32 BE || uid || seq as u64 BE || head ||
//! count as u64 BE` ([`checkpoint_message`]). The device UID binds the log to one device; the
//! length prefix keeps the encoding unambiguous. Verifiers look the key up by the entry's
//! `key_version` in [`TrustedKeys`], so a checkpoint re-signed with any other key fails.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use aws_lc_rs::signature::{ED25519, UnparsedPublicKey};

use crate::entry::EntryHash;
use crate::error::{Error, Result};

/// Domain separation tag at the start of every signed checkpoint message.
pub const CHECKPOINT_DOMAIN: &[u8] = b"kawal-audit-checkpoint-v1";

/// The bytes a checkpoint's signature covers.
pub fn checkpoint_message(device_uid: &str, seq: u64, head: &EntryHash, count: u64) -> Vec<u8> {
    let uid = device_uid.as_bytes();
    let mut m = Vec::with_capacity(CHECKPOINT_DOMAIN.len() + 4 + uid.len() + 8 + 32 + 8);
    m.extend_from_slice(CHECKPOINT_DOMAIN);
    m.extend_from_slice(&u32::try_from(uid.len()).unwrap_or(u32::MAX).to_be_bytes());
    m.extend_from_slice(uid);
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(&head.0);
    m.extend_from_slice(&count.to_be_bytes());
    m
}

/// Signs checkpoints. The key hierarchy implements it with an Ed25519 key derived for the
/// audit purpose only; this crate never sees the private key.
pub trait CheckpointSigner: Send + Sync {
    /// An Ed25519 signature over `msg`.
    fn sign(&self, msg: &[u8]) -> [u8; 64];
    /// The Ed25519 public key matching [`CheckpointSigner::sign`].
    fn public_key(&self) -> [u8; 32];
    /// The version of the key, recorded in each checkpoint so verifiers can find it.
    fn key_version(&self) -> u32;
}

/// The key hierarchy's audit-purpose key signs checkpoints as it is.
impl CheckpointSigner for kawal_crypto::keys::SigningKey<kawal_crypto::keys::AuditSigning> {
    fn sign(&self, msg: &[u8]) -> [u8; 64] {
        Self::sign(self, msg)
    }
    fn public_key(&self) -> [u8; 32] {
        Self::public_key(self)
    }
    fn key_version(&self) -> u32 {
        self.version()
    }
}

/// Why a checkpoint signature was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureProblem {
    /// No trusted key has this version.
    UnknownKeyVersion(u32),
    /// The signature does not verify under the trusted key of that version.
    BadSignature(u32),
}

/// The Ed25519 public keys trusted to sign checkpoints, by key version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedKeys {
    keys: BTreeMap<u32, [u8; 32]>,
}

impl TrustedKeys {
    /// No trusted keys.
    pub fn new() -> Self {
        Self::default()
    }

    /// Trusts `public_key` for checkpoints made with key version `version`.
    #[must_use]
    pub fn with(mut self, version: u32, public_key: [u8; 32]) -> Self {
        self.insert(version, public_key);
        self
    }

    /// Trusts `public_key` for `version` in place (replacing an earlier key of that version).
    pub fn insert(&mut self, version: u32, public_key: [u8; 32]) {
        self.keys.insert(version, public_key);
    }

    /// The key trusted for `version`.
    pub fn get(&self, version: u32) -> Option<&[u8; 32]> {
        self.keys.get(&version)
    }

    /// Checks `sig` over `msg` with the key of `version`.
    pub fn verify(&self, version: u32, msg: &[u8], sig: &[u8; 64]) -> Result<(), SignatureProblem> {
        let key = self
            .get(version)
            .ok_or(SignatureProblem::UnknownKeyVersion(version))?;
        UnparsedPublicKey::new(&ED25519, key)
            .verify(msg, sig)
            .map_err(|_| SignatureProblem::BadSignature(version))
    }
}

/// The newest durable checkpoint, kept by the caller where whoever can rewrite the log files
/// cannot (the encrypted store). It is what detects truncation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Anchor {
    /// The checkpoint entry's seq.
    pub seq: u64,
    /// The hash of the checkpoint entry itself (the chain head after it).
    pub head: EntryHash,
    /// The checkpoint's signature.
    pub sig: [u8; 64],
}

/// Loads and saves the [`Anchor`]. Implementations must make `save` durable before returning.
pub trait AnchorStore: Send + Sync {
    /// The saved anchor, or `None` if none was ever saved.
    fn load(&self) -> Result<Option<Anchor>>;
    /// Replaces the saved anchor.
    fn save(&self, anchor: &Anchor) -> Result<()>;
}

/// An [`AnchorStore`] in a plain file, written atomically (temp file, fsync, rename, fsync of
/// the folder). For tests and tools: a file next to the log does not stop an attacker who can
/// rewrite the log, so the daemon keeps its anchor in the encrypted store instead.
#[derive(Debug, Clone)]
pub struct FileAnchorStore {
    path: PathBuf,
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct AnchorFile {
    seq: u64,
    head: String,
    sig: String,
}

impl FileAnchorStore {
    /// A store in the file `path` (created on first save).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The file it uses.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl AnchorStore for FileAnchorStore {
    fn load(&self) -> Result<Option<Anchor>> {
        let bytes = match fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("read", &self.path, e)),
        };
        let file: AnchorFile =
            serde_json::from_slice(&bytes).map_err(|e| Error::Anchor(Box::new(e)))?;
        let head = EntryHash::from_hex(&file.head);
        let mut sig = [0u8; 64];
        let sig_ok = crate::canonical::decode_hex(file.sig.as_bytes(), &mut sig);
        match head {
            Some(head) if sig_ok => Ok(Some(Anchor {
                seq: file.seq,
                head,
                sig,
            })),
            _ => Err(Error::Anchor(
                format!("{}: bad hex", self.path.display()).into(),
            )),
        }
    }

    fn save(&self, anchor: &Anchor) -> Result<()> {
        let file = AnchorFile {
            seq: anchor.seq,
            head: anchor.head.to_hex(),
            sig: hex::encode(anchor.sig),
        };
        let bytes = serde_json::to_vec(&file).map_err(|e| Error::Anchor(Box::new(e)))?;
        let tmp = self.path.with_extension("tmp");
        let mut f = fs::File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
        f.write_all(&bytes)
            .map_err(|e| Error::io("write", &tmp, e))?;
        f.sync_all().map_err(|e| Error::io("fsync", &tmp, e))?;
        fs::rename(&tmp, &self.path).map_err(|e| Error::io("rename", &self.path, e))?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::segment::sync_dir(dir)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_is_length_prefixed_and_domain_separated() {
        let h = EntryHash([7; 32]);
        let m = checkpoint_message("ab", 5, &h, 4);
        assert!(m.starts_with(CHECKPOINT_DOMAIN));
        assert_eq!(
            &m[CHECKPOINT_DOMAIN.len()..CHECKPOINT_DOMAIN.len() + 6],
            b"\0\0\0\x02ab"
        );
        assert_ne!(
            checkpoint_message("a", 5, &h, 4),
            checkpoint_message("ab", 5, &h, 4)
        );
        assert_ne!(m, checkpoint_message("ab", 5, &h, 3));
    }

    #[test]
    fn file_anchor_store_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileAnchorStore::new(dir.path().join("anchor.json"));
        assert_eq!(store.load().unwrap(), None);
        let a = Anchor {
            seq: 42,
            head: EntryHash([9; 32]),
            sig: [3; 64],
        };
        store.save(&a).unwrap();
        assert_eq!(store.load().unwrap(), Some(a));
    }
}
