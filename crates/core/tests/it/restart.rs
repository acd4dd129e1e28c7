//! Calls that meet a server being restarted: they say why they wait, wait at most
//! `gateway.restart_wait_ms`, and fail naming the server and its state (real fixture servers,
//! killed with `kill -9`, over real HTTP).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::*;

/// A gateway with one fixture `fx` and these restart settings, once `fx` runs.
async fn fixture_with(backoff_initial_ms: u64, restart_wait_ms: u64) -> (TestGateway, McpHttp) {
    let gw = TestGateway::with(|c| {
        c.servers = vec![fixture_server("fx", &[])];
        c.gateway.backoff_initial_ms = backoff_initial_ms;
        c.gateway.restart_wait_ms = restart_wait_ms;
    })
    .await;
    let mut mcp = McpHttp::connect(&gw).await;
    mcp.wait_tools("fx", |n| n.iter().any(|t| t == "fx__echo"))
        .await;
    (gw, mcp)
}

/// `kill -9` of the running `fx`.
async fn kill_fx(mcp: &mut McpHttp) {
    let pid = mcp.call("fx__pid", json!({})).await.text();
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
}

/// `tools/call` of `tool` with a progress token.
async fn call_with_progress(mcp: &mut McpHttp, tool: &str, args: Value) -> Reply {
    mcp.request(
        "tools/call",
        json!({"name": tool, "arguments": args, "_meta": {"progressToken": "wait-7"}}),
    )
    .await
}

/// The messages of the progress notifications in `reply`, each checked to carry our token.
fn progress_messages(reply: &Reply) -> Vec<String> {
    reply
        .notifications("notifications/progress")
        .iter()
        .inspect(|p| assert_eq!(p["params"]["progressToken"], "wait-7", "{p}"))
        .filter_map(|p| p["params"]["message"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn a_call_during_a_restart_hears_why_it_waits_then_gets_the_answer() {
    // the first delay is 1 to 2 s, well within the 10 s a call waits
    let (gw, mut mcp) = fixture_with(2_000, 10_000).await;
    kill_fx(&mut mcp).await;
    gw.wait_server("fx", "restarting").await;

    let started = Instant::now();
    let reply = call_with_progress(&mut mcp, "fx__echo", json!({"text": "back"})).await;
    assert!(started.elapsed() < Duration::from_secs(10 + 5));
    assert_eq!(reply.text(), "back", "{:?}", reply.messages);
    let told = progress_messages(&reply);
    assert!(
        told.iter().any(
            |m| m.starts_with("waiting for 'fx' to restart, next attempt in ")
                && m.contains("this call waits at most")
        ),
        "{told:?}"
    );
    // the notices come before the answer
    assert!(reply.messages.last().unwrap().get("result").is_some());
}

#[tokio::test]
async fn a_replayed_call_tells_its_wait_for_the_restart_and_progress_only_increases() {
    let (_gw, mut mcp) = fixture_with(400, 10_000).await;
    let mut caller = mcp.sibling(&_gw, 100);
    let call = tokio::spawn(async move {
        call_with_progress(&mut caller, "fx__slow", json!({"steps": 5, "step_ms": 100})).await
    });
    tokio::time::sleep(Duration::from_millis(250)).await;
    kill_fx(&mut mcp).await;

    let reply = tokio::time::timeout(Duration::from_secs(20), call)
        .await
        .expect("the replayed call ends")
        .unwrap();
    assert_eq!(reply.text(), "done after 5 steps", "{:?}", reply.messages);
    let told = progress_messages(&reply);
    assert!(
        told.iter()
            .any(|m| m.starts_with("waiting for 'fx' to restart")),
        "{told:?}"
    );
    let values: Vec<f64> = reply
        .notifications("notifications/progress")
        .iter()
        .map(|p| p["params"]["progress"].as_f64().unwrap())
        .collect();
    assert!(
        values.windows(2).all(|w| w[0] < w[1]),
        "progress must increase: {values:?}"
    );
}

#[tokio::test]
async fn a_restart_due_after_restart_wait_fails_the_call_at_once_naming_server_and_state() {
    // the first delay is 15 to 30 s (backoff_max_ms); a call waits at most 1 s
    let (gw, mut mcp) = fixture_with(60_000, 1_000).await;
    kill_fx(&mut mcp).await;
    gw.wait_server("fx", "restarting").await;

    for progress in [true, false] {
        let started = Instant::now();
        let reply = if progress {
            call_with_progress(&mut mcp, "fx__echo", json!({"text": "x"})).await
        } else {
            mcp.call("fx__echo", json!({"text": "x"})).await
        };
        // at once: well before the 1 s bound would end
        assert!(started.elapsed() < Duration::from_millis(1_000 + 2_000));
        assert_eq!(reply.result()["isError"], true, "{:?}", reply.messages);
        let text = reply.text();
        assert!(
            text.starts_with("server 'fx' is restarting: next attempt in "),
            "{text}"
        );
        assert!(
            text.contains("later than this call may wait (1.0 s)")
                && text.contains("last error: killed by signal 9"),
            "{text}"
        );
        assert!(progress_messages(&reply).is_empty(), "nothing to wait for");
    }
}

#[tokio::test]
async fn a_server_not_back_within_restart_wait_fails_the_call_at_the_bound() {
    // a config edit restarts `fx` as a command that never answers `initialize`: it stays
    // `starting` (its tools are still known, so the call is routed to it)
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    std::fs::write(
        &file,
        format!("[[servers]]\nname = \"fx\"\ncommand = \"{FIXTURE}\"\n"),
    )
    .unwrap();
    let loaded = switchboard_core::Config::load(Some(&file)).unwrap();
    let gw = TestGateway::with(move |c| {
        c.servers = loaded.servers.clone();
        c.source = loaded.source.clone();
        c.gateway.restart_wait_ms = 1_500;
        c.gateway.start_timeout_ms = 30_000;
        c.gateway.stop_grace_ms = 100;
    })
    .await;
    let mut mcp = McpHttp::connect(&gw).await;
    mcp.wait_tools("fx", |n| n.iter().any(|t| t == "fx__echo"))
        .await;
    std::fs::write(
        &file,
        "[[servers]]\nname = \"fx\"\ncommand = \"sleep\"\nargs = [\"60\"]\n",
    )
    .unwrap();
    gw.wait_server("fx", "starting").await;

    let started = Instant::now();
    let reply = call_with_progress(&mut mcp, "fx__echo", json!({"text": "x"})).await;
    let elapsed = started.elapsed();
    assert_eq!(reply.result()["isError"], true, "{:?}", reply.messages);
    let text = reply.text();
    assert!(text.starts_with("server 'fx' is starting: "), "{text}");
    assert!(text.contains("waited 1."), "{text}");
    assert!(elapsed >= Duration::from_millis(1_500), "{elapsed:?}");
    assert!(
        elapsed < Duration::from_millis(1_500 + 3_000),
        "{elapsed:?}"
    );
    let told = progress_messages(&reply);
    assert_eq!(told.len(), 1, "{told:?}");
    assert!(
        told[0].starts_with("waiting for 'fx' to restart (this call waits at most 1."),
        "{told:?}"
    );
}
