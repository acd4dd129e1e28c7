//! Both protocol eras, bridged, towards 2026-07-28 clients: a server on the 2025-11-25
//! protocol asks its client things with requests of its own (`elicitation/create`,
//! `sampling/createMessage`, `roots/list`); a 2026-07-28 client is never sent a request, it gets
//! an `input_required` result instead and retries its call with `inputResponses` (SEP-2322).
//!
//! [`Rounds`] holds what lies between the rounds. A stateless `tools/call` whose client
//! declared any of those capabilities runs in a task of its own; when its server asks the
//! client something, the call's answer is an `input_required` result carrying the server's
//! requests (by key) and an opaque `requestState`, while the server's request stays waiting.
//! The client's retry names that state: its answers go to the waiting requests, and the retry
//! gets the call's result (or the next round's `input_required`). The state is only good for
//! the client it was given to and the tool it was given for.
//!
//! Bounds: at most [`MAX_WAITING`] calls wait for retries at once (one more: its server's
//! requests get an error at once, the call goes on); a retry that does not come within
//! `gateway.input_wait_ms` ends the wait (the server's requests get an error saying so, the
//! call is cancelled). A retry with answers that do not fit gets -32602 saying what is wrong
//! and loses nothing: the state still waits for a retry that fits, until its time is up.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;

use super::jsonrpc::{INTERNAL_ERROR, INVALID_PARAMS, METHOD_NOT_FOUND, error_frame};
use super::session::random;
use crate::upstream::{ClientAsks, RpcError, ServerAsk};

/// Calls waiting for their clients' retries at once, across clients.
pub(crate) const MAX_WAITING: usize = 256;

/// Server requests of one bridged call queued for the next round.
const ASK_QUEUE: usize = 8;

const META_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";

/// What a client declared it can be asked (its request's `_meta` client capabilities).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Askable {
    elicitation: bool,
    sampling: bool,
    roots: bool,
}

impl Askable {
    fn any(self) -> bool {
        self.elicitation || self.sampling || self.roots
    }

    /// Whether `method` may go to the client: one of the three an `input_required` result can
    /// carry, with its capability declared. `Err`: why not, for the server.
    fn allows(self, method: &str) -> Result<(), String> {
        let declared = match method {
            "elicitation/create" => self.elicitation,
            "sampling/createMessage" => self.sampling,
            "roots/list" => self.roots,
            other => {
                return Err(format!(
                    "the client speaks 2026-07-28, which can be asked only elicitation/create, \
                     sampling/createMessage and roots/list, not {other:?}"
                ));
            }
        };
        if declared {
            Ok(())
        } else {
            Err(format!("the client declared no capability for {method:?}"))
        }
    }
}

/// A stateless `tools/call` the bridge takes, read from its params.
#[derive(Debug)]
pub(crate) enum Bridged {
    /// A first call from a client that may be asked things.
    First { tool: String, askable: Askable },
    /// A retry: `requestState` and `inputResponses` as they came (either may be missing).
    Retry {
        tool: String,
        state: Option<Value>,
        responses: Option<Value>,
    },
}

impl Bridged {
    /// What the bridge makes of a stateless `tools/call`'s `params`; `None`: not its business
    /// (a client that cannot be asked anything, calling for the first time).
    pub(crate) fn read(params: Option<&Value>) -> Option<Self> {
        let p = params?.as_object()?;
        let tool = p.get("name").and_then(Value::as_str)?.to_owned();
        let state = p.get("requestState").cloned();
        let responses = p.get("inputResponses").cloned();
        if state.is_some() || responses.is_some() {
            return Some(Self::Retry {
                tool,
                state,
                responses,
            });
        }
        let caps = p.get("_meta")?.get(META_CAPABILITIES)?;
        let askable = Askable {
            elicitation: caps.get("elicitation").is_some_and(Value::is_object),
            sampling: caps.get("sampling").is_some_and(Value::is_object),
            roots: caps.get("roots").is_some_and(Value::is_object),
        };
        askable.any().then_some(Self::First { tool, askable })
    }
}

/// The call in flight between rounds: dropped, it is cancelled.
struct Run {
    /// The call's JSON-RPC answer (under the first request's id).
    done: oneshot::Receiver<String>,
    /// Its server's requests for the client, as they come.
    asks: mpsc::Receiver<ServerAsk>,
    _cancel: DropGuard,
}

/// A call waiting for its client's retry.
struct Waiting {
    /// The paired client it was given to.
    client: String,
    /// The tool called (the retry must call the same).
    tool: String,
    askable: Askable,
    /// The server's requests the client was given, by key, waiting for their answers.
    asked: Vec<(String, ServerAsk)>,
    run: Run,
    /// Cancelled when a retry takes it: its expiry timer stops.
    taken: CancellationToken,
}

/// Calls waiting for 2026-07-28 clients' retries, by `requestState`. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Rounds(Arc<Inner>);

struct Inner {
    waiting: Mutex<HashMap<String, Waiting>>,
    /// How long a state waits for its retry (`gateway.input_wait_ms`).
    wait: Duration,
    /// Bridged calls and expiry timers run here, and end with the gateway.
    tasks: TaskTracker,
    shutdown: CancellationToken,
    /// Numbers bridged calls: each is a client session of its own upstream.
    seq: AtomicU64,
}

impl std::fmt::Debug for Rounds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rounds")
            .field("waiting", &self.waiting())
            .field("wait", &self.0.wait)
            .finish()
    }
}

/// What one round came to.
enum Round {
    /// The call's answer frame, under the first request's id.
    Done(String),
    /// The server asked the client these (method, params, reply), already checked.
    Asked(Vec<ServerAsk>),
}

impl Rounds {
    pub(crate) fn new(wait: Duration, tasks: TaskTracker, shutdown: CancellationToken) -> Self {
        Self(Arc::new(Inner {
            waiting: Mutex::new(HashMap::new()),
            wait,
            tasks,
            shutdown,
            seq: AtomicU64::new(1),
        }))
    }

    /// Calls waiting for retries now.
    pub(crate) fn waiting(&self) -> usize {
        self.0.waiting.lock().expect("rounds lock").len()
    }

    /// Answers a stateless `tools/call` the bridge takes (`bridged`, from [`Bridged::read`])
    /// for `client`, as the JSON-RPC frame under `id`. A first call runs as `call` makes it
    /// (given where its server's requests go and the token it stops on), in a task of its
    /// own, so that it outlives this request when the answer is `input_required`.
    pub(crate) async fn answer<F, C>(
        &self,
        client: &str,
        id: &Value,
        bridged: Bridged,
        call: C,
    ) -> String
    where
        C: FnOnce(ClientAsks, CancellationToken) -> F,
        F: Future<Output = String> + Send + 'static,
    {
        match bridged {
            Bridged::First { tool, askable } => {
                let n = self.0.seq.fetch_add(1, Ordering::Relaxed);
                let (tx, asks) = mpsc::channel(ASK_QUEUE);
                let cancel = self.0.shutdown.child_token();
                let running = call(
                    ClientAsks {
                        session: format!("stateless call {n}"),
                        tx,
                    },
                    cancel.clone(),
                );
                let (done_tx, done) = oneshot::channel();
                self.0.tasks.spawn(async move {
                    let _ = done_tx.send(running.await);
                });
                let run = Run {
                    done,
                    asks,
                    _cancel: cancel.drop_guard(),
                };
                self.rounds(run, client, tool, askable, id).await
            }
            Bridged::Retry {
                tool,
                state,
                responses,
            } => match self.retry(client, &tool, state, responses) {
                Ok((run, askable)) => self.rounds(run, client, tool, askable, id).await,
                Err((code, message)) => error_frame(id.clone(), code, message).to_string(),
            },
        }
    }

    /// Waits for the call's next step: its result goes out under `id`; requests of its server
    /// become an `input_required` result and wait (stored) for the retry.
    async fn rounds(
        &self,
        mut run: Run,
        client: &str,
        tool: String,
        askable: Askable,
        id: &Value,
    ) -> String {
        loop {
            match next_round(&mut run, askable).await {
                Round::Done(frame) => return with_id(&frame, id),
                Round::Asked(asks) => match self.store(client, &tool, askable, asks, run) {
                    Ok(result) => {
                        return json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string();
                    }
                    Err(back) => run = back, // full: its asks were refused; the call goes on
                },
            }
        }
    }

    /// Keeps the call waiting for a retry; `Ok`: the `input_required` result for the client.
    /// When [`MAX_WAITING`] calls wait already, the server's requests get an error and the
    /// run comes back.
    fn store(
        &self,
        client: &str,
        tool: &str,
        askable: Askable,
        asks: Vec<ServerAsk>,
        run: Run,
    ) -> Result<Value, Run> {
        let mut waiting = self.0.waiting.lock().expect("rounds lock");
        if waiting.len() >= MAX_WAITING {
            drop(waiting);
            tracing::warn!(
                "{MAX_WAITING} calls wait for 2026-07-28 clients' retries already; a server's \
                 request is refused"
            );
            for ask in asks {
                refuse(
                    ask,
                    INTERNAL_ERROR,
                    format!(
                        "Switchboard has {MAX_WAITING} calls waiting for their clients' answers \
                         already; try again later"
                    ),
                );
            }
            return Err(run);
        }
        let state = random("sbrs_");
        let mut requests = Map::new();
        let asked: Vec<(String, ServerAsk)> = asks
            .into_iter()
            .enumerate()
            .map(|(i, ask)| {
                let key = format!("ask-{}", i + 1);
                let mut r = json!({"method": ask.method});
                if let Some(p) = &ask.params {
                    r["params"] = p.clone();
                }
                requests.insert(key.clone(), r);
                (key, ask)
            })
            .collect();
        let taken = CancellationToken::new();
        waiting.insert(
            state.clone(),
            Waiting {
                client: client.to_owned(),
                tool: tool.to_owned(),
                askable,
                asked,
                run,
                taken: taken.clone(),
            },
        );
        drop(waiting);
        let (rounds, key, wait) = (self.clone(), state.clone(), self.0.wait);
        let shutdown = self.0.shutdown.clone();
        self.0.tasks.spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(wait) => rounds.expire(&key),
                () = taken.cancelled() => {}
                () = shutdown.cancelled() => {}
            }
        });
        Ok(
            json!({"resultType": "input_required", "inputRequests": requests,
                  "requestState": state}),
        )
    }

    /// A state whose retry did not come in time: its server's requests get an error saying so
    /// and its call is cancelled.
    fn expire(&self, state: &str) {
        let gone = self.0.waiting.lock().expect("rounds lock").remove(state);
        if let Some(w) = gone {
            tracing::info!(tool = %w.tool, client = %w.client,
                "a 2026-07-28 client did not retry with its answers in time; its call is cancelled");
            for (_, ask) in w.asked {
                refuse(
                    ask,
                    INTERNAL_ERROR,
                    format!(
                        "the client (2026-07-28) did not retry with the answer within {} s",
                        self.0.wait.as_secs_f64()
                    ),
                );
            }
        }
    }

    /// Takes the state a retry names and answers its server's requests with the retry's
    /// answers. Anything wrong: the code and message for the client, and the state (if it
    /// was one) stays for a retry that fits.
    fn retry(
        &self,
        client: &str,
        tool: &str,
        state: Option<Value>,
        responses: Option<Value>,
    ) -> Result<(Run, Askable), (i64, String)> {
        let bad = |m: String| (INVALID_PARAMS, m);
        let state = match state {
            Some(Value::String(s)) => s,
            Some(_) => {
                return Err(bad(
                    "requestState must be the string the input_required result gave".into(),
                ));
            }
            None => {
                return Err(bad(
                    "inputResponses without requestState: retry with the requestState the \
                     input_required result gave"
                        .into(),
                ));
            }
        };
        let mut waiting = self.0.waiting.lock().expect("rounds lock");
        let w = match waiting.get(&state) {
            Some(w) if w.client == client => w,
            // another client's state is as unknown as one never given
            _ => {
                return Err(bad(format!(
                    "unknown requestState: it was answered already, waited longer than {} s, or \
                     was never given; call the tool again",
                    self.0.wait.as_secs_f64()
                )));
            }
        };
        if w.tool != tool {
            return Err(bad(format!(
                "this requestState belongs to a call of '{}', not '{tool}'",
                w.tool
            )));
        }
        let answers = check_answers(&w.asked, responses).map_err(bad)?;
        let w = waiting.remove(&state).expect("looked up under the lock");
        drop(waiting);
        w.taken.cancel();
        for ((_, ask), answer) in w.asked.into_iter().zip(answers) {
            let _ = ask.reply.send(Ok(answer));
        }
        Ok((w.run, w.askable))
    }
}

/// The answers of `responses` for each of `asked`, in its order, each checked against what
/// its method returns; `Err`: what is wrong, for the client. (Sampling and roots are
/// deprecated from 2026-07-28 on, SEP-2577, yet servers of the older protocol ask them.)
#[allow(deprecated)]
fn check_answers(
    asked: &[(String, ServerAsk)],
    responses: Option<Value>,
) -> Result<Vec<Value>, String> {
    let keys = || {
        asked
            .iter()
            .map(|(k, _)| format!("{k:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut responses = match responses {
        Some(Value::Object(m)) => m,
        None | Some(Value::Null) => {
            return Err(format!(
                "the retry carries no inputResponses; it must answer {}",
                keys()
            ));
        }
        Some(_) => {
            return Err(format!(
                "inputResponses must be an object of answers by key ({})",
                keys()
            ));
        }
    };
    let unknown: Vec<String> = responses
        .keys()
        .filter(|k| !asked.iter().any(|(a, _)| a == *k))
        .map(|k| format!("{k:?}"))
        .collect();
    if !unknown.is_empty() {
        return Err(format!(
            "inputResponses answers {} which were not asked (asked: {})",
            unknown.join(", "),
            keys()
        ));
    }
    let mut answers = Vec::with_capacity(asked.len());
    for (key, ask) in asked {
        let Some(answer) = responses.remove(key) else {
            return Err(format!(
                "inputResponses has no answer for {key:?} (asked: {})",
                keys()
            ));
        };
        let fits = match ask.method.as_str() {
            "elicitation/create" => {
                serde_json::from_value::<rmcp::model::ElicitResult>(answer.clone()).map(drop)
            }
            "sampling/createMessage" => {
                serde_json::from_value::<rmcp::model::CreateMessageResult>(answer.clone()).map(drop)
            }
            "roots/list" => {
                serde_json::from_value::<rmcp::model::ListRootsResult>(answer.clone()).map(drop)
            }
            _ => Ok(()),
        };
        if let Err(e) = fits {
            return Err(format!(
                "inputResponses[{key:?}] is not a {} result: {e}",
                ask.method
            ));
        }
        answers.push(answer);
    }
    Ok(answers)
}

/// The call's next step: its answer, or the requests its server sent the client (those the
/// client cannot be asked are refused here, and the wait goes on).
async fn next_round(run: &mut Run, askable: Askable) -> Round {
    loop {
        let first = tokio::select! {
            biased;
            frame = &mut run.done => {
                return Round::Done(frame.unwrap_or_else(|_| {
                    error_frame(Value::Null, INTERNAL_ERROR, "the gateway is shutting down")
                        .to_string()
                }));
            }
            Some(ask) = run.asks.recv() => ask,
        };
        let mut asks = vec![first];
        while let Ok(more) = run.asks.try_recv() {
            asks.push(more);
        }
        let mut fit = Vec::with_capacity(asks.len());
        for ask in asks {
            match askable.allows(&ask.method) {
                Ok(()) => fit.push(ask),
                Err(why) => refuse(ask, METHOD_NOT_FOUND, why),
            }
        }
        if !fit.is_empty() {
            return Round::Asked(fit);
        }
    }
}

/// Answers a server's request with an error.
fn refuse(ask: ServerAsk, code: i64, message: String) {
    let _ = ask.reply.send(Err(RpcError::Remote {
        code,
        message,
        data: None,
    }));
}

/// `frame` (a JSON-RPC answer) under `id`: a retry gets the call's answer under its own id.
fn with_id(frame: &str, id: &Value) -> String {
    match serde_json::from_str::<Value>(frame) {
        Ok(mut v) if v.is_object() => {
            v["id"] = id.clone();
            v.to_string()
        }
        _ => frame.to_owned(),
    }
}
