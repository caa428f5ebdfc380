//! The catalogue against the code itself: parses the tables of `shared/spec/G045-2024.md`
//! (section 5 threats, section 6 controls, Annex A mapping) and compares every entry.
//!
//! The spec lives outside the repository, in the folder that holds it. A missing spec fails
//! these tests: a catalogue that cannot be checked is not assumed correct.

use std::collections::HashSet;

use kawal_compliance::catalogue::{self, Dimension, Modal, ModalSource};

const SPEC: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/spec/G045-2024.md"
);

/// Annex A titles that differ from section 6 by more than a trailing full stop, as printed.
const ANNEX_TITLE_VARIANTS: &[(&str, &str)] = &[(
    "AU-3-1",
    // Section 6 spells the abbreviation out: "The Unique Identifier (UID) of each ...".
    "The UID of each hardware device shall be retained.",
)];

struct Spec {
    /// `(code, name, description)` from Tables 1 and 2.
    threats: Vec<[String; 3]>,
    /// Section 6 rows.
    controls: Vec<ControlRow>,
    /// `(code, title, threats)` from Annex A, threat codes normalised.
    annex: Vec<(String, String, Vec<String>)>,
}

struct ControlRow {
    code: String,
    title: String,
    description: String,
    /// The `6.n` heading above the row.
    dimension: String,
    /// The `6.n.m` heading above the row, or the dimension where there is none (6.2).
    sub_area: String,
}

/// Reads and parses the spec; the error says what is missing.
fn load() -> Result<Spec, String> {
    let text = std::fs::read_to_string(SPEC).map_err(|e| {
        format!(
            "cannot read the G045:2024 spec at {SPEC} ({e}). The catalogue is checked against \
             it; put the spec at shared/spec/G045-2024.md next to the repository."
        )
    })?;
    parse(&text)
}

/// A heading line without its `#` and `**` decoration; `None` for other lines.
fn heading(line: &str) -> Option<&str> {
    let t = line.trim();
    let is_heading = t.starts_with('#') || (t.starts_with("**") && t.ends_with("**"));
    is_heading.then(|| t.trim_start_matches('#').trim().trim_matches('*').trim())
}

fn position(
    lines: &[&str],
    from: usize,
    what: &str,
    test: impl Fn(&str) -> bool,
) -> Result<usize, String> {
    lines
        .iter()
        .skip(from)
        .position(|l| test(l))
        .map(|p| p + from)
        .ok_or_else(|| format!("spec has no {what} line; has its layout changed?"))
}

/// `[a, b, c]` when `field` is three `-`-separated parts.
fn parts(field: &str) -> Option<[&str; 3]> {
    let mut p = field.split('-');
    match (p.next(), p.next(), p.next(), p.next()) {
        (Some(a), Some(b), Some(c), None) => Some([a, b, c]),
        _ => None,
    }
}

fn is_number(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_digit())
}

/// `AU-1-3`, `PH-2-1`, ...
fn is_control_code(field: &str) -> bool {
    parts(field).is_some_and(|[area, group, item]| {
        ["AU", "CR", "DS", "PL", "PH"].contains(&area) && is_number(group) && is_number(item)
    })
}

/// `ST-D-1` to `ST-G-3`.
fn is_threat_code(field: &str) -> bool {
    parts(field)
        .is_some_and(|[st, kind, n]| st == "ST" && (kind == "D" || kind == "G") && is_number(n))
}

fn parse(text: &str) -> Result<Spec, String> {
    let lines: Vec<&str> = text.lines().collect();
    let s5 = position(&lines, 0, "section 5 heading", |l| {
        heading(l).is_some_and(|h| h.starts_with("5. ") && h.contains("security threats"))
    })?;
    let s6 = position(&lines, s5, "section 6 heading", |l| {
        heading(l) == Some("6. Security requirements")
    })?;
    let annex = position(&lines, s6, "Annex A heading", |l| {
        heading(l) == Some("Annex A")
    })?;
    let end = position(&lines, annex, "Acknowledgements heading", |l| {
        heading(l) == Some("Acknowledgements")
    })?;

    let threats = lines[s5..s6]
        .iter()
        .map(|l| l.split('\t').map(str::trim).collect::<Vec<_>>())
        .filter(|f| is_threat_code(f[0]))
        .map(|f| {
            assert_eq!(f.len(), 3, "threat row {f:?} does not have 3 columns");
            [f[0].to_owned(), f[1].to_owned(), f[2].to_owned()]
        })
        .collect();

    let mut controls = Vec::new();
    let (mut dimension, mut sub_area) = (String::new(), String::new());
    for line in &lines[s6..annex] {
        if let Some(h) = heading(line).and_then(|h| h.strip_prefix("6.")) {
            let (number, title) = h.split_once(' ').unwrap_or((h, ""));
            if number.contains('.') {
                sub_area = title.to_owned();
            } else {
                dimension = title.to_owned();
                sub_area = title.to_owned();
            }
            continue;
        }
        let f: Vec<&str> = line.split('\t').map(str::trim).collect();
        if is_control_code(f[0]) {
            assert_eq!(f.len(), 3, "control row {f:?} does not have 3 columns");
            controls.push(ControlRow {
                code: f[0].to_owned(),
                title: f[1].to_owned(),
                description: f[2].to_owned(),
                dimension: dimension.clone(),
                sub_area: sub_area.clone(),
            });
        }
    }

    let annex = lines[annex..end]
        .iter()
        .map(|l| l.split('\t').map(str::trim).collect::<Vec<_>>())
        .filter(|f| is_control_code(f[0]))
        .map(|f| {
            assert!(f.len() >= 3, "Annex A row {f:?} has no threat column");
            let threats = f[2..]
                .iter()
                .flat_map(|cell| cell.split_whitespace())
                .map(|t| t.trim_end_matches('.'))
                .filter(|t| *t != "NA")
                .inspect(|t| assert!(is_threat_code(t), "Annex A row {f:?}: bad threat {t:?}"))
                .map(str::to_owned)
                .collect();
            (f[0].to_owned(), f[1].to_owned(), threats)
        })
        .collect();
    Ok(Spec {
        threats,
        controls,
        annex,
    })
}

#[test]
fn spec_has_44_controls_and_32_threats_and_so_has_the_catalogue() {
    let spec = load().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(spec.controls.len(), 44, "section 6 control rows");
    assert_eq!(spec.annex.len(), 44, "Annex A rows");
    assert_eq!(spec.threats.len(), 32, "section 5 threat rows");
    assert_eq!(catalogue::controls().len(), 44);
    assert_eq!(catalogue::threats().len(), 32);
    let unique: HashSet<_> = spec.controls.iter().map(|c| &c.code).collect();
    assert_eq!(unique.len(), 44, "section 6 repeats a code");
}

#[test]
fn threats_match_section_5() {
    let spec = load().unwrap_or_else(|e| panic!("{e}"));
    let codes: Vec<_> = spec.threats.iter().map(|t| t[0].as_str()).collect();
    let ours: Vec<_> = catalogue::threats().iter().map(|t| t.code).collect();
    assert_eq!(ours, codes, "threat codes or their order differ");
    for [code, name, description] in &spec.threats {
        let t = catalogue::threat(code).unwrap();
        assert_eq!(t.name, name, "{code} name");
        assert_eq!(t.description, description, "{code} description");
    }
}

#[test]
fn controls_match_section_6() {
    let spec = load().unwrap_or_else(|e| panic!("{e}"));
    let codes: Vec<_> = spec.controls.iter().map(|c| c.code.as_str()).collect();
    let ours: Vec<_> = catalogue::controls().iter().map(|c| c.code).collect();
    assert_eq!(ours, codes, "control codes or their order differ");
    for row in &spec.controls {
        let c = catalogue::control(&row.code).unwrap();
        assert_eq!(c.title, row.title, "{} title", row.code);
        assert_eq!(c.description, row.description, "{} description", row.code);
        assert_eq!(c.dimension.title(), row.dimension, "{} dimension", row.code);
        assert_eq!(c.sub_area, row.sub_area, "{} sub-area", row.code);
    }
    let dimensions: HashSet<_> = spec.controls.iter().map(|c| c.dimension.as_str()).collect();
    let ours: HashSet<_> = Dimension::ALL.iter().map(|d| d.title()).collect();
    assert_eq!(dimensions, ours);
}

/// The first `shall` or `should` in the text, as a whole word.
fn first_modal(text: &str) -> Option<Modal> {
    text.to_lowercase()
        .split(|c: char| !c.is_ascii_alphabetic())
        .find_map(|w| match w {
            "shall" => Some(Modal::Shall),
            "should" => Some(Modal::Should),
            _ => None,
        })
}

#[test]
fn modal_is_the_titles_verb_else_the_descriptions() {
    let spec = load().unwrap_or_else(|e| panic!("{e}"));
    for row in &spec.controls {
        let c = catalogue::control(&row.code).unwrap();
        match (first_modal(&row.title), first_modal(&row.description)) {
            (Some(m), _) => {
                assert_eq!(
                    (c.modal, c.modal_source),
                    (m, ModalSource::Title),
                    "{}",
                    row.code
                );
            }
            (None, Some(m)) => {
                let got = (c.modal, c.modal_source);
                assert_eq!(got, (m, ModalSource::Description), "{}", row.code);
            }
            (None, None) => {
                assert_eq!(c.modal_source, ModalSource::Inferred, "{}", row.code);
                assert!(c.modal_note().is_some(), "{} needs a note", row.code);
            }
        }
    }
}

#[test]
fn threat_mapping_matches_annex_a() {
    let spec = load().unwrap_or_else(|e| panic!("{e}"));
    let codes: Vec<_> = spec.annex.iter().map(|a| a.0.as_str()).collect();
    let ours: Vec<_> = catalogue::controls().iter().map(|c| c.code).collect();
    assert_eq!(ours, codes, "Annex A codes or their order differ");
    for (code, title, threats) in &spec.annex {
        let c = catalogue::control(code).unwrap();
        assert_eq!(c.threats, threats.as_slice(), "{code} threats");
        let variant = ANNEX_TITLE_VARIANTS
            .iter()
            .find(|(v, _)| v == code)
            .map(|v| v.1);
        let same = c.title.trim_end_matches('.') == title.trim_end_matches('.');
        assert!(
            same || variant == Some(title),
            "{code}: Annex A title {title:?}"
        );
        for t in threats {
            assert!(catalogue::threat(t).is_some(), "{code} maps unknown {t}");
        }
    }
}

#[test]
fn inverse_mapping_agrees_with_annex_a() {
    let spec = load().unwrap_or_else(|e| panic!("{e}"));
    for t in catalogue::threats() {
        let from_spec: Vec<_> = spec
            .annex
            .iter()
            .filter(|a| a.2.iter().any(|x| x == t.code))
            .map(|a| a.0.as_str())
            .collect();
        let ours: Vec<_> = catalogue::controls_for_threat(t.code)
            .iter()
            .map(|c| c.code)
            .collect();
        assert_eq!(ours, from_spec, "{}", t.code);
    }
}
