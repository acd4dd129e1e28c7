//! What an on-demand server listed on its last run ([`Listing`]): its tools, prompts,
//! resources and resource templates, with the capabilities, server info and protocol it
//! answered. Kept in SQLite (the store's `server_lists`) under the server's name and a
//! fingerprint of what makes it that server (command, arguments, environment, URL, headers),
//! so that a listing made with another config is never taken for its own. A leaf of
//! `upstream/`.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::config::ServerConfig;
use crate::store::{ListingRow, Store};

/// How long a read of the store may take before the server is treated as never listed
/// (it then lists again): the store's writer may be busy with a burst of call rows.
const LOAD_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything a client can be shown of a server without it running.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Listing {
    /// Of the config it was made with (see [`fingerprint`]).
    pub(crate) fingerprint: String,
    pub(crate) protocol: String,
    pub(crate) capabilities: Value,
    pub(crate) server_info: Value,
    /// Tool definitions as the server wrote them (stored; in memory the server's status holds
    /// them, and this is empty).
    pub(crate) tools: Vec<Value>,
    /// `None`: the server offers no such list (or it could not be read on that run).
    pub(crate) prompts: Option<Vec<Value>>,
    pub(crate) resources: Option<Vec<Value>>,
    pub(crate) resource_templates: Option<Vec<Value>>,
}

impl Listing {
    /// The items of list `method` (`prompts/list`, `resources/list`,
    /// `resources/templates/list`), if it was listed. Tools are not answered from here: the
    /// gateway lists them from the server's status.
    pub(crate) fn items(&self, method: &str) -> Option<&[Value]> {
        match method {
            "prompts/list" => self.prompts.as_deref(),
            "resources/list" => self.resources.as_deref(),
            "resources/templates/list" => self.resource_templates.as_deref(),
            _ => None,
        }
    }

    /// Where list `method`'s items go (`None` for a method that is not a list).
    pub(crate) fn items_mut(&mut self, method: &str) -> Option<&mut Option<Vec<Value>>> {
        match method {
            "prompts/list" => Some(&mut self.prompts),
            "resources/list" => Some(&mut self.resources),
            "resources/templates/list" => Some(&mut self.resource_templates),
            _ => None,
        }
    }
}

/// What makes `cfg` the server it is, hashed (values of `env` and `headers` may be secrets,
/// and are not stored): everything but when and how long it runs, its replay rules and call
/// timeout, which change nothing it lists.
pub(crate) fn fingerprint(cfg: &ServerConfig) -> String {
    let mut c = cfg.clone();
    c.enabled = true;
    c.replay.clear();
    c.call_timeout_ms = None;
    c.start = None;
    c.idle_stop_ms = None;
    c.max_instances = None;
    let text = serde_json::to_string(&c).unwrap_or_default();
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `cfg`'s server's saved listing, if there is one of this config.
pub(crate) async fn load(store: &Store, cfg: &ServerConfig) -> Option<Listing> {
    let row = match tokio::time::timeout(LOAD_TIMEOUT, store.load_listing(&cfg.name)).await {
        Ok(row) => row?,
        Err(_) => {
            tracing::warn!(server = %cfg.name, "server listing not read in time; listing again");
            return None;
        }
    };
    if row.fingerprint != fingerprint(cfg) {
        tracing::debug!(server = %cfg.name, "saved listing is of another config");
        return None;
    }
    match serde_json::from_str::<Listing>(&row.listing) {
        Ok(l) if l.fingerprint == row.fingerprint => Some(l),
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(server = %cfg.name, error = %e, "saved listing unreadable; listing again");
            None
        }
    }
}

/// Saves `listing` as its server's (`name`).
pub(crate) async fn save(store: &Store, name: &str, listing: &Listing) {
    let Ok(text) = serde_json::to_string(listing) else {
        return;
    };
    store
        .save_listing(ListingRow {
            server: name.to_owned(),
            fingerprint: listing.fingerprint.clone(),
            listing: text,
            saved_ms: chrono::Utc::now().timestamp_millis(),
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(command: &str) -> ServerConfig {
        ServerConfig {
            name: "fx".into(),
            command: command.into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_fingerprint_follows_what_the_server_is_not_when_it_runs() {
        let a = server("/bin/a");
        let mut later = a.clone();
        later.start = Some(crate::config::StartMode::OnDemand);
        later.idle_stop_ms = Some(5);
        later.call_timeout_ms = Some(9);
        assert_eq!(fingerprint(&a), fingerprint(&later));
        let mut other = a.clone();
        other.args = vec!["--x".into()];
        assert_ne!(fingerprint(&a), fingerprint(&other));
        assert_ne!(fingerprint(&a), fingerprint(&server("/bin/b")));
        assert_eq!(fingerprint(&a).len(), 64);
    }

    #[tokio::test]
    async fn a_listing_of_another_config_is_not_loaded() {
        let (store, _) = Store::in_memory().unwrap();
        let cfg = server("/bin/a");
        let listing = Listing {
            fingerprint: fingerprint(&cfg),
            tools: vec![serde_json::json!({"name": "echo"})],
            ..Default::default()
        };
        save(&store, "fx", &listing).await;
        assert_eq!(load(&store, &cfg).await, Some(listing));
        assert_eq!(load(&store, &server("/bin/b")).await, None);
    }
}
