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

use assay_plugin::analyzer::{Document, Finding, Guest, Manifest, PluginError};
use assay_plugin::sql::{self, Value};
use assay_plugin::types::{Migration, Span, Stage};
use assay_plugin::{Explain, log, state};

/// Terms per document that are looked up and counted.
const TERMS_PER_DOCUMENT: usize = 12;

/// The plugin (public so native code can call it through `Guest`).
pub struct History;

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
        analyze(&doc).map_err(PluginError::Failed)
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
    let group_param = Value::Text(group.clone());
    let document_param = Value::Text(doc.id.clone());

    // Claim the document for this group. If another call (or an earlier run)
    // already counted it, the totals include it and its own counts are taken
    // back out below. ON CONFLICT makes two concurrent calls on the same
    // document safe: the second waits for the first to commit, then does nothing.
    let first_time = sql::execute(
        "INSERT INTO counted_documents (grp, document, terms, counts) VALUES ($1, $2::uuid, $3, $4)
         ON CONFLICT (grp, document) DO NOTHING",
        &[
            group_param.clone(),
            document_param.clone(),
            Value::TextArray(names.clone()),
            Value::IntArray(counts.clone()),
        ],
    )
    .map_err(|e| e.explain())?
        == 1;
    let own: Vec<(String, i64)> = if first_time {
        vec![]
    } else {
        let counted = sql::query(
            "SELECT terms, counts FROM counted_documents WHERE grp = $1 AND document = $2::uuid",
            &[group_param.clone(), document_param.clone()],
        )
        .map_err(|e| e.explain())?;
        match counted.rows.first().map(|r| r.as_slice()) {
            Some([Value::TextArray(t), Value::IntArray(c)]) => t
                .iter()
                .zip(c)
                .filter_map(|(t, c)| Some((t.clone()?, (*c)?)))
                .collect(),
            _ => vec![],
        }
    };

    let earlier = sql::query(
        "SELECT term, documents, mentions FROM term_counts WHERE grp = $1 AND term = ANY($2)",
        &[group_param.clone(), Value::TextArray(names.clone())],
    )
    .map_err(|e| e.explain())?;
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
        let (documents, mentions) = match own.iter().find(|(t, _)| t == term) {
            Some((_, m)) => (documents - 1, mentions - m),
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
                assay_plugin::text::json_string(term),
                assay_plugin::text::json_string(&group),
                t.count
            ),
        });
    }
    findings.sort_by(|a, b| {
        b.score
            .partial_cmp(&a.score)
            .unwrap_or(std::cmp::Ordering::Equal)
    });

    if first_time {
        // Rows are locked in term order: concurrent calls sharing terms then
        // wait for each other instead of deadlocking.
        sql::execute(
            "INSERT INTO term_counts (grp, term, documents, mentions)
             SELECT $1, t, 1, c FROM unnest($2::text[], $3::int8[]) AS u(t, c) ORDER BY t
             ON CONFLICT (grp, term) DO UPDATE
             SET documents = term_counts.documents + 1, mentions = term_counts.mentions + EXCLUDED.mentions",
            &[group_param.clone(), Value::TextArray(names), Value::IntArray(counts)],
        )
        .map_err(|e| e.explain())?;
    }
    // Derived from the table rather than a counter kept in state: concurrent
    // calls cannot lose an update this way.
    let others = sql::query(
        "SELECT count(*) FROM counted_documents WHERE grp = $1 AND document <> $2::uuid",
        &[group_param, document_param],
    )
    .map_err(|e| e.explain())?;
    let earlier_documents = match others.rows.first().map(|r| r.as_slice()) {
        Some([Value::Int(n)]) => *n,
        _ => return Err("unexpected result of the document count".into()),
    };

    // State: the previous document analysed in this group (last writer wins,
    // which is what "previous" means under concurrency).
    let previous = state::get(&group, "last-document").map_err(|e| format!("state: {e:?}"))?;
    state::set(
        &group,
        "last-document",
        &assay_plugin::text::json_string(&doc.id),
    )
    .map_err(|e| format!("state: {e:?}"))?;
    log::log(
        log::Level::Debug,
        &format!(
            "group {group}: {earlier_documents} other documents, {} recurring terms",
            findings.len()
        ),
    );
    findings.push(Finding {
        label: "group-history".into(),
        score: Some(earlier_documents as f64),
        span: None,
        data: format!(
            "{{\"group\":{},\"earlier_documents\":{earlier_documents},\"previous_document\":{}}}",
            assay_plugin::text::json_string(&group),
            previous.unwrap_or_else(|| "null".into())
        ),
    });
    Ok(findings)
}

assay_plugin::export_analyzer!(History);
