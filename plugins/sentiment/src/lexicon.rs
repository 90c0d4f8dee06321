//! The polarity lexicon shipped in `lexicon.tsv`, parsed once on first use.

use std::sync::OnceLock;

const SOURCE: &str = include_str!("../lexicon.tsv");

/// Entries of a lexicon file: `Ok((word, weight))` per entry line, `Err` naming
/// the line when it is malformed. Comment (`#`) and blank lines are skipped.
fn entries(source: &str) -> impl Iterator<Item = Result<(&str, i8), String>> {
    source
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty() && !line.starts_with('#'))
        .map(|(n, line)| {
            let bad = || format!("lexicon.tsv line {}: {line:?}", n + 1);
            let (word, weight) = line.split_once('\t').ok_or_else(bad)?;
            let weight: i8 = weight.trim().parse().map_err(|_| bad())?;
            if word.is_empty() || !(-3..=3).contains(&weight) {
                return Err(bad());
            }
            Ok((word, weight))
        })
}

fn table() -> &'static [(&'static str, i8)] {
    static TABLE: OnceLock<Vec<(&'static str, i8)>> = OnceLock::new();
    TABLE.get_or_init(|| {
        // Malformed lines are rejected by the tests; skipping them here keeps a
        // bad edit from taking the plugin down.
        let mut table: Vec<_> = entries(SOURCE).filter_map(Result::ok).collect();
        table.sort_unstable_by(|a, b| a.0.cmp(b.0));
        table.dedup_by(|a, b| a.0 == b.0);
        table
    })
}

/// The weight (-3..=3) of a lowercase word, if the lexicon lists it. Weight 0
/// means neutral unless negated.
pub fn weight(lowercase_word: &str) -> Option<i8> {
    let table = table();
    table
        .binary_search_by(|(w, _)| (*w).cmp(lowercase_word))
        .ok()
        .map(|i| table[i].1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_is_well_formed() {
        let errors: Vec<String> = entries(SOURCE).filter_map(Result::err).collect();
        assert!(errors.is_empty(), "{errors:#?}");
        assert!(
            SOURCE.starts_with('#'),
            "the file starts with a header comment"
        );
    }

    #[test]
    fn has_enough_unique_lowercase_words() {
        let words: Vec<&str> = entries(SOURCE)
            .filter_map(Result::ok)
            .map(|e| e.0)
            .collect();
        assert!(words.len() >= 500, "only {} entries", words.len());
        let mut sorted = words.clone();
        sorted.sort_unstable();
        let dupes: Vec<_> = sorted.windows(2).filter(|w| w[0] == w[1]).collect();
        assert!(dupes.is_empty(), "duplicates: {dupes:?}");
        for w in words {
            assert_eq!(w, w.to_lowercase(), "not lowercase");
            assert!(!w.contains('’'), "{w}: typographic apostrophe");
            assert!(!w.contains(char::is_whitespace), "{w}: whitespace");
        }
    }

    #[test]
    fn looks_up_weights() {
        assert_eq!(weight("excellent"), Some(3));
        assert_eq!(weight("helpful"), Some(2));
        assert_eq!(weight("frustrated"), Some(-2));
        assert_eq!(weight("unacceptable"), Some(-3));
        assert_eq!(weight("delayed"), Some(-1));
        assert_eq!(weight("refund"), Some(0));
        assert_eq!(weight("router"), None);
        assert_eq!(weight(""), None);
    }

    #[test]
    fn rejects_malformed_lines() {
        let src = "# header\n\nok\t1\nnotab 1\nbig\t4\nnan\tx\n";
        let parsed: Vec<_> = entries(src).collect();
        assert_eq!(parsed[0], Ok(("ok", 1)));
        assert!(parsed[1..].iter().all(Result::is_err));
        assert_eq!(parsed.len(), 4);
    }
}
