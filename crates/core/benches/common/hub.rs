//! The real `switchboard` binary under a bench: started on a temp config with fixture servers,
//! paired the way a client pairs, and the clients that speak to it (`/mcp` sessions, `/ws`
//! sockets). Whatever ends the bench, a panic included, stops what it started.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub(crate) const FIXTURE: &str = env!("CARGO_BIN_EXE_switchboard-fixture");
const SWITCHBOARD_BUILT: &str = env!("CARGO_BIN_EXE_switchboard");

/// The gateway binary under test: this build's, or `SWITCHBOARD_BENCH_GATEWAY` (to measure an
/// earlier build with the same bench).
pub(crate) fn switchboard() -> String {
    std::env::var("SWITCHBOARD_BENCH_GATEWAY").unwrap_or_else(|_| SWITCHBOARD_BUILT.to_owned())
}

/// Stops a process however the bench ends (a panic included), so nothing is left running:
/// SIGTERM, then SIGKILL if it has not gone within 10 s, and reaped either way.
pub(crate) struct Running(pub(crate) Child);

impl Running {
    pub(crate) fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Stops it now; returns how it ended (`None` if it had to be killed).
    pub(crate) fn stop(mut self) -> Option<std::process::ExitStatus> {
        self.terminate()
    }

    fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        if let Ok(Some(status)) = self.0.try_wait() {
            return Some(status);
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.0.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
        None
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// Starts `cmd` and returns it with the first line it prints (where it listens); the line is
/// empty if the process ended first.
pub(crate) fn first_line(cmd: &mut Command) -> (Running, String) {
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let running = Running(child);
    let mut line = String::new();
    let mut reader = BufReader::new(stdout);
    reader.read_line(&mut line).unwrap();
    // keep draining stdout so the process never blocks on a full pipe
    std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
    (running, line.trim().to_owned())
}

/// Starts the gateway with `servers` fixture servers (`s0`, `s1`, …) and `extra` config text
/// (TOML appended to the file); returns it with its `/mcp` URL. Panics if it does not start.
pub(crate) fn start_gateway(dir: &Path, servers: usize, extra: &str) -> (Running, String) {
    try_start_gateway(dir, servers, extra).unwrap_or_else(|e| panic!("gateway did not start: {e}"))
}

/// [`start_gateway`], or the gateway's stderr if it ended before it was listening (a config it
/// refuses, say). Its stderr goes on to ours.
pub(crate) fn try_start_gateway(
    dir: &Path,
    servers: usize,
    extra: &str,
) -> Result<(Running, String), String> {
    let mut cfg = String::from("[auth]\ntoken_store = \"memory\"\n");
    for i in 0..servers {
        cfg.push_str(&format!(
            "[[servers]]\nname = \"s{i}\"\ncommand = \"{FIXTURE}\"\n"
        ));
    }
    cfg.push_str(extra);
    std::fs::write(dir.join("config.toml"), cfg).unwrap();
    let mut cmd = Command::new(switchboard());
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(dir.join("config.toml"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .env("SWITCHBOARD_LOG", "warn")
        .stderr(Stdio::piped())
        .envs(
            // the gateway's tokio worker threads, to compare (the bench's own are left alone)
            std::env::var("SWITCHBOARD_BENCH_WORKERS").map(|n| ("TOKIO_WORKER_THREADS", n)),
        );
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    // stderr is passed on as it comes; the first lines are kept to explain a failed start
    let kept = Arc::new(Mutex::new(String::new()));
    let mut stderr = child.stderr.take().unwrap();
    let k = kept.clone();
    let relay = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            let text = String::from_utf8_lossy(&buf[..n]);
            eprint!("{text}");
            let mut k = k.lock().unwrap();
            if k.len() < 16 * 1024 {
                k.push_str(&text);
            }
        }
    });
    let stdout = child.stdout.take().unwrap();
    let mut running = Running(child);
    let mut line = String::new();
    let mut reader = BufReader::new(stdout);
    reader.read_line(&mut line).unwrap();
    std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
    let Some(base) = line.trim().strip_prefix("Switchboard listening on ") else {
        let _ = running.0.wait();
        let _ = relay.join();
        return Err(kept.lock().unwrap().clone());
    };
    Ok((running, format!("{base}/mcp")))
}

/// Pairs the bench client the way any client does: a code from `switchboard pair`, traded at
/// `POST /pair`.
pub(crate) async fn pair(dir: &Path, url: &str) -> String {
    let out = Command::new(switchboard())
        .args(["pair", "--data-dir"])
        .arg(dir.join("data"))
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let code = stdout.lines().last().unwrap().to_owned();
    let body: Value = reqwest::Client::new()
        .post(url.replace("/mcp", "/pair"))
        .json(&json!({"code": code, "name": "bench"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["token"].as_str().unwrap().to_owned()
}

/// Waits (bounded) until `tools/list` (every page) shows a tool ending in `tool` from
/// `servers` servers.
pub(crate) async fn wait_tool(http: &Http, tool: &str, servers: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut n = 0;
        let mut params = json!({});
        loop {
            let v = http
                .request(json!({"jsonrpc":"2.0","id":0,"method":"tools/list","params":params}))
                .await;
            n += v["result"]["tools"]
                .as_array()
                .map(|t| {
                    t.iter()
                        .filter(|t| t["name"].as_str().unwrap_or("").ends_with(tool))
                        .count()
                })
                .unwrap_or(0);
            match v["result"]["nextCursor"].as_str() {
                Some(c) => params = json!({"cursor": c}),
                None => break,
            }
        }
        if n >= servers {
            return;
        }
        assert!(Instant::now() < deadline, "servers never came up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `GET /api/sessions` (the dashboard's list): the gateway's open MCP sessions.
pub(crate) async fn api_sessions(client: &reqwest::Client, url: &str, token: &str) -> Value {
    client
        .get(url.replace("/mcp", "/api/sessions"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

pub(crate) fn initialize() -> Value {
    json!({"jsonrpc":"2.0","id":0,"method":"initialize",
        "params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"bench","version":"1"}}})
}

pub(crate) fn initialized() -> Value {
    json!({"jsonrpc":"2.0","method":"notifications/initialized"})
}

pub(crate) fn echo(tool: &str) -> Value {
    json!({"jsonrpc":"2.0","id":0,"method":"tools/call",
        "params":{"name": tool,"arguments":{"text":"ping"}}})
}

/// Streamable HTTP client with its own session.
pub(crate) struct Http {
    pub(crate) client: reqwest::Client,
    token: String,
    url: String,
    pub(crate) session: String,
    next: AtomicU64,
}

impl Http {
    /// A session on a client of its own.
    pub(crate) async fn connect(url: &str, token: &str) -> Self {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(4)
            .build()
            .unwrap();
        Self::connect_with(client, url, token).await
    }

    /// A session on `client` (whose connections other sessions may share): `initialize`, then
    /// `notifications/initialized`.
    pub(crate) async fn connect_with(client: reqwest::Client, url: &str, token: &str) -> Self {
        Self::try_connect_with(client, url, token).await.unwrap()
    }

    pub(crate) async fn try_connect_with(
        client: reqwest::Client,
        url: &str,
        token: &str,
    ) -> Result<Self, String> {
        let resp = client
            .post(url)
            .bearer_auth(token)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(initialize().to_string())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let session = resp
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| format!("no mcp-session-id ({})", resp.status()))?
            .to_owned();
        resp.text().await.map_err(|e| e.to_string())?;
        let h = Self {
            client,
            token: token.to_owned(),
            url: url.to_owned(),
            session,
            next: AtomicU64::new(1),
        };
        h.try_post(initialized()).await?;
        Ok(h)
    }

    pub(crate) async fn post(&self, msg: Value) -> String {
        self.try_post(msg).await.unwrap()
    }

    async fn try_post(&self, msg: Value) -> Result<String, String> {
        self.client
            .post(&self.url)
            .bearer_auth(&self.token)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-session-id", &self.session)
            .header("mcp-protocol-version", "2025-11-25")
            .body(msg.to_string())
            .send()
            .await
            .map_err(|e| e.to_string())?
            .text()
            .await
            .map_err(|e| e.to_string())
    }

    pub(crate) async fn request(&self, msg: Value) -> Value {
        self.try_request(msg).await.unwrap()
    }

    /// The response to `msg` (sent with an id of this session's), or why there was none.
    pub(crate) async fn try_request(&self, mut msg: Value) -> Result<Value, String> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        msg["id"] = json!(id);
        let body = self.try_post(msg).await?;
        if body.starts_with('{') {
            // the fast path answers JSON
            return serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"));
        }
        body.lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .find(|v| v["id"] == json!(id))
            .ok_or_else(|| format!("no response in {body:?}"))
    }

    /// `DELETE /mcp` with the session id: ends the session; returns the HTTP status.
    pub(crate) async fn delete(&self) -> u16 {
        self.client
            .delete(&self.url)
            .bearer_auth(&self.token)
            .header("mcp-session-id", &self.session)
            .header("mcp-protocol-version", "2025-11-25")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
}

pub(crate) type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One `/ws` socket, used for one request at a time.
pub(crate) struct Ws {
    pub(crate) ws: WsStream,
    next: u64,
}

/// An authenticated WebSocket (bearer header) to `url`.
pub(crate) async fn ws_open(url: &str, token: &str) -> WsStream {
    ws_open_with(url, token, false).await
}

/// [`ws_open`], with Nagle's algorithm off when `nodelay`: a client that writes twice before it
/// reads (a notification, then a request) otherwise waits out the peer's delayed ACK (40 ms).
pub(crate) async fn ws_open_with(url: &str, token: &str, nodelay: bool) -> WsStream {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    tokio_tungstenite::connect_async_with_config(req, None, nodelay)
        .await
        .unwrap()
        .0
}

impl Ws {
    pub(crate) async fn connect(url: &str, token: &str) -> Self {
        Self::connect_with(url, token, false).await
    }

    /// [`connect`](Self::connect), Nagle's algorithm off when `nodelay` (see [`ws_open_with`]).
    pub(crate) async fn connect_with(url: &str, token: &str, nodelay: bool) -> Self {
        Self {
            ws: ws_open_with(url, token, nodelay).await,
            next: 1,
        }
    }

    /// Sends a notification (no answer to wait for).
    pub(crate) async fn notify(&mut self, msg: Value) {
        use futures_util::SinkExt;
        use tokio_tungstenite::tungstenite::Message;
        self.ws.send(Message::text(msg.to_string())).await.unwrap();
    }

    pub(crate) async fn request(&mut self, mut msg: Value) -> Value {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        let id = self.next;
        self.next += 1;
        msg["id"] = json!(id);
        self.ws.send(Message::text(msg.to_string())).await.unwrap();
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    if v["id"] == json!(id) {
                        return v;
                    }
                }
                Some(Ok(_)) => {}
                other => panic!("socket ended: {other:?}"),
            }
        }
    }

    /// The closing handshake: a close frame, then whatever comes until the peer's (bounded).
    pub(crate) async fn close(mut self) {
        use futures_util::StreamExt;
        let _ = self.ws.close(None).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }
}
