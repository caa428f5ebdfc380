//! The platform over the API (G045 PL-1-4, PL-3-1): what the daemon's watchers found
//! (integrity, services and interfaces, tamper, log forwarding) in full, and the integrity check
//! on demand. The daemon implements the [`crate::Backend`] methods; this module only runs
//! them off the async runtime, one check at a time, and shapes the answers.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::Value;

use crate::reply::json_error;
use crate::state::{AppState, Principal};

/// Why an integrity check did not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyError {
    /// Another check started over the API or the console is still running.
    Busy,
    /// The device cannot check now (switched off, locked after tamper); the text says why and
    /// is shown to the caller, so it must never hold a secret.
    Refused(String),
    /// Anything else (the configuration key, a task that stopped); logged, not shown.
    Internal(String),
}

impl VerifyError {
    /// The API's answer: 409 with the reason for `Busy` and `Refused`, a generic 500 else.
    pub fn response(&self) -> Response {
        match self {
            VerifyError::Busy => json_error(
                StatusCode::CONFLICT,
                "an integrity check is already running; try again when it has finished",
            ),
            VerifyError::Refused(why) => json_error(StatusCode::CONFLICT, why),
            VerifyError::Internal(_) => {
                json_error(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
            }
        }
    }
}

/// Marks a one-at-a-time operation (the on-demand integrity check, an update) as running
/// until dropped. It is moved into the blocking task, so a client that hangs up does not free
/// the slot while the work still runs.
pub(crate) struct Running(Arc<AtomicBool>);

impl Running {
    pub(crate) fn take(flag: &Arc<AtomicBool>) -> Option<Self> {
        flag.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| Running(Arc::clone(flag)))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Runs the integrity check now for `actor`, on the blocking pool (it hashes every listed
/// file), one at a time: a second request while one runs is [`VerifyError::Busy`]. The
/// backend records the audit event and keeps the result for health.
pub async fn run_verify(state: &AppState, actor: &str) -> Result<Value, VerifyError> {
    let Some(running) = Running::take(&state.integrity_running) else {
        return Err(VerifyError::Busy);
    };
    let backend = Arc::clone(&state.backend);
    let actor = actor.to_owned();
    let result = tokio::task::spawn_blocking(move || {
        let _running = running;
        backend.verify_integrity(&actor)
    })
    .await
    .unwrap_or_else(|e| {
        Err(VerifyError::Internal(format!(
            "integrity task stopped: {e}"
        )))
    });
    if let Err(VerifyError::Internal(e)) = &result {
        tracing::error!(error = %e, "on-demand integrity check could not run");
    }
    result
}

/// The platform state, read off the runtime (it takes the watchers' locks).
pub async fn read(state: &AppState) -> Result<Value, VerifyError> {
    let backend = Arc::clone(&state.backend);
    tokio::task::spawn_blocking(move || backend.platform())
        .await
        .map_err(|e| VerifyError::Internal(format!("platform task stopped: {e}")))
}

/// `GET /api/v1/platform`.
pub async fn show(State(state): State<Arc<AppState>>) -> Response {
    match read(&state).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => {
            tracing::error!(error = ?e, "platform state could not be read");
            e.response()
        }
    }
}

/// `POST /api/v1/integrity/verify`: the check now; 200 with the result whether the files
/// verified or not (`state` says which).
pub async fn verify(
    State(state): State<Arc<AppState>>,
    axum::Extension(p): axum::Extension<Principal>,
) -> Response {
    match run_verify(&state, &p.user).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.response(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn only_one_check_runs_at_a_time_and_the_slot_frees_on_drop() {
        let flag = Arc::new(AtomicBool::new(false));
        let first = Running::take(&flag).unwrap();
        assert!(Running::take(&flag).is_none());
        drop(first);
        assert!(Running::take(&flag).is_some());
    }
}
