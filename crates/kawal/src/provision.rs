//! `kawal init`: a device's identity, keys, certificate and one-time admin password.
use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kawal_audit::{Event, Outcome, WallTime};
use kawal_auth::accounts::{Directory, DirectoryConfig};
use kawal_crypto::keys::KeyHierarchy;
use kawal_crypto::password::{self, Argon2Params};
use kawal_crypto::root::{KekInputs, RootSecret};
use kawal_crypto::secret::SecretString;
use kawal_platform::SysRoot;
use kawal_platform::uid::{DeviceUid, UidSource};
use kawal_store::{Sharing, Store};

use crate::device::{self, Device, DeviceInfo, Layout, tables};
use crate::error::{CliError, Context, Exit, Result};

/// Bits of entropy in the one-time admin password (AU-1-4 asks for unique; we ask ≥ 80 bits).
pub const ADMIN_PASSWORD_BITS: u32 = 80;

/// What `init` needs.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// The data folder.
    pub data_dir: PathBuf,
    /// Make a dev CA and a device certificate on the spot.
    pub dev: bool,
    /// A factory-assigned UID, instead of deriving one.
    pub uid: Option<String>,
    /// UID namespace.
    pub vendor_namespace: String,
    /// Write the CSR here.
    pub csr_out: Option<PathBuf>,
    /// Write the one-time password here (mode 0600) instead of stdout.
    pub label_out: Option<PathBuf>,
    /// Passphrase for the key-encryption key.
    pub passphrase: Option<SecretString>,
    /// Argon2id cost for the admin password and the passphrase.
    pub argon2: Argon2Params,
}

/// What `init` made.
pub struct Provisioned {
    /// The device's UID.
    pub uid: String,
    /// The one-time admin password, when printed to stdout (None when written to a label).
    pub admin_password: Option<SecretString>,
    /// Where the CSR went, if made.
    pub csr: Option<PathBuf>,
}

fn now() -> String {
    WallTime::now().to_string()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Provisions a new device in `opts.data_dir`. Refuses a folder that holds one already.
pub fn init(opts: &InitOptions) -> Result<Provisioned> {
    let layout = Layout::new(&opts.data_dir);
    if layout.is_provisioned() {
        return Err(CliError::new(
            Exit::NoPerm,
            format!(
                "{} already holds a provisioned device; its UID and keys never change (only `kawal reset --secure` clears them)",
                opts.data_dir.display()
            ),
        ));
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&opts.data_dir)
        .or_exit(
            Exit::Io,
            &format!("cannot create {}", opts.data_dir.display()),
        )?;
    let _ = fs::remove_file(layout.reset_receipt());
    // A store without a sealed root is unreadable by anyone: the leftover of an interrupted init.
    let _ = fs::remove_file(layout.store());
    let sys = SysRoot::host();
    let (uid, source) = match &opts.uid {
        Some(u) => (
            DeviceUid::parse(u).or_exit(Exit::Config, "--uid")?,
            UidSource::Factory,
        ),
        None => kawal_platform::uid::derive(&sys, &opts.vendor_namespace).or_exit(
            Exit::NoInput,
            "cannot derive a device UID from hardware; give --uid",
        )?,
    };
    let uid = uid.as_str().to_owned();

    // Root secret, sealed to this machine (and the passphrase) with the UID bound in.
    let root = RootSecret::generate().or_exit(Exit::Failure, "root secret")?;
    let (binding, sources) = kawal_platform::machine_binding(&sys);
    let kek = KekInputs {
        machine_binding: &binding,
        passphrase: opts.passphrase.as_ref(),
        argon2: opts.argon2,
    };
    let sealed = root
        .seal(&kek, uid.as_bytes())
        .or_exit(Exit::Failure, "sealing the root secret")?;
    let info = DeviceInfo {
        uid: uid.clone(),
        uid_source: source,
        provisioned_at: now(),
        dev: opts.dev,
        provisioned_by: crate::PRODUCT.into(),
        passphrase: opts.passphrase.is_some(),
        binding_sources: sources.iter().map(|s| (*s).to_owned()).collect(),
        kek_argon2: opts.argon2,
    };
    let keys = Arc::new(KeyHierarchy::new(root));
    let store = Store::create(&layout.store(), keys, Sharing::MultiProcess)
        .map_err(|e| CliError::new(Exit::Io, format!("cannot create the store: {e}")))?;
    drop(store);
    // device.json first: a crash before the root is written leaves a folder that
    // `kawal reset --secure` recognises and clears.
    let info_json = serde_json::to_vec_pretty(&info).or_exit(Exit::Failure, "device.json")?;
    device::write_atomic(&layout.device_json(), &info_json, 0o644)?;
    device::write_atomic(&layout.root_sealed(), &sealed, 0o600)?;

    // Reopen from disk on purpose: proves the sealed root just written unseals on this machine
    // before anything else (and the password) depends on it.
    let dev = Device::open(&opts.data_dir, opts.passphrase.as_ref())?;
    let log = dev.audit_log(device::ANCHOR_EVERY)?;
    device::record(
        &log,
        Event::new("device.provisioned", "kawal-init", Outcome::Success)
            .with("uid", uid.as_str())
            .with("uid_source", source.as_str())
            .with("dev", opts.dev)
            .with(
                "kek_source",
                if opts.passphrase.is_some() {
                    "machine-binding+operator-input"
                } else {
                    "machine-binding"
                },
            ),
    )?;

    // Device identity.
    let identity = kawal_pki::IdentityKey::generate().or_exit(Exit::Failure, "identity key")?;
    dev.store
        .put(tables::IDENTITY, "device", identity.pkcs8_der())
        .or_exit(Exit::Io, "store")?;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(layout.pki())
        .or_exit(Exit::Io, "pki folder")?;
    let mut csr = None;
    if opts.dev {
        let issued =
            kawal_pki::issue_dev(&identity, &uid).or_exit(Exit::Failure, "dev certificate")?;
        dev.store
            .put(tables::IDENTITY, "dev-ca", issued.ca_key.pkcs8_der())
            .or_exit(Exit::Io, "store")?;
        device::write_atomic(
            &layout.pki().join("dev-ca.crt.pem"),
            issued.ca_cert_pem.as_bytes(),
            0o644,
        )?;
        device::write_atomic(
            &layout.pki().join("device.crt.pem"),
            issued.device_cert_pem.as_bytes(),
            0o644,
        )?;
    } else {
        let pem = kawal_pki::device_csr_pem(&identity, &uid).or_exit(Exit::Failure, "CSR")?;
        let path = opts
            .csr_out
            .clone()
            .unwrap_or_else(|| layout.pki().join("device.csr.pem"));
        device::write_atomic(&path, pem.as_bytes(), 0o644)?;
        csr = Some(path);
    }
    device::record(
        &log,
        Event::new("identity.created", "kawal-init", Outcome::Success)
            .with("algorithm", "ecdsa-p256")
            .with(
                "certificate",
                if opts.dev {
                    "dev-ca"
                } else {
                    "csr-for-factory-ca"
                },
            ),
    )?;

    // The unique pre-installed admin password: random, shown once, kept only as Argon2id.
    let password = password::generate(ADMIN_PASSWORD_BITS).or_exit(Exit::Failure, "password")?;
    // The label is written before the hash is stored: a failed write must not leave a device
    // whose only password nobody has seen.
    if let Some(path) = &opts.label_out {
        let text = zeroize::Zeroizing::new(format!(
            "kawal device {uid}\nadmin password (change at first login): {}\n",
            password.expose()
        ));
        device::write_atomic(path, text.as_bytes(), 0o600)?;
    }
    let hash = password::hash(&password, opts.argon2).or_exit(Exit::Failure, "hashing")?;
    // Through the directory, so the record has the one account format and lands in the
    // privileged table (AU-1-2).
    let directory = Directory::new(
        dev.store,
        DirectoryConfig {
            argon2: opts.argon2,
            ..DirectoryConfig::new(uid.as_str())
        },
    );
    directory
        .create_initial_admin("admin", hash, ADMIN_PASSWORD_BITS, unix_now())
        .or_exit(Exit::Io, "admin account")?;
    device::record(
        &log,
        Event::new("account.created", "kawal-init", Outcome::Success)
            .with("user", "admin")
            .with("role", "admin")
            .with("must_change", true)
            .with("generated_bits", u64::from(ADMIN_PASSWORD_BITS)),
    )?;
    log.close().or_exit(Exit::Io, "audit log")?;

    let admin_password = if opts.label_out.is_some() {
        None
    } else {
        Some(password)
    };
    Ok(Provisioned {
        uid,
        admin_password,
        csr,
    })
}

/// Resolves a path argument to an absolute one.
pub fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).or_exit(Exit::Io, "path")
}
