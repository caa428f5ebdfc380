//! The update flow (G045 PL-2-2, PL-2-3): check for a newer signed bundle, then apply it —
//! verify everything that can be verified before a byte is written, stream the bundle into the
//! inactive slot while its signed hash is checked, and switch to it on trial.
//!
//! Order of checks in [`Updater::apply`]:
//! 1. the repository's metadata, through [`crate::verify::load`] (signatures, thresholds,
//!    expiry, rollback of every role, mix-and-match, size caps);
//! 2. the chosen target's signed facts: product, hardware, security version against the
//!    installed floor, and not a version that already failed its trial;
//! 3. while streaming: the target's signed length and SHA-256 ([`crate::verify::TargetReader`])
//!    and every archive entry's path, type, size and mode against the bundle manifest
//!    ([`crate::bundle::unpack_signed`]), which must agree with the signed facts;
//! 4. only then the trial switch ([`BootControl::begin_trial`]);
//! 5. before the slot first runs, and at every boot: each file's SHA-256 against the manifest
//!    ([`verify_slot`]); a trial slot that fails it is rolled back, never started.
//!
//! A refusal at any step leaves the active slot and the boot state untouched; the inactive slot
//! may hold a partial payload, which the next attempt empties first.

use std::cmp::Ordering;
use std::path::PathBuf;

use crate::bundle::{self, BundleError, BundleLimits, Expect, HealthCheck, SignedFacts};
use crate::slots::{self, BootControl, Slot, TrialRequest};
use crate::verify::{self, Source, Trust, VerifiedRepository, VerifiedTarget};

/// Chunks buffered between the download and the unpacker (the local transport reads 1 MiB
/// chunks, HTTPS delivers smaller ones): a few MiB in flight at most.
const CHANNEL_CHUNKS: usize = 4;

/// What this device is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceId {
    /// The product name bundles must name.
    pub product: String,
    /// The hardware id bundles must list.
    pub hardware: String,
}

/// A bundle the repository offers this device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// The verified target.
    pub target: VerifiedTarget,
    /// What the target's signed metadata says about the bundle.
    pub facts: SignedFacts,
}

/// The answer of [`Updater::check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// The signed versions of (root, timestamp, snapshot, targets) now trusted.
    pub metadata: [u64; 4],
    /// The version installed (committed) now.
    pub installed: String,
    /// The newest bundle for this device above the installed version, if any.
    pub offer: Option<Offer>,
    /// Newer versions for this device that are not offered, with why (failed trial before,
    /// below the security version floor, unreadable signed facts).
    pub skipped: Vec<(String, String)>,
}

/// What [`Updater::apply`] installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The target installed.
    pub target: String,
    /// Its version.
    pub version: String,
    /// Its security version.
    pub security_version: u64,
    /// The version that was committed before.
    pub from_version: String,
    /// The slot now on trial.
    pub slot: Slot,
    /// The health checks the bundle asks for.
    pub checks: Vec<HealthCheck>,
    /// Trial boots allowed.
    pub max_boots: u32,
    /// Seconds allowed for the health checks to pass.
    pub deadline_s: u64,
    /// Bytes downloaded and verified.
    pub bytes: u64,
}

/// A step of [`Updater::apply`], for the caller's audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The metadata verified; these versions are now trusted.
    MetadataVerified {
        /// (root, timestamp, snapshot, targets).
        versions: [u64; 4],
    },
    /// The download of `target` starts (its signed facts passed).
    Downloading {
        /// The target.
        target: String,
        /// Its version.
        version: String,
        /// Its signed length.
        length: u64,
    },
    /// The bundle verified and is in the inactive slot.
    Installed {
        /// Its version.
        version: String,
        /// The slot.
        slot: Slot,
    },
}

/// Why an update did not happen.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InstallError {
    /// The repository's metadata or the target's bytes were refused, or could not be read.
    #[error(transparent)]
    Verify(Box<crate::Error>),
    /// The bundle was refused (archive, manifest, signed facts).
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// The slots or boot state refused or failed.
    #[error(transparent)]
    Slots(#[from] slots::Error),
    /// Nothing newer is offered for this device.
    #[error("no update is offered: {installed} is the newest signed version for this device")]
    UpToDate {
        /// The version installed.
        installed: String,
    },
    /// The unpacking task stopped (a bug, not the data).
    #[error("the unpacking task stopped: {0}")]
    Task(String),
}

impl InstallError {
    /// Whether the repository or the bundle was refused (possibly an attack), as opposed to an
    /// operator or local failure.
    #[must_use]
    pub fn is_rejection(&self) -> bool {
        match self {
            Self::Verify(e) => e.is_rejection(),
            Self::Bundle(e) => e.is_rejection(),
            Self::Slots(_) | Self::UpToDate { .. } | Self::Task(_) => false,
        }
    }
}

impl From<crate::Error> for InstallError {
    fn from(e: crate::Error) -> Self {
        Self::Verify(Box::new(e))
    }
}

/// Checks for and applies updates from one repository.
#[derive(Debug, Clone)]
pub struct Updater {
    /// The device's trust state.
    pub trust: Trust,
    /// Where the repository is.
    pub source: Source,
    /// What this device is.
    pub device: DeviceId,
    /// Bundle limits.
    pub limits: BundleLimits,
}

/// Compares dotted versions by their numeric parts ("1.10.0" > "1.9.3"); a part that is not a
/// number compares as text after the numbers, so "1.4.0-rc1" < "1.4.0-rc2".
#[must_use]
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let parts = |s: &str| -> Vec<(u64, String)> {
        s.split(['.', '-', '+'])
            .map(|p| {
                p.parse::<u64>()
                    .map_or((u64::MAX, p.to_owned()), |n| (n, String::new()))
            })
            .collect()
    };
    parts(a).cmp(&parts(b))
}

impl Updater {
    /// Loads and verifies the metadata, then picks the newest bundle for this device above the
    /// installed version. Nothing is downloaded.
    pub async fn check(
        &self,
        slots: &dyn BootControl,
    ) -> Result<(VerifiedRepository, Checked), InstallError> {
        let state = slots.state()?;
        let repo = verify::load(&self.trust, &self.source).await?;
        let installed = state.committed.version.clone();
        let mut skipped = Vec::new();
        let mut best: Option<Offer> = None;
        for name in repo.target_names() {
            let target = repo.target(&name)?;
            let facts = match SignedFacts::from_custom(&target.custom) {
                Ok(f) => f,
                Err(e) => {
                    skipped.push((name.clone(), e.to_string()));
                    continue;
                }
            };
            // Bundles for other products or boards are simply not for this device.
            if facts.product != self.device.product
                || !facts.hardware.contains(&self.device.hardware)
                || compare_versions(&facts.version, &installed) != Ordering::Greater
            {
                continue;
            }
            if state.failed.contains(&facts.version) {
                skipped.push((
                    facts.version.clone(),
                    "failed its trial before; not retried on its own".into(),
                ));
                continue;
            }
            if facts.security_version < state.security_floor {
                skipped.push((
                    facts.version.clone(),
                    format!(
                        "security version {} is below the installed {} (anti-rollback)",
                        facts.security_version, state.security_floor
                    ),
                ));
                continue;
            }
            if best.as_ref().is_none_or(|b| {
                compare_versions(&facts.version, &b.facts.version) == Ordering::Greater
            }) {
                best = Some(Offer { target, facts });
            }
        }
        let checked = Checked {
            metadata: repo.versions(),
            installed,
            offer: best,
            skipped,
        };
        Ok((repo, checked))
    }

    /// Verifies, downloads and installs the offered bundle into the inactive slot and switches
    /// to it on trial; `on_step` hears each step as it completes.
    pub async fn apply(
        &self,
        slots: &mut dyn BootControl,
        on_step: &mut (dyn FnMut(Step) + Send),
    ) -> Result<Applied, InstallError> {
        let (repo, checked) = self.check(slots).await?;
        on_step(Step::MetadataVerified {
            versions: checked.metadata,
        });
        let Some(offer) = checked.offer else {
            return Err(InstallError::UpToDate {
                installed: checked.installed,
            });
        };
        let floor = slots.installed_security_version()?;
        // Refused here, before a byte of the bundle is read (check() already skips these; the
        // floor is read again in case it rose in between).
        offer
            .facts
            .check(&self.device.product, &self.device.hardware, floor)?;
        let dir = slots.prepare_inactive()?;
        on_step(Step::Downloading {
            target: offer.target.name.clone(),
            version: offer.facts.version.clone(),
            length: offer.target.length,
        });
        let expect = Expect {
            product: self.device.product.clone(),
            hardware: self.device.hardware.clone(),
            installed_security_version: floor,
            signed: offer.facts.clone(),
        };
        let manifest = self.stream_into(&repo, &offer.target, dir, expect).await?;
        let slot = slots.state()?.committed.slot.other();
        on_step(Step::Installed {
            version: manifest.version().to_owned(),
            slot,
        });
        let health = manifest.health();
        let trial = slots.begin_trial(&TrialRequest {
            version: manifest.version().to_owned(),
            security_version: manifest.security_version(),
            max_boots: u32::from(health.max_boots()),
            deadline_s: u64::from(health.deadline_s()),
            force: false,
        })?;
        Ok(Applied {
            target: offer.target.name,
            version: trial.version,
            security_version: trial.security_version,
            from_version: checked.installed,
            slot: trial.slot,
            checks: health.checks().to_vec(),
            max_boots: trial.max_boots,
            deadline_s: trial.deadline_s,
            bytes: offer.target.length,
        })
    }

    /// Streams `target` through its hash check into the unpacker writing `dir`. A failure of the
    /// download is reported over the unpacker's own view of the broken stream.
    async fn stream_into(
        &self,
        repo: &VerifiedRepository,
        target: &VerifiedTarget,
        dir: PathBuf,
        expect: Expect,
    ) -> Result<bundle::Manifest, InstallError> {
        let mut reader = repo.open(target).await?;
        let (tx, rx) = bundle::chunk_channel(CHANNEL_CHUNKS);
        let limits = self.limits;
        let unpacker =
            tokio::task::spawn_blocking(move || bundle::unpack_signed(rx, &dir, &expect, &limits));
        let mut download_error = None;
        loop {
            match reader.next_chunk().await {
                Ok(Some(chunk)) => {
                    if tx.send(chunk).await.is_err() {
                        // The unpacker stopped: its error says why.
                        break;
                    }
                }
                Ok(None) => {
                    tx.finish();
                    break;
                }
                Err(e) => {
                    tx.fail(e.to_string());
                    download_error = Some(e);
                    break;
                }
            }
        }
        let unpacked = unpacker
            .await
            .map_err(|e| InstallError::Task(e.to_string()))?;
        match (download_error, unpacked) {
            (Some(e), _) => Err(e.into()),
            (None, r) => Ok(r?),
        }
    }
}

/// Largest slot manifest read back (the unpacker's default cap).
const SLOT_MANIFEST_MAX: u64 = 64 * 1024;

/// The manifest a slot holds, parsed but without checking its files (for status pages; use
/// [`verify_slot`] before trusting the slot).
pub fn slot_manifest(dir: &std::path::Path) -> Result<bundle::Manifest, String> {
    let path = dir.join(bundle::MANIFEST_NAME);
    let meta = std::fs::symlink_metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.is_file() || meta.len() > SLOT_MANIFEST_MAX {
        return Err(format!(
            "{}: not a regular file of at most {SLOT_MANIFEST_MAX} bytes",
            path.display()
        ));
    }
    let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    bundle::Manifest::parse(&bytes).map_err(|e| e.to_string())
}

/// Checks an installed slot against the bundle manifest it holds: every listed file present, a
/// regular file of its size and SHA-256. Used before running a slot, so a slot torn by a power
/// cut or changed on disk is not started. Streams each file (constant memory).
pub fn verify_slot(dir: &std::path::Path) -> Result<bundle::Manifest, String> {
    use std::io::Read;
    let manifest = slot_manifest(dir)?;
    let payload = dir.join(bundle::PAYLOAD_DIR);
    let mut buf = vec![0u8; 64 * 1024];
    for f in manifest.files() {
        let path = payload.join(f.path());
        let meta = std::fs::symlink_metadata(&path).map_err(|e| format!("{}: {e}", f.path()))?;
        if !meta.is_file() || meta.len() != f.size() {
            return Err(format!(
                "{}: not a regular file of {} bytes",
                f.path(),
                f.size()
            ));
        }
        let mut file = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", f.path()))?;
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        loop {
            let n = file
                .read(&mut buf)
                .map_err(|e| format!("{}: {e}", f.path()))?;
            if n == 0 {
                break;
            }
            ctx.update(&buf[..n]);
        }
        if ctx.finish().as_ref() != f.sha256() {
            return Err(format!("{}: SHA-256 differs from the manifest", f.path()));
        }
    }
    Ok(manifest)
}

/// Reads the manifest of a bundle file (its first entry), for the vendor's tooling: the
/// target's signed custom metadata is made from it ([`signed_custom`]).
pub fn read_bundle_manifest(path: &std::path::Path) -> Result<bundle::Manifest, BundleError> {
    use std::io::Read;
    let io = |e: std::io::Error| BundleError::invalid(format!("{}: {e}", path.display()));
    let file = std::fs::File::open(path).map_err(io)?;
    let mut archive = tar::Archive::new(file);
    let mut entries = archive.entries().map_err(io)?;
    let mut first = entries
        .next()
        .ok_or_else(|| BundleError::invalid("the bundle is empty"))?
        .map_err(io)?;
    let name = first.path().map_err(io)?.to_string_lossy().into_owned();
    if name != bundle::MANIFEST_NAME {
        return Err(BundleError::invalid(format!(
            "the first entry is {name:?}, not {}",
            bundle::MANIFEST_NAME
        )));
    }
    let mut bytes = Vec::new();
    (&mut first)
        .take(SLOT_MANIFEST_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > SLOT_MANIFEST_MAX {
        return Err(BundleError::invalid("the manifest is larger than 64 KiB"));
    }
    bundle::Manifest::parse(&bytes)
}

/// The signed custom metadata of a bundle's target: what [`SignedFacts::from_custom`] reads
/// back on the device.
#[must_use]
pub fn signed_custom(
    manifest: &bundle::Manifest,
) -> std::collections::BTreeMap<String, serde_json::Value> {
    [
        ("product", serde_json::json!(manifest.product())),
        ("version", serde_json::json!(manifest.version())),
        (
            "security-version",
            serde_json::json!(manifest.security_version()),
        ),
        ("hardware", serde_json::json!(manifest.hardware())),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}
