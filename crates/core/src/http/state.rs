//! What the HTTP handlers share: [`Hub`], behind the cheap handle [`AppState`], and the
//! sub-states that domain handlers take instead of the whole hub (`FromRef`).
//!
//! It holds state and builds nothing: `server` opens the stores and assembles the hub, tests
//! assemble one over in-memory stores (`AppState::in_memory`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::FromRef;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::guard::LocalGuard;
use crate::auth::Auth;
use crate::config::GatewayConfig;
use crate::events::EventBus;
use crate::mcp::McpGateway;
use crate::mcp::dispatch::Dispatcher;
use crate::mcp::ws::SocketCount;
use crate::pairing::Pairing;
use crate::registration::RegistrationServer;

/// Everything the handlers share.
#[derive(Debug)]
pub(crate) struct Hub {
    pub(crate) bus: EventBus,
    pub(crate) registration: Arc<RegistrationServer>,
    pub(crate) mcp: McpGateway,
    pub(crate) auth: Auth,
    /// rmcp's sessions behind `/mcp`, so that unpairing can close a client's sessions.
    pub(crate) rmcp_sessions: Arc<LocalSessionManager>,
    pub(crate) gateway_config: GatewayConfig,
    /// The MCP dispatcher for `/ws` and the `/mcp` fast path (roles fixed at startup).
    pub(crate) dispatcher: Dispatcher,
    /// Open `/ws` sockets, against `gateway_config.ws_max_connections`.
    pub(crate) ws_sockets: Arc<SocketCount>,
    pub(crate) guard: LocalGuard,
    pub(crate) started: Instant,
    /// The config file the dashboard edits (add, enable, disable, import); `None` when the
    /// gateway runs on defaults without a file.
    pub(crate) config_path: Option<PathBuf>,
    /// The data dir (adopt remembers there what it moved).
    pub(crate) data_dir: PathBuf,
    /// Where agents' configs are looked for (`Config::agents_home`; `None`: this user's).
    pub(crate) agents_home: Option<PathBuf>,
    /// One config edit at a time: read, change, write must not interleave.
    pub(crate) config_edit: Arc<tokio::sync::Mutex<()>>,
    /// Root of the shutdown tree: streams and sockets watch it.
    pub(crate) shutdown: CancellationToken,
    /// Every task the handlers start (`/ws` sockets, watch streams): drained on shutdown.
    pub(crate) tasks: TaskTracker,
}

/// Shared state of every handler: a cheap clone.
#[derive(Debug, Clone)]
pub struct AppState(pub(crate) Arc<Hub>);

impl FromRef<AppState> for Arc<RegistrationServer> {
    fn from_ref(state: &AppState) -> Self {
        state.0.registration.clone()
    }
}

impl FromRef<AppState> for Pairing {
    fn from_ref(state: &AppState) -> Self {
        state.0.pairing()
    }
}

impl FromRef<AppState> for LocalGuard {
    fn from_ref(state: &AppState) -> Self {
        state.0.guard.clone()
    }
}

impl Hub {
    /// Pairing and unpairing (`POST /pair`, the control socket, the tray).
    pub(crate) fn pairing(&self) -> Pairing {
        Pairing::new(self.auth.clone(), self.mcp.clone(), self.guard.port())
    }

    /// The agents' Connect, Disconnect, Adopt and Undo (the dashboard, the tray).
    pub(crate) fn agents(&self) -> crate::setup::agents::Agents {
        crate::setup::agents::Agents::new(
            self.agents_home.clone(),
            self.pairing(),
            self.config_path.clone(),
            self.data_dir.clone(),
            self.mcp.secrets(),
            self.config_edit.clone(),
            self.bus.clone(),
        )
    }
}
