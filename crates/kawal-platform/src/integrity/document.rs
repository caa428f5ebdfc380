//! A signed document: a body and its detached signature file, read with size limits, checked
//! before the body is parsed.

use std::fmt;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::format::{self, parse_hex32};
use super::{
    Error, MAX_BODY_BYTES, MAX_SIGNATURE_BYTES, Manifest, Overlay, PublicKey, Result, Signer,
};

/// `format` of a signature file.
const SIGNATURE_FORMAT: &str = "kawal-integrity-signature/1";

/// Which of the two signed documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DocKind {
    /// The vendor's manifest.
    Manifest,
    /// The device's local overlay.
    Overlay,
}

impl DocKind {
    /// The value of `signs` in the signature file.
    fn name(self) -> &'static str {
        match self {
            Self::Manifest => "manifest",
            Self::Overlay => "overlay",
        }
    }

    /// What the signature covers: a context naming the document kind, then the body.
    fn signed_message(self, body: &[u8]) -> Vec<u8> {
        let context = match self {
            Self::Manifest => &b"kawal-integrity/1 manifest\0"[..],
            Self::Overlay => &b"kawal-integrity/1 overlay\0"[..],
        };
        let mut msg = Vec::with_capacity(context.len() + body.len());
        msg.extend_from_slice(context);
        msg.extend_from_slice(body);
        msg
    }
}

impl fmt::Display for DocKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Manifest => "integrity manifest",
            Self::Overlay => "local overlay",
        })
    }
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawSignature {
    format: String,
    signs: String,
    key_id: String,
    body_sha256: String,
    ed25519: String,
}

/// The path of the signature file of the body at `body`: `<body>.sig`.
pub fn signature_path(body: &Path) -> PathBuf {
    let mut p = body.as_os_str().to_owned();
    p.push(".sig");
    PathBuf::from(p)
}

/// A body and its signature file, as read: nothing in it is trusted until opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedDocument {
    /// The body's exact bytes.
    pub body: Vec<u8>,
    /// The signature file's exact bytes.
    pub signature: Vec<u8>,
}

impl SignedDocument {
    /// Reads the body at `path` and its signature at [`signature_path`], refusing files over
    /// [`MAX_BODY_BYTES`] and [`MAX_SIGNATURE_BYTES`].
    pub fn read(path: &Path) -> Result<Self> {
        Ok(Self {
            body: read_limited(path, MAX_BODY_BYTES, "document body")?,
            signature: read_limited(&signature_path(path), MAX_SIGNATURE_BYTES, "signature")?,
        })
    }

    /// Like [`SignedDocument::read`], but `None` when the body does not exist (no local
    /// overlay has been written yet). A body without its signature file is an error.
    pub fn read_optional(path: &Path) -> Result<Option<Self>> {
        match Self::read(path) {
            Ok(doc) => Ok(Some(doc)),
            Err(Error::Io { path: p, source })
                if p == path && source.kind() == std::io::ErrorKind::NotFound =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Writes the body to `path` and the signature beside it, each through a temporary file
    /// renamed into place. Writers and [`super::verify`] should not overlap (the daemon does
    /// both): between the two renames the pair does not match.
    pub fn write(&self, path: &Path) -> Result<()> {
        write_atomic(&signature_path(path), &self.signature)?;
        write_atomic(path, &self.body)
    }

    /// Checks the signature under the vendor key, then parses the body strictly.
    pub fn open_manifest(&self, key: &PublicKey) -> Result<Manifest> {
        self.check(DocKind::Manifest, key)?;
        format::parse_manifest(&self.body, &key.key_id())
    }

    /// Checks the signature under the device configuration key, then parses the body strictly.
    pub fn open_overlay(&self, key: &PublicKey) -> Result<Overlay> {
        self.check(DocKind::Overlay, key)?;
        format::parse_overlay(&self.body, &key.key_id())
    }

    /// Signs the exact bytes `body` as a document of kind `doc`, without checking them. Prefer
    /// [`super::sign_manifest`] and [`super::sign_local`], which refuse to sign a body that a
    /// device would refuse to parse.
    pub fn sign_body(doc: DocKind, body: Vec<u8>, key: &dyn Signer) -> Result<Self> {
        let sig = key.sign(&doc.signed_message(&body));
        let raw = RawSignature {
            format: SIGNATURE_FORMAT.to_owned(),
            signs: doc.name().to_owned(),
            key_id: key.public_key().key_id().to_hex(),
            body_sha256: hex::encode(kawal_crypto::sha256(&body)),
            ed25519: hex::encode(sig),
        };
        let signature = toml::to_string(&raw).map_err(|e| Error::Malformed {
            doc,
            reason: format!("cannot encode signature: {e}"),
        })?;
        Ok(Self {
            body,
            signature: signature.into_bytes(),
        })
    }

    /// Verifies the signature file against the body under `key`.
    fn check(&self, doc: DocKind, key: &PublicKey) -> Result<()> {
        if self.body.len() as u64 > MAX_BODY_BYTES {
            return Err(Error::TooLarge {
                what: "document body",
                limit: MAX_BODY_BYTES,
            });
        }
        if self.signature.len() as u64 > MAX_SIGNATURE_BYTES {
            return Err(Error::TooLarge {
                what: "signature",
                limit: MAX_SIGNATURE_BYTES,
            });
        }
        let malformed = |reason: &str| Error::MalformedSignature {
            doc,
            reason: reason.to_owned(),
        };
        let text = std::str::from_utf8(&self.signature).map_err(|_| malformed("not UTF-8"))?;
        let raw: RawSignature = toml::from_str(text).map_err(|e| malformed(e.message()))?;
        if raw.format != SIGNATURE_FORMAT {
            return Err(malformed("unknown format"));
        }
        if raw.signs != doc.name() {
            return Err(malformed("it signs a different kind of document"));
        }
        let trusted = key.key_id();
        if raw.key_id != trusted.to_hex() {
            let key_id: String = raw.key_id.chars().take(64).collect();
            return Err(Error::UnknownKey {
                doc,
                key_id,
                trusted,
            });
        }
        let claimed = parse_hex32(&raw.body_sha256)
            .ok_or_else(|| malformed("body-sha256 must be 64 lowercase hex digits"))?;
        let sig = hex::decode(&raw.ed25519)
            .ok()
            .filter(|s| s.len() == 64 && raw.ed25519.bytes().all(|b| !b.is_ascii_uppercase()))
            .ok_or_else(|| malformed("ed25519 must be 128 lowercase hex digits"))?;
        if claimed != kawal_crypto::sha256(&self.body) {
            return Err(Error::Tampered { doc });
        }
        if !key.verify(&doc.signed_message(&self.body), &sig) {
            return Err(Error::BadSignature { doc });
        }
        Ok(())
    }
}

fn read_limited(path: &Path, limit: u64, what: &'static str) -> Result<Vec<u8>> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    // Non-blocking: a pipe put in the document's place reads as empty instead of stalling.
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(io)?;
    let mut buf = Vec::new();
    f.take(limit + 1).read_to_end(&mut buf).map_err(io)?;
    if buf.len() as u64 > limit {
        return Err(Error::TooLarge { what, limit });
    }
    Ok(buf)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}
