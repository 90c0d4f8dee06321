//! The bundled `ask-sql` plugin: a question turned into SQL by a scripted
//! model on loopback, run under the plugin's own role in a read-only
//! transaction. Hostile answers are refused, recorded, and change nothing,
//! with the statement gate on and off.

// Tests: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use assay::config::PluginGrants;
use assay::pipeline::{Outcome, RunReport};
use assay_testing::fake_model::{FakeModel, Scripted};
use serde_json::Value;

use crate::support::{TestEngine, doc, engine_with, outcome, shared_tempdir};

async fn engine(model: &FakeModel, gate: bool) -> (TestEngine, tempfile::TempDir) {
    let dir = shared_tempdir();
    let url = model.url.clone();
    let engine = engine_with(dir.path(), |c| {
        c.inference.base_url = Some(url);
        c.inference.default_model = Some("sql-writer".into());
        c.sandbox.statement_gate = gate;
        c.plugins.grants.insert(
            "ask-sql".into(),
            PluginGrants {
                read: vec!["assay.documents".into()],
                write: vec![],
            },
        );
    })
    .await;
    for (name, kind, text) in [
        ("a.txt", "transcript", "Caller: my luggage is lost."),
        ("b.md", "audit", "Fire doors were propped open."),
    ] {
        engine.pipeline.run(doc(name, kind, text)).await.unwrap();
    }
    (engine, dir)
}

async fn ask(engine: &TestEngine, model: &FakeModel, question: &str, answer: &str) -> RunReport {
    model.script([Scripted::answer(answer, 80, 20)]);
    engine
        .pipeline
        .run(doc("question.txt", "question", question))
        .await
        .unwrap()
}

fn found(report: &RunReport) -> Vec<(String, Value)> {
    report
        .findings
        .iter()
        .filter(|f| f.plugin == "ask-sql")
        .map(|f| (f.label.clone(), f.data.clone()))
        .collect()
}

/// Everything a hostile answer could have touched, as one comparable value.
async fn footprint(engine: &TestEngine) -> Vec<String> {
    let client = engine.test_db.client().await;
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM assay.documents WHERE kind <> 'question'),
                    (SELECT count(*) FROM assay.plugin_roles),
                    (SELECT count(*) FROM plugin_ask_sql.assay_state),
                    (SELECT count(*) FROM plugin_ask_sql.assay_migrations),
                    (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                      WHERE n.nspname = 'plugin_ask_sql'),
                    (SELECT count(*) FROM pg_largeobject_metadata),
                    (SELECT string_agg(kind, ',' ORDER BY kind) FROM assay.documents WHERE kind <> 'question')",
            &[],
        )
        .await
        .unwrap();
    (0..6)
        .map(|i| row.get::<_, i64>(i).to_string())
        .chain([row.get::<_, String>(6)])
        .collect()
}

#[tokio::test]
async fn a_question_is_answered_with_rows_of_what_the_role_may_read() {
    let model = FakeModel::start().await;
    let (engine, _dir) = engine(&model, true).await;
    let report = ask(
        &engine,
        &model,
        "How many documents of each kind are there?",
        "```sql\nSELECT kind, count(*) AS n FROM assay.documents GROUP BY kind ORDER BY kind\n```",
    )
    .await;
    assert_eq!(
        outcome(&report, "ask-sql").outcome,
        Outcome::Ok,
        "{:?}",
        report.plugins
    );
    let found = found(&report);
    assert_eq!(found.len(), 3, "{found:?}");
    assert_eq!(found[0].0, "sql:answer");
    assert_eq!(
        found[0].1["sql"],
        "SELECT kind, count(*) AS n FROM assay.documents GROUP BY kind ORDER BY kind"
    );
    assert_eq!(found[0].1["model"], "sql-writer");
    // The question is stored with its run, after the call.
    assert_eq!(found[0].1["rows"], 2, "audit, transcript");
    assert_eq!(found[1].1["values"]["kind"], "audit");
    assert_eq!(found[1].1["values"]["n"], 1);

    // The model was told the granted table and its columns, and nothing of
    // the engine's bookkeeping.
    let requests = model.requests();
    let system = requests[0].1["messages"][0]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(system.contains("- assay.documents(id uuid"), "{system}");
    assert!(!system.contains("plugin_roles"), "{system}");
    assert!(!system.contains("assay_state"), "{system}");
    assert_eq!(
        requests[0].1["messages"][1]["content"],
        "How many documents of each kind are there?"
    );
}

/// Hostile answers, each refused, with words the reason must contain.
const HOSTILE: &[(&str, &[&str])] = &[
    ("DROP TABLE assay.documents", &["25006", "DROP TABLE"]),
    ("DELETE FROM assay.documents", &["25006"]),
    (
        "COPY assay.documents TO PROGRAM 'touch /tmp/assay-pwned'",
        &["COPY"],
    ),
    (
        "SELECT * FROM assay.plugin_roles",
        &["42501", "plugin_roles"],
    ),
    (
        "SELECT count(*) FROM assay.documents; DELETE FROM assay.documents",
        &["statement"],
    ),
    // Beyond the obvious: its own schema, which its role owns.
    ("DELETE FROM plugin_ask_sql.assay_state", &["25006"]),
    ("DROP TABLE plugin_ask_sql.assay_migrations", &["25006"]),
    ("CREATE TABLE plugin_ask_sql.loot (a text)", &["25006"]),
    (
        "WITH gone AS (DELETE FROM assay.documents RETURNING 1) SELECT count(*) FROM gone",
        &["25006"],
    ),
    ("SELECT lo_create(0)", &["lo_"]),
    ("SET TRANSACTION READ WRITE", &[]),
    ("COMMIT", &[]),
    ("SELECT * FROM pg_authid", &["42501"]),
];

async fn hostile_answers_are_refused_and_change_nothing(gate: bool) {
    let model = FakeModel::start().await;
    let (engine, _dir) = engine(&model, gate).await;
    let before = footprint(&engine).await;
    for (i, (sql, words)) in HOSTILE.iter().enumerate() {
        let report = ask(&engine, &model, &format!("question {i}"), sql).await;
        let what = format!("gate {gate}: {sql}");
        let plugin = outcome(&report, "ask-sql");
        let found = found(&report);
        match found.as_slice() {
            [(label, data)] if label == "sql:denied" => {
                let reason = data["reason"].as_str().unwrap();
                for word in *words {
                    assert!(reason.contains(word), "{what}: {reason}");
                }
                assert_eq!(data["sql"], *sql, "{what}");
                assert_eq!(plugin.outcome, Outcome::Ok, "{what}");
            }
            // With the gate off, COMMIT and SET TRANSACTION reach the server:
            // the one ends the read-only transaction early (nothing else was
            // sent), the other is refused after a read. Neither writes.
            _ if !gate && matches!(*sql, "COMMIT" | "SET TRANSACTION READ WRITE") => {}
            other => panic!("{what}: {other:?} ({:?})", plugin),
        }
        assert_eq!(footprint(&engine).await, before, "{what} changed something");
    }
    assert!(!std::path::Path::new("/tmp/assay-pwned").exists());
    // Each refusal is stored with its run.
    let client = engine.test_db.client().await;
    let stored: i64 = client
        .query_one(
            "SELECT count(*) FROM assay.finding_details WHERE plugin = 'ask-sql' AND label = 'sql:denied'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(stored >= 11, "gate {gate}: {stored} refusals stored");
}

#[tokio::test]
async fn hostile_answers_are_refused_with_the_gate_on() {
    hostile_answers_are_refused_and_change_nothing(true).await;
}

#[tokio::test]
async fn hostile_answers_are_refused_with_the_gate_off() {
    hostile_answers_are_refused_and_change_nothing(false).await;
}

#[tokio::test]
async fn without_grants_the_question_fails_naming_the_setting() {
    let model = FakeModel::start().await;
    let dir = shared_tempdir();
    let url = model.url.clone();
    let engine = engine_with(dir.path(), |c| {
        c.inference.base_url = Some(url);
        c.inference.default_model = Some("sql-writer".into());
    })
    .await;
    let report = engine
        .pipeline
        .run(doc("q.txt", "question", "How many documents?"))
        .await
        .unwrap();
    let plugin = outcome(&report, "ask-sql");
    assert_eq!(plugin.outcome, Outcome::Failed, "{plugin:?}");
    let error = plugin.message.as_deref().unwrap_or_default();
    assert!(error.contains("[plugins.grants.ask-sql]"), "{error}");
    assert!(model.requests().is_empty(), "the model is not asked");
}
