//! The `state` interface: per-plugin JSON values by (scope, key), stored in the
//! plugin's own schema (`plugin_<name>.assay_state`, created and owned by the
//! engine, see `capability::sql::sandbox`) and written inside the call's transaction, so
//! they roll back with it. Each plugin has a table of its own: no plugin can
//! see, lock, fill or slow down another's state, even with SQL of its own.
//! Values are bounded by the table's own constraint (which the plugin, not
//! owning the table, cannot drop) and read through the same capped result
//! path as plugin queries.

use std::sync::Arc;

use wasmtime::component::{HasData, Linker};

use super::sql::SqlCall;
use super::sql::sandbox::{MAX_STATE_VALUE_BYTES, STATE_TABLE, quote_ident, schema_name};
use super::sql::types::{SqlError, Value};
use super::{Capability, HostState, RegisterError, Registration, Start, StartError};
use crate::runtime::call::{CallCore, CallEnd};
use crate::runtime::wit::{since_v0_1, since_v0_2};

/// Why a state operation failed (the capability's own; each contract
/// version converts it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateError {
    /// The scope, key or value is not acceptable.
    Invalid(String),
    /// The database is unavailable.
    Unavailable(String),
    /// It failed otherwise.
    Failed(String),
}

/// The state capability, set up for the engine. It keeps nothing of its own
/// between calls: values live in the plugin's schema and go through the
/// call's SQL transaction.
pub struct State;

/// What state keeps for one plugin: its table, as SQL.
pub struct StatePlugin {
    table: Arc<str>,
}

/// One call's state: the plugin's table (its statements run in the call's
/// SQL session).
pub struct StateCall {
    table: Option<Arc<str>>,
}

impl CallEnd for StateCall {
    async fn abandon(&mut self) {}

    async fn finish(&mut self, _keep: bool) -> Result<(), crate::runtime::call::CallFailure> {
        // Written in the SQL capability's transaction, which ends first.
        Ok(())
    }
}

impl Capability for State {
    type Plugin = StatePlugin;
    type Call = StateCall;

    async fn start(_start: &Start<'_>) -> Result<Self, StartError> {
        Ok(State)
    }

    async fn register(&self, plugin: &Registration<'_>) -> Result<StatePlugin, RegisterError> {
        // The table itself is made with the plugin's schema (see `sql::sandbox`).
        Ok(StatePlugin {
            table: format!(
                "{}.{STATE_TABLE}",
                quote_ident(&schema_name(&plugin.identity.name))
            )
            .into(),
        })
    }

    fn call(&self, plugin: &StatePlugin, _call: &CallCore) -> StateCall {
        StateCall {
            table: Some(Arc::clone(&plugin.table)),
        }
    }

    fn detached(_call: &CallCore) -> StateCall {
        StateCall { table: None }
    }

    fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        fn view(state: &mut HostState) -> StateView<'_> {
            StateView {
                sql: &mut state.caps.sql,
                table: state.caps.state.table.clone(),
            }
        }
        since_v0_1::state::add_to_linker::<HostState, StateData>(linker, view)?;
        since_v0_2::state::add_to_linker::<HostState, StateData>(linker, view)
    }
}

/// What a state call works with: the plugin's table and the call's SQL.
pub struct StateView<'a> {
    sql: &'a mut SqlCall,
    table: Option<Arc<str>>,
}

struct StateData;

impl HasData for StateData {
    type Data<'a> = StateView<'a>;
}

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

impl StateView<'_> {
    /// The plugin's state table, as SQL.
    fn state_table(&self) -> Result<&str, StateError> {
        self.table.as_deref().ok_or_else(|| {
            // As the SQL session says when a call may not use the database.
            StateError::Failed("the database is not available in this call".into())
        })
    }

    /// One of the state interface's own statements, in the call's
    /// transaction, bounded by its deadline; its rows.
    async fn state_query(
        &mut self,
        statement: &str,
        params: Vec<Value>,
    ) -> Result<Vec<Vec<Value>>, StateError> {
        let result = self
            .sql
            .within_deadline(async |sql| sql.host_query(statement, params).await)
            .await;
        self.sql.session().note(&result);
        result.map(|set| set.rows).map_err(to_state_error)
    }
}

impl StateView<'_> {
    async fn get(&mut self, scope: String, key: String) -> Result<Option<String>, StateError> {
        {
            check_name("scope", &scope)?;
            check_name("key", &key)?;
            // Bounded here too, not only by the table's constraint: the plugin
            // owns its schema, so it can drop the engine's table and put one
            // of its own in its place.
            let statement = format!(
                "SELECT CASE WHEN octet_length(value::text) <= {MAX_VALUE_BYTES} THEN value::text END,
                        octet_length(value::text)::int8
                 FROM {} WHERE scope = $1 AND key = $2",
                self.state_table()?
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
    }

    async fn set(&mut self, scope: String, key: String, value: String) -> Result<(), StateError> {
        {
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
            if crate::db::nul_in_json(&json, "value").is_some() {
                return Err(StateError::Invalid(
                    "value contains a NUL character (\\u0000), which PostgreSQL cannot store in JSON"
                        .into(),
                ));
            }
            let statement = format!(
                "INSERT INTO {} (scope, key, value) VALUES ($1, $2, $3) \
                 ON CONFLICT (scope, key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()",
                self.state_table()?
            );
            self.state_query(
                &statement,
                vec![
                    Value::Text(scope),
                    Value::Text(key),
                    Value::Json(json.to_string()),
                ],
            )
            .await?;
            Ok(())
        }
    }

    async fn delete(&mut self, scope: String, key: String) -> Result<bool, StateError> {
        {
            check_name("scope", &scope)?;
            check_name("key", &key)?;
            let statement = format!(
                "DELETE FROM {} WHERE scope = $1 AND key = $2 RETURNING 1",
                self.state_table()?
            );
            let rows = self
                .state_query(&statement, vec![Value::Text(scope), Value::Text(key)])
                .await?;
            Ok(!rows.is_empty())
        }
    }

    async fn list_keys(
        &mut self,
        scope: String,
        prefix: String,
    ) -> Result<Vec<String>, StateError> {
        {
            check_name("scope", &scope)?;
            // starts_with instead of LIKE: a prefix containing % or _ means itself.
            let statement = format!(
                "SELECT key FROM {} WHERE scope = $1 AND starts_with(key, $2) ORDER BY key LIMIT {MAX_LISTED_KEYS}",
                self.state_table()?
            );
            let rows = self
                .state_query(&statement, vec![Value::Text(scope), Value::Text(prefix)])
                .await?;
            Ok(rows
                .iter()
                .filter_map(|row| row.first().and_then(text))
                .collect())
        }
    }
}

/// The host trait and error conversion of one version's `state` module
/// (every version so far has 0.1's interface).
macro_rules! state_version {
    ($v:ident) => {
        impl $v::Host for StateView<'_> {
            async fn get(
                &mut self,
                scope: String,
                key: String,
            ) -> wasmtime::Result<Result<Option<String>, $v::StateError>> {
                Ok(StateView::get(self, scope, key).await.map_err(Into::into))
            }

            async fn set(
                &mut self,
                scope: String,
                key: String,
                value: String,
            ) -> wasmtime::Result<Result<(), $v::StateError>> {
                Ok(StateView::set(self, scope, key, value)
                    .await
                    .map_err(Into::into))
            }

            async fn delete(
                &mut self,
                scope: String,
                key: String,
            ) -> wasmtime::Result<Result<bool, $v::StateError>> {
                Ok(StateView::delete(self, scope, key)
                    .await
                    .map_err(Into::into))
            }

            async fn list_keys(
                &mut self,
                scope: String,
                prefix: String,
            ) -> wasmtime::Result<Result<Vec<String>, $v::StateError>> {
                Ok(StateView::list_keys(self, scope, prefix)
                    .await
                    .map_err(Into::into))
            }
        }

        impl From<StateError> for $v::StateError {
            fn from(e: StateError) -> Self {
                match e {
                    StateError::Invalid(m) => $v::StateError::Invalid(m),
                    StateError::Unavailable(m) => $v::StateError::Unavailable(m),
                    StateError::Failed(m) => $v::StateError::Failed(m),
                }
            }
        }
    };
}

mod v0_1 {
    use super::*;
    use crate::runtime::wit::since_v0_1::state as version;
    state_version!(version);
}

mod v0_2 {
    use super::*;
    use crate::runtime::wit::since_v0_2::state as version;
    state_version!(version);
}
