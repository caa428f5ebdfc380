//! `kawal reset --secure`: nothing planted survives, and an old copy of the store cannot be opened.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::string_slice,
    clippy::cast_precision_loss,
    reason = "test code: a failure should stop the test loudly"
)]
mod common;
use std::sync::Arc;

use common::*;
use kawal_crypto::keys::KeyHierarchy;
use kawal_crypto::root::RootSecret;
use kawal_store::{Sharing, Store, Table};

/// G045: DS-1-4, DS-1-5, DS-4-1
#[test]
fn secure_reset_leaves_nothing_readable() {
    let (t, data, pw) = provisioned();
    // Plant PII through the product's own store.
    {
        let dev = kawal::device::Device::open(&data, None).unwrap();
        dev.store
            .put(
                Table::pii("people"),
                "aisyah.binti.ahmad",
                b"phone +60-12-7654321",
            )
            .unwrap();
        dev.store
            .put(Table::data("notes"), "planted", b"PLAINTEXT-CANARY-7731")
            .unwrap();
    }
    let copy = t.path().join("store-copy.redb");
    std::fs::copy(data.join("store.redb"), &copy).unwrap();
    let sealed_copy = std::fs::read(data.join("root.sealed")).unwrap();
    // Without --yes, a wrong confirmation changes nothing.
    let mut c = kawal();
    c.args(["reset", "--secure", "--data-dir", d(&data)])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"wrong-uid\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(77));
    assert!(data.join("root.sealed").exists());

    let r = run(&["reset", "--secure", "--yes", "--data-dir", d(&data)]);
    assert_eq!(r.code, 0, "{}", r.all());
    let left = files(&data);
    assert_eq!(
        left.len(),
        1,
        "only the receipt stays: {:?}",
        left.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    let receipt = String::from_utf8(left[0].1.clone()).unwrap();
    assert!(
        receipt.contains("\"final-record-signed\": true"),
        "{receipt}"
    );
    for needle in [
        &b"aisyah"[..],
        b"+60-12",
        b"PLAINTEXT-CANARY",
        pw.as_bytes(),
    ] {
        assert!(
            holders(&data, needle).is_empty(),
            "{:?} survived",
            String::from_utf8_lossy(needle)
        );
    }
    // Nothing left can open the pre-reset copy: the sealed root is gone, and no byte of its
    // sealed body survives anywhere in the folder.
    assert!(!data.join("root.sealed").exists());
    let body = &sealed_copy[53..];
    for window in body.windows(16) {
        assert!(
            holders(&data, window).is_empty(),
            "part of the sealed root survived"
        );
    }
    assert!(kawal::device::Device::open(&data, None).is_err());
    let other = Arc::new(KeyHierarchy::new(RootSecret::generate().unwrap()));
    assert!(Store::open(&copy, other, Sharing::MultiProcess).is_err());
    // The folder can be provisioned anew.
    let r = run(&[
        "init",
        "--data-dir",
        d(&data),
        "--dev",
        "--uid",
        "test-device-02",
    ]);
    assert_eq!(r.code, 0, "{}", r.all());
}
