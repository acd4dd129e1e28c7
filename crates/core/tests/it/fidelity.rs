//! Nothing lost in passing: what a client gets through the gateway (`/mcp`'s fast path, its
//! streamed calls, `/ws`) is what the server wrote, compared with the same requests sent to the
//! server directly (the fixture with `--rich`, spoken to over its own stdio): every field of
//! tools, resources, templates and prompts, every content type with its annotations and
//! `_meta`, `structuredContent`, the request's own `_meta` on the way in, and `ping` both ways.

use std::process::Stdio;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin};
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;
use crate::ws::{Ws, initialized, open};

/// The fixture run directly, as a client of its own would: newline-delimited JSON-RPC.
struct Direct {
    _child: Child,
    stdin: ChildStdin,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    next_id: u64,
}

impl Direct {
    async fn start() -> Self {
        let mut child = tokio::process::Command::new(FIXTURE)
            .arg("--rich")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut d = Self {
            _child: child,
            stdin,
            lines,
            next_id: 1,
        };
        d.raw(
            "initialize",
            json!({"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "direct", "version": "1"}}),
        )
        .await;
        d.write(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        d
    }

    async fn write(&mut self, msg: Value) {
        let mut line = msg.to_string();
        line.push('\n');
        self.stdin.write_all(line.as_bytes()).await.unwrap();
    }

    /// The response line to `method`, as the fixture wrote it.
    async fn raw(&mut self, method: &str, params: Value) -> String {
        let id = self.next_id;
        self.next_id += 1;
        self.write(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        loop {
            let line = tokio::time::timeout(WAIT, self.lines.next_line())
                .await
                .expect("the fixture answers in time")
                .unwrap()
                .expect("the fixture is running");
            let v: Value = serde_json::from_str(&line).unwrap();
            if v["id"] == id {
                return line;
            }
        }
    }

    async fn result(&mut self, method: &str, params: Value) -> Value {
        let line = self.raw(method, params).await;
        let v: Value = serde_json::from_str(&line).unwrap();
        assert!(v.get("error").is_none(), "{method}: {v}");
        v["result"].clone()
    }
}

/// The text of a JSON-RPC response's `result` member, as written (the result is its last
/// member, both as the fixture writes it and as the gateway passes a tool result on).
fn result_text(frame: &str) -> &str {
    let at = frame.find(r#""result":"#).expect("a result") + r#""result":"#.len();
    frame[at..]
        .trim_end()
        .strip_suffix('}')
        .expect("the result ends the frame")
}

async fn gateway() -> TestGateway {
    let gw = TestGateway::with(|c| c.servers = vec![fixture_server("fx", &["--rich"])]).await;
    gw.wait_server("fx", "running").await;
    gw
}

/// A session whose client declared `capabilities` (sampling: its calls are answered on streams
/// of their own, which can carry its server's requests, not the fast path's JSON).
async fn session_with(gw: &TestGateway, capabilities: Value) -> McpHttp {
    McpHttp::initialized(gw, capabilities, "fidelity").await
}

async fn ws_session(gw: &TestGateway) -> Ws {
    let (mut ws, _) = open(gw, Some(&gw.token), None).await.unwrap();
    initialized(&mut ws).await;
    ws
}

/// The raw text of the response to `id` on `/ws`.
async fn ws_raw(ws: &mut Ws, id: u64, method: &str, params: Value) -> String {
    ws.send(Message::text(
        json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string(),
    ))
    .await
    .unwrap();
    loop {
        let frame = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame in time");
        if let Some(Ok(Message::Text(t))) = frame {
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["id"] == id {
                return t.to_string();
            }
        }
    }
}

/// The items of list `field` (every page), from the gateway's `/mcp` session.
async fn gateway_list(mcp: &mut McpHttp, method: &str, field: &str) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let params = match &cursor {
            Some(c) => json!({"cursor": c}),
            None => json!({}),
        };
        let reply = mcp.request(method, params).await;
        let r = reply.result();
        items.extend(r[field].as_array().unwrap().iter().cloned());
        match r["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return items,
        }
    }
}

/// `item` renamed as the gateway names the fixture's tools and prompts.
fn renamed(mut item: Value) -> Value {
    let name = format!("fx__{}", item["name"].as_str().unwrap());
    item["name"] = json!(name);
    item
}

#[tokio::test]
async fn lists_carry_every_field_the_server_wrote() {
    let gw = gateway().await;
    let mut direct = Direct::start().await;
    let mut mcp = McpHttp::connect(&gw).await;
    let mut ws = ws_session(&gw).await;

    // tools: each of the server's, exactly, under its exposed name (`execution`, `icons`,
    // `title`, `outputSchema`, `_meta`, an unknown `x-extension`, 2020-12 `$defs`/`$ref`)
    let tools = direct.result("tools/list", json!({})).await["tools"]
        .as_array()
        .unwrap()
        .clone();
    let rich = tools.iter().find(|t| t["name"] == "rich").unwrap();
    assert_eq!(rich["execution"], json!({"taskSupport": "optional"}));
    let through = gateway_list(&mut mcp, "tools/list", "tools").await;
    let ws_tools = rpc_result(&mut ws, 2, "tools/list", json!({})).await["tools"].clone();
    for t in &tools {
        let expected = renamed(t.clone());
        let got = through.iter().find(|g| g["name"] == expected["name"]);
        assert_eq!(got, Some(&expected), "tools/list on /mcp");
        let got = ws_tools
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"] == expected["name"]);
        assert_eq!(got, Some(&expected), "tools/list on /ws");
    }

    // resources, templates and prompts: the same, item for item
    for (method, field, rename) in [
        ("resources/list", "resources", false),
        ("resources/templates/list", "resourceTemplates", false),
        ("prompts/list", "prompts", true),
    ] {
        let own = direct.result(method, json!({})).await[field]
            .as_array()
            .unwrap()
            .clone();
        assert!(!own.is_empty(), "{method}");
        let got = gateway_list(&mut mcp, method, field).await;
        let on_ws = rpc_result(&mut ws, 3, method, json!({})).await[field].clone();
        for item in own {
            let expected = if rename { renamed(item) } else { item };
            let key = if field == "resourceTemplates" {
                "uriTemplate"
            } else if rename {
                "name"
            } else {
                "uri"
            };
            let found = got.iter().find(|g| g[key] == expected[key]);
            assert_eq!(found, Some(&expected), "{method} on /mcp");
            let found = on_ws
                .as_array()
                .unwrap()
                .iter()
                .find(|g| g[key] == expected[key]);
            assert_eq!(found, Some(&expected), "{method} on /ws");
        }
    }
}

async fn rpc_result(ws: &mut Ws, id: u64, method: &str, params: Value) -> Value {
    let v: Value = serde_json::from_str(&ws_raw(ws, id, method, params).await).unwrap();
    assert!(v.get("error").is_none(), "{method}: {v}");
    v["result"].clone()
}

#[tokio::test]
async fn results_carry_every_content_type_byte_for_byte() {
    let gw = gateway().await;
    let mut direct = Direct::start().await;
    let mut mcp = McpHttp::connect(&gw).await;
    let mut ws = ws_session(&gw).await;

    // a tool result with every content type: on the fast path and on /ws, the very bytes
    let own = direct
        .raw("tools/call", json!({"name": "rich", "arguments": {}}))
        .await;
    let own = result_text(&own).to_owned();
    let call = json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
                      "params": {"name": "fx__rich", "arguments": {}}});
    let fast = mcp.post(call.to_string()).send().await.unwrap();
    assert_eq!(
        fast.headers()["content-type"],
        "application/json",
        "answered on the fast path"
    );
    let fast = fast.text().await.unwrap();
    assert_eq!(result_text(&fast), own, "/mcp fast path");
    let on_ws = ws_raw(&mut ws, 4, "tools/call", json!({"name": "fx__rich"})).await;
    assert_eq!(result_text(&on_ws), own, "/ws");

    // a client that can be asked things: its call has a stream of its own (the same JSON)
    let own_value: Value = serde_json::from_str(&own).unwrap();
    let mut askable = session_with(&gw, json!({"sampling": {}, "roots": {}})).await;
    let reply = askable.call("fx__rich", json!({})).await;
    assert_eq!(reply.result(), &own_value, "/mcp on the call's own stream");
    // and with a progress token (a stream of its own)
    let reply = mcp
        .request(
            "tools/call",
            json!({"name": "fx__rich", "arguments": {}, "_meta": {"progressToken": "p"}}),
        )
        .await;
    assert_eq!(reply.result(), &own_value, "/mcp with progress");

    // resources/read, prompts/get and completion/complete: as the server answered
    for (method, params, ours) in [
        (
            "resources/read",
            json!({"uri": "fixture://rich/text"}),
            json!({"uri": "fixture://rich/text"}),
        ),
        (
            "resources/read",
            json!({"uri": "fixture://rich/blob"}),
            json!({"uri": "fixture://rich/blob"}),
        ),
        (
            "resources/read",
            json!({"uri": "fixture://rich/42"}),
            json!({"uri": "fixture://rich/42"}),
        ),
        (
            "prompts/get",
            json!({"name": "rich", "arguments": {"topic": "owls"}}),
            json!({"name": "fx__rich", "arguments": {"topic": "owls"}}),
        ),
        (
            "completion/complete",
            json!({"ref": {"type": "ref/prompt", "name": "rich"},
                   "argument": {"name": "topic", "value": "o"}}),
            json!({"ref": {"type": "ref/prompt", "name": "fx__rich"},
                   "argument": {"name": "topic", "value": "o"}}),
        ),
    ] {
        let own = direct.result(method, params).await;
        let got = mcp.request(method, ours.clone()).await;
        // a completion names the reference as the server saw it
        assert_eq!(got.result(), &own, "{method} {ours} on /mcp");
        let got = rpc_result(&mut ws, 5, method, ours.clone()).await;
        assert_eq!(got, own, "{method} {ours} on /ws");
    }
}

#[tokio::test]
async fn the_requests_own_meta_reaches_the_server() {
    let gw = gateway().await;
    let mut mcp = McpHttp::connect(&gw).await;
    let mut ws = ws_session(&gw).await;
    let mut askable = session_with(&gw, json!({"elicitation": {}})).await;
    let meta = json!({"example.com/trace": "t-1", "example.com/n": {"deep": [1, 2.5]},
                      "progressToken": "client-token"});
    let params = json!({"name": "fx__meta_echo", "arguments": {}, "_meta": meta});
    let fast = mcp.request("tools/call", params.clone()).await;
    let streamed = askable.request("tools/call", params.clone()).await;
    let on_ws = rpc_result(&mut ws, 6, "tools/call", params).await;
    for (path, result) in [
        ("/mcp", fast.result().clone()),
        ("/mcp streamed", streamed.result().clone()),
        ("/ws", on_ws),
    ] {
        let seen = &result["structuredContent"]["meta"];
        assert_eq!(seen["example.com/trace"], "t-1", "{path}: {seen}");
        assert_eq!(seen["example.com/n"], json!({"deep": [1, 2.5]}), "{path}");
        // the client's progress token is the gateway's own upstream
        let token = seen["progressToken"].as_str().unwrap_or_default();
        assert!(token.starts_with("sb-fx-"), "{path}: {seen}");
        assert!(
            seen.as_object()
                .unwrap()
                .keys()
                .all(|k| !k.starts_with("io.modelcontextprotocol/")),
            "{path}: {seen}"
        );
    }

    // resources/read and prompts/get pass it on too
    let reply = mcp
        .request(
            "prompts/get",
            json!({"name": "fx__greet", "arguments": {"who": "x"},
                   "_meta": {"example.com/trace": "t-2"}}),
        )
        .await;
    assert_eq!(
        reply.result()["messages"][0]["content"]["text"],
        "Hello, x!"
    );
}

#[tokio::test]
async fn ping_both_ways() {
    let gw = gateway().await;
    let mut mcp = McpHttp::connect(&gw).await;
    let mut ws = ws_session(&gw).await;
    // client -> gateway
    assert_eq!(mcp.request("ping", json!({})).await.result(), &json!({}));
    assert_eq!(rpc_result(&mut ws, 7, "ping", json!({})).await, json!({}));
    // server -> gateway, during a call: answered by the gateway itself
    let reply = mcp
        .call("fx__ask", json!({"method": "ping", "params": {}}))
        .await;
    let answered: Value = serde_json::from_str(&reply.text()).unwrap();
    assert_eq!(answered, json!({"result": {}}));
    let reply = rpc_result(
        &mut ws,
        8,
        "tools/call",
        json!({"name": "fx__ask", "arguments": {"method": "ping"}}),
    )
    .await;
    let text = reply["content"][0]["text"].as_str().unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(text).unwrap(),
        json!({"result": {}})
    );
}

#[tokio::test]
async fn an_unlisted_uri_is_subscribed_on_the_one_server_that_offers_it_else_refused() {
    let gw = TestGateway::with(|c| {
        c.servers = vec![
            fixture_server("a", &["--rich"]),
            fixture_server("b", &["--rich"]),
        ]
    })
    .await;
    gw.wait_server("a", "running").await;
    gw.wait_server("b", "running").await;
    let mut mcp = McpHttp::connect(&gw).await;
    let r = mcp
        .request("resources/subscribe", json!({"uri": "fixture://rich/99"}))
        .await;
    assert_eq!(r.response()["error"]["code"], -32002, "{:?}", r.messages);
    let message = r.response()["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("2 granted servers offer subscriptions"),
        "{message}"
    );
}

#[tokio::test]
async fn a_malformed_or_oversized_server_request_is_refused_at_once() {
    let gw = gateway().await;
    let mut askable = session_with(&gw, json!({"elicitation": {}, "sampling": {}})).await;
    for (args, expected) in [
        (
            json!({"method": "elicitation/create", "params": "not an object"}),
            "must be an object",
        ),
        (
            json!({"method": "sampling/createMessage", "params": {}, "pad": 2_000_000}),
            "over the 1048576-byte limit",
        ),
    ] {
        let started = std::time::Instant::now();
        let reply = askable.call("fx__ask", args).await;
        let answered: Value = serde_json::from_str(&reply.text()).unwrap();
        assert_eq!(answered["error"]["code"], -32602, "{answered}");
        let message = answered["error"]["message"].as_str().unwrap();
        assert!(message.contains(expected), "{message}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "nothing waited"
        );
        // and the client was never sent it
        assert!(
            reply.messages.iter().all(|m| m.get("method").is_none()),
            "{:?}",
            reply
                .messages
                .iter()
                .map(|m| &m["method"])
                .collect::<Vec<_>>()
        );
    }
    // the session goes on
    assert_eq!(
        askable.call("fx__echo", json!({"text": "on"})).await.text(),
        "on"
    );
}

#[tokio::test]
async fn a_clients_cancel_reaches_the_server_from_ws_and_from_streamed_calls() {
    let gw = gateway().await;
    // /ws
    let mut ws = ws_session(&gw).await;
    let slow = json!({"name": "fx__slow", "arguments": {"steps": 200, "step_ms": 25}});
    ws.send(Message::text(
        json!({"jsonrpc": "2.0", "id": 41, "method": "tools/call", "params": slow}).to_string(),
    ))
    .await
    .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    ws.send(Message::text(
        json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
               "params": {"requestId": 41, "reason": "stop"}})
        .to_string(),
    ))
    .await
    .unwrap();
    crate::mcp::wait_stderr(&gw, "fx", "cancelled at step").await;
    // still usable
    assert_eq!(rpc_result(&mut ws, 42, "ping", json!({})).await, json!({}));

    // a streamed call (a client that can be asked: its calls have streams of their own)
    let askable = session_with(&gw, json!({"sampling": {}})).await;
    let mut caller = McpHttp {
        session: askable.session.clone(),
        ..McpHttp::new(&gw)
    };
    let call = tokio::spawn(async move {
        caller
            .send(json!({"jsonrpc": "2.0", "id": 43, "method": "tools/call", "params": slow}))
            .await
    });
    let before = gw.server("fx").await["stderr_tail"]
        .to_string()
        .matches("cancelled at step")
        .count();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let mut notifier = McpHttp {
        session: askable.session.clone(),
        ..McpHttp::new(&gw)
    };
    notifier
        .notify("notifications/cancelled", json!({"requestId": 43}))
        .await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let tail = gw.server("fx").await["stderr_tail"].to_string();
        if tail.matches("cancelled at step").count() > before {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no cancel upstream: {tail}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), call).await;
}
