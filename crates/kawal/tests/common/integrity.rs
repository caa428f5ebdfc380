//! The integrity manifest for tests of a real daemon: a vendor key made with
//! `kawal integrity keygen`, its public half installed where the default configuration looks,
//! and a signed manifest over files the test names; plus a one-bit flip of a listed file.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers"
)]

use std::path::{Path, PathBuf};

use super::gateway::Gateway;
use super::{d, run, run_cmd};

/// Makes a vendor key in the gateway's temp folder, installs its public half as the device's
/// integrity vendor key, and signs a manifest over `files` (`(role, path)`, roles as
/// `kawal integrity manifest` takes them) at the default place. Returns the manifest's path.
/// The daemon checks it at its next start.
pub fn install_manifest(gw: &Gateway, files: &[(&str, PathBuf)]) -> PathBuf {
    let key = gw.tmp.path().join("vendor.key");
    if !key.exists() {
        let r = run(&["integrity", "keygen", "--out", d(&key)]);
        assert_eq!(r.code, 0, "{}", r.all());
    }
    let dir = gw.data.join("integrity");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(gw.tmp.path().join("vendor.key.pub"), dir.join("vendor.pub")).unwrap();
    let manifest = dir.join("manifest.toml");
    let mut args = vec![
        "integrity".to_owned(),
        "manifest".into(),
        "--key".into(),
        d(&key).into(),
        "--out".into(),
        d(&manifest).into(),
    ];
    args.extend(files.iter().map(|(role, p)| format!("{role}={}", d(p))));
    let r = run_cmd(super::kawal().args(&args));
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains(&format!("{} file(s)", files.len())),
        "{}",
        r.stdout
    );
    manifest
}

/// A copy of the kawal binary in the gateway's temp folder, to list in a manifest and flip
/// without touching anything the daemon uses.
pub fn binary_copy(gw: &Gateway) -> PathBuf {
    let bin = gw.tmp.path().join("kawal-copy");
    std::fs::copy(env!("CARGO_BIN_EXE_kawal"), &bin).unwrap();
    bin
}

/// Flips one bit of the byte at `at` (from the end when negative); returns the original
/// contents. The file's mode is kept: only the contents change.
pub fn flip(path: &Path, at: i64) -> Vec<u8> {
    let orig = std::fs::read(path).unwrap();
    let mut b = orig.clone();
    let i = if at < 0 {
        b.len() - usize::try_from(at.unsigned_abs()).unwrap()
    } else {
        usize::try_from(at).unwrap()
    };
    b[i] ^= 0x01;
    std::fs::write(path, &b).unwrap();
    orig
}
