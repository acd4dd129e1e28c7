//! MCP sessions (HTTP and WebSocket) and their progress streams.
//!
//! Every session has an id, belongs to one paired client and carries a bounded broadcast of
//! JSON frames: one per progress report of any call made in it, plus call started/finished
//! frames. Watchers (`GET /session/<id>/events`, `GET /ws/mcp/events?session_id=`) subscribe
//! to it; one that falls behind loses its oldest frames, the call never waits for it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::events::{EventBus, HubEvent};

/// Frames a watcher may fall behind before it loses the oldest.
const FRAMES: usize = 1024;

/// One MCP session.
#[derive(Debug)]
pub struct Session {
    pub id: String,
    /// The paired client that owns it.
    pub client: String,
    /// `http` or `ws`.
    pub transport: &'static str,
    /// `sha256` of the watch token handed out by `POST /session` (none for implicit sessions).
    token_hash: Option<[u8; 32]>,
    /// Progress and call frames, serialized once, shared by every watcher.
    frames: broadcast::Sender<Arc<str>>,
    /// Cancelled when the session ends: its watchers' streams end too.
    pub closed: CancellationToken,
}

impl Session {
    /// Sends a frame to every watcher; never waits, never fails.
    pub fn publish(&self, frame: &Value) {
        if self.frames.receiver_count() == 0 {
            return;
        }
        let _ = self.frames.send(Arc::from(frame.to_string()));
    }

    pub fn watchers(&self) -> usize {
        self.frames.receiver_count()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<str>> {
        self.frames.subscribe()
    }

    /// Whether `token` is this session's watch token (constant time).
    fn token_is(&self, token: &str) -> bool {
        let Some(hash) = &self.token_hash else {
            return false;
        };
        let given: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        given
            .iter()
            .zip(hash.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

/// A progress frame, exactly as watchers receive it.
pub fn progress_frame(token: &Value, p: &crate::upstream::Progress, tool: &str) -> Value {
    let mut m = Map::with_capacity(6);
    m.insert("token".into(), token.clone());
    m.insert("progress".into(), json!(p.progress));
    if let Some(total) = p.total {
        m.insert("total".into(), json!(total));
    }
    if let Some(message) = &p.message {
        m.insert("message".into(), json!(message));
    }
    m.insert("tool".into(), json!(tool));
    m.insert("timestamp".into(), json!(crate::now_rfc3339()));
    Value::Object(m)
}

/// Every live session. Cheap handle; clone freely.
#[derive(Debug, Clone)]
pub struct Sessions {
    inner: Arc<Mutex<HashMap<String, Arc<Session>>>>,
    bus: EventBus,
}

/// A new random id or token: `prefix` + 32 random bytes in hex.
fn random(prefix: &str) -> String {
    use rand::RngCore as _;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let mut s = String::with_capacity(prefix.len() + 64);
    s.push_str(prefix);
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

impl Sessions {
    pub fn new(bus: EventBus) -> Self {
        Self {
            inner: Arc::default(),
            bus,
        }
    }

    /// Registers a session under `id` (a fresh one if `None`) and announces it.
    pub fn open(
        &self,
        id: Option<String>,
        client: &str,
        transport: &'static str,
        with_token: bool,
    ) -> (Arc<Session>, Option<String>) {
        let token = with_token.then(|| random("sbw_"));
        let id = id.unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        let (frames, _) = broadcast::channel(FRAMES);
        let session = Arc::new(Session {
            id: id.clone(),
            client: client.to_owned(),
            transport,
            token_hash: token.as_ref().map(|t| Sha256::digest(t.as_bytes()).into()),
            frames,
            closed: CancellationToken::new(),
        });
        self.inner
            .lock()
            .expect("sessions lock")
            .insert(id.clone(), session.clone());
        self.bus.publish(HubEvent::SessionOpened {
            session_id: id,
            client: client.to_owned(),
            transport,
        });
        (session, token)
    }

    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.inner.lock().expect("sessions lock").get(id).cloned()
    }

    /// Ends a session: watchers' streams end, `SessionClosed` is published. `false` if unknown.
    pub fn close(&self, id: &str, reason: &str) -> bool {
        let Some(s) = self.inner.lock().expect("sessions lock").remove(id) else {
            return false;
        };
        s.closed.cancel();
        self.bus.publish(HubEvent::SessionClosed {
            session_id: s.id.clone(),
            client: s.client.clone(),
            transport: s.transport,
            reason: reason.to_owned(),
        });
        true
    }

    /// Ends every session of `client` (it was unpaired).
    pub fn close_client(&self, client: &str, reason: &str) {
        let ids: Vec<String> = self
            .inner
            .lock()
            .expect("sessions lock")
            .values()
            .filter(|s| s.client == client)
            .map(|s| s.id.clone())
            .collect();
        for id in ids {
            self.close(&id, reason);
        }
    }

    /// HTTP sessions that `alive` says are gone (rmcp expired them) are closed as expired.
    pub fn sweep_http(&self, alive: impl Fn(&str) -> bool) {
        let gone: Vec<String> = self
            .inner
            .lock()
            .expect("sessions lock")
            .values()
            .filter(|s| s.transport == "http" && s.token_hash.is_none() && !alive(&s.id))
            .map(|s| s.id.clone())
            .collect();
        for id in gone {
            self.close(&id, "expired");
        }
    }

    /// Ids of `transport` sessions without a watch token (implicit ones).
    pub fn implicit_ids(&self, transport: &str) -> Vec<String> {
        self.inner
            .lock()
            .expect("sessions lock")
            .values()
            .filter(|s| s.transport == transport && s.token_hash.is_none())
            .map(|s| s.id.clone())
            .collect()
    }

    /// The session `id` if `client` (a paired client's name) owns it or `token` is its watch
    /// token; anyone else gets `None`, as for an unknown id.
    pub fn watchable(
        &self,
        id: &str,
        client: Option<&str>,
        token: Option<&str>,
    ) -> Option<Arc<Session>> {
        let s = self.get(id)?;
        let owner = client.is_some_and(|c| c == s.client);
        let by_token = token.is_some_and(|t| s.token_is(t));
        (owner || by_token).then_some(s)
    }

    pub fn len(&self) -> usize {
        self.inner.lock().expect("sessions lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
