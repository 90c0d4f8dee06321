//! The HTTP service as an outside client meets it: a real `assay::service::serve`
//! on a loopback port, spoken to with raw HTTP/1.1 over TCP (the request bytes
//! written by hand, so a test can send exactly what an attacker would).
//!
//! Timings are measured but only generous bounds are asserted: the machine
//! running the tests may be slow and busy.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use assay::config::Config;
use assay::service::AppState;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::support::{TestDb, built_plugin, service_state, shared_tempdir};

/// How long any single exchange may take before a test gives up on it.
const PATIENCE: Duration = Duration::from_secs(10);

/// A running server.
struct Server {
    addr: SocketAddr,
    state: Arc<AppState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    _db: TestDb,
    _dir: tempfile::TempDir,
}

impl Server {
    /// A server with no plugins (documents still run and are stored), the
    /// test's settings applied.
    async fn start(adjust: impl FnOnce(&mut Config)) -> Self {
        Self::start_in(shared_tempdir(), |c| {
            c.plugins.bundled = false;
            adjust(c);
        })
        .await
    }

    /// A server over the plugins in `dir`.
    async fn start_in(dir: tempfile::TempDir, adjust: impl FnOnce(&mut Config)) -> Self {
        let (state, db) = service_state(dir.path(), adjust).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(assay::service::serve(
            listener,
            Arc::clone(&state),
            async move {
                let _ = stopped.await;
            },
        ));
        Self {
            addr,
            state,
            stop: Some(stop),
            task: Some(task),
            _db: db,
            _dir: dir,
        }
    }

    /// The `Host` a real client sends.
    fn host(&self) -> String {
        self.addr.to_string()
    }

    async fn connect(&self) -> TcpStream {
        TcpStream::connect(self.addr).await.unwrap()
    }

    /// Sends `request` on a new connection and reads the answer.
    async fn send(&self, request: &Request) -> Response {
        let mut stream = self.connect().await;
        stream
            .write_all(&request.bytes(&self.host()))
            .await
            .unwrap();
        read_response(&mut stream).await
    }

    /// Triggers shutdown; returns how long `serve` took to return after it.
    async fn stop(&mut self) -> Duration {
        let started = Instant::now();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.take().expect("stopped once");
        let result = tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("serve returns after shutdown")
            .unwrap();
        result.unwrap();
        started.elapsed()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// One request, written by hand. `Host` is the server's real address unless
/// replaced or removed; a body gets its `Content-Length`.
#[derive(Clone)]
struct Request {
    method: String,
    path: String,
    host: Option<Option<String>>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn new(method: &str, path: &str) -> Self {
        Self {
            method: method.into(),
            path: path.into(),
            host: None,
            headers: vec![("Connection".into(), "close".into())],
            body: Vec::new(),
        }
    }

    fn get(path: &str) -> Self {
        Self::new("GET", path)
    }

    /// A POST of `body` as JSON, as a real client sends it.
    fn post(path: &str, body: &str) -> Self {
        let mut request = Self::new("POST", path).header("Content-Type", "application/json");
        request.body = body.as_bytes().to_vec();
        request
    }

    /// Sets (or replaces) a header.
    fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Removes a header.
    fn without(mut self, name: &str) -> Self {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self
    }

    fn host(mut self, host: Option<&str>) -> Self {
        self.host = Some(host.map(str::to_string));
        self
    }

    fn bytes(&self, real_host: &str) -> Vec<u8> {
        let mut head = format!("{} {} HTTP/1.1\r\n", self.method, self.path);
        match &self.host {
            None => head.push_str(&format!("Host: {real_host}\r\n")),
            Some(Some(host)) => head.push_str(&format!("Host: {host}\r\n")),
            Some(None) => {}
        }
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if !self.body.is_empty() || self.method == "POST" {
            head.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON; panics (showing it) if it is not.
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {} with a body that is not JSON ({e}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The API's `{"error": "..."}`; panics if the body has another shape.
    fn error(&self) -> String {
        let body = self.json();
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{body}"
        );
        body["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error message in {body}"))
            .to_string()
    }
}

/// Reads one response: the head, then `Content-Length` bytes (or up to EOF).
async fn read_response(stream: &mut TcpStream) -> Response {
    tokio::time::timeout(PATIENCE, async {
        let mut buf = Vec::new();
        let head_end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at;
            }
            let mut chunk = [0u8; 8192];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(
                n > 0,
                "connection closed before a response: {:?}",
                String::from_utf8_lossy(&buf)
            );
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap();
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
            .collect();
        let mut body = buf[head_end + 4..].to_vec();
        let length = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.parse::<usize>().unwrap());
        loop {
            if length.is_some_and(|l| body.len() >= l) {
                break;
            }
            let mut chunk = [0u8; 8192];
            let n = stream.read(&mut chunk).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
        Response {
            status,
            headers,
            body,
        }
    })
    .await
    .expect("a response in time")
}

/// Whether the server closed `stream` (EOF or a reset) within `within`;
/// anything the server sends first is read and ignored.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    tokio::time::timeout(within, async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

// ---- A. connections cannot be held open ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_after_the_idle_timeout() {
    let server = Server::start(|c| c.server.idle_timeout_ms = 300).await;

    // A connection that never sends a byte.
    let mut silent = server.connect().await;
    let started = Instant::now();
    assert!(
        closed_within(&mut silent, Duration::from_secs(5)).await,
        "a silent connection is still open after 5 s (server.idle_timeout_ms = 300)"
    );
    eprintln!("silent connection closed after {:?}", started.elapsed());

    // A keep-alive connection, idle after its request was answered.
    let mut kept = server.connect().await;
    let request = Request::get("/healthz").header("Connection", "keep-alive");
    kept.write_all(&request.bytes(&server.host()))
        .await
        .unwrap();
    let response = read_response(&mut kept).await;
    assert_eq!(response.status, 200, "{:?}", response.json());
    let started = Instant::now();
    assert!(
        closed_within(&mut kept, Duration::from_secs(5)).await,
        "an idle keep-alive connection is still open after 5 s"
    );
    eprintln!("keep-alive connection closed after {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_trickling_its_headers_is_closed() {
    let server = Server::start(|c| c.server.idle_timeout_ms = 300).await;
    let stream = server.connect().await;
    let (mut read, mut write) = stream.into_split();
    // A header of 300 bytes, one byte every 100 ms: 30 s if nobody stops it.
    let head = format!(
        "GET /healthz HTTP/1.1\r\nHost: {}\r\nX-Slow: {}\r\n\r\n",
        server.host(),
        "a".repeat(300)
    );
    let trickle = tokio::spawn(async move {
        for byte in head.into_bytes() {
            if write.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let started = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        let mut chunk = [0u8; 1024];
        loop {
            match read.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok();
    trickle.abort();
    assert!(
        closed,
        "a connection trickling its headers is still open after 5 s"
    );
    eprintln!("trickling connection closed after {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_limit_idle_connections_make_room() {
    let server = Server::start(|c| c.server.max_connections = 8).await;
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(server.connect().await);
        // In order, so that the first is the one idle the longest.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Idle long enough to be closed for a newcomer (a connection that has
    // only just opened is not).
    tokio::time::sleep(assay::service::connections::EVICTABLE_AFTER + Duration::from_millis(200))
        .await;

    // Each new connection (kept open after its answer, so the count stays at
    // the limit) displaces the connection idle the longest: the held ones, in
    // the order they were opened. /healthz answers every time.
    let mut newer = Vec::new();
    for (i, held) in idle.iter_mut().enumerate() {
        let mut stream = server.connect().await;
        let request = Request::get("/healthz").header("Connection", "keep-alive");
        stream
            .write_all(&request.bytes(&server.host()))
            .await
            .unwrap();
        let response = read_response(&mut stream).await;
        assert_eq!(response.status, 200, "{:?}", response.json());
        assert!(
            closed_within(held, Duration::from_secs(5)).await,
            "held connection {i}, the one idle the longest, was not closed to make room"
        );
        newer.push(stream);
    }
    // The newer connections were not the ones closed: each still answers.
    for stream in &mut newer {
        let request = Request::get("/healthz").header("Connection", "keep-alive");
        stream
            .write_all(&request.bytes(&server.host()))
            .await
            .unwrap();
        assert_eq!(read_response(stream).await.status, 200);
    }
}

/// More clients at once than connections allowed, each sending a document
/// of a megabyte: each gets an answer, 200 or 503, none a connection closed
/// under it before its request was read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_past_the_connection_limit_is_answered_not_dropped() {
    let server = Server::start(|c| c.server.max_connections = 4).await;
    let body = json!({ "text": "hello world ".repeat(90_000) }).to_string();
    let request = Request::post("/v1/analyze", &body);
    for _ in 0..3 {
        let answers = futures::future::join_all((0..8).map(|_| server.send(&request))).await;
        let statuses: Vec<u16> = answers.iter().map(|r| r.status).collect();
        assert!(
            statuses.iter().all(|s| *s == 200 || *s == 503),
            "{statuses:?}"
        );
        assert!(statuses.contains(&200), "{statuses:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_connection_busy_a_new_one_gets_503() {
    let server = Server::start(|c| c.server.max_connections = 2).await;
    // Two requests in flight: their bodies are announced but not yet sent.
    let mut busy = Vec::new();
    for _ in 0..2 {
        let mut stream = server.connect().await;
        stream
            .write_all(
                format!(
                    "POST /v1/analyze HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"te",
                    server.host()
                )
                .as_bytes(),
            )
            .await
            .unwrap();
        busy.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let response = server.send(&Request::get("/healthz")).await;
    assert_eq!(response.status, 503);
    assert_eq!(response.header("retry-after"), Some("1"));
    assert!(
        response.error().contains("server.max_connections"),
        "{:?}",
        response.json()
    );
    // The busy ones were not sacrificed: they still get their answer.
    for mut stream in busy {
        stream
            .write_all(format!("xt\": \"hi\"}}{}", " ".repeat(86)).as_bytes())
            .await
            .unwrap();
        let response = read_response(&mut stream).await;
        assert_eq!(response.status, 200, "{:?}", response.json());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_sent_too_slowly_gets_408() {
    let server = Server::start(|c| c.server.request_body_timeout_ms = 300).await;
    let mut stream = server.connect().await;
    stream
        .write_all(
            format!(
                "POST /v1/analyze HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"text\"",
                server.host()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let started = Instant::now();
    let response = read_response(&mut stream).await;
    assert_eq!(response.status, 408, "{:?}", response.json());
    assert!(
        response.error().contains("server.request_body_timeout_ms"),
        "{:?}",
        response.json()
    );
    eprintln!("408 after {:?}", started.elapsed());
}

// ---- B. shutdown keeps to its grace ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_requests_still_running_after_the_grace() {
    let dir = shared_tempdir();
    std::fs::write(dir.path().join("faulty.wasm"), built_plugin("faulty.wasm")).unwrap();
    let grace = Duration::from_millis(300);
    let mut server = Server::start_in(dir, |c| {
        c.plugins.bundled = false;
        c.server.shutdown_grace_ms = grace.as_millis() as u64;
        // Long enough that the plugin keeps sleeping through the whole test.
        c.limits.call_timeout_ms = 20_000;
    })
    .await;
    assert!(
        server
            .state
            .live
            .snapshot()
            .plugins()
            .iter()
            .any(|p| p.name() == "faulty"),
        "faulty loads"
    );
    let mut sleeping = server.connect().await;
    sleeping
        .write_all(
            &Request::post("/v1/analyze", r##"{"text": "#fault:sleep"}"##).bytes(&server.host()),
        )
        .await
        .unwrap();
    // Let the request reach the plugin.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let took = server.stop().await;
    eprintln!("serve returned {took:?} after shutdown (grace {grace:?})");
    assert!(
        took < grace + Duration::from_secs(3),
        "serve returned {took:?} after shutdown; the grace is {grace:?}"
    );
    // The request past the grace was ended with its connection, not left running.
    assert!(
        closed_within(&mut sleeping, Duration::from_secs(3)).await,
        "the connection of a request running past the grace is still open"
    );
    // And nothing is accepted any more.
    assert!(TcpStream::connect(server.addr).await.is_err());
}

// ---- C. the guard: Host, Origin, Sec-Fetch-Site, Content-Type ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_engines_own_host_names_are_answered() {
    let server = Server::start(|c| {
        c.server.allowed_hosts = vec!["assay.internal".into(), "Other.Example:8080".into()];
    })
    .await;
    let port = server.addr.port();
    for host in [
        server.host(),
        format!("localhost:{port}"),
        format!("LocalHost:{port}"),
        format!("[::1]:{port}"),
        format!("assay.internal:{port}"),
        format!("ASSAY.internal:{port}"),
        "other.example:8080".into(),
    ] {
        let response = server
            .send(&Request::get("/healthz").host(Some(&host)))
            .await;
        assert_eq!(response.status, 200, "Host: {host}: {:?}", response.json());
    }
    for host in [
        "assay".to_string(),
        "evil.example".into(),
        format!("evil.example:{port}"),
        "127.0.0.1".into(),
        format!("127.0.0.1:{}", port.wrapping_add(1)),
        "assay.internal".into(),
        format!("other.example:{port}"),
    ] {
        let response = server
            .send(&Request::get("/healthz").host(Some(&host)))
            .await;
        assert_eq!(response.status, 403, "Host: {host}");
        let error = response.error();
        assert!(error.contains("server.allowed_hosts"), "{error}");
    }
    let response = server.send(&Request::get("/healthz").host(None)).await;
    assert_eq!(response.status, 400);
    assert!(response.error().contains("Host"), "{:?}", response.json());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_requests_cannot_change_anything() {
    let server = Server::start(|_| {}).await;
    let analyze = Request::post("/v1/analyze", r#"{"text": "hello"}"#);
    for (name, value) in [
        ("Origin", "http://evil.example".to_string()),
        ("Origin", "null".into()),
        ("Origin", format!("https://{}", server.host())),
        ("Origin", format!("http://{}.evil.example", server.host())),
        ("Sec-Fetch-Site", "cross-site".into()),
        ("Sec-Fetch-Site", "same-site".into()),
    ] {
        let response = server.send(&analyze.clone().header(name, &value)).await;
        assert_eq!(response.status, 403, "{name}: {value}");
        assert!(!response.error().is_empty());
    }
    // The page's own origin, and a fetch the user made themselves, are fine.
    for (name, value) in [
        ("Origin", format!("http://{}", server.host())),
        ("Origin", format!("http://localhost:{}", server.addr.port())),
        ("Sec-Fetch-Site", "same-origin".into()),
        ("Sec-Fetch-Site", "none".into()),
    ] {
        let response = server.send(&analyze.clone().header(name, &value)).await;
        assert_eq!(
            response.status,
            200,
            "{name}: {value}: {:?}",
            response.json()
        );
    }
    // Reading is not guarded by Origin (a browser does not show another
    // site's page the answer without CORS headers, which are never sent).
    let response = server
        .send(&Request::get("/v1/plugins").header("Origin", "http://evil.example"))
        .await;
    assert_eq!(response.status, 200);
    assert!(response.header("access-control-allow-origin").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_changing_requests_must_be_json() {
    let server = Server::start(|_| {}).await;
    let body = r#"{"text": "hello"}"#;
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        Some("application/jsonx"),
        None,
    ] {
        let mut request = Request::post("/v1/analyze", body).without("Content-Type");
        if let Some(content_type) = content_type {
            request = request.header("Content-Type", content_type);
        }
        let response = server.send(&request).await;
        assert_eq!(response.status, 415, "Content-Type {content_type:?}");
        assert!(
            response.error().contains("application/json"),
            "{:?}",
            response.json()
        );
    }
    let response = server
        .send(
            &Request::post("/v1/analyze", body)
                .header("Content-Type", "Application/JSON; charset=utf-8"),
        )
        .await;
    assert_eq!(response.status, 200, "{:?}", response.json());

    // The rollback endpoint too, although its body may be empty.
    let rollback = "/v1/plugins/nothing-here/rollback";
    for body in ["", "{}"] {
        let response = server
            .send(&Request::post(rollback, body).header("Content-Type", "text/plain"))
            .await;
        assert_eq!(response.status, 415, "body {body:?}");
        let response = server
            .send(&Request::post(rollback, body).without("Content-Type"))
            .await;
        assert_eq!(response.status, 415, "body {body:?}");
        // As JSON it reaches the handler: there is no such plugin.
        let response = server.send(&Request::post(rollback, body)).await;
        assert_eq!(response.status, 404, "body {body:?}");
        assert!(!response.error().is_empty());
    }

    // A wrong method or path is that, whatever the content type (as curl
    // sends `-X DELETE` with none): 405 with Allow, or 404.
    for (method, path, status) in [
        ("DELETE", "/v1/analyze", 405),
        ("POST", "/healthz", 405),
        ("PUT", "/v1/plugins", 405),
        ("POST", "/v1/nothing", 404),
    ] {
        let response = server
            .send(&Request::new(method, path).without("Content-Type"))
            .await;
        assert_eq!(
            response.status,
            status,
            "{method} {path}: {:?}",
            response.json()
        );
        assert!(!response.error().is_empty(), "{method} {path}");
    }
}

// ---- D. client mistakes are the client's, in the API's JSON shape ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_mistakes_get_json_errors_with_the_right_status() {
    let server = Server::start(|_| {}).await;
    let cases: &[(&str, u16, &str)] = &[
        (r#"{"text": "hel"#, 400, "not valid JSON"),
        ("", 400, "empty"),
        (
            r#"["hello", null, null, "x"]"#,
            422,
            "an array, not an object",
        ),
        (r#""hello""#, 422, "a string, not an object"),
        ("42", 422, "a number, not an object"),
        (r#"{"txt": "typo"}"#, 422, "unknown field `txt`"),
        (r#"{"text": 5}"#, 422, "expected a string"),
        (r#"{"text": "x", "metadata": []}"#, 422, "expected a map"),
        ("{}", 422, "missing field `text`"),
        (r#"{"text": "   "}"#, 400, "empty"),
        (r#"{"text": "x", "kind": "bad kind!"}"#, 400, "kind"),
        (r#"{"text": "x\u0000y"}"#, 400, "NUL"),
        (
            r#"{"text": "hello", "metadata": {"note": "a\u0000b"}}"#,
            400,
            "metadata.note",
        ),
    ];
    for (body, status, words) in cases {
        let response = server.send(&Request::post("/v1/analyze", body)).await;
        assert_eq!(
            response.status,
            *status,
            "body {body}: {:?}",
            response.json()
        );
        let error = response.error();
        assert!(error.contains(words), "body {body}: {error}");
    }

    // A source of a few hundred kilobytes is the client's mistake, not a database fault.
    let long_source = json!({ "text": "hello", "source": "s".repeat(300 * 1024) }).to_string();
    let response = server
        .send(&Request::post("/v1/analyze", &long_source))
        .await;
    assert_eq!(response.status, 400, "{:?}", response.json());
    assert!(response.error().contains("source"));

    // A text past the most a document may have, in a body within the limit:
    // refused as `assay analyze` refuses it, not stored.
    let max = assay::pipeline::input::MAX_DOCUMENT_BYTES;
    let long_text = json!({ "text": "a".repeat(max + 10) }).to_string();
    let response = server.send(&Request::post("/v1/analyze", &long_text)).await;
    assert_eq!(response.status, 400, "{:?}", response.json());
    assert!(
        response.error().contains("text") && response.error().contains(&max.to_string()),
        "{}",
        response.error()
    );

    // A NUL in a prompt filter names no prompt; it is not the library failing.
    let response = server.send(&Request::get("/v1/prompts?scenario=%00")).await;
    assert_eq!(response.status, 400, "{:?}", response.json());
    assert!(
        response.error().contains("scenario"),
        "{}",
        response.error()
    );

    // A rollback body that is not what it should be.
    for (body, status) in [("{", 400), ("[]", 422), (r#"{"sha": "ab"}"#, 422)] {
        let response = server
            .send(&Request::post("/v1/plugins/nothing-here/rollback", body))
            .await;
        assert_eq!(response.status, status, "body {body}");
        assert!(!response.error().is_empty());
    }

    // Routes and methods that do not exist.
    let response = server.send(&Request::get("/v2/nothing")).await;
    assert_eq!(response.status, 404);
    assert!(response.error().contains("/v2/nothing"));
    let response = server.send(&Request::post("/nothing", "{}")).await;
    assert_eq!(response.status, 404);
    assert!(!response.error().is_empty());
    let response = server.send(&Request::get("/v1/analyze")).await;
    assert_eq!(response.status, 405);
    assert!(response.error().contains("POST"), "{:?}", response.json());
    assert!(
        response.header("allow").is_some_and(|a| a.contains("POST")),
        "{:?}",
        response.headers
    );

    // A body over the limit, announced by its length, is refused before it is read.
    let limit = assay::pipeline::input::MAX_DOCUMENT_BYTES + 1024 * 1024;
    let mut stream = server.connect().await;
    stream
        .write_all(
            format!(
                "POST /v1/analyze HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                server.host(),
                limit + 1
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let response = read_response(&mut stream).await;
    assert_eq!(response.status, 413);
    assert!(response.error().contains("bytes"), "{:?}", response.json());

    // The engine still answers.
    let response = server.send(&Request::get("/healthz")).await;
    assert_eq!(response.status, 200);
}

/// A body over the limit without a `Content-Length` (as a chunked body
/// arrives) is cut off as soon as it passes the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_without_a_length_gets_413() {
    use tower::ServiceExt as _;
    let server = Server::start(|_| {}).await;
    let limit = assay::pipeline::input::MAX_DOCUMENT_BYTES + 1024 * 1024;
    let chunks = futures::stream::iter(
        (0..=limit / (1024 * 1024))
            .map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b' '; 1024 * 1024]))),
    );
    let request = axum::http::Request::builder()
        .method("POST")
        .uri("/v1/analyze")
        .header("host", server.host())
        .header("content-type", "application/json")
        .body(axum::body::Body::from_stream(chunks))
        .unwrap();
    let response = assay::service::router(Arc::clone(&server.state), server.addr)
        .oneshot(request)
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&body).unwrap();
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains(&format!("at most {limit} bytes")) && error.contains("larger than that"),
        "{body}"
    );
    assert!(!error.contains("that bytes"), "{body}");
}
