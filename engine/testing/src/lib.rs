//! Test support for assay, shared by the engine's integration tests and the
//! benchmarks (and, later, plugin authors' own tests): one private embedded
//! PostgreSQL per test process, a fresh database per test, and engines built
//! over it as the `assay` binary builds them.
//!
//! ```no_run
//! # async fn demo() {
//! let db = assay_testing::fresh_database().await;
//! let engine = assay_testing::engine_builder(&db, "plugins".as_ref(), |config| {
//!     config.plugins.bundled = true;
//! })
//! .await
//! .build()
//! .await
//! .expect("engine");
//! # drop(engine);
//! # }
//! ```
//!
//! Failures here are the test's failures, so they panic with what went wrong.

#![deny(missing_docs)]
#![allow(clippy::unwrap_used)]

pub mod fake_model;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use assay::config::{Config, EmbeddedConfig};
use assay::db::Database;
use assay::db::embedded::EmbeddedPostgres;
use assay::engine::{Engine, EngineBuilder};

struct Server {
    embedded: Mutex<Option<EmbeddedPostgres>>,
    port: u16,
    password: String,
    /// Its data directory and log. A static is never dropped, so this is
    /// removed at exit by [`stop_server`], not by `TempDir`'s drop: a full
    /// run of the suite leaves gigabytes there otherwise.
    dir: Mutex<Option<tempfile::TempDir>>,
}

static SERVER: OnceLock<Server> = OnceLock::new();

extern "C" fn stop_server() {
    let Some(server) = SERVER.get() else {
        return;
    };
    if let Some(embedded) = assay::sync::lock(&server.embedded).take() {
        let _ = embedded.stop();
    }
    if let Some(dir) = assay::sync::lock(&server.dir).take() {
        let _ = dir.close();
    }
}

/// Settings for the shared server only: the suite's data is thrown away at
/// exit, so it is not synced to disk, and the write-ahead log is kept small
/// (by default it grows to a gigabyte before a checkpoint recycles it).
/// All take effect on a reload.
const THROWAWAY_SETTINGS: &[&str] = &[
    "ALTER SYSTEM SET fsync = off",
    "ALTER SYSTEM SET synchronous_commit = off",
    "ALTER SYSTEM SET full_page_writes = off",
    "ALTER SYSTEM SET max_wal_size = '96MB'",
    "ALTER SYSTEM SET min_wal_size = '32MB'",
    "SELECT pg_reload_conf()",
];

/// A temporary directory the `postgres` user can enter (tests run as root
/// in CI, and the server then runs as `postgres`).
pub fn shared_tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// A private PostgreSQL of its own in a temporary directory (the directory
/// goes when the returned guard drops, after the server stops): for
/// benchmarks and fault tests that stop or break their server.
pub fn private_server() -> (EmbeddedPostgres, tempfile::TempDir) {
    let root = shared_tempdir();
    let server = EmbeddedPostgres::start(&EmbeddedConfig {
        data_dir: root.path().join("pg"),
        bin_dir: None,
    })
    .expect("start a private embedded PostgreSQL");
    (server, root)
}

fn server() -> &'static Server {
    SERVER.get_or_init(|| {
        let (embedded, dir) = private_server();
        // SAFETY: registering a plain `extern "C" fn` with atexit; it runs once at exit.
        unsafe { libc::atexit(stop_server) };
        Server {
            port: embedded.port(),
            password: embedded.password().to_string(),
            embedded: Mutex::new(Some(embedded)),
            dir: Mutex::new(Some(dir)),
        }
    })
}

/// The shared test server's directory (data and log), while it is there.
pub fn shared_server_dir() -> Option<PathBuf> {
    let server = SERVER.get()?;
    assay::sync::lock(&server.dir)
        .as_ref()
        .map(|dir| dir.path().to_path_buf())
}

/// The last lines of the shared server's log, for a failure to reach it: a
/// server that crashed or ran out of disk says so there, not to its clients.
fn shared_server_log_tail() -> String {
    let Some(root) = shared_server_dir() else {
        return String::new();
    };
    let log = root.join("pg").join("pgdata").join("assay-server.log");
    match std::fs::read_to_string(&log) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(20)..].join("\n");
            format!(
                "\nthe shared test server's log ({}) ends:\n{tail}",
                log.display()
            )
        }
        Err(e) => format!("\n(cannot read {}: {e})", log.display()),
    }
}

/// Connects to a test server, or panics naming the server and, for the
/// shared one, what its log says.
async fn connect(
    config: &tokio_postgres::Config,
) -> (
    tokio_postgres::Client,
    tokio_postgres::Connection<tokio_postgres::Socket, tokio_postgres::tls::NoTlsStream>,
) {
    match config.connect(tokio_postgres::NoTls).await {
        Ok(pair) => pair,
        Err(e) => {
            let shared = SERVER
                .get()
                .is_some_and(|server| config.get_ports() == [server.port]);
            let log = if shared {
                shared_server_log_tail()
            } else {
                String::new()
            };
            panic!(
                "cannot connect to the test server on port {:?}: {}{log}",
                config.get_ports(),
                assay::db::pg_message(&e)
            )
        }
    }
}

/// A database of one test.
#[derive(Clone)]
pub struct TestDb {
    /// URL for `DATABASE_URL`.
    pub url: String,
    /// Settings for the library.
    pub config: tokio_postgres::Config,
    /// Drops the database from the shared server when the last copy goes.
    _dropper: Option<Arc<DropDatabase>>,
}

impl TestDb {
    /// A database on a server the caller manages (nothing is dropped).
    pub fn on_own_server(url: String, config: tokio_postgres::Config) -> Self {
        TestDb {
            url,
            config,
            _dropper: None,
        }
    }

    /// A direct client for assertions.
    pub async fn client(&self) -> tokio_postgres::Client {
        client_for(&self.config).await
    }
}

/// A client over `config`, its connection driven in the background.
async fn client_for(config: &tokio_postgres::Config) -> tokio_postgres::Client {
    let (client, conn) = connect(config).await;
    tokio::spawn(conn);
    client
}

/// A test's database on the shared server, dropped when the test is done
/// with it: a full run of the suite makes over a hundred (7 MB and more
/// each), and the server is shared by all of them until the process exits.
struct DropDatabase {
    name: String,
}

impl Drop for DropDatabase {
    fn drop(&mut self) {
        let Some(server) = SERVER.get() else {
            return;
        };
        let admin = pg_config(server, "postgres");
        // FORCE: a connection the test left open does not keep it.
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        // This runs inside a test's runtime, which must not block: a thread
        // of its own, with a runtime of its own. Not waited for, and a
        // failure is not the test's: whatever is left goes with the
        // server's directory at exit.
        std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                if let Ok((client, conn)) = admin.connect(tokio_postgres::NoTls).await {
                    let driver = tokio::spawn(conn);
                    let _ = client.batch_execute(&sql).await;
                    drop(client);
                    let _ = driver.await;
                }
            });
        });
    }
}

fn pg_config(server: &Server, db: &str) -> tokio_postgres::Config {
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(server.port)
        .user("assay")
        .password(&server.password)
        .dbname(db);
    config
}

/// Runs `sql` as the test server's superuser.
async fn as_superuser(server: &Server, sql: &str) {
    let admin = pg_config(server, "postgres");
    let (client, conn) = connect(&admin).await;
    let driver = tokio::spawn(conn);
    client.batch_execute(sql).await.unwrap();
    drop(client);
    let _ = driver.await;
}

/// A new, empty database on the shared test server.
pub async fn fresh_database() -> TestDb {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let server = tokio::task::spawn_blocking(server).await.unwrap();
    let name = format!(
        "t_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    );
    static TUNED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    TUNED
        .get_or_init(|| async {
            // One at a time: ALTER SYSTEM refuses to run in a transaction block.
            for sql in THROWAWAY_SETTINGS {
                as_superuser(server, sql).await;
            }
        })
        .await;
    as_superuser(server, &format!("CREATE DATABASE {name}")).await;
    TestDb {
        url: format!(
            "postgres://assay:{}@127.0.0.1:{}/{name}",
            server.password, server.port
        ),
        config: pg_config(server, &name),
        _dropper: Some(Arc::new(DropDatabase { name })),
    }
}

/// A new, empty database owned by a new role that is not a superuser and
/// holds only CREATEROLE: the least an operator can give the engine.
pub async fn fresh_database_with_unprivileged_owner() -> TestDb {
    let superuser = fresh_database().await;
    let server = tokio::task::spawn_blocking(server).await.unwrap();
    let name = superuser.config.get_dbname().unwrap().to_string();
    let owner = format!("{name}_engine");
    as_superuser(
        server,
        &format!(
            "CREATE ROLE {owner} LOGIN CREATEROLE PASSWORD 'engine-secret'; ALTER DATABASE {name} OWNER TO {owner}"
        ),
    )
    .await;
    let mut config = superuser.config.clone();
    config.user(&owner).password("engine-secret");
    TestDb {
        url: format!(
            "postgres://{owner}:engine-secret@127.0.0.1:{}/{name}",
            server.port
        ),
        config,
        // The same database: dropped when this handle goes, not before.
        _dropper: superuser._dropper,
    }
}

/// A client to `test_db`'s database as the shared server's superuser (for
/// what a test's operator does by hand).
pub async fn superuser_client(test_db: &TestDb) -> tokio_postgres::Client {
    let server = tokio::task::spawn_blocking(server).await.unwrap();
    client_for(&pg_config(server, test_db.config.get_dbname().unwrap())).await
}

/// The builder of a test engine over `test_db`: the default configuration
/// with `plugin_dir`, then `adjust`; no compile cache (a test writes nothing
/// outside its directories).
pub async fn engine_builder(
    test_db: &TestDb,
    plugin_dir: &Path,
    adjust: impl FnOnce(&mut Config),
) -> EngineBuilder {
    let mut config = Config::default();
    config.plugins.dir = plugin_dir.to_path_buf();
    adjust(&mut config);
    let db = Arc::new(
        Database::open_with(test_db.config.clone(), &config.database)
            .await
            .unwrap(),
    );
    Engine::builder(config).database(db).compile_cache(false)
}
