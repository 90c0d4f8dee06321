//! `assay up`

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use assay::config::Config;
use assay::db::{Database, Supervisor};
use assay::registry::PluginLoader;
use assay::registry::live::LiveRegistry;
use assay::registry::watch::{self, Watch};
use assay::runtime::Runtime;
use assay::service::{self, AppState};

use crate::Outcome;

/// The engine once it has started: everything `serve` needs and shutdown undoes.
struct Started {
    db: Arc<Database>,
    supervisor: Option<Supervisor>,
    runtime: Arc<Runtime>,
    live: Arc<LiveRegistry>,
    watching: Watch,
    listener: tokio::net::TcpListener,
}

/// Runs the service until Ctrl-C or SIGTERM.
pub async fn run(config: &Config) -> anyhow::Result<Outcome> {
    // Signals count from the first moment, not from when serving begins: a
    // SIGTERM while the engine starts (the database, the plugins and their
    // migrations) stops it too, and its embedded server with it.
    let (stop, stopping) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        service::shutdown_signal().await;
        let _ = stop.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let started = tokio::select! {
        started = start(config) => started?,
        () = stopped(stopping.clone()) => {
            // Dropping what had started closes the pools and stops the
            // embedded server (this was its last user).
            println!("assay stopped while starting");
            return Ok(Outcome::Success);
        }
    };
    let Started {
        db,
        supervisor,
        runtime,
        live,
        watching,
        listener,
    } = started;
    let state = AppState::new(runtime, live, Arc::clone(&db), config.clone());
    service::serve(listener, state, stopped(stopping))
        .await
        .context("serving HTTP")?;
    drop(watching);
    if let Some(supervisor) = supervisor {
        supervisor.stop().await;
    }
    // Requests still running past the grace were cut; whatever still holds
    // the database, the embedded server stops now, not when the last handle
    // happens to drop.
    db.shutdown()
        .await
        .context("stopping the embedded PostgreSQL")?;
    println!("assay stopped");
    Ok(Outcome::Success)
}

async fn start(config: &Config) -> anyhow::Result<Started> {
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
        |path, outcome| tracing::debug!(file = ?path, ?outcome, "plugin file handled"),
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
        live.plugin_dir().display()
    );
    Ok(Started {
        db,
        supervisor,
        runtime,
        live,
        watching,
        listener,
    })
}
