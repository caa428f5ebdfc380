//! The boot-state machine, shared by every back end.
//!
//! The transitions are plain functions from one [`BootState`] to the next; a back end only loads
//! and stores the state, knows where the slots are and whether one is runnable. Every transition
//! is computed in full before anything is written, so a refused request writes nothing.

use std::path::PathBuf;

use super::{
    BootDecision, BootState, Committed, DegradedReason, Error, Event, EventKind, MAX_FAILED,
    Result, RollbackReason, Slot, Trial, TrialRequest,
};

/// What a back end provides to the machine.
pub(crate) trait Backend {
    /// The stored state.
    fn load(&self) -> Result<BootState>;
    /// Persists `next` durably (atomically: a power cut leaves the old or the new state).
    fn store(&mut self, next: &BootState) -> Result<()>;
    /// Unix seconds now.
    fn now(&self) -> u64;
    /// The folder of `slot`.
    fn slot_dir(&self, slot: Slot) -> PathBuf;
    /// Whether `slot` holds a runnable kawal.
    fn runnable(&self, slot: Slot) -> bool {
        super::dir::executable_in(&self.slot_dir(slot))
    }
}

/// Implements [`super::BootControl`] for a [`Backend`]: every back end runs the same state
/// machine over its own storage.
macro_rules! boot_control_over_backend {
    ($backend:ty) => {
        impl $crate::slots::BootControl for $backend {
            fn state(&self) -> $crate::slots::Result<$crate::slots::BootState> {
                $crate::slots::machine::Backend::load(self)
            }

            fn prepare_inactive(&mut self) -> $crate::slots::Result<std::path::PathBuf> {
                let state = $crate::slots::machine::Backend::load(self)?;
                if let Some(t) = state.trial {
                    return Err($crate::slots::Error::TrialInProgress { version: t.version });
                }
                let dir =
                    $crate::slots::machine::Backend::slot_dir(self, state.committed.slot.other());
                $crate::slots::dir::empty_slot_dir(&dir)?;
                Ok(dir)
            }

            fn begin_trial(
                &mut self,
                request: &$crate::slots::TrialRequest,
            ) -> $crate::slots::Result<$crate::slots::Trial> {
                $crate::slots::machine::drive_begin_trial(self, request)
            }

            fn boot(&mut self) -> $crate::slots::Result<$crate::slots::BootDecision> {
                $crate::slots::machine::boot(self)
            }

            fn commit(&mut self) -> $crate::slots::Result<$crate::slots::BootState> {
                $crate::slots::machine::drive_commit(self)
            }

            fn rollback(
                &mut self,
                reason: $crate::slots::RollbackReason,
            ) -> $crate::slots::Result<$crate::slots::BootState> {
                $crate::slots::machine::drive_rollback(self, reason)
            }

            fn revert(
                &mut self,
                version: &str,
                security_version: u64,
            ) -> $crate::slots::Result<$crate::slots::BootState> {
                $crate::slots::machine::drive_revert(self, version, security_version)
            }

            fn is_runnable(&self, slot: $crate::slots::Slot) -> bool {
                $crate::slots::machine::Backend::runnable(self, slot)
            }

            fn slot_path(&self, slot: $crate::slots::Slot) -> std::path::PathBuf {
                $crate::slots::machine::Backend::slot_dir(self, slot)
            }
        }
    };
}
pub(crate) use boot_control_over_backend;

fn event(kind: EventKind, at_unix: u64, slot: Slot, version: &str) -> Event {
    Event {
        kind,
        at_unix,
        slot,
        version: version.to_owned(),
        from_version: None,
        rollback: None,
        degraded: None,
        forced: false,
    }
}

/// The state after starting the trial `req` (the caller checked the slot is runnable).
pub(crate) fn begin_trial(s: &BootState, req: &TrialRequest, now: u64) -> Result<BootState> {
    if let Some(t) = &s.trial {
        return Err(Error::TrialInProgress {
            version: t.version.clone(),
        });
    }
    if req.version.is_empty() || req.max_boots == 0 || req.deadline_s == 0 {
        return Err(Error::ApiMisuse {
            what: "a trial needs a version, at least one boot and a time limit",
        });
    }
    let failed_before = s.failed.contains(&req.version);
    if failed_before && !req.force {
        return Err(Error::PreviouslyFailed {
            version: req.version.clone(),
        });
    }
    if req.security_version < s.security_floor {
        return Err(Error::SecurityVersionTooLow {
            offered: req.security_version,
            installed: s.security_floor,
        });
    }
    let slot = s.committed.slot.other();
    let mut next = s.clone();
    next.trial = Some(Trial {
        slot,
        version: req.version.clone(),
        security_version: req.security_version,
        boots_used: 0,
        max_boots: req.max_boots,
        started_at_unix: now,
        deadline_s: req.deadline_s,
    });
    let mut ev = event(EventKind::TrialStarted, now, slot, &req.version);
    ev.from_version = Some(s.committed.version.clone());
    ev.forced = failed_before;
    next.record(ev);
    Ok(next)
}

/// The state after the trial ends without a commit.
pub(crate) fn rollback(s: &BootState, reason: RollbackReason, now: u64) -> Result<BootState> {
    let trial = s.trial.as_ref().ok_or(Error::NoTrial)?;
    let mut next = s.clone();
    next.trial = None;
    next.failed.retain(|v| v != &trial.version);
    next.failed.push(trial.version.clone());
    let excess = next.failed.len().saturating_sub(MAX_FAILED);
    next.failed.drain(..excess);
    let mut ev = event(EventKind::RolledBack, now, trial.slot, &trial.version);
    ev.from_version = Some(s.committed.version.clone());
    ev.rollback = Some(reason);
    next.record(ev);
    Ok(next)
}

/// The state after the health check passed.
pub(crate) fn commit(s: &BootState, now: u64) -> Result<BootState> {
    let trial = s.trial.as_ref().ok_or(Error::NoTrial)?;
    if trial.boots_used == 0 {
        return Err(Error::TrialNotBooted {
            version: trial.version.clone(),
        });
    }
    if trial.expired_at(now) || trial.boots_used > trial.max_boots {
        return Err(Error::TrialExpired {
            version: trial.version.clone(),
        });
    }
    let mut next = s.clone();
    next.trial = None;
    next.committed = Committed {
        slot: trial.slot,
        version: trial.version.clone(),
        security_version: trial.security_version,
    };
    next.security_floor = s.security_floor.max(trial.security_version);
    next.failed.retain(|v| v != &trial.version);
    let mut ev = event(EventKind::Committed, now, trial.slot, &trial.version);
    ev.from_version = Some(s.committed.version.clone());
    next.record(ev);
    Ok(next)
}

/// Chooses `wanted` if runnable, else the other slot if runnable (degraded).
fn choose(b: &dyn Backend, wanted: Slot) -> Result<(Slot, Option<DegradedReason>)> {
    if b.runnable(wanted) {
        Ok((wanted, None))
    } else if b.runnable(wanted.other()) {
        tracing::error!(%wanted, "slot not runnable; running the other slot");
        Ok((wanted.other(), Some(DegradedReason::SlotNotRunnable)))
    } else {
        tracing::error!("neither slot is runnable");
        Err(Error::NothingBootable {
            a: b.slot_dir(Slot::A),
            b: b.slot_dir(Slot::B),
        })
    }
}

/// One boot: see [`super::BootControl::boot`].
pub(crate) fn boot(b: &mut dyn Backend) -> Result<BootDecision> {
    let state = match b.load() {
        Ok(s) => s,
        Err(e) => {
            // Fail safe: run whatever is runnable, write nothing, let the launcher report it.
            tracing::error!(error = %e, "boot state unreadable; choosing a runnable slot");
            let (slot, _) = choose(b, Slot::A)?;
            return Ok(BootDecision {
                slot,
                path: b.slot_dir(slot),
                trial: false,
                rolled_back: None,
                degraded: Some(DegradedReason::StateUnreadable),
            });
        }
    };
    let now = b.now();
    let mut next = state.clone();
    let mut rolled_back = None;
    if let Some(t) = &mut next.trial {
        t.boots_used = t.boots_used.saturating_add(1);
        let (slot, version) = (t.slot, t.version.clone());
        let reason = if t.boots_used > t.max_boots {
            Some(RollbackReason::BootsExhausted)
        } else if t.expired_at(now) {
            Some(RollbackReason::DeadlinePassed)
        } else if !b.runnable(slot) {
            Some(RollbackReason::TrialSlotNotRunnable)
        } else {
            None
        };
        match reason {
            Some(r) => {
                next = rollback(&state, r, now)?;
                rolled_back = Some(r);
                tracing::warn!(%version, reason = ?r, "trial ended: rolled back");
            }
            None => next.record(event(EventKind::TrialBoot, now, slot, &version)),
        }
        // Counted (or ended) before anything runs: a trial that kills the device still ends.
        // A trial boot that cannot be counted is not run at all: the committed slot runs.
        if let Err(e) = b.store(&next) {
            tracing::error!(error = %e, "could not count the trial boot; running the committed slot");
            let (slot, _) = choose(b, state.committed.slot)?;
            return Ok(BootDecision {
                slot,
                path: b.slot_dir(slot),
                trial: false,
                rolled_back: None,
                degraded: Some(DegradedReason::StateUnwritable),
            });
        }
    }
    let wanted = next.intended_slot();
    let (slot, degraded) = choose(b, wanted)?;
    if let Some(reason) = &degraded {
        let last_same = next.events.last().is_some_and(|e| {
            e.kind == EventKind::Degraded && e.slot == slot && e.degraded.as_ref() == Some(reason)
        });
        if !last_same {
            let mut ev = event(EventKind::Degraded, now, slot, &next.committed.version);
            ev.degraded = Some(reason.clone());
            next.record(ev);
            // Recording is best effort: the boot must go on even if the write fails.
            if let Err(e) = b.store(&next) {
                tracing::error!(error = %e, "could not record the degraded boot");
            }
        }
    }
    Ok(BootDecision {
        slot,
        path: b.slot_dir(slot),
        trial: degraded.is_none() && next.trial.is_some(),
        rolled_back,
        degraded,
    })
}

/// Starts a trial after checking the inactive slot is runnable.
pub(crate) fn drive_begin_trial(b: &mut dyn Backend, req: &TrialRequest) -> Result<Trial> {
    let state = b.load()?;
    let next = begin_trial(&state, req, b.now())?;
    let slot = state.committed.slot.other();
    if !b.runnable(slot) {
        return Err(Error::SlotNotRunnable {
            slot,
            path: b.slot_dir(slot),
        });
    }
    b.store(&next)?;
    tracing::info!(version = %req.version, %slot, "trial started");
    next.trial.ok_or(Error::NoTrial)
}

/// Commits the trial.
pub(crate) fn drive_commit(b: &mut dyn Backend) -> Result<BootState> {
    let state = b.load()?;
    let next = commit(&state, b.now())?;
    b.store(&next)?;
    tracing::info!(version = %next.committed.version, slot = %next.committed.slot, "trial committed");
    Ok(next)
}

/// Rolls the trial back.
/// The state after going back to the previous release in the other slot: no trial may run,
/// the other slot must be runnable, and its security version may not be below the floor (the
/// caller reads both from the slot's own verified manifest).
pub(crate) fn revert(
    s: &BootState,
    other: (bool, PathBuf),
    version: &str,
    security_version: u64,
    now: u64,
) -> Result<BootState> {
    if let Some(t) = &s.trial {
        return Err(Error::TrialInProgress {
            version: t.version.clone(),
        });
    }
    let slot = s.committed.slot.other();
    let (runnable, path) = other;
    if !runnable {
        return Err(Error::SlotNotRunnable { slot, path });
    }
    if security_version < s.security_floor {
        return Err(Error::SecurityVersionTooLow {
            offered: security_version,
            installed: s.security_floor,
        });
    }
    // After a failed trial the other slot holds the version that failed, not a previous one.
    if s.failed.iter().any(|v| v == version) {
        return Err(Error::PreviouslyFailed {
            version: version.to_owned(),
        });
    }
    let mut next = s.clone();
    next.committed = Committed {
        slot,
        version: version.to_owned(),
        security_version,
    };
    let mut ev = event(EventKind::Reverted, now, slot, version);
    ev.from_version = Some(s.committed.version.clone());
    next.record(ev);
    Ok(next)
}

pub(crate) fn drive_revert(
    b: &mut dyn Backend,
    version: &str,
    security_version: u64,
) -> Result<BootState> {
    let state = b.load()?;
    let other = state.committed.slot.other();
    let other = (b.runnable(other), b.slot_dir(other));
    let next = revert(&state, other, version, security_version, b.now())?;
    b.store(&next)?;
    tracing::warn!(
        version,
        "reverted to the previous release in the other slot"
    );
    Ok(next)
}

pub(crate) fn drive_rollback(b: &mut dyn Backend, reason: RollbackReason) -> Result<BootState> {
    let state = b.load()?;
    let next = rollback(&state, reason, b.now())?;
    b.store(&next)?;
    tracing::warn!(?reason, "trial rolled back");
    Ok(next)
}
