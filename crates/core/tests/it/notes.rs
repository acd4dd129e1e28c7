//! What servers tell their clients passes on: log messages to the sessions that asked for
//! their level (`logging/setLevel`, which reaches the servers too), with the server named in
//! `logger`; resource and prompt list changes to every session.

use std::time::Duration;

use serde_json::{Value, json};

use crate::mcp::wait_stderr;
use crate::support::*;

async fn gateway() -> TestGateway {
    let gw = TestGateway::with(|c| c.servers = vec![fixture_server("fx", &[])]).await;
    gw.wait_server("fx", "running").await;
    gw
}

/// The session's standalone GET stream, where what is not a call's goes.
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

#[tokio::test]
async fn log_messages_reach_the_sessions_that_asked_at_their_level() {
    let gw = gateway().await;
    let mut asked = McpHttp::connect(&gw).await;
    let mut quiet = McpHttp::connect(&gw).await;
    let mut asked_stream = listen(&gw, &asked).await;
    let mut quiet_stream = listen(&gw, &quiet).await;

    let r = asked
        .request("logging/setLevel", json!({"level": "info"}))
        .await;
    assert!(r.response().get("error").is_none(), "{:?}", r.messages);
    // the server was told too
    assert_eq!(asked.call("fx__log_level", json!({})).await.text(), "info");
    let bad = asked
        .request("logging/setLevel", json!({"level": "loud"}))
        .await;
    assert_eq!(
        bad.response()["error"]["code"],
        -32602,
        "{:?}",
        bad.messages
    );

    // below the level asked: nobody hears it; at it: the session that asked does
    quiet
        .call("fx__log", json!({"level": "debug", "message": "too fine"}))
        .await;
    quiet
        .call(
            "fx__log",
            json!({"level": "warning", "message": "disk low", "logger": "fs"}),
        )
        .await;
    let m = next_method(&mut asked_stream, "notifications/message", WAIT)
        .await
        .expect("the warning reaches the session that asked");
    assert_eq!(m["params"]["level"], "warning", "{m}");
    assert_eq!(m["params"]["data"], "disk low");
    assert_eq!(
        m["params"]["logger"], "fx/fs",
        "the logger names the server"
    );
    assert!(
        next_method(
            &mut quiet_stream,
            "notifications/message",
            Duration::from_millis(500)
        )
        .await
        .is_none(),
        "a session that did not ask hears no log"
    );

    // list changes reach every session
    quiet.call("fx__change_lists", json!({})).await;
    for stream in [&mut asked_stream, &mut quiet_stream] {
        for method in [
            "notifications/resources/list_changed",
            "notifications/prompts/list_changed",
        ] {
            assert!(
                next_method(stream, method, WAIT).await.is_some(),
                "{method}"
            );
        }
    }
}

#[tokio::test]
async fn over_ws_a_socket_that_asked_hears_the_log() {
    let gw = gateway().await;
    let (mut ws, _) = crate::ws::open(&gw, Some(&gw.token), None).await.unwrap();
    crate::ws::initialized(&mut ws).await;
    let r = crate::ws::rpc(&mut ws, 2, "logging/setLevel", json!({"level": "error"})).await;
    assert!(r.get("result").is_some(), "{r}");
    let mut other = McpHttp::connect(&gw).await;
    other
        .call("fx__log", json!({"level": "critical", "message": "boom"}))
        .await;
    let m = loop {
        let m = crate::ws::recv(&mut ws).await;
        if m["method"] == "notifications/message" {
            break m;
        }
    };
    assert_eq!(m["params"]["logger"], "fx", "{m}");
    assert_eq!(m["params"]["data"], "boom");
}

#[tokio::test]
async fn completion_goes_to_the_server_of_its_prompt_or_resource() {
    let gw = TestGateway::with(|c| {
        c.servers = vec![
            fixture_server("fx", &["--resource-host", "a"]),
            fixture_server("gx", &["--resource-host", "b"]),
        ]
    })
    .await;
    gw.wait_server("fx", "running").await;
    gw.wait_server("gx", "running").await;
    let mut mcp = McpHttp::connect(&gw).await;
    let complete =
        |reference: Value| json!({"ref": reference, "argument": {"name": "who", "value": "Al"}});
    // a prompt: to its server, under the server's own name
    let r = mcp
        .request(
            "completion/complete",
            complete(json!({"type": "ref/prompt", "name": "gx__greet"})),
        )
        .await;
    assert_eq!(
        r.result()["completion"]["values"],
        json!(["greet:who=Al"]),
        "{:?}",
        r.messages
    );
    // a resource the gateway saw listed: to the server that listed it
    mcp.request("resources/list", json!({})).await;
    let r = mcp
        .request(
            "completion/complete",
            complete(json!({"type": "ref/resource", "uri": "fixture://b/notes"})),
        )
        .await;
    assert_eq!(
        r.result()["completion"]["values"],
        json!(["fixture://b/notes:who=Al"])
    );
    // one nobody listed, with two servers offering completions: not guessed
    let r = mcp
        .request(
            "completion/complete",
            complete(json!({"type": "ref/resource", "uri": "fixture://c/{x}"})),
        )
        .await;
    let e = &r.response()["error"];
    assert_eq!(e["code"], -32602, "{e}");
    assert!(
        e["message"].as_str().unwrap().contains("cannot tell"),
        "{e}"
    );
    let r = mcp
        .request(
            "completion/complete",
            complete(json!({"type": "ref/prompt", "name": "nope__greet"})),
        )
        .await;
    assert_eq!(r.response()["error"]["code"], -32602);
}

#[tokio::test]
async fn resource_updates_reach_the_subscribed_sessions_only() {
    let gw =
        TestGateway::with(|c| c.servers = vec![fixture_server("fx", &["--resource-host", "a"])])
            .await;
    gw.wait_server("fx", "running").await;
    let mut sub = McpHttp::connect(&gw).await;
    let mut other = McpHttp::connect(&gw).await;
    let mut sub_stream = listen(&gw, &sub).await;
    let mut other_stream = listen(&gw, &other).await;
    sub.request("resources/list", json!({})).await;
    let r = sub
        .request("resources/subscribe", json!({"uri": "fixture://a/notes"}))
        .await;
    assert!(r.response().get("error").is_none(), "{:?}", r.messages);
    // a URI nobody listed (a template's, say) goes to the one server that offers subscriptions,
    // as it would without the gateway (with several, see fidelity.rs)
    let r = sub
        .request(
            "resources/subscribe",
            json!({"uri": "fixture://nobody/listed"}),
        )
        .await;
    assert!(r.response().get("error").is_none(), "{:?}", r.messages);
    wait_stderr(&gw, "fx", "resources/subscribe fixture://nobody/listed").await;

    let touched = other
        .call("fx__touch", json!({"uri": "fixture://a/notes"}))
        .await;
    assert_eq!(touched.text(), "touched", "{:?}", touched.messages);
    let m = next_method(&mut sub_stream, "notifications/resources/updated", WAIT)
        .await
        .expect("the subscribed session hears the update");
    assert_eq!(m["params"]["uri"], "fixture://a/notes");
    assert!(
        next_method(
            &mut other_stream,
            "notifications/resources/updated",
            Duration::from_millis(500)
        )
        .await
        .is_none(),
        "a session that did not subscribe hears nothing"
    );
    // unsubscribed: no more
    sub.request("resources/unsubscribe", json!({"uri": "fixture://a/notes"}))
        .await;
    other
        .call("fx__touch", json!({"uri": "fixture://a/notes"}))
        .await;
    assert!(
        next_method(
            &mut sub_stream,
            "notifications/resources/updated",
            Duration::from_millis(500)
        )
        .await
        .is_none()
    );
}

/// What comes for a session while it has no `GET` stream waits for the next one (bounded);
/// a session has one stream at a time; bad requests get the spec's status codes.
#[tokio::test]
async fn a_sessions_get_stream_is_one_at_a_time_and_gets_what_waited() {
    let gw = gateway().await;
    let mut mcp = McpHttp::connect(&gw).await;
    let r = mcp
        .request("logging/setLevel", json!({"level": "info"}))
        .await;
    assert!(r.response().get("error").is_none(), "{:?}", r.messages);
    // no stream open: the message waits for one
    mcp.call("fx__log", json!({"level": "error", "message": "waited"}))
        .await;
    let waiting = gw.json("/api/sessions").await;
    assert_eq!(waiting["held"]["outboxes"], 1, "{waiting}");
    let mut stream = listen(&gw, &mcp).await;
    let m = next_method(&mut stream, "notifications/message", WAIT)
        .await
        .expect("what waited comes first");
    assert_eq!(m["params"]["data"], "waited", "{m}");

    let get = |accept: &'static str| {
        mcp.client
            .get(&mcp.url)
            .bearer_auth(&gw.token)
            .header("accept", accept)
            .header("mcp-session-id", mcp.session.as_deref().unwrap())
    };
    assert_eq!(get("text/event-stream").send().await.unwrap().status(), 409);
    assert_eq!(get("application/json").send().await.unwrap().status(), 406);
    let post = |ct: &'static str, accept: &'static str, version: &'static str| {
        mcp.client
            .post(&mcp.url)
            .bearer_auth(&gw.token)
            .header("content-type", ct)
            .header("accept", accept)
            .header("mcp-protocol-version", version)
            .header("mcp-session-id", mcp.session.as_deref().unwrap())
            .body(r#"{"jsonrpc":"2.0","id":9,"method":"ping"}"#)
    };
    let ok = "application/json, text/event-stream";
    assert_eq!(
        post("application/json", "application/json", "2025-11-25")
            .send()
            .await
            .unwrap()
            .status(),
        406
    );
    assert_eq!(
        post("text/plain", ok, "2025-11-25")
            .send()
            .await
            .unwrap()
            .status(),
        415
    );
    assert_eq!(
        post("application/json", ok, "1999-01-01")
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        post("application/json", ok, "2025-11-25")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // the stream goes on after the second was refused; DELETE ends it, and the session
    mcp.call("fx__log", json!({"level": "error", "message": "live"}))
        .await;
    let m = next_method(&mut stream, "notifications/message", WAIT)
        .await
        .expect("the open stream still carries the session's messages");
    assert_eq!(m["params"]["data"], "live", "{m}");
    let deleted = mcp
        .client
        .delete(&mcp.url)
        .bearer_auth(&gw.token)
        .header("mcp-session-id", mcp.session.as_deref().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    assert!(
        stream.next_within(WAIT).await.is_none(),
        "the GET stream ends with its session"
    );
    let keys = ["sessions", "outboxes", "asked", "streams", "listeners"];
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let after = gw.json("/api/sessions").await;
        if keys.iter().all(|k| after["held"][k] == 0) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still held: {after}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(mcp.call("fx__echo", json!({"text": "x"})).await.status, 404);
}
