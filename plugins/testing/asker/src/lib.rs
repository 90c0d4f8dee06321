//! A contract 0.2 test plugin that asks the host's `inference` what the
//! document's metadata says, and reports what came back as findings, so
//! tests can see each answer and each error variant as a plugin sees it.
//!
//! Metadata (all optional):
//! - `ask`: `"complete"` (the default), `"embed"`, `"both"`, or `"prompts"`
//!   (the library's prompts of the metadata's `scenario`, `report_type` and
//!   `building_type`, a finding each);
//! - `model`, `max_tokens`, `temperature`, `cache`, `stop`: the request's;
//! - `format`: `"text"` (default), `"json"`, or a JSON Schema object;
//! - `system`: a system message before the document's text;
//! - `repeat`: how many times to ask (default 1);
//! - `texts`: the texts to embed (default: the document's text);
//! - `fail`: when true, the first error fails the call instead of being
//!   reported as a finding.

use assay_plugin::analyzer::{Document, Finding, Guest, Manifest, PluginError};
use assay_plugin::inference::{
    self, Budget, CompletionRequest, FinishReason, InferenceError, Message, ResponseFormat, Role,
};
use assay_plugin::types::Stage;
use serde_json::{Value, json};

/// The plugin.
pub struct Asker;

fn finding(label: &str, data: Value) -> Finding {
    Finding {
        label: label.into(),
        score: None,
        span: None,
        data: data.to_string(),
    }
}

fn error_finding(e: &InferenceError) -> Finding {
    let (kind, data) = match e {
        InferenceError::ModelNotAllowed(m) => ("model-not-allowed", json!({"message": m})),
        InferenceError::BudgetExceeded(b) => (
            "budget-exceeded",
            json!({
                "budget": match b.budget {
                    Budget::RequestsPerCall => "requests-per-call",
                    Budget::TokensPerHour => "tokens-per-hour",
                    Budget::TokensPerDay => "tokens-per-day",
                },
                "limit": b.limit,
                "used": b.used,
                "resets_at": b.resets_at,
            }),
        ),
        InferenceError::Timeout => ("timeout", json!({})),
        InferenceError::Unavailable(m) => ("unavailable", json!({"message": m})),
        InferenceError::InvalidRequest(m) => ("invalid-request", json!({"message": m})),
        InferenceError::BadResponse(m) => ("bad-response", json!({"message": m})),
    };
    finding(&format!("error:{kind}"), data)
}

fn describe_error(e: &InferenceError) -> String {
    let found = error_finding(e);
    format!("{} {}", found.label, found.data)
}

impl Guest for Asker {
    fn describe() -> Manifest {
        Manifest {
            name: "asker".into(),
            version: "0.2.0".into(),
            description: "asks the host's inference what the metadata says (tests only)".into(),
            stage: Stage::Analysis,
            priority: 0,
            kinds: vec![],
            triggers: vec![],
            migrations: vec![],
        }
    }

    fn analyze(doc: Document) -> Result<Vec<Finding>, PluginError> {
        let meta: Value = serde_json::from_str(&doc.metadata).unwrap_or(json!({}));
        let ask = meta["ask"].as_str().unwrap_or("complete");
        if ask == "prompts" {
            return prompts(&meta).map(|found| with_claims(found, &meta));
        }
        let fail = meta["fail"].as_bool().unwrap_or(false);
        let repeat = number(&meta["repeat"]).map_or(1, |n| n as u64);
        let mut found = Vec::new();
        let mut report = |result: Result<Finding, InferenceError>| match result {
            Ok(f) => {
                found.push(f);
                Ok(())
            }
            Err(e) if fail => Err(PluginError::Failed(describe_error(&e))),
            Err(e) => {
                found.push(error_finding(&e));
                Ok(())
            }
        };
        for _ in 0..repeat {
            if ask == "complete" || ask == "both" {
                report(complete(&doc, &meta))?;
            }
            if ask == "embed" || ask == "both" {
                report(embed(&doc, &meta))?;
            }
        }
        Ok(with_claims(found, &meta))
    }
}

/// Every finding with the metadata's `claim` object merged into its data:
/// what a plugin might claim about how a finding was made.
fn with_claims(found: Vec<Finding>, meta: &Value) -> Vec<Finding> {
    let Some(claims) = meta["claim"].as_object() else {
        return found;
    };
    found
        .into_iter()
        .map(|mut f| {
            let mut data: Value = serde_json::from_str(&f.data).unwrap_or(json!({}));
            for (key, value) in claims {
                data[key] = value.clone();
            }
            f.data = data.to_string();
            f
        })
        .collect()
}

/// A number given as a number or (from `assay analyze --meta k=v`) as text.
fn number(value: &Value) -> Option<f64> {
    value
        .as_f64()
        .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
}

fn complete(doc: &Document, meta: &Value) -> Result<Finding, InferenceError> {
    let mut messages = Vec::new();
    if let Some(system) = meta["system"].as_str() {
        messages.push(Message {
            role: Role::System,
            content: system.into(),
        });
    }
    messages.push(Message {
        role: Role::User,
        content: doc.text.clone(),
    });
    let format = match &meta["format"] {
        Value::String(s) if s == "json" => ResponseFormat::Json,
        schema @ Value::Object(_) => ResponseFormat::JsonSchema(schema.to_string()),
        _ => ResponseFormat::Text,
    };
    let request = CompletionRequest {
        messages,
        model: meta["model"].as_str().map(String::from),
        max_tokens: number(&meta["max_tokens"]).map(|n| n as u32),
        temperature: number(&meta["temperature"]).map(|t| t as f32),
        stop: meta["stop"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default(),
        format,
        cache: meta["cache"].as_bool().unwrap_or(false),
    };
    let c = inference::complete(&request)?;
    Ok(finding(
        "answer",
        json!({
            "text": c.text,
            "model": c.model,
            "finish": match c.finish_reason {
                FinishReason::Stop => "stop",
                FinishReason::Length => "length",
                FinishReason::ContentFilter => "content-filter",
                FinishReason::Other => "other",
            },
            "input": c.usage.input_tokens,
            "output": c.usage.output_tokens,
            "cached": c.usage.cached_tokens,
            "from_cache": c.from_cache,
        }),
    ))
}

fn embed(doc: &Document, meta: &Value) -> Result<Finding, InferenceError> {
    let texts: Vec<String> = match meta["texts"].as_array() {
        Some(texts) => texts
            .iter()
            .filter_map(|t| t.as_str().map(String::from))
            .collect(),
        None => vec![doc.text.clone()],
    };
    let e = inference::embed(&texts, meta["embed_model"].as_str())?;
    Ok(finding(
        "embedding",
        json!({
            "model": e.model,
            "count": e.vectors.len(),
            "dimensions": e.vectors.first().map_or(0, Vec::len),
            "first": e.vectors.first().and_then(|v| v.first()).copied(),
            "vectors": e.vectors,
            "input": e.usage.input_tokens,
        }),
    ))
}

/// The prompts of the metadata's scenario, report type and building type,
/// one finding each.
fn prompts(meta: &Value) -> Result<Vec<Finding>, PluginError> {
    let field = |name: &str| meta[name].as_str().unwrap_or("").to_string();
    let found = assay_plugin::prompts::lookup(
        &field("scenario"),
        &field("report_type"),
        &field("building_type"),
    )
    .map_err(|e| PluginError::Failed(format!("{e:?}")))?;
    Ok(found
        .into_iter()
        .map(|p| {
            finding(
                "prompt",
                json!({
                    "part": p.run_part,
                    "name": p.name,
                    "prompt_version": p.version_id,
                    "version": p.version,
                    "json": p.json_answer,
                    "sha256": p.content_sha256,
                    "text": p.text,
                }),
            )
        })
        .collect())
}

assay_plugin::export_analyzer!(Asker);
