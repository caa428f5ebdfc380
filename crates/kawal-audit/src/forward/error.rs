//! The forwarder's error type.

use std::path::PathBuf;

/// Why forwarding (or setting it up) failed.
///
/// Categories: [`ForwardError::Config`] is operator misconfiguration (refuse to start);
/// [`ForwardError::Connect`] and [`ForwardError::Transport`] are the network (retried with
/// back-off); [`ForwardError::Handshake`] with `refused` set is a collector that is not the
/// pinned one (alert: a possible impostor); [`ForwardError::LocalLog`] and
/// [`ForwardError::Cursor`] are the device's own files (forwarding stalls until resolved,
/// nothing is skipped). No variant ever holds key material.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForwardError {
    /// A setting is unusable.
    #[error("log forwarding config: {field}: {reason}")]
    Config {
        /// The setting, as named in the config file.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The collector could not be resolved or reached.
    #[error("log collector {collector} unreachable: {reason}")]
    Connect {
        /// `host:port`.
        collector: String,
        /// The OS error.
        reason: String,
    },
    /// The TLS handshake failed.
    #[error("log collector TLS handshake failed{}: {reason}", if *refused { " (certificate refused)" } else { "" })]
    Handshake {
        /// What failed.
        reason: String,
        /// The collector's certificate did not verify against the pinned CA and name.
        refused: bool,
    },
    /// Sending, or the confirming close, failed: what was sent since the last confirmation
    /// will be sent again.
    #[error("log collector connection broken during {op}: {reason}")]
    Transport {
        /// "send", "confirming close" or "collector closed".
        op: &'static str,
        /// What failed.
        reason: String,
    },
    /// The local log cannot be read at the forwarder's position, or does not continue the
    /// chain already forwarded.
    #[error("local audit log: {reason}")]
    LocalLog {
        /// What is wrong.
        reason: String,
    },
    /// The cursor file cannot be read or written.
    #[error("log forwarding cursor {path}: {reason}")]
    Cursor {
        /// The cursor file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
}
