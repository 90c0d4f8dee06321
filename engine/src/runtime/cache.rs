//! The compile cache: compiled plugins kept on disk, so a restart or a rollback
//! does not compile again.
//!
//! Entries are keyed by the SHA-256 of the component's bytes and live in a
//! folder named after the engine's compatibility hash (wasmtime version and
//! compilation settings), so an upgrade never loads a stale artifact. Loading a
//! compiled artifact runs native code, so only the engine itself ever writes an
//! entry, into a directory it owns and nobody else may write to; if the
//! directory's ownership or mode says otherwise the cache is not used. Bytes a
//! user hands over (a `.cwasm` in the plugin directory) are never deserialized.

use std::fs;
use std::hash::{Hash as _, Hasher as _};
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

/// Where a component came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compiled {
    /// Compiled just now.
    Fresh,
    /// Loaded from the cache.
    Cached,
}

/// An engine-owned directory of compiled components.
#[derive(Debug, Clone)]
pub struct CompileCache {
    dir: PathBuf,
}

impl CompileCache {
    /// The cache under `root` for this engine's configuration.
    pub fn new(root: &Path, engine: &Engine) -> Self {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Self {
            dir: root.join(format!("{:016x}", hasher.finish())),
        }
    }

    /// The folder holding this engine's entries.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn entry(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}.cwasm"))
    }

    /// Whether the directory is ours alone: owned by this user, and writable by
    /// no one else. Anything else and the cache is bypassed.
    fn trusted(&self) -> bool {
        let uid = nix::unistd::geteuid().as_raw();
        self.dir
            .ancestors()
            .take(2)
            .all(|dir| fs::metadata(dir).is_ok_and(|m| m.uid() == uid && m.mode() & 0o022 == 0))
    }

    /// Compiles `bytes` (whose SHA-256 is `sha256`), or loads the cached result.
    /// Blocking: call it from `spawn_blocking`.
    pub fn compile(
        &self,
        engine: &Engine,
        bytes: &[u8],
        sha256: &str,
    ) -> wasmtime::Result<(Component, Compiled)> {
        let entry = self.entry(sha256);
        if entry.is_file() && self.trusted() {
            // SAFETY: the entry was written by `store` below, by this engine, into a
            // directory only this user can write (checked by `trusted`), under the
            // hash of the bytes it was compiled from; wasmtime checks it was made
            // by a compatible engine before using it.
            match unsafe { Component::deserialize_file(engine, &entry) } {
                Ok(component) => return Ok((component, Compiled::Cached)),
                Err(e) => {
                    tracing::warn!(entry = %entry.display(), "ignoring unusable compile cache entry: {e:#}")
                }
            }
        }
        let component = Component::new(engine, bytes)?;
        if let Err(e) = self.store(&component, &entry) {
            tracing::warn!(dir = %self.dir.display(), "cannot write the compile cache: {e}");
        }
        Ok((component, Compiled::Fresh))
    }

    fn store(&self, component: &Component, entry: &Path) -> std::io::Result<()> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)?;
        if !self.trusted() {
            return Err(std::io::Error::other(
                "the cache directory is not owned by this user alone; not caching",
            ));
        }
        let serialized = component.serialize().map_err(std::io::Error::other)?;
        let scratch = entry.with_extension(format!("tmp-{}", std::process::id()));
        fs::write(&scratch, serialized)?;
        fs::rename(&scratch, entry)
    }
}
