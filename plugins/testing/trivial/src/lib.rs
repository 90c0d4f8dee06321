//! The least a plugin can be: `describe`, and an `analyze` that counts the
//! document's bytes. The call-overhead benchmark measures the runtime with it,
//! beside [`count_bytes`] called natively.

use assay_plugin::analyzer::{Document, Finding, Guest, Manifest, PluginError};
use assay_plugin::types::Stage;

/// The work of one call: the text's length, as a finding's data.
pub fn count_bytes(text: &str) -> String {
    format!("{{\"bytes\":{}}}", text.len())
}

/// The plugin.
pub struct Trivial;

impl Guest for Trivial {
    fn describe() -> Manifest {
        Manifest {
            name: "trivial".into(),
            version: "0.0.1".into(),
            description: "counts bytes (benchmarks only)".into(),
            stage: Stage::Analysis,
            priority: 0,
            kinds: vec![],
            triggers: vec![],
            migrations: vec![],
        }
    }

    fn analyze(doc: Document) -> Result<Vec<Finding>, PluginError> {
        Ok(vec![Finding {
            label: "trivial:bytes".into(),
            score: None,
            span: None,
            data: count_bytes(&doc.text),
        }])
    }
}

assay_plugin::export_analyzer!(Trivial);
