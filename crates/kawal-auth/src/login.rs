//! Password authentication with one answer for every failure (G045 AU-1-3, AU-2-3).
//!
//! Every attempt, whatever its outcome, runs exactly one Argon2id verification: a name that
//! is no account is verified against a dummy verifier, and locked or disabled accounts are
//! still verified. Every failure also costs one durable write to the tally table (a decoy
//! record for unknown names, which keeps nothing per name). So the time an attempt takes does
//! not tell an unknown name from a wrong password or a locked account. The [`FailureKind`] is
//! for the audit log only; the HTTP layer gives every failure the same answer.
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use kawal_crypto::password::{self, PasswordHash};
use kawal_crypto::secret::SecretString;

use crate::accounts::{Account, AccountError, Directory};
use crate::lockout::Gate;

/// A successful login.
#[derive(Debug, Clone)]
pub struct LoginOk {
    /// The account as it was at login.
    pub account: Account,
    /// The password is older than the configured maximum age and must be changed.
    pub password_expired: bool,
}

/// Why a login failed: for the audit log, never for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// No account has that name.
    UnknownUser,
    /// The password does not match.
    WrongPassword,
    /// The account is locked until this time (Unix seconds), whatever the password.
    Locked {
        /// When the lock ends.
        until: u64,
    },
    /// The account is disabled, whatever the password.
    Disabled,
    /// The store or the hashing failed (logged as an error).
    Internal,
}

impl FailureKind {
    /// Its name in the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::UnknownUser => "unknown-user",
            FailureKind::WrongPassword => "wrong-password",
            FailureKind::Locked { .. } => "locked",
            FailureKind::Disabled => "disabled",
            FailureKind::Internal => "internal",
        }
    }
}

/// A failed login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginFailure {
    /// Why.
    pub kind: FailureKind,
    /// This failure locked the account until this time (Unix seconds).
    pub locked_now: Option<u64>,
}

impl LoginFailure {
    fn of(kind: FailureKind) -> Self {
        Self {
            kind,
            locked_now: None,
        }
    }
}

/// Checks passwords against the directory.
pub struct Authenticator {
    dir: Arc<Directory>,
    /// Verified against when the name is no account, so that costs what a real check costs.
    dummy: PasswordHash,
    verifications: AtomicU64,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("verifications", &self.verifications())
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// An authenticator over `dir`; makes the dummy verifier with the directory's Argon2id cost.
    pub fn new(dir: Arc<Directory>) -> Result<Self, AccountError> {
        let bytes: [u8; 32] = kawal_crypto::rng::array()?;
        let secret = SecretString::new(hex::encode(bytes));
        let dummy = password::hash(&secret, dir.config().argon2)?;
        Ok(Self {
            dir,
            dummy,
            verifications: AtomicU64::new(0),
        })
    }

    /// The directory it checks against.
    pub fn directory(&self) -> &Arc<Directory> {
        &self.dir
    }

    /// Argon2id verifications run so far (exactly one per [`authenticate`](Self::authenticate)).
    pub fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }

    fn verify(
        &self,
        password: &SecretString,
        against: &PasswordHash,
    ) -> Result<bool, AccountError> {
        self.verifications.fetch_add(1, Ordering::Relaxed);
        Ok(password::verify(password, against)?)
    }

    /// Verifies a password. Exactly one Argon2id verification runs for every outcome (unknown
    /// users verify against the dummy hash; locked and disabled accounts still verify), so
    /// failures can't be told apart by time. Updates the persisted tally. Blocking (CPU-heavy):
    /// callers run it on a bounded worker pool.
    pub fn authenticate(
        &self,
        name: &str,
        password: &SecretString,
        now: u64,
    ) -> Result<LoginOk, LoginFailure> {
        let snapshot = match self.dir.snapshot(name) {
            Ok(s) => s,
            Err(e) => {
                // Still one verification, so a failing store is no faster than a wrong password.
                let _ = self.verify(password, &self.dummy);
                return Err(internal(&e));
            }
        };
        let Some((account, tally)) = snapshot else {
            let _ = self.verify(password, &self.dummy);
            if let Err(e) = self.dir.decoy_write() {
                return Err(internal(&e));
            }
            return Err(LoginFailure::of(FailureKind::UnknownUser));
        };
        let matched = match self.verify(password, &account.password) {
            Ok(m) => m,
            Err(e) => return Err(internal(&e)),
        };
        let lockout = self.dir.config().lockout;
        let disabled = account.disabled;
        let stale_lock = match tally.gate(now) {
            Gate::LockedUntil(until) => Some(until),
            Gate::Open => None,
        };
        // The tally is read again under the directory's lock: concurrent attempts that passed
        // the gate above are all counted, and a lock one of them set refuses the others.
        let settled = self
            .dir
            .update_tally(name, |t| match (stale_lock, t.gate(now)) {
                (Some(until), _) | (None, Gate::LockedUntil(until)) => {
                    // A lock is not extended by attempts made while it holds.
                    (Err(LoginFailure::of(FailureKind::Locked { until })), true)
                }
                _ if disabled => (Err(LoginFailure::of(FailureKind::Disabled)), true),
                _ if matched => {
                    let before = t.clone();
                    t.success();
                    (Ok(()), *t != before)
                }
                _ => {
                    let locked_now = t.failure(now, &lockout);
                    (
                        Err(LoginFailure {
                            kind: FailureKind::WrongPassword,
                            locked_now,
                        }),
                        true,
                    )
                }
            });
        match settled {
            Ok(Some(Ok(()))) => {
                let password_expired = self.dir.password_expired(&account, now);
                Ok(LoginOk {
                    account,
                    password_expired,
                })
            }
            Ok(Some(Err(failure))) => Err(failure),
            // Removed while its password was being checked.
            Ok(None) => Err(LoginFailure::of(FailureKind::UnknownUser)),
            Err(e) => Err(internal(&e)),
        }
    }
}

fn internal(e: &AccountError) -> LoginFailure {
    tracing::error!(error = %e, "login check failed");
    LoginFailure::of(FailureKind::Internal)
}
