//! Tamper detection and response (G045 PH-2-1), end to end through the file input.
//!
//! Each trial builds a device data folder with a sealed root blob, a key hierarchy held in
//! memory (the daemon's), an audit log file and a collector on loopback TCP (the log
//! forwarder's peer), starts a [`Monitor`] and sets the tamper attribute. It then checks that
//! the keys in memory are gone, the sealed blob is gone, the lock marker is there, and the
//! event reached both the audit log and the collector.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failure should stop the test loudly"
)]
#![allow(
    clippy::print_stdout,
    clippy::disallowed_macros,
    reason = "the test prints its latency figures"
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kawal_crypto::keys::KeyHierarchy;
use kawal_crypto::root::RootSecret;
use kawal_platform::tamper::{
    Alert, Destroy, Error, FileInput, InputKind, LOCK_MARKER, Monitor, OnUnreadable,
    ResponseReport, TamperInput, TamperResponse, TamperSignal, destroy_sealed_blob, is_locked,
    overwrite_in_place,
};

const BOUND: Duration = Duration::from_millis(100);
const TRIALS: usize = 50;

/// The daemon's key hierarchy in memory; destroying drops it (its bytes are zeroized on drop).
struct Keys(Mutex<Option<KeyHierarchy>>);

impl Destroy for Keys {
    fn destroy_keys(&self) -> Result<(), String> {
        let taken = self.0.lock().map_err(|_| "key lock poisoned")?.take();
        drop(taken);
        Ok(())
    }
}

impl Keys {
    fn present(&self) -> bool {
        self.0.lock().unwrap().is_some()
    }
}

/// The daemon's alert: append to the audit log, then forward to the collector.
struct AuditAndForward {
    log: PathBuf,
    collector: std::net::SocketAddr,
    faults: Mutex<Vec<String>>,
}

impl Alert for AuditAndForward {
    fn tamper(&self, report: &ResponseReport) -> Result<(), String> {
        let line = format!(
            "{{\"event\":\"tamper\",\"input\":{:?},\"reason\":{:?},\"keys-destroyed-us\":{}}}\n",
            report.lock.input,
            report.lock.reason,
            report.keys_destroyed_after.as_micros()
        );
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| e.to_string())?;
        f.write_all(line.as_bytes()).map_err(|e| e.to_string())?;
        f.sync_all().map_err(|e| e.to_string())?;
        let mut s = TcpStream::connect(self.collector).map_err(|e| e.to_string())?;
        s.write_all(line.as_bytes()).map_err(|e| e.to_string())?;
        Ok(())
    }

    fn fault(&self, input: &str, error: &Error) {
        self.faults
            .lock()
            .unwrap()
            .push(format!("{input}: {error}"));
    }
}

/// A log collector on loopback: every line received goes to the channel.
fn collector() -> (std::net::SocketAddr, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            for line in BufReader::new(conn).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    return;
                }
            }
        }
    });
    (addr, rx)
}

struct Device {
    dir: tempfile::TempDir,
    keys: Arc<Keys>,
    alert: Arc<AuditAndForward>,
}

impl Device {
    fn new(collector: std::net::SocketAddr) -> Self {
        let dir = tempfile::tempdir().unwrap();
        // A sealed-blob-sized file of random bytes stands in for `root.sealed`.
        let blob: [u8; kawal_crypto::root::SEALED_LEN] =
            std::array::from_fn(|i| u8::try_from(i % 251).unwrap() ^ 0xa5);
        std::fs::write(dir.path().join("root.sealed"), blob).unwrap();
        let keys = Arc::new(Keys(Mutex::new(Some(KeyHierarchy::new(
            RootSecret::generate().unwrap(),
        )))));
        let alert = Arc::new(AuditAndForward {
            log: dir.path().join("audit.log"),
            collector,
            faults: Mutex::new(Vec::new()),
        });
        Self { dir, keys, alert }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn response(&self) -> TamperResponse {
        TamperResponse::new(
            self.dir.path(),
            &self.path("root.sealed"),
            self.keys.clone(),
            self.alert.clone(),
        )
    }

    fn file_input(&self) -> Box<dyn TamperInput> {
        std::fs::write(self.path("supervisor-tamper"), "0\n").unwrap();
        Box::new(FileInput::new("attr", &self.path("supervisor-tamper"), "1"))
    }

    /// Checks everything PH-2-1 asks of one trial.
    fn assert_tamper_handled(&self, report: &ResponseReport, rx: &mpsc::Receiver<String>) {
        assert!(report.complete(), "{report:#?}");
        assert!(!self.keys.present(), "keys in memory are gone");
        assert!(!self.path("root.sealed").exists(), "sealed blob is gone");
        let info = is_locked(self.dir.path()).expect("device is locked");
        assert_eq!(info.input, "attr");
        assert_eq!(info.kind, Some(InputKind::File));
        let log = std::fs::read_to_string(self.path("audit.log")).unwrap();
        assert!(log.contains("\"event\":\"tamper\""), "{log}");
        let got = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("collector got the event");
        assert!(got.contains("\"event\":\"tamper\""), "{got}");
        let order: Vec<_> = report.steps.iter().map(|s| s.step).collect();
        assert_eq!(
            order,
            [
                "destroy-keys",
                "overwrite-sealed-blob",
                "lock-marker",
                "remove-sealed-blob",
                "alert"
            ]
        );
    }
}

/// Sets the tamper attribute and waits for the response.
fn tamper_via_file(dev: &Device, monitor: &Monitor) -> ResponseReport {
    std::fs::write(dev.path("supervisor-tamper"), "1\n").unwrap();
    monitor
        .wait_response(Duration::from_secs(5))
        .expect("response ran")
}

/// The nearest-rank percentile `p` (in %) of a sorted, non-empty series.
fn percentile(sorted: &[Duration], p: usize) -> Duration {
    let rank = (p * sorted.len()).div_ceil(100);
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A background writer: appends (and syncs) records to a file in the data folder until told
/// to stop, like the audit log or the store under load.
fn writer(path: &Path, sync_every: usize, chunk: usize) -> (Arc<AtomicBool>, JoinHandle<u64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let path = path.to_path_buf();
    let (started_tx, started_rx) = mpsc::channel();
    let h = std::thread::spawn(move || {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        let buf = vec![0x5au8; chunk];
        let mut n = 0u64;
        while !s.load(Ordering::Relaxed) {
            f.write_all(&buf).unwrap();
            n += 1;
            if n == 1 {
                started_tx.send(()).unwrap();
            }
            if sync_every > 0 && n.is_multiple_of(sync_every as u64) {
                f.sync_data().unwrap();
            }
            if n.is_multiple_of(256) {
                // Keep the file bounded: start over.
                f.set_len(0).unwrap();
            }
        }
        n
    });
    // Tamper only once the load is running.
    started_rx.recv().unwrap();
    (stop, h)
}

/// G045: PH-2-1
#[test]
fn file_tamper_destroys_keys_and_blob_locks_and_alerts() {
    let (addr, rx) = collector();
    let dev = Device::new(addr);
    let before = std::fs::read(dev.path("root.sealed")).unwrap();
    // A second name for the blob's inode: after the response it must hold nothing.
    std::fs::hard_link(dev.path("root.sealed"), dev.path("blob-link")).unwrap();
    let monitor = Monitor::start(vec![dev.file_input()], dev.response()).unwrap();
    assert!(is_locked(dev.dir.path()).is_none());
    assert!(dev.keys.present());
    let report = tamper_via_file(&dev, &monitor);
    dev.assert_tamper_handled(&report, &rx);
    let after = std::fs::read(dev.path("blob-link")).unwrap();
    assert!(after.is_empty(), "the blob's inode was truncated");
    assert_ne!(before, after);
    let marker: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dev.path(LOCK_MARKER)).unwrap()).unwrap();
    assert_eq!(marker["format"], "kawal-tamper-lock/1");
    assert_eq!(marker["input"], "attr");
    assert_eq!(marker["kind"], "file");
    assert!(marker["when"].as_str().unwrap().ends_with('Z'));
    assert!(!dev.path(format!("{LOCK_MARKER}.new").as_str()).exists());
    let final_report = monitor.stop();
    assert!(final_report.response.is_some());
    assert!(final_report.faults.is_empty());
}

/// G045: PH-2-1
#[test]
fn overwrite_replaces_every_byte_before_the_blob_is_unlinked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("root.sealed");
    let before = vec![0x11u8; kawal_crypto::root::SEALED_LEN];
    std::fs::write(&path, &before).unwrap();
    // Held open across the overwrite: the same inode is read back.
    let mut held = std::fs::File::open(&path).unwrap();
    overwrite_in_place(&path).unwrap();
    let mut after = Vec::new();
    held.read_to_end(&mut after).unwrap();
    assert_eq!(
        after.len(),
        before.len(),
        "same length, overwritten in place"
    );
    assert_ne!(after, before);
    let same = after.iter().zip(&before).filter(|(a, b)| a == b).count();
    assert!(same < 10, "{same} bytes unchanged: not random");
    destroy_sealed_blob(&path).unwrap();
    assert!(!path.exists());
    // A second run (or a device never provisioned) is not an error.
    destroy_sealed_blob(&path).unwrap();
}

/// G045: PH-2-1
#[test]
fn a_second_tamper_runs_nothing_and_is_recorded() {
    let (addr, rx) = collector();
    let dev = Device::new(addr);
    let monitor = Monitor::start(vec![dev.file_input()], dev.response()).unwrap();
    let report = tamper_via_file(&dev, &monitor);
    dev.assert_tamper_handled(&report, &rx);
    let again = TamperSignal {
        input: "daemon-check".into(),
        kind: InputKind::Signal,
        reason: "second finding".into(),
        seen: Instant::now(),
    };
    assert!(!monitor.trigger(&again), "the response runs once");
    let r = monitor.stop();
    assert_eq!(
        r.also_seen,
        vec![("daemon-check".to_owned(), "second finding".to_owned())]
    );
    assert!(
        rx.recv_timeout(Duration::from_millis(200)).is_err(),
        "no second event"
    );
    assert_eq!(is_locked(dev.dir.path()).unwrap().input, "attr");
}

/// G045: PH-2-1
#[test]
fn missing_file_is_tamper_by_default() {
    let (addr, rx) = collector();
    let dev = Device::new(addr);
    let input = Box::new(FileInput::new("attr", &dev.path("no-such-attr"), "1"));
    let monitor = Monitor::start(vec![input], dev.response()).unwrap();
    let report = monitor.wait_response(Duration::from_secs(5)).unwrap();
    dev.assert_tamper_handled(&report, &rx);
    assert!(
        report.lock.reason.contains("unreadable"),
        "{}",
        report.lock.reason
    );
}

/// G045: PH-2-1
#[test]
fn missing_file_as_fault_is_reported_and_watched() {
    let (addr, rx) = collector();
    let dev = Device::new(addr);
    let path = dev.path("late-attr");
    let input = Box::new(FileInput::new("attr", &path, "1").on_unreadable(OnUnreadable::Fault));
    let monitor = Monitor::start(vec![input], dev.response()).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert!(!monitor.fired(), "a fault is not tamper");
    assert!(dev.keys.present());
    let faults = monitor.report().faults;
    assert_eq!(faults.len(), 1, "reported once: {faults:?}");
    assert!(faults[0].1.contains("late-attr"), "{faults:?}");
    assert_eq!(dev.alert.faults.lock().unwrap().len(), 1);
    // The file appears with the tamper value: still watched.
    std::fs::write(&path, "1").unwrap();
    let report = monitor.wait_response(Duration::from_secs(5)).unwrap();
    dev.assert_tamper_handled(&report, &rx);
}

/// G045: PH-2-1
#[test]
fn a_corrupt_lock_marker_still_locks() {
    let dir = tempfile::tempdir().unwrap();
    assert!(is_locked(dir.path()).is_none());
    std::fs::write(dir.path().join(LOCK_MARKER), "{not json").unwrap();
    let info = is_locked(dir.path()).unwrap();
    assert!(info.reason.contains("unreadable"), "{}", info.reason);
    assert_eq!(info.kind, None);
}

/// Runs `TRIALS` file-input tampers with `load` running in the background; returns the
/// latencies input-sees-tamper → keys destroyed.
fn trials(label: &str, load: impl Fn(&Device) -> Vec<(Arc<AtomicBool>, JoinHandle<u64>)>) {
    // One series at a time: three series at once on a small machine would measure each
    // other's disk syncs rather than the response.
    static SERIAL: Mutex<()> = Mutex::new(());
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let (addr, rx) = collector();
    let mut steps: Vec<Vec<Duration>> = vec![Vec::new(); 5];
    let mut latencies = Vec::with_capacity(TRIALS);
    let mut end_to_end = Vec::with_capacity(TRIALS);
    for _ in 0..TRIALS {
        let dev = Device::new(addr);
        let monitor = Monitor::start(vec![dev.file_input()], dev.response()).unwrap();
        let writers = load(&dev);
        // Let the load run, then tamper at a varying point of it.
        std::thread::sleep(Duration::from_millis(5 + (latencies.len() as u64 % 7)));
        let written = Instant::now();
        std::fs::write(dev.path("supervisor-tamper"), "1\n").unwrap();
        let report = monitor.wait_response(Duration::from_secs(5)).unwrap();
        let done = written.elapsed();
        for (stop, h) in writers {
            stop.store(true, Ordering::Relaxed);
            assert!(h.join().unwrap() > 0, "the load was running");
        }
        dev.assert_tamper_handled(&report, &rx);
        latencies.push(report.keys_destroyed_after);
        for (i, st) in report.steps.iter().enumerate() {
            steps[i].push(st.took);
        }
        end_to_end.push(done);
        monitor.stop();
    }
    latencies.sort();
    end_to_end.sort();
    let (p50, p99) = (percentile(&latencies, 50), percentile(&latencies, 99));
    println!(
        "tamper {label}: {TRIALS} trials, input-sees-tamper → keys destroyed p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; \
         attribute written → whole response done (alert included) p50 {:.2} ms, p99 {:.2} ms",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        latencies[TRIALS - 1].as_secs_f64() * 1e3,
        percentile(&end_to_end, 50).as_secs_f64() * 1e3,
        percentile(&end_to_end, 99).as_secs_f64() * 1e3,
    );
    let names = [
        "destroy-keys",
        "overwrite-sealed-blob",
        "lock-marker",
        "remove-sealed-blob",
        "alert",
    ];
    for (name, mut v) in names.into_iter().zip(steps) {
        v.sort();
        println!(
            "tamper {label}:   step {name}: p50 {:.2} ms, p99 {:.2} ms",
            percentile(&v, 50).as_secs_f64() * 1e3,
            percentile(&v, 99).as_secs_f64() * 1e3,
        );
    }
    assert!(p99 < BOUND, "{label}: p99 {p99:?} not under {BOUND:?}");
}

/// G045: PH-2-1
#[test]
fn fifty_trials_idle_keys_destroyed_under_100_ms() {
    trials("idle", |_| Vec::new());
}

/// G045: PH-2-1
#[test]
fn fifty_trials_mid_write_keys_destroyed_under_100_ms() {
    // The audit log and the store under load: small appends, each group synced.
    trials("mid-write", |dev| {
        vec![writer(&dev.path("store.redb"), 4, 4096)]
    });
}

/// G045: PH-2-1
#[test]
fn fifty_trials_mid_update_keys_destroyed_under_100_ms() {
    // An update bundle being staged: large writes, synced every 4 MiB, plus a log writer.
    trials("mid-update", |dev| {
        vec![
            writer(&dev.path("update-staging.bin"), 4, 1 << 20),
            writer(&dev.path("audit.log.load"), 1, 512),
        ]
    });
}
