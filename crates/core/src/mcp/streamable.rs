//! `/mcp` sessions (the Streamable HTTP transport of the session revisions, 2024-11-05 to
//! 2025-11-25), served by the gateway itself as `/ws` is: no per-session worker, channel or
//! task; a session is its entry in [`Sessions`] until `DELETE`, expiry or unpairing ends it.
//!
//! - `POST initialize` opens a session (`Mcp-Session-Id` on the answer); the client's
//!   capabilities are kept with it (what it may be asked).
//! - `POST` of a request in a session: the fast path (`mcp/fast`) answers plain ones as JSON;
//!   what it leaves comes here. A request with a progress token, or a call whose server may ask
//!   this client things, is answered on an SSE stream of its own: its progress, its server's
//!   requests (under ids `sb-<n>`; the answers come back in POSTs), then its result, in that
//!   order. Anything else is answered as JSON.
//! - `POST` of a notification or of an answer: 202.
//! - `GET`: the session's stream (one at a time; 409 for a second): notifications for the
//!   session (list changes, log messages, resource updates) and its servers' requests outside
//!   any call, each kept (bounded) while no stream is open.
//! - `DELETE`: the session ends, 200.
//!
//! Status codes and messages for bad requests are those of the spec (and of rmcp, which
//! served these sessions before): 406 without the right `Accept`, 415 without JSON, 400 for an
//! unknown `Mcp-Protocol-Version`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::call::{CallCtx, ClientProgress, ProgressOut};
use super::dispatch::Dispatcher;
use super::jsonrpc::{self, INVALID_REQUEST, Incoming, Request, error_frame};
use super::method::Method;
use super::session::{Note, Session, Sessions, ToolListener, client_error};
use crate::auth::Caller;
use crate::elicit::Elicitations;
use crate::upstream::{ClientAsks, RpcError, ServerAsk};

/// Messages of one POST's SSE stream waiting for the client: beyond this a client that does
/// not read loses progress notifications (never its server's requests or the result, which
/// wait, bounded by [`RESULT_WAIT`]).
const SSE_QUEUE: usize = 256;
/// How long a result (or a server's request) waits for room on a stream the client does not
/// read before it is given up.
const RESULT_WAIT: Duration = Duration::from_secs(30);
/// Comment lines on a quiet stream, so that a client gone without a word is noticed.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Requests of one call's server waiting for the call's stream.
const ASK_QUEUE: usize = 8;
/// How long a call's result waits for what its server still asks to be called off.
const ASK_DRAIN: Duration = Duration::from_secs(2);
/// Revisions a session request may name in `Mcp-Protocol-Version`.
const KNOWN: [&str; 5] = [
    "2024-11-05",
    "2025-03-26",
    "2025-06-18",
    "2025-11-25",
    "2026-07-28",
];
/// The revision of a request that names none (as the spec says).
const DEFAULT_VERSION: &str = "2025-03-26";

/// What the session transport reads of the gateway.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Door<'a> {
    /// The `/mcp` dispatcher, or a per-server endpoint's.
    pub(crate) dispatcher: &'a Dispatcher,
    /// Calls are cancelled when the client goes away before their answer: a child of the
    /// gateway's shutdown, cancelled by the HTTP layer when the response is dropped unfinished.
    pub(crate) gone: &'a CancellationToken,
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain")], text).into_response()
}

fn json_response(frame: String) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        frame,
    )
        .into_response()
}

fn accepts(headers: &HeaderMap, mime: &str) -> bool {
    headers.get_all(header::ACCEPT).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',').any(|m| {
                let essence = m.split(';').next().unwrap_or("").trim();
                essence.eq_ignore_ascii_case(mime) || essence == "*/*"
            })
        })
    })
}

/// Why a request cannot be served: its status and what it says.
type Refused = (StatusCode, &'static str);

/// 406 / 415 / 400 for a POST that cannot be served, as the spec has it; else its revision.
fn post_checks(headers: &HeaderMap) -> Result<&str, Refused> {
    if !accepts(headers, "application/json") || !accepts(headers, "text/event-stream") {
        return Err((
            StatusCode::NOT_ACCEPTABLE,
            "Not Acceptable: Client must accept both application/json and text/event-stream",
        ));
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("application/json")
        });
    if !json {
        return Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Unsupported Media Type: Content-Type must be application/json",
        ));
    }
    version(headers)
}

fn version(headers: &HeaderMap) -> Result<&str, Refused> {
    match headers.get("mcp-protocol-version") {
        None => Ok(DEFAULT_VERSION),
        Some(v) => match v.to_str() {
            Ok(v) if KNOWN.contains(&v) => Ok(v),
            _ => Err((
                StatusCode::BAD_REQUEST,
                "Bad Request: Unsupported MCP-Protocol-Version",
            )),
        },
    }
}

/// One message as an SSE event.
fn event(frame: &str) -> Bytes {
    let mut s = String::with_capacity(frame.len() + 24);
    s.push_str("event: message\ndata: ");
    s.push_str(frame);
    s.push_str("\n\n");
    Bytes::from(s)
}

const PING: &[u8] = b": keep-alive\n\n";

fn sse(body: Body) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// `POST initialize` without a session: opens one, answered as JSON with its id in
/// `Mcp-Session-Id` (an `initialize` the dispatcher refuses opens nothing).
pub(crate) async fn initialize(
    door: Door<'_>,
    caller: &Caller,
    headers: &HeaderMap,
    req: Request,
) -> Response {
    let version = match post_checks(headers) {
        Ok(v) => v,
        Err((status, text)) => return plain(status, text),
    };
    let d = door.dispatcher;
    let sessions = d.gateway().sessions();
    let caps = req
        .params_value()
        .and_then(|p| p.get("capabilities").cloned())
        .unwrap_or_else(|| json!({}));
    let (s, _) = sessions.open(None, &caller.name, "http", false);
    if let Some(server) = d.server() {
        s.bind(server);
    }
    s.set_caps(caps);
    let ctx = ctx(caller, &s, &req, door.gone.child_token(), None, None);
    let frame = d.answer(&ctx, req, version, None).await;
    drop(ctx);
    if frame.contains("\"error\"")
        && serde_json::from_str::<Value>(&frame).is_ok_and(|v| v.get("error").is_some())
    {
        sessions.close(&s.id, "initialize refused");
        return json_response(frame);
    }
    listen_for_notes(&s);
    if s.can_be_asked() {
        ask_outside_calls(&s, d);
    }
    let mut resp = json_response(frame);
    if let Ok(id) = s.id.parse() {
        resp.headers_mut().insert("mcp-session-id", id);
    }
    resp
}

/// The session's notifications go to its `GET` stream (kept while there is none).
fn listen_for_notes(s: &Arc<Session>) {
    let weak = Arc::downgrade(s);
    s.on_tools_changed(ToolListener(Box::new(move |note: &Note| {
        let Some(s) = weak.upgrade() else {
            return false;
        };
        let mut frame = json!({"jsonrpc": "2.0", "method": note.method()});
        if let Some(params) = note.params() {
            frame["params"] = params.clone();
        }
        s.send_out(Arc::from(frame.to_string()));
        true
    })));
}

/// Servers' requests to the session's client outside its calls (an isolated instance asking
/// for roots as it starts) go out on its `GET` stream, answered concurrently by a task that
/// ends with the session (at most [`ASK_QUEUE`] wait to be sent; more are refused by the
/// server's connection).
fn ask_outside_calls(s: &Arc<Session>, d: &Dispatcher) {
    let (tx, mut rx) = mpsc::channel::<ServerAsk>(ASK_QUEUE);
    s.set_asker(ClientAsks {
        session: s.id.clone(),
        tx,
    });
    let weak = Arc::downgrade(s);
    let closed = s.closed.clone();
    let elicitations = d.gateway().elicitations().clone();
    d.gateway().tasks().spawn(async move {
        let mut asking = FuturesUnordered::new();
        loop {
            tokio::select! {
                () = closed.cancelled() => break,
                Some(ask) = rx.recv() => {
                    let Some(s) = weak.upgrade() else { break };
                    asking.push(ask_client(s, ask, None, closed.clone(), elicitations.clone()));
                }
                Some(()) = asking.next(), if !asking.is_empty() => {}
            }
        }
    });
}

/// A `POST` in session `s` that the fast path left: a request, a notification or an answer.
pub(crate) async fn post(
    door: Door<'_>,
    caller: &Caller,
    headers: &HeaderMap,
    body: &[u8],
    s: Arc<Session>,
) -> Response {
    let version = match post_checks(headers) {
        Ok(v) => v,
        Err((status, text)) => return plain(status, text),
    };
    let d = door.dispatcher;
    match jsonrpc::parse(body) {
        Incoming::Invalid(e) => (StatusCode::BAD_REQUEST, axum::Json(e)).into_response(),
        Incoming::Notification { method, params } => {
            match method.as_str() {
                "notifications/cancelled" => {
                    if let Some(id) = jsonrpc::cancelled_id(params.as_ref()) {
                        s.cancel(&id);
                    }
                }
                "notifications/roots/list_changed" => {
                    let told = d.gateway().roots_changed(&s.id);
                    tracing::debug!(session = %s.id, told, "client roots changed");
                }
                _ => {}
            }
            StatusCode::ACCEPTED.into_response()
        }
        Incoming::Response { id, result, error } => {
            let answer = match (result, error) {
                (Some(r), _) => serde_json::from_str(r.get())
                    .map_err(|e| client_error(&json!({"message": e.to_string()}).to_string())),
                (None, Some(e)) => Err(client_error(e.get())),
                (None, None) => Err(client_error("{\"message\": \"neither result nor error\"}")),
            };
            if !s.answered(&jsonrpc::id_text(&id), answer) {
                tracing::debug!(session = %s.id, id = %id, "an answer nothing waits for");
            }
            StatusCode::ACCEPTED.into_response()
        }
        Incoming::Request(req) => {
            if req.method == "initialize" {
                let e = error_frame(
                    req.id,
                    INVALID_REQUEST,
                    "Invalid Request: this session is initialized already",
                );
                return json_response(e.to_string());
            }
            let waits = Method::parse(&req.method).is_some_and(Method::waits);
            let streamed = waits && (req.progress_token().is_some() || s.can_be_asked());
            if streamed {
                return streamed_call(door, caller, s, req, version);
            }
            let request_id = jsonrpc::id_text(&req.id);
            let cancel = door.gone.child_token();
            let _tracked = s.track(request_id, cancel.clone());
            let ctx = ctx(caller, &s, &req, cancel, None, None);
            tokio::select! {
                biased;
                frame = d.answer(&ctx, req, version, None) => json_response(frame),
                () = caller.revoked.cancelled() => plain(StatusCode::UNAUTHORIZED, "this client was unpaired"),
            }
        }
    }
}

/// What a call is told of its caller and session.
fn ctx<'a>(
    caller: &'a Caller,
    s: &Arc<Session>,
    req: &Request,
    cancel: CancellationToken,
    progress: Option<ClientProgress>,
    asks: Option<ClientAsks>,
) -> CallCtx<'a> {
    CallCtx {
        caller: Some(caller),
        session_id: Some(s.id.clone()),
        session: Some(s.clone()),
        request_id: jsonrpc::id_text(&req.id),
        progress,
        asks,
        meta: req.passed_meta(),
        cancel,
    }
}

/// A request answered on an SSE stream of its own: its progress, its server's requests, then
/// its result. The call runs in a task of its own (tracked by the gateway) that ends with it;
/// the client going away (the stream dropped) cancels it, as the session ending does.
fn streamed_call(
    door: Door<'_>,
    caller: &Caller,
    s: Arc<Session>,
    req: Request,
    version: &str,
) -> Response {
    let (out, rx) = mpsc::channel::<Bytes>(SSE_QUEUE);
    let progress = req.progress_token().map(|token| {
        let out = out.clone();
        let sink: ProgressOut = Arc::new(move |token: &Value, p: &crate::upstream::Progress| {
            let params = p.fields("progressToken", token, 0);
            let frame = json!({"jsonrpc": "2.0", "method": "notifications/progress",
                "params": params});
            // full: the client is not reading; it loses progress, never the result
            let _ = out.try_send(event(&frame.to_string()));
        });
        ClientProgress {
            token,
            out: Some(sink),
        }
    });
    let (asks_tx, mut asks_rx) = mpsc::channel::<ServerAsk>(ASK_QUEUE);
    let asks = s.can_be_asked().then(|| ClientAsks {
        session: s.id.clone(),
        tx: asks_tx,
    });
    let d = door.dispatcher.clone();
    let caller = caller.clone();
    let cancel = door.gone.child_token();
    let version = version.to_owned();
    let elicitations = d.gateway().elicitations().clone();
    let tasks = d.gateway().tasks().clone();
    let later = tasks.clone();
    tasks.spawn(async move {
        let request_id = jsonrpc::id_text(&req.id);
        let _tracked = s.track(request_id, cancel.clone());
        let ctx = ctx(&caller, &s, &req, cancel.clone(), progress, asks);
        let call = d.answer(&ctx, req, &version, None);
        tokio::pin!(call);
        let mut asking = FuturesUnordered::new();
        // the call's end: a request of its server still unanswered then is called off with
        // the client before the result (an isolated instance's outlives it: `kept`)
        let ended = CancellationToken::new();
        let kept = CancellationToken::new();
        let mut keep_alive =
            tokio::time::interval_at(tokio::time::Instant::now() + KEEP_ALIVE, KEEP_ALIVE);
        let mut session_open = true;
        let frame = loop {
            tokio::select! {
                biased;
                frame = &mut call => break frame,
                () = s.closed.cancelled(), if session_open => {
                    session_open = false;
                    cancel.cancel();
                }
                Some(ask) = asks_rx.recv() => {
                    let ends = if ask.outlives_call { &kept } else { &ended };
                    asking.push(ask_client(s.clone(), ask, Some(out.clone()), ends.clone(),
                        elicitations.clone()));
                }
                Some(()) = asking.next(), if !asking.is_empty() => {}
                _ = keep_alive.tick() => {
                    let _ = out.try_send(Bytes::from_static(PING));
                }
            }
        };
        // asked as the call ended: still sent, on the call's stream, before its result
        while let Ok(ask) = asks_rx.try_recv() {
            let ends = if ask.outlives_call { &kept } else { &ended };
            asking.push(ask_client(
                s.clone(),
                ask,
                Some(out.clone()),
                ends.clone(),
                elicitations.clone(),
            ));
        }
        ended.cancel();
        let _ =
            tokio::time::timeout(ASK_DRAIN, async { while asking.next().await.is_some() {} }).await;
        if !asking.is_empty() {
            // an isolated instance's requests outlive the call: answered after its result
            // (each ends with its answer, the server's bound on it or the session)
            later.spawn(async move { while asking.next().await.is_some() {} });
        }
        let _ = tokio::time::timeout(RESULT_WAIT, out.send(event(&frame))).await;
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    sse(Body::from_stream(body))
}

fn remote(code: i64, message: impl Into<String>) -> RpcError {
    RpcError::Remote {
        code,
        message: message.into(),
        data: None,
    }
}

/// Asks the session's client what its server asked, on the call's stream (`on`) or, outside a
/// call (or once the call's stream is gone), on the session's `GET` stream, and hands the
/// answer back: a result, the client's error, or an error saying why it could not be asked. A
/// request for a capability the client did not declare is not sent: an elicitation goes to
/// Switchboard's own, anything else is refused. When the server gives its request up, or
/// `ended` fires first, the client is told `notifications/cancelled` under the id it saw.
async fn ask_client(
    s: Arc<Session>,
    ask: ServerAsk,
    on: Option<mpsc::Sender<Bytes>>,
    ended: CancellationToken,
    elicitations: Elicitations,
) {
    if !s.declares(&ask.method) {
        if crate::elicit::answerable(&ask) {
            return elicitations.take(ask, Some(&s.client)).await;
        }
        let refused = remote(
            -32601,
            format!("the client declared no capability for {:?}", ask.method),
        );
        let _ = ask.reply.send(Err(refused));
        return;
    }
    let (tx, rx) = oneshot::channel();
    let Some(id) = s.sent_ask(tx) else {
        let _ = ask.reply.send(Err(remote(
            -32603,
            "the client has too many requests waiting for its answer",
        )));
        return;
    };
    let mut frame = json!({"jsonrpc": "2.0", "id": id, "method": ask.method});
    if let Some(params) = ask.params {
        frame["params"] = params;
    }
    let send = |frame: String| {
        let on = on.clone();
        let s = s.clone();
        async move {
            if let Some(tx) = on
                && matches!(
                    tokio::time::timeout(RESULT_WAIT, tx.send(event(&frame))).await,
                    Ok(Ok(()))
                )
            {
                return;
            }
            s.send_out(Arc::from(frame));
        }
    };
    send(frame.to_string()).await;
    tokio::select! {
        answer = rx => {
            let answer = answer.unwrap_or_else(|_| {
                Err(remote(-32603, "the client's session ended before it answered"))
            });
            let _ = ask.reply.send(answer);
        }
        () = ask.cancelled.cancelled() => cancelled(&s, &id, send).await,
        () = ended.cancelled() => cancelled(&s, &id, send).await,
    }
}

/// The client is told a request it was sent is called off (if it has not answered it).
async fn cancelled<F: std::future::Future<Output = ()>>(
    s: &Session,
    id: &str,
    send: impl FnOnce(String) -> F,
) {
    if s.unask(id) {
        let note = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
            "params": {"requestId": id, "reason": "the server cancelled its request"}});
        send(note.to_string()).await;
    }
}

/// `GET` in session `s`: its stream (notifications, servers' requests outside calls, what
/// waited for it), until the client drops it or the session ends.
pub(crate) fn listen(headers: &HeaderMap, s: &Arc<Session>) -> Response {
    if !accepts(headers, "text/event-stream") {
        return plain(
            StatusCode::NOT_ACCEPTABLE,
            "Not Acceptable: Client must accept text/event-stream",
        );
    }
    if let Err((status, text)) = version(headers) {
        return plain(status, text);
    }
    let Some(rx) = s.listen() else {
        return plain(
            StatusCode::CONFLICT,
            "Conflict: this session has a GET stream open already",
        );
    };
    let tick = tokio::time::interval_at(tokio::time::Instant::now() + KEEP_ALIVE, KEEP_ALIVE);
    let closed = s.closed.clone();
    let body = futures_util::stream::unfold(
        (rx, tick, closed),
        |(mut rx, mut tick, closed)| async move {
            let bytes = tokio::select! {
                biased;
                () = closed.cancelled() => return None,
                m = rx.recv() => event(&m?),
                _ = tick.tick() => Bytes::from_static(PING),
            };
            Some((Ok::<_, Infallible>(bytes), (rx, tick, closed)))
        },
    );
    sse(Body::from_stream(body))
}

/// `DELETE` of session `s`: it ends (200: done, not pending).
pub(crate) fn end(sessions: &Sessions, s: &Session) -> Response {
    sessions.close(&s.id, "deleted");
    StatusCode::OK.into_response()
}
