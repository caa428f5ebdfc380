//! kawal: the CLI, configuration, provisioning, the daemon and the G045 report.
//!
//! - [`cli`]: argument parsing and dispatch; [`output`] is the only module that prints.
//! - [`config`]: the TOML configuration, validated in two stages.
//! - [`device`]: the data folder, unsealing, the store and the audit log of one device.
//! - [`provision`]: `kawal init`; [`reset`]: `kawal reset --secure`.
//! - [`daemon`]: `kawal run` and `kawal demo`; [`serve`]: the HTTPS API inside the daemon;
//!   [`gateway`]: the sensor registry, the MQTT listener, the queue and the upstream bridge;
//!   [`devcert`]: the gateway's own certificate (renewal without restart, expiry warnings,
//!   `kawal cert`).
//! - [`client`]: `kawal login`, `kawal logout` and `kawal user` over the HTTPS API;
//!   [`recover`]: `kawal recover unlock` at the device; [`est`]: a sensor's enrolment.
//! - [`evaluate`]: the evidence read from the device and the verdict of each G045 control.
//! - [`integrity`]: the signed integrity manifest (`kawal integrity`); [`exposure`]: services
//!   and interfaces (`kawal exposure check`); [`watch`]: the daemon's periodic checks of both.
//! - [`forward`]: the audit log forwarded to a remote collector (`kawal log verify --remote`);
//!   [`tamper`]: the tamper response and the lock after it (`kawal tamper status`).
//! - [`update`]: signed updates in the daemon (check, apply, trial, commit, rollback);
//!   [`boot`]: `kawal boot`, the launcher that starts the slot the boot state chooses.
#![forbid(unsafe_code)]

pub mod boot;
pub mod cli;
pub mod client;
pub mod config;
pub mod confinement;
pub mod daemon;
pub mod devcert;
pub mod device;
pub mod error;
pub mod est;
pub mod evaluate;
pub mod exposure;
pub mod forward;
pub mod gateway;
pub mod integrity;
pub mod output;
pub mod provision;
pub mod recover;
pub mod reset;
pub mod serve;
pub mod strength;
pub mod tamper;
pub mod update;
pub mod watch;

pub use error::{CliError, Exit};

/// The product name and version, as reports print it.
pub const PRODUCT: &str = concat!("kawal ", env!("CARGO_PKG_VERSION"));
