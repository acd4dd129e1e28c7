//! `GET /ws` and `GET /ws/<server>`: the upgrade to MCP over WebSocket (the socket itself is
//! `mcp::ws`), every server or one server's own endpoint. The token middleware has admitted
//! the caller already; `?session_id=` runs the socket in a session made by `POST /session`
//! (for `/ws/<server>`, by `POST /session?server=<server>`).

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Extension, Path, Query, State};
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

/// The upgrade's own rejection, if it was not one.
type Upgrade = Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>;

/// `GET /ws`.
pub(crate) async fn upgrade(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<WsQuery>,
    ws: Upgrade,
) -> Response {
    let d = state.0.dispatcher.clone();
    open(&state, caller, query, ws, d)
}

/// `GET /ws/<server>`: one server's own endpoint (`/ws/mcp` is the registration server's,
/// which is why no server may be named `mcp`). An unknown server is 404, naming those there are.
pub(crate) async fn upgrade_for(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(server): Path<String>,
    Query(query): Query<WsQuery>,
    ws: Upgrade,
) -> Response {
    if state.0.mcp.upstream(&server).is_none() {
        return super::mcp::unknown_server(&state, "/ws", &server);
    }
    let d = state.0.dispatcher.only(&server);
    open(&state, caller, query, ws, d)
}

/// The upgrade to a socket answered by `d`.
fn open(
    state: &AppState,
    caller: Caller,
    query: WsQuery,
    ws: Upgrade,
    d: crate::mcp::Dispatcher,
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
            Some(s) if s.server() != d.server() => {
                let asked = match s.server() {
                    Some(server) => format!("POST /session?server={server}, for /ws/{server}"),
                    None => "POST /session, for /ws".to_owned(),
                };
                return ApiError::new(
                    StatusCode::NOT_FOUND,
                    "session_elsewhere",
                    format!("this session was made by {asked}; it serves there only"),
                )
                .into_response();
            }
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
        dispatcher: d,
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
