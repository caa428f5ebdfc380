//! `[update]`: where signed updates come from and what this device accepts (PL-2-1..PL-2-3).
//!
//! ```toml
//! [update]
//! source = "https://updates.example.com/kawal"   # or a folder: "/media/usb/kawal-repo"
//! ca-file = "/etc/kawal/update-ca.pem"           # https only: the one CA trusted for it
//! product = "kawal-gateway"
//! hardware = "board-x1"
//! # root = "/var/lib/kawal/update/root.json"     # the vendor's TUF root, installed at provisioning
//! # slots = "/var/lib/kawal/slots"
//! # health-checks = ["self-test", "integrity"]   # added to the ones each bundle names
//! ```
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// `[update]` as written.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawUpdate {
    /// The vendor's repository: an `https://` URL or an absolute folder path.
    pub source: String,
    /// The CA file (PEM) pinned for an `https://` source.
    pub ca_file: Option<PathBuf>,
    /// The product this device is; a bundle for another product is refused.
    pub product: String,
    /// This board's hardware id; a bundle that does not list it is refused.
    pub hardware: String,
    /// The TUF root installed at provisioning (default `<data-dir>/update/root.json`).
    pub root: Option<PathBuf>,
    /// The slot folders and boot state (default `<data-dir>/slots`).
    pub slots: Option<PathBuf>,
    /// Health checks every trial runs, on top of the ones its bundle names.
    #[serde(default)]
    pub health_checks: Vec<String>,
}

/// Where the update comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateSource {
    /// A folder (a USB stick, an unpacked download).
    Dir(PathBuf),
    /// An HTTPS server, with the pinned CA.
    Https {
        /// The repository's base URL.
        url: String,
        /// The only CA trusted for it.
        ca_file: PathBuf,
    },
}

/// `[update]`, validated.
#[derive(Debug, Clone)]
pub struct UpdateSettings {
    /// The repository.
    pub source: UpdateSource,
    /// This device's product.
    pub product: String,
    /// This board's hardware id.
    pub hardware: String,
    /// The provisioned TUF root.
    pub root: PathBuf,
    /// The trusted TUF metadata (kept outside both slots, so no payload can overwrite it).
    pub datastore: PathBuf,
    /// The slot folders and boot state.
    pub slots: PathBuf,
    /// Health checks every trial runs.
    pub health_checks: Vec<String>,
}

/// The folder under the data folder that holds the update trust state.
pub fn update_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("update")
}

/// The health checks a trial can run.
pub const HEALTH_CHECKS: [&str; 3] = ["self-test", "integrity", "upstream"];

fn id_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

pub(super) fn validate_update(
    raw: &RawUpdate,
    data_dir: &Path,
    errors: &mut Vec<String>,
) -> Option<UpdateSettings> {
    let before = errors.len();
    let source = if let Some(rest) = raw.source.strip_prefix("https://") {
        if rest.is_empty() || rest.contains(char::is_whitespace) {
            errors.push("update.source: not a valid https:// URL".into());
        }
        match &raw.ca_file {
            Some(ca) if ca.is_absolute() => UpdateSource::Https {
                url: raw.source.clone(),
                ca_file: ca.clone(),
            },
            Some(_) => {
                errors.push("update.ca-file: must be an absolute path".into());
                UpdateSource::Dir(PathBuf::new())
            }
            None => {
                errors.push(
                    "update.ca-file: an https:// source needs the CA to pin (no system roots are trusted)".into(),
                );
                UpdateSource::Dir(PathBuf::new())
            }
        }
    } else if raw.source.starts_with('/') {
        if raw.ca_file.is_some() {
            errors.push("update.ca-file: only for an https:// source".into());
        }
        UpdateSource::Dir(PathBuf::from(&raw.source))
    } else {
        errors.push(
            "update.source: an https:// URL or an absolute folder path (plain http is refused)"
                .into(),
        );
        UpdateSource::Dir(PathBuf::new())
    };
    if !id_ok(&raw.product) {
        errors.push("update.product: 1-64 characters of [A-Za-z0-9._-]".into());
    }
    if !id_ok(&raw.hardware) {
        errors.push("update.hardware: 1-64 characters of [A-Za-z0-9._-]".into());
    }
    let dir = update_dir(data_dir);
    let mut absolute = |key: &str, value: &Option<PathBuf>, default: PathBuf| match value {
        Some(p) if !p.is_absolute() => {
            errors.push(format!("update.{key}: must be an absolute path"));
            p.clone()
        }
        Some(p) => p.clone(),
        None => default,
    };
    let root = absolute("root", &raw.root, dir.join("root.json"));
    let slots = absolute("slots", &raw.slots, data_dir.join("slots"));
    let datastore = dir.join("tuf");
    if datastore.starts_with(&slots) || slots.starts_with(&dir) {
        errors.push("update.slots: must not hold, or sit inside, the update trust state".into());
    }
    for c in &raw.health_checks {
        if !HEALTH_CHECKS.contains(&c.as_str()) {
            errors.push(format!(
                "update.health-checks: unknown check {c:?} (self-test, integrity, upstream)"
            ));
        }
    }
    (errors.len() == before).then(|| UpdateSettings {
        source,
        product: raw.product.clone(),
        hardware: raw.hardware.clone(),
        root,
        datastore,
        slots,
        health_checks: raw.health_checks.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(source: &str, ca: Option<&str>) -> RawUpdate {
        RawUpdate {
            source: source.into(),
            ca_file: ca.map(PathBuf::from),
            product: "kawal-gateway".into(),
            hardware: "board-x1".into(),
            root: None,
            slots: None,
            health_checks: vec!["integrity".into()],
        }
    }

    /// G045: PL-2-3
    #[test]
    fn https_needs_a_pinned_ca_and_plain_http_is_refused() {
        let data = Path::new("/var/lib/kawal");
        let mut e = Vec::new();
        assert!(validate_update(&raw("https://u.example/r", None), data, &mut e).is_none());
        assert!(e[0].contains("ca-file"), "{e:?}");
        let mut e = Vec::new();
        assert!(validate_update(&raw("http://u.example/r", None), data, &mut e).is_none());
        assert!(e[0].contains("plain http"), "{e:?}");
        let mut e = Vec::new();
        let ok = validate_update(
            &raw("https://u.example/r", Some("/etc/ca.pem")),
            data,
            &mut e,
        )
        .expect("valid");
        assert_eq!(ok.root, PathBuf::from("/var/lib/kawal/update/root.json"));
        assert_eq!(ok.datastore, PathBuf::from("/var/lib/kawal/update/tuf"));
        assert_eq!(ok.slots, PathBuf::from("/var/lib/kawal/slots"));
    }

    /// G045: PL-2-3
    #[test]
    fn slots_may_not_hold_the_trust_state_and_ids_are_checked() {
        let data = Path::new("/var/lib/kawal");
        let mut r = raw("/media/usb/repo", None);
        r.slots = Some("/var/lib/kawal/update/slots".into());
        r.hardware = "board x1".into();
        r.health_checks.push("reboot-twice".into());
        let mut e = Vec::new();
        assert!(validate_update(&r, data, &mut e).is_none());
        let all = e.join("\n");
        assert!(all.contains("update.slots"), "{all}");
        assert!(all.contains("update.hardware"), "{all}");
        assert!(all.contains("reboot-twice"), "{all}");
    }
}
