//! Pagination both ways: the gateway follows a server's `nextCursor` for tools, resources,
//! resource templates and prompts (bounded: a repeating cursor, or more pages than allowed, is
//! cut off keeping what was read), and answers its own lists in pages of `gateway.page_size`
//! with opaque cursors on every transport (the `/mcp` fast path, `/mcp` streamed calls, `/ws`),
//! after the caller's role has filtered them; a stale or made-up cursor is a clear -32602.
//! The servers are real fixture processes listing in pages (`--many`, `--page-size`).

use serde_json::{Value, json};

use crate::support::*;
use crate::ws::{Ws, initialized, open, rpc};

/// How a list request reaches the gateway.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Via {
    /// `/mcp`, answered by the fast path (`application/json`).
    Fast,
    /// `/mcp` with a progress token: answered on a stream of its own (`text/event-stream`).
    Streamed,
    Ws,
}

/// A client on one transport.
enum Client {
    Http(McpHttp, Via),
    Ws(Box<Ws>, u64),
}

impl Client {
    async fn open(gw: &TestGateway, via: Via, token: &str) -> Self {
        match via {
            Via::Fast | Via::Streamed => {
                let mut c = McpHttp::new(gw);
                c.token = Some(token.to_owned());
                Self::Http(c.initialize().await, via)
            }
            Via::Ws => {
                let (mut ws, _) = open(gw, Some(token), None).await.unwrap();
                initialized(&mut ws).await;
                Self::Ws(Box::new(ws), 10)
            }
        }
    }

    /// The response to `method` with `params`.
    async fn request(&mut self, method: &str, mut params: Value) -> Value {
        match self {
            Self::Http(c, via) => {
                if *via == Via::Streamed {
                    params["_meta"] = json!({"progressToken": format!("p{}", c.next_id)});
                }
                c.request(method, params).await.response().clone()
            }
            Self::Ws(ws, id) => {
                *id += 1;
                rpc(ws, *id, method, params).await
            }
        }
    }

    /// One page of `method`: its response.
    async fn page(&mut self, method: &str, cursor: Option<&str>) -> Value {
        let params = match cursor {
            Some(c) => json!({"cursor": c}),
            None => json!({}),
        };
        self.request(method, params).await
    }

    /// Every page of `method`: the `key` of each item of `field`, and the pages' sizes. Listed
    /// again from the start if the list changes meanwhile.
    async fn walk(&mut self, method: &str, field: &str, key: &str) -> (Vec<String>, Vec<usize>) {
        let (mut all, mut sizes) = (Vec::new(), Vec::new());
        let mut cursor: Option<String> = None;
        for _ in 0..1000 {
            let r = self.page(method, cursor.as_deref()).await;
            let stale = r["error"]["message"].as_str().unwrap_or_default();
            if stale.starts_with("cursor no longer valid; list again") {
                // the list changed under the walk: as the error says
                (all, sizes, cursor) = (Vec::new(), Vec::new(), None);
                continue;
            }
            let items = r["result"][field]
                .as_array()
                .unwrap_or_else(|| panic!("{method}: no {field} in {r}"));
            sizes.push(items.len());
            all.extend(items.iter().map(|i| i[key].as_str().unwrap().to_owned()));
            match r["result"]["nextCursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return (all, sizes),
            }
        }
        panic!("{method}: the pages never ended");
    }

    async fn tools(&mut self) -> Vec<String> {
        self.walk("tools/list", "tools", "name").await.0
    }
}

/// How many of `tools` are the fixture's own (`echo`, `add`, …), not `--many`'s.
fn own(tools: &[String]) -> usize {
    tools.iter().filter(|t| !t.contains("__many_")).count()
}

/// The sizes of the pages of `n` items, `size` to a page.
fn pages_of(n: usize, size: usize) -> Vec<usize> {
    let mut sizes = vec![size; n / size];
    if !n.is_multiple_of(size) || n == 0 {
        sizes.push(n % size);
    }
    sizes
}

/// Waits (bounded) until walking `tools/list` shows server `server` with `n` tools, or with
/// `n` of `--many`'s if `many`; answers the server's tools.
async fn wait_for_tools(c: &mut Client, server: &str, n: usize, many: bool) -> Vec<String> {
    let prefix = format!("{server}__");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let tools: Vec<String> = c
            .tools()
            .await
            .into_iter()
            .filter(|t| t.starts_with(&prefix))
            .collect();
        let count = if many {
            tools.len() - own(&tools)
        } else {
            tools.len()
        };
        if count == n {
            return tools;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{server}: {} tools, not {n}",
            tools.len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn every_page_of_a_servers_lists_is_read() {
    // 250 extra tools, resources and prompts, 7 to a page: 38 pages of tools
    let gw = TestGateway::with(|c| {
        c.servers = vec![fixture_server(
            "fx",
            &["--many", "250", "--page-size", "7", "--resource-host", "fx"],
        )];
        c.gateway.page_size = 10_000;
    })
    .await;
    let mut c = Client::open(&gw, Via::Fast, &gw.token).await;
    let tools = wait_for_tools(&mut c, "fx", 250, true).await;
    assert!(tools.iter().any(|t| t == "fx__many_0249"), "{tools:?}");
    assert!(own(&tools) >= 12, "{tools:?}");
    assert_eq!(gw.server("fx").await["tools"], tools.len());

    let (uris, _) = c.walk("resources/list", "resources", "uri").await;
    // readme, fx's notes and the many
    assert_eq!(uris.len(), 2 + 250, "{uris:?}");
    assert!(uris.iter().any(|u| u == "fixture://many/249"));
    let (prompts, _) = c.walk("prompts/list", "prompts", "name").await;
    assert_eq!(prompts.len(), 1 + 250);
    assert!(prompts.iter().any(|p| p == "fx__many_0249"));
    let (templates, _) = c
        .walk(
            "resources/templates/list",
            "resourceTemplates",
            "uriTemplate",
        )
        .await;
    assert_eq!(templates, ["fixture://fx/echo/{text}"]);

    // what was listed on a later page works like the rest
    let Client::Http(http, _) = &mut c else {
        unreachable!()
    };
    let r = http.call("fx__many_0249", json!({"text": "last"})).await;
    assert_eq!(r.text(), "last");
    let r = http
        .request("resources/read", json!({"uri": "fixture://many/249"}))
        .await;
    assert_eq!(r.result()["contents"][0]["text"], "many resource 249");
}

#[tokio::test]
async fn a_server_whose_cursor_repeats_or_never_ends_is_cut_off_with_what_was_read() {
    let gw = TestGateway::with(|c| {
        c.servers = vec![
            // its cursor points at the second page again after it: two pages are read
            fixture_server(
                "loop",
                &["--many", "50", "--page-size", "10", "--repeat-cursor"],
            ),
            // 1,100 tools and its own in pages of 10: more than 100 pages
            fixture_server("long", &["--many", "1100", "--page-size", "10"]),
        ];
        c.gateway.page_size = 10_000;
    })
    .await;
    let mut c = Client::open(&gw, Via::Fast, &gw.token).await;
    let looped = wait_for_tools(&mut c, "loop", 20, false).await;
    assert!(looped.iter().any(|t| t == "loop__echo"), "{looped:?}");
    let long = wait_for_tools(&mut c, "long", 1000, false).await;
    // the first 1,000 items of its list: its own tools, then the many up to there
    let last = 1000 - own(&long) - 1;
    assert!(long.contains(&format!("long__many_{last:04}")), "{long:?}");
    assert!(!long.contains(&format!("long__many_{:04}", last + 1)));
    // cut off, not broken: both run and answer
    for server in ["loop", "long"] {
        assert_eq!(gw.server(server).await["state"], "running");
    }
    let Client::Http(http, _) = &mut c else {
        unreachable!()
    };
    assert_eq!(
        http.call("loop__echo", json!({"text": "hi"})).await.text(),
        "hi"
    );
    // the other lists are cut the same way
    let (prompts, _) = c.walk("prompts/list", "prompts", "name").await;
    let from_loop = prompts.iter().filter(|p| p.starts_with("loop__")).count();
    assert_eq!(from_loop, 20, "{prompts:?}");
}

/// fx with 25 extra tools, resources and prompts, in pages of 10 to clients; a role that sees
/// only the many tools, and one that sees nothing. Answers how many tools a client that sees
/// all sees (with the built-in ones).
async fn small_pages() -> (TestGateway, usize) {
    let gw = TestGateway::with(|c| {
        c.servers = vec![fixture_server("fx", &["--many", "25"])];
        c.gateway.page_size = 10;
        c.roles = [
            ("default", vec!["*"]),
            ("many", vec!["fx__many_*"]),
            ("locked", vec![]),
        ]
        .into_iter()
        .map(|(r, p)| (r.to_owned(), p.into_iter().map(str::to_owned).collect()))
        .collect();
    })
    .await;
    let mut c = Client::open(&gw, Via::Fast, &gw.token).await;
    let tools = wait_for_tools(&mut c, "fx", 25, true).await;
    (gw, tools.len() + 2)
}

#[tokio::test]
async fn lists_come_in_pages_on_every_transport() {
    let (gw, total) = small_pages().await;
    for via in [Via::Fast, Via::Streamed, Via::Ws] {
        let mut c = Client::open(&gw, via, &gw.token).await;
        let (tools, sizes) = c.walk("tools/list", "tools", "name").await;
        assert_eq!(sizes, pages_of(total, 10), "{via:?}");
        assert_eq!(tools.len(), total, "{via:?}");
        let unique: std::collections::HashSet<&String> = tools.iter().collect();
        assert_eq!(unique.len(), tools.len(), "{via:?}: no tool twice");
        assert!(tools.iter().any(|t| t == "switchboard__health_snapshot"));

        let (uris, sizes) = c.walk("resources/list", "resources", "uri").await;
        assert_eq!((uris.len(), sizes), (26, vec![10, 10, 6]), "{via:?}");
        let (prompts, sizes) = c.walk("prompts/list", "prompts", "name").await;
        assert_eq!((prompts.len(), sizes), (26, vec![10, 10, 6]), "{via:?}");
        // a short list: one page, no cursor
        let r = c.page("resources/templates/list", None).await;
        assert!(r["result"].get("nextCursor").is_none(), "{via:?}: {r}");
    }
}

#[tokio::test]
async fn a_role_is_filtered_before_its_pages_are_cut() {
    let (gw, _) = small_pages().await;
    let many = gw.pair_client("many", Some("many")).await;
    let locked = gw.pair_client("locked", Some("locked")).await;
    for via in [Via::Fast, Via::Streamed, Via::Ws] {
        let mut c = Client::open(&gw, via, &many).await;
        let (tools, sizes) = c.walk("tools/list", "tools", "name").await;
        assert_eq!(sizes, [10, 10, 5], "{via:?}: {tools:?}");
        assert!(
            tools.iter().all(|t| t.starts_with("fx__many_")),
            "{tools:?}"
        );
        // fx__many_* grants no server's resources
        let (uris, _) = c.walk("resources/list", "resources", "uri").await;
        assert!(uris.is_empty(), "{via:?}: {uris:?}");

        let mut other = Client::open(&gw, via, &locked).await;
        let (tools, sizes) = other.walk("tools/list", "tools", "name").await;
        assert_eq!((tools.len(), sizes), (0, vec![0]), "{via:?}");
        // a cursor given to another role walks another list: refused, not a peek
        let r = c.page("tools/list", None).await;
        let cursor = r["result"]["nextCursor"].as_str().unwrap().to_owned();
        let mut all = Client::open(&gw, via, &gw.token).await;
        let r = all.page("tools/list", Some(&cursor)).await;
        assert_eq!(r["error"]["code"], -32602, "{via:?}: {r}");
    }
}

#[tokio::test]
async fn stale_and_invalid_cursors_are_refused_clearly() {
    let (gw, _) = small_pages().await;
    for via in [Via::Fast, Via::Streamed, Via::Ws] {
        let mut c = Client::open(&gw, via, &gw.token).await;
        let first = c.page("tools/list", None).await;
        let cursor = first["result"]["nextCursor"].as_str().unwrap().to_owned();
        assert!(
            !cursor.contains("tools") && !cursor.contains('/'),
            "opaque: {cursor}"
        );
        // good until the list changes
        let second = c.page("tools/list", Some(&cursor)).await;
        assert!(second.get("error").is_none(), "{via:?}: {second}");

        for bad in ["not a cursor", "00ff", "7b7d"] {
            let r = c.page("tools/list", Some(bad)).await;
            assert_eq!(r["error"]["code"], -32602, "{via:?} {bad}: {r}");
            let message = r["error"]["message"].as_str().unwrap();
            assert!(message.starts_with("invalid cursor"), "{via:?}: {message}");
        }
        // a tools/list cursor is no prompts/list cursor
        let r = c.page("prompts/list", Some(&cursor)).await;
        assert_eq!(r["error"]["code"], -32602, "{via:?}: {r}");
        let message = r["error"]["message"].as_str().unwrap();
        assert!(message.contains("tools/list"), "{via:?}: {message}");
        let r = c.request("tools/list", json!({"cursor": 7})).await;
        assert_eq!(r["error"]["code"], -32602, "{via:?}: {r}");

        // the list changes under the cursor: a new tool
        let new = format!("added_{via:?}").to_lowercase();
        let r = c
            .request(
                "tools/call",
                json!({"name": "fx__add_tool", "arguments": {"name": new}}),
            )
            .await;
        assert!(r.get("error").is_none(), "{r}");
        let exposed = format!("fx__{new}");
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
        while !c.tools().await.contains(&exposed) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{exposed} never came"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let r = c.page("tools/list", Some(&cursor)).await;
        assert_eq!(r["error"]["code"], -32602, "{via:?}: {r}");
        let message = r["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("cursor no longer valid; list again"),
            "{via:?}: {message}"
        );
    }
}
