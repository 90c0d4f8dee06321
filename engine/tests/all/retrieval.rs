//! Retrieval: the bundled `similar` plugin ranks the related sample
//! documents above the unrelated ones, by full text, trigrams (pg_trgm,
//! offered by the engine) and the built-in embedder; `assay search` asks the
//! same memory from the command line.

// Tests: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use assay::pipeline::{Outcome, input};
use serde_json::Value;

use crate::as_used::Workdir;
use crate::support::{TestEngine, engine_with, outcome, shared_tempdir, workspace};

/// The sample that has a sibling, and its sibling.
const NEWCOMER: &str = "bluefin-damaged-suitcase.txt";
const SIBLING: &str = "bluefin-lost-luggage.txt";

async fn sources(engine: &TestEngine) -> std::collections::HashMap<String, String> {
    let client = engine.test_db.client().await;
    client
        .query("SELECT id::text, source FROM assay.documents", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

fn file_name(source: &str) -> &str {
    Path::new(source).file_name().unwrap().to_str().unwrap()
}

async fn analyse(engine: &TestEngine, folder: &str, kind: &str, skip: &str) {
    let (docs, problems) = input::collect(
        &[workspace().join("examples").join(folder)],
        kind,
        &Default::default(),
    );
    assert!(problems.is_empty(), "{problems:?}");
    for doc in docs.into_iter().filter(|d| !d.source.ends_with(skip)) {
        let report = engine.pipeline.run(doc).await.unwrap();
        assert_eq!(
            outcome(&report, "similar").outcome,
            Outcome::Ok,
            "{:?}",
            report.plugins
        );
    }
}

#[tokio::test]
async fn related_documents_rank_above_unrelated_ones() {
    let dir = shared_tempdir();
    let engine = engine_with(dir.path(), |_| {}).await;
    analyse(&engine, "transcripts", "transcript", NEWCOMER).await;
    analyse(&engine, "audits", "audit", NEWCOMER).await;
    analyse(&engine, "chats", "chat", NEWCOMER).await;

    let path = workspace().join("examples/transcripts").join(NEWCOMER);
    let (mut docs, _) = input::collect(&[path], "transcript", &Default::default());
    let report = engine.pipeline.run(docs.remove(0)).await.unwrap();
    let names = sources(&engine).await;
    let ranked: Vec<(String, f64, Value)> = report
        .findings
        .iter()
        .filter(|f| f.label == "similar:document")
        .map(|f| {
            let id = f.data["document"].as_str().unwrap();
            (
                file_name(&names[id]).to_string(),
                f.score.unwrap(),
                f.data["measures"].clone(),
            )
        })
        .collect();
    assert_eq!(ranked[0].0, SIBLING, "{ranked:#?}");
    let (sibling_score, measures) = (ranked[0].1, &ranked[0].2);
    for (name, score, _) in &ranked[1..] {
        assert!(
            sibling_score > score + 0.05,
            "{name} {score} is close to {sibling_score}"
        );
    }
    // All three measures took part, each in [0, 1].
    for measure in ["text", "trigram", "embedding"] {
        let v = measures[measure].as_f64().unwrap_or(-1.0);
        assert!((0.0..=1.0).contains(&v), "{measure}: {measures}");
    }

    // A search finds by words, and is not remembered.
    let client = engine.test_db.client().await;
    let count = async || -> i64 {
        client
            .query_one("SELECT count(*) FROM plugin_similar.remembered", &[])
            .await
            .unwrap()
            .get(0)
    };
    let before = count().await;
    for (query, expected) in [
        (
            "fire doors propped open, extinguisher missing",
            "calder-hall-fire-safety.md",
        ),
        ("suitcase damaged on the flight", NEWCOMER),
        (
            "wheelchair lift hearing loop",
            "linden-conference-centre-accessibility.md",
        ),
    ] {
        let found = engine
            .pipeline
            .ask("similar", "search", query)
            .await
            .unwrap();
        let first = found[0].data["document"].as_str().unwrap();
        assert_eq!(file_name(&names[first]), expected, "{query}: {found:#?}");
    }
    assert_eq!(count().await, before, "searches are not remembered");

    // A plugin's role may call the two offered functions and nothing else
    // of the extension (`set_limit` would change a session setting).
    let role: String = client
        .query_one(
            "SELECT role_name FROM assay.plugin_roles WHERE plugin = 'similar'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    client
        .batch_execute(&format!("SET ROLE \"{role}\""))
        .await
        .unwrap();
    let similar: f32 = client
        .query_one(
            "SELECT assay_extensions.similarity('fire door', 'fire doors')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(similar > 0.5, "{similar}");
    for refused in [
        "SELECT assay_extensions.set_limit(0.1)",
        "SELECT assay_extensions.show_trgm('x')",
        "SELECT assay_extensions.strict_word_similarity('a', 'b')",
    ] {
        let err = client.query_one(refused, &[]).await.unwrap_err();
        assert_eq!(
            err.code(),
            Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
            "{refused}: {err}"
        );
    }
    client.batch_execute("RESET ROLE").await.unwrap();

    // Without pg_trgm (a server without it, here dropped from under the
    // plugin), ranking goes on without that measure.
    client
        .batch_execute("DROP EXTENSION pg_trgm")
        .await
        .unwrap();
    let found = engine
        .pipeline
        .ask(
            "similar",
            "search",
            "fire doors propped open, extinguisher missing",
        )
        .await
        .unwrap();
    assert!(found[0].data["measures"]["trigram"].is_null(), "{found:#?}");
    let first = found[0].data["document"].as_str().unwrap();
    assert_eq!(file_name(&names[first]), "calder-hall-fire-safety.md");
    assert!(engine.pipeline.ask("nope", "search", "x").await.is_err());
}

#[test]
fn search_from_the_command_line_as_the_readme_says() {
    let work = Workdir::new();
    crate::support::copy_dir(&workspace().join("examples"), &work.path().join("examples"));
    let run = |args: &[&str]| {
        let out = work.assay().args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // Nothing remembered yet: it says so.
    let empty = run(&["search", "lost luggage"]);
    assert!(empty.contains("no similar documents"), "{empty}");
    run(&["analyze", "examples/transcripts"]);
    let table = run(&["search", "suitcase damaged on the flight"]);
    let first_row = table
        .lines()
        .find(|l| l.contains("examples/"))
        .unwrap_or_default();
    assert!(first_row.contains(NEWCOMER), "{table}");
    let json = run(&["search", "card blocked abroad", "--json"]);
    let first: Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    assert_eq!(
        first["source"], "examples/transcripts/meridian-card-blocked-abroad.txt",
        "{json}"
    );
    // An empty search is the caller's mistake, said as such.
    let out = work.assay().args(["search", "  "]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to search for"));
}
