//! Signed updates for the tests: the vendor's repository and bundles made with the real
//! `kawal update bundle|repo`, and a device configured for them, started under `kawal boot`.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers"
)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::gateway::{Gateway, set};
use super::{d, run};

/// The product name the test bundles carry.
pub const PRODUCT: &str = "kawal-gateway";
/// The hardware id of the test device.
pub const HARDWARE: &str = "board-x1";

/// The vendor's side: a repository, and a payload folder holding this build of kawal.
pub struct Vendor {
    /// The repository folder (keys inside).
    pub repo: PathBuf,
    /// What devices read.
    pub published: PathBuf,
    /// The payload folder: this build of kawal.
    pub payload: PathBuf,
    work: PathBuf,
}

impl Vendor {
    /// A new repository in `dir`, published once (empty).
    pub fn new(dir: &Path) -> Self {
        let v = Self {
            repo: dir.join("repo"),
            published: dir.join("published"),
            payload: dir.join("payload"),
            work: dir.to_path_buf(),
        };
        let r = run(&["update", "repo", "init", "--dir", d(&v.repo)]);
        assert_eq!(r.code, 0, "{}", r.all());
        v.publish();
        std::fs::create_dir_all(&v.payload).unwrap();
        let exe = v.payload.join("kawal");
        std::fs::copy(env!("CARGO_BIN_EXE_kawal"), &exe).unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        v
    }

    /// Makes, adds and publishes a bundle of `version`; returns the bundle's size.
    pub fn release(&self, version: &str, security_version: u64, checks: &[&str]) -> u64 {
        self.release_edited(version, security_version, checks, |_| {})
    }

    /// Like [`Vendor::release`], with `edit` applied to the bundle's bytes before it is signed:
    /// a vendor's own mistake, which the signatures then vouch for.
    pub fn release_edited(
        &self,
        version: &str,
        security_version: u64,
        checks: &[&str],
        edit: impl FnOnce(&mut Vec<u8>),
    ) -> u64 {
        let out = self.work.join(format!("kawal-{version}.bundle"));
        let sv = security_version.to_string();
        let mut args = vec![
            "update",
            "bundle",
            "--payload",
            d(&self.payload),
            "--product",
            PRODUCT,
            "--version",
            version,
            "--security-version",
            &sv,
            "--hardware",
            HARDWARE,
            "--max-boots",
            "2",
            "--deadline-s",
            "60",
            "--out",
            d(&out),
        ];
        for c in checks {
            args.extend(["--check", c]);
        }
        let r = run(&args);
        assert_eq!(r.code, 0, "{}", r.all());
        let mut bytes = std::fs::read(&out).unwrap();
        edit(&mut bytes);
        std::fs::write(&out, &bytes).unwrap();
        let r = run(&[
            "update",
            "repo",
            "add",
            "--dir",
            d(&self.repo),
            "--bundle",
            d(&out),
        ]);
        assert_eq!(r.code, 0, "{}", r.all());
        self.publish();
        let size = std::fs::metadata(&out).unwrap().len();
        // The published copy is what the device reads.
        std::fs::remove_file(&out).unwrap();
        size
    }

    /// Copies what devices read to the published folder.
    pub fn publish(&self) {
        let r = run(&[
            "update",
            "repo",
            "publish",
            "--dir",
            d(&self.repo),
            "--out",
            d(&self.published),
        ]);
        assert_eq!(r.code, 0, "{}", r.all());
    }
}

/// A device whose `[update]` reads `vendor`'s published repository, started under
/// `kawal boot --supervise` (which seeds slot A with this build).
pub fn device(vendor: &Vendor) -> Gateway {
    let mut gw = Gateway::provision_with(|cfg| {
        set(cfg, "update", "source", d(&vendor.published));
        set(cfg, "update", "product", PRODUCT);
        set(cfg, "update", "hardware", HARDWARE);
        set(
            cfg,
            "update",
            "root",
            d(&vendor.repo.join("metadata/1.root.json")),
        );
    });
    gw.spawn_boot();
    gw
}
