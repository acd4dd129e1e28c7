//! The supervisor of one server: opens its transport (`stdio` or `remote`, as a [`Link`]),
//! runs the MCP handshake, lists its tools (every page; again on `tools/list_changed`), and
//! opens it again with exponential backoff when it dies.
//!
//! - stdio: too many crashes in a window mark the server `failed` until someone asks for a
//!   restart; children are stopped politely (stdin closed, a grace period, then killed).
//! - remote: a lost connection is reconnected with its own backoff (500 ms doubling to 30 s)
//!   and never ends `failed`; one that wants an OAuth login (a `401` no refresh got past) is
//!   parked `needs_login` until a login, a restart or a new config.
//!
//! Either backoff starts again from its first delay once a run stayed up for
//! `gateway.healthy_after_ms` (10 s).
//!
//! It owns the server's `Status` (through [`Inner`]); callers only read it. Restarts and
//! config changes reach it on the bounded control queue (`state::CONTROL_QUEUE`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rmcp::model::Tool;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::connection::{Connection, RpcError};
use super::notice::{self, ListChanged, NoticeReceiver};
use super::pages;
use super::remote;
use super::state::{Inner, MODERN_PROTOCOL, Restart, ServerState, ServerTool, UPSTREAM_PROTOCOL};
use super::stdio;
use crate::config::{GatewayConfig, ServerConfig, Transport};
use crate::events::HubEvent;

/// What the client a call comes from may be asked (see `Connection`), as declared upstream:
/// a client that did not declare it answers with an error saying so.
fn client_capabilities() -> Value {
    json!({
        "elicitation": {"form": {}, "url": {}},
        "sampling": {},
        "roots": {},
    })
}

fn client_info() -> Value {
    json!({"name": "switchboard", "version": env!("CARGO_PKG_VERSION")})
}

/// The `_meta` every request to a 2026-07-28 server carries.
fn modern_stamp() -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert(
        "io.modelcontextprotocol/protocolVersion".into(),
        MODERN_PROTOCOL.into(),
    );
    m.insert(
        "io.modelcontextprotocol/clientCapabilities".into(),
        client_capabilities(),
    );
    m.insert("io.modelcontextprotocol/clientInfo".into(), client_info());
    m
}

/// What opening the server settled on.
struct Opening {
    protocol: &'static str,
    capabilities: Value,
    server_info: Value,
}

/// `server/discover`, for a stdio server: `Ok(Some)` when it speaks 2026-07-28 (the
/// connection then stamps every request), `Ok(None)` when it answered but does not (an error,
/// as servers of the older protocol answer a method they do not know, or no 2026-07-28 among
/// its versions): the caller falls back to `initialize`. Bounded by the start timeout, which
/// the child's start-up shares.
async fn discover(inner: &Inner, conn: &Connection) -> Result<Option<Opening>, RpcError> {
    let stamp = modern_stamp();
    let answer = conn
        .request(
            "server/discover",
            json!({"_meta": Value::Object(stamp.clone())}),
            inner.limits.start_timeout(),
            Some(&inner.shutdown),
        )
        .await;
    let result = match answer {
        Ok(r) => r,
        Err(RpcError::Remote { code, message, .. }) => {
            tracing::debug!(server = %inner.name, code, %message,
                "server/discover refused: the server speaks an older protocol");
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let modern = result
        .get("supportedVersions")
        .and_then(Value::as_array)
        .is_some_and(|v| v.iter().any(|v| v.as_str() == Some(MODERN_PROTOCOL)));
    if !modern {
        return Ok(None);
    }
    conn.set_modern(stamp);
    Ok(Some(Opening {
        protocol: MODERN_PROTOCOL,
        capabilities: result.get("capabilities").cloned().unwrap_or(json!({})),
        server_info: result
            .pointer("/_meta/io.modelcontextprotocol~1serverInfo")
            .cloned()
            .unwrap_or(Value::Null),
    }))
}

/// The `initialize` handshake and `notifications/initialized`.
async fn initialize(inner: &Inner, conn: &Connection) -> Result<Opening, RpcError> {
    let init = conn
        .request(
            "initialize",
            json!({
                "protocolVersion": UPSTREAM_PROTOCOL,
                "capabilities": client_capabilities(),
                "clientInfo": client_info(),
            }),
            inner.limits.start_timeout(),
            Some(&inner.shutdown),
        )
        .await?;
    let _ = conn.notify("notifications/initialized", json!({})).await;
    Ok(Opening {
        protocol: UPSTREAM_PROTOCOL,
        capabilities: init.get("capabilities").cloned().unwrap_or(json!({})),
        server_info: init.get("serverInfo").cloned().unwrap_or(Value::Null),
    })
}

/// What carries a server's messages, as the supervisor sees it.
enum Link {
    Stdio(stdio::Process),
    Remote(remote::Remote),
}

impl Link {
    fn pid(&self) -> Option<u32> {
        match self {
            Self::Stdio(p) => p.pid(),
            Self::Remote(_) => None,
        }
    }

    /// Resolves when the link is gone, with the reason.
    async fn ended(&mut self) -> String {
        match self {
            Self::Stdio(p) => p.ended().await,
            Self::Remote(r) => r.ended().await,
        }
    }

    /// The handshake failed with `error`: tears the link down and says why, as precisely as
    /// the transport can (exit status and last stderr line, or the connection error).
    async fn abandon(self, inner: &Inner, error: RpcError) -> String {
        match self {
            Self::Stdio(p) => p.abandon(inner, error).await,
            Self::Remote(r) => r.abandon(error).await,
        }
    }

    /// The polite stop, bounded by the grace period.
    async fn stop(self, inner: &Inner) {
        match self {
            Self::Stdio(p) => p.stop(inner).await,
            Self::Remote(r) => r.stop(inner).await,
        }
    }
}

/// A server's transport, open, with its connection.
struct Opened {
    link: Link,
    conn: Arc<Connection>,
    notices: NoticeReceiver,
}

/// Opens the transport `cfg` asks for.
async fn open(inner: &Arc<Inner>, cfg: &ServerConfig) -> Result<Opened, String> {
    let (notice_tx, notices) = notice::channel();
    let (link, conn) = match cfg.transport() {
        Transport::Stdio { .. } => {
            let mut secret_env = std::collections::BTreeMap::new();
            for (var, value) in &cfg.secret_env {
                let v = remote::resolve_value(inner, &format!("env {var}"), value).await?;
                secret_env.insert(var.clone(), v);
            }
            let (p, conn) = stdio::spawn(inner, cfg, &secret_env, notice_tx)?;
            (Link::Stdio(p), conn)
        }
        Transport::Http { .. } | Transport::WebSocket { .. } => {
            let (r, conn) = remote::connect(inner, cfg, notice_tx).await?;
            (Link::Remote(r), conn)
        }
    };
    Ok(Opened {
        link,
        conn,
        notices,
    })
}

/// Opens the server and runs the MCP handshake: a stdio server is offered 2026-07-28 with
/// `server/discover` first (decided anew on every start), anything that does not take it gets
/// `initialize` and `notifications/initialized`; then `tools/list`.
async fn start(inner: &Arc<Inner>, cfg: &ServerConfig) -> Result<Opened, String> {
    let opened = open(inner, cfg).await?;
    let conn = opened.conn.clone();
    conn.set_notes(inner.notes.clone());
    if let Some(asks) = inner.instance.as_ref().and_then(|i| i.asks.clone()) {
        conn.set_owner(asks);
    }
    let discovered = match &opened.link {
        Link::Stdio(_) => discover(inner, &conn).await,
        // remote endpoints are spoken to in the handshake era (their 2026-07-28 needs
        // stateless HTTP requests, which the remote transport does not make)
        Link::Remote(_) => Ok(None),
    };
    let opening = match discovered {
        Ok(Some(o)) => Ok(o),
        Ok(None) => initialize(inner, &conn).await,
        Err(e) => Err(e),
    };
    let opening = match opening {
        Ok(o) => o,
        Err(e) => return Err(opened.link.abandon(inner, e).await),
    };
    let Opening {
        protocol,
        capabilities,
        server_info,
    } = opening;
    let tools = if capabilities.get("tools").is_some() {
        match list_tools(inner, &conn).await {
            Ok(tools) => tools,
            Err(e) => {
                opened.link.stop(inner).await;
                return Err(e);
            }
        }
    } else {
        Vec::new()
    };
    let pid = opened.link.pid();
    tracing::debug!(server = %inner.name, protocol, "opened");
    inner.update(|s| {
        s.generation += 1;
        s.pid = pid;
        s.tools = Arc::new(tools);
        s.capabilities = Arc::new(capabilities);
        s.server_info = Arc::new(server_info);
        s.protocol = protocol;
        s.conn = Some(conn.clone());
        s.running_since = Some(Instant::now());
    });
    Ok(opened)
}

/// `tools/list`, following cursors (bounded, see `pages`). Tools that do not parse are skipped
/// with a warning.
async fn list_tools(inner: &Inner, conn: &Connection) -> Result<Vec<ServerTool>, String> {
    let fetch = |params| {
        conn.request(
            "tools/list",
            params,
            inner.limits.start_timeout(),
            Some(&inner.shutdown),
        )
    };
    let listed = pages::collect(&inner.name, "tools/list", "tools", pages::BOUNDS, fetch)
        .await
        .map_err(|e| format!("tools/list failed: {e}"))?;
    let mut tools = Vec::with_capacity(listed.len());
    for t in listed {
        match serde_json::from_value::<Tool>(t.clone()) {
            Ok(tool) => tools.push(ServerTool { tool, def: t }),
            Err(e) => tracing::warn!(server = %inner.name, tool = %t["name"], error = %e,
                "tool definition ignored"),
        }
    }
    Ok(tools)
}

/// When to try again after a crash or a lost connection.
struct Policy {
    initial_ms: u64,
    max_ms: u64,
    /// Jitter as a factor range: restarts of many servers do not line up.
    jitter: (f64, f64),
    /// Whether a crash loop ends in `failed` (stdio); a remote server keeps reconnecting.
    crash_loop: bool,
}

impl Policy {
    fn for_server(limits: &GatewayConfig, cfg: &ServerConfig) -> Self {
        if cfg.is_remote() {
            Self {
                initial_ms: limits.remote_backoff_initial_ms,
                max_ms: limits.remote_backoff_max_ms,
                // The documented delays are minimums: 500 ms means at least 500 ms.
                jitter: (1.0, 1.1),
                crash_loop: false,
            }
        } else {
            Self {
                initial_ms: limits.backoff_initial_ms,
                max_ms: limits.backoff_max_ms,
                jitter: (0.5, 1.0),
                crash_loop: true,
            }
        }
    }

    fn delay(&self, attempt: u32) -> Duration {
        let base = self
            .initial_ms
            .saturating_mul(1u64 << attempt.min(20))
            .min(self.max_ms);
        let (lo, hi) = self.jitter;
        let factor = lo + rand::random::<f64>() * (hi - lo);
        Duration::from_millis((base as f64 * factor) as u64)
    }
}

enum Exit {
    Crashed(String),
    Shutdown,
    Restart,
}

/// Runs one server until its shutdown token is cancelled: starts it, watches it, restarts it
/// when it dies or is asked to, parks it when disabled or failed.
pub(super) async fn supervise(inner: Arc<Inner>, mut control: mpsc::Receiver<Restart>) {
    let mut crashes: VecDeque<Instant> = VecDeque::new();
    let mut attempt: u32 = 0;
    loop {
        if inner.shutdown.is_cancelled() {
            inner.set_state(ServerState::Stopped, None);
            return;
        }
        let cfg = inner.config.lock().expect("config lock").clone();
        if !cfg.enabled {
            inner.set_state(ServerState::Disabled, None);
            if !wait_for_control(&inner, &mut control).await {
                return;
            }
            crashes.clear();
            attempt = 0;
            continue;
        }
        let policy = Policy::for_server(&inner.limits, &cfg);
        inner.set_state(ServerState::Starting, None);
        let reason = match start(&inner, &cfg).await {
            Ok(mut run) => {
                inner.set_state(ServerState::Running, None);
                tracing::info!(server = %inner.name, pid = ?run.link.pid(),
                    session = ?inner.instance.as_ref().map(|i| &i.session), "running");
                let up_since = Instant::now();
                let exit = loop {
                    tokio::select! {
                        // Shutdown first: it also ends a remote link (its token is a child of
                        // ours), which is no crash.
                        biased;
                        () = inner.shutdown.cancelled() => break Exit::Shutdown,
                        why = run.link.ended() => break Exit::Crashed(why),
                        msg = control.recv() => break if inner.on_control(msg) {
                            Exit::Restart
                        } else {
                            Exit::Shutdown
                        },
                        Some(notice) = run.notices.recv() => {
                            if notice == ListChanged::Tools {
                                match list_tools(&inner, &run.conn).await {
                                    Ok(tools) => {
                                        let count = tools.len();
                                        inner.update(|s| s.tools = Arc::new(tools));
                                        inner.publish(HubEvent::ServerToolsChanged {
                                            server: inner.name.clone(),
                                            tools: count,
                                        });
                                    }
                                    Err(e) => tracing::warn!(server = %inner.name, error = %e,
                                        "could not refresh tools"),
                                }
                            }
                        }
                    }
                };
                match exit {
                    Exit::Crashed(why) => {
                        run.conn.mark_closed();
                        if up_since.elapsed() > inner.limits.healthy_after() {
                            attempt = 0;
                        }
                        why
                    }
                    Exit::Shutdown => {
                        run.link.stop(&inner).await;
                        run.conn.mark_closed();
                        inner.set_state(ServerState::Stopped, None);
                        return;
                    }
                    Exit::Restart => {
                        run.link.stop(&inner).await;
                        run.conn.mark_closed();
                        crashes.clear();
                        attempt = 0;
                        inner.update(|s| s.restarts += 1);
                        continue;
                    }
                }
            }
            Err(why) => why,
        };

        // A remote server that wants a login does not get better by reconnecting: parked
        // until a login (or a restart, a new config) asks for another start.
        if let Some(why) = inner.oauth.take_needs_login() {
            tracing::warn!(server = %inner.name, reason = %why, "needs a login");
            inner.set_state(ServerState::NeedsLogin, Some(why));
            if !wait_for_control(&inner, &mut control).await {
                return;
            }
            crashes.clear();
            attempt = 0;
            continue;
        }

        tracing::warn!(server = %inner.name, %reason, "server went away");
        inner.publish(HubEvent::ServerCrashed {
            server: inner.name.clone(),
            reason: reason.clone(),
        });
        let now = Instant::now();
        crashes.push_back(now);
        while crashes
            .front()
            .is_some_and(|t| now.duration_since(*t) > inner.limits.crash_window())
        {
            crashes.pop_front();
        }
        if policy.crash_loop && crashes.len() >= inner.limits.max_crashes.max(1) {
            let why = format!(
                "crashed {} times within {} s; last: {reason}",
                crashes.len(),
                inner.limits.crash_window().as_secs()
            );
            tracing::error!(server = %inner.name, %why, "giving up until restarted");
            inner.set_state(ServerState::Failed, Some(why));
            if !wait_for_control(&inner, &mut control).await {
                return;
            }
            crashes.clear();
            attempt = 0;
            continue;
        }
        let delay = policy.delay(attempt);
        attempt += 1;
        inner.set_restarting(reason, Instant::now() + delay);
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = inner.shutdown.cancelled() => {
                inner.set_state(ServerState::Stopped, None);
                return;
            }
            msg = control.recv() => {
                if !inner.on_control(msg) {
                    return;
                }
                crashes.clear();
                attempt = 0;
            }
        }
        inner.update(|s| s.restarts += 1);
    }
}

/// Parks a failed or disabled server until a restart or a new config arrives. `false` when
/// the supervisor should end.
async fn wait_for_control(inner: &Inner, control: &mut mpsc::Receiver<Restart>) -> bool {
    tokio::select! {
        () = inner.shutdown.cancelled() => {
            inner.set_state(ServerState::Stopped, None);
            false
        }
        msg = control.recv() => inner.on_control(msg),
    }
}
