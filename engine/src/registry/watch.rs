//! Watching the plugin directory: file events, debounced, feed the live registry.
//!
//! Editors save by writing in place, by truncate-and-write, or by writing a
//! temporary file and renaming it over the old one, and often in bursts. A
//! rename into the directory delivers a complete file, so it is handled the
//! moment it is seen. For everything else the
//! debouncer waits until the directory has been quiet for
//! `plugins.watch_debounce_ms`, then each changed path is loaded once, from what
//! is on disk at that moment; an unchanged hash is skipped. So a burst ends in
//! exactly one reload of the final content. The directory watched is the
//! resolved one (absolute, symlinks followed), which is also how the registry
//! names its files, so the paths events carry match it whatever `plugins.dir`
//! says.
//!
//! Events can be lost (an event queue overflows, some file systems send
//! none), so every `plugins.rescan_interval_ms` the directory is also compared
//! with what was last seen — each plugin file's size, modification time and
//! inode, read without opening anything — and what differs is handled as if
//! its event had come.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify_debouncer_full::notify::RecursiveMode;
use notify_debouncer_full::{DebounceEventResult, new_debouncer};
use tokio::sync::mpsc;

use super::files::{Fingerprint, fingerprint, fingerprints};
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

/// The watch of renames into the directory (see [`watch`]).
type Renames = Arc<std::sync::Mutex<notify_debouncer_full::notify::RecommendedWatcher>>;

type Debouncer = notify_debouncer_full::Debouncer<
    notify_debouncer_full::notify::RecommendedWatcher,
    notify_debouncer_full::RecommendedCache,
>;

/// Keeps the watch running; dropping it stops watching.
pub struct Watch {
    _debouncer: Arc<std::sync::Mutex<Debouncer>>,
    _renames: Renames,
    task: tokio::task::JoinHandle<()>,
    guard: tokio::task::JoinHandle<()>,
    rescan: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
        self.guard.abort();
        if let Some(rescan) = &self.rescan {
            rescan.abort();
        }
    }
}

/// Who hears what each handled file became.
type OnReload = Arc<dyn Fn(&PathBuf, &ReloadOutcome) + Send + Sync>;

/// The fingerprint of each plugin file as last handled (by an event or a rescan).
type Seen = Arc<std::sync::Mutex<BTreeMap<PathBuf, Fingerprint>>>;

/// The paths whose fingerprint differs between `before` and `now` (changed,
/// added or gone).
fn differing(
    before: &BTreeMap<PathBuf, Fingerprint>,
    now: &BTreeMap<PathBuf, Fingerprint>,
) -> BTreeSet<PathBuf> {
    let mut changed: BTreeSet<PathBuf> = now
        .iter()
        .filter(|(path, print)| before.get(*path) != Some(*print))
        .map(|(path, _)| path.clone())
        .collect();
    changed.extend(before.keys().filter(|p| !now.contains_key(*p)).cloned());
    changed
}

/// Every `interval`, handles the files that changed since they were last
/// handled, once they have stayed the same for a whole interval (a file being
/// written is left until it is quiet, as the debouncer does) — changes whose
/// event was lost. Most often the event did come and this finds the content
/// already serving.
async fn rescan_missed(
    live: Arc<LiveRegistry>,
    interval: Duration,
    seen: Seen,
    on_reload: OnReload,
) {
    let dir = live.plugin_dir();
    // Changed at the last look: path → its fingerprint then (`None`: gone).
    let mut settling: BTreeMap<PathBuf, Option<Fingerprint>> = BTreeMap::new();
    loop {
        tokio::time::sleep(interval).await;
        let scan_dir = dir.clone();
        // Not listable now: this look is skipped (the directory guard says
        // why, once), and nothing counts as gone.
        let Ok(Ok(now)) = tokio::task::spawn_blocking(move || fingerprints(&scan_dir)).await else {
            continue;
        };
        let mut quiet = BTreeSet::new();
        let mut still_settling = BTreeMap::new();
        {
            let mut seen = crate::sync::lock(&seen);
            for path in differing(&seen, &now) {
                let print = now.get(&path).copied();
                match settling.get(&path) {
                    Some(before) if *before == print => {
                        quiet.insert(path.clone());
                        match print {
                            Some(print) => seen.insert(path, print),
                            None => seen.remove(&path),
                        };
                    }
                    _ => {
                        still_settling.insert(path, print);
                    }
                }
            }
        }
        settling = still_settling;
        if quiet.is_empty() {
            continue;
        }
        tracing::debug!(files = quiet.len(), "plugin files changed without an event");
        for (path, outcome) in live.files_changed(quiet).await {
            if !matches!(outcome, ReloadOutcome::Ignored | ReloadOutcome::Unchanged) {
                on_reload(&path, &outcome);
            }
        }
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
    renames: Renames,
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
                let rewatched = {
                    use notify_debouncer_full::notify::Watcher as _;
                    let mut d = crate::sync::lock(&debouncer);
                    let _ = d.unwatch(&dir);
                    let mut r = crate::sync::lock(&renames);
                    let _ = r.unwatch(&dir);
                    d.watch(&dir, RecursiveMode::NonRecursive)
                        .and_then(|()| r.watch(&dir, RecursiveMode::NonRecursive))
                };
                match rewatched {
                    Ok(()) => {
                        watched = now;
                        warned = false;
                        live.rescan().await;
                    }
                    Err(e) => tracing::error!("cannot watch {}: {e}", dir.display()),
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
    // Never shorter than twice `plugins.watch_debounce_ms`: the rescan is for
    // events that were lost, not for those still being debounced.
    let plugins = &live.loader().config().plugins;
    let rescan_interval = if plugins.rescan_interval_ms == 0 {
        Duration::ZERO
    } else {
        Duration::from_millis(plugins.rescan_interval_ms).max(Duration::from_millis(
            plugins.watch_debounce_ms.saturating_mul(2),
        ))
    };
    let dir_for_events = dir.clone();
    let on_reload: OnReload = Arc::new(on_reload);
    let err = |cause: String| WatchError {
        dir: dir.display().to_string(),
        cause,
    };
    std::fs::create_dir_all(&dir).map_err(|e| err(e.to_string()))?;
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<PathBuf>>();
    // A file renamed into place is complete: it needs no debounce, so it is
    // handled the moment the rename is seen. (Its debounced event comes
    // later and finds the content already serving.) In-place writes, which
    // come in bursts, still wait for the debounce. But the debouncer drops a
    // rename followed within its window by a removal (a change that came to
    // nothing, to it), while the rename path has already loaded the file: so
    // each renamed path is looked at once more after the debounce, which finds
    // it unchanged (nothing happens) or gone (it is unloaded).
    let renamed = tx.clone();
    let recheck_after = debounce.saturating_mul(2) + Duration::from_millis(50);
    let mut renames = notify_debouncer_full::notify::recommended_watcher(
        move |result: notify_debouncer_full::notify::Result<
            notify_debouncer_full::notify::Event,
        >| {
            use notify_debouncer_full::notify::EventKind;
            use notify_debouncer_full::notify::event::{ModifyKind, RenameMode};
            if let Ok(event) = result
                // `To` alone: a rename within the directory also comes as
                // `Both`, and one handling is enough.
                && matches!(
                    event.kind,
                    EventKind::Modify(ModifyKind::Name(RenameMode::To))
                )
            {
                let _ = renamed.send(event.paths.clone());
                let again = renamed.clone();
                // A plain thread: this runs on notify's, outside the runtime.
                // Renames are rare; a thread for each costs nothing that matters.
                let _ = std::thread::Builder::new()
                    .name("assay-watch-recheck".into())
                    .spawn(move || {
                        std::thread::sleep(recheck_after);
                        let _ = again.send(event.paths);
                    });
            }
        },
    )
    .map_err(|e| err(e.to_string()))?;
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
    // As the registry saw the files when it loaded them: a change made
    // between that and this watch beginning is found by the rescan.
    let initial = match live.fingerprints_at_start() {
        Some(seen) => seen,
        None => fingerprints(&dir).map_err(|e| err(e.to_string()))?,
    };
    let seen: Seen = Arc::new(std::sync::Mutex::new(initial));
    debouncer
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(|e| err(e.to_string()))?;
    {
        use notify_debouncer_full::notify::Watcher as _;
        renames
            .watch(&dir, RecursiveMode::NonRecursive)
            .map_err(|e| err(e.to_string()))?;
    }
    let renames: Renames = Arc::new(std::sync::Mutex::new(renames));
    let debouncer = Arc::new(std::sync::Mutex::new(debouncer));
    let guard = tokio::spawn(guard_directory(
        Arc::clone(&live),
        Arc::clone(&debouncer),
        Arc::clone(&renames),
        watched,
    ));
    let rescan = (!rescan_interval.is_zero()).then(|| {
        tokio::spawn(rescan_missed(
            Arc::clone(&live),
            rescan_interval,
            Arc::clone(&seen),
            Arc::clone(&on_reload),
        ))
    });
    let task = tokio::spawn(async move {
        while let Some(paths) = rx.recv().await {
            // One pass per path, however many events the burst produced.
            let mut batch: BTreeSet<PathBuf> = paths.into_iter().collect();
            while let Ok(more) = rx.try_recv() {
                batch.extend(more);
            }
            // The directory itself moved away or was removed: its files'
            // events say they are gone, but the plugins keep serving (as the
            // directory guard says) until it is back. What changed meanwhile
            // is found then, by the rescan or the guard's.
            if !dir_for_events.is_dir() {
                tracing::debug!(
                    events = batch.len(),
                    "plugin directory events while it is gone: not acted on"
                );
                continue;
            }
            // What the events handle, the rescan need not find again: noted
            // before handling, so that a batch slower than the rescan
            // interval is not handled twice. Only plugin files of the
            // directory are noted (not the directory itself, nor temporaries).
            {
                let mut seen = crate::sync::lock(&seen);
                for path in &batch {
                    let ours = path.parent() == Some(dir_for_events.as_path())
                        && path
                            .file_name()
                            .is_some_and(super::files::is_plugin_file_name);
                    if !ours {
                        continue;
                    }
                    match fingerprint(path) {
                        Some(print) => seen.insert(path.clone(), print),
                        None => seen.remove(path),
                    };
                }
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
        _renames: renames,
        task,
        guard,
        rescan,
    })
}
