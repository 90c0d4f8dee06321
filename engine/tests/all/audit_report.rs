//! The bundled `audit-report` plugin: the prompt library's prompts run part
//! by part over a document through a scripted model server on loopback.

// Tests: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use assay::pipeline::{Outcome, RunReport, input};
use assay::prompts::{store, tree};
use assay_testing::fake_model::{FakeModel, Scripted};
use serde_json::{Value, json};

use crate::support::{TestEngine, engine_with, outcome, shared_tempdir, workspace};

fn examples() -> std::path::PathBuf {
    workspace().join("examples").join("prompts")
}

async fn engine(model: Option<&FakeModel>) -> (TestEngine, tempfile::TempDir) {
    let dir = shared_tempdir();
    let url = model.map(|m| m.url.clone());
    let engine = engine_with(dir.path(), |c| {
        c.inference.base_url = url;
        c.inference.default_model = Some("auditor".into());
    })
    .await;
    store::import(&engine.db, &tree::read_tree(&examples()).unwrap())
        .await
        .unwrap();
    (engine, dir)
}

async fn audit(engine: &TestEngine, text: &str, building: &str) -> RunReport {
    let mut doc = crate::support::doc("lobby.md", "audit", text);
    doc.metadata =
        json!({"scenario": "design-audit", "report_type": "summary", "building_type": building})
            .as_object()
            .cloned()
            .unwrap();
    engine.pipeline.run(doc).await.unwrap()
}

fn audited(report: &RunReport) -> Vec<(String, Value)> {
    report
        .findings
        .iter()
        .filter(|f| f.plugin == "audit-report")
        .map(|f| (f.label.clone(), f.data.clone()))
        .collect()
}

fn user_message(body: &Value) -> String {
    body["messages"][1]["content"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn prompts_run_part_by_part_each_part_seeing_the_earlier_answers() {
    let model = FakeModel::start().await;
    let (engine, _dir) = engine(Some(&model)).await;
    // Part 1 (issues, then overview, by name), then part 2.
    model.script([
        Scripted::answer(
            r#"{"issues": [{"area": "lobby", "problem": "dark", "severity": "high"}]}"#,
            50,
            20,
        ),
        Scripted::answer("The lobby is dark; the signage is small.", 40, 10),
        Scripted::answer("1. Add lighting to the lobby.", 60, 8),
    ]);
    let report = audit(
        &engine,
        "Auditor: the lobby is dark and the signs are small.",
        "hotel",
    )
    .await;
    assert_eq!(
        outcome(&report, "audit-report").outcome,
        Outcome::Ok,
        "{:?}",
        report.plugins
    );
    let found = audited(&report);
    let labels: Vec<&str> = found.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(
        labels,
        ["audit:issues", "report:overview", "report:recommendations"]
    );
    assert_eq!(
        found[0].1["answer"]["issues"][0]["severity"], "high",
        "the JSON answer, parsed"
    );
    assert_eq!(
        found[1].1["text"],
        "The lobby is dark; the signage is small."
    );
    assert_eq!(found[2].1["part"], 2);

    let requests = model.requests();
    assert_eq!(requests.len(), 3);
    assert_eq!(requests[0].1["response_format"]["type"], "json_object");
    assert!(requests[1].1.get("response_format").is_none());
    assert_eq!(requests[0].1["temperature"], 0.0);
    // Part 1's prompts see the document only; part 2 sees both answers.
    for r in &requests[..2] {
        assert!(
            !user_message(&r.1).contains("earlier parts"),
            "{}",
            user_message(&r.1)
        );
    }
    let last = user_message(&requests[2].1);
    assert!(
        last.contains("the lobby is dark and the signs are small"),
        "{last}"
    );
    assert!(
        last.contains(r#""severity": "high""#) && last.contains("the signage is small"),
        "{last}"
    );
    assert!(
        requests[2].1["messages"][0]["content"]
            .as_str()
            .unwrap()
            .contains("recommendations")
    );

    // Every finding names its prompt's exact version and the model.
    let client = engine.test_db.client().await;
    for (label, data) in &found {
        let row = client
            .query_one(
                "SELECT p.name, v.content_sha256 FROM assay.prompt_versions v JOIN assay.prompts p ON p.id = v.prompt_id WHERE v.id = $1",
                &[&data["prompt_version"].as_i64().unwrap()],
            )
            .await
            .unwrap();
        assert!(label.ends_with(&row.get::<_, String>(0)), "{label}");
        assert_eq!(data["prompt_sha256"], row.get::<_, String>(1));
        assert_eq!(data["model"], "auditor");
    }
    let tokens = outcome(&report, "audit-report").model;
    assert_eq!(
        (tokens.requests, tokens.input_tokens, tokens.output_tokens),
        (3, 150, 38)
    );

    // The same document again: every answer from the cache, no tokens, nothing sent.
    let again = audit(
        &engine,
        "Auditor: the lobby is dark and the signs are small.",
        "hotel",
    )
    .await;
    assert!(
        audited(&again).iter().all(|(_, d)| d["from_cache"] == true),
        "{:?}",
        audited(&again)
    );
    assert_eq!(
        audited(&again)
            .iter()
            .map(|(_, d)| d["prompt_version"].clone())
            .collect::<Vec<_>>(),
        found
            .iter()
            .map(|(_, d)| d["prompt_version"].clone())
            .collect::<Vec<_>>()
    );
    let tokens = outcome(&again, "audit-report").model;
    assert_eq!(
        (tokens.requests, tokens.input_tokens + tokens.output_tokens),
        (3, 0)
    );
    assert_eq!(model.requests().len(), 3);

    // A changed prompt: its findings name the new version; it alone is asked again.
    let changed = shared_tempdir();
    crate::support::copy_dir(&examples(), changed.path());
    std::fs::write(
        changed
            .path()
            .join("design-audit/summary/hotel/part1/overview.txt"),
        "Describe the lobby only.\n",
    )
    .unwrap();
    store::import(&engine.db, &tree::read_tree(changed.path()).unwrap())
        .await
        .unwrap();
    let third = audit(
        &engine,
        "Auditor: the lobby is dark and the signs are small.",
        "hotel",
    )
    .await;
    let third_found = audited(&third);
    assert_ne!(
        third_found[1].1["prompt_version"],
        found[1].1["prompt_version"]
    );
    assert_eq!(
        third_found[0].1["prompt_version"],
        found[0].1["prompt_version"]
    );
    assert_eq!(third_found[0].1["from_cache"], true);
    assert_eq!(third_found[1].1["from_cache"], false);
    // Part 2 sees a new part-1 answer, so it is a new request too.
    assert_eq!(model.requests().len(), 5);
}

#[tokio::test]
async fn without_a_selection_or_a_model_it_says_so_and_makes_nothing_up() {
    let (engine, _dir) = engine(None).await;
    // A selection the library has, no model server: skipped, with the setting.
    let report = audit(&engine, "The lobby is dark.", "hotel").await;
    let o = outcome(&report, "audit-report");
    assert_eq!(o.outcome, Outcome::Skipped, "{o:?}");
    assert!(
        o.message.as_deref().unwrap().contains("inference.base_url"),
        "{o:?}"
    );
    assert!(audited(&report).is_empty());
    assert_eq!(report.status, "ok");
    // A selection the library does not have, or none: no findings, no request.
    let report = audit(&engine, "The lobby is dark.", "castle").await;
    assert_eq!(outcome(&report, "audit-report").outcome, Outcome::Ok);
    assert!(audited(&report).is_empty());
    let plain = engine
        .pipeline
        .run(crate::support::doc("x.txt", "audit", "The lobby is dark."))
        .await
        .unwrap();
    assert_eq!(outcome(&plain, "audit-report").outcome, Outcome::Ok);
    assert!(outcome(&plain, "audit-report").model.is_empty());
}

#[test]
fn key_value_folders_of_a_documents_path_select_its_prompts() {
    let dir = shared_tempdir();
    let folder = dir
        .path()
        .join("scenario=design-audit/report_type=summary/building_type=hotel");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("lobby.md"), "The lobby is dark.").unwrap();
    std::fs::write(
        dir.path().join("other.json"),
        r#"{"text": "x", "metadata": {"building_type": "restaurant"}}"#,
    )
    .unwrap();
    let mut meta = serde_json::Map::new();
    meta.insert("report_type".into(), "compliance".into());
    let (docs, problems) = input::collect(&[dir.path().to_path_buf()], "audit", &meta);
    assert!(problems.is_empty(), "{problems:?}");
    let lobby = docs
        .iter()
        .find(|d| d.source.ends_with("lobby.md"))
        .unwrap();
    assert_eq!(lobby.metadata["scenario"], "design-audit");
    assert_eq!(lobby.metadata["building_type"], "hotel");
    assert_eq!(
        lobby.metadata["report_type"], "compliance",
        "--meta wins over the path"
    );
    let other = docs
        .iter()
        .find(|d| d.source.ends_with("other.json"))
        .unwrap();
    assert_eq!(other.metadata["building_type"], "restaurant");
}

/// As a user runs it, from the README: the built binary in a working
/// directory, `assay prompts import` of the example tree, then
/// `assay analyze` of an audit whose folders select the prompts; the model
/// server set by environment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_imports_prompts_and_audits_a_document_selected_by_its_path() {
    let model = FakeModel::start().await;
    let db = crate::support::fresh_database().await;
    let work = shared_tempdir();
    let folder = work
        .path()
        .join("audits/scenario=design-audit/report_type=summary/building_type=restaurant");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(
        folder.join("dining-room.md"),
        "Auditor: the dining room is loud and dim.",
    )
    .unwrap();
    let assay = |args: &[&str]| {
        let out = crate::cli::assay(Some(&db.url), work.path())
            .env("ASSAY__INFERENCE__BASE_URL", &model.url)
            .env("ASSAY__INFERENCE__DEFAULT_MODEL", "auditor")
            .args(args)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assay(&["prompts", "import", &examples().display().to_string()]);
    model.script([
        Scripted::answer("The room is loud and dim.", 30, 8),
        Scripted::answer(
            r#"{"entrance": 3, "layout": 3, "lighting": 2, "acoustics": 1, "comment": "loud"}"#,
            40,
            20,
        ),
    ]);
    let out = assay(&["analyze", "audits", "--kind", "audit", "--json"]);
    let run: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    let labels: Vec<&str> = run["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["plugin"] == "audit-report")
        .map(|f| f["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["report:overview", "audit:scores"], "{run}");
    let scores = run["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["label"] == "audit:scores")
        .unwrap();
    assert_eq!(scores["data"]["answer"]["acoustics"], 1);
    assert_eq!(model.requests().len(), 2);
}

/// README "Analysing with a model", word for word, from a working directory
/// with the default configuration (the embedded PostgreSQL): first with no
/// model server (the commands work and say what was skipped and why), then
/// with one (set by environment, as an `assay.toml` would).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_walkthrough_with_and_without_a_model() {
    let work = crate::as_used::Workdir::new();
    crate::support::copy_dir(&workspace().join("examples"), &work.path().join("examples"));
    let run = |cmd: &mut std::process::Command| {
        let out = cmd.output().unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        assert_eq!(out.status.code(), Some(0), "{cmd:?}: {stderr}");
        (stdout, stderr)
    };
    run(work.assay().args(["prompts", "import", "examples/prompts"]));
    let (_, stderr) = run(work.assay().args([
        "analyze",
        "examples/audits",
        "examples/interviews",
        "--kind",
        "audit",
    ]));
    assert!(
        stderr.contains("skipped audit-report for 3 documents: needs a language model")
            && stderr.contains("inference.base_url"),
        "{stderr}"
    );
    let (_, stderr) = run(work.assay().args(["findings", "--label", "report:"]));
    assert!(stderr.contains("no findings stored match"), "{stderr}");

    // With a model server. One document at a time, so the scripted answers
    // meet their prompts in order (part 1 by name, then part 2).
    let model = FakeModel::start().await;
    let with_model = || {
        let mut cmd = work.assay();
        cmd.env("ASSAY__INFERENCE__BASE_URL", &model.url)
            .env("ASSAY__INFERENCE__DEFAULT_MODEL", "local-model");
        cmd
    };
    let audits = "examples/audits/scenario=design-audit";
    model.script([
        Scripted::answer(
            r#"{"checks": [{"requirement": "hearing loop", "met": true, "note": "tested"}]}"#,
            90,
            20,
        ),
        Scripted::answer(
            r#"{"issues": [{"area": "lobby", "problem": "lift signage hidden", "severity": "medium"}]}"#,
            90,
            20,
        ),
        Scripted::answer("The lobby is dim and the lift signs are hard to find.", 80, 12),
        Scripted::answer("1. Move the lift signs in front of the pillar.", 95, 10),
    ]);
    run(with_model().args([
        "analyze",
        &format!("{audits}/report_type=compliance"),
        "--kind",
        "audit",
    ]));
    run(with_model().args([
        "analyze",
        &format!("{audits}/report_type=summary"),
        "--kind",
        "audit",
    ]));
    let (stdout, _) = run(work.assay().args(["findings", "--label", "report:"]));
    assert!(
        stdout.contains("report:overview") && stdout.contains("lift signs"),
        "{stdout}"
    );
    let (stdout, _) = run(work
        .assay()
        .args(["findings", "--label", "audit:", "--json"]));
    let audits: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(audits.len(), 2, "{stdout}");
    for finding in &audits {
        assert_eq!(finding["plugin"], "audit-report");
        assert_eq!(finding["data"]["model"], "local-model");
        assert!(
            finding["data"]["prompt_version"].as_i64().is_some(),
            "{finding}"
        );
        assert_eq!(finding["plugin_sha256"].as_str().unwrap().len(), 64);
    }
    assert!(
        audits
            .iter()
            .any(|f| f["data"]["answer"]["checks"][0]["met"] == true),
        "{stdout}"
    );
    assert_eq!(model.requests().len(), 4);
}
