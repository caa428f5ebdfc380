//! The web console: server-rendered pages (askama), usable without JavaScript, no external
//! resources. Every page sits behind the guard of its row in the route table.
use std::sync::Arc;

use askama::Template;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Form, Query, Request, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::{Extension, RequestExt};
use http::{StatusCode, header};
use kawal_auth::roles::{Privilege, Role};
use kawal_crypto::secret::SecretString;
use serde::Deserialize;

use crate::api::{Change, LogQuery, apply_change, clear_cookie, read_log, session_cookie};
use crate::flow::{self, ChangeRefused, LoginRefused};
use crate::guard::peer;
use crate::reply::LOGIN_FAILED;
use crate::state::{AppState, Principal, Via};

pub mod platform;
pub mod sensors;
pub mod update;

/// What the layout shows around every page.
pub struct Chrome {
    uid: String,
    product: String,
    dev: bool,
    signed_in: bool,
    user: String,
    role: String,
    csrf: String,
    page: &'static str,
    can_health: bool,
    can_accounts: bool,
    can_devices: bool,
    can_log: bool,
    can_report: bool,
    can_platform: bool,
    can_update: bool,
}

impl Chrome {
    fn new(state: &AppState, p: Option<&Principal>, page: &'static str) -> Self {
        let allows = |pr: Privilege| p.is_some_and(|p| !p.must_change && p.role.allows(pr));
        Self {
            uid: state.device.uid.clone(),
            product: state.device.product.clone(),
            dev: state.device.dev,
            signed_in: p.is_some(),
            user: p.map(|p| p.user.clone()).unwrap_or_default(),
            role: p.map(|p| p.role.as_str().to_owned()).unwrap_or_default(),
            csrf: p.map(|p| p.csrf().to_owned()).unwrap_or_default(),
            page,
            can_health: allows(Privilege::HealthRead),
            can_accounts: allows(Privilege::AccountsRead),
            can_devices: allows(Privilege::DevicesRead),
            can_log: allows(Privilege::LogRead),
            can_report: allows(Privilege::ReportRead),
            can_platform: allows(Privilege::ReportRead),
            can_update: allows(Privilege::HealthRead),
        }
    }
}

fn render(status: StatusCode, t: &impl Template) -> Response {
    match t.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "template failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage {
    chrome: Chrome,
    heading: &'static str,
    text: &'static str,
}

/// The page for a refused privilege or a missing re-authentication.
pub fn forbidden_page() -> Response {
    // No state here: the layout shows no user (the refusal says nothing about the account).
    let page = MessagePage {
        chrome: Chrome {
            uid: String::new(),
            product: String::new(),
            dev: false,
            signed_in: false,
            user: String::new(),
            role: String::new(),
            csrf: String::new(),
            page: "",
            can_health: false,
            can_accounts: false,
            can_devices: false,
            can_log: false,
            can_report: false,
            can_platform: false,
            can_update: false,
        },
        heading: "Not permitted",
        text: "Your role does not allow this page or action. Ask an administrator if you need it.",
    };
    render(StatusCode::FORBIDDEN, &page)
}

/// `GET /`.
pub async fn home(p: Option<Extension<Principal>>) -> Response {
    match p {
        Some(Extension(p)) if p.must_change => Redirect::to("/password").into_response(),
        Some(Extension(p)) => Redirect::to(landing(p.role)).into_response(),
        None => Redirect::to("/login").into_response(),
    }
}

/// The first page a role can see.
fn landing(role: Role) -> &'static str {
    if role.allows(Privilege::HealthRead) {
        "/dashboard"
    } else {
        "/password"
    }
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    chrome: Chrome,
    notice: Option<&'static str>,
    error: Option<&'static str>,
}

/// `?ended=` on the login page.
#[derive(Deserialize)]
pub struct LoginQuery {
    ended: Option<String>,
}

fn ended_notice(why: &str) -> Option<&'static str> {
    Some(match why {
        "idle" => "Your session ended after a period without activity. Please log in again.",
        "lifetime" => "Your session reached its maximum length. Please log in again.",
        "superseded" => {
            "Your session ended because this administrator account logged in elsewhere."
        }
        "revoked" => "Your session was ended (logout, password, role or account change).",
        _ => return None,
    })
}

/// `GET /login`.
pub async fn login_page(
    State(state): State<Arc<AppState>>,
    q: Result<Query<LoginQuery>, QueryRejection>,
) -> Response {
    let notice = q
        .ok()
        .and_then(|Query(q)| q.ended)
        .and_then(|e| ended_notice(&e));
    render(
        StatusCode::OK,
        &LoginPage {
            chrome: Chrome::new(&state, None, "login"),
            notice,
            error: None,
        },
    )
}

/// The login form.
#[derive(Deserialize)]
pub struct LoginForm {
    username: String,
    password: String,
}

fn login_error(state: &AppState, status: StatusCode, msg: &'static str) -> Response {
    render(
        status,
        &LoginPage {
            chrome: Chrome::new(state, None, "login"),
            notice: None,
            error: Some(msg),
        },
    )
}

/// `POST /login`: one page for every failed login.
pub async fn login(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let ip = peer(&req);
    let Ok(Form(f)) = req.extract::<Form<LoginForm>, _>().await else {
        return login_error(
            &state,
            StatusCode::BAD_REQUEST,
            "Enter a user name and a password.",
        );
    };
    match flow::login(&state, ip, &f.username, SecretString::new(f.password)).await {
        Ok(started) => {
            let to = if started.account.must_change
                || state
                    .directory
                    .password_expired(&started.account, AppState::wall())
            {
                "/password"
            } else {
                landing(started.account.role)
            };
            let mut res = Redirect::to(to).into_response();
            res.headers_mut()
                .insert(header::SET_COOKIE, session_cookie(&started.token));
            res
        }
        Err(LoginRefused::Failed) => login_error(&state, StatusCode::UNAUTHORIZED, LOGIN_FAILED),
        Err(LoginRefused::Penalised(_)) => login_error(
            &state,
            StatusCode::TOO_MANY_REQUESTS,
            "Too many failed attempts from this address. Try again later.",
        ),
        Err(LoginRefused::Busy) => login_error(
            &state,
            StatusCode::SERVICE_UNAVAILABLE,
            "The device is busy. Try again in a moment.",
        ),
        Err(LoginRefused::AdminSessionActive) => login_error(
            &state,
            StatusCode::FORBIDDEN,
            "This administrator account already has a session. Log out there first.",
        ),
    }
}

/// `POST /logout`.
pub async fn logout(
    State(state): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
) -> Response {
    if let Via::Session { token, .. } = &p.via {
        flow::logout(&state, &p.user, token).await;
    }
    let mut res = Redirect::to("/login").into_response();
    res.headers_mut().insert(header::SET_COOKIE, clear_cookie());
    res
}

#[derive(Template)]
#[template(path = "password.html")]
struct PasswordPage {
    chrome: Chrome,
    must_change: bool,
    errors: Vec<String>,
    rules: Vec<String>,
}

fn password_page_with(
    state: &AppState,
    p: &Principal,
    status: StatusCode,
    errors: Vec<String>,
) -> Response {
    let policy = state.directory.policy();
    let rules = vec![
        format!(
            "{} to {} characters; spaces and any language allowed",
            policy.min_length, policy.max_length
        ),
        "no character repeated three or more times in a row".to_owned(),
        "no runs such as abcd, 4321 or qwer".to_owned(),
        "not your user name or the device UID".to_owned(),
        "not on the list of commonly used passwords, and not easy to guess".to_owned(),
        "not the initial password and not one of your recent ones".to_owned(),
    ];
    render(
        status,
        &PasswordPage {
            chrome: Chrome::new(state, Some(p), "password"),
            must_change: p.must_change,
            errors,
            rules,
        },
    )
}

/// `GET /password`.
pub async fn password_page(
    State(state): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
) -> Response {
    password_page_with(&state, &p, StatusCode::OK, Vec::new())
}

/// The change-password form.
#[derive(Deserialize)]
pub struct PasswordForm {
    current: String,
    new: String,
    confirm: String,
}

/// `POST /password`.
pub async fn change_password(
    State(state): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    req: Request,
) -> Response {
    let Ok(Form(f)) = req.extract::<Form<PasswordForm>, _>().await else {
        return password_page_with(
            &state,
            &p,
            StatusCode::BAD_REQUEST,
            vec!["Fill in all three fields.".into()],
        );
    };
    let new = SecretString::new(f.new);
    let confirm = SecretString::new(f.confirm);
    if !kawal_crypto::ct_eq(new.expose().as_bytes(), confirm.expose().as_bytes()) {
        return password_page_with(
            &state,
            &p,
            StatusCode::BAD_REQUEST,
            vec!["The two new passwords differ.".into()],
        );
    }
    match flow::change_password(&state, p.peer, &p.user, SecretString::new(f.current), &new).await {
        Ok(token) => {
            let role = p.role;
            let mut res = Redirect::to(landing(role)).into_response();
            res.headers_mut()
                .insert(header::SET_COOKIE, session_cookie(&token));
            res
        }
        Err(ChangeRefused::Login(LoginRefused::Failed)) => password_page_with(
            &state,
            &p,
            StatusCode::BAD_REQUEST,
            vec!["The current password is not right.".into()],
        ),
        Err(ChangeRefused::Login(_)) => password_page_with(
            &state,
            &p,
            StatusCode::TOO_MANY_REQUESTS,
            vec!["Too many attempts or the device is busy. Try again later.".into()],
        ),
        Err(ChangeRefused::Account(kawal_auth::accounts::AccountError::Weak(rules))) => {
            password_page_with(
                &state,
                &p,
                StatusCode::BAD_REQUEST,
                rules.iter().map(|r| format!("It {r}.")).collect(),
            )
        }
        Err(ChangeRefused::Account(kawal_auth::accounts::AccountError::Reused)) => {
            password_page_with(
                &state,
                &p,
                StatusCode::BAD_REQUEST,
                vec!["It equals the initial password or one you used recently.".into()],
            )
        }
        Err(ChangeRefused::Account(_)) => password_page_with(
            &state,
            &p,
            StatusCode::INTERNAL_SERVER_ERROR,
            vec!["The password could not be changed (internal error).".into()],
        ),
    }
}

/// A dashboard card.
struct Card {
    title: &'static str,
    value: String,
    detail: String,
    state: &'static str,
}

#[derive(Template)]
#[template(path = "dashboard.html")]
struct DashboardPage {
    chrome: Chrome,
    cards: Vec<Card>,
    /// Integrity, exposure, log forwarding and tamper in one line, and its styling.
    platform: (String, &'static str),
}

/// `GET /dashboard`.
pub async fn dashboard(
    State(state): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
) -> Response {
    let h = state.backend.health();
    let s = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "unknown".into(),
        other => other.to_string(),
    };
    let mut cards = Vec::new();
    let passed = h
        .pointer("/selftest/passed")
        .and_then(serde_json::Value::as_bool);
    cards.push(Card {
        title: "Power-up self-test",
        value: match passed {
            Some(true) => "passed".into(),
            Some(false) => "FAILED".into(),
            None => "not run".into(),
        },
        detail: h.pointer("/selftest/at").map(s).unwrap_or_default(),
        state: if passed == Some(true) { "ok" } else { "bad" },
    });
    let synced = h
        .pointer("/clock/synchronised")
        .and_then(serde_json::Value::as_bool);
    cards.push(Card {
        title: "Clock",
        value: if synced == Some(true) {
            "synchronised".into()
        } else {
            "not synchronised".into()
        },
        detail: h.pointer("/clock/detail").map(s).unwrap_or_default(),
        state: if synced == Some(true) { "ok" } else { "warn" },
    });
    // The gateway's own certificate (G045 AU-1-10): its end and how close it is.
    if let Some(cert) = h.get("device_certificate") {
        let expiry = cert.get("state").and_then(serde_json::Value::as_str);
        cards.push(Card {
            title: "Device certificate",
            value: match expiry {
                Some("ok") => "valid".into(),
                Some("warn-30d") => "expires within 30 days".into(),
                Some("warn-7d") => "expires within 7 days".into(),
                Some("expired") => "EXPIRED".into(),
                _ => "unknown".into(),
            },
            detail: format!(
                "until {} ({} days left), serial {}; {}",
                cert.get("not_after").map(s).unwrap_or_default(),
                cert.get("days_left").map(s).unwrap_or_default(),
                cert.get("serial").map(s).unwrap_or_default(),
                renewal_text(cert.get("renewal"))
            ),
            state: match expiry {
                Some("ok") if !renewal_failing(cert) => "ok",
                Some("ok" | "warn-30d" | "warn-7d") => "warn",
                _ => "bad",
            },
        });
    }
    let (intact, verify) = match state.backend.verify_log() {
        Ok(Ok(summary)) => (true, summary),
        Ok(Err(finding)) => (false, finding),
        Err(e) => (false, e),
    };
    cards.push(Card {
        title: "Audit log",
        value: if intact {
            "intact".into()
        } else {
            "TAMPERED".into()
        },
        detail: verify,
        state: if intact { "ok" } else { "bad" },
    });
    match state.backend.report() {
        Ok(r) => cards.push(Card {
            title: "G045 controls",
            value: format!("{} of {} met", r.summary.met, r.summary.total),
            detail: format!(
                "{} not met, {} manual, {} not applicable",
                r.summary.not_met, r.summary.manual, r.summary.not_applicable
            ),
            state: if r.summary.not_met == 0 { "ok" } else { "warn" },
        }),
        Err(e) => cards.push(Card {
            title: "G045 controls",
            value: "unavailable".into(),
            detail: e,
            state: "bad",
        }),
    }
    cards.push(Card {
        title: "Sessions",
        value: state.live_sessions().to_string(),
        detail: format!(
            "idle time-out {} min, lifetime {} h",
            state.settings.session.idle_timeout / 60,
            state.settings.session.absolute_lifetime / 3600
        ),
        state: "ok",
    });
    if let Some(store) = h.get("store") {
        cards.push(Card {
            title: "Encrypted store",
            value: "open".into(),
            detail: s(store),
            state: "ok",
        });
    }
    render(
        StatusCode::OK,
        &DashboardPage {
            chrome: Chrome::new(&state, Some(&p), "dashboard"),
            cards,
            platform: platform::summary(&h),
        },
    )
}

struct AccountRow {
    username: String,
    role: String,
    state: String,
    changed: String,
}

struct RoleRow {
    name: &'static str,
    describe: &'static str,
    grants: String,
    least: bool,
}

#[derive(Template)]
#[template(path = "accounts.html")]
struct AccountsPage {
    chrome: Chrome,
    accounts: Vec<AccountRow>,
    roles: Vec<RoleRow>,
    can_manage: bool,
    done: Option<&'static str>,
    errors: Vec<String>,
}

/// `?done=` after a change.
#[derive(Deserialize)]
pub struct DoneQuery {
    done: Option<String>,
}

fn done_text(d: &str) -> Option<&'static str> {
    Some(match d {
        "created" => "Account added. The user must change the initial password at first login.",
        "role" => "Role changed; the account's sessions were ended.",
        "disable" => "Account disabled; its sessions were ended.",
        "enable" => "Account enabled.",
        "unlock" => "Account unlocked.",
        "remove" => "Account removed.",
        "password" => "Initial password set; the user must change it at next login.",
        _ => return None,
    })
}

fn accounts_page(
    state: &AppState,
    p: &Principal,
    status: StatusCode,
    done: Option<&'static str>,
    errors: Vec<String>,
) -> Response {
    let now = AppState::wall();
    let accounts = match state.directory.list() {
        Ok(list) => list
            .into_iter()
            .map(|a| {
                let mut st = Vec::new();
                if a.disabled {
                    st.push("disabled".to_owned());
                }
                if a.locked_until.is_some_and(|u| u > now) {
                    st.push("locked".to_owned());
                }
                if a.must_change {
                    st.push("must change password".to_owned());
                }
                AccountRow {
                    username: a.username,
                    role: a.role.as_str().to_owned(),
                    state: if st.is_empty() {
                        "active".into()
                    } else {
                        st.join(", ")
                    },
                    changed: i64::try_from(a.password_changed_at)
                        .ok()
                        .and_then(|s| {
                            kawal_audit::WallTime::from_unix_micros(s.saturating_mul(1_000_000))
                        })
                        .map_or_else(|| "unknown".to_owned(), |t| t.to_string()),
                }
            })
            .collect(),
        Err(e) => {
            tracing::error!(error = %e, "listing accounts failed");
            Vec::new()
        }
    };
    let roles = Role::ALL
        .iter()
        .map(|r| RoleRow {
            name: r.as_str(),
            describe: r.describe(),
            grants: r
                .grants()
                .iter()
                .map(|g| g.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            least: *r == Role::least(),
        })
        .collect();
    render(
        status,
        &AccountsPage {
            chrome: Chrome::new(state, Some(p), "accounts"),
            accounts,
            roles,
            can_manage: p.role.allows(Privilege::AccountsManage),
            done,
            errors,
        },
    )
}

/// `GET /accounts`.
pub async fn accounts(
    State(state): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    q: Result<Query<DoneQuery>, QueryRejection>,
) -> Response {
    let done = q
        .ok()
        .and_then(|Query(q)| q.done)
        .and_then(|d| done_text(&d));
    accounts_page(&state, &p, StatusCode::OK, done, Vec::new())
}

/// The add-account form.
#[derive(Deserialize)]
pub struct AddForm {
    username: String,
    role: String,
    password: String,
    your_password: String,
}

async fn confirm(state: &Arc<AppState>, p: &Principal, password: String) -> Result<(), Response> {
    flow::confirm(state, p.peer, &p.user, SecretString::new(password))
        .await
        .map_err(|_| {
            accounts_page(
                state,
                p,
                StatusCode::FORBIDDEN,
                None,
                vec!["Re-authentication failed: your password was not accepted.".into()],
            )
        })
}

fn account_error_text(e: &kawal_auth::accounts::AccountError) -> Vec<String> {
    use kawal_auth::accounts::AccountError as E;
    match e {
        E::Weak(rules) => rules.iter().map(|r| format!("The password {r}.")).collect(),
        E::NotFound => vec!["No such account.".into()],
        E::Exists => vec!["An account with that name exists.".into()],
        E::BadName(why) => vec![why.clone()],
        E::Reused => vec!["The password equals the initial one or a recent one.".into()],
        E::LastAdmin => {
            vec!["The last enabled administrator cannot be removed, demoted or disabled.".into()]
        }
        _ => vec!["Internal error.".into()],
    }
}

/// `POST /accounts`.
pub async fn add_account(
    State(state): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    req: Request,
) -> Response {
    let Ok(Form(f)) = req.extract::<Form<AddForm>, _>().await else {
        return accounts_page(
            &state,
            &p,
            StatusCode::BAD_REQUEST,
            None,
            vec!["Fill in every field.".into()],
        );
    };
    if let Err(res) = confirm(&state, &p, f.your_password).await {
        return res;
    }
    let Ok(role) = f.role.parse::<Role>() else {
        return accounts_page(
            &state,
            &p,
            StatusCode::BAD_REQUEST,
            None,
            vec!["Unknown role.".into()],
        );
    };
    let pw = SecretString::new(f.password);
    let (name, now) = (f.username.clone(), AppState::wall());
    match state
        .accounts(move |d| d.add(&name, Some(role), &pw, now))
        .await
    {
        Ok(a) => {
            state
                .record(
                    kawal_audit::Event::new(
                        "account.created",
                        &p.user,
                        kawal_audit::Outcome::Success,
                    )
                    .with("user", a.username.as_str())
                    .with("role", a.role.as_str()),
                )
                .await;
            Redirect::to("/accounts?done=created").into_response()
        }
        Err(e) => {
            state
                .record(
                    kawal_audit::Event::new(
                        "account.create-refused",
                        &p.user,
                        kawal_audit::Outcome::Denied,
                    )
                    .with("reason", e.to_string()),
                )
                .await;
            accounts_page(
                &state,
                &p,
                StatusCode::BAD_REQUEST,
                None,
                account_error_text(&e),
            )
        }
    }
}

/// The change-account form.
#[derive(Deserialize)]
pub struct ChangeForm {
    action: String,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    new_password: Option<String>,
    your_password: String,
}

/// `POST /accounts/{name}`.
pub async fn change_account(
    State(state): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    crate::api::Name(name): crate::api::Name,
    req: Request,
) -> Response {
    let Ok(Form(f)) = req.extract::<Form<ChangeForm>, _>().await else {
        return accounts_page(
            &state,
            &p,
            StatusCode::BAD_REQUEST,
            None,
            vec!["Choose a change and enter your password.".into()],
        );
    };
    let change = match f.action.as_str() {
        "role" => match f.role.as_deref().map(str::parse::<Role>) {
            Some(Ok(r)) => Change::Role(r),
            _ => {
                return accounts_page(
                    &state,
                    &p,
                    StatusCode::BAD_REQUEST,
                    None,
                    vec!["Choose a role.".into()],
                );
            }
        },
        "disable" => Change::Disable,
        "enable" => Change::Enable,
        "unlock" => Change::Unlock,
        "remove" => Change::Remove,
        "password" => match f.new_password {
            Some(pw) if !pw.is_empty() => Change::Reset(SecretString::new(pw)),
            _ => {
                return accounts_page(
                    &state,
                    &p,
                    StatusCode::BAD_REQUEST,
                    None,
                    vec!["Enter the initial password.".into()],
                );
            }
        },
        _ => {
            return accounts_page(
                &state,
                &p,
                StatusCode::BAD_REQUEST,
                None,
                vec!["Unknown change.".into()],
            );
        }
    };
    if let Err(res) = confirm(&state, &p, f.your_password).await {
        return res;
    }
    match apply_change(&state, &p, &name, &change).await {
        Ok(_) if name == p.user && !matches!(change, Change::Enable | Change::Unlock) => {
            // The caller changed their own account: their session ended with the others.
            Redirect::to("/login?ended=revoked").into_response()
        }
        Ok(_) => Redirect::to(&format!("/accounts?done={}", f.action)).into_response(),
        Err(e) => accounts_page(
            &state,
            &p,
            StatusCode::BAD_REQUEST,
            None,
            account_error_text(&e),
        ),
    }
}

struct LogRow {
    seq: u64,
    time: String,
    event: String,
    actor: String,
    outcome: &'static str,
    details: String,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    chrome: Chrome,
    intact: bool,
    verify: String,
    entries: Vec<LogRow>,
    error: Option<&'static str>,
    q_event: String,
    q_since: String,
    outcomes: Vec<OutcomeOption>,
}

struct OutcomeOption {
    value: &'static str,
    label: &'static str,
    selected: bool,
}

/// The audit page's filters, all optional strings (a bad one is an error on the page).
#[derive(Deserialize, Default)]
pub struct AuditForm {
    #[serde(default)]
    event: String,
    #[serde(default)]
    outcome: String,
    #[serde(default)]
    since: String,
}

/// `GET /audit`.
pub async fn audit(
    State(state): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    q: Result<Query<AuditForm>, QueryRejection>,
) -> Response {
    let f = q.map(|Query(f)| f).unwrap_or_default();
    let mut error = None;
    let since = match f.since.trim() {
        "" => None,
        s => match s.parse::<u64>() {
            Ok(n) => Some(n),
            Err(_) => {
                error = Some("From seq must be a number.");
                None
            }
        },
    };
    let query = LogQuery {
        event: Some(f.event.clone()),
        since,
        outcome: Some(f.outcome.clone()),
        limit: Some(300),
    };
    let entries = match read_log(&state, &query) {
        Ok(list) => list
            .into_iter()
            .rev()
            .map(|e| LogRow {
                seq: e.seq,
                time: e.wall.to_string(),
                event: e.event.clone(),
                actor: e.actor.clone(),
                outcome: e.outcome.as_str(),
                details: e
                    .details
                    .iter()
                    .map(|(k, v)| format!("{k}={}", value_text(v)))
                    .collect::<Vec<_>>()
                    .join(" "),
            })
            .collect(),
        Err((_, m)) => {
            error = Some(m);
            Vec::new()
        }
    };
    let (intact, verify) = match state.backend.verify_log() {
        Ok(Ok(s)) => (true, format!("Chain and signatures verified: {s}")),
        Ok(Err(f)) => (false, format!("VERIFICATION FAILED: {f}")),
        Err(e) => (false, format!("Verification could not run: {e}")),
    };
    render(
        StatusCode::OK,
        &AuditPage {
            chrome: Chrome::new(&state, Some(&p), "audit"),
            intact,
            verify,
            entries,
            error,
            q_event: f.event.clone(),
            q_since: f.since.clone(),
            outcomes: ["", "success", "failure", "denied", "info"]
                .into_iter()
                .map(|o| OutcomeOption {
                    value: o,
                    label: if o.is_empty() { "any" } else { o },
                    selected: o == f.outcome,
                })
                .collect(),
        },
    )
}

fn value_text(v: &kawal_audit::Value) -> String {
    match v {
        kawal_audit::Value::Str(s) => s.clone(),
        kawal_audit::Value::Int(i) => i.to_string(),
        kawal_audit::Value::Bool(b) => b.to_string(),
    }
}

struct ControlRow {
    code: String,
    title: String,
    verdict: &'static str,
    detail: String,
}

#[derive(Template)]
#[template(path = "report.html")]
struct ReportPage {
    chrome: Chrome,
    generated: String,
    met: usize,
    not_met: usize,
    manual: usize,
    not_applicable: usize,
    controls: Vec<ControlRow>,
}

/// `GET /report`.
pub async fn report(
    State(state): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
) -> Response {
    let r = match state.backend.report() {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "report failed");
            return (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response();
        }
    };
    let controls = r
        .controls
        .iter()
        .map(|c| {
            let mut detail: Vec<String> = c
                .evidence
                .iter()
                .map(|e| format!("{}: {}", e.label, e.value))
                .collect();
            if let Some(reason) = &c.reason {
                detail.push(reason.clone());
            }
            ControlRow {
                code: c.code.clone(),
                title: c.title.clone(),
                verdict: c.verdict.as_str(),
                detail: detail.join(" · "),
            }
        })
        .collect();
    render(
        StatusCode::OK,
        &ReportPage {
            chrome: Chrome::new(&state, Some(&p), "report"),
            generated: r.generated_at.clone(),
            met: r.summary.met,
            not_met: r.summary.not_met,
            manual: r.summary.manual,
            not_applicable: r.summary.not_applicable,
            controls,
        },
    )
}

/// `GET /static/console.css`.
pub async fn css() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../static/console.css"),
    )
        .into_response()
}

/// `GET /static/console.js`.
pub async fn js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../static/console.js"),
    )
        .into_response()
}

/// Whether the device certificate's automatic renewal has failed since its last success.
fn renewal_failing(cert: &serde_json::Value) -> bool {
    cert.pointer("/renewal/failures")
        .and_then(serde_json::Value::as_u64)
        .is_some_and(|n| n > 0)
}

/// The device certificate's automatic renewal, in words for the dashboard.
fn renewal_text(r: Option<&serde_json::Value>) -> String {
    let Some(r) = r.filter(|r| !r.is_null()) else {
        return "renewed by hand (kawal cert install)".into();
    };
    let url = r
        .get("est_url")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("?");
    let from = r
        .get("renew_from")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("?");
    match r.get("failures").and_then(serde_json::Value::as_u64) {
        Some(0) | None => format!("renews itself over EST ({url}) from {from}"),
        Some(n) => format!(
            "renewal over EST ({url}) failing: {n} attempt(s), last: {}",
            r.get("last_error")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("?")
        ),
    }
}
