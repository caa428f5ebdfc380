//! The console's Platform page (G045 PL-1-4, PL-3-1, PH-1-1): the integrity check (state,
//! last check, every problem), the services and interfaces findings (severity, control,
//! subject, owner, what to do), the tamper inputs and state, and log forwarding (connection,
//! backlog, last confirmation). Administrators get a "Verify integrity now" form (CSRF token,
//! no script). Everything comes from [`crate::Backend::platform`]; the dashboard's one-line
//! summary is [`summary`].
use std::sync::Arc;

use askama::Template;
use axum::Extension;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use http::StatusCode;
use kawal_auth::roles::Privilege;
use serde::Deserialize;
use serde_json::Value;

use super::{Chrome, render};
use crate::platform::{VerifyError, read, run_verify};
use crate::state::{AppState, Principal};

/// Longest text shown for one value (paths, owners, problems).
const TEXT_MAX: usize = 600;
/// Rows shown per list (findings, problems, files).
const LIST_MAX: usize = 200;

/// A value of the backend's JSON as text for people ("-" when absent).
fn text(v: Option<&Value>) -> String {
    let s = match v {
        None | Some(Value::Null) => "-".to_owned(),
        Some(Value::String(s)) if s.is_empty() => "-".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    if s.chars().count() > TEXT_MAX {
        let mut cut: String = s.chars().take(TEXT_MAX).collect();
        cut.push('…');
        cut
    } else {
        s
    }
}

fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().take(LIST_MAX).map(|x| text(Some(x))).collect())
        .unwrap_or_default()
}

/// One exposure finding.
struct FindingRow {
    severity: String,
    control: String,
    kind: String,
    subject: String,
    owner: String,
    todo: String,
}

/// A key and its value.
struct Row {
    key: &'static str,
    value: String,
}

/// One section's state word and its styling (`ok`, `warn`, `bad`).
struct Headline {
    word: String,
    class: &'static str,
}

#[derive(Template)]
#[template(path = "platform.html")]
struct PlatformPage {
    chrome: Chrome,
    can_verify: bool,
    notice: Option<&'static str>,
    error: Option<String>,
    integrity: Headline,
    integrity_rows: Vec<Row>,
    problems: Vec<String>,
    files: Vec<String>,
    exposure: Headline,
    exposure_rows: Vec<Row>,
    findings: Vec<FindingRow>,
    tamper: Headline,
    tamper_inputs: Vec<String>,
    forward: Headline,
    forward_rows: Vec<Row>,
}

fn integrity_headline(i: &Value) -> Headline {
    match str_at(i, "state") {
        Some("ok") => Headline {
            word: "verified".into(),
            class: "ok",
        },
        Some("failed") => Headline {
            word: "FAILED".into(),
            class: "bad",
        },
        Some("no-manifest") => Headline {
            word: "no manifest installed".into(),
            class: "warn",
        },
        Some("disabled") => Headline {
            word: "switched off".into(),
            class: "warn",
        },
        _ => Headline {
            word: "not checked yet".into(),
            class: "warn",
        },
    }
}

fn count(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

fn exposure_headline(e: &Value) -> Headline {
    if e.get("last_check").is_none() {
        return Headline {
            word: "not checked yet".into(),
            class: "warn",
        };
    }
    let (n, high) = (count(e, "findings"), count(e, "high"));
    Headline {
        word: match n {
            0 => "no findings".into(),
            1 => "1 finding".into(),
            n => format!("{n} findings"),
        },
        class: if high > 0 {
            "bad"
        } else if n > 0 {
            "warn"
        } else {
            "ok"
        },
    }
}

fn tamper_headline(t: &Value) -> Headline {
    match str_at(t, "state") {
        Some("armed") => Headline {
            word: "armed".into(),
            class: "ok",
        },
        Some("tampered") => Headline {
            word: "TAMPER DETECTED: keys destroyed".into(),
            class: "bad",
        },
        _ => Headline {
            word: "no tamper inputs configured".into(),
            class: "warn",
        },
    }
}

fn forward_headline(f: &Value) -> Headline {
    match str_at(f, "state") {
        Some("connected") => Headline {
            word: "connected".into(),
            class: "ok",
        },
        Some("starting") => Headline {
            word: "starting".into(),
            class: "warn",
        },
        Some(s @ ("failing" | "stalled" | "stopped")) => Headline {
            word: s.to_uppercase(),
            class: "bad",
        },
        _ => Headline {
            word: "not configured".into(),
            class: "warn",
        },
    }
}

/// The dashboard's one line: integrity, high findings, forwarding and tamper in a sentence,
/// and `warn` or `bad` when any of them needs attention. Reads the health answer, which holds
/// the same states as the platform page in short.
pub(crate) fn summary(h: &Value) -> (String, &'static str) {
    let null = Value::Null;
    let get = |k: &str| h.get(k).unwrap_or(&null);
    let parts = [
        (
            "integrity",
            integrity_headline(get("integrity")),
            str_at(get("integrity"), "state") == Some("failed"),
        ),
        (
            "services and interfaces",
            exposure_headline(get("exposure")),
            count(get("exposure"), "high") > 0,
        ),
        (
            "log forwarding",
            forward_headline(get("log_forward")),
            matches!(
                str_at(get("log_forward"), "state"),
                Some("failing" | "stalled" | "stopped")
            ),
        ),
        (
            "tamper",
            tamper_headline(get("tamper")),
            str_at(get("tamper"), "state") == Some("tampered"),
        ),
    ];
    let line = parts
        .iter()
        .map(|(what, hl, _)| format!("{what}: {}", hl.word))
        .collect::<Vec<_>>()
        .join(" · ");
    let class = if parts.iter().any(|(_, _, alarm)| *alarm) {
        "warn"
    } else {
        "ok"
    };
    (line, class)
}

fn row(key: &'static str, v: &Value, field: &str) -> Row {
    Row {
        key,
        value: text(v.get(field)),
    }
}

fn page_with(
    state: &AppState,
    p: &Principal,
    status: StatusCode,
    notice: Option<&'static str>,
    error: Option<String>,
    v: &Value,
) -> Response {
    let null = Value::Null;
    let i = v.get("integrity").unwrap_or(&null);
    let e = v.get("exposure").unwrap_or(&null);
    let t = v.get("tamper").unwrap_or(&null);
    let f = v.get("log_forward").unwrap_or(&null);
    let findings = e
        .get("list")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .take(LIST_MAX)
                .map(|x| FindingRow {
                    severity: text(x.get("severity")),
                    control: text(x.get("control")),
                    kind: text(x.get("kind")),
                    subject: text(x.get("subject")),
                    owner: text(x.get("owner")),
                    todo: text(x.get("what_to_do")),
                })
                .collect()
        })
        .unwrap_or_default();
    let page = PlatformPage {
        chrome: Chrome::new(state, Some(p), "platform"),
        can_verify: p.role.allows(Privilege::ConfigManage),
        notice,
        error,
        integrity: integrity_headline(i),
        integrity_rows: vec![
            row("Last check", i, "last_check"),
            row("Started by", i, "trigger"),
            row("Files checked", i, "files_checked"),
            row("Files failed", i, "files_failed"),
            row("Manifest", i, "manifest"),
            row("Product", i, "product"),
            row("Period (s)", i, "period_s"),
            row("On mismatch", i, "on_mismatch"),
        ],
        problems: strings(i.get("problems")),
        files: strings(i.get("files")),
        exposure: exposure_headline(e),
        exposure_rows: vec![
            row("Last check", e, "last_check"),
            row("Listeners seen", e, "listeners"),
            row("High", e, "high"),
            row("Medium", e, "medium"),
            row("Low", e, "low"),
            row("Enforcement actions", e, "enforced_actions"),
            row("Errors", e, "errors"),
        ],
        findings,
        tamper: tamper_headline(t),
        tamper_inputs: strings(t.get("inputs")),
        forward: forward_headline(f),
        forward_rows: vec![
            row("Collector", f, "collector"),
            row("Connected", f, "connected"),
            row("Backlog (entries)", f, "backlog_entries"),
            row("Backlog limit", f, "max_backlog_entries"),
            row("Backlog alarm", f, "backlog_alarm"),
            row("Last confirmed delivery", f, "last_confirmed_at"),
            row("Last confirmed seq", f, "cursor_seq"),
            row("Last error", f, "last_error"),
            row("Last error at", f, "last_error_at"),
        ],
    };
    render(status, &page)
}

/// `?done=` after a check.
#[derive(Deserialize)]
pub struct DoneQuery {
    done: Option<String>,
}

async fn page_after(
    state: &AppState,
    p: &Principal,
    status: StatusCode,
    notice: Option<&'static str>,
    error: Option<String>,
) -> Response {
    match read(state).await {
        Ok(v) => page_with(state, p, status, notice, error, &v),
        Err(e) => {
            tracing::error!(error = ?e, "platform state could not be read");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}

/// `GET /platform`.
pub async fn page(
    State(state): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    q: Result<Query<DoneQuery>, QueryRejection>,
) -> Response {
    let notice = q
        .ok()
        .and_then(|Query(q)| q.done)
        .filter(|d| d == "verified")
        .map(|_| "Integrity checked now; the result is below and in the audit log.");
    page_after(&state, &p, StatusCode::OK, notice, None).await
}

/// `POST /platform/verify`: the check now, then back to the page (which shows its result).
/// The form carries only the CSRF token, which the guard checked.
pub async fn verify(
    State(state): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
) -> Response {
    match run_verify(&state, &p.user).await {
        Ok(_) => Redirect::to("/platform?done=verified").into_response(),
        Err(VerifyError::Busy) => {
            let msg = "An integrity check is already running. Try again when it has finished.";
            page_after(&state, &p, StatusCode::CONFLICT, None, Some(msg.into())).await
        }
        Err(VerifyError::Refused(why)) => {
            page_after(&state, &p, StatusCode::CONFLICT, None, Some(why)).await
        }
        Err(VerifyError::Internal(_)) => {
            let msg = "The integrity check could not run (internal error; see the service log).";
            page_after(
                &state,
                &p,
                StatusCode::INTERNAL_SERVER_ERROR,
                None,
                Some(msg.into()),
            )
            .await
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_summary_warns_on_failed_integrity_high_findings_failing_forwarding_or_tamper() {
        let calm = json!({
            "integrity": { "state": "ok" },
            "exposure": { "last_check": "t", "findings": 1, "high": 0 },
            "log_forward": { "state": "connected" },
            "tamper": { "state": "armed" },
        });
        let (line, class) = summary(&calm);
        assert_eq!(class, "ok", "{line}");
        assert!(line.contains("integrity: verified") && line.contains("1 finding"));
        for (key, bad) in [
            ("integrity", json!({ "state": "failed" })),
            (
                "exposure",
                json!({ "last_check": "t", "findings": 2, "high": 1 }),
            ),
            ("log_forward", json!({ "state": "failing" })),
            ("tamper", json!({ "state": "tampered" })),
        ] {
            let mut h = calm.clone();
            h[key] = bad;
            assert_eq!(summary(&h).1, "warn", "{key}");
        }
    }

    #[test]
    fn long_values_are_cut() {
        let long = Value::String("x".repeat(TEXT_MAX + 10));
        assert_eq!(text(Some(&long)).chars().count(), TEXT_MAX + 1);
        assert_eq!(text(None), "-");
    }
}
