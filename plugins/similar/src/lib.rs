//! `similar`: finds the earlier documents most like this one, and remembers
//! this one for the documents after it.
//!
//! It keeps its own memory, in its own schema (the table its migrations
//! make): each document it sees (after the prompt stage, so redacted text is
//! what is kept), its full-text vector (`to_tsvector('english', …)`, with a
//! GIN index) and its embedding (the host's `inference.embed`: the operator's
//! embedding model, or the built-in hashing embedder when none is set).
//!
//! A document is compared with every remembered one (a scan: fine for the
//! tens of thousands of documents a team analyses; the GIN index serves
//! full-text queries of the memory, `words @@ …`) on three measures, each
//! from 0 to 1:
//! - `text`: the share of this document's key terms (its most frequent
//!   words, stemmed by the `english` text-search configuration) that the
//!   remembered document contains;
//! - `trigram`: `pg_trgm` similarity of the two texts' first
//!   [`TRIGRAM_CHARS`] characters (word similarity for a search), where the
//!   engine could install `pg_trgm` (it then lives in `assay_extensions`);
//!   left out of the score otherwise;
//! - `embedding`: cosine similarity of the embeddings, when both were made by
//!   the same model: by pgvector's `cosine_distance` where the engine could
//!   offer pgvector (it then lives in `assay_extensions` too), otherwise as
//!   the dot product of the (unit-length) arrays in SQL. Each finding says
//!   which (`embedding_by`: `pgvector` or `arrays`).
//!
//! The score is the mean of the measures available. The [`MATCHES`] best
//! with a score of at least [`MIN_SCORE`] become `similar:document` findings,
//! each naming the document (`document`, its id), its `kind`, first line
//! (`title`) and every measure (`measures`: `text`, `trigram`, `embedding`;
//! null where not available).
//!
//! A document of kind `search` (what `assay search "text"` sends) is
//! compared but never remembered.

use assay_plugin::analyzer::{Document, Finding, Guest, Manifest, PluginError};
use assay_plugin::sql::{self, Value};
use assay_plugin::types::{Migration, Stage};
use assay_plugin::{Explain, inference, text};
use serde_json::json;

/// Findings per document at most.
pub const MATCHES: usize = 5;
/// The least score reported.
pub const MIN_SCORE: f64 = 0.05;
/// Characters of each text compared by trigrams (the rest adds little and costs time).
pub const TRIGRAM_CHARS: usize = 4000;
/// Key terms of a document searched for by full text.
pub const TERMS: usize = 24;
/// The kind of a document that is compared but not remembered.
pub const SEARCH_KIND: &str = "search";

/// pgvector's most dimensions: longer embeddings are compared as arrays.
pub const PGVECTOR_MAX_DIMENSIONS: usize = 16_000;

/// Whether this role may execute every one of `signatures` (false, not an
/// error, where one does not exist): a SQL expression.
fn all_executable(signatures: &[&str]) -> String {
    let quoted: Vec<String> = signatures.iter().map(|s| format!("'{s}'")).collect();
    format!(
        "(SELECT count(f) = {} AND coalesce(bool_and(has_function_privilege(f, 'EXECUTE')), false)
          FROM (SELECT to_regprocedure(name) AS f FROM unnest(ARRAY[{}]) AS name) AS offered)",
        signatures.len(),
        quoted.join(", ")
    )
}

/// Whether this role can use the engine's `pg_trgm`, and its pgvector. The
/// vector type is looked up first: a function whose argument type does not
/// exist is an error to `to_regprocedure` on older servers, not a null.
fn extensions_available() -> String {
    format!(
        "SELECT {}, CASE WHEN to_regtype('assay_extensions.vector') IS NULL THEN false ELSE {} END",
        all_executable(&[
            "assay_extensions.similarity(text,text)",
            "assay_extensions.word_similarity(text,text)",
        ]),
        all_executable(&[
            "assay_extensions.cosine_distance(assay_extensions.vector,assay_extensions.vector)",
            "assay_extensions.array_to_vector(real[],integer,boolean)",
        ]),
    )
}

/// The plugin.
pub struct Similar;

/// This document's key terms: its most frequent words that are not stop
/// words, lowercase, letters and digits only (so nothing in them is a
/// `tsquery` operator).
pub fn key_terms(text: &str, most: usize) -> Vec<String> {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for token in text::words(text) {
        let word: String = token
            .text
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric())
            .collect();
        if word.len() < 3 || text::is_stop_word(&word) {
            continue;
        }
        match counts.iter_mut().find(|(w, _)| *w == word) {
            Some((_, n)) => *n += 1,
            None => counts.push((word, 1)),
        }
    }
    // Most frequent first; ties by first appearance (the sort is stable).
    counts.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    counts.into_iter().take(most).map(|(w, _)| w).collect()
}

/// The ranking statement: every remembered document but this one, scored.
/// Its parameters: the key terms, the embedding, its model, the document's
/// id, and (only with trigrams) the text.
fn ranking(trigrams: bool, pgvector: bool, search: bool) -> String {
    let embedding = if pgvector {
        // pgvector's distance is NaN for a zero vector: no similarity.
        "CASE WHEN cardinality(r.embedding) = cardinality($2::text::real[])
              THEN coalesce(greatest(0, 1 - nullif(assay_extensions.cosine_distance(
                       r.embedding::assay_extensions.vector,
                       $2::text::real[]::assay_extensions.vector), 'NaN')), 0)::float8
         END"
    } else {
        "greatest(0, (SELECT sum(a * b) FROM unnest(r.embedding, $2::text::real[]) AS e(a, b)))::float8"
    };
    let trigram = match (trigrams, search) {
        (false, _) => "NULL::float8".to_string(),
        (true, true) => "assay_extensions.word_similarity($5::text, r.text)::float8".to_string(),
        (true, false) => format!(
            "assay_extensions.similarity(left(r.text, {TRIGRAM_CHARS}), left($5::text, {TRIGRAM_CHARS}))::float8"
        ),
    };
    format!(
        "SELECT document::text, kind, title, text_score, trigram_score, embedding_score
         FROM (
           SELECT r.document, r.kind, r.title,
                  CASE WHEN cardinality(q.lexemes) > 0
                       THEN (SELECT count(*) FROM unnest(q.lexemes) AS l(lexeme)
                             WHERE r.words @@ l.lexeme::tsquery)::float8 / cardinality(q.lexemes)
                       ELSE 0
                  END AS text_score,
                  {trigram} AS trigram_score,
                  CASE WHEN r.embedding_model = $3::text THEN {embedding} END AS embedding_score
           FROM remembered r,
                (SELECT tsvector_to_array(to_tsvector('english', $1::text)) AS lexemes) q
           WHERE r.document <> $4::text::uuid
         ) scored
         ORDER BY (text_score + coalesce(trigram_score, 0) + coalesce(embedding_score, 0))
                  / (1 + (trigram_score IS NOT NULL)::int + (embedding_score IS NOT NULL)::int) DESC,
                  document
         LIMIT 50"
    )
}

const REMEMBER: &str =
    "INSERT INTO remembered (document, kind, title, text, words, embedding_model, embedding)
     VALUES ($1::text::uuid, $2, $3, $4, to_tsvector('english', $4), $5, $6::text::real[])
     ON CONFLICT (document) DO UPDATE SET kind = excluded.kind, title = excluded.title,
         text = excluded.text, words = excluded.words,
         embedding_model = excluded.embedding_model, embedding = excluded.embedding,
         remembered_at = now()";

/// A vector as a PostgreSQL array literal (`{0.1,-0.2}`).
pub fn array_literal(vector: &[f32]) -> String {
    let items: Vec<String> = vector.iter().map(|x| format!("{x:e}")).collect();
    format!("{{{}}}", items.join(","))
}

/// A document's first line, for people reading the findings.
pub fn title(text: &str) -> String {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    match line.char_indices().nth(80) {
        Some((end, _)) => format!("{}…", &line[..end]),
        None => line.to_string(),
    }
}

/// The mean of the measures present.
pub fn score(measures: &[Option<f64>]) -> f64 {
    let present: Vec<f64> = measures.iter().flatten().copied().collect();
    if present.is_empty() {
        0.0
    } else {
        present.iter().sum::<f64>() / present.len() as f64
    }
}

fn float(value: Option<&Value>) -> Option<f64> {
    match value {
        Some(Value::Float(f)) => Some(*f),
        _ => None,
    }
}

fn text_of(value: Option<&Value>) -> String {
    match value {
        Some(Value::Text(t)) => t.clone(),
        _ => String::new(),
    }
}

fn analyze(doc: &Document) -> Result<Vec<Finding>, String> {
    let search = doc.kind == SEARCH_KIND;
    let embedded = inference::embed(std::slice::from_ref(&doc.text), None)
        .map_err(|e| format!("embedding the document: {}", e.explain()))?;
    let vector = embedded
        .vectors
        .first()
        .ok_or("the host returned no embedding")?;
    let vector_text = array_literal(vector);
    let available = sql::query(&extensions_available(), &[])
        .map_err(|e| format!("checking for pg_trgm and pgvector: {}", e.explain()))?;
    let offered = |column: usize| {
        matches!(
            available.rows.first().and_then(|r| r.get(column)),
            Some(Value::Boolean(true))
        )
    };
    let trigrams = offered(0);
    let pgvector = offered(1) && vector.len() <= PGVECTOR_MAX_DIMENSIONS;
    let terms = key_terms(&doc.text, TERMS).join(" ");
    let mut params = vec![
        Value::Text(terms),
        Value::Text(vector_text.clone()),
        Value::Text(embedded.model.clone()),
        Value::Text(doc.id.clone()),
    ];
    if trigrams {
        params.push(Value::Text(doc.text.clone()));
    }
    let ranked = sql::query(&ranking(trigrams, pgvector, search), &params)
        .map_err(|e| format!("ranking remembered documents: {}", e.explain()))?;
    let mut findings = Vec::new();
    for row in &ranked.rows {
        let (text, trigram, embedding) = (float(row.get(3)), float(row.get(4)), float(row.get(5)));
        let score = score(&[text, trigram, embedding]);
        if score < MIN_SCORE || findings.len() == MATCHES {
            continue;
        }
        findings.push(Finding {
            label: "similar:document".into(),
            score: Some(score),
            span: None,
            data: json!({
                "document": text_of(row.first()),
                "kind": text_of(row.get(1)),
                "title": text_of(row.get(2)),
                "measures": {"text": text, "trigram": trigram, "embedding": embedding},
                "embedding_model": embedded.model,
                "embedding_by": if pgvector { "pgvector" } else { "arrays" },
            })
            .to_string(),
        });
    }
    if !search {
        sql::execute(
            REMEMBER,
            &[
                Value::Text(doc.id.clone()),
                Value::Text(doc.kind.clone()),
                Value::Text(title(&doc.text)),
                Value::Text(doc.text.clone()),
                Value::Text(embedded.model),
                Value::Text(vector_text),
            ],
        )
        .map_err(|e| format!("remembering the document: {}", e.explain()))?;
    }
    Ok(findings)
}

impl Guest for Similar {
    fn describe() -> Manifest {
        Manifest {
            name: "similar".into(),
            version: "0.2.0".into(),
            description: "finds the earlier documents most like this one, by full text, trigrams and embeddings".into(),
            stage: Stage::Analysis,
            priority: 0,
            kinds: vec![],
            triggers: vec![],
            migrations: vec![
                Migration {
                version: 1,
                description: "remembered documents, with their full-text vectors and embeddings".into(),
                statement: "CREATE TABLE remembered (
                    document uuid PRIMARY KEY,
                    kind text NOT NULL,
                    title text NOT NULL,
                    text text NOT NULL,
                    words tsvector NOT NULL,
                    embedding_model text NOT NULL,
                    embedding real[] NOT NULL,
                    remembered_at timestamptz NOT NULL DEFAULT now())"
                    .into(),
            },
                Migration {
                    version: 2,
                    description: "the full-text index".into(),
                    statement: "CREATE INDEX remembered_words ON remembered USING gin (words)".into(),
                },
            ],
        }
    }

    fn analyze(doc: Document) -> Result<Vec<Finding>, PluginError> {
        analyze(&doc).map_err(PluginError::Failed)
    }
}

assay_plugin::export_analyzer!(Similar);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_terms_are_frequent_plain_words() {
        let terms = key_terms(
            "The luggage was lost. Lost luggage, lost bags! Bag's tag: 42x; naïve",
            4,
        );
        assert_eq!(terms, ["lost", "luggage", "bags", "tag"]);
        assert!(key_terms("naïve naïve", 1) == ["naïve"]);
        assert!(key_terms("a an the of", 5).is_empty());
    }

    #[test]
    fn the_score_is_the_mean_of_the_measures_present() {
        assert_eq!(score(&[Some(0.2), None, Some(0.6)]), 0.4);
        assert_eq!(score(&[None, None, None]), 0.0);
    }

    #[test]
    fn vectors_and_titles_are_written_for_postgres_and_people() {
        assert_eq!(array_literal(&[0.5, -0.25]), "{5e-1,-2.5e-1}");
        assert_eq!(title("\n  Caller: hello \nmore"), "Caller: hello");
        assert_eq!(title(&"x".repeat(100)).chars().count(), 81);
    }
}
