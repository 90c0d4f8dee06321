//! What the host knows of a plugin, in the host's own types: its identity, its
//! manifest, the documents it is given and the findings it returns.
//!
//! These are not the types `bindgen!` generates for any one WIT version: every
//! supported version converts to and from them at its edge
//! ([`super::wit`]), so the pipeline, the registry and the store never change
//! when a new version of the contract is added.

/// Which plugin version a call belongs to; attached to its logs and findings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginIdentity {
    /// Name from the manifest.
    pub name: String,
    /// Version string from the manifest.
    pub version: String,
    /// SHA-256 of the component bytes, lowercase hex.
    pub sha256: String,
}

/// The two stages of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    /// Transforms the document, one plugin after another.
    Prompt,
    /// Reports findings on the prepared document, concurrently.
    Analysis,
}

impl Stage {
    /// `prompt` or `analysis`, as stored in the database and shown to users.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Prompt => "prompt",
            Stage::Analysis => "analysis",
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One step of a plugin's own schema, applied once under its role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    /// Position in the plugin's history, from 1.
    pub version: u32,
    /// One line saying what it does.
    pub description: String,
    /// One SQL statement.
    pub statement: String,
}

/// What a plugin says about itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// Unique name; part of database names.
    pub name: String,
    /// Version string.
    pub version: String,
    /// One line.
    pub description: String,
    /// The stage it runs in.
    pub stage: Stage,
    /// Order within the prompt stage: lower runs first.
    pub priority: i32,
    /// Document kinds it handles; empty means all.
    pub kinds: Vec<String>,
    /// Patterns of which one must match the text; empty means always.
    pub triggers: Vec<String>,
    /// Its schema's migrations.
    pub migrations: Vec<Migration>,
}

/// A document as a plugin sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// `assay.documents.id`.
    pub id: String,
    /// Kind (`chat`, `transcript`, …).
    pub kind: String,
    /// The text.
    pub text: String,
    /// A JSON object.
    pub metadata: String,
}

/// A byte range of the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// First byte.
    pub start: u32,
    /// One past the last byte.
    pub end: u32,
}

/// Something a plugin found, as it returned it (checked by the pipeline).
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// What it is.
    pub label: String,
    /// How strong, if it says.
    pub score: Option<f64>,
    /// Where in the text, if anywhere.
    pub span: Option<Span>,
    /// Plugin-defined detail, JSON.
    pub data: String,
}

/// An error a plugin returned (as opposed to a trap).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginError {
    /// The document is not something it can work on.
    InvalidInput(String),
    /// It could not do its work.
    Failed(String),
}

/// What a successful call returned.
#[derive(Debug)]
pub enum CallOutput {
    /// An analysis plugin's findings.
    Findings(Vec<Finding>),
    /// A prompt plugin's transformed document and findings.
    Processed(Document, Vec<Finding>),
}

/// What [`valid_kind`] accepts, for messages refusing a kind.
pub const KIND_RULE: &str =
    "use up to 64 letters, digits, `_`, `.`, `:` or `-`, starting with a letter or digit";

/// Whether `kind` is acceptable (it is stored and matched against manifests).
pub fn valid_kind(kind: &str) -> bool {
    let mut chars = kind.chars();
    kind.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'))
}
