//! Sessions (G045 DS-3-1, DS-3-2, AU-1-7), as a table with no I/O.
//!
//! A session ID is 256 bits from the OS CSPRNG, given to the client once and kept here only as
//! its HMAC under the session key, so a copy of the table cannot be replayed. Sessions end after
//! an idle time-out and an absolute lifetime, both on the caller's monotonic clock (seconds).
//! Re-authentication or a change of privilege issues a new ID and destroys the old one. An
//! admin account holds one session at a time: a new login ends the previous one (default) or
//! is refused.
use std::collections::HashMap;
use std::fmt;

use kawal_crypto::keys::{MacKey, Session as SessionPurpose};
use serde::{Deserialize, Serialize};

/// The settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct SessionPolicy {
    /// Seconds without a request before a session ends (default 600).
    pub idle_timeout: u64,
    /// Seconds after login when a session ends regardless (default 28 800).
    pub absolute_lifetime: u64,
    /// What a second admin login does.
    pub admin_concurrency: AdminConcurrency,
}

impl Default for SessionPolicy {
    fn default() -> Self {
        Self {
            idle_timeout: 600,
            absolute_lifetime: 8 * 3600,
            admin_concurrency: AdminConcurrency::EndPrevious,
        }
    }
}

/// What happens when an admin account that holds a session logs in again (AU-1-7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AdminConcurrency {
    /// The new login ends the previous session (default).
    EndPrevious,
    /// The new login is refused while the previous session lives.
    RefuseNew,
}

/// A session ID as handed to the client. Never printed.
pub struct Token(String);

impl Token {
    /// The text for the cookie.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token([REDACTED])")
    }
}

/// What the table knows about a live session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The account.
    pub user: String,
    /// Whether it holds admin privilege.
    pub admin: bool,
    /// Login time.
    pub created: u64,
    /// Last request.
    pub last_seen: u64,
}

/// Why a session ended or a login was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Idle too long.
    Idle,
    /// Older than the absolute lifetime.
    Lifetime,
    /// Replaced by a newer admin login.
    Superseded,
    /// Logged out, or ended by a password, role or account change.
    Revoked,
    /// Refused: another admin session of this account is live.
    AdminSessionActive,
}

/// How many ended sessions are remembered, so their holders can be told why.
const TOMBSTONES: usize = 4096;

/// Live sessions one account may hold; a further login ends its least recently used one, so
/// no account can fill the table (each login still costs an Argon2id verification).
pub const MAX_PER_ACCOUNT: usize = 16;

/// The live sessions.
#[derive(Default)]
pub struct Sessions {
    live: HashMap<[u8; 32], Session>,
    /// Sessions ended by someone else (superseded, revoked): the holder's next request is told
    /// why instead of a bare "not logged in". Bounded; oldest forgotten first.
    ended: HashMap<[u8; 32], (Ended, u64)>,
}

impl fmt::Debug for Sessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sessions")
            .field("live", &self.live.len())
            .finish()
    }
}

/// Whether a session has outlived its lifetime or its idle time-out at `now`.
fn timed_out(s: &Session, now: u64, policy: &SessionPolicy) -> Option<Ended> {
    if now.saturating_sub(s.created) >= policy.absolute_lifetime {
        Some(Ended::Lifetime)
    } else if now.saturating_sub(s.last_seen) >= policy.idle_timeout {
        Some(Ended::Idle)
    } else {
        None
    }
}

fn new_token() -> kawal_crypto::Result<Token> {
    let bytes: [u8; 32] = kawal_crypto::rng::array()?;
    Ok(Token(bytes.iter().map(|b| format!("{b:02x}")).collect()))
}

impl Sessions {
    /// Live sessions.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// Whether none is live.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// Starts a session after a successful login. Returns the token and the sessions it ended.
    pub fn login(
        &mut self,
        user: &str,
        admin: bool,
        now: u64,
        key: &MacKey<SessionPurpose>,
        policy: &SessionPolicy,
    ) -> Result<(Token, Vec<(Session, Ended)>), Ended> {
        let mut ended = self.expire(now, policy);
        if admin {
            let held = self.live.iter().any(|(_, s)| s.admin && s.user == user);
            if held && policy.admin_concurrency == AdminConcurrency::RefuseNew {
                return Err(Ended::AdminSessionActive);
            }
            let (keep, gone): (HashMap<_, _>, HashMap<_, _>) = std::mem::take(&mut self.live)
                .into_iter()
                .partition(|(_, s)| !(s.admin && s.user == user));
            self.live = keep;
            for (digest, s) in gone {
                self.remember(digest, Ended::Superseded, now);
                ended.push((s, Ended::Superseded));
            }
        }
        loop {
            let own = self.live.iter().filter(|(_, s)| s.user == user);
            if own.clone().count() < MAX_PER_ACCOUNT {
                break;
            }
            let Some(oldest) = own.min_by_key(|(_, s)| s.last_seen).map(|(d, _)| *d) else {
                break;
            };
            if let Some(s) = self.live.remove(&oldest) {
                self.remember(oldest, Ended::Superseded, now);
                ended.push((s, Ended::Superseded));
            }
        }
        let token = new_token().map_err(|_| Ended::Revoked)?;
        let digest = key.mac(token.expose().as_bytes());
        self.live.insert(
            digest,
            Session {
                user: user.to_owned(),
                admin,
                created: now,
                last_seen: now,
            },
        );
        Ok((token, ended))
    }

    /// Checks a request's token at `now`: the live session, or why there is none.
    pub fn touch(
        &mut self,
        token: &str,
        now: u64,
        key: &MacKey<SessionPurpose>,
        policy: &SessionPolicy,
    ) -> Result<Session, Option<Ended>> {
        let digest = key.mac(token.as_bytes());
        let Some(s) = self.live.get_mut(&digest) else {
            return Err(self.ended.remove(&digest).map(|(why, _)| why));
        };
        if let Some(why) = timed_out(s, now, policy) {
            self.live.remove(&digest);
            return Err(Some(why));
        }
        s.last_seen = now;
        Ok(s.clone())
    }

    /// Issues a new ID for a live session (re-authentication, privilege change) and destroys
    /// the old one.
    pub fn rotate(
        &mut self,
        token: &str,
        now: u64,
        admin: bool,
        key: &MacKey<SessionPurpose>,
    ) -> Option<Token> {
        let mut s = self.live.remove(&key.mac(token.as_bytes()))?;
        s.admin = admin;
        s.last_seen = now;
        let fresh = new_token().ok()?;
        self.live.insert(key.mac(fresh.expose().as_bytes()), s);
        Some(fresh)
    }

    /// Ends one session (logout).
    pub fn logout(&mut self, token: &str, key: &MacKey<SessionPurpose>) -> Option<Session> {
        self.live.remove(&key.mac(token.as_bytes()))
    }

    /// Ends every session of an account (password, role or account change) at `now`.
    pub fn revoke_user(&mut self, user: &str, now: u64) -> usize {
        let gone: Vec<[u8; 32]> = self
            .live
            .iter()
            .filter(|(_, s)| s.user == user)
            .map(|(d, _)| *d)
            .collect();
        for d in &gone {
            self.live.remove(d);
            self.remember(*d, Ended::Revoked, now);
        }
        gone.len()
    }

    /// Live sessions of one account.
    pub fn of_user(&self, user: &str) -> usize {
        self.live.values().filter(|s| s.user == user).count()
    }

    fn remember(&mut self, digest: [u8; 32], why: Ended, now: u64) {
        if self.ended.len() >= TOMBSTONES
            && let Some(oldest) = self
                .ended
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(d, _)| *d)
        {
            self.ended.remove(&oldest);
        }
        self.ended.insert(digest, (why, now));
    }

    /// Removes expired sessions; returns them with the reason.
    pub fn expire(&mut self, now: u64, policy: &SessionPolicy) -> Vec<(Session, Ended)> {
        let mut gone = Vec::new();
        self.live.retain(|_, s| match timed_out(s, now, policy) {
            Some(w) => {
                gone.push((s.clone(), w));
                false
            }
            None => true,
        });
        gone
    }
}

#[cfg(test)]
mod tests;
