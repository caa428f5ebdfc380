//! The console's Sensors page (G045 AU-1-9, AU-1-10, DS-2-1): the operator's view of the
//! sensors and their certificates (state, serial, expiry with a warning marker, last seen),
//! enrolment and renewal (a one-time token shown once, on the answer page only), revocation
//! (confirmed by a checkbox, no script), and the gateway's live state. Everything comes from
//! [`SensorBackend`], which checks the requests again and writes the audit events; this module
//! refuses malformed input early and shapes the answers for people.
use std::sync::Arc;

use askama::Template;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Form, Path, Query, Request, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, RequestExt};
use http::{HeaderMap, StatusCode, header};
use kawal_audit::WallTime;
use kawal_auth::roles::Privilege;
use serde::Deserialize;
use serde_json::Value;
use zeroize::Zeroizing;

use super::{Chrome, render};
use crate::sensors::{SensorBackend, SensorError};
use crate::state::{AppState, Principal};

/// The naming rule, as the API and the CLI state it.
pub const NAME_RULE: &str =
    "A sensor name is 1 to 64 characters of A-Z a-z 0-9 . _ : - and does not start with '-'.";

const DAY: i64 = 86_400;
/// Longest text shown for one value of the gateway's state.
const VALUE_MAX: usize = 300;
/// Rows shown per list (sensors are not capped; telemetry and nested lists are).
const LIST_MAX: usize = 50;
/// Nesting shown of the gateway's state before the rest is summarised.
const DEPTH_MAX: usize = 4;

/// Whether `name` is a sensor name (the rule of the API and the CLI): 1 to 64 bytes of
/// `[A-Za-z0-9._:-]`, not starting with `-`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
}

/// Whether `role` could be an ACL role name (the backend decides whether it is one).
fn plausible_role(role: &str) -> bool {
    !role.is_empty()
        && role.len() <= 32
        && role
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// The roles the enrol form offers (`[mqtt.acl.<role>]` may define more; the API takes them).
const ROLES: [&str; 2] = ["sensor", "reader"];

/// How close a certificate is to its end, as `kawal_pki::facts::expiry_state` draws the lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// More than 30 days left.
    Ok,
    /// 30 days or fewer.
    Warn30,
    /// 7 days or fewer.
    Warn7,
    /// Past its end.
    Expired,
}

impl Expiry {
    /// The state of a certificate ending at `not_after` at `now` (Unix seconds).
    pub fn at(not_after: i64, now: i64) -> Self {
        let left = not_after.saturating_sub(now);
        if left <= 0 {
            Self::Expired
        } else if left <= 7 * DAY {
            Self::Warn7
        } else if left <= 30 * DAY {
            Self::Warn30
        } else {
            Self::Ok
        }
    }

    /// The state the backend named, if it named one.
    fn from_name(s: &str) -> Option<Self> {
        Some(match s {
            "ok" => Self::Ok,
            "warn-30d" => Self::Warn30,
            "warn-7d" => Self::Warn7,
            "expired" => Self::Expired,
            _ => return None,
        })
    }

    /// The CSS class (and the `kawal_pki` name).
    fn class(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Warn30 => "warn-30d",
            Self::Warn7 => "warn-7d",
            Self::Expired => "expired",
        }
    }
}

/// The warning shown next to an expiry date: text as well as colour.
struct Marker {
    class: &'static str,
    text: String,
}

fn marker(expiry: Expiry, left: Option<i64>) -> Option<Marker> {
    let days = left.map(|l| (l + DAY - 1) / DAY);
    let text = match (expiry, days) {
        (Expiry::Ok, _) => return None,
        (Expiry::Expired, _) => "expired".to_owned(),
        (_, Some(1)) => "1 day left".to_owned(),
        (_, Some(d)) => format!("{d} days left"),
        (Expiry::Warn7, None) => "7 days or fewer left".to_owned(),
        (Expiry::Warn30, None) => "30 days or fewer left".to_owned(),
    };
    Some(Marker {
        class: expiry.class(),
        text,
    })
}

/// Text from the backend made safe to show: control characters replaced, length bounded.
/// (askama escapes HTML; this keeps the page readable whatever the text holds.)
fn clean(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(VALUE_MAX)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if s.chars().nth(VALUE_MAX).is_some() {
        out.push('…');
    }
    out
}

/// Unix seconds from a number of seconds, milliseconds or microseconds (told apart by size:
/// any of them for a date between 1973 and 5138) or from an RFC 3339 UTC string.
fn unix_seconds(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => {
            let n = n.as_i64()?;
            Some(if n.abs() >= 100_000_000_000_000 {
                n / 1_000_000
            } else if n.abs() >= 100_000_000_000 {
                n / 1_000
            } else {
                n
            })
        }
        Value::String(s) => {
            let t = WallTime::parse(s.as_bytes()).or_else(|| {
                // The same form without fractions: YYYY-MM-DDTHH:MM:SSZ.
                let head = s.strip_suffix('Z').filter(|h| h.len() == 19)?;
                WallTime::parse(format!("{head}.000000Z").as_bytes())
            })?;
            Some(t.unix_micros().div_euclid(1_000_000))
        }
        _ => None,
    }
}

/// A time for people: `YYYY-MM-DD HH:MM:SS UTC`, or the text as given if it is not a time.
fn when(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "-".to_owned(),
        Some(v) => match unix_seconds(v)
            .and_then(|s| WallTime::from_unix_micros(s.saturating_mul(1_000_000)))
        {
            Some(t) => {
                let s = t.to_string();
                match (s.get(..10), s.get(11..19)) {
                    (Some(d), Some(h)) => format!("{d} {h} UTC"),
                    _ => s,
                }
            }
            None => text(Some(v)),
        },
    }
}

/// A value as text; missing or null is `-`.
fn text(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "-".to_owned(),
        Some(Value::String(s)) if s.is_empty() => "-".to_owned(),
        Some(Value::String(s)) => clean(s),
        Some(Value::Bool(true)) => "yes".to_owned(),
        Some(Value::Bool(false)) => "no".to_owned(),
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => clean(&other.to_string()),
    }
}

fn now() -> i64 {
    i64::try_from(AppState::wall()).unwrap_or(i64::MAX)
}

/// One row of the sensor table.
struct SensorRow {
    uid: String,
    role: String,
    state: String,
    state_class: &'static str,
    serial: String,
    expires: String,
    marker: Option<Marker>,
    last_seen: String,
    /// Whether the console can act on it (its name passes the naming rule).
    actionable: bool,
}

fn sensor_row(s: &Value, now: i64) -> SensorRow {
    let uid = text(s.get("uid").or_else(|| s.get("name")));
    let state = text(s.get("state"));
    let not_after = s.get("not_after");
    let secs = not_after.and_then(unix_seconds);
    let named = s
        .get("expiry")
        .and_then(Value::as_str)
        .and_then(Expiry::from_name);
    // A revoked sensor holds no certificate that counts: nothing to warn about.
    let marker = if state == "revoked" {
        None
    } else {
        match (named, secs) {
            (Some(e), secs) => marker(e, secs.map(|n| n.saturating_sub(now))),
            (None, Some(n)) => marker(Expiry::at(n, now), Some(n.saturating_sub(now))),
            (None, None) => None,
        }
    };
    SensorRow {
        actionable: valid_name(&uid),
        uid,
        role: text(s.get("role")),
        state_class: match state.as_str() {
            "active" => "active",
            "pending" => "pending",
            "revoked" => "revoked",
            _ => "",
        },
        state,
        serial: text(s.get("serial")),
        expires: when(not_after),
        marker,
        last_seen: when(s.get("last_seen")),
    }
}

/// The sensors of a `list()` answer: `{"sensors": [...]}` (or a bare list).
fn sensor_rows(v: &Value, now: i64) -> Vec<SensorRow> {
    let list = v.get("sensors").unwrap_or(v);
    list.as_array()
        .map(|a| a.iter().map(|s| sensor_row(s, now)).collect())
        .unwrap_or_default()
}

/// A label and a value.
struct Pair {
    key: String,
    value: String,
}

/// A titled group of the gateway's state.
struct Section {
    title: String,
    rows: Vec<Pair>,
}

/// One recent telemetry message: who, where, how big, when (never the payload).
struct RecentRow {
    uid: String,
    topic: String,
    size: String,
    at: String,
}

/// `queue_usage` → `queue usage`.
fn label(key: &str) -> String {
    clean(&key.replace(['_', '-'], " "))
}

/// Flattens a nested value into rows labelled by their path.
fn flatten(prefix: &str, v: &Value, depth: usize, rows: &mut Vec<Pair>) {
    if rows.len() >= LIST_MAX * 2 {
        return;
    }
    let sub = |k: &str| {
        if prefix.is_empty() {
            label(k)
        } else {
            format!("{prefix} · {}", label(k))
        }
    };
    match v {
        Value::Object(map) if depth < DEPTH_MAX => {
            for (k, inner) in map {
                flatten(&sub(k), inner, depth + 1, rows);
            }
        }
        Value::Array(items) if items.iter().all(|i| !i.is_object() && !i.is_array()) => {
            let shown: Vec<String> = items.iter().take(LIST_MAX).map(|i| text(Some(i))).collect();
            let mut value = if shown.is_empty() {
                "none".to_owned()
            } else {
                shown.join(", ")
            };
            if items.len() > LIST_MAX {
                value.push_str(&format!(" … ({} in all)", items.len()));
            }
            rows.push(Pair {
                key: prefix.to_owned(),
                value: clean(&value),
            });
        }
        Value::Array(items) if depth < DEPTH_MAX => {
            if items.is_empty() {
                rows.push(Pair {
                    key: prefix.to_owned(),
                    value: "none".to_owned(),
                });
            }
            for (i, item) in items.iter().take(LIST_MAX).enumerate() {
                flatten(&format!("{prefix} {}", i + 1), item, depth + 1, rows);
            }
        }
        _ => rows.push(Pair {
            key: prefix.to_owned(),
            value: text(Some(v)),
        }),
    }
}

/// The gateway's state as sections (top-level values first, then one per top-level object)
/// and the recent telemetry, if the answer has a `recent` list.
fn gateway_view(v: &Value) -> (Vec<Section>, Vec<RecentRow>) {
    let mut general = Vec::new();
    let mut sections = Vec::new();
    let mut recent = Vec::new();
    let Some(map) = v.as_object() else {
        flatten("state", v, 0, &mut general);
        return (
            vec![Section {
                title: "Gateway".into(),
                rows: general,
            }],
            recent,
        );
    };
    for (k, inner) in map {
        if k == "recent"
            && let Some(items) = inner.as_array()
        {
            recent = items
                .iter()
                .take(LIST_MAX)
                .map(|m| RecentRow {
                    uid: text(m.get("uid")),
                    topic: text(m.get("topic")),
                    size: match m.get("size").and_then(Value::as_u64) {
                        Some(n) => format!("{n} B"),
                        None => text(m.get("size")),
                    },
                    at: when(m.get("at")),
                })
                .collect();
            continue;
        }
        if inner.is_object() {
            let mut rows = Vec::new();
            flatten("", inner, 1, &mut rows);
            sections.push(Section {
                title: label(k),
                rows,
            });
        } else {
            flatten(&label(k), inner, 1, &mut general);
        }
    }
    if !general.is_empty() {
        sections.insert(
            0,
            Section {
                title: "Gateway".into(),
                rows: general,
            },
        );
    }
    (sections, recent)
}

/// A one-time token just issued, shown once on the answer page.
struct Issued {
    name: String,
    /// `enrolled` or `renewed`.
    what: &'static str,
    token: Zeroizing<String>,
    expires: String,
    /// The address an EST client should use (`https://` and this request's host).
    url: String,
}

#[derive(Template)]
#[template(path = "sensors.html")]
struct SensorsPage {
    chrome: Chrome,
    running: bool,
    can_manage: bool,
    can_telemetry: bool,
    sensors: Vec<SensorRow>,
    roles: [&'static str; 2],
    gateway: Vec<Section>,
    recent: Vec<RecentRow>,
    done: Option<&'static str>,
    errors: Vec<String>,
    issued: Option<Issued>,
    /// The name typed into the enrol form, kept after a refusal.
    typed: String,
}

/// What a handler adds to the page.
#[derive(Default)]
struct Outcome {
    done: Option<&'static str>,
    errors: Vec<String>,
    issued: Option<Issued>,
    typed: String,
}

impl Outcome {
    fn error(msg: impl Into<String>) -> Self {
        Self {
            errors: vec![msg.into()],
            ..Self::default()
        }
    }
}

fn backend(state: &AppState) -> Option<&Arc<dyn SensorBackend>> {
    state.sensors.get()
}

/// The page with the current list; a failed list adds its error and, if `status` is 200,
/// turns it into the error's status.
fn page(state: &AppState, p: &Principal, mut status: StatusCode, mut out: Outcome) -> Response {
    let b = backend(state);
    let mut sensors = Vec::new();
    let (mut gateway, mut recent) = (Vec::new(), Vec::new());
    let can_telemetry = p.role.allows(Privilege::TelemetryRead);
    if let Some(b) = b {
        match b.list() {
            Ok(v) => sensors = sensor_rows(&v, now()),
            Err(e) => {
                let (s, msg) = error_text(&e);
                out.errors.push(msg);
                if status == StatusCode::OK {
                    status = s;
                }
            }
        }
        if can_telemetry {
            (gateway, recent) = gateway_view(&b.gateway());
        }
    }
    render(
        status,
        &SensorsPage {
            chrome: Chrome::new(state, Some(p), "sensors"),
            running: b.is_some(),
            can_manage: p.role.allows(Privilege::DevicesManage),
            can_telemetry,
            sensors,
            roles: ROLES,
            gateway,
            recent,
            done: out.done,
            errors: out.errors,
            issued: out.issued,
            typed: out.typed,
        },
    )
}

/// What a failed sensor operation tells the operator: the backend's reason where it is meant
/// to be shown (`Invalid`, `Conflict`), a fixed sentence otherwise.
fn error_text(e: &SensorError) -> (StatusCode, String) {
    match e {
        SensorError::NotFound => (StatusCode::NOT_FOUND, "No such sensor.".into()),
        SensorError::Invalid(why) => (
            StatusCode::BAD_REQUEST,
            format!("Not accepted: {}", clean(why)),
        ),
        SensorError::Conflict(why) => (
            StatusCode::CONFLICT,
            format!("Not possible now: {}", clean(why)),
        ),
        SensorError::Refused => (
            StatusCode::BAD_REQUEST,
            "The gateway refused the request.".into(),
        ),
        SensorError::Internal => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "The gateway could not complete this (internal error). The device log has the details."
                .into(),
        ),
    }
}

const NOT_RUNNING: &str =
    "The gateway is not running on this device, so sensors cannot be enrolled, renewed or revoked.";

/// `?done=` after a change.
#[derive(Deserialize)]
pub struct DoneQuery {
    done: Option<String>,
}

fn done_text(d: &str) -> Option<&'static str> {
    Some(match d {
        "revoke" => {
            "Certificate revoked: the sensor's live connections were dropped and new ones are refused."
        }
        _ => return None,
    })
}

/// `GET /sensors`.
pub async fn sensors_page(
    State(state): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    q: Result<Query<DoneQuery>, QueryRejection>,
) -> Response {
    let done = q
        .ok()
        .and_then(|Query(q)| q.done)
        .and_then(|d| done_text(&d));
    page(
        &state,
        &p,
        StatusCode::OK,
        Outcome {
            done,
            ..Outcome::default()
        },
    )
}

/// The enrol form.
#[derive(Deserialize)]
pub struct EnrolForm {
    name: String,
    #[serde(default)]
    role: String,
}

/// The address EST clients reach this console at, from the request's `Host` (shown only to
/// the operator who sent it; escaped like everything else).
fn est_url(headers: &HeaderMap) -> String {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.len() <= 255
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        })
        .map_or_else(
            || "https://<gateway address>".to_owned(),
            |h| format!("https://{h}"),
        )
}

/// The token page after enrol or renew; the token is taken out of the answer.
fn issued(
    state: &AppState,
    p: &Principal,
    name: &str,
    what: &'static str,
    mut v: Value,
    url: String,
) -> Response {
    let token = match v.get_mut("token").map(Value::take) {
        Some(Value::String(t)) if !t.is_empty() => Zeroizing::new(t),
        _ => {
            tracing::error!(sensor = name, "the sensor backend answered without a token");
            return page(
                state,
                p,
                StatusCode::INTERNAL_SERVER_ERROR,
                Outcome::error(
                    "The gateway answered without a token (internal error). Renew the sensor to get one.",
                ),
            );
        }
    };
    let expires = when(v.get("expires_at"));
    page(
        state,
        p,
        StatusCode::OK,
        Outcome {
            issued: Some(Issued {
                name: name.to_owned(),
                what,
                token,
                expires,
                url,
            }),
            ..Outcome::default()
        },
    )
}

/// `POST /sensors`: enrol a sensor; the answer page shows its one-time token once.
pub async fn enrol(
    State(state): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    req: Request,
) -> Response {
    let url = est_url(req.headers());
    let Ok(Form(f)) = req.extract::<Form<EnrolForm>, _>().await else {
        return page(
            &state,
            &p,
            StatusCode::BAD_REQUEST,
            Outcome::error("Enter a sensor name and choose a role."),
        );
    };
    let name = f.name.trim();
    if !valid_name(name) {
        return page(
            &state,
            &p,
            StatusCode::BAD_REQUEST,
            Outcome {
                errors: vec![NAME_RULE.into()],
                typed: clean(name),
                ..Outcome::default()
            },
        );
    }
    let role = f.role.trim();
    if !plausible_role(role) {
        return page(
            &state,
            &p,
            StatusCode::BAD_REQUEST,
            Outcome {
                errors: vec!["Choose a role: sensor or reader.".into()],
                typed: name.to_owned(),
                ..Outcome::default()
            },
        );
    }
    let Some(b) = backend(&state) else {
        return page(
            &state,
            &p,
            StatusCode::SERVICE_UNAVAILABLE,
            Outcome::error(NOT_RUNNING),
        );
    };
    let (b, n, r, by) = (
        Arc::clone(b),
        name.to_owned(),
        role.to_owned(),
        p.user.clone(),
    );
    // Store writes, signing and audit syncs: off the async runtime's threads.
    let enrolled = tokio::task::spawn_blocking(move || b.enroll(&n, Some(&r), &by))
        .await
        .unwrap_or(Err(SensorError::Internal));
    match enrolled {
        Ok(v) => issued(&state, &p, name, "enrolled", v, url),
        Err(e) => {
            let (status, msg) = error_text(&e);
            page(
                &state,
                &p,
                status,
                Outcome {
                    errors: vec![msg],
                    typed: name.to_owned(),
                    ..Outcome::default()
                },
            )
        }
    }
}

/// The per-sensor form: `action` is `revoke` (with `confirm`) or `renew`.
#[derive(Deserialize)]
pub struct SensorForm {
    action: String,
    #[serde(default)]
    confirm: Option<String>,
}

/// `POST /sensors/{name}`: revoke (confirmed) or renew (a new one-time token, shown once).
pub async fn change(
    State(state): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    name: Result<Path<String>, PathRejection>,
    req: Request,
) -> Response {
    let url = est_url(req.headers());
    let name = match name {
        Ok(Path(n)) if valid_name(&n) => n,
        _ => {
            return page(
                &state,
                &p,
                StatusCode::BAD_REQUEST,
                Outcome::error(NAME_RULE),
            );
        }
    };
    let Ok(Form(f)) = req.extract::<Form<SensorForm>, _>().await else {
        return page(
            &state,
            &p,
            StatusCode::BAD_REQUEST,
            Outcome::error("Choose revoke or renew."),
        );
    };
    let revoke = match f.action.as_str() {
        "revoke" => true,
        "renew" => false,
        _ => {
            return page(
                &state,
                &p,
                StatusCode::BAD_REQUEST,
                Outcome::error("Unknown change: choose revoke or renew."),
            );
        }
    };
    if revoke && f.confirm.as_deref() != Some("yes") {
        return page(
            &state,
            &p,
            StatusCode::BAD_REQUEST,
            Outcome::error(format!(
                "Nothing was revoked: tick \"I understand the sensor is disconnected now\" to revoke {name}."
            )),
        );
    }
    let Some(b) = backend(&state) else {
        return page(
            &state,
            &p,
            StatusCode::SERVICE_UNAVAILABLE,
            Outcome::error(NOT_RUNNING),
        );
    };
    let (b, n, by) = (Arc::clone(b), name.clone(), p.user.clone());
    let result = tokio::task::spawn_blocking(move || {
        if revoke {
            b.revoke(&n, &by)
        } else {
            b.renew(&n, &by)
        }
    })
    .await
    .unwrap_or(Err(SensorError::Internal));
    match result {
        // Post-Redirect-Get: reloading the list does not revoke again.
        Ok(_) if revoke => Redirect::to("/sensors?done=revoke").into_response(),
        Ok(v) => issued(&state, &p, &name, "renewed", v, url),
        Err(e) => {
            let (status, msg) = error_text(&e);
            page(&state, &p, status, Outcome::error(msg))
        }
    }
}

#[cfg(test)]
mod tests;
