//! One plugin call: its store data, limits and deadline, and how its failures are told apart.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::ResourceTable;
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::Runtime;
use super::bindings::types::{Document, Finding, PluginError};
use super::loader::{LoadedPlugin, PluginCode};
use crate::capability::sql::SqlSession;

/// How much of what a plugin prints (panic messages, debug output) is kept to
/// explain a failure. Beyond this its writes fail; it cannot grow host memory.
pub const CAPTURED_OUTPUT_BYTES: usize = 8 * 1024;

/// Which plugin version a call belongs to; attached to its logs and findings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginIdentity {
    /// Name from the manifest.
    pub name: String,
    /// Version string from the manifest.
    pub version: String,
    /// SHA-256 of the component bytes, lowercase hex.
    pub sha256: String,
}

pub use super::limits::CallLimits;
use super::limits::{CallLimiter, LimitHit};

/// Everything the host keeps for one call; the `T` of its `Store<T>`.
pub struct CallState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: CallLimiter,
    limits: CallLimits,
    output: MemoryOutputPipe,
    /// The plugin being called.
    pub plugin: Arc<PluginIdentity>,
    /// The call's SQL transaction, opened at its first statement.
    pub sql: SqlSession,
    /// When the call must be over.
    pub deadline: Instant,
    /// The process-wide wasm stack limit, for error messages.
    wasm_stack_kib: u64,
    /// Lines logged so far (see [`crate::capability::log::MAX_LINES_PER_CALL`]).
    pub log_lines: u32,
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The error a call fails with when its deadline passes while plugin code runs.
#[derive(Debug, thiserror::Error)]
#[error("the call ran past its deadline of {} ms", .0.as_millis())]
pub struct DeadlineExceeded(pub Duration);

/// How long past its deadline a call stuck in a host call (a sleep, a slow
/// statement) is given to notice before it is dropped: a little longer than
/// the deadline itself, so the deadline's own, cleaner error usually wins.
pub const DEADLINE_SLACK: Duration = Duration::from_millis(50);

impl CallState {
    /// A store for one call: no files, no network, no environment; stdout and
    /// stderr captured (bounded) to explain failures.
    pub fn new_store(
        runtime: &Runtime,
        plugin: Arc<PluginIdentity>,
        sql: SqlSession,
        limits: &CallLimits,
    ) -> Store<CallState> {
        let output = MemoryOutputPipe::new(CAPTURED_OUTPUT_BYTES);
        let wasi = WasiCtxBuilder::new()
            .stdout(output.clone())
            .stderr(output.clone())
            .build();
        let started = Instant::now();
        let state = CallState {
            wasi,
            table: ResourceTable::new(),
            limiter: CallLimiter::new(limits),
            limits: limits.clone(),
            output,
            plugin,
            sql,
            deadline: started + limits.timeout,
            wasm_stack_kib: runtime.wasm_stack_kib(),
            log_lines: 0,
        };
        let mut store = Store::new(runtime.engine(), state);
        store.limiter(|state| &mut state.limiter);
        // Every epoch tick: trap if the deadline passed, otherwise yield to the
        // async runtime so a busy plugin cannot hog a worker thread.
        let timeout = limits.timeout;
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if started.elapsed() >= timeout {
                Err(DeadlineExceeded(timeout).into())
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        store
    }

    /// What the plugin printed during the call (lossy UTF-8, trimmed).
    pub fn captured_output(&self) -> String {
        String::from_utf8_lossy(&self.output.contents())
            .trim()
            .to_string()
    }

    /// Time left before the deadline.
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }
}

/// Why a call produced no usable result.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallFailure {
    /// The plugin returned `invalid-input`.
    #[error("rejected the document: {0}")]
    InvalidInput(String),
    /// The plugin returned `failed`.
    #[error("reported failure: {0}")]
    Failed(String),
    /// The plugin trapped (panicked, overflowed its stack, hit `unreachable`, …).
    #[error("trapped: {0}")]
    Trap(String),
    /// The call ran out of time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The plugin asked for more memory (or table space) than it may have.
    #[error("hit a memory limit: {0}")]
    Memory(String),
    /// The plugin, or the engine, was already running as many calls as allowed.
    #[error("overloaded: {0}")]
    Overloaded(String),
    /// The database was unavailable, or lost, during the call.
    #[error("database unavailable: {0}")]
    Database(String),
    /// The plugin returned something the host cannot accept (bad span, data that
    /// is not JSON, too many findings, …).
    #[error("returned invalid output: {0}")]
    InvalidOutput(String),
}

/// Every failure kind, as stored in `assay.run_plugins.error_kind`.
pub const FAILURE_KINDS: [&str; 8] = [
    "invalid-input",
    "failed",
    "trap",
    "timeout",
    "memory",
    "overloaded",
    "database",
    "invalid-output",
];

impl CallFailure {
    /// The `error_kind` stored in `assay.run_plugins`.
    pub fn kind(&self) -> &'static str {
        match self {
            CallFailure::InvalidInput(_) => "invalid-input",
            CallFailure::Failed(_) => "failed",
            CallFailure::Trap(_) => "trap",
            CallFailure::Timeout(_) => "timeout",
            CallFailure::Memory(_) => "memory",
            CallFailure::Overloaded(_) => "overloaded",
            CallFailure::Database(_) => "database",
            CallFailure::InvalidOutput(_) => "invalid-output",
        }
    }

    /// The failure of a call whose deadline passed.
    pub fn timeout(limits: &CallLimits) -> Self {
        CallFailure::Timeout(past_deadline(limits))
    }

    /// Classifies an error from wasmtime (a trap, a refused resource, our
    /// deadline), naming the limit involved.
    pub fn from_wasmtime(error: &wasmtime::Error, call: &CallState) -> Self {
        let limits = &call.limits;
        if error.downcast_ref::<DeadlineExceeded>().is_some() {
            return CallFailure::timeout(limits);
        }
        let with_output = |mut message: String| {
            let captured = call.captured_output();
            if !captured.is_empty() {
                message.push_str("; plugin output: ");
                message.push_str(&last_chars(&captured, 600));
            }
            message
        };
        // A refused grow usually surfaces as an abort (`unreachable`) in the
        // plugin's allocator; the limiter knows the real cause.
        match call.limiter.hit {
            Some(LimitHit::Memory(asked)) => {
                return CallFailure::Memory(with_output(format!(
                    "the plugin asked for {} MiB of linear memory; the limit is {} MiB ({})",
                    asked.div_ceil(1024 * 1024),
                    limits.memory_bytes / (1024 * 1024),
                    limits.key("memory_mib")
                )));
            }
            Some(LimitHit::TableElements(asked)) => {
                return CallFailure::Memory(with_output(format!(
                    "the plugin asked for a table of {asked} elements; the limit is {} ({})",
                    limits.table_elements,
                    limits.key("table_elements")
                )));
            }
            None => {}
        }
        match error.downcast_ref::<wasmtime::Trap>() {
            Some(wasmtime::Trap::StackOverflow) => CallFailure::Trap(with_output(format!(
                "{}: the wasm stack limit is {} KiB (limits.wasm_stack_kib)",
                wasmtime::Trap::StackOverflow,
                call.wasm_stack_kib
            ))),
            Some(trap) => CallFailure::Trap(with_output(trap.to_string())),
            None if error
                .downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
                .is_some() =>
            {
                // The instance pool is full: more instances than it has slots.
                CallFailure::Overloaded(format!(
                    "no free instance slot ({error:#}); raise limits.max_concurrent_calls"
                ))
            }
            None => {
                let message = format!("{error:#}");
                // wasmtime reports the store's instance/table/memory counts
                // only in words.
                if message.contains("resource limit exceeded") {
                    CallFailure::Memory(format!(
                        "{message} (at most {} instances, tables and memories per call: {})",
                        limits.instances,
                        limits.key("instances")
                    ))
                } else {
                    CallFailure::Trap(with_output(message))
                }
            }
        }
    }
}

fn past_deadline(limits: &CallLimits) -> String {
    format!(
        "the call ran past its deadline of {} ms ({})",
        limits.timeout.as_millis(),
        limits.key("call_timeout_ms")
    )
}

fn last_chars(text: &str, n: usize) -> String {
    let count = text.chars().count();
    text.chars().skip(count.saturating_sub(n)).collect()
}

/// What a successful call returned.
#[derive(Debug)]
pub enum CallOutput {
    /// An analysis plugin's findings.
    Findings(Vec<Finding>),
    /// A prompt plugin's transformed document and findings.
    Processed(Document, Vec<Finding>),
}

/// Calls `plugin` once on `doc` in a fresh instance with `limits`; its SQL (via
/// `session`) is committed if the call succeeds and rolled back otherwise.
///
/// The deadline holds everywhere: in plugin code the epoch callback traps, and
/// a call waiting in a host call (a WASI sleep, a statement) is dropped a
/// moment after the deadline, its statement cancelled and its connection closed.
pub async fn invoke(
    runtime: &Runtime,
    plugin: &LoadedPlugin,
    session: SqlSession,
    limits: &CallLimits,
    doc: Document,
) -> Result<CallOutput, CallFailure> {
    let mut store = CallState::new_store(runtime, Arc::clone(&plugin.identity), session, limits);
    let call = async {
        match &plugin.code {
            PluginCode::Analyzer(pre) => {
                let instance = pre.instantiate_async(&mut store).await?;
                Ok(instance
                    .call_analyze(&mut store, &doc)
                    .await?
                    .map(CallOutput::Findings))
            }
            PluginCode::Prompt(pre) => {
                let instance = pre.instantiate_async(&mut store).await?;
                Ok(instance
                    .call_process(&mut store, &doc)
                    .await?
                    .map(|p| CallOutput::Processed(p.document, p.findings)))
            }
        }
    };
    let result: Option<wasmtime::Result<Result<CallOutput, PluginError>>> =
        tokio::time::timeout(limits.timeout + DEADLINE_SLACK, call)
            .await
            .ok();
    let outcome = match result {
        Some(Ok(Ok(output))) => Ok(output),
        Some(Ok(Err(PluginError::InvalidInput(m)))) => Err(CallFailure::InvalidInput(m)),
        Some(Ok(Err(PluginError::Failed(m)))) => Err(CallFailure::Failed(m)),
        Some(Err(e)) => Err(CallFailure::from_wasmtime(&e, store.data())),
        None => {
            // Dropped inside a host call: whatever statement it was running is
            // in an unknown state, so cancel it and never reuse the connection.
            store.data_mut().sql.abandon_statement().await;
            Err(CallFailure::timeout(limits))
        }
    };
    let sql = &mut store.data_mut().sql;
    let outcome = match outcome {
        Ok(output) => match sql.finish(true).await {
            Ok(()) => Ok(output),
            Err(m) if sql.unavailable().is_some() => Err(CallFailure::Database(m)),
            Err(m) => Err(CallFailure::Failed(m)),
        },
        Err(failure) => {
            let _ = sql.finish(false).await;
            Err(failure)
        }
    };
    // A plugin that fails because its time ran out (inside a statement, say)
    // or because the database went away failed for that reason, whatever it
    // reported: say so.
    if let Err(CallFailure::Failed(m) | CallFailure::Trap(m)) = &outcome
        && store.data().remaining().is_zero()
    {
        return Err(CallFailure::Timeout(format!(
            "{} (the plugin then reported: {m})",
            past_deadline(limits)
        )));
    }
    match (outcome, store.data().sql.unavailable()) {
        (Err(failure @ (CallFailure::Failed(_) | CallFailure::Trap(_))), Some(cause)) => Err(
            CallFailure::Database(format!("{cause} (the plugin then {failure})")),
        ),
        (outcome, _) => outcome,
    }
}
