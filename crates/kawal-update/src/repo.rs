//! Vendor tooling: create, fill, sign and publish a kawal update repository
//! (`kawal update repo init|add|sign|publish`; G045 PL-2-3).
//!
//! # Layout
//! ```text
//! <dir>/kawal-repo.toml   settings of this tool (key folder, expiries); never published
//! <dir>/keys/             private keys, one PKCS#8 PEM file per key, folder 0700, files 0600
//! <dir>/metadata/         N.root.json, timestamp.json, N.snapshot.json, N.targets.json
//! <dir>/targets/          <sha256>.<name> (consistent snapshots)
//! ```
//! `metadata/` and `targets/` are the publishable tree; [`publish`] copies only those. The key
//! folder may live elsewhere ([`InitOptions::keys_dir`]), e.g. on removable media.
//!
//! # Keys
//! Ed25519 (aws-lc-rs), `threshold` keys per role. Key bytes are held in zeroizing buffers and
//! never appear in logs or errors. Key files that group or others may read are refused.
//!
//! # Versions
//! Every [`add`] and [`sign`] bumps the targets, snapshot and timestamp versions by one and
//! refreshes their expiries, so a device that trusted the previous state accepts the new one
//! and a replay of the old one is a rollback.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::num::NonZeroU64;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::Ed25519KeyPair;
use serde::{Deserialize, Serialize};
use tough::editor::RepositoryEditor;
use tough::editor::signed::{PathExists, SignedRole};
use tough::key_source::KeySource;
use tough::schema::{
    KeyHolder, RoleKeys, RoleType, Root, Signed, Snapshot, Target, Targets, Timestamp,
};
use tough::sign::Sign;
use tough::{ExpirationEnforcement, FilesystemTransport, RepositoryLoader, TargetName};
use url::Url;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// The tool's settings file inside the repository folder (never published).
pub const CONFIG_FILE: &str = "kawal-repo.toml";
const PEM_TAG: &str = "PRIVATE KEY";
const ROLES: [RoleType; 4] = [
    RoleType::Root,
    RoleType::Targets,
    RoleType::Snapshot,
    RoleType::Timestamp,
];

/// How long each role's metadata stays valid after signing, in days.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Expiries {
    /// Root metadata (default 365).
    pub root_days: u32,
    /// Targets metadata (default 90).
    pub targets_days: u32,
    /// Snapshot metadata (default 7).
    pub snapshot_days: u32,
    /// Timestamp metadata (default 1): devices see a frozen repository within a day.
    pub timestamp_days: u32,
}

impl Default for Expiries {
    fn default() -> Self {
        Self {
            root_days: 365,
            targets_days: 90,
            snapshot_days: 7,
            timestamp_days: 1,
        }
    }
}

/// Signatures required per role; as many keys as the threshold are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Thresholds {
    /// Root (default 1).
    pub root: NonZeroU64,
    /// Targets (default 1).
    pub targets: NonZeroU64,
    /// Snapshot (default 1).
    pub snapshot: NonZeroU64,
    /// Timestamp (default 1).
    pub timestamp: NonZeroU64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            root: NonZeroU64::MIN,
            targets: NonZeroU64::MIN,
            snapshot: NonZeroU64::MIN,
            timestamp: NonZeroU64::MIN,
        }
    }
}

impl Thresholds {
    fn of(&self, role: RoleType) -> NonZeroU64 {
        match role {
            RoleType::Root => self.root,
            RoleType::Snapshot => self.snapshot,
            RoleType::Timestamp => self.timestamp,
            _ => self.targets,
        }
    }
}

/// Options of [`init`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InitOptions {
    /// Where the private keys go (default `<dir>/keys`). Must not be under `metadata/` or
    /// `targets/`.
    pub keys_dir: Option<PathBuf>,
    /// Signature thresholds.
    pub thresholds: Thresholds,
    /// Metadata expiries.
    pub expiries: Expiries,
}

/// The settings [`init`] stores in [`CONFIG_FILE`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RepoConfig {
    /// The key folder.
    pub keys_dir: PathBuf,
    /// Metadata expiries used by every signing.
    pub expiries: Expiries,
    /// The thresholds of the root made by `init` (and kept by `rotate_root`).
    pub thresholds: Thresholds,
}

/// What a signing produced: the versions of (root, timestamp, snapshot, targets).
pub type Versions = [u64; 4];

/// Makes a new repository in `dir`: keys, a signed `1.root.json`, and version 1 of targets
/// (empty), snapshot and timestamp. Refuses a folder that already holds a repository or keys.
pub async fn init(dir: &Path, options: &InitOptions) -> Result<Versions> {
    let keys_dir = options.keys_dir.clone().unwrap_or_else(|| dir.join("keys"));
    if dir.join(CONFIG_FILE).exists() || dir.join("metadata").exists() {
        return Err(state(dir, "already holds a repository"));
    }
    for published in ["metadata", "targets"] {
        if keys_dir.starts_with(dir.join(published)) {
            return Err(state(&keys_dir, "the key folder would be published"));
        }
    }
    for sub in ["metadata", "targets"] {
        let path = dir.join(sub);
        fs::create_dir_all(&path).map_err(|e| Error::io(&path, e))?;
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&keys_dir)
        .map_err(|e| Error::io(&keys_dir, e))?;

    let mut keys = Vec::new();
    for role in ROLES {
        for n in 1..=options.thresholds.of(role).get() {
            let path = keys_dir.join(format!("{role}-{n}.pem"));
            keys.push((role, VendorKey::generate(&path)?));
        }
    }
    let config = RepoConfig {
        keys_dir,
        expiries: options.expiries,
        thresholds: options.thresholds,
    };
    let text = toml::to_string(&config).map_err(|e| state(dir, &e.to_string()))?;
    let config_path = dir.join(CONFIG_FILE);
    fs::write(&config_path, text).map_err(|e| Error::io(&config_path, e))?;

    let mut root = Root {
        spec_version: "1.0.0".to_owned(),
        consistent_snapshot: true,
        version: NonZeroU64::MIN,
        expires: in_days(options.expiries.root_days)?,
        keys: Default::default(),
        roles: Default::default(),
        _extra: Default::default(),
    };
    for role in ROLES {
        let role_keys: Vec<&VendorKey> = keys
            .iter()
            .filter(|(r, _)| *r == role)
            .map(|(_, k)| k)
            .collect();
        set_role(&mut root, role, &role_keys, options.thresholds.of(role))?;
    }
    let sources: Vec<Box<dyn KeySource>> = keys.into_iter().map(|(_, k)| k.boxed()).collect();
    write_root(dir, root, &sources).await?;
    resign(dir, &config, &sources, None).await
}

/// Adds `bundle_file` as a target (named by its file name) with the signed `custom` metadata
/// (the bundle layer reads `product`, `version`, `security-version` and `hardware`), copies it
/// into `targets/` and re-signs targets, snapshot and timestamp with bumped versions.
pub async fn add(
    dir: &Path,
    bundle_file: &Path,
    custom: BTreeMap<String, serde_json::Value>,
) -> Result<Versions> {
    let config = read_config(dir)?;
    let keys = load_keys(&config.keys_dir)?;
    let name = bundle_file
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| TargetName::new(n).ok())
        .ok_or_else(|| state(bundle_file, "the file name is not a valid target name"))?;
    let mut target = Target::from_path(bundle_file)
        .await
        .map_err(|e| edit("hash the target for", e))?;
    target.custom.extend(custom);
    resign(dir, &config, &keys, Some((name, target, bundle_file))).await
}

/// Re-signs targets, snapshot and timestamp with bumped versions and fresh expiries (run it
/// before the timestamp expires, e.g. daily).
pub async fn sign(dir: &Path) -> Result<Versions> {
    let config = read_config(dir)?;
    let keys = load_keys(&config.keys_dir)?;
    resign(dir, &config, &keys, None).await
}

/// Checks that the repository in `dir` verifies (from `1.root.json`, with expiry enforced) and
/// copies the publishable tree (`metadata/`, `targets/`; never keys or settings) into `out`.
pub async fn publish(dir: &Path, out: &Path) -> Result<Versions> {
    let versions = self_check(dir).await?;
    for sub in ["metadata", "targets"] {
        let from = dir.join(sub);
        let to = out.join(sub);
        fs::create_dir_all(&to).map_err(|e| Error::io(&to, e))?;
        let entries = fs::read_dir(&from).map_err(|e| Error::io(&from, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&from, e))?;
            let kind = entry.file_type().map_err(|e| Error::io(entry.path(), e))?;
            if !kind.is_file() {
                continue;
            }
            let dest = to.join(entry.file_name());
            copy_atomic(&entry.path(), &dest)?;
        }
    }
    tracing::info!(?out, ?versions, "update repository published");
    Ok(versions)
}

/// Replaces the keys of `roles` (root included if listed): writes root version N+1 signed by
/// the old and the new root keys, moves the old key files to `keys/retired/`, and re-signs the
/// other roles with the new keys.
pub async fn rotate_root(dir: &Path, roles: &[RoleType]) -> Result<Versions> {
    let config = read_config(dir)?;
    let old_keys = load_keys(&config.keys_dir)?;
    let (_, root_path) = latest_root(dir)?;
    let bytes = fs::read(&root_path).map_err(|e| Error::io(&root_path, e))?;
    let old: Signed<Root> = serde_json::from_slice(&bytes)
        .map_err(|e| state(&root_path, &format!("unparsable root: {e}")))?;
    let mut root = old.signed.clone();
    root.version = root
        .version
        .checked_add(1)
        .ok_or_else(|| state(&root_path, "root version overflow"))?;
    root.expires = in_days(config.expiries.root_days)?;

    let retired = config.keys_dir.join("retired");
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&retired)
        .map_err(|e| Error::io(&retired, e))?;
    let mut new_keys = Vec::new();
    for &role in roles {
        let threshold = root
            .roles
            .get(&role)
            .map_or(config.thresholds.of(role), |r| r.threshold);
        let prefix = format!("{role}-");
        for path in key_files(&config.keys_dir)? {
            let is_role = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix));
            if is_role {
                let name = path.file_name().map(PathBuf::from).unwrap_or_default();
                let dest = retired.join(format!("v{}-{}", old.signed.version, name.display()));
                fs::rename(&path, &dest).map_err(|e| Error::io(&path, e))?;
            }
        }
        let mut role_keys = Vec::new();
        for n in 1..=threshold.get() {
            role_keys.push(VendorKey::generate(
                &config.keys_dir.join(format!("{role}-{n}.pem")),
            )?);
        }
        set_role(
            &mut root,
            role,
            &role_keys.iter().collect::<Vec<_>>(),
            threshold,
        )?;
        new_keys.extend(role_keys);
    }
    // Drop keys no role names any more.
    let named: std::collections::HashSet<_> =
        root.roles.values().flat_map(|r| r.keyids.iter()).collect();
    root.keys.retain(|id, _| named.contains(id));

    // The new root must carry a threshold of the old root keys and of its own.
    let mut sources: Vec<Box<dyn KeySource>> = old_keys;
    sources.extend(new_keys.into_iter().map(VendorKey::boxed));
    write_root(dir, root, &sources).await?;
    resign(dir, &config, &sources, None).await
}

/// Marks `role` in `root` as signed by `keys` with `threshold`.
fn set_role(
    root: &mut Root,
    role: RoleType,
    keys: &[&VendorKey],
    threshold: NonZeroU64,
) -> Result<()> {
    let mut keyids = Vec::new();
    for key in keys {
        let tuf_key = key.public.clone();
        let id = tuf_key
            .key_id()
            .map_err(|e| state(&key.path, &format!("no key id: {e}")))?;
        root.keys.insert(id.clone(), tuf_key);
        keyids.push(id);
    }
    root.roles.insert(
        role,
        RoleKeys {
            keyids,
            threshold,
            _extra: Default::default(),
        },
    );
    Ok(())
}

/// Signs `root` with every key in `keys` that it or the previous root names, and writes it.
async fn write_root(dir: &Path, root: Root, keys: &[Box<dyn KeySource>]) -> Result<()> {
    let version = root.version.get();
    let holder = KeyHolder::Root(root.clone());
    let signed = SignedRole::new(root, &holder, keys, &SystemRandom::new())
        .await
        .map_err(|e| edit("sign the root of", e))?;
    let mut signed_root = signed.signed().clone();
    if version > 1 {
        // Root N+1 must also verify under root N: add the old root keys' signatures over the same
        // bytes. tough signs with every given key that the new root lists; keys only the old
        // root lists are added here.
        let (_, prev_path) = latest_root(dir)?;
        let prev: Signed<Root> = read_json(&prev_path)?;
        let canonical = tough::schema::Role::canonical_form(&signed_root.signed)
            .map_err(|e| edit("encode the root of", e))?;
        let rng = SystemRandom::new();
        for source in keys {
            let signer = source
                .as_sign()
                .await
                .map_err(|e| state(dir, &format!("unusable key: {e}")))?;
            let key = signer.tuf_key();
            let Ok(id) = key.key_id() else { continue };
            let in_prev = prev
                .signed
                .roles
                .get(&RoleType::Root)
                .is_some_and(|r| r.keyids.contains(&id));
            let already = signed_root.signatures.iter().any(|s| s.keyid == id);
            if in_prev && !already {
                let sig = signer
                    .sign(&canonical, &rng)
                    .await
                    .map_err(|e| state(dir, &format!("signing failed: {e}")))?;
                signed_root.signatures.push(tough::schema::Signature {
                    keyid: id,
                    sig: sig.into(),
                });
            }
        }
    }
    let bytes = serde_json::to_vec_pretty(&signed_root).map_err(|e| state(dir, &e.to_string()))?;
    let path = dir.join("metadata").join(format!("{version}.root.json"));
    write_new(&path, &bytes)
}

/// Signs targets (with `add` added), snapshot and timestamp, each one version above the current
/// one, and writes them (and the new target) into the repository.
async fn resign(
    dir: &Path,
    config: &RepoConfig,
    keys: &[Box<dyn KeySource>],
    add: Option<(TargetName, Target, &Path)>,
) -> Result<Versions> {
    let metadata = dir.join("metadata");
    let (root_version, root_path) = latest_root(dir)?;
    let current = current_versions(dir)?;
    let mut editor = RepositoryEditor::new(&root_path)
        .await
        .map_err(|e| edit("open", e))?;
    if let Some(targets) = &current.targets {
        editor
            .targets(targets.clone())
            .map_err(|e| edit("read the targets of", e))?;
    }
    let next = |v: Option<u64>| {
        v.unwrap_or(0)
            .checked_add(1)
            .and_then(NonZeroU64::new)
            .ok_or_else(|| state(dir, "version overflow"))
    };
    let targets_version = next(current.targets.as_ref().map(|t| t.signed.version.get()))?;
    let snapshot_version = next(current.snapshot)?;
    let timestamp_version = next(current.timestamp)?;
    let ex = config.expiries;
    editor
        .targets_version(targets_version)
        .map_err(|e| edit("set the targets version of", e))?;
    editor
        .targets_expires(in_days(ex.targets_days)?)
        .map_err(|e| edit("set the targets expiry of", e))?;
    editor
        .snapshot_version(snapshot_version)
        .snapshot_expires(in_days(ex.snapshot_days)?)
        .timestamp_version(timestamp_version)
        .timestamp_expires(in_days(ex.timestamp_days)?);
    if let Some((name, target, _)) = &add {
        editor
            .add_target(name.clone(), target.clone())
            .map_err(|e| edit("add a target to", e))?;
    }
    let signed = editor.sign(keys).await.map_err(|e| edit("sign", e))?;
    if let Some((name, _, file)) = &add {
        let targets_dir = dir.join("targets");
        signed
            .copy_target(file, &targets_dir, PathExists::Skip, Some(name))
            .await
            .map_err(|e| edit("copy the target into", e))?;
    }
    signed
        .write(&metadata)
        .await
        .map_err(|e| edit("write", e))?;
    let versions = [
        root_version,
        timestamp_version.get(),
        snapshot_version.get(),
        targets_version.get(),
    ];
    tracing::info!(?dir, ?versions, "update repository signed");
    Ok(versions)
}

/// The vendor's own current metadata (read from its folder, not verified: it is checked again
/// in [`publish`]).
struct Current {
    targets: Option<Signed<Targets>>,
    snapshot: Option<u64>,
    timestamp: Option<u64>,
}

fn current_versions(dir: &Path) -> Result<Current> {
    let metadata = dir.join("metadata");
    let ts_path = metadata.join("timestamp.json");
    if !ts_path.exists() {
        return Ok(Current {
            targets: None,
            snapshot: None,
            timestamp: None,
        });
    }
    let timestamp: Signed<Timestamp> = read_json(&ts_path)?;
    let snapshot_version = timestamp
        .signed
        .meta
        .get("snapshot.json")
        .map(|m| m.version.get())
        .ok_or_else(|| state(&ts_path, "names no snapshot"))?;
    let snap_path = metadata.join(format!("{snapshot_version}.snapshot.json"));
    let snapshot: Signed<Snapshot> = read_json(&snap_path)?;
    let targets_version = snapshot
        .signed
        .meta
        .get("targets.json")
        .map(|m| m.version.get())
        .ok_or_else(|| state(&snap_path, "names no targets"))?;
    let targets: Signed<Targets> =
        read_json(&metadata.join(format!("{targets_version}.targets.json")))?;
    Ok(Current {
        targets: Some(targets),
        snapshot: Some(snapshot.signed.version.get()),
        timestamp: Some(timestamp.signed.version.get()),
    })
}

/// Loads the repository like a device provisioned with `1.root.json` would, expiry enforced.
async fn self_check(dir: &Path) -> Result<Versions> {
    let root_path = dir.join("metadata").join("1.root.json");
    let root = fs::read(&root_path).map_err(|e| Error::io(&root_path, e))?;
    let url = |sub: &str| {
        let path = fs::canonicalize(dir.join(sub)).map_err(|e| Error::io(dir.join(sub), e))?;
        Url::from_directory_path(&path).map_err(|()| Error::BadLocation { path })
    };
    let datastore = tempfile::tempdir().map_err(|e| Error::io(dir, e))?;
    let repo = RepositoryLoader::new(&root, url("metadata")?, url("targets")?)
        .transport(FilesystemTransport)
        .expiration_enforcement(ExpirationEnforcement::Safe)
        .datastore(datastore.path())
        .load()
        .await
        .map_err(Error::from)?;
    Ok([
        repo.root().signed.version.get(),
        repo.timestamp().signed.version.get(),
        repo.snapshot().signed.version.get(),
        repo.targets().signed.version.get(),
    ])
}

/// The highest `N.root.json` in `metadata/`.
fn latest_root(dir: &Path) -> Result<(u64, PathBuf)> {
    let metadata = dir.join("metadata");
    let entries = fs::read_dir(&metadata).map_err(|e| Error::io(&metadata, e))?;
    let mut best = None;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(&metadata, e))?;
        let name = entry.file_name();
        let version = name
            .to_str()
            .and_then(|n| n.strip_suffix(".root.json"))
            .and_then(|v| v.parse::<u64>().ok());
        if let Some(v) = version
            && best.as_ref().is_none_or(|(b, _)| v > *b)
        {
            best = Some((v, entry.path()));
        }
    }
    best.ok_or_else(|| state(dir, "has no N.root.json in metadata/"))
}

fn read_config(dir: &Path) -> Result<RepoConfig> {
    let path = dir.join(CONFIG_FILE);
    let text = fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    toml::from_str(&text).map_err(|e| state(&path, &e.to_string()))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| state(path, &format!("unparsable: {e}")))
}

fn key_files(keys_dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = fs::read_dir(keys_dir).map_err(|e| Error::io(keys_dir, e))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| Error::io(keys_dir, e))?.path();
        if path.extension().is_some_and(|x| x == "pem") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Every key in the key folder (tough signs each role with the keys the root names for it).
fn load_keys(keys_dir: &Path) -> Result<Vec<Box<dyn KeySource>>> {
    let files = key_files(keys_dir)?;
    if files.is_empty() {
        return Err(state(keys_dir, "holds no key files"));
    }
    files
        .iter()
        .map(|p| VendorKey::load(p).map(VendorKey::boxed))
        .collect()
}

fn in_days(days: u32) -> Result<jiff::Timestamp> {
    jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_hours(24 * i64::from(days)))
        .map_err(|e| state(Path::new(CONFIG_FILE), &format!("expiry out of range: {e}")))
}

fn state(path: &Path, problem: &str) -> Error {
    Error::RepoState {
        path: path.to_path_buf(),
        problem: problem.to_owned(),
    }
}

fn edit(action: &'static str, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::RepoEdit {
        action,
        source: Box::new(e),
    }
}

/// Writes `bytes` to a new file (refusing to replace one), then syncs it.
fn write_new(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io(path, e))
}

/// Copies `from` over `to` through a temporary file and a rename, so a web server never serves
/// half a file.
fn copy_atomic(from: &Path, to: &Path) -> Result<()> {
    let name = to.file_name().map(PathBuf::from).unwrap_or_default();
    let tmp = to.with_file_name(format!(".{}.new", name.display()));
    fs::copy(from, &tmp).map_err(|e| Error::io(&tmp, e))?;
    fs::rename(&tmp, to).map_err(|e| Error::io(to, e))
}

/// An Ed25519 private key of the vendor, loaded from or saved to a PKCS#8 PEM file.
struct VendorKey {
    path: PathBuf,
    pkcs8: Zeroizing<Vec<u8>>,
    public: tough::schema::key::Key,
}

impl std::fmt::Debug for VendorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VendorKey")
            .field("path", &self.path)
            .field("pkcs8", &"[REDACTED]")
            .finish()
    }
}

impl VendorKey {
    /// Makes a key and writes it to `path` (a new file, mode 0600).
    fn generate(path: &Path) -> Result<Self> {
        let doc =
            Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| Error::KeyFile {
                path: path.to_path_buf(),
                problem: "key generation failed".to_owned(),
            })?;
        let pkcs8 = Zeroizing::new(doc.as_ref().to_vec());
        drop(doc);
        let key = Self::from_pkcs8(path, pkcs8)?;
        let pem = pem::Pem::new(PEM_TAG, key.pkcs8.to_vec());
        let text = Zeroizing::new(pem::encode(&pem));
        let _wiped = Zeroizing::new(pem.into_contents());
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| Error::io(path, e))?;
        Ok(key)
    }

    /// Reads a key file, refusing one that group or others may read.
    fn load(path: &Path) -> Result<Self> {
        let bad = |problem: &str| Error::KeyFile {
            path: path.to_path_buf(),
            problem: problem.to_owned(),
        };
        let meta = fs::metadata(path).map_err(|e| Error::io(path, e))?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(bad("group or others may access it; chmod 600"));
        }
        let text = Zeroizing::new(fs::read(path).map_err(|e| Error::io(path, e))?);
        let pem = pem::parse(text.as_slice()).map_err(|_| bad("not a PEM file"))?;
        if pem.tag() != PEM_TAG {
            return Err(bad("not a PKCS#8 private key"));
        }
        Self::from_pkcs8(path, Zeroizing::new(pem.into_contents()))
    }

    fn from_pkcs8(path: &Path, pkcs8: Zeroizing<Vec<u8>>) -> Result<Self> {
        let pair = Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|_| Error::KeyFile {
            path: path.to_path_buf(),
            problem: "not an Ed25519 PKCS#8 key".to_owned(),
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            public: pair.tuf_key(),
            pkcs8,
        })
    }

    fn boxed(self) -> Box<dyn KeySource> {
        Box::new(self)
    }
}

#[tough::async_trait]
impl KeySource for VendorKey {
    async fn as_sign(
        &self,
    ) -> std::result::Result<Box<dyn Sign>, Box<dyn std::error::Error + Send + Sync + 'static>>
    {
        let pair = Ed25519KeyPair::from_pkcs8(&self.pkcs8)
            .map_err(|_| format!("key file {} is not an Ed25519 key", self.path.display()))?;
        Ok(Box::new(pair))
    }

    async fn write(
        &self,
        _value: &str,
        _key_id_hex: &str,
    ) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        // Keys are written once, by `init` or `rotate_root`; tough never rewrites them.
        Err("kawal vendor keys are not written through tough".into())
    }
}
