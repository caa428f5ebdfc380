//! The JSON API handlers. Each runs behind the guard of its row in the route table, so it
//! receives an authenticated, authorised [`Principal`] (public routes excepted).
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::{HeaderValue, StatusCode, header};
use kawal_audit::{Event, Outcome};
use kawal_auth::roles::{Privilege, Role};
use kawal_auth::session::Token;
use kawal_crypto::secret::SecretString;
use serde::Deserialize;
use serde_json::json;

use crate::flow::{self, ChangeRefused, LoginRefused};
use crate::guard::{COOKIE, peer};
use crate::reply::{self, LOGIN_FAILED, json_error};
use crate::state::{AppState, Principal, Via};

/// A JSON body whose rejections are plain JSON errors without parser details.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(r) => Err(json_rejection(&r)),
        }
    }
}

/// The `{name}` path parameter. A name that does not decode (bad percent-encoding, not UTF-8)
/// is a plain JSON 400, not axum's text rejection that names the parameter and the problem.
pub struct Name(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Name {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(name)) => Ok(Name(name)),
            Err(_) => Err(json_error(
                StatusCode::BAD_REQUEST,
                "bad account name in the path",
            )),
        }
    }
}

fn json_rejection(r: &JsonRejection) -> Response {
    let (status, msg) = match r {
        JsonRejection::MissingJsonContentType(_) => (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "expected Content-Type: application/json",
        ),
        JsonRejection::JsonSyntaxError(_) => (StatusCode::BAD_REQUEST, "malformed JSON body"),
        JsonRejection::JsonDataError(_) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "the JSON body does not have the expected fields",
        ),
        JsonRejection::BytesRejection(_) => (StatusCode::PAYLOAD_TOO_LARGE, "request too large"),
        _ => (StatusCode::BAD_REQUEST, "bad request body"),
    };
    json_error(status, msg)
}

/// The `Set-Cookie` value for a session token. Session cookies only (no Max-Age): the
/// server's time-outs decide.
pub(crate) fn session_cookie(token: &Token) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{COOKIE}={}; Secure; HttpOnly; SameSite=Strict; Path=/",
        token.expose()
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Clears the session cookie.
pub(crate) fn clear_cookie() -> HeaderValue {
    HeaderValue::from_static(
        "__Host-kawal-session=; Secure; HttpOnly; SameSite=Strict; Path=/; Max-Age=0",
    )
}

pub(crate) fn refused_login(r: LoginRefused) -> Response {
    match r {
        LoginRefused::Failed => json_error(StatusCode::UNAUTHORIZED, LOGIN_FAILED),
        LoginRefused::Penalised(wait) => {
            let mut res = json_error(
                StatusCode::TOO_MANY_REQUESTS,
                "too many failed attempts from this address; try again later",
            );
            if let Ok(v) = HeaderValue::from_str(&wait.to_string()) {
                res.headers_mut().insert(header::RETRY_AFTER, v);
            }
            res
        }
        LoginRefused::Busy => {
            let mut res = json_error(StatusCode::SERVICE_UNAVAILABLE, "busy; try again shortly");
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            res
        }
        LoginRefused::AdminSessionActive => json_error(
            StatusCode::FORBIDDEN,
            "this administrator account already has a session; log out there first",
        ),
    }
}

/// `POST /api/v1/login`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    username: String,
    password: String,
}

fn session_view(
    state: &AppState,
    p_user: &str,
    role: Role,
    must_change: bool,
    csrf: &str,
) -> serde_json::Value {
    json!({
        "user": p_user,
        "role": role.as_str(),
        "privileges": role.grants().iter().map(|p| p.as_str()).collect::<Vec<_>>(),
        "must_change_password": must_change,
        "csrf_token": csrf,
        "idle_timeout_s": state.settings.session.idle_timeout,
        "device_uid": state.device.uid,
    })
}

/// `POST /api/v1/login`: one answer for every failed login.
pub async fn login(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let ip = peer(&req);
    let Body(body) = match Body::<LoginBody>::from_request(req, &()).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let LoginBody { username, password } = body;
    match flow::login(&state, ip, &username, SecretString::new(password)).await {
        Ok(started) => {
            let csrf = state.csrf_for(started.token.expose());
            let a = &started.account;
            let expired = state.directory.password_expired(a, AppState::wall());
            let mut res = Json(session_view(
                &state,
                &a.username,
                a.role,
                a.must_change || expired,
                &csrf,
            ))
            .into_response();
            res.headers_mut()
                .insert(header::SET_COOKIE, session_cookie(&started.token));
            res
        }
        Err(r) => refused_login(r),
    }
}

/// `POST /api/v1/logout`.
pub async fn logout(
    State(state): State<Arc<AppState>>,
    axum::Extension(p): axum::Extension<Principal>,
) -> Response {
    if let Via::Session { token, .. } = &p.via {
        flow::logout(&state, &p.user, token).await;
    }
    let mut res = Json(json!({ "ok": true })).into_response();
    res.headers_mut().insert(header::SET_COOKIE, clear_cookie());
    res
}

/// `GET /api/v1/session`.
pub async fn whoami(
    State(state): State<Arc<AppState>>,
    axum::Extension(p): axum::Extension<Principal>,
) -> Response {
    Json(session_view(
        &state,
        &p.user,
        p.role,
        p.must_change,
        p.csrf(),
    ))
    .into_response()
}

/// `POST /api/v1/password`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordBody {
    current: String,
    new: String,
}

/// `POST /api/v1/password`: the caller's own password.
pub async fn change_password(
    State(state): State<Arc<AppState>>,
    axum::Extension(p): axum::Extension<Principal>,
    Body(body): Body<PasswordBody>,
) -> Response {
    let new = SecretString::new(body.new);
    match flow::change_password(
        &state,
        p.peer,
        &p.user,
        SecretString::new(body.current),
        &new,
    )
    .await
    {
        Ok(token) => {
            let csrf = state.csrf_for(token.expose());
            let mut res = Json(json!({ "ok": true, "csrf_token": csrf })).into_response();
            res.headers_mut()
                .insert(header::SET_COOKIE, session_cookie(&token));
            res
        }
        Err(ChangeRefused::Login(r)) => refused_login(r),
        Err(ChangeRefused::Account(e)) => reply::account_error(&e),
    }
}

/// `POST /api/v1/reauth`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReauthBody {
    password: String,
}

/// `POST /api/v1/reauth`: a single-use proof for the next sensitive action; a new session ID.
pub async fn reauth(
    State(state): State<Arc<AppState>>,
    axum::Extension(p): axum::Extension<Principal>,
    Body(body): Body<ReauthBody>,
) -> Response {
    let token = match &p.via {
        Via::Session { token, .. } => Some(token.as_str()),
        Via::ClientCert { .. } => None,
    };
    match flow::reauth(
        &state,
        p.peer,
        &p.user,
        token,
        SecretString::new(body.password),
    )
    .await
    {
        Ok((proof, fresh)) => {
            let csrf = fresh
                .as_ref()
                .map_or_else(|| p.csrf().to_owned(), |t| state.csrf_for(t.expose()));
            let mut res = Json(json!({
                "proof": proof,
                "expires_in_s": state.settings.reauth_window,
                "csrf_token": csrf,
            }))
            .into_response();
            if let Some(t) = fresh {
                res.headers_mut()
                    .insert(header::SET_COOKIE, session_cookie(&t));
            }
            res
        }
        Err(r) => refused_login(r),
    }
}

/// `GET /api/v1/roles`.
pub async fn roles() -> Response {
    let roles: Vec<_> = Role::ALL
        .iter()
        .map(|r| {
            json!({
                "role": r.as_str(),
                "description": r.describe(),
                "privileged": r.is_privileged(),
                "grants": r.grants().iter().map(|p| p.as_str()).collect::<Vec<_>>(),
            })
        })
        .collect();
    let privileges: Vec<_> = Privilege::ALL
        .iter()
        .map(|p| json!({ "privilege": p.as_str(), "description": p.describe() }))
        .collect();
    Json(json!({ "roles": roles, "privileges": privileges, "least": Role::least().as_str() }))
        .into_response()
}

/// `GET /api/v1/openapi.json`.
pub async fn openapi() -> Response {
    Json(crate::openapi::document()).into_response()
}

/// `GET /api/v1/accounts`.
pub async fn list_accounts(State(state): State<Arc<AppState>>) -> Response {
    match state.directory.list() {
        Ok(list) => Json(json!({ "accounts": list })).into_response(),
        Err(e) => reply::account_error(&e),
    }
}

/// `POST /api/v1/accounts`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddBody {
    username: String,
    #[serde(default)]
    role: Option<String>,
    password: String,
}

fn bad_role() -> Response {
    json_error(
        StatusCode::BAD_REQUEST,
        "unknown role (admin, operator, updater, auditor)",
    )
}

/// `POST /api/v1/accounts`: the least role unless one is given.
pub async fn add_account(
    State(state): State<Arc<AppState>>,
    axum::Extension(p): axum::Extension<Principal>,
    Body(body): Body<AddBody>,
) -> Response {
    let role = match body.role.as_deref().map(str::parse::<Role>).transpose() {
        Ok(r) => r,
        Err(_) => return bad_role(),
    };
    let pw = SecretString::new(body.password);
    let (name, now) = (body.username.clone(), AppState::wall());
    match state.accounts(move |d| d.add(&name, role, &pw, now)).await {
        Ok(a) => {
            state
                .record(
                    Event::new("account.created", &p.user, Outcome::Success)
                        .with("user", a.username.as_str())
                        .with("role", a.role.as_str()),
                )
                .await;
            (StatusCode::CREATED, Json(json!({ "username": a.username, "role": a.role.as_str(), "must_change_password": a.must_change }))).into_response()
        }
        Err(e) => {
            state
                .record(
                    Event::new("account.create-refused", &p.user, Outcome::Denied)
                        .with("reason", e.to_string()),
                )
                .await;
            reply::account_error(&e)
        }
    }
}

/// `DELETE /api/v1/accounts/{name}`.
pub async fn remove_account(
    State(state): State<Arc<AppState>>,
    axum::Extension(p): axum::Extension<Principal>,
    Name(name): Name,
) -> Response {
    account_change(&state, &p, &name, &Change::Remove).await
}

/// `POST /api/v1/accounts/{name}/role`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleBody {
    role: String,
}

/// `POST /api/v1/accounts/{name}/role`.
pub async fn set_role(
    State(state): State<Arc<AppState>>,
    axum::Extension(p): axum::Extension<Principal>,
    Name(name): Name,
    Body(body): Body<RoleBody>,
) -> Response {
    match body.role.parse::<Role>() {
        Ok(r) => account_change(&state, &p, &name, &Change::Role(r)).await,
        Err(_) => bad_role(),
    }
}

/// `POST /api/v1/accounts/{name}/password`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResetBody {
    password: String,
}

/// `POST /api/v1/accounts/{name}/password`: a new initial password, to be changed at login.
pub async fn reset_password(
    State(state): State<Arc<AppState>>,
    axum::Extension(p): axum::Extension<Principal>,
    Name(name): Name,
    Body(body): Body<ResetBody>,
) -> Response {
    account_change(
        &state,
        &p,
        &name,
        &Change::Reset(SecretString::new(body.password)),
    )
    .await
}

/// `POST /api/v1/accounts/{name}/disable`.
pub async fn disable(
    State(state): State<Arc<AppState>>,
    axum::Extension(p): axum::Extension<Principal>,
    Name(name): Name,
) -> Response {
    account_change(&state, &p, &name, &Change::Disable).await
}

/// `POST /api/v1/accounts/{name}/enable`.
pub async fn enable(
    State(state): State<Arc<AppState>>,
    axum::Extension(p): axum::Extension<Principal>,
    Name(name): Name,
) -> Response {
    account_change(&state, &p, &name, &Change::Enable).await
}

/// `POST /api/v1/accounts/{name}/unlock`.
pub async fn unlock(
    State(state): State<Arc<AppState>>,
    axum::Extension(p): axum::Extension<Principal>,
    Name(name): Name,
) -> Response {
    account_change(&state, &p, &name, &Change::Unlock).await
}

/// A change to an account by an administrator.
#[derive(Clone)]
pub(crate) enum Change {
    Role(Role),
    Disable,
    Enable,
    Unlock,
    Remove,
    Reset(SecretString),
}

impl Change {
    pub(crate) fn event(&self) -> &'static str {
        match self {
            Change::Role(_) => "account.role-changed",
            Change::Disable => "account.disabled",
            Change::Enable => "account.enabled",
            Change::Unlock => "account.unlocked",
            Change::Remove => "account.removed",
            Change::Reset(_) => "password.reset",
        }
    }
}

/// Applies `change` to `name`, ends the account's sessions where its rights changed, and
/// records the outcome either way.
pub(crate) async fn apply_change(
    state: &AppState,
    by: &Principal,
    name: &str,
    change: &Change,
) -> Result<Option<String>, kawal_auth::accounts::AccountError> {
    let now = AppState::wall();
    let (n, c) = (name.to_owned(), change.clone());
    let result = state
        .accounts(move |d| match c {
            Change::Role(r) => d
                .set_role(&n, r)
                .map(|old| Some(format!("{} -> {}", old.as_str(), r.as_str()))),
            Change::Disable => d.set_disabled(&n, true).map(|()| None),
            Change::Enable => d.set_disabled(&n, false).map(|()| None),
            Change::Unlock => d
                .unlock(&n)
                .map(|was| Some(if was { "was locked" } else { "was not locked" }.to_owned())),
            Change::Remove => d.remove(&n).map(|()| None),
            Change::Reset(pw) => d.reset_password(&n, &pw, now).map(|()| None),
        })
        .await;
    let mut e = Event::new(
        change.event(),
        &by.user,
        if result.is_ok() {
            Outcome::Success
        } else {
            Outcome::Denied
        },
    )
    .with("user", name);
    match &result {
        Ok(Some(detail)) => e = e.with("change", detail.as_str()),
        Ok(None) => {}
        Err(err) => e = e.with("reason", err.to_string()),
    }
    state.record(e).await;
    if result.is_ok() && !matches!(change, Change::Enable | Change::Unlock) {
        state.end_sessions(name, change.event(), &by.user).await;
    }
    result
}

async fn account_change(state: &AppState, by: &Principal, name: &str, change: &Change) -> Response {
    match apply_change(state, by, name, change).await {
        Ok(detail) => Json(json!({ "ok": true, "user": name, "change": detail })).into_response(),
        Err(e) => reply::account_error(&e),
    }
}

/// `GET /api/v1/health`.
pub async fn health(State(state): State<Arc<AppState>>) -> Response {
    let mut h = state.backend.health();
    if let Some(obj) = h.as_object_mut() {
        obj.insert("live_sessions".into(), json!(state.live_sessions()));
        obj.insert("login_pool_refused".into(), json!(state.pool.refused()));
        obj.insert(
            "api_events_suppressed".into(),
            json!(state.flood.suppressed()),
        );
    }
    Json(h).into_response()
}

/// Filters for `GET /api/v1/audit/entries`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    /// Event name or prefix (`login` matches `login.failed`).
    pub event: Option<String>,
    /// First seq.
    pub since: Option<u64>,
    /// success, failure, denied or info.
    pub outcome: Option<String>,
    /// At most this many (newest last; default 200, max 1000).
    pub limit: Option<usize>,
}

/// Reads entries matching `q` (the newest `limit`).
pub(crate) fn read_log(
    state: &AppState,
    q: &LogQuery,
) -> Result<Vec<kawal_audit::Entry>, (StatusCode, &'static str)> {
    let outcome = match q.outcome.as_deref() {
        None | Some("") => None,
        Some("success") => Some(Outcome::Success),
        Some("failure") => Some(Outcome::Failure),
        Some("denied") => Some(Outcome::Denied),
        Some("info") => Some(Outcome::Info),
        Some(_) => {
            return Err((
                StatusCode::BAD_REQUEST,
                "outcome: success, failure, denied or info",
            ));
        }
    };
    if q.event.as_deref().is_some_and(|e| {
        e.len() > 64
            || !e
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    }) {
        return Err((
            StatusCode::BAD_REQUEST,
            "event: up to 64 characters of [A-Za-z0-9._-]",
        ));
    }
    let limit = q.limit.unwrap_or(200).clamp(1, 1000);
    let filter = kawal_audit::Filter {
        event_prefix: q.event.clone().filter(|e| !e.is_empty()),
        since_seq: q.since,
        outcome,
        include_checkpoints: false,
    };
    let entries = kawal_audit::read_entries(&state.device.data_dir, filter).map_err(|_| {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "the audit log could not be read",
        )
    })?;
    let mut out = std::collections::VecDeque::with_capacity(limit);
    for e in entries {
        let e = e.map_err(|_| {
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the audit log could not be read",
            )
        })?;
        if out.len() == limit {
            out.pop_front();
        }
        out.push_back(e);
    }
    Ok(out.into())
}

/// `GET /api/v1/audit/entries`.
pub async fn audit_entries(
    State(state): State<Arc<AppState>>,
    q: Result<Query<LogQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = q else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "bad query: event, since, outcome, limit",
        );
    };
    match read_log(&state, &q) {
        Ok(entries) => {
            let lines: Vec<serde_json::Value> = entries
                .iter()
                .filter_map(|e| serde_json::from_slice(&e.canonical_bytes()).ok())
                .collect();
            Json(json!({ "entries": lines })).into_response()
        }
        Err((s, m)) => json_error(s, m),
    }
}

/// `GET /api/v1/audit/verify`.
pub async fn audit_verify(State(state): State<Arc<AppState>>) -> Response {
    match state.backend.verify_log() {
        Ok(Ok(summary)) => Json(json!({ "intact": true, "summary": summary })).into_response(),
        Ok(Err(finding)) => Json(json!({ "intact": false, "finding": finding })).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "audit log verification could not run");
            json_error(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        }
    }
}

/// `format` of `GET /api/v1/report`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportQuery {
    format: Option<String>,
}

/// `GET /api/v1/report`.
pub async fn report(
    State(state): State<Arc<AppState>>,
    q: Result<Query<ReportQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = q else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "bad query: format=json|html|markdown",
        );
    };
    let report = match state.backend.report() {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "report failed");
            return json_error(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
        }
    };
    match q.format.as_deref().unwrap_or("json") {
        "json" => match kawal_compliance::render::json::to_json(&report) {
            Ok(s) => ([(header::CONTENT_TYPE, "application/json")], s).into_response(),
            Err(_) => json_error(StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
        },
        "html" => (
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            kawal_compliance::render::html::to_html(&report),
        )
            .into_response(),
        "markdown" => (
            [(header::CONTENT_TYPE, "text/markdown; charset=utf-8")],
            kawal_compliance::render::markdown::to_markdown(&report),
        )
            .into_response(),
        _ => json_error(StatusCode::BAD_REQUEST, "format: json, html or markdown"),
    }
}

/// The request parsers the API and the console run on what a client sends, exposed so a fuzzer
/// (`fuzz/`) and the tests can feed them arbitrary bytes. Each runs the same extractor the
/// handlers use (the API's [`Body`], axum's `Form`, the guard's CSRF field and cookie readers)
/// and reports only whether the input was accepted: none of them may panic.
pub mod parse {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};

    use axum::extract::{Form, FromRequest, Request};
    use http::{HeaderMap, HeaderValue, header};
    use serde::de::DeserializeOwned;

    use crate::console::{AddForm, AuditForm, ChangeForm, LoginForm, PasswordForm};

    /// Polls a future that needs no I/O (the body is already in memory) to completion.
    fn ready<F: Future>(f: F) -> Option<F::Output> {
        let mut f = std::pin::pin!(f);
        let mut cx = Context::from_waker(Waker::noop());
        match f.as_mut().poll(&mut cx) {
            Poll::Ready(v) => Some(v),
            Poll::Pending => None,
        }
    }

    fn request(bytes: &[u8], content_type: &'static str) -> Request {
        let mut req = Request::new(axum::body::Body::from(bytes.to_vec()));
        req.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        req
    }

    /// One JSON body as the API reads it; `Ok(())` if it parsed, else the status it answers.
    pub fn json_as<T: DeserializeOwned>(bytes: &[u8]) -> Result<(), u16> {
        match ready(super::Body::<T>::from_request(
            request(bytes, "application/json"),
            &(),
        )) {
            Some(Ok(_)) => Ok(()),
            Some(Err(r)) => Err(r.status().as_u16()),
            None => Err(0),
        }
    }

    /// One form body as the console reads it; `true` if it parsed.
    pub fn form_as<T: DeserializeOwned>(bytes: &[u8]) -> bool {
        matches!(
            ready(Form::<T>::from_request(
                request(bytes, "application/x-www-form-urlencoded"),
                &(),
            )),
            Some(Ok(_))
        )
    }

    /// Every JSON body type of the API; how many of them accepted `bytes`.
    pub fn api_bodies(bytes: &[u8]) -> usize {
        [
            json_as::<super::LoginBody>(bytes),
            json_as::<super::PasswordBody>(bytes),
            json_as::<super::ReauthBody>(bytes),
            json_as::<super::AddBody>(bytes),
            json_as::<super::RoleBody>(bytes),
            json_as::<super::ResetBody>(bytes),
        ]
        .iter()
        .filter(|r| r.is_ok())
        .count()
    }

    /// Every form type of the console, plus the guard's CSRF field reader; how many accepted.
    pub fn console_forms(bytes: &[u8]) -> usize {
        let _csrf = form_urlencoded::parse(bytes).find(|(k, _)| k == "csrf");
        [
            form_as::<LoginForm>(bytes),
            form_as::<PasswordForm>(bytes),
            form_as::<AddForm>(bytes),
            form_as::<ChangeForm>(bytes),
            form_as::<AuditForm>(bytes),
        ]
        .iter()
        .filter(|ok| **ok)
        .count()
    }

    /// The session cookie as the guard reads it from a `Cookie` header.
    pub fn cookie(bytes: &[u8]) -> Option<String> {
        let mut headers = HeaderMap::new();
        let value = HeaderValue::from_bytes(bytes).ok()?;
        headers.insert(header::COOKIE, value);
        crate::guard::session_cookie(&headers)
    }

    /// Everything above over the same bytes (the fuzz target's body).
    pub fn all(bytes: &[u8]) {
        let _ = api_bodies(bytes);
        let _ = console_forms(bytes);
        let _ = cookie(bytes);
    }
}
