//! The plugin set of a running engine, kept current as plugin files change.
//!
//! The current [`Registry`] sits behind an [`ArcSwap`]: a run takes the snapshot
//! once and keeps it, so calls already running finish on the version they
//! started with while new calls get the new one; a version that is replaced or
//! removed is dropped once its last call ends. A candidate is read whole
//! (bounded, see [`super::files`]), skipped if its hash is unchanged, validated
//! and compiled off the request path, registered, and only then swapped in.
//! Anything that fails leaves the last good version serving and says why (log,
//! status, load history).
//!
//! Changes come in batches (the watcher's debounce, or one rollback). Within a
//! batch, removals go first (so a plugin file renamed to another name is
//! unloaded before it loads again), then every real component is loaded, and
//! only then are refusals settled and recorded, in one write: a valid new
//! version never waits behind a directory full of junk.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use futures::StreamExt as _;
use serde::Serialize;

use super::files::ReadError;
use super::{
    LoadProblem, PluginLoader, PluginSource, RegisterError, RegisteredPlugin, Registry,
    RegistryError, history,
};
use crate::capability::log::printable;
use crate::runtime::loader::{self, sha256_hex, stage_name};

/// Components of one batch compiled at the same time (compiling is CPU-bound;
/// more than the machine's cores gains nothing).
const PARALLEL_COMPILES: usize = 2;

/// What a plugin file (or bundled component) is doing, for `GET /v1/plugins`.
#[derive(Debug, Clone, Serialize)]
pub struct PluginStatus {
    /// The file, or `bundled NAME.wasm`.
    pub source: String,
    /// Plugin name, once known.
    pub name: Option<String>,
    /// `prompt` or `analysis`.
    pub stage: Option<&'static str>,
    /// The plugin's version string.
    pub version: Option<String>,
    /// SHA-256 of the serving version.
    pub sha256: Option<String>,
    /// When the serving version was loaded (RFC 3339, UTC).
    #[serde(serialize_with = "rfc3339")]
    pub loaded_at: Option<SystemTime>,
    /// `active`, `refused` (nothing serving from this source), `replaced` (a
    /// bundled plugin overridden by a file) or `unloaded`.
    pub status: &'static str,
    /// Why the last load from this source failed, if it did.
    pub last_error: Option<String>,
    /// When that was (RFC 3339, UTC).
    #[serde(serialize_with = "rfc3339")]
    pub last_error_at: Option<SystemTime>,
}

/// A time as RFC 3339 (`2026-12-01T21:08:28.123Z`), as every API client expects.
fn rfc3339<S: serde::Serializer>(at: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => s.collect_str(&humantime::format_rfc3339_millis(*at)),
        None => s.serialize_none(),
    }
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The new version now serves.
    Loaded {
        /// Plugin name.
        name: String,
        /// New hash.
        sha256: String,
    },
    /// The content is what already serves.
    Unchanged,
    /// Refused; the previous version (if any) keeps serving.
    Refused(String),
    /// The file was removed and its plugin unloaded.
    Unloaded(String),
    /// Not a plugin file.
    Ignored,
}

/// The live plugin set.
pub struct LiveRegistry {
    loader: PluginLoader,
    current: Arc<ArcSwap<Registry>>,
    /// Bundled plugins, to fall back to when a file overriding one goes away.
    bundled: Vec<Arc<RegisteredPlugin>>,
    statuses: Mutex<BTreeMap<String, PluginStatus>>,
    /// The hash last tried from each file, loaded or refused: the same content
    /// again (a second event for one write) is not loaded twice.
    last_tried: Mutex<BTreeMap<PathBuf, String>>,
    /// Files refused because another file provides the same plugin name, by
    /// that name: tried again when that other file goes away.
    name_conflicts: Mutex<BTreeMap<String, BTreeSet<PathBuf>>>,
    /// One batch at a time: keeps "last write wins" simple and ordered.
    reloading: tokio::sync::Mutex<()>,
    /// See [`Self::fingerprints_at_start`].
    at_start: Mutex<Option<BTreeMap<PathBuf, super::files::Fingerprint>>>,
}

/// A component of a batch, ready to be registered (or not).
enum Prepared {
    /// Its content already serves, or was already tried.
    Unchanged,
    /// It went away meanwhile.
    Gone,
    /// Compiled and validated.
    Compiled(Vec<u8>, Box<crate::capability::Plugin>),
    /// Refused: its bytes and why.
    Refused(Vec<u8>, String),
}

/// A file of a batch, once read.
enum Read {
    /// A component to compile (its header says so).
    Component(Vec<u8>),
    /// Refused before compiling: what it was, and why.
    Refused(Vec<u8>, String),
    /// Gone.
    Missing,
}

impl LiveRegistry {
    /// Loads everything, as at any start.
    pub async fn start(loader: PluginLoader) -> Result<Arc<Self>, RegistryError> {
        // Before anything is read: a file changed while loading differs from
        // this, and the watch's rescan finds it.
        let dir = loader.plugin_dir().to_path_buf();
        let at_start = tokio::task::spawn_blocking(move || super::files::fingerprints(&dir))
            .await
            .ok()
            .and_then(Result::ok);
        let registry = loader.load_all().await?;
        let mut statuses = BTreeMap::new();
        let mut bundled = Vec::new();
        for plugin in registry.plugins() {
            statuses.insert(plugin.source.to_string(), active_status(plugin));
            if matches!(plugin.source, PluginSource::Bundled(_)) {
                bundled.push(Arc::clone(plugin));
            }
        }
        for problem in &registry.problems {
            statuses.insert(
                problem.source.clone(),
                refused_status(&problem.source, None, &problem.message),
            );
        }
        Ok(Arc::new(Self {
            loader,
            current: Arc::new(ArcSwap::from_pointee(registry)),
            bundled,
            statuses: Mutex::new(statuses),
            last_tried: Mutex::new(BTreeMap::new()),
            name_conflicts: Mutex::new(BTreeMap::new()),
            reloading: tokio::sync::Mutex::new(()),
            at_start: Mutex::new(at_start),
        }))
    }

    /// The plugin files' fingerprints just before the start-up load read
    /// them (taken once, by the watch).
    pub fn fingerprints_at_start(&self) -> Option<BTreeMap<PathBuf, super::files::Fingerprint>> {
        crate::sync::lock(&self.at_start).take()
    }

    /// The handle a pipeline reads the current set through.
    pub fn handle(&self) -> Arc<ArcSwap<Registry>> {
        Arc::clone(&self.current)
    }

    /// The current set.
    pub fn snapshot(&self) -> Arc<Registry> {
        self.current.load_full()
    }

    /// The loader (configuration, database).
    pub fn loader(&self) -> &PluginLoader {
        &self.loader
    }

    /// Every source's status, by source.
    pub fn statuses(&self) -> Vec<PluginStatus> {
        crate::sync::lock(&self.statuses)
            .values()
            .cloned()
            .collect()
    }

    fn set_status(&self, status: PluginStatus) {
        crate::sync::lock(&self.statuses).insert(status.source.clone(), status);
    }

    fn forget_status(&self, source: &str) {
        crate::sync::lock(&self.statuses).remove(source);
    }

    /// The plugin directory (absolute, symlinks resolved).
    pub fn plugin_dir(&self) -> PathBuf {
        self.loader.plugin_dir().to_path_buf()
    }

    /// `path` as the registry names files of the plugin directory —
    /// `<resolved dir>/<file name>` — if it names a plugin file there at all.
    /// The watcher reports absolute paths, an operator may give a relative
    /// one, the directory may be a symlink: all are one file here.
    fn in_dir(&self, path: &Path) -> Option<PathBuf> {
        let name = path.file_name()?;
        if !super::files::is_plugin_file_name(name) {
            return None;
        }
        let dir = self.loader.plugin_dir();
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
        let here = match parent {
            None => true,
            Some(parent) if parent == dir => true,
            Some(parent) => std::fs::canonicalize(parent).is_ok_and(|p| p == dir),
        };
        here.then(|| dir.join(name))
    }

    /// A file in the plugin directory appeared, changed or disappeared.
    pub async fn file_event(&self, path: &Path) -> ReloadOutcome {
        self.files_changed([path.to_path_buf()])
            .await
            .into_iter()
            .next()
            .map_or(ReloadOutcome::Ignored, |(_, outcome)| outcome)
    }

    /// Files of the plugin directory appeared, changed or disappeared (one
    /// batch): each is loaded once, from what is on disk now. Returns what
    /// happened to each plugin file among them.
    pub async fn files_changed(
        &self,
        paths: impl IntoIterator<Item = PathBuf>,
    ) -> Vec<(PathBuf, ReloadOutcome)> {
        let _one_at_a_time = self.reloading.lock().await;
        let paths: BTreeSet<PathBuf> = paths.into_iter().filter_map(|p| self.in_dir(&p)).collect();
        let mut outcomes = Vec::new();
        let mut present = Vec::new();
        let mut refused = Vec::new();
        for path in paths {
            match self.read(&path).await {
                Read::Missing => {
                    let (outcome, retry) = self.unload(&path).await;
                    outcomes.push((path, outcome));
                    present.extend(retry);
                }
                // The same junk seen again (a second event for one write):
                // refused once is enough.
                Read::Refused(bytes, _) if self.refused_already(&path, &bytes) => {
                    outcomes.push((path, ReloadOutcome::Unchanged));
                }
                Read::Refused(bytes, message) => refused.push((path, bytes, message)),
                Read::Component(_) => present.push(path),
            }
        }
        present.sort();
        present.dedup();

        // Every real component before any refusal is settled.
        let mut prepared: Vec<(PathBuf, Prepared)> = futures::stream::iter(present)
            .map(|path| async move {
                let prepared = self.prepare(&path).await;
                (path, prepared)
            })
            .buffer_unordered(PARALLEL_COMPILES)
            .collect()
            .await;
        prepared.sort_by(|a, b| a.0.cmp(&b.0));
        for (path, prepared) in prepared {
            match prepared {
                Prepared::Unchanged => outcomes.push((path, ReloadOutcome::Unchanged)),
                // Gone since it was sorted: its removal event unloads it.
                Prepared::Gone => {}
                Prepared::Refused(bytes, message) => refused.push((path, bytes, message)),
                Prepared::Compiled(bytes, plugin) => {
                    match self.load(&path, &bytes, *plugin).await {
                        Ok(outcome) => outcomes.push((path, outcome)),
                        Err(message) => refused.push((path, bytes, message)),
                    }
                }
            }
        }
        outcomes.extend(self.refuse_all(refused).await);
        outcomes
    }

    /// Every file there is or was: what the directory holds now, and every
    /// file the registry knows of (serving or refused), so that gone ones
    /// unload. After the directory itself was replaced.
    pub async fn rescan(&self) -> Vec<(PathBuf, ReloadOutcome)> {
        let mut paths: BTreeSet<PathBuf> = super::files::plugin_files(self.loader.plugin_dir())
            .unwrap_or_default()
            .into_iter()
            .collect();
        let current = self.snapshot();
        for plugin in current.plugins() {
            if let PluginSource::File(path) = &plugin.source {
                paths.insert(path.clone());
            }
        }
        for problem in &current.problems {
            paths.insert(PathBuf::from(&problem.source));
        }
        self.files_changed(paths).await
    }

    /// Reads a file of the batch and sorts it: a component, junk, or gone.
    async fn read(&self, path: &Path) -> Read {
        match self.loader.read(path).await {
            Ok(bytes) => match loader::check_header(&bytes) {
                Ok(()) => Read::Component(bytes),
                Err(e) => Read::Refused(bytes, e.to_string()),
            },
            Err(ReadError::Missing) => Read::Missing,
            Err(e) => Read::Refused(Vec::new(), e.to_string()),
        }
    }

    /// Reads a component again (it may have changed since it was sorted) and
    /// compiles it, unless that content already serves or was already tried.
    async fn prepare(&self, path: &Path) -> Prepared {
        match self.read(path).await {
            Read::Component(bytes) => match self.fresh(path, &bytes) {
                Some(_) => Prepared::Unchanged,
                None => match self.loader.compile(&bytes).await {
                    Ok(plugin) => Prepared::Compiled(bytes, Box::new(plugin)),
                    Err(e) => Prepared::Refused(bytes, e.to_string()),
                },
            },
            Read::Refused(bytes, message) => Prepared::Refused(bytes, message),
            Read::Missing => Prepared::Gone,
        }
    }

    /// Whether `bytes` (read, not a component) are what `path` was last
    /// refused for, and that refusal still stands. Unreadable files (no
    /// bytes) are never taken as seen: there is nothing to compare.
    fn refused_already(&self, path: &Path, bytes: &[u8]) -> bool {
        if bytes.is_empty() {
            return false;
        }
        let source = PluginSource::File(path.to_path_buf()).to_string();
        let tried = crate::sync::lock(&self.last_tried).get(path).cloned();
        tried.is_some_and(|sha| sha == sha256_hex(bytes))
            && self.snapshot().problems.iter().any(|p| p.source == source)
    }

    /// The outcome for content already serving or already tried, if it is;
    /// `None` when it is new and must be loaded.
    fn fresh(&self, path: &Path, bytes: &[u8]) -> Option<ReloadOutcome> {
        let source = PluginSource::File(path.to_path_buf());
        let sha = sha256_hex(bytes);
        let current = self.snapshot();
        let tried_before =
            crate::sync::lock(&self.last_tried).insert(path.to_path_buf(), sha.clone());
        if let Some(plugin) = current
            .plugins()
            .iter()
            .find(|p| p.source == source && p.loaded.identity.sha256 == sha)
        {
            // Back to what serves (say, after a bad save was undone): clear the error.
            if current
                .problems
                .iter()
                .any(|p| p.source == source.to_string())
            {
                let mut next = (*current).clone();
                next.problems.retain(|p| p.source != source.to_string());
                self.current.store(Arc::new(next));
                self.set_status(active_status(plugin));
            }
            return Some(ReloadOutcome::Unchanged);
        }
        (tried_before.as_deref() == Some(&sha)).then_some(ReloadOutcome::Unchanged)
    }

    /// Registers a compiled candidate and swaps it in; or says why not.
    async fn load(
        &self,
        path: &Path,
        bytes: &[u8],
        plugin: crate::capability::Plugin,
    ) -> Result<ReloadOutcome, String> {
        let source = PluginSource::File(path.to_path_buf());
        let sha = plugin.identity.sha256.clone();
        let name = plugin.identity.name.clone();
        let current = self.snapshot();
        // Another file already provides this name: refuse rather than guess,
        // and try again when that file goes away.
        if let Some(other) = current.plugins().iter().find(|p| {
            p.name() == name && p.source != source && matches!(p.source, PluginSource::File(_))
        }) {
            {
                let mut conflicts = crate::sync::lock(&self.name_conflicts);
                conflicts
                    .entry(name.clone())
                    .or_default()
                    .insert(path.to_path_buf());
            }
            return Err(format!(
                "plugin name `{name}` is already used by {}; give each plugin a unique name",
                other.source
            ));
        }
        let registered = match self.loader.register(source.clone(), plugin, bytes).await {
            Ok(registered) => registered,
            Err(RegisterError::Refused(message)) => return Err(message),
            Err(RegisterError::Db(e)) => return Err(e.to_string()),
        };
        // Registration takes a while; take the set as it is now.
        let current = self.snapshot();
        let serving = current.plugins().iter().find(|p| p.source == source);
        // The file used to provide another plugin name: that one goes.
        let mut next = match serving {
            Some(previous) if previous.name() != name => current.without(previous.name()),
            _ => (*current).clone(),
        };
        if let Some(bundled) = current
            .get(&name)
            .filter(|p| matches!(p.source, PluginSource::Bundled(_)))
        {
            let mut status = active_status(bundled);
            status.status = "replaced";
            self.set_status(status);
        }
        next = next.with_plugin(Arc::clone(&registered));
        next.problems.retain(|p| p.source != source.to_string());
        self.current.store(Arc::new(next));
        self.set_status(active_status(&registered));
        tracing::info!(
            plugin = %name,
            version = %registered.loaded.identity.version,
            sha256 = %sha,
            compiled = ?registered.loaded.compiled,
            "plugin loaded"
        );
        Ok(ReloadOutcome::Loaded { name, sha256: sha })
    }

    /// Settles a batch's refusals: one update of the set and the statuses, and
    /// one write to the history, however many files were refused.
    async fn refuse_all(
        &self,
        refused: Vec<(PathBuf, Vec<u8>, String)>,
    ) -> Vec<(PathBuf, ReloadOutcome)> {
        if refused.is_empty() {
            return Vec::new();
        }
        let current = self.snapshot();
        let mut next = (*current).clone();
        let sources: BTreeSet<String> = refused
            .iter()
            .map(|(path, _, _)| PluginSource::File(path.clone()).to_string())
            .collect();
        next.problems.retain(|p| !sources.contains(&p.source));
        let mut records = Vec::with_capacity(refused.len());
        let mut outcomes = Vec::with_capacity(refused.len());
        for (path, bytes, message) in refused {
            let source = PluginSource::File(path.clone());
            tracing::error!(
                plugin = %printable(&source.to_string()),
                "refused, the previous version keeps serving: {}",
                printable(&message)
            );
            if !bytes.is_empty() {
                crate::sync::lock(&self.last_tried).insert(path.clone(), sha256_hex(&bytes));
            }
            let mut status = match current.plugins().iter().find(|p| p.source == source) {
                Some(plugin) => active_status(plugin),
                None => refused_status(&source.to_string(), None, &message),
            };
            status.last_error = Some(message.clone());
            status.last_error_at = Some(SystemTime::now());
            self.set_status(status);
            next.problems.push(LoadProblem {
                source: source.to_string(),
                message: message.clone(),
            });
            records.push(history::Refusal::new(&source, &bytes, &message));
            outcomes.push((path, ReloadOutcome::Refused(message)));
        }
        self.current.store(Arc::new(next));
        self.loader.record_refusals(&records).await;
        outcomes
    }

    /// The file went away: its plugin is unloaded. Returns the outcome, and
    /// the files refused earlier because this one had their plugin's name
    /// (to be tried again).
    async fn unload(&self, path: &Path) -> (ReloadOutcome, Vec<PathBuf>) {
        let source = PluginSource::File(path.to_path_buf());
        {
            let mut tried = crate::sync::lock(&self.last_tried);
            tried.remove(path);
        }
        let current = self.snapshot();
        let Some(serving) = current
            .plugins()
            .iter()
            .find(|p| p.source == source)
            .cloned()
        else {
            // A refused file went away: forget its problem.
            let mut next = (*current).clone();
            next.problems.retain(|p| p.source != source.to_string());
            self.current.store(Arc::new(next));
            self.forget_status(&source.to_string());
            {
                let mut conflicts = crate::sync::lock(&self.name_conflicts);
                for waiting in conflicts.values_mut() {
                    waiting.remove(path);
                }
            }
            return (ReloadOutcome::Ignored, Vec::new());
        };
        let name = serving.name().to_string();
        let mut next = current.without(&name);
        // A bundled plugin it had replaced serves again.
        if let Some(bundled) = self.bundled.iter().find(|p| p.name() == name) {
            next = next.with_plugin(Arc::clone(bundled));
            self.set_status(active_status(bundled));
        }
        self.current.store(Arc::new(next));
        let id = &serving.loaded.identity;
        if let Err(e) =
            history::record_unloaded(self.loader.db(), &name, &id.version, &id.sha256, &source)
                .await
        {
            tracing::warn!(plugin = %name, "cannot record the unload: {e}");
        }
        let mut status = active_status(&serving);
        status.status = "unloaded";
        self.set_status(status);
        tracing::info!(plugin = %name, "plugin unloaded (its file was removed)");
        let retry: Vec<PathBuf> = crate::sync::lock(&self.name_conflicts)
            .remove(&name)
            .unwrap_or_default()
            .into_iter()
            .collect();
        {
            let mut tried = crate::sync::lock(&self.last_tried);
            for path in &retry {
                tried.remove(path);
            }
        }
        (ReloadOutcome::Unloaded(name), retry)
    }
}

fn active_status(plugin: &RegisteredPlugin) -> PluginStatus {
    let id = &plugin.loaded.identity;
    PluginStatus {
        source: plugin.source.to_string(),
        name: Some(id.name.clone()),
        stage: Some(stage_name(plugin.loaded.manifest.stage)),
        version: Some(id.version.clone()),
        sha256: Some(id.sha256.clone()),
        loaded_at: Some(plugin.loaded_at),
        status: "active",
        last_error: None,
        last_error_at: None,
    }
}

fn refused_status(source: &str, name: Option<String>, message: &str) -> PluginStatus {
    PluginStatus {
        source: source.to_string(),
        name,
        stage: None,
        version: None,
        sha256: None,
        loaded_at: None,
        status: "refused",
        last_error: Some(message.to_string()),
        last_error_at: Some(SystemTime::now()),
    }
}
