//! kawal pki: the device's identity, the sensor CA, sensor enrolment, revocation and the
//! sensor registry (G045 AU-1-9, AU-1-10, AU-3-1).
//!
//! - [`IdentityKey`]: an ECDSA P-256 key, generated on the device, whose PKCS#8 bytes are only
//!   handed out for sealing into the store.
//! - [`device_csr_pem`]: a certificate signing request for a factory CA.
//! - [`issue_dev`]: a throw-away development CA and the device certificate it signs, for
//!   provisioning without a factory CA; its name says `NOT FOR PRODUCTION`.
//! - [`cert_facts`] and [`expiry_state`]: what the compliance report shows about a certificate.
//! - [`SensorCa`]: the local CA that signs sensors' CSRs and the CRL; its key sealed in the
//!   store.
//! - [`Sensors`]: the registry: one-time enrolment tokens, EST enrolment and re-enrolment,
//!   revocation, the admission check the MQTT broker asks, the CRL's contents.
//! - [`pkcs7_certs_only`] and [`parse_est_csr`]: the EST (RFC 7030) encodings.
//!
//! No I/O beyond the store; the HTTP routes live in kawal-api, the daemon wires the registry
//! into the gateway.
#![forbid(unsafe_code)]

mod ca;
mod csr;
mod error;
mod est;
mod facts;
mod identity;
mod registry;
mod util;

pub use ca::{
    Crl, DEFAULT_CERT_DAYS, Issued, RevokeReason, RevokedEntry, SensorCa, SensorCert, sensor_urn,
};
pub use csr::CSR_MAX;
pub use error::{Error, Result, TokenRefusal};
pub use est::{parse_est_csr, pkcs7_certs_only};
pub use facts::{CertFacts, ExpiryState, cert_facts, expiry_state};
pub use identity::{DevIssued, IdentityKey, device_csr_pem, issue_dev, reissue_dev};
pub use registry::{
    DEFAULT_ROLE, DEFAULT_TOKEN_TTL, EnrolToken, Issuance, PastCert, Revocation,
    SEEN_WRITE_INTERVAL, SensorInfo, SensorRefusal, SensorState, Sensors, TOKEN_MAX_FAILURES,
    check_role,
};
pub use util::serial_hex;
