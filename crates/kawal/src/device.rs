//! One device's data folder: its public facts, the sealed root, the store and the audit log.
//!
//! Layout of `--data-dir`:
//! - `device.json`: public facts (UID and its source, dev or not, how the root is sealed).
//! - `root.sealed`: the root secret, sealed (mode 0600). The UID is the seal's associated data,
//!   so editing the UID in `device.json` makes the device refuse to start.
//! - `store.redb`: the encrypted store; `audit/`: the log; `pki/`: public certificates.
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kawal_audit::{Anchor, AnchorStore, AuditLog, AuditOptions, EntryHash, TrustedKeys};
use kawal_crypto::keys::{AuditSigning, KeyHierarchy, SigningKey};
use kawal_crypto::password::Argon2Params;
use kawal_crypto::root::{KekInputs, RootSecret};
use kawal_crypto::secret::SecretString;
use kawal_platform::SysRoot;
use kawal_store::{Sharing, Store, Table};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::{CliError, Context, Exit, Result};

/// Entries between anchor saves for one-shot commands (they also save it when they close).
pub const ANCHOR_EVERY: u64 = 1000;

/// Tables the binary keeps in the store.
pub mod tables {
    /// Accounts: ordinary and privileged ones in two tables (see `kawal_auth::accounts`).
    pub use kawal_auth::accounts::{ACCOUNTS, PRIVILEGED_ACCOUNTS};
    use kawal_store::Table;
    /// Private keys of the device identity and the dev CA.
    pub const IDENTITY: Table = Table::data("identity");
    /// Retired audit-signing public keys, by version, so old checkpoints still verify.
    pub const AUDIT_KEYS: Table = Table::data("audit-keys");
    /// The audit log's anchor (newest checkpoint).
    pub const AUDIT_ANCHOR: Table = Table::data("audit-anchor");
    /// Health records: the last self-test.
    pub const HEALTH: Table = Table::data("health");
}

/// Paths inside a data folder.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The folder.
    pub dir: PathBuf,
}

impl Layout {
    /// The layout of `dir`.
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
        }
    }
    /// `device.json`.
    pub fn device_json(&self) -> PathBuf {
        self.dir.join("device.json")
    }
    /// `root.sealed`.
    pub fn root_sealed(&self) -> PathBuf {
        self.dir.join("root.sealed")
    }
    /// `store.redb`.
    pub fn store(&self) -> PathBuf {
        self.dir.join("store.redb")
    }
    /// `pki/`.
    pub fn pki(&self) -> PathBuf {
        self.dir.join("pki")
    }
    /// `reset-receipt.json`, left by a secure reset.
    pub fn reset_receipt(&self) -> PathBuf {
        self.dir.join("reset-receipt.json")
    }
    /// `daemon.lock`: held by a running daemon for its whole life.
    pub fn daemon_lock(&self) -> PathBuf {
        self.dir.join("daemon.lock")
    }
    /// Whether the folder holds a provisioned device.
    pub fn is_provisioned(&self) -> bool {
        self.device_json().exists() || self.root_sealed().exists()
    }
}

/// Public facts of a provisioned device (`device.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct DeviceInfo {
    /// The device UID (AU-3-1).
    pub uid: String,
    /// Where the UID came from.
    pub uid_source: kawal_platform::uid::UidSource,
    /// When it was provisioned (RFC 3339).
    pub provisioned_at: String,
    /// Provisioned with `--dev` (dev CA, not for production).
    pub dev: bool,
    /// The kawal version that provisioned it.
    pub provisioned_by: String,
    /// Whether the key-encryption key includes a passphrase.
    pub passphrase: bool,
    /// The machine facts the seal is bound to.
    pub binding_sources: Vec<String>,
    /// Argon2id cost of the passphrase stretch.
    pub kek_argon2: Argon2Params,
}

impl DeviceInfo {
    /// Facts of a folder whose device.json is gone (only `reset` uses it).
    pub fn placeholder() -> Self {
        Self {
            uid: "unknown".into(),
            uid_source: kawal_platform::uid::UidSource::Factory,
            provisioned_at: String::new(),
            dev: false,
            provisioned_by: String::new(),
            passphrase: false,
            binding_sources: Vec::new(),
            kek_argon2: Argon2Params::OWASP,
        }
    }
}

/// Writes a file atomically (temp, fsync, rename, fsync folder) with `mode`.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .or_exit(Exit::Io, &format!("cannot write {}", tmp.display()))?;
    f.write_all(bytes)
        .or_exit(Exit::Io, &format!("cannot write {}", tmp.display()))?;
    f.sync_all().or_exit(Exit::Io, "fsync")?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode)).or_exit(Exit::Io, "chmod")?;
    fs::rename(&tmp, path).or_exit(Exit::Io, &format!("cannot write {}", path.display()))?;
    if let Some(parent) = path.parent() {
        File::open(parent)
            .and_then(|d| d.sync_all())
            .or_exit(Exit::Io, "fsync folder")?;
    }
    Ok(())
}

/// Where the passphrase comes from: a file, or the `KAWAL_PASSPHRASE` environment variable.
pub fn read_passphrase(file: Option<&Path>) -> Result<Option<SecretString>> {
    if let Some(path) = file {
        crate::config::check_permissions(path, "passphrase file", true)?;
        let bytes = Zeroizing::new(fs::read(path).or_exit(
            Exit::NoInput,
            &format!("cannot read passphrase file {}", path.display()),
        )?);
        let s = SecretString::from_utf8(&bytes)
            .ok_or_else(|| CliError::new(Exit::DataErr, "passphrase file is not UTF-8"))?;
        if s.expose().is_empty() {
            return Err(CliError::new(Exit::DataErr, "passphrase file is empty"));
        }
        return Ok(Some(s));
    }
    match std::env::var("KAWAL_PASSPHRASE") {
        Ok(v) if !v.is_empty() => Ok(Some(SecretString::new(v))),
        _ => Ok(None),
    }
}

/// Reads `device.json`.
pub fn read_info(layout: &Layout) -> Result<DeviceInfo> {
    if !layout.device_json().exists() {
        return Err(CliError::new(
            Exit::NoInput,
            format!(
                "{} is not a provisioned kawal device (no device.json); run `kawal init`",
                layout.dir.display()
            ),
        ));
    }
    let text =
        fs::read_to_string(layout.device_json()).or_exit(Exit::Io, "cannot read device.json")?;
    serde_json::from_str(&text).or_exit(Exit::DataErr, "device.json is corrupt")
}

/// Unseals the root secret of a provisioned device.
pub fn unseal(
    layout: &Layout,
    info: &DeviceInfo,
    passphrase: Option<&SecretString>,
) -> Result<KeyHierarchy> {
    let path = layout.root_sealed();
    crate::config::check_permissions(&path, "sealed root secret", true)?;
    let blob =
        fs::read(&path).or_exit(Exit::NoInput, &format!("cannot read {}", path.display()))?;
    if info.passphrase && passphrase.is_none() {
        return Err(CliError::new(
            Exit::NoPerm,
            "this device's root secret is sealed with a passphrase: give --passphrase-file or KAWAL_PASSPHRASE",
        ));
    }
    let (binding, _) = kawal_platform::machine_binding(&SysRoot::host());
    let kek = KekInputs {
        machine_binding: &binding,
        passphrase,
        argon2: info.kek_argon2,
    };
    let root = RootSecret::unseal(&blob, &kek, info.uid.as_bytes()).map_err(|e| {
        CliError::new(
            Exit::DataErr,
            format!(
                "cannot unseal the root secret in {}: {e}. Wrong passphrase, another machine, an edited device.json, or a damaged file; nothing was changed",
                path.display()
            ),
        )
    })?;
    Ok(KeyHierarchy::new(root))
}

/// The audit signer: the audit-signing purpose key (it signs checkpoints as it is).
pub type AuditSigner = SigningKey<AuditSigning>;

/// The audit anchor, kept sealed in the store.
pub struct StoreAnchor(pub Arc<Store>);

#[derive(Serialize, Deserialize)]
struct AnchorRecord {
    seq: u64,
    head: String,
    sig: String,
}

impl AnchorStore for StoreAnchor {
    fn load(&self) -> kawal_audit::Result<Option<Anchor>> {
        let bad = |what: &str| kawal_audit::Error::Anchor(what.to_owned().into());
        let Some(raw) = self
            .0
            .get(tables::AUDIT_ANCHOR, "anchor")
            .map_err(|e| bad(&e.to_string()))?
        else {
            return Ok(None);
        };
        let r: AnchorRecord =
            serde_json::from_slice(&raw).map_err(|_| bad("anchor record corrupt"))?;
        let head = EntryHash::from_hex(&r.head).ok_or_else(|| bad("anchor head"))?;
        let sig: [u8; 64] = hex::decode(&r.sig)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| bad("anchor signature"))?;
        Ok(Some(Anchor {
            seq: r.seq,
            head,
            sig,
        }))
    }

    fn save(&self, a: &Anchor) -> kawal_audit::Result<()> {
        let r = AnchorRecord {
            seq: a.seq,
            head: a.head.to_hex(),
            sig: hex::encode(a.sig),
        };
        let bytes = serde_json::to_vec(&r).map_err(|e| kawal_audit::Error::Anchor(Box::new(e)))?;
        self.0
            .put(tables::AUDIT_ANCHOR, "anchor", &bytes)
            .map_err(|e| kawal_audit::Error::Anchor(Box::new(e)))
    }
}

/// An opened device: facts, keys, store.
pub struct Device {
    /// Its folder.
    pub layout: Layout,
    /// Its public facts.
    pub info: DeviceInfo,
    /// Its store.
    pub store: Arc<Store>,
}

impl Device {
    /// Opens a provisioned device: reads its facts, unseals, opens the store.
    pub fn open(dir: &Path, passphrase: Option<&SecretString>) -> Result<Self> {
        let layout = Layout::new(dir);
        let info = read_info(&layout)?;
        let keys = Arc::new(unseal(&layout, &info, passphrase)?);
        let store = Store::open(&layout.store(), keys, Sharing::MultiProcess)
            .map_err(|e| CliError::new(Exit::DataErr, format!("cannot open the store: {e}")))?;
        Ok(Self {
            layout,
            info,
            store: Arc::new(store),
        })
    }

    /// The current audit signer.
    pub fn audit_signer(&self) -> Result<AuditSigner> {
        let kv = self
            .store
            .key_version::<AuditSigning>()
            .or_exit(Exit::DataErr, "key-ring")?;
        self.store
            .keys()
            .signing::<AuditSigning>(&kv)
            .or_exit(Exit::Failure, "audit key")
    }

    /// Public keys that may have signed this device's checkpoints: current and retired.
    pub fn trusted_audit_keys(&self) -> Result<TrustedKeys> {
        let signer = self.audit_signer()?;
        let mut keys = TrustedKeys::new().with(signer.version(), signer.public_key());
        for (version, pk) in self
            .store
            .list(tables::AUDIT_KEYS)
            .or_exit(Exit::DataErr, "retired audit keys")?
        {
            let v: u32 = version
                .parse()
                .map_err(|_| CliError::new(Exit::DataErr, "retired audit key record"))?;
            let pk: [u8; 32] = pk[..]
                .try_into()
                .map_err(|_| CliError::new(Exit::DataErr, "retired audit key record"))?;
            keys = keys.with(v, pk);
        }
        Ok(keys)
    }

    /// Verifies the whole audit log against the sealed anchor and this device's keys. The outer
    /// error is a failure to read the evidence; the inner one says why the log does not verify:
    /// a bad entry, checkpoints without an anchor (deleted or rolled back), or entries after the
    /// last signed checkpoint (never left by kawal, which signs every batch).
    pub fn verify_log(&self) -> Result<std::result::Result<kawal_audit::VerifyReport, String>> {
        let anchor = StoreAnchor(self.store.clone())
            .load()
            .or_exit(Exit::DataErr, "audit anchor")?;
        let keys = self.trusted_audit_keys()?;
        Ok(match kawal_audit::verify(&self.layout.dir, &self.info.uid, &keys, anchor.as_ref()) {
            Err(e) => Err(e.to_string()),
            Ok(r) if r.checkpoints > 0 && !r.anchor_checked => Err(
                "it has signed checkpoints but the store holds no anchor (deleted or rolled back)".into(),
            ),
            Ok(r) if r.unsigned_tail > 0 => Err(format!(
                "{} entries after the last signed checkpoint (seq {}) are not signed by this device",
                r.unsigned_tail,
                r.last_checkpoint_seq.unwrap_or(0)
            )),
            Ok(r) => Ok(r),
        })
    }

    /// Opens the audit log for appending.
    pub fn audit_log(&self, checkpoint_every: u64) -> Result<AuditLog> {
        self.audit_log_with(checkpoint_every, Vec::new())
    }

    /// Opens the audit log for appending, with `sinks` told of every durable batch (the log
    /// forwarder's waker).
    pub fn audit_log_with(
        &self,
        checkpoint_every: u64,
        sinks: Vec<Box<dyn kawal_audit::Sink>>,
    ) -> Result<AuditLog> {
        let options = AuditOptions {
            checkpoint_every,
            sinks,
            ..AuditOptions::default()
        };
        AuditLog::open(
            &self.layout.dir,
            &self.info.uid,
            Arc::new(self.audit_signer()?),
            Arc::new(StoreAnchor(self.store.clone())),
            Arc::new(kawal_platform::clock::KernelClock::new()),
            options,
        )
        .map_err(|e| CliError::new(Exit::DataErr, format!("audit log refused to open: {e}")))
    }

    /// Reads a table record as JSON.
    pub fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        table: Table,
        key: &str,
    ) -> Result<Option<T>> {
        match self.store.get(table, key).or_exit(Exit::DataErr, "store")? {
            Some(v) => Ok(Some(
                serde_json::from_slice(&v).or_exit(Exit::DataErr, "store record")?,
            )),
            None => Ok(None),
        }
    }
}

/// Takes the daemon lock: one daemon per data folder; commands that must not run beside a
/// daemon take it too. The lock is released when the returned file is dropped.
pub fn lock_daemon(layout: &Layout, purpose: &str) -> Result<File> {
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(layout.daemon_lock())
        .or_exit(Exit::Io, "daemon.lock")?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(fs::TryLockError::WouldBlock) => Err(CliError::new(
            Exit::NoPerm,
            format!(
                "a kawal daemon is running on {}: stop it before {purpose}",
                layout.dir.display()
            ),
        )),
        Err(fs::TryLockError::Error(e)) => {
            Err(CliError::new(Exit::Io, format!("daemon.lock: {e}")))
        }
    }
}

/// Appends one event, turning a failure into an error that stops the action it records.
pub fn record(log: &AuditLog, event: kawal_audit::Event) -> Result<u64> {
    log.append(event)
        .map_err(|e| CliError::new(Exit::Io, format!("audit log write failed: {e}")))
}
