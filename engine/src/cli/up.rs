//! `assay up`

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use assay::config::Config;
use assay::db::Database;
use assay::registry::PluginLoader;
use assay::registry::live::LiveRegistry;
use assay::registry::watch;
use assay::runtime::Runtime;
use assay::service::{self, AppState};

use crate::Outcome;

/// Runs the service until Ctrl-C or SIGTERM.
pub async fn run(config: &Config) -> anyhow::Result<Outcome> {
    let db = Arc::new(
        Database::open(&config.database)
            .await
            .context("opening the database")?,
    );
    let supervisor = db.supervise_embedded();
    let runtime = Arc::new(Runtime::for_config(config)?);
    let loader = PluginLoader::new(Arc::clone(&runtime), Arc::clone(&db), config.clone())
        .await
        .context("setting up the plugin sandbox")?;
    let live = LiveRegistry::start(loader)
        .await
        .context("loading plugins")?;
    let snapshot = live.snapshot();
    for problem in &snapshot.problems {
        eprintln!("warning: {problem}");
    }
    for warning in &snapshot.warnings {
        eprintln!("warning: {warning}");
    }
    let watching = watch::watch(
        Arc::clone(&live),
        Duration::from_millis(config.plugins.watch_debounce_ms),
        |path, outcome| tracing::debug!(file = %path.display(), ?outcome, "plugin file handled"),
    )?;
    let listener = tokio::net::TcpListener::bind(&config.server.addr)
        .await
        .with_context(|| format!("cannot listen on {} (server.addr)", config.server.addr))?;
    let addr = listener.local_addr()?;
    println!(
        "assay listening on http://{addr} ({} plugins loaded, {} refused; database: {}; watching {})",
        snapshot.plugins().len(),
        snapshot.problems.len(),
        db.target,
        config.plugins.dir.display()
    );
    drop(snapshot);
    let state = AppState::new(runtime, live, Arc::clone(&db), config.clone());
    service::serve(listener, state, service::shutdown_signal())
        .await
        .context("serving HTTP")?;
    drop(watching);
    if let Some(supervisor) = supervisor {
        supervisor.abort();
    }
    // Everything holding the database (pools in the registry, the state) is gone
    // once `serve` returns; wait briefly for spawned tasks to let go.
    let mut db = db;
    for _ in 0..50 {
        match Arc::try_unwrap(db) {
            Ok(owned) => {
                owned.close().await.context("closing the database")?;
                println!("assay stopped");
                return Ok(Outcome::Success);
            }
            Err(shared) => {
                db = shared;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    // The embedded server is still stopped when the last handle drops.
    println!("assay stopped");
    Ok(Outcome::Success)
}
