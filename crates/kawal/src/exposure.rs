//! Services and interfaces on the device (G045 PL-3-1, PH-1-1, PH-1-2): the daemon's
//! assessment at start and on its period, what it logs, and `kawal exposure check`.
//!
//! The declared set is the `[exposure]` policy's allowed listeners plus kawal's own API and
//! MQTT listeners as configured. Every other listener is a finding, logged once
//! (`exposure.finding`, with its control, kind, subject and owner) while it lasts, shown in
//! the health answer and the report. With `enforce = true` the units that own it are masked
//! and stopped, each action logged (`exposure.enforced`).
use std::collections::BTreeSet;

use kawal_audit::{Event, Outcome as AuditOutcome};
use kawal_platform::SysRoot;
use kawal_platform::exposure::{self, Assessment, Finding, Severity};

use crate::config::platform::ExposureSettings;
use crate::error::{CliError, Exit, Result};
use crate::output;

/// The key a finding is remembered by, so it is logged once while it lasts.
pub fn finding_key(f: &Finding) -> String {
    format!("{}|{:?}|{}", f.control.as_str(), f.kind, f.subject)
}

fn kind_name(f: &Finding) -> String {
    serde_json::to_value(f.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn severity_name(s: Severity) -> &'static str {
    match s {
        Severity::Low => "low",
        Severity::Medium => "medium",
        Severity::High => "high",
    }
}

/// The audit event of a new finding.
pub fn finding_event(f: &Finding) -> Event {
    let mut e = Event::new("exposure.finding", "kawal", AuditOutcome::Failure)
        .with("control", f.control.as_str())
        .with("kind", kind_name(f))
        .with("severity", severity_name(f.severity))
        .with("subject", f.subject.as_str())
        .with("owner", cut(&f.detail, 1000));
    if let Some(m) = &f.manual {
        e = e.with("operator_action", cut(m, 500));
    }
    e
}

/// The audit event of one enforcement action.
pub fn action_event(a: &exposure::Action) -> Event {
    let (outcome, result, reason) = match &a.outcome {
        exposure::Outcome::Done => (AuditOutcome::Success, "done", None),
        exposure::Outcome::Unchanged => (AuditOutcome::Info, "unchanged", None),
        exposure::Outcome::Skipped { reason } => (AuditOutcome::Info, "skipped", Some(reason)),
        exposure::Outcome::Failed { reason } => (AuditOutcome::Failure, "failed", Some(reason)),
    };
    let mut e = Event::new("exposure.enforced", "kawal", outcome)
        .with("control", a.control.as_str())
        .with(
            "action",
            serde_json::to_value(a.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
        )
        .with("target", a.target.as_str())
        .with("result", result);
    if let Some(r) = reason {
        e = e.with("reason", cut(r, 500));
    }
    e
}

fn cut(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// One assessment on this machine.
pub fn assess(settings: &ExposureSettings) -> Assessment {
    exposure::assess(&SysRoot::host(), &settings.policy)
}

/// What the daemon remembers between assessments, and shows in health.
#[derive(Debug, Default)]
pub struct Tracker {
    /// Findings already logged (by [`finding_key`]).
    reported: BTreeSet<String>,
    /// The last assessment's summary for health.
    pub last: Option<serde_json::Value>,
}

impl Tracker {
    /// Takes a new assessment: returns the events to log (new findings only; findings that
    /// went away are forgotten, so a reappearance is logged again).
    pub fn update(
        &mut self,
        a: &Assessment,
        at: &str,
        enforced: &[exposure::Action],
    ) -> Vec<Event> {
        let now: BTreeSet<String> = a.findings.iter().map(finding_key).collect();
        let mut events: Vec<Event> = a
            .findings
            .iter()
            .filter(|f| !self.reported.contains(&finding_key(f)))
            .map(finding_event)
            .collect();
        let cleared = self.reported.difference(&now).count();
        if cleared > 0 {
            tracing::info!(cleared, "exposure findings no longer present");
        }
        self.reported = now;
        // Only changes are logged: an action that found things as they should be is not news.
        events.extend(
            enforced
                .iter()
                .filter(|x| x.outcome != exposure::Outcome::Unchanged)
                .map(action_event),
        );
        self.last = Some(health(a, at, enforced));
        events
    }
}

/// The health answer's view of an assessment.
pub fn health(a: &Assessment, at: &str, enforced: &[exposure::Action]) -> serde_json::Value {
    let count = |s: Severity| a.findings.iter().filter(|f| f.severity == s).count();
    serde_json::json!({
        "last_check": at,
        "ok": a.passed(),
        "listeners": a.listeners.len(),
        "findings": a.findings.len(),
        "high": count(Severity::High),
        "medium": count(Severity::Medium),
        "low": count(Severity::Low),
        "errors": a.errors.len(),
        "enforced_actions": enforced.len(),
        "list": a.findings.iter().take(50).map(|f| serde_json::json!({
            "control": f.control.as_str(),
            "kind": kind_name(f),
            "severity": severity_name(f.severity),
            "subject": f.subject,
            "owner": f.detail,
        })).collect::<Vec<_>>(),
    })
}

/// `kawal exposure check`: assesses this machine and prints the findings (or the whole
/// assessment as JSON); fails (exit 1) when a finding is of high severity.
pub fn check_cmd(settings: &ExposureSettings, json: bool) -> Result<()> {
    let a = assess(settings);
    if json {
        let text = serde_json::to_string_pretty(&a)
            .map_err(|e| CliError::new(Exit::Failure, format!("json: {e}")))?;
        output::line(&text);
    } else {
        for l in &a.evidence {
            output::line(&format!("evidence  {l}"));
        }
        for f in &a.findings {
            output::line(&format!(
                "{:<6} {} {} {}: {}",
                severity_name(f.severity),
                f.control.as_str(),
                kind_name(f),
                f.subject,
                f.detail
            ));
            if let Some(m) = &f.manual {
                output::line(&format!("       to do: {m}"));
            }
        }
        for m in &a.manual {
            output::line(&format!(
                "manual {} evidence needed: {}",
                m.control.as_str(),
                m.what
            ));
        }
        for e in &a.errors {
            output::line(&format!("error  {e}"));
        }
        output::line(&format!(
            "{} listener(s), {} finding(s) ({} high), {} item(s) need manual evidence, {} error(s)",
            a.listeners.len(),
            a.findings.len(),
            a.findings
                .iter()
                .filter(|f| f.severity == Severity::High)
                .count(),
            a.manual.len(),
            a.errors.len()
        ));
    }
    if a.findings.iter().any(|f| f.severity == Severity::High) {
        return Err(CliError::new(
            Exit::Failure,
            "exposure check: high-severity findings",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use kawal_platform::exposure::{Control, FindingKind};

    use super::*;

    fn finding(subject: &str) -> Finding {
        Finding {
            control: Control::Pl31,
            kind: FindingKind::UnexpectedListener,
            severity: Severity::Medium,
            subject: subject.into(),
            detail: "unexpected listener; held by nc (pid 7)".into(),
            fix: None,
            manual: None,
        }
    }

    /// G045: PL-3-1
    #[test]
    fn a_finding_is_logged_once_while_it_lasts_and_again_when_it_returns() {
        let mut t = Tracker::default();
        let mut a = Assessment {
            findings: vec![finding("tcp 0.0.0.0:9999")],
            ..Assessment::default()
        };
        assert_eq!(t.update(&a, "t1", &[]).len(), 1);
        assert_eq!(t.update(&a, "t2", &[]).len(), 0);
        a.findings.clear();
        assert_eq!(t.update(&a, "t3", &[]).len(), 0);
        a.findings.push(finding("tcp 0.0.0.0:9999"));
        let again = t.update(&a, "t4", &[]);
        assert_eq!(again.len(), 1);
        assert_eq!(t.last.as_ref().unwrap()["medium"], 1);
    }
}
