//! Which workspace tests evidence which control, indexed at build time.
//!
//! `build.rs` reads every `crates/*/src/**/*.rs` and `crates/*/tests/**/*.rs` file of the
//! workspace. A test backs a control when a `//` or `///` line in the comments and attributes
//! directly above its `#[test]` or `#[tokio::test]` function carries a tag, written as
//!
//! ```text
//! /// G045: AU-1-3, AU-2-3
//! ```
//!
//! or when the function's name holds the code in snake form (`locks_account_au_1_3`).
//! `#[ignore]`d tests are left out. A test is named `"<crate dir>::<file stem>::<fn name>"`,
//! e.g. `"kawal-audit::chain::detects_reordered_records"`. Tag only tests that truly exercise
//! the control: the report prints these names as the evidence behind a verdict.

include!(concat!(env!("OUT_DIR"), "/tests_index.rs"));

/// The tests tagged with `code` (e.g. `"PL-4-2"`), sorted; empty when none is.
pub fn tests_for(code: &str) -> &'static [&'static str] {
    INDEX
        .iter()
        .find(|(c, _)| *c == code)
        .map_or(&[], |(_, tests)| *tests)
}

/// Every code that has at least one test, for checking tags against the catalogue.
#[cfg(test)]
fn indexed_codes() -> impl Iterator<Item = &'static str> {
    INDEX.iter().map(|(c, _)| *c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue;

    #[test]
    fn every_tagged_code_is_a_catalogue_control() {
        for code in indexed_codes() {
            assert!(
                catalogue::control(code).is_some(),
                "a test is tagged with {code}, which is not a G045 control (tests: {:?})",
                tests_for(code)
            );
        }
    }

    #[test]
    fn unknown_code_has_no_tests() {
        assert!(tests_for("XX-0-0").is_empty());
        assert!(tests_for("").is_empty());
    }

    #[test]
    fn index_is_sorted_and_names_tests_by_crate_file_and_fn() {
        let codes: Vec<_> = indexed_codes().collect();
        assert!(codes.is_sorted());
        for code in codes {
            let tests = tests_for(code);
            assert!(!tests.is_empty());
            assert!(tests.is_sorted());
            for t in tests {
                assert_eq!(t.split("::").count(), 3, "{t}");
            }
        }
    }
}
