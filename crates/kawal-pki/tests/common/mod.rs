//! Shared helpers for the sensor CA and registry tests: a store in a temporary directory,
//! sensor keys and CSRs, and the OpenSSL command line as an independent reader.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers: a failure should stop the test loudly"
)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use kawal_crypto::keys::KeyHierarchy;
use kawal_crypto::root::RootSecret;
use kawal_pki::{IdentityKey, SensorCa, Sensors, device_csr_pem};
use kawal_store::{Sharing, Store};
use x509_parser::pem::parse_x509_pem;
use x509_parser::prelude::{FromDer, X509Certificate};

pub const GATEWAY: &str = "kw-gateway-0001";

/// A store, its directory (kept alive) and its file.
pub struct TestStore {
    pub dir: tempfile::TempDir,
    pub store: Arc<Store>,
}

impl TestStore {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let keys = Arc::new(KeyHierarchy::new(RootSecret::generate().unwrap()));
        let store = Arc::new(
            Store::create(&dir.path().join("store.redb"), keys, Sharing::Exclusive).unwrap(),
        );
        Self { dir, store }
    }

    /// Every byte of every file in the store's directory.
    pub fn disk_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(self.dir.path()).unwrap() {
            let p = e.unwrap().path();
            if p.is_file() {
                out.extend(std::fs::read(p).unwrap());
            }
        }
        out
    }
}

/// A clock the test moves by hand.
#[derive(Clone)]
pub struct TestClock(pub Arc<AtomicI64>);

impl TestClock {
    pub fn now() -> Self {
        Self(Arc::new(AtomicI64::new(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
                .try_into()
                .unwrap(),
        )))
    }
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
    pub fn advance(&self, secs: i64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
}

/// A registry with its own store, CA and hand-moved clock.
pub struct Fixture {
    pub store: TestStore,
    pub ca: Arc<SensorCa>,
    pub sensors: Sensors,
    pub clock: TestClock,
}

impl Fixture {
    pub fn new() -> Self {
        let store = TestStore::new();
        let ca = Arc::new(SensorCa::load_or_create(&store.store, GATEWAY).unwrap());
        let clock = TestClock::now();
        let c = clock.clone();
        let sensors = Sensors::new(store.store.clone(), ca.clone()).with_clock(move || c.get());
        Self {
            store,
            ca,
            sensors,
            clock,
        }
    }
}

/// A fresh sensor key and its CSR (PEM), whose own name is `csr_name`.
pub fn sensor_csr(csr_name: &str) -> (IdentityKey, String) {
    let key = IdentityKey::generate().unwrap();
    let csr = device_csr_pem(&key, csr_name).unwrap();
    (key, csr)
}

/// The DER inside a PEM block with `label`.
pub fn der_of(pem: &str, label: &str) -> Vec<u8> {
    let (_, block) = parse_x509_pem(pem.as_bytes()).unwrap();
    assert_eq!(block.label, label);
    block.contents
}

/// Runs a closure on the parsed certificate.
pub fn with_cert<T>(der: &[u8], f: impl FnOnce(&X509Certificate<'_>) -> T) -> T {
    let (rest, cert) = X509Certificate::from_der(der).unwrap();
    assert!(rest.is_empty());
    f(&cert)
}

/// Runs `openssl` with `args` in `dir`; stdout on success, a panic with stderr otherwise.
pub fn openssl(dir: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl command line is needed for these tests (apt-get install openssl)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

/// Writes `bytes` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// A CSR made by OpenSSL with `newkey` options (e.g. `["rsa:2048"]`), DER.
pub fn openssl_csr(dir: &Path, newkey: &[&str], extra: &[&str]) -> Vec<u8> {
    let mut args = vec![
        "req",
        "-new",
        "-nodes",
        "-subj",
        "/CN=evil-ca",
        "-keyout",
        "k.pem",
    ];
    args.extend_from_slice(newkey);
    args.extend_from_slice(extra);
    args.extend_from_slice(&["-outform", "DER", "-out", "req.der"]);
    openssl(dir, &args).unwrap();
    std::fs::read(dir.join("req.der")).unwrap()
}

/// A serial as OpenSSL prints it: upper case, an even number of digits.
pub fn openssl_serial(serial: &str) -> String {
    let up = serial.to_ascii_uppercase();
    if up.len() % 2 == 1 {
        format!("0{up}")
    } else {
        up
    }
}
