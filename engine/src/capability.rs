//! Host capabilities offered to plugins, one folder each: `sql`, `state`,
//! `log`, `inference`, `prompts`. A capability is one unit ([`Capability`]): what it sets up once per
//! engine, what it resolves once per plugin version when that version is
//! registered (for SQL: role, schema, grants, pool, migrations), its per-call
//! context with the WIT host implementation on it, how it ends a call
//! ([`CallEnd`]), and what it reports for health.
//!
//! A call's store data, [`HostState`], is the runtime's [`CallCore`] plus one
//! context per capability ([`CallCapabilities`]); each capability links its
//! interfaces through a projection of it onto its own context, the way
//! wasmtime-wasi's per-capability views do. The list in [`capabilities!`]
//! below is the one place the capabilities are named together: adding one is
//! its folder and one line there.

pub mod inference;
pub mod log;
pub mod per_run;
pub mod prompts;
pub mod sql;
pub mod state;

use std::future::Future;
use std::sync::Arc;

use wasmtime::component::Linker;
use wasmtime_wasi::{WasiCtxView, WasiView};

use crate::config::Config;
use crate::db::{Database, DbError};
use crate::runtime::call::{CallCore, CallData, CallEnd, CallFailure, CallLimits};
use crate::runtime::loader::LoadedPlugin;
use crate::runtime::plugin::{Manifest, PluginIdentity};
use crate::runtime::steps::HostSteps;
use crate::runtime::{Runtime, wit};

/// A plugin as this host loads it: its calls' stores hold a [`HostState`].
pub type Plugin = LoadedPlugin<HostState>;

/// The linker plugins are instantiated with (see [`linker`]).
pub type HostLinker = Linker<HostState>;

/// What a capability is given when the engine starts.
pub struct Start<'a> {
    /// The engine's database.
    pub db: &'a Arc<Database>,
    /// The whole configuration; each capability reads its own sections.
    pub config: &'a Config,
}

/// What a capability is given when a plugin version is registered.
pub struct Registration<'a> {
    /// Name, version and hash.
    pub identity: &'a PluginIdentity,
    /// What the plugin said about itself.
    pub manifest: &'a Manifest,
    /// The plugin's call limits (`[limits]` with its overrides).
    pub limits: &'a CallLimits,
}

/// Why a capability could not be set up for the engine.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The capability's setting up was refused (what is wrong and what to do).
    #[error("{0}")]
    Refused(String),
}

/// Why a loaded component could not be registered.
#[derive(Debug)]
pub enum RegisterError {
    /// The database failed (fatal at start-up).
    Db(DbError),
    /// A capability refused the plugin (its sandbox or migrations failed): the
    /// plugin is refused, the engine goes on.
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

impl std::error::Error for RegisterError {}

impl From<DbError> for RegisterError {
    fn from(e: DbError) -> Self {
        RegisterError::Db(e)
    }
}

/// One host capability.
///
/// Calls end capability by capability, in the order of the
/// [`capabilities!`] list; once one cannot keep a call's effects the later
/// ones undo theirs, but the earlier ones have kept theirs already. So only
/// one capability may hold effects that must be undone with the call's (SQL,
/// first in the list; state writes through its transaction). A second one
/// (a budget reservation, say) needs a prepare step before any commits.
pub trait Capability: Sized + Send + Sync + 'static {
    /// What it keeps for one registered plugin version.
    type Plugin: Send + Sync + 'static;
    /// Its part of one call's store.
    type Call: CallEnd + 'static;

    /// Sets it up for the engine (once per process).
    fn start(start: &Start<'_>) -> impl Future<Output = Result<Self, StartError>> + Send;

    /// Resolves it for a plugin version, when that version is registered.
    fn register(
        &self,
        plugin: &Registration<'_>,
    ) -> impl Future<Output = Result<Self::Plugin, RegisterError>> + Send;

    /// Its context for one call of a registered plugin.
    fn call(&self, plugin: &Self::Plugin, call: &CallCore) -> Self::Call;

    /// Its context for a call of a plugin not registered yet (`describe`,
    /// while loading; or a call outside any engine): nothing a registered
    /// plugin is given.
    fn detached(call: &CallCore) -> Self::Call;

    /// Links its interfaces, of every contract version the host supports.
    fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()>;

    /// What the operator should know of its setting up (hardening it could
    /// not do, say).
    fn warnings(&self) -> Vec<String> {
        Vec::new()
    }

    /// What it reports of one plugin for health and usage, if anything.
    fn health(&self, _plugin: &Self::Plugin) -> Option<serde_json::Value> {
        None
    }
}

/// Declares the capabilities: the engine-wide, per-plugin and per-call
/// compositions, and how each is started, registered, ended and linked, in
/// the order listed (so `sql` ends a call before the others).
macro_rules! capabilities {
    ($( $(#[$doc:meta])* $field:ident : $cap:ty ),* $(,)?) => {
        /// Every capability, set up for the engine.
        pub struct Capabilities {
            $( $(#[$doc])* pub $field: $cap, )*
        }

        /// Every capability's state for one registered plugin version.
        pub struct PluginCapabilities {
            $( $(#[$doc])* pub $field: <$cap as Capability>::Plugin, )*
        }

        /// Every capability's context for one call.
        pub struct CallCapabilities {
            $( $(#[$doc])* pub $field: <$cap as Capability>::Call, )*
        }

        impl Capabilities {
            async fn start(start: &Start<'_>) -> Result<Self, StartError> {
                Ok(Self { $( $field: <$cap as Capability>::start(start).await?, )* })
            }

            /// Resolves every capability for a plugin version.
            pub async fn register(
                &self,
                plugin: &Registration<'_>,
            ) -> Result<PluginCapabilities, RegisterError> {
                Ok(PluginCapabilities { $( $field: self.$field.register(plugin).await?, )* })
            }

            fn call(&self, plugin: &PluginCapabilities, core: &CallCore) -> CallCapabilities {
                CallCapabilities { $( $field: self.$field.call(&plugin.$field, core), )* }
            }


            /// What the operator should know of how the capabilities were set up.
            pub fn warnings(&self) -> Vec<String> {
                let mut all = Vec::new();
                $( all.extend(self.$field.warnings()); )*
                all
            }

            /// What each capability reports of `plugin`, by capability name.
            pub fn health(&self, plugin: &PluginCapabilities) -> serde_json::Map<String, serde_json::Value> {
                let mut all = serde_json::Map::new();
                $(
                    if let Some(health) = self.$field.health(&plugin.$field) {
                        all.insert(stringify!($field).to_string(), health);
                    }
                )*
                all
            }
        }

        impl CallCapabilities {
            fn detached(core: &CallCore) -> Self {
                Self { $( $field: <$cap as Capability>::detached(core), )* }
            }
        }

        fn link_capabilities(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
            $( <$cap as Capability>::link(linker)?; )*
            Ok(())
        }

        impl CallEnd for CallCapabilities {
            async fn abandon(&mut self) {
                $( self.$field.abandon().await; )*
            }

            async fn finish(&mut self, keep: bool) -> Result<(), CallFailure> {
                let mut outcome = Ok(());
                $(
                    // Once one capability could not keep the call's effects,
                    // the others undo theirs.
                    let ended = self.$field.finish(keep && outcome.is_ok()).await;
                    if outcome.is_ok() {
                        outcome = ended;
                    }
                )*
                outcome
            }

            fn explain(&self, failure: CallFailure) -> CallFailure {
                $( let failure = self.$field.explain(failure); )*
                failure
            }

            fn host_steps(&self) -> HostSteps {
                let mut all = HostSteps::default();
                $( all += self.$field.host_steps(); )*
                all
            }
        }
    };
}

capabilities! {
    /// SQL through the plugin's own role, one transaction per call.
    sql: sql::Sql,
    /// Per-plugin JSON values, in the call's transaction.
    state: state::State,
    /// Log lines, to `tracing`.
    log: log::Log,
    /// Language models (contract 0.2), accounted outside the call's transaction.
    inference: inference::Inference,
    /// The prompt library, read-only (contract 0.2).
    prompts: prompts::Prompts,
}

/// The data of a call's store: the runtime's part and every capability's.
pub struct HostState {
    /// The runtime's part: WASI, limits, deadline.
    pub core: CallCore,
    /// The capabilities' parts.
    pub caps: CallCapabilities,
}

impl HostState {
    /// The store data of a call of a plugin not registered with any engine
    /// (`describe` while loading, or a benchmark's call): every capability
    /// as it is before registration, so no database, no state.
    pub fn detached(core: CallCore) -> Self {
        let caps = CallCapabilities::detached(&core);
        HostState { core, caps }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        self.core.wasi_view()
    }
}

impl CallEnd for HostState {
    async fn abandon(&mut self) {
        self.caps.abandon().await
    }

    async fn finish(&mut self, keep: bool) -> Result<(), CallFailure> {
        self.caps.finish(keep).await
    }

    fn explain(&self, failure: CallFailure) -> CallFailure {
        self.caps.explain(failure)
    }

    fn host_steps(&self) -> HostSteps {
        self.caps.host_steps()
    }
}

impl CallData for HostState {
    fn core(&self) -> &CallCore {
        &self.core
    }

    fn core_mut(&mut self) -> &mut CallCore {
        &mut self.core
    }

    /// Every capability as before registration: the SQL session (and with
    /// it the pool) is let go while the instance waits.
    fn park(&mut self) {
        self.caps = CallCapabilities::detached(&self.core);
    }
}

/// The host side of every plugin: the capabilities, set up for this engine,
/// and the linker that gives plugins their imports.
pub struct Host {
    capabilities: Capabilities,
    linker: Linker<HostState>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host").finish_non_exhaustive()
    }
}

impl Host {
    /// Sets up every capability and links WASI, the contract's type
    /// interfaces and every capability's interfaces.
    pub async fn start(
        runtime: &Runtime,
        db: &Arc<Database>,
        config: &Config,
    ) -> Result<Self, StartError> {
        let capabilities = Capabilities::start(&Start { db, config }).await?;
        let linker = linker(runtime)
            .map_err(|e| StartError::Refused(format!("cannot link the host interfaces: {e:#}")))?;
        Ok(Self {
            capabilities,
            linker,
        })
    }

    /// The capabilities.
    pub fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    /// The linker every plugin is instantiated with.
    pub fn linker_for_plugins(&self) -> &Linker<HostState> {
        &self.linker
    }

    /// The store data of one call of a registered plugin.
    pub fn call_state(&self, plugin: &PluginCapabilities, core: CallCore) -> HostState {
        let caps = self.capabilities.call(plugin, &core);
        HostState { core, caps }
    }

    /// Makes `state`, parked in a reused instance, the store data of a new
    /// call of the same plugin under `limits`.
    pub fn renew_call_state(
        &self,
        plugin: &PluginCapabilities,
        state: &mut HostState,
        limits: &CallLimits,
    ) {
        state.core.renew(limits);
        state.caps = self.capabilities.call(plugin, &state.core);
    }
}

/// The linker plugins are instantiated with: WASI (see `runtime::wasi`), the
/// contract's type interfaces, and every capability's interfaces, of every
/// supported contract version.
pub fn linker(runtime: &Runtime) -> wasmtime::Result<Linker<HostState>> {
    let mut linker = Linker::new(runtime.engine());
    crate::runtime::wasi::add_to_linker(&mut linker)?;
    wit::add_type_interfaces(&mut linker)?;
    link_capabilities(&mut linker)?;
    Ok(linker)
}

/// Loads a plugin for this host from component bytes (see
/// [`crate::runtime::loader::load`]); its `describe` runs detached.
pub async fn load(
    runtime: &Arc<Runtime>,
    linker: &Linker<HostState>,
    bytes: Vec<u8>,
    limits: &CallLimits,
) -> Result<Plugin, crate::runtime::loader::LoadError> {
    crate::runtime::loader::load(runtime, linker, bytes, limits, HostState::detached).await
}

/// Calls a plugin that is registered with no engine: no database, no state
/// (what a benchmark of the runtime alone measures); in an instance an
/// earlier call left when `limits` reuse instances.
pub async fn call_detached(
    runtime: &Runtime,
    plugin: &Plugin,
    limits: &CallLimits,
    doc: crate::runtime::plugin::Document,
) -> Result<crate::runtime::plugin::CallOutput, CallFailure> {
    let fresh =
        || HostState::detached(CallCore::new(runtime, Arc::clone(&plugin.identity), limits));
    match limits.reuse {
        None => crate::runtime::call::invoke(runtime, plugin, fresh(), doc).await,
        Some(reuse) => {
            let renew = |state: &mut HostState| state.core.renew(limits);
            crate::runtime::warm::invoke_reusing(runtime, plugin, reuse, limits, fresh, renew, doc)
                .await
        }
    }
}
