//! `kawal update check|apply|status|rollback|history`: the updater's commands, as clients of the
//! API (G045 PL-2-1: only `updater` and `admin`; apply and rollback ask the password again
//! right before, and send the single-use proof).
use std::path::Path;

use reqwest::Method;
use serde_json::Value;

use super::{Api, Passwords, clean};
use crate::error::Result;
use crate::output;

/// A `kawal update` action on the device.
#[derive(Debug, Clone, Copy, clap::Subcommand)]
pub enum UpdateAction {
    /// Fetch and verify the repository's signed metadata; say whether a newer bundle for this
    /// device is offered (nothing is downloaded or installed).
    Check,
    /// Verify, download and install the offered bundle into the inactive slot; the device
    /// restarts into it on trial and keeps it only if it proves healthy. Asks your password.
    Apply,
    /// The installed version, the slots and a trial in progress.
    Status,
    /// Go back to the previous slot. Asks your password.
    Rollback,
    /// Every update step recorded: check, install, trial, commit, rollback, refusal.
    History,
}

/// Runs a `kawal update` action over the session in `file`.
pub fn update(action: UpdateAction, pw: &Passwords, file: &Path) -> Result<()> {
    let mut api = Api::open(file)?;
    let me = api.session.user.clone();
    let sensitive = |api: &mut Api, path: &str| -> Result<Value> {
        let mine = pw.read(&format!("Your password ({me}) to confirm: "))?;
        let proof = api.reauth(&mine)?;
        api.call(Method::POST, path, None, Some(&proof))
    };
    match action {
        UpdateAction::Check => {
            let v = api.call(Method::POST, "/api/v1/update/check", None, None)?;
            output::line(&describe_check(&v));
        }
        UpdateAction::Apply => {
            let v = sensitive(&mut api, "/api/v1/update/apply")?;
            output::line(&format!(
                "installed {} into slot {} on trial; the device restarts into it and commits it once the health checks pass ({})",
                text(&v, "version"),
                text(&v, "slot"),
                text(&v, "checks"),
            ));
        }
        UpdateAction::Rollback => {
            let v = sensitive(&mut api, "/api/v1/update/rollback")?;
            output::line(&format!(
                "rolled back to {} (slot {}); the device restarts into it",
                text(&v, "version"),
                text(&v, "slot"),
            ));
        }
        UpdateAction::Status => {
            let v = api.call(Method::GET, "/api/v1/update", None, None)?;
            output::line(&describe_status(&v));
        }
        UpdateAction::History => {
            let v = api.call(Method::GET, "/api/v1/update", None, None)?;
            let events = v.get("history").and_then(Value::as_array);
            match events {
                Some(list) if !list.is_empty() => {
                    for e in list {
                        output::line(&format!(
                            "{}  {:<12} {:<10} {}",
                            text(e, "at"),
                            text(e, "kind"),
                            text(e, "version"),
                            text(e, "reason"),
                        ));
                    }
                }
                _ => output::line("no update recorded yet"),
            }
        }
    }
    Ok(())
}

/// A field as text for the terminal ("-" when absent), without control characters.
fn text(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => clean(s),
        Some(Value::Null) | None => "-".into(),
        Some(Value::Array(a)) => clean(
            &a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", "),
        ),
        Some(other) => clean(&other.to_string()),
    }
}

fn describe_check(v: &Value) -> String {
    match v.get("offer") {
        Some(offer) if !offer.is_null() => format!(
            "update offered: {} (security version {}) for {}; installed {}. Apply with `kawal update apply`.",
            text(offer, "version"),
            text(offer, "security_version"),
            text(offer, "product"),
            text(v, "installed"),
        ),
        _ => format!(
            "up to date: {} is the newest signed version",
            text(v, "installed")
        ),
    }
}

fn describe_status(v: &Value) -> String {
    let mut out = format!(
        "installed {} in slot {} (security version {})",
        text(v, "version"),
        text(v, "slot"),
        text(v, "security_version"),
    );
    if let Some(p) = v.get("previous").filter(|p| !p.is_null()) {
        out.push_str(&format!(
            "\nprevious: {} in slot {} (security version {})",
            text(p, "version"),
            text(p, "slot"),
            text(p, "security_version"),
        ));
    }
    if let Some(t) = v.get("trial").filter(|t| !t.is_null()) {
        out.push_str(&format!(
            "\non trial: {} in slot {}, boot {} of {}",
            text(t, "version"),
            text(t, "slot"),
            text(t, "boots_used"),
            text(t, "max_boots"),
        ));
    }
    out
}
