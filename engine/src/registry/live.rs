//! The plugin set of a running engine, kept current as plugin files change.
//!
//! The current [`Registry`] sits behind an [`ArcSwap`]: a run takes the snapshot
//! once and keeps it, so calls already running finish on the version they
//! started with while new calls get the new one; a version that is replaced or
//! removed is dropped once its last call ends. A candidate is read whole,
//! skipped if its hash is unchanged, validated and compiled off the request
//! path, registered, and only then swapped in. Anything that fails leaves the
//! last good version serving and says why (log, status, load history).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use serde::Serialize;

use super::{
    LoadProblem, PluginLoader, PluginSource, RegisterError, RegisteredPlugin, Registry,
    RegistryError, history,
};
use crate::runtime::loader::{sha256_hex, stage_name};

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
    /// When the serving version was loaded.
    pub loaded_at: Option<SystemTime>,
    /// `active`, `refused` (nothing serving from this source), `replaced` (a
    /// bundled plugin overridden by a file) or `unloaded`.
    pub status: &'static str,
    /// Why the last load from this source failed, if it did.
    pub last_error: Option<String>,
    /// When that was.
    pub last_error_at: Option<SystemTime>,
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
    /// One reload at a time: keeps "last write wins" simple and ordered.
    reloading: tokio::sync::Mutex<()>,
}

impl LiveRegistry {
    /// Loads everything, as at any start.
    pub async fn start(loader: PluginLoader) -> Result<Arc<Self>, RegistryError> {
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
            reloading: tokio::sync::Mutex::new(()),
        }))
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
        self.statuses
            .lock()
            .map(|s| s.values().cloned().collect())
            .unwrap_or_default()
    }

    fn set_status(&self, status: PluginStatus) {
        if let Ok(mut statuses) = self.statuses.lock() {
            statuses.insert(status.source.clone(), status);
        }
    }

    /// A file in the plugin directory appeared, changed or disappeared.
    pub async fn file_event(&self, path: &Path) -> ReloadOutcome {
        if path.extension().is_some_and(|e| e == "cwasm") {
            let source = PluginSource::File(path.to_path_buf()).to_string();
            if path.exists() {
                tracing::error!(file = %path.display(), "{}", super::PRECOMPILED_REFUSED);
                self.set_status(refused_status(&source, None, super::PRECOMPILED_REFUSED));
            } else if let Ok(mut statuses) = self.statuses.lock() {
                statuses.remove(&source);
            }
            return ReloadOutcome::Ignored;
        }
        if path.extension().is_none_or(|e| e != "wasm") {
            return ReloadOutcome::Ignored;
        }
        let _one_at_a_time = self.reloading.lock().await;
        match std::fs::read(path) {
            Ok(bytes) => self.reload(path, bytes).await,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => self.unload(path).await,
            Err(e) => {
                self.refuse(path, &[], format!("cannot read the file: {e}"))
                    .await
            }
        }
    }

    async fn reload(&self, path: &Path, bytes: Vec<u8>) -> ReloadOutcome {
        let source = PluginSource::File(path.to_path_buf());
        let sha = sha256_hex(&bytes);
        let current = self.snapshot();
        let serving = current.plugins().iter().find(|p| p.source == source);
        let tried_before = self
            .last_tried
            .lock()
            .ok()
            .and_then(|mut tried| tried.insert(path.to_path_buf(), sha.clone()));
        if let Some(plugin) = serving.filter(|p| p.loaded.identity.sha256 == sha) {
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
            return ReloadOutcome::Unchanged;
        }
        if tried_before.as_deref() == Some(&sha) {
            return ReloadOutcome::Unchanged;
        }
        let plugin = match self.loader.compile(&bytes).await {
            Ok(plugin) => plugin,
            Err(message) => return self.refuse(path, &bytes, message).await,
        };
        let name = plugin.identity.name.clone();
        // Another file already provides this name: refuse rather than guess.
        if let Some(other) = current.plugins().iter().find(|p| {
            p.name() == name && p.source != source && matches!(p.source, PluginSource::File(_))
        }) {
            let message = format!(
                "plugin name `{name}` is already used by {}; give each plugin a unique name",
                other.source
            );
            return self.refuse(path, &bytes, message).await;
        }
        let registered = match self.loader.register(source.clone(), plugin, &bytes).await {
            Ok(registered) => registered,
            Err(RegisterError::Refused(message)) => {
                return self.refuse(path, &bytes, message).await;
            }
            Err(RegisterError::Db(e)) => return self.refuse(path, &bytes, e.to_string()).await,
        };
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
        ReloadOutcome::Loaded { name, sha256: sha }
    }

    async fn refuse(&self, path: &Path, bytes: &[u8], message: String) -> ReloadOutcome {
        let source = PluginSource::File(path.to_path_buf());
        tracing::error!(plugin = %source, "refused, the previous version keeps serving: {message}");
        if !bytes.is_empty() {
            self.loader.record_refusal(&source, bytes, &message).await;
        }
        let current = self.snapshot();
        let serving = current.plugins().iter().find(|p| p.source == source);
        let mut status = match serving {
            Some(plugin) => active_status(plugin),
            None => refused_status(&source.to_string(), None, &message),
        };
        status.last_error = Some(message.clone());
        status.last_error_at = Some(SystemTime::now());
        self.set_status(status);
        let mut next = (*current).clone();
        next.problems.retain(|p| p.source != source.to_string());
        next.problems.push(LoadProblem {
            source: source.to_string(),
            message: message.clone(),
        });
        self.current.store(Arc::new(next));
        ReloadOutcome::Refused(message)
    }

    async fn unload(&self, path: &Path) -> ReloadOutcome {
        let source = PluginSource::File(path.to_path_buf());
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
            if let Ok(mut statuses) = self.statuses.lock() {
                statuses.remove(&source.to_string());
            }
            return ReloadOutcome::Ignored;
        };
        if let Ok(mut tried) = self.last_tried.lock() {
            tried.remove(path);
        }
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
        ReloadOutcome::Unloaded(name)
    }

    /// Every `*.wasm` in the plugin directory, for a full rescan.
    pub fn plugin_dir(&self) -> PathBuf {
        self.loader.config().plugins.dir.clone()
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
