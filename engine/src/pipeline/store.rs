//! Writing documents and runs.
//!
//! A run is stored in one transaction — the run row, one row per plugin outcome,
//! every finding — so a failure at any point leaves all of it or none. Findings
//! go in by binary COPY, streamed: no statement per finding, nothing for the
//! server to parse but the rows (BENCHMARKS.md compares it with the
//! alternatives).

use std::time::SystemTime;

use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;

use crate::db::{Database, DbError};
use crate::runtime::failure::FailureKind;

/// The COPY that stores findings.
pub const COPY_FINDINGS: &str = "COPY assay.findings
     (run_id, plugin_version_id, ordinal, label, score, span_start, span_end, data)
 FROM STDIN BINARY";

/// Column types of [`COPY_FINDINGS`], in its column order.
pub const FINDING_COLUMNS: [Type; 8] = [
    Type::UUID,
    Type::INT8,
    Type::INT4,
    Type::TEXT,
    Type::FLOAT8,
    Type::INT4,
    Type::INT4,
    Type::JSONB,
];
use crate::pipeline::{DocumentInput, RunReport};

/// Names the ids of documents first stored by this engine: derived from the
/// document's identity (source and content hash), so that two runs storing the
/// same new document at once agree on its id before either has stored it.
const DOCUMENT_IDS: Uuid = Uuid::from_u128(0x6173_7361_7964_6f63_756d_656e_7473_0001);

fn content_sha256(input: &DocumentInput) -> String {
    hex::encode(Sha256::digest(input.text.as_bytes()))
}

/// The id the document has, or will have once its run is stored: the stored
/// one if the same content from the same source was seen before, otherwise
/// one derived from that identity. Reads only: the document is written with
/// its run, in one transaction ([`store_run`]), so a run that cannot be stored
/// leaves no document behind either.
pub async fn document_id(db: &Database, input: &DocumentInput) -> Result<Uuid, DbError> {
    let sha = content_sha256(input);
    let conn = db.connection().await?;
    let stored = conn
        .query_opt(
            "SELECT id FROM assay.documents WHERE source = $1 AND content_sha256 = $2",
            &[&input.source, &sha],
        )
        .await
        .map_err(DbError::query("looking up the document"))?;
    Ok(match stored {
        Some(row) => row.get(0),
        None => Uuid::new_v5(&DOCUMENT_IDS, format!("{}\0{sha}", input.source).as_bytes()),
    })
}

/// Stores a run and everything in it, atomically; returns the run id.
///
/// The document goes in first, in the same transaction: inserted under
/// `report.document_id`, or found if the same content from the same source is
/// there already (then its kind, metadata and last-seen time are updated).
/// [`document_id`] gives one document one id (the stored one, or the one
/// derived from its identity), so two runs storing the same new document at
/// once agree on it; the second finds the first's row.
pub async fn store_run(
    db: &Database,
    input: &DocumentInput,
    report: &RunReport,
    started_at: SystemTime,
    finished_at: SystemTime,
) -> Result<Uuid, DbError> {
    let mut conn = db.connection().await?;
    let tx = conn
        .transaction()
        .await
        .map_err(DbError::query("starting the run transaction"))?;
    let metadata = serde_json::Value::Object(input.metadata.clone());
    let sha = content_sha256(input);
    // DO NOTHING with no target: a concurrent run storing the same new
    // document conflicts on the primary key and on (source, content_sha256)
    // at once, and an arbitrated DO UPDATE would still fail on the other index.
    let inserted = tx
        .query_opt(
            "INSERT INTO assay.documents (id, source, kind, metadata, text, content_sha256)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT DO NOTHING
             RETURNING id",
            &[
                &report.document_id,
                &input.source,
                &input.kind,
                &metadata,
                &input.text,
                &sha,
            ],
        )
        .await
        .map_err(DbError::query("storing the document"))?;
    let document_id: Uuid = match inserted {
        Some(row) => row.get(0),
        // Known already (perhaps stored a moment ago by a concurrent run,
        // which this statement's fresh snapshot sees).
        None => tx
            .query_one(
                "UPDATE assay.documents SET kind = $3, metadata = $4, last_seen_at = now()
                 WHERE source = $1 AND content_sha256 = $2 RETURNING id",
                &[&input.source, &sha, &input.kind, &metadata],
            )
            .await
            .map_err(DbError::query("updating the document"))?
            .get(0),
    };
    let run_id: Uuid = tx
        .query_one(
            "INSERT INTO assay.runs (id, document_id, started_at, finished_at, status, analyzed_text)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            &[
                &report.run_id,
                &document_id,
                &started_at,
                &finished_at,
                &report.status.as_str(),
                &report.analyzed_text,
            ],
        )
        .await
        .map_err(DbError::query("storing the run"))?
        .get(0);

    let plugins = &report.plugins;
    let version_ids: Vec<i64> = plugins.iter().map(|p| p.version_id).collect();
    let stages: Vec<&str> = plugins.iter().map(|p| p.stage).collect();
    let outcomes: Vec<&str> = plugins.iter().map(|p| p.outcome.as_str()).collect();
    let kinds: Vec<Option<&str>> = plugins
        .iter()
        .map(|p| p.error_kind.map(FailureKind::as_str))
        .collect();
    let messages: Vec<Option<&str>> = plugins.iter().map(|p| p.message.as_deref()).collect();
    let durations: Vec<i64> = plugins
        .iter()
        .map(|p| i64::try_from(p.duration_us).unwrap_or(i64::MAX))
        .collect();
    let counts: Vec<i32> = plugins
        .iter()
        .map(|p| i32::try_from(p.findings).unwrap_or(i32::MAX))
        .collect();
    let model_requests: Vec<i32> = plugins
        .iter()
        .map(|p| i32::try_from(p.model.requests).unwrap_or(i32::MAX))
        .collect();
    let tokens = |f: fn(&crate::pipeline::ModelUsage) -> u64| -> Vec<i64> {
        plugins
            .iter()
            .map(|p| i64::try_from(f(&p.model)).unwrap_or(i64::MAX))
            .collect()
    };
    let (input, output, cached) = (
        tokens(|m| m.input_tokens),
        tokens(|m| m.output_tokens),
        tokens(|m| m.cached_tokens),
    );
    tx.execute(
        "INSERT INTO assay.run_plugins
             (run_id, plugin_version_id, stage, outcome, error_kind, error_message, duration_us, findings,
              model_requests, input_tokens, output_tokens, cached_tokens)
         SELECT $1, * FROM unnest($2::int8[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int8[], $8::int4[],
                                  $9::int4[], $10::int8[], $11::int8[], $12::int8[])",
        &[&run_id, &version_ids, &stages, &outcomes, &kinds, &messages, &durations, &counts,
          &model_requests, &input, &output, &cached],
    )
    .await
    .map_err(DbError::query("storing plugin outcomes"))?;

    if !report.findings.is_empty() {
        let sink = tx
            .copy_in(COPY_FINDINGS)
            .await
            .map_err(DbError::query("starting to store findings"))?;
        let writer = BinaryCopyInWriter::new(sink, &FINDING_COLUMNS);
        futures::pin_mut!(writer);
        for f in &report.findings {
            let start = f.span.and_then(|s| i32::try_from(s[0]).ok());
            let end = f.span.and_then(|s| i32::try_from(s[1]).ok());
            writer
                .as_mut()
                .write(&[
                    &run_id,
                    &f.version_id,
                    &f.ordinal,
                    &f.label,
                    &f.score,
                    &start,
                    &end,
                    &f.data,
                ])
                .await
                .map_err(DbError::query("storing findings"))?;
        }
        writer
            .finish()
            .await
            .map_err(DbError::query("storing findings"))?;
    }
    tx.commit()
        .await
        .map_err(DbError::query("committing the run"))?;
    Ok(run_id)
}

/// Failed plugin calls of stored runs started within `window`, by plugin name
/// and failure kind (what `assay plugins list` shows).
pub async fn recent_failures(
    db: &Database,
    window: std::time::Duration,
) -> Result<std::collections::BTreeMap<String, std::collections::BTreeMap<String, i64>>, DbError> {
    let conn = db.connection().await?;
    let seconds = window.as_secs_f64();
    let rows = conn
        .query(
            "SELECT v.name, rp.error_kind, count(*)
             FROM assay.run_plugins rp
             JOIN assay.runs r ON r.id = rp.run_id
             JOIN assay.plugin_versions v ON v.id = rp.plugin_version_id
             WHERE rp.outcome = 'failed' AND r.started_at > now() - make_interval(secs => $1)
             GROUP BY 1, 2",
            &[&seconds],
        )
        .await
        .map_err(DbError::query("reading recent plugin failures"))?;
    let mut failures: std::collections::BTreeMap<String, std::collections::BTreeMap<String, i64>> =
        Default::default();
    for row in rows {
        failures
            .entry(row.get(0))
            .or_default()
            .insert(row.get(1), row.get(2));
    }
    Ok(failures)
}
