//! Supervised upstream MCP servers: stdio child processes and remote endpoints.
//!
//! This file is the facade: the [`Upstream`] handle, the replaying call path
//! ([`Upstream::request`], [`Upstream::call_tool`]) and its errors. Below it, each a file that
//! imports none above it:
//! - `upstream/state`: [`Status`], [`ServerState`] (defined with the events that carry it) and
//!   the state shared by the handle, the supervisor and the transports;
//! - `upstream/supervisor`: the loop that starts, watches and restarts a server (backoff,
//!   crash loops);
//! - `upstream/stdio`, `upstream/remote`: the transports, each handing the supervisor a link
//!   and a [`Connection`];
//! - `upstream/connection`: one JSON-RPC connection; `upstream/notice`: its list-changed
//!   notices to the supervisor, on a queue that cannot grow.
//!
//! A call survives a crash or lost connection once: a call in flight then is sent again to the
//! reopened server if it is safe to repeat, and answered with a clear error otherwise.

mod connection;
mod notice;
mod remote;
mod state;
mod stdio;
mod supervisor;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::model::Tool;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::store::SecretStore;
use crate::config::{GatewayConfig, ReplayContract, ServerConfig};
use crate::events::EventBus;
pub use connection::{Connection, Progress, ProgressSink, RpcError};
use state::{CONTROL_QUEUE, Inner};
pub use state::{ServerState, Status};

/// Why a call through an upstream failed.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum CallError {
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
    pub(crate) fn code(&self) -> i64 {
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
pub(crate) enum Loss {
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
pub(crate) struct Answer<R = Value> {
    pub(crate) result: R,
    pub(crate) replay_attempts: u32,
}

/// A result as the server wrote it (see [`Upstream::call_tool`]).
pub(crate) type RawAnswer = Answer<Box<RawValue>>;

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

/// Handle to one supervised server; cheap to clone.
#[derive(Debug, Clone)]
pub struct Upstream {
    inner: Arc<Inner>,
}

impl Upstream {
    /// Starts supervising `config`; `secrets` is where its `{ keychain = ... }` header values
    /// are read. The task ends when `shutdown` is cancelled, after the child has been stopped;
    /// it and the transport's tasks run on `tasks`, which lets the caller wait for that.
    pub(crate) fn spawn(
        config: ServerConfig,
        limits: GatewayConfig,
        secrets: Arc<dyn SecretStore>,
        bus: EventBus,
        shutdown: CancellationToken,
        tasks: &TaskTracker,
    ) -> Self {
        let (control, control_rx) = mpsc::channel(CONTROL_QUEUE);
        let (status, _) = watch::channel(Status::initial(config.enabled));
        let inner = Arc::new(Inner {
            name: config.name.clone(),
            config: Mutex::new(config),
            next_config: Mutex::new(None),
            limits,
            secrets,
            status,
            control,
            stderr: Mutex::new(Default::default()),
            bus,
            progress_seq: AtomicU64::new(1),
            shutdown,
            tasks: tasks.clone(),
        });
        tasks.spawn(supervisor::supervise(inner.clone(), control_rx));
        Self { inner }
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub fn status(&self) -> Status {
        self.inner.status.borrow().clone()
    }

    /// The tool `name` of the running server, found without cloning the whole status.
    pub(crate) fn tool(&self, name: &str) -> Option<Tool> {
        self.inner
            .status
            .borrow()
            .tools
            .iter()
            .find(|t| t.name == name)
            .cloned()
    }

    pub(crate) fn watch(&self) -> watch::Receiver<Status> {
        self.inner.status.subscribe()
    }

    pub fn config(&self) -> ServerConfig {
        self.inner.config.lock().expect("config lock").clone()
    }

    /// The last lines the server wrote to stderr, oldest first.
    pub(crate) fn stderr_tail(&self) -> Vec<String> {
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
        self.inner.restart();
    }

    /// Applies a changed config: restarts the server with it (or stops it if disabled).
    pub(crate) fn reconfigure(&self, config: ServerConfig) {
        *self.inner.next_config.lock().expect("config lock") = Some(config);
        self.inner.restart();
    }

    /// Stops supervising: the child is stopped politely.
    pub(crate) fn stop(&self) {
        self.inner.shutdown.cancel();
    }

    /// Whether this server offers `tool` now and, if it does, whether a call of it may be
    /// repeated after a crash (the config's replay contract, else the tool's
    /// `readOnlyHint`/`idempotentHint`): one look, no copy of the tool.
    pub(crate) fn route(&self, tool: &str) -> Option<bool> {
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
    pub(crate) async fn request(
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
    pub(crate) async fn call_tool(
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

/// Whether the tool says a repeated call is harmless (`readOnlyHint` or `idempotentHint`).
fn annotated_safe(tool: &Tool) -> bool {
    tool.annotations
        .as_ref()
        .is_some_and(|a| a.read_only_hint == Some(true) || a.idempotent_hint == Some(true))
}
