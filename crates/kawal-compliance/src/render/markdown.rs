//! Markdown rendering (GitHub-flavoured tables), for review alongside the code.
//!
//! Free text from the report (evidence, reasons, product, UID) is escaped with [`escape_cell`]:
//! a `|` cannot split a cell, a newline cannot end a row, and no character can start markup,
//! HTML or a link.

use std::fmt::Write as _;

use super::{DEV_WARNING, clock_state};
use crate::catalogue::Dimension;
use crate::report::{ControlResult, Report, Verdict};

const CONTROL_HEADER: [&str; 8] = [
    "Code", "Control", "Modal", "Verdict", "Evidence", "Reason", "Tests", "Threats",
];
const THREAT_HEADER: [&str; 6] = ["Code", "Threat", "Covered", "Controls", "Met", "Not met"];

/// The report as a Markdown document.
pub fn to_markdown(report: &Report) -> String {
    let mut out = String::new();
    let product = escape_cell(&report.product);
    let _ = writeln!(out, "# {} compliance report: {product}\n", report.standard);
    if report.dev_device {
        let _ = writeln!(out, "> **WARNING.** {DEV_WARNING}\n");
    }
    table(
        &mut out,
        &["Item", "Value"],
        [
            vec!["Standard".to_owned(), escape_cell(&report.standard)],
            vec!["Product".to_owned(), product],
            vec!["Device UID".to_owned(), escape_cell(&report.device_uid)],
            vec!["Generated at".to_owned(), escape_cell(&report.generated_at)],
            vec![
                "Clock".to_owned(),
                clock_state(report.clock_synchronised).to_owned(),
            ],
        ],
    );

    let s = &report.summary;
    out.push_str("## Summary\n\n");
    table(
        &mut out,
        &["Met", "Not met", "Not applicable", "Manual", "Total"],
        [vec![
            s.met.to_string(),
            s.not_met.to_string(),
            s.not_applicable.to_string(),
            s.manual.to_string(),
            s.total.to_string(),
        ]],
    );
    let covered = report.threats.iter().filter(|t| t.covered).count();
    let _ = writeln!(
        out,
        "Threats covered by at least one met control: {covered} of {}.\n",
        report.threats.len()
    );

    out.push_str("## Controls\n\n");
    for dimension in Dimension::ALL {
        let rows = report
            .controls
            .iter()
            .filter(|c| c.dimension == dimension)
            .map(control_row);
        let _ = writeln!(out, "### {}\n", dimension.title());
        table(&mut out, &CONTROL_HEADER, rows);
    }

    out.push_str("## Threats (Annex A)\n\n");
    let rows = report.threats.iter().map(|t| {
        vec![
            code(&t.code),
            escape_cell(&t.name),
            if t.covered { "yes" } else { "**NO**" }.to_owned(),
            codes(&t.controls),
            codes(&t.met),
            codes(&t.not_met),
        ]
    });
    table(&mut out, &THREAT_HEADER, rows);
    out
}

fn control_row(c: &ControlResult) -> Vec<String> {
    let verdict = match c.verdict {
        Verdict::Met => "Met".to_owned(),
        other => format!("**{}**", other.label()),
    };
    let evidence: Vec<String> = c
        .evidence
        .iter()
        .map(|e| format!("{}: {}", escape_cell(&e.label), escape_cell(&e.value)))
        .collect();
    vec![
        code(&c.code),
        escape_cell(&c.title),
        c.modal.as_str().to_owned(),
        verdict,
        evidence.join("<br>"),
        c.reason.as_deref().map(escape_cell).unwrap_or_default(),
        c.tests
            .iter()
            .map(|t| code(t))
            .collect::<Vec<_>>()
            .join("<br>"),
        codes(&c.threats),
    ]
}

/// Writes one table; every row must have as many cells as `header`.
fn table(out: &mut String, header: &[&str], rows: impl IntoIterator<Item = Vec<String>>) {
    let _ = writeln!(out, "| {} |", header.join(" | "));
    let _ = writeln!(out, "|{}", "---|".repeat(header.len()));
    for row in rows {
        let _ = writeln!(out, "| {} |", row.join(" | "));
    }
    out.push('\n');
}

/// An identifier we generated (control, threat or test name) as a code span.
fn code(text: &str) -> String {
    format!("`{}`", text.replace('`', "").replace('|', "\\|"))
}

fn codes(items: &[String]) -> String {
    items.iter().map(|i| code(i)).collect::<Vec<_>>().join(" ")
}

/// Escapes free text for a table cell: every ASCII punctuation character that Markdown or GFM
/// gives a meaning (`|`, `\`, `<`, `&`, `[`, `*`, ...) is backslash-escaped, and line breaks
/// become `<br>`.
pub fn escape_cell(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                out.push_str("<br>");
            }
            '\n' => out.push_str("<br>"),
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '&' | '|' | '~' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures::{all_met, meta, mixed};
    use crate::report::{Finding, Report};

    /// `|` not preceded by an odd number of backslashes.
    fn unescaped_pipes(line: &str) -> usize {
        let mut count = 0;
        let mut backslashes = 0;
        for c in line.chars() {
            if c == '|' && backslashes % 2 == 0 {
                count += 1;
            }
            backslashes = if c == '\\' { backslashes + 1 } else { 0 };
        }
        count
    }

    fn hostile() -> Report {
        let findings = all_met()
            .into_iter()
            .map(|f| match f.code.as_str() {
                "AU-1-3" => Finding::new("AU-1-3", Verdict::NotMet)
                    .evidence("a | b", "line1\nline2\r\n<script>alert(1)</script>")
                    .evidence("link", "[x](javascript:alert(1)) \\| `code` ends\\")
                    .reason("broken | table\nrow"),
                _ => f,
            })
            .collect();
        Report::build(meta(), findings).unwrap()
    }

    #[test]
    fn tables_have_the_right_column_counts() {
        for report in [mixed(), hostile()] {
            let md = to_markdown(&report);
            let mut control_rows = 0;
            let mut threat_rows = 0;
            let mut expected = None;
            for line in md.lines() {
                if !line.starts_with('|') {
                    expected = None;
                    continue;
                }
                let pipes = unescaped_pipes(line);
                let want = *expected.get_or_insert(pipes);
                assert_eq!(pipes, want, "row has the wrong cell count: {line}");
                if pipes == CONTROL_HEADER.len() + 1 && line.starts_with("| `") {
                    control_rows += 1;
                }
                if pipes == THREAT_HEADER.len() + 1 && line.starts_with("| `ST-") {
                    threat_rows += 1;
                }
            }
            assert_eq!(control_rows, 44);
            assert_eq!(threat_rows, 32);
        }
    }

    #[test]
    fn escapes_markup_in_free_text() {
        let md = to_markdown(&hostile());
        // Outside the `<br>` we insert, every `<` is escaped: no raw HTML reaches a viewer.
        let without_br = md.replace("<br>", "");
        for (i, _) in without_br.match_indices('<') {
            assert_eq!(without_br.get(i - 1..i), Some("\\"), "raw < at {i}");
        }
        assert!(md.contains("\\<script\\>"));
        assert!(!md.contains("[x]("), "a link survived escaping");
        assert!(md.contains("a \\| b: line1<br>line2<br>\\<script\\>"));
        assert!(md.contains("broken \\| table<br>row"));
        assert!(md.contains("ends\\\\"));
    }

    #[test]
    fn escape_cell_handles_each_special_character() {
        assert_eq!(escape_cell("plain text 1.2"), "plain text 1.2");
        assert_eq!(escape_cell("a|b"), "a\\|b");
        assert_eq!(escape_cell("a\\"), "a\\\\");
        assert_eq!(escape_cell("<&>"), "\\<\\&\\>");
        assert_eq!(escape_cell("x\r\ny\rz\nw"), "x<br>y<br>z<br>w");
        assert_eq!(escape_cell("tab\there\u{7}"), "tab here ");
    }

    #[test]
    fn shows_header_summary_and_dev_warning() {
        let mut report = mixed();
        let md = to_markdown(&report);
        assert!(md.starts_with("# MCMC MTSFB TC G045:2024 compliance report: kawal 0.1.0\n"));
        assert!(md.contains("| Device UID | KWL-0001 |"));
        assert!(md.contains("| 41 | 1 | 1 | 1 | 44 |"));
        assert!(md.contains("| Clock | synchronised |"));
        assert!(md.contains("covered by at least one met control: 31 of 32"));
        assert!(!md.contains("WARNING"));
        report.dev_device = true;
        report.clock_synchronised = None;
        let md = to_markdown(&report);
        assert!(md.contains("> **WARNING.** Development device"));
        assert!(md.contains("| Clock | unknown |"));
        for d in Dimension::ALL {
            assert!(md.contains(&format!("### {}\n", d.title())));
        }
    }
}
