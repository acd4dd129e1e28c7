//! On-demand servers (`start = "on_demand"`): listed without running (their last listing,
//! kept in SQLite), started by the first call, stopped after their idle time; real fixture
//! processes, looked for in `/proc` by a marker argument of their own.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchboard_core::config::StartMode;

use crate::support::*;

/// An argument no other test's fixture has (`--resource-host` takes any name).
fn marker(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("od-{what}-{}-{nanos}", std::process::id())
}

/// Live (not zombie) processes whose command line holds `marker`.
fn processes_with(marker: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let holds = cmdline
            .split(|b| *b == 0)
            .any(|arg| arg == marker.as_bytes());
        if holds && process_state(pid).is_some_and(|s| s != 'Z') {
            found.push(pid);
        }
    }
    found
}

/// Waits (bounded) until no process holds `marker`.
async fn gone(marker: &str) {
    let deadline = Instant::now() + WAIT;
    while !processes_with(marker).is_empty() {
        assert!(
            Instant::now() < deadline,
            "{:?} still run",
            processes_with(marker)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An on-demand fixture `fx` (running `command`) marked `mark`, stopped after `idle_ms`.
fn on_demand(command: &str, mark: &str, idle_ms: u64) -> switchboard_core::config::ServerConfig {
    let mut s = fixture_server("fx", &["--resource-host", mark]);
    s.command = command.to_owned();
    s.start = Some(StartMode::OnDemand);
    s.idle_stop_ms = Some(idle_ms);
    s
}

/// `tools/call` of `tool` with a progress token.
async fn call_with_progress(mcp: &mut McpHttp, tool: &str, args: Value) -> Reply {
    mcp.request(
        "tools/call",
        json!({"name": tool, "arguments": args, "_meta": {"progressToken": "od-1"}}),
    )
    .await
}

#[tokio::test]
async fn it_is_listed_without_running_and_its_first_call_starts_it() {
    let mark = marker("first");
    let gw = TestGateway::with(|c| c.servers = vec![on_demand(FIXTURE, &mark, 60_000)]).await;
    // no listing yet: it ran once to list (start, list, stop)
    let s = gw.wait_server("fx", "idle").await;
    assert_eq!(s["start"], "on_demand", "{s}");
    assert_eq!(s["pid"], Value::Null, "{s}");
    gone(&mark).await;

    let mut mcp = McpHttp::connect(&gw).await;
    let tools = mcp.tool_names().await;
    assert!(tools.iter().any(|t| t == "fx__echo"), "{tools:?}");
    let prompts = mcp.request("prompts/list", json!({})).await;
    let prompts = prompts.result()["prompts"].as_array().unwrap().clone();
    assert!(
        !prompts.is_empty()
            && prompts
                .iter()
                .all(|p| p["name"].as_str().unwrap().starts_with("fx__"))
    );
    let resources = mcp.request("resources/list", json!({})).await;
    let uris: Vec<&str> = resources.result()["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["uri"].as_str().unwrap())
        .collect();
    assert!(uris.iter().any(|u| u.contains(&mark)), "{uris:?}");
    // listing started nothing
    assert!(processes_with(&mark).is_empty(), "listing started it");
    assert_eq!(gw.server("fx").await["state"], "idle");

    let reply = call_with_progress(&mut mcp, "fx__echo", json!({"text": "woken"})).await;
    assert_eq!(reply.text(), "woken", "{:?}", reply.messages);
    let told: Vec<&str> = reply
        .notifications("notifications/progress")
        .iter()
        .filter_map(|p| p["params"]["message"].as_str())
        .collect();
    assert!(
        told.iter().any(|m| m.starts_with("starting fx (on demand")),
        "{told:?}"
    );
    let s = gw.server("fx").await;
    assert_eq!(s["state"], "running", "{s}");
    let running = processes_with(&mark);
    assert_eq!(running.len(), 1, "{running:?}");
    assert_eq!(s["pid"], json!(running[0]));
    let pid = mcp.call("fx__pid", json!({})).await.text();
    assert_eq!(pid, running[0].to_string());
}

#[tokio::test]
async fn it_stops_after_its_idle_time_and_calls_racing_the_stop_succeed() {
    let mark = marker("idle");
    let gw = TestGateway::with(|c| c.servers = vec![on_demand(FIXTURE, &mark, 300)]).await;
    gw.wait_server("fx", "idle").await;
    gone(&mark).await;
    let mut mcp = McpHttp::connect(&gw).await;

    let first = mcp.call("fx__pid", json!({})).await.text();
    let stopped_at = Instant::now();
    let s = gw.wait_server("fx", "idle").await;
    assert!(
        stopped_at.elapsed() >= Duration::from_millis(250),
        "stopped early: {s}"
    );
    gone(&mark).await;
    // and reaped (it turns idle before its stop has waited for the child)
    let pid: u32 = first.parse().unwrap();
    let deadline = Instant::now() + WAIT;
    while process_state(pid).is_some() {
        assert!(
            Instant::now() < deadline,
            "{pid} is {:?}",
            process_state(pid)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // a resource read wakes it as a call does
    let uri = format!("fixture://{mark}/notes");
    let read = mcp.request("resources/read", json!({"uri": uri})).await;
    assert_eq!(
        read.result()["contents"][0]["uri"],
        uri.as_str(),
        "{:?}",
        read.messages
    );
    assert_eq!(processes_with(&mark).len(), 1);
    gw.wait_server("fx", "idle").await;
    gone(&mark).await;

    // calls around the moment it stops: each one succeeds, whichever side of the stop it
    // lands on
    let mut pids = std::collections::BTreeSet::new();
    for i in 0..24u64 {
        let reply = mcp
            .call("fx__echo", json!({"text": format!("call {i}")}))
            .await;
        assert_eq!(reply.text(), format!("call {i}"), "{:?}", reply.messages);
        pids.insert(mcp.call("fx__pid", json!({})).await.text());
        tokio::time::sleep(Duration::from_millis(280 + (i % 5) * 10)).await;
    }
    assert!(pids.len() >= 2, "it never stopped between calls: {pids:?}");
    gw.wait_server("fx", "idle").await;
    gone(&mark).await;
}

#[tokio::test]
async fn its_listing_outlives_the_gateway_and_it_is_not_started_again_to_list() {
    let mark = marker("kept");
    let dir = tempfile::tempdir().unwrap();
    let server = on_demand(FIXTURE, &mark, 60_000);
    let gw = TestGateway::in_dir(dir.path(), |c| c.servers = vec![server.clone()])
        .await
        .unwrap();
    let s = gw.wait_server("fx", "idle").await;
    assert_eq!(s["generation"], 1, "it ran once to list: {s}");
    gw.stop().await.unwrap();
    gone(&mark).await;

    let gw = TestGateway::in_dir(dir.path(), |c| c.servers = vec![server.clone()])
        .await
        .unwrap();
    let s = gw.wait_server("fx", "idle").await;
    assert_eq!(
        s["generation"], 0,
        "listed from SQLite, not by running it: {s}"
    );
    let mut mcp = McpHttp::connect(&gw).await;
    assert!(mcp.tool_names().await.iter().any(|t| t == "fx__echo"));
    assert!(processes_with(&mark).is_empty());
    assert_eq!(
        mcp.call("fx__echo", json!({"text": "again"})).await.text(),
        "again"
    );
    gw.stop().await.unwrap();
    gone(&mark).await;
}

#[tokio::test]
async fn a_missing_command_is_reported_on_the_first_call_not_waited_on() {
    // a copy of the fixture that is deleted once it has been listed: an uninstalled server
    let mark = marker("missing");
    let bin = tempfile::tempdir().unwrap();
    let command = bin.path().join("fixture-copy");
    std::fs::copy(FIXTURE, &command).unwrap();
    let command = command.to_str().unwrap().to_owned();
    let gw = TestGateway::with(|c| c.servers = vec![on_demand(&command, &mark, 60_000)]).await;
    gw.wait_server("fx", "idle").await;
    std::fs::remove_file(&command).unwrap();

    let mut mcp = McpHttp::connect(&gw).await;
    assert!(mcp.tool_names().await.iter().any(|t| t == "fx__echo"));
    for _ in 0..2 {
        let started = Instant::now();
        let reply = call_with_progress(&mut mcp, "fx__echo", json!({"text": "x"})).await;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(reply.result()["isError"], true, "{:?}", reply.messages);
        let text = reply.text();
        assert!(
            text.starts_with("server 'fx' (on demand) could not be started: cannot start ")
                && text.contains("fixture-copy")
                && text.contains("No such file"),
            "{text}"
        );
    }
    let s = gw.server("fx").await;
    assert_eq!(s["state"], "idle", "{s}");
    assert!(
        s["last_error"].as_str().unwrap().contains("No such file"),
        "{s}"
    );
}

#[tokio::test]
async fn a_server_that_never_listed_says_why_when_called() {
    let gw = TestGateway::with(|c| {
        let mut s = on_demand("/nonexistent/switchboard-od-server", "unused", 60_000);
        s.name = "nope".into();
        c.servers = vec![s];
    })
    .await;
    let mut mcp = McpHttp::connect(&gw).await;
    // its listing run fails (and is retried with backoff, as any start that fails)
    let deadline = Instant::now() + WAIT;
    loop {
        let s = gw.server("nope").await;
        if s["last_error"].is_string() {
            break;
        }
        assert!(Instant::now() < deadline, "{s}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = Instant::now();
    let reply = mcp.call("nope__echo", json!({})).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    let e = &reply.response()["error"];
    let message = e["message"].as_str().unwrap();
    assert!(
        message.starts_with("server 'nope' (on demand) has not listed its tools yet: it is ")
            && message.contains("cannot start \"/nonexistent/switchboard-od-server\""),
        "{message}"
    );
}

#[tokio::test]
async fn default_start_makes_every_server_on_demand() {
    let mark = marker("default");
    let gw = TestGateway::with(|c| {
        c.gateway.default_start = StartMode::OnDemand;
        c.servers = vec![fixture_server("fx", &["--resource-host", &mark])];
    })
    .await;
    let s = gw.wait_server("fx", "idle").await;
    assert_eq!(s["start"], "on_demand");
    gone(&mark).await;
}

#[tokio::test]
async fn a_prompt_asked_of_an_idle_server_over_ws_starts_it_and_says_so() {
    use futures_util::SinkExt;
    let mark = marker("prompt");
    let gw = TestGateway::with(|c| c.servers = vec![on_demand(FIXTURE, &mark, 60_000)]).await;
    gw.wait_server("fx", "idle").await;
    gone(&mark).await;
    let (mut ws, _) = crate::ws::open(&gw, Some(&gw.token), None).await.unwrap();
    crate::ws::initialized(&mut ws).await;
    let get = json!({"jsonrpc": "2.0", "id": 7, "method": "prompts/get",
        "params": {"name": "fx__greet", "arguments": {"who": "x"}, "_meta": {"progressToken": "p-1"}}});
    ws.send(tokio_tungstenite::tungstenite::Message::text(
        get.to_string(),
    ))
    .await
    .unwrap();
    let mut told = Vec::new();
    let answer = loop {
        let m = crate::ws::recv(&mut ws).await;
        if m["id"] == 7 {
            break m;
        }
        if m["method"] == "notifications/progress" {
            assert_eq!(m["params"]["progressToken"], "p-1", "{m}");
            told.push(
                m["params"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            );
        }
    };
    assert_eq!(
        answer["result"]["messages"][0]["content"]["text"], "Hello, x!",
        "{answer}"
    );
    assert!(
        told.iter().any(|m| m.starts_with("starting fx (on demand")),
        "{told:?}"
    );
    assert_eq!(processes_with(&mark).len(), 1);
}

#[tokio::test]
async fn a_subscription_keeps_it_running_until_it_is_given_up() {
    let mark = marker("sub");
    let gw = TestGateway::with(|c| c.servers = vec![on_demand(FIXTURE, &mark, 300)]).await;
    gw.wait_server("fx", "idle").await;
    let mut mcp = McpHttp::connect(&gw).await;
    let uri = format!("fixture://{mark}/notes");
    let sub = mcp
        .request("resources/subscribe", json!({"uri": uri}))
        .await;
    assert!(sub.result().is_object(), "{:?}", sub.messages);
    let pid = gw.server("fx").await["pid"].clone();
    assert!(pid.is_u64(), "the subscription started it: {pid}");
    // well past its idle time: still the same process
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let s = gw.server("fx").await;
    assert_eq!((&s["state"], &s["pid"]), (&json!("running"), &pid), "{s}");

    let unsub = mcp
        .request("resources/unsubscribe", json!({"uri": uri}))
        .await;
    assert!(unsub.result().is_object(), "{:?}", unsub.messages);
    gw.wait_server("fx", "idle").await;
    gone(&mark).await;
}

/// A `logging/setLevel` sent while an on-demand server is idle starts nothing, and the level
/// reaches it when a call starts it, and again when it starts after its idle stop (a new
/// process knows nothing of the last one's level).
#[tokio::test]
async fn a_log_level_set_while_it_is_idle_reaches_it_when_it_starts() {
    let mark = marker("level");
    let gw = TestGateway::with(|c| c.servers = vec![on_demand(FIXTURE, &mark, 300)]).await;
    gw.wait_server("fx", "idle").await;
    gone(&mark).await;
    let mut mcp = McpHttp::connect(&gw).await;
    let r = mcp
        .request("logging/setLevel", json!({"level": "warning"}))
        .await;
    assert!(r.response().get("error").is_none(), "{:?}", r.messages);
    assert!(processes_with(&mark).is_empty(), "setLevel started it");
    assert_eq!(gw.server("fx").await["state"], "idle");

    assert_eq!(mcp.call("fx__log_level", json!({})).await.text(), "warning");
    let first = processes_with(&mark);
    assert_eq!(first.len(), 1, "{first:?}");

    // stopped after its idle time, started again by the next call: told again
    gw.wait_server("fx", "idle").await;
    gone(&mark).await;
    assert_eq!(mcp.call("fx__log_level", json!({})).await.text(), "warning");
    let second = processes_with(&mark);
    assert_eq!(second.len(), 1, "{second:?}");
    assert_ne!(first, second, "the same process: it never stopped");
}
