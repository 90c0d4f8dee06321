//! `history`: how often this document's key terms appeared in earlier documents
//! of the same group (the `group` metadata value, e.g. `--meta group=acme`).
//!
//! It is also the example of database access from a plugin:
//! - its table lives in its own schema, created by a migration it ships in its
//!   manifest (the host applies it once);
//! - `sql::query` / `sql::execute` with bound parameters, including a text array;
//! - `state` for a small per-group counter;
//! - everything it writes in one call commits or rolls back together.

mod terms;

use assay::plugin::sql::{self, Value};
use assay::plugin::types::{Migration, Span, Stage};
use assay::plugin::{log, state};

wit_bindgen::generate!({ world: "analyzer", path: "../../wit/v0.1" });

/// Terms per document that are looked up and counted.
const TERMS_PER_DOCUMENT: usize = 12;

struct History;

impl Guest for History {
    fn describe() -> Manifest {
        Manifest {
            name: "history".into(),
            version: "0.1.0".into(),
            description:
                "How often this document's key terms appeared in earlier documents of its group"
                    .into(),
            stage: Stage::Analysis,
            priority: 0,
            kinds: vec![],
            triggers: vec![],
            migrations: vec![
                Migration {
                    version: 1,
                    description: "term counts per group".into(),
                    statement: "CREATE TABLE term_counts (
                        grp text NOT NULL,
                        term text NOT NULL,
                        documents integer NOT NULL CHECK (documents > 0),
                        mentions bigint NOT NULL CHECK (mentions > 0),
                        PRIMARY KEY (grp, term))"
                        .into(),
                },
                Migration {
                    version: 2,
                    description: "documents already counted per group".into(),
                    statement: "CREATE TABLE counted_documents (
                        grp text NOT NULL,
                        document uuid NOT NULL,
                        terms text[] NOT NULL,
                        counts bigint[] NOT NULL,
                        PRIMARY KEY (grp, document))"
                        .into(),
                },
            ],
        }
    }

    fn analyze(doc: Document) -> Result<Vec<Finding>, PluginError> {
        analyze(&doc).map_err(|e| PluginError::Failed(e))
    }
}

fn db_error(e: sql::SqlError) -> String {
    match e {
        sql::SqlError::Db(db) => format!("database error {}: {}", db.code, db.message),
        sql::SqlError::Denied(m) => format!("denied: {m}"),
        sql::SqlError::Timeout => "timed out".into(),
        sql::SqlError::TooLarge(m) => format!("too large: {m}"),
        sql::SqlError::Unavailable(m) => format!("database unavailable: {m}"),
    }
}

fn analyze(doc: &Document) -> Result<Vec<Finding>, String> {
    let group = terms::group_of(&doc.metadata, &doc.kind);
    let terms = terms::top_terms(&doc.text, TERMS_PER_DOCUMENT);
    if terms.is_empty() {
        return Ok(vec![]);
    }
    let names: Vec<Option<String>> = terms.iter().map(|t| Some(t.term.clone())).collect();
    let counts: Vec<Option<i64>> = terms.iter().map(|t| Some(t.count)).collect();

    // Was this very document counted before (re-analysis)? Then its own counts are
    // in the totals and must not be reported as "earlier".
    let counted = sql::query(
        "SELECT terms, counts FROM counted_documents WHERE grp = $1 AND document = $2::uuid",
        &[Value::Text(group.clone()), Value::Text(doc.id.clone())],
    )
    .map_err(db_error)?;
    let own: Vec<(String, i64)> = match counted.rows.first().map(|r| r.as_slice()) {
        Some([Value::TextArray(t), Value::IntArray(c)]) => t
            .iter()
            .zip(c)
            .filter_map(|(t, c)| Some((t.clone()?, (*c)?)))
            .collect(),
        _ => vec![],
    };
    let seen_before = !counted.rows.is_empty();

    let earlier = sql::query(
        "SELECT term, documents, mentions FROM term_counts WHERE grp = $1 AND term = ANY($2)",
        &[Value::Text(group.clone()), Value::TextArray(names.clone())],
    )
    .map_err(db_error)?;

    let mut findings = Vec::new();
    for row in &earlier.rows {
        let [
            Value::Text(term),
            Value::Int(documents),
            Value::Int(mentions),
        ] = row.as_slice()
        else {
            return Err(format!("unexpected row shape from term_counts: {row:?}"));
        };
        let own_mentions = own.iter().find(|(t, _)| t == term).map(|(_, c)| *c);
        let (documents, mentions) = match own_mentions {
            Some(m) => (documents - 1, mentions - m),
            None => (*documents, *mentions),
        };
        if documents <= 0 {
            continue;
        }
        let Some(t) = terms.iter().find(|t| &t.term == term) else {
            continue;
        };
        findings.push(Finding {
            label: "recurring-term".into(),
            score: Some(documents as f64),
            span: Some(Span { start: t.first.0 as u32, end: t.first.1 as u32 }),
            data: format!(
                "{{\"term\":{},\"group\":{},\"earlier_documents\":{documents},\"earlier_mentions\":{mentions},\"mentions_here\":{}}}",
                assay_text::json_string(term),
                assay_text::json_string(&group),
                t.count
            ),
        });
    }
    findings.sort_by(|a, b| {
        b.score
            .partial_cmp(&a.score)
            .unwrap_or(std::cmp::Ordering::Equal)
    });

    let documents_before = if seen_before {
        read_counter(&group)?.saturating_sub(1)
    } else {
        sql::execute(
            "INSERT INTO counted_documents (grp, document, terms, counts) VALUES ($1, $2::uuid, $3, $4)",
            &[
                Value::Text(group.clone()),
                Value::Text(doc.id.clone()),
                Value::TextArray(names.clone()),
                Value::IntArray(counts.clone()),
            ],
        )
        .map_err(db_error)?;
        sql::execute(
            "INSERT INTO term_counts (grp, term, documents, mentions)
             SELECT $1, t, 1, c FROM unnest($2::text[], $3::int8[]) AS u(t, c)
             ON CONFLICT (grp, term) DO UPDATE
             SET documents = term_counts.documents + 1, mentions = term_counts.mentions + EXCLUDED.mentions",
            &[Value::Text(group.clone()), Value::TextArray(names), Value::IntArray(counts)],
        )
        .map_err(db_error)?;
        let before = read_counter(&group)?;
        state::set(&group, "documents", &(before + 1).to_string())
            .map_err(|e| format!("state: {e:?}"))?;
        before
    };
    log::log(
        log::Level::Debug,
        &format!(
            "group {group}: {documents_before} earlier documents, {} recurring terms",
            findings.len()
        ),
    );
    findings.push(Finding {
        label: "group-history".into(),
        score: Some(documents_before as f64),
        span: None,
        data: format!(
            "{{\"group\":{},\"earlier_documents\":{documents_before}}}",
            assay_text::json_string(&group)
        ),
    });
    Ok(findings)
}

fn read_counter(group: &str) -> Result<i64, String> {
    match state::get(group, "documents").map_err(|e| format!("state: {e:?}"))? {
        Some(json) => json
            .trim()
            .parse()
            .map_err(|_| format!("state holds a non-number counter: {json}")),
        None => Ok(0),
    }
}

export!(History);
