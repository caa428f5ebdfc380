//! Verification of a vendor's TUF repository (G045 PL-2-3).
//!
//! # Trust state
//! The root installed at provisioning ([`Trust::trusted_root`]) is the anchor. Trusted metadata
//! (the newest root, timestamp, snapshot and targets, plus the latest known time) lives in the
//! datastore folder ([`Trust::datastore`]). That folder must sit on the device's own data
//! partition, outside both update slots and outside any folder a bundle is unpacked into, and be
//! writable only by the kawal user: the update payload can then never overwrite it.
//!
//! # Nothing persisted before every check passed
//! The TUF client writes into its datastore while it walks the roles, so a refusal part-way would
//! leave newer timestamp metadata trusted next to a rejected snapshot. kawal therefore runs the
//! client on a *staging* copy of the datastore (a sibling folder, same file system) and moves the
//! staged files into the trusted folder, each with an atomic rename, only after the whole load has
//! succeeded. A refusal drops the staging copy; the trusted folder is untouched.
//!
//! # Transports
//! A [`Source`] is either a local folder (`file://`: a USB stick or an unpacked download) or an
//! HTTPS server with the vendor's pinned roots ([`crate::transport`]: time-outs against slow
//! retrieval, size caps against endless data). Verification does not depend on the transport:
//! the same checks run on bytes from either.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use futures_core::Stream;
use tough::schema::{Root, Signed};
use tough::{Bytes, ExpirationEnforcement, RepositoryLoader, TargetName};
use url::Url;

use crate::error::{Error, Result};
use crate::transport::{HttpsSettings, HttpsTransport};

/// The files of the trusted datastore that a successful load may replace.
const DATASTORE_FILES: [&str; 5] = [
    "root.json",
    "timestamp.json",
    "snapshot.json",
    "targets.json",
    "latest_known_time.json",
];

/// Size caps for metadata files (endless-data defence). Set explicitly rather than relying on the
/// client's defaults; a kawal repository has a handful of targets, so these are generous.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetadataLimits {
    /// Largest `N.root.json` accepted, in bytes.
    pub max_root_size: u64,
    /// Largest `timestamp.json` accepted, in bytes.
    pub max_timestamp_size: u64,
    /// Largest `snapshot.json` accepted, in bytes.
    pub max_snapshot_size: u64,
    /// Largest `targets.json` accepted when the snapshot does not sign its length, in bytes.
    pub max_targets_size: u64,
    /// Most root versions walked in one update (each one is a key rotation by the vendor).
    pub max_root_updates: u64,
}

impl Default for MetadataLimits {
    fn default() -> Self {
        Self {
            max_root_size: 64 * 1024,
            max_timestamp_size: 16 * 1024,
            max_snapshot_size: 64 * 1024,
            max_targets_size: 1024 * 1024,
            max_root_updates: 32,
        }
    }
}

impl From<MetadataLimits> for tough::Limits {
    fn from(l: MetadataLimits) -> Self {
        Self {
            max_root_size: l.max_root_size,
            max_targets_size: l.max_targets_size,
            max_timestamp_size: l.max_timestamp_size,
            max_snapshot_size: l.max_snapshot_size,
            max_root_updates: l.max_root_updates,
        }
    }
}

/// The device's trust state: where the anchors and the trusted metadata live.
#[derive(Debug, Clone)]
pub struct Trust {
    /// The root metadata installed at provisioning (`root.json` signed by the vendor).
    pub trusted_root: PathBuf,
    /// The folder of trusted metadata; see the module documentation for where it must live.
    pub datastore: PathBuf,
    /// Metadata size caps.
    pub limits: MetadataLimits,
}

/// Where a repository is read from.
#[derive(Debug, Clone)]
pub struct Source {
    metadata: Url,
    targets: Url,
    transport: Fetch,
}

/// How a [`Source`] fetches its files.
#[derive(Debug, Clone)]
enum Fetch {
    Local,
    Https(HttpsTransport),
}

impl Source {
    /// A repository in a local folder holding `metadata/` and `targets/`.
    pub fn local_dir(dir: &Path) -> Result<Self> {
        let dir = fs::canonicalize(dir).map_err(|e| Error::io(dir, e))?;
        let url = |sub: &str| {
            Url::from_directory_path(dir.join(sub))
                .map_err(|()| Error::BadLocation { path: dir.clone() })
        };
        Ok(Self {
            metadata: url("metadata")?,
            targets: url("targets")?,
            transport: Fetch::Local,
        })
    }

    /// A repository served over HTTPS: metadata under `<base>/metadata/`, targets under
    /// `<base>/targets/`. `base` must be `https://`; the server must present a certificate under
    /// one of `settings.pinned_roots`.
    pub fn https(base: Url, settings: &HttpsSettings) -> Result<Self> {
        if base.scheme() != "https" || base.cannot_be_a_base() {
            return Err(Error::InsecureUrl {
                url: base.to_string(),
            });
        }
        let mut base = base;
        // `Url::join` replaces the last segment unless the base ends with a slash.
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let join = |sub: &str| {
            base.join(sub).map_err(|_| Error::InsecureUrl {
                url: base.to_string(),
            })
        };
        Ok(Self {
            metadata: join("metadata/")?,
            targets: join("targets/")?,
            transport: Fetch::Https(HttpsTransport::new(settings)?),
        })
    }
}

/// A target whose description was verified through the whole chain of trust.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedTarget {
    /// Its name in the targets metadata.
    pub name: String,
    /// The signed length in bytes.
    pub length: u64,
    /// The signed SHA-256.
    pub sha256: [u8; 32],
    /// The signed custom metadata (product, hardware, version, …: read by the bundle layer).
    pub custom: BTreeMap<String, serde_json::Value>,
}

/// A repository whose metadata passed every check and is now the trusted state.
#[derive(Debug)]
pub struct VerifiedRepository {
    repo: tough::Repository,
    /// The client keeps writing its latest known time while targets are read, so its (already
    /// committed) staging copy lives as long as the repository.
    _staging: Staging,
}

/// Loads and verifies the repository at `source` against the device's `trust`, then makes the
/// new metadata the trusted state. On any refusal the trusted state is left exactly as it was.
pub async fn load(trust: &Trust, source: &Source) -> Result<VerifiedRepository> {
    let root = trusted_root_bytes(trust)?;
    let staging = Staging::create(&trust.datastore)?;
    let loader = RepositoryLoader::new(&root, source.metadata.clone(), source.targets.clone());
    let loader = match &source.transport {
        Fetch::Local => loader.transport(crate::local::LocalTransport),
        Fetch::Https(https) => loader.transport(https.clone()),
    };
    let repo = loader
        .limits(trust.limits.into())
        .expiration_enforcement(ExpirationEnforcement::Safe)
        .datastore(staging.path())
        .load()
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "update metadata refused");
            Error::from(e)
        })?;
    staging.commit(&trust.datastore)?;
    tracing::info!(
        root = repo.root().signed.version.get(),
        timestamp = repo.timestamp().signed.version.get(),
        snapshot = repo.snapshot().signed.version.get(),
        targets = repo.targets().signed.version.get(),
        "update metadata verified and trusted"
    );
    Ok(VerifiedRepository {
        repo,
        _staging: staging,
    })
}

impl VerifiedRepository {
    /// The verified description of target `name`.
    pub fn target(&self, name: &str) -> Result<VerifiedTarget> {
        let unknown = || Error::UnknownTarget {
            name: name.to_owned(),
        };
        let tname = TargetName::new(name).map_err(|_| unknown())?;
        let t = self
            .repo
            .targets()
            .signed
            .find_target(&tname, false)
            .map_err(|_| unknown())?;
        let sha256: [u8; 32] =
            t.hashes
                .sha256
                .as_ref()
                .try_into()
                .map_err(|_| Error::RejectedHash {
                    what: format!("signed SHA-256 of {name}"),
                })?;
        Ok(VerifiedTarget {
            name: name.to_owned(),
            length: t.length,
            sha256,
            custom: t.custom.clone().into_iter().collect(),
        })
    }

    /// The names of every target the top-level targets role signs, sorted (delegated roles are
    /// not used by kawal repositories).
    #[must_use]
    pub fn target_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .repo
            .targets()
            .signed
            .targets
            .keys()
            .map(|n| n.raw().to_owned())
            .collect();
        names.sort();
        names
    }

    /// Signed versions of (root, timestamp, snapshot, targets), for status and audit events.
    #[must_use]
    pub fn versions(&self) -> [u64; 4] {
        [
            self.repo.root().signed.version.get(),
            self.repo.timestamp().signed.version.get(),
            self.repo.snapshot().signed.version.get(),
            self.repo.targets().signed.version.get(),
        ]
    }

    /// Opens `target` for streaming. The reader checks the signed length and SHA-256 itself; see
    /// [`TargetReader::next_chunk`] for the contract.
    pub async fn open(&self, target: &VerifiedTarget) -> Result<TargetReader> {
        let tname = TargetName::new(target.name.as_str()).map_err(|_| Error::UnknownTarget {
            name: target.name.clone(),
        })?;
        let stream = self
            .repo
            .read_target(&tname)
            .await?
            .ok_or_else(|| Error::UnknownTarget {
                name: target.name.clone(),
            })?;
        Ok(TargetReader {
            stream: Box::pin(stream),
            target: target.clone(),
            read: 0,
            done: false,
        })
    }
}

type ByteStream = Pin<Box<dyn Stream<Item = tough::error::Result<Bytes>> + Send + Sync>>;

/// Streams a target while enforcing its signed length and hash. The SHA-256 is computed once,
/// by tough's reader, which fails the stream's end on a mismatch (mapped to
/// [`Error::RejectedHash`]); hashing every byte a second time here would halve the install's
/// speed for no extra check. This reader adds the length rules and the "verified only at the
/// end" contract.
pub struct TargetReader {
    stream: ByteStream,
    target: VerifiedTarget,
    read: u64,
    done: bool,
}

impl std::fmt::Debug for TargetReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TargetReader")
            .field("target", &self.target.name)
            .field("read", &self.read)
            .finish_non_exhaustive()
    }
}

impl TargetReader {
    /// The next chunk, or `None` once the whole target was read *and* verified.
    ///
    /// Chunks are unverified until `Ok(None)` comes back: a consumer writes them only into a
    /// place that is discarded on error (the inactive slot). The stream stops with an error as
    /// soon as more than the signed length arrives, so an endless target costs at most that
    /// many bytes.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        if self.done {
            return Ok(None);
        }
        let next = std::future::poll_fn(|cx| self.stream.as_mut().poll_next(cx)).await;
        match next {
            Some(Ok(chunk)) => {
                self.read = self.read.saturating_add(chunk.len() as u64);
                if self.read > self.target.length {
                    self.done = true;
                    return Err(self.too_long());
                }
                Ok(Some(chunk))
            }
            Some(Err(e)) => {
                self.done = true;
                Err(match Error::from(e) {
                    Error::RejectedTooLarge { .. } => self.too_long(),
                    other => other,
                })
            }
            None => {
                self.done = true;
                self.finish().map(|()| None)
            }
        }
    }

    /// Reads the whole target into `out`, returning the number of bytes, verified.
    pub async fn copy_to(mut self, out: &mut impl std::io::Write) -> Result<u64> {
        while let Some(chunk) = self.next_chunk().await? {
            out.write_all(&chunk)
                .map_err(|e| Error::io(format!("<sink for {}>", self.target.name), e))?;
        }
        Ok(self.read)
    }

    fn too_long(&self) -> Error {
        Error::RejectedTooLarge {
            what: format!("target {}", self.target.name),
            max_size: self.target.length,
        }
    }

    fn finish(&mut self) -> Result<()> {
        if self.read != self.target.length {
            return Err(Error::RejectedTruncated {
                name: self.target.name.clone(),
                read: self.read,
                signed: self.target.length,
            });
        }
        Ok(())
    }
}

/// The root to start from: the newest one already trusted in the datastore if there is one
/// (so a root rotation survives a restart), else the one installed at provisioning.
fn trusted_root_bytes(trust: &Trust) -> Result<Vec<u8>> {
    let provisioned = fs::read(&trust.trusted_root).map_err(|e| Error::TrustedRoot {
        path: trust.trusted_root.clone(),
        source: Box::new(e),
    })?;
    let version = |bytes: &[u8]| {
        serde_json::from_slice::<Signed<Root>>(bytes).map(|r| r.signed.version.get())
    };
    let provisioned_version = version(&provisioned).map_err(|e| Error::TrustedRoot {
        path: trust.trusted_root.clone(),
        source: Box::new(e),
    })?;
    let stored_path = trust.datastore.join("root.json");
    match fs::read(&stored_path) {
        Ok(stored) => match version(&stored) {
            // The client verifies the stored root's own signatures again before using it.
            Ok(v) if v >= provisioned_version => Ok(stored),
            _ => Ok(provisioned),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(provisioned),
        Err(e) => Err(Error::io(stored_path, e)),
    }
}

/// A staging copy of the datastore, removed on drop (after a commit copied it to the trusted one).
#[derive(Debug)]
struct Staging {
    dir: tempfile::TempDir,
}

impl Staging {
    fn create(datastore: &Path) -> Result<Self> {
        fs::create_dir_all(datastore).map_err(|e| Error::io(datastore, e))?;
        let parent = datastore.parent().unwrap_or(Path::new("."));
        let dir = tempfile::Builder::new()
            .prefix(".kawal-update-staging-")
            .tempdir_in(parent)
            .map_err(|e| Error::io(parent, e))?;
        for name in DATASTORE_FILES {
            let from = datastore.join(name);
            match fs::copy(&from, dir.path().join(name)) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(from, e)),
            }
        }
        Ok(Self { dir })
    }

    fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// Copies every staged file into the trusted folder: write a temporary file next to the
    /// trusted one, fsync it, rename it over (atomic, same file system), fsync the folder. Files
    /// the client removed (on a key rotation) are removed.
    fn commit(&self, datastore: &Path) -> Result<()> {
        for name in DATASTORE_FILES {
            let staged = self.dir.path().join(name);
            let trusted = datastore.join(name);
            if staged.exists() {
                let tmp = datastore.join(format!(".{name}.new"));
                fs::copy(&staged, &tmp)
                    .and_then(|_| fs::File::open(&tmp))
                    .and_then(|f| f.sync_all())
                    .map_err(|e| Error::io(&tmp, e))?;
                fs::rename(&tmp, &trusted).map_err(|e| Error::io(&trusted, e))?;
            } else {
                match fs::remove_file(&trusted) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io(trusted, e)),
                }
            }
        }
        fs::File::open(datastore)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io(datastore, e))
    }
}
