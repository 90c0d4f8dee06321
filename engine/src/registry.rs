//! The set of loaded plugins: the bundled ones and every component in the
//! plugin directory, each registered in the database with its exact version.
//! [`live`] keeps the set current while the engine runs ([`watch`] feeds it file
//! changes); [`history`] records every version for rollback.

pub mod history;
pub mod live;
pub mod watch;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::bundled;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::capability::sql::SandboxPool;
use crate::capability::sql::pool::{PoolSettings, build_pool};
use crate::config::Config;
use crate::db::sandbox::{self, SandboxError};
use crate::db::{Database, DbError};
use crate::runtime::Runtime;
use crate::runtime::bindings::types::Stage;
use crate::runtime::call::CallLimits;
use crate::runtime::loader::{self, LoadedPlugin, stage_name};

/// Where a plugin came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginSource {
    /// Built into the binary (file name of the component).
    Bundled(&'static str),
    /// A file in the plugin directory.
    File(PathBuf),
}

impl std::fmt::Display for PluginSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PluginSource::Bundled(name) => write!(f, "bundled {name}"),
            PluginSource::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// A loaded plugin with its database identity.
pub struct RegisteredPlugin {
    /// The compiled plugin.
    pub loaded: LoadedPlugin,
    /// `assay.plugin_versions.id`.
    pub version_id: i64,
    /// Connections as the plugin's own database role.
    pub pool: SandboxPool,
    /// When this version was loaded.
    pub loaded_at: std::time::SystemTime,
    /// Where it came from.
    pub source: PluginSource,
}

impl std::fmt::Debug for RegisteredPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegisteredPlugin")
            .field("loaded", &self.loaded)
            .field("version_id", &self.version_id)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl RegisteredPlugin {
    /// The manifest name.
    pub fn name(&self) -> &str {
        &self.loaded.identity.name
    }
}

/// A component that could not be loaded, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadProblem {
    /// The file (or bundled component).
    pub source: String,
    /// What is wrong and what to do.
    pub message: String,
}

impl std::fmt::Display for LoadProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "plugin {}: {}", self.source, self.message)
    }
}

/// Why the registry could not be built at all.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The plugin directory cannot be created or read.
    #[error("cannot read the plugin directory {path}: {cause}; check `plugins.dir` in assay.toml")]
    Dir {
        /// The directory.
        path: String,
        /// The I/O error.
        cause: std::io::Error,
    },
    /// Registering plugin versions failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The sandbox cannot be set up (e.g. the connection budget does not fit the server).
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
}

/// The loaded plugins, in pipeline order: one immutable snapshot. Hot reload
/// swaps in a new snapshot; a run keeps the one it started with.
#[derive(Debug, Default, Clone)]
pub struct Registry {
    /// Prompt-stage plugins by priority (then name), then analysis plugins by name.
    plugins: Vec<Arc<RegisteredPlugin>>,
    /// Components that were refused.
    pub problems: Vec<LoadProblem>,
    /// Hardening the engine could not do (the operator should).
    pub warnings: Vec<String>,
}

impl Registry {
    /// Loads the bundled plugins (unless disabled) and every `*.wasm` in the plugin
    /// directory. A component that fails to load is reported in `problems`, not fatal.
    pub async fn load(
        runtime: &Arc<Runtime>,
        config: &Config,
        db: &Arc<Database>,
    ) -> Result<Self, RegistryError> {
        let loader = PluginLoader::new(Arc::clone(runtime), Arc::clone(db), config.clone()).await?;
        loader.load_all().await
    }

    /// Every loaded plugin, in pipeline order.
    pub fn plugins(&self) -> &[Arc<RegisteredPlugin>] {
        &self.plugins
    }

    /// Plugins of one stage, in the order they run.
    pub fn stage(&self, stage: Stage) -> impl Iterator<Item = &Arc<RegisteredPlugin>> {
        self.plugins
            .iter()
            .filter(move |p| p.loaded.manifest.stage == stage)
    }

    /// The plugin named `name`, if loaded.
    pub fn get(&self, name: &str) -> Option<&Arc<RegisteredPlugin>> {
        self.plugins.iter().find(|p| p.name() == name)
    }

    /// A copy in which `plugin` replaces the plugin of the same name (or joins).
    pub fn with_plugin(&self, plugin: Arc<RegisteredPlugin>) -> Registry {
        let mut next = self.clone();
        next.plugins.retain(|p| p.name() != plugin.name());
        next.plugins.push(plugin);
        next.sort();
        next
    }

    /// A copy without the plugin named `name`.
    pub fn without(&self, name: &str) -> Registry {
        let mut next = self.clone();
        next.plugins.retain(|p| p.name() != name);
        next
    }

    fn sort(&mut self) {
        self.plugins.sort_by(|a, b| {
            let key = |p: &RegisteredPlugin| {
                let m = &p.loaded.manifest;
                (m.stage == Stage::Analysis, m.priority, m.name.clone())
            };
            key(a).cmp(&key(b))
        });
    }
}

/// Why a loaded component could not be registered.
#[derive(Debug)]
pub enum RegisterError {
    /// The database failed (fatal at start-up).
    Db(DbError),
    /// The plugin's sandbox or migrations failed: the plugin is refused, the engine goes on.
    Refused(String),
}

impl std::fmt::Display for RegisterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegisterError::Db(e) => write!(f, "{e}"),
            RegisterError::Refused(m) => write!(f, "{m}"),
        }
    }
}

impl From<DbError> for RegisterError {
    fn from(e: DbError) -> Self {
        RegisterError::Db(e)
    }
}

/// A component to load: where it is from, and its bytes (or why they could not be read).
pub type Candidate = (PluginSource, Result<Vec<u8>, String>);

/// Everything needed to turn component bytes into a registered plugin; shared
/// by start-up and hot reload.
pub struct PluginLoader {
    runtime: Arc<Runtime>,
    db: Arc<Database>,
    config: Config,
    budget: Arc<Semaphore>,
    limits: CallLimits,
    warnings: Vec<String>,
}

impl PluginLoader {
    /// Checks the sandbox budget and hardens the database (once per process).
    pub async fn new(
        runtime: Arc<Runtime>,
        db: Arc<Database>,
        config: Config,
    ) -> Result<Self, RegistryError> {
        let warnings = sandbox::harden(&db, &config.sandbox, config.database.pool_size).await?;
        for warning in &warnings {
            tracing::warn!("{warning}");
        }
        Ok(Self {
            budget: Arc::new(Semaphore::new(config.sandbox.connection_budget as usize)),
            limits: CallLimits::from_config(&config.limits),
            runtime,
            db,
            config,
            warnings,
        })
    }

    /// The configuration plugins are loaded with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The database plugins are registered in.
    pub fn db(&self) -> &Arc<Database> {
        &self.db
    }

    /// The bundled components (unless disabled) and the plugin directory's files.
    pub fn candidates(&self) -> Result<Vec<Candidate>, RegistryError> {
        let mut candidates: Vec<Candidate> = Vec::new();
        if self.config.plugins.bundled {
            for (file, bytes) in bundled::BUNDLED {
                candidates.push((PluginSource::Bundled(file), Ok(bytes.to_vec())));
            }
        }
        for path in plugin_files(&self.config.plugins.dir)? {
            let bytes = if path.extension().is_some_and(|e| e == "cwasm") {
                Err(PRECOMPILED_REFUSED.to_string())
            } else {
                std::fs::read(&path).map_err(|e| format!("cannot read the file: {e}"))
            };
            candidates.push((PluginSource::File(path), bytes));
        }
        Ok(candidates)
    }

    /// Validates and compiles component bytes (within `plugins.load_timeout_ms`).
    pub async fn compile(&self, bytes: &[u8]) -> Result<LoadedPlugin, String> {
        if bytes.is_empty() {
            return Err("the file is empty".to_string());
        }
        let timeout = Duration::from_millis(self.config.plugins.load_timeout_ms);
        match tokio::time::timeout(
            timeout,
            loader::load(&self.runtime, bytes.to_vec(), &self.limits),
        )
        .await
        {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(_) => Err(format!(
                "loading took longer than {} ms (plugins.load_timeout_ms)",
                timeout.as_millis()
            )),
        }
    }

    /// Registers a compiled plugin (version row, sandbox, pool, migrations), keeps
    /// its bytes for rollback and records the load.
    pub async fn register(
        &self,
        source: PluginSource,
        plugin: LoadedPlugin,
        bytes: &[u8],
    ) -> Result<Arc<RegisteredPlugin>, RegisterError> {
        let (version_id, pool) = register(&self.db, &self.config, &self.budget, &plugin).await?;
        history::record_loaded(&self.db, &plugin, &source, bytes).await?;
        Ok(Arc::new(RegisteredPlugin {
            loaded: plugin,
            version_id,
            pool,
            source,
            loaded_at: std::time::SystemTime::now(),
        }))
    }

    /// Records a refused component (best effort: the refusal is reported anyway).
    pub async fn record_refusal(&self, source: &PluginSource, bytes: &[u8], message: &str) {
        if let Err(e) = history::record_refused(&self.db, source, bytes, message).await {
            tracing::warn!(plugin = %source, "cannot record the refusal: {e}");
        }
    }

    /// Loads every candidate into a registry.
    pub async fn load_all(&self) -> Result<Registry, RegistryError> {
        let mut registry = Registry {
            warnings: self.warnings.clone(),
            ..Registry::default()
        };
        let mut loaded: Vec<(PluginSource, LoadedPlugin, Vec<u8>)> = Vec::new();
        for (source, bytes) in self.candidates()? {
            let bytes = match bytes {
                Ok(bytes) => bytes,
                Err(message) => {
                    registry.problems.push(LoadProblem {
                        source: source.to_string(),
                        message,
                    });
                    continue;
                }
            };
            match self.compile(&bytes).await {
                Ok(plugin) => match loaded.iter().position(|(_, p, _)| p.identity.name == plugin.identity.name) {
                    // A file in the plugin directory replaces a bundled plugin of the same name.
                    Some(i) if matches!(loaded[i].0, PluginSource::Bundled(_)) => {
                        tracing::info!(plugin = %plugin.identity.name, file = %source, "replaces the bundled plugin");
                        loaded[i] = (source, plugin, bytes);
                    }
                    Some(i) => registry.problems.push(LoadProblem {
                        source: source.to_string(),
                        message: format!(
                            "plugin name `{}` is already used by {}; give each plugin a unique name",
                            plugin.identity.name, loaded[i].0
                        ),
                    }),
                    None => loaded.push((source, plugin, bytes)),
                },
                Err(message) => {
                    tracing::info!(plugin = %source, "refused: {message}");
                    self.record_refusal(&source, &bytes, &message).await;
                    registry.problems.push(LoadProblem {
                        source: source.to_string(),
                        message,
                    });
                }
            }
        }
        for (source, plugin, bytes) in loaded {
            let label = source.to_string();
            match self.register(source, plugin, &bytes).await {
                Ok(registered) => registry.plugins.push(registered),
                Err(RegisterError::Db(e)) => return Err(e.into()),
                Err(RegisterError::Refused(message)) => registry.problems.push(LoadProblem {
                    source: label,
                    message,
                }),
            }
        }
        registry.sort();
        Ok(registry)
    }
}

/// Why a precompiled artifact in the plugin directory is refused.
pub const PRECOMPILED_REFUSED: &str = "precompiled artifacts (.cwasm) are never loaded: they are native code \
     that would run unchecked; place the .wasm component instead";

/// `*.wasm` (and `*.cwasm`, to refuse) files of the directory, sorted; the
/// directory is created if missing.
fn plugin_files(dir: &Path) -> Result<Vec<PathBuf>, RegistryError> {
    let dir_err = |cause| RegistryError::Dir {
        path: dir.display().to_string(),
        cause,
    };
    std::fs::create_dir_all(dir).map_err(dir_err)?;
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(dir_err)? {
        let path = entry.map_err(dir_err)?.path();
        match path.extension().and_then(|e| e.to_str()) {
            // A .cwasm is listed too, so that it is reported as refused.
            Some("wasm" | "cwasm") if path.is_file() => files.push(path),
            _ => {}
        }
    }
    files.sort();
    Ok(files)
}

/// Records the plugin version and gives the plugin its sandbox (role, schema,
/// grants) in one transaction; then builds its pool and applies its migrations
/// under its own role.
async fn register(
    db: &Database,
    config: &Config,
    budget: &Arc<Semaphore>,
    plugin: &LoadedPlugin,
) -> Result<(i64, SandboxPool), RegisterError> {
    let manifest = &plugin.manifest;
    let name = &plugin.identity.name;
    let grants = config
        .plugins
        .grants
        .get(name.as_str())
        .cloned()
        .unwrap_or_default();
    let mut conn = db.connection().await?;
    // Registrations run one at a time across processes: role, schema and grant
    // changes are not safe to race (see PROVISION_LOCK).
    sandbox::provision_lock(&conn).await?;
    let registered = provision_plugin(&mut conn, plugin, &grants).await;
    sandbox::provision_unlock(&conn).await?;
    drop(conn);
    let (version_id, login) = match registered {
        Ok(done) => done,
        Err(SandboxError::Db(e)) => return Err(e.into()),
        Err(other) => return Err(RegisterError::Refused(other.to_string())),
    };

    let settings = PoolSettings {
        max_connections: config.sandbox.connections_per_plugin,
        connect_timeout: Duration::from_millis(config.database.connect_timeout_ms),
        idle_timeout: Duration::from_millis(config.sandbox.idle_timeout_ms),
        statement_timeout: crate::runtime::call::CallLimits::for_plugin(&config.limits, name)
            .statement_timeout,
    };
    let pool = build_pool(
        db.pg_config(),
        &login.role,
        &login.password,
        budget,
        config.sandbox.connection_budget,
        &settings,
    );
    if !manifest.migrations.is_empty() {
        migrate_plugin(&pool, plugin).await?;
    }
    Ok((version_id, pool))
}

/// The registration transaction: version row and sandbox, committed together.
async fn provision_plugin(
    conn: &mut crate::db::PgConnection,
    plugin: &LoadedPlugin,
    grants: &crate::config::PluginGrants,
) -> Result<(i64, sandbox::PluginLogin), SandboxError> {
    let manifest = &plugin.manifest;
    let name = &plugin.identity.name;
    let stage = stage_name(manifest.stage);
    let tx = conn
        .transaction()
        .await
        .map_err(DbError::query("starting plugin registration"))?;
    let version_id: i64 = tx
        .query_one(
            "INSERT INTO assay.plugin_versions (name, version, content_sha256, stage) VALUES ($1, $2, $3, $4)
             ON CONFLICT (name, content_sha256) DO UPDATE SET version = EXCLUDED.version
             RETURNING id",
            &[name, &manifest.version, &plugin.identity.sha256, &stage],
        )
        .await
        .map_err(DbError::query("registering the plugin version"))?
        .get(0);
    let login = sandbox::provision(&tx, name, grants).await?;
    tx.commit()
        .await
        .map_err(DbError::query("committing plugin registration"))?;
    Ok((version_id, login))
}

/// Applies the plugin's new migrations on its own connection, as its own role,
/// tracked in `assay_migrations` inside its schema (so the record and the change
/// commit together).
async fn migrate_plugin(pool: &SandboxPool, plugin: &LoadedPlugin) -> Result<(), RegisterError> {
    let name = &plugin.identity.name;
    let refused = |what: String| RegisterError::Refused(format!("plugin {name}: {what}"));
    let pg = |e: tokio_postgres::Error| {
        e.as_db_error()
            .map_or_else(|| e.to_string(), |d| d.message().to_string())
    };
    let mut conn = pool.get_owned().await.map_err(|e| {
        refused(format!(
            "cannot connect as its database role to apply migrations: {e}"
        ))
    })?;
    let result = async {
        let tx = conn.client.transaction().await.map_err(|e| refused(pg(e)))?;
        tx.execute("SELECT pg_advisory_xact_lock(hashtext('assay-migrations:' || $1))", &[name])
            .await
            .map_err(|e| refused(pg(e)))?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS assay_migrations (
                 version integer PRIMARY KEY CHECK (version > 0),
                 description text NOT NULL,
                 sha256 text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await
        .map_err(|e| refused(format!("cannot create its migration table: {}", pg(e))))?;
        let applied: Vec<(i32, String)> = tx
            .query("SELECT version, sha256 FROM assay_migrations", &[])
            .await
            .map_err(|e| refused(pg(e)))?
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();
        let mut migrations: Vec<_> = plugin.manifest.migrations.iter().collect();
        migrations.sort_by_key(|m| m.version);
        for migration in migrations {
            let sha = loader::sha256_hex(migration.statement.as_bytes());
            let version = i32::try_from(migration.version)
                .map_err(|_| refused(format!("migration version {} is too large", migration.version)))?;
            match applied.iter().find(|(v, _)| *v == version) {
                Some((_, applied_sha)) if *applied_sha == sha => continue,
                Some(_) => {
                    return Err(refused(format!(
                        "migration {version} ({}) differs from the one already applied; \
                         never edit a released migration, add a new version instead",
                        migration.description
                    )));
                }
                None => {}
            }
            // Extended protocol: exactly one statement per migration step.
            tx.execute(migration.statement.as_str(), &[]).await.map_err(|e| {
                refused(format!("migration {version} ({}) failed: {}", migration.description, pg(e)))
            })?;
            tx.execute(
                "INSERT INTO assay_migrations (version, description, sha256) VALUES ($1, $2, $3)",
                &[&version, &migration.description, &sha],
            )
            .await
            .map_err(|e| refused(pg(e)))?;
            tracing::info!(plugin = %name, version, description = %migration.description, "applied plugin migration");
        }
        tx.commit().await.map_err(|e| refused(pg(e)))
    }
    .await;
    if conn.client.batch_execute("DISCARD ALL").await.is_err() {
        conn.poisoned = true;
    }
    result
}
