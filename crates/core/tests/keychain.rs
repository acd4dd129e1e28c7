//! A real round trip of the client list through the OS keychain (on Linux: the Secret Service
//! on the D-Bus session bus).
//!
//! Ignored by default because it needs a running, unlocked keychain. `scripts/test-keychain`
//! starts one (gnome-keyring in a private D-Bus session) and runs this with `--ignored`; run
//! that way, a missing or locked keychain is a failure, not a skip.

use switchboard_core::auth::keychain::{ACCOUNT, KeychainTokenStore};
use switchboard_core::auth::store::{ClientRecord, TokenStore, TokenStoreError};

fn record(name: &str, role: Option<&str>, last_seen_ms: Option<i64>) -> ClientRecord {
    ClientRecord {
        name: name.into(),
        role: role.map(Into::into),
        token_sha256: format!("{:064x}", name.len()),
        created_ms: 1_700_000_000_000,
        last_seen_ms,
        name_budget: None,
    }
}

/// Deletes the test's keychain entry however the test ends.
struct Cleanup(KeychainTokenStore);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Err(e) = self.0.delete() {
            eprintln!("could not delete the test keychain entry: {e}");
        }
    }
}

#[test]
#[ignore = "needs a running, unlocked OS keychain; run scripts/test-keychain"]
fn client_list_round_trips_through_the_os_keychain() {
    let service = format!("switchboard-test-{}", uuid::Uuid::new_v4().simple());
    let store = KeychainTokenStore::new(&service);
    if let Err(e) = store.probe() {
        panic!("{} is not usable: {e:?}", store.describe());
    }
    let _cleanup = Cleanup(store.clone());

    assert_eq!(
        store.load().expect("load a missing entry"),
        Vec::new(),
        "fresh entry is empty"
    );

    let clients = vec![
        record("claude-desktop", Some("reader"), Some(1_700_000_000_123)),
        record("cursor", None, None),
    ];
    store.save(&clients).expect("save two clients");
    assert_eq!(store.load().expect("load two clients"), clients);
    // Persisted in the keychain, not in the value: a fresh handle sees the same list, and
    // another service name sees nothing.
    assert_eq!(
        KeychainTokenStore::new(&service).load().expect("reload"),
        clients
    );
    let other = KeychainTokenStore::new(&format!("{service}-other"));
    assert_eq!(other.load().expect("load another service"), Vec::new());

    store.save(&[]).expect("save an empty list");
    assert_eq!(store.load().expect("load the empty list"), Vec::new());

    keyring::Entry::new(&service, ACCOUNT)
        .and_then(|entry| entry.set_password("not json"))
        .expect("write garbage into the entry");
    assert!(
        matches!(store.load(), Err(TokenStoreError::Corrupt(_))),
        "garbage in the entry must be reported as corrupt"
    );

    store.delete().expect("delete the entry");
    assert_eq!(store.load().expect("load after delete"), Vec::new());
    store.delete().expect("deleting a missing entry is fine");
}

#[test]
#[ignore = "needs a running, unlocked OS keychain; run scripts/test-keychain"]
fn remote_header_secrets_are_read_from_the_os_keychain() {
    use switchboard_core::auth::keychain::KeychainSecrets;
    use switchboard_core::auth::store::SecretStore;

    let service = format!("switchboard-test-{}", uuid::Uuid::new_v4().simple());
    let entry = keyring::Entry::new(&service, "remote-api").expect("keychain entry");
    struct Delete(keyring::Entry);
    impl Drop for Delete {
        fn drop(&mut self) {
            let _ = self.0.delete_credential();
        }
    }
    let secrets = KeychainSecrets;
    assert_eq!(
        secrets
            .secret(&service, "remote-api")
            .expect("read a missing secret"),
        None
    );
    entry
        .set_password("tok-123 with spaces")
        .expect("store the secret the way a person would");
    let _cleanup = Delete(entry);
    assert_eq!(
        secrets.secret(&service, "remote-api").expect("read it"),
        Some("tok-123 with spaces".to_owned())
    );
    assert_eq!(
        secrets
            .secret(&service, "other-account")
            .expect("another account"),
        None
    );
}

/// `switchboard serve` without `token_store` in the config, where a Secret Service is on the
/// bus: the keychain is used (the file fallback is only for machines without one), so pairing
/// writes the keychain entry and no `clients.json`.
#[tokio::test]
#[ignore = "needs a running, unlocked OS keychain; run scripts/test-keychain"]
async fn serve_keeps_using_the_keychain_where_there_is_one() {
    use std::process::{Command, Stdio};
    use std::time::Duration;
    use tokio::io::AsyncBufReadExt;

    let service = format!("switchboard-test-{}", uuid::Uuid::new_v4().simple());
    let store = KeychainTokenStore::new(&service);
    let _cleanup = Cleanup(store.clone());
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, format!("[auth]\nkeychain_service = \"{service}\"\n")).unwrap();
    let data = dir.path().join("data");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&cfg)
        .arg("--data-dir")
        .arg(&data)
        .env("SWITCHBOARD_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("startup line in time")
        .unwrap()
        .expect("a startup line");
    let base = line
        .strip_prefix("Switchboard listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["pair", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let code = String::from_utf8(out.stdout).unwrap();
    let code = code.lines().last().unwrap();
    let paired: serde_json::Value = reqwest::Client::new()
        .post(format!("{base}/pair"))
        .json(&serde_json::json!({"code": code, "name": "keychain-auto"}))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(paired["name"], "keychain-auto", "{paired}");
    let stored = store.load().expect("load the entry the gateway wrote");
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0].name, "keychain-auto");
    assert!(
        !data.join("clients.json").exists(),
        "no file where there is a keychain"
    );
    child.start_kill().unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
}
