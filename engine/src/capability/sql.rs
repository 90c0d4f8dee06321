//! The `sql` interface: plugins run SQL through the host, one transaction per call.
//!
//! [`session`] holds the per-call transaction and caps, [`values`] the type
//! conversions, [`pool`] the per-plugin connection pools, [`gate`] the early
//! refusal of statements no plugin needs. Only the extended protocol ever carries plugin SQL (one statement,
//! bound parameters): a string with two statements is refused by the server.

pub mod gate;
pub mod migrations;
pub mod pool;
pub mod session;
pub mod values;

pub use pool::SandboxPool;
pub use session::{SqlCaps, SqlSession};

use crate::runtime::bindings::sql::{self, RowSet, SqlError, Value};
use crate::runtime::call::CallState;

impl CallState {
    /// Runs `work` against the call's session, bounded by the call's deadline: a
    /// statement still running when the call's time is up is reported as a timeout
    /// (the server's own `statement_timeout` normally fires first).
    pub(crate) async fn within_deadline<T>(
        &mut self,
        work: impl AsyncFnOnce(&mut SqlSession) -> Result<T, SqlError>,
    ) -> Result<T, SqlError> {
        let remaining = self.remaining();
        let outcome = tokio::time::timeout(remaining, work(&mut self.sql)).await;
        match outcome {
            Ok(result) => result,
            Err(_) => {
                self.sql.abandon_statement().await;
                Err(SqlError::Timeout)
            }
        }
    }
}

impl sql::Host for CallState {
    async fn query(
        &mut self,
        statement: String,
        params: Vec<Value>,
    ) -> wasmtime::Result<Result<RowSet, SqlError>> {
        Ok(self
            .within_deadline(async |sql| sql.query(&statement, params).await)
            .await)
    }

    async fn execute(
        &mut self,
        statement: String,
        params: Vec<Value>,
    ) -> wasmtime::Result<Result<u64, SqlError>> {
        Ok(self
            .within_deadline(async |sql| sql.execute(&statement, params).await)
            .await)
    }
}
