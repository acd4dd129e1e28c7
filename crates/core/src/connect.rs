//! `switchboard connect`: a stdio MCP server that relays to the gateway, for clients that can
//! only start stdio servers. Each JSON-RPC line from stdin is POSTed to `/mcp`; every message
//! of the answer (progress, then the result) goes to stdout as it arrives. Messages the
//! gateway sends on its own (tool list changes) come from the session's GET stream.
//!
//! Its token lives in the OS keychain (`switchboard connect --pair` puts it there);
//! `SWITCHBOARD_TOKEN` overrides it where there is no keychain.
//!
//! Lines for stdout wait on a bounded queue ([`OUT_QUEUE`]): when stdout is slow, relaying
//! waits for it. Every task is owned by [`relay`], which ends them before it returns.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// Lines waiting for stdout. When full, whoever has a line waits for room: the client reading
/// our stdout sets the pace (the writer only stops when stdout does, and then sending fails at
/// once rather than waiting).
const OUT_QUEUE: usize = 1024;

/// Keychain service under which `connect` keeps its own token (account: the gateway URL).
pub(crate) const KEYCHAIN_SERVICE: &str = "switchboard-connect";

fn entry(url: &str) -> Result<keyring::Entry, String> {
    keyring::Entry::new(KEYCHAIN_SERVICE, url).map_err(|e| format!("OS keychain: {e}"))
}

async fn off_runtime<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    match tokio::time::timeout(Duration::from_secs(10), tokio::task::spawn_blocking(f)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("the OS keychain did not answer within 10 s; is it locked?".into()),
    }
}

/// The token for `url`: `SWITCHBOARD_TOKEN`, else the keychain.
pub async fn token(url: &str) -> Result<String, String> {
    if let Ok(t) = std::env::var("SWITCHBOARD_TOKEN")
        && !t.is_empty()
    {
        return Ok(t);
    }
    let url = url.to_owned();
    off_runtime(move || match entry(&url)?.get_password() {
        Ok(t) => Ok(t),
        Err(keyring::Error::NoEntry) => Err(format!(
            "`switchboard connect` is not paired with {url} yet: run `switchboard connect --pair` once"
        )),
        Err(e) => Err(format!("OS keychain: {e} (or set SWITCHBOARD_TOKEN)")),
    })
    .await
}

/// Stores the token for `url` in the keychain.
pub async fn store_token(url: &str, token: &str) -> Result<(), String> {
    let (url, token) = (url.to_owned(), token.to_owned());
    off_runtime(move || {
        entry(&url)?
            .set_password(&token)
            .map_err(|e| format!("OS keychain: {e}"))
    })
    .await
}

/// Session state learned from `initialize`.
#[derive(Debug, Default)]
struct Session {
    id: Option<String>,
    protocol: Option<String>,
    listening: bool,
}

/// One relay's way to the gateway and back to stdout: cheap to clone, one per request.
#[derive(Debug, Clone)]
struct Link {
    client: reqwest::Client,
    url: String,
    token: String,
    session: Arc<Mutex<Session>>,
    /// Lines for stdout (bounded: see `OUT_QUEUE`).
    out: mpsc::Sender<String>,
}

/// Relays stdin ⇄ `url` until stdin ends.
pub async fn relay(url: String, token: String) -> anyhow::Result<()> {
    let (out_tx, mut out_rx) = mpsc::channel::<String>(OUT_QUEUE);
    let link = Link {
        client: reqwest::Client::new(),
        url,
        token,
        session: Arc::new(Mutex::new(Session::default())),
        out: out_tx.clone(),
    };
    let writer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        while let Some(line) = out_rx.recv().await {
            if stdout
                .write_all(format!("{line}\n").as_bytes())
                .await
                .is_err()
                || stdout.flush().await.is_err()
            {
                break;
            }
        }
    });
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut tasks = tokio::task::JoinSet::new();
    // The session's GET stream, once `initialize` has opened a session; ended below.
    let mut listener: Option<tokio::task::JoinHandle<()>> = None;
    while let Some(line) = lines.next_line().await? {
        if line.trim().is_empty() {
            continue;
        }
        let msg: Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(e) => {
                let _ = out_tx
                    .send(
                        json!({"jsonrpc": "2.0", "id": null,
                               "error": {"code": -32700, "message": format!("Parse error: {e}")}})
                        .to_string(),
                    )
                    .await;
                continue;
            }
        };
        // The handshake must finish before anything else uses the session.
        let is_init = msg["method"] == "initialize";
        let forward = link.clone().forward(msg);
        if is_init {
            if forward.await && listener.is_none() {
                listener = Some(tokio::spawn(link.clone().listen()));
            }
        } else {
            tasks.spawn(async move {
                forward.await;
            });
        }
    }
    // stdin closed: let answers in flight finish (bounded), end the session, stop.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    let sid = link.session.lock().expect("session lock").id.clone();
    if let Some(sid) = sid {
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            link.client
                .delete(&link.url)
                .bearer_auth(&link.token)
                .header("mcp-session-id", sid)
                .send(),
        )
        .await;
    }
    if let Some(listener) = listener {
        listener.abort();
        let _ = listener.await;
    }
    drop((out_tx, link));
    let _ = writer.await;
    Ok(())
}

/// Sends `data:` payloads of an SSE body (or a plain JSON body) to stdout as they arrive.
async fn pump(resp: reqwest::Response, out: &mpsc::Sender<String>, mut seen: impl FnMut(&Value)) {
    let sse = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("text/event-stream"));
    if !sse {
        if let Ok(text) = resp.text().await
            && let Ok(v) = serde_json::from_str::<Value>(&text)
        {
            seen(&v);
            let _ = out.send(v.to_string()).await;
        }
        return;
    }
    let mut body = resp.bytes_stream();
    let mut buf = String::new();
    while let Some(Ok(chunk)) = body.next().await {
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            let data: String = event
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(str::trim_start)
                .collect::<Vec<_>>()
                .join("\n");
            if let Ok(v) = serde_json::from_str::<Value>(&data) {
                seen(&v);
                let _ = out.send(v.to_string()).await;
            }
        }
    }
}

/// POSTs one message and relays its answer; `true` when it was the `initialize` that opened a
/// session whose GET stream should now be listened to.
/// Answers request `id` (if it was a request) with a JSON-RPC error saying `message`.
async fn fail(out: &mpsc::Sender<String>, id: Option<Value>, message: String) {
    if let Some(id) = id {
        let frame =
            json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32000, "message": message}});
        let _ = out.send(frame.to_string()).await;
    }
}

impl Link {
    /// A request to the gateway in this relay's session.
    fn request(&self, method: reqwest::Method) -> reqwest::RequestBuilder {
        let mut req = self
            .client
            .request(method, &self.url)
            .bearer_auth(&self.token)
            .header("accept", "application/json, text/event-stream");
        let s = self.session.lock().expect("session lock");
        if let Some(id) = &s.id {
            req = req.header("mcp-session-id", id);
        }
        if let Some(p) = &s.protocol {
            req = req.header("mcp-protocol-version", p);
        }
        req
    }

    /// POSTs one message; its answer goes to stdout. `true` when it was the `initialize` that
    /// opened the session (the GET stream should start now).
    async fn forward(self, msg: Value) -> bool {
        let id = msg.get("id").cloned();
        let is_init = msg["method"] == "initialize";
        let sent = self
            .request(reqwest::Method::POST)
            .header("content-type", "application/json")
            .body(msg.to_string())
            .send()
            .await;
        let resp = match sent {
            Ok(r) => r,
            Err(e) => {
                let why = format!("cannot reach Switchboard at {}: {e}", self.url);
                fail(&self.out, id, why).await;
                return false;
            }
        };
        let status = resp.status();
        if status == reqwest::StatusCode::ACCEPTED {
            return false;
        }
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            fail(
                &self.out,
                id,
                format!("Switchboard answered {status}: {body}"),
            )
            .await;
            return false;
        }
        if is_init
            && let Some(sid) = resp
                .headers()
                .get("mcp-session-id")
                .and_then(|v| v.to_str().ok())
        {
            self.session.lock().expect("session lock").id = Some(sid.to_owned());
        }
        let session = self.session.clone();
        pump(resp, &self.out, move |v| {
            if is_init && let Some(p) = v.pointer("/result/protocolVersion").and_then(Value::as_str)
            {
                session.lock().expect("session lock").protocol = Some(p.to_owned());
            }
        })
        .await;
        if !is_init {
            return false;
        }
        let mut s = self.session.lock().expect("session lock");
        let start = s.id.is_some() && !s.listening;
        s.listening |= start;
        start
    }

    /// The session's GET stream: what the gateway sends on its own (tool list changes), to
    /// stdout.
    async fn listen(self) {
        let get = self.request(reqwest::Method::GET).send().await;
        if let Ok(resp) = get
            && resp.status().is_success()
        {
            pump(resp, &self.out, |_| {}).await;
        }
    }
}
