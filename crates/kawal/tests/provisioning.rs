//! `kawal init`: UID, one-time password, refusal to provision twice.
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

/// G045: AU-1-4, AU-2-1
#[test]
fn the_admin_password_is_unique_shown_once_and_never_stored() {
    let (_t1, data1, pw1) = provisioned();
    let (_t2, _data2, pw2) = provisioned();
    assert_ne!(pw1, pw2, "two devices got the same password");
    let symbols = pw1.chars().filter(|c| *c != '-').count();
    assert!(symbols as f64 * 56f64.log2() >= 80.0, "{pw1} too short");
    assert!(
        holders(&data1, pw1.as_bytes()).is_empty(),
        "password found in the data folder"
    );
    assert!(holders(&data1, pw1.replace('-', "").as_bytes()).is_empty());
    // Not derived from the UID.
    assert!(!pw1.contains("test-device"));
}

/// G045: AU-3-1
#[test]
fn a_provisioned_device_is_never_provisioned_again() {
    let (_t, data, _) = provisioned();
    let before = files(&data);
    let r = run(&[
        "init",
        "--data-dir",
        d(&data),
        "--dev",
        "--uid",
        "another-uid",
    ]);
    assert_eq!(r.code, 77, "{}", r.all());
    assert!(
        r.stderr.contains("already holds a provisioned device"),
        "{}",
        r.stderr
    );
    let after = files(&data);
    assert_eq!(before.len(), after.len());
    for ((p, a), (_, b)) in before.iter().zip(after.iter()) {
        assert_eq!(a, b, "{} changed", p.display());
    }
    let info = std::fs::read_to_string(data.join("device.json")).unwrap();
    assert!(info.contains("\"uid\": \"test-device-01\""), "{info}");
}

/// G045: AU-3-1
#[test]
fn an_edited_uid_makes_the_device_refuse_to_open() {
    let (_t, data, _) = provisioned();
    let path = data.join("device.json");
    let info = std::fs::read_to_string(&path)
        .unwrap()
        .replace("test-device-01", "test-device-99");
    std::fs::write(&path, info).unwrap();
    let r = run(&["selftest", "--data-dir", d(&data)]);
    assert_eq!(r.code, 65, "{}", r.all());
    assert!(r.stderr.contains("cannot unseal"), "{}", r.stderr);
}

/// G045: AU-3-1
#[test]
fn the_uid_is_derived_from_hardware_identity_when_not_given() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("d");
    let r = run(&["init", "--data-dir", d(&data)]);
    assert_eq!(r.code, 0, "{}", r.all());
    let uid = r.stdout.split_whitespace().nth(1).unwrap().to_owned();
    assert!(uid.starts_with("kw-"), "{uid}");
    let machine_id = std::fs::read_to_string("/etc/machine-id").unwrap_or_default();
    assert!(machine_id.trim().is_empty() || !uid.contains(machine_id.trim()));
    // Without --dev, a CSR for the factory CA is written.
    let csr = std::fs::read_to_string(data.join("pki/device.csr.pem")).unwrap();
    assert!(csr.contains("BEGIN CERTIFICATE REQUEST"));
}

#[test]
fn label_out_writes_the_password_to_a_private_file_only() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("d");
    let label = tmp.path().join("label.txt");
    let r = run(&[
        "init",
        "--data-dir",
        d(&data),
        "--dev",
        "--uid",
        "u-1",
        "--label-out",
        d(&label),
    ]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        !r.stdout.contains("admin password (shown once"),
        "{}",
        r.stdout
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&label).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(
        std::fs::read_to_string(&label)
            .unwrap()
            .contains("admin password")
    );
}
