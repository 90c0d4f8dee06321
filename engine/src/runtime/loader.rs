//! Turning bytes into a loaded plugin: check they are a component of a supported
//! world and WIT version, compile them off the async runtime, ask the plugin to
//! `describe` itself and check what it says.

use std::sync::Arc;

use regex::{RegexSet, RegexSetBuilder};
use sha2::{Digest as _, Sha256};
use wasmtime::component::{Component, InstancePre, Linker};

use super::Runtime;
use super::cache::Compiled;
use super::call::{CallCore, CallData, CallFailure, CallLimits};
use super::plugin::{Manifest, PluginIdentity, Stage};
use super::warm::WarmInstances;
use super::wit::{self, PluginCode, WIT_PACKAGE, WitVersion};

/// Largest compiled size of the trigger patterns of one plugin; a pathological
/// pattern is refused at load instead of costing memory on every document.
const MAX_TRIGGER_REGEX_BYTES: usize = 1 << 20;

/// Longest plugin name: its database role `assay_xxxxxx_<name>` must fit
/// PostgreSQL's 63-byte identifiers.
pub const MAX_NAME_LEN: usize = 50;

/// Why bytes could not be loaded as a plugin. Each message names what is wrong and what to do.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Not WebAssembly at all.
    #[error(
        "not a WebAssembly file (it does not start with the `\\0asm` magic bytes); build the plugin with `cargo build --target wasm32-wasip2`"
    )]
    NotWasm,
    /// Nothing at all: a file created and not yet written, or emptied.
    #[error(
        "an empty file (0 bytes): nothing to load; copy the built component (a `.wasm` from `cargo build --target wasm32-wasip2`) over it"
    )]
    Empty,
    /// A core module instead of a component.
    #[error(
        "a core WebAssembly module, not a component; build for the `wasm32-wasip2` target (which emits components) or wrap it with `wasm-tools component new`"
    )]
    CoreModule,
    /// Wasmtime could not compile it (truncated, corrupt, or uses unsupported features).
    #[error("cannot compile the component: {0}")]
    Compile(String),
    /// Built against a WIT package version this host does not link.
    #[error(
        "built against {package}@{found}, but this assay supports {supported}; rebuild the plugin against {latest}"
    )]
    UnsupportedVersion {
        /// `assay:plugin`.
        package: &'static str,
        /// What the plugin imports.
        found: String,
        /// What this host supports, e.g. `assay:plugin@0.1.0`.
        supported: String,
        /// The folder of the newest supported version, e.g. `wit/v0.1`.
        latest: String,
    },
    /// It needs imports the host does not provide (e.g. HTTP).
    #[error("imports something assay does not provide: {0}")]
    Imports(String),
    /// Exports neither plugin world.
    #[error(
        "exports neither the `analyzer` nor the `prompt-processor` world of {package}@{version} (it exports: {exports}); implement one of them (see {folder}/plugin.wit)"
    )]
    WrongWorld {
        /// `assay:plugin`.
        package: &'static str,
        /// The version it was checked against.
        version: String,
        /// That version's folder.
        folder: String,
        /// What it does export.
        exports: String,
    },
    /// `describe` trapped or timed out.
    #[error("its `describe` function failed: {0}")]
    Describe(CallFailure),
    /// The manifest it returned is unusable.
    #[error("invalid manifest: {0}")]
    Manifest(String),
}

/// A plugin ready to be called, whose calls' stores hold a `T`.
pub struct LoadedPlugin<T: 'static> {
    /// Name, version and content hash.
    pub identity: Arc<PluginIdentity>,
    /// What the plugin said about itself.
    pub manifest: Manifest,
    /// Compiled code, by contract version and world.
    pub code: PluginCode<T>,
    /// Compiled `manifest.triggers`; `None` when the plugin always runs.
    pub triggers: Option<RegexSet>,
    /// Size of the component in bytes.
    pub size: usize,
    /// Whether it was compiled now or taken from the compile cache.
    pub compiled: Compiled,
    /// Its instances kept between calls, when its calls reuse them.
    pub warm: WarmInstances<T>,
}

impl<T: 'static> std::fmt::Debug for LoadedPlugin<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("identity", &self.identity)
            .field("stage", &self.manifest.stage.as_str())
            .finish_non_exhaustive()
    }
}

/// `prompt` or `analysis`.
pub fn stage_name(stage: Stage) -> &'static str {
    stage.as_str()
}

impl<T: 'static> LoadedPlugin<T> {
    /// Whether this plugin runs on a document of `kind` with `text`.
    pub fn applies_to(&self, kind: &str, text: &str) -> bool {
        let kind_ok =
            self.manifest.kinds.is_empty() || self.manifest.kinds.iter().any(|k| k == kind);
        kind_ok && self.triggers.as_ref().is_none_or(|set| set.is_match(text))
    }
}

/// SHA-256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Loads a plugin from component bytes, linking it with `linker`.
/// Compilation runs on a blocking thread. `describe` runs like any call,
/// in a store holding what `detached` makes of a fresh [`CallCore`]: the
/// host's capabilities as they are before a plugin is registered.
pub async fn load<T: CallData>(
    runtime: &Arc<Runtime>,
    linker: &Linker<T>,
    bytes: Vec<u8>,
    limits: &CallLimits,
    detached: impl FnOnce(CallCore) -> T,
) -> Result<LoadedPlugin<T>, LoadError> {
    check_header(&bytes)?;
    let sha256 = sha256_hex(&bytes);
    let size = bytes.len();
    let engine = runtime.engine().clone();
    let cache = runtime.compile_cache().cloned();
    let key = sha256.clone();
    let (component, compiled) = tokio::task::spawn_blocking(move || match cache {
        Some(cache) => cache.compile(&engine, &bytes, &key),
        None => Component::new(&engine, &bytes).map(|c| (c, Compiled::Fresh)),
    })
    .await
    .map_err(|e| LoadError::Compile(e.to_string()))?
    .map_err(|e| LoadError::Compile(format!("{e:#}")))?;

    let version = contract_version(runtime, &component)?;
    let pre: InstancePre<T> = linker
        .instantiate_pre(&component)
        .map_err(|e| LoadError::Imports(format!("{e:#}")))?;
    let code = PluginCode::new(version, pre).map_err(|wit::WrongWorld| LoadError::WrongWorld {
        package: WIT_PACKAGE,
        version: version.to_string(),
        folder: version.folder(),
        exports: wit::export_names(runtime.engine(), &component),
    })?;

    // `describe` has no business with the database or anything else a
    // registered plugin is given.
    let provisional = Arc::new(PluginIdentity {
        name: "(loading)".into(),
        version: String::new(),
        sha256: sha256.clone(),
    });
    let mut store = runtime.new_store(detached(CallCore::new(runtime, provisional, limits)));
    let described = code.describe(&mut store).await;
    let manifest = described
        .map_err(|e| LoadError::Describe(CallFailure::from_wasmtime(&e, store.data().core())))?;
    drop(store);

    let triggers = validate_manifest(&manifest, code.stage())?;
    Ok(LoadedPlugin {
        identity: Arc::new(PluginIdentity {
            name: manifest.name.clone(),
            version: manifest.version.clone(),
            sha256,
        }),
        manifest,
        code,
        triggers,
        size,
        compiled,
        warm: WarmInstances::new(runtime),
    })
}

/// The cheap first check of any candidate: its header says it is a component
/// (not garbage, not a core module). Nothing is compiled.
pub fn check_header(bytes: &[u8]) -> Result<(), LoadError> {
    if bytes.is_empty() {
        return Err(LoadError::Empty);
    }
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(LoadError::NotWasm);
    }
    // Bytes 4..8: version and layer. Core modules are version 1, layer 0;
    // components carry layer 1.
    match bytes[4..8] {
        [0x01, 0x00, 0x00, 0x00] => Err(LoadError::CoreModule),
        [_, _, 0x01, 0x00] => Ok(()),
        _ => Err(LoadError::Compile(
            "unknown WebAssembly binary version".into(),
        )),
    }
}

/// The contract version a component was built against, from the versions in
/// its imports (`assay:plugin/types@0.1.0`); one this host does not link is
/// refused with a message naming both. A component importing none of the
/// contract's interfaces is checked against the newest version.
fn contract_version(runtime: &Runtime, component: &Component) -> Result<WitVersion, LoadError> {
    let prefix = format!("{WIT_PACKAGE}/");
    let mut found: Option<String> = None;
    for (name, _) in component.component_type().imports(runtime.engine()) {
        if let Some(rest) = name.strip_prefix(&prefix)
            && let Some((_, version)) = rest.split_once('@')
        {
            match &found {
                Some(seen) if seen != version => {
                    return Err(LoadError::Imports(format!(
                        "interfaces of two versions of {WIT_PACKAGE} ({seen} and {version}); build against one"
                    )));
                }
                _ => found = Some(version.to_string()),
            }
        }
    }
    let Some(found) = found else {
        return Ok(wit::latest());
    };
    match WitVersion::parse(&found) {
        Some(version) if wit::is_supported(version) => Ok(version),
        _ => Err(LoadError::UnsupportedVersion {
            package: WIT_PACKAGE,
            found,
            supported: wit::supported_list(),
            latest: wit::latest().folder(),
        }),
    }
}

/// Whether `name` can be a plugin's name: 1–50 lowercase letters, digits, `-`
/// and `_`, starting with a letter (it becomes part of database names).
pub fn valid_name(name: &str) -> bool {
    name.len() <= MAX_NAME_LEN
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// Checks a manifest and compiles its triggers.
pub fn validate_manifest(
    manifest: &Manifest,
    expected_stage: Stage,
) -> Result<Option<RegexSet>, LoadError> {
    let bad = |m: String| Err(LoadError::Manifest(m));
    let name = &manifest.name;
    if !valid_name(name) {
        return bad(format!(
            "name {name:?} must be 1–50 characters of lowercase letters, digits, `-` and `_`, starting with a letter"
        ));
    }
    if manifest.version.trim().is_empty() {
        return bad(format!("plugin {name}: version is empty"));
    }
    // These reach logs, tables and the API as they are: one line each.
    for (field, value) in [
        ("version", &manifest.version),
        ("description", &manifest.description),
    ] {
        if value.chars().any(char::is_control) {
            return bad(format!(
                "plugin {name}: {field} contains control characters (newlines, escapes); keep it to one line of text"
            ));
        }
    }
    if manifest.version.len() > 64 {
        return bad(format!(
            "plugin {name}: version is {} bytes; keep it to 64 (e.g. 1.4.2)",
            manifest.version.len()
        ));
    }
    if manifest.stage != expected_stage {
        return bad(format!(
            "plugin {name} declares stage `{}` but implements the world of stage `{}`",
            stage_name(manifest.stage),
            stage_name(expected_stage)
        ));
    }
    if manifest.kinds.iter().any(|k| k.trim().is_empty()) {
        return bad(format!("plugin {name}: a kind is empty"));
    }
    if let Some(kind) = manifest
        .kinds
        .iter()
        .find(|k| !super::plugin::valid_kind(k))
    {
        return bad(format!(
            "plugin {name}: kind {kind:?} can never match a document: kinds are up to 64 letters, digits, `_`, `.`, `:` or `-`"
        ));
    }
    if manifest
        .migrations
        .iter()
        .any(|m| m.description.chars().any(char::is_control))
    {
        return bad(format!(
            "plugin {name}: a migration's description contains control characters (newlines, escapes); keep it to one line of text"
        ));
    }
    let mut versions: Vec<u32> = manifest.migrations.iter().map(|m| m.version).collect();
    versions.sort_unstable();
    if versions.first() == Some(&0) || versions.windows(2).any(|w| w[0] == w[1]) {
        return bad(format!(
            "plugin {name}: migration versions must be unique and start at 1"
        ));
    }
    if manifest.triggers.is_empty() {
        return Ok(None);
    }
    RegexSetBuilder::new(&manifest.triggers)
        .size_limit(MAX_TRIGGER_REGEX_BYTES)
        .build()
        .map(Some)
        .map_err(|e| LoadError::Manifest(format!("plugin {name}: invalid trigger pattern: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::plugin::Migration;

    fn manifest(name: &str) -> Manifest {
        Manifest {
            name: name.into(),
            version: "1".into(),
            description: String::new(),
            stage: Stage::Analysis,
            priority: 0,
            kinds: vec![],
            triggers: vec![],
            migrations: vec![],
        }
    }

    #[test]
    fn headers_are_told_apart() {
        assert!(matches!(
            check_header(b"hello world"),
            Err(LoadError::NotWasm)
        ));
        assert!(matches!(
            check_header(b"\0asm\x01\0\0\0"),
            Err(LoadError::CoreModule)
        ));
        assert!(check_header(b"\0asm\x0d\0\x01\0").is_ok());
        assert!(matches!(check_header(b"\0asm"), Err(LoadError::NotWasm)));
        assert!(matches!(check_header(b""), Err(LoadError::Empty)));
    }

    #[test]
    fn manifests_are_checked() {
        assert!(validate_manifest(&manifest("keywords"), Stage::Analysis).is_ok());
        for bad in ["", "Keywords", "1st", "a b", "x'; DROP TABLE y; --"] {
            assert!(
                validate_manifest(&manifest(bad), Stage::Analysis).is_err(),
                "{bad:?}"
            );
        }
        assert!(
            validate_manifest(&manifest("k"), Stage::Prompt).is_err(),
            "stage must match the world"
        );
        let mut m = manifest("k");
        m.version = "1\n2026-12-01T00:00:00Z ERROR forged".into();
        assert!(validate_manifest(&m, Stage::Analysis).is_err(), "one line");
        let mut m = manifest("k");
        m.migrations = vec![Migration {
            version: 1,
            description: "m\nFORGED".into(),
            statement: "CREATE TABLE t (a int)".into(),
        }];
        assert!(validate_manifest(&m, Stage::Analysis).is_err(), "one line");
        let mut m = manifest("k");
        m.triggers = vec!["(unclosed".into()];
        let err = validate_manifest(&m, Stage::Analysis).expect_err("bad regex");
        assert!(err.to_string().contains("trigger"), "{err}");
    }
}
