//! The engine's schema: the numbered SQL files in `migrations/`, embedded in the
//! binary and applied by refinery, which records them in
//! `assay.refinery_schema_history`.

use super::{Database, DbError};

mod embedded {
    refinery::embed_migrations!("../migrations");
}

/// Any fixed number works; it only has to be the same for every assay process so
/// that two of them starting at once apply migrations one after the other.
const MIGRATION_LOCK_KEY: i64 = 0x6173_7361_795f_6d69; // "assay_mi"

/// Applies the embedded migrations `runner` targets, recorded in assay's own
/// schema, on `client`.
async fn apply(
    client: &mut tokio_postgres::Client,
    runner: refinery::Runner,
) -> Result<refinery::Report, DbError> {
    // refinery creates its history table before running V1, so the schema it
    // lives in must exist first.
    client
        .batch_execute("CREATE SCHEMA IF NOT EXISTS assay")
        .await
        .map_err(DbError::query("creating the assay schema"))?;
    let mut runner = runner;
    runner.set_migration_table_name("assay.refinery_schema_history");
    runner
        .run_async(client)
        .await
        .map_err(|e| DbError::Migrate(e.to_string()))
}

/// Applies every migration not yet applied. Safe to run from several processes at once.
pub async fn run(db: &Database) -> Result<Vec<String>, DbError> {
    let mut conn = db.connection().await?;
    conn.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await
        .map_err(DbError::query("waiting for the migration lock"))?;
    let result: Result<Vec<String>, DbError> = async {
        let report = apply(&mut conn, embedded::migrations::runner()).await?;
        Ok(report
            .applied_migrations()
            .iter()
            .map(|m| m.to_string())
            .collect())
    }
    .await;
    let unlock = conn
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_KEY])
        .await;
    let applied: Vec<String> = result?;
    unlock.map_err(DbError::query("releasing the migration lock"))?;
    for name in &applied {
        tracing::info!(migration = %name, "applied migration");
    }
    Ok(applied)
}

/// Applies the migrations up to and including `version` on `client`, as an
/// older engine would have left the database: for tests of upgrading one. The
/// engine itself only ever uses [`run`].
#[doc(hidden)]
pub async fn run_up_to(client: &mut tokio_postgres::Client, version: i32) -> Result<(), DbError> {
    let runner = embedded::migrations::runner().set_target(refinery::Target::Version(version));
    apply(client, runner).await.map(drop)
}
