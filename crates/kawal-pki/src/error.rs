//! The PKI crate's error type. No variant carries key material or an enrolment token.

/// Errors of the PKI crate. None of them carries key material or a token.
///
/// The categories stay apart (STYLE.md §2): [`Error::Csr`], [`Error::Token`] and
/// [`Error::NotCurrent`] are caused by the peer (a sensor or whoever holds a token);
/// [`Error::InvalidUid`], [`Error::InvalidRole`], [`Error::NotEnrolled`],
/// [`Error::AlreadyEnrolled`] and [`Error::State`] by the operator's request; [`Error::Store`],
/// [`Error::Corrupt`], [`Error::Generate`] and [`Error::Crypto`] are internal.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The bytes are not a PKCS#8 ECDSA P-256 private key.
    #[error("not a PKCS#8 ECDSA P-256 private key: {0}")]
    InvalidKey(String),
    /// A UID that cannot be put in a certificate.
    #[error("UID not usable in a certificate: {reason}")]
    InvalidUid {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Building or signing a certificate or CSR failed.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// The OS random source failed (serial numbers, tokens).
    #[error(transparent)]
    Crypto(#[from] kawal_crypto::Error),
    /// A PEM certificate could not be read.
    #[error("certificate unreadable: {0}")]
    Parse(String),
    /// A certificate signing request was refused (malformed, bad signature, wrong key type,
    /// too large). Caused by whoever sent it.
    #[error("certificate request refused: {reason}")]
    Csr {
        /// Why.
        reason: &'static str,
    },
    /// A role name outside `[a-z0-9-]{1,32}`.
    #[error("role name not acceptable: {reason}")]
    InvalidRole {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An enrolment token was refused. The API answers every reason the same way; the reason
    /// is for the audit log.
    #[error("enrolment token refused: {}", .0.as_str())]
    Token(TokenRefusal),
    /// No sensor of that UID is enrolled.
    #[error("no sensor '{uid}' is enrolled")]
    NotEnrolled {
        /// The UID asked for.
        uid: String,
    },
    /// A sensor of that UID is already enrolled (`renew` gives it a new token).
    #[error("a sensor '{uid}' is already enrolled")]
    AlreadyEnrolled {
        /// The UID asked for.
        uid: String,
    },
    /// The sensor's state does not allow the operation.
    #[error("sensor '{uid}': {reason}")]
    State {
        /// The sensor.
        uid: String,
        /// Why not.
        reason: &'static str,
    },
    /// A re-enrolment with a certificate that is not the sensor's current one.
    #[error("sensor '{uid}': the presented certificate is not current ({})", .refusal.as_str())]
    NotCurrent {
        /// The sensor named by the certificate.
        uid: String,
        /// Why the certificate does not count.
        refusal: crate::SensorRefusal,
    },
    /// The encrypted store failed.
    #[error("store: {0}")]
    Store(#[from] kawal_store::Error),
    /// A record of this crate in the store does not decode (written by another version, or
    /// a bug); it is not silently replaced.
    #[error("stored {what} is unreadable")]
    Corrupt {
        /// Which record.
        what: &'static str,
    },
}

/// Why an enrolment token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenRefusal {
    /// No sensor holds this token (mistyped, already used, replaced or never issued).
    Unknown,
    /// The token's lifetime is over; it has been burnt.
    Expired,
    /// Too many requests with this token failed; it has been burnt.
    Burnt,
}

impl TokenRefusal {
    /// The reason as written in the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown-token",
            Self::Expired => "expired-token",
            Self::Burnt => "token-burnt-after-failures",
        }
    }
}

/// Result of PKI operations.
pub type Result<T> = std::result::Result<T, Error>;
