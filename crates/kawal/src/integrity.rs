//! The integrity manifest on the device (G045 PL-1-4): the check the daemon runs before it
//! serves and on its period, and `kawal integrity keygen|manifest|verify|accept-config`.
//!
//! The vendor signs a manifest of the installed files (binary, configuration, trust store,
//! sealed key, anything else it names) with its Ed25519 key; the device holds the public half.
//! A configuration the device accepted (`kawal integrity accept-config`, later the API) is
//! vouched for by the local overlay, signed with the device's configuration key: a purpose key
//! of the key hierarchy (`config-signing`) that signs nothing else. A hand edit is vouched for
//! by neither and fails the check.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kawal_audit::{Event, Outcome};
use kawal_crypto::keys::{ConfigSigning, SigningKey};
use kawal_platform::SysRoot;
use kawal_platform::integrity::{self as manifest, FileSpec, PublicKey, Role, SignedDocument};

use crate::config::platform::{IntegrityMode, IntegritySettings};
use crate::device::{self, Device};
use crate::error::{CliError, Context, Exit, Result};
use crate::output;

/// Problems named in one audit event at most; the count of the rest follows.
const EVENT_PROBLEMS: usize = 10;

/// One integrity check, in the form the log, health and report use.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Verification {
    /// When it ran (RFC 3339, UTC).
    pub at: String,
    /// What started it: `power-up`, `periodic`, `operator`, `report`, `api`.
    pub trigger: String,
    /// The manifest checked.
    pub manifest: PathBuf,
    /// Whether the manifest file exists.
    pub manifest_present: bool,
    /// Whether everything verified.
    pub ok: bool,
    /// Product and version the manifest names, once it verified.
    pub product: Option<String>,
    /// The vendor key id it verified under.
    pub key_id: Option<String>,
    /// Files checked.
    pub files_checked: usize,
    /// Files with a problem.
    pub files_failed: usize,
    /// Files listed, by role.
    pub roles: BTreeMap<String, usize>,
    /// Every file, one line each: `path (role): ok` or its problems.
    pub files: Vec<String>,
    /// Every problem, one line each (signatures first).
    pub problems: Vec<String>,
    /// How long the check took, in milliseconds.
    pub millis: u64,
}

impl Verification {
    /// The audit event: `integrity.verified` (info) or `integrity.failed` (failure, naming
    /// the files and their problems: paths and hashes only, never key material).
    pub fn event(&self) -> Event {
        self.event_by("kawal")
    }

    /// As [`Verification::event`], naming who asked for the check (an account, for a check
    /// started over the API or the console).
    pub fn event_by(&self, actor: &str) -> Event {
        let mut e = if self.ok {
            Event::new("integrity.verified", actor, Outcome::Info)
        } else {
            Event::new("integrity.failed", actor, Outcome::Failure)
        }
        .with("trigger", self.trigger.as_str())
        .with("manifest", self.manifest.display().to_string())
        .with("files", self.files_checked)
        .with("failed", self.files_failed)
        .with("millis", self.millis);
        if let Some(p) = &self.product {
            e = e.with("product", p.as_str());
        }
        if !self.problems.is_empty() {
            let mut listed: Vec<String> = self
                .problems
                .iter()
                .take(EVENT_PROBLEMS)
                .map(|p| cut(p, 300))
                .collect();
            if self.problems.len() > EVENT_PROBLEMS {
                listed.push(format!("and {} more", self.problems.len() - EVENT_PROBLEMS));
            }
            e = e.with("problems", listed.join("; "));
        }
        e
    }

    /// A one-line summary.
    pub fn summary(&self) -> String {
        if !self.manifest_present {
            return format!("no integrity manifest at {}", self.manifest.display());
        }
        let mut s = format!(
            "integrity {}: {} file(s) checked, {} failed, {} ms",
            if self.ok { "ok" } else { "FAILED" },
            self.files_checked,
            self.files_failed,
            self.millis
        );
        for p in self.problems.iter().take(3) {
            s.push_str("; ");
            s.push_str(p);
        }
        if self.problems.len() > 3 {
            s.push_str(&format!("; and {} more", self.problems.len() - 3));
        }
        s
    }

    /// The JSON the health answer shows.
    pub fn health(&self, settings: &IntegritySettings) -> serde_json::Value {
        serde_json::json!({
            "state": if !self.manifest_present && settings.mode == IntegrityMode::IfPresent {
                "no-manifest"
            } else if self.ok { "ok" } else { "failed" },
            "last_check": self.at,
            "trigger": self.trigger,
            "ok": self.ok,
            "files_checked": self.files_checked,
            "files_failed": self.files_failed,
            "problems": self.problems.iter().take(EVENT_PROBLEMS).collect::<Vec<_>>(),
            "period_s": settings.period.as_secs(),
            "on_mismatch": settings.on_mismatch.as_str(),
        })
    }

    /// The full view for the platform page and `GET /api/v1/platform`: the health answer
    /// with every problem and every file, the manifest and what it names.
    pub fn platform(&self, settings: &IntegritySettings) -> serde_json::Value {
        let mut v = self.health(settings);
        if let Some(obj) = v.as_object_mut() {
            obj.insert("problems".into(), serde_json::json!(self.problems));
            obj.insert("files".into(), serde_json::json!(self.files));
            obj.insert(
                "manifest".into(),
                serde_json::json!(self.manifest.display().to_string()),
            );
            obj.insert("product".into(), serde_json::json!(self.product));
            obj.insert("millis".into(), serde_json::json!(self.millis));
        }
        v
    }
}

fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", s.get(..end).unwrap_or_default())
}

/// The device's configuration key (purpose `config-signing`), derived from the root secret.
pub fn config_key(dev: &Device) -> Result<SigningKey<ConfigSigning>> {
    let kv = dev
        .store
        .key_version::<ConfigSigning>()
        .or_exit(Exit::DataErr, "key-ring")?;
    dev.store
        .keys()
        .signing::<ConfigSigning>(&kv)
        .or_exit(Exit::Failure, "configuration key")
}

/// The public half of the device's configuration key, which verifies the local overlay.
pub fn config_public_key(dev: &Device) -> Result<PublicKey> {
    Ok(manifest::Signer::public_key(&config_key(dev)?))
}

/// Checks the installed files against the manifest and the overlay now. Never fails: what
/// cannot be read or verified is a problem in the result.
pub fn verify(
    settings: &IntegritySettings,
    device_key: Option<&PublicKey>,
    trigger: &str,
) -> Verification {
    let mut v = Verification {
        at: kawal_audit::WallTime::now().to_string(),
        trigger: trigger.to_owned(),
        manifest: settings.manifest.clone(),
        manifest_present: settings.manifest.exists(),
        ok: false,
        product: None,
        key_id: None,
        files_checked: 0,
        files_failed: 0,
        roles: BTreeMap::new(),
        files: Vec::new(),
        problems: Vec::new(),
        millis: 0,
    };
    if !v.manifest_present {
        v.problems.push(format!(
            "no integrity manifest at {}",
            settings.manifest.display()
        ));
        return v;
    }
    let vendor = match PublicKey::load(&settings.vendor_key) {
        Ok(k) => k,
        Err(e) => {
            v.problems.push(format!("vendor key: {e}"));
            return v;
        }
    };
    let report = manifest::verify_files(
        &settings.manifest,
        &settings.overlay,
        &vendor,
        device_key,
        &SysRoot::host(),
    );
    v.ok = report.is_ok();
    v.product = report.product.as_ref().map(|(p, ver)| format!("{p} {ver}"));
    v.key_id = report.key_id.map(|k| k.to_hex());
    v.files_checked = report.files.len();
    v.files_failed = report.files.iter().filter(|f| !f.is_ok()).count();
    for f in &report.files {
        *v.roles.entry(f.role.as_str().to_owned()).or_insert(0) += 1;
        v.files.push(f.to_string());
    }
    v.problems = report.problems();
    v.millis = u64::try_from(report.duration.as_millis()).unwrap_or(u64::MAX);
    v
}

/// `kawal integrity keygen --out FILE`: a new vendor signing key (PKCS#8 PEM, mode 0600,
/// never overwritten) and its public half in `FILE.pub`, to install on devices.
pub fn keygen(out: &Path) -> Result<()> {
    let key = manifest::SigningKey::generate().or_exit(Exit::Failure, "vendor key")?;
    key.save(out).or_exit(Exit::Io, "vendor key")?;
    let public = manifest::Signer::public_key(&key);
    let pub_path = pub_path(out);
    device::write_atomic(&pub_path, public.to_pem().as_bytes(), 0o644)?;
    output::line(&format!(
        "vendor key written to {} (keep it offline); public key {} (install it on devices as the integrity vendor-key); key id {}",
        out.display(),
        pub_path.display(),
        public.key_id()
    ));
    Ok(())
}

fn pub_path(out: &Path) -> PathBuf {
    let mut p = out.as_os_str().to_owned();
    p.push(".pub");
    PathBuf::from(p)
}

/// Parses `ROLE=PATH`.
fn file_spec(s: &str) -> Result<FileSpec> {
    let (role, path) = s.split_once('=').ok_or_else(|| {
        CliError::new(
            Exit::Config,
            format!("'{s}': expected ROLE=PATH (roles: binary, config, trust-store, key, other)"),
        )
    })?;
    let role = match role {
        "binary" => Role::Binary,
        "config" => Role::Config,
        "trust-store" => Role::TrustStore,
        "key" => Role::Key,
        "other" => Role::Other,
        _ => {
            return Err(CliError::new(
                Exit::Config,
                format!("'{role}': the roles are binary, config, trust-store, key, other"),
            ));
        }
    };
    let spec = FileSpec::new(path, role);
    // The configuration may change through the device's own accepted changes (the overlay).
    Ok(if role == Role::Config {
        spec.mutable_config()
    } else {
        spec
    })
}

/// What `kawal integrity manifest` is asked to make.
#[derive(Debug)]
pub struct ManifestRequest<'a> {
    /// The vendor's private key file.
    pub key: &'a Path,
    /// Product name.
    pub product: &'a str,
    /// Product version.
    pub version: &'a str,
    /// Where to write the manifest (its signature goes beside it, `.sig`).
    pub out: &'a Path,
    /// The tree the absolute paths are read under (`/` on the device; a staging folder on
    /// a build machine).
    pub root: &'a Path,
    /// `ROLE=PATH` for each file.
    pub files: &'a [String],
}

/// `kawal integrity manifest`: hashes the listed files and signs the manifest.
pub fn make(req: &ManifestRequest<'_>) -> Result<()> {
    let specs = req
        .files
        .iter()
        .map(|s| file_spec(s))
        .collect::<Result<Vec<_>>>()?;
    let key = manifest::SigningKey::load(req.key).or_exit(Exit::NoPerm, "vendor key")?;
    let root = SysRoot(req.root.to_path_buf());
    let m = manifest::make_manifest(&root, &specs, req.product, req.version)
        .or_exit(Exit::DataErr, "manifest")?;
    let doc = manifest::sign_manifest(&m, &key).or_exit(Exit::DataErr, "manifest")?;
    doc.write(req.out).or_exit(Exit::Io, "manifest")?;
    output::line(&format!(
        "manifest for {} {}: {} file(s), signed by key {}, written to {} and {}",
        req.product,
        req.version,
        m.files.len(),
        manifest::Signer::public_key(&key).key_id(),
        req.out.display(),
        manifest::signature_path(req.out).display()
    ));
    Ok(())
}

/// `kawal integrity verify`: checks now, prints every file, records the result. A device that
/// cannot be opened (a damaged sealed key, a wrong passphrase) is still checked, without its
/// configuration key: the local overlay cannot be trusted then, and nothing is logged.
pub fn verify_cmd(dev: Result<Device>, settings: &IntegritySettings) -> Result<()> {
    let (dev, key) = match dev {
        Ok(dev) => {
            let key = config_public_key(&dev)?;
            (Some(dev), Some(key))
        }
        Err(e) => {
            output::err(&format!(
                "warning: the device could not be opened ({e}); checking without its configuration key, and not logging"
            ));
            (None, None)
        }
    };
    let v = verify(settings, key.as_ref(), "operator");
    for line in &v.files {
        output::line(line);
    }
    if let Some(dev) = &dev {
        let log = dev.audit_log(device::ANCHOR_EVERY)?;
        device::record(&log, v.event())?;
        log.close().or_exit(Exit::Io, "audit log")?;
    }
    if v.ok {
        output::line(&v.summary());
        Ok(())
    } else {
        Err(failed(&v, "integrity check FAILED"))
    }
}

/// The error of a failed check: every problem, one line each.
pub fn failed(v: &Verification, what: &str) -> CliError {
    CliError::new(
        Exit::DataErr,
        format!(
            "{what} ({} of {} file(s)):\n  {}",
            v.files_failed,
            v.files_checked,
            v.problems.join("\n  ")
        ),
    )
}

/// `kawal integrity accept-config --config FILE`: the device vouches for its configuration as
/// it is now. The file must validate and be listed by the (verified) manifest as a
/// configuration the device may vouch for; the overlay is re-signed with the device's
/// configuration key, keeping its entries for other files.
pub fn accept_config(dev: &Device, settings: &IntegritySettings, config_path: &Path) -> Result<()> {
    let vendor = PublicKey::load(&settings.vendor_key).or_exit(Exit::NoInput, "vendor key")?;
    let m = SignedDocument::read(&settings.manifest)
        .and_then(|d| d.open_manifest(&vendor))
        .or_exit(Exit::DataErr, "integrity manifest")?;
    // The path as given (made absolute), else as resolved: the manifest names one of them.
    let given = std::path::absolute(config_path).or_exit(Exit::Io, "path")?;
    let resolved = std::fs::canonicalize(config_path)
        .or_exit(Exit::NoInput, &config_path.display().to_string())?;
    let listed = |p: &Path| -> Option<String> {
        p.to_str().map(str::to_owned).filter(|s| {
            m.files
                .iter()
                .any(|f| f.path == *s && f.mutable == Some(manifest::Mutable::Config))
        })
    };
    let Some(path_owned) = listed(&given).or_else(|| listed(&resolved)) else {
        return Err(CliError::new(
            Exit::NoPerm,
            format!(
                "the integrity manifest does not list {} as a configuration the device may vouch for (role config); nothing signed",
                given.display()
            ),
        ));
    };
    let path_str = path_owned.as_str();
    let signer = config_key(dev)?;
    let public = manifest::Signer::public_key(&signer);
    // Earlier accepted files stay vouched for, if the overlay still verifies.
    let mut entries: Vec<manifest::LocalEntry> =
        match SignedDocument::read_optional(&settings.overlay) {
            Ok(Some(doc)) => doc
                .open_overlay(&public)
                .map(|o| o.files)
                .unwrap_or_default(),
            _ => Vec::new(),
        };
    entries.retain(|e| e.path != path_str);
    let entry =
        manifest::local_entry(&SysRoot::host(), path_str).or_exit(Exit::Io, "configuration")?;
    let sha256 = hex::encode(entry.sha256);
    entries.push(entry);
    let doc = manifest::sign_local(&entries, &signer).or_exit(Exit::Failure, "local overlay")?;
    if let Some(parent) = settings.overlay.parent() {
        std::fs::create_dir_all(parent).or_exit(Exit::Io, "overlay folder")?;
    }
    doc.write(&settings.overlay)
        .or_exit(Exit::Io, "local overlay")?;
    let log = dev.audit_log(device::ANCHOR_EVERY)?;
    device::record(
        &log,
        Event::new(
            "integrity.config-accepted",
            "kawal-integrity",
            Outcome::Success,
        )
        .with("path", path_str)
        .with("sha256", sha256.as_str())
        .with("via", "kawal integrity accept-config"),
    )?;
    let v = verify(settings, Some(&public), "operator");
    device::record(&log, v.event())?;
    log.close().or_exit(Exit::Io, "audit log")?;
    output::line(&format!(
        "configuration {path_str} (SHA-256 {sha256}) accepted: the local overlay {} is signed with the device's configuration key",
        settings.overlay.display()
    ));
    output::line(&v.summary());
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn file_specs_name_a_role_and_config_is_mutable() {
        let s = file_spec("config=/etc/kawal/kawal.toml").unwrap();
        assert_eq!(s.role, Role::Config);
        assert_eq!(s.mutable, Some(manifest::Mutable::Config));
        assert_eq!(file_spec("binary=/usr/bin/kawal").unwrap().mutable, None);
        assert!(file_spec("/usr/bin/kawal").is_err());
        assert!(file_spec("firmware=/x").is_err());
    }

    #[test]
    fn long_problems_are_cut_on_a_character_boundary() {
        assert_eq!(cut("abc", 5), "abc");
        assert_eq!(cut("ééé", 3), "é…");
    }
}
