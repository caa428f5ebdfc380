//! Sensors over the API (G045 AU-1-9, AU-1-10, AU-3-1): the operator's routes (enrol, list,
//! show, revoke, renew, sign a CSR, the gateway's live state) and the EST subset sensors use to
//! get their certificate (RFC 7030 `cacerts`, `simpleenroll` with a one-time token,
//! `simplereenroll` with the current certificate). The daemon implements [`SensorBackend`] with
//! its registry and broker; this module only checks input and shapes answers.
use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::Deserialize;
use serde_json::Value;

use crate::api::{Body, Name};
use crate::guard::peer;
use crate::reply::json_error;
use crate::server::ConnInfo;
use crate::state::{AppState, Principal};

/// Largest CSR body accepted on the EST and CSR routes.
pub const CSR_LIMIT: usize = 16 * 1024;

/// Why a sensor operation failed; the text of `Invalid` and `Conflict` is shown to the caller,
/// so it must never hold a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SensorError {
    /// No such sensor.
    NotFound,
    /// The request is malformed or breaks a rule (the text says which).
    Invalid(String),
    /// The sensor's state does not allow it (the text says why).
    Conflict(String),
    /// Authentication failed (bad, used or expired token; certificate not current). One
    /// answer for all of them; the reason is in the audit log.
    Refused,
    /// Anything else (store, signing); logged by the backend.
    Internal,
}

/// What the daemon provides for sensors. Every call that changes something writes its own
/// audit event (the backend knows the serials and states); `actor` names who asked.
pub trait SensorBackend: Send + Sync {
    /// All sensors: name, role, state, serial, expiry, last seen.
    fn list(&self) -> Result<Value, SensorError>;
    /// One sensor, with its certificate history.
    fn show(&self, name: &str) -> Result<Value, SensorError>;
    /// Enrols a sensor: a one-time token for EST `simpleenroll`, shown once.
    fn enroll(&self, name: &str, role: Option<&str>, actor: &str) -> Result<Value, SensorError>;
    /// Revokes the sensor's certificate: live connections are dropped, new ones refused.
    fn revoke(&self, name: &str, actor: &str) -> Result<Value, SensorError>;
    /// A fresh one-time token so the sensor can enrol again (a new key), e.g. after loss.
    fn renew(&self, name: &str, actor: &str) -> Result<Value, SensorError>;
    /// Signs a CSR for an enrolled sensor; the sensor's previous certificate is revoked.
    fn sign_csr(&self, name: &str, csr_pem: &str, actor: &str) -> Result<Value, SensorError>;
    /// Imports a sensor certificate (PEM) issued by a configured external CA (e.g. the
    /// manufacturer's): the sensor, new or existing, is active with exactly that certificate.
    fn import(
        &self,
        cert_pem: &str,
        role: Option<&str>,
        actor: &str,
    ) -> Result<Value, SensorError> {
        let _ = (cert_pem, role, actor);
        Err(SensorError::Conflict(
            "no external sensor CA is configured ([sensors] external-ca-file)".into(),
        ))
    }
    /// The sensor CA certificate, PEM.
    fn ca_pem(&self) -> Result<String, SensorError>;
    /// The current CRL, PEM.
    fn crl_pem(&self) -> Result<String, SensorError>;
    /// EST `simpleenroll`: the token and the CSR (DER); the new certificate (DER).
    fn est_enroll(
        &self,
        token: &str,
        csr_der: &[u8],
        source: IpAddr,
    ) -> Result<Vec<u8>, SensorError>;
    /// EST `simplereenroll`: the client certificate the TLS layer verified (DER) and the CSR.
    fn est_reenroll(
        &self,
        client_cert_der: &[u8],
        csr_der: &[u8],
        source: IpAddr,
    ) -> Result<Vec<u8>, SensorError>;
    /// The CA as a PKCS#7 certs-only structure (DER), for EST `cacerts`.
    fn est_cacerts(&self) -> Result<Vec<u8>, SensorError>;
    /// Wraps a certificate (DER) as PKCS#7 certs-only (DER), for EST answers.
    fn pkcs7(&self, cert_der: &[u8]) -> Vec<u8>;
    /// The gateway's live state: broker, queue, bridge, recent telemetry.
    fn gateway(&self) -> Value;
}

fn not_running() -> Response {
    json_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "the gateway is not running on this device",
    )
}

/// The answer to a failed sensor operation.
pub fn sensor_error(e: &SensorError) -> Response {
    match e {
        SensorError::NotFound => json_error(StatusCode::NOT_FOUND, "no such sensor"),
        SensorError::Invalid(why) => json_error(StatusCode::BAD_REQUEST, why),
        SensorError::Conflict(why) => json_error(StatusCode::CONFLICT, why),
        SensorError::Refused => json_error(StatusCode::UNAUTHORIZED, "enrolment refused"),
        SensorError::Internal => json_error(StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
    }
}

fn answer(r: Result<Value, SensorError>, ok: StatusCode) -> Response {
    match r {
        Ok(v) => (ok, axum::Json(v)).into_response(),
        Err(e) => sensor_error(&e),
    }
}

/// Runs a gateway operation on the blocking pool: they write the store and the audit log,
/// each with a sync, and sign certificates; none of that may hold an async runtime thread,
/// or a slow disk would stall every other request and MQTT session.
async fn off_runtime<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&dyn SensorBackend) -> T + Send + 'static,
) -> Result<T, Response> {
    let Some(b) = state.sensors.get().map(Arc::clone) else {
        return Err(not_running());
    };
    tokio::task::spawn_blocking(move || f(b.as_ref()))
        .await
        .map_err(|_| sensor_error(&SensorError::Internal))
}

/// Runs `f` off the runtime and answers its JSON with `ok`.
async fn json_op(
    state: &AppState,
    ok: StatusCode,
    f: impl FnOnce(&dyn SensorBackend) -> Result<Value, SensorError> + Send + 'static,
) -> Response {
    match off_runtime(state, f).await {
        Ok(r) => answer(r, ok),
        Err(res) => res,
    }
}

/// `GET /api/v1/sensors`.
pub async fn list(State(state): State<Arc<AppState>>) -> Response {
    json_op(&state, StatusCode::OK, |b| b.list()).await
}

/// `GET /api/v1/sensors/{name}`.
pub async fn show(State(state): State<Arc<AppState>>, Name(name): Name) -> Response {
    json_op(&state, StatusCode::OK, move |b| b.show(&name)).await
}

/// The body of `POST /api/v1/sensors`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// The sensor's name, which becomes its UID.
    pub name: String,
    /// Its ACL role (default `sensor`).
    pub role: Option<String>,
}

/// `POST /api/v1/sensors`: enrol; the answer holds the one-time token.
pub async fn enroll(
    State(state): State<Arc<AppState>>,
    axum::Extension(p): axum::Extension<Principal>,
    Body(req): Body<EnrollRequest>,
) -> Response {
    json_op(&state, StatusCode::CREATED, move |b| {
        b.enroll(&req.name, req.role.as_deref(), &p.user)
    })
    .await
}

/// `POST /api/v1/sensors/{name}/revoke`.
pub async fn revoke(
    State(state): State<Arc<AppState>>,
    axum::Extension(p): axum::Extension<Principal>,
    Name(name): Name,
) -> Response {
    json_op(&state, StatusCode::OK, move |b| b.revoke(&name, &p.user)).await
}

/// `POST /api/v1/sensors/{name}/renew`.
pub async fn renew(
    State(state): State<Arc<AppState>>,
    axum::Extension(p): axum::Extension<Principal>,
    Name(name): Name,
) -> Response {
    json_op(&state, StatusCode::OK, move |b| b.renew(&name, &p.user)).await
}

/// The body of `POST /api/v1/sensors/import`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportRequest {
    /// The sensor's certificate, PEM, issued by the configured external CA.
    pub cert_pem: String,
    /// Its ACL role for a new sensor (default `sensor`).
    pub role: Option<String>,
}

/// `POST /api/v1/sensors/import`: a sensor with a certificate from the external CA.
pub async fn import(
    State(state): State<Arc<AppState>>,
    axum::Extension(p): axum::Extension<Principal>,
    Body(req): Body<ImportRequest>,
) -> Response {
    if req.cert_pem.len() > CSR_LIMIT {
        return json_error(StatusCode::PAYLOAD_TOO_LARGE, "certificate too large");
    }
    json_op(&state, StatusCode::OK, move |b| {
        b.import(&req.cert_pem, req.role.as_deref(), &p.user)
    })
    .await
}

/// The body of `POST /api/v1/sensors/{name}/csr`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsrRequest {
    /// The PKCS#10 request, PEM.
    pub csr_pem: String,
}

/// `POST /api/v1/sensors/{name}/csr`: sign a CSR file for an enrolled sensor.
pub async fn sign_csr(
    State(state): State<Arc<AppState>>,
    axum::Extension(p): axum::Extension<Principal>,
    Name(name): Name,
    Body(req): Body<CsrRequest>,
) -> Response {
    if req.csr_pem.len() > CSR_LIMIT {
        return json_error(StatusCode::PAYLOAD_TOO_LARGE, "CSR too large");
    }
    json_op(&state, StatusCode::OK, move |b| {
        b.sign_csr(&name, &req.csr_pem, &p.user)
    })
    .await
}

/// `GET /api/v1/sensors/ca`: the sensor CA certificate (public: sensors and brokers need it).
pub async fn ca(State(state): State<Arc<AppState>>) -> Response {
    match off_runtime(&state, |b| b.ca_pem()).await {
        Ok(r) => pem_answer(r),
        Err(res) => res,
    }
}

/// `GET /api/v1/sensors/crl`: the revocation list (public, for other parties).
pub async fn crl(State(state): State<Arc<AppState>>) -> Response {
    match off_runtime(&state, |b| b.crl_pem()).await {
        Ok(r) => pem_answer(r),
        Err(res) => res,
    }
}

fn pem_answer(r: Result<String, SensorError>) -> Response {
    match r {
        Ok(pem) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-pem-file"),
            )],
            pem,
        )
            .into_response(),
        Err(e) => sensor_error(&e),
    }
}

/// `GET /api/v1/gateway`: broker, queue, bridge and recent telemetry.
pub async fn gateway(State(state): State<Arc<AppState>>) -> Response {
    match off_runtime(&state, |b| b.gateway()).await {
        Ok(v) => axum::Json(v).into_response(),
        Err(res) => res,
    }
}

/// An EST answer: base64 of a PKCS#7 certs-only structure (RFC 7030 §4.1.3, §4.2.3).
fn est_answer(der: &[u8]) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/pkcs7-mime; smime-type=certs-only"),
            ),
            (
                header::HeaderName::from_static("content-transfer-encoding"),
                HeaderValue::from_static("base64"),
            ),
        ],
        base64_lines(der),
    )
        .into_response()
}

/// Base64 (standard alphabet) in 64-character lines, as EST clients expect.
fn base64_lines(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 1);
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out
}

/// The CSR of an EST request: base64 DER (RFC 7030 §4.2.1), whitespace allowed.
async fn est_csr(req: axum::extract::Request) -> Result<Vec<u8>, (StatusCode, &'static str)> {
    let body = axum::body::to_bytes(req.into_body(), CSR_LIMIT)
        .await
        .map_err(|_| (StatusCode::PAYLOAD_TOO_LARGE, "request too large"))?;
    let compact: Vec<u8> = body
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(&compact)
        .map_err(|_| {
            (
                StatusCode::BAD_REQUEST,
                "the body must be a base64 PKCS#10 request",
            )
        })
}

/// The enrolment token: `Authorization: Bearer <token>`, or HTTP Basic with the token as the
/// password (what common EST clients send).
fn est_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    if let Some(t) = value.strip_prefix("Bearer ") {
        return Some(t.trim().to_owned());
    }
    let basic = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(basic.trim().as_bytes())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (_, password) = text.split_once(':')?;
    Some(password.to_owned())
}

/// `GET /.well-known/est/cacerts`.
pub async fn est_cacerts(State(state): State<Arc<AppState>>) -> Response {
    match off_runtime(&state, |b| b.est_cacerts()).await {
        Ok(Ok(der)) => est_answer(&der),
        Ok(Err(e)) => sensor_error(&e),
        Err(res) => res,
    }
}

/// `POST /.well-known/est/simpleenroll`: authenticated by the one-time token.
pub async fn est_simpleenroll(
    State(state): State<Arc<AppState>>,
    req: axum::extract::Request,
) -> Response {
    if state.sensors.get().is_none() {
        return not_running();
    }
    let ip = peer(&req);
    let Some(token) = est_token(req.headers()) else {
        return (
            StatusCode::UNAUTHORIZED,
            [(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"kawal-est\""),
            )],
        )
            .into_response();
    };
    let csr = match est_csr(req).await {
        Ok(c) => c,
        Err((status, why)) => return json_error(status, why),
    };
    let issued = off_runtime(&state, move |b| {
        b.est_enroll(&token, &csr, ip).map(|cert| b.pkcs7(&cert))
    });
    match issued.await {
        Ok(Ok(p7)) => est_answer(&p7),
        Ok(Err(e)) => sensor_error(&e),
        Err(res) => res,
    }
}

/// `POST /.well-known/est/simplereenroll`: authenticated by the sensor's current certificate.
pub async fn est_simplereenroll(
    State(state): State<Arc<AppState>>,
    req: axum::extract::Request,
) -> Response {
    if state.sensors.get().is_none() {
        return not_running();
    }
    let ip = peer(&req);
    let cert = req
        .extensions()
        .get::<ConnInfo>()
        .and_then(|c| c.client_cert_der.clone());
    let Some(cert) = cert else {
        return sensor_error(&SensorError::Refused);
    };
    let csr = match est_csr(req).await {
        Ok(c) => c,
        Err((status, why)) => return json_error(status, why),
    };
    let issued = off_runtime(&state, move |b| {
        b.est_reenroll(&cert, &csr, ip).map(|cert| b.pkcs7(&cert))
    });
    match issued.await {
        Ok(Ok(p7)) => est_answer(&p7),
        Ok(Err(e)) => sensor_error(&e),
        Err(res) => res,
    }
}
