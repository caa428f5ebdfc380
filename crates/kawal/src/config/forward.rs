//! `[log-forward]`: the audit log forwarded to a remote collector over syslog on mutual TLS
//! (G045 PL-4-2), and `[tamper]`: the tamper inputs (PH-2-1, the table of
//! `kawal_platform::tamper::Config`, checked by its own `validate`).
//!
//! ```toml
//! [log-forward]
//! collector = "logs.example.net:6514"
//! server-name = "logs.example.net"      # default: the host part of collector
//! ca-file = "/etc/kawal/log-ca.pem"      # pinned: the only CA the collector is verified against
//! # cert-file / key-file: the client identity; default the device certificate and its key
//! # cursor-file = "/var/lib/kawal/log-forward.cursor"
//! confirm-interval-ms = 2000
//! confirm-max-entries = 1000             # also the declared overlap after an outage
//! max-backlog-entries = 1000000          # alarm at 80 %, alarm again when exceeded
//! when-full = "alarm"                    # the only policy: nothing is ever dropped
//! ```
//!
//! "Full" here: the backlog is the local log after the last entry the collector confirmed.
//! Nothing is held in memory and nothing is dropped, ever; when the backlog reaches 80 % of
//! `max-backlog-entries`, and again when it reaches the maximum, the daemon logs a critical
//! `log.forward-backlog` event and health shows it. New events keep being written locally
//! (security events are never refused), and they leave as soon as the collector is back.
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// `[log-forward]` as written.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawLogForward {
    /// The collector, `host:port`.
    pub collector: String,
    /// The name its certificate must carry (default: the host part of `collector`).
    pub server_name: Option<String>,
    /// The CA (PEM) that issued the collector's certificate: pinned.
    pub ca_file: PathBuf,
    /// The client certificate chain (PEM); default the device certificate.
    pub cert_file: Option<PathBuf>,
    /// Its private key (PEM, mode 0600); required with `cert-file`, else the device key.
    pub key_file: Option<PathBuf>,
    /// The durable cursor (default `<data-dir>/log-forward.cursor`).
    pub cursor_file: Option<PathBuf>,
    /// Milliseconds after the first unconfirmed entry by which it is confirmed (default 2000).
    #[serde(default = "d_confirm_ms")]
    pub confirm_interval_ms: u64,
    /// Unconfirmed entries at most: the declared overlap (default 1000).
    #[serde(default = "d_confirm_max")]
    pub confirm_max_entries: u64,
    /// The backlog that is "full" (default 1,000,000; the alarm starts at 80 %).
    #[serde(default = "d_backlog")]
    pub max_backlog_entries: u64,
    /// What a full backlog does: `alarm` (the only choice; see the module doc).
    #[serde(default = "d_when_full")]
    pub when_full: String,
}

fn d_confirm_ms() -> u64 {
    2000
}
fn d_confirm_max() -> u64 {
    1000
}
fn d_backlog() -> u64 {
    1_000_000
}
fn d_when_full() -> String {
    "alarm".into()
}

/// The client identity the device presents to the collector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientCert {
    /// The device certificate (`pki/device.crt.pem`) and its key, sealed in the store.
    Device,
    /// Files given in the configuration.
    Files {
        /// The certificate chain, PEM.
        cert: PathBuf,
        /// The private key, PEM.
        key: PathBuf,
    },
}

/// `[log-forward]`, validated.
#[derive(Debug, Clone)]
pub struct LogForwardSettings {
    /// `host:port`.
    pub collector: String,
    /// The name the collector's certificate must carry.
    pub server_name: String,
    /// The pinned CA.
    pub ca_file: PathBuf,
    /// The client identity.
    pub client: ClientCert,
    /// The cursor file.
    pub cursor_file: PathBuf,
    /// Confirmation deadline.
    pub confirm_interval: Duration,
    /// Most unconfirmed entries (the declared overlap).
    pub confirm_max_entries: u64,
    /// The backlog that counts as full.
    pub max_backlog_entries: u64,
}

/// The cursor file of a data folder when the configuration names none.
pub fn default_cursor(data_dir: &Path) -> PathBuf {
    data_dir.join("log-forward.cursor")
}

pub(super) fn validate_log_forward(
    raw: &RawLogForward,
    data_dir: &Path,
    errors: &mut Vec<String>,
) -> Option<LogForwardSettings> {
    let before = errors.len();
    let host = match raw.collector.rsplit_once(':') {
        Some((host, port))
            if !host.is_empty()
                && !host.contains(['/', ' '])
                && port.parse::<u16>().is_ok_and(|p| p > 0) =>
        {
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned()
        }
        _ => {
            errors.push("log-forward.collector: host:port, port 1-65535".into());
            String::new()
        }
    };
    let server_name = raw.server_name.clone().unwrap_or(host);
    if rustls::pki_types::ServerName::try_from(server_name.clone()).is_err() {
        errors.push(format!(
            "log-forward.server-name: {server_name:?} is not a DNS name or IP address"
        ));
    }
    let mut absolute = |key: &str, p: &Path| {
        if !p.is_absolute() {
            errors.push(format!("log-forward.{key}: must be an absolute path"));
        }
    };
    absolute("ca-file", &raw.ca_file);
    let client = match (&raw.cert_file, &raw.key_file) {
        (None, None) => ClientCert::Device,
        (Some(cert), Some(key)) => {
            absolute("cert-file", cert);
            absolute("key-file", key);
            ClientCert::Files {
                cert: cert.clone(),
                key: key.clone(),
            }
        }
        (Some(_), None) | (None, Some(_)) => {
            errors.push(
                "log-forward.cert-file, key-file: give both, or neither for the device certificate"
                    .into(),
            );
            ClientCert::Device
        }
    };
    let cursor_file = raw
        .cursor_file
        .clone()
        .unwrap_or_else(|| default_cursor(data_dir));
    if !cursor_file.is_absolute() || cursor_file.file_name().is_none() {
        errors.push("log-forward.cursor-file: an absolute path to a file".into());
    }
    if !(1..=3_600_000).contains(&raw.confirm_interval_ms) {
        errors.push("log-forward.confirm-interval-ms: 1..=3600000".into());
    }
    if !(1..=1_000_000).contains(&raw.confirm_max_entries) {
        errors.push("log-forward.confirm-max-entries: 1..=1000000".into());
    }
    if raw.max_backlog_entries < 5 || raw.max_backlog_entries > 1_000_000_000 {
        errors.push("log-forward.max-backlog-entries: 5..=1000000000".into());
    }
    match raw.when_full.as_str() {
        "alarm" => {}
        "drop-oldest" | "refuse-new" => errors.push(format!(
            "log-forward.when-full: {:?} is not offered: the backlog is the local log itself, so nothing is dropped or refused; a full backlog raises the alarm (\"alarm\")",
            raw.when_full
        )),
        _ => errors.push("log-forward.when-full: \"alarm\"".into()),
    }
    (errors.len() == before).then(|| LogForwardSettings {
        collector: raw.collector.clone(),
        server_name,
        ca_file: raw.ca_file.clone(),
        client,
        cursor_file,
        confirm_interval: Duration::from_millis(raw.confirm_interval_ms),
        confirm_max_entries: raw.confirm_max_entries,
        max_backlog_entries: raw.max_backlog_entries,
    })
}

/// Checks `[tamper]` with the platform's own validation; every problem names the input.
pub(super) fn validate_tamper(
    raw: &kawal_platform::tamper::Config,
    errors: &mut Vec<String>,
) -> kawal_platform::tamper::ValidConfig {
    match raw.validate() {
        Ok(v) => v,
        Err(kawal_platform::tamper::Error::InvalidConfig { problems }) => {
            errors.extend(problems.into_iter().map(|p| format!("tamper.{p}")));
            kawal_platform::tamper::ValidConfig::default()
        }
        Err(e) => {
            errors.push(format!("tamper: {e}"));
            kawal_platform::tamper::ValidConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic, reason = "tests")]
    use super::*;

    fn check(text: &str) -> (Option<LogForwardSettings>, Vec<String>) {
        let raw: RawLogForward = toml::from_str(text).unwrap_or_else(|e| panic!("{e}"));
        let mut errors = Vec::new();
        let s = validate_log_forward(&raw, Path::new("/var/lib/kawal"), &mut errors);
        (s, errors)
    }

    /// G045: PL-4-2
    #[test]
    fn log_forward_defaults_use_the_device_identity_and_the_data_dir() {
        let (s, errors) = check("collector = \"logs.example.net:6514\"\nca-file = \"/etc/ca.pem\"");
        assert!(errors.is_empty(), "{errors:?}");
        let s = s.unwrap();
        assert_eq!(s.server_name, "logs.example.net");
        assert_eq!(s.client, ClientCert::Device);
        assert_eq!(
            s.cursor_file,
            Path::new("/var/lib/kawal/log-forward.cursor")
        );
        assert_eq!(s.confirm_interval, Duration::from_secs(2));
        assert_eq!(s.confirm_max_entries, 1000);
        assert_eq!(s.max_backlog_entries, 1_000_000);
    }

    /// G045: PL-4-2
    #[test]
    fn log_forward_collects_every_problem_and_refuses_dropping() {
        let (s, errors) = check(
            "collector = \"nohost\"\nca-file = \"rel.pem\"\ncert-file = \"/c.pem\"\nconfirm-max-entries = 0\nmax-backlog-entries = 1\nwhen-full = \"drop-oldest\"",
        );
        assert!(s.is_none());
        for key in [
            "collector",
            "ca-file",
            "cert-file, key-file",
            "confirm-max-entries",
            "max-backlog-entries",
            "when-full",
        ] {
            assert!(
                errors
                    .iter()
                    .any(|e| e.starts_with(&format!("log-forward.{key}"))),
                "{key}: {errors:?}"
            );
        }
        assert!(errors.iter().any(|e| e.contains("nothing is dropped")));
        assert!(
            toml::from_str::<RawLogForward>("collector = \"a:1\"\nca-file = \"/x\"\nport = 1")
                .is_err()
        );
    }

    /// G045: PH-2-1
    #[test]
    fn tamper_problems_name_the_section_and_input() {
        let raw = kawal_platform::tamper::Config::from_toml(
            "[[input]]\nname = \"lid\"\nkind = \"file\"\npath = \"rel\"\n",
        )
        .unwrap();
        let mut errors = Vec::new();
        validate_tamper(&raw, &mut errors);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with("tamper.input 1 \"lid\": path"),
            "{errors:?}"
        );
    }
}
