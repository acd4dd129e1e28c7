//! Per-server endpoints: `/mcp/<server>` (its sessions, the fast path, 2026-07-28
//! stateless requests) and `/ws/<server>` show one server under its own tool and prompt names,
//! with the same tokens, roles (which still name `<server>__<tool>`), telemetry, progress and
//! server requests as `/mcp`. A session serves only the endpoint it was opened at; an unknown
//! server or a deeper path is 404 saying what exists.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::support::*;
use crate::ws::{Ws, recv, rpc};

/// fx and fy, each with resources of its own besides the shared `fixture://readme`; roles
/// that grant everything, fx's echo and all of fy, or nothing.
async fn gateway() -> TestGateway {
    let gw = TestGateway::with(|c| {
        c.servers = vec![
            fixture_server("fx", &["--resource-host", "fx"]),
            fixture_server("fy", &["--resource-host", "fy"]),
        ];
        c.roles = [
            ("default", vec!["*"]),
            ("reader", vec!["fx__echo", "fy__*"]),
            ("locked", vec![]),
        ]
        .into_iter()
        .map(|(r, p)| (r.to_owned(), p.into_iter().map(str::to_owned).collect()))
        .collect();
    })
    .await;
    gw.wait_server("fx", "running").await;
    gw.wait_server("fy", "running").await;
    gw
}

/// A client of `/mcp/<server>` with `token` (not yet initialized).
fn at(gw: &TestGateway, server: &str, token: &str) -> McpHttp {
    McpHttp::to(gw.url(&format!("/mcp/{server}")), token.to_owned())
}

fn names(list: &Value, field: &str, key: &str) -> Vec<String> {
    let mut v: Vec<String> = list[field]
        .as_array()
        .unwrap_or_else(|| panic!("no {field} in {list}"))
        .iter()
        .map(|t| t[key].as_str().unwrap().to_owned())
        .collect();
    v.sort();
    v
}

fn error_of(reply: &Reply) -> (i64, String) {
    let e = &reply.response()["error"];
    assert!(e.is_object(), "expected an error: {:?}", reply.messages);
    (
        e["code"].as_i64().unwrap(),
        e["message"].as_str().unwrap().to_owned(),
    )
}

/// Waits (bounded) for `/api/calls` to list a finished call of `tool`; returns it.
async fn recorded(gw: &TestGateway, tool: &str) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let calls = gw.json("/api/calls").await;
        if let Some(c) = calls["recent"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["tool"] == tool)
        {
            return c.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no call of {tool}: {calls}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn a_servers_endpoint_shows_that_server_alone_under_its_own_names() {
    let gw = gateway().await;
    let mut fx = at(&gw, "fx", &gw.token).initialize().await;

    let tools = fx.request("tools/list", json!({})).await;
    let tools = names(tools.result(), "tools", "name");
    assert!(tools.contains(&"echo".to_owned()), "{tools:?}");
    assert!(
        tools.iter().all(|t| !t.contains("__")),
        "no prefixed names, no built-in tools, no other server: {tools:?}"
    );
    let aggregated = McpHttp::connect(&gw).await.tool_names().await;
    let fx_there: Vec<String> = aggregated
        .iter()
        .filter_map(|t| t.strip_prefix("fx__").map(str::to_owned))
        .collect();
    let mut fx_there = fx_there;
    fx_there.sort();
    assert_eq!(tools, fx_there, "exactly fx's tools, as /mcp shows them");

    // a call by the server's own name, on the fast path and on a stream of its own
    let r = fx.call("echo", json!({"text": "own name"})).await;
    assert_eq!(r.text(), "own name");
    let r = fx
        .request(
            "tools/call",
            json!({"name": "echo", "arguments": {"text": "streamed"},
                   "_meta": {"progressToken": 3}}),
        )
        .await;
    assert_eq!(r.text(), "streamed");
    // the aggregated names are not this endpoint's
    let (code, message) = error_of(&fx.call("fx__echo", json!({"text": "x"})).await);
    assert_eq!(code, -32602, "{message}");
    assert!(
        message.contains("'fx__echo'") && message.contains("'fx'"),
        "{message}"
    );
    let (code, _) = error_of(&fx.call("switchboard__health_snapshot", json!({})).await);
    assert_eq!(code, -32602, "no built-in tools on a server's endpoint");

    // prompts: fx's own (fy has a `greet` too)
    let prompts = fx.request("prompts/list", json!({})).await;
    assert_eq!(names(prompts.result(), "prompts", "name"), ["greet"]);
    let got = fx
        .request(
            "prompts/get",
            json!({"name": "greet", "arguments": {"who": "Ada"}}),
        )
        .await;
    assert_eq!(
        got.result()["messages"][0]["content"]["text"],
        "Hello, Ada!"
    );
    // completion reaches fx under the prompt's own name
    let done = fx
        .request(
            "completion/complete",
            json!({"ref": {"type": "ref/prompt", "name": "greet"},
                   "argument": {"name": "who", "value": "A"}}),
        )
        .await;
    assert_eq!(
        done.result()["completion"]["values"][0],
        "greet:who=A",
        "{:?}",
        done.messages
    );

    // resources: fx's only; fy's are not there
    let listed = fx.request("resources/list", json!({})).await;
    assert_eq!(
        names(listed.result(), "resources", "uri"),
        ["fixture://fx/notes", "fixture://readme"]
    );
    let templates = fx.request("resources/templates/list", json!({})).await;
    assert_eq!(
        names(templates.result(), "resourceTemplates", "uriTemplate"),
        ["fixture://fx/echo/{text}"]
    );
    let read = fx
        .request("resources/read", json!({"uri": "fixture://fx/notes"}))
        .await;
    assert_eq!(read.result()["contents"][0]["text"], "fx notes");
    let read = fx
        .request("resources/read", json!({"uri": "fixture://fy/notes"}))
        .await;
    assert!(
        read.response().get("error").is_some(),
        "fy's resource is not fx's: {:?}",
        read.messages
    );

    // telemetry and the call log name the exposed tool and its server
    let call = recorded(&gw, "fx__echo").await;
    assert_eq!(call["server"], "fx", "{call}");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let lines =
            std::fs::read_to_string(gw.data_dir.join("telemetry.jsonl")).unwrap_or_default();
        let rows: Vec<Value> = lines
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if rows
            .iter()
            .any(|r| r["tool_name"] == "fx__echo" && r["server"] == "fx")
        {
            assert!(
                !rows.iter().any(|r| r["tool_name"] == "echo"),
                "a row under the bare name: {rows:?}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no telemetry row for fx__echo: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // the dashboard's sessions say which endpoint each uses
    let sessions = gw.json("/api/sessions").await;
    let mine = sessions["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| Some(s["session_id"].as_str().unwrap()) == fx.session.as_deref())
        .cloned()
        .unwrap_or_else(|| panic!("session not listed: {sessions}"));
    assert_eq!(mine["server"], "fx", "{mine}");
    assert!(
        sessions["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["server"].is_null()),
        "the /mcp session has no server: {sessions}"
    );
}

#[tokio::test]
async fn roles_still_name_server_and_tool_on_a_servers_endpoint() {
    let gw = gateway().await;
    let reader = gw.pair_client("reader", Some("reader")).await;
    let mut fx = at(&gw, "fx", &reader).initialize().await;
    let tools = fx.request("tools/list", json!({})).await;
    assert_eq!(names(tools.result(), "tools", "name"), ["echo"]);
    assert_eq!(fx.call("echo", json!({"text": "ok"})).await.text(), "ok");
    let (code, message) = error_of(&fx.call("add", json!({"a": 1, "b": 2})).await);
    assert_eq!(code, -32003, "{message}");
    assert!(
        message.contains("'fx__add'") && message.contains("'reader'"),
        "{message}"
    );
    // refused calls are recorded under the exposed name too
    let refused = recorded(&gw, "fx__add").await;
    assert_eq!(refused["outcome"], "error", "{refused}");

    let mut fy = at(&gw, "fy", &reader).initialize().await;
    let fy_tools = fy.request("tools/list", json!({})).await;
    assert!(
        names(fy_tools.result(), "tools", "name").contains(&"add".to_owned()),
        "fy__* grants all of fy"
    );
    assert_eq!(
        fy.call("add", json!({"a": 1, "b": 2})).await.text(),
        "3",
        "fy's add is allowed"
    );

    let locked = gw.pair_client("locked", Some("locked")).await;
    let mut none = at(&gw, "fx", &locked).initialize().await;
    let tools = none.request("tools/list", json!({})).await;
    assert_eq!(tools.result()["tools"], json!([]));
    let listed = none.request("resources/list", json!({})).await;
    assert_eq!(listed.result()["resources"], json!([]));

    // no token, a wrong one: as on /mcp
    let r = reqwest::Client::new()
        .post(gw.url("/mcp/fx"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = reqwest::Client::new()
        .post(gw.url("/mcp/fx"))
        .bearer_auth("sb_nope")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn a_session_serves_only_the_endpoint_it_was_opened_at() {
    let gw = gateway().await;
    let mut fx = at(&gw, "fx", &gw.token).initialize().await;
    let sid = fx.session.clone().expect("a session");
    for (path, expected_here) in [("/mcp/fy", "/mcp/fy"), ("/mcp", "/mcp")] {
        let mut elsewhere = McpHttp::to(gw.url(path), gw.token.clone());
        elsewhere.session = Some(sid.clone());
        let r = elsewhere.call("echo", json!({"text": "x"})).await;
        assert_eq!(r.status, 404, "{path}: {:?}", r.messages);
        let body = &r.messages[0];
        assert_eq!(body["error"]["code"], "session_elsewhere", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("/mcp/fx") && message.contains(expected_here),
            "{message}"
        );
    }
    // and the other way: a /mcp session is not fx's
    let agg = McpHttp::connect(&gw).await;
    let mut there = at(&gw, "fx", &gw.token);
    there.session = agg.session.clone();
    let r = there.call("echo", json!({"text": "x"})).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.messages[0]["error"]["code"], "session_elsewhere");
    // the session still works where it belongs
    assert_eq!(
        fx.call("echo", json!({"text": "home"})).await.text(),
        "home"
    );

    // an explicit session for /ws/fx is made with ?server=, and only opens /ws/fx
    let made: Value = reqwest::Client::new()
        .post(gw.url("/session?server=fx"))
        .bearer_auth(&gw.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let explicit = made["session_id"].as_str().unwrap();
    let err = ws_open(&gw, &format!("/ws?session_id={explicit}"))
        .await
        .expect_err("a /ws/fx session on /ws");
    assert!(err.contains("404"), "{err}");
    let (mut ws, _) = ws_open(&gw, &format!("/ws/fx?session_id={explicit}"))
        .await
        .unwrap();
    ws_initialized(&mut ws).await;
    let r = rpc(
        &mut ws,
        2,
        "tools/call",
        json!({"name": "echo", "arguments": {"text": "w"}}),
    )
    .await;
    assert_eq!(r["result"]["content"][0]["text"], "w", "{r}");
    let r = reqwest::Client::new()
        .post(gw.url("/session?server=nope"))
        .bearer_auth(&gw.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn unknown_servers_and_deeper_paths_are_404_saying_what_exists() {
    let gw = gateway().await;
    let post = |path: &str| {
        reqwest::Client::new()
            .post(gw.url(path))
            .bearer_auth(&gw.token)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#)
            .send()
    };
    let r = post("/mcp/nope").await.unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "unknown_server", "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("'nope'") && message.contains("fx, fy"),
        "{message}"
    );
    for path in ["/mcp/fx/tools", "/mcp/", "/mcp/fx/a/b"] {
        let r = post(path).await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "unknown_path", "{path}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("/mcp/<server>"),
            "{v}"
        );
    }
    let err = ws_open(&gw, "/ws/nope").await.expect_err("no server nope");
    assert!(err.contains("404"), "{err}");
    // /ws/mcp is still the registration server
    let mut reg = WsClient::connect(&format!("ws://{}/ws/mcp", gw.addr)).await;
    assert!(!reg.hello().await.is_empty());
}

#[tokio::test]
async fn progress_and_its_watchers_on_a_servers_endpoint() {
    let gw = gateway().await;
    let mut fx = at(&gw, "fx", &gw.token).initialize().await;
    let sid = fx.session.clone().unwrap();
    let mut watch = SseClient::open(
        reqwest::Client::new()
            .get(gw.url(&format!("/session/{sid}/events")))
            .bearer_auth(&gw.token),
    )
    .await;
    let reply = fx
        .request(
            "tools/call",
            json!({"name": "slow", "arguments": {"steps": 3, "step_ms": 20},
                   "_meta": {"progressToken": "tok-9"}}),
        )
        .await;
    let progress = reply.notifications("notifications/progress");
    assert_eq!(progress.len(), 3, "{:?}", reply.messages);
    for (i, p) in progress.iter().enumerate() {
        assert_eq!(p["params"]["progressToken"], "tok-9");
        assert_eq!(p["params"]["progress"], json!((i + 1) as f64));
    }
    assert_eq!(reply.text(), "done after 3 steps");
    // the session's watchers see the call under its exposed name
    let mut seen = Vec::new();
    while let Some((_, frame)) = watch.next_within(Duration::from_secs(2)).await {
        let done = frame["event"] == "call_finished";
        seen.push(frame);
        if done {
            break;
        }
    }
    let started = seen
        .iter()
        .find(|f| f["event"] == "call_started")
        .unwrap_or_else(|| panic!("no call_started: {seen:?}"));
    assert_eq!(started["tool"], "fx__slow", "{started}");
    let frames: Vec<&Value> = seen
        .iter()
        .filter(|f| f.get("progress").is_some())
        .collect();
    assert_eq!(frames.len(), 3, "{seen:?}");
    assert!(frames.iter().all(|f| f["tool"] == "fx__slow"), "{seen:?}");
}

/// A WebSocket to `path` with the test token; the error as text (its HTTP status) if refused.
async fn ws_open(gw: &TestGateway, path: &str) -> Result<(Ws, ()), String> {
    let mut req = format!("ws://{}{path}", gw.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", gw.token).parse().unwrap(),
    );
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok((ws, ())),
        Err(e) => Err(e.to_string()),
    }
}

async fn ws_initialized(ws: &mut Ws) {
    let init = rpc(
        ws,
        1,
        "initialize",
        json!({"protocolVersion": "2025-11-25", "capabilities": {"elicitation": {}},
               "clientInfo": {"name": "ws", "version": "1"}}),
    )
    .await;
    assert_eq!(
        init["result"]["serverInfo"]["name"], "switchboard",
        "{init}"
    );
    ws.send(Message::text(
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string(),
    ))
    .await
    .unwrap();
}

#[tokio::test]
async fn over_ws_a_servers_endpoint_is_the_same_server() {
    let gw = gateway().await;
    let (mut ws, _) = ws_open(&gw, "/ws/fx").await.unwrap();
    ws_initialized(&mut ws).await;
    let tools = rpc(&mut ws, 2, "tools/list", json!({})).await;
    let tools = names(&tools["result"], "tools", "name");
    assert!(tools.contains(&"slow".to_owned()), "{tools:?}");
    assert!(tools.iter().all(|t| !t.contains("__")), "{tools:?}");

    // progress, then the result
    ws.send(Message::text(
        json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "slow",
               "arguments": {"steps": 2, "step_ms": 10}, "_meta": {"progressToken": "w"}}})
        .to_string(),
    ))
    .await
    .unwrap();
    let mut progress = 0;
    let result = loop {
        let m = recv(&mut ws).await;
        if m["method"] == "notifications/progress" {
            assert_eq!(m["params"]["progressToken"], "w");
            progress += 1;
        } else if m["id"] == 3 {
            break m;
        }
    };
    assert_eq!(progress, 2);
    assert_eq!(result["result"]["content"][0]["text"], "done after 2 steps");

    // a server request reaches this socket and its answer goes back
    ws.send(Message::text(
        json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "ask",
               "arguments": {"method": "elicitation/create",
                             "params": {"message": "Name?", "requestedSchema": {"type": "object",
                                        "properties": {}}}}}})
        .to_string(),
    ))
    .await
    .unwrap();
    let asked = loop {
        let m = recv(&mut ws).await;
        if m["method"] == "elicitation/create" {
            break m;
        }
    };
    ws.send(Message::text(
        json!({"jsonrpc": "2.0", "id": asked["id"],
               "result": {"action": "accept", "content": {"n": "Ada"}}})
        .to_string(),
    ))
    .await
    .unwrap();
    let answered = loop {
        let m = recv(&mut ws).await;
        if m["id"] == 4 {
            break m;
        }
    };
    let text = answered["result"]["content"][0]["text"].as_str().unwrap();
    assert!(text.contains("Ada"), "{answered}");

    // log messages: fx's own to this socket (its own logger), fy's never
    let r = rpc(&mut ws, 5, "logging/setLevel", json!({"level": "info"})).await;
    assert!(r.get("result").is_some(), "{r}");
    let (mut wy, _) = ws_open(&gw, "/ws/fy").await.unwrap();
    ws_initialized(&mut wy).await;
    let r = rpc(&mut wy, 2, "logging/setLevel", json!({"level": "info"})).await;
    assert!(r.get("result").is_some(), "{r}");
    let mut other = McpHttp::connect(&gw).await;
    other
        .call(
            "fx__log",
            json!({"level": "warning", "message": "disk low", "logger": "fs"}),
        )
        .await;
    let m = loop {
        let m = recv(&mut ws).await;
        if m["method"] == "notifications/message" {
            break m;
        }
    };
    assert_eq!(m["params"]["logger"], "fs", "as the server sent it: {m}");
    assert_eq!(m["params"]["data"], "disk low");
    other
        .call("fy__log", json!({"level": "warning", "message": "fy's"}))
        .await;
    let m = loop {
        let m = recv(&mut wy).await;
        if m["method"] == "notifications/message" {
            break m;
        }
    };
    assert_eq!(
        m["params"]["data"], "fy's",
        "fy's socket hears fy only: {m}"
    );
    // and the aggregated endpoint's call of fx__log reached no fy socket first
    let deadline = tokio::time::Instant::now() + Duration::from_millis(300);
    while let Ok(Some(Ok(Message::Text(t)))) = tokio::time::timeout_at(deadline, ws.next()).await {
        let m: Value = serde_json::from_str(&t).unwrap();
        assert_ne!(m["params"]["data"], "fy's", "fx's socket heard fy: {m}");
    }

    let call = recorded(&gw, "fx__slow").await;
    assert_eq!(call["server"], "fx");
}

#[tokio::test]
async fn a_stateless_2026_request_on_a_servers_endpoint() {
    let gw = gateway().await;
    let meta = json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                      "io.modelcontextprotocol/clientCapabilities": {},
                      "io.modelcontextprotocol/clientInfo": {"name": "it", "version": "1"}});
    let send = |body: Value, method: &str, name: Option<&str>| {
        let mut r = reqwest::Client::new()
            .post(gw.url("/mcp/fx"))
            .bearer_auth(&gw.token)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", method)
            .body(body.to_string());
        if let Some(n) = name {
            r = r.header("mcp-name", n);
        }
        r.send()
    };
    // the fast path: JSON
    let r = send(
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
            "name": "echo", "arguments": {"text": "stateless"}, "_meta": meta}}),
        "tools/call",
        Some("echo"),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["result"]["content"][0]["text"], "stateless", "{v}");
    assert_eq!(v["result"]["resultType"], "complete");
    let r = send(
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {"_meta": meta}}),
        "tools/list",
        None,
    )
    .await
    .unwrap();
    let v: Value = r.json().await.unwrap();
    let tools = names(&v["result"], "tools", "name");
    assert!(
        tools.contains(&"echo".to_owned()) && tools.iter().all(|t| !t.contains("__")),
        "{tools:?}"
    );
    // with a progress token: rmcp's stateless handler, made for this endpoint
    let mut meta_progress = meta.clone();
    meta_progress["progressToken"] = json!("p1");
    let r = send(
        json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {
            "name": "slow", "arguments": {"steps": 2, "step_ms": 10}, "_meta": meta_progress}}),
        "tools/call",
        Some("slow"),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    assert!(body.contains("done after 2 steps"), "{body}");
    assert!(body.contains("notifications/progress"), "{body}");
    let call = recorded(&gw, "fx__slow").await;
    assert_eq!(call["server"], "fx");
    // a stateless request naming another server's tool by its aggregated name finds nothing
    let r = send(
        json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {
            "name": "fy__echo", "arguments": {"text": "x"}, "_meta": meta}}),
        "tools/call",
        Some("fy__echo"),
    )
    .await
    .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], -32602, "{v}");
}

#[tokio::test]
async fn a_server_asks_the_client_through_its_endpoint() {
    let gw = gateway().await;
    let mut fx = at(&gw, "fx", &gw.token);
    let init = fx
        .request(
            "initialize",
            json!({"protocolVersion": "2025-11-25",
                   "capabilities": {"elicitation": {}, "sampling": {}, "roots": {}},
                   "clientInfo": {"name": "asks", "version": "1"}}),
        )
        .await;
    assert_eq!(init.result()["serverInfo"]["name"], "switchboard");
    fx.notify("notifications/initialized", json!({})).await;
    let call = json!({"jsonrpc": "2.0", "id": 50, "method": "tools/call",
        "params": {"name": "ask", "arguments": {"method": "roots/list", "params": {}}}});
    let mut stream = SseClient::open(fx.post(call.to_string())).await;
    let asked = loop {
        let (_, m) = stream.next().await;
        if m["method"] == "roots/list" {
            break m;
        }
        assert!(m.get("result").is_none(), "answered without asking: {m}");
    };
    let roots = json!({"roots": [{"uri": "file:///work", "name": "work"}]});
    let posted = fx
        .post(json!({"jsonrpc": "2.0", "id": asked["id"], "result": roots}).to_string())
        .send()
        .await
        .unwrap();
    assert!(posted.status().is_success(), "{}", posted.status());
    let answer = loop {
        let (_, m) = stream.next().await;
        if m["id"] == 50 {
            break m;
        }
    };
    let text = answer["result"]["content"][0]["text"].as_str().unwrap();
    let got: Value = serde_json::from_str(text).unwrap();
    assert_eq!(got, json!({"result": roots}));
}

#[tokio::test]
async fn pairing_and_the_discovery_file_offer_each_servers_endpoints() {
    let gw = gateway().await;
    let code = gw.code(None).await;
    let paired: Value = reqwest::Client::new()
        .post(gw.url("/pair"))
        .json(&json!({"code": code, "name": "endpoints-pair"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = paired["token"].as_str().unwrap();
    let config = &paired["client_config"];
    assert_eq!(
        config["url"],
        gw.url("/mcp").replace("localhost", "127.0.0.1")
    );
    for server in ["fx", "fy"] {
        let own = &config["servers"][server];
        let url = own["url"].as_str().unwrap_or_else(|| panic!("{config}"));
        assert!(url.ends_with(&format!("/mcp/{server}")), "{own}");
        assert!(
            own["ws_url"]
                .as_str()
                .unwrap()
                .ends_with(&format!("/ws/{server}")),
            "{own}"
        );
        assert_eq!(own["mcp_json"]["mcpServers"][server]["url"], url);
        assert!(
            own["claude_code"].as_str().unwrap().contains(token),
            "{own}"
        );
        // the URL offered works with the token handed out
        let mut c = McpHttp::to(url.to_owned(), token.to_owned())
            .initialize()
            .await;
        assert!(c.tool_names().await.contains(&"echo".to_owned()));
    }

    let file: Value =
        serde_json::from_slice(&std::fs::read(gw.data_dir.join("mcp.json")).expect("mcp.json"))
            .unwrap();
    assert!(file["ws_url"].as_str().unwrap().ends_with("/ws"), "{file}");
    for server in ["fx", "fy"] {
        assert_eq!(
            file["servers"][server]["url"],
            format!("{}/{server}", file["url"].as_str().unwrap()),
            "{file}"
        );
        assert_eq!(
            file["servers"][server]["ws_url"],
            format!("{}/{server}", file["ws_url"].as_str().unwrap()),
            "{file}"
        );
    }
}
