//! assay: a WebAssembly-extensible analysis engine.
//!
//! Plugins are WebAssembly components implementing the contract in `wit/`.
//! The layers, each importing only from those before it:
//!
//! 1. settings, in [`config`] (and [`sync`], the one policy for locks, and
//!    [`fsread`], reading files planted by others);
//! 2. the engine's database, in [`db`] (pool, embedded server, migrations),
//!    and the [`prompts`] library kept in it;
//! 3. [`runtime`] (wasmtime, contract versions, loading and calling plugins,
//!    limits; it names no capability) and [`capability`] (what plugins are
//!    offered: SQL, state, log, inference — one folder each);
//! 4. the loaded plugins, versions and hot reload, in [`registry`];
//! 5. staged runs over documents and the run store, in [`pipeline`];
//! 6. [`engine`]: one assembly of all of the above;
//! 7. [`service`] (HTTP) and [`bench`].
//!
//! ARCHITECTURE.md in the repository has where a new capability or contract
//! version goes, and the path of one document through the code.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use assay::{config::Config, engine::Engine, pipeline::DocumentInput};
//!
//! let engine = Engine::builder(Config::load("assay.toml".as_ref())?).build().await?;
//! let report = engine
//!     .pipeline()
//!     .run(DocumentInput {
//!         source: "inline".into(),
//!         kind: "chat".into(),
//!         metadata: Default::default(),
//!         text: "The router keeps dropping, this is unacceptable.".into(),
//!     })
//!     .await?;
//! println!("run {} found {} things", report.run_id, report.findings.len());
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

pub mod bench;
pub mod bundled;
pub mod capability;
pub mod config;
pub mod db;
pub mod engine;
pub mod fsread;
pub mod pipeline;
pub mod prompts;
pub mod registry;
pub mod runtime;
pub mod service;
pub mod sync;
