//! Host capabilities offered to plugins, one module each: its WIT host
//! implementation, its per-call state and its policy. Adding a capability does
//! not touch the others.

pub mod log;
pub mod sql;
pub mod state;

use crate::runtime::bindings::types;
use crate::runtime::call::CallState;

// `types` only defines shapes; it has no functions to implement.
impl types::Host for CallState {}
