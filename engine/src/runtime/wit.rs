//! The contract versions this host links, one module each
//! (`since_v0_1` for `wit/v0.1`, …), and the dispatch between them.
//!
//! A version's module holds its `bindgen!` output, its `MIN_VERSION`, and the
//! conversions between its generated types and the host's own
//! ([`super::plugin`]). Capabilities implement each version's host traits
//! in their own folders. Adding a version is: its `wit/` folder; one module
//! here; its entry in [`SUPPORTED`], a variant of [`PluginCode`] and of
//! [`PluginInstance`] with an arm in each of their matches, and a call in
//! [`add_type_interfaces`]; and the capability code for its interfaces.

pub mod since_v0_1;

use wasmtime::Store;
use wasmtime::component::{Component, InstancePre, Linker};

use super::plugin::{CallOutput, Document, Manifest, PluginError, Stage};

/// The WIT package every version belongs to.
pub const WIT_PACKAGE: &str = "assay:plugin";

/// A contract version, `major.minor.patch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct WitVersion(pub u32, pub u32, pub u32);

impl WitVersion {
    /// Parses `0.1.0`.
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.split('.').map(|p| p.parse::<u32>().ok());
        let version = WitVersion(parts.next()??, parts.next()??, parts.next()??);
        parts.next().is_none().then_some(version)
    }

    /// The version's folder under `wit/`, e.g. `wit/v0.1`.
    pub fn folder(self) -> String {
        format!("wit/v{}.{}", self.0, self.1)
    }
}

impl std::fmt::Display for WitVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// Every version this host links, oldest first: each module's `MIN_VERSION`.
pub const SUPPORTED: &[WitVersion] = &[since_v0_1::MIN_VERSION];

/// The newest version this host links: what new plugins should build against.
pub fn latest() -> WitVersion {
    SUPPORTED[SUPPORTED.len() - 1]
}

/// The supported versions as a sentence: `assay:plugin@0.1.0` or
/// `assay:plugin@0.1.0 and @0.2.0`.
pub fn supported_list() -> String {
    let mut out = String::new();
    for (i, version) in SUPPORTED.iter().enumerate() {
        match i {
            0 => out.push_str(&format!("{WIT_PACKAGE}@{version}")),
            i if i + 1 == SUPPORTED.len() => out.push_str(&format!(" and @{version}")),
            _ => out.push_str(&format!(", @{version}")),
        }
    }
    out
}

/// Whether a host module serves `found`. Exactly: a version's folder is
/// frozen once it ships, so no other version is the same contract.
pub fn is_supported(found: WitVersion) -> bool {
    SUPPORTED.contains(&found)
}

/// A plugin's compiled, pre-linked entry points: by contract version and world.
pub enum PluginCode<T: 'static> {
    /// `wit/v0.1`.
    V0_1(since_v0_1::Code<T>),
}

impl<T: 'static> Clone for PluginCode<T> {
    fn clone(&self) -> Self {
        match self {
            PluginCode::V0_1(code) => PluginCode::V0_1(code.clone()),
        }
    }
}

/// The worlds of `version` that `pre` does not implement: what it exports
/// instead, for the refusal.
pub struct WrongWorld;

impl<T: Send + 'static> PluginCode<T> {
    /// The entry points of a component that imports `version`, or
    /// [`WrongWorld`] if it exports none of that version's worlds.
    pub fn new(version: WitVersion, pre: InstancePre<T>) -> Result<Self, WrongWorld> {
        match version {
            v if v == since_v0_1::MIN_VERSION => since_v0_1::Code::new(pre).map(PluginCode::V0_1),
            _ => Err(WrongWorld),
        }
    }

    /// The contract version the plugin was built against.
    pub fn version(&self) -> WitVersion {
        match self {
            PluginCode::V0_1(_) => since_v0_1::MIN_VERSION,
        }
    }

    /// The stage its world implements.
    pub fn stage(&self) -> Stage {
        match self {
            PluginCode::V0_1(code) => code.stage(),
        }
    }

    /// Instantiates it in `store` and asks for its manifest.
    pub async fn describe(&self, store: &mut Store<T>) -> wasmtime::Result<Manifest> {
        match self {
            PluginCode::V0_1(code) => code.describe(store).await,
        }
    }

    /// Instantiates it in `store`, for one call or several.
    pub async fn instantiate(&self, store: &mut Store<T>) -> wasmtime::Result<PluginInstance> {
        match self {
            PluginCode::V0_1(code) => code.instantiate(store).await.map(PluginInstance::V0_1),
        }
    }
}

/// A plugin instantiated in a store: its entry points, by contract version.
pub enum PluginInstance {
    /// `wit/v0.1`.
    V0_1(since_v0_1::Instance),
}

impl PluginInstance {
    /// Calls it on `doc` in the store it was instantiated in.
    pub async fn call<T: Send + 'static>(
        &self,
        store: &mut Store<T>,
        doc: Document,
    ) -> wasmtime::Result<Result<CallOutput, PluginError>> {
        match self {
            PluginInstance::V0_1(instance) => instance.call(store, doc).await,
        }
    }
}

/// Links the interfaces every version defines only types in (nothing to
/// implement, but a component importing them needs them defined).
pub fn add_type_interfaces<T: Send + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    since_v0_1::add_type_interfaces(linker)
}

/// The names of what `component` exports, for a refusal message.
pub fn export_names(engine: &wasmtime::Engine, component: &Component) -> String {
    let exports: Vec<String> = component
        .component_type()
        .exports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    if exports.is_empty() {
        "nothing".into()
    } else {
        exports.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_and_are_served() {
        assert_eq!(WitVersion::parse("0.1.0"), Some(WitVersion(0, 1, 0)));
        assert_eq!(WitVersion::parse("0.1"), None);
        assert_eq!(WitVersion::parse("0.1.0.1"), None);
        assert_eq!(WitVersion::parse("x.1.0"), None);
        assert!(is_supported(WitVersion(0, 1, 0)));
        assert!(!is_supported(WitVersion(0, 1, 1)));
        assert!(!is_supported(WitVersion(0, 9, 0)));
        assert_eq!(supported_list(), "assay:plugin@0.1.0");
        assert!(SUPPORTED.windows(2).all(|w| w[0] < w[1]), "oldest first");
    }
}
