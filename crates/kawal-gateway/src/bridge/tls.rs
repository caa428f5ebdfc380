//! The bridge's TLS material: the gateway's client identity and the rustls client
//! configuration (pinned roots, the policy in the parent module's docs), built at start and
//! again when the device certificate is renewed; and how a failed handshake is reported.

use std::fmt;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ClientConfig, RootCertStore};
use zeroize::Zeroizing;

use super::{BridgeSettings, Error, Failure, Kind};

/// The gateway's TLS client identity towards the upstream.
pub struct ClientIdentity {
    /// One or more PEM `CERTIFICATE` blocks, the gateway's device certificate first.
    pub cert_chain_pem: String,
    /// The device certificate's private key, PKCS#8 DER; wiped on drop, never printed.
    pub key_pkcs8_der: Zeroizing<Vec<u8>>,
}

impl ClientIdentity {
    /// No certificate and no key: what the settings keep once the key is in the config.
    pub(super) fn empty() -> Self {
        Self {
            cert_chain_pem: String::new(),
            key_pkcs8_der: Zeroizing::default(),
        }
    }
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("cert_chain_pem_bytes", &self.cert_chain_pem.len())
            .field("key_pkcs8_der", &"[REDACTED]")
            .finish()
    }
}

/// The rustls client configuration: pinned roots, the gateway's certificate, the policy
/// above.
///
/// # Errors
/// [`Error::Roots`], [`Error::ClientCert`] or [`Error::Tls`] for unusable material.
pub fn client_config(settings: &BridgeSettings) -> Result<Arc<ClientConfig>, Error> {
    build(&settings.ca_roots_pem, &settings.identity).map(|(config, _)| config)
}

/// The client configuration for `identity` under the pinned `roots_pem`, with the SHA-256
/// (hex) of the identity's leaf certificate DER.
///
/// Each call gives a new configuration and so an empty resumption cache: a session resumed
/// under the old identity would let the upstream keep seeing the old certificate.
pub(super) fn build(
    roots_pem: &str,
    identity: &ClientIdentity,
) -> Result<(Arc<ClientConfig>, String), Error> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(roots_pem.as_bytes()) {
        let cert = cert.map_err(|e| Error::Roots(e.to_string()))?;
        roots.add(cert).map_err(|e| Error::Roots(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(Error::Roots("no certificate found".into()));
    }
    let chain = CertificateDer::pem_slice_iter(identity.cert_chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::ClientCert(e.to_string()))?;
    let Some(leaf) = chain.first() else {
        return Err(Error::ClientCert("no certificate found".into()));
    };
    let leaf_sha256 = hex::encode(kawal_crypto::sha256(leaf));
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(identity.key_pkcs8_der.to_vec()));
    // rustls checks that the key belongs to the leaf (`InconsistentKeys`), so a renewed
    // certificate paired with the wrong key is refused here, not at the next handshake.
    let mut config = ClientConfig::builder_with_provider(kawal_crypto::tls::provider())
        .with_protocol_versions(kawal_crypto::tls::PROTOCOL_VERSIONS)
        .map_err(Error::Tls)?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(Error::Tls)?;
    config.require_ems = true;
    Ok((Arc::new(config), leaf_sha256))
}

/// Sorts a failed handshake: a refused upstream certificate is a possible impostor.
pub(super) fn classify_tls(e: &std::io::Error) -> Failure {
    let inner = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
    match inner {
        Some(
            err @ (rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented),
        ) => Failure::new(
            Kind::Refused,
            format!("upstream certificate refused: {err}"),
        ),
        Some(err @ rustls::Error::AlertReceived(_)) => Failure::new(
            Kind::Rejected,
            format!("upstream ended the TLS handshake: {err}"),
        ),
        Some(err) => Failure::new(Kind::Rejected, format!("TLS handshake failed: {err}")),
        None => Failure::new(Kind::Unreachable, format!("TLS handshake failed: {e}")),
    }
}
