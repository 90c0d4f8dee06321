//! The plugin's pure logic: which terms a document is about, and which group it
//! belongs to.

use std::collections::HashMap;

/// A term of the document: lowercase word, how often it occurs, where it first occurs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    pub term: String,
    pub count: i64,
    pub first: (usize, usize),
}

/// The document's most frequent content words (not stop words, at least four
/// letters, not numbers), most frequent first, ties alphabetical; at most `max`.
pub fn top_terms(text: &str, max: usize) -> Vec<Term> {
    let mut terms: HashMap<String, Term> = HashMap::new();
    for token in assay_plugin::text::words(text) {
        if token.text.chars().count() < 4 || token.text.chars().any(|c| c.is_ascii_digit()) {
            continue;
        }
        let lower = token.text.to_lowercase();
        if assay_plugin::text::is_stop_word(&lower) {
            continue;
        }
        terms
            .entry(lower.clone())
            .and_modify(|t| t.count += 1)
            .or_insert(Term {
                term: lower,
                count: 1,
                first: (token.start, token.end),
            });
    }
    let mut terms: Vec<Term> = terms.into_values().collect();
    terms.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.term.cmp(&b.term)));
    terms.truncate(max);
    terms
}

/// The group a document is compared within: its `group` metadata value, or else
/// its kind (so all transcripts without a group form one group).
pub fn group_of(metadata_json: &str, kind: &str) -> String {
    // A tiny look-up instead of a JSON parser: the host guarantees a JSON object,
    // and only a top-level string value of "group" is used.
    find_string_field(metadata_json, "group").unwrap_or_else(|| format!("kind:{kind}"))
}

fn find_string_field(json: &str, field: &str) -> Option<String> {
    let needle = format!("\"{field}\"");
    let at = json.find(&needle)? + needle.len();
    let rest = json[at..].trim_start().strip_prefix(':')?.trim_start();
    let rest = rest.strip_prefix('"')?;
    let mut value = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(value),
            '\\' => match chars.next()? {
                'n' => value.push('\n'),
                't' => value.push('\t'),
                'u' => {
                    let hex: String = chars.by_ref().take(4).collect();
                    value.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                }
                other => value.push(other),
            },
            c => value.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_terms_counts_content_words_only() {
        let text = "The router failed. The router was reset, and the refund for the router came.";
        let terms = top_terms(text, 3);
        assert_eq!(terms[0].term, "router");
        assert_eq!(terms[0].count, 3);
        assert_eq!(&text[terms[0].first.0..terms[0].first.1], "router");
        assert!(terms.iter().all(|t| t.term != "the" && t.term != "was"));
    }

    #[test]
    fn top_terms_skips_numbers_and_short_words() {
        let terms = top_terms("at 5550132 now, ok? Café café CAFÉ", 10);
        assert_eq!(terms.len(), 1, "{terms:?}");
        assert_eq!(terms[0].term, "café");
        assert_eq!(terms[0].count, 3);
    }

    #[test]
    fn group_comes_from_metadata_or_kind() {
        assert_eq!(
            group_of(r#"{"channel":"web","group":"northwind"}"#, "chat"),
            "northwind"
        );
        assert_eq!(group_of(r#"{"group" : "a\"b"}"#, "chat"), "a\"b");
        assert_eq!(group_of("{}", "transcript"), "kind:transcript");
        assert_eq!(group_of(r#"{"group": 5}"#, "chat"), "kind:chat");
    }
}
