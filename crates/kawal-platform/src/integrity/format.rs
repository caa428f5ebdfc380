//! The manifest and overlay bodies: TOML in which every field is required (or explicitly
//! optional) and unknown fields are refused, then checked rule by rule into validated types.
//!
//! Only bodies whose signature has verified reach [`parse_manifest`] and [`parse_overlay`];
//! they still refuse anything odd, because a signing mistake must not become a blind spot.

use std::collections::HashSet;

use kawal_audit::WallTime;
use serde::{Deserialize, Serialize};

use super::{DocKind, Error, KeyId, MAX_FILES, MAX_PATH_BYTES, Result};

/// `format` of a manifest body.
pub(crate) const MANIFEST_FORMAT: &str = "kawal-integrity-manifest/1";
/// `format` of an overlay body.
pub(crate) const OVERLAY_FORMAT: &str = "kawal-integrity-overlay/1";
/// Longest `product` or `version`.
const MAX_TEXT: usize = 128;

/// What a listed file is, for the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// The `kawal` executable.
    Binary,
    /// kawal's configuration.
    Config,
    /// CA certificates kawal trusts.
    TrustStore,
    /// A sealed key blob.
    Key,
    /// Any other file the vendor lists.
    Other,
}

impl Role {
    /// The name used in the manifest.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Binary => "binary",
            Self::Config => "config",
            Self::TrustStore => "trust-store",
            Self::Key => "key",
            Self::Other => "other",
        }
    }
}

/// Which signer besides the vendor may vouch for a file's contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mutable {
    /// The device's configuration key, through the local overlay.
    Config,
}

/// One file of a verified manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Absolute path on the device: no `.`, `..` or empty components.
    pub path: String,
    /// What the file is.
    pub role: Role,
    /// SHA-256 of its contents.
    pub sha256: [u8; 32],
    /// Its size in bytes.
    pub size: u64,
    /// Its permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Its owner.
    pub uid: u32,
    /// Its group.
    pub gid: u32,
    /// Whether the local overlay may vouch for new contents.
    pub mutable: Option<Mutable>,
}

/// A verified manifest (the key id is that of the key it verified under).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// Product name, e.g. `kawal`.
    pub product: String,
    /// Product version.
    pub version: String,
    /// When the manifest was made.
    pub created: WallTime,
    /// The files, in the manifest's order.
    pub files: Vec<FileEntry>,
}

/// One file of the local overlay: the contents the device's configuration key vouches for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalEntry {
    /// Absolute path on the device.
    pub path: String,
    /// SHA-256 of its contents.
    pub sha256: [u8; 32],
    /// Its size in bytes.
    pub size: u64,
}

/// A verified local overlay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overlay {
    /// When it was signed.
    pub created: WallTime,
    /// The files it vouches for.
    pub files: Vec<LocalEntry>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawManifest {
    format: String,
    product: String,
    version: String,
    created: String,
    key_id: String,
    #[serde(rename = "file", default)]
    files: Vec<RawFile>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawFile {
    path: String,
    role: Role,
    sha256: String,
    size: u64,
    mode: String,
    uid: u32,
    gid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mutable: Option<Mutable>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawOverlay {
    format: String,
    created: String,
    key_id: String,
    #[serde(rename = "file", default)]
    files: Vec<RawLocal>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawLocal {
    path: String,
    sha256: String,
    size: u64,
}

/// The manifest body signed under `key_id`.
pub(crate) fn manifest_body(m: &Manifest, key_id: &KeyId) -> Result<String> {
    let raw = RawManifest {
        format: MANIFEST_FORMAT.to_owned(),
        product: m.product.clone(),
        version: m.version.clone(),
        created: m.created.to_string(),
        key_id: key_id.to_hex(),
        files: m
            .files
            .iter()
            .map(|f| RawFile {
                path: f.path.clone(),
                role: f.role,
                sha256: hex::encode(f.sha256),
                size: f.size,
                mode: format!("{:04o}", f.mode),
                uid: f.uid,
                gid: f.gid,
                mutable: f.mutable,
            })
            .collect(),
    };
    to_toml(DocKind::Manifest, &raw)
}

/// The overlay body signed under `key_id`.
pub(crate) fn overlay_body(o: &Overlay, key_id: &KeyId) -> Result<String> {
    let raw = RawOverlay {
        format: OVERLAY_FORMAT.to_owned(),
        created: o.created.to_string(),
        key_id: key_id.to_hex(),
        files: o
            .files
            .iter()
            .map(|f| RawLocal {
                path: f.path.clone(),
                sha256: hex::encode(f.sha256),
                size: f.size,
            })
            .collect(),
    };
    to_toml(DocKind::Overlay, &raw)
}

/// Checks a listed path and that the document has not listed it before.
fn new_path(doc: DocKind, seen: &mut HashSet<String>, path: &str) -> Result<()> {
    check_path(doc, path)?;
    if !seen.insert(path.to_owned()) {
        return Err(Error::DuplicatePath {
            doc,
            path: path.to_owned(),
        });
    }
    Ok(())
}

/// Parses and checks a manifest body that names `key_id` as its signer.
pub(crate) fn parse_manifest(body: &[u8], key_id: &KeyId) -> Result<Manifest> {
    let doc = DocKind::Manifest;
    let raw: RawManifest = from_toml(doc, body)?;
    expect_eq(doc, "format", &raw.format, MANIFEST_FORMAT)?;
    expect_eq(doc, "key-id", &raw.key_id, &key_id.to_hex())?;
    let product = text(doc, "product", raw.product)?;
    let version = text(doc, "version", raw.version)?;
    let created = time(doc, &raw.created)?;
    count(doc, raw.files.len())?;
    let mut seen = HashSet::new();
    let mut files = Vec::with_capacity(raw.files.len());
    for f in raw.files {
        new_path(doc, &mut seen, &f.path)?;
        files.push(FileEntry {
            sha256: hash(doc, &f.path, &f.sha256)?,
            mode: mode(doc, &f.path, &f.mode)?,
            path: f.path,
            role: f.role,
            size: f.size,
            uid: f.uid,
            gid: f.gid,
            mutable: f.mutable,
        });
    }
    Ok(Manifest {
        product,
        version,
        created,
        files,
    })
}

/// Parses and checks an overlay body that names `key_id` as its signer.
pub(crate) fn parse_overlay(body: &[u8], key_id: &KeyId) -> Result<Overlay> {
    let doc = DocKind::Overlay;
    let raw: RawOverlay = from_toml(doc, body)?;
    expect_eq(doc, "format", &raw.format, OVERLAY_FORMAT)?;
    expect_eq(doc, "key-id", &raw.key_id, &key_id.to_hex())?;
    let created = time(doc, &raw.created)?;
    count(doc, raw.files.len())?;
    let mut seen = HashSet::new();
    let mut files = Vec::with_capacity(raw.files.len());
    for f in raw.files {
        new_path(doc, &mut seen, &f.path)?;
        files.push(LocalEntry {
            sha256: hash(doc, &f.path, &f.sha256)?,
            path: f.path,
            size: f.size,
        });
    }
    Ok(Overlay { created, files })
}

/// Refuses anything but a plain absolute path: no `.`, `..` or empty components, no trailing
/// `/`, no control characters, at most [`MAX_PATH_BYTES`].
pub(crate) fn check_path(doc: DocKind, path: &str) -> Result<()> {
    let refuse = |reason| {
        let mut shown = path.to_owned();
        if shown.len() > 200 {
            let mut cut = 200;
            while !shown.is_char_boundary(cut) {
                cut -= 1;
            }
            shown.truncate(cut);
        }
        Err(Error::InvalidPath {
            doc,
            path: shown,
            reason,
        })
    };
    if path.len() > MAX_PATH_BYTES {
        return refuse("longer than PATH_MAX");
    }
    let Some(rest) = path.strip_prefix('/') else {
        return refuse("not absolute");
    };
    if path.chars().any(char::is_control) {
        return refuse("contains a control character");
    }
    if rest.is_empty() {
        return refuse("is the root directory");
    }
    for component in rest.split('/') {
        match component {
            "" => return refuse("empty component (`//` or trailing `/`)"),
            "." => return refuse("`.` component"),
            ".." => return refuse("`..` component"),
            _ => {}
        }
    }
    Ok(())
}

fn to_toml<T: Serialize>(doc: DocKind, raw: &T) -> Result<String> {
    toml::to_string(raw).map_err(|e| Error::Malformed {
        doc,
        reason: format!("cannot encode: {e}"),
    })
}

fn from_toml<T: for<'de> Deserialize<'de>>(doc: DocKind, body: &[u8]) -> Result<T> {
    let text = std::str::from_utf8(body).map_err(|_| Error::Malformed {
        doc,
        reason: "not UTF-8".to_owned(),
    })?;
    toml::from_str(text).map_err(|e| Error::Malformed {
        doc,
        reason: e.message().to_owned(),
    })
}

fn expect_eq(doc: DocKind, field: &str, got: &str, want: &str) -> Result<()> {
    if got == want {
        return Ok(());
    }
    Err(Error::Malformed {
        doc,
        reason: format!("{field} is {:?}, expected {want:?}", cut(got)),
    })
}

fn text(doc: DocKind, field: &str, value: String) -> Result<String> {
    if value.is_empty() || value.len() > MAX_TEXT || value.chars().any(char::is_control) {
        return Err(Error::Malformed {
            doc,
            reason: format!("{field} must be 1 to {MAX_TEXT} bytes without control characters"),
        });
    }
    Ok(value)
}

fn time(doc: DocKind, value: &str) -> Result<WallTime> {
    WallTime::parse(value.as_bytes()).ok_or_else(|| Error::Malformed {
        doc,
        reason: format!(
            "created {:?} is not of the form YYYY-MM-DDTHH:MM:SS.ffffffZ",
            cut(value)
        ),
    })
}

fn count(doc: DocKind, n: usize) -> Result<()> {
    if n == 0 && doc == DocKind::Manifest {
        return Err(Error::Malformed {
            doc,
            reason: "lists no files".to_owned(),
        });
    }
    if n > MAX_FILES {
        return Err(Error::Malformed {
            doc,
            reason: format!("lists {n} files; at most {MAX_FILES} are accepted"),
        });
    }
    Ok(())
}

/// 64 lowercase hex digits, nothing else (one spelling per hash).
pub(crate) fn parse_hex32(value: &str) -> Option<[u8; 32]> {
    if value.len() != 64
        || !value
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(value, &mut out).ok()?;
    Some(out)
}

fn hash(doc: DocKind, path: &str, value: &str) -> Result<[u8; 32]> {
    parse_hex32(value).ok_or_else(|| Error::Malformed {
        doc,
        reason: format!("{path}: sha256 must be 64 lowercase hex digits"),
    })
}

/// Permission bits as exactly four octal digits, at most `7777`.
fn mode(doc: DocKind, path: &str, value: &str) -> Result<u32> {
    let valid = value.len() == 4 && value.bytes().all(|b| matches!(b, b'0'..=b'7'));
    match u32::from_str_radix(value, 8) {
        Ok(m) if valid => Ok(m),
        _ => Err(Error::Malformed {
            doc,
            reason: format!("{path}: mode must be four octal digits, e.g. \"0644\""),
        }),
    }
}

/// At most 64 characters of an untrusted value, for error messages.
fn cut(value: &str) -> String {
    value.chars().take(64).collect()
}
