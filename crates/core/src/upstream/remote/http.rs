//! Streamable HTTP (MCP 2025-11-25) as a client: every message is a `POST` to the server's
//! URL; a request's answer comes back as a JSON body or as an SSE stream that may carry
//! progress and other notifications first; the server's own messages (list changes) come on
//! the `GET` stream. `Mcp-Session-Id` from the `initialize` answer and the negotiated
//! `MCP-Protocol-Version` go on every later request; the session is ended with `DELETE`.
//!
//! Notifications and responses are posted in order, one at a time (the server must see
//! `notifications/initialized` before anything else); requests are posted concurrently, at
//! most [`MAX_IN_FLIGHT`] at once.
//!
//! A response stream (other than `initialize`'s) that ends or breaks before its answer is
//! resumed when the server gave its events ids: a `GET` with the session and
//! `Last-Event-ID: <last id seen on that stream>` asks the server to replay what followed. At most [`RESUME_ATTEMPTS`] resumptions
//! in a row that bring nothing new, each after a short doubling pause (never shorter than the
//! server's `retry:`, which the spec makes binding, capped at [`MAX_RETRY_WAIT`]) and each
//! within [`RESUME_TIMEOUT`]; the caller's own timeout still ends it. Events the server
//! repeats (rmcp replays the last one seen) are recognised by id and skipped, so progress is
//! delivered once. rmcp can resume a `POST`'s stream only while the request is still running:
//! once the answer was sent into a broken stream it forgets the stream and answers the
//! resumption with an empty stream, which counts as refused.
//!
//! The connection counts as lost (the supervisor reconnects, in-flight calls follow the
//! replay rules) when a `POST` or the `GET` stream cannot reach the server, when a response
//! stream ends before its answer and cannot be resumed (no event id seen, resumption refused
//! with a 4xx or an empty stream, or attempts used up), or when the server forgets the
//! session (404). An HTTP error status on one request fails that request only.
//!
//! OAuth (`upstream/oauth`), where it applies: every request carries the access token,
//! refreshed first when it is about to expire. A `401` to a request that carried one is met
//! with one refresh (rotation kept) and the request sent once more; a `401` that a refresh
//! cannot get past fails the request with how to log in, and the connection counts as lost
//! with the server noted as needing a login (the supervisor parks it `needs_login`). A `403`
//! with `insufficient_scope` fails that request, naming the scope; the next login asks for it.
//!
//! The event-stream format itself is read by `remote/sse`. Every task of a session runs on
//! the gateway's task tracker and ends, at the latest, when the connection's token is
//! cancelled (the connection ends, or the gateway stops).

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::header::{
    ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, WWW_AUTHENTICATE,
};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::link::{Dial, LinkState, MAX_MESSAGE, SHORT_REQUEST, error_chain};
use super::sse::SseReader;
use crate::config::ServerConfig;
use crate::upstream::connection::{Connection, Outbox};
use crate::upstream::oauth::{OAuth, Refusal};
use crate::upstream::state::Inner;

/// Requests posted at once; more wait for a slot (and, behind them, for the outbox).
const MAX_IN_FLIGHT: usize = 256;
/// How often a request's task checks whether its caller still waits.
const CALLER_CHECK: Duration = Duration::from_millis(250);
/// Pause before the `GET` stream is opened again after the server ended it.
const GET_RETRY: Duration = Duration::from_secs(1);

/// Resumptions of one response stream in a row that may bring nothing new.
const RESUME_ATTEMPTS: u32 = 3;
/// First pause before resuming; doubles with each fruitless attempt.
const RESUME_BACKOFF: Duration = Duration::from_millis(100);
/// The longest a server's `retry:` may make us wait before resuming.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(10);
/// How long the resuming `GET` may take to answer.
const RESUME_TIMEOUT: Duration = Duration::from_secs(10);
/// Event ids remembered per response stream, to skip events a resumption repeats.
const SEEN_IDS: usize = 4096;

const SESSION_HEADER: &str = "mcp-session-id";
const LAST_EVENT_ID_HEADER: &str = "last-event-id";
const VERSION_HEADER: &str = "mcp-protocol-version";

/// One HTTP session with a server.
struct Session {
    client: reqwest::Client,
    url: reqwest::Url,
    headers: HeaderMap,
    /// Set from the `initialize` answer; sent on every later request.
    session_id: Mutex<Option<HeaderValue>>,
    protocol: Mutex<Option<HeaderValue>>,
    /// The server's OAuth, where it applies (with the config its tokens are for).
    oauth: Option<(Arc<OAuth>, ServerConfig)>,
    /// `Authorization: Bearer …` with the current access token (sensitive: never logged).
    bearer: Mutex<Option<HeaderValue>>,
    state: Arc<LinkState>,
    /// The gateway's tracker: every task of the session runs on it (each ends when the
    /// connection's token is cancelled, at the latest).
    tasks: tokio_util::task::TaskTracker,
}

/// Prepares a session with `url`: nothing is sent until the handshake's `initialize`.
pub(super) fn start(inner: &Inner, dial: Dial<'_>) -> Result<JoinHandle<()>, String> {
    let (url, headers, outbox, state) = (dial.url, dial.headers, dial.outbox, dial.state);
    let bearer = dial.bearer.as_deref().and_then(bearer_header);
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
        oauth: dial.oauth,
        bearer: Mutex::new(bearer),
        state: state.clone(),
        tasks: inner.tasks.clone(),
    });
    Ok(inner.tasks.spawn(session.run(outbox)))
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
                    self.tasks.spawn(async move {
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

    fn post(&self, body: bytes::Bytes) -> reqwest::RequestBuilder {
        self.with_session(self.client.post(self.url.clone()))
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json, text/event-stream")
            .body(body)
    }

    fn with_session(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let mut req = req.headers(self.headers.clone());
        if let Some(bearer) = self.bearer.lock().expect("bearer lock").clone() {
            req = req.header(AUTHORIZATION, bearer);
        }
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
            self.tasks.spawn(self.clone().listen());
        }
    }

    async fn exchange(&self, id: u64, method: &str, body: Vec<u8>) {
        let body = bytes::Bytes::from(body);
        self.renew().await;
        let mut refreshed = false;
        let resp = loop {
            let sent = tokio::select! {
                r = self.post(body.clone()).send() => r,
                () = self.caller_gone(id) => return,
            };
            let resp = match sent {
                Ok(r) => r,
                Err(e) => return self.state.lose(format!("POST failed: {}", error_chain(&e))),
            };
            if resp.status() != StatusCode::UNAUTHORIZED {
                break resp;
            }
            let Some((oauth, _)) = &self.oauth else {
                break resp;
            };
            // One refresh per request: a token the server refuses right after a refresh is
            // not a matter of expiry.
            let carried = self.bearer.lock().expect("bearer lock").is_some();
            let challenge = challenge(&resp);
            if refreshed || !carried {
                return self.unauthorized(id, oauth, challenge);
            }
            refreshed = true;
            match oauth.refresh(challenge).await {
                Ok(token) => *self.bearer.lock().expect("bearer lock") = bearer_header(&token),
                Err(Refusal::NeedsLogin(why)) => {
                    oauth.note_unauthorized(None, why.clone());
                    self.fail(id, why.clone());
                    return self.state.lose(why);
                }
                Err(Refusal::Transient(why)) => {
                    self.fail(id, why.clone());
                    return self.state.lose(why);
                }
            }
        };
        let status = resp.status();
        if status == StatusCode::FORBIDDEN
            && let Some((oauth, _)) = &self.oauth
            && let Some(scope) = insufficient_scope(&resp, &self.url)
        {
            return self.fail(id, oauth.step_up(scope.as_deref()));
        }
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
            return self.follow(id, method, resp, initialize).await;
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

    /// Reads request `id`'s SSE answer until it arrives or its caller gives up. A stream that
    /// ends or breaks first is resumed with `GET` + `Last-Event-ID` when the server gave its
    /// events ids; only when that is impossible or refused is the connection lost.
    async fn follow(&self, id: u64, method: &str, resp: Response, initialize: bool) {
        let mut cursor = StreamCursor::default();
        let mut events = SseReader::new(resp);
        // Resumptions in a row that brought nothing new; reset by any new event.
        let mut fruitless = 0;
        let mut resumed = false;
        loop {
            let (why, fresh) = match self.read(id, &mut events, &mut cursor, initialize).await {
                Read::Done => return,
                Read::Ended { fresh } => ("ended", fresh),
                Read::Broke { error, fresh } => {
                    tracing::debug!(url = %self.url, %method, %error, "response stream broke");
                    ("broke", fresh)
                }
            };
            if let Some(retry) = events.retry {
                cursor.retry = Some(retry);
            }
            if fresh {
                fruitless = 0;
            } else if resumed && why == "ended" {
                // A resumed stream that closes at once with nothing new (rmcp's way of
                // refusing an id it cannot replay) will not do better next time.
                return self.state.lose(format!(
                    "the response stream of {method} {why} before its answer, and the server \
                     had nothing to resume it with"
                ));
            }
            // The handshake is not resumed: nothing is established yet, and rmcp numbers its
            // answer's events like the `GET` stream's, so a resumption would find that one.
            let last = cursor.last_id.clone().filter(|_| !initialize);
            let Some(last) = last else {
                return self.state.lose(format!(
                    "the response stream of {method} {why} before its answer"
                ));
            };
            loop {
                fruitless += 1;
                if fruitless > RESUME_ATTEMPTS {
                    return self.state.lose(format!(
                        "the response stream of {method} {why} before its answer and could \
                         not be resumed in {RESUME_ATTEMPTS} attempts"
                    ));
                }
                let wait = resume_wait(fruitless, cursor.retry);
                tracing::info!(url = %self.url, %method, last_event_id = %last,
                    attempt = fruitless, wait_ms = wait.as_millis() as u64,
                    "the response stream {why} before its answer; resuming it");
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = self.caller_gone(id) => return,
                }
                let reopened = tokio::select! {
                    r = self.reopen(&last) => r,
                    () = self.caller_gone(id) => return,
                };
                match reopened {
                    Ok(resp) => {
                        tracing::info!(url = %self.url, %method, last_event_id = %last,
                            "resumed the response stream");
                        events = SseReader::new(resp);
                        resumed = true;
                        break;
                    }
                    Err(Reopen::Retry(error)) => {
                        tracing::info!(url = %self.url, %method, %error,
                            "resuming the response stream failed");
                    }
                    Err(Reopen::Refused(error)) => {
                        tracing::info!(url = %self.url, %method, %error,
                            "the server refused to resume the response stream; the connection \
                             counts as lost");
                        return self.state.lose(format!(
                            "the response stream of {method} {why} before its answer and \
                             could not be resumed: {error}"
                        ));
                    }
                }
            }
        }
    }

    /// Delivers the events of one response stream (skipping any seen before on it) until the
    /// answer arrives, the caller gives up, or the stream ends.
    async fn read(
        &self,
        id: u64,
        events: &mut SseReader,
        cursor: &mut StreamCursor,
        initialize: bool,
    ) -> Read {
        let mut fresh = false;
        loop {
            let event = tokio::select! {
                e = events.next() => e,
                () = self.caller_gone(id) => return Read::Done,
            };
            match event {
                Ok(Some(event)) => {
                    if !cursor.note(event.id) {
                        continue; // a replay of an event we already have
                    }
                    fresh = true;
                    if !event.data.is_empty() {
                        self.deliver(&event.data, initialize);
                    }
                }
                Ok(None) if !self.conn().awaits(id) => return Read::Done,
                Ok(None) => return Read::Ended { fresh },
                Err(error) => return Read::Broke { error, fresh },
            }
            if !self.conn().awaits(id) {
                return Read::Done; // answered (or given up): stop reading this stream
            }
        }
    }

    /// `GET` with `Last-Event-ID`: the rest of a response stream, if the server can replay it.
    async fn reopen(&self, last_event_id: &str) -> Result<Response, Reopen> {
        self.renew().await;
        let id = HeaderValue::from_str(last_event_id)
            .map_err(|_| Reopen::Refused("the event id is not a valid header value".into()))?;
        let req = self
            .with_session(self.client.get(self.url.clone()))
            .header(ACCEPT, "text/event-stream")
            .header(LAST_EVENT_ID_HEADER, id);
        let resp = match tokio::time::timeout(RESUME_TIMEOUT, req.send()).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Err(Reopen::Retry(format!("GET failed: {}", error_chain(&e)))),
            Err(_) => {
                return Err(Reopen::Retry(format!(
                    "no answer to GET within {} s",
                    RESUME_TIMEOUT.as_secs()
                )));
            }
        };
        let status = resp.status();
        if status == StatusCode::NOT_FOUND && self.has_session() {
            return Err(Reopen::Refused(
                "the server no longer knows the session (404)".into(),
            ));
        }
        if status.is_success() && is_event_stream(&resp) {
            return Ok(resp);
        }
        if status.is_server_error() {
            return Err(Reopen::Retry(format!("GET answered HTTP {status}")));
        }
        Err(Reopen::Refused(if status.is_success() {
            "GET answered without an event stream".into()
        } else {
            format!("GET answered HTTP {status}")
        }))
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

    /// The access token for the next request, refreshed if it is about to expire. A login
    /// that cannot be refreshed any more loses the connection, with the server noted as
    /// needing a login; a refresh that failed for now keeps the token (the server will say).
    async fn renew(&self) {
        let Some((oauth, cfg)) = &self.oauth else {
            return;
        };
        match oauth.bearer(cfg).await {
            Ok(Some(token)) => *self.bearer.lock().expect("bearer lock") = bearer_header(&token),
            Ok(None) => {}
            Err(Refusal::NeedsLogin(why)) => {
                oauth.note_unauthorized(None, why.clone());
                self.state.lose(why);
            }
            Err(Refusal::Transient(why)) => {
                tracing::warn!(url = %self.url, error = %why, "cannot renew the access token");
            }
        }
    }

    /// A `401` no refresh gets past: request `id` fails saying how to log in, and the
    /// connection is lost with the server noted as needing a login.
    fn unauthorized(&self, id: u64, oauth: &OAuth, challenge: Option<String>) {
        let why =
            oauth.needs_login_reason(&format!("server {} asks for a login (HTTP 401)", self.url));
        oauth.note_unauthorized(challenge, why.clone());
        self.fail(id, why.clone());
        self.state.lose(why);
    }

    /// A `401` to a notification or the `GET` stream: as [`Self::unauthorized`], no request
    /// to fail.
    fn unauthorized_stream(&self, resp: &Response) -> bool {
        let Some((oauth, _)) = &self.oauth else {
            return false;
        };
        if resp.status() != StatusCode::UNAUTHORIZED {
            return false;
        }
        let why =
            oauth.needs_login_reason(&format!("server {} asks for a login (HTTP 401)", self.url));
        oauth.note_unauthorized(challenge(resp), why.clone());
        self.state.lose(why);
        true
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
        self.renew().await;
        let sent = tokio::select! {
            r = tokio::time::timeout(SHORT_REQUEST, self.post(body.into()).send()) => r,
            () = self.conn().closed().cancelled() => return,
        };
        match sent {
            Ok(Ok(resp)) if self.unauthorized_stream(&resp) => {}
            Ok(Ok(resp)) if resp.status() == StatusCode::NOT_FOUND && self.has_session() => {
                self.state
                    .lose("the server no longer knows the session (404); starting a new one");
            }
            Ok(Ok(resp)) if resp.status().is_success() => {
                // A server may answer a notification with a stream of its own messages.
                if is_event_stream(&resp) {
                    let this = self.clone();
                    self.tasks.spawn(async move {
                        let closed = this.conn().closed().clone();
                        let mut events = SseReader::new(resp);
                        loop {
                            tokio::select! {
                                e = events.next_data() => match e {
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
            self.renew().await;
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
                Ok(r) if self.unauthorized_stream(&r) => return,
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
                            e = events.next_data() => e,
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

/// `Bearer <token>` as a header value, marked sensitive; `None` for a token that is no valid
/// header value (the server then answers 401, and a login replaces it).
fn bearer_header(token: &str) -> Option<HeaderValue> {
    let mut v = HeaderValue::from_str(&format!("Bearer {token}")).ok()?;
    v.set_sensitive(true);
    Some(v)
}

/// The `WWW-Authenticate` of a response, if it has a readable one.
fn challenge(resp: &Response) -> Option<String> {
    resp.headers()
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.trim_start().to_ascii_lowercase().starts_with("bearer"))
        .map(str::to_owned)
}

/// For a `403` that is an `insufficient_scope` challenge: the scope it names, if any.
fn insufficient_scope(resp: &Response, url: &reqwest::Url) -> Option<Option<String>> {
    let params = rmcp::transport::auth::WWWAuthenticateParams::parse(&challenge(resp)?, url);
    params.is_insufficient_scope().then_some(params.scope)
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

/// How one response stream ended.
enum Read {
    /// Answered, or nobody waits any more.
    Done,
    /// The server ended it before the answer.
    Ended { fresh: bool },
    /// It broke before the answer.
    Broke { error: String, fresh: bool },
}

/// Why a resuming `GET` gave no stream.
enum Reopen {
    /// Worth another attempt (unreachable, timed out, 5xx).
    Retry(String),
    /// The server will not resume it (4xx, no event stream).
    Refused(String),
}

/// Where a response stream stands: the id a resumption asks after, and the ids already
/// delivered (a server may repeat them: rmcp replays the last one seen).
#[derive(Default)]
struct StreamCursor {
    last_id: Option<String>,
    /// The server's `retry:`, which the spec says a client must wait before reconnecting.
    retry: Option<Duration>,
    seen: HashSet<String>,
    /// `seen` in arrival order, to forget the oldest past [`SEEN_IDS`].
    order: VecDeque<String>,
}

impl StreamCursor {
    /// Notes an event's id; false if the event was already delivered.
    fn note(&mut self, id: Option<String>) -> bool {
        let Some(id) = id else { return true };
        if id.is_empty() {
            self.last_id = None; // an empty id resets the cursor (SSE standard)
            return true;
        }
        if self.seen.contains(&id) {
            return false;
        }
        if self.order.len() == SEEN_IDS
            && let Some(old) = self.order.pop_front()
        {
            self.seen.remove(&old);
        }
        self.seen.insert(id.clone());
        self.order.push_back(id.clone());
        self.last_id = Some(id);
        true
    }
}

/// The pause before resumption `attempt` (from 1): a short doubling backoff, but never less
/// than the server's `retry:` (capped, so a server cannot park a call for long).
fn resume_wait(attempt: u32, retry: Option<Duration>) -> Duration {
    let backoff = RESUME_BACKOFF * 2u32.saturating_pow(attempt.saturating_sub(1));
    backoff.max(retry.unwrap_or_default().min(MAX_RETRY_WAIT))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(body: &'static str) -> SseReader {
        let resp = reqwest::Response::from(
            axum::http::Response::builder()
                .header(CONTENT_TYPE, "text/event-stream")
                .body(body)
                .unwrap(),
        );
        SseReader::new(resp)
    }

    /// What rmcp sends on a `POST`'s stream, then what it sends on resumption after `1/0`:
    /// the priming event (id, retry, empty data) counts for the cursor, and the event it
    /// repeats is recognised.
    #[tokio::test]
    async fn ids_and_retry_are_read_and_a_repeated_event_is_skipped() {
        let mut cursor = StreamCursor::default();
        let mut first =
            reader("data:\nid: 0/0\nretry: 200\n\n: ping\n\nid: 1/0\ndata: {\"a\":1}\n\n");
        let priming = first.next().await.unwrap().unwrap();
        assert_eq!(priming.id.as_deref(), Some("0/0"));
        assert!(priming.data.is_empty());
        assert!(cursor.note(priming.id));
        let one = first.next().await.unwrap().unwrap();
        assert_eq!(one.data, b"{\"a\":1}");
        assert!(cursor.note(one.id));
        assert!(first.next().await.unwrap().is_none());
        assert_eq!(first.retry, Some(Duration::from_millis(200)));
        assert_eq!(cursor.last_id.as_deref(), Some("1/0"));

        let mut resumed = reader("id: 1/0\ndata: {\"a\":1}\n\nid: 2/0\ndata: {\"a\":2}\n\n");
        let again = resumed.next().await.unwrap().unwrap();
        assert!(!cursor.note(again.id), "the repeated event is a duplicate");
        let two = resumed.next().await.unwrap().unwrap();
        assert!(cursor.note(two.id));
        assert_eq!(two.data, b"{\"a\":2}");
        assert_eq!(cursor.last_id.as_deref(), Some("2/0"));
    }

    #[test]
    fn the_wait_before_resuming_doubles_and_honours_the_servers_retry_up_to_a_cap() {
        assert_eq!(resume_wait(1, None), Duration::from_millis(100));
        assert_eq!(resume_wait(3, None), Duration::from_millis(400));
        assert_eq!(
            resume_wait(1, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
        assert_eq!(
            resume_wait(1, Some(Duration::from_secs(600))),
            MAX_RETRY_WAIT
        );
    }

    #[test]
    fn the_cursor_remembers_a_bounded_number_of_ids() {
        let mut cursor = StreamCursor::default();
        for i in 0..SEEN_IDS + 10 {
            assert!(cursor.note(Some(i.to_string())));
        }
        assert_eq!(cursor.seen.len(), SEEN_IDS);
        assert!(!cursor.note(Some((SEEN_IDS + 9).to_string())));
        assert!(cursor.note(None), "an event without id is always new");
    }
}
