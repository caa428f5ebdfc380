//! What the compliance report and the console show about a certificate: its facts and how
//! close it is to expiry.
use crate::util::rfc3339;
use crate::{Error, Result};

/// Facts about a PEM certificate for the report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CertFacts {
    /// Subject common name (empty if none).
    pub subject_cn: String,
    /// Issuer common name (empty if none).
    pub issuer_cn: String,
    /// Start of validity, RFC 3339 UTC (`YYYY-MM-DDTHH:MM:SSZ`).
    pub not_before: String,
    /// End of validity, RFC 3339 UTC.
    pub not_after: String,
    /// Whether a dev CA issued it (issuer CN contains `DEV CA`).
    pub is_dev: bool,
    /// SHA-256 of the DER, lowercase hex.
    pub fingerprint_sha256: String,
}

/// Reads the facts of the first certificate in `pem`.
pub fn cert_facts(pem: &str) -> Result<CertFacts> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| Error::Parse(format!("PEM: {e}")))?;
    if block.label != "CERTIFICATE" {
        return Err(Error::Parse(format!(
            "PEM block is {:?}, not CERTIFICATE",
            block.label
        )));
    }
    let cert = block
        .parse_x509()
        .map_err(|e| Error::Parse(format!("X.509: {e}")))?;
    let cn = |n: &x509_parser::x509::X509Name<'_>| {
        n.iter_common_name()
            .next()
            .and_then(|a| a.as_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let issuer_cn = cn(cert.issuer());
    Ok(CertFacts {
        subject_cn: cn(cert.subject()),
        is_dev: issuer_cn.contains("DEV CA"),
        issuer_cn,
        not_before: rfc3339(cert.validity().not_before.to_datetime()),
        not_after: rfc3339(cert.validity().not_after.to_datetime()),
        fingerprint_sha256: hex::encode(kawal_crypto::sha256(&block.contents)),
    })
}

/// How close a certificate is to the end of its validity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExpiryState {
    /// More than 30 days left.
    Ok,
    /// 30 days or less left (more than 7).
    Warn30,
    /// 7 days or less left.
    Warn7,
    /// Past its not-after time.
    Expired,
}

impl ExpiryState {
    /// The state as shown in reports and the console.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Warn30 => "warn-30d",
            Self::Warn7 => "warn-7d",
            Self::Expired => "expired",
        }
    }
}

/// The expiry state of a certificate ending at `not_after` (Unix seconds) at `now`.
/// The boundaries: at exactly `not_after` it is `Expired`; exactly 7 days before, `Warn7`;
/// exactly 30 days before, `Warn30`.
pub fn expiry_state(not_after: i64, now: i64) -> ExpiryState {
    const DAY: i64 = 86_400;
    let left = not_after.saturating_sub(now);
    if left <= 0 {
        ExpiryState::Expired
    } else if left <= 7 * DAY {
        ExpiryState::Warn7
    } else if left <= 30 * DAY {
        ExpiryState::Warn30
    } else {
        ExpiryState::Ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_boundaries() {
        let day = 86_400;
        let now = 1_000_000_000;
        assert_eq!(expiry_state(now + 31 * day, now), ExpiryState::Ok);
        assert_eq!(expiry_state(now + 30 * day + 1, now), ExpiryState::Ok);
        assert_eq!(expiry_state(now + 30 * day, now), ExpiryState::Warn30);
        assert_eq!(expiry_state(now + 8 * day, now), ExpiryState::Warn30);
        assert_eq!(expiry_state(now + 7 * day, now), ExpiryState::Warn7);
        assert_eq!(expiry_state(now + 1, now), ExpiryState::Warn7);
        assert_eq!(expiry_state(now, now), ExpiryState::Expired);
        assert_eq!(expiry_state(now - day, now), ExpiryState::Expired);
        assert_eq!(expiry_state(i64::MIN, i64::MAX), ExpiryState::Expired);
        assert_eq!(ExpiryState::Warn7.as_str(), "warn-7d");
    }
}
