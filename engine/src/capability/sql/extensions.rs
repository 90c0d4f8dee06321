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
//! as they were. The grants are checked again at every start, and what
//! PUBLIC may execute is asked of the server rather than assumed: see
//! [`offer_these`] for what happens when a role cannot revoke.

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

/// What became of one offered extension.
enum Outcome {
    /// Installed in [`SCHEMA`], PUBLIC may execute the listed functions and
    /// no other of it (or the server has none, said at info level).
    Offered,
    /// Not installed here, for the reason given.
    NotOffered(String),
    /// Installed in [`SCHEMA`], but PUBLIC may execute functions of it that
    /// are not listed, and this role cannot take them away.
    Exposed(String),
}

/// [`offer`] for a chosen list (tests offer one extension, then the rest).
///
/// The invariant: PUBLIC may use [`SCHEMA`] only while, of every offered
/// extension installed there, it may execute the listed functions and no
/// other. A role that does not own an extension's functions cannot revoke
/// them: a trusted extension (`pg_trgm`) that a role without superuser
/// creates belongs to the bootstrap superuser. Such an extension is not
/// installed; found already installed, it closes the schema to PUBLIC
/// (every extension in it goes) until a superuser revokes what the warning
/// names.
pub async fn offer_these(db: &Database, offered: &[Offered]) -> Result<Vec<String>, DbError> {
    let mut warnings = Vec::new();
    let mut exposed = false;
    for one in offered {
        match offer_one(db, one).await? {
            Outcome::Offered => {}
            Outcome::NotOffered(warning) => warnings.push(warning),
            Outcome::Exposed(warning) => {
                exposed = true;
                warnings.push(warning);
            }
        }
    }
    let conn = db.connection().await?;
    let schema_exists = conn
        .query_one("SELECT to_regnamespace($1) IS NOT NULL", &[&SCHEMA])
        .await
        .map_err(DbError::query("looking for the extensions' schema"))?
        .get::<_, bool>(0);
    if schema_exists {
        let usage = if exposed {
            format!("REVOKE USAGE ON SCHEMA {SCHEMA} FROM PUBLIC")
        } else {
            format!("GRANT USAGE ON SCHEMA {SCHEMA} TO PUBLIC")
        };
        if let Err(e) = conn.batch_execute(&usage).await {
            warnings.push(format!(
                "could not run `{usage}` ({}): run it as the schema's owner",
                crate::db::pg_message(&e)
            ));
        }
    }
    Ok(warnings)
}

async fn offer_one(db: &Database, offered: &Offered) -> Result<Outcome, DbError> {
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
    drop(conn);
    let installed_in: Option<String> = match available {
        None => {
            let absent = format!(
                "the server has no {extension} extension: plugins get no {without} (install {from})"
            );
            if offered.expected {
                return Ok(Outcome::NotOffered(absent));
            }
            tracing::info!("{absent}");
            return Ok(Outcome::Offered);
        }
        Some(row) => row.get(0),
    };
    let installed = match installed_in.as_deref() {
        Some(SCHEMA) => true,
        Some(schema) => {
            return Ok(Outcome::NotOffered(format!(
                "{extension} is installed in schema {schema}, which plugins cannot reach: plugins get no {without} (run `ALTER EXTENSION {extension} SET SCHEMA {SCHEMA}` as its owner)"
            )));
        }
        None => false,
    };
    // Under the provisioning lock, so that two engines starting on one
    // database do not race to install it. Run at every start, not only the
    // first: an upgrade of the extension may have added functions, which
    // PUBLIC may execute by default.
    let mut conn = db.connection().await?;
    let could_not_install = |e: tokio_postgres::Error| {
        Outcome::NotOffered(format!(
            "could not install {extension} into {SCHEMA} ({}): plugins get no {without} (run `CREATE EXTENSION {extension} WITH SCHEMA {SCHEMA}` as a superuser, then restart)",
            crate::db::pg_message(&e)
        ))
    };
    if !installed {
        // The schema first, and kept whatever becomes of the extension: the
        // engine owns it, and a superuser asked to install the extension
        // by hand installs it there.
        let tx = super::sandbox::begin_provisioning(&mut conn).await?;
        let made = async {
            tx.batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS {SCHEMA}; REVOKE ALL ON SCHEMA {SCHEMA} FROM PUBLIC"
            ))
            .await?;
            tx.commit().await
        }
        .await;
        if let Err(e) = made {
            return Ok(could_not_install(e));
        }
    }
    let tx = super::sandbox::begin_provisioning(&mut conn).await?;
    let exposed = async {
        if !installed {
            tx.batch_execute(&format!(
                "CREATE EXTENSION {extension} WITH SCHEMA {SCHEMA}"
            ))
            .await?;
        }
        let listed: Vec<String> = offered
            .functions
            .iter()
            .map(|f| format!("{SCHEMA}.{}", f.replace("{s}", SCHEMA)))
            .collect();
        // Only what needs changing: revoking from PUBLIC what this role
        // neither owns nor may execute is an error, not a no-op.
        let mut changes: Vec<String> = tx
            .query(EXPOSED_FUNCTIONS, &[extension, &listed])
            .await?
            .iter()
            .map(|row| {
                format!(
                    "REVOKE EXECUTE ON FUNCTION {} FROM PUBLIC",
                    row.get::<_, String>(0)
                )
            })
            .collect();
        let closed: Vec<String> = tx
            .query(
                "SELECT f FROM unnest($1::text[]) AS f
                 WHERE NOT has_function_privilege('public', to_regprocedure(f), 'EXECUTE')",
                &[&listed],
            )
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect();
        changes.extend(
            closed
                .iter()
                .map(|f| format!("GRANT EXECUTE ON FUNCTION {f} TO PUBLIC")),
        );
        if !changes.is_empty() {
            // A role that does not own them gets a warning from the server
            // for each, and nothing changes: checked next.
            tx.batch_execute(&changes.join(";\n")).await?;
        }
        let exposed: Vec<String> = tx
            .query(EXPOSED_FUNCTIONS, &[extension, &listed])
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect();
        if exposed.is_empty() {
            tx.commit().await?;
        }
        Ok::<_, tokio_postgres::Error>(exposed)
    }
    .await;
    let exposed = match exposed {
        Ok(exposed) => exposed,
        // Installed, but its grants cannot be checked: not offered either.
        Err(e) if installed => {
            return Ok(Outcome::Exposed(format!(
                "could not check what PUBLIC may execute of {extension} ({}): PUBLIC's use of schema {SCHEMA} is revoked, and plugins get none of its extensions",
                crate::db::pg_message(&e)
            )));
        }
        Err(e) => return Ok(could_not_install(e)),
    };
    if exposed.is_empty() {
        return Ok(Outcome::Offered);
    }
    // The transaction is rolled back: a new install is undone.
    let fix = format!(
        "{}REVOKE EXECUTE ON FUNCTION {} FROM PUBLIC",
        if installed {
            String::new()
        } else {
            format!("CREATE EXTENSION {extension} WITH SCHEMA {SCHEMA}; ")
        },
        exposed.join(", ")
    );
    let problem = format!(
        "this role cannot take EXECUTE on {} of {extension}'s functions from PUBLIC (they belong to another role; a trusted extension's, to the bootstrap superuser)",
        exposed.len()
    );
    Ok(if installed {
        Outcome::Exposed(format!(
            "{problem}: PUBLIC's use of schema {SCHEMA} is revoked, and plugins get none of its extensions. As a superuser, run: {fix}"
        ))
    } else {
        Outcome::NotOffered(format!(
            "{problem}, so it is not installed: plugins get no {without}. As a superuser, run: {fix}"
        ))
    })
}

/// The functions of the extension named `$1` that PUBLIC may execute but
/// are not among `$2` (signatures, as text), as `regprocedure` text
/// (quoted where needed).
const EXPOSED_FUNCTIONS: &str = "SELECT p.oid::regprocedure::text
     FROM pg_depend d JOIN pg_proc p ON p.oid = d.objid
     WHERE d.classid = 'pg_proc'::regclass AND d.deptype = 'e'
       AND d.refclassid = 'pg_extension'::regclass
       AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = $1)
       AND has_function_privilege('public', p.oid, 'EXECUTE')
       AND NOT EXISTS (SELECT FROM unnest($2::text[]) AS f WHERE to_regprocedure(f) = p.oid)";
