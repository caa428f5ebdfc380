//! A/B slots, trial boot and automatic rollback (G045 PL-2-2; threats ST-D-13, ST-D-14, ST-D-16).
//!
//! An update is unpacked into the *inactive* slot ([`BootControl::prepare_inactive`]), then the
//! device switches to it **on trial** ([`BootControl::begin_trial`]). The launcher calls
//! [`BootControl::boot`] once at every start. A trial is committed ([`BootControl::commit`]) only
//! when its health check passes within a number of boots and a time limit; otherwise the
//! committed slot comes back by itself, the failed version is remembered (and not tried again
//! unless forced) and the events are recorded in the boot state.
//!
//! # Rules every back end keeps
//! - **Only trial boots count.** With no trial running, `boot` writes nothing, so power cuts
//!   during normal operation can never cause a rollback.
//! - **Counted before it runs.** A trial boot is persisted before `boot` returns, so a trial that
//!   crashes the device is still counted and ends.
//! - **Never stuck.** When the slot that should run is not runnable, `boot` falls back to the
//!   other one and says so ([`BootDecision::degraded`]); when the boot state cannot be read it
//!   picks a runnable slot without writing anything; when a trial boot cannot be counted it runs
//!   the committed slot instead; when neither slot is runnable it returns
//!   [`Error::NothingBootable`] for the launcher to report.
//! - **The security version floor only rises** ([`BootControl::installed_security_version`]).
//!
//! # Back ends
//! [`DirSlots`] keeps both slots as folders and the boot state as a two-copy record
//! ([`durable`]). [`UbootEnv`] keeps the same state in a U-Boot environment (`fw_setenv` format,
//! RAUC-style variables). [`grub`] reads and writes the GRUB environment block format.

mod dir;
pub mod durable;
mod error;
pub mod grub;
mod machine;
mod record;
mod uboot;
pub mod ubootenv;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use dir::DirSlots;
pub use error::{EnvProblem, Error, Result};
pub use uboot::{UbootConfig, UbootEnv};

/// How many events the boot state keeps (the oldest are dropped first).
pub const MAX_EVENTS: usize = 64;

/// How many versions that failed trial the boot state remembers (the oldest are dropped first).
pub const MAX_FAILED: usize = 16;

/// The executable a slot must hold to be runnable, relative to the slot folder (a bundle's
/// `payload/kawal`).
pub const SLOT_EXECUTABLE: &str = "payload/kawal";

/// One of the two slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Slot {
    /// Slot A (folder `a`, U-Boot name `A`).
    A,
    /// Slot B (folder `b`, U-Boot name `B`).
    B,
}

impl Slot {
    /// The other slot.
    #[must_use]
    pub fn other(self) -> Self {
        match self {
            Self::A => Self::B,
            Self::B => Self::A,
        }
    }

    /// The upper-case name used in boot loader variables (`A`, `B`).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::A => "A",
            Self::B => "B",
        }
    }

    /// The folder name under a slot root (`a`, `b`).
    #[must_use]
    pub fn dir_name(self) -> &'static str {
        match self {
            Self::A => "a",
            Self::B => "b",
        }
    }

    /// Parses a boot loader name (`A` or `B`).
    #[must_use]
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "A" => Some(Self::A),
            "B" => Some(Self::B),
            _ => None,
        }
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The committed (known good) slot and what it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Committed {
    /// The slot.
    pub slot: Slot,
    /// The version of kawal in it.
    pub version: String,
    /// Its security version (anti-rollback counter of the bundle).
    pub security_version: u64,
}

/// A trial in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Trial {
    /// The slot on trial (always the other one than the committed slot).
    pub slot: Slot,
    /// The version on trial.
    pub version: String,
    /// The security version of the bundle on trial.
    pub security_version: u64,
    /// Trial boots counted so far.
    pub boots_used: u32,
    /// Most trial boots allowed before the health check must have passed.
    pub max_boots: u32,
    /// When the trial began (Unix seconds).
    pub started_at_unix: u64,
    /// Seconds after `started_at_unix` by which the health check must have passed.
    pub deadline_s: u64,
}

impl Trial {
    /// Whether the time limit has passed at `now` (a clock that went backwards, such as an RTC
    /// reset, never ends a trial by time: the boot limit still does).
    #[must_use]
    pub fn expired_at(&self, now: u64) -> bool {
        now.saturating_sub(self.started_at_unix) > self.deadline_s
    }
}

/// What ended a trial without a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RollbackReason {
    /// More trial boots than allowed happened without a commit.
    BootsExhausted,
    /// The time limit passed without a commit.
    DeadlinePassed,
    /// The health check reported a failure.
    HealthCheckFailed,
    /// An operator asked for it.
    Operator,
    /// The slot on trial holds nothing runnable, or does not verify against its manifest.
    TrialSlotNotRunnable,
}

/// Why a boot did not run the slot it should have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DegradedReason {
    /// The slot that should run holds nothing runnable.
    SlotNotRunnable,
    /// The boot state could not be read (both copies corrupt or unreadable); nothing was written.
    StateUnreadable,
    /// A trial boot could not be recorded, so the trial slot was not run; the committed one was.
    StateUnwritable,
}

/// The kinds of recorded events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    /// The boot state was created.
    Initialised,
    /// A trial began.
    TrialStarted,
    /// A trial boot was counted.
    TrialBoot,
    /// A trial was committed.
    Committed,
    /// A trial ended without a commit.
    RolledBack,
    /// The previous release in the other slot became the committed one again.
    Reverted,
    /// A boot ran the other slot than intended.
    Degraded,
}

/// One recorded event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// When (Unix seconds, as the device's clock said).
    pub at_unix: u64,
    /// The slot concerned.
    pub slot: Slot,
    /// The version concerned (the trial's, or the committed one's).
    pub version: String,
    /// The version that was committed at the time, when it differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_version: Option<String>,
    /// Why a trial ended, for [`EventKind::RolledBack`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackReason>,
    /// Why a boot was degraded, for [`EventKind::Degraded`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub degraded: Option<DegradedReason>,
    /// Whether a previously failed version was forced, for [`EventKind::TrialStarted`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forced: bool,
}

/// The whole boot state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct BootState {
    /// The committed slot.
    pub committed: Committed,
    /// The highest security version ever committed; never lowered.
    pub security_floor: u64,
    /// The trial in progress, if any.
    pub trial: Option<Trial>,
    /// Versions that failed trial, oldest first (at most [`MAX_FAILED`]).
    pub failed: Vec<String>,
    /// The last events, oldest first (at most [`MAX_EVENTS`]).
    pub events: Vec<Event>,
}

impl BootState {
    /// A fresh state: `committed` is the only (known good) installation.
    #[must_use]
    pub fn new(committed: Committed, now: u64) -> Self {
        let mut s = Self {
            security_floor: committed.security_version,
            trial: None,
            failed: Vec::new(),
            events: Vec::new(),
            committed,
        };
        s.record(Event {
            kind: EventKind::Initialised,
            at_unix: now,
            slot: s.committed.slot,
            version: s.committed.version.clone(),
            from_version: None,
            rollback: None,
            degraded: None,
            forced: false,
        });
        s
    }

    /// The slot a boot would choose now (before fallbacks): the trial's, else the committed one.
    #[must_use]
    pub fn intended_slot(&self) -> Slot {
        self.trial.as_ref().map_or(self.committed.slot, |t| t.slot)
    }

    /// Appends an event, dropping the oldest beyond [`MAX_EVENTS`].
    pub(crate) fn record(&mut self, event: Event) {
        self.events.push(event);
        let excess = self.events.len().saturating_sub(MAX_EVENTS);
        self.events.drain(..excess);
    }
}

/// What the caller asks of a trial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrialRequest {
    /// The version installed in the inactive slot.
    pub version: String,
    /// Its security version (from the verified bundle).
    pub security_version: u64,
    /// Trial boots allowed (at least 1).
    pub max_boots: u32,
    /// Seconds allowed for the health check to pass (at least 1).
    pub deadline_s: u64,
    /// Try a version that already failed trial. Off unless an operator asks.
    pub force: bool,
}

/// What the launcher should run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootDecision {
    /// The slot to run.
    pub slot: Slot,
    /// Its folder.
    pub path: PathBuf,
    /// Whether this is a trial boot (run the health check, then commit or roll back).
    pub trial: bool,
    /// Set when this boot ended a trial.
    pub rolled_back: Option<RollbackReason>,
    /// Set when the slot chosen is not the one that should have run, with why.
    pub degraded: Option<DegradedReason>,
}

/// The device's clock in Unix seconds (injected so tests control time).
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The system clock.
#[must_use]
pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    })
}

/// The boot-state machine's storage: every back end (folders, U-Boot, later GRUB or RAUC) keeps
/// the same contract, described in the module documentation.
pub trait BootControl {
    /// The boot state as stored now.
    fn state(&self) -> Result<BootState>;

    /// Empties the inactive slot (never following symbolic links out of it) and returns its
    /// folder. Refused while a trial is in progress.
    fn prepare_inactive(&mut self) -> Result<PathBuf>;

    /// Switches to the inactive slot on trial, recording the trial atomically. Refuses a version
    /// that failed trial before (unless `force`), a security version below the floor, an empty
    /// slot, or a second trial.
    fn begin_trial(&mut self, request: &TrialRequest) -> Result<Trial>;

    /// Called once at every start: counts a trial boot (persisted before returning), ends an
    /// exhausted or expired trial, and chooses what to run. Writes nothing when no trial runs.
    fn boot(&mut self) -> Result<BootDecision>;

    /// The health check passed: the trial slot becomes committed and the security version floor
    /// rises to the bundle's. Refused with no trial, before the trial slot was booted, or after
    /// its time limit.
    fn commit(&mut self) -> Result<BootState>;

    /// Ends the trial without committing: the committed slot runs again and the version is
    /// recorded as failed.
    fn rollback(&mut self, reason: RollbackReason) -> Result<BootState>;

    /// Goes back to the release in the other slot (an operator's rollback after a commit, or
    /// the integrity response): refused while a trial runs, when that slot is not runnable, or
    /// when `security_version` — read by the caller from that slot's verified manifest — is
    /// below the floor.
    fn revert(&mut self, version: &str, security_version: u64) -> Result<BootState>;

    /// Whether `slot` holds a runnable kawal.
    fn is_runnable(&self, slot: Slot) -> bool;

    /// The folder of `slot`.
    fn slot_path(&self, slot: Slot) -> PathBuf;

    /// The highest committed security version (the anti-rollback floor; never lowered).
    fn installed_security_version(&self) -> Result<u64> {
        self.state().map(|s| s.security_floor)
    }

    /// The slot the next boot would choose, before fallbacks.
    fn active_slot(&self) -> Result<Slot> {
        self.state().map(|s| s.intended_slot())
    }
}
