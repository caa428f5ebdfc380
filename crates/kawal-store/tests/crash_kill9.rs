//! Acknowledged writes survive `kill -9` of the writer at random points (200 cycles).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation,
    clippy::print_stderr,
    clippy::disallowed_macros,
    reason = "test harness code: a failure should stop the test loudly"
)]
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use kawal_crypto::keys::KeyHierarchy;
use kawal_crypto::password::Argon2Params;
use kawal_crypto::root::{KekInputs, RootSecret};
use kawal_store::{Sharing, Store, Table};

const KEK: KekInputs<'static> = KekInputs {
    machine_binding: b"crash-test",
    passphrase: None,
    argon2: Argon2Params::TEST,
};

/// The writer: this test binary, re-run with only [`crash_writer_child`] selected.
fn writer(dir: &std::path::Path, start: u64) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args([
        "--exact",
        "crash_writer_child",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    c.env("KAWAL_CRASH_DIR", dir)
        .env("KAWAL_CRASH_START", start.to_string());
    c
}

/// Writes records `k<i>` from a start index and prints `ACK <i>` after each durable put
/// returns, until killed. Runs only as the harness's child process.
#[test]
#[ignore = "child process of the kill -9 harness below; it runs it"]
fn crash_writer_child() {
    use std::io::Write;
    let dir = PathBuf::from(std::env::var_os("KAWAL_CRASH_DIR").expect("run only by the harness"));
    let start: u64 = std::env::var("KAWAL_CRASH_START").unwrap().parse().unwrap();
    let root_path = dir.join("root.sealed");
    let root = if root_path.exists() {
        RootSecret::unseal(&std::fs::read(&root_path).unwrap(), &KEK, b"crash").unwrap()
    } else {
        let r = RootSecret::generate().unwrap();
        std::fs::write(&root_path, r.seal(&KEK, b"crash").unwrap()).unwrap();
        r
    };
    let keys = Arc::new(KeyHierarchy::new(root));
    let path = dir.join("store.redb");
    let store = if path.exists() {
        Store::open(&path, keys, Sharing::MultiProcess).unwrap()
    } else {
        Store::create(&path, keys, Sharing::MultiProcess).unwrap()
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "READY").unwrap();
    out.flush().unwrap();
    for i in start.. {
        store
            .put(Table::data("crash"), &format!("k{i}"), value(i).as_bytes())
            .unwrap();
        writeln!(out, "ACK {i}").unwrap();
        out.flush().unwrap();
    }
}

fn value(i: u64) -> String {
    format!("value-{i}-{}", "x".repeat((i % 97) as usize))
}

struct XorShift(u64);
impl XorShift {
    fn next(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}

/// G045: DS-1-3, PL-4-2
#[test]
fn acknowledged_writes_survive_kill_9_at_random_points() {
    let dir = tempfile::tempdir().unwrap();
    let seed = u64::from_le_bytes(kawal_crypto::rng::array().unwrap()) | 1;
    eprintln!("seed {seed}");
    let mut rng = XorShift(seed);
    let mut next = 0u64;
    let mut acked_total = 0u64;
    let cycles = 200;
    for cycle in 0..cycles {
        let mut child = writer(dir.path(), next)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // The test harness prints its own lines first; wait for the writer's.
        let ready = lines
            .by_ref()
            .map_while(Result::ok)
            .any(|l| l.ends_with("READY"));
        assert!(ready, "cycle {cycle}: writer failed to open the store");
        // Let it acknowledge a random number of writes, then kill it at a random moment
        // (often in the middle of a commit).
        let target = rng.next(12);
        let mut last_ack = None;
        for _ in 0..target {
            let line = lines.next().unwrap().unwrap();
            last_ack = Some(line.strip_prefix("ACK ").unwrap().parse::<u64>().unwrap());
        }
        std::thread::sleep(Duration::from_micros(rng.next(3000)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // Acks the writer printed before it died also count: they were acknowledged.
        for line in lines.map_while(Result::ok) {
            if let Some(n) = line.strip_prefix("ACK ") {
                last_ack = Some(n.parse().unwrap());
            }
        }
        let keys = Arc::new(KeyHierarchy::new(
            RootSecret::unseal(
                &std::fs::read(dir.path().join("root.sealed")).unwrap(),
                &KEK,
                b"crash",
            )
            .unwrap(),
        ));
        let store = Store::open(&dir.path().join("store.redb"), keys, Sharing::MultiProcess)
            .unwrap_or_else(|e| panic!("cycle {cycle}: store does not reopen after kill: {e}"));
        if let Some(last) = last_ack {
            for i in next..=last {
                let got = store.get(Table::data("crash"), &format!("k{i}")).unwrap();
                assert_eq!(
                    got.as_deref().map(|v| v.to_vec()),
                    Some(value(i).into_bytes()),
                    "cycle {cycle}: acknowledged record k{i} lost"
                );
            }
            acked_total += last + 1 - next;
            next = last + 1;
        }
        // Whatever was in flight may or may not be there; skip past it.
        next += 1;
    }
    assert!(
        acked_total > cycles,
        "too few acknowledged writes to mean anything: {acked_total}"
    );
}
