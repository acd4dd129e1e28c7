//! What one supervised server is, shared by its handle (`Upstream`), its supervisor and its
//! transports: the [`Status`] it publishes, and [`Inner`], the state behind the handle. A leaf
//! of `upstream/`: the other files there import from it; it imports none of them but the
//! connection, the OAuth state and the cached listing it names.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rmcp::model::Tool;
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::cache::Listing;
use super::connection::{ClientAsks, Connection};
use super::oauth::OAuth;
use crate::auth::store::Secrets;
use crate::config::{GatewayConfig, ServerConfig};
pub use crate::events::ServerState;
use crate::events::{EventBus, HubEvent};
use crate::store::Store;

/// The protocol revision we ask upstream servers for in the `initialize` handshake.
pub(crate) const UPSTREAM_PROTOCOL: &str = "2025-11-25";

/// The handshake-less revision: offered first to stdio servers with `server/discover`.
pub(crate) const MODERN_PROTOCOL: &str = "2026-07-28";

/// A tool as its server listed it: read into rmcp's [`Tool`] for what the gateway itself looks
/// at (its name, schema, annotations), and kept as the server wrote it for what clients are
/// shown, since rmcp's type has no room for fields it does not know (`execution`, extensions).
#[derive(Debug, Clone)]
pub struct ServerTool {
    pub tool: Tool,
    /// The definition exactly as listed (a JSON object).
    pub def: Value,
}

impl std::ops::Deref for ServerTool {
    type Target = Tool;

    fn deref(&self) -> &Tool {
        &self.tool
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
    pub tools: Arc<Vec<ServerTool>>,
    /// The `capabilities` object of the server's `initialize` result.
    pub capabilities: Arc<Value>,
    pub server_info: Arc<Value>,
    /// The protocol revision spoken with it: [`MODERN_PROTOCOL`] when
    /// it answered `server/discover` for it, else the handshake's.
    pub protocol: &'static str,
    pub restarts: u64,
    pub last_error: Option<String>,
    /// When the server entered `Running` (for uptime).
    pub running_since: Option<Instant>,
    /// While `Restarting`: when the supervisor tries again (the end of its backoff), so that a
    /// call can say how long it would wait, and not wait for an attempt beyond its bound.
    pub next_attempt: Option<Instant>,
    pub conn: Option<Arc<Connection>>,
    /// An on-demand server's last listing (what it shows while `Idle`); `None` for a server
    /// that always runs, or one that has not listed yet.
    pub(crate) listing: Option<Arc<Listing>>,
    /// Start attempts so far: a call that woke an idle server knows the attempt it waited
    /// for has failed when the server is idle again with a higher count.
    pub starts: u64,
}

impl Status {
    pub(super) fn initial(enabled: bool) -> Self {
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
            protocol: UPSTREAM_PROTOCOL,
            restarts: 0,
            last_error: None,
            running_since: None,
            next_attempt: None,
            conn: None,
            listing: None,
            starts: 0,
        }
    }

    pub(crate) fn has_capability(&self, name: &str) -> bool {
        self.capabilities.get(name).is_some()
    }

    /// Whether what it lists is known now: it runs, or it is an on-demand server between runs
    /// (idle, starting, waiting to restart) answering from its last listing.
    pub(crate) fn is_listed(&self) -> bool {
        self.state == ServerState::Running || self.cached_listing().is_some()
    }

    /// The listing an on-demand server answers lists from while it does not run.
    pub(crate) fn cached_listing(&self) -> Option<&Arc<Listing>> {
        self.listing.as_ref().filter(|_| {
            matches!(
                self.state,
                ServerState::Idle | ServerState::Starting | ServerState::Restarting
            )
        })
    }
}

/// Asks the supervisor to restart the server, with the config waiting in
/// [`Inner::next_config`] if there is one (also brings a `failed` or `disabled` one back).
#[derive(Debug)]
pub(super) struct Restart;

/// Restarts that may wait for the supervisor. When full, another is dropped: the ones queued
/// restart the server anyway, and each takes the newest config from [`Inner::next_config`], so
/// nothing but a redundant restart is lost.
pub(super) const CONTROL_QUEUE: usize = 16;

/// The state behind an `Upstream` handle and its supervisor.
#[derive(Debug)]
pub(super) struct Inner {
    pub(super) name: String,
    /// The config the server runs with; only the supervisor changes it, between runs.
    pub(super) config: Mutex<ServerConfig>,
    /// A changed config not yet applied: the supervisor takes it with the next [`Restart`].
    /// The newest wins, so the control queue never has to carry configs.
    pub(super) next_config: Mutex<Option<ServerConfig>>,
    pub(super) limits: GatewayConfig,
    /// Where `{ keychain = ... }` values of a remote server are read, and its OAuth login kept.
    pub(super) secrets: Secrets,
    /// The OAuth side of a remote server (unused by a stdio one): its tokens, a login waiting
    /// for the browser, what a `401` or `403` said. Shared with the transports, and with every
    /// isolated instance of the server.
    pub(super) oauth: Arc<OAuth>,
    pub(super) status: watch::Sender<Status>,
    /// To the supervisor; bounded by [`CONTROL_QUEUE`] with its overflow rule.
    pub(super) control: mpsc::Sender<Restart>,
    pub(super) stderr: Mutex<VecDeque<String>>,
    pub(super) bus: EventBus,
    /// Source of upstream progress tokens, unique per server.
    pub(super) progress_seq: AtomicU64,
    /// Stops the supervisor (and the child) when cancelled; the parent of every connection's
    /// token.
    pub(super) shutdown: CancellationToken,
    /// The gateway's tracker: the supervisor and every transport task run on it, so shutdown
    /// waits for them.
    pub(super) tasks: TaskTracker,
    /// Where its connections hand notifications for the clients (set by the gateway).
    pub(super) notes: super::connection::NoteSink,
    /// An isolated instance's client session: every request the server sends goes there
    /// (see [`Instance`]). `None` for a server's own (shared, or template) instance.
    pub(super) instance: Option<Instance>,
    /// With `sessions = "isolated"`: the instances running for client sessions, by session id
    /// (bounded by `max_instances`); empty otherwise.
    pub(super) instances: Mutex<HashMap<String, Arc<Inner>>>,
    /// Where an on-demand server's listing is kept between runs.
    pub(super) store: Arc<Store>,
    /// Whether the server runs on demand now (set by the supervisor from the config it runs
    /// with): calls count themselves in [`Inner::activity`] only then, so a server that
    /// always runs pays one atomic load per call for this.
    pub(super) on_demand: AtomicBool,
    /// What uses an on-demand server; the supervisor stops it once nothing has for its idle
    /// time. Taken together with the status's write when it stops it (see
    /// [`Inner::stop_if_idle`]).
    pub(super) activity: Mutex<Activity>,
    /// A call found the on-demand server idle: the supervisor starts it. One stored permit at
    /// most (`Notify`), so this cannot queue up.
    pub(super) wake: tokio::sync::Notify,
    /// The last call, subscription or instance of an on-demand server went away: the
    /// supervisor times its idle stop from now.
    pub(super) released: tokio::sync::Notify,
    /// The machine woke up (see [`Upstream::retry_now`](super::Upstream::retry_now)): a
    /// remote server waiting out its reconnect backoff tries again at once.
    pub(super) retry_now: tokio::sync::Notify,
    /// The last level a client asked for with `logging/setLevel`: sent again on every start
    /// (an on-demand server asked while idle, a restarted one), since a new process or session
    /// knows nothing of it.
    pub(super) log_level: Mutex<Option<String>>,
}

/// What keeps an on-demand server running.
#[derive(Debug)]
pub(super) struct Activity {
    /// Requests in flight (waiting for it to start, or sent).
    pub(super) in_flight: usize,
    /// Resource URIs clients are subscribed to on it.
    pub(super) subscriptions: HashSet<String>,
    /// When the last of them went away (or the run began).
    pub(super) since: Instant,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            in_flight: 0,
            subscriptions: HashSet::new(),
            since: Instant::now(),
        }
    }
}

/// A request counted in an on-demand server's [`Activity`] for as long as it lives.
pub(super) struct InUse<'a>(Option<&'a Inner>);

impl<'a> InUse<'a> {
    pub(super) fn new(inner: &'a Inner) -> Self {
        if !inner.on_demand.load(Ordering::Acquire) {
            return Self(None);
        }
        inner.activity.lock().expect("activity lock").in_flight += 1;
        Self(Some(inner))
    }
}

impl Drop for InUse<'_> {
    fn drop(&mut self) {
        if let Some(inner) = self.0 {
            let mut a = inner.activity.lock().expect("activity lock");
            a.in_flight -= 1;
            if a.in_flight == 0 {
                a.since = Instant::now();
                inner.released.notify_one();
            }
        }
    }
}

/// What makes an upstream one client session's own instance of its server.
#[derive(Debug)]
pub(super) struct Instance {
    pub(super) session: String,
    /// Where the server's requests go when no call of the session is in flight (`None`: the
    /// client cannot be asked outside a call; the server hears so).
    pub(super) asks: Option<ClientAsks>,
}

impl Inner {
    pub(super) fn update(&self, f: impl FnOnce(&mut Status)) {
        self.status.send_modify(f);
    }

    pub(super) fn set_state(&self, state: ServerState, error: Option<String>) {
        self.transition(state, error, None);
    }

    /// `Restarting` after `error`, the next attempt at `next_attempt`: one change, so that no
    /// one sees the state without the time.
    pub(super) fn set_restarting(&self, error: String, next_attempt: Instant) {
        self.transition(ServerState::Restarting, Some(error), Some(next_attempt));
    }

    fn transition(&self, state: ServerState, error: Option<String>, next_attempt: Option<Instant>) {
        let mut changed = false;
        self.status.send_modify(|s| {
            changed = s.state != state;
            s.state = state;
            if error.is_some() {
                s.last_error = error.clone();
            }
            s.next_attempt = next_attempt;
            if state != ServerState::Running {
                s.conn = None;
                s.pid = None;
                s.running_since = None;
            }
        });
        if changed {
            self.publish(HubEvent::ServerState {
                server: self.name.clone(),
                state,
                reason: error,
            });
        }
    }

    /// Publishes `event` about the server; an isolated instance's are its server's business
    /// only in the logs (the dashboard shows the server, not each session's copy).
    pub(super) fn publish(&self, event: HubEvent) {
        if self.instance.is_none() {
            self.bus.publish(event);
        }
    }

    /// Whether a request is in flight on the server or a client is subscribed to it.
    pub(super) fn in_use(&self) -> bool {
        let a = self.activity.lock().expect("activity lock");
        a.in_flight > 0 || !a.subscriptions.is_empty()
    }

    /// Stops counting as idle from now (a run begins).
    pub(super) fn touch(&self) {
        self.activity.lock().expect("activity lock").since = Instant::now();
    }

    /// Resource `uri` was subscribed to (`on`) or unsubscribed on this server.
    pub(super) fn subscribed(&self, uri: &str, on: bool) {
        let mut a = self.activity.lock().expect("activity lock");
        if on {
            a.subscriptions.insert(uri.to_owned());
        } else if a.subscriptions.remove(uri) && a.subscriptions.is_empty() {
            a.since = Instant::now();
            self.released.notify_one();
        }
    }

    /// An on-demand server that nothing has used for `after`: turned `Idle` (its connection
    /// taken out of the status) in one step with the check, under the activity lock, so that
    /// a call either counted itself before (and the server stays) or finds it idle after (and
    /// wakes it again). `Some(t)` if it stays: its idle time counts from `t`.
    pub(super) fn stop_if_idle(&self, after: Duration) -> Option<Instant> {
        let a = self.activity.lock().expect("activity lock");
        let now = Instant::now();
        let isolated = !self.instances.lock().expect("instances lock").is_empty();
        if a.in_flight > 0 || !a.subscriptions.is_empty() || isolated {
            return Some(now);
        }
        if now.duration_since(a.since) < after {
            return Some(a.since);
        }
        self.set_state(ServerState::Idle, None);
        drop(a);
        tracing::info!(server = %self.name, idle_ms = after.as_millis() as u64,
            "on-demand server unused; stopping it");
        None
    }

    pub(super) fn push_stderr(&self, line: String) {
        let mut tail = self.stderr.lock().expect("stderr lock");
        if tail.len() >= self.limits.stderr_lines.max(1) {
            tail.pop_front();
        }
        tail.push_back(line);
    }

    /// Asks for a restart (see [`CONTROL_QUEUE`] for a full queue; a closed one means the
    /// supervisor has ended, and there is nothing to restart).
    pub(super) fn restart(&self) {
        let _ = self.control.try_send(Restart);
    }

    /// What a control message means to the supervisor: `Some` (a restart) applies the config
    /// waiting, if any, and answers `true`; `None` (every sender gone) answers `false`: the
    /// supervisor ends.
    pub(super) fn on_control(&self, msg: Option<Restart>) -> bool {
        if msg.is_none() {
            return false;
        }
        if let Some(config) = self.next_config.lock().expect("config lock").take() {
            *self.config.lock().expect("config lock") = config;
        }
        true
    }
}
