//! One engine, assembled in one place: the database (an external server or
//! the embedded one), the runtime, the plugins (a fixed set, or a live one
//! that hot reload keeps current), the pipeline over them, and the
//! embedded server's lifetime. The CLI, `assay up`, the test engines and
//! the benchmarks build theirs with [`Engine::builder`].
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use assay::{config::Config, engine::Engine, pipeline::DocumentInput};
//!
//! let engine = Engine::builder(Config::load("assay.toml".as_ref())?).build().await?;
//! let report = engine
//!     .pipeline()
//!     .run(DocumentInput {
//!         source: "inline".into(),
//!         kind: "chat".into(),
//!         metadata: Default::default(),
//!         text: "The router keeps dropping, this is unacceptable.".into(),
//!     })
//!     .await?;
//! println!("run {} found {} things", report.run_id, report.findings.len());
//! engine.shutdown().await?;
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::db::{Database, DbError, Supervisor};
use crate::pipeline::Pipeline;
use crate::registry::live::LiveRegistry;
use crate::registry::watch::{self, Watch, WatchError};
use crate::registry::{PluginLoader, Registry, RegistryError};
use crate::runtime::{Runtime, RuntimeError};

/// Why an engine could not be built.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The database could not be opened (or the embedded server started).
    #[error("opening the database")]
    Database(#[from] DbError),
    /// The WebAssembly runtime could not be set up.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The host's capabilities could not be set up for the plugins (the SQL
    /// sandbox: the connection budget, hardening the database; inference:
    /// its model server settings).
    #[error("setting up what plugins are offered (the SQL sandbox, inference)")]
    Sandbox(#[source] RegistryError),
    /// The plugins could not be loaded at all (one bad plugin is not this:
    /// it is refused and reported in the registry's problems).
    #[error("loading plugins")]
    Registry(#[from] RegistryError),
    /// The plugin directory cannot be watched.
    #[error(transparent)]
    Watch(#[from] WatchError),
}

/// How the engine's plugins are kept.
enum Plugins {
    /// Loaded once.
    Fixed(Arc<Registry>),
    /// Kept current by hot reload (and, when watched, by the file watcher).
    Live {
        live: Arc<LiveRegistry>,
        /// Kept for as long as the engine: dropping it stops the watch.
        _watching: Option<Watch>,
    },
}

/// Builds an [`Engine`]; see its methods for the choices.
#[must_use]
pub struct EngineBuilder {
    config: Config,
    db: Option<Arc<Database>>,
    runtime: Option<Arc<Runtime>>,
    compile_cache: bool,
    live: bool,
    watch: bool,
    supervise: bool,
}

impl EngineBuilder {
    /// Uses a database that is already open (tests sharing one, several
    /// engines on one server) instead of opening `config.database`.
    pub fn database(mut self, db: Arc<Database>) -> Self {
        self.db = Some(db);
        self
    }

    /// Uses a runtime that already exists (its compiled-plugin cache and
    /// instance pool shared with another engine).
    pub fn runtime(mut self, runtime: Arc<Runtime>) -> Self {
        self.runtime = Some(runtime);
        self
    }

    /// Whether compiled plugins are cached in `plugins.cache_dir` (on by
    /// default; the tests turn it off to write nothing outside their
    /// directories).
    pub fn compile_cache(mut self, on: bool) -> Self {
        self.compile_cache = on;
        self
    }

    /// Keeps the plugin set live, so that it can be swapped while runs go on
    /// (rollback, a rescan); [`Self::watch`] also makes it follow the plugin
    /// directory.
    pub fn live(mut self) -> Self {
        self.live = true;
        self
    }

    /// Watches the plugin directory and hot-swaps what changes in it
    /// (implies [`Self::live`]).
    pub fn watch(mut self) -> Self {
        self.live = true;
        self.watch = true;
        self
    }

    /// Restarts the embedded PostgreSQL if it dies (what `assay up` does).
    pub fn supervise(mut self) -> Self {
        self.supervise = true;
        self
    }

    /// Opens the database, sets up the runtime, loads the plugins and wires
    /// the pipeline over them.
    pub async fn build(self) -> Result<Engine, EngineError> {
        let config = self.config;
        let db = match self.db {
            Some(db) => db,
            None => Arc::new(Database::open(&config.database).await?),
        };
        let runtime = match self.runtime {
            Some(runtime) => runtime,
            None => {
                let cache = self
                    .compile_cache
                    .then_some(config.plugins.cache_dir.as_path());
                Arc::new(Runtime::new(&config, cache)?)
            }
        };
        let supervisor = if self.supervise {
            db.supervise_embedded()
        } else {
            None
        };
        let (plugins, pipeline) = if self.live {
            let loader = PluginLoader::new(Arc::clone(&runtime), Arc::clone(&db), config.clone())
                .await
                .map_err(EngineError::Sandbox)?;
            let live = LiveRegistry::start(loader).await?;
            let watching = if self.watch {
                Some(watch::watch(
                    Arc::clone(&live),
                    Duration::from_millis(config.plugins.watch_debounce_ms),
                    |path, outcome| tracing::debug!(file = ?path, ?outcome, "plugin file handled"),
                )?)
            } else {
                None
            };
            let pipeline = Pipeline::live(
                Arc::clone(&runtime),
                live.handle(),
                Arc::clone(&db),
                &config,
            );
            (
                Plugins::Live {
                    live,
                    _watching: watching,
                },
                pipeline,
            )
        } else {
            let registry = Registry::load(&runtime, &config, &db)
                .await
                .map_err(|e| match e {
                    e @ RegistryError::Capability(_) => EngineError::Sandbox(e),
                    e => EngineError::Registry(e),
                })?;
            let registry = Arc::new(registry);
            let pipeline = Pipeline::new(
                Arc::clone(&runtime),
                Arc::clone(&registry),
                Arc::clone(&db),
                &config,
            );
            (Plugins::Fixed(registry), pipeline)
        };
        Ok(Engine {
            config,
            db,
            runtime,
            plugins,
            pipeline,
            supervisor,
        })
    }
}

/// A running engine: database, runtime, plugins and pipeline.
pub struct Engine {
    config: Config,
    db: Arc<Database>,
    runtime: Arc<Runtime>,
    plugins: Plugins,
    pipeline: Pipeline,
    supervisor: Option<Supervisor>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("database", &self.db.target)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// An engine for `config`; by default a fixed plugin set, compiled
    /// plugins cached, the database opened from `config.database`.
    pub fn builder(config: Config) -> EngineBuilder {
        EngineBuilder {
            config,
            db: None,
            runtime: None,
            compile_cache: true,
            live: false,
            watch: false,
            supervise: false,
        }
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Its database.
    pub fn db(&self) -> &Arc<Database> {
        &self.db
    }

    /// Its runtime.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// The pipeline over its plugins.
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// The plugins new runs use now.
    pub fn registry(&self) -> Arc<Registry> {
        match &self.plugins {
            Plugins::Fixed(registry) => Arc::clone(registry),
            Plugins::Live { live, .. } => live.snapshot(),
        }
    }

    /// The live plugin set, when built [`EngineBuilder::live`].
    pub fn live(&self) -> Option<&Arc<LiveRegistry>> {
        match &self.plugins {
            Plugins::Fixed(_) => None,
            Plugins::Live { live, .. } => Some(live),
        }
    }

    /// Stops watching, stops supervising, closes the pools and stops the
    /// embedded server — now, even if something (a task being cancelled)
    /// still holds the database.
    pub async fn shutdown(self) -> Result<(), DbError> {
        let Engine {
            db,
            plugins,
            pipeline,
            supervisor,
            runtime,
            ..
        } = self;
        // The watch (if any) goes with the plugins.
        drop(plugins);
        drop(pipeline);
        if let Some(supervisor) = supervisor {
            supervisor.stop().await;
        }
        drop(runtime);
        match Arc::try_unwrap(db) {
            Ok(db) => db.close().await,
            Err(shared) => shared.shutdown().await,
        }
    }
}
