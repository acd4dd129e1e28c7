//! The discovery file `mcp.json`: written once `serve` listens, removed when it stops.

use serde_json::Value;

use crate::support::*;

#[tokio::test]
async fn serve_announces_its_url_and_pid_and_withdraws_them_at_shutdown() {
    let temp = tempfile::tempdir().unwrap();
    let gw = TestGateway::in_dir(temp.path(), |_| {}).await.unwrap();
    let path = temp.path().join("mcp.json");
    let file: Value = serde_json::from_slice(&std::fs::read(&path).expect("mcp.json")).unwrap();
    assert_eq!(file["url"], format!("http://{}/mcp", gw.addr));
    assert_eq!(file["pid"], std::process::id());
    let started = chrono::DateTime::parse_from_rfc3339(file["started_at"].as_str().unwrap())
        .expect("RFC 3339 started_at");
    let age = chrono::Utc::now().signed_duration_since(started);
    assert!(
        age.num_seconds().abs() < 60,
        "started_at {started} is not now"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // The URL works: a client that found the gateway this way can initialize there.
    let mut mcp = McpHttp::new(&gw);
    mcp.url = file["url"].as_str().unwrap().to_owned();
    let reply = mcp
        .request(
            "initialize",
            serde_json::json!({"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "it", "version": "1"}}),
        )
        .await;
    assert_eq!(reply.result()["serverInfo"]["name"], "switchboard");

    gw.stop().await.expect("clean stop");
    assert!(temp.path().join("registry.db").exists(), "data dir intact");
    assert!(!path.exists(), "mcp.json removed at shutdown");
}

#[tokio::test]
async fn switchboard_connect_finds_the_gateway_through_the_discovery_file() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let temp = tempfile::tempdir().unwrap();
    let gw = TestGateway::in_dir(temp.path(), |_| {}).await.unwrap();
    // A config that names another port: only mcp.json can lead to this gateway.
    let config = temp.path().join("elsewhere.toml");
    std::fs::write(&config, "listen = \"127.0.0.1:9\"\n").unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["connect", "--data-dir"])
        .arg(temp.path())
        .arg("--config")
        .arg(&config)
        .env("SWITCHBOARD_TOKEN", &gw.token)
        .env("SWITCHBOARD_LOG", "warn")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let init = serde_json::json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
        "protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"stdio","version":"1"}}});
    stdin
        .write_all(format!("{init}\n").as_bytes())
        .await
        .unwrap();
    let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(WAIT, out.next_line())
        .await
        .expect("an answer in time")
        .unwrap()
        .expect("open");
    let reply: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        reply["result"]["serverInfo"]["name"], "switchboard",
        "{reply}"
    );
    drop(stdin);
    let _ = tokio::time::timeout(WAIT, child.wait()).await;
}
