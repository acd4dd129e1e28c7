//! Setup of every agent on golden config files (`setup/golden/<agent>/`): fresh, existing
//! with other servers and comments, malformed, read-only. The files a real setup writes are
//! compared with the golden ones after the token is replaced by `sb_TOKEN`; set
//! `SWITCHBOARD_UPDATE_GOLDEN=1` to rewrite the expected files (then read the diff).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::*;
use crate::auth::Auth;
use crate::auth::Roles;
use crate::auth::store::MemoryTokenStore;
use crate::events::EventBus;

const PORT: u16 = 11391;
const PROGRAM: &str = "/usr/local/bin/switchboard";

async fn pairer() -> (Pairer, Auth) {
    let bus = EventBus::new(16);
    let roles = Roles {
        default_role: "default".into(),
        roles: std::collections::BTreeMap::from([("default".into(), vec!["*".into()])]),
        code_ttl: Duration::from_secs(60),
    };
    let auth = Auth::open(Arc::new(MemoryTokenStore::default()), roles, bus.clone())
        .await
        .unwrap();
    // a gateway with no servers: pairing lists the configured servers' own endpoints
    let (store, _) = crate::store::Store::in_memory().unwrap();
    let gw = crate::mcp::McpGateway::new(
        &[],
        crate::config::GatewayConfig::default(),
        crate::auth::store::Secrets::in_memory(),
        bus.clone(),
        crate::telemetry::Telemetry::in_memory(Arc::new(store)).unwrap(),
        tokio_util::sync::CancellationToken::new(),
        tokio_util::task::TaskTracker::new(),
    );
    let pairing = Pairing::new(auth.clone(), gw, PORT);
    (Pairer::Local(pairing), auth)
}

fn options() -> Options {
    Options {
        use_cli: false,
        program: PROGRAM.into(),
        keychain: false,
        ..Options::default()
    }
}

fn golden_dir(client: Client) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/setup/golden")
        .join(client.id())
}

fn ext(client: Client) -> &'static str {
    if client == Client::Codex {
        "toml"
    } else {
        "json"
    }
}

/// The golden file `name`, or (updating) `actual` written as it.
fn golden(client: Client, name: &str, actual: &str) -> String {
    let path = golden_dir(client).join(format!("{name}.{}", ext(client)));
    if std::env::var_os("SWITCHBOARD_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The file as written, with the paired token replaced by `sb_TOKEN`.
fn masked(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = String::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("sb_") {
        out.push_str(&rest[..at]);
        let token: String = rest[at..].chars().take(3 + 64).collect();
        if token.len() == 67 && token[3..].chars().all(|c| c.is_ascii_hexdigit()) {
            out.push_str("sb_TOKEN");
            rest = &rest[at + 67..];
        } else {
            out.push_str("sb_");
            rest = &rest[at + 3..];
        }
    }
    out.push_str(rest);
    out
}

fn token_in(client: Client, path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let entries = edit::entries(client.format(), &text, client.table()).unwrap();
    client
        .read_entry(&entries[DEFAULT_ENTRY])
        .unwrap()
        .1
        .unwrap()
}

#[tokio::test]
async fn every_agent_from_no_file_gets_exactly_the_golden_entry() {
    for client in Client::ALL {
        let dir = tempfile::tempdir().unwrap();
        let places = Places::under(dir.path());
        let (pairer, auth) = pairer().await;
        let report = connect(&places, client, &options(), &pairer).await.unwrap();
        assert!(
            report.changed && report.backup.is_none(),
            "{client:?}: {report:?}"
        );
        let path = client.config_path(&places, Scope::User).unwrap();
        assert_eq!(report.path, path);
        let text = masked(&path);
        assert_eq!(text, golden(client, "fresh.out", &text), "{client:?}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(
                mode & 0o777,
                0o600,
                "{client:?}: a new file holding a token is owner-only"
            );
        }
        // the token written is paired, under the agent's name, with its name budget
        let caller = auth.verify(&token_in(client, &path)).unwrap();
        assert_eq!(caller.name, client.id());
        assert_eq!(caller.name_budget, Some(client.name_budget(DEFAULT_ENTRY)));
    }
}

#[tokio::test]
async fn an_existing_file_keeps_everything_else_twice_changes_nothing_and_remove_restores_it() {
    for client in Client::ALL {
        let dir = tempfile::tempdir().unwrap();
        let places = Places::under(dir.path());
        let path = client.config_path(&places, Scope::User).unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let original =
            std::fs::read(golden_dir(client).join(format!("existing.in.{}", ext(client)))).unwrap();
        std::fs::write(&path, &original).unwrap();
        let (pairer, auth) = pairer().await;

        let first = connect(&places, client, &options(), &pairer).await.unwrap();
        assert!(first.changed, "{client:?}");
        let text = masked(&path);
        assert_eq!(text, golden(client, "existing.out", &text), "{client:?}");
        // the backup is the file as it was, byte for byte
        assert_eq!(std::fs::read(first.backup.unwrap()).unwrap(), original);
        let token = token_in(client, &path);

        // twice: nothing changes, not even the token
        let bytes = std::fs::read(&path).unwrap();
        let second = connect(&places, client, &options(), &pairer).await.unwrap();
        assert!(
            !second.changed && second.backup.is_none(),
            "{client:?}: {second:?}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "{client:?}");
        assert_eq!(auth.clients().len(), 1, "{client:?}: no second pairing");

        // detection sees it connected
        let url = format!("http://127.0.0.1:{PORT}/mcp");
        let seen = detect(&places, &pairer, &url).await;
        let me = seen.iter().find(|d| d.client == client).unwrap();
        assert!(me.installed && me.connected, "{client:?}: {me:?}");
        assert_eq!(me.own_servers, 1, "{client:?}");

        let removed = disconnect(&places, client, &options(), &pairer)
            .await
            .unwrap();
        assert!(removed.changed, "{client:?}");
        assert_eq!(removed.revoked.as_deref(), Some(client.id()));
        assert_eq!(
            String::from_utf8(std::fs::read(&path).unwrap()).unwrap(),
            String::from_utf8(original.clone()).unwrap(),
            "{client:?}: removal gives back the file as it was"
        );
        assert!(auth.verify(&token).is_none(), "{client:?}: token revoked");
        let seen = detect(&places, &pairer, &url).await;
        assert!(!seen.iter().find(|d| d.client == client).unwrap().connected);
        // removing again: nothing to do
        let again = disconnect(&places, client, &options(), &pairer)
            .await
            .unwrap();
        assert!(!again.changed, "{client:?}");
    }
}

#[tokio::test]
async fn a_malformed_or_read_only_file_is_refused_untouched_and_nothing_is_paired() {
    for client in Client::ALL {
        let dir = tempfile::tempdir().unwrap();
        let places = Places::under(dir.path());
        let path = client.config_path(&places, Scope::User).unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let (pairer, auth) = pairer().await;

        let broken = match client.format() {
            edit::Format::Toml => "[mcp_servers\ncommand = \"x\"\n",
            edit::Format::Jsonc => "{\n  // half\n  \"servers\": {\n",
            edit::Format::Json => "{\"mcpServers\": {\"a\": {\"command\": \"x\",}}}",
        };
        std::fs::write(&path, broken).unwrap();
        let err = connect(&places, client, &options(), &pairer)
            .await
            .unwrap_err();
        assert!(
            matches!(err, SetupError::Malformed { .. })
                && err.to_string().contains(&*path.to_string_lossy()),
            "{client:?}: {err}"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), broken);
        assert!(auth.clients().is_empty(), "{client:?}: nothing paired");

        let original =
            std::fs::read(golden_dir(client).join(format!("existing.in.{}", ext(client)))).unwrap();
        std::fs::write(&path, &original).unwrap();
        let mut perms = std::fs::metadata(&path).unwrap().permissions();
        perms.set_readonly(true);
        std::fs::set_permissions(&path, perms).unwrap();
        let err = connect(&places, client, &options(), &pairer)
            .await
            .unwrap_err();
        assert!(matches!(err, SetupError::ReadOnly(_)), "{client:?}: {err}");
        assert!(err.to_string().contains("read-only"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), original);
        assert!(auth.clients().is_empty(), "{client:?}: nothing paired");
        let siblings = std::fs::read_dir(path.parent().unwrap()).unwrap().count();
        assert_eq!(siblings, 1, "{client:?}: no backup or temp file left");
    }
}

#[tokio::test]
async fn project_scope_writes_the_projects_file_and_agents_without_one_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let places = Places::under(dir.path());
    let (pairer, _auth) = pairer().await;
    let opts = Options {
        scope: Scope::Project,
        ..options()
    };
    let report = connect(&places, Client::ClaudeCode, &opts, &pairer)
        .await
        .unwrap();
    assert_eq!(report.path, places.project.join(".mcp.json"));
    let err = connect(&places, Client::Windsurf, &opts, &pairer)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("--scope user"), "{err}");
}

#[tokio::test]
async fn a_replaced_entry_revokes_the_token_it_held() {
    let dir = tempfile::tempdir().unwrap();
    let places = Places::under(dir.path());
    let (pairer, auth) = pairer().await;
    connect(&places, Client::Cursor, &options(), &pairer)
        .await
        .unwrap();
    let path = Client::Cursor.config_path(&places, Scope::User).unwrap();
    let old = token_in(Client::Cursor, &path);
    // the person edits the entry (another header): setup writes ours again, with a new token
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("\"headers\": {", "\"headers\": {\"X-Mine\": \"1\", "),
    )
    .unwrap();
    let report = connect(&places, Client::Cursor, &options(), &pairer)
        .await
        .unwrap();
    assert!(report.changed);
    assert_eq!(report.revoked.as_deref(), Some("cursor"));
    assert!(auth.verify(&old).is_none());
    assert_eq!(auth.clients().len(), 1);
}
