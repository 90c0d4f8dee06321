//! The prompt library in PostgreSQL: importing a tree, reading prompts back.

use serde::Serialize;

use super::tree::PromptFile;
use super::{PromptKey, PromptVersion, content_sha256};
use crate::db::{Database, DbError};

/// What an import changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ImportSummary {
    /// Prompts the library did not have.
    pub new_prompts: usize,
    /// Prompts whose text (or JSON mark) changed: a version each.
    pub new_versions: usize,
    /// Prompts already at this text.
    pub unchanged: usize,
    /// Each prompt added or changed, with its new version.
    pub changed: Vec<(String, i32)>,
}

/// Imports `files` (a whole tree, see [`super::tree::read_tree`]) in one
/// transaction: a prompt the library lacks is added at version 1, a prompt
/// whose latest version differs gets the next version, an unchanged one is
/// left alone. Importing the same tree twice changes nothing.
pub async fn import(db: &Database, files: &[PromptFile]) -> Result<ImportSummary, DbError> {
    let mut conn = db.connection().await?;
    let tx = conn
        .transaction()
        .await
        .map_err(DbError::query("beginning the prompt import"))?;
    let mut summary = ImportSummary::default();
    for file in files {
        let k = &file.key;
        let run_part = i32::try_from(k.run_part).unwrap_or(i32::MAX);
        // The upsert locks the prompt's row, so two imports of one prompt
        // take turns and never number two versions alike.
        let row = tx
            .query_one(
                "INSERT INTO assay.prompts AS p (scenario, report_type, building_type, run_part, name)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (scenario, report_type, building_type, run_part, name)
                     DO UPDATE SET name = EXCLUDED.name
                 RETURNING id,
                     (SELECT max(version) FROM assay.prompt_versions v WHERE v.prompt_id = p.id),
                     (SELECT content_sha256 FROM assay.prompt_versions v WHERE v.prompt_id = p.id
                      ORDER BY version DESC LIMIT 1)",
                &[&k.scenario, &k.report_type, &k.building_type, &run_part, &k.name],
            )
            .await
            .map_err(DbError::query("storing a prompt"))?;
        let (id, latest, latest_sha): (i64, Option<i32>, Option<String>) =
            (row.get(0), row.get(1), row.get(2));
        let sha = content_sha256(file.json_answer, &file.text);
        if latest_sha.as_deref() == Some(sha.as_str()) {
            summary.unchanged += 1;
            continue;
        }
        let version = latest.map_or(1, |v| v + 1);
        tx.execute(
            "INSERT INTO assay.prompt_versions (prompt_id, version, json_answer, text, content_sha256, source)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[&id, &version, &file.json_answer, &file.text, &sha, &file.source],
        )
        .await
        .map_err(DbError::query("storing a prompt version"))?;
        if version == 1 {
            summary.new_prompts += 1;
        } else {
            summary.new_versions += 1;
        }
        summary.changed.push((k.to_string(), version));
    }
    tx.commit()
        .await
        .map_err(DbError::query("committing the prompt import"))?;
    Ok(summary)
}

/// Which prompts to list: each field, when set, must match exactly.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Scenario.
    pub scenario: Option<String>,
    /// Report type.
    pub report_type: Option<String>,
    /// Building type.
    pub building_type: Option<String>,
}

const VERSION_COLUMNS: &str = "p.scenario, p.report_type, p.building_type, p.run_part, p.name,
     v.id, v.version, v.json_answer, v.text, v.content_sha256,
     to_char(v.imported_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')";

fn version_of(row: &tokio_postgres::Row) -> PromptVersion {
    PromptVersion {
        key: PromptKey {
            scenario: row.get(0),
            report_type: row.get(1),
            building_type: row.get(2),
            run_part: u32::try_from(row.get::<_, i32>(3)).unwrap_or(0),
            name: row.get(4),
        },
        version_id: row.get(5),
        version: row.get(6),
        json_answer: row.get(7),
        text: row.get(8),
        content_sha256: row.get(9),
        imported_at: row.get(10),
    }
}

/// The current version of every prompt `filter` selects, ordered by
/// scenario, report type, building type, run part and name.
pub async fn list(db: &Database, filter: &Filter) -> Result<Vec<PromptVersion>, DbError> {
    let conn = db.connection().await?;
    let rows = conn
        .query(
            &format!(
                "SELECT DISTINCT ON (p.id) {VERSION_COLUMNS}
                 FROM assay.prompts p JOIN assay.prompt_versions v ON v.prompt_id = p.id
                 WHERE ($1::text IS NULL OR p.scenario = $1)
                   AND ($2::text IS NULL OR p.report_type = $2)
                   AND ($3::text IS NULL OR p.building_type = $3)
                 ORDER BY p.id, v.version DESC"
            ),
            &[&filter.scenario, &filter.report_type, &filter.building_type],
        )
        .await
        .map_err(DbError::query("listing prompts"))?;
    let mut prompts: Vec<PromptVersion> = rows.iter().map(version_of).collect();
    prompts.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(prompts)
}

/// Every version of the prompt at `key`, oldest first (empty if there is none).
pub async fn history(db: &Database, key: &PromptKey) -> Result<Vec<PromptVersion>, DbError> {
    let conn = db.connection().await?;
    let run_part = i32::try_from(key.run_part).unwrap_or(i32::MAX);
    let rows = conn
        .query(
            &format!(
                "SELECT {VERSION_COLUMNS}
                 FROM assay.prompts p JOIN assay.prompt_versions v ON v.prompt_id = p.id
                 WHERE p.scenario = $1 AND p.report_type = $2 AND p.building_type = $3
                   AND p.run_part = $4 AND p.name = $5
                 ORDER BY v.version"
            ),
            &[
                &key.scenario,
                &key.report_type,
                &key.building_type,
                &run_part,
                &key.name,
            ],
        )
        .await
        .map_err(DbError::query("reading a prompt's history"))?;
    Ok(rows.iter().map(version_of).collect())
}
