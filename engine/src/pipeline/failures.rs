//! Recent failures, by plugin and kind, for `GET /healthz`: what an operator
//! needs to see that one plugin keeps timing out while the rest are fine.
//!
//! Kept in memory by the process that runs the calls. `assay plugins list`
//! reads the same from the stored runs instead (`assay.run_plugins`), which
//! covers every process writing to the database.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

/// How far back "recent" reaches.
pub const RECENT_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Failures remembered per plugin for the window (older ones still count in totals).
const KEPT_PER_PLUGIN: usize = 10_000;

/// The engine itself, in the log: documents refused or not stored.
pub const ENGINE: &str = "(engine)";

#[derive(Debug, Default)]
struct PluginFailures {
    recent: VecDeque<(Instant, &'static str)>,
    total: BTreeMap<&'static str, u64>,
    last: Option<LastFailure>,
}

/// The most recent failure of a plugin.
#[derive(Debug, Clone, Serialize)]
pub struct LastFailure {
    /// When, seconds since the Unix epoch.
    pub at_unix_s: u64,
    /// Its kind.
    pub kind: &'static str,
    /// What went wrong.
    pub message: String,
}

/// What `/healthz` shows for one plugin (or the engine).
#[derive(Debug, Clone, Serialize)]
pub struct FailureSummary {
    /// Failures in the last [`RECENT_WINDOW`], by kind.
    pub recent: BTreeMap<&'static str, u64>,
    /// Failures since the process started, by kind.
    pub total: BTreeMap<&'static str, u64>,
    /// The latest one.
    pub last: Option<LastFailure>,
}

/// Failures seen by this process.
#[derive(Debug, Default)]
pub struct FailureLog {
    by_plugin: Mutex<HashMap<String, PluginFailures>>,
}

impl FailureLog {
    /// Records one failure of `plugin` (or [`ENGINE`]).
    pub fn record(&self, plugin: &str, kind: &'static str, message: &str) {
        let mut by_plugin = crate::sync::lock(&self.by_plugin);
        let entry = by_plugin.entry(plugin.to_string()).or_default();
        let now = Instant::now();
        entry.recent.push_back((now, kind));
        while entry.recent.len() > KEPT_PER_PLUGIN {
            entry.recent.pop_front();
        }
        *entry.total.entry(kind).or_default() += 1;
        entry.last = Some(LastFailure {
            at_unix_s: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            kind,
            message: message.chars().take(500).collect(),
        });
    }

    /// Every plugin with failures, by name.
    pub fn summary(&self) -> BTreeMap<String, FailureSummary> {
        let mut by_plugin = crate::sync::lock(&self.by_plugin);
        let now = Instant::now();
        by_plugin
            .iter_mut()
            .map(|(name, f)| {
                while f
                    .recent
                    .front()
                    .is_some_and(|(at, _)| now.duration_since(*at) > RECENT_WINDOW)
                {
                    f.recent.pop_front();
                }
                let mut recent = BTreeMap::new();
                for (_, kind) in &f.recent {
                    *recent.entry(*kind).or_default() += 1;
                }
                (
                    name.clone(),
                    FailureSummary {
                        recent,
                        total: f.total.clone(),
                        last: f.last.clone(),
                    },
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_plugin_and_kind() {
        let log = FailureLog::default();
        log.record("a", "timeout", "slow");
        log.record("a", "timeout", "slow again");
        log.record("a", "memory", "big");
        log.record(ENGINE, "overloaded", "busy");
        let summary = log.summary();
        assert_eq!(summary["a"].recent["timeout"], 2);
        assert_eq!(summary["a"].total["memory"], 1);
        assert_eq!(summary["a"].last.as_ref().map(|l| l.kind), Some("memory"));
        assert_eq!(summary[ENGINE].recent["overloaded"], 1);
        assert!(!summary.contains_key("b"));
    }
}
