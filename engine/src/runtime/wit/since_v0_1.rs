//! Contract version 0.1 (`wit/v0.1`, frozen): its generated bindings, and the
//! conversions between its types and the host's own.
//!
//! Both worlds import the same `sql`, `state` and `log` interfaces; the
//! prompt-processor bindings reuse the analyzer's interface types so that one
//! implementation of each host trait serves both.

#![allow(missing_docs)]

use wasmtime::Store;
use wasmtime::component::{HasData, InstancePre, Linker};

use super::WitVersion;
use crate::runtime::plugin;

/// The oldest contract version this module serves (and, the folder being
/// frozen, the only one).
pub const MIN_VERSION: WitVersion = WitVersion(0, 1, 0);

/// The `analyzer` world, and the shared interface types.
pub mod analyzer {
    wasmtime::component::bindgen!({
        world: "analyzer",
        path: "../wit/v0.1",
        imports: { default: async | trappable },
        exports: { default: async },
    });
}

/// The `prompt-processor` world.
pub mod prompt_processor {
    wasmtime::component::bindgen!({
        world: "prompt-processor",
        path: "../wit/v0.1",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "assay:plugin/types": super::analyzer::assay::plugin::types,
            "assay:plugin/sql": super::analyzer::assay::plugin::sql,
            "assay:plugin/state": super::analyzer::assay::plugin::state,
            "assay:plugin/log": super::analyzer::assay::plugin::log,
        },
    });
}

pub use analyzer::assay::plugin::{log, sql, state, types};

/// A 0.1 plugin's entry points, by world.
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
    pub fn new(pre: InstancePre<T>) -> Result<Self, super::WrongWorld> {
        match analyzer::AnalyzerPre::new(pre.clone()) {
            Ok(analyzer) => Ok(Code::Analyzer(analyzer)),
            Err(_) => prompt_processor::PromptProcessorPre::new(pre)
                .map(Code::Prompt)
                .map_err(|_| super::WrongWorld),
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
    pub async fn describe(&self, store: &mut Store<T>) -> wasmtime::Result<plugin::Manifest> {
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
    pub async fn instantiate(&self, store: &mut Store<T>) -> wasmtime::Result<Instance> {
        Ok(match self {
            Code::Analyzer(pre) => Instance::Analyzer(pre.instantiate_async(&mut *store).await?),
            Code::Prompt(pre) => Instance::Prompt(pre.instantiate_async(&mut *store).await?),
        })
    }
}

/// A 0.1 plugin instantiated in a store, by world.
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
        store: &mut Store<T>,
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
                .map(|p| plugin::CallOutput::Processed(p.document.into(), findings(p.findings)))
                .map_err(Into::into),
        })
    }
}

/// `types` defines only shapes; there is nothing to implement, but a
/// component importing it needs the instance defined.
pub struct NoFunctions;

impl types::Host for NoFunctions {}

struct TypesOnly;

impl HasData for TypesOnly {
    type Data<'a> = NoFunctions;
}

/// Links the `types` interface.
pub fn add_type_interfaces<T: Send + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
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
