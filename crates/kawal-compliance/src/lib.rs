//! Compliance with MCMC MTSFB TC G045:2024, the Malaysian IoT device security code.
//!
//! - [`catalogue`]: the code's 44 controls (section 6) and 32 threats (section 5) as static
//!   data, with the Annex A mapping between them, verbatim.
//! - [`report`]: the report model. Evaluators (elsewhere) turn live-device facts into one
//!   [`Finding`] per control; [`Report::build`] checks and completes them.
//! - [`tests_index`]: which workspace tests evidence which control, from `G045:` tags found at
//!   build time.
//! - [`render`]: the report as JSON, Markdown and one self-contained HTML page.
//!
//! Nothing here does I/O: callers gather the facts and write the rendered output.
//!
//! ```
//! use kawal_compliance::{Finding, Report, ReportMeta, Verdict, catalogue, render};
//!
//! # fn main() -> kawal_compliance::Result<()> {
//! let meta = ReportMeta {
//!     product: "kawal 0.1.0".into(),
//!     device_uid: "KWL-0001".into(),
//!     dev_device: false,
//!     generated_at: "2025-01-02T03:04:05Z".into(),
//!     clock_synchronised: Some(true),
//! };
//! // One finding per control, from the evaluators.
//! let findings = catalogue::controls()
//!     .iter()
//!     .map(|c| match c.code {
//!         "PH-2-1" => Finding::new(c.code, Verdict::Manual).reason("inspect the enclosure seal"),
//!         _ => Finding::new(c.code, Verdict::Met).evidence("checked", "yes"),
//!     })
//!     .collect();
//! let report = Report::build(meta, findings)?;
//! assert_eq!(report.summary.manual, 1);
//! let html = render::to_html(&report);
//! assert!(html.contains("PH-2-1"));
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

pub mod catalogue;
pub mod render;
pub mod report;
pub mod tests_index;

mod error;
#[cfg(test)]
mod tag_parser;

pub use catalogue::{Control, Dimension, Modal, Threat};
pub use error::{Error, Result};
pub use report::{Evidence, Finding, Report, ReportMeta, Verdict};
