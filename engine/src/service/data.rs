//! The data plane: `POST /v1/analyze`, a document in, its run out.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{ApiError, AppState, body, body_limits};
use crate::pipeline::{DocumentInput, PipelineError};

/// The data plane's routes.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/v1/analyze", post(analyze))
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
