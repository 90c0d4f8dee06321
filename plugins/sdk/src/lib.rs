//! Write assay plugins in Rust.
//!
//! A plugin is a library crate built as a WebAssembly component for
//! `wasm32-wasip2`. This crate gives it everything it needs from the plugin
//! contract (`wit/v0.2`, `assay:plugin@0.2.0`):
//!
//! - [`analyzer`]: the world of analysis plugins, which read a document and
//!   report findings: its [`Guest`](analyzer::Guest) trait and the types it
//!   uses; export an implementation with [`export_analyzer!`];
//! - [`prompt`]: the world of prompt-stage plugins, which transform a document
//!   before analysis: its [`Guest`](prompt::Guest) trait and types; export an
//!   implementation with [`export_prompt!`];
//! - [`types`]: the records both worlds share ([`Document`](types::Document),
//!   [`Finding`](types::Finding), [`Span`](types::Span),
//!   [`Manifest`](types::Manifest), [`Migration`](types::Migration), …);
//! - the host's interfaces: [`sql`] (queries and statements in the call's
//!   transaction), [`state`] (small JSON values kept between calls),
//!   [`log`] (lines in the host's log), [`inference`] (chat completion
//!   and embeddings, under the operator's policy) and [`prompts`] (the
//!   operator's prompt library, read-only);
//! - [`text`]: helpers for text work (words, sentences, speaker labels, stop
//!   words), for spans (offsets that fit the contract's `u32`) and for JSON
//!   (string literals for a finding's `data`).
//!
//! The export macros export the plugin only when compiling for `wasm32`. In a
//! native build they do nothing but check that the type implements `Guest`,
//! so native code (unit tests, benchmarks) can call a plugin through its
//! `Guest` implementation, and several plugins can link into one binary.
//!
//! # A complete plugin
//!
//! `Cargo.toml`:
//!
//! ```toml
//! [package]
//! name = "shouting"
//! version = "0.1.0"
//! edition = "2024"
//!
//! [lib]
//! crate-type = ["cdylib", "rlib"]
//!
//! [dependencies]
//! assay-plugin = { path = "path/to/assay/plugins/sdk" }
//! ```
//!
//! `src/lib.rs`:
//!
//! ```
//! use assay_plugin::analyzer::{Document, Finding, Guest, Manifest, PluginError, Span, Stage};
//! use assay_plugin::text;
//!
//! /// Finds words written in capitals.
//! pub struct Shouting;
//!
//! impl Guest for Shouting {
//!     fn describe() -> Manifest {
//!         Manifest {
//!             name: "shouting".into(),
//!             version: "0.1.0".into(),
//!             description: "Finds words written in capitals".into(),
//!             stage: Stage::Analysis,
//!             priority: 0,
//!             kinds: vec![],      // every kind of document
//!             triggers: vec![],   // run on every text
//!             migrations: vec![], // no tables of its own
//!         }
//!     }
//!
//!     fn analyze(doc: Document) -> Result<Vec<Finding>, PluginError> {
//!         if !text::spans_fit(&doc.text) {
//!             return Err(PluginError::InvalidInput(text::TOO_LONG_FOR_SPANS.into()));
//!         }
//!         Ok(text::words(&doc.text)
//!             .filter(|w| w.text.chars().count() >= 4 && w.text.chars().all(char::is_uppercase))
//!             .map(|w| Finding {
//!                 label: "shouting".into(),
//!                 score: None,
//!                 span: Some(Span {
//!                     start: text::span_offset(w.start),
//!                     end: text::span_offset(w.end),
//!                 }),
//!                 data: format!("{{\"word\":{}}}", text::json_string(w.text)),
//!             })
//!             .collect())
//!     }
//! }
//!
//! assay_plugin::export_analyzer!(Shouting);
//! #
//! # let doc = Document {
//! #     id: "00000000-0000-0000-0000-000000000000".into(),
//! #     kind: "chat".into(),
//! #     text: "I SAID no".into(),
//! #     metadata: "{}".into(),
//! # };
//! # let found = Shouting::analyze(doc).map_err(|e| format!("{e:?}"))?;
//! # assert_eq!(found.len(), 1);
//! # assert_eq!(found[0].data, r#"{"word":"SAID"}"#);
//! # Ok::<(), String>(())
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2`; the component
//! is `target/wasm32-wasip2/release/shouting.wasm`.

#![deny(missing_docs)]

mod errors;
pub mod text;

/// The `analyzer` world: an analysis plugin reads a document and reports
/// findings. Implement [`Guest`](analyzer::Guest) and export it with
/// [`export_analyzer!`].
///
/// The generated bindings also carry the contract's interfaces under
/// `analyzer::assay::plugin`; use them through [`types`](crate::types),
/// [`sql`](crate::sql), [`state`](crate::state), [`log`](crate::log),
/// [`inference`](crate::inference) and [`prompts`](crate::prompts).
// The bindings are generated from the contract: their documentation is the
// WIT's, and the SQL import glue takes many parameters.
#[allow(missing_docs, clippy::too_many_arguments)]
pub mod analyzer {
    wit_bindgen::generate!({
        world: "analyzer",
        path: "../../wit/v0.2",
        // The export macro is used by the plugin crates, not by this one.
        pub_export_macro: true,
        default_bindings_module: "$crate::analyzer",
    });

    pub use crate::types::{Migration, Span, Stage};
}

/// The `prompt-processor` world: a prompt-stage plugin transforms a document
/// before analysis, and may report findings about what it did. Implement
/// [`Guest`](prompt::Guest) and export it with [`export_prompt!`].
// Generated from the contract, like `analyzer`.
#[allow(missing_docs, clippy::too_many_arguments)]
pub mod prompt {
    wit_bindgen::generate!({
        world: "prompt-processor",
        path: "../../wit/v0.2",
        // One set of interface types for both worlds, so a `Document` or a
        // `Finding` is the same type whichever world a plugin is written for.
        with: {
            "assay:plugin/types@0.2.0": crate::types,
            "assay:plugin/sql@0.2.0": crate::sql,
            "assay:plugin/state@0.2.0": crate::state,
            "assay:plugin/log@0.2.0": crate::log,
            "assay:plugin/inference@0.2.0": crate::inference,
            "assay:plugin/prompts@0.2.0": crate::prompts,
        },
        pub_export_macro: true,
        default_bindings_module: "$crate::prompt",
    });

    pub use crate::types::{Finding, Migration, Span, Stage};
}

pub use analyzer::assay::plugin::{inference, log, prompts, sql, state, types};
pub use errors::Explain;

/// Exports an analysis plugin: a type implementing
/// [`analyzer::Guest`] becomes the component's `describe` and `analyze`.
///
/// Only when compiling for `wasm32`: the exports are plain symbols
/// (`describe`, …), which would clash when several plugins link into one
/// native binary. Natively it only checks that the type implements the trait.
///
/// ```
/// # use assay_plugin::analyzer::{Document, Finding, Guest, Manifest, PluginError};
/// # struct Nothing;
/// # impl Guest for Nothing {
/// #     fn describe() -> Manifest { unimplemented!() }
/// #     fn analyze(_: Document) -> Result<Vec<Finding>, PluginError> { Ok(vec![]) }
/// # }
/// assay_plugin::export_analyzer!(Nothing);
/// ```
#[macro_export]
macro_rules! export_analyzer {
    ($plugin:ident) => {
        #[cfg(target_arch = "wasm32")]
        $crate::analyzer::export!($plugin with_types_in $crate::analyzer);
        #[cfg(not(target_arch = "wasm32"))]
        const _: () = {
            fn exported<T: $crate::analyzer::Guest>() {}
            let _ = exported::<$plugin>;
        };
    };
}

/// Exports a prompt-stage plugin: a type implementing [`prompt::Guest`]
/// becomes the component's `describe` and `process`.
///
/// Like [`export_analyzer!`], only when compiling for `wasm32`; natively it
/// only checks that the type implements the trait.
///
/// ```
/// # use assay_plugin::prompt::{Document, Guest, Manifest, PluginError, Processed};
/// # struct Unchanged;
/// # impl Guest for Unchanged {
/// #     fn describe() -> Manifest { unimplemented!() }
/// #     fn process(document: Document) -> Result<Processed, PluginError> {
/// #         Ok(Processed { document, findings: vec![] })
/// #     }
/// # }
/// assay_plugin::export_prompt!(Unchanged);
/// ```
#[macro_export]
macro_rules! export_prompt {
    ($plugin:ident) => {
        #[cfg(target_arch = "wasm32")]
        $crate::prompt::export!($plugin with_types_in $crate::prompt);
        #[cfg(not(target_arch = "wasm32"))]
        const _: () = {
            fn exported<T: $crate::prompt::Guest>() {}
            let _ = exported::<$plugin>;
        };
    };
}
