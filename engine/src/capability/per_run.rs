//! What a capability keeps about one plugin's call in one run until the
//! pipeline takes it for the run's outcome (model usage, prompts looked up).
//! Keyed by run id, since a plugin version serves many runs at once.

use std::collections::HashMap;
use std::sync::Mutex;

use uuid::Uuid;

use crate::sync::lock;

/// Most runs whose records are kept untaken; past it, what is kept is
/// dropped (a run whose records are never taken must not grow it for ever).
pub const RUNS_KEPT: usize = 4_096;

/// Per-run records of type `T`.
#[derive(Debug)]
pub struct PerRun<T> {
    runs: Mutex<HashMap<Uuid, T>>,
}

impl<T> Default for PerRun<T> {
    fn default() -> Self {
        Self {
            runs: Mutex::default(),
        }
    }
}

impl<T: Default> PerRun<T> {
    /// Changes `run`'s record (a call outside a run keeps nothing).
    pub fn update(&self, run: Option<Uuid>, change: impl FnOnce(&mut T)) {
        let Some(run) = run else { return };
        let mut runs = lock(&self.runs);
        if runs.len() >= RUNS_KEPT && !runs.contains_key(&run) {
            runs.clear();
        }
        change(runs.entry(run).or_default());
    }

    /// `run`'s record, now taken (a second take gives the default).
    pub fn take(&self, run: Uuid) -> T {
        lock(&self.runs).remove(&run).unwrap_or_default()
    }

    /// What `read` makes of `run`'s record, leaving it in place.
    pub fn peek<R>(&self, run: Uuid, read: impl FnOnce(Option<&T>) -> R) -> R {
        read(lock(&self.runs).get(&run))
    }
}
