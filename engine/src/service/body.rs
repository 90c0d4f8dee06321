//! Request bodies, read and parsed by hand so that every mistake gets the
//! API's JSON error with the status that says whose mistake it is (axum's
//! `Json` extractor answers in plain text, and accepts an array where an
//! object is meant, because serde fills a struct from a sequence).

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode, header};
use futures::StreamExt as _;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::ApiError;

/// How much of a body is read, and for how long.
#[derive(Debug, Clone, Copy)]
pub(super) struct BodyLimits {
    /// Largest body accepted, in bytes.
    pub max_bytes: usize,
    /// `server.request_body_timeout_ms`: the whole body must arrive within it.
    pub timeout: Duration,
}

/// Reads the whole body: 413 past `max_bytes` (refused before reading when
/// `Content-Length` announces it), 408 if it does not arrive in time, 400 if
/// the client's stream breaks off.
pub(super) async fn read(
    headers: &HeaderMap,
    body: Body,
    limits: BodyLimits,
) -> Result<Bytes, ApiError> {
    // The size when the client announced it; a streamed body is cut off at
    // the limit, so all that is known then is that it is larger.
    let too_large = |announced: Option<u64>| {
        let size = match announced {
            Some(bytes) => format!("is {bytes} bytes"),
            None => "is larger than that".to_string(),
        };
        ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "at most {} bytes of request body are accepted (a document of up to {} bytes plus its JSON envelope), and this one {size}",
                limits.max_bytes,
                crate::pipeline::input::MAX_DOCUMENT_BYTES
            ),
        )
    };
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(length) = announced
        && length > limits.max_bytes as u64
    {
        return Err(too_large(Some(length)));
    }
    let collect = async {
        let mut stream = body.into_data_stream();
        let mut buffer = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                ApiError(
                    StatusCode::BAD_REQUEST,
                    format!("the request body could not be read: {e}"),
                )
            })?;
            if buffer.len() + chunk.len() > limits.max_bytes {
                return Err(too_large(None));
            }
            buffer.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(buffer))
    };
    match tokio::time::timeout(limits.timeout, collect).await {
        Ok(result) => result,
        Err(_) => Err(ApiError(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body did not arrive within {} ms (server.request_body_timeout_ms); send it at once",
                limits.timeout.as_millis()
            ),
        )),
    }
}

/// Whether a body holds nothing but whitespace.
pub(super) fn is_blank(body: &[u8]) -> bool {
    body.iter().all(u8::is_ascii_whitespace)
}

/// Parses a body that must be a JSON object of the shape `T`: 400 if it is
/// not JSON at all, 422 if it is JSON of the wrong shape (not an object, an
/// unknown field, a field of the wrong type). `expected` shows the right shape.
pub(super) fn parse_object<T: DeserializeOwned>(
    body: &[u8],
    expected: &str,
) -> Result<T, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("the request body is not valid JSON ({e}); send an object like {expected}"),
        )
    })?;
    if !value.is_object() {
        return Err(ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "the request body is JSON {}, not an object; send an object like {expected}",
                kind_of(&value)
            ),
        ));
    }
    serde_json::from_value(value).map_err(|e| {
        ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("the request body does not have the expected fields ({e}); send an object like {expected}"),
        )
    })
}

/// "an array", "a string", … for messages.
fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
