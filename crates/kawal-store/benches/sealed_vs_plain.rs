//! Sealed store vs the same redb unencrypted, same run, same machine: the cost of DS-1-3.
//! Run: `cargo bench -p kawal-store --bench sealed_vs_plain`. Prints ratios (sealed / plain).
#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    clippy::disallowed_macros,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::type_complexity,
    missing_docs,
    reason = "benchmark harness"
)]

use std::sync::Arc;
use std::time::Instant;

use kawal_crypto::keys::KeyHierarchy;
use kawal_crypto::root::RootSecret;
use kawal_store::{Sharing, Store, Table};
use redb::{ReadableDatabase, TableDefinition};

const PLAIN: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("plain");
/// The same layout as the sealed store (32-byte hashed names, same value size), no encryption.
const SHAPED: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("shaped");

fn shaped_key(name: &str) -> [u8; 32] {
    kawal_crypto::sha256(name.as_bytes())
}

fn shaped_value(name: &str, value: &[u8]) -> Vec<u8> {
    // header (10) + name length (4) + name + value + nonce and tag (28), in the clear
    let mut v = vec![0u8; 14];
    v.extend_from_slice(name.as_bytes());
    v.extend_from_slice(value);
    v.extend_from_slice(&[0u8; 28]);
    v
}
const T: Table = Table::data("bench");

fn time<F: FnMut()>(n: u64, mut f: F) -> f64 {
    let start = Instant::now();
    f();
    start.elapsed().as_secs_f64() * 1e6 / n as f64
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let value = vec![0xa5u8; 256];
    let keys = Arc::new(KeyHierarchy::new(RootSecret::generate().unwrap()));
    let store =
        Store::create(&dir.path().join("sealed.redb"), keys, Sharing::MultiProcess).unwrap();
    let mut b = redb::Database::builder();
    b.set_concurrency_mode(redb::ConcurrencyMode::MultiWriter);
    let plain = b.create(dir.path().join("plain.redb")).unwrap();

    let n_put = 300u64;
    let n_get = 20_000u64;
    let batch = 1000u64;
    let names: Vec<String> = (0..batch.max(n_put))
        .map(|i| format!("sensor-{i:06}"))
        .collect();
    let mut rows = Vec::new();
    let mut shaped: Vec<(f64, f64, f64, f64)> = Vec::new();
    for round in 0..3 {
        let sealed_put = time(n_put, || {
            for k in &names[..n_put as usize] {
                store.put(T, k, &value).unwrap();
            }
        });
        let plain_put = time(n_put, || {
            for k in &names[..n_put as usize] {
                let tx = plain.begin_write().unwrap();
                tx.open_table(PLAIN)
                    .unwrap()
                    .insert(k.as_str(), value.as_slice())
                    .unwrap();
                tx.commit().unwrap();
            }
        });
        let sealed_batch = time(batch, || {
            let recs: Vec<(&str, &[u8])> = names[..batch as usize]
                .iter()
                .map(|k| (k.as_str(), value.as_slice()))
                .collect();
            store.put_many(T, &recs).unwrap();
        });
        let plain_batch = time(batch, || {
            let tx = plain.begin_write().unwrap();
            {
                let mut t = tx.open_table(PLAIN).unwrap();
                for k in &names[..batch as usize] {
                    t.insert(k.as_str(), value.as_slice()).unwrap();
                }
            }
            tx.commit().unwrap();
        });
        let sealed_get = time(n_get, || {
            for i in 0..n_get {
                let v = store.get(T, &names[(i % batch) as usize]).unwrap().unwrap();
                assert_eq!(v.len(), 256);
            }
        });
        let plain_get = time(n_get, || {
            for i in 0..n_get {
                let tx = plain.begin_read().unwrap();
                let t = tx.open_table(PLAIN).unwrap();
                let v = t
                    .get(names[(i % batch) as usize].as_str())
                    .unwrap()
                    .unwrap();
                assert_eq!(v.value().len(), 256);
            }
        });
        let shaped_batch = time(batch, || {
            let tx = plain.begin_write().unwrap();
            {
                let mut t = tx.open_table(SHAPED).unwrap();
                for k in &names[..batch as usize] {
                    t.insert(&shaped_key(k)[..], shaped_value(k, &value).as_slice())
                        .unwrap();
                }
            }
            tx.commit().unwrap();
        });
        let shaped_get = time(n_get, || {
            for i in 0..n_get {
                let tx = plain.begin_read().unwrap();
                let t = tx.open_table(SHAPED).unwrap();
                let k = shaped_key(&names[(i % batch) as usize]);
                let v = t.get(&k[..]).unwrap().unwrap();
                assert_eq!(v.value().len(), 256 + 42 + 13);
            }
        });
        if round > 0 {
            rows.push((
                sealed_put,
                plain_put,
                sealed_batch,
                plain_batch,
                sealed_get,
                plain_get,
            ));
            shaped.push((
                sealed_batch / shaped_batch,
                sealed_get / shaped_get,
                shaped_batch,
                shaped_get,
            ));
        }
    }
    let med = |f: fn(&(f64, f64, f64, f64, f64, f64)) -> (f64, f64)| {
        let mut v: Vec<(f64, f64)> = rows.iter().map(f).collect();
        v.sort_by(|a, b| (a.0 / a.1).total_cmp(&(b.0 / b.1)));
        v[v.len() / 2]
    };
    println!("256-byte values, sealed (AES-256-GCM + keyed-hash key) vs plain redb, same run:");
    for (name, (s, p)) in [
        ("durable put (one commit each)", med(|r| (r.0, r.1))),
        ("batched put (1000 per commit)", med(|r| (r.2, r.3))),
        ("get (own read transaction)", med(|r| (r.4, r.5))),
    ] {
        println!(
            "{name:<32} sealed {s:9.2} µs  plain {p:9.2} µs  ratio {:.2}x",
            s / p
        );
    }
    println!(
        "same layout unencrypted (hashed names, same value size), same run: the cost of encryption alone:"
    );
    let mut b: Vec<_> = shaped.iter().map(|r| r.0).collect();
    b.sort_by(f64::total_cmp);
    let mut g: Vec<_> = shaped.iter().map(|r| r.1).collect();
    g.sort_by(f64::total_cmp);
    let last = shaped.last().unwrap();
    println!(
        "{:<32} same-layout {:9.2} µs  ratio {:.2}x",
        "batched put (1000 per commit)",
        last.2,
        b[b.len() / 2]
    );
    println!(
        "{:<32} same-layout {:9.2} µs  ratio {:.2}x",
        "get (own read transaction)",
        last.3,
        g[g.len() / 2]
    );
}
