//! The one TLS policy of kawal (G045 CR-1-1, DS-1-1, PL-3-2), for every listener and client:
//! the HTTPS API, the sensors' MQTT listener and the upstream bridge.
//!
//! Fixed in code rather than taken from rustls defaults, so that a rustls upgrade cannot widen
//! it silently and the report can list exactly what is offered: TLS 1.3, and TLS 1.2 only with
//! ECDHE key exchange and AEAD ciphers; the aws-lc-rs provider only.
use std::sync::Arc;

use rustls::crypto::aws_lc_rs::{self, cipher_suite, kx_group};
use rustls::crypto::{CryptoProvider, SupportedKxGroup};
use rustls::version::{TLS12, TLS13};
use rustls::{SupportedCipherSuite, SupportedProtocolVersion};

/// The protocol versions offered, most preferred first.
pub static PROTOCOL_VERSIONS: &[&SupportedProtocolVersion] = &[&TLS13, &TLS12];

/// The cipher suites offered, most preferred first. TLS 1.2 only with ECDHE + AEAD: no CBC,
/// no static-RSA key exchange, no SHA-1 MACs.
pub static CIPHER_SUITES: &[SupportedCipherSuite] = &[
    cipher_suite::TLS13_AES_256_GCM_SHA384,
    cipher_suite::TLS13_AES_128_GCM_SHA256,
    cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
    cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    cipher_suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
];

/// The key-exchange groups offered. The post-quantum hybrid comes first; rustls follows the
/// client's order among these, so clients without it still get X25519 without a retry.
pub static KX_GROUPS: &[&dyn SupportedKxGroup] = &[
    kx_group::X25519MLKEM768,
    kx_group::X25519,
    kx_group::SECP256R1,
    kx_group::SECP384R1,
];

/// The aws-lc-rs provider cut down to [`CIPHER_SUITES`] and [`KX_GROUPS`].
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(CryptoProvider {
        cipher_suites: CIPHER_SUITES.to_vec(),
        kx_groups: KX_GROUPS.to_vec(),
        ..aws_lc_rs::default_provider()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// G045: CR-1-1
    /// Every TLS 1.2 suite offered is ECDHE with an AEAD cipher.
    #[test]
    fn tls12_is_ecdhe_and_aead_only() {
        for s in CIPHER_SUITES {
            let name = format!("{:?}", s.suite());
            if name.starts_with("TLS_") && !name.starts_with("TLS13_") {
                assert!(name.starts_with("TLS_ECDHE_"), "{name}");
                assert!(
                    name.contains("_GCM_") || name.contains("CHACHA20"),
                    "{name}"
                );
            }
        }
        assert_eq!(provider().cipher_suites.len(), CIPHER_SUITES.len());
    }
}
