//! Inference (contract 0.2) as plugins meet it: the `asker` test plugin asks
//! the host, the host asks a model server on loopback that speaks the
//! OpenAI protocol with scripted answers, and each test looks at what the
//! plugin got back, what the server was sent, and what the database kept.

// Tests: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use assay::config::{Config, PluginInferencePolicy};
use assay::pipeline::{Outcome, RunReport};
use assay_testing::fake_model::{FakeModel, Scripted};
use serde_json::{Value, json};

use crate::support::{TestEngine, built_plugin, doc, engine_loading, fresh_database, outcome};

/// An engine with `asker` (0.2) and `legacy` (0.1) over a fresh database,
/// its inference pointed at `model` (if any) with `small` as the default.
async fn engine(
    model: Option<&FakeModel>,
    adjust: impl FnOnce(&mut Config),
) -> (TestEngine, tempfile::TempDir) {
    let url = model.map(|m| m.url.clone());
    let (engine, dir) = engine_loading(
        fresh_database().await,
        &[
            ("asker.wasm", built_plugin("asker.wasm")),
            ("legacy.wasm", built_plugin("legacy_v0_1.wasm")),
        ],
        |c| {
            c.inference.base_url = url;
            c.inference.default_model = Some("small".into());
            adjust(c);
        },
    )
    .await;
    assert!(
        engine.registry.problems.is_empty(),
        "{:?}",
        engine.registry.problems
    );
    (engine, dir)
}

/// Runs `text` with `metadata` through the pipeline.
async fn ask(engine: &TestEngine, text: &str, metadata: Value) -> RunReport {
    let mut input = doc("asked.txt", "chat", text);
    input.metadata = metadata.as_object().cloned().unwrap();
    engine.pipeline.run(input).await.unwrap()
}

/// The asker's findings: (label, data).
fn asked(report: &RunReport) -> Vec<(String, Value)> {
    report
        .findings
        .iter()
        .filter(|f| f.plugin == "asker")
        .map(|f| (f.label.clone(), f.data.clone()))
        .collect()
}

fn only(report: &RunReport) -> (String, Value) {
    let found = asked(report);
    assert_eq!(found.len(), 1, "{found:?}");
    found.into_iter().next().unwrap()
}

#[tokio::test]
async fn a_0_1_and_a_0_2_plugin_run_in_one_run_and_the_request_is_accounted() {
    let model = FakeModel::start().await;
    model.script([Scripted::answer("a short answer", 12, 4)]);
    let (engine, _dir) = engine(Some(&model), |_| {}).await;
    let versions: Vec<(String, String)> = engine
        .registry
        .plugins()
        .iter()
        .map(|p| (p.name().to_string(), p.loaded.code.version().to_string()))
        .collect();
    assert!(
        versions.contains(&("legacy".into(), "0.1.0".into())),
        "{versions:?}"
    );
    assert!(
        versions.contains(&("asker".into(), "0.2.0".into())),
        "{versions:?}"
    );

    let report = ask(
        &engine,
        "Summarise this call.",
        json!({"system": "Be brief."}),
    )
    .await;
    assert_eq!(
        outcome(&report, "legacy").outcome,
        Outcome::Ok,
        "{:?}",
        report.plugins
    );
    assert_eq!(
        outcome(&report, "asker").outcome,
        Outcome::Ok,
        "{:?}",
        report.plugins
    );
    let legacy = report
        .findings
        .iter()
        .find(|f| f.plugin == "legacy")
        .unwrap();
    assert_eq!(legacy.data, json!({"calls": 1, "length": 20}));
    let (label, answer) = only(&report);
    assert_eq!(label, "answer");
    assert_eq!(answer["text"], "a short answer");
    assert_eq!(answer["model"], "small");
    assert_eq!(
        (answer["input"].clone(), answer["output"].clone()),
        (json!(12), json!(4))
    );
    assert_eq!(answer["from_cache"], false);

    // What the server was sent: the default model, both messages in order,
    // the policy's output limit.
    let requests = model.requests();
    assert_eq!(requests.len(), 1);
    let (path, body, auth) = &requests[0];
    assert_eq!(path, "chat/completions");
    assert_eq!(body["model"], "small");
    assert_eq!(body["max_tokens"], 1024);
    assert_eq!(
        body["messages"],
        json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Summarise this call."}])
    );
    assert_eq!(auth, &None, "no key is configured");

    // The outcome carries the tokens; the request is recorded against the run.
    let asker = outcome(&report, "asker");
    assert_eq!(
        (
            asker.model.requests,
            asker.model.input_tokens,
            asker.model.output_tokens
        ),
        (1, 12, 4)
    );
    assert!(outcome(&report, "legacy").model.is_empty());
    let client = engine.test_db.client().await;
    let row = client
        .query_one(
            "SELECT r.plugin, r.plugin_version, r.plugin_sha256 = v.content_sha256, r.kind, r.model,
                    r.input_tokens, r.output_tokens, r.outcome, r.from_cache,
                    rp.model_requests, rp.input_tokens, rp.output_tokens
             FROM assay.inference_requests r
             JOIN assay.run_plugins rp ON rp.run_id = r.run_id
             JOIN assay.plugin_versions v ON v.id = rp.plugin_version_id AND v.name = r.plugin
             WHERE r.run_id = $1",
            &[&report.run_id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "asker");
    assert_eq!(row.get::<_, String>(1), "0.2.0");
    assert!(
        row.get::<_, bool>(2),
        "the request names the exact plugin version"
    );
    assert_eq!(
        (row.get::<_, String>(3), row.get::<_, String>(4)),
        ("complete".into(), "small".into())
    );
    assert_eq!((row.get::<_, i64>(5), row.get::<_, i64>(6)), (12, 4));
    assert_eq!(
        (row.get::<_, String>(7), row.get::<_, bool>(8)),
        ("ok".into(), false)
    );
    assert_eq!(
        (
            row.get::<_, i32>(9),
            row.get::<_, i64>(10),
            row.get::<_, i64>(11)
        ),
        (1, 12, 4)
    );
}

#[tokio::test]
async fn the_operators_policy_is_enforced_and_reaches_the_plugin_as_its_variants() {
    let model = FakeModel::start().await;
    let (engine, _dir) = engine(Some(&model), |c| {
        c.inference.plugins.insert(
            "asker".into(),
            PluginInferencePolicy {
                models: vec!["large".into()],
                max_output_tokens: Some(100),
                requests_per_call: Some(2),
                ..Default::default()
            },
        );
    })
    .await;
    // A model it was not given, in every spelling that is not exactly one it was.
    for model_name in ["huge", "Large", "large ", "ｌarge"] {
        let (label, data) = only(&ask(&engine, "hi", json!({"model": model_name})).await);
        assert_eq!(label, "error:model-not-allowed", "{model_name:?}");
        let message = data["message"].as_str().unwrap();
        assert!(message.contains("allowed: small, large"), "{message}");
        assert!(
            message.contains("inference.plugins.asker.models"),
            "{message}"
        );
    }
    let (label, _) = only(&ask(&engine, "hi", json!({"model": "large"})).await);
    assert_eq!(label, "answer");
    let (label, data) = only(&ask(&engine, "hi", json!({"max_tokens": 101})).await);
    assert_eq!(label, "error:invalid-request");
    assert!(
        data["message"]
            .as_str()
            .unwrap()
            .contains("max_output_tokens"),
        "{data}"
    );
    // Three requests in one call: the third is over requests_per_call.
    let report = ask(&engine, "hi", json!({"repeat": 3})).await;
    let labels: Vec<String> = asked(&report).into_iter().map(|(l, _)| l).collect();
    assert_eq!(labels, ["answer", "answer", "error:budget-exceeded"]);
    let (_, refused) = asked(&report).pop().unwrap();
    assert_eq!(
        refused,
        json!({"budget": "requests-per-call", "limit": 2, "used": 2, "resets_at": null})
    );
    // Refused requests never reached the server: one per allowed request.
    assert_eq!(model.requests().len(), 3);
}

#[tokio::test]
async fn without_a_model_server_completions_are_unavailable_and_embeddings_built_in() {
    let (engine, _dir) = engine(None, |_| {}).await;
    let report = ask(&engine, "The boiler leaks.", json!({"ask": "both"})).await;
    let found = asked(&report);
    assert_eq!(found[0].0, "error:unavailable");
    assert!(
        found[0].1["message"]
            .as_str()
            .unwrap()
            .contains("inference.base_url"),
        "{found:?}"
    );
    assert_eq!(found[1].0, "embedding");
    assert_eq!(found[1].1["model"], "assay-hashing-v1-512");
    assert_eq!(found[1].1["dimensions"], 512);
    // A plugin that cannot go on without a model is skipped with the reason
    // (the run is not partial: nothing failed on its own account); nothing
    // is made up.
    let report = ask(&engine, "The boiler leaks.", json!({"fail": true})).await;
    let asker = outcome(&report, "asker");
    assert_eq!(asker.outcome, Outcome::Skipped, "{asker:?}");
    assert!(
        asker
            .message
            .as_deref()
            .unwrap()
            .contains("inference.base_url"),
        "{asker:?}"
    );
    assert!(asker.error_kind.is_none());
    assert_eq!(report.status, assay::pipeline::RunStatus::Ok);
    assert_eq!(outcome(&report, "legacy").outcome, Outcome::Ok);
    // With a server that is down, the same failure is the plugin's: failed.
    let (down, _dir) = crate::inference::engine(None, |c: &mut Config| {
        c.inference.base_url = Some("http://127.0.0.1:9/v1".into());
        c.inference.max_retries = 0;
    })
    .await;
    let report = ask(&down, "The boiler leaks.", json!({"fail": true})).await;
    let asker = outcome(&report, "asker");
    assert_eq!(asker.outcome, Outcome::Failed, "{asker:?}");
    assert!(
        asker
            .message
            .as_deref()
            .unwrap()
            .contains("cannot be reached"),
        "{asker:?}"
    );
}

#[tokio::test]
async fn refusals_for_now_are_retried_after_what_the_server_asks_within_the_deadline() {
    let model = FakeModel::start().await;
    let (engine, _dir) = engine(Some(&model), |c| {
        c.limits.call_timeout_ms = 3_000;
        c.inference.max_retries = 2;
    })
    .await;
    model.script([
        Scripted::Status {
            code: 429,
            retry_after: None,
            retry_after_ms: Some("30"),
            body: "{}".into(),
        },
        Scripted::status(503),
        Scripted::answer("third time", 1, 1),
    ]);
    let (label, data) = only(&ask(&engine, "hi", json!({})).await);
    assert_eq!(
        (label.as_str(), data["text"].as_str()),
        ("answer", Some("third time"))
    );
    assert_eq!(model.requests().len(), 3);

    // Out of retries: the last refusal is the plugin's answer, without the
    // server's address.
    model.script([
        Scripted::status(500),
        Scripted::status(500),
        Scripted::status(500),
    ]);
    let (label, data) = only(&ask(&engine, "hi", json!({})).await);
    assert_eq!(label, "error:unavailable");
    let message = data["message"].as_str().unwrap();
    assert!(message.contains("HTTP 500"), "{message}");
    assert!(
        !message.contains("127.0.0.1"),
        "the address stays with the host: {message}"
    );

    // A wait past the call's deadline is not started.
    let before = model.requests().len();
    model.script([Scripted::Status {
        code: 429,
        retry_after: Some("10"),
        retry_after_ms: None,
        body: "{}".into(),
    }]);
    let (label, _) = only(&ask(&engine, "hi", json!({})).await);
    assert_eq!(label, "error:unavailable");
    assert_eq!(
        model.requests().len(),
        before + 1,
        "no retry after 10 s with 3 s to live"
    );

    // A server slower than the call's deadline: the call ends at its
    // deadline, as a timeout, with nothing of it kept.
    model.script([Scripted::Slow(
        Duration::from_secs(10),
        Box::new(Scripted::answer("late", 1, 1)),
    )]);
    let report = ask(&engine, "hi", json!({})).await;
    let asker = outcome(&report, "asker");
    assert_eq!(asker.outcome, Outcome::Failed);
    assert_eq!(
        asker.error_kind.map(|k| k.as_str()),
        Some("timeout"),
        "{asker:?}"
    );

    // Slower than inference.request_timeout_ms: the plugin gets `timeout`
    // and goes on.
    let (engine, _dir) = engine_with_request_timeout(&model, 300).await;
    model.script([Scripted::Slow(
        Duration::from_secs(10),
        Box::new(Scripted::answer("late", 1, 1)),
    )]);
    let (label, _) = only(&ask(&engine, "hi", json!({})).await);
    assert_eq!(label, "error:timeout");

    // A request the server refuses for good is not retried.
    let before = model.requests().len();
    model.script([Scripted::status(400)]);
    let (label, data) = only(&ask(&engine, "hi", json!({})).await);
    assert_eq!(label, "error:invalid-request");
    assert!(
        data["message"].as_str().unwrap().contains("scripted 400"),
        "{data}"
    );
    assert_eq!(model.requests().len(), before + 1);
}

async fn engine_with_request_timeout(
    model: &FakeModel,
    ms: u64,
) -> (TestEngine, tempfile::TempDir) {
    engine(Some(model), |c| {
        c.limits.call_timeout_ms = 3_000;
        c.inference.request_timeout_ms = ms;
        c.inference.max_retries = 0;
    })
    .await
}

#[tokio::test]
async fn json_answers_are_checked_by_the_host_and_asked_again_once() {
    let model = FakeModel::start().await;
    let (engine, _dir) = engine(Some(&model), |_| {}).await;
    let schema = json!({"type": "object", "required": ["score"], "properties": {"score": {"type": "integer", "maximum": 10}}});
    model.script([
        Scripted::answer(r#"{"score": 11}"#, 5, 5),
        Scripted::answer(r#"{"score": 7}"#, 9, 5),
    ]);
    let (label, data) = only(&ask(&engine, "Rate it.", json!({"format": schema})).await);
    assert_eq!(
        (label.as_str(), data["text"].as_str()),
        ("answer", Some(r#"{"score": 7}"#))
    );
    assert_eq!(
        (data["input"].clone(), data["output"].clone()),
        (json!(14), json!(10)),
        "both tries are billed"
    );
    let requests = model.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].1["response_format"]["type"], "json_schema");
    let retry = requests[1].1["messages"].as_array().unwrap();
    assert_eq!(retry[retry.len() - 2]["content"], r#"{"score": 11}"#);
    assert!(
        retry[retry.len() - 1]["content"]
            .as_str()
            .unwrap()
            .contains("/score"),
        "{retry:?}"
    );

    model.script([
        Scripted::answer("not json", 1, 1),
        Scripted::answer("{still not", 1, 1),
    ]);
    let (label, data) = only(&ask(&engine, "Rate it.", json!({"format": "json"})).await);
    assert_eq!(label, "error:bad-response");
    assert!(
        data["message"].as_str().unwrap().contains("not JSON"),
        "{data}"
    );
    // The schema a plugin gives must be one; it never reaches the server.
    let before = model.requests().len();
    let (label, _) = only(&ask(&engine, "Rate it.", json!({"format": {"type": 12}})).await);
    assert_eq!(label, "error:invalid-request");
    assert_eq!(model.requests().len(), before);
}

#[tokio::test]
async fn deterministic_requests_are_answered_from_the_cache_unless_bypassed() {
    let model = FakeModel::start().await;
    let (engine, _dir) = engine(Some(&model), |_| {}).await;
    let meta = json!({"temperature": 0.0});
    let first = ask(&engine, "Same question.", meta.clone()).await;
    let second = ask(&engine, "Same question.", meta.clone()).await;
    assert_eq!(only(&first).1["from_cache"], false);
    let (_, again) = only(&second);
    assert_eq!(again["from_cache"], true);
    assert_eq!(again["text"], only(&first).1["text"], "the same answer");
    assert_eq!(
        (again["input"].clone(), again["output"].clone()),
        (json!(0), json!(0))
    );
    assert_eq!(model.requests().len(), 1, "the second was not sent");
    let asker = outcome(&second, "asker");
    assert_eq!(
        (
            asker.model.requests,
            asker.model.input_tokens + asker.model.output_tokens
        ),
        (1, 0)
    );
    // Another temperature, or none, is another request; cache=true caches it.
    ask(&engine, "Same question.", json!({})).await;
    ask(&engine, "Same question.", json!({})).await;
    assert_eq!(model.requests().len(), 3);
    ask(&engine, "Same question.", json!({"cache": true})).await;
    ask(&engine, "Same question.", json!({"cache": true})).await;
    assert_eq!(model.requests().len(), 4);
    // --no-cache: asked again.
    let bypassing = engine.pipeline.clone().bypass_caches(true);
    let mut input = doc("asked.txt", "chat", "Same question.");
    input.metadata = meta.as_object().cloned().unwrap();
    let report = bypassing.run(input).await.unwrap();
    assert_eq!(only(&report).1["from_cache"], false);
    assert_eq!(model.requests().len(), 5);
    let client = engine.test_db.client().await;
    let hits: i64 = client
        .query_one(
            "SELECT count(*) FROM assay.inference_requests WHERE from_cache",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(hits, 2);
}

#[tokio::test]
async fn token_budgets_are_kept_in_the_database_across_engines_and_say_when_they_reset() {
    let model = FakeModel::start().await;
    let budget = |c: &mut Config| {
        c.inference.max_output_tokens = 50;
        c.inference.tokens_per_hour = 150;
    };
    let (engine, _dir) = engine(Some(&model), budget).await;
    // Reserves about 50 + 1, settles to 60 + 40 = 100.
    model.script([Scripted::answer("spent", 60, 40)]);
    assert_eq!(only(&ask(&engine, "hi", json!({})).await).0, "answer");
    // 100 used + 51 wanted > 150: refused before anything is sent.
    let before = model.requests().len();
    let (label, data) = only(&ask(&engine, "hi", json!({})).await);
    assert_eq!(label, "error:budget-exceeded");
    assert_eq!(
        (
            data["budget"].clone(),
            data["limit"].clone(),
            data["used"].clone()
        ),
        (json!("tokens-per-hour"), json!(150), json!(100))
    );
    let resets = data["resets_at"].as_i64().unwrap();
    assert_eq!(resets % 3_600_000, 0, "the next UTC hour");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!(
        resets > now_ms && resets <= now_ms + 3_600_000,
        "{resets} vs {now_ms}"
    );
    assert_eq!(model.requests().len(), before);
    // A smaller request still fits.
    model.script([Scripted::answer("small", 5, 5)]);
    assert_eq!(
        only(&ask(&engine, "hi", json!({"max_tokens": 20})).await).0,
        "answer"
    );

    // A second engine on the same database counts against the same budget.
    let second = assay_testing::engine_builder(&engine.test_db, _dir.path(), |c| {
        c.plugins.bundled = false;
        c.inference.base_url = Some(model.url.clone());
        c.inference.default_model = Some("small".into());
        budget(c);
    })
    .await
    .build()
    .await
    .unwrap();
    let mut input = doc("asked.txt", "chat", "hi");
    input.metadata = json!({}).as_object().cloned().unwrap();
    let report = second.pipeline().run(input).await.unwrap();
    let (label, data) = only(&report);
    assert_eq!(label, "error:budget-exceeded");
    assert_eq!(data["used"], 110);
}

#[tokio::test]
async fn the_key_goes_to_the_server_only_and_requests_in_flight_are_bounded() {
    let model = FakeModel::start().await;
    // SAFETY: the variable is this test's own; no other thread reads or
    // writes it.
    unsafe { std::env::set_var("ASSAY_TEST_INFERENCE_KEY", "sk-test-very-secret") };
    let (engine, _dir) = engine(Some(&model), |c| {
        c.inference.api_key_env = Some("ASSAY_TEST_INFERENCE_KEY".into());
        c.inference.max_in_flight_per_plugin = 2;
        c.limits.concurrent_calls = 8;
    })
    .await;
    model.script((0..6).map(|_| {
        Scripted::Slow(
            Duration::from_millis(150),
            Box::new(Scripted::answer("ok", 1, 1)),
        )
    }));
    let questions: Vec<String> = (0..6).map(|i| format!("question {i}")).collect();
    let runs = questions.iter().map(|q| ask(&engine, q, json!({})));
    let reports = futures::future::join_all(runs).await;
    for report in &reports {
        assert_eq!(only(report).0, "answer");
        assert!(
            !serde_json::to_string(&report.findings)
                .unwrap()
                .contains("very-secret")
        );
    }
    assert!(model.most_in_flight() <= 2, "{}", model.most_in_flight());
    // A redirect is not followed: the key never reaches where it points.
    let elsewhere = FakeModel::start().await;
    model.script([Scripted::Redirect(format!(
        "{}/chat/completions",
        elsewhere.url
    ))]);
    let (label, data) = only(&ask(&engine, "redirected", json!({})).await);
    assert_eq!(label, "error:invalid-request", "{data}");
    assert!(data["message"].as_str().unwrap().contains("307"), "{data}");
    assert!(elsewhere.requests().is_empty(), "the redirect was followed");
    assert!(
        model
            .requests()
            .iter()
            .all(|(_, _, auth)| auth.as_deref() == Some("Bearer sk-test-very-secret"))
    );
    let client = engine.test_db.client().await;
    let leaked: i64 = client
        .query_one(
            "SELECT count(*) FROM assay.inference_requests r WHERE r::text LIKE '%very-secret%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(leaked, 0);
}

#[tokio::test]
async fn a_slow_model_does_not_hold_up_calls_that_do_not_ask_it() {
    let model = FakeModel::start().await;
    let (engine, _dir) = engine(Some(&model), |c| {
        c.inference.max_in_flight = 2;
        c.inference.max_in_flight_per_plugin = 2;
        c.limits.call_timeout_ms = 20_000;
    })
    .await;
    let slow = || {
        Scripted::Slow(
            Duration::from_secs(1),
            Box::new(Scripted::answer("slow", 1, 1)),
        )
    };
    model.script([slow(), slow(), slow(), slow()]);
    let questions: Vec<String> = (0..4).map(|i| format!("slow question {i}")).collect();
    let asking = futures::future::join_all(questions.iter().map(|q| ask(&engine, q, json!({}))));
    let not_asking = async {
        // Once every model turn of the engine is taken and waited on …
        while model.in_flight() < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // … a call that does not ask the model runs and ends all the same.
        let report = ask(&engine, "no question", json!({"ask": "none"})).await;
        let still_waiting = model.in_flight();
        (report, still_waiting)
    };
    let (answers, (report, still_waiting)) = tokio::join!(asking, not_asking);
    assert!(
        still_waiting > 0,
        "it ended while the model was still answering"
    );
    assert_eq!(outcome(&report, "asker").outcome, Outcome::Ok);
    assert_eq!(outcome(&report, "legacy").outcome, Outcome::Ok);
    assert!(asked(&report).is_empty());
    for answered in &answers {
        assert_eq!(only(answered).0, "answer");
    }
    assert_eq!(model.most_in_flight(), 2);
}

#[tokio::test]
async fn embeddings_come_from_the_server_when_an_embedding_model_is_set() {
    let model = FakeModel::start().await;
    let (engine, _dir) = engine(Some(&model), |c| {
        c.inference.embedding_model = Some("embedder".into());
    })
    .await;
    let (label, data) = only(
        &ask(
            &engine,
            "x",
            json!({"ask": "embed", "texts": ["one", "three"]}),
        )
        .await,
    );
    assert_eq!(label, "embedding");
    assert_eq!(data["model"], "embedder");
    assert_eq!(data["vectors"], json!([[3.0, 1.0, 0.0], [5.0, 1.0, 0.0]]));
    assert_eq!(data["input"], 8);
    // The built-in one can still be asked for by name; another model must be granted.
    let (_, data) = only(
        &ask(
            &engine,
            "x",
            json!({"ask": "embed", "embed_model": "assay-hashing-v1-512"}),
        )
        .await,
    );
    assert_eq!(data["dimensions"], 512);
    let (label, _) = only(
        &ask(
            &engine,
            "x",
            json!({"ask": "embed", "embed_model": "other"}),
        )
        .await,
    );
    assert_eq!(label, "error:model-not-allowed");
    assert_eq!(model.requests().len(), 1);
}

#[tokio::test]
async fn an_answer_larger_than_the_cap_or_not_the_protocol_is_a_bad_response() {
    let model = FakeModel::start().await;
    let (engine, _dir) = engine(Some(&model), |c| c.inference.max_response_bytes = 1_000).await;
    model.script([Scripted::answer(&"x".repeat(2_000), 1, 1)]);
    let (label, data) = only(&ask(&engine, "hi", json!({})).await);
    assert_eq!(label, "error:bad-response");
    assert!(
        data["message"]
            .as_str()
            .unwrap()
            .contains("max_response_bytes"),
        "{data}"
    );
    model.script([Scripted::Raw("<html>not the protocol</html>".into())]);
    let (label, _) = only(&ask(&engine, "hi", json!({})).await);
    assert_eq!(label, "error:bad-response");
}

/// As an operator meets it: the built binary, a working directory, the
/// model server set by environment; `--no-cache`, `plugins list` and
/// `/healthz` show what was spent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_caches_bypasses_and_lists_model_usage() {
    let model = FakeModel::start().await;
    let db = fresh_database().await;
    let dir = crate::support::shared_tempdir();
    std::fs::write(dir.path().join("asker.wasm"), built_plugin("asker.wasm")).unwrap();
    std::fs::write(dir.path().join("call.txt"), "What did the caller want?").unwrap();
    let assay = |args: &[&str]| {
        let out = crate::cli::assay(Some(&db.url), dir.path())
            .env("ASSAY__INFERENCE__BASE_URL", &model.url)
            .env("ASSAY__INFERENCE__DEFAULT_MODEL", "small")
            .env("ASSAY__PLUGINS__BUNDLED", "false")
            .args(args)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let answer = |stdout: &str| -> Value {
        let run: Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
        let found = run["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["label"] == "answer")
            .cloned();
        found.unwrap_or_else(|| panic!("{run}"))["data"].clone()
    };
    let analyze = ["analyze", "call.txt", "--meta", "temperature=0", "--json"];
    assert_eq!(answer(&assay(&analyze))["from_cache"], false);
    let second = assay(&analyze);
    assert_eq!(answer(&second)["from_cache"], true);
    let run: Value = serde_json::from_str(second.lines().next().unwrap()).unwrap();
    assert_eq!(run["plugins"][0]["model"]["requests"], 1, "{run}");
    assert_eq!(model.requests().len(), 1);
    let mut bypass = analyze.to_vec();
    bypass.push("--no-cache");
    assert_eq!(answer(&assay(&bypass))["from_cache"], false);
    assert_eq!(model.requests().len(), 2);

    let listed = assay(&["plugins", "list"]);
    let row = listed.lines().find(|l| l.contains("asker")).unwrap();
    // Two answers of 7 input and 5 output tokens each; one cached.
    assert!(row.contains("24 / 24 (3 requests, 1 cached)"), "{listed}");

    // With the most verbose logging, the key reaches the server and no log.
    let out = crate::cli::assay(Some(&db.url), dir.path())
        .env("ASSAY__INFERENCE__BASE_URL", &model.url)
        .env("ASSAY__INFERENCE__DEFAULT_MODEL", "small")
        .env("ASSAY__INFERENCE__API_KEY_ENV", "ASSAY_TEST_BINARY_KEY")
        .env("ASSAY_TEST_BINARY_KEY", "sk-binary-very-secret")
        .env("ASSAY__PLUGINS__BUNDLED", "false")
        .env("RUST_LOG", "trace")
        .args(["analyze", "call.txt", "--json", "--no-cache"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let logged = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(logged.len() > 1_000, "trace logging is on: {logged}");
    assert!(!logged.contains("very-secret"), "the key is in the output");
    let (_, _, auth) = model.requests().pop().unwrap();
    assert_eq!(auth.as_deref(), Some("Bearer sk-binary-very-secret"));

    // A key variable that is named but not set stops the engine, naming it.
    let out = crate::cli::assay(Some(&db.url), dir.path())
        .env("ASSAY__INFERENCE__BASE_URL", &model.url)
        .env("ASSAY__INFERENCE__API_KEY_ENV", "ASSAY_TEST_KEY_NOBODY_SET")
        .env_remove("ASSAY_TEST_KEY_NOBODY_SET")
        .args(["analyze", "call.txt"])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("inference.api_key_env names ASSAY_TEST_KEY_NOBODY_SET"),
        "{stderr}"
    );
}

#[tokio::test]
async fn healthz_shows_model_usage_per_plugin() {
    let model = FakeModel::start().await;
    let dir = crate::support::shared_tempdir();
    std::fs::write(dir.path().join("asker.wasm"), built_plugin("asker.wasm")).unwrap();
    let url = model.url.clone();
    let (state, _db) = crate::support::service_state(dir.path(), |c| {
        c.plugins.bundled = false;
        c.inference.base_url = Some(url);
        c.inference.default_model = Some("small".into());
    })
    .await;
    model.script([Scripted::answer("fine", 30, 12)]);
    let (status, _, _) = crate::support::http(
        &state,
        "POST",
        "/v1/analyze",
        Some(json!({"text": "hello", "kind": "chat"})),
    )
    .await;
    assert_eq!(status, 200);
    let (_, _, health) = crate::support::http(&state, "GET", "/healthz", None).await;
    let asker = &health["inference"]["by_plugin"]["asker"];
    assert_eq!(asker["tokens_last_hour"], 42, "{health}");
    assert_eq!(asker["requests_last_day"], 1, "{health}");
    assert!(
        !health.to_string().contains(&model.url),
        "the server's address is not shown"
    );
}
