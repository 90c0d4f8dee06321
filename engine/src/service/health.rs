//! Health: `GET /healthz`, the engine, its database and its pools.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::AppState;

/// The health routes.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/healthz", get(healthz))
}

#[derive(Serialize)]
struct PoolState {
    connections: u32,
    idle: u32,
}

/// How long `/healthz` waits for the database to answer.
const HEALTH_DB_TIMEOUT: Duration = Duration::from_secs(2);

async fn healthz(State(state): State<Arc<AppState>>) -> Json<Value> {
    let registry = state.live.snapshot();
    // The engine keeps serving while the database is away; say so.
    let database = match tokio::time::timeout(HEALTH_DB_TIMEOUT, async {
        let conn = state.db.connection().await.map_err(|e| e.to_string())?;
        conn.simple_query("").await.map_err(|e| e.to_string())
    })
    .await
    {
        Ok(Ok(_)) => json!({ "status": "ok" }),
        Ok(Err(e)) => json!({ "status": "unavailable", "error": e }),
        Err(_) => {
            json!({ "status": "unavailable", "error": format!("no answer within {} ms", HEALTH_DB_TIMEOUT.as_millis()) })
        }
    };
    // Model usage per plugin, from every engine's record on this database;
    // null when the database does not answer.
    let inference = tokio::time::timeout(
        HEALTH_DB_TIMEOUT,
        crate::capability::inference::ledger::usage_by_plugin(&state.db),
    )
    .await
    .ok()
    .and_then(Result::ok)
    .map(|usage| {
        usage
            .into_iter()
            .map(|u| (u.plugin.clone(), json!(u)))
            .collect::<Map<String, Value>>()
    });
    let failures = state.pipeline.failures().summary();
    let engine_pool = state.db.pool.state();
    let plugin_pools: Map<String, Value> = registry
        .plugins()
        .iter()
        // A plugin's pool is what its SQL capability reports of it.
        .filter_map(|p| {
            let sql = p.health().remove("sql")?;
            Some((p.name().to_string(), sql))
        })
        .collect();
    let cfg = state.db.pg_config();
    let host = cfg.get_hosts().first().map(|h| match h {
        tokio_postgres::config::Host::Tcp(h) => h.clone(),
        tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
    });
    let status = if database["status"] == "ok" {
        "ok"
    } else {
        "degraded"
    };
    Json(json!({
        "status": status,
        "uptime_s": state.started.elapsed().map(|d| d.as_secs()).unwrap_or(0),
        "failures": {
            "window_s": crate::pipeline::failures::RECENT_WINDOW.as_secs(),
            "by_plugin": failures,
        },
        "postgres": {
            "status": database,
            "version": state.db.server_version,
            "host": host,
            "port": cfg.get_ports().first(),
            "embedded": state.db.is_embedded(),
        },
        "pools": {
            "engine": PoolState { connections: engine_pool.connections, idle: engine_pool.idle_connections },
            "plugins": plugin_pools,
        },
        "plugins": { "loaded": registry.plugins().len(), "refused": registry.problems.len() },
        "inference": { "by_plugin": inference },
    }))
}
