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
