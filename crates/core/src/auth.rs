//! Who may use the gateway: pairing codes, tokens, roles.
//!
//! The local owner issues a one-time 6-digit code (tray, or `switchboard pair` over the
//! control socket); a client trades it at `POST /pair` for a token `sb_<64 hex>`, shown once.
//! Only `sha256(token)` is kept, in a [`store::TokenStore`] (the OS keychain in the product).
//! Every request that can reach a tool carries the token; its client's role decides which
//! tools it sees and may call ([`Roles`], in `auth/roles`). Unpairing revokes the token and
//! closes the client's sessions.
//!
//! Guessing is bounded per code, not per address (every local client is 127.0.0.1, so a
//! per-address lockout would let any local process lock the owner out): after
//! `MAX_WRONG_TRIES` (5) wrong codes every waiting code is cancelled and the owner is told
//! ([`HubEvent::PairingCodesBurned`]); the owner's next code works at once. No code is ever
//! exposed to more than `MAX_WRONG_TRIES` (5) guesses. A global bound of ten
//! tries a second (`MAX_TRIES_PER_SECOND`, from everyone together) keeps floods cheap.
//!
//! Below this file: `auth/roles` (allowlists), [`store`] (the store traits, and the bounded
//! off-runtime calls every keychain access goes through), [`keychain`] (the OS keychain).

pub mod keychain;
mod roles;
pub mod store;

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::events::{EventBus, HubEvent};
pub use roles::Roles;
pub(crate) use store::STORE_TIMEOUT;
use store::{ClientRecord, TokenStore, TokenStoreError, blocking};

pub(crate) const TOKEN_PREFIX: &str = "sb_";
/// Wrong codes (from anyone) while codes wait, before every waiting code is cancelled.
pub(crate) const MAX_WRONG_TRIES: u32 = 5;
/// Pairing tries (right or wrong, from everyone together) answered per `TRY_WINDOW`; more
/// are refused with a retry time, unchecked.
pub(crate) const MAX_TRIES_PER_SECOND: usize = 10;
const TRY_WINDOW: Duration = Duration::from_secs(1);
/// Codes waiting to be used at once; the oldest goes when another is issued.
const MAX_CODES: usize = 16;
/// `last_seen` is written to the store at most this often per client.
const LAST_SEEN_EVERY: Duration = Duration::from_secs(60);

/// A paired client as the API shows it (never its token or hash).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ClientView {
    pub name: String,
    pub role: String,
    pub created_ms: i64,
    pub last_seen_ms: Option<i64>,
    /// The longest tool name this client is handed, when less than 64.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name_budget: Option<usize>,
}

/// Who is calling; put into the request's extensions by the auth middleware.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub role: String,
    /// Cancelled when this client is unpaired: its streams and sessions end.
    pub revoked: CancellationToken,
    /// The longest tool name it is handed (`None`: 64); see [`ClientView::name_budget`].
    pub name_budget: Option<usize>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PairError {
    /// More than `MAX_TRIES_PER_SECOND` (10) tries came in (from anyone); nothing was checked.
    #[error(
        "too many pairing attempts (more than {MAX_TRIES_PER_SECOND} a second); try again in \
         {retry_after} s"
    )]
    RateLimited { retry_after: u64 },
    /// `attempts_left`: wrong tries left before every waiting code is cancelled (`Some(0)`:
    /// this try cancelled them); `None` when no code was waiting.
    #[error("wrong pairing code ({})", wrong_code_hint(*.attempts_left))]
    WrongCode { attempts_left: Option<u32> },
    #[error("this pairing code has expired; ask for a new one")]
    Expired,
    #[error("this code was issued for role '{0}'")]
    RoleMismatch(String),
    #[error("there is no role '{0}'")]
    UnknownRole(String),
    #[error("the token could not be stored: {0}")]
    Store(TokenStoreError),
}

fn wrong_code_hint(attempts_left: Option<u32>) -> String {
    match attempts_left {
        None => "no code is waiting; ask for a new one".into(),
        Some(0) => "0 attempts left: every waiting code is now cancelled; ask for a new one".into(),
        Some(n) => format!("{n} attempts left before every waiting code is cancelled"),
    }
}

#[derive(Debug)]
struct Code {
    digits: String,
    expires: Instant,
    role: Option<String>,
}

/// The codes waiting to be used, and the wrong tries made against them. One lock: a wrong
/// try is counted and the codes are cancelled as one step.
#[derive(Debug, Default)]
struct Waiting {
    /// Live and recently expired codes (expired ones stay a while, to be answered "expired").
    codes: Vec<Code>,
    /// Wrong tries since the codes waiting now began waiting (reset when they are cancelled,
    /// or when none is live): no code ever sees more than `MAX_WRONG_TRIES` (5).
    wrong_tries: u32,
}

/// Where a pairing code stands, for whoever shows it (the desktop app's pairing window).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum CodeState {
    /// Waiting to be used, for `left_ms` more.
    Pending { left_ms: u64 },
    /// Traded for a token by the client now named `by`.
    Used { by: String },
    /// Expired, never issued, pushed out by newer codes, or cancelled after wrong tries.
    Gone,
}

#[derive(Debug)]
struct Entry {
    record: ClientRecord,
    revoked: CancellationToken,
    last_saved_seen: Option<Instant>,
    /// Held in memory only (the desktop app's own webview): never stored, never listed.
    ephemeral: bool,
}

/// Cheap handle; clone freely.
#[derive(Debug, Clone)]
pub struct Auth {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Arc<dyn TokenStore>,
    /// By `token_sha256`.
    clients: RwLock<HashMap<String, Entry>>,
    codes: Mutex<Waiting>,
    /// The last codes traded for a token, with the client each paired (newest last).
    used: Mutex<VecDeque<(String, String)>>,
    /// When the last tries came in (at most `MAX_TRIES_PER_SECOND`, oldest first): the
    /// global rate bound.
    tries: Mutex<VecDeque<Instant>>,
    roles: Roles,
    bus: EventBus,
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Equality that takes the same time wherever the inputs differ.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Auth {
    /// Loads the paired clients from `store`.
    pub async fn open(
        store: Arc<dyn TokenStore>,
        roles: Roles,
        bus: EventBus,
    ) -> Result<Self, TokenStoreError> {
        let s = store.clone();
        let records = blocking("loading paired clients", move || s.load()).await?;
        let clients = records
            .into_iter()
            .map(|r| {
                (
                    r.token_sha256.clone(),
                    Entry {
                        record: r,
                        revoked: CancellationToken::new(),
                        last_saved_seen: None,
                        ephemeral: false,
                    },
                )
            })
            .collect();
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                clients: RwLock::new(clients),
                codes: Mutex::new(Waiting::default()),
                used: Mutex::new(VecDeque::new()),
                tries: Mutex::new(VecDeque::with_capacity(MAX_TRIES_PER_SECOND)),
                roles,
                bus,
            }),
        })
    }

    pub fn roles(&self) -> &Roles {
        &self.inner.roles
    }

    pub(crate) fn store_description(&self) -> String {
        self.inner.store.describe()
    }

    /// A new single-use code, valid for the roles' `code_ttl`; `role` binds the client it pairs.
    pub fn issue_code(&self, role: Option<String>) -> Result<String, PairError> {
        if let Some(r) = &role
            && !self.inner.roles.exists(r)
        {
            return Err(PairError::UnknownRole(r.clone()));
        }
        // rand's range sampling rejects the biased tail: every code is equally likely.
        let digits = format!("{:06}", rand::random_range(0..1_000_000u32));
        let mut waiting = self.inner.codes.lock().expect("codes lock");
        let ttl = self.inner.roles.code_ttl;
        let now = Instant::now();
        if !waiting.codes.iter().any(|c| c.expires > now) {
            // Tries against codes that have all gone threaten nothing new.
            waiting.wrong_tries = 0;
        }
        let codes = &mut waiting.codes;
        codes.retain(|c| c.expires + ttl > now);
        if codes.len() >= MAX_CODES {
            codes.remove(0);
        }
        codes.push(Code {
            digits: digits.clone(),
            expires: Instant::now() + ttl,
            role,
        });
        tracing::info!("pairing code issued");
        Ok(digits)
    }

    /// Whether `code` still waits to be used, was used (and by whom), or is gone.
    pub fn code_state(&self, code: &str) -> CodeState {
        let now = Instant::now();
        let pending = self
            .inner
            .codes
            .lock()
            .expect("codes lock")
            .codes
            .iter()
            .find(|c| c.digits == code)
            .map(|c| c.expires.saturating_duration_since(now));
        match pending {
            Some(left) if !left.is_zero() => CodeState::Pending {
                left_ms: u64::try_from(left.as_millis()).unwrap_or(u64::MAX),
            },
            Some(_) => CodeState::Gone,
            None => self
                .inner
                .used
                .lock()
                .expect("used lock")
                .iter()
                .rev()
                .find(|(digits, _)| digits == code)
                .map_or(CodeState::Gone, |(_, by)| CodeState::Used {
                    by: by.clone(),
                }),
        }
    }

    /// Trades a code for a token. `name` is made unique; `role` must fit the code.
    pub async fn pair(
        &self,
        from: IpAddr,
        code: &str,
        name: Option<String>,
        role: Option<String>,
    ) -> Result<(String, ClientView), PairError> {
        let now = Instant::now();
        self.admit_try(now)?;
        let (digits, code_role) = {
            let mut waiting = self.inner.codes.lock().expect("codes lock");
            let found = waiting
                .codes
                .iter()
                .position(|c| ct_eq(c.digits.as_bytes(), code.trim().as_bytes()));
            match found {
                Some(i) if waiting.codes[i].expires <= now => {
                    waiting.codes.remove(i);
                    return Err(PairError::Expired);
                }
                Some(i) => {
                    if let (Some(bound), Some(asked)) = (&waiting.codes[i].role, &role)
                        && bound != asked
                    {
                        return Err(PairError::RoleMismatch(bound.clone()));
                    }
                    let c = waiting.codes.remove(i);
                    // a right code is no guess: it does not count against the rate bound
                    // (an owner pairing many clients in a row is not a flood)
                    self.forget_try(now);
                    (c.digits, c.role)
                }
                None => return Err(self.wrong_try(&mut waiting, from, now)),
            }
        };
        let role = code_role.or(role);
        if let Some(r) = &role
            && !self.inner.roles.exists(r)
        {
            return Err(PairError::UnknownRole(r.clone()));
        }

        let (token, record) = self.new_record(name, role);
        self.inner.clients.write().expect("clients lock").insert(
            record.token_sha256.clone(),
            Entry {
                record: record.clone(),
                revoked: CancellationToken::new(),
                last_saved_seen: None,
                ephemeral: false,
            },
        );
        if let Err(e) = self.persist().await {
            self.inner
                .clients
                .write()
                .expect("clients lock")
                .remove(&record.token_sha256);
            return Err(PairError::Store(e));
        }
        let view = self.view(&record);
        {
            let mut used = self.inner.used.lock().expect("used lock");
            if used.len() >= MAX_CODES {
                used.pop_front();
            }
            used.push_back((digits, view.name.clone()));
        }
        tracing::info!(client = %view.name, role = %view.role, "client paired");
        self.inner.bus.publish(HubEvent::ClientPaired {
            name: view.name.clone(),
            role: view.role.clone(),
        });
        Ok((token, view))
    }

    /// Counts one try against the global rate bound, or refuses it (unchecked) when
    /// `MAX_TRIES_PER_SECOND` (10) came in within the last `TRY_WINDOW`.
    fn admit_try(&self, now: Instant) -> Result<(), PairError> {
        let mut tries = self.inner.tries.lock().expect("tries lock");
        while tries
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= TRY_WINDOW)
        {
            tries.pop_front();
        }
        if let Some(oldest) = tries.front()
            && tries.len() >= MAX_TRIES_PER_SECOND
        {
            let wait = (*oldest + TRY_WINDOW).saturating_duration_since(now);
            let retry_after = u64::try_from(wait.as_millis().div_ceil(1000))
                .unwrap_or(u64::MAX)
                .max(1);
            // Not a warning per refusal: a flood would flood the log too.
            tracing::debug!("pairing attempts over {MAX_TRIES_PER_SECOND}/s; refused");
            return Err(PairError::RateLimited { retry_after });
        }
        tries.push_back(now);
        Ok(())
    }

    /// Takes back the try counted at `now` (it was a right code).
    fn forget_try(&self, now: Instant) {
        let mut tries = self.inner.tries.lock().expect("tries lock");
        if let Some(i) = tries.iter().rposition(|t| *t == now) {
            tries.remove(i);
        }
    }

    /// A code that matches none: counted against the codes waiting, which are all cancelled
    /// at the fifth (`MAX_WRONG_TRIES`; and the owner is told). Returns the answer for the caller.
    fn wrong_try(&self, waiting: &mut Waiting, from: IpAddr, now: Instant) -> PairError {
        let live = waiting.codes.iter().filter(|c| c.expires > now).count();
        if live == 0 {
            waiting.wrong_tries = 0;
            return PairError::WrongCode {
                attempts_left: None,
            };
        }
        waiting.wrong_tries += 1;
        let left = MAX_WRONG_TRIES.saturating_sub(waiting.wrong_tries);
        if left == 0 {
            let wrong_tries = waiting.wrong_tries;
            waiting.codes.clear();
            waiting.wrong_tries = 0;
            tracing::warn!(
                %from,
                codes = live,
                "{wrong_tries} wrong pairing codes: every waiting code is cancelled"
            );
            self.inner.bus.publish(HubEvent::PairingCodesBurned {
                wrong_tries,
                codes: live,
            });
        }
        PairError::WrongCode {
            attempts_left: Some(left),
        }
    }

    /// A fresh token and its record, under a name no other client has.
    fn new_record(&self, name: Option<String>, role: Option<String>) -> (String, ClientRecord) {
        let mut secret = [0u8; 32];
        rand::fill(&mut secret);
        let token = format!(
            "{TOKEN_PREFIX}{}",
            secret
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        let clients = self.inner.clients.read().expect("clients lock");
        let base = name
            .map(|n| n.trim().chars().take(64).collect::<String>())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "client".into());
        let taken = |n: &str| clients.values().any(|e| e.record.name == n);
        let mut unique = base.clone();
        let mut i = 2;
        while taken(&unique) {
            unique = format!("{base}-{i}");
            i += 1;
        }
        let record = ClientRecord {
            name: unique,
            role,
            token_sha256: sha256_hex(token.as_bytes()),
            created_ms: now_ms(),
            last_seen_ms: None,
            name_budget: None,
        };
        (token, record)
    }

    /// A token for the desktop app's own webview: valid until the gateway stops, held in
    /// memory only (never written to the token store) and not listed among paired clients.
    pub fn issue_ephemeral(&self, name: &str) -> String {
        let (token, record) = self.new_record(Some(name.to_owned()), None);
        self.inner.clients.write().expect("clients lock").insert(
            record.token_sha256.clone(),
            Entry {
                record,
                revoked: CancellationToken::new(),
                last_saved_seen: None,
                ephemeral: true,
            },
        );
        token
    }

    fn view(&self, r: &ClientRecord) -> ClientView {
        ClientView {
            name: r.name.clone(),
            role: r
                .role
                .clone()
                .unwrap_or_else(|| self.inner.roles.default_role.clone()),
            created_ms: r.created_ms,
            last_seen_ms: r.last_seen_ms,
            name_budget: r.name_budget,
        }
    }

    async fn persist(&self) -> Result<(), TokenStoreError> {
        let records: Vec<ClientRecord> = {
            let clients = self.inner.clients.read().expect("clients lock");
            let mut v: Vec<ClientRecord> = clients
                .values()
                .filter(|e| !e.ephemeral)
                .map(|e| e.record.clone())
                .collect();
            v.sort_by(|a, b| a.created_ms.cmp(&b.created_ms).then(a.name.cmp(&b.name)));
            v
        };
        let store = self.inner.store.clone();
        blocking("saving paired clients", move || store.save(&records)).await
    }

    /// The caller behind a bearer token, if it is paired.
    pub(crate) fn verify(&self, token: &str) -> Option<Caller> {
        if !token.starts_with(TOKEN_PREFIX) {
            return None;
        }
        let hash = sha256_hex(token.as_bytes());
        let mut save = false;
        let caller = {
            let mut clients = self.inner.clients.write().expect("clients lock");
            let entry = clients.get_mut(&hash)?;
            if !ct_eq(entry.record.token_sha256.as_bytes(), hash.as_bytes()) {
                return None;
            }
            entry.record.last_seen_ms = Some(now_ms());
            if !entry.ephemeral
                && entry
                    .last_saved_seen
                    .is_none_or(|t| t.elapsed() > LAST_SEEN_EVERY)
            {
                entry.last_saved_seen = Some(Instant::now());
                save = true;
            }
            Caller {
                name: entry.record.name.clone(),
                role: entry
                    .record
                    .role
                    .clone()
                    .unwrap_or_else(|| self.inner.roles.default_role.clone()),
                revoked: entry.revoked.clone(),
                name_budget: entry.record.name_budget,
            }
        };
        if save {
            let me = self.clone();
            // Not on the gateway's tracker (Auth has none): it ends by itself within
            // STORE_TIMEOUT (`blocking`), and a last-seen time lost at exit is harmless.
            tokio::spawn(async move {
                if let Err(e) = me.persist().await {
                    tracing::warn!(error = %e, "could not save last-seen times");
                }
            });
        }
        Some(caller)
    }

    /// Revokes a client: its token stops working, its streams and sessions close.
    /// Returns the session ids to close, or `None` if no client has that name.
    /// The client's sessions are the session registry's (`mcp::session`); `false` if no
    /// client has that name.
    pub async fn unpair(&self, name: &str) -> Result<bool, TokenStoreError> {
        let removed = {
            let mut clients = self.inner.clients.write().expect("clients lock");
            let key = clients
                .iter()
                .find(|(_, e)| e.record.name == name)
                .map(|(k, _)| k.clone());
            key.and_then(|k| clients.remove(&k))
        };
        let Some(entry) = removed else {
            return Ok(false);
        };
        entry.revoked.cancel();
        tracing::info!(client = %name, "client unpaired");
        self.inner.bus.publish(HubEvent::ClientUnpaired {
            name: name.to_owned(),
        });
        self.persist().await?;
        Ok(true)
    }

    /// Sets the tool-name budget of the client `name` (`None`: the gateway's 64), kept with
    /// it in the store; its next `tools/list` fits it. `false` if no client has that name.
    pub async fn set_name_budget(
        &self,
        name: &str,
        budget: Option<usize>,
    ) -> Result<bool, TokenStoreError> {
        let previous = {
            let mut clients = self.inner.clients.write().expect("clients lock");
            let Some(entry) = clients.values_mut().find(|e| e.record.name == name) else {
                return Ok(false);
            };
            std::mem::replace(&mut entry.record.name_budget, budget)
        };
        if let Err(e) = self.persist().await {
            let mut clients = self.inner.clients.write().expect("clients lock");
            if let Some(entry) = clients.values_mut().find(|e| e.record.name == name) {
                entry.record.name_budget = previous;
            }
            return Err(e);
        }
        Ok(true)
    }

    pub fn clients(&self) -> Vec<ClientView> {
        let clients = self.inner.clients.read().expect("clients lock");
        let mut v: Vec<ClientView> = clients
            .values()
            .filter(|e| !e.ephemeral)
            .map(|e| self.view(&e.record))
            .collect();
        v.sort_by(|a, b| a.created_ms.cmp(&b.created_ms).then(a.name.cmp(&b.name)));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::roles::glob_match;
    use super::*;
    use std::collections::BTreeMap;
    use store::MemoryTokenStore;

    /// How long a pairing code is valid by default.
    const CODE_TTL: Duration = Duration::from_secs(120);

    fn roles() -> Roles {
        Roles {
            default_role: "default".into(),
            roles: BTreeMap::from([
                ("default".into(), vec!["*".into()]),
                (
                    "reader".into(),
                    vec!["fs__read_*".into(), "switchboard__health_snapshot".into()],
                ),
                ("locked".into(), vec![]),
            ]),
            code_ttl: CODE_TTL,
        }
    }

    async fn auth() -> (Auth, Arc<MemoryTokenStore>) {
        let store = Arc::new(MemoryTokenStore::default());
        let a = Auth::open(store.clone(), roles(), EventBus::new(16))
            .await
            .unwrap();
        (a, store)
    }

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn globs() {
        assert!(glob_match("*", "anything"));
        assert!(glob_match("fs__*", "fs__read"));
        assert!(!glob_match("fs__*", "gh__read"));
        assert!(glob_match("fs__read_*", "fs__read_file"));
        assert!(glob_match("*__echo", "fx__echo"));
        assert!(glob_match("a*b*c", "a-x-b-y-c"));
        assert!(!glob_match("a*b*c", "a-x-c"));
        assert!(!glob_match("ab*ba", "aba"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exactly"));
        let r = roles();
        assert!(r.allows("reader", "fs__read_file"));
        assert!(!r.allows("reader", "fs__write_file"));
        assert!(!r.allows("locked", "fs__read_file"));
        assert!(!r.allows("nobody", "fs__read_file"));
    }

    #[tokio::test]
    async fn pairing_stores_only_the_hash_and_the_token_verifies() {
        let (auth, store) = auth().await;
        let code = auth.issue_code(None).unwrap();
        assert_eq!(code.len(), 6);
        assert!(code.chars().all(|c| c.is_ascii_digit()));
        let (token, client) = auth
            .pair(IP, &code, Some("cursor".into()), None)
            .await
            .unwrap();
        assert!(token.starts_with("sb_") && token.len() == 3 + 64);
        assert_eq!(client.role, "default");
        let stored = store.load().unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].token_sha256, sha256_hex(token.as_bytes()));
        assert!(
            !format!("{stored:?}").contains(&token[3..]),
            "plaintext never stored"
        );
        let caller = auth.verify(&token).unwrap();
        assert_eq!(caller.name, "cursor");
        assert!(auth.verify("sb_0000").is_none());
        assert!(auth.verify(&token.replace("sb_", "xx_")).is_none());
        // single use
        assert!(matches!(
            auth.pair(IP, &code, None, None).await,
            Err(PairError::WrongCode { .. })
        ));
    }

    #[tokio::test]
    async fn an_ephemeral_token_verifies_but_is_never_stored_or_listed() {
        let (auth, store) = auth().await;
        let code = auth.issue_code(None).unwrap();
        auth.pair(IP, &code, Some("cursor".into()), None)
            .await
            .unwrap();
        let token = auth.issue_ephemeral("switchboard-app");
        assert!(token.starts_with("sb_") && token.len() == 3 + 64);
        assert_eq!(auth.verify(&token).unwrap().name, "switchboard-app");
        // a later save (another pairing) still leaves it out
        let code = auth.issue_code(None).unwrap();
        auth.pair(IP, &code, Some("claude".into()), None)
            .await
            .unwrap();
        // (both paired in the same millisecond sort by name)
        let mut names: Vec<String> = store.load().unwrap().into_iter().map(|r| r.name).collect();
        names.sort();
        assert_eq!(names, ["claude", "cursor"]);
        let mut listed: Vec<String> = auth.clients().into_iter().map(|c| c.name).collect();
        listed.sort();
        assert_eq!(listed, ["claude", "cursor"]);
    }

    /// A code that is none of `codes`.
    fn other_than(codes: &[&str]) -> String {
        (0..)
            .map(|i| format!("{i:06}"))
            .find(|c| !codes.contains(&c.as_str()))
            .unwrap()
    }

    #[tokio::test]
    async fn five_wrong_codes_cancel_the_waiting_codes_and_the_owners_next_code_works() {
        let store = Arc::new(MemoryTokenStore::default());
        let bus = EventBus::new(16);
        let mut events = bus.subscribe();
        let auth = Auth::open(store, roles(), bus).await.unwrap();
        let good = auth.issue_code(None).unwrap();
        let also = auth.issue_code(None).unwrap();
        let wrong = other_than(&[&good, &also]);
        for left in (0..5).rev() {
            assert_eq!(
                auth.pair(IP, &wrong, None, None).await.unwrap_err(),
                PairError::WrongCode {
                    attempts_left: Some(left)
                }
            );
        }
        // both waiting codes are cancelled: the right one is now simply wrong, and gone
        assert_eq!(
            auth.pair(IP, &good, None, None).await.unwrap_err(),
            PairError::WrongCode {
                attempts_left: None
            }
        );
        assert_eq!(auth.code_state(&also), CodeState::Gone);
        let ev = tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            ev.event,
            HubEvent::PairingCodesBurned {
                wrong_tries: 5,
                codes: 2
            }
        );
        // the owner's next code works at once, from the same address
        let next = auth.issue_code(None).unwrap();
        assert!(auth.pair(IP, &next, None, None).await.is_ok());
    }

    #[tokio::test]
    async fn wrong_codes_while_none_waits_do_not_count_against_the_next_one() {
        let (auth, _) = auth().await;
        for _ in 0..8 {
            assert_eq!(
                auth.pair(IP, "123456", None, None).await.unwrap_err(),
                PairError::WrongCode {
                    attempts_left: None
                }
            );
        }
        let code = auth.issue_code(None).unwrap();
        let wrong = other_than(&[&code]);
        // a fresh code faces all five wrong tries (the 9th and 10th tries of this second)
        assert_eq!(
            auth.pair(IP, &wrong, None, None).await.unwrap_err(),
            PairError::WrongCode {
                attempts_left: Some(4)
            }
        );
        assert!(auth.pair(IP, &code, None, None).await.is_ok());
    }

    #[tokio::test]
    async fn more_than_ten_tries_a_second_are_refused_unchecked_and_the_bound_lifts() {
        let (auth, _) = auth().await;
        let other: IpAddr = "::1".parse().unwrap();
        for i in 0..MAX_TRIES_PER_SECOND {
            // from two addresses: the bound is everyone's together
            let from = if i % 2 == 0 { IP } else { other };
            assert!(matches!(
                auth.pair(from, "999999", None, None).await,
                Err(PairError::WrongCode { .. })
            ));
        }
        let code = auth.issue_code(None).unwrap();
        let refused = auth.pair(other, &code, None, None).await.unwrap_err();
        assert_eq!(refused, PairError::RateLimited { retry_after: 1 });
        assert!(
            refused.to_string().contains("try again in 1 s"),
            "{refused}"
        );
        // not checked: the code still waits, and nothing was counted against it
        assert!(matches!(auth.code_state(&code), CodeState::Pending { .. }));
        tokio::time::sleep(TRY_WINDOW + Duration::from_millis(50)).await;
        assert!(auth.pair(IP, &code, None, None).await.is_ok());
    }

    #[tokio::test]
    async fn a_code_bound_to_a_role_binds_the_client() {
        let (auth, _) = auth().await;
        let code = auth.issue_code(Some("reader".into())).unwrap();
        assert_eq!(
            auth.pair(IP, &code, None, Some("default".into()))
                .await
                .unwrap_err(),
            PairError::RoleMismatch("reader".into())
        );
        let (_, c) = auth.pair(IP, &code, Some("r".into()), None).await.unwrap();
        assert_eq!(c.role, "reader");
        assert!(matches!(
            auth.issue_code(Some("admin".into())),
            Err(PairError::UnknownRole(_))
        ));
    }

    #[tokio::test]
    async fn unpair_revokes_and_names_stay_unique() {
        let (auth, store) = auth().await;
        let c1 = auth.issue_code(None).unwrap();
        let (t1, a) = auth.pair(IP, &c1, Some("bot".into()), None).await.unwrap();
        let c2 = auth.issue_code(None).unwrap();
        let (_, b) = auth.pair(IP, &c2, Some("bot".into()), None).await.unwrap();
        assert_eq!((a.name.as_str(), b.name.as_str()), ("bot", "bot-2"));
        let revoked = auth.verify(&t1).unwrap().revoked;
        assert!(auth.unpair("bot").await.unwrap());
        assert!(revoked.is_cancelled());
        assert!(auth.verify(&t1).is_none());
        assert_eq!(store.load().unwrap().len(), 1);
        assert!(!auth.unpair("bot").await.unwrap());
    }

    #[tokio::test]
    async fn a_code_tells_how_long_it_waits_and_who_used_it() {
        let (auth, _) = auth().await;
        let first = auth.issue_code(None).unwrap();
        auth.pair(IP, &first, Some("cursor".into()), None)
            .await
            .unwrap();
        let code = auth.issue_code(None).unwrap();
        match auth.code_state(&code) {
            CodeState::Pending { left_ms } => {
                assert!(left_ms > 110_000 && left_ms <= 120_000, "{left_ms}")
            }
            other => panic!("a fresh code is pending, not {other:?}"),
        }
        // the name it reports is the one the client got (made unique)
        auth.pair(IP, &code, Some("cursor".into()), None)
            .await
            .unwrap();
        assert_eq!(
            auth.code_state(&code),
            CodeState::Used {
                by: "cursor-2".into()
            }
        );
        assert_eq!(
            auth.code_state(&first),
            CodeState::Used {
                by: "cursor".into()
            }
        );
        let never = if code == "000000" { "000001" } else { "000000" };
        if never != first {
            assert_eq!(auth.code_state(never), CodeState::Gone);
        }
        assert_eq!(
            serde_json::to_value(auth.code_state(&code)).unwrap(),
            serde_json::json!({"state": "used", "by": "cursor-2"})
        );
    }
}

#[cfg(test)]
mod expiry {
    use super::*;
    use std::collections::BTreeMap;

    #[tokio::test]
    async fn an_expired_code_is_refused_as_expired() {
        let roles = Roles {
            default_role: "default".into(),
            roles: BTreeMap::from([("default".into(), vec!["*".into()])]),
            code_ttl: Duration::from_millis(50),
        };
        let auth = Auth::open(
            Arc::new(store::MemoryTokenStore::default()),
            roles,
            EventBus::new(4),
        )
        .await
        .unwrap();
        let code = auth.issue_code(None).unwrap();
        assert!(matches!(auth.code_state(&code), CodeState::Pending { left_ms } if left_ms <= 50));
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(auth.code_state(&code), CodeState::Gone);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(
            auth.pair(ip, &code, None, None).await.unwrap_err(),
            PairError::Expired
        );
        // and it is gone: the same code is now simply wrong
        assert!(matches!(
            auth.pair(ip, &code, None, None).await,
            Err(PairError::WrongCode { .. })
        ));
    }
}
