//! Local recovery at the device: `kawal recover unlock <user> --config FILE` clears the
//! lockout of an account (typically the administrator) when no one can log in to clear it
//! through the API.
//!
//! It needs what only someone at the device has: the data folder, the machine the root
//! secret is sealed to and the passphrase, if one is set. It runs beside a running daemon:
//! the lockout tally lives in the store's `login-tally` table, which the daemon reads afresh
//! at every login (no copy is kept in memory), and the store is shared between processes. The
//! per-address penalties the daemon keeps in memory are not touched; they end by themselves
//! (at most `login.source-penalty-max-s`).
//!
//! Every recovery, refused or done, is an event in the audit log (`recovery.unlock`).
use std::path::Path;

use kawal_audit::{Event, Outcome};

use crate::device::{self, Device};
use crate::error::{CliError, Context, Exit, Result};
use crate::{config, output, serve};

/// The actor recorded for local recoveries.
const ACTOR: &str = "local-recovery";

/// Clears `user`'s lockout on the device configured in `config_path`.
pub fn unlock(config_path: &Path, user: &str) -> Result<()> {
    kawal_auth::accounts::validate_name(user)
        .map_err(|e| CliError::new(Exit::DataErr, e.to_string()))?;
    let cfg = config::load(config_path)?;
    let pass = device::read_passphrase(cfg.passphrase_file.as_deref())?;
    let dev = Device::open(&cfg.data_dir, pass.as_ref())?;
    let directory = serve::directory(&dev, &cfg);
    let log = dev.audit_log(device::ANCHOR_EVERY)?;
    let role = directory.get(user).ok().flatten().map(|a| a.role.as_str());
    let result = directory.unlock(user);
    let mut event = Event::new(
        "recovery.unlock",
        ACTOR,
        if result.is_ok() {
            Outcome::Success
        } else {
            Outcome::Denied
        },
    )
    .with("user", user)
    .with("via", "kawal recover unlock");
    if let Some(r) = role {
        event = event.with("role", r);
    }
    match &result {
        Ok(was) => event = event.with("was_locked", *was),
        Err(e) => event = event.with("reason", e.to_string()),
    }
    device::record(&log, event)?;
    log.close().or_exit(Exit::Io, "audit log")?;
    match result {
        Ok(true) => output::line(&format!(
            "{user}: lockout cleared (recorded in the audit log)"
        )),
        Ok(false) => output::line(&format!(
            "{user}: was not locked; failure count cleared (recorded in the audit log)"
        )),
        Err(kawal_auth::accounts::AccountError::NotFound) => {
            return Err(CliError::new(
                Exit::NoInput,
                format!("no account named {user}"),
            ));
        }
        Err(e) => {
            return Err(CliError::new(Exit::DataErr, format!("unlock failed: {e}")));
        }
    }
    Ok(())
}
