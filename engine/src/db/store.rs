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

use super::{Database, DbError};

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

/// Inserts the document, or finds it if the same content from the same source was
/// seen before (then its kind, metadata and last-seen time are updated).
pub async fn upsert_document(db: &Database, input: &DocumentInput) -> Result<Uuid, DbError> {
    let sha = hex::encode(Sha256::digest(input.text.as_bytes()));
    let metadata = serde_json::Value::Object(input.metadata.clone());
    let conn = db.connection().await?;
    let row = conn
        .query_one(
            "INSERT INTO assay.documents (source, kind, metadata, text, content_sha256)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (source, content_sha256) DO UPDATE
             SET kind = EXCLUDED.kind, metadata = EXCLUDED.metadata, last_seen_at = now()
             RETURNING id",
            &[&input.source, &input.kind, &metadata, &input.text, &sha],
        )
        .await
        .map_err(DbError::query("storing the document"))?;
    Ok(row.get(0))
}

/// Stores a run and everything in it, atomically; returns the run id.
pub async fn store_run(
    db: &Database,
    report: &RunReport,
    started_at: SystemTime,
    finished_at: SystemTime,
) -> Result<Uuid, DbError> {
    let mut conn = db.connection().await?;
    let tx = conn
        .transaction()
        .await
        .map_err(DbError::query("starting the run transaction"))?;
    let run_id: Uuid = tx
        .query_one(
            "INSERT INTO assay.runs (document_id, started_at, finished_at, status, analyzed_text)
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
            &[
                &report.document_id,
                &started_at,
                &finished_at,
                &report.status,
                &report.analyzed_text,
            ],
        )
        .await
        .map_err(DbError::query("storing the run"))?
        .get(0);

    let plugins = &report.plugins;
    let version_ids: Vec<i64> = plugins.iter().map(|p| p.version_id).collect();
    let stages: Vec<&str> = plugins.iter().map(|p| p.stage).collect();
    let outcomes: Vec<&str> = plugins.iter().map(|p| p.outcome).collect();
    let kinds: Vec<Option<&str>> = plugins.iter().map(|p| p.error_kind).collect();
    let messages: Vec<Option<&str>> = plugins.iter().map(|p| p.message.as_deref()).collect();
    let durations: Vec<i64> = plugins
        .iter()
        .map(|p| i64::try_from(p.duration_us).unwrap_or(i64::MAX))
        .collect();
    let counts: Vec<i32> = plugins
        .iter()
        .map(|p| i32::try_from(p.findings).unwrap_or(i32::MAX))
        .collect();
    tx.execute(
        "INSERT INTO assay.run_plugins
             (run_id, plugin_version_id, stage, outcome, error_kind, error_message, duration_us, findings)
         SELECT $1, * FROM unnest($2::int8[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int8[], $8::int4[])",
        &[&run_id, &version_ids, &stages, &outcomes, &kinds, &messages, &durations, &counts],
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
