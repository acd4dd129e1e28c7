//! `/mcp`: the aggregated gateway over real stdio servers (the fixture), driven over real HTTP.

use std::time::Duration;

use serde_json::json;

use crate::support::*;

async fn two_fixtures() -> TestGateway {
    TestGateway::with(|c| {
        c.servers = vec![
            fixture_server("fx", &[]),
            fixture_server("fy", &["--name", "fy"]),
        ];
        c.gateway.backoff_initial_ms = 20;
    })
    .await
}

async fn pid_of(mcp: &mut McpHttp, server: &str) -> u32 {
    mcp.call(&format!("{server}__pid"), json!({}))
        .await
        .text()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn tools_of_two_servers_are_listed_namespaced_and_routed() {
    let gw = two_fixtures().await;
    let mut mcp = McpHttp::connect(&gw).await;
    let names = mcp
        .wait_tools("both servers", |n| {
            n.iter().any(|t| t == "fx__echo") && n.iter().any(|t| t == "fy__echo")
        })
        .await;
    assert!(names.contains(&"switchboard__health_snapshot".to_owned()));
    assert!(names.contains(&"switchboard__telemetry_snapshot".to_owned()));
    assert!(names.iter().all(|n| n.len() <= 64));
    assert_eq!(
        mcp.call("fx__echo", json!({"text": "hello"})).await.text(),
        "hello"
    );
    assert_eq!(
        mcp.call("fy__add", json!({"a": 2, "b": 3})).await.text(),
        "5"
    );
    // the two servers are different processes
    assert_ne!(pid_of(&mut mcp, "fx").await, pid_of(&mut mcp, "fy").await);

    let health = mcp.call("switchboard__health_snapshot", json!({})).await;
    let h = &health.result()["structuredContent"];
    assert_eq!(h["servers_running"], 2, "{h}");
    let tele = mcp.call("switchboard__telemetry_snapshot", json!({})).await;
    assert!(
        tele.result()["structuredContent"]["totals"]["requests"]
            .as_u64()
            .unwrap()
            >= 4
    );
}

#[tokio::test]
async fn progress_reaches_the_client_under_its_own_token_before_the_result() {
    let gw = two_fixtures().await;
    let mut mcp = McpHttp::connect(&gw).await;
    mcp.wait_tools("fx", |n| n.iter().any(|t| t == "fx__slow"))
        .await;
    let reply = mcp
        .request(
            "tools/call",
            json!({"name": "fx__slow", "arguments": {"steps": 4, "step_ms": 20},
                   "_meta": {"progressToken": "my-token-7"}}),
        )
        .await;
    let progress = reply.notifications("notifications/progress");
    assert_eq!(progress.len(), 4, "{:?}", reply.messages);
    for (i, p) in progress.iter().enumerate() {
        assert_eq!(p["params"]["progressToken"], "my-token-7");
        assert_eq!(p["params"]["progress"], json!((i + 1) as f64));
        assert_eq!(p["params"]["total"], json!(4.0));
    }
    // nothing after the response
    assert!(reply.messages.last().unwrap().get("result").is_some());
    assert_eq!(reply.text(), "done after 4 steps");
}

#[tokio::test]
async fn a_killed_server_replays_the_safe_call_refuses_the_other_and_comes_back() {
    let gw = two_fixtures().await;
    let mut mcp = McpHttp::connect(&gw).await;
    mcp.wait_tools("fx", |n| n.iter().any(|t| t == "fx__slow"))
        .await;
    let old_pid = pid_of(&mut mcp, "fx").await;

    // same session, own clients, ids that do not clash within the session
    let mut safe = mcp.sibling(&gw, 100);
    let mut unsafe_ = mcp.sibling(&gw, 200);
    let safe_call = tokio::spawn(async move {
        safe.call("fx__slow", json!({"steps": 5, "step_ms": 60}))
            .await
    });
    let unsafe_call = tokio::spawn(async move {
        unsafe_
            .call("fx__slow_write", json!({"steps": 5, "step_ms": 60}))
            .await
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let killed = std::process::Command::new("kill")
        .args(["-9", &old_pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());

    let safe = safe_call.await.unwrap();
    assert_eq!(safe.text(), "done after 5 steps", "{:?}", safe.messages);
    let refused = unsafe_call.await.unwrap();
    assert_eq!(refused.result()["isError"], true);
    let text = refused.text();
    assert!(
        text.contains("crashed") && text.contains("not repeated"),
        "{text}"
    );

    // back, as a new process, and the old one is reaped (no zombie)
    gw.wait_server("fx", "running").await;
    let new_pid = pid_of(&mut mcp, "fx").await;
    assert_ne!(new_pid, old_pid);
    assert_eq!(
        process_state(old_pid),
        None,
        "old server still in the process table"
    );
    let s = gw.server("fx").await;
    assert!(s["restarts"].as_u64().unwrap() >= 1);

    // telemetry says which call was replayed
    tokio::time::sleep(Duration::from_millis(200)).await;
    let lines = std::fs::read_to_string(gw.data_dir.join("telemetry.jsonl")).unwrap();
    let records: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let slow = records
        .iter()
        .find(|r| r["tool_name"] == "fx__slow")
        .unwrap();
    assert_eq!(slow["replay_attempts"], 1);
    assert_eq!(slow["outcome"], "ok");
    assert_eq!(slow["server"], "fx");
    let write = records
        .iter()
        .find(|r| r["tool_name"] == "fx__slow_write")
        .unwrap();
    assert_eq!(write["outcome"], "error");
    assert_eq!(write["replay_attempts"], 0);
    for key in [
        "event",
        "ts_unix_ms",
        "request_id",
        "tool_name",
        "server",
        "latency_ms",
        "replay_attempts",
        "outcome",
        "error_code",
        "error_message",
    ] {
        assert!(
            slow.get(key).is_some(),
            "telemetry line lacks {key}: {slow}"
        );
    }
}

#[tokio::test]
async fn a_server_that_exits_at_once_ends_up_failed_with_the_reason() {
    let gw = TestGateway::with(|c| {
        c.servers = vec![
            fixture_server("ok", &[]),
            fixture_server("dud", &["--exit-immediately"]),
        ];
        // slow enough that the event stream below is open before the third crash (at least
        // 150 + 300 ms with jitter): with 10 ms the dud could fail before anyone listened
        c.gateway.backoff_initial_ms = 300;
        c.gateway.max_crashes = 3;
    })
    .await;
    let mut events = gw.events().await;
    let s = gw.wait_server("dud", "failed").await;
    let reason = s["last_error"].as_str().unwrap();
    assert!(reason.contains("crashed 3 times"), "{reason}");
    assert!(reason.contains("exited with code 1"), "{reason}");
    assert!(
        s["stderr_tail"].to_string().contains("exiting at once"),
        "{s}"
    );
    let failed = loop {
        let ev = events.next_named("server_state").await;
        if ev["state"] == "failed" {
            break ev;
        }
    };
    assert_eq!(failed["server"], "dud");
    // the healthy one is unaffected
    let mut mcp = McpHttp::connect(&gw).await;
    mcp.wait_tools("ok", |n| n.iter().any(|t| t == "ok__echo"))
        .await;
    assert!(
        !mcp.tool_names()
            .await
            .iter()
            .any(|t| t.starts_with("dud__"))
    );
}

#[tokio::test]
async fn bad_input_gets_clear_errors() {
    let gw = TestGateway::with(|c| {
        c.servers = vec![fixture_server("fx", &[])];
        c.gateway.max_body_bytes = 64 * 1024;
    })
    .await;
    let mut mcp = McpHttp::connect(&gw).await;
    mcp.wait_tools("fx", |n| n.iter().any(|t| t == "fx__echo"))
        .await;

    // unknown tool: a JSON-RPC error naming it, and the server never sees it
    let reply = mcp.call("fx__nope", json!({})).await;
    let err = &reply.response()["error"];
    assert!(
        err["message"].as_str().unwrap().contains("fx__nope"),
        "{err}"
    );
    let reply = mcp.call("nobody__echo", json!({})).await;
    assert!(
        reply.response()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("nobody__echo")
    );

    // malformed JSON: 400 and a JSON-RPC parse error
    let r = mcp.post("{this is not json".into()).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], -32700, "{body}");
    assert_eq!(body["id"], serde_json::Value::Null);
    // unknown session
    let mut stranger = McpHttp::new(&gw);
    stranger.session = Some("no-such-session".into());
    let r = stranger.call("fx__echo", json!({"text": "x"})).await;
    assert_eq!(r.status, 404);
    // wrong protocol version header
    let mut odd = McpHttp {
        session: mcp.session.clone(),
        ..McpHttp::new(&gw)
    };
    odd.protocol = "1999-01-01".into();
    let r = odd.call("fx__echo", json!({"text": "x"})).await;
    assert_eq!(r.status, 400);
    // oversized body
    let big = json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
                     "params": {"name": "fx__echo", "arguments": {"text": "x".repeat(200 * 1024)}}});
    let r = mcp.post(big.to_string()).send().await.unwrap();
    assert_eq!(r.status(), 413);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"].as_str().unwrap().contains("65536"),
        "{body}"
    );
    // valid JSON that is not JSON-RPC
    let r = mcp.post("[1, 2, 3]".into()).send().await.unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());
    // and the session still works
    assert_eq!(
        mcp.call("fx__echo", json!({"text": "still here"}))
            .await
            .text(),
        "still here"
    );
}

#[tokio::test]
async fn a_server_writing_garbage_to_stdout_still_works() {
    let gw = TestGateway::with(|c| c.servers = vec![fixture_server("noisy", &["--garbage"])]).await;
    let mut mcp = McpHttp::connect(&gw).await;
    mcp.wait_tools("noisy", |n| n.iter().any(|t| t == "noisy__echo"))
        .await;
    assert_eq!(
        mcp.call("noisy__echo", json!({"text": "clean"}))
            .await
            .text(),
        "clean"
    );
    assert_eq!(gw.server("noisy").await["state"], "running");
}

#[tokio::test]
async fn a_cancelled_call_is_cancelled_upstream() {
    let gw = TestGateway::with(|c| c.servers = vec![fixture_server("fx", &[])]).await;
    let mut mcp = McpHttp::connect(&gw).await;
    mcp.wait_tools("fx", |n| n.iter().any(|t| t == "fx__slow"))
        .await;
    let mut caller = McpHttp {
        session: mcp.session.clone(),
        ..McpHttp::new(&gw)
    };
    let call = tokio::spawn(async move {
        caller
            .send(json!({"jsonrpc": "2.0", "id": 77, "method": "tools/call",
                         "params": {"name": "fx__slow", "arguments": {"steps": 100, "step_ms": 50}}}))
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    mcp.notify(
        "notifications/cancelled",
        json!({"requestId": 77, "reason": "user stopped it"}),
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let tail = gw.server("fx").await["stderr_tail"].to_string();
        if tail.contains("cancelled at step") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "upstream never saw the cancel: {tail}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // the caller is not left hanging
    let _ = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("caller released");
}

#[tokio::test]
async fn resources_and_prompts_pass_through() {
    let gw = two_fixtures().await;
    let mut mcp = McpHttp::connect(&gw).await;
    mcp.wait_tools("both", |n| {
        n.iter().any(|t| t == "fy__echo") && n.iter().any(|t| t == "fx__echo")
    })
    .await;
    let list = mcp.request("resources/list", json!({})).await;
    let uris: Vec<_> = list.result()["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["uri"].clone())
        .collect();
    assert_eq!(
        uris,
        vec![json!("fixture://readme")],
        "one URI, owned by the first server"
    );
    let read = mcp
        .request("resources/read", json!({"uri": "fixture://readme"}))
        .await;
    assert_eq!(
        read.result()["contents"][0]["text"],
        "switchboard-fixture fixture readme"
    );
    let prompts = mcp.request("prompts/list", json!({})).await;
    let names: Vec<_> = prompts.result()["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].clone())
        .collect();
    assert!(names.contains(&json!("fy__greet")), "{names:?}");
    let got = mcp
        .request(
            "prompts/get",
            json!({"name": "fy__greet", "arguments": {"who": "Ada"}}),
        )
        .await;
    assert_eq!(
        got.result()["messages"][0]["content"]["text"],
        "Hello, Ada!"
    );
}

#[tokio::test]
async fn a_tool_list_change_upstream_reaches_tools_list() {
    let gw = TestGateway::with(|c| c.servers = vec![fixture_server("fx", &[])]).await;
    let mut mcp = McpHttp::connect(&gw).await;
    mcp.wait_tools("fx", |n| n.iter().any(|t| t == "fx__add_tool"))
        .await;
    mcp.call("fx__add_tool", json!({"name": "fresh"})).await;
    mcp.wait_tools("the new tool", |n| n.iter().any(|t| t == "fx__fresh"))
        .await;
    assert_eq!(
        mcp.call("fx__fresh", json!({"text": "new"})).await.text(),
        "new"
    );
}

#[tokio::test]
async fn config_file_edits_apply_live_without_dropping_the_session() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    let entry = |name: &str| format!("[[servers]]\nname = \"{name}\"\ncommand = \"{FIXTURE}\"\n");
    std::fs::write(&file, entry("one")).unwrap();
    let loaded = switchboard_core::Config::load(Some(&file)).unwrap();
    let gw = TestGateway::with(move |c| {
        c.servers = loaded.servers.clone();
        c.source = loaded.source.clone();
    })
    .await;
    let mut mcp = McpHttp::connect(&gw).await;
    mcp.wait_tools("one", |n| n.iter().any(|t| t == "one__echo"))
        .await;
    let session = mcp.session.clone();

    std::fs::write(&file, format!("{}{}", entry("one"), entry("two"))).unwrap();
    mcp.wait_tools("two added", |n| n.iter().any(|t| t == "two__echo"))
        .await;
    std::fs::write(&file, entry("two")).unwrap();
    mcp.wait_tools("one removed", |n| !n.iter().any(|t| t.starts_with("one__")))
        .await;
    // a broken edit is ignored: servers keep running
    std::fs::write(&file, "[[servers]]\nname = \"bad name\"\n").unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        mcp.call("two__echo", json!({"text": "same session"}))
            .await
            .text(),
        "same session"
    );
    assert_eq!(mcp.session, session);
}

#[tokio::test]
async fn stopping_the_gateway_stops_every_child() {
    let gw = two_fixtures().await;
    let mut mcp = McpHttp::connect(&gw).await;
    mcp.wait_tools("both", |n| {
        n.iter().any(|t| t == "fy__echo") && n.iter().any(|t| t == "fx__echo")
    })
    .await;
    let pids = [pid_of(&mut mcp, "fx").await, pid_of(&mut mcp, "fy").await];
    gw.stop().await.unwrap();
    for pid in pids {
        assert_eq!(process_state(pid), None, "child {pid} outlived the gateway");
    }
}

#[tokio::test]
async fn metrics_expose_counters_per_server_and_method() {
    let gw = two_fixtures().await;
    let mut mcp = McpHttp::connect(&gw).await;
    mcp.wait_tools("fx", |n| n.iter().any(|t| t == "fx__echo"))
        .await;
    mcp.call("fx__echo", json!({"text": "m"})).await;
    let text = gw
        .get("/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("switchboard_requests_total{server=\"fx\",method=\"tools/call\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("switchboard_server_running{server=\"fy\",state=\"running\"} 1"),
        "{text}"
    );
    assert!(text.contains(
        "switchboard_request_duration_seconds_count{server=\"fx\",method=\"tools/call\"} 1"
    ));
}

pub(crate) async fn wait_stderr(gw: &TestGateway, server: &str, needle: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let tail = gw.server(server).await["stderr_tail"].to_string();
        if tail.contains(needle) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{server} stderr lacks {needle:?}: {tail}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_client_that_disconnects_mid_call_cancels_the_upstream_request() {
    let gw = TestGateway::with(|c| c.servers = vec![fixture_server("fx", &[])]).await;
    let mut mcp = McpHttp::connect(&gw).await;
    mcp.wait_tools("fx", |n| n.iter().any(|t| t == "fx__slow"))
        .await;
    let caller = McpHttp {
        session: mcp.session.clone(),
        next_id: 500,
        ..McpHttp::new(&gw)
    };
    let body = json!({"jsonrpc": "2.0", "id": 501, "method": "tools/call",
                      "params": {"name": "fx__slow", "arguments": {"steps": 100, "step_ms": 50}}});
    let pending = tokio::spawn(async move {
        let resp = caller.post(body.to_string()).send().await.unwrap();
        resp.text().await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    pending.abort(); // the HTTP connection goes away mid-call
    wait_stderr(&gw, "fx", "cancelled at step").await;
}

/// `DELETE /mcp` of `mcp`'s session, as a client ends it.
pub(crate) async fn delete_session(gw: &TestGateway, mcp: &McpHttp) -> reqwest::Response {
    mcp.client
        .delete(&mcp.url)
        .bearer_auth(&gw.token)
        .header("mcp-session-id", mcp.session.clone().unwrap())
        .header("mcp-protocol-version", "2025-11-25")
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn delete_ends_the_session() {
    let gw = TestGateway::with(|c| c.servers = vec![fixture_server("fx", &[])]).await;
    let mut mcp = McpHttp::connect(&gw).await;
    mcp.wait_tools("fx", |n| n.iter().any(|t| t == "fx__echo"))
        .await;
    let r = delete_session(&gw, &mcp).await;
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(mcp.call("fx__echo", json!({"text": "x"})).await.status, 404);
}

#[tokio::test]
async fn delete_of_a_session_answers_200() {
    let gw = TestGateway::start().await;
    let mcp = McpHttp::connect(&gw).await;
    let r = delete_session(&gw, &mcp).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn calls_are_published_as_events_and_stored_for_the_dashboard() {
    let gw = TestGateway::with(|c| c.servers = vec![fixture_server("fx", &[])]).await;
    let mut mcp = McpHttp::connect(&gw).await;
    mcp.wait_tools("fx", |n| n.iter().any(|t| t == "fx__slow"))
        .await;
    let mut events = gw.events().await;
    let reply = mcp
        .request(
            "tools/call",
            json!({"name": "fx__slow", "arguments": {"steps": 3, "step_ms": 10},
                                      "_meta": {"progressToken": 1}}),
        )
        .await;
    assert_eq!(reply.text(), "done after 3 steps");
    let started = events.next_named("call_started").await;
    assert_eq!(started["tool"], "fx__slow");
    assert_eq!(started["server"], "fx");
    assert!(started["session_id"].is_string(), "{started}");
    let call_id = started["call_id"].clone();
    for step in 1..=3 {
        let p = events.next_named("call_progress").await;
        assert_eq!(p["call_id"], call_id);
        assert_eq!(p["progress"], json!(step as f64));
        assert_eq!(p["message"], format!("step {step} of 3"));
    }
    let done = events.next_named("call_finished").await;
    assert_eq!(done["call_id"], call_id);
    assert_eq!(done["outcome"], "ok");

    let db = rusqlite::Connection::open(gw.data_dir.join("registry.db")).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let row: Option<(String, String, String)> = db
            .query_row(
                "SELECT tool_name, server, outcome FROM calls WHERE tool_name = 'fx__slow'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .ok();
        if let Some(row) = row {
            assert_eq!(row, ("fx__slow".into(), "fx".into(), "ok".into()));
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "call never stored");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Calls `tool` (which never answers), bounded well past `timeout`; returns the tool error's
/// text and how long it took.
async fn call_that_times_out(
    mcp: &mut McpHttp,
    tool: &str,
    timeout: Duration,
) -> (String, Duration) {
    let started = tokio::time::Instant::now();
    let reply = tokio::time::timeout(timeout + WAIT, mcp.call(tool, json!({})))
        .await
        .unwrap_or_else(|_| panic!("{tool} was not ended by its {timeout:?} timeout"));
    let took = started.elapsed();
    assert_eq!(reply.result()["isError"], true, "{:?}", reply.messages);
    (reply.text(), took)
}

#[tokio::test]
async fn call_timeout_ms_ends_a_call_that_never_answers_and_the_server_stays_usable() {
    const GATEWAY: Duration = Duration::from_millis(1500);
    const OVERRIDE: Duration = Duration::from_millis(300);
    let gw = TestGateway::with(|c| {
        let mut quick = fixture_server("fq", &[]);
        quick.call_timeout_ms = Some(OVERRIDE.as_millis() as u64);
        c.servers = vec![fixture_server("fx", &[]), quick];
        c.gateway.call_timeout_ms = GATEWAY.as_millis() as u64;
    })
    .await;
    let mut mcp = McpHttp::connect(&gw).await;
    mcp.wait_tools("both servers", |n| {
        n.iter().any(|t| t == "fx__hang") && n.iter().any(|t| t == "fq__hang")
    })
    .await;
    let pids = (pid_of(&mut mcp, "fx").await, pid_of(&mut mcp, "fq").await);

    for (server, timeout) in [("fx", GATEWAY), ("fq", OVERRIDE)] {
        let (text, took) = call_that_times_out(&mut mcp, &format!("{server}__hang"), timeout).await;
        eprintln!("{server}: {text:?} after {took:?}");
        assert!(
            text.contains(&format!("server '{server}'"))
                && text.contains(&format!("{} ms", timeout.as_millis())),
            "{server}: {text}"
        );
        // Ended by its own timeout: not before it, and (for fq) well before the gateway's.
        assert!(
            took >= timeout && took < timeout + Duration::from_millis(1000),
            "{server}: ended after {took:?}, its timeout is {timeout:?}"
        );
        // The server was told to stop the request, and it is still the same, working process.
        wait_stderr(&gw, server, "hung request").await;
        let echo = format!("{server}__echo");
        assert_eq!(
            mcp.call(&echo, json!({"text": "after"})).await.text(),
            "after"
        );
        let s = gw.server(server).await;
        assert_eq!(s["state"], "running", "{s}");
        assert_eq!(s["restarts"], 0, "{s}");
    }
    assert_eq!(
        (pid_of(&mut mcp, "fx").await, pid_of(&mut mcp, "fq").await),
        pids
    );
}
