//! A test plugin built against a future version of the contract
//! (`assay:plugin@0.9.0`, see `wit/plugin.wit`), so tests can check that the host
//! refuses a contract version it does not support.
//!
//! That is why it generates its own bindings instead of using `assay-plugin`,
//! whose bindings are those of the newest contract the host supports.

pub mod bindings {
    // The generated SQL import glue takes many parameters; that is not ours to style.
    #![allow(clippy::too_many_arguments)]
    wit_bindgen::generate!({ world: "analyzer", path: "wit" });
}

use bindings::assay::plugin::types::Stage;
use bindings::{Document, Finding, Guest, Manifest, PluginError};

/// The plugin.
pub struct Future;

impl Guest for Future {
    fn describe() -> Manifest {
        Manifest {
            name: "future".into(),
            version: "0.9.0".into(),
            description: "built against a future contract (tests only)".into(),
            stage: Stage::Analysis,
            priority: 0,
            kinds: vec![],
            triggers: vec![],
            migrations: vec![],
        }
    }

    fn analyze(_doc: Document) -> Result<Vec<Finding>, PluginError> {
        Ok(vec![])
    }
}

#[cfg(target_arch = "wasm32")]
bindings::export!(Future with_types_in bindings);
