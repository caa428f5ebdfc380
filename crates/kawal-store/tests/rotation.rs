//! Key rotation: records re-sealed, the old version gone, purposes independent.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation,
    clippy::print_stderr,
    clippy::disallowed_macros,
    reason = "test harness code: a failure should stop the test loudly"
)]
use std::sync::Arc;

use kawal_crypto::keys::{KeyHierarchy, Pii, RecordIndex, Session, StoreData};
use kawal_crypto::root::RootSecret;
use kawal_store::{Sharing, Store, Table};

const SENSORS: Table = Table::data("sensors");
const PEOPLE: Table = Table::pii("people");

/// G045: CR-1-2, CR-1-3
#[test]
fn rotation_reseals_every_record_and_destroys_the_old_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let keys = Arc::new(KeyHierarchy::new(RootSecret::generate().unwrap()));
    let store = Store::create(&path, keys.clone(), Sharing::Exclusive).unwrap();
    for i in 0..50 {
        store
            .put(SENSORS, &format!("s{i}"), format!("v{i}").as_bytes())
            .unwrap();
        store
            .put(PEOPLE, &format!("p{i}"), format!("pii{i}").as_bytes())
            .unwrap();
    }
    let before = std::fs::read(&path).unwrap();
    let r = store.rotate::<StoreData>().unwrap();
    assert_eq!(
        (r.old_version, r.new_version, r.records_resealed),
        (1, 2, 50)
    );
    assert!(
        store.key_version_of::<StoreData>(1).unwrap().is_none(),
        "old version kept"
    );
    assert_eq!(
        store.key_version::<Pii>().unwrap().version,
        1,
        "PII key changed"
    );
    let r = store.rotate::<Pii>().unwrap();
    assert_eq!(r.records_resealed, 50);
    let r = store.rotate::<RecordIndex>().unwrap();
    assert_eq!(r.records_resealed, 100);
    let r = store.rotate::<Session>().unwrap();
    assert_eq!(
        (r.old_version, r.new_version, r.records_resealed),
        (1, 2, 0)
    );
    for i in 0..50 {
        assert_eq!(
            &store.get(SENSORS, &format!("s{i}")).unwrap().unwrap()[..],
            format!("v{i}").as_bytes()
        );
        assert_eq!(
            &store.get(PEOPLE, &format!("p{i}")).unwrap().unwrap()[..],
            format!("pii{i}").as_bytes()
        );
    }
    drop(store);
    // Reopen: the canary was re-sealed under the new data key.
    let store = Store::open(&path, keys, Sharing::Exclusive).unwrap();
    assert_eq!(store.stats().unwrap().pii_records, 50);
    assert_ne!(before, std::fs::read(&path).unwrap());
}

/// G045: CR-1-2
#[test]
fn a_reader_with_warm_caches_follows_a_rotation_made_by_another_handle() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let keys = Arc::new(KeyHierarchy::new(RootSecret::generate().unwrap()));
    let reader = Store::create(&path, keys.clone(), Sharing::MultiProcess).unwrap();
    let other = Store::open(&path, keys, Sharing::MultiProcess).unwrap();
    reader.put(SENSORS, "s", b"v1").unwrap();
    reader.put(PEOPLE, "p", b"pii").unwrap();
    assert_eq!(&reader.get(SENSORS, "s").unwrap().unwrap()[..], b"v1");
    assert_eq!(&reader.get(PEOPLE, "p").unwrap().unwrap()[..], b"pii");
    for _ in 0..2 {
        other.rotate::<RecordIndex>().unwrap();
        other.rotate::<StoreData>().unwrap();
        other.rotate::<Pii>().unwrap();
        assert_eq!(&reader.get(SENSORS, "s").unwrap().unwrap()[..], b"v1");
        assert_eq!(&reader.get(PEOPLE, "p").unwrap().unwrap()[..], b"pii");
        assert!(reader.get(SENSORS, "missing").unwrap().is_none());
    }
    other.delete(SENSORS, "s").unwrap();
    assert!(reader.get(SENSORS, "s").unwrap().is_none());
}
