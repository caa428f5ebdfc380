//! Signed updates over the API (G045 PL-2-1, PL-2-2, PL-2-3): the state (slots, trial, history)
//! for anyone who reads health, and check, apply and rollback for accounts with the
//! `updates-apply` privilege (`updater`, `admin`); apply and rollback also need a fresh
//! re-authentication (the guard checks the proof before the handler runs). The daemon
//! implements [`UpdateBackend`]; this module runs it off the async runtime, one operation at a
//! time, and shapes the answers.
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::Value;

use crate::platform::Running;
use crate::reply::json_error;
use crate::state::{AppState, Principal};

/// Why an update operation did not succeed. The text of `Refused`, `Conflict` and
/// `Unavailable` is shown to the caller, so it must never hold a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateError {
    /// The update was refused: bad signature, expired metadata, wrong hardware, rollback,
    /// archive tricks, … (the text says which; nothing was installed).
    Refused(String),
    /// The device's state does not allow it now (updates not configured, another operation
    /// running, a trial in progress, nothing to roll back to).
    Conflict(String),
    /// The repository cannot be reached.
    Unavailable(String),
    /// Anything else; logged by the backend, not shown.
    Internal(String),
}

impl UpdateError {
    /// The API's answer: 422 refused, 409 conflict, 503 unavailable, a generic 500 else.
    pub fn response(&self) -> Response {
        match self {
            UpdateError::Refused(why) => json_error(StatusCode::UNPROCESSABLE_ENTITY, why),
            UpdateError::Conflict(why) => json_error(StatusCode::CONFLICT, why),
            UpdateError::Unavailable(why) => json_error(StatusCode::SERVICE_UNAVAILABLE, why),
            UpdateError::Internal(_) => {
                json_error(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
            }
        }
    }
}

/// What the daemon provides for updates. Every call writes its own audit events (check,
/// download, verify, install, trial, commit, rollback, refusal, with the versions); `actor`
/// names who asked. The calls block (network, hashing, writing a slot): this module runs them
/// on the blocking pool.
pub trait UpdateBackend: Send + Sync {
    /// The installed version, the slots, the trial in progress and the history.
    fn status(&self) -> Result<Value, UpdateError>;
    /// Fetches and verifies the repository's metadata; says whether a newer bundle for this
    /// product and hardware is offered, without downloading it.
    fn check(&self, actor: &str) -> Result<Value, UpdateError>;
    /// Verifies, downloads and installs the newest offered bundle into the inactive slot and
    /// switches to it on trial; the daemon restarts into it once the answer is sent.
    fn apply(&self, actor: &str) -> Result<Value, UpdateError>;
    /// Goes back to the previous slot (a trial in progress, or the last committed update when
    /// its predecessor is still installed and not below the security version).
    fn rollback(&self, actor: &str) -> Result<Value, UpdateError>;
}

/// Why nothing can be done on a device without `[update]`.
pub const NOT_CONFIGURED: &str =
    "updates are not configured on this device ([update] in the configuration)";

/// Which operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// The state.
    Status,
    /// Look for an update.
    Check,
    /// Install the offered update.
    Apply,
    /// Go back to the previous slot.
    Rollback,
}

/// Runs `op` for `actor` on the blocking pool; check, apply and rollback one at a time.
pub async fn run(state: &AppState, op: Op, actor: &str) -> Result<Value, UpdateError> {
    let Some(backend) = state.updates.get().map(Arc::clone) else {
        // Not an error of the server: the device is configured without updates.
        return match op {
            Op::Status => Ok(serde_json::json!({ "configured": false, "reason": NOT_CONFIGURED })),
            _ => Err(UpdateError::Conflict(NOT_CONFIGURED.into())),
        };
    };
    let running = if op == Op::Status {
        None
    } else {
        Some(Running::take(&state.update_running).ok_or_else(|| {
            UpdateError::Conflict(
                "another update operation is running; try again when it has finished".into(),
            )
        })?)
    };
    let actor = actor.to_owned();
    let result = tokio::task::spawn_blocking(move || {
        let _running = running;
        match op {
            Op::Status => backend.status(),
            Op::Check => backend.check(&actor),
            Op::Apply => backend.apply(&actor),
            Op::Rollback => backend.rollback(&actor),
        }
    })
    .await
    .unwrap_or_else(|e| Err(UpdateError::Internal(format!("update task stopped: {e}"))));
    if let Err(UpdateError::Internal(e)) = &result {
        tracing::error!(error = %e, "update operation failed");
    }
    result
}

async fn answer(state: &AppState, op: Op, actor: &str) -> Response {
    match run(state, op, actor).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.response(),
    }
}

/// `GET /api/v1/update`.
pub async fn status(
    State(state): State<Arc<AppState>>,
    axum::Extension(p): axum::Extension<Principal>,
) -> Response {
    answer(&state, Op::Status, &p.user).await
}

/// `POST /api/v1/update/check`.
pub async fn check(
    State(state): State<Arc<AppState>>,
    axum::Extension(p): axum::Extension<Principal>,
) -> Response {
    answer(&state, Op::Check, &p.user).await
}

/// `POST /api/v1/update/apply` (re-authentication required).
pub async fn apply(
    State(state): State<Arc<AppState>>,
    axum::Extension(p): axum::Extension<Principal>,
) -> Response {
    answer(&state, Op::Apply, &p.user).await
}

/// `POST /api/v1/update/rollback` (re-authentication required).
pub async fn rollback(
    State(state): State<Arc<AppState>>,
    axum::Extension(p): axum::Extension<Principal>,
) -> Response {
    answer(&state, Op::Rollback, &p.user).await
}
