//! One JSON-RPC connection to an MCP server, whatever carries it: newline-delimited JSON on a
//! child's stdin/stdout ([`Connection::start`]), or whole messages handed over by a network
//! transport ([`Connection::framed`] with its [`Outbox`], and [`Connection::receive`]).
//!
//! Our request ids are numbers we allocate, so the caller's ids never reach the server (they
//! are mapped back by whoever holds the future). Incoming messages are routed here: responses
//! to waiting callers, progress notifications to the sink registered for their token, and
//! list-changed notifications to the supervisor. When the transport ends (stdout closes, the
//! socket drops), every waiting caller gets [`RpcError::Closed`] at once: that is how a crash
//! or a lost connection mid-call is noticed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{ChildStdin, ChildStdout};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// A progress notification, as the server sent it (minus its token).
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub progress: f64,
    pub total: Option<f64>,
    pub message: Option<String>,
}

/// Where progress for one upstream request goes.
pub type ProgressSink = Arc<dyn Fn(Progress) + Send + Sync>;

/// Why a request got no result.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RpcError {
    #[error("{message}")]
    Remote {
        code: i64,
        message: String,
        data: Option<Value>,
    },
    #[error("the connection to the server ended (process exited or connection lost)")]
    Closed,
    #[error("no answer within {} ms", .0.as_millis())]
    Timeout(Duration),
    #[error("cancelled by the caller")]
    Cancelled,
}

/// Something the server told us that the supervisor acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerNotice {
    ToolsChanged,
    ResourcesChanged,
    PromptsChanged,
}

enum Outgoing {
    /// One serialized JSON-RPC message, without a line end.
    Message(Vec<u8>),
    /// The polite end: close the child's stdin, or end the remote session.
    CloseStdin,
}

/// The messages a network transport must deliver to the server, in order.
#[derive(Debug)]
pub struct Outbox {
    rx: mpsc::Receiver<Outgoing>,
    closed: CancellationToken,
}

impl Outbox {
    /// The next message to send; `None` when the connection is being closed (politely, by
    /// [`Connection::close_stdin`], or because it is gone).
    pub async fn next(&mut self) -> Option<Vec<u8>> {
        let msg = tokio::select! {
            m = self.rx.recv() => m,
            () = self.closed.cancelled() => None,
        };
        match msg? {
            Outgoing::Message(m) => Some(m),
            Outgoing::CloseStdin => None,
        }
    }
}

impl std::fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Message(m) => write!(f, "Message({} bytes)", m.len()),
            Self::CloseStdin => f.write_str("CloseStdin"),
        }
    }
}

type Waiter = oneshot::Sender<Result<Value, RpcError>>;

/// Handle to a running connection; shared by every caller of that server generation.
pub struct Connection {
    server: String,
    out: mpsc::Sender<Outgoing>,
    pending: Mutex<HashMap<u64, Waiter>>,
    progress: Mutex<HashMap<String, ProgressSink>>,
    next_id: AtomicU64,
    /// Cancelled when stdout ends (the process died or closed it).
    closed: CancellationToken,
    /// Lines on stdout (or messages) that were not JSON-RPC.
    garbage: AtomicU64,
    /// Where list-changed notifications go (the supervisor).
    notices: mpsc::UnboundedSender<ServerNotice>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("server", &self.server)
            .field("closed", &self.closed.is_cancelled())
            .finish_non_exhaustive()
    }
}

/// Requests waiting to be written, per server; callers wait when it is full.
const OUT_QUEUE: usize = 1024;

impl Connection {
    /// Starts the reader and writer tasks for a freshly spawned child.
    pub fn start(
        server: &str,
        stdin: ChildStdin,
        stdout: ChildStdout,
        notices: mpsc::UnboundedSender<ServerNotice>,
    ) -> Arc<Self> {
        let (conn, outbox) = Self::framed(server, notices);
        tokio::spawn(write_loop(stdin, outbox.rx, conn.closed.clone()));
        tokio::spawn(read_loop(conn.clone(), stdout));
        conn
    }

    /// A connection whose transport is someone else's: it drains the [`Outbox`], hands every
    /// message from the server to [`Connection::receive`], and calls
    /// [`Connection::mark_closed`] when the link is gone.
    pub fn framed(
        server: &str,
        notices: mpsc::UnboundedSender<ServerNotice>,
    ) -> (Arc<Self>, Outbox) {
        let (out, rx) = mpsc::channel(OUT_QUEUE);
        let conn = Arc::new(Self {
            server: server.to_owned(),
            out,
            pending: Mutex::new(HashMap::new()),
            progress: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            closed: CancellationToken::new(),
            garbage: AtomicU64::new(0),
            notices,
        });
        let outbox = Outbox {
            rx,
            closed: conn.closed.clone(),
        };
        (conn, outbox)
    }

    /// A message from the server: one JSON-RPC object (a batch array is taken apart).
    pub fn receive(&self, message: &[u8]) {
        match serde_json::from_slice::<Value>(message) {
            Ok(Value::Array(batch)) => {
                for msg in batch {
                    self.on_message(msg, message);
                }
            }
            Ok(msg) => self.on_message(msg, message),
            Err(_) => self.on_garbage(message),
        }
    }

    /// Whether request `id` still has a caller waiting for its answer (a transport stops
    /// reading a response stream nobody waits for).
    pub(crate) fn awaits(&self, id: u64) -> bool {
        self.pending.lock().expect("pending lock").contains_key(&id)
    }

    pub fn closed(&self) -> &CancellationToken {
        &self.closed
    }

    pub fn garbage_lines(&self) -> u64 {
        self.garbage.load(Ordering::Relaxed)
    }

    /// Fails every waiting request with [`RpcError::Closed`]; later requests fail at once.
    pub fn mark_closed(&self) {
        self.closed.cancel();
        let waiters: Vec<Waiter> = self
            .pending
            .lock()
            .expect("pending lock")
            .drain()
            .map(|(_, w)| w)
            .collect();
        for w in waiters {
            let _ = w.send(Err(RpcError::Closed));
        }
    }

    pub fn close_stdin(&self) {
        let _ = self.out.try_send(Outgoing::CloseStdin);
    }

    pub fn register_progress(&self, token: &str, sink: ProgressSink) {
        self.progress
            .lock()
            .expect("progress lock")
            .insert(token.to_owned(), sink);
    }

    pub fn unregister_progress(&self, token: &str) {
        self.progress.lock().expect("progress lock").remove(token);
    }

    async fn write(&self, msg: &Value) -> Result<(), RpcError> {
        let bytes = serde_json::to_vec(msg).expect("JSON values serialize");
        self.out
            .send(Outgoing::Message(bytes))
            .await
            .map_err(|_| RpcError::Closed)
    }

    /// Sends a notification.
    pub async fn notify(&self, method: &str, params: Value) -> Result<(), RpcError> {
        self.write(&json!({"jsonrpc": "2.0", "method": method, "params": params}))
            .await
    }

    /// Sends a request and waits for its result, at most `timeout`, until `cancel` fires, or
    /// until the process dies. A timed-out or cancelled request is cancelled upstream too.
    pub async fn request(
        &self,
        method: &str,
        params: Value,
        timeout: Duration,
        cancel: Option<&CancellationToken>,
    ) -> Result<Value, RpcError> {
        if self.closed.is_cancelled() {
            return Err(RpcError::Closed);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().expect("pending lock").insert(id, tx);
        let sent = self
            .write(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        if let Err(e) = sent {
            self.pending.lock().expect("pending lock").remove(&id);
            return Err(e);
        }
        let never = CancellationToken::new();
        let cancel = cancel.unwrap_or(&never);
        let outcome = tokio::select! {
            biased;
            r = rx => r.unwrap_or(Err(RpcError::Closed)),
            () = cancel.cancelled() => Err(RpcError::Cancelled),
            () = tokio::time::sleep(timeout) => Err(RpcError::Timeout(timeout)),
        };
        if matches!(outcome, Err(RpcError::Cancelled | RpcError::Timeout(_))) {
            self.pending.lock().expect("pending lock").remove(&id);
            let reason = match outcome {
                Err(RpcError::Timeout(_)) => "timed out in Switchboard",
                _ => "cancelled by the client",
            };
            let _ = self
                .notify(
                    "notifications/cancelled",
                    json!({"requestId": id, "reason": reason}),
                )
                .await;
        }
        outcome
    }

    fn on_garbage(&self, raw: &[u8]) {
        let n = self.garbage.fetch_add(1, Ordering::Relaxed) + 1;
        let shown: String = String::from_utf8_lossy(raw).chars().take(120).collect();
        if n.is_power_of_two() {
            tracing::warn!(server = %self.server, lines = n, %shown,
                "server sent something other than JSON-RPC; ignored");
        }
    }

    fn on_message(&self, msg: Value, raw: &[u8]) {
        if !msg.is_object() {
            return self.on_garbage(raw);
        }
        let method = msg.get("method").and_then(Value::as_str);
        match (method, msg.get("id")) {
            (Some(method), None) => self.on_notification(method, &msg),
            (Some(method), Some(id)) => {
                // A request from the server. We offer no client capabilities, so only ping.
                let reply = if method == "ping" {
                    json!({"jsonrpc": "2.0", "id": id, "result": {}})
                } else {
                    json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601,
                        "message": format!("Switchboard does not support {method:?} from servers")}})
                };
                let bytes = serde_json::to_vec(&reply).expect("JSON values serialize");
                let _ = self.out.try_send(Outgoing::Message(bytes));
            }
            (None, Some(id)) => {
                let Some(id) = id.as_u64() else {
                    tracing::warn!(server = %self.server, %id, "response with an id we never sent");
                    return;
                };
                let Some(waiter) = self.pending.lock().expect("pending lock").remove(&id) else {
                    return; // cancelled or timed out already
                };
                let result = match (msg.get("result"), msg.get("error")) {
                    (Some(r), _) => Ok(r.clone()),
                    (None, Some(e)) => Err(RpcError::Remote {
                        code: e.get("code").and_then(Value::as_i64).unwrap_or(-32603),
                        message: e
                            .get("message")
                            .and_then(Value::as_str)
                            .unwrap_or("error without a message")
                            .to_owned(),
                        data: e.get("data").cloned(),
                    }),
                    (None, None) => Err(RpcError::Remote {
                        code: -32603,
                        message: "the server answered with neither result nor error".into(),
                        data: None,
                    }),
                };
                let _ = waiter.send(result);
            }
            (None, None) => {
                self.garbage.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn on_notification(&self, method: &str, msg: &Value) {
        let notices = &self.notices;
        let params = msg.get("params").cloned().unwrap_or(Value::Null);
        match method {
            "notifications/progress" => {
                let token = match params.get("progressToken") {
                    Some(Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                    None => return,
                };
                let sink = self
                    .progress
                    .lock()
                    .expect("progress lock")
                    .get(&token)
                    .cloned();
                if let (Some(sink), Some(progress)) =
                    (sink, params.get("progress").and_then(Value::as_f64))
                {
                    sink(Progress {
                        progress,
                        total: params.get("total").and_then(Value::as_f64),
                        message: params
                            .get("message")
                            .and_then(Value::as_str)
                            .map(str::to_owned),
                    });
                }
            }
            "notifications/tools/list_changed" => {
                let _ = notices.send(ServerNotice::ToolsChanged);
            }
            "notifications/resources/list_changed" => {
                let _ = notices.send(ServerNotice::ResourcesChanged);
            }
            "notifications/prompts/list_changed" => {
                let _ = notices.send(ServerNotice::PromptsChanged);
            }
            "notifications/message" => {
                tracing::info!(server = %self.server, log = %params, "server log");
            }
            _ => tracing::debug!(server = %self.server, %method, "notification ignored"),
        }
    }
}

async fn write_loop(
    mut stdin: ChildStdin,
    mut rx: mpsc::Receiver<Outgoing>,
    closed: CancellationToken,
) {
    let mut buf = Vec::new();
    loop {
        let first = tokio::select! {
            m = rx.recv() => m,
            () = closed.cancelled() => None,
        };
        let Some(first) = first else { break };
        buf.clear();
        let mut close = false;
        for msg in std::iter::once(first).chain(std::iter::from_fn(|| rx.try_recv().ok())) {
            match msg {
                Outgoing::Message(line) => {
                    buf.extend_from_slice(&line);
                    buf.push(b'\n');
                }
                Outgoing::CloseStdin => {
                    close = true;
                    break;
                }
            }
        }
        if !buf.is_empty() && (stdin.write_all(&buf).await.is_err() || stdin.flush().await.is_err())
        {
            break;
        }
        if close {
            break;
        }
    }
    let _ = stdin.shutdown().await;
}

async fn read_loop(conn: Arc<Connection>, stdout: ChildStdout) {
    let mut reader = BufReader::with_capacity(64 * 1024, stdout);
    let mut line = Vec::with_capacity(4096);
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let trimmed = line.trim_ascii();
                if !trimmed.is_empty() {
                    conn.receive(trimmed);
                }
            }
        }
    }
    conn.mark_closed();
}
