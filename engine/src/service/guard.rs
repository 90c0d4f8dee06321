//! The guard in front of every route, a stop-gap until API tokens exist.
//!
//! The API has no credential, so anything that can reach the port can use it;
//! on a loopback bind that is this machine. What the guard shuts out is the
//! browser on this machine acting for a web page:
//!
//! - DNS rebinding: a page under a foreign name that resolves to 127.0.0.1
//!   sends that foreign name as `Host`. Only the names this engine answers to
//!   are accepted (400 without `Host`, 403 for another).
//! - Cross-site requests: a page may send a "simple" POST (`text/plain`, a
//!   form, a `Blob` without a type) to any address without a CORS preflight.
//!   A state-changing request (anything but GET, HEAD, OPTIONS) must come
//!   from no page or this engine's own origin (`Origin`, `Sec-Fetch-Site`:
//!   403 otherwise) and must be `application/json` (415 otherwise), which a
//!   browser only sends cross-site after a preflight that is never granted.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};

use super::ApiError;

/// The `Host` values (lower-case `name:port`) this engine answers to.
#[derive(Debug, Clone)]
pub struct AllowedHosts {
    hosts: BTreeSet<String>,
}

impl AllowedHosts {
    /// For a listener bound at `bound` (its real address, port 0 resolved),
    /// plus the `server.allowed_hosts` entries.
    pub fn new(bound: SocketAddr, extra: &[String]) -> Self {
        let port = bound.port();
        let mut hosts = BTreeSet::new();
        let add_name = |hosts: &mut BTreeSet<String>, name: &str| {
            hosts.insert(format!("{name}:{port}"));
            // A client leaves out the default port.
            if port == 80 {
                hosts.insert(name.to_string());
            }
        };
        // `Host` carries an IPv6 address in brackets.
        match bound.ip() {
            IpAddr::V4(ip) => add_name(&mut hosts, &ip.to_string()),
            IpAddr::V6(ip) => add_name(&mut hosts, &format!("[{ip}]")),
        }
        if bound.ip().is_loopback() {
            for name in ["127.0.0.1", "localhost", "[::1]"] {
                add_name(&mut hosts, name);
            }
        }
        for entry in extra {
            let entry = entry.trim().to_ascii_lowercase();
            if entry.is_empty() {
                continue;
            }
            match split_port(&entry) {
                (name, Some(port)) if !name.is_empty() => {
                    hosts.insert(format!("{name}:{port}"));
                }
                (name, _) => add_name(&mut hosts, &name),
            }
        }
        Self { hosts }
    }

    /// Whether `host` (a `Host` header or an authority) is one of them.
    pub fn allows(&self, host: &str) -> bool {
        self.hosts.contains(&host.to_ascii_lowercase())
    }

    /// Them all, for messages.
    fn listed(&self) -> String {
        self.hosts.iter().cloned().collect::<Vec<_>>().join(", ")
    }
}

/// `name:port` → (`name`, port); `name` → (`name`, None). A bare IPv6
/// address (`::1`) is put in brackets; `[::1]:8080` has a port.
fn split_port(entry: &str) -> (String, Option<&str>) {
    if let Some(rest) = entry.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((addr, "")) => (format!("[{addr}]"), None),
            Some((addr, port)) => (format!("[{addr}]"), port.strip_prefix(':')),
            None => (entry.to_string(), None),
        };
    }
    match entry.matches(':').count() {
        0 => (entry.to_string(), None),
        1 => match entry.split_once(':') {
            Some((name, port)) => (name.to_string(), Some(port)),
            None => (entry.to_string(), None),
        },
        _ => (format!("[{entry}]"), None),
    }
}

/// The middleware: refuses the request, or hands it on.
pub async fn guard(
    State(hosts): State<Arc<AllowedHosts>>,
    request: Request,
    next: Next,
) -> Response {
    match check(&hosts, request.method(), request.uri(), request.headers()) {
        Ok(()) => next.run(request).await,
        Err(refused) => refused.into_response(),
    }
}

fn check(
    hosts: &AllowedHosts,
    method: &Method,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let foreign = |what: &str, value: &str| {
        ApiError(
            StatusCode::FORBIDDEN,
            format!(
                "{what} {value:?} is not a name this engine answers to ({}); to reach it under another name, add that name to server.allowed_hosts",
                hosts.listed()
            ),
        )
    };
    let mut host_headers = headers.get_all(header::HOST).iter();
    let host = match (host_headers.next(), host_headers.next()) {
        (Some(host), None) => host.to_str().map_err(|_| {
            ApiError(
                StatusCode::BAD_REQUEST,
                "the Host header is not ASCII text".into(),
            )
        })?,
        (None, _) => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                "the request has no Host header; send the address you connect to (e.g. Host: 127.0.0.1:7878)".into(),
            ));
        }
        (Some(_), Some(_)) => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                "the request has more than one Host header; send one".into(),
            ));
        }
    };
    if !hosts.allows(host) {
        return Err(foreign("Host", host));
    }
    // A request in absolute form (`POST http://name/...`) names a host too.
    if let Some(authority) = uri.authority()
        && !hosts.allows(authority.as_str())
    {
        return Err(foreign("the request target's host", authority.as_str()));
    }

    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    for origin in headers.get_all(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("(not ASCII)");
        // The engine serves plain HTTP, so its own pages' origin is `http://HOST`.
        let own = match (origin.get(..7), origin.get(7..)) {
            (Some(scheme), Some(host)) => {
                scheme.eq_ignore_ascii_case("http://") && hosts.allows(host)
            }
            _ => false,
        };
        if !own {
            return Err(ApiError(
                StatusCode::FORBIDDEN,
                format!(
                    "a {method} from the web page at {origin:?} is refused: only this engine's own origin may change anything (to call it from a page under another name, add that name to server.allowed_hosts)"
                ),
            ));
        }
    }
    for site in headers.get_all("sec-fetch-site") {
        let site = site.to_str().unwrap_or("");
        if site.eq_ignore_ascii_case("cross-site") || site.eq_ignore_ascii_case("same-site") {
            return Err(ApiError(
                StatusCode::FORBIDDEN,
                format!(
                    "a {method} sent by a browser for another site (Sec-Fetch-Site: {site}) is refused"
                ),
            ));
        }
    }
    Ok(())
}

/// The middleware of the routes that exist (not of the 404 and 405
/// answers): a request that may change something must say its body is
/// JSON, which a browser cannot send across sites without asking first.
/// A wrong method or path is answered as such, whatever its content type.
pub async fn json_bodies(request: Request, next: Next) -> Response {
    match check_json(request.method(), request.headers()) {
        Ok(()) => next.run(request).await,
        Err(refused) => refused.into_response(),
    }
}

fn check_json(method: &Method, headers: &HeaderMap) -> Result<(), ApiError> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    let mut content_types = headers.get_all(header::CONTENT_TYPE).iter();
    let json = match (content_types.next(), content_types.next()) {
        (Some(value), None) => value.to_str().ok().is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
        }),
        _ => false,
    };
    if !json {
        let sent = headers
            .get(header::CONTENT_TYPE)
            .map(|v| format!("{:?}", v.to_str().unwrap_or("(not ASCII)")))
            .unwrap_or_else(|| "none".into());
        return Err(ApiError(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "a {method} must be sent with Content-Type: application/json (this one has {sent}), even with an empty body"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_bound_address_and_the_setting() {
        let loopback = AllowedHosts::new(
            "127.0.0.1:4000".parse().expect("an address"),
            &[
                "Assay.Internal".into(),
                "other:8080".into(),
                "::2".into(),
                "[::3]:9".into(),
            ],
        );
        for host in [
            "127.0.0.1:4000",
            "localhost:4000",
            "[::1]:4000",
            "assay.internal:4000",
            "ASSAY.internal:4000",
            "other:8080",
            "[::2]:4000",
            "[::3]:9",
        ] {
            assert!(loopback.allows(host), "{host}: {}", loopback.listed());
        }
        for host in [
            "127.0.0.1",
            "localhost",
            "assay.internal",
            "other:4000",
            "[::3]:4000",
        ] {
            assert!(!loopback.allows(host), "{host}");
        }
        let port_80 = AllowedHosts::new("[::1]:80".parse().expect("an address"), &["name".into()]);
        for host in ["[::1]", "localhost", "127.0.0.1:80", "name", "name:80"] {
            assert!(port_80.allows(host), "{host}: {}", port_80.listed());
        }
        let public = AllowedHosts::new("192.0.2.7:7878".parse().expect("an address"), &[]);
        assert!(public.allows("192.0.2.7:7878"));
        assert!(!public.allows("localhost:7878"));
    }
}
