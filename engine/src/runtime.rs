//! The WebAssembly runtime: one wasmtime [`Engine`] per process, the contract
//! versions it links ([`wit`]), loading ([`loader`]) and calling ([`call`])
//! plugins, the limits of every call ([`limits`]) and where its time goes
//! ([`steps`]).
//!
//! A plugin version is compiled once and kept pre-instantiated; every call gets a
//! fresh [`Store`](wasmtime::Store) and instance, dropped when the call ends, so no
//! memory carries over from one call to the next (the `state` interface is the one
//! sanctioned memory) — unless the operator turned on instance reuse for the
//! plugin ([`warm`]), where the next call of the same version may run in the
//! instance the last one left.
//!
//! The runtime knows no host capability. What a call's store holds besides
//! the runtime's own [`call::CallCore`], and the linker that gives plugins
//! their imports, are composed by `crate::capability`.

pub mod cache;
pub mod call;
pub mod failure;
pub mod limits;
pub mod loader;
pub mod plugin;
pub mod steps;
pub mod warm;
pub mod wasi;
pub mod wit;

use std::sync::Arc;
use std::time::Duration;

use wasmtime::{Config, Engine};

/// How often the epoch advances. Deadlines are checked at this granularity, and a
/// running plugin yields to the async runtime this often, so a busy plugin never
/// starves other tasks for longer than one tick.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Why the runtime could not be set up. The message quotes wasmtime's error
/// in full, so it is not also given as the source (printed as a chain, the
/// cause would be said twice).
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot set up the WebAssembly runtime: {0:#} (its instance pool reserves address space for limits.max_concurrent_calls + limits.warm_instances instances of the largest limits.memory_mib: lower them)"
)]
pub struct RuntimeError(wasmtime::Error);

impl From<wasmtime::Error> for RuntimeError {
    fn from(error: wasmtime::Error) -> Self {
        Self(error)
    }
}

/// The process-wide engine.
pub struct Runtime {
    engine: Engine,
    cache: Option<cache::CompileCache>,
    wasm_stack_kib: u64,
    warm: Arc<warm::WarmBudget>,
    steps: steps::StepTotals,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").finish_non_exhaustive()
    }
}

impl Runtime {
    /// The runtime `settings` ask for — pooling instance allocator sized by
    /// `[limits]`, copy-on-write memory images, epoch interruption, its epoch
    /// ticker started — keeping compiled plugins in `compile_cache` if given
    /// (the engine passes `plugins.cache_dir`; see [`cache`]).
    pub fn new(
        settings: &crate::config::Config,
        compile_cache: Option<&std::path::Path>,
    ) -> Result<Self, RuntimeError> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        config.memory_init_cow(true);
        config.allocation_strategy(limits::pooling_strategy(settings));
        let stack = usize::try_from(settings.limits.wasm_stack_kib.saturating_mul(1024))
            .unwrap_or(usize::MAX)
            .max(64 * 1024);
        config.max_wasm_stack(stack);
        // Host frames run on the same fiber as wasm; leave them room above it.
        config.async_stack_size(stack.saturating_add(1024 * 1024));
        let engine = Engine::new(&config)?;

        // A plain thread, not a tokio task: it must keep ticking while every
        // runtime worker is busy running plugin code.
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("assay-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .map_err(wasmtime::Error::from)?;

        let cache = compile_cache.map(|dir| cache::CompileCache::new(dir, &engine));
        Ok(Self {
            engine,
            cache,
            wasm_stack_kib: (stack / 1024) as u64,
            warm: Arc::new(warm::WarmBudget::new(settings.limits.warm_instances)),
            steps: steps::StepTotals::default(),
        })
    }

    /// The maximum wasm stack of every call, KiB (`limits.wasm_stack_kib`).
    pub fn wasm_stack_kib(&self) -> u64 {
        self.wasm_stack_kib
    }

    /// How many instances plugins that reuse them keep between calls, all
    /// together (`limits.warm_instances`).
    pub fn warm_budget(&self) -> &Arc<warm::WarmBudget> {
        &self.warm
    }

    /// Every call's steps added up (see [`steps`]).
    pub fn steps(&self) -> &steps::StepTotals {
        &self.steps
    }

    /// The compile cache, if any.
    pub fn compile_cache(&self) -> Option<&cache::CompileCache> {
        self.cache.as_ref()
    }

    /// The wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}
