//! The inference capability's own types: what its core (policy, backends,
//! checks) speaks, whatever contract version a plugin was built against.
//! Each version converts at its edge ([`super::host`]).

use serde::{Deserialize, Serialize};

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions.
    System,
    /// The asker.
    User,
    /// The model.
    Assistant,
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Hash)]
pub struct Message {
    /// Who wrote it.
    pub role: Role,
    /// What it says.
    pub content: String,
}

/// What an answer must be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "snake_case", tag = "type", content = "schema")]
pub enum ResponseFormat {
    /// Any text.
    Text,
    /// A JSON value.
    Json,
    /// A JSON value matching this schema (JSON text).
    JsonSchema(String),
}

/// A completion request as a plugin made it.
#[derive(Debug, Clone, PartialEq)]
pub struct CompletionRequest {
    /// The conversation.
    pub messages: Vec<Message>,
    /// The model asked for, if any.
    pub model: Option<String>,
    /// The most output tokens asked for, if any.
    pub max_tokens: Option<u32>,
    /// Sampling temperature, if any.
    pub temperature: Option<f32>,
    /// Stop sequences.
    pub stop: Vec<String>,
    /// What the answer must be.
    pub format: ResponseFormat,
    /// Whether a cached answer will do.
    pub cache: bool,
}

/// A request the policy accepted: everything the backend sends is fixed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResolvedRequest {
    /// The model to ask.
    pub model: String,
    /// The conversation.
    pub messages: Vec<Message>,
    /// Output tokens.
    pub max_tokens: u32,
    /// Sampling temperature, if any.
    pub temperature: Option<f32>,
    /// Stop sequences.
    pub stop: Vec<String>,
    /// What the answer must be.
    pub format: ResponseFormat,
}

/// Why the model stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// It finished.
    Stop,
    /// It reached the output limit.
    Length,
    /// The server withheld or cut the answer.
    ContentFilter,
    /// Anything else.
    Other,
}

impl FinishReason {
    /// From an OpenAI-compatible `finish_reason`.
    pub fn from_protocol(reason: Option<&str>) -> Self {
        match reason {
            Some("stop") => FinishReason::Stop,
            Some("length") => FinishReason::Length,
            Some("content_filter") => FinishReason::ContentFilter,
            _ => FinishReason::Other,
        }
    }
}

/// Tokens a request used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Input (prompt) tokens.
    pub input_tokens: u64,
    /// Output (completion) tokens.
    pub output_tokens: u64,
    /// Input tokens the server had cached.
    pub cached_tokens: u64,
}

impl Usage {
    /// Input and output tokens: what budgets count.
    pub fn total(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, other: Usage) {
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.cached_tokens = self.cached_tokens.saturating_add(other.cached_tokens);
    }
}

/// A model's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    /// The text.
    pub text: String,
    /// The model that answered.
    pub model: String,
    /// Why it stopped.
    pub finish_reason: FinishReason,
    /// What it used (zero from the cache).
    pub usage: Usage,
    /// Whether it came from the cache.
    #[serde(skip)]
    pub from_cache: bool,
}

/// Vectors for texts.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    /// The model that embedded.
    pub model: String,
    /// One vector per text.
    pub vectors: Vec<Vec<f32>>,
    /// What it used.
    pub usage: Usage,
}

/// A budget a request would exceed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// Requests per call.
    RequestsPerCall,
    /// Tokens per clock hour.
    TokensPerHour,
    /// Tokens per day.
    TokensPerDay,
}

impl Budget {
    /// The setting that sets it.
    pub fn setting(self) -> &'static str {
        match self {
            Budget::RequestsPerCall => "requests_per_call",
            Budget::TokensPerHour => "tokens_per_hour",
            Budget::TokensPerDay => "tokens_per_day",
        }
    }
}

/// What was exceeded, by how much, and when it starts again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetExceeded {
    /// Which budget.
    pub budget: Budget,
    /// Its limit.
    pub limit: u64,
    /// What is used of it.
    pub used: u64,
    /// When it resets, in milliseconds since the epoch (none per call).
    pub resets_at_ms: Option<i64>,
}

/// Why a request failed, as the plugin sees it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InferenceError {
    /// The model is not allowed for the plugin.
    #[error("model not allowed: {0}")]
    ModelNotAllowed(String),
    /// A budget is spent.
    #[error("budget exceeded: {} ({} of {} used)", .0.budget.setting(), .0.used, .0.limit)]
    BudgetExceeded(BudgetExceeded),
    /// No answer before the deadline.
    #[error("the model did not answer before the call's deadline")]
    Timeout,
    /// No backend, or it cannot serve now.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The request is not acceptable.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The server's answer was unusable.
    #[error("bad response: {0}")]
    BadResponse(String),
}

/// Every outcome a request is recorded with (`assay.inference_requests.outcome`).
pub const OUTCOMES: &[&str] = &[
    "ok",
    "model_not_allowed",
    "budget_exceeded",
    "timeout",
    "unavailable",
    "invalid_request",
    "bad_response",
];

impl InferenceError {
    /// The outcome recorded for a request that failed this way (one of
    /// [`OUTCOMES`]).
    pub fn outcome(&self) -> &'static str {
        match self {
            InferenceError::ModelNotAllowed(_) => "model_not_allowed",
            InferenceError::BudgetExceeded(_) => "budget_exceeded",
            InferenceError::Timeout => "timeout",
            InferenceError::Unavailable(_) => "unavailable",
            InferenceError::InvalidRequest(_) => "invalid_request",
            InferenceError::BadResponse(_) => "bad_response",
        }
    }
}
