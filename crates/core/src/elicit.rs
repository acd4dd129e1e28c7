//! Elicitations Switchboard answers itself: an `elicitation/create` a server sends during a call
//! whose client cannot be asked (it declared no elicitation, or its request has no stream to
//! carry one) waits here for the person at the dashboard or the desktop app instead of failing.
//!
//! [`Elicitations`] is a bounded registry: each pending one is announced on the bus
//! ([`HubEvent::ElicitationPending`]), listed by `GET /api/elicitations` and answered by
//! `POST /api/elicitations/{id}`. A form's content is checked against the requested schema
//! first (`mod schema`); a bad answer is refused and the elicitation stays pending. It ends
//! with the answer, after `gateway.elicitation_timeout_ms` (the server gets an error), or when
//! the call it came with ends (its future is dropped: the server hears the call has ended);
//! [`HubEvent::ElicitationEnded`] says which.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::events::{Elicitation, EventBus, HubEvent};
use crate::upstream::{RpcError, ServerAsk};

mod schema;

/// Elicitations waiting for the person at most; one more is refused (the server gets an error
/// saying so).
pub(crate) const MAX_PENDING: usize = 32;

/// The longest `gateway.elicitation_timeout_ms` may ask for: a server's request to its client
/// is answered by then anyway (the connection's own bound).
pub(crate) const MAX_TIMEOUT: Duration = Duration::from_secs(600);

/// The person's answer, as `POST /api/elicitations/{id}` carries it.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum Answer {
    Accept {
        #[serde(default)]
        content: Option<serde_json::Map<String, Value>>,
    },
    Decline,
    Cancel,
}

impl Answer {
    fn outcome(&self) -> &'static str {
        match self {
            Self::Accept { .. } => "accept",
            Self::Decline => "decline",
            Self::Cancel => "cancel",
        }
    }

    /// The `ElicitResult` the server gets.
    fn result(self) -> Value {
        match self {
            Self::Accept {
                content: Some(content),
            } => json!({"action": "accept", "content": content}),
            other => json!({"action": other.outcome()}),
        }
    }
}

/// Why an answer was refused; the elicitation is still pending unless it is `Unknown`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum AnswerError {
    #[error("no pending elicitation {0:?} (answered, ended or never asked)")]
    Unknown(String),
    #[error("{0}")]
    Invalid(String),
}

/// Cheap handle to the registry; clone freely.
#[derive(Debug, Clone)]
pub(crate) struct Elicitations(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    /// By number (ids are `e<n>`), so that the list is in the order they were asked.
    pending: Mutex<BTreeMap<u64, Pending>>,
    next: AtomicU64,
    bus: EventBus,
    timeout: Duration,
}

#[derive(Debug)]
struct Pending {
    shown: Elicitation,
    reply: oneshot::Sender<Answer>,
}

/// Removes its elicitation however the wait ends, announcing how it ended.
struct Waiting<'a> {
    inner: &'a Inner,
    n: u64,
    server: &'a str,
    outcome: &'static str,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.inner
            .pending
            .lock()
            .expect("pending lock")
            .remove(&self.n);
        self.inner.bus.publish(HubEvent::ElicitationEnded {
            id: format!("e{}", self.n),
            server: self.server.to_owned(),
            outcome: self.outcome,
        });
    }
}

impl Elicitations {
    /// A registry whose elicitations end unanswered after `timeout` (at most [`MAX_TIMEOUT`]).
    pub(crate) fn new(bus: EventBus, timeout: Duration) -> Self {
        Self(Arc::new(Inner {
            pending: Mutex::new(BTreeMap::new()),
            next: AtomicU64::new(1),
            bus,
            timeout: timeout.clamp(Duration::from_millis(1), MAX_TIMEOUT),
        }))
    }

    /// Answers `ask` (an `elicitation/create` of `server`, during a call of `client`) here,
    /// waiting for the person; dropped, it ends as `gone` and the server hears its call ended.
    pub(crate) async fn take(&self, ask: ServerAsk, client: Option<&str>) {
        let ServerAsk {
            server,
            params,
            reply,
            ..
        } = ask;
        let answer = self.ask(&server, client, params.as_ref()).await;
        let _ = reply.send(answer);
    }

    /// Shows the elicitation `params` of `server` and waits for its answer, at most the
    /// registry's timeout.
    pub(crate) async fn ask(
        &self,
        server: &str,
        client: Option<&str>,
        params: Option<&Value>,
    ) -> Result<Value, RpcError> {
        let invalid = |message: String| RpcError::Remote {
            code: -32602,
            message,
            data: None,
        };
        let params = params
            .and_then(Value::as_object)
            .ok_or_else(|| invalid("elicitation/create needs params with a message".to_owned()))?;
        let message = params
            .get("message")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("elicitation/create needs a \"message\" string".to_owned()))?;
        let mode = match params.get("mode").and_then(Value::as_str) {
            None | Some("form") => "form",
            Some("url") => "url",
            Some(other) => return Err(invalid(format!("unknown elicitation mode {other:?}"))),
        };
        let (requested_schema, url) = if mode == "form" {
            let schema = params.get("requestedSchema").cloned().unwrap_or(json!({
                "type": "object", "properties": {}
            }));
            schema::check_schema(&schema).map_err(invalid)?;
            (Some(schema), None)
        } else {
            let url = params
                .get("url")
                .and_then(Value::as_str)
                .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
                .ok_or_else(|| {
                    invalid("a URL-mode elicitation needs an http(s) \"url\"".to_owned())
                })?;
            (None, Some(url.to_owned()))
        };
        let inner = &*self.0;
        let n = inner.next.fetch_add(1, Ordering::Relaxed);
        let now = chrono::Utc::now();
        let deadline = now + chrono::Duration::from_std(inner.timeout).unwrap_or_default();
        let shown = Elicitation {
            id: format!("e{n}"),
            server: server.to_owned(),
            client: client.map(str::to_owned),
            message: message.to_owned(),
            mode,
            requested_schema,
            url,
            created: now.to_rfc3339(),
            deadline: deadline.to_rfc3339(),
        };
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = inner.pending.lock().expect("pending lock");
            if pending.len() >= MAX_PENDING {
                return Err(RpcError::Remote {
                    code: -32603,
                    message: format!(
                        "Switchboard has {MAX_PENDING} elicitations waiting for an answer \
                         already; try again later"
                    ),
                    data: None,
                });
            }
            pending.insert(
                n,
                Pending {
                    shown: shown.clone(),
                    reply: tx,
                },
            );
        }
        let mut waiting = Waiting {
            inner,
            n,
            server,
            outcome: "gone",
        };
        inner
            .bus
            .publish(HubEvent::ElicitationPending { elicitation: shown });
        match tokio::time::timeout(inner.timeout, rx).await {
            Ok(Ok(answer)) => {
                waiting.outcome = answer.outcome();
                Ok(answer.result())
            }
            Ok(Err(_)) => Err(RpcError::Closed), // the registry cannot drop it while we wait
            Err(_) => {
                waiting.outcome = "timeout";
                Err(RpcError::Remote {
                    code: -32603,
                    message: format!(
                        "nobody answered the elicitation in Switchboard within {} s",
                        inner.timeout.as_secs_f64()
                    ),
                    data: None,
                })
            }
        }
    }

    /// Every pending elicitation, oldest first.
    pub(crate) fn list(&self) -> Vec<Elicitation> {
        let pending = self.0.pending.lock().expect("pending lock");
        pending.values().map(|p| p.shown.clone()).collect()
    }

    /// Answers elicitation `id` with `answer`: an accepted form's content must fit its schema
    /// (else it stays pending and the error names the field).
    pub(crate) fn answer(&self, id: &str, answer: Answer) -> Result<(), AnswerError> {
        let unknown = || AnswerError::Unknown(id.to_owned());
        let n: u64 = id
            .strip_prefix('e')
            .and_then(|n| n.parse().ok())
            .ok_or_else(unknown)?;
        let mut pending = self.0.pending.lock().expect("pending lock");
        let p = pending.get(&n).ok_or_else(unknown)?;
        let answer = match (answer, &p.shown.requested_schema) {
            (Answer::Accept { content }, Some(schema)) => {
                let content = content.unwrap_or_default();
                schema::check_content(schema, &content).map_err(AnswerError::Invalid)?;
                Answer::Accept {
                    content: Some(content),
                }
            }
            (Answer::Accept { content: Some(_) }, None) => {
                return Err(AnswerError::Invalid(
                    "a URL-mode elicitation is accepted without content".to_owned(),
                ));
            }
            (other, _) => other,
        };
        let p = pending.remove(&n).expect("looked up above");
        drop(pending);
        // its waiter is gone only if it ended this very moment; then nothing is lost either
        let _ = p.reply.send(answer);
        Ok(())
    }
}

/// Whether `ask` is one Switchboard can answer itself.
pub(crate) fn answerable(ask: &ServerAsk) -> bool {
    ask.method == "elicitation/create"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(timeout_ms: u64) -> Elicitations {
        Elicitations::new(EventBus::new(16), Duration::from_millis(timeout_ms))
    }

    fn form() -> Value {
        json!({"message": "Name?", "requestedSchema": {"type": "object",
            "properties": {"name": {"type": "string", "minLength": 2}}, "required": ["name"]}})
    }

    #[tokio::test]
    async fn accepted_content_is_checked_and_a_bad_answer_keeps_it_pending() {
        let r = registry(5_000);
        let r2 = r.clone();
        let asked = tokio::spawn(async move { r2.ask("fx", Some("c"), Some(&form())).await });
        while r.list().is_empty() {
            tokio::task::yield_now().await;
        }
        let id = r.list()[0].id.clone();
        let bad = Answer::Accept {
            content: Some(json!({"name": "A"}).as_object().unwrap().clone()),
        };
        let e = r.answer(&id, bad).unwrap_err();
        assert!(e.to_string().contains("name"), "{e}");
        assert_eq!(r.list().len(), 1, "still pending");
        let good = Answer::Accept {
            content: Some(json!({"name": "Ada"}).as_object().unwrap().clone()),
        };
        r.answer(&id, good).unwrap();
        let got = asked.await.unwrap().unwrap();
        assert_eq!(got, json!({"action": "accept", "content": {"name": "Ada"}}));
        assert!(r.list().is_empty());
        assert!(matches!(
            r.answer(&id, Answer::Decline),
            Err(AnswerError::Unknown(_))
        ));
    }

    #[tokio::test]
    async fn unanswered_ends_in_time_and_a_full_registry_refuses() {
        let r = registry(50);
        let e = r.ask("fx", None, Some(&form())).await.unwrap_err();
        assert!(e.to_string().contains("nobody answered"), "{e}");
        assert!(r.list().is_empty());

        let r = registry(5_000);
        let mut waits = Vec::new();
        for _ in 0..MAX_PENDING {
            let r = r.clone();
            waits.push(tokio::spawn(async move {
                r.ask("fx", None, Some(&form())).await
            }));
        }
        while r.list().len() < MAX_PENDING {
            tokio::task::yield_now().await;
        }
        let e = r.ask("fx", None, Some(&form())).await.unwrap_err();
        assert!(e.to_string().contains("waiting"), "{e}");
        for w in waits {
            w.abort();
        }
    }

    #[tokio::test]
    async fn malformed_requests_are_refused_at_once() {
        let r = registry(5_000);
        for params in [
            json!({}),
            json!({"message": "x", "mode": "telepathy"}),
            json!({"message": "x", "mode": "url", "url": "file:///etc/passwd"}),
            json!({"message": "x", "requestedSchema": {"type": "object",
                   "properties": {"deep": {"type": "object"}}}}),
        ] {
            let e = r.ask("fx", None, Some(&params)).await.unwrap_err();
            assert!(
                matches!(e, RpcError::Remote { code: -32602, .. }),
                "{params}: {e:?}"
            );
        }
        assert!(r.list().is_empty());
    }
}
