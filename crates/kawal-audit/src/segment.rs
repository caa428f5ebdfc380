//! Segment files, the lock file, and small I/O helpers shared by writer, reader and verify.
//!
//! Layout under the caller's directory: `audit/log-NNNNNN.jsonl` (numbered from 1, at least
//! six digits) and `audit/lock`, which every writing process holds exclusively (`flock`)
//! while it appends a batch.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The folder holding the segments under the caller's `dir`.
pub(crate) fn audit_dir(dir: &Path) -> PathBuf {
    dir.join(crate::SUBDIR)
}

/// The path of segment `n`.
pub(crate) fn segment_path(audit_dir: &Path, n: u64) -> PathBuf {
    audit_dir.join(format!("log-{n:06}.jsonl"))
}

/// The segment number of a file name, if it is the canonical name of a segment.
fn segment_number(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("log-")?.strip_suffix(".jsonl")?;
    let n: u64 = digits.parse().ok()?;
    // Only the name we would write counts (no "+1", no extra leading zeros).
    (n > 0 && format!("{n:06}") == digits).then_some(n)
}

/// The segments in `audit_dir`, in order. A missing folder has none.
pub(crate) fn list_segments(audit_dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let rd = match fs::read_dir(audit_dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("list", audit_dir, e)),
    };
    let mut out = Vec::new();
    for item in rd {
        let item = item.map_err(|e| Error::io("list", audit_dir, e))?;
        if let Some(n) = item.file_name().to_str().and_then(segment_number) {
            out.push((n, item.path()));
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// fsyncs a folder, making file creations and renames in it durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("fsync folder", dir, e))
}

/// Opens segment `path` for appending, creating it (and making its name durable) if needed.
pub(crate) fn open_append(path: &Path) -> Result<File> {
    let existed = path.exists();
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io("open", path, e))?;
    if !existed && let Some(parent) = path.parent() {
        sync_dir(parent)?;
    }
    Ok(f)
}

/// The bytes of `path` from `offset` to its end.
pub(crate) fn read_from(path: &Path, offset: u64) -> Result<Vec<u8>> {
    let mut f = File::open(path).map_err(|e| Error::io("open", path, e))?;
    f.seek(SeekFrom::Start(offset))
        .map_err(|e| Error::io("seek", path, e))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)
        .map_err(|e| Error::io("read", path, e))?;
    Ok(buf)
}

/// The length of `path`, or `None` if it does not exist.
pub(crate) fn len_of(path: &Path) -> Result<Option<u64>> {
    match fs::metadata(path) {
        Ok(m) => Ok(Some(m.len())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("stat", path, e)),
    }
}

/// Complete lines of `buf` (each without its `\n`) with their byte offsets, and the offset
/// where an incomplete last line starts, if there is one.
pub(crate) fn split_lines(buf: &[u8]) -> (Vec<(usize, &[u8])>, Option<usize>) {
    let mut lines = Vec::with_capacity(buf.len() / 256 + 1);
    let mut start = 0;
    while start < buf.len() {
        match buf[start..].iter().position(|b| *b == b'\n') {
            Some(n) => {
                lines.push((start, &buf[start..start + n]));
                start += n + 1;
            }
            None => return (lines, Some(start)),
        }
    }
    (lines, None)
}

/// The lock file that serialises appends between processes.
#[derive(Debug)]
pub(crate) struct LockFile {
    file: File,
    path: PathBuf,
}

/// Holds the exclusive lock until dropped.
pub(crate) struct LockGuard<'a>(&'a LockFile);

impl LockFile {
    /// Opens (creating) `audit_dir/lock`.
    pub fn open(audit_dir: &Path) -> Result<Self> {
        let path = audit_dir.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io("open", &path, e))?;
        Ok(Self { file, path })
    }

    /// Blocks until this process holds the lock exclusively.
    pub fn lock(&self) -> Result<LockGuard<'_>> {
        self.file
            .lock()
            .map_err(|e| Error::io("lock", &self.path, e))?;
        Ok(LockGuard(self))
    }
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.0.file.unlock() {
            // Closing the file would release it too; the writer keeps it open, so say so.
            tracing::error!(path = ?self.0.path, error = %e, "audit lock could not be released");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_lines() {
        assert_eq!(segment_number("log-000001.jsonl"), Some(1));
        assert_eq!(segment_number("log-1234567.jsonl"), Some(1_234_567));
        assert_eq!(segment_number("log-0000001.jsonl"), None);
        assert_eq!(segment_number("log-000000.jsonl"), None);
        assert_eq!(segment_number("log-00000a.jsonl"), None);
        let (lines, torn) = split_lines(b"a\nbb\ncc");
        assert_eq!(lines, vec![(0, &b"a"[..]), (2, &b"bb"[..])]);
        assert_eq!(torn, Some(5));
        assert_eq!(split_lines(b"a\n").1, None);
    }
}
