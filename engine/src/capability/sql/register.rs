//! Registering a plugin version with the SQL capability: its sandbox (role,
//! schema, grants) provisioned in one transaction, then its pool built and
//! its migrations applied under its own role, within the limits of its calls.

use std::sync::Arc;

use tokio::sync::Semaphore;

use super::pool::{PoolSettings, SandboxPool, build_pool};
use super::sandbox::{self, SandboxError};
use super::settings::SqlSettings;
use super::{SqlPlugin, SqlSession, migrations};
use crate::capability::{RegisterError, Registration};
use crate::config::Config;
use crate::db::{Database, DbError};

/// The logins this engine has provisioned, by plugin name.
///
/// A new version of a plugin already provisioned by this engine gets the same
/// role, schema and grants (they follow from its name and `assay.toml`, which
/// is read once), so with the gate on — no call or migration can then change
/// its role — it reuses the login instead of provisioning again: the
/// provisioning transaction was most of a cache-hit reload (BENCHMARKS.md).
/// Its role and schema are still checked to exist (`assay plugins drop` may
/// have run meanwhile). With the gate off a call may have changed its own
/// role, so every load provisions afresh. Kept with the login: whether its
/// role owned functions then (with the gate on, it cannot come to own more),
/// and the pool its versions use: a new version with the same login and
/// pool settings takes over the connections the last one opened, rather than
/// log in afresh at its first statement (a connection's login, password
/// checked by the server, costs milliseconds; connections of one role and
/// settings are alike, and a lean session holds nothing of a version).
#[derive(Debug, Default)]
pub struct Provisioned(std::sync::Mutex<std::collections::HashMap<String, ProvisionedLogin>>);

#[derive(Debug, Clone)]
struct ProvisionedLogin {
    login: sandbox::PluginLogin,
    owns_functions: bool,
    pool: Option<(PoolSettings, SandboxPool)>,
}

impl Provisioned {
    fn get(&self, plugin: &str) -> Option<ProvisionedLogin> {
        crate::sync::lock(&self.0).get(plugin).cloned()
    }

    fn keep(&self, plugin: &str, provisioned: &ProvisionedLogin) {
        crate::sync::lock(&self.0).insert(plugin.to_string(), provisioned.clone());
    }

    /// Keeps `pool` as the one `plugin`'s next version with the same login
    /// and `settings` takes over.
    fn keep_pool(&self, plugin: &str, settings: &PoolSettings, pool: &SandboxPool) {
        if let Some(kept) = crate::sync::lock(&self.0).get_mut(plugin) {
            kept.pool = Some((settings.clone(), pool.clone()));
        }
    }
}

/// Gives the plugin its sandbox, pool and schema (see the module docs).
pub async fn register(
    db: &Database,
    config: &Config,
    budget: &Arc<Semaphore>,
    provisioned: &Provisioned,
    plugin: &Registration<'_>,
) -> Result<SqlPlugin, RegisterError> {
    let name = &plugin.identity.name;
    let mut settings = SqlSettings::for_plugin(config, name, plugin.limits);
    let mut conn = db.connection().await?;
    let reusable = match provisioned.get(name) {
        Some(earlier)
            if config.sandbox.statement_gate
                && still_there(&conn, name, &earlier.login).await? =>
        {
            Some(earlier)
        }
        _ => None,
    };
    let ProvisionedLogin {
        login,
        owns_functions,
        pool: earlier_pool,
    } = match reusable {
        Some(earlier) => earlier,
        None => match provision(&mut conn, name, &settings, config).await {
            Ok(login) => {
                let owns_functions =
                    settings.caps.lean && role_owns_functions(&conn, &login.role).await?;
                let fresh = ProvisionedLogin {
                    login,
                    owns_functions,
                    pool: None,
                };
                provisioned.keep(name, &fresh);
                fresh
            }
            Err(SandboxError::Db(e)) => return Err(e.into()),
            Err(other) => return Err(RegisterError::Refused(other.to_string())),
        },
    };
    if settings.caps.lean && owns_functions {
        // Made while the gate was off, such a function could change the
        // session where the gate cannot see; so its sessions are reset
        // after every call, as with the gate off.
        tracing::info!(
            "plugin {name}: its role owns functions, so its sessions are reset after every call"
        );
        settings.caps.lean = false;
    }
    let pool_settings = settings.pool(&login.schema);
    let pool = match earlier_pool {
        Some((same, pool)) if same == pool_settings => pool,
        _ => {
            let pool = build_pool(
                db.pg_config(),
                &login.role,
                &login.password,
                budget,
                config.sandbox.connection_budget,
                &pool_settings,
            );
            provisioned.keep_pool(name, &pool_settings, &pool);
            pool
        }
    };
    let registered = SqlPlugin {
        pool,
        caps: settings.caps,
        verdicts: Arc::default(),
    };
    if plugin.manifest.migrations.is_empty() {
        return Ok(registered);
    }
    let mut session: SqlSession = registered.session();
    let migrated = migrations::apply(
        &mut session,
        name,
        &login.schema,
        &plugin.manifest.migrations,
        plugin.limits.timeout,
    )
    .await;
    drop(session);
    if let Ok(0) = migrated {
        // Every migration was applied before (and what it did to the role
        // undone then): nothing ran that could need setting back.
        return Ok(registered);
    }
    // Whatever the migrations did to the role (a role may change its own
    // password and session defaults), it is set back before any call.
    let tx = sandbox::begin_provisioning(&mut conn).await?;
    sandbox::reassert_role(
        &tx,
        &login.role,
        &login.schema,
        &login.password,
        &config.sandbox,
    )
    .await?;
    tx.commit()
        .await
        .map_err(DbError::query("re-asserting the plugin role"))?;
    migrated.map_err(|e| RegisterError::Refused(format!("plugin {name}: {e}")))?;
    Ok(registered)
}

/// Whether `plugin`'s `login` still stands: not dropped (`assay plugins
/// drop` disables the role and records when), its role able to log in, its
/// schema there.
async fn still_there(
    conn: &crate::db::PgConnection,
    plugin: &str,
    login: &sandbox::PluginLogin,
) -> Result<bool, DbError> {
    let row = conn
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM assay.plugin_roles r JOIN pg_roles p ON p.rolname = r.role_name
                            WHERE r.plugin = $1 AND r.role_name = $2 AND r.dropped_at IS NULL AND p.rolcanlogin)
                AND EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $3)",
            &[&plugin, &login.role, &login.schema],
        )
        .await
        .map_err(DbError::query("checking the plugin's role and schema"))?;
    Ok(row.get(0))
}

/// Whether `role` owns any function or procedure (with the gate on, none can
/// be made; one could have been while it was off).
async fn role_owns_functions(conn: &crate::db::PgConnection, role: &str) -> Result<bool, DbError> {
    let row = conn
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_proc p JOIN pg_roles r ON r.oid = p.proowner WHERE r.rolname = $1)",
            &[&role],
        )
        .await
        .map_err(DbError::query("looking up the plugin role's functions"))?;
    Ok(row.get(0))
}

/// The provisioning transaction: role, schema, state table and grants,
/// committed together.
async fn provision(
    conn: &mut crate::db::PgConnection,
    name: &str,
    settings: &SqlSettings,
    config: &Config,
) -> Result<sandbox::PluginLogin, SandboxError> {
    // The lock comes first: nothing is read before the other registrations
    // are done (see `sandbox::begin_provisioning`).
    let tx = sandbox::begin_provisioning(conn).await?;
    let login = sandbox::provision(&tx, name, &settings.grants, &config.sandbox).await?;
    tx.commit()
        .await
        .map_err(DbError::query("committing the plugin's sandbox"))?;
    Ok(login)
}

impl From<SandboxError> for RegisterError {
    fn from(e: SandboxError) -> Self {
        match e {
            SandboxError::Db(e) => RegisterError::Db(e),
            other => RegisterError::Refused(other.to_string()),
        }
    }
}
