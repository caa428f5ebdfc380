//! The one TOML configuration file, in two stages: [`RawConfig`] is what serde reads
//! (unknown keys refused), [`ValidConfig`] is what the daemon runs with. `validate` collects
//! every problem, each naming its key, so one run of `kawal config check` shows them all.
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use kawal_crypto::password::Argon2Params;
use serde::Deserialize;

use crate::error::{CliError, Exit, Result};

pub mod forward;
pub mod gateway;
pub mod platform;
pub mod update;

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
    /// Login attempts: lockout, source penalties, the verification pool.
    #[serde(default)]
    pub login: RawLogin,
    /// Management sessions.
    #[serde(default)]
    pub sessions: RawSessions,
    /// The HTTPS API.
    #[serde(default)]
    pub api: RawApi,
    /// The sensors' MQTT listener.
    #[serde(default)]
    pub mqtt: gateway::RawMqtt,
    /// The upstream broker (none: telemetry stays queued).
    pub upstream: Option<gateway::RawUpstream>,
    /// The store-and-forward queue.
    #[serde(default)]
    pub queue: gateway::RawQueue,
    /// Sensor enrolment and certificates.
    #[serde(default)]
    pub sensors: gateway::RawSensors,
    /// The signed integrity manifest and its checks (PL-1-4).
    #[serde(default)]
    pub integrity: platform::RawIntegrity,
    /// Services and interfaces: the exposure policy (`kawal_platform::exposure::Policy`, whose
    /// own parser refuses unknown keys) plus `period-s` (PL-3-1, PH-1-1, PH-1-2).
    pub exposure: Option<toml::Table>,
    /// Forwarding of the audit log to a remote collector (PL-4-2); none: not forwarded.
    pub log_forward: Option<forward::RawLogForward>,
    /// Tamper inputs (PH-2-1); none: no tamper detection.
    #[serde(default)]
    pub tamper: kawal_platform::tamper::Config,
    /// Signed updates (PL-2-1..PL-2-3); none: updates off.
    pub update: Option<update::RawUpdate>,
}

/// `[device]`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawDevice {
    /// Namespace under which hardware identity becomes the device UID.
    #[serde(default = "default_vendor")]
    pub vendor_namespace: String,
    /// `[device.renewal]`: renew the device certificate over EST from the CA that issued it.
    pub renewal: Option<RawRenewal>,
}

impl Default for RawDevice {
    fn default() -> Self {
        Self {
            vendor_namespace: default_vendor(),
            renewal: None,
        }
    }
}

/// `[device.renewal]`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawRenewal {
    /// The EST server's base URL, `https://host:port` (an optional path prefix is kept).
    pub est_url: String,
    /// The CA (PEM) of the EST server's certificate: pinned, the system roots are not used.
    pub ca_file: PathBuf,
    /// Renew from this share of the certificate's lifetime on, in percent.
    #[serde(default = "d_at_percent")]
    pub at_lifetime_percent: u8,
    /// Seconds to wait after the first failed attempt (doubling after each further one).
    #[serde(default = "d_retry_min")]
    pub retry_min_s: u64,
    /// The longest wait between attempts, seconds.
    #[serde(default = "d_retry_max")]
    pub retry_max_s: u64,
}

fn d_at_percent() -> u8 {
    67
}
fn d_retry_min() -> u64 {
    60
}
fn d_retry_max() -> u64 {
    6 * 3600
}

fn validate_renewal(
    r: &RawRenewal,
    errors: &mut Vec<String>,
) -> Option<crate::devcert::renew::Settings> {
    let before = errors.len();
    match r.est_url.strip_prefix("https://") {
        Some(rest)
            if !rest.is_empty() && !rest.starts_with('/') && !rest.contains(['?', '#', ' ']) => {}
        _ => errors.push(
            "device.renewal.est-url: an https:// URL with a host (no query or fragment)".into(),
        ),
    }
    if !r.ca_file.is_absolute() {
        errors.push("device.renewal.ca-file: must be an absolute path".into());
    }
    if !(1..=99).contains(&r.at_lifetime_percent) {
        errors.push("device.renewal.at-lifetime-percent: must be 1..=99".into());
    }
    if !(1..=86_400).contains(&r.retry_min_s) {
        errors.push("device.renewal.retry-min-s: must be 1..=86400".into());
    }
    if r.retry_max_s < r.retry_min_s || r.retry_max_s > 7 * 86_400 {
        errors.push("device.renewal.retry-max-s: must be retry-min-s..=604800".into());
    }
    (errors.len() == before).then(|| crate::devcert::renew::Settings {
        est_url: r.est_url.clone(),
        ca_file: r.ca_file.clone(),
        at_percent: r.at_lifetime_percent,
        retry_min: std::time::Duration::from_secs(r.retry_min_s),
        retry_max: std::time::Duration::from_secs(r.retry_max_s),
    })
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
    /// Fewest characters (default 12; at least 8).
    #[serde(default = "default_min_length")]
    pub min_length: usize,
    /// Most characters (default 128; at least 64).
    #[serde(default = "default_max_length")]
    pub max_length: usize,
    /// Lowest strength-estimator score accepted, 0-4 (default 3).
    #[serde(default = "default_min_score")]
    pub min_score: u8,
    /// Previous passwords a new one may not equal (default 5).
    #[serde(default = "default_history")]
    pub history: usize,
    /// Days after which a password must be changed (0 = never, the default, as SP 800-63B advises).
    #[serde(default)]
    pub max_age_days: u64,
}

impl Default for RawPasswords {
    fn default() -> Self {
        Self {
            argon2_memory_kib: default_m(),
            argon2_passes: default_t(),
            argon2_lanes: default_p(),
            allow_weak_hashing: false,
            min_length: default_min_length(),
            max_length: default_max_length(),
            min_score: default_min_score(),
            history: default_history(),
            max_age_days: 0,
        }
    }
}

fn default_min_length() -> usize {
    12
}
fn default_max_length() -> usize {
    128
}
fn default_min_score() -> u8 {
    3
}
fn default_history() -> usize {
    5
}

/// `[login]`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawLogin {
    /// Consecutive failures that lock an account (default 5).
    #[serde(default = "d_threshold")]
    pub lockout_threshold: u32,
    /// Seconds within which failures count as consecutive (default 900).
    #[serde(default = "d_900")]
    pub lockout_window_s: u64,
    /// First lock in seconds, doubling on repeat (default 900).
    #[serde(default = "d_900")]
    pub lockout_s: u64,
    /// Longest lock in seconds (default 86400).
    #[serde(default = "d_day")]
    pub lockout_max_s: u64,
    /// Failures per account per 24 hours that lock it for the rest of the day (default 100).
    #[serde(default = "d_cap")]
    pub daily_cap: u32,
    /// Failures from one address before penalties start (default 3).
    #[serde(default = "d_free")]
    pub source_free_failures: u32,
    /// Seconds of penalty added per further failure from one address (default 2).
    #[serde(default = "d_per")]
    pub source_penalty_s: u64,
    /// Longest source penalty (default 600 s).
    #[serde(default = "d_600")]
    pub source_penalty_max_s: u64,
    /// Management networks never penalised (CIDR), so the owner cannot be locked out.
    #[serde(default)]
    pub exempt: Vec<String>,
    /// Password verifications at once (0 = one per CPU).
    #[serde(default)]
    pub verify_workers: usize,
    /// Verifications that may wait before attempts are refused as busy (default 16).
    #[serde(default = "d_queue")]
    pub verify_queue: usize,
}

impl Default for RawLogin {
    fn default() -> Self {
        Self {
            lockout_threshold: d_threshold(),
            lockout_window_s: d_900(),
            lockout_s: d_900(),
            lockout_max_s: d_day(),
            daily_cap: d_cap(),
            source_free_failures: d_free(),
            source_penalty_s: d_per(),
            source_penalty_max_s: d_600(),
            exempt: Vec::new(),
            verify_workers: 0,
            verify_queue: d_queue(),
        }
    }
}

fn d_threshold() -> u32 {
    5
}
fn d_900() -> u64 {
    900
}
fn d_day() -> u64 {
    86_400
}
fn d_cap() -> u32 {
    100
}
fn d_free() -> u32 {
    3
}
fn d_per() -> u64 {
    2
}
fn d_600() -> u64 {
    600
}
fn d_queue() -> usize {
    16
}

/// `[sessions]`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawSessions {
    /// Seconds without a request before a session ends (default 600).
    #[serde(default = "d_600")]
    pub idle_timeout_s: u64,
    /// Seconds after login when a session ends regardless (default 28800).
    #[serde(default = "d_lifetime")]
    pub lifetime_s: u64,
    /// A second login of an admin account: "end-previous" (default) or "refuse-new".
    #[serde(default = "d_concurrency")]
    pub admin_concurrency: String,
    /// Seconds a re-authentication proof stays valid (default 300).
    #[serde(default = "d_reauth")]
    pub reauth_window_s: u64,
}

impl Default for RawSessions {
    fn default() -> Self {
        Self {
            idle_timeout_s: d_600(),
            lifetime_s: d_lifetime(),
            admin_concurrency: d_concurrency(),
            reauth_window_s: d_reauth(),
        }
    }
}

fn d_lifetime() -> u64 {
    28_800
}
fn d_concurrency() -> String {
    "end-previous".into()
}
fn d_reauth() -> u64 {
    300
}

/// `[api]`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawApi {
    /// Most TLS connections at once (default 256).
    #[serde(default = "d_conns")]
    pub max_connections: usize,
    /// CA (PEM) whose client certificates may authenticate automation (PL-3-2).
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    /// Client certificates (SHA-256 of the DER, hex) and the account each acts as.
    #[serde(default)]
    pub client_certs: std::collections::BTreeMap<String, String>,
}

impl Default for RawApi {
    fn default() -> Self {
        Self {
            max_connections: d_conns(),
            client_ca_file: None,
            client_certs: std::collections::BTreeMap::new(),
        }
    }
}

fn d_conns() -> usize {
    256
}

/// The account, password, login and session settings, validated.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// Password rules.
    pub policy: kawal_auth::policy::Policy,
    /// Previous passwords remembered.
    pub history: usize,
    /// Maximum password age in seconds.
    pub max_age: Option<u64>,
    /// Account lockout.
    pub lockout: kawal_auth::lockout::LockoutPolicy,
    /// Per-address penalties.
    pub penalty: kawal_auth::penalty::PenaltyPolicy,
    /// Sessions.
    pub session: kawal_auth::session::SessionPolicy,
    /// Re-authentication window, seconds.
    pub reauth_window: u64,
    /// Argon2id workers.
    pub verify_workers: usize,
    /// Argon2id queue.
    pub verify_queue: usize,
    /// TLS connection cap.
    pub max_connections: usize,
    /// Client-certificate CA.
    pub client_ca_file: Option<PathBuf>,
    /// Client certificate fingerprints → accounts.
    pub client_certs: std::collections::HashMap<String, String>,
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
    /// Accounts, logins and sessions.
    pub auth: AuthSettings,
    /// Sensors, MQTT, queue and upstream.
    pub gateway: gateway::GatewaySettings,
    /// Renewal of the device certificate over EST, if configured.
    pub renewal: Option<crate::devcert::renew::Settings>,
    /// The integrity manifest and its checks.
    pub integrity: platform::IntegritySettings,
    /// The services and interfaces policy.
    pub exposure: platform::ExposureSettings,
    /// Forwarding of the audit log, if configured.
    pub log_forward: Option<forward::LogForwardSettings>,
    /// The tamper inputs (none: tamper detection off).
    pub tamper: kawal_platform::tamper::ValidConfig,
    /// Signed updates, if configured.
    pub update: Option<update::UpdateSettings>,
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
        let auth = validate_auth(
            &self.passwords,
            &self.login,
            &self.sessions,
            &self.api,
            &mut errors,
            &mut insecure,
        );
        let renewal = self
            .device
            .renewal
            .as_ref()
            .and_then(|r| validate_renewal(r, &mut errors));
        let gateway = gateway::validate(
            &self.mqtt,
            self.upstream.as_ref(),
            &self.queue,
            &self.sensors,
            &mut errors,
            &mut insecure,
        );
        let integrity = platform::validate_integrity(
            &self.integrity,
            &self.data_dir,
            &mut errors,
            &mut insecure,
        );
        let own: Vec<SocketAddr> = api.into_iter().chain(mqtt).collect();
        let exposure =
            platform::validate_exposure(self.exposure.as_ref(), &own, &mut errors, &mut insecure);
        let log_forward = self
            .log_forward
            .as_ref()
            .and_then(|r| forward::validate_log_forward(r, &self.data_dir, &mut errors));
        let tamper = forward::validate_tamper(&self.tamper, &mut errors);
        let update = self
            .update
            .as_ref()
            .and_then(|r| update::validate_update(r, &self.data_dir, &mut errors));
        if integrity.on_mismatch == platform::OnMismatch::Reboot && self.update.is_none() {
            errors.push(
                "integrity.on-mismatch: \"reboot\" goes back to the other update slot and needs [update]".into(),
            );
        }
        match (api, mqtt, errors.is_empty()) {
            (Some(api), Some(mqtt), true) => Ok(ValidConfig {
                auth,
                gateway,
                renewal,
                integrity,
                exposure,
                log_forward,
                tamper,
                update,
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

fn validate_auth(
    pw: &RawPasswords,
    login: &RawLogin,
    sessions: &RawSessions,
    api: &RawApi,
    errors: &mut Vec<String>,
    insecure: &mut Vec<String>,
) -> AuthSettings {
    use kawal_auth::session::AdminConcurrency;
    let policy = kawal_auth::policy::Policy {
        min_length: pw.min_length,
        max_length: pw.max_length,
        min_score: pw.min_score,
        ..kawal_auth::policy::Policy::default()
    };
    if let Err(e) = policy.validate() {
        errors.push(format!("passwords: {e}"));
    }
    if pw.history > 24 {
        errors.push("passwords.history: at most 24".into());
    }
    if pw.max_age_days > 3650 {
        errors.push("passwords.max-age-days: at most 3650 (0 = never)".into());
    }
    if login.lockout_threshold == 0 || login.lockout_threshold > 10_000 {
        errors.push("login.lockout-threshold: 1..=10000".into());
    } else if login.lockout_threshold > 10 {
        insecure.push(format!(
            "login.lockout-threshold: {} failures before a lock (more than 10 weakens the brute-force limit)",
            login.lockout_threshold
        ));
    }
    if login.lockout_s == 0 || login.lockout_max_s < login.lockout_s || login.lockout_window_s == 0
    {
        errors.push("login.lockout-s, lockout-max-s, lockout-window-s: positive, and lockout-max-s >= lockout-s".into());
    }
    if login.daily_cap == 0 {
        errors.push("login.daily-cap: at least 1".into());
    }
    let mut exempt = Vec::new();
    for net in &login.exempt {
        match net.parse::<ipnet::IpNet>() {
            Ok(n) => {
                if n.prefix_len() == 0 {
                    insecure.push(format!(
                        "login.exempt: {n} exempts every address from source penalties"
                    ));
                }
                exempt.push(n);
            }
            Err(_) => errors.push(format!("login.exempt: '{net}' is not a CIDR network")),
        }
    }
    if login.verify_queue > 4096 || login.verify_workers > 64 {
        errors.push("login.verify-workers (<= 64) / verify-queue (<= 4096) out of range".into());
    }
    let admin_concurrency = match sessions.admin_concurrency.as_str() {
        "end-previous" => AdminConcurrency::EndPrevious,
        "refuse-new" => AdminConcurrency::RefuseNew,
        _ => {
            errors.push("sessions.admin-concurrency: \"end-previous\" or \"refuse-new\"".into());
            AdminConcurrency::EndPrevious
        }
    };
    if sessions.idle_timeout_s == 0 || sessions.idle_timeout_s > 3600 {
        errors.push("sessions.idle-timeout-s: 1..=3600".into());
    }
    if sessions.lifetime_s < sessions.idle_timeout_s || sessions.lifetime_s > 7 * 86_400 {
        errors.push("sessions.lifetime-s: at least idle-timeout-s, at most 7 days".into());
    }
    if sessions.reauth_window_s == 0 || sessions.reauth_window_s > 900 {
        errors.push("sessions.reauth-window-s: 1..=900".into());
    }
    if api.max_connections == 0 || api.max_connections > 65_536 {
        errors.push("api.max-connections: 1..=65536".into());
    }
    if let Some(p) = &api.client_ca_file
        && !p.is_absolute()
    {
        errors.push("api.client-ca-file: must be an absolute path".into());
    }
    let mut client_certs = std::collections::HashMap::new();
    for (fp, user) in &api.client_certs {
        let fp_norm = fp.replace(':', "").to_ascii_lowercase();
        if fp_norm.len() != 64 || !fp_norm.bytes().all(|b| b.is_ascii_hexdigit()) {
            errors.push(format!(
                "api.client-certs: '{fp}' is not a SHA-256 fingerprint (64 hex digits)"
            ));
        } else {
            client_certs.insert(fp_norm, user.clone());
        }
    }
    if !client_certs.is_empty() && api.client_ca_file.is_none() {
        errors.push("api.client-certs: needs api.client-ca-file (the CA that issues them)".into());
    }
    AuthSettings {
        policy,
        history: pw.history,
        max_age: (pw.max_age_days > 0).then(|| pw.max_age_days * 86_400),
        lockout: kawal_auth::lockout::LockoutPolicy {
            threshold: login.lockout_threshold,
            window: login.lockout_window_s,
            base_lock: login.lockout_s,
            max_lock: login.lockout_max_s,
            daily_cap: login.daily_cap,
        },
        penalty: kawal_auth::penalty::PenaltyPolicy {
            per_failure: login.source_penalty_s,
            free_failures: login.source_free_failures,
            max_penalty: login.source_penalty_max_s,
            exempt,
            ..kawal_auth::penalty::PenaltyPolicy::default()
        },
        session: kawal_auth::session::SessionPolicy {
            idle_timeout: sessions.idle_timeout_s,
            absolute_lifetime: sessions.lifetime_s,
            admin_concurrency,
        },
        reauth_window: sessions.reauth_window_s,
        verify_workers: if login.verify_workers == 0 {
            std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
        } else {
            login.verify_workers
        },
        verify_queue: login.verify_queue,
        max_connections: api.max_connections,
        client_ca_file: api.client_ca_file.clone(),
        client_certs,
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

/// The settings a device runs with when its configuration file sets nothing but the folder:
/// what `kawal audit` assumes when it is not given the file.
pub fn defaults_for(data_dir: &Path) -> Result<ValidConfig> {
    let mut table = toml::Table::new();
    table.insert(
        "data-dir".into(),
        toml::Value::String(data_dir.to_string_lossy().into_owned()),
    );
    let raw: RawConfig = table
        .try_into()
        .map_err(|e| CliError::new(Exit::Config, format!("defaults: {e}")))?;
    raw.validate()
        .map_err(|ConfigErrors(errs)| CliError::new(Exit::Config, errs.join("; ")))
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
