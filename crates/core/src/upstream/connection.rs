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
//!
//! A connection's [`closed`](Connection::closed) token is a child of its upstream's shutdown
//! token: the transport tasks that watch it stop when the connection ends or the gateway
//! stops, whichever comes first. Whether the connection really *ended* is
//! [`is_closed`](Connection::is_closed), set only by [`mark_closed`](Connection::mark_closed)
//! (a polite stop still runs after shutdown began). The tasks of a stdio connection run on the
//! gateway's [`TaskTracker`].

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
#[cfg(not(unix))]
use tokio::io::AsyncWriteExt;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{ChildStdin, ChildStdout};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::notice::{ListChanged, NoticeSender};

#[cfg(unix)]
mod pipe;

/// A JSON-RPC error answer to the server's request `id`.
fn error_reply(id: &RawValue, code: i64, message: String) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

/// A request's entry in [`Connection::asks`], removed when the request ends however it ends.
struct Asking<'a> {
    conn: &'a Connection,
    id: u64,
}

impl Drop for Asking<'_> {
    fn drop(&mut self) {
        self.conn.asks.lock().expect("asks lock").remove(&self.id);
    }
}

/// A progress notification, as the server sent it (minus its token).
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub progress: f64,
    pub total: Option<f64>,
    pub message: Option<String>,
}

impl Progress {
    /// The report as JSON fields under the token `token` named `token_key` (`progressToken` in
    /// `notifications/progress`, `token` in a watcher's frame); `extra` room for more.
    pub(crate) fn fields(
        &self,
        token_key: &str,
        token: &serde_json::Value,
        extra: usize,
    ) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::with_capacity(4 + extra);
        m.insert(token_key.into(), token.clone());
        m.insert("progress".into(), self.progress.into());
        if let Some(total) = self.total {
            m.insert("total".into(), total.into());
        }
        if let Some(message) = &self.message {
            m.insert("message".into(), message.as_str().into());
        }
        m
    }
}

/// Where progress for one upstream request goes.
pub type ProgressSink = Arc<dyn Fn(Progress) + Send + Sync>;

/// A request a server sent to the client it is working for (`elicitation/create`,
/// `sampling/createMessage`, `roots/list`, …): the client's answer (a result, or an error as
/// JSON-RPC `code`, `message`, `data`) goes to `reply`, and from there to the server under its
/// own id.
#[derive(Debug)]
pub(crate) struct ServerAsk {
    /// The server asking.
    pub server: String,
    pub method: String,
    pub params: Option<Value>,
    pub reply: oneshot::Sender<Result<Value, RpcError>>,
    /// Cancelled when the server no longer waits for the answer (it cancelled its request
    /// with `notifications/cancelled`, or the request ended otherwise): a client still asked
    /// is told so, under the id it saw.
    pub cancelled: CancellationToken,
    /// The server is an isolated instance, so the request is its session's whatever the call
    /// it came during: the call's end does not call it off (it is answered, or ends with the
    /// server's own bound on it).
    pub outlives_call: bool,
}

/// Where the server requests of one call go: the client session it belongs to (requests
/// are routed to a session, never guessed between two) and a bounded queue the call's own
/// task answers from.
#[derive(Debug, Clone)]
pub(crate) struct ClientAsks {
    pub session: String,
    pub tx: mpsc::Sender<ServerAsk>,
}

/// A notification a server sent for the clients (log messages, list changes they must hear).
#[derive(Debug, Clone)]
pub(crate) enum ServerNote {
    /// `notifications/message`, its params as sent.
    Log(Value),
    ResourcesChanged,
    PromptsChanged,
    /// `notifications/resources/updated`, its params as sent.
    ResourceUpdated(Value),
}

/// What is told a server's [`ServerNote`]s.
pub(crate) type NoteFn = Arc<dyn Fn(ServerNote) + Send + Sync>;

/// Where a server's [`ServerNote`]s go (the gateway's sessions): shared by the upstream and
/// each of its connections, set once, read on each note.
#[derive(Clone, Default)]
pub(crate) struct NoteSink(Arc<std::sync::OnceLock<NoteFn>>);

impl NoteSink {
    pub(crate) fn set(&self, tell: NoteFn) {
        let _ = self.0.set(tell);
    }

    fn get(&self) -> Option<&NoteFn> {
        self.0.get()
    }
}

impl std::fmt::Debug for NoteSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "NoteSink(set)"
        } else {
            "NoteSink(unset)"
        })
    }
}

/// Server requests to clients answered at once per connection; one more is refused.
const ASKS_AT_ONCE: usize = 16;

/// How long a server request waits for the client's answer (a person may be filling in a
/// form); then the server gets an error. The call it came with ends it sooner.
const ASK_TIMEOUT: Duration = Duration::from_secs(600);
/// The largest `params` of a request a server sends a client (JSON text): elicitations,
/// sampling and roots are small; a larger one is refused before it reaches a client (whose
/// transport may well close on it: `/ws` closes on messages over its cap).
const ASK_MAX_BYTES: usize = 1024 * 1024;

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

enum Outgoing {
    /// One serialized JSON-RPC message, without a line end.
    Message(Vec<u8>),
    /// The polite end: close the child's stdin, or end the remote session.
    CloseStdin,
}

/// The messages a network transport must deliver to the server, in order.
#[derive(Debug)]
pub(crate) struct Outbox {
    rx: mpsc::Receiver<Outgoing>,
    closed: CancellationToken,
}

impl Outbox {
    /// The next message to send; `None` when the connection is being closed (politely, by
    /// [`Connection::close_stdin`], or because it is gone).
    pub(crate) async fn next(&mut self) -> Option<Vec<u8>> {
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

/// A result as the server wrote it: parsed only by whoever needs more than to pass it on.
type Waiter = oneshot::Sender<Result<Box<RawValue>, RpcError>>;

/// Handle to a running connection; shared by every caller of that server generation.
pub struct Connection {
    server: String,
    out: Sink,
    pending: Mutex<HashMap<u64, Waiter>>,
    progress: Mutex<HashMap<String, ProgressSink>>,
    /// The client sessions behind requests in flight, by our request id: where a request the
    /// server sends meanwhile goes (see [`Connection::on_server_request`]).
    asks: Mutex<HashMap<u64, ClientAsks>>,
    /// Server requests waiting for a client's answer now.
    asking: Arc<std::sync::atomic::AtomicUsize>,
    /// Those requests' cancellation, by the server's id for them (as JSON text): its
    /// `notifications/cancelled` ends the wait. At most [`ASKS_AT_ONCE`] entries.
    waiting: Arc<Mutex<HashMap<String, CancellationToken>>>,
    /// An isolated instance's session: where the server's requests go when no call of it is
    /// in flight (see [`on_server_request`](Self::on_server_request)).
    owner: std::sync::OnceLock<ClientAsks>,
    /// The sessions this server has asked for their roots: they tell it when their roots
    /// change. One entry per live session at most (forgotten when it ends).
    roots_asked: Mutex<HashSet<String>>,
    /// Where notifications for the clients go, once the upstream has been told.
    notes: std::sync::OnceLock<NoteSink>,
    next_id: AtomicU64,
    /// Cancelled when the connection ends (stdout ends, the link is lost or stopped) or when
    /// the upstream's shutdown token is (a child of it): what transport tasks stop on.
    closed: CancellationToken,
    /// Set (with `closed`) only when the connection ended: checked on every call without
    /// taking the token's lock, which every caller of this server shares.
    is_closed: std::sync::atomic::AtomicBool,
    /// Woken by [`mark_closed`](Self::mark_closed): the stdout reader stops then even if a
    /// grandchild keeps the pipe open (it outlives shutdown's start to read late answers).
    ended: Notify,
    /// Lines on stdout (or messages) that were not JSON-RPC.
    garbage: AtomicU64,
    /// Where list-changed notifications go (the supervisor); never waits (see `notice`).
    notices: NoticeSender,
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

/// Where outgoing messages go.
#[derive(Clone)]
enum Sink {
    /// To whoever drains the [`Outbox`] (a network transport, or the stdin writer task).
    Channel(mpsc::Sender<Outgoing>),
    /// Straight into the child's stdin (see [`pipe`]).
    #[cfg(unix)]
    Pipe(Arc<pipe::PipeOut>),
}

impl Sink {
    /// Sends one message, waiting while the queue is full; `false` once the sink is closed.
    async fn send(&self, mut msg: Vec<u8>) -> bool {
        match self {
            Self::Channel(tx) => tx.send(Outgoing::Message(msg)).await.is_ok(),
            #[cfg(unix)]
            Self::Pipe(p) => {
                msg.push(b'\n');
                p.send(&msg).await
            }
        }
    }

    /// Sends one message if there is room now; when the queue is full it is dropped (only
    /// cancellation notices and ping answers go this way: a server copes without them).
    fn try_send(&self, mut msg: Vec<u8>) {
        match self {
            Self::Channel(tx) => {
                let _ = tx.try_send(Outgoing::Message(msg));
            }
            #[cfg(unix)]
            Self::Pipe(p) => {
                msg.push(b'\n');
                let _ = p.offer(&msg);
            }
        }
    }

    fn close(&self) {
        match self {
            Self::Channel(tx) => {
                let _ = tx.try_send(Outgoing::CloseStdin);
            }
            #[cfg(unix)]
            Self::Pipe(p) => p.close(),
        }
    }
}

impl Connection {
    /// Starts the reader and writer tasks for a freshly spawned child, on `tasks`; `stop` is
    /// the upstream's shutdown token.
    pub(crate) fn start(
        server: &str,
        stdin: ChildStdin,
        stdout: ChildStdout,
        notices: NoticeSender,
        stop: &CancellationToken,
        tasks: &TaskTracker,
    ) -> Arc<Self> {
        let closed = stop.child_token();
        // Writes go straight into the pipe where the platform lets us (no task hop per call);
        // otherwise through the writer task.
        #[cfg(unix)]
        let conn = match pipe::PipeOut::start(stdin, closed.clone(), tasks) {
            Ok(p) => Self::with_sink(server, notices, Sink::Pipe(p), closed),
            Err(e) => {
                tracing::warn!(server, error = %e, "cannot write to the child's stdin");
                let (tx, _) = mpsc::channel(1);
                Self::with_sink(server, notices, Sink::Channel(tx), closed)
            }
        };
        #[cfg(not(unix))]
        let conn = {
            let (tx, rx) = mpsc::channel(OUT_QUEUE);
            tasks.spawn(write_loop(stdin, rx, closed.clone()));
            Self::with_sink(server, notices, Sink::Channel(tx), closed)
        };
        tasks.spawn(read_loop(conn.clone(), stdout));
        conn
    }

    /// A connection whose transport is someone else's: it drains the [`Outbox`], hands every
    /// message from the server to [`Connection::receive`], and calls
    /// [`Connection::mark_closed`] when the link is gone. `stop` is the upstream's shutdown
    /// token.
    pub(crate) fn framed(
        server: &str,
        notices: NoticeSender,
        stop: &CancellationToken,
    ) -> (Arc<Self>, Outbox) {
        let (out, rx) = mpsc::channel(OUT_QUEUE);
        let closed = stop.child_token();
        let outbox = Outbox {
            rx,
            closed: closed.clone(),
        };
        let conn = Self::with_sink(server, notices, Sink::Channel(out), closed);
        (conn, outbox)
    }

    fn with_sink(
        server: &str,
        notices: NoticeSender,
        out: Sink,
        closed: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Self {
            server: server.to_owned(),
            out,
            pending: Mutex::new(HashMap::new()),
            progress: Mutex::new(HashMap::new()),
            asks: Mutex::new(HashMap::new()),
            asking: Arc::default(),
            waiting: Arc::default(),
            owner: std::sync::OnceLock::new(),
            roots_asked: Mutex::new(HashSet::new()),
            notes: std::sync::OnceLock::new(),
            next_id: AtomicU64::new(1),
            closed,
            is_closed: std::sync::atomic::AtomicBool::new(false),
            ended: Notify::new(),
            garbage: AtomicU64::new(0),
            notices,
        })
    }

    /// A message from the server: one JSON-RPC object (a batch array is taken apart). Read
    /// without building a tree: a result is handed on as the raw JSON text it came as.
    pub(crate) fn receive(&self, message: &[u8]) {
        match message.trim_ascii_start().first() {
            Some(b'{') => match serde_json::from_slice::<InMessage<'_>>(message) {
                Ok(msg) => self.on_message(msg),
                Err(_) => self.on_garbage(message),
            },
            Some(b'[') => match serde_json::from_slice::<Vec<&RawValue>>(message) {
                Ok(batch) => {
                    for raw in batch {
                        let bytes = raw.get().as_bytes();
                        match serde_json::from_str::<InMessage<'_>>(raw.get()) {
                            Ok(msg) if bytes.first() == Some(&b'{') => self.on_message(msg),
                            _ => self.on_garbage(bytes),
                        }
                    }
                }
                Err(_) => self.on_garbage(message),
            },
            _ => self.on_garbage(message),
        }
    }

    /// Whether request `id` still has a caller waiting for its answer (a transport stops
    /// reading a response stream nobody waits for).
    pub(crate) fn awaits(&self, id: u64) -> bool {
        self.pending.lock().expect("pending lock").contains_key(&id)
    }

    /// Cancelled when the connection ended or the gateway is stopping (see the module docs).
    pub(crate) fn closed(&self) -> &CancellationToken {
        &self.closed
    }

    /// Whether the connection has ended ([`mark_closed`](Self::mark_closed)).
    pub(crate) fn is_closed(&self) -> bool {
        self.is_closed.load(Ordering::Acquire)
    }

    #[cfg(test)]
    pub(crate) fn garbage_lines(&self) -> u64 {
        self.garbage.load(Ordering::Relaxed)
    }

    /// Fails every waiting request with [`RpcError::Closed`]; later requests fail at once.
    pub(crate) fn mark_closed(&self) {
        self.is_closed.store(true, Ordering::Release);
        self.closed.cancel();
        self.ended.notify_waiters();
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

    pub(crate) fn close_stdin(&self) {
        self.out.close();
    }

    pub(crate) fn register_progress(&self, token: &str, sink: ProgressSink) {
        self.progress
            .lock()
            .expect("progress lock")
            .insert(token.to_owned(), sink);
    }

    pub(crate) fn unregister_progress(&self, token: &str) {
        self.progress.lock().expect("progress lock").remove(token);
    }

    /// Hands notifications for the clients to `notes` from now on.
    pub(crate) fn set_notes(&self, notes: NoteSink) {
        let _ = self.notes.set(notes);
    }

    /// Makes `asks` the session every request of this server goes to (an isolated instance's).
    pub(crate) fn set_owner(&self, asks: ClientAsks) {
        let _ = self.owner.set(asks);
    }

    /// Whether this server has asked `session` for its roots.
    pub(crate) fn asked_roots_of(&self, session: &str) -> bool {
        self.roots_asked
            .lock()
            .expect("roots lock")
            .contains(session)
    }

    /// Forgets `session` (it ended).
    pub(crate) fn forget_session(&self, session: &str) {
        self.roots_asked.lock().expect("roots lock").remove(session);
    }

    /// Sends a notification if the queue has room now, without waiting; `false` if it was
    /// dropped (the queue is full, or the connection is gone).
    pub(crate) fn offer_notification(&self, method: &str, params: Value) -> bool {
        if self.is_closed() {
            return false;
        }
        let msg = json!({"jsonrpc": "2.0", "method": method, "params": params});
        self.out
            .try_send(serde_json::to_vec(&msg).expect("JSON values serialize"));
        true
    }

    fn note(&self, note: ServerNote) {
        if let Some(tell) = self.notes.get().and_then(NoteSink::get) {
            tell(note);
        }
    }

    /// Requests waiting for their answer, and progress tokens registered: both empty once
    /// every call on this connection has ended.
    pub(crate) fn held(&self) -> (usize, usize) {
        (
            self.pending.lock().expect("pending lock").len()
                + self.asks.lock().expect("asks lock").len(),
            self.progress.lock().expect("progress lock").len(),
        )
    }

    async fn write(&self, msg: &(impl serde::Serialize + ?Sized)) -> Result<(), RpcError> {
        let mut bytes = Vec::with_capacity(256);
        serde_json::to_writer(&mut bytes, msg).expect("JSON values serialize");
        if self.out.send(bytes).await {
            Ok(())
        } else {
            Err(RpcError::Closed)
        }
    }

    /// Sends a notification.
    pub(crate) async fn notify(&self, method: &str, params: Value) -> Result<(), RpcError> {
        self.write(&json!({"jsonrpc": "2.0", "method": method, "params": params}))
            .await
    }

    /// Sends a request and waits for its result, at most `timeout`, until `cancel` fires, or
    /// until the process dies. A timed-out or cancelled request is cancelled upstream too.
    pub(crate) async fn request(
        &self,
        method: &str,
        params: Value,
        timeout: Duration,
        cancel: Option<&CancellationToken>,
    ) -> Result<Value, RpcError> {
        self.request_ref(method, &params, timeout, cancel).await
    }

    /// [`request`](Self::request) without taking `params` (a replay may send them again).
    pub(crate) async fn request_ref(
        &self,
        method: &str,
        params: &Value,
        timeout: Duration,
        cancel: Option<&CancellationToken>,
    ) -> Result<Value, RpcError> {
        let raw = self.request_raw(method, params, timeout, cancel).await?;
        // it was read as JSON already
        serde_json::from_str(raw.get()).map_err(|e| RpcError::Remote {
            code: -32603,
            message: format!("unreadable result: {e}"),
            data: None,
        })
    }

    /// [`request_ref`](Self::request_ref) with any serializable `params`, answering the result
    /// as the raw JSON text the server wrote.
    pub(crate) async fn request_raw<P: serde::Serialize + ?Sized>(
        &self,
        method: &str,
        params: &P,
        timeout: Duration,
        cancel: Option<&CancellationToken>,
    ) -> Result<Box<RawValue>, RpcError> {
        self.request_asking(method, params, timeout, cancel, None)
            .await
    }

    /// [`request_raw`](Self::request_raw) on behalf of a client session: requests the server
    /// sends while it runs go to `asks`.
    pub(crate) async fn request_asking<P: serde::Serialize + ?Sized>(
        &self,
        method: &str,
        params: &P,
        timeout: Duration,
        cancel: Option<&CancellationToken>,
        asks: Option<ClientAsks>,
    ) -> Result<Box<RawValue>, RpcError> {
        if self.is_closed() {
            return Err(RpcError::Closed);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().expect("pending lock").insert(id, tx);
        let _asking = asks.map(|a| {
            self.asks.lock().expect("asks lock").insert(id, a);
            Asking { conn: self, id }
        });
        let sent = self
            .write(&OutRequest {
                jsonrpc: "2.0",
                id,
                method,
                params,
            })
            .await;
        if let Err(e) = sent {
            self.pending.lock().expect("pending lock").remove(&id);
            return Err(e);
        }
        // Dropped before the answer (the caller's future was dropped: its client went away),
        // the request is cancelled upstream.
        let mut abandoned = Abandoned { conn: self, id };
        let outcome = match cancel {
            Some(cancel) => tokio::select! {
                biased;
                r = rx => r.unwrap_or(Err(RpcError::Closed)),
                () = cancel.cancelled() => Err(RpcError::Cancelled),
                () = tokio::time::sleep(timeout) => Err(RpcError::Timeout(timeout)),
            },
            None => tokio::select! {
                biased;
                r = rx => r.unwrap_or(Err(RpcError::Closed)),
                () = tokio::time::sleep(timeout) => Err(RpcError::Timeout(timeout)),
            },
        };
        abandoned.id = 0;
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

    /// Forgets request `id` and tells the server to stop it, without waiting.
    fn abandon(&self, id: u64) {
        if self
            .pending
            .lock()
            .expect("pending lock")
            .remove(&id)
            .is_none()
        {
            return; // answered meanwhile
        }
        let msg = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
            "params": {"requestId": id, "reason": "the client went away"}});
        let bytes = serde_json::to_vec(&msg).expect("JSON values serialize");
        self.out.try_send(bytes);
    }

    fn on_garbage(&self, raw: &[u8]) {
        let n = self.garbage.fetch_add(1, Ordering::Relaxed) + 1;
        let shown: String = String::from_utf8_lossy(raw).chars().take(120).collect();
        if n.is_power_of_two() {
            tracing::warn!(server = %self.server, lines = n, %shown,
                "server sent something other than JSON-RPC; ignored");
        }
    }

    /// A request from the server: `ping` is answered here; anything else goes to the one
    /// client session with requests in flight on this connection (the session the server is
    /// working for), or, on an isolated instance, to its own session whatever is in flight.
    /// Otherwise, with none or with several (a shared server cannot say whose it is), the
    /// server gets an error saying so: a request never reaches a client it may not be for.
    fn on_server_request(&self, method: &str, id: &RawValue, params: Option<&RawValue>) {
        let id: Box<RawValue> = id.to_owned();
        let reply = |msg: &Value| serde_json::to_vec(msg).expect("JSON values serialize");
        if method == "ping" {
            self.out
                .try_send(reply(&json!({"jsonrpc": "2.0", "id": id, "result": {}})));
            return;
        }
        // malformed or oversized: refused at once, naming why (nothing waits on it)
        let refused = match params {
            Some(p) if p.get().len() > ASK_MAX_BYTES => Some(format!(
                "the params of {method:?} are {} bytes, over the {ASK_MAX_BYTES}-byte limit for \
                 requests to clients",
                p.get().len()
            )),
            Some(p) if !p.get().trim_start().starts_with('{') => Some(format!(
                "the params of {method:?} must be an object, not {}",
                p.get().chars().take(40).collect::<String>()
            )),
            _ => None,
        };
        if let Some(message) = refused {
            tracing::warn!(server = %self.server, method, "{message}");
            self.out.try_send(reply(&error_reply(&id, -32602, message)));
            return;
        }
        let target = {
            let asks = self.asks.lock().expect("asks lock");
            let mut sessions: Vec<&ClientAsks> = Vec::new();
            for a in asks.values() {
                if !sessions.iter().any(|s| s.session == a.session) {
                    sessions.push(a);
                }
            }
            let in_flight = !self.pending.lock().expect("pending lock").is_empty();
            match (sessions.as_slice(), self.owner.get()) {
                ([one], _) => Ok((*one).clone()),
                (_, Some(owner)) => Ok(owner.clone()),
                (sessions, None) => match sessions {
                    [] if in_flight => Err((
                        -32601,
                        format!(
                            "the call in flight on '{}' came from a client that cannot be asked \
                         {method:?} (it declared no such capability, or its request has no \
                         stream to carry it)",
                            self.server
                        ),
                    )),
                    [] => Err((
                        -32603,
                        format!(
                            "no client call is in flight on '{}', so Switchboard cannot tell which \
                         client {method:?} is for",
                            self.server
                        ),
                    )),
                    many => Err((
                        -32603,
                        format!(
                            "{} client sessions have calls in flight on '{}', so Switchboard cannot \
                         tell which one {method:?} is for (sessions = \"isolated\" gives each \
                         client its own instance of this server)",
                            many.len(),
                            self.server
                        ),
                    )),
                },
            }
        };
        let target = match target {
            Ok(t) => t,
            Err((code, message)) => {
                tracing::warn!(server = %self.server, method, "{message}");
                self.out.try_send(reply(&error_reply(&id, code, message)));
                return;
            }
        };
        if self.asking.fetch_add(1, Ordering::Relaxed) >= ASKS_AT_ONCE {
            self.asking.fetch_sub(1, Ordering::Relaxed);
            let message = format!(
                "'{}' has {ASKS_AT_ONCE} requests waiting for the client already",
                self.server
            );
            self.out.try_send(reply(&error_reply(&id, -32603, message)));
            return;
        }
        if method == "roots/list" {
            self.roots_asked
                .lock()
                .expect("roots lock")
                .insert(target.session.clone());
        }
        let params = params.and_then(|p| serde_json::from_str(p.get()).ok());
        let (tx, rx) = oneshot::channel();
        let cancelled = CancellationToken::new();
        let key = id_key(id.get());
        self.waiting
            .lock()
            .expect("waiting lock")
            .insert(key.clone(), cancelled.clone());
        let ask = ServerAsk {
            server: self.server.clone(),
            method: method.to_owned(),
            params,
            reply: tx,
            cancelled: cancelled.clone(),
            outlives_call: self.owner.get().is_some(),
        };
        if target.tx.try_send(ask).is_err() {
            self.asking.fetch_sub(1, Ordering::Relaxed);
            self.waiting.lock().expect("waiting lock").remove(&key);
            let message = format!(
                "the client is not taking requests from '{}' now",
                self.server
            );
            self.out.try_send(reply(&error_reply(&id, -32603, message)));
            return;
        }
        let (out, asking, waiting, server, method, closed) = (
            self.out.clone(),
            self.asking.clone(),
            self.waiting.clone(),
            self.server.clone(),
            method.to_owned(),
            self.closed.clone(),
        );
        // Ends with the answer, the bound, the server's cancelling it (no answer then), or the
        // connection (whose token is a child of the gateway's shutdown): nothing outlives the
        // server it answers.
        tokio::spawn(async move {
            // however it ends, whoever asked the client stops waiting too (and tells it, if
            // its answer is still outstanding)
            let _done = cancelled.clone().drop_guard();
            let waited = tokio::select! {
                w = tokio::time::timeout(ASK_TIMEOUT, rx) => Some(w),
                () = closed.cancelled() => None,
                () = cancelled.cancelled() => None,
            };
            waiting.lock().expect("waiting lock").remove(&key);
            let Some(waited) = waited else {
                asking.fetch_sub(1, Ordering::Relaxed);
                return;
            };
            let answer = match waited {
                Ok(Ok(Ok(result))) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
                Ok(Ok(Err(RpcError::Remote {
                    code,
                    message,
                    data,
                }))) => {
                    let mut e = json!({"code": code, "message": message});
                    if let Some(data) = data {
                        e["data"] = data;
                    }
                    json!({"jsonrpc": "2.0", "id": id, "error": e})
                }
                Ok(Ok(Err(e))) => {
                    error_reply(&id, -32603, format!("the client did not answer: {e}"))
                }
                Ok(Err(_)) => error_reply(
                    &id,
                    -32603,
                    "the call this request came with has ended; the client was not asked \
                     or did not answer"
                        .to_owned(),
                ),
                Err(_) => error_reply(
                    &id,
                    -32603,
                    format!(
                        "the client did not answer {method:?} within {} s",
                        ASK_TIMEOUT.as_secs()
                    ),
                ),
            };
            asking.fetch_sub(1, Ordering::Relaxed);
            if !out.send(reply(&answer)).await {
                tracing::debug!(server, "server gone before its request was answered");
            }
        });
    }

    fn on_message(&self, msg: InMessage<'_>) {
        match (msg.method.as_deref(), msg.id) {
            (Some(method), None) => self.on_notification(method, msg.params),
            (Some(method), Some(id)) => self.on_server_request(method, id, msg.params),
            (None, Some(id)) => {
                // our ids are plain unsigned integers
                let Ok(id) = id.get().parse::<u64>() else {
                    tracing::warn!(server = %self.server, id = %id.get(),
                        "response with an id we never sent");
                    return;
                };
                let Some(waiter) = self.pending.lock().expect("pending lock").remove(&id) else {
                    return; // cancelled or timed out already
                };
                let result = match (msg.result, &msg.error) {
                    (Some(r), _) => Ok(r.to_owned()),
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

    fn on_notification(&self, method: &str, params: Option<&RawValue>) {
        let notices = &self.notices;
        let params: Value = params
            .and_then(|p| serde_json::from_str(p.get()).ok())
            .unwrap_or(Value::Null);
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
                notices.send(ListChanged::Tools);
            }
            "notifications/resources/list_changed" => {
                notices.send(ListChanged::Resources);
                self.note(ServerNote::ResourcesChanged);
            }
            "notifications/prompts/list_changed" => {
                notices.send(ListChanged::Prompts);
                self.note(ServerNote::PromptsChanged);
            }
            "notifications/resources/updated" => {
                self.note(ServerNote::ResourceUpdated(params));
            }
            "notifications/message" => {
                tracing::debug!(server = %self.server, log = %params, "server log");
                self.note(ServerNote::Log(params));
            }
            "notifications/cancelled" => {
                // the server gave up one of its requests to a client
                let Some(id) = params.get("requestId") else {
                    return;
                };
                let key = id_key(&id.to_string());
                if let Some(ct) = self.waiting.lock().expect("waiting lock").remove(&key) {
                    tracing::debug!(server = %self.server, %id, "server cancelled its request");
                    ct.cancel();
                }
            }
            _ => tracing::debug!(server = %self.server, %method, "notification ignored"),
        }
    }
}

/// A JSON-RPC id as a key that does not depend on how it was spaced (`"a"`, `7`).
fn id_key(id: &str) -> String {
    serde_json::from_str::<Value>(id).map_or_else(|_| id.to_owned(), |v| v.to_string())
}

/// A request as written to the server, serialized straight from borrowed parts.
#[derive(serde::Serialize)]
struct OutRequest<'a, P: serde::Serialize + ?Sized> {
    jsonrpc: &'static str,
    id: u64,
    method: &'a str,
    params: &'a P,
}

/// One message from the server, read in place: only what routing needs is looked at.
#[derive(Deserialize)]
struct InMessage<'a> {
    /// `Some` for `"id": null` too (that is not a notification).
    #[serde(default, borrow, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(default, borrow)]
    method: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    params: Option<&'a RawValue>,
    /// `Some` for `"result": null` too (a result, if not a useful one).
    #[serde(default, borrow, deserialize_with = "present")]
    result: Option<&'a RawValue>,
    #[serde(default)]
    error: Option<Value>,
}

/// Keeps a present `null` apart from a missing field.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&'de RawValue>::deserialize(d).map(Some)
}

/// Cancels a request whose caller stopped waiting (ids start at 1; 0 = disarmed).
struct Abandoned<'a> {
    conn: &'a Connection,
    id: u64,
}

impl Drop for Abandoned<'_> {
    fn drop(&mut self) {
        if self.id != 0 {
            self.conn.abandon(self.id);
        }
    }
}

#[cfg(not(unix))]
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

/// Reads the child's stdout until it ends, or until the connection was marked closed (after a
/// stop, a grandchild may still hold the pipe open).
async fn read_loop(conn: Arc<Connection>, stdout: ChildStdout) {
    let mut reader = BufReader::with_capacity(64 * 1024, stdout);
    let mut line = Vec::with_capacity(4096);
    let ended = conn.ended.notified();
    tokio::pin!(ended);
    ended.as_mut().enable();
    if conn.is_closed() {
        return;
    }
    loop {
        line.clear();
        let read = tokio::select! {
            biased;
            r = reader.read_until(b'\n', &mut line) => r,
            () = ended.as_mut() => return,
        };
        match read {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A framed connection, a request sent on it, and the id it went out with.
    async fn asked(
        conn: &Arc<Connection>,
        outbox: &mut Outbox,
    ) -> (
        tokio::task::JoinHandle<Result<Box<RawValue>, RpcError>>,
        u64,
    ) {
        let c = conn.clone();
        let call = tokio::spawn(async move {
            c.request_raw(
                "tools/call",
                &json!({"name": "echo"}),
                Duration::from_secs(5),
                None,
            )
            .await
        });
        let sent = tokio::time::timeout(Duration::from_secs(5), outbox.next())
            .await
            .unwrap()
            .unwrap();
        let sent: Value = serde_json::from_slice(&sent).unwrap();
        assert_eq!(sent["params"], json!({"name": "echo"}));
        (call, sent["id"].as_u64().unwrap())
    }

    async fn answer(reply: impl FnOnce(u64) -> String) -> Result<Box<RawValue>, RpcError> {
        let (tx, _rx) = super::super::notice::channel();
        let (conn, mut outbox) = Connection::framed("t", tx, &CancellationToken::new());
        let (call, id) = asked(&conn, &mut outbox).await;
        conn.receive(reply(id).as_bytes());
        tokio::time::timeout(Duration::from_secs(5), call)
            .await
            .unwrap()
            .unwrap()
    }

    #[tokio::test]
    async fn results_come_back_as_the_exact_text_the_server_wrote() {
        let result = r#"{"content":[{"type":"text","text":"h\u00e9 \"q\" ☃ \n"}], "n": 1.50}"#;
        let got = answer(|id| format!(r#"  {{"jsonrpc":"2.0","id":{id},"result":{result}}}"#))
            .await
            .unwrap();
        assert_eq!(got.get(), result);
        let null = answer(|id| format!(r#"{{"jsonrpc":"2.0","result":null,"id":{id}}}"#))
            .await
            .unwrap();
        assert_eq!(null.get(), "null", "a null result is a result");
    }

    #[tokio::test]
    async fn errors_and_empty_answers_from_the_server() {
        let e = answer(|id| {
            format!(
                r#"{{"jsonrpc":"2.0","id":{id},"error":{{"code":-32602,"message":"bad \"x\"","data":{{"k":[1]}}}}}}"#
            )
        })
        .await
        .unwrap_err();
        let RpcError::Remote {
            code,
            message,
            data,
        } = e
        else {
            panic!("{e:?}")
        };
        assert_eq!((code, message.as_str()), (-32602, "bad \"x\""));
        assert_eq!(data, Some(json!({"k": [1]})));
        let e = answer(|id| format!(r#"{{"jsonrpc":"2.0","id":{id}}}"#))
            .await
            .unwrap_err();
        assert!(matches!(e, RpcError::Remote { code: -32603, .. }), "{e:?}");
    }

    #[tokio::test]
    async fn batches_garbage_and_foreign_ids() {
        let (tx, _rx) = super::super::notice::channel();
        let (conn, mut outbox) = Connection::framed("t", tx, &CancellationToken::new());
        let (call, id) = asked(&conn, &mut outbox).await;
        // not ours: a string id, an id we never sent, not JSON-RPC at all
        conn.receive(format!(r#"{{"jsonrpc":"2.0","id":"{id}","result":1}}"#).as_bytes());
        conn.receive(br#"{"jsonrpc":"2.0","id":999999,"result":1}"#);
        conn.receive(b"garbage");
        conn.receive(b"[1, \"two\"]");
        conn.receive(b"42");
        assert_eq!(conn.garbage_lines(), 4);
        assert!(conn.awaits(id), "still waiting for its own answer");
        // a batch: a notification and our answer
        conn.receive(
            format!(
                r#"[{{"jsonrpc":"2.0","method":"notifications/message","params":{{}}}},
                    {{"jsonrpc":"2.0","id":{id},"result":{{"ok":true}}}}]"#
            )
            .as_bytes(),
        );
        let got = tokio::time::timeout(Duration::from_secs(5), call)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(got.get(), r#"{"ok":true}"#);
    }

    #[tokio::test]
    async fn progress_reaches_the_sink_of_its_token_and_pings_are_answered() {
        let (tx, _rx) = super::super::notice::channel();
        let (conn, mut outbox) = Connection::framed("t", tx, &CancellationToken::new());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        conn.register_progress("sb-t-1", Arc::new(move |p| s.lock().unwrap().push(p)));
        conn.receive(
            br#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"sb-t-1","progress":2,"total":4,"message":"half \u00e9"}}"#,
        );
        conn.receive(br#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"other","progress":1}}"#);
        assert_eq!(
            *seen.lock().unwrap(),
            vec![Progress {
                progress: 2.0,
                total: Some(4.0),
                message: Some("half é".into()),
            }]
        );
        conn.receive(br#"{"jsonrpc":"2.0","id":"p-1","method":"ping"}"#);
        let pong = outbox.next().await.unwrap();
        let pong: Value = serde_json::from_slice(&pong).unwrap();
        assert_eq!(pong, json!({"jsonrpc": "2.0", "id": "p-1", "result": {}}));
    }
}
