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
//!
//! Every error is `{"error": "..."}` with a status saying whose fault it is
//! (4xx: the request; 503: the engine or its database). In front of every
//! route is [`guard`] (Host, Origin, Content-Type); [`serve`] runs its own
//! accept loop to bound connections ([`connections`]) and shutdown.

mod body;
pub mod connections;
pub mod guard;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::config::{Config, ServerConfig};
use crate::db::Database;
use crate::pipeline::input::MAX_DOCUMENT_BYTES;
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

/// Largest request body: the largest document plus room for its JSON
/// envelope (escapes, metadata).
pub const MAX_BODY_BYTES: usize = MAX_DOCUMENT_BYTES + 1024 * 1024;

/// The HTTP routes, for a listener bound at `local_addr` (its real address:
/// the guard accepts only the `Host` names that reach it).
pub fn router(state: Arc<AppState>, local_addr: SocketAddr) -> Router {
    let hosts = Arc::new(guard::AllowedHosts::new(
        local_addr,
        &state.config.server.allowed_hosts,
    ));
    Router::new()
        .route("/v1/analyze", post(analyze))
        .route("/v1/plugins", get(plugins))
        .route("/v1/plugins/{name}/rollback", post(rollback))
        .route("/healthz", get(healthz))
        // After the routes: it applies to those added before it.
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        // Last, so that it is in front of every route and both fallbacks.
        .layer(axum::middleware::from_fn_with_state(hosts, guard::guard))
        .with_state(state)
}

/// An error response: a status and a message naming what is wrong.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

/// What the API offers, for 404 and 405 messages.
const ROUTES: &str =
    "POST /v1/analyze, GET /v1/plugins, POST /v1/plugins/{name}/rollback, GET /healthz";

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError(
        StatusCode::NOT_FOUND,
        format!("there is no {method} {}; the API has {ROUTES}", uri.path()),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{} does not take {method} (the Allow header says what it takes); the API has {ROUTES}",
            uri.path()
        ),
    )
}

/// How bodies are read under `server`.
fn body_limits(server: &ServerConfig) -> body::BodyLimits {
    body::BodyLimits {
        max_bytes: MAX_BODY_BYTES,
        timeout: Duration::from_millis(server.request_body_timeout_ms),
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

const ANALYZE_SHAPE: &str =
    r#"{"text": "...", "kind": "...", "metadata": {...}, "source": "..."} (only text is required)"#;

async fn analyze(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, ApiError> {
    let bytes = body::read(
        &headers,
        request.into_body(),
        body_limits(&state.config.server),
    )
    .await?;
    if body::is_blank(&bytes) {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("the request body is empty; send a JSON object like {ANALYZE_SHAPE}"),
        ));
    }
    let request: AnalyzeRequest = body::parse_object(&bytes, ANALYZE_SHAPE)?;
    // Everything else about the document (kind, text, NULs, sizes) is checked
    // by the pipeline, which answers `Rejected` for it.
    let input = DocumentInput {
        source: request
            .source
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "http".into()),
        kind: request.kind.unwrap_or_else(|| "transcript".into()),
        metadata: request.metadata.unwrap_or_default(),
        text: request.text,
    };
    match state.pipeline.run(input).await {
        Ok(report) => Ok(Json(report).into_response()),
        Err(PipelineError::Rejected(m)) => Err(ApiError(StatusCode::BAD_REQUEST, m)),
        Err(PipelineError::Db(e)) => Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the run could not be stored, nothing of it was kept: {e}"),
        )),
        Err(PipelineError::Overloaded(m)) => Ok((
            StatusCode::SERVICE_UNAVAILABLE,
            [(
                header::RETRY_AFTER,
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

const ROLLBACK_SHAPE: &str =
    r#"{"sha256": "<hash or prefix>"}, or {} or nothing for the previous version"#;

async fn rollback(
    State(state): State<Arc<AppState>>,
    name: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    request: Request,
) -> Result<Json<Value>, ApiError> {
    let Path(name) = name.map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("the plugin name in the path is not usable: {e}"),
        )
    })?;
    let bytes = body::read(
        &headers,
        request.into_body(),
        body_limits(&state.config.server),
    )
    .await?;
    // The body is optional: empty means "the previous version".
    let request: RollbackRequest = if body::is_blank(&bytes) {
        RollbackRequest::default()
    } else {
        body::parse_object(&bytes, ROLLBACK_SHAPE)?
    };
    let hash = request.sha256;
    // The resolved directory: the registry names its files by it.
    let done = history::rollback(&state.db, &state.live.plugin_dir(), &name, hash.as_deref())
        .await
        .map_err(|e| match e {
            history::RollbackError::NoSuchVersion(m) => ApiError(StatusCode::NOT_FOUND, m),
            history::RollbackError::Invalid(m) => ApiError(StatusCode::BAD_REQUEST, m),
            // The engine's fault, not the request's: try again later.
            history::RollbackError::Db(e) => ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the version history could not be read: {e}"),
            ),
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

/// At most this many connections turned away at once are answered 503 (the
/// answer takes a moment and a file descriptor); past it they are just closed.
const MAX_REFUSING: usize = 32;

/// How long a turned-away connection is given to take its 503.
const REFUSE_LINGER: Duration = Duration::from_secs(1);

/// After the grace, how long aborted connection tasks are waited for (they
/// end at their next await point; one stuck elsewhere is left behind).
const ABORT_WAIT: Duration = Duration::from_millis(500);

/// How long the accept loop pauses after an error that is not about one
/// connection (e.g. out of file descriptors), so that it does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// Checks the `[server]` settings `serve` depends on.
fn check_settings(server: &ServerConfig) -> std::io::Result<()> {
    let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, m);
    if server.max_connections == 0 {
        return Err(invalid(
            "server.max_connections is 0: no connection could be served; set at least 1 (default 512)".into(),
        ));
    }
    for (name, value) in [
        ("server.idle_timeout_ms", server.idle_timeout_ms),
        (
            "server.request_body_timeout_ms",
            server.request_body_timeout_ms,
        ),
    ] {
        if value == 0 {
            return Err(invalid(format!(
                "{name} is 0: every connection would be closed at once; set a positive number of milliseconds (default 30000)"
            )));
        }
    }
    Ok(())
}

/// Serves until `shutdown` resolves, then lets requests in flight finish for
/// up to `server.shutdown_grace_ms` and closes whatever is still open: it
/// returns within the grace plus a fraction of a second.
///
/// Connections: at most `server.max_connections` (the one idle the longest
/// makes room for a new one; if all are busy the new one gets 503), each
/// closed after `server.idle_timeout_ms` without a request in flight. HTTP/1.1.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let server = &state.config.server;
    check_settings(server)?;
    let local_addr = listener.local_addr()?;
    let grace = Duration::from_millis(server.shutdown_grace_ms);
    let idle_timeout = Duration::from_millis(server.idle_timeout_ms);
    let max_connections = server.max_connections;
    let app = router(Arc::clone(&state), local_addr);
    let registry = connections::Registry::new(max_connections);
    let refusing = Arc::new(tokio::sync::Semaphore::new(MAX_REFUSING));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        // A backstop only: the idle timeout below closes such a client at the
        // same moment, and also covers the time between requests.
        .header_read_timeout(idle_timeout);
    let (stopping_tx, stopping_rx) = tokio::sync::watch::channel(false);
    let mut tasks = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);

    loop {
        // Forget connections that ended, so the set holds only running ones.
        while let Some(ended) = tasks.try_join_next() {
            log_task_end(ended);
        }
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            // That one connection failed (the client gave up); go on.
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                tracing::error!(
                    "accepting a connection failed: {e}; trying again in {} ms",
                    ACCEPT_ERROR_PAUSE.as_millis()
                );
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => continue,
                }
            }
        };
        match registry.admit() {
            connections::Admission::Admitted(registration) => {
                tasks.spawn(serve_connection(
                    stream,
                    registration,
                    app.clone(),
                    http.clone(),
                    idle_timeout,
                    stopping_rx.clone(),
                ));
            }
            connections::Admission::Full => match Arc::clone(&refusing).try_acquire_owned() {
                Ok(permit) => {
                    tracing::warn!(
                        "{max_connections} connections open, each with a request in flight (server.max_connections); answering a new one 503"
                    );
                    tasks.spawn(async move {
                        refuse(stream, max_connections).await;
                        drop(permit);
                    });
                }
                // Too many being refused already: close it without an answer.
                Err(_) => drop(stream),
            },
        }
    }

    // Stop accepting: from now on new connections are refused by the system.
    drop(listener);
    tracing::info!(
        "shutting down: finishing the requests of {} connections (up to {} ms)",
        registry.len(),
        grace.as_millis()
    );
    // Ask every connection to finish: idle ones close now, busy ones after
    // their response. A receiver that missed this sees the changed value.
    let _ = stopping_tx.send(true);
    let drained = tokio::time::timeout(grace, async {
        while let Some(ended) = tasks.join_next().await {
            log_task_end(ended);
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            "{} connections still busy after {} ms (server.shutdown_grace_ms); closing them",
            tasks.len(),
            grace.as_millis()
        );
        tasks.abort_all();
        let _ = tokio::time::timeout(ABORT_WAIT, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        // Dropping the set detaches whatever has not ended yet.
    }
    Ok(())
}

/// Serves one connection until it ends, is idle for `idle_timeout`, is
/// evicted to make room, or (after shutdown was asked) finishes its request.
async fn serve_connection(
    stream: TcpStream,
    registration: connections::Registration,
    app: Router,
    http: http1::Builder,
    idle_timeout: Duration,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    let connection = Arc::clone(registration.connection());
    let tracked = Arc::clone(&connection);
    let service = TowerToHyperService::new(app);
    // A request is in flight from when hyper hands it over until the
    // service returns its response (writing the response out is not counted:
    // a client that does not read its answer is idle, and closed in time).
    let service = hyper::service::service_fn(move |request| {
        let in_flight = tracked.begin_request();
        let answer = hyper::service::Service::call(&service, request);
        async move {
            let response = answer.await;
            drop(in_flight);
            response
        }
    });
    let conn = http.serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    let mut asked_to_stop = false;
    loop {
        // Idle: close at idle_since + timeout. Busy: look again a timeout later.
        let deadline = connection
            .idle_since()
            .unwrap_or_else(tokio::time::Instant::now)
            + idle_timeout;
        tokio::select! {
            ended = conn.as_mut() => {
                if let Err(e) = ended {
                    tracing::debug!("connection ended with an error: {e}");
                }
                break;
            }
            () = connection.evicted() => {
                tracing::debug!("closing an idle connection to make room (server.max_connections)");
                break;
            }
            () = tokio::time::sleep_until(deadline) => {
                if connection.idle_since().is_some_and(|since| since.elapsed() >= idle_timeout) {
                    tracing::debug!("closing a connection idle for {} ms (server.idle_timeout_ms)", idle_timeout.as_millis());
                    break;
                }
            }
            _ = stopping.changed(), if !asked_to_stop => {
                asked_to_stop = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
    // Dropping the connection closes the socket; dropping the registration
    // stops counting it.
    drop(registration);
}

/// Answers a connection turned away at the limit: 503 with `Retry-After`.
async fn refuse(mut stream: TcpStream, max_connections: usize) {
    let body = json!({
        "error": format!(
            "too many connections: all {max_connections} (server.max_connections) have a request in flight; retry in a moment"
        ),
    })
    .to_string();
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(REFUSE_LINGER, async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await?;
        // Read (and drop) what the client sent until it closes: closing with
        // its request unread would reset the connection, and the client could
        // lose the answer.
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
}

/// Errors of one accepted connection, not of the listener.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

fn log_task_end(ended: Result<(), tokio::task::JoinError>) {
    if let Err(e) = ended
        && e.is_panic()
    {
        tracing::error!("a connection task panicked: {e}");
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
