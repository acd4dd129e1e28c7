//! The dashboard: its page served at `/` (embedded, no token), and the API it uses (calls
//! with payloads, statistics, server actions written to the config file, import, pairing
//! codes, clients' open sessions), all behind the token, with typed errors.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{FIXTURE, McpHttp, TestGateway, fixture_server};

fn post(gw: &TestGateway, path: &str, body: Value) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .post(gw.url(path))
        .bearer_auth(&gw.token)
        .json(&body)
}

async fn json_of(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// POSTs `body` to `path`, expects 200, and returns the answer.
async fn accepted(gw: &TestGateway, path: &str, body: Value) -> Value {
    let (status, answer) = json_of(post(gw, path, body).send().await.unwrap()).await;
    assert_eq!(status, 200, "{path}: {answer}");
    answer
}

/// POSTs `body` to `path`, expects the error `code` with `status`, and returns its message.
async fn refused(gw: &TestGateway, path: &str, body: Value, status: u16, code: &str) -> String {
    let (got, body) = json_of(post(gw, path, body).send().await.unwrap()).await;
    assert_eq!(
        (got, body["error"]["code"].as_str()),
        (status, Some(code)),
        "{path}: {body}"
    );
    body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn the_page_is_served_without_a_token_with_types_caching_and_an_app_fallback() {
    let gw = TestGateway::start().await;
    let client = reqwest::Client::new();
    let index = client.get(gw.url("/")).send().await.unwrap();
    assert_eq!(index.status(), 200);
    let h = index.headers().clone();
    assert_eq!(h["content-type"], "text/html; charset=utf-8");
    assert_eq!(h["cache-control"], "no-cache");
    assert!(
        h["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'self'")
    );
    let etag = h["etag"].to_str().unwrap().to_owned();
    let html = index.text().await.unwrap();
    assert!(html.contains("<div id=\"app\""), "{html}");

    // the script the page names, with a JS type and cached for good (hashed name)
    let script = html
        .split("src=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .filter(|s| s.starts_with("/assets/"))
        .unwrap_or_else(|| panic!("no /assets/ script in {html}"))
        .to_owned();
    let js = client.get(gw.url(&script)).send().await.unwrap();
    assert_eq!(js.status(), 200);
    assert_eq!(
        js.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert!(
        js.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("immutable")
    );
    assert!(js.text().await.unwrap().len() > 1000);

    // revalidation
    let again = client
        .get(gw.url("/"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);

    // an app route gets the page; a missing file and unknown API paths stay JSON 404s
    let route = client.get(gw.url("/calls")).send().await.unwrap();
    assert_eq!(route.status(), 200);
    assert!(route.text().await.unwrap().contains("<div id=\"app\""));
    for path in ["/missing.js", "/api/nope", "/assets/none.css"] {
        let r = client.get(gw.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
        let (_, body) = json_of(r).await;
        assert_eq!(body["error"]["code"], "not_found", "{path}");
    }
    // the page is public; the data is not
    let r = client.get(gw.url("/api/calls")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn calls_are_listed_with_client_arguments_result_and_statistics() {
    let gw = TestGateway::with(|c| c.servers = vec![fixture_server("fx", &[])]).await;
    gw.wait_server("fx", "running").await;
    let mut mcp = McpHttp::connect(&gw).await;
    let reply = mcp
        .call("fx__echo", json!({"text": "hello dashboard"}))
        .await;
    assert!(reply.text().contains("hello dashboard"), "{reply:?}");
    let big = "x".repeat(40_000);
    mcp.call("fx__echo", json!({"text": big})).await;

    let (status, calls) = json_of(gw.get("/api/calls").send().await.unwrap()).await;
    assert_eq!(status, 200);
    let recent = calls["recent"].as_array().unwrap();
    assert_eq!(recent.len(), 2, "{calls}");
    let first = &recent[1];
    assert_eq!(first["tool"], "fx__echo");
    assert_eq!(first["server"], "fx");
    assert_eq!(first["client"], "tests");
    assert_eq!(first["outcome"], "ok");
    assert!(first.get("arguments").is_none(), "lists leave payloads out");

    let id = first["call_id"].as_str().unwrap();
    let (status, one) = json_of(gw.get(&format!("/api/calls/{id}")).send().await.unwrap()).await;
    assert_eq!(status, 200);
    assert!(
        one["arguments"]["json"]
            .as_str()
            .unwrap()
            .contains("hello dashboard")
    );
    assert!(
        one["result"]["json"]
            .as_str()
            .unwrap()
            .contains("hello dashboard")
    );
    assert_eq!(one["result"]["truncated"], false);

    let big_id = recent[0]["call_id"].as_str().unwrap();
    let (_, big) = json_of(
        gw.get(&format!("/api/calls/{big_id}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(big["arguments"]["truncated"], true);
    assert!(big["arguments"]["bytes"].as_u64().unwrap() > 40_000);
    assert!(big["arguments"]["json"].as_str().unwrap().len() <= 16 * 1024);

    // filters
    let (_, none) = json_of(gw.get("/api/calls?outcome=error").send().await.unwrap()).await;
    assert_eq!(none["recent"].as_array().unwrap().len(), 0);
    let (_, mine) = json_of(
        gw.get("/api/calls?client=tests&server=fx")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(mine["recent"].as_array().unwrap().len(), 2);

    let (_, stats) = json_of(gw.get("/api/telemetry").send().await.unwrap()).await;
    let echo = stats["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tool"] == "fx__echo")
        .unwrap_or_else(|| panic!("{stats}"));
    assert_eq!(echo["calls"], 2);
    assert_eq!(echo["errors"], 0);
    assert!(echo["p99_ms"].as_u64().unwrap() >= echo["p50_ms"].as_u64().unwrap());

    let (status, missing) = json_of(gw.get("/api/calls/c999999").send().await.unwrap()).await;
    assert_eq!(status, 404);
    assert_eq!(missing["error"]["code"], "no_such_call");
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn a_running_call_shows_its_progress_in_the_api() {
    let gw = TestGateway::with(|c| c.servers = vec![fixture_server("fx", &[])]).await;
    gw.wait_server("fx", "running").await;
    let mut mcp = McpHttp::connect(&gw).await;
    let call = tokio::spawn(async move {
        mcp.request(
            "tools/call",
            json!({"name": "fx__slow", "arguments": {"steps": 20, "step_ms": 100},
                   "_meta": {"progressToken": "p1"}}),
        )
        .await
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let running = loop {
        let (_, calls) = json_of(gw.get("/api/calls").send().await.unwrap()).await;
        if let Some(c) = calls["in_flight"].as_array().and_then(|a| a.first())
            && c["progress"].as_f64().unwrap_or(0.0) >= 2.0
        {
            break c.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no progress: {calls}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(running["outcome"], "running");
    assert_eq!(running["total"], 20.0);
    assert_eq!(running["client"], "tests");
    let reply = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .unwrap()
        .unwrap();
    reply.result();
    let (_, calls) = json_of(gw.get("/api/calls").send().await.unwrap()).await;
    assert!(calls["in_flight"].as_array().unwrap().is_empty());
    assert_eq!(calls["recent"][0]["outcome"], "ok");
    gw.stop().await.unwrap();
}

/// A gateway whose config is a real file (with a comment) holding one fixture server.
async fn with_config_file() -> (TestGateway, tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchboard.toml");
    std::fs::write(
        &path,
        format!("# my servers\n[[servers]]\nname = \"fx\"\ncommand = {FIXTURE:?}\n"),
    )
    .unwrap();
    let loaded = switchboard_core::Config::load(Some(&path)).unwrap();
    let gw = TestGateway::with(move |c| {
        c.servers = loaded.servers.clone();
        c.source = loaded.source.clone();
    })
    .await;
    gw.wait_server("fx", "running").await;
    (gw, dir, path)
}

#[tokio::test]
async fn servers_are_restarted_disabled_enabled_and_added_through_the_config_file() {
    let (gw, _dir, path) = with_config_file().await;
    let before = gw.server("fx").await;

    accepted(&gw, "/api/servers/fx/restart", json!({})).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let s = gw.server("fx").await;
        if s["state"] == "running" && s["generation"].as_u64() > before["generation"].as_u64() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not restarted: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    accepted(&gw, "/api/servers/fx/disable", json!({})).await;
    gw.wait_server("fx", "disabled").await;
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("# my servers"), "comments kept: {text}");
    assert!(text.contains("enabled = false"), "{text}");

    accepted(&gw, "/api/servers/fx/enable", json!({})).await;
    gw.wait_server("fx", "running").await;
    assert!(
        !std::fs::read_to_string(&path)
            .unwrap()
            .contains("enabled = false")
    );

    let (status, body) = json_of(
        post(
            &gw,
            "/api/servers",
            json!({"name": "fy", "command": FIXTURE, "args": []}),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    gw.wait_server("fy", "running").await;
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.contains("name = \"fy\"") && text.contains("# my servers"),
        "{text}"
    );

    // `start` is written like the rest: an on-demand server is listed, idle, not running
    let (status, body) = json_of(
        post(
            &gw,
            "/api/servers",
            json!({"name": "fz", "command": FIXTURE, "start": "on_demand"}),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let fz = gw.wait_server("fz", "idle").await;
    assert_eq!(fz["start"], "on_demand", "{fz}");
    let loaded = switchboard_core::Config::load(Some(&path)).unwrap();
    let fz = loaded.servers.iter().find(|s| s.name == "fz").unwrap();
    assert_eq!(
        fz.start,
        Some(switchboard_core::config::StartMode::OnDemand)
    );

    // errors: a taken name, a bad name, a bad body, an unknown server or action
    for (path, body, status, code, says) in [
        (
            "/api/servers",
            json!({"name": "fy", "command": FIXTURE}),
            422,
            "config_rejected",
            "already exists",
        ),
        (
            "/api/servers",
            json!({"name": "a b", "command": "x"}),
            400,
            "bad_request",
            "",
        ),
        (
            "/api/servers",
            json!({"name": "r", "url": "ftp://example.org"}),
            400,
            "bad_request",
            "must start with http",
        ),
        ("/api/servers", json!({"nme": "x"}), 400, "bad_request", ""),
        (
            "/api/servers",
            json!({"name": "fw", "command": FIXTURE, "start": "sometimes"}),
            400,
            "bad_request",
            "start must be \"always\" or \"on_demand\", not \"sometimes\"",
        ),
        (
            "/api/servers/nope/restart",
            json!({}),
            404,
            "no_such_server",
            "",
        ),
        ("/api/servers/fx/explode", json!({}), 400, "bad_request", ""),
    ] {
        let message = refused(&gw, path, body, status, code).await;
        assert!(message.contains(says), "{path}: {message}");
    }
    // nothing was lost
    assert_eq!(
        switchboard_core::Config::load(Some(&path))
            .unwrap()
            .servers
            .len(),
        3
    );
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn without_a_config_file_server_changes_are_refused_plainly() {
    let gw = TestGateway::with(|c| c.servers = vec![fixture_server("fx", &[])]).await;
    gw.wait_server("fx", "running").await;
    let (status, body) = json_of(
        post(&gw, "/api/servers/fx/disable", json!({}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("no_config_file")),
        "{body}"
    );
    assert_eq!(gw.server("fx").await["state"], "running");
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn servers_are_imported_from_a_claude_desktop_config() {
    let (gw, dir, path) = with_config_file().await;
    let claude = dir.path().join("claude_desktop_config.json");
    std::fs::write(
        &claude,
        json!({"mcpServers": {
            "from claude": {"command": FIXTURE, "args": ["--name", "imported"]},
            // remote entries are imported too; only the old SSE transport is not
            "remote": {"type": "sse", "url": "https://example.org/sse"},
        }})
        .to_string(),
    )
    .unwrap();
    let body = accepted(&gw, "/api/import", json!({"path": claude})).await;
    assert_eq!(body["added"], json!(["from-claude"]));
    assert_eq!(body["skipped"][0]["name"], "remote");
    assert!(
        body["skipped"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("SSE"),
        "{body}"
    );
    gw.wait_server("from-claude", "running").await;
    assert!(
        std::fs::read_to_string(&path)
            .unwrap()
            .contains("from-claude")
    );

    let (status, body) = json_of(
        post(
            &gw,
            "/api/import",
            json!({"path": dir.path().join("missing.json")}),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("import_unreadable")),
        "{body}"
    );
    let not_json = dir.path().join("bad.json");
    std::fs::write(&not_json, "not json").unwrap();
    let (status, body) = json_of(
        post(&gw, "/api/import", json!({"path": not_json}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("import_rejected")),
        "{body}"
    );
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn a_signed_in_page_issues_pairing_codes_and_sees_open_sessions() {
    let gw = TestGateway::start().await;
    let (status, code) = json_of(
        post(&gw, "/api/pair-codes", json!({}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{code}");
    assert_eq!(code["code"].as_str().unwrap().len(), 6);
    assert!(code["expires_in_s"].as_u64().unwrap() > 0);
    let paired = reqwest::Client::new()
        .post(gw.url("/pair"))
        .json(&json!({"code": code["code"], "name": "agent"}))
        .send()
        .await
        .unwrap();
    assert_eq!(paired.status(), 200);
    let token = paired.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();

    let (status, body) = json_of(
        post(&gw, "/api/pair-codes", json!({"role": "nope"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("unknown_role"))
    );
    let anonymous = reqwest::Client::new()
        .post(gw.url("/api/pair-codes"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);

    let mut mcp = McpHttp::new(&gw);
    mcp.token = Some(token);
    let reply = mcp
        .request(
            "initialize",
            json!({"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "agent", "version": "1"}}),
        )
        .await;
    reply.result();
    let session = mcp.session.clone().unwrap();
    let (_, clients) = json_of(gw.get("/api/clients").send().await.unwrap()).await;
    let agent = clients
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "agent")
        .unwrap_or_else(|| panic!("{clients}"));
    assert_eq!(agent["open_sessions"], json!([session]));

    let gone = reqwest::Client::new()
        .delete(gw.url("/api/clients/agent"))
        .bearer_auth(&gw.token)
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 200);
    let (_, clients) = json_of(gw.get("/api/clients").send().await.unwrap()).await;
    assert!(
        clients
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["name"] != "agent")
    );
    gw.stop().await.unwrap();
}
