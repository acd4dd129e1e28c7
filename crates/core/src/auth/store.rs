//! Where secrets are kept: paired clients' token hashes ([`TokenStore`]: the OS keychain in
//! the product, a 0600 file where the config asks for it or the headless binary finds no
//! keychain, memory in tests; only
//! `sha256(token)` is ever stored) and the secrets that remote servers' headers name
//! ([`SecretStore`]: the OS keychain, memory in tests). [`Stores`] hands either to the gateway
//! in place of the configured one.
//!
//! Both traits are blocking on purpose (keychain APIs are, and a locked keychain may never
//! answer): async callers go through [`blocking`] and [`read_secret`], which run the call on a
//! blocking thread bounded by [`STORE_TIMEOUT`].

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A keychain that does not answer by then is reported as locked.
pub(crate) const STORE_TIMEOUT: Duration = Duration::from_secs(10);

/// Stores that the caller of `serve_with` / `Gateway::open_with` hands in instead of the ones
/// the config names (tests: in memory). `None` (the default) means: as configured, which for
/// secrets is always the OS keychain.
#[derive(Debug, Clone, Default)]
pub struct Stores {
    /// Where paired clients are kept, instead of `auth.token_store`.
    pub tokens: Option<Arc<dyn TokenStore>>,
    /// Where `{ keychain = "service/account" }` header values are read, instead of the OS
    /// keychain.
    pub secrets: Option<Arc<dyn SecretStore>>,
    /// Where OAuth logins to remote servers (tokens, registered clients) are kept, instead of
    /// the store beside the paired clients (the OS keychain, or `oauth.json` where those are
    /// in `clients.json`).
    pub oauth: Option<Arc<dyn SecretStore>>,
    /// Whether `token_store = "auto"` (the default) may fall back to the 0600 file
    /// `<data dir>/clients.json` where no OS keychain is on this machine (unavailable, not
    /// locked). The headless binary sets it; the desktop app does not, and insists on the
    /// keychain.
    pub file_fallback: bool,
    /// The wall clock the gateway compares with the monotonic one to notice that the machine
    /// slept (tests move it on), instead of the system's.
    pub wall_clock: Option<WallClock>,
    /// The routing table the gateway watches for a network coming back (tests change it),
    /// instead of `/proc/net/route`.
    pub routes: Option<RouteTable>,
    /// The D-Bus address where logind's `PrepareForSleep` is listened for (tests run their
    /// own bus), instead of the system bus.
    pub system_bus: Option<String>,
}

/// A wall clock: `SystemTime::now` unless a test hands in another.
#[derive(Clone)]
pub struct WallClock(pub Arc<dyn Fn() -> std::time::SystemTime + Send + Sync>);

impl std::fmt::Debug for WallClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WallClock")
    }
}

/// A routing table in `/proc/net/route`'s format: the system's unless a test hands in another.
#[derive(Clone)]
pub struct RouteTable(pub Arc<dyn Fn() -> std::io::Result<String> + Send + Sync>);

impl std::fmt::Debug for RouteTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RouteTable")
    }
}

/// The secret stores a remote server uses, as the gateway hands them to its upstreams.
#[derive(Debug, Clone)]
pub struct Secrets {
    /// Where `{ keychain = "service/account" }` values of the config are read (headers, an
    /// OAuth client secret): always the OS keychain in the product.
    pub headers: Arc<dyn SecretStore>,
    /// Where OAuth logins are kept (tokens, registered clients).
    pub oauth: Arc<dyn SecretStore>,
    /// The service OAuth logins are kept under; the account is the server's name.
    pub oauth_service: String,
}

impl Secrets {
    /// Both in memory (tests).
    pub fn in_memory() -> Self {
        Self {
            headers: Arc::new(MemorySecrets::default()),
            oauth: Arc::new(MemorySecrets::default()),
            oauth_service: "switchboard-oauth".into(),
        }
    }
}

/// Why a blocking call gave no answer.
enum Unanswered {
    /// Not within [`STORE_TIMEOUT`].
    Timeout,
    /// The blocking task panicked or was cancelled.
    Failed(tokio::task::JoinError),
}

/// Runs `f` on a blocking thread, bounded by [`STORE_TIMEOUT`] (the thread itself may linger
/// if the keychain never answers; nobody waits for it).
async fn off_runtime<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Unanswered> {
    match tokio::time::timeout(STORE_TIMEOUT, tokio::task::spawn_blocking(f)).await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => Err(Unanswered::Failed(e)),
        Err(_) => Err(Unanswered::Timeout),
    }
}

/// Runs a blocking store call off the runtime, bounded by [`STORE_TIMEOUT`]; `what` names it
/// in the error ("loading paired clients").
pub(crate) async fn blocking<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> Result<T, TokenStoreError> + Send + 'static,
) -> Result<T, TokenStoreError> {
    match off_runtime(f).await {
        Ok(r) => r,
        Err(Unanswered::Failed(e)) => Err(TokenStoreError::Io(format!("{what} failed: {e}"))),
        Err(Unanswered::Timeout) => Err(TokenStoreError::Locked(format!(
            "the keychain did not answer {what} within {} s; is it locked? Unlock it and retry",
            STORE_TIMEOUT.as_secs()
        ))),
    }
}

/// The secret `(service, account)` from `store`, off the runtime and bounded in time; the
/// error says what to do (store it, unlock the keychain).
pub(crate) async fn read_secret(
    store: &Arc<dyn SecretStore>,
    service: &str,
    account: &str,
) -> Result<String, String> {
    match find_secret(store, service, account).await? {
        Some(secret) => Ok(secret),
        None => Err(format!(
            "no secret {service}/{account} in the {}; store it there (service {service:?}, \
             account {account:?})",
            store.describe()
        )),
    }
}

/// One paired client, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientRecord {
    /// Unique; what `switchboard unpair <name>` takes.
    pub name: String,
    /// Role whose allowlist applies; `None` means the configured default role.
    pub role: Option<String>,
    /// Lowercase hex of `sha256(token)`.
    pub token_sha256: String,
    pub created_ms: i64,
    pub last_seen_ms: Option<i64>,
    /// The longest tool name this client is handed (its own prefix and cap leave less than
    /// 64); `None`: the gateway's 64. Set by `switchboard setup` from the agent and its entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_budget: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenStoreError {
    /// No keychain service on this machine (e.g. a headless server without Secret Service).
    #[error("{0}")]
    Unavailable(String),
    /// The keychain exists but is locked, or did not answer in time.
    #[error("{0}")]
    Locked(String),
    #[error("{0}")]
    Io(String),
    /// Stored data that does not parse.
    #[error("{0}")]
    Corrupt(String),
}

/// Persistence of the paired clients. Blocking.
pub trait TokenStore: Send + Sync + std::fmt::Debug + 'static {
    /// For messages: "OS keychain (Secret Service)", "file /path/clients.json", "memory".
    fn describe(&self) -> String;
    /// Every paired client.
    fn load(&self) -> Result<Vec<ClientRecord>, TokenStoreError>;
    /// Replaces the stored set.
    fn save(&self, clients: &[ClientRecord]) -> Result<(), TokenStoreError>;
}

/// Where secrets named in the config are read (`headers = { Authorization = { keychain =
/// "service/account" } }` of remote servers), and where OAuth logins keep their tokens and
/// registered clients (written by Switchboard). Blocking, like [`TokenStore`].
pub trait SecretStore: Send + Sync + std::fmt::Debug + 'static {
    /// For messages: "OS keychain (Secret Service)", "memory".
    fn describe(&self) -> String;
    /// The secret of `(service, account)`; `Ok(None)` when there is none.
    fn secret(&self, service: &str, account: &str) -> Result<Option<String>, TokenStoreError>;
    /// Stores `secret` under `(service, account)`, replacing what was there (an OAuth login;
    /// `switchboard adopt` moves the secrets it finds in agents' configs here).
    fn set_secret(&self, service: &str, account: &str, secret: &str)
    -> Result<(), TokenStoreError>;
    /// Removes `(service, account)`; succeeds if there was none.
    fn delete_secret(&self, service: &str, account: &str) -> Result<(), TokenStoreError>;
}

/// One [`SecretStore`] call off the runtime, bounded by [`STORE_TIMEOUT`]; `doing` names it in
/// the errors ("writing", "deleting", "reading"), which name the secret but never hold it.
async fn secret_call<T: Send + 'static>(
    store: &Arc<dyn SecretStore>,
    service: &str,
    account: &str,
    doing: &str,
    f: impl FnOnce(&dyn SecretStore, &str, &str) -> Result<T, TokenStoreError> + Send + 'static,
) -> Result<T, String> {
    let describe = store.describe();
    let (store, s, a) = (store.clone(), service.to_owned(), account.to_owned());
    match off_runtime(move || f(store.as_ref(), &s, &a)).await {
        Ok(Ok(found)) => Ok(found),
        Ok(Err(e)) => Err(format!(
            "{doing} {service}/{account} in the {describe} failed: {e}"
        )),
        Err(Unanswered::Failed(e)) => Err(format!("{doing} {service}/{account} failed: {e}")),
        Err(Unanswered::Timeout) => Err(format!(
            "the {describe} did not answer within {} s {doing} {service}/{account}; is it locked?",
            STORE_TIMEOUT.as_secs()
        )),
    }
}

/// [`SecretStore::set_secret`] off the runtime, bounded by [`STORE_TIMEOUT`].
pub(crate) async fn write_secret(
    store: &Arc<dyn SecretStore>,
    service: &str,
    account: &str,
    secret: String,
) -> Result<(), String> {
    secret_call(store, service, account, "writing", move |st, s, a| {
        st.set_secret(s, a, &secret)
    })
    .await
}

/// [`SecretStore::delete_secret`] off the runtime, bounded by [`STORE_TIMEOUT`].
pub(crate) async fn delete_secret(
    store: &Arc<dyn SecretStore>,
    service: &str,
    account: &str,
) -> Result<(), String> {
    secret_call(store, service, account, "deleting", |st, s, a| {
        st.delete_secret(s, a)
    })
    .await
}

/// [`read_secret`] that tells "none stored" (`Ok(None)`) from a failure.
pub(crate) async fn find_secret(
    store: &Arc<dyn SecretStore>,
    service: &str,
    account: &str,
) -> Result<Option<String>, String> {
    secret_call(store, service, account, "reading", |st, s, a| {
        st.secret(s, a)
    })
    .await
}

/// Secrets held in memory (tests).
#[derive(Debug, Default)]
pub struct MemorySecrets {
    secrets: Mutex<std::collections::BTreeMap<(String, String), String>>,
}

impl MemorySecrets {
    pub fn insert(&self, service: &str, account: &str, secret: &str) {
        self.secrets
            .lock()
            .expect("secrets lock")
            .insert((service.to_owned(), account.to_owned()), secret.to_owned());
    }
}

impl SecretStore for MemorySecrets {
    fn describe(&self) -> String {
        "memory (not persisted)".into()
    }

    fn secret(&self, service: &str, account: &str) -> Result<Option<String>, TokenStoreError> {
        Ok(self
            .secrets
            .lock()
            .expect("secrets lock")
            .get(&(service.to_owned(), account.to_owned()))
            .cloned())
    }

    fn set_secret(
        &self,
        service: &str,
        account: &str,
        secret: &str,
    ) -> Result<(), TokenStoreError> {
        self.insert(service, account, secret);
        Ok(())
    }

    fn delete_secret(&self, service: &str, account: &str) -> Result<(), TokenStoreError> {
        self.secrets
            .lock()
            .expect("secrets lock")
            .remove(&(service.to_owned(), account.to_owned()));
        Ok(())
    }
}

/// Secrets in a JSON file readable by its owner only (`{"service/account": "secret"}`): where
/// paired clients are kept in a file too (`token_store = "file"`, or no keychain), OAuth logins
/// are kept in one beside it. Every call reads or rewrites the whole file, under a lock.
#[derive(Debug)]
pub struct FileSecrets {
    path: PathBuf,
    /// One writer at a time within the process (read, change, write back).
    lock: Mutex<()>,
}

impl FileSecrets {
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            lock: Mutex::new(()),
        }
    }

    fn read(&self) -> Result<std::collections::BTreeMap<String, String>, TokenStoreError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                TokenStoreError::Corrupt(format!(
                    "{} is not a secret map: {e}",
                    self.path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Default::default()),
            Err(e) => Err(TokenStoreError::Io(format!(
                "cannot read {}: {e}",
                self.path.display()
            ))),
        }
    }

    fn write(
        &self,
        map: &std::collections::BTreeMap<String, String>,
    ) -> Result<(), TokenStoreError> {
        let json = serde_json::to_vec_pretty(map).expect("strings serialize");
        write_private(&self.path, &json)
    }
}

impl SecretStore for FileSecrets {
    fn describe(&self) -> String {
        format!("file {}", self.path.display())
    }

    fn secret(&self, service: &str, account: &str) -> Result<Option<String>, TokenStoreError> {
        let _held = self.lock.lock().expect("file lock");
        Ok(self.read()?.remove(&format!("{service}/{account}")))
    }

    fn set_secret(
        &self,
        service: &str,
        account: &str,
        secret: &str,
    ) -> Result<(), TokenStoreError> {
        let _held = self.lock.lock().expect("file lock");
        let mut map = self.read()?;
        map.insert(format!("{service}/{account}"), secret.to_owned());
        self.write(&map)
    }

    fn delete_secret(&self, service: &str, account: &str) -> Result<(), TokenStoreError> {
        let _held = self.lock.lock().expect("file lock");
        let mut map = self.read()?;
        if map.remove(&format!("{service}/{account}")).is_some() {
            self.write(&map)?;
        }
        Ok(())
    }
}

/// Writes `bytes` to `path` atomically (a temporary file renamed over it), mode 0600.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TokenStoreError> {
    let io =
        |e: std::io::Error| TokenStoreError::Io(format!("cannot write {}: {e}", path.display()));
    let tmp = path.with_extension("json.tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp).map_err(io)?;
    std::io::Write::write_all(&mut file, bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// For tests and for `token_store = "memory"` (nothing survives a restart).
#[derive(Debug, Default)]
pub(crate) struct MemoryTokenStore {
    clients: Mutex<Vec<ClientRecord>>,
}

impl TokenStore for MemoryTokenStore {
    fn describe(&self) -> String {
        "memory (not persisted)".into()
    }

    fn load(&self) -> Result<Vec<ClientRecord>, TokenStoreError> {
        Ok(self.clients.lock().expect("clients lock").clone())
    }

    fn save(&self, clients: &[ClientRecord]) -> Result<(), TokenStoreError> {
        *self.clients.lock().expect("clients lock") = clients.to_vec();
        Ok(())
    }
}

/// A JSON file readable by its owner only: where the config says `token_store = "file"`, or
/// says nothing and the headless binary finds no keychain.
#[derive(Debug)]
pub(crate) struct FileTokenStore {
    path: PathBuf,
}

impl FileTokenStore {
    pub(crate) fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
        }
    }
}

impl TokenStore for FileTokenStore {
    fn describe(&self) -> String {
        format!("file {}", self.path.display())
    }

    fn load(&self) -> Result<Vec<ClientRecord>, TokenStoreError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                TokenStoreError::Corrupt(format!(
                    "{} is not a client list: {e}",
                    self.path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(TokenStoreError::Io(format!(
                "cannot read {}: {e}",
                self.path.display()
            ))),
        }
    }

    fn save(&self, clients: &[ClientRecord]) -> Result<(), TokenStoreError> {
        let json = serde_json::to_vec_pretty(clients).expect("records serialize");
        write_private(&self.path, &json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str) -> ClientRecord {
        ClientRecord {
            name: name.into(),
            role: Some("reader".into()),
            token_sha256: "ab".repeat(32),
            created_ms: 1,
            last_seen_ms: None,
            name_budget: None,
        }
    }

    #[test]
    fn file_secrets_round_trip_with_owner_only_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("oauth.json");
        let store = FileSecrets::new(&path);
        assert_eq!(store.secret("s", "a").unwrap(), None);
        store.set_secret("s", "a", "one").unwrap();
        store.set_secret("s", "b", "two").unwrap();
        store.set_secret("s", "a", "three").unwrap();
        assert_eq!(store.secret("s", "a").unwrap().as_deref(), Some("three"));
        assert_eq!(store.secret("s", "b").unwrap().as_deref(), Some("two"));
        store.delete_secret("s", "a").unwrap();
        store.delete_secret("s", "nothing").unwrap();
        assert_eq!(store.secret("s", "a").unwrap(), None);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, "nope").unwrap();
        assert!(matches!(
            store.secret("s", "b"),
            Err(TokenStoreError::Corrupt(_))
        ));
    }

    #[test]
    fn file_store_round_trips_with_owner_only_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileTokenStore::new(&dir.path().join("clients.json"));
        assert!(store.load().unwrap().is_empty());
        store.save(&[record("a"), record("b")]).unwrap();
        assert_eq!(store.load().unwrap(), vec![record("a"), record("b")]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("clients.json"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(dir.path().join("clients.json"), "nope").unwrap();
        assert!(matches!(store.load(), Err(TokenStoreError::Corrupt(_))));
    }
}
