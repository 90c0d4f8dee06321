//! Bad plugins and misbehaving calls: each gets a clear message naming it, and
//! everything else carries on and is stored.

#![allow(clippy::unwrap_used)]

use crate::support::{built_plugin, doc, engine_with, faulty_engine, outcome, shared_tempdir};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_components_are_refused_and_the_rest_load() {
    let dir = shared_tempdir();
    let keywords = built_plugin("keywords.wasm");
    std::fs::write(dir.path().join("garbage.wasm"), b"this is not wasm at all").unwrap();
    std::fs::write(dir.path().join("core.wasm"), b"\0asm\x01\0\0\0").unwrap();
    std::fs::write(
        dir.path().join("truncated.wasm"),
        &keywords[..keywords.len() / 2],
    )
    .unwrap();
    std::fs::write(
        dir.path().join("command.wasm"),
        built_plugin("not-a-plugin.wasm"),
    )
    .unwrap();
    std::fs::write(dir.path().join("empty.wasm"), b"").unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"not a plugin file, ignored").unwrap();
    let engine = engine_with(dir.path(), |_| {}).await;

    let problem = |file: &str| {
        engine
            .registry
            .problems
            .iter()
            .find(|p| p.source.ends_with(file))
            .unwrap_or_else(|| {
                panic!(
                    "no problem reported for {file}: {:?}",
                    engine.registry.problems
                )
            })
            .message
            .clone()
    };
    assert!(problem("garbage.wasm").contains("not a WebAssembly file"));
    assert!(problem("core.wasm").contains("core WebAssembly module, not a component"));
    assert!(problem("truncated.wasm").contains("cannot compile"));
    let command = problem("command.wasm");
    assert!(
        command.contains("neither the `analyzer` nor the `prompt-processor` world"),
        "{command}"
    );
    assert!(
        command.contains("wasi:cli/run"),
        "names what it does export: {command}"
    );
    assert!(problem("empty.wasm").contains("empty"));
    assert_eq!(
        engine.registry.problems.len(),
        5,
        "{:?}",
        engine.registry.problems
    );
    assert_eq!(
        engine.registry.plugins().len(),
        assay::bundled::BUNDLED.len(),
        "the bundled plugins still load"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trapping_plugin_costs_only_its_own_call() {
    let (engine, _dir) = faulty_engine(|_| {}).await;
    let report = engine
        .pipeline
        .run(doc(
            "trap",
            "transcript",
            "#fault:trap The router failed again and the refund never came.",
        ))
        .await
        .unwrap();
    assert_eq!(report.status, "partial");
    let faulty = outcome(&report, "faulty");
    assert_eq!(faulty.outcome, "failed");
    assert_eq!(faulty.error_kind.map(|k| k.as_str()), Some("trap"));
    let message = faulty.message.clone().unwrap();
    assert!(
        message.contains("faulty was asked to trap"),
        "the panic message is kept: {message}"
    );
    assert!(report.findings.iter().any(|f| f.plugin == "keywords"));

    let client = engine.test_db.client().await;
    let row = client
        .query_one(
            "SELECT rp.error_kind, rp.error_message, r.status,
                    (SELECT count(*) FROM assay.findings f WHERE f.run_id = r.id)
             FROM assay.run_plugins rp JOIN assay.runs r ON r.id = rp.run_id
             JOIN assay.plugin_versions p ON p.id = rp.plugin_version_id WHERE p.name = 'faulty'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "trap");
    assert!(row.get::<_, String>(1).contains("asked to trap"));
    assert_eq!(row.get::<_, String>(2), "partial");
    assert_eq!(
        row.get::<_, i64>(3) as usize,
        report.findings.len(),
        "other plugins' findings are stored"
    );

    // The next call of the same plugin, on fine input, works.
    let next = engine
        .pipeline
        .run(doc("fine", "transcript", "A perfectly fine document."))
        .await
        .unwrap();
    let faulty = outcome(&next, "faulty");
    assert_eq!(faulty.outcome, "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_errors_and_invalid_output_are_recorded_by_kind() {
    let (engine, _dir) = faulty_engine(|_| {}).await;
    for (marker, kind, words) in [
        ("#fault:error", "failed", "asked to fail"),
        ("#fault:invalid", "invalid-input", "refuses this document"),
        ("#fault:bad-json", "invalid-output", "not valid JSON"),
        ("#fault:bad-span", "invalid-output", "outside the text"),
    ] {
        let report = engine
            .pipeline
            .run(doc(
                marker,
                "transcript",
                &format!("{marker} some words about a router"),
            ))
            .await
            .unwrap();
        let faulty = outcome(&report, "faulty");
        assert_eq!(
            faulty.error_kind.map(|k| k.as_str()),
            Some(kind),
            "{marker}: {faulty:?}"
        );
        assert!(
            faulty.message.as_deref().unwrap_or("").contains(words),
            "{marker}: {faulty:?}"
        );
        assert!(report.findings.iter().all(|f| f.plugin != "faulty"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_looping_plugin_is_stopped_at_its_deadline() {
    let (engine, _dir) = faulty_engine(|c| c.limits.call_timeout_ms = 300).await;
    let report = engine
        .pipeline
        .run(doc("loop", "transcript", "#fault:loop and a router"))
        .await
        .unwrap();
    let faulty = outcome(&report, "faulty");
    assert_eq!(
        faulty.error_kind.map(|k| k.as_str()),
        Some("timeout"),
        "{faulty:?}"
    );
    assert!(
        report.findings.iter().any(|f| f.plugin == "keywords"),
        "other plugins finished"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_call_rolls_back_its_state_writes() {
    let (engine, _dir) = faulty_engine(|_| {}).await;
    let report = engine
        .pipeline
        .run(doc("rollback", "transcript", "#fault:sql-then-error"))
        .await
        .unwrap();
    let faulty = outcome(&report, "faulty");
    assert_eq!(faulty.error_kind.map(|k| k.as_str()), Some("failed"));
    let client = engine.test_db.client().await;
    let rows: i64 = client
        .query_one("SELECT count(*) FROM plugin_faulty.assay_state", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 0, "the state write of a failed call must roll back");
}
