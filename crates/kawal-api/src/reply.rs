//! Answers that are the same for everyone: generic refusals (no detail an attacker could use,
//! G045 AU-2-3), JSON errors, and the 404/405 fallbacks. Details go to the audit log instead.
use axum::Json;
use axum::response::{IntoResponse, Redirect, Response};
use http::StatusCode;
use kawal_auth::accounts::AccountError;
use kawal_auth::session::Ended;
use serde_json::json;

use crate::routes::Kind;

/// Why the guard or a handler refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not logged in; with the reason a presented session ended, if it did.
    Unauthenticated(Option<&'static str>),
    /// Logged in but not allowed (privilege, CSRF, cross-site).
    Forbidden,
    /// The pre-installed or reset password must be changed first.
    MustChangePassword,
    /// A sensitive action without a fresh re-authentication.
    ReauthRequired,
    /// A body larger than allowed.
    TooLarge,
}

/// The text for why a session ended.
pub fn ended_reason(e: Ended) -> &'static str {
    match e {
        Ended::Idle => "idle",
        Ended::Lifetime => "lifetime",
        Ended::Superseded => "superseded",
        Ended::Revoked => "revoked",
        Ended::AdminSessionActive => "admin-session-active",
    }
}

/// A JSON error with a fixed message.
pub fn json_error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// The answer to a refusal, for an API route or a console page.
pub fn refusal(kind: Kind, r: Refusal) -> Response {
    match (kind, r) {
        (Kind::Api, Refusal::Unauthenticated(None)) => {
            json_error(StatusCode::UNAUTHORIZED, "authentication required")
        }
        (Kind::Api, Refusal::Unauthenticated(Some(why))) => (
            StatusCode::UNAUTHORIZED,
            Json(json!({ "error": "authentication required", "session_ended": why })),
        )
            .into_response(),
        (Kind::Api, Refusal::Forbidden) => json_error(StatusCode::FORBIDDEN, "not permitted"),
        (Kind::Api, Refusal::MustChangePassword) => {
            json_error(StatusCode::FORBIDDEN, "password change required")
        }
        (Kind::Api, Refusal::ReauthRequired) => {
            json_error(StatusCode::FORBIDDEN, "re-authentication required")
        }
        (_, Refusal::TooLarge) => json_error(StatusCode::PAYLOAD_TOO_LARGE, "request too large"),
        (Kind::Page, Refusal::Unauthenticated(None)) => Redirect::to("/login").into_response(),
        (Kind::Page, Refusal::Unauthenticated(Some(why))) => {
            Redirect::to(&format!("/login?ended={why}")).into_response()
        }
        (Kind::Page, Refusal::MustChangePassword) => Redirect::to("/password").into_response(),
        (Kind::Page, Refusal::Forbidden | Refusal::ReauthRequired) => {
            crate::console::forbidden_page()
        }
    }
}

/// Unknown routes.
pub async fn not_found() -> Response {
    json_error(StatusCode::NOT_FOUND, "not found")
}

/// Known route, wrong method.
pub async fn method_not_allowed() -> Response {
    json_error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
}

/// The answer to an account operation that failed. Store and crypto failures are logged and
/// answered as a plain internal error.
pub fn account_error(e: &AccountError) -> Response {
    match e {
        AccountError::NotFound => json_error(StatusCode::NOT_FOUND, "no such account"),
        AccountError::Exists => {
            json_error(StatusCode::CONFLICT, "an account with that name exists")
        }
        AccountError::BadName(why) => json_error(StatusCode::BAD_REQUEST, why),
        AccountError::Weak(rules) => (
            StatusCode::BAD_REQUEST,
            Json(json!({
                "error": "password rejected",
                "rules": rules.iter().map(ToString::to_string).collect::<Vec<_>>(),
            })),
        )
            .into_response(),
        AccountError::Reused => json_error(
            StatusCode::BAD_REQUEST,
            "password rejected: it equals the initial password or one used recently",
        ),
        AccountError::LastAdmin => json_error(
            StatusCode::CONFLICT,
            "the last enabled administrator cannot be removed, demoted or disabled",
        ),
        other => {
            tracing::error!(error = %other, "account operation failed");
            json_error(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        }
    }
}

/// The one answer for every failed login (unknown user, wrong password, locked, disabled).
pub const LOGIN_FAILED: &str = "login failed: check the user name and password, or try again later";
