//! A plugin's migrations (the statements in its manifest), applied when it
//! loads: once each, in order, recorded in `plugin_<name>.assay_migrations`.
//!
//! They run under exactly the containment of the plugin's calls, because they
//! are the plugin's SQL as much as its calls are: on its own connection as its
//! own role, through the statement gate, each statement under its
//! `statement_timeout`, all of them in one transaction under its call deadline
//! (`limits.call_timeout_ms`; cancelled on the server past it), and the session
//! reset afterwards. A migration that sleeps, takes locks and waits, or asks
//! for what the gate refuses fails the load of that version with the reason;
//! the transaction rolls back, so the record and the change never part. The
//! engine then re-asserts the role's attributes, password and session
//! defaults, which a role may change for itself (see `capability::sql::sandbox`).

use std::time::Duration;

use super::SqlSession;
use super::types::{SqlError, Value};
use crate::capability::sql::sandbox::{MIGRATIONS_TABLE, quote_ident};
use crate::runtime::loader::sha256_hex;
use crate::runtime::plugin::Migration;

/// Why a plugin's migrations were not applied: which one and why, naming
/// the limit when one was hit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MigrationFailed(pub String);

/// Applies the migrations not yet applied; returns how many were. The error
/// says which migration failed and why, naming the limit when one was hit.
pub async fn apply(
    session: &mut SqlSession,
    plugin: &str,
    schema: &str,
    migrations: &[Migration],
    deadline: Duration,
) -> Result<usize, MigrationFailed> {
    let statement_timeout = session.caps().statement_timeout;
    let outcome = tokio::time::timeout(
        deadline,
        apply_pending(session, plugin, schema, migrations, statement_timeout),
    )
    .await;
    match outcome {
        Ok(Ok(applied)) => {
            session.finish(true).await.map_err(|e| {
                MigrationFailed(format!("its migrations could not be committed: {e}"))
            })?;
            Ok(applied)
        }
        Ok(Err(message)) => {
            let _ = session.finish(false).await;
            Err(MigrationFailed(message))
        }
        Err(_) => {
            session.abandon_statement().await;
            let _ = session.finish(false).await;
            Err(MigrationFailed(format!(
                "its migrations ran past the plugin's deadline of {} ms (limits.call_timeout_ms; \
                 raise it in [limits.plugins.{plugin}] for a migration that needs longer); \
                 none of them was applied",
                deadline.as_millis()
            )))
        }
    }
}

async fn apply_pending(
    session: &mut SqlSession,
    plugin: &str,
    schema: &str,
    migrations: &[Migration],
    statement_timeout: Duration,
) -> Result<usize, String> {
    let table = format!("{}.{MIGRATIONS_TABLE}", quote_ident(schema));
    let host = |e: SqlError| {
        format!(
            "cannot read its migration record: {}",
            describe(&e, statement_timeout)
        )
    };
    // Two engines loading the plugin at once apply its migrations one after
    // the other. The table is the plugin's own: locking it holds up no one else.
    session
        .host_execute(&format!("LOCK TABLE {table} IN EXCLUSIVE MODE"), vec![])
        .await
        .map_err(host)?;
    let applied: Vec<(i64, String)> = session
        .host_query(
            &format!("SELECT version::int8, sha256 FROM {table}"),
            vec![],
        )
        .await
        .map_err(host)?
        .rows
        .into_iter()
        .filter_map(|row| match row.as_slice() {
            [Value::Int(version), Value::Text(sha)] => Some((*version, sha.clone())),
            _ => None,
        })
        .collect();
    let mut pending: Vec<&Migration> = migrations.iter().collect();
    pending.sort_by_key(|m| m.version);
    let mut count = 0;
    for migration in pending {
        let version = i64::from(migration.version);
        let sha = sha256_hex(migration.statement.as_bytes());
        match applied.iter().find(|(v, _)| *v == version) {
            Some((_, applied_sha)) if *applied_sha == sha => continue,
            Some(_) => {
                return Err(format!(
                    "migration {version} ({}) differs from the one already applied; \
                     never edit a released migration, add a new version instead",
                    migration.description
                ));
            }
            None => {}
        }
        // Through the gate and the caps, like any statement of the plugin's.
        session
            .execute(&migration.statement, vec![])
            .await
            .map_err(|e| {
                format!(
                    "migration {version} ({}) failed: {}",
                    migration.description,
                    describe(&e, statement_timeout)
                )
            })?;
        session
            .host_execute(
                &format!("INSERT INTO {table} (version, description, sha256) VALUES ($1, $2, $3)"),
                vec![
                    Value::Int(version),
                    Value::Text(migration.description.clone()),
                    Value::Text(sha),
                ],
            )
            .await
            .map_err(host)?;
        tracing::info!(plugin, version, description = %migration.description, "applied plugin migration");
        count += 1;
    }
    Ok(count)
}

/// A statement's failure in words, naming the limit it hit.
fn describe(e: &SqlError, statement_timeout: Duration) -> String {
    match e {
        SqlError::Denied(m) => format!("refused by the statement gate: {m}"),
        SqlError::Timeout => format!(
            "it ran past the statement timeout of {} ms (limits.statement_timeout_ms)",
            statement_timeout.as_millis()
        ),
        SqlError::TooLarge(m) => m.clone(),
        SqlError::Db(db) => format!("{} (SQLSTATE {})", db.message, db.code),
        SqlError::Unavailable(m) => m.clone(),
    }
}
