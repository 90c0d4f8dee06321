//! `assay up`: the engine as a service. It watches the plugin directory and
//! serves HTTP:
//!
//! - `POST /v1/analyze`: a JSON document in (`text`, optional `kind`, `metadata`,
//!   `source`); the stored run (run id, findings, what each plugin did) out;
//! - `GET /v1/plugins`: every plugin source with name, stage, version, hash,
//!   load time, status and last load error;
//! - `POST /v1/plugins/{name}/rollback`: re-activate an earlier version (body
//!   `{"sha256": "<prefix>"}`, or empty for the previous one);
//! - `GET /healthz`: engine status (`degraded` while PostgreSQL does not
//!   answer), PostgreSQL version and address, pool sizes, and each plugin's
//!   recent failures by kind.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::config::Config;
use crate::db::Database;
use crate::pipeline::input::{MAX_DOCUMENT_BYTES, valid_kind};
use crate::pipeline::{DocumentInput, Pipeline, PipelineError};
use crate::registry::history;
use crate::registry::live::LiveRegistry;
use crate::runtime::Runtime;

/// What the handlers share.
pub struct AppState {
    /// The live plugin set.
    pub live: Arc<LiveRegistry>,
    /// The pipeline over it.
    pub pipeline: Pipeline,
    /// The database.
    pub db: Arc<Database>,
    /// The configuration.
    pub config: Config,
    /// When the service started.
    pub started: SystemTime,
}

impl AppState {
    /// Wires a pipeline to the live registry.
    pub fn new(
        runtime: Arc<Runtime>,
        live: Arc<LiveRegistry>,
        db: Arc<Database>,
        config: Config,
    ) -> Arc<Self> {
        let pipeline = Pipeline::live(runtime, live.handle(), Arc::clone(&db), &config);
        Arc::new(Self {
            live,
            pipeline,
            db,
            config,
            started: SystemTime::now(),
        })
    }
}

/// The HTTP routes.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/analyze", post(analyze))
        .route("/v1/plugins", get(plugins))
        .route("/v1/plugins/{name}/rollback", post(rollback))
        .route("/healthz", get(healthz))
        // Room for the largest document plus its JSON envelope.
        .layer(DefaultBodyLimit::max(MAX_DOCUMENT_BYTES + 1024 * 1024))
        .with_state(state)
}

/// An error response: a status and a message naming what is wrong.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

/// The body of `POST /v1/analyze`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalyzeRequest {
    /// The document text.
    pub text: String,
    /// Its kind (default `transcript`).
    #[serde(default)]
    pub kind: Option<String>,
    /// Metadata (a JSON object).
    #[serde(default)]
    pub metadata: Option<Map<String, Value>>,
    /// Where it comes from (default `http`).
    #[serde(default)]
    pub source: Option<String>,
}

async fn analyze(
    State(state): State<Arc<AppState>>,
    Json(request): Json<AnalyzeRequest>,
) -> Result<Response, ApiError> {
    let bad = |m: String| ApiError(StatusCode::BAD_REQUEST, m);
    let kind = request.kind.unwrap_or_else(|| "transcript".into());
    if !valid_kind(&kind) {
        return Err(bad(format!(
            "kind {kind:?} is not valid: use up to 64 letters, digits, `_`, `.`, `:` or `-`"
        )));
    }
    if request.text.trim().is_empty() {
        return Err(bad("text is empty; there is nothing to analyse".into()));
    }
    if request.text.contains('\0') {
        return Err(bad("text contains NUL bytes".into()));
    }
    let input = DocumentInput {
        source: request
            .source
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "http".into()),
        kind,
        metadata: request.metadata.unwrap_or_default(),
        text: request.text,
    };
    match state.pipeline.run(input).await {
        Ok(report) => Ok(Json(report).into_response()),
        Err(PipelineError::Db(e)) => Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the run could not be stored, nothing of it was kept: {e}"),
        )),
        Err(PipelineError::Overloaded(m)) => Ok((
            StatusCode::SERVICE_UNAVAILABLE,
            [(
                axum::http::header::RETRY_AFTER,
                state.pipeline.retry_after_s().to_string(),
            )],
            Json(json!({ "error": format!("overloaded, nothing was stored: {m}"), "overloaded": true })),
        )
            .into_response()),
    }
}

async fn plugins(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({ "plugins": state.live.statuses() }))
}

/// The body of `POST /v1/plugins/{name}/rollback`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// Hash (or a unique prefix) of the version; default: the previous one.
    #[serde(default)]
    pub sha256: Option<String>,
}

async fn rollback(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    // The body is optional: empty means "the previous version".
    let request: RollbackRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RollbackRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"sha256\": \"...\"}} or nothing: {e}"),
            )
        })?
    };
    let hash = request.sha256;
    let done = history::rollback(&state.db, &state.config.plugins.dir, &name, hash.as_deref())
        .await
        .map_err(|e| match e {
            history::RollbackError::NoSuchVersion(m) => ApiError(StatusCode::NOT_FOUND, m),
            other => ApiError(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
        })?;
    // Load it now rather than waiting for the watcher (which will then see an
    // unchanged hash and do nothing).
    let outcome = state.live.file_event(&done.path).await;
    Ok(Json(json!({
        "plugin": name,
        "sha256": done.sha256,
        "version": done.version,
        "path": done.path.display().to_string(),
        "outcome": format!("{outcome:?}"),
    })))
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
    let failures = state.pipeline.failures().summary();
    let engine_pool = state.db.pool.state();
    let plugin_pools: Map<String, Value> = registry
        .plugins()
        .iter()
        .map(|p| {
            let s = p.pool.state();
            (
                p.name().to_string(),
                json!(PoolState {
                    connections: s.connections,
                    idle: s.idle_connections
                }),
            )
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
    }))
}

/// Serves until `shutdown` resolves, then lets in-flight requests finish for up
/// to `server.shutdown_grace_ms`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let grace = Duration::from_millis(state.config.server.shutdown_grace_ms);
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let signal = async move {
        shutdown.await;
        tracing::info!("shutting down: finishing requests in flight");
        let _ = stopping_tx.send(());
    };
    let server = axum::serve(listener, router(state)).with_graceful_shutdown(signal);
    let deadline = async move {
        if stopping_rx.await.is_ok() {
            tokio::time::sleep(grace).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        result = server => result,
        () = deadline => {
            tracing::warn!("requests still running after {} ms; stopping anyway", grace.as_millis());
            Ok(())
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}
