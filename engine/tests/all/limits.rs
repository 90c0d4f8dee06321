//! Compute limits and backpressure: a plugin that misbehaves costs one call,
//! never the engine or the other plugins, and its next fine call succeeds.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use assay::config::{Config, PluginLimitsOverride};
use assay::pipeline::{Pipeline, PipelineError, RunReport};
use serde_json::json;

use crate::support::{doc, faulty_engine, outcome, service_state, shared_tempdir};

async fn run(pipeline: &Pipeline, text: &str) -> RunReport {
    pipeline
        .run(doc("limits", "transcript", text))
        .await
        .unwrap()
}

/// After a misbehaving call: the other plugins answered, and the same plugin,
/// given a fine document, answers too.
async fn engine_still_works(pipeline: &Pipeline) {
    let report = run(pipeline, "A fine document about a router and a refund.").await;
    assert_eq!(report.status, "ok", "{:?}", report.plugins);
    assert_eq!(outcome(&report, "faulty").outcome, "ok");
    assert!(report.findings.iter().any(|f| f.plugin == "keywords"));
}

fn set_faulty(config: &mut Config, o: PluginLimitsOverride) {
    config.limits.plugins.insert("faulty".into(), o);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn looping_plugins_never_block_the_runtime() {
    let timeout_ms = 800;
    let (engine, _dir) = faulty_engine(|c| c.limits.call_timeout_ms = timeout_ms).await;
    let started = Instant::now();
    // More busy loops than the runtime has worker threads.
    let loops: Vec<_> = (0..4)
        .map(|i| {
            let pipeline = engine.pipeline.clone();
            tokio::spawn(async move {
                let report = run(&pipeline, &format!("#fault:loop {i} about a router")).await;
                (report, Instant::now())
            })
        })
        .collect();
    // While they spin: a timer fires, and a fine document is analysed.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let timer_fired = Instant::now();
    let fine = run(&engine.pipeline, "A fine document about a router.").await;
    assert_eq!(outcome(&fine, "keywords").outcome, "ok");
    for handle in loops {
        let (report, finished) = handle.await.unwrap();
        let faulty = outcome(&report, "faulty");
        assert_eq!(
            faulty.error_kind.map(|k| k.as_str()),
            Some("timeout"),
            "{faulty:?}"
        );
        let message = faulty.message.as_deref().unwrap();
        assert!(
            message.contains("800 ms") && message.contains("limits.call_timeout_ms"),
            "{message}"
        );
        assert!(
            timer_fired < finished,
            "a timer fired while the loops still ran"
        );
        assert_eq!(outcome(&report, "keywords").outcome, "ok");
        // The deadline plus a generous slack for a loaded 2-core machine: this
        // checks that the deadline holds, not how fast anything is.
        let elapsed = finished.duration_since(started);
        assert!(
            elapsed < Duration::from_millis(timeout_ms + 5_000),
            "stopped after {elapsed:?}"
        );
    }
    engine_still_works(&engine.pipeline).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_is_capped_and_named() {
    let (engine, _dir) = faulty_engine(|c| c.limits.memory_mib = 64).await;

    // Growing page by page: refused at the limit, which the plugin survives.
    let report = run(&engine.pipeline, "#fault:grow").await;
    let grown = report
        .findings
        .iter()
        .find(|f| f.label == "faulty:grown")
        .unwrap_or_else(|| panic!("{:?}", report.plugins));
    let pages = grown.data["pages"].as_u64().unwrap();
    assert!(pages > 0, "it could grow some");
    assert!(
        pages * 64 * 1024 <= 64 * 1024 * 1024,
        "grew {pages} pages past 64 MiB"
    );

    // A 1 GiB string: the allocation fails, and the error names the limit.
    let report = run(&engine.pipeline, "#fault:huge-string").await;
    let faulty = outcome(&report, "faulty");
    assert_eq!(
        faulty.error_kind.map(|k| k.as_str()),
        Some("memory"),
        "{faulty:?}"
    );
    let message = faulty.message.as_deref().unwrap();
    assert!(
        message.contains("64 MiB") && message.contains("limits.memory_mib"),
        "{message}"
    );
    assert!(report.findings.iter().any(|f| f.plugin == "keywords"));
    engine_still_works(&engine.pipeline).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbounded_recursion_is_a_trap_not_an_abort() {
    let (engine, _dir) = faulty_engine(|c| c.limits.wasm_stack_kib = 256).await;
    let report = run(&engine.pipeline, "#fault:recurse").await;
    let faulty = outcome(&report, "faulty");
    assert_eq!(
        faulty.error_kind.map(|k| k.as_str()),
        Some("trap"),
        "{faulty:?}"
    );
    let message = faulty.message.as_deref().unwrap();
    assert!(
        message.contains("stack") && message.contains("256 KiB (limits.wasm_stack_kib)"),
        "{message}"
    );
    engine_still_works(&engine.pipeline).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_costs_one_call() {
    let (engine, _dir) = faulty_engine(|_| {}).await;
    let report = run(&engine.pipeline, "#fault:trap").await;
    assert_eq!(
        outcome(&report, "faulty").error_kind.map(|k| k.as_str()),
        Some("trap")
    );
    engine_still_works(&engine.pipeline).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_plugin_hands_back_is_capped_per_plugin() {
    // The million findings need room to be built: a per-plugin override.
    let (engine, _dir) = faulty_engine(|c| {
        set_faulty(
            c,
            PluginLimitsOverride {
                memory_mib: Some(512),
                max_findings: Some(1_000),
                ..Default::default()
            },
        );
        c.limits.max_output_kib = 1;
        // redact hands back the whole text; let it.
        c.limits.plugins.insert(
            "redact".into(),
            PluginLimitsOverride {
                max_output_kib: Some(1024),
                ..Default::default()
            },
        );
    })
    .await;
    let report = run(&engine.pipeline, "#fault:many-findings").await;
    let faulty = outcome(&report, "faulty");
    assert_eq!(
        faulty.error_kind.map(|k| k.as_str()),
        Some("invalid-output"),
        "{faulty:?}"
    );
    let message = faulty.message.as_deref().unwrap();
    assert!(
        message.contains("1000000 findings")
            && message.contains("1000 (limits.plugins.faulty.max_findings)"),
        "{message}"
    );
    // Plugins without an override are held to the defaults: 1 KiB of output
    // is too little for keywords on this text, and it says so.
    let long = "router refund outage cancel ".repeat(200);
    let report = run(&engine.pipeline, &long).await;
    let keywords = outcome(&report, "keywords");
    assert_eq!(
        keywords.error_kind.map(|k| k.as_str()),
        Some("invalid-output"),
        "{keywords:?}"
    );
    assert!(
        keywords
            .message
            .as_deref()
            .unwrap()
            .contains("the limit is 1 KiB (limits.max_output_kib)"),
        "{keywords:?}"
    );
    assert_eq!(
        outcome(&report, "faulty").outcome,
        "ok",
        "faulty's own output is small"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_asleep_in_a_host_call_is_stopped_at_its_deadline() {
    let (engine, _dir) = faulty_engine(|c| {
        c.limits.call_timeout_ms = 600;
        // Longer than the call may take: the call's deadline must cut it.
        c.limits.statement_timeout_ms = 60_000;
    })
    .await;
    for marker in ["#fault:sleep", "#fault:sql-slow"] {
        let started = Instant::now();
        let report = run(&engine.pipeline, marker).await;
        let faulty = outcome(&report, "faulty");
        assert_eq!(
            faulty.error_kind.map(|k| k.as_str()),
            Some("timeout"),
            "{marker}: {faulty:?}"
        );
        assert!(
            faulty.message.as_deref().unwrap().contains("600 ms"),
            "{faulty:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{marker} was stopped"
        );
    }
    // The cancelled statement's connection was not reused: SQL works again.
    let report = run(&engine.pipeline, "#fault:sql-ok").await;
    assert_eq!(
        outcome(&report, "faulty").outcome,
        "ok",
        "{:?}",
        report.plugins
    );
    // The server acts on a cancel request asynchronously; give it a moment
    // (several on a loaded machine: the bound is generous, the wait short
    // when all is well).
    let client = engine.test_db.client().await;
    let mut still_running = usize::MAX;
    for _ in 0..100 {
        still_running = crate::support::slow_statements(&client).await.len();
        if still_running == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(still_running, 0, "the slow statement was cancelled");
    engine_still_works(&engine.pipeline).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_busy_plugin_is_overloaded_alone() {
    let (engine, _dir) = faulty_engine(|c| {
        c.limits.call_timeout_ms = 3_000;
        c.limits.queue_timeout_ms = 200;
        set_faulty(
            c,
            PluginLimitsOverride {
                concurrent_calls: Some(1),
                ..Default::default()
            },
        );
    })
    .await;
    let pipeline = engine.pipeline.clone();
    let sleeper = tokio::spawn(async move { run(&pipeline, "#fault:sleep").await });
    // Let the sleeper take faulty's one slot.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let report = run(&engine.pipeline, "A document about a router.").await;
    let faulty = outcome(&report, "faulty");
    assert_eq!(
        faulty.error_kind.map(|k| k.as_str()),
        Some("overloaded"),
        "{faulty:?}"
    );
    let message = faulty.message.as_deref().unwrap();
    assert!(
        message.contains("limits.plugins.faulty.concurrent_calls")
            && message.contains("200 ms (limits.queue_timeout_ms)"),
        "{message}"
    );
    assert_eq!(outcome(&report, "keywords").outcome, "ok");
    assert_eq!(
        outcome(&sleeper.await.unwrap(), "faulty")
            .error_kind
            .map(|k| k.as_str()),
        Some("timeout")
    );
    engine_still_works(&engine.pipeline).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_documents_get_503_with_retry_after_and_nothing_is_stored() {
    let dir = shared_tempdir();
    std::fs::write(
        dir.path().join("faulty.wasm"),
        crate::support::built_plugin("faulty.wasm"),
    )
    .unwrap();
    let (state, test_db) = service_state(dir.path(), |c| {
        c.pipeline.max_in_flight = 1;
        c.limits.queue_timeout_ms = 200;
        c.limits.call_timeout_ms = 2_000;
    })
    .await;
    let busy = Arc::clone(&state);
    let sleeper = tokio::spawn(async move {
        crate::support::http(
            &busy,
            "POST",
            "/v1/analyze",
            Some(json!({ "text": "#fault:sleep", "source": "sleeper" })),
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, headers, body) = crate::support::http(
        &state,
        "POST",
        "/v1/analyze",
        Some(json!({ "text": "A document about a router.", "source": "turned-away" })),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        headers.get("retry-after").and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("pipeline.max_in_flight") && error.contains("nothing was stored"),
        "{error}"
    );
    let (status, _, _) = sleeper.await.unwrap();
    assert_eq!(status, 200, "the document in flight finished");
    let stored: i64 = test_db
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM assay.documents WHERE source = 'turned-away'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 0);

    // Failures show in /healthz by plugin and kind.
    let (_, _, health) = crate::support::http(&state, "GET", "/healthz", None).await;
    let by_plugin = &health["failures"]["by_plugin"];
    assert_eq!(by_plugin["faulty"]["recent"]["timeout"], 1, "{health}");
    assert_eq!(by_plugin["(engine)"]["recent"]["overloaded"], 1, "{health}");
    assert_eq!(health["postgres"]["status"]["status"], "ok", "{health}");

    // With room again, documents are analysed.
    let (status, _, _) = crate::support::http(
        &state,
        "POST",
        "/v1/analyze",
        Some(json!({ "text": "A document about a router." })),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_refuses_rather_than_queues_without_end() {
    let (engine, _dir) = faulty_engine(|c| {
        c.pipeline.max_in_flight = 2;
        c.limits.queue_timeout_ms = 100;
        c.limits.call_timeout_ms = 1_500;
    })
    .await;
    let tasks: Vec<_> = (0..6)
        .map(|i| {
            let pipeline = engine.pipeline.clone();
            tokio::spawn(async move {
                pipeline
                    .run(doc(&format!("burst-{i}"), "transcript", "#fault:sleep"))
                    .await
            })
        })
        .collect();
    let mut done = 0;
    let mut refused = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => done += 1,
            Err(PipelineError::Overloaded(m)) => {
                assert!(m.contains("pipeline.max_in_flight"), "{m}");
                refused += 1;
            }
            Err(other) => panic!("{other}"),
        }
    }
    assert_eq!(done, 2, "two fit");
    assert_eq!(refused, 4, "the rest were refused, not queued");
    engine_still_works(&engine.pipeline).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_and_table_limits_fail_the_call_and_name_the_setting() {
    for (setting, o) in [
        (
            "limits.plugins.faulty.instances",
            PluginLimitsOverride {
                instances: Some(1),
                ..Default::default()
            },
        ),
        (
            "limits.plugins.faulty.table_elements",
            PluginLimitsOverride {
                table_elements: Some(1),
                ..Default::default()
            },
        ),
    ] {
        let (engine, _dir) = faulty_engine(|c| set_faulty(c, o)).await;
        let report = run(&engine.pipeline, "A router.").await;
        let faulty = outcome(&report, "faulty");
        assert_eq!(
            faulty.error_kind.map(|k| k.as_str()),
            Some("memory"),
            "{setting}: {faulty:?}"
        );
        assert!(
            faulty.message.as_deref().unwrap().contains(setting),
            "{faulty:?}"
        );
        assert_eq!(outcome(&report, "keywords").outcome, "ok");
    }
}
