//! The `sql` capability: plugins run SQL through the host as their own
//! database role, one transaction per call.
//!
//! Everything SQL is here: [`Sql`] (set up once: the database hardened, the
//! connection budget), [`SqlPlugin`] (resolved when a plugin version is
//! registered: its role, schema and grants ([`sandbox`]), its pool
//! ([`pool`]), its caps, its [`migrations`]), [`SqlCall`] (one call's
//! transaction, [`session`], and how it ends), the host implementation of
//! each contract version ([`host`]), the type conversions ([`values`],
//! [`types`]) and the early refusal of statements no plugin needs ([`gate`]).
//! Only the extended protocol ever carries plugin SQL (one statement, bound
//! parameters): a string with two statements is refused by the server.
//!
//! Its settings are read from `[sandbox]`, `[database]`, `[limits]` and
//! `[plugins.grants.NAME]` ([`settings`]); they keep those names so that
//! existing configuration files stay valid.

pub mod extensions;
pub mod gate;
pub mod host;
pub mod lanes;
pub mod migrations;
pub mod pool;
pub mod register;
pub mod sandbox;
pub mod session;
pub mod settings;
pub mod types;
pub mod values;

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Semaphore;

pub use pool::SandboxPool;
pub use session::{SqlCaps, SqlSession};
use types::SqlError;

use super::{Capability, HostState, RegisterError, Registration, Start, StartError};
use crate::config::Config;
use crate::db::Database;
use crate::runtime::call::{CallCore, CallEnd, CallFailure};
use crate::runtime::steps::HostSteps;

/// The SQL capability, set up for the engine.
pub struct Sql {
    db: Arc<Database>,
    config: Config,
    /// Connections all plugin pools together may hold (`sandbox.connection_budget`).
    budget: Arc<Semaphore>,
    /// Logins provisioned by this engine, reused by later versions.
    provisioned: register::Provisioned,
    warnings: Vec<String>,
}

/// What SQL keeps for one registered plugin version.
pub struct SqlPlugin {
    pool: SandboxPool,
    caps: SqlCaps,
    /// The statement gate's verdicts on its statements (see [`gate::Verdicts`]).
    verdicts: Arc<gate::Verdicts>,
}

impl SqlPlugin {
    /// Connections as the plugin's own role.
    pub fn pool(&self) -> &SandboxPool {
        &self.pool
    }

    /// The caps of each of its calls.
    pub fn caps(&self) -> &SqlCaps {
        &self.caps
    }

    /// The statement gate's verdicts kept for its calls.
    pub fn verdicts(&self) -> &gate::Verdicts {
        &self.verdicts
    }

    /// A session of the plugin's, as one of its calls gets (for tools that
    /// run SQL as a plugin outside a call, such as the query benchmark).
    pub fn session(&self) -> SqlSession {
        SqlSession::new(
            Some(self.pool.clone()),
            self.caps.clone(),
            Arc::clone(&self.verdicts),
        )
    }
}

/// One call's SQL: its (lazily opened) transaction and its deadline.
pub struct SqlCall {
    session: SqlSession,
    deadline: Instant,
}

impl SqlCall {
    /// Runs `work` against the call's session, bounded by the call's deadline: a
    /// statement still running when the call's time is up is reported as a timeout
    /// (the server's own `statement_timeout` normally fires first).
    pub(crate) async fn within_deadline<T>(
        &mut self,
        work: impl AsyncFnOnce(&mut SqlSession) -> Result<T, SqlError>,
    ) -> Result<T, SqlError> {
        let started = Instant::now();
        let remaining = self.deadline.saturating_duration_since(started);
        let result = match tokio::time::timeout(remaining, work(&mut self.session)).await {
            Ok(result) => result,
            Err(_) => {
                self.session.abandon_statement().await;
                Err(SqlError::Timeout)
            }
        };
        self.session.count_host_call(started.elapsed());
        result
    }

    /// The call's session.
    pub fn session(&mut self) -> &mut SqlSession {
        &mut self.session
    }
}

impl CallEnd for SqlCall {
    async fn abandon(&mut self) {
        self.session.abandon_statement().await;
    }

    async fn finish(&mut self, keep: bool) -> Result<(), CallFailure> {
        match self.session.finish(keep).await {
            Ok(()) => Ok(()),
            Err(session::NotCommitted(m)) if self.session.unavailable().is_some() => {
                Err(CallFailure::Database(m))
            }
            Err(session::NotCommitted(m)) => Err(CallFailure::Failed(m)),
        }
    }

    fn host_steps(&self) -> HostSteps {
        self.session.steps()
    }

    /// A plugin that failed after the database went away failed because of it.
    fn explain(&self, failure: CallFailure) -> CallFailure {
        match self.session.unavailable() {
            Some(cause) => CallFailure::Database(format!("{cause} (the plugin then {failure})")),
            None => failure,
        }
    }
}

impl Capability for Sql {
    type Plugin = SqlPlugin;
    type Call = SqlCall;

    /// Checks the connection budget against the server, hardens the
    /// database (PUBLIC's privileges) and offers plugins the server
    /// extensions they may use.
    async fn start(start: &Start<'_>) -> Result<Self, StartError> {
        let config = start.config;
        let mut warnings =
            sandbox::harden(start.db, &config.sandbox, config.database.pool_size).await?;
        warnings.extend(
            extensions::offer(start.db)
                .await
                .map_err(sandbox::SandboxError::from)?,
        );
        // Not logged here: they reach the registry's warnings, which every
        // command that starts an engine prints once (logging them too said
        // each twice on the terminal).
        Ok(Self {
            db: Arc::clone(start.db),
            config: config.clone(),
            budget: Arc::new(Semaphore::new(config.sandbox.connection_budget as usize)),
            provisioned: register::Provisioned::default(),
            warnings,
        })
    }

    async fn register(&self, plugin: &Registration<'_>) -> Result<SqlPlugin, RegisterError> {
        register::register(
            &self.db,
            &self.config,
            &self.budget,
            &self.provisioned,
            plugin,
        )
        .await
    }

    fn call(&self, plugin: &SqlPlugin, call: &CallCore) -> SqlCall {
        SqlCall {
            session: plugin.session(),
            deadline: call.deadline(),
        }
    }

    fn detached(call: &CallCore) -> SqlCall {
        SqlCall {
            session: SqlSession::new(None, SqlCaps::default(), Arc::default()),
            deadline: call.deadline(),
        }
    }

    fn link(linker: &mut wasmtime::component::Linker<HostState>) -> wasmtime::Result<()> {
        host::link(linker)
    }

    fn warnings(&self) -> Vec<String> {
        self.warnings.clone()
    }

    /// The plugin's pool: connections open and idle.
    fn health(&self, plugin: &SqlPlugin) -> Option<serde_json::Value> {
        let state = plugin.pool.state();
        Some(serde_json::json!({
            "connections": state.connections,
            "idle": state.idle_connections,
        }))
    }
}

impl From<sandbox::SandboxError> for StartError {
    fn from(e: sandbox::SandboxError) -> Self {
        match e {
            sandbox::SandboxError::Db(e) => StartError::Db(e),
            other => StartError::Refused(other.to_string()),
        }
    }
}
