//! `/ws/mcp`: the IEP v1.0 registration protocol, message by message, and the real client's
//! reconnect storm.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

#[tokio::test]
async fn hello_gets_a_welcome_with_a_unique_session_id() {
    let gw = TestGateway::start().await;
    let mut a = gw.ws().await;
    let mut b = gw.ws().await;
    let sa = a.hello().await;
    let sb = b.hello().await;
    assert!(!sa.is_empty());
    assert_ne!(sa, sb);
    // the welcome carries the capability list the real client expects
    a.send("hello", json!({"entity_type":"mcp_server"})).await;
    let again = a.expect("welcome").await;
    assert_eq!(again["session_id"], sa, "one session id per socket");
    assert_eq!(again["capabilities"], json!([]));
}

#[tokio::test]
async fn register_flat_wrapped_and_without_hello_is_idempotent_per_path() {
    let gw = TestGateway::start().await;
    let dir = project_dir("flat");
    let mut a = gw.ws().await;
    a.hello().await;
    assert!(a.register(&dir).await);
    // the same socket registering again does not count twice
    assert!(a.register(&dir).await);
    let p = gw.project(&dir).await.expect("listed");
    assert_eq!(p["online"], true);
    assert_eq!(p["sockets"], 1);
    assert_eq!(p["agent"], "claude-code");

    // an older client: no hello, and the payload wrapped in {"project": ...}
    let mut b = gw.ws().await;
    b.send("register", json!({ "project": project_info(&dir) }))
        .await;
    assert_eq!(b.expect("registered").await, json!({"success": true}));
    let p = gw.project(&dir).await.unwrap();
    assert_eq!(p["sockets"], 2);
    assert_eq!(gw.projects().await.len(), 1, "one project per path");
}

/// What the real client (seed 000, `ws_client.rs` steps 1–4) makes of its registration: it
/// reads exactly one frame after `hello` and exactly one after `register`, and gives up (then
/// backs off) only on `registered{success:false}`; anything else and it keeps the socket.
#[derive(Debug, PartialEq)]
enum SeedOutcome {
    Registered,
    /// `anyhow::bail!("Dashboard rejected registration")`: the client backs off.
    Rejected,
    /// "Unexpected response during registration": the client carries on with this socket and
    /// reconnects a second later, forever.
    CarriesOn(Value),
}

async fn register_as_the_seed_does(ws: &mut WsClient, info: Value) -> SeedOutcome {
    ws.send(
        "hello",
        json!({"entity_type":"mcp_server","capabilities":[]}),
    )
    .await;
    let _welcome = ws.recv().await; // step 2: one frame, whatever it is
    ws.send("register", info).await;
    let msg = ws.recv().await; // step 4: one frame
    match (msg["type"].as_str(), msg["payload"]["success"].as_bool()) {
        (Some("registered"), Some(true)) => SeedOutcome::Registered,
        (Some("registered"), Some(false)) => SeedOutcome::Rejected,
        _ => SeedOutcome::CarriesOn(msg),
    }
}

#[tokio::test]
async fn a_refused_register_answers_registered_false_first_then_the_error_then_closes() {
    let gw = TestGateway::start().await;
    let temp = tempfile::tempdir().unwrap();
    let file = project_dir("file").join("not-a-dir.txt");
    std::fs::write(&file, b"x").unwrap();
    let cases = [
        "relative/project".to_owned(),
        "/no/such/project/anywhere".to_owned(),
        temp.path().to_string_lossy().into_owned(),
        file.to_string_lossy().into_owned(),
    ];
    for path in cases {
        let mut info = project_info(std::path::Path::new("/x"));
        info["path"] = json!(path);
        let mut ws = gw.ws().await;
        assert_eq!(
            register_as_the_seed_does(&mut ws, info).await,
            SeedOutcome::Rejected,
            "{path}: the real client must see the refusal in the one frame it reads"
        );
        // then the reason, then goodbye and a close frame
        let err = ws.expect_error("invalid_path").await;
        assert_eq!(err["details"]["path"], json!(path));
        let (reason, frame) = ws.goodbye().await;
        assert!(reason.contains("invalid_path"), "{reason}");
        assert_eq!(u16::from(frame.expect("close frame").code), 1008);
    }
    assert!(gw.projects().await.is_empty());
    gw.wait_for_sockets(0).await;
    // a good path on a fresh socket, read the same way, is registered
    let mut ws = gw.ws().await;
    assert_eq!(
        register_as_the_seed_does(&mut ws, project_info(&project_dir("after-invalid"))).await,
        SeedOutcome::Registered
    );
}

#[tokio::test]
async fn bad_frames_get_errors_and_the_socket_stays_usable() {
    let gw = TestGateway::start().await;
    let mut ws = gw.ws().await;
    let ts = "2026-11-22T03:56:58.467791475+00:00";
    let cases: Vec<(String, &str)> = vec![
        ("{not json".into(), "invalid_message"),
        ("[]".into(), "invalid_message"),
        (
            json!({"version":"1.0","type":"hello","timestamp":ts}).to_string(),
            "invalid_message",
        ),
        (
            json!({"type":"hello","payload":{},"timestamp":ts}).to_string(),
            "invalid_message",
        ),
        (
            json!({"version":"2.0","type":"hello","payload":{"entity_type":"mcp_server"},"timestamp":ts}).to_string(),
            "unsupported_version",
        ),
        (envelope("teleport", json!({})), "invalid_message"),
        (envelope("registered", json!({"success":true})), "invalid_message"),
        (envelope("register", json!({"path":"/x"})), "invalid_message"),
        (
            envelope("db_operation", json!({"operation":42,"entity":"task","affected_ids":[1],"project_path":"/x"})),
            "invalid_message",
        ),
        (
            json!({"version":"1.0","type":"ping","payload":{},"timestamp":"not a time"}).to_string(),
            "invalid_message",
        ),
        // 1 MiB of valid JSON: over the message limit, answered, not fatal
        (
            envelope("hello", json!({"entity_type": "x".repeat(1024 * 1024)})),
            "invalid_message",
        ),
    ];
    for (text, code) in cases {
        ws.send_raw(text).await;
        ws.expect_error(code).await;
    }
    ws.ws.send_binary(vec![1, 2, 3]).await;
    let err = ws.expect_error("invalid_message").await;
    assert!(err["message"].as_str().unwrap().contains("binary"), "{err}");
    let version_err = {
        ws.send_raw(
            json!({"version":"7.1","type":"hello","payload":{},"timestamp":ts}).to_string(),
        )
        .await;
        ws.expect_error("unsupported_version").await
    };
    assert_eq!(version_err["details"]["supported"], "1.0");
    // still usable after all of that
    ws.hello().await;
    assert!(ws.register(&project_dir("after-errors")).await);
    ws.send("ping", json!({})).await;
    ws.expect("pong").await;
}

trait SendBinary {
    async fn send_binary(&mut self, bytes: Vec<u8>);
}

impl SendBinary
    for tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>
{
    async fn send_binary(&mut self, bytes: Vec<u8>) {
        use futures_util::SinkExt;
        self.send(Message::binary(bytes))
            .await
            .expect("send binary");
    }
}

#[tokio::test]
async fn a_frame_over_the_transport_limit_closes_with_1009() {
    // max_message_bytes 1 KiB: 1 KiB..64 KiB is answered, beyond 64 KiB the transport refuses
    let gw = TestGateway::with(|c| c.registration.max_message_bytes = 1024).await;
    let mut ws = gw.ws().await;
    ws.send_raw(envelope("hello", json!({"entity_type": "x".repeat(2048)})))
        .await;
    ws.expect_error("invalid_message").await;
    ws.send_raw("x".repeat(200 * 1024)).await;
    let frame = ws.closed().await.expect("a close frame");
    assert_eq!(u16::from(frame.code), 1009, "{frame:?}");
    // the server is fine
    let mut again = gw.ws().await;
    again.hello().await;
}

#[tokio::test]
async fn three_missed_pongs_close_the_socket_and_answered_pings_keep_it() {
    let gw = TestGateway::with(|c| c.registration.ping_interval_ms = 100).await;
    let silent_dir = project_dir("silent");
    let mut silent = gw.ws().await;
    assert!(silent.register(&silent_dir).await);
    for _ in 0..3 {
        assert_eq!(silent.expect("ping").await, json!({}));
    }
    let (reason, frame) = silent.goodbye().await;
    assert!(reason.contains("ping timeout"), "{reason}");
    assert!(frame.is_some());
    let p = gw.project(&silent_dir).await.unwrap();
    assert_eq!(p["online"], false);

    let alive_dir = project_dir("alive");
    let mut alive = gw.ws().await;
    assert!(alive.register(&alive_dir).await);
    for _ in 0..8 {
        alive.expect("ping").await;
        alive.send("pong", json!({})).await;
    }
    assert_eq!(gw.project(&alive_dir).await.unwrap()["online"], true);
}

#[tokio::test]
async fn client_goodbye_closes_and_the_project_goes_offline() {
    let gw = TestGateway::start().await;
    let mut events = gw.events().await;
    let dir = project_dir("bye");
    let mut ws = gw.ws().await;
    assert!(ws.register(&dir).await);
    let online = events.next_named("project_online").await;
    assert_eq!(online["path"], json!(dir.to_string_lossy()));
    ws.send("goodbye", json!({"reason": "done"})).await;
    let frame = ws.closed().await.expect("close frame");
    assert_eq!(u16::from(frame.code), 1000);
    let offline = events.next_named("project_offline").await;
    assert_eq!(offline["path"], json!(dir.to_string_lossy()));
    assert_eq!(gw.project(&dir).await.unwrap()["online"], false);
}

#[tokio::test]
async fn sockets_that_never_register_are_closed_when_idle() {
    let gw = TestGateway::with(|c| c.registration.idle_timeout_ms = 200).await;
    let mut idle = gw.ws().await;
    idle.hello().await;
    let mut registered = gw.ws().await;
    assert!(registered.register(&project_dir("busy")).await);
    let (reason, frame) = idle.goodbye().await;
    assert!(reason.starts_with("idle"), "{reason}");
    assert_eq!(u16::from(frame.expect("close").code), 1008);
    // the registered one outlives the idle timeout
    tokio::time::sleep(Duration::from_millis(400)).await;
    registered.send("ping", json!({})).await;
    registered.expect("pong").await;
}

#[tokio::test]
async fn the_global_connection_cap_answers_error_then_closes() {
    let gw = TestGateway::with(|c| c.registration.max_connections = 2).await;
    let mut a = gw.ws().await;
    let _b = gw.ws().await;
    let mut c = gw.ws().await;
    let err = c.expect_error("registration_failed").await;
    assert_eq!(err["details"]["reason"], "capacity");
    let frame = c.closed().await.expect("close frame");
    assert_eq!(u16::from(frame.code), 1013);
    // closing one frees its place
    a.send("goodbye", json!({})).await;
    a.closed().await;
    drop(a);
    gw.wait_for_sockets(1).await;
    let mut d = gw.ws().await;
    d.hello().await;
}

#[tokio::test]
async fn db_operations_are_published_and_recorded() {
    let gw = TestGateway::start().await;
    let dir = project_dir("dbop");
    let mut events = gw.events().await;
    let mut ws = gw.ws().await;
    assert!(ws.register(&dir).await);
    ws.send(
        "db_operation",
        json!({"operation":"update","entity":"task","affected_ids":[7, 8],
               "data":{"name":"ship it"},"project_path": dir.to_string_lossy()}),
    )
    .await;
    let ev = events.next_named("db_operation").await;
    assert_eq!(ev["project_path"], json!(dir.to_string_lossy()));
    assert_eq!(ev["operation"], "update");
    assert_eq!(ev["entity"], "task");
    assert_eq!(ev["affected_ids"], json!([7, 8]));
    assert_eq!(ev["data"]["name"], "ship it");
    assert!(ev["seq"].as_u64().unwrap() > 0);
    let p = gw.project(&dir).await.unwrap();
    assert_eq!(p["last_db_operation"]["affected_ids"], json!([7, 8]));
    assert!(p["last_db_operation_at"].is_string());

    // a project nobody registered
    ws.send(
        "db_operation",
        json!({"operation":"create","entity":"event","affected_ids":[1],"project_path":"/not/registered"}),
    )
    .await;
    ws.expect_error("registration_failed").await;
}

#[tokio::test]
async fn db_operations_take_any_operation_and_entity_and_check_only_the_shape() {
    let gw = TestGateway::start().await;
    let dir = project_dir("dbop-open");
    let path = dir.to_string_lossy().into_owned();
    let mut events = gw.events().await;
    let mut ws = gw.ws().await;
    assert!(ws.register(&dir).await);

    // names we have never listed, as a newer client may send them: recorded and shown as sent
    ws.send(
        "db_operation",
        json!({"operation":"archive","entity":"workspace","affected_ids":[41],
               "data":{"why":"done"},"project_path": path}),
    )
    .await;
    let ev = events.next_named("db_operation").await;
    assert_eq!(
        (ev["operation"].as_str(), ev["entity"].as_str()),
        (Some("archive"), Some("workspace")),
        "{ev}"
    );
    assert_eq!(ev["affected_ids"], json!([41]));
    assert_eq!(ev["data"]["why"], "done");
    let p = gw.project(&dir).await.unwrap();
    assert_eq!(p["last_db_operation"]["operation"], "archive", "{p}");
    assert_eq!(p["last_db_operation"]["entity"], "workspace", "{p}");

    // the shape is still checked: types and required fields
    let bad = [
        json!({"operation":7,"entity":"task","affected_ids":[1],"project_path": path}),
        json!({"operation":"update","entity":["task"],"affected_ids":[1],"project_path": path}),
        json!({"entity":"task","affected_ids":[1],"project_path": path}),
        json!({"operation":"update","affected_ids":[1],"project_path": path}),
        json!({"operation":"update","entity":"task","affected_ids":["1"],"project_path": path}),
        json!({"operation":"update","entity":"task","project_path": path}),
        json!({"operation":"update","entity":"task","affected_ids":[1]}),
    ];
    for payload in bad {
        ws.send("db_operation", payload.clone()).await;
        let err = ws.expect_error("invalid_message").await;
        assert!(
            err["message"].as_str().unwrap().contains("db_operation"),
            "{payload}: {err}"
        );
    }
    // and none of those was published
    ws.send(
        "db_operation",
        json!({"operation":"update","entity":"task","affected_ids":[2],"project_path": path}),
    )
    .await;
    let ev = events.next_named("db_operation").await;
    assert_eq!(ev["affected_ids"], json!([2]), "only the good one: {ev}");
}

/// The real intent-engine client (0.6–0.9): a bare TCP probe, then a new socket about every
/// second that sends hello + register and is never closed; all drop at once when the process
/// exits. Its db_operations go through one shared channel, pumped by whichever socket's task
/// holds it (seed 000, lines ~281–386): in a storm that is the oldest live socket, the very one
/// the next registration retires, so they arrive on sockets the server is closing.
#[tokio::test]
async fn the_real_clients_reconnect_storm_keeps_one_online_project_and_every_db_operation() {
    let gw = TestGateway::start().await;
    let dir = project_dir("storm");
    let path = dir.to_string_lossy().into_owned();
    let mut events = gw.events().await;

    drop(TcpStream::connect(gw.addr).await.expect("TCP probe"));
    let mut sockets: Vec<WsClient> = Vec::new();
    let mut sent = Vec::new();
    for i in 0..10u64 {
        let mut ws = gw.ws().await;
        ws.hello().await;
        assert!(ws.register(&dir).await, "socket {i} registers");
        sockets.push(ws);
        if i >= 3 {
            // That registration retired socket i-3, whose goodbye is on its way; the client,
            // not having read it yet, sends its next notification there.
            let oldest = &mut sockets[i as usize - 3];
            oldest
                .send(
                    "db_operation",
                    json!({"operation":"update","entity":"task","affected_ids":[i],
                           "project_path": path}),
                )
                .await;
            sent.push(i);
            let (reason, frame) = oldest.goodbye().await;
            assert_eq!(reason, "superseded");
            assert_eq!(u16::from(frame.expect("close frame").code), 1000);
        }
        let p = gw.project(&dir).await.unwrap();
        assert_eq!(p["online"], true);
        assert!(p["sockets"].as_u64().unwrap() <= 3, "{p}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(gw.projects().await.len(), 1);
    assert_eq!(gw.project(&dir).await.unwrap()["sockets"], 3);
    // and one on a live socket
    sockets[8]
        .send(
            "db_operation",
            json!({"operation":"create","entity":"task","affected_ids":[100],"project_path": path}),
        )
        .await;
    sent.push(100);

    // exactly one online event, then every db_operation (tasks of different sockets may
    // publish in either order) and nothing else
    let (name, _) = events.next().await;
    assert_eq!(name, "project_online");
    let mut seen = Vec::new();
    for _ in 0..sent.len() {
        let (name, ev) = events.next().await;
        assert_eq!(name, "db_operation", "{ev}");
        assert_eq!(ev["project_path"], json!(path));
        seen.push(ev["affected_ids"][0].as_u64().unwrap());
    }
    seen.sort_unstable();
    assert_eq!(seen, sent, "no db_operation lost");

    // The process exits: every socket drops without goodbye.
    drop(sockets);
    let offline = events.next_named("project_offline").await;
    assert_eq!(offline["path"], json!(path));
    assert!(
        events
            .next_within(Duration::from_millis(500))
            .await
            .is_none(),
        "exactly one project_offline"
    );
    let p = gw.project(&dir).await.unwrap();
    assert_eq!(p["online"], false);
    assert_eq!(p["sockets"], 0);
}

#[tokio::test]
async fn shutdown_says_goodbye_and_closes_every_socket() {
    let gw = TestGateway::start().await;
    let mut registered = gw.ws().await;
    assert!(registered.register(&project_dir("shutdown")).await);
    let mut fresh = gw.ws().await;
    fresh.hello().await;
    let stopping = tokio::spawn(async move { gw.stop().await });
    for ws in [&mut registered, &mut fresh] {
        let (reason, frame) = ws.goodbye().await;
        assert_eq!(reason, "shutdown");
        assert_eq!(u16::from(frame.expect("close frame").code), 1001);
    }
    stopping.await.unwrap().expect("clean stop");
}
