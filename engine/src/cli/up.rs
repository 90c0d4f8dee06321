//! `assay up`

use anyhow::Context as _;
use assay::config::Config;
use assay::engine::Engine;
use assay::service::{self, AppState};

use crate::Outcome;

/// The engine once it has started: everything `serve` needs and shutdown undoes.
struct Started {
    engine: Engine,
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
            outln!("assay stopped while starting");
            return Ok(Outcome::Success);
        }
    };
    let Started { engine, listener } = started;
    let state =
        AppState::for_engine(&engine).context("the engine was built without a live plugin set")?;
    service::serve(listener, state, stopped(stopping))
        .await
        .context("serving HTTP")?;
    // Requests still running past the grace were cut; whatever still holds
    // the database, the embedded server stops now, not when the last handle
    // happens to drop.
    engine
        .shutdown()
        .await
        .context("stopping the embedded PostgreSQL")?;
    outln!("assay stopped");
    Ok(Outcome::Success)
}

async fn start(config: &Config) -> anyhow::Result<Started> {
    let engine = Engine::builder(config.clone())
        .watch()
        .supervise()
        .build()
        .await?;
    let snapshot = engine.registry();
    for problem in &snapshot.problems {
        eprintln!("warning: {problem}");
    }
    for warning in &snapshot.warnings {
        eprintln!("warning: {warning}");
    }
    let listener = tokio::net::TcpListener::bind(&config.server.addr)
        .await
        .with_context(|| format!("cannot listen on {} (server.addr)", config.server.addr))?;
    let addr = listener.local_addr()?;
    let watching = engine
        .live()
        .map(|live| live.plugin_dir().display().to_string())
        .unwrap_or_default();
    outln!(
        "assay listening on http://{addr} ({} plugins loaded, {} refused; database: {}; watching {watching})",
        snapshot.plugins().len(),
        snapshot.problems.len(),
        engine.db().target,
    );
    Ok(Started { engine, listener })
}
