//! Roles over resources: a role lists and reads only the resources and resource templates of
//! the servers it grants (a pattern matching `<server>__`), on every transport (the `/mcp`
//! fast path, `/mcp` streamed calls, `/ws`), and a refused read never reaches the server.
//! The dashboard's `/api/clients` says what each client's role grants.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::*;

/// fx and fy, each with resources of its own (`fixture://<name>/notes`, a template) besides the
/// shared `fixture://readme`; roles that grant all, fy (and one fx tool), fx's resources only,
/// or nothing.
async fn gateway() -> TestGateway {
    let gw = TestGateway::with(|c| {
        c.servers = vec![
            fixture_server("fx", &["--resource-host", "fx"]),
            fixture_server("fy", &["--resource-host", "fy"]),
        ];
        c.roles = [
            ("default", vec!["*"]),
            ("reader", vec!["fx__echo", "fy__*"]),
            ("fx-docs", vec!["fx__"]),
            ("locked", vec![]),
        ]
        .into_iter()
        .map(|(r, p)| (r.to_owned(), p.into_iter().map(str::to_owned).collect()))
        .collect();
    })
    .await;
    McpHttp::connect(&gw)
        .await
        .wait_tools("fx and fy", |n| {
            n.iter().any(|t| t == "fx__echo") && n.iter().any(|t| t == "fy__echo")
        })
        .await;
    gw
}

/// A client paired with `role`, in an initialized session.
async fn client(gw: &TestGateway, name: &str, role: &str) -> McpHttp {
    let mut c = McpHttp::new(gw);
    c.token = Some(gw.pair_client(name, Some(role)).await);
    c.initialize().await
}

/// How a request reaches the dispatcher on `/mcp`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Path {
    /// Answered in the request's task, as `application/json`.
    Fast,
    /// A progress token needs a stream: answered as `text/event-stream`.
    Rmcp,
}

/// `method` on `/mcp` by `path`: the response, checked to have come that way.
async fn request(c: &mut McpHttp, path: Path, method: &str, mut params: Value) -> Value {
    let id = c.next_id;
    c.next_id += 1;
    if path == Path::Rmcp {
        params["_meta"] = json!({"progressToken": format!("p{id}")});
    }
    let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
    let resp = tokio::time::timeout(WAIT, c.post(body.to_string()).send())
        .await
        .expect("answer in time")
        .expect("POST /mcp");
    let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
    let text = tokio::time::timeout(WAIT, resp.text())
        .await
        .expect("body in time")
        .unwrap();
    match path {
        Path::Fast => {
            assert!(ct.starts_with("application/json"), "{method}: {ct}");
            serde_json::from_str(&text).unwrap()
        }
        Path::Rmcp => {
            assert!(ct.starts_with("text/event-stream"), "{method}: {ct}");
            text.lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
                .find(|m| m["id"] == id)
                .unwrap_or_else(|| panic!("{method}: no response in {text}"))
        }
    }
}

/// The `key` of every item in a list response's `field`.
fn listed(response: &Value, field: &str, key: &str) -> Vec<String> {
    response["result"][field]
        .as_array()
        .unwrap_or_else(|| panic!("no {field} in {response}"))
        .iter()
        .map(|r| r[key].as_str().unwrap().to_owned())
        .collect()
}

async fn uris(c: &mut McpHttp, path: Path) -> Vec<String> {
    listed(
        &request(c, path, "resources/list", json!({})).await,
        "resources",
        "uri",
    )
}

async fn templates(c: &mut McpHttp, path: Path) -> Vec<String> {
    listed(
        &request(c, path, "resources/templates/list", json!({})).await,
        "resourceTemplates",
        "uriTemplate",
    )
}

async fn read(c: &mut McpHttp, path: Path, uri: &str) -> Value {
    request(c, path, "resources/read", json!({"uri": uri})).await
}

/// The server's stderr tail, once it shows `line` (bounded wait).
async fn stderr_once(gw: &TestGateway, server: &str, line: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let tail = gw.server(server).await["stderr_tail"].to_string();
        if tail.contains(line) {
            return tail;
        }
        assert!(
            Instant::now() < deadline,
            "{server} never logged {line:?}: {tail}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn resources_and_templates_are_listed_only_from_the_servers_a_role_grants() {
    let gw = gateway().await;
    let mut admin = McpHttp::connect(&gw).await;
    let mut reader = client(&gw, "reader-bot", "reader").await;
    let mut docs = client(&gw, "docs-bot", "fx-docs").await;
    let mut locked = client(&gw, "locked-bot", "locked").await;
    for path in [Path::Fast, Path::Rmcp] {
        assert_eq!(
            uris(&mut admin, path).await,
            [
                "fixture://readme",
                "fixture://fx/notes",
                "fixture://fy/notes"
            ],
            "{path:?}"
        );
        assert_eq!(
            templates(&mut admin, path).await,
            ["fixture://fx/echo/{text}", "fixture://fy/echo/{text}"],
            "{path:?}"
        );
        // `fx__echo` is one of fx's tools, not all of them: fx's resources are not granted
        assert_eq!(
            uris(&mut reader, path).await,
            ["fixture://readme", "fixture://fy/notes"],
            "{path:?}"
        );
        assert_eq!(
            templates(&mut reader, path).await,
            ["fixture://fy/echo/{text}"],
            "{path:?}"
        );
        // `fx__`: fx's resources and no tool
        assert_eq!(
            uris(&mut docs, path).await,
            ["fixture://readme", "fixture://fx/notes"],
            "{path:?}"
        );
        assert_eq!(
            templates(&mut docs, path).await,
            ["fixture://fx/echo/{text}"],
            "{path:?}"
        );
        assert!(uris(&mut locked, path).await.is_empty(), "{path:?}");
        assert!(templates(&mut locked, path).await.is_empty(), "{path:?}");
    }
    assert!(docs.tool_names().await.is_empty());
}

#[tokio::test]
async fn a_read_of_a_server_the_role_does_not_grant_is_refused_and_never_reaches_it() {
    let gw = gateway().await;
    let mut admin = McpHttp::connect(&gw).await;
    // the gateway learns who lists what
    uris(&mut admin, Path::Fast).await;
    let mut reader = client(&gw, "reader-bot", "reader").await;
    for path in [Path::Fast, Path::Rmcp] {
        let refused = read(&mut reader, path, "fixture://fx/notes").await;
        assert_eq!(refused["error"]["code"], -32003, "{path:?}: {refused}");
        assert_eq!(
            refused["error"]["message"],
            "resource 'fixture://fx/notes' belongs to server 'fx', which role 'reader' does not \
             grant",
            "{path:?}"
        );
        // a URI nobody listed (fx's template) is tried on fy only: not found there
        let unknown = read(&mut reader, path, "fixture://fx/echo/secret").await;
        assert_eq!(unknown["error"]["code"], -32002, "{path:?}: {unknown}");
        // fy's own, listed and through its template
        let notes = read(&mut reader, path, "fixture://fy/notes").await;
        assert_eq!(
            notes["result"]["contents"][0]["text"], "fy notes",
            "{path:?}"
        );
        let echo = read(&mut reader, path, "fixture://fy/echo/hi").await;
        assert_eq!(echo["result"]["contents"][0]["text"], "hi", "{path:?}");
    }
    // fx and fy both list the readme: the reader's comes from fy, the one it is granted
    let readme = read(&mut reader, Path::Fast, "fixture://readme").await;
    assert!(
        readme["result"]["contents"][0]["text"].is_string(),
        "{readme}"
    );
    stderr_once(&gw, "fy", "fixture: read fixture://readme").await;

    let mut locked = client(&gw, "locked-bot", "locked").await;
    let refused = read(&mut locked, Path::Fast, "fixture://fy/notes").await;
    assert_eq!(refused["error"]["code"], -32003, "{refused}");
    let refused = read(&mut locked, Path::Fast, "fixture://fy/echo/x").await;
    assert_eq!(
        refused["error"]["message"], "role 'locked' grants no server's resources",
        "{refused}"
    );

    // everything fx was asked came before the admin's read of its readme: no refused read
    // reached it
    read(&mut admin, Path::Fast, "fixture://readme").await;
    let fx = stderr_once(&gw, "fx", "fixture: read fixture://readme").await;
    assert!(!fx.contains("fixture://fx/notes"), "{fx}");
    assert!(!fx.contains("fixture://fx/echo/secret"), "{fx}");

    // the resource-only role reads fx's
    let mut docs = client(&gw, "docs-bot", "fx-docs").await;
    let notes = read(&mut docs, Path::Rmcp, "fixture://fx/notes").await;
    assert_eq!(notes["result"]["contents"][0]["text"], "fx notes");
}

#[tokio::test]
async fn on_ws_a_role_lists_and_reads_only_the_resources_it_is_granted() {
    let gw = gateway().await;
    let token = gw.pair_client("ws-reader", Some("reader")).await;
    let (mut ws, _) = crate::ws::open(&gw, Some(&token), None).await.unwrap();
    crate::ws::initialized(&mut ws).await;
    let list = crate::ws::rpc(&mut ws, 2, "resources/list", json!({})).await;
    assert_eq!(
        listed(&list, "resources", "uri"),
        ["fixture://readme", "fixture://fy/notes"]
    );
    let list = crate::ws::rpc(&mut ws, 3, "resources/templates/list", json!({})).await;
    assert_eq!(
        listed(&list, "resourceTemplates", "uriTemplate"),
        ["fixture://fy/echo/{text}"]
    );
    // fx's notes were never listed to this client; an admin's listing shows whose they are
    uris(&mut McpHttp::connect(&gw).await, Path::Fast).await;
    let refused = crate::ws::rpc(
        &mut ws,
        4,
        "resources/read",
        json!({"uri": "fixture://fx/notes"}),
    )
    .await;
    assert_eq!(refused["error"]["code"], -32003, "{refused}");
    assert_eq!(
        refused["error"]["message"],
        "resource 'fixture://fx/notes' belongs to server 'fx', which role 'reader' does not grant"
    );
    let ok = crate::ws::rpc(
        &mut ws,
        5,
        "resources/read",
        json!({"uri": "fixture://fy/notes"}),
    )
    .await;
    assert_eq!(ok["result"]["contents"][0]["text"], "fy notes", "{ok}");
}

#[tokio::test]
async fn the_dashboard_shows_what_each_client_s_role_grants() {
    let gw = gateway().await;
    gw.pair_client("reader-bot", Some("reader")).await;
    gw.pair_client("docs-bot", Some("fx-docs")).await;
    let clients: Value = gw.json("/api/clients").await;
    let grants = |name: &str| {
        clients
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {clients}"))["grants"]
            .clone()
    };
    let reader = grants("reader-bot");
    assert_eq!(reader["patterns"], json!(["fx__echo", "fy__*"]));
    assert_eq!(reader["resource_servers"], json!(["fy"]));
    let tools: Vec<&str> = reader["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert!(
        tools.contains(&"fx__echo") && tools.contains(&"fy__add"),
        "{tools:?}"
    );
    assert!(!tools.contains(&"fx__add"), "{tools:?}");
    assert!(
        tools
            .iter()
            .all(|t| *t == "fx__echo" || t.starts_with("fy__"))
    );
    assert_eq!(
        grants("docs-bot"),
        json!({"patterns": ["fx__"], "tools": [], "resource_servers": ["fx"]})
    );
}
