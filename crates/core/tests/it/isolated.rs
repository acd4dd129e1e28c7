//! `sessions = "isolated"`: each client session gets its own instance of the server (its own
//! fixture process here), started on its first request, stopped when the session ends, at
//! most `max_instances` at once; every request such an instance sends reaches its own
//! session, with a call in flight or not. Also what holds for every server: a client's
//! `notifications/roots/list_changed` reaches the servers concerned, a server cancelling its
//! own request is passed on, and a session's last subscriptions are given up when it ends.

use std::time::Duration;

use serde_json::{Value, json};
use switchboard_core::config::SessionMode;

use crate::mcp::delete_session;
use crate::support::*;

/// A gateway with `iso`, an isolated fixture (at most `max` instances) that asks for roots as
/// soon as it is initialized, and `fx`, a shared one.
async fn gateway(max: usize) -> TestGateway {
    let gw = TestGateway::with(|c| {
        let mut iso = fixture_server("iso", &["--roots-on-start"]);
        iso.sessions = SessionMode::Isolated;
        iso.max_instances = Some(max);
        c.servers = vec![iso, fixture_server("fx", &[])];
    })
    .await;
    gw.wait_server("iso", "running").await;
    gw.wait_server("fx", "running").await;
    gw
}

/// A `/mcp` session whose client declared `capabilities`.
async fn session_with(gw: &TestGateway, capabilities: Value) -> McpHttp {
    McpHttp::initialized(gw, capabilities, "isolated").await
}

/// The session's standalone GET stream, where requests outside its calls go.
async fn listen(gw: &TestGateway, mcp: &McpHttp) -> SseClient {
    SseClient::open(
        mcp.client
            .get(&mcp.url)
            .bearer_auth(&gw.token)
            .header("accept", "text/event-stream")
            .header("mcp-session-id", mcp.session.as_deref().unwrap())
            .header("mcp-protocol-version", "2025-11-25"),
    )
    .await
}

/// The next message on `stream` with `method`, skipping others; `None` if none within `wait`.
async fn next_method(stream: &mut SseClient, method: &str, wait: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let (_, m) = stream.next_within(left).await?;
        if m["method"] == method {
            return Some(m);
        }
    }
}

/// Answers the server's request `asked` with `result`.
async fn answer(mcp: &McpHttp, asked: &Value, result: Value) {
    let response = json!({"jsonrpc": "2.0", "id": asked["id"], "result": result});
    let posted = mcp.post(response.to_string()).send().await.unwrap();
    assert!(posted.status().is_success(), "{}", posted.status());
}

/// What `server__roots` says: the instance's pid, the roots it was last told, how many
/// roots list changes it heard.
async fn roots_of(mcp: &mut McpHttp, server: &str) -> Value {
    let reply = mcp.call(&format!("{server}__roots"), json!({})).await;
    serde_json::from_str(&reply.text()).unwrap_or_else(|_| panic!("{:?}", reply.messages))
}

/// Polls `server__roots` (bounded) until `pred` holds.
async fn wait_roots(mcp: &mut McpHttp, server: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = roots_of(mcp, server).await;
        if pred(&got) {
            return got;
        }
        assert!(tokio::time::Instant::now() < deadline, "never: {got}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn roots(uri: &str) -> Value {
    json!({"roots": [{"uri": uri, "name": uri}]})
}

/// Waits (bounded) until process `pid` is gone (or a zombie about to be reaped).
async fn wait_gone(pid: u32) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while process_state(pid).is_some_and(|s| s != 'Z') {
        assert!(
            tokio::time::Instant::now() < deadline,
            "process {pid} still running"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Waits (bounded) until `/api/servers` shows `n` instances of `server`.
async fn wait_instances(gw: &TestGateway, server: &str, n: u64) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let s = gw.server(server).await;
        if s["instances"] == n {
            return s;
        }
        assert!(tokio::time::Instant::now() < deadline, "{s}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn each_session_gets_its_own_instance_and_roots_asked_before_any_call_reach_it() {
    let gw = gateway(16).await;
    let template = gw.server("iso").await;
    assert_eq!(template["sessions"], "isolated");
    assert_eq!(template["instances"], 0, "lists start no instance");
    let template_pid = template["pid"].as_u64().unwrap();

    let mut a = session_with(&gw, json!({"roots": {"listChanged": true}})).await;
    let mut b = session_with(&gw, json!({"roots": {"listChanged": true}})).await;
    let names = a.tool_names().await;
    assert!(names.contains(&"iso__roots".to_owned()), "{names:?}");
    assert_eq!(gw.server("iso").await["instances"], 0, "a list starts none");
    let mut a_stream = listen(&gw, &a).await;
    let mut b_stream = listen(&gw, &b).await;

    // the first call starts the session's instance, which asks for roots as it comes up:
    // no call is in flight on it then, yet the request reaches its own session (and only it)
    let first = roots_of(&mut a, "iso").await;
    let a_pid = first["pid"].as_u64().unwrap();
    let asked = next_method(&mut a_stream, "roots/list", WAIT)
        .await
        .expect("roots/list on a's stream");
    answer(&a, &asked, roots("file:///a")).await;
    assert!(
        next_method(&mut b_stream, "roots/list", Duration::from_millis(300))
            .await
            .is_none(),
        "b was asked a's question"
    );
    let _ = roots_of(&mut b, "iso").await;
    let asked = next_method(&mut b_stream, "roots/list", WAIT)
        .await
        .expect("roots/list on b's stream");
    answer(&b, &asked, roots("file:///b")).await;

    let got_a = wait_roots(&mut a, "iso", |v| !v["roots"].is_null()).await;
    let got_b = wait_roots(&mut b, "iso", |v| !v["roots"].is_null()).await;
    assert_eq!(got_a["roots"]["result"], roots("file:///a"), "{got_a}");
    assert_eq!(got_b["roots"]["result"], roots("file:///b"), "{got_b}");
    let b_pid = got_b["pid"].as_u64().unwrap();
    assert_eq!(
        got_a["pid"].as_u64(),
        Some(a_pid),
        "one instance per session"
    );
    assert_ne!(a_pid, b_pid, "each session has its own process");
    assert_ne!(a_pid, template_pid);
    assert_ne!(b_pid, template_pid);
    assert_eq!(gw.server("iso").await["instances"], 2);

    // a's roots change: its own instance hears it (and asks again), b's does not
    assert_eq!(
        a.notify("notifications/roots/list_changed", json!({}))
            .await,
        202
    );
    let asked = next_method(&mut a_stream, "roots/list", WAIT)
        .await
        .expect("asked again after the change");
    answer(&a, &asked, roots("file:///a2")).await;
    let got_a = wait_roots(&mut a, "iso", |v| {
        v["roots"]["result"] == roots("file:///a2")
    })
    .await;
    assert_eq!(got_a["list_changed"], 1, "{got_a}");
    assert_eq!(roots_of(&mut b, "iso").await["list_changed"], 0);

    // the session's end stops its instance, and only its
    let deleted = delete_session(&gw, &a).await;
    assert!(deleted.status().is_success(), "{}", deleted.status());
    wait_gone(a_pid as u32).await;
    wait_instances(&gw, "iso", 1).await;
    let held = gw.json("/api/sessions").await["held"].clone();
    assert_eq!(
        held["isolated_instances"], 1,
        "held counts the one left: {held}"
    );
    assert_eq!(roots_of(&mut b, "iso").await["pid"].as_u64(), Some(b_pid));
    assert_eq!(
        gw.server("iso").await["pid"].as_u64(),
        Some(template_pid),
        "the template runs on"
    );
    let deleted = delete_session(&gw, &b).await;
    assert!(deleted.status().is_success(), "{}", deleted.status());
    wait_gone(b_pid as u32).await;
    let held = gw.json("/api/sessions").await["held"].clone();
    assert_eq!(held["isolated_instances"], 0, "{held}");
}

/// Calls `server__ask` (detached: the tool answers at once) for `roots/list` on its own stream:
/// the request the server sent during the call, and the call's result after it, unanswered.
async fn ask_detached(mcp: &mut McpHttp, server: &str) -> (Value, Vec<Value>) {
    let id = mcp.next_id;
    mcp.next_id += 1;
    let call = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": format!("{server}__ask"),
                   "arguments": {"method": "roots/list", "detach": true}}});
    let mut stream = SseClient::open(mcp.post(call.to_string())).await;
    let (mut asked, mut rest) = (None, Vec::new());
    loop {
        let (_, m) = stream.next().await;
        if m["method"] == "roots/list" {
            asked = Some(m);
        } else if m["id"] == id {
            assert_eq!(m["result"]["content"][0]["text"], "asked", "{m}");
            break;
        } else {
            rest.push(m);
        }
    }
    (asked.expect("the request came before the result"), rest)
}

/// The responses `server` got to its `ask`s (`server__answers`).
async fn answers_of(mcp: &mut McpHttp, server: &str) -> Vec<Value> {
    let reply = mcp.call(&format!("{server}__answers"), json!({})).await;
    serde_json::from_str(&reply.text()).unwrap_or_else(|_| panic!("{:?}", reply.messages))
}

#[tokio::test]
async fn an_isolated_instances_request_outlives_the_call_it_came_during() {
    let gw = gateway(4).await;
    let mut a = session_with(&gw, json!({"roots": {"listChanged": true}})).await;
    let mut a_stream = listen(&gw, &a).await;
    // the instance's own start-up question, answered
    let _ = roots_of(&mut a, "iso").await;
    let asked = next_method(&mut a_stream, "roots/list", WAIT)
        .await
        .expect("roots/list on a's stream");
    answer(&a, &asked, roots("file:///a")).await;
    wait_roots(&mut a, "iso", |v| !v["roots"].is_null()).await;

    // a request sent during a call that ends first (a filesystem server asking for roots
    // after `roots/list_changed` while the client's next call runs) is the session's: not
    // called off when the call ends, its late answer reaches the server
    let (asked, rest) = ask_detached(&mut a, "iso").await;
    assert!(
        !rest
            .iter()
            .any(|m| m["method"] == "notifications/cancelled"),
        "called off at the call's end: {rest:?}"
    );
    answer(&a, &asked, roots("file:///late")).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = answers_of(&mut a, "iso").await;
        if got.iter().any(|r| r["result"] == roots("file:///late")) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never answered: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // a shared server's is the call's: called off when it ends (it cannot say whose it is)
    let (asked, _) = ask_detached(&mut a, "fx").await;
    answer(&a, &asked, roots("file:///shared")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = answers_of(&mut a, "fx").await;
    assert!(
        !got.iter().any(|r| r["result"] == roots("file:///shared")),
        "{got:?}"
    );
    assert!(
        got.iter().any(|r| r["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("has ended"))),
        "{got:?}"
    );
}

#[tokio::test]
async fn past_max_instances_a_session_gets_a_clear_error_until_another_ends() {
    let gw = gateway(1).await;
    let mut a = session_with(&gw, json!({})).await;
    let mut b = session_with(&gw, json!({})).await;
    let a_pid = a.call("iso__pid", json!({})).await.text();
    let refused = b.call("iso__pid", json!({})).await;
    assert_eq!(refused.result()["isError"], true, "{:?}", refused.messages);
    let text = refused.text();
    assert!(
        text.contains("server 'iso' has 1 instances running already")
            && text.contains("max_instances = 1"),
        "{text}"
    );
    assert!(delete_session(&gw, &a).await.status().is_success());
    wait_gone(a_pid.parse().unwrap()).await;
    wait_instances(&gw, "iso", 0).await;
    let b_pid = b.call("iso__pid", json!({})).await.text();
    assert!(b_pid.parse::<u32>().is_ok(), "{b_pid}");
    assert_ne!(a_pid, b_pid);
}

#[tokio::test]
async fn a_request_of_no_session_is_refused_by_an_isolated_server() {
    let gw = gateway(4).await;
    // a 2026-07-28 request is stateless: no session to give an instance to
    let meta = json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                      "io.modelcontextprotocol/clientCapabilities": {},
                      "io.modelcontextprotocol/clientInfo": {"name": "it", "version": "1"}});
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "iso__pid", "arguments": {}, "_meta": meta}});
    let reply = reqwest::Client::new()
        .post(gw.url("/mcp"))
        .bearer_auth(&gw.token)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "iso__pid")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(reply.contains("belongs to no session"), "{reply}");
    assert_eq!(gw.server("iso").await["instances"], 0);
}

#[tokio::test]
async fn a_sockets_instance_stops_when_the_socket_closes() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let gw = gateway(4).await;
    let (mut ws, _) = crate::ws::open(&gw, Some(&gw.token), None).await.unwrap();
    let init = crate::ws::rpc(
        &mut ws,
        1,
        "initialize",
        json!({"protocolVersion": "2025-11-25", "capabilities": {"roots": {}},
               "clientInfo": {"name": "isolated-ws", "version": "1"}}),
    )
    .await;
    assert_eq!(init["result"]["serverInfo"]["name"], "switchboard");
    ws.send(Message::text(
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string(),
    ))
    .await
    .unwrap();
    let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "iso__pid", "arguments": {}}});
    ws.send(Message::text(call.to_string())).await.unwrap();
    // the instance asks this socket for roots as it starts; answered, it has them
    let (mut pid, mut asked) = (None, false);
    while pid.is_none() || !asked {
        let m = crate::ws::recv(&mut ws).await;
        if m["method"] == "roots/list" {
            ws.send(Message::text(
                json!({"jsonrpc": "2.0", "id": m["id"], "result": roots("file:///ws")}).to_string(),
            ))
            .await
            .unwrap();
            asked = true;
        } else if m["id"] == 2 {
            pid = m["result"]["content"][0]["text"]
                .as_str()
                .and_then(|t| t.parse::<u32>().ok());
            assert!(pid.is_some(), "{m}");
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut id = 3;
    loop {
        let m = crate::ws::rpc(
            &mut ws,
            id,
            "tools/call",
            json!({"name": "iso__roots", "arguments": {}}),
        )
        .await;
        let got: Value =
            serde_json::from_str(m["result"]["content"][0]["text"].as_str().unwrap()).unwrap();
        if got["roots"]["result"] == roots("file:///ws") {
            assert_eq!(got["pid"].as_u64(), pid.map(u64::from));
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{got}");
        id += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(gw.server("iso").await["instances"], 1);
    ws.close(None).await.unwrap();
    wait_gone(pid.unwrap()).await;
    wait_instances(&gw, "iso", 0).await;
}

#[tokio::test]
async fn a_shared_server_that_asked_a_session_for_roots_hears_when_they_change() {
    let gw = gateway(4).await;
    let mut asked = session_with(&gw, json!({"roots": {"listChanged": true}})).await;
    let mut other = session_with(&gw, json!({"roots": {"listChanged": true}})).await;
    // `fx` asks `asked` for its roots during a call
    let id = asked.next_id;
    asked.next_id += 1;
    let call = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": "fx__ask", "arguments": {"method": "roots/list"}}});
    let mut stream = SseClient::open(asked.post(call.to_string())).await;
    let request = loop {
        let (_, m) = stream.next().await;
        if m["method"] == "roots/list" {
            break m;
        }
    };
    answer(&asked, &request, roots("file:///x")).await;
    while stream.next().await.1["id"] != id {}

    // the other session's change does not concern `fx`; this one's does
    assert_eq!(
        other
            .notify("notifications/roots/list_changed", json!({}))
            .await,
        202
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(roots_of(&mut other, "fx").await["list_changed"], 0);
    assert_eq!(
        asked
            .notify("notifications/roots/list_changed", json!({}))
            .await,
        202
    );
    wait_roots(&mut asked, "fx", |v| v["list_changed"] == 1).await;
}

#[tokio::test]
async fn a_server_cancelling_its_request_is_passed_on_under_the_clients_id() {
    let gw = gateway(4).await;
    let mut mcp = session_with(&gw, json!({"elicitation": {}})).await;
    let id = mcp.next_id;
    mcp.next_id += 1;
    let call = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": "fx__ask", "arguments": {"method": "elicitation/create",
            "params": {"message": "Name?", "requestedSchema": {"type": "object",
                       "properties": {"name": {"type": "string"}}}},
            "cancel_after_ms": 300}}});
    // rmcp sends a notification that names no request of the client's on the standalone
    // stream: the client hears it there
    let mut standalone = listen(&gw, &mcp).await;
    let mut stream = SseClient::open(mcp.post(call.to_string())).await;
    let asked = loop {
        let (_, m) = stream.next().await;
        assert!(m.get("result").is_none(), "answered without asking: {m}");
        if m["method"] == "elicitation/create" {
            break m;
        }
    };
    // not answered: the server gives up after 300 ms, and the client hears of it
    let mut cancelled = None;
    let end = loop {
        let (_, m) = stream.next().await;
        if m["method"] == "notifications/cancelled" {
            cancelled = Some(m);
        } else if m["id"] == id {
            break m;
        }
    };
    let cancelled = match cancelled {
        Some(c) => c,
        None => next_method(&mut standalone, "notifications/cancelled", WAIT)
            .await
            .expect("the client is told"),
    };
    assert_eq!(cancelled["params"]["requestId"], asked["id"], "{cancelled}");
    assert_eq!(end["result"]["content"][0]["text"], "cancelled", "{end}");
    // an answer that comes after all is dropped, and nothing breaks
    answer(&mcp, &asked, json!({"action": "decline"})).await;
    assert_eq!(
        mcp.call("fx__echo", json!({"text": "hi"})).await.text(),
        "hi"
    );
}

#[tokio::test]
async fn over_ws_a_server_cancelling_its_request_is_passed_on() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let gw = gateway(4).await;
    let (mut ws, _) = crate::ws::open(&gw, Some(&gw.token), None).await.unwrap();
    crate::ws::rpc(
        &mut ws,
        1,
        "initialize",
        json!({"protocolVersion": "2025-11-25", "capabilities": {"sampling": {}},
               "clientInfo": {"name": "isolated-ws", "version": "1"}}),
    )
    .await;
    ws.send(Message::text(
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string(),
    ))
    .await
    .unwrap();
    let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "fx__ask", "arguments": {"method": "sampling/createMessage",
            "params": {"messages": [], "maxTokens": 1}, "cancel_after_ms": 300}}});
    ws.send(Message::text(call.to_string())).await.unwrap();
    let mut asked = None;
    let mut cancelled = None;
    let end = loop {
        let m = crate::ws::recv(&mut ws).await;
        if m["method"] == "sampling/createMessage" {
            asked = Some(m["id"].clone());
        } else if m["method"] == "notifications/cancelled" {
            cancelled = Some(m["params"]["requestId"].clone());
        } else if m["id"] == 2 {
            break m;
        }
    };
    assert_eq!(end["result"]["content"][0]["text"], "cancelled", "{end}");
    assert!(asked.is_some());
    assert_eq!(cancelled, asked, "the client is told, under the id it saw");
}

#[tokio::test]
async fn a_sessions_last_subscription_is_given_up_when_it_ends() {
    let gw = gateway(4).await;
    let mut a = McpHttp::connect(&gw).await;
    let mut b = McpHttp::connect(&gw).await;
    // the owner of the URI is learned from a listing
    let listed = a.request("resources/list", json!({})).await;
    assert!(
        listed.result()["resources"]
            .to_string()
            .contains("fixture://readme")
    );
    for s in [&mut a, &mut b] {
        let r = s
            .request("resources/subscribe", json!({"uri": "fixture://readme"}))
            .await;
        r.result();
    }
    let unsubscribed = |tail: &Value| {
        tail.to_string()
            .matches("fixture: resources/unsubscribe fixture://readme")
            .count()
    };
    // a ends: b still holds it, the server is not told
    assert!(delete_session(&gw, &a).await.status().is_success());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(unsubscribed(&gw.server("fx").await["stderr_tail"]), 0);
    // b ends: nobody holds it, the server is told once
    assert!(delete_session(&gw, &b).await.status().is_success());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let tail = gw.server("fx").await["stderr_tail"].clone();
        if unsubscribed(&tail) == 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{tail}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
