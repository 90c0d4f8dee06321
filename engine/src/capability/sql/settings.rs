//! The SQL capability's settings for one plugin, gathered from where the
//! configuration keeps them: `[sandbox]` (caps, pools, the gate),
//! `[database]` (connect timeout), `[limits]` with `[limits.plugins.NAME]`
//! (statement timeout, deadline) and `[plugins.grants.NAME]`.

use std::time::Duration;

use super::pool::PoolSettings;
use super::session::SqlCaps;
use crate::config::{Config, PluginGrants};
use crate::runtime::call::CallLimits;

/// Everything SQL needs to know of one plugin's configuration.
#[derive(Debug, Clone)]
pub struct SqlSettings {
    /// Caps of each call.
    pub caps: SqlCaps,
    /// What the operator grants it beyond its own schema.
    pub grants: PluginGrants,
    /// Most connections of its pool.
    pub max_connections: u32,
    /// How long to wait for a connection.
    pub connect_timeout: Duration,
    /// How long an idle connection is kept.
    pub idle_timeout: Duration,
}

impl SqlSettings {
    /// The settings of plugin `name`, whose limits are `limits`.
    pub fn for_plugin(config: &Config, name: &str, limits: &CallLimits) -> Self {
        Self {
            caps: SqlCaps::from_config(&config.sandbox, limits.statement_timeout),
            grants: config.plugins.grants.get(name).cloned().unwrap_or_default(),
            max_connections: config.sandbox.connections_per_plugin,
            connect_timeout: Duration::from_millis(config.database.connect_timeout_ms),
            idle_timeout: Duration::from_millis(config.sandbox.idle_timeout_ms),
        }
    }

    /// Its pool's settings, for connections as `schema`'s owner.
    pub fn pool(&self, schema: &str) -> PoolSettings {
        PoolSettings {
            max_connections: self.max_connections,
            connect_timeout: self.connect_timeout,
            idle_timeout: self.idle_timeout,
            statement_timeout: self.caps.statement_timeout,
            search_path: schema.to_string(),
        }
    }
}
