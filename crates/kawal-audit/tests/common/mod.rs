//! Helpers shared by the integration tests: a test signer, a log in a temp folder, and
//! line-level access to the segment files (what an attacker with file access has).
#![allow(
    dead_code,
    reason = "each test file uses a different subset of these helpers"
)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers: a failed setup is a failed test"
)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use kawal_audit::{
    Anchor, AnchorStore, AuditLog, AuditOptions, CheckpointSigner, ClockState, Entry, EntryHash,
    Event, FileAnchorStore, Outcome, SystemClock, Timestamp, TrustedKeys, WallTime,
};

pub const UID: &str = "KWL-TEST-0001";

/// An Ed25519 signer with a fresh key (stands in for the key hierarchy's audit key).
pub struct TestSigner {
    key: Ed25519KeyPair,
    version: u32,
}

impl TestSigner {
    pub fn new(version: u32) -> Self {
        Self {
            key: Ed25519KeyPair::generate().expect("keygen"),
            version,
        }
    }
}

impl CheckpointSigner for TestSigner {
    fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.key
            .sign(msg)
            .as_ref()
            .try_into()
            .expect("64-byte signature")
    }
    fn public_key(&self) -> [u8; 32] {
        self.key
            .public_key()
            .as_ref()
            .try_into()
            .expect("32-byte key")
    }
    fn key_version(&self) -> u32 {
        self.version
    }
}

/// A clock whose state the test sets.
pub struct FixedClock {
    pub state: Mutex<(i64, ClockState, u64)>,
}

impl FixedClock {
    pub fn new(micros: i64, clock: ClockState) -> Self {
        Self {
            state: Mutex::new((micros, clock, 1_000)),
        }
    }
    pub fn set(&self, micros: i64, clock: ClockState) {
        let mut s = self.state.lock().unwrap();
        s.0 = micros;
        s.1 = clock;
    }
}

impl kawal_audit::Clock for FixedClock {
    fn now(&self) -> Timestamp {
        let mut s = self.state.lock().unwrap();
        s.2 += 1_000; // a monotonic clock always moves on
        Timestamp {
            wall: WallTime::from_unix_micros(s.0).unwrap(),
            clock: s.1,
            mono_ns: s.2,
        }
    }
}

/// A log in a temp folder with its signer and an anchor file outside the log folder.
pub struct Fixture {
    pub tmp: tempfile::TempDir,
    pub signer: Arc<TestSigner>,
    pub anchors: Arc<FileAnchorStore>,
}

impl Fixture {
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let anchors = Arc::new(FileAnchorStore::new(tmp.path().join("anchor.json")));
        Self {
            tmp,
            signer: Arc::new(TestSigner::new(1)),
            anchors,
        }
    }

    pub fn dir(&self) -> &Path {
        self.tmp.path()
    }

    pub fn open_with(&self, options: AuditOptions) -> kawal_audit::Result<AuditLog> {
        AuditLog::open(
            self.dir(),
            UID,
            self.signer.clone(),
            self.anchors.clone(),
            Arc::new(SystemClock::new()),
            options,
        )
    }

    pub fn open(&self) -> AuditLog {
        self.open_with(small_options()).unwrap()
    }

    pub fn trusted(&self) -> TrustedKeys {
        TrustedKeys::new().with(self.signer.key_version(), self.signer.public_key())
    }

    pub fn anchor(&self) -> Option<Anchor> {
        self.anchors.load().unwrap()
    }

    pub fn verify(&self) -> Result<kawal_audit::VerifyReport, kawal_audit::VerifyError> {
        kawal_audit::verify(self.dir(), UID, &self.trusted(), self.anchor().as_ref())
    }

    pub fn verify_without_anchor(
        &self,
    ) -> Result<kawal_audit::VerifyReport, kawal_audit::VerifyError> {
        kawal_audit::verify(self.dir(), UID, &self.trusted(), None)
    }

    /// Writes `n` events (checkpoint every 10) and closes the log.
    pub fn fill(&self, n: u64) {
        let log = self.open();
        for i in 0..n {
            log.append(event(i)).unwrap();
        }
        log.close().unwrap();
    }

    pub fn segments(&self) -> Vec<PathBuf> {
        let mut v: Vec<_> = std::fs::read_dir(self.dir().join("audit"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
            .collect();
        v.sort();
        v
    }

    /// All lines of all segments, as (segment, line) pairs.
    pub fn all_lines(&self) -> Vec<(PathBuf, String)> {
        self.segments()
            .into_iter()
            .flat_map(|p| read_lines(&p).into_iter().map(move |l| (p.clone(), l)))
            .collect()
    }
}

pub fn small_options() -> AuditOptions {
    AuditOptions {
        checkpoint_every: 10,
        ..AuditOptions::default()
    }
}

pub fn event(i: u64) -> Event {
    Event::new("auth.login", "alice", Outcome::Success)
        .with("n", i)
        .with("ip", "192.0.2.7")
}

pub fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

pub fn write_lines(path: &Path, lines: &[String]) {
    let mut s = lines.join("\n");
    if !lines.is_empty() {
        s.push('\n');
    }
    std::fs::write(path, s).unwrap();
}

pub fn parse(line: &str) -> Entry {
    kawal_audit::canonical::parse_entry(line.as_bytes()).unwrap()
}

pub fn line_of(e: &Entry) -> String {
    String::from_utf8(e.canonical_bytes()).unwrap()
}

/// Recomputes `prev` (and checkpoint `head`/`count`) of every entry from index `from` on, as
/// an attacker rewriting the chain would; checkpoints keep their now-invalid signatures unless
/// `resign` re-signs them.
pub fn rechain(lines: &mut [String], from: usize, resign: Option<&dyn CheckpointSigner>) {
    let mut prev = if from == 0 {
        EntryHash::ZERO
    } else {
        parse(&lines[from - 1]).hash()
    };
    for line in lines.iter_mut().skip(from) {
        let mut e = parse(line);
        e.prev = prev;
        if let Some(cp) = e.checkpoint.as_mut() {
            cp.head = prev;
            cp.count = e.seq - 1;
            if let Some(s) = resign {
                let msg = kawal_audit::chain::checkpoint_message(UID, e.seq, &cp.head, cp.count);
                cp.sig = s.sign(&msg);
                cp.key_version = s.key_version();
            }
        }
        *line = line_of(&e);
        prev = e.hash();
    }
}

/// The bad entry `verify` reports; panics if verification passed.
pub fn bad(
    r: Result<kawal_audit::VerifyReport, kawal_audit::VerifyError>,
) -> kawal_audit::BadEntry {
    match r {
        Err(kawal_audit::VerifyError::Bad(b)) => *b,
        other => panic!("expected a bad entry, got {other:?}"),
    }
}
