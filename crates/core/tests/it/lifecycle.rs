//! Nothing stays behind: once a session or call has ended (by `DELETE`, by its transport
//! closing, or by expiry) every structure that held it is empty, as the gateway counts them
//! from the structures themselves (`GET /api/sessions`' `held`).

use std::time::Duration;

use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::mcp::delete_session;
use crate::support::*;
use crate::ws::{initialized, open, rpc};

/// What the gateway holds for sessions and calls now.
async fn held(gw: &TestGateway) -> Value {
    gw.json("/api/sessions").await["held"].clone()
}

/// Waits (bounded) until every count in `held` is zero; panics with the last counts if not.
async fn wait_released(gw: &TestGateway) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let h = held(gw).await;
        let counts = h.as_object().expect("held is an object");
        assert!(counts.len() >= 9, "every structure is counted: {h}");
        if counts.values().all(|v| v == 0) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still held after {WAIT:?}: {h}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn fixture_gateway(idle_ms: u64) -> TestGateway {
    let gw = TestGateway::with(|c| {
        c.servers = vec![fixture_server("fx", &[])];
        c.gateway.session_idle_ms = idle_ms;
    })
    .await;
    gw.wait_server("fx", "running").await;
    gw
}

/// A call with a progress token: it is answered on a stream of its own, and
/// registers the progress token on the server's connection.
async fn slow_call(mcp: &mut McpHttp) {
    let reply = mcp
        .request(
            "tools/call",
            json!({"name": "fx__slow", "arguments": {"steps": 3, "step_ms": 10},
                   "_meta": {"progressToken": "p"}}),
        )
        .await;
    assert_eq!(reply.text(), "done after 3 steps");
}

#[tokio::test]
async fn delete_and_closed_sockets_leave_nothing_held() {
    let gw = fixture_gateway(60_000).await;

    // Streamable HTTP: the session (the gateway's own: rmcp holds none) and its tool list
    // listener, then DELETE
    let mut mcp = McpHttp::connect(&gw).await;
    slow_call(&mut mcp).await;
    assert_eq!(mcp.call("fx__echo", json!({"text": "x"})).await.text(), "x");
    let h = held(&gw).await;
    assert_eq!(
        (&h["sessions"], &h["rmcp_sessions"], &h["listeners"]),
        (&json!(1), &json!(0), &json!(1)),
        "{h}"
    );
    assert_eq!(delete_session(&gw, &mcp).await.status(), 200);
    wait_released(&gw).await;

    // WebSocket closed properly
    let (mut ws, _) = open(&gw, Some(&gw.token), None).await.unwrap();
    initialized(&mut ws).await;
    let r = rpc(
        &mut ws,
        7,
        "tools/call",
        json!({"name": "fx__slow", "arguments": {"steps": 2, "step_ms": 10},
               "_meta": {"progressToken": 7}}),
    )
    .await;
    assert_eq!(r["result"]["content"][0]["text"], "done after 2 steps");
    let h = held(&gw).await;
    assert_eq!(
        (&h["sessions"], &h["listeners"]),
        (&json!(1), &json!(1)),
        "{h}"
    );
    ws.send(Message::Close(None)).await.unwrap();
    drop(ws);
    wait_released(&gw).await;

    // WebSocket abandoned: the TCP connection dropped without a close frame
    let (mut ws, _) = open(&gw, Some(&gw.token), None).await.unwrap();
    initialized(&mut ws).await;
    assert_eq!(held(&gw).await["sessions"], 1);
    drop(ws);
    wait_released(&gw).await;
    assert_eq!(gw.json("/api/sessions").await["expired"], 0, "none expired");
}

#[tokio::test]
async fn an_abandoned_session_expires_and_its_client_gets_404() {
    let gw = fixture_gateway(300).await;
    let mut events = gw.events().await;
    let mut mcp = McpHttp::connect(&gw).await;
    slow_call(&mut mcp).await;
    let sid = mcp.session.clone().unwrap();
    // no DELETE: the client just goes quiet
    let closed = loop {
        let e = events.next_named("session_closed").await;
        if e["session_id"] == sid {
            break e;
        }
    };
    assert_eq!(closed["reason"], "expired", "{closed}");
    wait_released(&gw).await;
    let listed = gw.json("/api/sessions").await;
    assert_eq!(listed["expired"], 1, "{listed}");
    assert_eq!(listed["session_idle_ms"], 300);
    // the spec's answer to a session the server has ended: 404, and the client starts over
    assert_eq!(mcp.call("fx__echo", json!({"text": "x"})).await.status, 404);
    let mut again = McpHttp::connect(&gw).await;
    assert_eq!(
        again.call("fx__echo", json!({"text": "y"})).await.text(),
        "y"
    );
}

#[tokio::test]
async fn an_open_stream_or_a_running_call_keeps_a_session_alive() {
    let gw = fixture_gateway(300).await;
    let mut mcp = McpHttp::connect(&gw).await;
    let sid = mcp.session.clone().unwrap();
    let listed = |v: Value| {
        v["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["session_id"] == sid)
    };

    // a call running for five idle times: the session is busy, not idle
    let reply = mcp
        .request(
            "tools/call",
            json!({"name": "fx__slow", "arguments": {"steps": 10, "step_ms": 150},
                   "_meta": {"progressToken": "long"}}),
        )
        .await;
    assert_eq!(reply.text(), "done after 10 steps");

    // an open GET stream that carries nothing for four idle times
    let stream = SseClient::open(
        mcp.client
            .get(&mcp.url)
            .bearer_auth(&gw.token)
            .header("accept", "text/event-stream")
            .header("mcp-session-id", &sid)
            .header("mcp-protocol-version", "2025-11-25"),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(
        listed(gw.json("/api/sessions").await),
        "alive with its stream open"
    );
    assert_eq!(held(&gw).await["streams"], 1);
    assert_eq!(mcp.call("fx__echo", json!({"text": "x"})).await.text(), "x");

    // the stream closed, the session expires
    drop(stream);
    let deadline = tokio::time::Instant::now() + WAIT;
    while listed(gw.json("/api/sessions").await) {
        assert!(tokio::time::Instant::now() < deadline, "never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_released(&gw).await;
}

#[tokio::test]
async fn paths_below_mcp_are_not_found() {
    let gw = TestGateway::start().await;
    for (path, code) in [
        ("/mcp/", "unknown_path"),
        // a server's own endpoint, of a server that is not configured
        ("/mcp/x", "unknown_server"),
        ("/mcp/servers/fx", "unknown_path"),
    ] {
        let r = reqwest::Client::new()
            .post(gw.url(path))
            .bearer_auth(&gw.token)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{path}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "{body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(path),
            "{body}"
        );
    }
}
