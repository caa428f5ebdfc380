//! The vendor side: writes a bundle that [`super::unpack`] accepts, computing every size and
//! hash itself. Used by the tests and by `kawal update repo add`.
//!
//! Output is reproducible: entries are sorted, owners are 0 and times are 0, so the same inputs
//! give the same bytes (and the same TUF target hash).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use aws_lc_rs::digest;

use super::error::BundleError;
use super::manifest::{ALLOWED_MODE, Health, Manifest};
use super::path::{MANIFEST_NAME, PAYLOAD_DIR};
use super::slot::CHUNK;

#[derive(Debug, Clone)]
enum Source {
    Memory(Vec<u8>),
    Disk(PathBuf),
}

#[derive(Debug, Clone)]
struct Planned {
    source: Source,
    mode: u32,
}

/// Builds a bundle: the manifest first, then the payload, written to any [`Write`].
#[derive(Debug, Clone)]
pub struct BundleBuilder {
    product: String,
    version: String,
    security_version: u64,
    hardware: Vec<String>,
    health: Health,
    files: BTreeMap<String, Planned>,
    dirs: BTreeSet<String>,
}

impl BundleBuilder {
    /// A bundle of `product` at `version` and `security_version`, for the `hardware` ids, with
    /// the default health settings and no files yet.
    pub fn new(
        product: impl Into<String>,
        version: impl Into<String>,
        security_version: u64,
        hardware: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            product: product.into(),
            version: version.into(),
            security_version,
            hardware: hardware.into_iter().map(Into::into).collect(),
            health: Health::default(),
            files: BTreeMap::new(),
            dirs: BTreeSet::new(),
        }
    }

    /// Sets the trial-boot health settings.
    pub fn health(&mut self, health: Health) -> &mut Self {
        self.health = health;
        self
    }

    /// Adds a file held in memory at `path` (inside `payload/`) with permission bits `mode`.
    /// Replaces an earlier file at the same path. Paths and modes are checked by
    /// [`BundleBuilder::write`].
    pub fn file(
        &mut self,
        path: impl Into<String>,
        mode: u32,
        contents: impl Into<Vec<u8>>,
    ) -> &mut Self {
        self.files.insert(
            path.into(),
            Planned {
                source: Source::Memory(contents.into()),
                mode,
            },
        );
        self
    }

    /// Adds an (empty) folder entry at `path` inside `payload/`.
    pub fn dir(&mut self, path: impl Into<String>) -> &mut Self {
        self.dirs.insert(path.into());
        self
    }

    /// Adds every file and folder under `folder`, at the same relative paths. Permission bits
    /// are taken from the files, limited to [`ALLOWED_MODE`]. Symlinks and special files are
    /// refused rather than followed or skipped.
    pub fn add_folder(&mut self, folder: &Path) -> Result<&mut Self, BundleError> {
        self.walk(folder, "")?;
        Ok(self)
    }

    fn walk(&mut self, dir: &Path, rel: &str) -> Result<(), BundleError> {
        let mut children = Vec::new();
        for child in fs::read_dir(dir).map_err(|e| BundleError::io(dir, e))? {
            let child = child.map_err(|e| BundleError::io(dir, e))?;
            children.push(child.path());
        }
        children.sort();
        for path in children {
            let name =
                path.file_name()
                    .and_then(|n| n.to_str())
                    .ok_or(BundleError::BuildSource {
                        path: path.clone(),
                        reason: "the name is not UTF-8",
                    })?;
            let child_rel = if rel.is_empty() {
                name.to_owned()
            } else {
                format!("{rel}/{name}")
            };
            let meta = fs::symlink_metadata(&path).map_err(|e| BundleError::io(&path, e))?;
            if meta.is_dir() {
                self.dirs.insert(child_rel.clone());
                self.walk(&path, &child_rel)?;
            } else if meta.is_file() {
                self.files.insert(
                    child_rel,
                    Planned {
                        source: Source::Disk(path),
                        mode: meta.permissions().mode() & ALLOWED_MODE,
                    },
                );
            } else {
                return Err(BundleError::BuildSource {
                    path,
                    reason: "not a regular file or folder (symlinks are not followed)",
                });
            }
        }
        Ok(())
    }

    /// The manifest this builder would write (reads every file on disk once, to hash it).
    pub fn manifest(&self) -> Result<Manifest, BundleError> {
        let mut files = Vec::with_capacity(self.files.len());
        for (path, planned) in &self.files {
            let (size, sha) = match &planned.source {
                Source::Memory(bytes) => sha256(&mut bytes.as_slice()),
                Source::Disk(p) => sha256(&mut open_regular(p)?),
            }
            .map_err(|e| BundleError::io(path.as_str(), e))?;
            files.push((path.clone(), size, sha, planned.mode));
        }
        Manifest::from_parts(
            self.product.clone(),
            self.version.clone(),
            self.security_version,
            self.hardware.clone(),
            files,
            self.health.clone(),
        )
    }

    /// Writes the bundle to `out` and returns its manifest. Files on disk are read twice (to
    /// hash, then to copy); one that changed in between is refused.
    pub fn write<W: Write>(&self, out: W) -> Result<Manifest, BundleError> {
        let manifest = self.manifest()?;
        let text = manifest.to_toml()?;
        let mut tar = tar::Builder::new(out);
        append(
            &mut tar,
            MANIFEST_NAME,
            0o644,
            text.len() as u64,
            text.as_bytes(),
        )?;
        // Folders first, in order, so a tar listing reads naturally; files follow.
        for dir in &self.dirs {
            let mut h = header(tar::EntryType::Directory, 0o755, 0);
            tar.append_data(&mut h, format!("{PAYLOAD_DIR}/{dir}/"), io::empty())
                .map_err(BundleError::Output)?;
        }
        for entry in manifest.files() {
            let name = format!("{PAYLOAD_DIR}/{}", entry.path());
            match self.files.get(entry.path()).map(|p| &p.source) {
                Some(Source::Memory(bytes)) => {
                    append(
                        &mut tar,
                        &name,
                        entry.mode(),
                        entry.size(),
                        bytes.as_slice(),
                    )?;
                }
                Some(Source::Disk(path)) => {
                    let mut hashing = Hashing {
                        inner: open_regular(path)?.take(entry.size()),
                        ctx: digest::Context::new(&digest::SHA256),
                        read: 0,
                    };
                    append(&mut tar, &name, entry.mode(), entry.size(), &mut hashing)?;
                    let changed = hashing.read != entry.size()
                        || hashing.ctx.finish().as_ref() != entry.sha256();
                    if changed {
                        return Err(BundleError::BuildSource {
                            path: path.clone(),
                            reason: "the file changed while the bundle was built",
                        });
                    }
                }
                None => {
                    return Err(BundleError::BuildSource {
                        path: PathBuf::from(entry.path()),
                        reason: "listed but not planned (a bug)",
                    });
                }
            }
        }
        tar.into_inner()
            .and_then(|mut w| w.flush())
            .map_err(BundleError::Output)?;
        Ok(manifest)
    }
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

fn append<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    mode: u32,
    size: u64,
    data: impl Read,
) -> Result<(), BundleError> {
    let mut h = header(tar::EntryType::Regular, mode, size);
    tar.append_data(&mut h, name, data)
        .map_err(BundleError::Output)
}

fn open_regular(path: &Path) -> Result<File, BundleError> {
    let file = File::open(path).map_err(|e| BundleError::io(path, e))?;
    let meta = file.metadata().map_err(|e| BundleError::io(path, e))?;
    if !meta.is_file() {
        return Err(BundleError::BuildSource {
            path: path.to_path_buf(),
            reason: "not a regular file",
        });
    }
    Ok(file)
}

/// The size and SHA-256 of everything `data` yields, read in chunks.
fn sha256(data: &mut dyn Read) -> io::Result<(u64, [u8; 32])> {
    let mut ctx = digest::Context::new(&digest::SHA256);
    let mut buf = vec![0; CHUNK];
    let mut size = 0u64;
    loop {
        match data.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                ctx.update(&buf[..n]);
                size += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let sha = ctx
        .finish()
        .as_ref()
        .try_into()
        .map_err(|_| io::Error::other("SHA-256 is not 32 bytes"))?;
    Ok((size, sha))
}

/// Hashes what passes through, to catch a file that changed between the two passes.
struct Hashing<R> {
    inner: R,
    ctx: digest::Context,
    read: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.ctx.update(&buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}
