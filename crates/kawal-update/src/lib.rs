//! Secure update for kawal (G045 PL-2-1, PL-2-2, PL-2-3).
//!
//! This slice holds the verification core: [`verify`] loads a vendor's TUF repository (root,
//! timestamp, snapshot, targets) through `tough`, starting from the root installed at
//! provisioning, and hands out a verified target plus a reader that enforces the signed length and
//! SHA-256 while streaming. Bundles, A/B slots, trial boot and anti-rollback build on it.
//!
//! No network I/O happens here yet: the only transport is a local folder (`file://`).

#![forbid(unsafe_code)]

pub mod error;
pub mod verify;

pub use error::{Error, Result};
