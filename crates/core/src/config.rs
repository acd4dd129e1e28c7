//! Configuration: the TOML file, its defaults, and where Switchboard keeps its files.
//!
//! The file lives in the platform config dir (`directories`), command-line flags override it,
//! and state goes to the platform data dir unless the file or a flag names another.
//! It is plain data, with no runtime handles: the stores a caller hands in instead of the
//! configured ones travel beside it (`auth::store::Stores`, `server::serve_with`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The address Switchboard listens on unless told otherwise.
pub(crate) const DEFAULT_LISTEN: &str = "127.0.0.1:11391";

/// Everything `serve` needs to know.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Loopback address and port of the one HTTP/WebSocket server.
    pub listen: SocketAddr,
    /// Where state (the SQLite registry, logs) lives; the platform data dir when unset.
    pub data_dir: Option<PathBuf>,
    pub registration: RegistrationConfig,
    pub http: HttpConfig,
    pub gateway: GatewayConfig,
    pub auth: AuthConfig,
    /// Role → allowlist of tools (exact names or globs such as `fs__*`). Empty: locked out.
    pub roles: BTreeMap<String, Vec<String>>,
    /// The user's MCP servers, supervised and aggregated behind `/mcp`.
    pub servers: Vec<ServerConfig>,
    /// The file this config was read from: watched for live changes to `servers`.
    #[serde(skip)]
    pub source: Option<PathBuf>,
    /// Where the dashboard's Connect and Adopt buttons look for agents' configs: this
    /// user's home and config dir when unset (tests give a directory of their own).
    #[serde(skip)]
    pub agents_home: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.parse().expect("constant address parses"),
            data_dir: None,
            registration: RegistrationConfig::default(),
            http: HttpConfig::default(),
            gateway: GatewayConfig::default(),
            auth: AuthConfig::default(),
            roles: BTreeMap::new(),
            servers: Vec::new(),
            source: None,
            agents_home: None,
        }
    }
}

/// Where tokens are kept and which role a client gets by default.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    pub token_store: TokenStoreKind,
    /// Role of clients paired without one. Must be in `[roles]` when that table is given;
    /// without `[roles]` it may see every tool.
    pub default_role: String,
    /// Keychain service name (tests use their own).
    pub keychain_service: String,
    /// How long a pairing code is valid.
    pub code_ttl_ms: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            token_store: TokenStoreKind::Auto,
            default_role: "default".into(),
            keychain_service: "switchboard".into(),
            code_ttl_ms: 120_000,
        }
    }
}

/// Where token hashes live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenStoreKind {
    /// The default: the OS keychain; where there is none (no Secret Service on the bus, not a
    /// locked one), the headless `switchboard serve` keeps them in `clients.json` like
    /// [`File`](Self::File), with a warning. The desktop app never falls back.
    Auto,
    /// The OS keychain (Secret Service, macOS Keychain, Windows Credential Manager), insisted
    /// on: without one the gateway does not start.
    Keychain,
    /// `clients.json` (mode 0600) in the data dir: only where there is no keychain.
    File,
    /// Nothing survives a restart (tests).
    Memory,
}

/// One upstream MCP server: a stdio child process (`command`) or a remote endpoint (`url`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Prefix of its tools (`<name>__<tool>`): letters, digits, `-` and `_`, no `__`.
    pub name: String,
    /// The program of a stdio server; empty for a remote one (exactly one of the two is set).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub command: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Environment variables of a stdio server whose values are read when it starts: from
    /// the OS keychain (`{ keychain = "service/account" }`) or the gateway's environment
    /// (`{ env = "VAR" }`), so that no secret sits in this file (`switchboard adopt` puts
    /// the secrets it finds there).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secret_env: BTreeMap<String, HeaderValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<PathBuf>,
    /// A remote server: `http(s)://…` speaks Streamable HTTP, `ws(s)://…` MCP over WebSocket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Extra HTTP headers sent to a remote server (on every request, or on the WebSocket
    /// handshake); values may come from the OS keychain.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, HeaderValue>,
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
    /// Per-tool replay contract, overriding the tool's annotations: `"safe"` replays a call
    /// that was in flight when the server crashed, `"never"` does not.
    #[serde(default)]
    pub replay: BTreeMap<String, ReplayContract>,
    /// Per-call timeout for this server, overriding `gateway.call_timeout_ms`.
    #[serde(default)]
    pub call_timeout_ms: Option<u64>,
    /// Whether every client session shares one instance of the server (`"shared"`) or gets
    /// its own (`"isolated"`: its own child process or remote session, so that requests the
    /// server sends reach that client only, and its roots are its own).
    #[serde(default, skip_serializing_if = "SessionMode::is_shared")]
    pub sessions: SessionMode,
    /// With `sessions = "isolated"`: how many instances may run at once (one per client
    /// session that used the server); a session past it gets an error saying so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_instances: Option<usize>,
    /// OAuth towards a remote server (all optional: a server that answers 401 is logged in to
    /// with discovery and dynamic registration without any of it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth: Option<OAuthConfig>,
    /// When the server runs: `"always"` (from the gateway's start) or `"on_demand"` (its
    /// tools, prompts and resources come from the last run's listing, kept in SQLite; it
    /// starts on the first call and stops after `idle_stop_ms` unused). Unset: the
    /// gateway's `default_start`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<StartMode>,
    /// An on-demand server stops after this long with no call in flight, no subscription
    /// and no isolated instance; unset: the gateway's `idle_stop_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_stop_ms: Option<u64>,
}

/// When a server runs (see [`ServerConfig::start`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StartMode {
    #[default]
    Always,
    OnDemand,
}

/// `[servers.oauth]`: how Switchboard identifies itself to a remote server's authorization
/// server, and what it asks for.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthConfig {
    /// A client registered with the authorization server beforehand (first in the order:
    /// configured credentials, client ID metadata document, dynamic registration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Its secret, for a confidential client: text, `{ keychain = "service/account" }` or
    /// `{ env = "VAR" }` (a `prefix` makes no sense here and is refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<HeaderValue>,
    /// An `https://` URL of a client ID metadata document, used as the client ID where the
    /// authorization server supports that (`client_id_metadata_document_supported`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_metadata_url: Option<String>,
    /// Scopes to ask for; empty: what the server's challenge names, else its
    /// `scopes_supported`, else none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// A fixed loopback port for the redirect (`http://127.0.0.1:<port>/oauth/callback`), for
    /// authorization servers where the redirect URI must be registered ahead; without it the
    /// gateway's own address is the redirect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_port: Option<u16>,
}

impl OAuthConfig {
    fn validate(&self, name: &str) -> Result<(), String> {
        if self.client_secret.is_some() && self.client_id.is_none() {
            return Err(format!(
                "server {name:?}: oauth.client_secret needs oauth.client_id (the client it \
                 belongs to)"
            ));
        }
        if let Some(HeaderValue::Keychain { prefix, .. } | HeaderValue::Env { prefix, .. }) =
            &self.client_secret
            && !prefix.is_empty()
        {
            return Err(format!(
                "server {name:?}: oauth.client_secret takes no prefix"
            ));
        }
        if let Some(url) = &self.client_metadata_url {
            let ok = reqwest::Url::parse(url)
                .is_ok_and(|u| u.scheme() == "https" && u.path() != "/" && !u.path().is_empty());
            if !ok {
                return Err(format!(
                    "server {name:?}: oauth.client_metadata_url {url:?} must be an https:// URL \
                     with a path (the document's own address is the client ID)"
                ));
            }
        }
        if self.redirect_port == Some(0) {
            return Err(format!(
                "server {name:?}: oauth.redirect_port must be a port number (1-65535); leave it \
                 out to use the gateway's own address"
            ));
        }
        if let Some(bad) = self.scopes.iter().find(|s| {
            s.is_empty()
                || s.chars()
                    .any(|c| c.is_whitespace() || c == '"' || c == '\\')
        }) {
            return Err(format!(
                "server {name:?}: oauth scope {bad:?} is not a scope token (no spaces or quotes)"
            ));
        }
        Ok(())
    }
}

fn enabled_by_default() -> bool {
    true
}

/// How client sessions share a server (see [`ServerConfig::sessions`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionMode {
    #[default]
    Shared,
    Isolated,
}

impl SessionMode {
    fn is_shared(&self) -> bool {
        *self == Self::Shared
    }
}

/// Isolated instances of one server running at once when `max_instances` is not set.
pub const DEFAULT_MAX_INSTANCES: usize = 16;

/// How Switchboard reaches a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport<'a> {
    /// A child process speaking newline-delimited JSON-RPC on stdio.
    Stdio { command: &'a str },
    /// Streamable HTTP (2025-11-25) at an `http(s)` URL.
    Http { url: &'a str },
    /// One JSON-RPC message per text frame at a `ws(s)` URL.
    WebSocket { url: &'a str },
}

impl ServerConfig {
    /// The transport this entry asks for (after [`Config::validate`]; an entry with neither a
    /// command nor a URL reads as a stdio server with an empty command).
    pub fn transport(&self) -> Transport<'_> {
        match &self.url {
            Some(url) if url.starts_with("ws://") || url.starts_with("wss://") => {
                Transport::WebSocket { url }
            }
            Some(url) => Transport::Http { url },
            None => Transport::Stdio {
                command: &self.command,
            },
        }
    }

    /// Whether each client session gets its own instance of this server.
    pub fn is_isolated(&self) -> bool {
        self.sessions == SessionMode::Isolated
    }

    /// The bound on live isolated instances.
    pub fn max_instances(&self) -> usize {
        self.max_instances.unwrap_or(DEFAULT_MAX_INSTANCES)
    }

    pub fn is_remote(&self) -> bool {
        self.url.is_some()
    }

    /// Whether the server starts only when a call needs it, given the gateway's `limits`.
    pub fn is_on_demand(&self, limits: &GatewayConfig) -> bool {
        self.start.unwrap_or(limits.default_start) == StartMode::OnDemand
    }

    /// How long an on-demand server may sit unused before it is stopped.
    pub fn idle_stop(&self, limits: &GatewayConfig) -> Duration {
        ms(self.idle_stop_ms.unwrap_or(limits.idle_stop_ms))
    }

    /// Checks the parts that serde cannot: one of command/url, a usable URL, header names.
    pub(crate) fn validate(&self) -> Result<(), String> {
        validate_server_name(&self.name)?;
        let name = &self.name;
        match (self.sessions, self.max_instances) {
            (SessionMode::Shared, Some(_)) => {
                return Err(format!(
                    "server {name:?}: max_instances applies to sessions = \"isolated\" only"
                ));
            }
            (SessionMode::Isolated, Some(0)) => {
                return Err(format!("server {name:?}: max_instances must be at least 1"));
            }
            _ => {}
        }
        let Some(url) = &self.url else {
            if self.command.trim().is_empty() {
                return Err(format!(
                    "server {name:?} needs either command = \"…\" (a stdio server) or \
                     url = \"…\" (a remote one)"
                ));
            }
            if let Some(var) = self
                .secret_env
                .keys()
                .find(|v| v.is_empty() || v.contains('='))
            {
                return Err(format!(
                    "server {name:?}: {var:?} is not an environment variable name"
                ));
            }
            if !self.headers.is_empty() {
                return Err(format!(
                    "server {name:?}: headers apply to remote servers (url = \"…\"); a stdio \
                     server gets its settings through env"
                ));
            }
            if self.oauth.is_some() {
                return Err(format!(
                    "server {name:?}: [servers.oauth] applies to remote servers (url = \"…\")"
                ));
            }
            return Ok(());
        };
        if !self.command.is_empty() {
            return Err(format!(
                "server {name:?} has both command and url; a server is either a stdio command or \
                 a remote URL"
            ));
        }
        if !self.args.is_empty()
            || !self.env.is_empty()
            || !self.secret_env.is_empty()
            || self.cwd.is_some()
        {
            return Err(format!(
                "server {name:?}: args, env and cwd apply to stdio servers (command = \"…\"), \
                 not to url = {url:?}"
            ));
        }
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| format!("server {name:?}: url {url:?} is not a URL ({e})"))?;
        if !matches!(parsed.scheme(), "http" | "https" | "ws" | "wss") {
            return Err(format!(
                "server {name:?}: url {url:?} must start with http://, https:// (Streamable \
                 HTTP) or ws://, wss:// (MCP over WebSocket)"
            ));
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(format!("server {name:?}: url {url:?} has no host"));
        }
        if let Some(oauth) = &self.oauth {
            oauth.validate(name)?;
        }
        for (header, value) in &self.headers {
            if reqwest::header::HeaderName::from_bytes(header.as_bytes()).is_err() {
                return Err(format!(
                    "server {name:?}: {header:?} is not a valid HTTP header name"
                ));
            }
            if let HeaderValue::Plain(v) = value
                && reqwest::header::HeaderValue::from_str(v).is_err()
            {
                return Err(format!(
                    "server {name:?}: the value of header {header:?} is not a valid HTTP header \
                     value (control characters or non-ASCII)"
                ));
            }
        }
        Ok(())
    }
}

/// A header value of a remote server: literal text, or read when connecting.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "RawHeaderValue", into = "RawHeaderValue")]
pub enum HeaderValue {
    /// `Authorization = "Bearer abc"`.
    Plain(String),
    /// `Authorization = { keychain = "service/account", prefix = "Bearer " }`: the secret
    /// stored in the OS keychain under that service and account, after `prefix`.
    Keychain {
        service: String,
        account: String,
        prefix: String,
    },
    /// `Authorization = { env = "MY_TOKEN", prefix = "Bearer " }`: an environment variable of
    /// the gateway, after `prefix`.
    Env { var: String, prefix: String },
}

// Never print a header's value: it is usually a credential.
impl std::fmt::Debug for HeaderValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Plain(_) => f.write_str("Plain(<redacted>)"),
            Self::Keychain {
                service, account, ..
            } => write!(f, "Keychain({service}/{account})"),
            Self::Env { var, .. } => write!(f, "Env({var})"),
        }
    }
}

/// The TOML shapes of [`HeaderValue`].
#[derive(Deserialize, Serialize)]
#[serde(untagged)]
enum RawHeaderValue {
    Plain(String),
    Source(BTreeMap<String, String>),
}

impl TryFrom<RawHeaderValue> for HeaderValue {
    type Error = String;

    fn try_from(raw: RawHeaderValue) -> Result<Self, String> {
        const SHAPES: &str = "a header value is a string, { keychain = \"service/account\" } or \
            { env = \"VARIABLE\" }, either with an optional prefix = \"Bearer \"";
        let mut table = match raw {
            RawHeaderValue::Plain(s) => return Ok(Self::Plain(s)),
            RawHeaderValue::Source(t) => t,
        };
        let prefix = table.remove("prefix").unwrap_or_default();
        let keychain = table.remove("keychain");
        let env = table.remove("env");
        if let Some(key) = table.keys().next() {
            return Err(format!("unknown key {key:?} in a header value; {SHAPES}"));
        }
        match (keychain, env) {
            (Some(entry), None) => match entry.split_once('/') {
                Some((service, account)) if !service.is_empty() && !account.is_empty() => {
                    Ok(Self::Keychain {
                        service: service.to_owned(),
                        account: account.to_owned(),
                        prefix,
                    })
                }
                _ => Err(format!(
                    "keychain = {entry:?} must name \"service/account\" (both non-empty)"
                )),
            },
            (None, Some(var)) if !var.is_empty() => Ok(Self::Env { var, prefix }),
            _ => Err(SHAPES.to_owned()),
        }
    }
}

impl From<HeaderValue> for RawHeaderValue {
    fn from(v: HeaderValue) -> Self {
        let with_prefix = |mut t: BTreeMap<String, String>, prefix: String| {
            if !prefix.is_empty() {
                t.insert("prefix".into(), prefix);
            }
            Self::Source(t)
        };
        match v {
            HeaderValue::Plain(s) => Self::Plain(s),
            HeaderValue::Keychain {
                service,
                account,
                prefix,
            } => with_prefix(
                BTreeMap::from([("keychain".into(), format!("{service}/{account}"))]),
                prefix,
            ),
            HeaderValue::Env { var, prefix } => {
                with_prefix(BTreeMap::from([("env".into(), var)]), prefix)
            }
        }
    }
}

/// Whether a tool call may be sent again after the server died while running it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplayContract {
    Safe,
    Never,
}

/// Server names are tool-name prefixes, so they are restricted.
pub(crate) fn validate_server_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 32 {
        return Err(format!("server name {name:?} must be 1 to 32 characters"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!(
            "server name {name:?} may contain only letters, digits, '-' and '_'"
        ));
    }
    if name.contains("__") || name.ends_with('_') {
        return Err(format!(
            "server name {name:?} may not contain \"__\" or end with '_' (it separates server and tool)"
        ));
    }
    if name == "switchboard" {
        return Err("server name \"switchboard\" is reserved for built-in tools".into());
    }
    // `/ws/<server>` is a server's own endpoint, and `/ws/mcp` is the registration server
    if name == "mcp" {
        return Err(
            "server name \"mcp\" is reserved: /ws/mcp is the registration endpoint, so a \
             server of that name could have no /ws/<server> endpoint; choose another name"
                .into(),
        );
    }
    Ok(())
}

/// Limits and timers of the MCP gateway.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// Every upstream call ends by then (the caller gets a timeout error).
    pub call_timeout_ms: u64,
    /// Time for a server to start and answer `initialize` and `tools/list`.
    pub start_timeout_ms: u64,
    /// Crashes within `crash_window_ms` that mark a server `failed` (no more restarts).
    pub max_crashes: usize,
    pub crash_window_ms: u64,
    /// Restart backoff: doubles from the first to the max, with jitter.
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    /// A server that stays up this long before it crashes or loses its connection has its
    /// backoff (stdio and remote) start again from the first delay.
    pub healthy_after_ms: u64,
    /// How long a call waits for its server to come back (starting, restarting, reconnecting)
    /// before it fails with the server's state; a restart known to come later fails it at once.
    pub restart_wait_ms: u64,
    /// Graceful stop: after stdin closes, how long before the child is killed.
    pub stop_grace_ms: u64,
    /// Largest `/mcp` request body (413 beyond).
    pub max_body_bytes: usize,
    /// Lines of stderr kept per server.
    pub stderr_lines: usize,
    /// Open `/ws` sockets at most; one more is closed with 1013 "Server at capacity".
    pub ws_max_connections: usize,
    /// `/ws` heartbeat: a ping this often to a peer that sent no message since the last one; a
    /// peer that has not answered by the next is dropped.
    pub ws_heartbeat_ms: u64,
    /// A Streamable HTTP session with no request, no open stream and no call for this long is
    /// closed and forgotten; its client's next request gets 404 and starts a new one.
    pub session_idle_ms: u64,
    /// Reconnect backoff of remote servers: doubles from the first to the max (a little
    /// jitter on top), back to the first after `healthy_after_ms` of health. Remote servers
    /// are never marked `failed` by a crash loop: a network outage should heal by itself.
    pub remote_backoff_initial_ms: u64,
    pub remote_backoff_max_ms: u64,
    /// Items per page of `tools/list`, `resources/list`, `resources/templates/list` and
    /// `prompts/list` to clients (at least 1); the rest follow through `nextCursor`.
    pub page_size: usize,
    /// How long a server's request, turned into an `input_required` result for a 2026-07-28
    /// client, waits for the client's retry with the answers; then the server gets an error
    /// and the call is cancelled. (The call itself still ends by `call_timeout_ms`.)
    pub input_wait_ms: u64,
    /// An elicitation Switchboard shows itself (its client cannot be asked) ends unanswered
    /// after this long, at most 600,000 (10 min); the server gets an error.
    pub elicitation_timeout_ms: u64,
    /// When servers without a `start` of their own run: `"always"` or `"on_demand"`.
    pub default_start: StartMode,
    /// An on-demand server with no call in flight, subscription or isolated instance for
    /// this long is stopped (a server's own `idle_stop_ms` overrides it).
    pub idle_stop_ms: u64,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            call_timeout_ms: 120_000,
            start_timeout_ms: 30_000,
            max_crashes: 5,
            crash_window_ms: 60_000,
            backoff_initial_ms: 250,
            backoff_max_ms: 30_000,
            healthy_after_ms: 10_000,
            restart_wait_ms: 10_000,
            stop_grace_ms: 2_000,
            max_body_bytes: 4 * 1024 * 1024,
            stderr_lines: 200,
            ws_max_connections: 16_384,
            ws_heartbeat_ms: 30_000,
            session_idle_ms: 30 * 60_000,
            remote_backoff_initial_ms: 500,
            remote_backoff_max_ms: 30_000,
            page_size: 100,
            input_wait_ms: 120_000,
            elicitation_timeout_ms: 600_000,
            default_start: StartMode::Always,
            idle_stop_ms: 300_000,
        }
    }
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v.max(1))
}

impl GatewayConfig {
    pub(crate) fn ws_heartbeat(&self) -> Duration {
        ms(self.ws_heartbeat_ms)
    }

    pub(crate) fn session_idle(&self) -> Duration {
        ms(self.session_idle_ms)
    }

    /// `elicitation_timeout_ms`, at most 10 minutes (a server request to its client is
    /// answered by then anyway).
    pub(crate) fn elicitation_timeout(&self) -> Duration {
        ms(self.elicitation_timeout_ms.min(600_000))
    }

    pub(crate) fn call_timeout(&self) -> Duration {
        ms(self.call_timeout_ms)
    }
    pub(crate) fn start_timeout(&self) -> Duration {
        ms(self.start_timeout_ms)
    }
    pub(crate) fn crash_window(&self) -> Duration {
        ms(self.crash_window_ms)
    }
    pub(crate) fn healthy_after(&self) -> Duration {
        ms(self.healthy_after_ms)
    }
    pub(crate) fn stop_grace(&self) -> Duration {
        ms(self.stop_grace_ms)
    }
}

/// Limits and timers of the registration server (`/ws/mcp`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistrationConfig {
    /// Registration sockets open at once, over all clients (all share 127.0.0.1, so the cap is
    /// global, never per address). The next one is answered `error` and closed.
    pub max_connections: usize,
    /// Sockets a project keeps; when a new one registers, the oldest beyond this get
    /// `goodbye{reason:"superseded"}`. The real client opens a socket a second and never closes
    /// old ones, so without this the count only grows.
    pub max_sockets_per_project: usize,
    /// How often the server sends `ping`.
    pub ping_interval_ms: u64,
    /// Unanswered pings after which the socket is closed.
    pub max_missed_pongs: u32,
    /// A socket that has not registered by then is closed.
    pub idle_timeout_ms: u64,
    /// Largest text message we parse; a larger one is answered `invalid_message` and the socket
    /// stays usable. Frames beyond 16 times this are refused by the transport (close 1009).
    pub max_message_bytes: usize,
}

impl Default for RegistrationConfig {
    fn default() -> Self {
        Self {
            max_connections: 16_384,
            max_sockets_per_project: 3,
            ping_interval_ms: 30_000,
            max_missed_pongs: 3,
            idle_timeout_ms: 10_000,
            max_message_bytes: 256 * 1024,
        }
    }
}

impl RegistrationConfig {
    pub(crate) fn ping_interval(&self) -> Duration {
        Duration::from_millis(self.ping_interval_ms.max(1))
    }

    pub(crate) fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms.max(1))
    }

    /// The transport's hard limit for one WebSocket message.
    pub(crate) fn transport_limit(&self) -> usize {
        self.max_message_bytes.saturating_mul(16).max(64 * 1024)
    }
}

/// HTTP-level policy.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Extra `Origin` values to accept besides the loopback and Tauri webview origins.
    pub allowed_origins: Vec<String>,
}

/// A config file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("no home directory found, so there is no default {0} dir; pass it explicitly")]
    NoHome(&'static str),
}

impl Config {
    /// Reads `path`, or the default config file if there is one, or returns the defaults.
    /// A path given explicitly must exist.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let (path, explicit) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => match default_config_file() {
                Some(p) => (p, false),
                None => return Ok(Self::default()),
            },
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self::default());
            }
            Err(source) => return Err(ConfigError::Read { path, source }),
        };
        let mut config = Self::parse(&text).map_err(|message| ConfigError::Parse {
            path: path.clone(),
            message,
        })?;
        config.validate().map_err(|message| ConfigError::Invalid {
            path: path.clone(),
            message,
        })?;
        config.source = Some(path);
        Ok(config)
    }

    /// Parses TOML text.
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// The roles in force: `[roles]`, or a default role that sees every tool.
    pub(crate) fn effective_roles(&self) -> BTreeMap<String, Vec<String>> {
        if self.roles.is_empty() {
            BTreeMap::from([(self.auth.default_role.clone(), vec!["*".to_owned()])])
        } else {
            self.roles.clone()
        }
    }

    /// Checks what the types cannot: server names and their uniqueness, the default role.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if !self.roles.is_empty() && !self.roles.contains_key(&self.auth.default_role) {
            return Err(format!(
                "auth.default_role {:?} is not in [roles] (roles: {})",
                self.auth.default_role,
                self.roles.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for s in &self.servers {
            s.validate()?;
            if !seen.insert(s.name.as_str()) {
                return Err(format!("server name {:?} is used twice", s.name));
            }
        }
        Ok(())
    }

    /// The data dir in force: the configured one or the platform's.
    pub fn resolved_data_dir(&self) -> Result<PathBuf, ConfigError> {
        match &self.data_dir {
            Some(d) => Ok(d.clone()),
            None => project_dirs()
                .map(|d| d.data_dir().to_path_buf())
                .ok_or(ConfigError::NoHome("data")),
        }
    }
}

fn project_dirs() -> Option<directories::ProjectDirs> {
    directories::ProjectDirs::from("dev", "Switchboard", "switchboard")
}

/// `config.toml` in the platform config dir.
pub fn default_config_file() -> Option<PathBuf> {
    project_dirs().map(|d| d.config_dir().join("config.toml"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_listen_on_loopback_11391() {
        let c = Config::default();
        assert_eq!(c.listen.to_string(), "127.0.0.1:11391");
        assert_eq!(c.registration.ping_interval(), Duration::from_secs(30));
        assert_eq!(c.gateway.healthy_after(), Duration::from_secs(10));
    }

    #[test]
    fn file_overrides_some_fields_and_keeps_the_rest() {
        let c = Config::parse("[registration]\nmax_sockets_per_project = 5\n").unwrap();
        assert_eq!(c.registration.max_sockets_per_project, 5);
        assert_eq!(c.registration.max_missed_pongs, 3);
    }

    #[test]
    fn unknown_keys_are_an_error_naming_the_key() {
        let err = Config::parse("[registration]\nmax_socket = 5\n").unwrap_err();
        assert!(err.contains("max_socket"), "{err}");
    }

    #[test]
    fn servers_parse_with_defaults_and_names_are_checked() {
        let c = Config::parse(
            "[[servers]]\nname = \"fs\"\ncommand = \"npx\"\nargs = [\"-y\", \"x\"]\n[servers.replay]\nwrite = \"never\"\n",
        )
        .unwrap();
        assert_eq!(c.servers.len(), 1);
        assert!(c.servers[0].enabled);
        assert_eq!(c.servers[0].replay["write"], ReplayContract::Never);
        c.validate().unwrap();
        for bad in ["a__b", "with space", "", "switchboard", "mcp", "trail_"] {
            assert!(validate_server_name(bad).is_err(), "{bad}");
        }
        let mcp = Config::parse("[[servers]]\nname = \"mcp\"\ncommand = \"x\"\n").unwrap();
        assert!(
            mcp.validate().unwrap_err().contains("/ws/mcp"),
            "the refusal says why"
        );
        let dup = Config::parse(
            "[[servers]]\nname = \"a\"\ncommand = \"x\"\n[[servers]]\nname = \"a\"\ncommand = \"y\"\n",
        )
        .unwrap();
        assert!(dup.validate().unwrap_err().contains("twice"));
    }

    #[test]
    fn remote_servers_take_a_url_and_headers_from_text_keychain_or_env() {
        let c = Config::parse(
            r#"
[[servers]]
name = "web"
url = "https://mcp.example.com/mcp"
headers = { Authorization = { keychain = "my-service/my-account", prefix = "Bearer " }, X-Team = "blue", X-Key = { env = "WEB_KEY" } }

[[servers]]
name = "sock"
url = "ws://127.0.0.1:9000/ws"
"#,
        )
        .unwrap();
        c.validate().unwrap();
        let web = &c.servers[0];
        assert!(matches!(web.transport(), Transport::Http { url } if url.ends_with("/mcp")));
        assert!(matches!(
            c.servers[1].transport(),
            Transport::WebSocket { .. }
        ));
        assert_eq!(
            web.headers["Authorization"],
            HeaderValue::Keychain {
                service: "my-service".into(),
                account: "my-account".into(),
                prefix: "Bearer ".into()
            }
        );
        assert_eq!(web.headers["X-Team"], HeaderValue::Plain("blue".into()));
        assert_eq!(
            web.headers["X-Key"],
            HeaderValue::Env {
                var: "WEB_KEY".into(),
                prefix: String::new()
            }
        );
        // Values never show in debug output (logs), only where they come from.
        let debug = format!("{web:?}");
        assert!(
            !debug.contains("blue") && debug.contains("my-service/my-account"),
            "{debug}"
        );
        // It writes back as it was read.
        let again: ServerConfig = toml::from_str(&toml::to_string(web).unwrap()).unwrap();
        assert_eq!(&again, web);
    }

    #[test]
    fn a_server_is_a_command_or_a_url_and_bad_remote_entries_are_explained() {
        let check = |entry: &str| {
            Config::parse(&format!("[[servers]]\nname = \"s\"\n{entry}\n"))
                .and_then(|c| c.validate())
                .unwrap_err()
        };
        for (entry, expected) in [
            ("", "either command"),
            (
                "command = \"x\"\nurl = \"http://h/mcp\"",
                "both command and url",
            ),
            ("url = \"ftp://h/mcp\"", "must start with http://"),
            ("url = \"not a url\"", "is not a URL"),
            (
                "url = \"http://h/mcp\"\nargs = [\"-v\"]",
                "args, env and cwd apply to stdio",
            ),
            (
                "command = \"x\"\nheaders = { A = \"b\" }",
                "headers apply to remote servers",
            ),
            (
                "url = \"http://h/mcp\"\nheaders = { \"bad name\" = \"b\" }",
                "not a valid HTTP header name",
            ),
            (
                "url = \"http://h/mcp\"\nheaders = { A = { keychain = \"no-slash\" } }",
                "service/account",
            ),
            (
                "url = \"http://h/mcp\"\nheaders = { A = { keychan = \"a/b\" } }",
                "unknown key \"keychan\"",
            ),
            (
                "url = \"http://h/mcp\"\nheaders = { A = { prefix = \"x\" } }",
                "a header value is a string",
            ),
            (
                "command = \"x\"\nsessions = \"private\"",
                "unknown variant `private`",
            ),
            (
                "command = \"x\"\nmax_instances = 4",
                "applies to sessions = \"isolated\" only",
            ),
            (
                "command = \"x\"\nsessions = \"isolated\"\nmax_instances = 0",
                "must be at least 1",
            ),
        ] {
            let err = check(entry);
            assert!(err.contains(expected), "{entry:?}: {err}");
        }
    }

    #[test]
    fn sessions_are_shared_unless_isolated_with_a_bound_of_16() {
        let c = Config::parse(
            "[[servers]]\nname = \"a\"\ncommand = \"x\"\n\
             [[servers]]\nname = \"b\"\ncommand = \"x\"\nsessions = \"isolated\"\n\
             [[servers]]\nname = \"c\"\nurl = \"http://h/mcp\"\nsessions = \"isolated\"\nmax_instances = 3\n",
        )
        .unwrap();
        c.validate().unwrap();
        assert!(!c.servers[0].is_isolated());
        assert!(c.servers[1].is_isolated());
        assert_eq!(c.servers[1].max_instances(), DEFAULT_MAX_INSTANCES);
        assert_eq!(c.servers[2].max_instances(), 3);
        let again: ServerConfig = toml::from_str(&toml::to_string(&c.servers[2]).unwrap()).unwrap();
        assert_eq!(again, c.servers[2]);
        assert!(!toml::to_string(&c.servers[0]).unwrap().contains("sessions"));
    }

    #[test]
    fn explicit_missing_file_is_an_error_naming_it() {
        let err = Config::load(Some(Path::new("/nonexistent/sb.toml"))).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/sb.toml"), "{err}");
    }
}
