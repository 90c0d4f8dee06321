//! The prompt library as its users meet it: `assay prompts import` of the
//! example tree and of trees with every kind of problem, versions kept, and
//! `GET /v1/prompts`.

// Tests: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Output;

use assay::prompts::{PromptKey, store, tree};
use serde_json::Value;

use crate::support::{fresh_database, shared_tempdir, workspace};

fn examples() -> std::path::PathBuf {
    workspace().join("examples").join("prompts")
}

async fn counts(client: &tokio_postgres::Client) -> (i64, i64) {
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM assay.prompts), (SELECT count(*) FROM assay.prompt_versions)",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test]
async fn importing_is_idempotent_and_a_changed_prompt_is_a_new_version() {
    let test_db = fresh_database().await;
    let db = assay::db::Database::open_with(test_db.config.clone(), &Default::default())
        .await
        .unwrap();
    let client = test_db.client().await;
    let files = tree::read_tree(&examples()).unwrap();
    assert_eq!(files.len(), 9);
    assert_eq!(files.iter().filter(|f| f.json_answer).count(), 4);
    let first = store::import(&db, &files).await.unwrap();
    assert_eq!(
        (first.new_prompts, first.new_versions, first.unchanged),
        (9, 0, 0)
    );
    let again = store::import(&db, &tree::read_tree(&examples()).unwrap())
        .await
        .unwrap();
    assert_eq!(
        (again.new_prompts, again.new_versions, again.unchanged),
        (0, 0, 9)
    );
    assert_eq!(counts(&client).await, (9, 9));

    // A changed text, and a prompt marked JSON from now on: one version each.
    let dir = shared_tempdir();
    crate::support::copy_dir(&examples(), dir.path());
    let part1 = dir.path().join("design-audit/summary/hotel/part1");
    std::fs::write(part1.join("overview.txt"), "Describe the lobby only.\n").unwrap();
    let themes = dir
        .path()
        .join("employee-interview/satisfaction/restaurant/part1");
    std::fs::rename(themes.join("themes.txt"), themes.join("themes.json.txt")).unwrap();
    let changed = store::import(&db, &tree::read_tree(dir.path()).unwrap())
        .await
        .unwrap();
    assert_eq!(
        (changed.new_prompts, changed.new_versions, changed.unchanged),
        (0, 2, 7)
    );
    assert_eq!(counts(&client).await, (9, 11));
    let key = PromptKey::parse("design-audit/summary/hotel/part1/overview").unwrap();
    let history = store::history(&db, &key).await.unwrap();
    assert_eq!(
        history.iter().map(|v| v.version).collect::<Vec<_>>(),
        [1, 2]
    );
    assert!(
        history[0].text.contains("guest rooms"),
        "the first text is kept"
    );
    assert_eq!(history[1].text, "Describe the lobby only.\n");
    assert_ne!(history[0].content_sha256, history[1].content_sha256);
    // Changing it back is another version, not a rewrite of history.
    let back = store::import(&db, &tree::read_tree(&examples()).unwrap())
        .await
        .unwrap();
    assert_eq!(back.new_versions, 2);
    let history = store::history(&db, &key).await.unwrap();
    assert_eq!(history.len(), 3);
    assert_eq!(history[2].content_sha256, history[0].content_sha256);

    // Listed by scenario, report type and building type, in run-part order.
    let hotel = store::list(
        &db,
        &store::Filter {
            scenario: Some("design-audit".into()),
            building_type: Some("hotel".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let names: Vec<String> = hotel
        .iter()
        .map(|p| format!("{}:{}", p.key.run_part, p.key.name))
        .collect();
    assert_eq!(names, ["1:issues", "1:overview", "2:recommendations"]);

    // The same prompt cannot be stored twice, whatever the importer does.
    let twice = client
        .execute(
            "INSERT INTO assay.prompts (scenario, report_type, building_type, run_part, name)
             VALUES ('design-audit', 'summary', 'hotel', 1, 'overview')",
            &[],
        )
        .await;
    assert_eq!(twice.unwrap_err().code().unwrap().code(), "23505");
}

/// A file of a test tree: its path and content.
type TreeFile<'a> = (&'a str, &'a [u8]);

/// Writes `files` (path, content) under a new directory.
fn tree_of(files: &[TreeFile<'_>]) -> tempfile::TempDir {
    let dir = shared_tempdir();
    for (path, content) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    dir
}

fn refused(dir: &Path) -> String {
    match tree::read_tree(dir) {
        Err(e @ tree::TreeError::Malformed { .. }) => e.to_string(),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_malformed_tree_is_refused_whole_naming_each_problem() {
    let good: TreeFile = ("audit/summary/hotel/part1/overview.txt", b"Describe it.");
    let cases: &[(&[TreeFile], &str)] = &[
        (
            &[("Audit/summary/hotel/part1/a.txt", b"x")],
            "\"Audit\" is not a scenario name",
        ),
        (
            &[("audit/summary/hôtel/part1/a.txt", b"x")],
            "is not a building type name",
        ),
        (
            &[("audit/summary/hotel/part01/a.txt", b"x")],
            "part1 … part99",
        ),
        (
            &[("audit/summary/hotel/part0/a.txt", b"x")],
            "part1 … part99",
        ),
        (
            &[("audit/summary/hotel/first/a.txt", b"x")],
            "is not a run part name",
        ),
        (
            &[("audit/summary/hotel/part1/a.md", b"x")],
            "is not a prompt file",
        ),
        (
            &[("audit/summary/hotel/part1/A b.txt", b"x")],
            "is not a prompt name",
        ),
        (
            &[
                ("audit/summary/hotel/part1/a.txt", b"x"),
                ("audit/summary/hotel/part1/a.json.txt", b"y"),
            ],
            "the same prompt as",
        ),
        (&[("audit/summary/hotel/part1/a.txt", b"  \n")], "is empty"),
        (
            &[("audit/summary/hotel/part1/a.txt", b"\xff\xfe")],
            "is not UTF-8",
        ),
        (&[("audit/summary/hotel/part1/a.txt", b"a\0b")], "NUL"),
        (
            &[("audit/summary/notes.txt", b"x")],
            "a building type directory belongs here",
        ),
        (
            &[("audit/summary/hotel/part1/deeper/a.txt", b"x")],
            "only prompt files (.txt) belong",
        ),
    ];
    for (files, expected) in cases {
        let mut all = vec![good];
        all.extend_from_slice(files);
        let dir = tree_of(&all);
        let message = refused(dir.path());
        assert!(message.contains(expected), "{files:?}: {message}");
        assert!(message.contains("nothing of it is stored"), "{message}");
    }
    // Only names starting with `.` are skipped.
    let dir = tree_of(&[
        good,
        ("audit/summary/hotel/part1/.overview.txt.swp", b"\0\0"),
    ]);
    assert_eq!(tree::read_tree(dir.path()).unwrap().len(), 1);
    // Every problem is listed, not just the first.
    let dir = tree_of(&[
        good,
        ("X/summary/hotel/part1/a.txt", b"x"),
        ("audit/summary/hotel/part1/b.txt", b""),
    ]);
    let message = refused(dir.path());
    assert!(
        message.contains("\"X\"") && message.contains("b.txt: is empty"),
        "{message}"
    );
    // Not a directory, or not there.
    assert!(matches!(
        tree::read_tree(&examples().join("nope")),
        Err(tree::TreeError::Root { .. })
    ));
    let file = dir.path().join("audit/summary/hotel/part1/overview.txt");
    assert!(matches!(
        tree::read_tree(&file),
        Err(tree::TreeError::Root { .. })
    ));
    assert!(
        tree::read_tree(tree_of(&[]).path())
            .unwrap_err()
            .to_string()
            .contains("holds no prompts")
    );
}

#[test]
fn fifos_devices_symlinks_and_huge_files_are_refused_without_being_read() {
    let dir = tree_of(&[("audit/summary/hotel/part1/overview.txt", b"Describe it.")]);
    let part = dir.path().join("audit/summary/hotel/part1");
    // A FIFO: opening it would wait for a writer forever.
    nix::unistd::mkfifo(&part.join("fifo.txt"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    // A symlink to a device that never ends, and one out of the tree.
    std::os::unix::fs::symlink("/dev/zero", part.join("zero.txt")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", part.join("passwd.txt")).unwrap();
    std::os::unix::fs::symlink("/", dir.path().join("audit/summary/loop")).unwrap();
    // A sparse file of a gigabyte.
    let huge = std::fs::File::create(part.join("huge.txt")).unwrap();
    huge.set_len(1 << 30).unwrap();
    let message = refused(dir.path());
    for expected in [
        "fifo.txt: is a FIFO (named pipe)",
        "zero.txt: is a symbolic link",
        "passwd.txt: is a symbolic link",
        "loop: is a symbolic link",
        "huge.txt: is 1073741824 bytes; a prompt is at most 262144",
    ] {
        assert!(message.contains(expected), "{expected}: {message}");
    }
}

fn assay(db_url: &str, dir: &Path, args: &[&str]) -> Output {
    crate::cli::assay(Some(db_url), dir)
        .args(args)
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_imports_lists_shows_and_traces_prompts() {
    let db = fresh_database().await;
    let dir = shared_tempdir();
    let tree = examples().display().to_string();
    let out = assay(&db.url, dir.path(), &["prompts", "import", &tree]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout(&out).contains("9 prompts read"), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("9 new, 0 changed"),
        "{}",
        stdout(&out)
    );
    let out = assay(&db.url, dir.path(), &["prompts", "import", &tree]);
    assert!(
        stdout(&out).contains("0 new, 0 changed (a new version each), 9 unchanged"),
        "{}",
        stdout(&out)
    );

    let out = assay(
        &db.url,
        dir.path(),
        &[
            "prompts",
            "list",
            "--scenario",
            "employee-interview",
            "--json",
        ],
    );
    let listed: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(listed.len(), 3);
    assert!(
        listed
            .iter()
            .all(|p| p["scenario"] == "employee-interview" && p["version"] == 1)
    );
    let out = assay(
        &db.url,
        dir.path(),
        &["prompts", "show", "design-audit/summary/hotel/part1/issues"],
    );
    assert!(stdout(&out).contains("\"severity\""), "{}", stdout(&out));
    let out = assay(
        &db.url,
        dir.path(),
        &[
            "prompts",
            "history",
            "design-audit/summary/hotel/part1/issues",
        ],
    );
    assert!(stdout(&out).contains("json"), "{}", stdout(&out));

    // Malformed: refused, the path named, nothing stored, exit code 1.
    let bad = tree_of(&[
        ("audit/summary/hotel/part1/a.txt", b"x"),
        ("audit/summary/Hotel/part1/a.txt", b"x"),
    ]);
    let out = assay(
        &db.url,
        dir.path(),
        &["prompts", "import", &bad.path().display().to_string()],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("audit/summary/Hotel: \"Hotel\" is not a building type name"),
        "{stderr}"
    );
    let client = db.client().await;
    assert_eq!(counts(&client).await, (9, 9));
    let out = assay(
        &db.url,
        dir.path(),
        &["prompts", "show", "no/such/prompt/part1/x"],
    );
    assert_eq!(out.status.code(), Some(1));
    // Asked for a version of a prompt that does not exist: that it does not
    // exist, not "no version 0 (it has 1 to 0)".
    let out = assay(
        &db.url,
        dir.path(),
        &[
            "prompts",
            "show",
            "no/such/prompt/part1/x",
            "--version",
            "0",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("there is no prompt"), "{stderr}");
    let out = assay(&db.url, dir.path(), &["prompts", "show", "not a key"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not name a prompt"));

    // The example tree is not taken for documents when examples/ is analysed.
    let out = crate::cli::assay(Some(&db.url), dir.path())
        .args(["analyze", "--json"])
        .arg(workspace().join("examples"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !stdout(&out).contains("examples/prompts"),
        "prompt files analysed as documents"
    );
}

#[tokio::test]
async fn get_v1_prompts_lists_current_versions_by_filter() {
    let dir = shared_tempdir();
    let (state, _db) =
        crate::support::service_state(dir.path(), |c| c.plugins.bundled = false).await;
    store::import(&state.db, &tree::read_tree(&examples()).unwrap())
        .await
        .unwrap();
    let (status, _, body) =
        crate::support::http(&state, "GET", "/v1/prompts?building_type=restaurant", None).await;
    assert_eq!(status, 200);
    let prompts = body["prompts"].as_array().unwrap();
    assert_eq!(prompts.len(), 3, "{body}");
    assert!(
        prompts
            .iter()
            .all(|p| p["building_type"] == "restaurant" && p["text"].is_string())
    );
    let (status, _, body) =
        crate::support::http(&state, "GET", "/v1/prompts?building=hotel", None).await;
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().contains("building_type"),
        "{body}"
    );
    let (status, _, body) = crate::support::http(&state, "GET", "/v1/prompts", None).await;
    assert_eq!(
        (status, body["prompts"].as_array().unwrap().len()),
        (200, 9)
    );
}

/// An engine with only the `asker` plugin, and the example tree imported.
async fn asker_with_the_example_library() -> (crate::support::TestEngine, tempfile::TempDir) {
    let (engine, dir) = crate::support::engine_loading(
        fresh_database().await,
        &[("asker.wasm", crate::support::built_plugin("asker.wasm"))],
        |_| {},
    )
    .await;
    store::import(&engine.db, &tree::read_tree(&examples()).unwrap())
        .await
        .unwrap();
    (engine, dir)
}

#[tokio::test]
async fn a_plugin_reads_the_library_through_the_host_in_run_part_order() {
    let (engine, _dir) = asker_with_the_example_library().await;
    let mut input = crate::support::doc("audit.txt", "audit", "The lobby is dark.");
    input.metadata = serde_json::json!({
        "ask": "prompts", "scenario": "design-audit", "report_type": "summary", "building_type": "hotel"
    })
    .as_object()
    .cloned()
    .unwrap();
    let report = engine.pipeline.run(input.clone()).await.unwrap();
    let found: Vec<(i64, String, bool)> = report
        .findings
        .iter()
        .map(|f| {
            (
                f.data["part"].as_i64().unwrap(),
                f.data["name"].as_str().unwrap().to_string(),
                f.data["json"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        found,
        [
            (1, "issues".into(), true),
            (1, "overview".into(), false),
            (2, "recommendations".into(), false)
        ]
    );
    // Each names its exact version, as stored.
    let client = engine.test_db.client().await;
    for f in &report.findings {
        let id = f.data["prompt_version"].as_i64().unwrap();
        let text: String = client
            .query_one(
                "SELECT text FROM assay.prompt_versions WHERE id = $1",
                &[&id],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(f.data["text"].as_str().unwrap(), text);
    }
    // Nothing for a selection the library does not have.
    input
        .metadata
        .insert("building_type".into(), "castle".into());
    let report = engine.pipeline.run(input).await.unwrap();
    assert!(report.findings.is_empty());
    assert_eq!(report.plugins[0].outcome, assay::pipeline::Outcome::Ok);
}

/// A finding may name only what its call was given: a prompt version its
/// lookup returned (with that version's hash) and a model that answered it.
/// Anything else is invalid output and nothing of the call is stored; what
/// is stored is traced in `assay.model_findings`.
#[tokio::test]
async fn findings_name_only_the_prompt_versions_and_models_their_call_used() {
    let (engine, _dir) = asker_with_the_example_library().await;
    let client = engine.test_db.client().await;
    let other_version: i64 = client
        .query_one(
            "SELECT version_id FROM assay.current_prompts WHERE building_type = 'restaurant' LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let run = async |claim: serde_json::Value| {
        let mut input = crate::support::doc("audit.txt", "audit", "The lobby is dark.");
        input.metadata = serde_json::json!({
            "ask": "prompts", "scenario": "design-audit", "report_type": "summary",
            "building_type": "hotel", "claim": claim,
        })
        .as_object()
        .cloned()
        .unwrap();
        engine.pipeline.run(input).await.unwrap()
    };
    for (claim, words) in [
        (
            serde_json::json!({"prompt_version": other_version}),
            "did not look up",
        ),
        (
            serde_json::json!({"prompt_version": 99_999_999}),
            "did not look up",
        ),
        (
            serde_json::json!({"prompt_version": "1"}),
            "not a version id",
        ),
        (
            serde_json::json!({"prompt_sha256": "0".repeat(64)}),
            "whose hash is",
        ),
        (
            serde_json::json!({"model": "gpt-4o"}),
            "answered none of this call's requests",
        ),
    ] {
        let report = run(claim.clone()).await;
        let asker = crate::support::outcome(&report, "asker");
        assert_eq!(
            asker.outcome,
            assay::pipeline::Outcome::Failed,
            "{claim}: {asker:?}"
        );
        assert_eq!(
            asker.error_kind,
            Some(assay::runtime::failure::FailureKind::InvalidOutput),
            "{claim}"
        );
        let message = asker.message.as_deref().unwrap_or_default();
        assert!(message.contains(words), "{claim}: {message}");
        assert!(report.findings.is_empty(), "{claim}");
    }
    // What the call was given is accepted, and traced.
    let report = run(serde_json::json!({})).await;
    assert_eq!(report.findings.len(), 3, "{:?}", report.plugins);
    let traced: Vec<(String, String, String)> = client
        .query(
            "SELECT prompt_name, prompt_sha256, plugin_sha256 FROM assay.model_findings
             WHERE run_id = $1 ORDER BY ordinal",
            &[&report.run_id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(traced.len(), 3);
    assert_eq!(traced[0].0, "issues");
    for (f, (_, prompt_sha, plugin_sha)) in report.findings.iter().zip(&traced) {
        assert_eq!(f.data["sha256"].as_str().unwrap(), prompt_sha);
        assert_eq!(&f.plugin_sha256, plugin_sha);
    }
}
