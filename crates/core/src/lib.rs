//! Switchboard's core: the local MCP hub, free of any desktop toolkit.
//!
//! # Layout
//! Top to bottom: each module uses only those listed below it, and no file imports a file
//! that imports it (`scripts/check-layers` checks both, in CI).
//! - [`server`]: [`serve`], the single entry point (headless binary, desktop shell, tests):
//!   opens the stores, assembles the state, serves and drains.
//! - [`wake`]: sleep, wake-up and network changes (the clock, logind, the routing table),
//!   which send remote servers waiting out a backoff back at once.
//! - [`http`]: the router and everything HTTP: the local-only guard, token middleware, the
//!   `/mcp` front door, the dashboard's API and pages, session routes, the shared state.
//! - [`setup`]: connecting agents in one step (`switchboard setup`, the Connect button):
//!   each agent's config file edited in place, detection, and adopting agents' servers.
//! - [`pairing`]: `POST /pair`, unpairing, and the owner's control socket (`switchboard pair`).
//! - [`registration`]: the IEP v1.0 registration server at `/ws/mcp` and the project registry
//!   (in memory, written through to SQLite).
//! - [`mcp`]: the MCP gateway: one aggregated server, answered by one dispatcher behind `/mcp`
//!   (rmcp's Streamable HTTP, plus a fast path for plain calls) and `/ws`; MCP sessions (the one
//!   session registry) and their progress streams.
//! - [`elicit`]: the elicitations Switchboard answers itself when the client cannot (pending
//!   ones for the dashboard and the desktop, answers checked against the requested schema).
//! - [`upstream`]: supervised MCP servers, stdio children and remote endpoints (spawn,
//!   restart, replay), and OAuth logins to remote ones.
//! - [`import`]: servers from Claude Desktop / Cursor configs into ours.
//! - [`logbook`]: servers' recent log messages, a bounded ring each (the dashboard's log view).
//! - [`calls`]: tool calls in flight and recently finished, with payloads (dashboard).
//! - [`telemetry`]: per-call records (`telemetry.jsonl`, SQLite), counters, `/metrics`.
//! - [`store`]: SQLite in the data dir (project registry, call history), one writer thread.
//! - [`auth`]: pairing codes, tokens (hashes in the OS keychain), roles and allowlists.
//! - [`events`]: the bounded broadcast of [`HubEvent`]s that the dashboard, tray and
//!   notifications consume.
//! - [`registration::protocol`]: the registration wire types (events carry them).
//! - [`http::error`]: [`ApiError`](http::ApiError) and the bearer token, the HTTP vocabulary
//!   domain handlers answer with.
//! - [`config`]: the TOML config and the platform directories.
//! - [`discovery`]: `mcp.json` in the data dir, announcing the running gateway's URL.
//! - [`connect`]: `switchboard connect`, the stdio bridge for clients that only spawn servers.
//! - [`browser`]: opening a URL in the person's browser (`$BROWSER`, `xdg-open`), for logins.

/// What every binary linking the core allocates with (the headless gateway, the app, tests):
/// jemalloc, whose background thread hands freed memory back to the system within seconds, so
/// RSS comes back down after thousands of sessions have ended (glibc's malloc kept the peak).
/// It runs with one arena and a small thread cache (`narenas:1,tcache_nslots_small_max:32`,
/// built in by `.cargo/config.toml`; `_RJEM_MALLOC_CONF` in the environment overrides it):
/// with jemalloc's defaults (four arenas per core, up to 200 freed allocations of each size
/// cached per thread), what ended sessions freed stays spread over half-empty pages that
/// those arenas and caches pin (README, issue 14).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// What the allocator holds now, in bytes: `allocated` (live allocations), `active` (the
/// pages they sit on), `resident` (what the allocator has mapped and touched, freed pages not
/// yet handed back and its own `metadata` included). The gap between `allocated` and `active` is fragmentation:
/// pages pinned by a few live allocations among freed ones. `None` where jemalloc is not used.
pub fn allocator_stats() -> Option<serde_json::Value> {
    #[cfg(not(target_env = "msvc"))]
    {
        use tikv_jemalloc_ctl::{epoch, stats};
        // the figures are cached; advancing the epoch refreshes them
        epoch::advance().ok()?;
        Some(serde_json::json!({
            "allocated": stats::allocated::read().ok()?,
            "active": stats::active::read().ok()?,
            "resident": stats::resident::read().ok()?,
            "retained": stats::retained::read().ok()?,
            "metadata": stats::metadata::read().ok()?,
            // the option: jemalloc adds one arena of its own for huge allocations
            "arenas": tikv_jemalloc_ctl::opt::narenas::read().ok()?,
        }))
    }
    #[cfg(target_env = "msvc")]
    None
}

pub mod auth;
pub mod browser;
pub(crate) mod calls;
pub mod config;
pub mod connect;
pub mod discovery;
pub(crate) mod elicit;
pub mod events;
pub(crate) mod http;
pub mod import;
pub(crate) mod logbook;
pub mod mcp;
pub mod pairing;
pub mod registration;
pub mod server;
pub mod setup;
pub(crate) mod store;
pub(crate) mod telemetry;
pub mod upstream;
pub(crate) mod wake;

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

#[cfg(all(test, not(target_env = "msvc")))]
mod tests {
    #[test]
    fn the_allocator_runs_with_the_built_in_options() {
        let stats = super::allocator_stats().expect("jemalloc's figures");
        if std::env::var_os("_RJEM_MALLOC_CONF").is_none() {
            // `.cargo/config.toml` builds jemalloc with `narenas:1` (and a small thread cache)
            assert_eq!(stats["arenas"], 1, "{stats}");
        }
        // as built, with the allocator crate's own options (`background_thread:true`) first
        let built = tikv_jemalloc_ctl::config::malloc_conf::read().expect("jemalloc's options");
        let built: Vec<&str> = built.trim_end_matches('\0').split(',').collect();
        for option in ["narenas:1", "tcache_nslots_small_max:32"] {
            assert!(built.contains(&option), "{option} not in {built:?}");
        }
        assert!(stats["allocated"].as_u64().unwrap() > 0, "{stats}");
        assert!(
            stats["resident"].as_u64() >= stats["active"].as_u64(),
            "{stats}"
        );
    }
}
