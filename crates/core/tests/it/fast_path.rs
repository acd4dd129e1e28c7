//! The `/mcp` fast path: plain request/response POSTs answered as JSON in the request's own
//! task, while everything that needs a stream goes to the session layer (or, stateless, rmcp).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::*;

async fn gateway() -> (TestGateway, McpHttp) {
    let gw = TestGateway::with(|c| c.servers = vec![fixture_server("fx", &[])]).await;
    let mut mcp = McpHttp::connect(&gw).await;
    mcp.wait_tools("fx", |n| n.iter().any(|t| t == "fx__slow"))
        .await;
    (gw, mcp)
}

async fn post(mcp: &McpHttp, body: Value) -> (u16, String, Value) {
    let r = mcp.post(body.to_string()).send().await.unwrap();
    let status = r.status().as_u16();
    let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
    let text = r.text().await.unwrap();
    let v = if ct.starts_with("application/json") {
        serde_json::from_str(&text).unwrap()
    } else {
        Value::String(text)
    };
    (status, ct, v)
}

/// Waits (bounded) until the fixture logs that it stopped a cancelled request.
async fn upstream_cancelled(gw: &TestGateway) {
    let deadline = Instant::now() + WAIT;
    loop {
        let tail = gw.server("fx").await["stderr_tail"].to_string();
        if tail.contains("cancelled at step") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "upstream never cancelled: {tail}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn in_session_calls_are_json_and_progress_still_streams() {
    let (_gw, mut mcp) = gateway().await;
    let (status, ct, v) = post(
        &mcp,
        json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call",
               "params": {"name": "fx__echo", "arguments": {"text": "fast"}}}),
    )
    .await;
    assert_eq!((status, ct.as_str()), (200, "application/json"));
    assert_eq!(v["id"], 5);
    assert_eq!(v["result"]["content"][0]["text"], "fast");
    assert!(
        v["result"].get("resultType").is_none(),
        "2025-11-25 has no resultType: {v}"
    );

    // a call that asks for progress needs a stream: answered as SSE, progress first
    let reply = mcp
        .request(
            "tools/call",
            json!({"name": "fx__slow", "arguments": {"steps": 3, "step_ms": 10},
                   "_meta": {"progressToken": "p1"}}),
        )
        .await;
    assert_eq!(reply.notifications("notifications/progress").len(), 3);
    assert_eq!(reply.text(), "done after 3 steps");

    // the built-in tools and their telemetry see fast-path calls too
    let tele = mcp.call("switchboard__telemetry_snapshot", json!({})).await;
    let text = tele.text();
    assert!(text.contains("\"fx\""), "{text}");
}

#[tokio::test]
async fn stateless_2026_requests_are_answered_as_json_and_bad_ones_still_get_rmcp_errors() {
    let (gw, _) = gateway().await;
    let meta = json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                      "io.modelcontextprotocol/clientCapabilities": {},
                      "io.modelcontextprotocol/clientInfo": {"name": "it", "version": "1"}});
    let send = |body: Value, method: &str, name: Option<&str>| {
        let mut r = reqwest::Client::new()
            .post(gw.url("/mcp"))
            .bearer_auth(&gw.token)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2026-07-28")
            .body(body.to_string());
        if !method.is_empty() {
            r = r.header("mcp-method", method);
        }
        if let Some(n) = name {
            r = r.header("mcp-name", n);
        }
        r.send()
    };
    let r = send(
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
            "name": "fx__echo", "arguments": {"text": "stateless"}, "_meta": meta}}),
        "tools/call",
        Some("fx__echo"),
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
    assert!(v["result"]["tools"].as_array().unwrap().len() > 3, "{v}");
    assert_eq!(
        v["result"]["cacheScope"], "private",
        "2026-07-28 cache hints: {v}"
    );
    assert_eq!(v["result"]["ttlMs"], 0);

    // a Mcp-Name that does not match the body: not taken here; rmcp refuses it (400)
    let r = send(
        json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {
            "name": "fx__echo", "arguments": {"text": "x"}, "_meta": meta}}),
        "tools/call",
        Some("fx__add"),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400, "{}", r.text().await.unwrap());
    // no Mcp-Method header at all: the same
    let r = send(
        json!({"jsonrpc": "2.0", "id": 4, "method": "tools/list", "params": {"_meta": meta}}),
        "",
        None,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn notifications_cancelled_stops_a_fast_path_call() {
    let (gw, mcp) = gateway().await;
    let body = json!({"jsonrpc": "2.0", "id": "long", "method": "tools/call",
        "params": {"name": "fx__slow", "arguments": {"steps": 100, "step_ms": 50}}});
    let call = mcp.post(body.to_string()).send();
    let t0 = Instant::now();
    let call = tokio::spawn(call);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let status = mcp
        .post(
            json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                   "params": {"requestId": "long", "reason": "changed my mind"}})
            .to_string(),
        )
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 202);
    let r = tokio::time::timeout(WAIT, call)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], -32800, "{v}");
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "cancelled, not run to the end"
    );
    // the fixture was told too
    upstream_cancelled(&gw).await;
}

#[tokio::test]
async fn a_client_that_goes_away_cancels_its_fast_path_call_upstream() {
    let (gw, mcp) = gateway().await;
    let body = json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
        "params": {"name": "fx__slow", "arguments": {"steps": 100, "step_ms": 50}}});
    let gone = tokio::time::timeout(
        Duration::from_millis(300),
        mcp.post(body.to_string()).send(),
    )
    .await;
    assert!(gone.is_err(), "the call was still running");
    upstream_cancelled(&gw).await;
}
