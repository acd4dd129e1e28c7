//! Remote MCP servers: Streamable HTTP ([`http`]) and MCP over WebSocket ([`ws`]).
//!
//! Both feed a framed [`Connection`], so calls, progress, cancellation and list-changed
//! notices work exactly as for a stdio server. What is here: the configured headers (resolved
//! at every connect, so a rotated secret is picked up; secrets are read from the store the
//! gateway was given, through `auth::store::read_secret`, bounded in time because a locked
//! keychain may never answer), and the [`Remote`] link the supervisor watches. What the
//! transports share with it is in `remote/link` ([`LinkState`], limits). A transport that
//! loses its connection calls [`LinkState::lose`]: every caller waiting on it gets
//! [`RpcError::Closed`] at once, and the supervisor reconnects with the remote backoff. Over Streamable HTTP a broken response
//! stream is first resumed with `Last-Event-ID` (see [`http`]); only a stream that cannot be
//! resumed loses the connection. OAuth (`upstream/oauth`) adds the access token where the
//! config brings no `Authorization` header of its own.

mod http;
mod link;
mod sse;
mod ws;

use std::sync::Arc;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue as HttpHeaderValue};
use tokio::task::JoinHandle;

use super::connection::{Connection, RpcError};
use super::notice::NoticeSender;
use super::oauth::{self, Refusal};
use super::state::Inner;
use crate::auth::store::read_secret;
use crate::config::{HeaderValue, ServerConfig, Transport};
use link::{Dial, LinkState};

/// A connected remote server, as the supervisor sees it.
pub(super) struct Remote {
    url: String,
    state: Arc<LinkState>,
    /// The transport's task: drains the outbox, and ends the session politely when asked.
    task: JoinHandle<()>,
}

impl Remote {
    fn new(url: &str, state: Arc<LinkState>, task: JoinHandle<()>) -> Self {
        Self {
            url: url.to_owned(),
            state,
            task,
        }
    }

    /// Waits until the connection is lost; the reason.
    pub(super) async fn ended(&mut self) -> String {
        self.state.conn.closed().cancelled().await;
        let why = self
            .state
            .reason()
            .unwrap_or_else(|| "the connection ended".into());
        format!("lost the connection to {}: {why}", self.url)
    }

    /// The handshake failed: closes everything and says why.
    pub(super) async fn abandon(self, error: RpcError) -> String {
        self.state.lose(format!("initialize failed: {error}"));
        self.task.abort();
        match (&error, self.state.reason()) {
            // A lost connection says more than "closed".
            (RpcError::Closed, Some(why)) => format!("cannot use {}: {why}", self.url),
            _ => format!("initialize at {} failed: {error}", self.url),
        }
    }

    /// Ends the session politely (HTTP `DELETE`, WebSocket close), within the grace period.
    pub(super) async fn stop(mut self, inner: &Inner) {
        self.state.conn.close_stdin();
        if tokio::time::timeout(inner.limits.stop_grace(), &mut self.task)
            .await
            .is_err()
        {
            tracing::warn!(server = %inner.name, url = %self.url,
                "remote session did not end within the grace period");
            self.task.abort();
        }
        self.state.lose("stopped by Switchboard");
    }
}

/// A configured value, read now: literal, from the gateway's environment, or from the
/// secret store (bounded in time). `what` names it in the error ("header Authorization").
pub(super) async fn resolve_value(
    inner: &Inner,
    what: &str,
    value: &HeaderValue,
) -> Result<String, String> {
    Ok(match value {
        HeaderValue::Plain(v) => v.clone(),
        HeaderValue::Env { var, prefix } => match std::env::var(var) {
            Ok(v) => format!("{prefix}{v}"),
            Err(_) => {
                return Err(format!(
                    "{what}: environment variable {var} is not set (or not UTF-8) in the \
                     gateway's environment"
                ));
            }
        },
        HeaderValue::Keychain {
            service,
            account,
            prefix,
        } => {
            let secret = read_secret(&inner.secrets.headers, service, account)
                .await
                .map_err(|e| format!("{what}: {e}"))?;
            format!("{prefix}{secret}")
        }
    })
}

/// The configured headers with their values, read now.
async fn resolve_headers(inner: &Inner, cfg: &ServerConfig) -> Result<HeaderMap, String> {
    let mut out = HeaderMap::new();
    for (name, value) in &cfg.headers {
        let text = resolve_value(inner, &format!("header {name}"), value).await?;
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("{name:?} is not a valid HTTP header name"))?;
        // Never echo the value: it is a credential.
        let mut value = HttpHeaderValue::from_str(&text)
            .map_err(|_| format!("the value of header {name} is not a valid HTTP header value"))?;
        value.set_sensitive(true);
        out.insert(name, value);
    }
    Ok(out)
}

/// Connects to the remote server `cfg` names, with its headers read now.
pub(super) async fn connect(
    inner: &Arc<Inner>,
    cfg: &ServerConfig,
    notices: NoticeSender,
) -> Result<(Remote, Arc<Connection>), String> {
    let headers = resolve_headers(inner, cfg).await?;
    // OAuth where the config brings no Authorization of its own: the stored token, if any (a
    // server that wants one and gets none answers 401, and is parked `needs_login`).
    let oauth = oauth::applies(cfg).then(|| (inner.oauth.clone(), cfg.clone()));
    let bearer = match &oauth {
        Some((oauth, cfg)) => match oauth.bearer(cfg).await {
            Ok(token) => token,
            Err(Refusal::NeedsLogin(why)) => {
                oauth.note_unauthorized(None, why.clone());
                return Err(why);
            }
            Err(Refusal::Transient(why)) => return Err(why),
        },
        None => None,
    };
    let (conn, outbox) = Connection::framed(&cfg.name, notices, &inner.shutdown);
    let state = LinkState::new(conn.clone());
    let dial = |url| Dial {
        url,
        headers,
        outbox,
        bearer,
        oauth,
        state: &state,
    };
    let (url, task) = match cfg.transport() {
        Transport::Http { url } => (url, http::start(inner, dial(url))?),
        Transport::WebSocket { url } => (url, ws::start(inner, dial(url)).await?),
        Transport::Stdio { command } => {
            return Err(format!("{command:?} is a stdio server, not a remote one"));
        }
    };
    Ok((Remote::new(url, state, task), conn))
}
