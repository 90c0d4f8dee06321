//! The `history` plugin: SQL and state from a plugin, its own schema and
//! migrations, counting across documents of one group.

#![allow(clippy::unwrap_used)]

use assay::pipeline::DocumentInput;
use serde_json::{Value, json};

use crate::support::{engine_with, shared_tempdir};

fn grouped(source: &str, group: &str, text: &str) -> DocumentInput {
    let mut metadata = serde_json::Map::new();
    metadata.insert("group".into(), Value::String(group.into()));
    DocumentInput {
        source: source.into(),
        kind: "chat".into(),
        metadata,
        text: text.into(),
    }
}

fn recurring(report: &assay::pipeline::RunReport, term: &str) -> Option<Value> {
    report
        .findings
        .iter()
        .find(|f| f.label == "recurring-term" && f.data["term"] == json!(term))
        .map(|f| f.data.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_counts_terms_across_documents_of_a_group() {
    let plugins = shared_tempdir();
    let engine = engine_with(plugins.path(), |_| {}).await;
    let first = engine
        .pipeline
        .run(grouped(
            "a",
            "northwind",
            "The router failed. The router was replaced. Refund pending.",
        ))
        .await
        .unwrap();
    assert!(
        recurring(&first, "router").is_none(),
        "nothing earlier in the group"
    );

    let second = engine
        .pipeline
        .run(grouped(
            "b",
            "northwind",
            "My router is broken again, the router light blinks.",
        ))
        .await
        .unwrap();
    let data = recurring(&second, "router").expect("router recurs");
    assert_eq!(data["earlier_documents"], json!(1));
    assert_eq!(data["earlier_mentions"], json!(2));

    // Another group does not see northwind's history.
    let other = engine
        .pipeline
        .run(grouped(
            "c",
            "saltmarsh",
            "The router at the restaurant is fine.",
        ))
        .await
        .unwrap();
    assert!(recurring(&other, "router").is_none());

    // Analysing the same document again does not count it twice.
    let again = engine
        .pipeline
        .run(grouped(
            "b",
            "northwind",
            "My router is broken again, the router light blinks.",
        ))
        .await
        .unwrap();
    assert_eq!(
        recurring(&again, "router").unwrap()["earlier_documents"],
        json!(1)
    );

    let client = engine.test_db.client().await;
    // State remembers the last document of each group.
    let last: Value = client
        .query_one(
            "SELECT value FROM plugin_history.assay_state WHERE scope = 'northwind' AND key = 'last-document'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(last, json!(again.document_id.to_string()));
    let previous = again
        .findings
        .iter()
        .find(|f| f.label == "group-history")
        .unwrap();
    assert_eq!(
        previous.data["previous_document"],
        json!(second.document_id.to_string())
    );
    let documents: i32 = client
        .query_one(
            "SELECT documents FROM plugin_history.term_counts WHERE grp = 'northwind' AND term = 'router'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(documents, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_migrations_apply_once() {
    let plugins = shared_tempdir();
    let engine = engine_with(plugins.path(), |_| {}).await;
    let client = engine.test_db.client().await;
    // (version, applied_at) of every applied migration of `history`.
    let applied = || async {
        client
            .query(
                "SELECT version, applied_at FROM plugin_history.assay_migrations ORDER BY version",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get::<_, i32>(0), r.get::<_, std::time::SystemTime>(1)))
            .collect::<Vec<_>>()
    };
    let before = applied().await;
    assert_eq!(
        before.iter().map(|(v, _)| *v).collect::<Vec<_>>(),
        vec![1, 2]
    );

    // Loading the plugins again (a second engine on the same database) applies nothing new.
    let runtime =
        std::sync::Arc::new(assay::runtime::Runtime::new(&Default::default(), None).unwrap());
    let registry = assay::registry::Registry::load(&runtime, &engine.config, &engine.db)
        .await
        .unwrap();
    assert!(registry.problems.is_empty(), "{:?}", registry.problems);
    assert_eq!(applied().await, before, "migrations were not re-run");
}
