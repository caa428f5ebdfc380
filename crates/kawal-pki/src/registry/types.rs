//! What the registry hands back: admission refusals, issuances, revocations and the view
//! of a sensor that lists and the console show.
use serde::Serialize;

use super::record::{PastCert, SensorState};
use crate::{ExpiryState, Issued, RevokeReason};

/// Why the registry turns a presented certificate away (the same four reasons as the
/// gateway's `Refusal`, which the daemon maps them to).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SensorRefusal {
    /// No sensor of that UID is enrolled.
    NotEnrolled,
    /// The certificate was revoked (or the sensor is).
    Revoked,
    /// A newer certificate was issued to the sensor; this one no longer counts.
    Superseded,
    /// The sensor's enrolment is not finished, or the registry could not be read (fail
    /// closed).
    Inactive,
}

impl SensorRefusal {
    /// The reason as written in the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotEnrolled => "not-enrolled",
            Self::Revoked => "revoked",
            Self::Superseded => "superseded",
            Self::Inactive => "inactive",
        }
    }
}

/// A certificate issued to a sensor, and what it replaced: for the audit event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issuance {
    /// The sensor.
    pub uid: String,
    /// Its ACL role.
    pub role: String,
    /// The new certificate.
    pub issued: Issued,
    /// The serial of the certificate it superseded (now in the CRL), if there was one.
    pub superseded: Option<String>,
    /// The CRL number after this change.
    pub crl_number: u64,
}

/// What a revocation did: for the audit event and to drop live connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// The sensor.
    pub uid: String,
    /// Serials revoked now (empty if the sensor held no certificate).
    pub serials: Vec<String>,
    /// The reason recorded in the CRL.
    pub reason: RevokeReason,
    /// Whether an outstanding enrolment token was burnt too.
    pub token_burnt: bool,
    /// The CRL number after this change.
    pub crl_number: u64,
}

/// A sensor as `kawal sensor list/show` and the console show it. Holds no secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SensorInfo {
    /// UID (the name given at enrolment).
    pub uid: String,
    /// ACL role.
    pub role: String,
    /// Where it is in its life.
    pub state: SensorState,
    /// Enrolled at, Unix seconds.
    pub created_at: i64,
    /// Last connection recorded, Unix seconds (to within [`SEEN_WRITE_INTERVAL`](crate::SEEN_WRITE_INTERVAL)).
    pub last_seen: Option<i64>,
    /// Revoked at, Unix seconds (state `revoked`).
    pub revoked_at: Option<i64>,
    /// Current certificate's serial.
    pub serial: Option<String>,
    /// Current certificate issued at, Unix seconds.
    pub issued_at: Option<i64>,
    /// Current certificate's start of validity, Unix seconds.
    pub not_before: Option<i64>,
    /// Current certificate's end of validity, Unix seconds.
    pub not_after: Option<i64>,
    /// How close the current certificate is to expiry.
    pub expiry: Option<ExpiryState>,
    /// Current certificate, PEM.
    pub cert_pem: Option<String>,
    /// Whether an enrolment token is outstanding (possibly expired).
    pub token_outstanding: bool,
    /// When the outstanding token stops working, Unix seconds.
    pub token_expires_at: Option<i64>,
    /// Certificates it no longer holds, oldest first (all in the CRL).
    pub previous: Vec<PastCert>,
}
