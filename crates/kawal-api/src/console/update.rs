//! The console's Updates page (G045 PL-2-1, PL-2-2): the installed version and slot, a trial in
//! progress, the history of every update step, and — for `updater` and `admin` — "Check for
//! updates", "Apply" and "Roll back". Apply and roll back ask for the password in the same form
//! (re-authentication right before the action, no script). Everything comes from
//! [`crate::update::UpdateBackend`], which writes the audit events.
use std::sync::Arc;

use askama::Template;
use axum::extract::{Form, Request, State};
use axum::response::Response;
use axum::{Extension, RequestExt};
use http::StatusCode;
use kawal_auth::roles::Privilege;
use kawal_crypto::secret::SecretString;
use serde::Deserialize;
use serde_json::Value;

use super::{Chrome, render};
use crate::flow;
use crate::state::{AppState, Principal};
use crate::update::{Op, UpdateError, run};

/// Rows of history shown (newest first).
const HISTORY_MAX: usize = 64;
/// Longest text shown for one value.
const TEXT_MAX: usize = 300;

fn text(v: Option<&Value>) -> String {
    let s = match v {
        None | Some(Value::Null) => "-".to_owned(),
        Some(Value::String(s)) if s.is_empty() => "-".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_owned))
            .collect::<Vec<_>>()
            .join(", "),
        Some(other) => other.to_string(),
    };
    s.chars().take(TEXT_MAX).collect()
}

/// A key and its value.
struct Row {
    key: &'static str,
    value: String,
}

/// One recorded step.
struct Step {
    at: String,
    kind: String,
    version: String,
    reason: String,
}

#[derive(Template)]
#[template(path = "update.html")]
struct UpdatePage {
    chrome: Chrome,
    can_apply: bool,
    configured: bool,
    notice: Option<String>,
    error: Option<String>,
    rows: Vec<Row>,
    trial: Vec<Row>,
    offer: Option<String>,
    history: Vec<Step>,
}

async fn page(
    state: &Arc<AppState>,
    p: &Principal,
    status: StatusCode,
    notice: Option<String>,
    error: Option<String>,
    offer: Option<String>,
) -> Response {
    let chrome = Chrome::new(state, Some(p), "update");
    let can_apply = !p.must_change && p.role.allows(Privilege::UpdatesApply);
    let (configured, v, error) = match run(state, Op::Status, &p.user).await {
        Ok(v) if v["configured"] == false => (
            false,
            v,
            error.or(Some(crate::update::NOT_CONFIGURED.into())),
        ),
        Ok(v) => (true, v, error),
        Err(UpdateError::Unavailable(why)) => (false, Value::Null, error.or(Some(why))),
        Err(e) => (true, Value::Null, error.or(Some(message(&e)))),
    };
    let rows = vec![
        Row {
            key: "Installed version",
            value: text(v.get("version")),
        },
        Row {
            key: "Active slot",
            value: text(v.get("slot")),
        },
        Row {
            key: "Security version",
            value: text(v.get("security_version")),
        },
        Row {
            key: "Product",
            value: text(v.get("product")),
        },
        Row {
            key: "Hardware",
            value: text(v.get("hardware")),
        },
        Row {
            key: "Repository",
            value: text(v.get("source")),
        },
        Row {
            key: "Previous version (the other slot)",
            value: v.get("previous").filter(|p| !p.is_null()).map_or_else(
                || "-".to_owned(),
                |p| {
                    format!(
                        "{} in slot {} (security version {})",
                        text(p.get("version")),
                        text(p.get("slot")),
                        text(p.get("security_version"))
                    )
                },
            ),
        },
        Row {
            key: "Versions that failed trial",
            value: text(v.get("failed_versions")),
        },
    ];
    let trial = v
        .get("trial")
        .filter(|t| !t.is_null())
        .map(|t| {
            vec![
                Row {
                    key: "Version",
                    value: text(t.get("version")),
                },
                Row {
                    key: "Slot",
                    value: text(t.get("slot")),
                },
                Row {
                    key: "Boots used",
                    value: format!(
                        "{} of {}",
                        text(t.get("boots_used")),
                        text(t.get("max_boots"))
                    ),
                },
                Row {
                    key: "Deadline (s)",
                    value: text(t.get("deadline_s")),
                },
            ]
        })
        .unwrap_or_default();
    let history = v
        .get("history")
        .and_then(Value::as_array)
        .map(|h| {
            h.iter()
                .rev()
                .take(HISTORY_MAX)
                .map(|e| Step {
                    at: text(e.get("at")),
                    kind: text(e.get("kind")),
                    version: text(e.get("version")),
                    reason: text(e.get("reason")),
                })
                .collect()
        })
        .unwrap_or_default();
    render(
        status,
        &UpdatePage {
            chrome,
            can_apply,
            configured,
            notice,
            error,
            rows,
            trial,
            offer,
            history,
        },
    )
}

/// The caller's words for an error (never a secret: the backend's texts are for callers).
fn message(e: &UpdateError) -> String {
    match e {
        UpdateError::Refused(why) => format!("Update refused: {why}"),
        UpdateError::Conflict(why) | UpdateError::Unavailable(why) => why.clone(),
        UpdateError::Internal(_) => {
            "The update operation failed (internal error; see the service log).".into()
        }
    }
}

fn status_of(e: &UpdateError) -> StatusCode {
    match e {
        UpdateError::Refused(_) => StatusCode::UNPROCESSABLE_ENTITY,
        UpdateError::Conflict(_) => StatusCode::CONFLICT,
        UpdateError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        UpdateError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// `GET /update`.
pub async fn update_page(
    State(state): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
) -> Response {
    page(&state, &p, StatusCode::OK, None, None, None).await
}

/// `POST /update/check`: looks for a newer signed bundle; nothing is downloaded.
pub async fn check(
    State(state): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
) -> Response {
    match run(&state, Op::Check, &p.user).await {
        Ok(v) => {
            let offer = v.get("offer").filter(|o| !o.is_null()).map(|o| {
                format!(
                    "{} (security version {})",
                    text(o.get("version")),
                    text(o.get("security_version"))
                )
            });
            let notice = match &offer {
                Some(o) => format!("Update offered: {o}. Enter your password and apply it."),
                None => format!(
                    "Up to date: {} is the newest signed version.",
                    text(v.get("installed"))
                ),
            };
            page(&state, &p, StatusCode::OK, Some(notice), None, offer).await
        }
        Err(e) => page(&state, &p, status_of(&e), None, Some(message(&e)), None).await,
    }
}

/// The password of the re-authentication form.
#[derive(Deserialize)]
pub struct ConfirmForm {
    your_password: String,
}

async fn sensitive(state: Arc<AppState>, p: Principal, req: Request, op: Op) -> Response {
    let Ok(Form(f)) = req.extract::<Form<ConfirmForm>, _>().await else {
        return page(
            &state,
            &p,
            StatusCode::BAD_REQUEST,
            None,
            Some("Enter your password to confirm.".into()),
            None,
        )
        .await;
    };
    if flow::confirm(&state, p.peer, &p.user, SecretString::new(f.your_password))
        .await
        .is_err()
    {
        return page(
            &state,
            &p,
            StatusCode::FORBIDDEN,
            None,
            Some("Re-authentication failed: your password was not accepted.".into()),
            None,
        )
        .await;
    }
    match run(&state, op, &p.user).await {
        Ok(v) => {
            let notice = match op {
                Op::Apply => format!(
                    "Installed {} into slot {} on trial. The device restarts into it and keeps it only once the health checks pass.",
                    text(v.get("version")),
                    text(v.get("slot"))
                ),
                _ => format!(
                    "Rolled back to {} (slot {}). The device restarts into it.",
                    text(v.get("version")),
                    text(v.get("slot"))
                ),
            };
            page(&state, &p, StatusCode::OK, Some(notice), None, None).await
        }
        Err(e) => page(&state, &p, status_of(&e), None, Some(message(&e)), None).await,
    }
}

/// `POST /update/apply` (password in the form).
pub async fn apply(
    State(state): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    req: Request,
) -> Response {
    sensitive(state, p, req, Op::Apply).await
}

/// `POST /update/rollback` (password in the form).
pub async fn rollback(
    State(state): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    req: Request,
) -> Response {
    sensitive(state, p, req, Op::Rollback).await
}
