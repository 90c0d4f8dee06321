//! A test plugin built against contract 0.1 (`wit/v0.1`, frozen) the way a
//! plugin released before 0.2 was: its own bindings of that folder, not the
//! SDK's (which are 0.2's). It keeps a count in `state` and reads the
//! database through `sql`, so a test shows 0.1's imports still serve it.

pub mod bindings {
    // The generated SQL import glue takes many parameters; not ours to style.
    #![allow(clippy::too_many_arguments)]
    wit_bindgen::generate!({ world: "analyzer", path: "../../../wit/v0.1" });
}

use bindings::assay::plugin::sql::{self, Value};
use bindings::assay::plugin::{log, state, types::Stage};
use bindings::{Document, Finding, Guest, Manifest, PluginError};

/// The plugin.
pub struct Legacy;

impl Guest for Legacy {
    fn describe() -> Manifest {
        Manifest {
            name: "legacy".into(),
            version: "0.1.0".into(),
            description: "built against contract 0.1 (tests only)".into(),
            stage: Stage::Analysis,
            priority: 0,
            kinds: vec![],
            triggers: vec![],
            migrations: vec![],
        }
    }

    fn analyze(doc: Document) -> Result<Vec<Finding>, PluginError> {
        let failed = |what: &str| PluginError::Failed(what.to_string());
        let seen = state::get("legacy", "calls")
            .map_err(|_| failed("state get"))?
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        state::set("legacy", "calls", &(seen + 1).to_string()).map_err(|_| failed("state set"))?;
        let rows = sql::query("SELECT length($1::text)", &[Value::Text(doc.text.clone())])
            .map_err(|_| failed("sql"))?;
        let length = match rows.rows.first().and_then(|r| r.first()) {
            Some(Value::Int(n)) => *n,
            _ => -1,
        };
        log::log(log::Level::Info, "legacy plugin ran");
        Ok(vec![Finding {
            label: "legacy".into(),
            score: None,
            span: None,
            data: format!("{{\"calls\":{},\"length\":{length}}}", seen + 1),
        }])
    }
}

bindings::export!(Legacy with_types_in bindings);
