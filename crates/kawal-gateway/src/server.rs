//! The sensors' listener: TCP, limits, mutual TLS, the identity from the client certificate,
//! then one [`crate::conn`] session per connection (G045 AU-3-2, DS-1-1, DS-1-2, ST-G-1).
//!
//! There is no plain-TCP MQTT listener: every connection must complete a TLS handshake in
//! which the client presents a certificate that chains to the sensor CA roots (and is not on
//! a configured CRL). Before the handshake, each connection passes, in order: the source
//! allow-list, the connection limits (total and per source), the handshake rate per source
//! and the limit on handshakes in progress; the handshake itself has a timeout.
//!
//! TLS policy (as the management API's, fixed in code so an upgrade cannot widen it): TLS 1.3,
//! and TLS 1.2 only with ECDHE key exchange, AEAD ciphers and the extended master secret; the
//! aws-lc-rs provider only. Session resumption is on (stateless tickets and a session cache)
//! so that sensors that reconnect often save the full handshake. Resumed sessions keep the
//! certificate of the full handshake and go through the same registry check at CONNECT, so a
//! revoked sensor is still refused; [`Server::reload_tls`] starts new tickets and a new cache,
//! so nothing resumes across a change of roots or CRLs.
//!
//! ## Identity
//! The UID is taken from the leaf certificate's SAN URI `urn:kawal:sensor:<uid>`; a
//! certificate without one uses its subject CN. Two different such URIs, no UID at all, or a
//! UID that could change the meaning of a topic ([`crate::acl::uid_is_safe`]) is a bad
//! certificate. The serial number is the certificate's serial as an unsigned big-endian
//! number in lowercase hexadecimal without leading zeros (`0` for zero), i.e. exactly what
//! `format!("{:x}", serial)` prints for x509-parser's `BigUint`.
//!
//! ## Refusal reasons (`mqtt.refused`, `reason`)
//! Before the handshake: `source-not-allowed`, `too-many-connections` (detail `total`,
//! `per-source` or `handshakes`), `handshake-rate`. The handshake: `timeout`,
//! `no-certificate`, `bad-certificate` (detail `expired`, `not-yet-valid`, `unknown-ca`,
//! `bad-signature`, `wrong-purpose`, `unknown-revocation-status`, `expired-crl`, `invalid`,
//! `uid`), `revoked` (on a CRL), `tls-incompatible`, `tls-alert`, `tls-error`,
//! `tls-aborted`. These are written under flood control ([`crate::broker::Auditor`]).
//! After the handshake, [`crate::conn`] adds its own.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use kawal_audit::AuditLog;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::{ServerSessionMemoryCache, WebPkiClientVerifier};
use rustls::{CertificateError, RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::{JoinHandle, JoinSet};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::acl::{Acl, AclConfig, AclError, uid_is_safe};
use crate::broker::{Broker, CloseReason, Stats};
use crate::limits::{ConnLimiter, ConnPermit, LimitHit, Settings, SettingsError, SourceRates};
use crate::{Directory, Identity, Uplink, conn};

/// The URI prefix that carries a sensor's UID in its certificate.
pub const SENSOR_URN_PREFIX: &str = "urn:kawal:sensor:";
/// Sessions resumable from the cache at once.
const SESSION_CACHE: usize = 4096;
/// How long shutdown waits for sessions to end before aborting them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The listener's TLS material. Reloadable with [`Server::reload_tls`].
pub struct TlsMaterial {
    /// The gateway's certificate chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: PrivateKeyDer<'static>,
    /// The CAs that issue sensor certificates.
    pub sensor_roots: Vec<CertificateDer<'static>>,
    /// External CAs whose sensor certificates are trusted too (e.g. the manufacturer's). Their
    /// revocation is the registry's (checked at every CONNECT): no CRL of theirs is needed,
    /// while certificates of `sensor_roots` still need the status `crls` give.
    pub external_roots: Vec<CertificateDer<'static>>,
    /// Certificate revocation lists of those CAs (optional; when given, a sensor certificate
    /// whose status none of them covers is refused).
    pub crls: Vec<CertificateRevocationListDer<'static>>,
    /// The clock floor: sensor certificates are checked at it when the clock reads earlier
    /// (see [`crate::clock`]); `None` checks at the clock's time.
    pub clock_floor: Option<Arc<crate::clock::ClockFloor>>,
}

impl std::fmt::Debug for TlsMaterial {
    // The key never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("chain", &self.chain.len())
            .field("key", &"[REDACTED]")
            .field("sensor_roots", &self.sensor_roots.len())
            .field("external_roots", &self.external_roots.len())
            .field("crls", &self.crls.len())
            .field("clock_floor", &self.clock_floor.as_ref().map(|f| f.get()))
            .finish()
    }
}

/// Why the server could not start or reload. All are operator or provisioning errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Settings out of range.
    #[error("mqtt settings: {}", join(.0))]
    Settings(Vec<SettingsError>),
    /// ACL templates that cannot be used.
    #[error("mqtt ACL: {}", join(.0))]
    Acl(Vec<AclError>),
    /// The gateway's chain is empty.
    #[error("mqtt TLS: no server certificate")]
    NoServerCertificate,
    /// rustls refused the gateway's certificate and key (the key is not in the error).
    #[error("mqtt TLS: server certificate and key rejected: {0}")]
    ServerIdentity(#[source] rustls::Error),
    /// A sensor root is not a usable trust anchor.
    #[error("mqtt TLS: sensor root {index} is not a usable trust anchor: {source}")]
    SensorRoot {
        /// Its position, from 0.
        index: usize,
        /// Why.
        #[source]
        source: rustls::Error,
    },
    /// No sensor roots: no sensor could ever connect.
    #[error("mqtt TLS: no sensor CA roots")]
    NoSensorRoots,
    /// The client-certificate verifier could not be built (e.g. a bad CRL).
    #[error("mqtt TLS: client verifier: {0}")]
    Verifier(#[source] rustls::server::VerifierBuilderError),
    /// rustls refused the fixed policy or could not make a ticket key (a bug or a broken
    /// crypto library, not an input problem).
    #[error("mqtt TLS: {0}")]
    Policy(#[source] rustls::Error),
    /// The listening socket could not be opened.
    #[error("mqtt: cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

fn join<T: std::fmt::Display>(v: &[T]) -> String {
    v.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

use kawal_crypto::tls::{PROTOCOL_VERSIONS, provider};

/// Builds the listener's rustls configuration from `m`: a client certificate chaining to
/// the sensor roots is required.
///
/// # Errors
/// [`Error`] for unusable material.
pub fn server_config(m: &TlsMaterial) -> Result<Arc<ServerConfig>, Error> {
    if m.chain.is_empty() {
        return Err(Error::NoServerCertificate);
    }
    let mut roots = RootCertStore::empty();
    for (index, cert) in m.sensor_roots.iter().chain(&m.external_roots).enumerate() {
        roots
            .add(cert.clone())
            .map_err(|source| Error::SensorRoot { index, source })?;
    }
    if roots.is_empty() {
        return Err(Error::NoSensorRoots);
    }
    let provider = provider();
    let mut builder =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
            .with_crls(m.crls.iter().cloned());
    if !m.external_roots.is_empty() {
        // An external CA's certificates have no status in our CRL; ours still do (a CRL
        // covers the certificates of its issuer), so ours stay checked.
        builder = builder.allow_unknown_revocation_status();
    }
    let mut verifier = builder.build().map_err(Error::Verifier)?;
    if let Some(floor) = &m.clock_floor {
        verifier = Arc::new(crate::clock::FloorVerifier {
            inner: verifier,
            floor: Arc::clone(floor),
        });
    }
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(PROTOCOL_VERSIONS)
        .map_err(Error::Policy)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(m.chain.clone(), m.key.clone_key())
        .map_err(Error::ServerIdentity)?;
    config.ignore_client_order = true;
    config.require_ems = true;
    config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE);
    config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new().map_err(Error::Policy)?;
    // One ticket per handshake: a sensor reconnects one connection at a time, and each resumed
    // handshake brings the next ticket. The second one rustls sends by default cost every full
    // handshake an encryption and a record.
    config.send_tls13_tickets = 1;
    Ok(Arc::new(config))
}

/// Why a certificate gives no usable identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// Not parseable as X.509.
    #[error("certificate does not parse")]
    Parse,
    /// Two different `urn:kawal:sensor:` URIs.
    #[error("certificate names two sensors")]
    Ambiguous,
    /// Neither a sensor URI nor a CN.
    #[error("certificate names no sensor")]
    NoUid,
    /// The UID has characters that would change a topic's meaning, or is too long.
    #[error("certificate UID is not usable in topics")]
    UnsafeUid,
}

/// The sensor identity in a (verified) leaf certificate: see the module documentation.
///
/// # Errors
/// [`IdentityError`] when the certificate names no usable UID.
pub fn identity_from_cert(der: &[u8]) -> Result<Identity, IdentityError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|_| IdentityError::Parse)?;
    let mut uid: Option<&str> = None;
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::URI(u) = name
                && let Some(v) = u.strip_prefix(SENSOR_URN_PREFIX)
            {
                match uid {
                    Some(prev) if prev != v => return Err(IdentityError::Ambiguous),
                    _ => uid = Some(v),
                }
            }
        }
    }
    let uid = match uid {
        Some(u) => u.to_owned(),
        None => cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .ok_or(IdentityError::NoUid)?
            .to_owned(),
    };
    if !uid_is_safe(&uid) {
        return Err(IdentityError::UnsafeUid);
    }
    Ok(Identity {
        uid,
        serial: format!("{:x}", cert.tbs_certificate.serial),
    })
}

/// Maps a failed handshake to a refusal reason and detail.
fn classify(e: &std::io::Error) -> (&'static str, String) {
    let Some(tls) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return ("tls-aborted", e.kind().to_string());
    };
    match tls {
        rustls::Error::NoCertificatesPresented => ("no-certificate", "none presented".into()),
        rustls::Error::InvalidCertificate(CertificateError::Revoked) => {
            ("revoked", "on a CRL".into())
        }
        rustls::Error::InvalidCertificate(ce) => {
            let detail = match ce {
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => "expired",
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    "not-yet-valid"
                }
                CertificateError::UnknownIssuer => "unknown-ca",
                CertificateError::BadSignature => "bad-signature",
                CertificateError::InvalidPurpose
                | CertificateError::InvalidPurposeContext { .. } => "wrong-purpose",
                CertificateError::UnknownRevocationStatus => "unknown-revocation-status",
                CertificateError::ExpiredRevocationList
                | CertificateError::ExpiredRevocationListContext { .. } => "expired-crl",
                _ => "invalid",
            };
            ("bad-certificate", detail.into())
        }
        rustls::Error::PeerIncompatible(p) => ("tls-incompatible", format!("{p:?}")),
        rustls::Error::AlertReceived(a) => ("tls-alert", format!("{a:?}")),
        other => ("tls-error", other.to_string()),
    }
}

/// Everything [`Server::bind`] needs.
pub struct ServerParts {
    /// Limits (checked with [`Settings::validate`]).
    pub settings: Settings,
    /// Topic rules per role (checked with [`Acl::new`]).
    pub acl: AclConfig,
    /// Certificates and key.
    pub tls: TlsMaterial,
    /// The sensor registry.
    pub directory: Arc<dyn Directory>,
    /// Where sensor messages go.
    pub uplink: Arc<dyn Uplink>,
    /// The audit log.
    pub audit: Arc<AuditLog>,
}

impl std::fmt::Debug for ServerParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerParts")
            .field("settings", &self.settings)
            .field("acl", &self.acl)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

struct Shared {
    broker: Arc<Broker>,
    tls: RwLock<Arc<ServerConfig>>,
    limiter: Arc<ConnLimiter>,
    rates: SourceRates,
    handshakes: Arc<Semaphore>,
}

/// The running listener.
pub struct Server {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Checks `parts`, listens on `addr` and starts accepting (on the current tokio runtime).
    ///
    /// # Errors
    /// [`Error`] for bad settings, ACL or TLS material, or when `addr` cannot be bound.
    pub async fn bind(addr: SocketAddr, parts: ServerParts) -> Result<Self, Error> {
        parts.settings.validate().map_err(Error::Settings)?;
        let acl = Acl::new(&parts.acl, &parts.settings.topic).map_err(Error::Acl)?;
        let tls = server_config(&parts.tls)?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| Error::Bind { addr, source })?;
        let s = &parts.settings;
        let shared = Arc::new(Shared {
            limiter: ConnLimiter::new(s.max_connections, s.max_per_source),
            rates: SourceRates::new(s.handshakes_per_source, s.max_tracked_sources),
            handshakes: Arc::new(Semaphore::new(s.max_handshakes_in_progress)),
            tls: RwLock::new(tls),
            broker: Broker::new(
                parts.settings,
                acl,
                parts.directory,
                parts.uplink,
                parts.audit,
            ),
        });
        let (shutdown, shutdown_rx) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&shared), shutdown_rx));
        tracing::info!(%local_addr, "MQTT listener (mutual TLS) started");
        Ok(Self {
            local_addr,
            shared,
            shutdown,
            task: Mutex::new(Some(task)),
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The broker (for [`Broker::publish_local`], [`Broker::disconnect_uid`], stats).
    pub fn broker(&self) -> &Arc<Broker> {
        &self.shared.broker
    }

    /// The broker's counters now.
    pub fn stats(&self) -> Stats {
        Stats {
            connections_live: self.shared.limiter.live() as u64,
            ..self.shared.broker.stats()
        }
    }

    /// Drops the live session of `uid` at once (e.g. it was just revoked).
    pub fn disconnect_uid(&self, uid: &str, reason: &str) -> bool {
        self.shared.broker.disconnect_uid(uid, reason)
    }

    /// Replaces the TLS material; handshakes from now on use it. Live sessions continue.
    ///
    /// # Errors
    /// [`Error`] for unusable material; the previous configuration stays in force.
    pub fn reload_tls(&self, material: &TlsMaterial) -> Result<(), Error> {
        let config = server_config(material)?;
        *self
            .shared
            .tls
            .write()
            .unwrap_or_else(PoisonError::into_inner) = config;
        tracing::info!("MQTT listener TLS material reloaded");
        Ok(())
    }

    /// Stops accepting, closes every session (wills are published as for any abnormal end),
    /// waits up to 5 s for them to end, and waits until their audit events are written.
    pub async fn shutdown(&self) {
        let _ = self.shutdown.send(true);
        let task = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            let _ = task.await;
        }
        self.shared.broker.audit().flush().await;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tasks = JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = tick.tick() => shared.broker.audit().roll(Instant::now()),
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            r = listener.accept() => match r {
                Ok((tcp, peer)) => {
                    if let Some((permit, hs)) = gate(&shared, peer) {
                        tasks.spawn(serve(Arc::clone(&shared), tcp, peer, permit, hs, shutdown.clone()));
                    }
                }
                Err(err) => {
                    // Out of file descriptors and the like: do not spin.
                    tracing::warn!(%err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    shared.broker.close_all(&CloseReason::Shutdown);
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
    tracing::info!("MQTT listener stopped");
}

/// The checks before the handshake; refusals are audited under flood control.
fn gate(shared: &Shared, peer: SocketAddr) -> Option<(ConnPermit, OwnedSemaphorePermit)> {
    let broker = &shared.broker;
    let settings = broker.settings();
    let ip = peer.ip();
    let refuse = |reason: &'static str, detail: Option<&str>| {
        broker.count_refused(reason);
        broker.audit().refusal(ip, reason, detail);
    };
    if !crate::limits::source_allowed(&settings.allow_sources, ip) {
        refuse("source-not-allowed", None);
        return None;
    }
    let permit = match shared.limiter.try_acquire(ip) {
        Ok(p) => p,
        Err(LimitHit::Total) => {
            refuse("too-many-connections", Some("total"));
            return None;
        }
        Err(LimitHit::PerSource) => {
            refuse("too-many-connections", Some("per-source"));
            return None;
        }
    };
    if !shared.rates.allow(ip, Instant::now()) {
        refuse("handshake-rate", None);
        return None;
    }
    let Ok(hs) = Arc::clone(&shared.handshakes).try_acquire_owned() else {
        refuse("too-many-connections", Some("handshakes"));
        return None;
    };
    Some((permit, hs))
}

async fn serve(
    shared: Arc<Shared>,
    tcp: TcpStream,
    peer: SocketAddr,
    permit: ConnPermit,
    handshake: OwnedSemaphorePermit,
    mut shutdown: watch::Receiver<bool>,
) {
    // The handshake is a future of its own: its state (the TLS connection being built, the
    // handshake's result) would otherwise stay in this task's future, which lives as long as
    // the connection, and be paid by every idle sensor (~1.4 KiB).
    let Some((tls, identity)) = authenticate(&shared, tcp, peer, handshake, &mut shutdown).await
    else {
        return;
    };
    let broker = Arc::clone(&shared.broker);
    drop(shared);
    conn::run(tls, identity, peer, broker, shutdown).await;
    drop(permit);
}

/// Runs the TLS handshake; the verified stream and the identity its certificate proves, or
/// `None` after the refusal is counted and audited.
async fn authenticate(
    shared: &Shared,
    tcp: TcpStream,
    peer: SocketAddr,
    handshake: OwnedSemaphorePermit,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<(Box<crate::tls::TlsStream>, Identity)> {
    let broker = &shared.broker;
    // Counts and audits a refusal; `None` for the caller to return.
    let refuse = |reason: &'static str, detail: &str| {
        broker.count_refused(reason);
        broker.audit().refusal(peer.ip(), reason, Some(detail));
        None
    };
    let _ = tcp.set_nodelay(true);
    let config = Arc::clone(&shared.tls.read().unwrap_or_else(PoisonError::into_inner));
    // Boxed: the connection's task is sized by its largest state, and this one (a TLS
    // connection under construction) is larger than a whole idle session.
    let accept = Box::pin(crate::tls::accept(tcp, config));
    let timeout = broker.settings().handshake_timeout;
    let result = tokio::select! {
        r = tokio::time::timeout(timeout, accept) => r,
        _ = shutdown.changed() => return None,
    };
    drop(handshake);
    let tls = match result {
        Err(_) => return refuse("timeout", "tls handshake"),
        Ok(Err(e)) => {
            let (reason, detail) = classify(&e);
            return refuse(reason, &detail);
        }
        // Boxed: a TLS stream is over 1 KiB, and the session's futures hold it for the whole
        // life of the connection.
        Ok(Ok(s)) => Box::new(s),
    };
    let leaf = tls
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| identity_from_cert(c));
    let identity = match leaf {
        None => return refuse("no-certificate", "none after handshake"),
        Some(Err(IdentityError::UnsafeUid | IdentityError::NoUid | IdentityError::Ambiguous)) => {
            return refuse("bad-certificate", "uid");
        }
        Some(Err(_)) => return refuse("bad-certificate", "invalid"),
        Some(Ok(id)) => id,
    };
    Some((tls, identity))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn material_debug_hides_the_key() {
        let m = TlsMaterial {
            chain: Vec::new(),
            key: PrivateKeyDer::Pkcs8(vec![0xAB; 40].into()),
            sensor_roots: Vec::new(),
            external_roots: Vec::new(),
            crls: Vec::new(),
            clock_floor: None,
        };
        let shown = format!("{m:?}");
        assert!(shown.contains("REDACTED") && !shown.contains("171"));
        assert!(matches!(server_config(&m), Err(Error::NoServerCertificate)));
    }

    #[test]
    fn unknown_handshake_errors_map_to_aborted() {
        let e = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
        assert_eq!(classify(&e).0, "tls-aborted");
        let e = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::NoCertificatesPresented,
        );
        assert_eq!(classify(&e).0, "no-certificate");
        let e = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
        );
        assert_eq!(classify(&e), ("bad-certificate", "unknown-ca".into()));
    }

    #[test]
    fn garbage_is_not_an_identity() {
        assert_eq!(identity_from_cert(b"nope"), Err(IdentityError::Parse));
    }
}
