//! Writing into the slot without ever following a link.
//!
//! The slot starts empty and only this writer touches it, so every folder on the way to a file
//! is one it created itself: it remembers them, and refuses (rather than follows) anything else
//! it finds in the way. Files are opened with `create_new` (`O_CREAT|O_EXCL`), which fails on an
//! existing name, symlinks included. Everything is fsynced before the unpack reports success.

use std::collections::BTreeSet;
use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use aws_lc_rs::digest;

use super::error::BundleError;

/// Mode of every folder the unpacker creates.
const DIR_MODE: u32 = 0o755;

/// The size of the copy buffer: files are streamed through it, never held whole.
pub(crate) const CHUNK: usize = 64 * 1024;

/// What a streamed copy found.
pub(crate) struct Copied {
    pub(crate) bytes: u64,
    /// The file's SHA-256, when asked for.
    pub(crate) sha256: Option<digest::Digest>,
}

/// The slot being filled.
pub(crate) struct SlotWriter {
    root: PathBuf,
    /// Folders created so far, relative to the root (`payload`, `payload/bin`, …).
    created: BTreeSet<String>,
    buf: Vec<u8>,
}

impl SlotWriter {
    /// Opens `root`, which must be an existing, empty folder (not a symlink to one).
    pub(crate) fn open(root: &Path) -> Result<Self, BundleError> {
        let not_empty = || BundleError::SlotNotEmpty {
            path: root.to_path_buf(),
        };
        let meta = fs::symlink_metadata(root).map_err(|e| match e.kind() {
            ErrorKind::NotFound => not_empty(),
            _ => BundleError::io(root, e),
        })?;
        if !meta.is_dir() {
            return Err(not_empty());
        }
        let mut entries = fs::read_dir(root).map_err(|e| BundleError::io(root, e))?;
        if entries.next().is_some() {
            return Err(not_empty());
        }
        Ok(Self {
            root: root.to_path_buf(),
            created: BTreeSet::new(),
            buf: vec![0; CHUNK],
        })
    }

    /// Creates folder `rel` and every missing folder above it. A folder this writer already
    /// created is fine; anything else at one of those names is refused.
    pub(crate) fn ensure_dir(&mut self, rel: &str) -> Result<(), BundleError> {
        let mut prefix = String::with_capacity(rel.len());
        for part in rel.split('/') {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            if self.created.contains(&prefix) {
                continue;
            }
            let path = self.root.join(&prefix);
            DirBuilder::new()
                .mode(DIR_MODE)
                .create(&path)
                .map_err(|e| match e.kind() {
                    ErrorKind::AlreadyExists => BundleError::SlotChanged { path: path.clone() },
                    _ => BundleError::io(&path, e),
                })?;
            // The umask may have taken bits off: the mode is kawal's, not the process's.
            fs::set_permissions(&path, Permissions::from_mode(DIR_MODE))
                .map_err(|e| BundleError::io(&path, e))?;
            self.created.insert(prefix.clone());
        }
        Ok(())
    }

    /// Streams `data` into the new file `rel` (its folders must exist), at most `limit` bytes,
    /// hashing as it writes when `hash` is set; then applies `mode` and fsyncs the file.
    pub(crate) fn write_file(
        &mut self,
        rel: &str,
        data: &mut dyn Read,
        limit: u64,
        mode: u32,
        hash: bool,
    ) -> Result<Copied, ReadOrWrite> {
        // Callers create the folders first; anything else is a bug, refused safely.
        if let Some((parent, _)) = rel.rsplit_once('/')
            && !self.created.contains(parent)
        {
            return Err(ReadOrWrite::Write(BundleError::SlotChanged {
                path: self.root.join(parent),
            }));
        }
        let path = self.root.join(rel);
        let io = |e| ReadOrWrite::Write(BundleError::io(&path, e));
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| match e.kind() {
                ErrorKind::AlreadyExists => {
                    ReadOrWrite::Write(BundleError::SlotChanged { path: path.clone() })
                }
                _ => io(e),
            })?;
        let mut hasher = hash.then(|| digest::Context::new(&digest::SHA256));
        let mut bytes = 0u64;
        let mut data = data.take(limit);
        let mut writeback = Writeback::new();
        loop {
            let n = match data.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(ReadOrWrite::Read(e)),
            };
            let chunk = &self.buf[..n];
            if let Some(hasher) = hasher.as_mut() {
                hasher.update(chunk);
            }
            file.write_all(chunk).map_err(io)?;
            bytes += n as u64;
            writeback.wrote(&file, bytes);
        }
        file.set_permissions(Permissions::from_mode(mode))
            .map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok(Copied {
            bytes,
            sha256: hasher.map(digest::Context::finish),
        })
    }

    /// Fsyncs every folder created, deepest first, then the slot itself, so the new names are
    /// durable before the unpack reports success.
    pub(crate) fn sync_dirs(&self) -> Result<(), BundleError> {
        let sync = |path: &Path| {
            File::open(path)
                .and_then(|d| d.sync_all())
                .map_err(|e| BundleError::io(path, e))
        };
        for rel in self.created.iter().rev() {
            sync(&self.root.join(rel))?;
        }
        sync(&self.root)
    }
}

/// Bytes written between two requests to start the write-back of a large file.
const WRITEBACK_EVERY: u64 = 4 * 1024 * 1024;

/// Moves a large file's pages to the disk while the rest of it is still streaming in, so the
/// final fsync finds little left to do: on a gateway's storage, writing 100 MB back takes about
/// as long as hashing them, and doing it only at the end would add the two. Every
/// [`WRITEBACK_EVERY`] bytes, `posix_fadvise(DONTNEED)` over what was written since asks Linux
/// to start writing those pages back without waiting for them (and to drop them from the cache
/// once clean, so an install does not push the rest of the gateway out of memory). It is only
/// a hint: the final `fsync` still waits for every page and reports any write-back error.
struct Writeback {
    from: u64,
}

impl Writeback {
    fn new() -> Self {
        Self { from: 0 }
    }

    /// Notes that `total` bytes of `file` are written so far.
    fn wrote(&mut self, file: &File, total: u64) {
        let len = total - self.from;
        if len < WRITEBACK_EVERY {
            return;
        }
        let start = self.from;
        self.from = total;
        // A refusal (an unusual file system) only loses the head start.
        let _ = rustix::fs::fadvise(
            file,
            start,
            std::num::NonZeroU64::new(len),
            rustix::fs::Advice::DontNeed,
        );
    }
}

/// A copy failed on its input (the bundle) or its output (the slot).
pub(crate) enum ReadOrWrite {
    /// Reading the entry failed.
    Read(std::io::Error),
    /// Writing the slot failed.
    Write(BundleError),
}
