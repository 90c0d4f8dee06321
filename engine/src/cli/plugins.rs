//! `assay plugins …`

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
    }
}
