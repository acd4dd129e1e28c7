//! Pairing, tokens, revocation and roles, over real HTTP.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::support::*;

async fn post_pair(
    gw: &TestGateway,
    body: Value,
    header: Option<&str>,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut req = reqwest::Client::new().post(gw.url("/pair"));
    if let Some(code) = header {
        req = req.header("x-pairing-code", code);
    }
    if !body.is_null() {
        req = req.json(&body);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, r.json().await.unwrap(), headers)
}

fn wrong(code: &str) -> String {
    format!("{:06}", (code.parse::<u32>().unwrap() + 1) % 1_000_000)
}

#[tokio::test]
async fn pairing_by_header_and_by_body_returns_a_working_token_once() {
    let gw = TestGateway::start().await;
    let code = gw.code(None).await;
    let (status, body, _) = post_pair(&gw, Value::Null, Some(&code)).await;
    assert_eq!(status, 200, "{body}");
    let token = body["token"].as_str().unwrap();
    assert!(token.starts_with("sb_") && token.len() == 67);
    assert!(
        body["client_config"]["claude_code"]
            .as_str()
            .unwrap()
            .contains(token)
    );
    assert_eq!(
        body["client_config"]["mcp_json"]["mcpServers"]["switchboard"]["headers"]["Authorization"],
        format!("Bearer {token}")
    );
    let r = reqwest::Client::new()
        .get(gw.url("/api/clients"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // the same code again
    let (status, body, _) = post_pair(&gw, json!({"code": code}), None).await;
    assert_eq!(status, 403, "{body}");
    // by JSON body, with a name
    let code = gw.code(None).await;
    let (status, body, _) = post_pair(&gw, json!({"code": code, "name": "cursor"}), None).await;
    assert_eq!(status, 200);
    assert_eq!(body["name"], "cursor");
    assert_eq!(body["role"], "default");
}

#[tokio::test]
async fn wrong_expired_and_brute_forced_codes_are_refused() {
    let gw = TestGateway::with(|c| c.auth.code_ttl_ms = 300).await;
    let code = gw.code(None).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (status, body, _) = post_pair(&gw, json!({"code": code}), None).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (403, json!("expired_code")),
        "{body}"
    );

    // with the default code lifetime: a 300 ms code could expire during the wrong tries (a
    // code that has gone counts no more wrong tries against it)
    let gw = TestGateway::start().await;
    let code = gw.code(None).await;
    for left in (0..5).rev() {
        let (status, body, _) = post_pair(&gw, json!({"code": wrong(&code)}), None).await;
        assert_eq!(status, 403, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains(&format!("{left} attempts left")),
            "{body}"
        );
    }
    // the fifth wrong try cancelled the code: the right one is refused now, as wrong
    let (status, body, _) = post_pair(&gw, json!({"code": code}), None).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (403, json!("wrong_code")),
        "{body}"
    );
    // and the owner's next code works at once
    let code = gw.code(None).await;
    let (status, body, _) = post_pair(&gw, json!({"code": code}), None).await;
    assert_eq!(status, 200, "{body}");

    let (status, body, _) = post_pair(&gw, json!({"nope": 1}), None).await;
    assert_eq!(status, 400, "{body}");
}

/// A local process guessing codes (every local client is 127.0.0.1, like the owner's): it
/// cancels the codes it guesses at, and never keeps the owner's next code from working.
#[tokio::test]
async fn a_local_processs_wrong_codes_do_not_stop_the_owners_next_code() {
    let gw = TestGateway::start().await;
    let mut events = gw.events().await;
    let code = gw.code(None).await;
    for _ in 0..5 {
        let (status, body, _) = post_pair(&gw, json!({"code": wrong(&code)}), None).await;
        assert_eq!(status, 403, "{body}");
    }
    let burned = events.next_named("pairing_codes_burned").await;
    assert_eq!(
        (burned["wrong_tries"].clone(), burned["codes"].clone()),
        (json!(5), json!(1)),
        "{burned}"
    );
    let code = gw.code(None).await;
    let (status, body, _) = post_pair(&gw, json!({"code": code, "name": "owner"}), None).await;
    assert_eq!(status, 200, "the owner's next code works at once: {body}");
    // guessing while no code waits counts against nothing
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for _ in 0..8 {
        let (status, body, _) = post_pair(&gw, json!({"code": "000000"}), None).await;
        assert_eq!(status, 403, "{body}");
    }
    let code = gw.code(None).await;
    let (status, body, _) = post_pair(&gw, json!({"code": code, "name": "owner"}), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["name"], "owner-2");
}

/// A flood of tries (from anyone) is answered 429 with `Retry-After` past ten a second, and
/// the bound lifts when that second is over.
#[tokio::test]
async fn pairing_tries_are_bounded_to_ten_a_second_from_everyone() {
    let gw = TestGateway::start().await;
    // let the gateway's own pairing (at start) leave the window
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // twelve at once (no code waits yet: these tries cancel nothing), so that they land in one
    // window however loaded the machine is
    let tries = (0..12).map(|_| post_pair(&gw, json!({"code": "not-a-code"}), None));
    let answers = futures_util::future::join_all(tries).await;
    let statuses: Vec<_> = answers.iter().map(|(status, _, _)| *status).collect();
    let limited = answers
        .into_iter()
        .find(|(status, _, _)| *status == 429)
        .map(|(_, body, headers)| (body, headers));
    let answered = statuses.iter().filter(|s| **s == 403).count();
    assert!(
        (1..=10).contains(&answered)
            && answered + statuses.iter().filter(|s| **s == 429).count() == 12,
        "{statuses:?}"
    );
    let (body, headers) = limited.expect("a try refused for the rate");
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    assert_eq!(body["retry_after"], 1, "{body}");
    assert_eq!(headers["retry-after"].to_str().unwrap(), "1");
    // the right code is refused too while the bound holds (unchecked), and works after
    let code = gw.code(None).await;
    let (status, _, _) = post_pair(&gw, json!({"code": code}), None).await;
    assert_eq!(status, 429);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, body, _) = post_pair(&gw, json!({"code": code}), None).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn everything_that_reaches_tools_needs_a_token() {
    let gw = TestGateway::with(|c| c.servers = vec![fixture_server("fx", &[])]).await;
    let client = reqwest::Client::new();
    for path in [
        "/api/projects",
        "/api/servers",
        "/api/clients",
        "/api/events",
        "/metrics",
    ] {
        let r = client.get(gw.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path} without a token");
        assert!(r.headers().contains_key("www-authenticate"));
        let r = client
            .get(gw.url(path))
            .bearer_auth("sb_00112233")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{path} with a wrong token");
    }
    let mut anonymous = McpHttp::new(&gw);
    anonymous.token = None;
    let r = anonymous
        .request(
            "initialize",
            json!({"protocolVersion": "2025-11-25", "capabilities": {},
                                      "clientInfo": {"name": "x", "version": "1"}}),
        )
        .await;
    assert_eq!(r.status, 401);
    // health and pairing stay open, and so does registration (intent-engine)
    assert_eq!(
        client
            .get(gw.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let mut ws = gw.ws().await;
    ws.hello().await;
}

#[tokio::test]
async fn unpairing_closes_the_clients_open_streams_and_sessions_at_once() {
    let gw = TestGateway::with(|c| c.servers = vec![fixture_server("fx", &[])]).await;
    let mut events = gw.events().await;
    let victim_token = gw.pair_client("victim", None).await;
    let paired = events.next_named("client_paired").await;
    assert_eq!(
        (paired["name"].clone(), paired["role"].clone()),
        (json!("victim"), json!("default"))
    );
    let mut victim_events = SseClient::open(
        reqwest::Client::new()
            .get(gw.url("/api/events"))
            .bearer_auth(&victim_token),
    )
    .await;
    let mut victim = McpHttp::new(&gw);
    victim.token = Some(victim_token.clone());
    let r = victim
        .request(
            "initialize",
            json!({"protocolVersion": "2025-11-25", "capabilities": {},
                                      "clientInfo": {"name": "v", "version": "1"}}),
        )
        .await;
    assert_eq!(r.status, 200);
    victim.notify("notifications/initialized", json!({})).await;
    let session = victim.session.clone().unwrap();
    // the standalone GET stream of the session stays open until something ends it
    let stream = reqwest::Client::new()
        .get(&victim.url)
        .bearer_auth(&victim_token)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "2025-11-25")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let mut body = stream.bytes_stream();
    let ended = tokio::spawn(async move {
        while let Some(chunk) = body.next().await {
            if chunk.is_err() {
                break;
            }
        }
        Instant::now()
    });
    // another client (the dashboard, say) unpairs it
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t0 = Instant::now();
    let r = reqwest::Client::new()
        .delete(gw.url("/api/clients/victim"))
        .bearer_auth(&gw.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let closed_at = tokio::time::timeout(Duration::from_secs(2), ended)
        .await
        .expect("stream closed")
        .unwrap();
    // Closed by the unpair itself (typically a few ms; no keep-alive, sweep or expiry, which
    // take seconds): the bound leaves room for a loaded machine, speed is not measured here.
    let took = closed_at.saturating_duration_since(t0);
    println!("stream closed {took:?} after the unpair request");
    assert!(
        took < Duration::from_secs(1),
        "stream closed after {took:?}"
    );
    assert!(
        victim_events.ended_within(Duration::from_millis(500)).await,
        "the unpaired client's event stream stayed open"
    );
    assert_eq!(events.next_named("client_unpaired").await["name"], "victim");
    // the token is dead, and the session is gone even for a valid token
    assert_eq!(
        victim.call("fx__echo", json!({"text": "x"})).await.status,
        401
    );
    let mut other = McpHttp {
        session: Some(session),
        ..McpHttp::new(&gw)
    };
    assert_eq!(
        other.call("fx__echo", json!({"text": "x"})).await.status,
        404
    );
    // unpairing twice: not found
    let r = reqwest::Client::new()
        .delete(gw.url("/api/clients/victim"))
        .bearer_auth(&gw.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn a_session_belongs_to_the_client_that_opened_it() {
    let gw = TestGateway::with(|c| c.servers = vec![fixture_server("fx", &[])]).await;
    let owner = McpHttp::connect(&gw).await;
    let thief_token = gw.pair_client("thief", None).await;
    let mut thief = McpHttp {
        session: owner.session.clone(),
        token: Some(thief_token),
        ..McpHttp::new(&gw)
    };
    assert_eq!(
        thief.call("fx__echo", json!({"text": "x"})).await.status,
        404
    );
}

#[tokio::test]
async fn roles_filter_tools_and_refuse_calls_with_the_exact_message() {
    let gw = TestGateway::with(|c| {
        c.servers = vec![fixture_server("fx", &[])];
        c.roles = [
            ("default".to_owned(), vec!["*".to_owned()]),
            (
                "reader".to_owned(),
                vec!["fx__echo".to_owned(), "switchboard__*".to_owned()],
            ),
            ("locked".to_owned(), vec![]),
        ]
        .into_iter()
        .collect();
    })
    .await;
    let mut admin = McpHttp::connect(&gw).await;
    admin
        .wait_tools("fx", |n| n.iter().any(|t| t == "fx__add"))
        .await;

    let mut reader = McpHttp::new(&gw);
    reader.token = Some(gw.pair_client("reader-bot", Some("reader")).await);
    let r = reader
        .request(
            "initialize",
            json!({"protocolVersion": "2025-11-25", "capabilities": {},
                                      "clientInfo": {"name": "r", "version": "1"}}),
        )
        .await;
    assert_eq!(r.status, 200);
    let mut names = reader.tool_names().await;
    names.sort();
    assert_eq!(
        names,
        [
            "fx__echo",
            "switchboard__health_snapshot",
            "switchboard__telemetry_snapshot"
        ]
    );
    let refused = reader.call("fx__add", json!({"a": 1, "b": 2})).await;
    assert_eq!(
        refused.response()["error"]["message"],
        "tool 'fx__add' is not allowed for role 'reader'"
    );
    assert_eq!(
        reader.call("fx__echo", json!({"text": "ok"})).await.text(),
        "ok"
    );
    let prompts = reader.request("prompts/list", json!({})).await;
    assert_eq!(prompts.result()["prompts"], json!([]));

    let mut locked = McpHttp::new(&gw);
    locked.token = Some(gw.pair_client("locked-bot", Some("locked")).await);
    locked
        .request(
            "initialize",
            json!({"protocolVersion": "2025-11-25", "capabilities": {},
                                      "clientInfo": {"name": "l", "version": "1"}}),
        )
        .await;
    assert!(locked.tool_names().await.is_empty());
    assert_eq!(
        locked.request("resources/list", json!({})).await.result()["resources"],
        json!([])
    );
    let refused = locked.call("fx__echo", json!({"text": "x"})).await;
    assert_eq!(
        refused.response()["error"]["message"],
        "tool 'fx__echo' is not allowed for role 'locked'"
    );
    // refused calls never reached the server
    let lines = std::fs::read_to_string(gw.data_dir.join("telemetry.jsonl")).unwrap_or_default();
    assert!(
        lines
            .lines()
            .any(|l| l.contains("fx__add") && l.contains("\"server\":\"switchboard\""))
    );
}

#[tokio::test]
async fn a_new_server_is_not_granted_to_a_role_whose_list_does_not_match() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    let roles = "[roles]\ndefault = [\"*\"]\nfx-only = [\"fx__*\"]\n";
    let server = |name: &str| format!("[[servers]]\nname = \"{name}\"\ncommand = \"{FIXTURE}\"\n");
    std::fs::write(&file, format!("{roles}{}", server("fx"))).unwrap();
    let loaded = switchboard_core::Config::load(Some(&file)).unwrap();
    let gw = TestGateway::with(move |c| {
        c.servers = loaded.servers.clone();
        c.roles = loaded.roles.clone();
        c.source = loaded.source.clone();
    })
    .await;
    let mut admin = McpHttp::connect(&gw).await;
    let mut limited = McpHttp::new(&gw);
    limited.token = Some(gw.pair_client("limited", Some("fx-only")).await);
    limited
        .request(
            "initialize",
            json!({"protocolVersion": "2025-11-25", "capabilities": {},
                                      "clientInfo": {"name": "l", "version": "1"}}),
        )
        .await;
    limited
        .wait_tools("fx", |n| n.iter().any(|t| t == "fx__echo"))
        .await;

    // a server added live: the default role sees it, fx-only does not
    std::fs::write(&file, format!("{roles}{}{}", server("fx"), server("gy"))).unwrap();
    admin
        .wait_tools("gy added", |n| n.iter().any(|t| t == "gy__echo"))
        .await;
    let names = limited.tool_names().await;
    assert!(names.iter().all(|n| n.starts_with("fx__")), "{names:?}");
    let refused = limited.call("gy__echo", json!({"text": "x"})).await;
    assert_eq!(
        refused.response()["error"]["message"],
        "tool 'gy__echo' is not allowed for role 'fx-only'"
    );
}
