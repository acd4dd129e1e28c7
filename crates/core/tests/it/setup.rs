//! `switchboard setup` as a person runs it, against a running gateway: through the control
//! socket and `POST /pair`, with the agents' real programs where they install from the
//! registries here. Claude Code's own CLI comes from npm (`npm ci` in `tests/claude-code`);
//! its `claude mcp list` health-checks every server, so "✔ Connected" means it reached the
//! gateway with the token setup gave it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

/// Claude Code's CLI from `tests/claude-code/node_modules`, if installed.
fn claude() -> Option<PathBuf> {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/claude-code/node_modules/.bin/claude");
    bin.is_file().then_some(bin)
}

/// Runs `program args` as the person living in `home`, with `extra_path` first on PATH.
async fn run(
    program: &Path,
    args: &[&str],
    home: &Path,
    extra_path: Option<&Path>,
) -> (bool, String) {
    let mut path = std::env::var_os("PATH").unwrap_or_default();
    if let Some(dir) = extra_path {
        let mut dirs = vec![dir.to_path_buf()];
        dirs.extend(std::env::split_paths(&path));
        path = std::env::join_paths(dirs).unwrap();
    }
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        tokio::process::Command::new(program)
            .args(args)
            .env("HOME", home)
            .env_remove("XDG_CONFIG_HOME")
            .env("PATH", path)
            .env("SWITCHBOARD_LOG", "warn")
            .current_dir(home)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("finishes within 60 s")
    .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `switchboard setup <args> --data-dir <gateway's>`.
async fn setup(gw: &TestGateway, args: &[&str], home: &Path, path: Option<&Path>) -> String {
    let data = gw.data_dir.to_string_lossy().into_owned();
    let mut all = vec!["setup"];
    all.extend_from_slice(args);
    all.extend(["--data-dir", &data]);
    let (ok, out) = run(Path::new(SWITCHBOARD_BIN), &all, home, path).await;
    assert!(ok, "switchboard {all:?} failed: {out}");
    out
}

/// The status `POST /mcp initialize` gets with `token`.
async fn status_with(gw: &TestGateway, token: &str) -> u16 {
    let mut c = McpHttp::to(gw.url("/mcp"), token.to_owned());
    c.request(
        "initialize",
        serde_json::json!({"protocolVersion": "2025-11-25", "capabilities": {},
                           "clientInfo": {"name": "it", "version": "1"}}),
    )
    .await
    .status
}

fn claude_json_token(home: &Path) -> String {
    let file: Value =
        serde_json::from_str(&std::fs::read_to_string(home.join(".claude.json")).unwrap()).unwrap();
    file["mcpServers"]["switchboard"]["headers"]["Authorization"]
        .as_str()
        .unwrap()
        .strip_prefix("Bearer ")
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn claude_code_reports_switchboard_connected_after_setup_and_forgets_it_after_remove() {
    let Some(claude) = claude() else {
        // scripts/test installs it and sets this: there, a missing CLI is a failure
        assert!(
            std::env::var_os("SWITCHBOARD_REQUIRE_AGENTS").is_none(),
            "Claude Code's CLI is missing from tests/claude-code/node_modules"
        );
        eprintln!("SKIPPED: Claude Code's CLI is not installed; run `npm ci` in tests/claude-code");
        return;
    };
    let bin_dir = claude.parent().unwrap().to_path_buf();
    let gw = TestGateway::with(|c| c.servers = vec![fixture_server("fx", &[])]).await;
    let home = tempfile::tempdir().unwrap();
    let home = home.path();

    let out = setup(&gw, &["claude-code"], home, Some(&bin_dir)).await;
    assert!(
        out.contains("mcp add-json") && out.contains("paired as claude-code"),
        "{out}"
    );
    let (ok, list) = run(&claude, &["mcp", "list"], home, None).await;
    assert!(ok, "{list}");
    let line = list
        .lines()
        .find(|l| l.starts_with("switchboard:"))
        .unwrap_or_else(|| panic!("no switchboard in `claude mcp list`:\n{list}"));
    // "✔ Connected" (2.1.x; older releases print "✓ Connected")
    assert!(
        line.contains("127.0.0.1")
            && (line.contains("✔ Connected") || line.contains("✓ Connected")),
        "{list}"
    );

    // the entry Claude Code keeps reaches the gateway's tools, as the paired client
    let token = claude_json_token(home);
    let mut mcp = McpHttp::to(gw.url("/mcp"), token.clone())
        .initialize()
        .await;
    let tools = mcp.request("tools/list", serde_json::json!({})).await;
    let names: Vec<&str> = tools.result()["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(names.iter().any(|n| n.starts_with("fx__")), "{names:?}");
    let clients = gw.json("/api/clients").await;
    let me = clients
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "claude-code")
        .cloned()
        .unwrap_or_else(|| panic!("{clients}"));
    assert_eq!(me["name_budget"], 64 - "mcp__switchboard__".len());

    // twice: nothing changes
    let bytes = std::fs::read(home.join(".claude.json")).unwrap();
    let again = setup(&gw, &["claude-code"], home, Some(&bin_dir)).await;
    assert!(again.contains("already connected"), "{again}");
    assert_eq!(std::fs::read(home.join(".claude.json")).unwrap(), bytes);

    let out = setup(&gw, &["claude-code", "--remove"], home, Some(&bin_dir)).await;
    assert!(out.contains("revoked the token of claude-code"), "{out}");
    let (ok, list) = run(&claude, &["mcp", "list"], home, None).await;
    assert!(ok, "{list}");
    assert!(!list.contains("switchboard"), "{list}");
    assert_eq!(status_with(&gw, &token).await, 401, "the token is refused");
}

#[tokio::test]
async fn setup_of_a_file_agent_through_the_cli_pairs_detects_and_removes() {
    let gw = TestGateway::start().await;
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    std::fs::create_dir_all(home.join(".cursor")).unwrap();
    std::fs::create_dir_all(home.join(".codex")).unwrap();
    let data = gw.data_dir.to_string_lossy().into_owned();
    let agents = |home: &Path| {
        let home = home.to_path_buf();
        let data = data.clone();
        async move {
            let (ok, out) = run(
                Path::new(SWITCHBOARD_BIN),
                &["agents", "--data-dir", &data],
                &home,
                None,
            )
            .await;
            assert!(ok, "{out}");
            out
        }
    };
    let before = agents(home).await;
    assert!(
        before.lines().any(|l| l.starts_with("cursor\tinstalled")),
        "{before}"
    );
    assert!(
        before.lines().any(|l| l.starts_with("zed\tnot found")),
        "{before}"
    );

    let out = setup(&gw, &["cursor"], home, None).await;
    assert!(out.contains("paired as cursor"), "{out}");
    let out = setup(&gw, &["codex", "--name", "hub"], home, None).await;
    assert!(out.contains("paired as codex"), "{out}");
    let after = agents(home).await;
    assert!(
        after.lines().any(|l| l.starts_with("cursor\tconnected")),
        "{after}"
    );
    assert!(
        after.lines().any(|l| l.starts_with("codex\tconnected")),
        "{after}"
    );

    let text = std::fs::read_to_string(home.join(".cursor/mcp.json")).unwrap();
    let file: Value = serde_json::from_str(&text).unwrap();
    let token = file["mcpServers"]["switchboard"]["headers"]["Authorization"]
        .as_str()
        .unwrap()
        .strip_prefix("Bearer ")
        .unwrap()
        .to_owned();
    assert_eq!(status_with(&gw, &token).await, 200);
    let out = setup(&gw, &["cursor", "--remove"], home, None).await;
    assert!(out.contains("revoked the token of cursor"), "{out}");
    assert_eq!(status_with(&gw, &token).await, 401);
    let last = agents(home).await;
    assert!(
        last.lines().any(|l| l.starts_with("cursor\tinstalled")),
        "{last}"
    );

    // an unknown agent is named with the known ones
    let (ok, out) = run(
        Path::new(SWITCHBOARD_BIN),
        &["setup", "emacs", "--data-dir", &data],
        home,
        None,
    )
    .await;
    assert!(!ok && out.contains("claude-code, claude-desktop"), "{out}");
}

/// Names of the tools `token` sees through the gateway.
async fn tool_names(gw: &TestGateway, token: &str) -> Vec<String> {
    let mut mcp = McpHttp::to(gw.url("/mcp"), token.to_owned())
        .initialize()
        .await;
    let tools = mcp.request("tools/list", serde_json::json!({})).await;
    tools.result()["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn adopt_runs_an_agents_three_stdio_servers_and_remote_one_and_undo_restores_its_file() {
    use std::sync::Arc;
    use switchboard_core::auth::store::{MemorySecrets, SecretStore, Stores};
    use switchboard_core::setup::{self, Client, Options, Pairer, Places, adopt};

    // the agent's remote server: another gateway, behind its own token
    let remote = TestGateway::with(|c| c.servers = vec![fixture_server("up", &[])]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let mine = "# my Switchboard\n[gateway]\ncall_timeout_ms = 60000 # a minute\n";
    std::fs::write(&config, mine).unwrap();
    let secrets = Arc::new(MemorySecrets::default());
    let stores = Stores {
        secrets: Some(secrets.clone()),
        ..Stores::default()
    };
    let watched = config.clone();
    let gw = TestGateway::with_stores(stores, |c| c.source = Some(watched)).await;

    let places = Places::under(&dir.path().join("home"));
    let cursor = places.home.join(".cursor/mcp.json");
    std::fs::create_dir_all(cursor.parent().unwrap()).unwrap();
    let agent_file = serde_json::to_string_pretty(&serde_json::json!({"mcpServers": {
        "one": {"command": FIXTURE, "env": {"FX_API_KEY": "s3cret-one"}},
        "two": {"command": FIXTURE, "args": ["--many", "2"]},
        "three": {"command": FIXTURE, "env": {"FX_API_KEY": "s3cret-three"}},
        "web": {"url": remote.url("/mcp"), "headers": {"Authorization": format!("Bearer {}", remote.token)}},
    }}))
    .unwrap()
        + "\n";
    std::fs::write(&cursor, &agent_file).unwrap();

    let target = adopt::Target {
        config: config.clone(),
        secrets: secrets.clone(),
        state_dir: gw.data_dir.clone(),
    };
    let pairer = Pairer::Control {
        data_dir: gw.data_dir.clone(),
    };
    let opts = Options {
        use_cli: false,
        keychain: false,
        ..Options::default()
    };
    let done = adopt::adopt(&places, Client::Cursor, &opts, &pairer, &target)
        .await
        .unwrap();
    let names: Vec<&str> = done.servers.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(names, ["one", "three", "two", "web"]);
    assert_eq!(done.secrets, 3, "two env values and one header");

    // nothing secret is left in plain text; the secret store has them
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.starts_with(mine), "{text}");
    assert!(
        !text.contains("s3cret") && !text.contains(&remote.token[3..]),
        "{text}"
    );
    assert_eq!(
        secrets
            .secret(adopt::SECRET_SERVICE, "one.env.FX_API_KEY")
            .unwrap()
            .as_deref(),
        Some("s3cret-one")
    );
    // the agent keeps one entry, Switchboard's
    let now: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cursor).unwrap()).unwrap();
    let entries: Vec<&String> = now["mcpServers"].as_object().unwrap().keys().collect();
    assert_eq!(entries, [setup::DEFAULT_ENTRY]);
    let token = now["mcpServers"]["switchboard"]["headers"]["Authorization"]
        .as_str()
        .unwrap()
        .strip_prefix("Bearer ")
        .unwrap()
        .to_owned();

    // Switchboard runs all four, and the agent lists them through it
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let names = tool_names(&gw, &token).await;
        let from = |p: &str| names.iter().any(|n| n.starts_with(p));
        if from("one__") && from("two__") && from("three__") && from("web__up__") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not all four run: {names:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // undo: the agent's file exactly as it was, the servers gone, the token refused
    let undone = adopt::undo(Client::Cursor, &opts, &pairer, &target)
        .await
        .unwrap();
    assert_eq!(undone.revoked.as_deref(), Some("cursor"));
    assert_eq!(std::fs::read_to_string(&cursor).unwrap(), agent_file);
    assert_eq!(std::fs::read_to_string(&config).unwrap(), mine);
    assert_eq!(status_with(&gw, &token).await, 401);
    // and a second undo says there is nothing to undo
    let err = adopt::undo(Client::Cursor, &opts, &pairer, &target)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("nothing was adopted"), "{err}");
}

/// Pairs a client with a tool-name budget, the way `switchboard setup` does.
async fn pair_with_budget(gw: &TestGateway, name: &str, budget: usize) -> String {
    let code = gw.code(None).await;
    let r: Value = reqwest::Client::new()
        .post(gw.url("/pair"))
        .json(&serde_json::json!({"code": code, "name": name, "name_budget": budget}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    r["token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_clients_name_budget_shortens_what_it_sees_and_its_short_names_call_the_tools() {
    let long = "a-rather-long-server-name-here";
    let gw = TestGateway::with(|c| {
        c.servers = vec![fixture_server(long, &[])];
        c.roles = std::collections::BTreeMap::from([
            ("default".into(), vec!["*".into()]),
            ("echoer".into(), vec![format!("{long}__echo")]),
        ]);
    })
    .await;
    let full = format!("{long}__echo");
    // everyone else sees the full name
    let wait = tokio::time::Instant::now() + WAIT;
    while !tool_names(&gw, &gw.token).await.contains(&full) {
        assert!(
            tokio::time::Instant::now() < wait,
            "the fixture never listed echo"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let token = pair_with_budget(&gw, "short", 32).await;
    let names = tool_names(&gw, &token).await;
    assert!(names.iter().all(|n| n.len() <= 32), "{names:?}");
    // echo, shortened: the tool with echo's definition under a name of the budget
    let tools_of = |token: String| {
        let url = gw.url("/mcp");
        async move {
            let mut mcp = McpHttp::to(url, token).initialize().await;
            let r = mcp.request("tools/list", serde_json::json!({})).await;
            r.result()["tools"].as_array().unwrap().clone()
        }
    };
    let everyone = tools_of(gw.token.clone()).await;
    let echo = everyone
        .iter()
        .find(|t| t["name"] == full.as_str())
        .unwrap();
    let mine = tools_of(token.clone()).await;
    let short = mine
        .iter()
        .find(|t| {
            t["description"] == echo["description"] && t["inputSchema"] == echo["inputSchema"]
        })
        .and_then(|t| t["name"].as_str())
        .unwrap_or_else(|| panic!("no shortened echo in {names:?}"))
        .to_owned();
    assert_eq!(short.len(), 32, "{short}");
    assert!(short.starts_with("a-rather-long-server"), "{short}");
    // the same client sees the same names every time
    assert_eq!(tool_names(&gw, &token).await, names);
    // ... and calls through them
    let mut mcp = McpHttp::to(gw.url("/mcp"), token).initialize().await;
    let r = mcp.call(&short, serde_json::json!({"text": "hi"})).await;
    assert_eq!(r.text(), "hi");
    // a budgeted client whose role allows only the full name sees and calls it shortened
    let code = gw.code(Some("echoer")).await;
    let r: Value = reqwest::Client::new()
        .post(gw.url("/pair"))
        .json(&serde_json::json!({"code": code, "name": "echo-only", "name_budget": 32}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = r["token"].as_str().unwrap().to_owned();
    let names = tool_names(&gw, &token).await;
    // echo alone (the built-in tools are not in this role)
    assert_eq!(names.len(), 1, "{names:?}");
    assert_eq!(names[0].len(), 32, "{names:?}");
    let mut mcp = McpHttp::to(gw.url("/mcp"), token).initialize().await;
    let r = mcp.call(&names[0], serde_json::json!({"text": "ok"})).await;
    assert_eq!(r.text(), "ok");
}

#[tokio::test]
async fn the_dashboard_lists_agents_and_its_connect_button_connects_and_disconnects() {
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join(".gemini")).unwrap();
    let agents_home = home.path().to_path_buf();
    let gw = TestGateway::with(|c| c.agents_home = Some(agents_home)).await;
    let agent = |list: &Value, id: &str| {
        list["agents"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["client"] == id)
            .cloned()
            .unwrap()
    };
    let list = gw.json("/api/agents").await;
    assert_eq!(list["agents"].as_array().unwrap().len(), 8, "{list}");
    let gemini = agent(&list, "gemini-cli");
    assert_eq!(
        (gemini["installed"].as_bool(), gemini["connected"].as_bool()),
        (Some(true), Some(false))
    );
    assert_eq!(agent(&list, "zed")["installed"], false);

    let post = |path: &str| {
        reqwest::Client::new()
            .post(gw.url(path))
            .bearer_auth(&gw.token)
    };
    // another open dashboard is told, so that it reads the agents again
    let mut events = gw.events().await;
    let r = post("/api/agents/gemini-cli/connect").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["report"]["paired"], "gemini-cli", "{body}");
    assert!(
        body["lines"][0].as_str().unwrap().contains("wrote entry"),
        "{body}"
    );
    let changed = loop {
        let (name, data) = events
            .next_within(Duration::from_secs(5))
            .await
            .expect("an agent_changed event within 5 s");
        if name == "agent_changed" {
            break data;
        }
    };
    assert_eq!(
        (&changed["agent"], &changed["action"]),
        (&json!("gemini-cli"), &json!("connect")),
        "{changed}"
    );
    assert!(agent(&gw.json("/api/agents").await, "gemini-cli")["connected"] == true);
    let text = std::fs::read_to_string(home.path().join(".gemini/settings.json")).unwrap();
    assert!(text.contains("\"httpUrl\""), "{text}");

    let r = post("/api/agents/gemini-cli/disconnect")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let changed = loop {
        let (name, data) = events
            .next_within(Duration::from_secs(5))
            .await
            .expect("an agent_changed event within 5 s");
        if name == "agent_changed" {
            break data;
        }
    };
    assert_eq!(changed["action"], "disconnect", "{changed}");
    assert!(agent(&gw.json("/api/agents").await, "gemini-cli")["connected"] == false);

    // unknown agents and actions, and adopt without a config file, are explained
    let r = post("/api/agents/emacs/connect").send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = post("/api/agents/cursor/adopt").send().await.unwrap();
    assert_eq!(r.status(), 409);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--config"),
        "{body}"
    );
    // without a token there is nothing to see
    let r = reqwest::get(gw.url("/api/agents")).await.unwrap();
    assert_eq!(r.status(), 401);
}
