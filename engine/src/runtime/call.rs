//! One plugin call: its store data, limits and deadline, and how its failures are told apart.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::ResourceTable;
use wasmtime::{Store, StoreLimits, StoreLimitsBuilder, UpdateDeadline};
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

/// Limits applied to one call.
#[derive(Debug, Clone, PartialEq)]
pub struct CallLimits {
    /// Wall-clock deadline, including time spent in host calls.
    pub timeout: Duration,
    /// Maximum linear memory, bytes.
    pub memory_bytes: usize,
    /// Most findings one call may return.
    pub max_findings: usize,
}

impl CallLimits {
    /// Limits from the `[limits]` configuration.
    pub fn from_config(config: &crate::config::LimitsConfig) -> Self {
        Self {
            timeout: Duration::from_millis(config.call_timeout_ms),
            memory_bytes: usize::try_from(config.memory_mib.saturating_mul(1024 * 1024))
                .unwrap_or(usize::MAX),
            max_findings: config.max_findings,
        }
    }
}

/// Everything the host keeps for one call; the `T` of its `Store<T>`.
pub struct CallState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    output: MemoryOutputPipe,
    /// The plugin being called.
    pub plugin: Arc<PluginIdentity>,
    /// The call's SQL transaction, opened at its first statement.
    pub sql: SqlSession,
    /// When the call must be over.
    pub deadline: Instant,
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
            limits: StoreLimitsBuilder::new()
                .memory_size(limits.memory_bytes)
                .instances(16)
                .tables(16)
                .memories(4)
                .build(),
            output,
            plugin,
            sql,
            deadline: started + limits.timeout,
        };
        let mut store = Store::new(runtime.engine(), state);
        store.limiter(|state| &mut state.limits);
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
    /// The plugin trapped (panicked, ran out of memory, hit `unreachable`, …).
    #[error("trapped: {0}")]
    Trap(String),
    /// The call ran out of time.
    #[error("timed out after {} ms", .0.as_millis())]
    Timeout(Duration),
    /// The plugin returned something the host cannot accept (bad span, data that is not JSON, …).
    #[error("returned invalid output: {0}")]
    InvalidOutput(String),
}

impl CallFailure {
    /// The `error_kind` stored in `assay.run_plugins`.
    pub fn kind(&self) -> &'static str {
        match self {
            CallFailure::InvalidInput(_) => "invalid-input",
            CallFailure::Failed(_) => "failed",
            CallFailure::Trap(_) => "trap",
            CallFailure::Timeout(_) => "timeout",
            CallFailure::InvalidOutput(_) => "invalid-output",
        }
    }

    /// Classifies an error from wasmtime (a trap or our deadline).
    pub fn from_wasmtime(error: &wasmtime::Error, captured_output: &str) -> Self {
        if let Some(DeadlineExceeded(timeout)) = error.downcast_ref::<DeadlineExceeded>() {
            return CallFailure::Timeout(*timeout);
        }
        let mut message = match error.downcast_ref::<wasmtime::Trap>() {
            Some(trap) => trap.to_string(),
            None => format!("{error:#}"),
        };
        if !captured_output.is_empty() {
            let tail: String = last_chars(captured_output, 600);
            message.push_str("; plugin output: ");
            message.push_str(&tail);
        }
        CallFailure::Trap(message)
    }
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
pub async fn invoke(
    runtime: &Runtime,
    plugin: &LoadedPlugin,
    session: SqlSession,
    limits: &CallLimits,
    doc: Document,
) -> Result<CallOutput, CallFailure> {
    let mut store = CallState::new_store(runtime, Arc::clone(&plugin.identity), session, limits);
    let result: wasmtime::Result<Result<CallOutput, PluginError>> = match &plugin.code {
        PluginCode::Analyzer(pre) => {
            async {
                let instance = pre.instantiate_async(&mut store).await?;
                Ok(instance
                    .call_analyze(&mut store, &doc)
                    .await?
                    .map(CallOutput::Findings))
            }
            .await
        }
        PluginCode::Prompt(pre) => {
            async {
                let instance = pre.instantiate_async(&mut store).await?;
                Ok(instance
                    .call_process(&mut store, &doc)
                    .await?
                    .map(|p| CallOutput::Processed(p.document, p.findings)))
            }
            .await
        }
    };
    let outcome = match result {
        Ok(Ok(output)) => Ok(output),
        Ok(Err(PluginError::InvalidInput(m))) => Err(CallFailure::InvalidInput(m)),
        Ok(Err(PluginError::Failed(m))) => Err(CallFailure::Failed(m)),
        Err(e) => Err(CallFailure::from_wasmtime(
            &e,
            &store.data().captured_output(),
        )),
    };
    let sql = &mut store.data_mut().sql;
    match outcome {
        Ok(output) => sql
            .finish(true)
            .await
            .map(|()| output)
            .map_err(CallFailure::Failed),
        Err(failure) => {
            let _ = sql.finish(false).await;
            Err(failure)
        }
    }
}
