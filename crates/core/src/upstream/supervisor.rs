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
//! An on-demand server (`start = "on_demand"`) is `idle` between runs, showing its last
//! listing (`upstream/cache`, kept in SQLite): a call wakes it, it lists everything again
//! once it runs, and it stops once nothing has used it for its idle time. One with no
//! listing of its config runs once to make one (start, list, stop). A start a call woke that
//! fails counts as a crash (crash loops still end in `failed`) and leaves it idle with the
//! error, which the waiting calls are told: the next call is the next attempt. A crash while
//! it runs follows the rules above, and it is idle again after the backoff.
//!
//! It owns the server's `Status` (through [`Inner`]); callers only read it. Restarts and
//! config changes reach it on the bounded control queue (`state::CONTROL_QUEUE`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rmcp::model::Tool;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::cache::{self, Listing};
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
    if capabilities.get("logging").is_some() {
        let level = inner.log_level.lock().expect("log level lock").clone();
        if let Some(level) = level {
            // a refusal leaves the server at its own level; it still runs
            let told = conn
                .request(
                    "logging/setLevel",
                    json!({"level": level}),
                    inner.limits.start_timeout(),
                    Some(&inner.shutdown),
                )
                .await;
            if let Err(e) = told {
                tracing::warn!(server = %inner.name, error = %e, %level,
                    "server refused the remembered logging/setLevel");
            }
        }
    }
    let pid = opened.link.pid();
    tracing::debug!(server = %inner.name, protocol, "opened");
    inner.update(|s| {
        s.generation += 1;
        s.pid = pid;
        // the same tools as before keep their list: clients are told of changes only
        let same =
            s.tools.len() == tools.len() && s.tools.iter().zip(&tools).all(|(a, b)| a.def == b.def);
        if !same {
            s.tools = Arc::new(tools);
        }
        s.capabilities = Arc::new(capabilities);
        s.server_info = Arc::new(server_info);
        s.protocol = protocol;
        s.conn = Some(conn.clone());
        s.running_since = Some(Instant::now());
    });
    Ok(opened)
}

/// Every item of list `method` (the `field` of each page), following cursors (bounded, see
/// `pages`), each page bounded by the start timeout.
async fn list_all(
    inner: &Inner,
    conn: &Connection,
    method: &'static str,
    field: &str,
) -> Result<Vec<Value>, String> {
    let fetch = |params| {
        conn.request(
            method,
            params,
            inner.limits.start_timeout(),
            Some(&inner.shutdown),
        )
    };
    pages::collect(&inner.name, method, field, pages::BOUNDS, fetch)
        .await
        .map_err(|e| format!("{method} failed: {e}"))
}

/// `tools/list`, following cursors (bounded, see `pages`). Tools that do not parse are skipped
/// with a warning.
async fn list_tools(inner: &Inner, conn: &Connection) -> Result<Vec<ServerTool>, String> {
    let listed = list_all(inner, conn, "tools/list", "tools").await?;
    Ok(parse_tools(&inner.name, listed))
}

/// Tool definitions as listed, read; those that do not parse are skipped with a warning.
fn parse_tools(server: &str, listed: Vec<Value>) -> Vec<ServerTool> {
    let mut tools = Vec::with_capacity(listed.len());
    for t in listed {
        match serde_json::from_value::<Tool>(t.clone()) {
            Ok(tool) => tools.push(ServerTool { tool, def: t }),
            Err(e) => tracing::warn!(%server, tool = %t["name"], error = %e,
                "tool definition ignored"),
        }
    }
    tools
}

/// The lists beside tools an on-demand server's listing keeps: method, field, capability.
const OTHER_LISTS: [(&str, &str, &str); 3] = [
    ("prompts/list", "prompts", "prompts"),
    ("resources/list", "resources", "resources"),
    ("resources/templates/list", "resourceTemplates", "resources"),
];

/// An on-demand server just started: everything it lists now, read and saved as its
/// listing (a list that fails is left out, and asked live while it runs).
async fn refresh_listing(inner: &Inner, cfg: &ServerConfig, conn: &Connection) {
    let mut listing = {
        let s = inner.status.borrow();
        Listing {
            fingerprint: cache::fingerprint(cfg),
            protocol: s.protocol.to_owned(),
            capabilities: (*s.capabilities).clone(),
            server_info: (*s.server_info).clone(),
            ..Default::default()
        }
    };
    for (method, field, capability) in OTHER_LISTS {
        if listing.capabilities.get(capability).is_none() {
            continue;
        }
        match list_all(inner, conn, method, field).await {
            Ok(items) => {
                if let Some(slot) = listing.items_mut(method) {
                    *slot = Some(items);
                }
            }
            Err(e) => tracing::warn!(server = %inner.name, error = %e,
                "not kept for while the server is idle"),
        }
    }
    save_listing(inner, listing).await;
}

/// `listing`, with the server's tools as its status has them now, becomes the server's: in
/// the store whole, and in its status without the tools (the status has them already: one
/// copy of each definition in memory).
async fn save_listing(inner: &Inner, mut listing: Listing) {
    listing.tools = inner
        .status
        .borrow()
        .tools
        .iter()
        .map(|t| t.def.clone())
        .collect();
    cache::save(&inner.store, &inner.name, &listing).await;
    listing.tools = Vec::new();
    let listing = Arc::new(listing);
    inner.update(|s| s.listing = Some(listing));
}

/// A list of a running on-demand server changed: its listing is made again with it.
async fn relist(inner: &Inner, conn: &Connection, kind: ListChanged) {
    let Some(mut listing) = inner.status.borrow().listing.as_deref().cloned() else {
        return;
    };
    match kind {
        // the status has the new tools: saving takes them from there
        ListChanged::Tools => {}
        ListChanged::Prompts | ListChanged::Resources => {
            for (method, field, _) in OTHER_LISTS {
                let wanted = match kind {
                    ListChanged::Prompts => method == "prompts/list",
                    _ => method != "prompts/list",
                };
                if !wanted {
                    continue;
                }
                let items = list_all(inner, conn, method, field).await.ok();
                if let Some(slot) = listing.items_mut(method) {
                    *slot = items;
                }
            }
        }
    }
    save_listing(inner, listing).await;
}

/// How an on-demand server's wait between runs ended.
enum Idled {
    /// A call wants it.
    Woken,
    /// It has no listing of this config: it runs once to list.
    Fetch,
    /// A restart or a new config: the supervisor looks again.
    Control,
    Shutdown,
}

/// An on-demand server between runs: `Idle`, answering lists from its listing (loaded from
/// the store when it has none of `cfg` in memory), until a call wakes it. `error`: why the
/// start a call asked for failed (it is then not started again for calls still counted in
/// flight, which are about to hear of the failure; only a new wake starts it).
async fn idle(
    inner: &Inner,
    cfg: &ServerConfig,
    control: &mut mpsc::Receiver<Restart>,
    error: Option<String>,
) -> Idled {
    let fingerprint = cache::fingerprint(cfg);
    let known = inner
        .status
        .borrow()
        .listing
        .clone()
        .filter(|l| l.fingerprint == fingerprint);
    let listing = match known {
        Some(l) => l,
        None => match cache::load(&inner.store, cfg).await {
            Some(mut l) => {
                // the tools live in the status only
                let tools = Arc::new(parse_tools(&inner.name, std::mem::take(&mut l.tools)));
                let l = Arc::new(l);
                let protocol = if l.protocol == MODERN_PROTOCOL {
                    MODERN_PROTOCOL
                } else {
                    UPSTREAM_PROTOCOL
                };
                inner.update(|s| {
                    s.tools = tools;
                    s.capabilities = Arc::new(l.capabilities.clone());
                    s.server_info = Arc::new(l.server_info.clone());
                    s.protocol = protocol;
                    s.listing = Some(l.clone());
                });
                l
            }
            None => return Idled::Fetch,
        },
    };
    if error.is_none() && inner.in_use() {
        return Idled::Woken;
    }
    tracing::debug!(server = %inner.name, protocol = %listing.protocol, "idle (on demand)");
    inner.set_state(ServerState::Idle, error);
    loop {
        tokio::select! {
            // A wake left over (its call was cancelled, or it was started meanwhile for
            // another) finds nothing in flight, and it stays idle.
            () = inner.wake.notified() => if inner.in_use() {
                return Idled::Woken;
            },
            () = inner.shutdown.cancelled() => {
                inner.set_state(ServerState::Stopped, None);
                return Idled::Shutdown;
            }
            msg = control.recv() => {
                return if inner.on_control(msg) { Idled::Control } else { Idled::Shutdown };
            }
        }
    }
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
    /// An on-demand server nothing used for its idle time (it is `Idle` already).
    Idle,
}

/// Runs one server until its shutdown token is cancelled: starts it, watches it, restarts it
/// when it dies or is asked to, parks it when disabled or failed.
pub(super) async fn supervise(inner: Arc<Inner>, mut control: mpsc::Receiver<Restart>) {
    let mut crashes: VecDeque<Instant> = VecDeque::new();
    let mut attempt: u32 = 0;
    // Why the last start a call asked an on-demand server for failed.
    let mut start_failed: Option<String> = None;
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
        // an isolated instance runs for its session, however its server starts
        let on_demand = inner.instance.is_none() && cfg.is_on_demand(&inner.limits);
        inner
            .on_demand
            .store(on_demand, std::sync::atomic::Ordering::Release);
        let mut fetch = false;
        if on_demand {
            match idle(&inner, &cfg, &mut control, start_failed.take()).await {
                Idled::Woken => {}
                Idled::Fetch => fetch = true,
                Idled::Control => {
                    crashes.clear();
                    attempt = 0;
                    continue;
                }
                Idled::Shutdown => return,
            }
        }
        let policy = Policy::for_server(&inner.limits, &cfg);
        // `Starting` before the count goes up: a call that woke the server idle must never see
        // it idle with the higher count unless that attempt has failed
        inner.set_state(ServerState::Starting, None);
        inner.update(|s| s.starts += 1);
        let mut ran = false;
        let reason = match start(&inner, &cfg).await {
            Ok(mut run) => {
                ran = true;
                inner.touch();
                inner.set_state(ServerState::Running, None);
                tracing::info!(server = %inner.name, pid = ?run.link.pid(),
                    session = ?inner.instance.as_ref().map(|i| &i.session), on_demand,
                    "running");
                let up_since = Instant::now();
                if on_demand {
                    refresh_listing(&inner, &cfg, &run.conn).await;
                }
                let idle_stop = cfg.idle_stop(&inner.limits);
                // a run only to list stops as soon as nothing uses it
                let mut idle_after = if fetch { Duration::ZERO } else { idle_stop };
                let mut check_at = tokio::time::Instant::now() + idle_after;
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
                        () = tokio::time::sleep_until(check_at), if on_demand => {
                            match inner.stop_if_idle(idle_after) {
                                None => break Exit::Idle,
                                Some(since) => {
                                    idle_after = idle_stop;
                                    check_at = tokio::time::Instant::from_std(since) + idle_stop;
                                }
                            }
                        }
                        () = inner.released.notified(), if on_demand => {
                            check_at = tokio::time::Instant::now() + idle_after;
                        }
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
                            if on_demand {
                                relist(&inner, &run.conn, notice).await;
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
                    Exit::Idle => {
                        run.link.stop(&inner).await;
                        run.conn.mark_closed();
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
        // A start a call asked for: the calls waiting hear why at once, and the next call is
        // the next attempt (no backoff to wait out while nobody needs the server).
        if on_demand && !fetch && !ran {
            start_failed = Some(reason);
            continue;
        }
        let delay = policy.delay(attempt);
        attempt += 1;
        inner.set_restarting(reason, Instant::now() + delay);
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = inner.retry_now.notified() => {
                // the machine woke up: the network may be back; no backoff left to wait out
                tracing::info!(server = %inner.name, "resumed: reconnecting now");
                attempt = 0;
            }
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
