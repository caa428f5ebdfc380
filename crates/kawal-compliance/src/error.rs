//! The crate's one error type.
//!
//! Every variant is an API misuse by the caller building a report (an evaluator that skipped,
//! repeated or misnamed a control); none is caused by data read from the device.

use crate::report::Verdict;

/// Errors from building or serialising a compliance report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A finding names a code that is not one of the 44 G045 controls.
    #[error("finding for unknown control {code:?}")]
    UnknownControl {
        /// The code as given.
        code: String,
    },
    /// Two findings name the same control.
    #[error("control {code} has more than one finding")]
    DuplicateControl {
        /// The repeated code.
        code: String,
    },
    /// Some controls have no finding: a report covers all 44 or none.
    #[error("no finding for control(s) {}", codes.join(", "))]
    MissingControls {
        /// The missing codes, in catalogue order.
        codes: Vec<String>,
    },
    /// A `not-met` or `manual` verdict without a (non-blank) reason.
    #[error("control {code} is {verdict} but gives no reason")]
    MissingReason {
        /// The control's code.
        code: String,
        /// The verdict that requires a reason.
        verdict: Verdict,
    },
    /// The report could not be serialised to JSON (a bug: the model has no map with non-string
    /// keys and no fallible `Serialize`).
    #[error("report serialisation to JSON failed")]
    Json {
        /// The serialiser's error.
        #[source]
        source: serde_json::Error,
    },
}

/// Result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
