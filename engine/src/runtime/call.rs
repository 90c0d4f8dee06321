//! One plugin call: the runtime's part of its store (WASI, limits, deadline,
//! captured output), the contract with the capabilities' part ([`CallData`],
//! [`CallEnd`]), and [`invoke`], which runs one call from instance to end.
//!
//! The runtime names no capability: what the store holds besides
//! [`CallCore`] is the host's business (see `crate::capability`), and the end
//! of a call — keep or undo its effects, give up on what a deadline cut short,
//! explain a failure the plugin could not — goes through [`CallEnd`].

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::ResourceTable;
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::Runtime;
pub use super::failure::CallFailure;
use super::failure::past_deadline;
pub use super::limits::CallLimits;
use super::limits::{CallLimiter, LimitHit};
use super::loader::LoadedPlugin;
use super::plugin::{CallOutput, Document, PluginError, PluginIdentity};
use super::steps::{CallSteps, HostSteps};
use super::wit::PluginInstance;

/// How much of what a plugin prints (panic messages, debug output) is kept to
/// explain a failure. Beyond this its writes fail; it cannot grow host memory.
pub const CAPTURED_OUTPUT_BYTES: usize = 8 * 1024;

/// How long past its deadline a call stuck in a host call (a sleep, a slow
/// statement) is given to notice before it is dropped: a little longer than
/// the deadline itself, so the deadline's own, cleaner error usually wins.
pub const DEADLINE_SLACK: Duration = Duration::from_millis(50);

/// The error a call fails with when its deadline passes while plugin code runs.
#[derive(Debug, thiserror::Error)]
#[error("the call ran past its deadline of {} ms", .0.as_millis())]
pub struct DeadlineExceeded(pub Duration);

/// What a call is for, as far as the host's capabilities need to know: the
/// run it belongs to (for accounting) and the caller's wishes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallContext {
    /// The run (`assay.runs.id`) the call is part of, if any.
    pub run: Option<uuid::Uuid>,
    /// Answer nothing from caches (`assay analyze --no-cache`).
    pub no_cache: bool,
}

/// What every call's store holds whatever the host links: WASI (no files,
/// no network, no environment; output captured), the resource limiter, the
/// limits and the deadline.
pub struct CallCore {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: CallLimiter,
    limits: CallLimits,
    output: MemoryOutputPipe,
    /// Where this call's output starts in `output`: past what earlier calls
    /// of a reused instance printed.
    output_from: usize,
    plugin: Arc<PluginIdentity>,
    started: Instant,
    deadline: Instant,
    wasm_stack_kib: u64,
    context: CallContext,
}

impl CallCore {
    /// The runtime's part of a new call of `plugin` under `limits`; its
    /// deadline starts now.
    pub fn new(runtime: &Runtime, plugin: Arc<PluginIdentity>, limits: &CallLimits) -> Self {
        let output = MemoryOutputPipe::new(CAPTURED_OUTPUT_BYTES);
        let wasi = super::wasi::context(&output);
        let started = Instant::now();
        Self {
            wasi,
            table: ResourceTable::new(),
            limiter: CallLimiter::new(limits),
            limits: limits.clone(),
            output,
            output_from: 0,
            plugin,
            started,
            deadline: started + limits.timeout,
            wasm_stack_kib: runtime.wasm_stack_kib(),
            context: CallContext::default(),
        }
    }

    /// Makes this the runtime's part of a new call of the same plugin in the
    /// same instance (instance reuse): a new deadline from now, new limits,
    /// nothing refused yet. WASI and its resource table stay, since the
    /// instance holds handles into them; captured output starts afresh.
    pub fn renew(&mut self, limits: &CallLimits) {
        self.started = Instant::now();
        self.deadline = self.started + limits.timeout;
        self.limiter = CallLimiter::new(limits);
        self.limits = limits.clone();
        self.output_from = self.output.contents().len();
    }

    /// Whether the output buffer still has room for another call's panic
    /// message; an instance whose buffer is nearly full is not reused.
    pub fn output_room(&self) -> bool {
        self.output.contents().len() <= CAPTURED_OUTPUT_BYTES / 2
    }

    /// Makes `context` what the call is for.
    pub fn set_context(&mut self, context: CallContext) {
        self.context = context;
    }

    /// What the call is for.
    pub fn context(&self) -> &CallContext {
        &self.context
    }

    /// The plugin being called.
    pub fn plugin(&self) -> &Arc<PluginIdentity> {
        &self.plugin
    }

    /// The call's limits.
    pub fn limits(&self) -> &CallLimits {
        &self.limits
    }

    /// When the call must be over.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Time left before the deadline.
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// What the plugin printed during the call (lossy UTF-8, trimmed).
    pub fn captured_output(&self) -> String {
        let all = self.output.contents();
        String::from_utf8_lossy(all.get(self.output_from..).unwrap_or_default())
            .trim()
            .to_string()
    }

    /// Which limit refused a request of the plugin's, if one did.
    pub fn limit_hit(&self) -> Option<LimitHit> {
        self.limiter.hit
    }

    /// The process-wide wasm stack limit, KiB, for error messages.
    pub fn wasm_stack_kib(&self) -> u64 {
        self.wasm_stack_kib
    }

    /// WASI's view of the store, for the store data's [`WasiView`].
    pub fn wasi_view(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// How the host's capabilities end a call. The runtime calls these without
/// knowing which capabilities there are.
pub trait CallEnd: Send {
    /// The call's time ran out while it waited in a host call: whatever that
    /// call left in flight is in an unknown state; cancel it and never reuse it.
    fn abandon(&mut self) -> impl Future<Output = ()> + Send;

    /// The call is over: keep its effects when `keep` (the plugin returned
    /// `ok`), undo them otherwise. Failing to keep them fails the call.
    fn finish(&mut self, keep: bool) -> impl Future<Output = Result<(), CallFailure>> + Send;

    /// A failure the plugin reported (or a trap), explained by what the
    /// capability saw, e.g. the database going away under the call; the
    /// failure itself when there is nothing to add.
    fn explain(&self, failure: CallFailure) -> CallFailure {
        failure
    }

    /// What the capabilities' host functions spent in the call, as they
    /// timed it (read after [`CallEnd::finish`]).
    fn host_steps(&self) -> HostSteps {
        HostSteps::default()
    }
}

/// The `T` of a call's `Store<T>`: the runtime's [`CallCore`] and whatever
/// the host composes around it.
pub trait CallData: WasiView + CallEnd + Send + 'static {
    /// The runtime's part.
    fn core(&self) -> &CallCore;
    /// The runtime's part, mutably.
    fn core_mut(&mut self) -> &mut CallCore;
    /// The call is over and its instance is kept for a later call (instance
    /// reuse): let go of everything the call was given besides the runtime's
    /// part (its database session, say), so that nothing is held while the
    /// instance waits.
    fn park(&mut self);
}

impl Runtime {
    /// A store for one call holding `data`, enforcing its limits: the
    /// limiter, and the deadline (see [`Runtime::arm_deadline`]).
    pub fn new_store<T: CallData>(&self, data: T) -> Store<T> {
        let mut store = Store::new(self.engine(), data);
        store.limiter(|data| &mut data.core_mut().limiter);
        Self::arm_deadline(&mut store);
        store
    }

    /// Every epoch tick from now, a check of the call's deadline as the
    /// store's data has it: trap once it passed, otherwise yield so a busy
    /// plugin cannot hog a worker thread. Armed again for each call a reused
    /// instance serves.
    pub fn arm_deadline<T: CallData>(store: &mut Store<T>) {
        let started = store.data().core().started;
        let timeout = store.data().core().limits.timeout;
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if started.elapsed() >= timeout {
                Err(DeadlineExceeded(timeout).into())
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
    }
}

/// Calls `plugin` once on `doc` in a fresh instance holding `data`; the
/// capabilities keep the call's effects if it succeeds and undo them otherwise.
///
/// The deadline holds everywhere: in plugin code the epoch callback traps, and
/// a call waiting in a host call (a WASI sleep, a statement) is dropped a
/// moment after the deadline, and what it waited for abandoned.
pub async fn invoke<T: CallData>(
    runtime: &Runtime,
    plugin: &LoadedPlugin<T>,
    data: T,
    doc: Document,
) -> Result<CallOutput, CallFailure> {
    let mut store = runtime.new_store(data);
    let (outcome, _fit) = run(runtime, plugin, &mut store, None, doc).await;
    outcome
}

/// Runs one call in `store`: in `instance` if one is given (instance reuse),
/// else in a new one. Returns the outcome, and the instance when it is fit for
/// another call — the plugin's code returned normally (with findings or with
/// an error of its own); never after a trap, a deadline or an abandoned host
/// call, which can leave an instance in any state. Its steps are added to
/// the runtime's [`Runtime::steps`].
pub(super) async fn run<T: CallData>(
    runtime: &Runtime,
    plugin: &LoadedPlugin<T>,
    store: &mut Store<T>,
    instance: Option<PluginInstance>,
    doc: Document,
) -> (Result<CallOutput, CallFailure>, Option<PluginInstance>) {
    let timeout = store.data().core().limits.timeout;
    let mut steps = CallSteps::default();
    // One clock reading ends a step and starts the next.
    let mut ended = Instant::now();
    let called = async {
        let instance = match instance {
            Some(instance) => instance,
            None => {
                let instance = plugin.code.instantiate(&mut *store).await?;
                let now = Instant::now();
                steps.instantiate = Some(now - ended);
                ended = now;
                instance
            }
        };
        let returned = instance.call(&mut *store, doc).await;
        let now = Instant::now();
        steps.call = now - ended;
        ended = now;
        wasmtime::Result::Ok((returned?, instance))
    };
    let result = tokio::time::timeout(timeout + DEADLINE_SLACK, called)
        .await
        .ok();
    let mut fit = None;
    let outcome = match result {
        Some(Ok((returned, instance))) => {
            fit = Some(instance);
            match returned {
                Ok(output) => Ok(output),
                Err(PluginError::InvalidInput(m)) => Err(CallFailure::InvalidInput(m)),
                Err(PluginError::Failed(m)) => Err(CallFailure::Failed(m)),
            }
        }
        Some(Err(e)) => {
            ended = Instant::now();
            Err(CallFailure::from_wasmtime(&e, store.data().core()))
        }
        None => {
            store.data_mut().abandon().await;
            ended = Instant::now();
            Err(CallFailure::timeout(store.data().core().limits()))
        }
    };
    let data = store.data_mut();
    let outcome = match outcome {
        Ok(output) => data.finish(true).await.map(|()| output),
        Err(failure) => {
            // Undoing cannot make the call fail more than it did.
            let _ = data.finish(false).await;
            Err(failure)
        }
    };
    let now = Instant::now();
    steps.ending = now - ended;
    steps.host = data.host_steps();
    steps.total = now - data.core().started;
    runtime.steps().record(&steps);
    let outcome = match outcome {
        // A plugin that fails because its time ran out (inside a statement,
        // say) failed for that reason, whatever it reported: say so.
        Err(failure) if failure.is_plugin_reported() && data.core().remaining().is_zero() => {
            let m = match failure {
                CallFailure::Failed(m) | CallFailure::Trap(m) => m,
                other => other.to_string(),
            };
            Err(CallFailure::Timeout(format!(
                "{} (the plugin then reported: {m})",
                past_deadline(data.core().limits())
            )))
        }
        Err(failure) if failure.is_plugin_reported() => Err(data.explain(failure)),
        outcome => outcome,
    };
    (outcome, fit)
}
