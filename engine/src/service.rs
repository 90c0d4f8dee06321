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
//! The routes live by plane: [`data`] (analyze), [`admin`] (plugins,
//! rollback; its own router, so an authentication layer can sit in front
//! of it alone) and [`health`].
//!
//! Every error is `{"error": "..."}` with a status saying whose fault it is
//! (4xx: the request; 503: the engine or its database). In front of every
//! route is [`guard`] (Host, Origin, Content-Type); [`serve`] runs its own
//! accept loop to bound connections ([`connections`]) and shutdown.

pub mod admin;
mod body;
pub mod connections;
pub mod data;
pub mod guard;
pub mod health;
pub mod prompts;

pub use admin::RollbackRequest;
pub use data::AnalyzeRequest;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::config::{Config, ServerConfig};
use crate::db::Database;
use crate::pipeline::Pipeline;
use crate::pipeline::input::MAX_DOCUMENT_BYTES;
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
    /// The state of an engine built live ([`crate::engine::EngineBuilder::live`]);
    /// `None` for a fixed plugin set, which the service cannot swap (rollback).
    pub fn for_engine(engine: &crate::engine::Engine) -> Option<Arc<Self>> {
        let live = engine.live()?;
        Some(Arc::new(Self {
            live: Arc::clone(live),
            pipeline: engine.pipeline().clone(),
            db: Arc::clone(engine.db()),
            config: engine.config().clone(),
            started: SystemTime::now(),
        }))
    }

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
        .merge(data::routes())
        .merge(admin::routes())
        .merge(health::routes())
        .merge(prompts::routes())
        // Only where a route and method match: a wrong one is a 404 or 405.
        .route_layer(axum::middleware::from_fn(guard::json_bodies))
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
const ROUTES: &str = "POST /v1/analyze, GET /v1/prompts, GET /v1/plugins, POST /v1/plugins/{name}/rollback, GET /healthz";

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
    let registry = connections::Registry::new(max_connections, connections::EVICTABLE_AFTER);
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
