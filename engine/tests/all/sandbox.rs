//! The SQL sandbox, attacked: a malicious plugin (`plugins/testing/attacker`)
//! tries each attack; every attempt must be refused or denied, and afterwards the
//! plugin is still only itself and nothing outside its grants changed. Each
//! attack runs with the statement gate on and with it off, to show that the
//! database privileges hold on their own.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use serde_json::{Value, json};

use crate::support::{TestEngine, built_plugin, doc, engine_with, outcome, shared_tempdir};

/// What one scripted step did.
#[derive(Debug)]
pub(crate) struct Step {
    pub(crate) ok: bool,
    pub(crate) rows: Value,
    pub(crate) columns: Value,
    pub(crate) kind: String,
    pub(crate) code: String,
    pub(crate) message: String,
}

/// What an attack must come to.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Refused by the gate.
    Denied,
    /// Refused by PostgreSQL with this SQLSTATE.
    Code(&'static str),
    /// Refused by PostgreSQL (any error).
    AnyDbError,
    /// Allowed, and harmless (checked afterwards).
    Harmless,
    /// Cut off by a host cap.
    TooLarge,
    /// Cut off by a host cap, or by the statement timeout (or the call's
    /// deadline) if the server is too slow to even produce it (all bound what
    /// the host holds).
    Bounded,
}

struct Attack {
    name: &'static str,
    /// Setup steps (must succeed), then the attack as the last line.
    script: String,
    with_gate: Expect,
    without_gate: Expect,
    /// A query for the plugin's next call (on the same pooled session) and the
    /// value it must return: what the attack tried to leave behind is gone.
    after: Option<(&'static str, Value)>,
}

fn attack(
    name: &'static str,
    script: impl Into<String>,
    with_gate: Expect,
    without_gate: Expect,
) -> Attack {
    Attack {
        name,
        script: script.into(),
        with_gate,
        without_gate,
        after: None,
    }
}

impl Attack {
    fn then(mut self, probe: &'static str, expected: Value) -> Self {
        self.after = Some((probe, expected));
        self
    }
}

pub(crate) struct Sandbox {
    pub(crate) engine: TestEngine,
    pub(crate) role: String,
    history_role: String,
    _dir: tempfile::TempDir,
    runs: AtomicUsize,
}

impl Sandbox {
    async fn new(gate: bool, call_timeout_ms: u64) -> Self {
        Self::with(move |c| {
            c.sandbox.statement_gate = gate;
            c.limits.call_timeout_ms = call_timeout_ms;
        })
        .await
    }

    /// An engine with only `attacker` and `history`, adjusted by `adjust`.
    pub(crate) async fn with(adjust: impl FnOnce(&mut assay::config::Config)) -> Self {
        let dir = shared_tempdir();
        std::fs::write(
            dir.path().join("attacker.wasm"),
            built_plugin("attacker.wasm"),
        )
        .unwrap();
        // The bystander; no prompt stage, which would rewrite the attack scripts.
        std::fs::write(
            dir.path().join("history.wasm"),
            built_plugin("history.wasm"),
        )
        .unwrap();
        let engine = engine_with(dir.path(), |c| {
            c.plugins.bundled = false;
            // One connection: a later call gets the very session an attack used.
            c.sandbox.connections_per_plugin = 1;
            adjust(c);
        })
        .await;
        assert!(
            engine.registry.problems.is_empty(),
            "{:?}",
            engine.registry.problems
        );
        let client = engine.test_db.client().await;
        let role_of = |plugin: &str| {
            format!("SELECT 'assay_' || substr(md5(current_database()), 1, 6) || '_{plugin}'")
        };
        let role: String = client
            .query_one(&role_of("attacker"), &[])
            .await
            .unwrap()
            .get(0);
        let history_role: String = client
            .query_one(&role_of("history"), &[])
            .await
            .unwrap()
            .get(0);
        Self {
            engine,
            role,
            history_role,
            _dir: dir,
            runs: AtomicUsize::new(0),
        }
    }

    /// Runs a script; returns the call's report and its steps.
    pub(crate) async fn run(&self, script: &str) -> (assay::pipeline::RunReport, Vec<Step>) {
        let n = self.runs.fetch_add(1, Ordering::SeqCst);
        let report = self
            .engine
            .pipeline
            .run(doc(&format!("attack-{n}"), "attack", script))
            .await
            .unwrap();
        let steps = report
            .findings
            .iter()
            .filter(|f| f.plugin == "attacker")
            .map(|f| {
                let d = &f.data;
                Step {
                    ok: d["ok"] == json!(true),
                    rows: d["rows"].clone(),
                    columns: d["columns"].clone(),
                    kind: d["error"]["kind"].as_str().unwrap_or_default().to_string(),
                    code: d["error"]["code"].as_str().unwrap_or_default().to_string(),
                    message: d["error"]["message"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                }
            })
            .collect();
        (report, steps)
    }

    /// The plugin's identity as the server sees it, in a fresh call.
    pub(crate) async fn whoami(&self) -> (String, String) {
        let (report, steps) = self
            .run("query SELECT current_user::text, session_user::text")
            .await;
        assert_eq!(
            outcome(&report, "attacker").outcome,
            "ok",
            "{:?}",
            report.plugins
        );
        let row = &steps[0].rows[0];
        (
            row[0].as_str().unwrap().to_string(),
            row[1].as_str().unwrap().to_string(),
        )
    }

    /// One value from a query in a fresh call (on the same pooled session).
    pub(crate) async fn probe(&self, sql: &str) -> Value {
        let (_, steps) = self.run(&format!("query {sql}")).await;
        assert!(steps[0].ok, "{sql}: {:?}", steps[0]);
        steps[0].rows[0][0].clone()
    }
}

fn attacks(history_role: &str) -> Vec<Attack> {
    use Expect::*;
    vec![
        attack("reset role", "exec RESET ROLE", Denied, Harmless),
        attack(
            "set role to the engine",
            "exec SET ROLE assay",
            Denied,
            Code("42501"),
        ),
        attack(
            "set role to another plugin",
            format!("exec SET ROLE {history_role}"),
            Denied,
            Code("42501"),
        ),
        attack(
            "set session authorization",
            "exec SET SESSION AUTHORIZATION assay",
            Denied,
            Code("42501"),
        ),
        attack(
            "set_config role",
            "query SELECT set_config('role', 'assay', false)",
            Denied,
            Code("42501"),
        ),
        attack(
            "two statements",
            "exec SELECT 1; RESET ROLE",
            Denied,
            Code("42601"),
        ),
        attack("commit", "exec COMMIT", Denied, Harmless),
        attack("rollback", "exec ROLLBACK", Denied, Harmless),
        attack("savepoint", "exec SAVEPOINT s", Denied, Harmless),
        attack(
            "prepare transaction",
            "exec PREPARE TRANSACTION 'stolen'",
            Denied,
            AnyDbError,
        ),
        attack(
            "copy to program",
            "exec COPY (SELECT 1) TO PROGRAM 'id'",
            Denied,
            Code("42501"),
        ),
        attack(
            "copy from a server file",
            "exec CREATE TABLE IF NOT EXISTS loot (line text)\nexec COPY loot FROM '/etc/passwd'",
            Denied,
            Code("42501"),
        ),
        attack(
            "pg_read_file",
            "query SELECT pg_read_file('/etc/passwd')",
            Denied,
            Code("42501"),
        ),
        attack(
            "pg_ls_dir",
            "query SELECT pg_ls_dir('.')",
            Denied,
            Code("42501"),
        ),
        attack(
            "lo_import",
            "query SELECT lo_import('/etc/passwd')",
            Denied,
            Code("42501"),
        ),
        attack(
            "lo_create",
            "query SELECT lo_create(0)",
            Denied,
            Code("42501"),
        ),
        attack(
            "lo_from_bytea",
            "query SELECT lo_from_bytea(0, '\\x00')",
            Denied,
            Code("42501"),
        ),
        attack(
            "lo_export",
            "query SELECT lo_export(1, '/tmp/assay-stolen')",
            Denied,
            Code("42501"),
        ),
        attack(
            "security definer function in public",
            "exec CREATE FUNCTION public.escalate() RETURNS text LANGUAGE sql SECURITY DEFINER AS 'SELECT current_user::text'",
            Denied,
            Code("42501"),
        ),
        attack(
            "create table in public",
            "exec CREATE TABLE public.planted (a int)",
            Code("42501"),
            Code("42501"),
        ),
        attack(
            "create table in assay",
            "exec CREATE TABLE assay.planted (a int)",
            Code("42501"),
            Code("42501"),
        ),
        attack(
            "create table in another plugin's schema",
            "exec CREATE TABLE plugin_history.planted (a int)",
            Code("42501"),
            Code("42501"),
        ),
        attack(
            "create temp table",
            "exec CREATE TEMP TABLE planted (a int)",
            Denied,
            Code("42501"),
        ),
        attack(
            "create schema",
            "exec CREATE SCHEMA planted",
            Code("42501"),
            Code("42501"),
        ),
        attack(
            "do block",
            "exec DO $$BEGIN PERFORM 1; END$$",
            Denied,
            Code("42501"),
        ),
        attack("listen", "exec LISTEN assay", Denied, Harmless)
            .then("SELECT count(*) FROM pg_listening_channels()", json!(0)),
        attack(
            "notify an engine channel",
            "exec NOTIFY assay, 'reload'",
            Denied,
            Harmless,
        ),
        attack(
            "pg_notify",
            "query SELECT pg_notify('assay', 'reload')",
            Denied,
            Harmless,
        ),
        attack(
            "statement_timeout via set_config",
            "query SELECT set_config('statement_timeout', '0', false)",
            Denied,
            Harmless,
        )
        .then("SELECT current_setting('statement_timeout')", json!("5s")),
        attack(
            "search_path via set_config",
            "query SELECT set_config('search_path', 'public', false)",
            Denied,
            Harmless,
        )
        .then(
            "SELECT current_setting('search_path')",
            json!("plugin_attacker"),
        ),
        attack(
            "session setting via SET",
            "exec SET application_name = 'hijacked'",
            Denied,
            Harmless,
        )
        .then(
            "SELECT current_setting('application_name') <> 'hijacked'",
            json!(true),
        ),
        attack(
            "advisory lock left held",
            "query SELECT pg_advisory_lock(4242)",
            Denied,
            Harmless,
        ),
        attack(
            "with hold cursor left open",
            "exec DECLARE stolen CURSOR WITH HOLD FOR SELECT 1",
            Denied,
            Harmless,
        )
        .then(
            "SELECT count(*) FROM pg_cursors WHERE name = 'stolen'",
            json!(0),
        ),
        attack(
            "read another plugin's tables",
            "query SELECT * FROM plugin_history.term_counts",
            Code("42501"),
            Code("42501"),
        ),
        attack(
            "read pg_authid",
            "query SELECT rolname, rolpassword FROM pg_authid",
            Code("42501"),
            Code("42501"),
        ),
        attack(
            "read engine documents",
            "query SELECT text FROM assay.documents",
            Code("42501"),
            Code("42501"),
        ),
        attack(
            "read plugin passwords",
            "query SELECT password FROM assay.plugin_roles",
            Code("42501"),
            Code("42501"),
        ),
        attack(
            "alter own role",
            "exec ALTER ROLE CURRENT_USER SUPERUSER",
            Denied,
            Code("42501"),
        ),
        // Other spellings of what the gate refuses: the server resolves them
        // to the same thing, so the gate must too.
        attack(
            "set_config quoted and qualified",
            "query SELECT \"pg_catalog\".\"set_config\"('statement_timeout', '0', false)",
            Denied,
            Harmless,
        )
        .then("SELECT current_setting('statement_timeout')", json!("5s")),
        attack(
            "set_config by Unicode escapes",
            r#"query SELECT U&"\0073et_config"('work_mem', '1GB', false)"#,
            Denied,
            Harmless,
        )
        .then("SELECT current_setting('work_mem')", json!("4MB")),
        attack(
            "set_config by Unicode escapes with UESCAPE",
            r#"query SELECT U&"!0073et_config" UESCAPE '!' ('work_mem', '1GB', false)"#,
            Denied,
            Harmless,
        )
        .then("SELECT current_setting('work_mem')", json!("4MB")),
        attack(
            "set_config behind a comment the server ends at a carriage return",
            "query SELECT 1 -- only a comment?\r, set_config('work_mem', '1GB', false)",
            Denied,
            Harmless,
        )
        .then("SELECT current_setting('work_mem')", json!("4MB")),
        attack(
            "set_config as a set-returning function in FROM",
            "query SELECT * FROM PG_CATALOG . /* x */ SET_CONFIG ('work_mem', '1GB', false)",
            Denied,
            Harmless,
        )
        .then("SELECT current_setting('work_mem')", json!("4MB")),
        attack(
            "SET by another name: UPDATE pg_settings",
            "exec UPDATE pg_settings SET setting = '1GB' WHERE name = 'work_mem'",
            Denied,
            Harmless,
        )
        .then("SELECT current_setting('work_mem')", json!("4MB")),
        attack(
            "UPDATE pg_settings, quoted, in a CTE",
            "query WITH s AS (UPDATE pg_catalog.\"pg_settings\" SET setting = '0' WHERE name = 'statement_timeout' RETURNING name) SELECT * FROM s",
            Denied,
            Harmless,
        )
        .then("SELECT current_setting('statement_timeout')", json!("5s")),
        attack(
            "pg_sleep qualified",
            "query SELECT \"pg_catalog\".pg_sleep_for('10 milliseconds')",
            Denied,
            Harmless,
        ),
        attack(
            "pg_sleep in attribute notation",
            "query SELECT (0.01).pg_sleep",
            Denied,
            Harmless,
        ),
        attack(
            "an advisory lock by Unicode escapes",
            r#"query SELECT U&"pg\005fadvisory\005flock"(4243)"#,
            Denied,
            Harmless,
        ),
        attack(
            "SQL run from a string: ts_stat",
            "query SELECT * FROM ts_stat('SELECT to_tsvector(set_config(''work_mem'', ''1GB'', false))')",
            Denied,
            Harmless,
        )
        .then("SELECT current_setting('work_mem')", json!("4MB")),
        attack(
            "ALTER ROUTINE with a SET clause",
            "exec ALTER ROUTINE pg_catalog.now() SET work_mem = '1GB'",
            Denied,
            Code("42501"),
        ),
        // What the host's client cannot carry gets the statement's own error,
        // gate or no gate, and the connection goes on working.
        attack(
            "COPY FROM STDIN",
            "exec CREATE TABLE IF NOT EXISTS sink (a int)\nexec COPY sink FROM STDIN",
            Denied,
            Code("0A000"),
        ),
        attack(
            "a NUL byte in a statement",
            "query-nul SELECT 1\\0; SELECT 2",
            Code("22021"),
            Code("22021"),
        ),
        attack(
            "a billion rows",
            "query SELECT generate_series(1, 1000000000)",
            TooLarge,
            TooLarge,
        ),
        attack(
            "a 500 MB value",
            "query SELECT repeat(repeat('x', 10000), 50000)",
            Bounded,
            Bounded,
        ),
        // A few kilobytes on the wire that would decode to 210 MB of digits.
        attack(
            "numerics that expand when decoded",
            "query SELECT 1e131071::numeric FROM generate_series(1, 1600)",
            TooLarge,
            TooLarge,
        ),
    ]
}

fn check(attack: &Attack, expect: Expect, step: &Step) {
    let name = attack.name;
    match expect {
        Expect::Denied => {
            assert!(
                !step.ok && step.kind == "denied",
                "{name}: expected a gate denial, got {step:?}"
            );
            assert!(!step.message.is_empty(), "{name}: a denial says why");
        }
        Expect::Code(code) => {
            assert!(
                !step.ok && step.kind == "db" && step.code == code,
                "{name}: expected SQLSTATE {code}, got {step:?}"
            )
        }
        Expect::AnyDbError => assert!(
            !step.ok && step.kind == "db",
            "{name}: expected a database error, got {step:?}"
        ),
        Expect::Harmless => {}
        Expect::Bounded => assert!(
            !step.ok && (step.kind == "too-large" || step.kind == "timeout"),
            "{name}: expected too-large or timeout, got {step:?}"
        ),
        Expect::TooLarge => assert!(
            !step.ok && step.kind == "too-large",
            "{name}: expected too-large, got {step:?}"
        ),
    }
}

async fn attack_suite(gate: bool) {
    // PostgreSQL alone needs ~2 s to build the 500 MB value; give calls room.
    let sandbox = Arc::new(Sandbox::new(gate, 10_000).await);
    // Give the other plugin some state and tables to go after.
    let mut seeded = doc(
        "seed",
        "chat",
        "The router failed again and the refund was late.",
    );
    seeded.metadata.insert("group".into(), json!("victims"));
    sandbox.engine.pipeline.run(seeded).await.unwrap();

    // A well-behaved plugin keeps answering while the attacks run.
    let stop = Arc::new(AtomicBool::new(false));
    let bystander = {
        let sandbox = Arc::clone(&sandbox);
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let mut answered = 0;
            for i in 0..500 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let mut d = doc(
                    &format!("bystander-{i}"),
                    "chat",
                    "My router keeps failing, please help.",
                );
                d.metadata.insert("group".into(), json!("bystanders"));
                let report = sandbox.engine.pipeline.run(d).await.unwrap();
                assert_eq!(
                    report.status, "ok",
                    "the bystander failed: {:?}",
                    report.plugins
                );
                answered += 1;
            }
            answered
        })
    };

    for attack in attacks(&sandbox.history_role) {
        let expect = if gate {
            attack.with_gate
        } else {
            attack.without_gate
        };
        let (report, steps) = sandbox.run(&attack.script).await;
        // A bounded attack may also be cut by the call's own deadline, on a
        // machine busy enough that the server is slow to even build the value.
        let cut_at_deadline = matches!(expect, Expect::Bounded)
            && steps.is_empty()
            && crate::support::outcome(&report, "attacker")
                .error_kind
                .map(|k| k.as_str())
                == Some("timeout");
        if !cut_at_deadline {
            let last = steps.last().unwrap_or_else(|| {
                panic!("{}: no steps reported: {:?}", attack.name, report.plugins)
            });
            for setup in &steps[..steps.len() - 1] {
                assert!(setup.ok || gate, "{}: setup failed: {setup:?}", attack.name);
            }
            check(&attack, expect, last);
        }
        if let Some((probe, expected)) = &attack.after {
            assert_eq!(
                &sandbox.probe(probe).await,
                expected,
                "{}: left something behind",
                attack.name
            );
        }
        if attack.name == "advisory lock left held" {
            let client = sandbox.engine.test_db.client().await;
            let taken: bool = client
                .query_one("SELECT pg_try_advisory_lock(4242)", &[])
                .await
                .unwrap()
                .get(0);
            assert!(
                taken,
                "an advisory lock taken by the plugin must not outlive its call"
            );
            client
                .execute("SELECT pg_advisory_unlock(4242)", &[])
                .await
                .unwrap();
        }
        let (current, session) = sandbox.whoami().await;
        assert_eq!(
            (current.as_str(), session.as_str()),
            (sandbox.role.as_str(), sandbox.role.as_str()),
            "{}: the plugin must still be itself",
            attack.name
        );
    }

    let client = sandbox.engine.test_db.client().await;
    // Nothing outside the plugin's grants changed.
    let planted: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relname = 'planted' OR n.nspname = 'planted'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(planted, 0);
    let escalated: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_roles WHERE rolname = $1 AND (rolsuper OR rolcreaterole OR rolcreatedb OR rolbypassrls)",
            &[&sandbox.role],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(escalated, 0);
    let memberships: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member WHERE r.rolname = $1",
            &[&sandbox.role],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(memberships, 0, "the plugin role is a member of nothing");
    let functions: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_proc WHERE proname = 'escalate'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(functions, 0);
    // The session every attack ran on (the plugin has one connection) holds
    // nothing of them: no setting of its own, no LISTEN, cursor, advisory
    // lock or prepared statement of the plugin's, and no more of the host's
    // statements than it keeps.
    assert_eq!(
        sandbox.probe(SESSION_LEFTOVERS).await,
        json!("settings 0 listening 0 cursors 0 advisory 0 prepared 0"),
        "gate {gate}: the session kept something of the attacks"
    );
    let host_statements = sandbox
        .probe("SELECT count(*)::int FROM pg_prepared_statements WHERE NOT from_sql")
        .await;
    assert!(
        host_statements.as_i64().unwrap() <= assay::capability::sql::pool::CACHED_STATEMENTS as i64,
        "{host_statements}"
    );

    stop.store(true, Ordering::SeqCst);
    let answered = bystander.await.unwrap();
    assert!(answered > 0, "the bystander got no answer at all");
}

/// What a session holds that a call could have left there, as one line.
pub(crate) const SESSION_LEFTOVERS: &str = concat!(
    "SELECT concat_ws(' ', ",
    // The transaction's own settings (from BEGIN READ WRITE) are not the session's.
    "'settings', (SELECT count(*) FROM pg_settings WHERE source = 'session' AND name NOT LIKE 'transaction\\_%'), ",
    "'listening', (SELECT count(*) FROM pg_listening_channels()), ",
    // The unnamed portal is this very query.
    "'cursors', (SELECT count(*) FROM pg_cursors WHERE name <> ''), ",
    "'advisory', (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()), ",
    "'prepared', (SELECT count(*) FROM pg_prepared_statements WHERE from_sql))"
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attacks_fail_with_the_statement_gate() {
    attack_suite(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attacks_fail_on_privileges_alone() {
    attack_suite(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_on_statements_time_and_connections() {
    let sandbox = Sandbox::new(false, 3_000).await;
    // 10,000 statements: the call may run 1,000.
    let (_, steps) = sandbox.run("repeat 10000 SELECT 1").await;
    assert_eq!(steps[0].kind, "denied", "{:?}", steps[0]);
    assert!(
        steps[0].message.contains("1000 statements"),
        "{:?}",
        steps[0]
    );

    // statement_timeout switched off, then a long sleep: the host's deadline
    // cancels the statement, and the session is not reused.
    let (report, _) = sandbox
        .run("exec SET statement_timeout = 0\nexec SELECT pg_sleep(600)")
        .await;
    let attacker = outcome(&report, "attacker");
    assert_eq!(attacker.outcome, "failed", "{attacker:?}");
    let client = sandbox.engine.test_db.client().await;
    let mut sleeping = 1;
    for _ in 0..50 {
        sleeping = client
            .query_one("SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(600)%' AND pid <> pg_backend_pid()", &[])
            .await
            .unwrap()
            .get::<_, i64>(0);
        if sleeping == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(sleeping, 0, "the sleeping statement was cancelled");
    assert_eq!(
        sandbox
            .probe("SELECT current_setting('statement_timeout')")
            .await,
        json!("5s")
    );

    // Holding its connection while looping: the call ends at its deadline and
    // the connection comes back; other plugins answer meanwhile.
    let looping = sandbox.run("query SELECT 1\nloop");
    let other = async {
        let report = sandbox
            .engine
            .pipeline
            .run(doc("meanwhile", "chat", "The router works now, thank you."))
            .await
            .unwrap();
        assert_eq!(report.status, "ok", "{:?}", report.plugins);
    };
    let ((report, _), ()) = tokio::join!(looping, other);
    assert_eq!(
        outcome(&report, "attacker").error_kind.map(|k| k.as_str()),
        Some("timeout")
    );
    assert_eq!(
        sandbox.whoami().await.0,
        sandbox.role,
        "its next call gets a working connection"
    );
}

/// WASI is linked (components from other toolchains import it whether they
/// use it or not) but every use that would reach the host is denied at run
/// time: files, directories, the environment, standard input, TCP, UDP,
/// listening, name lookup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasi_denies_every_use() {
    let sandbox = Sandbox::new(true, 10_000).await;
    // Something listening on loopback: a connect that were let through would reach it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let probe = std::env::temp_dir().join(format!("assay-wasi-probe-{}", std::process::id()));
    let script = [
        "wasi read /etc/passwd".to_string(),
        "wasi read /proc/self/environ".to_string(),
        "wasi list /".to_string(),
        "wasi list .".to_string(),
        format!("wasi write {}", probe.display()),
        "wasi cwd".to_string(),
        "wasi env".to_string(),
        "wasi stdin".to_string(),
        format!("wasi tcp {addr}"),
        "wasi listen 127.0.0.1:0".to_string(),
        format!("wasi udp {addr}"),
        "wasi dns localhost".to_string(),
    ];
    let (report, _) = sandbox.run(&script.join("\n")).await;
    assert_eq!(outcome(&report, "attacker").outcome, "ok", "{report:?}");
    let answers: Vec<String> = report
        .findings
        .iter()
        .filter(|f| f.plugin == "attacker")
        .map(|f| f.data["wasi"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(answers.len(), script.len(), "{answers:?}");
    for (asked, answer) in script.iter().zip(&answers) {
        if asked == "wasi cwd" {
            // The host gives no initial directory; the guest's libc then
            // calls it `/`, which names nothing it can open.
            assert_eq!(answer, "allowed: /", "{asked}");
            continue;
        }
        assert!(answer.starts_with("denied: "), "{asked}: {answer}");
    }
    assert!(!probe.exists(), "nothing was written");
    listener.set_nonblocking(true).unwrap();
    assert!(listener.accept().is_err(), "nothing connected");
}
