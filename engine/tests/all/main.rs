//! Integration tests of the engine against a real PostgreSQL (the embedded server,
//! started once per test run in a throw-away directory) and real plugin components
//! built from `plugins/`.

mod analyze;
mod bad_input;
mod bench;
mod cli;
mod embedded;
mod faults;
mod history;
mod limits;
mod reload;
mod sandbox;
mod sql;
mod support;
