//! A model server on loopback that speaks the OpenAI chat completions and
//! embeddings protocol with scripted answers: what the inference tests run
//! against (there is no model here, and a test must not reach the network).
//!
//! With nothing scripted, a chat request is answered `echo: <last message>`
//! with usage of a token per four bytes in and 5 out; an embeddings request
//! gets, per text, `[bytes, 1, 0]`. Every request's body and authorization
//! header are kept for the test to look at, and the most requests it had in
//! flight at once.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

/// One scripted answer.
#[derive(Debug, Clone)]
pub enum Scripted {
    /// A chat answer.
    Answer {
        /// Its text.
        text: String,
        /// `finish_reason`.
        finish: &'static str,
        /// `usage.prompt_tokens`.
        prompt_tokens: u64,
        /// `usage.completion_tokens`.
        completion_tokens: u64,
        /// `usage.prompt_tokens_details.cached_tokens`.
        cached_tokens: u64,
    },
    /// An error status, with `Retry-After` (seconds) or `retry-after-ms`.
    Status {
        /// The status.
        code: u16,
        /// A `Retry-After` value.
        retry_after: Option<&'static str>,
        /// A `retry-after-ms` value.
        retry_after_ms: Option<&'static str>,
        /// The body.
        body: String,
    },
    /// A body sent as it is, with 200.
    Raw(String),
    /// A `307 Temporary Redirect` to this URL.
    Redirect(String),
    /// The next answer, after a wait.
    Slow(Duration, Box<Scripted>),
}

impl Scripted {
    /// A chat answer of `text` with the given usage.
    pub fn answer(text: &str, prompt_tokens: u64, completion_tokens: u64) -> Self {
        Scripted::Answer {
            text: text.into(),
            finish: "stop",
            prompt_tokens,
            completion_tokens,
            cached_tokens: 0,
        }
    }

    /// An error status without retry hints.
    pub fn status(code: u16) -> Self {
        Scripted::Status {
            code,
            retry_after: None,
            retry_after_ms: None,
            body: json!({"error": {"message": format!("scripted {code}")}}).to_string(),
        }
    }
}

#[derive(Default)]
struct Shared {
    script: VecDeque<Scripted>,
    requests: Vec<(String, Value, Option<String>)>,
    in_flight: usize,
    most_in_flight: usize,
}

/// The running server; it stops when dropped.
pub struct FakeModel {
    /// Its API root, e.g. `http://127.0.0.1:40123/v1`.
    pub url: String,
    shared: Arc<Mutex<Shared>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeModel {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeModel {
    /// Starts one on a free loopback port.
    pub async fn start() -> Self {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let app = axum::Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/embeddings", post(embeddings))
            .with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let url = format!("http://{}/v1", listener.local_addr().expect("its address"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeModel { url, shared, task }
    }

    /// Answers the next requests with `answers`, in order.
    pub fn script(&self, answers: impl IntoIterator<Item = Scripted>) {
        self.lock().script.extend(answers);
    }

    /// Every request so far: (path, body, authorization header).
    pub fn requests(&self) -> Vec<(String, Value, Option<String>)> {
        self.lock().requests.clone()
    }

    /// The requests it has in flight now.
    pub fn in_flight(&self) -> usize {
        self.lock().in_flight
    }

    /// The most requests it had in flight at once.
    pub fn most_in_flight(&self) -> usize {
        self.lock().most_in_flight
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn begin(
    shared: &Mutex<Shared>,
    path: &str,
    headers: &HeaderMap,
    body: &Value,
) -> Option<Scripted> {
    let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    s.requests.push((path.to_string(), body.clone(), auth));
    s.in_flight += 1;
    s.most_in_flight = s.most_in_flight.max(s.in_flight);
    s.script.pop_front()
}

fn end(shared: &Mutex<Shared>) {
    let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
    s.in_flight -= 1;
}

async fn play(shared: &Mutex<Shared>, scripted: Scripted, model: &str) -> Response {
    let mut scripted = scripted;
    while let Scripted::Slow(wait, next) = scripted {
        tokio::time::sleep(wait).await;
        scripted = *next;
    }
    let response = match scripted {
        Scripted::Answer {
            text,
            finish,
            prompt_tokens,
            completion_tokens,
            cached_tokens,
        } => Json(json!({
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
                "prompt_tokens_details": {"cached_tokens": cached_tokens},
            },
        }))
        .into_response(),
        Scripted::Status {
            code,
            retry_after,
            retry_after_ms,
            body,
        } => {
            let mut response = (
                StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                body,
            )
                .into_response();
            if let Some(v) = retry_after {
                response.headers_mut().insert("retry-after", v.parse().expect("a header value"));
            }
            if let Some(v) = retry_after_ms {
                response.headers_mut().insert("retry-after-ms", v.parse().expect("a header value"));
            }
            response
        }
        Scripted::Raw(body) => (StatusCode::OK, body).into_response(),
        Scripted::Redirect(to) => {
            let mut response = StatusCode::TEMPORARY_REDIRECT.into_response();
            response.headers_mut().insert("location", to.parse().expect("a header value"));
            response
        }
        Scripted::Slow(..) => unreachable!("unwrapped above"),
    };
    end(shared);
    response
}

async fn chat(
    State(shared): State<Arc<Mutex<Shared>>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let scripted = begin(&shared, "chat/completions", &headers, &body).unwrap_or_else(|| {
        let last = body["messages"]
            .as_array()
            .and_then(|m| m.last())
            .and_then(|m| m["content"].as_str())
            .unwrap_or("")
            .to_string();
        let prompt = (last.len() as u64).div_ceil(4);
        Scripted::answer(&format!("echo: {last}"), prompt, 5)
    });
    let model = body["model"].as_str().unwrap_or("").to_string();
    play(&shared, scripted, &model).await
}

async fn embeddings(
    State(shared): State<Arc<Mutex<Shared>>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if let Some(scripted) = begin(&shared, "embeddings", &headers, &body) {
        let model = body["model"].as_str().unwrap_or("").to_string();
        return play(&shared, scripted, &model).await;
    }
    let texts: Vec<String> = body["input"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let tokens: u64 = texts.iter().map(|t| t.len() as u64).sum();
    let data: Vec<Value> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| json!({"object": "embedding", "index": i, "embedding": [t.len() as f32, 1.0, 0.0]}))
        .collect();
    end(&shared);
    Json(json!({
        "object": "list",
        "model": body["model"],
        "data": data,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }))
    .into_response()
}
