//! The crate's one error type. No variant carries key material.
use std::fmt;

/// Errors from kawal-crypto. `Display` never includes secret bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The OS random source failed or failed its health test.
    #[error("random number generator failure: {0}")]
    Rng(&'static str),
    /// A sealed blob is malformed: wrong magic, version or length.
    #[error("sealed blob is malformed: {0}")]
    Malformed(&'static str),
    /// Authentication of sealed data failed: wrong key, wrong context or tampered bytes.
    #[error("sealed data failed authentication (wrong key, wrong context or modified)")]
    Unseal,
    /// A signature did not verify.
    #[error("signature did not verify")]
    BadSignature,
    /// A password hash record could not be parsed or its parameters are out of bounds.
    #[error("password hash record is invalid: {0}")]
    PasswordRecord(&'static str),
    /// A primitive failed where it cannot fail with valid inputs (a bug or a broken library).
    #[error("cryptographic primitive failed: {0}")]
    Primitive(&'static str),
    /// A known-answer test failed.
    #[error("known-answer test failed: {0}")]
    Kat(KatFailure),
}

/// Which known-answer test failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KatFailure(pub &'static str);

impl fmt::Display for KatFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// Result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl From<aws_lc_rs::error::Unspecified> for Error {
    fn from(_: aws_lc_rs::error::Unspecified) -> Self {
        Error::Primitive("aws-lc-rs")
    }
}
