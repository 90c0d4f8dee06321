//! The contract versions this host links, one module each
//! (`since_v0_1` for `wit/v0.1`, `since_v0_2` for `wit/v0.2`), and the dispatch between them.
//!
//! A version's module holds its `bindgen!` output, its `MIN_VERSION`, and the
//! conversions between its generated types and the host's own
//! ([`super::plugin`]). Capabilities implement each version's host traits
//! in their own folders. Adding a version is: its `wit/` folder; one module
//! here; its entry in [`SUPPORTED`], a variant of [`PluginCode`] and of
//! [`PluginInstance`] with an arm in each of their matches, and a call in
//! [`add_type_interfaces`]; and the capability code for its interfaces.

/// What every version's module holds besides its bindings, for versions
/// whose worlds and shared types have the shapes of 0.1 (the entry points by
/// world, the instance, the `types` linking and the conversions to the host's
/// own types). A version's module invokes it after its `analyzer` and
/// `prompt_processor` bindings and `pub use` of their interfaces; a version
/// that changes those shapes writes its own instead (and converts from the
/// older types, the way Zed's extension host does).
macro_rules! version_glue {
    () => {
        use $crate::runtime::plugin;

        /// A plugin of this version's entry points, by world.
        pub enum Code<T: 'static> {
            /// Implements the `analyzer` world.
            Analyzer(analyzer::AnalyzerPre<T>),
            /// Implements the `prompt-processor` world.
            Prompt(prompt_processor::PromptProcessorPre<T>),
        }

        impl<T: 'static> Clone for Code<T> {
            fn clone(&self) -> Self {
                match self {
                    Code::Analyzer(pre) => Code::Analyzer(pre.clone()),
                    Code::Prompt(pre) => Code::Prompt(pre.clone()),
                }
            }
        }

        impl<T: Send + 'static> Code<T> {
            /// The world `pre` implements, if it implements one.
            pub fn new(
                pre: wasmtime::component::InstancePre<T>,
            ) -> Result<Self, $crate::runtime::wit::WrongWorld> {
                match analyzer::AnalyzerPre::new(pre.clone()) {
                    Ok(analyzer) => Ok(Code::Analyzer(analyzer)),
                    Err(_) => prompt_processor::PromptProcessorPre::new(pre)
                        .map(Code::Prompt)
                        .map_err(|_| $crate::runtime::wit::WrongWorld),
                }
            }

            /// The stage of its world.
            pub fn stage(&self) -> plugin::Stage {
                match self {
                    Code::Analyzer(_) => plugin::Stage::Analysis,
                    Code::Prompt(_) => plugin::Stage::Prompt,
                }
            }

            /// A fresh instance's `describe`.
            pub async fn describe(
                &self,
                store: &mut wasmtime::Store<T>,
            ) -> wasmtime::Result<plugin::Manifest> {
                let manifest = match self {
                    Code::Analyzer(pre) => {
                        let instance = pre.instantiate_async(&mut *store).await?;
                        instance.call_describe(&mut *store).await?
                    }
                    Code::Prompt(pre) => {
                        let instance = pre.instantiate_async(&mut *store).await?;
                        instance.call_describe(&mut *store).await?
                    }
                };
                Ok(manifest.into())
            }

            /// A new instance in `store`, to be called once or (with instance reuse)
            /// several times.
            pub async fn instantiate(
                &self,
                store: &mut wasmtime::Store<T>,
            ) -> wasmtime::Result<Instance> {
                Ok(match self {
                    Code::Analyzer(pre) => {
                        Instance::Analyzer(pre.instantiate_async(&mut *store).await?)
                    }
                    Code::Prompt(pre) => {
                        Instance::Prompt(pre.instantiate_async(&mut *store).await?)
                    }
                })
            }
        }

        /// A plugin of this version instantiated in a store, by world.
        pub enum Instance {
            /// Of the `analyzer` world.
            Analyzer(analyzer::Analyzer),
            /// Of the `prompt-processor` world.
            Prompt(prompt_processor::PromptProcessor),
        }

        impl Instance {
            /// Its `analyze` or `process`, on `doc`.
            pub async fn call<T: Send + 'static>(
                &self,
                store: &mut wasmtime::Store<T>,
                doc: plugin::Document,
            ) -> wasmtime::Result<Result<plugin::CallOutput, plugin::PluginError>> {
                let doc = types::Document::from(doc);
                Ok(match self {
                    Instance::Analyzer(instance) => instance
                        .call_analyze(&mut *store, &doc)
                        .await?
                        .map(|found| plugin::CallOutput::Findings(findings(found)))
                        .map_err(Into::into),
                    Instance::Prompt(instance) => instance
                        .call_process(&mut *store, &doc)
                        .await?
                        .map(|p| {
                            plugin::CallOutput::Processed(p.document.into(), findings(p.findings))
                        })
                        .map_err(Into::into),
                })
            }
        }

        /// `types` defines only shapes; there is nothing to implement, but a
        /// component importing it needs the instance defined.
        pub struct NoFunctions;

        impl types::Host for NoFunctions {}

        struct TypesOnly;

        impl wasmtime::component::HasData for TypesOnly {
            type Data<'a> = NoFunctions;
        }

        /// Links the `types` interface.
        pub fn add_type_interfaces<T: Send + 'static>(
            linker: &mut wasmtime::component::Linker<T>,
        ) -> wasmtime::Result<()> {
            types::add_to_linker::<T, TypesOnly>(linker, |_| NoFunctions)
        }

        fn findings(found: Vec<types::Finding>) -> Vec<plugin::Finding> {
            found.into_iter().map(Into::into).collect()
        }

        impl From<plugin::Document> for types::Document {
            fn from(d: plugin::Document) -> Self {
                types::Document {
                    id: d.id,
                    kind: d.kind,
                    text: d.text,
                    metadata: d.metadata,
                }
            }
        }

        impl From<types::Document> for plugin::Document {
            fn from(d: types::Document) -> Self {
                plugin::Document {
                    id: d.id,
                    kind: d.kind,
                    text: d.text,
                    metadata: d.metadata,
                }
            }
        }

        impl From<types::Finding> for plugin::Finding {
            fn from(f: types::Finding) -> Self {
                plugin::Finding {
                    label: f.label,
                    score: f.score,
                    span: f.span.map(|s| plugin::Span {
                        start: s.start,
                        end: s.end,
                    }),
                    data: f.data,
                }
            }
        }

        impl From<types::PluginError> for plugin::PluginError {
            fn from(e: types::PluginError) -> Self {
                match e {
                    types::PluginError::InvalidInput(m) => plugin::PluginError::InvalidInput(m),
                    types::PluginError::Failed(m) => plugin::PluginError::Failed(m),
                }
            }
        }

        impl From<types::Stage> for plugin::Stage {
            fn from(s: types::Stage) -> Self {
                match s {
                    types::Stage::Prompt => plugin::Stage::Prompt,
                    types::Stage::Analysis => plugin::Stage::Analysis,
                }
            }
        }

        impl From<types::Manifest> for plugin::Manifest {
            fn from(m: types::Manifest) -> Self {
                plugin::Manifest {
                    name: m.name,
                    version: m.version,
                    description: m.description,
                    stage: m.stage.into(),
                    priority: m.priority,
                    kinds: m.kinds,
                    triggers: m.triggers,
                    migrations: m
                        .migrations
                        .into_iter()
                        .map(|m| plugin::Migration {
                            version: m.version,
                            description: m.description,
                            statement: m.statement,
                        })
                        .collect(),
                }
            }
        }
    };
}
pub(crate) use version_glue;

pub mod since_v0_1;
pub mod since_v0_2;

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
pub const SUPPORTED: &[WitVersion] = &[since_v0_1::MIN_VERSION, since_v0_2::MIN_VERSION];

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
    /// `wit/v0.2`.
    V0_2(since_v0_2::Code<T>),
}

impl<T: 'static> Clone for PluginCode<T> {
    fn clone(&self) -> Self {
        match self {
            PluginCode::V0_1(code) => PluginCode::V0_1(code.clone()),
            PluginCode::V0_2(code) => PluginCode::V0_2(code.clone()),
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
            v if v == since_v0_2::MIN_VERSION => since_v0_2::Code::new(pre).map(PluginCode::V0_2),
            _ => Err(WrongWorld),
        }
    }

    /// The contract version the plugin was built against.
    pub fn version(&self) -> WitVersion {
        match self {
            PluginCode::V0_1(_) => since_v0_1::MIN_VERSION,
            PluginCode::V0_2(_) => since_v0_2::MIN_VERSION,
        }
    }

    /// The stage its world implements.
    pub fn stage(&self) -> Stage {
        match self {
            PluginCode::V0_1(code) => code.stage(),
            PluginCode::V0_2(code) => code.stage(),
        }
    }

    /// Instantiates it in `store` and asks for its manifest.
    pub async fn describe(&self, store: &mut Store<T>) -> wasmtime::Result<Manifest> {
        match self {
            PluginCode::V0_1(code) => code.describe(store).await,
            PluginCode::V0_2(code) => code.describe(store).await,
        }
    }

    /// Instantiates it in `store`, for one call or several.
    pub async fn instantiate(&self, store: &mut Store<T>) -> wasmtime::Result<PluginInstance> {
        match self {
            PluginCode::V0_1(code) => code.instantiate(store).await.map(PluginInstance::V0_1),
            PluginCode::V0_2(code) => code.instantiate(store).await.map(PluginInstance::V0_2),
        }
    }
}

/// A plugin instantiated in a store: its entry points, by contract version.
pub enum PluginInstance {
    /// `wit/v0.1`.
    V0_1(since_v0_1::Instance),
    /// `wit/v0.2`.
    V0_2(since_v0_2::Instance),
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
            PluginInstance::V0_2(instance) => instance.call(store, doc).await,
        }
    }
}

/// Links the interfaces every version defines only types in (nothing to
/// implement, but a component importing them needs them defined).
pub fn add_type_interfaces<T: Send + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    since_v0_1::add_type_interfaces(linker)?;
    since_v0_2::add_type_interfaces(linker)
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
        assert!(is_supported(WitVersion(0, 2, 0)));
        assert!(!is_supported(WitVersion(0, 1, 1)));
        assert!(!is_supported(WitVersion(0, 9, 0)));
        assert_eq!(supported_list(), "assay:plugin@0.1.0 and @0.2.0");
        assert!(SUPPORTED.windows(2).all(|w| w[0] < w[1]), "oldest first");
    }
}
