//! Sub-commands of the `assay` binary.

pub mod analyze;
pub mod bench;
pub mod plugins;
pub mod up;

use std::sync::Arc;

use anyhow::Context as _;
use assay::config::Config;
use assay::db::Database;
use assay::registry::Registry;
use assay::runtime::Runtime;

use crate::Outcome;

/// The database, runtime and plugins every command that runs plugins needs.
pub struct Engine {
    pub db: Arc<Database>,
    pub runtime: Arc<Runtime>,
    pub registry: Arc<Registry>,
}

impl Engine {
    /// Opens the database (starting the embedded server if configured so) and loads plugins.
    pub async fn start(config: &Config) -> anyhow::Result<Self> {
        let db = Arc::new(
            Database::open(&config.database)
                .await
                .context("opening the database")?,
        );
        let runtime = Arc::new(Runtime::for_config(config)?);
        let registry = Registry::load(&runtime, config, &db)
            .await
            .context("loading plugins")?;
        for problem in &registry.problems {
            eprintln!("warning: {problem}");
        }
        for warning in &registry.warnings {
            eprintln!("warning: {warning}");
        }
        Ok(Self {
            db,
            runtime,
            registry: Arc::new(registry),
        })
    }

    /// Closes pools and stops the embedded server if this process was its last user.
    pub async fn stop(self) -> anyhow::Result<()> {
        drop(self.registry);
        drop(self.runtime);
        match Arc::try_unwrap(self.db) {
            Ok(db) => db.close().await,
            // Something (a task being cancelled) still holds it: the embedded
            // server is stopped all the same.
            Err(shared) => shared.shutdown().await,
        }
        .context("closing the database")
    }
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
    println!(
        "{}: schema up to date ({applied} migrations applied)",
        db.target
    );
    db.close().await?;
    Ok(Outcome::Success)
}
