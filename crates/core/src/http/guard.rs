//! The local-only guard in front of every route: `Host` must be a loopback name with our port
//! (DNS rebinding), a present `Origin` must be our own page, the desktop webview or one the
//! config names; the cross-origin ones get their CORS answers here.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;

/// Which `Host` and `Origin` values are ours.
#[derive(Debug, Clone)]
pub(crate) struct LocalGuard {
    port: u16,
    extra_origins: Vec<String>,
}

const LOOPBACK_NAMES: [&str; 3] = ["127.0.0.1", "localhost", "[::1]"];
/// Origins of the desktop app's own webview (Tauri on Linux/macOS and on Windows).
const WEBVIEW_ORIGINS: [&str; 3] = [
    "tauri://localhost",
    "http://tauri.localhost",
    "https://tauri.localhost",
];

impl LocalGuard {
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    pub(crate) fn new(port: u16, extra_origins: Vec<String>) -> Self {
        Self {
            port,
            extra_origins: extra_origins
                .into_iter()
                .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                .collect(),
        }
    }

    /// `Host` must be a loopback name with our port: anything else is DNS rebinding or a
    /// request meant for someone else.
    pub(crate) fn host_ok(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        let (name, port_ok) = match host.rsplit_once(':') {
            Some((name, port)) if !port.contains(']') => {
                (name.to_owned(), port.parse::<u16>() == Ok(self.port))
            }
            _ => (host.clone(), self.port == 80),
        };
        port_ok && LOOPBACK_NAMES.contains(&name.as_str())
    }

    /// A present `Origin` must be our own page (any loopback name, our port), the desktop
    /// webview, or one the config names.
    pub(crate) fn origin_ok(&self, origin: &str) -> bool {
        let origin = origin.trim_end_matches('/').to_ascii_lowercase();
        if WEBVIEW_ORIGINS.contains(&origin.as_str()) || self.extra_origins.contains(&origin) {
            return true;
        }
        self.same_origin(&origin)
    }

    fn same_origin(&self, origin: &str) -> bool {
        origin
            .strip_prefix("http://")
            .is_some_and(|authority| self.host_ok(authority))
    }

    /// An allowed `Origin` other than our own pages: the webview, or one the config names.
    pub(crate) fn is_cross_origin(&self, origin: &str) -> bool {
        let origin = origin.trim_end_matches('/').to_ascii_lowercase();
        self.origin_ok(&origin) && !self.same_origin(&origin)
    }
}

pub(crate) async fn local_only(
    State(guard): State<LocalGuard>,
    req: Request,
    next: Next,
) -> Response {
    tracing::trace!(method = %req.method(), uri = %redacted(req.uri()), "request");
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.to_string()));
    match host {
        Some(h) if guard.host_ok(&h) => {}
        other => {
            tracing::warn!(host = ?other, path = %req.uri().path(), "refused: foreign Host");
            return ApiError::new(
                StatusCode::MISDIRECTED_REQUEST,
                "foreign_host",
                format!(
                    "Host {:?} is not this gateway; Switchboard answers only 127.0.0.1, localhost \
                     or [::1] on port {}",
                    other.unwrap_or_default(),
                    guard.port
                ),
            )
            .into_response();
        }
    }
    let origin = origin(req.headers());
    if let Some(origin) = &origin
        && !guard.origin_ok(origin)
    {
        tracing::warn!(%origin, path = %req.uri().path(), "refused: foreign Origin");
        return ApiError::forbidden(
            "foreign_origin",
            format!("Origin {origin:?} is not allowed to use this gateway"),
        )
        .into_response();
    }
    // The desktop webview (and origins the config names) call the API cross-origin: answer
    // their CORS preflight here, before any token is asked for, and label their responses.
    let cross = origin.filter(|o| guard.is_cross_origin(o));
    if let Some(o) = &cross
        && req.method() == axum::http::Method::OPTIONS
    {
        let mut r = StatusCode::NO_CONTENT.into_response();
        cors_headers(r.headers_mut(), o);
        let h = r.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, DELETE, PUT, PATCH, OPTIONS"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(
                "authorization, content-type, accept, last-event-id, mcp-session-id, \
                 mcp-protocol-version",
            ),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        return r;
    }
    let mut response = next.run(req).await;
    if let Some(o) = &cross {
        cors_headers(response.headers_mut(), o);
    }
    response
}

fn cors_headers(h: &mut HeaderMap, origin: &str) {
    if let Ok(v) = HeaderValue::from_str(origin) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("mcp-session-id"),
        );
    }
}

/// Query parameters that carry a secret: `token` (the legacy WebSocket auth) and `mcp_token`
/// (the session token seed 001's watchers send).
const SECRET_PARAMS: [&str; 2] = ["token", "mcp_token"];

/// A URI fit for a log line: the value of every secret query parameter ([`SECRET_PARAMS`], any
/// case) replaced by `REDACTED`.
pub(crate) fn redacted(uri: &axum::http::Uri) -> String {
    let Some(query) = uri.query() else {
        return uri.path().to_owned();
    };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if is_secret_param(k) => format!("{k}=REDACTED"),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{}?{}", uri.path(), query.join("&"))
}

/// Whether a raw query key names a secret once decoded as the `Query` extractor decodes it
/// (`%XX` and `+`), so `mcp%5Ftoken` is caught too.
fn is_secret_param(raw: &str) -> bool {
    let bytes = raw.as_bytes();
    let mut key = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    key.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => key.push(b'%'),
            },
            b'+' => key.push(b' '),
            b => key.push(b),
        }
        i += 1;
    }
    SECRET_PARAMS
        .iter()
        .any(|p| p.as_bytes().eq_ignore_ascii_case(&key))
}

fn origin(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::ORIGIN)
        .map(|o| o.to_str().unwrap_or("<not text>").to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `check` takes every one of `ok` and refuses every one of `bad`.
    fn sorts(check: impl Fn(&str) -> bool, ok: &[&str], bad: &[&str]) {
        for ok in ok {
            assert!(check(ok), "{ok}");
        }
        for bad in bad {
            assert!(!check(bad), "{bad}");
        }
    }

    #[test]
    fn hosts() {
        let g = LocalGuard::new(11391, vec![]);
        sorts(
            |h| g.host_ok(h),
            &[
                "127.0.0.1:11391",
                "localhost:11391",
                "[::1]:11391",
                "LOCALHOST:11391",
            ],
            &[
                "evil.com:11391",
                "127.0.0.1",
                "127.0.0.1:80",
                "localhost.evil.com:11391",
                "127.0.0.2:11391",
                "[::1]",
                "",
            ],
        );
    }

    #[test]
    fn query_tokens_are_redacted_from_logged_uris() {
        let uri: axum::http::Uri = "/ws/mcp/events?session_id=abc&token=sbw_secret&Token=x"
            .parse()
            .unwrap();
        assert_eq!(
            redacted(&uri),
            "/ws/mcp/events?session_id=abc&token=REDACTED&Token=REDACTED"
        );
        // seed 001's watchers send the session's token as `mcp_token`
        let seed: axum::http::Uri =
            "/ws/mcp/events?token=sbw_a&session_id=abc&mcp_token=sbw_b&MCP_TOKEN=c&mcp_tokens=d"
                .parse()
                .unwrap();
        assert_eq!(
            redacted(&seed),
            "/ws/mcp/events?token=REDACTED&session_id=abc&mcp_token=REDACTED&MCP_TOKEN=REDACTED\
             &mcp_tokens=d"
        );
        // as the Query extractor would decode them
        let encoded: axum::http::Uri = "/ws/mcp/events?mcp%5Ftoken=s1&%74oken=s2&to+ken=x&mcp%5=y"
            .parse()
            .unwrap();
        assert_eq!(
            redacted(&encoded),
            "/ws/mcp/events?mcp%5Ftoken=REDACTED&%74oken=REDACTED&to+ken=x&mcp%5=y"
        );
        let plain: axum::http::Uri = "/mcp".parse().unwrap();
        assert_eq!(redacted(&plain), "/mcp");
    }

    #[test]
    fn origins() {
        let g = LocalGuard::new(11391, vec!["https://Example.org/".into()]);
        sorts(
            |o| g.origin_ok(o),
            &[
                "http://127.0.0.1:11391",
                "http://localhost:11391/",
                "tauri://localhost",
                "https://example.org",
            ],
            &[
                "http://evil.com",
                "null",
                "http://localhost:3000",
                "https://127.0.0.1:11391",
                "file://",
            ],
        );
    }
}
