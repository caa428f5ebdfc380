//! A/B slots, trial boot and automatic rollback (G045 PL-2-2; ST-D-13, ST-D-14, ST-D-16).
//!
//! Every test drives a real back end on real state. The boot-state record goes through
//! `PowerCutFs`, a storage shim that models a page cache: a write is durable only once its data
//! and the folder naming it were synced, and a power cut drops everything else (or, in torn mode,
//! keeps half of an in-place overwrite).

#![allow(
    clippy::expect_used,
    clippy::panic,
    clippy::unwrap_used,
    reason = "test code: a failed expectation is the test failing"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use kawal_update::slots::durable::{Durable, FsDurable};
use kawal_update::slots::ubootenv::{self, Layout, Vars};
use kawal_update::slots::{
    BootControl, BootState, DegradedReason, DirSlots, EnvProblem, Error, EventKind, MAX_EVENTS,
    MAX_FAILED, RollbackReason, SLOT_EXECUTABLE, Slot, TrialRequest, UbootConfig, UbootEnv, grub,
};

// ---------------------------------------------------------------------------------------------
// The storage shim.

#[derive(Debug, Default)]
struct Inode {
    volatile: Vec<u8>,
    durable: Option<Vec<u8>>,
}

#[derive(Debug, Default)]
struct Disk {
    inodes: Vec<Inode>,
    names: BTreeMap<PathBuf, usize>,
    durable_names: BTreeMap<PathBuf, usize>,
    ops: u64,
    cut_before: Option<u64>,
    dead: bool,
    torn: bool,
}

/// A file system in memory whose power can be cut before any chosen mutating operation.
#[derive(Debug, Default)]
struct PowerCutFs(Mutex<Disk>);

impl PowerCutFs {
    fn torn() -> Self {
        let fs = Self::default();
        fs.0.lock().unwrap().torn = true;
        fs
    }

    /// The power goes off just before mutating operation number `n` (counted from now).
    fn cut_before(&self, n: u64) {
        let mut d = self.0.lock().unwrap();
        d.cut_before = Some(d.ops + n);
    }

    /// Whether the power went off.
    fn was_cut(&self) -> bool {
        self.0.lock().unwrap().dead
    }

    fn mutations(&self) -> u64 {
        self.0.lock().unwrap().ops
    }

    /// Power comes back: only what was synced survives.
    fn restart(&self) {
        let mut d = self.0.lock().unwrap();
        d.names = d.durable_names.clone();
        let torn = d.torn;
        for inode in &mut d.inodes {
            inode.volatile = match &inode.durable {
                None => Vec::new(),
                Some(old)
                    if torn && *old != inode.volatile && old.len() == inode.volatile.len() =>
                {
                    // The write stopped half-way through the bytes that change: the first part
                    // of the new block reached the medium, the rest is still the old block.
                    let differs = |i: &usize| old[*i] != inode.volatile[*i];
                    let first = (0..old.len()).find(differs).unwrap_or(0);
                    let last = (0..old.len()).rev().find(differs).unwrap_or(0);
                    let cut = first + (last - first).div_ceil(2);
                    let mut mixed = inode.volatile[..cut].to_vec();
                    mixed.extend_from_slice(&old[cut..]);
                    mixed
                }
                Some(old) => old.clone(),
            };
        }
        d.dead = false;
        d.cut_before = None;
    }

    fn step(&self) -> io::Result<std::sync::MutexGuard<'_, Disk>> {
        let mut d = self.0.lock().unwrap();
        if d.dead || d.cut_before == Some(d.ops) {
            d.dead = true;
            return Err(io::Error::other("power cut"));
        }
        d.ops += 1;
        Ok(d)
    }
}

impl Durable for PowerCutFs {
    fn read(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        let d = self.0.lock().unwrap();
        if d.dead {
            return Err(io::Error::other("power cut"));
        }
        Ok(d.names.get(path).map(|&i| d.inodes[i].volatile.clone()))
    }

    fn write(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let mut d = self.step()?;
        match d.names.get(path).copied() {
            Some(i) => d.inodes[i].volatile = bytes.to_vec(),
            None => {
                d.inodes.push(Inode {
                    volatile: bytes.to_vec(),
                    durable: None,
                });
                let i = d.inodes.len() - 1;
                d.names.insert(path.to_path_buf(), i);
            }
        }
        Ok(())
    }

    fn sync_file(&self, path: &Path) -> io::Result<()> {
        let mut d = self.step()?;
        let i = *d.names.get(path).ok_or(io::ErrorKind::NotFound)?;
        d.inodes[i].durable = Some(d.inodes[i].volatile.clone());
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut d = self.step()?;
        let i = d.names.remove(from).ok_or(io::ErrorKind::NotFound)?;
        d.names.insert(to.to_path_buf(), i);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut d = self.step()?;
        d.durable_names.retain(|p, _| p.parent() != Some(dir));
        let entries: Vec<_> = d
            .names
            .iter()
            .filter(|(p, _)| p.parent() == Some(dir))
            .map(|(p, &i)| (p.clone(), i))
            .collect();
        d.durable_names.extend(entries);
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// A device.

const T0: u64 = 1_800_000_000;

struct Rig {
    dir: tempfile::TempDir,
    fs: Arc<PowerCutFs>,
    clock: Arc<AtomicU64>,
}

impl Rig {
    /// Slot A committed with version 1.0.0 (security version 1) and a runnable kawal.
    fn new() -> Self {
        Self::with_fs(PowerCutFs::default())
    }

    fn with_fs(fs: PowerCutFs) -> Self {
        let rig = Self {
            dir: tempfile::tempdir().unwrap(),
            fs: Arc::new(fs),
            clock: Arc::new(AtomicU64::new(T0)),
        };
        rig.slots().initialise(Slot::A, "1.0.0", 1).unwrap();
        install(&rig.slots().slot_path(Slot::A));
        rig
    }

    /// A fresh handle, as after a restart.
    fn slots(&self) -> DirSlots {
        let clock = Arc::clone(&self.clock);
        DirSlots::open(self.dir.path())
            .with_durable(self.fs.clone())
            .with_clock(Arc::new(move || clock.load(Ordering::SeqCst)))
    }

    fn advance(&self, s: u64) {
        self.clock.fetch_add(s, Ordering::SeqCst);
    }

    /// Installs `version` into the inactive slot and starts its trial.
    fn trial(&self, version: &str, security_version: u64, max_boots: u32) {
        let mut s = self.slots();
        let dir = s.prepare_inactive().unwrap();
        install(&dir);
        s.begin_trial(&request(version, security_version, max_boots))
            .unwrap();
    }
}

fn install(dir: &Path) {
    fs::create_dir_all(dir.join("payload")).unwrap();
    let exe = dir.join(SLOT_EXECUTABLE);
    fs::write(&exe, b"#!/bin/sh\n").unwrap();
    fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
}

fn request(version: &str, security_version: u64, max_boots: u32) -> TrialRequest {
    TrialRequest {
        version: version.to_owned(),
        security_version,
        max_boots,
        deadline_s: 3600,
        force: false,
    }
}

fn kinds(state: &BootState) -> Vec<EventKind> {
    state.events.iter().map(|e| e.kind).collect()
}

/// A tiny deterministic generator, so a failure replays.
fn lcg(seed: &mut u64) -> u64 {
    *seed = seed
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    *seed >> 33
}

// ---------------------------------------------------------------------------------------------
// The cycle.

/// G045: PL-2-2
/// Install into the inactive slot, boot it on trial, commit: the new slot is committed and the
/// security version floor rises.
#[test]
fn full_cycle_installs_trials_and_commits() {
    let rig = Rig::new();
    let mut s = rig.slots();
    let inactive = s.prepare_inactive().unwrap();
    assert_eq!(inactive, s.slot_path(Slot::B));
    install(&inactive);
    let trial = s.begin_trial(&request("2.0.0", 2, 3)).unwrap();
    assert_eq!((trial.slot, trial.boots_used), (Slot::B, 0));
    assert_eq!(s.active_slot().unwrap(), Slot::B);
    assert_eq!(s.installed_security_version().unwrap(), 1);

    let mut s = rig.slots();
    let d = s.boot().unwrap();
    assert_eq!((d.slot, d.trial, d.degraded), (Slot::B, true, None));
    assert_eq!(d.path, s.slot_path(Slot::B));
    assert_eq!(s.state().unwrap().trial.unwrap().boots_used, 1);

    let after = s.commit().unwrap();
    assert_eq!(after.committed.slot, Slot::B);
    assert_eq!(after.committed.version, "2.0.0");
    assert_eq!(after.trial, None);
    assert_eq!(s.installed_security_version().unwrap(), 2);
    assert_eq!(s.state().unwrap(), after);

    let d = rig.slots().boot().unwrap();
    assert_eq!((d.slot, d.trial), (Slot::B, false));
    assert_eq!(
        kinds(&after),
        [
            EventKind::Initialised,
            EventKind::TrialStarted,
            EventKind::TrialBoot,
            EventKind::Committed
        ]
    );
    // The next update goes to the slot that is now inactive.
    assert_eq!(
        rig.slots().prepare_inactive().unwrap(),
        s.slot_path(Slot::A)
    );
}

/// G045: PL-2-2
/// A trial that never becomes healthy ends after `max_boots` trial boots: the committed slot
/// comes back by itself and the version is recorded as failed.
#[test]
fn unhealthy_trial_rolls_back_after_max_boots() {
    let rig = Rig::new();
    rig.trial("2.0.0", 2, 3);
    for n in 1..=3 {
        let d = rig.slots().boot().unwrap();
        assert_eq!(
            (d.slot, d.trial, d.rolled_back),
            (Slot::B, true, None),
            "boot {n}"
        );
    }
    let d = rig.slots().boot().unwrap();
    assert_eq!(d.slot, Slot::A);
    assert!(!d.trial);
    assert_eq!(d.rolled_back, Some(RollbackReason::BootsExhausted));

    let st = rig.slots().state().unwrap();
    assert_eq!(st.trial, None);
    assert_eq!(
        (st.committed.slot, st.committed.version.as_str()),
        (Slot::A, "1.0.0")
    );
    assert_eq!(st.failed, ["2.0.0"]);
    let last = st.events.last().unwrap();
    assert_eq!(last.kind, EventKind::RolledBack);
    assert_eq!(last.rollback, Some(RollbackReason::BootsExhausted));
    assert_eq!(last.version, "2.0.0");
    assert_eq!(last.from_version.as_deref(), Some("1.0.0"));

    // Back to normal: boots write nothing any more.
    let before = rig.fs.mutations();
    assert_eq!(rig.slots().boot().unwrap().slot, Slot::A);
    assert_eq!(rig.fs.mutations(), before);
}

/// G045: PL-2-2
/// A trial boot that cannot be recorded (storage failing) is not run: an uncounted trial could
/// crash the device forever. The committed slot runs instead, and the count is unchanged.
#[test]
fn uncountable_trial_boot_runs_the_committed_slot() {
    let rig = Rig::new();
    rig.trial("2.0.0", 2, 3);
    let before = rig.slots().state().unwrap();
    rig.fs.cut_before(0);
    let d = rig.slots().boot().unwrap();
    assert_eq!((d.slot, d.trial), (Slot::A, false));
    assert_eq!(d.degraded, Some(DegradedReason::StateUnwritable));
    rig.fs.restart();
    assert_eq!(rig.slots().state().unwrap(), before);
}

/// G045: PL-2-2
/// A trial whose health check does not pass in time is refused a commit and rolled back at the
/// next boot.
#[test]
fn trial_past_its_deadline_rolls_back() {
    let rig = Rig::new();
    rig.trial("2.0.0", 2, 10);
    assert_eq!(rig.slots().boot().unwrap().slot, Slot::B);
    rig.advance(3601);
    assert!(matches!(
        rig.slots().commit(),
        Err(Error::TrialExpired { .. })
    ));
    let d = rig.slots().boot().unwrap();
    assert_eq!(
        (d.slot, d.rolled_back),
        (Slot::A, Some(RollbackReason::DeadlinePassed))
    );
    assert_eq!(rig.slots().state().unwrap().committed.slot, Slot::A);
}

/// G045: PL-2-2
/// A clock that jumps back (RTC reset) never ends a trial by time; the boot limit still does.
#[test]
fn clock_going_backwards_does_not_end_or_extend_a_trial() {
    let rig = Rig::new();
    rig.trial("2.0.0", 2, 2);
    rig.clock.store(0, Ordering::SeqCst);
    assert_eq!(rig.slots().boot().unwrap().slot, Slot::B);
    assert_eq!(rig.slots().boot().unwrap().slot, Slot::B);
    assert_eq!(
        rig.slots().boot().unwrap().rolled_back,
        Some(RollbackReason::BootsExhausted)
    );
}

/// G045: PL-2-2
/// The health check reports a failure: explicit rollback, recorded as failed.
#[test]
fn failed_health_check_rolls_back() {
    let rig = Rig::new();
    rig.trial("2.0.0", 2, 3);
    rig.slots().boot().unwrap();
    let st = rig
        .slots()
        .rollback(RollbackReason::HealthCheckFailed)
        .unwrap();
    assert_eq!((st.committed.slot, st.trial.is_none()), (Slot::A, true));
    assert_eq!(st.failed, ["2.0.0"]);
    assert_eq!(rig.slots().boot().unwrap().slot, Slot::A);
    assert!(matches!(
        rig.slots().rollback(RollbackReason::Operator),
        Err(Error::NoTrial)
    ));
}

/// G045: PL-2-2
/// 1,000 normal boots, each cut short at a random point: nothing is ever written, so the
/// committed slot and the whole state never change.
#[test]
fn power_cuts_during_normal_boots_never_change_anything() {
    let rig = Rig::new();
    rig.trial("2.0.0", 2, 3);
    rig.slots().boot().unwrap();
    rig.slots().commit().unwrap();
    let baseline = rig.slots().state().unwrap();
    let writes = rig.fs.mutations();
    let mut seed = 7;
    for i in 0..1000 {
        rig.fs.cut_before(lcg(&mut seed) % 4);
        let d = rig.slots().boot();
        rig.fs.restart();
        if let Ok(d) = d {
            assert_eq!((d.slot, d.trial), (Slot::B, false), "boot {i}");
        }
        assert_eq!(rig.slots().state().unwrap(), baseline, "boot {i}");
    }
    assert_eq!(rig.fs.mutations(), writes, "a normal boot wrote something");
}

/// G045: PL-2-2
/// A version that failed trial is not tried again unless forced; a forced retry is recorded,
/// and a commit clears the failure.
#[test]
fn failed_version_is_refused_unless_forced() {
    let rig = Rig::new();
    rig.trial("2.0.0", 2, 1);
    rig.slots().boot().unwrap();
    rig.slots().boot().unwrap(); // exhausted: rolled back
    let mut s = rig.slots();
    assert!(matches!(
        s.begin_trial(&request("2.0.0", 2, 1)),
        Err(Error::PreviouslyFailed { version }) if version == "2.0.0"
    ));
    assert_eq!(s.state().unwrap().trial, None, "a refusal wrote a trial");
    let forced = TrialRequest {
        force: true,
        ..request("2.0.0", 2, 1)
    };
    s.begin_trial(&forced).unwrap();
    assert!(s.state().unwrap().events.last().unwrap().forced);
    s.boot().unwrap();
    let st = s.commit().unwrap();
    assert!(st.failed.is_empty());
    assert_eq!(st.committed.version, "2.0.0");
}

/// G045: PL-2-2
/// The security version floor never goes down: lower bundles are refused, a rolled-back trial
/// does not raise it, an equal one is accepted.
#[test]
fn security_version_floor_is_never_lowered() {
    let rig = Rig::new();
    rig.trial("2.0.0", 5, 3);
    rig.slots().boot().unwrap();
    rig.slots().commit().unwrap();
    assert_eq!(rig.slots().installed_security_version().unwrap(), 5);

    let mut s = rig.slots();
    install(&s.prepare_inactive().unwrap());
    assert!(matches!(
        s.begin_trial(&request("1.9.0", 4, 3)),
        Err(Error::SecurityVersionTooLow {
            offered: 4,
            installed: 5
        })
    ));
    s.begin_trial(&request("3.0.0", 9, 3)).unwrap();
    s.rollback(RollbackReason::Operator).unwrap();
    assert_eq!(s.installed_security_version().unwrap(), 5);

    s.begin_trial(&request("2.0.1", 5, 3)).unwrap();
    s.boot().unwrap();
    s.commit().unwrap();
    assert_eq!(s.installed_security_version().unwrap(), 5);
}

/// G045: PL-2-2
/// Commit only after the trial slot really booted; a second trial, or preparing the slot on
/// trial, is refused; an empty slot cannot go on trial.
#[test]
fn misuse_is_refused_without_writing() {
    let rig = Rig::new();
    let mut s = rig.slots();
    assert!(matches!(s.commit(), Err(Error::NoTrial)));
    s.prepare_inactive().unwrap();
    assert!(matches!(
        s.begin_trial(&request("2.0.0", 2, 3)),
        Err(Error::SlotNotRunnable { slot: Slot::B, .. })
    ));
    assert!(matches!(
        s.begin_trial(&request("2.0.0", 2, 0)),
        Err(Error::ApiMisuse { .. })
    ));
    install(&s.slot_path(Slot::B));
    s.begin_trial(&request("2.0.0", 2, 3)).unwrap();
    let st = s.state().unwrap();
    assert!(matches!(s.commit(), Err(Error::TrialNotBooted { .. })));
    assert!(matches!(
        s.begin_trial(&request("2.1.0", 2, 3)),
        Err(Error::TrialInProgress { .. })
    ));
    assert!(matches!(
        s.prepare_inactive(),
        Err(Error::TrialInProgress { .. })
    ));
    assert!(
        s.slot_path(Slot::B).join(SLOT_EXECUTABLE).exists(),
        "slot on trial emptied"
    );
    assert_eq!(s.state().unwrap(), st);
}

/// G045: PL-2-2
/// History and failed versions stay bounded however many updates fail.
#[test]
fn history_and_failures_stay_bounded() {
    let rig = Rig::new();
    for i in 0..40 {
        rig.trial(&format!("2.0.{i}"), 2, 1);
        rig.slots().boot().unwrap();
        rig.slots().boot().unwrap();
    }
    let st = rig.slots().state().unwrap();
    assert_eq!(st.events.len(), MAX_EVENTS);
    assert_eq!(st.failed.len(), MAX_FAILED);
    assert_eq!(st.failed.last().unwrap(), "2.0.39");
    assert_eq!(st.events.last().unwrap().kind, EventKind::RolledBack);
}

// ---------------------------------------------------------------------------------------------
// Durability.

/// Runs `op` with the power cut before each mutating step in turn, and checks that after every
/// cut the state reads as the one before or the one after, never torn, and still boots.
fn cut_at_every_step(
    name: &str,
    setup: &dyn Fn(&Rig),
    op: &dyn Fn(&mut DirSlots),
    torn: bool,
) -> u64 {
    let mut seen = BTreeSet::new();
    let mut old = None;
    for n in 0.. {
        let rig = Rig::with_fs(if torn {
            PowerCutFs::torn()
        } else {
            PowerCutFs::default()
        });
        setup(&rig);
        let before = rig.slots().state().unwrap();
        assert!(old.get_or_insert_with(|| before.clone()) == &before);
        rig.fs.cut_before(n);
        op(&mut rig.slots());
        let cut = rig.fs.was_cut();
        // Power off and on in every case: once the operation returned, its result must survive.
        rig.fs.restart();
        let after = rig
            .slots()
            .state()
            .unwrap_or_else(|e| panic!("{name}: cut before step {n}: state unreadable: {e}"));
        let d = rig.slots().boot().unwrap();
        assert_eq!(d.degraded, None, "{name}: step {n}");
        assert!(rig.slots().is_runnable(d.slot));
        if !cut {
            seen.insert(format!("{after:?}"));
            let (old, new) = (old.unwrap(), after);
            assert_ne!(old, new, "{name}: the operation changed nothing");
            for s in &seen {
                assert!(
                    *s == format!("{old:?}") || *s == format!("{new:?}"),
                    "{name}: a cut left a third state: {s}"
                );
            }
            return n;
        }
        seen.insert(format!("{after:?}"));
    }
    unreachable!()
}

/// G045: PL-2-2
/// Power cut before every durable step of begin_trial, boot, commit and rollback (and in torn
/// mode): the state always reads as the old or the new one, and the device always boots.
#[test]
fn state_cut_at_every_durable_step_reads_old_or_new() {
    let installed = |r: &Rig| install(&r.slots().prepare_inactive().unwrap());
    let on_trial = |r: &Rig| r.trial("2.0.0", 2, 2);
    let booted = |r: &Rig| {
        r.trial("2.0.0", 2, 2);
        r.slots().boot().unwrap();
    };
    let exhausted = |r: &Rig| {
        r.trial("2.0.0", 2, 2);
        r.slots().boot().unwrap();
        r.slots().boot().unwrap();
    };
    for torn in [false, true] {
        let steps = [
            cut_at_every_step(
                "begin_trial",
                &installed,
                &|s| drop(s.begin_trial(&request("2.0.0", 2, 2))),
                torn,
            ),
            cut_at_every_step("trial boot", &on_trial, &|s| drop(s.boot()), torn),
            cut_at_every_step("rolling-back boot", &exhausted, &|s| drop(s.boot()), torn),
            cut_at_every_step("commit", &booted, &|s| drop(s.commit()), torn),
            cut_at_every_step(
                "rollback",
                &booted,
                &|s| drop(s.rollback(RollbackReason::HealthCheckFailed)),
                torn,
            ),
        ];
        // write temp, sync it, rename, sync the folder: four cut points each.
        assert_eq!(steps, [4; 5]);
    }
}

fn flip_byte(path: &Path, at: usize) {
    let mut b = fs::read(path).unwrap();
    let i = at.min(b.len() - 1);
    b[i] ^= 0x20;
    fs::write(path, b).unwrap();
}

/// A device on the real file system.
fn real_device() -> (tempfile::TempDir, DirSlots) {
    let dir = tempfile::tempdir().unwrap();
    let mut s = DirSlots::open(dir.path());
    s.initialise(Slot::A, "1.0.0", 1).unwrap();
    install(&s.slot_path(Slot::A));
    (dir, s)
}

/// G045: PL-2-2
/// One corrupt copy: the other is used, and the next write replaces the corrupt one, never the
/// good one.
#[test]
fn corrupt_copy_is_ignored_and_replaced() {
    let (_dir, mut s) = real_device();
    let [c0, c1] = s.record_paths();
    let initial = s.state().unwrap();
    install(&s.prepare_inactive().unwrap());
    s.begin_trial(&request("2.0.0", 2, 3)).unwrap();
    let on_trial = s.state().unwrap();
    assert!(c1.exists(), "the second write goes to the second copy");

    // The newest copy corrupt: the older state comes back, intact.
    let good = fs::read(&c1).unwrap();
    flip_byte(&c1, 200);
    assert_eq!(s.state().unwrap(), initial);
    fs::write(&c1, &good).unwrap();

    // The older copy corrupt: the newest is used; the next write goes over the corrupt one.
    flip_byte(&c0, 10);
    assert_eq!(s.state().unwrap(), on_trial);
    s.boot().unwrap();
    assert_eq!(
        fs::read(&c1).unwrap(),
        good,
        "the good copy was overwritten"
    );
    let booted = s.state().unwrap();
    assert_eq!(booted.trial.as_ref().unwrap().boots_used, 1);
    // Both copies valid again: corrupting the one just written falls back one step only.
    flip_byte(&c0, 10);
    assert_eq!(s.state().unwrap(), on_trial);
}

/// G045: PL-2-2
/// Both copies corrupt: reported clearly, nothing deleted or rewritten, and the device still
/// boots a runnable slot; with neither slot runnable the launcher gets an error, not a loop.
#[test]
fn both_copies_corrupt_fails_safe() {
    let (_dir, mut s) = real_device();
    let paths = s.record_paths();
    install(&s.prepare_inactive().unwrap());
    s.begin_trial(&request("2.0.0", 2, 3)).unwrap();
    for p in &paths {
        flip_byte(p, 40);
    }
    let bytes: Vec<_> = paths.iter().map(|p| fs::read(p).unwrap()).collect();
    assert!(matches!(s.state(), Err(Error::StateCorrupt { paths: p }) if p.len() == 2));
    assert!(matches!(s.commit(), Err(Error::StateCorrupt { .. })));
    assert!(matches!(
        s.installed_security_version(),
        Err(Error::StateCorrupt { .. })
    ));

    let d = s.boot().unwrap();
    assert_eq!(d.degraded, Some(DegradedReason::StateUnreadable));
    assert_eq!((d.slot, d.trial), (Slot::A, false));
    fs::remove_file(s.slot_path(Slot::A).join(SLOT_EXECUTABLE)).unwrap();
    assert_eq!(s.boot().unwrap().slot, Slot::B);
    fs::remove_file(s.slot_path(Slot::B).join(SLOT_EXECUTABLE)).unwrap();
    assert!(matches!(s.boot(), Err(Error::NothingBootable { .. })));

    let after: Vec<_> = paths.iter().map(|p| fs::read(p).unwrap()).collect();
    assert_eq!(after, bytes, "a corrupt state was rewritten");
    assert!(matches!(
        s.initialise(Slot::A, "1.0.0", 1),
        Err(Error::AlreadyInitialised { .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// Slots on disk.

/// G045: PL-2-2
/// Emptying the inactive slot never follows a symbolic link out of it, whether the link is
/// inside the slot or is the slot itself.
#[test]
fn prepare_inactive_never_deletes_outside_the_slot() {
    let (dir, mut s) = real_device();
    let outside = dir.path().join("outside");
    fs::create_dir_all(outside.join("sub")).unwrap();
    fs::write(outside.join("precious"), b"keep").unwrap();
    fs::write(outside.join("sub/also"), b"keep").unwrap();

    let b = s.slot_path(Slot::B);
    fs::create_dir_all(b.join("nested")).unwrap();
    symlink(&outside, b.join("dir-link")).unwrap();
    symlink(outside.join("precious"), b.join("file-link")).unwrap();
    symlink(outside.join("sub"), b.join("nested/deep-link")).unwrap();
    symlink(dir.path(), b.join("root-link")).unwrap();
    fs::write(b.join("old-file"), b"old").unwrap();

    assert_eq!(s.prepare_inactive().unwrap(), b);
    assert_eq!(fs::read_dir(&b).unwrap().count(), 0, "slot not emptied");
    assert_eq!(fs::read(outside.join("precious")).unwrap(), b"keep");
    assert_eq!(fs::read(outside.join("sub/also")).unwrap(), b"keep");
    assert!(s.record_paths()[0].exists());
    assert!(s.slot_path(Slot::A).join(SLOT_EXECUTABLE).exists());

    // The slot folder itself replaced by a link to the outside: only the link goes.
    fs::remove_dir(&b).unwrap();
    symlink(&outside, &b).unwrap();
    s.prepare_inactive().unwrap();
    assert!(fs::symlink_metadata(&b).unwrap().is_dir());
    assert_eq!(fs::read(outside.join("precious")).unwrap(), b"keep");
    assert!(s.state().is_ok());
}

/// G045: PL-2-2
/// A slot link pointing at a runnable kawal elsewhere is not runnable: a slot runs only what is
/// in it.
#[test]
fn linked_executable_is_not_runnable() {
    let (dir, s) = real_device();
    let elsewhere = dir.path().join("elsewhere");
    install(&elsewhere);
    let b = s.slot_path(Slot::B);
    fs::create_dir_all(b.join("payload")).unwrap();
    symlink(elsewhere.join(SLOT_EXECUTABLE), b.join(SLOT_EXECUTABLE)).unwrap();
    assert!(!s.is_runnable(Slot::B));
    fs::remove_dir_all(&b).unwrap();
    symlink(&elsewhere, &b).unwrap();
    assert!(!s.is_runnable(Slot::B));
    assert!(s.is_runnable(Slot::A));
}

/// G045: PL-2-2
/// Never stuck: the committed slot missing its executable runs the other slot, says so and
/// records it once; a trial slot emptied under the trial ends the trial.
#[test]
fn missing_slot_falls_back_to_the_other() {
    let rig = Rig::new();
    rig.trial("2.0.0", 2, 3);
    rig.slots().boot().unwrap();
    rig.slots().commit().unwrap(); // B committed, A still holds 1.0.0
    fs::remove_file(rig.slots().slot_path(Slot::B).join(SLOT_EXECUTABLE)).unwrap();

    let d = rig.slots().boot().unwrap();
    assert_eq!(d.slot, Slot::A);
    assert_eq!(d.degraded, Some(DegradedReason::SlotNotRunnable));
    let st = rig.slots().state().unwrap();
    assert_eq!(
        st.committed.slot,
        Slot::B,
        "a fallback must not commit anything"
    );
    assert_eq!(st.events.last().unwrap().kind, EventKind::Degraded);
    let n = st.events.len();
    rig.slots().boot().unwrap();
    assert_eq!(
        rig.slots().state().unwrap().events.len(),
        n,
        "recorded twice"
    );

    // A trial whose slot lost its executable ends at once.
    install(&rig.slots().slot_path(Slot::B));
    rig.trial("3.0.0", 3, 3);
    fs::remove_file(rig.slots().slot_path(Slot::A).join(SLOT_EXECUTABLE)).unwrap();
    let d = rig.slots().boot().unwrap();
    assert_eq!(d.slot, Slot::B);
    assert_eq!(d.rolled_back, Some(RollbackReason::TrialSlotNotRunnable));

    fs::remove_file(rig.slots().slot_path(Slot::B).join(SLOT_EXECUTABLE)).unwrap();
    assert!(matches!(
        rig.slots().boot(),
        Err(Error::NothingBootable { .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// U-Boot environment.

const ENV_SIZE: usize = 0x2000;

fn base_vars() -> Vars {
    [
        ("bootcmd", "run kawal_boot"),
        ("bootargs", "console=ttyS0,115200 rootwait"),
        (
            "kawal_boot",
            "if test ${BOOT_ORDER} = \"A B\"; then echo A; fi",
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// G045: PL-2-2
/// The fw_setenv format round-trips in both layouts and with either padding byte.
#[test]
fn uboot_env_round_trips() {
    for layout in [Layout::Single, Layout::Redundant] {
        for pad in [0x00, 0xff] {
            let bytes = ubootenv::serialise(&base_vars(), 7, ENV_SIZE, layout, pad).unwrap();
            assert_eq!(bytes.len(), ENV_SIZE);
            assert_eq!(*bytes.last().unwrap(), pad);
            let block = ubootenv::parse(&bytes, ENV_SIZE, layout).unwrap();
            assert_eq!(block.vars, base_vars());
            let flag = if layout == Layout::Redundant { 7 } else { 0 };
            assert_eq!(block.flag, flag);
        }
    }
    // The layout on the medium: CRC, flag, then `name=value\0`… sorted, then one more `\0`.
    let one: Vars = [("a".to_owned(), "1".to_owned())].into();
    let b = ubootenv::serialise(&one, 3, 16, Layout::Redundant, 0).unwrap();
    assert_eq!(&b[4..10], b"\x03a=1\0\0");
    let crc = crc32fast::hash(&b[5..]);
    assert_eq!(b[..4], crc.to_le_bytes());
    assert!(matches!(
        ubootenv::serialise(&base_vars(), 0, 64, Layout::Single, 0),
        Err(EnvProblem::TooLarge { .. })
    ));
}

/// G045: PL-2-2
/// A bad CRC, a wrong size and a malformed variable are detected.
#[test]
fn uboot_env_detects_corruption() {
    let bytes = ubootenv::serialise(&base_vars(), 1, ENV_SIZE, Layout::Redundant, 0).unwrap();
    for at in [0, 10, 100, ENV_SIZE - 1] {
        let mut bad = bytes.clone();
        bad[at] ^= 0x01;
        assert_eq!(
            ubootenv::parse(&bad, ENV_SIZE, Layout::Redundant),
            Err(EnvProblem::BadCrc),
            "flip at {at}"
        );
    }
    // The flag byte is outside the CRC (as in fw_env), so flipping it is not corruption.
    let mut other_flag = bytes.clone();
    other_flag[4] = 9;
    assert_eq!(
        ubootenv::parse(&other_flag, ENV_SIZE, Layout::Redundant)
            .unwrap()
            .flag,
        9
    );
    assert!(matches!(
        ubootenv::parse(&bytes[..100], ENV_SIZE, Layout::Redundant),
        Err(EnvProblem::Size { .. })
    ));
    let mut data = b"novalue\0\0".to_vec();
    data.resize(32, 0);
    let mut block = crc32fast::hash(&data).to_le_bytes().to_vec();
    block.extend_from_slice(&data);
    assert!(matches!(
        ubootenv::parse(&block, 36, Layout::Single),
        Err(EnvProblem::Malformed { offset: 4 })
    ));
}

/// G045: PL-2-2
/// Of two valid copies the higher flag is active, counting with wrap-around; an invalid copy is
/// never chosen.
#[test]
fn uboot_redundant_copy_choice() {
    let block = |flag| ubootenv::Block {
        vars: Vars::new(),
        flag,
    };
    let pick = |a: Option<u8>, b: Option<u8>| {
        ubootenv::active_copy(a.map(block).as_ref(), b.map(block).as_ref())
    };
    assert_eq!(pick(Some(1), Some(2)), Some(1));
    assert_eq!(pick(Some(3), Some(2)), Some(0));
    assert_eq!(pick(Some(255), Some(0)), Some(1));
    assert_eq!(pick(Some(0), Some(255)), Some(0));
    assert_eq!(pick(None, Some(0)), Some(1));
    assert_eq!(pick(Some(200), None), Some(0));
    assert_eq!(pick(None, None), None);
}

struct UbootRig {
    dir: tempfile::TempDir,
    fs: Arc<dyn Durable>,
    clock: Arc<AtomicU64>,
}

impl UbootRig {
    fn new(fs: Arc<dyn Durable>) -> Self {
        let rig = Self {
            dir: tempfile::tempdir().unwrap(),
            fs,
            clock: Arc::new(AtomicU64::new(T0)),
        };
        let mut env = rig.env();
        env.initialise(&base_vars(), Slot::A, "1.0.0", 1).unwrap();
        // On a board the copies are fixed offsets of a device; here they are files, named once.
        rig.fs.sync_dir(rig.dir.path()).unwrap();
        install(&env.slot_path(Slot::A));
        install(&env.slot_path(Slot::B));
        rig
    }

    fn env_paths(&self) -> Vec<PathBuf> {
        vec![self.dir.path().join("env0"), self.dir.path().join("env1")]
    }

    fn env(&self) -> UbootEnv {
        let clock = Arc::clone(&self.clock);
        UbootEnv::new(UbootConfig {
            env: self.env_paths(),
            env_size: ENV_SIZE,
            slots: [self.dir.path().join("a"), self.dir.path().join("b")],
            committed_tries: 3,
        })
        .unwrap()
        .with_durable(Arc::clone(&self.fs))
        .with_clock(Arc::new(move || clock.load(Ordering::SeqCst)))
    }

    fn var(&self, k: &str) -> Option<String> {
        self.env().vars().unwrap().get(k).cloned()
    }

    fn raw(&self) -> Vec<Option<Vec<u8>>> {
        self.env_paths()
            .iter()
            .map(|p| self.fs.read(p).unwrap())
            .collect()
    }
}

/// G045: PL-2-2
/// The U-Boot back end keeps the contract with RAUC-style variables: BOOT_ORDER switches on
/// trial, bootcount moves only while upgrade_available=1, the boot loader's variables are kept.
#[test]
fn uboot_env_full_cycle() {
    let rig = UbootRig::new(Arc::new(FsDurable));
    let mut env = rig.env();
    assert_eq!(rig.var("BOOT_ORDER").as_deref(), Some("A B"));
    assert_eq!(rig.var("upgrade_available").as_deref(), Some("0"));
    assert_eq!(rig.var("BOOT_A_LEFT").as_deref(), Some("3"));

    // Normal boots write nothing at all.
    let before = rig.raw();
    for _ in 0..5 {
        assert_eq!(env.boot().unwrap().slot, Slot::A);
    }
    assert_eq!(rig.raw(), before);

    env.begin_trial(&request("2.0.0", 2, 2)).unwrap();
    assert_eq!(rig.var("BOOT_ORDER").as_deref(), Some("B A"));
    assert_eq!(rig.var("upgrade_available").as_deref(), Some("1"));
    assert_eq!(rig.var("bootlimit").as_deref(), Some("2"));
    assert_eq!(rig.var("bootcount").as_deref(), Some("0"));
    assert_eq!(rig.var("BOOT_B_LEFT").as_deref(), Some("2"));

    let d = env.boot().unwrap();
    assert_eq!((d.slot, d.trial), (Slot::B, true));
    assert_eq!(rig.var("bootcount").as_deref(), Some("1"));
    assert_eq!(rig.var("BOOT_B_LEFT").as_deref(), Some("1"));

    let st = env.commit().unwrap();
    assert_eq!(env.state().unwrap(), st);
    assert_eq!(st.committed.slot, Slot::B);
    assert_eq!(env.installed_security_version().unwrap(), 2);
    assert_eq!(rig.var("BOOT_ORDER").as_deref(), Some("B A"));
    assert_eq!(rig.var("upgrade_available").as_deref(), Some("0"));
    assert_eq!(rig.var("kawal_trial_version"), None);
    for (k, v) in base_vars() {
        assert_eq!(rig.var(&k), Some(v), "{k} lost");
    }
}

/// G045: PL-2-2
/// Through U-Boot too, an unhealthy trial ends after bootlimit boots and is not retried.
#[test]
fn uboot_env_rolls_back_after_bootlimit() {
    let rig = UbootRig::new(Arc::new(FsDurable));
    let mut env = rig.env();
    env.begin_trial(&request("2.0.0", 2, 2)).unwrap();
    assert_eq!(env.boot().unwrap().slot, Slot::B);
    assert_eq!(env.boot().unwrap().slot, Slot::B);
    let d = env.boot().unwrap();
    assert_eq!(
        (d.slot, d.rolled_back),
        (Slot::A, Some(RollbackReason::BootsExhausted))
    );
    assert_eq!(rig.var("BOOT_ORDER").as_deref(), Some("A B"));
    assert_eq!(rig.var("upgrade_available").as_deref(), Some("0"));
    let st = env.state().unwrap();
    assert_eq!(st.failed, ["2.0.0"]);
    assert!(matches!(
        env.begin_trial(&request("2.0.0", 2, 2)),
        Err(Error::PreviouslyFailed { .. })
    ));
}

/// G045: PL-2-2
/// A torn write of one copy leaves the other: cutting the power before every step (half of an
/// overwrite reaching the medium) always reads as the old or the new state.
#[test]
fn uboot_env_survives_a_torn_write_of_one_copy() {
    type Op = fn(&mut UbootEnv);
    let ops: [(&str, Op); 3] = [
        ("begin_trial", |e| {
            drop(e.begin_trial(&request("2.0.0", 2, 2)));
        }),
        ("boot", |e| {
            drop(e.boot());
        }),
        ("commit", |e| {
            drop(e.commit());
        }),
    ];
    for (name, op) in ops {
        let mut states = BTreeSet::new();
        for n in 0..3 {
            let fs = Arc::new(PowerCutFs::torn());
            let rig = UbootRig::new(fs.clone());
            // Bring the device to just before `op`.
            let mut env = rig.env();
            if name != "begin_trial" {
                env.begin_trial(&request("2.0.0", 2, 2)).unwrap();
            }
            if name == "commit" {
                env.boot().unwrap();
            }
            let old = env.state().unwrap();
            fs.cut_before(n);
            op(&mut rig.env());
            let cut = fs.was_cut();
            fs.restart();
            let now = rig
                .env()
                .state()
                .unwrap_or_else(|e| panic!("{name}: step {n}: {e}"));
            if cut {
                assert_eq!(now, old, "{name}: step {n}: a torn write was used");
            } else {
                assert_ne!(now, old, "{name}: nothing happened");
            }
            states.insert(format!("{now:?}"));
            assert!(rig.env().boot().is_ok());
        }
        assert_eq!(states.len(), 2, "{name}: old and new");
    }

    // The same on real files: garbage over one copy, the other is read and then replaced.
    let rig = UbootRig::new(Arc::new(FsDurable));
    let mut env = rig.env();
    env.begin_trial(&request("2.0.0", 2, 2)).unwrap();
    let on_trial = env.state().unwrap();
    let paths = rig.env_paths();
    let active = paths
        .iter()
        .find(|p| fs::read(p).unwrap()[4] == 2)
        .unwrap()
        .clone();
    let obsolete = paths.iter().find(|p| **p != active).unwrap().clone();
    let mut torn = fs::read(&obsolete).unwrap();
    torn[ENV_SIZE / 2..].fill(0xff);
    fs::write(&obsolete, &torn).unwrap();
    assert_eq!(env.state().unwrap(), on_trial);
    let mut torn_active = fs::read(&active).unwrap();
    torn_active[20] ^= 0x55;
    let good_active = fs::read(&active).unwrap();
    fs::write(&active, &torn_active).unwrap();
    assert!(matches!(
        env.state(),
        Err(Error::Env {
            problem: EnvProblem::NoValidCopy,
            ..
        })
    ));
    assert_eq!(
        env.boot().unwrap().degraded,
        Some(DegradedReason::StateUnreadable)
    );
    fs::write(&active, &good_active).unwrap();
    env.boot().unwrap();
    assert_eq!(
        fs::read(&active).unwrap(),
        good_active,
        "active copy overwritten"
    );
    assert_eq!(fs::read(&obsolete).unwrap()[4], 3);
}

/// G045: PL-2-2
/// When the boot loader ended the trial itself (bootcount passed bootlimit, altbootcmd cleared
/// upgrade_available), the next boot records the rollback.
#[test]
fn uboot_trial_ended_by_the_boot_loader_is_recorded() {
    let rig = UbootRig::new(Arc::new(FsDurable));
    let mut env = rig.env();
    env.begin_trial(&request("2.0.0", 2, 2)).unwrap();
    // What the boot loader's altbootcmd writes: the other copy, next flag.
    let paths = rig.env_paths();
    let mut vars = env.vars().unwrap();
    vars.insert("upgrade_available".into(), "0".into());
    vars.insert("bootcount".into(), "3".into());
    vars.insert("BOOT_ORDER".into(), "A B".into());
    let bytes = ubootenv::serialise(&vars, 3, ENV_SIZE, Layout::Redundant, 0).unwrap();
    let obsolete = paths.iter().find(|p| fs::read(p).unwrap()[4] != 2).unwrap();
    fs::write(obsolete, bytes).unwrap();

    let d = env.boot().unwrap();
    assert_eq!(
        (d.slot, d.rolled_back),
        (Slot::A, Some(RollbackReason::BootsExhausted))
    );
    assert_eq!(env.state().unwrap().failed, ["2.0.0"]);
}

// ---------------------------------------------------------------------------------------------
// GRUB environment block.

/// G045: PL-2-2
/// grubenv: header, `name=value` lines with backslash escapes, `#` padding to 1024 bytes.
#[test]
fn grubenv_round_trips_and_refuses_bad_blocks() {
    let mut vars = BTreeMap::new();
    vars.insert("BOOT_ORDER".to_owned(), "A B".to_owned());
    vars.insert("odd".to_owned(), "back\\slash\nnew=line".to_owned());
    let bytes = grub::serialise(&vars).unwrap();
    assert_eq!(bytes.len(), grub::GRUBENV_SIZE);
    assert!(bytes.starts_with(
        b"# GRUB Environment Block\nBOOT_ORDER=A B\nodd=back\\\\slash\\\nnew=line\n#"
    ));
    assert!(bytes.ends_with(b"####"));
    assert_eq!(grub::parse(&bytes).unwrap(), vars);

    // As grub-editenv writes it.
    let mut stock = b"# GRUB Environment Block\nsaved_entry=0\n".to_vec();
    stock.resize(1024, b'#');
    let parsed = grub::parse(&stock).unwrap();
    assert_eq!(parsed.get("saved_entry").map(String::as_str), Some("0"));
    assert_eq!(grub::serialise(&parsed).unwrap(), stock);

    assert!(matches!(
        grub::parse(&stock[..1000]),
        Err(EnvProblem::Size { .. })
    ));
    let mut no_header = stock.clone();
    no_header[0] = b'X';
    assert!(grub::parse(&no_header).is_err());
    let mut no_eq = b"# GRUB Environment Block\nnoequals\n".to_vec();
    no_eq.resize(1024, b'#');
    assert!(matches!(
        grub::parse(&no_eq),
        Err(EnvProblem::Malformed { .. })
    ));
    vars.insert("big".to_owned(), "x".repeat(1024));
    assert!(matches!(
        grub::serialise(&vars),
        Err(EnvProblem::TooLarge { .. })
    ));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("grubenv");
    grub::write(&FsDurable, &path, &parsed).unwrap();
    assert_eq!(fs::read(&path).unwrap(), stock);
    assert_eq!(grub::read(&FsDurable, &path).unwrap(), parsed);
}

/// G045: PL-2-2
/// Going back to the release in the other slot after a commit: allowed when it is not below the
/// security floor; refused during a trial, below the floor, for a version that failed its
/// trial, and for an empty slot — each refusal writes nothing.
#[test]
fn revert_goes_back_to_the_other_slot_only_when_safe() {
    let (_dir, mut s) = real_device();
    // Nothing in slot B yet.
    let before = s.state().unwrap();
    assert!(matches!(
        s.revert("0.9.0", 1),
        Err(Error::SlotNotRunnable { .. })
    ));
    assert_eq!(s.state().unwrap(), before);

    // 2.0.0 (same security version) committed in B; back to 1.0.0 in A is allowed.
    install(&s.prepare_inactive().unwrap());
    s.begin_trial(&request("2.0.0", 1, 3)).unwrap();
    assert!(matches!(
        s.revert("1.0.0", 1),
        Err(Error::TrialInProgress { .. })
    ));
    s.boot().unwrap();
    s.commit().unwrap();
    let back = s.revert("1.0.0", 1).unwrap();
    assert_eq!(
        (back.committed.slot, back.committed.version.as_str()),
        (Slot::A, "1.0.0")
    );
    assert_eq!(back.events.last().unwrap().kind, EventKind::Reverted);
    let d = s.boot().unwrap();
    assert_eq!((d.slot, d.trial), (Slot::A, false));

    // 3.0.0 with security version 2 committed in B: 1.0.0 (security 1) is below the floor.
    install(&s.prepare_inactive().unwrap());
    s.begin_trial(&request("3.0.0", 2, 3)).unwrap();
    s.boot().unwrap();
    s.commit().unwrap();
    let before = s.state().unwrap();
    assert!(matches!(
        s.revert("1.0.0", 1),
        Err(Error::SecurityVersionTooLow {
            offered: 1,
            installed: 2
        })
    ));
    assert_eq!(s.state().unwrap(), before);

    // 4.0.0 fails its trial in A: A now holds the failed version, not a previous one.
    install(&s.prepare_inactive().unwrap());
    s.begin_trial(&request("4.0.0", 2, 3)).unwrap();
    s.rollback(RollbackReason::HealthCheckFailed).unwrap();
    let before = s.state().unwrap();
    assert!(matches!(
        s.revert("4.0.0", 2),
        Err(Error::PreviouslyFailed { .. })
    ));
    assert_eq!(s.state().unwrap(), before);
}
