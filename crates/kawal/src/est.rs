//! The sensor's side of enrolment: make a key on the spot, send only its CSR to the gateway's
//! EST `simpleenroll` with the one-time token, and keep the certificate (G045 AU-1-9: the key
//! never leaves the sensor). `kawal sensor est-enroll` and `kawal sim` use it.
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use kawal_pki::IdentityKey;
use reqwest::blocking::Client;
use x509_parser::der_parser::ber::BerObjectContent;
use x509_parser::der_parser::der::parse_der;
use zeroize::Zeroizing;

use crate::error::{CliError, Context, Exit, Result};

/// What a sensor holds after enrolling.
pub struct Enrolled {
    /// Its private key, PEM (PKCS#8).
    pub key_pem: Zeroizing<String>,
    /// Its certificate, PEM.
    pub cert_pem: String,
    /// The sensor CA that issued it, PEM (for brokers and records; the gateway's own server
    /// certificate is verified with the gateway's CA, not this one).
    pub sensor_ca_pem: String,
}

/// PEM of DER bytes under `label`.
pub fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// An HTTPS client that trusts only `ca_pem` (the gateway's API CA).
pub fn client(ca_pem: &str, identity_pem: Option<&[u8]>) -> Result<Client> {
    let certs = reqwest::Certificate::from_pem_bundle(ca_pem.as_bytes())
        .map_err(|_| CliError::new(Exit::DataErr, "the CA file holds no usable certificate"))?;
    let mut b = Client::builder()
        .tls_certs_only(certs)
        .https_only(true)
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none());
    if let Some(id) = identity_pem {
        b = b.identity(
            reqwest::Identity::from_pem(id)
                .map_err(|_| CliError::new(Exit::DataErr, "unusable sensor key or certificate"))?,
        );
    }
    b.build().or_exit(Exit::Failure, "HTTPS client")
}

/// The first certificate of an EST answer (base64 of a PKCS#7 certs-only structure).
pub fn cert_from_est(body: &[u8]) -> Result<Vec<u8>> {
    let compact: Vec<u8> = body
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(&compact)
        .map_err(|_| CliError::new(Exit::DataErr, "EST answer is not base64"))?;
    first_cert(&der).ok_or_else(|| {
        CliError::new(
            Exit::DataErr,
            "EST answer holds no certificate (not PKCS#7 certs-only)",
        )
    })
}

/// ContentInfo { signedData, [0] SignedData { version, digests, content, [0] certificates } }:
/// the DER of the first certificate.
fn first_cert(der: &[u8]) -> Option<Vec<u8>> {
    let (_, info) = parse_der(der).ok()?;
    let BerObjectContent::Sequence(parts) = &info.content else {
        return None;
    };
    let explicit = parts.get(1)?;
    let signed = match &explicit.content {
        BerObjectContent::Unknown(any) => parse_der(any.data).ok()?.1,
        BerObjectContent::Tagged(_, _, inner) => (**inner).clone(),
        _ => return None,
    };
    let BerObjectContent::Sequence(fields) = &signed.content else {
        return None;
    };
    // version, digestAlgorithms, encapContentInfo, then [0] IMPLICIT certificates.
    let certs = fields.get(3)?;
    let raw = match &certs.content {
        BerObjectContent::Unknown(any) => any.data,
        _ => return None,
    };
    // The first certificate: one TLV inside the implicit SET.
    let (rest, _) = parse_der(raw).ok()?;
    let len = raw.len() - rest.len();
    Some(raw[..len].to_vec())
}

/// Sends a CSR to an EST endpoint; the certificate (DER) back, checked to name `name`.
fn post_csr(
    http: &Client,
    url: &str,
    path: &str,
    token: Option<&str>,
    csr_der: &[u8],
    name: &str,
) -> Result<Vec<u8>> {
    let cert = post_est(http, url, path, token, csr_der)?;
    // The token decides whose certificate it is: one issued for another name means the
    // token was another sensor's, and this device must not pose as that sensor.
    let issued_for = kawal_gateway::server::identity_from_cert(&cert)
        .map(|id| id.uid)
        .map_err(|_| CliError::new(Exit::DataErr, "the gateway's certificate names no sensor"))?;
    if issued_for != name {
        return Err(CliError::new(
            Exit::DataErr,
            format!(
                "the certificate was issued for '{issued_for}', not '{name}': that token belongs to another sensor (nothing written)"
            ),
        ));
    }
    Ok(cert)
}

/// Sends a CSR to `url` + `path` (an EST enrolment endpoint); the first certificate of the
/// answer (DER). A refusal's text is cut short and stripped of control characters.
pub fn post_est(
    http: &Client,
    url: &str,
    path: &str,
    token: Option<&str>,
    csr_der: &[u8],
) -> Result<Vec<u8>> {
    let mut req = http
        .post(format!("{url}{path}"))
        .header(reqwest::header::CONTENT_TYPE, "application/pkcs10")
        .body(base64::engine::general_purpose::STANDARD.encode(csr_der));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req
        .send()
        .map_err(|e| CliError::new(Exit::Failure, format!("cannot reach {url}: {e}")))?;
    let status = res.status();
    let body = res.bytes().or_exit(Exit::Failure, "EST answer")?;
    if !status.is_success() {
        return Err(CliError::new(
            if status.as_u16() == 401 {
                Exit::NoPerm
            } else {
                Exit::Failure
            },
            format!(
                "enrolment refused by {url} ({}): {}",
                status.as_u16(),
                String::from_utf8_lossy(&body[..body.len().min(200)])
                    .chars()
                    .filter(|c| !c.is_control())
                    .collect::<String>()
            ),
        ));
    }
    cert_from_est(&body)
}

fn sensor_ca(http: &Client, url: &str) -> String {
    http.get(format!("{url}/api/v1/sensors/ca"))
        .send()
        .and_then(reqwest::blocking::Response::text)
        .unwrap_or_default()
}

/// Enrols `name` at the gateway's API `url` with `token`: a fresh P-256 key, its CSR to EST
/// `simpleenroll`, the certificate back.
pub fn enroll(url: &str, api_ca_pem: &str, name: &str, token: &str) -> Result<Enrolled> {
    let key = IdentityKey::generate().or_exit(Exit::Failure, "key generation")?;
    let csr_der = pem_body(&kawal_pki::device_csr_pem(&key, name).or_exit(Exit::DataErr, "CSR")?)?;
    let http = client(api_ca_pem, None)?;
    let cert = post_csr(
        &http,
        url,
        "/.well-known/est/simpleenroll",
        Some(token),
        &csr_der,
        name,
    )?;
    Ok(Enrolled {
        key_pem: Zeroizing::new(pem("PRIVATE KEY", key.pkcs8_der())),
        cert_pem: pem("CERTIFICATE", &cert),
        sensor_ca_pem: sensor_ca(&http, url),
    })
}

/// Re-enrols with the current certificate and key (EST `simplereenroll`, authenticated by
/// them in TLS) and a new key: the new certificate supersedes the old one at once.
pub fn reenroll(
    url: &str,
    api_ca_pem: &str,
    name: &str,
    key_pem: &str,
    cert_pem: &str,
) -> Result<Enrolled> {
    let identity = Zeroizing::new(format!("{cert_pem}{key_pem}"));
    let http = client(api_ca_pem, Some(identity.as_bytes()))?;
    let key = IdentityKey::generate().or_exit(Exit::Failure, "key generation")?;
    let csr_der = pem_body(&kawal_pki::device_csr_pem(&key, name).or_exit(Exit::DataErr, "CSR")?)?;
    let cert = post_csr(
        &http,
        url,
        "/.well-known/est/simplereenroll",
        None,
        &csr_der,
        name,
    )?;
    Ok(Enrolled {
        key_pem: Zeroizing::new(pem("PRIVATE KEY", key.pkcs8_der())),
        cert_pem: pem("CERTIFICATE", &cert),
        sensor_ca_pem: sensor_ca(&http, url),
    })
}

/// The DER inside a PEM text (the body lines, base64-decoded).
pub fn pem_body(pem_text: &str) -> Result<Vec<u8>> {
    let body: String = pem_text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body.as_bytes())
        .map_err(|_| CliError::new(Exit::Failure, "CSR encoding"))
}

/// Writes what a sensor needs into `dir`: `sensor.key.pem` (0600), `sensor.crt.pem`,
/// `sensor-ca.crt.pem`.
pub fn write(dir: &Path, e: &Enrolled) -> Result<()> {
    std::fs::create_dir_all(dir).or_exit(Exit::Io, "output folder")?;
    crate::device::write_atomic(&dir.join("sensor.key.pem"), e.key_pem.as_bytes(), 0o600)?;
    crate::device::write_atomic(&dir.join("sensor.crt.pem"), e.cert_pem.as_bytes(), 0o644)?;
    crate::device::write_atomic(
        &dir.join("sensor-ca.crt.pem"),
        e.sensor_ca_pem.as_bytes(),
        0o644,
    )?;
    Ok(())
}
