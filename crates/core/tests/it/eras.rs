//! Both protocol eras, bridged: a server on the 2025-11-25 protocol (the fixture) asks a
//! 2026-07-28 client (stateless requests to `/mcp`) through `input_required` results, and the
//! client's retry with `inputResponses` answers the server's waiting request. Bad retries are
//! refused with -32602 and lose nothing; a retry that never comes is bounded.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

async fn gateway_waiting(input_wait_ms: u64) -> TestGateway {
    let gw = TestGateway::with(|c| {
        c.servers = vec![fixture_server("fx", &[])];
        c.gateway.input_wait_ms = input_wait_ms;
    })
    .await;
    gw.wait_server("fx", "running").await;
    gw
}

/// A 2026-07-28 client over stateless requests, with `capabilities` in every request's
/// `_meta` and its own token.
struct Stateless {
    url: String,
    token: String,
    capabilities: Value,
    next_id: u64,
}

impl Stateless {
    fn new(gw: &TestGateway, token: &str, capabilities: Value) -> Self {
        Self {
            url: gw.url("/mcp"),
            token: token.to_owned(),
            capabilities,
            next_id: 1,
        }
    }

    /// `tools/call` of `tool` with `arguments` and `extra` params (`inputResponses`,
    /// `requestState`); the whole JSON-RPC response.
    async fn call(&mut self, tool: &str, arguments: Value, extra: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let mut params = json!({"name": tool, "arguments": arguments, "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": self.capabilities,
            "io.modelcontextprotocol/clientInfo": {"name": "eras", "version": "1"}}});
        for (k, v) in extra.as_object().unwrap() {
            params[k] = v.clone();
        }
        let body = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params});
        let r = reqwest::Client::new()
            .post(&self.url)
            .bearer_auth(&self.token)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", "tools/call")
            .header("mcp-name", tool)
            .body(body.to_string())
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["id"], id, "the answer is under the request's own id: {v}");
        v
    }

    /// `fx__ask` of `method` with `params`: must come back `input_required` with that one
    /// request; returns (its key, the requestState).
    async fn asked(&mut self, method: &str, params: &Value) -> (String, String) {
        let v = self
            .call(
                "fx__ask",
                json!({"method": method, "params": params}),
                json!({}),
            )
            .await;
        input_required(&v, method, params)
    }
}

/// The one request of an `input_required` answer `v`, checked to be `method` with `params`:
/// (its key, the requestState).
fn input_required(v: &Value, method: &str, params: &Value) -> (String, String) {
    let r = &v["result"];
    assert_eq!(r["resultType"], "input_required", "{v}");
    let requests = r["inputRequests"].as_object().unwrap();
    assert_eq!(requests.len(), 1, "{v}");
    let (key, request) = requests.iter().next().unwrap();
    assert_eq!(request["method"], method, "{v}");
    assert_eq!(
        &request["params"], params,
        "the server's request as it sent it: {v}"
    );
    (key.clone(), r["requestState"].as_str().unwrap().to_owned())
}

/// What the fixture's `ask` said its client answered (from a complete tool result).
fn told(v: &Value) -> Value {
    assert_eq!(v["result"]["resultType"], "complete", "{v}");
    serde_json::from_str(v["result"]["content"][0]["text"].as_str().unwrap()).unwrap()
}

fn elicitation() -> Value {
    json!({"message": "Your name?", "requestedSchema": {"type": "object",
           "properties": {"name": {"type": "string"}}, "required": ["name"]}})
}

fn error_of(v: &Value) -> (i64, String) {
    (
        v["error"]["code"].as_i64().unwrap_or_default(),
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

#[tokio::test]
async fn an_old_servers_requests_reach_a_2026_client_as_input_required_and_its_retry_answers() {
    let gw = gateway_waiting(60_000).await;
    let mut client = Stateless::new(
        &gw,
        &gw.token,
        json!({"elicitation": {}, "sampling": {}, "roots": {}}),
    );

    let (key, state) = client.asked("elicitation/create", &elicitation()).await;
    let accepted = json!({"action": "accept", "content": {"name": "Ada"}});
    let v = client
        .call(
            "fx__ask",
            json!({"method": "elicitation/create", "params": elicitation()}),
            json!({"inputResponses": {&key: accepted}, "requestState": state}),
        )
        .await;
    assert_eq!(told(&v), json!({"result": accepted}));

    let sampling = json!({"messages": [{"role": "user",
        "content": {"type": "text", "text": "hello"}}], "maxTokens": 10});
    let (key, state) = client.asked("sampling/createMessage", &sampling).await;
    let message = json!({"role": "assistant", "content": {"type": "text", "text": "hi"},
                         "model": "m", "stopReason": "endTurn"});
    let v = client
        .call(
            "fx__ask",
            json!({"method": "sampling/createMessage", "params": sampling}),
            json!({"inputResponses": {&key: message}, "requestState": state}),
        )
        .await;
    assert_eq!(told(&v)["result"]["content"]["text"], "hi");

    let (key, state) = client.asked("roots/list", &json!({})).await;
    let roots = json!({"roots": [{"uri": "file:///work", "name": "work"}]});
    let v = client
        .call(
            "fx__ask",
            json!({"method": "roots/list", "params": {}}),
            json!({"inputResponses": {&key: roots}, "requestState": state}),
        )
        .await;
    assert_eq!(told(&v), json!({"result": roots}));

    // a state is good once
    let v = client
        .call(
            "fx__ask",
            json!({"method": "roots/list", "params": {}}),
            json!({"inputResponses": {&key: roots}, "requestState": state}),
        )
        .await;
    let (code, message) = error_of(&v);
    assert_eq!(code, -32602, "{v}");
    assert!(message.contains("unknown requestState"), "{message}");

    // a call that asks nothing is answered as before, in one round
    let v = client
        .call("fx__echo", json!({"text": "one round"}), json!({}))
        .await;
    assert_eq!(v["result"]["content"][0]["text"], "one round", "{v}");
    assert_eq!(v["result"]["resultType"], "complete");
    let held = gw.json("/api/sessions").await["held"].clone();
    assert_eq!(held["calls_awaiting_input"], 0, "{held}");
}

#[tokio::test]
async fn what_a_2026_client_did_not_declare_is_not_asked_and_the_server_hears_why() {
    let gw = gateway_waiting(60_000).await;
    // declares sampling only
    let mut client = Stateless::new(&gw, &gw.token, json!({"sampling": {}}));
    let v = client
        .call(
            "fx__ask",
            json!({"method": "elicitation/create", "params": elicitation()}),
            json!({}),
        )
        .await;
    let got = told(&v);
    assert_eq!(got["error"]["code"], -32601, "{got}");
    assert!(
        got["error"]["message"]
            .as_str()
            .unwrap()
            .contains("declared no capability for \"elicitation/create\""),
        "{got}"
    );
    // a request no 2026-07-28 client can be asked
    let v = client
        .call(
            "fx__ask",
            json!({"method": "tasks/list", "params": {}}),
            json!({}),
        )
        .await;
    let got = told(&v);
    assert_eq!(got["error"]["code"], -32601, "{got}");
    assert!(
        got["error"]["message"]
            .as_str()
            .unwrap()
            .contains("\"tasks/list\""),
        "{got}"
    );
}

#[tokio::test]
async fn bad_retries_get_clear_errors_and_lose_nothing() {
    let gw = gateway_waiting(60_000).await;
    let mut client = Stateless::new(&gw, &gw.token, json!({"elicitation": {}}));
    let ask = json!({"method": "elicitation/create", "params": elicitation()});
    let (key, state) = client.asked("elicitation/create", &elicitation()).await;
    let accepted = json!({"action": "accept", "content": {"name": "Grace"}});

    let refused = |v: &Value, expect: &str| {
        let (code, message) = error_of(v);
        assert_eq!(code, -32602, "{v}");
        assert!(message.contains(expect), "{expect:?} in {message:?}");
    };
    // state that was never given, or not a string, or no state at all
    let v = client
        .call(
            "fx__ask",
            ask.clone(),
            json!({"inputResponses": {&key: accepted}, "requestState": "sbrs_made_up"}),
        )
        .await;
    refused(&v, "unknown requestState");
    let v = client
        .call(
            "fx__ask",
            ask.clone(),
            json!({"inputResponses": {&key: accepted}, "requestState": {"not": "a string"}}),
        )
        .await;
    refused(&v, "requestState must be the string");
    let v = client
        .call(
            "fx__ask",
            ask.clone(),
            json!({"inputResponses": {&key: accepted}}),
        )
        .await;
    refused(&v, "without requestState");
    // the right state with missing, garbage, unasked or ill-shaped answers
    let v = client
        .call("fx__ask", ask.clone(), json!({"requestState": state}))
        .await;
    refused(&v, "carries no inputResponses");
    let v = client
        .call(
            "fx__ask",
            ask.clone(),
            json!({"inputResponses": {}, "requestState": state}),
        )
        .await;
    refused(&v, &format!("no answer for {key:?}"));
    let v = client
        .call(
            "fx__ask",
            ask.clone(),
            json!({"inputResponses": "garbage", "requestState": state}),
        )
        .await;
    refused(&v, "must be an object");
    let v = client
        .call(
            "fx__ask",
            ask.clone(),
            json!({"inputResponses": {&key: accepted, "ask-9": {}}, "requestState": state}),
        )
        .await;
    refused(&v, "\"ask-9\" which were not asked");
    let v = client
        .call(
            "fx__ask",
            ask.clone(),
            json!({"inputResponses": {&key: {"action": 42}}, "requestState": state}),
        )
        .await;
    refused(&v, "is not a elicitation/create result");
    // the state is for the tool it was given for, and for its own client only
    let v = client
        .call(
            "fx__echo",
            json!({"text": "x"}),
            json!({"inputResponses": {&key: accepted}, "requestState": state}),
        )
        .await;
    refused(&v, "belongs to a call of 'fx__ask'");
    let other = gw.pair_client("someone-else", None).await;
    let mut stranger = Stateless::new(&gw, &other, json!({"elicitation": {}}));
    let v = stranger
        .call(
            "fx__ask",
            ask.clone(),
            json!({"inputResponses": {&key: accepted}, "requestState": state}),
        )
        .await;
    refused(&v, "unknown requestState");

    // nothing was lost: the server's request still waits, and a retry that fits answers it
    let held = gw.json("/api/sessions").await["held"].clone();
    assert_eq!(held["calls_awaiting_input"], 1, "{held}");
    let v = client
        .call(
            "fx__ask",
            ask.clone(),
            json!({"inputResponses": {&key: accepted}, "requestState": state}),
        )
        .await;
    assert_eq!(told(&v), json!({"result": accepted}));
}

#[tokio::test]
async fn a_retry_that_never_comes_ends_the_servers_wait_with_an_error() {
    let gw = gateway_waiting(400).await;
    let mut client = Stateless::new(&gw, &gw.token, json!({"elicitation": {}}));
    let (key, state) = client.asked("elicitation/create", &elicitation()).await;
    let held = gw.json("/api/sessions").await["held"].clone();
    assert_eq!(held["calls_awaiting_input"], 1, "{held}");

    // the server hears, within the bound, that no answer is coming
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let answers = loop {
        let v = client.call("fx__answers", json!({}), json!({})).await;
        let answers: Value =
            serde_json::from_str(v["result"]["content"][0]["text"].as_str().unwrap()).unwrap();
        if !answers.as_array().unwrap().is_empty() {
            break answers;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server's request is still waiting"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let error = &answers[0]["error"];
    assert_eq!(error["code"], -32603, "{answers}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("did not retry with the answer within 0.4 s"),
        "{answers}"
    );
    // the late retry is refused, and nothing is held for it
    let v = client
        .call(
            "fx__ask",
            json!({"method": "elicitation/create", "params": elicitation()}),
            json!({"inputResponses": {&key: {"action": "decline"}}, "requestState": state}),
        )
        .await;
    assert_eq!(error_of(&v).0, -32602, "{v}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let held = gw.json("/api/sessions").await["held"].clone();
        if held["calls_awaiting_input"] == 0 && held["upstream_pending"] == 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{held}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---- The other direction: a 2026-07-28 server's input_required towards older clients ----

/// A gateway with the fixture speaking 2026-07-28 (`--modern`) as `mx`; `tune` adjusts more.
async fn modern_gateway(tune: impl FnOnce(&mut switchboard_core::Config)) -> TestGateway {
    let gw = TestGateway::with(|c| {
        c.servers = vec![fixture_server("mx", &["--modern"])];
        tune(c);
    })
    .await;
    gw.wait_server("mx", "running").await;
    gw
}

/// A 2025-11-25 session over `/mcp` whose client declared `capabilities`.
async fn old_session(gw: &TestGateway, capabilities: Value) -> McpHttp {
    let mut mcp = McpHttp::new(gw);
    let init = mcp
        .request(
            "initialize",
            json!({"protocolVersion": "2025-11-25", "capabilities": capabilities,
                   "clientInfo": {"name": "old-era", "version": "1"}}),
        )
        .await;
    assert_eq!(init.result()["serverInfo"]["name"], "switchboard");
    mcp.notify("notifications/initialized", json!({})).await;
    mcp
}

/// An `input_required` result asking `requests` (by key), with `state`.
fn needs(requests: Value, state: &str) -> Value {
    json!({"resultType": "input_required", "inputRequests": requests, "requestState": state})
}

/// Calls `tool` with `args` in `mcp` on a stream, answers each server request arriving on it
/// with `answer(method, params)` (a `result` or `error` member), and returns (the requests
/// seen, the call's final JSON-RPC message).
async fn call_answering(
    mcp: &mut McpHttp,
    tool: &str,
    args: Value,
    answer: impl Fn(&str, &Value) -> Value,
) -> (Vec<Value>, Value) {
    let id = mcp.next_id;
    mcp.next_id += 1;
    let call = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": tool, "arguments": args}});
    let mut stream = SseClient::open(mcp.post(call.to_string())).await;
    let mut seen = Vec::new();
    loop {
        let (_, m) = stream.next().await;
        if m["id"] == id && m.get("method").is_none() {
            return (seen, m);
        }
        let Some(method) = m["method"].as_str() else {
            continue;
        };
        if m.get("id").is_none() {
            continue; // a notification (progress)
        }
        let mut response = json!({"jsonrpc": "2.0", "id": m["id"]});
        for (k, v) in answer(method, &m["params"]).as_object().unwrap() {
            response[k] = v.clone();
        }
        seen.push(m.clone());
        let posted = mcp.post(response.to_string()).send().await.unwrap();
        assert!(posted.status().is_success(), "{}", posted.status());
    }
}

/// What the fixture's `input` said its retry carried (from the call's final message).
fn retried(m: &Value) -> Value {
    let text = m["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("a tool result: {m}"));
    serde_json::from_str(text).unwrap()
}

#[tokio::test]
async fn a_2026_servers_input_required_asks_an_old_session_and_the_gateway_retries() {
    let gw = modern_gateway(|_| {}).await;
    let health: Value = gw
        .get("/api/servers")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mx = health["servers"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == "mx"))
        .cloned()
        .unwrap_or_else(|| health.clone());
    assert_eq!(
        mx["protocol"], "2026-07-28",
        "it answered server/discover: {mx}"
    );

    let mut mcp = old_session(&gw, json!({"elicitation": {}, "sampling": {}, "roots": {}})).await;
    let sampling = json!({"messages": [{"role": "user", "content": {"type": "text", "text": "hi"}}],
                          "maxTokens": 5});
    let result = needs(
        json!({"who": {"method": "elicitation/create", "params": elicitation()},
               "llm": {"method": "sampling/createMessage", "params": sampling},
               "dirs": {"method": "roots/list"}}),
        "sealed-by-the-server",
    );
    let accepted = json!({"action": "accept", "content": {"name": "Ada"}});
    let message = json!({"role": "assistant", "content": {"type": "text", "text": "hello"},
                         "model": "m", "stopReason": "endTurn"});
    let roots = json!({"roots": [{"uri": "file:///work", "name": "work"}]});
    let (seen, last) = call_answering(
        &mut mcp,
        "mx__input",
        json!({"result": result}),
        |method, _| match method {
            "elicitation/create" => json!({"result": accepted}),
            "sampling/createMessage" => json!({"result": message}),
            "roots/list" => json!({"result": roots}),
            other => panic!("asked {other}"),
        },
    )
    .await;
    let methods: Vec<&str> = seen.iter().map(|m| m["method"].as_str().unwrap()).collect();
    assert_eq!(
        methods.len(),
        3,
        "each input request became a request: {seen:?}"
    );
    for m in ["elicitation/create", "sampling/createMessage", "roots/list"] {
        assert!(methods.contains(&m), "{m} asked: {methods:?}");
    }
    let elicit = seen
        .iter()
        .find(|m| m["method"] == "elicitation/create")
        .unwrap();
    assert_eq!(
        elicit["params"]["message"], "Your name?",
        "as the server asked"
    );
    let got = retried(&last);
    assert_eq!(
        got["requestState"], "sealed-by-the-server",
        "the state as it was: {got}"
    );
    assert_eq!(got["inputResponses"]["who"], accepted, "{got}");
    assert_eq!(
        got["inputResponses"]["llm"]["content"]["text"], "hello",
        "{got}"
    );
    assert_eq!(got["inputResponses"]["dirs"], roots, "{got}");
    // every request to a 2026-07-28 server carries the era's _meta
    let meta = &got["meta"];
    assert_eq!(
        meta["io.modelcontextprotocol/protocolVersion"], "2026-07-28",
        "{got}"
    );
    assert!(meta["io.modelcontextprotocol/clientCapabilities"]["elicitation"].is_object());
    assert_eq!(
        meta["io.modelcontextprotocol/clientInfo"]["name"],
        "switchboard"
    );
    // the old client sees no resultType
    assert!(last["result"].get("resultType").is_none(), "{last}");

    // a plain call on the same server is unaffected
    let echo = mcp.call("mx__echo", json!({"text": "plain"})).await;
    assert_eq!(echo.text(), "plain");
}

#[tokio::test]
async fn an_old_ws_client_is_asked_through_sb_requests() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let gw = modern_gateway(|_| {}).await;
    let (mut ws, _) = crate::ws::open(&gw, Some(&gw.token), None).await.unwrap();
    let init = crate::ws::rpc(
        &mut ws,
        1,
        "initialize",
        json!({"protocolVersion": "2025-11-25", "capabilities": {"elicitation": {}},
               "clientInfo": {"name": "ws-old", "version": "1"}}),
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
    let result = needs(
        json!({"who": {"method": "elicitation/create", "params": elicitation()}}),
        "s1",
    );
    ws.send(Message::text(
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
               "params": {"name": "mx__input", "arguments": {"result": result}}})
        .to_string(),
    ))
    .await
    .unwrap();
    let asked = loop {
        let m = crate::ws::recv(&mut ws).await;
        if m["method"] == "elicitation/create" {
            break m;
        }
        assert!(m.get("result").is_none(), "answered without asking: {m}");
    };
    assert!(asked["id"].as_str().unwrap().starts_with("sb-"), "{asked}");
    let declined = json!({"action": "decline"});
    ws.send(Message::text(
        json!({"jsonrpc": "2.0", "id": asked["id"], "result": declined}).to_string(),
    ))
    .await
    .unwrap();
    let done = loop {
        let m = crate::ws::recv(&mut ws).await;
        if m["id"] == 2 {
            break m;
        }
    };
    let got = retried(&done);
    assert_eq!(got["inputResponses"]["who"], declined, "{got}");
    assert_eq!(got["requestState"], "s1", "{got}");
}

#[tokio::test]
async fn a_2026_client_gets_a_2026_servers_input_required_as_it_is_and_its_retry_passes() {
    let gw = modern_gateway(|_| {}).await;
    let mut client = Stateless::new(&gw, &gw.token, json!({"elicitation": {}}));
    let asked = needs(
        json!({"who": {"method": "elicitation/create", "params": elicitation()}}),
        "opaque-1",
    );
    let v = client
        .call("mx__input", json!({"result": asked}), json!({}))
        .await;
    assert_eq!(v["result"], asked, "passed through unchanged: {v}");
    let accepted = json!({"action": "accept", "content": {"name": "Ada"}});
    let v = client
        .call(
            "mx__input",
            json!({"result": asked}),
            json!({"inputResponses": {"who": accepted}, "requestState": "opaque-1"}),
        )
        .await;
    let got = told(&v);
    assert_eq!(
        got["requestState"], "opaque-1",
        "the state untouched: {got}"
    );
    assert_eq!(got["inputResponses"]["who"], accepted, "{got}");
}

#[tokio::test]
async fn malformed_input_required_and_endless_rounds_fail_the_call_saying_why() {
    let gw = modern_gateway(|_| {}).await;
    let mut mcp = old_session(&gw, json!({"elicitation": {}})).await;
    let never = |_: &str, _: &Value| -> Value { panic!("a malformed result asks nobody") };
    for (bad, why) in [
        (
            json!({"resultType": "input_required", "inputRequests": "nope"}),
            "inputRequests is not an object",
        ),
        (
            json!({"resultType": "input_required"}),
            "neither inputRequests nor requestState",
        ),
        (
            needs(json!({"x": {"method": "tools/list"}}), "s"),
            "none of elicitation/create",
        ),
        (
            json!({"resultType": "input_required", "requestState": 7}),
            "requestState is not a string",
        ),
    ] {
        let (_, last) = call_answering(&mut mcp, "mx__input", json!({"result": bad}), never).await;
        let (code, message) = error_of(&last);
        assert_eq!(code, -32603, "{last}");
        assert!(
            message.contains("malformed input_required") && message.contains(why),
            "{message}"
        );
    }

    // a server that is never satisfied: 8 rounds, then the call ends
    let forever = needs(
        json!({"who": {"method": "elicitation/create", "params": elicitation()}}),
        "again",
    );
    let (seen, last) = call_answering(
        &mut mcp,
        "mx__input",
        json!({"result": forever, "forever": true}),
        |_, _| json!({"result": {"action": "decline"}}),
    )
    .await;
    assert_eq!(seen.len(), 8, "asked once per round");
    let (code, message) = error_of(&last);
    assert_eq!(code, -32603, "{last}");
    assert!(message.contains("after 8 rounds"), "{message}");
}

#[tokio::test]
async fn a_client_that_cannot_be_asked_refuses_or_never_answers_is_told_and_bounded() {
    let gw = modern_gateway(|c| c.gateway.call_timeout_ms = 1500).await;
    let asked = needs(
        json!({"who": {"method": "elicitation/create", "params": elicitation()}}),
        "s",
    );
    // declared nothing: the elicitation goes to the person at Switchboard instead; nobody
    // answers it here, so the call ends at its own timeout, saying what went unanswered
    let mut plain = old_session(&gw, json!({})).await;
    let began = std::time::Instant::now();
    let r = plain.call("mx__input", json!({"result": asked})).await;
    let (code, message) = error_of(r.response());
    assert_eq!(code, -32603, "{:?}", r.response());
    assert!(
        message.contains("did not answer") && message.contains("elicitation/create"),
        "{message}"
    );
    assert!(
        began.elapsed() < std::time::Duration::from_secs(10),
        "bounded by the call's 1.5 s timeout, took {:?}",
        began.elapsed()
    );

    // answers with an error
    let mut mcp = old_session(&gw, json!({"elicitation": {}})).await;
    let (_, last) = call_answering(
        &mut mcp,
        "mx__input",
        json!({"result": asked}),
        |_, _| json!({"error": {"code": -1, "message": "user closed the dialog"}}),
    )
    .await;
    let (code, message) = error_of(&last);
    assert_eq!(code, -32603, "{last}");
    assert!(
        message.contains("refused") && message.contains("user closed the dialog"),
        "{message}"
    );

    // never answers: the call's timeout ends it
    let id = mcp.next_id;
    mcp.next_id += 1;
    let call = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": "mx__input", "arguments": {"result": asked}}});
    let started = std::time::Instant::now();
    let mut stream = SseClient::open(mcp.post(call.to_string())).await;
    let last = loop {
        let (_, m) = stream.next().await;
        if m["id"] == id && m.get("method").is_none() {
            break m;
        }
    };
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "bounded: {:?}",
        started.elapsed()
    );
    let text = last.to_string();
    assert!(
        text.contains("time ran out")
            || text.contains("timed out")
            || text.contains("did not answer"),
        "{last}"
    );

    // gone: the session's stream is dropped while it is asked; the gateway goes on
    let id = mcp.next_id;
    mcp.next_id += 1;
    let call = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": "mx__input", "arguments": {"result": asked}}});
    let mut stream = SseClient::open(mcp.post(call.to_string())).await;
    loop {
        let (_, m) = stream.next().await;
        if m["method"] == "elicitation/create" {
            break;
        }
    }
    drop(stream);
    let echo = mcp.call("mx__echo", json!({"text": "still here"})).await;
    assert_eq!(echo.text(), "still here");
}

/// The Python SDK's venv (`SWITCHBOARD_VENV`, else `~/.cache/switchboard/venv`), if it has a
/// python.
fn venv_python() -> Option<String> {
    let venv = std::env::var("SWITCHBOARD_VENV").ok().or_else(|| {
        std::env::var("HOME")
            .ok()
            .map(|h| format!("{h}/.cache/switchboard/venv"))
    })?;
    let python = format!("{venv}/bin/python");
    std::path::Path::new(&python).exists().then_some(python)
}

/// `tests/clients/python/era_server.py`: the official Python SDK's 2026-07-28 server.
fn era_server(python: &str) -> switchboard_core::config::ServerConfig {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/clients/python/era_server.py"
    );
    switchboard_core::config::ServerConfig {
        name: "era".into(),
        command: python.to_owned(),
        args: vec![script.to_owned()],
        enabled: true,
        ..Default::default()
    }
}

#[tokio::test]
async fn the_python_sdks_2026_server_asks_old_clients_and_passes_to_2026_clients() {
    let Some(python) = venv_python() else {
        eprintln!("skipped: no Python SDK venv (set SWITCHBOARD_VENV)");
        return;
    };
    let gw = TestGateway::with(|c| {
        c.servers = vec![era_server(&python)];
        // a Python start on a busy machine can take most of a minute
        c.gateway.start_timeout_ms = 180_000;
    })
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(200);
    loop {
        let s = gw.server("era").await;
        if s["state"] == "running" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "era never ran: {s}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let health: Value = gw
        .get("/api/servers")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let era = health["servers"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == "era"))
        .cloned()
        .unwrap();
    assert_eq!(era["protocol"], "2026-07-28", "{era}");

    // an old session: each kind of request, and two rounds
    let mut mcp = old_session(&gw, json!({"elicitation": {}, "sampling": {}, "roots": {}})).await;
    let answer = |method: &str, _: &Value| match method {
        "elicitation/create" => json!({"result": {"action": "accept", "content": {"name": "Ada"}}}),
        "sampling/createMessage" => json!({"result": {"role": "assistant",
            "content": {"type": "text", "text": "hi Ada"}, "model": "m", "stopReason": "endTurn"}}),
        "roots/list" => json!({"result": {"roots": [{"uri": "file:///work", "name": "w"}]}}),
        other => panic!("asked {other}"),
    };
    for (tool, args, said, asked) in [
        ("era__ask_name", json!({}), "Hello, Ada!", 1),
        (
            "era__ask_model",
            json!({"prompt": "greet"}),
            "the model said: hi Ada",
            1,
        ),
        ("era__ask_roots", json!({}), "roots: file:///work", 1),
        ("era__ask_both", json!({}), "Hello, Ada! / hi Ada", 2),
    ] {
        let (seen, last) = call_answering(&mut mcp, tool, args, answer).await;
        assert_eq!(seen.len(), asked, "{tool}: {seen:?}");
        assert_eq!(last["result"]["content"][0]["text"], said, "{tool}: {last}");
    }
    let (seen, last) = call_answering(&mut mcp, "era__ask_forever", json!({}), answer).await;
    assert_eq!(seen.len(), 8, "bounded rounds");
    assert!(error_of(&last).1.contains("after 8 rounds"), "{last}");

    // a 2026-07-28 client: the server's input_required as it is, its sealed state untouched
    let mut client = Stateless::new(&gw, &gw.token, json!({"elicitation": {}}));
    let v = client.call("era__ask_name", json!({}), json!({})).await;
    assert_eq!(v["result"]["resultType"], "input_required", "{v}");
    let state = v["result"]["requestState"].as_str().unwrap().to_owned();
    assert!(state.starts_with("v1."), "the SDK's sealed state: {state}");
    let v = client
        .call(
            "era__ask_name",
            json!({}),
            json!({"inputResponses": {"name": {"action": "accept", "content": {"name": "Grace"}}},
                   "requestState": state}),
        )
        .await;
    assert_eq!(v["result"]["content"][0]["text"], "Hello, Grace!", "{v}");
    // a forged state is the server's to refuse
    let v = client
        .call(
            "era__ask_name",
            json!({}),
            json!({"inputResponses": {"name": {"action": "decline"}}, "requestState": "v1.forged"}),
        )
        .await;
    assert!(
        v.get("error").is_some() || v["result"]["isError"] == true,
        "{v}"
    );
}
