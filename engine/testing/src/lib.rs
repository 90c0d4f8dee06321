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
use std::path::Path;
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
    _dir: tempfile::TempDir,
}

static SERVER: OnceLock<Server> = OnceLock::new();

extern "C" fn stop_server() {
    if let Some(server) = SERVER.get()
        && let Some(embedded) = assay::sync::lock(&server.embedded).take()
    {
        let _ = embedded.stop();
    }
}

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
            _dir: dir,
        }
    })
}

/// A database of one test.
#[derive(Clone)]
pub struct TestDb {
    /// URL for `DATABASE_URL`.
    pub url: String,
    /// Settings for the library.
    pub config: tokio_postgres::Config,
}

impl TestDb {
    /// A direct client for assertions.
    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, conn) = self.config.connect(tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        client
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
    let (client, conn) = admin.connect(tokio_postgres::NoTls).await.unwrap();
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
    as_superuser(server, &format!("CREATE DATABASE {name}")).await;
    TestDb {
        url: format!(
            "postgres://assay:{}@127.0.0.1:{}/{name}",
            server.password, server.port
        ),
        config: pg_config(server, &name),
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
    }
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
