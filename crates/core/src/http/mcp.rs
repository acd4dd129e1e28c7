//! `/mcp`, the front door of the Streamable HTTP gateway: the token, the client's own
//! sessions, the body checks, the fast path, then the gateway's own sessions
//! (`mcp/streamable`) or, for stateless 2026-07-28 requests the fast path leaves, rmcp's
//! service; in one handler (a layer per step would clone the stack under it on every
//! request). Every response body is watched: a client that goes away cancels what it asked
//! for; an unpaired one's stream ends.
//!
//! `/mcp/<server>` is the same door to one server's own endpoint: the dispatcher narrowed to
//! it ([`Dispatcher::only`]) (behind an rmcp service made for the request: a few `Arc`s), its
//! sessions bound to it.

use std::future::Future as _;
use std::sync::Arc;

use axum::Json;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use rmcp::transport::streamable_http_server::StreamableHttpService;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::error::ApiError;
use super::state::AppState;
use super::token::authenticate;
use crate::auth::Caller;
use crate::mcp::Dispatcher;
use crate::mcp::fast::{self, Fast};
use crate::mcp::jsonrpc::{self, INVALID_REQUEST, Incoming, PARSE_ERROR};
use crate::mcp::session::Session;
use crate::mcp::streamable;

/// The rmcp service behind `/mcp`.
pub(crate) type McpService = StreamableHttpService<crate::mcp::Handler, LocalSessionManager>;

/// Everything in front of rmcp for one `/mcp` request, in order: the token, the client's own
/// sessions, the body checks, and the fast path (see [`precheck`], [`sessions`]).
pub(crate) async fn entry(state: AppState, svc: McpService, mut req: Request) -> Response {
    let caller = match authenticate(&state.0.auth, req.headers()) {
        Ok(c) => c,
        Err(refused) => return refused.into_response(),
    };
    req.extensions_mut().insert(caller.clone());
    let d = state.0.dispatcher.clone();
    sessions(&state, caller, req, &svc, &d).await
}

/// `/mcp/<server>`: [`entry`] for one server's own endpoint. An unknown server is 404, naming
/// the servers there are.
pub(crate) async fn entry_for(state: AppState, server: String, mut req: Request) -> Response {
    let caller = match authenticate(&state.0.auth, req.headers()) {
        Ok(c) => c,
        Err(refused) => return refused.into_response(),
    };
    if state.0.mcp.upstream(&server).is_none() {
        return unknown_server(&state, "/mcp", &server);
    }
    req.extensions_mut().insert(caller.clone());
    let d = state.0.dispatcher.only(&server);
    let svc = service_with(&state, d.clone());
    sessions(&state, caller, req, &svc, &d).await
}

/// 404 for `<base>/<server>` of a server that is not configured, naming those that are.
pub(crate) fn unknown_server(state: &AppState, base: &str, server: &str) -> Response {
    let names: Vec<String> = state
        .0
        .mcp
        .upstreams()
        .iter()
        .map(|up| up.name().to_owned())
        .collect();
    let there = if names.is_empty() {
        "no server is configured".to_owned()
    } else {
        format!("the servers are: {}", names.join(", "))
    };
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_server",
        format!("no server '{server}' for {base}/{server}; {there} ({base}/<server>)"),
    )
    .into_response()
}

/// Any path deeper than `/mcp/<server>` (or `/mcp/` itself): there is no endpoint there.
pub(crate) async fn below(uri: axum::http::Uri) -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_path",
        format!(
            "no MCP endpoint at {}; the gateway's endpoints are /mcp (every server) and \
             /mcp/<server> (one server)",
            uri.path()
        ),
    )
    .into_response()
}

/// rmcp's Streamable HTTP service (2025-11-25 sessions and 2026-07-28 stateless) around our
/// aggregating handler. Host and Origin are already checked by `local_only`.
pub(crate) fn service(state: &AppState) -> McpService {
    service_with(state, state.0.dispatcher.clone())
}

/// [`service`] answered by `d` (a per-server endpoint's dispatcher), over the same sessions.
fn service_with(state: &AppState, d: Dispatcher) -> McpService {
    use rmcp::transport::streamable_http_server::StreamableHttpServerConfig;
    let hub = &state.0;
    let handler = crate::mcp::Handler::new(d);
    let config = StreamableHttpServerConfig::default()
        .disable_allowed_hosts()
        .with_cancellation_token(hub.shutdown.child_token())
        .with_max_request_body_bytes(hub.gateway_config.max_body_bytes);
    StreamableHttpService::new(
        move || Ok(handler.clone()),
        hub.rmcp_sessions.clone(),
        config,
    )
}

/// Checks a POST to `/mcp` before anything reads it: a body over the limit is 413, a body that
/// is not JSON is 400 with a JSON-RPC parse error (id null), both with a message that says so.
/// Then: the fast path; a session's requests, notifications and answers, and `initialize`,
/// go to the gateway's own sessions (`mcp/streamable`); stateless 2026-07-28 requests the fast
/// path left go to rmcp. Every response (POST answers and the GET stream) is watched by a
/// [`GuardedBody`].
async fn precheck(
    state: &AppState,
    req: Request,
    svc: &McpService,
    d: &Dispatcher,
    session: Option<&Arc<Session>>,
) -> Response {
    let rmcp = |req: Request| async move { svc.handle(req).await.map(axum::body::Body::new) };
    let revoked = |req: &Request| {
        req.extensions()
            .get::<Caller>()
            .map(|c| Box::pin(c.revoked.clone().cancelled_owned()))
    };
    let guard = |resp: Response, gone: Option<CancellationToken>, revoked| {
        let (parts, body) = resp.into_parts();
        Response::from_parts(
            parts,
            axum::body::Body::new(GuardedBody {
                inner: body,
                gone,
                revoked,
                _streaming: session.map(|s| s.stream()),
            }),
        )
    };
    let hub = &state.0;
    if req.method() != axum::http::Method::POST {
        let revoked = revoked(&req);
        let Some(s) = session else {
            return guard(rmcp(req).await, None, revoked); // stateless: rmcp's answer
        };
        let resp = match *req.method() {
            axum::http::Method::GET => streamable::listen(req.headers(), s),
            axum::http::Method::DELETE => streamable::end(hub.mcp.sessions(), s),
            _ => (
                StatusCode::METHOD_NOT_ALLOWED,
                [(header::ALLOW, "GET, POST, DELETE")],
                "Method Not Allowed",
            )
                .into_response(),
        };
        return guard(resp, None, revoked);
    }
    let limit = hub.gateway_config.max_body_bytes;
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
            INVALID_REQUEST,
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
    // Plain request/response: answered here, in the request's own task.
    let front = fast::Front {
        dispatcher: d,
        shutdown: &hub.shutdown,
        session,
    };
    let unpaired = || {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "token_invalid",
            "this client was unpaired",
        )
        .into_response()
    };
    let json = match fast::answer(front, &parts, &bytes).await {
        Ok(Fast::Answered(frame)) => {
            return (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                frame,
            )
                .into_response();
        }
        Ok(Fast::Unpaired) => return unpaired(),
        Err(declined) => matches!(declined, fast::Declined::Json),
    };
    if !json && let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&bytes) {
        return rpc_error(
            StatusCode::BAD_REQUEST,
            PARSE_ERROR,
            format!("Parse error: {e}"),
        );
    }
    // A client that goes away before its response is complete cancels what it asked for.
    let gone = hub.shutdown.child_token();
    let Some(caller) = parts.extensions.get::<Caller>().cloned() else {
        return unpaired();
    };
    let revoked = Some(Box::pin(caller.revoked.clone().cancelled_owned()));
    let door = streamable::Door {
        dispatcher: d,
        gone: &gone,
    };
    if let Some(s) = session {
        let resp = streamable::post(door, &caller, &parts.headers, &bytes, s.clone()).await;
        return guard(resp, Some(gone), revoked);
    }
    if let Incoming::Request(r) = jsonrpc::parse(&bytes)
        && r.method == "initialize"
    {
        let resp = streamable::initialize(door, &caller, &parts.headers, r).await;
        return guard(resp, Some(gone), revoked);
    }
    let mut req = Request::from_parts(parts, axum::body::Body::from(bytes));
    req.extensions_mut()
        .insert(crate::mcp::ClientGone(gone.clone()));
    guard(rmcp(req).await, Some(gone), revoked)
}

/// Ties `/mcp` sessions to the client and the endpoint that opened them: an unknown session
/// id is 404 (the client starts over, as the spec says), another client's too (as if
/// unknown), and one opened at another endpoint (404, saying where it belongs).
async fn sessions(
    state: &AppState,
    caller: Caller,
    req: Request,
    svc: &McpService,
    d: &Dispatcher,
) -> Response {
    let sessions = state.0.mcp.sessions();
    let asked = req
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok());
    // looked up once, here: the fast path takes it from here
    let named = match asked {
        None => None,
        Some(sid) => match sessions.get(sid) {
            Some(s) if s.client == caller.name => Some(s),
            _ => {
                return ApiError::new(
                    StatusCode::NOT_FOUND,
                    "unknown_session",
                    "Session not found",
                )
                .into_response();
            }
        },
    };
    if let Some(s) = &named {
        if s.server() != d.server() {
            let here = match d.server() {
                Some(server) => format!("/mcp/{server}"),
                None => "/mcp".to_owned(),
            };
            return ApiError::new(
                StatusCode::NOT_FOUND,
                "session_elsewhere",
                format!(
                    "this session was opened at {}, not {here}; it serves there only \
                     (initialize a new session here)",
                    s.endpoint()
                ),
            )
            .into_response();
        }
        s.touch();
    }
    precheck(state, req, svc, d, named.as_ref()).await
}

/// A `/mcp` response body that watches its client: dropped before its last frame (the client
/// went away), it fires `gone`; when the client is unpaired, it ends at once.
struct GuardedBody {
    inner: axum::body::Body,
    /// Taken once the body has ended normally.
    gone: Option<CancellationToken>,
    revoked: Option<std::pin::Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>>,
    /// Its session is not idle while the body streams.
    _streaming: Option<crate::mcp::session::Streaming>,
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
