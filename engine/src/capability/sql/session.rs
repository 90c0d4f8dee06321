//! The transaction of one plugin call.
//!
//! A call takes at most one connection, at its first statement, and runs every
//! statement (and every `state` access) inside one transaction with a
//! `statement_timeout` and the plugin's schema on the `search_path`. The host
//! commits when the call returns `ok` and rolls back otherwise.

use std::time::Duration;

use futures::{StreamExt as _, pin_mut};
use tokio_postgres::error::SqlState;

use super::values::{Cell, Param, readable};
use crate::db::{PgConnection, PgPool};
use crate::runtime::bindings::sql::{Column, DbError, RowSet, SqlError, Value};

/// Caps on what one call may ask of the database.
#[derive(Debug, Clone, PartialEq)]
pub struct SqlCaps {
    /// Server-side `statement_timeout` of each statement.
    pub statement_timeout: Duration,
    /// Most rows one `query` may return.
    pub max_rows: usize,
    /// Most bytes (sum of raw column sizes) one `query` may return.
    pub max_bytes: usize,
    /// Most statements one call may run.
    pub max_statements: u32,
}

impl Default for SqlCaps {
    fn default() -> Self {
        Self {
            statement_timeout: Duration::from_secs(5),
            max_rows: 10_000,
            max_bytes: 16 * 1024 * 1024,
            max_statements: 1_000,
        }
    }
}

/// One call's (lazily opened) transaction.
pub struct SqlSession {
    pool: PgPool,
    schema: String,
    caps: SqlCaps,
    conn: Option<PgConnection>,
    statements: u32,
    /// A statement failed, so the server has aborted the transaction.
    aborted: bool,
}

/// The schema a plugin owns and finds first on its `search_path`.
pub fn plugin_schema(plugin: &str) -> String {
    format!("plugin_{}", plugin.replace('-', "_"))
}

impl SqlSession {
    /// A session that connects from `pool` on first use.
    pub fn new(pool: PgPool, plugin: &str, caps: SqlCaps) -> Self {
        Self {
            pool,
            schema: plugin_schema(plugin),
            caps,
            conn: None,
            statements: 0,
            aborted: false,
        }
    }

    /// The call's connection, opening the transaction on first use.
    pub async fn client(&mut self) -> Result<&mut PgConnection, SqlError> {
        if self.conn.is_none() {
            let conn = self.pool.get_owned().await.map_err(|e| {
                SqlError::Unavailable(match e {
                    bb8::RunError::User(e) => format!("cannot connect to PostgreSQL: {e}"),
                    bb8::RunError::TimedOut => "timed out waiting for a database connection".into(),
                })
            })?;
            // One round trip: the transaction, its timeout and the search path.
            let setup = format!(
                "BEGIN; SET LOCAL statement_timeout = {}; SET LOCAL search_path = \"{}\"",
                self.caps.statement_timeout.as_millis(),
                self.schema
            );
            conn.batch_execute(&setup).await.map_err(to_sql_error)?;
            self.conn = Some(conn);
        }
        self.conn
            .as_mut()
            .ok_or_else(|| SqlError::Unavailable("no connection".into()))
    }

    fn count_statement(&mut self) -> Result<(), SqlError> {
        self.statements += 1;
        if self.statements > self.caps.max_statements {
            return Err(SqlError::Denied(format!(
                "a call may run at most {} statements",
                self.caps.max_statements
            )));
        }
        Ok(())
    }

    /// Runs a query, streaming rows so a result past the caps is refused without
    /// being buffered whole.
    pub async fn query(&mut self, statement: &str, params: Vec<Value>) -> Result<RowSet, SqlError> {
        self.count_statement()?;
        let caps = self.caps.clone();
        let result = async {
            let client = self.client().await?;
            let prepared = client.prepare(statement).await.map_err(to_sql_error)?;
            check_params(&prepared, &params)?;
            let columns: Vec<Column> = prepared
                .columns()
                .iter()
                .map(|c| Column {
                    name: c.name().to_string(),
                    type_name: c.type_().name().to_string(),
                })
                .collect();
            if let Some(bad) = prepared.columns().iter().find(|c| !readable(c.type_())) {
                return Err(SqlError::Denied(format!(
                    "column `{}` has type {}, which plugins cannot read yet; cast it in the query (e.g. `{}::text`)",
                    bad.name(),
                    bad.type_().name(),
                    bad.name()
                )));
            }
            let params: Vec<Param> = params.into_iter().map(Param).collect();
            let stream = client.query_raw(&prepared, params.iter()).await.map_err(to_sql_error)?;
            pin_mut!(stream);
            let mut rows = Vec::new();
            let mut bytes = 0usize;
            while let Some(row) = stream.next().await {
                let row = row.map_err(to_sql_error)?;
                if rows.len() == caps.max_rows {
                    return Err(SqlError::TooLarge(format!(
                        "the result has more than {} rows (limit max_rows); add a LIMIT or aggregate in SQL",
                        caps.max_rows
                    )));
                }
                let mut values = Vec::with_capacity(row.len());
                for i in 0..row.len() {
                    let Cell(value) = row.try_get::<_, Cell>(i).map_err(|e| {
                        SqlError::Db(DbError {
                            code: "22000".into(),
                            message: format!("cannot read column `{}`: {e}", row.columns()[i].name()),
                            detail: None,
                        })
                    })?;
                    bytes += value_size(&value);
                    values.push(value);
                }
                if bytes > caps.max_bytes {
                    return Err(SqlError::TooLarge(format!(
                        "the result is larger than {} bytes (limit max_bytes)",
                        caps.max_bytes
                    )));
                }
                rows.push(values);
            }
            Ok(RowSet { columns, rows })
        }
        .await;
        self.note(&result);
        result
    }

    /// Runs a statement and returns the number of rows it affected.
    pub async fn execute(&mut self, statement: &str, params: Vec<Value>) -> Result<u64, SqlError> {
        self.count_statement()?;
        let result = async {
            let client = self.client().await?;
            let prepared = client.prepare(statement).await.map_err(to_sql_error)?;
            check_params(&prepared, &params)?;
            let params: Vec<Param> = params.into_iter().map(Param).collect();
            client
                .execute_raw(&prepared, params.iter())
                .await
                .map_err(to_sql_error)
        }
        .await;
        self.note(&result);
        result
    }

    fn note<T>(&mut self, result: &Result<T, SqlError>) {
        if matches!(
            result,
            Err(SqlError::Db(_) | SqlError::Timeout | SqlError::TooLarge(_))
        ) {
            self.aborted = true;
        }
    }

    /// Ends the call's transaction: commit when `commit` and nothing failed,
    /// otherwise roll back. Returns why a requested commit did not happen.
    pub async fn finish(&mut self, commit: bool) -> Result<(), String> {
        let Some(conn) = self.conn.take() else {
            return Ok(());
        };
        if commit && !self.aborted {
            conn.batch_execute("COMMIT")
                .await
                .map_err(|e| format!("its SQL transaction could not be committed: {e}"))
        } else {
            if let Err(e) = conn.batch_execute("ROLLBACK").await {
                tracing::warn!(error = %e, "rolling back a plugin transaction failed");
            }
            if commit {
                tracing::warn!(
                    schema = %self.schema,
                    "a plugin returned ok after one of its statements failed; its transaction was rolled back"
                );
            }
            Ok(())
        }
    }
}

/// Roughly what a value costs to hold and hand over, in bytes.
fn value_size(value: &Value) -> usize {
    match value {
        Value::Numeric(s) | Value::Text(s) | Value::Json(s) | Value::Uuid(s) => s.len() + 8,
        Value::Bytes(b) => b.len() + 8,
        Value::TextArray(items) => items
            .iter()
            .map(|i| i.as_ref().map_or(0, String::len) + 8)
            .sum(),
        Value::IntArray(items) => items.len() * 9,
        _ => 9,
    }
}

fn check_params(statement: &tokio_postgres::Statement, params: &[Value]) -> Result<(), SqlError> {
    let expected = statement.params().len();
    if expected != params.len() {
        return Err(SqlError::Db(DbError {
            code: "08P01".into(),
            message: format!(
                "the statement has {expected} parameters but {} values were passed",
                params.len()
            ),
            detail: None,
        }));
    }
    Ok(())
}

/// Maps a tokio-postgres error to what the plugin sees.
pub fn to_sql_error(e: tokio_postgres::Error) -> SqlError {
    if let Some(db) = e.as_db_error() {
        if db.code() == &SqlState::QUERY_CANCELED {
            return SqlError::Timeout;
        }
        return SqlError::Db(DbError {
            code: db.code().code().to_string(),
            message: db.message().to_string(),
            detail: db.detail().map(str::to_string),
        });
    }
    let io = std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>());
    if e.is_closed() || io {
        return SqlError::Unavailable(format!("the database connection was lost: {e}"));
    }
    // Client-side: a parameter that cannot be encoded for its column, and the like.
    let message = match std::error::Error::source(&e) {
        Some(source) => format!("{e}: {source}"),
        None => e.to_string(),
    };
    SqlError::Db(DbError {
        code: "42804".into(), // datatype_mismatch
        message,
        detail: None,
    })
}
