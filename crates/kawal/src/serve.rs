//! Starts the HTTPS management API inside the daemon: the device's TLS identity, the account
//! directory over the store, the session key, and the daemon's answers for health, report,
//! log verification, the platform watchers and the integrity check on demand.
use std::net::SocketAddr;
use std::sync::Arc;

use kawal_api::platform::VerifyError;
use kawal_api::{AppState, Backend, DeviceFacts, Settings};
use kawal_audit::AuditLog;
use kawal_auth::accounts::{Directory, DirectoryConfig};
use kawal_auth::login::Authenticator;
use kawal_auth::penalty::SourcePenalties;
use kawal_crypto::keys::Session as SessionPurpose;
use serde_json::json;

use crate::config::ValidConfig;
use crate::device::{Device, tables};
use crate::error::{CliError, Context, Exit, Result};

/// What key-using answers say once the tamper response has started.
const TAMPERED: &str = "device locked after tamper: its keys are destroyed";

/// The daemon's answers to the API.
pub struct DeviceBackend {
    dev: Arc<Device>,
    config: ValidConfig,
    watch: Arc<crate::watch::Status>,
    log: Arc<AuditLog>,
}

impl Backend for DeviceBackend {
    fn health(&self) -> serde_json::Value {
        let selftest: Option<crate::daemon::StoredSelfTest> =
            self.dev.get_json(tables::HEALTH, "selftest").ok().flatten();
        let clock = kawal_platform::clock::kernel_sync_state();
        let stats = self.dev.store.stats().ok();
        let (integrity, exposure) = self.watch.health();
        let (log_forward, tamper) = self.watch.response_health();
        json!({
            "integrity": integrity,
            "exposure": exposure,
            "log_forward": log_forward,
            "tamper": tamper,
            "uid": self.dev.info.uid,
            "product": crate::PRODUCT,
            "dev_device": self.dev.info.dev,
            "selftest": selftest.map(|s| json!({
                "passed": s.report.passed,
                "at": s.at,
                "checks": s.report.checks.len(),
                "micros": s.report.total_micros,
            })),
            "clock": {
                "synchronised": match clock {
                    kawal_audit::ClockState::Synchronised => Some(true),
                    kawal_audit::ClockState::Unsynchronised => Some(false),
                    kawal_audit::ClockState::Unknown => None,
                },
                "detail": format!("kernel reports {}", clock.as_str()),
            },
            "store": stats.map(|s| format!("{} data and {} personal records, sealed", s.data_records, s.pii_records)),
            "device_certificate": crate::devcert::health(&self.dev),
        })
    }

    fn report(&self) -> std::result::Result<kawal_compliance::Report, String> {
        if self.watch.tampered() {
            return Err(TAMPERED.into());
        }
        crate::evaluate::report_with(&self.dev, Some(&self.config)).map_err(|e| e.to_string())
    }

    fn verify_log(&self) -> std::result::Result<std::result::Result<String, String>, String> {
        if self.watch.tampered() {
            return Err(TAMPERED.into());
        }
        match self.dev.verify_log() {
            Ok(Ok(r)) => Ok(Ok(format!(
                "{} entries, {} signed checkpoints",
                r.entries, r.checkpoints
            ))),
            Ok(Err(finding)) => Ok(Err(finding)),
            Err(e) => Err(e.to_string()),
        }
    }

    fn platform(&self) -> serde_json::Value {
        self.watch.platform()
    }

    fn verify_integrity(&self, actor: &str) -> std::result::Result<serde_json::Value, VerifyError> {
        if self.watch.tampered() {
            return Err(VerifyError::Refused(TAMPERED.into()));
        }
        let settings = self.watch.integrity_settings();
        if settings.mode == crate::config::platform::IntegrityMode::Off {
            return Err(VerifyError::Refused(
                "integrity checks are switched off on this device ([integrity] enabled = false)"
                    .into(),
            ));
        }
        let key = crate::integrity::config_public_key(&self.dev)
            .map_err(|e| VerifyError::Internal(format!("configuration key: {e}")))?;
        let v = crate::integrity::verify(settings, Some(&key), "api");
        if let Err(e) = crate::device::record(&self.log, v.event_by(actor)) {
            // The check ran and its answer stands; the missing record is loud in the log.
            tracing::error!(error = %e, "could not log the integrity check");
        }
        if v.ok {
            tracing::info!(summary = %v.summary(), %actor, "integrity verified on demand");
        } else {
            tracing::error!(summary = %v.summary(), %actor, "integrity check on demand FAILED");
        }
        let answer = v.platform(settings);
        self.watch.set_integrity(v);
        Ok(answer)
    }
}

/// The account directory of a device under the configured rules.
pub fn directory(dev: &Device, config: &ValidConfig) -> Directory {
    Directory::new(
        Arc::clone(&dev.store),
        DirectoryConfig {
            argon2: config.argon2,
            policy: config.auth.policy.clone(),
            history_len: config.auth.history,
            max_age: config.auth.max_age,
            lockout: config.auth.lockout,
            device_uid: dev.info.uid.clone(),
        },
    )
}

/// The TLS identity: the device certificate and its key from the store.
pub(crate) fn tls_identity(dev: &Device) -> Result<kawal_api::tls::TlsIdentity> {
    let key = device_key(dev)?;
    Ok(kawal_api::tls::TlsIdentity {
        cert_chain_pem: device_chain(dev)?,
        key_pkcs8_der: key,
    })
}

/// The device identity key (PKCS#8 DER) from the store.
pub(crate) fn device_key(dev: &Device) -> Result<zeroize::Zeroizing<Vec<u8>>> {
    let key = dev
        .store
        .get(tables::IDENTITY, "device")
        .or_exit(Exit::DataErr, "store")?
        .ok_or_else(|| CliError::new(Exit::DataErr, "the device identity key is missing"))?;
    Ok(zeroize::Zeroizing::new(key.to_vec()))
}

/// The chain the device presents: `pki/device.crt.pem` (leaf first, then any chain it holds),
/// followed on a dev device by `pki/dev-ca.crt.pem`.
pub(crate) fn device_chain(dev: &Device) -> Result<String> {
    let cert_path = dev.layout.pki().join("device.crt.pem");
    let mut chain = std::fs::read_to_string(&cert_path).map_err(|e| {
        CliError::new(
            Exit::NoInput,
            format!(
                "{}: {e} (install the certificate issued for the CSR made at provisioning)",
                cert_path.display()
            ),
        )
    })?;
    if let Ok(ca) = std::fs::read_to_string(dev.layout.pki().join("dev-ca.crt.pem")) {
        chain.push_str(&ca);
    }
    Ok(chain)
}

/// Everything the API needs, built before the runtime starts so failures are clear errors.
pub struct Prepared {
    /// Shared state.
    pub state: Arc<AppState>,
    /// rustls configuration, replaceable while serving (a renewed device certificate).
    pub tls: kawal_api::tls::TlsHandle,
    /// The client-certificate roots the configuration was built with, for rebuilding it.
    pub client_auth: Option<kawal_api::tls::ClientAuth>,
    /// Socket limits.
    pub limits: kawal_api::server::Limits,
    /// Address.
    pub addr: SocketAddr,
}

/// Builds the API's state and TLS configuration.
pub fn prepare(
    dev: &Arc<Device>,
    config: &ValidConfig,
    log: Arc<AuditLog>,
    watch: Arc<crate::watch::Status>,
) -> Result<Prepared> {
    let identity = tls_identity(dev)?;
    // Client certificates: the automation CA's (mapped to accounts, PL-3-2) and the sensor
    // CA's, which only EST re-enrolment uses (a sensor certificate is no account).
    let mut roots_pem = match &config.auth.client_ca_file {
        Some(p) => std::fs::read_to_string(p)
            .map_err(|e| CliError::new(Exit::NoInput, format!("{}: {e}", p.display())))?,
        None => String::new(),
    };
    let sensor_ca = kawal_pki::SensorCa::load_or_create(&dev.store, &dev.info.uid)
        .map_err(|e| CliError::new(Exit::DataErr, format!("sensor CA: {e}")))?;
    roots_pem.push_str(sensor_ca.cert_pem());
    let client_auth = Some(kawal_api::tls::ClientAuth { roots_pem });
    let tls = kawal_api::tls::server_config(&identity, client_auth.as_ref())
        .map_err(|e| CliError::new(Exit::Config, format!("TLS: {e}")))?;
    // The dictionary checks of new passwords run in a child process: their tables would
    // otherwise stay in the daemon (crate::strength).
    let directory = Arc::new(
        directory(dev, config).with_strength(Arc::new(crate::strength::ChildStrength::new()?)),
    );
    let authenticator = Arc::new(
        Authenticator::new(Arc::clone(&directory))
            .map_err(|e| CliError::new(Exit::Failure, format!("authenticator: {e}")))?,
    );
    let kv = dev
        .store
        .key_version::<SessionPurpose>()
        .or_exit(Exit::DataErr, "key-ring")?;
    let session_key = dev
        .store
        .keys()
        .mac::<SessionPurpose>(&kv)
        .or_exit(Exit::Failure, "session key")?;
    let settings = Settings {
        session: config.auth.session,
        reauth_window: config.auth.reauth_window,
        verify_workers: config.auth.verify_workers,
        verify_queue: config.auth.verify_queue,
        client_cert_accounts: config.auth.client_certs.clone(),
    };
    let facts = DeviceFacts {
        uid: dev.info.uid.clone(),
        product: crate::PRODUCT.into(),
        dev: dev.info.dev,
        data_dir: dev.layout.dir.clone(),
    };
    let backend = Arc::new(DeviceBackend {
        dev: Arc::clone(dev),
        config: config.clone(),
        watch,
        log: Arc::clone(&log),
    });
    let state = Arc::new(AppState::new(
        directory,
        authenticator,
        session_key,
        SourcePenalties::new(config.auth.penalty.clone()),
        log,
        backend,
        settings,
        facts,
    ));
    let limits = kawal_api::server::Limits {
        max_connections: config.auth.max_connections,
        ..kawal_api::server::Limits::default()
    };
    Ok(Prepared {
        state,
        tls: kawal_api::tls::TlsHandle::new(tls),
        client_auth,
        limits,
        addr: config.api,
    })
}

/// What the running daemon serves, written to the store at start so `kawal audit` reports
/// the listener as it is, not as a file says it should be.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ApiRecord {
    /// When the daemon started serving (RFC 3339, UTC).
    pub started_at: String,
    /// The listening address.
    pub listen: String,
    /// TLS versions, suites and groups in force.
    pub tls_versions: Vec<String>,
    /// Cipher suites.
    pub tls_suites: Vec<String>,
    /// Key-exchange groups.
    pub tls_groups: Vec<String>,
    /// Whether client certificates are accepted (automation, PL-3-2).
    pub client_certs: bool,
    /// Client certificates mapped to accounts.
    pub client_cert_accounts: usize,
    /// Routes served, and how many of them are public.
    pub routes: usize,
    /// Public routes.
    pub public_routes: Vec<String>,
    /// The configuration's SHA-256.
    pub config_sha256: String,
}

/// The key under which [`ApiRecord`] is kept in the health table.
pub const API_RECORD: &str = "api";

/// Records what is being served.
pub fn record_api(dev: &Device, config: &ValidConfig) -> Result<()> {
    let tls = kawal_api::tls::describe();
    let record = ApiRecord {
        started_at: kawal_audit::WallTime::now().to_string(),
        listen: config.api.to_string(),
        tls_versions: tls.protocol_versions,
        tls_suites: tls.cipher_suites,
        tls_groups: tls.kx_groups,
        client_certs: config.auth.client_ca_file.is_some(),
        client_cert_accounts: config.auth.client_certs.len(),
        routes: kawal_api::routes::ROUTES.len(),
        public_routes: kawal_api::routes::ROUTES
            .iter()
            .filter(|r| matches!(r.access, kawal_api::routes::Access::Public))
            .map(|r| format!("{} {}", r.method, r.path))
            .collect(),
        config_sha256: config.sha256.clone(),
    };
    let json = serde_json::to_vec(&record).or_exit(Exit::Failure, "api record")?;
    dev.store
        .put(tables::HEALTH, API_RECORD, &json)
        .or_exit(Exit::Io, "store")
}
