//! [`McpGateway`]: every supervised server's tools, resources and prompts as one set.
//!
//! It holds the upstreams and applies config changes live, aggregates and names the tools
//! (`<server>__<tool>`, see `mod names`), says where a call of one goes ([`McpGateway::route`]),
//! reports health, and tells listeners when the tool list changes. It keeps the MCP sessions and
//! hands out the [`CallBook`] calls are recorded in. It answers no request itself: that is the
//! dispatcher's, which callers build over it.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use rmcp::model::Tool;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::call::{CallBook, Route};
use super::eras::Rounds;
use super::names;
use super::session::{EndFn, Note, Session, Sessions};
use crate::auth::store::{SecretStore, Secrets};
use crate::config::{GatewayConfig, ServerConfig as UpstreamConfig};
use crate::elicit::Elicitations;
use crate::events::EventBus;
use crate::logbook::Logbook;
use crate::store::Store;
use crate::telemetry::Telemetry;
use crate::upstream::{ServerNote, ServerState, Upstream};

/// A tool as clients see it.
#[derive(Debug, Clone)]
pub(crate) struct ExposedTool {
    /// The name clients call.
    pub(crate) name: String,
    /// Its name at the full 64 (what roles' allowlists and telemetry use); `name` itself
    /// unless a client's budget shortened it.
    pub(crate) canonical: String,
    pub(crate) server: String,
    /// The server's own name for it.
    pub(crate) original: String,
    /// Its definition, renamed to `name`.
    pub(crate) tool: Tool,
    /// Its definition as the server listed it, renamed to `name`: what clients are shown.
    pub(crate) def: Value,
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
    /// Where remote servers' header secrets are read from and OAuth logins kept.
    secrets: Secrets,
    /// Where on-demand servers' listings are kept between runs.
    store: Arc<Store>,
    bus: EventBus,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    /// Every MCP session and its progress stream.
    sessions: Sessions,
    /// Which servers listed each resource URI (learned from `resources/list`): for a caller,
    /// the first of them by name that its role grants owns the URI.
    resource_owner: Mutex<HashMap<String, BTreeSet<String>>>,
    started: Instant,
    /// Where every call is recorded (telemetry, the dashboard's call log, the bus).
    book: CallBook,
    /// The configured servers' names, sorted, sent whenever the set changes (the discovery
    /// file lists their own endpoints).
    names: tokio::sync::watch::Sender<Vec<String>>,
    /// Calls of 2026-07-28 clients waiting for their retries with answers (`mcp/eras`).
    rounds: Rounds,
    /// Servers' recent log messages (the dashboard's log view).
    logbook: Logbook,
}

impl McpGateway {
    pub(crate) fn new(
        servers: &[UpstreamConfig],
        limits: GatewayConfig,
        secrets: Secrets,
        bus: EventBus,
        telemetry: Telemetry,
        shutdown: CancellationToken,
        tasks: TaskTracker,
    ) -> Self {
        let rounds = Rounds::new(
            std::time::Duration::from_millis(limits.input_wait_ms),
            tasks.clone(),
            shutdown.child_token(),
        );
        let elicitations = Elicitations::new(bus.clone(), limits.elicitation_timeout());
        let gw = Self {
            inner: Arc::new(Inner {
                upstreams: RwLock::new(BTreeMap::new()),
                limits,
                secrets,
                store: telemetry.store().clone(),
                shutdown,
                tasks,
                sessions: Sessions::new(bus.clone()),
                book: CallBook::new(telemetry, bus.clone(), elicitations),
                rounds,
                logbook: Logbook::new(bus.clone()),
                bus,
                resource_owner: Mutex::new(HashMap::new()),
                started: Instant::now(),
                names: tokio::sync::watch::Sender::new(Vec::new()),
            }),
        };
        // A session's end reaches every server (a weak handle: the sessions are the
        // gateway's, and must not keep it alive).
        let weak = Arc::downgrade(&gw.inner);
        gw.inner.sessions.on_end(EndFn(Box::new(move |s| {
            if let Some(inner) = weak.upgrade() {
                Self { inner }.session_ended(s);
            }
        })));
        gw.apply(servers);
        gw
    }

    /// Calls of 2026-07-28 clients between rounds (see `mcp/eras`).
    pub(crate) fn rounds(&self) -> &Rounds {
        &self.inner.rounds
    }

    /// Session `s` has ended: every server forgets it (its isolated instances stop), and its
    /// subscriptions that no other session holds are given up on their servers (in a task,
    /// each bounded by the server's call timeout).
    fn session_ended(&self, s: &Arc<Session>) {
        for up in self.upstreams() {
            up.end_session(&s.id);
        }
        let sessions = &self.inner.sessions;
        let last: Vec<(String, Upstream)> = s
            .subscriptions()
            .into_iter()
            .filter(|(uri, _)| !sessions.subscribed_elsewhere(uri, &s.id))
            .filter_map(|(uri, server)| Some((uri, self.upstream(&server)?)))
            // an isolated server's subscription was its instance's, which is gone with it
            .filter(|(_, up)| !up.is_isolated())
            .collect();
        if last.is_empty() {
            return;
        }
        let cancel = self.inner.shutdown.child_token();
        self.inner.tasks.spawn(async move {
            for (uri, up) in last {
                let params = json!({"uri": uri});
                match up
                    .request("resources/unsubscribe", params, &uri, true, None, &cancel)
                    .await
                {
                    Ok(_) => tracing::debug!(server = %up.name(), %uri,
                        "unsubscribed: its last session ended"),
                    Err(e) => tracing::warn!(server = %up.name(), %uri, error = %e,
                        "could not unsubscribe after its last session ended"),
                }
            }
        });
    }

    /// Client session `session` says its roots changed: tells the servers concerned (its own
    /// isolated instances, shared servers that asked it for roots). Answers how many were told.
    pub(crate) fn roots_changed(&self, session: &str) -> usize {
        self.upstreams()
            .iter()
            .filter(|up| up.roots_changed(session))
            .count()
    }

    pub(crate) fn telemetry(&self) -> &Telemetry {
        self.inner.book.telemetry()
    }

    /// Tool calls in flight and recently finished (the dashboard's Calls view).
    pub(crate) fn calls(&self) -> &crate::calls::CallLog {
        self.inner.book.calls()
    }

    /// What sessions and calls hold now, counted from the structures (see
    /// [`Sessions::held`]): plus calls in the call log's in-flight list, and requests waiting on
    /// servers' connections with their progress tokens, and isolated instances running (one
    /// per session that uses an isolated server).
    pub(crate) fn held(&self) -> Value {
        let mut held = self.inner.sessions.held();
        let (mut pending, mut progress, mut instances) = (0, 0, 0);
        for up in self.upstreams() {
            instances += up.instances();
            if let Some(conn) = up.status().conn {
                let (p, t) = conn.held();
                pending += p;
                progress += t;
            }
        }
        held["calls_in_flight"] = json!(self.calls().in_flight_count());
        held["calls_awaiting_input"] = json!(self.inner.rounds.waiting());
        held["upstream_pending"] = json!(pending);
        held["upstream_progress"] = json!(progress);
        held["isolated_instances"] = json!(instances);
        held
    }

    /// The machine woke up after `slept`: every remote server waiting out its reconnect
    /// backoff tries again now (sessions it lost meanwhile are opened anew on its 404), and a
    /// [`HubEvent::Resumed`] says which. Answers their names.
    pub(crate) fn resumed(&self, why: &str, slept: std::time::Duration) -> Vec<String> {
        let reconnecting: Vec<String> = self
            .upstreams()
            .iter()
            .filter(|up| up.retry_now())
            .map(|up| up.name().to_owned())
            .collect();
        tracing::info!(
            why,
            slept_s = slept.as_secs(),
            ?reconnecting,
            "resumed from sleep or the network came back"
        );
        self.inner.bus.publish(crate::events::HubEvent::Resumed {
            why: why.to_owned(),
            slept_s: slept.as_secs(),
            reconnecting: reconnecting.clone(),
        });
        reconnecting
    }

    /// The elicitations Switchboard answers itself (the dashboard's and the desktop's).
    pub(crate) fn elicitations(&self) -> &Elicitations {
        self.inner.book.elicitations()
    }

    /// Servers' recent log messages.
    pub(crate) fn logbook(&self) -> &Logbook {
        &self.inner.logbook
    }

    /// Where calls are recorded, for whoever answers them.
    pub(crate) fn book(&self) -> &CallBook {
        &self.inner.book
    }

    fn spawn_upstream(&self, cfg: UpstreamConfig) -> Upstream {
        let up = Upstream::spawn(
            cfg,
            self.inner.limits.clone(),
            self.inner.secrets.clone(),
            self.inner.store.clone(),
            self.inner.bus.clone(),
            self.inner.shutdown.child_token(),
            &self.inner.tasks,
        );
        // Its log messages and list changes, for the sessions they are for.
        let sessions = self.inner.sessions.clone();
        let logbook = self.inner.logbook.clone();
        let server = up.name().to_owned();
        up.on_notes(Arc::new(move |note| {
            if let ServerNote::Log(params) = &note {
                logbook.record(&server, params);
            }
            let note = Note::raw(note);
            sessions.tell_from(&server, &note);
        }));
        // Tell client sessions whenever this server's tools appear, change or go away.
        let mut rx = up.watch();
        let gw = self.clone();
        let name = up.name().to_owned();
        let shutdown = self.inner.shutdown.clone();
        self.inner.tasks.spawn(async move {
            // whether its tools are shown (running, or idle on demand), and which list
            let mut last = (false, 0usize);
            loop {
                tokio::select! {
                    changed = rx.changed() => if changed.is_err() { break },
                    () = shutdown.cancelled() => break,
                }
                let key = {
                    let s = rx.borrow_and_update();
                    (s.is_listed(), Arc::as_ptr(&s.tools) as usize)
                };
                let (was_listed, is_listed) = (last.0, key.0);
                if was_listed != is_listed || (is_listed && key.1 != last.1) {
                    // its own endpoint's sessions and the aggregated ones
                    gw.inner.sessions.tell_from(&name, &Note::ToolsChanged);
                }
                last = key;
            }
        });
        up
    }

    /// Makes the running set of servers match `servers`: new ones start, removed ones stop,
    /// changed ones restart with their new config. Client sessions are untouched.
    pub(crate) fn apply(&self, servers: &[UpstreamConfig]) {
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
                    self.inner.logbook.forget(name);
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
            let names: Vec<String> = self
                .upstreams()
                .iter()
                .map(|u| u.name().to_owned())
                .collect();
            self.inner.names.send_if_modified(|was| {
                let differs = *was != names;
                *was = names;
                differs
            });
        }
    }

    /// The configured servers' names (sorted), told whenever the set changes.
    pub(crate) fn watch_names(&self) -> tokio::sync::watch::Receiver<Vec<String>> {
        self.inner.names.subscribe()
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

    /// Tells every session's listener (see [`Session::on_tools_changed`]).
    ///
    /// [`Session::on_tools_changed`]: super::session::Session::on_tools_changed
    fn notify_tools_changed(&self) {
        self.inner.sessions.tools_changed();
    }

    /// Where secrets named in the config are kept (adopt stores what it moves there).
    pub(crate) fn secrets(&self) -> Arc<dyn SecretStore> {
        self.inner.secrets.headers.clone()
    }

    /// Items per page of the lists clients are answered (`gateway.page_size`, at least 1).
    pub(crate) fn page_size(&self) -> usize {
        self.inner.limits.page_size.max(1)
    }

    /// The tracker of the gateway's tasks (drained on shutdown).
    pub(crate) fn tasks(&self) -> &TaskTracker {
        &self.inner.tasks
    }

    /// Every MCP session and its progress stream.
    pub(crate) fn sessions(&self) -> &Sessions {
        &self.inner.sessions
    }

    /// Every tool of every running server, sorted, with unique names.
    pub(crate) fn tools(&self) -> Vec<ExposedTool> {
        self.tools_within(names::MAX_LEN)
    }

    /// [`tools`](Self::tools) with names of at most `max` characters (a client's budget).
    pub(crate) fn tools_within(&self, max: usize) -> Vec<ExposedTool> {
        let canonical = if max < names::MAX_LEN {
            Some(self.tools_within(names::MAX_LEN))
        } else {
            None
        };
        let mut out: Vec<ExposedTool> = Vec::new();
        for up in self.upstreams() {
            let status = up.status();
            if !status.is_listed() {
                continue;
            }
            for tool in status.tools.iter() {
                let mut t = tool.tool.clone();
                let name = names::exposed_within(up.name(), &tool.name, max, 8);
                t.name = name.clone().into();
                let mut def = tool.def.clone();
                def["name"] = Value::String(name.clone());
                out.push(ExposedTool {
                    canonical: name.clone(),
                    name,
                    server: up.name().to_owned(),
                    original: tool.name.to_string(),
                    tool: t,
                    def,
                });
            }
        }
        // Shortened names can collide only through their hash; lengthen it until unique.
        let mut seen = std::collections::HashSet::new();
        for t in &mut out {
            let mut hash_len = 8;
            while seen.contains(&t.name) && hash_len < 32 {
                hash_len += 4;
                t.name = names::exposed_within(&t.server, &t.original, max, hash_len);
                t.tool.name = t.name.clone().into();
                t.def["name"] = Value::String(t.name.clone());
            }
            seen.insert(t.name.clone());
        }
        if let Some(full) = canonical {
            for t in &mut out {
                if let Some(c) = full
                    .iter()
                    .find(|c| c.server == t.server && c.original == t.original)
                {
                    t.canonical = c.name.clone();
                }
            }
        } else {
            for t in &mut out {
                t.canonical = t.name.clone();
            }
        }
        out
    }

    /// The full (64) name behind `name` as a client with a budget of `max` calls it: the
    /// name itself when it was not shortened, else looked up in that client's table.
    pub(crate) fn canonical_name(&self, name: &str, max: usize) -> String {
        // a shortened name is `max` long, or a little shorter when its cut fell inside a
        // multi-byte character
        if max >= names::MAX_LEN || (name.len() < max && name.is_ascii()) {
            return name.to_owned();
        }
        self.tools_within(max)
            .into_iter()
            .find(|t| t.name == name)
            .map_or_else(|| name.to_owned(), |t| t.canonical)
    }

    /// The upstream and original tool behind an exposed name.
    fn resolve(&self, name: &str) -> Option<(Upstream, Tool)> {
        if let Some((server, tool)) = names::split(name)
            && let Some(up) = self.upstream(server)
            && let Some(t) = up.tool(tool)
        {
            return Some((up, t.tool));
        }
        // A shortened name: look it up in the table.
        let entry = self.tools().into_iter().find(|t| t.name == name)?;
        let up = self.upstream(&entry.server)?;
        let tool = up
            .status()
            .tools
            .iter()
            .find(|t| t.name == entry.original)
            .map(|t| t.tool.clone())?;
        Some((up, tool))
    }

    /// Where a call of `name` goes: the server, the tool's own name there, and whether a call
    /// of it is safe to replay. Like [`resolve`](Self::resolve) without copying the tool.
    pub(crate) fn route<'a>(&self, name: &'a str) -> Option<Route<'a>> {
        if let Some((server, tool)) = names::split(name)
            && let Some(up) = self.upstream(server)
            && let Some(replayable) = up.route(tool)
        {
            return Some(Route {
                exposed: Cow::Borrowed(name),
                upstream: up,
                tool: Cow::Borrowed(tool),
                replayable,
            });
        }
        // a shortened name (rare): through the table
        let (up, tool) = self.resolve(name)?;
        let replayable = up.route(&tool.name)?;
        Some(Route {
            exposed: Cow::Borrowed(name),
            upstream: up,
            tool: Cow::Owned(tool.name.into_owned()),
            replayable,
        })
    }

    /// Why a call finds no tool when its server is parked for a login (its tools are unknown
    /// until it runs): the server's reason, which says how to log in.
    /// Likewise for an on-demand server that has never listed (no run of it has got that
    /// far): its state and why.
    pub(crate) fn waiting_for_login(&self, server: &str) -> Option<String> {
        let up = self.upstream(server)?;
        let s = up.status();
        if s.state == ServerState::NeedsLogin {
            return Some(format!(
                "server '{server}' is waiting for a login: {}",
                s.last_error.as_deref().unwrap_or("it asks for one")
            ));
        }
        let unlisted = up.is_on_demand() && s.listing.is_none() && !s.is_listed();
        unlisted.then(|| {
            format!(
                "server '{server}' (on demand) has not listed its tools yet: it is {}{}",
                s.state.as_str(),
                s.last_error
                    .as_deref()
                    .map(|e| format!("; it could not be started: {e}"))
                    .unwrap_or_default()
            )
        })
    }

    /// The servers that listed resource `uri`, by name (none if no listing showed it).
    pub(crate) fn resource_listers(&self, uri: &str) -> Vec<String> {
        self.inner
            .resource_owner
            .lock()
            .expect("owner lock")
            .get(uri)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Remembers which server listed which resource URIs (`(uri, server)` pairs).
    pub(crate) fn learn_resource_owners(&self, listed: impl IntoIterator<Item = (String, String)>) {
        let mut owners = self.inner.resource_owner.lock().expect("owner lock");
        for (uri, server) in listed {
            owners.entry(uri).or_default().insert(server);
        }
    }

    /// Servers and their state, for the health tool and the API.
    pub(crate) fn health(&self) -> Value {
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
                    "protocol": s.protocol,
                    "tools": s.tools.len(),
                    "sessions": if up.is_isolated() { "isolated" } else { "shared" },
                    "start": if up.is_on_demand() { "on_demand" } else { "always" },
                    "instances": up.instances(),
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
}
