//! The set of loaded plugins: the bundled ones and every component in the
//! plugin directory, each registered in the database with its exact version.
//! [`live`] keeps the set current while the engine runs ([`watch`] feeds it file
//! changes); [`history`] records every version for rollback.

pub mod files;
pub mod history;
pub mod live;
pub mod watch;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::bundled;
use crate::capability::log::printable;
use std::time::Duration;

pub use crate::capability::RegisterError;
use crate::capability::{Host, HostState, Plugin, PluginCapabilities, Registration, StartError};
use crate::config::Config;
use crate::db::{Database, DbError};
use crate::runtime::Runtime;
use crate::runtime::call::{CallContext, CallCore, CallFailure, CallLimits, invoke};
use crate::runtime::plugin::{CallOutput, Document, Stage};
use crate::runtime::warm::invoke_reusing;

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

/// A loaded plugin with its database identity and what every capability
/// resolved for it.
pub struct RegisteredPlugin {
    /// The compiled plugin.
    pub loaded: Plugin,
    /// `assay.plugin_versions.id`.
    pub version_id: i64,
    /// Each capability's state for this version (its SQL pool and caps, …).
    pub capabilities: PluginCapabilities,
    /// The host it was registered with.
    host: Arc<Host>,
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

    /// Calls the plugin once on `doc` under `limits`: the one place a call's
    /// store is made, from the runtime's part and each capability's. With
    /// instance reuse on for the plugin (`limits.reuse`), in an instance an
    /// earlier call of this version left, when one is waiting.
    pub async fn call(
        &self,
        runtime: &Runtime,
        limits: &CallLimits,
        context: CallContext,
        doc: Document,
    ) -> Result<CallOutput, CallFailure> {
        let fresh = || {
            let mut core = CallCore::new(runtime, Arc::clone(&self.loaded.identity), limits);
            core.set_context(context);
            self.host.call_state(&self.capabilities, core)
        };
        match limits.reuse {
            None => invoke(runtime, &self.loaded, fresh(), doc).await,
            Some(reuse) => {
                let renew = |state: &mut HostState| {
                    state.core.set_context(context);
                    self.host
                        .renew_call_state(&self.capabilities, state, limits)
                };
                invoke_reusing(runtime, &self.loaded, reuse, limits, fresh, renew, doc).await
            }
        }
    }

    /// What each capability reports of this plugin, by capability name.
    pub fn health(&self) -> serde_json::Map<String, serde_json::Value> {
        self.host.capabilities().health(&self.capabilities)
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
    /// One line, whatever the file is called or the database said: it is
    /// printed to operators' terminals and logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "plugin {}: {}",
            printable(&self.source),
            printable(&self.message)
        )
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
    /// A capability cannot be set up (e.g. the SQL connection budget does not
    /// fit the server).
    #[error(transparent)]
    Capability(#[from] StartError),
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

/// Why component bytes could not be made a plugin.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// Validating and compiling took longer than `plugins.load_timeout_ms`.
    #[error("loading took longer than {} ms (plugins.load_timeout_ms)", .0.as_millis())]
    TimedOut(Duration),
    /// Not a usable plugin (see [`loader::LoadError`]).
    #[error(transparent)]
    Load(#[from] crate::runtime::loader::LoadError),
}

/// A component to load: where it is from, and its bytes (or why they could not be read).
pub type Candidate = (PluginSource, Result<Vec<u8>, files::ReadError>);

/// Everything needed to turn component bytes into a registered plugin; shared
/// by start-up and hot reload.
pub struct PluginLoader {
    runtime: Arc<Runtime>,
    db: Arc<Database>,
    config: Config,
    host: Arc<Host>,
    /// `plugins.dir`, resolved (see [`files::resolve_dir`]).
    plugin_dir: PathBuf,
    limits: CallLimits,
    warnings: Vec<String>,
}

impl PluginLoader {
    /// Sets up the host's capabilities (for SQL: checks the connection budget
    /// and hardens the database), once per process.
    pub async fn new(
        runtime: Arc<Runtime>,
        db: Arc<Database>,
        config: Config,
    ) -> Result<Self, RegistryError> {
        let plugin_dir =
            files::resolve_dir(&config.plugins.dir).map_err(|cause| RegistryError::Dir {
                path: config.plugins.dir.display().to_string(),
                cause,
            })?;
        let host = Arc::new(Host::start(&runtime, &db, &config).await?);
        let warnings = host.capabilities().warnings();
        Ok(Self {
            limits: CallLimits::from_config(&config.limits),
            runtime,
            db,
            config,
            host,
            plugin_dir,
            warnings,
        })
    }

    /// The plugin directory, as an absolute path with symlinks resolved: how
    /// every file in it is named in the registry, the watch and the history.
    pub fn plugin_dir(&self) -> &Path {
        &self.plugin_dir
    }

    /// Reads a plugin file as [`files::read_component_async`] does, with the
    /// configured size limit; a `.cwasm` is refused unread.
    pub async fn read(&self, path: &Path) -> Result<Vec<u8>, files::ReadError> {
        if files::is_precompiled(path) {
            return Err(files::ReadError::Precompiled);
        }
        files::read_component_async(path, self.config.plugins.max_component_bytes).await
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
    pub async fn candidates(&self) -> Result<Vec<Candidate>, RegistryError> {
        let mut candidates: Vec<Candidate> = Vec::new();
        if self.config.plugins.bundled {
            for (file, bytes) in bundled::BUNDLED {
                candidates.push((PluginSource::Bundled(file), Ok(bytes.to_vec())));
            }
        }
        let dir_err = |cause| RegistryError::Dir {
            path: self.plugin_dir.display().to_string(),
            cause,
        };
        for path in files::plugin_files(&self.plugin_dir).map_err(dir_err)? {
            let bytes = self.read(&path).await;
            candidates.push((PluginSource::File(path), bytes));
        }
        Ok(candidates)
    }

    /// Validates and compiles component bytes (within `plugins.load_timeout_ms`).
    pub async fn compile(&self, bytes: &[u8]) -> Result<Plugin, CompileError> {
        // An empty file is refused by the loader's first check
        // (`LoadError::Empty`), before anything is compiled.
        let timeout = Duration::from_millis(self.config.plugins.load_timeout_ms);
        match tokio::time::timeout(
            timeout,
            crate::capability::load(
                &self.runtime,
                self.host.linker_for_plugins(),
                bytes.to_vec(),
                &self.limits,
            ),
        )
        .await
        {
            Ok(result) => result.map_err(CompileError::Load),
            Err(_) => Err(CompileError::TimedOut(timeout)),
        }
    }

    /// Registers a compiled plugin: every capability resolves what it keeps
    /// for it (for SQL: sandbox, pool, migrations), then its version row is
    /// recorded, its bytes kept for rollback and the load recorded.
    pub async fn register(
        &self,
        source: PluginSource,
        plugin: Plugin,
        bytes: &[u8],
    ) -> Result<Arc<RegisteredPlugin>, RegisterError> {
        let limits = CallLimits::for_plugin(&self.config.limits, &plugin.identity.name);
        let capabilities = self
            .host
            .capabilities()
            .register(&Registration {
                identity: &plugin.identity,
                manifest: &plugin.manifest,
                limits: &limits,
            })
            .await?;
        // After every capability took the plugin: a version refused by one
        // (its sandbox, its migrations) is not recorded as a version.
        let version_id = record_version(&self.db, &plugin).await?;
        history::record_loaded(&self.db, &plugin, &source, bytes).await?;
        Ok(Arc::new(RegisteredPlugin {
            loaded: plugin,
            version_id,
            capabilities,
            host: Arc::clone(&self.host),
            source,
            loaded_at: std::time::SystemTime::now(),
        }))
    }

    /// Records refused components, all in one statement (best effort: each
    /// refusal is reported anyway).
    pub async fn record_refusals(&self, refusals: &[history::Refusal]) {
        if refusals.is_empty() {
            return;
        }
        if let Err(e) = history::record_refused(&self.db, refusals).await {
            tracing::warn!("cannot record {} refused plugin files: {e}", refusals.len());
        }
    }

    /// Loads every candidate into a registry.
    pub async fn load_all(&self) -> Result<Registry, RegistryError> {
        let mut registry = Registry {
            warnings: self.warnings.clone(),
            ..Registry::default()
        };
        let mut loaded: Vec<(PluginSource, Plugin, Vec<u8>)> = Vec::new();
        let mut refusals = Vec::new();
        for (source, bytes) in self.candidates().await? {
            let bytes = match bytes {
                Ok(bytes) => bytes,
                Err(e) => {
                    let message = e.to_string();
                    refusals.push(history::Refusal::new(&source, &[], &message));
                    registry.problems.push(LoadProblem {
                        source: source.to_string(),
                        message,
                    });
                    continue;
                }
            };
            match self.compile(&bytes).await.map_err(|e| e.to_string()) {
                Ok(plugin) => match loaded.iter().position(|(_, p, _)| p.identity.name == plugin.identity.name) {
                    // A file in the plugin directory replaces a bundled plugin of the same name.
                    Some(i) if matches!(loaded[i].0, PluginSource::Bundled(_)) => {
                        tracing::info!(plugin = %plugin.identity.name, file = %printable(&source.to_string()), "replaces the bundled plugin");
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
                    tracing::info!(plugin = %printable(&source.to_string()), "refused: {}", printable(&message));
                    refusals.push(history::Refusal::new(&source, &bytes, &message));
                    registry.problems.push(LoadProblem {
                        source: source.to_string(),
                        message,
                    });
                }
            }
        }
        self.record_refusals(&refusals).await;
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

pub use files::PRECOMPILED_REFUSED;

/// The plugin version's row, made once per name and content.
async fn record_version(db: &Database, plugin: &Plugin) -> Result<i64, DbError> {
    let conn = db.connection().await?;
    let row = conn
        .query_one(
            "INSERT INTO assay.plugin_versions (name, version, content_sha256, stage) VALUES ($1, $2, $3, $4)
             ON CONFLICT (name, content_sha256) DO UPDATE SET version = EXCLUDED.version
             RETURNING id",
            &[
                &plugin.identity.name,
                &plugin.manifest.version,
                &plugin.identity.sha256,
                &plugin.manifest.stage.as_str(),
            ],
        )
        .await
        .map_err(DbError::query("registering the plugin version"))?;
    Ok(row.get(0))
}
