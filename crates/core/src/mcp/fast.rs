//! The `/mcp` fast path: plain request/response POSTs answered by the [`Dispatcher`] in the
//! request's own task, as `application/json`, without rmcp's per-session workers.
//!
//! It takes only what needs none of rmcp's session machinery and whose checks it can make
//! exactly: one JSON-RPC request for a method the dispatcher serves, no progress token (that
//! needs a stream), and either a stateless 2026-07-28 request with its required `_meta` and
//! matching `Mcp-Method`/`Mcp-Name` headers (no `Mcp-Param-*`), or a request in a live
//! 2025-xx session of this client. Everything else (initialize, notifications, GET streams,
//! DELETE, SSE-only clients, anything unusual) goes to rmcp as before, so its answers and errors
//! stay rmcp's. A session's request still reaches rmcp once a minute, so rmcp's idle timer
//! never ends a busy session.

use axum::http::{HeaderMap, header, request::Parts};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::McpGateway;
use super::dispatch::{self, CallCtx, Dispatcher, Incoming, Request, STATELESS_VERSION};
use super::session::Sessions;
use crate::auth::Caller;

/// What the fast path made of a request it took.
#[derive(Debug)]
pub(crate) enum Fast {
    /// The JSON-RPC response frame, for a `200 application/json`.
    Answered(String),
    /// The client was unpaired while its request ran.
    Unpaired,
}

/// Session revisions whose requests the fast path answers (rmcp accepts these headers).
const SESSION_VERSIONS: [&str; 3] = ["2025-03-26", "2025-06-18", "2025-11-25"];

const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
const META_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";

/// The one value of header `name`, as text (`None` if absent, repeated or not text).
fn single<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let mut all = headers.get_all(name).iter();
    let first = all.next()?;
    if all.next().is_some() {
        return None;
    }
    first.to_str().ok()
}

/// Whether a JSON schema carries `x-mcp-header` annotations anywhere (rmcp checks those).
fn has_param_headers(v: &Value) -> bool {
    match v {
        Value::Object(m) => m
            .iter()
            .any(|(k, v)| k == "x-mcp-header" || has_param_headers(v)),
        Value::Array(a) => a.iter().any(has_param_headers),
        _ => false,
    }
}

/// A stateless 2026-07-28 request the fast path can check exactly as rmcp would.
fn stateless_ok(gw: &McpGateway, headers: &HeaderMap, req: &Request) -> bool {
    let params = req.params_value();
    let Some(meta) = params.as_ref().and_then(|p| p.get("_meta")) else {
        return false;
    };
    if meta.get(META_VERSION).and_then(Value::as_str) != Some(STATELESS_VERSION)
        || !meta.get(META_CAPABILITIES).is_some_and(Value::is_object)
    {
        return false;
    }
    if single(headers, "mcp-method") != Some(req.method.as_str()) {
        return false;
    }
    if headers.keys().any(|k| k.as_str().starts_with("mcp-param-")) {
        return false;
    }
    let name_key = match req.method.as_str() {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        _ => None,
    };
    if let Some(key) = name_key {
        let expected = params
            .as_ref()
            .and_then(|p| p.get(key))
            .and_then(Value::as_str);
        let given = single(headers, "mcp-name");
        if expected.is_none() || given != expected || given.is_some_and(|g| g.starts_with("=?")) {
            return false;
        }
    }
    if req.method == "tools/call"
        && let Some(name) = params
            .as_ref()
            .and_then(|p| p.get("name"))
            .and_then(Value::as_str)
        && let Some((_, tool)) = gw.resolve(name)
        && tool.input_schema.values().any(has_param_headers)
    {
        return false;
    }
    true
}

/// Answers `body` here if it may be; `None` hands it to rmcp.
pub(crate) async fn answer(
    gw: &McpGateway,
    dispatcher: &Dispatcher,
    rmcp: &LocalSessionManager,
    parts: &Parts,
    body: &[u8],
) -> Option<Fast> {
    let caller = parts.extensions.get::<Caller>()?;
    let headers = &parts.headers;
    let accept = single(headers, header::ACCEPT.as_str())?;
    if !accept.contains("application/json") || !accept.contains("text/event-stream") {
        return None; // rmcp tells the client what it must accept
    }
    let version = single(headers, "mcp-protocol-version")?;
    let Incoming::Request(req) = dispatch::parse(body) else {
        return None;
    };
    let meta = req.meta();
    if !Dispatcher::serves(&req.method) || meta.progress_token.is_some() {
        return None;
    }
    let session = match single(headers, "mcp-session-id") {
        None if version == STATELESS_VERSION => {
            if !stateless_ok(gw, headers, &req) {
                return None;
            }
            None
        }
        Some(sid) if SESSION_VERSIONS.contains(&version) => {
            if meta.has_version {
                return None;
            }
            let s = gw.sessions().get(sid)?;
            if s.client != caller.name || s.transport != "http" || !s.fast_path_ok() {
                return None;
            }
            {
                use rmcp::transport::streamable_http_server::session::SessionManager as _;
                let id: rmcp::transport::streamable_http_server::session::SessionId =
                    sid.to_owned().into();
                if !rmcp.has_session(&id).await.unwrap_or(false) {
                    return None; // rmcp answers 404
                }
            }
            Some(s)
        }
        _ => return None,
    };
    let request_id = dispatch::id_text(&req.id);
    // Dropped (the client went away) or unpaired: the upstream request is cancelled.
    let cancel = CancellationToken::new();
    let _tracked = session
        .as_ref()
        .map(|s| s.track(request_id.clone(), cancel.clone()));
    let ctx = CallCtx {
        caller: Some(caller),
        session_id: session.as_ref().map(|s| s.id.clone()),
        session,
        request_id,
        progress: None,
        cancel,
    };
    Some(tokio::select! {
        biased;
        frame = dispatcher.answer(&ctx, req, version) => Fast::Answered(frame),
        () = caller.revoked.cancelled() => Fast::Unpaired,
    })
}

/// A POSTed `notifications/cancelled` for a request the fast path is running in `session`:
/// cancels it (rmcp, which never saw that request, ignores the notification).
pub(crate) fn cancel_notified(sessions: &Sessions, headers: &HeaderMap, body: &[u8]) {
    let Some(sid) = single(headers, "mcp-session-id") else {
        return;
    };
    if let Incoming::Notification { method, params } = dispatch::parse(body)
        && method == "notifications/cancelled"
        && let Some(id) = dispatch::cancelled_id(params.as_ref())
        && let Some(s) = sessions.get(sid)
    {
        s.cancel(&id);
    }
}
