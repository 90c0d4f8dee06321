//! `assay findings`: what the stored runs found, read back from the database
//! (`assay.finding_details`), without a database client.

use anyhow::Context as _;
use assay::config::Config;
use assay::db::Database;

use crate::Outcome;

/// Arguments of `assay findings`.
#[derive(Debug, clap::Args)]
pub struct FindingsArgs {
    /// Only this plugin's findings.
    #[arg(long)]
    pub plugin: Option<String>,
    /// Only labels starting with this, e.g. `audit:` or `report:`.
    #[arg(long)]
    pub label: Option<String>,
    /// Only documents whose source contains this.
    #[arg(long)]
    pub source: Option<String>,
    /// Findings of every run, not only each document's latest.
    #[arg(long)]
    pub all_runs: bool,
    /// Most findings shown.
    #[arg(long, default_value_t = 100)]
    pub limit: i64,
    /// One JSON object per finding (with its whole `data`) instead of a table.
    #[arg(long)]
    pub json: bool,
}

const QUERY: &str = "SELECT f.source, f.kind, f.plugin, f.plugin_version, f.plugin_sha256,
        f.label, f.score, f.data, f.run_id::text, to_char(f.started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')
 FROM assay.finding_details f
 WHERE ($1::text IS NULL OR f.plugin = $1)
   AND ($2::text IS NULL OR starts_with(f.label, $2))
   AND ($3::text IS NULL OR strpos(f.source, $3) > 0)
   AND ($4 OR f.run_id IN (SELECT DISTINCT ON (document_id) id FROM assay.runs
                           ORDER BY document_id, started_at DESC, id))
 ORDER BY f.started_at DESC, f.run_id, f.plugin, f.ordinal
 LIMIT $5";

/// Runs the command.
pub async fn run(config: &Config, args: FindingsArgs) -> anyhow::Result<Outcome> {
    let db = Database::open(&config.database)
        .await
        .context("opening the database")?;
    let conn = db.connection().await?;
    let rows = conn
        .query(
            QUERY,
            &[
                &args.plugin,
                &args.label,
                &args.source,
                &args.all_runs,
                &args.limit.max(0),
            ],
        )
        .await
        .context("reading the findings")?;
    drop(conn);
    db.close().await?;
    if args.json {
        for row in &rows {
            let line = serde_json::json!({
                "source": row.get::<_, String>(0),
                "kind": row.get::<_, String>(1),
                "plugin": row.get::<_, String>(2),
                "plugin_version": row.get::<_, String>(3),
                "plugin_sha256": row.get::<_, String>(4),
                "label": row.get::<_, String>(5),
                "score": row.get::<_, Option<f64>>(6),
                "data": row.get::<_, serde_json::Value>(7),
                "run_id": row.get::<_, String>(8),
                "started_at": row.get::<_, String>(9),
            });
            outln!("{line}");
        }
        return Ok(Outcome::Success);
    }
    if rows.is_empty() {
        eprintln!("no findings stored match (analyse documents with `assay analyze PATH`)");
        return Ok(Outcome::Success);
    }
    let mut table = super::table(["document", "plugin", "label", "score", "data"]);
    for row in &rows {
        let data: serde_json::Value = row.get(7);
        // A report section reads best as its text; anything else as JSON.
        let shown = data
            .get("text")
            .and_then(|t| t.as_str())
            .map_or_else(|| data.to_string(), String::from);
        table.add_row([
            row.get::<_, String>(0),
            row.get::<_, String>(2),
            row.get::<_, String>(5),
            row.get::<_, Option<f64>>(6)
                .map_or_else(String::new, |s| format!("{s:.2}")),
            assay::pipeline::excerpt(&shown),
        ]);
    }
    outln!("{table}");
    eprintln!("{} findings shown (--json for all their data)", rows.len());
    Ok(Outcome::Success)
}
