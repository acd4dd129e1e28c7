//! What the remote transports (`remote/http`, `remote/ws`) and the `Remote` link share: the
//! [`LinkState`] of one connection, the size and time limits, and how a connect error is told
//! (a refused TLS certificate first). A leaf: it imports nothing else of `upstream/remote`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::upstream::connection::{Connection, Outbox};

/// What opening a remote link takes, whichever its transport.
pub(super) struct Dial<'a> {
    pub(super) url: &'a str,
    /// Sent with every request (or the upgrade): configured headers, secrets resolved.
    pub(super) headers: reqwest::header::HeaderMap,
    /// Messages for the server, written by the link's task.
    pub(super) outbox: Outbox,
    /// The access token to send first, where OAuth applies.
    pub(super) bearer: Option<String>,
    /// The server's OAuth, where it applies (with the config its tokens are for): the HTTP
    /// transport renews the token and answers `401`s and `403`s with it.
    pub(super) oauth: Option<(
        Arc<crate::upstream::oauth::OAuth>,
        crate::config::ServerConfig,
    )>,
    pub(super) state: &'a Arc<LinkState>,
}

/// Largest message accepted from a remote server (a JSON body, an SSE event, a WS message).
pub(super) const MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// How long a notification or a session `DELETE` may take.
pub(super) const SHORT_REQUEST: Duration = Duration::from_secs(10);

/// What a transport and the supervisor share about one connection.
#[derive(Debug)]
pub(super) struct LinkState {
    pub(super) conn: Arc<Connection>,
    /// Why the connection ended; the first reason wins.
    reason: Mutex<Option<String>>,
}

impl LinkState {
    pub(super) fn new(conn: Arc<Connection>) -> Arc<Self> {
        Arc::new(Self {
            conn,
            reason: Mutex::new(None),
        })
    }

    /// The connection is gone: callers are failed with `Closed`, the supervisor reconnects.
    pub(super) fn lose(&self, why: impl Into<String>) {
        {
            let mut reason = self.reason.lock().expect("reason lock");
            if reason.is_none() {
                *reason = Some(why.into());
            }
        }
        self.conn.mark_closed();
    }

    pub(super) fn is_lost(&self) -> bool {
        // Not `conn.closed()`: that is cancelled by shutdown too, before the polite stop.
        self.conn.is_closed()
    }

    pub(super) fn reason(&self) -> Option<String> {
        self.reason.lock().expect("reason lock").clone()
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

/// reqwest's error with its causes ("error sending request: connection refused"), a cause
/// whose text is already there left out (native-tls repeats OpenSSL's), a refused server
/// certificate explained first.
pub(super) fn error_chain(e: &reqwest::Error) -> String {
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
    explain_tls(out)
}

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
