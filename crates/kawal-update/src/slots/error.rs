//! The error type of the slot and boot-state layer.
//!
//! Refusals of a request (`TrialInProgress`, `PreviouslyFailed`, …) leave the state untouched.
//! Storage errors name the file. None of them carries secrets: the state holds none.

use std::path::PathBuf;

use super::Slot;

/// Everything that can go wrong with slots and the boot state.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Request: a trial is already in progress (commit or roll it back first).
    #[error("a trial of version {version} is in progress")]
    TrialInProgress {
        /// The version on trial.
        version: String,
    },
    /// Request: there is no trial to commit or roll back.
    #[error("no trial is in progress")]
    NoTrial,
    /// Request: this version failed trial before; it is tried again only when forced.
    #[error("version {version} failed trial before; refused unless forced")]
    PreviouslyFailed {
        /// The version.
        version: String,
    },
    /// Request (possibly an attacker's bundle): the security version is below the installed floor.
    #[error("security version {offered} is below the installed security version {installed}")]
    SecurityVersionTooLow {
        /// The bundle's security version.
        offered: u64,
        /// The installed floor.
        installed: u64,
    },
    /// Request: the trial slot has not been booted yet, so its health check cannot have run.
    #[error("version {version} has not booted on trial yet")]
    TrialNotBooted {
        /// The version on trial.
        version: String,
    },
    /// Request: the trial's time limit passed; it will be rolled back.
    #[error("the trial of version {version} passed its time limit")]
    TrialExpired {
        /// The version on trial.
        version: String,
    },
    /// Misuse by the caller (never caused by untrusted data): a request that makes no sense.
    #[error("invalid request: {what}")]
    ApiMisuse {
        /// What was wrong.
        what: &'static str,
    },
    /// Platform: a slot holds no runnable kawal.
    #[error("slot {slot} at {path} holds no runnable kawal")]
    SlotNotRunnable {
        /// The slot.
        slot: Slot,
        /// Its folder.
        path: PathBuf,
    },
    /// Platform: neither slot holds a runnable kawal. The launcher reports this and stops.
    #[error("neither slot is runnable ({a} and {b})")]
    NothingBootable {
        /// Slot A's folder.
        a: PathBuf,
        /// Slot B's folder.
        b: PathBuf,
    },
    /// Platform: every copy of the boot state is corrupt (bad checksum, torn, unparsable).
    /// Nothing is written or deleted until an operator repairs it.
    #[error("boot state is corrupt in every copy: {paths:?}")]
    StateCorrupt {
        /// The copies found.
        paths: Vec<PathBuf>,
    },
    /// Operator: no boot state exists yet (the device was not initialised).
    #[error("no boot state at {root}")]
    NotInitialised {
        /// Where it was looked for.
        root: PathBuf,
    },
    /// Operator: a boot state exists already.
    #[error("a boot state already exists at {root}")]
    AlreadyInitialised {
        /// Where it was found.
        root: PathBuf,
    },
    /// Platform: a boot loader environment is unusable (format, checksum, size, contents).
    #[error("boot loader environment {path}: {problem}")]
    Env {
        /// The environment file (or device).
        path: PathBuf,
        /// What is wrong.
        problem: EnvProblem,
    },
    /// Platform: a file or folder could not be read or written.
    #[error("I/O error on {path}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// What is wrong with a boot loader environment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvProblem {
    /// The block is not the configured size.
    #[error("size is {found} bytes, expected {expected}")]
    Size {
        /// The configured size.
        expected: usize,
        /// The size read.
        found: usize,
    },
    /// The stored CRC-32 does not match the contents (torn or corrupt).
    #[error("CRC-32 mismatch")]
    BadCrc,
    /// No copy has a valid checksum.
    #[error("no valid copy")]
    NoValidCopy,
    /// A variable is malformed (no `=`, not UTF-8, no terminator).
    #[error("malformed variable at byte {offset}")]
    Malformed {
        /// Where it starts.
        offset: usize,
    },
    /// A name or value cannot be stored (empty name, `=` in a name, NUL or newline).
    #[error("variable {name:?} cannot be stored")]
    BadVariable {
        /// The name.
        name: String,
    },
    /// The variables do not fit in the block.
    #[error("{needed} bytes of variables do not fit in {available}")]
    TooLarge {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// The variables do not describe a valid boot state.
    #[error("inconsistent boot variables: {what}")]
    Inconsistent {
        /// What disagrees.
        what: &'static str,
    },
}

/// The result type of the slot layer.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn env(path: impl Into<PathBuf>, problem: EnvProblem) -> Self {
        Self::Env {
            path: path.into(),
            problem,
        }
    }
}
