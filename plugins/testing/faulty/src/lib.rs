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
//! - `#fault:grow`   grows its memory page by page until refused, then returns
//!   one `faulty:grown` finding saying how far it got;
//! - `#fault:huge-string` builds a 1 GiB string (past any sane memory limit);
//! - `#fault:many-findings` returns a million findings;
//! - `#fault:recurse` recurses without end (a stack overflow);
//! - `#fault:sleep`  sleeps an hour inside a host call (WASI's clock);
//! - `#fault:sql-slow` runs a statement that takes hours (counting to 10^11),
//!   then returns ok if the host let it;
//! - `#fault:sql-ok` runs `SELECT 1` and returns one `faulty:sql-ok` finding;
//! - otherwise one `faulty:ok` finding.

use assay_plugin::analyzer::{Document, Finding, Guest, Manifest, PluginError};
use assay_plugin::types::{Span, Stage};
use assay_plugin::{sql, state};

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
        if text.contains("#fault:grow") {
            return Ok(vec![finding(
                "faulty:grown",
                format!("{{\"pages\":{}}}", grow_until_refused()),
            )]);
        }
        if text.contains("#fault:huge-string") {
            let huge = "x".repeat(1 << 30);
            return Ok(vec![finding(
                "faulty:huge",
                format!("{{\"len\":{}}}", huge.len()),
            )]);
        }
        if text.contains("#fault:many-findings") {
            return Ok((0..1_000_000)
                .map(|_| finding("faulty:many", String::new()))
                .collect());
        }
        if text.contains("#fault:recurse") {
            return Ok(vec![finding(
                "faulty:recursed",
                format!("{{\"depth\":{}}}", recurse(std::hint::black_box(1))),
            )]);
        }
        if text.contains("#fault:sleep") {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
        if text.contains("#fault:sql-slow") {
            sql::query(SLOW_STATEMENT, &[])
                .map_err(|e| PluginError::Failed(format!("the slow statement failed: {e:?}")))?;
        }
        if text.contains("#fault:sql-ok") {
            sql::query("SELECT 1", &[])
                .map_err(|e| PluginError::Failed(format!("SELECT 1 failed: {e:?}")))?;
            return Ok(vec![finding("faulty:sql-ok", String::new())]);
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

/// A statement that runs for hours unless cancelled (sleeping is refused by
/// the statement gate, so this one works for it).
const SLOW_STATEMENT: &str =
    "SELECT count(*) FROM generate_series(1, 100000000000) AS slow_statement";

fn finding(label: &str, data: String) -> Finding {
    Finding {
        label: label.into(),
        score: None,
        span: None,
        data,
    }
}

/// Grows linear memory one 64 KiB page at a time until the host says no;
/// returns the pages added.
fn grow_until_refused() -> usize {
    #[cfg(target_arch = "wasm32")]
    {
        let mut pages = 0;
        while core::arch::wasm32::memory_grow(0, 1) != usize::MAX {
            pages += 1;
        }
        pages
    }
    #[cfg(not(target_arch = "wasm32"))]
    0
}

/// Never returns: each frame calls the next (kept from being a loop by black_box).
#[allow(unconditional_recursion)] // the point: a stack overflow
fn recurse(depth: u64) -> u64 {
    let next = std::hint::black_box(depth + 1);
    recurse(next).wrapping_add(std::hint::black_box(depth))
}

assay_plugin::export_analyzer!(Faulty);
