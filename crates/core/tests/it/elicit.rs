//! Elicitations Switchboard answers itself: a server's `elicitation/create` during a call of a
//! client that cannot be asked (it declared no elicitation) waits in `GET /api/elicitations`
//! until `POST /api/elicitations/{id}` answers it, and the answer reaches the server under its
//! own id. Bad content is refused and loses nothing; unanswered ones end in time; one whose
//! client went away ends with it.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

async fn gateway(timeout_ms: u64) -> TestGateway {
    let gw = TestGateway::with(|c| {
        c.servers = vec![fixture_server("fx", &[])];
        c.gateway.elicitation_timeout_ms = timeout_ms;
    })
    .await;
    gw.wait_server("fx", "running").await;
    gw
}

/// A form of every kind of field.
fn form() -> Value {
    json!({"message": "Who are you?", "requestedSchema": {"type": "object", "properties": {
        "name": {"type": "string", "minLength": 2},
        "age": {"type": "integer", "minimum": 0},
        "size": {"type": "string", "oneOf": [{"const": "s", "title": "Small"},
                                             {"const": "l", "title": "Large"}]},
        "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "b"]}},
        "ok": {"type": "boolean", "default": true}
    }, "required": ["name"]}})
}

/// An `/mcp` session whose client declared `capabilities`.
async fn session_with(gw: &TestGateway, capabilities: Value) -> McpHttp {
    McpHttp::initialized(gw, capabilities, "elicit").await
}

/// Starts `fx__ask` of `params` on `mcp`; its result is what the server got back.
fn ask(mut mcp: McpHttp, params: Value) -> tokio::task::JoinHandle<Value> {
    tokio::spawn(async move {
        let reply = mcp
            .call(
                "fx__ask",
                json!({"method": "elicitation/create", "params": params}),
            )
            .await;
        serde_json::from_str(&reply.text()).unwrap_or_else(|_| json!({"text": reply.text()}))
    })
}

/// The pending elicitations, once there are `n` (bounded wait).
async fn pending(gw: &TestGateway, n: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let list = gw.json("/api/elicitations").await["elicitations"]
            .as_array()
            .unwrap()
            .clone();
        if list.len() == n {
            return list;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "wanted {n} pending, have {list:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn answer(gw: &TestGateway, id: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(gw.url(&format!("/api/elicitations/{id}")))
        .bearer_auth(&gw.token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_client_without_elicitation_gets_switchboards_form_and_the_answer_reaches_the_server() {
    let gw = gateway(60_000).await;
    let mut events = gw.events().await;
    let call = ask(session_with(&gw, json!({})).await, form());
    let shown = pending(&gw, 1).await.remove(0);
    assert_eq!(shown["server"], "fx");
    assert_eq!(shown["client"], "tests");
    assert_eq!(shown["message"], "Who are you?");
    assert_eq!(shown["mode"], "form");
    assert_eq!(shown["requested_schema"], form()["requestedSchema"]);
    let deadline = chrono::DateTime::parse_from_rfc3339(shown["deadline"].as_str().unwrap())
        .unwrap()
        - chrono::DateTime::parse_from_rfc3339(shown["created"].as_str().unwrap()).unwrap();
    assert_eq!(deadline.num_seconds(), 60, "the configured bound");
    let id = shown["id"].as_str().unwrap();
    let announced = events.next_named("elicitation_pending").await;
    assert_eq!(announced["elicitation"]["id"], id);

    // bad answers are refused, naming the field; the elicitation stays pending
    for (bad, field) in [
        (
            json!({"action": "accept", "content": {"name": "A"}}),
            "name",
        ),
        (json!({"action": "accept", "content": {}}), "name"),
        (
            json!({"action": "accept", "content": {"name": "Ada", "age": 1.5}}),
            "age",
        ),
        (
            json!({"action": "accept", "content": {"name": "Ada", "size": "Small"}}),
            "size",
        ),
        (
            json!({"action": "accept", "content": {"name": "Ada", "tags": ["z"]}}),
            "tags",
        ),
        (
            json!({"action": "accept", "content": {"name": "Ada", "spy": 1}}),
            "spy",
        ),
    ] {
        let (status, body) = answer(&gw, id, bad.clone()).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["error"]["code"], "invalid_answer", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(&format!("{field:?}")), "{bad}: {message}");
    }
    let (status, body) = answer(&gw, id, json!({"action": "maybe"})).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(pending(&gw, 1).await[0]["id"], id, "nothing lost");

    let content = json!({"name": "Ada", "age": 36, "size": "l", "tags": ["a", "b"], "ok": false});
    let (status, body) = answer(&gw, id, json!({"action": "accept", "content": content})).await;
    assert_eq!(status, 200, "{body}");
    let got = tokio::time::timeout(WAIT, call).await.unwrap().unwrap();
    assert_eq!(
        got,
        json!({"result": {"action": "accept", "content": content}})
    );
    let ended = events.next_named("elicitation_ended").await;
    assert_eq!(
        (ended["id"].as_str(), ended["outcome"].as_str()),
        (Some(id), Some("accept"))
    );
    assert!(pending(&gw, 0).await.is_empty());
    let (status, _) = answer(&gw, id, json!({"action": "decline"})).await;
    assert_eq!(status, 404, "answered already");
}

#[tokio::test]
async fn declined_and_cancelled_reach_the_server_over_mcp_streams_and_ws() {
    let gw = gateway(60_000).await;
    // a client that declared sampling but not elicitation: its call has a stream of its own
    let call = ask(session_with(&gw, json!({"sampling": {}})).await, form());
    let id = pending(&gw, 1).await[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(answer(&gw, &id, json!({"action": "decline"})).await.0, 200);
    let got = tokio::time::timeout(WAIT, call).await.unwrap().unwrap();
    assert_eq!(got, json!({"result": {"action": "decline"}}));

    // over /ws, a socket that declared nothing
    let mut ws = ws_socket(&gw).await;
    send_ask(&mut ws, 7, form()).await;
    let id = pending(&gw, 1).await[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(answer(&gw, &id, json!({"action": "cancel"})).await.0, 200);
    let answer = loop {
        let m = crate::ws::recv(&mut ws).await;
        assert_ne!(m["method"], "elicitation/create", "the socket is not asked");
        if m["id"] == 7 {
            break m;
        }
    };
    let got: Value =
        serde_json::from_str(answer["result"]["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(got, json!({"result": {"action": "cancel"}}));
}

#[tokio::test]
async fn url_mode_is_shown_with_its_url_and_accepted_without_content() {
    let gw = gateway(60_000).await;
    let url = json!({"mode": "url", "message": "Sign in", "url": "https://example.com/auth",
                     "elicitationId": "x1"});
    let call = ask(session_with(&gw, json!({})).await, url);
    let shown = pending(&gw, 1).await.remove(0);
    assert_eq!(
        (shown["mode"].as_str(), shown["url"].as_str()),
        (Some("url"), Some("https://example.com/auth"))
    );
    assert!(shown.get("requested_schema").is_none(), "{shown}");
    let id = shown["id"].as_str().unwrap();
    let (status, _) = answer(&gw, id, json!({"action": "accept", "content": {"a": 1}})).await;
    assert_eq!(status, 400, "no content for a URL");
    assert_eq!(answer(&gw, id, json!({"action": "accept"})).await.0, 200);
    let got = tokio::time::timeout(WAIT, call).await.unwrap().unwrap();
    assert_eq!(got, json!({"result": {"action": "accept"}}));
}

#[tokio::test]
async fn an_unanswered_one_ends_in_time_and_the_server_gets_an_error() {
    let gw = gateway(300).await;
    let mut events = gw.events().await;
    let started = std::time::Instant::now();
    let got = tokio::time::timeout(WAIT, ask(session_with(&gw, json!({})).await, form()))
        .await
        .unwrap()
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(got["error"]["code"], -32603, "{got}");
    let message = got["error"]["message"].as_str().unwrap();
    assert!(message.contains("nobody answered"), "{message}");
    let ended = events.next_named("elicitation_ended").await;
    assert_eq!(ended["outcome"], "timeout");
    assert!(pending(&gw, 0).await.is_empty());
}

#[tokio::test]
async fn one_whose_client_went_away_ends_with_it() {
    let gw = gateway(60_000).await;
    let mut events = gw.events().await;
    let ws = {
        let mut ws = ws_socket(&gw).await;
        send_ask(&mut ws, 3, form()).await;
        ws
    };
    let id = pending(&gw, 1).await[0]["id"].as_str().unwrap().to_owned();
    drop(ws);
    let ended = events.next_named("elicitation_ended").await;
    assert_eq!(
        (ended["id"].as_str(), ended["outcome"].as_str()),
        (Some(id.as_str()), Some("gone"))
    );
    assert!(pending(&gw, 0).await.is_empty());
    assert_eq!(answer(&gw, &id, json!({"action": "decline"})).await.0, 404);

    // the same over /mcp: the client drops its request
    let call = ask(session_with(&gw, json!({})).await, form());
    let id = pending(&gw, 1).await[0]["id"].as_str().unwrap().to_owned();
    call.abort();
    let ended = events.next_named("elicitation_ended").await;
    assert_eq!(
        (ended["id"].as_str(), ended["outcome"].as_str()),
        (Some(id.as_str()), Some("gone"))
    );
    // and the server was told: its next request is answered as usual
    let mut mcp = session_with(&gw, json!({})).await;
    assert_eq!(
        mcp.call("fx__echo", json!({"text": "hi"})).await.text(),
        "hi"
    );
}

#[tokio::test]
async fn malformed_elicitations_are_refused_to_the_server_at_once() {
    let gw = gateway(60_000).await;
    let got = tokio::time::timeout(
        WAIT,
        ask(
            session_with(&gw, json!({})).await,
            json!({"message": "x", "requestedSchema": {"type": "object",
                   "properties": {"nested": {"type": "object"}}}}),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(got["error"]["code"], -32602, "{got}");
    assert!(pending(&gw, 0).await.is_empty());
}

/// A `/ws` socket that declared no capabilities.
async fn ws_socket(gw: &TestGateway) -> crate::ws::Ws {
    use futures_util::SinkExt;
    let (mut ws, _) = crate::ws::open(gw, Some(&gw.token), None).await.unwrap();
    let init = crate::ws::rpc(
        &mut ws,
        1,
        "initialize",
        json!({"protocolVersion": "2025-11-25", "capabilities": {},
               "clientInfo": {"name": "elicit-ws", "version": "1"}}),
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

async fn send_ask(ws: &mut crate::ws::Ws, id: u64, params: Value) {
    use futures_util::SinkExt;
    let call = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": "fx__ask",
                   "arguments": {"method": "elicitation/create", "params": params}}});
    ws.send(tokio_tungstenite::tungstenite::Message::text(
        call.to_string(),
    ))
    .await
    .unwrap();
}
