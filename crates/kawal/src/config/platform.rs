//! `[integrity]` (the signed integrity manifest, PL-1-4) and `[exposure]` (services and
//! interfaces, PL-3-1, PH-1-1, PH-1-2).
//!
//! ```toml
//! [integrity]
//! # enabled = true                   # the manifest must exist; false switches the check off
//! manifest = "/var/lib/kawal/integrity/manifest.toml"   # its signature: manifest.toml.sig
//! vendor-key = "/var/lib/kawal/integrity/vendor.pub"
//! overlay = "/var/lib/kawal/integrity/local.toml"
//! period-s = 900
//! on-mismatch = "alert"              # or "stop-serving", or "reboot" (needs [update])
//!
//! [exposure]
//! period-s = 900
//! enforce = false
//! allowed-listeners = ["tcp/8443", "tcp/8883"]
//! ```
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use kawal_platform::exposure::{ListenerSpec, Policy};
use serde::Deserialize;

/// `[integrity]` as written.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawIntegrity {
    /// Unset: check when the manifest exists. `true`: the manifest must exist, the daemon
    /// refuses to serve without it. `false`: no check at all (insecure, reported).
    pub enabled: Option<bool>,
    /// The vendor's signed manifest (default `<data-dir>/integrity/manifest.toml`).
    pub manifest: Option<PathBuf>,
    /// The vendor's public key, installed at provisioning (default
    /// `<data-dir>/integrity/vendor.pub`).
    pub vendor_key: Option<PathBuf>,
    /// The local overlay signed by the device's configuration key (default
    /// `<data-dir>/integrity/local.toml`).
    pub overlay: Option<PathBuf>,
    /// Seconds between checks while the daemon runs (default 900).
    #[serde(default = "d_period")]
    pub period_s: u64,
    /// What a mismatch at run time does: `alert` (default) or `stop-serving`.
    #[serde(default = "d_on_mismatch")]
    pub on_mismatch: String,
}

impl Default for RawIntegrity {
    fn default() -> Self {
        Self {
            enabled: None,
            manifest: None,
            vendor_key: None,
            overlay: None,
            period_s: d_period(),
            on_mismatch: d_on_mismatch(),
        }
    }
}

fn d_period() -> u64 {
    900
}
fn d_on_mismatch() -> String {
    "alert".into()
}

/// Whether and how the integrity manifest is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntegrityMode {
    /// The manifest must exist: without it the daemon does not serve.
    Required,
    /// Checked when the manifest exists; a device without one is reported as not met.
    IfPresent,
    /// Not checked (`enabled = false`, reported as insecure).
    Off,
}

/// What a mismatch found while the daemon runs does. A mismatch at start always means the
/// daemon does not serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnMismatch {
    /// Log it (`integrity.failed`), show it in health and the report; keep serving.
    Alert,
    /// Log it, then stop serving: the daemon shuts down cleanly and exits non-zero.
    StopServing,
    /// Log it, then go back to the other update slot (a trial in progress is rolled back, else
    /// the previous release becomes the committed one) and restart into it; when that slot
    /// does not verify or is below the security floor, stop serving instead.
    Reboot,
}

impl OnMismatch {
    /// The configuration's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Alert => "alert",
            Self::StopServing => "stop-serving",
            Self::Reboot => "reboot",
        }
    }
}

/// `[integrity]`, validated.
#[derive(Debug, Clone)]
pub struct IntegritySettings {
    /// Whether and how it is checked.
    pub mode: IntegrityMode,
    /// The manifest (its signature is `<manifest>.sig`).
    pub manifest: PathBuf,
    /// The vendor's public key.
    pub vendor_key: PathBuf,
    /// The local overlay (its signature is `<overlay>.sig`).
    pub overlay: PathBuf,
    /// Time between checks while running.
    pub period: std::time::Duration,
    /// The response to a mismatch found while running.
    pub on_mismatch: OnMismatch,
}

impl IntegritySettings {
    /// The settings a file without `[integrity]` gets for `data_dir`.
    pub fn defaults(data_dir: &Path) -> Self {
        let mut errors = Vec::new();
        let mut insecure = Vec::new();
        validate_integrity(
            &RawIntegrity::default(),
            data_dir,
            &mut errors,
            &mut insecure,
        )
    }
}

/// The folder under the data folder that holds the manifest, the vendor key and the overlay.
pub fn integrity_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("integrity")
}

pub(super) fn validate_integrity(
    raw: &RawIntegrity,
    data_dir: &Path,
    errors: &mut Vec<String>,
    insecure: &mut Vec<String>,
) -> IntegritySettings {
    let dir = integrity_dir(data_dir);
    let mut path = |key: &str, value: &Option<PathBuf>, default: &str| match value {
        Some(p) if !p.is_absolute() => {
            errors.push(format!("integrity.{key}: must be an absolute path"));
            p.clone()
        }
        Some(p) => p.clone(),
        None => dir.join(default),
    };
    let manifest = path("manifest", &raw.manifest, "manifest.toml");
    let vendor_key = path("vendor-key", &raw.vendor_key, "vendor.pub");
    let overlay = path("overlay", &raw.overlay, "local.toml");
    if overlay == manifest {
        errors.push("integrity.overlay: must not be the manifest".into());
    }
    if !(1..=86_400).contains(&raw.period_s) {
        errors.push("integrity.period-s: 1..=86400".into());
    }
    let on_mismatch = match raw.on_mismatch.as_str() {
        "alert" => OnMismatch::Alert,
        "stop-serving" => OnMismatch::StopServing,
        // Needs [update] (the other slot to go back to): checked with the whole file.
        "reboot" => OnMismatch::Reboot,
        _ => {
            errors.push("integrity.on-mismatch: \"alert\", \"stop-serving\" or \"reboot\"".into());
            OnMismatch::Alert
        }
    };
    let mode = match raw.enabled {
        Some(true) => IntegrityMode::Required,
        None => IntegrityMode::IfPresent,
        Some(false) => {
            insecure.push(
                "integrity.enabled = false: the installed files are not checked against the signed manifest".into(),
            );
            IntegrityMode::Off
        }
    };
    IntegritySettings {
        mode,
        manifest,
        vendor_key,
        overlay,
        period: std::time::Duration::from_secs(raw.period_s),
        on_mismatch,
    }
}

/// `[exposure]`, validated: the policy, with kawal's own listeners added to the allowed ones.
#[derive(Debug, Clone)]
pub struct ExposureSettings {
    /// The policy assessed and, with `enforce = true`, applied.
    pub policy: Policy,
    /// Time between assessments while running.
    pub period: std::time::Duration,
}

impl ExposureSettings {
    /// The settings a file without `[exposure]` gets, with kawal's listeners on `own`.
    pub fn defaults(own: &[SocketAddr]) -> Self {
        let mut errors = Vec::new();
        let mut insecure = Vec::new();
        validate_exposure(None, own, &mut errors, &mut insecure)
    }
}

pub(super) fn validate_exposure(
    raw: Option<&toml::Table>,
    own: &[SocketAddr],
    errors: &mut Vec<String>,
    insecure: &mut Vec<String>,
) -> ExposureSettings {
    let mut table = raw.cloned().unwrap_or_default();
    let period_s = match table.remove("period-s") {
        None => 900,
        Some(toml::Value::Integer(n)) if (1..=86_400).contains(&n) => n.unsigned_abs(),
        Some(_) => {
            errors.push("exposure.period-s: an integer 1..=86400".into());
            900
        }
    };
    let mut policy = match table.try_into::<Policy>() {
        Ok(p) => p,
        Err(e) => {
            errors.push(format!("exposure: {}", e.message().trim()));
            Policy::default()
        }
    };
    // kawal's own listeners are part of the declared set, exactly as configured.
    for addr in own {
        let spec = ListenerSpec {
            proto: kawal_platform::exposure::procnet::Proto::Tcp,
            addr: (!addr.ip().is_unspecified()).then(|| addr.ip()),
            port: addr.port(),
        };
        if !policy.allowed_listeners.contains(&spec) {
            policy.allowed_listeners.push(spec);
        }
    }
    if policy.loopback_listeners == kawal_platform::exposure::Rule::Allow {
        insecure.push(
            "exposure.loopback-listeners = \"allow\": local services are not reported".into(),
        );
    }
    ExposureSettings {
        policy,
        period: std::time::Duration::from_secs(period_s),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic, reason = "tests")]
    use super::*;

    fn integrity(text: &str) -> (IntegritySettings, Vec<String>, Vec<String>) {
        let raw: RawIntegrity = toml::from_str(text).unwrap_or_else(|e| panic!("{e}"));
        let (mut errors, mut insecure) = (Vec::new(), Vec::new());
        let s = validate_integrity(
            &raw,
            Path::new("/var/lib/kawal"),
            &mut errors,
            &mut insecure,
        );
        (s, errors, insecure)
    }

    /// G045: PL-1-4
    #[test]
    fn integrity_defaults_live_under_the_data_dir() {
        let cfg = crate::config::defaults_for(Path::new("/var/lib/kawal")).unwrap();
        assert_eq!(cfg.integrity.period.as_secs(), 900);
        assert_eq!(cfg.integrity.on_mismatch, OnMismatch::Alert);
        let (s, errors, insecure) = integrity("");
        assert!(errors.is_empty() && insecure.is_empty());
        assert_eq!(s.mode, IntegrityMode::IfPresent);
        assert_eq!(
            s.manifest,
            Path::new("/var/lib/kawal/integrity/manifest.toml")
        );
        assert_eq!(
            s.vendor_key,
            Path::new("/var/lib/kawal/integrity/vendor.pub")
        );
        assert_eq!(s.overlay, Path::new("/var/lib/kawal/integrity/local.toml"));
        assert_eq!(s.period.as_secs(), 900);
        assert_eq!(s.on_mismatch, OnMismatch::Alert);
    }

    /// G045: PL-1-4
    #[test]
    fn integrity_refuses_unknown_responses_and_names_the_key() {
        // "reboot" is valid here; the whole file must also have [update] (config.rs).
        let (s, errors, _) = integrity("on-mismatch = \"reboot\"");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(s.on_mismatch, OnMismatch::Reboot);
        let (_, errors, _) = integrity("on-mismatch = \"shrug\"\nperiod-s = 0\nmanifest = \"rel\"");
        assert_eq!(errors.len(), 3, "{errors:?}");
        let (s, errors, _) = integrity("on-mismatch = \"stop-serving\"\nenabled = true");
        assert!(errors.is_empty());
        assert_eq!(s.on_mismatch, OnMismatch::StopServing);
        assert_eq!(s.mode, IntegrityMode::Required);
        let (s, _, insecure) = integrity("enabled = false");
        assert_eq!(s.mode, IntegrityMode::Off);
        assert_eq!(insecure.len(), 1);
        assert!(toml::from_str::<RawIntegrity>("enable = true").is_err());
    }

    /// G045: PL-3-1
    #[test]
    fn exposure_takes_the_policy_and_adds_kawals_own_listeners() {
        let table: toml::Table =
            "period-s = 60\nallowed-listeners = [\"udp/[::1]:323\"]\n[physical]\nusb-storage = \"allow\""
                .parse()
                .unwrap();
        let own: Vec<SocketAddr> = vec![
            "127.0.0.1:9443".parse().unwrap(),
            "0.0.0.0:8883".parse().unwrap(),
        ];
        let (mut errors, mut insecure) = (Vec::new(), Vec::new());
        let s = validate_exposure(Some(&table), &own, &mut errors, &mut insecure);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(s.period.as_secs(), 60);
        let allowed: Vec<String> = s
            .policy
            .allowed_listeners
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(allowed, ["udp/[::1]:323", "tcp/127.0.0.1:9443", "tcp/8883"]);
        for bad in [
            "telnet = true",
            "period-s = 0",
            "allowed-listeners = [\"tcp/x\"]",
        ] {
            let table: toml::Table = bad.parse().unwrap();
            let mut errors = Vec::new();
            validate_exposure(Some(&table), &own, &mut errors, &mut insecure);
            assert!(
                errors.iter().all(|e| e.starts_with("exposure")) && !errors.is_empty(),
                "{bad}: {errors:?}"
            );
        }
    }
}
