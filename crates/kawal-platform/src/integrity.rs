//! The integrity manifest (G045 PL-1-4): which files make up this kawal installation, what
//! their SHA-256, size, mode and owner must be, and a check of the installed files against it.
//!
//! Two signed documents, each a TOML body plus a detached signature file beside it
//! (`<body>.sig`) over the body's exact bytes:
//!
//! - the **manifest**, signed by the vendor's Ed25519 key (public half installed at
//!   provisioning). It lists the `kawal` binary, its configuration, the trust store and any
//!   other file the vendor names; see [`make_manifest`] and [`sign_manifest`].
//! - the **local overlay**, signed by the device's own configuration key. When the
//!   configuration is changed through the API, the new hash goes into the overlay
//!   ([`sign_local`]), so a legitimate change still verifies and an edit by hand does not. An
//!   overlay entry replaces the vendor's expected hash and size only for a file the manifest
//!   marks `mutable = "config"`; mode and owner always come from the manifest.
//!
//! [`verify`] checks the signatures first and parses only authenticated bytes, then checks
//! every listed file under a [`SysRoot`] and returns a [`Report`]: one line per file plus any
//! signature problem, and a compact [`Summary`] for the log. Files are hashed in 128 KiB
//! chunks, so memory stays constant whatever their size.
//!
//! Format of the manifest body (`format = "kawal-integrity-manifest/1"`):
//!
//! ```toml
//! format = "kawal-integrity-manifest/1"
//! product = "kawal"
//! version = "0.1.0"
//! created = "2025-03-01T10:00:00.000000Z"
//! key-id = "<64 hex: SHA-256 of the raw Ed25519 public key>"
//!
//! [[file]]
//! path = "/usr/bin/kawal"
//! role = "binary"
//! sha256 = "<64 hex>"
//! size = 14400000
//! mode = "0755"
//! uid = 0
//! gid = 0
//!
//! [[file]]
//! path = "/etc/kawal/kawal.toml"
//! role = "config"
//! sha256 = "<64 hex>"
//! size = 812
//! mode = "0640"
//! uid = 0
//! gid = 0
//! mutable = "config"
//! ```
//!
//! and of a signature file (`manifest.toml.sig`):
//!
//! ```toml
//! format = "kawal-integrity-signature/1"
//! signs = "manifest"
//! key-id = "<64 hex>"
//! body-sha256 = "<64 hex>"
//! ed25519 = "<128 hex>"
//! ```
//!
//! The signature covers `"kawal-integrity/1 manifest\0"` (or `... overlay\0`) followed by the
//! body, so a manifest signature can never pass as an overlay signature or the other way round.
//! `body-sha256` is not trusted; it only tells a changed body ([`Error::Tampered`]) apart from
//! a signature that does not verify ([`Error::BadSignature`]).

use std::path::{Path, PathBuf};

use crate::SysRoot;

mod build;
mod check;
mod document;
mod format;
mod keys;
mod report;

pub use build::{FileSpec, local_entry, make_manifest, sign_local, sign_manifest};
pub use document::{DocKind, SignedDocument, signature_path};
pub use format::{FileEntry, LocalEntry, Manifest, Mutable, Overlay, Role};
pub use keys::{KeyId, PublicKey, Signer, SigningKey};
pub use report::{FileCheck, FileProblem, Report, Source, Summary};

/// Largest manifest or overlay body accepted, in bytes.
pub const MAX_BODY_BYTES: u64 = 1024 * 1024;
/// Largest signature file accepted, in bytes.
pub const MAX_SIGNATURE_BYTES: u64 = 4096;
/// Most files one manifest or overlay may list.
pub const MAX_FILES: usize = 4096;
/// Longest path accepted in an entry, in bytes (Linux `PATH_MAX`).
pub const MAX_PATH_BYTES: usize = 4096;
/// Buffer used to hash files: large enough for full-speed hashing, small enough to keep the
/// verifier's memory flat.
pub const HASH_BUFFER_BYTES: usize = 128 * 1024;

/// Errors of the integrity manifest: reading, parsing, signing and checking signatures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file (manifest, signature, key or a file being listed) could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A document or key file is larger than kawal accepts.
    #[error("{what} is larger than {limit} bytes")]
    TooLarge {
        /// Which document.
        what: &'static str,
        /// The limit.
        limit: u64,
    },
    /// The signature file is not a well-formed kawal signature file.
    #[error("{doc} signature file is malformed: {reason}")]
    MalformedSignature {
        /// Which document it belongs to.
        doc: DocKind,
        /// What is wrong.
        reason: String,
    },
    /// The document was signed by a key that is not the trusted one.
    #[error("{doc} is signed by unknown key {key_id} (trusted: {trusted})")]
    UnknownKey {
        /// Which document.
        doc: DocKind,
        /// The key id named by the signature file.
        key_id: String,
        /// The key id of the trusted key.
        trusted: KeyId,
    },
    /// The body is not the one that was signed: it changed after signing.
    #[error("{doc} was modified after it was signed")]
    Tampered {
        /// Which document.
        doc: DocKind,
    },
    /// The signature does not verify over the body under the trusted key.
    #[error("{doc} signature does not verify")]
    BadSignature {
        /// Which document.
        doc: DocKind,
    },
    /// No key was given to verify a document that is present.
    #[error("no trusted key to verify the {doc}")]
    NoKey {
        /// Which document.
        doc: DocKind,
    },
    /// The (authenticated) body does not parse or breaks a rule of the format.
    #[error("{doc} is malformed: {reason}")]
    Malformed {
        /// Which document.
        doc: DocKind,
        /// What is wrong.
        reason: String,
    },
    /// An entry's path is not a plain absolute path.
    #[error("{doc}: invalid path {path:?}: {reason}")]
    InvalidPath {
        /// Which document.
        doc: DocKind,
        /// The path as written (cut to 200 bytes).
        path: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// Two entries name the same path.
    #[error("{doc}: path {path} is listed twice")]
    DuplicatePath {
        /// Which document.
        doc: DocKind,
        /// The path.
        path: String,
    },
    /// A key could not be generated, parsed or used. Never carries key bytes.
    #[error("key: {reason}")]
    Key {
        /// What went wrong.
        reason: &'static str,
    },
    /// A private key file may be read by group or others.
    #[error("{}: private key file has mode {mode:04o}; it must not be accessible to group or others", path.display())]
    KeyFilePermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A file to be listed in a manifest is not a regular file.
    #[error("{}: not a regular file", path.display())]
    NotRegularFile {
        /// The file.
        path: PathBuf,
    },
}

/// Result of integrity operations.
pub type Result<T> = std::result::Result<T, Error>;

/// Checks the manifest (signed by `vendor_key`), the optional local overlay (signed by
/// `device_key`) and every file they list under `root`.
///
/// Never fails: a manifest that does not verify yields a report with that problem and no files
/// checked (its list cannot be trusted); an overlay that does not verify is reported and the
/// vendor's entries apply. Cheap enough to run on a timer: one signature check per document,
/// then one streaming hash per file with a single reused buffer.
pub fn verify(
    manifest: &SignedDocument,
    overlay: Option<&SignedDocument>,
    vendor_key: &PublicKey,
    device_key: Option<&PublicKey>,
    root: &SysRoot,
) -> Report {
    let start = std::time::Instant::now();
    let manifest = match manifest.open_manifest(vendor_key) {
        Ok(m) => m,
        Err(e) => return Report::refused(e, start.elapsed()),
    };
    let overlay = overlay.map(|doc| match device_key {
        Some(key) => doc.open_overlay(key),
        None => Err(Error::NoKey {
            doc: DocKind::Overlay,
        }),
    });
    check::check(&manifest, vendor_key.key_id(), overlay, root, start)
}

/// [`verify`] with the documents read from disk: the manifest at `manifest` (and its `.sig`),
/// and the overlay at `overlay` if that file exists. A manifest that cannot be read is reported
/// like one that does not verify; so is an overlay whose body exists but cannot be read.
pub fn verify_files(
    manifest: &Path,
    overlay: &Path,
    vendor_key: &PublicKey,
    device_key: Option<&PublicKey>,
    root: &SysRoot,
) -> Report {
    let start = std::time::Instant::now();
    let manifest = match SignedDocument::read(manifest) {
        Ok(doc) => doc,
        Err(e) => return Report::refused(e, start.elapsed()),
    };
    let overlay = match SignedDocument::read_optional(overlay) {
        Ok(doc) => doc,
        Err(e) => {
            let mut report = verify(&manifest, None, vendor_key, device_key, root);
            report.overlay_error = Some(e);
            return report;
        }
    };
    let mut report = verify(&manifest, overlay.as_ref(), vendor_key, device_key, root);
    report.duration = start.elapsed();
    report
}

#[cfg(test)]
mod tests;
