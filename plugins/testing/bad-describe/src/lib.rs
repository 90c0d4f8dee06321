//! A test plugin whose `describe` traps, so tests can check that the host refuses
//! to load it and keeps the previously loaded version.

pub mod bindings {
    // The generated SQL import glue takes many parameters; that is not ours to style.
    #![allow(clippy::too_many_arguments)]
    wit_bindgen::generate!({ world: "analyzer", path: "../../../wit/v0.1" });
}

use bindings::{Document, Finding, Guest, Manifest, PluginError};

/// The plugin.
pub struct BadDescribe;

impl Guest for BadDescribe {
    fn describe() -> Manifest {
        panic!("describe is broken on purpose");
    }

    fn analyze(_doc: Document) -> Result<Vec<Finding>, PluginError> {
        Ok(vec![])
    }
}

#[cfg(target_arch = "wasm32")]
bindings::export!(BadDescribe with_types_in bindings);
