//! Signed updates in the daemon (G045 PL-2-1, PL-2-2, PL-2-3): the API's [`UpdateBackend`]
//! (check, apply, rollback, state), the trial of a newly installed slot (health checks, then
//! commit or rollback) and the audit events of every step.
//!
//! The slots and the boot state live in `[update] slots`; `kawal boot` (see [`crate::boot`])
//! starts the slot the boot state chooses. After an apply or a rollback the daemon asks to be
//! restarted ([`RESTART_EXIT`]) so the launcher starts the other slot.
pub mod vendor;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use kawal_api::update::{UpdateBackend, UpdateError};
use kawal_audit::{AuditLog, Event, Outcome};
use kawal_update::bundle::{BundleLimits, HealthCheck};
use kawal_update::install::{self, DeviceId, InstallError, Step, Updater};
use kawal_update::slots::{self, BootControl, BootState, DirSlots, EventKind, RollbackReason};
use kawal_update::transport::HttpsSettings;
use kawal_update::verify::{MetadataLimits, Source, Trust};
use serde_json::{Value, json};

use crate::config::update::{UpdateSettings, UpdateSource};
use crate::error::{CliError, Exit, Result};

/// The exit code that asks the supervisor (systemd, or `kawal boot --supervise`) to start the
/// daemon again at once, in the slot the boot state now chooses (EX_TEMPFAIL).
pub const RESTART_EXIT: i32 = Exit::Restart as i32;

/// The environment variable `kawal boot` sets to the slot it started (`a` or `b`).
pub const SLOT_ENV: &str = "KAWAL_SLOT";

/// How long the answer to an apply or rollback has to reach the caller before the restart.
const RESTART_GRACE: Duration = Duration::from_millis(300);

/// The updater for `settings`.
pub fn updater(settings: &UpdateSettings) -> Result<Updater> {
    let source = match &settings.source {
        UpdateSource::Dir(dir) => Source::local_dir(dir),
        UpdateSource::Https { url, ca_file } => {
            let url = url::Url::parse(url)
                .map_err(|e| CliError::new(Exit::Config, format!("update.source: {e}")))?;
            Source::https(url, &HttpsSettings::new(vec![ca_file.clone()]))
        }
    }
    .map_err(|e| CliError::new(Exit::Config, format!("update.source: {e}")))?;
    Ok(Updater {
        trust: Trust {
            trusted_root: settings.root.clone(),
            datastore: settings.datastore.clone(),
            limits: MetadataLimits::default(),
        },
        source,
        device: DeviceId {
            product: settings.product.clone(),
            hardware: settings.hardware.clone(),
        },
        limits: BundleLimits::default(),
    })
}

/// The slots of `settings`.
pub fn slots(settings: &UpdateSettings) -> DirSlots {
    DirSlots::open(settings.slots.clone())
}

/// The slot this process was started in by `kawal boot`, if any: `KAWAL_SLOT` is believed
/// only when the running executable is that slot's own, so a stray variable can never make a
/// daemon run (and commit) the trial of a slot it is not running from.
pub fn running_slot(settings: &UpdateSettings) -> Option<slots::Slot> {
    let slot = std::env::var(SLOT_ENV)
        .ok()
        .and_then(|s| slots::Slot::from_name(&s.to_ascii_uppercase()))?;
    let exe = std::fs::canonicalize(std::env::current_exe().ok()?).ok()?;
    let own =
        std::fs::canonicalize(crate::boot::slot_exe(&slots(settings).slot_path(slot))).ok()?;
    (exe == own).then_some(slot)
}

fn rfc3339(unix: u64) -> String {
    crate::devcert::rfc3339(i64::try_from(unix).unwrap_or(i64::MAX))
}

fn event_kind(k: EventKind) -> &'static str {
    match k {
        EventKind::Initialised => "initialised",
        EventKind::TrialStarted => "trial-started",
        EventKind::TrialBoot => "trial-boot",
        EventKind::Committed => "committed",
        EventKind::RolledBack => "rolled-back",
        EventKind::Reverted => "reverted",
        EventKind::Degraded => "degraded",
    }
}

fn rollback_reason(r: RollbackReason) -> &'static str {
    match r {
        RollbackReason::BootsExhausted => "trial boots exhausted without a passing health check",
        RollbackReason::DeadlinePassed => "the health check did not pass within the deadline",
        RollbackReason::HealthCheckFailed => "the health check failed",
        RollbackReason::Operator => "an operator asked for it",
        RollbackReason::TrialSlotNotRunnable => {
            "the slot on trial does not verify against its manifest or holds nothing runnable"
        }
    }
}

/// The boot state as JSON for the API, the console and the report.
pub fn state_json(state: &BootState, settings: &UpdateSettings) -> Value {
    let history: Vec<Value> = state
        .events
        .iter()
        .map(|e| {
            let reason = e
                .rollback
                .map(|r| rollback_reason(r).to_owned())
                .or_else(|| e.degraded.as_ref().map(|d| format!("{d:?}")))
                .or_else(|| e.from_version.as_ref().map(|v| format!("from {v}")));
            json!({
                "at": rfc3339(e.at_unix),
                "kind": event_kind(e.kind),
                "slot": e.slot.dir_name(),
                "version": e.version,
                "reason": reason,
            })
        })
        .collect();
    // What the other slot holds (its manifest only: `kawal update rollback` verifies it).
    let other = state.committed.slot.other();
    let previous = install::slot_manifest(&slots(settings).slot_path(other))
        .ok()
        .map(|m| {
            json!({
                "slot": other.dir_name(),
                "version": m.version(),
                "security_version": m.security_version(),
            })
        });
    json!({
        "version": state.committed.version,
        "slot": state.committed.slot.dir_name(),
        "security_version": state.security_floor,
        "trial": state.trial.as_ref().map(|t| json!({
            "version": t.version,
            "slot": t.slot.dir_name(),
            "security_version": t.security_version,
            "boots_used": t.boots_used,
            "max_boots": t.max_boots,
            "started_at": rfc3339(t.started_at_unix),
            "deadline_s": t.deadline_s,
        })),
        "previous": previous,
        "failed_versions": state.failed,
        "history": history,
        "running_slot": running_slot(settings).map(slots::Slot::dir_name),
        "product": settings.product,
        "hardware": settings.hardware,
        "source": match &settings.source {
            UpdateSource::Dir(d) => d.display().to_string(),
            UpdateSource::Https { url, .. } => url.clone(),
        },
    })
}

/// The daemon's update operations.
pub struct DaemonUpdates {
    settings: UpdateSettings,
    slots: Mutex<DirSlots>,
    log: Arc<AuditLog>,
    rt: tokio::runtime::Handle,
    restart: tokio::sync::mpsc::Sender<()>,
}

impl std::fmt::Debug for DaemonUpdates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DaemonUpdates")
            .field("slots", &self.settings.slots)
            .finish_non_exhaustive()
    }
}

fn record(log: &AuditLog, event: Event) {
    if let Err(e) = log.append(event) {
        tracing::error!(error = %e, "audit log write failed");
    }
}

impl DaemonUpdates {
    /// The backend, on the runtime `rt`; `restart` asks the daemon to stop for a restart.
    pub fn new(
        settings: &UpdateSettings,
        log: Arc<AuditLog>,
        rt: tokio::runtime::Handle,
        restart: tokio::sync::mpsc::Sender<()>,
    ) -> Result<Self> {
        Ok(Self {
            slots: Mutex::new(slots(settings)),
            settings: settings.clone(),
            log,
            rt,
            restart,
        })
    }

    /// The updater, made for each operation: the source (a USB stick, a server) may come and
    /// go while the daemon runs.
    fn updater(&self) -> std::result::Result<Updater, UpdateError> {
        updater(&self.settings).map_err(|e| UpdateError::Unavailable(e.message))
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, DirSlots> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn restart_soon(&self) {
        let tx = self.restart.clone();
        self.rt.spawn(async move {
            tokio::time::sleep(RESTART_GRACE).await;
            let _ = tx.send(()).await;
        });
    }

    /// Records a refusal or failure and turns it into the API's error.
    fn refused(&self, op: &str, actor: &str, e: &InstallError) -> UpdateError {
        // The whole chain: "I/O error on …: No space left on device", not just the first line.
        let why = crate::client::chain(e);
        let (outcome, shown) = match e {
            InstallError::UpToDate { .. } => (Outcome::Info, UpdateError::Conflict(why.clone())),
            e if e.is_rejection() => (Outcome::Denied, UpdateError::Refused(why.clone())),
            InstallError::Slots(_) | InstallError::Bundle(_) => {
                (Outcome::Failure, UpdateError::Conflict(why.clone()))
            }
            InstallError::Verify(v) if !v.is_rejection() => {
                (Outcome::Failure, UpdateError::Unavailable(why.clone()))
            }
            _ => (Outcome::Failure, UpdateError::Internal(why.clone())),
        };
        record(
            &self.log,
            Event::new("update.refused", actor, outcome)
                .with("operation", op)
                .with("reason", why),
        );
        shown
    }
}

impl UpdateBackend for DaemonUpdates {
    fn status(&self) -> std::result::Result<Value, UpdateError> {
        let state = self
            .slots()
            .state()
            .map_err(|e| UpdateError::Internal(e.to_string()))?;
        Ok(state_json(&state, &self.settings))
    }

    fn check(&self, actor: &str) -> std::result::Result<Value, UpdateError> {
        let updater = self.updater()?;
        let slots = self.slots().clone();
        let checked = self
            .rt
            .block_on(updater.check(&slots))
            .map(|(_, c)| c)
            .map_err(|e| self.refused("check", actor, &e))?;
        let offer = checked.offer.as_ref().map(|o| {
            json!({
                "target": o.target.name,
                "version": o.facts.version,
                "security_version": o.facts.security_version,
                "product": o.facts.product,
                "length": o.target.length,
            })
        });
        let mut ev = Event::new("update.checked", actor, Outcome::Success)
            .with("installed", checked.installed.as_str())
            .with("metadata_versions", format!("{:?}", checked.metadata));
        if let Some(o) = &checked.offer {
            ev = ev.with("offered", o.facts.version.as_str());
        }
        record(&self.log, ev);
        Ok(json!({
            "installed": checked.installed,
            "offer": offer,
            "metadata_versions": checked.metadata,
            "skipped": checked.skipped.iter().map(|(v, why)| json!({"version": v, "why": why})).collect::<Vec<_>>(),
        }))
    }

    fn apply(&self, actor: &str) -> std::result::Result<Value, UpdateError> {
        let updater = self.updater()?;
        let mut slots = self.slots();
        if let Ok(s) = slots.state()
            && let Some(t) = &s.trial
        {
            return Err(UpdateError::Conflict(format!(
                "version {} is on trial in slot {}: it must be committed or rolled back first",
                t.version,
                t.slot.dir_name()
            )));
        }
        record(
            &self.log,
            Event::new("update.apply-started", actor, Outcome::Info),
        );
        let log = Arc::clone(&self.log);
        let who = actor.to_owned();
        let mut on_step = move |step: Step| {
            let ev = match step {
                Step::MetadataVerified { versions } => {
                    Event::new("update.metadata-verified", &who, Outcome::Success)
                        .with("root", versions[0])
                        .with("timestamp", versions[1])
                        .with("snapshot", versions[2])
                        .with("targets", versions[3])
                }
                Step::Downloading {
                    target,
                    version,
                    length,
                } => Event::new("update.downloading", &who, Outcome::Info)
                    .with("target", target)
                    .with("version", version)
                    .with("length", length),
                Step::Installed { version, slot } => {
                    Event::new("update.installed", &who, Outcome::Success)
                        .with("version", version)
                        .with("slot", slot.dir_name())
                }
            };
            record(&log, ev);
        };
        let applied = self
            .rt
            .block_on(updater.apply(&mut *slots, &mut on_step))
            .map_err(|e| self.refused("apply", actor, &e))?;
        let checks: Vec<&str> = applied.checks.iter().map(|c| check_name(*c)).collect();
        record(
            &self.log,
            Event::new("update.trial-started", actor, Outcome::Success)
                .with("version", applied.version.as_str())
                .with("from_version", applied.from_version.as_str())
                .with("security_version", applied.security_version)
                .with("slot", applied.slot.dir_name())
                .with("checks", checks.join(","))
                .with("max_boots", u64::from(applied.max_boots))
                .with("deadline_s", applied.deadline_s),
        );
        drop(slots);
        self.restart_soon();
        Ok(json!({
            "version": applied.version,
            "from_version": applied.from_version,
            "slot": applied.slot.dir_name(),
            "security_version": applied.security_version,
            "checks": checks,
            "max_boots": applied.max_boots,
            "deadline_s": applied.deadline_s,
            "bytes": applied.bytes,
        }))
    }

    fn rollback(&self, actor: &str) -> std::result::Result<Value, UpdateError> {
        let mut slots = self.slots();
        let state = slots
            .state()
            .map_err(|e| UpdateError::Internal(e.to_string()))?;
        let Some(trial) = state.trial else {
            // After a commit: back to the release still in the other slot, if it verifies and
            // is not below the security floor.
            let after = revert_to_previous(&mut slots)
                .map_err(|why| UpdateError::Conflict(format!("nothing to roll back to: {why}")))?;
            drop(slots);
            record(
                &self.log,
                Event::new("update.reverted", actor, Outcome::Success)
                    .with("version", state.committed.version.as_str())
                    .with("to_version", after.committed.version.as_str())
                    .with("slot", after.committed.slot.dir_name())
                    .with("reason", "an operator asked for it"),
            );
            self.restart_soon();
            return Ok(json!({
                "version": after.committed.version,
                "slot": after.committed.slot.dir_name(),
                "rolled_back": state.committed.version,
            }));
        };
        let after = slots
            .rollback(RollbackReason::Operator)
            .map_err(|e| UpdateError::Conflict(e.to_string()))?;
        drop(slots);
        record(
            &self.log,
            Event::new("update.rolled-back", actor, Outcome::Success)
                .with("version", trial.version.as_str())
                .with("to_version", after.committed.version.as_str())
                .with("slot", after.committed.slot.dir_name())
                .with("reason", rollback_reason(RollbackReason::Operator)),
        );
        if running_slot(&self.settings) == Some(trial.slot) {
            self.restart_soon();
        }
        Ok(json!({
            "version": after.committed.version,
            "slot": after.committed.slot.dir_name(),
            "rolled_back": trial.version,
        }))
    }
}

/// Makes the release in the other slot the committed one again, reading its version and
/// security version from that slot's own manifest after checking every file against it.
pub fn revert_to_previous(slots: &mut DirSlots) -> std::result::Result<BootState, String> {
    let state = slots.state().map_err(|e| e.to_string())?;
    let other = state.committed.slot.other();
    let manifest = install::verify_slot(&slots.slot_path(other))
        .map_err(|why| format!("slot {} does not verify ({why})", other.dir_name()))?;
    slots
        .revert(manifest.version(), manifest.security_version())
        .map_err(|e| e.to_string())
}

/// The integrity response `on-mismatch = "reboot"`: leaves the slot this daemon runs from —
/// a trial in progress is rolled back, else the previous release becomes the committed one —
/// and logs it. `false` when there is nothing verified to go back to.
pub fn leave_slot(settings: &UpdateSettings, log: &AuditLog) -> bool {
    match leave(settings) {
        Ok((from, after)) => {
            record(
                log,
                Event::new("update.reverted", "kawal", Outcome::Failure)
                    .with("version", from.as_str())
                    .with("to_version", after.committed.version.as_str())
                    .with("slot", after.committed.slot.dir_name())
                    .with("reason", "integrity mismatch (on-mismatch = reboot)"),
            );
            true
        }
        Err(why) => {
            record(
                log,
                Event::new("update.revert-refused", "kawal", Outcome::Failure)
                    .with("reason", why.as_str()),
            );
            false
        }
    }
}

/// [`leave_slot`] without the log: the version left and the state after.
fn leave(settings: &UpdateSettings) -> std::result::Result<(String, BootState), String> {
    let mut slots = slots(settings);
    let state = slots.state().map_err(|e| e.to_string())?;
    match &state.trial {
        Some(t) => slots
            .rollback(RollbackReason::HealthCheckFailed)
            .map(|after| (t.version.clone(), after))
            .map_err(|e| e.to_string()),
        None => revert_to_previous(&mut slots).map(|after| (state.committed.version, after)),
    }
}

/// The configuration's name of a health check.
pub fn check_name(c: HealthCheck) -> &'static str {
    match c {
        HealthCheck::SelfTest => "self-test",
        HealthCheck::Integrity => "integrity",
        HealthCheck::Upstream => "upstream",
    }
}

/// Writes the boot state's events that happened since the daemon last ran (trial boots,
/// rollbacks by `kawal boot`, degraded boots) into the audit log, once each: the launcher runs
/// before the device is open and cannot log them itself.
pub fn log_boot_events(
    dev: &crate::device::Device,
    log: &AuditLog,
    settings: &UpdateSettings,
) -> Result<()> {
    const SEEN: &str = "update-events-seen";
    let Ok(state) = slots(settings).state() else {
        return Ok(());
    };
    let seen: Option<(u64, usize)> = dev.get_json(crate::device::tables::HEALTH, SEEN)?;
    let (seen_at, seen_n) = seen.unwrap_or((0, 0));
    // Events are kept in order; the ones at or before the last logged time that were already
    // counted are skipped.
    let mut same_second = 0usize;
    let mut newest = (seen_at, seen_n);
    for e in &state.events {
        if e.at_unix < seen_at {
            continue;
        }
        if e.at_unix == seen_at {
            same_second += 1;
            if same_second <= seen_n {
                continue;
            }
        }
        newest = if e.at_unix == newest.0 {
            (newest.0, newest.1 + 1)
        } else {
            (e.at_unix, 1)
        };
        // What the launcher did; the daemon logs its own steps (trial started, committed,
        // rolled back after a failed health check or by an operator, reverted) as they happen.
        let (name, outcome) = match (e.kind, e.rollback) {
            (EventKind::TrialBoot, _) => ("update.trial-boot", Outcome::Info),
            (
                EventKind::RolledBack,
                Some(
                    RollbackReason::BootsExhausted
                    | RollbackReason::DeadlinePassed
                    | RollbackReason::TrialSlotNotRunnable,
                ),
            ) => ("update.rolled-back", Outcome::Failure),
            (EventKind::Degraded, _) => ("update.degraded-boot", Outcome::Failure),
            (EventKind::Initialised, _) => ("update.slots-initialised", Outcome::Info),
            _ => continue,
        };
        let mut ev = Event::new(name, "kawal-boot", outcome)
            .with("version", e.version.as_str())
            .with("slot", e.slot.dir_name())
            .with("at", rfc3339(e.at_unix));
        if let Some(r) = e.rollback {
            ev = ev.with("reason", rollback_reason(r));
        }
        if let Some(d) = &e.degraded {
            ev = ev.with("degraded", format!("{d:?}"));
        }
        crate::device::record(log, ev)?;
    }
    if newest != (seen_at, seen_n) {
        let json =
            serde_json::to_vec(&newest).map_err(|e| CliError::new(Exit::Failure, e.to_string()))?;
        dev.store
            .put(crate::device::tables::HEALTH, SEEN, &json)
            .map_err(|e| CliError::new(Exit::Io, format!("store: {e}")))?;
    }
    Ok(())
}

/// What a trial's health checks need of the running daemon.
pub struct TrialProbe {
    /// Runs the integrity check now; `Ok` when it passed (or no manifest is installed).
    pub integrity: Box<dyn Fn() -> std::result::Result<(), String> + Send + Sync>,
    /// Whether the upstream bridge is connected (none configured: `None`).
    pub upstream: Option<Box<dyn Fn() -> bool + Send + Sync>>,
}

/// The trial of the slot this daemon runs in, if it is on trial: runs the health checks the
/// bundle and the configuration name, then commits, or rolls back and asks for a restart.
/// Returns at once when there is no trial for this slot.
pub async fn run_trial(
    settings: UpdateSettings,
    log: Arc<AuditLog>,
    probe: TrialProbe,
    restart: tokio::sync::mpsc::Sender<()>,
) {
    let mut slots = slots(&settings);
    let Ok(state) = slots.state() else { return };
    let Some(trial) = state.trial.clone() else {
        return;
    };
    if running_slot(&settings) != Some(trial.slot) {
        return;
    }
    let dir = slots.slot_path(trial.slot);
    // `kawal boot` checked the slot before starting it, but a commit must not rest on how this
    // process was started: the slot is checked again before its health counts.
    let mut checks: Vec<HealthCheck> = match install::verify_slot(&dir) {
        Ok(m) => m.health().checks().to_vec(),
        Err(why) => {
            finish_trial(
                &mut slots,
                &log,
                &trial.version,
                Err(format!("the slot does not verify: {why}")),
                &restart,
            )
            .await;
            return;
        }
    };
    for c in &settings.health_checks {
        let c = match c.as_str() {
            "self-test" => HealthCheck::SelfTest,
            "integrity" => HealthCheck::Integrity,
            _ => HealthCheck::Upstream,
        };
        if !checks.contains(&c) {
            checks.push(c);
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let left = trial
        .started_at_unix
        .saturating_add(trial.deadline_s)
        .saturating_sub(now);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(left);
    let mut result = Ok(());
    for c in &checks {
        let outcome = match c {
            // The daemon serves only after its power-up self-test passed.
            HealthCheck::SelfTest => Ok(()),
            HealthCheck::Integrity => {
                let f = &probe.integrity;
                f()
            }
            HealthCheck::Upstream => match &probe.upstream {
                None => Err("no upstream is configured".to_owned()),
                Some(up) => loop {
                    if up() {
                        break Ok(());
                    }
                    if tokio::time::Instant::now() >= deadline {
                        break Err(
                            "the upstream bridge did not connect before the deadline".to_owned()
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                },
            },
        };
        if let Err(why) = outcome {
            result = Err(format!("{}: {why}", check_name(*c)));
            break;
        }
    }
    let names: Vec<&str> = checks.iter().map(|c| check_name(*c)).collect();
    record(
        &log,
        Event::new(
            "update.health-checked",
            "kawal",
            if result.is_ok() {
                Outcome::Success
            } else {
                Outcome::Failure
            },
        )
        .with("version", trial.version.as_str())
        .with("checks", names.join(","))
        .with(
            "result",
            result.as_ref().err().map_or("passed", String::as_str),
        ),
    );
    finish_trial(&mut slots, &log, &trial.version, result, &restart).await;
}

async fn finish_trial(
    slots: &mut DirSlots,
    log: &AuditLog,
    version: &str,
    result: std::result::Result<(), String>,
    restart: &tokio::sync::mpsc::Sender<()>,
) {
    match result {
        Ok(()) => match slots.commit() {
            Ok(s) => record(
                log,
                Event::new("update.committed", "kawal", Outcome::Success)
                    .with("version", version)
                    .with("slot", s.committed.slot.dir_name())
                    .with("security_version", s.security_floor),
            ),
            Err(e) => {
                record(
                    log,
                    Event::new("update.commit-failed", "kawal", Outcome::Failure)
                        .with("version", version)
                        .with("reason", e.to_string()),
                );
            }
        },
        Err(why) => {
            let to = slots.rollback(RollbackReason::HealthCheckFailed);
            let mut ev = Event::new("update.rolled-back", "kawal", Outcome::Failure)
                .with("version", version)
                .with("reason", why.as_str());
            if let Ok(s) = &to {
                ev = ev
                    .with("to_version", s.committed.version.as_str())
                    .with("slot", s.committed.slot.dir_name());
            }
            record(log, ev);
            let _ = restart.send(()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use kawal_update::slots::{Slot, TrialRequest};

    use super::*;

    fn settings(dir: &Path) -> UpdateSettings {
        UpdateSettings {
            source: UpdateSource::Dir(dir.join("repo")),
            product: "kawal-gateway".into(),
            hardware: "board-x1".into(),
            root: dir.join("root.json"),
            datastore: dir.join("tuf"),
            slots: dir.join("slots"),
            health_checks: Vec::new(),
        }
    }

    /// Writes a verified release of `version` into `dir`, as an install leaves it.
    fn release(dir: &Path, version: &str, security_version: u64) {
        let mut b = kawal_update::bundle::BundleBuilder::new(
            "kawal-gateway",
            version,
            security_version,
            ["board-x1"],
        );
        b.file(
            "kawal",
            0o755,
            format!("#!/bin/sh\n# {version}\n").into_bytes(),
        );
        let m = b.manifest().unwrap();
        std::fs::create_dir_all(dir.join("payload")).unwrap();
        let exe = crate::boot::slot_exe(dir);
        std::fs::write(&exe, format!("#!/bin/sh\n# {version}\n")).unwrap();
        std::fs::set_permissions(&exe, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        std::fs::write(dir.join("kawal-bundle.toml"), m.to_toml().unwrap()).unwrap();
    }

    /// G045: PL-1-4, PL-2-2
    /// `on-mismatch = "reboot"`: a trial is rolled back; a committed release goes back to the
    /// verified previous one; with nothing verified to go back to, it is refused.
    #[test]
    fn leaving_the_slot_rolls_back_a_trial_or_reverts_to_the_previous_release() {
        let tmp = tempfile::tempdir().unwrap();
        let s = settings(tmp.path());
        let mut slots = slots(&s);
        std::fs::create_dir_all(&s.slots).unwrap();
        slots.initialise(Slot::A, "1.0.0", 0).unwrap();
        release(&slots.slot_path(Slot::A), "1.0.0", 0);
        // Nothing in slot B: refused.
        assert!(leave(&s).is_err());

        let b = slots.prepare_inactive().unwrap();
        release(&b, "2.0.0", 0);
        let req = |v: &str| TrialRequest {
            version: v.into(),
            security_version: 0,
            max_boots: 3,
            deadline_s: 300,
            force: false,
        };
        slots.begin_trial(&req("2.0.0")).unwrap();
        slots.boot().unwrap();
        let (from, after) = leave(&s).unwrap();
        assert_eq!((from.as_str(), after.committed.slot), ("2.0.0", Slot::A));
        assert!(after.trial.is_none() && after.failed.contains(&"2.0.0".to_owned()));

        let b = slots.prepare_inactive().unwrap();
        release(&b, "3.0.0", 0);
        slots.begin_trial(&req("3.0.0")).unwrap();
        slots.boot().unwrap();
        slots.commit().unwrap();
        let (from, after) = leave(&s).unwrap();
        assert_eq!(from, "3.0.0");
        assert_eq!(
            (after.committed.slot, after.committed.version.as_str()),
            (Slot::A, "1.0.0")
        );

        // Slot B's executable changed on disk: it does not verify, so no way back to it.
        let exe = crate::boot::slot_exe(&slots.slot_path(Slot::B));
        std::fs::write(&exe, "#!/bin/sh\n# changed\n").unwrap();
        let why = leave(&s).unwrap_err();
        assert!(why.contains("does not verify"), "{why}");
    }
}
