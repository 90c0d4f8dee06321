//! The `sql` interface from a plugin's side: typed parameters and values, errors
//! a plugin can tell apart, operator grants, the connection budget, idle
//! connections, and dropping a plugin's database access.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use assay::config::PluginGrants;
use assay::pipeline::Pipeline;
use assay::registry::Registry;
use assay::runtime::Runtime;
use serde_json::json;

use crate::sandbox::Sandbox;
use crate::support::doc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_parameters_and_values_round_trip() {
    let sandbox = Sandbox::with(|_| {}).await;
    let script = r#"params [{"null":null},{"boolean":true},{"int":7},{"int":70000},{"int":9000000000},{"float":1.5},{"float":2.25},{"numeric":"12.50"},{"text":"héllo"},{"text":"v"},{"bytes":[0,1,255]},{"json":"{\"a\":[1,2]}"},{"json":"{\"b\":null}"},{"uuid":"6f1c2a8e-0000-4000-8000-000000000001"},{"timestamptz":1700000000000000},{"timestamp":1700000000000000},{"date":19000},{"text-array":["a",null,"c"]},{"int-array":[1,null,3]}] SELECT $1::int4 AS n, $2::bool AS b, $3::int2 AS i2, $4::int4 AS i4, $5::int8 AS i8, $6::float4 AS f4, $7::float8 AS f8, $8::numeric AS num, $9::text AS t, $10::varchar AS v, $11::bytea AS by, $12::json AS j, $13::jsonb AS jb, $14::uuid AS u, $15::timestamptz AS tz, $16::timestamp AS ts, $17::date AS d, $18::text[] AS ta, $19::int4[] AS ia"#;
    let (report, steps) = sandbox.run(script).await;
    assert!(
        steps[0].ok && steps[0].rows.is_array(),
        "{:?} {:?}",
        steps[0],
        report.findings
    );
    assert_eq!(
        steps[0].rows,
        json!([[
            null, true, 7, 70000, 9_000_000_000_i64, 1.5, 2.25, {"numeric": "12.50"}, "héllo", "v",
            {"bytes": [0, 1, 255]}, {"json": {"a": [1, 2]}}, {"json": {"b": null}},
            "6f1c2a8e-0000-4000-8000-000000000001", 1_700_000_000_000_000_i64, 1_700_000_000_000_000_i64,
            19000, ["a", null, "c"], [1, null, 3]
        ]])
    );
    let columns: Vec<(String, String)> = serde_json::from_value(steps[0].columns.clone()).unwrap();
    let names: Vec<&str> = columns.iter().map(|(n, _)| n.as_str()).collect();
    let types: Vec<&str> = columns.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(names[..4], ["n", "b", "i2", "i4"]);
    assert_eq!(
        types,
        [
            "int4",
            "bool",
            "int2",
            "int4",
            "int8",
            "float4",
            "float8",
            "numeric",
            "text",
            "varchar",
            "bytea",
            "json",
            "jsonb",
            "uuid",
            "timestamptz",
            "timestamp",
            "date",
            "_text",
            "_int4"
        ]
    );

    // Values the server makes itself decode exactly too.
    let (_, steps) = sandbox
        .run(
            "query SELECT 12345678901234567890.123456789::numeric, -0.5::numeric, 'NaN'::numeric, \
             '2024-03-01 12:00:00+00'::timestamptz, '2024-03-01'::date, ARRAY['x', NULL]::varchar[], 1e300::float8",
        )
        .await;
    assert_eq!(
        steps[0].rows,
        json!([[
            {"numeric": "12345678901234567890.123456789"}, {"numeric": "-0.5"}, {"numeric": "NaN"},
            1_709_294_400_000_000_i64, 19783, ["x", null], 1e300
        ]])
    );

    // Text goes to any type as a literal; numbers into numeric stay exact.
    let (_, steps) = sandbox
        .run(r#"params [{"text":"2024-03-01"},{"int":5},{"float":0.1}] SELECT $1::date, $2::numeric, $3::numeric"#)
        .await;
    assert_eq!(
        steps[0].rows,
        json!([[19783, {"numeric": "5"}, {"numeric": "0.1"}]])
    );

    // Mismatches are explained, not guessed at.
    let (_, steps) = sandbox
        .run("params [{\"int\":70000}] SELECT $1::int2\nparams [{\"boolean\":true}] SELECT $1::int4\nparams [] SELECT $1::int4")
        .await;
    assert_eq!(
        (steps[0].kind.as_str(), steps[0].code.as_str()),
        ("db", "42804")
    );
    assert!(
        steps[0].message.contains("does not fit in int2"),
        "{:?}",
        steps[0]
    );
    assert!(steps[1].message.contains("expects int4"), "{:?}", steps[1]);
    assert!(
        steps[2].message.contains("1 parameters but 0 values"),
        "{:?}",
        steps[2]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_can_tell_a_unique_violation_from_a_timeout_from_a_denial() {
    let sandbox = Sandbox::with(|c| c.limits.statement_timeout_ms = 300).await;
    let (_, steps) = sandbox
        .run(
            "exec CREATE TABLE IF NOT EXISTS once (id int PRIMARY KEY)\nexec INSERT INTO once VALUES (1)\n\
             exec INSERT INTO once VALUES (1)",
        )
        .await;
    assert!(steps[0].ok && steps[1].ok, "{steps:?}");
    assert_eq!(
        (steps[2].kind.as_str(), steps[2].code.as_str()),
        ("db", "23505"),
        "{:?}",
        steps[2]
    );

    let (_, steps) = sandbox
        .run("query SELECT count(*) FROM generate_series(1, 500000000)")
        .await;
    assert_eq!(steps[0].kind, "timeout", "{:?}", steps[0]);

    let (_, steps) = sandbox.run("exec SET statement_timeout = 0").await;
    assert_eq!(steps[0].kind, "denied", "{:?}", steps[0]);
    assert!(
        steps[0].message.contains("SET is not allowed"),
        "{:?}",
        steps[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_grants_are_applied_and_revoked() {
    let sandbox = Sandbox::with(|c| {
        c.plugins.grants.insert(
            "attacker".into(),
            PluginGrants {
                read: vec!["assay.documents".into()],
                write: vec![],
            },
        );
    })
    .await;
    let (_, steps) = sandbox
        .run("query SELECT count(*) >= 0 FROM assay.documents\nexec DELETE FROM assay.documents")
        .await;
    assert_eq!(
        steps[0].rows,
        json!([[true]]),
        "read was granted: {:?}",
        steps[0]
    );
    assert_eq!(steps[1].code, "42501", "write was not: {:?}", steps[1]);

    // The configuration changes (the grant is gone): loading applies the change.
    let mut config = sandbox.engine.config.clone();
    config.plugins.grants.clear();
    let runtime = Arc::new(Runtime::new(&Default::default(), None).unwrap());
    let registry = Arc::new(
        Registry::load(&runtime, &config, &sandbox.engine.db)
            .await
            .unwrap(),
    );
    let pipeline = Pipeline::new(runtime, registry, sandbox.engine.db.clone(), &config);
    let report = pipeline
        .run(doc(
            "after",
            "attack",
            "query SELECT count(*) FROM assay.documents",
        ))
        .await
        .unwrap();
    let step = report
        .findings
        .iter()
        .find(|f| f.plugin == "attacker")
        .unwrap();
    assert_eq!(
        step.data["error"]["code"],
        json!("42501"),
        "{:?}",
        step.data
    );

    // Grants that cannot be honoured refuse the plugin, with the reason.
    for (table, write, words) in [
        ("assay.nope", false, "not a table or view"),
        ("assay.plugin_roles", false, "never granted"),
        ("assay.plugin_state", false, "never granted"),
        ("assay.provisioning", false, "never granted"),
        ("documents", false, "schema.table"),
        // Writing a table lets a role LOCK it: never one of the engine's.
        ("assay.documents", true, "may only read"),
        ("assay.findings", true, "may only read"),
    ] {
        let mut config = sandbox.engine.config.clone();
        let names = vec![table.to_string()];
        config.plugins.grants.insert(
            "attacker".into(),
            if write {
                PluginGrants {
                    read: vec![],
                    write: names,
                }
            } else {
                PluginGrants {
                    read: names,
                    write: vec![],
                }
            },
        );
        let runtime = Arc::new(Runtime::new(&Default::default(), None).unwrap());
        let registry = Registry::load(&runtime, &config, &sandbox.engine.db)
            .await
            .unwrap();
        assert!(registry.plugins().iter().all(|p| p.name() != "attacker"));
        let problem = registry
            .problems
            .iter()
            .find(|p| p.message.contains("attacker"))
            .unwrap();
        assert!(problem.message.contains(words), "{table}: {problem}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_granted_to_public() {
    let sandbox = Sandbox::with(|_| {}).await;
    let client = sandbox.engine.test_db.client().await;
    let row = client
        .query_one(
            "SELECT has_database_privilege('public', current_database(), 'TEMPORARY'),
                    has_database_privilege('public', current_database(), 'CONNECT'),
                    has_database_privilege('public', current_database(), 'CREATE'),
                    has_schema_privilege('public', 'public', 'CREATE'),
                    has_schema_privilege('public', 'public', 'USAGE'),
                    has_schema_privilege('public', 'assay', 'USAGE'),
                    has_language_privilege('public', 'plpgsql', 'USAGE')",
            &[],
        )
        .await
        .unwrap();
    for i in 0..7 {
        assert!(!row.get::<_, bool>(i), "PUBLIC still holds privilege {i}");
    }
    let defaults: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_default_acl d CROSS JOIN LATERAL aclexplode(d.defaclacl) a
             WHERE d.defaclobjtype = 'f' AND a.grantee = 0 AND a.privilege_type = 'EXECUTE'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(defaults, 0, "new functions are not executable by PUBLIC");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_must_fit_the_server_and_idle_connections_are_reaped() {
    let sandbox = Sandbox::with(|c| c.sandbox.idle_timeout_ms = 300).await;
    let mut config = sandbox.engine.config.clone();
    config.sandbox.connection_budget = 1_000;
    let runtime = Arc::new(Runtime::new(&Default::default(), None).unwrap());
    let err = Registry::load(&runtime, &config, &sandbox.engine.db)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("lower `sandbox.connection_budget`"),
        "{err}"
    );

    sandbox.run("query SELECT 1").await;
    let client = sandbox.engine.test_db.client().await;
    let count = || async {
        client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = $1",
                &[&sandbox.role],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    assert_eq!(
        count().await,
        1,
        "the pool keeps its connection for the next call"
    );
    let mut left = 1;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        left = count().await;
        if left == 0 {
            break;
        }
    }
    assert_eq!(
        left, 0,
        "an idle plugin connection is closed after sandbox.idle_timeout_ms"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_plugin_takes_its_access_and_purge_its_data() {
    let sandbox = Sandbox::with(|_| {}).await;
    sandbox
        .run("exec CREATE TABLE IF NOT EXISTS keep (a int)\nstate-set s k 1")
        .await;
    let client = sandbox.engine.test_db.client().await;
    let dir = crate::support::shared_tempdir();
    let assay = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_assay"))
            .current_dir(dir.path())
            .env("DATABASE_URL", &sandbox.engine.test_db.url)
            .env("ASSAY_CONFIG", dir.path().join("none.toml"))
            .args(args)
            .output()
            .unwrap()
    };
    let out = assay(&["plugins", "drop", "attacker"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row = client
        .query_one(
            "SELECT rolcanlogin, to_regclass('plugin_attacker.keep') IS NOT NULL,
                    (SELECT count(*) FROM plugin_attacker.assay_state)
             FROM pg_roles WHERE rolname = $1",
            &[&sandbox.role],
        )
        .await
        .unwrap();
    assert!(!row.get::<_, bool>(0), "the role can no longer log in");
    assert!(row.get::<_, bool>(1), "its tables stay");
    assert_eq!(row.get::<_, i64>(2), 1, "its state stays");

    let out = assay(&["plugins", "drop", "attacker", "--purge"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM pg_roles WHERE rolname = $1), to_regnamespace('plugin_attacker') IS NULL,
                    to_regclass('plugin_attacker.assay_state') IS NULL",
            &[&sandbox.role],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 0, "the role is gone");
    assert!(row.get::<_, bool>(1), "the schema is gone");
    assert!(row.get::<_, bool>(2), "the state is gone");

    let out = assay(&["plugins", "drop", "nobody"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no plugin named nobody"));
}

/// What the `attacker` plugin did with `script` (one document, one call):
/// a step per line, each `ok` with rows or with an `error`.
async fn attacker_steps(pipeline: &Pipeline, id: &str, script: &str) -> Vec<serde_json::Value> {
    let report = pipeline.run(doc(id, "attack", script)).await.unwrap();
    report
        .findings
        .into_iter()
        .filter(|f| f.plugin == "attacker")
        .map(|f| f.data)
        .collect()
}

/// The statement a start-up warning asks a superuser to run.
fn superusers_statement(warning: &str) -> String {
    warning
        .split_once("As a superuser, run: ")
        .unwrap()
        .1
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_role_with_only_createrole_is_enough() {
    let test_db = crate::support::fresh_database_with_unprivileged_owner().await;
    let dir = crate::support::shared_tempdir();
    std::fs::write(
        dir.path().join("attacker.wasm"),
        crate::support::built_plugin("attacker.wasm"),
    )
    .unwrap();
    let mut config = assay::config::Config::default();
    config.plugins.dir = dir.path().to_path_buf();
    let db = Arc::new(
        assay::db::Database::open_with(test_db.config.clone(), &config.database)
            .await
            .unwrap(),
    );
    let runtime = Arc::new(Runtime::new(&Default::default(), None).unwrap());
    let registry = Arc::new(Registry::load(&runtime, &config, &db).await.unwrap());
    assert!(registry.problems.is_empty(), "{:?}", registry.problems);
    // Only the language, the large-object functions and pg_trgm's functions
    // are out of reach (they belong to the superuser); that is reported,
    // each with what to run.
    let warnings = registry.warnings.clone();
    assert_eq!(warnings.len(), 3, "{warnings:?}");
    assert!(
        warnings[0].contains("plpgsql")
            && warnings[1].contains("lo_create")
            && warnings[2].contains("pg_trgm")
            && warnings[2].contains("not installed"),
        "{warnings:?}"
    );

    let pipeline = Pipeline::new(Arc::clone(&runtime), registry, Arc::clone(&db), &config);
    let mut grouped = doc("a", "chat", "The router failed again.");
    grouped.metadata.insert("group".into(), json!("g"));
    let report = pipeline.run(grouped).await.unwrap();
    assert_eq!(report.status, "ok", "{:?}", report.plugins);
    let steps = attacker_steps(
        &pipeline,
        "b",
        "query SELECT current_user::text\nquery SELECT count(*) FROM assay.documents\nexec SET ROLE NONE",
    )
    .await;
    assert!(
        steps[0]["rows"][0][0]
            .as_str()
            .unwrap()
            .ends_with("_attacker"),
        "{steps:?}"
    );
    assert_eq!(steps[1]["error"]["code"], json!("42501"), "{steps:?}");
    assert_eq!(steps[2]["error"]["kind"], json!("denied"), "{steps:?}");
    // pg_trgm is a trusted extension: this role may create it, but its
    // functions then belong to the bootstrap superuser, and revoking them
    // from PUBLIC does nothing. So it must not be offered as it is:
    // `set_limit` (it changes a session setting) must not be callable.
    let steps = attacker_steps(
        &pipeline,
        "c",
        "query SELECT assay_extensions.set_limit(0.9)::text",
    )
    .await;
    assert!(steps[0]["error"].is_object(), "{steps:?}");

    // A superuser does what the warning says; at the next start pg_trgm is
    // offered, and its plugin-facing functions are exactly the two listed.
    let superuser = assay_testing::superuser_client(&test_db).await;
    superuser
        .batch_execute(&superusers_statement(&warnings[2]))
        .await
        .unwrap();
    let registry = Arc::new(Registry::load(&runtime, &config, &db).await.unwrap());
    assert_eq!(registry.warnings.len(), 2, "{:?}", registry.warnings);
    let pipeline = Pipeline::new(Arc::clone(&runtime), registry, Arc::clone(&db), &config);
    let steps = attacker_steps(
        &pipeline,
        "d",
        "query SELECT assay_extensions.similarity('fire door', 'fire doors')::text\nquery SELECT assay_extensions.set_limit(0.9)::text",
    )
    .await;
    assert_eq!(steps[0]["ok"], json!(true), "{steps:?}");
    assert_eq!(steps[1]["error"]["code"], json!("42501"), "{steps:?}");

    // Later a function of it becomes executable by PUBLIC again (an upgrade
    // of the extension adds one, or a mistake by hand), which this role
    // cannot revoke: at the next start the whole schema is closed to
    // PUBLIC, until a superuser does what the warning says.
    superuser
        .batch_execute("GRANT EXECUTE ON FUNCTION assay_extensions.show_trgm(text) TO PUBLIC")
        .await
        .unwrap();
    let similarity = "query SELECT assay_extensions.similarity('fire door', 'fire doors')::text";
    let restart = async || {
        let registry = Arc::new(Registry::load(&runtime, &config, &db).await.unwrap());
        let warnings = registry.warnings.clone();
        let pipeline = Pipeline::new(Arc::clone(&runtime), registry, Arc::clone(&db), &config);
        let steps = attacker_steps(&pipeline, "e", similarity).await;
        (warnings, steps[0].clone())
    };
    let (warnings, step) = restart().await;
    assert_eq!(warnings.len(), 3, "{warnings:?}");
    assert!(
        warnings[2].contains("show_trgm") && warnings[2].contains("use of schema"),
        "{warnings:?}"
    );
    assert_eq!(step["error"]["code"], json!("42501"), "{step:?}");
    superuser
        .batch_execute(&superusers_statement(&warnings[2]))
        .await
        .unwrap();
    let (warnings, step) = restart().await;
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert_eq!(step["ok"], json!(true), "{step:?}");
}

/// The end-of-call reset used with the gate on leaves nothing a plugin's
/// session can hold, except the statements the host itself prepared (kept on
/// purpose). Temporary objects are not among them: plugin roles cannot create
/// any (see the attack tests).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_reset_clears_everything_but_the_hosts_statements() {
    let db = crate::support::fresh_database().await;
    let client = db.client().await;
    let kept = client.prepare("SELECT 41 + $1::int").await.unwrap();
    client
        .batch_execute(
            "SET search_path = pg_temp; SET application_name = 'left-behind';
             LISTEN left_behind;
             SELECT pg_advisory_lock(42);
             CREATE SEQUENCE left_behind_seq; SELECT nextval('left_behind_seq');
             BEGIN; DECLARE left_behind CURSOR WITH HOLD FOR SELECT 1; COMMIT;",
        )
        .await
        .unwrap();
    client.batch_execute("BEGIN; SELECT 1").await.unwrap();
    let (ended, reset) = futures::join!(
        client.batch_execute("COMMIT"),
        client.batch_execute(assay::capability::sql::session::SESSION_RESET)
    );
    ended.unwrap();
    reset.unwrap();

    let one = |sql: &'static str| {
        let client = &client;
        async move { client.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    assert_eq!(one("SELECT count(*) FROM pg_listening_channels()").await, 0);
    assert_eq!(
        one("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()")
            .await,
        0
    );
    assert_eq!(
        one("SELECT count(*) FROM pg_cursors WHERE name = 'left_behind'").await,
        0
    );
    let currval = client
        .query_one("SELECT currval('left_behind_seq')", &[])
        .await
        .expect_err("the sequence's session value is gone");
    assert_eq!(
        currval.code(),
        Some(&tokio_postgres::error::SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE)
    );
    let settings = client
        .query_one(
            "SELECT current_setting('search_path'), current_setting('application_name')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(settings.get::<_, String>(0), "\"$user\", public");
    assert_ne!(settings.get::<_, String>(1), "left-behind");
    // The host's prepared statement survives for the next call.
    let row = client.query_one(&kept, &[&1i32]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
}
