//! `audit-report`: runs the prompt library's prompts over a document, part
//! by part, and reports what the model answered.
//!
//! A document whose metadata names a `scenario`, a `report_type` and a
//! `building_type` (from `assay analyze --meta`, a JSON document's own
//! `metadata`, or its path: see the README) gets the library's current
//! prompts of that selection. They run in run-part order; every prompt of a
//! part sees the document and the answers of all earlier parts. A prompt
//! marked JSON is asked for a JSON answer (checked by the host) and becomes
//! an `audit:<name>` finding holding the parsed answer; a text prompt
//! becomes a `report:<name>` section. Every finding names the prompt's exact
//! version (`prompt_version`), its hash, the model that answered and whether
//! the answer came from the host's cache.
//!
//! Requests are sent with temperature 0, so re-analysing a document with the
//! same prompts and model is answered from the cache. A document without the
//! three metadata keys, or with a selection the library does not have, gets
//! no findings. Without a model server the call fails with the host's
//! reason, and the run records the plugin as skipped, saying which setting
//! to set.

use assay_plugin::Explain;
use assay_plugin::analyzer::{Document, Finding, Guest, Manifest, PluginError};
use assay_plugin::inference::{self, CompletionRequest, Message, ResponseFormat, Role};
use assay_plugin::prompts::{self, Prompt};
use assay_plugin::types::Stage;
use serde_json::{Value, json};

/// The metadata keys that select the prompts.
pub const SELECTORS: [&str; 3] = ["scenario", "report_type", "building_type"];

/// The plugin.
pub struct AuditReport;

/// The selection named by a document's metadata, if it names all three.
pub fn selection(metadata: &str) -> Option<[String; 3]> {
    let meta: Value = serde_json::from_str(metadata).ok()?;
    let get = |key: &str| {
        meta.get(key)?
            .as_str()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
    };
    Some([get(SELECTORS[0])?, get(SELECTORS[1])?, get(SELECTORS[2])?])
}

/// What one prompt is sent with: the document, then the earlier parts' answers.
pub fn user_message(doc: &Document, earlier: &[(String, String)]) -> String {
    let mut content = format!("Document ({}):\n{}", doc.kind, doc.text);
    if !earlier.is_empty() {
        content.push_str("\n\nAnswers of the earlier parts:");
        for (name, answer) in earlier {
            content.push_str(&format!("\n\n[{name}]\n{answer}"));
        }
    }
    content
}

fn prompt_path(p: &Prompt) -> String {
    format!(
        "{}/{}/{}/part{}/{}",
        p.scenario, p.report_type, p.building_type, p.run_part, p.name
    )
}

impl Guest for AuditReport {
    fn describe() -> Manifest {
        Manifest {
            name: "audit-report".into(),
            version: "0.1.0".into(),
            description: "runs the prompt library's prompts for the document's scenario, report type and building type, part by part, through the host's model".into(),
            stage: Stage::Analysis,
            priority: 0,
            kinds: vec![],
            triggers: vec![],
            migrations: vec![],
        }
    }

    fn analyze(doc: Document) -> Result<Vec<Finding>, PluginError> {
        let Some([scenario, report_type, building_type]) = selection(&doc.metadata) else {
            return Ok(Vec::new());
        };
        let mut library =
            prompts::lookup(&scenario, &report_type, &building_type).map_err(|e| {
                PluginError::Failed(format!("the prompt library cannot be read: {e:?}"))
            })?;
        library.sort_by(|a, b| (a.run_part, &a.name).cmp(&(b.run_part, &b.name)));
        let mut findings = Vec::new();
        let mut earlier: Vec<(String, String)> = Vec::new();
        let mut part_answers: Vec<(String, String)> = Vec::new();
        let mut part = library.first().map_or(0, |p| p.run_part);
        for prompt in &library {
            if prompt.run_part != part {
                earlier.append(&mut part_answers);
                part = prompt.run_part;
            }
            let request = CompletionRequest {
                messages: vec![
                    Message {
                        role: Role::System,
                        content: prompt.text.clone(),
                    },
                    Message {
                        role: Role::User,
                        content: user_message(&doc, &earlier),
                    },
                ],
                model: None,
                max_tokens: None,
                temperature: Some(0.0),
                stop: vec![],
                format: if prompt.json_answer {
                    ResponseFormat::Json
                } else {
                    ResponseFormat::Text
                },
                cache: true,
            };
            let answer = inference::complete(&request).map_err(|e| {
                PluginError::Failed(format!("prompt {}: {}", prompt_path(prompt), e.explain()))
            })?;
            let mut data = json!({
                "part": prompt.run_part,
                "prompt": prompt_path(prompt),
                "prompt_version": prompt.version_id,
                "prompt_sha256": prompt.content_sha256,
                "model": answer.model,
                "from_cache": answer.from_cache,
            });
            let label = if prompt.json_answer {
                // The host checked it is JSON before handing it over.
                let parsed: Value = serde_json::from_str(answer.text.trim()).map_err(|e| {
                    PluginError::Failed(format!(
                        "prompt {}: the JSON answer does not parse: {e}",
                        prompt_path(prompt)
                    ))
                })?;
                data["answer"] = parsed;
                format!("audit:{}", prompt.name)
            } else {
                data["text"] = Value::String(answer.text.clone());
                format!("report:{}", prompt.name)
            };
            findings.push(Finding {
                label,
                score: None,
                span: None,
                data: data.to_string(),
            });
            part_answers.push((prompt_path(prompt), answer.text));
        }
        Ok(findings)
    }
}

assay_plugin::export_analyzer!(AuditReport);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_selection_needs_all_three_keys() {
        assert_eq!(
            selection(
                r#"{"scenario":"design-audit","report_type":"summary","building_type":"hotel"}"#
            ),
            Some(["design-audit".into(), "summary".into(), "hotel".into()])
        );
        assert_eq!(
            selection(r#"{"scenario":"design-audit","report_type":"summary"}"#),
            None
        );
        assert_eq!(
            selection(r#"{"scenario":"a","report_type":"b","building_type":" "}"#),
            None
        );
        assert_eq!(
            selection(r#"{"scenario":1,"report_type":"b","building_type":"c"}"#),
            None
        );
        assert_eq!(selection("not json"), None);
    }

    #[test]
    fn each_part_sees_the_document_and_the_earlier_answers() {
        let doc = Document {
            id: "x".into(),
            kind: "audit".into(),
            text: "The lobby is dark.".into(),
            metadata: "{}".into(),
        };
        assert_eq!(
            user_message(&doc, &[]),
            "Document (audit):\nThe lobby is dark."
        );
        let with = user_message(
            &doc,
            &[("a/b/c/part1/overview".into(), "Dark lobby.".into())],
        );
        assert!(
            with.ends_with("Answers of the earlier parts:\n\n[a/b/c/part1/overview]\nDark lobby."),
            "{with}"
        );
    }
}
