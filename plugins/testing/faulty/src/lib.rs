//! A test plugin that misbehaves on demand, so tests can check that one plugin's
//! failure costs only its own call. What it does depends on a marker in the text:
//!
//! - `#fault:trap`   panics (a trap);
//! - `#fault:error`  returns `failed`;
//! - `#fault:invalid` returns `invalid-input`;
//! - `#fault:bad-json` returns a finding whose data is not JSON;
//! - `#fault:bad-span` returns a span past the end of the text;
//! - `#fault:loop`   loops forever (the host's deadline must stop it);
//! - `#fault:sql-then-error` writes state, then fails (the write must roll back);
//! - otherwise one `faulty:ok` finding.

// The generated SQL import glue takes many parameters; that is not ours to style.
#[allow(clippy::too_many_arguments)]
pub mod bindings {
    wit_bindgen::generate!({ world: "analyzer", path: "../../../wit/v0.1" });
}

use bindings::assay::plugin::state;
use bindings::assay::plugin::types::{Span, Stage};
use bindings::{Document, Finding, Guest, Manifest, PluginError};

/// The plugin.
pub struct Faulty;

impl Guest for Faulty {
    fn describe() -> Manifest {
        Manifest {
            name: "faulty".into(),
            version: "0.0.1".into(),
            description: "misbehaves on demand (tests only)".into(),
            stage: Stage::Analysis,
            priority: 0,
            kinds: vec![],
            triggers: vec![],
            migrations: vec![],
        }
    }

    fn analyze(doc: Document) -> Result<Vec<Finding>, PluginError> {
        let text = &doc.text;
        if text.contains("#fault:trap") {
            panic!("faulty was asked to trap");
        }
        if text.contains("#fault:error") {
            return Err(PluginError::Failed("faulty was asked to fail".into()));
        }
        if text.contains("#fault:invalid") {
            return Err(PluginError::InvalidInput(
                "faulty refuses this document".into(),
            ));
        }
        if text.contains("#fault:loop") {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        if text.contains("#fault:sql-then-error") {
            state::set("faulty", "written-before-error", "true")
                .map_err(|e| PluginError::Failed(format!("{e:?}")))?;
            return Err(PluginError::Failed("failed after writing state".into()));
        }
        let data = if text.contains("#fault:bad-json") {
            "{not json"
        } else {
            "{}"
        };
        let span = if text.contains("#fault:bad-span") {
            Span {
                start: 0,
                end: text.len() as u32 + 10,
            }
        } else {
            Span { start: 0, end: 0 }
        };
        Ok(vec![Finding {
            label: "faulty:ok".into(),
            score: Some(1.0),
            span: Some(span),
            data: data.into(),
        }])
    }
}

#[cfg(target_arch = "wasm32")]
bindings::export!(Faulty with_types_in bindings);
