//! Repository simulator: one test per TUF attack (G045 PL-2-3). Each crafted repository must be
//! refused with a clear error, and a refused update must leave the trusted datastore untouched.

#![allow(
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed expectation is the test failing"
)]
mod common;

use common::{Device, Release, Vendor, edit_json, publish};
use kawal_update::Error;
use kawal_update::verify::{self, VerifiedRepository};

/// A device that has trusted release `v` of `vendor`.
async fn trusted_at(vendor: &Vendor, v: u64) -> Device {
    let device = Device::provision(vendor).await;
    publish(vendor, &Release::version(v), &device.repo_dir()).await;
    verify::load(&device.trust, &device.source())
        .await
        .expect("a good repository loads");
    device
}

/// Loads the repository now in `device.repo_dir()`, expecting a refusal, and checks that the
/// trusted datastore did not change.
async fn refused(device: &Device) -> Error {
    let before = device.datastore_files();
    let err = verify::load(&device.trust, &device.source())
        .await
        .expect_err("the crafted repository must be refused");
    assert!(err.is_rejection(), "{err:?}");
    assert_eq!(
        before,
        device.datastore_files(),
        "datastore changed on refusal"
    );
    err
}

fn metadata(device: &Device, file: &str) -> std::path::PathBuf {
    device.repo_dir().join("metadata").join(file)
}

async fn read_target(repo: &VerifiedRepository) -> Result<Vec<u8>, Error> {
    let target = repo.target("bundle.kup")?;
    let mut out = Vec::new();
    repo.open(&target).await?.copy_to(&mut out).await?;
    Ok(out)
}

/// G045: PL-2-3
#[tokio::test]
async fn accepts_a_good_repository_and_persists_trust() {
    let vendor = Vendor::new();
    let device = Device::provision(&vendor).await;
    publish(&vendor, &Release::version(1), &device.repo_dir()).await;
    let repo = verify::load(&device.trust, &device.source())
        .await
        .expect("load");
    assert_eq!(repo.versions(), [1, 1, 1, 1]);
    let target = repo.target("bundle.kup").expect("target");
    assert_eq!(target.custom["version"], "1.0.0");
    let bytes = read_target(&repo).await.expect("read");
    assert_eq!(bytes.len() as u64, target.length);
    let names: Vec<_> = device.datastore_files().into_iter().map(|f| f.0).collect();
    for role in [
        "root.json",
        "snapshot.json",
        "targets.json",
        "timestamp.json",
    ] {
        assert!(
            names.iter().any(|n| n == role),
            "{role} not persisted: {names:?}"
        );
    }
    assert!(matches!(
        repo.target("missing.kup"),
        Err(Error::UnknownTarget { .. })
    ));
}

/// G045: PL-2-3
#[tokio::test]
async fn rejects_metadata_with_a_bad_signature() {
    let vendor = Vendor::new();
    let device = trusted_at(&vendor, 1).await;
    publish(&vendor, &Release::version(2), &device.repo_dir()).await;
    edit_json(&metadata(&device, "timestamp.json"), |v| {
        v["signed"]["version"] = 3.into();
    });
    let err = refused(&device).await;
    assert!(
        matches!(&err, Error::RejectedSignature { role, .. } if role == "timestamp"),
        "{err:?}"
    );
}

/// G045: PL-2-3
#[tokio::test]
async fn rejects_a_repository_signed_with_the_wrong_keys() {
    let vendor = Vendor::new();
    let device = trusted_at(&vendor, 1).await;
    let attacker = Vendor::new();
    publish(&attacker, &Release::version(2), &device.repo_dir()).await;
    let err = refused(&device).await;
    assert!(matches!(err, Error::RejectedSignature { .. }), "{err:?}");
}

/// G045: PL-2-3
#[tokio::test]
async fn rejects_too_few_signatures_below_threshold() {
    let vendor = Vendor::new();
    let device = trusted_at(&vendor, 1).await;
    publish(&vendor, &Release::version(2), &device.repo_dir()).await;
    edit_json(&metadata(&device, "timestamp.json"), |v| {
        let sigs = v["signatures"].as_array_mut().expect("signatures");
        assert_eq!(sigs.len(), 2, "timestamp threshold is 2");
        sigs.pop();
    });
    let err = refused(&device).await;
    assert!(
        matches!(&err, Error::RejectedSignature { role, .. } if role == "timestamp"),
        "{err:?}"
    );
}

/// G045: PL-2-3
#[tokio::test]
async fn rejects_root_rollback() {
    let vendor = Vendor::new();
    let device = Device::provision(&vendor).await;
    let mut release = Release::version(2);
    release.root_version = 2;
    publish(&vendor, &release, &device.repo_dir()).await;
    let repo = verify::load(&device.trust, &device.source())
        .await
        .expect("load");
    assert_eq!(repo.versions()[0], 2);

    // The next "root" offered is the old version 1 under the name 3.root.json.
    let mut next = Release::version(3);
    next.root_version = 2;
    publish(&vendor, &next, &device.repo_dir()).await;
    std::fs::write(metadata(&device, "3.root.json"), vendor.root_json(1).await).expect("write");
    let err = refused(&device).await;
    assert!(
        matches!(&err, Error::RejectedRollback { role, trusted: 2, offered: 1 } if role == "root"),
        "{err:?}"
    );

    // Without the newer root files the device still starts from trusted root 2, not 1.
    std::fs::remove_file(metadata(&device, "2.root.json")).expect("rm");
    std::fs::remove_file(metadata(&device, "3.root.json")).expect("rm");
    let repo = verify::load(&device.trust, &device.source())
        .await
        .expect("load");
    assert_eq!(repo.versions()[0], 2);
}

/// G045: PL-2-3
#[tokio::test]
async fn rejects_timestamp_rollback() {
    let vendor = Vendor::new();
    let device = trusted_at(&vendor, 2).await;
    publish(&vendor, &Release::version(1), &device.repo_dir()).await;
    let err = refused(&device).await;
    assert!(
        matches!(&err, Error::RejectedRollback { role, trusted: 2, offered: 1 } if role == "timestamp"),
        "{err:?}"
    );
}

/// G045: PL-2-3
#[tokio::test]
async fn rejects_snapshot_rollback() {
    let vendor = Vendor::new();
    let device = trusted_at(&vendor, 2).await;
    let mut release = Release::version(3);
    release.snapshot_version = 1;
    publish(&vendor, &release, &device.repo_dir()).await;
    let err = refused(&device).await;
    assert!(
        matches!(&err, Error::RejectedRollback { role, trusted: 2, offered: 1 } if role == "snapshot"),
        "{err:?}"
    );
}

/// G045: PL-2-3
#[tokio::test]
async fn rejects_targets_rollback() {
    let vendor = Vendor::new();
    let device = trusted_at(&vendor, 2).await;
    let mut release = Release::version(3);
    release.targets_version = 1;
    publish(&vendor, &release, &device.repo_dir()).await;
    let err = refused(&device).await;
    assert!(
        matches!(&err, Error::RejectedRollback { role, trusted: 2, offered: 1 } if role == "targets"),
        "{err:?}"
    );
}

/// G045: PL-2-3
#[tokio::test]
async fn rejects_fast_forward_and_still_accepts_the_next_real_release() {
    let vendor = Vendor::new();
    let device = trusted_at(&vendor, 1).await;
    // An attacker without the timestamp keys pushes the version far ahead to lock updates out.
    publish(&vendor, &Release::version(2), &device.repo_dir()).await;
    edit_json(&metadata(&device, "timestamp.json"), |v| {
        v["signed"]["version"] = (1_u64 << 60).into();
    });
    let err = refused(&device).await;
    assert!(matches!(err, Error::RejectedSignature { .. }), "{err:?}");
    // Nothing of the fast-forwarded version was trusted: the vendor's next release goes through.
    publish(&vendor, &Release::version(3), &device.repo_dir()).await;
    let repo = verify::load(&device.trust, &device.source())
        .await
        .expect("load");
    assert_eq!(repo.versions(), [1, 3, 3, 3]);
}

/// G045: PL-2-3
#[tokio::test]
async fn rejects_freeze_with_expired_timestamp() {
    let vendor = Vendor::new();
    let device = trusted_at(&vendor, 1).await;
    let mut release = Release::version(2);
    release.timestamp_expires_days = -1;
    publish(&vendor, &release, &device.repo_dir()).await;
    let err = refused(&device).await;
    assert!(
        matches!(&err, Error::RejectedExpired { role } if role == "timestamp"),
        "{err:?}"
    );
}

/// G045: PL-2-3
#[tokio::test]
async fn rejects_mix_and_match_of_targets_and_snapshot() {
    let vendor = Vendor::new();
    let device = trusted_at(&vendor, 1).await;
    let other = tempfile::tempdir().expect("tempdir");
    publish(&vendor, &Release::version(2), other.path()).await;
    publish(&vendor, &Release::version(3), &device.repo_dir()).await;
    // Snapshot 3 lists targets version 3; serve the (validly signed) targets version 2 instead.
    std::fs::copy(
        other.path().join("metadata/targets.json"),
        metadata(&device, "targets.json"),
    )
    .expect("copy");
    let err = refused(&device).await;
    assert!(
        matches!(
            &err,
            Error::RejectedVersionMismatch { role, .. } if role == "targets"
        ) || matches!(
            &err,
            Error::RejectedHash { .. } | Error::RejectedTooLarge { .. }
        ),
        "{err:?}"
    );
}

/// G045: PL-2-3
#[tokio::test]
async fn rejects_oversized_metadata() {
    let vendor = Vendor::new();
    let mut device = trusted_at(&vendor, 1).await;
    device.trust.limits.max_timestamp_size = 256;
    publish(&vendor, &Release::version(2), &device.repo_dir()).await;
    let err = refused(&device).await;
    assert!(
        matches!(err, Error::RejectedTooLarge { max_size: 256, .. }),
        "{err:?}"
    );
}

/// G045: PL-2-3
#[tokio::test]
async fn aborts_endless_target_at_the_signed_length() {
    let vendor = Vendor::new();
    let device = trusted_at(&vendor, 1).await;
    publish(&vendor, &Release::version(2), &device.repo_dir()).await;
    let path = device.repo_dir().join("targets/bundle.kup");
    let mut bytes = std::fs::read(&path).expect("read");
    bytes.extend(std::iter::repeat_n(b'A', 1 << 20));
    std::fs::write(&path, &bytes).expect("write");

    let repo = verify::load(&device.trust, &device.source())
        .await
        .expect("load");
    let target = repo.target("bundle.kup").expect("target");
    let mut reader = repo.open(&target).await.expect("open");
    let mut received = 0_u64;
    let err = loop {
        match reader.next_chunk().await {
            Ok(Some(chunk)) => received += chunk.len() as u64,
            Ok(None) => panic!("an over-long target must not verify"),
            Err(e) => break e,
        }
    };
    assert!(received <= target.length, "{received} > {}", target.length);
    assert!(matches!(err, Error::RejectedTooLarge { .. }), "{err:?}");
}

/// G045: PL-2-3
#[tokio::test]
async fn rejects_target_with_wrong_hash() {
    let vendor = Vendor::new();
    let device = trusted_at(&vendor, 1).await;
    publish(&vendor, &Release::version(2), &device.repo_dir()).await;
    let path = device.repo_dir().join("targets/bundle.kup");
    let mut bytes = std::fs::read(&path).expect("read");
    bytes[0] ^= 0xff;
    std::fs::write(&path, &bytes).expect("write");

    let repo = verify::load(&device.trust, &device.source())
        .await
        .expect("load");
    let err = read_target(&repo).await.expect_err("must be refused");
    assert!(matches!(err, Error::RejectedHash { .. }), "{err:?}");
}

/// G045: PL-2-3
#[tokio::test]
async fn rejects_truncated_target() {
    let vendor = Vendor::new();
    let device = trusted_at(&vendor, 1).await;
    publish(&vendor, &Release::version(2), &device.repo_dir()).await;
    let path = device.repo_dir().join("targets/bundle.kup");
    let bytes = std::fs::read(&path).expect("read");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).expect("write");

    let repo = verify::load(&device.trust, &device.source())
        .await
        .expect("load");
    let err = read_target(&repo).await.expect_err("must be refused");
    assert!(
        matches!(
            err,
            Error::RejectedTruncated { .. } | Error::RejectedHash { .. }
        ),
        "{err:?}"
    );
}
