//! Integration tests of the engine against a real PostgreSQL (the embedded server,
//! started once per test run in a throw-away directory) and real plugin components
//! built from `plugins/`.

mod analyze;
mod as_used;
mod ask_sql;
mod audit_report;
mod bad_input;
mod bench;
mod cli;
mod embedded;
mod faults;
mod findings;
mod history;
mod http;
mod inference;
mod isolation;
mod lanes;
mod layers;
mod limits;
mod plugin_dir;
mod prompts;
mod reload;
mod retrieval;
mod reuse;
mod sandbox;
mod session;
mod sql;
mod support;
mod typed;
