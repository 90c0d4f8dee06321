//! Lexicon-based sentence sentiment.
//!
//! Each word found in the lexicon contributes its weight `w` (-3..=3), adjusted
//! by the words right before it:
//!
//! * an intensifier immediately before ("very", "extremely", "really") multiplies
//!   by 1.5, a dampener ("slightly", "somewhat", "a bit", "kind of") by 0.5;
//! * a negator up to three words before, in the same clause ("not", "never",
//!   "no", "without", any "n't" contraction), flips the sign and scales by 0.75:
//!   "not helpful" is -1.5, "no problem" +0.75. A negated intensified word flips
//!   the unintensified weight and scales by 0.5 ("not very good" is milder than
//!   "not good");
//! * lexicon words of weight 0 ("work", "refund", "arrived") count only when
//!   negated, as -1.5: "didn't work", "no refund", "never arrived".
//!
//! A clause ends at punctuation between words or at "but", "although",
//! "however", so "No, it works" is not a negation.
//!
//! The contributions of a sentence add up to `s`, normalised into (-1, 1) as
//! `s / sqrt(s² + 15)` (one "helpful" scores 0.46, one "excellent" 0.61). A
//! sentence is positive at a score of at least [`THRESHOLD`], negative at
//! `-THRESHOLD` or below, and neutral in between.

use assay_plugin::text::{sentences, words};

use crate::lexicon;

/// Smallest absolute score of a non-neutral sentence.
pub const THRESHOLD: f64 = 0.05;

/// Controls how fast the normalised score approaches ±1 as weights add up.
const ALPHA: f64 = 15.0;

const INTENSIFIER: f64 = 1.5;
const DAMPENER: f64 = 0.5;
const NEGATION: f64 = -0.75;
const NEGATED_INTENSIFIED: f64 = -0.5;
/// Contribution of a negated weight-0 word, as much as "not helpful".
const NEGATED_NEUTRAL: f64 = -1.5;
/// How many words before a lexicon word a negator may stand.
const NEGATION_WINDOW: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Polarity {
    Positive,
    Negative,
    Neutral,
}

impl Polarity {
    fn of(score: f64) -> Self {
        if score >= THRESHOLD {
            Self::Positive
        } else if score <= -THRESHOLD {
            Self::Negative
        } else {
            Self::Neutral
        }
    }

    /// `positive`, `negative` or `neutral`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Positive => "positive",
            Self::Negative => "negative",
            Self::Neutral => "neutral",
        }
    }
}

/// The sentiment of one sentence.
#[derive(Debug, Clone, PartialEq)]
pub struct SentenceSentiment {
    /// Byte range of the sentence in the analysed text.
    pub start: usize,
    pub end: usize,
    /// In -1.0..=1.0.
    pub score: f64,
    pub polarity: Polarity,
    /// The lowercase expressions that pushed the score up ("excellent",
    /// "no problem"), modifiers included, in text order.
    pub positive: Vec<String>,
    /// The same for expressions that pushed it down ("not helpful").
    pub negative: Vec<String>,
}

const INTENSIFIERS: &[&str] = &[
    "absolutely",
    "completely",
    "deeply",
    "especially",
    "exceptionally",
    "extremely",
    "highly",
    "hugely",
    "incredibly",
    "most",
    "particularly",
    "really",
    "remarkably",
    "seriously",
    "so",
    "super",
    "too",
    "totally",
    "truly",
    "utterly",
    "very",
];

const DAMPENERS: &[&str] = &[
    "fairly",
    "kinda",
    "marginally",
    "mildly",
    "partially",
    "partly",
    "rather",
    "slightly",
    "somewhat",
    "sorta",
];

/// Two-word dampeners, e.g. "a bit slow".
const DAMPENER_PAIRS: &[(&str, &str)] = &[
    ("a", "bit"),
    ("a", "little"),
    ("kind", "of"),
    ("sort", "of"),
];

const NEGATORS: &[&str] = &[
    "aint", "arent", "barely", "cannot", "cant", "couldnt", "didnt", "doesnt", "dont", "hadnt",
    "hardly", "hasnt", "havent", "isnt", "neither", "never", "no", "nobody", "none", "nor", "not",
    "nothing", "nowhere", "scarcely", "shouldnt", "wasnt", "werent", "without", "wont", "wouldnt",
];

/// Words that start a new clause, ending the reach of an earlier negator.
const CLAUSE_BREAKS: &[&str] = &["although", "but", "however", "though", "yet"];

fn is_negator(word: &str) -> bool {
    word.ends_with("n't") || NEGATORS.contains(&word)
}

struct Word {
    lower: String,
    start: usize,
    end: usize,
}

/// Sentiment of every sentence of `text`, in text order.
pub fn analyze(text: &str) -> Vec<SentenceSentiment> {
    sentences(text)
        .into_iter()
        .map(|(start, end)| score_sentence(text, start, end))
        .collect()
}

fn score_sentence(text: &str, start: usize, end: usize) -> SentenceSentiment {
    let sentence = &text[start..end];
    let tokens: Vec<Word> = words(sentence)
        .map(|t| Word {
            lower: t.text.to_lowercase().replace('’', "'"),
            start: start + t.start,
            end: start + t.end,
        })
        .collect();

    let mut sum = 0.0;
    let mut positive = Vec::new();
    let mut negative = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        let Some(weight) = lexicon::weight(&token.lower) else {
            continue;
        };
        let w = f64::from(weight);
        // Where the reported expression starts: the earliest modifier used.
        let mut from = token.start;

        let (modifier, modifier_start) = modifier_before(text, &tokens, i);
        if let Some(m) = modifier_start {
            from = m;
        }
        let negator = negator_before(text, &tokens, i);
        let value = match (negator, modifier) {
            (Some(_), _) if weight == 0 => NEGATED_NEUTRAL,
            (Some(_), Modifier::Intensified) => NEGATED_INTENSIFIED * w,
            (Some(_), m) => NEGATION * w * m.multiplier(),
            (None, m) => w * m.multiplier(),
        };
        if let Some(n) = negator {
            from = from.min(tokens[n].start);
        }
        let expression = text[from..token.end].to_lowercase();
        if value > 0.0 {
            positive.push(expression);
        } else if value < 0.0 {
            negative.push(expression);
        }
        sum += value;
    }

    let score = normalise(sum);
    SentenceSentiment {
        start,
        end,
        score,
        polarity: Polarity::of(score),
        positive,
        negative,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Modifier {
    Plain,
    Intensified,
    Dampened,
}

impl Modifier {
    fn multiplier(self) -> f64 {
        match self {
            Self::Plain => 1.0,
            Self::Intensified => INTENSIFIER,
            Self::Dampened => DAMPENER,
        }
    }
}

/// The intensifier or dampener right before word `i` (in the same clause), and
/// where it starts.
fn modifier_before(text: &str, tokens: &[Word], i: usize) -> (Modifier, Option<usize>) {
    let joined = |a: usize| a < i && clause_joined(text, &tokens[a], &tokens[a + 1]);
    let Some(prev) = i.checked_sub(1).filter(|&p| joined(p)) else {
        return (Modifier::Plain, None);
    };
    let word = tokens[prev].lower.as_str();
    if INTENSIFIERS.contains(&word) {
        return (Modifier::Intensified, Some(tokens[prev].start));
    }
    if DAMPENERS.contains(&word) {
        return (Modifier::Dampened, Some(tokens[prev].start));
    }
    if let Some(first) = prev.checked_sub(1).filter(|&f| joined(f))
        && DAMPENER_PAIRS.contains(&(tokens[first].lower.as_str(), word))
    {
        return (Modifier::Dampened, Some(tokens[first].start));
    }
    (Modifier::Plain, None)
}

/// Whether only whitespace separates two adjacent words, i.e. no punctuation
/// ends a clause between them.
fn clause_joined(text: &str, before: &Word, after: &Word) -> bool {
    text[before.end..after.start]
        .chars()
        .all(char::is_whitespace)
}

/// Index of the nearest negator within [`NEGATION_WINDOW`] words before word
/// `i`, looking no further back than the start of its clause.
fn negator_before(text: &str, tokens: &[Word], i: usize) -> Option<usize> {
    let mut j = i;
    while j > 0 && i - j < NEGATION_WINDOW {
        if !clause_joined(text, &tokens[j - 1], &tokens[j]) {
            return None;
        }
        j -= 1;
        let word = tokens[j].lower.as_str();
        if CLAUSE_BREAKS.contains(&word) {
            return None;
        }
        if is_negator(word) {
            return Some(j);
        }
    }
    None
}

/// Maps a sum of weights into (-1, 1): `s / sqrt(s² + ALPHA)`.
fn normalise(sum: f64) -> f64 {
    if sum == 0.0 {
        return 0.0;
    }
    (sum / (sum * sum + ALPHA).sqrt()).clamp(-1.0, 1.0)
}

/// The document's sentiment: the mean of the sentence scores, in -1.0..=1.0
/// (0.0 without sentences). Neutral sentences count, so a long, mostly factual
/// document scores closer to 0 than its few emotional sentences.
pub fn overall(sentences: &[SentenceSentiment]) -> f64 {
    if sentences.is_empty() {
        return 0.0;
    }
    let sum: f64 = sentences.iter().map(|s| s.score).sum();
    (sum / sentences.len() as f64).clamp(-1.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> SentenceSentiment {
        let mut all = analyze(text);
        assert_eq!(all.len(), 1, "{text:?} is one sentence");
        all.remove(0)
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn lists_are_sorted() {
        for list in [INTENSIFIERS, DAMPENERS, NEGATORS, CLAUSE_BREAKS] {
            assert!(list.windows(2).all(|w| w[0] < w[1]), "{list:?}");
        }
    }

    #[test]
    fn plain_positive_and_negative() {
        let s = one("The agent was helpful.");
        assert_eq!(s.polarity, Polarity::Positive);
        assert!(close(s.score, normalise(2.0)));
        assert_eq!(s.positive, ["helpful"]);
        assert!(s.negative.is_empty());

        let s = one("This is unacceptable and I am frustrated!");
        assert_eq!(s.polarity, Polarity::Negative);
        assert!(close(s.score, normalise(-5.0)));
        assert_eq!(s.negative, ["unacceptable", "frustrated"]);
    }

    #[test]
    fn neutral_sentence() {
        let s = one("My account number ends in 42.");
        assert_eq!(s.polarity, Polarity::Neutral);
        assert_eq!(s.score, 0.0);
        assert!(s.positive.is_empty() && s.negative.is_empty());
    }

    #[test]
    fn negation_flips_and_softens() {
        let s = one("The agent was not helpful.");
        assert_eq!(s.polarity, Polarity::Negative);
        assert!(close(s.score, normalise(-1.5)));
        assert_eq!(s.negative, ["not helpful"]);

        let s = one("My issue was never resolved.");
        // "issue" -1 plus "never resolved" -1.5.
        assert!(close(s.score, normalise(-2.5)));
        assert_eq!(s.negative, ["issue", "never resolved"]);
    }

    #[test]
    fn no_problem_is_positive() {
        let s = one("No problem at all.");
        assert_eq!(s.polarity, Polarity::Positive);
        assert_eq!(s.positive, ["no problem"]);
        let s = one("That’s not a problem.");
        assert_eq!(s.polarity, Polarity::Positive);
        assert_eq!(s.positive, ["not a problem"]);
    }

    #[test]
    fn negated_neutral_words_are_negative() {
        for (text, expr) in [
            ("The reset didn't work.", "didn't work"),
            ("The reset didn’t work.", "didn’t work"),
            ("I got no refund.", "no refund"),
            ("The parcel never arrived.", "never arrived"),
            ("It doesnt work", "doesnt work"),
        ] {
            let s = one(text);
            assert_eq!(s.polarity, Polarity::Negative, "{text}");
            assert_eq!(s.negative, [expr], "{text}");
        }
        assert_eq!(one("The reset worked.").polarity, Polarity::Neutral);
    }

    #[test]
    fn intensifiers_and_dampeners() {
        let plain = one("It was helpful.").score;
        let very = one("It was very helpful.");
        let slightly = one("It was slightly helpful.");
        let a_bit = one("It was a bit slow.");
        assert!(very.score > plain && plain > slightly.score && slightly.score > 0.0);
        assert!(close(very.score, normalise(3.0)));
        assert!(close(slightly.score, normalise(1.0)));
        assert_eq!(very.positive, ["very helpful"]);
        assert_eq!(a_bit.negative, ["a bit slow"]);
        assert!(close(a_bit.score, normalise(-0.5)));
        assert!(close(one("Extremely rude staff.").score, normalise(-3.0)));
    }

    #[test]
    fn negated_intensifier_is_milder_than_negation() {
        let not_very = one("It was not very helpful.");
        let not = one("It was not helpful.");
        assert!(close(not_very.score, normalise(-1.0)));
        assert!(not_very.score > not.score);
        assert_eq!(not_very.negative, ["not very helpful"]);
    }

    #[test]
    fn negation_stays_in_its_clause_and_window() {
        assert_eq!(one("No, it was helpful.").polarity, Polarity::Positive);
        assert_eq!(one("Not cheap but excellent.").polarity, Polarity::Positive);
        // The negator is four words back: out of reach.
        assert_eq!(
            one("I never thought it would be this helpful.").positive,
            ["helpful"]
        );
    }

    #[test]
    fn score_stays_in_range() {
        let s = one(&"excellent ".repeat(200));
        assert!(s.score <= 1.0 && s.score > 0.99);
        let s = one(&"terrible ".repeat(200));
        assert!(s.score >= -1.0 && s.score < -0.99);
    }

    #[test]
    fn spans_and_non_ascii() {
        let text = "Le café était excellent 😀! The “refund” never arrived… Naïve question.";
        let all = analyze(text);
        assert_eq!(all.len(), 3);
        let texts: Vec<&str> = all.iter().map(|s| &text[s.start..s.end]).collect();
        assert_eq!(
            texts,
            [
                "Le café était excellent 😀!",
                "The “refund” never arrived…",
                "Naïve question."
            ]
        );
        assert_eq!(all[0].polarity, Polarity::Positive);
        assert_eq!(all[1].negative, ["never arrived"]);
        assert_eq!(all[2].polarity, Polarity::Neutral);
    }

    #[test]
    fn overall_is_the_mean() {
        assert_eq!(overall(&[]), 0.0);
        let all = analyze("Excellent service. The bill is here. Terrible wait times.");
        assert_eq!(all.len(), 3);
        let mean = all.iter().map(|s| s.score).sum::<f64>() / 3.0;
        assert!(close(overall(&all), mean));
        let all = analyze("Thanks, very helpful! Everything was resolved quickly.");
        assert!(overall(&all) > THRESHOLD);
    }

    #[test]
    fn polarity_thresholds() {
        assert_eq!(Polarity::of(0.05), Polarity::Positive);
        assert_eq!(Polarity::of(0.049), Polarity::Neutral);
        assert_eq!(Polarity::of(-0.05), Polarity::Negative);
        assert_eq!(Polarity::Negative.label(), "negative");
    }
}
