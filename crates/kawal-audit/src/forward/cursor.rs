//! The forwarder's durable cursor: the last entry known delivered to the collector.
//!
//! One small JSON file, `{"seq":N,"hash":"…"}`, replaced atomically (new file, fsync,
//! rename, fsync of the folder), so after a crash it holds either the old or the new cursor,
//! never a torn one. The hash lets the forwarder check, after a restart, that the local log
//! still continues the chain it forwarded (the next entry's `prev` must be it).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::ForwardError;
use crate::entry::EntryHash;

/// The last entry known delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// Its seq; 0 when nothing was delivered yet.
    pub seq: u64,
    /// Its hash ([`EntryHash::ZERO`] when `seq` is 0, the `prev` of entry 1).
    pub hash: EntryHash,
}

impl Cursor {
    /// Nothing delivered: forwarding starts at entry 1.
    pub const START: Self = Self {
        seq: 0,
        hash: EntryHash::ZERO,
    };
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct CursorFile {
    seq: u64,
    hash: String,
}

/// The cursor file at `path`.
#[derive(Debug, Clone)]
pub struct CursorFileStore {
    path: PathBuf,
}

impl CursorFileStore {
    /// The cursor kept in `path` (created on the first save).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved cursor, or `None` if the file does not exist.
    ///
    /// # Errors
    /// [`ForwardError::Cursor`] if it cannot be read or is not a cursor.
    pub fn load(&self) -> Result<Option<Cursor>, ForwardError> {
        let err = |reason: String| ForwardError::Cursor {
            path: self.path.clone(),
            reason,
        };
        let bytes = match fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(err(format!("read: {e}"))),
        };
        if bytes.len() > 4096 {
            return Err(err("larger than any cursor".into()));
        }
        let file: CursorFile =
            serde_json::from_slice(&bytes).map_err(|e| err(format!("not a cursor: {e}")))?;
        let hash = EntryHash::from_hex(&file.hash).ok_or_else(|| err("bad hash".into()))?;
        if file.seq == 0 && hash != EntryHash::ZERO {
            return Err(err("seq 0 with a non-zero hash".into()));
        }
        Ok(Some(Cursor {
            seq: file.seq,
            hash,
        }))
    }

    /// Replaces the saved cursor durably (see the module docs).
    ///
    /// # Errors
    /// [`ForwardError::Cursor`] if any step fails; the old cursor is then still in place.
    pub fn save(&self, cursor: &Cursor) -> Result<(), ForwardError> {
        let err = |op: &str, e: std::io::Error| ForwardError::Cursor {
            path: self.path.clone(),
            reason: format!("{op}: {e}"),
        };
        let file = CursorFile {
            seq: cursor.seq,
            hash: cursor.hash.to_hex(),
        };
        let mut bytes = serde_json::to_vec(&file).map_err(|e| err("encode", e.into()))?;
        bytes.push(b'\n');
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".new");
        let tmp = PathBuf::from(tmp);
        let mut f = fs::File::create(&tmp).map_err(|e| err("create", e))?;
        f.write_all(&bytes).map_err(|e| err("write", e))?;
        f.sync_all().map_err(|e| err("fsync", e))?;
        drop(f);
        fs::rename(&tmp, &self.path).map_err(|e| err("rename", e))?;
        let dir = self
            .path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or_else(|| Path::new("."));
        crate::segment::sync_dir(dir).map_err(|e| ForwardError::Cursor {
            path: self.path.clone(),
            reason: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// G045: PL-4-2
    #[test]
    fn cursor_round_trips_and_replaces_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let store = CursorFileStore::new(dir.path().join("forward.cursor"));
        assert_eq!(store.load().unwrap(), None);
        let a = Cursor {
            seq: 41,
            hash: EntryHash([4; 32]),
        };
        store.save(&a).unwrap();
        assert_eq!(store.load().unwrap(), Some(a));
        let b = Cursor {
            seq: 42,
            hash: EntryHash([5; 32]),
        };
        store.save(&b).unwrap();
        assert_eq!(store.load().unwrap(), Some(b));
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("forward.cursor")]);
    }

    /// G045: PL-4-2
    #[test]
    fn a_damaged_cursor_is_an_error_not_a_guess() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c");
        let store = CursorFileStore::new(&path);
        for bad in [
            &b""[..],
            b"{",
            b"{\"seq\":1}",
            b"{\"seq\":1,\"hash\":\"zz\"}",
            b"{\"seq\":-1,\"hash\":\"00\"}",
            b"{\"seq\":0,\"hash\":\"0101010101010101010101010101010101010101010101010101010101010101\"}",
            b"{\"seq\":1,\"hash\":\"0000000000000000000000000000000000000000000000000000000000000000\",\"x\":1}",
        ] {
            fs::write(&path, bad).unwrap();
            let e = store.load().unwrap_err();
            assert!(matches!(e, ForwardError::Cursor { .. }), "{e}");
        }
        fs::write(&path, vec![b' '; 5000]).unwrap();
        assert!(store.load().is_err());
    }
}
