//! Cryptography for kawal, on one library: aws-lc-rs (plus Argon2id for passwords).
//!
//! - [`root`]: the device's 256-bit root secret, sealed under a key-encryption key.
//! - [`keys`]: purpose keys derived from the root with HKDF; each purpose is its own type.
//! - [`secret`]: zeroizing containers that never print their bytes.
//! - [`password`]: Argon2id hashing and the one-time admin password generator.
//! - [`rng`]: the OS CSPRNG and its health tests (SP 800-90B style).
//! - [`kat`]: known-answer tests for every primitive kawal uses (power-up self-test).
//!
//! Nothing here does I/O: callers read and write the sealed blobs.
#![forbid(unsafe_code)]

pub mod kat;
pub mod keys;
pub mod password;
pub mod rng;
pub mod root;
pub mod secret;
pub mod sign;
pub mod tls;

mod error;

pub use error::{Error, Result};

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Constant-time equality for secrets and MACs.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a, b).is_ok()
}
