//! JSON rendering: the [`Report`] model as is, pretty-printed.

use crate::report::Report;
use crate::{Error, Result};

/// The report as pretty-printed JSON, ending with a newline.
///
/// Field names are the model's (`device_uid`, `not_met`); enum values are kebab-case
/// (`"not-met"`, `"device-platform-security"`, `"shall"`).
///
/// # Errors
///
/// [`Error::Json`] if serialisation fails, which the model's types do not allow (a bug).
pub fn to_json(report: &Report) -> Result<String> {
    let mut out = serde_json::to_string_pretty(report).map_err(|source| Error::Json { source })?;
    out.push('\n');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures::mixed;

    #[test]
    fn pretty_json_parses_back_to_the_same_report() {
        let report = mixed();
        let json = to_json(&report).unwrap();
        assert!(json.starts_with("{\n  \"standard\""));
        assert!(json.ends_with("}\n"));
        assert_eq!(serde_json::from_str::<Report>(&json).unwrap(), report);
    }
}
