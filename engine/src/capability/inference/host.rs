//! The `inference` interface of each contract version that has one (0.2 so
//! far), implemented on the call's [`InferenceCall`], converting between the
//! version's types and the capability's own.

use wasmtime::component::{HasSelf, Linker};

use super::InferenceCall;
use super::types::{
    Budget, BudgetExceeded, Completion, CompletionRequest, Embeddings, FinishReason,
    InferenceError, Message, ResponseFormat, Role, Usage,
};
use crate::capability::HostState;
use crate::runtime::wit::since_v0_2::inference as v0_2;

/// Links the `inference` interface of every version that has one.
pub fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    v0_2::add_to_linker::<HostState, HasSelf<InferenceCall>>(linker, |state| {
        &mut state.caps.inference
    })
}

impl v0_2::Host for InferenceCall {
    async fn complete(
        &mut self,
        request: v0_2::CompletionRequest,
    ) -> wasmtime::Result<Result<v0_2::Completion, v0_2::InferenceError>> {
        Ok(InferenceCall::complete(self, request.into())
            .await
            .map(Into::into)
            .map_err(Into::into))
    }

    async fn embed(
        &mut self,
        texts: Vec<String>,
        model: Option<String>,
    ) -> wasmtime::Result<Result<v0_2::Embeddings, v0_2::InferenceError>> {
        Ok(InferenceCall::embed(self, texts, model)
            .await
            .map(Into::into)
            .map_err(Into::into))
    }
}

impl From<v0_2::CompletionRequest> for CompletionRequest {
    fn from(r: v0_2::CompletionRequest) -> Self {
        CompletionRequest {
            messages: r
                .messages
                .into_iter()
                .map(|m| Message {
                    role: match m.role {
                        v0_2::Role::System => Role::System,
                        v0_2::Role::User => Role::User,
                        v0_2::Role::Assistant => Role::Assistant,
                    },
                    content: m.content,
                })
                .collect(),
            model: r.model,
            max_tokens: r.max_tokens,
            temperature: r.temperature,
            stop: r.stop,
            format: match r.format {
                v0_2::ResponseFormat::Text => ResponseFormat::Text,
                v0_2::ResponseFormat::Json => ResponseFormat::Json,
                v0_2::ResponseFormat::JsonSchema(s) => ResponseFormat::JsonSchema(s),
            },
            cache: r.cache,
        }
    }
}

impl From<Usage> for v0_2::Usage {
    fn from(u: Usage) -> Self {
        v0_2::Usage {
            input_tokens: u.input_tokens,
            output_tokens: u.output_tokens,
            cached_tokens: u.cached_tokens,
        }
    }
}

impl From<Completion> for v0_2::Completion {
    fn from(c: Completion) -> Self {
        v0_2::Completion {
            text: c.text,
            model: c.model,
            finish_reason: match c.finish_reason {
                FinishReason::Stop => v0_2::FinishReason::Stop,
                FinishReason::Length => v0_2::FinishReason::Length,
                FinishReason::ContentFilter => v0_2::FinishReason::ContentFilter,
                FinishReason::Other => v0_2::FinishReason::Other,
            },
            usage: c.usage.into(),
            from_cache: c.from_cache,
        }
    }
}

impl From<Embeddings> for v0_2::Embeddings {
    fn from(e: Embeddings) -> Self {
        v0_2::Embeddings {
            model: e.model,
            vectors: e.vectors,
            usage: e.usage.into(),
        }
    }
}

impl From<InferenceError> for v0_2::InferenceError {
    fn from(e: InferenceError) -> Self {
        match e {
            InferenceError::ModelNotAllowed(m) => v0_2::InferenceError::ModelNotAllowed(m),
            InferenceError::BudgetExceeded(BudgetExceeded {
                budget,
                limit,
                used,
                resets_at_ms,
            }) => v0_2::InferenceError::BudgetExceeded(v0_2::BudgetExceeded {
                budget: match budget {
                    Budget::RequestsPerCall => v0_2::Budget::RequestsPerCall,
                    Budget::TokensPerHour => v0_2::Budget::TokensPerHour,
                    Budget::TokensPerDay => v0_2::Budget::TokensPerDay,
                },
                limit,
                used,
                resets_at: resets_at_ms,
            }),
            InferenceError::Timeout => v0_2::InferenceError::Timeout,
            InferenceError::Unavailable(m) => v0_2::InferenceError::Unavailable(m),
            InferenceError::InvalidRequest(m) => v0_2::InferenceError::InvalidRequest(m),
            InferenceError::BadResponse(m) => v0_2::InferenceError::BadResponse(m),
        }
    }
}
