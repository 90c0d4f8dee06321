//! Database paths, each beside its baseline in the same group, against a
//! private PostgreSQL started in a temporary directory:
//!
//! - `point_select`: a SELECT by primary key issued from a plugin (the
//!   `bench-query` plugin, one call per request) beside the same statement
//!   straight through tokio-postgres, both on a pool of the same settings,
//!   and from the plugin with instance reuse on (`plugin-reused`);
//! - `store_findings`: the engine's write of a run (`store_run`: the run, its
//!   plugin outcomes, the findings by binary COPY) beside the run and one
//!   INSERT per finding, and beside the run and a bare binary COPY, each in
//!   one transaction; throughput in findings.
//!
//! `cargo bench -p assay-benches --bench database` (needs the PostgreSQL
//! server binaries).

mod support;

use std::sync::Arc;
use std::time::SystemTime;

use assay::bench::query::{QueryPaths, Workload};
use assay::config::Config;
use assay::db::Database;
use assay::engine::Engine;
use assay::pipeline::store;
use assay::pipeline::{DocumentInput, FindingRecord, RunReport};
use criterion::{BenchmarkId, Criterion, Throughput};
use tokio_postgres::binary_copy::BinaryCopyInWriter;

const ROWS: u64 = 10_000;

fn point_select(c: &mut Criterion, rt: &tokio::runtime::Runtime, db: &Arc<Database>) {
    let config = Config::default();
    let paths = rt
        .block_on(QueryPaths::set_up(
            db,
            &config,
            ROWS,
            &Workload::point(),
            config.sandbox.connections_per_plugin,
            1,
            true,
        ))
        .expect("set up both paths");
    let mut key = 0i64;
    let mut next = move || {
        key = key % ROWS as i64 + 1;
        key
    };
    let mut group = c.benchmark_group("point_select");
    group.bench_function("native", |b| b.to_async(rt).iter(|| paths.native(next())));
    let mut next = {
        let mut key = 0i64;
        move || {
            key = key % ROWS as i64 + 1;
            key
        }
    };
    group.bench_function("plugin", |b| b.to_async(rt).iter(|| paths.plugin(next())));
    let mut next = {
        let mut key = 0i64;
        move || {
            key = key % ROWS as i64 + 1;
            key
        }
    };
    group.bench_function("plugin-reused", |b| {
        b.to_async(rt).iter(|| paths.plugin_reused(next()))
    });
    group.finish();
    rt.block_on(paths.tear_down()).expect("clean up");
}

/// A run with `n` findings, reported by a real plugin version, ready to store.
fn report_with(template: &RunReport, n: usize) -> RunReport {
    let model = template.findings[0].clone();
    let mut report = template.clone();
    report.findings = (0..n)
        .map(|i| FindingRecord {
            ordinal: i as i32,
            label: format!("bench:{}", i % 17),
            ..model.clone()
        })
        .collect();
    report
}

fn store_findings(c: &mut Criterion, rt: &tokio::runtime::Runtime, db: &Arc<Database>) {
    let mut config = Config::default();
    config.plugins.dir = std::env::temp_dir().join("assay-bench-no-plugins");
    let engine = rt
        .block_on(
            Engine::builder(config)
                .database(Arc::clone(db))
                .compile_cache(false)
                .build(),
        )
        .expect("engine");
    let pipeline = engine.pipeline().clone();
    let input = DocumentInput {
        source: "bench-store".into(),
        kind: "transcript".into(),
        metadata: Default::default(),
        text: "Customer: the router failed, mail dana@example.com. Agent: sorry, a refund.".into(),
    };
    let template = rt
        .block_on(pipeline.run(input.clone()))
        .expect("a run to copy");

    let mut group = c.benchmark_group("store_findings");
    group.sample_size(20);
    for n in [100usize, 1_000, 10_000] {
        let report = report_with(&template, n);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("engine", n), &report, |b, report| {
            b.to_async(rt).iter(|| async {
                let now = SystemTime::now();
                store::store_run(db, &input, report, now, now)
                    .await
                    .expect("store")
            })
        });
        group.bench_with_input(BenchmarkId::new("row_at_a_time", n), &report, |b, report| {
            b.to_async(rt).iter(|| async {
                let mut conn = db.connection().await.expect("connection");
                let tx = conn.transaction().await.expect("begin");
                let run_id = insert_run(&tx, report).await;
                let insert = tx
                    .prepare(
                        "INSERT INTO assay.findings
                             (run_id, plugin_version_id, ordinal, label, score, span_start, span_end, data)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    )
                    .await
                    .expect("prepare");
                for f in &report.findings {
                    let (start, end) = span(f);
                    tx.execute(
                        &insert,
                        &[&run_id, &f.version_id, &f.ordinal, &f.label, &f.score, &start, &end, &f.data],
                    )
                    .await
                    .expect("insert");
                }
                tx.commit().await.expect("commit");
            })
        });
        group.bench_with_input(BenchmarkId::new("binary_copy", n), &report, |b, report| {
            b.to_async(rt).iter(|| async {
                let mut conn = db.connection().await.expect("connection");
                let tx = conn.transaction().await.expect("begin");
                let run_id = insert_run(&tx, report).await;
                let sink = tx.copy_in(store::COPY_FINDINGS).await.expect("copy");
                let writer = BinaryCopyInWriter::new(sink, &store::FINDING_COLUMNS);
                futures::pin_mut!(writer);
                for f in &report.findings {
                    let (start, end) = span(f);
                    writer
                        .as_mut()
                        .write(&[
                            &run_id,
                            &f.version_id,
                            &f.ordinal,
                            &f.label,
                            &f.score,
                            &start,
                            &end,
                            &f.data,
                        ])
                        .await
                        .expect("row");
                }
                writer.finish().await.expect("finish");
                tx.commit().await.expect("commit");
            })
        });
    }
    group.finish();
}

fn span(f: &FindingRecord) -> (Option<i32>, Option<i32>) {
    match f.span {
        Some([start, end]) => (Some(start as i32), Some(end as i32)),
        None => (None, None),
    }
}

/// The run row and its plugin outcomes, as the engine writes them before the
/// findings (each finding references its plugin's outcome in the run).
async fn insert_run(tx: &tokio_postgres::Transaction<'_>, report: &RunReport) -> uuid::Uuid {
    let now = SystemTime::now();
    let run_id: uuid::Uuid = tx
        .query_one(
            "INSERT INTO assay.runs (document_id, started_at, finished_at, status, analyzed_text)
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
            &[
                &report.document_id,
                &now,
                &now,
                &report.status.as_str(),
                &report.analyzed_text,
            ],
        )
        .await
        .expect("run")
        .get(0);
    for p in &report.plugins {
        tx.execute(
            "INSERT INTO assay.run_plugins (run_id, plugin_version_id, stage, outcome, duration_us, findings)
             VALUES ($1, $2, $3, 'ok', 0, 0)",
            &[&run_id, &p.version_id, &p.stage],
        )
        .await
        .expect("run plugin");
    }
    run_id
}

fn main() {
    if support::only_listing() {
        return;
    }
    let rt = tokio::runtime::Runtime::new().expect("tokio");
    let (server, _root) = support::private_server();
    let db = Arc::new(
        rt.block_on(Database::open_with(
            server.pg_config("postgres"),
            &Config::default().database,
        ))
        .expect("database"),
    );
    let mut criterion = Criterion::default().configure_from_args();
    point_select(&mut criterion, &rt, &db);
    store_findings(&mut criterion, &rt, &db);
    criterion.final_summary();
    drop(db);
    drop(server);
}
