//! PostgreSQL: connecting (to a configured server or the embedded default),
//! the engine's schema, and storing runs.

pub mod embedded;
pub mod migrate;

use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use bb8::{Pool, PooledConnection, RunError};
use bb8_postgres::PostgresConnectionManager;
use regex::Regex;
use tokio_postgres::NoTls;

use crate::config::DatabaseConfig;
use embedded::EmbeddedPostgres;

/// A bb8 pool of tokio-postgres connections.
pub type PgPool = Pool<PostgresConnectionManager<NoTls>>;
/// A connection taken from a [`PgPool`], owned (not borrowing the pool).
pub type PgConnection = PooledConnection<'static, PostgresConnectionManager<NoTls>>;

/// Why the database could not be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The embedded server could not be started.
    /// (Its message includes the cause's, so the cause is not also given as
    /// the source: an error chain printed in full would say it twice.)
    #[error("cannot start the embedded PostgreSQL: {0}")]
    Embedded(embedded::EmbeddedError),
    /// The configured URL is not a valid connection string.
    #[error("invalid database URL ({url}): {cause}")]
    BadUrl {
        /// The URL with its password hidden.
        url: String,
        /// What is wrong with it.
        cause: tokio_postgres::Error,
    },
    /// No connection could be made in time.
    #[error(
        "cannot connect to PostgreSQL at {target}: {message}. Check that the server is running and reachable, or unset DATABASE_URL to use the embedded server"
    )]
    Unavailable {
        /// Where we tried to connect.
        target: String,
        /// What went wrong.
        message: String,
    },
    /// The server is older than assay supports.
    #[error("PostgreSQL at {target} is version {version}; assay needs 14 or newer")]
    TooOld {
        /// Where.
        target: String,
        /// What it reported.
        version: String,
    },
    /// Applying the engine's migrations failed.
    #[error("cannot apply assay's migrations: {0}")]
    Migrate(String),
    /// A statement failed.
    #[error("{context}: {}", pg_message(cause))]
    Query {
        /// What the engine was doing.
        context: &'static str,
        /// The PostgreSQL error.
        cause: tokio_postgres::Error,
    },
}

impl From<embedded::EmbeddedError> for DbError {
    fn from(error: embedded::EmbeddedError) -> Self {
        Self::Embedded(error)
    }
}

impl DbError {
    /// Wraps a tokio-postgres error with what was being done.
    pub fn query(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> DbError {
        move |source| DbError::Query {
            context,
            cause: source,
        }
    }
}

/// The engine's database: its pools and, when embedded, the server behind them.
pub struct Database {
    /// Connections for the engine's own work (storing runs, registering plugins).
    pub pool: PgPool,
    /// Human-readable description of the server, without secrets.
    pub target: String,
    /// `server_version` as reported by the server.
    pub server_version: String,
    pg_config: tokio_postgres::Config,
    connect_errors: LastConnectError,
    /// Whether the server is the embedded one (it stays so after it stopped).
    is_embedded: bool,
    // Declared last: dropped after the pools, so connections close before the
    // server stops. Behind a mutex so that [`Database::shutdown`] can stop it
    // while other parts of the engine still hold the database.
    embedded: Mutex<Option<EmbeddedPostgres>>,
}

/// How often a supervised embedded server is checked (see [`Database::supervise_embedded`]).
pub const EMBEDDED_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// The last error of a pool's connection attempts.
///
/// bb8 makes connections in the background and retries them until a waiting
/// caller times out; the caller then learns only that it timed out. Kept as the
/// pool's error sink, this lets the caller say *why* (refused, authentication,
/// too many clients).
#[derive(Debug, Clone, Default)]
pub struct LastConnectError(Arc<Mutex<Option<(Instant, String)>>>);

impl LastConnectError {
    /// The last error recorded at or after `since`.
    pub fn since(&self, since: Instant) -> Option<String> {
        crate::sync::lock(&self.0)
            .clone()
            .filter(|(at, _)| *at >= since)
            .map(|(_, message)| message)
    }
}

/// A failed connection attempt, told with its cause: tokio-postgres' own
/// Display stops at "error connecting to server" or "db error", and the
/// reason (refused, authentication, too many clients) is in its source.
pub trait ConnectFailure: Send + 'static {
    /// The whole message, cause included.
    fn told(&self) -> String;
}

impl ConnectFailure for tokio_postgres::Error {
    fn told(&self) -> String {
        pg_message(self)
    }
}

impl<E: ConnectFailure> bb8::ErrorSink<E> for LastConnectError {
    fn sink(&self, error: E) {
        let told = error.told();
        tracing::debug!(error = %told, "a database connection could not be made");
        *crate::sync::lock(&self.0) = Some((Instant::now(), told));
    }

    fn boxed_clone(&self) -> Box<dyn bb8::ErrorSink<E>> {
        Box::new(self.clone())
    }
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("target", &self.target)
            .field("server_version", &self.server_version)
            .finish_non_exhaustive()
    }
}

impl Database {
    /// Connects as configured: `database.url` if set, otherwise the embedded server
    /// (started, or joined if another assay process runs it). Applies migrations.
    pub async fn open(config: &DatabaseConfig) -> Result<Self, DbError> {
        let (pg_config, target, embedded) = match &config.url {
            Some(url) => {
                let pg_config: tokio_postgres::Config =
                    url.parse().map_err(|cause| DbError::BadUrl {
                        url: redact_url(url),
                        cause,
                    })?;
                (pg_config, redact_url(url), None)
            }
            None => {
                let embedded_config = config.embedded.clone();
                let server =
                    tokio::task::spawn_blocking(move || EmbeddedPostgres::start(&embedded_config))
                        .await
                        .map_err(|e| DbError::Unavailable {
                            target: "embedded server".into(),
                            message: e.to_string(),
                        })??;
                ensure_database(&server).await?;
                let target = format!(
                    "embedded PostgreSQL on 127.0.0.1:{} (data in {})",
                    server.port(),
                    server.root().display()
                );
                (server.pg_config(embedded::DATABASE), target, Some(server))
            }
        };
        Self::with_config(pg_config, target, embedded, config).await
    }

    /// Connects with explicit settings (used by tests for throw-away databases).
    pub async fn open_with(
        pg_config: tokio_postgres::Config,
        config: &DatabaseConfig,
    ) -> Result<Self, DbError> {
        let target = describe(&pg_config);
        Self::with_config(pg_config, target, None, config).await
    }

    async fn with_config(
        mut pg_config: tokio_postgres::Config,
        target: String,
        embedded: Option<EmbeddedPostgres>,
        config: &DatabaseConfig,
    ) -> Result<Self, DbError> {
        let timeout = Duration::from_millis(config.connect_timeout_ms);
        if pg_config.get_connect_timeout().is_none() {
            pg_config.connect_timeout(timeout);
        }
        if pg_config.get_application_name().is_none() {
            pg_config.application_name("assay");
        }
        let connect_errors = LastConnectError::default();
        let pool = Pool::builder()
            .max_size(config.pool_size.max(1))
            .min_idle(None)
            .connection_timeout(timeout)
            .idle_timeout(Some(Duration::from_secs(60)))
            .error_sink(Box::new(connect_errors.clone()))
            .build_unchecked(PostgresConnectionManager::new(pg_config.clone(), NoTls));
        let mut db = Self {
            pool,
            connect_errors,
            target,
            server_version: String::new(),
            pg_config,
            is_embedded: embedded.is_some(),
            embedded: Mutex::new(embedded),
        };
        let conn = db.connection().await?;
        let row = conn
            .query_one("SELECT current_setting('server_version_num')::int, current_setting('server_version')", &[])
            .await
            .map_err(DbError::query("reading the server version"))?;
        let version_num: i32 = row.get(0);
        db.server_version = row.get(1);
        if version_num < 140_000 {
            return Err(DbError::TooOld {
                target: db.target.clone(),
                version: db.server_version.clone(),
            });
        }
        drop(conn);
        migrate::run(&db).await?;
        Ok(db)
    }

    /// A connection from the engine's pool, or [`DbError::Unavailable`] after the timeout.
    pub async fn connection(&self) -> Result<PgConnection, DbError> {
        let asked = Instant::now();
        self.pool.get_owned().await.map_err(|e| match e {
            RunError::TimedOut => DbError::Unavailable {
                target: self.target.clone(),
                message: match self.connect_errors.since(asked) {
                    Some(cause) => cause,
                    None => "timed out waiting for a free connection of the engine's pool (database.pool_size)".into(),
                },
            },
            other => self.unavailable(other),
        })
    }

    /// Maps a pool error to a message naming the server.
    pub fn unavailable(&self, e: RunError<tokio_postgres::Error>) -> DbError {
        DbError::Unavailable {
            target: self.target.clone(),
            message: match e {
                RunError::User(e) => pg_message(&e),
                RunError::TimedOut => "timed out waiting for a connection".into(),
            },
        }
    }

    /// The connection settings in use (for tools such as `assay bench`).
    pub fn pg_config(&self) -> &tokio_postgres::Config {
        &self.pg_config
    }

    /// Keeps the embedded server running while this database is in use: if it
    /// stops (a crash, an operator's `pg_ctl stop`), it is started again on the
    /// same port, and the pools reconnect on their own. Nothing for an external
    /// server, which is its operator's to run. Holds only a weak reference
    /// between checks; stop it with [`Supervisor::stop`].
    pub fn supervise_embedded(self: &Arc<Self>) -> Option<Supervisor> {
        if !self.is_embedded {
            return None;
        }
        let weak = Arc::downgrade(self);
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stopped.changed() => break,
                    () = tokio::time::sleep(EMBEDDED_CHECK_INTERVAL) => {}
                }
                let Some(db) = weak.upgrade() else { break };
                // The check blocks (it runs pg_ctl), so it runs on a blocking
                // thread; it is awaited even when a stop is asked for meanwhile,
                // so that once `stop` returns nothing holds the database and
                // nothing can start the server again behind the engine's back.
                let revived = tokio::task::spawn_blocking(move || db.revive_embedded()).await;
                match revived {
                    Ok(Ok(true)) => tracing::warn!(
                        "the embedded PostgreSQL had stopped; it was started again on the same port"
                    ),
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "the embedded PostgreSQL is down and could not be started again")
                    }
                    _ => {}
                }
            }
        });
        Some(Supervisor { stop, task })
    }

    fn revive_embedded(&self) -> Result<bool, embedded::EmbeddedError> {
        crate::sync::lock(&self.embedded)
            .as_ref()
            .map_or(Ok(false), EmbeddedPostgres::revive)
    }

    /// Whether this database is the embedded server.
    pub fn is_embedded(&self) -> bool {
        self.is_embedded
    }

    /// Leaves the embedded server, stopping it if this process was its last
    /// user, even while other parts of the engine still hold the database
    /// (their connections then fail): how `assay up` keeps its promise to stop
    /// within its grace period. Nothing for an external server. Idempotent.
    pub async fn shutdown(&self) -> Result<(), DbError> {
        let server = self.take_embedded();
        stop_embedded(server).await
    }

    fn take_embedded(&self) -> Option<EmbeddedPostgres> {
        crate::sync::lock(&self.embedded).take()
    }

    /// Closes the pools and, if this process was the last user of the embedded
    /// server, stops it. Dropping does the same; this reports errors.
    pub async fn close(self) -> Result<(), DbError> {
        let server = self.take_embedded();
        // The pools go first, so their connections close before the server stops.
        drop(self);
        stop_embedded(server).await
    }
}

async fn stop_embedded(server: Option<EmbeddedPostgres>) -> Result<(), DbError> {
    if let Some(server) = server {
        tokio::task::spawn_blocking(move || server.stop())
            .await
            .map_err(|e| DbError::Unavailable {
                target: "embedded server".into(),
                message: e.to_string(),
            })??;
    }
    Ok(())
}

/// The task keeping an embedded server running (see
/// [`Database::supervise_embedded`]).
#[derive(Debug)]
pub struct Supervisor {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Supervisor {
    /// Stops supervising and waits until the task, and any check it was
    /// running, is over.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Creates the `assay` database in a fresh embedded cluster. Two processes may
/// race here; losing the race (duplicate_database) is fine.
async fn ensure_database(server: &EmbeddedPostgres) -> Result<(), DbError> {
    let target = format!("embedded PostgreSQL on 127.0.0.1:{}", server.port());
    let (client, connection) = server
        .pg_config("postgres")
        .connect(NoTls)
        .await
        .map_err(|e| DbError::Unavailable {
            target: target.clone(),
            message: pg_message(&e),
        })?;
    let driver = tokio::spawn(connection);
    let exists = client
        .query_opt(
            "SELECT 1 FROM pg_database WHERE datname = $1",
            &[&embedded::DATABASE],
        )
        .await
        .map_err(DbError::query("looking for the assay database"))?
        .is_some();
    if !exists {
        let create = format!("CREATE DATABASE {}", embedded::DATABASE);
        // Two processes creating it at once: the loser sees duplicate_database, or
        // a unique violation on pg_database when both passed the existence check.
        let lost_race = |e: &tokio_postgres::Error| {
            e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE)
                || e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
        };
        if let Err(e) = client.batch_execute(&create).await
            && !lost_race(&e)
        {
            return Err(DbError::Query {
                context: "creating the assay database",
                cause: e,
            });
        }
    }
    drop(client);
    let _ = driver.await;
    Ok(())
}

/// PostgreSQL's own words for an error (tokio-postgres' Display says only "db error").
pub fn pg_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut text = format!("{} (SQLSTATE {})", db.message(), db.code().code());
            if let Some(detail) = db.detail() {
                text.push_str(": ");
                text.push_str(detail);
            }
            text
        }
        None => match std::error::Error::source(e) {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        },
    }
}

/// A connection string with every password in it hidden, in either form
/// PostgreSQL takes: `postgres://user:secret@host/db?password=secret` →
/// `postgres://user:***@host/db?password=***`, and
/// `host=h password='a b' user=u` → `host=h password=*** user=u` (a quoted
/// value to its closing quote, or to the end if there is none).
pub fn redact_url(url: &str) -> String {
    static IN_URL: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"(?i)(?P<key>[?&]password=)[^&#]*").expect("a valid pattern"));
    static IN_KEY_VALUES: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"(?i)(?P<key>(?:^|\s)password\s*=\s*)(?:'(?:[^'\\]|\\.)*(?:'|$)|\S*)")
            .expect("a valid pattern")
    });
    if url.contains("://") {
        IN_URL
            .replace_all(&redact_userinfo(url), "${key}***")
            .into_owned()
    } else {
        IN_KEY_VALUES.replace_all(url, "${key}***").into_owned()
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
fn redact_userinfo(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme_end + 3],
                    &userinfo[..colon],
                    &url[at..]
                ),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

fn describe(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "postgres://{}@{host}:{port}/{}",
        config.get_user().unwrap_or(""),
        config.get_dbname().unwrap_or("")
    )
}

/// Where in `value` a NUL character appears (in a key or a string), as a path
/// like `metadata.tags[2]`, if anywhere.
pub fn nul_in_json(value: &serde_json::Value, path: &str) -> Option<String> {
    match value {
        serde_json::Value::String(s) if s.contains('\0') => Some(path.to_string()),
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| nul_in_json(item, &format!("{path}[{i}]"))),
        serde_json::Value::Object(map) => nul_in_object(map, path),
        _ => None,
    }
}

/// Where in `map` a NUL character appears, as [`nul_in_json`] says.
pub fn nul_in_object(
    map: &serde_json::Map<String, serde_json::Value>,
    path: &str,
) -> Option<String> {
    map.iter().find_map(|(key, item)| {
        if key.contains('\0') {
            Some(format!("{path} (a key)"))
        } else {
            nul_in_json(item, &format!("{path}.{key}"))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn url_passwords_are_hidden() {
        assert_eq!(redact_url("postgres://a:b@h:5/d"), "postgres://a:***@h:5/d");
        assert_eq!(redact_url("postgres://a@h/d"), "postgres://a@h/d");
        assert_eq!(redact_url("host=h user=a"), "host=h user=a");
        assert_eq!(
            redact_url("postgres://a:b@h/d?sslmode=disable&password=c&x=y"),
            "postgres://a:***@h/d?sslmode=disable&password=***&x=y"
        );
        assert_eq!(
            redact_url("host=h password=secret user=a"),
            "host=h password=*** user=a"
        );
        assert_eq!(
            redact_url("PASSWORD = 'it\\'s secret' user=a"),
            "PASSWORD = *** user=a"
        );
        assert_eq!(
            redact_url("host=h password='never closed user=a"),
            "host=h password=***"
        );
        // Only the key itself: `user=password` names no password.
        assert_eq!(redact_url("user=password"), "user=password");
    }
}
