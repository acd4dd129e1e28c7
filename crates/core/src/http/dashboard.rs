//! The gateway's own read routes: `/healthz`, `/api/servers`, `/metrics` (Prometheus),
//! `/api/projects`, `/api/events` (every `HubEvent` as SSE), and unpairing from the dashboard.

use std::convert::Infallible;

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt};
use serde_json::json;

use super::error::ApiError;
use super::sessions::SSE_KEEP_ALIVE;
use super::state::AppState;
use crate::auth::Caller;
use crate::pairing::Pairing;
use crate::registration::ProjectView;

/// `DELETE /api/clients/{name}`: unpair.
pub(crate) async fn unpair_client(
    State(pairing): State<Pairing>,
    Path(name): Path<String>,
) -> Response {
    match pairing.unpair(&name).await {
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

pub(crate) async fn healthz(State(state): State<AppState>) -> Json<serde_json::Value> {
    let hub = &state.0;
    Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_ms": hub.started.elapsed().as_millis() as u64,
        "projects_online": hub.registration.registry().online_count(),
        "registration_sockets": hub.registration.open_sockets(),
    }))
}

pub(crate) async fn servers(State(state): State<AppState>) -> Json<serde_json::Value> {
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
                s["oauth"] = up.oauth_view().await;
            }
        }
    }
    health["tools"] = json!(tools);
    Json(health)
}

/// `GET /metrics`: Prometheus text.
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
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

pub(crate) async fn projects(State(state): State<AppState>) -> Json<Vec<ProjectView>> {
    Json(state.0.registration.registry().projects())
}

/// `GET /api/events`: every HubEvent as SSE, `event:` its type, `id:` its sequence number.
pub(crate) async fn events(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
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
