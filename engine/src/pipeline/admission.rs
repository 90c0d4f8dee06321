//! Backpressure: how many documents, calls, and calls of one plugin may run at
//! once, and how long anything waits for a turn.
//!
//! Every wait is bounded by `limits.queue_timeout_ms`. Past it the work is
//! refused as `overloaded` instead of queueing without end: memory stays
//! bounded under any load, and a caller learns at once to come back later.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::Config;
use crate::runtime::call::CallLimits;

/// Admission control shared by every run of a pipeline.
#[derive(Debug)]
pub struct Admission {
    documents: Arc<Semaphore>,
    max_documents: usize,
    calls: Arc<Semaphore>,
    max_calls: u32,
    per_plugin: Mutex<HashMap<String, Arc<Semaphore>>>,
    wait: Duration,
}

/// Held while a call runs: its global slot and its plugin's slot.
#[derive(Debug)]
pub struct CallPermit {
    _global: OwnedSemaphorePermit,
    _plugin: OwnedSemaphorePermit,
}

impl Admission {
    /// Limits from `[pipeline]` and `[limits]`.
    pub fn new(config: &Config) -> Self {
        let max_documents = config.pipeline.max_in_flight.max(1);
        let max_calls = config.limits.max_concurrent_calls.max(1);
        Self {
            documents: Arc::new(Semaphore::new(max_documents)),
            max_documents,
            calls: Arc::new(Semaphore::new(max_calls as usize)),
            max_calls,
            per_plugin: Mutex::new(HashMap::new()),
            wait: Duration::from_millis(config.limits.queue_timeout_ms),
        }
    }

    /// How long callers are told to wait before retrying (`Retry-After`), seconds.
    pub fn retry_after_s(&self) -> u64 {
        self.wait.as_secs().max(1)
    }

    /// A turn for one document, or why there is none.
    pub async fn document(&self) -> Result<OwnedSemaphorePermit, Overloaded> {
        acquire(&self.documents, self.wait).await.ok_or_else(|| {
            Overloaded(format!(
                "{} documents are already being analysed (pipeline.max_in_flight) and none finished within {} ms (limits.queue_timeout_ms); retry later",
                self.max_documents,
                self.wait.as_millis()
            ))
        })
    }

    /// A turn for one call of `plugin`, or why there is none.
    pub async fn call(&self, plugin: &str, limits: &CallLimits) -> Result<CallPermit, Overloaded> {
        let mine = {
            let mut per_plugin = crate::sync::lock(&self.per_plugin);
            Arc::clone(
                per_plugin
                    .entry(plugin.to_string())
                    .or_insert_with(|| Arc::new(Semaphore::new(limits.concurrent_calls as usize))),
            )
        };
        // The plugin's own slot first: a plugin at its limit must not hold
        // global slots other plugins could use while it waits.
        let plugin_permit = acquire(&mine, self.wait).await.ok_or_else(|| {
            Overloaded(format!(
                "{plugin} is already running {} calls ({}) and none finished within {} ms (limits.queue_timeout_ms)",
                limits.concurrent_calls,
                limits.key("concurrent_calls"),
                self.wait.as_millis()
            ))
        })?;
        let global = acquire(&self.calls, self.wait).await.ok_or_else(|| {
            Overloaded(format!(
                "{} plugin calls are already running (limits.max_concurrent_calls) and none finished within {} ms (limits.queue_timeout_ms)",
                self.max_calls,
                self.wait.as_millis()
            ))
        })?;
        Ok(CallPermit {
            _global: global,
            _plugin: plugin_permit,
        })
    }
}

/// Why there was no turn: which limit was full, and for how long.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Overloaded(pub String);

async fn acquire(semaphore: &Arc<Semaphore>, wait: Duration) -> Option<OwnedSemaphorePermit> {
    match tokio::time::timeout(wait, Arc::clone(semaphore).acquire_owned()).await {
        Ok(Ok(permit)) => Some(permit),
        // Closed (never, here) or timed out.
        _ => None,
    }
}
