//! The `redact` prompt-stage plugin: replaces e-mail addresses, payment card
//! numbers and phone numbers in the document text with `[EMAIL]`, `[CARD]` and
//! `[PHONE]` before any analysis plugin sees it, and reports where each mask was
//! put (never what it replaced).
//!
//! The scanners and their rules live in [`scan`].

pub mod scan;

use assay_plugin::prompt::{Document, Guest, Manifest, PluginError, Processed};
use assay_plugin::types::{Finding, Span, Stage};

/// The plugin, as the component exports it.
pub struct Redact;

impl Guest for Redact {
    fn describe() -> Manifest {
        Manifest {
            name: "redact".into(),
            version: "0.1.0".into(),
            description: "Masks e-mail addresses, card numbers and phone numbers.".into(),
            stage: Stage::Prompt,
            priority: 10,
            kinds: Vec::new(),
            // Every scanner needs an @ or three digits in a row, so the host can
            // skip the plugin cheaply on text that has neither.
            triggers: vec!["@".into(), "\\d{3}".into()],
            migrations: Vec::new(),
        }
    }

    fn process(doc: Document) -> Result<Processed, PluginError> {
        process(doc)
    }
}

assay_plugin::export_prompt!(Redact);

fn process(doc: Document) -> Result<Processed, PluginError> {
    let redacted = scan::redact(&doc.text);
    // A mask can be longer than what it replaced ("a@b.co" becomes "[EMAIL]"),
    // so offsets into the output are checked as they are made.
    let offset = |i: usize| {
        u32::try_from(i).map_err(|_| {
            PluginError::InvalidInput(
                "text longer than 4 GiB cannot be addressed by u32 spans".into(),
            )
        })
    };
    let findings = redacted
        .masks
        .iter()
        .map(|m| {
            Ok(Finding {
                label: format!("redacted:{}", m.kind.label()),
                score: None,
                span: Some(Span {
                    start: offset(m.start)?,
                    end: offset(m.end)?,
                }),
                data: format!(
                    "{{\"kind\":\"{}\",\"original_bytes\":{}}}",
                    m.kind.label(),
                    m.original_len
                ),
            })
        })
        .collect::<Result<Vec<_>, PluginError>>()?;
    Ok(Processed {
        document: Document {
            text: redacted.text,
            ..doc
        },
        findings,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn doc(text: &str) -> Document {
        Document {
            id: "0b6c5f7e-1d2a-4c3b-9e8f-7a6b5c4d3e2f".into(),
            kind: "transcript".into(),
            text: text.into(),
            metadata: r#"{"channel":"phone"}"#.into(),
        }
    }

    #[test]
    fn manifest() {
        let m = Redact::describe();
        assert_eq!(m.name, "redact");
        assert_eq!(m.version, "0.1.0");
        assert!(matches!(m.stage, Stage::Prompt));
        assert_eq!(m.priority, 10);
        assert!(m.kinds.is_empty() && m.migrations.is_empty());
        assert_eq!(m.triggers, ["@", "\\d{3}"]);
    }

    #[test]
    fn replaces_text_and_keeps_the_rest_of_the_document() {
        let text =
            "Customer: I’m at zoë@example.com or (312) 555-0198; card 5555-5555-5555-4444 😀";
        let out = process(doc(text)).unwrap();
        let d = &out.document;
        assert_eq!(
            d.text,
            "Customer: I’m at [EMAIL] or [PHONE]; card [CARD] 😀"
        );
        assert_eq!(d.id, doc(text).id);
        assert_eq!(d.kind, "transcript");
        assert_eq!(d.metadata, r#"{"channel":"phone"}"#);

        let labels: Vec<&str> = out.findings.iter().map(|f| f.label.as_str()).collect();
        assert_eq!(
            labels,
            ["redacted:email", "redacted:phone", "redacted:card"]
        );
        for f in &out.findings {
            assert!(f.score.is_none());
            let span = f.span.unwrap();
            let masked = &d.text[span.start as usize..span.end as usize];
            assert_eq!(
                format!("redacted:{}", &masked[1..masked.len() - 1].to_lowercase()),
                f.label
            );
        }
        assert_eq!(
            out.findings[0].data,
            r#"{"kind":"email","original_bytes":16}"#
        );
        assert_eq!(
            out.findings[1].data,
            r#"{"kind":"phone","original_bytes":14}"#
        );
        assert_eq!(
            out.findings[2].data,
            r#"{"kind":"card","original_bytes":19}"#
        );
    }

    #[test]
    fn never_leaks_originals() {
        let text = "bob@example.com 4111 1111 1111 1111 +44 20 7946 0321";
        let out = process(doc(text)).unwrap();
        let everything = format!(
            "{} {:?}",
            out.document.text,
            out.findings.iter().map(|f| &f.data).collect::<Vec<_>>()
        );
        for secret in ["bob", "example", "4111", "7946", "0321"] {
            assert!(!everything.contains(secret), "{secret} leaked");
        }
    }

    #[test]
    fn text_without_pii_is_unchanged() {
        let text = "Order 123456 arrived on 2024-03-15 at 10:30 for $1,299.00.";
        let out = process(doc(text)).unwrap();
        assert_eq!(out.document.text, text);
        assert!(out.findings.is_empty());
    }
}
