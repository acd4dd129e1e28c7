//! MCP sessions (HTTP and WebSocket) and their progress streams.
//!
//! Every session has an id, belongs to one paired client and carries a bounded broadcast of
//! JSON frames: one per progress report of any call made in it, plus call started/finished
//! frames. Watchers (`GET /session/<id>/events`, `GET /ws/mcp/events?session_id=`) subscribe
//! to it; one that falls behind loses its oldest frames, the call never waits for it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::events::{EventBus, HubEvent};
use crate::upstream::{ClientAsks, RpcError, ServerNote, SessionLink};

/// Frames a watcher may fall behind before it loses the oldest.
const FRAMES: usize = 1024;

/// Messages for a Streamable HTTP session's `GET` stream (notifications, servers' requests
/// outside calls) kept while no such stream is open; beyond this the oldest is lost.
const OUTBOX: usize = 64;
/// Messages waiting on an open `GET` stream for a client that is slow to read; beyond this
/// notifications are lost (a request is answered with an error by its waiter's bound).
const OUTBOX_STREAM: usize = 256;
/// Servers' requests a session's client was sent over HTTP and has not answered yet; more
/// are refused (the server hears why).
pub(crate) const ASKED_MAX: usize = 16;

/// What waits for a Streamable HTTP session's `GET` stream, or goes to the open one.
#[derive(Debug, Default)]
struct Outbox {
    stream: Option<mpsc::Sender<Arc<str>>>,
    waiting: VecDeque<Arc<str>>,
}

/// A session's fast-path requests in flight, by id. Most clients send one request at a time:
/// that one is kept inline, so a session that has made calls keeps no table for them; the
/// table holds the others and is handed back once it empties.
#[derive(Debug, Default)]
struct Inflight {
    first: Option<(String, CancellationToken)>,
    rest: HashMap<String, CancellationToken>,
}

impl Inflight {
    /// Tracks `id` (a request reusing an id in flight replaces it, as a map's insert does).
    fn insert(&mut self, id: String, cancel: CancellationToken) {
        match &mut self.first {
            Some((first, ct)) if *first == id => *ct = cancel,
            Some(_) => {
                self.rest.insert(id, cancel);
            }
            None => self.first = Some((id, cancel)),
        }
    }

    fn remove(&mut self, id: &str) {
        if self.first.as_ref().is_some_and(|(first, _)| first == id) {
            self.first = None;
        } else if self.rest.remove(id).is_some() && self.rest.is_empty() {
            self.rest = HashMap::new();
        }
    }

    fn get(&self, id: &str) -> Option<&CancellationToken> {
        match &self.first {
            Some((first, ct)) if first == id => Some(ct),
            _ => self.rest.get(id),
        }
    }

    fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.len()
    }

    fn is_empty(&self) -> bool {
        self.first.is_none() && self.rest.is_empty()
    }

    fn values(&self) -> impl Iterator<Item = &CancellationToken> {
        self.first
            .iter()
            .map(|(_, ct)| ct)
            .chain(self.rest.values())
    }
}

/// What few sessions use, allocated when one first does (most sessions never do): a watch
/// token, a server's own endpoint, resource subscriptions, servers' requests waiting for the
/// client's answer over HTTP.
#[derive(Debug, Default)]
struct Extras {
    /// `sha256` of the watch token handed out by `POST /session`.
    token_hash: Option<[u8; 32]>,
    /// The server whose own endpoint (`/mcp/<server>`, `/ws/<server>`) it was opened at, set
    /// once as it opens: it serves there only. Unset: the aggregated `/mcp` and `/ws`.
    endpoint: OnceLock<String>,
    /// The resource URIs it subscribed to (`resources/subscribe`), with the server each
    /// subscription was sent to (told `resources/unsubscribe` when the session ends).
    subscriptions: Mutex<HashMap<String, String>>,
    /// HTTP: servers' requests sent to its client, by the id they were sent under, waiting
    /// for the answer it POSTs.
    asked: Mutex<HashMap<String, oneshot::Sender<Answer>>>,
    next_ask: AtomicU64,
}

/// The answer a server waits for from a session's client, as it comes back (a POSTed result
/// or error).
pub(crate) type Answer = Result<Value, RpcError>;

/// A notification for a session's client, sent by whatever carries the session.
#[derive(Debug, Clone)]
pub(crate) enum Note {
    /// `notifications/tools/list_changed`.
    ToolsChanged,
    /// `notifications/resources/list_changed`.
    ResourcesChanged,
    /// `notifications/prompts/list_changed`.
    PromptsChanged,
    /// `notifications/message`: the params as the server sent them (sessions of the aggregated
    /// endpoints hear `logger` as `<server>[/<logger>]`, see [`Sessions::tell_from`]).
    Log(Value),
    /// `notifications/resources/updated`: the params (its `uri`), for the sessions subscribed.
    ResourceUpdated(Value),
}

impl Note {
    /// The notification as JSON-RPC `(method, params)`.
    pub(crate) fn method(&self) -> &'static str {
        match self {
            Self::ToolsChanged => "notifications/tools/list_changed",
            Self::ResourcesChanged => "notifications/resources/list_changed",
            Self::PromptsChanged => "notifications/prompts/list_changed",
            Self::Log(_) => "notifications/message",
            Self::ResourceUpdated(_) => "notifications/resources/updated",
        }
    }

    pub(crate) fn params(&self) -> Option<&Value> {
        match self {
            Self::Log(p) | Self::ResourceUpdated(p) => Some(p),
            _ => None,
        }
    }

    /// `server`'s notification as its clients hear it: a log message's logger names the
    /// server (`server/logger`), as the aggregated endpoint needs.
    /// A server's note as it sent it (the per-server endpoints' sessions hear it so; see
    /// [`Sessions::tell_from`] for the aggregated ones).
    pub(crate) fn raw(note: ServerNote) -> Self {
        match note {
            ServerNote::ResourcesChanged => Self::ResourcesChanged,
            ServerNote::PromptsChanged => Self::PromptsChanged,
            ServerNote::ResourceUpdated(params) => Self::ResourceUpdated(params),
            ServerNote::Log(params) => Self::Log(params),
        }
    }

    pub(crate) fn from_server(server: &str, note: ServerNote) -> Self {
        match note {
            ServerNote::ResourcesChanged => Self::ResourcesChanged,
            ServerNote::PromptsChanged => Self::PromptsChanged,
            ServerNote::ResourceUpdated(params) => Self::ResourceUpdated(params),
            ServerNote::Log(mut params) => {
                let logger = match params.get("logger").and_then(Value::as_str) {
                    Some(l) => format!("{server}/{l}"),
                    None => server.to_owned(),
                };
                if let Some(p) = params.as_object_mut() {
                    p.insert("logger".into(), Value::String(logger));
                }
                Self::Log(params)
            }
        }
    }
}

/// Tells a session's client a [`Note`]; answers `false` once its client is gone.
pub(crate) struct ToolListener(pub(crate) Box<dyn Fn(&Note) -> bool + Send + Sync>);

impl std::fmt::Debug for ToolListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ToolListener")
    }
}

/// Log levels, lowest first (RFC 5424 names, as MCP uses them).
const LEVELS: [&str; 8] = [
    "debug",
    "info",
    "notice",
    "warning",
    "error",
    "critical",
    "alert",
    "emergency",
];

/// A level's rank in [`LEVELS`]; `None` for a name that is not one.
pub(crate) fn level_rank(level: &str) -> Option<usize> {
    LEVELS.iter().position(|l| *l == level)
}

/// One MCP session.
#[derive(Debug)]
pub(crate) struct Session {
    pub id: String,
    /// The paired client that owns it.
    pub client: String,
    /// `http` or `ws`.
    pub transport: &'static str,
    /// What few sessions use (see [`Extras`]): made when first needed.
    extras: OnceLock<Box<Extras>>,
    /// Progress and call frames, serialized once, shared by every watcher. Made when the first
    /// watcher comes: the ring is allocated whole, and most sessions are never watched.
    frames: OnceLock<broadcast::Sender<Arc<str>>>,
    /// Cancelled when the session ends: its watchers' streams end too.
    pub closed: CancellationToken,
    /// `/mcp` requests of this session answered on the fast path, by id: its
    /// `notifications/cancelled` (which rmcp never sees the request of) cancels them here.
    inflight: Mutex<Inflight>,
    /// When a request last named this session (ms since [`epoch_ms`]).
    seen_ms: AtomicU64,
    /// Its responses still streaming (`GET` streams, SSE answers): see [`Session::stream`].
    streams: AtomicU32,
    /// Told when the tool list changes; dropped with the session.
    tools_changed: Mutex<Option<ToolListener>>,
    /// Its registry's count of session objects alive, less one when this one goes.
    alive: Arc<AtomicUsize>,
    /// The log level its client asked for (`logging/setLevel`), as one more than its rank in
    /// [`LEVELS`]: servers' log messages at or above it reach it; 0 (none) before it asks.
    log_level: AtomicU8,
    /// Where servers' requests to its client go outside any call of it (an isolated instance
    /// asking for roots as it starts): set by its transport once the client can be asked.
    asker: Mutex<Option<ClientAsks>>,
    /// Whether its client declared it may be asked things (elicitation, sampling, roots): its
    /// calls then need a stream the server's requests can ride, not the fast path's JSON.
    can_be_asked: std::sync::atomic::AtomicBool,
    /// HTTP: what its client declared in `initialize` (`/ws` keeps its own).
    caps: OnceLock<Value>,
    /// HTTP: what goes to its `GET` stream.
    outbox: Mutex<Outbox>,
}

/// Whether a client's `initialize` capabilities cover a server's request `method` (anything
/// but elicitation, sampling and roots is passed on as it is).
pub(crate) fn declares(caps: Option<&Value>, method: &str) -> bool {
    let needs = match method {
        "elicitation/create" => "elicitation",
        "sampling/createMessage" => "sampling",
        "roots/list" => "roots",
        _ => return true,
    };
    caps.and_then(|c| c.get(needs)).is_some()
}

/// A client's JSON-RPC error object (as text), answering a server's request, as an error for
/// that server.
pub(crate) fn client_error(error: &str) -> RpcError {
    let e: Value = serde_json::from_str(error).unwrap_or(Value::Null);
    RpcError::Remote {
        code: e.get("code").and_then(Value::as_i64).unwrap_or(-32603),
        message: e
            .get("message")
            .and_then(Value::as_str)
            .map_or_else(|| format!("the client answered: {error}"), str::to_owned),
        data: e.get("data").cloned(),
    }
}

/// The process-wide clock origin for [`Session::seen_ms`].
fn epoch_ms() -> u64 {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    EPOCH
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
}

impl Session {
    /// Sends a frame to every watcher; never waits, never fails.
    pub(crate) fn publish(&self, frame: &Value) {
        if let Some(frames) = self.frames.get()
            && frames.receiver_count() > 0
        {
            let _ = frames.send(Arc::from(frame.to_string()));
        }
    }

    /// The client asked for log messages at `rank` and above.
    pub(crate) fn set_log_level(&self, rank: usize) {
        let rank = u8::try_from(rank).unwrap_or(u8::MAX - 1);
        self.log_level.store(rank + 1, Ordering::Relaxed);
    }

    /// What few sessions use, made now if it was not.
    fn extras(&self) -> &Extras {
        self.extras.get_or_init(Box::default)
    }

    /// Subscribes to (or, `on` false, unsubscribes from) updates of `uri` on `server`.
    pub(crate) fn subscribe_resource(&self, uri: &str, server: &str, on: bool) {
        if !on && self.extras.get().is_none() {
            return;
        }
        let mut subs = self
            .extras()
            .subscriptions
            .lock()
            .expect("subscriptions lock");
        if on {
            subs.insert(uri.to_owned(), server.to_owned());
        } else {
            subs.remove(uri);
        }
    }

    fn subscribed(&self, uri: &str) -> bool {
        self.extras.get().is_some_and(|e| {
            e.subscriptions
                .lock()
                .expect("subscriptions lock")
                .contains_key(uri)
        })
    }

    /// Its subscriptions, `(uri, server)`.
    pub(crate) fn subscriptions(&self) -> Vec<(String, String)> {
        self.extras.get().map_or_else(Vec::new, |e| {
            e.subscriptions
                .lock()
                .expect("subscriptions lock")
                .iter()
                .map(|(u, s)| (u.clone(), s.clone()))
                .collect()
        })
    }

    /// Servers' requests outside calls go to `asks` from now on.
    pub(crate) fn set_asker(&self, asks: ClientAsks) {
        *self.asker.lock().expect("asker lock") = Some(asks);
    }

    /// What an isolated instance of `server` started for this session is told of it: where
    /// its requests go, and that its notifications are this session's only.
    pub(crate) fn link(self: &Arc<Self>, server: &str) -> SessionLink {
        let session = Arc::downgrade(self);
        let server = server.to_owned();
        SessionLink {
            asks: self.asker.lock().expect("asker lock").clone(),
            notes: Arc::new(move |note| {
                if let Some(s) = session.upgrade() {
                    // its own endpoint's session hears the server's own logger names
                    let note = if s.server().is_some() {
                        Note::raw(note)
                    } else {
                        Note::from_server(&server, note)
                    };
                    s.tell(&note);
                }
            }),
        }
    }

    /// Whether the client asked for log messages at the level of `params`.
    fn wants_log(&self, params: &Value) -> bool {
        let rank = params
            .get("level")
            .and_then(Value::as_str)
            .and_then(level_rank)
            .unwrap_or(0);
        let asked = usize::from(self.log_level.load(Ordering::Relaxed));
        asked != 0 && rank + 1 >= asked
    }

    /// Tells this session's client `note` if it is for it: a log message at or above the
    /// level it asked for, an update of a resource it subscribed to, anything else.
    pub(crate) fn tell(&self, note: &Note) {
        match note {
            Note::ResourceUpdated(p)
                if !self.subscribed(p.get("uri").and_then(Value::as_str).unwrap_or("")) =>
            {
                return;
            }
            Note::Log(p) if !self.wants_log(p) => return,
            _ => {}
        }
        let mut tell = self.tools_changed.lock().expect("listener lock");
        if tell.as_ref().is_some_and(|t| !(t.0)(note)) {
            tell.take();
        }
    }

    /// Notes whether the client declared elicitation, sampling or roots in `initialize`.
    pub(crate) fn set_can_be_asked(&self, yes: bool) {
        self.can_be_asked.store(yes, Ordering::Relaxed);
    }

    pub(crate) fn can_be_asked(&self) -> bool {
        self.can_be_asked.load(Ordering::Relaxed)
    }

    /// Binds a session just opened to `server`'s own endpoint (see [`Session::server`]).
    pub(crate) fn bind(&self, server: &str) {
        let _ = self.extras().endpoint.set(server.to_owned());
    }

    /// The server whose own endpoint the session belongs to; `None`: the aggregated one.
    pub(crate) fn server(&self) -> Option<&str> {
        self.extras
            .get()
            .and_then(|e| e.endpoint.get())
            .map(String::as_str)
    }

    /// The endpoint's path on HTTP (`/mcp` or `/mcp/<server>`), for messages and the
    /// dashboard.
    pub(crate) fn endpoint(&self) -> String {
        match self.server() {
            Some(server) => format!("/mcp/{server}"),
            None => "/mcp".to_owned(),
        }
    }

    /// A request named this session: its idle time starts again.
    pub(crate) fn touch(&self) {
        self.seen_ms.store(epoch_ms(), Ordering::Relaxed);
    }

    /// Counts a response of this session as streaming until the guard drops: a session with
    /// an open stream is not idle, however long nothing is sent on it.
    pub(crate) fn stream(self: &Arc<Self>) -> Streaming {
        self.streams.fetch_add(1, Ordering::Relaxed);
        Streaming(self.clone())
    }

    /// How long (ms, at `now`) the session has had no request, no open stream, no watcher
    /// and no call running; `None` while it has any of them.
    fn idle_ms(&self, now: u64) -> Option<u64> {
        let busy = self.streams.load(Ordering::Relaxed) > 0
            || self.watchers() > 0
            || !self.inflight.lock().expect("inflight lock").is_empty();
        (!busy).then(|| now.saturating_sub(self.seen_ms.load(Ordering::Relaxed)))
    }

    /// Tells `tell` of tool list changes while the session lives (replacing any earlier one).
    pub(crate) fn on_tools_changed(&self, tell: ToolListener) {
        *self.tools_changed.lock().expect("listener lock") = Some(tell);
    }

    /// Forgets the tool list listener (its socket ended; the session goes on).
    pub(crate) fn forget_tools_listener(&self) {
        self.tools_changed.lock().expect("listener lock").take();
    }

    /// Tracks a fast-path request until the returned guard drops.
    pub(crate) fn track(self: &Arc<Self>, id: String, cancel: CancellationToken) -> Tracked {
        self.inflight
            .lock()
            .expect("inflight lock")
            .insert(id.clone(), cancel);
        Tracked {
            session: self.clone(),
            id,
        }
    }

    /// Cancels the fast-path request `id`, if it is running; `false` if not.
    pub(crate) fn cancel(&self, id: &str) -> bool {
        match self.inflight.lock().expect("inflight lock").get(id) {
            Some(ct) => {
                ct.cancel();
                true
            }
            None => false,
        }
    }

    /// HTTP: what the client declared in `initialize` (also whether it can be asked things).
    pub(crate) fn set_caps(&self, caps: Value) {
        let asks = ["elicitation", "sampling", "roots"]
            .iter()
            .any(|k| caps.get(k).is_some());
        self.set_can_be_asked(asks);
        let _ = self.caps.set(caps);
    }

    /// Whether the client declared the capability a server's request `method` needs (see
    /// [`declares`]).
    pub(crate) fn declares(&self, method: &str) -> bool {
        declares(self.caps.get(), method)
    }

    /// HTTP: sends `frame` on the session's `GET` stream, or keeps it for the next one (at
    /// most [`OUTBOX`], the oldest lost first). `false`: it was lost (the stream is full).
    pub(crate) fn send_out(&self, frame: Arc<str>) -> bool {
        let mut out = self.outbox.lock().expect("outbox lock");
        if let Some(tx) = &out.stream {
            match tx.try_send(frame) {
                Ok(()) => return true,
                Err(mpsc::error::TrySendError::Full(_)) => return false,
                Err(mpsc::error::TrySendError::Closed(frame)) => {
                    out.stream = None;
                    return Self::keep(&mut out, frame);
                }
            }
        }
        Self::keep(&mut out, frame)
    }

    fn keep(out: &mut Outbox, frame: Arc<str>) -> bool {
        if out.waiting.len() >= OUTBOX {
            out.waiting.pop_front();
        }
        out.waiting.push_back(frame);
        true
    }

    /// HTTP: a `GET` stream opens: what waited for it first, then what comes. `None` while
    /// another is open (a session has one).
    pub(crate) fn listen(&self) -> Option<mpsc::Receiver<Arc<str>>> {
        let mut out = self.outbox.lock().expect("outbox lock");
        if out.stream.as_ref().is_some_and(|tx| !tx.is_closed()) {
            return None;
        }
        let (tx, rx) = mpsc::channel(OUTBOX_STREAM);
        for frame in out.waiting.drain(..) {
            let _ = tx.try_send(frame);
        }
        out.waiting = VecDeque::new();
        out.stream = Some(tx);
        Some(rx)
    }

    /// HTTP: a server's request is about to be sent to the client: the id to send it under,
    /// whose answer goes to `reply`. `None` when [`ASKED_MAX`] are waiting already.
    pub(crate) fn sent_ask(&self, reply: oneshot::Sender<Answer>) -> Option<String> {
        let extras = self.extras();
        let mut asked = extras.asked.lock().expect("asked lock");
        if asked.len() >= ASKED_MAX {
            return None;
        }
        let id = format!("sb-{}", extras.next_ask.fetch_add(1, Ordering::Relaxed) + 1);
        asked.insert(id.clone(), reply);
        Some(id)
    }

    /// HTTP: the client answered `id`; `false` if nothing waits for that id.
    pub(crate) fn answered(&self, id: &str, answer: Answer) -> bool {
        let reply = self
            .extras
            .get()
            .and_then(|e| e.asked.lock().expect("asked lock").remove(id));
        reply.is_some_and(|r| r.send(answer).is_ok())
    }

    /// HTTP: nothing waits for `id` any more; `true` if it was still unanswered.
    pub(crate) fn unask(&self, id: &str) -> bool {
        self.extras
            .get()
            .is_some_and(|e| e.asked.lock().expect("asked lock").remove(id).is_some())
    }

    /// The session ends: its requests in flight are cancelled, what waits for its client's
    /// answers hears it will not come, its `GET` stream ends.
    fn end(&self) {
        self.closed.cancel();
        for ct in self.inflight.lock().expect("inflight lock").values() {
            ct.cancel();
        }
        if let Some(e) = self.extras.get() {
            e.asked.lock().expect("asked lock").clear();
        }
        *self.outbox.lock().expect("outbox lock") = Outbox::default();
        self.tools_changed.lock().expect("listener lock").take();
    }

    pub(crate) fn watchers(&self) -> usize {
        self.frames
            .get()
            .map_or(0, broadcast::Sender::receiver_count)
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Arc<str>> {
        self.frames
            .get_or_init(|| broadcast::channel(FRAMES).0)
            .subscribe()
    }

    /// Whether `token` is this session's watch token (constant time).
    fn token_is(&self, token: &str) -> bool {
        let Some(hash) = self.extras.get().and_then(|e| e.token_hash.as_ref()) else {
            return false;
        };
        let given: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        given
            .iter()
            .zip(hash.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.alive.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response of a session still streaming; see [`Session::stream`].
#[derive(Debug)]
pub(crate) struct Streaming(Arc<Session>);

impl Drop for Streaming {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// A fast-path request in flight; forgotten when dropped.
#[derive(Debug)]
pub(crate) struct Tracked {
    session: Arc<Session>,
    id: String,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.session
            .inflight
            .lock()
            .expect("inflight lock")
            .remove(&self.id);
    }
}

/// A progress frame, exactly as watchers receive it.
pub(crate) fn progress_frame(token: &Value, p: &crate::upstream::Progress, tool: &str) -> Value {
    let mut m = p.fields("token", token, 2);
    m.insert("tool".into(), json!(tool));
    m.insert("timestamp".into(), json!(crate::now_rfc3339()));
    Value::Object(m)
}

/// A registry entry: the session, found by its id (no second copy of the id as the key).
#[derive(Debug)]
struct ById(Arc<Session>);

impl std::borrow::Borrow<str> for ById {
    fn borrow(&self) -> &str {
        &self.0.id
    }
}

impl PartialEq for ById {
    fn eq(&self, other: &Self) -> bool {
        self.0.id == other.0.id
    }
}

impl Eq for ById {}

impl std::hash::Hash for ById {
    // as `str` hashes, so that a lookup by `&str` finds it
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.id.as_str().hash(state);
    }
}

/// Every live session. Cheap handle; clone freely.
#[derive(Debug, Clone)]
pub(crate) struct Sessions {
    inner: Arc<Mutex<HashSet<ById>>>,
    bus: EventBus,
    /// Sessions ended for being idle, since start (for the dashboard).
    expired: Arc<AtomicU64>,
    /// Session objects alive anywhere (in the registry, or held by whatever still has one):
    /// what shows a session kept alive by a reference nobody let go of.
    alive: Arc<AtomicUsize>,
    /// Run for each session that ends (see [`Sessions::on_end`]).
    ended: Arc<std::sync::OnceLock<EndFn>>,
}

/// What the gateway does when a session ends.
pub(crate) struct EndFn(pub(crate) Box<EndHook>);

type EndHook = dyn Fn(&Arc<Session>) + Send + Sync;

impl std::fmt::Debug for EndFn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EndFn")
    }
}

/// A new random id or token: `prefix` + 32 random bytes in hex.
pub(crate) fn random(prefix: &str) -> String {
    use rand::RngCore as _;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let mut s = String::with_capacity(prefix.len() + 64);
    s.push_str(prefix);
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

impl Sessions {
    pub(crate) fn new(bus: EventBus) -> Self {
        Self {
            inner: Arc::default(),
            bus,
            expired: Arc::default(),
            alive: Arc::default(),
            ended: Arc::default(),
        }
    }

    /// Registers a session under `id` (a fresh one if `None`) and announces it.
    pub(crate) fn open(
        &self,
        id: Option<String>,
        client: &str,
        transport: &'static str,
        with_token: bool,
    ) -> (Arc<Session>, Option<String>) {
        let token = with_token.then(|| random("sbw_"));
        let extras = OnceLock::new();
        if let Some(t) = &token {
            let _ = extras.set(Box::new(Extras {
                token_hash: Some(Sha256::digest(t.as_bytes()).into()),
                ..Extras::default()
            }));
        }
        let id = id.unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        self.alive.fetch_add(1, Ordering::Relaxed);
        let session = Arc::new(Session {
            id: id.clone(),
            client: client.to_owned(),
            transport,
            extras,
            frames: OnceLock::new(),
            closed: CancellationToken::new(),
            inflight: Mutex::default(),
            seen_ms: AtomicU64::new(epoch_ms()),
            streams: AtomicU32::new(0),
            tools_changed: Mutex::new(None),
            alive: self.alive.clone(),
            can_be_asked: std::sync::atomic::AtomicBool::new(false),
            log_level: AtomicU8::new(0),
            asker: Mutex::new(None),
            caps: OnceLock::new(),
            outbox: Mutex::new(Outbox::default()),
        });
        self.inner
            .lock()
            .expect("sessions lock")
            .replace(ById(session.clone()));
        self.bus.publish(HubEvent::SessionOpened {
            session_id: id,
            client: client.to_owned(),
            transport,
        });
        (session, token)
    }

    pub(crate) fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.inner
            .lock()
            .expect("sessions lock")
            .get(id)
            .map(|e| e.0.clone())
    }

    /// What is done when a session ends (set once, by the gateway: its isolated instances
    /// stop, its last subscriptions are given up).
    pub(crate) fn on_end(&self, ended: EndFn) {
        let _ = self.ended.set(ended);
    }

    /// Ends a session: watchers' streams end, the [`on_end`](Self::on_end) hook runs,
    /// `SessionClosed` is published. `false` if unknown. Every way a session ends (DELETE,
    /// its socket closing, expiry, unpairing) comes here.
    pub(crate) fn close(&self, id: &str, reason: &str) -> bool {
        let s = {
            let mut inner = self.inner.lock().expect("sessions lock");
            let Some(ById(s)) = inner.take(id) else {
                return false;
            };
            // a map that held many sessions once keeps its table: handed back once it is
            // mostly empty (amortized: each shrink follows at least as many closes as it keeps)
            if inner.capacity() > 256 && inner.len() * 4 < inner.capacity() {
                let keep = inner.len() * 2;
                inner.shrink_to(keep);
            }
            s
        };
        s.end();
        if let Some(ended) = self.ended.get() {
            (ended.0)(&s);
        }
        self.bus.publish(HubEvent::SessionClosed {
            session_id: s.id.clone(),
            client: s.client.clone(),
            transport: s.transport,
            reason: reason.to_owned(),
        });
        true
    }

    /// The ids of `client`'s sessions, sorted.
    pub(crate) fn ids_of(&self, client: &str) -> Vec<String> {
        let mut ids: Vec<String> = self
            .inner
            .lock()
            .expect("sessions lock")
            .iter()
            .map(|e| &e.0)
            .filter(|s| s.client == client)
            .map(|s| s.id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// Ends every session of `client` (it was unpaired); returns their ids.
    pub(crate) fn close_client(&self, client: &str, reason: &str) -> Vec<String> {
        let ids = self.ids_of(client);
        for id in &ids {
            self.close(id, reason);
        }
        ids
    }

    /// Tells every session's listener that the tool list changed; a listener whose client
    /// is gone is dropped.
    pub(crate) fn tools_changed(&self) {
        self.tell(&Note::ToolsChanged);
    }

    /// Tells `note` from `server` to the sessions of the aggregated endpoints and of that
    /// server's own (never another server's), as [`tell`](Self::tell) does: its own hear a log
    /// message as the server sent it, the aggregated ones with `logger` naming the server.
    pub(crate) fn tell_from(&self, server: &str, note: &Note) {
        let aggregated = match note {
            Note::Log(params) => {
                let mut params = params.clone();
                let logger = match params.get("logger").and_then(Value::as_str) {
                    Some(l) => format!("{server}/{l}"),
                    None => server.to_owned(),
                };
                if let Some(p) = params.as_object_mut() {
                    p.insert("logger".into(), Value::String(logger));
                }
                Some(Note::Log(params))
            }
            _ => None,
        };
        let aggregated = aggregated.as_ref().unwrap_or(note);
        self.tell_where(|s| match s.server() {
            None => Some(aggregated),
            Some(own) if own == server => Some(note),
            Some(_) => None,
        });
    }

    /// Tells `note` to every session it is for: a log message to the sessions that asked for
    /// its level, anything else to all. A listener whose client is gone is dropped.
    pub(crate) fn tell(&self, note: &Note) {
        self.tell_where(|_| Some(note));
    }

    /// [`tell`](Self::tell), each session hearing what `what` makes of `note` for it (`None`:
    /// nothing).
    fn tell_where<'n>(&self, what: impl Fn(&Session) -> Option<&'n Note>) {
        let all: Vec<Arc<Session>> = self
            .inner
            .lock()
            .expect("sessions lock")
            .iter()
            .map(|e| &e.0)
            .cloned()
            .collect();
        for s in all {
            if let Some(note) = what(&s) {
                s.tell(note);
            }
        }
    }

    /// What the sessions hold, counted from the structures themselves: sessions, fast-path
    /// requests tracked, open streams, watchers and tool list listeners. All zero when no
    /// session is open.
    pub(crate) fn held(&self) -> Value {
        let inner = self.inner.lock().expect("sessions lock");
        let sum = |f: &dyn Fn(&Session) -> usize| inner.iter().map(|e| f(&e.0)).sum::<usize>();
        json!({
            "sessions": inner.len(),
            "session_objects": self.alive.load(Ordering::Relaxed),
            "inflight": sum(&|s| s.inflight.lock().expect("inflight lock").len()),
            "streams": sum(&|s| s.streams.load(Ordering::Relaxed) as usize),
            "watchers": sum(&|s| s.watchers()),
            "listeners": sum(&|s| usize::from(s.tools_changed.lock().expect("listener lock").is_some())),
            "asked": sum(&|s| {
                s.extras
                    .get()
                    .map_or(0, |e| e.asked.lock().expect("asked lock").len())
            }),
            "outboxes": sum(&|s| {
                let out = s.outbox.lock().expect("outbox lock");
                usize::from(out.stream.is_some()) + out.waiting.len()
            }),
        })
    }

    /// Whether any session but `except` is subscribed to `uri`.
    pub(crate) fn subscribed_elsewhere(&self, uri: &str, except: &str) -> bool {
        self.inner
            .lock()
            .expect("sessions lock")
            .iter()
            .map(|e| &e.0)
            .any(|s| s.id != except && s.subscribed(uri))
    }

    /// How many sessions ended for being idle since start.
    pub(crate) fn expired(&self) -> u64 {
        self.expired.load(Ordering::Relaxed)
    }

    /// Every `every`, until `stop`: ends the Streamable HTTP sessions idle (no request, no open
    /// stream, no watcher, no call) for `idle`, so that their clients get 404 and start over.
    pub(crate) async fn sweep(
        self,
        idle: std::time::Duration,
        every: std::time::Duration,
        stop: CancellationToken,
    ) {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
            self.sweep_once(idle);
        }
    }

    /// One sweep (see [`sweep`](Self::sweep)); returns how many sessions it ended.
    pub(crate) fn sweep_once(&self, idle: std::time::Duration) -> usize {
        let now = epoch_ms();
        let idle_ms = idle.as_millis() as u64;
        let expired: Vec<Arc<Session>> = self
            .inner
            .lock()
            .expect("sessions lock")
            .iter()
            .map(|e| &e.0)
            .filter(|s| s.transport == "http" && s.idle_ms(now).is_some_and(|ms| ms >= idle_ms))
            .cloned()
            .collect();
        let mut ended = 0;
        for s in expired {
            if self.close(&s.id, "expired") {
                ended += 1;
                self.expired.fetch_add(1, Ordering::Relaxed);
                tracing::info!(session = %s.id, client = %s.client, idle_ms, "session expired");
            }
        }
        ended
    }

    /// The session `id` if `client` (a paired client's name) owns it or `token` is its watch
    /// token; anyone else gets `None`, as for an unknown id.
    pub(crate) fn watchable(
        &self,
        id: &str,
        client: Option<&str>,
        token: Option<&str>,
    ) -> Option<Arc<Session>> {
        let s = self.get(id)?;
        let owner = client.is_some_and(|c| c == s.client);
        let by_token = token.is_some_and(|t| s.token_is(t));
        (owner || by_token).then_some(s)
    }

    /// Every session, for the dashboard, sorted by id: written out as it is serialized, one
    /// row at a time, not built as a JSON tree (a tree of 100,000 sessions is over 100 MB).
    pub(crate) fn list(&self) -> SessionList {
        let mut all: Vec<Arc<Session>> = self
            .inner
            .lock()
            .expect("sessions lock")
            .iter()
            .map(|e| e.0.clone())
            .collect();
        all.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        SessionList {
            all,
            now: epoch_ms(),
        }
    }
}

/// The sessions of [`Sessions::list`], each serialized as
/// `{session_id, client, transport, server, watchers, explicit, idle_ms}`.
#[derive(Debug)]
pub(crate) struct SessionList {
    all: Vec<Arc<Session>>,
    now: u64,
}

/// One row of a [`SessionList`].
#[derive(serde::Serialize)]
struct Listed<'a> {
    session_id: &'a str,
    client: &'a str,
    transport: &'static str,
    server: Option<&'a str>,
    watchers: usize,
    explicit: bool,
    idle_ms: Option<u64>,
}

impl serde::Serialize for SessionList {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.all.iter().map(|s| Listed {
            session_id: &s.id,
            client: &s.client,
            transport: s.transport,
            server: s.server(),
            watchers: s.watchers(),
            explicit: s.extras.get().is_some_and(|e| e.token_hash.is_some()),
            idle_ms: s.idle_ms(self.now),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_slow_watcher_loses_old_frames_and_never_holds_up_the_call() {
        let bus = EventBus::new(16);
        let sessions = Sessions::new(bus);
        let (s, token) = sessions.open(None, "c", "http", true);
        let mut slow = s.subscribe();
        for i in 0..(FRAMES * 3) {
            s.publish(&json!({"progress": i})); // would block here if it could
        }
        match slow.recv().await {
            Err(broadcast::error::RecvError::Lagged(n)) => assert_eq!(n as usize, FRAMES * 2),
            other => panic!("expected a lag, got {other:?}"),
        }
        let next: Value = serde_json::from_str(&slow.recv().await.unwrap()).unwrap();
        assert_eq!(next["progress"], FRAMES * 2, "the newest frames are kept");
        // the watch token opens this session only
        let token = token.unwrap();
        assert!(sessions.watchable(&s.id, None, Some(&token)).is_some());
        assert!(
            sessions
                .watchable(&s.id, Some("other"), Some("sbw_nope"))
                .is_none()
        );
        assert!(sessions.watchable(&s.id, Some("c"), None).is_some());
        assert!(sessions.close(&s.id, "deleted"));
        assert!(s.closed.is_cancelled());
        assert!(!sessions.close(&s.id, "deleted"), "closed once");
    }

    #[test]
    fn a_session_s_calls_one_at_a_time_keep_no_table() {
        let sessions = Sessions::new(EventBus::new(16));
        let (s, _) = sessions.open(None, "c", "http", false);
        for i in 0..3 {
            let call = s.track(format!("{i}"), CancellationToken::new());
            assert!(s.cancel(&format!("{i}")));
            drop(call);
        }
        assert!(
            nothing_in_flight_and_no_table(&s),
            "one call at a time needs no table"
        );
    }

    fn nothing_in_flight_and_no_table(s: &Session) -> bool {
        let inflight = s.inflight.lock().unwrap();
        inflight.is_empty() && inflight.rest.capacity() == 0
    }

    #[test]
    fn concurrent_calls_are_all_tracked_and_their_table_is_handed_back() {
        let sessions = Sessions::new(EventBus::new(16));
        let (s, _) = sessions.open(None, "c", "http", false);
        let tokens: Vec<CancellationToken> = (0..5).map(|_| CancellationToken::new()).collect();
        let calls: Vec<Tracked> = tokens
            .iter()
            .enumerate()
            .map(|(i, ct)| s.track(format!("{i}"), ct.clone()))
            .collect();
        assert_eq!(s.inflight.lock().unwrap().len(), 5);
        assert!(s.cancel("3") && tokens[3].is_cancelled());
        assert!(!tokens[2].is_cancelled(), "only the one named");
        assert!(!s.cancel("9"), "an id not in flight");
        // a request reusing an id in flight replaces it, as before
        let again = CancellationToken::new();
        let reused = s.track("0".into(), again.clone());
        assert_eq!(s.inflight.lock().unwrap().len(), 5);
        assert!(s.cancel("0") && again.is_cancelled() && !tokens[0].is_cancelled());
        drop(reused);
        drop(calls);
        assert!(
            nothing_in_flight_and_no_table(&s),
            "the table is handed back once empty"
        );
        // the session ending cancels what is in flight
        let last = CancellationToken::new();
        let _call = s.track("7".into(), last.clone());
        assert!(sessions.close(&s.id, "deleted"));
        assert!(last.is_cancelled());
    }

    #[test]
    fn the_registry_finds_a_session_by_its_id_and_forgets_it_when_it_ends() {
        let sessions = Sessions::new(EventBus::new(16));
        let (a, _) = sessions.open(None, "c", "http", false);
        let (b, _) = sessions.open(Some("given".into()), "d", "ws", false);
        assert!(Arc::ptr_eq(&sessions.get(&a.id).unwrap(), &a));
        assert!(Arc::ptr_eq(&sessions.get("given").unwrap(), &b));
        assert!(sessions.get("nope").is_none());
        // the listing is sorted by id, one row per session, as the dashboard reads it
        let mut ids = [a.id.clone(), "given".to_owned()];
        ids.sort();
        let listed = serde_json::to_value(sessions.list()).unwrap();
        let rows = listed.as_array().unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["session_id"], ids[0]);
        assert_eq!(rows[1]["session_id"], ids[1]);
        let row_b = rows.iter().find(|r| r["session_id"] == "given").unwrap();
        assert_eq!(
            row_b,
            &json!({"session_id": "given", "client": "d", "transport": "ws", "server": null,
                    "watchers": 0, "explicit": false, "idle_ms": row_b["idle_ms"]})
        );
        assert!(row_b["idle_ms"].is_u64());
        assert!(sessions.close("given", "deleted"));
        assert!(sessions.get("given").is_none());
        assert_eq!(sessions.held()["sessions"], 1);
        drop(b);
        assert!(sessions.close(&a.id, "deleted"));
        drop(a);
        assert_eq!(sessions.held()["sessions"], 0);
        assert_eq!(sessions.held()["session_objects"], 0);
    }

    #[test]
    fn what_few_sessions_use_is_made_only_for_them() {
        let sessions = Sessions::new(EventBus::new(16));
        let (plain, _) = sessions.open(None, "c", "http", false);
        plain.set_caps(json!({}));
        plain.set_log_level(2);
        plain.subscribe_resource("file:///x", "s", false);
        assert!(!plain.answered("sb-1", Ok(json!({}))));
        assert!(plain.server().is_none() && plain.subscriptions().is_empty());
        assert!(
            plain.extras.get().is_none(),
            "a plain session has no extras"
        );
        let (explicit, token) = sessions.open(None, "c", "http", true);
        assert!(explicit.token_is(token.as_deref().unwrap()));
        assert!(!explicit.token_is("sbw_other") && !plain.token_is(token.as_deref().unwrap()));
        plain.bind("srv");
        assert_eq!(plain.server(), Some("srv"));
        plain.subscribe_resource("file:///x", "srv", true);
        assert_eq!(
            plain.subscriptions(),
            [("file:///x".to_owned(), "srv".to_owned())]
        );
        // log levels: at or above the one asked for
        assert!(plain.wants_log(&json!({"level": "notice"})));
        assert!(plain.wants_log(&json!({"level": "error"})));
        assert!(!plain.wants_log(&json!({"level": "info"})));
        assert!(
            !explicit.wants_log(&json!({"level": "emergency"})),
            "none before asking"
        );
    }

    #[test]
    fn a_live_session_fits_a_small_allocation() {
        // an `Arc<Session>` is one allocation: its size class is what every live session
        // costs before anything else (jemalloc's classes here: 320, 384, 448, 512, 640)
        let arc_inner = std::mem::size_of::<Session>() + 2 * std::mem::size_of::<usize>();
        assert!(arc_inner <= 384, "a session is {arc_inner} bytes");
    }
}
