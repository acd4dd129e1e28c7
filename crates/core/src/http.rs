//! HTTP surface: one pure [`router`] over an [`AppState`], which `serve` mounts and tests drive
//! with `oneshot`.
//!
//! This file only routes. In front of every route stands the local-only guard (`http/guard`);
//! protected routes need a paired token (`http/token`); `/mcp` checks it itself in its front
//! door (`http/mcp`). The handlers are the dashboard's API (`http/api`), its agents' Connect and Adopt
//! buttons (`http/agents`), its pages
//! (`http/assets`), the gateway's read routes (`http/dashboard`), sessions and their watch
//! streams (`http/sessions`) and the `/ws` upgrade (`http/ws`); domain handlers (`/pair`,
//! `/ws/mcp`) take the sub-state they need from [`AppState`] (`http/state`). Errors are
//! [`ApiError`]s (`http/error`, a leaf the domain modules use too).

mod agents;
mod api;
mod assets;
mod dashboard;
pub(crate) mod error;
pub(crate) mod guard;
mod mcp;
mod sessions;
pub(crate) mod state;
mod token;
mod ws;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::middleware;
use axum::routing::{any, delete, get, post};

pub(crate) use guard::LocalGuard;
pub(crate) use state::AppState;

/// The whole HTTP app. Pure: tests drive it with `oneshot`, `serve` mounts it.
pub(crate) fn router(state: AppState) -> Router {
    // Everything that can reach a tool or show what tools do needs a paired token.
    let protected = Router::new()
        .route("/api/projects", get(dashboard::projects))
        .route("/api/events", get(dashboard::events))
        .route(
            "/api/servers",
            get(dashboard::servers).post(api::add_server),
        )
        .route("/api/servers/{name}/{action}", post(api::server_action))
        .route("/api/servers/{name}/logs", get(api::server_logs))
        .route("/api/elicitations", get(api::elicitations))
        .route("/api/elicitations/{id}", post(api::answer_elicitation))
        .route("/api/calls", get(api::calls))
        .route("/api/calls/{id}", get(api::call))
        .route("/api/telemetry", get(api::telemetry))
        .route("/api/import", get(api::import_sources).post(api::import))
        .route("/api/pair-codes", post(api::pair_code))
        .route("/api/clients", get(api::clients))
        .route("/api/agents", get(agents::list))
        .route("/api/agents/{id}/{action}", post(agents::action))
        .route("/api/clients/{name}", delete(dashboard::unpair_client))
        .route("/metrics", get(dashboard::metrics))
        .route("/ws", get(ws::upgrade))
        // `/ws/mcp` (registration) is matched first: no server may be named `mcp`
        .route("/ws/{server}", get(ws::upgrade_for))
        .route("/session", post(sessions::create))
        .route("/api/sessions", get(sessions::list))
        .route("/session/{id}", delete(sessions::delete))
        .route_layer(middleware::from_fn_with_state(
            state.0.auth.clone(),
            token::require_token,
        ));
    // `/mcp` checks the token itself, in one handler with the other steps in front of rmcp: a
    // layer per step would clone the stack under it on every request; `/mcp/<server>` is the
    // same door to one server. Nothing is served below that: a path there is a client's
    // mistake, answered 404 rather than served as an endpoint.
    let svc = mcp::service(&state);
    Router::new()
        .route(
            "/mcp",
            any(move |State(state): State<AppState>, req: Request| {
                mcp::entry(state, svc.clone(), req)
            }),
        )
        .route(
            "/mcp/{server}",
            any(
                |State(state): State<AppState>, Path(server): Path<String>, req: Request| {
                    mcp::entry_for(state, server, req)
                },
            ),
        )
        .route("/mcp/", any(mcp::below))
        .route("/mcp/{server}/{*rest}", any(mcp::below))
        .route("/healthz", get(dashboard::healthz))
        .route("/ws/mcp", get(crate::registration::upgrade))
        .route("/pair", post(crate::pairing::pair))
        // The browser comes back here from an OAuth login; the `state` it brings is the
        // credential (the local-only guard stands in front, as for every route).
        .route("/oauth/callback", get(api::oauth_callback))
        // These authenticate themselves: a session's own token opens them too.
        .route("/session/{id}/events", get(sessions::sse))
        .route("/ws/mcp/events", get(sessions::ws))
        .merge(protected)
        .fallback(assets::fallback)
        .layer(middleware::from_fn_with_state(
            state.0.guard.clone(),
            guard::local_only,
        ))
        .with_state(state)
}
