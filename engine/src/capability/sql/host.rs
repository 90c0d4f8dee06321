//! The `sql` interface of each contract version, implemented on the call's
//! [`SqlCall`], converting between the version's types and the capability's own.
//!
//! Every version so far has 0.1's `sql` interface, so one macro writes the
//! implementation and conversions for each; a version that changes the
//! interface gets its own `impl` here instead.

use wasmtime::component::{HasSelf, Linker};

use super::SqlCall;
use super::types::{Column, DbError, RowSet, SqlError, Value};
use crate::capability::HostState;
use crate::runtime::wit::{since_v0_1, since_v0_2};

/// Links the `sql` interface of every supported version.
pub fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    since_v0_1::sql::add_to_linker::<HostState, HasSelf<SqlCall>>(linker, |state| {
        &mut state.caps.sql
    })?;
    since_v0_2::sql::add_to_linker::<HostState, HasSelf<SqlCall>>(linker, |state| {
        &mut state.caps.sql
    })
}

/// The host trait and the conversions of one version's `sql` module.
macro_rules! sql_version {
    ($v:ident) => {
        impl $v::Host for SqlCall {
            async fn query(
                &mut self,
                statement: String,
                params: Vec<$v::Value>,
            ) -> wasmtime::Result<Result<$v::RowSet, $v::SqlError>> {
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
                params: Vec<$v::Value>,
            ) -> wasmtime::Result<Result<u64, $v::SqlError>> {
                let params = params.into_iter().map(Value::from).collect();
                Ok(self
                    .within_deadline(async |sql| sql.execute(&statement, params).await)
                    .await
                    .map_err(Into::into))
            }
        }

        impl From<$v::Value> for Value {
            fn from(v: $v::Value) -> Self {
                use $v::Value as V;
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

        impl From<Value> for $v::Value {
            fn from(v: Value) -> Self {
                use $v::Value as V;
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

        impl From<RowSet> for $v::RowSet {
            fn from(set: RowSet) -> Self {
                $v::RowSet {
                    columns: set
                        .columns
                        .into_iter()
                        .map(|Column { name, type_name }| $v::Column { name, type_name })
                        .collect(),
                    rows: set
                        .rows
                        .into_iter()
                        .map(|row| row.into_iter().map(Into::into).collect())
                        .collect(),
                }
            }
        }

        impl From<SqlError> for $v::SqlError {
            fn from(e: SqlError) -> Self {
                match e {
                    SqlError::Denied(m) => $v::SqlError::Denied(m),
                    SqlError::Timeout => $v::SqlError::Timeout,
                    SqlError::TooLarge(m) => $v::SqlError::TooLarge(m),
                    SqlError::Db(DbError {
                        code,
                        message,
                        detail,
                    }) => $v::SqlError::Db($v::DbError {
                        code,
                        message,
                        detail,
                    }),
                    SqlError::Unavailable(m) => $v::SqlError::Unavailable(m),
                }
            }
        }
    };
}

mod v0_1 {
    use super::*;
    use crate::runtime::wit::since_v0_1::sql as version;
    sql_version!(version);
}

mod v0_2 {
    use super::*;
    use crate::runtime::wit::since_v0_2::sql as version;
    sql_version!(version);
}
