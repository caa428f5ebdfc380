//! HTML rendering: one self-contained file for people to read and print.
//!
//! The page has an inline `<style>` and nothing else: no script, no external resource, and a
//! Content-Security-Policy that forbids both, so a value that slipped through escaping still
//! could not run or load anything. Every string from the report goes through [`escape_html`].
//! Verdicts are shown by text and symbol as well as colour, so the page reads in greyscale.

use super::{DEV_WARNING, clock_state};
use crate::catalogue::Dimension;
use crate::report::{ControlResult, Report, ThreatResult, Verdict};

const STYLE: &str = "
:root { color-scheme: light; }
body { font: 14px/1.45 system-ui, sans-serif; color: #111; margin: 2em; }
h1 { font-size: 1.5em; margin: 0 0 .5em; }
h2 { font-size: 1.2em; margin: 1.5em 0 .5em; }
table { border-collapse: collapse; width: 100%; margin-bottom: 1em; }
th, td { border: 1px solid #999; padding: .3em .45em; text-align: left; vertical-align: top; }
thead th { background: #e8e8e8; }
thead { display: table-header-group; }
tr { break-inside: avoid; }
th.group { background: #d0d8e8; font-size: 1.05em; }
dl.meta { display: grid; grid-template-columns: max-content auto; gap: .2em 1em; }
dl.meta dt { font-weight: bold; }
dl.meta dd { margin: 0; }
ul { margin: 0; padding-left: 1.1em; }
code { font: 12px/1.3 ui-monospace, monospace; overflow-wrap: anywhere; }
.banner { border: 3px solid #a00; background: #fdd; color: #600; padding: .6em 1em;
  font-weight: bold; margin: 1em 0; }
.warn { color: #a00; font-weight: bold; }
.verdict { font-weight: bold; white-space: nowrap; }
.met { background: #d6f5d6; color: #064; }
.not-met { background: #f9d0d0; color: #900; }
.not-applicable { background: #eee; color: #444; }
.manual { background: #fde9b8; color: #740; }
.none { color: #666; font-style: italic; }
.sub { color: #555; font-size: .9em; }
@media print {
  body { margin: 0; font-size: 10px; }
  * { print-color-adjust: exact; -webkit-print-color-adjust: exact; }
  h2 { break-before: auto; break-after: avoid; }
}
";

/// The report as one HTML document.
pub fn to_html(report: &Report) -> String {
    let mut out = String::with_capacity(64 * 1024);
    let title = format!(
        "{} compliance report: {}",
        escape_html(&report.standard),
        escape_html(&report.product)
    );
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    out.push_str(
        "<meta http-equiv=\"Content-Security-Policy\" \
         content=\"default-src 'none'; style-src 'unsafe-inline'\">\n",
    );
    out.push_str(&format!(
        "<title>{title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
    ));
    out.push_str(&format!("<h1>{title}</h1>\n"));
    if report.dev_device {
        out.push_str(&format!(
            "<div class=\"banner\" role=\"alert\">{DEV_WARNING}</div>\n"
        ));
    }
    header(&mut out, report);
    summary(&mut out, report);
    controls(&mut out, report);
    threats(&mut out, &report.threats);
    out.push_str("</body>\n</html>\n");
    out
}

fn header(out: &mut String, report: &Report) {
    let clock = clock_state(report.clock_synchronised);
    let clock = if report.clock_synchronised == Some(true) {
        clock.to_owned()
    } else {
        format!("<span class=\"warn\">{clock}</span>")
    };
    let rows = [
        ("Standard", escape_html(&report.standard)),
        ("Product", escape_html(&report.product)),
        (
            "Device UID",
            format!("<code>{}</code>", escape_html(&report.device_uid)),
        ),
        ("Generated at", escape_html(&report.generated_at)),
        ("Clock", clock),
    ];
    out.push_str("<dl class=\"meta\">\n");
    for (label, value) in rows {
        out.push_str(&format!("<dt>{label}</dt><dd>{value}</dd>\n"));
    }
    out.push_str("</dl>\n");
}

fn summary(out: &mut String, report: &Report) {
    let s = &report.summary;
    let covered = report.threats.iter().filter(|t| t.covered).count();
    let total_threats = report.threats.len();
    out.push_str("<h2>Summary</h2>\n<table class=\"summary\">\n<thead><tr>");
    for (verdict, _) in counts(report) {
        out.push_str(&format!(
            "<th class=\"{}\">{}</th>",
            verdict.as_str(),
            verdict.label()
        ));
    }
    out.push_str("<th>Total</th><th>Threats covered</th></tr></thead>\n<tbody><tr>");
    for (_, n) in counts(report) {
        out.push_str(&format!("<td>{n}</td>"));
    }
    out.push_str(&format!(
        "<td>{}</td><td>{covered} of {total_threats}</td></tr></tbody>\n</table>\n",
        s.total
    ));
}

fn counts(report: &Report) -> [(Verdict, usize); 4] {
    let s = &report.summary;
    [
        (Verdict::Met, s.met),
        (Verdict::NotMet, s.not_met),
        (Verdict::NotApplicable, s.not_applicable),
        (Verdict::Manual, s.manual),
    ]
}

fn controls(out: &mut String, report: &Report) {
    out.push_str("<h2>Controls</h2>\n<table class=\"controls\">\n<thead><tr>");
    for h in [
        "Code", "Control", "Modal", "Verdict", "Evidence", "Reason", "Tests", "Threats",
    ] {
        out.push_str(&format!("<th>{h}</th>"));
    }
    out.push_str("</tr></thead>\n");
    for dimension in Dimension::ALL {
        out.push_str(&format!(
            "<tbody>\n<tr><th class=\"group\" colspan=\"8\">{}</th></tr>\n",
            dimension.title()
        ));
        for c in report.controls.iter().filter(|c| c.dimension == dimension) {
            control_row(out, c);
        }
        out.push_str("</tbody>\n");
    }
    out.push_str("</table>\n");
}

fn control_row(out: &mut String, c: &ControlResult) {
    let evidence = list(c.evidence.iter().map(|e| {
        format!(
            "<b>{}</b>: {}",
            escape_html(&e.label),
            escape_html(&e.value)
        )
    }));
    let reason = c.reason.as_deref().map(escape_html).unwrap_or_default();
    let tests = list(
        c.tests
            .iter()
            .map(|t| format!("<code>{}</code>", escape_html(t))),
    );
    let code = escape_html(&c.code);
    let title = escape_html(&c.title);
    let sub_area = escape_html(&c.sub_area);
    let modal = c.modal.as_str();
    let verdict = verdict_cell(c.verdict);
    let threats = codes(&c.threats);
    out.push_str(&format!(
        "<tr id=\"{code}\"><td><code>{code}</code></td>\
         <td>{title}<br><span class=\"sub\">{sub_area}</span></td><td>{modal}</td>{verdict}\
         <td>{evidence}</td><td>{reason}</td><td>{tests}</td><td>{threats}</td></tr>\n"
    ));
}

fn verdict_cell(verdict: Verdict) -> String {
    let symbol = match verdict {
        Verdict::Met => "\u{2714}",
        Verdict::NotMet => "\u{2718}",
        Verdict::NotApplicable => "\u{2013}",
        Verdict::Manual => "?",
    };
    format!(
        "<td class=\"verdict {}\">{symbol} {}</td>",
        verdict.as_str(),
        verdict.label()
    )
}

fn threats(out: &mut String, threats: &[ThreatResult]) {
    out.push_str("<h2>Threats (Annex A)</h2>\n<table class=\"threats\">\n<thead><tr>");
    for h in ["Code", "Threat", "Covered", "Controls", "Met", "Not met"] {
        out.push_str(&format!("<th>{h}</th>"));
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for t in threats {
        let covered = if t.covered {
            "<td class=\"verdict met\">\u{2714} yes</td>"
        } else {
            "<td class=\"verdict not-met\">\u{2718} NO</td>"
        };
        out.push_str(&format!(
            "<tr><td><code>{}</code></td><td>{}</td>{covered}<td>{}</td><td>{}</td><td>{}</td></tr>\n",
            escape_html(&t.code),
            escape_html(&t.name),
            codes(&t.controls),
            codes(&t.met),
            codes(&t.not_met),
        ));
    }
    out.push_str("</tbody>\n</table>\n");
}

/// Items as a list, or a "none" marker so an empty cell is visibly empty.
fn list(items: impl Iterator<Item = String>) -> String {
    let items: Vec<String> = items.map(|i| format!("<li>{i}</li>")).collect();
    if items.is_empty() {
        "<span class=\"none\">none</span>".to_owned()
    } else {
        format!("<ul>{}</ul>", items.concat())
    }
}

fn codes(items: &[String]) -> String {
    items
        .iter()
        .map(|i| format!("<code>{}</code>", escape_html(i)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Escapes text for HTML element content and quoted attribute values: `&`, `<`, `>`, `"` and
/// `'` become character references.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue;
    use crate::report::Finding;
    use crate::report::fixtures::{all_met, meta, mixed};

    #[test]
    fn escape_html_escapes_the_five_special_characters() {
        assert_eq!(escape_html("<>&\"'"), "&lt;&gt;&amp;&quot;&#39;");
        assert_eq!(escape_html("a < b && c"), "a &lt; b &amp;&amp; c");
        assert_eq!(escape_html("&amp;"), "&amp;amp;");
        assert_eq!(escape_html("plain \u{e9}t\u{e9}"), "plain \u{e9}t\u{e9}");
        assert_eq!(escape_html(""), "");
    }

    #[test]
    fn lists_all_44_controls_and_32_threats() {
        let html = to_html(&mixed());
        for c in catalogue::controls() {
            assert!(html.contains(&format!("<tr id=\"{0}\"><td><code>{0}</code>", c.code)));
        }
        for t in catalogue::threats() {
            assert!(
                html.contains(&format!("<tr><td><code>{}</code>", t.code)),
                "{}",
                t.code
            );
        }
        for d in Dimension::ALL {
            assert!(html.contains(&format!("colspan=\"8\">{}</th>", d.title())));
        }
    }

    #[test]
    fn escapes_script_injected_in_evidence_and_reason() {
        let findings = all_met()
            .into_iter()
            .map(|f| match f.code.as_str() {
                "DS-2-1" => Finding::new("DS-2-1", Verdict::NotMet)
                    .evidence("<script>alert(1)</script>", "x\" onmouseover='alert(2)'")
                    .reason("<img src=x onerror=alert(3)>"),
                _ => f,
            })
            .collect();
        let mut m = meta();
        m.device_uid = "</code><script>alert(4)</script>".to_owned();
        let html = to_html(&Report::build(m, findings).unwrap());
        assert!(!html.contains("<script"));
        assert!(!html.contains("<img"));
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("x&quot; onmouseover=&#39;alert(2)&#39;"));
        assert!(html.contains("&lt;img src=x onerror=alert(3)&gt;"));
    }

    #[test]
    fn is_self_contained() {
        let html = to_html(&mixed());
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert_eq!(html.matches("<style>").count(), 1);
        for forbidden in [
            "<script", "<link", "<img", "<iframe", "src=", "href=", "url(", "@import",
        ] {
            assert!(!html.contains(forbidden), "{forbidden}");
        }
        assert!(html.contains("default-src 'none'"));
    }

    #[test]
    fn shows_verdicts_as_text_and_colour() {
        let html = to_html(&mixed());
        assert!(html.contains("<td class=\"verdict not-met\">\u{2718} Not met</td>"));
        assert!(html.contains("<td class=\"verdict manual\">? Manual check</td>"));
        assert!(html.contains("<td class=\"verdict not-applicable\">\u{2013} Not applicable</td>"));
        assert_eq!(
            html.matches("<td class=\"verdict met\">\u{2714} Met</td>")
                .count(),
            41
        );
        // ST-G-1 depends on PL-3-1 alone, which is not met.
        assert!(html.contains("<tr><td><code>ST-G-1</code></td><td>Denial of Service (DoS) attack</td><td class=\"verdict not-met\">\u{2718} NO</td>"));
        assert!(html.contains("telnet is enabled"));
        assert!(html.contains("<b>listening</b>: tcp/23 telnetd"));
    }

    #[test]
    fn header_shows_dev_banner_and_clock_state() {
        let mut report = mixed();
        let html = to_html(&report);
        assert!(!html.contains("class=\"banner\""));
        assert!(html.contains("<dt>Clock</dt><dd>synchronised</dd>"));
        assert!(html.contains("<dt>Device UID</dt><dd><code>KWL-0001</code></dd>"));
        assert!(html.contains("<dt>Generated at</dt><dd>2025-01-02T03:04:05Z</dd>"));
        assert!(
            html.contains("<td>41</td><td>1</td><td>1</td><td>1</td><td>44</td><td>31 of 32</td>")
        );
        report.dev_device = true;
        report.clock_synchronised = Some(false);
        let html = to_html(&report);
        assert!(html.contains("<div class=\"banner\" role=\"alert\">Development device"));
        assert!(html.contains("<span class=\"warn\">NOT synchronised"));
    }
}
