//! Per-call compute limits: what they are for one plugin (defaults from
//! `[limits]`, overridden by `[limits.plugins.NAME]`), how the store enforces
//! them, and how the instance pool is sized to hold them.
//!
//! Memory, tables and instances are enforced by [`CallLimiter`], a wasmtime
//! resource limiter that also remembers *which* limit refused a request: Rust
//! code that cannot allocate aborts with a bare `unreachable` trap, and only the
//! limiter knows the cause was the memory limit.

use std::time::Duration;

use wasmtime::{Enabled, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter};

use crate::config::{Config, LimitsConfig};

const MIB: u64 = 1024 * 1024;

/// Bytes at the start of a linear memory kept mapped between calls.
const KEEP_RESIDENT: usize = 2 * 1024 * 1024;

/// Instance slots reserved on top of `limits.max_concurrent_calls` for loading
/// plugins (`describe` runs in an instance too), so loads never wait for calls.
pub const LOAD_SLOTS: u32 = 32;

/// Limits applied to one call of one plugin.
#[derive(Debug, Clone, PartialEq)]
pub struct CallLimits {
    /// Wall-clock deadline, including time spent in host calls.
    pub timeout: Duration,
    /// Server-side timeout of each SQL statement.
    pub statement_timeout: Duration,
    /// Maximum linear memory, bytes.
    pub memory_bytes: usize,
    /// Most elements one table may hold.
    pub table_elements: usize,
    /// Most core instances (and so memories and tables) one call may create.
    pub instances: usize,
    /// Most findings one call may return.
    pub max_findings: usize,
    /// Most bytes one call may hand back (labels, data, returned text).
    pub max_output_bytes: usize,
    /// Calls of this plugin at the same time.
    pub concurrent_calls: u32,
    /// Whether a call may run in an instance an earlier call of the same
    /// plugin version left, and how many calls one instance serves at most;
    /// `None`: a fresh instance for every call.
    pub reuse: Option<Reuse>,
    /// The plugin whose `[limits.plugins.NAME]` applied, and which settings it
    /// set (so an error names the key that really holds the value).
    pub overridden: Option<(String, Vec<&'static str>)>,
}

impl CallLimits {
    /// The `[limits]` defaults, without any per-plugin override.
    pub fn from_config(config: &LimitsConfig) -> Self {
        Self {
            timeout: Duration::from_millis(config.call_timeout_ms),
            statement_timeout: Duration::from_millis(config.statement_timeout_ms),
            memory_bytes: bytes(config.memory_mib.saturating_mul(MIB)),
            table_elements: config.table_elements as usize,
            instances: config.instances as usize,
            max_findings: config.max_findings,
            max_output_bytes: bytes(config.max_output_kib.saturating_mul(1024)),
            concurrent_calls: config.concurrent_calls.max(1),
            reuse: Reuse::when(config.reuse_instances, config.calls_per_instance),
            overridden: None,
        }
    }

    /// The limits of plugin `name`: `[limits]` with `[limits.plugins.NAME]` on top.
    pub fn for_plugin(config: &LimitsConfig, name: &str) -> Self {
        let mut limits = Self::from_config(config);
        let Some(o) = config.plugins.get(name) else {
            return limits;
        };
        let mut set = Vec::new();
        if let Some(ms) = o.call_timeout_ms {
            limits.timeout = Duration::from_millis(ms);
            set.push("call_timeout_ms");
        }
        if let Some(ms) = o.statement_timeout_ms {
            limits.statement_timeout = Duration::from_millis(ms);
            set.push("statement_timeout_ms");
        }
        if let Some(mib) = o.memory_mib {
            limits.memory_bytes = bytes(mib.saturating_mul(MIB));
            set.push("memory_mib");
        }
        if let Some(n) = o.table_elements {
            limits.table_elements = n as usize;
            set.push("table_elements");
        }
        if let Some(n) = o.instances {
            limits.instances = n as usize;
            set.push("instances");
        }
        if let Some(n) = o.max_findings {
            limits.max_findings = n;
            set.push("max_findings");
        }
        if let Some(kib) = o.max_output_kib {
            limits.max_output_bytes = bytes(kib.saturating_mul(1024));
            set.push("max_output_kib");
        }
        if let Some(n) = o.concurrent_calls {
            limits.concurrent_calls = n.max(1);
            set.push("concurrent_calls");
        }
        if o.reuse_instances.is_some() || o.calls_per_instance.is_some() {
            limits.reuse = Reuse::when(
                o.reuse_instances.unwrap_or(config.reuse_instances),
                o.calls_per_instance.unwrap_or(config.calls_per_instance),
            );
            set.extend(o.reuse_instances.map(|_| "reuse_instances"));
            set.extend(o.calls_per_instance.map(|_| "calls_per_instance"));
        }
        limits.overridden = Some((name.to_string(), set));
        limits
    }

    /// The configuration key of `setting` for these limits, e.g.
    /// `limits.memory_mib` or `limits.plugins.history.memory_mib`.
    pub fn key(&self, setting: &'static str) -> String {
        match &self.overridden {
            Some((name, set)) if set.contains(&setting) => {
                format!("limits.plugins.{name}.{setting}")
            }
            _ => format!("limits.{setting}"),
        }
    }
}

/// Instance reuse, for a plugin that opted in (`reuse_instances`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reuse {
    /// Calls one instance serves before it is dropped (at least 1).
    pub calls_per_instance: u32,
}

impl Reuse {
    /// Reuse as configured: `None` when it is off, or when an instance may
    /// serve only one call anyway.
    pub fn when(enabled: bool, calls_per_instance: u32) -> Option<Self> {
        (enabled && calls_per_instance > 1).then_some(Self { calls_per_instance })
    }
}

fn bytes(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// Which limit refused a request during a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitHit {
    /// A memory grew past the limit; the size asked for, in bytes.
    Memory(usize),
    /// A table grew past the limit; the elements asked for.
    TableElements(usize),
}

/// The resource limiter of one call's store.
#[derive(Debug)]
pub struct CallLimiter {
    memory_bytes: usize,
    table_elements: usize,
    instances: usize,
    /// The first refusal, if any.
    pub hit: Option<LimitHit>,
}

impl CallLimiter {
    /// A limiter enforcing `limits`.
    pub fn new(limits: &CallLimits) -> Self {
        Self {
            memory_bytes: limits.memory_bytes,
            table_elements: limits.table_elements,
            instances: limits.instances,
            hit: None,
        }
    }
}

impl ResourceLimiter for CallLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.hit.get_or_insert(LimitHit::Memory(desired));
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.table_elements {
            self.hit.get_or_insert(LimitHit::TableElements(desired));
            return Ok(false);
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        self.instances
    }

    fn tables(&self) -> usize {
        self.instances
    }

    fn memories(&self) -> usize {
        self.instances
    }
}

/// The largest value of `pick` over the defaults and every override.
fn largest<T: Ord + Copy>(
    config: &LimitsConfig,
    default: T,
    pick: impl Fn(&crate::config::PluginLimitsOverride) -> Option<T>,
) -> T {
    config
        .plugins
        .values()
        .filter_map(pick)
        .fold(default, std::cmp::max)
}

/// The pooling instance allocator sized for `config`: one slot per call that
/// may run at once (plus [`LOAD_SLOTS`], plus `warm_instances` for instances
/// kept between calls of plugins that reuse them), each big enough for the largest
/// memory and table any plugin is allowed.
///
/// Slots are reserved address space, touched only when used; linear memory is
/// initialised copy-on-write from the compiled image, so a fresh instance per
/// call costs little more than mapping.
pub fn pooling_strategy(config: &Config) -> InstanceAllocationStrategy {
    let limits = &config.limits;
    let components = limits
        .max_concurrent_calls
        .max(1)
        .saturating_add(LOAD_SLOTS)
        .saturating_add(limits.warm_instances);
    let instances = largest(limits, limits.instances, |o| o.instances).max(1);
    let memory = largest(limits, limits.memory_mib, |o| o.memory_mib).max(1);
    let table = largest(limits, limits.table_elements, |o| o.table_elements).max(1);
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(components)
        .total_stacks(components)
        // A typical plugin is three to five core instances with one or two
        // memories; a call that needs more than the average waits for none of
        // this, it only needs the pool as a whole not to be full.
        .total_core_instances(components.saturating_mul(8))
        .total_memories(components.saturating_mul(2))
        .total_tables(components.saturating_mul(4))
        .max_core_instances_per_component(instances)
        .max_memories_per_component(instances)
        .max_tables_per_component(instances)
        .max_tables_per_module(4)
        .max_memories_per_module(1)
        .table_elements(table as usize)
        .max_memory_size(bytes(memory.saturating_mul(MIB)))
        // A freed slot is reset by zeroing its first pages in place rather than
        // handing them back to the kernel: the next call of the same plugin
        // (slots keep their affinity) then takes no page faults there, and
        // no TLB shootdowns. Rust plugins keep their stack and data there.
        .linear_memory_keep_resident(KEEP_RESIDENT)
        // With the kernel's PAGEMAP_SCAN (Linux 6.7+), only the pages a call
        // actually dirtied are reset, instead of memset over all of
        // KEEP_RESIDENT: a small call dirties a few pages of its stack and
        // heap, and zeroing 2 MiB was the largest single cost of a call
        // (BENCHMARKS.md). Older kernels fall back to the memset.
        .pagemap_scan(Enabled::Auto)
        .table_keep_resident(64 * 1024);
    InstanceAllocationStrategy::Pooling(pool)
}

#[cfg(test)]
// figment::Jail's closures return figment::Error, which is large; fine in tests.
#[allow(clippy::result_large_err)]
mod tests {
    use std::path::Path;

    use super::CallLimits;

    /// Instance reuse is off unless asked for, per plugin in the file or the
    /// environment, and an error names the key that turned it on.
    #[test]
    fn instance_reuse_is_chosen_per_plugin() {
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            jail.create_file(
                "assay.toml",
                "[limits.plugins.history]\nreuse_instances = true\ncalls_per_instance = 50\n",
            )?;
            jail.set_env("ASSAY__LIMITS__PLUGINS__KEYWORDS__REUSE_INSTANCES", "true");
            let config =
                crate::config::Config::load(Path::new("assay.toml")).map_err(|e| e.to_string())?;
            let history = CallLimits::for_plugin(&config.limits, "history");
            assert_eq!(history.reuse.map(|r| r.calls_per_instance), Some(50));
            assert_eq!(
                history.key("reuse_instances"),
                "limits.plugins.history.reuse_instances"
            );
            let keywords = CallLimits::for_plugin(&config.limits, "keywords");
            assert_eq!(keywords.reuse.map(|r| r.calls_per_instance), Some(1_000));
            assert_eq!(CallLimits::for_plugin(&config.limits, "redact").reuse, None);
            Ok(())
        });
    }
}
