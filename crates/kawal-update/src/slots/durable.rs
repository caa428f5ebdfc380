//! The file operations the boot state needs, behind a trait so tests can cut the power.
//!
//! A write is durable only once synced: a new file needs its data synced *and* the folder that
//! names it synced. [`write_atomic`] does the four steps in that order (write a temporary file,
//! sync it, rename it over the target, sync the folder), so a power cut at any point leaves
//! either the old file or the new one. [`write_in_place`] is for boot loader environments on
//! raw flash, where there is no folder to rename in: the redundant copy is what protects it.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The primitive file operations. Each may be the last before a power cut.
pub trait Durable: Send + Sync {
    /// The contents of `path`, or `None` if it does not exist.
    fn read(&self, path: &Path) -> io::Result<Option<Vec<u8>>>;
    /// Creates or overwrites `path` with `bytes`; not durable until [`Durable::sync_file`].
    fn write(&self, path: &Path, bytes: &[u8]) -> io::Result<()>;
    /// Makes the contents of `path` durable.
    fn sync_file(&self, path: &Path) -> io::Result<()>;
    /// Renames `from` over `to` (atomic on one file system); not durable until the folder is
    /// synced.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes the names in folder `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// The real file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct FsDurable;

impl Durable for FsDurable {
    fn read(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        match fs::read(path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn write(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        // No truncation first: on a block device (an environment on raw flash) the size is fixed
        // and the write covers it; on a file the contents are replaced by the same length or set.
        let mut f = fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(path)?;
        f.write_all(bytes)?;
        if f.metadata()?.is_file() {
            f.set_len(bytes.len() as u64)?;
        }
        Ok(())
    }

    fn sync_file(&self, path: &Path) -> io::Result<()> {
        fs::OpenOptions::new().write(true).open(path)?.sync_all()
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        fs::File::open(dir)?.sync_all()
    }
}

/// The temporary name [`write_atomic`] writes first.
#[must_use]
pub fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Replaces `path` with `bytes` so that a power cut leaves the old or the new contents, never a
/// mix: write a temporary file, sync it, rename it over, sync the folder.
pub fn write_atomic(d: &dyn Durable, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = temp_path(path);
    d.write(&tmp, bytes)?;
    d.sync_file(&tmp)?;
    d.rename(&tmp, path)?;
    d.sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Overwrites `path` in place and syncs it. A power cut may tear it: callers keep a second copy.
pub fn write_in_place(d: &dyn Durable, path: &Path, bytes: &[u8]) -> io::Result<()> {
    d.write(path, bytes)?;
    d.sync_file(path)
}
