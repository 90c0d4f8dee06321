//! The `assay` binary: output formats, exit codes, standard input, migrations,
//! and two commands sharing the embedded server.

#![allow(clippy::unwrap_used)]

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::support::{built_plugin, fresh_database, shared_tempdir, workspace};

pub(crate) fn assay(db_url: Option<&str>, plugin_dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_assay"));
    cmd.current_dir(plugin_dir)
        .env_remove("DATABASE_URL")
        .env("ASSAY__PLUGINS__DIR", plugin_dir)
        .env("ASSAY_CONFIG", plugin_dir.join("no-config.toml"))
        .env("NO_COLOR", "1");
    if let Some(url) = db_url {
        cmd.env("DATABASE_URL", url);
    }
    cmd
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_output_parses_and_everything_succeeds() {
    let db = fresh_database().await;
    let dir = shared_tempdir();
    let out = run(assay(Some(&db.url), dir.path())
        .arg("analyze")
        .arg(workspace().join("examples"))
        .arg("--json"));
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.len() >= 8);
    for doc in &lines {
        assert!(doc["run_id"].as_str().is_some_and(|id| id.len() == 36));
        assert!(!doc["findings"].as_array().unwrap().is_empty());
    }
    let client = db.client().await;
    let runs: i64 = client
        .query_one("SELECT count(*) FROM assay.runs", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(runs as usize, lines.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_table_names_documents_plugins_and_excerpts() {
    let db = fresh_database().await;
    let dir = shared_tempdir();
    let out = run(assay(Some(&db.url), dir.path())
        .arg("analyze")
        .arg(workspace().join("examples/transcripts/northwind-billing-dispute.txt")));
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let table = text(&out.stdout);
    for column in ["document", "plugin", "label", "score", "excerpt"] {
        assert!(table.contains(column), "{table}");
    }
    for plugin in ["redact", "keywords", "sentiment", "history"] {
        assert!(table.contains(plugin), "{plugin} missing from\n{table}");
    }
    assert!(table.contains("[EMAIL]"));
    assert!(
        !table.contains("dana.whitfield@example.com"),
        "the table shows the redacted text"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_are_named_and_give_exit_code_two() {
    let db = fresh_database().await;
    let dir = shared_tempdir();
    let docs = dir.path().join("docs");
    std::fs::create_dir(&docs).unwrap();
    std::fs::write(
        docs.join("good.txt"),
        "The router was replaced and the customer was happy.",
    )
    .unwrap();
    std::fs::write(docs.join("empty.txt"), "").unwrap();
    std::fs::write(docs.join("latin1.txt"), b"caf\xe9 au lait").unwrap();
    std::fs::write(docs.join("broken.json"), "{\"text\": ").unwrap();
    let out = run(assay(Some(&db.url), dir.path())
        .arg("analyze")
        .arg(&docs)
        .arg(dir.path().join("missing.txt"))
        .arg("--json"));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains("empty.txt: is empty"), "{stderr}");
    assert!(
        stderr.contains("latin1.txt: is not valid UTF-8"),
        "{stderr}"
    );
    assert!(
        stderr.contains("broken.json: is not valid JSON"),
        "{stderr}"
    );
    assert!(stderr.contains("missing.txt: no such file"), "{stderr}");
    assert_eq!(
        text(&out.stdout).lines().count(),
        1,
        "the good document is still analysed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_plugin_gives_exit_code_two_with_a_summary() {
    let db = fresh_database().await;
    let dir = shared_tempdir();
    std::fs::write(dir.path().join("faulty.wasm"), built_plugin("faulty.wasm")).unwrap();
    std::fs::write(dir.path().join("a.txt"), "#fault:trap the router").unwrap();
    let out = run(assay(Some(&db.url), dir.path())
        .arg("analyze")
        .arg(dir.path().join("a.txt")));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains("1 plugin calls failed"), "{stderr}");
    assert!(stderr.contains("plugin faulty trapped"), "{stderr}");

    // The failure shows, by kind, in the plugin list.
    let out = run(assay(Some(&db.url), dir.path()).args(["plugins", "list"]));
    let stdout = text(&out.stdout);
    let faulty_row = stdout
        .lines()
        .find(|l| l.contains("faulty"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(faulty_row.contains("trap 1"), "{stdout}");
    let keywords_row = stdout.lines().find(|l| l.contains("keywords")).unwrap();
    assert!(keywords_row.contains("none"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_to_do_is_fatal() {
    let dir = shared_tempdir();
    let out = run(assay(Some("postgres://unused@127.0.0.1:1/x"), dir.path())
        .arg("analyze")
        .arg(dir.path().join("nope.txt")));
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no documents to analyse"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_is_fatal_and_named() {
    let dir = shared_tempdir();
    std::fs::write(dir.path().join("a.txt"), "hello router").unwrap();
    let out = run(assay(
        Some("postgres://assay:secret@127.0.0.1:1/assay"),
        dir.path(),
    )
    .env("ASSAY__DATABASE__CONNECT_TIMEOUT_MS", "2000")
    .arg("analyze")
    .arg(dir.path().join("a.txt")));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot connect to PostgreSQL at postgres://assay:***@127.0.0.1:1/assay"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("secret"),
        "passwords never reach the terminal"
    );
    // Why, in the system's words, not only tokio-postgres' "error connecting
    // to server".
    assert!(stderr.contains("Connection refused"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standard_input_kind_and_metadata() {
    let db = fresh_database().await;
    let dir = shared_tempdir();
    let mut child = assay(Some(&db.url), dir.path())
        .args([
            "analyze",
            "-",
            "--kind",
            "chat",
            "--meta",
            "group=acme",
            "--json",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"customer: the router is broken\nagent: sorry, we will replace the router")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let doc: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(doc["kind"], "chat");
    assert_eq!(doc["source"], "-");
    let client = db.client().await;
    let meta: serde_json::Value = client
        .query_one("SELECT metadata FROM assay.documents", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(meta, serde_json::json!({"group": "acme"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_is_idempotent() {
    let db = fresh_database().await;
    let dir = shared_tempdir();
    for _ in 0..2 {
        let out = run(assay(Some(&db.url), dir.path()).arg("migrate"));
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert!(text(&out.stdout).contains("schema up to date"));
    }
    let client = db.client().await;
    let history: i64 = client
        .query_one("SELECT count(*) FROM assay.refinery_schema_history", &[])
        .await
        .unwrap()
        .get(0);
    let files = std::fs::read_dir(workspace().join("migrations"))
        .unwrap()
        .count();
    assert_eq!(history as usize, files);
}

#[test]
fn two_commands_at_once_share_the_embedded_server() {
    let dir = shared_tempdir();
    let data = dir.path().join("state");
    let spawn = || {
        assay(None, dir.path())
            .env("ASSAY__DATABASE__EMBEDDED__DATA_DIR", &data)
            .arg("analyze")
            .arg(workspace().join("examples/transcripts"))
            .arg("--json")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout).lines().count(), 5);
    }
    assert!(
        !data.join("pgdata/postmaster.pid").exists(),
        "the last command out stopped the server"
    );
    // Both runs were stored in the one cluster: a third run sees 8 earlier runs.
    let out = run(assay(None, dir.path())
        .env("ASSAY__DATABASE__EMBEDDED__DATA_DIR", &data)
        .arg("migrate"));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}
