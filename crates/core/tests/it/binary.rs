//! The headless `switchboard` binary as a person runs it: startup line, SIGTERM, and the
//! errors a person can meet at startup.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

const BIN: &str = SWITCHBOARD_BIN;

/// A config file that keeps tokens in memory (these tests are not about the keychain).
fn memory_config(dir: &std::path::Path) -> String {
    let path = dir.join("memory.toml");
    std::fs::write(&path, "[auth]\ntoken_store = \"memory\"\n").unwrap();
    path.to_string_lossy().into_owned()
}

/// `serve` on port 0 with `data` as its data dir, once it says it is listening.
fn serve_listening(data: &std::path::Path) -> ChildGuard {
    let mut child = spawn_serve(&[
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        &data.to_string_lossy(),
    ]);
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("Switchboard listening on"), "{line}");
    child
}

fn spawn_serve(args: &[&str]) -> ChildGuard {
    let has_config = args.contains(&"--config");
    let dir = tempfile::tempdir().unwrap().keep();
    let mut cmd = Command::new(BIN);
    cmd.arg("serve").args(args);
    if !has_config {
        cmd.args(["--config", &memory_config(&dir)]);
    }
    cmd.env("SWITCHBOARD_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    ChildGuard::spawn(&mut cmd)
}

/// `switchboard serve` on a free port with `config` and `data`, its output piped; the caller
/// adds the environment and spawns it.
fn serve_in(config: &str, data: &std::path::Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--config",
        config,
        "--data-dir",
    ])
    .arg(data)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    cmd
}

/// Waits (bounded) for the child to exit and returns its code and stderr.
fn finish(mut child: ChildGuard, within: Duration) -> (i32, String) {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut err = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return (status.code().unwrap_or(-1), err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("switchboard did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn serve_prints_its_address_and_stops_cleanly_on_sigterm() {
    let data = tempfile::tempdir().unwrap();
    let mut child = spawn_serve(&[
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        &data.path().to_string_lossy(),
    ]);
    let url = listening_base(&mut child).await;
    let health: serde_json::Value = reqwest::get(format!("{url}/healthz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    // The discovery file names this process and its endpoint.
    let discovery: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.path().join("mcp.json")).unwrap()).unwrap();
    assert_eq!(discovery["url"], format!("{url}/mcp"));
    assert_eq!(discovery["pid"], child.id());
    chrono::DateTime::parse_from_rfc3339(discovery["started_at"].as_str().unwrap()).unwrap();

    let mut ws = WsClient::connect(&format!("{}/ws/mcp", url.replace("http", "ws"))).await;
    assert!(ws.register(&project_dir("binary")).await);

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let (reason, frame) = ws.goodbye().await;
    assert_eq!(reason, "shutdown");
    assert_eq!(u16::from(frame.expect("close frame").code), 1001);
    let (code, stderr) = finish(child, Duration::from_secs(10));
    assert_eq!(code, 0, "stderr: {stderr}");
    assert!(data.path().join("registry.db").exists());
    assert!(
        !data.path().join("mcp.json").exists(),
        "discovery file removed at shutdown"
    );
}

/// Issue 14: a test that panics after starting the real binary must not leave it running.
/// The child is started through the tests' one guard ([`ChildGuard`]) in a thread that then
/// panics; once the thread has unwound, the process is gone.
#[test]
fn a_test_that_panics_after_starting_the_binary_leaves_no_process_behind() {
    let (tx, rx) = std::sync::mpsc::channel();
    let failed = std::thread::spawn(move || {
        let data = tempfile::tempdir().unwrap();
        let child = serve_listening(data.path());
        tx.send(child.id()).unwrap();
        panic!("deliberate: a test failing while its gateway runs");
    })
    .join();
    assert!(failed.is_err(), "the thread panicked");
    let pid = rx.recv().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Some(state) = process_state(pid) {
        assert!(
            Instant::now() < deadline,
            "switchboard (pid {pid}, state {state}) still there 10 s after its test panicked"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_corrupt_database_stops_startup_with_a_message_naming_it() {
    let data = tempfile::tempdir().unwrap();
    let db = data.path().join("registry.db");
    std::fs::write(&db, vec![0xAB; 16 * 1024]).unwrap();
    let child = spawn_serve(&[
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        &data.path().to_string_lossy(),
    ]);
    let (code, stderr) = finish(child, Duration::from_secs(10));
    assert_eq!(code, 1);
    assert!(stderr.contains(&*db.to_string_lossy()), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_port_in_use_is_explained() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = holder.local_addr().unwrap().to_string();
    let data = tempfile::tempdir().unwrap();
    let child = spawn_serve(&[
        "--listen",
        &addr,
        "--data-dir",
        &data.path().to_string_lossy(),
    ]);
    let (code, stderr) = finish(child, Duration::from_secs(10));
    assert_eq!(code, 1);
    assert!(stderr.contains("already in use"), "{stderr}");
    assert!(stderr.contains(&addr), "{stderr}");
}

#[test]
fn a_non_loopback_address_is_refused() {
    let data = tempfile::tempdir().unwrap();
    let child = spawn_serve(&[
        "--listen",
        "0.0.0.0:0",
        "--data-dir",
        &data.path().to_string_lossy(),
    ]);
    let (code, stderr) = finish(child, Duration::from_secs(10));
    assert_eq!(code, 1);
    assert!(stderr.contains("local-only"), "{stderr}");
}

#[test]
fn a_bad_config_file_is_explained() {
    let data = tempfile::tempdir().unwrap();
    let cfg = data.path().join("config.toml");
    std::fs::write(&cfg, "[registration]\nmax_sokets = 3\n").unwrap();
    let child = spawn_serve(&[
        "--listen",
        "127.0.0.1:0",
        "--config",
        &cfg.to_string_lossy(),
        "--data-dir",
        &data.path().to_string_lossy(),
    ]);
    let (code, stderr) = finish(child, Duration::from_secs(10));
    assert_eq!(code, 1);
    assert!(
        stderr.contains("max_sokets") && stderr.contains("config.toml"),
        "{stderr}"
    );
}

#[test]
fn insisting_on_a_keychain_without_one_says_so_and_starts_nothing() {
    let data = tempfile::tempdir().unwrap();
    let cfg = data.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "[auth]\ntoken_store = \"keychain\"\n\n\
             [[servers]]\nname = \"fx\"\ncommand = \"{FIXTURE}\"\n"
        ),
    )
    .unwrap();
    // no D-Bus session bus: no Secret Service
    let child = ChildGuard::spawn(
        serve_in(&cfg.to_string_lossy(), data.path())
            .env_remove("DBUS_SESSION_BUS_ADDRESS")
            .env("XDG_RUNTIME_DIR", data.path())
            .env("SWITCHBOARD_LOG", "warn"),
    );
    let (code, stderr) = finish(child, Duration::from_secs(20));
    assert_eq!(code, 1);
    assert!(
        stderr.contains("keychain") && stderr.contains("token_store = \"file\""),
        "{stderr}"
    );
}

/// `switchboard serve` as a new user runs it on a server or in a container: no Secret Service
/// on the bus, no `token_store` in the config. It starts, says once which file keeps the
/// token hashes, keeps that file owner-only, and pairing works.
#[tokio::test]
async fn without_a_keychain_serve_falls_back_to_an_owner_only_file_and_pairs() {
    let data = tempfile::tempdir().unwrap();
    let cfg = data.path().join("config.toml");
    std::fs::write(
        &cfg,
        "[auth]\nkeychain_service = \"switchboard-test-absent\"\n",
    )
    .unwrap();
    let mut child = ChildGuard::spawn(
        serve_in(&cfg.to_string_lossy(), data.path())
            .env("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent")
            .env("XDG_RUNTIME_DIR", data.path())
            .env("SWITCHBOARD_LOG", "warn"),
    );
    let base = listening_base(&mut child).await;
    let token = pair_with_cli(&base, data.path(), "headless").await;
    let r = reqwest::Client::new()
        .get(format!("{base}/api/clients"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let file = data.path().join("clients.json");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }
    let stored: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(stored[0]["name"], "headless", "{stored}");
    assert!(
        !stored.to_string().contains(&token[3..]),
        "only the hash is stored"
    );
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let (code, stderr) = finish(child, Duration::from_secs(10));
    assert_eq!(code, 0, "{stderr}");
    let named: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains(&*file.to_string_lossy()))
        .collect();
    assert_eq!(named.len(), 1, "one warning naming the file: {stderr}");
    assert!(
        named[0].contains("WARN") && named[0].contains("no OS keychain"),
        "{stderr}"
    );
}

#[test]
fn pair_prints_the_code_alone_on_its_last_line() {
    let data = tempfile::tempdir().unwrap();
    let child = serve_listening(data.path());
    let out = Command::new(BIN)
        .args(["pair", "--data-dir"])
        .arg(data.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let last = stdout.lines().last().unwrap();
    assert_eq!(last.len(), 6, "{stdout}");
    assert!(last.chars().all(|c| c.is_ascii_digit()), "{stdout}");
    // an unknown role is refused by the gateway
    let out = Command::new(BIN)
        .args(["pair", "--role", "admin", "--data-dir"])
        .arg(data.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no role 'admin'"));
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let (code, stderr) = finish(child, Duration::from_secs(10));
    assert_eq!(code, 0, "{stderr}");
    // without a running gateway, pair says what is wrong
    let out = Command::new(BIN)
        .args(["pair", "--data-dir"])
        .arg(data.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is it running"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn connect_relays_stdio_to_the_gateway_with_progress_in_order() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let gw = TestGateway::with(|c| c.servers = vec![fixture_server("fx", &[])]).await;
    let mut probe = McpHttp::connect(&gw).await;
    probe
        .wait_tools("fx", |n| n.iter().any(|t| t == "fx__slow"))
        .await;

    let mut child = tokio::process::Command::new(BIN)
        .args(["connect", "--url", &gw.url("/mcp")])
        .env("SWITCHBOARD_TOKEN", &gw.token)
        .env("SWITCHBOARD_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut send = async |v: serde_json::Value| {
        stdin.write_all(format!("{v}\n").as_bytes()).await.unwrap();
    };
    send(serde_json::json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
        "protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"stdio","version":"1"}}})).await;
    let mut next = async || -> serde_json::Value {
        let line = tokio::time::timeout(WAIT, out.next_line())
            .await
            .expect("a line")
            .unwrap()
            .expect("open");
        serde_json::from_str(&line).unwrap()
    };
    let init = next().await;
    assert_eq!(
        init["result"]["serverInfo"]["name"], "switchboard",
        "{init}"
    );
    send(serde_json::json!({"jsonrpc":"2.0","method":"notifications/initialized"})).await;
    send(
        serde_json::json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{
        "name":"fx__slow","arguments":{"steps":3,"step_ms":20},"_meta":{"progressToken":"p"}}}),
    )
    .await;
    for step in 1..=3 {
        let p = next().await;
        assert_eq!(p["method"], "notifications/progress", "{p}");
        assert_eq!(p["params"]["progressToken"], "p");
        assert_eq!(p["params"]["progress"], serde_json::json!(step as f64));
    }
    let done = next().await;
    assert_eq!(done["id"], 2);
    assert_eq!(done["result"]["content"][0]["text"], "done after 3 steps");
    // garbage in: a parse error out, and the bridge goes on
    send(serde_json::json!("not an object")).await;
    stdin.write_all(b"{oops\n").await.unwrap();
    let err = next().await;
    assert_eq!(err["error"]["code"], -32700, "{err}");
    drop(stdin);
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
}

#[test]
fn connect_without_a_token_says_how_to_pair() {
    let out = Command::new(BIN)
        .args(["connect", "--url", "http://127.0.0.1:9/mcp"])
        .env_remove("SWITCHBOARD_TOKEN")
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("keychain") || err.contains("--pair"), "{err}");
}

#[tokio::test]
async fn tokens_never_reach_the_logs_even_at_trace_level() {
    let data = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut child = ChildGuard::spawn(
        serve_in(&memory_config(dir.path()), data.path()).env("SWITCHBOARD_LOG", "trace"),
    );
    let base = listening_base(&mut child).await;
    let token = pair_with_cli(&base, data.path(), "log-check").await;
    let client = reqwest::Client::new();
    for _ in 0..2 {
        let r = client
            .get(format!("{base}/api/clients"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let r = client
        .post(format!("{base}/mcp"))
        .bearer_auth(&token)
        .header("accept", "application/json, text/event-stream")
        .json(&serde_json::json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
            "protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"l","version":"1"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let _ = r.text().await;
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let (code, stderr) = finish(child, Duration::from_secs(10));
    assert_eq!(code, 0);
    assert!(
        stderr.len() > 1000,
        "trace logging produced little: {stderr}"
    );
    let secret = &token[3..];
    assert!(!stderr.contains(secret), "the token appears in the logs");
    assert!(
        !stderr.contains(&secret[..16]),
        "part of the token appears in the logs"
    );
}

/// `switchboard-relay` (the bench's relay floor) passes bytes both ways unchanged and ends with
/// its child: a request through it gets the fixture's answer, and closing its stdin ends both.
#[test]
fn the_relay_forwards_both_ways_and_ends_with_its_child() {
    use std::io::Write as _;
    let mut relay = ChildGuard::spawn(
        Command::new(env!("CARGO_BIN_EXE_switchboard-relay"))
            .arg(FIXTURE)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let mut stdin = relay.stdin.take().unwrap();
    let mut stdout = BufReader::new(relay.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = Vec::new();
        for _ in 0..2 {
            let mut line = String::new();
            if stdout.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            lines.push(line);
        }
        let _ = tx.send(lines);
    });
    // two requests in one write, one of them split across two writes
    stdin
        .write_all(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"h\u00e9 \"one\""}}}
{"jsonrpc":"2.0","id":"two","method":"tools/ca"#,
        )
        .unwrap();
    stdin.flush().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    stdin
        .write_all(br#"ll","params":{"name":"echo","arguments":{"text":"2"}}}"#)
        .unwrap();
    stdin.write_all(b"\n").unwrap();
    stdin.flush().unwrap();
    let lines = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let answers: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(answers.len(), 2, "{lines:?}");
    let one = answers.iter().find(|a| a["id"] == 1).unwrap();
    assert!(one["result"].to_string().contains(r#"hé \"one\""#), "{one}");
    assert!(answers.iter().any(|a| a["id"] == "two"), "{answers:?}");
    drop(stdin);
    let (code, _) = finish(relay, Duration::from_secs(10));
    assert_eq!(code, 0, "the fixture exits cleanly when its stdin closes");
}
