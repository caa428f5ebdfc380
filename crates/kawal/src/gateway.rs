//! The gateway inside the daemon: the sensor registry and CA, the MQTT listener, the upstream
//! queue and bridge, and the API's sensor operations over them (G045 AU-1-9, AU-1-10, AU-3-2,
//! DS-1-1, DS-1-2, DS-2-1).
//!
//! [`prepare`] builds everything that can fail from files and the store before the runtime
//! starts, so a bad certificate or setting is a clear error at start; [`start`] binds and runs
//! it inside the daemon's runtime.
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::Duration;

use bytes::Bytes;
use kawal_api::sensors::{SensorBackend, SensorError};
use kawal_audit::{AuditLog, Event, Outcome};
use kawal_gateway::bridge::{Bridge, BridgeHandle, BridgeSettings, ClientIdentity};
use kawal_gateway::client::command::Stamper;
use kawal_gateway::queue::{FullPolicy, Queue, QueueSettings};
use kawal_gateway::server::{Server, ServerParts, TlsMaterial};
use kawal_gateway::{Directory, Identity, Refusal};
use kawal_pki::{RevokeReason, SensorCa, SensorRefusal, Sensors};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::config::ValidConfig;
use crate::device::{Device, tables};
use crate::error::{CliError, Context, Exit, Result};

/// Days a published CRL stays current; it is re-signed at every start and every revocation.
const CRL_DAYS: u32 = 7;
/// Seconds a command sent down stays valid.
const COMMAND_TTL_S: u64 = 300;

/// The device's TLS identity, for the MQTT listener and the bridge. The chain is replaced
/// when a renewed device certificate is put in force ([`Running::reload_device_cert`]); every
/// rebuild of the listener's material (a revocation's new CRL) takes the chain in force.
struct DeviceTls {
    chain_pem: RwLock<String>,
    key_der: Zeroizing<Vec<u8>>,
    /// Sensor certificates are checked at this floor while the clock reads earlier.
    floor: Arc<kawal_gateway::clock::ClockFloor>,
}

fn parse_chain(chain_pem: &str) -> Result<Vec<CertificateDer<'static>>> {
    CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|_| CliError::new(Exit::DataErr, "device certificate chain unreadable"))
}

impl DeviceTls {
    fn chain_pem(&self) -> String {
        self.chain_pem
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key_der.to_vec().into())
    }
}

/// Everything the gateway needs, built before the runtime starts.
pub struct Prepared {
    registry: Arc<Sensors>,
    queue: Arc<Queue>,
    device: Arc<DeviceTls>,
    bridge: Option<BridgeSettings>,
    settings: kawal_gateway::limits::Settings,
    acl: kawal_gateway::acl::AclConfig,
    addr: SocketAddr,
    log: Arc<AuditLog>,
    token_ttl: Duration,
    roles: Vec<String>,
    gateway_uid: String,
}

/// The sensor registry of a device (also for `kawal audit`).
pub fn registry(dev: &Device, config: &ValidConfig) -> Result<Sensors> {
    let ca = SensorCa::load_or_create(&dev.store, &dev.info.uid)
        .map_err(|e| CliError::new(Exit::DataErr, format!("sensor CA: {e}")))?;
    Ok(Sensors::new(Arc::clone(&dev.store), Arc::new(ca))
        .with_cert_days(config.gateway.cert_days)
        .with_external_cas(external_cas(config)?))
}

/// The external sensor CA certificates (DER) of `[sensors] external-ca-file`, if set.
fn external_cas(config: &ValidConfig) -> Result<Vec<Vec<u8>>> {
    let Some(path) = &config.gateway.external_ca_file else {
        return Ok(Vec::new());
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        CliError::new(
            Exit::Config,
            format!("sensors.external-ca-file {}: {e}", path.display()),
        )
    })?;
    let cas: Vec<Vec<u8>> = CertificateDer::pem_slice_iter(text.as_bytes())
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| {
            CliError::new(
                Exit::Config,
                format!(
                    "sensors.external-ca-file {}: unreadable PEM",
                    path.display()
                ),
            )
        })?;
    if cas.is_empty() {
        return Err(CliError::new(
            Exit::Config,
            format!(
                "sensors.external-ca-file {}: no certificate",
                path.display()
            ),
        ));
    }
    Ok(cas)
}

fn limits(config: &ValidConfig) -> kawal_gateway::limits::Settings {
    use kawal_gateway::limits::Rate;
    let m = &config.gateway.mqtt;
    kawal_gateway::limits::Settings {
        max_packet_bytes: m.max_packet_bytes,
        topic: kawal_gateway::topic::TopicRules {
            max_len: m.max_topic_length,
            max_depth: m.max_topic_depth,
        },
        max_subscriptions: m.max_subscriptions,
        inflight: m.inflight,
        max_queued_bytes: m.max_queued_bytes,
        max_connections: m.max_connections,
        max_per_source: m.max_per_source,
        handshakes_per_source: Rate::doubled(m.handshakes_per_source_per_s),
        handshake_timeout: Duration::from_secs(m.handshake_timeout_s),
        connect_timeout: Duration::from_secs(m.connect_timeout_s),
        messages: Rate::doubled(m.messages_per_s),
        bytes: Rate::doubled(m.bytes_per_s),
        allow_sources: config.gateway.allow_sources.clone(),
        max_retained: m.max_retained,
        audit_refusals_per_source: m.audit_refusals_per_source,
        audit_window: Duration::from_secs(m.audit_window_s),
        payload: config
            .gateway
            .payload
            .iter()
            .map(|r| kawal_gateway::payload::PayloadRule {
                topic: r.topic.clone(),
                max_bytes: r.max_bytes,
                json: match (r.json, r.json_object) {
                    (false, _) => kawal_gateway::payload::JsonCheck::Off,
                    (true, false) => kawal_gateway::payload::JsonCheck::Value,
                    (true, true) => kawal_gateway::payload::JsonCheck::Object,
                },
            })
            .collect(),
        ..kawal_gateway::limits::Settings::default()
    }
}

/// Builds the registry, the queue and the listener's and bridge's settings.
pub fn prepare(dev: &Arc<Device>, config: &ValidConfig, log: Arc<AuditLog>) -> Result<Prepared> {
    let registry = Arc::new(registry(dev, config)?);
    let identity = crate::serve::tls_identity(dev)?;
    let floor = crate::devcert::clock_floor::initial(
        dev,
        &identity.cert_chain_pem,
        registry.ca().cert_pem(),
    );
    let device = Arc::new(DeviceTls {
        chain_pem: RwLock::new(identity.cert_chain_pem.clone()),
        key_der: Zeroizing::new(identity.key_pkcs8_der.to_vec()),
        floor: Arc::new(kawal_gateway::clock::ClockFloor::new(floor)),
    });
    let queue = Queue::open(
        Arc::clone(&dev.store),
        QueueSettings {
            max_bytes: config.gateway.queue_max_bytes,
            when_full: if config.gateway.queue_drop_oldest {
                FullPolicy::DropOldest
            } else {
                FullPolicy::Refuse
            },
            ..QueueSettings::default()
        },
    )
    .map_err(|e| CliError::new(Exit::DataErr, format!("upstream queue: {e}")))?;
    let bridge = match &config.gateway.upstream {
        None => None,
        Some(u) => {
            let ca = std::fs::read_to_string(&u.ca_file).map_err(|e| {
                CliError::new(Exit::NoInput, format!("{}: {e}", u.ca_file.display()))
            })?;
            let chain = match &u.cert_file {
                Some(p) => std::fs::read_to_string(p)
                    .map_err(|e| CliError::new(Exit::NoInput, format!("{}: {e}", p.display())))?,
                None => device.chain_pem(),
            };
            let mut s = BridgeSettings::new(
                u.host.clone(),
                u.server_name.clone(),
                ca,
                ClientIdentity {
                    cert_chain_pem: chain,
                    key_pkcs8_der: Zeroizing::new(device.key_der.to_vec()),
                },
                dev.info.uid.clone(),
            );
            s.port = u.port;
            s.up_prefix = u.prefix.clone();
            s.keepalive = Duration::from_secs(u64::from(u.keepalive_s));
            s.inflight = u.inflight;
            let problems = s.problems();
            if !problems.is_empty() {
                return Err(CliError::new(
                    Exit::Config,
                    format!("[upstream]: {}", problems.join("; ")),
                ));
            }
            Some(s)
        }
    };
    Ok(Prepared {
        registry,
        queue,
        device,
        bridge,
        settings: limits(config),
        acl: kawal_gateway::acl::AclConfig::from_pairs(&config.gateway.acl),
        addr: config.mqtt,
        log,
        token_ttl: Duration::from_secs(config.gateway.token_ttl_s),
        roles: config.gateway.acl.keys().cloned().collect(),
        gateway_uid: dev.info.uid.clone(),
    })
}

/// The registry as the broker's [`Directory`].
struct RegistryDirectory(Arc<Sensors>);

impl Directory for RegistryDirectory {
    fn admit(&self, id: &Identity) -> std::result::Result<String, Refusal> {
        self.0.admit(&id.uid, &id.serial).map_err(|r| match r {
            SensorRefusal::NotEnrolled => Refusal::NotEnrolled,
            SensorRefusal::Revoked => Refusal::Revoked,
            SensorRefusal::Superseded => Refusal::Superseded,
            SensorRefusal::Inactive => Refusal::Inactive,
        })
    }

    fn seen(&self, uid: &str) {
        let now = kawal_audit::WallTime::now().unix_micros() / 1_000_000;
        if let Err(e) = self.0.mark_seen(uid, now) {
            tracing::warn!(error = %e, uid, "could not record that a sensor was seen");
        }
    }
}

/// The listener's material: the device chain `chain_pem`, the sensor CA and a fresh CRL.
fn tls_material(device: &DeviceTls, chain_pem: &str, registry: &Sensors) -> Result<TlsMaterial> {
    let crl = registry
        .crl(CRL_DAYS)
        .map_err(|e| CliError::new(Exit::DataErr, format!("sensor CRL: {e}")))?;
    Ok(TlsMaterial {
        chain: parse_chain(chain_pem)?,
        key: device.key(),
        sensor_roots: vec![CertificateDer::from(registry.ca().cert_der().to_vec())],
        external_roots: registry
            .external_cas()
            .iter()
            .map(|der| CertificateDer::from(der.clone()))
            .collect(),
        crls: vec![CertificateRevocationListDer::from(crl.der)],
        clock_floor: Some(Arc::clone(&device.floor)),
    })
}

/// The running gateway.
pub struct Running {
    /// The MQTT listener.
    pub server: Arc<Server>,
    /// The bridge, if an upstream is configured.
    pub bridge: Option<Arc<BridgeHandle>>,
    /// The queue.
    pub queue: Arc<Queue>,
    /// The registry.
    pub registry: Arc<Sensors>,
    device: Arc<DeviceTls>,
}

/// Rebuilds the listener's material from `device`'s chain in force and reloads `server`; the
/// chain's lock is held throughout, so a renewal and a revocation cannot undo each other.
fn reload_listener(server: &Server, device: &DeviceTls, registry: &Sensors) -> Result<()> {
    let chain = device
        .chain_pem
        .read()
        .unwrap_or_else(PoisonError::into_inner);
    let material = tls_material(device, &chain, registry)?;
    server
        .reload_tls(&material)
        .map_err(|e| CliError::new(Exit::DataErr, format!("MQTT TLS reload: {e}")))
}

/// What a device-certificate renewal needs of the running gateway; see
/// [`Running::cert_reloader`].
#[derive(Clone)]
pub struct CertReloader {
    server: Arc<Server>,
    registry: Arc<Sensors>,
    device: Arc<DeviceTls>,
}

impl CertReloader {
    /// Puts `chain_pem` (the renewed device certificate, leaf first, and its chain) in force on
    /// the MQTT listener: handshakes from now on present it, live sessions continue. The key
    /// stays the device key. On an error the previous chain stays in force.
    ///
    /// # Errors
    /// An unreadable chain, a CRL that cannot be signed, or material the listener refuses.
    pub fn reload_device_cert(&self, chain_pem: &str) -> Result<()> {
        let mut chain = self
            .device
            .chain_pem
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let material = tls_material(&self.device, chain_pem, &self.registry)?;
        self.server
            .reload_tls(&material)
            .map_err(|e| CliError::new(Exit::DataErr, format!("MQTT TLS reload: {e}")))?;
        chain_pem.clone_into(&mut chain);
        Ok(())
    }

    /// The sensor CA's certificate, PEM (for its expiry).
    pub fn sensor_ca_pem(&self) -> &str {
        self.registry.ca().cert_pem()
    }
}

impl Running {
    /// The clock floor the listener checks sensor certificates at.
    pub fn clock_floor(&self) -> Arc<kawal_gateway::clock::ClockFloor> {
        Arc::clone(&self.device.floor)
    }

    /// A handle for putting a renewed device certificate in force on the MQTT listener (the
    /// upstream bridge has its own, [`BridgeHandle::reload_identity`]).
    pub fn cert_reloader(&self) -> CertReloader {
        CertReloader {
            server: Arc::clone(&self.server),
            registry: Arc::clone(&self.registry),
            device: Arc::clone(&self.device),
        }
    }

    /// Stops the bridge and the listener (sessions closed, their events written).
    pub async fn shutdown(self) {
        if let Some(b) = &self.bridge {
            b.shutdown().await;
        }
        self.server.shutdown().await;
    }
}

/// Binds the listener, starts the bridge and hands the API its sensor operations.
pub async fn start(p: Prepared, api: &kawal_api::AppState) -> Result<Running> {
    let tls = tls_material(&p.device, &p.device.chain_pem(), &p.registry)?;
    let parts = ServerParts {
        settings: p.settings,
        acl: p.acl,
        tls,
        directory: Arc::new(RegistryDirectory(Arc::clone(&p.registry))),
        uplink: Arc::clone(&p.queue) as Arc<dyn kawal_gateway::Uplink>,
        audit: Arc::clone(&p.log),
    };
    let server =
        Arc::new(Server::bind(p.addr, parts).await.map_err(|e| {
            CliError::new(Exit::NoPerm, format!("MQTT listener on {}: {e}", p.addr))
        })?);
    let bridge = match p.bridge {
        None => None,
        Some(settings) => {
            let broker = Arc::clone(server.broker());
            let stamper = Arc::new(Stamper::default());
            // Commands from upstream get a sequence number and expiry (the replay rule).
            let deliver: kawal_gateway::bridge::DeliverDown =
                Arc::new(move |topic: String, payload: Bytes| {
                    let now =
                        u64::try_from(kawal_audit::WallTime::now().unix_micros()).unwrap_or(0);
                    let stamped = Bytes::from(stamper.stamp(&payload, now, COMMAND_TTL_S));
                    if let Err(e) = broker.publish_local(&topic, &stamped, 1) {
                        tracing::warn!(error = %e, "a command from upstream has an unusable topic");
                    }
                });
            let handle = Bridge::spawn(settings, Arc::clone(&p.queue), deliver, Arc::clone(&p.log))
                .map_err(|e| CliError::new(Exit::Config, format!("upstream bridge: {e}")))?;
            Some(Arc::new(handle))
        }
    };
    let backend = DaemonSensors {
        registry: Arc::clone(&p.registry),
        server: Arc::clone(&server),
        queue: Arc::clone(&p.queue),
        bridge: bridge.clone(),
        device: Arc::clone(&p.device),
        log: p.log,
        flood: Arc::clone(&api.flood),
        token_ttl: p.token_ttl,
        roles: p.roles,
        gateway_uid: p.gateway_uid,
        mqtt: server.local_addr(),
    };
    if api.sensors.set(Arc::new(backend)).is_err() {
        tracing::warn!("the API already had sensor operations; keeping the first");
    }
    Ok(Running {
        server,
        bridge,
        queue: p.queue,
        registry: p.registry,
        device: p.device,
    })
}

/// The API's sensor operations over the registry, the listener and the queue.
struct DaemonSensors {
    registry: Arc<Sensors>,
    server: Arc<Server>,
    queue: Arc<Queue>,
    bridge: Option<Arc<BridgeHandle>>,
    device: Arc<DeviceTls>,
    log: Arc<AuditLog>,
    /// The API's flood control: EST refusals are caused by unauthenticated peers.
    flood: Arc<kawal_audit::FloodControl>,
    token_ttl: Duration,
    roles: Vec<String>,
    gateway_uid: String,
    mqtt: SocketAddr,
}

fn map_err(e: &kawal_pki::Error) -> SensorError {
    use kawal_pki::Error as E;
    match e {
        E::NotEnrolled { .. } => SensorError::NotFound,
        E::AlreadyEnrolled { uid } => SensorError::Conflict(format!(
            "a sensor '{uid}' is already enrolled (renew gives it a new token)"
        )),
        E::State { reason, .. } => SensorError::Conflict((*reason).to_owned()),
        E::InvalidUid { reason } => {
            SensorError::Invalid(format!("sensor name not acceptable: {reason}"))
        }
        E::InvalidRole { reason } => {
            SensorError::Invalid(format!("role name not acceptable: {reason}"))
        }
        E::Csr { reason } => SensorError::Invalid(format!("certificate request refused: {reason}")),
        E::Token(_) | E::NotCurrent { .. } => SensorError::Refused,
        other => {
            tracing::error!(error = %other, "sensor operation failed");
            SensorError::Internal
        }
    }
}

fn iso(unix: Option<i64>) -> Value {
    unix.and_then(|t| kawal_audit::WallTime::from_unix_micros(t.saturating_mul(1_000_000)))
        .map_or(Value::Null, |t| json!(t.to_string()))
}

impl DaemonSensors {
    fn record(&self, event: Event) {
        if let Err(e) = self.log.append(event) {
            tracing::error!(error = %e, "audit log write failed");
        }
    }

    /// Records a refusal an unauthenticated peer at `source` can cause at will, under the
    /// API's flood control (summaries: `api.events-suppressed`).
    fn record_limited(&self, source: std::net::IpAddr, kind: &str, event: Event) {
        if self.flood.admit(source, kind, None) {
            self.record(event);
        }
    }

    /// After a certificate changed hands: the CRL is re-signed and the listener reloaded.
    fn reload_crl(&self) {
        if let Err(e) = reload_listener(&self.server, &self.device, &self.registry) {
            tracing::error!(error = %e.message, "MQTT TLS reload with a new CRL failed");
        }
    }

    fn issued(&self, i: &kawal_pki::Issuance, how: &str, actor: &str) {
        let mut e = Event::new("sensor.certificate-issued", actor, Outcome::Success)
            .with("uid", i.uid.as_str())
            .with("serial", i.issued.serial.as_str())
            .with("role", i.role.as_str())
            .with("via", how)
            .with("not_after", i.issued.not_after);
        if let Some(old) = &i.superseded {
            e = e.with("superseded", old.as_str());
        }
        self.record(e);
        if i.superseded.is_some() {
            // A device still holding the old certificate is dropped; the CRL lists it.
            self.server.disconnect_uid(&i.uid, "superseded");
            self.reload_crl();
        }
    }

    fn info_json(&self, s: &kawal_pki::SensorInfo) -> Value {
        json!({
            "uid": s.uid,
            "role": s.role,
            "state": s.state,
            "serial": s.serial,
            "not_before": iso(s.not_before),
            "not_after": iso(s.not_after),
            "expiry": s.expiry.map(kawal_pki::ExpiryState::as_str),
            "issued_at": iso(s.issued_at),
            "created_at": iso(Some(s.created_at)),
            "last_seen": iso(s.last_seen),
            "revoked_at": iso(s.revoked_at),
            "connected": self.server.broker().is_live(&s.uid),
            "token_outstanding": s.token_outstanding,
            "token_expires_at": iso(s.token_expires_at),
        })
    }

    fn token_json(&self, t: &kawal_pki::EnrolToken) -> Value {
        json!({
            "name": t.uid,
            "role": t.role,
            "token": t.expose(),
            "expires_at": iso(Some(t.expires_at)),
            "est": "/.well-known/est/simpleenroll",
            "mqtt_port": self.mqtt.port(),
        })
    }
}

impl SensorBackend for DaemonSensors {
    fn list(&self) -> std::result::Result<Value, SensorError> {
        let all = self.registry.list().map_err(|e| map_err(&e))?;
        Ok(json!({ "sensors": all.iter().map(|s| self.info_json(s)).collect::<Vec<_>>() }))
    }

    fn show(&self, name: &str) -> std::result::Result<Value, SensorError> {
        let s = self.registry.show(name).map_err(|e| map_err(&e))?;
        let mut v = self.info_json(&s);
        v["cert_pem"] = json!(s.cert_pem);
        v["previous"] = json!(s.previous);
        Ok(v)
    }

    fn enroll(
        &self,
        name: &str,
        role: Option<&str>,
        actor: &str,
    ) -> std::result::Result<Value, SensorError> {
        if let Some(r) = role
            && !self.roles.iter().any(|x| x == r)
        {
            return Err(SensorError::Invalid(format!(
                "unknown role '{}': the topic rules name {}",
                r.chars()
                    .filter(|c| c.is_ascii_graphic())
                    .take(32)
                    .collect::<String>(),
                self.roles.join(", ")
            )));
        }
        let t = self
            .registry
            .enroll(name, role, self.token_ttl)
            .map_err(|e| map_err(&e))?;
        self.record(
            Event::new("sensor.enrolled", actor, Outcome::Success)
                .with("uid", t.uid.as_str())
                .with("role", t.role.as_str())
                .with("token_expires_at", t.expires_at),
        );
        Ok(self.token_json(&t))
    }

    fn revoke(&self, name: &str, actor: &str) -> std::result::Result<Value, SensorError> {
        let r = self
            .registry
            .revoke(name, RevokeReason::Unspecified)
            .map_err(|e| map_err(&e))?;
        let dropped = self.server.disconnect_uid(&r.uid, "revoked");
        self.reload_crl();
        self.record(
            Event::new("sensor.revoked", actor, Outcome::Success)
                .with("uid", r.uid.as_str())
                .with("serials", r.serials.join(","))
                .with("connection_dropped", dropped)
                .with("crl_number", r.crl_number),
        );
        Ok(json!({
            "uid": r.uid,
            "serial": r.serials.last(),
            "serials": r.serials,
            "connection_dropped": dropped,
            "crl_number": r.crl_number,
        }))
    }

    fn renew(&self, name: &str, actor: &str) -> std::result::Result<Value, SensorError> {
        let t = self
            .registry
            .renew(name, self.token_ttl)
            .map_err(|e| map_err(&e))?;
        self.record(
            Event::new("sensor.token-issued", actor, Outcome::Success)
                .with("uid", t.uid.as_str())
                .with("token_expires_at", t.expires_at),
        );
        Ok(self.token_json(&t))
    }

    fn sign_csr(
        &self,
        name: &str,
        csr_pem: &str,
        actor: &str,
    ) -> std::result::Result<Value, SensorError> {
        let i = self
            .registry
            .sign_csr_for(name, csr_pem.as_bytes())
            .map_err(|e| map_err(&e))?;
        self.issued(&i, "operator-csr", actor);
        Ok(json!({
            "uid": i.uid,
            "serial": i.issued.serial,
            "not_after": iso(Some(i.issued.not_after)),
            "cert_pem": i.issued.cert_pem,
        }))
    }

    fn import(
        &self,
        cert_pem: &str,
        role: Option<&str>,
        actor: &str,
    ) -> std::result::Result<Value, SensorError> {
        if self.registry.external_cas().is_empty() {
            return Err(SensorError::Conflict(
                "no external sensor CA is configured ([sensors] external-ca-file)".into(),
            ));
        }
        if let Some(r) = role
            && !self.roles.iter().any(|x| x == r)
        {
            return Err(SensorError::Invalid(format!(
                "unknown role: the topic rules name {}",
                self.roles.join(", ")
            )));
        }
        let der = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .next()
            .and_then(std::result::Result::ok)
            .ok_or_else(|| SensorError::Invalid("no PEM certificate in cert_pem".into()))?;
        let i = self.registry.import(&der, role).map_err(|e| match e {
            kawal_pki::Error::Parse(m) => SensorError::Invalid(m),
            other => map_err(&other),
        })?;
        self.issued(&i, "external-ca-import", actor);
        Ok(json!({
            "uid": i.uid,
            "role": i.role,
            "serial": i.issued.serial,
            "not_after": iso(Some(i.issued.not_after)),
            "superseded": i.superseded,
        }))
    }

    fn ca_pem(&self) -> std::result::Result<String, SensorError> {
        Ok(self.registry.ca().cert_pem().to_owned())
    }

    fn crl_pem(&self) -> std::result::Result<String, SensorError> {
        self.registry
            .crl(CRL_DAYS)
            .map(|c| c.pem)
            .map_err(|e| map_err(&e))
    }

    fn est_enroll(
        &self,
        token: &str,
        csr_der: &[u8],
        source: std::net::IpAddr,
    ) -> std::result::Result<Vec<u8>, SensorError> {
        match self.registry.redeem(token, csr_der) {
            Ok(i) => {
                self.issued(&i, "est-simpleenroll", &i.uid.clone());
                Ok(i.issued.cert_der)
            }
            Err(e) => {
                let reason = match &e {
                    kawal_pki::Error::Token(t) => t.as_str().to_owned(),
                    kawal_pki::Error::Csr { reason } => format!("csr: {reason}"),
                    other => other.to_string(),
                };
                self.record_limited(
                    source,
                    "sensor.enrol-refused/est-simpleenroll",
                    Event::new("sensor.enrol-refused", "unknown", Outcome::Denied)
                        .with("via", "est-simpleenroll")
                        .with("reason", reason)
                        .with("source", source.to_string()),
                );
                Err(map_err(&e))
            }
        }
    }

    fn est_reenroll(
        &self,
        client_cert_der: &[u8],
        csr_der: &[u8],
        source: std::net::IpAddr,
    ) -> std::result::Result<Vec<u8>, SensorError> {
        match self.registry.reenroll_with_cert(client_cert_der, csr_der) {
            Ok(i) => {
                self.issued(&i, "est-simplereenroll", &i.uid.clone());
                Ok(i.issued.cert_der)
            }
            Err(e) => {
                self.record_limited(
                    source,
                    "sensor.enrol-refused/est-simplereenroll",
                    Event::new("sensor.enrol-refused", "unknown", Outcome::Denied)
                        .with("via", "est-simplereenroll")
                        .with("reason", e.to_string())
                        .with("source", source.to_string()),
                );
                Err(match map_err(&e) {
                    SensorError::Internal => SensorError::Refused,
                    other => other,
                })
            }
        }
    }

    fn est_cacerts(&self) -> std::result::Result<Vec<u8>, SensorError> {
        Ok(kawal_pki::pkcs7_certs_only(&[self
            .registry
            .ca()
            .cert_der()
            .to_vec()]))
    }

    fn pkcs7(&self, cert_der: &[u8]) -> Vec<u8> {
        kawal_pki::pkcs7_certs_only(&[cert_der.to_vec()])
    }

    fn gateway(&self) -> Value {
        let recent: Vec<Value> = self
            .queue
            .recent(20)
            .into_iter()
            .map(|r| serde_json::to_value(r).unwrap_or(Value::Null))
            .collect();
        json!({
            "gateway": self.gateway_uid,
            "mqtt": self.mqtt.to_string(),
            "broker": self.server.stats(),
            "queue": self.queue.stats(),
            "bridge": self.bridge.as_ref().map(|b| b.status()),
            "recent": recent,
        })
    }
}

/// What the daemon's MQTT listener serves, kept in the store at start for `kawal audit`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct MqttRecord {
    /// When it started (RFC 3339).
    pub started_at: String,
    /// The address bound.
    pub listen: String,
    /// Client certificates are required (no anonymous, no password-only access).
    pub client_cert_required: bool,
    /// A plain-TCP MQTT listener exists (never, by construction).
    pub plain_listener: bool,
    /// TLS versions offered.
    pub tls_versions: Vec<String>,
    /// Topic rules per role: (publish, subscribe) templates.
    pub acl: std::collections::BTreeMap<String, (Vec<String>, Vec<String>)>,
    /// Source networks allowed (empty: any).
    pub allow_sources: Vec<String>,
    /// The sensor CA.
    pub sensor_ca: CaRecord,
    /// The upstream, if any: address, server name, pinned CA SHA-256.
    pub upstream: Option<UpstreamRecord>,
    /// Queue bound and policy.
    pub queue: String,
}

/// The upstream part of [`MqttRecord`].
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct UpstreamRecord {
    /// host:port.
    pub address: String,
    /// The name its certificate must carry.
    pub server_name: String,
    /// The pinned CA.
    pub ca: Option<CaRecord>,
}

/// A CA certificate as the report names it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CaRecord {
    /// Subject common name.
    pub subject: String,
    /// End of validity (RFC 3339).
    pub not_after: String,
    /// SHA-256 of the DER.
    pub sha256: String,
}

impl From<kawal_pki::CertFacts> for CaRecord {
    fn from(f: kawal_pki::CertFacts) -> Self {
        Self {
            subject: f.subject_cn,
            not_after: f.not_after,
            sha256: f.fingerprint_sha256,
        }
    }
}

/// The key of [`MqttRecord`] in the health table.
pub const MQTT_RECORD: &str = "mqtt";

/// Records what the MQTT side serves.
pub fn record_mqtt(dev: &Device, config: &ValidConfig, running: &Running) -> Result<()> {
    let ca = kawal_pki::cert_facts(running.registry.ca().cert_pem())
        .map_err(|e| CliError::new(Exit::DataErr, format!("sensor CA: {e}")))?;
    let upstream = config.gateway.upstream.as_ref().map(|u| UpstreamRecord {
        address: format!("{}:{}", u.host, u.port),
        server_name: u.server_name.clone(),
        ca: std::fs::read_to_string(&u.ca_file)
            .ok()
            .and_then(|p| kawal_pki::cert_facts(&p).ok())
            .map(CaRecord::from),
    });
    let record = MqttRecord {
        started_at: kawal_audit::WallTime::now().to_string(),
        listen: running.server.local_addr().to_string(),
        client_cert_required: true,
        plain_listener: false,
        tls_versions: vec!["TLSv1.3".into(), "TLSv1.2 (ECDHE + AEAD only)".into()],
        acl: config.gateway.acl.clone(),
        allow_sources: config
            .gateway
            .allow_sources
            .iter()
            .map(ToString::to_string)
            .collect(),
        sensor_ca: ca.into(),
        upstream,
        queue: format!(
            "{} MiB, when full: {}",
            config.gateway.queue_max_bytes / (1024 * 1024),
            if config.gateway.queue_drop_oldest {
                "drop the oldest"
            } else {
                "refuse new QoS 1 messages"
            }
        ),
    };
    let json = serde_json::to_vec(&record).or_exit(Exit::Failure, "mqtt record")?;
    dev.store
        .put(tables::HEALTH, MQTT_RECORD, &json)
        .or_exit(Exit::Io, "store")
}

/// The demo's simulated sensors: enrolled in-process, connected over mutual TLS like any
/// other, publishing a reading every two seconds until the daemon stops.
pub fn demo_sensors(running: &Running, ca_pem: &str, addr: SocketAddr) {
    static STARTED: OnceLock<()> = OnceLock::new();
    if STARTED.set(()).is_err() {
        return;
    }
    for (name, kind) in [
        ("demo-thermo-1", "temperature"),
        ("demo-meter-2", "energy"),
        ("demo-door-3", "door"),
    ] {
        let registry = Arc::clone(&running.registry);
        let ca_pem = ca_pem.to_owned();
        tokio::spawn(async move {
            if let Err(e) = demo_sensor(&registry, &ca_pem, addr, name, kind).await {
                tracing::warn!(sensor = name, error = %e, "demo sensor stopped");
            }
        });
    }
}

async fn demo_sensor(
    registry: &Sensors,
    ca_pem: &str,
    addr: SocketAddr,
    name: &str,
    kind: &str,
) -> std::result::Result<(), String> {
    let ttl = Duration::from_secs(600);
    let token = match registry.enroll(name, None, ttl) {
        Ok(t) => t,
        Err(kawal_pki::Error::AlreadyEnrolled { .. }) => {
            registry.renew(name, ttl).map_err(|e| e.to_string())?
        }
        Err(e) => return Err(e.to_string()),
    };
    let key = kawal_pki::IdentityKey::generate().map_err(|e| e.to_string())?;
    let csr = kawal_pki::device_csr_pem(&key, name).map_err(|e| e.to_string())?;
    let issued = registry
        .redeem(token.expose(), csr.as_bytes())
        .map_err(|e| e.to_string())?;
    let key_pem = Zeroizing::new(crate::est::pem("PRIVATE KEY", key.pkcs8_der()));
    let tls = crate::client::sim::sensor_tls(ca_pem, &issued.issued.cert_pem, &key_pem)
        .map_err(|e| e.message)?;
    let settings = kawal_gateway::client::ClientSettings {
        addr,
        server_name: "localhost".into(),
        tls,
        client_id: name.to_owned(),
        keep_alive: 30,
    };
    let mut n: u64 = 0;
    loop {
        let client = match kawal_gateway::client::Client::connect(&settings).await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(sensor = name, error = %e, "demo sensor reconnecting");
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
        };
        loop {
            n += 1;
            #[allow(clippy::cast_precision_loss, reason = "a demo reading")]
            let value = match kind {
                "temperature" => json!({ "celsius": 21.0 + ((n % 20) as f64) / 10.0 }),
                "energy" => json!({ "wh": n * 7 }),
                _ => json!({ "open": n.is_multiple_of(5) }),
            };
            let topic = format!("kawal/{name}/up/{kind}");
            let payload = Bytes::from(value.to_string());
            match client.publish(&topic, payload, true).await {
                Ok(Some(ack)) => {
                    if tokio::time::timeout(Duration::from_secs(10), ack)
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                Ok(None) => {}
                Err(_) => break,
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
}
