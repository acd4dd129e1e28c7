//! The MCP gateway: every supervised server's tools, resources and prompts as one MCP server.
//!
//! [`McpGateway`] holds the upstreams and applies config changes live. [`Handler`] is the rmcp
//! `ServerHandler` that rmcp's Streamable HTTP service runs per client session: it routes
//! `<server>__<tool>` to the right upstream, forwards progress under the client's own token
//! (in order, before the result), passes cancellation through, and records every call.

pub(crate) mod dispatch;
pub(crate) mod fast;
pub mod names;
pub mod session;
pub(crate) mod ws;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use rmcp::ServerHandler;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ErrorCode, ErrorData,
    GetPromptRequestParams, GetPromptResponse, ListPromptsResult, ListResourceTemplatesResult,
    ListResourcesResult, ListToolsResult, PaginatedRequestParams, ProgressNotificationParam,
    ProgressToken, ReadResourceRequestParams, ReadResourceResponse, ServerConfig, Tool,
    ToolAnnotations,
};
use rmcp::service::{NotificationContext, Peer, RequestContext, RoleServer};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{GatewayConfig, ServerConfig as UpstreamConfig};
use crate::events::{EventBus, HubEvent};
use crate::telemetry::{CallRecord, Telemetry};
use crate::upstream::{CallError, Progress, ProgressSink, RpcError, ServerState, Upstream};
use dispatch::{CallCtx, ClientProgress, Dispatcher, ProgressOut};
use session::{Session, Sessions};

/// Built-in tools, answered by the gateway itself.
pub const HEALTH_TOOL: &str = "switchboard__health_snapshot";
pub const TELEMETRY_TOOL: &str = "switchboard__telemetry_snapshot";
const BUILTIN_SERVER: &str = "switchboard";

/// Put into a `/mcp` request's extensions by the HTTP layer: cancelled when the client goes
/// away before its response is complete.
#[derive(Debug, Clone)]
pub struct ClientGone(pub CancellationToken);

/// The token a call should stop on: the client's `notifications/cancelled` (rmcp's `ct`) or
/// the client disconnecting. The guard stops the watcher when the call is over.
fn call_cancellation(
    ctx: &RequestContext<RoleServer>,
) -> (CancellationToken, Option<tokio::task::JoinHandle<()>>) {
    let gone = ctx
        .extensions
        .get::<axum::http::request::Parts>()
        .and_then(|p| p.extensions.get::<ClientGone>())
        .cloned();
    let Some(ClientGone(gone)) = gone else {
        return (ctx.ct.clone(), None);
    };
    let cancel = ctx.ct.child_token();
    let c = cancel.clone();
    let watcher = tokio::spawn(async move {
        gone.cancelled().await;
        tracing::debug!("client went away mid-call; cancelling upstream");
        c.cancel();
    });
    (cancel, Some(watcher))
}

/// A tool as clients see it.
#[derive(Debug, Clone)]
pub struct ExposedTool {
    /// The name clients call.
    pub name: String,
    pub server: String,
    /// The server's own name for it.
    pub original: String,
    /// Its definition, renamed to `name`.
    pub tool: Tool,
}

/// Told when the tool list changes; answers `false` once its client is gone.
pub(crate) struct ToolListener(pub(crate) Box<dyn Fn() -> bool + Send + Sync>);

impl std::fmt::Debug for ToolListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ToolListener")
    }
}

/// Cheap handle; clone freely.
#[derive(Debug, Clone)]
pub struct McpGateway {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    upstreams: RwLock<BTreeMap<String, Upstream>>,
    limits: GatewayConfig,
    secrets: Arc<dyn crate::auth::store::SecretStore>,
    bus: EventBus,
    telemetry: Telemetry,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    call_seq: AtomicU64,
    /// Told when the tool list changes (rmcp sessions, WebSockets); dropped once they answer
    /// `false` (their client is gone).
    tool_listeners: Mutex<Vec<ToolListener>>,
    /// Every MCP session and its progress stream.
    sessions: Sessions,
    /// Which server a resource URI came from (learned from `resources/list`).
    resource_owner: Mutex<HashMap<String, String>>,
    started: Instant,
    /// Calls in flight and recently finished, with payloads, for the dashboard.
    calls: crate::calls::CallLog,
}

impl McpGateway {
    pub fn new(
        servers: &[UpstreamConfig],
        limits: GatewayConfig,
        secrets: Arc<dyn crate::auth::store::SecretStore>,
        bus: EventBus,
        telemetry: Telemetry,
        shutdown: CancellationToken,
        tasks: TaskTracker,
    ) -> Self {
        let gw = Self {
            inner: Arc::new(Inner {
                upstreams: RwLock::new(BTreeMap::new()),
                limits,
                secrets,
                telemetry,
                shutdown,
                tasks,
                call_seq: AtomicU64::new(1),
                tool_listeners: Mutex::new(Vec::new()),
                sessions: Sessions::new(bus.clone()),
                bus,
                resource_owner: Mutex::new(HashMap::new()),
                started: Instant::now(),
                calls: crate::calls::CallLog::default(),
            }),
        };
        gw.apply(servers);
        gw
    }

    pub fn telemetry(&self) -> &Telemetry {
        &self.inner.telemetry
    }

    /// Tool calls in flight and recently finished (the dashboard's Calls view).
    pub fn calls(&self) -> &crate::calls::CallLog {
        &self.inner.calls
    }

    fn spawn_upstream(&self, cfg: UpstreamConfig) -> Upstream {
        let up = Upstream::spawn(
            cfg,
            self.inner.limits.clone(),
            self.inner.secrets.clone(),
            self.inner.bus.clone(),
            self.inner.shutdown.child_token(),
            &self.inner.tasks,
        );
        // Tell client sessions whenever this server's tools appear, change or go away.
        let mut rx = up.watch();
        let gw = self.clone();
        let shutdown = self.inner.shutdown.clone();
        self.inner.tasks.spawn(async move {
            let mut last = (ServerState::Starting, 0usize);
            loop {
                tokio::select! {
                    changed = rx.changed() => if changed.is_err() { break },
                    () = shutdown.cancelled() => break,
                }
                let key = {
                    let s = rx.borrow_and_update();
                    (s.state, Arc::as_ptr(&s.tools) as usize)
                };
                let was_running = last.0 == ServerState::Running;
                let is_running = key.0 == ServerState::Running;
                if was_running != is_running || (is_running && key.1 != last.1) {
                    gw.notify_tools_changed();
                }
                last = key;
            }
        });
        up
    }

    /// Makes the running set of servers match `servers`: new ones start, removed ones stop,
    /// changed ones restart with their new config. Client sessions are untouched.
    pub fn apply(&self, servers: &[UpstreamConfig]) {
        let mut changed = false;
        {
            let mut ups = self.inner.upstreams.write().expect("upstreams lock");
            let wanted: BTreeMap<&str, &UpstreamConfig> =
                servers.iter().map(|s| (s.name.as_str(), s)).collect();
            ups.retain(|name, up| {
                let keep = wanted.contains_key(name.as_str());
                if !keep {
                    tracing::info!(server = %name, "removed from config; stopping");
                    up.stop();
                    changed = true;
                }
                keep
            });
            for (name, cfg) in wanted {
                match ups.get(name) {
                    Some(up) if up.config() == *cfg => {}
                    Some(up) => {
                        tracing::info!(server = %name, "config changed; restarting");
                        up.reconfigure(cfg.clone());
                    }
                    None => {
                        tracing::info!(server = %name, command = %cfg.command, "starting");
                        let up = self.spawn_upstream(cfg.clone());
                        ups.insert(name.to_owned(), up);
                        changed = true;
                    }
                }
            }
        }
        if changed {
            self.notify_tools_changed();
        }
    }

    pub fn upstream(&self, name: &str) -> Option<Upstream> {
        self.inner
            .upstreams
            .read()
            .expect("upstreams lock")
            .get(name)
            .cloned()
    }

    pub fn upstreams(&self) -> Vec<Upstream> {
        self.inner
            .upstreams
            .read()
            .expect("upstreams lock")
            .values()
            .cloned()
            .collect()
    }

    fn notify_tools_changed(&self) {
        self.inner
            .tool_listeners
            .lock()
            .expect("listeners lock")
            .retain(|tell| (tell.0)());
    }

    /// Calls `tell` whenever the aggregated tool list changes, until it returns `false`.
    pub(crate) fn on_tools_changed(&self, tell: ToolListener) {
        self.inner
            .tool_listeners
            .lock()
            .expect("listeners lock")
            .push(tell);
    }

    /// Every MCP session and its progress stream.
    pub fn sessions(&self) -> &Sessions {
        &self.inner.sessions
    }

    /// Every tool of every running server, sorted, with unique names.
    pub fn tools(&self) -> Vec<ExposedTool> {
        let mut out: Vec<ExposedTool> = Vec::new();
        for up in self.upstreams() {
            let status = up.status();
            if status.state != ServerState::Running {
                continue;
            }
            for tool in status.tools.iter() {
                let mut t = tool.clone();
                let name = names::exposed(up.name(), &tool.name);
                t.name = name.clone().into();
                out.push(ExposedTool {
                    name,
                    server: up.name().to_owned(),
                    original: tool.name.to_string(),
                    tool: t,
                });
            }
        }
        // Shortened names can collide only through their hash; lengthen it until unique.
        let mut seen = std::collections::HashSet::new();
        for t in &mut out {
            let mut hash_len = 8;
            while seen.contains(&t.name) && hash_len < 32 {
                hash_len += 4;
                t.name = names::exposed_with(&t.server, &t.original, hash_len);
                t.tool.name = t.name.clone().into();
            }
            seen.insert(t.name.clone());
        }
        out
    }

    /// The upstream and original tool behind an exposed name.
    pub fn resolve(&self, name: &str) -> Option<(Upstream, Tool)> {
        if let Some((server, tool)) = names::split(name)
            && let Some(up) = self.upstream(server)
            && let Some(t) = up.tool(tool)
        {
            return Some((up, t));
        }
        // A shortened name: look it up in the table.
        let entry = self.tools().into_iter().find(|t| t.name == name)?;
        let up = self.upstream(&entry.server)?;
        let tool = up
            .status()
            .tools
            .iter()
            .find(|t| t.name == entry.original)
            .cloned()?;
        Some((up, tool))
    }

    /// Where a call of `name` goes: the server, the tool's own name there, and whether a call
    /// of it is safe to replay. Like [`resolve`](Self::resolve) without copying the tool.
    pub fn route<'a>(&self, name: &'a str) -> Option<(Upstream, Cow<'a, str>, bool)> {
        if let Some((server, tool)) = names::split(name)
            && let Some(up) = self.upstream(server)
            && let Some(replayable) = up.route(tool)
        {
            return Some((up, Cow::Borrowed(tool), replayable));
        }
        // a shortened name (rare): through the table
        let (up, tool) = self.resolve(name)?;
        let replayable = up.route(&tool.name)?;
        Some((up, Cow::Owned(tool.name.into_owned()), replayable))
    }

    /// Servers and their state, for the health tool and the API.
    pub fn health(&self) -> Value {
        let servers: Vec<Value> = self
            .upstreams()
            .iter()
            .map(|up| {
                let s = up.status();
                json!({
                    "name": up.name(),
                    "state": s.state,
                    "pid": s.pid,
                    "generation": s.generation,
                    "restarts": s.restarts,
                    "tools": s.tools.len(),
                    "uptime_ms": s.running_since.map(|t| t.elapsed().as_millis() as u64),
                    "last_error": s.last_error,
                })
            })
            .collect();
        let running = servers.iter().filter(|s| s["state"] == "running").count();
        json!({
            "gateway": {
                "version": env!("CARGO_PKG_VERSION"),
                "uptime_ms": self.inner.started.elapsed().as_millis() as u64,
            },
            "servers_running": running,
            "servers_total": servers.len(),
            "servers": servers,
        })
    }

    /// The rmcp handler for client sessions; `roles` decide what each caller sees.
    pub fn handler(&self, roles: crate::auth::Roles) -> Handler {
        Handler {
            d: self.dispatcher(roles),
        }
    }

    /// The transport-independent dispatcher (for `/ws` and the `/mcp` fast path).
    pub fn dispatcher(&self, roles: crate::auth::Roles) -> Dispatcher {
        Dispatcher::new(self.clone(), Arc::new(roles))
    }

    fn record(&self, rec: CallRecord) {
        self.inner.telemetry.record(rec);
    }
}

fn builtin_tools() -> Vec<Tool> {
    let schema: Arc<serde_json::Map<String, Value>> = Arc::new(
        json!({"type": "object", "properties": {}})
            .as_object()
            .cloned()
            .unwrap_or_default(),
    );
    let ro = ToolAnnotations::new().read_only(true);
    let mut health = Tool::new(
        HEALTH_TOOL,
        "Switchboard's health: every supervised MCP server with its state, pid, restarts and tools.",
        schema.clone(),
    );
    health.annotations = Some(ro.clone());
    let mut telemetry = Tool::new(
        TELEMETRY_TOOL,
        "Switchboard's telemetry: requests, successes, errors and replays per server and method.",
        schema,
    );
    telemetry.annotations = Some(ro);
    vec![health, telemetry]
}

fn json_result(value: Value) -> CallToolResult {
    let text = serde_json::to_string_pretty(&value).unwrap_or_default();
    let mut r = CallToolResult::success(vec![ContentBlock::text(text)]);
    r.structured_content = Some(value);
    r
}

fn error_data(code: i64, message: impl Into<String>, data: Option<Value>) -> ErrorData {
    ErrorData::new(ErrorCode(code as i32), message.into(), data)
}

/// Per-call bookkeeping: events, telemetry, the session's call frames.
struct CallScope {
    gw: McpGateway,
    call_id: String,
    request_id: String,
    session_id: Option<String>,
    session: Option<Arc<Session>>,
    tool: String,
    server: String,
    method: &'static str,
    started: Instant,
}

impl CallScope {
    fn begin(
        gw: &McpGateway,
        ctx: &CallCtx<'_>,
        method: &'static str,
        tool: &str,
        server: &str,
    ) -> Self {
        let call_id = format!("c{}", gw.inner.call_seq.fetch_add(1, Ordering::Relaxed));
        if method == "tools/call" {
            let client = ctx.caller.map(|c| c.name.clone());
            gw.inner.calls.started(crate::calls::CallView::running(
                call_id.clone(),
                tool.to_owned(),
                server.to_owned(),
                client.clone(),
                ctx.session_id.clone(),
                chrono::Utc::now().timestamp_millis(),
            ));
            if gw.inner.bus.has_subscribers() {
                gw.inner.bus.publish(HubEvent::CallStarted {
                    call_id: call_id.clone(),
                    tool: tool.to_owned(),
                    server: server.to_owned(),
                    session_id: ctx.session_id.clone(),
                    client,
                });
            }
            if let Some(s) = &ctx.session
                && s.watchers() > 0
            {
                let mut frame = json!({"event": "call_started", "call_id": call_id,
                    "tool": tool, "timestamp": crate::now_rfc3339()});
                if let Some(p) = &ctx.progress {
                    frame["token"] = p.token.clone();
                }
                s.publish(&frame);
            }
        }
        Self {
            gw: gw.clone(),
            call_id,
            request_id: ctx.request_id.clone(),
            session_id: ctx.session_id.clone(),
            session: ctx.session.clone(),
            tool: tool.to_owned(),
            server: server.to_owned(),
            method,
            started: Instant::now(),
        }
    }

    fn finish(&self, replay_attempts: u32, error: Option<(i64, String)>) {
        self.finish_with(replay_attempts, error, None);
    }

    /// Records what the call was asked (shown in the dashboard's detail pane).
    fn arguments(&self, arguments: crate::calls::PayloadSrc<'_>) {
        self.gw.inner.calls.arguments(&self.call_id, arguments);
    }

    /// Like `finish`, keeping the result (or error) the client got for the dashboard.
    fn finish_with(
        &self,
        replay_attempts: u32,
        error: Option<(i64, String)>,
        result: Option<crate::calls::PayloadSrc<'_>>,
    ) {
        let latency_ms = self.started.elapsed().as_millis() as u64;
        let outcome = if error.is_some() { "error" } else { "ok" };
        self.gw.record(CallRecord {
            event: "tool_call",
            ts_unix_ms: chrono::Utc::now().timestamp_millis(),
            request_id: self.request_id.clone(),
            tool_name: self.tool.clone(),
            server: self.server.clone(),
            method: self.method,
            session_id: self.session_id.clone(),
            latency_ms,
            replay_attempts,
            outcome,
            error_code: error.as_ref().map(|e| e.0),
            error_message: error.as_ref().map(|e| e.1.clone()),
        });
        if self.method == "tools/call" {
            self.gw.inner.calls.finished(
                &self.call_id,
                latency_ms,
                replay_attempts,
                error.as_ref().map(|e| e.1.clone()),
                result,
            );
            if let Some(s) = &self.session
                && s.watchers() > 0
            {
                let mut frame = json!({"event": "call_finished", "call_id": self.call_id,
                    "tool": self.tool, "outcome": outcome, "latency_ms": latency_ms,
                    "timestamp": crate::now_rfc3339()});
                if let Some((_, message)) = &error {
                    frame["error"] = json!(message);
                }
                s.publish(&frame);
            }
            if self.gw.inner.bus.has_subscribers() {
                self.gw.inner.bus.publish(HubEvent::CallFinished {
                    call_id: self.call_id.clone(),
                    tool: self.tool.clone(),
                    server: self.server.clone(),
                    outcome,
                    latency_ms,
                    replay_attempts,
                    error: error.map(|e| e.1),
                });
            }
        }
    }
}

/// Where upstream progress of one call goes: the client (under its own token, in order), the
/// bus, and the session's watchers.
struct ProgressRelay;

impl ProgressRelay {
    fn start(gw: &McpGateway, call_id: &str, tool: &str, ctx: &CallCtx<'_>) -> ProgressSink {
        let client = ctx
            .progress
            .as_ref()
            .map(|p| (p.token.clone(), p.out.clone()));
        let session = ctx.session.clone();
        let bus = gw.inner.bus.clone();
        let calls = gw.inner.calls.clone();
        let call_id = call_id.to_owned();
        let tool = tool.to_owned();
        // Progress must increase; after a replay the restarted server counts from the start
        // again, and those reports are held back until they pass the last one sent.
        let last = Mutex::new(f64::NEG_INFINITY);
        Arc::new(move |p: Progress| {
            {
                let mut last = last.lock().expect("progress lock");
                if p.progress <= *last {
                    return;
                }
                *last = p.progress;
            }
            calls.progress(&call_id, p.progress, p.total, p.message.clone());
            if bus.has_subscribers() {
                bus.publish(HubEvent::CallProgress {
                    call_id: call_id.clone(),
                    progress: p.progress,
                    total: p.total,
                    message: p.message.clone(),
                });
            }
            if let Some(s) = &session
                && s.watchers() > 0
            {
                let token = client
                    .as_ref()
                    .map(|c| c.0.clone())
                    .unwrap_or_else(|| Value::String(call_id.clone()));
                s.publish(&session::progress_frame(&token, &p, &tool));
            }
            if let Some((token, Some(out))) = &client {
                out(token, &p);
            }
        })
    }
}

/// The rmcp server each `/mcp` client session talks to: rmcp's typed requests, answered by the
/// shared [`Dispatcher`].
#[derive(Debug, Clone)]
pub struct Handler {
    d: Dispatcher,
}

/// JSON-RPC code for a call the caller's role does not allow.
pub const FORBIDDEN: i64 = -32003;

/// The paired client behind a request (put there by the auth middleware).
fn caller(ctx: &RequestContext<RoleServer>) -> Option<crate::auth::Caller> {
    ctx.extensions
        .get::<axum::http::request::Parts>()
        .and_then(|p| p.extensions.get::<crate::auth::Caller>())
        .cloned()
}

/// Client progress through rmcp's peer: a forwarder task keeps the notifications in order.
struct PeerProgress {
    out: ProgressOut,
    forwarder: tokio::task::JoinHandle<()>,
}

impl PeerProgress {
    fn start(peer: Peer<RoleServer>) -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<ProgressNotificationParam>();
        let forwarder = tokio::spawn(async move {
            while let Some(param) = rx.recv().await {
                let _ = peer.notify_progress(param).await;
            }
        });
        let out: ProgressOut = Arc::new(move |token: &Value, p: &Progress| {
            let Ok(token) = serde_json::from_value::<ProgressToken>(token.clone()) else {
                return;
            };
            let mut param = ProgressNotificationParam::new(token, p.progress);
            if let Some(total) = p.total {
                param = param.with_total(total);
            }
            if let Some(message) = &p.message {
                param = param.with_message(message.clone());
            }
            let _ = tx.send(param);
        });
        Self { out, forwarder }
    }

    /// Waits (bounded) until every progress notification is out, so none trails the result.
    async fn drain(self) {
        drop(self.out);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), self.forwarder).await;
    }
}

impl Handler {
    /// What the dispatcher needs to know about an rmcp request.
    fn ctx<'a>(
        &self,
        caller: Option<&'a crate::auth::Caller>,
        ctx: &RequestContext<RoleServer>,
        cancel: CancellationToken,
        progress: Option<ClientProgress>,
    ) -> CallCtx<'a> {
        let session_id = ctx
            .extensions
            .get::<axum::http::request::Parts>()
            .and_then(|p| p.headers.get("mcp-session-id"))
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let session = session_id
            .as_deref()
            .and_then(|id| self.d.gw.inner.sessions.get(id));
        let request_id = match serde_json::to_value(&ctx.id) {
            Ok(v) => dispatch::id_text(&v),
            Err(_) => String::new(),
        };
        CallCtx {
            caller,
            session_id,
            session,
            request_id,
            progress,
            cancel,
        }
    }
}

fn remote_error(e: CallError) -> Result<ErrorData, CallError> {
    match e {
        CallError::Remote(RpcError::Remote {
            code,
            message,
            data,
        }) => Ok(error_data(code, message, data)),
        CallError::Cancelled => Ok(error_data(-32800, "request cancelled", None)),
        other => Err(other),
    }
}

impl ServerHandler for Handler {
    fn get_info(&self) -> ServerConfig {
        self.d.server_info()
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        let peer = context.peer;
        self.d.gw.on_tools_changed(ToolListener(Box::new(move || {
            if peer.is_transport_closed() {
                return false;
            }
            let peer = peer.clone();
            tokio::spawn(async move {
                let _ = peer.notify_tool_list_changed().await;
            });
            true
        })));
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let caller = caller(&context);
        Ok(ListToolsResult::with_all_items(
            self.d.list_tools(caller.as_ref()),
        ))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let who = caller(&context);
        let relay = context
            .meta
            .get_progress_token()
            .and_then(|t| serde_json::to_value(t).ok())
            .map(|token| (token, PeerProgress::start(context.peer.clone())));
        let progress = relay.as_ref().map(|(token, p)| ClientProgress {
            token: token.clone(),
            out: Some(p.out.clone()),
        });
        let (cancel, watcher) = call_cancellation(&context);
        let ctx = self.ctx(who.as_ref(), &context, cancel, progress);
        let answer = self.d.call_tool(&ctx, request).await;
        drop(ctx);
        if let Some(w) = watcher {
            w.abort();
        }
        if let Some((_, p)) = relay {
            p.drain().await;
        }
        answer.map(Into::into)
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let who = caller(&context);
        let ctx = self.ctx(who.as_ref(), &context, context.ct.clone(), None);
        Ok(ListResourcesResult::with_all_items(
            self.d.list_resources(&ctx).await,
        ))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        let who = caller(&context);
        let ctx = self.ctx(who.as_ref(), &context, context.ct.clone(), None);
        Ok(ListResourceTemplatesResult::with_all_items(
            self.d.list_resource_templates(&ctx).await,
        ))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let who = caller(&context);
        let ctx = self.ctx(who.as_ref(), &context, context.ct.clone(), None);
        self.d.read_resource(&ctx, request).await.map(Into::into)
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        let who = caller(&context);
        let ctx = self.ctx(who.as_ref(), &context, context.ct.clone(), None);
        Ok(ListPromptsResult::with_all_items(
            self.d.list_prompts(&ctx).await,
        ))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        let who = caller(&context);
        let ctx = self.ctx(who.as_ref(), &context, context.ct.clone(), None);
        self.d.get_prompt(&ctx, request).await.map(Into::into)
    }
}
