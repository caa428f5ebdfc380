//! The binary's error: a message for the operator and an exit code (sysexits.h values).
use std::fmt;

/// Exit codes, so scripts can tell failures apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Something failed that has no more specific code.
    Failure = 1,
    /// Bad data: a log that does not verify, a tampered record (EX_DATAERR).
    DataErr = 65,
    /// The device is not provisioned, or a file is missing (EX_NOINPUT).
    NoInput = 66,
    /// The device is locked after tamper: its keys were destroyed, it must be re-provisioned
    /// (EX_UNAVAILABLE).
    Locked = 69,
    /// The power-up self-test failed (EX_SOFTWARE).
    SelfTest = 70,
    /// A file could not be written or read (EX_IOERR).
    Io = 74,
    /// Stopped to be started again at once: an update or a rollback switched slots
    /// (EX_TEMPFAIL; the supervisor restarts the daemon).
    Restart = 75,
    /// Refused: already provisioned, permissions, the operator said no (EX_NOPERM).
    NoPerm = 77,
    /// The configuration is invalid (EX_CONFIG).
    Config = 78,
}

/// A failure to report to the operator. Messages never hold secrets.
#[derive(Debug)]
pub struct CliError {
    /// What to print.
    pub message: String,
    /// How to exit.
    pub exit: Exit,
}

impl CliError {
    /// A new error.
    pub fn new(exit: Exit, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            exit,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

/// Result with [`CliError`].
pub type Result<T> = std::result::Result<T, CliError>;

/// Adds context and an exit code to foreign errors.
pub trait Context<T> {
    /// Maps the error to a [`CliError`] with `what` in front.
    fn or_exit(self, exit: Exit, what: &str) -> Result<T>;
}

impl<T, E: fmt::Display> Context<T> for std::result::Result<T, E> {
    fn or_exit(self, exit: Exit, what: &str) -> Result<T> {
        self.map_err(|e| CliError::new(exit, format!("{what}: {e}")))
    }
}
