//! One request's way to a server and its record.
//!
//! The dispatcher decides what a request is and where it goes ([`Route`]); [`CallBook`] takes
//! it from there in one step: it records the call (the dashboard's call log, the bus, the
//! session's call frames, telemetry), relays the server's progress ([`ProgressRelay`]), sends
//! the request, reads the answer (tool results through the raw pass-through, `mod raw`) and
//! records how it ended. Calls answered without a server (refused, unknown, built-in) are
//! recorded with [`CallBook::answered`].
//!
//! It owns the handles it writes to; the gateway makes one and hands it out.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rmcp::model::{CallToolResult, ContentBlock, ErrorData, ResultType};
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::jsonrpc::{INTERNAL_ERROR, REQUEST_CANCELLED, error_data};
use super::raw::{Checked, ToolAnswer, checked_result, error_text, is_input_required};
use super::session::{self, Session};
use crate::auth::Caller;
use crate::calls::{CallLog, NewCall, PayloadSrc};
use crate::elicit::Elicitations;
use crate::events::{EventBus, HubEvent};
use crate::telemetry::{CallRecord, Telemetry};
use crate::upstream::{
    CallError, ClientAsks, ForClient, Progress, ProgressSink, Retry, RpcError, ServerAsk, Upstream,
};

/// The server name of calls the gateway answers itself (built-in tools, refusals).
pub(crate) const GATEWAY_SERVER: &str = "switchboard";

/// Where progress for the client goes: called with the client's own token, in order, from the
/// upstream's reader. Must not block.
pub(crate) type ProgressOut = Arc<dyn Fn(&Value, &Progress) + Send + Sync>;

/// The client's progress token and where its notifications go.
pub(crate) struct ClientProgress {
    pub(crate) token: Value,
    pub(crate) out: Option<ProgressOut>,
}

/// Who is asking and for what: everything a method needs besides its parameters.
pub(crate) struct CallCtx<'a> {
    /// `None` fails closed (-32001).
    pub(crate) caller: Option<&'a Caller>,
    /// The session id as the client sent it (telemetry, events).
    pub(crate) session_id: Option<String>,
    /// The session's progress stream, when it is one we track.
    pub(crate) session: Option<Arc<Session>>,
    /// The client's JSON-RPC id, as text.
    pub(crate) request_id: String,
    pub(crate) progress: Option<ClientProgress>,
    /// Where requests the server sends during the call go (the client's transport answers
    /// them); `None`: this client cannot be asked, the server is told so.
    pub(crate) asks: Option<ClientAsks>,
    /// The client's cancellation (or its going away).
    pub(crate) cancel: CancellationToken,
    /// The request's `_meta` as it goes on to the server (see `jsonrpc::passed_meta`).
    pub(crate) meta: Option<Map<String, Value>>,
}

/// Where a call of a tool goes, looked up once and handed on.
#[derive(Debug)]
pub(crate) struct Route<'a> {
    /// The tool's exposed name, `<server>__<tool>` (what roles check and calls are recorded
    /// as): the name the client called, or made from it on a per-server endpoint.
    pub(crate) exposed: Cow<'a, str>,
    pub(crate) upstream: Upstream,
    /// The tool's own name on that server.
    pub(crate) tool: Cow<'a, str>,
    /// Whether a call of it is safe to replay.
    pub(crate) replayable: bool,
}

/// A request to one server that is not a tool call (`resources/read`, `prompts/get`).
#[derive(Debug)]
pub(crate) struct Ask<'a> {
    pub(crate) method: &'static str,
    /// What the call is recorded as (the URI, the exposed prompt name).
    pub(crate) name: &'a str,
    /// What the server calls it.
    pub(crate) target: &'a str,
    pub(crate) params: Value,
    /// What the method returns, for the error when a server returns something else.
    pub(crate) what: &'static str,
}

/// Where calls are recorded. Cheap to clone (one `Arc`), shared by every transport.
#[derive(Debug, Clone)]
pub(crate) struct CallBook(Arc<Book>);

#[derive(Debug)]
struct Book {
    telemetry: Telemetry,
    /// Calls in flight and recently finished, with payloads, for the dashboard.
    calls: CallLog,
    /// `CallStarted`/`CallProgress`/`CallFinished` for the dashboard and tray.
    bus: EventBus,
    /// Numbers call ids (`c1`, `c2`, …) across transports.
    seq: AtomicU64,
    /// Where the elicitations of calls whose client cannot be asked go.
    elicitations: Elicitations,
}

impl CallBook {
    pub(crate) fn new(telemetry: Telemetry, bus: EventBus, elicitations: Elicitations) -> Self {
        Self(Arc::new(Book {
            telemetry,
            calls: CallLog::default(),
            bus,
            seq: AtomicU64::new(1),
            elicitations,
        }))
    }

    pub(crate) fn elicitations(&self) -> &Elicitations {
        &self.0.elicitations
    }

    pub(crate) fn telemetry(&self) -> &Telemetry {
        &self.0.telemetry
    }

    pub(crate) fn calls(&self) -> &CallLog {
        &self.0.calls
    }

    /// Records a `tools/call` the gateway answered itself: `Ok` with a built-in tool's result,
    /// `Err` with the code and message it refused the call with.
    pub(crate) fn answered(
        &self,
        ctx: &CallCtx<'_>,
        tool: &str,
        answer: Result<&Value, (i64, String)>,
    ) {
        let scope = CallScope::begin(self, ctx, "tools/call", tool, GATEWAY_SERVER);
        match answer {
            Ok(value) => scope.finish_with(0, None, Some(PayloadSrc::Value(value))),
            Err(error) => scope.finish(0, Some(error)),
        }
    }

    /// `tools/call` of `route` with the client's `arguments` (a JSON object) as they came.
    /// The server's progress goes to the client as it comes; a plain result comes back as the
    /// server wrote it.
    pub(crate) async fn call_tool(
        &self,
        ctx: &CallCtx<'_>,
        route: Route<'_>,
        arguments: Option<&RawValue>,
        retry: Option<Retry<'_>>,
        modern: bool,
    ) -> Result<ToolAnswer, ErrorData> {
        let Route {
            exposed,
            upstream: up,
            tool,
            replayable,
        } = route;
        let name: &str = &exposed;
        let scope = CallScope::begin(self, ctx, "tools/call", name, up.name());
        scope.arguments(PayloadSrc::Json(arguments.map_or("null", RawValue::get)));
        let relay = ProgressRelay::start(self, &scope.call_id, name, ctx);
        // A session whose client declared none of elicitation, sampling and roots: what its
        // server asks goes to Switchboard instead (a stateless request's client is not known
        // to have declared nothing: its server is told it cannot be asked, as before).
        let declared_nothing = ctx.session.as_ref().is_some_and(|s| !s.can_be_asked());
        let (asks, own) = match &ctx.asks {
            Some(a) => (Some(a.clone()), None),
            None if !declared_nothing => (None, None),
            None => {
                let (tx, rx) = mpsc::channel(OWN_ASKS);
                let session = ctx
                    .session_id
                    .clone()
                    .unwrap_or_else(|| format!("call {}", scope.call_id));
                (Some(ClientAsks { session, tx }), Some(rx))
            }
        };
        let answer = match serving(ctx, &up) {
            Ok(up) => {
                let call = up.call_tool(
                    &tool,
                    arguments,
                    retry,
                    replayable,
                    ForClient {
                        progress: Some(relay),
                        asks,
                        meta: ctx.meta.clone(),
                        modern,
                    },
                    &ctx.cancel,
                );
                match own {
                    None => call.await,
                    Some(rx) => {
                        let client = ctx.caller.map(|c| c.name.as_str());
                        answering_asks(&self.0.elicitations, rx, client, call).await
                    }
                }
            }
            Err(e) => Err(e),
        };
        match answer {
            Ok(a) if modern && is_input_required(&a.result) => {
                scope.finish_with(0, None, Some(PayloadSrc::Json(a.result.get())));
                Ok(ToolAnswer::InputRequired(a.result))
            }
            Ok(a) => match checked_result(a.result) {
                Checked::Plain { raw, error } => {
                    scope.finish_with(
                        a.replay_attempts,
                        error.map(|text| (0, text)),
                        Some(PayloadSrc::Json(raw.get())),
                    );
                    Ok(ToolAnswer::Raw(raw))
                }
                Checked::Typed { raw, mut result } => {
                    let err = (result.is_error == Some(true)).then(|| (0, error_text(&result)));
                    if result.result_type.is_none() {
                        // as the server wrote it: `result_frame` adds `resultType` for
                        // 2026-07-28 clients
                        scope.finish_with(
                            a.replay_attempts,
                            err,
                            Some(PayloadSrc::Json(raw.get())),
                        );
                        return Ok(ToolAnswer::Raw(raw));
                    }
                    // Its own `resultType`: written from rmcp's types, which drop it again for
                    // older clients.
                    result.result_type.get_or_insert(ResultType::COMPLETE);
                    let shown = serde_json::to_value(&result).unwrap_or(Value::Null);
                    scope.finish_with(a.replay_attempts, err, Some(PayloadSrc::Value(&shown)));
                    Ok(ToolAnswer::Typed(result))
                }
                Checked::Invalid(e) => {
                    let message = format!(
                        "server '{}' returned an invalid tool result: {e}",
                        up.name()
                    );
                    scope.finish(a.replay_attempts, Some((INTERNAL_ERROR, message.clone())));
                    Err(error_data(INTERNAL_ERROR, message, None))
                }
            },
            Err(e) => {
                let attempts = u32::from(matches!(e, CallError::CrashedTwice { .. }));
                scope.finish(attempts, Some((e.code(), e.to_string())));
                match remote_error(e) {
                    Ok(data) => Err(data),
                    // Failures of the server itself are tool errors: the model can read them.
                    Err(e) => Ok(ToolAnswer::Typed(CallToolResult::error(vec![
                        ContentBlock::text(e.to_string()),
                    ]))),
                }
            }
        }
    }

    /// `ask` on `up` (replayable, no progress), its result read as a `T`.
    pub(crate) async fn request<T: DeserializeOwned>(
        &self,
        ctx: &CallCtx<'_>,
        up: &Upstream,
        ask: Ask<'_>,
    ) -> Result<T, ErrorData> {
        let what = ask.what;
        let value = self.request_raw::<T>(ctx, up, ask).await?;
        serde_json::from_value(value).map_err(|e| {
            let m = format!("server '{}' returned an invalid {what}: {e}", up.name());
            error_data(INTERNAL_ERROR, m, None)
        })
    }

    /// `ask` on `up` (replayable; progress relayed to a caller that asked for it): its result
    /// as the server wrote it, once it is checked to read as a `T` (rmcp's type of it; what it
    /// does not know is kept all the same).
    pub(crate) async fn request_raw<T: DeserializeOwned>(
        &self,
        ctx: &CallCtx<'_>,
        up: &Upstream,
        ask: Ask<'_>,
    ) -> Result<Value, ErrorData> {
        let scope = CallScope::begin(self, ctx, ask.method, ask.name, up.name());
        let mut params = ask.params;
        if let (Some(meta), Some(p)) = (&ctx.meta, params.as_object_mut()) {
            p.insert("_meta".into(), Value::Object(meta.clone()));
        }
        // a caller with a progress token hears the server's progress, and the gateway's own
        // (an on-demand server starting for it)
        let progress = ctx
            .progress
            .is_some()
            .then(|| ProgressRelay::start(self, &scope.call_id, ask.name, ctx));
        let answer = match serving(ctx, up) {
            Ok(up) => {
                up.request(ask.method, params, ask.target, true, progress, &ctx.cancel)
                    .await
            }
            Err(e) => Err(e),
        };
        match answer {
            Ok(a) => match T::deserialize(&a.result) {
                Ok(_) => {
                    scope.finish(a.replay_attempts, None);
                    Ok(a.result)
                }
                Err(e) => {
                    let m = format!(
                        "server '{}' returned an invalid {}: {e}",
                        up.name(),
                        ask.what
                    );
                    scope.finish(a.replay_attempts, Some((INTERNAL_ERROR, m.clone())));
                    Err(error_data(INTERNAL_ERROR, m, None))
                }
            },
            Err(e) => {
                scope.finish(0, Some((e.code(), e.to_string())));
                Err(remote_error(e)
                    .unwrap_or_else(|e| error_data(INTERNAL_ERROR, e.to_string(), None)))
            }
        }
    }
}

/// The instance of `up` that serves the caller's session: `up` itself unless the server is
/// isolated (see [`Upstream::for_session`]). An instance started for a session that ended
/// meanwhile is stopped again: the session's end may have run before it was there.
fn serving(ctx: &CallCtx<'_>, up: &Upstream) -> Result<Upstream, CallError> {
    if !up.is_isolated() {
        return Ok(up.clone());
    }
    let session = ctx.session.as_ref();
    let instance = up.for_session(session.map(|s| (s.id.as_str(), || s.link(up.name()))))?;
    if let Some(s) = session
        && s.closed.is_cancelled()
    {
        up.end_session(&s.id);
        return Err(CallError::Cancelled);
    }
    Ok(instance)
}

/// Requests from a server during one call whose client cannot be asked, waiting for Switchboard
/// or refused; one more is refused by the connection (the server hears the client is busy).
const OWN_ASKS: usize = 4;

/// Runs `call`, answering meanwhile what its server asks a client that cannot be asked:
/// elicitations by the person at Switchboard, anything else with an error saying why. When
/// the call ends, elicitations still pending end with it.
async fn answering_asks<T>(
    elicitations: &Elicitations,
    mut asks: mpsc::Receiver<ServerAsk>,
    client: Option<&str>,
    call: impl std::future::Future<Output = T>,
) -> T {
    use futures_util::StreamExt as _;
    tokio::pin!(call);
    let mut waiting = futures_util::stream::FuturesUnordered::new();
    loop {
        tokio::select! {
            biased;
            answer = &mut call => return answer,
            Some(ask) = asks.recv() => {
                if crate::elicit::answerable(&ask) {
                    waiting.push(elicitations.take(ask, client));
                } else {
                    let message = format!(
                        "the client of this call cannot be asked {:?} (it declared no such \
                         capability, or its request has no stream to carry it)",
                        ask.method
                    );
                    let _ = ask.reply.send(Err(RpcError::Remote { code: -32601, message, data: None }));
                }
            }
            Some(()) = waiting.next(), if !waiting.is_empty() => {}
        }
    }
}

/// A server's JSON-RPC error (or the client's cancellation) as the client's error; anything
/// else is a failure of the server itself.
fn remote_error(e: CallError) -> Result<ErrorData, CallError> {
    match e {
        CallError::Remote(RpcError::Remote {
            code,
            message,
            data,
        }) => Ok(error_data(code, message, data)),
        CallError::Cancelled => Ok(error_data(REQUEST_CANCELLED, "request cancelled", None)),
        other => Err(other),
    }
}

/// One call's record from start to finish: events, telemetry, the session's call frames.
struct CallScope {
    book: CallBook,
    call_id: String,
    request_id: String,
    session_id: Option<String>,
    session: Option<Arc<Session>>,
    tool: String,
    server: String,
    method: &'static str,
    started: Instant,
}

impl CallScope {
    fn begin(
        book: &CallBook,
        ctx: &CallCtx<'_>,
        method: &'static str,
        tool: &str,
        server: &str,
    ) -> Self {
        let b = &book.0;
        let call_id = format!("c{}", b.seq.fetch_add(1, Ordering::Relaxed));
        if method == "tools/call" {
            b.calls.started(NewCall {
                call_id: &call_id,
                tool,
                server,
                client: ctx.caller.map(|c| c.name.as_str()),
                session_id: ctx.session_id.as_deref(),
                started_ms: chrono::Utc::now().timestamp_millis(),
            });
            if b.bus.has_subscribers() {
                b.bus.publish(HubEvent::CallStarted {
                    call_id: call_id.clone(),
                    tool: tool.to_owned(),
                    server: server.to_owned(),
                    session_id: ctx.session_id.clone(),
                    client: ctx.caller.map(|c| c.name.clone()),
                });
            }
            if let Some(s) = &ctx.session
                && s.watchers() > 0
            {
                let mut frame = json!({"event": "call_started", "call_id": call_id,
                    "tool": tool, "timestamp": crate::now_rfc3339()});
                if let Some(p) = &ctx.progress {
                    frame["token"] = p.token.clone();
                }
                s.publish(&frame);
            }
        }
        Self {
            book: book.clone(),
            call_id,
            request_id: ctx.request_id.clone(),
            session_id: ctx.session_id.clone(),
            session: ctx.session.clone(),
            tool: tool.to_owned(),
            server: server.to_owned(),
            method,
            started: Instant::now(),
        }
    }

    fn finish(&self, replay_attempts: u32, error: Option<(i64, String)>) {
        self.finish_with(replay_attempts, error, None);
    }

    /// Records what the call was asked (shown in the dashboard's detail pane).
    fn arguments(&self, arguments: PayloadSrc<'_>) {
        self.book.0.calls.arguments(&self.call_id, arguments);
    }

    /// Like `finish`, keeping the result (or error) the client got for the dashboard.
    fn finish_with(
        &self,
        replay_attempts: u32,
        error: Option<(i64, String)>,
        result: Option<PayloadSrc<'_>>,
    ) {
        let b = &self.book.0;
        let latency_ms = self.started.elapsed().as_millis() as u64;
        let outcome = if error.is_some() { "error" } else { "ok" };
        b.telemetry.record(CallRecord {
            event: "tool_call",
            ts_unix_ms: chrono::Utc::now().timestamp_millis(),
            request_id: self.request_id.clone(),
            tool_name: self.tool.clone(),
            server: self.server.clone(),
            method: self.method,
            session_id: self.session_id.clone(),
            latency_ms,
            replay_attempts,
            outcome,
            error_code: error.as_ref().map(|e| e.0),
            error_message: error.as_ref().map(|e| e.1.clone()),
        });
        if self.method == "tools/call" {
            b.calls.finished(
                &self.call_id,
                latency_ms,
                replay_attempts,
                error.as_ref().map(|e| e.1.clone()),
                result,
            );
            if let Some(s) = &self.session
                && s.watchers() > 0
            {
                let mut frame = json!({"event": "call_finished", "call_id": self.call_id,
                    "tool": self.tool, "outcome": outcome, "latency_ms": latency_ms,
                    "timestamp": crate::now_rfc3339()});
                if let Some((_, message)) = &error {
                    frame["error"] = json!(message);
                }
                s.publish(&frame);
            }
            if b.bus.has_subscribers() {
                b.bus.publish(HubEvent::CallFinished {
                    call_id: self.call_id.clone(),
                    tool: self.tool.clone(),
                    server: self.server.clone(),
                    outcome,
                    latency_ms,
                    replay_attempts,
                    error: error.map(|e| e.1),
                });
            }
        }
    }
}

/// Where upstream progress of one call goes: the client (under its own token, in order), the
/// bus, and the session's watchers.
struct ProgressRelay;

impl ProgressRelay {
    fn start(book: &CallBook, call_id: &str, tool: &str, ctx: &CallCtx<'_>) -> ProgressSink {
        let client = ctx
            .progress
            .as_ref()
            .map(|p| (p.token.clone(), p.out.clone()));
        let session = ctx.session.clone();
        let book = book.clone();
        let call_id = call_id.to_owned();
        let tool = tool.to_owned();
        // Progress must increase; after a replay the restarted server counts from the start
        // again, and those reports are held back until they pass the last one sent.
        let last = Mutex::new(f64::NEG_INFINITY);
        Arc::new(move |p: Progress| {
            {
                let mut last = last.lock().expect("progress lock");
                if p.progress <= *last {
                    return;
                }
                *last = p.progress;
            }
            let b = &book.0;
            b.calls
                .progress(&call_id, p.progress, p.total, p.message.clone());
            if b.bus.has_subscribers() {
                b.bus.publish(HubEvent::CallProgress {
                    call_id: call_id.clone(),
                    progress: p.progress,
                    total: p.total,
                    message: p.message.clone(),
                });
            }
            if let Some(s) = &session
                && s.watchers() > 0
            {
                let token = client
                    .as_ref()
                    .map(|c| c.0.clone())
                    .unwrap_or_else(|| Value::String(call_id.clone()));
                s.publish(&session::progress_frame(&token, &p, &tool));
            }
            if let Some((token, Some(out))) = &client {
                out(token, &p);
            }
        })
    }
}
