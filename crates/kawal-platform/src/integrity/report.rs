//! The result of an integrity check: one line per file, the signature problems, and a compact
//! summary for the log.

use std::fmt;
use std::time::Duration;

use kawal_audit::WallTime;

use super::{Error, KeyId, Role};

/// Who vouched for the expected contents of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The vendor's manifest.
    Vendor,
    /// The device's local overlay (a configuration change made through the API).
    Overlay,
}

/// What is wrong with one file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileProblem {
    /// The file does not exist.
    Missing,
    /// The file exists but could not be opened or read.
    Unreadable {
        /// The kind of I/O error.
        kind: std::io::ErrorKind,
    },
    /// The path is a symbolic link, directory, device or pipe, not a regular file.
    NotRegularFile,
    /// The size differs (the contents were not hashed).
    SizeMismatch {
        /// The size expected.
        expected: u64,
        /// The size found.
        actual: u64,
    },
    /// The size matches but the SHA-256 does not.
    HashMismatch {
        /// The hash expected.
        expected: [u8; 32],
        /// The hash found.
        actual: [u8; 32],
    },
    /// Permission bits, owner or group differ.
    ModeOwnerMismatch {
        /// Expected `(mode, uid, gid)`.
        expected: (u32, u32, u32),
        /// Found `(mode, uid, gid)`.
        actual: (u32, u32, u32),
    },
}

impl fmt::Display for FileProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing => f.write_str("missing"),
            Self::Unreadable { kind } => write!(f, "unreadable ({kind})"),
            Self::NotRegularFile => f.write_str("not a regular file"),
            Self::SizeMismatch { expected, actual } => {
                write!(f, "size mismatch (expected {expected}, found {actual})")
            }
            Self::HashMismatch { actual, .. } => {
                write!(f, "hash mismatch (found {})", hex::encode(actual))
            }
            Self::ModeOwnerMismatch {
                expected: (em, eu, eg),
                actual: (am, au, ag),
            } => write!(
                f,
                "mode/owner mismatch (expected {em:04o} {eu}:{eg}, found {am:04o} {au}:{ag})"
            ),
        }
    }
}

/// The check of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileCheck {
    /// The path on the device.
    pub path: String,
    /// What the file is.
    pub role: Role,
    /// Who vouched for the expected contents.
    pub source: Source,
    /// Everything wrong with it; empty when the file is as expected.
    pub problems: Vec<FileProblem>,
}

impl FileCheck {
    /// Whether the file is as expected.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

impl fmt::Display for FileCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): ", self.path, self.role.as_str())?;
        if self.problems.is_empty() {
            return f.write_str("ok");
        }
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// The full result of [`super::verify`].
#[derive(Debug)]
#[non_exhaustive]
pub struct Report {
    /// Product and version named by the manifest, once it verified.
    pub product: Option<(String, String)>,
    /// When the manifest was made, once it verified.
    pub created: Option<WallTime>,
    /// The vendor key the manifest verified under.
    pub key_id: Option<KeyId>,
    /// Why the manifest was refused; then no file was checked.
    pub manifest_error: Option<Error>,
    /// Why the local overlay was refused; then the vendor's entries applied.
    pub overlay_error: Option<Error>,
    /// Overlay entries refused: `(path, reason)`. An overlay may only vouch for files the
    /// manifest marks `mutable = "config"`.
    pub overlay_refused: Vec<(String, &'static str)>,
    /// Every file of the manifest, in its order.
    pub files: Vec<FileCheck>,
    /// Bytes hashed.
    pub bytes_hashed: u64,
    /// How long the check took.
    pub duration: Duration,
}

impl Report {
    /// A report for a manifest that could not be read or verified.
    pub fn refused(error: Error, duration: Duration) -> Self {
        Self {
            manifest_error: Some(error),
            duration,
            ..Self::empty()
        }
    }

    /// A report with nothing checked yet.
    pub(super) fn empty() -> Self {
        Self {
            product: None,
            created: None,
            key_id: None,
            manifest_error: None,
            overlay_error: None,
            overlay_refused: Vec::new(),
            files: Vec::new(),
            bytes_hashed: 0,
            duration: Duration::ZERO,
        }
    }

    /// Whether both signatures (where present) verified and every file is as expected.
    pub fn is_ok(&self) -> bool {
        self.manifest_error.is_none()
            && self.overlay_error.is_none()
            && self.overlay_refused.is_empty()
            && self.files.iter().all(FileCheck::is_ok)
    }

    /// Every problem as one line each: signatures first, then files in manifest order.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        out.extend(self.manifest_error.iter().map(ToString::to_string));
        out.extend(self.overlay_error.iter().map(ToString::to_string));
        out.extend(
            self.overlay_refused
                .iter()
                .map(|(path, why)| format!("local overlay entry {path} refused: {why}")),
        );
        out.extend(
            self.files
                .iter()
                .filter(|f| !f.is_ok())
                .map(ToString::to_string),
        );
        out
    }

    /// A compact summary naming at most `max_problems` problems.
    pub fn summary(&self, max_problems: usize) -> Summary {
        let problems = self.problems();
        Summary {
            ok: self.is_ok(),
            files_checked: self.files.len(),
            files_failed: self.files.iter().filter(|f| !f.is_ok()).count(),
            bytes_hashed: self.bytes_hashed,
            duration: self.duration,
            more_problems: problems.len().saturating_sub(max_problems),
            first_problems: problems.into_iter().take(max_problems).collect(),
        }
    }
}

/// A one-line view of a [`Report`], for the log and the periodic check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Whether everything verified.
    pub ok: bool,
    /// Files checked.
    pub files_checked: usize,
    /// Files with at least one problem.
    pub files_failed: usize,
    /// Bytes hashed.
    pub bytes_hashed: u64,
    /// How long the check took.
    pub duration: Duration,
    /// The first problems, one line each.
    pub first_problems: Vec<String>,
    /// How many more problems there were.
    pub more_problems: usize,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "integrity {}: {} files ({} failed), {} bytes in {} ms",
            if self.ok { "ok" } else { "FAILED" },
            self.files_checked,
            self.files_failed,
            self.bytes_hashed,
            self.duration.as_millis()
        )?;
        for p in &self.first_problems {
            write!(f, "; {p}")?;
        }
        if self.more_problems > 0 {
            write!(f, "; and {} more", self.more_problems)?;
        }
        Ok(())
    }
}
