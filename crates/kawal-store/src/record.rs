//! Record encoding: header, keyed-hash key, sealed payload, associated data.
//!
//! Stored value: `format u8 = 1 | class u8 | class-key version u32 | index-key version u32 | sealed`
//! where `sealed = AEAD(len(key) u32 | key | value)` and the associated data is
//! `"kawal-store/v1" | len(table) | table | keyed-hash | header`.
use std::sync::Arc;

use kawal_crypto::keys::{KeyVersion, Pii, RecordIndex, StoreData};
use redb::{ReadTransaction, TableDefinition, WriteTransaction};
use zeroize::Zeroizing;

use crate::cache::{ClassKey, KeyCache};
use crate::{Error, RecordClass, Result, Table, keyring};

const FORMAT: u8 = 1;
const HEADER_LEN: usize = 10;
const MAX_KEY_LEN: usize = 1024;

/// The redb table behind a logical table.
pub(crate) fn definition(
    table: Table,
) -> Result<TableDefinition<'static, &'static [u8], &'static [u8]>> {
    check_table(table.name)?;
    Ok(TableDefinition::new(table_name(table.name)))
}

/// "r:<name>", made once per distinct table name (a small set fixed in the code).
fn table_name(name: &'static str) -> &'static str {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static NAMES: OnceLock<Mutex<HashMap<&'static str, &'static str>>> = OnceLock::new();
    let mut names = NAMES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    names
        .entry(name)
        .or_insert_with(|| intern(&format!("{}{name}", crate::RECORD_PREFIX)))
}

/// Interns a table name (a small, bounded set: the code's tables and those found in the file).
pub(crate) fn intern(name: &str) -> &'static str {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};
    static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut names = NAMES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(n) = names.get(name) {
        return n;
    }
    let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.insert(leaked);
    leaked
}

fn check_table(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidName {
            name: name.into(),
            reason: "table names are 1-64 of [a-z0-9_-]",
        })
    }
}

pub(crate) fn check_key(key: &str) -> Result<()> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(Error::InvalidName {
            name: key.chars().take(64).collect(),
            reason: "record keys are 1-1024 bytes",
        });
    }
    Ok(())
}

pub(crate) fn class_of(raw: &[u8]) -> Option<RecordClass> {
    raw.get(1).copied().and_then(RecordClass::from_code)
}

/// The associated data, built on the stack (table names are at most 64 bytes).
struct Aad {
    buf: [u8; 14 + 8 + 64 + 32 + HEADER_LEN],
    len: usize,
}

impl Aad {
    fn new(table: &str, hash: &[u8; 32], header: &[u8]) -> Self {
        let mut a = Self {
            buf: [0; 14 + 8 + 64 + 32 + HEADER_LEN],
            len: 0,
        };
        for part in [
            &b"kawal-store/v1"[..],
            &(table.len() as u64).to_be_bytes(),
            table.as_bytes(),
            hash,
            header,
        ] {
            let end = a.len + part.len();
            if let Some(dst) = a.buf.get_mut(a.len..end) {
                dst.copy_from_slice(part);
                a.len = end;
            }
        }
        a
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// The key versions a transaction sees: the table's class key and the record-index key.
pub(crate) struct Versions {
    class: Arc<keyring::KeyringEntry>,
    index: Arc<keyring::KeyringEntry>,
}

fn class_label(class: RecordClass) -> &'static str {
    match class {
        RecordClass::Data => <StoreData as kawal_crypto::keys::Purpose>::LABEL,
        RecordClass::Pii => <Pii as kawal_crypto::keys::Purpose>::LABEL,
    }
}

impl Versions {
    pub(crate) fn read(tx: &ReadTransaction, cache: &KeyCache, class: RecordClass) -> Result<Self> {
        let [c, i] = keyring::raw_read_pair(
            tx,
            class_label(class),
            <RecordIndex as kawal_crypto::keys::Purpose>::LABEL,
        )?;
        Ok(Self {
            class: cache.entry(c)?,
            index: cache.entry(i)?,
        })
    }

    pub(crate) fn write(
        tx: &WriteTransaction,
        cache: &KeyCache,
        class: RecordClass,
    ) -> Result<Self> {
        let c = match class {
            RecordClass::Data => keyring::raw_write::<StoreData>(tx)?,
            RecordClass::Pii => keyring::raw_write::<Pii>(tx)?,
        };
        Ok(Self {
            class: cache.entry(c)?,
            index: cache.entry(keyring::raw_write::<RecordIndex>(tx)?)?,
        })
    }

    fn current(entry: &keyring::KeyringEntry) -> Result<&KeyVersion> {
        entry
            .get(entry.current)
            .ok_or(Error::Metadata { what: "keyring" })
    }
}

/// Seals and opens the records of one table.
pub(crate) struct Codec {
    table: Table,
    seal_key: Arc<ClassKey>,
    index: Arc<kawal_crypto::keys::MacKey<RecordIndex>>,
    versions: Versions,
    cache: Arc<KeyCache>,
}

impl Codec {
    pub(crate) fn new(table: Table, versions: Versions, cache: &Arc<KeyCache>) -> Result<Self> {
        let seal_kv = Versions::current(&versions.class)?;
        let seal_key = cache.class_key(table.class, seal_kv)?;
        let index = cache.index_key(Versions::current(&versions.index)?)?;
        Ok(Self {
            table,
            seal_key,
            index,
            versions,
            cache: cache.clone(),
        })
    }

    pub(crate) fn hash(&self, key: &str) -> [u8; 32] {
        self.index
            .mac_parts(&[self.table.name.as_bytes(), key.as_bytes()])
    }

    pub(crate) fn seal(&self, key: &str, value: &[u8]) -> Result<([u8; 32], Vec<u8>)> {
        let hash = self.hash(key);
        let mut header = [0u8; HEADER_LEN];
        header[0] = FORMAT;
        header[1] = self.table.class.code();
        header[2..6].copy_from_slice(&self.seal_key.version().to_be_bytes());
        header[6..10].copy_from_slice(&self.index.version().to_be_bytes());
        let mut plain = Zeroizing::new(Vec::with_capacity(4 + key.len() + value.len()));
        // check_key bounds keys to 1024 bytes, so the length fits.
        plain.extend_from_slice(&u32::try_from(key.len()).unwrap_or(u32::MAX).to_be_bytes());
        plain.extend_from_slice(key.as_bytes());
        plain.extend_from_slice(value);
        let sealed = self
            .seal_key
            .seal(Aad::new(self.table.name, &hash, &header).bytes(), &plain)?;
        let mut out = Vec::with_capacity(HEADER_LEN + sealed.len());
        out.extend_from_slice(&header);
        out.extend_from_slice(&sealed);
        Ok((hash, out))
    }

    /// Opens a stored value found under `hash`; returns the plaintext key and value.
    pub(crate) fn open(&self, hash: &[u8; 32], raw: &[u8]) -> Result<(String, Zeroizing<Vec<u8>>)> {
        let tampered = || Error::Tampered {
            table: self.table.name.to_owned(),
        };
        if raw.len() < HEADER_LEN || raw[0] != FORMAT {
            return Err(tampered());
        }
        let (header, sealed) = raw.split_at(HEADER_LEN);
        let class = RecordClass::from_code(header[1]).ok_or_else(tampered)?;
        if class != self.table.class {
            return Err(tampered());
        }
        let version = u32::from_be_bytes([header[2], header[3], header[4], header[5]]);
        // Most records are under the current version, whose key this codec already holds.
        let key = if version == self.seal_key.version() {
            self.seal_key.clone()
        } else {
            let kv = self
                .versions
                .class
                .get(version)
                .ok_or_else(|| Error::KeyDestroyed {
                    table: self.table.name.to_owned(),
                    version,
                })?;
            self.cache.class_key(class, kv)?
        };
        let mut plain = key
            .open(Aad::new(self.table.name, hash, header).bytes(), sealed)
            .map_err(|_| tampered())?;
        let (len, rest) = plain.split_at_checked(4).ok_or_else(tampered)?;
        let klen = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let name = rest.get(..klen).ok_or_else(tampered)?;
        let name = std::str::from_utf8(name)
            .map_err(|_| tampered())?
            .to_owned();
        // The value stays in the buffer it was decrypted into (one copy, wiped on drop).
        plain.drain(..4 + klen);
        Ok((name, plain))
    }
}
