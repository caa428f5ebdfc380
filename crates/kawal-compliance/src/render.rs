//! Renderers for a [`Report`](crate::report::Report): JSON for machines, Markdown for review in
//! a repository, and one self-contained HTML file for people to read and print.
//!
//! Every string from the report is escaped for its format: evidence is read from a device an
//! attacker may have touched, so it is never trusted as markup.

pub mod html;
pub mod json;
pub mod markdown;

pub use html::to_html;
pub use json::to_json;
pub use markdown::to_markdown;

/// The report's clock state, for people.
fn clock_state(synchronised: Option<bool>) -> &'static str {
    match synchronised {
        Some(true) => "synchronised",
        Some(false) => "NOT synchronised: timestamps may be unreliable",
        None => "unknown",
    }
}

/// The warning printed on a development device's report.
const DEV_WARNING: &str = "Development device: it runs with development keys or settings. \
     This report is not evidence that a production device meets G045.";
