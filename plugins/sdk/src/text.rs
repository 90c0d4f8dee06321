//! Text helpers: word tokens, sentence ranges, speaker labels, an English
//! stop-word list, span offsets and a JSON string escaper.
//!
//! Every position is a byte offset into the UTF-8 input, end exclusive, and always
//! falls on a character boundary, so `&text[start..end]` never panics.

/// A word and where it sits in the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token<'a> {
    /// The word itself, a slice of the text.
    pub text: &'a str,
    /// Byte offset of its first character.
    pub start: usize,
    /// Byte offset just past its last character.
    pub end: usize,
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric()
}

/// Characters that may join two word characters into one word.
fn is_inner_joiner(c: char) -> bool {
    matches!(c, '\'' | '’' | '-')
}

/// Words: maximal runs of alphanumeric characters, allowing inner apostrophes
/// (`'` and `’`) and inner hyphens ("don't", "follow-up", "wi-fi"). Numbers count
/// as words. A joiner is part of a word only when a word character follows it,
/// so quotes and dashes around a word are left out.
pub fn words(text: &str) -> impl Iterator<Item = Token<'_>> {
    let mut chars = text.char_indices().peekable();
    std::iter::from_fn(move || {
        let start = loop {
            let (i, c) = chars.next()?;
            if is_word_char(c) {
                break i;
            }
        };
        let mut end = text.len();
        while let Some(&(i, c)) = chars.peek() {
            if is_word_char(c) {
                chars.next();
            } else if is_inner_joiner(c) {
                // Look one character past the joiner without consuming it, so a
                // trailing joiner ("students'") stays outside the word.
                let after = text[i + c.len_utf8()..].chars().next();
                if after.is_some_and(is_word_char) {
                    chars.next();
                } else {
                    end = i;
                    break;
                }
            } else {
                end = i;
                break;
            }
        }
        Some(Token {
            text: &text[start..end],
            start,
            end,
        })
    })
}

/// Abbreviations whose final period does not end a sentence (lowercase, without
/// the final period).
const ABBREVIATIONS: &[&str] = &[
    "a.m", "approx", "apt", "ave", "capt", "cf", "col", "corp", "dept", "dr", "e.g", "fig", "i.e",
    "inc", "jr", "lt", "ltd", "mr", "mrs", "ms", "mt", "p.m", "ph.d", "prof", "ref", "rev", "sgt",
    "sr", "st", "u.k", "u.s", "vs",
];

/// Characters that may follow a sentence terminator and still belong to the
/// sentence (closing quotes and brackets).
fn is_closer(c: char) -> bool {
    matches!(c, '"' | '\'' | '’' | '”' | ')' | ']' | '}' | '»')
}

/// The word (letters, digits and inner periods) that ends right before `dot`.
fn word_before(text: &str, dot: usize) -> &str {
    let start = text[..dot]
        .char_indices()
        .rev()
        .take_while(|&(_, c)| c.is_alphanumeric() || c == '.')
        .last()
        .map_or(dot, |(i, _)| i);
    &text[start..dot]
}

/// Whether the period at `dot` belongs to an abbreviation rather than ending the
/// sentence.
fn is_abbreviation(text: &str, dot: usize) -> bool {
    let word = word_before(text, dot).trim_start_matches('.');
    if word.is_empty() {
        return false;
    }
    let lower = word.to_lowercase();
    // Dotted forms like "e.g" or "U.S.A" are abbreviations whatever their letters.
    let dotted = lower.contains('.') && lower.split('.').all(|p| p.chars().count() == 1);
    dotted || ABBREVIATIONS.contains(&lower.as_str())
}

/// Byte ranges of sentences, trimmed of surrounding whitespace, never empty.
///
/// A sentence ends at `.`, `!`, `?` or `…` (runs such as `?!` or `...` and
/// closing quotes or brackets stay with it) when whitespace or the end of the
/// text follows. A period or ellipsis does not end a sentence when the next word
/// starts in lowercase, nor does a single period after a known abbreviation
/// ("e.g.", "Mr.", "Dr."). Decimals ("3.5") never split because no whitespace
/// follows their period. A line break ends a sentence (transcripts put one
/// utterance on a line) unless the next line starts in lowercase, which marks a
/// hard-wrapped continuation; a blank line always ends one.
pub fn sentences(text: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut push = |from: usize, to: usize| {
        let piece = &text[from..to];
        let trimmed = piece.trim_start();
        let s = from + (piece.len() - trimmed.len());
        let e = s + trimmed.trim_end().len();
        if e > s {
            out.push((s, e));
        }
    };
    let mut iter = text.char_indices().peekable();
    while let Some((i, c)) = iter.next() {
        match c {
            '.' | '!' | '?' | '…' => {
                let mut end = i + c.len_utf8();
                while let Some(&(j, d)) = iter.peek() {
                    if matches!(d, '.' | '!' | '?' | '…') || is_closer(d) {
                        end = j + d.len_utf8();
                        iter.next();
                    } else {
                        break;
                    }
                }
                let rest = &text[end..];
                let Some(next) = rest.chars().next() else {
                    continue;
                };
                if !next.is_whitespace() {
                    continue;
                }
                if matches!(c, '.' | '…') {
                    let next_word = rest.trim_start().chars().next();
                    let abbreviation = c == '.' && end == i + 1 && is_abbreviation(text, i);
                    if abbreviation || next_word.is_some_and(char::is_lowercase) {
                        continue;
                    }
                }
                push(start, end);
                start = end;
            }
            '\n' => {
                let rest = &text[i + 1..];
                let blank_line = rest
                    .split('\n')
                    .next()
                    .is_some_and(|line| line.trim().is_empty() && rest.contains('\n'));
                let continues = rest
                    .trim_start_matches([' ', '\t', '\r'])
                    .chars()
                    .next()
                    .is_some_and(char::is_lowercase);
                if blank_line || !continues {
                    push(start, i);
                    start = i + 1;
                }
            }
            _ => {}
        }
    }
    push(start, text.len());
    out
}

/// Longest speaker label, in bytes, colon excluded.
const MAX_LABEL_BYTES: usize = 40;
/// Most words in a speaker label ("Agent (Maria Lopez)").
const MAX_LABEL_WORDS: usize = 4;

/// Byte ranges of speaker labels such as `Agent:`, `customer:` or
/// `Agent (Priya):` at the start of a line, colon included.
///
/// A label starts with a letter, has at most four words of letters, digits,
/// spaces, parentheses, dots, apostrophes or hyphens, is at most 40 bytes long,
/// and its colon is followed by whitespace or the end of the line (so times
/// like "10:30" never end a label).
pub fn speaker_labels(text: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut line_start = 0;
    for line in text.split_inclusive('\n') {
        let indent = line.len() - line.trim_start_matches([' ', '\t']).len();
        let body = &line[indent..];
        if let Some(colon) = body.find(':')
            && colon <= MAX_LABEL_BYTES
        {
            let label = &body[..colon];
            let after = body[colon + 1..].chars().next();
            let allowed = |c: char| {
                c.is_alphanumeric() || matches!(c, ' ' | '(' | ')' | '.' | '\'' | '’' | '-')
            };
            if label.chars().next().is_some_and(char::is_alphabetic)
                && label.chars().all(allowed)
                && words(label).count() <= MAX_LABEL_WORDS
                && after.is_none_or(char::is_whitespace)
            {
                let start = line_start + indent;
                out.push((start, start + colon + 1));
            }
        }
        line_start += line.len();
    }
    out
}

/// English stop words, sorted so they can be binary-searched.
#[rustfmt::skip]
const STOP_WORDS: &[&str] = &[
    "a", "about", "above", "absolutely", "across", "actually", "after", "again", "against",
    "agent", "ago", "ah", "ain't", "all", "along", "already", "alright", "also", "am", "among",
    "an", "and", "another", "any", "anybody", "anyone", "anything", "anyway", "anyways", "are",
    "aren't", "around", "as", "ask", "asked", "at", "back", "basically", "be", "because", "been",
    "before", "being", "below", "between", "bit", "both", "but", "by", "bye", "came", "can",
    "can't", "cannot", "certainly", "come", "completely", "could", "couldn't", "customer",
    "definitely", "did", "didn't", "do", "does", "doesn't", "doing", "don't", "done", "down",
    "during", "each", "either", "else", "er", "even", "ever", "every", "everyone", "everything",
    "few", "for", "from", "further", "gave", "get", "gets", "give", "go", "goes", "going", "gone",
    "gonna", "got", "guess", "had", "hadn't", "has", "hasn't", "have", "haven't", "having", "he",
    "he'd", "he'll", "he's", "hello", "her", "here", "here's", "hers", "herself", "hey", "hi",
    "him", "himself", "his", "hmm", "how", "how's", "i", "i'd", "i'll", "i'm", "i've", "if", "in",
    "into", "is", "isn't", "it", "it's", "its", "itself", "just", "kinda", "know", "let", "let's",
    "like", "literally", "look", "looked", "looks", "lot", "lots", "made", "make", "makes",
    "maybe", "me", "mean", "mhm", "might", "mine", "more", "most", "much", "must", "mustn't", "my",
    "myself", "need", "needed", "needs", "new", "next", "no", "nor", "not", "nothing", "now", "of",
    "off", "oh", "ok", "okay", "on", "once", "one", "only", "onto", "or", "other", "ought", "our",
    "ours", "ourselves", "out", "over", "own", "per", "please", "pretty", "probably", "put",
    "quite", "really", "right", "said", "same", "say", "says", "see", "shall", "shan't", "she",
    "she'd", "she'll", "she's", "should", "shouldn't", "since", "so", "some", "somebody",
    "someone", "something", "sorry", "sorta", "still", "such", "sure", "take", "taken", "tell",
    "than", "thank", "thanks", "that", "that's", "the", "their", "theirs", "them", "themselves",
    "then", "there", "there's", "these", "they", "they'd", "they'll", "they're", "they've",
    "thing", "things", "think", "this", "those", "though", "through", "to", "today", "told",
    "tomorrow", "too", "took", "toward", "towards", "uh", "uh-huh", "um", "umm", "under", "until",
    "up", "upon", "us", "very", "via", "wanna", "want", "wanted", "wants", "was", "wasn't", "way",
    "we", "we'd", "we'll", "we're", "we've", "well", "went", "were", "weren't", "what", "what's",
    "when", "when's", "where", "where's", "whether", "which", "while", "who", "who's", "whom",
    "whose", "why", "why's", "will", "with", "within", "without", "won't", "would", "wouldn't",
    "yeah", "yep", "yes", "yesterday", "yet", "you", "you'd", "you'll", "you're", "you've", "your",
    "yours", "yourself", "yourselves", "yup",
];

/// Whether a lowercase word is an English stop word: articles, pronouns,
/// auxiliaries, prepositions, conjunctions, conversational fillers ("okay",
/// "yeah", "um", "thanks") and the speaker labels "agent" and "customer". The
/// typographic apostrophe is accepted in place of `'`.
pub fn is_stop_word(lowercase_word: &str) -> bool {
    if lowercase_word.contains('’') {
        let plain = lowercase_word.replace('’', "'");
        return STOP_WORDS.binary_search(&plain.as_str()).is_ok();
    }
    STOP_WORDS.binary_search(&lowercase_word).is_ok()
}

/// Why a text is refused when its byte offsets do not fit the contract's `u32` spans.
pub const TOO_LONG_FOR_SPANS: &str = "text longer than 4 GiB cannot be addressed by u32 spans";

/// Whether every byte offset of `text` fits in a `u32` span of the plugin contract.
pub fn spans_fit(text: &str) -> bool {
    u32::try_from(text.len()).is_ok()
}

/// A byte offset as a span offset; exact for any text where [`spans_fit`] holds.
pub fn span_offset(i: usize) -> u32 {
    u32::try_from(i).unwrap_or(u32::MAX)
}

/// `s` as a JSON string literal, quotes included.
pub fn json_string(s: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0C}' => out.push_str("\\f"),
            // Writing into a String cannot fail.
            c if c < ' ' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn word_texts(text: &str) -> Vec<&str> {
        words(text).map(|t| t.text).collect()
    }

    fn sentence_texts(text: &str) -> Vec<&str> {
        sentences(text)
            .into_iter()
            .map(|(s, e)| &text[s..e])
            .collect()
    }

    #[test]
    fn words_split_on_spaces_and_punctuation() {
        assert_eq!(
            word_texts("Hello, world! It's 3 p.m."),
            ["Hello", "world", "It's", "3", "p", "m"]
        );
    }

    #[test]
    fn words_keep_inner_apostrophes_and_hyphens() {
        assert_eq!(
            word_texts("I don’t need a follow-up on the wi-fi; can't say."),
            [
                "I",
                "don’t",
                "need",
                "a",
                "follow-up",
                "on",
                "the",
                "wi-fi",
                "can't",
                "say"
            ]
        );
    }

    #[test]
    fn words_drop_outer_joiners() {
        assert_eq!(
            word_texts("'quoted' -dash- students' -- x--y"),
            ["quoted", "dash", "students", "x", "y"]
        );
    }

    #[test]
    fn words_report_byte_offsets_on_non_ascii_text() {
        let text = "Le café “naïve” 😀 über-cool";
        let tokens: Vec<Token<'_>> = words(text).collect();
        assert_eq!(
            tokens.iter().map(|t| t.text).collect::<Vec<_>>(),
            ["Le", "café", "naïve", "über-cool"]
        );
        for t in &tokens {
            assert_eq!(&text[t.start..t.end], t.text);
        }
        assert_eq!(tokens[1].start, 3);
        assert_eq!(tokens[1].end, 8);
    }

    #[test]
    fn words_count_numbers() {
        assert_eq!(
            word_texts("order 12345, 3.5 stars"),
            ["order", "12345", "3", "5", "stars"]
        );
        assert_eq!(word_texts(""), Vec::<&str>::new());
        assert_eq!(word_texts(" \n\t!?"), Vec::<&str>::new());
    }

    #[test]
    fn sentences_split_on_terminators() {
        assert_eq!(
            sentence_texts("  Hello there. How are you?  Great!!  "),
            ["Hello there.", "How are you?", "Great!!"]
        );
    }

    #[test]
    fn sentences_keep_abbreviations_and_decimals() {
        assert_eq!(
            sentence_texts(
                "Mr. Smith paid 3.5 dollars, e.g. a tip. Dr. Who agreed. The U.S. team won."
            ),
            [
                "Mr. Smith paid 3.5 dollars, e.g. a tip.",
                "Dr. Who agreed.",
                "The U.S. team won."
            ]
        );
    }

    #[test]
    fn sentences_keep_closing_quotes() {
        assert_eq!(
            sentence_texts("She said “it’s broken.” Then she left… Really?! Wait… what? Yes."),
            [
                "She said “it’s broken.”",
                "Then she left…",
                "Really?!",
                "Wait… what?",
                "Yes."
            ]
        );
    }

    #[test]
    fn sentences_split_on_line_breaks() {
        let text =
            "Agent: Hello, how can I help\nCustomer: My router is broken\n\nAgent: Sorry to hear";
        assert_eq!(
            sentence_texts(text),
            [
                "Agent: Hello, how can I help",
                "Customer: My router is broken",
                "Agent: Sorry to hear"
            ]
        );
    }

    #[test]
    fn sentences_join_wrapped_lines() {
        assert_eq!(
            sentence_texts("The engineer arrived\nlate and left early.\nNext item."),
            ["The engineer arrived\nlate and left early.", "Next item."]
        );
    }

    #[test]
    fn sentences_handle_non_ascii_and_emoji() {
        let text = "Le café était fermé. Très naïve 😀! Ça va?";
        let ranges = sentences(text);
        assert_eq!(
            sentence_texts(text),
            ["Le café était fermé.", "Très naïve 😀!", "Ça va?"]
        );
        for (s, e) in ranges {
            assert!(text.is_char_boundary(s) && text.is_char_boundary(e));
        }
    }

    #[test]
    fn sentences_skip_empty_input() {
        assert!(sentences("").is_empty());
        assert!(sentences("  \n\n \t ").is_empty());
        assert_eq!(sentence_texts("no terminator"), ["no terminator"]);
    }

    #[test]
    fn speaker_labels_at_line_starts() {
        let text = "Agent (Priya): Hello.\ncustomer: hi at 10:30\n  Dr. Émile Ça-va: oui\n\
                    Note that: this is prose, not a label\n**Rating:** good\n\
                    - E-mail: x\nTime 10:30 now\nOrder: HO-1";
        let labels: Vec<&str> = speaker_labels(text)
            .into_iter()
            .map(|(s, e)| &text[s..e])
            .collect();
        assert_eq!(
            labels,
            [
                "Agent (Priya):",
                "customer:",
                "Dr. Émile Ça-va:",
                "Note that:",
                "Order:"
            ]
        );
        assert!(speaker_labels("").is_empty());
        assert!(speaker_labels("A very long sentence with many words in it: no").is_empty());
        assert_eq!(speaker_labels("Agent:"), [(0, 6)]);
    }

    #[test]
    fn stop_words_are_sorted_and_unique() {
        assert!(
            STOP_WORDS.windows(2).all(|w| w[0] < w[1]),
            "STOP_WORDS must be sorted"
        );
    }

    #[test]
    fn stop_words_cover_fillers_and_labels() {
        for w in [
            "the", "and", "you", "is", "okay", "yeah", "um", "uh", "hi", "thanks", "agent",
            "customer", "don't", "don’t",
        ] {
            assert!(is_stop_word(w), "{w} should be a stop word");
        }
        for w in ["router", "refund", "café", "broken", ""] {
            assert!(!is_stop_word(w), "{w} should not be a stop word");
        }
    }

    #[test]
    fn json_string_escapes() {
        assert_eq!(json_string("plain"), r#""plain""#);
        assert_eq!(json_string(r#"say "hi" \ bye"#), r#""say \"hi\" \\ bye""#);
        assert_eq!(json_string("a\nb\tc\r"), r#""a\nb\tc\r""#);
        assert_eq!(
            json_string("\u{0}\u{8}\u{c}\u{1f}"),
            r#""\u0000\b\f\u001f""#
        );
        assert_eq!(json_string("café “naïve” 😀"), "\"café “naïve” 😀\"");
        assert_eq!(json_string(""), r#""""#);
    }
}
