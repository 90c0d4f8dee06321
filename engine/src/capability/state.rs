//! The `state` interface: per-plugin JSON values by (scope, key), stored in
//! `assay.plugin_state` and written inside the call's transaction, so they roll
//! back with it. The host supplies the plugin's name, and the table's row-level
//! security lets each plugin role see only its own rows, so a plugin cannot see
//! another's state even with SQL of its own.

use crate::runtime::bindings::sql::SqlError;
use crate::runtime::bindings::state::{self, StateError};
use crate::runtime::call::CallState;

/// Longest scope or key accepted (matches the CHECK constraints of the table).
pub const MAX_NAME_CHARS: usize = 256;
/// Largest JSON value accepted, in bytes.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;

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
        SqlError::Db(db) => StateError::Failed(format!("{} ({})", db.message, db.code)),
    }
}

impl CallState {
    async fn state_query(
        &mut self,
        statement: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, StateError> {
        // Connecting and the statement both count against the call's deadline.
        let result = self
            .within_deadline(async |sql| {
                let conn = sql.connection().await?;
                conn.client
                    .query(statement, params)
                    .await
                    .map_err(crate::capability::sql::session::to_sql_error)
            })
            .await;
        self.sql.note(&result);
        result.map_err(to_state_error)
    }
}

impl state::Host for CallState {
    async fn get(
        &mut self,
        scope: String,
        key: String,
    ) -> wasmtime::Result<Result<Option<String>, StateError>> {
        let plugin = self.plugin.name.clone();
        Ok(async {
            check_name("scope", &scope)?;
            check_name("key", &key)?;
            let rows = self
                .state_query(
                    "SELECT value::text FROM assay.plugin_state WHERE plugin = $1 AND scope = $2 AND key = $3",
                    &[&plugin, &scope, &key],
                )
                .await?;
            Ok(rows.first().map(|row| row.get::<_, String>(0)))
        }
        .await)
    }

    async fn set(
        &mut self,
        scope: String,
        key: String,
        value: String,
    ) -> wasmtime::Result<Result<(), StateError>> {
        let plugin = self.plugin.name.clone();
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
            self.state_query(
                "INSERT INTO assay.plugin_state (plugin, scope, key, value) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (plugin, scope, key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()",
                &[&plugin, &scope, &key, &json],
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
        let plugin = self.plugin.name.clone();
        Ok(async {
            check_name("scope", &scope)?;
            check_name("key", &key)?;
            let rows = self
                .state_query(
                    "DELETE FROM assay.plugin_state WHERE plugin = $1 AND scope = $2 AND key = $3 RETURNING 1",
                    &[&plugin, &scope, &key],
                )
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
        let plugin = self.plugin.name.clone();
        Ok(async {
            check_name("scope", &scope)?;
            // starts_with instead of LIKE: a prefix containing % or _ means itself.
            let rows = self
                .state_query(
                    "SELECT key FROM assay.plugin_state WHERE plugin = $1 AND scope = $2 AND starts_with(key, $3) \
                     ORDER BY key LIMIT 10000",
                    &[&plugin, &scope, &prefix],
                )
                .await?;
            Ok(rows.iter().map(|row| row.get::<_, String>(0)).collect())
        }
        .await)
    }
}
