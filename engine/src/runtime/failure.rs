//! Why a call produced no usable result: the failure taxonomy stored with
//! every run (`assay.run_plugins.error_kind`) and shown to operators.

use super::call::{CallCore, DeadlineExceeded};
use super::limits::{CallLimits, LimitHit};

/// The kind of a failure, as stored in `assay.run_plugins.error_kind` (the
/// migrations' CHECK constraint lists the same names; a test keeps them equal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FailureKind {
    /// The plugin returned `invalid-input`.
    InvalidInput,
    /// The plugin returned `failed`.
    Failed,
    /// The plugin trapped.
    Trap,
    /// The call ran out of time.
    Timeout,
    /// The plugin hit a memory (or table, or instance) limit.
    Memory,
    /// Too many calls at once.
    Overloaded,
    /// The database was unavailable.
    Database,
    /// The plugin returned something the host cannot accept.
    InvalidOutput,
}

impl FailureKind {
    /// Every kind, in the order of the CHECK constraint.
    pub const ALL: [FailureKind; 8] = [
        FailureKind::InvalidInput,
        FailureKind::Failed,
        FailureKind::Trap,
        FailureKind::Timeout,
        FailureKind::Memory,
        FailureKind::Overloaded,
        FailureKind::Database,
        FailureKind::InvalidOutput,
    ];

    /// The name stored and shown.
    pub const fn as_str(self) -> &'static str {
        match self {
            FailureKind::InvalidInput => "invalid-input",
            FailureKind::Failed => "failed",
            FailureKind::Trap => "trap",
            FailureKind::Timeout => "timeout",
            FailureKind::Memory => "memory",
            FailureKind::Overloaded => "overloaded",
            FailureKind::Database => "database",
            FailureKind::InvalidOutput => "invalid-output",
        }
    }
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for FailureKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl PartialEq<&str> for FailureKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// Every failure kind's name, as stored in `assay.run_plugins.error_kind`.
pub const FAILURE_KINDS: [&str; 8] = {
    let mut names = [""; 8];
    let mut i = 0;
    while i < FailureKind::ALL.len() {
        names[i] = FailureKind::ALL[i].as_str();
        i += 1;
    }
    names
};

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

impl CallFailure {
    /// Its kind.
    pub fn failure_kind(&self) -> FailureKind {
        match self {
            CallFailure::InvalidInput(_) => FailureKind::InvalidInput,
            CallFailure::Failed(_) => FailureKind::Failed,
            CallFailure::Trap(_) => FailureKind::Trap,
            CallFailure::Timeout(_) => FailureKind::Timeout,
            CallFailure::Memory(_) => FailureKind::Memory,
            CallFailure::Overloaded(_) => FailureKind::Overloaded,
            CallFailure::Database(_) => FailureKind::Database,
            CallFailure::InvalidOutput(_) => FailureKind::InvalidOutput,
        }
    }

    /// The `error_kind` stored in `assay.run_plugins`.
    pub fn kind(&self) -> &'static str {
        self.failure_kind().as_str()
    }

    /// Whether the plugin itself said it failed, or trapped: a failure that
    /// something the host knows better (the deadline, the database) may explain.
    pub fn is_plugin_reported(&self) -> bool {
        matches!(self, CallFailure::Failed(_) | CallFailure::Trap(_))
    }

    /// The failure of a call whose deadline passed.
    pub fn timeout(limits: &CallLimits) -> Self {
        CallFailure::Timeout(past_deadline(limits))
    }

    /// Classifies an error from wasmtime (a trap, a refused resource, our
    /// deadline), naming the limit involved.
    pub fn from_wasmtime(error: &wasmtime::Error, call: &CallCore) -> Self {
        let limits = call.limits();
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
        match call.limit_hit() {
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
                call.wasm_stack_kib()
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

/// "the call ran past its deadline of N ms (limits.call_timeout_ms)".
pub fn past_deadline(limits: &CallLimits) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_named_once() {
        assert_eq!(
            FAILURE_KINDS,
            [
                "invalid-input",
                "failed",
                "trap",
                "timeout",
                "memory",
                "overloaded",
                "database",
                "invalid-output"
            ]
        );
        for kind in FailureKind::ALL {
            assert_eq!(kind, kind.as_str());
        }
    }
}
