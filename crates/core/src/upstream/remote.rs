//! Remote MCP servers: Streamable HTTP ([`http`]) and MCP over WebSocket ([`ws`]).
//!
//! Both feed a framed [`Connection`], so calls, progress, cancellation and list-changed
//! notices work exactly as for a stdio server. What is shared here: the configured headers
//! (resolved at every connect, so a rotated secret is picked up; keychain reads happen on a
//! blocking thread with a timeout, because a locked keychain may never answer), and the
//! [`Remote`] link the supervisor watches. A transport that loses its connection calls
//! [`LinkState::lose`]: every caller waiting on it gets [`RpcError::Closed`] at once, and the
//! supervisor reconnects with the remote backoff. Over Streamable HTTP a broken response
//! stream is first resumed with `Last-Event-ID` (see [`http`]); only a stream that cannot be
//! resumed loses the connection.

pub(super) mod http;
pub(super) mod ws;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue as HttpHeaderValue};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{Connection, Inner, RpcError, ServerNotice};
use crate::auth::keychain::KeychainSecrets;
use crate::auth::store::SecretStore;
use crate::config::{HeaderValue, ServerConfig, Transport};

/// Largest message accepted from a remote server (a JSON body, an SSE event, a WS message).
const MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// What a transport and the supervisor share about one connection.
#[derive(Debug)]
pub(super) struct LinkState {
    conn: Arc<Connection>,
    /// Why the connection ended; the first reason wins.
    reason: Mutex<Option<String>>,
}

impl LinkState {
    fn new(conn: Arc<Connection>) -> Arc<Self> {
        Arc::new(Self {
            conn,
            reason: Mutex::new(None),
        })
    }

    /// The connection is gone: callers are failed with `Closed`, the supervisor reconnects.
    fn lose(&self, why: impl Into<String>) {
        {
            let mut reason = self.reason.lock().expect("reason lock");
            if reason.is_none() {
                *reason = Some(why.into());
            }
        }
        self.conn.mark_closed();
    }

    fn is_lost(&self) -> bool {
        self.conn.closed().is_cancelled()
    }

    fn reason(&self) -> Option<String> {
        self.reason.lock().expect("reason lock").clone()
    }
}

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

/// The configured headers with their values, read now.
async fn resolve_headers(inner: &Inner, cfg: &ServerConfig) -> Result<HeaderMap, String> {
    let mut out = HeaderMap::new();
    for (name, value) in &cfg.headers {
        let text = match value {
            HeaderValue::Plain(v) => v.clone(),
            HeaderValue::Env { var, prefix } => match std::env::var(var) {
                Ok(v) => format!("{prefix}{v}"),
                Err(_) => {
                    return Err(format!(
                        "header {name}: environment variable {var} is not set (or not UTF-8) \
                         in the gateway's environment"
                    ));
                }
            },
            HeaderValue::Keychain {
                service,
                account,
                prefix,
            } => {
                let secret = read_secret(inner, service, account)
                    .await
                    .map_err(|e| format!("header {name}: {e}"))?;
                format!("{prefix}{secret}")
            }
        };
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

/// One secret from the configured store (the OS keychain unless a test replaced it), off the
/// async runtime and bounded in time.
async fn read_secret(inner: &Inner, service: &str, account: &str) -> Result<String, String> {
    let store: Arc<dyn SecretStore> = match &inner.limits.header_secrets {
        Some(s) => s.clone(),
        None => Arc::new(KeychainSecrets),
    };
    let describe = store.describe();
    let (s, a) = (service.to_owned(), account.to_owned());
    let read = tokio::time::timeout(
        crate::auth::STORE_TIMEOUT,
        tokio::task::spawn_blocking(move || store.secret(&s, &a)),
    )
    .await;
    match read {
        Ok(Ok(Ok(Some(secret)))) => Ok(secret),
        Ok(Ok(Ok(None))) => Err(format!(
            "no secret {service}/{account} in the {describe}; store it there (service \
             {service:?}, account {account:?})"
        )),
        Ok(Ok(Err(e))) => Err(format!("cannot read {service}/{account}: {e}")),
        Ok(Err(e)) => Err(format!("cannot read {service}/{account}: {e}")),
        Err(_) => Err(format!(
            "the {describe} did not answer within {} s reading {service}/{account}; is it locked?",
            crate::auth::STORE_TIMEOUT.as_secs()
        )),
    }
}

/// A connect error, led by a plain account of a refused server certificate when that is what
/// it is. The TLS library (OpenSSL, through native-tls) says "…certificate verify failed…
/// (unable to get local issuer certificate)", deep in a chain of causes; a person needs to read
/// first that the certificate is not trusted and how to trust a private CA.
pub(super) fn explain_tls(detail: String) -> String {
    let Some(at) = detail.find("certificate verify failed") else {
        return detail;
    };
    // native-tls puts OpenSSL's verify result after the error stack, in parentheses.
    let why = detail[at..]
        .split_once(" (")
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(why, _)| why);
    let mut plain = match why {
        Some(why) => format!("the server's TLS certificate was refused ({why})"),
        None => "the server's TLS certificate was refused".to_owned(),
    };
    // An unknown issuer is what a private CA looks like; an expired certificate or a wrong
    // host name is not fixed by trusting anything.
    const UNKNOWN_ISSUER: [&str; 3] = ["issuer certificate", "self-signed", "self signed"];
    if why.is_none_or(|why| UNKNOWN_ISSUER.iter().any(|p| why.contains(p))) {
        plain.push_str(
            "; if a private CA signed it, add that CA to the system's trust store or point \
             SSL_CERT_FILE at its PEM file in Switchboard's environment",
        );
    }
    format!("{plain}. Details: {detail}")
}

/// Connects to the remote server `cfg` names, with its headers read now.
pub(super) async fn connect(
    inner: &Arc<Inner>,
    cfg: &ServerConfig,
    notices: mpsc::UnboundedSender<ServerNotice>,
) -> Result<(Remote, Arc<Connection>), String> {
    let headers = resolve_headers(inner, cfg).await?;
    let (conn, outbox) = Connection::framed(&cfg.name, notices);
    let state = LinkState::new(conn.clone());
    let (url, task) = match cfg.transport() {
        Transport::Http { url } => (url, http::start(inner, url, headers, outbox, &state)?),
        Transport::WebSocket { url } => {
            (url, ws::start(inner, url, headers, outbox, &state).await?)
        }
        Transport::Stdio { command } => {
            return Err(format!("{command:?} is a stdio server, not a remote one"));
        }
    };
    Ok((Remote::new(url, state, task), conn))
}

/// How long a notification or a session `DELETE` may take.
const SHORT_REQUEST: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::explain_tls;

    /// What reqwest (hyper-tls, native-tls, OpenSSL 3) said for a certificate from an unknown CA.
    const UNKNOWN_CA: &str = "error sending request for url (https://127.0.0.1:35755/mcp): \
        client error (Connect): error:0A000086:SSL routines:tls_post_process_server_certificate:\
        certificate verify failed:../ssl/statem/statem_clnt.c:1889: (unable to get local issuer \
        certificate)";

    #[test]
    fn a_certificate_from_an_unknown_ca_is_named_with_how_to_trust_it() {
        let out = explain_tls(UNKNOWN_CA.to_owned());
        assert!(
            out.starts_with(
                "the server's TLS certificate was refused (unable to get local issuer certificate)"
            ),
            "{out}"
        );
        assert!(out.contains("SSL_CERT_FILE"), "{out}");
        assert!(out.ends_with(UNKNOWN_CA), "the details are kept: {out}");
    }

    #[test]
    fn a_wrong_host_name_is_named_without_the_trust_advice() {
        let detail = UNKNOWN_CA.replace(
            "unable to get local issuer certificate",
            "hostname mismatch",
        );
        let out = explain_tls(detail);
        assert!(
            out.starts_with("the server's TLS certificate was refused (hostname mismatch)"),
            "{out}"
        );
        assert!(!out.contains("SSL_CERT_FILE"), "{out}");
    }

    #[test]
    fn other_errors_are_left_as_they_are() {
        let detail = "error sending request: connection refused".to_owned();
        assert_eq!(explain_tls(detail.clone()), detail);
    }
}
