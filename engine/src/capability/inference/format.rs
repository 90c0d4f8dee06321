//! The host's check of JSON answers: a JSON format's answer must parse, a
//! schema format's must match the plugin's JSON Schema (checked with the
//! `jsonschema` crate, which is built without any way to fetch a remote
//! `$ref`: a plugin's schema cannot make the host reach the network or read
//! a file).

use serde_json::Value;

use super::types::{InferenceError, ResponseFormat};

/// Longest description of what was wrong kept (sent back to the model, and
/// to the plugin in a bad response).
const MAX_PROBLEM_CHARS: usize = 1_000;

/// The validator of a plugin's schema, or why it is not one.
pub fn compile_schema(schema: &str) -> Result<jsonschema::Validator, InferenceError> {
    let value: Value = serde_json::from_str(schema).map_err(|e| {
        InferenceError::InvalidRequest(format!("the response format's schema is not JSON: {e}"))
    })?;
    jsonschema::validator_for(&value).map_err(|e| {
        InferenceError::InvalidRequest(format!(
            "the response format's schema is not a usable JSON Schema: {}",
            cut(&e.to_string())
        ))
    })
}

/// What is wrong with `answer` under `format`, if anything: a sentence to
/// show the model (once) and then the plugin.
pub fn problem(format: &ResponseFormat, answer: &str) -> Option<String> {
    let schema = match format {
        ResponseFormat::Text => return None,
        ResponseFormat::Json => None,
        ResponseFormat::JsonSchema(schema) => Some(schema),
    };
    let value: Value = match serde_json::from_str(answer.trim()) {
        Ok(value) => value,
        Err(e) => return Some(format!("the answer is not JSON: {e}")),
    };
    let schema = schema?;
    let validator = match compile_schema(schema) {
        Ok(validator) => validator,
        Err(e) => return Some(e.to_string()),
    };
    let problems: Vec<String> = validator
        .iter_errors(&value)
        .take(5)
        .map(|e| {
            let at = e.instance_path().to_string();
            if at.is_empty() {
                e.to_string()
            } else {
                format!("at {at}: {e}")
            }
        })
        .collect();
    (!problems.is_empty()).then(|| {
        cut(&format!(
            "the answer does not match the schema: {}",
            problems.join("; ")
        ))
    })
}

fn cut(text: &str) -> String {
    let mut out: String = text.chars().take(MAX_PROBLEM_CHARS).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMA: &str = r#"{"type":"object","required":["score"],"properties":{"score":{"type":"integer","minimum":0,"maximum":10}}}"#;

    #[test]
    fn answers_are_checked_against_their_format() {
        let schema = ResponseFormat::JsonSchema(SCHEMA.into());
        assert_eq!(problem(&ResponseFormat::Text, "not json"), None);
        assert!(problem(&ResponseFormat::Json, "not json").is_some_and(|p| p.contains("not JSON")));
        assert_eq!(problem(&ResponseFormat::Json, " [1, 2] "), None);
        assert_eq!(problem(&schema, r#"{"score": 7}"#), None);
        let wrong = problem(&schema, r#"{"score": 11}"#).expect("11 is above the maximum");
        assert!(wrong.contains("/score") && wrong.contains("11"), "{wrong}");
        assert!(problem(&schema, r#"{"points": 3}"#).is_some_and(|p| p.contains("score")));
    }

    #[test]
    fn schemas_cannot_reach_out_and_must_be_schemas() {
        assert!(compile_schema("{").is_err());
        assert!(compile_schema(r#"{"type": 12}"#).is_err());
        // A remote or file reference is not fetched: the schema is refused.
        for reference in ["http://127.0.0.1:9/schema.json", "file:///etc/passwd"] {
            let schema = format!(r#"{{"$ref": "{reference}"}}"#);
            assert!(compile_schema(&schema).is_err(), "{reference}");
        }
    }
}
