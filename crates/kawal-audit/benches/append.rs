//! Costs of the audit log (DESIGN "done" item 4): durable appends per second with 64
//! concurrent appenders (group commit), the latency of one durable append, and `verify`
//! throughput next to plain SHA-256 over the same bytes. Plain std timing; run with
//! `cargo bench -p kawal-audit --bench append`.
#![allow(
    clippy::print_stdout,
    clippy::disallowed_macros,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_precision_loss,
    reason = "a benchmark prints its results and may stop at the first error"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use kawal_audit::{
    AuditLog, AuditOptions, CheckpointSigner, Event, FileAnchorStore, Outcome, SystemClock,
    TrustedKeys,
};

const UID: &str = "KWL-BENCH-0001";
const THREADS: usize = 64;
const PER_THREAD: usize = 3_000;
const SEQUENTIAL: usize = 2_000;

struct Signer(Ed25519KeyPair);

impl CheckpointSigner for Signer {
    fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.0.sign(msg).as_ref().try_into().unwrap()
    }
    fn public_key(&self) -> [u8; 32] {
        self.0.public_key().as_ref().try_into().unwrap()
    }
    fn key_version(&self) -> u32 {
        1
    }
}

fn event(t: usize, i: usize) -> Event {
    // A typical entry: about 330 bytes on disk.
    Event::new("sensor.publish_denied", "sensor-0042", Outcome::Denied)
        .with("topic", "site/7/line/3/temperature")
        .with("client_ip", "192.0.2.17")
        .with("thread", t)
        .with("i", i)
}

fn open(dir: &std::path::Path, signer: &Arc<Signer>) -> AuditLog {
    let anchors = Arc::new(FileAnchorStore::new(dir.join("anchor.json")));
    AuditLog::open(
        dir,
        UID,
        signer.clone(),
        anchors,
        Arc::new(SystemClock::new()),
        AuditOptions::default(),
    )
    .unwrap()
}

/// CPU time (user + system, all threads) of this process so far, from `/proc/self/stat`
/// (USER_HZ = 100 ticks per second on Linux); zero where unreadable.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the line; 12 and 13 after the name.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

fn mb_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e6
}

fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let signer = Arc::new(Signer(Ed25519KeyPair::generate().unwrap()));

    // 1. Throughput with many concurrent appenders: every append durable before it returns.
    let log = Arc::new(open(dir, &signer));
    let start = Instant::now();
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for i in 0..PER_THREAD {
                    log.append(event(t, i)).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let elapsed = start.elapsed();
    let stats = log.stats();
    let total = THREADS * PER_THREAD;
    println!(
        "durable appends, {THREADS} threads: {total} events in {:.2} s = {:.0} events/s ({} syncs, {:.1} entries per sync)",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        stats.batches,
        stats.entries as f64 / stats.batches as f64
    );

    // 2. Latency of one durable append with no concurrency (one write + one fdatasync each).
    let mut lat = Vec::with_capacity(SEQUENTIAL);
    for i in 0..SEQUENTIAL {
        let t = Instant::now();
        log.append(event(0, i)).unwrap();
        lat.push(t.elapsed());
    }
    lat.sort_unstable();
    let pct = |p: usize| lat[(lat.len() * p / 100).min(lat.len() - 1)];
    println!(
        "durable append latency, sequential: median {:.0} us, p99 {:.0} us, max {:.0} us",
        pct(50).as_secs_f64() * 1e6,
        pct(99).as_secs_f64() * 1e6,
        lat[lat.len() - 1].as_secs_f64() * 1e6
    );
    Arc::try_unwrap(log).ok().unwrap().close().unwrap();

    // 3. verify against plain SHA-256 over the same bytes (files in the page cache).
    let trusted = TrustedKeys::new().with(1, signer.public_key());
    let anchor = {
        use kawal_audit::AnchorStore;
        FileAnchorStore::new(dir.join("anchor.json"))
            .load()
            .unwrap()
    };
    let mut segs: Vec<_> = std::fs::read_dir(dir.join("audit"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    segs.sort();
    let files: Vec<Vec<u8>> = segs.iter().map(|p| std::fs::read(p).unwrap()).collect();
    let bytes: u64 = files.iter().map(|f| f.len() as u64).sum();
    let (mut best_verify, mut best_sha) = (Duration::MAX, Duration::MAX);
    let (mut cpu_verify, mut cpu_sha) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..5 {
        let (t, c) = (Instant::now(), cpu_time());
        let report = kawal_audit::verify(dir, UID, &trusted, anchor.as_ref()).unwrap();
        best_verify = best_verify.min(t.elapsed());
        cpu_verify += cpu_time().saturating_sub(c);
        assert_eq!(report.bytes, bytes);
        let (t, c) = (Instant::now(), cpu_time());
        for f in &files {
            std::hint::black_box(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, f));
        }
        best_sha = best_sha.min(t.elapsed());
        cpu_sha += cpu_time().saturating_sub(c);
    }
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let (v, s) = (mb_per_s(bytes, best_verify), mb_per_s(bytes, best_sha));
    println!(
        "verify: {:.1} MB in {} segments, {v:.0} MB/s (reads files, parses, hashes, checks signatures; {cores} cores)",
        bytes as f64 / 1e6,
        segs.len()
    );
    println!("plain SHA-256 over the same bytes in memory (1 core): {s:.0} MB/s");
    println!(
        "CPU cost: verify {:.0} MB per CPU-second, SHA-256 {:.0} MB per CPU-second",
        mb_per_s(bytes * 5, cpu_verify),
        mb_per_s(bytes * 5, cpu_sha)
    );
    println!("verify / SHA-256 ratio: {:.2} (target >= 0.70)", v / s);
}
