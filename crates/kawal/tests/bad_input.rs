//! Bad input: a clear error, a non-zero exit, nothing overwritten.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::string_slice,
    clippy::cast_precision_loss,
    reason = "test code: a failure should stop the test loudly"
)]
mod common;
use common::*;

fn snapshot(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut f = files(dir);
    f.sort();
    f
}

/// G045: CR-1-2
#[test]
fn a_corrupted_sealed_root_is_refused_and_left_alone() {
    let (_t, data, _) = provisioned();
    let path = data.join("root.sealed");
    let mut blob = std::fs::read(&path).unwrap();
    blob[70] ^= 0x40;
    std::fs::write(&path, &blob).unwrap();
    let before = snapshot(&data);
    for args in [
        vec!["selftest", "--data-dir", d(&data)],
        vec!["audit", "--data-dir", d(&data)],
        vec!["log", "verify", "--data-dir", d(&data)],
    ] {
        let r = run(&args);
        assert_eq!(r.code, 65, "{args:?}: {}", r.all());
        assert!(
            r.stderr.contains("cannot unseal the root secret"),
            "{}",
            r.stderr
        );
    }
    assert_eq!(before, snapshot(&data), "something was modified");
}

/// G045: CR-1-2
#[test]
fn a_passphrase_is_required_and_a_wrong_one_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("d");
    let r = run_cmd(
        kawal()
            .args(["init", "--data-dir", d(&data), "--dev", "--uid", "pp-1"])
            .env("KAWAL_PASSPHRASE", "a long operator passphrase"),
    );
    assert_eq!(r.code, 0, "{}", r.all());
    let r = run(&["selftest", "--data-dir", d(&data)]);
    assert_eq!(r.code, 77, "{}", r.all());
    assert!(r.stderr.contains("passphrase"));
    let r = run_cmd(
        kawal()
            .args(["selftest", "--data-dir", d(&data)])
            .env("KAWAL_PASSPHRASE", "a wrong operator passphrase"),
    );
    assert_eq!(r.code, 65, "{}", r.all());
    let r = run_cmd(
        kawal()
            .args(["selftest", "--data-dir", d(&data)])
            .env("KAWAL_PASSPHRASE", "a long operator passphrase"),
    );
    assert_eq!(r.code, 0, "{}", r.all());
    // A world-readable passphrase file is refused.
    let pf = tmp.path().join("pass");
    std::fs::write(&pf, "a long operator passphrase\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&pf, std::fs::Permissions::from_mode(0o644)).unwrap();
    let r = run(&[
        "selftest",
        "--data-dir",
        d(&data),
        "--passphrase-file",
        d(&pf),
    ]);
    assert_eq!(r.code, 77, "{}", r.all());
    std::fs::set_permissions(&pf, std::fs::Permissions::from_mode(0o600)).unwrap();
    let r = run(&[
        "selftest",
        "--data-dir",
        d(&data),
        "--passphrase-file",
        d(&pf),
    ]);
    assert_eq!(r.code, 0, "{}", r.all());
}

/// G045: DS-1-3
#[test]
fn a_truncated_or_foreign_store_is_a_clear_error() {
    let (_t, data, _) = provisioned();
    let store = data.join("store.redb");
    let bytes = std::fs::read(&store).unwrap();
    std::fs::write(&store, &bytes[..bytes.len() / 4]).unwrap();
    let r = run(&["selftest", "--data-dir", d(&data)]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("store"), "{}", r.stderr);
    // Another device's store.
    let (_t2, other, _) = provisioned();
    std::fs::copy(other.join("store.redb"), &store).unwrap();
    let r = run(&["selftest", "--data-dir", d(&data)]);
    assert_eq!(r.code, 65, "{}", r.all());
    assert!(r.stderr.contains("another device"), "{}", r.stderr);
}

#[test]
fn garbage_configs_are_refused_with_every_problem_named() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("k.toml");
    std::fs::write(&cfg, "data-dir = 'relative'\n[listen]\napi = 'nowhere'\n").unwrap();
    let r = run(&["config", "check", d(&cfg)]);
    assert_eq!(r.code, 78, "{}", r.all());
    assert!(
        r.stderr.contains("data-dir") && r.stderr.contains("listen.api"),
        "{}",
        r.stderr
    );
    std::fs::write(&cfg, [0xff, 0xfe, 0x00, 0x01]).unwrap();
    assert_eq!(run(&["config", "check", d(&cfg)]).code, 78);
    std::fs::write(&cfg, "data-dir = '/x'\nunknown-key = 1\n").unwrap();
    let r = run(&["config", "check", d(&cfg)]);
    assert_eq!(r.code, 78);
    assert!(r.stderr.contains("unknown-key"), "{}", r.stderr);
    std::fs::write(&cfg, "data-dir = '/x'\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o666)).unwrap();
    let r = run(&["config", "check", d(&cfg)]);
    assert_eq!(r.code, 77, "{}", r.all());
    assert!(r.stderr.contains("writable"), "{}", r.stderr);
}

#[test]
fn an_unprovisioned_folder_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let r = run(&["audit", "--data-dir", d(tmp.path())]);
    assert_eq!(r.code, 66);
    assert!(r.stderr.contains("not a provisioned kawal device"));
    // A data dir that is a file.
    let f = tmp.path().join("file");
    std::fs::write(&f, b"x").unwrap();
    let r = run(&[
        "init",
        "--data-dir",
        d(&f.join("sub")),
        "--dev",
        "--uid",
        "x-1",
    ]);
    assert_ne!(r.code, 0);
    assert_eq!(std::fs::read(&f).unwrap(), b"x");
}

/// A read-only data folder: every command that must write fails clearly, nothing is lost.
/// The folder is made read-only by a bind mount inside a private mount namespace
/// (`unshare -m`), so nothing outside the test sees it.
#[test]
fn a_read_only_data_dir_is_a_clear_error_and_loses_nothing() {
    let (_t, data, _) = provisioned();
    let before = snapshot(&data);
    let exe = env!("CARGO_BIN_EXE_kawal");
    let dir = d(&data);
    let script = format!(
        "mount --bind {dir} {dir} && mount -o remount,bind,ro {dir} && \
         for c in 'selftest' 'keys rotate store-data' 'audit --format json' 'reset --secure --yes'; do \
           {exe} $c --data-dir {dir} >/dev/null 2>err.txt; rc=$?; echo \"$c => $rc $(head -c 300 err.txt | tr '\\n' ' ')\"; done"
    );
    let out = std::process::Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .current_dir(_t.path())
        .output()
        .expect("unshare (util-linux) is needed for this test");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "namespace setup failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in text.lines() {
        let (cmd, rest) = line.split_once(" => ").unwrap();
        let code: i32 = rest.split_whitespace().next().unwrap().parse().unwrap();
        assert_ne!(code, 0, "{cmd} succeeded on a read-only folder: {line}");
        assert!(!rest.contains("panicked"), "{cmd} crashed: {line}");
        assert!(rest.contains("kawal:"), "{cmd} gave no clear error: {line}");
    }
    assert_eq!(text.lines().count(), 4, "{text}");
    assert_eq!(before, snapshot(&data), "a read-only folder was changed");
    // Writable again, the device is intact.
    let r = run(&["selftest", "--data-dir", dir]);
    assert_eq!(r.code, 0, "{}", r.all());
}
