//! Secure update for kawal (G045 PL-2-1, PL-2-2, PL-2-3).
//!
//! - [`verify`]: a vendor's TUF repository (root, timestamp, snapshot, targets) through `tough`,
//!   from the root installed at provisioning; a reader that enforces a target's signed length
//!   and SHA-256 while streaming. [`transport`]: HTTPS with pinned roots and time-outs;
//!   [`local`]: a folder, read in large chunks.
//! - [`bundle`]: the bundle format (a tar archive with a manifest), its streaming unpacker
//!   that refuses anything unsafe, and the vendor's builder.
//! - [`slots`]: A/B slots, the boot state, trial boot and automatic rollback.
//! - [`install`]: the flow that ties them together: check, then apply into the inactive slot
//!   and switch to it on trial.
//! - [`repo`]: the vendor's repository tooling (keys, targets, signing, publishing).

#![forbid(unsafe_code)]

pub mod bundle;
pub mod error;
pub mod install;
pub mod local;
pub mod repo;
pub mod slots;
pub mod transport;
pub mod verify;

pub use error::{Error, Result};
