//! The `/mcp` fast path: plain request/response POSTs answered by the
//! [`Dispatcher`](super::dispatch::Dispatcher) in the request's own task, as
//! `application/json`, without rmcp's per-session workers.
//!
//! It takes only what needs none of rmcp's session machinery and whose checks it can make
//! exactly: one JSON-RPC request for a method the dispatcher serves, no progress token (that
//! needs a stream), and either a stateless 2026-07-28 request with its required `_meta` and
//! matching `Mcp-Method`/`Mcp-Name` headers (no `Mcp-Param-*`), or a request in a live
//! 2025-xx session of this client. Everything else (initialize, notifications, GET streams,
//! DELETE, SSE-only clients, anything unusual) goes to rmcp as before, so its answers and errors
//! stay rmcp's. (rmcp's own idle timer is off: idle sessions are ended by `Sessions::sweep`,
//! which sees the requests answered here too.)
//!
//! The body is read once here: what it declines, it says was JSON-RPC or not ([`Declined`]), so
//! the HTTP layer checks only the rest for a parse error; a stateless `tools/call`'s tool is
//! looked up once here and its route handed to the dispatcher.

use std::sync::Arc;

use axum::http::{HeaderMap, header, request::Parts};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::call::{CallCtx, Route};
use super::dispatch::{Dispatcher, STATELESS_VERSION};
use super::eras::Bridged;
use super::jsonrpc::{self, Incoming, Request};
use super::method::Method;
use super::session::Session;
use crate::auth::Caller;

/// What the fast path reads of the gateway.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Front<'a> {
    /// The `/mcp` dispatcher, or a per-server endpoint's (see [`Dispatcher::only`]).
    pub(crate) dispatcher: &'a Dispatcher,
    /// Per-call cancellation derives from it.
    pub(crate) shutdown: &'a CancellationToken,
    /// The session the request's `Mcp-Session-Id` names, if we know it (looked up once, by
    /// the front door, which has checked it is the caller's).
    pub(crate) session: Option<&'a Arc<Session>>,
}

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

/// A stateless 2026-07-28 request the fast path can check exactly as rmcp would (`None`: it
/// cannot), with where a `tools/call`'s tool goes when it is known: looked up once, here.
fn stateless_ok<'p>(
    hub: Front<'_>,
    headers: &HeaderMap,
    req: &Request,
    method: Method,
    params: Option<&'p Value>,
) -> Option<Option<Route<'p>>> {
    let meta = params.and_then(|p| p.get("_meta"))?;
    if meta.get(META_VERSION).and_then(Value::as_str) != Some(STATELESS_VERSION)
        || !meta.get(META_CAPABILITIES).is_some_and(Value::is_object)
    {
        return None;
    }
    if single(headers, "mcp-method") != Some(req.method.as_str()) {
        return None;
    }
    if headers.keys().any(|k| k.as_str().starts_with("mcp-param-")) {
        return None;
    }
    if let Some(key) = method.target_param() {
        let expected = params.and_then(|p| p.get(key)).and_then(Value::as_str);
        let given = single(headers, "mcp-name");
        if expected.is_none() || given != expected || given.is_some_and(|g| g.starts_with("=?")) {
            return None;
        }
    }
    let route = match method {
        Method::ToolsCall => params
            .and_then(|p| p.get("name"))
            .and_then(Value::as_str)
            .and_then(|name| hub.dispatcher.route(name)),
        _ => None,
    };
    if let Some(r) = &route
        && r.upstream
            .tool(&r.tool)
            .is_some_and(|t| t.input_schema.values().any(has_param_headers))
    {
        return None;
    }
    Some(route)
}

/// What the fast path made of a POSTed body it left to rmcp.
#[derive(Debug)]
pub(crate) enum Declined {
    /// A JSON-RPC message, so JSON: rmcp reads it.
    Json,
    /// Not JSON-RPC: whether it is JSON at all is still to be seen.
    Unchecked,
}

/// Answers `body` here if it may be; otherwise says what it found for rmcp. A
/// `notifications/cancelled` for a request the fast path is running is acted on here (rmcp,
/// which never saw that request, ignores it).
pub(crate) async fn answer(hub: Front<'_>, parts: &Parts, body: &[u8]) -> Result<Fast, Declined> {
    match jsonrpc::parse(body) {
        Incoming::Request(req) => answer_request(hub, parts, req).await.ok_or(Declined::Json),
        Incoming::Notification { method, params } => {
            if method == "notifications/cancelled" {
                cancel_notified(hub, &parts.headers, params.as_ref());
            }
            Err(Declined::Json)
        }
        Incoming::Response { .. } => Err(Declined::Json),
        Incoming::Invalid(_) => Err(Declined::Unchecked),
    }
}

/// Answers `req` here if it may be; `None` hands it to rmcp.
async fn answer_request(hub: Front<'_>, parts: &Parts, req: Request) -> Option<Fast> {
    let caller = parts.extensions.get::<Caller>()?;
    let headers = &parts.headers;
    let accept = single(headers, header::ACCEPT.as_str())?;
    if !accept.contains("application/json") || !accept.contains("text/event-stream") {
        return None; // the session layer (or rmcp) tells the client what it must accept
    }
    let json = single(headers, header::CONTENT_TYPE.as_str()).is_some_and(|ct| {
        ct.split(';')
            .next()
            .is_some_and(|e| e.trim().eq_ignore_ascii_case("application/json"))
    });
    if !json {
        return None; // 415, from whoever takes it
    }
    let version = single(headers, "mcp-protocol-version")?;
    let method = Method::parse(&req.method).filter(|m| m.fast_path())?;
    let meta = req.meta();
    if meta.progress_token.is_some() {
        return None;
    }
    let params;
    let mut route = None;
    let session = match single(headers, "mcp-session-id") {
        None if version == STATELESS_VERSION => {
            params = req.params_value();
            route = stateless_ok(hub, headers, &req, method, params.as_ref())?;
            // a 2026-07-28 server asks a 2026-07-28 client itself: its input_required and
            // the client's retry pass through (see `upstream/input`)
            let same_era = route.as_ref().is_some_and(|r| r.upstream.is_modern());
            if method == Method::ToolsCall
                && !same_era
                && let Some(bridged) = Bridged::read(params.as_ref())
            {
                return Some(bridge(hub, caller, req, bridged).await);
            }
            None
        }
        Some(sid) if SESSION_VERSIONS.contains(&version) => {
            if meta.has_version {
                return None;
            }
            let s = hub.session.filter(|s| s.id == sid)?.clone();
            if s.client != caller.name || s.transport != "http" {
                return None;
            }
            if s.can_be_asked() && method == Method::ToolsCall {
                return None; // its server may ask the client things: that needs a stream
            }
            Some(s)
        }
        _ => return None,
    };
    let request_id = jsonrpc::id_text(&req.id);
    // Dropped (the client went away), unpaired or shut down: the upstream request is
    // cancelled.
    let cancel = hub.shutdown.child_token();
    let _tracked = session
        .as_ref()
        .map(|s| s.track(request_id.clone(), cancel.clone()));
    let ctx = CallCtx {
        caller: Some(caller),
        session_id: session.as_ref().map(|s| s.id.clone()),
        session,
        request_id,
        progress: None,
        asks: None,
        meta: req.passed_meta(),
        cancel,
    };
    Some(tokio::select! {
        biased;
        frame = hub.dispatcher.answer(&ctx, req, version, route) => Fast::Answered(frame),
        () = caller.revoked.cancelled() => Fast::Unpaired,
    })
}

/// A stateless `tools/call` from a client that may be asked things, or its retry with the
/// answers: the call runs in a task of its own (see `mcp/eras`), which may outlive this
/// request when its server asks the client something.
async fn bridge(hub: Front<'_>, caller: &Caller, req: Request, bridged: Bridged) -> Fast {
    let id = req.id.clone();
    let (dispatcher, owned) = (hub.dispatcher.clone(), caller.clone());
    let call = move |asks, cancel| async move {
        let ctx = CallCtx {
            caller: Some(&owned),
            session_id: None,
            session: None,
            request_id: jsonrpc::id_text(&req.id),
            progress: None,
            asks: Some(asks),
            meta: req.passed_meta(),
            cancel,
        };
        dispatcher.answer(&ctx, req, STATELESS_VERSION, None).await
    };
    let rounds = hub.dispatcher.gateway().rounds();
    tokio::select! {
        biased;
        frame = rounds.answer(&caller.name, &id, bridged, call) => Fast::Answered(frame),
        () = caller.revoked.cancelled() => Fast::Unpaired,
    }
}

/// A POSTed `notifications/cancelled` (its `params`) for a request the fast path is running in
/// `session`: cancels it.
fn cancel_notified(hub: Front<'_>, headers: &HeaderMap, params: Option<&Value>) {
    if let Some(sid) = single(headers, "mcp-session-id")
        && let Some(id) = jsonrpc::cancelled_id(params)
        && let Some(s) = hub.session.filter(|s| s.id == sid)
    {
        s.cancel(&id);
    }
}
