//! How stored findings hang together: every finding belongs to one plugin's
//! outcome in one run, whatever writes it (the engine's COPY, an operator's
//! INSERT or UPDATE), and removing a document, a run or an outcome removes
//! the findings under it. The schema keeps this with triggers rather than a
//! per-row foreign key (migration V6 says why); these tests hold the triggers
//! to everything the foreign key did.

#![allow(clippy::unwrap_used)]

use assay::pipeline::store::{COPY_FINDINGS, FINDING_COLUMNS};
use tokio_postgres::GenericClient;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{FromSql, ToSql};
use uuid::Uuid;

use crate::support::{TestEngine, doc, engine_on, engine_with, fresh_database, shared_tempdir};

/// An engine over a fresh database with one analysed document, whose run has
/// findings from more than one plugin.
async fn engine_with_one_run() -> (TestEngine, tempfile::TempDir, Uuid) {
    let dir = shared_tempdir();
    let engine = engine_with(dir.path(), |_| {}).await;
    let report = engine
        .pipeline
        .run(doc(
            "call-1",
            "transcript",
            "Agent: thanks for calling, mail me at ann@example.com. The refund was terrible and slow.",
        ))
        .await
        .unwrap();
    let plugins: std::collections::BTreeSet<&str> =
        report.findings.iter().map(|f| f.plugin.as_str()).collect();
    assert!(plugins.len() >= 2, "findings from {plugins:?}");
    (engine, dir, report.run_id)
}

/// The one value a query returns (a count, an id).
async fn one<T: for<'a> FromSql<'a>>(
    client: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> T {
    client.query_one(sql, params).await.unwrap().get(0)
}

/// Findings per plugin in `run`.
async fn findings_by_plugin(client: &tokio_postgres::Client, run: Uuid) -> Vec<(String, i64)> {
    client
        .query(
            "SELECT p.name, count(*) FROM assay.findings f
             JOIN assay.plugin_versions p ON p.id = f.plugin_version_id
             WHERE f.run_id = $1 GROUP BY p.name ORDER BY p.name",
            &[&run],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

fn assert_refused_as_missing_outcome(result: Result<u64, tokio_postgres::Error>, what: &str) {
    let error = result.expect_err(what);
    let db_error = error
        .as_db_error()
        .unwrap_or_else(|| panic!("{what}: {error}"));
    assert_eq!(
        db_error.code(),
        &SqlState::FOREIGN_KEY_VIOLATION,
        "{what}: {db_error}"
    );
    assert!(
        db_error.message().contains("assay.run_plugins"),
        "{what}: the message names what is missing: {}",
        db_error.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finding_for_an_outcome_that_was_never_stored_is_refused() {
    let (engine, _dir, run) = engine_with_one_run().await;
    let client = engine.test_db.client().await;
    let version: i64 = one(
        &client,
        "SELECT plugin_version_id FROM assay.run_plugins WHERE run_id = $1 LIMIT 1",
        &[&run],
    )
    .await;
    let unused_version: i64 = one(
        &client,
        "INSERT INTO assay.plugin_versions (name, version, content_sha256, stage)
             VALUES ('unused', '1', repeat('a', 64), 'analysis') RETURNING id",
        &[],
    )
    .await;

    // A run that does not exist; a run that exists, with a plugin version that
    // has no outcome in it; and one bad row among good ones.
    let statement = "INSERT INTO assay.findings (run_id, plugin_version_id, ordinal, label)
                     VALUES ($1, $2, 100000, 'stray')";
    assert_refused_as_missing_outcome(
        client
            .execute(statement, &[&Uuid::new_v4(), &version])
            .await,
        "a finding of a run that does not exist",
    );
    assert_refused_as_missing_outcome(
        client.execute(statement, &[&run, &unused_version]).await,
        "a finding of a plugin that has no outcome in the run",
    );
    assert_refused_as_missing_outcome(
        client
            .execute(
                "INSERT INTO assay.findings (run_id, plugin_version_id, ordinal, label)
                 VALUES ($1, $2, 100001, 'fine'), ($1, $3, 100002, 'stray')",
                &[&run, &version, &unused_version],
            )
            .await,
        "a stray finding among good ones",
    );

    // A finding is named by its run, plugin version and ordinal: the same
    // three twice are refused.
    let duplicate = client
        .execute(
            "INSERT INTO assay.findings (run_id, plugin_version_id, ordinal, label)
             SELECT run_id, plugin_version_id, ordinal, 'again' FROM assay.findings
             WHERE run_id = $1 LIMIT 1",
            &[&run],
        )
        .await
        .expect_err("a second finding under the same key");
    assert_eq!(
        duplicate.code(),
        Some(&SqlState::UNIQUE_VIOLATION),
        "{duplicate}"
    );

    // The same through COPY, as the engine stores findings.
    let copied: Result<u64, tokio_postgres::Error> = async {
        let sink = client.copy_in(COPY_FINDINGS).await?;
        let writer = BinaryCopyInWriter::new(sink, &FINDING_COLUMNS);
        futures::pin_mut!(writer);
        let data = serde_json::json!({});
        for (ordinal, run_id) in [(100003_i32, run), (100004, Uuid::new_v4())] {
            writer
                .as_mut()
                .write(&[
                    &run_id,
                    &version,
                    &ordinal,
                    &"copied",
                    &None::<f64>,
                    &None::<i32>,
                    &None::<i32>,
                    &data,
                ])
                .await?;
        }
        writer.finish().await
    }
    .await;
    assert_refused_as_missing_outcome(copied, "a COPY with a finding of no run");

    let stray: i64 = one(
        &client,
        "SELECT count(*) FROM assay.findings WHERE ordinal >= 100000",
        &[],
    )
    .await;
    assert_eq!(stray, 0, "nothing of a refused statement is stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finding_cannot_be_moved_to_an_outcome_that_does_not_exist() {
    let (engine, _dir, run) = engine_with_one_run().await;
    let client = engine.test_db.client().await;
    let before = findings_by_plugin(&client, run).await;

    assert_refused_as_missing_outcome(
        client
            .execute(
                "UPDATE assay.findings SET run_id = gen_random_uuid() WHERE run_id = $1",
                &[&run],
            )
            .await,
        "moving findings to a run that does not exist",
    );
    // Changing columns other than the key is not checked and goes through.
    let relabelled = client
        .execute(
            "UPDATE assay.findings SET label = label || '!' WHERE run_id = $1",
            &[&run],
        )
        .await
        .unwrap();
    assert!(relabelled > 0);
    assert_eq!(findings_by_plugin(&client, run).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_with_findings_keeps_its_key() {
    let (engine, _dir, run) = engine_with_one_run().await;
    let client = engine.test_db.client().await;
    let other_run: Uuid = one(
        &client,
        "INSERT INTO assay.runs (document_id, started_at, finished_at, status, analyzed_text)
             SELECT document_id, started_at, finished_at, status, analyzed_text
             FROM assay.runs WHERE id = $1 RETURNING id",
        &[&run],
    )
    .await;
    assert_refused_as_missing_outcome(
        client
            .execute(
                "UPDATE assay.run_plugins SET run_id = $2
                 WHERE run_id = $1 AND findings > 0",
                &[&run, &other_run],
            )
            .await,
        "moving an outcome that has findings to another run",
    );
    // An outcome's other columns change freely, and one without findings may move.
    client
        .execute(
            "UPDATE assay.run_plugins SET duration_us = duration_us + 1 WHERE run_id = $1",
            &[&run],
        )
        .await
        .unwrap();
    let moved = client
        .execute(
            "UPDATE assay.run_plugins SET run_id = $2 WHERE run_id = $1 AND findings = 0",
            &[&run, &other_run],
        )
        .await
        .unwrap();
    let without_findings: i64 = one(&client, "SELECT count(*) FROM assay.run_plugins p WHERE p.run_id = $1
             AND NOT EXISTS (SELECT 1 FROM assay.findings f
                             WHERE f.run_id = p.run_id AND f.plugin_version_id = p.plugin_version_id)", &[&other_run]).await;
    assert_eq!(without_findings, i64::try_from(moved).unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_an_outcome_a_run_or_a_document_removes_its_findings() {
    let (engine, _dir, run) = engine_with_one_run().await;
    let client = engine.test_db.client().await;
    let before = findings_by_plugin(&client, run).await;
    let (gone, kept) = (&before[0], &before[1..]);

    // One plugin's outcome: its findings go, the other plugins' stay.
    let deleted = client
        .execute(
            "DELETE FROM assay.run_plugins p USING assay.plugin_versions v
             WHERE p.plugin_version_id = v.id AND p.run_id = $1 AND v.name = $2",
            &[&run, &gone.0],
        )
        .await
        .unwrap();
    assert_eq!(deleted, 1);
    assert_eq!(findings_by_plugin(&client, run).await, kept);

    // A second document: deleting the first document removes its run, its
    // outcomes and its findings, and nothing of the second.
    let second = engine
        .pipeline
        .run(doc(
            "call-2",
            "transcript",
            "Customer: terrible service, write to bob@example.org.",
        ))
        .await
        .unwrap();
    let second_before = findings_by_plugin(&client, second.run_id).await;
    assert!(!second_before.is_empty());
    client
        .execute("DELETE FROM assay.documents WHERE source = 'call-1'", &[])
        .await
        .unwrap();
    let left: i64 = one(
        &client,
        "SELECT (SELECT count(*) FROM assay.findings WHERE run_id = $1)
                  + (SELECT count(*) FROM assay.run_plugins WHERE run_id = $1)
                  + (SELECT count(*) FROM assay.runs WHERE id = $1)",
        &[&run],
    )
    .await;
    assert_eq!(left, 0, "the deleted document's run is gone entirely");
    assert_eq!(
        findings_by_plugin(&client, second.run_id).await,
        second_before
    );

    // Emptying the outcomes table empties the findings with it.
    client
        .batch_execute("TRUNCATE assay.run_plugins")
        .await
        .unwrap();
    let findings: i64 = one(&client, "SELECT count(*) FROM assay.findings", &[]).await;
    assert_eq!(findings, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finding_stored_while_its_outcome_is_deleted_is_not_left_behind() {
    // A finding being stored locks its outcome as a foreign key would: a
    // concurrent delete of the outcome waits for the store to commit, then
    // removes the new findings too.
    let (engine, _dir, run) = engine_with_one_run().await;
    let mut writer = engine.test_db.client().await;
    let deleter = engine.test_db.client().await;
    let version: i64 = one(&writer, "SELECT plugin_version_id FROM assay.run_plugins WHERE run_id = $1 AND findings > 0 LIMIT 1", &[&run]).await;
    let tx = writer.transaction().await.unwrap();
    tx.execute(
        "INSERT INTO assay.findings (run_id, plugin_version_id, ordinal, label)
         VALUES ($1, $2, 200000, 'late')",
        &[&run, &version],
    )
    .await
    .unwrap();
    let delete = tokio::spawn(async move {
        deleter
            .execute(
                "DELETE FROM assay.run_plugins WHERE run_id = $1 AND plugin_version_id = $2",
                &[&run, &version],
            )
            .await
    });
    // The delete is blocked on the stored finding's lock until the commit.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!delete.is_finished(), "the delete waits for the store");
    tx.commit().await.unwrap();
    assert_eq!(delete.await.unwrap().unwrap(), 1);
    let left: i64 = one(
        &writer,
        "SELECT count(*) FROM assay.findings WHERE run_id = $1 AND plugin_version_id = $2",
        &[&run, &version],
    )
    .await;
    assert_eq!(left, 0, "no finding outlives its outcome");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn findings_stored_before_the_triggers_survive_the_upgrade() {
    // A database as the engine left it before migration V6, with a run and
    // its findings in it; then today's engine starts on it.
    let test_db = fresh_database().await;
    let mut client = test_db.client().await;
    assay::db::migrate::run_up_to(&mut client, 5).await.unwrap();
    client
        .batch_execute(
            "INSERT INTO assay.documents (id, source, kind, text, content_sha256)
                 VALUES ('00000000-0000-0000-0000-00000000000d', 'old', 'transcript', 'an old call', repeat('d', 64));
             INSERT INTO assay.plugin_versions (id, name, version, content_sha256, stage)
                 OVERRIDING SYSTEM VALUE VALUES (41, 'keywords', '0.1.0', repeat('e', 64), 'analysis');
             INSERT INTO assay.runs (id, document_id, started_at, finished_at, status, analyzed_text)
                 VALUES ('00000000-0000-0000-0000-00000000000a', '00000000-0000-0000-0000-00000000000d', now(), now(), 'ok', 'an old call');
             INSERT INTO assay.run_plugins (run_id, plugin_version_id, stage, outcome, duration_us, findings)
                 VALUES ('00000000-0000-0000-0000-00000000000a', 41, 'analysis', 'ok', 5, 2);
             INSERT INTO assay.findings (run_id, plugin_version_id, ordinal, label, span_start, span_end)
                 VALUES ('00000000-0000-0000-0000-00000000000a', 41, 0, 'keyword:old', 3, 6),
                        ('00000000-0000-0000-0000-00000000000a', 41, 1, 'keyword:call', 7, 11);",
        )
        .await
        .unwrap();

    let dir = shared_tempdir();
    let engine = engine_on(test_db, dir.path(), |_| {}).await;
    let client = engine.test_db.client().await;
    let kept: Vec<(i32, String, Vec<u8>)> = client
        .query(
            "SELECT ordinal, label, span_bytes FROM assay.finding_details
             WHERE source = 'old' ORDER BY ordinal",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        kept,
        [
            (0, "keyword:old".to_string(), b"old".to_vec()),
            (1, "keyword:call".to_string(), b"call".to_vec()),
        ]
    );
    // The upgraded table is guarded like a new one.
    assert_refused_as_missing_outcome(
        client
            .execute(
                "INSERT INTO assay.findings (run_id, plugin_version_id, ordinal, label)
                 VALUES ('00000000-0000-0000-0000-00000000000a', 40, 0, 'stray')",
                &[],
            )
            .await,
        "a stray finding after the upgrade",
    );
    client
        .execute("DELETE FROM assay.documents WHERE source = 'old'", &[])
        .await
        .unwrap();
    let left: i64 = one(&client, "SELECT count(*) FROM assay.findings", &[]).await;
    assert_eq!(left, 0);
}

/// Sequential scans of `table` in the current transaction so far.
async fn seq_scans(client: &impl tokio_postgres::GenericClient, table: &str) -> i64 {
    one(
        client,
        "SELECT seq_scan FROM pg_stat_xact_user_tables WHERE schemaname = 'assay' AND relname = $1",
        &[&table],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checks_use_the_keys_whatever_size_of_statement_came_before() {
    // The checks run inside trigger functions, whose plans a session could
    // keep: one planned for a COPY of thousands of findings (where scanning
    // all outcomes is cheapest) must not be reused for the next one-row
    // statement, or every small store scans every outcome ever stored.
    let (engine, _dir, _run) = engine_with_one_run().await;
    let mut client = engine.test_db.client().await;
    let version: i64 = one(
        &client,
        "SELECT min(plugin_version_id) FROM assay.run_plugins",
        &[],
    )
    .await;
    let runs: Vec<Uuid> = client
        .query(
            "WITH new_runs AS (
                 INSERT INTO assay.runs (document_id, started_at, finished_at, status, analyzed_text)
                 SELECT document_id, started_at, finished_at, status, analyzed_text
                 FROM assay.runs, generate_series(1, 5000) RETURNING id)
             INSERT INTO assay.run_plugins (run_id, plugin_version_id, stage, outcome, duration_us)
             SELECT id, $1, 'analysis', 'ok', 0 FROM new_runs RETURNING run_id",
            &[&version],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    client
        .batch_execute("ANALYZE assay.run_plugins, assay.findings")
        .await
        .unwrap();

    let tx = client.transaction().await.unwrap();
    tx.execute(
        "INSERT INTO assay.findings (run_id, plugin_version_id, ordinal, label)
         SELECT $1, $2, n, 'many' FROM generate_series(0, 9999) n",
        &[&runs[0], &version],
    )
    .await
    .unwrap();
    let before = seq_scans(&tx, "run_plugins").await;
    for (ordinal, run) in runs[1..4].iter().enumerate() {
        tx.execute(
            "INSERT INTO assay.findings (run_id, plugin_version_id, ordinal, label)
             VALUES ($1, $2, $3, 'one')",
            &[run, &version, &i32::try_from(ordinal).unwrap()],
        )
        .await
        .unwrap();
    }
    assert_eq!(
        seq_scans(&tx, "run_plugins").await,
        before,
        "a one-row store looked its outcome up by scanning every outcome"
    );

    // The same for deletes: one outcome's findings are found by key after a
    // delete of many.
    tx.execute(
        "DELETE FROM assay.run_plugins WHERE run_id = ANY($1)",
        &[&&runs[2000..4000]],
    )
    .await
    .unwrap();
    let before = seq_scans(&tx, "findings").await;
    tx.execute(
        "DELETE FROM assay.run_plugins WHERE run_id = $1",
        &[&runs[1]],
    )
    .await
    .unwrap();
    assert_eq!(
        seq_scans(&tx, "findings").await,
        before,
        "deleting one outcome scanned every finding"
    );
    tx.commit().await.unwrap();
}
