//! Why a bundle was refused, or could not be unpacked or built.
//!
//! Almost every variant is caused by the bundle (so possibly by an attacker who got between the
//! vendor and the device before the final hash check): [`BundleError::is_rejection`] says which.
//! Entry names in messages are escaped, so a crafted name cannot inject control characters into
//! a log line.

use std::fmt;
use std::path::PathBuf;

/// What is wrong with an entry's path (or a manifest path).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PathProblem {
    /// Not valid UTF-8.
    NotUtf8,
    /// Longer than the limit, in bytes.
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// More components than the limit.
    TooDeep {
        /// Its number of components.
        depth: usize,
        /// The limit.
        max: usize,
    },
    /// Starts with `/`.
    Absolute,
    /// Has a `..` component.
    ParentDir,
    /// Has a `.` component (refused so every file has exactly one spelling).
    CurrentDir,
    /// Has an empty component (`a//b`, a trailing `/` on a file, or an empty path).
    EmptyComponent,
    /// Holds a control character or a backslash.
    ForbiddenChar,
    /// Neither the manifest nor under `payload/`.
    NotUnderPayload,
}

impl fmt::Display for PathProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotUtf8 => f.write_str("is not valid UTF-8"),
            Self::TooLong { len, max } => write!(f, "is {len} bytes long, the limit is {max}"),
            Self::TooDeep { depth, max } => {
                write!(f, "is {depth} folders deep, the limit is {max}")
            }
            Self::Absolute => f.write_str("is an absolute path, which escapes the slot"),
            Self::ParentDir => f.write_str("escapes the slot (it contains '..')"),
            Self::CurrentDir => f.write_str("contains a '.' component"),
            Self::EmptyComponent => f.write_str("has an empty path component"),
            Self::ForbiddenChar => f.write_str("contains a control character or a backslash"),
            Self::NotUnderPayload => f.write_str("is not under 'payload/'"),
        }
    }
}

/// Everything that can go wrong with a bundle.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// Bundle: the archive holds no entry at all, so no manifest.
    #[error("bundle refused: the archive has no manifest (kawal-bundle.toml)")]
    ManifestMissing,
    /// Bundle: the first entry is not the manifest.
    #[error("bundle refused: the first entry is '{entry}', it must be kawal-bundle.toml")]
    ManifestNotFirst {
        /// The entry found first.
        entry: String,
    },
    /// Bundle: the manifest is larger than the limit (checked before it is read).
    #[error("bundle refused: the manifest is {size} bytes, the limit is {max}")]
    ManifestTooLarge {
        /// Its size in the archive header.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// Bundle: the manifest is not valid TOML or breaks a rule of the format.
    #[error("bundle refused: invalid manifest: {}", problems.join("; "))]
    ManifestInvalid {
        /// Every problem found.
        problems: Vec<String>,
    },
    /// Repository: the TUF target's signed custom metadata lacks a fact or holds a bad one.
    #[error("update refused: signed target metadata: {key} {reason}")]
    SignedFactsInvalid {
        /// The custom metadata key.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Repository: the update is for another product.
    #[error("update refused: it is for product '{offered}', this device is '{expected}'")]
    WrongProduct {
        /// The product the update names.
        offered: String,
        /// This device's product.
        expected: String,
    },
    /// Repository: the update does not list this device's hardware.
    #[error("update refused: hardware '{device}' is not among {supported:?}")]
    WrongHardware {
        /// This device's hardware id.
        device: String,
        /// The hardware ids the update supports.
        supported: Vec<String>,
    },
    /// Repository: the update's security version is below the installed one (anti-rollback).
    #[error("rollback refused: security version {offered} is below the installed {installed}")]
    Rollback {
        /// The security version offered.
        offered: u64,
        /// The security version installed.
        installed: u64,
    },
    /// Bundle: the manifest disagrees with the signed target metadata.
    #[error("bundle refused: manifest {field} is {manifest}, the signed metadata says {signed}")]
    Disagrees {
        /// The field (`product`, `version`, `security-version`, `hardware`).
        field: &'static str,
        /// The manifest's value.
        manifest: String,
        /// The signed value.
        signed: String,
    },
    /// Bundle: the manifest declares more than the limits allow (checked before any payload).
    #[error("bundle refused: {what} is {value}, the limit is {max}")]
    OverLimit {
        /// Which limit (`file count`, `total payload size`).
        what: &'static str,
        /// The declared value.
        value: u64,
        /// The limit.
        max: u64,
    },
    /// Bundle: an entry's path is unsafe or malformed.
    #[error("bundle refused: entry '{entry}' {problem}")]
    BadPath {
        /// The entry as named in the archive (escaped).
        entry: String,
        /// What is wrong.
        problem: PathProblem,
    },
    /// Bundle: an entry is neither a regular file nor a folder (link, device, FIFO, …).
    #[error("bundle refused: entry '{entry}' is a {kind}; only files and folders are allowed")]
    ForbiddenType {
        /// The entry (escaped).
        entry: String,
        /// What it is.
        kind: String,
    },
    /// Bundle: a PAX extended header carries a key kawal does not accept.
    #[error("bundle refused: entry '{entry}' has a PAX extension '{key}'")]
    ForbiddenPax {
        /// The entry (escaped).
        entry: String,
        /// The key (escaped).
        key: String,
    },
    /// Bundle: a folder entry carries data.
    #[error("bundle refused: folder entry '{entry}' carries {size} bytes of data")]
    FolderWithData {
        /// The entry (escaped).
        entry: String,
        /// Its size.
        size: u64,
    },
    /// Bundle: a payload file is not listed in the manifest.
    #[error("bundle refused: entry '{entry}' is not listed in the manifest")]
    Undeclared {
        /// The entry (escaped).
        entry: String,
    },
    /// Bundle: a file listed in the manifest is not in the archive.
    #[error("bundle refused: 'payload/{path}' is listed in the manifest but not in the archive")]
    Missing {
        /// The manifest path.
        path: String,
    },
    /// Bundle: the same path appears twice.
    #[error("bundle refused: entry '{entry}' appears twice")]
    Duplicate {
        /// The entry (escaped).
        entry: String,
    },
    /// Bundle: an entry would sit inside a path that is already a file.
    #[error("bundle refused: entry '{entry}' would be inside the file '{file}'")]
    InsideFile {
        /// The entry (escaped).
        entry: String,
        /// The file in the way.
        file: String,
    },
    /// Bundle: an entry's size in the archive differs from the manifest's.
    #[error("bundle refused: entry '{entry}' is {archive} bytes, the manifest says {manifest}")]
    SizeMismatch {
        /// The entry (escaped).
        entry: String,
        /// Its size in the archive header.
        archive: u64,
        /// Its size in the manifest.
        manifest: u64,
    },
    /// Bundle: a file's bytes do not match the manifest's SHA-256.
    #[error("bundle refused: entry '{entry}' does not match its SHA-256 in the manifest")]
    HashMismatch {
        /// The entry (escaped).
        entry: String,
    },
    /// Bundle: the archive ends early (inside an entry, or without its end marker).
    #[error("bundle refused: the archive is truncated ({at})")]
    Truncated {
        /// Where it ended.
        at: String,
    },
    /// Bundle: the headers before one entry (GNU long names, PAX records) are too large.
    #[error("bundle refused: the headers after '{after}' exceed {max} bytes")]
    HeadersTooLarge {
        /// The last entry read before them (escaped).
        after: String,
        /// The limit.
        max: u64,
    },
    /// Bundle: more than the allowed amount of data follows the end of the archive.
    #[error("bundle refused: more than {max} bytes follow the end of the archive")]
    TrailingData {
        /// The limit.
        max: u64,
    },
    /// Bundle: the archive is not a valid tar archive.
    #[error("bundle refused: malformed archive after '{after}'")]
    Malformed {
        /// The last entry read (escaped).
        after: String,
        /// What the tar reader found.
        #[source]
        source: std::io::Error,
    },
    /// Repository or transport: the stream feeding the bundle failed (for a TUF target: its
    /// signed length or SHA-256 did not match). The source is the stream's own error.
    #[error("update stream failed")]
    Stream(#[source] std::io::Error),
    /// Caller: the slot folder is missing, is not a folder, or is not empty.
    #[error("slot {path} is not an empty folder")]
    SlotNotEmpty {
        /// The slot.
        path: PathBuf,
    },
    /// Platform: something in the slot that kawal did not create is in the way (a concurrent
    /// writer); nothing is followed through it.
    #[error("slot changed under the unpacker: {path} already exists")]
    SlotChanged {
        /// The path in the way.
        path: PathBuf,
    },
    /// Vendor side: a source file for [`super::BundleBuilder`] is not a regular file or folder,
    /// or changed while the bundle was built.
    #[error("cannot build bundle from {path}: {reason}")]
    BuildSource {
        /// The source path.
        path: PathBuf,
        /// What is wrong.
        reason: &'static str,
    },
    /// Platform or operator: a local file or folder could not be read or written.
    #[error("I/O error on {path}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Vendor side: the bundle could not be written to its output.
    #[error("cannot write the bundle")]
    Output(#[source] std::io::Error),
}

impl BundleError {
    /// Whether the bundle or its signed metadata (so possibly an attacker) caused this error,
    /// rather than the device's storage, the caller or the vendor's build inputs.
    #[must_use]
    pub fn is_rejection(&self) -> bool {
        !matches!(
            self,
            Self::SlotNotEmpty { .. }
                | Self::SlotChanged { .. }
                | Self::BuildSource { .. }
                | Self::Io { .. }
                | Self::Output(_)
        )
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn invalid(problem: impl Into<String>) -> Self {
        Self::ManifestInvalid {
            problems: vec![problem.into()],
        }
    }
}

/// An entry name fit for a message: lossy UTF-8, control characters escaped, at most 256
/// characters.
pub(crate) fn shown(bytes: &[u8]) -> String {
    const MAX: usize = 256;
    let lossy = String::from_utf8_lossy(bytes);
    let mut out: String = lossy
        .chars()
        .take(MAX)
        .flat_map(char::escape_debug)
        .collect();
    if lossy.chars().nth(MAX).is_some() {
        out.push('…');
    }
    out
}
