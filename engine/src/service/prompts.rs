//! `GET /v1/prompts`: the prompt library's current versions, optionally of
//! one scenario, report type or building type
//! (`?scenario=design-audit&building_type=hotel`).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::{ApiError, AppState};
use crate::prompts::store;

const FILTERS: [&str; 3] = ["scenario", "report_type", "building_type"];

/// The prompt routes.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/v1/prompts", get(list))
}

async fn list(
    State(state): State<Arc<AppState>>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    if let Some(unknown) = query.keys().find(|k| !FILTERS.contains(&k.as_str())) {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!(
                "unknown query parameter {unknown:?}; GET /v1/prompts takes {}",
                FILTERS.join(", ")
            ),
        ));
    }
    // PostgreSQL cannot hold a NUL in text: the caller's mistake, not a
    // library that cannot be read.
    if let Some((name, _)) = query.iter().find(|(_, value)| value.contains('\0')) {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("query parameter {name:?} contains a NUL character; no prompt is named so"),
        ));
    }
    let filter = store::Filter {
        scenario: query.get("scenario").cloned(),
        report_type: query.get("report_type").cloned(),
        building_type: query.get("building_type").cloned(),
    };
    let prompts = store::list(&state.db, &filter).await.map_err(|e| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the prompt library cannot be read: {e}"),
        )
    })?;
    Ok(Json(json!({ "prompts": prompts })))
}
