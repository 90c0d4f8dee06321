//! assay: a WebAssembly-extensible analysis engine.
//!
//! Plugins are WebAssembly components implementing the contract in `wit/v0.1`.
//! The engine loads them ([`registry`]), runs them over documents in two stages
//! ([`pipeline`]) inside a sandboxed runtime ([`runtime`]) that offers them a few
//! host capabilities ([`capability`]: SQL, state, log), and stores every run in
//! PostgreSQL ([`db`]) — an external server or a private embedded one.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use std::sync::Arc;
//! use assay::{config::Config, db::Database, pipeline::{DocumentInput, Pipeline}, registry::Registry, runtime::Runtime};
//!
//! let config = Config::load("assay.toml".as_ref())?;
//! let db = Arc::new(Database::open(&config.database).await?);
//! let runtime = Arc::new(Runtime::new()?);
//! let registry = Arc::new(Registry::load(&runtime, &config, &db).await?);
//! let pipeline = Pipeline::new(runtime, registry, db, &config);
//! let report = pipeline
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
pub mod pipeline;
pub mod registry;
pub mod runtime;
pub mod service;
