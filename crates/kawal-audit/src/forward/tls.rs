//! The forwarder's TLS client configuration: kawal's one TLS policy
//! ([`kawal_crypto::tls`]), the collector verified against the pinned CA only, and the
//! device's client certificate.

use std::fmt;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use zeroize::Zeroizing;

use super::ForwardError;

/// The device's TLS client identity towards the collector.
pub struct ClientIdentity {
    /// One or more PEM `CERTIFICATE` blocks, the device's certificate first.
    pub cert_chain_pem: String,
    /// The certificate's private key as PEM (PKCS#8, SEC1 or PKCS#1); wiped on drop, never
    /// printed.
    pub key_pem: Zeroizing<String>,
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("cert_chain_pem_bytes", &self.cert_chain_pem.len())
            .field("key_pem", &"[REDACTED]")
            .finish()
    }
}

/// The client configuration: TLS 1.3/1.2 per kawal's policy, the roots in `ca_pem` only (no
/// system roots), `identity` as client certificate, extended master secret required for
/// TLS 1.2. Session resumption uses rustls's in-memory cache, so the reconnection after
/// each confirmation (see the module docs) is an abbreviated handshake where the collector
/// supports it.
///
/// # Errors
/// [`ForwardError::Config`] for unusable PEM; errors about the key never quote it.
pub(crate) fn client_config(
    ca_pem: &str,
    identity: &ClientIdentity,
) -> Result<Arc<ClientConfig>, ForwardError> {
    let cfg = |field: &'static str, reason: String| ForwardError::Config { field, reason };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| cfg("ca", format!("bad PEM: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| cfg("ca", format!("unusable certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(cfg("ca", "no certificate found".into()));
    }
    let chain = CertificateDer::pem_slice_iter(identity.cert_chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cfg("client-cert", format!("bad PEM: {e}")))?;
    if chain.is_empty() {
        return Err(cfg("client-cert", "no certificate found".into()));
    }
    // The PEM parser's errors can quote a line of the input: say only that it failed.
    let key = PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes())
        .map_err(|_| cfg("client-key", "no usable private key in the PEM".into()))?;
    // rustls checks that the key belongs to the certificate.
    let mut config = ClientConfig::builder_with_provider(kawal_crypto::tls::provider())
        .with_protocol_versions(kawal_crypto::tls::PROTOCOL_VERSIONS)
        .map_err(|e| cfg("tls", e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| cfg("client-key", format!("does not fit the certificate: {e}")))?;
    config.require_ems = true;
    Ok(Arc::new(config))
}

/// The name the collector's certificate must carry (a DNS name or an IP address).
///
/// # Errors
/// [`ForwardError::Config`] if it is neither.
pub(crate) fn server_name(name: &str) -> Result<ServerName<'static>, ForwardError> {
    ServerName::try_from(name.to_owned()).map_err(|_| ForwardError::Config {
        field: "server-name",
        reason: format!("{name:?} is not a DNS name or IP address"),
    })
}
