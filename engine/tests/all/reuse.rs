//! Instance reuse (`reuse_instances`, opt-in per plugin), pinned: what a
//! call leaves in the plugin's memory reaches the next call of the same
//! plugin version and nothing else — not another plugin, not a new version,
//! not a call after a trap or a deadline, not past `calls_per_instance` —
//! and everything else a call guarantees holds as with a fresh instance (its
//! SQL in one transaction, undone when it fails; its own output in its error;
//! a session whose leftovers are bounded). With reuse off (the default)
//! nothing carries over.

#![allow(clippy::unwrap_used)]

use assay::config::{Config, PluginLimitsOverride};
use serde_json::{Value, json};

use crate::support::{
    TestEngine, attacker_as, built_plugin, doc, engine_loading, fresh_database, outcome,
    shared_tempdir,
};

/// Reuse on for the plugin `name`, `calls` calls per instance.
fn reusing(config: &mut Config, name: &str, calls: u32) {
    config.limits.plugins.insert(
        name.into(),
        PluginLimitsOverride {
            reuse_instances: Some(true),
            calls_per_instance: Some(calls),
            ..Default::default()
        },
    );
}

struct Engine {
    engine: TestEngine,
    _dir: tempfile::TempDir,
    runs: std::sync::atomic::AtomicUsize,
}

/// An engine with only the attacker plugin under each of `names`.
async fn engine(names: &[&str], adjust: impl FnOnce(&mut Config)) -> Engine {
    let files: Vec<String> = names.iter().map(|name| format!("{name}.wasm")).collect();
    let plugins: Vec<(&str, Vec<u8>)> = names
        .iter()
        .zip(&files)
        .map(|(name, file)| {
            let bytes = if *name == "attacker" {
                built_plugin("attacker.wasm")
            } else {
                attacker_as(name, &[])
            };
            (file.as_str(), bytes)
        })
        .collect();
    let (engine, dir) = engine_loading(fresh_database().await, &plugins, adjust).await;
    assert!(
        engine.registry.problems.is_empty(),
        "{:?}",
        engine.registry.problems
    );
    Engine {
        engine,
        _dir: dir,
        runs: Default::default(),
    }
}

impl Engine {
    /// Runs `script` through every plugin; `plugin`'s outcome and its steps' data.
    async fn run(&self, plugin: &str, script: &str) -> (String, Option<String>, Vec<Value>) {
        let n = self.runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let report = self
            .engine
            .pipeline
            .run(doc(&format!("reuse-{n}"), "attack", script))
            .await
            .unwrap();
        let found = outcome(&report, plugin);
        let steps = report
            .findings
            .iter()
            .filter(|f| f.plugin == plugin)
            .map(|f| f.data.clone())
            .collect();
        (found.outcome.to_string(), found.message.clone(), steps)
    }

    /// What `plugin`'s instance remembers (`recall`).
    async fn recall(&self, plugin: &str) -> Value {
        let (ok, message, steps) = self.run(plugin, "recall").await;
        assert_eq!(ok, "ok", "{message:?}");
        steps[0]["recall"].clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_reuse_no_call_sees_what_another_left() {
    let engine = engine(&["attacker"], |_| {}).await;
    let (ok, _, steps) = engine.run("attacker", "remember secret").await;
    assert_eq!((ok.as_str(), &steps[0]["remembered"]), ("ok", &json!(1)));
    assert_eq!(engine.recall("attacker").await, json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_instance_keeps_memory_for_its_own_plugin_only() {
    // Every script runs through both plugins, each in instances of its own.
    let engine = engine(&["attacker", "other"], |c| {
        reusing(c, "attacker", 1000);
        reusing(c, "other", 1000);
    })
    .await;
    let (ok, _, _) = engine.run("attacker", "remember one").await;
    assert_eq!(ok, "ok");
    engine.run("attacker", "remember two").await;
    assert_eq!(
        engine.recall("attacker").await,
        json!(["attacker:one", "attacker:two"])
    );
    assert_eq!(
        engine.recall("other").await,
        json!(["other:one", "other:two"]),
        "other kept only what it was given itself"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_instance_serves_at_most_calls_per_instance_calls() {
    let engine = engine(&["attacker"], |c| reusing(c, "attacker", 3)).await;
    engine.run("attacker", "remember x").await; // call 1 of the instance
    assert_eq!(engine.recall("attacker").await, json!(["attacker:x"])); // 2
    assert_eq!(engine.recall("attacker").await, json!(["attacker:x"])); // 3: then dropped
    assert_eq!(
        engine.recall("attacker").await,
        json!([]),
        "a fresh instance"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_trapped_or_ran_out_of_time_is_never_reused() {
    let engine = engine(&["attacker"], |c| {
        reusing(c, "attacker", 1000);
        c.limits.call_timeout_ms = 500;
    })
    .await;
    engine.run("attacker", "remember before-trap").await;
    let (ok, message, _) = engine.run("attacker", "panic on purpose").await;
    assert_eq!(ok, "failed");
    assert!(message.unwrap().contains("on purpose"));
    assert_eq!(engine.recall("attacker").await, json!([]));

    engine.run("attacker", "remember before-loop").await;
    let (ok, _, _) = engine.run("attacker", "loop").await;
    assert_eq!(ok, "failed");
    assert_eq!(engine.recall("attacker").await, json!([]));

    // A failure the plugin reports itself is a normal return: the instance
    // is kept, and the call's SQL is undone as always.
    engine
        .run("attacker", "exec CREATE TABLE IF NOT EXISTS notes (n int)")
        .await;
    let (ok, _, _) = engine
        .run(
            "attacker",
            "remember kept\nexec INSERT INTO notes VALUES (1)\nfail",
        )
        .await;
    assert_eq!(ok, "failed");
    assert_eq!(engine.recall("attacker").await, json!(["attacker:kept"]));
    let (_, _, steps) = engine
        .run("attacker", "query SELECT count(*)::int FROM notes")
        .await;
    assert_eq!(
        steps[0]["rows"],
        json!([[0]]),
        "the failed call's insert is undone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_shows_only_its_own_calls_output() {
    let engine = engine(&["attacker"], |c| reusing(c, "attacker", 1000)).await;
    let (ok, _, _) = engine.run("attacker", "print EARLIER-CALL").await;
    assert_eq!(ok, "ok");
    let (ok, message, _) = engine.run("attacker", "print THIS-CALL\npanic now").await;
    assert_eq!(ok, "failed");
    let message = message.unwrap();
    assert!(message.contains("THIS-CALL"), "{message}");
    assert!(!message.contains("EARLIER-CALL"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_printed_much_is_replaced() {
    let engine = engine(&["attacker"], |c| reusing(c, "attacker", 1000)).await;
    engine.run("attacker", "remember x").await;
    let line = "y".repeat(1000);
    let script = format!("print {line}\n").repeat(5);
    let (ok, _, _) = engine.run("attacker", &script).await;
    assert_eq!(ok, "ok");
    // 5 KB of the 8 KB kept to explain a failure are used: not reused.
    assert_eq!(engine.recall("attacker").await, json!([]));
}

/// The database session a reused instance's calls get is the session any
/// call gets: a fresh one per call from the plugin's pool, its leftovers
/// bounded, with the gate on and off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_guarantees_hold_with_reuse() {
    use crate::sandbox::SESSION_LEFTOVERS;
    for gate in [true, false] {
        let engine = engine(&["attacker"], |c| {
            reusing(c, "attacker", 1000);
            c.sandbox.statement_gate = gate;
            c.sandbox.connections_per_plugin = 1;
        })
        .await;
        engine
            .run("attacker", "remember x\nquery SELECT pg_advisory_lock(1)")
            .await;
        let (_, _, steps) = engine
            .run("attacker", &format!("query {SESSION_LEFTOVERS}"))
            .await;
        // With the gate the lock is refused; without it, the session is
        // reset after every call. Either way nothing is left.
        assert_eq!(
            steps[0]["rows"][0][0],
            json!("settings 0 listening 0 cursors 0 advisory 0 prepared 0"),
            "gate {gate}"
        );
        assert_eq!(
            engine.recall("attacker").await,
            json!(["attacker:x"]),
            "gate {gate}"
        );
        // The instance waiting for the next call holds no connection.
        let plugins = engine.engine.registry.plugins();
        let attacker = plugins.iter().find(|p| p.name() == "attacker").unwrap();
        let pool = attacker.capabilities.sql.pool().state();
        assert_eq!(engine.engine.runtime.warm_budget().kept(), 1);
        assert_eq!(
            (pool.connections, pool.idle_connections),
            (1, 1),
            "gate {gate}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_warm_instances_of_all_plugins_are_bounded() {
    let engine = engine(&["attacker", "other"], |c| {
        reusing(c, "attacker", 1000);
        reusing(c, "other", 1000);
        c.limits.warm_instances = 1;
    })
    .await;
    engine.run("attacker", "remember x").await;
    assert_eq!(engine.engine.runtime.warm_budget().kept(), 1);
    // Both plugins ran; one instance was kept, the other dropped. In one run
    // of `recall`, one of them is in its old instance, the other in a new one.
    let report = engine
        .engine
        .pipeline
        .run(doc("recall", "attack", "recall"))
        .await
        .unwrap();
    let recalled: Vec<Value> = report
        .findings
        .iter()
        .map(|f| f.data["recall"].clone())
        .collect();
    assert_eq!(recalled.len(), 2, "{recalled:?}");
    assert_eq!(
        recalled.iter().filter(|r| **r == json!([])).count(),
        1,
        "only one of the two instances was kept: {recalled:?}"
    );
    assert_eq!(engine.engine.runtime.warm_budget().kept(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_starts_with_no_instances() {
    let test_db = fresh_database().await;
    let holder = shared_tempdir();
    let dir = holder.path().join("plugins");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("attacker.wasm"), attacker_as("swapped", &[])).unwrap();
    let built = assay_testing::engine_builder(&test_db, &dir, |c| {
        c.plugins.bundled = false;
        reusing(c, "swapped", 1000);
    })
    .await
    .live()
    .build()
    .await
    .unwrap();
    let live = built.live().unwrap();
    let runs = std::sync::atomic::AtomicUsize::new(0);
    let run = async |script: &str| {
        let n = runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let report = built
            .pipeline()
            .run(doc(&format!("swap-{n}"), "attack", script))
            .await
            .unwrap();
        report
            .findings
            .iter()
            .find(|f| f.plugin == "swapped")
            .map(|f| f.data.clone())
            .unwrap()
    };
    run("remember old").await;
    assert_eq!(run("recall").await["recall"], json!(["swapped:old"]));
    let kept = built.runtime().warm_budget().kept();
    assert_eq!(kept, 1);
    // The same plugin, another build (other migrations): a new version.
    let new = dir.join("attacker.wasm.new");
    std::fs::write(&new, attacker_as("swapped", &["CREATE TABLE t (n int)"])).unwrap();
    std::fs::rename(&new, dir.join("attacker.wasm")).unwrap();
    live.file_event(&dir.join("attacker.wasm")).await;
    assert_eq!(
        run("recall").await["recall"],
        json!([]),
        "the new version never runs in the old one's instance"
    );
    assert_eq!(
        built.runtime().warm_budget().kept(),
        1,
        "the old version's instance went with it; the new one's is kept"
    );
}
