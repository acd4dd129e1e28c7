//! Supervised upstream MCP servers: stdio child processes and remote endpoints.
//!
//! Each [`Upstream`] owns one supervisor task that opens the server's transport (spawns the
//! child, or connects to the URL), runs the MCP handshake, lists its tools (again on
//! `tools/list_changed`), and opens it again with exponential backoff when it dies. The
//! supervisor does not care what carries the messages: [`stdio`] and [`remote`] each hand it a
//! [`Link`] (how to notice its end, how to stop it) and a [`Connection`].
//!
//! - stdio: stderr is kept in a bounded tail; too many crashes in a window mark the server
//!   `failed` until someone asks for a restart; children are stopped politely (stdin closed, a
//!   grace period, then killed) and are killed if their handle is dropped.
//! - remote: a lost connection is reconnected with its own backoff (500 ms doubling to 30 s,
//!   reset after 10 s of health) and never ends `failed`.
//!
//! Calls go through [`Upstream::request`], which survives a crash or lost connection once: a
//! call in flight then is sent again to the reopened server if it is safe to repeat, and
//! answered with a clear error otherwise.

pub mod connection;
mod remote;
mod stdio;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rmcp::model::Tool;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::config::{GatewayConfig, ReplayContract, ServerConfig, Transport};
use crate::events::{EventBus, HubEvent};
pub use connection::{Connection, Progress, ProgressSink, RpcError, ServerNotice};

/// The protocol revision we ask upstream servers for.
pub const UPSTREAM_PROTOCOL: &str = "2025-11-25";

/// Lifecycle of a supervised server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerState {
    Starting,
    Running,
    /// Crashed (or lost its connection); waiting out the backoff before the next start.
    Restarting,
    /// Crashed too often; not restarted until asked.
    Failed,
    Disabled,
    Stopped,
}

impl ServerState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Restarting => "restarting",
            Self::Failed => "failed",
            Self::Disabled => "disabled",
            Self::Stopped => "stopped",
        }
    }
}

/// What a server is doing now; published on a watch channel.
#[derive(Debug, Clone)]
pub struct Status {
    pub state: ServerState,
    /// Increases with every successful start.
    pub generation: u64,
    /// The child's process id (stdio servers only).
    pub pid: Option<u32>,
    pub tools: Arc<Vec<Tool>>,
    /// The `capabilities` object of the server's `initialize` result.
    pub capabilities: Arc<Value>,
    pub server_info: Arc<Value>,
    pub restarts: u64,
    pub last_error: Option<String>,
    /// When the server entered `Running` (for uptime).
    pub running_since: Option<Instant>,
    pub conn: Option<Arc<Connection>>,
}

impl Status {
    fn initial(enabled: bool) -> Self {
        Self {
            state: if enabled {
                ServerState::Starting
            } else {
                ServerState::Disabled
            },
            generation: 0,
            pid: None,
            tools: Arc::new(Vec::new()),
            capabilities: Arc::new(Value::Null),
            server_info: Arc::new(Value::Null),
            restarts: 0,
            last_error: None,
            running_since: None,
            conn: None,
        }
    }

    pub fn has_capability(&self, name: &str) -> bool {
        self.capabilities.get(name).is_some()
    }
}

/// Why a call through an upstream failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    #[error("server '{server}' is {state}{}", reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    Unavailable {
        server: String,
        state: &'static str,
        reason: Option<String>,
    },
    #[error(
        "server '{server}' {loss} while running this call; it was not repeated because \
         '{method_target}' is not marked safe to repeat (readOnlyHint/idempotentHint, or \
         replay = \"safe\" in the config)"
    )]
    CrashedNotRepeated {
        server: String,
        method_target: String,
        loss: Loss,
    },
    #[error("server '{server}' {loss} while running this call, and again while it was repeated")]
    CrashedTwice { server: String, loss: Loss },
    #[error("{0}")]
    Remote(RpcError),
    #[error("server '{server}' did not answer within {} ms", timeout.as_millis())]
    Timeout { server: String, timeout: Duration },
    #[error("cancelled by the client")]
    Cancelled,
}

impl CallError {
    /// JSON-RPC code for this error.
    pub fn code(&self) -> i64 {
        match self {
            Self::Remote(RpcError::Remote { code, .. }) => *code,
            Self::Cancelled => -32800,
            Self::Timeout { .. } => -32001,
            _ => -32603,
        }
    }
}

/// How a server went away under a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// A stdio server's process ended.
    Crashed,
    /// A remote server's connection dropped.
    Disconnected,
}

impl std::fmt::Display for Loss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Crashed => "crashed",
            Self::Disconnected => "dropped the connection",
        })
    }
}

/// A finished upstream request: its result and how often it was replayed.
#[derive(Debug, Clone)]
pub struct Answer<R = Value> {
    pub result: R,
    pub replay_attempts: u32,
}

/// A result as the server wrote it (see [`Upstream::call_tool`]).
pub type RawAnswer = Answer<Box<RawValue>>;

/// `tools/call` params as written upstream, the client's arguments passed on as they came.
#[derive(Serialize)]
struct ToolCallParams<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    arguments: Option<&'a RawValue>,
    #[serde(rename = "_meta", skip_serializing_if = "Option::is_none")]
    meta: Option<TokenMeta<'a>>,
}

#[derive(Serialize)]
struct TokenMeta<'a> {
    #[serde(rename = "progressToken")]
    progress_token: &'a str,
}

/// What a request carries; written anew for each attempt (each has its own progress token).
enum Params<'a> {
    Value(Value),
    ToolCall {
        name: &'a str,
        arguments: Option<&'a RawValue>,
    },
}

enum Control {
    Restart,
    SetConfig(Box<ServerConfig>),
}

/// Handle to one supervised server; cheap to clone.
#[derive(Debug, Clone)]
pub struct Upstream {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    name: String,
    config: Mutex<ServerConfig>,
    limits: GatewayConfig,
    status: watch::Sender<Status>,
    control: mpsc::UnboundedSender<Control>,
    stderr: Mutex<VecDeque<String>>,
    bus: EventBus,
    /// Source of upstream progress tokens, unique per server.
    progress_seq: AtomicU64,
    /// Stops the supervisor (and the child) when cancelled.
    shutdown: CancellationToken,
}

impl Upstream {
    /// Starts supervising `config`. The task ends when `shutdown` is cancelled, after the
    /// child has been stopped; `tasks` lets the caller wait for that.
    pub fn spawn(
        config: ServerConfig,
        limits: GatewayConfig,
        bus: EventBus,
        shutdown: CancellationToken,
        tasks: &tokio_util::task::TaskTracker,
    ) -> Self {
        let (control, control_rx) = mpsc::unbounded_channel();
        let (status, _) = watch::channel(Status::initial(config.enabled));
        let inner = Arc::new(Inner {
            name: config.name.clone(),
            config: Mutex::new(config),
            limits,
            status,
            control,
            stderr: Mutex::new(VecDeque::new()),
            bus,
            progress_seq: AtomicU64::new(1),
            shutdown,
        });
        tasks.spawn(supervise(inner.clone(), control_rx));
        Self { inner }
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub fn status(&self) -> Status {
        self.inner.status.borrow().clone()
    }

    /// The tool `name` of the running server, found without cloning the whole status.
    pub fn tool(&self, name: &str) -> Option<Tool> {
        self.inner
            .status
            .borrow()
            .tools
            .iter()
            .find(|t| t.name == name)
            .cloned()
    }

    pub fn watch(&self) -> watch::Receiver<Status> {
        self.inner.status.subscribe()
    }

    pub fn config(&self) -> ServerConfig {
        self.inner.config.lock().expect("config lock").clone()
    }

    /// The last lines the server wrote to stderr, oldest first.
    pub fn stderr_tail(&self) -> Vec<String> {
        self.inner
            .stderr
            .lock()
            .expect("stderr lock")
            .iter()
            .cloned()
            .collect()
    }

    /// Restarts the server now (also brings a `failed` one back).
    pub fn restart(&self) {
        let _ = self.inner.control.send(Control::Restart);
    }

    /// Applies a changed config: restarts the server with it (or stops it if disabled).
    pub fn reconfigure(&self, config: ServerConfig) {
        let _ = self
            .inner
            .control
            .send(Control::SetConfig(Box::new(config)));
    }

    /// Stops supervising: the child is stopped politely.
    pub fn stop(&self) {
        self.inner.shutdown.cancel();
    }

    /// Whether a tool call may be repeated after a crash: the config's replay contract, or the
    /// tool's `readOnlyHint`/`idempotentHint`.
    pub fn is_replayable(&self, tool: &str) -> bool {
        self.replay_contract(tool).unwrap_or_else(|| {
            let status = self.inner.status.borrow();
            status
                .tools
                .iter()
                .find(|t| t.name == tool)
                .is_some_and(annotated_safe)
        })
    }

    /// Whether this server offers `tool` now and, if it does, whether a call of it is safe to
    /// replay ([`is_replayable`](Self::is_replayable)): one look, no copy of the tool.
    pub fn route(&self, tool: &str) -> Option<bool> {
        let annotated = annotated_safe(
            self.inner
                .status
                .borrow()
                .tools
                .iter()
                .find(|t| t.name == tool)?,
        );
        Some(self.replay_contract(tool).unwrap_or(annotated))
    }

    /// What the config's replay contract says of `tool`, if it names it.
    fn replay_contract(&self, tool: &str) -> Option<bool> {
        self.inner
            .config
            .lock()
            .expect("config lock")
            .replay
            .get(tool)
            .map(|c| *c == ReplayContract::Safe)
    }

    fn call_timeout(&self) -> Duration {
        self.inner
            .config
            .lock()
            .expect("config lock")
            .call_timeout_ms
            .map(Duration::from_millis)
            .unwrap_or_else(|| self.inner.limits.call_timeout())
    }

    /// Waits (until `deadline`) for a running server of at least `generation`.
    async fn running(
        &self,
        generation: u64,
        deadline: tokio::time::Instant,
    ) -> Result<(Arc<Connection>, u64), CallError> {
        let mut rx = self.inner.status.subscribe();
        loop {
            {
                let s = rx.borrow_and_update();
                match (s.state, &s.conn) {
                    (ServerState::Running, Some(conn))
                        if s.generation >= generation && !conn.is_closed() =>
                    {
                        return Ok((conn.clone(), s.generation));
                    }
                    (ServerState::Failed | ServerState::Disabled | ServerState::Stopped, _) => {
                        return Err(CallError::Unavailable {
                            server: self.inner.name.clone(),
                            state: s.state.as_str(),
                            reason: s.last_error.clone(),
                        });
                    }
                    _ => {}
                }
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    return Err(CallError::Unavailable {
                        server: self.inner.name.clone(),
                        state: "stopped",
                        reason: None,
                    });
                }
                Err(_) => {
                    let s = rx.borrow();
                    return Err(CallError::Unavailable {
                        server: self.inner.name.clone(),
                        state: s.state.as_str(),
                        reason: Some(format!(
                            "not running after {} ms{}",
                            self.call_timeout().as_millis(),
                            s.last_error
                                .as_deref()
                                .map(|e| format!("; last error: {e}"))
                                .unwrap_or_default()
                        )),
                    });
                }
            }
        }
    }

    /// Sends `method` with `params` and returns its result. A progress token is put into
    /// `params._meta` when `progress` is given, and its notifications reach the sink. If the
    /// server dies meanwhile, the request is sent once more to the restarted server when
    /// `replayable`, else the caller is told it was not repeated.
    pub async fn request(
        &self,
        method: &str,
        params: Value,
        target: &str,
        replayable: bool,
        progress: Option<ProgressSink>,
        cancel: &CancellationToken,
    ) -> Result<Answer, CallError> {
        let a = self
            .send(
                method,
                Params::Value(params),
                target,
                replayable,
                progress,
                cancel,
            )
            .await?;
        match serde_json::from_str(a.result.get()) {
            Ok(result) => Ok(Answer {
                result,
                replay_attempts: a.replay_attempts,
            }),
            // it was read as JSON already
            Err(e) => Err(CallError::Remote(RpcError::Remote {
                code: -32603,
                message: format!("unreadable result: {e}"),
                data: None,
            })),
        }
    }

    /// `tools/call` of `tool` with the client's `arguments` (a JSON object, or none) passed on
    /// as they came, answering the result as the server wrote it; otherwise as
    /// [`request`](Self::request).
    pub async fn call_tool(
        &self,
        tool: &str,
        arguments: Option<&RawValue>,
        replayable: bool,
        progress: Option<ProgressSink>,
        cancel: &CancellationToken,
    ) -> Result<RawAnswer, CallError> {
        let params = Params::ToolCall {
            name: tool,
            arguments,
        };
        self.send("tools/call", params, tool, replayable, progress, cancel)
            .await
    }

    async fn send(
        &self,
        method: &str,
        mut params: Params<'_>,
        target: &str,
        replayable: bool,
        progress: Option<ProgressSink>,
        cancel: &CancellationToken,
    ) -> Result<RawAnswer, CallError> {
        let timeout = self.call_timeout();
        let deadline = tokio::time::Instant::now() + timeout;
        let mut generation = 0;
        let mut replay_attempts = 0;
        loop {
            let (conn, current) = self.running(generation, deadline).await?;
            let token = progress.as_ref().map(|sink| {
                let token = format!(
                    "sb-{}-{}",
                    self.inner.name,
                    self.inner.progress_seq.fetch_add(1, Ordering::Relaxed)
                );
                conn.register_progress(&token, sink.clone());
                if let Params::Value(Value::Object(map)) = &mut params {
                    let meta = map.entry("_meta").or_insert_with(|| json!({}));
                    if let Value::Object(meta) = meta {
                        meta.insert("progressToken".into(), Value::String(token.clone()));
                    }
                }
                token
            });
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let result = match &params {
                Params::Value(v) => conn.request_raw(method, v, remaining, Some(cancel)).await,
                Params::ToolCall { name, arguments } => {
                    let p = ToolCallParams {
                        name,
                        arguments: *arguments,
                        meta: token.as_deref().map(|t| TokenMeta { progress_token: t }),
                    };
                    conn.request_raw(method, &p, remaining, Some(cancel)).await
                }
            };
            if let Some(token) = &token {
                conn.unregister_progress(token);
            }
            let loss = || {
                if self.config().is_remote() {
                    Loss::Disconnected
                } else {
                    Loss::Crashed
                }
            };
            return match result {
                Ok(result) => Ok(Answer {
                    result,
                    replay_attempts,
                }),
                Err(RpcError::Closed) if replayable && replay_attempts == 0 => {
                    tracing::warn!(server = %self.inner.name, %target, loss = %loss(),
                        "server went away during a call; replaying it once it is back");
                    replay_attempts = 1;
                    generation = current + 1;
                    continue;
                }
                Err(RpcError::Closed) if replay_attempts > 0 => Err(CallError::CrashedTwice {
                    server: self.inner.name.clone(),
                    loss: loss(),
                }),
                Err(RpcError::Closed) => Err(CallError::CrashedNotRepeated {
                    server: self.inner.name.clone(),
                    method_target: target.to_owned(),
                    loss: loss(),
                }),
                Err(RpcError::Timeout(_)) => Err(CallError::Timeout {
                    server: self.inner.name.clone(),
                    timeout,
                }),
                Err(RpcError::Cancelled) => Err(CallError::Cancelled),
                Err(e @ RpcError::Remote { .. }) => Err(CallError::Remote(e)),
            };
        }
    }
}

impl Inner {
    fn update(&self, f: impl FnOnce(&mut Status)) {
        self.status.send_modify(f);
    }

    fn set_state(&self, state: ServerState, error: Option<String>) {
        let mut changed = false;
        self.status.send_modify(|s| {
            changed = s.state != state;
            s.state = state;
            if error.is_some() {
                s.last_error = error.clone();
            }
            if state != ServerState::Running {
                s.conn = None;
                s.pid = None;
                s.running_since = None;
            }
        });
        if changed {
            self.bus.publish(HubEvent::ServerState {
                server: self.name.clone(),
                state,
                reason: error,
            });
        }
    }

    fn push_stderr(&self, line: String) {
        let mut tail = self.stderr.lock().expect("stderr lock");
        if tail.len() >= self.limits.stderr_lines.max(1) {
            tail.pop_front();
        }
        tail.push_back(line);
    }
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
    notices: mpsc::UnboundedReceiver<ServerNotice>,
}

/// Opens the transport `cfg` asks for.
async fn open(inner: &Arc<Inner>, cfg: &ServerConfig) -> Result<Opened, String> {
    let (notice_tx, notices) = mpsc::unbounded_channel();
    let (link, conn) = match cfg.transport() {
        Transport::Stdio { .. } => {
            let (p, conn) = stdio::spawn(inner, cfg, notice_tx)?;
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

/// Opens the server and runs the MCP handshake: `initialize`, `notifications/initialized`,
/// `tools/list`.
async fn start(inner: &Arc<Inner>, cfg: &ServerConfig) -> Result<Opened, String> {
    let opened = open(inner, cfg).await?;
    let conn = opened.conn.clone();
    let timeout = inner.limits.start_timeout();
    let init = conn
        .request(
            "initialize",
            json!({
                "protocolVersion": UPSTREAM_PROTOCOL,
                "capabilities": {},
                "clientInfo": {"name": "switchboard", "version": env!("CARGO_PKG_VERSION")},
            }),
            timeout,
            Some(&inner.shutdown),
        )
        .await;
    let init = match init {
        Ok(v) => v,
        Err(e) => return Err(opened.link.abandon(inner, e).await),
    };
    let _ = conn.notify("notifications/initialized", json!({})).await;
    let capabilities = init.get("capabilities").cloned().unwrap_or(json!({}));
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
    inner.update(|s| {
        s.generation += 1;
        s.pid = pid;
        s.tools = Arc::new(tools);
        s.capabilities = Arc::new(capabilities);
        s.server_info = Arc::new(init.get("serverInfo").cloned().unwrap_or(Value::Null));
        s.conn = Some(conn.clone());
        s.running_since = Some(Instant::now());
    });
    Ok(opened)
}

/// `tools/list`, following cursors. Tools that do not parse are skipped with a warning.
/// Whether the tool says a repeated call is harmless (`readOnlyHint` or `idempotentHint`).
fn annotated_safe(tool: &Tool) -> bool {
    tool.annotations
        .as_ref()
        .is_some_and(|a| a.read_only_hint == Some(true) || a.idempotent_hint == Some(true))
}

async fn list_tools(inner: &Inner, conn: &Connection) -> Result<Vec<Tool>, String> {
    let mut tools = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let params = match &cursor {
            Some(c) => json!({"cursor": c}),
            None => json!({}),
        };
        let page = conn
            .request(
                "tools/list",
                params,
                inner.limits.start_timeout(),
                Some(&inner.shutdown),
            )
            .await
            .map_err(|e| format!("tools/list failed: {e}"))?;
        for t in page
            .get("tools")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
        {
            match serde_json::from_value::<Tool>(t.clone()) {
                Ok(tool) => tools.push(tool),
                Err(e) => tracing::warn!(server = %inner.name, tool = %t["name"], error = %e,
                    "tool definition ignored"),
            }
        }
        cursor = page
            .get("nextCursor")
            .and_then(Value::as_str)
            .map(str::to_owned);
        if cursor.is_none() {
            break;
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

/// A server up this long has its backoff reset.
const HEALTHY_AFTER: Duration = Duration::from_secs(10);

enum Exit {
    Crashed(String),
    Shutdown,
    Restart,
}

async fn supervise(inner: Arc<Inner>, mut control: mpsc::UnboundedReceiver<Control>) {
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
                tracing::info!(server = %inner.name, pid = ?run.link.pid(), "running");
                let up_since = Instant::now();
                let exit = loop {
                    tokio::select! {
                        why = run.link.ended() => break Exit::Crashed(why),
                        () = inner.shutdown.cancelled() => break Exit::Shutdown,
                        cmd = control.recv() => match cmd {
                            Some(Control::Restart) => break Exit::Restart,
                            Some(Control::SetConfig(c)) => {
                                *inner.config.lock().expect("config lock") = *c;
                                break Exit::Restart;
                            }
                            None => break Exit::Shutdown,
                        },
                        Some(notice) = run.notices.recv() => {
                            if notice == ServerNotice::ToolsChanged {
                                match list_tools(&inner, &run.conn).await {
                                    Ok(tools) => {
                                        let count = tools.len();
                                        inner.update(|s| s.tools = Arc::new(tools));
                                        inner.bus.publish(HubEvent::ServerToolsChanged {
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
                        if up_since.elapsed() > HEALTHY_AFTER {
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

        tracing::warn!(server = %inner.name, %reason, "server went away");
        inner.bus.publish(HubEvent::ServerCrashed {
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
        inner.set_state(ServerState::Restarting, Some(reason));
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = inner.shutdown.cancelled() => {
                inner.set_state(ServerState::Stopped, None);
                return;
            }
            cmd = control.recv() => match cmd {
                Some(Control::Restart) => { crashes.clear(); attempt = 0; }
                Some(Control::SetConfig(c)) => {
                    *inner.config.lock().expect("config lock") = *c;
                    crashes.clear();
                    attempt = 0;
                }
                None => return,
            },
        }
        inner.update(|s| s.restarts += 1);
    }
}

/// Parks a failed or disabled server until a restart or a new config arrives. `false` when
/// the supervisor should end.
async fn wait_for_control(inner: &Inner, control: &mut mpsc::UnboundedReceiver<Control>) -> bool {
    tokio::select! {
        () = inner.shutdown.cancelled() => {
            inner.set_state(ServerState::Stopped, None);
            false
        }
        cmd = control.recv() => match cmd {
            Some(Control::Restart) => true,
            Some(Control::SetConfig(c)) => {
                *inner.config.lock().expect("config lock") = *c;
                true
            }
            None => false,
        },
    }
}
