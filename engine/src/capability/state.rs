//! The `state` interface: per-plugin JSON values by (scope, key), stored in the
//! plugin's own schema (`plugin_<name>.assay_state`, created and owned by the
//! engine, see `db::sandbox`) and written inside the call's transaction, so
//! they roll back with it. Each plugin has a table of its own: no plugin can
//! see, lock, fill or slow down another's state, even with SQL of its own.
//! Values are bounded by the table's own constraint (which the plugin, not
//! owning the table, cannot drop) and read through the same capped result
//! path as plugin queries.

use crate::db::sandbox::{MAX_STATE_VALUE_BYTES, STATE_TABLE, quote_ident, schema_name};
use crate::runtime::bindings::sql::{SqlError, Value};
use crate::runtime::bindings::state::{self, StateError};
use crate::runtime::call::CallState;

/// Longest scope or key accepted (matches the CHECK constraints of the table).
pub const MAX_NAME_CHARS: usize = 256;
/// Largest JSON value accepted, in bytes.
pub const MAX_VALUE_BYTES: usize = MAX_STATE_VALUE_BYTES;
/// Most keys `list-keys` returns.
pub const MAX_LISTED_KEYS: usize = 10_000;

fn check_name(what: &str, name: &str) -> Result<(), StateError> {
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(StateError::Invalid(format!(
            "{what} must be 1 to {MAX_NAME_CHARS} characters, got {}",
            name.chars().count()
        )));
    }
    Ok(())
}

fn to_state_error(e: SqlError) -> StateError {
    match e {
        SqlError::Unavailable(m) => StateError::Unavailable(m),
        SqlError::Timeout => StateError::Failed("timed out".into()),
        SqlError::Denied(m) | SqlError::TooLarge(m) => StateError::Failed(m),
        // check_violation on the value's size: the stored text is larger than the input.
        SqlError::Db(db) if db.code == "23514" && db.message.contains("value") => {
            StateError::Invalid(format!(
                "the value is larger than {MAX_VALUE_BYTES} bytes once stored as JSON"
            ))
        }
        SqlError::Db(db) => StateError::Failed(format!("{} ({})", db.message, db.code)),
    }
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::Text(s) => Some(s.clone()),
        _ => None,
    }
}

impl CallState {
    /// The plugin's state table, as SQL.
    fn state_table(&self) -> String {
        format!(
            "{}.{STATE_TABLE}",
            quote_ident(&schema_name(&self.plugin.name))
        )
    }

    /// One of the state interface's own statements, in the call's
    /// transaction, bounded by its deadline; its rows.
    async fn state_query(
        &mut self,
        statement: &str,
        params: Vec<Value>,
    ) -> Result<Vec<Vec<Value>>, StateError> {
        let result = self
            .within_deadline(async |sql| sql.host_query(statement, params).await)
            .await;
        self.sql.note(&result);
        result.map(|set| set.rows).map_err(to_state_error)
    }
}

impl state::Host for CallState {
    async fn get(
        &mut self,
        scope: String,
        key: String,
    ) -> wasmtime::Result<Result<Option<String>, StateError>> {
        Ok(async {
            check_name("scope", &scope)?;
            check_name("key", &key)?;
            // Bounded here too, not only by the table's constraint: the plugin
            // owns its schema, so it can drop the engine's table and put one
            // of its own in its place.
            let statement = format!(
                "SELECT CASE WHEN octet_length(value::text) <= {MAX_VALUE_BYTES} THEN value::text END,
                        octet_length(value::text)::int8
                 FROM {} WHERE scope = $1 AND key = $2",
                self.state_table()
            );
            let rows = self
                .state_query(&statement, vec![Value::Text(scope), Value::Text(key)])
                .await?;
            match rows.first().map(Vec::as_slice) {
                None => Ok(None),
                Some([Value::Text(value), _]) => Ok(Some(value.clone())),
                Some([_, Value::Int(size)]) => Err(StateError::Failed(format!(
                    "the stored value is {size} bytes, more than the {MAX_VALUE_BYTES} a state value may have; \
                     it was not written through the state interface"
                ))),
                Some(_) => Err(StateError::Failed(
                    "the plugin's state table does not hold what the engine made it for".into(),
                )),
            }
        }
        .await)
    }

    async fn set(
        &mut self,
        scope: String,
        key: String,
        value: String,
    ) -> wasmtime::Result<Result<(), StateError>> {
        Ok(async {
            check_name("scope", &scope)?;
            check_name("key", &key)?;
            if value.len() > MAX_VALUE_BYTES {
                return Err(StateError::Invalid(format!(
                    "value is {} bytes; the limit is {MAX_VALUE_BYTES}",
                    value.len()
                )));
            }
            let json: serde_json::Value = serde_json::from_str(&value)
                .map_err(|e| StateError::Invalid(format!("value is not valid JSON: {e}")))?;
            if crate::pipeline::input::nul_in_json(&json, "value").is_some() {
                return Err(StateError::Invalid(
                    "value contains a NUL character (\\u0000), which PostgreSQL cannot store in JSON"
                        .into(),
                ));
            }
            let statement = format!(
                "INSERT INTO {} (scope, key, value) VALUES ($1, $2, $3) \
                 ON CONFLICT (scope, key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()",
                self.state_table()
            );
            self.state_query(
                &statement,
                vec![Value::Text(scope), Value::Text(key), Value::Json(json.to_string())],
            )
            .await?;
            Ok(())
        }
        .await)
    }

    async fn delete(
        &mut self,
        scope: String,
        key: String,
    ) -> wasmtime::Result<Result<bool, StateError>> {
        Ok(async {
            check_name("scope", &scope)?;
            check_name("key", &key)?;
            let statement = format!(
                "DELETE FROM {} WHERE scope = $1 AND key = $2 RETURNING 1",
                self.state_table()
            );
            let rows = self
                .state_query(&statement, vec![Value::Text(scope), Value::Text(key)])
                .await?;
            Ok(!rows.is_empty())
        }
        .await)
    }

    async fn list_keys(
        &mut self,
        scope: String,
        prefix: String,
    ) -> wasmtime::Result<Result<Vec<String>, StateError>> {
        Ok(async {
            check_name("scope", &scope)?;
            // starts_with instead of LIKE: a prefix containing % or _ means itself.
            let statement = format!(
                "SELECT key FROM {} WHERE scope = $1 AND starts_with(key, $2) ORDER BY key LIMIT {MAX_LISTED_KEYS}",
                self.state_table()
            );
            let rows = self
                .state_query(&statement, vec![Value::Text(scope), Value::Text(prefix)])
                .await?;
            Ok(rows
                .iter()
                .filter_map(|row| row.first().and_then(text))
                .collect())
        }
        .await)
    }
}
