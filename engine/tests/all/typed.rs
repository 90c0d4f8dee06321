//! The engine's enums and the database's CHECK constraints name the same
//! values: a kind added to one and not the other fails here, not when a run
//! is stored.

// Tests: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use assay::engine::Engine;
use assay::runtime::failure::FAILURE_KINDS;

use crate::support::fresh_database;

/// The values a CHECK constraint `column IN (…)` of `table` allows.
async fn allowed(client: &tokio_postgres::Client, table: &str, column: &str) -> Vec<String> {
    let rows = client
        .query(
            "SELECT pg_get_constraintdef(c.oid) FROM pg_constraint c
             WHERE c.conrelid = $1::text::regclass AND c.contype = 'c'",
            &[&table],
        )
        .await
        .unwrap();
    let definition = rows
        .iter()
        .map(|r| r.get::<_, String>(0))
        .find(|d| d.contains(&format!("({column} = ANY")))
        .unwrap_or_else(|| panic!("no CHECK on {table}.{column}"));
    let mut values: Vec<String> = definition
        .split('\'')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    values.sort();
    values
}

fn sorted(values: impl IntoIterator<Item = &'static str>) -> Vec<String> {
    let mut values: Vec<String> = values.into_iter().map(str::to_string).collect();
    values.sort();
    values
}

#[tokio::test]
async fn failure_kinds_outcomes_and_statuses_match_the_schema() {
    let test_db = fresh_database().await;
    // Opening the database applies the migrations.
    let mut config = assay::config::Config::default();
    config.plugins.bundled = false;
    let dir = tempfile::tempdir().unwrap();
    config.plugins.dir = dir.path().to_path_buf();
    let db = std::sync::Arc::new(
        assay::db::Database::open_with(test_db.config.clone(), &config.database)
            .await
            .unwrap(),
    );
    let engine = Engine::builder(config)
        .database(db)
        .compile_cache(false)
        .build()
        .await
        .unwrap();
    let client = test_db.client().await;
    assert_eq!(
        allowed(&client, "assay.run_plugins", "error_kind").await,
        sorted(FAILURE_KINDS)
    );
    use assay::pipeline::{Outcome, RunStatus};
    assert_eq!(
        allowed(&client, "assay.run_plugins", "outcome").await,
        sorted([Outcome::Ok, Outcome::Failed, Outcome::Skipped].map(Outcome::as_str))
    );
    assert_eq!(
        allowed(&client, "assay.runs", "status").await,
        sorted([RunStatus::Ok, RunStatus::Partial].map(RunStatus::as_str))
    );
    assert_eq!(
        allowed(&client, "assay.inference_requests", "outcome").await,
        sorted(
            assay::capability::inference::types::OUTCOMES
                .iter()
                .copied()
        )
    );
    drop(engine);
}
