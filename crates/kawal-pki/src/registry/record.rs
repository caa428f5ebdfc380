//! The sensor record as stored: one JSON document per sensor in the `sensors` table, sealed by
//! the store. Fields are added with `#[serde(default)]`; none is ever renamed.
use serde::{Deserialize, Serialize};

use crate::RevokeReason;

/// Where a sensor is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SensorState {
    /// Enrolled, no certificate issued yet (a token may be outstanding).
    Pending,
    /// Holds a current, unrevoked certificate.
    Active,
    /// Revoked by an operator; a new token (`renew`) or a signed CSR brings it back.
    Revoked,
}

impl SensorState {
    /// The state as shown in lists and the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Active => "active",
            Self::Revoked => "revoked",
        }
    }
}

/// An outstanding one-time enrolment token: only its hash is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TokenRecord {
    /// SHA-256 (domain-separated) of the token's 32 bytes, hex.
    pub(crate) hash: String,
    /// When it was issued, Unix seconds.
    pub(crate) issued_at: i64,
    /// From when it is refused, Unix seconds.
    pub(crate) expires_at: i64,
    /// Requests with this token that failed (bad CSR); it is burnt at the limit.
    pub(crate) failures: u32,
}

/// The sensor's current certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CurrentCert {
    pub(crate) serial: String,
    pub(crate) issued_at: i64,
    pub(crate) not_before: i64,
    pub(crate) not_after: i64,
    /// SHA-256 of the SubjectPublicKeyInfo, hex.
    pub(crate) key_sha256: String,
    pub(crate) cert_pem: String,
    /// Issued by a configured external CA and imported, not by the gateway's sensor CA.
    #[serde(default)]
    pub(crate) external: bool,
}

/// A certificate the sensor no longer holds: revoked or superseded, listed in the CRL forever.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PastCert {
    /// Its serial as text.
    pub serial: String,
    /// When it was issued, Unix seconds.
    pub issued_at: i64,
    /// Its end of validity, Unix seconds.
    pub not_after: i64,
    /// When it stopped counting, Unix seconds.
    pub revoked_at: i64,
    /// Why.
    pub reason: RevokeReason,
    /// SHA-256 of its SubjectPublicKeyInfo, hex (a revoked key is never certified again).
    pub key_sha256: String,
    /// Issued by an external CA: refused by the registry, but not in the gateway's CRL (its
    /// CA is another).
    #[serde(default)]
    pub external: bool,
}

/// One sensor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SensorRecord {
    /// Format version of this record.
    pub(crate) v: u32,
    pub(crate) uid: String,
    pub(crate) role: String,
    pub(crate) state: SensorState,
    pub(crate) created_at: i64,
    #[serde(default)]
    pub(crate) last_seen: Option<i64>,
    #[serde(default)]
    pub(crate) revoked_at: Option<i64>,
    #[serde(default)]
    pub(crate) token: Option<TokenRecord>,
    #[serde(default)]
    pub(crate) current: Option<CurrentCert>,
    #[serde(default)]
    pub(crate) history: Vec<PastCert>,
}

pub(crate) const RECORD_VERSION: u32 = 1;

impl SensorRecord {
    pub(crate) fn new(uid: &str, role: &str, now: i64) -> Self {
        Self {
            v: RECORD_VERSION,
            uid: uid.to_owned(),
            role: role.to_owned(),
            state: SensorState::Pending,
            created_at: now,
            last_seen: None,
            revoked_at: None,
            token: None,
            current: None,
            history: Vec::new(),
        }
    }

    /// Moves the current certificate (if any) into the history; its serial if there was one.
    pub(crate) fn retire_current(&mut self, reason: RevokeReason, now: i64) -> Option<String> {
        let cur = self.current.take()?;
        self.history.push(PastCert {
            serial: cur.serial.clone(),
            issued_at: cur.issued_at,
            not_after: cur.not_after,
            revoked_at: now,
            reason,
            key_sha256: cur.key_sha256,
            external: cur.external,
        });
        Some(cur.serial)
    }

    /// Whether `key_sha256` belonged to a certificate revoked for any reason but supersession.
    pub(crate) fn key_was_revoked(&self, key_sha256: &str) -> bool {
        self.history
            .iter()
            .any(|p| p.reason != RevokeReason::Superseded && p.key_sha256 == key_sha256)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_and_tolerates_missing_optional_fields() {
        let mut r = SensorRecord::new("s1", "sensor", 10);
        r.current = Some(CurrentCert {
            serial: "abc".into(),
            issued_at: 10,
            not_before: 9,
            not_after: 100,
            key_sha256: "k1".into(),
            cert_pem: "pem".into(),
            external: false,
        });
        assert_eq!(
            r.retire_current(RevokeReason::KeyCompromise, 20),
            Some("abc".into())
        );
        assert!(r.key_was_revoked("k1"));
        let json = serde_json::to_vec(&r).unwrap_or_default();
        let back: SensorRecord = serde_json::from_slice(&json).unwrap_or_else(|_| r.clone());
        assert_eq!(back, r);
        let minimal = br#"{"v":1,"uid":"a","role":"sensor","state":"pending","created_at":1}"#;
        assert!(serde_json::from_slice::<SensorRecord>(minimal).is_ok());
    }
}
