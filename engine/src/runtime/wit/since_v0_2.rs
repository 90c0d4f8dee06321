//! Contract version 0.2 (`wit/v0.2`, frozen): its generated bindings, and the
//! conversions between its types and the host's own.
//!
//! Both worlds import the same `sql`, `state`, `log`, `inference` and `prompts` interfaces; the
//! prompt-processor bindings reuse the analyzer's interface types so that one
//! implementation of each host trait serves both. The rest (entry points,
//! conversions) is [`super::version_glue`].

#![allow(missing_docs)]

use super::WitVersion;

/// The oldest contract version this module serves (and, the folder being
/// frozen, the only one).
pub const MIN_VERSION: WitVersion = WitVersion(0, 2, 0);

/// The `analyzer` world, and the shared interface types.
pub mod analyzer {
    wasmtime::component::bindgen!({
        world: "analyzer",
        path: "../wit/v0.2",
        imports: { default: async | trappable },
        exports: { default: async },
    });
}

/// The `prompt-processor` world.
pub mod prompt_processor {
    wasmtime::component::bindgen!({
        world: "prompt-processor",
        path: "../wit/v0.2",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "assay:plugin/types": super::analyzer::assay::plugin::types,
            "assay:plugin/sql": super::analyzer::assay::plugin::sql,
            "assay:plugin/state": super::analyzer::assay::plugin::state,
            "assay:plugin/log": super::analyzer::assay::plugin::log,
            "assay:plugin/inference": super::analyzer::assay::plugin::inference,
            "assay:plugin/prompts": super::analyzer::assay::plugin::prompts,
        },
    });
}

pub use analyzer::assay::plugin::{inference, log, prompts, sql, state, types};

super::version_glue!();
