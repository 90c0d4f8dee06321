//! The prompt library: analysis prompts by scenario, report type and building
//! type, each in a numbered run part, every version kept in PostgreSQL
//! (`migrations/V8__prompt_library.sql`).
//!
//! - [`tree`] reads a prompt tree from disk, refusing a malformed one whole;
//! - [`store`] imports a tree in one transaction (idempotently: an unchanged
//!   prompt adds nothing, a changed one adds a version) and reads the library.
//!
//! A tree is laid out as `<scenario>/<report type>/<building type>/part<N>/<name>.txt`;
//! a prompt whose answer must be JSON is named `<name>.json.txt`. Every name
//! is a lowercase ASCII slug (`design-audit`, `hotel`, `part2`, `findings`),
//! so no two names in a tree can differ only by case, Unicode normalisation
//! or spacing.

pub mod store;
pub mod tree;

use serde::Serialize;

/// Where a prompt belongs in the library: what names it uniquely.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct PromptKey {
    /// e.g. `design-audit`, `employee-interview`.
    pub scenario: String,
    /// e.g. `summary`, `compliance`.
    pub report_type: String,
    /// e.g. `hotel`, `restaurant`, `health-centre`.
    pub building_type: String,
    /// Its run part, from 1: parts run in order, each seeing the earlier parts' answers.
    pub run_part: u32,
    /// Its name within the part.
    pub name: String,
}

impl std::fmt::Display for PromptKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}/{}/part{}/{}",
            self.scenario, self.report_type, self.building_type, self.run_part, self.name
        )
    }
}

impl PromptKey {
    /// Parses `scenario/report/building/partN/name`, the way [`Display`]
    /// writes it (and the way a tree lays it out, without the file suffix).
    ///
    /// [`Display`]: std::fmt::Display
    pub fn parse(text: &str) -> Option<Self> {
        let parts: Vec<&str> = text.split('/').collect();
        let [scenario, report_type, building_type, part, name] = parts.as_slice() else {
            return None;
        };
        let key = PromptKey {
            scenario: scenario.to_string(),
            report_type: report_type.to_string(),
            building_type: building_type.to_string(),
            run_part: tree::run_part(part)?,
            name: name.to_string(),
        };
        [
            &key.scenario,
            &key.report_type,
            &key.building_type,
            &key.name,
        ]
        .iter()
        .all(|n| tree::is_slug(n))
        .then_some(key)
    }
}

/// One version of a prompt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PromptVersion {
    /// The prompt.
    #[serde(flatten)]
    pub key: PromptKey,
    /// `assay.prompt_versions.id`: what findings made with it will name.
    pub version_id: i64,
    /// 1 for the first text, one more for each change.
    pub version: i32,
    /// Whether the answer must be JSON.
    pub json_answer: bool,
    /// The text.
    pub text: String,
    /// SHA-256 of the JSON flag and the text.
    pub content_sha256: String,
    /// When it was imported, RFC 3339.
    pub imported_at: String,
}

/// The content hash of a prompt: SHA-256 of its JSON flag and its text, so
/// marking a prompt JSON (or no longer) is a change too.
pub fn content_sha256(json_answer: bool, text: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(if json_answer { b"json\n" } else { b"text\n" });
    hasher.update(text.as_bytes());
    hex::encode(hasher.finalize())
}
