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

use super::{Database, DbError};
use crate::config::{PluginGrants, SandboxConfig};

/// The role name of plugin `$1` in the current database:
/// `assay_<6 hex digits of md5(database)>_<plugin>`. Roles are shared by every
/// database of a server; the tag keeps two assay databases on one server apart.
/// The row-level security policy of `assay.plugin_state` uses the same expression.
const ROLE_NAME_SQL: &str =
    "SELECT 'assay_' || substr(md5(current_database()), 1, 6) || '_' || $1::text";

/// Advisory lock taken by every change to roles and grants. GRANT and REVOKE on
/// a shared object (the database, the `assay` schema, the state table) from two
/// transactions at once fail with "tuple concurrently updated", so all of it —
/// for every plugin, from every assay process — happens one at a time.
pub const PROVISION_LOCK: i64 = 0x6173_7361_795f_7072; // "assay_pr"

/// Takes [`PROVISION_LOCK`] for this session. It is taken at session level
/// *before* any transaction starts: a transaction that waited for a
/// transaction-level lock could still work from catalog rows read before the
/// other one committed, and fail with "tuple concurrently updated". Always pair
/// with [`provision_unlock`], whatever happened in between.
pub async fn provision_lock(conn: &super::PgConnection) -> Result<(), DbError> {
    conn.execute("SELECT pg_advisory_lock($1)", &[&PROVISION_LOCK])
        .await
        .map(|_| ())
        .map_err(DbError::query("waiting for the provisioning lock"))
}

/// Releases [`PROVISION_LOCK`].
pub async fn provision_unlock(conn: &super::PgConnection) -> Result<(), DbError> {
    conn.execute("SELECT pg_advisory_unlock($1)", &[&PROVISION_LOCK])
        .await
        .map(|_| ())
        .map_err(DbError::query("releasing the provisioning lock"))
}

/// Tables no grant may name, whatever the configuration says.
const NEVER_GRANTED: &[(&str, &str)] = &[
    ("assay", "plugin_roles"),
    ("assay", "refinery_schema_history"),
];

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
            "ALTER DEFAULT PRIVILEGES REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC".to_string(),
            // Without a default ACL for functions, PUBLIC gets EXECUTE on new ones.
            "NOT EXISTS (SELECT 1 FROM pg_default_acl d \
             WHERE d.defaclrole = (SELECT oid FROM pg_roles WHERE rolname = current_user) \
               AND d.defaclobjtype = 'f' AND d.defaclnamespace = 0 \
               AND NOT EXISTS (SELECT 1 FROM aclexplode(d.defaclacl) a WHERE a.grantee = 0))",
        ),
    ];
    provision_lock(&conn).await?;
    let result: Result<Vec<String>, SandboxError> = async {
        let mut warnings = Vec::new();
        for (statement, still_granted) in &steps {
            let failed = conn.batch_execute(statement).await.err();
            let granted: bool = conn
                .query_one(&format!("SELECT {still_granted}"), &[])
                .await
                .map_err(DbError::query("checking what PUBLIC may do"))?
                .get(0);
            if granted {
                let why = failed.map_or_else(|| "not permitted to this role".to_string(), |e| super::pg_message(&e));
                warnings.push(format!(
                    "could not run `{statement}` ({why}); run it as the owner or a superuser so plugins get nothing through PUBLIC"
                ));
            }
        }
        Ok(warnings)
    }
    .await;
    let unlocked = provision_unlock(&conn).await;
    let warnings = result?;
    unlocked?;
    Ok(warnings)
}

/// Creates or updates the plugin's role, schema and grants, inside the caller's
/// transaction (which holds the plugin's registration lock).
pub async fn provision(
    tx: &Transaction<'_>,
    plugin: &str,
    grants: &PluginGrants,
) -> Result<PluginLogin, SandboxError> {
    let role = role_name(tx, plugin).await?;
    let schema = schema_name(plugin);
    let (qrole, qschema) = (quote_ident(&role), quote_ident(&schema));
    let q = |context: &'static str| DbError::query(context);

    let fresh_password: String = {
        use rand::Rng as _;
        rand::rng()
            .sample_iter(rand::distr::Alphanumeric)
            .take(32)
            .map(char::from)
            .collect()
    };
    let password: String = tx
        .query_one(
            "INSERT INTO assay.plugin_roles (plugin, role_name, password) VALUES ($1, $2, $3)
             ON CONFLICT (plugin) DO UPDATE SET dropped_at = NULL
             RETURNING password",
            &[&plugin, &role, &fresh_password],
        )
        .await
        .map_err(q("recording the plugin role"))?
        .get(0);
    // The password is alphanumeric (generated above), so it needs no escaping.
    let attributes = format!(
        "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS PASSWORD '{password}'"
    );
    let exists = tx
        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&role])
        .await
        .map_err(q("looking up the plugin role"))?
        .is_some();
    let verb = if exists { "ALTER" } else { "CREATE" };
    tx.batch_execute(&format!("{verb} ROLE {qrole} {attributes}"))
        .await
        .map_err(q("creating the plugin role"))?;

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
    let superuser: bool = tx
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .map_err(q("checking the engine role"))?
        .get(0);
    if !superuser {
        tx.batch_execute(&format!("GRANT {qrole} TO CURRENT_USER"))
            .await
            .map_err(q(
                "making the engine a member of the plugin role (needs CREATEROLE)",
            ))?;
    }
    tx.batch_execute(&format!(
        "ALTER ROLE {qrole} SET search_path = {qschema};
         CREATE SCHEMA IF NOT EXISTS {qschema} AUTHORIZATION {qrole};
         ALTER SCHEMA {qschema} OWNER TO {qrole};
         GRANT CONNECT ON DATABASE {} TO {qrole};
         GRANT USAGE ON SCHEMA assay TO {qrole};
         GRANT SELECT, INSERT, UPDATE, DELETE ON assay.plugin_state TO {qrole}",
        quote_ident(&current_database(tx).await?)
    ))
    .await
    .map_err(q("setting up the plugin schema"))?;
    // Tables made in the schema before it had an owner of its own go to the plugin.
    let foreign_owned: Vec<(String, String)> = tx
        .query(
            "SELECT c.relname::text, c.relkind::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
               AND c.relowner <> (SELECT oid FROM pg_roles WHERE rolname = $2)
               AND NOT (c.relkind = 'S' AND EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype IN ('a', 'i')))",
            &[&schema, &role],
        )
        .await
        .map_err(q("listing the plugin's tables"))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for (name, kind) in foreign_owned {
        let object = match kind.as_str() {
            "v" => "VIEW",
            "m" => "MATERIALIZED VIEW",
            "S" => "SEQUENCE",
            _ => "TABLE",
        };
        tx.batch_execute(&format!(
            "ALTER {object} {qschema}.{} OWNER TO {qrole}",
            quote_ident(&name)
        ))
        .await
        .map_err(q("handing a table to the plugin role"))?;
    }

    apply_grants(tx, plugin, &role, &schema, grants).await?;
    Ok(PluginLogin { role, password })
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
            if NEVER_GRANTED.contains(&(schema, table)) {
                return Err(invalid(format!(
                    "{name} holds the engine's secrets and is never granted"
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

    // Revoke everything granted outside its own schema (the state table aside),
    // then grant what is configured; one transaction, so there is no gap.
    let current: Vec<(String, String)> = tx
        .query(
            "SELECT DISTINCT n.nspname::text, c.relname::text
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             CROSS JOIN LATERAL aclexplode(c.relacl) a
             WHERE a.grantee = (SELECT oid FROM pg_roles WHERE rolname = $1)
               AND n.nspname <> $2 AND NOT (n.nspname = 'assay' AND c.relname = 'plugin_state')",
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
             WHERE a.grantee = (SELECT oid FROM pg_roles WHERE rolname = $1) AND n.nspname NOT IN ($2, 'assay')",
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
/// with `purge`, its schema, state and role are removed too.
pub async fn drop_plugin(db: &Database, plugin: &str, purge: bool) -> Result<bool, DbError> {
    let mut conn = db.connection().await?;
    provision_lock(&conn).await?;
    let result = drop_locked(&mut conn, plugin, purge).await;
    provision_unlock(&conn).await?;
    result.map_err(|e| match e {
        SandboxError::Db(e) => e,
        other => DbError::Migrate(other.to_string()),
    })
}

async fn drop_locked(
    conn: &mut super::PgConnection,
    plugin: &str,
    purge: bool,
) -> Result<bool, SandboxError> {
    let tx = conn
        .transaction()
        .await
        .map_err(DbError::query("starting the drop"))?;
    let role = role_name(&tx, plugin).await?;
    let qrole = quote_ident(&role);
    let q = |context: &'static str| DbError::query(context);
    let known = tx
        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&role])
        .await
        .map_err(q("looking up the plugin role"))?
        .is_some();
    if !known {
        return Ok(false);
    }
    tx.batch_execute(&format!("ALTER ROLE {qrole} NOLOGIN"))
        .await
        .map_err(q("disabling the plugin role"))?;
    apply_grants(
        &tx,
        plugin,
        &role,
        &schema_name(plugin),
        &PluginGrants::default(),
    )
    .await?;
    if purge {
        tx.batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {} CASCADE; REVOKE ALL ON assay.plugin_state FROM {qrole};
             REVOKE ALL ON SCHEMA assay FROM {qrole}; DROP OWNED BY {qrole}; DROP ROLE {qrole}",
            quote_ident(&schema_name(plugin))
        ))
        .await
        .map_err(q("removing the plugin's schema and role"))?;
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
    } else {
        tx.execute(
            "UPDATE assay.plugin_roles SET dropped_at = now() WHERE plugin = $1",
            &[&plugin],
        )
        .await
        .map_err(q("recording the drop"))?;
    }
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
