//! What every request handler shares: the account directory, the live sessions, the audit log,
//! and what the daemon provides (health, report, log verification) through [`Backend`].
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use kawal_audit::{AuditLog, Event, FloodControl};
use kawal_auth::accounts::Directory;
use kawal_auth::login::Authenticator;
use kawal_auth::penalty::SourcePenalties;
use kawal_auth::roles::Role;
use kawal_auth::session::{SessionPolicy, Sessions};
use kawal_crypto::keys::{MacKey, Session as SessionPurpose};

use crate::pool::VerifyPool;

/// What the daemon answers for the console and the API; kept out of this crate so the
/// evaluators and the device's own checks stay in one place.
pub trait Backend: Send + Sync {
    /// Health: self-test, clock, store, audit log, as JSON for the API and the dashboard.
    fn health(&self) -> serde_json::Value;
    /// The G045 compliance report, evaluated now from the live system.
    fn report(&self) -> Result<kawal_compliance::Report, String>;
    /// Verifies the audit log; `Ok(summary)` when intact, `Err(finding)` when not.
    fn verify_log(&self) -> Result<Result<String, String>, String>;
    /// What the platform watchers found, in full (G045 PL-1-4, PL-3-1): `integrity` (state,
    /// last check, every problem and file), `exposure` (summary and every finding with its
    /// severity, control, subject, owner and what to do), `tamper` (state, inputs) and
    /// `log_forward` (state, connection, backlog, last confirmation).
    fn platform(&self) -> serde_json::Value;
    /// Checks the installed files against the integrity manifest now (blocking: it hashes
    /// every listed file; [`crate::platform::run_verify`] calls it off the runtime, one at a
    /// time), records `integrity.verified` or `integrity.failed` with trigger `api` and
    /// `actor`, keeps the result for health, and answers it as JSON (`state`,
    /// `files_checked`, `files_failed`, `problems`, `files`, `last_check`).
    fn verify_integrity(
        &self,
        actor: &str,
    ) -> Result<serde_json::Value, crate::platform::VerifyError>;
}

/// Settings of the API beyond TLS and socket limits.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Idle time-out, lifetime and admin concurrency.
    pub session: SessionPolicy,
    /// Seconds a re-authentication proof stays valid (single use).
    pub reauth_window: u64,
    /// Argon2id verifications at once.
    pub verify_workers: usize,
    /// Verifications that may wait for a worker before attempts are refused as busy.
    pub verify_queue: usize,
    /// Client certificates (SHA-256 of the DER, lowercase hex) mapped to account names, for
    /// automation (PL-3-2). Only certificates rustls verified against the configured CA count.
    pub client_cert_accounts: HashMap<String, String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            session: SessionPolicy::default(),
            reauth_window: 300,
            verify_workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            verify_queue: 16,
            client_cert_accounts: HashMap::new(),
        }
    }
}

/// Facts about the device shown by the console.
#[derive(Debug, Clone)]
pub struct DeviceFacts {
    /// Device UID.
    pub uid: String,
    /// Product and version.
    pub product: String,
    /// A dev-provisioned device (dev CA), not for production.
    pub dev: bool,
    /// The data folder (for reading the audit log).
    pub data_dir: PathBuf,
}

/// A single-use re-authentication proof.
#[derive(Debug)]
pub(crate) struct Proof {
    pub user: String,
    pub expires: u64,
}

/// Flood-controlled events written individually per source and window (see
/// [`AppState::record_limited`]).
pub const FLOOD_EVENTS_PER_SOURCE: u32 = 10;
/// The flood-control window.
pub const FLOOD_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

/// Everything shared between requests.
pub struct AppState {
    /// Accounts.
    pub directory: Arc<Directory>,
    /// Password checks with one answer for every failure.
    pub authenticator: Arc<Authenticator>,
    pub(crate) sessions: Mutex<Sessions>,
    pub(crate) session_key: MacKey<SessionPurpose>,
    pub(crate) penalties: Mutex<SourcePenalties>,
    pub(crate) proofs: Mutex<HashMap<[u8; 32], Proof>>,
    /// The Argon2id worker pool.
    pub pool: VerifyPool,
    /// The audit log.
    pub audit: Arc<AuditLog>,
    pub(crate) backend: Arc<dyn Backend>,
    /// Settings.
    pub settings: Settings,
    /// Device facts.
    pub device: DeviceFacts,
    /// The gateway's sensor operations, set by the daemon once the gateway runs.
    pub sensors: std::sync::OnceLock<Arc<dyn crate::sensors::SensorBackend>>,
    /// Signed updates, set by the daemon when `[update]` is configured.
    pub updates: std::sync::OnceLock<Arc<dyn crate::update::UpdateBackend>>,
    /// Flood control for the events an unauthenticated peer causes at will (see
    /// [`AppState::record_limited`]); shared with the gateway's EST refusals.
    pub flood: Arc<FloodControl>,
    /// Set while an on-demand integrity check runs (one at a time).
    pub(crate) integrity_running: Arc<std::sync::atomic::AtomicBool>,
    /// Set while an update check, apply or rollback runs (one at a time).
    pub(crate) update_running: Arc<std::sync::atomic::AtomicBool>,
    started: Instant,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

/// Locks a mutex, recovering from a poisoned one: the tables stay consistent at every await
/// point and a panic elsewhere must not lock everyone out.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl AppState {
    /// Builds the state.
    #[allow(
        clippy::too_many_arguments,
        reason = "one constructor, called by the daemon"
    )]
    pub fn new(
        directory: Arc<Directory>,
        authenticator: Arc<Authenticator>,
        session_key: MacKey<SessionPurpose>,
        penalties: SourcePenalties,
        audit: Arc<AuditLog>,
        backend: Arc<dyn Backend>,
        settings: Settings,
        device: DeviceFacts,
    ) -> Self {
        Self {
            directory,
            authenticator,
            sessions: Mutex::new(Sessions::default()),
            session_key,
            penalties: Mutex::new(penalties),
            proofs: Mutex::new(HashMap::new()),
            pool: VerifyPool::new(settings.verify_workers, settings.verify_queue),
            audit,
            backend,
            settings,
            device,
            sensors: std::sync::OnceLock::new(),
            updates: std::sync::OnceLock::new(),
            flood: Arc::new(FloodControl::new(
                "api.events-suppressed",
                "kawal-api",
                FLOOD_EVENTS_PER_SOURCE,
                FLOOD_WINDOW,
                Instant::now(),
            )),
            integrity_running: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            update_running: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            started: Instant::now(),
        }
    }

    /// Seconds on the monotonic clock since the API started (sessions time out on this, so a
    /// wall-clock step cannot extend or cut them).
    pub(crate) fn mono(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// Seconds since the Unix epoch (lockout tallies survive restarts, so they use wall time).
    pub(crate) fn wall() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }

    /// Live sessions.
    pub fn live_sessions(&self) -> usize {
        lock(&self.sessions).len()
    }

    /// Appends an audit event and waits until it is durable, without holding a runtime
    /// thread meanwhile: a slow disk delays this request's answer, not every other request.
    /// A failed write is logged loudly; the request it records has already been decided, so
    /// it is not turned into a second failure for the client.
    pub(crate) async fn record(&self, event: Event) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.audit.append_then(event, move |r| {
            let _ = tx.send(r);
        });
        match rx.await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "audit log write failed"),
            Err(_) => tracing::error!("audit log write not answered"),
        }
    }

    /// Appends an audit event without waiting (for code that is not async); a failed write
    /// is logged.
    pub(crate) fn record_nowait(&self, event: Event) {
        self.audit.append_then(event, |r| {
            if let Err(e) = r {
                tracing::error!(error = %e, "audit log write failed");
            }
        });
    }

    /// Records an event an unauthenticated peer at `source` can cause as often as it likes
    /// (a refused login, a cross-site request), under flood control: per source and minute
    /// the first [`FLOOD_EVENTS_PER_SOURCE`] are written, the rest counted into one
    /// `api.events-suppressed` summary (`kind` and `uid` name them there). So a flood of
    /// thousands of attempts a second writes a bounded number of events, and cannot fill
    /// the disk or slow the log for everyone else.
    pub(crate) async fn record_limited(
        &self,
        source: IpAddr,
        kind: &str,
        uid: Option<&str>,
        event: Event,
    ) {
        self.roll_flood(Instant::now());
        if self.flood.admit(source, kind, uid) {
            self.record(event).await;
        }
    }

    /// Writes the flood-control summaries of a window that has ended (called on every
    /// flood-controlled event and every few seconds by the server).
    pub fn roll_flood(&self, now: Instant) {
        for summary in self.flood.roll(now) {
            self.record_nowait(summary);
        }
    }

    /// Runs an account operation on the blocking pool: it may hash a password with Argon2id,
    /// run the password checks' child process and sync the store, none of which may hold an
    /// async runtime thread.
    pub(crate) async fn accounts<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Directory) -> Result<T, kawal_auth::accounts::AccountError> + Send + 'static,
    ) -> Result<T, kawal_auth::accounts::AccountError> {
        let dir = Arc::clone(&self.directory);
        tokio::task::spawn_blocking(move || op(&dir))
            .await
            .unwrap_or_else(|e| {
                Err(kawal_auth::accounts::AccountError::Store(format!(
                    "account operation stopped: {e}"
                )))
            })
    }

    /// The CSRF token bound to a session token: an HMAC under the session key, so it cannot be
    /// forged without the session ID and is never stored.
    pub(crate) fn csrf_for(&self, token: &str) -> String {
        hex::encode(
            self.session_key
                .mac_parts(&[b"kawal-csrf-v1", token.as_bytes()]),
        )
    }

    /// The HMAC under which a secret (session token, proof) is kept.
    pub(crate) fn digest(&self, secret: &str) -> [u8; 32] {
        self.session_key.mac(secret.as_bytes())
    }

    /// Ends every session of `user` and records why.
    pub(crate) async fn end_sessions(&self, user: &str, why: &str, by: &str) {
        let n = lock(&self.sessions).revoke_user(user, self.mono());
        if n > 0 {
            self.record(
                Event::new("session.ended", by, kawal_audit::Outcome::Info)
                    .with("user", user)
                    .with("reason", why)
                    .with("sessions", n as u64),
            )
            .await;
        }
    }
}

/// Who is making a request, once authenticated.
#[derive(Debug, Clone)]
pub struct Principal {
    /// Account name.
    pub user: String,
    /// Its role now.
    pub role: Role,
    /// Must change the password before anything else.
    pub must_change: bool,
    /// How it authenticated.
    pub via: Via,
    /// The source address.
    pub peer: IpAddr,
}

/// How a request authenticated.
#[derive(Clone)]
pub enum Via {
    /// A session cookie; holds the token (to rotate or end it) and its CSRF token.
    Session {
        /// The session token.
        token: String,
        /// The CSRF token for forms.
        csrf: String,
    },
    /// A verified client certificate mapped to an account (automation).
    ClientCert {
        /// SHA-256 of the certificate.
        fingerprint: String,
    },
}

impl std::fmt::Debug for Via {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Via::Session { .. } => f.write_str("Session([REDACTED])"),
            Via::ClientCert { fingerprint } => write!(f, "ClientCert({fingerprint})"),
        }
    }
}

impl Principal {
    /// The CSRF token, for pages with forms ("" for certificate clients, who need none).
    pub fn csrf(&self) -> &str {
        match &self.via {
            Via::Session { csrf, .. } => csrf,
            Via::ClientCert { .. } => "",
        }
    }
}
