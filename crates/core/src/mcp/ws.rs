//! `/ws`: MCP over WebSocket, one JSON-RPC message per text frame, served by the same
//! [`Handler`](super::Handler) (tools, roles, telemetry) as `/mcp`.
//!
//! rmcp runs the session over a sink/stream pair built here from the socket. Frames that are
//! not JSON-RPC are answered with a -32700 error (id null) and the socket stays usable. The
//! socket closes when its client is unpaired (1008) or the gateway stops (1001).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use rmcp::ServiceExt;
use rmcp::model::{ClientJsonRpcMessage, GetExtensions, ServerJsonRpcMessage};
use serde_json::json;
use tokio::sync::mpsc;

use crate::auth::Caller;
use crate::http::{ApiError, AppState};

/// Time for a client to complete `initialize` after connecting.
const HANDSHAKE: Duration = Duration::from_secs(30);

/// `GET /ws` (the auth middleware has already admitted the caller).
pub(crate) async fn upgrade(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let Ok(ws) = ws else {
        let mut r = ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            "upgrade_required",
            "/ws speaks MCP over WebSocket; connect with a WebSocket client",
        )
        .into_response();
        r.headers_mut().insert(
            axum::http::header::UPGRADE,
            axum::http::HeaderValue::from_static("websocket"),
        );
        return r;
    };
    let hub = state.0.clone();
    let limit = hub.gateway_config.max_body_bytes;
    // Browsers must be answered with a subprotocol they offered: they offer `bearer.<token>`
    // to authenticate and `mcp` for us to echo (never the token).
    ws.protocols(["mcp"])
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| run(socket, hub, caller))
}

fn text(v: serde_json::Value) -> Message {
    Message::Text(v.to_string().into())
}

/// The caller, attached to a message the way rmcp's HTTP transport attaches request parts.
fn tag(mut msg: ClientJsonRpcMessage, caller: &Caller) -> ClientJsonRpcMessage {
    let (mut parts, ()) = axum::http::Request::new(()).into_parts();
    parts.extensions.insert(caller.clone());
    match &mut msg {
        ClientJsonRpcMessage::Request(req) => {
            req.request.extensions_mut().insert(parts);
        }
        ClientJsonRpcMessage::Notification(n) => {
            n.notification.extensions_mut().insert(parts);
        }
        _ => {}
    }
    msg
}

async fn run(socket: WebSocket, hub: Arc<crate::server::Hub>, caller: Caller) {
    let (mut ws_tx, ws_rx) = socket.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(256);
    let writer = tokio::spawn(async move {
        while let Some(m) = out_rx.recv().await {
            let close = matches!(m, Message::Close(_));
            if ws_tx.send(m).await.is_err() || close {
                break;
            }
        }
        let _ = ws_tx.close().await;
    });

    // Frames in: JSON-RPC messages for rmcp. Anything else is answered here and skipped.
    let errors = out_tx.clone();
    let who = caller.clone();
    let stream = futures_util::stream::unfold(ws_rx, move |mut rx| {
        let errors = errors.clone();
        let who = who.clone();
        async move {
            loop {
                let frame = match rx.next().await {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return None,
                    Some(Ok(f)) => f,
                };
                let error = match frame {
                    Message::Text(t) => {
                        match serde_json::from_str::<ClientJsonRpcMessage>(t.as_str()) {
                            Ok(msg) => return Some((tag(msg, &who), rx)),
                            Err(e)
                                if serde_json::from_str::<serde_json::Value>(t.as_str())
                                    .is_ok() =>
                            {
                                json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32600,
                                "message": format!("Invalid Request: {e}")}})
                            }
                            Err(e) => {
                                json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32700,
                            "message": format!("Parse error: {e}")}})
                            }
                        }
                    }
                    Message::Binary(_) => {
                        json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32600,
                        "message": "Invalid Request: send JSON-RPC as text frames"}})
                    }
                    _ => continue, // ping/pong: the transport answers
                };
                let _ = errors.send(text(error)).await;
            }
        }
    })
    .boxed();
    // Messages out: rmcp's sink, serialized into text frames.
    let sink =
        futures_util::sink::unfold(out_tx.clone(), |tx, msg: ServerJsonRpcMessage| async move {
            let frame = serde_json::to_string(&msg).map_err(std::io::Error::other)?;
            tx.send(Message::Text(frame.into()))
                .await
                .map_err(|_| std::io::Error::other("socket closed"))?;
            Ok::<_, std::io::Error>(tx)
        });
    let sink = Box::pin(sink);

    let handler = hub.mcp.handler(hub.auth.roles().clone());
    let served = tokio::time::timeout(HANDSHAKE, handler.serve((sink, stream))).await;
    let close = match served {
        Ok(Ok(service)) => {
            let ct = service.cancellation_token();
            let (code, reason) = tokio::select! {
                _ = service.waiting() => (close_code::NORMAL, "bye"),
                () = caller.revoked.cancelled() => (close_code::POLICY, "client unpaired"),
                () = hub.shutdown.cancelled() => (close_code::AWAY, "gateway shutting down"),
            };
            ct.cancel();
            Some((code, reason))
        }
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "WebSocket MCP session did not start");
            Some((close_code::PROTOCOL, "initialize failed"))
        }
        Err(_) => Some((close_code::POLICY, "no initialize within 30 s")),
    };
    if let Some((code, reason)) = close {
        let _ = out_tx
            .send(Message::Close(Some(CloseFrame {
                code,
                reason: reason.into(),
            })))
            .await;
    }
    drop(out_tx);
    let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
}
