//! Keyword extraction, free of any plugin glue so it can be tested natively.
//!
//! Candidates come from RAKE-style runs: inside one sentence, stop words and
//! punctuation split the text into runs of content words, and only words and
//! phrases inside a single run are candidates. A candidate is
//!
//! * a single word with at least three letters (so pure numbers never qualify), or
//! * a phrase of two or three consecutive words of one run that occurs at least
//!   twice, contains at least one such word and does not start with a number
//!   (quantities like "14 days" are not topics; identifiers like "error 404"
//!   may be).
//!
//! Speaker labels at the start of a line ("Agent (Priya):", "customer:") are
//! skipped, so the participants' names do not dominate a transcript's keywords.
//!
//! **Redundancy rule.** Each word occurrence is credited to at most one term, the
//! longest phrase that claims it: three-word phrases claim their occurrences
//! first, then two-word phrases take what is left, then single words. A phrase
//! whose unclaimed occurrences drop below two is not reported, and a word is
//! reported only with the occurrences no phrase claimed (and not at all when none
//! are left). So "router reset" seen three times and "router" seen once more on
//! its own give `router reset` ×3 and `router` ×1, not `router` ×4 besides.
//!
//! **Score.** A term's weight is `count × words in the term`, so a phrase counts
//! once per word it covers, like a RAKE phrase scoring the sum of its words. The
//! reported score is that weight divided by the heaviest term's weight: the top
//! term scores 1.0 and every other term lies in (0, 1].

use std::collections::HashMap;

use assay_plugin::text::{is_stop_word, sentences, speaker_labels, words};

/// One extracted keyword or key phrase.
#[derive(Debug, Clone, PartialEq)]
pub struct Keyword {
    /// Lowercase; a single word or a phrase of 2–3 words joined by single spaces.
    pub term: String,
    /// How many occurrences were credited to this term (see the redundancy rule).
    pub count: u32,
    /// Byte range of every credited occurrence, in text order.
    pub spans: Vec<(usize, usize)>,
    /// Weight relative to the top term, in (0, 1].
    pub score: f64,
}

/// Longest phrase considered, in words.
const MAX_PHRASE_WORDS: usize = 3;

/// A phrase must be seen at least this often to be reported.
const MIN_PHRASE_COUNT: usize = 2;

struct Word {
    lower: String,
    start: usize,
    end: usize,
}

/// Lowercases and folds the typographic apostrophe so "customer’s" and
/// "customer's" are the same term.
fn normalise(word: &str) -> String {
    word.to_lowercase().replace('’', "'")
}

fn is_number(word: &str) -> bool {
    word.chars().all(|c| c.is_ascii_digit())
}

fn is_keyword_word(lower: &str) -> bool {
    lower.chars().filter(|c| c.is_alphabetic()).count() >= 3
}

/// The words of `text` and the runs (index ranges into the words) of content
/// words that may form a phrase.
fn runs(text: &str) -> (Vec<Word>, Vec<std::ops::Range<usize>>) {
    let labels = speaker_labels(text);
    let in_label = |i: usize| {
        let next = labels.partition_point(|&(_, end)| end <= i);
        labels.get(next).is_some_and(|&(start, _)| start <= i)
    };
    let mut all = Vec::new();
    let mut runs = Vec::new();
    for (s, e) in sentences(text) {
        let mut run_start: Option<usize> = None;
        let mut prev_end = s;
        for token in words(&text[s..e]) {
            let (start, end) = (s + token.start, s + token.end);
            let lower = normalise(token.text);
            // Anything but whitespace between two words (a comma, a colon, a
            // dash) breaks the phrase, as in RAKE.
            let joined = text[prev_end..start].chars().all(char::is_whitespace);
            prev_end = end;
            let idx = all.len();
            // Speaker names in transcripts ("Agent (Priya):") would otherwise
            // top every list.
            let stop = is_stop_word(&lower) || in_label(start);
            if (stop || !joined)
                && let Some(rs) = run_start.take()
            {
                runs.push(rs..idx);
            }
            if !stop && run_start.is_none() {
                run_start = Some(idx);
            }
            all.push(Word { lower, start, end });
        }
        if let Some(rs) = run_start {
            runs.push(rs..all.len());
        }
    }
    (all, runs)
}

/// The keywords of `text`, best first (score descending, then term), at most
/// `max_terms` of them.
pub fn extract(text: &str, max_terms: usize) -> Vec<Keyword> {
    let (all, runs) = runs(text);
    let mut claimed = vec![false; all.len()];
    // (term, word count, first word index of every credited occurrence)
    let mut accepted: Vec<(String, usize, Vec<usize>)> = Vec::new();

    for n in (2..=MAX_PHRASE_WORDS).rev() {
        let mut grams: HashMap<String, Vec<usize>> = HashMap::new();
        for run in runs.iter().filter(|r| r.len() >= n) {
            for first in run.start..=run.end - n {
                let window = &all[first..first + n];
                if is_number(&window[0].lower) || !window.iter().any(|w| is_keyword_word(&w.lower))
                {
                    continue;
                }
                let term = window
                    .iter()
                    .map(|w| w.lower.as_str())
                    .collect::<Vec<_>>()
                    .join(" ");
                grams.entry(term).or_default().push(first);
            }
        }
        let mut grams: Vec<(String, Vec<usize>)> = grams
            .into_iter()
            .filter(|(_, at)| at.len() >= MIN_PHRASE_COUNT)
            .collect();
        // Frequent phrases claim contested words first; the term breaks ties so
        // the outcome does not depend on hash order.
        grams.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then_with(|| a.0.cmp(&b.0)));
        for (term, positions) in grams {
            let mut free = Vec::new();
            for first in positions {
                let range = first..first + n;
                // Overlapping occurrences of the same phrase ("a b a b a") are
                // also excluded, as the earlier one has just claimed the words.
                if range.clone().all(|i| !claimed[i]) && free.last().is_none_or(|&f| f + n <= first)
                {
                    free.push(first);
                }
            }
            if free.len() >= MIN_PHRASE_COUNT {
                for &first in &free {
                    claimed[first..first + n].fill(true);
                }
                accepted.push((term, n, free));
            }
        }
    }

    let mut singles: HashMap<&str, Vec<usize>> = HashMap::new();
    for run in &runs {
        for i in run.clone() {
            if !claimed[i] && is_keyword_word(&all[i].lower) {
                singles.entry(all[i].lower.as_str()).or_default().push(i);
            }
        }
    }
    accepted.extend(singles.into_iter().map(|(t, at)| (t.to_owned(), 1, at)));

    let weight = |n: usize, at: &[usize]| at.len() * n;
    let Some(top) = accepted.iter().map(|(_, n, at)| weight(*n, at)).max() else {
        return Vec::new();
    };
    accepted.sort_by(|a, b| {
        weight(b.1, &b.2)
            .cmp(&weight(a.1, &a.2))
            .then_with(|| a.0.cmp(&b.0))
    });
    accepted.truncate(max_terms);
    accepted
        .into_iter()
        .map(|(term, n, at)| Keyword {
            count: u32::try_from(at.len()).unwrap_or(u32::MAX),
            score: weight(n, &at) as f64 / top as f64,
            spans: at
                .iter()
                .map(|&first| (all[first].start, all[first + n - 1].end))
                .collect(),
            term,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms(keywords: &[Keyword]) -> Vec<&str> {
        keywords.iter().map(|k| k.term.as_str()).collect()
    }

    fn find<'a>(keywords: &'a [Keyword], term: &str) -> Option<&'a Keyword> {
        keywords.iter().find(|k| k.term == term)
    }

    #[test]
    fn empty_and_stop_word_only_text_has_no_keywords() {
        assert!(extract("", 10).is_empty());
        assert!(extract("  \n\t ", 10).is_empty());
        assert!(extract("Okay, yeah, thanks. Um, hi!", 10).is_empty());
    }

    #[test]
    fn short_texts() {
        assert_eq!(terms(&extract("Router", 10)), ["router"]);
        assert_eq!(terms(&extract("Router reset.", 10)), ["reset", "router"]);
        assert_eq!(
            terms(&extract("The router, then a reset", 10)),
            ["reset", "router"]
        );
    }

    #[test]
    fn repeated_phrase_absorbs_its_words() {
        let text = "The router reset failed. I tried a router reset again. \
                    Another router reset worked. The router is old.";
        let kw = extract(text, 10);
        let phrase = find(&kw, "router reset").expect("phrase reported");
        assert_eq!(phrase.count, 3);
        assert_eq!(phrase.score, 1.0);
        assert_eq!(kw[0].term, "router reset");
        for &(s, e) in &phrase.spans {
            assert_eq!(&text[s..e], "router reset");
        }
        let router = find(&kw, "router").expect("standalone word reported");
        assert_eq!(router.count, 1);
        assert_eq!(&text[router.spans[0].0..router.spans[0].1], "router");
        assert!(
            find(&kw, "reset").is_none(),
            "every 'reset' belongs to the phrase"
        );
    }

    #[test]
    fn three_word_phrase_beats_its_two_word_parts() {
        let text = "Broadband speed test failed. Please run another broadband speed test.";
        let kw = extract(text, 10);
        let phrase = find(&kw, "broadband speed test").expect("phrase reported");
        assert_eq!(phrase.count, 2);
        assert!(find(&kw, "broadband speed").is_none());
        assert!(find(&kw, "speed test").is_none());
        assert!(find(&kw, "speed").is_none());
    }

    #[test]
    fn phrases_need_two_occurrences_and_stay_inside_runs() {
        let kw = extract("Billing error, account locked. Billing account.", 10);
        assert!(find(&kw, "billing error").is_none(), "seen once only");
        // A comma separates "error" and "account": not a phrase.
        assert!(find(&kw, "error account").is_none());
        assert_eq!(find(&kw, "billing").map(|k| k.count), Some(2));
        // Phrases never cross sentence boundaries.
        let kw = extract("We replaced the modem. Cable arrived. Modem cable.", 10);
        assert!(find(&kw, "modem cable").is_none());
    }

    #[test]
    fn short_words_and_numbers_are_not_keywords() {
        let kw = extract("Order 12345 and order 12345 for TV in 2024.", 10);
        assert_eq!(terms(&kw), ["order 12345"]);
        assert!(find(&kw, "12345").is_none());
        assert!(find(&kw, "tv").is_none());
        assert!(find(&kw, "2024").is_none());
    }

    #[test]
    fn sorted_by_score_then_term_and_truncated() {
        let text = "Delta alpha. Beta gamma. Alpha beta. Alpha.";
        let kw = extract(text, 10);
        assert_eq!(terms(&kw), ["alpha", "beta", "delta", "gamma"]);
        assert_eq!(kw[0].count, 3);
        assert!((kw[1].score - 2.0 / 3.0).abs() < 1e-12);
        assert!(kw.windows(2).all(|w| w[0].score >= w[1].score));
        assert_eq!(terms(&extract(text, 2)), ["alpha", "beta"]);
        assert!(extract(text, 0).is_empty());
    }

    #[test]
    fn case_and_apostrophes_are_folded() {
        let text = "Customer’s invoice. The customer's invoice! CUSTOMER'S INVOICE?";
        let kw = extract(text, 10);
        assert_eq!(kw[0].term, "customer's invoice");
        assert_eq!(kw[0].count, 3);
    }

    #[test]
    fn spans_are_byte_ranges_in_non_ascii_text() {
        let text = "Le café crème était froid 😀. Un café crème chaud, s’il vous plaît. “Naïve” naïve design.";
        let kw = extract(text, 20);
        let phrase = find(&kw, "café crème").expect("phrase reported");
        assert_eq!(phrase.count, 2);
        for k in &kw {
            for &(s, e) in &k.spans {
                assert!(text.is_char_boundary(s) && text.is_char_boundary(e));
                assert_eq!(normalise(&text[s..e]), k.term);
            }
        }
        assert_eq!(find(&kw, "naïve").map(|k| k.count), Some(2));
    }

    #[test]
    fn speaker_labels_are_skipped() {
        let text = "Agent (Priya): Your parcel is delayed.\nCustomer: Which parcel?\n\
                    Agent (Priya): The parcel from Lyon.\nCustomer (Émile): Ah, Lyon.";
        let kw = extract(text, 10);
        assert_eq!(terms(&kw), ["parcel", "lyon", "delayed"]);
        assert!(find(&kw, "priya").is_none() && find(&kw, "émile").is_none());
    }

    #[test]
    fn phrases_do_not_start_with_numbers() {
        let kw = extract(
            "Wait 14 days. Then 14 days more. Error 404 again, error 404.",
            10,
        );
        assert!(find(&kw, "14 days").is_none());
        assert_eq!(find(&kw, "days").map(|k| k.count), Some(2));
        assert_eq!(find(&kw, "error 404").map(|k| k.count), Some(2));
    }

    #[test]
    fn overlapping_repeats_are_not_double_counted() {
        let kw = extract("Ping pong ping pong ping.", 10);
        let phrase = find(&kw, "ping pong").expect("phrase reported");
        assert_eq!(phrase.count, 2);
        assert_eq!(find(&kw, "ping").map(|k| k.count), Some(1));
        assert!(find(&kw, "pong ping").is_none());
    }
}
