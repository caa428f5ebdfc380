//! Checking the installed files against a verified manifest and overlay.
//!
//! Each file is opened once without following a final symbolic link and without blocking (a
//! pipe put in a file's place cannot stall the check), its metadata taken from the open handle,
//! and its contents hashed in [`HASH_BUFFER_BYTES`] chunks through one buffer reused for all
//! files. Reading stops one byte past the expected size, so a file that grows cannot make a
//! check run long.

use std::collections::HashMap;
use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::time::Instant;

use aws_lc_rs::digest;

use super::{
    FileCheck, FileEntry, FileProblem, HASH_BUFFER_BYTES, KeyId, Manifest, Mutable, Overlay,
    Report, Result, Source,
};
use crate::SysRoot;

/// Checks every file of `manifest` under `root`, with the overlay's entries (if it verified)
/// replacing expected contents of files marked `mutable = "config"`.
pub(super) fn check(
    manifest: &Manifest,
    key_id: KeyId,
    overlay: Option<Result<Overlay>>,
    root: &SysRoot,
    start: Instant,
) -> Report {
    let mut report = Report::empty();
    report.product = Some((manifest.product.clone(), manifest.version.clone()));
    report.created = Some(manifest.created);
    report.key_id = Some(key_id);

    let by_path: HashMap<&str, &FileEntry> = manifest
        .files
        .iter()
        .map(|f| (f.path.as_str(), f))
        .collect();
    let mut local: HashMap<&str, ([u8; 32], u64)> = HashMap::new();
    let overlay = match overlay {
        Some(Ok(o)) => Some(o),
        Some(Err(e)) => {
            report.overlay_error = Some(e);
            None
        }
        None => None,
    };
    for entry in overlay.iter().flat_map(|o| o.files.iter()) {
        match by_path.get(entry.path.as_str()) {
            None => report
                .overlay_refused
                .push((entry.path.clone(), "not in the manifest")),
            Some(f) if f.mutable != Some(Mutable::Config) => report
                .overlay_refused
                .push((entry.path.clone(), "the manifest does not mark it mutable")),
            Some(_) => {
                local.insert(entry.path.as_str(), (entry.sha256, entry.size));
            }
        }
    }

    let mut buf = vec![0u8; HASH_BUFFER_BYTES];
    for f in &manifest.files {
        let (source, sha256, size) = match local.get(f.path.as_str()) {
            Some(&(sha, size)) => (Source::Overlay, sha, size),
            None => (Source::Vendor, f.sha256, f.size),
        };
        let (problems, hashed) = check_file(root, f, sha256, size, &mut buf);
        report.bytes_hashed += hashed;
        report.files.push(FileCheck {
            path: f.path.clone(),
            role: f.role,
            source,
            problems,
        });
    }
    report.duration = start.elapsed();
    report
}

/// The problems of one file and the bytes hashed.
fn check_file(
    root: &SysRoot,
    entry: &FileEntry,
    sha256: [u8; 32],
    size: u64,
    buf: &mut [u8],
) -> (Vec<FileProblem>, u64) {
    let mut problems = Vec::new();
    let file = match open_regular(&root.path(&entry.path)) {
        Ok(f) => f,
        Err(p) => return (vec![p], 0),
    };
    let meta = match file.metadata() {
        Ok(m) => m,
        Err(e) => return (vec![FileProblem::Unreadable { kind: e.kind() }], 0),
    };
    if !meta.is_file() {
        return (vec![FileProblem::NotRegularFile], 0);
    }
    let actual = (meta.mode() & 0o7777, meta.uid(), meta.gid());
    let expected = (entry.mode, entry.uid, entry.gid);
    if actual != expected {
        problems.push(FileProblem::ModeOwnerMismatch { expected, actual });
    }
    if meta.len() != size {
        problems.push(FileProblem::SizeMismatch {
            expected: size,
            actual: meta.len(),
        });
        return (problems, 0);
    }
    match hash_reader(file.take(size.saturating_add(1)), buf) {
        Err(e) => problems.push(FileProblem::Unreadable { kind: e.kind() }),
        Ok((_, n)) if n != size => problems.push(FileProblem::SizeMismatch {
            expected: size,
            actual: n,
        }),
        Ok((actual, _)) if actual != sha256 => problems.push(FileProblem::HashMismatch {
            expected: sha256,
            actual,
        }),
        Ok(_) => {}
    }
    (problems, size)
}

/// Opens `path` for reading without following a final symbolic link and without blocking.
fn open_regular(path: &Path) -> std::result::Result<File, FileProblem> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.kind() {
            ErrorKind::NotFound => FileProblem::Missing,
            _ if e.raw_os_error() == Some(libc::ELOOP) => FileProblem::NotRegularFile,
            kind => FileProblem::Unreadable { kind },
        })
}

/// SHA-256 (aws-lc-rs) of everything `r` yields, and its length, through `buf`.
pub(super) fn hash_reader(mut r: impl Read, buf: &mut [u8]) -> std::io::Result<([u8; 32], u64)> {
    let mut ctx = digest::Context::new(&digest::SHA256);
    let mut total = 0u64;
    loop {
        let n = match r.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        ctx.update(&buf[..n]);
        total += n as u64;
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    Ok((out, total))
}

/// Hashes the regular file at `path`: `(sha256, size, mode, uid, gid)`.
pub(super) fn hash_file(
    path: &Path,
    buf: &mut [u8],
) -> std::result::Result<([u8; 32], u64, u32, u32, u32), super::Error> {
    let io = |source| super::Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(super::Error::NotRegularFile {
            path: path.to_path_buf(),
        });
    }
    let (sha, size) = hash_reader(file, buf).map_err(io)?;
    Ok((sha, size, meta.mode() & 0o7777, meta.uid(), meta.gid()))
}
