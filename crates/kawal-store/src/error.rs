//! The store's error type. Messages name tables and operations, never values or keys.

/// Errors from the encrypted store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store file does not exist where it was expected.
    #[error("no store at {path}")]
    Missing {
        /// The path looked at.
        path: String,
    },
    /// A store already exists where a new one was to be created.
    #[error("a store already exists at {path}")]
    Exists {
        /// The path looked at.
        path: String,
    },
    /// The file is not a kawal store (foreign, truncated or corrupted beyond repair).
    #[error("{path} is not a readable kawal store: {reason}")]
    NotAStore {
        /// The path looked at.
        path: String,
        /// What was wrong.
        reason: String,
    },
    /// The file could not be read or written (permissions, read-only or full file system).
    #[error("cannot use the store file {path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The store opened but its records do not open with this device's keys.
    #[error("the store at {path} belongs to another device or its keys do not match")]
    WrongKeys {
        /// The path looked at.
        path: String,
    },
    /// A record failed authentication: modified, moved to another record, or wrong key.
    #[error("record in table '{table}' failed authentication (modified or moved)")]
    Tampered {
        /// Table of the record.
        table: String,
    },
    /// A record's header names a key version that no longer exists.
    #[error("record in table '{table}' needs key version {version}, which was destroyed")]
    KeyDestroyed {
        /// Table of the record.
        table: String,
        /// The missing version.
        version: u32,
    },
    /// A table or record name is not acceptable.
    #[error("invalid name '{name}': {reason}")]
    InvalidName {
        /// The offending name (table names and keys are not secret).
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// The database engine failed (I/O, lock, corruption).
    #[error("store {op} failed: {source}")]
    Db {
        /// What the store was doing.
        op: &'static str,
        /// The engine's error.
        #[source]
        source: redb::Error,
    },
    /// A cryptographic operation failed.
    #[error("store cryptography failed: {0}")]
    Crypto(#[from] kawal_crypto::Error),
    /// Metadata kept by the store could not be decoded.
    #[error("store metadata '{what}' is corrupt")]
    Metadata {
        /// Which metadata.
        what: &'static str,
    },
}

/// Result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

pub(crate) trait DbContext<T> {
    fn ctx(self, op: &'static str) -> Result<T>;
}

impl<T, E: Into<redb::Error>> DbContext<T> for std::result::Result<T, E> {
    fn ctx(self, op: &'static str) -> Result<T> {
        self.map_err(|e| Error::Db {
            op,
            source: e.into(),
        })
    }
}
