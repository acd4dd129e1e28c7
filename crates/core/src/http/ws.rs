//! `GET /ws`: the upgrade to MCP over WebSocket (the socket itself is `mcp::ws`). The token
//! middleware has admitted the caller already; `?session_id=` runs the socket in a session
//! made by `POST /session`.

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Extension, Query, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::state::AppState;
use crate::auth::Caller;
use crate::mcp::ws::{READ_BUFFER, SocketDeps, run};

/// `?session_id=`: run this socket in a session made by `POST /session`.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct WsQuery {
    session_id: Option<String>,
}

/// `GET /ws`.
pub(crate) async fn upgrade(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<WsQuery>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let Ok(ws) = ws else {
        return ApiError::upgrade_required(
            "/ws speaks MCP over WebSocket; connect with a WebSocket client",
        );
    };
    let hub = &state.0;
    let attach = match query.session_id.as_deref() {
        None => None,
        Some(id) => match hub.mcp.sessions().watchable(id, Some(&caller.name), None) {
            Some(s) => Some(s),
            None => {
                return ApiError::new(
                    StatusCode::NOT_FOUND,
                    "unknown_session",
                    "no such session (sessions are made by POST /session)",
                )
                .into_response();
            }
        },
    };
    let deps = SocketDeps {
        gw: hub.mcp.clone(),
        dispatcher: hub.dispatcher.clone(),
        sockets: hub.ws_sockets.clone(),
        cap: hub.gateway_config.ws_max_connections,
        heartbeat: hub.gateway_config.ws_heartbeat(),
        shutdown: hub.shutdown.clone(),
    };
    let limit = hub.gateway_config.max_body_bytes;
    // Browsers must be answered with a subprotocol they offered: they offer `bearer.<token>`
    // to authenticate and `mcp` for us to echo (never the token).
    let session_header = attach.as_ref().map(|s| s.id.clone());
    // tracked: shutdown waits (bounded) for every socket's goodbye
    let tasks = hub.tasks.clone();
    let mut resp = ws
        .protocols(["mcp"])
        .max_message_size(limit)
        .max_frame_size(limit)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .on_upgrade(move |socket| tasks.track_future(run(socket, deps, caller, attach)));
    if let Some(id) = session_header
        && let Ok(v) = HeaderValue::from_str(&id)
    {
        resp.headers_mut().insert("mcp-session-id", v);
    }
    resp
}
