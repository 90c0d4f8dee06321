//! The `keywords` analysis plugin: reports the document's most prominent words
//! and repeated short phrases (up to 15), each with a relative score, its first
//! occurrence as the span, and every occurrence in the finding's data.
//!
//! The extraction rules live in [`extract`].

pub mod extract;

use std::fmt::Write as _;

use assay_plugin::analyzer::{Document, Finding, Guest, Manifest, PluginError, Span, Stage};
use assay_plugin::text::{TOO_LONG_FOR_SPANS, json_string, span_offset, spans_fit};

/// Most findings reported for one document.
const MAX_FINDINGS: usize = 15;

/// The plugin, as the component exports it.
pub struct Keywords;

impl Guest for Keywords {
    fn describe() -> Manifest {
        Manifest {
            name: "keywords".into(),
            version: "0.1.0".into(),
            description: "Extracts the most prominent keywords and repeated key phrases.".into(),
            stage: Stage::Analysis,
            priority: 0,
            kinds: Vec::new(),
            triggers: Vec::new(),
            migrations: Vec::new(),
        }
    }

    fn analyze(doc: Document) -> Result<Vec<Finding>, PluginError> {
        findings(&doc.text)
    }
}

assay_plugin::export_analyzer!(Keywords);

fn findings(text: &str) -> Result<Vec<Finding>, PluginError> {
    // Spans are u32 in the contract; checking the length once makes every
    // offset conversion below infallible.
    if !spans_fit(text) {
        return Err(PluginError::InvalidInput(TOO_LONG_FOR_SPANS.into()));
    }
    let offset = span_offset;
    Ok(extract::extract(text, MAX_FINDINGS)
        .into_iter()
        .map(|k| Finding {
            label: "keyword".into(),
            score: Some(k.score),
            span: k.spans.first().map(|&(start, end)| Span {
                start: offset(start),
                end: offset(end),
            }),
            data: data_json(&k),
        })
        .collect())
}

/// `{"term":…,"count":…,"occurrences":[[start,end],…]}`
fn data_json(k: &extract::Keyword) -> String {
    let mut out = format!(
        "{{\"term\":{},\"count\":{},\"occurrences\":[",
        json_string(&k.term),
        k.count
    );
    for (i, (start, end)) in k.spans.iter().enumerate() {
        let sep = if i == 0 { "" } else { "," };
        // Writing into a String cannot fail.
        let _ = write!(out, "{sep}[{start},{end}]");
    }
    out.push_str("]}");
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn manifest() {
        let m = Keywords::describe();
        assert_eq!(m.name, "keywords");
        assert_eq!(m.version, "0.1.0");
        assert!(matches!(m.stage, Stage::Analysis));
        assert_eq!(m.priority, 0);
        assert!(m.kinds.is_empty() && m.triggers.is_empty() && m.migrations.is_empty());
    }

    #[test]
    fn empty_text_has_no_findings() {
        assert!(findings("").unwrap().is_empty());
        assert!(findings(" \n\t  ").unwrap().is_empty());
    }

    #[test]
    fn findings_carry_term_occurrences_and_first_span() {
        let text = "Café “router reset” failed. Another router reset worked. Router reset done.";
        let f = findings(text).unwrap();
        let first = &f[0];
        assert_eq!(first.label, "keyword");
        assert_eq!(first.score, Some(1.0));
        let span = first.span.unwrap();
        assert_eq!(
            &text[span.start as usize..span.end as usize],
            "router reset"
        );
        let occurrences = extract::extract(text, 1)[0]
            .spans
            .iter()
            .map(|(s, e)| format!("[{s},{e}]"))
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(
            first.data,
            format!(r#"{{"term":"router reset","count":3,"occurrences":[{occurrences}]}}"#)
        );
    }

    #[test]
    fn at_most_fifteen_findings() {
        let text = (0..40)
            .map(|i| format!("word{i}abc"))
            .collect::<Vec<_>>()
            .join(". ");
        assert_eq!(findings(&text).unwrap().len(), MAX_FINDINGS);
    }

    #[test]
    fn data_escapes_terms() {
        let k = extract::Keyword {
            term: "a\"b\\c".into(),
            count: 1,
            spans: vec![(0, 5)],
            score: 1.0,
        };
        assert_eq!(
            data_json(&k),
            r#"{"term":"a\"b\\c","count":1,"occurrences":[[0,5]]}"#
        );
    }
}
