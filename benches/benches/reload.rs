//! Reload latency: from a plugin file renamed into place to the new version
//! serving (the engine's own part: notice, read, compile or load from the
//! cache, `describe`, register), and to the first run answered by it (what a
//! client sees: any client's run, a load client's or the probe's), for each
//! bundled plugin, with a cold compile and with a compile cache hit; beside
//! it, in the same run, the baseline of restarting: loading the whole plugin
//! set from scratch (cache warm) and answering one call.
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
use assay::registry::PluginSource;
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

/// When the version being swapped in first answered a run that started
/// after the swap did, whoever's run it was (a load client's or the
/// probe's), and how long runs took: what a client of the engine sees of a
/// swap. (A run keeps the versions it started with, and the cache-hit swaps
/// go back and forth between two versions, so only runs started after the
/// swap count.)
#[derive(Default)]
struct Answers {
    /// The version swapped in, since when, and when it first answered.
    awaited: std::sync::Mutex<Option<(String, Instant, Option<Instant>)>>,
    runs: AtomicU64,
    run_ns: AtomicU64,
}

impl Answers {
    /// From now on, watch for runs answered by `sha` that started at or
    /// after `since`.
    fn arm(&self, sha: &str, since: Instant) {
        if let Ok(mut awaited) = self.awaited.lock() {
            *awaited = Some((sha.to_string(), since, None));
        }
    }

    /// Notes the versions that answered `report`, a run started at `started`.
    fn note(&self, report: &assay::pipeline::RunReport, started: Instant) {
        let now = Instant::now();
        self.runs.fetch_add(1, Ordering::Relaxed);
        self.run_ns.fetch_add(
            now.saturating_duration_since(started).as_nanos() as u64,
            Ordering::Relaxed,
        );
        if let Ok(mut awaited) = self.awaited.lock()
            && let Some((sha, since, first @ None)) = awaited.as_mut()
            && started >= *since
            && report.findings.iter().any(|f| f.plugin_sha256 == *sha)
        {
            *first = Some(now);
        }
    }

    /// When the awaited version first answered, if it has.
    fn first(&self) -> Option<Instant> {
        self.awaited.lock().ok()?.as_ref()?.2
    }

    /// Runs and their mean time since the last call.
    fn take_mean(&self) -> (u64, Duration) {
        let runs = self.runs.swap(0, Ordering::Relaxed);
        let ns = self.run_ns.swap(0, Ordering::Relaxed);
        (runs, Duration::from_nanos(ns / runs.max(1)))
    }
}

/// One run of `plugin`'s document, noted in `answers`.
async fn probe(pipeline: &Pipeline, plugin: &str, answers: &Answers) {
    let started = Instant::now();
    if let Ok(report) = pipeline.run(document_for(plugin)).await {
        answers.note(&report, started);
    }
}

/// How long one swap took, measured twice: until the registry served the new
/// version (what the engine itself does: notice, read, compile or load from
/// the cache, `describe`, register), and until the first run answered by it
/// was answered, whoever's run it was (what a client sees: under load it
/// includes that run's own time, queued behind the load's calls).
struct Swap {
    serving: Duration,
    answered: Duration,
}

/// Writes `bytes` as the plugin file by rename and waits until a run was
/// answered by it (probing while no other client's run was).
async fn reload(
    dir: &Path,
    plugin: &str,
    bytes: &[u8],
    live: &LiveRegistry,
    pipeline: &Pipeline,
    answers: &Answers,
) -> Swap {
    let sha = sha256_hex(bytes);
    let path = dir.join(format!("{plugin}.wasm"));
    let scratch = dir.join(format!(".{plugin}.partial"));
    std::fs::write(&scratch, bytes).expect("write plugin");
    let started = Instant::now();
    answers.arm(&sha, started);
    std::fs::rename(&scratch, &path).expect("rename plugin");
    let serves = || {
        live.snapshot()
            .get(plugin)
            .is_some_and(|p| p.loaded.identity.sha256 == sha)
    };
    let serving = async {
        while !serves() {
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        started.elapsed()
    };
    let answered = async {
        loop {
            if let Some(at) = answers.first() {
                return at.saturating_duration_since(started);
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{plugin} never reloaded"
            );
            probe(pipeline, plugin, answers).await;
        }
    };
    let (serving, answered) = tokio::join!(serving, answered);
    Swap { serving, answered }
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
    answers: &Arc<Answers>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..clients)
        .map(|_| {
            let (pipeline, load, answers) =
                (pipeline.clone(), Arc::clone(load), Arc::clone(answers));
            tokio::spawn(async move {
                while !load.stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let outcome = pipeline.run(document_for("load")).await;
                    if let Ok(report) = &outcome {
                        answers.note(report, started);
                    }
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
        let answers = Arc::new(Answers::default());
        let loaders = start_load(&pipeline, clients, &load, &answers);

        println!(
            "reload latency: file renamed into place -> the new version serving / first answering"
        );
        println!(
            "debounce {} ms (plugins.watch_debounce_ms), {samples} reloads per plugin and mode\n",
            debounce().as_millis()
        );
        // `RELOAD_PLUGINS=history,redact` swaps only those bundled plugins.
        let only: Option<Vec<String>> = std::env::var("RELOAD_PLUGINS")
            .ok()
            .map(|list| list.split(',').map(|p| p.trim().to_string()).collect());
        println!(
            "each: until the registry serves it / until the first run answered by it was answered (any client's run)\n"
        );
        let mut nonce = 0u64;
        for (file, bytes) in assay::bundled::BUNDLED {
            // The plugin's name is its manifest's (`audit_report.wasm` holds
            // `audit-report`).
            let Some(plugin) = live
                .snapshot()
                .plugins()
                .iter()
                .find(|p| p.source == PluginSource::Bundled(file))
                .map(|p| p.name().to_string())
            else {
                continue;
            };
            let plugin = plugin.as_str();
            if only.as_ref().is_some_and(|only| !only.iter().any(|p| p == plugin)) {
                continue;
            }
            // A plugin the probe document does not reach (another kind, or no
            // model configured) cannot show an answer from its new version.
            let report = pipeline.run(document_for(plugin)).await.expect("a probe run");
            if !report.findings.iter().any(|f| f.plugin == plugin) {
                let why = report
                    .plugins
                    .iter()
                    .find(|p| p.plugin == plugin)
                    .and_then(|p| p.message.clone())
                    .unwrap_or_else(|| "it does not handle the probe's document kind".into());
                println!("{plugin:<12} not measured: it gives the probe document no finding ({why})");
                continue;
            }
            let swap = |bytes: Vec<u8>| {
                let (dir, live, pipeline, answers) = (&plugin_dir, &live, &pipeline, &answers);
                async move { reload(dir, plugin, &bytes, live, pipeline, answers).await }
            };
            answers.take_mean();
            // Cold: a version never seen, so it is compiled.
            let mut cold = Vec::new();
            for _ in 0..samples {
                nonce += 1;
                cold.push(swap(with_nonce(bytes, nonce)).await);
            }
            // Cache hit: two versions compiled once, then swapped back and forth.
            let (a, b) = (with_nonce(bytes, u64::MAX - 1), with_nonce(bytes, u64::MAX));
            swap(a.clone()).await;
            swap(b.clone()).await;
            let mut hit = Vec::new();
            for i in 0..samples {
                hit.push(swap(if i % 2 == 0 { a.clone() } else { b.clone() }).await);
            }
            for (mode, swaps) in [("cold compile", &cold), ("cache hit", &hit)] {
                let mut serving: Vec<Duration> = swaps.iter().map(|s| s.serving).collect();
                let mut answered: Vec<Duration> = swaps.iter().map(|s| s.answered).collect();
                println!(
                    "{plugin:<12} {mode:<13} serving {}\n{:<26} answered {}",
                    summary(&mut serving),
                    "",
                    summary(&mut answered)
                );
            }
            let (runs, mean) = answers.take_mean();
            println!(
                "{:<26} a run meanwhile took {:.1} ms on average ({runs} runs)",
                "",
                mean.as_secs_f64() * 1e3
            );
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
