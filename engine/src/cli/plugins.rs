//! `assay plugins …`

use anyhow::Context as _;
use assay::config::Config;
use assay::runtime::loader::stage_name;
use comfy_table::{ContentArrangement, Table, presets};

use super::Engine;
use crate::Outcome;

/// Sub-commands of `assay plugins`.
#[derive(Debug, clap::Subcommand)]
pub enum PluginsCommand {
    /// Load every plugin and show what loaded, and what was refused and why.
    List,
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
            let engine = Engine::start(config).await?;
            let mut table = Table::new();
            table
                .load_preset(presets::UTF8_FULL_CONDENSED)
                .set_content_arrangement(ContentArrangement::Dynamic)
                .set_header([
                    "plugin", "stage", "priority", "version", "sha256", "source", "kinds",
                    "triggers",
                ]);
            for plugin in engine.registry.plugins() {
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
                    stage_name(m.stage).to_string(),
                    m.priority.to_string(),
                    id.version.clone(),
                    id.sha256[..12].to_string(),
                    plugin.source.to_string(),
                    list(&m.kinds),
                    list(&m.triggers),
                ]);
            }
            println!("{table}");
            let problems = engine.registry.problems.len();
            engine.stop().await?;
            Ok(if problems == 0 {
                Outcome::Success
            } else {
                Outcome::Partial
            })
        }
        PluginsCommand::Drop { name, purge } => {
            let db = assay::db::Database::open(&config.database)
                .await
                .context("opening the database")?;
            let dropped = assay::db::sandbox::drop_plugin(&db, &name, purge)
                .await
                .with_context(|| format!("dropping plugin {name}"))?;
            db.close().await?;
            if !dropped {
                anyhow::bail!("no plugin named {name} has a database role here");
            }
            if purge {
                println!("plugin {name}: role, schema and state removed");
            } else {
                println!(
                    "plugin {name}: can no longer connect; its schema and state are kept (--purge removes them)"
                );
            }
            Ok(Outcome::Success)
        }
    }
}
