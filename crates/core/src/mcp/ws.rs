//! `/ws` and `/ws/<server>`: MCP over WebSocket, one JSON-RPC message per text frame,
//! answered by the shared [`Dispatcher`] (tools, roles, telemetry) that also serves `/mcp`
//! (for `/ws/<server>`, narrowed to that server).
//!
//! One task per socket reads frames, runs the socket's requests concurrently (a slow call never
//! holds up a fast one; each response carries its own id) and writes their answers, with each
//! call's progress ahead of its result. No rmcp session, no task per request.
//!
//! Closes: over the connection cap 1013, a message over the size cap 1009, unpaired 1008 (calls
//! in flight are answered -32001 first), gateway shutdown 1001. A peer that does not answer a
//! WebSocket ping before the next one (every [`heartbeat`](crate::config::GatewayConfig)) is
//! dropped; a peer that sent a message since the last ping time is alive and is not pinged.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, close_code};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::call::{CallCtx, ClientProgress, ProgressOut};
use super::dispatch::Dispatcher;
use super::gateway::McpGateway;
use super::jsonrpc::{self, INVALID_REQUEST, Incoming, Request, UNAUTHENTICATED, error_frame};
use super::method::Method;
use super::session::{Note, Session, ToolListener, client_error, declares};
use crate::auth::Caller;
use crate::upstream::{ClientAsks, RpcError, ServerAsk};

/// Notifications (progress, list changes) waiting for the socket; beyond this a slow client
/// loses progress notifications (never results).
const NOTIFY_QUEUE: usize = 1024;
/// Socket buffers: small, so that thousands of idle sockets stay cheap.
pub(crate) const READ_BUFFER: usize = 2 * 1024;

/// Open `/ws` sockets, against the configured cap.
#[derive(Debug, Default)]
pub(crate) struct SocketCount(AtomicUsize);

/// Holds one place under the cap until dropped.
struct Slot<'a>(&'a SocketCount);

impl SocketCount {
    fn take(&self, cap: usize) -> Option<Slot<'_>> {
        let before = self.0.fetch_add(1, Ordering::AcqRel);
        if before >= cap {
            self.0.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Slot(self))
    }

    pub(crate) fn get(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What one `/ws` socket needs from the gateway.
#[derive(Debug, Clone)]
pub(crate) struct SocketDeps {
    pub(crate) gw: McpGateway,
    pub(crate) dispatcher: Dispatcher,
    /// Open sockets, against `cap`.
    pub(crate) sockets: Arc<SocketCount>,
    pub(crate) cap: usize,
    /// How often the peer is pinged; no answer before the next ping drops it.
    pub(crate) heartbeat: Duration,
    pub(crate) shutdown: CancellationToken,
}

fn text(v: &Value) -> Message {
    Message::Text(v.to_string().into())
}

fn close(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

/// Whether a read error is a message or frame over the size cap.
fn too_big(e: axum::Error) -> bool {
    e.into_inner()
        .downcast::<tungstenite::Error>()
        .is_ok_and(|e| matches!(*e, tungstenite::Error::Capacity(_)))
}

/// Why a socket ended, for `SessionClosed`.
enum End {
    Closed(&'static str),
    /// Close with this code and reason, then end.
    Close(u16, &'static str),
}

/// Serves one upgraded socket until it closes (or is closed: unpaired, shut down, silent).
pub(crate) async fn run(
    mut socket: WebSocket,
    hub: SocketDeps,
    caller: Caller,
    attach: Option<Arc<Session>>,
) {
    let cap = hub.cap;
    let Some(_slot) = hub.sockets.take(cap) else {
        tracing::warn!(cap, "WebSocket refused: at the connection cap");
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            socket.send(close(close_code::AGAIN, "Server at capacity")),
        )
        .await;
        return;
    };
    let sessions = hub.gw.sessions().clone();
    let (session, owned) = match attach {
        Some(s) => (s, false),
        None => {
            let (s, _) = sessions.open(None, &caller.name, "ws", false);
            if let Some(server) = hub.dispatcher.server() {
                s.bind(server);
            }
            (s, true)
        }
    };
    let d: Dispatcher = hub.dispatcher.clone();
    let (notify_tx, mut notify_rx) = mpsc::channel::<Message>(NOTIFY_QUEUE);
    {
        let tx = notify_tx.clone();
        session.on_tools_changed(ToolListener(Box::new(move |note: &Note| {
            let mut frame = json!({"jsonrpc": "2.0", "method": note.method()});
            if let Some(params) = note.params() {
                frame["params"] = params.clone();
            }
            // full: this client is not reading; it loses the notification
            let _ = tx.try_send(text(&frame));
            !tx.is_closed()
        })));
    }
    let progress_out: ProgressOut = {
        let tx = notify_tx.clone();
        Arc::new(move |token: &Value, p: &crate::upstream::Progress| {
            let params = p.fields("progressToken", token, 0);
            let frame = json!({"jsonrpc": "2.0", "method": "notifications/progress",
                "params": params});
            // full: this client is not reading; it loses progress, never results
            let _ = tx.try_send(text(&frame));
        })
    };
    drop(notify_tx);

    // Requests in flight, by id: cancelled by `notifications/cancelled` or the socket ending.
    let mut cancels: HashMap<String, (CancellationToken, Value)> = HashMap::new();
    // Requests servers send this client during its calls (see `ClientAsks`): sent as our own
    // ids, their answers matched back; what is unanswered when the socket ends is dropped
    // (the server hears the call has ended).
    let (asks_tx, mut asks_rx) = mpsc::channel::<ServerAsk>(ASK_QUEUE);
    // and outside calls (an isolated instance asking as it starts)
    session.set_asker(ClientAsks {
        session: session.id.clone(),
        tx: asks_tx.clone(),
    });
    let mut asked: HashMap<String, oneshot::Sender<Result<Value, RpcError>>> = HashMap::new();
    // each ask's id once its server stops waiting: the client is told if it has not answered
    let mut ask_ends = FuturesUnordered::new();
    let mut next_ask = 0u64;
    // Elicitations this client did not declare, waiting for the person at Switchboard: they end
    // with the socket.
    let elicitations = d.gateway().elicitations().clone();
    let mut own_asks = FuturesUnordered::new();
    // what the client declared in `initialize`: it is asked only for those
    let mut client_caps: Option<Value> = None;
    let mut inflight = FuturesUnordered::new();
    // shared by the calls in flight: no copy per call
    let mut version: Arc<str> = Arc::from("2025-11-25");
    let period = hub.heartbeat;
    let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut awaiting_pong = false;
    // a message from the peer since the last tick: it is alive, and is not pinged (see below)
    let mut heard = false;
    let caller_ref = &caller;
    let d_ref = &d;
    let session_ref = &session;

    // Made once, not per turn of the loop, and on this socket's own child tokens: polling a
    // token's future takes its lock, and `shutdown` (and a client's `revoked`) is shared by
    // every socket.
    let revoked_token = caller.revoked.child_token();
    let shutdown_token = hub.shutdown.child_token();
    let revoked = revoked_token.cancelled();
    let shutdown = shutdown_token.cancelled();
    tokio::pin!(revoked, shutdown);

    let end = loop {
        let mut out: Option<Message> = None;
        tokio::select! {
            biased;
            () = &mut revoked => {
                // Calls in flight are answered before the socket closes.
                for (_, id) in cancels.values() {
                    let frame = error_frame(id.clone(), UNAUTHENTICATED,
                        "authentication required: this client was unpaired");
                    let _ = socket.send(text(&frame)).await;
                }
                break End::Close(close_code::POLICY, "client unpaired");
            }
            () = &mut shutdown => break End::Close(close_code::AWAY, "gateway shutting down"),
            // before results: a server cancels its request before it answers its call
            Some(id) = ask_ends.next(), if !ask_ends.is_empty() => {
                if asked.remove::<String>(&id).is_some() {
                    out = Some(text(&json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                        "params": {"requestId": id, "reason": "the server cancelled its request"}})));
                }
            }
            Some((key, frame)) = inflight.next(), if !inflight.is_empty() => {
                cancels.remove::<String>(&key);
                // this call's progress first: it is queued already
                while let Ok(m) = notify_rx.try_recv() {
                    if socket.send(m).await.is_err() {
                        break;
                    }
                }
                out = Some(Message::Text(String::into(frame)));
            }
            Some(m) = notify_rx.recv() => out = Some(m),
            Some(()) = own_asks.next(), if !own_asks.is_empty() => {}
            Some(ask) = asks_rx.recv() => {
                let declared = declares(client_caps.as_ref(), &ask.method);
                if !declared && crate::elicit::answerable(&ask) {
                    own_asks.push(elicitations.take(ask, Some(caller.name.as_str())));
                } else if !declared {
                    let _ = ask.reply.send(Err(RpcError::Remote {
                        code: -32601,
                        message: format!("the client declared no capability for {:?}", ask.method),
                        data: None,
                    }));
                } else if asked.len() >= ASK_QUEUE {
                    let _ = ask.reply.send(Err(RpcError::Remote {
                        code: -32603,
                        message: "the client has too many requests waiting for its answer".into(),
                        data: None,
                    }));
                } else {
                    next_ask += 1;
                    let id = format!("sb-{next_ask}");
                    let mut frame = json!({"jsonrpc": "2.0", "id": id, "method": ask.method});
                    if let Some(params) = ask.params {
                        frame["params"] = params;
                    }
                    let end = ask.cancelled.cancelled_owned();
                    let key = id.clone();
                    ask_ends.push(async move {
                        end.await;
                        key
                    });
                    asked.insert(id, ask.reply);
                    out = Some(text(&frame));
                }
            }
            _ = heartbeat.tick() => {
                if std::mem::take(&mut heard) {
                    // A peer that sent a message this period is alive and is not pinged: its
                    // pong would go out with its next request, and a client with Nagle's
                    // algorithm on holds that request until we ACK the pong (our delayed ACK,
                    // 40 ms): the slowest call of every busy socket's period, in the bench.
                    awaiting_pong = false;
                } else if awaiting_pong {
                    tracing::debug!(client = %caller.name, "WebSocket peer did not answer ping; dropping it");
                    break End::Closed("no answer to ping");
                } else {
                    awaiting_pong = true;
                    out = Some(Message::Ping(Default::default()));
                }
            }
            frame = socket.recv() => {
                let frame = match frame {
                    None => break End::Closed("client closed"),
                    Some(Err(e)) => {
                        if too_big(e) {
                            break End::Close(close_code::SIZE, "message too big");
                        }
                        break End::Closed("connection error");
                    }
                    Some(Ok(f)) => f,
                };
                awaiting_pong = false; // any frame shows the peer is alive
                heard |= matches!(frame, Message::Text(_));
                let bytes = match &frame {
                    Message::Text(t) => t.as_bytes(),
                    Message::Binary(_) => {
                        let e = error_frame(Value::Null, INVALID_REQUEST,
                            "Invalid Request: send JSON-RPC as text frames");
                        out = Some(text(&e));
                        &[][..]
                    }
                    Message::Close(_) => break End::Closed("client closed"),
                    Message::Ping(_) | Message::Pong(_) => &[][..],
                };
                if !bytes.is_empty() || matches!(frame, Message::Text(_)) {
                    match jsonrpc::parse(bytes) {
                        Incoming::Invalid(e) => out = Some(text(&e)),
                        Incoming::Response { id, result, error } => {
                            let answer = match (result, error) {
                                (Some(r), _) => serde_json::from_str(r.get()).map_err(|e| e.to_string()),
                                (None, Some(e)) => Err(e.get().to_owned()),
                                (None, None) => Err("neither result nor error".to_owned()),
                            };
                            if let Some(reply) = asked.remove(&jsonrpc::id_text(&id)) {
                                let _ = reply.send(answer.map_err(|e| client_error(&e)));
                            }
                        }
                        Incoming::Notification { method, params } => {
                            if method == "notifications/roots/list_changed" {
                                d_ref.gateway().roots_changed(&session_ref.id);
                            } else if method == "notifications/cancelled"
                                && let Some(id) = jsonrpc::cancelled_id(params.as_ref())
                                && let Some((ct, _)) = cancels.get(&id)
                            {
                                ct.cancel();
                            }
                        }
                        Incoming::Request(req) => {
                            let key = jsonrpc::id_text(&req.id);
                            if req.method == "initialize"
                                && let Some(p) = req.params_value()
                            {
                                if let Some(v) = p.get("protocolVersion").and_then(Value::as_str) {
                                    version = Arc::from(v);
                                }
                                client_caps = p.get("capabilities").cloned();
                            }
                            if cancels.contains_key(&key) {
                                out = Some(text(&error_frame(req.id, INVALID_REQUEST,
                                    "Invalid Request: this id is already in use by a request in flight")));
                            } else if Method::parse(&req.method).is_some_and(Method::waits) {
                                let cancel = shutdown_token.child_token();
                                cancels.insert(key.clone(), (cancel.clone(), req.id.clone()));
                                let progress = req.progress_token().map(|token| ClientProgress {
                                    token,
                                    out: Some(progress_out.clone()),
                                });
                                let v = version.clone();
                                let meta = req.passed_meta();
                                let asks = ClientAsks {
                                    session: session_ref.id.clone(),
                                    tx: asks_tx.clone(),
                                };
                                inflight.push(async move {
                                    let ctx = CallCtx {
                                        caller: Some(caller_ref),
                                        session_id: Some(session_ref.id.clone()),
                                        session: Some(session_ref.clone()),
                                        request_id: key.clone(),
                                        progress,
                                        asks: Some(asks),
                                        cancel,
                                        meta,
                                    };
                                    let frame = d_ref.answer(&ctx, req, &v, None).await;
                                    (key, frame)
                                });
                            } else {
                                let ctx = quick_ctx(caller_ref, session_ref, &req, shutdown_token.child_token());
                                out = Some(Message::Text(d_ref.answer(&ctx, req, &version, None).await.into()));
                            }
                        }
                    }
                }
            }
        }
        if let Some(m) = out
            && socket.send(m).await.is_err()
        {
            break End::Closed("connection error");
        }
    };
    // Whatever is still running was asked for by a client that is gone.
    for (ct, _) in cancels.values() {
        ct.cancel();
    }
    drop(inflight);
    let reason = match end {
        End::Closed(reason) => reason,
        End::Close(code, reason) => {
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                let _ = socket.send(close(code, reason)).await;
                // let the peer's close reply arrive so the TCP close is clean
                let _ = tokio::time::timeout(Duration::from_millis(200), socket.recv()).await;
            })
            .await;
            reason
        }
    };
    if owned {
        sessions.close(&session.id, reason);
    } else {
        session.forget_tools_listener();
    }
}

/// Server requests waiting to be sent to a `/ws` client, and waiting for its answers.
const ASK_QUEUE: usize = 16;

/// Context for a request answered at once (it never waits on an upstream).
fn quick_ctx<'a>(
    caller: &'a Caller,
    session: &Arc<Session>,
    req: &Request,
    cancel: CancellationToken,
) -> CallCtx<'a> {
    CallCtx {
        caller: Some(caller),
        session_id: Some(session.id.clone()),
        session: Some(session.clone()),
        request_id: jsonrpc::id_text(&req.id),
        progress: None,
        asks: None,
        cancel,
        meta: req.passed_meta(),
    }
}
