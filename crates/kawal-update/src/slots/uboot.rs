//! The boot state kept in a U-Boot environment (`fw_setenv` format, see [`super::ubootenv`]).
//!
//! The boot loader's part is written as RAUC's U-Boot integration names it: `BOOT_ORDER` (the
//! slot tried first, then the other), `BOOT_A_LEFT`/`BOOT_B_LEFT` (tries left), plus U-Boot's
//! `upgrade_available`, `bootcount` and `bootlimit`. The counting rule is kawal's: `bootcount`
//! moves only while `upgrade_available=1` (a trial), so normal boots write nothing. What the
//! boot loader variables cannot hold (versions, security versions, time limit, failed versions,
//! events) lives in `kawal_*` variables of the same block, so one write changes all of it.
//!
//! Variables of the boot loader's own (`bootcmd`, `bootargs`, …) are kept as they are.

use std::path::PathBuf;
use std::sync::Arc;

use super::durable::{Durable, FsDurable, write_in_place};
use super::error::EnvProblem;
use super::machine::{self, Backend};
use super::ubootenv::{self, Block, Layout, Vars};
use super::{BootState, Clock, Committed, Error, Event, Result, Slot, Trial, system_clock};

const COMMITTED: &str = "kawal_committed";
const VERSION: &str = "kawal_version";
const SECVER: &str = "kawal_secver";
const FLOOR: &str = "kawal_secver_floor";
const TRIAL_VERSION: &str = "kawal_trial_version";
const TRIAL_SECVER: &str = "kawal_trial_secver";
const TRIAL_STARTED: &str = "kawal_trial_started";
const TRIAL_DEADLINE: &str = "kawal_trial_deadline";
const FAILED: &str = "kawal_failed";
const EVENTS: &str = "kawal_events";
const TRIAL_VARS: [&str; 4] = [TRIAL_VERSION, TRIAL_SECVER, TRIAL_STARTED, TRIAL_DEADLINE];

/// Where the environment and the slots are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UbootConfig {
    /// One path (single environment) or two (redundant environment), as in `/etc/fw_env.config`.
    pub env: Vec<PathBuf>,
    /// The environment size in bytes (the same for both copies).
    pub env_size: usize,
    /// The folders of slots A and B, in that order.
    pub slots: [PathBuf; 2],
    /// `BOOT_x_LEFT` given to the committed slot.
    pub committed_tries: u32,
}

/// The U-Boot environment back end of [`BootControl`].
#[derive(Clone)]
pub struct UbootEnv {
    cfg: UbootConfig,
    durable: Arc<dyn Durable>,
    clock: Clock,
}

impl std::fmt::Debug for UbootEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UbootEnv")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

/// The environment as read: its variables and, for the redundant layout, the active copy.
struct Loaded {
    vars: Vars,
    active: Option<(usize, u8)>,
}

impl UbootEnv {
    /// The environment described by `cfg`, on the real file system and clock.
    pub fn new(cfg: UbootConfig) -> Result<Self> {
        if cfg.env.is_empty() || cfg.env.len() > 2 || cfg.committed_tries == 0 {
            return Err(Error::ApiMisuse {
                what: "a U-Boot environment has one or two copies and at least one try",
            });
        }
        Ok(Self {
            cfg,
            durable: Arc::new(FsDurable),
            clock: system_clock(),
        })
    }

    /// Uses `durable` for the environment (tests inject power cuts and torn writes here).
    #[must_use]
    pub fn with_durable(mut self, durable: Arc<dyn Durable>) -> Self {
        self.durable = durable;
        self
    }

    /// Uses `clock` for time limits and event times.
    #[must_use]
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    fn layout(&self) -> Layout {
        if self.cfg.env.len() == 2 {
            Layout::Redundant
        } else {
            Layout::Single
        }
    }

    /// Writes a fresh environment (every copy): `base` (the boot loader's own variables) plus the
    /// first boot state, `slot` holding `version`.
    pub fn initialise(
        &mut self,
        base: &Vars,
        slot: Slot,
        version: &str,
        security_version: u64,
    ) -> Result<BootState> {
        let committed = Committed {
            slot,
            version: version.to_owned(),
            security_version,
        };
        let state = BootState::new(committed, (self.clock)());
        let vars = self.vars_for_state(base, &state)?;
        let layout = self.layout();
        for (i, path) in self.cfg.env.iter().enumerate() {
            // The first copy starts active (flag 1), the second obsolete (flag 0).
            let flag = u8::from(i == 0);
            let bytes = ubootenv::serialise(&vars, flag, self.cfg.env_size, layout, 0)
                .map_err(|p| Error::env(path, p))?;
            write_in_place(self.durable.as_ref(), path, &bytes).map_err(|e| Error::io(path, e))?;
        }
        Ok(state)
    }

    /// The variables of the active copy.
    pub fn vars(&self) -> Result<Vars> {
        self.load_env().map(|l| l.vars)
    }

    fn load_env(&self) -> Result<Loaded> {
        let layout = self.layout();
        let mut blocks: Vec<Option<Block>> = Vec::new();
        let mut any = false;
        for path in &self.cfg.env {
            let bytes = self.durable.read(path).map_err(|e| Error::io(path, e))?;
            any |= bytes.is_some();
            blocks.push(bytes.and_then(|b| {
                ubootenv::parse(&b, self.cfg.env_size, layout)
                    .inspect_err(
                        |p| tracing::warn!(?path, problem = %p, "environment copy unusable"),
                    )
                    .ok()
            }));
        }
        let first = self.cfg.env.first().cloned().unwrap_or_default();
        if !any {
            return Err(Error::NotInitialised { root: first });
        }
        let pick = match layout {
            Layout::Single => blocks.first().and_then(Option::as_ref).map(|_| 0),
            Layout::Redundant => ubootenv::active_copy(
                blocks.first().and_then(Option::as_ref),
                blocks.get(1).and_then(Option::as_ref),
            ),
        };
        let index = pick.ok_or_else(|| Error::env(&first, EnvProblem::NoValidCopy))?;
        let block = blocks
            .get_mut(index)
            .and_then(Option::take)
            .ok_or_else(|| Error::env(&first, EnvProblem::NoValidCopy))?;
        Ok(Loaded {
            active: (layout == Layout::Redundant).then_some((index, block.flag)),
            vars: block.vars,
        })
    }

    /// `base` with the variables describing `state`. Oldest events are dropped until it fits.
    fn vars_for_state(&self, base: &Vars, state: &BootState) -> Result<Vars> {
        let mut vars = base.clone();
        let c = &state.committed;
        let (first, left) = match &state.trial {
            Some(t) => (t.slot, t.max_boots.saturating_sub(t.boots_used)),
            None => (c.slot, self.cfg.committed_tries),
        };
        let mut set = |k: &str, v: String| {
            vars.insert(k.to_owned(), v);
        };
        set("BOOT_ORDER", format!("{first} {}", first.other()));
        set(&format!("BOOT_{first}_LEFT"), left.to_string());
        let second_left = if state.trial.is_some() {
            self.cfg.committed_tries
        } else {
            0
        };
        set(
            &format!("BOOT_{}_LEFT", first.other()),
            second_left.to_string(),
        );
        set(COMMITTED, c.slot.name().to_owned());
        set(VERSION, c.version.clone());
        set(SECVER, c.security_version.to_string());
        set(FLOOR, state.security_floor.to_string());
        set(FAILED, json(&state.failed)?);
        match &state.trial {
            Some(t) => {
                set("upgrade_available", "1".to_owned());
                set("bootcount", t.boots_used.to_string());
                set("bootlimit", t.max_boots.to_string());
                set(TRIAL_VERSION, t.version.clone());
                set(TRIAL_SECVER, t.security_version.to_string());
                set(TRIAL_STARTED, t.started_at_unix.to_string());
                set(TRIAL_DEADLINE, t.deadline_s.to_string());
            }
            None => {
                set("upgrade_available", "0".to_owned());
                set("bootcount", "0".to_owned());
                for k in TRIAL_VARS {
                    vars.remove(k);
                }
            }
        }
        let layout = self.layout();
        let path = self.cfg.env.first().cloned().unwrap_or_default();
        let mut skip = 0;
        loop {
            let events: &[Event] = state.events.get(skip..).unwrap_or_default();
            vars.insert(EVENTS.to_owned(), json(events)?);
            match ubootenv::serialise(&vars, 0, self.cfg.env_size, layout, 0) {
                Ok(_) => return Ok(vars),
                Err(EnvProblem::TooLarge { .. }) if skip < state.events.len() => skip += 1,
                Err(p) => return Err(Error::env(path, p)),
            }
        }
    }

    /// The boot state the variables describe.
    fn state_from_vars(&self, vars: &Vars) -> Result<BootState> {
        let path = self.cfg.env.first().cloned().unwrap_or_default();
        let bad = |what: &'static str| Error::env(&path, EnvProblem::Inconsistent { what });
        let get = |k: &str| vars.get(k).map(String::as_str);
        let num = |k: &str, what| {
            get(k)
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| bad(what))
        };
        let slot = get(COMMITTED)
            .and_then(Slot::from_name)
            .ok_or_else(|| bad("kawal_committed is not A or B"))?;
        let committed = Committed {
            slot,
            version: get(VERSION)
                .ok_or_else(|| bad("kawal_version missing"))?
                .to_owned(),
            security_version: num(SECVER, "kawal_secver")?,
        };
        let trial = match get(TRIAL_VERSION) {
            None => None,
            Some(version) => {
                let count = |k: &str| -> Result<u32> {
                    u32::try_from(num(k, "bootcount or bootlimit")?).map_err(|_| bad("count"))
                };
                let max_boots = count("bootlimit")?;
                let mut boots_used = count("bootcount")?;
                if get("upgrade_available") != Some("1") {
                    // The boot loader ended the trial itself (bootcount passed bootlimit and
                    // altbootcmd ran): the next boot records it as exhausted.
                    boots_used = boots_used.max(max_boots);
                }
                Some(Trial {
                    slot: slot.other(),
                    version: version.to_owned(),
                    security_version: num(TRIAL_SECVER, "kawal_trial_secver")?,
                    boots_used,
                    max_boots,
                    started_at_unix: num(TRIAL_STARTED, "kawal_trial_started")?,
                    deadline_s: num(TRIAL_DEADLINE, "kawal_trial_deadline")?,
                })
            }
        };
        let parse_json = |k: &str, what| {
            get(k).map_or(Ok(Vec::new()), |v| {
                serde_json::from_str(v).map_err(|_| bad(what))
            })
        };
        Ok(BootState {
            committed,
            security_floor: num(FLOOR, "kawal_secver_floor")?,
            trial,
            failed: parse_json(FAILED, "kawal_failed")?,
            events: get(EVENTS).map_or(Ok(Vec::new()), |v| {
                serde_json::from_str(v).map_err(|_| bad("kawal_events"))
            })?,
        })
    }
}

fn json<T: serde::Serialize + ?Sized>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|_| Error::ApiMisuse {
        what: "boot state not serialisable",
    })
}

impl Backend for UbootEnv {
    fn load(&self) -> Result<BootState> {
        let loaded = self.load_env()?;
        self.state_from_vars(&loaded.vars)
    }

    fn store(&mut self, next: &BootState) -> Result<()> {
        let loaded = self.load_env()?;
        let vars = self.vars_for_state(&loaded.vars, next)?;
        let (index, flag) = match loaded.active {
            // Write the obsolete copy with the next flag; the active one stays intact.
            Some((i, f)) => (1 - i.min(1), f.wrapping_add(1)),
            None => (0, 0),
        };
        let path = self.cfg.env.get(index).ok_or(Error::ApiMisuse {
            what: "a U-Boot environment has one or two copies",
        })?;
        let bytes = ubootenv::serialise(&vars, flag, self.cfg.env_size, self.layout(), 0)
            .map_err(|p| Error::env(path, p))?;
        write_in_place(self.durable.as_ref(), path, &bytes).map_err(|e| Error::io(path, e))
    }

    fn now(&self) -> u64 {
        (self.clock)()
    }

    fn slot_dir(&self, slot: Slot) -> PathBuf {
        let [a, b] = &self.cfg.slots;
        match slot {
            Slot::A => a.clone(),
            Slot::B => b.clone(),
        }
    }
}

machine::boot_control_over_backend!(UbootEnv);
