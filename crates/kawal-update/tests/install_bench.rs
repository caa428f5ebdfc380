//! Verify and install a 100 MB bundle from a local repository, next to plain SHA-256 over the
//! same bytes in the same run (G045 PL-2-2, PL-2-3: at least 0.70× the throughput of plain
//! SHA-256, and peak memory growth under 32 MiB).
//!
//! The repository is made with the vendor tooling ([`kawal_update::repo`]) in a temp folder; the
//! bundle ([`kawal_update::bundle::BundleBuilder`]) holds a 100,000,000-byte file of random bytes,
//! written to disk first and streamed into the bundle, and a small `kawal` script so the slot is
//! runnable. Each round then measures, one after the other on the same published target file:
//! - **plain SHA-256** (aws-lc-rs) of the file, read from disk in 64 KiB chunks;
//! - **`Updater::apply`** end to end on a fresh device (its own slots and trusted metadata):
//!   metadata verified, target streamed through its signed length and hash check into the
//!   unpacker ([`kawal_update::bundle::unpack_signed`]: every entry checked against the manifest
//!   by path, type and size, the signed whole-bundle hash standing for the per-file hashes),
//!   written with early write-back and fsynced into slot B, trial begun;
//! - for information, **hash + copy + fsync**: the same read and SHA-256, written to a new file
//!   and fsynced, the least any installer that hashes once and keeps the data must do;
//! - for information, the two halves of the apply on their own: **TUF read** (metadata verified,
//!   then the target read through [`kawal_update::verify::TargetReader`] into a sink: tough's
//!   file transport and both whole-target hashes) and **unpack** ([`kawal_update::bundle::unpack`]
//!   straight from the file into an empty slot: the path for input nothing else vouches for,
//!   with per-file hashes, writes, fsyncs).
//!
//! The file is in the page cache for both (it was written moments before; the residency is
//! printed), so the ratio compares work, not the disk's read speed. Writing into the slot does
//! reach the disk (fsync), as an install must.
//!
//! Memory: the apply runs once more in a fresh child process (this test binary again, selected by
//! [`CHILD_ENV`]), which resets its peak RSS (`/proc/self/clear_refs`, 5) just before the apply
//! and reports `VmHWM` after it minus `VmRSS` before it.
//!
//! Run with `scripts/bench.sh update`, or
//! `cargo test --release -p kawal-update --test install_bench -- --ignored --nocapture`.
//! Knob: `KAWAL_BENCH_INSTALL_ROUNDS` (default 5).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    clippy::disallowed_macros,
    clippy::print_stdout,
    reason = "benchmark: a failure should stop it loudly; sizes are small enough for the casts; \
              the measurements are printed for the reader"
)]

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use aws_lc_rs::digest;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use kawal_update::bundle::{self, BundleBuilder, BundleLimits, Expect, SignedFacts};
use kawal_update::install::{DeviceId, Updater};
use kawal_update::repo::{self, InitOptions};
use kawal_update::slots::{BootControl, DirSlots, Slot};
use kawal_update::verify::{self, MetadataLimits, Source, Trust};

const PRODUCT: &str = "kawal-gw";
const HARDWARE: &str = "board-x1";
const VERSION: &str = "0.2.0";
/// The big payload file: 100 MB.
const PAYLOAD_BYTES: u64 = 100_000_000;
/// The read size of the plain SHA-256 baseline (and of the unpacker's copy buffer).
const CHUNK: usize = 64 * 1024;
const TARGET_RATIO: f64 = 0.70;
const MAX_GROWTH_KIB: u64 = 32 * 1024;
/// Set in the child process to the work folder; selects the memory measurement.
const CHILD_ENV: &str = "KAWAL_BENCH_INSTALL_CHILD";
/// This test's name, for re-invoking the test binary as the child.
const TEST_NAME: &str = "apply_of_a_100_mb_bundle_keeps_up_with_plain_sha256";

/// The published repository inside the work folder (fixed names, so the child finds them).
struct Repo {
    www: PathBuf,
    trusted_root: PathBuf,
    target_file: PathBuf,
    target_len: u64,
}

impl Repo {
    fn at(work: &Path) -> Self {
        let www = work.join("www");
        let target_file = fs::read_dir(www.join("targets"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.to_string_lossy().ends_with(".bundle"))
            .expect("the published bundle");
        let target_len = fs::metadata(&target_file).unwrap().len();
        Self {
            www,
            trusted_root: work.join("trusted-root.json"),
            target_file,
            target_len,
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    // As the daemon on this machine: a multi-threaded runtime with two workers.
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// `len` random bytes written to `path` in 64 KiB chunks (never held whole).
fn write_random(path: &Path, len: u64) {
    let rng = SystemRandom::new();
    let mut out = BufWriter::new(File::create(path).unwrap());
    let mut buf = vec![0u8; CHUNK];
    let mut left = len;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        rng.fill(&mut buf[..n]).unwrap();
        out.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    out.into_inner().unwrap().sync_all().unwrap();
}

/// Makes the vendor's repository, the bundle and the published copy under `work`.
fn publish(rt: &tokio::runtime::Runtime, work: &Path) -> Repo {
    let vendor = work.join("vendor");
    rt.block_on(repo::init(&vendor, &InitOptions::default()))
        .unwrap();
    let payload = work.join("payload");
    fs::create_dir_all(&payload).unwrap();
    write_random(&payload.join("blob.bin"), PAYLOAD_BYTES);
    let script = payload.join("kawal");
    fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();

    let bundle = work.join(format!("kawal-{VERSION}.bundle"));
    let mut builder = BundleBuilder::new(PRODUCT, VERSION, 1, [HARDWARE]);
    builder.add_folder(&payload).unwrap();
    let mut out = BufWriter::with_capacity(CHUNK, File::create(&bundle).unwrap());
    builder.write(&mut out).unwrap();
    out.into_inner().unwrap().sync_all().unwrap();

    let custom = BTreeMap::from([
        ("product".to_owned(), PRODUCT.into()),
        ("version".to_owned(), VERSION.into()),
        ("security-version".to_owned(), 1.into()),
        ("hardware".to_owned(), serde_json::json!([HARDWARE])),
    ]);
    rt.block_on(repo::add(&vendor, &bundle, custom)).unwrap();
    let www = work.join("www");
    rt.block_on(repo::publish(&vendor, &www)).unwrap();
    fs::copy(
        vendor.join("metadata/1.root.json"),
        work.join("trusted-root.json"),
    )
    .unwrap();
    // Only the published copy is read from here on: drop the other 300 MB.
    fs::remove_dir_all(&payload).unwrap();
    fs::remove_file(&bundle).unwrap();
    fs::remove_dir_all(vendor.join("targets")).unwrap();
    Repo::at(work)
}

/// A fresh device under `dir`: slot A committed at 0.1.0 with a runnable `payload/kawal`, and
/// trusted metadata only from the provisioned root.
fn device(repo: &Repo, dir: &Path) -> (Updater, DirSlots) {
    let root = dir.join("slots");
    fs::create_dir_all(&root).unwrap();
    let mut slots = DirSlots::open(&root);
    slots.initialise(Slot::A, "0.1.0", 0).unwrap();
    let exe = slots.slot_path(Slot::A).join("payload/kawal");
    fs::create_dir_all(exe.parent().unwrap()).unwrap();
    fs::write(&exe, "#!/bin/sh\nexit 0\n").unwrap();
    fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
    let updater = Updater {
        trust: Trust {
            trusted_root: repo.trusted_root.clone(),
            datastore: dir.join("trust"),
            limits: MetadataLimits::default(),
        },
        source: Source::local_dir(&repo.www).unwrap(),
        device: DeviceId {
            product: PRODUCT.to_owned(),
            hardware: HARDWARE.to_owned(),
        },
        limits: BundleLimits::default(),
    };
    (updater, slots)
}

/// Applies the published bundle on `slots`; checks what was installed.
fn apply(rt: &tokio::runtime::Runtime, repo: &Repo, updater: &Updater, slots: &mut DirSlots) {
    let applied = rt
        .block_on(updater.apply(slots, &mut |_| {}))
        .expect("apply");
    assert_eq!(applied.version, VERSION);
    assert_eq!(applied.slot, Slot::B);
    assert_eq!(applied.bytes, repo.target_len);
    let blob = slots.slot_path(Slot::B).join("payload/blob.bin");
    assert_eq!(fs::metadata(blob).unwrap().len(), PAYLOAD_BYTES);
}

/// Plain SHA-256 of `path`, read in 64 KiB chunks; optionally copied to `copy` and fsynced.
fn sha256_file(path: &Path, copy: Option<&Path>) -> (Duration, [u8; 32]) {
    let t = Instant::now();
    let mut file = File::open(path).unwrap();
    let mut out = copy.map(|c| File::create(c).unwrap());
    let mut ctx = digest::Context::new(&digest::SHA256);
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = file.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
        if let Some(o) = out.as_mut() {
            o.write_all(&buf[..n]).unwrap();
        }
    }
    if let Some(o) = out {
        o.sync_all().unwrap();
    }
    let sha = ctx.finish().as_ref().try_into().unwrap();
    (t.elapsed(), sha)
}

/// Information: the TUF half alone, on a fresh trusted datastore under `dir`.
fn tuf_read(rt: &tokio::runtime::Runtime, repo: &Repo, dir: &Path) -> Duration {
    let trust = Trust {
        trusted_root: repo.trusted_root.clone(),
        datastore: dir.join("trust"),
        limits: MetadataLimits::default(),
    };
    let source = Source::local_dir(&repo.www).unwrap();
    let t = Instant::now();
    let read = rt.block_on(async {
        let verified = verify::load(&trust, &source).await.unwrap();
        let target = verified.target(&format!("kawal-{VERSION}.bundle")).unwrap();
        let reader = verified.open(&target).await.unwrap();
        reader.copy_to(&mut std::io::sink()).await.unwrap()
    });
    let took = t.elapsed();
    assert_eq!(read, repo.target_len);
    took
}

/// Information: the unpack half alone, from the file into an empty slot folder `slot`.
fn unpack_file(repo: &Repo, slot: &Path) -> Duration {
    fs::create_dir_all(slot).unwrap();
    let expect = Expect {
        product: PRODUCT.to_owned(),
        hardware: HARDWARE.to_owned(),
        installed_security_version: 0,
        signed: SignedFacts {
            version: VERSION.to_owned(),
            security_version: 1,
            product: PRODUCT.to_owned(),
            hardware: vec![HARDWARE.to_owned()],
        },
    };
    let t = Instant::now();
    let file = File::open(&repo.target_file).unwrap();
    bundle::unpack(file, slot, &expect, &BundleLimits::default()).unwrap();
    t.elapsed()
}

/// `(VmRSS, VmHWM)` of this process in KiB.
fn rss_hwm_kib() -> (u64, u64) {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{name} not in /proc/self/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// How much of `path` is in the page cache, from util-linux `fincore`, if installed.
fn residency(path: &Path) -> String {
    let out = Command::new("fincore")
        .args(["--bytes", "--noheadings", "--output", "RES,SIZE"])
        .arg(path)
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let text = String::from_utf8_lossy(&o.stdout);
            let mut it = text.split_whitespace().map(|n| n.parse::<u64>().ok());
            match (it.next().flatten(), it.next().flatten()) {
                (Some(res), Some(size)) => format!(
                    "{:.1} of {:.1} MB in the page cache ({})",
                    res as f64 / 1e6,
                    size as f64 / 1e6,
                    if res == size { "warm" } else { "NOT all warm" }
                ),
                _ => format!("fincore said {text:?}"),
            }
        }
        _ => "unknown (no fincore)".to_owned(),
    }
}

fn mb_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

fn median(v: &[Duration]) -> Duration {
    let mut s = v.to_vec();
    s.sort();
    s[s.len() / 2]
}

fn best(v: &[Duration]) -> Duration {
    v.iter().copied().min().unwrap()
}

/// The child: one apply on a fresh device, with its peak RSS reset just before.
fn child(work: &Path) {
    let repo = Repo::at(work);
    let rt = runtime();
    let dir = work.join("child");
    let (updater, mut slots) = device(&repo, &dir);
    let before_reset = rss_hwm_kib();
    // Linux ≥ 4.0: "5" resets the peak RSS to the current RSS.
    let reset = fs::write("/proc/self/clear_refs", "5").is_ok();
    let (rss_before, hwm_before) = rss_hwm_kib();
    let t = Instant::now();
    apply(&rt, &repo, &updater, &mut slots);
    let took = t.elapsed();
    let (rss_after, hwm_after) = rss_hwm_kib();
    println!(
        "CHILD rss_before_kib={rss_before} hwm_before_kib={hwm_before} \
         hwm_before_reset_kib={} hwm_after_kib={hwm_after} rss_after_kib={rss_after} \
         reset={reset} apply_ms={:.1}",
        before_reset.1,
        took.as_secs_f64() * 1e3
    );
}

/// Runs [`child`] in a fresh process; returns its `CHILD` line's fields.
fn memory_in_child(work: &Path) -> BTreeMap<String, String> {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", TEST_NAME, "--ignored", "--nocapture"])
        .args(["--test-threads", "1"])
        .env(CHILD_ENV, work)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("CHILD ").map(|(_, rest)| rest))
        .unwrap_or_else(|| {
            panic!(
                "the child reported nothing ({}):\n{stdout}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        });
    assert!(out.status.success(), "child failed: {stdout}");
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// G045: PL-2-2, PL-2-3
#[test]
#[ignore = "benchmark: 100 MB bundle, several rounds; run with --ignored --nocapture"]
fn apply_of_a_100_mb_bundle_keeps_up_with_plain_sha256() {
    if let Some(work) = std::env::var_os(CHILD_ENV) {
        child(Path::new(&work));
        return;
    }
    let rounds: usize = std::env::var("KAWAL_BENCH_INSTALL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .max(1);
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    let rt = runtime();
    let t = Instant::now();
    let repo = publish(&rt, work);
    let len = repo.target_len;
    println!(
        "BENCH install: bundle {:.1} MB ({PAYLOAD_BYTES} payload bytes + a script, tar, manifest), \
         repository made in {:.1} s; {} build; before round 1: {}",
        len as f64 / 1e6,
        t.elapsed().as_secs_f64(),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        residency(&repo.target_file)
    );
    // The consistent-snapshot name starts with the signed SHA-256: the baseline hashes exactly
    // the bytes the apply verifies.
    let signed_hex = repo
        .target_file
        .file_name()
        .unwrap()
        .to_string_lossy()
        .split('.')
        .next()
        .unwrap()
        .to_owned();

    let mut plain = Vec::new();
    let mut applies = Vec::new();
    let mut copies = Vec::new();
    let mut tufs = Vec::new();
    let mut unpacks = Vec::new();
    for i in 0..rounds {
        let (p, sha) = sha256_file(&repo.target_file, None);
        assert_eq!(hex::encode(sha), signed_hex, "baseline hashed other bytes");
        plain.push(p);

        let dir = work.join(format!("round-{i}"));
        let (updater, mut slots) = device(&repo, &dir);
        let t = Instant::now();
        apply(&rt, &repo, &updater, &mut slots);
        let a = t.elapsed();
        applies.push(a);
        fs::remove_dir_all(&dir).unwrap();

        let copy = work.join("copy.bin");
        let (c, _) = sha256_file(&repo.target_file, Some(&copy));
        fs::remove_file(&copy).unwrap();
        copies.push(c);

        let tuf = tuf_read(&rt, &repo, &dir);
        let unpack = unpack_file(&repo, &dir.join("slot"));
        fs::remove_dir_all(&dir).unwrap();
        tufs.push(tuf);
        unpacks.push(unpack);
        println!(
            "BENCH install round {}: plain SHA-256 {:.1} ms ({:.0} MB/s); apply {:.1} ms \
             ({:.0} MB/s); information: hash + copy + fsync {:.1} ms ({:.0} MB/s), TUF read \
             {:.1} ms ({:.0} MB/s), unpack {:.1} ms ({:.0} MB/s)",
            i + 1,
            p.as_secs_f64() * 1e3,
            mb_s(len, p),
            a.as_secs_f64() * 1e3,
            mb_s(len, a),
            c.as_secs_f64() * 1e3,
            mb_s(len, c),
            tuf.as_secs_f64() * 1e3,
            mb_s(len, tuf),
            unpack.as_secs_f64() * 1e3,
            mb_s(len, unpack),
        );
    }
    println!(
        "BENCH install: after the rounds: {}",
        residency(&repo.target_file)
    );
    let mem = memory_in_child(work);
    let kib = |k: &str| -> u64 { mem[k].parse().unwrap() };
    let growth = kib("hwm_after_kib").saturating_sub(kib("rss_before_kib"));

    let ratio_best = best(&plain).as_secs_f64() / best(&applies).as_secs_f64();
    let ratio_median = median(&plain).as_secs_f64() / median(&applies).as_secs_f64();
    println!(
        "BENCH install: {rounds} rounds over {:.1} MB, page cache warm for both sides: \
         plain SHA-256 best {:.0} MB/s, median {:.0} MB/s; apply best {:.0} MB/s, median {:.0} \
         MB/s; information: hash + copy + fsync best {:.0} MB/s, median {:.0} MB/s; TUF read \
         median {:.0} MB/s; unpack median {:.0} MB/s",
        len as f64 / 1e6,
        mb_s(len, best(&plain)),
        mb_s(len, median(&plain)),
        mb_s(len, best(&applies)),
        mb_s(len, median(&applies)),
        mb_s(len, best(&copies)),
        mb_s(len, median(&copies)),
        mb_s(len, median(&tufs)),
        mb_s(len, median(&unpacks)),
    );
    println!(
        "BENCH install memory: apply in a fresh process ({:.0} ms): VmRSS before {:.1} MiB, \
         VmHWM after {:.1} MiB (peak reset before the apply: {}; VmHWM before the reset {:.1} MiB), \
         VmRSS after {:.1} MiB: growth {:.1} MiB (target < 32 MiB)",
        mem["apply_ms"].parse::<f64>().unwrap(),
        kib("rss_before_kib") as f64 / 1024.0,
        kib("hwm_after_kib") as f64 / 1024.0,
        mem["reset"],
        kib("hwm_before_reset_kib") as f64 / 1024.0,
        kib("rss_after_kib") as f64 / 1024.0,
        growth as f64 / 1024.0,
    );
    println!(
        "BENCH install ratio apply / plain SHA-256: best {ratio_best:.2}, median {ratio_median:.2} \
         (target >= {TARGET_RATIO:.2} on the best)"
    );
    drop(tmp);
    assert!(
        growth < MAX_GROWTH_KIB,
        "peak memory growth of the apply is {:.1} MiB (target < 32 MiB)",
        growth as f64 / 1024.0
    );
    assert!(
        ratio_best >= TARGET_RATIO,
        "apply reaches {ratio_best:.2} of plain SHA-256 (median {ratio_median:.2}; target >= \
         {TARGET_RATIO:.2})"
    );
}
