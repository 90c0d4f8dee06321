//! The SQL capability's own types: what its core (session, values, gate,
//! migrations) speaks, whatever contract version a plugin was built against.
//! Each version converts at its edge ([`super::host`]).

/// A value passed to or read from PostgreSQL.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// `boolean`.
    Boolean(bool),
    /// Any integer type.
    Int(i64),
    /// `float4`/`float8`.
    Float(f64),
    /// `numeric`, as its text.
    Numeric(String),
    /// Text types.
    Text(String),
    /// `bytea`.
    Bytes(Vec<u8>),
    /// `json`/`jsonb`, as its text.
    Json(String),
    /// `uuid`, as its text.
    Uuid(String),
    /// `timestamptz`, microseconds since the epoch.
    Timestamptz(i64),
    /// `timestamp`, microseconds since the epoch.
    Timestamp(i64),
    /// `date`, days since the epoch.
    Date(i32),
    /// `text[]`.
    TextArray(Vec<Option<String>>),
    /// `int8[]` (and other integer arrays).
    IntArray(Vec<Option<i64>>),
}

/// A result column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Its name.
    pub name: String,
    /// Its PostgreSQL type's name.
    pub type_name: String,
}

/// A query's result.
#[derive(Debug, Clone, PartialEq)]
pub struct RowSet {
    /// The columns.
    pub columns: Vec<Column>,
    /// The rows, each a value per column.
    pub rows: Vec<Vec<Value>>,
}

/// An error the server reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbError {
    /// SQLSTATE.
    pub code: String,
    /// The server's message.
    pub message: String,
    /// Its detail, if any.
    pub detail: Option<String>,
}

/// Why a statement did not run (or did not return).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqlError {
    /// Refused by the host (the gate, a cap).
    Denied(String),
    /// Ran past its time.
    Timeout,
    /// The result was larger than the caps allow.
    TooLarge(String),
    /// The server refused it.
    Db(DbError),
    /// The database could not be reached.
    Unavailable(String),
}
