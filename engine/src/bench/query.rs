//! `assay bench query`: workloads of parameterized statements, each issued
//! through the `bench-query` plugin (one call per request) and straight
//! through tokio-postgres, at each concurrency level, against tables each
//! workload seeds and drops.
//!
//! Both paths get the same work: the same statements, the same keys (the same
//! seeded sequence per worker), a bb8 pool of the same size with the same
//! settings. The native path keeps its statements prepared per connection and
//! runs them one after the other, each in its own implicit transaction, as a
//! careful application would; the plugin path is a real call as the engine
//! makes it — a fresh instance, the call's session with its transaction —
//! but without the rest of the pipeline (no document or findings stored).
//! With `reuse_instances`, the plugin path is measured a second time with
//! instance reuse on (`limits.reuse_instances`), beside the first.
//! The two give the same guarantees: in a call, reads before the first write
//! run on their own, and a lone write is atomic natively too.

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
use crate::runtime::limits::Reuse;
use crate::runtime::plugin::{CallOutput, Document};
use crate::runtime::steps::{StepSums, StepsPerCall};

/// The default statement; `{table}` is replaced by the seeded table.
pub const DEFAULT_QUERY: &str = "SELECT payload FROM {table} WHERE id = $1";

/// The named workloads `--query` takes (`all` runs each): name, what it is,
/// and its statements (`{table}`: the seeded rows, `{groups}`: a 100-row
/// table each row belongs to, `$1`: a random key).
pub const WORKLOADS: &[(&str, &str, &[&str])] = &[
    ("point", "a point SELECT by primary key", &[DEFAULT_QUERY]),
    (
        "join",
        "a small join: the row and its group",
        &[
            "SELECT r.payload, g.name FROM {table} r JOIN {groups} g ON g.id = r.grp WHERE r.id = $1",
        ],
    ),
    (
        "update",
        "an UPDATE by primary key",
        &["UPDATE {table} SET hits = hits + 1 WHERE id = $1"],
    ),
    (
        "read-write",
        "a two-statement call: read a row, then update it",
        &[
            "SELECT payload, hits FROM {table} WHERE id = $1",
            "UPDATE {table} SET hits = hits + 1 WHERE id = $1",
        ],
    ),
];

/// What one request runs: statements in order, each with the same key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Workload {
    /// Its name (`custom` for a statement given on the command line).
    pub name: String,
    /// Its statements, with `{table}` and `{groups}` still in them.
    pub statements: Vec<String>,
}

impl Workload {
    /// The default workload, `point`.
    pub fn point() -> Self {
        Self {
            name: "point".into(),
            statements: vec![DEFAULT_QUERY.into()],
        }
    }

    /// What one `--query` asks for: a workload's name, `all`, or a statement
    /// of its own (one statement taking the key as `$1`).
    pub fn parse(spec: &str) -> Vec<Self> {
        let named = |(name, _, statements): &(&str, &str, &[&str])| Self {
            name: (*name).to_string(),
            statements: statements.iter().map(|s| s.to_string()).collect(),
        };
        match spec.trim() {
            "all" => WORKLOADS.iter().map(named).collect(),
            spec => match WORKLOADS.iter().find(|(name, _, _)| *name == spec) {
                Some(workload) => vec![named(workload)],
                None => vec![Self {
                    name: "custom".into(),
                    statements: vec![spec.to_string()],
                }],
            },
        }
    }
}
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
    /// The workloads, one after the other.
    pub workloads: Vec<Workload>,
    /// Connections of each path's pool.
    pub pool_size: u32,
    /// Untimed requests per worker before each timed run.
    pub warmup_per_worker: u32,
    /// Also measure the plugin path with instance reuse on.
    pub reuse_instances: bool,
    /// Rounds each level's span is cut into, the paths taking turns.
    pub rounds: u32,
}

/// Everything measured, ready to print or serialise.
#[derive(Debug, Clone, Serialize)]
pub struct QueryReport {
    /// The PostgreSQL measured against (address and version).
    pub server: String,
    /// Each workload measured.
    pub queries: Vec<WorkloadReport>,
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
    /// Rounds each level was measured in, the paths taking turns.
    pub rounds: u32,
}

/// One workload at every level.
#[derive(Debug, Clone, Serialize)]
pub struct WorkloadReport {
    /// The workload's name.
    pub name: String,
    /// Its statements, as run.
    pub statements: Vec<String>,
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
    /// Through the plugin with instance reuse on (`--reuse-instances`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reused: Option<PathReport>,
    /// `reused.throughput_per_s / native.throughput_per_s`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reused_ratio: Option<f64>,
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
    /// Through a plugin: where the mean call's time went, by step, from the
    /// engine's own clocks (see `crate::runtime::steps`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps: Option<StepsPerCall>,
}

/// Runs the benchmark: for each workload, seeds its tables, loads the plugin,
/// measures each level, and drops the tables and the plugin's database access
/// again (also when measuring fails, or `interrupted` resolves meanwhile).
pub async fn run(
    db: &Arc<Database>,
    config: &Config,
    settings: &QuerySettings,
    progress: &ProgressBar,
    interrupted: impl Future<Output = ()>,
) -> anyhow::Result<QueryReport> {
    tokio::pin!(interrupted);
    if settings.levels.is_empty() || settings.levels.contains(&0) {
        bail!("concurrency levels must be at least 1");
    }
    if settings.workloads.is_empty() {
        bail!("no workload to measure");
    }
    let most = settings.levels.iter().copied().max().unwrap_or(1);
    let mut queries = Vec::new();
    for workload in &settings.workloads {
        let paths = QueryPaths::set_up(
            db,
            config,
            settings.rows,
            workload,
            settings.pool_size,
            most,
            settings.reuse_instances,
        )
        .await
        .with_context(|| format!("workload {}", workload.name))?;
        let measured = tokio::select! {
            measured = measure_levels(&paths, settings, progress) => measured,
            () = &mut interrupted => Err(anyhow::anyhow!(
                "interrupted; the benchmark's tables and the plugin's database access are removed"
            )),
        };
        let statements = paths.statements().to_vec();
        let cleaned = paths.tear_down().await;
        let levels = measured.with_context(|| format!("workload {}", workload.name))?;
        cleaned?;
        queries.push(WorkloadReport {
            name: workload.name.clone(),
            statements,
            levels,
        });
    }
    let (duration_s, requests_per_run) = match settings.span {
        Span::Duration(d) => (Some(d.as_secs_f64()), None),
        Span::Requests(n) => (None, Some(n)),
    };
    Ok(QueryReport {
        server: format!("{} (PostgreSQL {})", db.target, db.server_version),
        queries,
        rows: settings.rows,
        pool_size: settings.pool_size,
        duration_s,
        requests_per_run,
        warmup_per_worker: settings.warmup_per_worker,
        rounds: settings.rounds.max(1),
    })
}

/// The schema this process seeds its tables in.
fn bench_schema() -> String {
    format!("assay_bench_{}", std::process::id())
}

/// `workload`'s statements with its tables in `schema` filled in.
fn statements_in(workload: &Workload, schema: &str) -> Vec<String> {
    workload
        .statements
        .iter()
        .map(|s| {
            s.replace("{table}", &format!("{schema}.rows"))
                .replace("{groups}", &format!("{schema}.groups"))
        })
        .collect()
}

/// The two ways of running the query, set up against a freshly seeded table.
pub struct QueryPaths {
    db: Arc<Database>,
    schema: String,
    statements: Vec<String>,
    plugin: Arc<dyn Target>,
    /// The plugin with instance reuse on, when measured.
    reused: Option<Arc<dyn Target>>,
    native: Arc<dyn Target>,
}

impl QueryPaths {
    /// Seeds a table of `rows` rows (and the 100 groups they belong to),
    /// loads the `bench-query` plugin with access to them, and opens both
    /// pools of `pool_size` connections; ready for up to `concurrency` calls
    /// of `workload` at once (and as many more with `reuse_instances`, which
    /// adds the plugin path with instance reuse on).
    pub async fn set_up(
        db: &Arc<Database>,
        config: &Config,
        rows: u64,
        workload: &Workload,
        pool_size: u32,
        concurrency: usize,
        reuse_instances: bool,
    ) -> anyhow::Result<Self> {
        if rows == 0 {
            bail!("--rows must be at least 1");
        }
        let schema = bench_schema();
        let statements = statements_in(workload, &schema);
        seed(db, &schema, rows).await?;
        let mut paths = Self {
            db: Arc::clone(db),
            schema,
            statements,
            plugin: Arc::new(Unset),
            reused: None,
            native: Arc::new(Unset),
        };
        match paths
            .connect(config, pool_size, concurrency, reuse_instances)
            .await
        {
            Ok(()) => Ok(paths),
            Err(e) => {
                // Best effort: the error that stopped us is the one to report.
                let _ = paths.tear_down().await;
                Err(e)
            }
        }
    }

    /// The statements both paths run for each request.
    pub fn statements(&self) -> &[String] {
        &self.statements
    }

    /// One request through the plugin.
    pub async fn plugin(&self, key: i64) -> Result<(), RequestFailed> {
        self.plugin.call(key).await.map_err(RequestFailed)
    }

    /// One request through the plugin with instance reuse on (set up with
    /// `reuse_instances`; fails otherwise).
    pub async fn plugin_reused(&self, key: i64) -> Result<(), RequestFailed> {
        match &self.reused {
            Some(reused) => reused.call(key).await.map_err(RequestFailed),
            None => Err(RequestFailed("set up without instance reuse".into())),
        }
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
        pool_size: u32,
        concurrency: usize,
        reuse_instances: bool,
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
        config.limits.warm_instances = config
            .limits
            .warm_instances
            .max(u32::try_from(concurrency).unwrap_or(u32::MAX));
        config.plugins.grants.insert(
            PLUGIN.into(),
            crate::config::PluginGrants {
                read: vec![format!("{}.groups", self.schema)],
                write: vec![format!("{}.rows", self.schema)],
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
        self.native = Arc::new(NativeTarget::new(&self.db, &self.statements, pool_size).await?);
        let limits = CallLimits::for_plugin(&config.limits, PLUGIN);
        if reuse_instances {
            // Kept instances of one plugin are bounded by its concurrent
            // calls; calls here are made directly, so let that be all of them.
            let concurrent_calls = limits
                .concurrent_calls
                .max(u32::try_from(concurrency).unwrap_or(u32::MAX));
            self.reused = Some(Arc::new(PluginTarget {
                runtime: Arc::clone(&runtime),
                plugin: Arc::clone(&plugin),
                limits: CallLimits {
                    reuse: Reuse::when(true, config.limits.calls_per_instance),
                    concurrent_calls,
                    ..limits.clone()
                },
                statements: self.statements.clone(),
            }));
        }
        self.plugin = Arc::new(PluginTarget {
            runtime,
            plugin,
            limits: CallLimits {
                reuse: None,
                ..limits
            },
            statements: self.statements.clone(),
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
         CREATE TABLE {schema}.groups (id int PRIMARY KEY, name text NOT NULL);
         INSERT INTO {schema}.groups SELECT g, 'group ' || g FROM generate_series(0, 99) AS g;
         CREATE TABLE {schema}.rows (
             id bigint PRIMARY KEY,
             payload text NOT NULL,
             grp int NOT NULL REFERENCES {schema}.groups (id),
             hits bigint NOT NULL DEFAULT 0
         );"
    ))
    .await
    .context("creating the benchmark tables")?;
    conn.execute(
        &format!(
            "INSERT INTO {schema}.rows (id, payload, grp) SELECT i, md5(i::text), i % 100 FROM generate_series(1, $1::bigint) AS i"
        ),
        &[&rows],
    )
    .await
    .context("seeding the benchmark table")?;
    conn.batch_execute(&format!("ANALYZE {schema}.rows, {schema}.groups"))
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

async fn measure_levels(
    paths: &QueryPaths,
    settings: &QuerySettings,
    progress: &ProgressBar,
) -> anyhow::Result<Vec<LevelReport>> {
    let mut levels = Vec::new();
    for &concurrency in &settings.levels {
        // Every path measured at this level, in order: the plugin, reused
        // (when asked), native.
        let mut targets = vec![&paths.plugin];
        targets.extend(paths.reused.as_ref());
        targets.push(&paths.native);
        let mut reports = measure_interleaved(&targets, concurrency, settings, progress).await;
        let native = reports.pop().unwrap_or_else(PathReport::nothing);
        let reused = paths.reused.as_ref().and_then(|_| reports.pop());
        let plugin = reports.pop().unwrap_or_else(PathReport::nothing);
        if plugin.requests == 0 {
            match plugin.first_error {
                Some(error) => bail!("every request through the plugin failed: {error}"),
                // Only a span of time can hold no request at all.
                None => bail!(
                    "no request through the plugin was made at concurrency {concurrency}: {:?} cut into {} rounds leaves no time for one; give a longer --duration",
                    match settings.span {
                        Span::Duration(d) => d,
                        Span::Requests(_) => Duration::ZERO,
                    },
                    settings.rounds.max(1)
                ),
            }
        }
        let ratio_of = |path: &PathReport| {
            if native.throughput_per_s > 0.0 {
                path.throughput_per_s / native.throughput_per_s
            } else {
                0.0
            }
        };
        let ratio = ratio_of(&plugin);
        let reused_ratio = reused.as_ref().map(ratio_of);
        levels.push(LevelReport {
            concurrency,
            plugin,
            native,
            ratio,
            reused,
            reused_ratio,
        });
    }
    Ok(levels)
}

/// Each target measured at `concurrency` over the whole span, in
/// `settings.rounds` rounds that take turns (plugin, native, plugin, …): a
/// machine that slows down or speeds up during the command then affects
/// every path alike, which a run of each after the other does not ensure.
/// Each round of a path gets the same keys as the same round of the others.
async fn measure_interleaved(
    targets: &[&Arc<dyn Target>],
    concurrency: usize,
    settings: &QuerySettings,
    progress: &ProgressBar,
) -> Vec<PathReport> {
    let rows = i64::try_from(settings.rows).unwrap_or(i64::MAX);
    // Warm-up: connections opened, statements prepared, code paths hot.
    let warmup = Span::Requests(u64::from(settings.warmup_per_worker) * concurrency as u64);
    for target in targets {
        let _ = workers(target, concurrency, warmup, rows, 0, None).await;
    }
    let rounds = settings.rounds.max(1);
    let mut measured: Vec<Measured> = targets.iter().map(|_| Measured::default()).collect();
    for round in 0..rounds {
        let span = settings.span.part(round, rounds);
        for (target, measured) in targets.iter().zip(&mut measured) {
            let before = target.pool_statistics();
            let steps_before = target.steps();
            let started = Instant::now();
            let seed = 1 + u64::from(round);
            let outcomes = workers(target, concurrency, span, rows, seed, Some(progress)).await;
            measured.seconds += started.elapsed().as_secs_f64();
            let after = target.pool_statistics();
            measured.gets += after.get_started.saturating_sub(before.get_started);
            measured.waited += after.get_wait_time.saturating_sub(before.get_wait_time);
            if let (Some(after), Some(before)) = (target.steps(), steps_before) {
                *measured.steps.get_or_insert_with(StepSums::default) += after - before;
            }
            for outcome in outcomes {
                measured.samples.extend(outcome.samples);
                measured.errors += outcome.errors;
                if measured.first_error.is_none() {
                    measured.first_error = outcome.first_error;
                }
            }
        }
    }
    measured.into_iter().map(Measured::report).collect()
}

/// What one path measured, added up over the rounds.
#[derive(Default)]
struct Measured {
    samples: Vec<Duration>,
    errors: u64,
    first_error: Option<String>,
    seconds: f64,
    gets: u64,
    waited: Duration,
    steps: Option<StepSums>,
}

impl Measured {
    fn report(mut self) -> PathReport {
        let requests = self.samples.len() as u64 - self.errors;
        PathReport {
            requests,
            errors: self.errors,
            seconds: self.seconds,
            throughput_per_s: requests as f64 / self.seconds.max(f64::EPSILON),
            latency: Latency::of(&mut self.samples),
            pool_wait_ms_mean: self.waited.as_secs_f64() * 1_000.0 / self.gets.max(1) as f64,
            first_error: self.first_error,
            steps: self.steps.and_then(|steps| steps.per_call()),
        }
    }
}

impl PathReport {
    /// A path that was not measured at all.
    fn nothing() -> Self {
        Measured::default().report()
    }
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
    /// The steps of every call so far, for a path through a plugin.
    fn steps(&self) -> Option<StepSums> {
        None
    }
}

struct PluginTarget {
    runtime: Arc<Runtime>,
    plugin: Arc<RegisteredPlugin>,
    limits: CallLimits,
    statements: Vec<String>,
}

impl Target for PluginTarget {
    fn call(&self, key: i64) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let doc = Document {
                id: "00000000-0000-0000-0000-000000000000".into(),
                kind: "bench-query".into(),
                // The plugin's format: each statement and its key, separated
                // by a line holding only `;`.
                text: self
                    .statements
                    .iter()
                    .map(|s| format!("{s}\n{key}"))
                    .collect::<Vec<_>>()
                    .join("\n;\n"),
                metadata: "{}".into(),
            };
            match self
                .plugin
                .call(&self.runtime, &self.limits, Default::default(), doc)
                .await
            {
                Ok(CallOutput::Findings(_)) => Ok(()),
                Ok(CallOutput::Processed(..)) => Err("bench-query returned a document".into()),
                Err(failure) => Err(failure.to_string()),
            }
        })
    }

    fn pool_statistics(&self) -> bb8::Statistics {
        self.plugin.capabilities.sql.pool().state().statistics
    }

    fn steps(&self) -> Option<StepSums> {
        Some(self.runtime.steps().snapshot())
    }
}

/// Connections of the native path, each with the statements prepared once.
struct NativeManager {
    config: tokio_postgres::Config,
    statements: Vec<String>,
}

struct NativeConnection {
    client: Client,
    statements: Vec<Statement>,
}

impl bb8::ManageConnection for NativeManager {
    type Connection = NativeConnection;
    type Error = tokio_postgres::Error;

    async fn connect(&self) -> Result<NativeConnection, tokio_postgres::Error> {
        let (client, connection) = self.config.connect(NoTls).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut statements = Vec::new();
        for sql in &self.statements {
            statements.push(client.prepare(sql).await?);
        }
        Ok(NativeConnection { client, statements })
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
    /// How each statement binds the key.
    keys: Vec<KeyType>,
}

impl NativeTarget {
    async fn new(db: &Database, statements: &[String], pool_size: u32) -> anyhow::Result<Self> {
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
        let mut keys = Vec::new();
        for query in statements {
            let statement = client.prepare(query).await.map_err(|e| {
                anyhow::anyhow!(
                    "the query does not prepare: {} ({query})",
                    crate::db::pg_message(&e)
                )
            })?;
            keys.push(match statement.params() {
                [only] if *only == Type::INT2 => KeyType::Int2,
                [only] if *only == Type::INT4 => KeyType::Int4,
                [only] if *only == Type::INT8 => KeyType::Int8,
                [only] if *only == Type::TEXT || *only == Type::VARCHAR => KeyType::Text,
                other => bail!(
                    "the query must take exactly one key parameter, $1, of an integer or text type (it takes {}: {query})",
                    other.len()
                ),
            });
        }
        drop(client);
        // The same pool settings as a plugin's pool (see capability::sql::pool).
        let pool = bb8::Pool::builder()
            .max_size(pool_size.max(1))
            .min_idle(None)
            .test_on_check_out(false)
            .connection_timeout(Duration::from_millis(30_000))
            .build_unchecked(NativeManager {
                config,
                statements: statements.to_vec(),
            });
        Ok(Self { pool, keys })
    }
}

impl Target for NativeTarget {
    fn call(&self, key: i64) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let conn = self.pool.get().await.map_err(|e| format!("{e:?}"))?;
            for (statement, key_type) in conn.statements.iter().zip(&self.keys) {
                let result = match key_type {
                    KeyType::Int2 => {
                        let key = i16::try_from(key).map_err(|e| e.to_string())?;
                        conn.client.query(statement, &[&key]).await
                    }
                    KeyType::Int4 => {
                        let key = i32::try_from(key).map_err(|e| e.to_string())?;
                        conn.client.query(statement, &[&key]).await
                    }
                    KeyType::Int8 => conn.client.query(statement, &[&key]).await,
                    KeyType::Text => {
                        let key = key.to_string();
                        conn.client.query(statement, &[&key]).await
                    }
                };
                result.map_err(|e| crate::db::pg_message(&e))?;
            }
            Ok(())
        })
    }

    fn pool_statistics(&self) -> bb8::Statistics {
        self.pool.state().statistics
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
/// Dropping the future stops the workers (an interrupted benchmark).
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
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..concurrency {
        let issued = Arc::clone(&issued);
        let target = Arc::clone(target);
        let progress = progress.cloned();
        tasks.spawn(async move {
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
        });
    }
    let mut outcomes = Vec::new();
    while let Some(ended) = tasks.join_next().await {
        match ended {
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
