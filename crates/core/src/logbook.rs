//! The servers' recent log messages (`notifications/message`), for the dashboard's live log
//! view: a bounded ring per server ([`LOG_LINES`], the oldest dropped first), each message also
//! announced on the bus ([`HubEvent::ServerLog`]).
//!
//! Switchboard records what servers send and asks for no level of its own: a server logs at
//! its own default until a client sends `logging/setLevel` (which the gateway passes on), and
//! a level Switchboard set would override the client's.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::events::{EventBus, HubEvent, LogEntry};

/// Messages kept per server.
pub(crate) const LOG_LINES: usize = 500;

/// Cheap handle; clone freely.
#[derive(Debug, Clone)]
pub(crate) struct Logbook {
    rings: Arc<Mutex<HashMap<String, VecDeque<LogEntry>>>>,
    bus: EventBus,
}

impl Logbook {
    pub(crate) fn new(bus: EventBus) -> Self {
        Self {
            rings: Arc::default(),
            bus,
        }
    }

    /// Keeps and announces a `notifications/message` of `server` (its params as sent).
    pub(crate) fn record(&self, server: &str, params: &Value) {
        let entry = LogEntry {
            received: crate::now_rfc3339(),
            level: params
                .get("level")
                .and_then(Value::as_str)
                .unwrap_or("info")
                .to_owned(),
            logger: params
                .get("logger")
                .and_then(Value::as_str)
                .map(str::to_owned),
            data: params.get("data").cloned().unwrap_or(Value::Null),
        };
        {
            let mut rings = self.rings.lock().expect("logbook lock");
            let ring = rings.entry(server.to_owned()).or_default();
            if ring.len() >= LOG_LINES {
                ring.pop_front();
            }
            ring.push_back(entry.clone());
        }
        self.bus.publish(HubEvent::ServerLog {
            server: server.to_owned(),
            entry,
        });
    }

    /// `server`'s kept messages, oldest first.
    pub(crate) fn recent(&self, server: &str) -> Vec<LogEntry> {
        let rings = self.rings.lock().expect("logbook lock");
        rings
            .get(server)
            .map(|r| r.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Drops the messages of a server that is no longer configured.
    pub(crate) fn forget(&self, server: &str) {
        self.rings.lock().expect("logbook lock").remove(server);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_ring_per_server_drops_its_oldest() {
        let book = Logbook::new(EventBus::new(4));
        for i in 0..LOG_LINES + 3 {
            book.record("a", &json!({"level": "warning", "data": i, "logger": "l"}));
        }
        book.record("b", &json!({"data": "x"}));
        let a = book.recent("a");
        assert_eq!(a.len(), LOG_LINES);
        assert_eq!(a[0].data, json!(3));
        assert_eq!(
            (a[0].level.as_str(), a[0].logger.as_deref()),
            ("warning", Some("l"))
        );
        assert_eq!(book.recent("b")[0].level, "info");
        book.forget("a");
        assert!(book.recent("a").is_empty());
    }
}
