//! Sub-commands of the `assay` binary.

// First: its macros serve the modules after it.
#[macro_use]
pub mod out;

pub mod analyze;
pub mod bench;
pub mod findings;
pub mod plugins;
pub mod prompts;
pub mod search;
pub mod up;

use anyhow::Context as _;
use assay::config::Config;
use assay::db::Database;
use assay::engine::Engine;

use crate::Outcome;

/// The engine of a command that runs plugins: the database (starting the
/// embedded server if configured so) and the plugins, their problems printed.
pub async fn start_engine(config: &Config) -> anyhow::Result<Engine> {
    let engine = Engine::builder(config.clone()).build().await?;
    let registry = engine.registry();
    for problem in &registry.problems {
        eprintln!("warning: {problem}");
    }
    for warning in &registry.warnings {
        eprintln!("warning: {warning}");
    }
    Ok(engine)
}

/// A table for the terminal in the commands' one style, with `header`.
pub fn table<const N: usize>(header: [&str; N]) -> comfy_table::Table {
    let mut table = comfy_table::Table::new();
    table
        .load_preset(comfy_table::presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(comfy_table::ContentArrangement::Dynamic)
        .set_header(header);
    table
}

/// Closes pools and stops the embedded server.
pub async fn stop_engine(engine: Engine) -> anyhow::Result<()> {
    engine.shutdown().await.context("closing the database")
}

/// `assay migrate`
pub async fn migrate(config: &Config) -> anyhow::Result<Outcome> {
    // Opening applies the migrations; say where and what.
    let db = Database::open(&config.database)
        .await
        .context("opening the database")?;
    let conn = db.connection().await?;
    let applied: i64 = conn
        .query_one("SELECT count(*) FROM assay.refinery_schema_history", &[])
        .await
        .context("reading the migration history")?
        .get(0);
    drop(conn);
    outln!(
        "{}: schema up to date ({applied} migrations applied)",
        db.target
    );
    db.close().await?;
    Ok(Outcome::Success)
}
