//! `assay prompts …`: the prompt library.

use std::path::PathBuf;

use anyhow::Context as _;
use assay::config::Config;
use assay::db::Database;
use assay::prompts::{PromptKey, PromptVersion, store, tree};
use comfy_table::{ContentArrangement, Table, presets};

use crate::Outcome;

/// Sub-commands of `assay prompts`.
#[derive(Debug, clap::Subcommand)]
pub enum PromptsCommand {
    /// Import a prompt tree (<scenario>/<report type>/<building type>/part<N>/<name>.txt,
    /// <name>.json.txt for a JSON answer) in one transaction: new prompts are
    /// added, changed ones get a new version, unchanged ones are left alone; a
    /// malformed tree is refused whole, every problem listed.
    Import {
        /// The tree's root directory.
        dir: PathBuf,
    },
    /// The current version of each prompt, optionally of one scenario, report
    /// type or building type.
    List {
        /// Only this scenario.
        #[arg(long)]
        scenario: Option<String>,
        /// Only this report type.
        #[arg(long)]
        report_type: Option<String>,
        /// Only this building type.
        #[arg(long)]
        building_type: Option<String>,
        /// One JSON object per prompt instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// A prompt's text: its current version, or --version N.
    Show {
        /// scenario/report type/building type/partN/name
        prompt: String,
        /// The version to show.
        #[arg(long)]
        version: Option<i32>,
    },
    /// Every version of a prompt.
    History {
        /// scenario/report type/building type/partN/name
        prompt: String,
    },
}

fn key(text: &str) -> anyhow::Result<PromptKey> {
    PromptKey::parse(text).with_context(|| {
        format!(
            "{text:?} does not name a prompt: write scenario/report-type/building-type/partN/name, \
             e.g. design-audit/summary/hotel/part1/overview (see `assay prompts list`)"
        )
    })
}

async fn open(config: &Config) -> anyhow::Result<Database> {
    Database::open(&config.database)
        .await
        .context("opening the database")
}

fn versions_table(versions: &[PromptVersion], with_key: bool) -> Table {
    let mut table = Table::new();
    table
        .load_preset(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic);
    let mut header = Vec::new();
    if with_key {
        header.extend(["prompt"]);
    }
    header.extend(["version", "answer", "sha256", "imported", "first line"]);
    table.set_header(header);
    for v in versions {
        let mut row = Vec::new();
        if with_key {
            row.push(v.key.to_string());
        }
        row.extend([
            v.version.to_string(),
            if v.json_answer { "json" } else { "text" }.to_string(),
            v.content_sha256[..12].to_string(),
            v.imported_at.clone(),
            v.text
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .chars()
                .take(60)
                .collect(),
        ]);
        table.add_row(row);
    }
    table
}

/// Runs the command.
pub async fn run(config: &Config, command: PromptsCommand) -> anyhow::Result<Outcome> {
    match command {
        PromptsCommand::Import { dir } => {
            // Read (and refused, if malformed) before the database is touched.
            let files = tree::read_tree(&dir)?;
            let db = open(config).await?;
            let summary = store::import(&db, &files).await;
            db.close().await?;
            let summary =
                summary.context("importing the prompt tree (nothing of it was stored)")?;
            for (prompt, version) in &summary.changed {
                outln!(
                    "{} {prompt}",
                    if *version == 1 { "added  " } else { "changed" }
                );
            }
            outln!(
                "{} prompts read from {}: {} new, {} changed (a new version each), {} unchanged",
                files.len(),
                dir.display(),
                summary.new_prompts,
                summary.new_versions,
                summary.unchanged
            );
            Ok(Outcome::Success)
        }
        PromptsCommand::List {
            scenario,
            report_type,
            building_type,
            json,
        } => {
            let db = open(config).await?;
            let filter = store::Filter {
                scenario,
                report_type,
                building_type,
            };
            let prompts = store::list(&db, &filter).await;
            db.close().await?;
            let prompts = prompts?;
            if json {
                for p in &prompts {
                    outln!("{}", serde_json::to_string(p)?);
                }
            } else if prompts.is_empty() {
                outln!("no prompts (import a tree with `assay prompts import DIR`)");
            } else {
                outln!("{}", versions_table(&prompts, true));
            }
            Ok(Outcome::Success)
        }
        PromptsCommand::Show { prompt, version } => {
            let key = key(&prompt)?;
            let db = open(config).await?;
            let versions = store::history(&db, &key).await;
            db.close().await?;
            let versions = versions?;
            if versions.is_empty() {
                anyhow::bail!("there is no prompt {key} (see `assay prompts list`)");
            }
            let shown = match version {
                Some(n) => versions.iter().find(|v| v.version == n).with_context(|| {
                    format!(
                        "prompt {key} has no version {n} (it has 1 to {})",
                        versions.len()
                    )
                })?,
                None => versions.last().with_context(|| {
                    format!("there is no prompt {key} (see `assay prompts list`)")
                })?,
            };
            out!("{}", shown.text);
            if !shown.text.ends_with('\n') {
                outln!();
            }
            Ok(Outcome::Success)
        }
        PromptsCommand::History { prompt } => {
            let key = key(&prompt)?;
            let db = open(config).await?;
            let versions = store::history(&db, &key).await;
            db.close().await?;
            let versions = versions?;
            if versions.is_empty() {
                anyhow::bail!("there is no prompt {key} (see `assay prompts list`)");
            }
            outln!("{}", versions_table(&versions, false));
            Ok(Outcome::Success)
        }
    }
}
