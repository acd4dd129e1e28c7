//! A real gateway on port 0, and clients that speak to it.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use switchboard_core::auth::store::Stores;
use switchboard_core::server::serve_with;
use switchboard_core::{Config, ServeError};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};
use tokio_util::sync::CancellationToken;

/// Every wait in the tests is bounded by this.
pub const WAIT: Duration = Duration::from_secs(5);

pub struct TestGateway {
    pub addr: SocketAddr,
    /// A token paired for the tests (name "tests", default role).
    pub token: String,
    pub shutdown: CancellationToken,
    pub data_dir: PathBuf,
    handle: Option<JoinHandle<Result<(), ServeError>>>,
    _temp: Option<tempfile::TempDir>,
}

impl TestGateway {
    pub async fn start() -> Self {
        Self::with(|_| {}).await
    }

    pub async fn with(tweak: impl FnOnce(&mut Config)) -> Self {
        Self::with_stores(Stores::default(), tweak).await
    }

    /// [`with`](Self::with), with `stores` in place of the configured ones.
    pub async fn with_stores(stores: Stores, tweak: impl FnOnce(&mut Config)) -> Self {
        let temp = tempfile::tempdir().expect("tempdir");
        let dir = temp.path().to_path_buf();
        let mut gw = Self::in_dir_with(&dir, stores, tweak)
            .await
            .expect("gateway starts");
        gw._temp = Some(temp);
        gw
    }

    /// Starts on `data_dir`; `Err` if `serve` fails before it is up.
    pub async fn in_dir(
        data_dir: &Path,
        tweak: impl FnOnce(&mut Config),
    ) -> Result<Self, ServeError> {
        Self::in_dir_with(data_dir, Stores::default(), tweak).await
    }

    /// [`in_dir`](Self::in_dir), with `stores` in place of the configured ones.
    pub async fn in_dir_with(
        data_dir: &Path,
        stores: Stores,
        tweak: impl FnOnce(&mut Config),
    ) -> Result<Self, ServeError> {
        let mut config = Config {
            data_dir: Some(data_dir.to_path_buf()),
            ..Config::default()
        };
        config.auth.token_store = switchboard_core::config::TokenStoreKind::Memory;
        tweak(&mut config);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shutdown = CancellationToken::new();
        let mut handle = tokio::spawn(serve_with(listener, config, stores, shutdown.clone()));
        // `serve` fails fast (bad database) or serves: wait until it answers or ends.
        let client = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if handle.is_finished() {
                return match (&mut handle).await.expect("serve task") {
                    Err(e) => Err(e),
                    Ok(()) => panic!("serve returned before shutdown"),
                };
            }
            if let Ok(r) = client.get(format!("http://{addr}/healthz")).send().await
                && r.status().is_success()
            {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "gateway never answered"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut gw = Self {
            addr,
            token: String::new(),
            shutdown,
            data_dir: data_dir.to_path_buf(),
            handle: Some(handle),
            _temp: None,
        };
        gw.token = gw.pair_client("tests", None).await;
        Ok(gw)
    }

    /// A fresh pairing code from the running gateway, over its control socket.
    pub async fn code(&self, role: Option<&str>) -> String {
        let reply =
            switchboard_core::pairing::control(&self.data_dir, json!({"op": "pair", "role": role}))
                .await
                .expect("control socket");
        assert_eq!(reply["ok"], true, "{reply}");
        reply["code"].as_str().unwrap().to_owned()
    }

    /// Pairs a client the way a real one does; returns its token.
    pub async fn pair_client(&self, name: &str, role: Option<&str>) -> String {
        let code = self.code(role).await;
        let r = reqwest::Client::new()
            .post(self.url("/pair"))
            .json(&json!({"code": code, "name": name}))
            .send()
            .await
            .expect("POST /pair");
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        body["token"].as_str().unwrap().to_owned()
    }

    /// A GET with the tests' token.
    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        reqwest::Client::new()
            .get(self.url(path))
            .bearer_auth(&self.token)
    }

    /// A GET with the tests' token, its body read as JSON.
    pub async fn json(&self, path: &str) -> Value {
        self.get(path).send().await.unwrap().json().await.unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws/mcp", self.addr)
    }

    pub async fn ws(&self) -> WsClient {
        WsClient::connect(&self.ws_url()).await
    }

    pub async fn projects(&self) -> Vec<Value> {
        self.get("/api/projects")
            .send()
            .await
            .expect("GET /api/projects")
            .json()
            .await
            .expect("projects JSON")
    }

    pub async fn project(&self, path: &Path) -> Option<Value> {
        let path = path.to_string_lossy();
        self.projects()
            .await
            .into_iter()
            .find(|p| p["path"] == *path)
    }

    pub async fn health(&self) -> Value {
        reqwest::get(self.url("/healthz"))
            .await
            .expect("GET /healthz")
            .json()
            .await
            .expect("health JSON")
    }

    /// Waits (bounded) until the gateway counts exactly `n` open registration sockets.
    pub async fn wait_for_sockets(&self, n: u64) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.health().await["registration_sockets"] != n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "sockets never became {n}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn events(&self) -> SseClient {
        SseClient::open(self.get("/api/events")).await
    }

    /// Cancels and waits for `serve` to return (bounded).
    pub async fn stop(mut self) -> Result<(), ServeError> {
        self.shutdown.cancel();
        let handle = self.handle.take().expect("running");
        tokio::time::timeout(Duration::from_secs(15), handle)
            .await
            .expect("serve returns after shutdown")
            .expect("serve task")
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A directory that the registration server accepts as a project: it exists and is outside
/// the temp dir (which the real client never registers).
pub fn project_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("projects")
        .join(format!("{name}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("project dir");
    let dir = dir.canonicalize().expect("canonical");
    let temp = std::env::temp_dir().canonicalize().expect("temp");
    assert!(
        !dir.starts_with(&temp),
        "CARGO_TARGET_TMPDIR {dir:?} is inside the temp dir; build with a target dir outside it"
    );
    dir
}

pub fn envelope(kind: &str, payload: Value) -> String {
    json!({
        "version": "1.0",
        "type": kind,
        "payload": payload,
        "timestamp": chrono::Utc::now().to_rfc3339(),
    })
    .to_string()
}

pub fn project_info(path: &Path) -> Value {
    json!({
        "path": path.to_string_lossy(),
        "name": path.file_name().unwrap().to_string_lossy(),
        "db_path": path.join(".intent-engine/project.db").to_string_lossy(),
        "agent": "claude-code",
        "mcp_connected": true,
        "is_online": true,
    })
}

pub struct WsClient {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl WsClient {
    pub async fn connect(url: &str) -> Self {
        let (ws, _) = tokio::time::timeout(WAIT, connect_async(url))
            .await
            .expect("connect in time")
            .expect("connect");
        Self { ws }
    }

    pub async fn connect_with_origin(
        url: &str,
        origin: &str,
    ) -> Result<Self, tokio_tungstenite::tungstenite::Error> {
        let mut req = url.into_client_request()?;
        req.headers_mut()
            .insert("origin", origin.parse().expect("header"));
        let (ws, _) = connect_async(req).await?;
        Ok(Self { ws })
    }

    pub async fn send(&mut self, kind: &str, payload: Value) {
        self.send_raw(envelope(kind, payload)).await;
    }

    pub async fn send_raw(&mut self, text: impl Into<String>) {
        self.ws
            .send(Message::text(text.into()))
            .await
            .expect("send");
    }

    /// The next frame of any kind, or `None` when the stream ends.
    pub async fn frame(&mut self) -> Option<Message> {
        match tokio::time::timeout(WAIT, self.ws.next())
            .await
            .expect("a frame in time")
        {
            Some(Ok(m)) => Some(m),
            Some(Err(_)) | None => None,
        }
    }

    /// The next protocol message (text frame) as JSON; panics on anything else.
    pub async fn recv(&mut self) -> Value {
        loop {
            match self.frame().await {
                Some(Message::Text(t)) => {
                    return serde_json::from_str(&t).expect("JSON from server");
                }
                Some(Message::Ping(_) | Message::Pong(_)) => continue,
                other => panic!("expected a text message, got {other:?}"),
            }
        }
    }

    /// Receives the next message, checks its envelope and type, returns its payload.
    pub async fn expect(&mut self, kind: &str) -> Value {
        let msg = self.recv().await;
        assert_eq!(msg["type"], kind, "unexpected message {msg}");
        assert_eq!(msg["version"], "1.0");
        let ts = msg["timestamp"].as_str().expect("timestamp");
        chrono::DateTime::parse_from_rfc3339(ts).expect("RFC 3339 timestamp");
        msg["payload"].clone()
    }

    pub async fn expect_error(&mut self, code: &str) -> Value {
        let p = self.expect("error").await;
        assert_eq!(p["code"], code, "unexpected error {p}");
        assert!(p["message"].as_str().is_some_and(|m| !m.is_empty()));
        p
    }

    pub async fn hello(&mut self) -> String {
        self.send(
            "hello",
            json!({"entity_type":"mcp_server","capabilities":[]}),
        )
        .await;
        let p = self.expect("welcome").await;
        p["session_id"].as_str().expect("session id").to_owned()
    }

    pub async fn register(&mut self, path: &Path) -> bool {
        self.send("register", project_info(path)).await;
        let p = self.expect("registered").await;
        p["success"].as_bool().expect("success flag")
    }

    /// Reads until the server closes; returns its close frame.
    pub async fn closed(&mut self) -> Option<CloseFrame> {
        loop {
            match self.frame().await {
                Some(Message::Close(frame)) => return frame,
                None => return None,
                Some(_) => continue,
            }
        }
    }

    /// Like `closed`, but expects `goodbye{reason}` first and returns the reason.
    pub async fn goodbye(&mut self) -> (String, Option<CloseFrame>) {
        let p = self.expect("goodbye").await;
        let reason = p["reason"].as_str().unwrap_or_default().to_owned();
        (reason, self.closed().await)
    }
}

/// A Server-Sent Events reader over a real HTTP response.
pub struct SseClient {
    stream:
        std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buf: String,
}

impl SseClient {
    pub async fn open(req: reqwest::RequestBuilder) -> Self {
        let resp = req.send().await.expect("SSE request");
        assert!(resp.status().is_success(), "SSE status {}", resp.status());
        let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(ct.starts_with("text/event-stream"), "{ct}");
        Self {
            stream: Box::pin(resp.bytes_stream()),
            buf: String::new(),
        }
    }

    /// The next event's `(event name, data JSON)`, or `None` if none comes within `wait`.
    pub async fn next_within(&mut self, wait: Duration) -> Option<(String, Value)> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut name = String::from("message");
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                return Some((name, serde_json::from_str(&data).expect("event JSON")));
            }
            let chunk = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .ok()??;
            self.buf
                .push_str(&String::from_utf8_lossy(&chunk.expect("SSE chunk")));
        }
    }

    /// Whether the server ends the stream within `wait` (events on the way are skipped).
    pub async fn ended_within(&mut self, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) => return false,
                Ok(None | Some(Err(_))) => return true,
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    pub async fn next(&mut self) -> (String, Value) {
        self.next_within(WAIT).await.expect("an event in time")
    }

    /// Skips events until one named `name` arrives.
    pub async fn next_named(&mut self, name: &str) -> Value {
        loop {
            let (n, data) = self.next().await;
            if n == name {
                return data;
            }
        }
    }
}

/// Sends a raw HTTP/1.1 request and returns the status code: lets a test choose every header.
pub async fn raw_status(addr: SocketAddr, request: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(request.as_bytes()).await.expect("write");
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(WAIT, s.read(&mut buf))
        .await
        .expect("answer in time")
        .expect("read");
    let head = String::from_utf8_lossy(&buf[..n]);
    head.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"))
}

/// The fixture MCP server built alongside the gateway.
pub const FIXTURE: &str = env!("CARGO_BIN_EXE_switchboard-fixture");

/// A `[[servers]]` entry running the fixture with extra arguments.
pub fn fixture_server(name: &str, args: &[&str]) -> switchboard_core::config::ServerConfig {
    switchboard_core::config::ServerConfig {
        name: name.to_owned(),
        command: FIXTURE.to_owned(),
        args: args.iter().map(|a| (*a).to_owned()).collect(),
        env: Default::default(),
        cwd: None,
        enabled: true,
        ..Default::default()
    }
}

/// A minimal Streamable HTTP MCP client over reqwest: every message and header visible.
pub struct McpHttp {
    pub url: String,
    pub token: Option<String>,
    pub session: Option<String>,
    pub protocol: String,
    pub client: reqwest::Client,
    pub next_id: u64,
}

/// What a POST brought back: the final response and any notifications before it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub messages: Vec<Value>,
}

impl Reply {
    pub fn response(&self) -> &Value {
        self.messages
            .iter()
            .find(|m| m.get("id").is_some() && m.get("method").is_none())
            .unwrap_or_else(|| panic!("no response in {:?}", self.messages))
    }

    pub fn result(&self) -> &Value {
        let r = self.response();
        assert!(r.get("error").is_none(), "error response: {r}");
        &r["result"]
    }

    pub fn notifications(&self, method: &str) -> Vec<&Value> {
        self.messages
            .iter()
            .filter(|m| m["method"] == method)
            .collect()
    }

    /// The text of the first content block of a tool result.
    pub fn text(&self) -> String {
        self.result()["content"][0]["text"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

impl McpHttp {
    pub fn new(gw: &TestGateway) -> Self {
        Self::to(gw.url("/mcp"), gw.token.clone())
    }

    /// A session opened and initialized on `gw`'s `/mcp` by a 2025-11-25 client called
    /// `client` that declared `capabilities`.
    pub async fn initialized(gw: &TestGateway, capabilities: Value, client: &str) -> Self {
        let mut mcp = Self::new(gw);
        let init = mcp
            .request(
                "initialize",
                json!({"protocolVersion": "2025-11-25", "capabilities": capabilities,
                       "clientInfo": {"name": client, "version": "1"}}),
            )
            .await;
        assert_eq!(init.result()["serverInfo"]["name"], "switchboard");
        mcp.notify("notifications/initialized", json!({})).await;
        mcp
    }

    /// A client of the gateway's `/mcp` at `url` (a gateway this process did not start).
    pub fn to(url: String, token: String) -> Self {
        Self {
            url,
            token: Some(token),
            session: None,
            protocol: "2025-11-25".into(),
            client: reqwest::Client::new(),
            next_id: 1,
        }
    }

    /// `initialize` + `notifications/initialized`.
    pub async fn connect(gw: &TestGateway) -> Self {
        Self::new(gw).initialize().await
    }

    /// `initialize` + `notifications/initialized`.
    pub async fn initialize(mut self) -> Self {
        let reply = self
            .request(
                "initialize",
                json!({"protocolVersion": "2025-11-25", "capabilities": {},
                       "clientInfo": {"name": "it", "version": "1"}}),
            )
            .await;
        assert_eq!(reply.result()["serverInfo"]["name"], "switchboard");
        self.notify("notifications/initialized", json!({})).await;
        self
    }

    pub fn post(&self, body: String) -> reqwest::RequestBuilder {
        let mut req = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(s) = &self.session {
            req = req
                .header("mcp-session-id", s)
                .header("mcp-protocol-version", &self.protocol);
        }
        req
    }

    pub async fn send(&mut self, body: Value) -> Reply {
        let resp =
            tokio::time::timeout(Duration::from_secs(30), self.post(body.to_string()).send())
                .await
                .expect("answer in time")
                .expect("POST /mcp");
        if let Some(s) = resp.headers().get("mcp-session-id") {
            self.session = Some(s.to_str().unwrap().to_owned());
        }
        let status = resp.status().as_u16();
        let sse = resp
            .headers()
            .get("content-type")
            .is_some_and(|c| c.to_str().unwrap_or("").starts_with("text/event-stream"));
        let body = tokio::time::timeout(Duration::from_secs(30), resp.text())
            .await
            .expect("body in time")
            .expect("body");
        let messages = if sse {
            body.lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(str::trim)
                .filter(|d| !d.is_empty())
                .map(|d| serde_json::from_str(d).expect("SSE data is JSON"))
                .collect()
        } else if body.trim().is_empty() {
            Vec::new()
        } else {
            match serde_json::from_str::<Value>(&body) {
                Ok(v) => vec![v],
                Err(_) => vec![json!({"raw": body})],
            }
        };
        Reply { status, messages }
    }

    /// Another client in this one's session, numbering its requests from `next_id` (so
    /// that ids do not clash within the session): for concurrent calls.
    pub fn sibling(&self, gw: &TestGateway, next_id: u64) -> Self {
        Self {
            session: self.session.clone(),
            next_id,
            ..Self::new(gw)
        }
    }

    pub async fn request(&mut self, method: &str, params: Value) -> Reply {
        let id = self.next_id;
        self.next_id += 1;
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await
    }

    pub async fn notify(&mut self, method: &str, params: Value) -> u16 {
        self.send(json!({"jsonrpc": "2.0", "method": method, "params": params}))
            .await
            .status
    }

    pub async fn call(&mut self, tool: &str, args: Value) -> Reply {
        self.request("tools/call", json!({"name": tool, "arguments": args}))
            .await
    }

    pub async fn tool_names(&mut self) -> Vec<String> {
        let reply = self.request("tools/list", json!({})).await;
        reply.result()["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Polls `tools/list` (bounded) until `pred` holds for the names.
    pub async fn wait_tools(
        &mut self,
        what: &str,
        pred: impl Fn(&[String]) -> bool,
    ) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let names = self.tool_names().await;
            if pred(&names) {
                return names;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: tools are {names:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl TestGateway {
    /// `/api/servers`, the gateway's view of its upstreams.
    pub async fn servers(&self) -> Value {
        self.get("/api/servers")
            .send()
            .await
            .expect("GET /api/servers")
            .json()
            .await
            .expect("servers JSON")
    }

    pub async fn server(&self, name: &str) -> Value {
        self.servers().await["servers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no server {name}"))
    }

    /// Waits (bounded) until server `name` is in `state`; returns its entry.
    pub async fn wait_server(&self, name: &str, state: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let s = self.server(name).await;
            if s["state"] == state {
                return s;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} never became {state}: {s}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// Whether a process exists and is not a zombie.
pub fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next())
}

/// The real `switchboard` binary, for tests that run it as a child process.
pub const SWITCHBOARD_BIN: &str = env!("CARGO_BIN_EXE_switchboard");

/// A child process that is killed and reaped when dropped, so that a test that fails (panics)
/// after starting one leaves nothing running. Every test that starts a process with
/// `std::process::Command` holds it in one of these; it derefs to the [`Child`] it wraps.
/// (Tokio's commands get the same from `kill_on_drop(true)`.)
///
/// [`Child`]: std::process::Child
pub struct ChildGuard(std::process::Child);

impl ChildGuard {
    pub fn spawn(cmd: &mut std::process::Command) -> Self {
        Self(cmd.spawn().expect("spawn child process"))
    }
}

impl std::ops::Deref for ChildGuard {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for ChildGuard {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for ChildGuard {
    /// SIGTERM first, so that a gateway stops its own servers on the way out; SIGKILL if it has
    /// not gone within [`WAIT`]; reaped either way. A child already waited for is left alone
    /// (its pid may belong to another process by now).
    fn drop(&mut self) {
        if !matches!(self.0.try_wait(), Ok(None)) {
            return;
        }
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .stderr(std::process::Stdio::null())
            .status();
        let deadline = std::time::Instant::now() + WAIT;
        while std::time::Instant::now() < deadline {
            if !matches!(self.0.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The base URL (`http://127.0.0.1:<port>`) a `switchboard serve` child prints on its first
/// line; its stdout must be piped. Waits at most [`WAIT`].
pub async fn listening_base(child: &mut std::process::Child) -> String {
    use std::io::{BufRead, BufReader};
    let stdout = child.stdout.take().expect("the child's stdout piped");
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        line
    });
    let line = tokio::time::timeout(WAIT, line)
        .await
        .expect("startup line")
        .unwrap();
    line.trim()
        .strip_prefix("Switchboard listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned()
}

/// Pairs a client with a running `switchboard serve` child the way a person does: a code
/// from `switchboard pair --data-dir <data>`, traded at `POST <base>/pair`. Returns the token.
pub async fn pair_with_cli(base: &str, data: &Path, name: &str) -> String {
    let out = tokio::time::timeout(
        WAIT,
        tokio::process::Command::new(SWITCHBOARD_BIN)
            .args(["pair", "--data-dir"])
            .arg(data)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("pair in time")
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let code = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .to_owned();
    let paired: Value = reqwest::Client::new()
        .post(format!("{base}/pair"))
        .json(&json!({"code": code, "name": name}))
        .timeout(WAIT)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    paired["token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token: {paired}"))
        .to_owned()
}
