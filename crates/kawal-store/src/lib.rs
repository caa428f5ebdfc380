//! The encrypted embedded store (DS-1-3, DS-4-1).
//!
//! redb gives crash-safe, durable transactions; kawal seals every value with AES-256-GCM under
//! its class's purpose key before redb sees it. Record keys are stored only as keyed hashes
//! (HMAC under the record-index key), so user and device names are not readable on disk; the
//! plaintext key travels inside the sealed value. The associated data binds each ciphertext to
//! its table, its keyed-hash key and its header: a ciphertext moved to another record, or a
//! header edited to claim another key version, fails to open.
//!
//! PII tables are sealed under the PII key, never the general data key.
#![forbid(unsafe_code)]

mod cache;
mod error;
mod keyring;
mod record;
mod rotate;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kawal_crypto::keys::{KeyHierarchy, StoreData};
use redb::{ReadableDatabase, ReadableTable, TableDefinition, TableHandle};
use zeroize::Zeroizing;

use error::DbContext;
pub use error::{Error, Result};
pub use keyring::KeyringEntry;
pub use redb::StorageBackend;
pub use rotate::Rotation;

/// Which key seals a table's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordClass {
    /// Ordinary device data, under the store-data key.
    Data,
    /// Personally identifiable information, under the PII key.
    Pii,
}

impl RecordClass {
    fn code(self) -> u8 {
        match self {
            RecordClass::Data => 1,
            RecordClass::Pii => 2,
        }
    }

    fn from_code(c: u8) -> Option<Self> {
        match c {
            1 => Some(RecordClass::Data),
            2 => Some(RecordClass::Pii),
            _ => None,
        }
    }
}

/// A logical table: a name and the class of its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Table {
    name: &'static str,
    class: RecordClass,
}

impl Table {
    /// A table of ordinary data.
    pub const fn data(name: &'static str) -> Self {
        Self {
            name,
            class: RecordClass::Data,
        }
    }

    /// A table of PII.
    pub const fn pii(name: &'static str) -> Self {
        Self {
            name,
            class: RecordClass::Pii,
        }
    }

    /// Its name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Its class.
    pub fn class(&self) -> RecordClass {
        self.class
    }
}

const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("kawal_meta");
const FORMAT: &[u8] = b"kawal-store-1";
const CANARY_AAD: &[u8] = b"kawal-store/v1/canary";
const RECORD_PREFIX: &str = "r:";

/// How processes share the store file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    /// The daemon and CLI commands may open it at the same time (file locks coordinate).
    MultiProcess,
    /// One opener only (custom storage backends without locks, tests).
    Exclusive,
}

/// Counts shown in the compliance report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Record tables.
    pub tables: usize,
    /// Records sealed under the data key.
    pub data_records: u64,
    /// Records sealed under the PII key.
    pub pii_records: u64,
}

/// The encrypted store.
pub struct Store {
    db: redb::Database,
    cache: Arc<cache::KeyCache>,
    /// Codecs of recent reads, by table: the fast path of `get` (see there).
    readers: std::sync::Mutex<std::collections::HashMap<&'static str, Arc<record::Codec>>>,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// The page cache's bound. redb's own default (1 GiB) lets every page ever touched stay in
/// memory; a gateway's store is small and its hot pages (queue, sensor registry, accounts)
/// fit in far less, and an idle daemon should stay small.
pub const CACHE_BYTES: usize = 16 << 20;

fn builder(sharing: Sharing) -> redb::Builder {
    let mut b = redb::Database::builder();
    b.set_cache_size(CACHE_BYTES);
    if sharing == Sharing::MultiProcess {
        b.set_concurrency_mode(redb::ConcurrencyMode::MultiWriter);
    }
    b
}

fn open_error(path: &Path, e: redb::DatabaseError) -> Error {
    match e {
        // redb reports a foreign file as InvalidData; only real I/O failures are I/O errors.
        redb::DatabaseError::Storage(redb::StorageError::Io(io))
            if io.kind() != std::io::ErrorKind::InvalidData =>
        {
            Error::Io {
                path: path.display().to_string(),
                source: io,
            }
        }
        other => not_a_store(path, other),
    }
}

fn not_a_store(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::NotAStore {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// How a store on a custom backend names itself in errors.
const BACKEND: &str = "<backend>";

fn backend_db(backend: impl StorageBackend) -> Result<redb::Database> {
    redb::Database::builder()
        .set_cache_size(CACHE_BYTES)
        .create_with_backend(backend)
        .map_err(|e| not_a_store(Path::new(BACKEND), e))
}

impl Store {
    /// Creates a new store at `path` (which must not exist), with first key versions.
    pub fn create(path: &Path, keys: Arc<KeyHierarchy>, sharing: Sharing) -> Result<Self> {
        if path.exists() {
            return Err(Error::Exists {
                path: path.display().to_string(),
            });
        }
        let db = builder(sharing)
            .create(path)
            .map_err(|e| open_error(path, e))?;
        Self::initialise(db, keys, path)
    }

    /// Creates a store on a custom storage backend (fault-injection tests).
    pub fn create_with_backend(
        backend: impl StorageBackend,
        keys: Arc<KeyHierarchy>,
    ) -> Result<Self> {
        Self::initialise(backend_db(backend)?, keys, Path::new(BACKEND))
    }

    fn handle(db: redb::Database, keys: Arc<KeyHierarchy>, path: &Path) -> Self {
        Self {
            db,
            cache: Arc::new(cache::KeyCache::new(keys)),
            readers: Default::default(),
            path: path.to_owned(),
        }
    }

    fn initialise(db: redb::Database, keys: Arc<KeyHierarchy>, path: &Path) -> Result<Self> {
        let store = Self::handle(db, keys, path);
        let tx = store.db.begin_write().ctx("begin")?;
        {
            let mut meta = tx.open_table(META).ctx("open meta")?;
            if meta.get("format").ctx("read meta")?.is_some() {
                return Err(Error::Exists {
                    path: path.display().to_string(),
                });
            }
            keyring::initialise(&tx)?;
            let data_v = keyring::current::<StoreData>(&tx)?;
            let canary = store
                .keys()
                .aead::<StoreData>(&data_v)?
                .seal(CANARY_AAD, FORMAT)?;
            meta.insert("format", FORMAT).ctx("write meta")?;
            meta.insert("canary", canary.as_slice()).ctx("write meta")?;
        }
        tx.commit().ctx("commit")?;
        Ok(store)
    }

    /// Opens an existing store and proves the keys fit it.
    pub fn open(path: &Path, keys: Arc<KeyHierarchy>, sharing: Sharing) -> Result<Self> {
        if !path.exists() {
            return Err(Error::Missing {
                path: path.display().to_string(),
            });
        }
        let db = builder(sharing)
            .open(path)
            .map_err(|e| open_error(path, e))?;
        Self::check(db, keys, path)
    }

    /// Opens a store on a custom storage backend.
    pub fn open_with_backend(
        backend: impl StorageBackend,
        keys: Arc<KeyHierarchy>,
    ) -> Result<Self> {
        Self::check(backend_db(backend)?, keys, Path::new(BACKEND))
    }

    fn check(db: redb::Database, keys: Arc<KeyHierarchy>, path: &Path) -> Result<Self> {
        let store = Self::handle(db, keys, path);
        let tx = store.db.begin_read().ctx("begin")?;
        let meta = tx.open_table(META).map_err(|e| not_a_store(path, e))?;
        let format = meta.get("format").ctx("read meta")?;
        if format.as_ref().map(|f| f.value()) != Some(FORMAT) {
            return Err(not_a_store(path, "unknown or missing format marker"));
        }
        let canary = meta
            .get("canary")
            .ctx("read meta")?
            .ok_or(Error::Metadata { what: "canary" })?;
        let data_v = keyring::current_read::<StoreData>(&tx)?;
        let key = store.keys().aead::<StoreData>(&data_v)?;
        match key.open(CANARY_AAD, canary.value()) {
            Ok(v) if v[..] == *FORMAT => {}
            _ => {
                return Err(Error::WrongKeys {
                    path: path.display().to_string(),
                });
            }
        }
        drop(canary);
        drop(meta);
        drop(tx);
        Ok(store)
    }

    /// The key hierarchy this store uses.
    pub fn keys(&self) -> &Arc<KeyHierarchy> {
        self.cache.hierarchy()
    }

    fn codec_write(&self, tx: &redb::WriteTransaction, table: Table) -> Result<record::Codec> {
        record::Codec::new(
            table,
            record::Versions::write(tx, &self.cache, table.class)?,
            &self.cache,
        )
    }

    fn codec_read(&self, tx: &redb::ReadTransaction, table: Table) -> Result<record::Codec> {
        record::Codec::new(
            table,
            record::Versions::read(tx, &self.cache, table.class)?,
            &self.cache,
        )
    }

    /// Seals and durably stores `value` under `key`; returns once it is on stable storage.
    pub fn put(&self, table: Table, key: &str, value: &[u8]) -> Result<()> {
        self.put_many(table, &[(key, value)])
    }

    /// Stores several records in one durable transaction.
    pub fn put_many(&self, table: Table, records: &[(&str, &[u8])]) -> Result<()> {
        self.put_and_delete(table, records, &[]).map(|_| ())
    }

    /// Stores `records` and removes `deletes` in one durable transaction (one sync for
    /// both); returns how many of `deletes` existed.
    pub fn put_and_delete(
        &self,
        table: Table,
        records: &[(&str, &[u8])],
        deletes: &[&str],
    ) -> Result<usize> {
        let tx = self.db.begin_write().ctx("begin")?;
        let mut existed = 0;
        {
            let codec = self.codec_write(&tx, table)?;
            let mut t = tx
                .open_table(record::definition(table)?)
                .ctx("open table")?;
            for key in deletes {
                if t.remove(&codec.hash(key)[..]).ctx("remove")?.is_some() {
                    existed += 1;
                }
            }
            for (key, value) in records {
                record::check_key(key)?;
                let (hash, sealed) = codec.seal(key, value)?;
                t.insert(&hash[..], sealed.as_slice()).ctx("insert")?;
            }
        }
        tx.commit().ctx("commit")?;
        Ok(existed)
    }

    /// Reads and opens the record under `key`.
    pub fn get(&self, table: Table, key: &str) -> Result<Option<Zeroizing<Vec<u8>>>> {
        let tx = self.db.begin_read().ctx("begin")?;
        let t = match tx.open_table(record::definition(table)?) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e).ctx("open table"),
        };
        // Fast path: the key versions this store saw last. A hit proves the record-index
        // version (its keyed hash matched) and the record's own header names its class
        // version; a miss or an unknown version falls back to reading the key-ring, so a
        // rotation by another process is picked up.
        let cached = self
            .readers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(table.name)
            .cloned();
        if let Some(codec) = cached {
            let hash = codec.hash(key);
            if let Some(raw) = t.get(&hash[..]).ctx("get")?
                && let Ok((stored_key, value)) = codec.open(&hash, raw.value())
            {
                return Self::checked(table, key, &stored_key, value);
            }
        }
        let codec = Arc::new(self.codec_read(&tx, table)?);
        self.readers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(table.name, codec.clone());
        let hash = codec.hash(key);
        let Some(raw) = t.get(&hash[..]).ctx("get")? else {
            return Ok(None);
        };
        let (stored_key, value) = codec.open(&hash, raw.value())?;
        Self::checked(table, key, &stored_key, value)
    }

    fn checked(
        table: Table,
        key: &str,
        stored_key: &str,
        value: Zeroizing<Vec<u8>>,
    ) -> Result<Option<Zeroizing<Vec<u8>>>> {
        if stored_key != key {
            return Err(Error::Tampered {
                table: table.name.to_owned(),
            });
        }
        Ok(Some(value))
    }

    /// Removes the record under `key`; true if it existed.
    pub fn delete(&self, table: Table, key: &str) -> Result<bool> {
        let tx = self.db.begin_write().ctx("begin")?;
        let existed = {
            let hash = self.codec_write(&tx, table)?.hash(key);
            let mut t = tx
                .open_table(record::definition(table)?)
                .ctx("open table")?;
            t.remove(&hash[..]).ctx("remove")?.is_some()
        };
        tx.commit().ctx("commit")?;
        Ok(existed)
    }

    /// Removes several records in one durable transaction; returns how many existed.
    pub fn delete_many(&self, table: Table, keys: &[&str]) -> Result<usize> {
        self.put_and_delete(table, &[], keys)
    }

    /// Every record of a table, opened, in keyed-hash order.
    pub fn list(&self, table: Table) -> Result<Vec<(String, Zeroizing<Vec<u8>>)>> {
        let tx = self.db.begin_read().ctx("begin")?;
        let opener = self.codec_read(&tx, table)?;
        let t = match tx.open_table(record::definition(table)?) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e).ctx("open table"),
        };
        let mut out = Vec::new();
        for item in t.iter().ctx("iterate")? {
            let (k, v) = item.ctx("iterate")?;
            let hash: [u8; 32] = k.value().try_into().map_err(|_| Error::Tampered {
                table: table.name.into(),
            })?;
            out.push(opener.open(&hash, v.value())?);
        }
        Ok(out)
    }

    /// Record counts by class.
    pub fn stats(&self) -> Result<StoreStats> {
        let tx = self.db.begin_read().ctx("begin")?;
        let mut stats = StoreStats::default();
        for handle in tx.list_tables().ctx("list tables")? {
            let Some(_) = handle.name().strip_prefix(RECORD_PREFIX) else {
                continue;
            };
            stats.tables += 1;
            let def: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new(handle.name());
            let t = tx.open_table(def).ctx("open table")?;
            for item in t.iter().ctx("iterate")? {
                let (_, v) = item.ctx("iterate")?;
                match record::class_of(v.value()) {
                    Some(RecordClass::Pii) => stats.pii_records += 1,
                    _ => stats.data_records += 1,
                }
            }
        }
        Ok(stats)
    }

    /// The current key-ring (versions of every purpose kept by this store).
    pub fn keyring(&self) -> Result<Vec<(String, KeyringEntry)>> {
        let tx = self.db.begin_read().ctx("begin")?;
        keyring::all(&tx)
    }

    /// The current version of purpose `P`'s key, creating version 1 on first use.
    pub fn key_version<P: kawal_crypto::keys::Purpose>(
        &self,
    ) -> Result<kawal_crypto::keys::KeyVersion> {
        let tx = self.db.begin_write().ctx("begin")?;
        let v = keyring::current::<P>(&tx)?;
        tx.commit().ctx("commit")?;
        Ok(v)
    }

    /// A past or present version of purpose `P`'s key, if it still exists.
    pub fn key_version_of<P: kawal_crypto::keys::Purpose>(
        &self,
        version: u32,
    ) -> Result<Option<kawal_crypto::keys::KeyVersion>> {
        let tx = self.db.begin_read().ctx("begin")?;
        keyring::version_read::<P>(&tx, version)
    }

    /// Path of the store file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}
