//! Server extensions offered to plugins, where the server has them:
//! `pg_trgm`'s similarity functions and `pgvector`'s vector type with its
//! distances.
//!
//! They live in a schema of their own, `assay_extensions`, owned by the
//! engine: PUBLIC may use the schema and call exactly the functions listed in
//! [`OFFERED`] (pure functions of their arguments), nothing else of an
//! extension. The schema is not on any plugin's `search_path`, so a plugin
//! names them in full (`assay_extensions.similarity(a, b)`,
//! `x::assay_extensions.vector`).
//!
//! A server without an extension, an engine role that may not create it, or
//! an extension already installed in another schema (where plugins cannot
//! reach it) is not an error: plugins then do without, and the reason is a
//! start-up warning.
//!
//! Each extension is installed on its own, and revokes only its own
//! functions from PUBLIC: one added at a later start (pgvector after an
//! upgrade of the server, say) leaves the grants of those installed before
//! as they were.

use crate::db::{Database, DbError};

/// The schema extensions are installed into.
pub const SCHEMA: &str = "assay_extensions";

/// An extension offered to plugins.
pub struct Offered {
    /// Its name in `pg_available_extensions`.
    pub extension: &'static str,
    /// The functions of it plugins may call, with their argument types;
    /// `{s}` stands for [`SCHEMA`] (types of the extension live there too).
    pub functions: &'static [&'static str],
    /// What plugins go without where it cannot be offered.
    pub without: &'static str,
    /// Where the server gets it.
    pub from: &'static str,
    /// Whether a server without it is worth a warning at every start (one
    /// that is usually there), or only an informational line (one that
    /// most servers lack).
    pub expected: bool,
}

/// What is offered.
pub const OFFERED: &[Offered] = &[
    Offered {
        extension: "pg_trgm",
        functions: &["similarity(text, text)", "word_similarity(text, text)"],
        without: "trigram similarity",
        from: "the server's contrib package",
        expected: true,
    },
    Offered {
        extension: "vector",
        // The type's input and output (a cast from text or to it checks
        // them), the casts between `real[]` and `vector` and to a vector of
        // given dimensions, and the distances with their operators (`<=>`,
        // `<->`, `<#>`). All are pure: no setting, no table, no file.
        functions: &[
            "vector_in(cstring, oid, integer)",
            "vector_out({s}.vector)",
            "vector_typmod_in(cstring[])",
            "vector_recv(internal, oid, integer)",
            "vector_send({s}.vector)",
            "array_to_vector(real[], integer, boolean)",
            "vector_to_float4({s}.vector, integer, boolean)",
            "vector({s}.vector, integer, boolean)",
            "cosine_distance({s}.vector, {s}.vector)",
            "l2_distance({s}.vector, {s}.vector)",
            "inner_product({s}.vector, {s}.vector)",
            "vector_negative_inner_product({s}.vector, {s}.vector)",
            "vector_dims({s}.vector)",
            "vector_norm({s}.vector)",
        ],
        without: "pgvector (embeddings are compared as arrays instead)",
        from: "pgvector, built for the server's PostgreSQL version",
        expected: false,
    },
];

/// Installs what is offered where the server has it; warnings for what could
/// not be, each saying what to do (an optional extension the server lacks is
/// only logged, at info level).
pub async fn offer(db: &Database) -> Result<Vec<String>, DbError> {
    offer_these(db, OFFERED).await
}

/// [`offer`] for a chosen list (tests offer one extension, then the rest).
pub async fn offer_these(db: &Database, offered: &[Offered]) -> Result<Vec<String>, DbError> {
    let mut warnings = Vec::new();
    for one in offered {
        if let Some(warning) = offer_one(db, one).await? {
            warnings.push(warning);
        }
    }
    Ok(warnings)
}

async fn offer_one(db: &Database, offered: &Offered) -> Result<Option<String>, DbError> {
    let Offered {
        extension,
        without,
        from,
        ..
    } = offered;
    let conn = db.connection().await?;
    let available = conn
        .query_opt(
            "SELECT e.extnamespace::regnamespace::text
             FROM pg_available_extensions a
             LEFT JOIN pg_extension e ON e.extname = a.name
             WHERE a.name = $1",
            &[extension],
        )
        .await
        .map_err(DbError::query("looking for server extensions"))?;
    let installed_in: Option<String> = match available {
        None => {
            let absent = format!(
                "the server has no {extension} extension: plugins get no {without} (install {from})"
            );
            if offered.expected {
                return Ok(Some(absent));
            }
            tracing::info!("{absent}");
            return Ok(None);
        }
        Some(row) => row.get(0),
    };
    match installed_in.as_deref() {
        // Installed and offered at an earlier start: nothing to do.
        Some(SCHEMA) => return Ok(None),
        Some(schema) => {
            return Ok(Some(format!(
                "{extension} is installed in schema {schema}, which plugins cannot reach: plugins get no {without} (run `ALTER EXTENSION {extension} SET SCHEMA {SCHEMA}` as its owner)"
            )));
        }
        None => {}
    }
    drop(conn);
    // All of it or none, under the provisioning lock, so that two engines
    // starting on one database do not race to install it.
    let mut conn = db.connection().await?;
    let tx = super::sandbox::begin_provisioning(&mut conn).await?;
    let installed = async {
        tx.batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {SCHEMA};
             REVOKE ALL ON SCHEMA {SCHEMA} FROM PUBLIC;
             GRANT USAGE ON SCHEMA {SCHEMA} TO PUBLIC;
             CREATE EXTENSION IF NOT EXISTS {extension} WITH SCHEMA {SCHEMA}"
        ))
        .await?;
        // Its own functions, as `regprocedure` spells them (quoted where
        // needed): PUBLIC may execute every new function by default.
        let own: Vec<String> = tx
            .query(
                "SELECT p.oid::regprocedure::text
                 FROM pg_depend d JOIN pg_proc p ON p.oid = d.objid
                 WHERE d.classid = 'pg_proc'::regclass AND d.deptype = 'e'
                   AND d.refclassid = 'pg_extension'::regclass
                   AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = $1)",
                &[extension],
            )
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect();
        let mut grants: Vec<String> = own
            .iter()
            .map(|f| format!("REVOKE EXECUTE ON FUNCTION {f} FROM PUBLIC"))
            .collect();
        grants.extend(offered.functions.iter().map(|f| {
            format!(
                "GRANT EXECUTE ON FUNCTION {SCHEMA}.{} TO PUBLIC",
                f.replace("{s}", SCHEMA)
            )
        }));
        tx.batch_execute(&grants.join(";\n")).await?;
        tx.commit().await
    }
    .await;
    if let Err(e) = installed {
        return Ok(Some(format!(
            "could not install {extension} into {SCHEMA} ({}): plugins get no {without} (run `CREATE EXTENSION {extension} WITH SCHEMA {SCHEMA}` as a superuser, then restart)",
            crate::db::pg_message(&e)
        )));
    }
    Ok(None)
}
