//! `assay bench`: what it prints is computed from what it measured, it covers
//! every level asked for, and it leaves nothing behind in the database.
//! (No timing is asserted: speed is reported, never tested.)

#![allow(clippy::unwrap_used)]

use serde_json::Value;

use crate::cli::assay;
use crate::support::{TestDb, fresh_database, shared_tempdir, workspace};

/// `assay bench ARGS` against `db`, from an empty working directory.
fn bench(db: &TestDb, args: &[&str]) -> std::process::Output {
    let dir = shared_tempdir();
    assay(Some(&db.url), dir.path())
        .arg("bench")
        .args(args)
        .output()
        .unwrap()
}

/// `assay bench ARGS` against `db`, which must fail as a fatal error (exit
/// code 1); what it said on standard error.
fn bench_fails(db: &TestDb, args: &[&str]) -> String {
    let out = bench(db, args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    stderr
}

/// Schemas `assay bench query` makes (its tables', the plugin's) still in `db`.
async fn bench_schemas_left(db: &TestDb) -> i64 {
    db.client()
        .await
        .query_one(
            "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'assay_bench_%' OR nspname = 'plugin_bench_query'",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_query_reports_both_paths_per_level_and_cleans_up() {
    let db = fresh_database().await;
    let out = bench(
        &db,
        &[
            "query",
            "--concurrency",
            "1,3",
            "--requests",
            "60",
            "--rows",
            "500",
            "--warmup",
            "2",
            "--query",
            "all",
            "--reuse-instances",
            "--json",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let queries = report["queries"].as_array().unwrap();
    assert_eq!(
        queries
            .iter()
            .map(|q| q["name"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["point", "join", "update", "read-write"],
        "{report}"
    );
    for query in queries {
        let levels = query["levels"].as_array().unwrap();
        assert_eq!(
            levels
                .iter()
                .map(|l| l["concurrency"].as_u64().unwrap())
                .collect::<Vec<_>>(),
            [1, 3]
        );
        // Read-write runs two statements per request, the others one.
        let statements = query["statements"].as_array().unwrap().len() as f64;
        let writes = query["name"] != "point" && query["name"] != "join";
        for level in levels {
            for path in ["plugin", "reused"] {
                assert_steps(&level[path], statements, writes, path == "reused");
            }
            assert_eq!(level["native"].get("steps"), None, "{level}");
            for path in ["plugin", "reused", "native"] {
                let r = &level[path];
                assert_eq!(r["requests"], 60, "{path}: {r}");
                assert_eq!(r["errors"], 0, "{path}: {r}");
                let recomputed = r["requests"].as_f64().unwrap() / r["seconds"].as_f64().unwrap();
                let throughput = r["throughput_per_s"].as_f64().unwrap();
                assert!((recomputed - throughput).abs() <= 1e-6 * throughput, "{r}");
                let latency = &r["latency"];
                let (p50, p95, p99) = (
                    latency["p50_ms"].as_f64().unwrap(),
                    latency["p95_ms"].as_f64().unwrap(),
                    latency["p99_ms"].as_f64().unwrap(),
                );
                assert!(0.0 < p50 && p50 <= p95 && p95 <= p99, "{latency}");
            }
            let ratio = level["ratio"].as_f64().unwrap();
            let recomputed = level["plugin"]["throughput_per_s"].as_f64().unwrap()
                / level["native"]["throughput_per_s"].as_f64().unwrap();
            assert!((ratio - recomputed).abs() < 1e-9, "{level}");
        }
    }
    assert_eq!(
        queries[3]["statements"].as_array().unwrap().len(),
        2,
        "read-write runs two statements per request"
    );
    assert_eq!(report["rows"], 500);
    assert_eq!(report["requests_per_run"], 60);

    // Its table, and the plugin's database access, are gone.
    assert_eq!(bench_schemas_left(&db).await, 0, "schemas left behind");
}

/// The step breakdown of a plugin path counts what its calls did: every
/// timed call, an instance per call unless reused, one round trip per
/// statement, one more to end a call that wrote (a lone read has nothing to
/// end but an occasional session reset), and times that add up to the call.
fn assert_steps(path: &Value, statements: f64, writes: bool, reused: bool) {
    let steps = &path["steps"];
    let number = |key: &str| {
        steps[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key}: {path}"))
    };
    assert_eq!(number("calls"), 60.0, "{path}");
    let instantiated = number("instantiated");
    if reused {
        assert!(instantiated <= 3.0, "at most one per worker: {path}");
    } else {
        assert_eq!(instantiated, 60.0, "{path}");
        assert!(number("instantiate_us") > 0.0, "{path}");
    }
    assert_eq!(number("round_trips"), statements, "{path}");
    assert_eq!(number("host_calls"), statements, "{path}");
    let ending = number("ending_round_trips");
    if writes {
        assert_eq!(ending, 1.0, "{path}");
    } else {
        assert!(
            ending <= 0.1,
            "a lone read ends without a round trip: {path}"
        );
    }
    assert!(number("on_server_us") > 0.0, "{path}");
    let parts: f64 = [
        "instantiate_us",
        "in_plugin_us",
        "checking_us",
        "waiting_us",
        "on_server_us",
        "in_host_rest_us",
        "ending_us",
        "other_us",
    ]
    .iter()
    .map(|key| number(key))
    .sum();
    let total = number("total_us");
    assert!(
        (parts - total).abs() <= 1e-6 * total,
        "{parts} != {total}: {path}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_that_cannot_run_is_named_and_nothing_is_left() {
    let db = fresh_database().await;
    let stderr = bench_fails(
        &db,
        &[
            "query",
            "--requests",
            "5",
            "--query",
            "SELECT nope FROM {table} WHERE id = $1",
        ],
    );
    assert!(
        stderr.contains("does not prepare") && stderr.contains("nope"),
        "{stderr}"
    );
    assert_eq!(bench_schemas_left(&db).await, 0, "schemas left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_pipeline_stores_the_repeated_corpus_then_deletes_it() {
    let db = fresh_database().await;
    let examples = workspace().join("examples");
    let out = bench(
        &db,
        &[
            "pipeline",
            "--count",
            "13",
            "--json",
            examples.to_str().unwrap(),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["documents"], 13, "{report}");
    assert_eq!(report["corpus_documents"], 14);
    assert_eq!(report["failed_documents"], 0);
    let findings = report["findings"].as_f64().unwrap();
    assert!(findings > 0.0);
    let per_s = report["findings_per_s"].as_f64().unwrap();
    let recomputed = findings / report["seconds"].as_f64().unwrap();
    assert!((per_s - recomputed).abs() <= 1e-6 * per_s, "{report}");
    // Storing is timed apart from the plugins: part of each document's time,
    // at most the wall-clock time of every document in flight at once.
    let storing = report["storing_seconds"].as_f64().unwrap();
    let in_flight = report["concurrency"].as_f64().unwrap();
    assert!(
        storing > 0.0 && storing <= report["seconds"].as_f64().unwrap() * in_flight,
        "{report}"
    );
    let per_storing_s = report["findings_per_storing_s"].as_f64().unwrap();
    assert!(
        (per_storing_s - findings / storing).abs() <= 1e-6 * per_storing_s,
        "{report}"
    );
    assert!(
        (report["findings_per_run"].as_f64().unwrap() - findings / 13.0).abs() < 1e-9,
        "{report}"
    );
    let client = db.client().await;
    let left: i64 = client
        .query_one("SELECT count(*) FROM assay.documents", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "the benchmark's documents were deleted");
}

/// `--duration` takes seconds or a unit, and refuses what is no time at all
/// before touching the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_query_durations_take_units() {
    let db = fresh_database().await;
    let out = bench(
        &db,
        &[
            "query",
            "--concurrency",
            "1",
            "--duration",
            "300ms",
            "--rows",
            "100",
            "--warmup",
            "1",
            "--json",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["duration_s"].as_f64(), Some(0.3), "{report}");

    // Nothing, negative, not a time, or longer than a day (a typing
    // mistake: 1e12 seconds is 31,000 years).
    for bad in ["0s", "-1", "soon", "1e12", "25h"] {
        let out = bench(&db, &["query", &format!("--duration={bad}")]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {stderr}");
        assert!(stderr.contains("--duration"), "{bad}: {stderr}");
    }
}

/// Zero requests, rows or documents is nothing to measure, and a count of
/// documents past 10 million that no run could finish: refused as a usage error
/// naming the option, before touching the database, not reported as every
/// request having failed (nor a panic, nor memory run out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_refuses_counts_of_nothing() {
    let db = fresh_database().await;
    for (command, option, bad) in [
        ("query", "--requests", "0"),
        ("query", "--rows", "0"),
        ("query", "--requests", "-3"),
        ("pipeline", "--count", "0"),
        // Far past anything that could run (each document keeps a sample).
        ("pipeline", "--count", "18446744073709551615"),
        ("pipeline", "--count", "100000000"),
        // More workers than instance slots could be reserved for.
        ("query", "--concurrency", "1,100000"),
        // A pool with no connection, no document in flight.
        ("query", "--pool-size", "0"),
        ("pipeline", "--concurrency", "0"),
    ] {
        let out = bench(&db, &[command, &format!("{option}={bad}")]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{option} {bad}: {stderr}");
        assert!(stderr.contains(option), "{option} {bad}: {stderr}");
        assert!(!stderr.contains("failed"), "{option} {bad}: {stderr}");
    }
}

/// A span too short for any request says so, rather than that every request
/// failed (with no reason).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duration_too_short_for_a_request_says_so() {
    let db = fresh_database().await;
    let stderr = bench_fails(
        &db,
        &[
            "query",
            "--concurrency",
            "1",
            "--duration",
            "1us",
            "--rows",
            "10",
        ],
    );
    assert!(
        stderr.contains("no request") && stderr.contains("--duration"),
        "{stderr}"
    );
    assert!(!stderr.contains("failed"), "{stderr}");
}

/// Starts `assay bench ARGS` against `db`, waits until `started` (a query
/// counting something) is above zero, interrupts it with `signal`, and
/// returns its exit code and standard error.
async fn interrupt_bench(
    db: &TestDb,
    args: &[&str],
    started: &str,
    signal: nix::sys::signal::Signal,
) -> (Option<i32>, String) {
    let dir = shared_tempdir();
    let mut child = assay(Some(&db.url), dir.path())
        .arg("bench")
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let client = db.client().await;
    let patience = std::time::Instant::now();
    loop {
        let seen: i64 = client.query_one(started, &[]).await.unwrap().get(0);
        if seen > 0 {
            break;
        }
        assert!(
            patience.elapsed() < std::time::Duration::from_secs(60),
            "the benchmark never started"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Well into measuring (or storing).
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, signal).unwrap();
    let out = tokio::task::spawn_blocking(move || {
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        (child.wait().unwrap().code(), stderr)
    });
    tokio::time::timeout(std::time::Duration::from_secs(60), out)
        .await
        .expect("the benchmark stops when interrupted")
        .unwrap()
}

/// Ctrl-C or SIGTERM during a benchmark stops it, and it still leaves
/// nothing behind: no table, no plugin schema or role, no stored document.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_bench_stops_and_leaves_nothing_behind() {
    let db = fresh_database().await;
    let (code, stderr) = interrupt_bench(
        &db,
        &[
            "query",
            "--concurrency",
            "2",
            "--duration",
            "120",
            "--rows",
            "200",
        ],
        "SELECT count(*) FROM pg_namespace WHERE nspname = 'plugin_bench_query'",
        nix::sys::signal::Signal::SIGINT,
    )
    .await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert_eq!(
        bench_schemas_left(&db).await,
        0,
        "schemas left behind: {stderr}"
    );
    let client = db.client().await;

    let examples = workspace().join("examples");
    let (code, stderr) = interrupt_bench(
        &db,
        &["pipeline", "--count", "1000000", examples.to_str().unwrap()],
        "SELECT count(*) FROM assay.documents",
        nix::sys::signal::Signal::SIGTERM,
    )
    .await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("interrupted after"), "{stderr}");
    let left: i64 = client
        .query_one("SELECT count(*) FROM assay.documents", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "the benchmark's documents were deleted: {stderr}");
}
