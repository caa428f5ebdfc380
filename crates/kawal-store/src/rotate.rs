//! Key rotation (CR-1-2): a new version, every affected record re-sealed, the old version
//! destroyed, all in one durable transaction: a crash leaves either the old state or the new.
use kawal_crypto::keys::{KeyVersion, Pii, Purpose, RecordIndex, StoreData};
use redb::{ReadableTable, TableHandle};

use crate::error::DbContext;
use crate::keyring::{self, KeyringEntry};
use crate::{CANARY_AAD, FORMAT, META, RECORD_PREFIX, RecordClass, Result, Store, Table, record};

/// What a rotation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// The purpose label.
    pub purpose: &'static str,
    /// The version destroyed.
    pub old_version: u32,
    /// The version now current.
    pub new_version: u32,
    /// Records re-sealed under the new version.
    pub records_resealed: u64,
}

impl Store {
    /// Rotates purpose `P`'s key. For store keys (data, PII, record index) every record
    /// under the old version is re-sealed (or re-indexed) first; then the old version's salt
    /// is deleted, which destroys it.
    pub fn rotate<P: Purpose>(&self) -> Result<Rotation> {
        let tx = self.db.begin_write().ctx("begin")?;
        let old = keyring::entry_write(&tx, P::LABEL)?;
        let old_version = match &old {
            Some(e) => e.current,
            None => keyring::current::<P>(&tx)?.version,
        };
        // The key-ring is not authenticated on its own: a forged version number must not overflow.
        let next = old_version
            .checked_add(1)
            .ok_or(crate::Error::Metadata { what: "keyring" })?;
        let new = KeyVersion::new(next)?;
        let affects = |class: RecordClass| match P::LABEL {
            l if l == RecordIndex::LABEL => true,
            l if l == StoreData::LABEL => class == RecordClass::Data,
            l if l == Pii::LABEL => class == RecordClass::Pii,
            _ => false,
        };
        let is_store_key = [StoreData::LABEL, Pii::LABEL, RecordIndex::LABEL].contains(&P::LABEL);
        let mut resealed = 0u64;
        if is_store_key {
            let names: Vec<String> = tx
                .list_tables()
                .ctx("list tables")?
                .filter_map(|h| h.name().strip_prefix(RECORD_PREFIX).map(str::to_owned))
                .collect();
            // Open everything under the old key-ring first, then switch it, then re-seal.
            let mut pending = Vec::new();
            for name in names {
                // Validates the name read from the file before anything is opened under it.
                let def = record::definition(Table::data(record::intern(&name)))?;
                let t = tx.open_table(def).ctx("open table")?;
                let mut rows = Vec::new();
                let mut class = None;
                for item in t.iter().ctx("iterate")? {
                    let (k, v) = item.ctx("iterate")?;
                    let c = record::class_of(v.value()).ok_or_else(|| crate::Error::Tampered {
                        table: name.clone(),
                    })?;
                    class.get_or_insert(c);
                    let hash: [u8; 32] =
                        k.value().try_into().map_err(|_| crate::Error::Tampered {
                            table: name.clone(),
                        })?;
                    rows.push((hash, v.value().to_vec()));
                }
                let Some(class) = class.filter(|c| affects(*c)) else {
                    continue;
                };
                let table = Table {
                    name: record::intern(&name),
                    class,
                };
                let codec = record::Codec::new(
                    table,
                    record::Versions::write(&tx, &self.cache, table.class)?,
                    &self.cache,
                )?;
                let opened = rows
                    .iter()
                    .map(|(h, raw)| codec.open(h, raw))
                    .collect::<Result<Vec<_>>>()?;
                pending.push((
                    table,
                    rows.into_iter().map(|(h, _)| h).collect::<Vec<_>>(),
                    opened,
                ));
            }
            keyring::put(
                &tx,
                P::LABEL,
                &KeyringEntry {
                    current: new.version,
                    versions: vec![new.clone()],
                },
            )?;
            for (table, hashes, opened) in pending {
                let codec = record::Codec::new(
                    table,
                    record::Versions::write(&tx, &self.cache, table.class)?,
                    &self.cache,
                )?;
                let mut t = tx
                    .open_table(record::definition(table)?)
                    .ctx("open table")?;
                for h in hashes {
                    t.remove(&h[..]).ctx("remove")?;
                }
                for (key, value) in opened {
                    let (h, sealed) = codec.seal(&key, &value)?;
                    t.insert(&h[..], sealed.as_slice()).ctx("insert")?;
                    resealed += 1;
                }
            }
            if P::LABEL == StoreData::LABEL {
                let canary = self
                    .keys()
                    .aead::<StoreData>(&new)?
                    .seal(CANARY_AAD, FORMAT)?;
                let mut meta = tx.open_table(META).ctx("open meta")?;
                meta.insert("canary", canary.as_slice()).ctx("write meta")?;
            }
        } else {
            keyring::put(
                &tx,
                P::LABEL,
                &KeyringEntry {
                    current: new.version,
                    versions: vec![new.clone()],
                },
            )?;
        }
        tx.commit().ctx("commit")?;
        self.readers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        Ok(Rotation {
            purpose: P::LABEL,
            old_version,
            new_version: new.version,
            records_resealed: resealed,
        })
    }
}
