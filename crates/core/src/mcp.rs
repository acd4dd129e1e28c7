//! The MCP gateway: every supervised server's tools, resources and prompts as one MCP server.
//!
//! [`McpGateway`] holds the upstreams and applies config changes live. [`Handler`] is the rmcp
//! `ServerHandler` that rmcp's Streamable HTTP service runs per client session: it routes
//! `<server>__<tool>` to the right upstream, forwards progress under the client's own token
//! (in order, before the result), passes cancellation through, and records every call.

pub mod names;
pub(crate) mod ws;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use rmcp::ServerHandler;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ErrorCode, ErrorData,
    GetPromptRequestParams, GetPromptResponse, GetPromptResult, Implementation, ListPromptsResult,
    ListResourceTemplatesResult, ListResourcesResult, ListToolsResult, PaginatedRequestParams,
    ProgressNotificationParam, Prompt, ReadResourceRequestParams, ReadResourceResponse,
    ReadResourceResult, Resource, ResourceTemplate, ResultType, ServerCapabilities, ServerConfig,
    Tool, ToolAnnotations,
};
use rmcp::service::{NotificationContext, Peer, RequestContext, RoleServer};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{GatewayConfig, ServerConfig as UpstreamConfig};
use crate::events::{EventBus, HubEvent};
use crate::telemetry::{CallRecord, Telemetry};
use crate::upstream::{CallError, Progress, ProgressSink, RpcError, ServerState, Upstream};

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

/// Cheap handle; clone freely.
#[derive(Debug, Clone)]
pub struct McpGateway {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    upstreams: RwLock<BTreeMap<String, Upstream>>,
    limits: GatewayConfig,
    bus: EventBus,
    telemetry: Telemetry,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    call_seq: AtomicU64,
    /// Client sessions, told when the tool list changes.
    peers: Mutex<Vec<Peer<RoleServer>>>,
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
        bus: EventBus,
        telemetry: Telemetry,
        shutdown: CancellationToken,
        tasks: TaskTracker,
    ) -> Self {
        let gw = Self {
            inner: Arc::new(Inner {
                upstreams: RwLock::new(BTreeMap::new()),
                limits,
                bus,
                telemetry,
                shutdown,
                tasks,
                call_seq: AtomicU64::new(1),
                peers: Mutex::new(Vec::new()),
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
        let peers: Vec<Peer<RoleServer>> = {
            let mut peers = self.inner.peers.lock().expect("peers lock");
            peers.retain(|p| !p.is_transport_closed());
            peers.clone()
        };
        for peer in peers {
            tokio::spawn(async move {
                let _ = peer.notify_tool_list_changed().await;
            });
        }
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
            && let Some(t) = up.status().tools.iter().find(|t| t.name == tool)
        {
            return Some((up.clone(), t.clone()));
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
            gw: self.clone(),
            roles: Arc::new(roles),
        }
    }

    fn record(&self, rec: &CallRecord) {
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

/// Per-call bookkeeping: events, telemetry.
struct CallScope {
    gw: McpGateway,
    call_id: String,
    request_id: String,
    session_id: Option<String>,
    tool: String,
    server: String,
    method: &'static str,
    started: Instant,
}

impl CallScope {
    fn begin(
        gw: &McpGateway,
        ctx: &RequestContext<RoleServer>,
        method: &'static str,
        tool: &str,
        server: &str,
    ) -> Self {
        let call_id = format!("c{}", gw.inner.call_seq.fetch_add(1, Ordering::Relaxed));
        let session_id = ctx
            .extensions
            .get::<axum::http::request::Parts>()
            .and_then(|p| p.headers.get("mcp-session-id"))
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let request_id = match serde_json::to_value(&ctx.id) {
            Ok(Value::String(s)) => s,
            Ok(v) => v.to_string(),
            Err(_) => String::new(),
        };
        if method == "tools/call" {
            let client = caller(ctx).map(|c| c.name);
            gw.inner.calls.started(crate::calls::CallView {
                call_id: call_id.clone(),
                tool: tool.to_owned(),
                server: server.to_owned(),
                client: client.clone(),
                session_id: session_id.clone(),
                started_ms: chrono::Utc::now().timestamp_millis(),
                finished_ms: None,
                latency_ms: None,
                outcome: "running",
                error: None,
                replay_attempts: 0,
                progress: None,
                total: None,
                message: None,
                arguments: None,
                result: None,
            });
            gw.inner.bus.publish(HubEvent::CallStarted {
                call_id: call_id.clone(),
                tool: tool.to_owned(),
                server: server.to_owned(),
                session_id: session_id.clone(),
                client,
            });
        }
        Self {
            gw: gw.clone(),
            call_id,
            request_id,
            session_id,
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
    fn arguments(&self, arguments: &Value) {
        self.gw.inner.calls.arguments(&self.call_id, arguments);
    }

    /// Like `finish`, keeping the result (or error) the client got for the dashboard.
    fn finish_with(
        &self,
        replay_attempts: u32,
        error: Option<(i64, String)>,
        result: Option<&Value>,
    ) {
        let latency_ms = self.started.elapsed().as_millis() as u64;
        let outcome = if error.is_some() { "error" } else { "ok" };
        self.gw.record(&CallRecord {
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

/// Forwards upstream progress to the client under its own token, in order, and to the bus.
struct ProgressRelay {
    sink: ProgressSink,
    /// Only when the client asked for progress.
    forwarder: Option<tokio::task::JoinHandle<()>>,
}

impl ProgressRelay {
    fn start(gw: &McpGateway, call_id: &str, ctx: &RequestContext<RoleServer>) -> Self {
        let client_token = ctx.meta.get_progress_token();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Progress>();
        let peer = ctx.peer.clone();
        let forwarder = client_token.map(|token| {
            tokio::spawn(async move {
                while let Some(p) = rx.recv().await {
                    {
                        let mut param = ProgressNotificationParam::new(token.clone(), p.progress);
                        if let Some(total) = p.total {
                            param = param.with_total(total);
                        }
                        if let Some(message) = p.message {
                            param = param.with_message(message);
                        }
                        let _ = peer.notify_progress(param).await;
                    }
                }
            })
        });
        let bus = gw.inner.bus.clone();
        let calls = gw.inner.calls.clone();
        let call_id = call_id.to_owned();
        // Progress must increase; after a replay the restarted server counts from the start
        // again, and those reports are held back until they pass the last one sent.
        let last = Mutex::new(f64::NEG_INFINITY);
        let sink: ProgressSink = Arc::new(move |p: Progress| {
            {
                let mut last = last.lock().expect("progress lock");
                if p.progress <= *last {
                    return;
                }
                *last = p.progress;
            }
            calls.progress(&call_id, p.progress, p.total, p.message.clone());
            bus.publish(HubEvent::CallProgress {
                call_id: call_id.clone(),
                progress: p.progress,
                total: p.total,
                message: p.message.clone(),
            });
            let _ = tx.send(p);
        });
        Self { sink, forwarder }
    }

    /// Waits (bounded) until every progress notification is out, so none trails the result.
    async fn drain(self) {
        drop(self.sink);
        if let Some(forwarder) = self.forwarder {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), forwarder).await;
        }
    }
}

/// The MCP server each client session talks to.
#[derive(Debug, Clone)]
pub struct Handler {
    gw: McpGateway,
    roles: Arc<crate::auth::Roles>,
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

impl Handler {
    /// Whether the caller's role allows `name` (fails closed without a caller).
    fn allowed(&self, ctx: &RequestContext<RoleServer>, name: &str) -> Result<(), ErrorData> {
        let Some(c) = caller(ctx) else {
            return Err(error_data(-32001, "authentication required", None));
        };
        if self.roles.allows(&c.role, name) {
            Ok(())
        } else {
            Err(error_data(
                FORBIDDEN,
                format!("tool '{name}' is not allowed for role '{}'", c.role),
                None,
            ))
        }
    }

    /// A role with an empty (or no) allowlist sees nothing, resources included.
    fn locked_out(&self, ctx: &RequestContext<RoleServer>) -> bool {
        caller(ctx).is_none_or(|c| self.roles.roles.get(&c.role).is_none_or(Vec::is_empty))
    }

    /// The `field` items of `method` from every running server that offers `capability`
    /// (first page of each), with the server they came from. Servers that fail are skipped.
    async fn gather(
        &self,
        capability: &str,
        method: &'static str,
        field: &str,
        ct: &CancellationToken,
    ) -> Vec<(Upstream, Value)> {
        let mut items = Vec::new();
        for up in self.gw.upstreams() {
            let status = up.status();
            if status.state != ServerState::Running || !status.has_capability(capability) {
                continue;
            }
            let Ok(page) = up.request(method, json!({}), method, true, None, ct).await else {
                continue;
            };
            if let Some(Value::Array(list)) = page.result.get(field) {
                items.extend(list.iter().map(|v| (up.clone(), v.clone())));
            }
        }
        items
    }

    fn visible(&self, ctx: &RequestContext<RoleServer>, name: &str) -> bool {
        self.allowed(ctx, name).is_ok()
    }

    async fn builtin(&self, name: &str, ctx: &RequestContext<RoleServer>) -> CallToolResult {
        let scope = CallScope::begin(&self.gw, ctx, "tools/call", name, BUILTIN_SERVER);
        let value = if name == HEALTH_TOOL {
            self.gw.health()
        } else {
            self.gw.inner.telemetry.snapshot()
        };
        scope.finish_with(0, None, Some(&value));
        json_result(value)
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
        let capabilities = ServerCapabilities::builder()
            .enable_tools()
            .enable_tool_list_changed()
            .enable_resources()
            .enable_prompts()
            .build();
        let mut info = ServerConfig::new(capabilities);
        info.server_info = Implementation::new("switchboard", env!("CARGO_PKG_VERSION"));
        info.instructions = Some(
            "Switchboard aggregates the user's MCP servers: tools are named <server>__<tool>. \
             switchboard__health_snapshot shows which servers are running."
                .into(),
        );
        info
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        self.gw
            .inner
            .peers
            .lock()
            .expect("peers lock")
            .push(context.peer);
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let mut tools: Vec<Tool> = self.gw.tools().into_iter().map(|t| t.tool).collect();
        tools.extend(builtin_tools());
        tools.retain(|t| self.visible(&context, &t.name));
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let name = request.name.to_string();
        if let Err(refused) = self.allowed(&context, &name) {
            // refused here: it never reaches a server
            let scope = CallScope::begin(&self.gw, &context, "tools/call", &name, BUILTIN_SERVER);
            scope.finish(
                0,
                Some((i64::from(refused.code.0), refused.message.to_string())),
            );
            return Err(refused);
        }
        if name == HEALTH_TOOL || name == TELEMETRY_TOOL {
            return Ok(self.builtin(&name, &context).await.into());
        }
        let Some((up, tool)) = self.gw.resolve(&name) else {
            let scope = CallScope::begin(&self.gw, &context, "tools/call", &name, BUILTIN_SERVER);
            let message = format!("unknown tool '{name}'");
            scope.finish(0, Some((-32602, message.clone())));
            return Err(error_data(-32602, message, None));
        };
        let scope = CallScope::begin(&self.gw, &context, "tools/call", &name, up.name());
        let replayable = up.is_replayable(&tool.name);
        let mut params = json!({"name": tool.name});
        if let Some(args) = request.arguments {
            params["arguments"] = Value::Object(args);
        }
        scope.arguments(params.get("arguments").unwrap_or(&Value::Null));
        let relay = ProgressRelay::start(&self.gw, &scope.call_id, &context);
        let (cancel, watcher) = call_cancellation(&context);
        let answer = up
            .request(
                "tools/call",
                params,
                &tool.name,
                replayable,
                Some(relay.sink.clone()),
                &cancel,
            )
            .await;
        if let Some(w) = watcher {
            w.abort();
        }
        relay.drain().await;
        match answer {
            Ok(a) => match serde_json::from_value::<CallToolResult>(a.result) {
                Ok(mut result) => {
                    // Upstreams speak 2025-11-25, which has no `resultType`; 2026-07-28 clients
                    // require it (rmcp drops it again for older clients).
                    result.result_type.get_or_insert(ResultType::COMPLETE);
                    let err = (result.is_error == Some(true)).then(|| {
                        let text = result
                            .content
                            .iter()
                            .find_map(|c| c.as_text().map(|t| t.text.clone()))
                            .unwrap_or_else(|| "tool reported an error".into());
                        (0, text)
                    });
                    let shown = serde_json::to_value(&result).unwrap_or(Value::Null);
                    scope.finish_with(a.replay_attempts, err, Some(&shown));
                    Ok(result.into())
                }
                Err(e) => {
                    let message = format!(
                        "server '{}' returned an invalid tool result: {e}",
                        up.name()
                    );
                    scope.finish(a.replay_attempts, Some((-32603, message.clone())));
                    Err(error_data(-32603, message, None))
                }
            },
            Err(e) => {
                let attempts = u32::from(matches!(e, CallError::CrashedTwice { .. }));
                scope.finish(attempts, Some((e.code(), e.to_string())));
                match remote_error(e) {
                    Ok(data) => Err(data),
                    // Failures of the server itself are tool errors: the model can read them.
                    Err(e) => {
                        Ok(CallToolResult::error(vec![ContentBlock::text(e.to_string())]).into())
                    }
                }
            }
        }
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        if self.locked_out(&context) {
            return Ok(ListResourcesResult::with_all_items(Vec::new()));
        }
        let mut all = Vec::new();
        let mut owners = HashMap::new();
        for (up, r) in self
            .gather("resources", "resources/list", "resources", &context.ct)
            .await
        {
            if let Ok(res) = serde_json::from_value::<Resource>(r) {
                if owners.contains_key(&res.uri) {
                    continue; // the first server (by name) owns a URI
                }
                owners.insert(res.uri.clone(), up.name().to_owned());
                all.push(res);
            }
        }
        self.gw
            .inner
            .resource_owner
            .lock()
            .expect("owner lock")
            .extend(owners);
        Ok(ListResourcesResult::with_all_items(all))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        let all = self
            .gather(
                "resources",
                "resources/templates/list",
                "resourceTemplates",
                &context.ct,
            )
            .await
            .into_iter()
            .filter_map(|(_, t)| serde_json::from_value::<ResourceTemplate>(t).ok())
            .collect();
        Ok(ListResourceTemplatesResult::with_all_items(all))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let uri = request.uri.clone();
        if self.locked_out(&context) {
            return Err(error_data(FORBIDDEN, "this role is locked out", None));
        }
        let owner = self
            .gw
            .inner
            .resource_owner
            .lock()
            .expect("owner lock")
            .get(&uri)
            .cloned();
        // Unknown URIs (templates, or never listed) are tried on each server with resources.
        let candidates: Vec<Upstream> = match owner.and_then(|o| self.gw.upstream(&o)) {
            Some(up) => vec![up],
            None => self
                .gw
                .upstreams()
                .into_iter()
                .filter(|u| u.status().has_capability("resources"))
                .collect(),
        };
        let mut last_error = error_data(-32002, format!("resource '{uri}' not found"), None);
        for up in candidates {
            let scope = CallScope::begin(&self.gw, &context, "resources/read", &uri, up.name());
            let answer = up
                .request(
                    "resources/read",
                    json!({"uri": uri}),
                    &uri,
                    true,
                    None,
                    &context.ct,
                )
                .await;
            match answer {
                Ok(a) => match serde_json::from_value::<ReadResourceResult>(a.result) {
                    Ok(mut r) => {
                        r.result_type.get_or_insert(ResultType::COMPLETE);
                        scope.finish(a.replay_attempts, None);
                        return Ok(r.into());
                    }
                    Err(e) => {
                        let m = format!("server '{}' returned an invalid resource: {e}", up.name());
                        scope.finish(a.replay_attempts, Some((-32603, m.clone())));
                        last_error = error_data(-32603, m, None);
                    }
                },
                Err(e) => {
                    scope.finish(0, Some((e.code(), e.to_string())));
                    last_error =
                        remote_error(e).unwrap_or_else(|e| error_data(-32603, e.to_string(), None));
                }
            }
        }
        Err(last_error)
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        let mut all = Vec::new();
        for (up, p) in self
            .gather("prompts", "prompts/list", "prompts", &context.ct)
            .await
        {
            if let Ok(mut prompt) = serde_json::from_value::<Prompt>(p) {
                prompt.name = names::exposed(up.name(), &prompt.name);
                if self.visible(&context, &prompt.name) {
                    all.push(prompt);
                }
            }
        }
        Ok(ListPromptsResult::with_all_items(all))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        let name = request.name.clone();
        self.allowed(&context, &name)?;
        let Some((server, prompt)) = names::split(&name) else {
            return Err(error_data(-32602, format!("unknown prompt '{name}'"), None));
        };
        let Some(up) = self.gw.upstream(server) else {
            return Err(error_data(-32602, format!("unknown prompt '{name}'"), None));
        };
        let scope = CallScope::begin(&self.gw, &context, "prompts/get", &name, up.name());
        let mut params = json!({"name": prompt});
        if let Some(args) = request.arguments {
            params["arguments"] = serde_json::to_value(args).unwrap_or(Value::Null);
        }
        match up
            .request("prompts/get", params, prompt, true, None, &context.ct)
            .await
        {
            Ok(a) => match serde_json::from_value::<GetPromptResult>(a.result) {
                Ok(mut r) => {
                    r.result_type.get_or_insert(ResultType::COMPLETE);
                    scope.finish(a.replay_attempts, None);
                    Ok(r.into())
                }
                Err(e) => {
                    let m = format!("server '{}' returned an invalid prompt: {e}", up.name());
                    scope.finish(a.replay_attempts, Some((-32603, m.clone())));
                    Err(error_data(-32603, m, None))
                }
            },
            Err(e) => {
                scope.finish(0, Some((e.code(), e.to_string())));
                Err(remote_error(e).unwrap_or_else(|e| error_data(-32603, e.to_string(), None)))
            }
        }
    }
}
