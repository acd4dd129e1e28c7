//! Requests a server sends to its client (elicitation, sampling, roots) reach the client
//! session whose call is in flight, and its answer goes back to the server: over `/mcp`, on the
//! call's own response stream. Never to the wrong client: where the session cannot be told, the
//! server gets an error saying so.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

async fn gateway() -> TestGateway {
    let gw = TestGateway::with(|c| c.servers = vec![fixture_server("fx", &[])]).await;
    gw.wait_server("fx", "running").await;
    gw
}

/// A session whose client declared `capabilities`.
async fn session_with(gw: &TestGateway, capabilities: Value) -> McpHttp {
    McpHttp::initialized(gw, capabilities, "asks").await
}

fn elicitation() -> Value {
    json!({"message": "Your name?", "requestedSchema": {"type": "object",
           "properties": {"name": {"type": "string"}}, "required": ["name"]}})
}

/// Calls `fx__ask` for `method` on an SSE stream; answers the server's request that arrives
/// on it with `answer` (a `result` or `error` member), and returns what the tool said the
/// client answered.
async fn ask_and_answer(mcp: &mut McpHttp, method: &str, params: Value, answer: Value) -> Value {
    let id = mcp.next_id;
    mcp.next_id += 1;
    let call = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": "fx__ask", "arguments": {"method": method, "params": params}}});
    // no progress token, yet a stream: a client that may be asked things gets one for every
    // call (not the fast path's JSON answer)
    let mut stream = SseClient::open(mcp.post(call.to_string())).await;
    let asked = loop {
        let (_, m) = stream.next().await;
        if m["method"] == method {
            break m;
        }
        assert!(m.get("result").is_none(), "answered without asking: {m}");
    };
    // exactly as sent: nothing added to its `_meta` (rmcp, which carried these sessions
    // before, put a progress token of its own there)
    assert_eq!(
        asked["params"], params,
        "the request reaches the client as sent"
    );
    let mut response = json!({"jsonrpc": "2.0", "id": asked["id"]});
    for (k, v) in answer.as_object().unwrap() {
        response[k] = v.clone();
    }
    let posted = mcp.post(response.to_string()).send().await.unwrap();
    assert!(posted.status().is_success(), "{}", posted.status());
    loop {
        let (_, m) = stream.next().await;
        if m["id"] == id {
            let text = m["result"]["content"][0]["text"]
                .as_str()
                .unwrap()
                .to_owned();
            return serde_json::from_str(&text).unwrap_or(json!({"text": text}));
        }
    }
}

#[tokio::test]
async fn elicitation_sampling_and_roots_reach_the_client_and_come_back() {
    let gw = gateway().await;
    let mut mcp = session_with(
        &gw,
        json!({"elicitation": {}, "sampling": {}, "roots": {"listChanged": true}}),
    )
    .await;
    // the gateway declares upstream what it can pass on
    let caps = mcp.call("fx__client_capabilities", json!({})).await.text();
    let caps: Value = serde_json::from_str(&caps).unwrap();
    for k in ["elicitation", "sampling", "roots"] {
        assert!(caps.get(k).is_some(), "{k} declared upstream: {caps}");
    }

    let accepted = json!({"action": "accept", "content": {"name": "Ada"}});
    let got = ask_and_answer(
        &mut mcp,
        "elicitation/create",
        elicitation(),
        json!({"result": accepted}),
    )
    .await;
    assert_eq!(got, json!({"result": accepted}));

    let message = json!({"role": "assistant", "content": {"type": "text", "text": "hi"},
                         "model": "m", "stopReason": "endTurn"});
    let got = ask_and_answer(
        &mut mcp,
        "sampling/createMessage",
        json!({"messages": [{"role": "user", "content": {"type": "text", "text": "hello"}}],
               "maxTokens": 10}),
        json!({"result": message}),
    )
    .await;
    assert_eq!(got["result"]["content"]["text"], "hi", "{got}");
    assert_eq!(got["result"]["model"], "m", "{got}");

    let roots = json!({"roots": [{"uri": "file:///work", "name": "work"}]});
    let got = ask_and_answer(&mut mcp, "roots/list", json!({}), json!({"result": roots})).await;
    assert_eq!(got, json!({"result": roots}));

    // the client's error goes back as its error
    let got = ask_and_answer(
        &mut mcp,
        "elicitation/create",
        elicitation(),
        json!({"error": {"code": -32042, "message": "the user closed the form"}}),
    )
    .await;
    assert_eq!(got["error"]["code"], -32042, "{got}");
    assert_eq!(got["error"]["message"], "the user closed the form");
}

#[tokio::test]
async fn a_client_that_cannot_be_asked_is_not_and_the_server_hears_why() {
    // (an elicitation Switchboard answers itself instead: see `elicit.rs`)
    let gw = gateway().await;
    let mut mcp = session_with(&gw, json!({})).await;
    let reply = mcp
        .call(
            "fx__ask",
            json!({"method": "sampling/createMessage", "params": {"messages": []}}),
        )
        .await;
    let got: Value = serde_json::from_str(&reply.text()).unwrap();
    assert_eq!(got["error"]["code"], -32601, "{got}");
    let message = got["error"]["message"].as_str().unwrap();
    assert!(message.contains("sampling/createMessage"), "{message}");
    assert!(message.contains("cannot be asked"), "{message}");
}

#[tokio::test]
async fn with_two_sessions_in_flight_on_one_server_neither_is_guessed() {
    let gw = gateway().await;
    let mut busy = session_with(&gw, json!({"elicitation": {}})).await;
    let mut asker = session_with(&gw, json!({"elicitation": {}})).await;
    // the other session has a call in flight on the same server for a while
    let slow = tokio::spawn(async move {
        busy.call("fx__slow", json!({"steps": 20, "step_ms": 50}))
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let id = asker.next_id;
    asker.next_id += 1;
    let call = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": "fx__ask",
                   "arguments": {"method": "elicitation/create", "params": elicitation()},
                   "_meta": {"progressToken": 1}}});
    let mut stream = SseClient::open(asker.post(call.to_string())).await;
    let answer = loop {
        let (_, m) = stream.next().await;
        assert_ne!(
            m["method"], "elicitation/create",
            "asked a client it may not be for"
        );
        if m["id"] == id {
            break m;
        }
    };
    let got: Value =
        serde_json::from_str(answer["result"]["content"][0]["text"].as_str().unwrap()).unwrap();
    let message = got["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("2 client sessions") && message.contains("'fx'"),
        "{got}"
    );
    assert_eq!(slow.await.unwrap().text(), "done after 20 steps");
}

/// A `/ws` socket whose client declared `capabilities`.
async fn socket_with(gw: &TestGateway, capabilities: Value) -> crate::ws::Ws {
    use futures_util::SinkExt;
    let (mut ws, _) = crate::ws::open(gw, Some(&gw.token), None).await.unwrap();
    let init = crate::ws::rpc(
        &mut ws,
        1,
        "initialize",
        json!({"protocolVersion": "2025-11-25", "capabilities": capabilities,
               "clientInfo": {"name": "asks-ws", "version": "1"}}),
    )
    .await;
    assert_eq!(init["result"]["serverInfo"]["name"], "switchboard");
    ws.send(tokio_tungstenite::tungstenite::Message::text(
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string(),
    ))
    .await
    .unwrap();
    ws
}

#[tokio::test]
async fn over_ws_the_request_reaches_the_socket_and_its_answer_the_server() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let gw = gateway().await;
    let mut ws = socket_with(&gw, json!({"elicitation": {}})).await;
    let call = json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call",
        "params": {"name": "fx__ask",
                   "arguments": {"method": "elicitation/create", "params": elicitation()}}});
    ws.send(Message::text(call.to_string())).await.unwrap();
    let asked = loop {
        let m = crate::ws::recv(&mut ws).await;
        assert_ne!(m["id"], 5, "answered without asking: {m}");
        if m["method"] == "elicitation/create" {
            break m;
        }
    };
    assert_eq!(asked["params"], elicitation(), "passed on as sent");
    let accepted = json!({"action": "accept", "content": {"name": "Grace"}});
    ws.send(Message::text(
        json!({"jsonrpc": "2.0", "id": asked["id"], "result": accepted}).to_string(),
    ))
    .await
    .unwrap();
    let answer = loop {
        let m = crate::ws::recv(&mut ws).await;
        if m["id"] == 5 {
            break m;
        }
    };
    let got: Value =
        serde_json::from_str(answer["result"]["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(got, json!({"result": accepted}));

    // a socket that declared nothing is not asked; the server hears why
    let mut plain = socket_with(&gw, json!({})).await;
    let answer = crate::ws::rpc(
        &mut plain,
        2,
        "tools/call",
        json!({"name": "fx__ask",
               "arguments": {"method": "sampling/createMessage", "params": {"messages": []}}}),
    )
    .await;
    let got: Value =
        serde_json::from_str(answer["result"]["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(got["error"]["code"], -32601, "{got}");
}
