//! The `sql` interface of each contract version, implemented on the call's
//! [`SqlCall`], converting between the version's types and the capability's own.

use wasmtime::component::{HasSelf, Linker};

use super::SqlCall;
use super::types::{Column, DbError, RowSet, SqlError, Value};
use crate::capability::HostState;
use crate::runtime::wit::since_v0_1::sql as v0_1;

/// Links the `sql` interface of every supported version.
pub fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    v0_1::add_to_linker::<HostState, HasSelf<SqlCall>>(linker, |state| &mut state.caps.sql)
}

impl v0_1::Host for SqlCall {
    async fn query(
        &mut self,
        statement: String,
        params: Vec<v0_1::Value>,
    ) -> wasmtime::Result<Result<v0_1::RowSet, v0_1::SqlError>> {
        let params = params.into_iter().map(Value::from).collect();
        Ok(self
            .within_deadline(async |sql| sql.query(&statement, params).await)
            .await
            .map(Into::into)
            .map_err(Into::into))
    }

    async fn execute(
        &mut self,
        statement: String,
        params: Vec<v0_1::Value>,
    ) -> wasmtime::Result<Result<u64, v0_1::SqlError>> {
        let params = params.into_iter().map(Value::from).collect();
        Ok(self
            .within_deadline(async |sql| sql.execute(&statement, params).await)
            .await
            .map_err(Into::into))
    }
}

impl From<v0_1::Value> for Value {
    fn from(v: v0_1::Value) -> Self {
        use v0_1::Value as V;
        match v {
            V::Null => Value::Null,
            V::Boolean(b) => Value::Boolean(b),
            V::Int(i) => Value::Int(i),
            V::Float(f) => Value::Float(f),
            V::Numeric(s) => Value::Numeric(s),
            V::Text(s) => Value::Text(s),
            V::Bytes(b) => Value::Bytes(b),
            V::Json(s) => Value::Json(s),
            V::Uuid(s) => Value::Uuid(s),
            V::Timestamptz(t) => Value::Timestamptz(t),
            V::Timestamp(t) => Value::Timestamp(t),
            V::Date(d) => Value::Date(d),
            V::TextArray(a) => Value::TextArray(a),
            V::IntArray(a) => Value::IntArray(a),
        }
    }
}

impl From<Value> for v0_1::Value {
    fn from(v: Value) -> Self {
        use v0_1::Value as V;
        match v {
            Value::Null => V::Null,
            Value::Boolean(b) => V::Boolean(b),
            Value::Int(i) => V::Int(i),
            Value::Float(f) => V::Float(f),
            Value::Numeric(s) => V::Numeric(s),
            Value::Text(s) => V::Text(s),
            Value::Bytes(b) => V::Bytes(b),
            Value::Json(s) => V::Json(s),
            Value::Uuid(s) => V::Uuid(s),
            Value::Timestamptz(t) => V::Timestamptz(t),
            Value::Timestamp(t) => V::Timestamp(t),
            Value::Date(d) => V::Date(d),
            Value::TextArray(a) => V::TextArray(a),
            Value::IntArray(a) => V::IntArray(a),
        }
    }
}

impl From<RowSet> for v0_1::RowSet {
    fn from(set: RowSet) -> Self {
        v0_1::RowSet {
            columns: set
                .columns
                .into_iter()
                .map(|Column { name, type_name }| v0_1::Column { name, type_name })
                .collect(),
            rows: set
                .rows
                .into_iter()
                .map(|row| row.into_iter().map(Into::into).collect())
                .collect(),
        }
    }
}

impl From<SqlError> for v0_1::SqlError {
    fn from(e: SqlError) -> Self {
        match e {
            SqlError::Denied(m) => v0_1::SqlError::Denied(m),
            SqlError::Timeout => v0_1::SqlError::Timeout,
            SqlError::TooLarge(m) => v0_1::SqlError::TooLarge(m),
            SqlError::Db(DbError {
                code,
                message,
                detail,
            }) => v0_1::SqlError::Db(v0_1::DbError {
                code,
                message,
                detail,
            }),
            SqlError::Unavailable(m) => v0_1::SqlError::Unavailable(m),
        }
    }
}
