//! A directory over a real encrypted store in a temporary folder, with cheap Argon2id.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail loudly"
)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kawal_auth::accounts::{Directory, DirectoryConfig};
use kawal_crypto::keys::KeyHierarchy;
use kawal_crypto::password::Argon2Params;
use kawal_crypto::root::RootSecret;
use kawal_crypto::secret::SecretString;
use kawal_store::{Sharing, Store};

/// The device UID the tests' passwords are checked against.
pub const UID: &str = "kw-test-0001";

/// A clock reading well past the epoch.
pub const T0: u64 = 1_750_000_000;

/// A store, its keys and its folder, kept alive together.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub keys: Arc<KeyHierarchy>,
    pub store: Arc<Store>,
}

impl Fixture {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let keys = Arc::new(KeyHierarchy::new(RootSecret::generate().unwrap()));
        let store = Arc::new(
            Store::create(
                &dir.path().join("store.redb"),
                keys.clone(),
                Sharing::Exclusive,
            )
            .unwrap(),
        );
        Self { dir, keys, store }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("store.redb")
    }

    /// A directory over this store with the test configuration.
    pub fn directory(&self) -> Arc<Directory> {
        Arc::new(Directory::new(self.store.clone(), config()))
    }

    /// Drops the store (every other holder must be gone) and opens it again from disk.
    pub fn reopen(self) -> Self {
        let Self { dir, keys, store } = self;
        assert_eq!(
            Arc::strong_count(&store),
            1,
            "something still holds the store"
        );
        drop(store);
        let store = Arc::new(
            Store::open(
                &dir.path().join("store.redb"),
                keys.clone(),
                Sharing::Exclusive,
            )
            .unwrap(),
        );
        Self { dir, keys, store }
    }

    /// Every byte of every file in the store's folder.
    pub fn disk_bytes(&self) -> Vec<u8> {
        all_bytes(self.dir.path())
    }
}

/// The default rules and lockout, cheap Argon2id.
pub fn config() -> DirectoryConfig {
    DirectoryConfig {
        argon2: Argon2Params::TEST,
        ..DirectoryConfig::new(UID)
    }
}

pub fn secret(s: &str) -> SecretString {
    SecretString::new(s.to_owned())
}

const W1: [&str; 10] = [
    "amber", "bright", "copper", "dusty", "eager", "frosty", "golden", "hollow", "ivory", "jolly",
];
const W2: [&str; 10] = [
    "lantern", "mango", "nebula", "orchid", "pelican", "quartz", "rickshaw", "saffron", "tapioca",
    "umbrella",
];
const W3: [&str; 10] = [
    "drifts", "wanders", "sleeps", "hums", "glows", "waits", "swims", "climbs", "whistles",
    "dances",
];
const W4: [&str; 10] = [
    "beside kinabalu",
    "under penang",
    "near melaka",
    "past ipoh",
    "over kuching",
    "around sabah",
    "below langkawi",
    "behind johor",
    "across perak",
    "inside kedah",
];

/// The `i`-th of 100 distinct passphrases that pass the default rules.
pub fn strong(i: usize) -> String {
    format!(
        "{} {} {} {}",
        W1[i % 10],
        W2[(i / 10) % 10],
        W3[(i + i / 10) % 10],
        W4[(i * 3 + 1) % 10]
    )
}

pub fn all_bytes(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            out.extend(std::fs::read(p).unwrap());
        }
    }
    out
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}
