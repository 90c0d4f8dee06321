//! The SQL sandbox on the database side: what PUBLIC may not do, and for each
//! plugin a LOGIN role with no memberships, a schema it owns, and exactly the
//! grants the operator configured.
//!
//! PostgreSQL's privilege system is the wall. Because each plugin logs in as its
//! own role, `RESET ROLE` only ever returns it to itself, and it can never
//! become another plugin or the engine; anything it was not granted is refused
//! by the server whatever SQL it writes.

use tokio_postgres::Transaction;
use tokio_postgres::error::SqlState;

use crate::config::{PluginGrants, SandboxConfig};
use crate::db::{Database, DbError};

/// The role name of plugin `$1` in the current database:
/// `assay_<6 hex digits of md5(database)>_<plugin>`. Roles are shared by every
/// database of a server; the tag keeps two assay databases on one server apart.
/// Plugin names are at most 50 characters, so the name fits PostgreSQL's 63.
const ROLE_NAME_SQL: &str =
    "SELECT 'assay_' || substr(md5(current_database()), 1, 6) || '_' || $1::text";

/// The table every change to plugin roles, schemas and grants locks first (see
/// the V5 migration). GRANT and REVOKE on a shared object (the database, a
/// schema) from two transactions at once fail with "tuple concurrently
/// updated", so all of it — for every plugin, from every assay process —
/// happens one at a time. A table no plugin role may touch, locked inside the
/// transaction it guards: no plugin can take it or hold it, and it is released
/// with the transaction even if the engine's session is dropped half-way.
const PROVISION_LOCK: &str = "LOCK TABLE assay.provisioning IN EXCLUSIVE MODE";

/// Longest the engine waits for the provisioning lock or any lock provisioning
/// needs (another engine provisioning, a plugin holding a lock on one of its own
/// tables), before the plugin is refused for now.
pub const PROVISION_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// Opens a transaction holding the provisioning lock.
pub async fn begin_provisioning(
    conn: &mut crate::db::PgConnection,
) -> Result<Transaction<'_>, DbError> {
    let tx = conn
        .transaction()
        .await
        .map_err(DbError::query("starting to provision plugins"))?;
    tx.batch_execute(&format!(
        "SET LOCAL lock_timeout = {}; {PROVISION_LOCK}",
        PROVISION_LOCK_WAIT.as_millis()
    ))
    .await
    .map_err(DbError::query("waiting for the provisioning lock"))?;
    Ok(tx)
}

/// Tables no grant may name, whatever the configuration says, and why.
const NEVER_GRANTED: &[(&str, &str, &str)] = &[
    ("assay", "plugin_roles", "holds the engine's secrets"),
    (
        "assay",
        "refinery_schema_history",
        "is the engine's migration record",
    ),
    (
        "assay",
        "plugin_state",
        "holds every plugin's state from before each moved to its own schema",
    ),
    ("assay", "provisioning", "is the engine's provisioning lock"),
];

/// The schema the engine's own tables live in. Plugins may be granted reading
/// its tables, never writing: with UPDATE or DELETE on a table a role may also
/// `LOCK` it in any mode, and so hold up the engine and every other plugin.
const ENGINE_SCHEMA: &str = "assay";

/// Name of each plugin's state table, in its own schema, owned by the engine.
pub const STATE_TABLE: &str = "assay_state";
/// Name of each plugin's migration record, in its own schema, owned by the plugin.
pub const MIGRATIONS_TABLE: &str = "assay_migrations";
/// Largest state value, in bytes of its JSON text (enforced by the state table).
pub const MAX_STATE_VALUE_BYTES: usize = 1024 * 1024;

/// The database role of a plugin in the connected database.
pub async fn role_name(
    client: &impl tokio_postgres::GenericClient,
    plugin: &str,
) -> Result<String, DbError> {
    Ok(client
        .query_one(ROLE_NAME_SQL, &[&plugin])
        .await
        .map_err(DbError::query("naming the plugin role"))?
        .get(0))
}

/// The schema a plugin owns and finds first on its `search_path`.
///
/// `-` becomes `_` so that plugin authors can name the schema without quotes;
/// that makes `victim-x` and `victim_x` map to the same schema. The mapping is
/// kept injective by the database instead: the schema name is recorded with
/// the plugin that claimed it first (a unique constraint), and a later plugin
/// whose name maps to it is refused at load ([`SandboxError::NameTaken`]).
pub fn schema_name(plugin: &str) -> String {
    format!("plugin_{}", plugin.replace('-', "_"))
}

/// `name` as an SQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Why a plugin could not be given its sandbox.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The plugin's name maps to database names another plugin already has.
    #[error(
        "plugin name `{plugin}` maps to the database schema {schema}, which belongs to plugin `{owner}` \
         (`-` and `_` are the same in database names); rename one of the two plugins"
    )]
    NameTaken {
        /// The plugin refused.
        plugin: String,
        /// The schema name both map to.
        schema: String,
        /// The plugin that has it.
        owner: String,
    },
    /// A database object the plugin would get already exists and was not made
    /// for it by assay; the engine never takes over what it did not create.
    #[error(
        "{object} already exists and was not created by assay for plugin `{plugin}`; \
         assay never takes over objects it did not create: rename the plugin, or have \
         the database's owner drop or rename {object}"
    )]
    Foreign {
        /// The plugin refused.
        plugin: String,
        /// What is in the way (`schema plugin_x`, `role assay_…`, …).
        object: String,
    },
    /// Purging would drop schemas that are not the plugin's own.
    #[error(
        "role {role} of plugin `{plugin}` owns {schemas}, which {verb} not the plugin's own; \
         give {them} back to {their} owner (ALTER SCHEMA … OWNER TO …) before purging it",
        verb = if schemas.contains(',') { "are" } else { "is" },
        them = if schemas.contains(',') { "them" } else { "it" },
        their = if schemas.contains(',') { "their" } else { "its" },
    )]
    OwnsOthers {
        /// The plugin.
        plugin: String,
        /// Its role.
        role: String,
        /// The schemas, listed.
        schemas: String,
    },
    /// The operator's grants for this plugin cannot be applied.
    #[error("invalid grant for plugin {plugin}: {message}")]
    Grant {
        /// The plugin.
        plugin: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// The connection budget does not fit the server.
    #[error(
        "the server allows {max} connections ({reserved} reserved for superusers), but assay may open \
         {engine} for itself plus {budget} for plugins; lower `sandbox.connection_budget` or \
         `database.pool_size`, or raise the server's max_connections"
    )]
    Budget {
        /// The server's max_connections.
        max: i64,
        /// superuser_reserved_connections.
        reserved: i64,
        /// The engine's pool size.
        engine: u32,
        /// The plugin budget.
        budget: u32,
    },
}

/// A plugin's login.
#[derive(Debug, Clone)]
pub struct PluginLogin {
    /// Role name.
    pub role: String,
    /// Its password (kept in `assay.plugin_roles`, readable by the engine only).
    pub password: String,
    /// The schema it owns.
    pub schema: String,
}

/// Once per start: checks the connection budget against the server, and takes
/// from PUBLIC what no plugin should have. Returns warnings for hardening the
/// engine's role is not allowed to do (the operator should do it by hand).
pub async fn harden(
    db: &Database,
    sandbox: &SandboxConfig,
    engine_pool: u32,
) -> Result<Vec<String>, SandboxError> {
    let conn = db.connection().await?;
    let row = conn
        .query_one(
            "SELECT current_setting('max_connections')::int8, current_setting('superuser_reserved_connections')::int8, current_database()",
            &[],
        )
        .await
        .map_err(DbError::query("reading connection settings"))?;
    let (max, reserved, database): (i64, i64, String) = (row.get(0), row.get(1), row.get(2));
    if i64::from(engine_pool) + i64::from(sandbox.connection_budget) + reserved >= max {
        return Err(SandboxError::Budget {
            max,
            reserved,
            engine: engine_pool,
            budget: sandbox.connection_budget,
        });
    }
    // Each revocation, and how to tell it took effect: a REVOKE the engine's
    // role may not make is often only a server warning, so the result is checked.
    let database = quote_ident(&database);
    let steps = [
        (
            format!("REVOKE ALL ON DATABASE {database} FROM PUBLIC"),
            "has_database_privilege('public', current_database(), 'CONNECT, TEMPORARY, CREATE')",
        ),
        (
            "REVOKE ALL ON SCHEMA public FROM PUBLIC".to_string(),
            "has_schema_privilege('public', 'public', 'CREATE, USAGE')",
        ),
        (
            "REVOKE ALL ON SCHEMA assay FROM PUBLIC".to_string(),
            "has_schema_privilege('public', 'assay', 'CREATE, USAGE')",
        ),
        (
            "REVOKE ALL ON ALL TABLES IN SCHEMA assay FROM PUBLIC".to_string(),
            "EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             CROSS JOIN LATERAL aclexplode(c.relacl) a WHERE n.nspname = 'assay' AND a.grantee = 0)",
        ),
        (
            "REVOKE USAGE ON LANGUAGE plpgsql FROM PUBLIC".to_string(),
            "has_language_privilege('public', 'plpgsql', 'USAGE')",
        ),
        (
            // Large objects live outside every schema, unbounded and readable
            // by their owner from any later call: a plugin has no business
            // creating them. (A read-only transaction does not stop
            // `lo_create`; the statement gate refuses `lo_*` too.)
            "REVOKE EXECUTE ON FUNCTION lo_create(oid), lo_creat(integer), lo_from_bytea(oid, bytea) FROM PUBLIC"
                .to_string(),
            "has_function_privilege('public', 'lo_create(oid)', 'EXECUTE') \
             OR has_function_privilege('public', 'lo_creat(integer)', 'EXECUTE') \
             OR has_function_privilege('public', 'lo_from_bytea(oid, bytea)', 'EXECUTE')",
        ),
        (
            "ALTER DEFAULT PRIVILEGES REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC".to_string(),
            // Without a default ACL for functions, PUBLIC gets EXECUTE on new ones.
            "NOT EXISTS (SELECT 1 FROM pg_default_acl d \
             WHERE d.defaclrole = (SELECT oid FROM pg_roles WHERE rolname = current_user) \
               AND d.defaclobjtype = 'f' AND d.defaclnamespace = 0 \
               AND NOT EXISTS (SELECT 1 FROM aclexplode(d.defaclacl) a WHERE a.grantee = 0))",
        ),
    ];
    drop(conn);
    let mut conn = db.connection().await?;
    let mut tx = begin_provisioning(&mut conn).await?;
    let mut warnings = Vec::new();
    for (statement, still_granted) in &steps {
        // Each step in a savepoint of its own: one the role may not make must
        // not undo the others.
        let step = tx
            .savepoint("hardening_step")
            .await
            .map_err(DbError::query("hardening the database"))?;
        let failed = match step.batch_execute(statement).await {
            Ok(()) => {
                step.commit()
                    .await
                    .map_err(DbError::query("hardening the database"))?;
                None
            }
            Err(e) => {
                step.rollback()
                    .await
                    .map_err(DbError::query("hardening the database"))?;
                Some(e)
            }
        };
        let granted: bool = tx
            .query_one(&format!("SELECT {still_granted}"), &[])
            .await
            .map_err(DbError::query("checking what PUBLIC may do"))?
            .get(0);
        if granted {
            let why = failed.map_or_else(
                || "not permitted to this role".to_string(),
                |e| crate::db::pg_message(&e),
            );
            warnings.push(format!(
                "could not run `{statement}` ({why}); run it as the owner or a superuser so plugins get nothing through PUBLIC"
            ));
        }
    }
    tx.commit()
        .await
        .map_err(DbError::query("committing the hardening"))?;
    Ok(warnings)
}

/// Creates or updates the plugin's role, schema, state table and grants,
/// inside the caller's transaction (opened by [`begin_provisioning`]).
///
/// Nothing is taken over: the role and the schema are created for this plugin
/// and recorded with it, or they already were; a role, schema or table in the
/// way that assay did not make for this same plugin refuses the plugin
/// ([`SandboxError::Foreign`]), and so does a name that maps to another
/// plugin's schema ([`SandboxError::NameTaken`]).
pub async fn provision(
    tx: &Transaction<'_>,
    plugin: &str,
    grants: &PluginGrants,
    sandbox: &SandboxConfig,
) -> Result<PluginLogin, SandboxError> {
    let q = |context: &'static str| DbError::query(context);
    let schema = schema_name(plugin);
    let foreign = |object: String| SandboxError::Foreign {
        plugin: plugin.to_string(),
        object,
    };

    if let Some(row) = tx
        .query_opt(
            "SELECT plugin FROM assay.plugin_roles WHERE schema_name = $1 AND plugin <> $2",
            &[&schema, &plugin],
        )
        .await
        .map_err(q("looking up who has the plugin's schema"))?
    {
        return Err(SandboxError::NameTaken {
            plugin: plugin.to_string(),
            schema,
            owner: row.get(0),
        });
    }
    let recorded: Option<(String, String, Option<String>)> = tx
        .query_opt(
            "SELECT role_name, password, schema_name FROM assay.plugin_roles WHERE plugin = $1",
            &[&plugin],
        )
        .await
        .map_err(q("looking up the plugin role"))?
        .map(|r| (r.get(0), r.get(1), r.get(2)));
    let schema_owner: Option<String> = tx
        .query_opt(
            "SELECT pg_get_userbyid(nspowner)::text FROM pg_namespace WHERE nspname = $1",
            &[&schema],
        )
        .await
        .map_err(q("looking up the plugin schema"))?
        .map(|r| r.get(0));

    let (role, password) = match recorded {
        Some((role, password, recorded_schema)) => {
            if recorded_schema.is_none() {
                // Recorded before schemas were; claimed now (the check above
                // made sure nobody else has it).
                tx.execute(
                    "UPDATE assay.plugin_roles SET schema_name = $2 WHERE plugin = $1",
                    &[&plugin, &schema],
                )
                .await
                .map_err(q("recording the plugin schema"))?;
            }
            if let Some(owner) = schema_owner.as_ref().filter(|owner| **owner != role) {
                return Err(foreign(format!("schema {schema} (owned by role {owner})")));
            }
            tx.execute(
                "UPDATE assay.plugin_roles SET dropped_at = NULL WHERE plugin = $1",
                &[&plugin],
            )
            .await
            .map_err(q("recording the plugin role"))?;
            (role, password)
        }
        None => {
            let role = role_name(tx, plugin).await?;
            if role_exists(tx, &role).await? {
                return Err(foreign(format!("database role {role}")));
            }
            if schema_owner.is_some() {
                return Err(foreign(format!("schema {schema}")));
            }
            let password: String = {
                use rand::Rng as _;
                rand::rng()
                    .sample_iter(rand::distr::Alphanumeric)
                    .take(32)
                    .map(char::from)
                    .collect()
            };
            tx.execute(
                "INSERT INTO assay.plugin_roles (plugin, role_name, password, schema_name) VALUES ($1, $2, $3, $4)",
                &[&plugin, &role, &password, &schema],
            )
            .await
            .map_err(q("recording the plugin role"))?;
            (role, password)
        }
    };
    let (qrole, qschema) = (quote_ident(&role), quote_ident(&schema));

    let superuser: bool = tx
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .map_err(q("checking the engine role"))?
        .get(0);
    if !role_exists(tx, &role).await? {
        // New, or recorded but gone (dropped by hand): made, for this plugin.
        // The password is alphanumeric (generated by the engine), so it needs no escaping.
        tx.batch_execute(&format!(
            "CREATE ROLE {qrole} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS PASSWORD '{password}'"
        ))
        .await
        .map_err(q("creating the plugin role"))?;
    }
    reassert_role(tx, &role, &schema, &password, sandbox).await?;

    // No memberships: whatever granted the role membership elsewhere is undone.
    let memberships: Vec<String> = tx
        .query(
            "SELECT g.rolname::text FROM pg_auth_members m
             JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles r ON r.oid = m.member
             WHERE r.rolname = $1",
            &[&role],
        )
        .await
        .map_err(q("listing role memberships"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for group in memberships {
        tx.batch_execute(&format!("REVOKE {} FROM {qrole}", quote_ident(&group)))
            .await
            .map_err(q("revoking a role membership"))?;
    }

    // A non-superuser engine must be a member of the plugin role to hand it a
    // schema; the plugin role itself stays a member of nothing.
    if !superuser {
        tx.batch_execute(&format!("GRANT {qrole} TO CURRENT_USER"))
            .await
            .map_err(q(
                "making the engine a member of the plugin role (needs CREATEROLE)",
            ))?;
    }
    if schema_owner.is_none() {
        tx.batch_execute(&format!("CREATE SCHEMA {qschema} AUTHORIZATION {qrole}"))
            .await
            .map_err(q("creating the plugin schema"))?;
    }
    tx.batch_execute(&format!(
        "GRANT CONNECT ON DATABASE {} TO {qrole}",
        quote_ident(&current_database(tx).await?)
    ))
    .await
    .map_err(q("letting the plugin role connect"))?;
    own_tables(tx, plugin, &role, &schema).await?;
    apply_grants(tx, plugin, &role, &schema, grants).await?;
    Ok(PluginLogin {
        role,
        password,
        schema,
    })
}

async fn role_exists(tx: &Transaction<'_>, role: &str) -> Result<bool, DbError> {
    Ok(tx
        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&role])
        .await
        .map_err(DbError::query("looking up the plugin role"))?
        .is_some())
}

/// Sets the role back to what the engine made it: its attributes, its
/// password, and no session defaults but its `search_path`. A role may change
/// its own password and session defaults (PostgreSQL allows every role that),
/// so this runs at every load and again after the plugin's migrations.
pub async fn reassert_role(
    tx: &Transaction<'_>,
    role: &str,
    schema: &str,
    password: &str,
    sandbox: &SandboxConfig,
) -> Result<(), DbError> {
    let (qrole, qschema) = (quote_ident(role), quote_ident(schema));
    // SUPERUSER, REPLICATION and BYPASSRLS only a superuser can give, or even
    // name in ALTER ROLE: the role was created without them, and only a
    // superuser engine can (and so does) take them away again.
    let superuser: bool = tx
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .map_err(DbError::query("checking the engine role"))?
        .get(0);
    let reserved = if superuser {
        " NOSUPERUSER NOREPLICATION NOBYPASSRLS"
    } else {
        ""
    };
    // The password is alphanumeric (generated by the engine), so it needs no escaping.
    tx.batch_execute(&format!(
        "ALTER ROLE {qrole} LOGIN NOCREATEDB NOCREATEROLE NOINHERIT{reserved} PASSWORD '{password}';
         ALTER ROLE {qrole} RESET ALL;
         ALTER ROLE {qrole} IN DATABASE {} RESET ALL;
         ALTER ROLE {qrole} SET search_path = {qschema}",
        quote_ident(&current_database(tx).await?)
    ))
    .await
    .map_err(DbError::query("setting the plugin role's attributes"))?;
    if superuser {
        // A superuser-only setting: the plugin cannot raise it for itself.
        tx.batch_execute(&format!(
            "ALTER ROLE {qrole} SET temp_file_limit = '{}MB'",
            sandbox.temp_file_limit_mib
        ))
        .await
        .map_err(DbError::query("limiting the plugin role's temporary files"))?;
    }
    Ok(())
}

/// The tables the engine keeps in every plugin's schema: the plugin's state
/// (owned by the engine, so its limits hold; the plugin may read and write its
/// rows, and only ever blocks itself) and its migration record (owned by the
/// plugin, written with each migration). Legacy state rows in
/// `assay.plugin_state` move into the plugin's own table.
async fn own_tables(
    tx: &Transaction<'_>,
    plugin: &str,
    role: &str,
    schema: &str,
) -> Result<(), SandboxError> {
    let q = |context: &'static str| DbError::query(context);
    let (qrole, qschema) = (quote_ident(role), quote_ident(schema));
    let owner_of = async |table: &str| -> Result<Option<String>, DbError> {
        Ok(tx
            .query_opt(
                "SELECT pg_get_userbyid(c.relowner)::text FROM pg_class c
                 JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2",
                &[&schema, &table],
            )
            .await
            .map_err(q("looking up the plugin's tables"))?
            .map(|r| r.get(0)))
    };
    let engine: String = tx
        .query_one("SELECT current_user::text", &[])
        .await
        .map_err(q("naming the engine role"))?
        .get(0);
    let foreign = |table: &str, owner: &str| SandboxError::Foreign {
        plugin: plugin.to_string(),
        object: format!("table {schema}.{table} (owned by role {owner})"),
    };

    match owner_of(STATE_TABLE).await? {
        Some(owner) if owner != engine => return Err(foreign(STATE_TABLE, &owner)),
        Some(_) => {}
        None => {
            tx.batch_execute(&format!(
                "CREATE TABLE {qschema}.{STATE_TABLE} (
                     scope      text NOT NULL CHECK (length(scope) BETWEEN 1 AND 256),
                     key        text NOT NULL CHECK (length(key) BETWEEN 1 AND 256),
                     value      jsonb NOT NULL CHECK (octet_length(value::text) <= {MAX_STATE_VALUE_BYTES}),
                     updated_at timestamptz NOT NULL DEFAULT now(),
                     PRIMARY KEY (scope, key));
                 GRANT SELECT, INSERT, UPDATE, DELETE ON {qschema}.{STATE_TABLE} TO {qrole}"
            ))
            .await
            .map_err(q("creating the plugin's state table"))?;
        }
    }
    let moved = tx
        .execute(
            &format!(
                "WITH moved AS (
                     DELETE FROM assay.plugin_state
                     WHERE plugin = $1 AND octet_length(value::text) <= {MAX_STATE_VALUE_BYTES}
                     RETURNING scope, key, value, updated_at)
                 INSERT INTO {qschema}.{STATE_TABLE} (scope, key, value, updated_at)
                 SELECT * FROM moved ON CONFLICT (scope, key) DO NOTHING"
            ),
            &[&plugin],
        )
        .await
        .map_err(q("moving the plugin's state into its own schema"))?;
    if moved > 0 {
        tracing::info!(
            plugin,
            rows = moved,
            "moved state into the plugin's own schema"
        );
    }

    match owner_of(MIGRATIONS_TABLE).await? {
        Some(owner) if owner != role => return Err(foreign(MIGRATIONS_TABLE, &owner)),
        Some(_) => {}
        None => {
            tx.batch_execute(&format!(
                "CREATE TABLE {qschema}.{MIGRATIONS_TABLE} (
                     version integer PRIMARY KEY CHECK (version > 0),
                     description text NOT NULL,
                     sha256 text NOT NULL,
                     applied_at timestamptz NOT NULL DEFAULT now());
                 ALTER TABLE {qschema}.{MIGRATIONS_TABLE} OWNER TO {qrole}"
            ))
            .await
            .map_err(q("creating the plugin's migration record"))?;
        }
    }
    Ok(())
}

async fn current_database(tx: &Transaction<'_>) -> Result<String, DbError> {
    Ok(tx
        .query_one("SELECT current_database()::text", &[])
        .await
        .map_err(DbError::query("reading the database name"))?
        .get(0))
}

/// Makes the role's privileges outside its schema exactly what `grants` says.
async fn apply_grants(
    tx: &Transaction<'_>,
    plugin: &str,
    role: &str,
    own_schema: &str,
    grants: &PluginGrants,
) -> Result<(), SandboxError> {
    let qrole = quote_ident(role);
    let q = |context: &'static str| DbError::query(context);
    let invalid = |message: String| SandboxError::Grant {
        plugin: plugin.to_string(),
        message,
    };

    // Resolve and check what the operator asked for before touching anything.
    let mut desired: Vec<(String, String, &'static str)> = Vec::new();
    for (names, privileges) in [
        (&grants.read, "SELECT"),
        (&grants.write, "SELECT, INSERT, UPDATE, DELETE"),
    ] {
        for name in names {
            let Some((schema, table)) = name.split_once('.') else {
                return Err(invalid(format!("{name:?} must be written as schema.table")));
            };
            if let Some((_, _, why)) = NEVER_GRANTED
                .iter()
                .find(|(s, t, _)| (*s, *t) == (schema, table))
            {
                return Err(invalid(format!("{name} {why} and is never granted")));
            }
            if schema == ENGINE_SCHEMA && privileges != "SELECT" {
                return Err(invalid(format!(
                    "{name} is one of the engine's tables, which plugins may only read: \
                     a role that may write a table may also LOCK it and hold up the engine \
                     and every other plugin; move it to `read`"
                )));
            }
            let found = tx
                .query_opt(
                    "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p', 'v', 'm', 'f')",
                    &[&schema, &table],
                )
                .await
                .map_err(q("looking up a granted table"))?;
            if found.is_none() {
                return Err(invalid(format!(
                    "{name} is not a table or view in this database"
                )));
            }
            desired.push((schema.to_string(), table.to_string(), privileges));
        }
    }

    // Revoke everything granted outside its own schema, then grant what is
    // configured; one transaction, so there is no gap.
    let current: Vec<(String, String)> = tx
        .query(
            "SELECT DISTINCT n.nspname::text, c.relname::text
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             CROSS JOIN LATERAL aclexplode(c.relacl) a
             WHERE a.grantee = (SELECT oid FROM pg_roles WHERE rolname = $1)
               AND n.nspname <> $2",
            &[&role, &own_schema],
        )
        .await
        .map_err(q("listing current grants"))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for (schema, table) in &current {
        tx.batch_execute(&format!(
            "REVOKE ALL ON {}.{} FROM {qrole}",
            quote_ident(schema),
            quote_ident(table)
        ))
        .await
        .map_err(q("revoking a grant"))?;
    }
    let usage: Vec<String> = tx
        .query(
            "SELECT n.nspname::text FROM pg_namespace n CROSS JOIN LATERAL aclexplode(n.nspacl) a
             WHERE a.grantee = (SELECT oid FROM pg_roles WHERE rolname = $1) AND n.nspname <> $2",
            &[&role, &own_schema],
        )
        .await
        .map_err(q("listing schema grants"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for schema in usage {
        tx.batch_execute(&format!(
            "REVOKE ALL ON SCHEMA {} FROM {qrole}",
            quote_ident(&schema)
        ))
        .await
        .map_err(q("revoking schema usage"))?;
    }
    for (schema, table, privileges) in desired {
        tx.batch_execute(&format!(
            "GRANT USAGE ON SCHEMA {qs} TO {qrole}; GRANT {privileges} ON {qs}.{qt} TO {qrole}",
            qs = quote_ident(&schema),
            qt = quote_ident(&table)
        ))
        .await
        .map_err(q("granting access"))?;
    }
    Ok(())
}

/// `assay plugins drop`: the plugin can no longer log in and loses its grants;
/// with `purge`, its schema, state and role are removed too. Only what is
/// recorded as the plugin's own is touched: a schema another plugin's name
/// maps to is never dropped with this one.
pub async fn drop_plugin(db: &Database, plugin: &str, purge: bool) -> Result<bool, DbError> {
    let mut conn = db.connection().await?;
    drop_locked(&mut conn, plugin, purge)
        .await
        .map_err(|e| match e {
            SandboxError::Db(e) => e,
            other => DbError::Migrate(other.to_string()),
        })
}

async fn drop_locked(
    conn: &mut crate::db::PgConnection,
    plugin: &str,
    purge: bool,
) -> Result<bool, SandboxError> {
    let q = |context: &'static str| DbError::query(context);
    // First, committed on its own: the plugin can no longer log in and has no
    // grants, and its open sessions (a running engine's pool) are ended, so
    // the drop takes effect at once and holds even if the purge below fails.
    let tx = begin_provisioning(conn).await?;
    let Some(recorded) = tx
        .query_opt(
            "SELECT role_name, schema_name FROM assay.plugin_roles WHERE plugin = $1",
            &[&plugin],
        )
        .await
        .map_err(q("looking up the plugin role"))?
    else {
        return Ok(false);
    };
    let (role, schema): (String, Option<String>) = (recorded.get(0), recorded.get(1));
    let qrole = quote_ident(&role);
    let role_present = role_exists(&tx, &role).await?;
    if role_present {
        tx.batch_execute(&format!("ALTER ROLE {qrole} NOLOGIN"))
            .await
            .map_err(q("disabling the plugin role"))?;
        // Its own schema (if it has one recorded) is not "outside".
        let own = schema.clone().unwrap_or_default();
        apply_grants(&tx, plugin, &role, &own, &PluginGrants::default()).await?;
    }
    tx.execute(
        "UPDATE assay.plugin_roles SET dropped_at = now() WHERE plugin = $1",
        &[&plugin],
    )
    .await
    .map_err(q("recording the drop"))?;
    tx.commit().await.map_err(q("committing the drop"))?;
    if role_present {
        // A non-superuser engine may: it is a member of the plugin role.
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE usename = $1 AND pid <> pg_backend_pid()",
            &[&role],
        )
        .await
        .map_err(q("ending the plugin's sessions"))?;
    }
    if !purge {
        return Ok(true);
    }

    let tx = begin_provisioning(conn).await?;
    if role_present {
        // DROP OWNED below drops everything the role owns: refuse if that
        // would include a schema that is not recorded as this plugin's.
        let others: Vec<String> = tx
            .query(
                "SELECT 'schema ' || nspname::text FROM pg_namespace
                 WHERE nspowner = (SELECT oid FROM pg_roles WHERE rolname = $1)
                   AND nspname::text IS DISTINCT FROM $2",
                &[&role, &schema],
            )
            .await
            .map_err(q("listing what the plugin role owns"))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if !others.is_empty() {
            return Err(SandboxError::OwnsOthers {
                plugin: plugin.to_string(),
                role,
                schemas: others.join(", "),
            });
        }
    }
    if let Some(schema) = &schema {
        tx.batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {} CASCADE",
            quote_ident(schema)
        ))
        .await
        .map_err(q(
            "removing the plugin's schema (the plugin is already disabled; if the server \
             ran out of locks, raise max_locks_per_transaction or drop its tables in \
             smaller steps, then purge again)",
        ))?;
    }
    if role_present {
        tx.batch_execute(&format!(
            "REVOKE ALL ON assay.plugin_state FROM {qrole}; REVOKE ALL ON SCHEMA assay FROM {qrole};
             DROP OWNED BY {qrole}; DROP ROLE {qrole}"
        ))
        .await
        .map_err(q("removing the plugin's role"))?;
    }
    tx.execute(
        "DELETE FROM assay.plugin_state WHERE plugin = $1",
        &[&plugin],
    )
    .await
    .map_err(q("removing the plugin's state"))?;
    tx.execute(
        "DELETE FROM assay.plugin_roles WHERE plugin = $1",
        &[&plugin],
    )
    .await
    .map_err(q("forgetting the plugin role"))?;
    match tx.commit().await {
        Ok(()) => Ok(true),
        Err(e) if e.code() == Some(&SqlState::DEPENDENT_OBJECTS_STILL_EXIST) => Err(DbError::Query {
            context: "the plugin role still owns objects in another database; drop them there first",
            cause: e,
        }
        .into()),
        Err(e) => Err(DbError::Query {
            context: "committing the drop",
            cause: e,
        }
        .into()),
    }
}
