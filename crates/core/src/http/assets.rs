//! The dashboard, embedded: `ui/dist` (built by `build.rs`) compiled into the binary and
//! served at `/` without a token (the page holds no data; it pairs, then calls the API).
//!
//! Vite names assets by their content hash, so `/assets/*` may be cached for good; the page
//! itself is revalidated (ETag) so a new build is picked up at once. A path that is not a
//! file is the single-page app's own route and gets `index.html`.

use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;

#[derive(rust_embed::Embed)]
#[folder = "../../ui/dist/"]
struct Dist;

/// What the page may load and talk to: only this origin.
const CSP: &str = "default-src 'self'; connect-src 'self'; img-src 'self' data:; \
                   style-src 'self' 'unsafe-inline'; script-src 'self'; object-src 'none'; \
                   frame-ancestors 'none'; base-uri 'none'";

/// Prefixes that belong to the API: never answered with the page.
const API_PREFIXES: [&str; 6] = ["/api", "/mcp", "/ws", "/metrics", "/pair", "/healthz"];

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("json" | "map") => "application/json",
        Some("woff2") => "font/woff2",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// The router's fallback: a dashboard file, the page for an app route, or a JSON 404.
pub(crate) async fn fallback(req: Request) -> Response {
    let path = req.uri().path().to_owned();
    let is_api = API_PREFIXES
        .iter()
        .any(|p| path == *p || path.starts_with(&format!("{p}/")));
    if is_api || !(req.method() == Method::GET || req.method() == Method::HEAD) {
        return not_found(&req);
    }
    let file = path.trim_start_matches('/');
    let file = if file.is_empty() { "index.html" } else { file };
    let (name, found) = match Dist::get(file) {
        Some(f) => (file, f),
        // An app route (no extension) gets the page; a missing file is a 404.
        None if !file.rsplit('/').next().unwrap_or("").contains('.') => {
            match Dist::get("index.html") {
                Some(f) => ("index.html", f),
                None => return not_found(&req),
            }
        }
        None => return not_found(&req),
    };
    let etag = format!(
        "\"{}\"",
        found
            .metadata
            .sha256_hash()
            .iter()
            .take(16)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let cache = if name.starts_with("assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(header::CONTENT_TYPE, content_type(name))],
            found.data.into_owned(),
        )
            .into_response()
    };
    let headers = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, v);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if name == "index.html" {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
    }
    resp
}

fn not_found(req: &Request) -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no route for {} {}", req.method(), req.uri().path()),
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_page_is_embedded() {
        let index = Dist::get("index.html").expect("ui/dist/index.html is embedded");
        let text = String::from_utf8_lossy(&index.data);
        assert!(text.contains("<div id=\"app\""), "{text}");
        assert!(Dist::iter().any(|f| f.starts_with("assets/") && f.ends_with(".js")));
    }

    #[test]
    fn content_types() {
        assert_eq!(
            content_type("assets/index-abc.js"),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(content_type("x.css"), "text/css; charset=utf-8");
        assert_eq!(content_type("favicon.svg"), "image/svg+xml");
    }
}
