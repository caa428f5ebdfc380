//! The compliance report: one verdict per G045 control, backed by evidence read from the live
//! device and by the tests tagged with the control, plus the threat view of Annex A.
//!
//! Evaluators produce one [`Finding`] per control; [`Report::build`] checks that all 44 are
//! there exactly once, fills in what the catalogue and the test index know, and derives the
//! threat view and the summary. The renderers in [`crate::render`] take the result.

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::catalogue::{self, Dimension, Modal};
use crate::tests_index;
use crate::{Error, Result};

/// The code a report is assessed against.
pub const STANDARD: &str = "MCMC MTSFB TC G045:2024";

/// The outcome of evaluating one control on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// The device meets the control, as the evidence shows.
    Met,
    /// The device does not meet the control; the reason says why.
    NotMet,
    /// The control does not apply to this device (e.g. no such interface).
    NotApplicable,
    /// A person must check the control (e.g. a tamper-evident seal); the reason says what.
    Manual,
}

impl Verdict {
    /// The serialised form: `"met"`, `"not-met"`, `"not-applicable"` or `"manual"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Met => "met",
            Verdict::NotMet => "not-met",
            Verdict::NotApplicable => "not-applicable",
            Verdict::Manual => "manual",
        }
    }

    /// A label for people: `"Met"`, `"Not met"`, `"Not applicable"`, `"Manual check"`.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Met => "Met",
            Verdict::NotMet => "Not met",
            Verdict::NotApplicable => "Not applicable",
            Verdict::Manual => "Manual check",
        }
    }

    /// Whether [`Report::build`] demands a reason with this verdict.
    pub fn needs_reason(self) -> bool {
        matches!(self, Verdict::NotMet | Verdict::Manual)
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One fact read from the live device, e.g. `label: "audit chain"`, `value: "1 204 records,
/// verified"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Evidence {
    /// What was looked at.
    pub label: String,
    /// What was found.
    pub value: String,
}

impl Evidence {
    /// Evidence `label: value`.
    pub fn new(label: impl Into<String>, value: impl Into<String>) -> Self {
        Evidence {
            label: label.into(),
            value: value.into(),
        }
    }
}

/// What an evaluator concluded about one control: the input to [`Report::build`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The control's code, e.g. `"AU-1-3"`.
    pub code: String,
    /// The verdict.
    pub verdict: Verdict,
    /// The facts the verdict rests on.
    pub evidence: Vec<Evidence>,
    /// Why: required (non-blank) for [`Verdict::NotMet`] and [`Verdict::Manual`].
    pub reason: Option<String>,
}

impl Finding {
    /// A finding without evidence or reason.
    pub fn new(code: impl Into<String>, verdict: Verdict) -> Self {
        Finding {
            code: code.into(),
            verdict,
            evidence: Vec::new(),
            reason: None,
        }
    }

    /// Adds one piece of evidence.
    #[must_use]
    pub fn evidence(mut self, label: impl Into<String>, value: impl Into<String>) -> Self {
        self.evidence.push(Evidence::new(label, value));
        self
    }

    /// Sets the reason.
    #[must_use]
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }
}

/// Facts about the report as a whole, supplied by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportMeta {
    /// The product and version, `"kawal x.y.z"`.
    pub product: String,
    /// The device's unique identifier (AU-3-1).
    pub device_uid: String,
    /// Whether the device runs with development keys or settings; reports say so loudly.
    pub dev_device: bool,
    /// When the report was generated, RFC 3339.
    pub generated_at: String,
    /// Whether the clock was synchronised when the report was generated; `None` if unknown.
    pub clock_synchronised: Option<bool>,
}

/// The result for one control.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlResult {
    /// The control's code.
    pub code: String,
    /// The control's title, from the catalogue.
    pub title: String,
    /// The control's dimension.
    pub dimension: Dimension,
    /// The control's sub-area, e.g. `"User authentication"`.
    pub sub_area: String,
    /// `shall` or `should`.
    pub modal: Modal,
    /// The verdict.
    pub verdict: Verdict,
    /// The facts read from the device.
    pub evidence: Vec<Evidence>,
    /// Why the verdict; always present for `not-met` and `manual`.
    pub reason: Option<String>,
    /// The workspace tests tagged with this control ([`crate::tests_index`]).
    pub tests: Vec<String>,
    /// The threats Annex A maps to this control.
    pub threats: Vec<String>,
}

/// The Annex A view of one threat: which controls address it and how they fared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThreatResult {
    /// The threat's code.
    pub code: String,
    /// The threat's name.
    pub name: String,
    /// Every control mapped to the threat, in catalogue order.
    pub controls: Vec<String>,
    /// True when at least one mapped control is met.
    pub covered: bool,
    /// The mapped controls that are met.
    pub met: Vec<String>,
    /// The mapped controls that are not met.
    pub not_met: Vec<String>,
}

/// Verdict counts over the controls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Summary {
    /// Controls met.
    pub met: usize,
    /// Controls not met.
    pub not_met: usize,
    /// Controls not applicable.
    pub not_applicable: usize,
    /// Controls left to a manual check.
    pub manual: usize,
    /// All controls (44).
    pub total: usize,
}

/// A complete compliance report for one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// The code assessed against, [`STANDARD`].
    pub standard: String,
    /// The product and version, `"kawal x.y.z"`.
    pub product: String,
    /// The device's unique identifier.
    pub device_uid: String,
    /// Whether the device runs with development keys or settings.
    pub dev_device: bool,
    /// When the report was generated, RFC 3339.
    pub generated_at: String,
    /// Whether the clock was synchronised; `None` if unknown.
    pub clock_synchronised: Option<bool>,
    /// One result per control, in catalogue order.
    pub controls: Vec<ControlResult>,
    /// One result per threat, in catalogue order.
    pub threats: Vec<ThreatResult>,
    /// The verdict counts.
    pub summary: Summary,
}

impl Report {
    /// Builds the report from one finding per control, in any order.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownControl`], [`Error::DuplicateControl`] or [`Error::MissingReason`] for
    /// the first bad finding; then [`Error::MissingControls`] listing every control without a
    /// finding.
    pub fn build(meta: ReportMeta, findings: Vec<Finding>) -> Result<Report> {
        let mut by_code: HashMap<&'static str, Finding> = HashMap::with_capacity(findings.len());
        for finding in findings {
            let Some(control) = catalogue::control(&finding.code) else {
                return Err(Error::UnknownControl { code: finding.code });
            };
            let blank = finding
                .reason
                .as_deref()
                .is_none_or(|r| r.trim().is_empty());
            if finding.verdict.needs_reason() && blank {
                return Err(Error::MissingReason {
                    code: finding.code,
                    verdict: finding.verdict,
                });
            }
            if by_code.contains_key(control.code) {
                return Err(Error::DuplicateControl { code: finding.code });
            }
            by_code.insert(control.code, finding);
        }
        let missing: Vec<String> = catalogue::controls()
            .iter()
            .filter(|c| !by_code.contains_key(c.code))
            .map(|c| c.code.to_owned())
            .collect();
        if !missing.is_empty() {
            return Err(Error::MissingControls { codes: missing });
        }

        let mut controls = Vec::with_capacity(catalogue::controls().len());
        for control in catalogue::controls() {
            let Some(finding) = by_code.remove(control.code) else {
                // Checked above: every catalogue code has a finding.
                return Err(Error::MissingControls {
                    codes: vec![control.code.to_owned()],
                });
            };
            controls.push(ControlResult {
                code: control.code.to_owned(),
                title: control.title.to_owned(),
                dimension: control.dimension,
                sub_area: control.sub_area.to_owned(),
                modal: control.modal,
                verdict: finding.verdict,
                evidence: finding.evidence,
                reason: finding.reason,
                tests: strings(tests_index::tests_for(control.code)),
                threats: strings(control.threats),
            });
        }
        let threats = threat_view(&controls);
        let summary = summarise(&controls);
        Ok(Report {
            standard: STANDARD.to_owned(),
            product: meta.product,
            device_uid: meta.device_uid,
            dev_device: meta.dev_device,
            generated_at: meta.generated_at,
            clock_synchronised: meta.clock_synchronised,
            controls,
            threats,
            summary,
        })
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn threat_view(controls: &[ControlResult]) -> Vec<ThreatResult> {
    let with = |code: &str, verdict: Verdict| -> Vec<String> {
        controls
            .iter()
            .filter(|c| c.verdict == verdict && c.threats.iter().any(|t| t == code))
            .map(|c| c.code.clone())
            .collect()
    };
    catalogue::threats()
        .iter()
        .map(|t| {
            let met = with(t.code, Verdict::Met);
            ThreatResult {
                code: t.code.to_owned(),
                name: t.name.to_owned(),
                controls: catalogue::controls_for_threat(t.code)
                    .iter()
                    .map(|c| c.code.to_owned())
                    .collect(),
                covered: !met.is_empty(),
                met,
                not_met: with(t.code, Verdict::NotMet),
            }
        })
        .collect()
}

fn summarise(controls: &[ControlResult]) -> Summary {
    let mut s = Summary {
        total: controls.len(),
        ..Summary::default()
    };
    for c in controls {
        match c.verdict {
            Verdict::Met => s.met += 1,
            Verdict::NotMet => s.not_met += 1,
            Verdict::NotApplicable => s.not_applicable += 1,
            Verdict::Manual => s.manual += 1,
        }
    }
    s
}

/// Fixtures shared by this crate's unit tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    pub(crate) fn meta() -> ReportMeta {
        ReportMeta {
            product: "kawal 0.1.0".to_owned(),
            device_uid: "KWL-0001".to_owned(),
            dev_device: false,
            generated_at: "2025-01-02T03:04:05Z".to_owned(),
            clock_synchronised: Some(true),
        }
    }

    /// One `met` finding per control, each with one piece of evidence.
    pub(crate) fn all_met() -> Vec<Finding> {
        catalogue::controls()
            .iter()
            .map(|c| Finding::new(c.code, Verdict::Met).evidence("checked", c.code))
            .collect()
    }

    /// A report with every verdict: PL-3-1 not met, PH-2-1 manual, PH-1-1 not applicable.
    pub(crate) fn mixed() -> Report {
        let findings = all_met()
            .into_iter()
            .map(|f| match f.code.as_str() {
                "PL-3-1" => Finding::new("PL-3-1", Verdict::NotMet)
                    .evidence("listening", "tcp/23 telnetd")
                    .reason("telnet is enabled"),
                "PH-2-1" => Finding::new("PH-2-1", Verdict::Manual).reason("inspect the seal"),
                "PH-1-1" => Finding::new("PH-1-1", Verdict::NotApplicable),
                _ => f,
            })
            .collect();
        Report::build(meta(), findings).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{all_met, meta, mixed};
    use super::*;

    fn replace(code: &str, finding: &Finding) -> Vec<Finding> {
        all_met()
            .into_iter()
            .map(|f| if f.code == code { finding.clone() } else { f })
            .collect()
    }

    #[test]
    fn builds_in_catalogue_order_whatever_the_input_order() {
        let mut findings = all_met();
        findings.reverse();
        let report = Report::build(meta(), findings).unwrap();
        let codes: Vec<_> = report.controls.iter().map(|c| c.code.as_str()).collect();
        let expected: Vec<_> = catalogue::controls().iter().map(|c| c.code).collect();
        assert_eq!(codes, expected);
        assert_eq!(report.standard, STANDARD);
        assert_eq!(report.product, "kawal 0.1.0");
        let summary = Summary {
            met: 44,
            total: 44,
            ..Summary::default()
        };
        assert_eq!(report.summary, summary);
        assert!(
            report
                .threats
                .iter()
                .all(|t| t.covered && t.not_met.is_empty())
        );
    }

    #[test]
    fn fills_title_threats_and_tests_from_the_catalogue() {
        let report = Report::build(meta(), all_met()).unwrap();
        for (result, control) in report.controls.iter().zip(catalogue::controls()) {
            assert_eq!(result.title, control.title);
            assert_eq!(result.dimension, control.dimension);
            assert_eq!(result.modal, control.modal);
            assert_eq!(result.threats, control.threats);
            assert_eq!(result.tests, tests_index::tests_for(control.code));
            assert_eq!(result.evidence, [Evidence::new("checked", control.code)]);
        }
    }

    #[test]
    fn counts_verdicts_and_derives_threat_view() {
        let report = mixed();
        let summary = Summary {
            met: 41,
            not_met: 1,
            not_applicable: 1,
            manual: 1,
            total: 44,
        };
        assert_eq!(report.summary, summary);
        // ST-G-1 (DoS) is mapped to PL-3-1 only.
        let dos = report.threats.iter().find(|t| t.code == "ST-G-1").unwrap();
        assert_eq!(dos.controls, ["PL-3-1"]);
        assert!(!dos.covered);
        assert!(dos.met.is_empty());
        assert_eq!(dos.not_met, ["PL-3-1"]);
        // ST-D-25 is mapped to PH-1-1 (n/a) and PH-2-1 (manual) among others.
        let physical = report.threats.iter().find(|t| t.code == "ST-D-25").unwrap();
        assert!(physical.covered);
        assert!(physical.controls.contains(&"PH-2-1".to_owned()));
        assert!(!physical.met.contains(&"PH-2-1".to_owned()));
        assert!(!physical.met.contains(&"PH-1-1".to_owned()));
        assert_eq!(report.threats.len(), 32);
    }

    #[test]
    fn rejects_unknown_control() {
        let mut findings = all_met();
        findings.push(Finding::new("AU-9-9", Verdict::Met));
        let err = Report::build(meta(), findings).unwrap_err();
        assert!(matches!(err, Error::UnknownControl { ref code } if code == "AU-9-9"));
    }

    #[test]
    fn rejects_duplicate_control() {
        let mut findings = all_met();
        findings.push(Finding::new("DS-1-1", Verdict::NotApplicable));
        let err = Report::build(meta(), findings).unwrap_err();
        assert!(matches!(err, Error::DuplicateControl { ref code } if code == "DS-1-1"));
    }

    #[test]
    fn rejects_missing_controls_and_lists_them_all() {
        let findings = all_met()
            .into_iter()
            .filter(|f| f.code != "AU-1-1" && f.code != "PH-2-1")
            .collect();
        let err = Report::build(meta(), findings).unwrap_err();
        assert!(
            matches!(err, Error::MissingControls { ref codes } if codes == &["AU-1-1", "PH-2-1"])
        );
        let err = Report::build(meta(), Vec::new()).unwrap_err();
        assert!(matches!(err, Error::MissingControls { ref codes } if codes.len() == 44));
    }

    #[test]
    fn requires_reason_for_not_met_and_manual() {
        for verdict in [Verdict::NotMet, Verdict::Manual] {
            for reason in [None, Some(""), Some("  \n")] {
                let mut finding = Finding::new("CR-1-2", verdict);
                finding.reason = reason.map(str::to_owned);
                let err = Report::build(meta(), replace("CR-1-2", &finding)).unwrap_err();
                assert!(
                    matches!(err, Error::MissingReason { ref code, verdict: v } if code == "CR-1-2" && v == verdict)
                );
            }
        }
        for verdict in [Verdict::Met, Verdict::NotApplicable] {
            let finding = Finding::new("CR-1-2", verdict);
            assert!(Report::build(meta(), replace("CR-1-2", &finding)).is_ok());
        }
    }

    #[test]
    fn verdicts_serialise_in_kebab_case() {
        let all = [
            Verdict::Met,
            Verdict::NotMet,
            Verdict::NotApplicable,
            Verdict::Manual,
        ];
        for v in all {
            let json = serde_json::to_string(&v).unwrap();
            assert_eq!(json, format!("\"{}\"", v.as_str()));
            assert_eq!(v.to_string(), v.as_str());
        }
        assert_eq!(
            serde_json::to_string(&Verdict::NotApplicable).unwrap(),
            "\"not-applicable\""
        );
    }

    #[test]
    fn round_trips_through_json() {
        let report = mixed();
        let json = serde_json::to_string(&report).unwrap();
        let back: Report = serde_json::from_str(&json).unwrap();
        assert_eq!(back, report);
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        let pl31 = &value["controls"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["code"] == "PL-3-1")
            .unwrap();
        assert_eq!(pl31["verdict"], "not-met");
        assert_eq!(pl31["modal"], "should");
        assert_eq!(pl31["dimension"], "device-platform-security");
        assert_eq!(value["summary"]["not_met"], 1);
    }
}
