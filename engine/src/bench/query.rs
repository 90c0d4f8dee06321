//! `assay bench query`: one parameterized query, issued through the
//! `bench-query` plugin and straight through tokio-postgres, at each
//! concurrency level, against a table this run seeds and drops.
//!
//! Both paths get the same work: the same statement, the same keys (the same
//! seeded sequence per worker), a bb8 pool of the same size with the same
//! settings. The native path keeps its statement prepared per connection, as a
//! careful application would; the plugin path is a real call as the engine
//! makes it — a fresh instance, the call's transaction, the session reset —
//! but without the rest of the pipeline (no document or findings stored).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::future::BoxFuture;
use indicatif::ProgressBar;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde::Serialize;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, NoTls, Statement};

use super::{Latency, Span};
use crate::config::Config;
use crate::db::Database;
use crate::registry::{PluginLoader, PluginSource, RegisteredPlugin};
use crate::runtime::Runtime;
use crate::runtime::call::CallLimits;
use crate::runtime::plugin::{CallOutput, Document};

/// The default statement; `{table}` is replaced by the seeded table.
pub const DEFAULT_QUERY: &str = "SELECT payload FROM {table} WHERE id = $1";
/// The plugin's name (as its manifest gives it).
const PLUGIN: &str = "bench-query";

/// What to measure.
#[derive(Debug, Clone)]
pub struct QuerySettings {
    /// Concurrent workers, one run per level.
    pub levels: Vec<usize>,
    /// How long each run lasts.
    pub span: Span,
    /// Rows seeded into the table (keys `1..=rows`).
    pub rows: u64,
    /// The statement; `{table}` is replaced, `$1` is the key.
    pub query: String,
    /// Connections of each path's pool.
    pub pool_size: u32,
    /// Untimed requests per worker before each timed run.
    pub warmup_per_worker: u32,
}

/// Everything measured, ready to print or serialise.
#[derive(Debug, Clone, Serialize)]
pub struct QueryReport {
    /// The PostgreSQL measured against (address and version).
    pub server: String,
    /// The statement, as run.
    pub query: String,
    /// Rows in the seeded table.
    pub rows: u64,
    /// Connections of each path's pool.
    pub pool_size: u32,
    /// Seconds per run, when runs are timed.
    pub duration_s: Option<f64>,
    /// Requests per run, when runs are counted.
    pub requests_per_run: Option<u64>,
    /// Untimed requests per worker before each run.
    pub warmup_per_worker: u32,
    /// One entry per concurrency level.
    pub levels: Vec<LevelReport>,
}

/// Both paths at one concurrency level.
#[derive(Debug, Clone, Serialize)]
pub struct LevelReport {
    /// Concurrent workers.
    pub concurrency: usize,
    /// Through the plugin.
    pub plugin: PathReport,
    /// Straight through tokio-postgres.
    pub native: PathReport,
    /// `plugin.throughput_per_s / native.throughput_per_s`.
    pub ratio: f64,
}

/// One path at one level.
#[derive(Debug, Clone, Serialize)]
pub struct PathReport {
    /// Requests that succeeded.
    pub requests: u64,
    /// Requests that failed.
    pub errors: u64,
    /// Wall-clock time of the run.
    pub seconds: f64,
    /// Successful requests per second.
    pub throughput_per_s: f64,
    /// Latency of every request (failed ones included).
    pub latency: Latency,
    /// Mean time a request waited for a pooled connection, from bb8's own counters.
    pub pool_wait_ms_mean: f64,
    /// The first failure, if any.
    pub first_error: Option<String>,
}

/// Runs the benchmark: seeds the table, loads the plugin, measures each
/// level, and drops the table and the plugin's database access again (also
/// when measuring fails).
pub async fn run(
    db: &Arc<Database>,
    config: &Config,
    settings: &QuerySettings,
    progress: &ProgressBar,
) -> anyhow::Result<QueryReport> {
    if settings.levels.is_empty() || settings.levels.contains(&0) {
        bail!("concurrency levels must be at least 1");
    }
    let most = settings.levels.iter().copied().max().unwrap_or(1);
    let paths = QueryPaths::set_up(
        db,
        config,
        settings.rows,
        &settings.query,
        settings.pool_size,
        most,
    )
    .await?;
    let measured = measure_all(&paths, settings, progress).await;
    let cleaned = paths.tear_down().await;
    let report = measured?;
    cleaned?;
    Ok(report)
}

/// The two ways of running the query, set up against a freshly seeded table.
pub struct QueryPaths {
    db: Arc<Database>,
    schema: String,
    query: String,
    plugin: Arc<dyn Target>,
    native: Arc<dyn Target>,
}

impl QueryPaths {
    /// Seeds a table of `rows` rows, loads the `bench-query` plugin with read
    /// access to it, and opens both pools of `pool_size` connections; ready
    /// for up to `concurrency` calls at once.
    pub async fn set_up(
        db: &Arc<Database>,
        config: &Config,
        rows: u64,
        query: &str,
        pool_size: u32,
        concurrency: usize,
    ) -> anyhow::Result<Self> {
        if rows == 0 {
            bail!("--rows must be at least 1");
        }
        let schema = format!("assay_bench_{}", std::process::id());
        let table = format!("{schema}.rows");
        let query = query.replace("{table}", &table);
        seed(db, &schema, rows).await?;
        let mut paths = Self {
            db: Arc::clone(db),
            schema,
            query,
            plugin: Arc::new(Unset),
            native: Arc::new(Unset),
        };
        match paths.connect(config, &table, pool_size, concurrency).await {
            Ok(()) => Ok(paths),
            Err(e) => {
                // Best effort: the error that stopped us is the one to report.
                let _ = paths.tear_down().await;
                Err(e)
            }
        }
    }

    /// The statement both paths run.
    pub fn query(&self) -> &str {
        &self.query
    }

    /// One request through the plugin.
    pub async fn plugin(&self, key: i64) -> Result<(), RequestFailed> {
        self.plugin.call(key).await.map_err(RequestFailed)
    }

    /// One request straight through tokio-postgres.
    pub async fn native(&self, key: i64) -> Result<(), RequestFailed> {
        self.native.call(key).await.map_err(RequestFailed)
    }

    /// Drops the table and the plugin's database access.
    pub async fn tear_down(self) -> anyhow::Result<()> {
        clean_up(&self.db, &self.schema).await
    }

    async fn connect(
        &mut self,
        config: &Config,
        table: &str,
        pool_size: u32,
        concurrency: usize,
    ) -> anyhow::Result<()> {
        let mut config = config.clone();
        config.plugins.bundled = false;
        config.sandbox.connections_per_plugin = pool_size;
        config.sandbox.connection_budget = config.sandbox.connection_budget.max(pool_size);
        // Calls are made directly (no admission control); the instance pool
        // must hold the most that run at once.
        config.limits.max_concurrent_calls = config
            .limits
            .max_concurrent_calls
            .max(u32::try_from(concurrency).unwrap_or(u32::MAX));
        config.plugins.grants.insert(
            PLUGIN.into(),
            crate::config::PluginGrants {
                read: vec![table.to_string()],
                write: vec![],
            },
        );
        let runtime = Arc::new(Runtime::new(&config, None)?);
        let loader =
            PluginLoader::new(Arc::clone(&runtime), Arc::clone(&self.db), config.clone()).await?;
        let loaded = loader
            .compile(crate::bundled::BENCH_QUERY)
            .await
            .map_err(anyhow::Error::msg)
            .context("loading the bench-query plugin")?;
        let plugin = loader
            .register(
                PluginSource::Bundled("bench_query.wasm"),
                loaded,
                crate::bundled::BENCH_QUERY,
            )
            .await
            .map_err(|e| anyhow::anyhow!("registering the bench-query plugin: {e}"))?;
        self.native = Arc::new(NativeTarget::new(&self.db, &self.query, pool_size).await?);
        let limits = CallLimits::for_plugin(&config.limits, PLUGIN);
        self.plugin = Arc::new(PluginTarget {
            runtime,
            plugin,
            limits,
            query: self.query.clone(),
        });
        Ok(())
    }
}

/// Neither path yet (set-up not finished).
struct Unset;

impl Target for Unset {
    fn call(&self, _key: i64) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Err("not set up".to_string()) })
    }

    fn pool_statistics(&self) -> bb8::Statistics {
        bb8::Statistics::default()
    }
}

async fn seed(db: &Database, schema: &str, rows: u64) -> anyhow::Result<()> {
    let conn = db.connection().await?;
    let rows = i64::try_from(rows).context("--rows is too large")?;
    conn.batch_execute(&format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE;
         CREATE SCHEMA {schema};
         CREATE TABLE {schema}.rows (id bigint PRIMARY KEY, payload text NOT NULL);"
    ))
    .await
    .context("creating the benchmark table")?;
    conn.execute(
        &format!(
            "INSERT INTO {schema}.rows SELECT i, md5(i::text) FROM generate_series(1, $1::bigint) AS i"
        ),
        &[&rows],
    )
    .await
    .context("seeding the benchmark table")?;
    conn.batch_execute(&format!("ANALYZE {schema}.rows"))
        .await
        .context("analysing the benchmark table")?;
    Ok(())
}

async fn clean_up(db: &Database, schema: &str) -> anyhow::Result<()> {
    crate::capability::sql::sandbox::drop_plugin(db, PLUGIN, true)
        .await
        .context("removing the bench-query plugin's database access")?;
    let conn = db.connection().await?;
    conn.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await
        .context("dropping the benchmark table")?;
    Ok(())
}

async fn measure_all(
    paths: &QueryPaths,
    settings: &QuerySettings,
    progress: &ProgressBar,
) -> anyhow::Result<QueryReport> {
    let mut levels = Vec::new();
    for &concurrency in &settings.levels {
        let plugin = measure(&paths.plugin, concurrency, settings, progress).await;
        let native = measure(&paths.native, concurrency, settings, progress).await;
        if plugin.requests == 0 {
            bail!(
                "every request through the plugin failed: {}",
                plugin.first_error.unwrap_or_default()
            );
        }
        let ratio = if native.throughput_per_s > 0.0 {
            plugin.throughput_per_s / native.throughput_per_s
        } else {
            0.0
        };
        levels.push(LevelReport {
            concurrency,
            plugin,
            native,
            ratio,
        });
    }
    let (duration_s, requests_per_run) = match settings.span {
        Span::Duration(d) => (Some(d.as_secs_f64()), None),
        Span::Requests(n) => (None, Some(n)),
    };
    let db = &paths.db;
    Ok(QueryReport {
        server: format!("{} (PostgreSQL {})", db.target, db.server_version),
        query: paths.query.clone(),
        rows: settings.rows,
        pool_size: settings.pool_size,
        duration_s,
        requests_per_run,
        warmup_per_worker: settings.warmup_per_worker,
        levels,
    })
}

/// Why one benchmark request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RequestFailed(pub String);

/// One way of running the query for a key.
trait Target: Send + Sync + 'static {
    fn call(&self, key: i64) -> BoxFuture<'_, Result<(), String>>;
    /// bb8's counters of the path's pool.
    fn pool_statistics(&self) -> bb8::Statistics;
}

struct PluginTarget {
    runtime: Arc<Runtime>,
    plugin: Arc<RegisteredPlugin>,
    limits: CallLimits,
    query: String,
}

impl Target for PluginTarget {
    fn call(&self, key: i64) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let doc = Document {
                id: "00000000-0000-0000-0000-000000000000".into(),
                kind: "bench-query".into(),
                text: format!("{}\n{key}", self.query),
                metadata: "{}".into(),
            };
            match self.plugin.call(&self.runtime, &self.limits, doc).await {
                Ok(CallOutput::Findings(_)) => Ok(()),
                Ok(CallOutput::Processed(..)) => Err("bench-query returned a document".into()),
                Err(failure) => Err(failure.to_string()),
            }
        })
    }

    fn pool_statistics(&self) -> bb8::Statistics {
        self.plugin.capabilities.sql.pool().state().statistics
    }
}

/// Connections of the native path, each with the statement prepared once.
struct NativeManager {
    config: tokio_postgres::Config,
    query: String,
}

struct NativeConnection {
    client: Client,
    statement: Statement,
}

impl bb8::ManageConnection for NativeManager {
    type Connection = NativeConnection;
    type Error = tokio_postgres::Error;

    async fn connect(&self) -> Result<NativeConnection, tokio_postgres::Error> {
        let (client, connection) = self.config.connect(NoTls).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let statement = client.prepare(&self.query).await?;
        Ok(NativeConnection { client, statement })
    }

    async fn is_valid(&self, conn: &mut NativeConnection) -> Result<(), tokio_postgres::Error> {
        conn.client.simple_query("").await.map(|_| ())
    }

    fn has_broken(&self, conn: &mut NativeConnection) -> bool {
        conn.client.is_closed()
    }
}

/// How the key is bound natively: as the type the statement's `$1` has (the
/// plugin path's values are converted the same way by the host).
#[derive(Debug, Clone, Copy)]
enum KeyType {
    Int2,
    Int4,
    Int8,
    Text,
}

struct NativeTarget {
    pool: bb8::Pool<NativeManager>,
    key: KeyType,
}

impl NativeTarget {
    async fn new(db: &Database, query: &str, pool_size: u32) -> anyhow::Result<Self> {
        let mut config = db.pg_config().clone();
        config.application_name("assay bench native");
        // Check the statement once, with a clear error, before anything is timed.
        let (client, connection) = config
            .connect(NoTls)
            .await
            .context("connecting for the native path")?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let statement = client.prepare(query).await.map_err(|e| {
            anyhow::anyhow!("the query does not prepare: {}", crate::db::pg_message(&e))
        })?;
        let key = match statement.params() {
            [only] if *only == Type::INT2 => KeyType::Int2,
            [only] if *only == Type::INT4 => KeyType::Int4,
            [only] if *only == Type::INT8 => KeyType::Int8,
            [only] if *only == Type::TEXT || *only == Type::VARCHAR => KeyType::Text,
            other => bail!(
                "the query must take exactly one key parameter, $1, of an integer or text type (it takes {})",
                other.len()
            ),
        };
        drop(client);
        // The same pool settings as a plugin's pool (see capability::sql::pool).
        let pool = bb8::Pool::builder()
            .max_size(pool_size.max(1))
            .min_idle(None)
            .test_on_check_out(false)
            .connection_timeout(Duration::from_millis(30_000))
            .build_unchecked(NativeManager {
                config,
                query: query.to_string(),
            });
        Ok(Self { pool, key })
    }
}

impl Target for NativeTarget {
    fn call(&self, key: i64) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let conn = self.pool.get().await.map_err(|e| format!("{e:?}"))?;
            let result = match self.key {
                KeyType::Int2 => {
                    let key = i16::try_from(key).map_err(|e| e.to_string())?;
                    conn.client.query(&conn.statement, &[&key]).await
                }
                KeyType::Int4 => {
                    let key = i32::try_from(key).map_err(|e| e.to_string())?;
                    conn.client.query(&conn.statement, &[&key]).await
                }
                KeyType::Int8 => conn.client.query(&conn.statement, &[&key]).await,
                KeyType::Text => {
                    let key = key.to_string();
                    conn.client.query(&conn.statement, &[&key]).await
                }
            };
            result.map(|_| ()).map_err(|e| crate::db::pg_message(&e))
        })
    }

    fn pool_statistics(&self) -> bb8::Statistics {
        self.pool.state().statistics
    }
}

/// One timed run of `target` with `concurrency` workers (after a warm-up).
async fn measure(
    target: &Arc<dyn Target>,
    concurrency: usize,
    settings: &QuerySettings,
    progress: &ProgressBar,
) -> PathReport {
    let rows = i64::try_from(settings.rows).unwrap_or(i64::MAX);
    // Warm-up: connections opened, statements prepared, code paths hot.
    let warmup = Span::Requests(u64::from(settings.warmup_per_worker) * concurrency as u64);
    let _ = workers(target, concurrency, warmup, rows, 0, None).await;

    let before = target.pool_statistics();
    let started = Instant::now();
    let outcomes = workers(target, concurrency, settings.span, rows, 1, Some(progress)).await;
    let seconds = started.elapsed().as_secs_f64();
    let after = target.pool_statistics();

    let mut samples = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for outcome in outcomes {
        samples.extend(outcome.samples);
        errors += outcome.errors;
        if first_error.is_none() {
            first_error = outcome.first_error;
        }
    }
    let requests = samples.len() as u64 - errors;
    let gets = after.get_started.saturating_sub(before.get_started).max(1);
    let waited = after.get_wait_time.saturating_sub(before.get_wait_time);
    PathReport {
        requests,
        errors,
        seconds,
        throughput_per_s: requests as f64 / seconds.max(f64::EPSILON),
        latency: Latency::of(&mut samples),
        pool_wait_ms_mean: waited.as_secs_f64() * 1_000.0 / gets as f64,
        first_error,
    }
}

struct WorkerOutcome {
    samples: Vec<Duration>,
    errors: u64,
    first_error: Option<String>,
}

/// Runs `concurrency` workers, each a task of its own (so plugin code runs on
/// every runtime thread), over `span`. Worker `w` draws its keys from a
/// generator seeded with `(seed, w)`, so both paths see the same keys.
async fn workers(
    target: &Arc<dyn Target>,
    concurrency: usize,
    span: Span,
    rows: i64,
    seed: u64,
    progress: Option<&ProgressBar>,
) -> Vec<WorkerOutcome> {
    let issued = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|w| {
            let issued = Arc::clone(&issued);
            let target = Arc::clone(target);
            let progress = progress.cloned();
            tokio::spawn(async move {
                let mut rng =
                    StdRng::seed_from_u64(seed.wrapping_mul(1_000_003).wrapping_add(w as u64));
                let mut outcome = WorkerOutcome {
                    samples: Vec::new(),
                    errors: 0,
                    first_error: None,
                };
                loop {
                    let more = match span {
                        Span::Requests(n) => issued.fetch_add(1, Ordering::Relaxed) < n,
                        Span::Duration(d) => started.elapsed() < d,
                    };
                    if !more {
                        break;
                    }
                    let key = rng.random_range(1..=rows);
                    let call_started = Instant::now();
                    let result = target.call(key).await;
                    outcome.samples.push(call_started.elapsed());
                    if let Err(e) = result {
                        outcome.errors += 1;
                        outcome.first_error.get_or_insert(e);
                    }
                    if let Some(progress) = &progress {
                        progress.inc(1);
                    }
                }
                outcome
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        match task.await {
            Ok(outcome) => outcomes.push(outcome),
            Err(e) => outcomes.push(WorkerOutcome {
                samples: Vec::new(),
                errors: 1,
                first_error: Some(format!("a worker stopped: {e}")),
            }),
        }
    }
    outcomes
}
