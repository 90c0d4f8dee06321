//! Database faults against a real PostgreSQL: a server that dies under load
//! and comes back, a backend killed mid-call, runs interrupted at random
//! points, one plugin holding all its connections. Each costs the calls it
//! touches, never the engine, and never a committed finding.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use assay::config::PluginLimitsOverride;
use assay::db::DbError;
use assay::pipeline::{Pipeline, PipelineError, RunReport};
use assay::runtime::call::{CallFailure, CallLimits};
use assay::runtime::plugin::Document;

use crate::support::{
    PrivateServer, TestDb, TestEngine, built_plugin, doc, engine_on, faulty_engine, fresh_database,
    outcome, shared_tempdir, slow_statements,
};

/// Every stored run is whole: its findings are exactly what its plugins
/// reported, and every run reported stored is there with all of its findings.
async fn assert_runs_whole(test_db: &TestDb, stored: &[RunReport]) {
    let client = test_db.client().await;
    let broken: Vec<(String, i64, i64)> = client
        .query(
            "SELECT r.id::text,
                    (SELECT count(*) FROM assay.findings f WHERE f.run_id = r.id),
                    (SELECT coalesce(sum(p.findings), 0) FROM assay.run_plugins p WHERE p.run_id = r.id)
             FROM assay.runs r",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get::<_, i64>(2)))
        .filter(|(_, found, reported)| found != reported)
        .collect();
    assert!(broken.is_empty(), "partial runs: {broken:?}");
    let plugin_rows: Vec<i64> = client
        .query(
            "SELECT count(p.run_id) FROM assay.runs r LEFT JOIN assay.run_plugins p ON p.run_id = r.id GROUP BY r.id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(
        plugin_rows.iter().all(|n| *n > 0),
        "a run without its plugins: {plugin_rows:?}"
    );
    for report in stored {
        let found: i64 = client
            .query_one(
                "SELECT count(*) FROM assay.findings WHERE run_id = $1",
                &[&report.run_id],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            found as usize,
            report.findings.len(),
            "run {} was reported stored",
            report.run_id
        );
    }
}

/// How long a run took, and how it ended.
type TimedRun = (Duration, Result<RunReport, PipelineError>);

/// Documents analysed over and over by `workers` tasks until `stop`.
fn load(
    pipeline: &Pipeline,
    workers: usize,
    text: &'static str,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Vec<TimedRun>>> {
    (0..workers)
        .map(|w| {
            let pipeline = pipeline.clone();
            let stop = Arc::clone(stop);
            tokio::spawn(async move {
                let mut results = Vec::new();
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    let started = Instant::now();
                    let result = pipeline
                        .run(doc(&format!("load-{w}-{i}"), "transcript", text))
                        .await;
                    results.push((started.elapsed(), result));
                    i += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                results
            })
        })
        .collect()
}

async fn faulty_sql_call(engine: &TestEngine) -> Result<(), CallFailure> {
    let plugin = engine.registry.get("faulty").unwrap();
    let limits = CallLimits::from_config(&engine.config.limits);
    let document = Document {
        id: uuid::Uuid::new_v4().to_string(),
        kind: "transcript".into(),
        text: "#fault:sql-ok".into(),
        metadata: "{}".into(),
    };
    plugin
        .call(&engine.runtime, &limits, Default::default(), document)
        .await
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_under_load_then_back() {
    let server = tokio::task::spawn_blocking(PrivateServer::start)
        .await
        .unwrap();
    let dir = shared_tempdir();
    std::fs::write(dir.path().join("faulty.wasm"), built_plugin("faulty.wasm")).unwrap();
    let connect_timeout_ms = 1_000;
    let engine = engine_on(server.test_db(), dir.path(), |c| {
        c.database.connect_timeout_ms = connect_timeout_ms;
    })
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let workers = load(
        &engine.pipeline,
        3,
        "#fault:sql-ok A router and a refund.",
        &stop,
    );
    tokio::time::sleep(Duration::from_millis(1_500)).await;

    let server = Arc::new(server);
    let down = Arc::clone(&server);
    tokio::task::spawn_blocking(move || down.stop_immediately())
        .await
        .unwrap();

    // While it is down: a plugin's SQL fails as `database`, within the
    // connect timeout (plus slack for a loaded machine).
    let started = Instant::now();
    let failure = faulty_sql_call(&engine).await.unwrap_err();
    assert!(matches!(&failure, CallFailure::Database(_)), "{failure:?}");
    assert!(started.elapsed() < Duration::from_millis(connect_timeout_ms + 4_000));
    tokio::time::sleep(Duration::from_millis(1_000)).await;

    let up = Arc::clone(&server);
    tokio::task::spawn_blocking(move || up.restart())
        .await
        .unwrap();

    // Back: without a restart of the engine, calls succeed again.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let report = engine
            .pipeline
            .run(doc("after", "transcript", "#fault:sql-ok A router."))
            .await;
        if let Ok(report) = &report
            && report.status == "ok"
        {
            assert_eq!(outcome(report, "history").outcome, "ok");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no recovery after the restart: {report:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(faulty_sql_call(&engine).await.is_ok());
    stop.store(true, Ordering::SeqCst);

    let mut stored = Vec::new();
    let mut refused = 0;
    for worker in workers {
        for (elapsed, result) in worker.await.unwrap() {
            match result {
                Ok(report) => stored.push(report),
                Err(PipelineError::Db(e)) => {
                    refused += 1;
                    assert!(
                        matches!(e, DbError::Unavailable { .. } | DbError::Query { .. }),
                        "{e}"
                    );
                    assert!(
                        elapsed < Duration::from_millis(2 * connect_timeout_ms + 4_000),
                        "a call waited {elapsed:?} for a dead database"
                    );
                }
                Err(other) => panic!("{other}"),
            }
        }
    }
    assert!(!stored.is_empty() && refused > 0, "{refused} refused");
    assert_runs_whole(&engine.test_db, &stored).await;
    drop(engine);
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_backend_fails_only_its_call() {
    let (engine, _dir) = faulty_engine(|c| {
        c.limits.call_timeout_ms = 20_000;
        c.limits.statement_timeout_ms = 20_000;
    })
    .await;
    let pipeline = engine.pipeline.clone();
    let victim = tokio::spawn(async move {
        pipeline
            .run(doc(
                "victim",
                "transcript",
                "#fault:sql-slow about a router",
            ))
            .await
            .unwrap()
    });
    let client = engine.test_db.client().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let pid: i32 = loop {
        if let Some(pid) = slow_statements(&client).await.first() {
            break *pid;
        }
        assert!(
            Instant::now() < deadline,
            "the slow statement never started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Another document, analysed meanwhile, is not affected.
    let bystander = engine
        .pipeline
        .run(doc("bystander", "transcript", "#fault:sql-ok a router"))
        .await
        .unwrap();
    assert_eq!(bystander.status, "ok", "{:?}", bystander.plugins);

    client
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap();
    let report = victim.await.unwrap();
    let faulty = outcome(&report, "faulty");
    assert_eq!(
        faulty.error_kind.map(|k| k.as_str()),
        Some("database"),
        "{faulty:?}"
    );
    assert_eq!(outcome(&report, "history").outcome, "ok");

    // The pool replaced the connection.
    let next = engine
        .pipeline
        .run(doc("next", "transcript", "#fault:sql-ok"))
        .await
        .unwrap();
    assert_eq!(outcome(&next, "faulty").outcome, "ok", "{:?}", next.plugins);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_run_is_stored_whole_or_not_at_all() {
    let (engine, _dir) = faulty_engine(|_| {}).await;
    // Runs committed before the faults start.
    let mut stored = Vec::new();
    for i in 0..3 {
        stored.push(
            engine
                .pipeline
                .run(doc(
                    &format!("before-{i}"),
                    "transcript",
                    "A router, a refund.",
                ))
                .await
                .unwrap(),
        );
    }

    // Kill the engine's own connections, again and again, while runs are stored.
    let stop = Arc::new(AtomicBool::new(false));
    let killer = {
        let stop = Arc::clone(&stop);
        let client = engine.test_db.client().await;
        tokio::spawn(async move {
            let mut killed = 0u64;
            while !stop.load(Ordering::SeqCst) {
                killed += client
                    .query(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                         WHERE datname = current_database() AND application_name = 'assay'
                           AND pid <> pg_backend_pid()",
                        &[],
                    )
                    .await
                    .map(|rows| rows.len() as u64)
                    .unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            killed
        })
    };
    let text = "Findings galore: router refund outage cancel angry happy jane@example.com 555-0100";
    let mut interrupted = 0;
    for i in 0..400 {
        match engine
            .pipeline
            .run(doc(&format!("during-{i}"), "transcript", text))
            .await
        {
            Ok(report) => stored.push(report),
            Err(PipelineError::Db(_)) => interrupted += 1,
            Err(other) => panic!("{other}"),
        }
        if interrupted >= 5 && stored.len() >= 8 {
            break;
        }
    }
    stop.store(true, Ordering::SeqCst);
    let killed = killer.await.unwrap();
    assert!(
        interrupted > 0,
        "no run was interrupted ({killed} connections killed)"
    );
    assert_runs_whole(&engine.test_db, &stored).await;
    // "Nothing of it was kept" includes the document: it is stored with its run.
    let client = engine.test_db.client().await;
    let orphans: i64 = client
        .query_one(
            "SELECT count(*) FROM assay.documents d
             WHERE NOT EXISTS (SELECT 1 FROM assay.runs r WHERE r.document_id = d.id)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        orphans, 0,
        "documents of runs that were not stored were kept"
    );
}

/// A plugin whose calls hold every connection it has (here with slow
/// reads) starves no other plugin. With reads not shared, its calls beyond
/// its connections wait for one and give up, naming the setting; with read
/// lanes they queue behind the slow reads until a connection frees or their
/// deadline passes, and fail as timeouts or as the same wait.
async fn one_plugin_holding_all_its_connections_starves_no_other(shared_reads: bool) {
    let (engine, _dir) = faulty_engine(|c| {
        c.sandbox.shared_reads = shared_reads;
        c.sandbox.connections_per_plugin = 2;
        c.database.connect_timeout_ms = 1_000;
        c.limits.call_timeout_ms = 6_000;
        c.limits.statement_timeout_ms = 4_000;
        c.limits.plugins.insert(
            "faulty".into(),
            PluginLimitsOverride {
                concurrent_calls: Some(8),
                ..Default::default()
            },
        );
    })
    .await;
    let hogs: Vec<_> = (0..5)
        .map(|i| {
            let pipeline = engine.pipeline.clone();
            tokio::spawn(async move {
                pipeline
                    .run(doc(&format!("hog-{i}"), "transcript", "#fault:sql-slow"))
                    .await
                    .unwrap()
            })
        })
        .collect();
    // Wait until faulty holds both its connections.
    let client = engine.test_db.client().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if slow_statements(&client).await.len() == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "faulty never held 2 connections");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // history, another SQL plugin, still gets its connection.
    let report = engine
        .pipeline
        .run(doc("other", "transcript", "A router and a refund."))
        .await
        .unwrap();
    assert_eq!(
        outcome(&report, "history").outcome,
        "ok",
        "{:?}",
        report.plugins
    );
    let mut starved = 0;
    for hog in hogs {
        let report = hog.await.unwrap();
        let faulty = outcome(&report, "faulty");
        match faulty.error_kind.map(|k| k.as_str()) {
            Some("database") => {
                let message = faulty.message.as_deref().unwrap();
                assert!(
                    message.contains("all 2 connections")
                        && message.contains("sandbox.connections_per_plugin"),
                    "{message}"
                );
                starved += 1;
            }
            // The slow read's own statement timeout, told to the plugin, or
            // the call's deadline.
            kind => assert!(matches!(kind, Some("failed" | "timeout")), "{faulty:?}"),
        }
        assert_eq!(outcome(&report, "history").outcome, "ok");
    }
    if !shared_reads {
        assert!(
            starved > 0,
            "the calls beyond faulty's 2 connections waited and gave up"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_plugin_holding_all_its_connections_starves_no_other_reads_shared() {
    one_plugin_holding_all_its_connections_starves_no_other(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_plugin_holding_all_its_connections_starves_no_other_reads_not_shared() {
    one_plugin_holding_all_its_connections_starves_no_other(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_stops_answering_fails_documents_instead_of_hanging_them() {
    let server = tokio::task::spawn_blocking(PrivateServer::start)
        .await
        .unwrap();
    let dir = shared_tempdir();
    std::fs::write(dir.path().join("faulty.wasm"), built_plugin("faulty.wasm")).unwrap();
    let engine = engine_on(server.test_db(), dir.path(), |c| {
        c.database.connect_timeout_ms = 1_000;
        c.database.write_timeout_ms = 1_500;
        c.limits.call_timeout_ms = 2_000;
    })
    .await;
    let before = engine
        .pipeline
        .run(doc("before", "transcript", "#fault:sql-ok A router."))
        .await
        .unwrap();
    assert_eq!(before.status, "ok", "{:?}", before.plugins);

    server.freeze();
    let started = Instant::now();
    let frozen = engine
        .pipeline
        .run(doc("frozen", "transcript", "#fault:sql-ok A router."))
        .await;
    let waited = started.elapsed();
    // A plugin's SQL is cut at the call's deadline.
    let call = faulty_sql_call(&engine).await;
    server.thaw();
    assert!(
        matches!(frozen, Err(PipelineError::Db(DbError::Unavailable { .. }))),
        "{frozen:?}"
    );
    assert!(waited < Duration::from_secs(10), "waited {waited:?}");
    assert!(call.is_err(), "{call:?}");

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let report = engine
            .pipeline
            .run(doc("thawed", "transcript", "#fault:sql-ok A router."))
            .await;
        if matches!(&report, Ok(r) if r.status == "ok") {
            break;
        }
        assert!(Instant::now() < deadline, "no recovery: {report:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_runs_whole(&engine.test_db, &[before]).await;
}

/// A connection returned to a plugin's pool goes to the call that has waited
/// longest, not to one that asks a moment later: otherwise, under load, a
/// few calls could wait out the whole connect timeout while the others went
/// through in a millisecond.
#[tokio::test(flavor = "current_thread")]
async fn connections_are_given_out_in_the_order_asked() {
    use assay::capability::sql::pool::{PoolSettings, build_pool};
    let test_db = fresh_database().await;
    let user = test_db.config.get_user().unwrap().to_string();
    let password = String::from_utf8(test_db.config.get_password().unwrap().to_vec()).unwrap();
    let pool = build_pool(
        &test_db.config,
        &user,
        &password,
        &Arc::new(tokio::sync::Semaphore::new(4)),
        4,
        &PoolSettings {
            max_connections: 1,
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            statement_timeout: Duration::from_secs(5),
            search_path: "public".into(),
        },
    );
    let held = pool.get_owned().await.unwrap();
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let waiter = tokio::spawn({
        let (pool, order) = (pool.clone(), Arc::clone(&order));
        async move {
            let _conn = pool.get_owned().await.unwrap();
            order.lock().unwrap().push("waited");
        }
    });
    // Let the waiter ask and wait (one thread: it runs only while we sleep).
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(held);
    // Asked after the waiter, before it could run again.
    let latecomer = pool.get_owned().await.unwrap();
    order.lock().unwrap().push("latecomer");
    drop(latecomer);
    waiter.await.unwrap();
    assert_eq!(*order.lock().unwrap(), ["waited", "latecomer"]);
}
