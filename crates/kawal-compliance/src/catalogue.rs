//! The MCMC MTSFB TC G045:2024 catalogue as static data: the 44 controls of section 6 and the
//! 32 threats of section 5, linked by the Annex A mapping.
//!
//! The text is copied verbatim from the code (typos included), so that a report quotes what an
//! assessor reads. `tests/catalogue_matches_spec.rs` parses the code's own tables and fails if
//! any code, title, description or mapping here drifts from it.
//!
//! Normalisation applied to Annex A: trailing full stops on threat codes (`ST-D-6.`, `ST-G-2.`)
//! are dropped, and `NA` or an empty cell means "no threat in this column".

use serde::{Deserialize, Serialize};

mod controls;
mod threats;

/// One of the five security dimensions of section 1 (and sections 6.1 to 6.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Dimension {
    /// 6.1, controls `AU-*`.
    Authentication,
    /// 6.2, controls `CR-*`.
    Cryptography,
    /// 6.3, controls `DS-*`.
    DataSecurity,
    /// 6.4, controls `PL-*`.
    DevicePlatformSecurity,
    /// 6.5, controls `PH-*`.
    PhysicalSecurity,
}

impl Dimension {
    /// All dimensions, in the order of section 6.
    pub const ALL: [Dimension; 5] = [
        Dimension::Authentication,
        Dimension::Cryptography,
        Dimension::DataSecurity,
        Dimension::DevicePlatformSecurity,
        Dimension::PhysicalSecurity,
    ];

    /// The dimension's title as section 6 writes it, e.g. `"Data security"`.
    pub fn title(self) -> &'static str {
        match self {
            Dimension::Authentication => "Authentication",
            Dimension::Cryptography => "Cryptography",
            Dimension::DataSecurity => "Data security",
            Dimension::DevicePlatformSecurity => "Device platform security",
            Dimension::PhysicalSecurity => "Physical security",
        }
    }
}

/// Whether a control is a requirement (`shall`) or a recommendation (`should`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Modal {
    /// A requirement.
    Shall,
    /// A recommendation.
    Should,
}

impl Modal {
    /// `"shall"` or `"should"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Modal::Shall => "shall",
            Modal::Should => "should",
        }
    }
}

/// Where a control's [`Modal`] was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModalSource {
    /// The control's title uses the verb ("Data transmitted shall be encrypted.").
    Title,
    /// The title has no modal verb ("Timestamp."); this is the first one in its description.
    Description,
    /// Neither title nor description has a modal verb; kawal's reading, stated in
    /// [`Control::modal_note`].
    Inferred,
}

/// One control of section 6, with its Annex A threat mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Control {
    /// The control's code, e.g. `"AU-1-3"`.
    pub code: &'static str,
    /// The security dimension (6.1 to 6.5).
    pub dimension: Dimension,
    /// The sub-area heading, e.g. `"User authentication"` (for 6.2, which has none, the
    /// dimension's title).
    pub sub_area: &'static str,
    /// The control's title, verbatim from the section 6 table.
    pub title: &'static str,
    /// The control's description, verbatim from the section 6 table.
    pub description: &'static str,
    /// `shall` or `should`, as the title uses it (see [`Control::modal_source`]).
    pub modal: Modal,
    /// Where [`Control::modal`] was read from.
    pub modal_source: ModalSource,
    /// The threats Annex A maps to this control: `ST-D-*` codes first, then `ST-G-*`.
    pub threats: &'static [&'static str],
}

impl Control {
    /// Why kawal reads the modal it does, when the code itself does not say
    /// ([`ModalSource::Inferred`]); `None` otherwise.
    pub fn modal_note(&self) -> Option<&'static str> {
        match (self.modal_source, self.code) {
            (ModalSource::Inferred, "AU-1-9") => Some(
                "no modal verb in title or description; the description presents certificates \
                 as the more secure option that \"may not suit all business use cases\": \
                 read as a recommendation (should)",
            ),
            (ModalSource::Inferred, "DS-1-5") => Some(
                "title and description are in the imperative mood, which ISO/IEC Directives \
                 Part 2 allows for requirements: read as a requirement (shall)",
            ),
            (ModalSource::Inferred, _) => Some("no modal verb in title or description"),
            _ => None,
        }
    }
}

/// One threat or vulnerability of section 5 (Table 1 for devices, Table 2 for gateways).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Threat {
    /// The threat's code, `"ST-D-1"` to `"ST-D-29"` or `"ST-G-1"` to `"ST-G-3"`.
    pub code: &'static str,
    /// The threat's name, e.g. `"Replay attack"`.
    pub name: &'static str,
    /// The threat's description, verbatim from section 5.
    pub description: &'static str,
}

/// The 44 controls, in the order of section 6.
pub fn controls() -> &'static [Control] {
    controls::CONTROLS
}

/// The 32 threats: `ST-D-1` to `ST-D-29`, then `ST-G-1` to `ST-G-3`.
pub fn threats() -> &'static [Threat] {
    threats::THREATS
}

/// The control with this code (exact match, e.g. `"PL-4-3"`).
pub fn control(code: &str) -> Option<&'static Control> {
    controls::CONTROLS.iter().find(|c| c.code == code)
}

/// The threat with this code (exact match, e.g. `"ST-G-2"`).
pub fn threat(code: &str) -> Option<&'static Threat> {
    threats::THREATS.iter().find(|t| t.code == code)
}

/// The controls Annex A maps to this threat, in the order of section 6; empty for an unknown
/// code.
pub fn controls_for_threat(code: &str) -> Vec<&'static Control> {
    controls::CONTROLS
        .iter()
        .filter(|c| c.threats.contains(&code))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn has_44_controls_and_32_threats() {
        assert_eq!(controls().len(), 44);
        assert_eq!(threats().len(), 32);
        assert_eq!(
            threats()
                .iter()
                .filter(|t| t.code.starts_with("ST-D-"))
                .count(),
            29
        );
        assert_eq!(
            threats()
                .iter()
                .filter(|t| t.code.starts_with("ST-G-"))
                .count(),
            3
        );
    }

    #[test]
    fn codes_are_unique() {
        let c: HashSet<_> = controls().iter().map(|c| c.code).collect();
        assert_eq!(c.len(), controls().len());
        let t: HashSet<_> = threats().iter().map(|t| t.code).collect();
        assert_eq!(t.len(), threats().len());
    }

    #[test]
    fn every_mapped_threat_exists_and_every_threat_is_mapped() {
        for c in controls() {
            assert!(!c.threats.is_empty(), "{} maps no threat", c.code);
            for t in c.threats {
                assert!(threat(t).is_some(), "{} maps unknown threat {t}", c.code);
            }
        }
        for t in threats() {
            assert!(
                !controls_for_threat(t.code).is_empty(),
                "{} has no control",
                t.code
            );
        }
    }

    #[test]
    fn code_prefix_matches_dimension() {
        for c in controls() {
            let prefix = match c.dimension {
                Dimension::Authentication => "AU-",
                Dimension::Cryptography => "CR-",
                Dimension::DataSecurity => "DS-",
                Dimension::DevicePlatformSecurity => "PL-",
                Dimension::PhysicalSecurity => "PH-",
            };
            assert!(c.code.starts_with(prefix), "{} is not {prefix}", c.code);
        }
    }

    #[test]
    fn modal_source_agrees_with_title() {
        for c in controls() {
            let title = format!(" {} ", c.title.to_lowercase());
            let in_title = match (title.contains(" shall "), title.contains(" should ")) {
                (true, false) => Some(Modal::Shall),
                (false, true) => Some(Modal::Should),
                (false, false) => None,
                (true, true) => panic!("{} title has both verbs", c.code),
            };
            match in_title {
                Some(m) => {
                    assert_eq!(c.modal, m, "{}", c.code);
                    assert_eq!(c.modal_source, ModalSource::Title, "{}", c.code);
                }
                None => assert_ne!(c.modal_source, ModalSource::Title, "{}", c.code),
            }
            assert_eq!(
                c.modal_note().is_some(),
                c.modal_source == ModalSource::Inferred,
                "{}",
                c.code
            );
        }
    }

    #[test]
    fn lookups_find_known_codes_and_reject_unknown() {
        assert_eq!(control("PL-4-3").map(|c| c.title), Some("Timestamp."));
        assert_eq!(threat("ST-D-28").map(|t| t.name), Some("Replay attack"));
        assert!(control("PL-4-4").is_none());
        assert!(control("pl-4-3").is_none());
        assert!(threat("ST-G-4").is_none());
        let for_g1: Vec<_> = controls_for_threat("ST-G-1")
            .iter()
            .map(|c| c.code)
            .collect();
        assert_eq!(for_g1, ["PL-3-1"]);
        assert!(controls_for_threat("ST-X-1").is_empty());
    }
}
