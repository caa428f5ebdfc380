//! Making and signing manifests (the vendor, at build time) and local overlays (the device,
//! when its configuration is changed through the API).

use std::collections::HashSet;

use kawal_audit::WallTime;

use super::check::hash_file;
use super::format::{self, check_path};
use super::{
    DocKind, Error, FileEntry, HASH_BUFFER_BYTES, LocalEntry, MAX_BODY_BYTES, Manifest, Mutable,
    Overlay, Result, Role, SignedDocument, Signer,
};
use crate::SysRoot;

/// A file to list in a manifest. Mode, owner and group are taken from the file unless set:
/// set them when the manifest is made on a build machine where the files are not yet installed
/// with their final ownership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSpec {
    /// Absolute path on the device; read under the root given to [`make_manifest`].
    pub path: String,
    /// What the file is.
    pub role: Role,
    /// Whether the device's configuration key may vouch for new contents.
    pub mutable: Option<Mutable>,
    /// Permission bits to expect instead of the file's.
    pub mode: Option<u32>,
    /// Owner to expect instead of the file's.
    pub uid: Option<u32>,
    /// Group to expect instead of the file's.
    pub gid: Option<u32>,
}

impl FileSpec {
    /// The file at `path`, with mode and owner as found.
    pub fn new(path: impl Into<String>, role: Role) -> Self {
        Self {
            path: path.into(),
            role,
            mutable: None,
            mode: None,
            uid: None,
            gid: None,
        }
    }

    /// Marks the file as changeable through the API (the local overlay may vouch for it).
    pub fn mutable_config(mut self) -> Self {
        self.mutable = Some(Mutable::Config);
        self
    }

    /// Expects these permission bits, owner and group on the device.
    pub fn installed_as(mut self, mode: u32, uid: u32, gid: u32) -> Self {
        self.mode = Some(mode);
        self.uid = Some(uid);
        self.gid = Some(gid);
        self
    }
}

/// A manifest for the files `files` as they are under `root`, made now. Refuses invalid or
/// duplicate paths, and files that are not regular files.
pub fn make_manifest(
    root: &SysRoot,
    files: &[FileSpec],
    product: &str,
    version: &str,
) -> Result<Manifest> {
    let mut buf = vec![0u8; HASH_BUFFER_BYTES];
    let mut seen = HashSet::new();
    let mut entries = Vec::with_capacity(files.len());
    for spec in files {
        check_path(DocKind::Manifest, &spec.path)?;
        if !seen.insert(spec.path.as_str()) {
            return Err(Error::DuplicatePath {
                doc: DocKind::Manifest,
                path: spec.path.clone(),
            });
        }
        let (sha256, size, mode, uid, gid) = hash_file(&root.path(&spec.path), &mut buf)?;
        entries.push(FileEntry {
            path: spec.path.clone(),
            role: spec.role,
            sha256,
            size,
            mode: spec.mode.unwrap_or(mode),
            uid: spec.uid.unwrap_or(uid),
            gid: spec.gid.unwrap_or(gid),
            mutable: spec.mutable,
        });
    }
    Ok(Manifest {
        product: product.to_owned(),
        version: version.to_owned(),
        created: WallTime::now(),
        files: entries,
    })
}

/// Signs `manifest` with the vendor key. The body is parsed back with the verifier's own strict
/// parser first, so nothing is signed that a device would refuse.
pub fn sign_manifest(manifest: &Manifest, key: &dyn Signer) -> Result<SignedDocument> {
    let key_id = key.public_key().key_id();
    let body = format::manifest_body(manifest, &key_id)?;
    check_size(DocKind::Manifest, &body)?;
    format::parse_manifest(body.as_bytes(), &key_id)?;
    SignedDocument::sign_body(DocKind::Manifest, body.into_bytes(), key)
}

/// The local overlay entry for the file at `path` as it is now under `root`.
pub fn local_entry(root: &SysRoot, path: &str) -> Result<LocalEntry> {
    check_path(DocKind::Overlay, path)?;
    let mut buf = vec![0u8; HASH_BUFFER_BYTES];
    let (sha256, size, ..) = hash_file(&root.path(path), &mut buf)?;
    Ok(LocalEntry {
        path: path.to_owned(),
        sha256,
        size,
    })
}

/// Signs a local overlay vouching for `entries` with the device's configuration key.
pub fn sign_local(entries: &[LocalEntry], key: &dyn Signer) -> Result<SignedDocument> {
    let key_id = key.public_key().key_id();
    let overlay = Overlay {
        created: WallTime::now(),
        files: entries.to_vec(),
    };
    let body = format::overlay_body(&overlay, &key_id)?;
    check_size(DocKind::Overlay, &body)?;
    format::parse_overlay(body.as_bytes(), &key_id)?;
    SignedDocument::sign_body(DocKind::Overlay, body.into_bytes(), key)
}

fn check_size(doc: DocKind, body: &str) -> Result<()> {
    if body.len() as u64 > MAX_BODY_BYTES {
        return Err(Error::TooLarge {
            what: match doc {
                DocKind::Manifest => "manifest body",
                DocKind::Overlay => "overlay body",
            },
            limit: MAX_BODY_BYTES,
        });
    }
    Ok(())
}
