//! The pipeline end to end: every bundled plugin over the sample documents, with
//! the results read back from PostgreSQL.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use assay::pipeline::input;

use crate::support::{doc, engine_with, outcome, shared_tempdir, workspace};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn examples_are_analysed_by_every_plugin_and_stored() {
    let plugins = shared_tempdir();
    let engine = engine_with(plugins.path(), |_| {}).await;
    let names: BTreeSet<&str> = engine.registry.plugins().iter().map(|p| p.name()).collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "ask-sql",
            "audit-report",
            "history",
            "keywords",
            "redact",
            "sentiment",
            "similar"
        ]),
        "problems: {:?}",
        engine.registry.problems
    );

    let (docs, problems) = input::collect(
        &[workspace().join("examples")],
        "transcript",
        &Default::default(),
    );
    assert!(problems.is_empty(), "{problems:?}");
    assert!(
        (12..=16).contains(&docs.len()),
        "{} sample documents",
        docs.len()
    );

    let mut reports = Vec::new();
    for d in docs.clone() {
        reports.push(engine.pipeline.run(d).await.unwrap());
    }
    // Every document after the first has earlier ones to be like.
    for report in &reports[1..] {
        assert!(
            report
                .findings
                .iter()
                .any(|f| f.label == "similar:document"),
            "{} has no similar documents",
            report.source
        );
    }
    for (report, original) in reports.iter().zip(&docs) {
        assert_eq!(
            report.status, "ok",
            "{}: {:?}",
            report.source, report.plugins
        );
        let by: BTreeSet<&str> = report.findings.iter().map(|f| f.plugin.as_str()).collect();
        for plugin in ["redact", "keywords", "sentiment", "history"] {
            assert!(
                by.contains(plugin),
                "{} has no {plugin} findings",
                report.source
            );
        }
        if original.text.contains("@example.") {
            assert!(
                report.findings.iter().any(|f| f.label == "redacted:email"),
                "{}: e-mail not redacted",
                report.source
            );
            assert!(
                !report.analyzed_text.contains("@example."),
                "{}",
                report.source
            );
        }
    }

    // Everything reported is in the database, tagged with the exact plugin version.
    let client = engine.test_db.client().await;
    let stored: i64 = client
        .query_one("SELECT count(*) FROM assay.findings", &[])
        .await
        .unwrap()
        .get(0);
    let reported: usize = reports.iter().map(|r| r.findings.len()).sum();
    assert_eq!(stored as usize, reported);
    let documents: i64 = client
        .query_one("SELECT count(*) FROM assay.documents", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(documents as usize, docs.len());
    for plugin in engine.registry.plugins() {
        if plugin.name() == "audit-report" {
            // It needs imported prompts, a selection in the metadata and a
            // model (tests/all/audit_report.rs); here it ran and found nothing.
            assert!(
                reports
                    .iter()
                    .all(|r| outcome(r, "audit-report").outcome == "ok")
            );
            continue;
        }
        if plugin.name() == "ask-sql" {
            // Only for questions (tests/all/ask_sql.rs).
            assert!(
                reports
                    .iter()
                    .all(|r| outcome(r, "ask-sql").outcome == "skipped")
            );
            continue;
        }
        let row = client
            .query_one(
                "SELECT count(*), min(plugin_sha256), min(plugin_version) FROM assay.finding_details WHERE plugin = $1",
                &[&plugin.name()],
            )
            .await
            .unwrap();
        let count: i64 = row.get(0);
        assert!(count > 0, "no stored findings of {}", plugin.name());
        assert_eq!(row.get::<_, String>(1), plugin.loaded.identity.sha256);
        assert_eq!(row.get::<_, String>(2), plugin.loaded.identity.version);
    }
    // The text analysis plugins saw (and that spans index into) has no e-mail left.
    let leaked: i64 = client
        .query_one(
            "SELECT count(*) FROM assay.runs WHERE analyzed_text LIKE '%@example.%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(leaked, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompt_stage_transforms_the_text_before_analysis() {
    let plugins = shared_tempdir();
    let engine = engine_with(plugins.path(), |_| {}).await;
    let text = "Please email jane.doe@example.com about the router, or call +1 415 555 0132 about the router.";
    let report = engine.pipeline.run(doc("t1", "chat", text)).await.unwrap();

    assert!(
        report.analyzed_text.contains("[EMAIL]"),
        "{}",
        report.analyzed_text
    );
    assert!(
        report.analyzed_text.contains("[PHONE]"),
        "{}",
        report.analyzed_text
    );
    assert!(!report.analyzed_text.contains("jane.doe"));
    let first_prompt = report
        .findings
        .iter()
        .position(|f| f.stage == "prompt")
        .unwrap();
    let first_analysis = report
        .findings
        .iter()
        .position(|f| f.stage == "analysis")
        .unwrap();
    assert!(first_prompt < first_analysis);
    for f in report.findings.iter().filter(|f| f.stage == "analysis") {
        let shown = format!("{} {}", f.excerpt.clone().unwrap_or_default(), f.data);
        assert!(
            !shown.contains("jane") && !shown.contains("555"),
            "analysis saw raw PII: {shown}"
        );
        if let Some([start, end]) = f.span {
            // Analysis spans index into the redacted text.
            assert!(report.analyzed_text.is_char_boundary(start as usize));
            assert!((end as usize) <= report.analyzed_text.len());
        }
    }
    let redact = report
        .findings
        .iter()
        .find(|f| f.label == "redacted:email")
        .unwrap();
    let [start, end] = redact.span.unwrap();
    assert_eq!(
        &report.analyzed_text[start as usize..end as usize],
        "[EMAIL]"
    );
    assert!(
        !redact.data.to_string().contains("jane"),
        "redact must not echo what it masked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triggers_decide_whether_a_plugin_runs() {
    let plugins = shared_tempdir();
    let engine = engine_with(plugins.path(), |_| {}).await;
    // redact triggers on "@" or three digits in a row; this text has neither.
    let report = engine
        .pipeline
        .run(doc(
            "t2",
            "chat",
            "Nothing personal here, only a router that keeps failing.",
        ))
        .await
        .unwrap();
    let redact = outcome(&report, "redact");
    assert_eq!(redact.outcome, "skipped");
    let client = engine.test_db.client().await;
    let skipped: i64 = client
        .query_one(
            "SELECT count(*) FROM assay.run_plugins rp JOIN assay.plugin_versions p ON p.id = rp.plugin_version_id
             WHERE p.name = 'redact' AND rp.outcome = 'skipped'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(skipped, 1);
}

/// Many documents sharing terms, analysed at once: `history` updates the same
/// counters from concurrent calls and must neither deadlock nor lose a count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_documents_sharing_terms_are_all_counted() {
    let dir = shared_tempdir();
    let engine = engine_with(dir.path(), |_| {}).await;
    let words = ["router", "refund", "outage", "invoice", "modem", "billing"];
    let runs: Vec<_> = (0..16)
        .map(|i| {
            let pipeline = engine.pipeline.clone();
            // The same terms, in a different order each time.
            let mut text: Vec<&str> = words.to_vec();
            text.rotate_left(i % words.len());
            if i % 2 == 1 {
                text.reverse();
            }
            let text = format!("Customer: {}. The {} again.", text.join(" and "), text[0]);
            tokio::spawn(async move {
                pipeline
                    .run(doc(&format!("c{i}"), "transcript", &text))
                    .await
            })
        })
        .collect();
    for run in runs {
        let report = run.await.unwrap().unwrap();
        let history = outcome(&report, "history");
        assert_eq!(history.outcome, "ok", "{history:?}");
    }
    let client = engine.test_db.client().await;
    let documents: i32 = client
        .query_one(
            "SELECT max(documents) FROM plugin_history.term_counts WHERE term = 'router'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(documents, 16, "every document counted once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_new_document_analysed_many_times_at_once_is_one_document() {
    let dir = crate::support::shared_tempdir();
    // No plugins: the runs race straight to storing the one document.
    let engine = crate::support::engine_with(dir.path(), |c| {
        c.plugins.bundled = false;
        c.database.pool_size = 16;
    })
    .await;
    let runs = (0..32).map(|_| {
        let pipeline = engine.pipeline.clone();
        tokio::spawn(async move {
            pipeline
                .run(crate::support::doc(
                    "same.txt",
                    "transcript",
                    "The same words, analysed by many callers at once.",
                ))
                .await
        })
    });
    let mut ids = std::collections::BTreeSet::new();
    for run in runs.collect::<Vec<_>>() {
        let report = run.await.unwrap().expect("every run is stored");
        ids.insert(report.document_id);
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    let client = engine.test_db.client().await;
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM assay.documents), (SELECT count(*) FROM assay.runs)",
            &[],
        )
        .await
        .unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (1, 32));
}
