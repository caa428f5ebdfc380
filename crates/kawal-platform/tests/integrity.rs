//! The integrity manifest catches every changed file, refuses every changed or malformed
//! manifest, and lets only configuration changes signed by the device key through
//! (G045 PL-1-4).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation,
    reason = "tests: a failure should stop the test loudly; test bytes are made by truncating casts"
)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use kawal_platform::SysRoot;
use kawal_platform::integrity::{
    DocKind, Error, FileProblem, FileSpec, PublicKey, Role, SignedDocument, Signer, SigningKey,
    Source, local_entry, make_manifest, sign_local, sign_manifest, signature_path, verify,
    verify_files,
};

const BINARY: &str = "/usr/bin/kawal";
const CONFIG: &str = "/etc/kawal/kawal.toml";
const TRUST: &str = "/etc/kawal/trust/ca.pem";
const SEALED: &str = "/var/lib/kawal/keys/root.sealed";
const EXTRA: &str = "/usr/share/kawal/console.css";

/// A fake installation under a temporary root, with a vendor-signed manifest beside it.
struct Fixture {
    dir: tempfile::TempDir,
    root: SysRoot,
    vendor: SigningKey,
    device: SigningKey,
    manifest: SignedDocument,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = SysRoot(dir.path().join("root"));
        let binary: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        write(&root, BINARY, &binary, 0o755);
        write(&root, CONFIG, b"[api]\nlisten = \"0.0.0.0:8443\"\n", 0o640);
        write(
            &root,
            TRUST,
            b"-----BEGIN CERTIFICATE-----\nMIIB...\n",
            0o644,
        );
        write(&root, SEALED, &[0xA5; 92], 0o600);
        write(&root, EXTRA, b"body { margin: 0 }\n", 0o644);
        let specs = [
            FileSpec::new(BINARY, Role::Binary),
            FileSpec::new(CONFIG, Role::Config).mutable_config(),
            FileSpec::new(TRUST, Role::TrustStore),
            FileSpec::new(SEALED, Role::Key),
            FileSpec::new(EXTRA, Role::Other),
        ];
        let vendor = SigningKey::generate().unwrap();
        let m = make_manifest(&root, &specs, "kawal", "0.1.0").unwrap();
        let manifest = sign_manifest(&m, &vendor).unwrap();
        Self {
            dir,
            root,
            vendor,
            device: SigningKey::generate().unwrap(),
            manifest,
        }
    }

    fn vendor_pub(&self) -> PublicKey {
        self.vendor.public_key()
    }

    fn device_pub(&self) -> PublicKey {
        self.device.public_key()
    }

    fn check(&self, overlay: Option<&SignedDocument>) -> kawal_platform::integrity::Report {
        let device = self.device_pub();
        verify(
            &self.manifest,
            overlay,
            &self.vendor_pub(),
            Some(&device),
            &self.root,
        )
    }

    fn file(&self, abs: &str) -> PathBuf {
        self.root.path(abs)
    }
}

fn write(root: &SysRoot, abs: &str, bytes: &[u8], mode: u32) {
    let p = root.path(abs);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, bytes).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn flip_byte(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
}

/// The paths with problems, and those problems.
fn failures(report: &kawal_platform::integrity::Report) -> Vec<(String, Vec<FileProblem>)> {
    report
        .files
        .iter()
        .filter(|f| !f.is_ok())
        .map(|f| (f.path.clone(), f.problems.clone()))
        .collect()
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// G045: PL-1-4
#[test]
fn an_untouched_installation_verifies() {
    let fx = Fixture::new();
    let report = fx.check(None);
    assert!(report.is_ok(), "{:?}", report.problems());
    assert_eq!(report.files.len(), 5);
    assert!(report.files.iter().all(|f| f.source == Source::Vendor));
    assert_eq!(report.key_id, Some(fx.vendor_pub().key_id()));
    assert_eq!(
        report.product,
        Some(("kawal".to_owned(), "0.1.0".to_owned()))
    );
    let total: u64 = [BINARY, CONFIG, TRUST, SEALED, EXTRA]
        .iter()
        .map(|p| std::fs::metadata(fx.file(p)).unwrap().len())
        .sum();
    assert_eq!(report.bytes_hashed, total);
    let summary = report.summary(3);
    assert!(summary.ok);
    assert_eq!((summary.files_checked, summary.files_failed), (5, 0));
    assert!(
        summary
            .to_string()
            .starts_with("integrity ok: 5 files (0 failed)")
    );
    // Cheap to repeat: the same answer each time.
    for _ in 0..3 {
        assert!(fx.check(None).is_ok());
    }
}

/// G045: PL-1-4
#[test]
fn one_flipped_byte_in_binary_config_trust_store_or_sealed_key_is_caught() {
    let fx = Fixture::new();
    let mut caught = 0;
    for (abs, at) in [(BINARY, 150_000), (CONFIG, 3), (TRUST, 0), (SEALED, 91)] {
        let original = std::fs::read(fx.file(abs)).unwrap();
        flip_byte(&fx.file(abs), at);
        let report = fx.check(None);
        let failed = failures(&report);
        assert_eq!(failed.len(), 1, "{abs}: {failed:?}");
        assert_eq!(failed[0].0, abs);
        assert!(
            matches!(failed[0].1[..], [FileProblem::HashMismatch { .. }]),
            "{abs}: {failed:?}"
        );
        assert!(!report.summary(5).ok);
        caught += 1;
        std::fs::write(fx.file(abs), original).unwrap();
        assert!(fx.check(None).is_ok(), "{abs} restored");
    }
    assert_eq!(caught, 4);
}

/// G045: PL-1-4
#[test]
fn every_flipped_byte_of_the_manifest_body_is_refused() {
    let fx = Fixture::new();
    for at in 0..fx.manifest.body.len() {
        let mut doc = fx.manifest.clone();
        doc.body[at] ^= 0x01;
        let report = verify(&doc, None, &fx.vendor_pub(), None, &fx.root);
        assert!(
            matches!(
                report.manifest_error,
                Some(Error::Tampered {
                    doc: DocKind::Manifest
                })
            ),
            "byte {at}: {:?}",
            report.manifest_error
        );
        assert!(report.files.is_empty(), "no file is checked against it");
        assert!(!report.is_ok());
    }
}

/// G045: PL-1-4
#[test]
fn every_flipped_byte_of_the_manifest_signature_is_refused() {
    let fx = Fixture::new();
    for at in 0..fx.manifest.signature.len() {
        let mut doc = fx.manifest.clone();
        doc.signature[at] ^= 0x01;
        let report = verify(&doc, None, &fx.vendor_pub(), None, &fx.root);
        assert!(
            matches!(
                report.manifest_error,
                Some(
                    Error::MalformedSignature { .. }
                        | Error::UnknownKey { .. }
                        | Error::Tampered { .. }
                        | Error::BadSignature { .. }
                )
            ),
            "byte {at}: {:?}",
            report.manifest_error
        );
        assert!(!report.is_ok());
    }
}

/// G045: PL-1-4
#[test]
fn a_changed_signature_value_is_reported_as_a_bad_signature() {
    let fx = Fixture::new();
    let text = String::from_utf8(fx.manifest.signature.clone()).unwrap();
    let at = text.find("ed25519 = \"").unwrap() + "ed25519 = \"".len() + 10;
    let mut doc = fx.manifest.clone();
    doc.signature[at] = if doc.signature[at] == b'0' {
        b'1'
    } else {
        b'0'
    };
    let report = verify(&doc, None, &fx.vendor_pub(), None, &fx.root);
    let err = report.manifest_error.unwrap();
    assert!(matches!(err, Error::BadSignature { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "integrity manifest signature does not verify"
    );
}

/// G045: PL-1-4
#[test]
fn a_manifest_signed_by_another_key_is_refused() {
    let fx = Fixture::new();
    let other = SigningKey::generate().unwrap();
    let m = fx.manifest.open_manifest(&fx.vendor_pub()).unwrap();
    let forged = sign_manifest(&m, &other).unwrap();
    let err = forged.open_manifest(&fx.vendor_pub()).unwrap_err();
    assert!(matches!(err, Error::UnknownKey { .. }), "{err:?}");
    assert!(err.to_string().contains("signed by unknown key"), "{err}");

    // The other key's signature under the trusted key's id: still refused.
    let vendor_id = fx.vendor_pub().key_id().to_hex();
    let other_id = other.public_key().key_id().to_hex();
    let body = String::from_utf8(forged.body)
        .unwrap()
        .replace(&other_id, &vendor_id);
    let mut doc = SignedDocument::sign_body(DocKind::Manifest, body.into_bytes(), &other).unwrap();
    doc.signature = String::from_utf8(doc.signature)
        .unwrap()
        .replace(&other_id, &vendor_id)
        .into_bytes();
    let err = doc.open_manifest(&fx.vendor_pub()).unwrap_err();
    assert!(matches!(err, Error::BadSignature { .. }), "{err:?}");

    // Verifying with the wrong trusted key fails the same way.
    let report = verify(&fx.manifest, None, &other.public_key(), None, &fx.root);
    assert!(matches!(
        report.manifest_error,
        Some(Error::UnknownKey { .. })
    ));
}

/// G045: PL-1-4
#[test]
fn a_truncated_manifest_is_refused() {
    let fx = Fixture::new();
    // (Cutting only the final newline leaves a valid body: 2 bytes is the least that breaks it.)
    for len in [
        0,
        1,
        40,
        fx.manifest.body.len() / 2,
        fx.manifest.body.len() - 2,
    ] {
        let mut doc = fx.manifest.clone();
        doc.body.truncate(len);
        let err = doc.open_manifest(&fx.vendor_pub()).unwrap_err();
        assert!(matches!(err, Error::Tampered { .. }), "{len}: {err:?}");
        // Even when the vendor signed the truncated body, it does not parse.
        let signed =
            SignedDocument::sign_body(DocKind::Manifest, doc.body.clone(), &fx.vendor).unwrap();
        let err = signed.open_manifest(&fx.vendor_pub()).unwrap_err();
        assert!(matches!(err, Error::Malformed { .. }), "{len}: {err:?}");
    }
    let mut doc = fx.manifest.clone();
    doc.signature.truncate(doc.signature.len() / 2);
    assert!(matches!(
        doc.open_manifest(&fx.vendor_pub()).unwrap_err(),
        Error::MalformedSignature { .. }
    ));
}

/// Re-signs the fixture's manifest body after `edit`, so only the parser can refuse it.
fn resigned(fx: &Fixture, edit: impl Fn(String) -> String) -> Error {
    let body = edit(String::from_utf8(fx.manifest.body.clone()).unwrap());
    let doc = SignedDocument::sign_body(DocKind::Manifest, body.into_bytes(), &fx.vendor).unwrap();
    let report = verify(&doc, None, &fx.vendor_pub(), None, &fx.root);
    assert!(report.files.is_empty());
    report.manifest_error.expect("refused")
}

/// G045: PL-1-4
#[test]
fn unknown_fields_are_refused() {
    let fx = Fixture::new();
    let err = resigned(&fx, |b| {
        b.replacen("product =", "comment = \"x\"\nproduct =", 1)
    });
    assert!(err.to_string().contains("unknown field `comment`"), "{err}");
    let err = resigned(&fx, |b| b.replacen("uid = ", "setuid = true\nuid = ", 1));
    assert!(err.to_string().contains("unknown field `setuid`"), "{err}");
    let err = resigned(&fx, |b| {
        b.replacen("role = \"binary\"", "role = \"rootkit\"", 1)
    });
    assert!(matches!(err, Error::Malformed { .. }), "{err}");
    let err = resigned(&fx, |b| b.replacen("manifest/1", "manifest/2", 1));
    assert!(err.to_string().contains("format is"), "{err}");
    let err = resigned(&fx, |b| format!("{b}\n[extra]\nx = 1\n"));
    assert!(err.to_string().contains("unknown field `extra`"), "{err}");
}

/// G045: PL-1-4
#[test]
fn duplicate_paths_and_keys_are_refused() {
    let fx = Fixture::new();
    let err = resigned(&fx, |b| b.replacen(TRUST, BINARY, 1));
    assert!(
        matches!(&err, Error::DuplicatePath { path, .. } if path == BINARY),
        "{err:?}"
    );
    assert!(err.to_string().contains("is listed twice"), "{err}");
    let err = resigned(&fx, |b| b.replacen("uid = 0", "uid = 0\nuid = 0", 1));
    assert!(matches!(err, Error::Malformed { .. }), "{err}");
    let err = resigned(&fx, |b| {
        b.replacen("version =", "product = \"x\"\nversion =", 1)
    });
    assert!(matches!(err, Error::Malformed { .. }), "{err}");
}

/// G045: PL-1-4
#[test]
fn path_traversal_and_relative_paths_are_refused() {
    let fx = Fixture::new();
    let long = format!("/{}", "a".repeat(5000));
    for bad in [
        "usr/bin/kawal",
        "../../etc/shadow",
        "/usr/bin/../../etc/shadow",
        "/usr/./bin/kawal",
        "/usr//bin/kawal",
        "/usr/bin/",
        "/",
        "",
        "/etc/kawal\\u000a.toml",
        "/etc/\\u0000x",
        long.as_str(),
    ] {
        let err = resigned(&fx, |b| b.replacen(BINARY, bad, 1));
        assert!(matches!(err, Error::InvalidPath { .. }), "{bad:?}: {err:?}");
        assert!(err.to_string().contains("invalid path"), "{err}");
    }
    // make_manifest refuses them too.
    for bad in ["etc/x", "/etc/../x", "/etc/./x"] {
        let err =
            make_manifest(&fx.root, &[FileSpec::new(bad, Role::Other)], "kawal", "1").unwrap_err();
        assert!(matches!(err, Error::InvalidPath { .. }), "{bad}: {err:?}");
    }
}

/// G045: PL-1-4
#[test]
fn oversize_and_malformed_values_are_refused() {
    let fx = Fixture::new();
    let big = vec![b'#'; 1024 * 1024 + 1];
    let doc = SignedDocument::sign_body(DocKind::Manifest, big, &fx.vendor).unwrap();
    let err = doc.open_manifest(&fx.vendor_pub()).unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }), "{err:?}");
    let path = fx.dir.path().join("big.toml");
    doc.write(&path).unwrap();
    assert!(matches!(
        SignedDocument::read(&path).unwrap_err(),
        Error::TooLarge { .. }
    ));

    let cases: [(&str, &str); 6] = [
        ("mode = \"0755\"", "mode = \"755\""),
        ("mode = \"0755\"", "mode = \"0958\""),
        ("size = 300000", "size = -1"),
        ("sha256 = \"", "sha256 = \"A"),
        ("created = \"", "created = \"yesterday"),
        ("product = \"kawal\"", "product = \"\""),
    ];
    for (from, to) in cases {
        let err = resigned(&fx, |b| {
            assert!(b.contains(from), "{from}");
            b.replacen(from, to, 1)
        });
        assert!(matches!(err, Error::Malformed { .. }), "{to}: {err:?}");
    }
    let err = resigned(&fx, |b| b.split("[[file]]").next().unwrap().to_owned());
    assert!(err.to_string().contains("lists no files"), "{err}");
}

/// G045: PL-1-4
#[test]
fn a_manifest_signature_does_not_pass_as_an_overlay_signature() {
    let fx = Fixture::new();
    // The vendor manifest offered as an overlay signed by the same key.
    let err = fx.manifest.open_overlay(&fx.vendor_pub()).unwrap_err();
    assert!(matches!(err, Error::MalformedSignature { .. }), "{err:?}");
    let mut doc = fx.manifest.clone();
    doc.signature = String::from_utf8(doc.signature)
        .unwrap()
        .replace("signs = \"manifest\"", "signs = \"overlay\"")
        .into_bytes();
    let err = doc.open_overlay(&fx.vendor_pub()).unwrap_err();
    assert!(matches!(err, Error::BadSignature { .. }), "{err:?}");
}

/// G045: PL-1-4
#[test]
fn a_config_change_re_signed_by_the_device_key_verifies() {
    let fx = Fixture::new();
    write(
        &fx.root,
        CONFIG,
        b"[api]\nlisten = \"127.0.0.1:8443\"\n",
        0o640,
    );
    let entry = local_entry(&fx.root, CONFIG).unwrap();
    let overlay = sign_local(&[entry], &fx.device).unwrap();
    let report = fx.check(Some(&overlay));
    assert!(report.is_ok(), "{:?}", report.problems());
    let config = report.files.iter().find(|f| f.path == CONFIG).unwrap();
    assert_eq!(config.source, Source::Overlay);

    // Through files, as the daemon will use it.
    let path = fx.dir.path().join("local.toml");
    overlay.write(&path).unwrap();
    let reread = SignedDocument::read(&path).unwrap();
    assert_eq!(reread, overlay);
    assert!(fx.check(Some(&reread)).is_ok());
}

/// G045: PL-1-4
#[test]
fn a_hand_edit_of_the_config_is_caught_with_or_without_an_overlay() {
    let fx = Fixture::new();
    write(
        &fx.root,
        CONFIG,
        b"[api]\nlisten = \"0.0.0.0:8444\"\n",
        0o640,
    );
    let report = fx.check(None);
    assert_eq!(failures(&report).len(), 1);
    assert!(matches!(
        failures(&report)[0].1[..],
        [FileProblem::HashMismatch { .. }]
    ));

    // A legitimate change, then an edit by hand on top of it.
    write(
        &fx.root,
        CONFIG,
        b"[api]\nlisten = \"10.0.0.1:8443\"\n",
        0o640,
    );
    let overlay = sign_local(&[local_entry(&fx.root, CONFIG).unwrap()], &fx.device).unwrap();
    assert!(fx.check(Some(&overlay)).is_ok());
    flip_byte(&fx.file(CONFIG), 10);
    let report = fx.check(Some(&overlay));
    let failed = failures(&report);
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].0, CONFIG);
    assert!(matches!(
        failed[0].1[..],
        [FileProblem::HashMismatch { .. }]
    ));
    assert_eq!(report.files[1].source, Source::Overlay);

    // Editing the overlay body to match the edit breaks its signature.
    let mut forged = overlay.clone();
    let old = hex::encode(overlay_hash(&overlay));
    let new = hex::encode(local_entry(&fx.root, CONFIG).unwrap().sha256);
    forged.body = String::from_utf8(forged.body)
        .unwrap()
        .replace(&old, &new)
        .into_bytes();
    let report = fx.check(Some(&forged));
    assert!(matches!(
        report.overlay_error,
        Some(Error::Tampered {
            doc: DocKind::Overlay
        })
    ));
    assert!(!report.is_ok());
}

fn overlay_hash(overlay: &SignedDocument) -> [u8; 32] {
    let text = std::str::from_utf8(&overlay.body).unwrap();
    let at = text.find("sha256 = \"").unwrap() + "sha256 = \"".len();
    let mut out = [0u8; 32];
    hex::decode_to_slice(text.get(at..at + 64).unwrap(), &mut out).unwrap();
    out
}

/// G045: PL-1-4
#[test]
fn an_overlay_signed_by_a_wrong_key_is_refused() {
    let fx = Fixture::new();
    write(&fx.root, CONFIG, b"[api]\nlisten = \"0.0.0.0:1\"\n", 0o640);
    let entry = local_entry(&fx.root, CONFIG).unwrap();
    let stranger = SigningKey::generate().unwrap();
    for key in [&stranger, &fx.vendor] {
        let overlay = sign_local(std::slice::from_ref(&entry), key).unwrap();
        let report = fx.check(Some(&overlay));
        assert!(
            matches!(report.overlay_error, Some(Error::UnknownKey { .. })),
            "{:?}",
            report.overlay_error
        );
        // The vendor's entry applies, and the changed config fails it.
        let failed = failures(&report);
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].0, CONFIG);
        assert!(!report.is_ok());
    }
    // An overlay but no device key to check it with.
    let overlay = sign_local(&[entry], &fx.device).unwrap();
    let report = verify(
        &fx.manifest,
        Some(&overlay),
        &fx.vendor_pub(),
        None,
        &fx.root,
    );
    assert!(matches!(report.overlay_error, Some(Error::NoKey { .. })));
}

/// G045: PL-1-4
#[test]
fn an_overlay_cannot_vouch_for_a_file_the_vendor_did_not_mark_mutable() {
    let fx = Fixture::new();
    write(&fx.root, BINARY, b"#!/bin/sh\nexec /bin/sh\n", 0o755);
    let entries = [
        local_entry(&fx.root, BINARY).unwrap(),
        local_entry(&fx.root, CONFIG).unwrap(),
    ];
    write(&fx.root, "/etc/kawal/new.toml", b"x = 1\n", 0o640);
    let unlisted = local_entry(&fx.root, "/etc/kawal/new.toml").unwrap();
    let overlay = sign_local(
        &[entries[0].clone(), entries[1].clone(), unlisted],
        &fx.device,
    )
    .unwrap();
    let report = fx.check(Some(&overlay));
    assert_eq!(
        report.overlay_refused,
        vec![
            (BINARY.to_owned(), "the manifest does not mark it mutable"),
            ("/etc/kawal/new.toml".to_owned(), "not in the manifest"),
        ]
    );
    let failed = failures(&report);
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].0, BINARY);
    assert!(matches!(
        failed[0].1[..],
        [FileProblem::SizeMismatch { .. }]
    ));
    assert!(!report.is_ok());
}

/// G045: PL-1-4
#[test]
fn missing_resized_replaced_and_re_permissioned_files_are_reported() {
    let fx = Fixture::new();
    std::fs::remove_file(fx.file(EXTRA)).unwrap();
    std::fs::write(fx.file(SEALED), [0xA5; 93]).unwrap();
    std::fs::set_permissions(fx.file(TRUST), std::fs::Permissions::from_mode(0o666)).unwrap();
    std::fs::remove_file(fx.file(CONFIG)).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", fx.file(CONFIG)).unwrap();
    let report = fx.check(None);
    let failed = failures(&report);
    assert_eq!(
        failed,
        vec![
            (CONFIG.to_owned(), vec![FileProblem::NotRegularFile]),
            (
                TRUST.to_owned(),
                vec![FileProblem::ModeOwnerMismatch {
                    expected: (0o644, uid(&fx), gid(&fx)),
                    actual: (0o666, uid(&fx), gid(&fx)),
                }]
            ),
            (
                SEALED.to_owned(),
                vec![FileProblem::SizeMismatch {
                    expected: 92,
                    actual: 93
                }]
            ),
            (EXTRA.to_owned(), vec![FileProblem::Missing]),
        ]
    );
    let summary = report.summary(2);
    assert_eq!((summary.files_checked, summary.files_failed), (5, 4));
    assert_eq!(summary.first_problems.len(), 2);
    assert_eq!(summary.more_problems, 2);
    let line = summary.to_string();
    assert!(
        line.starts_with("integrity FAILED: 5 files (4 failed)"),
        "{line}"
    );
    assert!(
        line.contains("/etc/kawal/kawal.toml (config): not a regular file"),
        "{line}"
    );
    assert!(line.ends_with("; and 2 more"), "{line}");
}

fn uid(fx: &Fixture) -> u32 {
    std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(fx.file(BINARY)).unwrap())
}

fn gid(fx: &Fixture) -> u32 {
    std::os::unix::fs::MetadataExt::gid(&std::fs::metadata(fx.file(BINARY)).unwrap())
}

/// G045: PL-1-4
#[test]
fn a_pipe_in_place_of_a_file_does_not_stall_the_check() {
    let fx = Fixture::new();
    std::fs::remove_file(fx.file(TRUST)).unwrap();
    let status = std::process::Command::new("mkfifo")
        .arg(fx.file(TRUST))
        .status()
        .unwrap();
    assert!(status.success());
    let report = fx.check(None);
    assert_eq!(
        failures(&report),
        vec![(TRUST.to_owned(), vec![FileProblem::NotRegularFile])]
    );
}

/// G045: PL-1-4
#[test]
fn a_changed_owner_is_reported() {
    if !running_as_root() {
        return; // only root can give a file away
    }
    let fx = Fixture::new();
    std::os::unix::fs::chown(fx.file(BINARY), Some(4321), Some(4322)).unwrap();
    let report = fx.check(None);
    let failed = failures(&report);
    assert_eq!(failed.len(), 1);
    assert!(matches!(
        failed[0].1[..],
        [FileProblem::ModeOwnerMismatch {
            actual: (0o755, 4321, 4322),
            ..
        }]
    ));
}

/// G045: PL-1-4
#[test]
fn install_time_mode_and_owner_can_be_set_when_making_the_manifest() {
    let fx = Fixture::new();
    let m = make_manifest(
        &fx.root,
        &[FileSpec::new(BINARY, Role::Binary).installed_as(0o755, 0, 0)],
        "kawal",
        "0.1.0",
    )
    .unwrap();
    assert_eq!(
        (m.files[0].mode, m.files[0].uid, m.files[0].gid),
        (0o755, 0, 0)
    );
    let err = make_manifest(
        &fx.root,
        &[
            FileSpec::new(BINARY, Role::Binary),
            FileSpec::new(BINARY, Role::Other),
        ],
        "kawal",
        "0.1.0",
    )
    .unwrap_err();
    assert!(matches!(err, Error::DuplicatePath { .. }), "{err:?}");
    let err = make_manifest(
        &fx.root,
        &[FileSpec::new("/usr/bin", Role::Other)],
        "kawal",
        "1",
    )
    .unwrap_err();
    assert!(matches!(err, Error::NotRegularFile { .. }), "{err:?}");
}

/// G045: PL-1-4
#[test]
fn the_manifest_format_is_readable_toml() {
    let fx = Fixture::new();
    let body = String::from_utf8(fx.manifest.body.clone()).unwrap();
    assert!(body.starts_with("format = \"kawal-integrity-manifest/1\"\nproduct = \"kawal\"\n"));
    assert!(body.contains(&format!("key-id = \"{}\"", fx.vendor_pub().key_id())));
    assert!(body.contains("[[file]]\npath = \"/usr/bin/kawal\"\nrole = \"binary\"\n"));
    assert!(body.contains("mode = \"0755\""));
    assert!(body.contains("mutable = \"config\""));
    let sig = std::str::from_utf8(&fx.manifest.signature).unwrap();
    assert!(sig.starts_with("format = \"kawal-integrity-signature/1\"\nsigns = \"manifest\"\n"));
}

/// G045: PL-1-4
#[test]
fn keys_round_trip_through_pem_and_raw_files_and_never_print() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::generate().unwrap();
    let pem = key.to_pkcs8_pem().unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
    let path = dir.path().join("vendor.key");
    key.save(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(key.save(&path).is_err(), "never overwrites");
    let loaded = SigningKey::load(&path).unwrap();
    assert_eq!(loaded.public_key(), key.public_key());
    assert_eq!(loaded.sign(b"m"), key.sign(b"m"));
    let debug = format!("{key:?}");
    assert!(debug.contains("[REDACTED]"));
    let b64_line = pem.lines().nth(1).unwrap();
    assert!(!debug.contains(b64_line));

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(matches!(
        SigningKey::load(&path).unwrap_err(),
        Error::KeyFilePermissions { mode: 0o644, .. }
    ));

    let seed_path = dir.path().join("seed.bin");
    std::fs::write(&seed_path, [7u8; 32]).unwrap();
    std::fs::set_permissions(&seed_path, std::fs::Permissions::from_mode(0o400)).unwrap();
    let seeded = SigningKey::load(&seed_path).unwrap();
    assert_eq!(
        seeded.public_key(),
        SigningKey::from_seed(&[7u8; 32]).unwrap().public_key()
    );
    std::fs::write(&seed_path, [7u8; 31]).ok();

    let public = key.public_key();
    for (name, bytes) in [
        ("pub.pem", public.to_pem().into_bytes()),
        ("pub.raw", public.as_bytes().to_vec()),
        (
            "pub.hex",
            format!("{}\n", hex::encode(public.as_bytes())).into_bytes(),
        ),
    ] {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        assert_eq!(PublicKey::load(&p).unwrap(), public, "{name}");
    }
    let junk = dir.path().join("junk");
    std::fs::write(&junk, "hello").unwrap();
    assert!(matches!(
        PublicKey::load(&junk).unwrap_err(),
        Error::Key { .. }
    ));
    assert!(SigningKey::from_pem(&public.to_pem()).is_err());
}

/// G045: PL-1-4
#[test]
fn openssl_ed25519_keys_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k.pem");
    let public = dir.path().join("k.pub.pem");
    let run = |args: &[&str]| {
        std::process::Command::new("openssl")
            .args(args)
            .status()
            .is_ok_and(|s| s.success())
    };
    if !run(&[
        "genpkey",
        "-algorithm",
        "ed25519",
        "-out",
        key.to_str().unwrap(),
    ]) {
        return; // no openssl with Ed25519 on this machine
    }
    assert!(run(&[
        "pkey",
        "-in",
        key.to_str().unwrap(),
        "-pubout",
        "-out",
        public.to_str().unwrap()
    ]));
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let signing = SigningKey::load(&key).unwrap();
    let verifying = PublicKey::load(&public).unwrap();
    assert_eq!(signing.public_key(), verifying);
    assert_eq!(
        std::fs::read_to_string(&public).unwrap(),
        verifying.to_pem()
    );
}

/// G045: PL-1-4
#[test]
fn a_key_of_the_device_key_hierarchy_signs_overlays() {
    use kawal_crypto::keys::{AuditSigning, KeyHierarchy, KeyVersion};
    let fx = Fixture::new();
    let hierarchy = KeyHierarchy::new(kawal_crypto::root::RootSecret::generate().unwrap());
    let key = hierarchy
        .signing::<AuditSigning>(&KeyVersion::new(1).unwrap())
        .unwrap();
    let overlay = sign_local(&[local_entry(&fx.root, CONFIG).unwrap()], &key).unwrap();
    let device = Signer::public_key(&key);
    let report = verify(
        &fx.manifest,
        Some(&overlay),
        &fx.vendor_pub(),
        Some(&device),
        &fx.root,
    );
    assert!(report.is_ok(), "{:?}", report.problems());
}

/// G045: PL-1-4
#[test]
fn verify_files_reads_the_documents_and_reports_missing_ones() {
    let fx = Fixture::new();
    let (vendor, device) = (fx.vendor_pub(), fx.device_pub());
    let manifest = fx.dir.path().join("manifest.toml");
    let overlay = fx.dir.path().join("local.toml");
    let run = || verify_files(&manifest, &overlay, &vendor, Some(&device), &fx.root);

    let report = run();
    assert!(matches!(report.manifest_error, Some(Error::Io { .. })));
    assert!(!report.is_ok());

    fx.manifest.write(&manifest).unwrap();
    assert!(run().is_ok(), "no overlay yet");

    write(&fx.root, CONFIG, b"[api]\nlisten = \"[::1]:8443\"\n", 0o640);
    assert!(!run().is_ok());
    sign_local(&[local_entry(&fx.root, CONFIG).unwrap()], &fx.device)
        .unwrap()
        .write(&overlay)
        .unwrap();
    assert!(run().is_ok(), "{:?}", run().problems());

    std::fs::remove_file(signature_path(&overlay)).unwrap();
    let report = run();
    assert!(matches!(report.overlay_error, Some(Error::Io { .. })));
    assert!(!report.is_ok());

    std::fs::write(signature_path(&manifest), b"").unwrap();
    assert!(matches!(
        run().manifest_error,
        Some(Error::MalformedSignature { .. })
    ));
}
