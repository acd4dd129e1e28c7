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
//!   notices to the supervisor, on a queue that cannot grow;
//! - `upstream/pages`: a server's whole list, its cursors followed (bounded);
//! - `upstream/cache`: an on-demand server's last listing, kept in SQLite.
//!
//! A server with `start = "on_demand"` is `idle` while no one uses it: its lists come from
//! its last run's listing, and the first request that needs it (a call, a read, a prompt, a
//! completion, a subscription) wakes it and waits for it, bounded by the start timeout (or
//! `restart_wait_ms` if longer), telling a caller with a progress token that it is starting
//! it. The supervisor stops it again once no request, subscription or isolated instance has
//! used it for its idle time.
//!
//! A server with `sessions = "isolated"` runs one instance of its own (the *template*: its
//! tools, resources and prompts are what every list shows, its status is the server's) and,
//! for each client session that sends it a request, another instance supervised like any
//! server ([`Upstream::for_session`]): started on that session's first request, stopped when
//! the session ends ([`Upstream::end_session`]), at most `max_instances` at once. Every request
//! such an instance sends goes to its own session. Lists never start instances: N sessions
//! listing tools cost no process.
//!
//! A call survives a crash or lost connection once: a call in flight then is sent again to the
//! reopened server if it is safe to repeat, and answered with a clear error otherwise. A call
//! that meets its server starting or restarting (before it is sent, or to be repeated) waits
//! at most `gateway.restart_wait_ms`, telling a caller with a progress token what it waits
//! for, and fails at once, naming the state, if the next attempt comes later than that.

mod cache;
mod connection;
mod input;
mod notice;
mod oauth;
mod pages;
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
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::store::Secrets;
use crate::config::{GatewayConfig, ReplayContract, ServerConfig};
use crate::events::EventBus;
use crate::store::Store;
pub(crate) use connection::{ClientAsks, NoteFn, ServerAsk, ServerNote};
pub use connection::{Connection, Progress, ProgressSink, RpcError};
pub(crate) use oauth::callback_page;
pub use oauth::{Callback as OAuthCallback, LoginState};
use state::Instance;
pub(crate) use state::MODERN_PROTOCOL;
use state::{CONTROL_QUEUE, InUse, Inner};
pub use state::{ServerState, ServerTool, Status};

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
    #[error(
        "server '{server}' runs one instance per client session (sessions = \"isolated\"), and \
         this request belongs to no session (initialize one, with its Mcp-Session-Id)"
    )]
    NoSession { server: String },
    #[error("server '{server}' (on demand) could not be started: {reason}")]
    StartFailed { server: String, reason: String },
    #[error(
        "server '{server}' has {max} instances running already, one per client session \
         (sessions = \"isolated\", max_instances = {max}); this session gets one once another \
         session ends"
    )]
    TooManyInstances { server: String, max: usize },
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
    meta: Option<serde_json::Map<String, Value>>,
    /// A 2026-07-28 client's own retry, passed on untouched.
    #[serde(rename = "inputResponses", skip_serializing_if = "Option::is_none")]
    input_responses: Option<&'a RawValue>,
    #[serde(rename = "requestState", skip_serializing_if = "Option::is_none")]
    request_state: Option<&'a RawValue>,
}

/// What a request carries; written anew for each attempt (each has its own progress token).
enum Params<'a> {
    Value(Value),
    ToolCall {
        name: &'a str,
        arguments: Option<&'a RawValue>,
        retry: Option<Retry<'a>>,
    },
}

/// A 2026-07-28 client's retry of a call (`inputResponses`, `requestState`), as it came: the
/// server it is for answers it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Retry<'a> {
    pub(crate) input_responses: Option<&'a RawValue>,
    pub(crate) request_state: Option<&'a RawValue>,
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
    /// `store` keeps its listing between runs when it runs on demand.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn spawn(
        config: ServerConfig,
        limits: GatewayConfig,
        secrets: Secrets,
        store: Arc<Store>,
        bus: EventBus,
        shutdown: CancellationToken,
        tasks: &TaskTracker,
    ) -> Self {
        let oauth = Arc::new(oauth::OAuth::new(&config.name, secrets.clone()));
        Self::start(
            config, limits, secrets, store, oauth, bus, shutdown, tasks, None,
        )
    }

    /// [`spawn`](Self::spawn), as `instance`'s own copy of the server if given; `oauth` is
    /// the server's login (an isolated server's instances all use the server's own).
    #[allow(clippy::too_many_arguments)]
    fn start(
        config: ServerConfig,
        limits: GatewayConfig,
        secrets: Secrets,
        store: Arc<Store>,
        oauth: Arc<oauth::OAuth>,
        bus: EventBus,
        shutdown: CancellationToken,
        tasks: &TaskTracker,
        instance: Option<Instance>,
    ) -> Self {
        let (control, control_rx) = mpsc::channel(CONTROL_QUEUE);
        let (status, _) = watch::channel(Status::initial(config.enabled));
        let inner = Arc::new(Inner {
            name: config.name.clone(),
            config: Mutex::new(config),
            next_config: Mutex::new(None),
            limits,
            oauth,
            secrets,
            status,
            control,
            stderr: Mutex::new(Default::default()),
            bus,
            progress_seq: AtomicU64::new(1),
            shutdown,
            tasks: tasks.clone(),
            notes: Default::default(),
            instance,
            instances: Mutex::default(),
            store,
            on_demand: Default::default(),
            activity: Default::default(),
            wake: Default::default(),
            released: Default::default(),
            retry_now: Default::default(),
            log_level: Default::default(),
        });
        tasks.spawn(supervisor::supervise(inner.clone(), control_rx));
        Self { inner }
    }

    /// A client asked for log messages at `level` (`logging/setLevel`): remembered, and sent
    /// again whenever the server starts (the caller tells a running one itself).
    pub(crate) fn remember_log_level(&self, level: &str) {
        *self.inner.log_level.lock().expect("log level lock") = Some(level.to_owned());
    }

    /// After a resume from sleep: a remote server waiting out its reconnect backoff tries
    /// again now, from its first delay. `true` if it was waiting (a stdio child did not lose
    /// its pipes to the sleep; it is left alone).
    pub(crate) fn retry_now(&self) -> bool {
        let waiting = self.config().is_remote()
            && self.inner.status.borrow().state == ServerState::Restarting;
        if waiting {
            self.inner.retry_now.notify_waiters();
        }
        waiting
    }

    /// Whether each client session gets its own instance of this server (and this handle is
    /// the server's, not one session's instance).
    pub(crate) fn is_isolated(&self) -> bool {
        self.inner.instance.is_none()
            && self.inner.config.lock().expect("config lock").is_isolated()
    }

    /// The instance that serves client session `session`: this server itself when it is
    /// shared; with `sessions = "isolated"`, the session's own, started now if it has none
    /// (with what its link says of the session). Refused for a request of no session, and past
    /// `max_instances`.
    pub(crate) fn for_session(
        &self,
        session: Option<(&str, impl FnOnce() -> SessionLink)>,
    ) -> Result<Upstream, CallError> {
        if !self.is_isolated() {
            return Ok(self.clone());
        }
        let server = || self.inner.name.clone();
        let Some((session, link)) = session else {
            return Err(CallError::NoSession { server: server() });
        };
        let mut instances = self.inner.instances.lock().expect("instances lock");
        if let Some(inner) = instances.get(session) {
            return Ok(Self {
                inner: inner.clone(),
            });
        }
        let config = self.config();
        let max = config.max_instances();
        if instances.len() >= max {
            tracing::warn!(server = %self.inner.name, max, "no room for another isolated instance");
            return Err(CallError::TooManyInstances {
                server: server(),
                max,
            });
        }
        let link = link();
        let up = Self::start(
            config,
            self.inner.limits.clone(),
            self.inner.secrets.clone(),
            self.inner.store.clone(),
            // one login for the server: its tokens, refreshes (rotation) and step-ups
            self.inner.oauth.clone(),
            self.inner.bus.clone(),
            self.inner.shutdown.child_token(),
            &self.inner.tasks,
            Some(Instance {
                session: session.to_owned(),
                asks: link.asks,
            }),
        );
        up.on_notes(link.notes);
        instances.insert(session.to_owned(), up.inner.clone());
        tracing::info!(server = %self.inner.name, session, live = instances.len(),
            "isolated instance started");
        Ok(up)
    }

    /// Client session `session` has ended: its isolated instance (if any) is stopped, and the
    /// server forgets it.
    pub(crate) fn end_session(&self, session: &str) {
        if let Some(conn) = self.inner.status.borrow().conn.clone() {
            conn.forget_session(session);
        }
        let ended = self
            .inner
            .instances
            .lock()
            .expect("instances lock")
            .remove(session);
        if let Some(inner) = ended {
            tracing::info!(server = %self.inner.name, session, "session ended; stopping its instance");
            inner.shutdown.cancel();
            // an on-demand server's idle time may start now
            self.inner.released.notify_one();
        }
    }

    /// Isolated instances running now (0 for a shared server).
    pub(crate) fn instances(&self) -> usize {
        self.inner.instances.lock().expect("instances lock").len()
    }

    /// Tells the server that client session `session`'s roots changed, if it is concerned: the
    /// session's own instance of an isolated server, a shared server that asked it for roots.
    /// `false` if it was not told (not concerned, not running, or its queue is full).
    pub(crate) fn roots_changed(&self, session: &str) -> bool {
        let conn = if self.is_isolated() {
            let instance = self
                .inner
                .instances
                .lock()
                .expect("instances lock")
                .get(session)
                .cloned();
            instance.and_then(|i| i.status.borrow().conn.clone())
        } else {
            self.inner
                .status
                .borrow()
                .conn
                .clone()
                .filter(|c| c.asked_roots_of(session))
        };
        conn.is_some_and(|c| c.offer_notification("notifications/roots/list_changed", json!({})))
    }

    /// Restarts the isolated instances whose status passes `which` (they share the server's
    /// login: one that came or went concerns them all).
    fn restart_instances(&self, which: impl Fn(&Status) -> bool) {
        let instances = self.inner.instances.lock().expect("instances lock");
        for inner in instances.values() {
            if which(&inner.status.borrow()) {
                inner.restart();
            }
        }
    }

    /// Stops every isolated instance (the config changed: they start again as needed).
    fn stop_instances(&self) {
        let all: Vec<Arc<Inner>> = self
            .inner
            .instances
            .lock()
            .expect("instances lock")
            .drain()
            .map(|(_, i)| i)
            .collect();
        for inner in all {
            inner.shutdown.cancel();
        }
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Where this server's notifications for the clients go (log messages, list changes): set
    /// once, for every connection it will have.
    pub(crate) fn on_notes(&self, tell: NoteFn) {
        self.inner.notes.set(tell);
    }

    /// Whether the server speaks 2026-07-28 now (it answered `server/discover` at its start).
    pub(crate) fn is_modern(&self) -> bool {
        self.inner.status.borrow().protocol == MODERN_PROTOCOL
    }

    /// Whether this server starts only when a request needs it (`start = "on_demand"`; an
    /// isolated instance never does: it runs for its session).
    pub fn is_on_demand(&self) -> bool {
        self.inner.instance.is_none() && self.config().is_on_demand(&self.inner.limits)
    }

    pub fn status(&self) -> Status {
        self.inner.status.borrow().clone()
    }

    /// The tool `name` of the running server, found without cloning the whole status.
    pub(crate) fn tool(&self, name: &str) -> Option<ServerTool> {
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

    /// Starts an OAuth login to this remote server: the authorization URL to open in the
    /// person's browser. It comes back to `http://127.0.0.1:<gateway_port>/oauth/callback`, or
    /// to the configured `redirect_port` (listened on for the login only); a login that has
    /// not come back within `timeout` (default 5 minutes, at most 30) is forgotten.
    pub async fn login(
        &self,
        gateway_port: u16,
        timeout: Option<Duration>,
    ) -> Result<String, String> {
        let cfg = self.config();
        if !cfg.is_remote() {
            return Err(format!(
                "server '{}' is a stdio server; OAuth logins are for remote servers",
                self.name()
            ));
        }
        if !oauth::applies(&cfg) {
            return Err(format!(
                "server '{}' sends its own Authorization header (headers in the config);                  remove it to log in with OAuth",
                self.name()
            ));
        }
        let timeout = timeout
            .unwrap_or(oauth::LOGIN_TIMEOUT)
            .clamp(Duration::from_secs(1), oauth::MAX_LOGIN_TIMEOUT);
        let fixed = cfg.oauth.as_ref().and_then(|o| o.redirect_port);
        let (redirect, listener) = match fixed {
            Some(port) => {
                let stop = self.listen_for_callback(port, timeout).await?;
                (
                    format!("http://127.0.0.1:{port}{}", oauth::CALLBACK_PATH),
                    Some(stop),
                )
            }
            None => (
                format!("http://127.0.0.1:{gateway_port}{}", oauth::CALLBACK_PATH),
                None,
            ),
        };
        let stop = listener.clone();
        let url = match self
            .inner
            .oauth
            .begin(&cfg, &redirect, timeout, listener)
            .await
        {
            Ok(url) => url,
            Err(e) => {
                if let Some(stop) = stop {
                    stop.cancel();
                }
                return Err(e);
            }
        };
        if let Some((state, expires)) = self.inner.oauth.pending_state() {
            let oauth = self.inner.oauth.clone();
            let shutdown = self.inner.shutdown.clone();
            self.inner.tasks.spawn(async move {
                tokio::select! {
                    () = tokio::time::sleep_until(expires.into()) => oauth.expire(&state),
                    () = shutdown.cancelled() => {}
                }
            });
        }
        Ok(url)
    }

    /// Listens on `127.0.0.1:port` for this server's callback, until the login ends, times
    /// out, or the gateway stops; cancel the token to stop it.
    async fn listen_for_callback(
        &self,
        port: u16,
        timeout: Duration,
    ) -> Result<CancellationToken, String> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .map_err(|e| {
                format!(
                    "cannot listen on 127.0.0.1:{port} (oauth.redirect_port of server '{}') for                      the login's callback: {e}",
                    self.name()
                )
            })?;
        let stop = self.inner.shutdown.child_token();
        let up = self.clone();
        let app = axum::Router::new().route(
            oauth::CALLBACK_PATH,
            axum::routing::get(
                move |axum::extract::Query(query): axum::extract::Query<oauth::Callback>| async move {
                    let result = up.finish_login(&query).await;
                    oauth::callback_page(up.name(), result)
                },
            ),
        );
        let until = stop.clone();
        self.inner.tasks.spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(until.clone().cancelled_owned())
                .into_future();
            tokio::select! {
                r = served => if let Err(e) = r {
                    tracing::warn!(error = %e, "the login's callback listener failed");
                },
                () = tokio::time::sleep(timeout) => until.cancel(),
            }
        });
        Ok(stop)
    }

    /// Whether this is a remote server that logs in with OAuth (no Authorization header of
    /// its own in the config): where the tray and the dashboard offer Log In and Log Out.
    pub fn uses_oauth(&self) -> bool {
        oauth::applies(&self.config())
    }

    /// Whether the login waiting for the browser is this server's (`state` of the callback).
    pub fn owns_login(&self, state: &str) -> bool {
        self.inner.oauth.owns_state(state)
    }

    /// The browser came back with `query`: tokens exchanged and stored, the server started
    /// with them. Nothing is stored when it fails.
    pub async fn finish_login(&self, query: &oauth::Callback) -> Result<(), String> {
        self.inner.oauth.finish(query).await?;
        self.inner.restart();
        // isolated instances parked for the login start again with it
        self.restart_instances(|s| s.state == ServerState::NeedsLogin);
        Ok(())
    }

    /// Forgets the OAuth login (tokens revoked where offered, deleted from the store) and
    /// restarts the server, which then needs a login. `Ok(false)` if none was stored.
    pub async fn logout(&self) -> Result<bool, String> {
        let cfg = self.config();
        if !oauth::applies(&cfg) {
            return Err(format!(
                "server '{}' does not log in with OAuth",
                self.name()
            ));
        }
        let had = self.inner.oauth.logout(&cfg).await?;
        self.inner.restart();
        self.restart_instances(|_| true);
        Ok(had)
    }

    /// What its login is doing.
    pub fn login_state(&self) -> watch::Receiver<oauth::LoginState> {
        self.inner.oauth.login_state()
    }

    /// Waits (at most `timeout`) for the login under way to end and the server to be running
    /// on its tokens; the reason when it does not.
    pub async fn wait_logged_in(&self, timeout: Duration) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut login = self.login_state();
        let generation = self.status().generation;
        loop {
            match login.borrow_and_update().clone() {
                oauth::LoginState::Done => break,
                oauth::LoginState::Failed(why) => return Err(why),
                oauth::LoginState::Idle => {
                    return Err(format!("no login to server '{}' is under way", self.name()));
                }
                oauth::LoginState::Waiting => {}
            }
            match tokio::time::timeout_at(deadline, login.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err("the gateway is stopping".into()),
                Err(_) => {
                    return Err(format!(
                        "no answer from the browser within {} s; nothing was stored",
                        timeout.as_secs()
                    ));
                }
            }
        }
        let mut rx = self.watch();
        let mut started = false;
        loop {
            {
                let s = rx.borrow_and_update();
                match s.state {
                    ServerState::Running if s.generation > generation => return Ok(()),
                    ServerState::Starting => started = true,
                    ServerState::NeedsLogin | ServerState::Failed | ServerState::Restarting
                        if started =>
                    {
                        return Err(format!(
                            "logged in, but server '{}' did not start: {}",
                            self.name(),
                            s.last_error.as_deref().unwrap_or(s.state.as_str())
                        ));
                    }
                    ServerState::Disabled | ServerState::Stopped => {
                        return Err(format!(
                            "logged in; server '{}' is {}",
                            self.name(),
                            s.state.as_str()
                        ));
                    }
                    _ => {}
                }
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err("the gateway is stopping".into()),
                Err(_) => {
                    return Err(format!(
                        "logged in, but server '{}' was not running within {} s",
                        self.name(),
                        timeout.as_secs()
                    ));
                }
            }
        }
    }

    /// The OAuth side for the API: whether it applies, is logged in (read from the store if
    /// not yet), and what a login under way is doing. Never a token.
    pub async fn oauth_view(&self) -> Value {
        let cfg = self.config();
        if !oauth::applies(&cfg) {
            return json!({"applies": false});
        }
        let logged_in = self.inner.oauth.logged_in(&cfg).await;
        let login = match &*self.login_state().borrow() {
            oauth::LoginState::Idle => json!("idle"),
            oauth::LoginState::Waiting => json!("waiting"),
            oauth::LoginState::Done => json!("done"),
            oauth::LoginState::Failed(why) => json!({"failed": why}),
        };
        json!({"applies": true, "logged_in": logged_in, "login": login})
    }

    /// Applies a changed config: restarts the server with it (or stops it if disabled).
    pub(crate) fn reconfigure(&self, config: ServerConfig) {
        *self.inner.next_config.lock().expect("config lock") = Some(config);
        self.stop_instances();
        self.inner.restart();
    }

    /// Stops supervising: the child (and every isolated instance) is stopped politely.
    pub(crate) fn stop(&self) {
        self.stop_instances();
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

    /// How long a call waits for its server to come back.
    fn restart_wait(&self) -> Duration {
        Duration::from_millis(self.inner.limits.restart_wait_ms)
    }

    /// Waits for a running server of at least `generation`: until `deadline`, and no longer
    /// than `gateway.restart_wait_ms` from now, telling `reports` what it waits for. A server
    /// whose next attempt is due after that fails the call at once: waiting could not help.
    async fn running(
        &self,
        generation: u64,
        deadline: Instant,
        reports: Option<&Reports>,
    ) -> Result<(Arc<Connection>, u64), CallError> {
        let since = Instant::now();
        // a start on demand may take the whole start timeout
        let wait = if self.inner.on_demand.load(Ordering::Acquire) {
            self.restart_wait().max(self.inner.limits.start_timeout())
        } else {
            self.restart_wait()
        };
        let until = deadline.min(since + wait);
        let mut rx = self.inner.status.subscribe();
        // What the client was last told, so that it hears of each new attempt once.
        let mut told: Option<(ServerState, Option<std::time::Instant>)> = None;
        // The start attempts of an idle on-demand server when this call woke it.
        let mut woke: Option<u64> = None;
        loop {
            // Decided under the watch's lock, acted on after it: telling runs the client's sink.
            let notice = {
                let s = rx.borrow_and_update();
                match (s.state, &s.conn) {
                    (ServerState::Running, Some(conn))
                        if s.generation >= generation && !conn.is_closed() =>
                    {
                        return Ok((conn.clone(), s.generation));
                    }
                    // idle again after the attempt this call asked for: it failed
                    (ServerState::Idle, _) if woke.is_some_and(|n| s.starts > n) => {
                        return Err(CallError::StartFailed {
                            server: self.inner.name.clone(),
                            reason: s
                                .last_error
                                .clone()
                                .unwrap_or_else(|| "it did not start".into()),
                        });
                    }
                    (
                        ServerState::Failed
                        | ServerState::Disabled
                        | ServerState::Stopped
                        | ServerState::NeedsLogin,
                        _,
                    ) => {
                        return Err(CallError::Unavailable {
                            server: self.inner.name.clone(),
                            state: match s.state {
                                ServerState::NeedsLogin => "waiting for a login",
                                other => other.as_str(),
                            },
                            reason: s.last_error.clone(),
                        });
                    }
                    _ => {}
                }
                let now = Instant::now();
                if attempt_at(&s).is_some_and(|at| Instant::from_std(at) > until) {
                    return Err(self.not_back(&s, since, until, now, true));
                }
                let key = (s.state, s.next_attempt);
                if s.state == ServerState::Idle && woke.is_none() {
                    woke = Some(s.starts);
                    self.inner.wake.notify_one();
                    tracing::debug!(server = %self.inner.name, "a call wakes the on-demand server");
                }
                let tell = match s.state {
                    ServerState::Restarting => told != Some(key),
                    ServerState::Starting | ServerState::Idle => told.is_none(),
                    _ => false,
                };
                (tell && reports.is_some()).then(|| {
                    told = Some(key);
                    waiting_notice(
                        &self.inner.name,
                        &s,
                        now,
                        until.saturating_duration_since(now),
                    )
                })
            };
            if let (Some(message), Some(reports)) = (notice, reports) {
                reports.say(message);
            }
            match tokio::time::timeout_at(until, rx.changed()).await {
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
                    return Err(self.not_back(&s, since, until, Instant::now(), false));
                }
            }
        }
    }

    /// The error of a call that gave up on its server at `now` after waiting from `since`
    /// (at most until `until`): the state, when the server is tried next, its last error and
    /// the wait; `early` when it gave up because the next attempt comes after `until`.
    fn not_back(
        &self,
        s: &Status,
        since: Instant,
        until: Instant,
        now: Instant,
        early: bool,
    ) -> CallError {
        let mut parts = Vec::new();
        if let Some(at) = attempt_at(s) {
            let next = match Instant::from_std(at).checked_duration_since(now) {
                Some(d) if !d.is_zero() => format!("next attempt in {}", secs(d)),
                _ => "next attempt due now".to_owned(),
            };
            parts.push(if early {
                format!(
                    "{next}, later than this call may wait ({})",
                    secs(until.saturating_duration_since(since))
                )
            } else {
                next
            });
        }
        if let Some(e) = &s.last_error {
            parts.push(format!("last error: {e}"));
        }
        let waited = now.saturating_duration_since(since);
        if !early || waited >= Duration::from_millis(100) {
            parts.push(format!("waited {}", secs(waited)));
        }
        CallError::Unavailable {
            server: self.inner.name.clone(),
            // Running but not usable: its connection is gone and the supervisor is about to
            // notice.
            state: match s.state {
                ServerState::Running => ServerState::Restarting.as_str(),
                other => other.as_str(),
            },
            reason: Some(parts.join("; ")),
        }
    }

    /// Every item of list `method` (the `field` of each page), the server's `nextCursor`
    /// followed (bounded: a server past the bounds or repeating a cursor is cut off, keeping
    /// what was read). Each page is a [`request`](Self::request): replayed, no progress.
    pub(crate) async fn list(
        &self,
        method: &'static str,
        field: &str,
        cancel: &CancellationToken,
    ) -> Result<Vec<Value>, CallError> {
        // an on-demand server that does not run answers from its last listing (and an idle
        // one stays idle)
        if let Some(listing) = self.inner.status.borrow().cached_listing()
            && let Some(items) = listing.items(method)
        {
            return Ok(items.to_vec());
        }
        let fetch = |params| async move {
            let a = self
                .request(method, params, method, true, None, cancel)
                .await?;
            Ok(a.result)
        };
        pages::collect(self.name(), method, field, pages::BOUNDS, fetch).await
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
                ForClient {
                    progress,
                    asks: None,
                    modern: false,
                    meta: None,
                },
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
        retry: Option<Retry<'_>>,
        replayable: bool,
        client: ForClient,
        cancel: &CancellationToken,
    ) -> Result<RawAnswer, CallError> {
        let params = Params::ToolCall {
            name: tool,
            arguments,
            retry,
        };
        self.send("tools/call", params, tool, replayable, client, cancel)
            .await
    }

    async fn send(
        &self,
        method: &str,
        mut params: Params<'_>,
        target: &str,
        replayable: bool,
        client: ForClient,
        cancel: &CancellationToken,
    ) -> Result<RawAnswer, CallError> {
        let ForClient {
            progress,
            asks,
            modern,
            meta,
        } = client;
        // counted from before it looks at the server: see `Inner::stop_if_idle`
        let _in_use = InUse::new(&self.inner);
        let timeout = self.call_timeout();
        let deadline = Instant::now() + timeout;
        let reports = progress.map(Reports::new);
        let progress = reports.as_ref().map(Reports::upstream);
        let mut generation = 0;
        let mut replay_attempts = 0;
        loop {
            let (conn, current) = self.running(generation, deadline, reports.as_ref()).await?;
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
            let (first, written) = match &params {
                Params::Value(v) => (
                    conn.request_asking(method, v, remaining, Some(cancel), asks.clone())
                        .await,
                    None,
                ),
                Params::ToolCall {
                    name,
                    arguments,
                    retry,
                } => {
                    let mut meta = meta.clone();
                    if let Some(t) = &token {
                        meta.get_or_insert_default()
                            .insert("progressToken".into(), Value::String(t.clone()));
                    }
                    let p = ToolCallParams {
                        name,
                        arguments: *arguments,
                        meta,
                        // only a 2026-07-28 server knows what to do with a retry
                        input_responses: retry
                            .filter(|_| conn.is_modern())
                            .and_then(|r| r.input_responses),
                        request_state: retry
                            .filter(|_| conn.is_modern())
                            .and_then(|r| r.request_state),
                    };
                    let sent = conn
                        .request_asking(method, &p, remaining, Some(cancel), asks.clone())
                        .await;
                    let written = (conn.is_modern() && !modern)
                        .then(|| serde_json::to_value(&p).unwrap_or(Value::Null));
                    (sent, written)
                }
            };
            // A 2026-07-28 server's input_required for a client of the older protocol: the
            // client is asked, the gateway retries (a 2026-07-28 client gets it as it is).
            let result = match first {
                Ok(raw) if conn.is_modern() && !modern && input::may_need_input(method) => {
                    let base = match (&params, written) {
                        (Params::Value(v), _) => v.clone(),
                        (_, Some(w)) => w,
                        (_, None) => Value::Null,
                    };
                    self.input_rounds(&conn, method, raw, base, asks.as_ref(), deadline, cancel)
                        .await
                }
                other => other,
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
                Ok(result) => {
                    if method == "resources/subscribe" || method == "resources/unsubscribe" {
                        self.inner
                            .subscribed(target, method == "resources/subscribe");
                    }
                    Ok(Answer {
                        result,
                        replay_attempts,
                    })
                }
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

    /// Answers the `input_required` results of `first` (the server's answer to `method` with
    /// `params`) by asking the client and retrying, until the server answers otherwise (see
    /// `input`): at most [`input::MAX_ROUNDS`] rounds, all before `deadline`.
    #[allow(clippy::too_many_arguments)]
    async fn input_rounds(
        &self,
        conn: &Connection,
        method: &str,
        first: Box<RawValue>,
        params: Value,
        asks: Option<&ClientAsks>,
        deadline: Instant,
        cancel: &CancellationToken,
    ) -> Result<Box<RawValue>, RpcError> {
        let server = self.name();
        let mut raw = first;
        let mut rounds = 0;
        while let Some(needed) = input::read(server, &raw) {
            let needed = needed?;
            rounds += 1;
            if rounds > input::MAX_ROUNDS {
                return Err(RpcError::Remote {
                    code: -32603,
                    message: format!(
                        "server '{server}' still needed input after {} rounds; Switchboard \
                         gave up",
                        input::MAX_ROUNDS
                    ),
                    data: None,
                });
            }
            let answers = input::ask_client(server, asks, &needed, deadline, cancel).await?;
            let retry = input::retry_params(params.clone(), answers, needed.state);
            let remaining = deadline.saturating_duration_since(Instant::now());
            raw = conn
                .request_asking(method, &retry, remaining, Some(cancel), asks.cloned())
                .await?;
        }
        Ok(raw)
    }
}

/// When the supervisor tries `s` again, if it is waiting to.
fn attempt_at(s: &Status) -> Option<std::time::Instant> {
    s.next_attempt
        .filter(|_| s.state == ServerState::Restarting)
}

/// What a call tells its client at `now` while it waits (at most `left` more) for `s`.
fn waiting_notice(server: &str, s: &Status, now: Instant, left: Duration) -> String {
    if s.state == ServerState::Idle {
        return format!(
            "starting {server} (on demand; this call waits at most {} for it)",
            secs(left)
        );
    }
    let what = if s.generation == 0 && s.restarts == 0 {
        "start"
    } else {
        "restart"
    };
    let next = attempt_at(s)
        .map(|at| {
            let d = Instant::from_std(at).saturating_duration_since(now);
            format!(", next attempt in {}", secs(d))
        })
        .unwrap_or_default();
    format!(
        "waiting for '{server}' to {what}{next} (this call waits at most {} more)",
        secs(left)
    )
}

/// `d` for people: tenths of a second below 10 s, whole seconds from there.
fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 9.95 {
        format!("{s:.1} s")
    } else {
        format!("{} s", s.round() as u64)
    }
}

/// A call's progress sink and the highest progress it was given. The gateway's own reports
/// (waiting for a restart) go on from there: progress may only increase, and what the
/// client was shown last is what counts. (A server's later report at or below ours is held
/// back by the caller's relay, as after a replay.)
#[derive(Clone)]
struct Reports {
    sink: ProgressSink,
    /// The highest progress sent so far (`-inf`: none).
    high: Arc<Mutex<f64>>,
}

impl Reports {
    fn new(sink: ProgressSink) -> Self {
        Self {
            sink,
            high: Arc::new(Mutex::new(f64::NEG_INFINITY)),
        }
    }

    /// The sink the server's reports go to, through this one.
    fn upstream(&self) -> ProgressSink {
        let this = self.clone();
        Arc::new(move |p: Progress| {
            {
                let mut high = this.high.lock().expect("progress lock");
                *high = high.max(p.progress);
            }
            (this.sink)(p);
        })
    }

    /// A report of the gateway's own, the smallest step above the last one (0 if none).
    fn say(&self, message: String) {
        let progress = {
            let mut high = self.high.lock().expect("progress lock");
            *high = if high.is_finite() {
                high.next_up()
            } else {
                0.0
            };
            *high
        };
        (self.sink)(Progress {
            progress,
            total: None,
            message: Some(message),
        });
    }
}

/// What an isolated instance is told of the client session it is started for.
pub(crate) struct SessionLink {
    /// Where the instance's requests go when no call of the session is in flight.
    pub asks: Option<ClientAsks>,
    /// Where its notifications go: to that session only.
    pub notes: NoteFn,
}

/// What a call brings along for its client: where the server's progress reports go, and
/// where the requests the server sends meanwhile go (see [`ClientAsks`]).
#[derive(Default)]
pub(crate) struct ForClient {
    pub progress: Option<ProgressSink>,
    pub asks: Option<ClientAsks>,
    /// The client speaks 2026-07-28: a server's `input_required` reaches it as it is (it
    /// retries itself), not as requests to it.
    pub modern: bool,
    /// The client's `_meta` of the request, passed on (the gateway's own progress token is
    /// put in beside it).
    pub meta: Option<serde_json::Map<String, Value>>,
}

/// Whether the tool says a repeated call is harmless (`readOnlyHint` or `idempotentHint`).
fn annotated_safe(tool: &Tool) -> bool {
    tool.annotations
        .as_ref()
        .is_some_and(|a| a.read_only_hint == Some(true) || a.idempotent_hint == Some(true))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upstream of `command args` (a real child process) and the token that stops it.
    fn supervised(
        name: &str,
        command: &str,
        args: &[&str],
        limits: GatewayConfig,
    ) -> (Upstream, CancellationToken) {
        let shutdown = CancellationToken::new();
        let config = ServerConfig {
            name: name.to_owned(),
            command: command.to_owned(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            enabled: true,
            ..Default::default()
        };
        let up = Upstream::spawn(
            config,
            limits,
            crate::auth::store::Secrets::in_memory(),
            Arc::new(Store::in_memory().expect("in-memory store").0),
            EventBus::new(16),
            shutdown.clone(),
            &TaskTracker::new(),
        );
        (up, shutdown)
    }

    /// A sink that keeps every report it is given.
    fn recording() -> (ProgressSink, Arc<Mutex<Vec<Progress>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let keep = seen.clone();
        let sink: ProgressSink = Arc::new(move |p| keep.lock().unwrap().push(p));
        (sink, seen)
    }

    #[test]
    fn durations_read_in_tenths_below_ten_seconds_and_whole_seconds_above() {
        assert_eq!(secs(Duration::from_millis(0)), "0.0 s");
        assert_eq!(secs(Duration::from_millis(2_640)), "2.6 s");
        assert_eq!(secs(Duration::from_millis(9_960)), "10 s");
        assert_eq!(secs(Duration::from_millis(14_400)), "14 s");
    }

    #[test]
    fn the_gateways_own_reports_go_on_above_the_servers() {
        let (sink, seen) = recording();
        let reports = Reports::new(sink);
        reports.say("first".into());
        let upstream = reports.upstream();
        upstream(Progress {
            progress: 3.0,
            total: Some(5.0),
            message: None,
        });
        reports.say("second".into());
        let seen = seen.lock().unwrap();
        let values: Vec<f64> = seen.iter().map(|p| p.progress).collect();
        assert_eq!(values[..2], [0.0, 3.0]);
        assert!(values[2] > 3.0 && values[2] < 3.001, "{values:?}");
        assert_eq!(seen[2].message.as_deref(), Some("second"));
        assert_eq!(seen[2].total, None);
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_call_to_a_server_that_does_not_come_up_waits_restart_wait_and_names_its_state() {
        // `sleep` never answers `initialize`: the server stays `starting`
        let limits = GatewayConfig {
            restart_wait_ms: 400,
            start_timeout_ms: 20_000,
            stop_grace_ms: 100,
            ..Default::default()
        };
        let (up, shutdown) = supervised("sleepy", "sleep", &["30"], limits);
        let (sink, seen) = recording();
        let started = Instant::now();
        let answer = tokio::time::timeout(
            Duration::from_secs(5),
            up.request("ping", json!({}), "ping", true, Some(sink), &shutdown),
        )
        .await
        .expect("the wait is bounded");
        let waited = started.elapsed();
        let e = answer.expect_err("not running");
        let text = e.to_string();
        assert!(
            matches!(
                &e,
                CallError::Unavailable {
                    state: "starting",
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(text.starts_with("server 'sleepy' is starting: "), "{text}");
        assert!(text.contains("waited "), "{text}");
        assert_eq!(e.code(), -32603);
        assert!(waited >= Duration::from_millis(400), "{waited:?}");
        assert!(waited < Duration::from_millis(2_400), "{waited:?}");
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(seen[0].progress, 0.0);
        let told = seen[0].message.as_deref().unwrap();
        assert!(told.starts_with("waiting for 'sleepy' to start"), "{told}");
        shutdown.cancel();
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_restart_due_after_restart_wait_fails_the_call_at_once() {
        let limits = GatewayConfig {
            restart_wait_ms: 500,
            // the first delay is 15 to 30 s
            backoff_initial_ms: 60_000,
            ..Default::default()
        };
        let (up, shutdown) = supervised("dud", "sh", &["-c", "exit 3"], limits);
        let mut rx = up.watch();
        tokio::time::timeout(
            Duration::from_secs(5),
            rx.wait_for(|s| s.state == ServerState::Restarting),
        )
        .await
        .expect("restarting in time")
        .unwrap();
        let next = up.status().next_attempt.expect("a next attempt");
        let due = next.duration_since(std::time::Instant::now());
        assert!(due > Duration::from_secs(10), "{due:?}");

        let (sink, seen) = recording();
        let started = Instant::now();
        let e = tokio::time::timeout(
            Duration::from_secs(5),
            up.request("ping", json!({}), "ping", true, Some(sink), &shutdown),
        )
        .await
        .expect("the wait is bounded")
        .expect_err("not running");
        // at once, not after restart_wait_ms
        assert!(started.elapsed() < Duration::from_millis(400));
        let text = e.to_string();
        assert!(
            text.starts_with("server 'dud' is restarting: next attempt in "),
            "{text}"
        );
        assert!(
            text.contains("later than this call may wait (0.5 s); last error: ")
                && text.contains("exited with code 3"),
            "{text}"
        );
        assert!(seen.lock().unwrap().is_empty(), "no wait, nothing to tell");
        shutdown.cancel();
    }
}
