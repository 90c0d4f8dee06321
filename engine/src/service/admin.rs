//! The admin plane: what is loaded (`GET /v1/plugins`) and rollback
//! (`POST /v1/plugins/{name}/rollback`). Its own router, so that an
//! authentication layer can sit in front of it alone.

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState, body, body_limits};
use crate::registry::history;
use crate::registry::live::ReloadOutcome;

/// The admin plane's routes.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/plugins", get(plugins))
        .route("/v1/plugins/{name}/rollback", post(rollback))
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
    let (outcome, reason) = match state.live.file_event(&done.path).await {
        // Loaded now, or already (the watcher saw the file first, or it was
        // the current version): either way it is the version that serves.
        ReloadOutcome::Loaded { .. } | ReloadOutcome::Unchanged => ("serving", None),
        ReloadOutcome::Refused(m) => ("refused", Some(m)),
        ReloadOutcome::Unloaded(m) => ("unloaded", Some(m)),
        ReloadOutcome::Ignored => ("ignored", None),
    };
    Ok(Json(json!({
        "plugin": name,
        "sha256": done.sha256,
        "version": done.version,
        "path": done.path.display().to_string(),
        "outcome": outcome,
        "reason": reason,
    })))
}
