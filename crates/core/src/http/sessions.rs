//! Explicit MCP sessions and their watch streams: `POST /session` (a session with a watch
//! token), `DELETE /session/<id>`, `GET /api/sessions`, and the two streams of a session's
//! progress frames, `GET /session/<id>/events` (SSE) and `GET /ws/mcp/events?session_id=`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt};
use serde_json::json;
use tokio::sync::broadcast;

use super::error::{ApiError, bearer};
use super::state::{AppState, Hub};
use crate::auth::Caller;
use crate::mcp::session::{Session, SessionList};

/// How often an idle SSE stream sends a comment so proxies and clients keep it open.
pub(crate) const SSE_KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The subprotocol `/ws/mcp/events` echoes when offered.
const WATCH_PROTOCOL: &str = "construct.v1";

/// `?server=`: a session for that server's own endpoint, `/ws/<server>`.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct CreateQuery {
    server: Option<String>,
}

/// `POST /session` (`?server=`: for `/ws/<server>`): a session of the caller's own, with a token that lets anything holding
/// it watch (only) this session.
pub(crate) async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<CreateQuery>,
) -> Response {
    if let Some(server) = &query.server
        && state.0.mcp.upstream(server).is_none()
    {
        return super::mcp::unknown_server(&state, "/ws", server);
    }
    let (s, token) = state
        .0
        .mcp
        .sessions()
        .open(None, &caller.name, "http", true);
    if let Some(server) = &query.server {
        s.bind(server);
    }
    (
        StatusCode::CREATED,
        Json(json!({"session_id": s.id, "token": token})),
    )
        .into_response()
}

/// `GET /api/sessions`: every session, how many `/ws` sockets are open, and how many sessions
/// expired (idle for `session_idle_ms`) since start; `held` counts what every per-session and
/// per-call structure holds (all zero with nothing open and nothing running); `allocator` what
/// the allocator holds, to tell memory kept from memory pinned.
pub(crate) async fn list(State(state): State<AppState>) -> Json<Listing> {
    let hub = &state.0;
    let mut held = hub.mcp.held();
    held["rmcp_sessions"] = json!(hub.rmcp_sessions.sessions.read().await.len());
    Json(Listing {
        held,
        // not zero at rest (the gateway's own tasks), but back where it was once sessions end
        tasks_alive: tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks(),
        ws: hub.ws_sockets.get(),
        ws_max: hub.gateway_config.ws_max_connections,
        sessions: hub.mcp.sessions().list(),
        expired: hub.mcp.sessions().expired(),
        session_idle_ms: hub.gateway_config.session_idle_ms,
        allocator: crate::allocator_stats(),
    })
}

/// What `GET /api/sessions` answers (the sessions written row by row, see [`SessionList`]).
#[derive(Debug, serde::Serialize)]
pub(crate) struct Listing {
    held: serde_json::Value,
    tasks_alive: usize,
    ws: usize,
    ws_max: usize,
    sessions: SessionList,
    expired: u64,
    session_idle_ms: u64,
    allocator: Option<serde_json::Value>,
}

/// `DELETE /session/<id>`: only its owner may end it.
pub(crate) async fn delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    let sessions = state.0.mcp.sessions();
    if sessions.watchable(&id, Some(&caller.name), None).is_none() {
        return unknown().into_response();
    }
    sessions.close(&id, "deleted");
    Json(json!({"closed": id})).into_response()
}

fn unknown() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "unknown_session", "no such session")
}

/// Who may watch `id`: its owner (a paired token) or the holder of its watch token.
/// `tokens` are the candidates a request carries, in order (`Authorization` or the `bearer.`
/// subprotocol; for the WebSocket also `?token=` and `?mcp_token=`): the first that opens the
/// session wins, each checked on its own; if none does, the first one's refusal is the answer.
fn authorize(hub: &Hub, id: &str, tokens: &[String]) -> Result<Arc<Session>, ApiError> {
    let mut refusal = None;
    for token in tokens.iter().filter(|t| !t.is_empty()) {
        match authorize_one(hub, id, token) {
            Ok(s) => return Ok(s),
            Err(e) => {
                refusal.get_or_insert(e);
            }
        }
    }
    Err(refusal.unwrap_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "token_required",
            "send the session's token (from POST /session) or a paired client's token as \
             `Authorization: Bearer <token>`",
        )
    }))
}

fn authorize_one(hub: &Hub, id: &str, token: &str) -> Result<Arc<Session>, ApiError> {
    let client = hub.auth.verify(token);
    let sessions = hub.mcp.sessions();
    match sessions.watchable(id, client.as_ref().map(|c| c.name.as_str()), Some(token)) {
        Some(s) => Ok(s),
        None if client.is_some() || sessions.get(id).is_none() => Err(unknown()),
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "token_invalid",
            "this token does not open this session",
        )),
    }
}

/// Frames of a session for one watcher: oldest dropped when it falls behind (then one
/// `lagged` frame says how many); ends with the session or the gateway.
fn frames(hub: &Hub, s: &Session) -> impl Stream<Item = Arc<str>> + Send + 'static {
    let rx = s.subscribe();
    futures_util::stream::unfold(rx, |mut rx| async move {
        match rx.recv().await {
            Ok(frame) => Some((frame, rx)),
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                let lagged = json!({"event": "lagged", "missed": missed,
                    "timestamp": crate::now_rfc3339()});
                Some((Arc::from(lagged.to_string()), rx))
            }
            Err(broadcast::error::RecvError::Closed) => None,
        }
    })
    .take_until(s.closed.clone().cancelled_owned())
    .take_until(hub.shutdown.clone().cancelled_owned())
}

/// `GET /session/<id>/events`: the session's frames as SSE, one `data:` line each.
pub(crate) async fn sse(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let hub = &state.0;
    let tokens: Vec<String> = bearer(&headers).into_iter().collect();
    let session = match authorize(hub, &id, &tokens) {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    let stream = frames(hub, &session)
        .map(|frame| Ok::<_, Infallible>(Event::default().data(frame.as_ref())));
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(SSE_KEEP_ALIVE).text("keep-alive"))
        .into_response()
}

#[derive(Debug, serde::Deserialize)]
pub(crate) struct EventsQuery {
    session_id: Option<String>,
    /// Legacy: a token in the query, a paired client's or the session's (redacted from every
    /// log line).
    token: Option<String>,
    /// The session's token under the name seed 001's watchers use, often next to `token`
    /// holding their paired token (redacted from every log line too).
    mcp_token: Option<String>,
}

/// `GET /ws/mcp/events?session_id=`: the same frames, one WebSocket text frame each.
pub(crate) async fn ws(
    State(state): State<AppState>,
    Query(query): Query<EventsQuery>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let hub = state.0.clone();
    let Some(id) = query.session_id.filter(|s| !s.is_empty()) else {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "session_id_required",
            "say which session to watch: /ws/mcp/events?session_id=<id>",
        )
        .into_response();
    };
    let tokens: Vec<String> = [bearer(&headers), query.token, query.mcp_token]
        .into_iter()
        .flatten()
        .collect();
    let session = match authorize(&hub, &id, &tokens) {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    let Ok(ws) = ws else {
        return ApiError::upgrade_required(
            "/ws/mcp/events is a WebSocket; /session/<id>/events is the same stream as SSE",
        );
    };
    // tracked: shutdown waits (bounded) for the goodbye
    let tasks = hub.tasks.clone();
    ws.protocols([WATCH_PROTOCOL])
        .read_buffer_size(4096)
        .on_upgrade(move |socket| tasks.track_future(watch(socket, hub, session)))
}

async fn watch(mut socket: WebSocket, hub: Arc<Hub>, session: Arc<Session>) {
    let mut frames = Box::pin(frames(&hub, &session));
    let (code, reason) = loop {
        tokio::select! {
            frame = frames.next() => match frame {
                Some(f) => {
                    if socket.send(Message::Text(f.as_ref().into())).await.is_err() {
                        return;
                    }
                }
                None if hub.shutdown.is_cancelled() => break (close_code::AWAY, "gateway shutting down"),
                None => break (close_code::NORMAL, "session ended"),
            },
            incoming = socket.recv() => match incoming {
                None | Some(Err(_) | Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {} // watchers only listen
            },
        }
    };
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        socket.send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        }))),
    )
    .await;
}
