//! Server extensions offered to plugins: `pg_trgm`'s similarity functions,
//! where the server has the extension.
//!
//! They live in a schema of their own, `assay_extensions`, owned by the
//! engine: PUBLIC may use the schema and call exactly the functions listed in
//! [`OFFERED`] (pure functions of their arguments), nothing else of the
//! extension. The schema is not on any plugin's `search_path`, so a plugin
//! names them in full (`assay_extensions.similarity(a, b)`).
//!
//! A server without the extension, an engine role that may not create it,
//! or an extension already installed in another schema (where plugins cannot
//! reach it) is not an error: plugins then do without, and the reason is a
//! start-up warning.
//!
//! `pgvector` is not offered: it is not packaged for the PostgreSQL this is
//! built and tested against, and what cannot be tested is not offered.
//! Embeddings are kept as `real[]` and compared in SQL.

use crate::db::{Database, DbError};

/// The schema extensions are installed into.
pub const SCHEMA: &str = "assay_extensions";

/// The extension, and the functions of it plugins may call.
pub const OFFERED: (&str, &[&str]) = (
    "pg_trgm",
    &["similarity(text, text)", "word_similarity(text, text)"],
);

/// Installs what is offered where the server has it; warnings for what could
/// not be, each saying what to do.
pub async fn offer(db: &Database) -> Result<Vec<String>, DbError> {
    let (extension, functions) = OFFERED;
    let conn = db.connection().await?;
    let available = conn
        .query_opt(
            "SELECT e.extnamespace::regnamespace::text
             FROM pg_available_extensions a
             LEFT JOIN pg_extension e ON e.extname = a.name
             WHERE a.name = $1",
            &[&extension],
        )
        .await
        .map_err(DbError::query("looking for server extensions"))?;
    let installed_in: Option<String> = match available {
        None => {
            return Ok(vec![format!(
                "the server has no {extension} extension: plugins get no trigram similarity (install the server's contrib package)"
            )]);
        }
        Some(row) => row.get(0),
    };
    match installed_in.as_deref() {
        // Installed and offered at an earlier start: nothing to do.
        Some(SCHEMA) => return Ok(Vec::new()),
        Some(schema) => {
            return Ok(vec![format!(
                "{extension} is installed in schema {schema}, which plugins cannot reach: plugins get no trigram similarity (run `ALTER EXTENSION {extension} SET SCHEMA {SCHEMA}` as its owner)"
            )]);
        }
        None => {}
    }
    let grants: Vec<String> = functions
        .iter()
        .map(|f| format!("GRANT EXECUTE ON FUNCTION {SCHEMA}.{f} TO PUBLIC"))
        .collect();
    let install = format!(
        "CREATE SCHEMA IF NOT EXISTS {SCHEMA};
         REVOKE ALL ON SCHEMA {SCHEMA} FROM PUBLIC;
         GRANT USAGE ON SCHEMA {SCHEMA} TO PUBLIC;
         CREATE EXTENSION IF NOT EXISTS {extension} WITH SCHEMA {SCHEMA};
         REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA {SCHEMA} FROM PUBLIC;
         {};",
        grants.join(";\n")
    );
    drop(conn);
    // All of it or none, under the provisioning lock, so that two engines
    // starting on one database do not race to install it.
    let mut conn = db.connection().await?;
    let tx = super::sandbox::begin_provisioning(&mut conn).await?;
    let installed = match tx.batch_execute(&install).await {
        Ok(()) => tx.commit().await,
        Err(e) => Err(e),
    };
    if let Err(e) = installed {
        return Ok(vec![format!(
            "could not install {extension} into {SCHEMA} ({}): plugins get no trigram similarity (run `CREATE EXTENSION {extension} WITH SCHEMA {SCHEMA}` as a superuser, then restart)",
            crate::db::pg_message(&e)
        )]);
    }
    Ok(Vec::new())
}
