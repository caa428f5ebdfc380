//! Login, password change and re-authentication, shared by the API and the console so both
//! behave the same and record the same events.
use std::net::IpAddr;
use std::sync::Arc;

use kawal_audit::{Event, Outcome};
use kawal_auth::accounts::{Account, AccountError};
use kawal_auth::login::FailureKind;
use kawal_auth::session::Token;
use kawal_crypto::secret::SecretString;

use crate::reply::ended_reason;
use crate::state::{AppState, Proof, lock};

/// Why a login did not start a session. `Failed` covers every credential failure alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginRefused {
    /// Unknown user, wrong password, locked or disabled: one answer.
    Failed,
    /// Too many failures from this source: wait this many seconds.
    Penalised(u64),
    /// Too many logins being checked at once.
    Busy,
    /// An admin session of this account is live and the policy refuses a second.
    AdminSessionActive,
}

/// A started session.
#[derive(Debug)]
pub struct Started {
    /// The token for the cookie.
    pub token: Token,
    /// The account as it was at login.
    pub account: Account,
}

fn kind_name(k: &FailureKind) -> &'static str {
    match k {
        FailureKind::UnknownUser => "unknown-user",
        FailureKind::WrongPassword => "wrong-password",
        FailureKind::Locked { .. } => "locked",
        FailureKind::Disabled => "disabled",
        FailureKind::Internal => "internal",
    }
}

/// Checks a password on the worker pool: the answer for `user` (one Argon2id run whatever
/// the outcome) and updates to the lockout tallies.
pub async fn check_password(
    state: &Arc<AppState>,
    ip: IpAddr,
    user: &str,
    password: SecretString,
    purpose: &'static str,
) -> Result<Account, LoginRefused> {
    let now = AppState::wall();
    let penalised = lock(&state.penalties).check(ip, now);
    if let Some(wait) = penalised {
        // Costs the peer nothing, so it can come at line rate: flood-controlled.
        state
            .record_limited(
                ip,
                "login.refused/source-penalty",
                None,
                Event::new("login.refused", "unknown", Outcome::Denied)
                    .with("reason", "source-penalty")
                    .with("purpose", purpose)
                    .with("source", ip.to_string())
                    .with("retry_after", wait),
            )
            .await;
        return Err(LoginRefused::Penalised(wait));
    }
    let auth = Arc::clone(&state.authenticator);
    let name = user.to_owned();
    let exempt = lock(&state.penalties).is_exempt(ip);
    let outcome = state
        .pool
        .run_as(exempt, move || auth.authenticate(&name, &password, now))
        .await;
    let outcome = match outcome {
        Ok(o) => o,
        Err(_) => {
            state
                .record_limited(
                    ip,
                    "login.refused/busy",
                    None,
                    Event::new("login.refused", "unknown", Outcome::Denied)
                        .with("reason", "busy")
                        .with("purpose", purpose)
                        .with("source", ip.to_string()),
                )
                .await;
            return Err(LoginRefused::Busy);
        }
    };
    match outcome {
        Ok(ok) => {
            lock(&state.penalties).success(ip);
            Ok(ok.account)
        }
        Err(fail) => {
            let penalty = lock(&state.penalties).failure(ip, now);
            // A name that is not an account is not logged: people type passwords there.
            let actor = if matches!(fail.kind, FailureKind::UnknownUser) {
                "unknown"
            } else {
                user
            };
            let mut e = Event::new("login.failed", actor, Outcome::Failure)
                .with("reason", kind_name(&fail.kind))
                .with("purpose", purpose)
                .with("source", ip.to_string());
            if let Some(p) = penalty {
                e = e.with("source_penalty", p);
            }
            state.record(e).await;
            if let Some(until) = fail.locked_now {
                state
                    .record(
                        Event::new("account.locked", "kawal-api", Outcome::Info)
                            .with("user", user)
                            .with("until_unix", until)
                            .with("source", ip.to_string()),
                    )
                    .await;
            }
            Err(LoginRefused::Failed)
        }
    }
}

/// Logs in: checks the password and starts a session (a fresh ID; AU-1-7 applied).
pub async fn login(
    state: &Arc<AppState>,
    ip: IpAddr,
    user: &str,
    password: SecretString,
) -> Result<Started, LoginRefused> {
    let account = check_password(state, ip, user, password, "login").await?;
    let policy = state.settings.session;
    let admin = account.role.is_privileged();
    let started = lock(&state.sessions).login(
        &account.username,
        admin,
        state.mono(),
        &state.session_key,
        &policy,
    );
    match started {
        Ok((token, ended)) => {
            for (s, why) in ended {
                state
                    .record(
                        Event::new("session.ended", "kawal-api", Outcome::Info)
                            .with("user", s.user.as_str())
                            .with("reason", ended_reason(why)),
                    )
                    .await;
            }
            state
                .record(
                    Event::new("login.succeeded", &account.username, Outcome::Success)
                        .with("role", account.role.as_str())
                        .with("must_change", account.must_change)
                        .with("source", ip.to_string()),
                )
                .await;
            state
                .record(
                    Event::new("session.started", &account.username, Outcome::Info)
                        .with("source", ip.to_string()),
                )
                .await;
            Ok(Started { token, account })
        }
        Err(_) => {
            state
                .record(
                    Event::new("login.refused", &account.username, Outcome::Denied)
                        .with("reason", "admin-session-active")
                        .with("source", ip.to_string()),
                )
                .await;
            Err(LoginRefused::AdminSessionActive)
        }
    }
}

/// Ends one session.
pub async fn logout(state: &AppState, user: &str, token: &str) {
    if lock(&state.sessions)
        .logout(token, &state.session_key)
        .is_some()
    {
        state
            .record(Event::new("session.ended", user, Outcome::Info).with("reason", "logout"))
            .await;
    }
}

/// What a password change can fail with.
#[derive(Debug)]
pub enum ChangeRefused {
    /// The current password was wrong (or the source is penalised / busy).
    Login(LoginRefused),
    /// The new one broke a rule.
    Account(AccountError),
}

/// Changes the own password: checks the current one, applies the rules and history, ends
/// every session of the account and starts a new one for the caller.
pub async fn change_password(
    state: &Arc<AppState>,
    ip: IpAddr,
    user: &str,
    current: SecretString,
    new: &SecretString,
) -> Result<Token, ChangeRefused> {
    check_password(state, ip, user, current, "password-change")
        .await
        .map_err(ChangeRefused::Login)?;
    let (who, pw, now) = (user.to_owned(), new.clone(), AppState::wall());
    let changed = state
        .accounts(move |d| d.change_password(&who, &pw, now))
        .await;
    if let Err(e) = changed {
        let reason = match &e {
            AccountError::Weak(rules) => rules
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
            other => other.to_string(),
        };
        state
            .record(
                Event::new("password.change-refused", user, Outcome::Denied).with("reason", reason),
            )
            .await;
        return Err(ChangeRefused::Account(e));
    }
    state
        .record(Event::new("password.changed", user, Outcome::Success).with("by", "self"))
        .await;
    state.end_sessions(user, "password-changed", user).await;
    let account = state
        .directory
        .get(user)
        .ok()
        .flatten()
        .ok_or(ChangeRefused::Account(AccountError::NotFound))?;
    let policy = state.settings.session;
    let (token, _) = lock(&state.sessions)
        .login(
            user,
            account.role.is_privileged(),
            state.mono(),
            &state.session_key,
            &policy,
        )
        .map_err(|_| ChangeRefused::Login(LoginRefused::AdminSessionActive))?;
    state
        .record(
            Event::new("session.started", user, Outcome::Info)
                .with("source", ip.to_string())
                .with("after", "password-change"),
        )
        .await;
    Ok(token)
}

/// Re-authenticates: checks the password again, issues a single-use proof for one sensitive
/// action, and rotates the session ID (DS-3-2).
pub async fn reauth(
    state: &Arc<AppState>,
    ip: IpAddr,
    user: &str,
    token: Option<&str>,
    password: SecretString,
) -> Result<(String, Option<Token>), LoginRefused> {
    let account = check_password(state, ip, user, password, "reauth").await?;
    let proof: [u8; 32] = kawal_crypto::rng::array().map_err(|_| LoginRefused::Busy)?;
    let proof = hex::encode(proof);
    let expires = state.mono().saturating_add(state.settings.reauth_window);
    lock(&state.proofs).insert(
        state.digest(&proof),
        Proof {
            user: user.to_owned(),
            expires,
        },
    );
    let fresh = token.and_then(|t| {
        lock(&state.sessions).rotate(
            t,
            state.mono(),
            account.role.is_privileged(),
            &state.session_key,
        )
    });
    state
        .record(
            Event::new("reauth.succeeded", user, Outcome::Success)
                .with("source", ip.to_string())
                .with("session_rotated", fresh.is_some()),
        )
        .await;
    Ok((proof, fresh))
}

/// Verifies the caller's password inline (console forms for sensitive actions).
pub async fn confirm(
    state: &Arc<AppState>,
    ip: IpAddr,
    user: &str,
    password: SecretString,
) -> Result<(), LoginRefused> {
    check_password(state, ip, user, password, "reauth").await?;
    state
        .record(
            Event::new("reauth.succeeded", user, Outcome::Success)
                .with("source", ip.to_string())
                .with("inline", true),
        )
        .await;
    Ok(())
}
