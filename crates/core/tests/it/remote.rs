//! Remote upstreams: a `[[servers]]` entry with `url` instead of `command`, reached over
//! Streamable HTTP or MCP over WebSocket, behind the gateway's `/mcp` like any stdio server.
//!
//! The remote peers are real MCP servers built from rmcp's server pieces (its Streamable HTTP
//! service, and its handler over a WebSocket), on 127.0.0.1:0, each in its own tokio runtime
//! so that a test can kill it the way a crashed host goes away: every socket closed at once.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::response::IntoResponse;
use futures_util::{SinkExt, StreamExt};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ClientJsonRpcMessage, ContentBlock,
    ErrorCode, ErrorData, ListToolsResult, PaginatedRequestParams, ProgressNotificationParam,
    ServerCapabilities, ServerConfig, ServerJsonRpcMessage, Tool, ToolAnnotations,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::{ServerHandler, ServiceExt};
use serde_json::{Value, json};
use switchboard_core::auth::store::{MemorySecrets, Stores};
use switchboard_core::config::{HeaderValue, ServerConfig as UpstreamConfig};

use crate::support::*;

/// Tools of the peer: `echo`, `slow` (idempotent, with progress), `slow_write` (not safe to
/// repeat), `add_tool` (adds an echo tool and announces the list change).
#[derive(Clone, Default)]
pub(crate) struct PeerTools {
    extra: Arc<Mutex<Vec<String>>>,
    /// How many `slow`/`slow_write` calls started (a replay is a second start).
    started: Arc<Mutex<Vec<String>>>,
    /// Calls that saw their cancellation (rmcp cancels `ctx.ct` on `notifications/cancelled`).
    cancelled: Arc<Mutex<Vec<String>>>,
    /// Progress notifications handed to rmcp so far.
    progress_sent: Arc<Mutex<u64>>,
}

fn schema() -> Arc<serde_json::Map<String, Value>> {
    Arc::new(
        json!({"type": "object"})
            .as_object()
            .cloned()
            .unwrap_or_default(),
    )
}

impl ServerHandler for PeerTools {
    fn get_info(&self) -> ServerConfig {
        let caps = ServerCapabilities::builder()
            .enable_tools()
            .enable_tool_list_changed()
            .build();
        ServerConfig::new(caps)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let mut slow = Tool::new("slow", "Counts to `steps` with progress", schema());
        slow.annotations = Some(ToolAnnotations::new().idempotent(true));
        let mut tools = vec![
            Tool::new("echo", "Returns `text`", schema()),
            slow,
            Tool::new("slow_write", "Like slow, but not safe to repeat", schema()),
            Tool::new("add_tool", "Adds an echo tool named `name`", schema()),
        ];
        for name in self.extra.lock().unwrap().iter() {
            tools.push(Tool::new(name.clone(), "Added at run time", schema()));
        }
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let args = Value::Object(request.arguments.unwrap_or_default());
        let text = |t: String| Ok(CallToolResult::success(vec![ContentBlock::text(t)]).into());
        match request.name.as_ref() {
            "echo" => text(args["text"].as_str().unwrap_or_default().to_owned()),
            "slow" | "slow_write" => {
                self.started.lock().unwrap().push(request.name.to_string());
                let steps = args["steps"].as_u64().unwrap_or(3);
                let step_ms = args["step_ms"].as_u64().unwrap_or(20);
                for i in 1..=steps {
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(step_ms)) => {}
                        () = ctx.ct.cancelled() => {
                            self.cancelled.lock().unwrap().push(format!("{} at step {i}", request.name));
                            return Err(ErrorData::new(ErrorCode(-32800), "cancelled", None));
                        }
                    }
                    if let Some(token) = ctx.meta.get_progress_token() {
                        let p = ProgressNotificationParam::new(token, i as f64)
                            .with_total(steps as f64);
                        let _ = ctx.peer.notify_progress(p).await;
                        *self.progress_sent.lock().unwrap() += 1;
                    }
                }
                text(format!("done after {steps} steps"))
            }
            "add_tool" => {
                let name = args["name"].as_str().unwrap_or("extra").to_owned();
                self.extra.lock().unwrap().push(name.clone());
                let _ = ctx.peer.notify_tool_list_changed().await;
                text(format!("added {name}"))
            }
            other if self.extra.lock().unwrap().iter().any(|n| n == other) => text(format!(
                "{other}: {}",
                args["text"].as_str().unwrap_or_default()
            )),
            other => Err(ErrorData::new(
                ErrorCode(-32602),
                format!("unknown tool {other}"),
                None,
            )),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Kind {
    /// rmcp's Streamable HTTP service with sessions: answers as SSE, has a GET stream.
    HttpSse,
    /// The same service behind a front that answers every `GET` with 405, as a server
    /// without a GET stream may (so nothing can be resumed either).
    HttpSseNoGet,
    /// rmcp's Streamable HTTP service without sessions, answering plain JSON.
    HttpJson,
    /// rmcp's handler over a WebSocket, one message per text frame.
    Ws,
}

/// A remote MCP server in its own runtime.
struct Peer {
    addr: SocketAddr,
    kind: Kind,
    tools: PeerTools,
    /// Every request's method and headers (HTTP requests and WebSocket handshakes).
    seen: Arc<Mutex<Vec<(axum::http::Method, axum::http::HeaderMap)>>>,
    /// The `retry:` of its SSE streams; `None`: rmcp's default (3 s).
    sse_retry: Option<Duration>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Peer {
    fn start(kind: Kind) -> Self {
        Self::start_on(kind, 0, PeerTools::default(), Arc::default(), None)
    }

    fn start_with_retry(kind: Kind, sse_retry: Duration) -> Self {
        Self::start_on(
            kind,
            0,
            PeerTools::default(),
            Arc::default(),
            Some(sse_retry),
        )
    }

    fn start_on(
        kind: Kind,
        port: u16,
        tools: PeerTools,
        seen: Arc<Mutex<Vec<(axum::http::Method, axum::http::HeaderMap)>>>,
        sse_retry: Option<Duration>,
    ) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("peer port");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let router = router(kind, tools.clone(), seen.clone(), sse_retry);
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let _ = axum::serve(listener, router).await;
        });
        Self {
            addr,
            kind,
            tools,
            seen,
            sse_retry,
            runtime: Some(runtime),
        }
    }

    fn url(&self) -> String {
        match self.kind {
            Kind::Ws => format!("ws://{}/ws", self.addr),
            _ => format!("http://{}/mcp", self.addr),
        }
    }

    /// Gone at once, like a crashed host: every task dropped, every socket closed.
    fn kill(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }

    /// Back on the same port with the same tools.
    fn restart(&mut self) {
        self.kill();
        *self = Self::start_on(
            self.kind,
            self.addr.port(),
            self.tools.clone(),
            self.seen.clone(),
            self.sse_retry,
        );
    }

    /// Values of header `name` over every request so far.
    fn header_values(&self, name: &str) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(_, h)| h.get(name).map(|v| v.to_str().unwrap().to_owned()))
            .collect()
    }

    fn methods(&self) -> Vec<axum::http::Method> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|(m, _)| m.clone())
            .collect()
    }

    /// Waits (bounded) until `pred` holds for the peer's tools state.
    async fn wait_for(&self, what: &str, pred: impl Fn(&PeerTools) -> bool) {
        let deadline = Instant::now() + WAIT;
        while !pred(&self.tools) {
            assert!(Instant::now() < deadline, "peer: {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The peer's routes: `/mcp` (rmcp's Streamable HTTP service) or `/ws` (rmcp over a WebSocket),
/// noting every request's method and headers in `seen`. Served over plain TCP here and over TLS
/// in `tls.rs`.
pub(crate) fn router(
    kind: Kind,
    tools: PeerTools,
    seen: Arc<Mutex<Vec<(axum::http::Method, axum::http::HeaderMap)>>>,
    sse_retry: Option<Duration>,
) -> axum::Router {
    let router = match kind {
        Kind::HttpSse | Kind::HttpSseNoGet | Kind::HttpJson => {
            use rmcp::transport::streamable_http_server::{
                StreamableHttpServerConfig, StreamableHttpService, session::local,
            };
            let mut config = StreamableHttpServerConfig::default()
                .with_legacy_session_mode(kind != Kind::HttpJson)
                .with_json_response(kind == Kind::HttpJson);
            let mut sessions = local::LocalSessionManager::default();
            if let Some(retry) = sse_retry {
                config = config.with_sse_retry(Some(retry));
                sessions.session_config.sse_retry = Some(retry);
            }
            let handler = tools.clone();
            let service =
                StreamableHttpService::new(move || Ok(handler.clone()), Arc::new(sessions), config);
            let router = axum::Router::new().nest_service("/mcp", service);
            if kind == Kind::HttpSseNoGet {
                router.layer(axum::middleware::from_fn(
                    |req: axum::extract::Request, next: axum::middleware::Next| async move {
                        if req.method() == axum::http::Method::GET {
                            return axum::http::StatusCode::METHOD_NOT_ALLOWED.into_response();
                        }
                        next.run(req).await
                    },
                ))
            } else {
                router
            }
        }
        Kind::Ws => {
            let handler = tools.clone();
            axum::Router::new().route(
                "/ws",
                axum::routing::get(move |ws: axum::extract::ws::WebSocketUpgrade| {
                    let handler = handler.clone();
                    async move { ws.on_upgrade(move |socket| serve_ws(socket, handler)) }
                }),
            )
        }
    };
    let log = seen;
    router.layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            log.lock()
                .unwrap()
                .push((req.method().clone(), req.headers().clone()));
            next.run(req)
        },
    ))
}

/// rmcp's server over an axum WebSocket: one JSON-RPC message per text frame.
async fn serve_ws(socket: axum::extract::ws::WebSocket, handler: PeerTools) {
    use axum::extract::ws::Message;
    let (sink, stream) = socket.split();
    let sink = sink.with(|msg: ServerJsonRpcMessage| async move {
        Ok::<_, axum::Error>(Message::text(serde_json::to_string(&msg).unwrap()))
    });
    let stream = stream.filter_map(|frame| async move {
        match frame {
            Ok(Message::Text(t)) => serde_json::from_str::<ClientJsonRpcMessage>(&t).ok(),
            _ => None,
        }
    });
    if let Ok(running) = handler.serve((Box::pin(sink), Box::pin(stream))).await {
        let _ = running.waiting().await;
    }
}

fn remote_server(name: &str, url: &str) -> UpstreamConfig {
    UpstreamConfig {
        name: name.into(),
        url: Some(url.into()),
        enabled: true,
        ..Default::default()
    }
}

/// A gateway with `servers`; the secret `sb-test/remote` is in its (memory) secret store.
async fn gateway(servers: Vec<UpstreamConfig>) -> TestGateway {
    let secrets = MemorySecrets::default();
    secrets.insert("sb-test", "remote", "s3cret-from-keychain");
    let stores = Stores {
        secrets: Some(Arc::new(secrets)),
        ..Stores::default()
    };
    TestGateway::with_stores(stores, |c| c.servers = servers).await
}

fn keychain_auth() -> (String, HeaderValue) {
    (
        "Authorization".into(),
        HeaderValue::Keychain {
            service: "sb-test".into(),
            account: "remote".into(),
            prefix: "Bearer ".into(),
        },
    )
}

/// Lists, calls (with progress under the client's own token), and sees a list change, through
/// the gateway's `/mcp`.
async fn list_call_progress_and_list_change(kind: Kind) {
    let peer = Peer::start(kind);
    let mut server = remote_server("web", &peer.url());
    server.headers = [
        keychain_auth(),
        ("X-Plain".into(), HeaderValue::Plain("plain-value".into())),
    ]
    .into();
    let gw = gateway(vec![server]).await;
    let mut mcp = McpHttp::connect(&gw).await;
    let names = mcp
        .wait_tools("remote tools", |n| n.iter().any(|t| t == "web__slow"))
        .await;
    for t in ["web__echo", "web__slow", "web__slow_write", "web__add_tool"] {
        assert!(names.iter().any(|n| n == t), "{t} missing from {names:?}");
    }

    let reply = mcp.call("web__echo", json!({"text": "hello remote"})).await;
    assert_eq!(reply.text(), "hello remote", "{:?}", reply.messages);

    let reply = mcp
        .request(
            "tools/call",
            json!({"name": "web__slow", "arguments": {"steps": 3, "step_ms": 20},
                   "_meta": {"progressToken": "client-token-1"}}),
        )
        .await;
    let progress = reply.notifications("notifications/progress");
    assert_eq!(progress.len(), 3, "{:?}", reply.messages);
    for (i, p) in progress.iter().enumerate() {
        assert_eq!(p["params"]["progressToken"], "client-token-1");
        assert_eq!(p["params"]["progress"], json!((i + 1) as f64));
    }
    assert_eq!(reply.text(), "done after 3 steps");

    // The server's list change reaches the gateway, which lists the new tool.
    let reply = mcp.call("web__add_tool", json!({"name": "late"})).await;
    assert_eq!(reply.text(), "added late");
    mcp.wait_tools("the added tool", |n| n.iter().any(|t| t == "web__late"))
        .await;
    let reply = mcp.call("web__late", json!({"text": "x"})).await;
    assert_eq!(reply.text(), "late: x");

    // The headers reached the remote, the keychain one with its prefix.
    let auth = peer.header_values("authorization");
    assert!(!auth.is_empty(), "no Authorization header reached the peer");
    assert!(
        auth.iter().all(|v| v == "Bearer s3cret-from-keychain"),
        "{auth:?}"
    );
    assert!(
        peer.header_values("x-plain")
            .iter()
            .all(|v| v == "plain-value")
    );

    let s = gw.server("web").await;
    assert_eq!(s["state"], "running");
    assert_eq!(s["url"], peer.url());
    assert_eq!(s["pid"], Value::Null);
}

#[tokio::test]
async fn a_streamable_http_remote_with_sessions_and_sse_works_like_a_stdio_server() {
    list_call_progress_and_list_change(Kind::HttpSse).await;
}

#[tokio::test]
async fn a_websocket_remote_works_like_a_stdio_server() {
    list_call_progress_and_list_change(Kind::Ws).await;
}

#[tokio::test]
async fn a_stateless_remote_answering_plain_json_is_listed_and_called() {
    let peer = Peer::start(Kind::HttpJson);
    let gw = gateway(vec![remote_server("plain", &peer.url())]).await;
    let mut mcp = McpHttp::connect(&gw).await;
    mcp.wait_tools("remote tools", |n| n.iter().any(|t| t == "plain__echo"))
        .await;
    let reply = mcp.call("plain__echo", json!({"text": "json body"})).await;
    assert_eq!(reply.text(), "json body", "{:?}", reply.messages);
    // No session was offered, so none was sent back.
    assert!(peer.header_values("mcp-session-id").is_empty());
}

#[tokio::test]
async fn a_missing_keychain_secret_keeps_the_server_down_with_a_reason_naming_it() {
    let peer = Peer::start(Kind::HttpSse);
    let mut server = remote_server("locked", &peer.url());
    server.headers = [(
        "Authorization".to_owned(),
        HeaderValue::Keychain {
            service: "sb-test".into(),
            account: "absent".into(),
            prefix: String::new(),
        },
    )]
    .into();
    let gw = gateway(vec![server]).await;
    let s = gw.wait_server("locked", "restarting").await;
    let reason = s["last_error"].as_str().unwrap();
    assert!(
        reason.contains("sb-test/absent") && reason.contains("Authorization"),
        "{reason}"
    );
    assert!(
        peer.seen.lock().unwrap().is_empty(),
        "nothing is sent without the header"
    );
}

/// The remote goes away mid-call: the gateway reconnects with a doubling backoff, replays the
/// idempotent call and refuses to repeat the other one.
async fn drop_mid_call(kind: Kind) {
    let mut peer = Peer::start(kind);
    let gw = gateway(vec![remote_server("far", &peer.url())]).await;
    let mut mcp = McpHttp::connect(&gw).await;
    mcp.wait_tools("remote tools", |n| n.iter().any(|t| t == "far__slow"))
        .await;
    let mut events = gw.events().await;

    let mut safe = mcp.sibling(&gw, 100);
    let mut unsafe_ = mcp.sibling(&gw, 200);
    let safe_call = tokio::spawn(async move {
        safe.call("far__slow", json!({"steps": 10, "step_ms": 50}))
            .await
    });
    let unsafe_call = tokio::spawn(async move {
        unsafe_
            .call("far__slow_write", json!({"steps": 10, "step_ms": 50}))
            .await
    });
    peer.wait_for("both calls running", |t| {
        t.started.lock().unwrap().len() == 2
    })
    .await;
    peer.kill();

    // The peer stays down for two reconnect attempts: restarting → starting gaps double.
    let mut transitions: Vec<(String, Instant)> = Vec::new();
    while transitions.iter().filter(|(s, _)| s == "starting").count() < 2 {
        let data = events.next_named("server_state").await;
        if data["server"] == "far" {
            transitions.push((data["state"].as_str().unwrap().to_owned(), Instant::now()));
        }
    }
    let states: Vec<&str> = transitions.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(
        states,
        ["restarting", "starting", "restarting", "starting"],
        "{transitions:?}"
    );
    let first = transitions[1].1 - transitions[0].1;
    let second = transitions[3].1 - transitions[2].1;
    eprintln!("{kind:?}: reconnect backoff seen by a client: {first:?}, then {second:?}");
    // Seen by a client, so with its scheduling noise: the delays themselves are at least
    // 500 ms and 1000 ms (jitter only adds, so comparing the two with each other would test
    // the jitter, not the doubling).
    assert!(
        first >= Duration::from_millis(400),
        "first backoff {first:?}"
    );
    assert!(
        second >= Duration::from_millis(900),
        "second backoff {second:?} after {first:?}"
    );
    let reason = gw.server("far").await["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(reason.contains(&peer.url()), "{reason}");

    peer.restart();
    let safe = tokio::time::timeout(Duration::from_secs(30), safe_call)
        .await
        .expect("the replayed call ends")
        .unwrap();
    assert_eq!(safe.text(), "done after 10 steps", "{:?}", safe.messages);
    let refused = tokio::time::timeout(WAIT, unsafe_call)
        .await
        .expect("the refused call ends")
        .unwrap();
    assert_eq!(refused.result()["isError"], true, "{:?}", refused.messages);
    let text = refused.text();
    assert!(
        text.contains("dropped the connection") && text.contains("not repeated"),
        "{text}"
    );
    gw.wait_server("far", "running").await;
    // Each tool ran once before the drop; only the safe one ran again.
    let started = peer.tools.started.lock().unwrap().clone();
    assert_eq!(
        started.iter().filter(|s| *s == "slow").count(),
        2,
        "{started:?}"
    );
    assert_eq!(
        started.iter().filter(|s| *s == "slow_write").count(),
        1,
        "{started:?}"
    );

    // Telemetry records the replay.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let lines = std::fs::read_to_string(gw.data_dir.join("telemetry.jsonl")).unwrap();
    let slow: Value = lines
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|r| r["tool_name"] == "far__slow")
        .expect("a telemetry line for far__slow");
    assert_eq!(slow["replay_attempts"], 1);
    assert_eq!(slow["outcome"], "ok");
}

// Several threads: the event reader must not wait behind the gateway's own work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamable_http_remote_that_drops_mid_call_is_reconnected_with_backoff_and_replay_rules()
{
    drop_mid_call(Kind::HttpSse).await;
}

// Several threads: the event reader must not wait behind the gateway's own work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_remote_that_drops_mid_call_is_reconnected_with_backoff_and_replay_rules() {
    drop_mid_call(Kind::Ws).await;
}

/// A client's `notifications/cancelled` reaches the remote as a cancel of the request the
/// gateway really sent there.
async fn cancel_through(kind: Kind) {
    let peer = Peer::start(kind);
    let gw = gateway(vec![remote_server("far", &peer.url())]).await;
    let mut mcp = McpHttp::connect(&gw).await;
    mcp.wait_tools("remote tools", |n| n.iter().any(|t| t == "far__slow"))
        .await;
    let mut caller = mcp.sibling(&gw, 1);
    let call = tokio::spawn(async move {
        caller
            .send(json!({"jsonrpc": "2.0", "id": 77, "method": "tools/call",
                         "params": {"name": "far__slow", "arguments": {"steps": 200, "step_ms": 50}}}))
            .await
    });
    peer.wait_for("the call running", |t| {
        !t.started.lock().unwrap().is_empty()
    })
    .await;
    mcp.notify(
        "notifications/cancelled",
        json!({"requestId": 77, "reason": "user stopped it"}),
    )
    .await;
    peer.wait_for("the cancel", |t| !t.cancelled.lock().unwrap().is_empty())
        .await;
    let cancelled = peer.tools.cancelled.lock().unwrap().clone();
    assert!(cancelled[0].starts_with("slow at step"), "{cancelled:?}");
    tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("the caller is released")
        .unwrap();
    // The server is still fine for the next call.
    let reply = mcp.call("far__echo", json!({"text": "after"})).await;
    assert_eq!(reply.text(), "after");
}

#[tokio::test]
async fn a_cancel_reaches_a_streamable_http_remote() {
    cancel_through(Kind::HttpSse).await;
}

#[tokio::test]
async fn a_cancel_reaches_a_websocket_remote() {
    cancel_through(Kind::Ws).await;
}

#[tokio::test]
async fn an_idle_remote_that_goes_away_is_noticed_and_reconnected_and_its_session_ended_at_stop() {
    for kind in [Kind::HttpSse, Kind::Ws] {
        let mut peer = Peer::start(kind);
        let gw = gateway(vec![remote_server("idle", &peer.url())]).await;
        gw.wait_server("idle", "running").await;
        peer.kill();
        // No call is needed to notice: the GET stream (HTTP) or the socket (WS) breaks.
        let s = gw.wait_server("idle", "restarting").await;
        let reason = s["last_error"].as_str().unwrap_or_default();
        assert!(reason.contains(&peer.url()), "{kind:?}: {reason}");
        peer.restart();
        let s = gw.wait_server("idle", "running").await;
        assert!(s["restarts"].as_u64().unwrap() >= 1, "{kind:?}: {s}");
        let mut mcp = McpHttp::connect(&gw).await;
        let reply = mcp.call("idle__echo", json!({"text": "back"})).await;
        assert_eq!(reply.text(), "back", "{kind:?}");
        gw.stop().await.expect("clean stop");
        if kind == Kind::HttpSse {
            // The session was ended politely.
            assert!(
                peer.methods().contains(&axum::http::Method::DELETE),
                "{:?}",
                peer.methods()
            );
        }
    }
}

/// A 401 means a login (OAuth, see `it/oauth.rs`): `needs_login`, not `restarting`. A server
/// with its own configured `Authorization` header is not logged in to: its 401 is an error
/// like any other, and the server keeps retrying with the status in its reason.
#[tokio::test]
async fn a_remote_that_refuses_us_needs_login_or_with_its_own_header_stays_restarting() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/mcp",
        axum::routing::post(|| async { (axum::http::StatusCode::UNAUTHORIZED, "token expired") }),
    );
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let url = format!("http://{addr}/mcp");
    let mut own = remote_server("own", &url);
    own.headers.insert(
        "Authorization".into(),
        switchboard_core::config::HeaderValue::Plain("Bearer stale".into()),
    );
    let gw = gateway(vec![remote_server("denied", &url), own]).await;
    let s = gw.wait_server("denied", "needs_login").await;
    let reason = s["last_error"].as_str().unwrap_or_default();
    assert!(
        reason.contains("401") && reason.contains("switchboard login denied"),
        "{reason}"
    );
    let s = gw.wait_server("own", "restarting").await;
    let reason = s["last_error"].as_str().unwrap_or_default();
    assert!(
        reason.contains("401") && reason.contains("token expired"),
        "{reason}"
    );
    server.abort();
}

/// A TCP proxy in front of a peer that can cut every live connection at once while it keeps
/// accepting new ones: a network blip or a restarted load balancer, not a server that died.
struct Proxy {
    addr: SocketAddr,
    /// The byte pumps of the connections accepted so far; aborting one closes both sockets.
    live: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let live: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let pumps = live.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let pump = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                let mut pumps = pumps.lock().unwrap();
                pumps.retain(|p| !p.is_finished());
                pumps.push(pump.abort_handle());
            }
        });
        Self { addr, live, accept }
    }

    fn url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }

    /// Closes every connection open now; how many there were.
    fn cut(&self) -> usize {
        let pumps = std::mem::take(&mut *self.live.lock().unwrap());
        let open = pumps.iter().filter(|p| !p.is_finished()).count();
        for p in pumps {
            p.abort();
        }
        open
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// Calls `far__slow_write` (not safe to repeat) with progress through `gw`, and cuts every
/// connection between the gateway and the remote once three progress steps were sent.
async fn call_and_cut(gw: &TestGateway, peer: &Peer, proxy: &Proxy) -> Reply {
    let mut mcp = McpHttp::connect(gw).await;
    mcp.wait_tools("remote tools", |n| n.iter().any(|t| t == "far__slow_write"))
        .await;
    let mut caller = mcp.sibling(gw, 300);
    let call = tokio::spawn(async move {
        caller
            .request(
                "tools/call",
                json!({"name": "far__slow_write", "arguments": {"steps": 10, "step_ms": 100},
                       "_meta": {"progressToken": "resume-me"}}),
            )
            .await
    });
    peer.wait_for("three progress steps", |t| {
        *t.progress_sent.lock().unwrap() >= 3
    })
    .await;
    let cut = proxy.cut();
    // The POST carrying the answer and the GET stream, at least.
    assert!(cut >= 2, "only {cut} connections were open to cut");
    tokio::time::timeout(Duration::from_secs(30), call)
        .await
        .expect("the call ends")
        .unwrap()
}

// Several threads: the proxy's pumps must not wait behind the gateway's own work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamable_http_response_stream_cut_mid_call_is_resumed_with_last_event_id() {
    let peer = Peer::start_with_retry(Kind::HttpSse, Duration::from_millis(200));
    let proxy = Proxy::start(peer.addr).await;
    let gw = gateway(vec![remote_server("far", &proxy.url())]).await;
    let reply = call_and_cut(&gw, &peer, &proxy).await;

    // The real result, from the one run of the tool.
    assert_eq!(reply.text(), "done after 10 steps", "{:?}", reply.messages);
    let started = peer.tools.started.lock().unwrap().clone();
    assert_eq!(started, ["slow_write"], "the tool ran exactly once");
    // Every progress step once, in order, under the caller's own token: the steps sent
    // while the connection was down were replayed, the one rmcp repeats was skipped.
    let progress: Vec<Value> = reply
        .notifications("notifications/progress")
        .iter()
        .map(|p| {
            assert_eq!(p["params"]["progressToken"], "resume-me", "{p}");
            p["params"]["progress"].clone()
        })
        .collect();
    let expected: Vec<Value> = (1..=10).map(|i| json!(i as f64)).collect();
    assert_eq!(progress, expected, "{:?}", reply.messages);
    // Resumed, not reconnected: the same session, no restart.
    let ids = peer.header_values("last-event-id");
    assert!(
        !ids.is_empty(),
        "no GET with Last-Event-ID reached the peer"
    );
    eprintln!("resumed after event ids {ids:?}");
    // rmcp's ids are `<index>/<stream>`: the stream of the POST, never the GET's.
    assert!(ids.iter().all(|i| i.contains('/')), "{ids:?}");
    let s = gw.server("far").await;
    assert_eq!(s["state"], "running", "{s}");
    assert_eq!(s["restarts"], 0, "{s}");
    let sessions: std::collections::HashSet<String> =
        peer.header_values("mcp-session-id").into_iter().collect();
    assert_eq!(sessions.len(), 1, "one session throughout: {sessions:?}");

    // Telemetry: an ordinary successful call, no replay.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let lines = std::fs::read_to_string(gw.data_dir.join("telemetry.jsonl")).unwrap();
    let call: Value = lines
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|r| r["tool_name"] == "far__slow_write")
        .expect("a telemetry line for far__slow_write");
    assert_eq!(call["outcome"], "ok", "{call}");
    assert_eq!(call["replay_attempts"], 0, "{call}");
}

// Several threads: the proxy's pumps must not wait behind the gateway's own work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_that_refuses_to_resume_a_cut_stream_falls_back_to_reconnect_and_replay_rules() {
    let peer = Peer::start_with_retry(Kind::HttpSseNoGet, Duration::from_millis(200));
    let proxy = Proxy::start(peer.addr).await;
    let gw = gateway(vec![remote_server("far", &proxy.url())]).await;
    let reply = call_and_cut(&gw, &peer, &proxy).await;

    // Resumption was tried, refused with 405, and the call was not repeated.
    assert!(
        !peer.header_values("last-event-id").is_empty(),
        "resumption was not even tried"
    );
    assert_eq!(reply.result()["isError"], true, "{:?}", reply.messages);
    let text = reply.text();
    assert!(
        text.contains("dropped the connection") && text.contains("not repeated"),
        "{text}"
    );
    let s = gw.wait_server("far", "running").await;
    assert!(s["restarts"].as_u64().unwrap() >= 1, "{s}");
    let started = peer.tools.started.lock().unwrap().clone();
    assert_eq!(started, ["slow_write"], "not repeated");
    // The reconnected server works.
    let mut mcp = McpHttp::connect(&gw).await;
    let reply = mcp.call("far__echo", json!({"text": "after"})).await;
    assert_eq!(reply.text(), "after");
}

/// A `server_state` event of one server: the state and when the gateway published it.
struct StateAt {
    state: String,
    at: chrono::DateTime<chrono::FixedOffset>,
}

impl std::fmt::Debug for StateAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at {}", self.state, self.at.format("%H:%M:%S%.3f"))
    }
}

/// Reads `server_state` events of `server` until one in `state` arrives (each within
/// [`WAIT`]), appending them to `seen`.
async fn until_state(events: &mut SseClient, server: &str, state: &str, seen: &mut Vec<StateAt>) {
    loop {
        let data = events.next_named("server_state").await;
        if data["server"] != server {
            continue;
        }
        let at = chrono::DateTime::parse_from_rfc3339(data["timestamp"].as_str().unwrap())
            .expect("RFC 3339 timestamp");
        let got = data["state"].as_str().unwrap().to_owned();
        let done = got == state;
        seen.push(StateAt { state: got, at });
        if done {
            return;
        }
    }
}

/// The time between two events, by the gateway's own clock.
fn between(from: &StateAt, to: &StateAt) -> Duration {
    (to.at - from.at).to_std().expect("events in order")
}

/// The reconnect delays in `seen`: from each `restarting` to the `starting` after it.
fn backoffs(seen: &[StateAt]) -> Vec<Duration> {
    seen.windows(2)
        .filter(|w| w[0].state == "restarting" && w[1].state == "starting")
        .map(|w| between(&w[0], &w[1]))
        .collect()
}

/// A reconnect delay of `base` with the remote jitter (it only adds, up to 10 %), plus room
/// for a busy machine; never as long as the doubled delay.
fn assert_backoff(seen: Duration, base: Duration, what: &str) {
    let slack = Duration::from_millis(250);
    assert!(
        seen + Duration::from_millis(5) >= base && seen <= base.mul_f64(1.1) + slack,
        "{what}: waited {seen:?}, expected {base:?} (+10 % jitter)"
    );
}

fn proxied_ws(proxy: &Proxy) -> String {
    format!("ws://{}/ws", proxy.addr)
}

// Several threads: the proxy's pumps must not wait behind the gateway's own work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_losses_double_the_reconnect_delay_and_a_healthy_run_resets_it() {
    const INITIAL: Duration = Duration::from_millis(300);
    const HEALTHY: Duration = Duration::from_millis(1000);
    let peer = Peer::start(Kind::Ws);
    let proxy = Proxy::start(peer.addr).await;
    let url = proxied_ws(&proxy);
    let gw = TestGateway::with(|c| {
        c.servers = vec![remote_server("far", &url)];
        c.gateway.remote_backoff_initial_ms = INITIAL.as_millis() as u64;
        c.gateway.remote_backoff_max_ms = 60_000;
        c.gateway.healthy_after_ms = HEALTHY.as_millis() as u64;
    })
    .await;
    let mut events = gw.events().await;
    gw.wait_server("far", "running").await;

    // Three losses right after each reconnect: 300 ms, 600 ms, 1200 ms. What came before the
    // first loss (the first start, seen or not) is left out.
    let mut seen = Vec::new();
    for _ in 0..3 {
        assert!(proxy.cut() >= 1, "no connection to cut");
        if seen.is_empty() {
            let mut before = Vec::new();
            until_state(&mut events, "far", "restarting", &mut before).await;
            seen.extend(before.pop());
        }
        until_state(&mut events, "far", "running", &mut seen).await;
    }
    let quick = backoffs(&seen);
    eprintln!("after quick losses: {seen:?}");
    assert_eq!(quick.len(), 3, "{seen:?}");
    for (i, delay) in quick.iter().enumerate() {
        assert_backoff(*delay, INITIAL * (1 << i), &format!("quick loss {}", i + 1));
    }
    // Each of those runs was short of healthy (else the test proves nothing).
    for w in seen.windows(2) {
        if w[0].state == "running" {
            assert!(between(&w[0], &w[1]) < HEALTHY, "{seen:?}");
        }
    }

    // Up for longer than `healthy_after_ms`, then lost: the initial delay again, not 2400 ms.
    tokio::time::sleep(HEALTHY + Duration::from_millis(300)).await;
    let mut healthy = vec![seen.pop().expect("the last running")];
    assert!(proxy.cut() >= 1, "no connection to cut");
    until_state(&mut events, "far", "running", &mut healthy).await;
    eprintln!("after a healthy run: {healthy:?}");
    assert_eq!(healthy[1].state, "restarting", "{healthy:?}");
    assert!(between(&healthy[0], &healthy[1]) > HEALTHY, "{healthy:?}");
    let after = backoffs(&healthy);
    assert_eq!(after.len(), 1, "{healthy:?}");
    assert_backoff(after[0], INITIAL, "loss after a healthy run");

    let mut mcp = McpHttp::connect(&gw).await;
    let reply = mcp.call("far__echo", json!({"text": "still here"})).await;
    assert_eq!(reply.text(), "still here");
}

// Several threads: the proxy's pumps must not wait behind the gateway's own work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconnect_delay_grows_to_remote_backoff_max_ms_and_no_further() {
    const INITIAL: Duration = Duration::from_millis(100);
    const CAP: Duration = Duration::from_millis(400);
    let peer = Peer::start(Kind::Ws);
    let proxy = Proxy::start(peer.addr).await;
    let url = proxied_ws(&proxy);
    let gw = TestGateway::with(|c| {
        c.servers = vec![remote_server("far", &url)];
        c.gateway.remote_backoff_initial_ms = INITIAL.as_millis() as u64;
        c.gateway.remote_backoff_max_ms = CAP.as_millis() as u64;
    })
    .await;
    let mut events = gw.events().await;
    gw.wait_server("far", "running").await;

    // The way in is gone (connections cut, the port refusing): every attempt fails at once.
    drop(proxy);
    let mut seen = Vec::new();
    while backoffs(&seen).len() < 6 {
        until_state(&mut events, "far", "starting", &mut seen).await;
    }
    eprintln!("reconnecting to nothing: {seen:?}");
    let delays = backoffs(&seen);
    // 100, 200, 400, then 400 (uncapped: 800, 1600, 3200).
    for (i, delay) in delays.iter().enumerate() {
        let base = (INITIAL * (1 << i)).min(CAP);
        assert_backoff(*delay, base, &format!("attempt {}", i + 1));
    }
    let reason = gw.server("far").await["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(reason.contains(&url), "{reason}");
}

/// A remote server waiting out a minute-long reconnect backoff although it is back: the stage
/// on which a wake-up (`wake`) should send it back at once. `stores` hand in the clock, routing
/// table or bus the wake-up comes from.
async fn remote_in_backoff(stores: Stores) -> (TestGateway, Peer, SseClient) {
    let mut peer = Peer::start(Kind::Ws);
    let url = peer.url();
    let gw = TestGateway::with_stores(stores, |c| {
        c.servers = vec![remote_server("far", &url)];
        // without the wake-up, the first reconnect would come after a minute
        c.gateway.remote_backoff_initial_ms = 60_000;
        c.gateway.remote_backoff_max_ms = 60_000;
    })
    .await;
    let events = gw.events().await;
    gw.wait_server("far", "running").await;
    peer.kill();
    gw.wait_server("far", "restarting").await;
    peer.restart();
    // the server is back, but the backoff has most of its minute to go
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(gw.server("far").await["state"], "restarting");
    (gw, peer, events)
}

/// After `wake` woke the gateway: a `resumed` event that says `why` and names the server, which
/// is running again well before its backoff would have ended, and answers calls.
async fn reconnects_at_once(
    gw: &TestGateway,
    events: &mut SseClient,
    why: &str,
    wake: impl FnOnce(),
) -> Value {
    let woke = Instant::now();
    wake();
    let resumed = events.next_named("resumed").await;
    assert_eq!(resumed["why"], why, "{resumed}");
    assert_eq!(resumed["reconnecting"], json!(["far"]), "{resumed}");
    gw.wait_server("far", "running").await;
    let took = woke.elapsed();
    eprintln!("reconnected {took:?} after the {why} wake-up");
    assert!(took < Duration::from_secs(10), "{took:?}");
    let mut mcp = McpHttp::connect(gw).await;
    assert_eq!(
        mcp.call("far__echo", json!({"text": "up"})).await.text(),
        "up"
    );
    resumed
}

/// After the machine sleeps (simulated: the gateway's wall clock moved an hour ahead of its
/// monotonic one), a remote server waiting out a long reconnect backoff tries again at once,
/// and a `resumed` event names it.
#[tokio::test]
async fn after_a_sleep_a_remote_in_backoff_reconnects_at_once() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let ahead = Arc::new(AtomicU64::new(0));
    let clock = {
        let ahead = ahead.clone();
        switchboard_core::auth::store::WallClock(Arc::new(move || {
            std::time::SystemTime::now() + Duration::from_secs(ahead.load(Ordering::Relaxed))
        }))
    };
    let stores = Stores {
        wall_clock: Some(clock),
        ..Stores::default()
    };
    let (gw, _peer, mut events) = remote_in_backoff(stores).await;
    let resumed = reconnects_at_once(&gw, &mut events, "clock", || {
        ahead.store(3600, Ordering::Relaxed);
    })
    .await;
    assert!(resumed["slept_s"].as_u64().unwrap() >= 3590, "{resumed}");
}

/// When the network comes back (simulated: the routing table the gateway reads gains a
/// default route), a remote server waiting out its backoff tries again at once.
#[tokio::test]
async fn when_the_network_comes_back_a_remote_in_backoff_reconnects_at_once() {
    const HEADER: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n";
    let table = Arc::new(Mutex::new(HEADER.to_owned()));
    let routes = {
        let table = table.clone();
        switchboard_core::auth::store::RouteTable(Arc::new(move || {
            Ok(table.lock().unwrap().clone())
        }))
    };
    let stores = Stores {
        routes: Some(routes),
        ..Stores::default()
    };
    let (gw, _peer, mut events) = remote_in_backoff(stores).await;
    let resumed = reconnects_at_once(&gw, &mut events, "network", || {
        table
            .lock()
            .unwrap()
            .push_str("wlan0\t00000000\t0102A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\n");
    })
    .await;
    assert_eq!(resumed["slept_s"], 0, "{resumed}");
}

/// When logind says the machine resumed (`PrepareForSleep(false)`, sent here on a private bus
/// by `dbus-send`, as logind sends it on the system bus), a remote server waiting out its
/// backoff tries again at once.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn when_logind_says_the_machine_resumed_a_remote_in_backoff_reconnects_at_once() {
    use std::io::BufRead as _;
    let mut bus = ChildGuard::spawn(
        std::process::Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--print-address"])
            .stdout(std::process::Stdio::piped()),
    );
    let mut address = String::new();
    std::io::BufReader::new(bus.stdout.take().unwrap())
        .read_line(&mut address)
        .expect("the bus's address");
    let address = address.trim().to_owned();
    assert!(address.starts_with("unix:"), "{address}");
    let stores = Stores {
        system_bus: Some(address.clone()),
        ..Stores::default()
    };
    let (gw, _peer, mut events) = remote_in_backoff(stores).await;
    let signal = |asleep: &str| {
        let status = std::process::Command::new("dbus-send")
            .arg(format!("--bus={address}"))
            .args([
                "--type=signal",
                "/org/freedesktop/login1",
                "org.freedesktop.login1.Manager.PrepareForSleep",
            ])
            .arg(format!("boolean:{asleep}"))
            .status()
            .expect("dbus-send");
        assert!(status.success(), "dbus-send {asleep}: {status}");
    };
    signal("true");
    reconnects_at_once(&gw, &mut events, "logind", || signal("false")).await;
}
