//! The gateway's own certificate (G045 AU-1-10): renewal without a restart, and warnings
//! before it, or the sensor CA, expires.
//!
//! The device certificate is `<data>/pki/device.crt.pem` (the leaf first, then any chain it
//! comes with; a dev device also presents `pki/dev-ca.crt.pem`); its key is sealed in the
//! store and never changes. [`Watch`], a daemon task, re-reads the file every 60 s and on
//! SIGHUP. A changed file is checked ([`check`]: every block a certificate, the leaf for the
//! device key, valid now) and then put in force on the HTTPS API (its
//! [`TlsHandle`](kawal_api::tls::TlsHandle)) and on the MQTT listener
//! ([`CertReloader`](crate::gateway::CertReloader)): connections accepted from then on get the
//! new certificate, live ones keep their session. A file that fails a check is refused and the
//! previous certificate stays in force. Both are audit events: `certificate.renewed` (old and
//! new serial, not-after and SHA-256) and `certificate.refused` (the reason), the latter once
//! per distinct file content, not once a minute.
//!
//! When the upstream bridge presents the device certificate (no `[upstream] cert-file`), it is
//! given the renewed one too and reconnects with it at once (`in_force_on` says
//! `api,mqtt,upstream`; the bridge records `bridge.identity-reloaded`).
//!
//! With `[device.renewal]`, the task also renews the certificate itself over EST from the CA
//! that issued it ([`renew`]), and it follows the clock against the floor sensor certificates
//! are checked at ([`clock_floor`]; `clock.behind` when the clock reads earlier).
//!
//! The same task follows the expiry of the device certificate in force and of the sensor CA:
//! when one enters "30 days or less", "7 days or less" or "expired", one `certificate.expiring`
//! event and a warning. The last state of each is kept in the store's health table, so a
//! restart does not repeat a warning and a renewed certificate starts afresh.
//!
//! `kawal cert install` ([`install`]) makes the same checks on a new certificate and writes it
//! atomically; a running daemon puts it in force within a minute (at once on SIGHUP), otherwise
//! it is used at the next start. `kawal cert reissue-dev` ([`reissue_dev`]) renews a dev
//! device's certificate from the dev CA made at provisioning; `kawal cert csr` ([`csr`]) writes
//! a request for the device key, for renewal by hand.
use std::collections::BTreeMap;

use std::sync::Arc;
use std::time::Duration;

use kawal_api::tls::{ClientAuth, TlsHandle, TlsIdentity};
use kawal_audit::{AuditLog, Event, Outcome, WallTime};
use kawal_pki::{ExpiryState, IdentityKey, expiry_state};
use serde_json::{Value, json};

use crate::config::ValidConfig;
use crate::device::{self, Device, tables};
use crate::error::{CliError, Exit, Result};
use crate::gateway::CertReloader;
use crate::serve;

mod cli;
pub mod clock_floor;
pub mod renew;

pub use cli::{csr, install, reissue_dev};

/// How often the daemon re-reads the certificate file.
const CHECK_EVERY: Duration = Duration::from_secs(60);
/// The health-table record of the device certificate in force ([`InForce`]).
pub const IN_FORCE_RECORD: &str = "device-certificate";
/// The health-table record of the last expiry state of each certificate watched.
const EXPIRY_RECORD: &str = "certificate-expiry";
/// The device certificate, as events and records name it.
const DEVICE: &str = "device";
/// The sensor CA, as events and records name it.
const SENSOR_CA: &str = "sensor-ca";
/// Larger certificate files are refused unread (a chain of a few certificates is ~3 KiB).
const MAX_FILE: u64 = 256 * 1024;

/// The check period: 60 s; in debug builds `KAWAL_DEVCERT_CHECK_S` (1 to 3600) may shorten
/// it, so tests need not wait a minute. Release builds ignore it.
fn period() -> Duration {
    if cfg!(debug_assertions)
        && let Some(s) = std::env::var("KAWAL_DEVCERT_CHECK_S")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|s| (1..=3600).contains(s))
    {
        return Duration::from_secs(s);
    }
    CHECK_EVERY
}

fn now_s() -> i64 {
    WallTime::now().unix_micros() / 1_000_000
}

/// A Unix time as RFC 3339 (UTC), for events and the console.
pub(crate) fn rfc3339(unix_s: i64) -> String {
    WallTime::from_unix_micros(unix_s.saturating_mul(1_000_000))
        .map_or_else(|| unix_s.to_string(), |t| t.to_string())
}

/// Whole days from `now` to `not_after` (negative once past it).
pub fn days_left(not_after: i64, now: i64) -> i64 {
    not_after.saturating_sub(now) / 86_400
}

/// What is known about a certificate (the leaf of a chain) once it has been read.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LeafFacts {
    /// Subject common name (empty if none).
    pub subject: String,
    /// Issuer common name (empty if none).
    pub issuer: String,
    /// Serial number, lowercase hex.
    pub serial: String,
    /// Start of validity, Unix seconds.
    pub not_before: i64,
    /// End of validity, Unix seconds.
    pub not_after: i64,
    /// SHA-256 of the DER, lowercase hex.
    pub sha256: String,
}

/// Why a certificate was not put in force. None of these carries key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The file could not be read, or a block is not a readable certificate.
    Unreadable(String),
    /// The file holds no certificate.
    NoCertificate,
    /// The leaf certifies another key than the device's: whoever holds that key could
    /// impersonate the gateway, and the device could not use it anyway.
    OtherKey,
    /// The leaf is not valid yet.
    NotYetValid {
        /// Its start of validity, Unix seconds.
        not_before: i64,
    },
    /// The leaf has expired.
    Expired {
        /// Its end of validity, Unix seconds.
        not_after: i64,
    },
    /// TLS refused the certificate with the device key (e.g. an unsupported chain).
    Unusable(String),
}

impl Refusal {
    /// A short name for the audit log (`certificate.refused` `reason`).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unreadable(_) => "unreadable",
            Self::NoCertificate => "no-certificate",
            Self::OtherKey => "other-key",
            Self::NotYetValid { .. } => "not-yet-valid",
            Self::Expired { .. } => "expired",
            Self::Unusable(_) => "not-usable",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unreadable(why) => write!(f, "certificate unreadable: {why}"),
            Self::NoCertificate => f.write_str("the file holds no certificate"),
            Self::OtherKey => f.write_str("the certificate is for another key than the device's"),
            Self::NotYetValid { not_before } => {
                write!(
                    f,
                    "the certificate is not valid before {}",
                    rfc3339(*not_before)
                )
            }
            Self::Expired { not_after } => {
                write!(f, "the certificate expired at {}", rfc3339(*not_after))
            }
            Self::Unusable(why) => write!(f, "TLS refused the certificate: {why}"),
        }
    }
}

/// Reads `chain_pem` (leaf first): every PEM block must be a readable certificate. Returns the
/// leaf's facts and its SubjectPublicKeyInfo DER.
pub fn read_chain(chain_pem: &str) -> std::result::Result<(LeafFacts, Vec<u8>), Refusal> {
    let mut leaf = None;
    for pem in x509_parser::pem::Pem::iter_from_buffer(chain_pem.as_bytes()) {
        let pem = pem.map_err(|e| Refusal::Unreadable(format!("PEM: {e}")))?;
        if pem.label != "CERTIFICATE" {
            // Only the label is named: the block may be a private key.
            let label: String = pem
                .label
                .chars()
                .filter(char::is_ascii_graphic)
                .take(32)
                .collect();
            return Err(Refusal::Unreadable(format!(
                "a {label} block where only certificates belong"
            )));
        }
        let cert = pem
            .parse_x509()
            .map_err(|e| Refusal::Unreadable(format!("X.509: {e}")))?;
        if leaf.is_none() {
            let cn = |n: &x509_parser::x509::X509Name<'_>| {
                n.iter_common_name()
                    .next()
                    .and_then(|a| a.as_str().ok())
                    .unwrap_or_default()
                    .to_owned()
            };
            leaf = Some((
                LeafFacts {
                    subject: cn(cert.subject()),
                    issuer: cn(cert.issuer()),
                    serial: kawal_pki::serial_hex(cert.raw_serial()),
                    not_before: cert.validity().not_before.timestamp(),
                    not_after: cert.validity().not_after.timestamp(),
                    sha256: hex::encode(kawal_crypto::sha256(&pem.contents)),
                },
                cert.public_key().raw.to_vec(),
            ));
        }
    }
    leaf.ok_or(Refusal::NoCertificate)
}

/// Checks a candidate device certificate chain: readable, the leaf for the key whose
/// SubjectPublicKeyInfo is `device_spki`, and valid at `now` (Unix seconds).
///
/// # Errors
/// The first [`Refusal`] that applies.
pub fn check(
    chain_pem: &str,
    device_spki: &[u8],
    now: i64,
) -> std::result::Result<LeafFacts, Refusal> {
    let (facts, spki) = read_chain(chain_pem)?;
    if spki != device_spki {
        return Err(Refusal::OtherKey);
    }
    if now < facts.not_before {
        return Err(Refusal::NotYetValid {
            not_before: facts.not_before,
        });
    }
    if expiry_state(facts.not_after, now) == ExpiryState::Expired {
        return Err(Refusal::Expired {
            not_after: facts.not_after,
        });
    }
    Ok(facts)
}

/// The device key's SubjectPublicKeyInfo, from the key sealed in the store.
fn device_spki(dev: &Device) -> Result<Vec<u8>> {
    let key = serve::device_key(dev)?;
    Ok(IdentityKey::from_pkcs8_der(&key)
        .map_err(|e| CliError::new(Exit::DataErr, format!("device key: {e}")))?
        .public_key_der())
}

/// The last expiry state seen of one certificate.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExpirySeen {
    /// The certificate (SHA-256 of the DER): a renewed one starts afresh.
    pub sha256: String,
    /// Its state at the last check ([`ExpiryState::as_str`]).
    pub state: String,
}

/// Whether a certificate `sha256` in `state` is news against what was `seen` last: a warning
/// state (30 days, 7 days, expired) that this certificate was not in at the last check.
pub fn expiry_news(seen: Option<&ExpirySeen>, sha256: &str, state: ExpiryState) -> bool {
    state != ExpiryState::Ok && seen.is_none_or(|s| s.sha256 != sha256 || s.state != state.as_str())
}

/// The `certificate.expiring` event.
fn expiring_event(which: &str, f: &LeafFacts, state: ExpiryState, now: i64) -> Event {
    Event::new(
        "certificate.expiring",
        "kawal",
        if state == ExpiryState::Expired {
            Outcome::Failure
        } else {
            Outcome::Info
        },
    )
    .with("certificate", which)
    .with("subject", f.subject.as_str())
    .with("serial", f.serial.as_str())
    .with("not_after", rfc3339(f.not_after))
    .with("days_left", days_left(f.not_after, now))
    .with("state", state.as_str())
    .with("sha256", f.sha256.as_str())
}

/// The device certificate in force, as the daemon keeps it in the health table.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct InForce {
    /// Its facts.
    pub facts: LeafFacts,
    /// Since when the daemon presents it (RFC 3339).
    pub since: String,
    /// The last certificate file refused while this one was in force.
    pub refused: Option<RefusedRecord>,
    /// Automatic renewal over EST, when configured.
    #[serde(default)]
    pub renewal: Option<RenewalRecord>,
}

/// Where automatic renewal stands, for the health answer and the console.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RenewalRecord {
    /// The EST server.
    pub est_url: String,
    /// From when the certificate in force is renewed (RFC 3339).
    pub renew_from: String,
    /// Failed attempts since the last success.
    pub failures: u32,
    /// The last failure's reason.
    pub last_error: Option<String>,
}

/// A refused certificate file, for the console.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RefusedRecord {
    /// When (RFC 3339).
    pub at: String,
    /// [`Refusal::reason`].
    pub reason: String,
    /// [`Refusal`]'s text.
    pub detail: String,
}

/// The device certificate for the health answer (and the console's dashboard): the one in
/// force, its end of validity, days left and expiry state.
pub fn health(dev: &Device) -> Value {
    let now = now_s();
    let kept: Option<InForce> = dev.get_json(tables::HEALTH, IN_FORCE_RECORD).ok().flatten();
    let (facts, since, refused, renewal) = match kept {
        Some(k) => (Some(k.facts), Some(k.since), k.refused, k.renewal),
        None => (
            serve::device_chain(dev)
                .ok()
                .and_then(|c| read_chain(&c).ok())
                .map(|(f, _)| f),
            None,
            None,
            None,
        ),
    };
    let Some(f) = facts else {
        return json!({ "state": "unknown", "detail": "no readable device certificate" });
    };
    let state = expiry_state(f.not_after, now);
    json!({
        "subject": f.subject,
        "issuer": f.issuer,
        "serial": f.serial,
        "not_before": rfc3339(f.not_before),
        "not_after": rfc3339(f.not_after),
        "days_left": days_left(f.not_after, now),
        "state": state.as_str(),
        "sha256": f.sha256,
        "in_force_since": since,
        "last_refused": refused,
        "renewal": renewal,
    })
}

/// The daemon task that puts a renewed device certificate in force and warns of expiry.
pub struct Watch {
    dev: Arc<Device>,
    log: Arc<AuditLog>,
    api: TlsHandle,
    client_auth: Option<ClientAuth>,
    mqtt: CertReloader,
    /// The sensors, whose certificates are watched for expiry too.
    sensors: Arc<kawal_pki::Sensors>,
    /// The upstream bridge, when it presents the device certificate (it reloads with it).
    bridge: Option<Arc<kawal_gateway::bridge::BridgeHandle>>,
    /// The clock floor the MQTT listener checks sensor certificates at (see
    /// [`kawal_gateway::clock`]): raised while the kernel says the clock is synchronised.
    floor: Arc<kawal_gateway::clock::ClockFloor>,
    /// The clock reads earlier than the floor (recorded once per episode).
    behind: bool,
    period: Duration,
    /// The chain in force, as [`serve::device_chain`] builds it.
    in_force: String,
    facts: Option<LeafFacts>,
    /// SHA-256 of the last content refused, so a refusal is recorded once.
    refused: Option<[u8; 32]>,
    /// Renewal over EST, if configured.
    renewal: Option<renew::Renewer>,
}

impl Watch {
    /// The watch over what the daemon started with.
    ///
    /// # Errors
    /// The certificate file cannot be read (it was read moments ago to start the listeners).
    pub fn new(
        dev: &Arc<Device>,
        config: &ValidConfig,
        api: &serve::Prepared,
        gateway: &crate::gateway::Running,
    ) -> Result<Self> {
        let in_force = serve::device_chain(dev)?;
        let facts = read_chain(&in_force).ok().map(|(f, _)| f);
        let watch = Self {
            dev: Arc::clone(dev),
            log: Arc::clone(&api.state.audit),
            api: api.tls.clone(),
            client_auth: api.client_auth.clone(),
            mqtt: gateway.cert_reloader(),
            sensors: Arc::clone(&gateway.registry),
            bridge: gateway.bridge.clone().filter(|_| {
                config
                    .gateway
                    .upstream
                    .as_ref()
                    .is_some_and(|u| u.cert_file.is_none())
            }),
            floor: gateway.clock_floor(),
            behind: false,
            period: period(),
            in_force,
            facts,
            refused: None,
            renewal: config
                .renewal
                .clone()
                .map(renew::Renewer::new)
                .transpose()?,
        };
        watch.keep_in_force(None);
        Ok(watch)
    }

    /// Checks at once, then every period and on SIGHUP, until the task is aborted.
    pub async fn run(mut self) {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "no SIGHUP handler: the certificate is checked on the timer only");
                None
            }
        };
        let mut tick = tokio::time::interval(self.period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tracing::info!(
            period_s = self.period.as_secs(),
            "device-certificate watch started (re-checked on SIGHUP too)"
        );
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                Some(()) = async {
                    match hup.as_mut() {
                        Some(h) => h.recv().await,
                        None => std::future::pending().await,
                    }
                } => tracing::info!("SIGHUP: checking the device certificate"),
            }
            // File, store and audit-log I/O: off the async workers.
            self = match tokio::task::spawn_blocking(move || {
                self.check_now();
                self
            })
            .await
            {
                Ok(w) => w,
                Err(e) => {
                    tracing::error!(error = %e, "the device-certificate watch stopped");
                    return;
                }
            };
        }
    }

    /// One round: the clock, the file, renewal over EST if due, then expiry.
    fn check_now(&mut self) {
        self.check_clock();
        self.check_file("file");
        self.renew_if_due();
        self.check_expiry();
    }

    /// Asks the EST server for a renewed certificate when due; on success writes it and puts
    /// it in force, on failure records why and backs off (the certificate in force serves on).
    fn renew_if_due(&mut self) {
        let (Some(mut r), Some(f)) = (self.renewal.take(), self.facts.clone()) else {
            return;
        };
        let (now, mono) = (now_s(), std::time::Instant::now());
        if r.schedule.due(&f, r.settings.at_percent, now, mono) {
            let path = self.dev.layout.pki().join("device.crt.pem");
            let written = std::fs::read_to_string(&path)
                .map_err(|e| format!("{}: {e}", path.display()))
                .and_then(|current| r.attempt(&self.dev, &current, &self.in_force, now))
                .and_then(|chain| {
                    device::write_atomic(&path, chain.as_bytes(), 0o644).map_err(|e| e.message)
                });
            match written {
                Ok(()) => {
                    let before = self.facts.as_ref().map(|f| f.sha256.clone());
                    self.check_file("est");
                    if self.facts.as_ref().map(|f| f.sha256.clone()) == before {
                        // Written but refused when put in force (certificate.refused says
                        // why): back off as after a failure rather than ask again each minute.
                        r.schedule.failed(&r.settings, mono, renew::jitter());
                        r.last_error =
                            Some("the renewed certificate was not put in force".to_owned());
                    } else {
                        r.schedule.succeeded();
                        r.last_error = None;
                        tracing::info!(url = %r.settings.est_url, "device certificate renewed over EST");
                    }
                }
                Err(reason) => {
                    let wait = r.schedule.failed(&r.settings, mono, renew::jitter());
                    tracing::warn!(
                        url = %r.settings.est_url,
                        %reason,
                        retry_in_s = wait.as_secs(),
                        "device certificate renewal failed; the certificate in force serves on"
                    );
                    self.record(
                        Event::new("certificate.renewal-failed", "kawal", Outcome::Failure)
                            .with("certificate", DEVICE)
                            .with("est_url", r.settings.est_url.as_str())
                            .with("reason", reason.as_str())
                            .with("attempt", u64::from(r.schedule.failures()))
                            .with("retry_in_s", wait.as_secs())
                            .with("in_force_serial", f.serial.as_str())
                            .with("in_force_not_after", rfc3339(f.not_after))
                            .with("days_left", days_left(f.not_after, now)),
                    );
                    r.last_error = Some(reason);
                }
            }
            self.renewal = Some(r);
            // The renewal's state for the health answer; a refused file stays on record.
            let refused = self
                .dev
                .get_json::<InForce>(tables::HEALTH, IN_FORCE_RECORD)
                .ok()
                .flatten()
                .and_then(|k| k.refused);
            self.keep_in_force(refused);
            return;
        }
        self.renewal = Some(r);
    }

    fn record(&self, event: Event) {
        if let Err(e) = self.log.append(event) {
            tracing::error!(error = %e, "audit log write failed");
        }
    }

    /// Puts a changed certificate file in force; `via` says how it came (`file`, `est`).
    fn check_file(&mut self, via: &str) {
        let candidate = match serve::device_chain(&self.dev) {
            Ok(c) => c,
            Err(e) => {
                let digest = kawal_crypto::sha256(e.message.as_bytes());
                self.refuse(digest, &Refusal::Unreadable(e.message));
                return;
            }
        };
        if candidate == self.in_force {
            self.refused = None;
            return;
        }
        let digest = kawal_crypto::sha256(candidate.as_bytes());
        if self.refused == Some(digest) {
            return;
        }
        match self.put_in_force(&candidate, now_s()) {
            Ok(new) => {
                let mut e = Event::new("certificate.renewed", "kawal", Outcome::Success)
                    .with("certificate", DEVICE)
                    .with("subject", new.subject.as_str())
                    .with("issuer", new.issuer.as_str())
                    .with("new_serial", new.serial.as_str())
                    .with("new_not_after", rfc3339(new.not_after))
                    .with("new_sha256", new.sha256.as_str())
                    .with("via", via)
                    .with("in_force_on", self.reload_bridge(&candidate));
                if let Some(old) = &self.facts {
                    e = e
                        .with("old_serial", old.serial.as_str())
                        .with("old_not_after", rfc3339(old.not_after))
                        .with("old_sha256", old.sha256.as_str());
                }
                self.record(e);
                tracing::info!(serial = %new.serial, not_after = %rfc3339(new.not_after), "renewed device certificate in force on the API and MQTT listeners");
                self.in_force = candidate;
                self.facts = Some(new);
                self.refused = None;
                self.keep_in_force(None);
            }
            Err(r) => self.refuse(digest, &r),
        }
    }

    /// Gives the upstream bridge the certificate just put in force (it reconnects with it);
    /// returns where the certificate is now in force. The bridge records its own event.
    fn reload_bridge(&self, chain: &str) -> &'static str {
        let Some(bridge) = &self.bridge else {
            return "api,mqtt";
        };
        let reloaded = serve::device_key(&self.dev)
            .map_err(|e| e.message)
            .and_then(|key| {
                bridge
                    .reload_identity(kawal_gateway::bridge::ClientIdentity {
                        cert_chain_pem: chain.to_owned(),
                        key_pkcs8_der: key,
                    })
                    .map_err(|e| e.to_string())
            });
        match reloaded {
            Ok(()) => "api,mqtt,upstream",
            Err(e) => {
                tracing::error!(error = %e, "the upstream bridge kept its previous certificate");
                "api,mqtt"
            }
        }
    }

    /// Follows the clock against the floor: raises (and keeps) the floor while the kernel
    /// says the clock is synchronised; records `clock.behind` once when the clock reads
    /// earlier than the floor (sensor certificates are then checked at the floor).
    fn check_clock(&mut self) {
        let now = now_s();
        let sync = kawal_platform::clock::kernel_sync_state();
        let floor = self.floor.get();
        if now < floor {
            if !self.behind {
                self.behind = true;
                tracing::warn!(clock = %rfc3339(now), floor = %rfc3339(floor), kernel = sync.as_str(), "the clock reads earlier than times this device has already seen; sensor certificates are checked at the floor");
                self.record(
                    Event::new("clock.behind", "kawal", Outcome::Failure)
                        .with("clock", rfc3339(now))
                        .with("floor", rfc3339(floor))
                        .with("kernel", sync.as_str())
                        .with("effect", "sensor certificates are checked at the floor"),
                );
            }
            return;
        }
        self.behind = false;
        if sync == kawal_audit::ClockState::Synchronised {
            self.floor.raise(now);
            clock_floor::keep(&self.dev, now);
        }
    }

    fn refuse(&mut self, digest: [u8; 32], r: &Refusal) {
        if self.refused == Some(digest) {
            return;
        }
        self.refused = Some(digest);
        tracing::warn!(reason = r.reason(), detail = %r, "device certificate file refused; the previous certificate stays in force");
        let mut e = Event::new("certificate.refused", "kawal", Outcome::Denied)
            .with("certificate", DEVICE)
            .with("reason", r.reason())
            .with("detail", r.to_string())
            .with("content_sha256", hex::encode(digest));
        if let Some(f) = &self.facts {
            e = e.with("in_force_serial", f.serial.as_str());
        }
        self.record(e);
        self.keep_in_force(Some(RefusedRecord {
            at: WallTime::now().to_string(),
            reason: r.reason().to_owned(),
            detail: r.to_string(),
        }));
    }

    /// Checks `candidate` and swaps it into both listeners; nothing changes on an error.
    fn put_in_force(&self, candidate: &str, now: i64) -> std::result::Result<LeafFacts, Refusal> {
        let key = serve::device_key(&self.dev).map_err(|e| Refusal::Unusable(e.message))?;
        let spki = IdentityKey::from_pkcs8_der(&key)
            .map_err(|e| Refusal::Unusable(format!("device key: {e}")))?
            .public_key_der();
        let facts = check(candidate, &spki, now)?;
        let api = kawal_api::tls::server_config(
            &TlsIdentity {
                cert_chain_pem: candidate.to_owned(),
                key_pkcs8_der: key,
            },
            self.client_auth.as_ref(),
        )
        .map_err(|e| Refusal::Unusable(e.to_string()))?;
        // The MQTT listener first: it is the one that can still refuse.
        self.mqtt
            .reload_device_cert(candidate)
            .map_err(|e| Refusal::Unusable(e.message))?;
        self.api.replace(api);
        Ok(facts)
    }

    fn keep_in_force(&self, refused: Option<RefusedRecord>) {
        let Some(facts) = &self.facts else { return };
        let since = match self
            .dev
            .get_json::<InForce>(tables::HEALTH, IN_FORCE_RECORD)
        {
            Ok(Some(k)) if k.facts.sha256 == facts.sha256 => k.since,
            _ => WallTime::now().to_string(),
        };
        let renewal = self.renewal.as_ref().map(|r| RenewalRecord {
            est_url: r.settings.est_url.clone(),
            renew_from: rfc3339(renew::renew_from(
                facts.not_before,
                facts.not_after,
                r.settings.at_percent,
            )),
            failures: r.schedule.failures(),
            last_error: r.last_error.clone(),
        });
        let record = InForce {
            facts: facts.clone(),
            since,
            refused,
            renewal,
        };
        let stored = serde_json::to_vec(&record)
            .map_err(|e| e.to_string())
            .and_then(|json| {
                self.dev
                    .store
                    .put(tables::HEALTH, IN_FORCE_RECORD, &json)
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = stored {
            tracing::warn!(error = %e, "could not keep the device certificate's record");
        }
    }

    /// Active sensors whose certificate enters a warning state: one `sensor.certificate-expiring`
    /// per certificate and state (a sensor renews itself from two thirds of the lifetime on, so
    /// a warning means it has not).
    fn check_sensors(&self, seen: &mut BTreeMap<String, ExpirySeen>, now: i64) -> bool {
        let sensors = match self.sensors.list() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the sensors for their expiry");
                return false;
            }
        };
        let mut changed = false;
        for s in sensors
            .iter()
            .filter(|s| s.state == kawal_pki::SensorState::Active)
        {
            let (Some(serial), Some(not_after)) = (&s.serial, s.not_after) else {
                continue;
            };
            let which = format!("sensor:{}", s.uid);
            let state = expiry_state(not_after, now);
            let last = seen.get(&which);
            if expiry_news(last, serial, state) {
                tracing::warn!(
                    sensor = %s.uid,
                    not_after = %rfc3339(not_after),
                    state = state.as_str(),
                    "sensor certificate expiring: the sensor has not renewed (EST simplereenroll)"
                );
                self.record(
                    Event::new(
                        "sensor.certificate-expiring",
                        "kawal",
                        if state == ExpiryState::Expired {
                            Outcome::Failure
                        } else {
                            Outcome::Info
                        },
                    )
                    .with("uid", s.uid.as_str())
                    .with("serial", serial.as_str())
                    .with("not_after", rfc3339(not_after))
                    .with("days_left", days_left(not_after, now))
                    .with("state", state.as_str()),
                );
            }
            if last.is_none_or(|x| x.sha256 != *serial || x.state != state.as_str()) {
                seen.insert(
                    which,
                    ExpirySeen {
                        sha256: serial.clone(),
                        state: state.as_str().to_owned(),
                    },
                );
                changed = true;
            }
        }
        changed
    }

    fn check_expiry(&self) {
        let now = now_s();
        let mut seen: BTreeMap<String, ExpirySeen> = self
            .dev
            .get_json(tables::HEALTH, EXPIRY_RECORD)
            .ok()
            .flatten()
            .unwrap_or_default();
        let ca = read_chain(self.mqtt.sensor_ca_pem()).ok().map(|(f, _)| f);
        let mut changed = false;
        for (which, facts) in [(DEVICE, self.facts.as_ref()), (SENSOR_CA, ca.as_ref())] {
            let Some(f) = facts else { continue };
            let state = expiry_state(f.not_after, now);
            let last = seen.get(which);
            if expiry_news(last, &f.sha256, state) {
                tracing::warn!(
                    certificate = which,
                    not_after = %rfc3339(f.not_after),
                    days_left = days_left(f.not_after, now),
                    state = state.as_str(),
                    "certificate expiring: renew it (kawal cert install)"
                );
                self.record(expiring_event(which, f, state, now));
            }
            if last.is_none_or(|s| s.sha256 != f.sha256 || s.state != state.as_str()) {
                seen.insert(
                    which.to_owned(),
                    ExpirySeen {
                        sha256: f.sha256.clone(),
                        state: state.as_str().to_owned(),
                    },
                );
                changed = true;
            }
        }
        changed |= self.check_sensors(&mut seen, now);
        if changed {
            let stored = serde_json::to_vec(&seen)
                .map_err(|e| e.to_string())
                .and_then(|json| {
                    self.dev
                        .store
                        .put(tables::HEALTH, EXPIRY_RECORD, &json)
                        .map_err(|e| e.to_string())
                });
            if let Err(e) = stored {
                tracing::warn!(error = %e, "could not keep the certificates' expiry states");
            }
        }
    }
}

#[cfg(test)]
mod tests;
