//! The key-ring: for each purpose, its current key version and the versions still alive.
//!
//! Entries hold only version numbers and derivation salts (public on their own; the root secret
//! is what makes a key). Deleting a version's salt destroys that version.
use kawal_crypto::keys::{KeyVersion, Pii, Purpose, RecordIndex, StoreData};
use redb::{ReadTransaction, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use crate::error::DbContext;
use crate::{Error, Result};

const KEYRING: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("kawal_keyring");

/// One purpose's key versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct KeyringEntry {
    /// The version new data is sealed with.
    pub current: u32,
    /// Versions that still exist (the current one and any not yet destroyed).
    pub versions: Vec<KeyVersion>,
}

impl KeyringEntry {
    pub(crate) fn get(&self, version: u32) -> Option<&KeyVersion> {
        self.versions.iter().find(|v| v.version == version)
    }

    fn current_version(&self) -> Result<KeyVersion> {
        self.get(self.current)
            .cloned()
            .ok_or(Error::Metadata { what: "keyring" })
    }
}

fn decode(bytes: &[u8]) -> Result<KeyringEntry> {
    serde_json::from_slice(bytes).map_err(|_| Error::Metadata { what: "keyring" })
}

fn encode(entry: &KeyringEntry) -> Result<Vec<u8>> {
    serde_json::to_vec(entry).map_err(|_| Error::Metadata { what: "keyring" })
}

pub(crate) fn initialise(tx: &WriteTransaction) -> Result<()> {
    current::<StoreData>(tx)?;
    current::<Pii>(tx)?;
    current::<RecordIndex>(tx)?;
    Ok(())
}

pub(crate) fn entry_write(tx: &WriteTransaction, label: &str) -> Result<Option<KeyringEntry>> {
    let t = tx.open_table(KEYRING).ctx("open keyring")?;
    let raw = t.get(label).ctx("read keyring")?;
    raw.map(|r| decode(r.value())).transpose()
}

pub(crate) fn put(tx: &WriteTransaction, label: &str, entry: &KeyringEntry) -> Result<()> {
    let mut t = tx.open_table(KEYRING).ctx("open keyring")?;
    t.insert(label, encode(entry)?.as_slice())
        .ctx("write keyring")?;
    Ok(())
}

/// The current version of `P`, created as version 1 when the purpose is new.
pub(crate) fn current<P: Purpose>(tx: &WriteTransaction) -> Result<KeyVersion> {
    if let Some(e) = entry_write(tx, P::LABEL)? {
        return e.current_version();
    }
    let v = KeyVersion::new(1)?;
    put(
        tx,
        P::LABEL,
        &KeyringEntry {
            current: 1,
            versions: vec![v.clone()],
        },
    )?;
    Ok(v)
}

/// The raw bytes of two entries, read through one table handle.
pub(crate) fn raw_read_pair(tx: &ReadTransaction, a: &str, b: &str) -> Result<[Vec<u8>; 2]> {
    let t = tx.open_table(KEYRING).ctx("open keyring")?;
    let get = |label: &str| -> Result<Vec<u8>> {
        let raw = t.get(label).ctx("read keyring")?;
        raw.map(|r| r.value().to_vec())
            .ok_or(Error::Metadata { what: "keyring" })
    };
    Ok([get(a)?, get(b)?])
}

/// The raw bytes of `P`'s entry in a write transaction, creating it when new.
pub(crate) fn raw_write<P: Purpose>(tx: &WriteTransaction) -> Result<Vec<u8>> {
    current::<P>(tx)?;
    let t = tx.open_table(KEYRING).ctx("open keyring")?;
    let raw = t.get(P::LABEL).ctx("read keyring")?;
    raw.map(|r| r.value().to_vec())
        .ok_or(Error::Metadata { what: "keyring" })
}

fn entry_read(tx: &ReadTransaction, label: &str) -> Result<Option<KeyringEntry>> {
    let t = match tx.open_table(KEYRING) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(e).ctx("open keyring"),
    };
    let raw = t.get(label).ctx("read keyring")?;
    raw.map(|r| decode(r.value())).transpose()
}

pub(crate) fn current_read<P: Purpose>(tx: &ReadTransaction) -> Result<KeyVersion> {
    entry_read(tx, P::LABEL)?
        .ok_or(Error::Metadata { what: "keyring" })?
        .current_version()
}

pub(crate) fn version_read<P: Purpose>(
    tx: &ReadTransaction,
    version: u32,
) -> Result<Option<KeyVersion>> {
    Ok(entry_read(tx, P::LABEL)?.and_then(|e| e.get(version).cloned()))
}

pub(crate) fn all(tx: &ReadTransaction) -> Result<Vec<(String, KeyringEntry)>> {
    let t = match tx.open_table(KEYRING) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e).ctx("open keyring"),
    };
    let mut out = Vec::new();
    for item in t.iter().ctx("iterate keyring")? {
        let (k, v) = item.ctx("iterate keyring")?;
        out.push((k.value().to_owned(), decode(v.value())?));
    }
    Ok(out)
}
