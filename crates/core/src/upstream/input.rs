//! Both protocol eras, bridged, towards clients of the older protocol: a 2026-07-28 server
//! asks its client things with an `input_required` result (SEP-2322) in place of the answer
//! to `tools/call`, `prompts/get` or `resources/read`, and expects the request again with
//! `inputResponses` (answers by the keys it gave) and its `requestState` as it was. A client of
//! the 2025-xx protocol knows none of that: it is asked with server requests of its own
//! (`elicitation/create`, `sampling/createMessage`, `roots/list`, through the session's
//! [`ClientAsks`], as a 2025-11-25 server's requests are), and the gateway makes the retry.
//! A 2026-07-28 client gets the `input_required` result as it is and retries itself.
//!
//! Bounds: at most [`MAX_ROUNDS`] rounds per request (then the call fails saying so); every
//! wait for the client (its queue, its answers) ends at the call's deadline or cancellation.
//! A malformed `input_required` result fails the call with an error naming what is wrong.

use serde_json::value::RawValue;
use serde_json::{Map, Value};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::connection::{ClientAsks, RpcError, ServerAsk};

/// Rounds of `input_required` one request may take before the gateway gives up.
pub(crate) const MAX_ROUNDS: u32 = 8;

/// The methods whose result may be `input_required`.
pub(super) fn may_need_input(method: &str) -> bool {
    matches!(method, "tools/call" | "prompts/get" | "resources/read")
}

/// What an `input_required` result asks: each request by its key, and the state to echo.
#[derive(Debug)]
pub(super) struct Needed {
    pub(super) requests: Vec<(String, String, Option<Value>)>,
    pub(super) state: Option<Value>,
}

/// An error of the server's making, as the client hears it.
fn failed(message: String) -> RpcError {
    RpcError::Remote {
        code: -32603,
        message,
        data: None,
    }
}

/// `Some` when `raw` is an `input_required` result: what it asks, or what is wrong with it.
pub(super) fn read(server: &str, raw: &RawValue) -> Option<Result<Needed, RpcError>> {
    // cheap test first: most results are plain
    if !raw.get().contains("input_required") {
        return None;
    }
    let v: Value = serde_json::from_str(raw.get()).ok()?;
    if v.get("resultType").and_then(Value::as_str) != Some("input_required") {
        return None;
    }
    let bad = |why: &str| {
        Some(Err(failed(format!(
            "server '{server}' returned a malformed input_required result: {why}"
        ))))
    };
    let state = v.get("requestState").cloned();
    if state.as_ref().is_some_and(|s| !s.is_string()) {
        return bad("requestState is not a string");
    }
    let mut requests = Vec::new();
    match v.get("inputRequests") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (key, r) in m {
                let Some(method) = r.get("method").and_then(Value::as_str) else {
                    return bad(&format!("inputRequests[{key:?}] has no method"));
                };
                if !matches!(
                    method,
                    "elicitation/create" | "sampling/createMessage" | "roots/list"
                ) {
                    return bad(&format!(
                        "inputRequests[{key:?}] is {method:?}, which is none of \
                         elicitation/create, sampling/createMessage, roots/list"
                    ));
                }
                let params = r.get("params").cloned();
                if params.as_ref().is_some_and(|p| !p.is_object()) {
                    return bad(&format!("inputRequests[{key:?}].params is not an object"));
                }
                requests.push((key.clone(), method.to_owned(), params));
            }
        }
        Some(_) => return bad("inputRequests is not an object"),
    }
    if requests.is_empty() && state.is_none() {
        return bad("it has neither inputRequests nor requestState");
    }
    Some(Ok(Needed { requests, state }))
}

/// Where one request's answer comes from.
type Answer = oneshot::Receiver<Result<Value, RpcError>>;

/// Asks the client every request of `needed` (all at once, each through `asks` as a server
/// request) and collects the answers by key, for the retry's `inputResponses`. Bounded by
/// `deadline` and `cancel`; a client that answers with an error, has gone, or cannot be asked
/// ends the call with an error saying so.
pub(super) async fn ask_client(
    server: &str,
    asks: Option<&ClientAsks>,
    needed: &Needed,
    deadline: Instant,
    cancel: &CancellationToken,
) -> Result<Map<String, Value>, RpcError> {
    let mut answers = Map::new();
    if needed.requests.is_empty() {
        return Ok(answers); // a state-only round: the retry carries it back at once
    }
    let Some(asks) = asks else {
        let methods: Vec<&str> = needed.requests.iter().map(|r| r.1.as_str()).collect();
        return Err(RpcError::Remote {
            code: -32601,
            message: format!(
                "server '{server}' needs input from the client ({}) but this client cannot be \
                 asked (it declared no such capability, or its request has no stream to carry it)",
                methods.join(", ")
            ),
            data: None,
        });
    };
    let mut waiting: Vec<(&str, &str, Answer)> = Vec::new();
    // however this ends, a client still asked is told its answer is no longer wanted
    let mut _told = Vec::with_capacity(needed.requests.len());
    for (key, method, params) in &needed.requests {
        let (tx, rx) = oneshot::channel();
        let cancelled = CancellationToken::new();
        _told.push(cancelled.clone().drop_guard());
        let ask = ServerAsk {
            server: server.to_owned(),
            method: method.clone(),
            params: params.clone(),
            reply: tx,
            cancelled,
            // the round is the call's: it ends with it
            outlives_call: false,
        };
        let sent = tokio::select! {
            biased;
            () = cancel.cancelled() => return Err(RpcError::Cancelled),
            s = tokio::time::timeout_at(deadline, asks.tx.send(ask)) => s,
        };
        match sent {
            Ok(Ok(())) => waiting.push((key, method, rx)),
            Ok(Err(_)) => {
                return Err(failed(format!(
                    "the client is gone; server '{server}' needed its answer to {method:?}"
                )));
            }
            Err(_) => {
                return Err(failed(format!(
                    "the client took no request from server '{server}' before the call's time \
                     ran out"
                )));
            }
        }
    }
    for (key, method, rx) in waiting {
        let got = tokio::select! {
            biased;
            () = cancel.cancelled() => return Err(RpcError::Cancelled),
            g = tokio::time::timeout_at(deadline, rx) => g,
        };
        match got {
            Ok(Ok(Ok(answer))) => {
                answers.insert(key.to_owned(), answer);
            }
            Ok(Ok(Err(RpcError::Remote { code, message, .. }))) => {
                return Err(failed(format!(
                    "the client refused {method:?} that server '{server}' needed \
                     ({code}: {message})"
                )));
            }
            Ok(Ok(Err(e))) => {
                return Err(failed(format!(
                    "the client did not answer {method:?} that server '{server}' needed: {e}"
                )));
            }
            Ok(Err(_)) => {
                return Err(failed(format!(
                    "the client went away before answering {method:?} that server '{server}' \
                     needed"
                )));
            }
            Err(_) => {
                return Err(failed(format!(
                    "the client did not answer {method:?} that server '{server}' needed before \
                     the call's time ran out"
                )));
            }
        }
    }
    Ok(answers)
}

/// The request's `params` again, with the client's `answers` and the server's `state`.
pub(super) fn retry_params(
    mut params: Value,
    answers: Map<String, Value>,
    state: Option<Value>,
) -> Value {
    if !params.is_object() {
        params = Value::Object(Map::new());
    }
    if let Value::Object(m) = &mut params {
        m.insert("inputResponses".into(), Value::Object(answers));
        match state {
            Some(s) => m.insert("requestState".into(), s),
            None => m.remove("requestState"),
        };
    }
    params
}
