//! Vendor tooling for the tests: builds and signs TUF repositories with tough's editor API, using
//! keys made in the test (Ed25519 and ECDSA P-256), and writes them to a folder.

#![allow(
    dead_code,
    reason = "each test file uses a different part of the helper"
)]
#![allow(
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed expectation is the test failing"
)]

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, Ed25519KeyPair};
use kawal_update::verify::{MetadataLimits, Source, Trust};
use tough::editor::RepositoryEditor;
use tough::editor::signed::SignedRole;
use tough::key_source::KeySource;
use tough::schema::{KeyHolder, RoleKeys, RoleType, Root, Target};
use tough::sign::Sign;

/// A key held in memory (PKCS#8), usable as a tough key source.
#[derive(Debug, Clone)]
pub enum MemKey {
    /// Ed25519.
    Ed25519(Vec<u8>),
    /// ECDSA P-256 with SHA-256.
    EcdsaP256(Vec<u8>),
}

impl MemKey {
    pub fn ed25519() -> Self {
        let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("ed25519 key");
        Self::Ed25519(doc.as_ref().to_vec())
    }

    pub fn ecdsa() -> Self {
        let doc =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &SystemRandom::new())
                .expect("ecdsa key");
        Self::EcdsaP256(doc.as_ref().to_vec())
    }

    fn signer(&self) -> Box<dyn Sign> {
        match self {
            Self::Ed25519(d) => Box::new(Ed25519KeyPair::from_pkcs8(d).expect("ed25519 pkcs8")),
            Self::EcdsaP256(d) => Box::new(
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, d).expect("ecdsa pkcs8"),
            ),
        }
    }

    fn tuf_key(&self) -> tough::schema::key::Key {
        self.signer().tuf_key()
    }
}

#[tough::async_trait]
impl KeySource for MemKey {
    async fn as_sign(
        &self,
    ) -> Result<Box<dyn Sign>, Box<dyn std::error::Error + Send + Sync + 'static>> {
        Ok(self.signer())
    }

    async fn write(
        &self,
        _value: &str,
        _key_id_hex: &str,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        Ok(())
    }
}

/// A vendor: keys per role and thresholds.
#[derive(Debug, Clone)]
pub struct Vendor {
    pub root: Vec<MemKey>,
    pub timestamp: Vec<MemKey>,
    pub snapshot: Vec<MemKey>,
    pub targets: Vec<MemKey>,
    /// Signatures needed on timestamp metadata.
    pub timestamp_threshold: u64,
}

impl Vendor {
    /// One Ed25519 key per role, except timestamp: an ECDSA and an Ed25519 key, threshold 2.
    pub fn new() -> Self {
        Self {
            root: vec![MemKey::ed25519()],
            timestamp: vec![MemKey::ecdsa(), MemKey::ed25519()],
            snapshot: vec![MemKey::ecdsa()],
            targets: vec![MemKey::ed25519()],
            timestamp_threshold: 2,
        }
    }

    fn all_keys(&self) -> Vec<Box<dyn KeySource>> {
        [&self.root, &self.timestamp, &self.snapshot, &self.targets]
            .into_iter()
            .flatten()
            .map(|k| Box::new(k.clone()) as Box<dyn KeySource>)
            .collect()
    }

    /// The signed root metadata of `version`.
    pub async fn root_json(&self, version: u64) -> Vec<u8> {
        let mut root = Root {
            spec_version: "1.0.0".to_owned(),
            consistent_snapshot: false,
            version: NonZeroU64::new(version).expect("version"),
            expires: in_days(365),
            keys: HashMap::new(),
            roles: HashMap::new(),
            _extra: HashMap::new(),
        };
        for (role, keys, threshold) in [
            (RoleType::Root, &self.root, 1),
            (
                RoleType::Timestamp,
                &self.timestamp,
                self.timestamp_threshold,
            ),
            (RoleType::Snapshot, &self.snapshot, 1),
            (RoleType::Targets, &self.targets, 1),
        ] {
            let mut keyids = Vec::new();
            for k in keys {
                let key = k.tuf_key();
                let id = key.key_id().expect("key id");
                root.keys.insert(id.clone(), key);
                keyids.push(id);
            }
            root.roles.insert(
                role,
                RoleKeys {
                    keyids,
                    threshold: NonZeroU64::new(threshold).expect("threshold"),
                    _extra: HashMap::new(),
                },
            );
        }
        let holder = KeyHolder::Root(root.clone());
        let signed = SignedRole::new(root, &holder, &self.all_keys(), &SystemRandom::new())
            .await
            .expect("sign root");
        signed.buffer().clone()
    }
}

/// What one publication contains.
#[derive(Debug, Clone)]
pub struct Release {
    pub root_version: u64,
    pub targets_version: u64,
    pub snapshot_version: u64,
    pub timestamp_version: u64,
    /// Days from now until timestamp metadata expires (negative: already expired).
    pub timestamp_expires_days: i64,
    /// (name, contents, custom metadata "version").
    pub targets: Vec<(String, Vec<u8>, String)>,
}

impl Release {
    /// Version `v` of every role (root stays 1), one target `bundle.kup`.
    pub fn version(v: u64) -> Self {
        Self {
            root_version: 1,
            targets_version: v,
            snapshot_version: v,
            timestamp_version: v,
            timestamp_expires_days: 7,
            targets: vec![(
                "bundle.kup".to_owned(),
                format!("kawal bundle v{v}").repeat(100).into_bytes(),
                format!("{v}.0.0"),
            )],
        }
    }
}

pub fn in_days(days: i64) -> jiff::Timestamp {
    jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_hours(24 * days))
        .expect("timestamp")
}

/// Writes a repository for `release` signed by `vendor` into `dir` (`metadata/`, `targets/`),
/// replacing what was there. Root versions 1..=root_version are all published.
pub async fn publish(vendor: &Vendor, release: &Release, dir: &Path) {
    let metadata = dir.join("metadata");
    let targets = dir.join("targets");
    for d in [&metadata, &targets] {
        let _ = std::fs::remove_dir_all(d);
        std::fs::create_dir_all(d).expect("mkdir");
    }
    for v in 1..=release.root_version {
        std::fs::write(
            metadata.join(format!("{v}.root.json")),
            vendor.root_json(v).await,
        )
        .expect("write root");
    }
    let root_path = metadata.join(format!("{}.root.json", release.root_version));
    let mut editor = RepositoryEditor::new(&root_path).await.expect("editor");
    editor
        .targets_version(NonZeroU64::new(release.targets_version).expect("v"))
        .expect("targets version")
        .targets_expires(in_days(30))
        .expect("targets expires")
        .snapshot_version(NonZeroU64::new(release.snapshot_version).expect("v"))
        .snapshot_expires(in_days(30))
        .timestamp_version(NonZeroU64::new(release.timestamp_version).expect("v"))
        .timestamp_expires(in_days(release.timestamp_expires_days));
    for (name, bytes, version) in &release.targets {
        let path = targets.join(name);
        std::fs::write(&path, bytes).expect("write target");
        let mut target = Target::from_path(&path).await.expect("target");
        target.custom.insert(
            "version".to_owned(),
            serde_json::Value::from(version.as_str()),
        );
        editor
            .add_target(name.as_str(), target)
            .expect("add target");
    }
    let signed = editor.sign(&vendor.all_keys()).await.expect("sign");
    signed.write(&metadata).await.expect("write metadata");
}

/// A device: provisioned root and a datastore, in a temp folder.
pub struct Device {
    pub dir: tempfile::TempDir,
    pub trust: Trust,
}

impl Device {
    pub async fn provision(vendor: &Vendor) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("trusted-root.json");
        std::fs::write(&root, vendor.root_json(1).await).expect("write root");
        let trust = Trust {
            trusted_root: root,
            datastore: dir.path().join("update-trust"),
            limits: MetadataLimits::default(),
        };
        Self { dir, trust }
    }

    pub fn repo_dir(&self) -> PathBuf {
        self.dir.path().join("repo")
    }

    pub fn source(&self) -> Source {
        Source::local_dir(&self.repo_dir()).expect("source")
    }

    /// Every file of the datastore with its contents.
    pub fn datastore_files(&self) -> Vec<(String, Vec<u8>)> {
        let mut files: Vec<_> = std::fs::read_dir(&self.trust.datastore)
            .map(|rd| {
                rd.map(|e| {
                    let e = e.expect("entry");
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        std::fs::read(e.path()).expect("read"),
                    )
                })
                .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
    }
}

/// Edits the JSON of a metadata file in place (without re-signing).
pub fn edit_json(path: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path).expect("read")).expect("json");
    f(&mut v);
    std::fs::write(path, serde_json::to_vec(&v).expect("json")).expect("write");
}
