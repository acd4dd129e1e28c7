//! `serve`: the one entry point that the headless binary, the desktop shell and every test
//! call. It opens the state, mounts the router on the given listener, and on shutdown drains:
//! sockets say goodbye, streams end, the registry is flushed, each step bounded in time.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::store::{
    FileSecrets, FileTokenStore, MemorySecrets, MemoryTokenStore, SecretStore, Secrets, Stores,
    TokenStore, TokenStoreError,
};
use crate::auth::{Auth, Roles};
use crate::config::{Config, ConfigError, TokenStoreKind};
use crate::events::{self, EventBus};
use crate::http::state::Hub;
use crate::http::{AppState, LocalGuard, router};
use crate::mcp::McpGateway;
use crate::pairing::Pairing;
use crate::registration::{RegistrationServer, Registry};
use crate::store::{ProjectRow, Store, StoreError};
use crate::telemetry::Telemetry;

/// How long shutdown waits for connections and sockets to finish their goodbyes.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the gateway could not start (or stopped).
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "refusing to listen on {0}: Switchboard is local-only; use a loopback address such as \
         127.0.0.1"
    )]
    NotLoopback(SocketAddr),
    #[error("cannot open {path}: {source}")]
    Telemetry {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot use the token store ({store}): {error}")]
    Tokens {
        store: String,
        error: TokenStoreError,
    },
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
}

/// A gateway whose state is open but which is not yet serving. The desktop shell uses this to
/// subscribe to events before serving; `serve` is `open` then `run`.
#[derive(Debug)]
pub struct Gateway {
    hub: Arc<Hub>,
    tasks: TaskTracker,
    data_dir: PathBuf,
    /// Bound in `open`, so that `switchboard pair` works as soon as the gateway is announced.
    #[cfg(unix)]
    control: Option<tokio::net::UnixListener>,
    /// Where sleeps, wake-ups and network changes are noticed (see [`crate::wake`]).
    wake: crate::wake::Sources,
}

impl Gateway {
    /// Opens the data dir, the registry and the token store for a server that will listen on
    /// `local`.
    pub async fn open(
        config: &Config,
        local: SocketAddr,
        shutdown: CancellationToken,
    ) -> Result<Self, ServeError> {
        Self::open_with(config, local, Stores::default(), shutdown).await
    }

    /// [`open`](Self::open), with the `stores` given in place of the configured ones.
    pub async fn open_with(
        config: &Config,
        local: SocketAddr,
        stores: Stores,
        shutdown: CancellationToken,
    ) -> Result<Self, ServeError> {
        if !local.ip().is_loopback() {
            return Err(ServeError::NotLoopback(local));
        }
        let data_dir = config.resolved_data_dir()?;
        let (store, rows) = Store::open(&data_dir)?;
        let store = Arc::new(store);
        tracing::info!(
            db = %store.path().display(),
            known_projects = rows.len(),
            "project registry open"
        );
        let telemetry =
            Telemetry::open(&data_dir, store.clone()).map_err(|source| ServeError::Telemetry {
                path: data_dir.join(crate::telemetry::FILE_NAME),
                source,
            })?;
        // Tokens before servers: a gateway that cannot authenticate starts no children.
        let tokens = match stores.tokens {
            Some(tokens) => tokens,
            None => token_store(config, &data_dir, stores.file_fallback).await?,
        };
        let headers: Arc<dyn SecretStore> = stores
            .secrets
            .unwrap_or_else(|| Arc::new(crate::auth::keychain::KeychainSecrets));
        // OAuth logins live beside the paired clients: in the keychain, or in a 0600 file
        // where those are in one.
        let oauth: Arc<dyn SecretStore> = match stores.oauth {
            Some(store) => store,
            None if tokens.describe().starts_with("file ") => {
                Arc::new(FileSecrets::new(&data_dir.join(OAUTH_FILE)))
            }
            None if tokens.describe().starts_with("memory") => Arc::new(MemorySecrets::default()),
            None => Arc::new(crate::auth::keychain::KeychainSecrets),
        };
        let secrets = Secrets {
            headers,
            oauth,
            oauth_service: format!("{}-oauth", config.auth.keychain_service),
        };
        let opened = Opened {
            store,
            rows,
            telemetry,
            tokens,
            secrets,
        };
        let mut gateway = Self::assemble(config, local, opened, data_dir, shutdown).await?;
        if let Some(clock) = stores.wall_clock {
            gateway.wake.wall = clock;
        }
        if let Some(routes) = stores.routes {
            gateway.wake.routes = routes;
        }
        gateway.wake.system_bus = stores.system_bus;
        #[cfg(unix)]
        {
            let path = gateway.data_dir.join(crate::pairing::CONTROL_SOCKET);
            gateway.control = match crate::pairing::bind_control(&path) {
                Ok(l) => Some(l),
                Err(e) => {
                    tracing::error!(error = %e, "cannot open the control socket; `switchboard pair` will not work");
                    None
                }
            };
        }
        Ok(gateway)
    }

    /// The gateway over stores that are open already: the one place its parts are put
    /// together (`open` for a real data dir, the router's tests over in-memory stores).
    async fn assemble(
        config: &Config,
        local: SocketAddr,
        opened: Opened,
        data_dir: PathBuf,
        shutdown: CancellationToken,
    ) -> Result<Self, ServeError> {
        let Opened {
            store,
            rows,
            telemetry,
            tokens,
            secrets,
        } = opened;
        let bus = EventBus::new(events::DEFAULT_CAPACITY);
        let registry = Registry::new(
            store,
            rows,
            bus.clone(),
            config.registration.max_sockets_per_project,
        );
        let tasks = TaskTracker::new();
        let registration = Arc::new(RegistrationServer::new(
            registry,
            config.registration.clone(),
            shutdown.clone(),
            tasks.clone(),
        ));
        let roles = Roles {
            default_role: config.auth.default_role.clone(),
            roles: config.effective_roles(),
            code_ttl: Duration::from_millis(config.auth.code_ttl_ms.max(1)),
        };
        let auth = Auth::open(tokens.clone(), roles, bus.clone())
            .await
            .map_err(|error| ServeError::Tokens {
                store: tokens.describe(),
                error,
            })?;
        tracing::info!(store = %auth.store_description(), clients = auth.clients().len(), "tokens");
        let mcp = McpGateway::new(
            &config.servers,
            config.gateway.clone(),
            secrets,
            bus.clone(),
            telemetry,
            shutdown.child_token(),
            tasks.clone(),
        );
        if let Some(path) = config.source.clone() {
            tasks.spawn(watch_config(path, mcp.clone(), shutdown.clone()));
        }
        let dispatcher = crate::mcp::Dispatcher::new(mcp.clone(), auth.roles().clone());
        let hub = Arc::new(Hub {
            bus,
            dispatcher,
            ws_sockets: Default::default(),
            registration,
            mcp,
            auth,
            rmcp_sessions: Arc::new(rmcp_sessions()),
            gateway_config: config.gateway.clone(),
            guard: LocalGuard::new(local.port(), config.http.allowed_origins.clone()),
            started: Instant::now(),
            config_path: config.source.clone(),
            data_dir: data_dir.clone(),
            agents_home: config.agents_home.clone(),
            config_edit: Default::default(),
            shutdown,
            tasks: tasks.clone(),
        });
        Ok(Self {
            hub,
            tasks,
            data_dir,
            #[cfg(unix)]
            control: None,
            wake: crate::wake::Sources::default(),
        })
    }

    /// The MCP gateway (upstream servers, aggregation).
    pub fn mcp(&self) -> McpGateway {
        self.hub.mcp.clone()
    }

    /// Paired clients: issue codes, list, unpair (the tray's menu).
    pub fn auth(&self) -> crate::auth::Auth {
        self.hub.auth.clone()
    }

    /// A handle that unpairs a client and closes its sessions, usable after `run` started.
    pub fn unpairer(&self) -> Unpairer {
        Unpairer(self.hub.pairing())
    }

    /// The agents (Claude Code, Cursor, …): list them, connect and disconnect them (the
    /// tray's Pair menu), as the dashboard does.
    pub fn agents(&self) -> crate::setup::agents::Agents {
        self.hub.agents()
    }

    /// The event bus, for consumers outside the HTTP API (tray, notifications).
    pub fn bus(&self) -> EventBus {
        self.hub.bus.clone()
    }

    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    /// Serves until the shutdown token is cancelled, then drains.
    pub async fn run(mut self, listener: TcpListener) -> Result<(), ServeError> {
        let shutdown = self.hub.shutdown.clone();
        #[cfg(unix)]
        if let Some(control) = self.control.take() {
            self.tasks.spawn(crate::pairing::serve_control(
                control,
                self.data_dir.join(crate::pairing::CONTROL_SOCKET),
                self.hub.pairing(),
                shutdown.clone(),
                self.tasks.clone(),
            ));
        }
        crate::wake::watch(
            self.hub.mcp.clone(),
            self.wake.clone(),
            &shutdown,
            &self.tasks,
        );
        self.tasks.spawn(self.hub.mcp.sessions().clone().sweep(
            self.hub.gateway_config.session_idle(),
            session_sweep(self.hub.gateway_config.session_idle()),
            shutdown.clone(),
        ));
        let mut names = self.hub.mcp.watch_names();
        let listed = names.borrow_and_update().clone();
        let announcement = match crate::discovery::announce(
            &self.data_dir,
            crate::discovery::Discovery::for_this_process(listener.local_addr()?)
                .with_servers(&listed),
        )
        .await
        {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(error = %e, dir = %self.data_dir.display(),
                    "cannot write the discovery file; local tools will not find this gateway");
                None
            }
        };
        // The file lists each server's own endpoints: kept current as servers come and go, until
        // shutdown hands the announcement back to be withdrawn.
        let keeping = shutdown.child_token();
        let announcement = announcement.map(|mut a| {
            let stop = keeping.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return a,
                        changed = names.changed() => {
                            if changed.is_err() {
                                stop.cancelled().await;
                                return a;
                            }
                            let now = names.borrow_and_update().clone();
                            a.servers_changed(&now);
                        }
                    }
                }
            })
        });
        let app =
            router(AppState(self.hub.clone())).into_make_service_with_connect_info::<SocketAddr>();
        // No Nagle: responses (SSE especially) are written in small pieces, and waiting for
        // the peer's delayed ACK would add ~40 ms to every call.
        use axum::serve::ListenerExt;
        let listener = listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
        });
        let server = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .into_future();
        tokio::pin!(server);
        let served: Result<(), ServeError> = tokio::select! {
            biased;
            result = &mut server => result.map_err(ServeError::from),
            () = shutdown.cancelled() => {
                tracing::info!("shutting down");
                match tokio::time::timeout(DRAIN_TIMEOUT, &mut server).await {
                    Ok(result) => result.map_err(ServeError::from),
                    Err(_) => {
                        tracing::warn!("HTTP connections still open after the drain timeout");
                        Ok(())
                    }
                }
            }
        };
        // No longer taking requests: stop announcing before the slower drain below.
        keeping.cancel(); // served may have ended on its own (an error), not by shutdown
        if let Some(keeper) = announcement
            && let Ok(announcement) = keeper.await
        {
            announcement.withdraw();
        }
        served?;
        self.tasks.close();
        if tokio::time::timeout(DRAIN_TIMEOUT, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                left = self.tasks.len(),
                "sockets still closing after the drain timeout"
            );
        }
        // the call rows the telemetry writer holds go to the store before it closes
        if tokio::time::timeout(DRAIN_TIMEOUT, self.hub.mcp.telemetry().flush())
            .await
            .is_err()
        {
            tracing::warn!("telemetry writer did not finish in time");
        }
        let store = self.hub.registration.registry().store();
        if tokio::time::timeout(DRAIN_TIMEOUT, store.close())
            .await
            .is_err()
        {
            tracing::warn!("project registry writer did not finish in time");
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// How often idle sessions are looked for: a quarter of the idle time they may have, from a
/// tenth of a second to five seconds.
fn session_sweep(idle: Duration) -> Duration {
    (idle / 4).clamp(Duration::from_millis(100), Duration::from_secs(5))
}

/// rmcp's session manager, for the stateless 2026-07-28 requests rmcp still serves on `/mcp`:
/// it never holds a session (`initialize` and every session's requests are the gateway's own,
/// see `mcp/streamable`); `held` counts it to show so.
fn rmcp_sessions() -> rmcp::transport::streamable_http_server::session::local::LocalSessionManager {
    let mut m =
        rmcp::transport::streamable_http_server::session::local::LocalSessionManager::default();
    m.session_config.keep_alive = None;
    m
}

/// How often the config file is checked for changes to `[[servers]]`.
const CONFIG_POLL: Duration = Duration::from_secs(1);

/// Applies edits of the config file's servers live. A file that does not parse is reported
/// and ignored: the servers keep running as they are.
async fn watch_config(path: PathBuf, mcp: McpGateway, shutdown: CancellationToken) {
    let mut last = std::fs::read(&path).ok();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(CONFIG_POLL) => {}
        }
        let now = tokio::fs::read(&path).await.ok();
        if now == last {
            continue;
        }
        last = now.clone();
        let Some(bytes) = now else {
            tracing::warn!(path = %path.display(), "config file is gone; servers keep running");
            continue;
        };
        let text = String::from_utf8_lossy(&bytes);
        match Config::parse(&text).and_then(|c| c.validate().map(|()| c)) {
            Ok(config) => {
                tracing::info!(path = %path.display(), servers = config.servers.len(), "config changed; applying servers");
                mcp.apply(&config.servers);
            }
            Err(e) => tracing::error!(path = %path.display(), error = %e, "config change ignored"),
        }
    }
}

/// Unpairs clients of a running gateway (revokes, closes sessions and sockets).
#[derive(Debug, Clone)]
pub struct Unpairer(Pairing);

impl Unpairer {
    /// `Ok(false)` if no client has that name.
    pub async fn unpair(&self, name: &str) -> Result<bool, TokenStoreError> {
        self.0.unpair(name).await
    }
}

/// The stores a gateway runs on, open.
struct Opened {
    store: Arc<Store>,
    rows: Vec<ProjectRow>,
    telemetry: Telemetry,
    tokens: Arc<dyn TokenStore>,
    /// Where remote servers' header secrets are read from and OAuth logins kept.
    secrets: Secrets,
}

/// Runs Switchboard on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    serve_with(listener, config, Stores::default(), shutdown).await
}

/// [`serve`], with the `stores` given in place of the configured ones (tests: in memory).
pub async fn serve_with(
    listener: TcpListener,
    config: Config,
    stores: Stores,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let local = listener.local_addr()?;
    Gateway::open_with(&config, local, stores, shutdown)
        .await?
        .run(listener)
        .await
}

impl Gateway {
    /// The address clients use, for the startup line.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.hub.guard.port())
    }
}

/// The file the token hashes are kept in without a keychain, in the data dir.
pub(crate) const CLIENTS_FILE: &str = "clients.json";
/// Where OAuth logins are kept when the token hashes are in [`CLIENTS_FILE`].
pub(crate) const OAUTH_FILE: &str = "oauth.json";

/// The token store the config asks for; `file_fallback`: see [`Stores::file_fallback`].
async fn token_store(
    config: &Config,
    data_dir: &std::path::Path,
    file_fallback: bool,
) -> Result<Arc<dyn TokenStore>, ServeError> {
    let path = data_dir.join(CLIENTS_FILE);
    Ok(match config.auth.token_store {
        TokenStoreKind::Memory => Arc::new(MemoryTokenStore::default()),
        TokenStoreKind::File => {
            tracing::warn!(path = %path.display(), "token hashes kept in a file (token_store = \"file\"), not in the OS keychain");
            Arc::new(FileTokenStore::new(&path))
        }
        TokenStoreKind::Keychain => keychain_store(config).await?,
        TokenStoreKind::Auto if !file_fallback => keychain_store(config).await?,
        TokenStoreKind::Auto => match keychain_store(config).await {
            Ok(store) => {
                if path.exists() {
                    tracing::warn!(
                        "using the OS keychain; the clients paired while there was none are in \
                         {} and are not used: pair them again, or set [auth] token_store = \
                         \"file\" to keep using that file",
                        path.display()
                    );
                }
                store
            }
            Err(ServeError::Tokens {
                error: TokenStoreError::Unavailable(cause),
                ..
            }) => {
                tracing::warn!(
                    %cause,
                    "no OS keychain on this machine: the token hashes of paired clients are \
                     kept in {} (mode 0600) instead. Set [auth] token_store = \"file\" to \
                     choose that file, or \"keychain\" to insist on the keychain",
                    path.display()
                );
                Arc::new(FileTokenStore::new(&path))
            }
            Err(e) => return Err(e),
        },
    })
}

/// The OS keychain store, probed now (off the runtime, bounded) so that a missing or locked
/// keychain is reported at startup rather than at the first pairing.
async fn keychain_store(config: &Config) -> Result<Arc<dyn TokenStore>, ServeError> {
    let store = Arc::new(crate::auth::keychain::KeychainTokenStore::new(
        &config.auth.keychain_service,
    ));
    let probe = store.clone();
    let checked = tokio::time::timeout(
        crate::auth::STORE_TIMEOUT,
        tokio::task::spawn_blocking(move || probe.probe()),
    )
    .await;
    let error = match checked {
        Ok(Ok(Ok(()))) => return Ok(store),
        Ok(Ok(Err(e))) => e,
        Ok(Err(e)) => TokenStoreError::Io(e.to_string()),
        Err(_) => TokenStoreError::Locked(format!(
            "the keychain did not answer within {} s; is it locked? Unlock it and restart",
            crate::auth::STORE_TIMEOUT.as_secs()
        )),
    };
    Err(ServeError::Tokens {
        store: store.describe(),
        error,
    })
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode, header};
    use tower::ServiceExt as _;

    use super::*;
    use crate::auth::store::MemoryTokenStore;

    /// The router over in-memory stores: no data dir, no keychain, no child process.
    async fn app() -> (axum::Router, Auth) {
        let (store, rows) = Store::in_memory().unwrap();
        let store = Arc::new(store);
        let opened = Opened {
            telemetry: Telemetry::in_memory(store.clone()).unwrap(),
            store,
            rows,
            tokens: Arc::new(MemoryTokenStore::default()),
            secrets: Secrets::in_memory(),
        };
        let local: SocketAddr = "127.0.0.1:11391".parse().unwrap();
        let gateway = Gateway::assemble(
            &Config::default(),
            local,
            opened,
            PathBuf::from("/nonexistent"),
            CancellationToken::new(),
        )
        .await
        .unwrap();
        let auth = gateway.auth();
        (router(AppState(gateway.hub.clone())), auth)
    }

    async fn send(app: &axum::Router, req: Request<Body>) -> axum::response::Response {
        app.clone().oneshot(req).await.unwrap()
    }

    /// A request as a local client sends it (our `Host`), with `headers` on top.
    fn request(method: &str, path: &str, headers: &[(header::HeaderName, &str)]) -> Request<Body> {
        let mut r = Request::builder().method(method).uri(path);
        if !headers.iter().any(|(h, _)| h == header::HOST) {
            r = r.header(header::HOST, "127.0.0.1:11391");
        }
        for (name, value) in headers {
            r = r.header(name, *value);
        }
        r.body(Body::empty()).unwrap()
    }

    async fn body(r: axum::response::Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    /// Sends `req` and checks it is refused with `status` and the error `code`.
    async fn refused(app: &axum::Router, req: Request<Body>, status: StatusCode, code: &str) {
        let what = format!("{} {}", req.method(), req.uri());
        let r = send(app, req).await;
        assert_eq!(r.status(), status, "{what}");
        if status == StatusCode::UNAUTHORIZED {
            assert!(r.headers().contains_key(header::WWW_AUTHENTICATE), "{what}");
        }
        assert_eq!(body(r).await["error"]["code"], code, "{what}");
    }

    #[tokio::test]
    async fn the_router_guards_hosts_and_origins_and_asks_for_tokens() {
        let (app, auth) = app().await;
        let r = send(&app, request("GET", "/healthz", &[])).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(body(r).await["status"], "ok");

        // DNS rebinding and foreign pages are refused before any route
        let evil_host = [(header::HOST, "evil.example:11391")];
        let evil_origin = [(header::ORIGIN, "http://evil.example")];
        for (req, status, code) in [
            (
                request("GET", "/healthz", &evil_host),
                StatusCode::MISDIRECTED_REQUEST,
                "foreign_host",
            ),
            (
                request("GET", "/healthz", &evil_origin),
                StatusCode::FORBIDDEN,
                "foreign_origin",
            ),
        ] {
            refused(&app, req, status, code).await;
        }

        // the webview's preflight is answered before any token is asked for
        let webview = [(header::ORIGIN, "tauri://localhost")];
        let r = send(&app, request("OPTIONS", "/api/servers", &webview)).await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        assert_eq!(
            r.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "tauri://localhost"
        );

        // protected routes and `/mcp`: no token, a wrong one, a paired one
        let unauthorized = StatusCode::UNAUTHORIZED;
        let wrong = [(header::AUTHORIZATION, "Bearer sb_not_paired")];
        for path in ["/api/servers", "/mcp"] {
            refused(
                &app,
                request("GET", path, &[]),
                unauthorized,
                "token_required",
            )
            .await;
            refused(
                &app,
                request("GET", path, &wrong),
                unauthorized,
                "token_invalid",
            )
            .await;
        }
        let bearer = format!("Bearer {}", auth.issue_ephemeral("router-test"));
        let paired = [(header::AUTHORIZATION, bearer.as_str())];
        let r = send(&app, request("GET", "/api/servers", &paired)).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(body(r).await["servers_total"], 0, "no server configured");
    }
}
