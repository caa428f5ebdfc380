//! The log collector for forwarding tests (`kawal_testkit::rsyslog`: a real rsyslog) and its
//! PKI: its certificate comes from a collector CA made here; the devices it accepts are those
//! whose certificates chain to the CA given at start.
//!
//! rsyslog must be installed (`apt-get install rsyslog rsyslog-gnutls`); without it the tests
//! fail, unless `KAWAL_SKIP_RSYSLOG=1`.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr,
    clippy::disallowed_macros,
    reason = "test helpers"
)]

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};

// Re-exported for the tests that forward logs; the others compile this module too.
#[allow(unused_imports, reason = "not every test binary uses the collector")]
pub use kawal_testkit::rsyslog::{Collector, Tls, missing};

/// The collector's CA (which devices pin) and its server certificate for `localhost`.
pub struct CollectorPki {
    /// The CA certificate, PEM, written to `ca_file`.
    pub ca_file: PathBuf,
    server_cert: String,
    server_key: String,
}

impl CollectorPki {
    /// Makes the CA and the server certificate; writes the CA to `dir/collector-ca.pem`.
    pub fn new(dir: &Path) -> Self {
        let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.distinguished_name
            .push(DnType::CommonName, "kawal test collector CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut leaf =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        leaf.distinguished_name
            .push(DnType::CommonName, "collector");
        leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = leaf.signed_by(&key, &issuer).unwrap();
        std::fs::create_dir_all(dir).unwrap();
        let ca_file = dir.join("collector-ca.pem");
        std::fs::write(&ca_file, ca_cert.pem()).unwrap();
        Self {
            ca_file,
            server_cert: cert.pem(),
            server_key: key.serialize_pem(),
        }
    }
}

impl CollectorPki {
    /// The collector's side of TLS for [`Collector::start`]: this certificate, clients
    /// chaining to `client_ca_pem` and named `peer`.
    pub fn tls<'a>(&'a self, client_ca_pem: &'a str, peer: &'a str) -> Tls<'a> {
        Tls {
            server_cert_pem: &self.server_cert,
            server_key_pem: &self.server_key,
            client_ca_pem,
            peer,
        }
    }
}
