//! OAuth 2.1 towards one remote server (MCP authorization, 2025-11-25 with the 2025-03-26
//! fallbacks), on rmcp's `auth` module: discovery (protected-resource metadata from the
//! challenge or the well-known URLs, authorization-server metadata and OpenID discovery with
//! the path-insertion variants, default endpoints on the server's origin), PKCE S256, the
//! `resource` parameter, dynamic registration, refresh with rotation kept.
//!
//! What is ours: the order of client registration (configured credentials, a client ID
//! metadata document where the authorization server supports it, the client registered at an
//! earlier login, dynamic registration), the login in progress (one per server, found by its
//! `state` when the browser comes back, bounded in time), what is kept in the token store and
//! when, and what the transports and the supervisor learn from a `401` or a `403`.
//!
//! One [`Record`] per server is kept in the OAuth store (the OS keychain, or `oauth.json` where
//! paired clients are in a file), service `<keychain service>-oauth`, account: the server's
//! name. It holds the authorization server's metadata, the client (a registered client's
//! secret too; a configured secret stays where the config names it) and rmcp's stored
//! credentials (access and refresh tokens). Nothing here logs or returns a token; the API
//! shows whether a server is logged in, never with what.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rmcp::transport::auth::{
    AuthError, AuthorizationManager, AuthorizationMetadata, AuthorizationMetadataSource,
    CredentialRefreshGuard, CredentialStore, OAuthClientConfig, StoredCredentials,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::auth::store::{Secrets, delete_secret, find_secret, read_secret, write_secret};
use crate::config::{HeaderValue, OAuthConfig, ServerConfig};

/// How long a login waits for the browser to come back, unless its caller says otherwise.
pub(crate) const LOGIN_TIMEOUT: Duration = Duration::from_secs(300);
/// The longest any caller may make a login wait.
pub(crate) const MAX_LOGIN_TIMEOUT: Duration = Duration::from_secs(1800);
/// Logins in a row asking for scopes the server still refuses (`403 insufficient_scope`)
/// before a call says that logging in again will not help.
pub(crate) const MAX_STEP_UPS: u32 = 3;
/// The path of the redirect, on the gateway or on a server's `redirect_port`.
pub(crate) const CALLBACK_PATH: &str = "/oauth/callback";
/// The client name sent with dynamic registration.
const CLIENT_NAME: &str = "Switchboard";

/// What a server's login is doing, for whoever waits on it (`switchboard login`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginState {
    /// No login started since the gateway did.
    Idle,
    /// Waiting for the browser to come back to the callback.
    Waiting,
    /// Tokens stored; the server is being started with them.
    Done,
    /// The login failed or timed out; nothing was stored.
    Failed(String),
}

/// Why a server cannot be connected to with OAuth right now.
#[derive(Debug, Clone)]
pub(crate) enum Refusal {
    /// Only a login helps: no tokens, or they were refused and could not be refreshed.
    NeedsLogin(String),
    /// Something that may pass by itself (the authorization server is down, the keychain
    /// locked): the supervisor tries again with its backoff.
    Transient(String),
}

impl Refusal {
    pub(crate) fn message(&self) -> &str {
        match self {
            Self::NeedsLogin(m) | Self::Transient(m) => m,
        }
    }
}

/// What the token store holds for one server.
#[derive(Clone, Serialize, Deserialize)]
struct Record {
    /// The server URL the login was for: a record for another URL is not used.
    url: String,
    metadata: AuthorizationMetadata,
    client_id: String,
    /// A registered client's secret (dynamic registration may issue one). A configured
    /// secret is never copied here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client_secret: Option<String>,
    redirect_uri: String,
    registration: Registration,
    /// Scopes asked for at the login (for a step-up, the next asks for these and more).
    #[serde(default)]
    scopes: Vec<String>,
    credentials: Option<StoredCredentials>,
}

/// How the client of a [`Record`] was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Registration {
    /// `oauth.client_id` of the config.
    Configured,
    /// `oauth.client_metadata_url`, as the client ID.
    MetadataDocument,
    /// Dynamic client registration (RFC 7591).
    Registered,
}

// Never print a record: it holds tokens and maybe a secret.
impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record")
            .field("url", &self.url)
            .field("client_id", &self.client_id)
            .field("registration", &self.registration)
            .finish_non_exhaustive()
    }
}

/// One record and where it is written: rmcp's credential store for one manager. Loads answer
/// from memory (a keychain read per request would be slow, and may hang); saves write
/// through, bounded in time, and fail the exchange or refresh when the store refuses.
struct Cell {
    secrets: Secrets,
    account: String,
    record: Mutex<Record>,
    /// Held across a refresh and its save: two callers never spend the same refresh token.
    refresh: Arc<tokio::sync::Mutex<()>>,
}

impl Cell {
    fn new(secrets: Secrets, account: &str, record: Record) -> Arc<Self> {
        Arc::new(Self {
            secrets,
            account: account.to_owned(),
            record: Mutex::new(record),
            refresh: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    fn snapshot(&self) -> Record {
        self.record.lock().expect("record lock").clone()
    }

    async fn write(&self, record: &Record) -> Result<(), String> {
        let json = serde_json::to_string(record).expect("records serialize");
        write_secret(
            &self.secrets.oauth,
            &self.secrets.oauth_service,
            &self.account,
            json,
        )
        .await
    }
}

/// rmcp's view of a [`Cell`].
struct CellStore(Arc<Cell>);

#[async_trait]
impl CredentialStore for CellStore {
    async fn load(&self) -> Result<Option<StoredCredentials>, AuthError> {
        Ok(self
            .0
            .record
            .lock()
            .expect("record lock")
            .credentials
            .clone())
    }

    async fn save(&self, credentials: StoredCredentials) -> Result<(), AuthError> {
        let mut next = self.0.snapshot();
        next.credentials = Some(credentials);
        self.0
            .write(&next)
            .await
            .map_err(AuthError::CredentialStoreError)?;
        *self.0.record.lock().expect("record lock") = next;
        Ok(())
    }

    async fn clear(&self) -> Result<(), AuthError> {
        let mut next = self.0.snapshot();
        next.credentials = None;
        self.0
            .write(&next)
            .await
            .map_err(AuthError::CredentialStoreError)?;
        *self.0.record.lock().expect("record lock") = next;
        Ok(())
    }

    async fn acquire_refresh_guard(&self) -> Result<Option<CredentialRefreshGuard>, AuthError> {
        let guard = self.0.refresh.clone().lock_owned().await;
        Ok(Some(CredentialRefreshGuard::new(guard)))
    }
}

/// A manager with tokens, and the record it keeps them in.
struct Active {
    manager: Arc<AuthorizationManager>,
    cell: Arc<Cell>,
}

/// A login waiting for the browser.
struct Pending {
    /// The `state` of the authorization URL: the callback must bring it back.
    state: String,
    manager: AuthorizationManager,
    cell: Arc<Cell>,
    expires: Instant,
    /// The listener on `redirect_port`, when the config names one: ends with the login.
    listener: Option<tokio_util::sync::CancellationToken>,
}

/// What a `403 insufficient_scope` asked for, and how often a login has not been enough.
#[derive(Debug, Default)]
struct StepUp {
    /// Scopes the server asked for that the tokens lack; the next login asks for them too.
    wanted: Vec<String>,
    /// Logins since the server first asked for `wanted`.
    logins: u32,
}

/// The OAuth side of one remote server; lives as long as its supervisor.
pub(crate) struct OAuth {
    server: String,
    secrets: Secrets,
    /// `None` until the store was read (at the first connect).
    active: Mutex<Option<Option<Arc<Active>>>>,
    pending: Mutex<Option<Pending>>,
    /// The last `WWW-Authenticate` of a `401`: discovery starts from it.
    challenge: Mutex<Option<String>>,
    /// Set by a transport that met a `401` it could not get past: the supervisor parks the
    /// server as `needs_login` with this reason instead of reconnecting.
    needs_login: Mutex<Option<String>>,
    step_up: Mutex<StepUp>,
    login: watch::Sender<LoginState>,
}

impl std::fmt::Debug for OAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuth")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// `oauth` of the config, or nothing asked for.
fn oauth_config(cfg: &ServerConfig) -> OAuthConfig {
    cfg.oauth.clone().unwrap_or_default()
}

/// Whether OAuth applies to `cfg`: a remote server without its own `Authorization` header.
pub(crate) fn applies(cfg: &ServerConfig) -> bool {
    cfg.is_remote()
        && !cfg
            .headers
            .keys()
            .any(|h| h.eq_ignore_ascii_case("authorization"))
}

/// The URL the authorization is for: the server's, a WebSocket one as its HTTP twin.
fn resource_url(cfg: &ServerConfig) -> Result<String, String> {
    let url = cfg
        .url
        .as_deref()
        .ok_or_else(|| format!("server {:?} is not a remote server", cfg.name))?;
    Ok(if let Some(rest) = url.strip_prefix("ws://") {
        format!("http://{rest}")
    } else if let Some(rest) = url.strip_prefix("wss://") {
        format!("https://{rest}")
    } else {
        url.to_owned()
    })
}

/// An rmcp error as a person reads it: what failed and, where it helps, why.
fn explain(e: &AuthError) -> String {
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

impl OAuth {
    pub(crate) fn new(server: &str, secrets: Secrets) -> Self {
        Self {
            server: server.to_owned(),
            secrets,
            active: Mutex::new(None),
            pending: Mutex::new(None),
            challenge: Mutex::new(None),
            needs_login: Mutex::new(None),
            step_up: Mutex::new(StepUp::default()),
            login: watch::channel(LoginState::Idle).0,
        }
    }

    /// How to log in, for messages.
    fn how_to_log_in(&self) -> String {
        format!(
            "log in with `switchboard login {}` (or Log in in the dashboard or the tray)",
            self.server
        )
    }

    /// The reason a server needs a login, with how to log in.
    pub(crate) fn needs_login_reason(&self, why: &str) -> String {
        format!("{why}; {}", self.how_to_log_in())
    }

    /// The record in the store, read once; `None` when there is none for this URL.
    async fn active(&self, cfg: &ServerConfig) -> Result<Option<Arc<Active>>, Refusal> {
        if let Some(known) = self.active.lock().expect("oauth lock").clone() {
            return Ok(known);
        }
        let found = find_secret(
            &self.secrets.oauth,
            &self.secrets.oauth_service,
            &self.server,
        )
        .await
        .map_err(Refusal::Transient)?;
        let url = resource_url(cfg).map_err(Refusal::Transient)?;
        let record = match found.map(|json| serde_json::from_str::<Record>(&json)) {
            None => None,
            Some(Ok(r)) if r.url == url => Some(r),
            Some(Ok(r)) => {
                tracing::info!(server = %self.server, stored = %r.url, configured = %url,
                    "the stored OAuth login is for another URL; not used");
                None
            }
            Some(Err(e)) => {
                tracing::warn!(server = %self.server, error = %e,
                    "the stored OAuth login cannot be read; a new login replaces it");
                None
            }
        };
        let active = match record {
            Some(record) => Some(Arc::new(self.restore(cfg, record).await?)),
            None => None,
        };
        *self.active.lock().expect("oauth lock") = Some(active.clone());
        Ok(active)
    }

    /// A manager over a stored record: its metadata and client as they were, no discovery.
    async fn restore(&self, cfg: &ServerConfig, record: Record) -> Result<Active, Refusal> {
        let mut manager = AuthorizationManager::new_allowing_private_addresses(record.url.as_str())
            .await
            .map_err(|e| Refusal::Transient(explain(&e)))?;
        manager.set_metadata(record.metadata.clone());
        let secret = match record.registration {
            Registration::Configured => self.configured_secret(cfg).await?,
            _ => record.client_secret.clone(),
        };
        let mut client = OAuthClientConfig::new(&record.client_id, &record.redirect_uri);
        if let Some(secret) = secret {
            client = client.with_client_secret(secret);
        }
        manager
            .configure_client(client)
            .map_err(|e| Refusal::Transient(explain(&e)))?;
        let cell = Cell::new(self.secrets.clone(), &self.server, record);
        manager.set_credential_store(CellStore(cell.clone()));
        Ok(Active {
            manager: Arc::new(manager),
            cell,
        })
    }

    /// The configured client secret, read now (keychain or environment).
    async fn configured_secret(&self, cfg: &ServerConfig) -> Result<Option<String>, Refusal> {
        let Some(value) = oauth_config(cfg).client_secret else {
            return Ok(None);
        };
        let secret = match value {
            HeaderValue::Plain(s) => s,
            HeaderValue::Env { var, .. } => std::env::var(&var).map_err(|_| {
                Refusal::Transient(format!(
                    "oauth.client_secret: environment variable {var} is not set (or not \
                     UTF-8) in the gateway's environment"
                ))
            })?,
            HeaderValue::Keychain {
                service, account, ..
            } => read_secret(&self.secrets.headers, &service, &account)
                .await
                .map_err(|e| Refusal::Transient(format!("oauth.client_secret: {e}")))?,
        };
        Ok(Some(secret))
    }

    /// The access token to send now, refreshed first when it expires within 30 s; `None`
    /// when no login is stored (the server may not need one).
    pub(crate) async fn bearer(&self, cfg: &ServerConfig) -> Result<Option<String>, Refusal> {
        let Some(active) = self.active(cfg).await? else {
            return Ok(None);
        };
        match active.manager.get_access_token().await {
            Ok(token) => Ok(Some(token)),
            Err(AuthError::AuthorizationRequired) => Err(Refusal::NeedsLogin(
                self.needs_login_reason("the login has expired and could not be refreshed"),
            )),
            Err(e) => Err(Refusal::Transient(format!(
                "cannot get an access token: {}",
                explain(&e)
            ))),
        }
    }

    /// After a `401` to a request that carried a token: a new one from the refresh token
    /// (rotation kept), or why only a login helps now.
    pub(crate) async fn refresh(&self, challenge: Option<String>) -> Result<String, Refusal> {
        if challenge.is_some() {
            *self.challenge.lock().expect("oauth lock") = challenge;
        }
        let active = self.active.lock().expect("oauth lock").clone().flatten();
        let Some(active) = active else {
            return Err(Refusal::NeedsLogin(
                self.needs_login_reason("the server asks for a login (HTTP 401)"),
            ));
        };
        match active.manager.refresh_token().await {
            Ok(t) => {
                use oauth2::TokenResponse as _;
                tracing::info!(server = %self.server, "access token refreshed after a 401");
                Ok(t.access_token().secret().to_owned())
            }
            Err(e @ (AuthError::AuthorizationRequired | AuthError::TokenRefreshRejected(_))) => {
                tracing::warn!(server = %self.server, error = %explain(&e),
                    "the server refused the token and it cannot be refreshed");
                Err(Refusal::NeedsLogin(self.needs_login_reason(
                    "the server refused the access token (HTTP 401) and it could not be \
                     refreshed",
                )))
            }
            Err(e) => Err(Refusal::Transient(format!(
                "the server refused the access token (HTTP 401) and refreshing it failed: {}",
                explain(&e)
            ))),
        }
    }

    /// A transport met a `401` it cannot get past: the server needs a login.
    pub(crate) fn note_unauthorized(&self, challenge: Option<String>, why: String) {
        if challenge.is_some() {
            *self.challenge.lock().expect("oauth lock") = challenge;
        }
        *self.needs_login.lock().expect("oauth lock") = Some(why);
    }

    /// What a transport noted (once): `Some` parks the server as `needs_login`.
    pub(crate) fn take_needs_login(&self) -> Option<String> {
        self.needs_login.lock().expect("oauth lock").take()
    }

    /// A `403 insufficient_scope` asking for `scope`: the error for the call, and the scopes
    /// remembered for the next login.
    pub(crate) fn step_up(&self, scope: Option<&str>) -> String {
        let asked: Vec<String> = scope
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        let mut step = self.step_up.lock().expect("oauth lock");
        let new = asked.iter().any(|s| !step.wanted.contains(s));
        if new {
            step.logins = 0;
            for s in asked {
                if !step.wanted.contains(&s) {
                    step.wanted.push(s);
                }
            }
        }
        let scopes = if step.wanted.is_empty() {
            "more scope than the login granted".to_owned()
        } else {
            format!("the scope {:?}", step.wanted.join(" "))
        };
        if step.logins >= MAX_STEP_UPS {
            format!(
                "server '{}' refuses this without {scopes} (HTTP 403 insufficient_scope), still \
                 after {} logins asking for it: the authorization server does not grant it to \
                 this account",
                self.server, step.logins
            )
        } else {
            format!(
                "server '{}' needs {scopes} for this (HTTP 403 insufficient_scope); {} to grant \
                 it, then try again",
                self.server,
                self.how_to_log_in().replacen("log in", "log in again", 1)
            )
        }
    }

    /// Whether a login is stored for this server (read from the store if not yet).
    pub(crate) async fn logged_in(&self, cfg: &ServerConfig) -> bool {
        matches!(self.active(cfg).await, Ok(Some(_)))
    }

    pub(crate) fn login_state(&self) -> watch::Receiver<LoginState> {
        self.login.subscribe()
    }

    /// Whether the login waiting for the browser has this `state`.
    pub(crate) fn owns_state(&self, state: &str) -> bool {
        self.pending
            .lock()
            .expect("oauth lock")
            .as_ref()
            .is_some_and(|p| p.state == state)
    }

    /// Starts a login: discovery, client registration, the authorization URL to open (with
    /// PKCE S256, `state` and `resource`). The callback is `redirect` (the gateway's own
    /// address, or the configured `redirect_port`'s); the login is forgotten after
    /// `timeout`. A login already waiting is replaced.
    pub(crate) async fn begin(
        &self,
        cfg: &ServerConfig,
        redirect: &str,
        timeout: Duration,
        listener: Option<tokio_util::sync::CancellationToken>,
    ) -> Result<String, String> {
        let url = resource_url(cfg)?;
        let oauth = oauth_config(cfg);
        let fail = |why: String| {
            self.login.send_replace(LoginState::Failed(why.clone()));
            why
        };
        let mut manager = AuthorizationManager::new_allowing_private_addresses(url.as_str())
            .await
            .map_err(|e| fail(format!("cannot prepare the login: {}", explain(&e))))?;
        let challenge = self.challenge.lock().expect("oauth lock").clone();
        let resolved = manager
            .resolve_metadata_from_challenge(challenge.as_deref())
            .await
            .map_err(|e| {
                fail(format!(
                    "cannot find how to log in to {url}: {}",
                    explain(&e)
                ))
            })?;
        let metadata = resolved.metadata;
        let discovered = resolved.source != AuthorizationMetadataSource::LegacyEndpointFallback;
        // A server that named its metadata in the challenge is past 2025-03-26: guessing the
        // old default endpoints would only hide why its metadata cannot be used.
        let advertised = challenge.as_deref().and_then(|c| {
            let base = reqwest::Url::parse(&url).ok()?;
            rmcp::transport::auth::WWWAuthenticateParams::parse(c, &base).resource_metadata_url
        });
        if !discovered && let Some(advertised) = advertised {
            return Err(fail(format!(
                "the protected-resource metadata that {url} names ({advertised}) cannot be \
                 used: it is missing or not valid metadata, and no other metadata was found"
            )));
        }
        // What a failure below is to be read with, when nothing was discovered.
        let legacy = if discovered {
            ""
        } else {
            " (the server publishes no OAuth metadata, so its 2025-03-26 default endpoints were \
             used)"
        };
        // PKCE S256 or nothing: metadata that does not list it is refused before anything is
        // registered. The 2025-03-26 default endpoints come without metadata to ask.
        match &metadata.code_challenge_methods_supported {
            Some(methods) if methods.iter().any(|m| m == "S256") => {}
            Some(methods) => {
                return Err(fail(format!(
                    "the authorization server of {url} does not offer PKCE with S256 (it \
                     offers {}); Switchboard logs in only with S256",
                    if methods.is_empty() {
                        "none".to_owned()
                    } else {
                        methods.join(", ")
                    }
                )));
            }
            None if discovered => {
                return Err(fail(format!(
                    "the authorization server of {url} does not say it supports PKCE \
                     (code_challenge_methods_supported is missing from its metadata); \
                     Switchboard logs in only with PKCE S256"
                )));
            }
            None => {}
        }
        manager.set_metadata(metadata.clone());

        // Scopes: the config's; else the challenge's, else scopes_supported, else none; and
        // whatever a 403 asked for on top.
        let mut scopes = if oauth.scopes.is_empty() {
            manager.select_scopes(None, &[])
        } else {
            oauth.scopes.clone()
        };
        let stored = self.active.lock().expect("oauth lock").clone().flatten();
        {
            let mut step = self.step_up.lock().expect("oauth lock");
            if !step.wanted.is_empty() {
                if let Some(a) = &stored {
                    for s in a.cell.snapshot().scopes {
                        if !scopes.contains(&s) {
                            scopes.push(s);
                        }
                    }
                }
                for s in &step.wanted {
                    if !scopes.contains(s) {
                        scopes.push(s.clone());
                    }
                }
                step.logins += 1;
            }
        }
        let scope_refs: Vec<&str> = scopes.iter().map(String::as_str).collect();

        // The client, in the order of the spec.
        let supports_document = metadata
            .additional_fields
            .get("client_id_metadata_document_supported")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false);
        let previous = stored.map(|a| a.cell.snapshot()).filter(|r| {
            r.registration == Registration::Registered
                && r.redirect_uri == redirect
                && r.metadata.issuer == metadata.issuer
                && r.metadata.token_endpoint == metadata.token_endpoint
        });
        let (registration, client_id, registered_secret) = if let Some(id) = &oauth.client_id {
            let secret = self
                .configured_secret(cfg)
                .await
                .map_err(|r| fail(r.message().to_owned()))?;
            let mut client = OAuthClientConfig::new(id, redirect);
            if let Some(secret) = secret {
                client = client.with_client_secret(secret);
            }
            manager
                .configure_client(client)
                .map_err(|e| fail(explain(&e)))?;
            (Registration::Configured, id.clone(), None)
        } else if let Some(doc) = oauth
            .client_metadata_url
            .as_ref()
            .filter(|_| supports_document)
        {
            manager
                .configure_client(OAuthClientConfig::new(doc, redirect))
                .map_err(|e| fail(explain(&e)))?;
            (Registration::MetadataDocument, doc.clone(), None)
        } else if let Some(previous) = previous {
            let mut client = OAuthClientConfig::new(&previous.client_id, redirect);
            if let Some(secret) = &previous.client_secret {
                client = client.with_client_secret(secret);
            }
            manager
                .configure_client(client)
                .map_err(|e| fail(explain(&e)))?;
            (
                Registration::Registered,
                previous.client_id,
                previous.client_secret,
            )
        } else if metadata.registration_endpoint.is_some() {
            let client = manager
                .register_client(CLIENT_NAME, redirect, &scope_refs)
                .await
                .map_err(|e| {
                    fail(format!(
                        "dynamic client registration at {} failed: {}{legacy}",
                        metadata
                            .registration_endpoint
                            .as_deref()
                            .unwrap_or_default(),
                        explain(&e)
                    ))
                })?;
            (
                Registration::Registered,
                client.client_id,
                client.client_secret,
            )
        } else {
            return Err(fail(format!(
                "the authorization server of {url} offers no dynamic client registration{}; \
                 register Switchboard there (redirect URI {redirect}) and set oauth.client_id \
                 (and client_secret) for server {:?} in the config",
                if oauth.client_metadata_url.is_some() {
                    " and no client ID metadata documents"
                } else {
                    ""
                },
                self.server
            )));
        };

        let auth_url = manager
            .get_authorization_url(&scope_refs)
            .await
            .map_err(|e| {
                fail(format!(
                    "cannot build the authorization URL: {}",
                    explain(&e)
                ))
            })?;
        let state = reqwest::Url::parse(&auth_url)
            .ok()
            .and_then(|u| {
                u.query_pairs()
                    .find(|(k, _)| k == "state")
                    .map(|(_, v)| v.into_owned())
            })
            .ok_or_else(|| fail("the authorization URL carries no state".to_owned()))?;
        let record = Record {
            url,
            metadata,
            client_id,
            client_secret: registered_secret,
            redirect_uri: redirect.to_owned(),
            registration,
            scopes,
            credentials: None,
        };
        let cell = Cell::new(self.secrets.clone(), &self.server, record);
        manager.set_credential_store(CellStore(cell.clone()));
        let replaced = self.pending.lock().expect("oauth lock").replace(Pending {
            state,
            manager,
            cell,
            expires: Instant::now() + timeout,
            listener,
        });
        if let Some(old) = replaced
            && let Some(l) = old.listener
        {
            l.cancel();
        }
        self.login.send_replace(LoginState::Waiting);
        tracing::info!(server = %self.server, ?registration, "login started; waiting for the browser");
        Ok(auth_url)
    }

    /// The login with `state` is over without a callback (timed out): forgotten, nothing
    /// stored.
    pub(crate) fn expire(&self, state: &str) {
        let mut pending = self.pending.lock().expect("oauth lock");
        if pending
            .as_ref()
            .is_some_and(|p| p.state == state && Instant::now() >= p.expires)
        {
            if let Some(l) = pending.take().and_then(|p| p.listener) {
                l.cancel();
            }
            drop(pending);
            self.login.send_replace(LoginState::Failed(
                "no answer from the browser in time; nothing was stored".to_owned(),
            ));
        }
    }

    /// The login's `state`, for its expiry timer.
    pub(crate) fn pending_state(&self) -> Option<(String, Instant)> {
        self.pending
            .lock()
            .expect("oauth lock")
            .as_ref()
            .map(|p| (p.state.clone(), p.expires))
    }

    /// The browser came back: `query` is the callback's (`code`, `state`, `iss`, or `error`).
    /// The code is exchanged for tokens, which are stored; then the server may start.
    pub(crate) async fn finish(&self, query: &Callback) -> Result<(), String> {
        let pending = {
            let mut slot = self.pending.lock().expect("oauth lock");
            match slot.as_ref() {
                Some(p) if Some(p.state.as_str()) == query.state.as_deref() => slot.take(),
                _ => None,
            }
        };
        let Some(pending) = pending else {
            return Err(
                "this login is unknown or over (a wrong or stale state); nothing was \
                        stored"
                    .to_owned(),
            );
        };
        if let Some(l) = &pending.listener {
            l.cancel();
        }
        let result = self.exchange(&pending, query).await;
        match &result {
            Ok(()) => {
                // A step-up that got what it asked for is over; one that did not goes on
                // counting its logins.
                let granted = pending
                    .cell
                    .snapshot()
                    .credentials
                    .map(|c| c.granted_scopes)
                    .unwrap_or_default();
                {
                    let mut step = self.step_up.lock().expect("oauth lock");
                    if step.wanted.iter().all(|s| granted.contains(s)) {
                        *step = StepUp::default();
                    }
                }
                *self.active.lock().expect("oauth lock") = Some(Some(Arc::new(Active {
                    manager: Arc::new(pending.manager),
                    cell: pending.cell,
                })));
                self.needs_login.lock().expect("oauth lock").take();
                self.login.send_replace(LoginState::Done);
                tracing::info!(server = %self.server, "logged in; tokens stored");
            }
            Err(why) => {
                tracing::warn!(server = %self.server, error = %why, "login failed");
                self.login.send_replace(LoginState::Failed(why.clone()));
            }
        }
        result
    }

    async fn exchange(&self, pending: &Pending, query: &Callback) -> Result<(), String> {
        if let Some(error) = &query.error {
            return Err(format!(
                "the authorization server refused: {error}{}; nothing was stored",
                query
                    .error_description
                    .as_deref()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default()
            ));
        }
        let Some(code) = &query.code else {
            return Err("the callback carries no code; nothing was stored".to_owned());
        };
        pending
            .manager
            .exchange_code_for_token_with_issuer(code, &pending.state, query.iss.as_deref())
            .await
            .map_err(|e| {
                format!(
                    "exchanging the code for tokens failed: {}; nothing was stored",
                    explain(&e)
                )
            })?;
        Ok(())
    }

    /// Forgets the login: tokens revoked where the authorization server offers that (best
    /// effort, bounded), the record deleted from the store. `Ok(false)` if there was none.
    pub(crate) async fn logout(&self, cfg: &ServerConfig) -> Result<bool, String> {
        let active = self.active(cfg).await.map_err(|r| r.message().to_owned())?;
        if let Some(a) = &active {
            revoke(
                &a.cell.snapshot(),
                self.configured_secret(cfg).await.ok().flatten(),
            )
            .await;
        }
        let found = find_secret(
            &self.secrets.oauth,
            &self.secrets.oauth_service,
            &self.server,
        )
        .await?
        .is_some();
        delete_secret(
            &self.secrets.oauth,
            &self.secrets.oauth_service,
            &self.server,
        )
        .await?;
        *self.active.lock().expect("oauth lock") = Some(None);
        *self.step_up.lock().expect("oauth lock") = StepUp::default();
        self.login.send_replace(LoginState::Idle);
        Ok(active.is_some() || found)
    }
}

/// The query of the redirect back from the authorization server.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct Callback {
    pub code: Option<String>,
    pub state: Option<String>,
    pub iss: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

/// The page the browser shows when it comes back: done, or why not (the text escaped).
pub(crate) fn callback_page(server: &str, result: Result<(), String>) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let escape = |t: &str| {
        t.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let (status, title, body) = match result {
        Ok(()) => (
            axum::http::StatusCode::OK,
            format!("Logged in to {}", escape(server)),
            "Switchboard has the tokens and is starting the server. You can close this tab."
                .to_owned(),
        ),
        Err(why) => (
            axum::http::StatusCode::BAD_REQUEST,
            format!("Login to {} failed", escape(server)),
            escape(&why),
        ),
    };
    let html = format!(
        "<!doctype html><meta charset=utf-8><title>{title}</title>\
         <body style=\"font-family:system-ui;margin:3em\"><h1>{title}</h1><p>{body}</p></body>"
    );
    (
        status,
        [(axum::http::header::CACHE_CONTROL, "no-store")],
        axum::response::Html(html),
    )
        .into_response()
}

/// RFC 7009 revocation of a record's tokens, where the metadata names an endpoint. Best
/// effort: the record is deleted whatever the answer, and each request is bounded.
async fn revoke(record: &Record, configured_secret: Option<String>) {
    let Some(endpoint) = record
        .metadata
        .additional_fields
        .get("revocation_endpoint")
        .and_then(serde_json::Value::as_str)
    else {
        return;
    };
    let Some(creds) = &record.credentials else {
        return;
    };
    let Some(response) = &creds.token_response else {
        return;
    };
    use oauth2::TokenResponse as _;
    let secret = configured_secret.or_else(|| record.client_secret.clone());
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(c) => c,
        Err(_) => return,
    };
    let mut tokens = vec![(
        "refresh_token",
        response.refresh_token().map(|t| t.secret().clone()),
    )];
    tokens.push((
        "access_token",
        Some(response.access_token().secret().clone()),
    ));
    for (hint, token) in tokens {
        let Some(token) = token else { continue };
        let mut form = vec![("token", token), ("token_type_hint", hint.to_owned())];
        let mut req = client.post(endpoint);
        match &secret {
            Some(s) => req = req.basic_auth(&record.client_id, Some(s)),
            None => form.push(("client_id", record.client_id.clone())),
        }
        match req.form(&form).send().await {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => tracing::info!(status = %r.status(), "token revocation refused"),
            Err(e) => tracing::info!(error = %e, "token revocation failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(url: &str) -> ServerConfig {
        ServerConfig {
            name: "r".into(),
            url: Some(url.into()),
            ..Default::default()
        }
    }

    #[test]
    fn oauth_applies_to_remote_servers_without_their_own_authorization_header() {
        assert!(applies(&remote("https://h/mcp")));
        let mut with_header = remote("https://h/mcp");
        with_header.headers.insert(
            "authorization".into(),
            HeaderValue::Plain("Bearer x".into()),
        );
        assert!(!applies(&with_header));
        let stdio = ServerConfig {
            name: "s".into(),
            command: "x".into(),
            ..Default::default()
        };
        assert!(!applies(&stdio));
        assert_eq!(resource_url(&remote("wss://h/ws")).unwrap(), "https://h/ws");
    }

    #[test]
    fn step_ups_are_bounded_and_remember_what_was_asked() {
        let secrets = Secrets::in_memory();
        let oauth = OAuth::new("r", secrets);
        let first = oauth.step_up(Some("admin"));
        assert!(
            first.contains("\"admin\"") && first.contains("log in again"),
            "{first}"
        );
        for _ in 0..MAX_STEP_UPS {
            oauth.step_up.lock().unwrap().logins += 1;
        }
        let last = oauth.step_up(Some("admin"));
        assert!(last.contains("still after 3 logins"), "{last}");
        // a new scope starts the count again
        let other = oauth.step_up(Some("write"));
        assert!(
            other.contains("\"admin write\"") && other.contains("log in again"),
            "{other}"
        );
    }

    #[test]
    fn a_record_never_shows_its_tokens() {
        let record = Record {
            url: "https://h/mcp".into(),
            metadata: AuthorizationMetadata::default(),
            client_id: "c".into(),
            client_secret: Some("s3cret".into()),
            redirect_uri: "http://127.0.0.1:1/oauth/callback".into(),
            registration: Registration::Registered,
            scopes: vec![],
            credentials: None,
        };
        let debug = format!("{record:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
    }
}
