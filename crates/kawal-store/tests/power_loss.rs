//! Acknowledged writes survive power loss: a storage shim keeps what was synced, drops or
//! keeps each unsynced write at random, and cuts power after a random number of operations.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation,
    clippy::print_stderr,
    clippy::disallowed_macros,
    reason = "test harness code: a failure should stop the test loudly"
)]
use std::sync::{Arc, Mutex};

use kawal_crypto::keys::KeyHierarchy;
use kawal_crypto::root::RootSecret;
use kawal_store::{StorageBackend, Store, Table};
use redb::backends::InMemoryBackend;

#[derive(Debug, Default)]
struct Disk {
    /// What the OS shows readers: every write so far.
    live: Vec<u8>,
    /// Writes and length changes since the last sync, in order.
    pending: Vec<Op>,
    /// Operations left until the power goes.
    budget: u64,
    dead: bool,
}

#[derive(Debug, Clone)]
enum Op {
    Write(u64, Vec<u8>),
    SetLen(u64),
}

#[derive(Debug, Clone)]
struct Shim(Arc<Mutex<(Disk, Vec<u8>)>>); // (volatile state, durable image)

fn io_err() -> std::io::Error {
    std::io::Error::other("power lost")
}

impl StorageBackend for Shim {
    fn len(&self) -> Result<u64, std::io::Error> {
        let s = self.0.lock().unwrap();
        if s.0.dead {
            return Err(io_err());
        }
        Ok(s.0.live.len() as u64)
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        let s = self.0.lock().unwrap();
        if s.0.dead {
            return Err(io_err());
        }
        let o = offset as usize;
        let src =
            s.0.live
                .get(o..o + out.len())
                .ok_or_else(|| std::io::Error::other("read past end"))?;
        out.copy_from_slice(src);
        Ok(())
    }
    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        let mut s = self.0.lock().unwrap();
        tick(&mut s.0)?;
        s.0.live.resize(len as usize, 0);
        s.0.pending.push(Op::SetLen(len));
        Ok(())
    }
    fn sync_data(&self) -> Result<(), std::io::Error> {
        let mut s = self.0.lock().unwrap();
        tick(&mut s.0)?;
        s.0.pending.clear();
        s.1 = s.0.live.clone();
        Ok(())
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        let mut s = self.0.lock().unwrap();
        tick(&mut s.0)?;
        let end = offset as usize + data.len();
        if s.0.live.len() < end {
            s.0.live.resize(end, 0);
        }
        s.0.live[offset as usize..end].copy_from_slice(data);
        s.0.pending.push(Op::Write(offset, data.to_vec()));
        Ok(())
    }
}

fn tick(d: &mut Disk) -> Result<(), std::io::Error> {
    if d.dead || d.budget == 0 {
        d.dead = true;
        return Err(io_err());
    }
    d.budget -= 1;
    Ok(())
}

struct XorShift(u64);
impl XorShift {
    fn next(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}

/// The image after the power cut: the durable image plus a random subset of unsynced ops.
fn after_power_cut(shim: &Shim, rng: &mut XorShift) -> Vec<u8> {
    let s = shim.0.lock().unwrap();
    let mut img = s.1.clone();
    for op in &s.0.pending {
        if rng.next(2) == 0 {
            continue;
        }
        match op {
            Op::SetLen(l) => img.resize(*l as usize, 0),
            Op::Write(o, d) => {
                let end = *o as usize + d.len();
                if img.len() < end {
                    img.resize(end, 0);
                }
                img[*o as usize..end].copy_from_slice(d);
            }
        }
    }
    img
}

fn shim_from(image: Vec<u8>, budget: u64) -> Shim {
    Shim(Arc::new(Mutex::new((
        Disk {
            live: image.clone(),
            pending: Vec::new(),
            budget,
            dead: false,
        },
        image,
    ))))
}

/// G045: DS-1-3
#[test]
fn acknowledged_writes_survive_power_loss_with_unsynced_writes_dropped() {
    let keys = Arc::new(KeyHierarchy::new(RootSecret::generate().unwrap()));
    let seed = u64::from_le_bytes(kawal_crypto::rng::array().unwrap()) | 1;
    eprintln!("seed {seed}");
    let mut rng = XorShift(seed);
    let table = Table::data("t");
    let _ = InMemoryBackend::new(); // the shim follows redb's own in-memory backend's contract
    // Create the store with power that never fails.
    let shim = shim_from(Vec::new(), u64::MAX);
    drop(Store::create_with_backend(shim.clone(), keys.clone()).unwrap());
    let mut image = shim.0.lock().unwrap().1.clone();
    let mut acked: Vec<(String, Vec<u8>)> = Vec::new();
    let mut n = 0u64;
    let mut cuts = 0;
    for cycle in 0..200 {
        let shim = shim_from(image.clone(), 20 + rng.next(400));
        let store = match Store::open_with_backend(shim.clone(), keys.clone()) {
            Ok(s) => s,
            Err(_) => {
                // The power failed during open/repair itself: nothing new was acknowledged.
                image = after_power_cut(&shim, &mut rng);
                cuts += 1;
                continue;
            }
        };
        loop {
            let key = format!("k{n}");
            let value = format!("v{n}-{}", "y".repeat((n % 300) as usize)).into_bytes();
            n += 1;
            match store.put(table, &key, &value) {
                Ok(()) => acked.push((key, value)),
                Err(_) => break,
            }
        }
        drop(store);
        image = after_power_cut(&shim, &mut rng);
        cuts += 1;
        // Power back: every acknowledged record must be there, intact.
        let check = shim_from(image.clone(), u64::MAX);
        let store = Store::open_with_backend(check.clone(), keys.clone())
            .unwrap_or_else(|e| panic!("cycle {cycle}: store lost after power cut: {e}"));
        for (k, v) in &acked {
            let got = store
                .get(table, k)
                .unwrap_or_else(|e| panic!("cycle {cycle}: {k}: {e}"));
            assert_eq!(
                got.as_deref().map(|g| g.to_vec()).as_ref(),
                Some(v),
                "cycle {cycle}: acknowledged {k} lost"
            );
        }
        drop(store);
        image = check.0.lock().unwrap().1.clone();
    }
    assert!(
        cuts >= 200 && acked.len() > 200,
        "cuts {cuts}, acked {}",
        acked.len()
    );
}
