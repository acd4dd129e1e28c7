//! Streamable HTTP (MCP 2025-11-25) as a client: every message is a `POST` to the server's
//! URL; a request's answer comes back as a JSON body or as an SSE stream that may carry
//! progress and other notifications first; the server's own messages (list changes) come on
//! the `GET` stream. `Mcp-Session-Id` from the `initialize` answer and the negotiated
//! `MCP-Protocol-Version` go on every later request; the session is ended with `DELETE`.
//!
//! Notifications and responses are posted in order, one at a time (the server must see
//! `notifications/initialized` before anything else); requests are posted concurrently, at
//! most [`MAX_IN_FLIGHT`] at once. The connection counts as lost (the supervisor reconnects,
//! in-flight calls follow the replay rules) when a `POST` or the `GET` stream cannot reach the
//! server, when a response stream ends before its answer, or when the server forgets the
//! session (404). An HTTP error status on one request fails that request only.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderValue};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::{LinkState, MAX_MESSAGE, SHORT_REQUEST};
use crate::upstream::connection::Outbox;
use crate::upstream::{Connection, Inner};

/// Requests posted at once; more wait for a slot (and, behind them, for the outbox).
const MAX_IN_FLIGHT: usize = 256;
/// How often a request's task checks whether its caller still waits.
const CALLER_CHECK: Duration = Duration::from_millis(250);
/// Pause before the `GET` stream is opened again after the server ended it.
const GET_RETRY: Duration = Duration::from_secs(1);

const SESSION_HEADER: &str = "mcp-session-id";
const VERSION_HEADER: &str = "mcp-protocol-version";

/// One HTTP session with a server.
struct Session {
    client: reqwest::Client,
    url: reqwest::Url,
    headers: HeaderMap,
    /// Set from the `initialize` answer; sent on every later request.
    session_id: Mutex<Option<HeaderValue>>,
    protocol: Mutex<Option<HeaderValue>>,
    state: Arc<LinkState>,
}

/// Prepares a session with `url`: nothing is sent until the handshake's `initialize`.
pub(super) fn start(
    inner: &Inner,
    url: &str,
    headers: HeaderMap,
    outbox: Outbox,
    state: &Arc<LinkState>,
) -> Result<JoinHandle<()>, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("url {url:?}: {e}"))?;
    // A fresh client per session: no pooled connection from before a drop is reused.
    let client = reqwest::Client::builder()
        .connect_timeout(inner.limits.start_timeout())
        .tcp_nodelay(true)
        .build()
        .map_err(|e| format!("cannot create an HTTP client: {e}"))?;
    let session = Arc::new(Session {
        client,
        url: parsed,
        headers,
        session_id: Mutex::new(None),
        protocol: Mutex::new(None),
        state: state.clone(),
    });
    Ok(tokio::spawn(session.run(outbox)))
}

impl Session {
    fn conn(&self) -> &Arc<Connection> {
        &self.state.conn
    }

    /// Drains the outbox until the connection closes; then ends the session politely unless
    /// it was lost.
    async fn run(self: Arc<Self>, mut outbox: Outbox) {
        let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        while let Some(bytes) = outbox.next().await {
            let (id, method) = match serde_json::from_slice::<Value>(&bytes) {
                Ok(msg) => (
                    msg.get("id").and_then(Value::as_u64),
                    msg.get("method").and_then(Value::as_str).map(str::to_owned),
                ),
                Err(_) => (None, None),
            };
            match (id, method) {
                (Some(id), Some(method)) => {
                    let Ok(slot) = slots.clone().acquire_owned().await else {
                        break;
                    };
                    let this = self.clone();
                    tokio::spawn(async move {
                        this.request(id, &method, bytes).await;
                        drop(slot);
                    });
                }
                _ => self.post_in_order(bytes).await,
            }
        }
        if !self.state.is_lost() {
            self.end_session().await;
        }
        self.state.lose("session ended");
    }

    fn post(&self, body: Vec<u8>) -> reqwest::RequestBuilder {
        self.with_session(self.client.post(self.url.clone()))
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json, text/event-stream")
            .body(body)
    }

    fn with_session(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let mut req = req.headers(self.headers.clone());
        if let Some(id) = self.session_id.lock().expect("session lock").clone() {
            req = req.header(SESSION_HEADER, id);
        }
        if let Some(v) = self.protocol.lock().expect("protocol lock").clone() {
            req = req.header(VERSION_HEADER, v);
        }
        req
    }

    fn has_session(&self) -> bool {
        self.session_id.lock().expect("session lock").is_some()
    }

    /// Posts one request and delivers what comes back, until its answer arrives, its caller
    /// gives up, or the connection is lost. A successful `initialize` opens the `GET` stream.
    async fn request(self: &Arc<Self>, id: u64, method: &str, body: Vec<u8>) {
        self.exchange(id, method, body).await;
        let initialized = self.protocol.lock().expect("protocol lock").is_some();
        if method == "initialize" && initialized && !self.state.is_lost() {
            tokio::spawn(self.clone().listen());
        }
    }

    async fn exchange(&self, id: u64, method: &str, body: Vec<u8>) {
        let sent = tokio::select! {
            r = self.post(body).send() => r,
            () = self.caller_gone(id) => return,
        };
        let resp = match sent {
            Ok(r) => r,
            Err(e) => return self.state.lose(format!("POST failed: {}", error_chain(&e))),
        };
        let status = resp.status();
        if status == StatusCode::NOT_FOUND && self.has_session() {
            return self
                .state
                .lose("the server no longer knows the session (404); starting a new one");
        }
        if !status.is_success() {
            let detail = read_capped(resp, 512).await.unwrap_or_default();
            let detail = String::from_utf8_lossy(&detail);
            return self.fail(
                id,
                format!(
                    "the server answered {method} with HTTP {status}{}",
                    if detail.trim().is_empty() {
                        String::new()
                    } else {
                        format!(": {}", detail.trim())
                    }
                ),
            );
        }
        let initialize = method == "initialize";
        if initialize && let Some(sid) = resp.headers().get(SESSION_HEADER) {
            *self.session_id.lock().expect("session lock") = Some(sid.clone());
        }
        if is_event_stream(&resp) {
            let mut events = SseReader::new(resp);
            loop {
                let event = tokio::select! {
                    e = events.next() => e,
                    () = self.caller_gone(id) => return,
                };
                match event {
                    Ok(Some(data)) => self.deliver(&data, initialize),
                    Ok(None) if !self.conn().awaits(id) => return,
                    Ok(None) => {
                        return self.state.lose(format!(
                            "the response stream of {method} ended before its answer"
                        ));
                    }
                    Err(e) => {
                        return self
                            .state
                            .lose(format!("the response stream of {method}: {e}"));
                    }
                }
                if !self.conn().awaits(id) {
                    return; // answered (or given up): stop reading this stream
                }
            }
        }
        if status == StatusCode::ACCEPTED {
            return self.fail(
                id,
                format!("the server accepted {method} without answering it (HTTP 202)"),
            );
        }
        let body = tokio::select! {
            b = read_capped(resp, MAX_MESSAGE) => b,
            () = self.caller_gone(id) => return,
        };
        match body {
            Ok(body) => {
                self.deliver(&body, initialize);
                if self.conn().awaits(id) {
                    self.fail(id, format!("the server's answer to {method} had no result"));
                }
            }
            Err(e) => self.state.lose(format!("the answer to {method}: {e}")),
        }
    }

    /// Hands a message to the connection; after `initialize`, notes the negotiated version.
    fn deliver(&self, message: &[u8], initialize: bool) {
        if initialize
            && let Ok(msg) = serde_json::from_slice::<Value>(message)
            && let Some(v) = msg["result"]["protocolVersion"].as_str()
            && let Ok(v) = HeaderValue::from_str(v)
        {
            *self.protocol.lock().expect("protocol lock") = Some(v);
        }
        self.conn().receive(message);
    }

    /// Answers request `id` with an error of our own (the server's HTTP said no).
    fn fail(&self, id: u64, message: String) {
        let reply = json!({"jsonrpc": "2.0", "id": id,
            "error": {"code": -32603, "message": message}});
        self.conn()
            .receive(&serde_json::to_vec(&reply).expect("JSON values serialize"));
    }

    /// Resolves when request `id` no longer has a waiting caller, or the connection is gone.
    async fn caller_gone(&self, id: u64) {
        loop {
            tokio::select! {
                () = self.conn().closed().cancelled() => return,
                () = tokio::time::sleep(CALLER_CHECK) => {}
            }
            if !self.conn().awaits(id) {
                return;
            }
        }
    }

    /// Posts a notification or a response; waits for the server to take it (not for any
    /// stream it may answer with: that is read on its own task).
    async fn post_in_order(self: &Arc<Self>, body: Vec<u8>) {
        let sent = tokio::select! {
            r = tokio::time::timeout(SHORT_REQUEST, self.post(body).send()) => r,
            () = self.conn().closed().cancelled() => return,
        };
        match sent {
            Ok(Ok(resp)) if resp.status() == StatusCode::NOT_FOUND && self.has_session() => {
                self.state
                    .lose("the server no longer knows the session (404); starting a new one");
            }
            Ok(Ok(resp)) if resp.status().is_success() => {
                // A server may answer a notification with a stream of its own messages.
                if is_event_stream(&resp) {
                    let this = self.clone();
                    tokio::spawn(async move {
                        let closed = this.conn().closed().clone();
                        let mut events = SseReader::new(resp);
                        loop {
                            tokio::select! {
                                e = events.next() => match e {
                                    Ok(Some(data)) => this.deliver(&data, false),
                                    Ok(None) | Err(_) => return,
                                },
                                () = closed.cancelled() => return,
                            }
                        }
                    });
                } else if let Ok(body) = read_capped(resp, MAX_MESSAGE).await
                    && !body.trim_ascii().is_empty()
                {
                    self.deliver(&body, false);
                }
            }
            Ok(Ok(resp)) => {
                tracing::warn!(url = %self.url, status = %resp.status(),
                    "the server refused a notification");
            }
            Ok(Err(e)) => self.state.lose(format!("POST failed: {}", error_chain(&e))),
            Err(_) => {
                tracing::warn!(url = %self.url, "the server took no notification within 10 s")
            }
        }
    }

    /// The `GET` stream: the server's own messages (list changes, pings). Opened again when
    /// the server ends it; a server that cannot be reached any more is a lost connection.
    async fn listen(self: Arc<Self>) {
        let closed = self.conn().closed().clone();
        loop {
            let req = self
                .with_session(self.client.get(self.url.clone()))
                .header(ACCEPT, "text/event-stream");
            let resp = tokio::select! {
                r = req.send() => r,
                () = closed.cancelled() => return,
            };
            match resp {
                Err(e) => {
                    return self
                        .state
                        .lose(format!("GET stream failed: {}", error_chain(&e)));
                }
                Ok(r) if r.status() == StatusCode::METHOD_NOT_ALLOWED => {
                    tracing::debug!(url = %self.url, "server offers no GET stream");
                    return;
                }
                Ok(r) if r.status() == StatusCode::NOT_FOUND && self.has_session() => {
                    return self
                        .state
                        .lose("the server no longer knows the session (404); starting a new one");
                }
                Ok(r) if r.status().is_success() && is_event_stream(&r) => {
                    let mut events = SseReader::new(r);
                    loop {
                        let event = tokio::select! {
                            e = events.next() => e,
                            () = closed.cancelled() => return,
                        };
                        match event {
                            Ok(Some(data)) => self.deliver(&data, false),
                            Ok(None) => break,
                            Err(e) => {
                                tracing::debug!(url = %self.url, error = %e, "GET stream broke");
                                break;
                            }
                        }
                    }
                }
                Ok(r) => {
                    tracing::warn!(url = %self.url, status = %r.status(),
                        "the server refused the GET stream; list changes arrive only with answers");
                    return;
                }
            }
            tokio::select! {
                () = tokio::time::sleep(GET_RETRY) => {}
                () = closed.cancelled() => return,
            }
        }
    }

    /// `DELETE` with the session id: the server may free it now.
    async fn end_session(&self) {
        if !self.has_session() {
            return;
        }
        let req = self.with_session(self.client.delete(self.url.clone()));
        match tokio::time::timeout(SHORT_REQUEST, req.send()).await {
            Ok(Ok(r)) => tracing::debug!(url = %self.url, status = %r.status(), "session ended"),
            Ok(Err(e)) => tracing::debug!(url = %self.url, error = %e, "DELETE failed"),
            Err(_) => tracing::debug!(url = %self.url, "DELETE timed out"),
        }
    }
}

fn is_event_stream(resp: &Response) -> bool {
    resp.headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("text/event-stream"))
}

/// The body, at most `cap` bytes (more is an error).
async fn read_capped(resp: Response, cap: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| error_chain(&e))?;
        if out.len() + chunk.len() > cap {
            return Err(format!("body larger than {cap} bytes"));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// reqwest's error with its causes ("error sending request: connection refused"), a cause
/// whose text is already there left out (native-tls repeats OpenSSL's), a refused server
/// certificate explained first.
fn error_chain(e: &reqwest::Error) -> String {
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
    super::explain_tls(out)
}

/// Server-Sent Events from a response body: the `data` of each `message` event.
struct SseReader {
    stream:
        std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buf: Vec<u8>,
    data: Vec<u8>,
    event: String,
}

impl SseReader {
    fn new(resp: Response) -> Self {
        Self {
            stream: Box::pin(resp.bytes_stream()),
            buf: Vec::new(),
            data: Vec::new(),
            event: String::new(),
        }
    }

    /// The next event's data; `Ok(None)` at the end of the stream.
    async fn next(&mut self) -> Result<Option<Vec<u8>>, String> {
        loop {
            while let Some(end) = self.buf.iter().position(|b| *b == b'\n') {
                let mut line: Vec<u8> = self.buf.drain(..=end).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                if let Some(data) = self.on_line(&line) {
                    return Ok(Some(data));
                }
            }
            if self.buf.len() + self.data.len() > MAX_MESSAGE {
                return Err(format!("an event larger than {MAX_MESSAGE} bytes"));
            }
            match self.stream.next().await {
                Some(Ok(chunk)) => self.buf.extend_from_slice(&chunk),
                Some(Err(e)) => return Err(error_chain(&e)),
                None => return Ok(None),
            }
        }
    }

    /// One line; an event's data when the line ends it.
    fn on_line(&mut self, line: &[u8]) -> Option<Vec<u8>> {
        if line.is_empty() {
            let event = std::mem::take(&mut self.event);
            let data = std::mem::take(&mut self.data);
            let is_message = event.is_empty() || event == "message";
            return (is_message && !data.trim_ascii().is_empty()).then_some(data);
        }
        if line.starts_with(b":") {
            return None; // a comment (keep-alive)
        }
        let (field, value) = match line.iter().position(|b| *b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &[][..]),
        };
        match field {
            b"data" => {
                if !self.data.is_empty() {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
            }
            b"event" => self.event = String::from_utf8_lossy(value).into_owned(),
            _ => {} // id, retry: no resumption here; a broken stream reconnects the session
        }
        None
    }
}
