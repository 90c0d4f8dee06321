//! Reload latency: from a plugin file written to the first call answered by the
//! new version, for each bundled plugin, with a cold compile and with a compile
//! cache hit; beside it, in the same run, the baseline of restarting: loading
//! the whole plugin set from scratch (cache warm) and answering one call.
//!
//! `cargo bench -p assay-benches --bench reload` (needs the PostgreSQL server
//! binaries; starts a private server in a temporary directory). Set
//! `RELOAD_SAMPLES` to change the number of reloads per plugin and mode, and
//! `RELOAD_LOAD` to the number of clients that keep running documents through
//! the pipeline meanwhile (0 by default); their calls, and any that failed,
//! are reported at the end.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use assay::config::Config;
use assay::db::Database;
use assay::db::embedded::EmbeddedPostgres;
use assay::engine::Engine;
use assay::pipeline::{DocumentInput, Pipeline};
use assay::registry::live::LiveRegistry;
use assay::registry::watch;
use assay::runtime::loader::sha256_hex;

/// The debounce `assay up` uses by default; it is part of what an operator
/// waits. `RELOAD_DEBOUNCE_MS` changes it, to see the engine's own share.
fn debounce() -> Duration {
    Duration::from_millis(
        std::env::var("RELOAD_DEBOUNCE_MS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(200),
    )
}

/// `bytes` with a custom section appended: a distinct component (new hash, so a
/// real compile) that behaves exactly the same.
fn with_nonce(bytes: &[u8], nonce: u64) -> Vec<u8> {
    let name = b"assay-bench-nonce";
    let payload = nonce.to_le_bytes();
    let mut section = Vec::new();
    section.push(name.len() as u8);
    section.extend_from_slice(name);
    section.extend_from_slice(&payload);
    let mut out = bytes.to_vec();
    out.push(0); // custom section id
    out.push(section.len() as u8); // fits one LEB128 byte
    out.extend_from_slice(&section);
    out
}

fn document_for(plugin: &str) -> DocumentInput {
    let mut metadata = serde_json::Map::new();
    metadata.insert("group".into(), serde_json::json!("bench"));
    DocumentInput {
        source: format!("bench-{plugin}"),
        kind: "transcript".into(),
        metadata,
        text: "Customer: my router failed again, write to dana@example.com. Agent: sorry, we will refund you.".into(),
    }
}

async fn answered_by(pipeline: &Pipeline, plugin: &str, sha: &str) -> bool {
    match pipeline.run(document_for(plugin)).await {
        Ok(report) => report
            .findings
            .iter()
            .any(|f| f.plugin == plugin && f.plugin_sha256 == sha),
        Err(_) => false,
    }
}

/// Writes `bytes` as the plugin file and waits for a call answered by it.
async fn reload(dir: &Path, plugin: &str, bytes: &[u8], pipeline: &Pipeline) -> Duration {
    let sha = sha256_hex(bytes);
    let path = dir.join(format!("{plugin}.wasm"));
    let scratch = dir.join(format!(".{plugin}.partial"));
    std::fs::write(&scratch, bytes).expect("write plugin");
    let started = Instant::now();
    std::fs::rename(&scratch, &path).expect("rename plugin");
    loop {
        if answered_by(pipeline, plugin, &sha).await {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{plugin} never reloaded"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// What `assay up` does before serving: connect (checking migrations), build the
/// runtime with its compile cache, load every plugin. Used for the engine under
/// test and, timed, as the restart baseline.
async fn start_engine(server: &EmbeddedPostgres, config: &Config) -> (Arc<LiveRegistry>, Pipeline) {
    let db = Arc::new(
        Database::open_with(server.pg_config("postgres"), &config.database)
            .await
            .expect("database"),
    );
    let engine = Engine::builder(config.clone())
        .database(db)
        .live()
        .build()
        .await
        .expect("engine");
    let live = Arc::clone(engine.live().expect("built live"));
    (live, engine.pipeline().clone())
}

/// Calls the load made, and how many of them failed.
#[derive(Default)]
struct Load {
    stop: AtomicBool,
    runs: AtomicU64,
    failed: AtomicU64,
    first_failure: std::sync::Mutex<Option<String>>,
}

/// `clients` tasks running documents through `pipeline` until `load.stop`.
fn start_load(
    pipeline: &Pipeline,
    clients: usize,
    load: &Arc<Load>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..clients)
        .map(|_| {
            let (pipeline, load) = (pipeline.clone(), Arc::clone(load));
            tokio::spawn(async move {
                while !load.stop.load(Ordering::Relaxed) {
                    let outcome = pipeline.run(document_for("load")).await;
                    load.runs.fetch_add(1, Ordering::Relaxed);
                    let failure = match outcome {
                        Ok(report) => report
                            .plugins
                            .iter()
                            .find(|p| p.outcome.as_str() == "failed")
                            .map(|p| format!("{}: {:?}", p.plugin, p.message)),
                        Err(e) => Some(e.to_string()),
                    };
                    if let Some(failure) = failure {
                        load.failed.fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut first) = load.first_failure.lock() {
                            first.get_or_insert(failure);
                        }
                    }
                }
            })
        })
        .collect()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn summary(samples: &mut [Duration]) -> String {
    samples.sort();
    format!(
        "median {:>7.1} ms   p99 {:>7.1} ms   (n = {})",
        percentile(samples, 0.5).as_secs_f64() * 1e3,
        percentile(samples, 0.99).as_secs_f64() * 1e3,
        samples.len()
    )
}

fn main() {
    if support::only_listing() {
        return;
    }
    let samples: usize = std::env::var("RELOAD_SAMPLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let rt = tokio::runtime::Runtime::new().expect("tokio");
    let (server, root) = support::private_server();
    let plugin_dir = root.path().join("plugins");
    let cache_dir = root.path().join("cache");
    std::fs::create_dir_all(&plugin_dir).expect("plugin dir");

    rt.block_on(async {
        let mut config = Config::default();
        config.plugins.dir = plugin_dir.clone();
        config.plugins.cache_dir = cache_dir.clone();
        config.plugins.watch_debounce_ms = debounce().as_millis() as u64;
        let (live, pipeline) = start_engine(&server, &config).await;
        let _watch = watch::watch(Arc::clone(&live), debounce(), |_, _| {}).expect("watch");
        let clients: usize = std::env::var("RELOAD_LOAD")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let load = Arc::new(Load::default());
        let loaders = start_load(&pipeline, clients, &load);

        println!("reload latency: file written -> first call answered by the new version");
        println!(
            "debounce {} ms (plugins.watch_debounce_ms), {samples} reloads per plugin and mode\n",
            debounce().as_millis()
        );
        let mut nonce = 0u64;
        for (file, bytes) in assay::bundled::BUNDLED {
            let plugin = file.trim_end_matches(".wasm");
            // Cold: a version never seen, so it is compiled.
            let mut cold = Vec::new();
            for _ in 0..samples {
                nonce += 1;
                cold.push(reload(&plugin_dir, plugin, &with_nonce(bytes, nonce), &pipeline).await);
            }
            // Cache hit: two versions compiled once, then swapped back and forth.
            let (a, b) = (with_nonce(bytes, u64::MAX - 1), with_nonce(bytes, u64::MAX));
            reload(&plugin_dir, plugin, &a, &pipeline).await;
            reload(&plugin_dir, plugin, &b, &pipeline).await;
            let mut hit = Vec::new();
            for i in 0..samples {
                hit.push(
                    reload(
                        &plugin_dir,
                        plugin,
                        if i % 2 == 0 { &a } else { &b },
                        &pipeline,
                    )
                    .await,
                );
            }
            println!("{plugin:<10} cold compile  {}", summary(&mut cold));
            println!("{plugin:<10} cache hit     {}", summary(&mut hit));
        }
        load.stop.store(true, Ordering::Relaxed);
        for loader in loaders {
            loader.await.expect("a load client");
        }
        if clients > 0 {
            println!(
                "\nunder load: {clients} clients ran {} documents through the pipeline meanwhile, {} with a failed plugin{}",
                load.runs.load(Ordering::Relaxed),
                load.failed.load(Ordering::Relaxed),
                load.first_failure
                    .lock()
                    .ok()
                    .and_then(|f| f.clone())
                    .map(|f| format!(" (first: {f})"))
                    .unwrap_or_default()
            );
        }

        // Baseline: what restarting the engine costs even leaving out the process
        // start and the database server: connect (and check migrations), build the
        // runtime, load every plugin (compile cache warm), answer one call.
        let mut restart = Vec::new();
        for _ in 0..samples.min(10) {
            let started = Instant::now();
            let (_live, pipeline) = start_engine(&server, &config).await;
            pipeline.run(document_for("keywords")).await.expect("call");
            restart.push(started.elapsed());
        }
        println!("\nbaseline: restart in-process (connect, runtime, load all plugins, one call; cache warm)");
        println!("restart    all plugins   {}", summary(&mut restart));
    });
    drop(server);
}
