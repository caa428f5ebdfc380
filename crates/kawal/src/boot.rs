//! `kawal boot`: the launcher (G045 PL-2-2). It asks the boot state which slot to run — a trial
//! boot is counted before anything runs, an exhausted or expired trial is rolled back — checks
//! that slot's files against the bundle manifest it holds, and runs `kawal run` from it.
//!
//! Under systemd it replaces itself with the slot's daemon (`exec`), so the unit supervises the
//! daemon directly and restarts it when it exits for an update ([`crate::update::RESTART_EXIT`]).
//! With `--supervise` it stays as the parent and restarts the daemon itself (for demos, tests
//! and systems without a supervisor).
//!
//! The first boot seeds slot A with the running executable, so a factory install and an
//! updated one are started the same way.
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use kawal_update::bundle::{BundleBuilder, MANIFEST_NAME, PAYLOAD_DIR};
use kawal_update::install::verify_slot;
use kawal_update::slots::{self, BootControl, RollbackReason, Slot};

use crate::config::update::UpdateSettings;
use crate::error::{CliError, Context, Exit, Result};
use crate::update::{RESTART_EXIT, SLOT_ENV};

/// Restarts in a row after which `--supervise` gives up on a slot that keeps failing outside a
/// trial (a trial is bounded by its own boot count).
const MAX_QUICK_FAILURES: u32 = 5;
/// A run shorter than this counts as a quick failure.
const QUICK: Duration = Duration::from_secs(10);

/// What to start: the slot, its executable, and whether it is on trial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chosen {
    /// The slot.
    pub slot: Slot,
    /// The executable in it.
    pub exe: PathBuf,
    /// Whether this boot is a trial boot.
    pub trial: bool,
}

/// The path of the executable inside a slot folder.
pub fn slot_exe(dir: &Path) -> PathBuf {
    dir.join(slots::SLOT_EXECUTABLE)
}

/// Seeds slot A with the running executable and creates the boot state, when there is none.
pub fn seed_if_new(settings: &UpdateSettings) -> Result<()> {
    let mut slots = crate::update::slots(settings);
    match slots.state() {
        Ok(_) => return Ok(()),
        Err(slots::Error::NotInitialised { .. }) => {}
        Err(e) => {
            return Err(CliError::new(
                Exit::DataErr,
                format!("update boot state: {e}"),
            ));
        }
    }
    let root = &settings.slots;
    std::fs::create_dir_all(root).or_exit(Exit::Io, "slots folder")?;
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))
        .or_exit(Exit::Io, "slots folder")?;
    let exe = std::env::current_exe().or_exit(Exit::Io, "own executable")?;
    let bytes = std::fs::read(&exe).or_exit(Exit::Io, "own executable")?;
    let version = env!("CARGO_PKG_VERSION");
    let mut builder = BundleBuilder::new(
        settings.product.clone(),
        version,
        0,
        [settings.hardware.clone()],
    );
    // The executable's path inside the bundle's payload/.
    builder.file("kawal", 0o755, bytes);
    let manifest = builder
        .manifest()
        .map_err(|e| CliError::new(Exit::Failure, format!("slot A manifest: {e}")))?;
    let dir = slots.slot_path(Slot::A);
    let payload = dir.join(PAYLOAD_DIR);
    std::fs::create_dir_all(&payload).or_exit(Exit::Io, "slot A")?;
    let target = slot_exe(&dir);
    let tmp = payload.join(".kawal.new");
    std::fs::copy(&exe, &tmp).or_exit(Exit::Io, "slot A")?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))
        .or_exit(Exit::Io, "slot A")?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .or_exit(Exit::Io, "slot A")?;
    std::fs::rename(&tmp, &target).or_exit(Exit::Io, "slot A")?;
    let toml = manifest
        .to_toml()
        .map_err(|e| CliError::new(Exit::Failure, format!("slot A manifest: {e}")))?;
    crate::device::write_atomic(&dir.join(MANIFEST_NAME), toml.as_bytes(), 0o644)?;
    slots
        .initialise(Slot::A, version, 0)
        .map_err(|e| CliError::new(Exit::Io, format!("update boot state: {e}")))?;
    tracing::info!(
        slot = "a",
        version,
        "slots initialised with the running executable"
    );
    Ok(())
}

/// Chooses the slot to start: counts a trial boot, rolls back a trial whose slot does not
/// verify, and falls back to the other slot when the chosen one does not verify.
pub fn choose(settings: &UpdateSettings) -> Result<Chosen> {
    let mut slots = crate::update::slots(settings);
    let boot_err = |e: slots::Error| CliError::new(Exit::DataErr, format!("update boot: {e}"));
    let mut decision = slots.boot().map_err(boot_err)?;
    if let Err(why) = verify_slot(&decision.path) {
        if decision.trial {
            tracing::error!(slot = decision.slot.dir_name(), %why, "the slot on trial does not verify: rolling back");
            slots
                .rollback(RollbackReason::TrialSlotNotRunnable)
                .map_err(boot_err)?;
            decision = slots.boot().map_err(boot_err)?;
        }
        if let Err(why) = verify_slot(&decision.path) {
            let other = decision.slot.other();
            let other_dir = slots.slot_path(other);
            if verify_slot(&other_dir).is_ok() {
                tracing::error!(slot = decision.slot.dir_name(), %why, fallback = other.dir_name(), "the committed slot does not verify: starting the other slot");
                return Ok(Chosen {
                    slot: other,
                    exe: slot_exe(&other_dir),
                    trial: false,
                });
            }
            return Err(CliError::new(
                Exit::DataErr,
                format!(
                    "no slot verifies: slot {} ({why}); slot {} neither. Reinstall kawal.",
                    decision.slot.dir_name(),
                    other.dir_name()
                ),
            ));
        }
    }
    Ok(Chosen {
        slot: decision.slot,
        exe: slot_exe(&decision.path),
        trial: decision.trial,
    })
}

fn daemon_command(chosen: &Chosen, config: &Path) -> Command {
    let mut cmd = Command::new(&chosen.exe);
    cmd.arg("run")
        .arg("--config")
        .arg(config)
        .env(SLOT_ENV, chosen.slot.dir_name());
    cmd
}

/// `kawal boot --config FILE [--supervise]`.
pub fn boot(config_path: &Path, supervise: bool) -> Result<()> {
    let config = crate::config::load(config_path)?;
    let Some(settings) = config.update else {
        // No updates configured: there are no slots, this executable is the daemon.
        let exe = std::env::current_exe().or_exit(Exit::Io, "own executable")?;
        let chosen = Chosen {
            slot: Slot::A,
            exe,
            trial: false,
        };
        let mut cmd = daemon_command(&chosen, config_path);
        cmd.env_remove(SLOT_ENV);
        return run_or_exec(cmd, supervise);
    };
    seed_if_new(&settings)?;
    if !supervise {
        let chosen = choose(&settings)?;
        tracing::info!(
            slot = chosen.slot.dir_name(),
            trial = chosen.trial,
            "starting kawal"
        );
        let err = daemon_command(&chosen, config_path).exec();
        return Err(CliError::new(
            Exit::Io,
            format!("cannot start {}: {err}", chosen.exe.display()),
        ));
    }
    let mut quick_failures = 0u32;
    loop {
        let chosen = choose(&settings)?;
        tracing::info!(
            slot = chosen.slot.dir_name(),
            trial = chosen.trial,
            "starting kawal"
        );
        let started = Instant::now();
        let status = daemon_command(&chosen, config_path)
            .status()
            .or_exit(Exit::Io, "slot executable")?;
        match status.code() {
            Some(0) => return Ok(()),
            Some(RESTART_EXIT) => {
                quick_failures = 0;
                continue;
            }
            // What a restart cannot cure (tampered data, not provisioned, locked after tamper,
            // an invalid configuration) ends supervision, as systemd's RestartPreventExitStatus
            // does; on trial it is a failed boot like any other.
            Some(c @ (65 | 66 | 69 | 78)) if !chosen.trial => {
                return Err(CliError::new(
                    Exit::Failure,
                    format!(
                        "kawal in slot {} stopped with exit {c}; a restart cannot cure it",
                        chosen.slot.dir_name()
                    ),
                ));
            }
            code => {
                let how = code.map_or_else(
                    || format!("signal {}", status.signal().unwrap_or(0)),
                    |c| format!("exit {c}"),
                );
                quick_failures = if started.elapsed() < QUICK {
                    quick_failures + 1
                } else {
                    1
                };
                tracing::warn!(slot = chosen.slot.dir_name(), %how, "kawal stopped; restarting");
                if quick_failures >= MAX_QUICK_FAILURES && !chosen.trial {
                    return Err(CliError::new(
                        Exit::Failure,
                        format!(
                            "kawal in slot {} keeps failing ({how}); giving up",
                            chosen.slot.dir_name()
                        ),
                    ));
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

fn run_or_exec(mut cmd: Command, supervise: bool) -> Result<()> {
    if supervise {
        let status = cmd.status().or_exit(Exit::Io, "kawal run")?;
        return match status.code() {
            Some(0) => Ok(()),
            _ => Err(CliError::new(
                Exit::Failure,
                format!("kawal run stopped: {status}"),
            )),
        };
    }
    let err = cmd.exec();
    Err(CliError::new(
        Exit::Io,
        format!("cannot start kawal run: {err}"),
    ))
}
