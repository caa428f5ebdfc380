//! The rustls server configuration for the management interface (G045 PL-3-2).
//!
//! The policy is fixed in code rather than taken from rustls defaults, so that a rustls upgrade
//! cannot widen it silently and the compliance report can list exactly what is offered:
//! TLS 1.3, and TLS 1.2 only with ECDHE key exchange, AEAD ciphers and the extended master
//! secret; the aws-lc-rs provider only; ALPN `http/1.1` only.
//!
//! The configuration in force is held by a [`TlsHandle`], so the daemon can swap in a renewed
//! device certificate without a restart (G045 AU-1-10): each new connection takes the
//! configuration current at its accept; live connections keep the one they started with.

use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use kawal_crypto::tls::{CIPHER_SUITES, KX_GROUPS, PROTOCOL_VERSIONS, provider};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::{RootCertStore, ServerConfig};
use zeroize::Zeroizing;

/// The device's TLS identity: certificate chain (PEM, leaf first) and PKCS#8 private key (DER).
pub struct TlsIdentity {
    /// One or more PEM `CERTIFICATE` blocks, the device's leaf certificate first.
    pub cert_chain_pem: String,
    /// The leaf certificate's private key as PKCS#8 DER; wiped from memory on drop.
    pub key_pkcs8_der: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for TlsIdentity {
    // The key never reaches a log line, even by accident.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("cert_chain_pem_bytes", &self.cert_chain_pem.len())
            .field("key_pkcs8_der", &"[REDACTED]")
            .finish()
    }
}

/// Optional client-certificate authentication (for automation, G045 PL-3-2): client certs that
/// chain to these roots are verified; clients without a certificate are still accepted (they
/// authenticate with a password session instead).
#[derive(Clone, Debug)]
pub struct ClientAuth {
    /// One or more PEM `CERTIFICATE` blocks: the CAs trusted to issue client certificates.
    pub roots_pem: String,
}

/// Why a TLS server configuration could not be built. All of these are operator or provisioning
/// errors; none is caused by a peer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The identity's certificate chain is not valid PEM.
    #[error("device certificate chain: bad PEM: {0}")]
    CertChainPem(#[source] rustls::pki_types::pem::Error),
    /// The identity's certificate chain holds no `CERTIFICATE` block.
    #[error("device certificate chain: no certificate found")]
    NoCertificate,
    /// rustls refused the certificate and key pair (unsupported key type, or the key does not
    /// belong to the leaf certificate). The key bytes are not part of the error.
    #[error("device certificate and key rejected: {0}")]
    Identity(#[source] rustls::Error),
    /// The client-authentication roots are not valid PEM.
    #[error("client-auth roots: bad PEM: {0}")]
    ClientRootsPem(#[source] rustls::pki_types::pem::Error),
    /// A client-authentication root is not a usable trust anchor.
    #[error("client-auth roots: certificate {index} is not a usable trust anchor: {source}")]
    ClientRoot {
        /// Position of the offending certificate in `roots_pem`, from 0.
        index: usize,
        /// What was wrong with it.
        #[source]
        source: rustls::Error,
    },
    /// The client-authentication roots hold no `CERTIFICATE` block.
    #[error("client-auth roots: no certificate found")]
    NoClientRoots,
    /// The client-certificate verifier could not be built from the roots.
    #[error("client-auth verifier: {0}")]
    ClientVerifier(#[source] rustls::server::VerifierBuilderError),
    /// The protocol policy was rejected by rustls (a bug in this module, not in the input).
    #[error("TLS policy rejected by rustls: {0}")]
    Policy(#[source] rustls::Error),
}

/// The only application protocol spoken: the server is HTTP/1.1 only.
const ALPN_HTTP11: &[u8] = b"http/1.1";

/// Builds the server configuration for `id`, optionally verifying client certificates.
///
/// # Errors
/// [`TlsError`] if the identity or the client-auth roots cannot be parsed, or the key does not
/// match the leaf certificate.
pub fn server_config(
    id: &TlsIdentity,
    client_auth: Option<&ClientAuth>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = CertificateDer::pem_slice_iter(id.cert_chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(TlsError::CertChainPem)?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    // rustls needs an owned key; it wipes this copy once loaded (`Zeroizing` in load_private_key).
    let key =
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(id.key_pkcs8_der.as_slice())).clone_key();

    let provider = provider();
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(PROTOCOL_VERSIONS)
        .map_err(TlsError::Policy)?;
    let builder = match client_auth {
        None => builder.with_no_client_auth(),
        Some(auth) => builder.with_client_cert_verifier(client_verifier(auth, provider)?),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(TlsError::Identity)?;
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    // Our suite order is the security order; do not let a client pick a weaker suite first.
    config.ignore_client_order = true;
    // TLS 1.2 without the extended master secret (RFC 7627) is open to triple-handshake attacks.
    config.require_ems = true;
    Ok(Arc::new(config))
}

/// Verifies client certificates against `auth`'s roots, and lets clients without one through.
fn client_verifier(
    auth: &ClientAuth,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let mut roots = RootCertStore::empty();
    for (index, cert) in CertificateDer::pem_slice_iter(auth.roots_pem.as_bytes()).enumerate() {
        let cert = cert.map_err(TlsError::ClientRootsPem)?;
        roots
            .add(cert)
            .map_err(|source| TlsError::ClientRoot { index, source })?;
    }
    if roots.is_empty() {
        return Err(TlsError::NoClientRoots);
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        // Without a certificate the client still has to log in with a password session.
        .allow_unauthenticated()
        .build()
        .map_err(TlsError::ClientVerifier)
}

/// The server configuration in force, replaceable while the server runs.
///
/// Cloning gives another handle on the same configuration. The server reads it once per
/// accepted connection, so [`TlsHandle::replace`] affects only connections accepted after it.
#[derive(Clone)]
pub struct TlsHandle(Arc<RwLock<Arc<ServerConfig>>>);

impl TlsHandle {
    /// A handle holding `config`.
    #[must_use]
    pub fn new(config: Arc<ServerConfig>) -> Self {
        Self(Arc::new(RwLock::new(config)))
    }

    /// The configuration in force now.
    #[must_use]
    pub fn current(&self) -> Arc<ServerConfig> {
        // A poisoned lock still holds a whole `Arc`: the writer cannot leave it half-written.
        Arc::clone(&self.0.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Puts `config` in force for every connection accepted from now on.
    pub fn replace(&self, config: Arc<ServerConfig>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = config;
    }
}

impl From<Arc<ServerConfig>> for TlsHandle {
    fn from(config: Arc<ServerConfig>) -> Self {
        Self::new(config)
    }
}

impl fmt::Debug for TlsHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsHandle(..)")
    }
}

/// The TLS policy as names, for the compliance report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Protocol versions, most preferred first (e.g. `TLSv1_3`).
    pub protocol_versions: Vec<String>,
    /// Cipher suites, most preferred first (IANA names, e.g. `TLS13_AES_256_GCM_SHA384`).
    pub cipher_suites: Vec<String>,
    /// Key-exchange groups (e.g. `X25519`).
    pub kx_groups: Vec<String>,
    /// ALPN protocols offered.
    pub alpn: Vec<String>,
}

/// Describes the policy that [`server_config`] enforces.
#[must_use]
pub fn describe() -> Policy {
    Policy {
        protocol_versions: PROTOCOL_VERSIONS
            .iter()
            .map(|v| format!("{:?}", v.version))
            .collect(),
        cipher_suites: CIPHER_SUITES
            .iter()
            .map(|s| format!("{:?}", s.suite()))
            .collect(),
        kx_groups: KX_GROUPS
            .iter()
            .map(|g| format!("{:?}", g.name()))
            .collect(),
        alpn: vec![String::from_utf8_lossy(ALPN_HTTP11).into_owned()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_lists_only_modern_suites() {
        let policy = describe();
        assert_eq!(policy.protocol_versions, ["TLSv1_3", "TLSv1_2"]);
        for suite in &policy.cipher_suites {
            let modern_tls12 = suite.starts_with("TLS_ECDHE_")
                && (suite.contains("_GCM_") || suite.contains("CHACHA20_POLY1305"));
            assert!(suite.starts_with("TLS13_") || modern_tls12, "{suite}");
        }
        assert!(policy.kx_groups.contains(&"X25519".to_owned()));
        assert_eq!(policy.alpn, ["http/1.1"]);
    }

    #[test]
    fn identity_debug_hides_the_key() {
        let id = TlsIdentity {
            cert_chain_pem: String::new(),
            key_pkcs8_der: Zeroizing::new(vec![0xAB; 32]),
        };
        let shown = format!("{id:?}");
        assert!(shown.contains("REDACTED"));
        assert!(!shown.contains("171"), "key bytes in {shown}");
    }

    #[test]
    fn empty_chain_is_refused() {
        let id = TlsIdentity {
            cert_chain_pem: String::new(),
            key_pkcs8_der: Zeroizing::new(Vec::new()),
        };
        assert!(matches!(
            server_config(&id, None),
            Err(TlsError::NoCertificate)
        ));
    }

    #[test]
    fn empty_client_roots_are_refused() {
        let auth = ClientAuth {
            roots_pem: String::new(),
        };
        assert!(matches!(
            client_verifier(&auth, provider()),
            Err(TlsError::NoClientRoots)
        ));
    }
}
