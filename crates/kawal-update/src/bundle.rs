//! Update bundles (G045 PL-2-2, PL-2-3): the format, a streaming unpacker that refuses anything
//! unsafe, and the vendor-side builder.
//!
//! # Format
//! A bundle is a tar archive (ustar or GNU, PAX records allowed within limits), published as a
//! TUF target. Its first entry is `kawal-bundle.toml`, the manifest ([`Manifest`]): product,
//! version, security version, compatible hardware, every payload file with its size, SHA-256
//! and mode, and the trial-boot health settings. The payload follows under `payload/`: regular
//! files and folders only, each file listed in the manifest exactly once.
//!
//! # Trust
//! The TUF layer ([`crate::verify`]) checks the whole target's signed length and SHA-256, but
//! only when the stream ends. The unpacker therefore trusts nothing it reads: it checks every
//! entry against the manifest and the limits as it streams, writes only into the slot, and reads
//! its input to the very end before reporting success, so the TUF check has run by then. On any
//! error the slot holds a partial payload and the caller must discard it.
//!
//! The signed custom metadata of the target ([`SignedFacts`]) is checked before the download
//! starts (wrong product, wrong hardware, rollback), and the manifest must agree with it exactly.

mod builder;
mod channel;
mod error;
mod facts;
mod manifest;
mod path;
mod slot;

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::io::{self, Read};
use std::path::Path;
use std::rc::Rc;

pub use builder::BundleBuilder;
pub use channel::{ChunkReader, ChunkSender, Closed, chunk_channel};
pub use error::{BundleError, PathProblem};
pub use facts::SignedFacts;
pub use manifest::{
    ALLOWED_MODE, DEADLINE_S, FORMAT, FileEntry, Health, HealthCheck, MAX_BOOTS, Manifest,
};
pub use path::{MANIFEST_NAME, PAYLOAD_DIR};

use error::shown;
use path::Place;
use slot::{ReadOrWrite, SlotWriter};

/// Size and count limits of a bundle, all checked while streaming.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BundleLimits {
    /// Largest manifest accepted, in bytes.
    pub max_manifest_bytes: u64,
    /// Largest sum of payload file sizes, in bytes (checked on the manifest, before any payload).
    pub max_total_bytes: u64,
    /// Most payload entries (files and folders together).
    pub max_files: u64,
    /// Longest entry path in bytes, `payload/` included.
    pub max_path_len: usize,
    /// Most components of a path inside `payload/`.
    pub max_depth: usize,
    /// Most bytes accepted after the end of the archive (tar pads to its record size).
    pub max_trailing_bytes: u64,
}

impl Default for BundleLimits {
    fn default() -> Self {
        Self {
            max_manifest_bytes: 64 * 1024,
            max_total_bytes: 1024 * 1024 * 1024,
            max_files: 10_000,
            max_path_len: 255,
            max_depth: 16,
            max_trailing_bytes: 1024 * 1024,
        }
    }
}

/// What this device expects of an update, and what the TUF target signed about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expect {
    /// This device's product.
    pub product: String,
    /// This device's hardware id.
    pub hardware: String,
    /// The security version installed now (anti-rollback floor).
    pub installed_security_version: u64,
    /// The TUF target's signed custom metadata.
    pub signed: SignedFacts,
}

/// PAX keys that may appear: the path (checked like any path) and metadata kawal ignores.
/// Everything else (`size`, `linkpath`, sparse maps, extended attributes) is refused, so no
/// parser disagreement can hide a different file behind a header.
const PAX_ALLOWED: [&str; 8] = [
    "path", "mtime", "atime", "ctime", "uid", "gid", "uname", "gname",
];

/// Streams the bundle from `reader` into `slot`, which must be an existing, empty folder
/// prepared by the caller, and returns its manifest.
///
/// The slot ends up holding `kawal-bundle.toml` and `payload/` exactly as the bundle lists them,
/// each file with the manifest's mode, all fsynced. Memory use is constant: files are copied in
/// 64 KiB chunks and hashed while written; headers before one entry are capped.
///
/// `reader` is read to its end before `Ok` is returned (see the module documentation).
pub fn unpack(
    reader: impl Read,
    slot: &Path,
    expect: &Expect,
    limits: &BundleLimits,
) -> Result<Manifest, BundleError> {
    logged(Unpacker::new(slot, expect, limits, Contents::HashEachFile).and_then(|u| u.run(reader)))
}

/// Like [`unpack`], for a TUF target being downloaded: `reader` ends cleanly only once the
/// producer has checked the target's signed length and SHA-256 (see [`ChunkSender::finish`]),
/// so every byte written is a signed byte and `Ok` is returned only after that check.
///
/// File contents are therefore checked once, by the signed whole-bundle hash, and not hashed
/// again against the manifest here: that second hash over the same bytes would halve the
/// install rate. Every entry's path, type, size and mode is still checked as it streams, and
/// each file's SHA-256 against the manifest before the slot is ever run
/// ([`crate::install::verify_slot`], at every boot), so a signed bundle whose manifest and
/// files disagree is installed but never started.
pub fn unpack_signed(
    reader: ChunkReader,
    slot: &Path,
    expect: &Expect,
    limits: &BundleLimits,
) -> Result<Manifest, BundleError> {
    logged(
        Unpacker::new(slot, expect, limits, Contents::CoveredBySignedStream)
            .and_then(|u| u.run(reader)),
    )
}

fn logged(result: Result<Manifest, BundleError>) -> Result<Manifest, BundleError> {
    match &result {
        Ok(m) => tracing::info!(
            product = m.product(),
            version = m.version(),
            security_version = m.security_version(),
            files = m.files().len(),
            "update bundle unpacked and checked"
        ),
        Err(e) if e.is_rejection() => tracing::warn!(error = %e, "update bundle refused"),
        Err(e) => tracing::warn!(error = %e, "update bundle could not be unpacked"),
    }
    result
}

/// How the unpacker checks what is inside each file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Contents {
    /// Hash every file against the manifest: nothing else vouches for the input.
    HashEachFile,
    /// The input is a verified target stream: its signed hash covers every byte.
    CoveredBySignedStream,
}

/// What the guard around the input has seen.
#[derive(Debug, Default)]
struct Guard {
    /// Bytes the tar reader may still read while it parses headers; `None` while reading data.
    budget: Option<u64>,
    over_budget: bool,
    /// The input returned end-of-file.
    eof: bool,
    /// The input's own error (the stream failed, as opposed to a malformed archive).
    upstream: Option<io::Error>,
}

/// Wraps the input to cap header bytes, notice its end, and keep its errors apart.
struct Guarded<R> {
    inner: R,
    state: Rc<RefCell<Guard>>,
}

impl<R: Read> Read for Guarded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut st = self.state.borrow_mut();
        let buf = match st.budget {
            Some(0) if !buf.is_empty() => {
                st.over_budget = true;
                return Err(io::Error::other("header size cap reached"));
            }
            Some(left) => {
                let n = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
                &mut buf[..n]
            }
            None => buf,
        };
        match self.inner.read(buf) {
            Ok(n) => {
                if n == 0 && !buf.is_empty() {
                    st.eof = true;
                }
                if let Some(left) = st.budget.as_mut() {
                    *left = left.saturating_sub(n as u64);
                }
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                let kind = e.kind();
                st.upstream = Some(e);
                Err(io::Error::new(kind, "the update stream failed"))
            }
        }
    }
}

struct Unpacker<'a> {
    expect: &'a Expect,
    limits: &'a BundleLimits,
    contents: Contents,
    writer: SlotWriter,
    state: Rc<RefCell<Guard>>,
    /// Cap on the bytes of headers and extension records read before one entry.
    header_budget: u64,
    /// The last entry named, for errors about what follows it.
    last: String,
}

/// A payload entry's kind, once refused types are out of the way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
}

type Entries<'e, R> = tar::Entries<'e, Guarded<R>>;
type Entry<'e, R> = tar::Entry<'e, Guarded<R>>;

impl<'a> Unpacker<'a> {
    fn new(
        slot: &Path,
        expect: &'a Expect,
        limits: &'a BundleLimits,
        contents: Contents,
    ) -> Result<Self, BundleError> {
        // Refuse the wrong product, hardware or a rollback before reading a byte.
        expect.signed.check(
            &expect.product,
            &expect.hardware,
            expect.installed_security_version,
        )?;
        let writer = SlotWriter::open(slot)?;
        // A header block, a GNU long name, a long link name and a PAX record, each at most a
        // path long plus some slack, and the padding of the previous entry.
        let path_len = u64::try_from(limits.max_path_len).unwrap_or(u64::MAX);
        let header_budget = path_len.saturating_mul(3).saturating_add(8 * 1024);
        Ok(Self {
            expect,
            limits,
            contents,
            writer,
            state: Rc::default(),
            header_budget,
            last: "(start of archive)".to_owned(),
        })
    }

    fn run(mut self, reader: impl Read) -> Result<Manifest, BundleError> {
        let mut archive = tar::Archive::new(Guarded {
            inner: reader,
            state: Rc::clone(&self.state),
        });
        let manifest = {
            let mut entries = archive.entries().map_err(|e| self.read_error(e))?;
            let mut first = self
                .next(&mut entries)?
                .ok_or(BundleError::ManifestMissing)?;
            let manifest = self.manifest(&mut first)?;
            drop(first);
            self.payload(&mut entries, &manifest)?;
            manifest
        };
        self.drain(archive.into_inner())?;
        self.writer.sync_dirs()?;
        Ok(manifest)
    }

    /// The next entry, with the header cap on while tar parses its headers.
    fn next<'e, R: Read>(
        &mut self,
        entries: &mut Entries<'e, R>,
    ) -> Result<Option<Entry<'e, R>>, BundleError> {
        self.state.borrow_mut().budget = Some(self.header_budget);
        let next = entries.next();
        self.state.borrow_mut().budget = None;
        match next {
            None => Ok(None),
            Some(Ok(entry)) => Ok(Some(entry)),
            Some(Err(e)) => Err(self.read_error(e)),
        }
    }

    /// Names an error of the tar reader by its real cause.
    fn read_error(&self, e: io::Error) -> BundleError {
        let mut st = self.state.borrow_mut();
        if let Some(upstream) = st.upstream.take() {
            return BundleError::Stream(upstream);
        }
        if st.over_budget {
            return BundleError::HeadersTooLarge {
                after: self.last.clone(),
                max: self.header_budget,
            };
        }
        if st.eof || e.kind() == io::ErrorKind::UnexpectedEof {
            return BundleError::Truncated {
                at: format!("after '{}'", self.last),
            };
        }
        BundleError::Malformed {
            after: self.last.clone(),
            source: e,
        }
    }

    /// Checks an entry's path, type and PAX records; returns where it goes and what it is.
    fn classify<R: Read>(
        &mut self,
        entry: &mut Entry<'_, R>,
    ) -> Result<(Place, Kind), BundleError> {
        let raw = entry.path_bytes().into_owned();
        let name = shown(&raw);
        self.last.clone_from(&name);
        let kind = match entry.header().entry_type() {
            tar::EntryType::Regular => Kind::File,
            tar::EntryType::Directory => Kind::Dir,
            other => {
                return Err(BundleError::ForbiddenType {
                    entry: name,
                    kind: describe(other),
                });
            }
        };
        let place = path::check_entry(
            &raw,
            kind == Kind::Dir,
            self.limits.max_path_len,
            self.limits.max_depth,
        )
        .map_err(|problem| BundleError::BadPath {
            entry: name.clone(),
            problem,
        })?;
        let pax = entry.pax_extensions().map_err(|e| self.read_error(e))?;
        for ext in pax.into_iter().flatten() {
            let ext = ext.map_err(|e| BundleError::Malformed {
                after: name.clone(),
                source: e,
            })?;
            let key = ext.key_bytes();
            if !PAX_ALLOWED.iter().any(|k| k.as_bytes() == key) {
                return Err(BundleError::ForbiddenPax {
                    entry: name,
                    key: shown(key),
                });
            }
            // A GNU long name wins over a PAX path in tar's reader, other readers differ:
            // refuse both at once unless they agree.
            if key == b"path" && ext.value_bytes() != raw.as_slice() {
                return Err(BundleError::ForbiddenPax {
                    entry: name,
                    key: "path (disagrees with the GNU long name)".to_owned(),
                });
            }
        }
        Ok((place, kind))
    }

    /// Reads and checks the first entry, the manifest, and writes it into the slot.
    fn manifest<R: Read>(&mut self, entry: &mut Entry<'_, R>) -> Result<Manifest, BundleError> {
        let (place, kind) = self.classify(entry)?;
        if place != Place::Manifest || kind != Kind::File {
            return Err(BundleError::ManifestNotFirst {
                entry: self.last.clone(),
            });
        }
        let size = entry.size();
        let max = self.limits.max_manifest_bytes;
        if size > max {
            return Err(BundleError::ManifestTooLarge { size, max });
        }
        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        entry
            .take(size)
            .read_to_end(&mut bytes)
            .map_err(|e| self.read_error(e))?;
        if bytes.len() as u64 != size {
            return Err(BundleError::Truncated {
                at: format!("inside '{MANIFEST_NAME}'"),
            });
        }
        let manifest = Manifest::parse(&bytes)?;
        let files = manifest.files().len() as u64;
        if files > self.limits.max_files {
            return Err(BundleError::OverLimit {
                what: "the number of payload files",
                value: files,
                max: self.limits.max_files,
            });
        }
        if manifest.total_size() > self.limits.max_total_bytes {
            return Err(BundleError::OverLimit {
                what: "the total payload size",
                value: manifest.total_size(),
                max: self.limits.max_total_bytes,
            });
        }
        self.expect.signed.agree(&manifest)?;
        self.writer
            .write_file(MANIFEST_NAME, &mut bytes.as_slice(), size, 0o644, false)
            .map_err(|e| match e {
                ReadOrWrite::Read(e) => BundleError::io(MANIFEST_NAME, e),
                ReadOrWrite::Write(e) => e,
            })?;
        Ok(manifest)
    }

    /// Streams every payload entry into the slot, then checks nothing listed is missing.
    fn payload<R: Read>(
        &mut self,
        entries: &mut Entries<'_, R>,
        manifest: &Manifest,
    ) -> Result<(), BundleError> {
        // Every payload path seen ("" is `payload/` itself), and which of them are files.
        let mut seen = BTreeSet::new();
        let mut files = BTreeSet::new();
        let mut count = 0u64;
        while let Some(mut entry) = self.next(entries)? {
            let (place, kind) = self.classify(&mut entry)?;
            let name = self.last.clone();
            count += 1;
            if count > self.limits.max_files {
                return Err(BundleError::OverLimit {
                    what: "the number of payload entries",
                    value: count,
                    max: self.limits.max_files,
                });
            }
            let rel = match place {
                Place::Manifest => return Err(BundleError::Duplicate { entry: name }),
                Place::PayloadRoot if kind == Kind::File => {
                    return Err(BundleError::Undeclared { entry: name });
                }
                Place::PayloadRoot => String::new(),
                Place::Payload(rel) => rel,
            };
            if !seen.insert(rel.clone()) {
                return Err(BundleError::Duplicate { entry: name });
            }
            if let Some(file) = ancestors(&rel).find(|a| files.contains(*a)) {
                return Err(BundleError::InsideFile {
                    entry: name,
                    file: format!("{PAYLOAD_DIR}/{file}"),
                });
            }
            let slot_path = if rel.is_empty() {
                PAYLOAD_DIR.to_owned()
            } else {
                format!("{PAYLOAD_DIR}/{rel}")
            };
            match kind {
                Kind::Dir => {
                    if entry.size() != 0 {
                        return Err(BundleError::FolderWithData {
                            entry: name,
                            size: entry.size(),
                        });
                    }
                    self.writer.ensure_dir(&slot_path)?;
                }
                Kind::File => {
                    self.file(&mut entry, manifest, &rel, &slot_path)?;
                    files.insert(rel);
                }
            }
        }
        // tar also stops at a clean end of input; a real archive ends with a zero block.
        if self.state.borrow().eof {
            return Err(BundleError::Truncated {
                at: format!("after '{}', no end-of-archive marker", self.last),
            });
        }
        if let Some(missing) = manifest.files().find(|f| !files.contains(f.path())) {
            return Err(BundleError::Missing {
                path: missing.path().to_owned(),
            });
        }
        Ok(())
    }

    /// Streams one payload file, checking its size (and hash, unless covered) against the
    /// manifest.
    fn file<R: Read>(
        &mut self,
        entry: &mut Entry<'_, R>,
        manifest: &Manifest,
        rel: &str,
        slot_path: &str,
    ) -> Result<(), BundleError> {
        let name = self.last.clone();
        let listed = manifest.file(rel).ok_or_else(|| BundleError::Undeclared {
            entry: name.clone(),
        })?;
        if entry.size() != listed.size() {
            return Err(BundleError::SizeMismatch {
                entry: name,
                archive: entry.size(),
                manifest: listed.size(),
            });
        }
        let parent = slot_path
            .rsplit_once('/')
            .map_or(PAYLOAD_DIR, |(parent, _)| parent);
        self.writer.ensure_dir(parent)?;
        let copied = self
            .writer
            .write_file(
                slot_path,
                entry,
                listed.size(),
                listed.mode(),
                self.contents == Contents::HashEachFile,
            )
            .map_err(|e| match e {
                ReadOrWrite::Read(e) => self.read_error(e),
                ReadOrWrite::Write(e) => e,
            })?;
        if copied.bytes != listed.size() {
            return Err(BundleError::Truncated {
                at: format!("inside '{name}'"),
            });
        }
        if copied
            .sha256
            .is_some_and(|sha256| sha256.as_ref() != listed.sha256())
        {
            return Err(BundleError::HashMismatch { entry: name });
        }
        Ok(())
    }

    /// Reads the input to its end (tar stops at the first zero block), so a reader that
    /// verifies at its end has done so; refuses more than the trailing limit.
    fn drain<R: Read>(&self, mut rest: Guarded<R>) -> Result<(), BundleError> {
        let mut buf = [0u8; 4096];
        let mut total = 0u64;
        loop {
            match rest.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => {
                    total += n as u64;
                    if total > self.limits.max_trailing_bytes {
                        return Err(BundleError::TrailingData {
                            max: self.limits.max_trailing_bytes,
                        });
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.read_error(e)),
            }
        }
    }
}

/// The folders above `rel`, nearest last: `a/b/c` gives `a`, `a/b`.
fn ancestors(rel: &str) -> impl Iterator<Item = &str> {
    rel.match_indices('/').filter_map(|(i, _)| rel.get(..i))
}

fn describe(kind: tar::EntryType) -> String {
    match kind {
        tar::EntryType::Link => "hard link".to_owned(),
        tar::EntryType::Symlink => "symbolic link".to_owned(),
        tar::EntryType::Char => "character device".to_owned(),
        tar::EntryType::Block => "block device".to_owned(),
        tar::EntryType::Fifo => "FIFO".to_owned(),
        tar::EntryType::Continuous => "contiguous file".to_owned(),
        tar::EntryType::GNULongName => "stray GNU long-name header".to_owned(),
        tar::EntryType::GNULongLink => "stray GNU long-link header".to_owned(),
        tar::EntryType::XHeader => "stray PAX header".to_owned(),
        tar::EntryType::XGlobalHeader => "PAX global header".to_owned(),
        tar::EntryType::GNUSparse => "sparse file".to_owned(),
        other => format!("entry of type {:#04x}", other.as_byte()),
    }
}
