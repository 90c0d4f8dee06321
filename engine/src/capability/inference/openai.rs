//! The OpenAI-compatible backend: `POST {base_url}/chat/completions` and
//! `POST {base_url}/embeddings`, as OpenAI, vLLM, llama.cpp's server and
//! Ollama's `/v1` endpoint speak them.
//!
//! Every request has a deadline (the plugin call's, or the configured
//! request timeout if sooner). A refusal for now (429, 5xx, no connection)
//! is retried up to `max_retries` times, after the server's `Retry-After`
//! (or `retry-after-ms`) when it gives one and jittered exponential backoff
//! otherwise; a wait that would end past the deadline is not started. The
//! answer is read up to `max_response_bytes`, no further. Nothing the
//! plugin sees names the server's address or key: errors are described in
//! the host's words, and the key is sent as a sensitive header (never
//! logged by the HTTP stack).

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use serde::Deserialize;
use serde_json::{Value, json};

use super::types::{
    Completion, Embeddings, FinishReason, InferenceError, Message, ResolvedRequest, ResponseFormat,
    Usage,
};
use crate::config::{InferenceConfig, MaxTokensField};

/// First backoff step; doubled per retry, jittered.
const BACKOFF_BASE: Duration = Duration::from_millis(200);
/// Longest `Retry-After` honoured: a server asking for more is treated as
/// unavailable for now rather than holding a plugin call.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// Why the backend could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// `base_url` is not an http(s) URL.
    #[error("inference.base_url {0:?} is not an http:// or https:// URL")]
    BadUrl(String),
    /// The key variable is named but not set.
    #[error(
        "inference.api_key_env names {0}, which is not set (or not valid UTF-8); set it, or unset inference.api_key_env for a server without keys"
    )]
    MissingKey(String),
    /// The key cannot be a header.
    #[error("the API key in {0} contains characters an HTTP header cannot carry")]
    BadKey(String),
    /// The HTTP client could not be built.
    #[error("cannot set up the HTTP client for inference: {0}")]
    Client(String),
}

/// An OpenAI-compatible server.
pub struct OpenAi {
    client: reqwest::Client,
    base: String,
    max_tokens_field: MaxTokensField,
    request_timeout: Duration,
    max_retries: u32,
    max_response_bytes: usize,
}

impl std::fmt::Debug for OpenAi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Neither the key nor (it may carry credentials) the URL.
        f.debug_struct("OpenAi").finish_non_exhaustive()
    }
}

impl OpenAi {
    /// The backend `config` describes, if it names a server.
    pub fn from_config(config: &InferenceConfig) -> Result<Option<Arc<Self>>, SetupError> {
        let Some(base) = config.base_url.as_deref().filter(|b| !b.trim().is_empty()) else {
            return Ok(None);
        };
        let base = base.trim().trim_end_matches('/').to_string();
        let parsed = reqwest::Url::parse(&base).map_err(|_| SetupError::BadUrl(base.clone()))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(SetupError::BadUrl(base));
        }
        let mut headers = HeaderMap::new();
        if let Some(var) = config.api_key_env.as_deref().filter(|v| !v.is_empty()) {
            let key = std::env::var(var).map_err(|_| SetupError::MissingKey(var.to_string()))?;
            let mut value = HeaderValue::from_str(&format!("Bearer {}", key.trim()))
                .map_err(|_| SetupError::BadKey(var.to_string()))?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        // One process-wide TLS provider: ring (the client is built without
        // aws-lc). Installing twice is harmless; the first one stays.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
            // A redirect could carry the key to another host; servers of this
            // protocol do not redirect.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("assay/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| SetupError::Client(e.without_url().to_string()))?;
        Ok(Some(Arc::new(OpenAi {
            client,
            base,
            max_tokens_field: config.max_tokens_field,
            request_timeout: Duration::from_millis(config.request_timeout_ms),
            max_retries: config.max_retries,
            max_response_bytes: config.max_response_bytes,
        })))
    }

    /// Asks for a completion of `request`, with `extra` messages after the
    /// request's own (the host's second try of a JSON answer).
    pub async fn complete(
        &self,
        request: &ResolvedRequest,
        extra: &[Message],
        deadline: Instant,
    ) -> Result<Completion, InferenceError> {
        let messages: Vec<&Message> = request.messages.iter().chain(extra).collect();
        let mut body = json!({
            "model": request.model,
            "messages": messages,
        });
        let field = match self.max_tokens_field {
            MaxTokensField::MaxTokens => "max_tokens",
            MaxTokensField::MaxCompletionTokens => "max_completion_tokens",
        };
        body[field] = json!(request.max_tokens);
        if let Some(t) = request.temperature {
            body["temperature"] = json!(t);
        }
        if !request.stop.is_empty() {
            body["stop"] = json!(request.stop);
        }
        match &request.format {
            ResponseFormat::Text => {}
            ResponseFormat::Json => body["response_format"] = json!({"type": "json_object"}),
            ResponseFormat::JsonSchema(schema) => {
                let schema: Value = serde_json::from_str(schema).map_err(|e| {
                    InferenceError::InvalidRequest(format!("the schema is not JSON: {e}"))
                })?;
                body["response_format"] = json!({
                    "type": "json_schema",
                    "json_schema": {"name": "answer", "schema": schema},
                });
            }
        }
        let answer: ChatAnswer = self.post("chat/completions", &body, deadline).await?;
        let choice = answer.choices.into_iter().next().ok_or_else(|| {
            InferenceError::BadResponse("the server's answer has no choices".into())
        })?;
        Ok(Completion {
            text: choice.message.content.unwrap_or_default(),
            model: answer.model.unwrap_or_else(|| request.model.clone()),
            finish_reason: FinishReason::from_protocol(choice.finish_reason.as_deref()),
            usage: answer.usage.map(Into::into).unwrap_or_default(),
            from_cache: false,
        })
    }

    /// Embeds `texts` with `model`.
    pub async fn embed(
        &self,
        model: &str,
        texts: &[String],
        deadline: Instant,
    ) -> Result<Embeddings, InferenceError> {
        let body = json!({"model": model, "input": texts, "encoding_format": "float"});
        let answer: EmbeddingAnswer = self.post("embeddings", &body, deadline).await?;
        let mut data = answer.data;
        data.sort_by_key(|d| d.index);
        if data.len() != texts.len() || data.iter().enumerate().any(|(i, d)| d.index != i) {
            return Err(InferenceError::BadResponse(format!(
                "asked for {} embeddings, the server answered {}",
                texts.len(),
                data.len()
            )));
        }
        Ok(Embeddings {
            model: answer.model.unwrap_or_else(|| model.to_string()),
            vectors: data.into_iter().map(|d| d.embedding).collect(),
            usage: answer.usage.map(Into::into).unwrap_or_default(),
        })
    }

    /// Posts `body` to `path` until it is answered, refused for good, or
    /// the deadline leaves no time for another try.
    async fn post<T: for<'de> Deserialize<'de>>(
        &self,
        path: &str,
        body: &Value,
        deadline: Instant,
    ) -> Result<T, InferenceError> {
        let url = format!("{}/{path}", self.base);
        let mut attempt = 0u32;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(InferenceError::Timeout);
            }
            let timeout = left.min(self.request_timeout);
            let failure = match self.try_once(&url, body, timeout).await {
                Ok(bytes) => {
                    return serde_json::from_slice(&bytes).map_err(|e| {
                        InferenceError::BadResponse(format!(
                            "the server's answer is not the OpenAI protocol: {e}"
                        ))
                    });
                }
                Err(failure) => failure,
            };
            let (error, retry_after) = match failure {
                Attempt::Final(error) => return Err(error),
                Attempt::Retry { error, after } => (error, after),
            };
            if attempt >= self.max_retries {
                return Err(error);
            }
            let backoff = BACKOFF_BASE.saturating_mul(2u32.saturating_pow(attempt));
            let jittered = rand::rng().random_range(backoff / 2..=backoff);
            let wait = retry_after.unwrap_or(jittered);
            if Instant::now() + wait >= deadline {
                // Waiting would outlast the call: say why it failed now.
                return Err(error);
            }
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    async fn try_once(
        &self,
        url: &str,
        body: &Value,
        timeout: Duration,
    ) -> Result<Vec<u8>, Attempt> {
        let sent = self.client.post(url).json(body).timeout(timeout).send();
        let mut response = match sent.await {
            Ok(response) => response,
            Err(e) if e.is_timeout() => return Err(Attempt::Final(InferenceError::Timeout)),
            Err(e) => {
                return Err(Attempt::Retry {
                    error: InferenceError::Unavailable(format!(
                        "the model server cannot be reached: {}",
                        describe(&e)
                    )),
                    after: None,
                });
            }
        };
        let status = response.status();
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            let after = retry_after(response.headers());
            let message = format!("the model server is refusing requests for now (HTTP {status})");
            return Err(match after {
                Some(after) if after > MAX_RETRY_AFTER => {
                    Attempt::Final(InferenceError::Unavailable(format!(
                        "{message}; it asks to wait {}s",
                        after.as_secs()
                    )))
                }
                after => Attempt::Retry {
                    error: InferenceError::Unavailable(message),
                    after,
                },
            });
        }
        let mut bytes = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if bytes.len() + chunk.len() > self.max_response_bytes {
                        return Err(Attempt::Final(InferenceError::BadResponse(format!(
                            "the server's answer is larger than inference.max_response_bytes ({})",
                            self.max_response_bytes
                        ))));
                    }
                    bytes.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) if e.is_timeout() => return Err(Attempt::Final(InferenceError::Timeout)),
                Err(e) => {
                    return Err(Attempt::Retry {
                        error: InferenceError::Unavailable(format!(
                            "the model server's answer broke off: {}",
                            describe(&e)
                        )),
                        after: None,
                    });
                }
            }
        }
        if status.is_success() {
            return Ok(bytes);
        }
        // A refusal of this request (400, 404 for an unknown model, 401 for
        // a bad key): the server's own message says why, cut short. It is the
        // server's text, not the key.
        let detail = error_message(&bytes);
        Err(Attempt::Final(match status.as_u16() {
            401 | 403 => InferenceError::Unavailable(format!(
                "the model server refused the engine's credentials (HTTP {status}); an operator must check inference.api_key_env"
            )),
            _ => InferenceError::InvalidRequest(format!(
                "the model server refused the request (HTTP {status}): {detail}"
            )),
        }))
    }
}

/// One try's failure.
enum Attempt {
    /// Try again (after `after`, if the server said).
    Retry {
        error: InferenceError,
        after: Option<Duration>,
    },
    /// Do not.
    Final(InferenceError),
}

/// What went wrong with a connection, without the URL.
fn describe(e: &reqwest::Error) -> String {
    let mut text = String::from(if e.is_connect() {
        "no connection"
    } else {
        "request failed"
    });
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        text = format!("{text}: {inner}");
        source = inner.source();
    }
    cut(&text, 300)
}

/// `retry-after-ms` (OpenAI's) or `Retry-After` in seconds.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let number = |name: &str| {
        headers
            .get(name)?
            .to_str()
            .ok()?
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|n| n.is_finite() && *n >= 0.0)
    };
    if let Some(ms) = number("retry-after-ms") {
        return Some(Duration::from_secs_f64((ms / 1000.0).min(86_400.0)));
    }
    number("retry-after").map(|s| Duration::from_secs_f64(s.min(86_400.0)))
}

/// The `error.message` of an error body, or its first bytes.
fn error_message(bytes: &[u8]) -> String {
    let text = serde_json::from_slice::<Value>(bytes)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(String::from))
        .unwrap_or_else(|| String::from_utf8_lossy(bytes).into_owned());
    cut(&crate::capability::log::printable(text.trim()), 500)
}

fn cut(text: &str, chars: usize) -> String {
    let mut out: String = text.chars().take(chars).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out
}

#[derive(Deserialize)]
struct ChatAnswer {
    model: Option<String>,
    #[serde(default)]
    choices: Vec<Choice>,
    usage: Option<ProtocolUsage>,
}

#[derive(Deserialize)]
struct Choice {
    message: ChoiceMessage,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct ChoiceMessage {
    content: Option<String>,
}

#[derive(Deserialize)]
struct ProtocolUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    prompt_tokens_details: Option<PromptDetails>,
}

#[derive(Deserialize)]
struct PromptDetails {
    #[serde(default)]
    cached_tokens: u64,
}

impl From<ProtocolUsage> for Usage {
    fn from(u: ProtocolUsage) -> Self {
        Usage {
            input_tokens: u.prompt_tokens,
            output_tokens: u.completion_tokens,
            cached_tokens: u.prompt_tokens_details.map_or(0, |d| d.cached_tokens),
        }
    }
}

#[derive(Deserialize)]
struct EmbeddingAnswer {
    model: Option<String>,
    data: Vec<EmbeddingData>,
    usage: Option<ProtocolUsage>,
}

#[derive(Deserialize)]
struct EmbeddingData {
    #[serde(default)]
    index: usize,
    embedding: Vec<f32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_read_in_either_spelling() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert("retry-after", HeaderValue::from_static("2"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
        headers.insert("retry-after-ms", HeaderValue::from_static("150"));
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(150)));
        headers.insert("retry-after-ms", HeaderValue::from_static("-1"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
    }

    #[test]
    fn setup_refuses_what_cannot_work_and_keeps_the_key_to_itself() {
        let config = |url: &str, key: Option<&str>| InferenceConfig {
            base_url: Some(url.into()),
            api_key_env: key.map(Into::into),
            ..InferenceConfig::default()
        };
        assert!(matches!(
            OpenAi::from_config(&InferenceConfig::default()),
            Ok(None)
        ));
        for bad in ["ftp://models", "not a url", "file:///tmp/x"] {
            assert!(
                matches!(
                    OpenAi::from_config(&config(bad, None)),
                    Err(SetupError::BadUrl(_))
                ),
                "{bad}"
            );
        }
        let missing = OpenAi::from_config(&config(
            "http://127.0.0.1:9/v1",
            Some("ASSAY_TEST_KEY_THAT_IS_NOT_SET"),
        ));
        assert!(
            matches!(missing, Err(SetupError::MissingKey(v)) if v == "ASSAY_TEST_KEY_THAT_IS_NOT_SET")
        );
        let backend = OpenAi::from_config(&config("https://127.0.0.1:9/v1/", None))
            .expect("a TLS client builds")
            .expect("a backend");
        assert_eq!(backend.base, "https://127.0.0.1:9/v1");
        assert_eq!(format!("{backend:?}"), "OpenAi { .. }");
    }
}
