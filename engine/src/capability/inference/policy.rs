//! The operator's policy for one plugin's requests: which models, how many
//! output tokens, how many requests per call, how big a request may be; and
//! the request a plugin made turned into the one the backend sends.

use super::types::{
    Budget, BudgetExceeded, CompletionRequest, InferenceError, ResolvedRequest, ResponseFormat,
};
use crate::config::InferenceConfig;

/// Most stop sequences a request may carry (what OpenAI accepts).
pub const MAX_STOP_SEQUENCES: usize = 4;

/// Most texts one `embed` request may carry.
pub const MAX_TEXTS_PER_EMBED: usize = 2_048;

/// One plugin's policy, resolved from `[inference]` and its
/// `[inference.plugins.NAME]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The plugin's name (for messages naming its settings).
    pub plugin: String,
    /// The model a request naming none gets.
    pub default_model: Option<String>,
    /// Every model it may use (the default included).
    pub models: Vec<String>,
    /// Most output tokens per request.
    pub max_output_tokens: u32,
    /// Most requests per call.
    pub requests_per_call: u32,
    /// Tokens per clock hour; 0: none.
    pub tokens_per_hour: u64,
    /// Tokens per day; 0: none.
    pub tokens_per_day: u64,
    /// Largest request, in bytes.
    pub max_request_bytes: usize,
}

impl Policy {
    /// The policy of `plugin` under `config`.
    pub fn for_plugin(config: &InferenceConfig, plugin: &str) -> Self {
        let own = config.plugins.get(plugin).cloned().unwrap_or_default();
        let mut models: Vec<String> = config.default_model.iter().cloned().collect();
        for model in own.models {
            if !models.contains(&model) {
                models.push(model);
            }
        }
        Policy {
            plugin: plugin.to_string(),
            default_model: config.default_model.clone(),
            models,
            max_output_tokens: own.max_output_tokens.unwrap_or(config.max_output_tokens),
            requests_per_call: own.requests_per_call.unwrap_or(config.requests_per_call),
            tokens_per_hour: own.tokens_per_hour.unwrap_or(config.tokens_per_hour),
            tokens_per_day: own.tokens_per_day.unwrap_or(config.tokens_per_day),
            max_request_bytes: config.max_request_bytes,
        }
    }

    /// Counts one more request of a call that has made `made`; refused past
    /// `requests_per_call`.
    pub fn admit_request(&self, made: u32) -> Result<(), InferenceError> {
        if made >= self.requests_per_call {
            return Err(InferenceError::BudgetExceeded(BudgetExceeded {
                budget: Budget::RequestsPerCall,
                limit: u64::from(self.requests_per_call),
                used: u64::from(made),
                resets_at_ms: None,
            }));
        }
        Ok(())
    }

    /// The model a request gets, if it may have it.
    pub fn model(&self, asked: Option<&str>) -> Result<String, InferenceError> {
        let model = match asked.filter(|m| !m.is_empty()) {
            Some(model) => model.to_string(),
            None => self.default_model.clone().ok_or_else(|| {
                InferenceError::InvalidRequest(
                    "the request names no model and inference.default_model is not set".into(),
                )
            })?,
        };
        if self.models.contains(&model) {
            return Ok(model);
        }
        let allowed = if self.models.is_empty() {
            "none".to_string()
        } else {
            self.models.join(", ")
        };
        Err(InferenceError::ModelNotAllowed(format!(
            "plugin {} may not use model {:?} (allowed: {allowed}); an operator can add it to \
             inference.plugins.{}.models",
            self.plugin,
            printable_model(&model),
            self.plugin
        )))
    }

    /// The request the backend will send, or why it is refused.
    pub fn resolve(&self, request: CompletionRequest) -> Result<ResolvedRequest, InferenceError> {
        if request.messages.is_empty() {
            return Err(invalid("a completion needs at least one message"));
        }
        let bytes: usize = request
            .messages
            .iter()
            .map(|m| m.content.len())
            .chain(request.stop.iter().map(String::len))
            .chain(match &request.format {
                ResponseFormat::JsonSchema(schema) => Some(schema.len()),
                _ => None,
            })
            .sum();
        if bytes > self.max_request_bytes {
            return Err(invalid(format!(
                "the request is {bytes} bytes; inference.max_request_bytes is {}",
                self.max_request_bytes
            )));
        }
        if request.stop.len() > MAX_STOP_SEQUENCES {
            return Err(invalid(format!(
                "{} stop sequences; at most {MAX_STOP_SEQUENCES}",
                request.stop.len()
            )));
        }
        if let Some(t) = request.temperature
            && !(0.0..=2.0).contains(&t)
        {
            return Err(invalid(format!("temperature {t} is outside 0 to 2")));
        }
        let max_tokens = match request.max_tokens {
            Some(0) => return Err(invalid("max-tokens is 0")),
            Some(n) if n > self.max_output_tokens => {
                return Err(invalid(format!(
                    "max-tokens {n} is more than plugin {}'s limit of {} \
                     (inference.plugins.{}.max_output_tokens)",
                    self.plugin, self.max_output_tokens, self.plugin
                )));
            }
            Some(n) => n,
            None => self.max_output_tokens,
        };
        if let ResponseFormat::JsonSchema(schema) = &request.format {
            super::format::compile_schema(schema)?;
        }
        let model = self.model(request.model.as_deref())?;
        Ok(ResolvedRequest {
            model,
            messages: request.messages,
            max_tokens,
            temperature: request.temperature,
            stop: request.stop,
            format: request.format,
        })
    }

    /// Checks an `embed` request's size.
    pub fn check_texts(&self, texts: &[String]) -> Result<(), InferenceError> {
        if texts.len() > MAX_TEXTS_PER_EMBED {
            return Err(invalid(format!(
                "{} texts to embed; at most {MAX_TEXTS_PER_EMBED} per request",
                texts.len()
            )));
        }
        let bytes: usize = texts.iter().map(String::len).sum();
        if bytes > self.max_request_bytes {
            return Err(invalid(format!(
                "the texts are {bytes} bytes; inference.max_request_bytes is {}",
                self.max_request_bytes
            )));
        }
        Ok(())
    }
}

fn invalid(message: impl Into<String>) -> InferenceError {
    InferenceError::InvalidRequest(message.into())
}

/// A plugin-chosen model name, cut and escaped for a message.
fn printable_model(model: &str) -> String {
    let mut cut: String = model.chars().take(100).collect();
    if cut.len() < model.len() {
        cut.push('…');
    }
    crate::capability::log::printable(&cut)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capability::inference::types::{Message, Role};
    use crate::config::PluginInferencePolicy;

    fn config() -> InferenceConfig {
        let mut config = InferenceConfig {
            default_model: Some("small".into()),
            ..InferenceConfig::default()
        };
        config.plugins.insert(
            "auditor".into(),
            PluginInferencePolicy {
                models: vec!["large".into()],
                max_output_tokens: Some(200),
                requests_per_call: Some(2),
                ..Default::default()
            },
        );
        config
    }

    fn request(model: Option<&str>, max_tokens: Option<u32>) -> CompletionRequest {
        CompletionRequest {
            messages: vec![Message {
                role: Role::User,
                content: "hello".into(),
            }],
            model: model.map(Into::into),
            max_tokens,
            temperature: Some(0.0),
            stop: vec![],
            format: ResponseFormat::Text,
            cache: false,
        }
    }

    #[test]
    fn models_tokens_and_requests_follow_the_plugins_own_table() {
        let config = config();
        let auditor = Policy::for_plugin(&config, "auditor");
        let other = Policy::for_plugin(&config, "other");
        assert_eq!(
            auditor.resolve(request(None, None)).map(|r| r.model),
            Ok("small".into())
        );
        assert_eq!(
            auditor
                .resolve(request(Some("large"), None))
                .map(|r| r.max_tokens),
            Ok(200)
        );
        assert_eq!(
            other.resolve(request(None, None)).map(|r| r.max_tokens),
            Ok(1024)
        );
        match other.resolve(request(Some("large"), None)) {
            Err(InferenceError::ModelNotAllowed(m)) => {
                assert!(
                    m.contains("allowed: small") && m.contains("inference.plugins.other.models"),
                    "{m}"
                )
            }
            other => panic!("{other:?}"),
        }
        match auditor.resolve(request(None, Some(201))) {
            Err(InferenceError::InvalidRequest(m)) => {
                assert!(m.contains("max_output_tokens"), "{m}")
            }
            other => panic!("{other:?}"),
        }
        assert!(auditor.admit_request(1).is_ok());
        assert!(matches!(
            auditor.admit_request(2),
            Err(InferenceError::BudgetExceeded(BudgetExceeded {
                budget: Budget::RequestsPerCall,
                limit: 2,
                used: 2,
                resets_at_ms: None
            }))
        ));
    }

    #[test]
    fn no_default_model_means_every_model_must_be_granted() {
        let policy = Policy::for_plugin(&InferenceConfig::default(), "p");
        assert!(
            matches!(policy.resolve(request(None, None)), Err(InferenceError::InvalidRequest(m)) if m.contains("inference.default_model"))
        );
        assert!(
            matches!(policy.resolve(request(Some("gpt-4o"), None)), Err(InferenceError::ModelNotAllowed(m)) if m.contains("allowed: none"))
        );
        // Spellings that differ are different models; nothing is normalised.
        let policy = Policy::for_plugin(&config(), "p");
        for spelling in [
            "Small",
            "small ",
            " small",
            "small\u{0}",
            "ｓmall",
            "small\n",
        ] {
            let asked = request(Some(spelling), None);
            assert!(
                matches!(
                    policy.resolve(asked),
                    Err(InferenceError::ModelNotAllowed(_))
                ),
                "{spelling:?}"
            );
        }
    }

    #[test]
    fn oversized_and_malformed_requests_are_refused() {
        let policy = Policy::for_plugin(&config(), "p");
        let mut big = request(None, None);
        big.messages[0].content = "x".repeat(policy.max_request_bytes + 1);
        assert!(
            matches!(policy.resolve(big), Err(InferenceError::InvalidRequest(m)) if m.contains("max_request_bytes"))
        );
        let mut none = request(None, None);
        none.messages.clear();
        assert!(matches!(
            policy.resolve(none),
            Err(InferenceError::InvalidRequest(_))
        ));
        let mut hot = request(None, None);
        hot.temperature = Some(f32::NAN);
        assert!(policy.resolve(hot).is_err());
        let mut stops = request(None, None);
        stops.stop = vec!["a".into(); 5];
        assert!(policy.resolve(stops).is_err());
        let mut schema = request(None, None);
        schema.format = ResponseFormat::JsonSchema("{not json".into());
        assert!(matches!(
            policy.resolve(schema),
            Err(InferenceError::InvalidRequest(_))
        ));
    }
}
