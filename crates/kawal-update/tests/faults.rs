//! Faults during an update (G045 PL-2-2):
//! - power cuts: a child process applies an update (verify, download, write into the inactive
//!   slot, switch on trial), boots it and commits it, and is killed with SIGKILL at a random
//!   moment. After each kill the device must start a slot whose contents verify, and running
//!   the update again must complete. Rounds: `KAWAL_KILL9_ROUNDS` (default 200); the seed is
//!   printed so a failure can be replayed with `KAWAL_KILL9_SEED`;
//! - a full disk: the slots on a small tmpfs (in a user and mount namespace of the test's own),
//!   so the install runs out of space half-way.

#![allow(
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::disallowed_macros,
    reason = "test code: a failed expectation is the test failing; the summary is printed"
)]

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use kawal_update::bundle::{BundleBuilder, BundleLimits, Health, HealthCheck};
use kawal_update::install::{
    DeviceId, Step, Updater, read_bundle_manifest, signed_custom, verify_slot,
};
use kawal_update::repo::{self, InitOptions};
use kawal_update::slots::{BootControl, DirSlots, Slot};
use kawal_update::verify::{MetadataLimits, Source, Trust};

const PRODUCT: &str = "kawal-gw";
const HARDWARE: &str = "rev-a";
/// The child's working folder (set only in the child).
const CHILD_ENV: &str = "KAWAL_KILL9_CHILD";
/// A filler file in every bundle so writing the slot takes measurable time.
const FILLER_BYTES: usize = 768 * 1024;

struct Paths {
    root: PathBuf,
}

impl Paths {
    fn repo(&self) -> PathBuf {
        self.root.join("repo")
    }
    fn slots(&self) -> PathBuf {
        self.root.join("slots")
    }
    fn phase(&self) -> PathBuf {
        self.root.join("phase")
    }
    fn updater(&self) -> Updater {
        Updater {
            trust: Trust {
                trusted_root: self.repo().join("metadata/1.root.json"),
                datastore: self.root.join("trust"),
                limits: MetadataLimits::default(),
            },
            source: Source::local_dir(&self.repo()).expect("source"),
            device: DeviceId {
                product: PRODUCT.into(),
                hardware: HARDWARE.into(),
            },
            limits: BundleLimits::default(),
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn rng(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn bundle_builder(version: &str, seed: u64) -> BundleBuilder {
    let mut b = BundleBuilder::new(PRODUCT, version, 1, [HARDWARE]);
    b.health(Health::new(vec![HealthCheck::SelfTest], 3, 300));
    b.file(
        "kawal",
        0o755,
        format!("#!/bin/sh\n# kawal {version}\n").into_bytes(),
    );
    let mut s = seed | 1;
    let filler: Vec<u8> = (0..FILLER_BYTES)
        .map(|_| rng(&mut s).to_le_bytes()[3])
        .collect();
    b.file("share/filler.bin", 0o644, filler);
    b
}

/// Installs the factory version into slot A, as `kawal boot` does on first start.
fn factory(paths: &Paths) {
    let mut slots = DirSlots::open(paths.slots());
    std::fs::create_dir_all(paths.slots()).expect("slots");
    let a = slots.slot_path(Slot::A);
    let b = bundle_builder("1.0.0", 7);
    let manifest = b.manifest().expect("manifest");
    let mut tar = Vec::new();
    b.write(&mut tar).expect("bundle");
    std::fs::create_dir_all(&a).expect("slot a");
    let expect = kawal_update::bundle::Expect {
        product: PRODUCT.into(),
        hardware: HARDWARE.into(),
        installed_security_version: 0,
        signed: kawal_update::bundle::SignedFacts::from_custom(&signed_custom(&manifest))
            .expect("facts"),
    };
    kawal_update::bundle::unpack(&tar[..], &a, &expect, &BundleLimits::default()).expect("unpack");
    slots.initialise(Slot::A, "1.0.0", 0).expect("initialise");
}

/// Adds version `1.0.<n>` to the repository.
async fn release(paths: &Paths, n: u64) -> String {
    let version = format!("1.0.{n}");
    let file = paths.root.join(format!("kawal-{version}.bundle"));
    let out = std::fs::File::create(&file).expect("bundle file");
    bundle_builder(&version, n).write(out).expect("bundle");
    let manifest = read_bundle_manifest(&file).expect("manifest");
    repo::add(&paths.repo(), &file, signed_custom(&manifest))
        .await
        .expect("add");
    std::fs::remove_file(&file).expect("remove bundle file");
    version
}

/// Wall-clock nanoseconds: the parent and the child compare them.
fn now_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

fn mark(paths: &Paths, phase: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(paths.phase())
        .expect("phase file");
    let _ = writeln!(f, "{phase} {}", now_ns());
}

/// The phases the child went through, with when each began (wall-clock nanoseconds).
fn marks(paths: &Paths) -> Vec<(String, u128)> {
    std::fs::read_to_string(paths.phase())
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (p, t) = l.split_once(' ')?;
            Some((p.to_owned(), t.parse().ok()?))
        })
        .collect()
}

/// One whole update as the device does it: apply, reboot into the trial (counted), commit.
async fn update_once(paths: &Paths) {
    let updater = paths.updater();
    let mut slots = DirSlots::open(paths.slots());
    mark(paths, "verify");
    let mut on_step = |s: Step| match s {
        Step::MetadataVerified { .. } => {}
        Step::Downloading { .. } => mark(paths, "download-write"),
        Step::Installed { .. } => mark(paths, "switch"),
    };
    match updater.apply(&mut slots, &mut on_step).await {
        Ok(_) => {}
        Err(kawal_update::install::InstallError::UpToDate { .. }) => {}
        Err(kawal_update::install::InstallError::Slots(
            kawal_update::slots::Error::TrialInProgress { .. },
        )) => {}
        Err(e) => panic!("apply: {e}"),
    }
    mark(paths, "trial");
    let decision = slots.boot().expect("boot");
    verify_slot(&decision.path).expect("the started slot verifies");
    if decision.trial {
        mark(paths, "commit");
        slots.commit().expect("commit");
    }
    mark(paths, "done");
}

/// The child: one update, then exit (the parent kills it somewhere on the way).
#[test]
#[ignore = "run by power_cuts_during_updates_never_leave_an_unverified_slot"]
fn kill9_child() {
    let Ok(root) = std::env::var(CHILD_ENV) else {
        return;
    };
    let paths = Paths {
        root: PathBuf::from(root),
    };
    runtime().block_on(update_once(&paths));
}

fn spawn_child(paths: &Paths) -> std::process::Child {
    Command::new(std::env::current_exe().expect("own test binary"))
        .args([
            "--exact",
            "kill9_child",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_ENV, &paths.root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("child")
}

fn last_phase(paths: &Paths) -> String {
    marks(paths)
        .pop()
        .map_or_else(|| "start".to_owned(), |(p, _)| p)
}

/// Runs one uninterrupted update and returns when each phase began and ended, in nanoseconds
/// after the spawn: `(phase, from, to)`.
fn calibrate(paths: &Paths) -> Vec<(String, u64, u64)> {
    let _ = std::fs::remove_file(paths.phase());
    let t0 = now_ns();
    let status = spawn_child(paths).wait().expect("child");
    assert!(status.success(), "an uninterrupted update completes");
    let m = marks(paths);
    let at = |t: u128| u64::try_from(t.saturating_sub(t0)).unwrap_or(u64::MAX);
    m.windows(2)
        .map(|w| (w[0].0.clone(), at(w[0].1), at(w[1].1)))
        .collect()
}

/// What a device does at start after the power cut, then the update re-run to completion.
async fn recover_and_finish(paths: &Paths, version: &str) {
    let mut slots = DirSlots::open(paths.slots());
    let state = slots
        .state()
        .expect("the boot state reads after a power cut");
    let decision = slots.boot().expect("a slot starts after a power cut");
    verify_slot(&decision.path).unwrap_or_else(|e| {
        panic!(
            "the started slot {:?} does not verify ({e}); state {state:?}",
            decision.slot
        )
    });
    if decision.trial {
        slots.commit().expect("commit after recovery");
    }
    let committed = slots.state().expect("state").committed.version;
    if committed != version {
        update_once(paths).await;
    }
    let state = slots.state().expect("state");
    assert_eq!(
        state.committed.version, version,
        "the update completes: {state:?}"
    );
    assert!(state.trial.is_none());
    verify_slot(&slots.slot_path(state.committed.slot)).expect("the committed slot verifies");
}

/// G045: PL-2-2
/// SIGKILL at random points across verify, download and write, the switch, the trial boot and
/// the commit: every time, the device starts a slot whose contents verify, and the update then
/// completes.
#[test]
fn power_cuts_during_updates_never_leave_an_unverified_slot() {
    let rounds: u64 = std::env::var("KAWAL_KILL9_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let seed: u64 = std::env::var("KAWAL_KILL9_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| u64::from(d.subsec_nanos()) ^ d.as_secs())
        });
    println!("kill9: {rounds} rounds, seed {seed} (KAWAL_KILL9_SEED to replay)");
    let tmp = tempfile::tempdir().expect("tempdir");
    let paths = Paths {
        root: tmp.path().to_path_buf(),
    };
    let rt = runtime();
    rt.block_on(async {
        repo::init(&paths.repo(), &InitOptions::default())
            .await
            .expect("init");
    });
    factory(&paths);
    let mut state = seed | 1;
    let mut phases: BTreeMap<String, u64> = BTreeMap::new();
    let mut spans = Vec::new();
    for n in 1..rounds + 1 {
        let version = rt.block_on(release(&paths, n));
        // Every 25 rounds an uninterrupted update measures the phases again (the repository
        // grows); the kills in between aim at a phase chosen at random, at a random moment in it.
        if (n - 1) % 25 == 0 {
            spans = calibrate(&paths);
            assert_eq!(
                DirSlots::open(paths.slots())
                    .state()
                    .expect("state")
                    .committed
                    .version,
                version
            );
            continue;
        }
        let (_, from, to) = &spans[usize::try_from(rng(&mut state)).unwrap_or(0) % spans.len()];
        let delay = Duration::from_nanos(from + rng(&mut state) % (to - from).max(1));
        let _ = std::fs::remove_file(paths.phase());
        let mut child = spawn_child(&paths);
        std::thread::sleep(delay);
        let _ = child.kill();
        let _ = child.wait();
        *phases.entry(last_phase(&paths)).or_insert(0) += 1;
        rt.block_on(recover_and_finish(&paths, &version));
    }
    let full: u64 = spans.last().map_or(0, |s| s.2);
    println!(
        "kill9: an uninterrupted update takes {:.1} ms; kills by the phase they landed in: {phases:?}",
        full as f64 / 1e6
    );
    // The kills must really be spread over the update, not all before or after it.
    if rounds >= 50 {
        let hit = phases
            .keys()
            .filter(|k| *k != "done" && *k != "start")
            .count();
        assert!(hit >= 3, "kills landed in too few phases: {phases:?}");
    }
}

/// The disk-full child's working folder (set only in the child).
const DISK_FULL_ENV: &str = "KAWAL_DISK_FULL_CHILD";

/// The child, inside its own mount namespace: the slots on a tmpfs with room for the factory
/// slot and not for a second one; the install must fail with the file system's error and leave
/// the active slot and the boot state as they were.
#[test]
#[ignore = "run by a_full_disk_during_install_leaves_the_active_slot_untouched"]
fn disk_full_child() {
    let Ok(root) = std::env::var(DISK_FULL_ENV) else {
        return;
    };
    let paths = Paths {
        root: PathBuf::from(root),
    };
    std::fs::create_dir_all(paths.slots()).expect("slots");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1200k", "tmpfs"])
        .arg(paths.slots())
        .status()
        .expect("mount");
    assert!(mounted.success(), "mount tmpfs");
    factory(&paths);
    let mut slots = DirSlots::open(paths.slots());
    let before = slots.state().expect("state");
    let a = slots.slot_path(Slot::A);
    verify_slot(&a).expect("factory slot verifies");
    let rt = runtime();
    let err = rt
        .block_on(paths.updater().apply(&mut slots, &mut |_| {}))
        .expect_err("the install cannot fit");
    // The error and its causes, as the daemon reports them.
    let mut text = err.to_string();
    let mut cause = std::error::Error::source(&err);
    while let Some(c) = cause {
        text.push_str(&format!(": {c}"));
        cause = c.source();
    }
    assert!(
        text.contains("No space left on device"),
        "a clear error: {text}"
    );
    assert_eq!(
        slots.state().expect("state"),
        before,
        "boot state unchanged"
    );
    verify_slot(&a).expect("the active slot still verifies");
    let decision = slots.boot().expect("boot");
    assert_eq!(decision.slot, Slot::A);
    assert!(!decision.trial);
    println!("DISK-FULL-REFUSED {text}");
}

/// G045: PL-2-2
/// Disk full during the install: a clear error naming the cause, the active slot and the boot
/// state untouched, the device still starts the active slot.
#[test]
fn a_full_disk_during_install_leaves_the_active_slot_untouched() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let paths = Paths {
        root: tmp.path().to_path_buf(),
    };
    let rt = runtime();
    rt.block_on(async {
        repo::init(&paths.repo(), &InitOptions::default())
            .await
            .expect("init");
        release(&paths, 1).await;
    });
    // A user and mount namespace of the test's own: the tmpfs exists only for the child.
    let out = Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount"])
        .arg(std::env::current_exe().expect("own test binary"))
        .args([
            "--exact",
            "disk_full_child",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(DISK_FULL_ENV, &paths.root)
        .output()
        .expect("unshare (util-linux) runs the child in its own namespaces");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("DISK-FULL-REFUSED"),
        "child failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // libtest prints the child's line after "test disk_full_child ... ".
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("DISK-FULL-REFUSED ").map(|(_, why)| why))
        .unwrap_or_default();
    println!("disk full during install, refused with: {line}");
}
