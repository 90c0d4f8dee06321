//! Shared test helpers: one embedded PostgreSQL per test process, a fresh
//! database per test, and an engine wired like the `assay` binary wires it.

#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use assay::config::{Config, EmbeddedConfig};
use assay::db::Database;
use assay::db::embedded::EmbeddedPostgres;
use assay::pipeline::{DocumentInput, Pipeline};
use assay::registry::Registry;
use assay::runtime::Runtime;

pub use assay_testing::{
    TestDb, fresh_database, fresh_database_with_unprivileged_owner, shared_tempdir,
};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Bytes of a component built from `plugins/`: a test plugin's from
/// `assay-test-artifacts`, a bundled or tool plugin's from the engine's build.
pub fn built_plugin(file: &str) -> Vec<u8> {
    let path = assay_test_artifacts::path(file).map_or_else(
        || Path::new(assay::bundled::BUILT_PLUGIN_DIR).join(file),
        Path::to_path_buf,
    );
    std::fs::read(path).unwrap()
}

/// An engine over a fresh database, with the bundled plugins plus whatever
/// `plugin_dir` holds.
pub struct TestEngine {
    pub db: Arc<Database>,
    pub runtime: Arc<Runtime>,
    pub registry: Arc<Registry>,
    pub pipeline: Pipeline,
    pub test_db: TestDb,
    pub config: Config,
}

pub async fn engine_with(plugin_dir: &Path, adjust: impl FnOnce(&mut Config)) -> TestEngine {
    engine_on(fresh_database().await, plugin_dir, adjust).await
}

/// An engine over `test_db`, with the bundled plugins plus what `plugin_dir` holds.
pub async fn engine_on(
    test_db: TestDb,
    plugin_dir: &Path,
    adjust: impl FnOnce(&mut Config),
) -> TestEngine {
    let engine = assay_testing::engine_builder(&test_db, plugin_dir, adjust)
        .await
        .build()
        .await
        .unwrap();
    TestEngine {
        db: Arc::clone(engine.db()),
        runtime: Arc::clone(engine.runtime()),
        registry: engine.registry(),
        pipeline: engine.pipeline().clone(),
        test_db,
        config: engine.config().clone(),
    }
}

/// An engine without the bundled plugins, over `test_db`, loading `plugins`
/// (file name, bytes) from a directory of its own.
pub async fn engine_loading(
    test_db: TestDb,
    plugins: &[(&str, Vec<u8>)],
    adjust: impl FnOnce(&mut Config),
) -> (TestEngine, tempfile::TempDir) {
    let dir = shared_tempdir();
    for (file, bytes) in plugins {
        std::fs::write(dir.path().join(file), bytes).unwrap();
    }
    let engine = engine_on(test_db, dir.path(), |c| {
        c.plugins.bundled = false;
        adjust(c);
    })
    .await;
    (engine, dir)
}

pub fn doc(source: &str, kind: &str, text: &str) -> DocumentInput {
    DocumentInput {
        source: source.into(),
        kind: kind.into(),
        metadata: Default::default(),
        text: text.into(),
    }
}

/// What `plugin` did in a run.
pub fn outcome<'a>(
    report: &'a assay::pipeline::RunReport,
    plugin: &str,
) -> &'a assay::pipeline::PluginOutcome {
    report
        .plugins
        .iter()
        .find(|p| p.plugin == plugin)
        .unwrap_or_else(|| panic!("no outcome of {plugin} in {:?}", report.plugins))
}

/// An engine with the bundled plugins plus the misbehaving `faulty` one.
pub async fn faulty_engine(adjust: impl FnOnce(&mut Config)) -> (TestEngine, tempfile::TempDir) {
    let dir = shared_tempdir();
    std::fs::write(dir.path().join("faulty.wasm"), built_plugin("faulty.wasm")).unwrap();
    let engine = engine_with(dir.path(), adjust).await;
    assert!(
        engine
            .registry
            .plugins()
            .iter()
            .any(|p| p.name() == "faulty"),
        "faulty loads: {:?}",
        engine.registry.problems
    );
    (engine, dir)
}

/// The state `assay up` serves from: a live registry (not watched) over a
/// fresh database with the bundled plugins plus what `plugin_dir` holds.
pub async fn service_state(
    plugin_dir: &Path,
    adjust: impl FnOnce(&mut Config),
) -> (Arc<assay::service::AppState>, TestDb) {
    let test_db = fresh_database().await;
    let engine = assay_testing::engine_builder(&test_db, plugin_dir, adjust)
        .await
        .live()
        .build()
        .await
        .unwrap();
    (
        assay::service::AppState::for_engine(&engine).unwrap(),
        test_db,
    )
}

/// One request through the HTTP routes, sent as a real client sends it (with
/// `Host` and `Content-Type: application/json`), to the routes as served on
/// 127.0.0.1:7878: status, headers, JSON body (`null` if none).
pub async fn http(
    state: &Arc<assay::service::AppState>,
    method: &str,
    uri: &str,
    body: Option<serde_json::Value>,
) -> (u16, axum::http::HeaderMap, serde_json::Value) {
    use tower::ServiceExt as _;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 7878));
    let request = axum::http::Request::builder()
        .method(method)
        .uri(uri)
        .header("host", addr.to_string())
        .header("content-type", "application/json")
        .body(axum::body::Body::from(
            body.map(|b| b.to_string()).unwrap_or_default(),
        ))
        .unwrap();
    let response = assay::service::router(Arc::clone(state), addr)
        .oneshot(request)
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        headers,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

/// A PostgreSQL server of one test's own, for tests that stop it, kill it and
/// start it again (the shared server must stay up for every other test).
pub struct PrivateServer {
    embedded: Option<EmbeddedPostgres>,
    _dir: tempfile::TempDir,
}

impl PrivateServer {
    /// Initialises and starts a new cluster (blocking: a few seconds).
    pub fn start() -> Self {
        Self::start_from(None)
    }

    /// [`PrivateServer::start`] with the server binaries in `bin_dir` (another
    /// PostgreSQL than the one found on the machine).
    pub fn start_from(bin_dir: Option<PathBuf>) -> Self {
        let dir = shared_tempdir();
        let embedded = EmbeddedPostgres::start(&EmbeddedConfig {
            data_dir: dir.path().join("pg"),
            bin_dir,
        })
        .expect("start a private PostgreSQL");
        Self {
            embedded: Some(embedded),
            _dir: dir,
        }
    }

    fn embedded(&self) -> &EmbeddedPostgres {
        self.embedded.as_ref().unwrap()
    }

    /// Its `postgres` database, as a [`TestDb`].
    pub fn test_db(&self) -> TestDb {
        let e = self.embedded();
        TestDb::on_own_server(
            format!(
                "postgres://assay:{}@127.0.0.1:{}/postgres",
                e.password(),
                e.port()
            ),
            e.pg_config("postgres"),
        )
    }

    fn pg_ctl(&self, args: &[&str]) {
        pg_ctl(&self.embedded().root().join("pgdata"), args);
    }

    /// Stops the server the hard way: every backend killed, no checkpoint (a crash).
    pub fn stop_immediately(&self) {
        self.pg_ctl(&["stop", "-m", "immediate", "-w"]);
    }

    /// The server's processes: the postmaster and its children.
    fn processes(&self) -> Vec<i32> {
        let pid_file = self.embedded().root().join("pgdata").join("postmaster.pid");
        let postmaster: i32 = std::fs::read_to_string(pid_file)
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let mut pids = vec![postmaster];
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            // Field 4 of /proc/PID/stat, after the parenthesised command name.
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            let parent = stat
                .rsplit_once(") ")
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<i32>().ok());
            if parent == Some(postmaster) {
                pids.push(pid);
            }
        }
        pids
    }

    fn signal(&self, signal: i32) {
        for pid in self.processes() {
            // SAFETY: plain kill(2) on processes of this test's own server.
            unsafe { libc::kill(pid, signal) };
        }
    }

    /// Freezes every server process (SIGSTOP): connections stay open, nothing answers.
    pub fn freeze(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// Lets a frozen server go on (SIGCONT).
    pub fn thaw(&self) {
        self.signal(libc::SIGCONT);
    }

    /// Starts it again on the same port (crash recovery runs first).
    pub fn restart(&self) {
        let port = self.embedded().port();
        let log = self
            .embedded()
            .root()
            .join("pgdata")
            .join("assay-server.log");
        let log = log.to_str().unwrap().to_string();
        self.pg_ctl(&[
            "start",
            "-w",
            "-t",
            "60",
            "-l",
            &log,
            "-o",
            &format!("-p {port}"),
        ]);
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        if let Some(embedded) = self.embedded.take() {
            let _ = embedded.stop();
        }
    }
}

/// Runs `pg_ctl -D pgdata ARGS` as the cluster's owner (`postgres` when we are
/// root, as PostgreSQL refuses to run as root), and asserts it succeeded.
pub fn pg_ctl(pgdata: &Path, args: &[&str]) {
    let pg_ctl = assay::db::embedded::find_binaries(None)
        .unwrap()
        .join("pg_ctl");
    let mut command = if nix::unistd::geteuid().is_root() {
        let mut c = std::process::Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(pg_ctl);
        c
    } else {
        std::process::Command::new(pg_ctl)
    };
    let out = command.arg("-D").arg(pgdata).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "pg_ctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The first column of every row `sql` returns.
pub async fn column<T>(
    client: &tokio_postgres::Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Vec<T>
where
    T: for<'a> tokio_postgres::types::FromSql<'a>,
{
    client
        .query(sql, params)
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// Backends now running `faulty`'s slow statement (`#fault:sql-slow`).
pub async fn slow_statements(client: &tokio_postgres::Client) -> Vec<i32> {
    column(
        client,
        // This test's database only: tests run side by side on one server.
        "SELECT pid FROM pg_stat_activity WHERE query LIKE '%slow_statement%' AND state = 'active'
           AND pid <> pg_backend_pid() AND datname = current_database()",
        &[],
    )
    .await
}

/// The `attacker` test plugin, built once, as a plugin named `name` with
/// `migrations` (each one statement), by overwriting the slots its component
/// keeps them in (see `plugins/testing/attacker`): any name and any migrations
/// from one real build.
pub fn attacker_as(name: &str, migrations: &[&str]) -> Vec<u8> {
    let mut bytes = built_plugin("attacker.wasm");
    let mut fill = |marker: &[u8], room: usize, value: &[u8]| {
        assert!(
            value.len() <= room,
            "{} bytes do not fit the slot",
            value.len()
        );
        let at = bytes
            .windows(marker.len())
            .position(|w| w == marker)
            .unwrap_or_else(|| panic!("no {} slot", String::from_utf8_lossy(marker)))
            + marker.len();
        let slot = &mut bytes[at..at + room];
        slot.fill(0);
        slot[..value.len()].copy_from_slice(value);
    };
    fill(b"@@assay-attacker-name@@", 51, name.as_bytes());
    fill(
        b"@@assay-attacker-migrations@@",
        8192,
        migrations.join("\n;;\n").as_bytes(),
    );
    bytes
}

/// Copies the directory tree `from` into `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    for entry in walkdir::WalkDir::new(from) {
        let entry = entry.unwrap();
        let target = to.join(entry.path().strip_prefix(from).unwrap());
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}
