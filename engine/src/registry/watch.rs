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

/// How often the watched directory itself is looked at: replaced (moved away
/// and made again, as some deploys do), removed, or its configured path
/// (a symlink) now leading elsewhere.
pub const DIRECTORY_CHECK_INTERVAL: Duration = Duration::from_secs(2);

type Debouncer = notify_debouncer_full::Debouncer<
    notify_debouncer_full::notify::RecommendedWatcher,
    notify_debouncer_full::RecommendedCache,
>;

/// Keeps the watch running; dropping it stops watching.
pub struct Watch {
    _debouncer: Arc<std::sync::Mutex<Debouncer>>,
    task: tokio::task::JoinHandle<()>,
    guard: tokio::task::JoinHandle<()>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
        self.guard.abort();
    }
}

/// What identifies a directory on disk (device and inode).
fn identity(dir: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(dir).ok().map(|m| (m.dev(), m.ino()))
}

/// Watches the directory itself. Replaced at the same path: watched again
/// and rescanned, so hot reload goes on. Gone, or the configured path now
/// resolving to another directory: said loudly, once, since this engine keeps
/// naming its plugin files by the directory it resolved at start.
///
/// `watched` is the directory's identity when the watch began (taken then,
/// not when this task first runs, which may be after a replacement).
async fn guard_directory(
    live: Arc<LiveRegistry>,
    debouncer: Arc<std::sync::Mutex<Debouncer>>,
    mut watched: Option<(u64, u64)>,
) {
    let dir = live.plugin_dir();
    let configured = live.loader().config().plugins.dir.clone();
    let mut warned = false;
    loop {
        tokio::time::sleep(DIRECTORY_CHECK_INTERVAL).await;
        let now = identity(&dir);
        let leads_to = std::fs::canonicalize(&configured).ok();
        if leads_to.as_ref().is_some_and(|p| *p != dir) {
            if !warned {
                tracing::error!(
                    "plugins.dir ({}) now leads to {}, not to {}, which this engine watches; restart it to follow the change",
                    configured.display(),
                    leads_to
                        .as_ref()
                        .map_or_else(String::new, |p| p.display().to_string()),
                    dir.display()
                );
                warned = true;
            }
            continue;
        }
        if now == watched {
            continue;
        }
        match now {
            None => {
                if !warned {
                    tracing::error!(
                        "the plugin directory {} is gone; plugins keep serving, and hot reload resumes when it is back",
                        dir.display()
                    );
                    warned = true;
                }
            }
            Some(_) => {
                tracing::warn!(
                    "the plugin directory {} was replaced; watching the new one",
                    dir.display()
                );
                let rewatched = debouncer.lock().map_err(|_| ()).map(|mut d| {
                    let _ = d.unwatch(&dir);
                    d.watch(&dir, RecursiveMode::NonRecursive)
                });
                match rewatched {
                    Ok(Ok(())) => {
                        watched = now;
                        warned = false;
                        live.rescan().await;
                    }
                    Ok(Err(e)) => tracing::error!("cannot watch {}: {e}", dir.display()),
                    Err(_) => return,
                }
            }
        }
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
                        tracing::warn!(
                            "plugin directory watch error: {}",
                            crate::capability::log::printable(&e.to_string())
                        );
                    }
                }
            },
        )
        .map_err(|e| err(e.to_string()))?;
    // Taken before the watch begins: a replacement in between is then seen
    // as one (and costs a rescan), never missed.
    let watched = identity(&dir);
    debouncer
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(|e| err(e.to_string()))?;
    let debouncer = Arc::new(std::sync::Mutex::new(debouncer));
    let guard = tokio::spawn(guard_directory(
        Arc::clone(&live),
        Arc::clone(&debouncer),
        watched,
    ));
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
        _debouncer: debouncer,
        task,
        guard,
    })
}
