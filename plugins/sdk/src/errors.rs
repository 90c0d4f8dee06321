//! Readable text for the host's errors, for a plugin's own error messages:
//! `PluginError::Failed(format!("…: {}", e.explain()))`. (The generated
//! bindings' `Display` prints the error's debug form.)

use crate::inference::InferenceError;
use crate::sql::SqlError;

/// A host error in words.
pub trait Explain {
    /// What went wrong, in a sentence fragment.
    fn explain(&self) -> String;
}

impl Explain for SqlError {
    fn explain(&self) -> String {
        match self {
            SqlError::Db(db) => format!("database error {}: {}", db.code, db.message),
            SqlError::Denied(m) => format!("denied: {m}"),
            SqlError::Timeout => "timed out".into(),
            SqlError::TooLarge(m) => format!("too large: {m}"),
            SqlError::Unavailable(m) => format!("database unavailable: {m}"),
        }
    }
}

impl Explain for InferenceError {
    fn explain(&self) -> String {
        match self {
            InferenceError::ModelNotAllowed(m) => format!("model not allowed: {m}"),
            InferenceError::BudgetExceeded(b) => format!(
                "a model budget is spent ({:?}: {} of {} used)",
                b.budget, b.used, b.limit
            ),
            InferenceError::Timeout => "the model did not answer in time".into(),
            InferenceError::Unavailable(m) => format!("unavailable: {m}"),
            InferenceError::InvalidRequest(m) => format!("invalid request: {m}"),
            InferenceError::BadResponse(m) => format!("bad response: {m}"),
        }
    }
}
