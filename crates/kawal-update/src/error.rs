//! The one error type of `kawal-update`.
//!
//! Variants are grouped by who caused them: the repository or the network (possibly an attacker:
//! every `Rejected*` variant, plus HTTP status and network failures), the operator (configuration
//! and local files), or the vendor tooling ([`crate::repo`]).

use std::path::PathBuf;

use crate::transport::Refusal;

/// A TUF role name as shown in errors (`root`, `timestamp`, `snapshot`, `targets`).
pub type RoleName = String;

/// Everything that can go wrong while verifying an update.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Repository: metadata of `role` is older than the version already trusted (rollback), or a
    /// new root is not exactly the next version.
    #[error(
        "rollback refused: {role} metadata version {offered} is older than trusted version {trusted}"
    )]
    RejectedRollback {
        /// The role whose version went back.
        role: RoleName,
        /// The version trusted before this update.
        trusted: u64,
        /// The version the repository offered.
        offered: u64,
    },
    /// Repository: metadata of `role` has expired (freeze attack, or a stale repository).
    #[error("freeze refused: {role} metadata has expired")]
    RejectedExpired {
        /// The role that expired.
        role: RoleName,
    },
    /// Repository: metadata of `role` is not signed by a threshold of the keys the trusted root
    /// names (bad signature, wrong key, too few signatures).
    #[error("signature refused: {role} metadata is not signed by a threshold of trusted keys")]
    RejectedSignature {
        /// The role whose signatures failed.
        role: RoleName,
        /// What the check found.
        #[source]
        source: Box<tough::schema::Error>,
    },
    /// Repository: metadata disagrees with the version another role signed for it
    /// (mix-and-match).
    #[error(
        "mix-and-match refused: {role} metadata is version {fetched}, the signed reference says {expected}"
    )]
    RejectedVersionMismatch {
        /// The role fetched.
        role: RoleName,
        /// The version in the fetched file.
        fetched: u64,
        /// The version the referencing role signed.
        expected: u64,
    },
    /// Repository: a file was larger than allowed (endless data): a metadata size cap or a target's
    /// signed length.
    #[error("endless data refused: {what} is larger than {max_size} bytes")]
    RejectedTooLarge {
        /// Which file or cap.
        what: String,
        /// The limit in bytes.
        max_size: u64,
    },
    /// Repository: the target ended before its signed length.
    #[error("truncated target refused: {name} has {read} bytes, {signed} were signed")]
    RejectedTruncated {
        /// The target name.
        name: String,
        /// Bytes received.
        read: u64,
        /// The signed length.
        signed: u64,
    },
    /// Repository: the bytes of a file do not match the signed SHA-256.
    #[error("hash refused: {what} does not match its signed SHA-256")]
    RejectedHash {
        /// Which file.
        what: String,
    },
    /// Repository: any other refusal by the TUF client (unparsable metadata, missing role, …).
    #[error("update metadata refused")]
    RejectedMetadata(#[source] Box<tough::error::Error>),
    /// Repository: the requested target is not listed in the signed targets metadata.
    #[error("target {name} is not listed in the signed targets metadata")]
    UnknownTarget {
        /// The requested name.
        name: String,
    },
    /// Operator: the root installed at provisioning cannot be read or does not verify.
    #[error("trusted root {path} is unusable")]
    TrustedRoot {
        /// Where the root was read from.
        path: PathBuf,
        /// What was wrong with it.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Operator or platform: a local file or folder could not be read or written.
    #[error("I/O error on {path}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Operator: the repository location is not a usable folder.
    #[error("repository location {path} is not a folder")]
    BadLocation {
        /// The configured location.
        path: PathBuf,
    },
    /// Network, possibly an attacker: the server's certificate does not chain to a pinned vendor
    /// root, or the TLS handshake failed otherwise.
    #[error(
        "server refused: TLS to {url} failed ({reason}); only the pinned vendor roots are trusted"
    )]
    RejectedServerCertificate {
        /// The URL being fetched.
        url: String,
        /// What rustls reported.
        reason: String,
    },
    /// Network, possibly an attacker: a redirect to another origin, to plain HTTP, or one too many.
    #[error("redirect refused: {from} to {to}: {why}")]
    RejectedRedirect {
        /// The URL that answered with the redirect.
        from: String,
        /// Where it pointed.
        to: String,
        /// Which rule it broke.
        why: &'static str,
    },
    /// Network, possibly an attacker: a file did not arrive within its time-out (slow retrieval).
    #[error("slow retrieval refused: {url} did not arrive within {limit:?}")]
    RejectedTimeout {
        /// The URL being fetched.
        url: String,
        /// The time-out that ran out.
        limit: std::time::Duration,
    },
    /// Network, possibly an attacker: too few bytes arrived in a progress window (slow retrieval).
    #[error(
        "slow retrieval refused: {url} sent {received} bytes in {window:?}, at least {min_bytes} are required"
    )]
    RejectedSlowRetrieval {
        /// The URL being fetched.
        url: String,
        /// Bytes received in the window.
        received: u64,
        /// The window.
        window: std::time::Duration,
        /// The minimum per window.
        min_bytes: u64,
    },
    /// Repository server: it answered with an HTTP error status (a missing file, a server fault).
    #[error("repository server answered {url} with HTTP status {status}")]
    HttpStatus {
        /// The URL being fetched.
        url: String,
        /// The status code.
        status: u16,
    },
    /// Network: the repository server could not be reached or the connection broke.
    #[error("repository server unreachable for {url}: {reason}")]
    Network {
        /// The URL being fetched.
        url: String,
        /// What failed.
        reason: String,
    },
    /// Operator: a repository URL is not `https://` (plain HTTP is never used for updates).
    #[error("insecure repository URL refused: {url} is not https://")]
    InsecureUrl {
        /// The configured URL.
        url: String,
    },
    /// Operator: the pinned root certificates are unusable.
    #[error("pinned TLS roots {path} are unusable: {reason}")]
    TlsConfig {
        /// The PEM file (empty when none was configured).
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// Vendor tooling: a key file is missing, malformed, or readable by others. Never shows key
    /// material.
    #[error("key file {path}: {problem}")]
    KeyFile {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// Vendor tooling: the repository folder is not in the state the action needs.
    #[error("repository {path}: {problem}")]
    RepoState {
        /// The repository folder.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// Vendor tooling: building or signing metadata failed.
    #[error("could not {action} the repository metadata")]
    RepoEdit {
        /// What the tool was doing.
        action: &'static str,
        /// The cause (a tough editor or schema error).
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The result type of `kawal-update`.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Whether the repository (and so possibly an attacker) caused this error, rather than the
    /// device's own configuration or storage.
    #[must_use]
    pub fn is_rejection(&self) -> bool {
        !matches!(
            self,
            Self::TrustedRoot { .. }
                | Self::Io { .. }
                | Self::BadLocation { .. }
                | Self::InsecureUrl { .. }
                | Self::TlsConfig { .. }
                | Self::KeyFile { .. }
                | Self::RepoState { .. }
                | Self::RepoEdit { .. }
        )
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

impl From<tough::error::Error> for Error {
    fn from(e: tough::error::Error) -> Self {
        use tough::error::Error as T;
        // The size and hash checks run inside the fetch, so they arrive wrapped in a transport
        // error: report the check, not the transport.
        if let T::Transport { url, source, .. } = &e {
            let cause = std::error::Error::source(source);
            // A refusal by the HTTPS transport (time-out, TLS, redirect, status).
            if let Some(refusal) = cause.and_then(|s| s.downcast_ref::<Refusal>()) {
                return refusal.clone().into_error(url.to_string());
            }
            match cause.and_then(|s| s.downcast_ref::<T>()) {
                Some(T::MaxSizeExceeded { max_size, .. }) => {
                    return Self::RejectedTooLarge {
                        what: url.to_string(),
                        max_size: *max_size,
                    };
                }
                Some(T::HashMismatch { .. }) => {
                    return Self::RejectedHash {
                        what: url.to_string(),
                    };
                }
                _ => {}
            }
        }
        match e {
            T::OlderMetadata {
                role,
                current_version,
                new_version,
                ..
            } => Self::RejectedRollback {
                role: role.to_string(),
                trusted: current_version,
                offered: new_version,
            },
            T::ExpiredMetadata { role, .. } => Self::RejectedExpired {
                role: role.to_string(),
            },
            T::VerifyMetadata { role, source, .. } => Self::RejectedSignature {
                role: role.to_string(),
                source: Box::new(source),
            },
            T::VersionMismatch {
                role,
                fetched,
                expected,
                ..
            } => Self::RejectedVersionMismatch {
                role: role.to_string(),
                fetched,
                expected,
            },
            T::MaxSizeExceeded {
                max_size,
                specifier,
                ..
            } => Self::RejectedTooLarge {
                what: specifier.to_owned(),
                max_size,
            },
            T::HashMismatch { context, .. } => Self::RejectedHash { what: context },
            T::OlderSnapshotInTimestamp {
                snapshot_new,
                snapshot_old,
                ..
            } => Self::RejectedRollback {
                role: "snapshot".to_owned(),
                trusted: snapshot_old,
                offered: snapshot_new,
            },
            T::SnapshotRoleRollback {
                role,
                old_role_version,
                new_role_version,
                ..
            } => Self::RejectedRollback {
                role: role.trim_end_matches(".json").to_owned(),
                trusted: old_role_version,
                offered: new_role_version,
            },
            other => Self::RejectedMetadata(Box::new(other)),
        }
    }
}
