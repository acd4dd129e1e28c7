//! HTTP surface: the router, the local-only guard, and the read API for the dashboard.
//!
//! Handlers here are thin: they read shared state and render it. Protocol work lives in the
//! domain modules (`registration`, later `mcp`).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRef, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use std::future::Future as _;

use futures_util::{Stream, StreamExt};
use serde_json::json;

use crate::mcp::session::routes as session;
use crate::registration::{self, ProjectView, RegistrationServer};
use crate::server::Hub;

/// How often an idle SSE stream sends a comment so proxies and clients keep it open.
pub const SSE_KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Shared state of every handler: a cheap clone.
#[derive(Debug, Clone)]
pub struct AppState(pub(crate) Arc<Hub>);

impl FromRef<AppState> for Arc<RegistrationServer> {
    fn from_ref(state: &AppState) -> Self {
        state.0.registration.clone()
    }
}

/// The whole HTTP app. Pure: tests drive it with `oneshot`, `serve` mounts it.
pub fn router(state: AppState) -> Router {
    // Everything that can reach a tool or show what tools do needs a paired token.
    let protected = Router::new()
        .route("/api/projects", get(projects))
        .route("/api/events", get(events))
        .route("/api/servers", get(servers).post(crate::api::add_server))
        .route(
            "/api/servers/{name}/{action}",
            axum::routing::post(crate::api::server_action),
        )
        .route("/api/calls", get(crate::api::calls))
        .route("/api/calls/{id}", get(crate::api::call))
        .route("/api/telemetry", get(crate::api::telemetry))
        .route(
            "/api/import",
            get(crate::api::import_sources).post(crate::api::import),
        )
        .route(
            "/api/pair-codes",
            axum::routing::post(crate::api::pair_code),
        )
        .route("/api/clients", get(crate::api::clients))
        .route("/api/clients/{name}", axum::routing::delete(unpair_client))
        .route("/metrics", get(metrics))
        .route("/ws", get(crate::mcp::ws::upgrade))
        .route("/session", axum::routing::post(session::create))
        .route("/api/sessions", get(session::list))
        .route("/session/{id}", axum::routing::delete(session::delete))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    // `/mcp` (and below it, as a nested service would be) checks the token itself, in one
    // handler with the other steps in front of rmcp: a layer per step would clone the stack
    // under it on every request.
    let svc = mcp_service(&state);
    let mcp = {
        let svc = svc.clone();
        axum::routing::any(move |State(state): State<AppState>, req: Request| {
            let svc = svc.clone();
            async move { mcp_entry(&state, &svc, req).await }
        })
    };
    let mcp_below = axum::routing::any(move |State(state): State<AppState>, req: Request| {
        let svc = svc.clone();
        async move { mcp_entry(&state, &svc, req).await }
    });
    Router::new()
        .route("/mcp", mcp)
        .route("/mcp/{*rest}", mcp_below)
        .route("/healthz", get(healthz))
        .route("/ws/mcp", get(registration::upgrade))
        .route("/pair", axum::routing::post(crate::pairing::pair))
        // These authenticate themselves: a session's own token opens them too.
        .route("/session/{id}/events", get(session::sse))
        .route("/ws/mcp/events", get(session::ws))
        .merge(protected)
        .fallback(crate::assets::fallback)
        .layer(middleware::from_fn_with_state(state.clone(), local_only))
        .with_state(state)
}

/// The bearer token of a request: `Authorization: Bearer`, else the WebSocket subprotocol
/// `bearer.<token>` (browsers cannot set headers on WebSockets).
pub(crate) fn bearer(headers: &HeaderMap) -> Option<String> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        && let Some(t) = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
    {
        return Some(t.trim().to_owned());
    }
    headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split(',')
                .map(str::trim)
                .find_map(|p| p.strip_prefix("bearer."))
                .map(str::to_owned)
        })
}

async fn require_token(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    match authenticate(&state, req.headers()) {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(refused) => refused.into_response(),
    }
}

/// Why a request's token was refused: the 401 it is answered with.
struct Unauthorized(&'static str, &'static str);

impl IntoResponse for Unauthorized {
    fn into_response(self) -> Response {
        let mut r = ApiError::new(StatusCode::UNAUTHORIZED, self.0, self.1).into_response();
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Bearer realm=\"switchboard\""),
        );
        r
    }
}

/// The paired client a request's bearer token belongs to.
fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<crate::auth::Caller, Unauthorized> {
    let Some(token) = bearer(headers) else {
        return Err(Unauthorized(
            "token_required",
            "a token is required: pair this client (ask for a code with `switchboard pair`, \
             then POST it to /pair) and send `Authorization: Bearer <token>`",
        ));
    };
    state.0.auth.verify(&token).ok_or(Unauthorized(
        "token_invalid",
        "this token is not paired (it may have been revoked)",
    ))
}

/// The rmcp service behind `/mcp`.
type McpService = rmcp::transport::streamable_http_server::StreamableHttpService<
    crate::mcp::Handler,
    rmcp::transport::streamable_http_server::session::local::LocalSessionManager,
>;

/// Everything in front of rmcp for one `/mcp` request, in order: the token, the client's own
/// sessions, the body checks, and the fast path (see [`mcp_precheck`], [`mcp_sessions`]).
async fn mcp_entry(state: &AppState, svc: &McpService, mut req: Request) -> Response {
    let caller = match authenticate(state, req.headers()) {
        Ok(c) => c,
        Err(refused) => return refused.into_response(),
    };
    req.extensions_mut().insert(caller.clone());
    mcp_sessions(state, caller, req, svc).await
}

/// `DELETE /api/clients/{name}`: unpair.
async fn unpair_client(
    State(state): State<AppState>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Response {
    match crate::pairing::unpair(&state.0, &name).await {
        Ok(true) => Json(json!({"unpaired": name})).into_response(),
        Ok(false) => ApiError::new(
            StatusCode::NOT_FOUND,
            "no_such_client",
            format!("no paired client named {name:?}"),
        )
        .into_response(),
        Err(e) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "token_store",
            e.to_string(),
        )
        .into_response(),
    }
}

/// rmcp's Streamable HTTP service (2025-11-25 sessions and 2026-07-28 stateless) around our
/// aggregating handler. Host and Origin are already checked by `local_only`.
fn mcp_service(state: &AppState) -> McpService {
    use rmcp::transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService,
    };
    let hub = &state.0;
    let handler = crate::mcp::Handler::new(hub.dispatcher.clone());
    let config = StreamableHttpServerConfig::default()
        .disable_allowed_hosts()
        .with_cancellation_token(hub.shutdown.child_token())
        .with_max_request_body_bytes(hub.gateway_config.max_body_bytes);
    StreamableHttpService::new(move || Ok(handler.clone()), hub.sessions.clone(), config)
}

/// Checks a POST to `/mcp` before rmcp sees it: a body over the limit is 413, a body that is
/// not JSON is 400 with a JSON-RPC parse error (id null), both with a message that says so.
/// Every response (POST answers and the GET stream) is watched by a [`GuardedBody`].
async fn mcp_precheck(state: &AppState, req: Request, svc: &McpService) -> Response {
    let rmcp = |req: Request| async move { svc.handle(req).await.map(axum::body::Body::new) };
    let revoked = |req: &Request| {
        req.extensions()
            .get::<crate::auth::Caller>()
            .map(|c| Box::pin(c.revoked.clone().cancelled_owned()))
    };
    let guard = |resp: Response, gone: Option<tokio_util::sync::CancellationToken>, revoked| {
        let (parts, body) = resp.into_parts();
        Response::from_parts(
            parts,
            axum::body::Body::new(GuardedBody {
                inner: body,
                gone,
                revoked,
            }),
        )
    };
    if req.method() != axum::http::Method::POST {
        let revoked = revoked(&req);
        return guard(rmcp(req).await, None, revoked);
    }
    let limit = state.0.gateway_config.max_body_bytes;
    let rpc_error = |status: StatusCode, code: i64, message: String| {
        (
            status,
            Json(
                json!({"jsonrpc": "2.0", "id": null, "error": {"code": code, "message": message}}),
            ),
        )
            .into_response()
    };
    let too_big = || {
        rpc_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            -32600,
            format!("request body exceeds the {limit} byte limit"),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return too_big();
    }
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, limit).await else {
        return too_big();
    };
    // Plain request/response: answered here, without rmcp's session machinery (it takes
    // only valid JSON-RPC requests, and says when what it declined was JSON).
    let json = match crate::mcp::fast::answer(&state.0, &parts, &bytes).await {
        Ok(resp) => return resp,
        Err(declined) => matches!(declined, crate::mcp::fast::Declined::Json),
    };
    if !json && let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&bytes) {
        return rpc_error(StatusCode::BAD_REQUEST, -32700, format!("Parse error: {e}"));
    }
    // A client that goes away before its response is complete cancels what it asked for.
    let gone = tokio_util::sync::CancellationToken::new();
    let mut req = Request::from_parts(parts, axum::body::Body::from(bytes));
    req.extensions_mut()
        .insert(crate::mcp::ClientGone(gone.clone()));
    let revoked = revoked(&req);
    guard(rmcp(req).await, Some(gone), revoked)
}

/// Ties `/mcp` sessions to the client that opened them: another client's session id is
/// refused (404, as if unknown); new session ids are remembered so that unpairing closes them.
async fn mcp_sessions(
    state: &AppState,
    caller: crate::auth::Caller,
    req: Request,
    svc: &McpService,
) -> Response {
    let auth = &state.0.auth;
    if let Some(sid) = req
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        && auth.session_of_other(&caller.name, sid)
    {
        return ApiError::new(StatusCode::NOT_FOUND, "unknown_session", "no such session")
            .into_response();
    }
    let deleted = (req.method() == axum::http::Method::DELETE)
        .then(|| req.headers().get("mcp-session-id").cloned())
        .flatten();
    let resp = mcp_precheck(state, req, svc).await;
    let sessions = state.0.mcp.sessions();
    if let Some(sid) = resp
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        && sessions.get(sid).is_none()
    {
        auth.note_session(&caller.name, sid);
        sessions.open(Some(sid.to_owned()), &caller.name, "http", false);
    }
    if let Some(sid) = deleted.as_ref().and_then(|v| v.to_str().ok())
        && resp.status().is_success()
    {
        sessions.close(sid, "deleted");
    }
    resp
}

/// A `/mcp` response body that watches its client: dropped before its last frame (the client
/// went away), it fires `gone`; when the client is unpaired, it ends at once.
struct GuardedBody {
    inner: axum::body::Body,
    /// Taken once the body has ended normally.
    gone: Option<tokio_util::sync::CancellationToken>,
    revoked: Option<std::pin::Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>>,
}

impl http_body::Body for GuardedBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        if let Some(revoked) = self.revoked.as_mut()
            && revoked.as_mut().poll(cx).is_ready()
        {
            return std::task::Poll::Ready(None);
        }
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, std::task::Poll::Ready(None)) || self.inner.is_end_stream() {
            self.gone = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for GuardedBody {
    fn drop(&mut self) {
        if let Some(gone) = self.gone.take() {
            gone.cancel();
        }
    }
}

/// An HTTP error with a stable code: `{"error":{"code","message"}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}

/// Which `Host` and `Origin` values are ours.
#[derive(Debug, Clone)]
pub struct LocalGuard {
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
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn new(port: u16, extra_origins: Vec<String>) -> Self {
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
    pub fn host_ok(&self, host: &str) -> bool {
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
    pub fn origin_ok(&self, origin: &str) -> bool {
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
    pub fn is_cross_origin(&self, origin: &str) -> bool {
        let origin = origin.trim_end_matches('/').to_ascii_lowercase();
        self.origin_ok(&origin) && !self.same_origin(&origin)
    }
}

async fn local_only(State(state): State<AppState>, req: Request, next: Next) -> Response {
    tracing::trace!(method = %req.method(), uri = %redacted(req.uri()), "request");
    let guard = &state.0.guard;
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

/// A URI fit for a log line: the value of any `token` query parameter (the legacy WebSocket
/// auth) replaced by `REDACTED`.
pub(crate) fn redacted(uri: &axum::http::Uri) -> String {
    let Some(query) = uri.query() else {
        return uri.path().to_owned();
    };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("token") => format!("{k}=REDACTED"),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{}?{}", uri.path(), query.join("&"))
}

fn origin(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::ORIGIN)
        .map(|o| o.to_str().unwrap_or("<not text>").to_owned())
}

async fn healthz(State(state): State<AppState>) -> Json<serde_json::Value> {
    let hub = &state.0;
    Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_ms": hub.started.elapsed().as_millis() as u64,
        "projects_online": hub.registration.registry().online_count(),
        "registration_sockets": hub.registration.open_sockets(),
    }))
}

async fn servers(State(state): State<AppState>) -> Json<serde_json::Value> {
    let mcp = &state.0.mcp;
    let mut health = mcp.health();
    let tools: Vec<serde_json::Value> = mcp
        .tools()
        .into_iter()
        .map(|t| {
            json!({"name": t.name, "server": t.server, "tool": t.original,
                        "annotations": t.tool.annotations})
        })
        .collect();
    if let Some(servers) = health["servers"].as_array_mut() {
        for s in servers {
            let name = s["name"].as_str().unwrap_or_default().to_owned();
            if let Some(up) = mcp.upstream(&name) {
                s["stderr_tail"] = json!(up.stderr_tail());
                let config = up.config();
                s["command"] = json!(config.command);
                s["url"] = json!(config.url);
            }
        }
    }
    health["tools"] = json!(tools);
    Json(health)
}

/// `GET /metrics`: Prometheus text.
async fn metrics(State(state): State<AppState>) -> Response {
    use std::fmt::Write as _;
    let hub = &state.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP switchboard_up Whether the gateway is serving.\n# TYPE switchboard_up gauge\nswitchboard_up 1"
    );
    let _ = writeln!(
        out,
        "# HELP switchboard_server_running Whether a supervised server is running.\n# TYPE switchboard_server_running gauge"
    );
    let ups = hub.mcp.upstreams();
    for up in &ups {
        let s = up.status();
        let _ = writeln!(
            out,
            "switchboard_server_running{{server=\"{}\",state=\"{}\"}} {}",
            crate::telemetry::esc(up.name()),
            s.state.as_str(),
            u8::from(s.state == crate::upstream::ServerState::Running)
        );
    }
    let _ = writeln!(
        out,
        "# HELP switchboard_server_restarts_total Restarts of a supervised server.\n# TYPE switchboard_server_restarts_total counter"
    );
    for up in &ups {
        let _ = writeln!(
            out,
            "switchboard_server_restarts_total{{server=\"{}\"}} {}",
            crate::telemetry::esc(up.name()),
            up.status().restarts
        );
    }
    let _ = writeln!(
        out,
        "# HELP switchboard_projects_online Registered projects online.\n# TYPE switchboard_projects_online gauge\nswitchboard_projects_online {}",
        hub.registration.registry().online_count()
    );
    hub.mcp.telemetry().prometheus(&mut out);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

async fn projects(State(state): State<AppState>) -> Json<Vec<ProjectView>> {
    Json(state.0.registration.registry().projects())
}

/// `GET /api/events`: every HubEvent as SSE, `event:` its type, `id:` its sequence number.
async fn events(
    State(state): State<AppState>,
    axum::extract::Extension(caller): axum::extract::Extension<crate::auth::Caller>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    // The stream ends when the gateway stops or its client is unpaired.
    let shutdown = state.0.shutdown.clone();
    let ended = async move {
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = caller.revoked.cancelled() => {}
        }
    };
    let stream = state
        .0
        .bus
        .subscribe()
        .into_stream()
        .map(|ev| {
            let mut frame = Event::default().event(ev.event.kind());
            if ev.seq > 0 {
                frame = frame.id(ev.seq.to_string());
            }
            Ok(frame
                .json_data(&*ev)
                .unwrap_or_else(|e| Event::default().comment(format!("unserializable: {e}"))))
        })
        .take_until(ended);
    Sse::new(stream).keep_alive(KeepAlive::new().interval(SSE_KEEP_ALIVE).text("keep-alive"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        let g = LocalGuard::new(11391, vec![]);
        for ok in [
            "127.0.0.1:11391",
            "localhost:11391",
            "[::1]:11391",
            "LOCALHOST:11391",
        ] {
            assert!(g.host_ok(ok), "{ok}");
        }
        for bad in [
            "evil.com:11391",
            "127.0.0.1",
            "127.0.0.1:80",
            "localhost.evil.com:11391",
            "127.0.0.2:11391",
            "[::1]",
            "",
        ] {
            assert!(!g.host_ok(bad), "{bad}");
        }
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
        let plain: axum::http::Uri = "/mcp".parse().unwrap();
        assert_eq!(redacted(&plain), "/mcp");
    }

    #[test]
    fn origins() {
        let g = LocalGuard::new(11391, vec!["https://Example.org/".into()]);
        for ok in [
            "http://127.0.0.1:11391",
            "http://localhost:11391/",
            "tauri://localhost",
            "https://example.org",
        ] {
            assert!(g.origin_ok(ok), "{ok}");
        }
        for bad in [
            "http://evil.com",
            "null",
            "http://localhost:3000",
            "https://127.0.0.1:11391",
            "file://",
        ] {
            assert!(!g.origin_ok(bad), "{bad}");
        }
    }
}
