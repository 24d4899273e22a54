//! What keeps other web pages in the operator's browser away from the API and the dashboard.
//!
//! - **Cross-site requests.** A page on any site can make the browser send a "simple" request
//!   (a form or `fetch` with `text/plain`, no preflight) to `http://127.0.0.1:8080`. Every
//!   `POST` of the guarded routes must therefore carry `Content-Type: application/json`, which
//!   a browser sends cross-site only after a CORS preflight that netrev never grants.
//!   Otherwise: 415, and nothing is done ([`require_json`], on each `POST` route, so that a
//!   method a route does not serve stays 405). Other methods that change things (`PUT`,
//!   `PATCH`, `DELETE`) are never simple requests: a browser always asks a preflight for them,
//!   whatever their content type, so they need no such rule.
//! - **DNS rebinding.** A page whose own host name is made to resolve to 127.0.0.1 reads the
//!   answers as same-origin. Without an API key, the guarded routes therefore answer only
//!   requests whose `Host` is a loopback name (`localhost`, `*.localhost`, `127.x.x.x`,
//!   `[::1]`) or one given with `--allowed-host`; others get 403. With an API key the page
//!   cannot authenticate, so any `Host` is served.
//!
//! The postback routes are not guarded: networks call them from servers, by whatever name
//! the tracker is published under, with the bodies they choose.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;

use crate::api::ApiError;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The guard's settings.
#[derive(Debug, Clone)]
pub struct Guard {
    /// Check `Host` (no API key is configured).
    pub check_host: bool,
    /// Host names served besides the loopback ones, lowercase, without port.
    pub allowed_hosts: Vec<String>,
}

/// The middleware of every guarded route: refuses foreign-`Host` requests, passes the others
/// on.
pub async fn check(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    if guard.check_host {
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
            .or_else(|| request.uri().authority().map(|a| a.to_string()));
        if !host.as_deref().is_some_and(|h| guard.allows(h)) {
            return ApiError::ForeignHost.into_response();
        }
    }
    // Path parameters are text: one that decodes to no UTF-8 gets the JSON 400 of every
    // other bad parameter, not the router's plain-text one.
    if percent_decoded(request.uri().path()).is_err() {
        return ApiError::invalid("path", "the path is not UTF-8 once percent-decoded")
            .into_response();
    }
    next.run(request).await
}

/// `path` with its `%XX` escapes decoded, as text.
fn percent_decoded(path: &str) -> Result<String, std::string::FromUtf8Error> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied(),
            bytes.get(i + 2).copied(),
        ) {
            (b'%', Some(h), Some(l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out)
}

/// The middleware of every guarded `POST` route (`crate::api::json_post`): refuses a request
/// that is not `application/json` with 415 before its handler runs. `POST` is the only method
/// that changes things a page can send without a preflight.
pub async fn require_json(request: Request, next: Next) -> Response {
    if !is_json(&request) {
        return ApiError::NotJson.into_response();
    }
    next.run(request).await
}

/// Whether the request's media type is `application/json` (parameters such as a charset
/// allowed).
fn is_json(request: &Request) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
}

impl Guard {
    /// Whether `host` (a `Host` header: a name or address, maybe with a port) is served.
    fn allows(&self, host: &str) -> bool {
        let host = host.trim().to_ascii_lowercase();
        // `[::1]:8080`, `[::1]`, `name:8080`, `name`.
        let name = if let Some(rest) = host.strip_prefix('[') {
            match rest.split_once(']') {
                Some((inside, _)) => inside.to_string(),
                None => return false,
            }
        } else {
            host.rsplit_once(':')
                .map_or(host.as_str(), |(name, _port)| name)
                .to_string()
        };
        let name = name.trim_end_matches('.');
        if name == "localhost" || name.ends_with(".localhost") {
            return true;
        }
        if let Ok(ip) = name.parse::<std::net::IpAddr>() {
            return ip.is_loopback() || self.allowed_hosts.iter().any(|h| h == name);
        }
        self.allowed_hosts.iter().any(|h| h == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_decode_to_text_or_are_refused() {
        assert_eq!(
            percent_decoded("/api/visitors/v%2D1").unwrap(),
            "/api/visitors/v-1"
        );
        assert_eq!(percent_decoded("/a/%C3%A9%").unwrap(), "/a/é%");
        assert_eq!(percent_decoded("/a/%zz").unwrap(), "/a/%zz");
        assert!(percent_decoded("/api/visitors/%FF").is_err());
    }

    #[test]
    fn loopback_names_and_allowed_ones_are_served() {
        let g = Guard {
            check_host: true,
            allowed_hosts: vec!["tracker.internal".into()],
        };
        for ok in [
            "127.0.0.1:8080",
            "127.0.0.1",
            "127.1.2.3:1",
            "localhost:8080",
            "LOCALHOST",
            "app.localhost",
            "[::1]:8080",
            "[::1]",
            "tracker.internal",
            "Tracker.Internal:443",
        ] {
            assert!(g.allows(ok), "{ok}");
        }
        for refused in [
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "127.0.0.1.evil.example",
            "10.0.0.1",
            "[::2]:80",
            "[::1",
            "",
        ] {
            assert!(!g.allows(refused), "{refused}");
        }
    }
}
