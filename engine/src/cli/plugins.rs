//! `assay plugins …`

use anyhow::Context as _;
use assay::config::Config;
use assay::runtime::loader::stage_name;
use comfy_table::{ContentArrangement, Table, presets};

use super::{start_engine, stop_engine};
use crate::Outcome;

/// How far back `assay plugins list` counts failures.
const RECENT_FAILURES_WINDOW: std::time::Duration = std::time::Duration::from_secs(3600);

/// Sub-commands of `assay plugins`.
#[derive(Debug, clap::Subcommand)]
pub enum PluginsCommand {
    /// Load every plugin and show what loaded, what was refused and why, and
    /// each plugin's failed calls of the last hour by kind (from stored runs).
    List,
    /// Every version of a plugin that ever loaded here (kept for rollback).
    History {
        /// The plugin's name.
        name: String,
    },
    /// Re-activate an earlier version: HASH (or a unique prefix), or by default the
    /// version active before the current one. Its bytes are written into the
    /// plugin directory, where a running `assay up` picks it up at once.
    Rollback {
        /// The plugin's name.
        name: String,
        /// The version's SHA-256, or a unique prefix of it.
        hash: Option<String>,
    },
    /// Take a plugin's database access away: its role can no longer log in and
    /// loses its grants; its schema and state stay unless --purge. Remove its
    /// .wasm from the plugin directory first, or it is set up again on next load.
    Drop {
        /// The plugin's name.
        name: String,
        /// Also delete its schema (all its tables), its state and its role.
        #[arg(long)]
        purge: bool,
    },
}

/// Runs the command.
pub async fn run(config: &Config, command: PluginsCommand) -> anyhow::Result<Outcome> {
    match command {
        PluginsCommand::List => {
            let engine = start_engine(config).await?;
            let registry = engine.registry();
            let failures =
                assay::pipeline::store::recent_failures(engine.db(), RECENT_FAILURES_WINDOW)
                    .await?;
            let usage: std::collections::HashMap<String, _> =
                assay::capability::inference::ledger::usage_by_plugin(engine.db())
                    .await?
                    .into_iter()
                    .map(|u| (u.plugin.clone(), u))
                    .collect();
            let mut table = Table::new();
            table
                .load_preset(presets::UTF8_FULL_CONDENSED)
                .set_content_arrangement(ContentArrangement::Dynamic)
                .set_header([
                    "plugin",
                    "status",
                    "stage",
                    "priority",
                    "version",
                    "sha256",
                    "source",
                    "kinds",
                    "triggers",
                    "failures (last hour)",
                    "model tokens (hour / day)",
                ]);
            for plugin in registry.plugins() {
                let m = &plugin.loaded.manifest;
                let id = &plugin.loaded.identity;
                let list = |items: &[String]| {
                    if items.is_empty() {
                        "(all)".to_string()
                    } else {
                        items.join(", ")
                    }
                };
                table.add_row([
                    id.name.clone(),
                    "active".to_string(),
                    stage_name(m.stage).to_string(),
                    m.priority.to_string(),
                    id.version.clone(),
                    id.sha256[..12].to_string(),
                    plugin.source.to_string(),
                    list(&m.kinds),
                    list(&m.triggers),
                    failures.get(&id.name).map_or_else(
                        || "none".to_string(),
                        |by_kind| {
                            by_kind
                                .iter()
                                .map(|(kind, n)| format!("{kind} {n}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        },
                    ),
                    usage.get(&id.name).map_or_else(
                        || "none".to_string(),
                        |u| {
                            format!(
                                "{} / {} ({} requests, {} cached)",
                                u.tokens_last_hour,
                                u.tokens_last_day,
                                u.requests_last_day,
                                u.cache_hits_last_day
                            )
                        },
                    ),
                ]);
            }
            for problem in &registry.problems {
                let file = std::path::Path::new(&problem.source)
                    .file_name()
                    .map_or_else(
                        || problem.source.clone(),
                        |f| f.to_string_lossy().into_owned(),
                    );
                table.add_row([
                    file,
                    format!("refused: {}", problem.message),
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                    problem.source.clone(),
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                ]);
            }
            outln!("{table}");
            let problems = registry.problems.len();
            drop(registry);
            stop_engine(engine).await?;
            Ok(if problems == 0 {
                Outcome::Success
            } else {
                Outcome::Partial
            })
        }
        PluginsCommand::History { name } => {
            let db = assay::db::Database::open(&config.database)
                .await
                .context("opening the database")?;
            let versions = assay::registry::history::versions(&db, &name).await?;
            db.close().await?;
            if versions.is_empty() {
                anyhow::bail!("plugin {name} has never loaded here");
            }
            let mut table = Table::new();
            table.load_preset(presets::UTF8_FULL_CONDENSED).set_header([
                "",
                "sha256",
                "version",
                "size",
                "first loaded",
                "last loaded",
                "times",
                "source",
            ]);
            for v in versions {
                let when =
                    |t: std::time::SystemTime| humantime::format_rfc3339_seconds(t).to_string();
                table.add_row([
                    if v.current {
                        "*".to_string()
                    } else {
                        String::new()
                    },
                    v.sha256[..16].to_string(),
                    v.version,
                    v.size.to_string(),
                    when(v.first_loaded),
                    when(v.last_loaded),
                    v.activations.to_string(),
                    v.source,
                ]);
            }
            outln!("{table}");
            outln!("* = the version most recently activated");
            Ok(Outcome::Success)
        }
        PluginsCommand::Rollback { name, hash } => {
            let db = assay::db::Database::open(&config.database)
                .await
                .context("opening the database")?;
            // The directory as the registry names it: the file that serves
            // the plugin is recorded by its resolved path.
            let dir =
                assay::registry::files::resolve_dir(&config.plugins.dir).with_context(|| {
                    format!(
                        "cannot open the plugin directory {} (plugins.dir)",
                        config.plugins.dir.display()
                    )
                })?;
            let done = assay::registry::history::rollback(&db, &dir, &name, hash.as_deref()).await;
            db.close().await?;
            let done = done.with_context(|| format!("rolling back plugin {name}"))?;
            outln!(
                "plugin {name}: version {} ({}) written to {}; a running `assay up` loads it now, any other command on its next start",
                done.version,
                &done.sha256[..16],
                done.path.display()
            );
            Ok(Outcome::Success)
        }
        PluginsCommand::Drop { name, purge } => {
            let db = assay::db::Database::open(&config.database)
                .await
                .context("opening the database")?;
            let dropped = assay::capability::sql::sandbox::drop_plugin(&db, &name, purge)
                .await
                .with_context(|| format!("dropping plugin {name}"))?;
            db.close().await?;
            if !dropped {
                anyhow::bail!("no plugin named {name} has a database role here");
            }
            if purge {
                outln!("plugin {name}: role, schema and state removed");
            } else {
                outln!(
                    "plugin {name}: can no longer connect; its schema and state are kept (--purge removes them)"
                );
            }
            Ok(Outcome::Success)
        }
    }
}
