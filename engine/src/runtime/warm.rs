//! Instance reuse: a plugin version's instances kept between its calls, for
//! plugins whose operator turned on `reuse_instances`.
//!
//! By default every call gets a fresh instance ([`super::call::invoke`]), so
//! nothing a call leaves in the plugin's memory reaches the next one. With
//! reuse, an instance that returned normally goes back to its plugin
//! version's [`WarmInstances`] and serves a later call of that same version:
//! what the call left in linear memory (globals, caches, a lazily built
//! table) is still there, and the instantiation and the reset of its memory
//! are saved. What the call was given by the host (its database session, its
//! deadline, its limits) is not kept: [`CallData::park`] lets go of it, and
//! the next call brings its own.
//!
//! Bounded everywhere: an instance serves at most `calls_per_instance` calls;
//! one that trapped, ran out of time, or was cut off in a host call is
//! dropped, never reused; each plugin version keeps at most as many idle
//! instances as it may run calls at once; and all plugins together keep at
//! most `limits.warm_instances`, which the instance pool reserves slots for
//! (see [`super::limits::pooling_strategy`]). A new version starts with no
//! instances: the old version's are dropped with it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use wasmtime::Store;

use super::Runtime;
use super::call::{CallData, CallFailure, CallLimits};
use super::limits::Reuse;
use super::loader::LoadedPlugin;
use super::plugin::{CallOutput, Document};
use super::wit::PluginInstance;

/// How many instances all plugins keep between calls, against the slots the
/// pool reserved for them (`limits.warm_instances`).
#[derive(Debug)]
pub struct WarmBudget {
    kept: AtomicUsize,
    most: usize,
}

impl WarmBudget {
    /// A budget of `most` instances.
    pub fn new(most: u32) -> Self {
        Self {
            kept: AtomicUsize::new(0),
            most: most as usize,
        }
    }

    /// Takes one place, if one is free.
    fn take(&self) -> bool {
        self.kept
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |kept| {
                (kept < self.most).then_some(kept + 1)
            })
            .is_ok()
    }

    /// Gives one place back.
    fn give_back(&self) {
        self.kept.fetch_sub(1, Ordering::AcqRel);
    }

    /// Instances kept now, all plugins together.
    pub fn kept(&self) -> usize {
        self.kept.load(Ordering::Acquire)
    }
}

/// An instance between two calls, in its store.
struct Warm<T: 'static> {
    store: Store<T>,
    instance: PluginInstance,
    /// Calls it has served.
    calls: u32,
}

/// One plugin version's idle instances.
pub struct WarmInstances<T: 'static> {
    idle: Mutex<Vec<Warm<T>>>,
    budget: Arc<WarmBudget>,
}

impl<T: 'static> std::fmt::Debug for WarmInstances<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WarmInstances")
            .field("idle", &self.idle())
            .finish()
    }
}

impl<T: 'static> WarmInstances<T> {
    /// None yet, kept against the runtime's budget.
    pub fn new(runtime: &Runtime) -> Self {
        Self {
            idle: Mutex::new(Vec::new()),
            budget: Arc::clone(runtime.warm_budget()),
        }
    }

    /// Instances waiting for a call.
    pub fn idle(&self) -> usize {
        crate::sync::lock(&self.idle).len()
    }

    /// An idle instance, if there is one.
    fn take(&self) -> Option<Warm<T>> {
        let warm = crate::sync::lock(&self.idle).pop()?;
        self.budget.give_back();
        Some(warm)
    }

    /// Keeps `warm` for a later call if this version and the engine have
    /// room for it; drops it otherwise.
    fn keep(&self, warm: Warm<T>, most_idle: usize) {
        let mut idle = crate::sync::lock(&self.idle);
        if idle.len() < most_idle && self.budget.take() {
            idle.push(warm);
        }
    }
}

impl<T: 'static> Drop for WarmInstances<T> {
    /// The version is gone (replaced, unloaded): its instances go with it.
    fn drop(&mut self) {
        let idle = std::mem::take(&mut *crate::sync::lock(&self.idle));
        for _ in &idle {
            self.budget.give_back();
        }
    }
}

/// Calls `plugin` once on `doc` under `limits`, as [`super::call::invoke`]
/// does, but in an instance an earlier call of this version left if there is
/// one (`renew` then makes its store's data this call's), in a new store
/// holding `fresh()` otherwise; an instance fit for another call is kept
/// after it.
pub async fn invoke_reusing<T: CallData>(
    runtime: &Runtime,
    plugin: &LoadedPlugin<T>,
    reuse: Reuse,
    limits: &CallLimits,
    fresh: impl FnOnce() -> T,
    renew: impl FnOnce(&mut T),
    doc: Document,
) -> Result<CallOutput, CallFailure> {
    let warm = &plugin.warm;
    let (mut store, instance, calls) = match warm.take() {
        Some(mut taken) => {
            renew(taken.store.data_mut());
            Runtime::arm_deadline(&mut taken.store);
            (taken.store, Some(taken.instance), taken.calls)
        }
        None => (runtime.new_store(fresh()), None, 0),
    };
    let (outcome, fit) = super::call::run(runtime, plugin, &mut store, instance, doc).await;
    let calls = calls.saturating_add(1);
    if let Some(instance) = fit
        && calls < reuse.calls_per_instance
        && store.data().core().output_room()
    {
        store.data_mut().park();
        warm.keep(
            Warm {
                store,
                instance,
                calls,
            },
            limits.concurrent_calls as usize,
        );
    }
    outcome
}
