//! The event bus: one bounded broadcast of typed [`HubEvent`]s.
//!
//! Producers never wait: the bus is a ring. A subscriber that falls behind loses its oldest
//! events and receives one [`HubEvent::Lagged`] saying how many, then carries on.
//!
//! This module sits below every producer (`upstream`, `auth`, `registration`, `mcp`): it
//! imports none of them. What an event carries is therefore defined here, including
//! [`ServerState`], the lifecycle a supervised server reports (`upstream` drives it and
//! re-exports it as `upstream::ServerState`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use tokio::sync::broadcast;

use crate::registration::protocol::DbOperation;

/// Something that happened in the hub, for the dashboard, the tray and notifications.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HubEvent {
    /// A project's first socket registered (it was offline or never seen).
    ProjectOnline {
        path: String,
        name: String,
        sockets: usize,
    },
    /// A project's last socket went away.
    ProjectOffline { path: String, name: String },
    /// A registered MCP server reported a change to its database.
    DbOperation {
        project_path: String,
        #[serde(flatten)]
        operation: DbOperation,
    },
    /// A supervised server changed state (running, restarting, failed, …).
    ServerState {
        server: String,
        state: ServerState,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// A supervised server died or failed to start.
    ServerCrashed { server: String, reason: String },
    /// A server's tool list changed (it sent `tools/list_changed`).
    ServerToolsChanged { server: String, tools: usize },
    /// A client called a tool.
    CallStarted {
        call_id: String,
        tool: String,
        server: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        session_id: Option<String>,
        /// The paired client that made the call.
        client: Option<String>,
    },
    /// A running call reported progress.
    CallProgress {
        call_id: String,
        progress: f64,
        #[serde(skip_serializing_if = "Option::is_none")]
        total: Option<f64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// A call ended: `outcome` is `ok` or `error`.
    CallFinished {
        call_id: String,
        tool: String,
        server: String,
        outcome: &'static str,
        latency_ms: u64,
        replay_attempts: u32,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// An MCP session began (`transport` is `http` or `ws`).
    SessionOpened {
        session_id: String,
        client: String,
        transport: &'static str,
    },
    /// An MCP session ended: its WebSocket closed, it was deleted, it expired, or its client
    /// was unpaired (`reason` says which).
    SessionClosed {
        session_id: String,
        client: String,
        transport: &'static str,
        reason: String,
    },
    /// A client traded a pairing code for a token.
    ClientPaired { name: String, role: String },
    /// A client's token was revoked.
    ClientUnpaired { name: String },
    /// Wrong pairing codes were tried `wrong_tries` times, so the `codes` codes that were
    /// waiting are cancelled (whoever was guessing learns nothing more); the owner's next code
    /// works at once. If the owner did not mistype, a local program is guessing codes.
    PairingCodesBurned { wrong_tries: u32, codes: usize },
    /// A server asked for something the client cannot be asked (`elicitation/create` of a
    /// client that declared no elicitation): Switchboard shows it and waits for the person.
    ElicitationPending { elicitation: Elicitation },
    /// A pending elicitation ended: `outcome` is `accept`, `decline`, `cancel` (answered),
    /// `timeout` (nobody answered in time) or `gone` (the call it came with ended).
    ElicitationEnded {
        id: String,
        server: String,
        outcome: &'static str,
    },
    /// A server sent a log message (`notifications/message`), as the dashboard's log view
    /// shows it.
    ServerLog {
        server: String,
        #[serde(flatten)]
        entry: LogEntry,
    },
    /// The dashboard or the tray ran `action` (`connect`, `disconnect`, `adopt`, `undo`) on
    /// agent `agent` (`claude-code`, `cursor`, …): its config file and its connected state
    /// may have changed, so whoever shows the agents reads them again.
    AgentChanged { agent: String, action: &'static str },
    /// The machine woke up after `slept_s` or its network came back (`why`: `clock`, the wall
    /// clock jumped ahead of the monotonic one; `logind`, logind said so; `network`, a default
    /// route appeared or changed): the remote servers in `reconnecting` were waiting out a
    /// backoff and try again now.
    Resumed {
        why: String,
        slept_s: u64,
        reconnecting: Vec<String>,
    },
    /// This subscriber fell behind and `missed` events were dropped for it.
    Lagged { missed: u64 },
}

/// An elicitation Switchboard answers itself, as the dashboard and the desktop show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Elicitation {
    /// Switchboard's own id (`e1`, `e2`, …): what `POST /api/elicitations/{id}` answers.
    pub id: String,
    pub server: String,
    /// The paired client whose call the server asked during.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    pub message: String,
    /// `form` or `url`.
    pub mode: &'static str,
    /// The form's schema (form mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested_schema: Option<serde_json::Value>,
    /// The page to open (URL mode), only once the person agrees.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// RFC 3339: when it was asked, and when it ends unanswered.
    pub created: String,
    pub deadline: String,
}

/// One log message of a server (`notifications/message`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogEntry {
    /// RFC 3339, when Switchboard received it.
    pub received: String,
    pub level: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logger: Option<String>,
    pub data: serde_json::Value,
}

impl HubEvent {
    /// The `type` tag, used as the SSE event name.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::ProjectOnline { .. } => "project_online",
            Self::ProjectOffline { .. } => "project_offline",
            Self::DbOperation { .. } => "db_operation",
            Self::ServerState { .. } => "server_state",
            Self::ServerCrashed { .. } => "server_crashed",
            Self::ServerToolsChanged { .. } => "server_tools_changed",
            Self::CallStarted { .. } => "call_started",
            Self::CallProgress { .. } => "call_progress",
            Self::CallFinished { .. } => "call_finished",
            Self::SessionOpened { .. } => "session_opened",
            Self::SessionClosed { .. } => "session_closed",
            Self::ClientPaired { .. } => "client_paired",
            Self::ClientUnpaired { .. } => "client_unpaired",
            Self::PairingCodesBurned { .. } => "pairing_codes_burned",
            Self::ElicitationPending { .. } => "elicitation_pending",
            Self::ElicitationEnded { .. } => "elicitation_ended",
            Self::ServerLog { .. } => "server_log",
            Self::AgentChanged { .. } => "agent_changed",
            Self::Resumed { .. } => "resumed",
            Self::Lagged { .. } => "lagged",
        }
    }
}

/// Lifecycle of a supervised server, as its [`HubEvent::ServerState`] events report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerState {
    Starting,
    Running,
    /// Crashed (or lost its connection); waiting out the backoff before the next start.
    Restarting,
    /// Crashed too often; not restarted until asked.
    Failed,
    /// A remote server that wants an OAuth login (it answered 401, or its tokens could not be
    /// refreshed): parked until someone logs in (`switchboard login`, the dashboard, the tray).
    NeedsLogin,
    Disabled,
    Stopped,
    /// An on-demand server that is not running: its tools, prompts and resources are its
    /// last run's; the next call starts it.
    Idle,
}

impl ServerState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Restarting => "restarting",
            Self::Failed => "failed",
            Self::NeedsLogin => "needs_login",
            Self::Disabled => "disabled",
            Self::Stopped => "stopped",
            Self::Idle => "idle",
        }
    }
}

/// An event as delivered: numbered in publish order and stamped.
#[derive(Debug, Clone, Serialize)]
pub struct Stamped {
    /// Strictly increasing per bus; 0 for the synthetic `lagged` event.
    pub seq: u64,
    /// RFC 3339.
    pub timestamp: String,
    #[serde(flatten)]
    pub event: HubEvent,
}

/// Cheap handle to the bus; clone freely.
#[derive(Debug, Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Arc<Stamped>>,
    /// Source of `seq`; shared so that every clone numbers from the same counter.
    seq: Arc<AtomicU64>,
}

/// Default number of events a subscriber may fall behind before it starts losing them.
pub(crate) const DEFAULT_CAPACITY: usize = 4096;

impl EventBus {
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Self {
            tx,
            seq: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Whether anyone is subscribed now (producers on hot paths skip building events nobody
    /// would receive).
    pub(crate) fn has_subscribers(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    /// Publishes to every current subscriber; never blocks, never fails.
    pub(crate) fn publish(&self, event: HubEvent) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        if !self.has_subscribers() {
            // nobody to receive it: numbered (so `seq` still counts every event), not stamped
            tracing::debug!(seq, kind = event.kind(), "hub event (no subscribers)");
            return;
        }
        let stamped = Stamped {
            seq,
            timestamp: crate::now_rfc3339(),
            event,
        };
        tracing::debug!(seq, kind = stamped.event.kind(), "hub event");
        // An error only means nobody is listening right now.
        let _ = self.tx.send(Arc::new(stamped));
    }

    pub fn subscribe(&self) -> Subscriber {
        Subscriber {
            rx: self.tx.subscribe(),
        }
    }
}

/// One consumer's view of the bus.
#[derive(Debug)]
pub struct Subscriber {
    rx: broadcast::Receiver<Arc<Stamped>>,
}

impl Subscriber {
    /// The next event, a `Lagged` event after a gap, or `None` once the bus is gone.
    pub async fn recv(&mut self) -> Option<Arc<Stamped>> {
        match self.rx.recv().await {
            Ok(ev) => Some(ev),
            Err(broadcast::error::RecvError::Lagged(missed)) => Some(Arc::new(Stamped {
                seq: 0,
                timestamp: crate::now_rfc3339(),
                event: HubEvent::Lagged { missed },
            })),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }

    /// Turns the subscriber into a stream (for SSE).
    pub(crate) fn into_stream(self) -> impl futures_util::Stream<Item = Arc<Stamped>> + Send {
        futures_util::stream::unfold(self, |mut sub| async move {
            sub.recv().await.map(|ev| (ev, sub))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offline(i: usize) -> HubEvent {
        HubEvent::ProjectOffline {
            path: format!("/p/{i}"),
            name: format!("p{i}"),
        }
    }

    #[tokio::test]
    async fn slow_subscriber_is_told_how_many_it_lost_and_producer_never_waits() {
        let bus = EventBus::new(4);
        let mut slow = bus.subscribe();
        for i in 0..10 {
            bus.publish(offline(i)); // would block forever here if the bus could
        }
        let first = slow.recv().await.unwrap();
        assert_eq!(first.event, HubEvent::Lagged { missed: 6 });
        let next = slow.recv().await.unwrap();
        assert_eq!(next.event, offline(6));
        assert_eq!(next.seq, 7);
    }

    #[test]
    fn events_serialize_with_a_type_tag() {
        let json = serde_json::to_value(offline(1)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type":"project_offline","path":"/p/1","name":"p1"})
        );
    }
}
