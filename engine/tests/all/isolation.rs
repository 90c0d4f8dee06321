//! Each plugin's database objects are its alone. Plugin names that collide
//! once turned into database names are refused; nothing that exists is taken
//! over; no engine object can be locked or used by a plugin role (every
//! privilege and every lock mode tried); state is bounded and private; and a
//! plugin's migrations are contained like its calls (gate, statement timeout,
//! deadline), with the role's password and settings set back afterwards.
//! The plugins are the `attacker` test plugin under other names and with
//! other migrations (`support::attacker_as`).

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;

use assay::registry::{PluginLoader, PluginSource, RegisterError};
use serde_json::json;

use crate::sandbox::Sandbox;
use crate::support::{TestEngine, attacker_as, column, doc, engine_loading, fresh_database};

/// Loads `bytes` into a running engine's database as a new version: `Ok` or
/// the reason it was refused.
async fn register(engine: &TestEngine, file: &str, bytes: &[u8]) -> Result<(), String> {
    let loader = PluginLoader::new(
        Arc::clone(&engine.runtime),
        Arc::clone(&engine.db),
        engine.config.clone(),
    )
    .await
    .unwrap();
    let plugin = loader.compile(bytes).await.map_err(|e| e.to_string())?;
    match loader
        .register(PluginSource::File(PathBuf::from(file)), plugin, bytes)
        .await
    {
        Ok(_) => Ok(()),
        Err(RegisterError::Refused(message)) => Err(message),
        Err(RegisterError::Db(e)) => panic!("database error: {e}"),
    }
}

async fn one_value(client: &tokio_postgres::Client, sql: &str) -> Option<String> {
    client
        .query_opt(sql, &[])
        .await
        .unwrap()
        .and_then(|row| row.get::<_, Option<String>>(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_that_collide_in_the_database_are_refused() {
    let victim = attacker_as("victim-x", &["CREATE TABLE secrets (v text)"]);
    let (engine, _dir) =
        engine_loading(fresh_database().await, &[("victim.wasm", victim)], |_| {}).await;
    assert!(
        engine.registry.problems.is_empty(),
        "{:?}",
        engine.registry.problems
    );
    let report = engine
        .pipeline
        .run(doc(
            "v",
            "attack",
            "exec INSERT INTO secrets VALUES ('mine')",
        ))
        .await
        .unwrap();
    assert_eq!(report.status, "ok", "{:?}", report.findings);
    let client = engine.test_db.client().await;
    let victim_role = one_value(
        &client,
        "SELECT role_name FROM assay.plugin_roles WHERE plugin = 'victim-x'",
    )
    .await
    .unwrap();

    // The same name once `-` and `_` are alike, in a running engine and at a start.
    let refused = register(&engine, "impostor.wasm", &attacker_as("victim_x", &[]))
        .await
        .expect_err("a colliding name is refused");
    assert!(
        refused.contains("maps to the database schema plugin_victim_x")
            && refused.contains("`victim-x`"),
        "{refused}"
    );
    let (restarted, _dir2) = engine_loading(
        engine.test_db.clone(),
        &[
            (
                "a-victim.wasm",
                attacker_as("victim-x", &["CREATE TABLE secrets (v text)"]),
            ),
            ("b-impostor.wasm", attacker_as("victim_x", &[])),
        ],
        |_| {},
    )
    .await;
    assert_eq!(restarted.registry.plugins().len(), 1);
    assert!(
        restarted.registry.problems[0]
            .message
            .contains("maps to the database schema plugin_victim_x"),
        "{:?}",
        restarted.registry.problems
    );

    // Nothing of the victim's changed hands, and purging the impostor's name
    // touches none of it.
    assert_eq!(
        one_value(
            &client,
            "SELECT pg_get_userbyid(nspowner)::text FROM pg_namespace WHERE nspname = 'plugin_victim_x'"
        )
        .await
        .as_deref(),
        Some(victim_role.as_str())
    );
    assert_eq!(
        one_value(
            &client,
            "SELECT pg_get_userbyid(relowner)::text FROM pg_class WHERE relname = 'secrets'"
        )
        .await
        .as_deref(),
        Some(victim_role.as_str())
    );
    assert!(
        !assay::capability::sql::sandbox::drop_plugin(&engine.db, "victim_x", true)
            .await
            .unwrap(),
        "the impostor has nothing to drop"
    );
    assert_eq!(
        one_value(&client, "SELECT v FROM plugin_victim_x.secrets")
            .await
            .as_deref(),
        Some("mine")
    );
    let report = engine
        .pipeline
        .run(doc("v2", "attack", "query SELECT v FROM secrets"))
        .await
        .unwrap();
    assert_eq!(report.findings[0].data["rows"], json!([["mine"]]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_that_exists_is_taken_over() {
    let test_db = fresh_database().await;
    let client = test_db.client().await;
    client
        .batch_execute(
            "CREATE SCHEMA plugin_squatter; CREATE TABLE plugin_squatter.data (x int);
             INSERT INTO plugin_squatter.data VALUES (1)",
        )
        .await
        .unwrap();
    let tag_role = |plugin: &str| {
        format!("SELECT 'assay_' || substr(md5(current_database()), 1, 6) || '_{plugin}'")
    };
    let impostor_role = one_value(&client, &tag_role("impostor")).await.unwrap();
    client
        .batch_execute(&format!("CREATE ROLE \"{impostor_role}\" NOLOGIN"))
        .await
        .unwrap();
    let longest = "l".repeat(50);
    let (engine, _dir) = engine_loading(
        test_db,
        &[
            ("squatter.wasm", attacker_as("squatter", &[])),
            ("impostor.wasm", attacker_as("impostor", &[])),
            (
                "public.wasm",
                attacker_as("public", &["CREATE TABLE mine (a int)"]),
            ),
            (
                "longest.wasm",
                attacker_as(&longest, &["CREATE TABLE mine (a int)"]),
            ),
            ("too-long.wasm", attacker_as(&"t".repeat(51)[..], &[])),
        ],
        |_| {},
    )
    .await;
    let problem = |file: &str| {
        engine
            .registry
            .problems
            .iter()
            .find(|p| p.source.ends_with(file))
            .map(|p| p.message.clone())
            .unwrap_or_else(|| panic!("{file} was not refused: {:?}", engine.registry.problems))
    };
    let squatted = problem("squatter.wasm");
    assert!(
        squatted.contains("schema plugin_squatter already exists and was not created by assay"),
        "{squatted}"
    );
    let impostor = problem("impostor.wasm");
    assert!(
        impostor.contains(&format!("database role {impostor_role} already exists")),
        "{impostor}"
    );
    assert!(problem("too-long.wasm").contains("1–50 characters"));
    // What was there is as it was.
    assert_eq!(
        one_value(
            &client,
            "SELECT pg_get_userbyid(relowner)::text || '/' || pg_get_userbyid(n.nspowner)::text
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE relname = 'data'"
        )
        .await
        .as_deref(),
        Some("assay/assay")
    );
    assert_eq!(
        one_value(
            &client,
            "SELECT pg_get_userbyid(nspowner)::text FROM pg_namespace WHERE nspname = 'public'"
        )
        .await
        .as_deref(),
        Some("pg_database_owner")
    );
    // The name of an existing schema, and the longest name, get schemas of their own.
    assert!(engine.registry.get("public").is_some());
    let longest_role = one_value(
        &client,
        &format!("SELECT role_name FROM assay.plugin_roles WHERE plugin = '{longest}'"),
    )
    .await
    .unwrap();
    assert_eq!(longest_role.len(), 63, "the longest role name fits exactly");
    assert_eq!(
        one_value(
            &client,
            &format!("SELECT relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE nspname = 'plugin_{longest}' AND relname = 'mine'")
        )
        .await
        .as_deref(),
        Some("mine")
    );
}

const LOCK_MODES: [&str; 8] = [
    "ACCESS SHARE",
    "ROW SHARE",
    "ROW EXCLUSIVE",
    "SHARE UPDATE EXCLUSIVE",
    "SHARE",
    "SHARE ROW EXCLUSIVE",
    "EXCLUSIVE",
    "ACCESS EXCLUSIVE",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_engine_object_can_be_used_or_locked_by_a_plugin() {
    let sandbox = Sandbox::with(|c| c.sandbox.statement_gate = false).await;
    let client = sandbox.engine.test_db.client().await;
    let role = &sandbox.role;
    // Every privilege on every object of the engine's schema, as the server sees it.
    let granted: Vec<String> = client
        .query(
            "SELECT c.relname || ': ' || p.privilege
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             CROSS JOIN unnest(CASE WHEN c.relkind = 'S' THEN ARRAY['USAGE', 'SELECT', 'UPDATE']
                 ELSE ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER'] END) p(privilege)
             WHERE n.nspname = 'assay' AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
               AND CASE WHEN c.relkind = 'S' THEN has_sequence_privilege($1, c.oid, p.privilege)
                        ELSE has_table_privilege($1, c.oid, p.privilege) END",
            &[role],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(granted.is_empty(), "the plugin role holds {granted:?}");
    let schema_access: bool = client
        .query_one(
            "SELECT has_schema_privilege($1, 'assay', 'USAGE') OR has_schema_privilege($1, 'assay', 'CREATE')
                 OR has_schema_privilege($1, 'plugin_history', 'USAGE')
                 OR has_database_privilege($1, current_database(), 'CREATE')
                 OR has_database_privilege($1, current_database(), 'TEMPORARY')",
            &[role],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!schema_access);

    // Every lock mode on every engine table, and on another plugin's state.
    let tables: Vec<String> = column(
        &client,
        "SELECT 'assay.' || relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'assay' AND c.relkind IN ('r', 'p')
         UNION ALL SELECT 'plugin_history.assay_state'",
        &[],
    )
    .await;
    assert!(tables.len() >= 10, "{tables:?}");
    // One call each: after a refused statement the rest of a call's
    // transaction would fail for that reason alone.
    for table in &tables {
        for mode in LOCK_MODES {
            let (_, steps) = sandbox
                .run(&format!("exec LOCK TABLE {table} IN {mode} MODE NOWAIT"))
                .await;
            assert!(
                !steps[0].ok && steps[0].code == "42501",
                "{table} IN {mode} MODE: {:?}",
                steps[0]
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_holding_its_own_state_locked_holds_up_no_one_else() {
    let sandbox = Arc::new(
        Sandbox::with(|c| {
            c.sandbox.statement_gate = false;
            c.limits.call_timeout_ms = 4_000;
        })
        .await,
    );
    // The attacker locks what it may lock, as hard as it can, and keeps it.
    let holder = {
        let sandbox = Arc::clone(&sandbox);
        tokio::spawn(async move {
            sandbox
                .run("exec LOCK TABLE assay_state IN ACCESS EXCLUSIVE MODE\nstate-set s k 1\nloop")
                .await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    // Meanwhile other plugins' state works, and a new plugin can be set up.
    for i in 0..3 {
        let mut d = doc(
            &format!("bystander-{i}"),
            "chat",
            "The router failed again.",
        );
        d.metadata.insert("group".into(), json!("bystanders"));
        let report = sandbox.engine.pipeline.run(d).await.unwrap();
        assert_eq!(report.status, "ok", "{:?}", report.plugins);
    }
    register(
        &sandbox.engine,
        "newcomer.wasm",
        &attacker_as("newcomer", &[]),
    )
    .await
    .unwrap();
    let (report, _) = holder.await.unwrap();
    assert_eq!(
        crate::support::outcome(&report, "attacker")
            .error_kind
            .map(|k| k.as_str()),
        Some("timeout")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_is_bounded_and_private() {
    let sandbox = Sandbox::with(|c| c.sandbox.statement_gate = false).await;
    let mut seeded = doc(
        "seed",
        "chat",
        "The router failed again and the refund was late.",
    );
    seeded.metadata.insert("group".into(), json!("victims"));
    sandbox.engine.pipeline.run(seeded).await.unwrap();
    let (_, steps) = sandbox.run("state-set s k {\"a\":1}\nstate-get s k").await;
    assert!(steps[0].ok, "{:?}", steps[0]);
    assert_eq!(steps[1].rows, json!([[{"a": 1}]]), "{:?}", steps[1]);
    for (attempt, code, why) in [
        (
            "exec INSERT INTO assay_state (scope, key, value) VALUES ('s', 'big', to_jsonb(repeat('x', 2000000)))",
            "23514",
            "more than 1 MiB in one value is refused however it is written",
        ),
        (
            "exec ALTER TABLE assay_state DROP CONSTRAINT assay_state_value_check",
            "42501",
            "the limit cannot be dropped",
        ),
        (
            "query SELECT count(*) FROM plugin_history.assay_state",
            "42501",
            "another plugin's state",
        ),
        (
            "exec UPDATE plugin_history.assay_state SET value = '1'",
            "42501",
            "writing another plugin's state",
        ),
        (
            "query SELECT count(*) FROM assay.plugin_state",
            "42501",
            "the old shared table",
        ),
    ] {
        let (_, steps) = sandbox.run(attempt).await;
        assert_eq!(steps[0].code, code, "{why}: {:?}", steps[0]);
    }
    let client = sandbox.engine.test_db.client().await;
    let theirs: i64 = client
        .query_one("SELECT count(*) FROM plugin_history.assay_state", &[])
        .await
        .unwrap()
        .get(0);
    assert!(theirs > 0, "history keeps its state in its own schema");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_in_the_old_shared_table_moves_to_the_plugins_own() {
    let test_db = fresh_database().await;
    let (engine, _dir) = engine_loading(
        test_db,
        &[("attacker.wasm", attacker_as("attacker", &[]))],
        |_| {},
    )
    .await;
    let client = engine.test_db.client().await;
    // Rows an earlier version kept in assay.plugin_state, one past the limit.
    client
        .batch_execute(
            "INSERT INTO assay.plugin_state (plugin, scope, key, value) VALUES
                 ('attacker', 'old', 'kept', '{\"v\": 1}'),
                 ('attacker', 'old', 'huge', to_jsonb(repeat('x', 2000000)))",
        )
        .await
        .unwrap();
    let (restarted, _dir2) = engine_loading(
        engine.test_db.clone(),
        &[("attacker.wasm", attacker_as("attacker", &[]))],
        |_| {},
    )
    .await;
    let report = restarted
        .pipeline
        .run(doc("s", "attack", "state-get old kept\nstate-get old huge"))
        .await
        .unwrap();
    assert_eq!(report.findings[0].data["rows"], json!([[{"v": 1}]]));
    assert_eq!(
        report.findings[1].data["rows"],
        json!([[null]]),
        "never handed over"
    );
    let left: i64 = client
        .query_one("SELECT count(*) FROM assay.plugin_state", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 1, "only the value past the limit stays behind");
}

/// Loads a hostile plugin with `migrations` into an engine with the gate
/// `gate`; the reason it was refused, if it was.
async fn load_migrating(
    engine: &TestEngine,
    name: &str,
    migrations: &[&str],
) -> Result<(), String> {
    register(
        engine,
        &format!("{name}.wasm"),
        &attacker_as(name, migrations),
    )
    .await
}

/// An engine with tight limits, and its plugin directory (kept for as long
/// as the engine: loading into it creates the directory again if it is
/// gone, and nothing would remove it then).
async fn contained_engine(gate: bool) -> (TestEngine, tempfile::TempDir) {
    engine_loading(fresh_database().await, &[], |c| {
        c.sandbox.statement_gate = gate;
        c.limits.call_timeout_ms = 3_000;
        c.limits.statement_timeout_ms = 1_000;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_pass_the_statement_gate() {
    let (engine, _dir) = contained_engine(true).await;
    for (name, migration, words) in [
        ("sleeper", "SELECT pg_sleep(600)", "pg_sleep"),
        (
            "passwd",
            "ALTER ROLE CURRENT_USER PASSWORD 'known-password-1234'",
            "ALTER ROLE",
        ),
        ("setter", "SET statement_timeout = 0", "SET is not allowed"),
        (
            "definer",
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
            "CREATE FUNCTION",
        ),
    ] {
        let refused = load_migrating(&engine, name, &[migration])
            .await
            .expect_err(name);
        assert!(
            refused.contains("refused by the statement gate") && refused.contains(words),
            "{name}: {refused}"
        );
    }
    load_migrating(
        &engine,
        "tidy",
        &["CREATE TABLE notes (id int PRIMARY KEY)"],
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_are_bounded_by_the_plugins_timeouts() {
    let (engine, _dir) = contained_engine(false).await;
    let refused = load_migrating(&engine, "sleeper", &["SELECT pg_sleep(600)"])
        .await
        .expect_err("a sleeping migration");
    assert!(
        refused.contains("statement timeout of 1000 ms (limits.statement_timeout_ms)"),
        "{refused}"
    );
    let refused = load_migrating(
        &engine,
        "untimed",
        &["SET statement_timeout = 0", "SELECT pg_sleep(600)"],
    )
    .await
    .expect_err("a migration that switched its timeout off");
    assert!(
        refused.contains("deadline of 3000 ms (limits.call_timeout_ms"),
        "{refused}"
    );
    let client = engine.test_db.client().await;
    let mut sleeping = 1;
    for _ in 0..50 {
        sleeping = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(600)%' AND pid <> pg_backend_pid()",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0);
        if sleeping == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        sleeping, 0,
        "the migration's statement was cancelled on the server"
    );
    let refused = load_migrating(
        &engine,
        "locker",
        &["LOCK TABLE assay.documents IN ACCESS EXCLUSIVE MODE"],
    )
    .await
    .expect_err("locking an engine table");
    assert!(refused.contains("42501"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_migration_does_to_its_role_is_undone() {
    let (engine, _dir) = contained_engine(false).await;
    load_migrating(
        &engine,
        "resetter",
        &[
            "ALTER ROLE CURRENT_USER SET work_mem = '1GB'",
            "ALTER ROLE CURRENT_USER SET statement_timeout = 0",
            "ALTER ROLE CURRENT_USER PASSWORD 'known-password-1234'",
            "CREATE TABLE notes (id int PRIMARY KEY)",
        ],
    )
    .await
    .expect("the migrations themselves are allowed without the gate");
    let client = engine.test_db.client().await;
    let role = one_value(
        &client,
        "SELECT role_name FROM assay.plugin_roles WHERE plugin = 'resetter'",
    )
    .await
    .unwrap();
    let settings: Vec<String> = column(
        &client,
        "SELECT unnest(setconfig) FROM pg_db_role_setting WHERE setrole = (SELECT oid FROM pg_roles WHERE rolname = $1)",
        &[&role],
    )
    .await;
    assert_eq!(
        settings,
        ["search_path=plugin_resetter", "temp_file_limit=1024MB"],
        "{settings:?}"
    );
    // The password the migration chose no longer logs in.
    let mut direct = engine.test_db.config.clone();
    direct.user(&role).password("known-password-1234");
    let err = direct
        .connect(tokio_postgres::NoTls)
        .await
        .err()
        .expect("the password was set back");
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::INVALID_PASSWORD),
        "{err}"
    );
    // The plugin itself still gets in, with the engine's settings.
    let (reloaded, _dir) = engine_loading(
        engine.test_db.clone(),
        &[(
            "resetter.wasm",
            attacker_as(
                "resetter",
                &[
                    "ALTER ROLE CURRENT_USER SET work_mem = '1GB'",
                    "ALTER ROLE CURRENT_USER SET statement_timeout = 0",
                    "ALTER ROLE CURRENT_USER PASSWORD 'known-password-1234'",
                    "CREATE TABLE notes (id int PRIMARY KEY)",
                ],
            ),
        )],
        |c| {
            c.sandbox.statement_gate = false;
            c.limits.statement_timeout_ms = 1_000;
        },
    )
    .await;
    let report = reloaded
        .pipeline
        .run(doc(
            "r",
            "attack",
            "query SELECT current_setting('work_mem'), current_setting('statement_timeout')",
        ))
        .await
        .unwrap();
    assert_eq!(report.findings[0].data["rows"], json!([["4MB", "1s"]]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_state_table_still_hands_back_no_more_than_the_limit() {
    // Gate on: a schema's owner may drop what is in it.
    let sandbox = Sandbox::with(|_| {}).await;
    let (_, steps) = sandbox
        .run(
            "exec DROP TABLE assay_state\n\
             exec CREATE TABLE assay_state (scope text, key text, value jsonb, updated_at timestamptz DEFAULT now(), PRIMARY KEY (scope, key))\n\
             exec INSERT INTO assay_state (scope, key, value) VALUES ('s', 'big', to_jsonb(repeat('x', 5000000)))\n\
             state-get s big",
        )
        .await;
    assert!(steps[..3].iter().all(|s| s.ok), "{steps:?}");
    assert!(
        !steps[3].ok && steps[3].message.contains("more than the 1048576"),
        "{:?}",
        steps[3]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_plugin_ends_its_running_sessions() {
    let sandbox = Sandbox::with(|_| {}).await;
    let (report, _) = sandbox.run("query SELECT 1").await;
    assert_eq!(crate::support::outcome(&report, "attacker").outcome, "ok");
    // The engine keeps serving while an operator drops the plugin.
    assert!(
        assay::capability::sql::sandbox::drop_plugin(&sandbox.engine.db, "attacker", false)
            .await
            .unwrap()
    );
    let (report, _) = sandbox.run("query SELECT 1").await;
    let attacker = crate::support::outcome(&report, "attacker");
    assert_eq!(
        attacker.error_kind.map(|k| k.as_str()),
        Some("database"),
        "{attacker:?}"
    );
}
