//! Derived keys and decoded key-ring entries, cached so a record costs one AEAD operation,
//! not a key derivation. Entries are keyed by version *and* salt, so a rotation (new salt)
//! can never be served a stale key.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kawal_crypto::keys::{AeadKey, KeyHierarchy, KeyVersion, MacKey, Pii, RecordIndex, StoreData};
use zeroize::Zeroizing;

use crate::keyring::KeyringEntry;
use crate::{Error, RecordClass, Result};

/// A record key of either class.
pub(crate) enum ClassKey {
    Data(AeadKey<StoreData>),
    Pii(AeadKey<Pii>),
}

impl ClassKey {
    pub(crate) fn version(&self) -> u32 {
        match self {
            ClassKey::Data(k) => k.version(),
            ClassKey::Pii(k) => k.version(),
        }
    }

    pub(crate) fn seal(&self, aad: &[u8], plain: &[u8]) -> Result<Vec<u8>> {
        Ok(match self {
            ClassKey::Data(k) => k.seal(aad, plain)?,
            ClassKey::Pii(k) => k.seal(aad, plain)?,
        })
    }

    pub(crate) fn open(
        &self,
        aad: &[u8],
        sealed: &[u8],
    ) -> kawal_crypto::Result<Zeroizing<Vec<u8>>> {
        match self {
            ClassKey::Data(k) => k.open(aad, sealed),
            ClassKey::Pii(k) => k.open(aad, sealed),
        }
    }
}

type Slot = (u8, u32, [u8; 32]);
type IndexKeys = HashMap<(u32, [u8; 32]), Arc<MacKey<RecordIndex>>>;

/// The cache, shared by all transactions of one [`crate::Store`].
pub(crate) struct KeyCache {
    keys: Arc<KeyHierarchy>,
    class: Mutex<HashMap<Slot, Arc<ClassKey>>>,
    index: Mutex<IndexKeys>,
    entries: Mutex<HashMap<Vec<u8>, Arc<KeyringEntry>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl KeyCache {
    pub(crate) fn new(keys: Arc<KeyHierarchy>) -> Self {
        Self {
            keys,
            class: Mutex::default(),
            index: Mutex::default(),
            entries: Mutex::default(),
        }
    }

    pub(crate) fn hierarchy(&self) -> &Arc<KeyHierarchy> {
        &self.keys
    }

    pub(crate) fn class_key(&self, class: RecordClass, kv: &KeyVersion) -> Result<Arc<ClassKey>> {
        let slot = (class.code(), kv.version, kv.salt);
        if let Some(k) = lock(&self.class).get(&slot) {
            return Ok(k.clone());
        }
        let key = Arc::new(match class {
            RecordClass::Data => ClassKey::Data(self.keys.aead(kv)?),
            RecordClass::Pii => ClassKey::Pii(self.keys.aead(kv)?),
        });
        let mut map = lock(&self.class);
        if map.len() > 64 {
            map.clear(); // bounded: only a few versions are ever alive at once
        }
        map.insert(slot, key.clone());
        Ok(key)
    }

    pub(crate) fn index_key(&self, kv: &KeyVersion) -> Result<Arc<MacKey<RecordIndex>>> {
        let slot = (kv.version, kv.salt);
        if let Some(k) = lock(&self.index).get(&slot) {
            return Ok(k.clone());
        }
        let key = Arc::new(self.keys.mac::<RecordIndex>(kv)?);
        let mut map = lock(&self.index);
        if map.len() > 64 {
            map.clear();
        }
        map.insert(slot, key.clone());
        Ok(key)
    }

    /// Decodes a raw key-ring entry, reusing the last decode of the same bytes.
    pub(crate) fn entry(&self, raw: Vec<u8>) -> Result<Arc<KeyringEntry>> {
        if let Some(e) = lock(&self.entries).get(&raw) {
            return Ok(e.clone());
        }
        let e: Arc<KeyringEntry> = Arc::new(
            serde_json::from_slice(&raw).map_err(|_| Error::Metadata { what: "keyring" })?,
        );
        let mut map = lock(&self.entries);
        if map.len() > 64 {
            map.clear();
        }
        map.insert(raw, e.clone());
        Ok(e)
    }
}
