//! The `sentiment` analysis plugin: scores every sentence against a
//! hand-written English polarity lexicon (with negation, intensifiers and
//! dampeners), reports each positive or negative sentence with the expressions
//! that made it so, and adds one document-level score.
//!
//! The scoring rules live in [`score`]; the lexicon is `lexicon.tsv`.

mod lexicon;
pub mod score;

use assay_plugin::text::json_string;

use assay_plugin::analyzer::{Document, Finding, Guest, Manifest, PluginError};
use assay_plugin::types::{Span, Stage};
use score::{Polarity, SentenceSentiment};

/// The plugin, as the component exports it.
pub struct Sentiment;

impl Guest for Sentiment {
    fn describe() -> Manifest {
        Manifest {
            name: "sentiment".into(),
            version: "0.1.0".into(),
            description: "Scores the sentiment of each sentence and of the whole document.".into(),
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

assay_plugin::export_analyzer!(Sentiment);

fn findings(text: &str) -> Result<Vec<Finding>, PluginError> {
    // Spans are u32 in the contract; checking the length once makes every
    // offset conversion below infallible.
    if !assay_plugin::text::spans_fit(text) {
        return Err(PluginError::InvalidInput(
            assay_plugin::text::TOO_LONG_FOR_SPANS.into(),
        ));
    }
    let offset = assay_plugin::text::span_offset;
    let sentences = score::analyze(text);
    let count = |p: Polarity| sentences.iter().filter(|s| s.polarity == p).count();
    let (positive, negative) = (count(Polarity::Positive), count(Polarity::Negative));

    let mut out: Vec<Finding> = sentences
        .iter()
        .filter(|s| s.polarity != Polarity::Neutral)
        .map(|s| Finding {
            label: format!("sentiment:{}", s.polarity.label()),
            score: Some(s.score),
            span: Some(Span {
                start: offset(s.start),
                end: offset(s.end),
            }),
            data: sentence_json(s),
        })
        .collect();
    out.push(Finding {
        label: "sentiment:overall".into(),
        score: Some(score::overall(&sentences)),
        span: None,
        data: format!(
            "{{\"sentences\":{},\"positive\":{positive},\"negative\":{negative}}}",
            sentences.len()
        ),
    });
    Ok(out)
}

/// `{"positive":[…],"negative":[…]}`
fn sentence_json(s: &SentenceSentiment) -> String {
    let list = |items: &[String]| {
        items
            .iter()
            .map(|i| json_string(i))
            .collect::<Vec<_>>()
            .join(",")
    };
    format!(
        "{{\"positive\":[{}],\"negative\":[{}]}}",
        list(&s.positive),
        list(&s.negative)
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn manifest() {
        let m = Sentiment::describe();
        assert_eq!(m.name, "sentiment");
        assert_eq!(m.version, "0.1.0");
        assert!(matches!(m.stage, Stage::Analysis));
        assert_eq!(m.priority, 0);
        assert!(m.kinds.is_empty() && m.triggers.is_empty() && m.migrations.is_empty());
    }

    #[test]
    fn empty_text_has_only_the_overall_finding() {
        let f = findings("  \n ").unwrap();
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].label, "sentiment:overall");
        assert_eq!(f[0].score, Some(0.0));
        assert!(f[0].span.is_none());
        assert_eq!(f[0].data, r#"{"sentences":0,"positive":0,"negative":0}"#);
    }

    #[test]
    fn one_finding_per_non_neutral_sentence_plus_overall() {
        let text = "Agent: Thanks for calling.\nCustomer: The “router” isn’t working, it’s frustrating.\n\
                    Customer: My account is 42.\nAgent: No problem, very glad to help — café’s on us 😀!";
        let f = findings(text).unwrap();
        let labels: Vec<&str> = f.iter().map(|f| f.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "sentiment:positive",
                "sentiment:negative",
                "sentiment:positive",
                "sentiment:overall"
            ]
        );
        let neg = &f[1];
        let span = neg.span.unwrap();
        assert_eq!(
            &text[span.start as usize..span.end as usize],
            "Customer: The “router” isn’t working, it’s frustrating."
        );
        assert!(neg.score.unwrap() <= -score::THRESHOLD);
        assert_eq!(
            neg.data,
            r#"{"positive":[],"negative":["isn’t working","frustrating"]}"#
        );
        assert_eq!(
            f[2].data,
            r#"{"positive":["no problem","very glad"],"negative":[]}"#
        );
        let overall = &f[3];
        assert!(overall.span.is_none());
        assert_eq!(overall.data, r#"{"sentences":4,"positive":2,"negative":1}"#);
        assert!(overall.score.unwrap().abs() <= 1.0);
    }

    #[test]
    fn data_escapes_expressions() {
        let s = SentenceSentiment {
            start: 0,
            end: 1,
            score: 0.5,
            polarity: Polarity::Positive,
            positive: vec!["say \"great\"".into()],
            negative: Vec::new(),
        };
        assert_eq!(
            sentence_json(&s),
            r#"{"positive":["say \"great\""],"negative":[]}"#
        );
    }
}
