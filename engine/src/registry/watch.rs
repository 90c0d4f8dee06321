//! Watching the plugin directory: file events, debounced, feed the live registry.
//!
//! Editors save by writing in place, by truncate-and-write, or by writing a
//! temporary file and renaming it over the old one, and often in bursts. The
//! debouncer waits until the directory has been quiet for
//! `plugins.watch_debounce_ms`, then each changed path is loaded once, from what
//! is on disk at that moment; an unchanged hash is skipped. So a burst ends in
//! exactly one reload of the final content. The directory watched is the
//! resolved one (absolute, symlinks followed), which is also how the registry
//! names its files, so the paths events carry match it whatever `plugins.dir`
//! says.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify_debouncer_full::notify::RecursiveMode;
use notify_debouncer_full::{DebounceEventResult, new_debouncer};
use tokio::sync::mpsc;

use super::live::{LiveRegistry, ReloadOutcome};

/// Why watching could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot watch the plugin directory {dir}: {cause}")]
pub struct WatchError {
    dir: String,
    cause: String,
}

/// Keeps the watch running; dropping it stops watching.
pub struct Watch {
    // Behind a mutex only so that `Watch` is `Sync`; it is never locked.
    _debouncer: std::sync::Mutex<Box<dyn std::any::Any + Send>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts watching `live`'s plugin directory. `on_reload` hears every outcome
/// (tests use it to wait for reloads).
pub fn watch(
    live: Arc<LiveRegistry>,
    debounce: Duration,
    on_reload: impl Fn(&PathBuf, &ReloadOutcome) + Send + Sync + 'static,
) -> Result<Watch, WatchError> {
    let dir = live.plugin_dir();
    let err = |cause: String| WatchError {
        dir: dir.display().to_string(),
        cause,
    };
    std::fs::create_dir_all(&dir).map_err(|e| err(e.to_string()))?;
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<PathBuf>>();
    let mut debouncer =
        new_debouncer(
            debounce,
            None,
            move |result: DebounceEventResult| match result {
                Ok(events) => {
                    let paths = events.into_iter().flat_map(|e| e.event.paths).collect();
                    let _ = tx.send(paths);
                }
                Err(errors) => {
                    for e in errors {
                        tracing::warn!("plugin directory watch error: {e}");
                    }
                }
            },
        )
        .map_err(|e| err(e.to_string()))?;
    debouncer
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(|e| err(e.to_string()))?;
    let task = tokio::spawn(async move {
        while let Some(paths) = rx.recv().await {
            // One pass per path, however many events the burst produced.
            let mut batch: BTreeSet<PathBuf> = paths.into_iter().collect();
            while let Ok(more) = rx.try_recv() {
                batch.extend(more);
            }
            for (path, outcome) in live.files_changed(batch).await {
                if outcome != ReloadOutcome::Ignored {
                    on_reload(&path, &outcome);
                }
            }
        }
    });
    Ok(Watch {
        _debouncer: std::sync::Mutex::new(Box::new(debouncer)),
        task,
    })
}
