//! Hot reload: real files in a watched directory, a running engine, concurrent
//! calls, and the version history.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use assay::db::Database;
use assay::registry::PluginLoader;
use assay::registry::live::{LiveRegistry, ReloadOutcome};
use assay::registry::watch::{self, Watch};
use assay::runtime::Runtime;
use assay::runtime::cache::Compiled;
use assay::service::AppState;
use serde_json::{Value, json};

use crate::support::{TestDb, built_plugin, doc, fresh_database, shared_tempdir};

const DEBOUNCE_MS: u64 = 150;

type Events = Arc<Mutex<Vec<(PathBuf, ReloadOutcome)>>>;

struct LiveEngine {
    state: Arc<AppState>,
    live: Arc<LiveRegistry>,
    events: Events,
    dir: tempfile::TempDir,
    cache: tempfile::TempDir,
    test_db: TestDb,
    _watch: Watch,
}

async fn live_engine_on(
    test_db: TestDb,
    dir: tempfile::TempDir,
    cache: tempfile::TempDir,
) -> LiveEngine {
    let mut config = assay::config::Config::default();
    config.plugins.dir = dir.path().to_path_buf();
    config.plugins.bundled = false;
    config.plugins.cache_dir = cache.path().to_path_buf();
    config.plugins.watch_debounce_ms = DEBOUNCE_MS;
    let db = Arc::new(
        Database::open_with(test_db.config.clone(), &config.database)
            .await
            .unwrap(),
    );
    let runtime = Arc::new(Runtime::new(&Default::default(), Some(cache.path())).unwrap());
    let loader = PluginLoader::new(Arc::clone(&runtime), Arc::clone(&db), config.clone())
        .await
        .unwrap();
    let live = LiveRegistry::start(loader).await.unwrap();
    let events: Events = Arc::default();
    let sink = Arc::clone(&events);
    let watch = watch::watch(
        Arc::clone(&live),
        Duration::from_millis(DEBOUNCE_MS),
        move |path, outcome| {
            sink.lock().unwrap().push((path.clone(), outcome.clone()));
        },
    )
    .unwrap();
    let state = AppState::new(runtime, Arc::clone(&live), db, config);
    LiveEngine {
        state,
        live,
        events,
        dir,
        cache,
        test_db,
        _watch: watch,
    }
}

async fn live_engine() -> LiveEngine {
    live_engine_on(
        fresh_database().await,
        shared_tempdir(),
        tempfile::tempdir().unwrap(),
    )
    .await
}

impl LiveEngine {
    fn file(&self) -> PathBuf {
        self.dir.path().join("swapper.wasm")
    }

    fn event_count(&self) -> usize {
        self.events.lock().unwrap().len()
    }

    /// Waits for the first outcome after `from` matching `want`; returns it.
    async fn wait_for(&self, from: usize, want: impl Fn(&ReloadOutcome) -> bool) -> ReloadOutcome {
        for _ in 0..200 {
            if let Some((_, outcome)) = self.events.lock().unwrap()[from..]
                .iter()
                .find(|(_, o)| want(o))
            {
                return outcome.clone();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no such reload; events: {:?}", self.events.lock().unwrap());
    }

    /// Replaces the file atomically (write elsewhere, rename over) and waits for
    /// the version with `bytes` to serve.
    async fn install(&self, bytes: &[u8]) {
        let sha = assay::runtime::loader::sha256_hex(bytes);
        let from = self.event_count();
        let scratch = self.dir.path().join(".swapper.wasm.partial");
        std::fs::write(&scratch, bytes).unwrap();
        std::fs::rename(&scratch, self.file()).unwrap();
        self.wait_for(
            from,
            |o| matches!(o, ReloadOutcome::Loaded { sha256, .. } if *sha256 == sha),
        )
        .await;
    }

    /// Which swapper version answered a call (asserting the answer is whole).
    async fn answer(&self) -> Option<String> {
        let report = self
            .state
            .pipeline
            .run(doc("probe", "swap", "which version?"))
            .await
            .unwrap();
        version_of(&report)
    }

    async fn http(&self, method: &str, uri: &str, body: Option<Value>) -> (u16, Value) {
        let (status, _, body) = crate::support::http(&self.state, method, uri, body).await;
        (status, body)
    }
}

/// The swapper version behind a report; panics if the answer mixes versions.
fn version_of(report: &assay::pipeline::RunReport) -> Option<String> {
    let labels: Vec<&str> = report
        .findings
        .iter()
        .filter(|f| f.plugin == "swapper")
        .map(|f| f.label.as_str())
        .collect();
    if labels.is_empty() {
        return None;
    }
    assert_eq!(labels.len(), 5, "a whole answer has 5 findings: {labels:?}");
    assert!(
        labels.iter().all(|l| *l == labels[0]),
        "an answer mixed versions: {labels:?}"
    );
    let versions: Vec<&str> = report
        .findings
        .iter()
        .filter(|f| f.plugin == "swapper")
        .map(|f| f.plugin_version.as_str())
        .collect();
    assert!(versions.iter().all(|v| *v == versions[0]));
    Some(labels[0].to_string())
}

fn one() -> Vec<u8> {
    built_plugin("swap_one.wasm")
}

fn two() -> Vec<u8> {
    built_plugin("swap_two.wasm")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapping_under_load_drops_no_call() {
    let engine = Arc::new(live_engine().await);
    engine.install(&one()).await;
    assert_eq!(engine.answer().await.as_deref(), Some("swap:v1"));

    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let mut callers = Vec::new();
    for worker in 0..4 {
        let engine = Arc::clone(&engine);
        let stop = Arc::clone(&stop);
        let failures = Arc::clone(&failures);
        callers.push(tokio::spawn(async move {
            let mut seen = std::collections::BTreeMap::<String, usize>::new();
            let mut calls = 0;
            while !stop.load(Ordering::SeqCst) && calls < 20_000 {
                match engine
                    .state
                    .pipeline
                    .run(doc(&format!("load-{worker}"), "swap", "swap me"))
                    .await
                {
                    Ok(report) if report.status == "ok" => match version_of(&report) {
                        Some(v) => *seen.entry(v).or_default() += 1,
                        None => {
                            failures.fetch_add(1, Ordering::SeqCst);
                        }
                    },
                    _ => {
                        failures.fetch_add(1, Ordering::SeqCst);
                    }
                }
                calls += 1;
            }
            seen
        }));
    }
    let (v1, v2) = (one(), two());
    for swap in 0..100 {
        engine.install(if swap % 2 == 0 { &v2 } else { &v1 }).await;
    }
    stop.store(true, Ordering::SeqCst);
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    for caller in callers {
        for (version, n) in caller.await.unwrap() {
            *seen.entry(version).or_default() += n;
        }
    }
    assert_eq!(
        failures.load(Ordering::SeqCst),
        0,
        "calls failed during swaps; answers: {seen:?}"
    );
    assert!(
        seen.contains_key("swap:v1") && seen.contains_key("swap:v2"),
        "{seen:?}"
    );
    // 100 swaps, but only two versions were ever compiled: the rest came from the cache.
    assert_eq!(engine.answer().await.as_deref(), Some("swap:v1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_candidate_keeps_the_last_good_version_serving() {
    let engine = live_engine().await;
    engine.install(&one()).await;
    let half = &two()[..two().len() / 2];
    for (bytes, words) in [
        (b"garbage, not wasm".to_vec(), "not a WebAssembly file"),
        (half.to_vec(), "cannot compile"),
        (
            built_plugin("not-a-plugin.wasm"),
            "neither the `analyzer` nor the `prompt-processor`",
        ),
        (
            built_plugin("future_wit.wasm"),
            "assay:plugin@0.9.0, but this assay supports assay:plugin@0.1.0",
        ),
        (
            built_plugin("bad_describe.wasm"),
            "describe is broken on purpose",
        ),
    ] {
        let from = engine.event_count();
        // Put in place whole (written beside, renamed over): written in
        // place, a loaded machine can pause between the truncation and the
        // write for longer than the debounce, and the empty file in between
        // is refused first (rightly; editors' in-place saves are tested on
        // their own).
        let scratch = engine.file().with_extension("wasm.partial");
        std::fs::write(&scratch, &bytes).unwrap();
        std::fs::rename(&scratch, engine.file()).unwrap();
        let outcome = engine
            .wait_for(from, |o| matches!(o, ReloadOutcome::Refused(_)))
            .await;
        let ReloadOutcome::Refused(message) = outcome else {
            unreachable!()
        };
        assert!(message.contains(words), "{message}");
        assert_eq!(
            engine.answer().await.as_deref(),
            Some("swap:v1"),
            "the last good version serves on"
        );
        let (status, body) = engine.http("GET", "/v1/plugins", None).await;
        assert_eq!(status, 200);
        let swapper = body["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["source"].as_str().unwrap().ends_with("swapper.wasm"))
            .unwrap()
            .clone();
        assert_eq!(swapper["status"], "active");
        assert_eq!(swapper["version"], "1.0.0");
        assert!(
            swapper["last_error"].as_str().unwrap().contains(words),
            "{swapper}"
        );
    }
    // A precompiled artifact is never loaded, whatever it claims to be.
    let from = engine.event_count();
    std::fs::write(
        engine.dir.path().join("swapper.cwasm"),
        b"\x7fELF native code",
    )
    .unwrap();
    let outcome = engine
        .wait_for(from, |o| matches!(o, ReloadOutcome::Refused(_)))
        .await;
    assert_eq!(
        outcome,
        ReloadOutcome::Refused(assay::registry::PRECOMPILED_REFUSED.to_string()),
        "a .cwasm file is never loaded"
    );
    assert_eq!(engine.answer().await.as_deref(), Some("swap:v1"));

    // Refusals are recorded too, one row per file and content.
    let client = engine.test_db.client().await;
    let refused: i64 = client
        .query_one(
            "SELECT count(*) FROM assay.plugin_refusals WHERE source LIKE '%swapper.wasm'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(refused, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editor_saves_end_in_exactly_one_reload_of_the_final_content() {
    let engine = live_engine().await;
    engine.install(&one()).await;
    let loads_since = |from: usize| {
        engine.events.lock().unwrap()[from..]
            .iter()
            .filter(|(p, o)| {
                p.ends_with("swapper.wasm") && matches!(o, ReloadOutcome::Loaded { .. })
            })
            .count()
    };
    // Until `version` serves (a loaded machine may take seconds to notice,
    // read and load), then long enough for any further load to show.
    let settle_on = async |version: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while engine.answer().await.as_deref() != Some(version) {
            assert!(
                std::time::Instant::now() < deadline,
                "{version} never served: {:?}",
                engine.events.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(DEBOUNCE_MS * 5)).await;
    };

    // Save by rename: write a temporary file, rename it over the plugin.
    let from = engine.event_count();
    let tmp = engine.dir.path().join("swapper.wasm~");
    std::fs::write(&tmp, two()).unwrap();
    std::fs::rename(&tmp, engine.file()).unwrap();
    settle_on("swap:v2").await;
    assert_eq!(loads_since(from), 1, "{:?}", engine.events.lock().unwrap());
    assert_eq!(engine.answer().await.as_deref(), Some("swap:v2"));

    // Save by truncate-and-write, in two pieces.
    let from = engine.event_count();
    {
        use std::io::Write as _;
        let bytes = one();
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(engine.file())
            .unwrap();
        file.write_all(&bytes[..bytes.len() / 2]).unwrap();
        file.flush().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        file.write_all(&bytes[bytes.len() / 2..]).unwrap();
    }
    settle_on("swap:v1").await;
    assert_eq!(loads_since(from), 1, "{:?}", engine.events.lock().unwrap());
    assert_eq!(engine.answer().await.as_deref(), Some("swap:v1"));

    // A burst of 20 quick writes, ending on version two.
    let from = engine.event_count();
    for i in 0..20 {
        std::fs::write(engine.file(), if i % 2 == 0 { one() } else { two() }).unwrap();
    }
    settle_on("swap:v2").await;
    assert_eq!(loads_since(from), 1, "{:?}", engine.events.lock().unwrap());
    assert_eq!(engine.answer().await.as_deref(), Some("swap:v2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_are_kept_and_rollback_works_after_the_file_is_gone() {
    let engine = live_engine().await;
    engine.install(&one()).await;
    engine.install(&two()).await;
    let db = &engine.state.db;
    let versions = assay::registry::history::versions(db, "swapper")
        .await
        .unwrap();
    assert_eq!(versions.len(), 2);
    assert!(
        versions[0].current && versions[0].version == "2.0.0",
        "{versions:?}"
    );
    assert_eq!(versions[1].size as usize, one().len());

    // The file goes away: the plugin unloads once its calls finish.
    let from = engine.event_count();
    std::fs::remove_file(engine.file()).unwrap();
    engine
        .wait_for(from, |o| matches!(o, ReloadOutcome::Unloaded(_)))
        .await;
    assert_eq!(engine.answer().await, None);

    // Roll back (to the version before the current one) from the kept bytes.
    let (status, body) = engine
        .http("POST", "/v1/plugins/swapper/rollback", None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], "1.0.0");
    assert_eq!(body["outcome"], "serving", "{body}");
    assert_eq!(engine.answer().await.as_deref(), Some("swap:v1"));

    // And to a named version, by hash prefix.
    let prefix = &assay::runtime::loader::sha256_hex(&two())[..10];
    let (status, body) = engine
        .http(
            "POST",
            "/v1/plugins/swapper/rollback",
            Some(json!({ "sha256": prefix })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(engine.answer().await.as_deref(), Some("swap:v2"));
    let (status, body) = engine
        .http(
            "POST",
            "/v1/plugins/swapper/rollback",
            Some(json!({ "sha256": "ffffffff" })),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("no version ffffffff")
    );

    // The same through the command line.
    let cli = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_assay"))
            .args(args)
            .current_dir(engine.dir.path())
            .env("DATABASE_URL", &engine.test_db.url)
            .env("ASSAY_CONFIG", engine.dir.path().join("none.toml"))
            .env("ASSAY__PLUGINS__DIR", engine.dir.path())
            .output()
            .unwrap()
    };
    let out = cli(&["plugins", "history", "swapper"]);
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        table.contains("1.0.0") && table.contains("2.0.0"),
        "{table}"
    );
    let from = engine.event_count();
    let sha_one = assay::runtime::loader::sha256_hex(&one());
    let out = cli(&["plugins", "rollback", "swapper", &sha_one[..12]]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    engine
        .wait_for(
            from,
            |o| matches!(o, ReloadOutcome::Loaded { sha256, .. } if *sha256 == sha_one),
        )
        .await;
    assert_eq!(
        engine.answer().await.as_deref(),
        Some("swap:v1"),
        "the watcher loaded the rolled-back file"
    );
    let out = cli(&["plugins", "history", "nobody"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("never loaded here"));

    // A restart restores the active version (and compiles nothing: the cache has it).
    let LiveEngine {
        test_db,
        dir,
        cache,
        ..
    } = engine;
    let restarted = live_engine_on(test_db, dir, cache).await;
    assert_eq!(restarted.answer().await.as_deref(), Some("swap:v1"));
    let swapper = restarted.live.snapshot().get("swapper").cloned().unwrap();
    assert_eq!(swapper.loaded.compiled, Compiled::Cached);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compile_cache_ignores_entries_it_did_not_write_well() {
    let engine = live_engine().await;
    engine.install(&one()).await;
    let first = engine.live.snapshot().get("swapper").cloned().unwrap();
    assert_eq!(first.loaded.compiled, Compiled::Fresh);
    let cache_dir =
        assay::runtime::cache::CompileCache::new(engine.cache.path(), &wasmtime_engine())
            .dir()
            .to_path_buf();
    let entry = cache_dir.join(format!("{}.cwasm", first.loaded.identity.sha256));
    assert!(entry.is_file(), "the engine cached what it compiled");
    // A corrupted entry is not trusted: the component is compiled again.
    std::fs::write(&entry, b"not an artifact").unwrap();
    engine.install(&two()).await;
    engine.install(&one()).await;
    let again = engine.live.snapshot().get("swapper").cloned().unwrap();
    assert_eq!(again.loaded.compiled, Compiled::Fresh);
    assert_eq!(engine.answer().await.as_deref(), Some("swap:v1"));
}

fn wasmtime_engine() -> wasmtime::Engine {
    // Same settings as the runtime: the cache folder name depends on them.
    Runtime::new(&Default::default(), None)
        .unwrap()
        .engine()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_analyze_plugins_and_health() {
    let engine = live_engine().await;
    engine.install(&one()).await;
    let (status, body) = engine
        .http(
            "POST",
            "/v1/analyze",
            Some(json!({ "text": "hello", "kind": "swap", "metadata": { "group": "g" } })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["run_id"].as_str().unwrap().len(), 36);
    assert_eq!(body["findings"].as_array().unwrap().len(), 5);
    for (request, words) in [
        (json!({ "text": "  " }), "empty"),
        (json!({ "text": "x", "kind": "bad kind!" }), "kind"),
    ] {
        let (status, body) = engine.http("POST", "/v1/analyze", Some(request)).await;
        assert_eq!(status, 400);
        assert!(body["error"].as_str().unwrap().contains(words), "{body}");
    }
    let (status, body) = engine
        .http("POST", "/v1/analyze", Some(json!({ "txt": "typo" })))
        .await;
    assert_eq!(status, 422, "an unknown field is refused");
    assert!(body["error"].as_str().unwrap().contains("txt"), "{body}");
    let (status, body) = engine
        .http(
            "POST",
            "/v1/analyze",
            Some(json!(["hello", null, null, null])),
        )
        .await;
    assert_eq!(status, 422, "an array is not a document: {body}");

    let (status, health) = engine.http("GET", "/healthz", None).await;
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok");
    assert!(
        health["postgres"]["version"]
            .as_str()
            .unwrap()
            .starts_with("15")
    );
    assert!(health["postgres"]["port"].as_u64().is_some());
    assert!(health["pools"]["engine"]["connections"].as_u64().is_some());
    assert!(
        health["pools"]["plugins"]["swapper"].is_object(),
        "{health}"
    );
}

#[test]
fn assay_up_serves_and_stops_cleanly_on_sigterm() {
    let dir = shared_tempdir();
    let db = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(fresh_database());
    std::fs::write(dir.path().join("swapper.wasm"), one()).unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_assay"));
    command
        .current_dir(dir.path())
        .env("DATABASE_URL", &db.url)
        .env("ASSAY_CONFIG", dir.path().join("none.toml"))
        .env("ASSAY__PLUGINS__DIR", dir.path());
    let up = crate::as_used::Up::spawn(command);
    // A name the engine does not answer to (DNS rebinding) is refused.
    let (status, foreign) = up.request_as("assay", "GET", "/healthz", None);
    assert_eq!(status, 403, "{foreign}");
    assert!(
        foreign["error"]
            .as_str()
            .unwrap()
            .contains("server.allowed_hosts"),
        "{foreign}"
    );
    let (status, health) = up.request("GET", "/healthz", None);
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["status"], "ok", "{health}");
    let (_, plugins) = up.request("GET", "/v1/plugins", None);
    assert!(
        plugins["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "swapper"),
        "{plugins}"
    );
    let (clean, said) = up.stop();
    assert!(clean, "{said}");
    assert!(said.contains("assay stopped"), "{said}");
}

/// A new version of a plugin already provisioned reuses its login, and
/// takes over the connections of the version before (its pool); but one
/// dropped in the meantime (`assay plugins drop`) is provisioned again, with
/// a pool of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_dropped_between_versions_is_provisioned_again() {
    let engine = live_engine().await;
    let pool = || {
        engine
            .live
            .snapshot()
            .get("swapper")
            .unwrap()
            .capabilities
            .sql
            .pool()
            .clone()
    };
    engine.install(&one()).await;
    let first = pool();
    let client = engine.test_db.client().await;
    let roles = async || -> i64 {
        client
            .query_one(
                "SELECT count(*) FROM assay.plugin_roles r JOIN pg_roles p ON p.rolname = r.role_name WHERE r.plugin = 'swapper' AND r.dropped_at IS NULL AND p.rolcanlogin",
                &[],
            )
            .await
            .unwrap()
            .get(0)
    };
    assert_eq!(roles().await, 1);
    engine.install(&two()).await;
    assert_eq!(roles().await, 1);
    assert!(pool().is(&first), "the next version took over the pool");
    assert!(
        assay::capability::sql::sandbox::drop_plugin(&engine.state.db, "swapper", false)
            .await
            .unwrap()
    );
    assert_eq!(roles().await, 0);
    engine.install(&one()).await;
    assert_eq!(roles().await, 1, "provisioned again");
    assert!(!pool().is(&first), "with a pool of its own");
    assert_eq!(engine.answer().await.as_deref(), Some("swap:v1"));
}
