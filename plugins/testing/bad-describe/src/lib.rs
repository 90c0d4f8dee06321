//! A test plugin whose `describe` traps, so tests can check that the host refuses
//! to load it and keeps the previously loaded version.

use assay_plugin::analyzer::{Document, Finding, Guest, Manifest, PluginError};

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

assay_plugin::export_analyzer!(BadDescribe);
