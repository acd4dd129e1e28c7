//! The dashboard's live log view: a server's `notifications/message` is kept per server
//! (`GET /api/servers/{name}/logs`) and announced as a `server_log` event, whoever called.

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn a_servers_log_messages_are_kept_and_announced() {
    let gw = TestGateway::with(|c| {
        c.servers = vec![fixture_server("fx", &[]), fixture_server("other", &[])];
    })
    .await;
    gw.wait_server("fx", "running").await;
    gw.wait_server("other", "running").await;
    let mut events = gw.events().await;
    let mut mcp = McpHttp::connect(&gw).await;
    for (level, message) in [("info", "first"), ("error", "second")] {
        let r = mcp
            .call(
                "fx__log",
                json!({"level": level, "message": message, "logger": "db"}),
            )
            .await;
        assert_eq!(r.text(), "logged");
    }
    let seen = events.next_named("server_log").await;
    assert_eq!(seen["server"], "fx");
    assert_eq!(
        (seen["level"].as_str(), seen["data"].as_str()),
        (Some("info"), Some("first"))
    );
    assert_eq!(seen["logger"], "db", "the server's own logger name");
    assert!(seen["received"].is_string());

    let logs = gw.json("/api/servers/fx/logs").await;
    let logs = logs["logs"].as_array().unwrap();
    let got: Vec<(&str, &str)> = logs
        .iter()
        .map(|l| (l["level"].as_str().unwrap(), l["data"].as_str().unwrap()))
        .collect();
    assert_eq!(got, [("info", "first"), ("error", "second")]);
    let other = gw.json("/api/servers/other/logs").await;
    assert_eq!(other["logs"], json!([]), "kept per server");
    let r = gw.get("/api/servers/nope/logs").send().await.unwrap();
    assert_eq!(r.status(), 404);
}
