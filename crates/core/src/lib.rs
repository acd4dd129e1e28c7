//! Switchboard's core: the local MCP hub, free of any desktop toolkit.
//!
//! # Layout
//! - [`server`]: [`serve`], the single entry point (headless binary, desktop shell, tests).
//! - [`http`]: the router, the local-only guard (`Host`/`Origin`), the dashboard read API.
//! - [`registration`]: the IEP v1.0 registration server at `/ws/mcp` and the project registry
//!   (in memory, written through to SQLite).
//! - [`events`]: the bounded broadcast of [`HubEvent`]s that the dashboard, tray and
//!   notifications consume.
//! - [`config`]: the TOML config and the platform directories.

pub mod config;
pub mod events;
pub mod http;
pub mod registration;
pub mod server;

pub use config::Config;
pub use events::{EventBus, HubEvent};
pub use server::{Gateway, ServeError, serve};

/// Now, as RFC 3339 with nanoseconds (the format the real clients send).
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339()
}
