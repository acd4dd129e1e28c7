//! Switchboard's core: the local MCP hub, free of any desktop toolkit.
//!
//! # Layout
//! - [`server`]: [`serve`], the single entry point (headless binary, desktop shell, tests).
//! - [`http`]: the router, the local-only guard (`Host`/`Origin`), the dashboard read API.
//! - [`api`]: the dashboard's API (calls, statistics, server actions, pairing codes).
//! - [`assets`]: the dashboard itself (`ui/dist`, embedded), served at `/`.
//! - [`registration`]: the IEP v1.0 registration server at `/ws/mcp` and the project registry
//!   (in memory, written through to SQLite).
//! - [`store`]: SQLite in the data dir (project registry, call history), one writer thread.
//! - [`events`]: the bounded broadcast of [`HubEvent`]s that the dashboard, tray and
//!   notifications consume.
//! - [`upstream`]: supervised stdio MCP servers (spawn, restart, replay).
//! - [`mcp`]: the MCP gateway: one aggregated server, answered by one dispatcher (`mcp/dispatch`)
//!   behind `/mcp` (rmcp's Streamable HTTP, plus a fast path for plain calls) and `/ws`; MCP
//!   sessions and their progress streams (`mcp/session`).
//! - [`calls`]: tool calls in flight and recently finished, with payloads (dashboard).
//! - [`telemetry`]: per-call records (`telemetry.jsonl`, SQLite), counters, `/metrics`.
//! - [`import`]: servers from Claude Desktop / Cursor configs into ours.
//! - [`auth`]: pairing codes, tokens (hashes in the OS keychain), roles and allowlists.
//! - [`config`]: the TOML config and the platform directories.
//! - [`discovery`]: `mcp.json` in the data dir, announcing the running gateway's URL.

pub mod api;
pub mod assets;
pub mod auth;
pub mod calls;
pub mod config;
pub mod connect;
pub mod discovery;
pub mod events;
pub mod http;
pub mod import;
pub mod mcp;
pub mod pairing;
pub mod registration;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod upstream;

pub use config::Config;
pub use events::{EventBus, HubEvent};
pub use server::{Gateway, ServeError, serve};

/// Structured logs to stderr, filtered by `SWITCHBOARD_LOG` (default `info`): the headless
/// binary and the desktop app log the same way.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SWITCHBOARD_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// Now, as RFC 3339 with nanoseconds (the format the real clients send).
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339()
}
