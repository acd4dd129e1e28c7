//! `/ws`: MCP over WebSocket with the same tools, tokens and roles as `/mcp`.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::support::*;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open(
    gw: &TestGateway,
    header: Option<&str>,
    protocols: Option<&str>,
) -> Result<(Ws, Option<String>), WsError> {
    let mut req = format!("ws://{}/ws", gw.addr).into_client_request()?;
    if let Some(t) = header {
        req.headers_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    if let Some(p) = protocols {
        req.headers_mut()
            .insert("sec-websocket-protocol", p.parse().unwrap());
    }
    let (ws, resp) = tokio_tungstenite::connect_async(req).await?;
    let chosen = resp
        .headers()
        .get("sec-websocket-protocol")
        .map(|v| v.to_str().unwrap().to_owned());
    Ok((ws, chosen))
}

async fn recv(ws: &mut Ws) -> Value {
    loop {
        let frame = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame in time");
        match frame {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).unwrap(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

async fn rpc(ws: &mut Ws, id: u64, method: &str, params: Value) -> Value {
    ws.send(Message::text(
        json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string(),
    ))
    .await
    .unwrap();
    loop {
        let m = recv(ws).await;
        if m["id"] == id {
            return m;
        }
    }
}

async fn initialized(ws: &mut Ws) {
    let init = rpc(
        ws,
        1,
        "initialize",
        json!({"protocolVersion": "2025-11-25", "capabilities": {},
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

async fn gateway() -> TestGateway {
    TestGateway::with(|c| {
        c.servers = vec![fixture_server("fx", &[])];
        c.roles = [
            ("default".to_owned(), vec!["*".to_owned()]),
            ("reader".to_owned(), vec!["fx__echo".to_owned()]),
        ]
        .into_iter()
        .collect();
    })
    .await
}

#[tokio::test]
async fn the_token_works_by_header_and_by_subprotocol() {
    let gw = gateway().await;
    McpHttp::connect(&gw)
        .await
        .wait_tools("fx", |n| n.iter().any(|t| t == "fx__echo"))
        .await;

    let (mut by_header, _) = open(&gw, Some(&gw.token), None).await.unwrap();
    initialized(&mut by_header).await;
    let r = rpc(
        &mut by_header,
        2,
        "tools/call",
        json!({"name": "fx__echo", "arguments": {"text": "header"}}),
    )
    .await;
    assert_eq!(r["result"]["content"][0]["text"], "header", "{r}");

    // browsers: the token as a subprotocol, and `mcp` for the server to echo
    let offered = format!("bearer.{}, mcp", gw.token);
    let (mut by_protocol, chosen) = open(&gw, None, Some(&offered)).await.unwrap();
    assert_eq!(chosen.as_deref(), Some("mcp"), "the token is never echoed");
    initialized(&mut by_protocol).await;
    let tools = rpc(&mut by_protocol, 2, "tools/list", json!({})).await;
    assert!(
        tools["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "fx__echo")
    );
}

#[tokio::test]
async fn no_token_is_401_and_a_plain_get_is_426() {
    let gw = gateway().await;
    match open(&gw, None, None).await {
        Err(WsError::Http(resp)) => assert_eq!(resp.status(), 401),
        other => panic!("expected 401, got {:?}", other.map(|_| ())),
    }
    match open(&gw, Some("sb_wrong"), None).await {
        Err(WsError::Http(resp)) => assert_eq!(resp.status(), 401),
        other => panic!("expected 401, got {:?}", other.map(|_| ())),
    }
    let r = gw.get("/ws").send().await.unwrap();
    assert_eq!(r.status(), 426);
}

#[tokio::test]
async fn roles_apply_and_bad_frames_get_json_rpc_errors() {
    let gw = gateway().await;
    McpHttp::connect(&gw)
        .await
        .wait_tools("fx", |n| n.iter().any(|t| t == "fx__add"))
        .await;
    let reader = gw.pair_client("ws-reader", Some("reader")).await;
    let (mut ws, _) = open(&gw, Some(&reader), None).await.unwrap();
    initialized(&mut ws).await;
    let refused = rpc(
        &mut ws,
        2,
        "tools/call",
        json!({"name": "fx__add", "arguments": {"a": 1, "b": 1}}),
    )
    .await;
    assert_eq!(
        refused["error"]["message"],
        "tool 'fx__add' is not allowed for role 'reader'"
    );

    ws.send(Message::text("{not json")).await.unwrap();
    let e = recv(&mut ws).await;
    assert_eq!(
        (e["id"].clone(), e["error"]["code"].clone()),
        (Value::Null, json!(-32700)),
        "{e}"
    );
    ws.send(Message::text("[1, 2]")).await.unwrap();
    assert_eq!(recv(&mut ws).await["error"]["code"], -32600);
    ws.send(Message::binary(vec![1u8, 2])).await.unwrap();
    assert_eq!(recv(&mut ws).await["error"]["code"], -32600);
    // still usable
    let ok = rpc(
        &mut ws,
        3,
        "tools/call",
        json!({"name": "fx__echo", "arguments": {"text": "fine"}}),
    )
    .await;
    assert_eq!(ok["result"]["content"][0]["text"], "fine");
}

#[tokio::test]
async fn unpairing_closes_the_socket() {
    let gw = gateway().await;
    let victim = gw.pair_client("ws-victim", None).await;
    let (mut ws, _) = open(&gw, Some(&victim), None).await.unwrap();
    initialized(&mut ws).await;
    let r = reqwest::Client::new()
        .delete(gw.url("/api/clients/ws-victim"))
        .bearer_auth(&gw.token)
        .send()
        .await
        .unwrap();
    let t0 = std::time::Instant::now();
    assert_eq!(r.status(), 200);
    let closed = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                None | Some(Err(_)) => return None,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await
    .expect("closed within 2 s");
    assert_eq!(closed, Some(1008));
    let took = t0.elapsed();
    assert!(
        took < Duration::from_millis(100),
        "socket closed {took:?} after the unpair answered"
    );
}
