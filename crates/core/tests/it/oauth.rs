//! OAuth 2.1 towards remote servers, through real HTTP on loopback: a real authorization server
//! and a protected MCP server (`tests/clients/ts/oauth-server.mjs`, the official TypeScript
//! SDK's McpServer behind it), the real `switchboard login` CLI, and a "browser" set as
//! `$BROWSER` (`tests/clients/ts/oauth-browser.mjs`) that follows the authorization URL to the
//! gateway's callback. Every discovery variant, each registration path, PKCE, `resource`,
//! scope selection and step-up, the token endpoint auth methods, refresh and rotation, expiry,
//! revocation, and the bad inputs: each with the reason a person reads, and nothing stored.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use switchboard_core::config::{OAuthConfig, ServerConfig, TokenStoreKind};
use tokio::io::AsyncBufReadExt;

use crate::support::*;

/// `tests/clients/ts`, where the server and the browser live.
fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/clients/ts")
}

/// The authorization server and the MCP server it protects, running (killed on drop).
struct Protected {
    mcp: String,
    admin: String,
    _child: tokio::process::Child,
}

impl Protected {
    async fn start(options: Value) -> Self {
        let mut child = tokio::process::Command::new("node")
            .arg(scripts().join("oauth-server.mjs"))
            .arg(options.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs the OAuth test server");
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("the OAuth test server starts")
            .unwrap()
            .expect("its address line");
        let info: Value = serde_json::from_str(&line).unwrap();
        Self {
            mcp: info["mcp"].as_str().unwrap().to_owned(),
            admin: info["admin"].as_str().unwrap().to_owned(),
            _child: child,
        }
    }

    /// What the servers saw, of `kind` (`register`, `authorize`, `token`, `revoke`, `mcp`…).
    async fn log(&self, kind: &str) -> Vec<Value> {
        let all: Vec<Value> = reqwest::get(format!("{}/admin/log", self.admin))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        all.into_iter().filter(|e| e["kind"] == kind).collect()
    }

    async fn admin(&self, what: &str) {
        let r = reqwest::Client::new()
            .post(format!("{}/admin/{what}", self.admin))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }

    /// A server entry for it, named `remote`.
    fn server(&self, oauth: Option<OAuthConfig>) -> ServerConfig {
        ServerConfig {
            name: "remote".into(),
            url: Some(self.mcp.clone()),
            enabled: true,
            oauth,
            ..Default::default()
        }
    }
}

/// A gateway with `server`, OAuth logins kept beside the tokens (`store`).
async fn gateway(server: ServerConfig, store: TokenStoreKind, dir: Option<&Path>) -> TestGateway {
    let tweak = |c: &mut switchboard_core::Config| {
        c.auth.token_store = store;
        c.gateway.remote_backoff_initial_ms = 50;
        c.gateway.start_timeout_ms = 10_000;
        c.servers = vec![server];
    };
    match dir {
        Some(dir) => TestGateway::in_dir(dir, tweak).await.unwrap(),
        None => TestGateway::with(tweak).await,
    }
}

/// What `switchboard login` did.
struct Login {
    ok: bool,
    stdout: String,
    stderr: String,
    /// What the browser saw (one entry per URL it was given).
    browser: Vec<Value>,
}

/// Runs `switchboard login remote` against `gw`, with the test browser in `mode`.
async fn login(gw: &TestGateway, mode: &str, timeout_s: u64) -> Login {
    let log = tempfile::NamedTempFile::new().unwrap();
    let browser = format!("node {}", scripts().join("oauth-browser.mjs").display());
    let out = tokio::time::timeout(
        Duration::from_secs(timeout_s + 30),
        tokio::process::Command::new(SWITCHBOARD_BIN)
            .args(["login", "remote", "--timeout", &timeout_s.to_string()])
            .arg("--data-dir")
            .arg(&gw.data_dir)
            .env("BROWSER", browser)
            .env("OAUTH_BROWSER_MODE", mode)
            .env("OAUTH_BROWSER_LOG", log.path())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("login ends in time")
    .unwrap();
    // The browser runs detached from the CLI: give it a moment to write what it saw.
    let mut browser = Vec::new();
    for _ in 0..50 {
        let text = std::fs::read_to_string(log.path()).unwrap_or_default();
        browser = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        // no browser when the CLI never had a URL to open, none to wait for when ignored
        let opened = String::from_utf8_lossy(&out.stdout).contains("/authorize");
        if !browser.is_empty() || mode == "ignore" || !opened {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Login {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        browser,
    }
}

/// Calls `remote__<tool>` through the gateway: the reply.
async fn call(gw: &TestGateway, tool: &str) -> Reply {
    let mut mcp = McpHttp::connect(gw).await;
    mcp.call(&format!("remote__{tool}"), json!({})).await
}

/// The error text of a call that failed, whether as a JSON-RPC error or a tool error.
fn error_text(reply: &Reply) -> String {
    let r = reply.response();
    if let Some(m) = r["error"]["message"].as_str() {
        return m.to_owned();
    }
    assert_eq!(r["result"]["isError"], true, "expected an error: {r}");
    reply.text()
}

/// Logs in (the browser approves) and checks the server runs and answers as the client it
/// registered as; the login's authorize request.
async fn logged_in(gw: &TestGateway, srv: &Protected) -> Value {
    let done = login(gw, "follow", 20).await;
    assert!(
        done.ok,
        "login failed: {}\n{}\nbrowser: {:?}",
        done.stdout, done.stderr, done.browser
    );
    assert!(
        done.stdout.contains("logged in to remote"),
        "{}",
        done.stdout
    );
    gw.wait_server("remote", "running").await;
    let who = call(gw, "whoami").await;
    let who: Value = serde_json::from_str(&who.text()).unwrap_or_else(|_| panic!("{who:?}"));
    assert!(who["client_id"].is_string(), "{who}");
    srv.log("authorize")
        .await
        .pop()
        .expect("an authorize request")
}

#[tokio::test]
async fn a_server_that_answers_401_needs_login_and_login_brings_it_up_with_pkce_and_resource() {
    let srv = Protected::start(json!({"challenge_scope": "read"})).await;
    let gw = gateway(srv.server(None), TokenStoreKind::Memory, None).await;
    let parked = gw.wait_server("remote", "needs_login").await;
    let reason = parked["last_error"].as_str().unwrap_or_default().to_owned();
    assert!(
        reason.contains("HTTP 401") && reason.contains("switchboard login remote"),
        "{parked}"
    );
    assert_eq!(parked["oauth"]["logged_in"], false, "{parked}");
    // a call meanwhile says which server and how to log in
    let refused = call(&gw, "whoami").await;
    let text = error_text(&refused);
    assert!(
        text.contains("remote") && text.contains("switchboard login remote"),
        "{text}"
    );

    let authorize = logged_in(&gw, &srv).await;
    assert_eq!(authorize["code_challenge_method"], "S256");
    assert!(authorize["code_challenge"].as_str().unwrap().len() >= 43);
    assert!(authorize["state"].as_str().unwrap().len() >= 16);
    assert_eq!(authorize["resource"], srv.mcp.as_str());
    assert_eq!(authorize["scope"], "read", "the challenge's scope");
    assert!(
        authorize["redirect_uri"]
            .as_str()
            .unwrap()
            .starts_with(&format!(
                "http://127.0.0.1:{}/oauth/callback",
                gw.addr.port()
            )),
        "{authorize}"
    );
    let registered = srv.log("register").await;
    assert_eq!(registered.len(), 1, "{registered:?}");
    assert_eq!(registered[0]["asked"], "none", "a public client");
    let tokens = srv.log("token").await;
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    assert_eq!(tokens[0]["grant_type"], "authorization_code");
    assert_eq!(tokens[0]["resource"], srv.mcp.as_str());
    assert_eq!(tokens[0]["method"], "none");
    // the API says logged in, and shows no token
    let entry = gw.server("remote").await;
    assert_eq!(entry["oauth"]["logged_in"], true, "{entry}");
    assert!(
        !entry.to_string().to_lowercase().contains("bearer"),
        "{entry}"
    );
}

/// Each way of finding the authorization server: protected-resource metadata from the
/// challenge, at the path-based and root well-known URLs, authorization-server metadata and
/// OpenID discovery with and without a path, and the 2025-03-26 default endpoints.
#[tokio::test]
async fn every_discovery_variant_logs_in() {
    for (variant, expect_as) in [
        (
            json!({"prm": "root"}),
            "/.well-known/oauth-authorization-server",
        ),
        (
            json!({"advertise": false}),
            "/.well-known/oauth-authorization-server",
        ),
        (
            json!({"advertise": false, "prm": "root"}),
            "/.well-known/oauth-authorization-server",
        ),
        (
            json!({"issuer_path": "/tenant"}),
            "/.well-known/oauth-authorization-server/tenant",
        ),
        (
            json!({"as_metadata": "oidc"}),
            "/.well-known/openid-configuration",
        ),
        (
            json!({"as_metadata": "oidc", "issuer_path": "/tenant"}),
            "/.well-known/openid-configuration/tenant",
        ),
        (json!({"as_metadata": "legacy"}), ""),
    ] {
        let srv = Protected::start(variant.clone()).await;
        let gw = gateway(srv.server(None), TokenStoreKind::Memory, None).await;
        gw.wait_server("remote", "needs_login").await;
        let authorize = logged_in(&gw, &srv).await;
        assert_eq!(authorize["resource"], srv.mcp.as_str(), "{variant}");
        let seen = srv.log("as_metadata").await;
        if expect_as.is_empty() {
            assert!(seen.is_empty(), "{variant}: {seen:?}");
        } else {
            assert!(
                seen.iter().any(|e| e["path"] == expect_as),
                "{variant}: {seen:?}"
            );
        }
    }
}

/// A secret in the config, as `client_secret = "…"`.
fn configured(id: &str, secret: Option<&str>) -> OAuthConfig {
    OAuthConfig {
        client_id: Some(id.into()),
        client_secret: secret.map(|s| switchboard_core::config::HeaderValue::Plain(s.into())),
        ..Default::default()
    }
}

/// Configured credentials first, then a client ID metadata document, then dynamic
/// registration; the token endpoint authenticated as the metadata says.
#[tokio::test]
async fn each_registration_path_and_token_endpoint_auth_method() {
    const DOC: &str = "https://client.example/switchboard.json";
    for (what, options, oauth, client, method, registers) in [
        (
            "configured, basic",
            json!({"clients": [{"client_id": "sb", "client_secret": "s3cret"}]}),
            Some(configured("sb", Some("s3cret"))),
            "sb",
            "client_secret_basic",
            false,
        ),
        (
            "configured, post only",
            json!({"auth_methods": ["client_secret_post"],
                   "clients": [{"client_id": "sb", "client_secret": "s3cret"}]}),
            Some(configured("sb", Some("s3cret"))),
            "sb",
            "client_secret_post",
            false,
        ),
        (
            "configured public client",
            json!({"clients": [{"client_id": "sb-public"}]}),
            Some(configured("sb-public", None)),
            "sb-public",
            "none",
            false,
        ),
        (
            "metadata document",
            json!({"cimd": true}),
            Some(OAuthConfig {
                client_metadata_url: Some(DOC.into()),
                ..Default::default()
            }),
            DOC,
            "none",
            false,
        ),
        (
            "metadata document unsupported: registration",
            json!({}),
            Some(OAuthConfig {
                client_metadata_url: Some(DOC.into()),
                ..Default::default()
            }),
            "dcr-",
            "none",
            true,
        ),
        (
            "registered, the server issues a secret (basic)",
            json!({"auth_methods": ["client_secret_basic"]}),
            None,
            "dcr-",
            "client_secret_basic",
            true,
        ),
        (
            "registered, the server issues a secret (post)",
            json!({"auth_methods": ["client_secret_post"]}),
            None,
            "dcr-",
            "client_secret_post",
            true,
        ),
    ] {
        let srv = Protected::start(options).await;
        let gw = gateway(srv.server(oauth), TokenStoreKind::Memory, None).await;
        gw.wait_server("remote", "needs_login").await;
        let authorize = logged_in(&gw, &srv).await;
        assert!(
            authorize["client_id"].as_str().unwrap().starts_with(client),
            "{what}: {authorize}"
        );
        assert_eq!(
            srv.log("register").await.len(),
            usize::from(registers),
            "{what}"
        );
        let tokens = srv.log("token").await;
        assert_eq!(tokens.len(), 1, "{what}: {tokens:?}");
        assert_eq!(tokens[0]["method"], method, "{what}: {tokens:?}");
        assert!(tokens[0]["error"].is_null(), "{what}: {tokens:?}");
    }
}

/// Scopes: the config's, else the challenge's, else `scopes_supported`, else none.
#[tokio::test]
async fn scopes_come_from_the_config_the_challenge_or_scopes_supported() {
    for (what, options, scopes, expected) in [
        ("none anywhere", json!({}), vec![], Value::Null),
        (
            "scopes_supported",
            json!({"scopes_supported": ["alpha", "beta"]}),
            vec![],
            json!("alpha beta"),
        ),
        (
            "the challenge first",
            json!({"challenge_scope": "read", "scopes_supported": ["alpha", "beta"]}),
            vec![],
            json!("read"),
        ),
        (
            "the config above all",
            json!({"challenge_scope": "read"}),
            vec!["mine".to_owned()],
            json!("mine"),
        ),
    ] {
        let srv = Protected::start(options).await;
        let oauth = OAuthConfig {
            scopes,
            ..Default::default()
        };
        let gw = gateway(srv.server(Some(oauth)), TokenStoreKind::Memory, None).await;
        gw.wait_server("remote", "needs_login").await;
        let authorize = logged_in(&gw, &srv).await;
        // the challenge's scope may be joined by what the resource lists
        match expected.as_str() {
            Some("read") => assert!(
                authorize["scope"]
                    .as_str()
                    .unwrap()
                    .split(' ')
                    .any(|s| s == "read"),
                "{what}: {authorize}"
            ),
            _ => assert_eq!(authorize["scope"], expected, "{what}: {authorize}"),
        }
    }
}

/// A `403 insufficient_scope` fails the call naming the scope; the next login asks for it and
/// the call then passes. Where the authorization server never grants it, the error says so
/// after three logins.
#[tokio::test]
async fn step_up_on_insufficient_scope_is_bounded() {
    let srv = Protected::start(json!({"challenge_scope": "read"})).await;
    let gw = gateway(srv.server(None), TokenStoreKind::Memory, None).await;
    gw.wait_server("remote", "needs_login").await;
    logged_in(&gw, &srv).await;
    let refused = call(&gw, "admin_action").await;
    let text = error_text(&refused);
    assert!(
        text.contains("\"read admin\"") && text.contains("log in again"),
        "{text}"
    );
    let authorize = logged_in(&gw, &srv).await;
    let asked: Vec<&str> = authorize["scope"].as_str().unwrap().split(' ').collect();
    assert!(
        asked.contains(&"read") && asked.contains(&"admin"),
        "{authorize}"
    );
    assert_eq!(call(&gw, "admin_action").await.text(), "done");

    // an authorization server that never grants it
    let srv = Protected::start(json!({"challenge_scope": "read", "grant": ["read"]})).await;
    let gw = gateway(srv.server(None), TokenStoreKind::Memory, None).await;
    gw.wait_server("remote", "needs_login").await;
    logged_in(&gw, &srv).await;
    for _ in 0..3 {
        let text = error_text(&call(&gw, "admin_action").await);
        assert!(text.contains("log in again"), "{text}");
        logged_in(&gw, &srv).await;
    }
    let text = error_text(&call(&gw, "admin_action").await);
    assert!(text.contains("still after 3 logins"), "{text}");
}

/// Tokens are refreshed on a 401 (and the rotated refresh token kept: the old one is spent),
/// and before they expire.
#[tokio::test]
async fn tokens_are_refreshed_on_401_and_before_expiry_with_rotation() {
    let srv = Protected::start(json!({"rotate": true})).await;
    let gw = gateway(srv.server(None), TokenStoreKind::Memory, None).await;
    gw.wait_server("remote", "needs_login").await;
    logged_in(&gw, &srv).await;
    for round in 1..=3 {
        srv.admin("expire-all").await;
        let who = call(&gw, "whoami").await;
        assert!(who.text().contains("client_id"), "round {round}: {who:?}");
        let refreshes: Vec<Value> = srv
            .log("token")
            .await
            .into_iter()
            .filter(|t| t["grant_type"] == "refresh_token")
            .collect();
        assert_eq!(refreshes.len(), round, "{refreshes:?}");
        assert!(refreshes.iter().all(|t| t["resource"] == srv.mcp.as_str()));
    }
    assert_eq!(gw.server("remote").await["state"], "running");

    // a token that expires within 30 s is refreshed before it is sent
    let srv = Protected::start(json!({"token_ttl": 20})).await;
    let gw = gateway(srv.server(None), TokenStoreKind::Memory, None).await;
    gw.wait_server("remote", "needs_login").await;
    logged_in(&gw, &srv).await;
    let refused_before = srv.log("mcp_refused").await.len();
    call(&gw, "whoami").await;
    let refreshes = srv
        .log("token")
        .await
        .into_iter()
        .filter(|t| t["grant_type"] == "refresh_token")
        .count();
    assert!(refreshes >= 1, "refreshed before expiry");
    assert_eq!(
        srv.log("mcp_refused").await.len(),
        refused_before,
        "no 401 needed"
    );
}

/// Revoked tokens: the 401, a refused refresh, then `needs_login` with one event, and calls
/// that say how to log in.
#[tokio::test]
async fn revoked_tokens_fall_back_to_needs_login_once() {
    let srv = Protected::start(json!({})).await;
    let gw = gateway(srv.server(None), TokenStoreKind::Memory, None).await;
    gw.wait_server("remote", "needs_login").await;
    logged_in(&gw, &srv).await;
    let mut events = gw.events().await;
    srv.admin("revoke-all").await;
    let text = error_text(&call(&gw, "whoami").await);
    assert!(text.contains("switchboard login remote"), "{text}");
    let parked = gw.wait_server("remote", "needs_login").await;
    assert!(
        parked["last_error"]
            .as_str()
            .unwrap()
            .contains("could not be refreshed"),
        "{parked}"
    );
    let mut needs_login = 0;
    while let Some((name, event)) = events.next_within(Duration::from_millis(1500)).await {
        if name == "server_state" && event["server"] == "remote" && event["state"] == "needs_login"
        {
            needs_login += 1;
        }
    }
    assert_eq!(needs_login, 1, "one needs_login event");
    let text = error_text(&call(&gw, "whoami").await);
    assert!(
        text.contains("waiting for a login") && text.contains("switchboard login remote"),
        "{text}"
    );
}

/// Bad input: each login fails with its reason, in bounded time, and nothing is stored.
#[tokio::test]
async fn bad_metadata_and_bad_callbacks_fail_clearly_and_store_nothing() {
    for (options, mode, timeout, expected) in [
        (json!({"wrong_resource": true}), "follow", 20, "resource"),
        (json!({"pkce": ["plain"]}), "follow", 20, "S256"),
        (
            json!({"pkce": null}),
            "follow",
            20,
            "code_challenge_methods_supported",
        ),
        (
            json!({"dcr": false}),
            "follow",
            20,
            "no dynamic client registration",
        ),
        (
            json!({"prm_body": "garbage", "prm": "root"}),
            "follow",
            20,
            "cannot be used",
        ),
        (
            json!({"prm_body": "garbage", "advertise": false}),
            "follow",
            20,
            "2025-03-26 default endpoints",
        ),
        (json!({"issuer_mismatch": true}), "follow", 20, "issuer"),
        (json!({"deny": true}), "follow", 20, "access_denied"),
        (json!({}), "ignore", 2, "no answer from the browser"),
        (json!({}), "wrong-state", 3, "no answer from the browser"),
    ] {
        let what = format!("{options} {mode}");
        let srv = Protected::start(options).await;
        let gw = gateway(srv.server(None), TokenStoreKind::Memory, None).await;
        gw.wait_server("remote", "needs_login").await;
        let started = std::time::Instant::now();
        let done = login(&gw, mode, timeout).await;
        assert!(!done.ok, "{what}: {}", done.stdout);
        assert!(done.stderr.contains(expected), "{what}: {}", done.stderr);
        assert!(
            started.elapsed() < Duration::from_secs(timeout + 15),
            "{what}: bounded"
        );
        if mode == "wrong-state" {
            let page = &done.browser[0];
            assert_eq!(page["status"], 400, "{what}: {page}");
            assert!(
                page["body"]
                    .as_str()
                    .unwrap()
                    .contains("wrong or stale state")
            );
        }
        let entry = gw.server("remote").await;
        assert_eq!(entry["oauth"]["logged_in"], false, "{what}: {entry}");
        assert_eq!(entry["state"], "needs_login", "{what}");
        assert!(
            srv.log("token").await.is_empty(),
            "{what}: no token was asked for"
        );
    }

    // an authorization server that is down
    let srv = Protected::start(json!({})).await;
    let gw = gateway(srv.server(None), TokenStoreKind::Memory, None).await;
    gw.wait_server("remote", "needs_login").await;
    srv.admin("down").await;
    let done = login(&gw, "follow", 20).await;
    assert!(!done.ok);
    assert!(
        done.stderr.contains("cannot find how to log in"),
        "{}",
        done.stderr
    );
    assert_eq!(gw.server("remote").await["oauth"]["logged_in"], false);
}

/// A login outlives the gateway (kept in `oauth.json`, mode 0600, beside `clients.json`);
/// `switchboard logout` revokes the tokens, deletes them, and the server needs a login again.
#[tokio::test]
async fn logins_persist_in_the_file_store_and_logout_forgets_them() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Protected::start(json!({})).await;
    let gw = gateway(srv.server(None), TokenStoreKind::File, Some(dir.path())).await;
    gw.wait_server("remote", "needs_login").await;
    logged_in(&gw, &srv).await;
    let file = dir.path().join("oauth.json");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    gw.stop().await.unwrap();

    let gw = gateway(srv.server(None), TokenStoreKind::File, Some(dir.path())).await;
    gw.wait_server("remote", "running").await;
    assert!(call(&gw, "whoami").await.text().contains("client_id"));
    assert_eq!(srv.log("authorize").await.len(), 1, "no second login");

    let out = tokio::process::Command::new(SWITCHBOARD_BIN)
        .args(["logout", "remote", "--data-dir"])
        .arg(dir.path())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("logged out of remote"));
    let revoked = srv.log("revoke").await;
    assert_eq!(revoked.len(), 2, "refresh and access token: {revoked:?}");
    gw.wait_server("remote", "needs_login").await;
    let kept: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(kept, json!({}), "nothing left in the store");
}

/// `redirect_port`: the callback comes to that fixed port, listened on for the login only.
#[tokio::test]
async fn a_fixed_redirect_port_takes_the_callback() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let srv = Protected::start(json!({})).await;
    let oauth = OAuthConfig {
        redirect_port: Some(port),
        ..Default::default()
    };
    let gw = gateway(srv.server(Some(oauth)), TokenStoreKind::Memory, None).await;
    gw.wait_server("remote", "needs_login").await;
    let authorize = logged_in(&gw, &srv).await;
    assert_eq!(
        authorize["redirect_uri"],
        format!("http://127.0.0.1:{port}/oauth/callback")
    );
    // the listener is gone with the login
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
    );
}

/// A server that needs a login behind the gateway's other ways in: a call on its own endpoint
/// (`/mcp/remote`) says it waits for a login and how to log in; with `sessions = "isolated"`
/// every client session's own instance connects with the one login, and refreshes with
/// rotation (single-use refresh tokens) keep all of them running.
#[tokio::test]
async fn its_own_endpoint_and_isolated_instances_share_the_one_login() {
    let srv = Protected::start(json!({"rotate": true})).await;
    let mut server = srv.server(None);
    server.sessions = switchboard_core::config::SessionMode::Isolated;
    let gw = gateway(server, TokenStoreKind::Memory, None).await;
    gw.wait_server("remote", "needs_login").await;
    let mut own = McpHttp::to(gw.url("/mcp/remote"), gw.token.clone())
        .initialize()
        .await;
    let refused = own.call("whoami", json!({})).await;
    let text = error_text(&refused);
    assert!(
        text.contains("'remote' is waiting for a login")
            && text.contains("switchboard login remote"),
        "{text}"
    );

    logged_in(&gw, &srv).await;
    let mut sessions = Vec::new();
    for _ in 0..2 {
        sessions.push(McpHttp::connect(&gw).await);
    }
    for round in 0..3 {
        for (i, mcp) in sessions.iter_mut().enumerate() {
            let who = mcp.call("remote__whoami", json!({})).await;
            assert!(
                who.text().contains("client_id"),
                "round {round}, session {i}: {who:?}"
            );
        }
        srv.admin("expire-all").await;
    }
    let who = own.call("whoami", json!({})).await;
    assert!(
        who.text().contains("client_id"),
        "its own endpoint: {who:?}"
    );
    assert_eq!(
        srv.log("token")
            .await
            .iter()
            .filter(|t| t["grant_type"] == "authorization_code")
            .count(),
        1,
        "one login"
    );
    assert_eq!(gw.server("remote").await["state"], "running");
}
