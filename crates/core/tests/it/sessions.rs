//! Sessions and their progress streams: `POST /session`, `GET /session/<id>/events` (SSE),
//! `GET /ws/mcp/events` (WebSocket), who may watch, and the session HubEvents.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::support::*;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn gateway() -> TestGateway {
    let gw = TestGateway::with(|c| c.servers = vec![fixture_server("fx", &[])]).await;
    McpHttp::connect(&gw)
        .await
        .wait_tools("fx", |n| n.iter().any(|t| t == "fx__slow"))
        .await;
    gw
}

async fn create_session(gw: &TestGateway, token: &str) -> (String, String) {
    let r = reqwest::Client::new()
        .post(gw.url("/session"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let body: Value = r.json().await.unwrap();
    (
        body["session_id"].as_str().unwrap().to_owned(),
        body["token"].as_str().unwrap().to_owned(),
    )
}

async fn connect(url: &str, bearer: Option<&str>, protocols: Option<&str>) -> (Ws, Option<String>) {
    let mut req = url.into_client_request().unwrap();
    if let Some(t) = bearer {
        req.headers_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    if let Some(p) = protocols {
        req.headers_mut()
            .insert("sec-websocket-protocol", p.parse().unwrap());
    }
    let (ws, resp) = tokio_tungstenite::connect_async(req)
        .await
        .expect("upgrade");
    let chosen = resp
        .headers()
        .get("sec-websocket-protocol")
        .map(|v| v.to_str().unwrap().to_owned());
    (ws, chosen)
}

async fn text(ws: &mut Ws) -> Value {
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame in time")
        {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).unwrap(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

fn status_of(e: tokio_tungstenite::tungstenite::Error) -> u16 {
    match e {
        tokio_tungstenite::tungstenite::Error::Http(r) => r.status().as_u16(),
        other => panic!("expected an HTTP refusal, got {other}"),
    }
}

#[tokio::test]
async fn the_caller_and_an_sse_and_a_ws_watcher_see_the_same_ten_progress_frames() {
    let gw = gateway().await;
    let (sid, watch_token) = create_session(&gw, &gw.token).await;

    // SSE watcher with the session's own token
    let mut sse = SseClient::open(
        reqwest::Client::new()
            .get(gw.url(&format!("/session/{sid}/events")))
            .bearer_auth(&watch_token),
    )
    .await;
    // WS watcher with the legacy query token, offering construct.v1
    let (mut watcher, chosen) = connect(
        &format!(
            "ws://{}/ws/mcp/events?session_id={sid}&token={watch_token}",
            gw.addr
        ),
        None,
        Some("construct.v1"),
    )
    .await;
    assert_eq!(chosen.as_deref(), Some("construct.v1"));
    let deadline = tokio::time::Instant::now() + WAIT;
    while gw
        .get("/api/sessions")
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["session_id"] == sid.as_str())
        .is_none_or(|s| s["watchers"] != 2)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "watchers never subscribed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // the caller: MCP over /ws in that session
    let (mut ws, _) = connect(
        &format!("ws://{}/ws?session_id={sid}", gw.addr),
        Some(&gw.token),
        None,
    )
    .await;
    ws.send(Message::text(
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
            "name": "fx__slow", "arguments": {"steps": 10, "step_ms": 10},
            "_meta": {"progressToken": 7}}})
        .to_string(),
    ))
    .await
    .unwrap();
    let mut notes = Vec::new();
    let result = loop {
        let m = text(&mut ws).await;
        if m["method"] == "notifications/progress" {
            notes.push(m["params"].clone());
        } else if m["id"] == 1 {
            break m;
        }
    };
    assert_eq!(
        result["result"]["content"][0]["text"], "done after 10 steps",
        "{result}"
    );
    assert_eq!(notes.len(), 10, "{notes:?}");
    for (i, n) in notes.iter().enumerate() {
        assert_eq!(n["progressToken"], 7, "the caller's own token: {n}");
        assert_eq!(n["progress"], (i + 1) as f64, "{n}");
    }

    let mut from_sse = Vec::new();
    let mut from_ws = Vec::new();
    for _ in 0..12 {
        from_sse.push(sse.next().await.1);
        from_ws.push(text(&mut watcher).await);
    }
    assert_eq!(from_sse, from_ws, "both watchers see the same frames");
    assert_eq!(from_sse[0]["event"], "call_started", "{:?}", from_sse[0]);
    assert_eq!(from_sse[0]["token"], 7);
    assert_eq!(from_sse[0]["tool"], "fx__slow");
    for (i, f) in from_sse[1..11].iter().enumerate() {
        let step = i + 1;
        assert_eq!(f["token"], 7, "{f}");
        assert_eq!(f["progress"], step as f64, "in order: {f}");
        assert_eq!(f["total"], 10.0);
        assert_eq!(f["message"], format!("step {step} of 10"));
        assert_eq!(f["tool"], "fx__slow");
        assert!(
            chrono::DateTime::parse_from_rfc3339(f["timestamp"].as_str().unwrap()).is_ok(),
            "{f}"
        );
        assert!(f.get("event").is_none(), "progress frames are bare: {f}");
    }
    assert_eq!(from_sse[11]["event"], "call_finished");
    assert_eq!(from_sse[11]["outcome"], "ok");

    // ending the session ends both streams
    let r = reqwest::Client::new()
        .delete(gw.url(&format!("/session/{sid}")))
        .bearer_auth(&gw.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        sse.next_within(WAIT).await.is_none(),
        "SSE ends with the session"
    );
    let end = tokio::time::timeout(WAIT, watcher.next()).await.unwrap();
    assert!(
        matches!(end, Some(Ok(Message::Close(Some(ref f)))) if u16::from(f.code) == 1000),
        "{end:?}"
    );
}

#[tokio::test]
async fn only_the_owner_or_the_session_token_may_watch() {
    let gw = gateway().await;
    let (sid, watch_token) = create_session(&gw, &gw.token).await;
    let other = gw.pair_client("someone-else", None).await;
    let events = |token: Option<&str>| {
        let mut r = reqwest::Client::new().get(gw.url(&format!("/session/{sid}/events")));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r
    };
    assert_eq!(events(None).send().await.unwrap().status(), 401);
    assert_eq!(
        events(Some("sbw_wrong")).send().await.unwrap().status(),
        401
    );
    assert_eq!(events(Some(&other)).send().await.unwrap().status(), 404);
    assert_eq!(events(Some(&gw.token)).send().await.unwrap().status(), 200);
    assert_eq!(
        events(Some(&watch_token)).send().await.unwrap().status(),
        200
    );
    // the session token opens only watching, nothing else
    let r = reqwest::Client::new()
        .get(gw.url("/api/servers"))
        .bearer_auth(&watch_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // nor may another client run MCP in it, or delete it
    let url = format!("ws://{}/ws?session_id={sid}", gw.addr);
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {other}").parse().unwrap());
    assert_eq!(
        status_of(tokio_tungstenite::connect_async(req).await.unwrap_err()),
        404
    );
    let r = reqwest::Client::new()
        .delete(gw.url(&format!("/session/{sid}")))
        .bearer_auth(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // WS watcher: missing session id 400, unknown 404, no token 401
    let ws = |q: &str| format!("ws://{}/ws/mcp/events{q}", gw.addr);
    let refused = |url: String| async move {
        status_of(tokio_tungstenite::connect_async(url).await.unwrap_err())
    };
    assert_eq!(refused(ws(&format!("?token={watch_token}"))).await, 400);
    assert_eq!(
        refused(ws(&format!("?session_id=nope&token={}", gw.token))).await,
        404
    );
    assert_eq!(refused(ws(&format!("?session_id={sid}"))).await, 401);
}

/// Waits (bounded) until `sid` has `n` watchers subscribed.
async fn wait_watchers(gw: &TestGateway, sid: &str, n: u64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let body: Value = gw.json("/api/sessions").await;
        let watchers = body["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["session_id"] == sid)
            .map(|s| s["watchers"].clone());
        if watchers == Some(json!(n)) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "watchers of {sid} never became {n}: {watchers:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs `calls` concurrent `fx__slow` calls of `steps` steps in session `sid` over `/ws`,
/// and waits (bounded) for all their results.
async fn slow_calls_in(gw: &TestGateway, sid: &str, calls: u64, steps: u64) {
    let (mut ws, _) = connect(
        &format!("ws://{}/ws?session_id={sid}", gw.addr),
        Some(&gw.token),
        None,
    )
    .await;
    for id in 1..=calls {
        ws.send(Message::text(
            json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {
                "name": "fx__slow", "arguments": {"steps": steps, "step_ms": 0},
                "_meta": {"progressToken": id}}})
            .to_string(),
        ))
        .await
        .unwrap();
    }
    let mut done = 0;
    while done < calls {
        let m = text(&mut ws).await;
        if m.get("id").is_some_and(|id| !id.is_null()) {
            assert!(m["result"].is_object(), "{m}");
            done += 1;
        }
    }
}

#[tokio::test]
async fn the_ws_watcher_takes_the_seeds_mcp_token_query() {
    let gw = gateway().await;
    let (sid, watch_token) = create_session(&gw, &gw.token).await;
    let other = gw.pair_client("code-tab", None).await;
    let url = |q: String| format!("ws://{}/ws/mcp/events?session_id={sid}{q}", gw.addr);
    // as seed 001's clients send it: the session's token as `mcp_token`, alone or next to a
    // paired client's `token` (which does not own this session)
    let (mut alone, _) = connect(&url(format!("&mcp_token={watch_token}")), None, None).await;
    let (mut beside, _) = connect(
        &url(format!("&token={other}&mcp_token={watch_token}")),
        None,
        None,
    )
    .await;
    wait_watchers(&gw, &sid, 2).await;
    slow_calls_in(&gw, &sid, 1, 2).await;
    for watcher in [&mut alone, &mut beside] {
        assert_eq!(text(watcher).await["event"], "call_started");
        assert_eq!(text(watcher).await["progress"], 1.0);
        assert_eq!(text(watcher).await["progress"], 2.0);
        assert_eq!(text(watcher).await["event"], "call_finished");
    }
    // a wrong mcp_token opens nothing
    let refused = |u: String| async move {
        status_of(tokio_tungstenite::connect_async(u).await.unwrap_err())
    };
    assert_eq!(refused(url("&mcp_token=sbw_wrong".into())).await, 401);
    assert_eq!(
        refused(url(format!("&token={other}&mcp_token=sbw_wrong"))).await,
        404
    );
}

#[tokio::test]
async fn the_ws_watcher_takes_the_bearer_subprotocol_and_echoes_only_construct_v1() {
    let gw = gateway().await;
    let (sid, watch_token) = create_session(&gw, &gw.token).await;
    let url = format!("ws://{}/ws/mcp/events?session_id={sid}", gw.addr);
    // a browser: no headers, the token as a subprotocol next to the one we echo
    let (mut by_session_token, chosen) = connect(
        &url,
        None,
        Some(&format!("bearer.{watch_token}, construct.v1")),
    )
    .await;
    assert_eq!(chosen.as_deref(), Some("construct.v1"), "never the token");
    let (mut by_owner, chosen) = connect(
        &url,
        None,
        Some(&format!("construct.v1, bearer.{}", gw.token)),
    )
    .await;
    assert_eq!(chosen.as_deref(), Some("construct.v1"));
    wait_watchers(&gw, &sid, 2).await;
    slow_calls_in(&gw, &sid, 1, 1).await;
    for watcher in [&mut by_session_token, &mut by_owner] {
        assert_eq!(text(watcher).await["event"], "call_started");
        assert_eq!(text(watcher).await["progress"], 1.0);
        assert_eq!(text(watcher).await["event"], "call_finished");
    }
    let mut req = url.as_str().into_client_request().unwrap();
    req.headers_mut().insert(
        "sec-websocket-protocol",
        "bearer.sbw_wrong, construct.v1".parse().unwrap(),
    );
    assert_eq!(
        status_of(tokio_tungstenite::connect_async(req).await.unwrap_err()),
        401
    );
}

/// The most a TCP send buffer may grow to (`tcp_wmem`'s maximum; 4 MiB by default on Linux).
fn max_send_buffer() -> u64 {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|s| s.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or(4 << 20)
}

/// A watcher that stops reading. Its own TCP receive buffer is kept small, but the server's
/// send buffer may grow to [`max_send_buffer`], so the session produces more frames than
/// that holds at 100 bytes a frame (they are longer) plus twice the ring (1,024).
#[tokio::test]
async fn a_watcher_that_falls_behind_gets_lagged_frames_that_count_what_it_missed() {
    const STEPS: u64 = 1000;
    let calls = (max_send_buffer() / 100 + 2048).div_ceil(STEPS + 2).max(40);
    let gw = gateway().await;
    let (sid, watch_token) = create_session(&gw, &gw.token).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = tokio::time::timeout(WAIT, socket.connect(gw.addr))
        .await
        .unwrap()
        .unwrap();
    let url = format!(
        "ws://{}/ws/mcp/events?session_id={sid}&mcp_token={watch_token}",
        gw.addr
    );
    let (mut watcher, _) = tokio::time::timeout(WAIT, tokio_tungstenite::client_async(url, stream))
        .await
        .unwrap()
        .expect("upgrade");
    wait_watchers(&gw, &sid, 1).await;

    // the calls never wait for the watcher that is not reading
    let bound = Duration::from_secs(30 + calls / 10);
    tokio::time::timeout(bound, slow_calls_in(&gw, &sid, calls, STEPS))
        .await
        .expect("the calls finish while their watcher reads nothing");

    let total = calls * (STEPS + 2); // call_started + each step + call_finished
    let (mut delivered, mut missed, mut lagged, mut finished) = (0u64, 0u64, 0u64, 0u64);
    while delivered + missed < total {
        let frame = match tokio::time::timeout(WAIT, watcher.next())
            .await
            .unwrap_or_else(|_| panic!("{delivered} delivered + {missed} missed of {total}"))
        {
            Some(Ok(Message::Text(t))) => serde_json::from_str::<Value>(&t).unwrap(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        };
        if frame["event"] == "lagged" {
            let n = frame["missed"].as_u64().expect("missed count");
            assert!(n > 0, "{frame}");
            assert!(
                chrono::DateTime::parse_from_rfc3339(frame["timestamp"].as_str().unwrap()).is_ok()
            );
            missed += n;
            lagged += 1;
        } else {
            delivered += 1;
            if frame["event"] == "call_finished" {
                finished += 1;
            }
        }
    }
    assert_eq!(
        delivered + missed,
        total,
        "every frame delivered or counted"
    );
    assert!(
        lagged > 0,
        "the watcher fell behind: {delivered} delivered of {total}"
    );
    assert!(
        finished > 0,
        "the newest frames are kept, the oldest dropped"
    );
    // and it is still a live watcher
    slow_calls_in(&gw, &sid, 1, 1).await;
    let mut rest = Vec::new();
    for _ in 0..3 {
        rest.push(
            match tokio::time::timeout(WAIT, watcher.next()).await.unwrap() {
                Some(Ok(Message::Text(t))) => serde_json::from_str::<Value>(&t).unwrap(),
                other => panic!("{other:?}"),
            },
        );
    }
    assert_eq!(rest[0]["event"], "call_started", "{rest:?}");
    assert_eq!(rest[2]["event"], "call_finished", "{rest:?}");
}

#[tokio::test]
async fn the_legacy_query_token_never_reaches_a_log_line() {
    use std::io::Read;
    use std::process::{Command, Stdio};
    const BIN: &str = SWITCHBOARD_BIN;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[auth]\ntoken_store = \"memory\"\n").unwrap();
    let data = dir.path().join("data");
    // the real binary, logging everything
    let mut child = ChildGuard::spawn(
        Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&config)
            .arg("--data-dir")
            .arg(&data)
            .env("SWITCHBOARD_LOG", "trace")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let mut stderr = child.stderr.take().unwrap();
    let logs = std::thread::spawn(move || {
        let mut all = String::new();
        let _ = stderr.read_to_string(&mut all);
        all
    });
    let base = listening_base(&mut child).await;
    let addr = base.strip_prefix("http://").unwrap().to_owned();
    let token = pair_with_cli(&base, &data, "logs").await;
    let created: Value = reqwest::Client::new()
        .post(format!("{base}/session"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sid = created["session_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{created}"));
    let watch_token = created["token"].as_str().unwrap().to_owned();

    let (mut watcher, _) = connect(
        &format!("ws://{addr}/ws/mcp/events?session_id={sid}&token={watch_token}"),
        None,
        None,
    )
    .await;
    let paired_in_query = format!("ws://{addr}/ws/mcp/events?session_id={sid}&token={token}");
    let (mut by_client_token, _) = connect(&paired_in_query, None, None).await;
    let seed_style =
        format!("ws://{addr}/ws/mcp/events?token={token}&session_id={sid}&mcp_token={watch_token}");
    let (mut by_mcp_token, _) = connect(&seed_style, None, None).await;
    let bad = format!("ws://{addr}/ws/mcp/events?token=sbw_not_a_real_token_123&session_id={sid}");
    assert_eq!(
        status_of(tokio_tungstenite::connect_async(bad).await.unwrap_err()),
        401
    );
    watcher.close(None).await.unwrap();
    by_client_token.close(None).await.unwrap();
    by_mcp_token.close(None).await.unwrap();
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = std::time::Instant::now() + WAIT;
    while child.try_wait().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "switchboard did not stop"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let text = logs.join().unwrap();
    assert!(
        text.contains("/ws/mcp/events?session_id=") && text.contains("TRACE"),
        "the requests were logged at trace level:\n{text}"
    );
    assert!(text.contains("token=REDACTED"), "{text}");
    assert!(text.contains("mcp_token=REDACTED"), "{text}");
    for secret in [
        watch_token.as_str(),
        token.as_str(),
        "sbw_not_a_real_token_123",
    ] {
        assert!(
            !text.contains(secret),
            "a query token leaked into the logs: {secret}"
        );
    }
}

#[tokio::test]
async fn session_events_for_the_shell_and_the_caller_in_call_started() {
    let gw = gateway().await;
    let mut events = gw.events().await;

    // a WebSocket session: opened, then closed when the socket goes
    let (mut ws, _) = connect(&format!("ws://{}/ws", gw.addr), Some(&gw.token), None).await;
    let opened = events.next_named("session_opened").await;
    assert_eq!(opened["transport"], "ws");
    assert_eq!(opened["client"], "tests");
    let ws_sid = opened["session_id"].as_str().unwrap().to_owned();
    ws.send(Message::text(
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
               "params": {"name": "fx__echo", "arguments": {"text": "hi"}}})
        .to_string(),
    ))
    .await
    .unwrap();
    assert_eq!(text(&mut ws).await["result"]["content"][0]["text"], "hi");
    let started = events.next_named("call_started").await;
    assert_eq!(started["client"], "tests", "{started}");
    assert_eq!(started["session_id"], ws_sid.as_str());
    ws.close(None).await.unwrap();
    let closed = events.next_named("session_closed").await;
    assert_eq!(
        (
            closed["session_id"].as_str(),
            closed["transport"].as_str(),
            closed["reason"].as_str()
        ),
        (Some(ws_sid.as_str()), Some("ws"), Some("client closed")),
        "{closed}"
    );

    // an HTTP session: opened by initialize, closed by DELETE
    let mcp = McpHttp::connect(&gw).await;
    let http_sid = mcp.session.clone().unwrap();
    let opened = events.next_named("session_opened").await;
    assert_eq!(
        (opened["session_id"].as_str(), opened["transport"].as_str()),
        (Some(http_sid.as_str()), Some("http"))
    );
    let r = reqwest::Client::new()
        .delete(gw.url("/mcp"))
        .bearer_auth(&gw.token)
        .header("mcp-session-id", &http_sid)
        .header("mcp-protocol-version", "2025-11-25")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let closed = events.next_named("session_closed").await;
    assert_eq!(
        (closed["session_id"].as_str(), closed["reason"].as_str()),
        (Some(http_sid.as_str()), Some("deleted"))
    );

    // unpairing closes a client's sessions, with that reason
    let victim = gw.pair_client("leaving", None).await;
    let (_ws, _) = connect(&format!("ws://{}/ws", gw.addr), Some(&victim), None).await;
    let opened = events.next_named("session_opened").await;
    assert_eq!(opened["client"], "leaving");
    reqwest::Client::new()
        .delete(gw.url("/api/clients/leaving"))
        .bearer_auth(&gw.token)
        .send()
        .await
        .unwrap();
    let closed = events.next_named("session_closed").await;
    assert_eq!(
        (closed["client"].as_str(), closed["reason"].as_str()),
        (Some("leaving"), Some("client unpaired"))
    );
}
