//! The one TOML configuration file, in two stages: [`RawConfig`] is what serde reads
//! (unknown keys refused), [`ValidConfig`] is what the daemon runs with. `validate` collects
//! every problem, each naming its key, so one run of `kawal config check` shows them all.
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use kawal_crypto::password::Argon2Params;
use serde::Deserialize;

use crate::error::{CliError, Exit, Result};

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawConfig {
    /// The device's data folder.
    pub data_dir: PathBuf,
    /// Device identity settings.
    #[serde(default)]
    pub device: RawDevice,
    /// Key-encryption settings.
    #[serde(default)]
    pub keys: RawKeys,
    /// Password hashing.
    #[serde(default)]
    pub passwords: RawPasswords,
    /// The audit log.
    #[serde(default)]
    pub audit: RawAudit,
    /// Listening addresses.
    #[serde(default)]
    pub listen: RawListen,
}

/// `[device]`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawDevice {
    /// Namespace under which hardware identity becomes the device UID.
    #[serde(default = "default_vendor")]
    pub vendor_namespace: String,
}

impl Default for RawDevice {
    fn default() -> Self {
        Self {
            vendor_namespace: default_vendor(),
        }
    }
}

fn default_vendor() -> String {
    "kawal".into()
}

/// `[keys]`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawKeys {
    /// A file holding the passphrase that is part of the key-encryption key.
    pub passphrase_file: Option<PathBuf>,
}

/// `[passwords]`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawPasswords {
    /// Argon2id memory in KiB (default 19456, OWASP).
    #[serde(default = "default_m")]
    pub argon2_memory_kib: u32,
    /// Argon2id passes (default 2).
    #[serde(default = "default_t")]
    pub argon2_passes: u32,
    /// Argon2id lanes (default 1).
    #[serde(default = "default_p")]
    pub argon2_lanes: u32,
    /// Must be spelled out to run below OWASP's cost (test rigs only).
    #[serde(default)]
    pub allow_weak_hashing: bool,
}

impl Default for RawPasswords {
    fn default() -> Self {
        Self {
            argon2_memory_kib: default_m(),
            argon2_passes: default_t(),
            argon2_lanes: default_p(),
            allow_weak_hashing: false,
        }
    }
}

fn default_m() -> u32 {
    Argon2Params::OWASP.m_kib
}
fn default_t() -> u32 {
    Argon2Params::OWASP.t
}
fn default_p() -> u32 {
    Argon2Params::OWASP.p
}

/// `[audit]`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawAudit {
    /// A signed checkpoint at least every this many entries.
    #[serde(default = "default_checkpoint")]
    pub checkpoint_every: u64,
}

impl Default for RawAudit {
    fn default() -> Self {
        Self {
            checkpoint_every: default_checkpoint(),
        }
    }
}

fn default_checkpoint() -> u64 {
    1000
}

/// `[listen]`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawListen {
    /// HTTPS management API and console.
    #[serde(default = "default_api")]
    pub api: String,
    /// MQTT over mutual TLS for sensors.
    #[serde(default = "default_mqtt")]
    pub mqtt: String,
}

impl Default for RawListen {
    fn default() -> Self {
        Self {
            api: default_api(),
            mqtt: default_mqtt(),
        }
    }
}

fn default_api() -> String {
    "0.0.0.0:8443".into()
}
fn default_mqtt() -> String {
    "0.0.0.0:8883".into()
}

/// A configuration that passed validation; only this reaches services.
#[derive(Debug, Clone)]
pub struct ValidConfig {
    /// The data folder.
    pub data_dir: PathBuf,
    /// UID namespace.
    pub vendor_namespace: String,
    /// Passphrase file, if any.
    pub passphrase_file: Option<PathBuf>,
    /// Password hashing cost.
    pub argon2: Argon2Params,
    /// Checkpoint interval.
    pub checkpoint_every: u64,
    /// API address.
    pub api: SocketAddr,
    /// MQTT address.
    pub mqtt: SocketAddr,
    /// Insecure choices the file spelled out; logged at start.
    pub insecure: Vec<String>,
    /// SHA-256 of the file as read, so a change between starts is logged.
    pub sha256: String,
}

/// Every problem found, each naming its key.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<String>);

impl RawConfig {
    /// Turns the raw file into a valid one, or lists every problem.
    pub fn validate(self) -> std::result::Result<ValidConfig, ConfigErrors> {
        let mut errors = Vec::new();
        if !self.data_dir.is_absolute() {
            errors.push("data-dir: must be an absolute path".to_owned());
        }
        let ns = &self.device.vendor_namespace;
        if ns.is_empty()
            || ns.len() > 64
            || !ns
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            errors.push("device.vendor-namespace: 1-64 characters of [A-Za-z0-9._-]".into());
        }
        if let Some(p) = &self.keys.passphrase_file
            && !p.is_absolute()
        {
            errors.push("keys.passphrase-file: must be an absolute path".into());
        }
        let argon2 = Argon2Params {
            m_kib: self.passwords.argon2_memory_kib,
            t: self.passwords.argon2_passes,
            p: self.passwords.argon2_lanes,
        };
        let mut insecure = Vec::new();
        if argon2.check().is_err() {
            errors.push("passwords.argon2-*: cost out of bounds (memory 8×lanes..1 GiB KiB, passes and lanes 1..64)".into());
        } else if argon2.m_kib < Argon2Params::OWASP.m_kib || argon2.t < Argon2Params::OWASP.t {
            if self.passwords.allow_weak_hashing {
                insecure.push(format!(
                    "passwords: Argon2id cost below OWASP's (m={} KiB, t={}) by allow-weak-hashing",
                    argon2.m_kib, argon2.t
                ));
            } else {
                errors.push("passwords.argon2-memory-kib/argon2-passes: below OWASP's 19456 KiB / 2 passes; set allow-weak-hashing = true to accept (test rigs only)".into());
            }
        }
        if self.audit.checkpoint_every == 0 || self.audit.checkpoint_every > 100_000 {
            errors.push("audit.checkpoint-every: must be 1..=100000".into());
        }
        let api = parse_addr("listen.api", &self.listen.api, &mut errors);
        let mqtt = parse_addr("listen.mqtt", &self.listen.mqtt, &mut errors);
        if let (Some(a), Some(m)) = (api, mqtt)
            && a == m
        {
            errors.push("listen.mqtt: same address as listen.api".into());
        }
        match (api, mqtt, errors.is_empty()) {
            (Some(api), Some(mqtt), true) => Ok(ValidConfig {
                data_dir: self.data_dir,
                vendor_namespace: self.device.vendor_namespace,
                passphrase_file: self.keys.passphrase_file,
                argon2,
                checkpoint_every: self.audit.checkpoint_every,
                api,
                mqtt,
                insecure,
                sha256: String::new(),
            }),
            _ => Err(ConfigErrors(errors)),
        }
    }
}

fn parse_addr(key: &str, value: &str, errors: &mut Vec<String>) -> Option<SocketAddr> {
    match value.parse::<SocketAddr>() {
        Ok(a) if a.port() == 0 => {
            errors.push(format!("{key}: port 0 is not allowed"));
            None
        }
        Ok(a) => Some(a),
        Err(_) => {
            errors.push(format!("{key}: '{value}' is not an IP:port address"));
            None
        }
    }
}

/// Refuses files that others could change (config, keys) or, for secrets, read.
pub fn check_permissions(path: &Path, what: &str, secret: bool) -> Result<()> {
    let meta = std::fs::metadata(path)
        .map_err(|e| CliError::new(Exit::NoInput, format!("{what} {}: {e}", path.display())))?;
    let mode = meta.permissions().mode();
    if mode & 0o022 != 0 {
        return Err(CliError::new(
            Exit::NoPerm,
            format!(
                "{what} {} is group- or world-writable (mode {:o}); refusing",
                path.display(),
                mode & 0o777
            ),
        ));
    }
    if secret && mode & 0o044 != 0 {
        return Err(CliError::new(
            Exit::NoPerm,
            format!(
                "{what} {} is readable by others (mode {:o}); refusing",
                path.display(),
                mode & 0o777
            ),
        ));
    }
    Ok(())
}

/// Reads, parses and validates a configuration file: the path `kawal run` and
/// `kawal config check` share.
pub fn load(path: &Path) -> Result<ValidConfig> {
    check_permissions(path, "configuration file", false)?;
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::new(Exit::Config, format!("{}: {e}", path.display())))?;
    let raw: RawConfig = toml::from_str(&text)
        .map_err(|e| CliError::new(Exit::Config, format!("{}: {e}", path.display())))?;
    let mut valid = raw.validate().map_err(|ConfigErrors(errs)| {
        CliError::new(
            Exit::Config,
            format!(
                "{}: invalid configuration:\n  {}",
                path.display(),
                errs.join("\n  ")
            ),
        )
    })?;
    if let Some(p) = &valid.passphrase_file {
        check_permissions(p, "passphrase file", true)?;
    }
    valid.sha256 = hex::encode(kawal_crypto::sha256(text.as_bytes()));
    Ok(valid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> std::result::Result<ValidConfig, String> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        raw.validate().map_err(|e| e.0.join("\n"))
    }

    #[test]
    fn defaults_are_secure() {
        let c = parse("data-dir = \"/var/lib/kawal\"").unwrap();
        assert_eq!(c.argon2, Argon2Params::OWASP);
        assert!(c.insecure.is_empty());
        assert_eq!(c.api.port(), 8443);
        assert_eq!(c.mqtt.port(), 8883);
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e =
            parse("data-dir = \"/x\"\n[listen]\napi = \"127.0.0.1:1\"\ntelnet = \"0.0.0.0:23\"")
                .unwrap_err();
        assert!(e.contains("telnet"), "{e}");
    }

    #[test]
    fn every_error_is_collected_and_names_its_key() {
        let e = parse(
            "data-dir = \"rel\"\n[device]\nvendor-namespace = \"a b\"\n[audit]\ncheckpoint-every = 0\n[listen]\napi = \"nope\"\nmqtt = \"127.0.0.1:0\"\n[passwords]\nargon2-memory-kib = 1024",
        )
        .unwrap_err();
        for key in [
            "data-dir",
            "device.vendor-namespace",
            "audit.checkpoint-every",
            "listen.api",
            "listen.mqtt",
            "passwords.argon2",
        ] {
            assert!(e.contains(key), "missing {key} in:\n{e}");
        }
    }

    #[test]
    fn weak_hashing_must_be_spelled_out_and_is_reported() {
        let weak = "data-dir = \"/x\"\n[passwords]\nargon2-memory-kib = 1024\nargon2-passes = 1";
        assert!(parse(weak).is_err());
        let c = parse(&format!("{weak}\nallow-weak-hashing = true")).unwrap();
        assert_eq!(c.insecure.len(), 1);
    }
}
