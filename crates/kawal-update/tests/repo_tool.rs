//! Vendor tooling (`kawal update repo …`): repositories made by `repo` load on a device, keep
//! their signed custom metadata, advance versions, rotate keys, and keep private keys private
//! (G045 PL-2-3).

#![allow(
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed expectation is the test failing"
)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use kawal_update::Error;
use kawal_update::repo::{self, InitOptions};
use kawal_update::verify::{self, MetadataLimits, Source, Trust};
use tough::schema::RoleType;

/// A vendor's repository folder, its published copy and a device, in one temp folder.
struct Setup {
    tmp: tempfile::TempDir,
}

impl Setup {
    async fn new() -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let setup = Self { tmp };
        repo::init(&setup.repo(), &InitOptions::default())
            .await
            .expect("init");
        setup
    }

    fn repo(&self) -> PathBuf {
        self.tmp.path().join("vendor")
    }

    fn www(&self) -> PathBuf {
        self.tmp.path().join("www")
    }

    /// A device provisioned with the repository's first root.
    fn device(&self) -> Trust {
        let root = self.tmp.path().join("trusted-root.json");
        std::fs::copy(self.repo().join("metadata/1.root.json"), &root).expect("provision");
        Trust {
            trusted_root: root,
            datastore: self.tmp.path().join("device-trust"),
            limits: MetadataLimits::default(),
        }
    }

    /// Writes a bundle file named `name` and adds it with the bundle layer's custom keys.
    async fn add(&self, name: &str, version: &str) -> [u64; 4] {
        let file = self.tmp.path().join(name);
        std::fs::write(&file, format!("kawal bundle {version}").repeat(64)).expect("bundle");
        repo::add(&self.repo(), &file, custom(version))
            .await
            .expect("add")
    }
}

fn custom(version: &str) -> BTreeMap<String, serde_json::Value> {
    BTreeMap::from([
        ("product".to_owned(), "kawal-gw".into()),
        ("version".to_owned(), version.into()),
        ("security-version".to_owned(), 3.into()),
        ("hardware".to_owned(), serde_json::json!(["rev-a", "rev-b"])),
    ])
}

async fn read_target(repo: &verify::VerifiedRepository, name: &str) -> Vec<u8> {
    let target = repo.target(name).expect("target");
    let mut out = Vec::new();
    repo.open(&target)
        .await
        .expect("open")
        .copy_to(&mut out)
        .await
        .expect("read");
    out
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

/// G045: PL-2-3
#[tokio::test]
async fn a_published_repository_loads_and_keeps_custom_metadata() {
    let s = Setup::new().await;
    let versions = s.add("kawal-1.0.0.kup", "1.0.0").await;
    assert_eq!(versions, [1, 2, 2, 2], "init signs version 1, add bumps");
    repo::publish(&s.repo(), &s.www()).await.expect("publish");

    let trust = s.device();
    let source = Source::local_dir(&s.www()).expect("source");
    let loaded = verify::load(&trust, &source).await.expect("load");
    assert_eq!(loaded.versions(), [1, 2, 2, 2]);
    let target = loaded.target("kawal-1.0.0.kup").expect("target");
    assert_eq!(target.custom, custom("1.0.0"));
    let bytes = read_target(&loaded, "kawal-1.0.0.kup").await;
    assert_eq!(bytes, "kawal bundle 1.0.0".repeat(64).into_bytes());

    // Only the publishable tree leaves the vendor's folder.
    let mut published: Vec<_> = std::fs::read_dir(s.www())
        .expect("www")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    published.sort();
    assert_eq!(published, ["metadata", "targets"]);
}

/// G045: PL-2-3
#[tokio::test]
async fn a_second_version_bumps_versions_and_a_device_follows() {
    let s = Setup::new().await;
    s.add("kawal-1.0.0.kup", "1.0.0").await;
    repo::publish(&s.repo(), &s.www()).await.expect("publish 1");
    let trust = s.device();
    let source = Source::local_dir(&s.www()).expect("source");
    verify::load(&trust, &source).await.expect("load 1");

    let versions = s.add("kawal-1.1.0.kup", "1.1.0").await;
    assert_eq!(versions, [1, 3, 3, 3]);
    let versions = repo::sign(&s.repo()).await.expect("sign");
    assert_eq!(versions, [1, 4, 4, 4], "re-signing bumps again");
    repo::publish(&s.repo(), &s.www()).await.expect("publish 2");

    let loaded = verify::load(&trust, &source).await.expect("load 2");
    assert_eq!(loaded.versions(), [1, 4, 4, 4]);
    assert_eq!(
        loaded.target("kawal-1.1.0.kup").expect("new").custom,
        custom("1.1.0")
    );
    assert_eq!(
        loaded.target("kawal-1.0.0.kup").expect("old kept").custom,
        custom("1.0.0")
    );
    read_target(&loaded, "kawal-1.1.0.kup").await;
}

/// G045: PL-2-3
#[tokio::test]
async fn key_files_are_private_and_loose_ones_are_refused() {
    let s = Setup::new().await;
    let keys = s.repo().join("keys");
    assert_eq!(mode(&keys), 0o700);
    let files: Vec<_> = std::fs::read_dir(&keys)
        .expect("keys")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(files.len(), 4, "one key per role: {files:?}");
    for file in &files {
        assert_eq!(mode(file), 0o600, "{file:?}");
        let text = std::fs::read_to_string(file).expect("read");
        assert!(text.starts_with("-----BEGIN PRIVATE KEY-----"), "{file:?}");
    }

    let loose = keys.join("targets-1.pem");
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let err = repo::sign(&s.repo()).await.expect_err("loose key");
    assert!(matches!(err, Error::KeyFile { .. }), "{err:?}");
    assert!(!format!("{err} {err:?}").contains("PRIVATE"), "{err:?}");
}

/// G045: PL-2-3
#[tokio::test]
async fn init_refuses_an_existing_repository() {
    let s = Setup::new().await;
    let err = repo::init(&s.repo(), &InitOptions::default())
        .await
        .expect_err("second init");
    assert!(matches!(err, Error::RepoState { .. }), "{err:?}");
}

/// G045: PL-2-3
#[tokio::test]
async fn a_device_follows_a_key_rotation() {
    let s = Setup::new().await;
    s.add("kawal-1.0.0.kup", "1.0.0").await;
    repo::publish(&s.repo(), &s.www()).await.expect("publish 1");
    let trust = s.device();
    let source = Source::local_dir(&s.www()).expect("source");
    verify::load(&trust, &source).await.expect("load 1");

    let versions = repo::rotate_root(&s.repo(), &[RoleType::Root, RoleType::Timestamp])
        .await
        .expect("rotate");
    assert_eq!(versions, [2, 3, 3, 3]);
    assert!(
        s.repo()
            .join("keys/retired")
            .read_dir()
            .expect("retired")
            .count()
            == 2,
        "old root and timestamp keys retired"
    );
    repo::publish(&s.repo(), &s.www()).await.expect("publish 2");
    let loaded = verify::load(&trust, &source).await.expect("load 2");
    assert_eq!(loaded.versions(), [2, 3, 3, 3]);
}
