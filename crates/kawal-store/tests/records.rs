//! Sealed records: round trips, class separation, tamper and move detection, foreign stores.
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

use kawal_crypto::keys::KeyHierarchy;
use kawal_crypto::root::RootSecret;
use kawal_store::{Error, Sharing, Store, Table};

const SENSORS: Table = Table::data("sensors");
const PEOPLE: Table = Table::pii("people");

fn keys() -> Arc<KeyHierarchy> {
    Arc::new(KeyHierarchy::new(RootSecret::generate().unwrap()))
}

fn all_bytes(dir: &std::path::Path) -> Vec<u8> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            out.extend(std::fs::read(p).unwrap());
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// G045: DS-1-3, DS-4-1
#[test]
fn no_plaintext_value_or_record_name_reaches_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let store = Store::create(&path, keys(), Sharing::MultiProcess).unwrap();
    store
        .put(
            SENSORS,
            "boiler-room-thermometer",
            b"calibration=SECRET-CALIBRATION",
        )
        .unwrap();
    store
        .put(PEOPLE, "aisyah@example.my", b"phone=+60-12-3456789")
        .unwrap();
    assert_eq!(
        &store.get(PEOPLE, "aisyah@example.my").unwrap().unwrap()[..],
        b"phone=+60-12-3456789"
    );
    drop(store);
    let disk = all_bytes(dir.path());
    for needle in [
        &b"SECRET-CALIBRATION"[..],
        b"boiler-room",
        b"aisyah",
        b"+60-12",
        b"example.my",
    ] {
        assert!(
            !contains(&disk, needle),
            "found {:?} on disk",
            String::from_utf8_lossy(needle)
        );
    }
}

/// G045: DS-1-3
#[test]
fn records_round_trip_list_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(&dir.path().join("s"), keys(), Sharing::MultiProcess).unwrap();
    store
        .put_many(SENSORS, &[("a", b"1"), ("b", b"2"), ("c", b"")])
        .unwrap();
    let mut list: Vec<_> = store
        .list(SENSORS)
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, v.to_vec()))
        .collect();
    list.sort();
    assert_eq!(
        list,
        vec![
            ("a".into(), b"1".to_vec()),
            ("b".into(), b"2".to_vec()),
            ("c".into(), vec![])
        ]
    );
    assert!(store.delete(SENSORS, "b").unwrap());
    assert!(!store.delete(SENSORS, "b").unwrap());
    assert!(store.get(SENSORS, "b").unwrap().is_none());
    assert!(store.get(Table::data("never"), "x").unwrap().is_none());
    let stats = store.stats().unwrap();
    assert_eq!((stats.data_records, stats.pii_records), (2, 0));
}

/// G045: DS-1-3 — stores and removes in one transaction; a delete of a record written in the
/// same call does not apply to it (removals come first).
#[test]
fn put_and_delete_in_one_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(&dir.path().join("s"), keys(), Sharing::MultiProcess).unwrap();
    store
        .put_many(SENSORS, &[("a", b"1"), ("b", b"2")])
        .unwrap();
    let existed = store
        .put_and_delete(SENSORS, &[("c", b"3"), ("b", b"new")], &["a", "b", "zz"])
        .unwrap();
    assert_eq!(existed, 2);
    assert!(store.get(SENSORS, "a").unwrap().is_none());
    assert_eq!(store.get(SENSORS, "b").unwrap().unwrap().to_vec(), b"new");
    assert_eq!(store.get(SENSORS, "c").unwrap().unwrap().to_vec(), b"3");
    assert!(
        store
            .put_and_delete(SENSORS, &[("", b"x")], &["c"])
            .is_err()
    );
    // A refused call changes nothing.
    assert!(store.get(SENSORS, "c").unwrap().is_some());
}

/// G045: DS-1-3, DS-4-1
#[test]
fn a_ciphertext_moved_between_records_or_tables_does_not_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let k = keys();
    let store = Store::create(&path, k.clone(), Sharing::Exclusive).unwrap();
    store.put(PEOPLE, "alice", b"alice's address").unwrap();
    store.put(PEOPLE, "bob", b"bob's address").unwrap();
    drop(store);
    // Swap the two stored values at the redb level, as an attacker with the file could.
    {
        let db = redb::Database::create(&path).unwrap();
        let def: redb::TableDefinition<'_, &[u8], &[u8]> = redb::TableDefinition::new("r:people");
        let tx = db.begin_write().unwrap();
        {
            let mut t = tx.open_table(def).unwrap();
            let rows: Vec<(Vec<u8>, Vec<u8>)> = {
                use redb::ReadableTable;
                t.iter()
                    .unwrap()
                    .map(|r| {
                        let (a, b) = r.unwrap();
                        (a.value().to_vec(), b.value().to_vec())
                    })
                    .collect()
            };
            assert_eq!(rows.len(), 2);
            t.insert(rows[0].0.as_slice(), rows[1].1.as_slice())
                .unwrap();
            t.insert(rows[1].0.as_slice(), rows[0].1.as_slice())
                .unwrap();
        }
        tx.commit().unwrap();
    }
    let store = Store::open(&path, k, Sharing::Exclusive).unwrap();
    assert!(matches!(
        store.get(PEOPLE, "alice"),
        Err(Error::Tampered { .. })
    ));
    assert!(matches!(
        store.get(PEOPLE, "bob"),
        Err(Error::Tampered { .. })
    ));
}

/// G045: DS-1-3
#[test]
fn a_flipped_byte_in_a_value_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let k = keys();
    let store = Store::create(&path, k.clone(), Sharing::Exclusive).unwrap();
    store.put(SENSORS, "s1", &[7u8; 64]).unwrap();
    drop(store);
    let db = redb::Database::create(&path).unwrap();
    let def: redb::TableDefinition<'_, &[u8], &[u8]> = redb::TableDefinition::new("r:sensors");
    let tx = db.begin_write().unwrap();
    {
        use redb::ReadableTable;
        let mut t = tx.open_table(def).unwrap();
        let (key, mut val) = t
            .iter()
            .unwrap()
            .next()
            .map(|r| {
                let (a, b) = r.unwrap();
                (a.value().to_vec(), b.value().to_vec())
            })
            .unwrap();
        let last = val.len() - 1;
        val[last] ^= 1;
        t.insert(key.as_slice(), val.as_slice()).unwrap();
    }
    tx.commit().unwrap();
    drop(db);
    let store = Store::open(&path, k, Sharing::Exclusive).unwrap();
    assert!(matches!(
        store.get(SENSORS, "s1"),
        Err(Error::Tampered { .. })
    ));
}

/// G045: DS-1-3, CR-1-2
#[test]
fn another_devices_keys_cannot_open_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    Store::create(&path, keys(), Sharing::MultiProcess).unwrap();
    let err = Store::open(&path, keys(), Sharing::MultiProcess).unwrap_err();
    assert!(matches!(err, Error::WrongKeys { .. }), "{err}");
}

#[test]
fn truncated_and_foreign_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let k = keys();
    let path = dir.path().join("s");
    let store = Store::create(&path, k.clone(), Sharing::MultiProcess).unwrap();
    store.put(SENSORS, "x", b"y").unwrap();
    drop(store);
    let foreign = dir.path().join("foreign");
    std::fs::write(&foreign, b"this is not a database at all, just text").unwrap();
    let err = Store::open(&foreign, k.clone(), Sharing::MultiProcess).unwrap_err();
    assert!(matches!(err, Error::NotAStore { .. }), "{err}");
    assert_eq!(
        std::fs::read(&foreign).unwrap(),
        b"this is not a database at all, just text",
        "foreign file was modified"
    );
    let bytes = std::fs::read(&path).unwrap();
    let cut = dir.path().join("cut");
    std::fs::write(&cut, &bytes[..bytes.len() / 3]).unwrap();
    assert!(Store::open(&cut, k.clone(), Sharing::MultiProcess).is_err());
    let missing =
        Store::open(&dir.path().join("none"), k.clone(), Sharing::MultiProcess).unwrap_err();
    assert!(matches!(missing, Error::Missing { .. }));
    let again = Store::create(&path, k, Sharing::MultiProcess).unwrap_err();
    assert!(matches!(again, Error::Exists { .. }));
}

#[test]
fn bad_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(&dir.path().join("s"), keys(), Sharing::MultiProcess).unwrap();
    assert!(store.put(Table::data("Bad Name"), "k", b"v").is_err());
    assert!(store.put(SENSORS, "", b"v").is_err());
    assert!(store.put(SENSORS, &"k".repeat(2000), b"v").is_err());
}

#[test]
fn two_handles_in_two_roles_share_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let k = keys();
    let a = Store::create(&path, k.clone(), Sharing::MultiProcess).unwrap();
    let b = Store::open(&path, k, Sharing::MultiProcess).unwrap();
    a.put(SENSORS, "from-a", b"1").unwrap();
    assert_eq!(&b.get(SENSORS, "from-a").unwrap().unwrap()[..], b"1");
}
