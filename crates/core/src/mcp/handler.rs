//! The rmcp `ServerHandler` for the stateless 2026-07-28 requests on `/mcp` that the fast path
//! leaves to rmcp (a progress token, `Mcp-Param-*` headers, anything unusual): rmcp's typed
//! requests, answered by the shared [`Dispatcher`]. Sessions are not rmcp's (see
//! `mcp/streamable`).
//!
//! rmcp's service wants its typed answers, which have no room for what rmcp does not know (a
//! tool's `execution`, extension fields): what reaches rmcp sessions is rmcp's reading of the
//! servers' answers, where the fast path and `/ws` pass them on as they came.
//!
//! What it adds to the dispatcher is rmcp's side of a call: who the caller is (put in the
//! request by the auth middleware), the session id, progress through rmcp's peer under the
//! client's own token (in order, before the result), and cancellation by the client's
//! `notifications/cancelled` or its going away ([`ClientGone`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::http::request::Parts;
use rmcp::ServerHandler;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CompleteRequestParams, CompleteResult, ErrorData,
    GetPromptRequestParams, GetPromptResponse, ListPromptsResult, ListResourceTemplatesResult,
    ListResourcesResult, ListToolsResult, PaginatedRequestParams, ProgressNotificationParam,
    ProgressToken, ReadResourceRequestParams, ReadResourceResponse, ServerConfig,
    SubscribeRequestParams, UnsubscribeRequestParams,
};
// Logging is deprecated from 2026-07-28 on (SEP-2577); 2025-11-25 sessions still use it.
#[allow(deprecated)]
use rmcp::model::SetLevelRequestParams;
use rmcp::model::{
    CancelledNotification, CancelledNotificationParam, CustomRequest, GetPromptResult,
    ReadResourceResult, ServerRequest,
};
use rmcp::service::PeerRequestOptions;
use rmcp::service::{Peer, RequestContext, RoleServer, ServiceError};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::call::{CallCtx, ClientProgress, ProgressOut};
use super::dispatch::Dispatcher;
use super::jsonrpc::{INTERNAL_ERROR, error_data, id_text, passed_meta};
use super::session::Session;
use crate::auth::Caller;
use crate::elicit::Elicitations;
use crate::upstream::{ClientAsks, Progress, RpcError, ServerAsk};

/// Progress notifications of one call waiting for rmcp's peer. When it is full the client is
/// not reading: further progress is dropped until there is room again (never the result,
/// which does not pass through here).
const PROGRESS_QUEUE: usize = 1024;

/// Requests from the call's server waiting for the call's task to send them to the client.
const ASK_QUEUE: usize = 8;

/// How long a call's result waits for its progress notifications to be out.
const PROGRESS_DRAIN: Duration = Duration::from_secs(2);

/// Put into a `/mcp` request's extensions by the HTTP layer: cancelled when the client goes
/// away before its response is complete.
#[derive(Debug, Clone)]
pub(crate) struct ClientGone(pub(crate) CancellationToken);

/// rmcp's typed copy of a result its servers wrote: rmcp sessions can only answer in rmcp's
/// types (the fast path and `/ws` send the result as it came; see `mod raw`).
/// It says `resultType: "complete"`, as rmcp's own constructors do (rmcp drops it again for
/// clients older than 2026-07-28).
fn typed<T: DeserializeOwned>(mut result: Value) -> Result<T, ErrorData> {
    if let Some(r) = result.as_object_mut() {
        r.entry("resultType")
            .or_insert_with(|| Value::String("complete".into()));
    }
    serde_json::from_value(result)
        .map_err(|e| error_data(INTERNAL_ERROR, format!("unreadable result: {e}"), None))
}

/// The rmcp server each `/mcp` client session talks to.
#[derive(Debug, Clone)]
pub(crate) struct Handler {
    d: Dispatcher,
}

impl Handler {
    pub(crate) fn new(d: Dispatcher) -> Self {
        Self { d }
    }

    /// What the dispatcher needs to know about an rmcp request.
    fn ctx<'a>(
        &self,
        context: &'a RequestContext<RoleServer>,
        cancel: CancellationToken,
        progress: Option<ClientProgress>,
    ) -> CallCtx<'a> {
        let session = session(&context.extensions).cloned();
        let session_id = session.as_ref().map(|s| s.id.clone());
        let request_id = match serde_json::to_value(&context.id) {
            Ok(v) => id_text(&v),
            Err(_) => String::new(),
        };
        CallCtx {
            caller: caller(context),
            session_id,
            session,
            request_id,
            progress,
            asks: None,
            cancel,
            meta: serde_json::to_value(&context.meta)
                .ok()
                .and_then(passed_meta),
        }
    }
}

/// The session a request named, as the front door found it (and checked is the caller's).
fn session(extensions: &rmcp::model::Extensions) -> Option<&Arc<Session>> {
    extensions
        .get::<Parts>()
        .and_then(|p| p.extensions.get::<Arc<Session>>())
}

/// The paired client behind a request (put there by the auth middleware).
fn caller(context: &RequestContext<RoleServer>) -> Option<&Caller> {
    context
        .extensions
        .get::<Parts>()
        .and_then(|p| p.extensions.get::<Caller>())
}

/// The cursor of a list request, if it has one.
fn cursor(request: &Option<PaginatedRequestParams>) -> Option<&str> {
    request.as_ref().and_then(|r| r.cursor.as_deref())
}

/// The token a call should stop on, a child of rmcp's `ct` (the client's
/// `notifications/cancelled`), and the [`ClientGone`] token that must cancel it too: see
/// [`until_gone`].
fn call_cancellation(
    context: &RequestContext<RoleServer>,
) -> (CancellationToken, Option<CancellationToken>) {
    let gone = context
        .extensions
        .get::<Parts>()
        .and_then(|p| p.extensions.get::<ClientGone>())
        .map(|g| g.0.clone());
    match gone {
        Some(gone) => (context.ct.child_token(), Some(gone)),
        None => (context.ct.clone(), None),
    }
}

/// Runs `call` to its end; if the client goes away first, `cancel` is cancelled (the call
/// then ends as cancelled calls do). Watched in the call's own task: no watcher task.
async fn until_gone<T>(
    call: impl Future<Output = T>,
    gone: Option<CancellationToken>,
    cancel: &CancellationToken,
) -> T {
    let Some(gone) = gone else {
        return call.await;
    };
    tokio::pin!(call);
    tokio::select! {
        biased;
        answer = &mut call => answer,
        () = gone.cancelled() => {
            tracing::debug!("client went away mid-call; cancelling upstream");
            cancel.cancel();
            call.await
        }
    }
}

/// Client progress through rmcp's peer, sent in order from the call's own task (no task of
/// its own): the upstream's reader queues each report, the call's task writes them while it
/// waits for the result, and whatever is queued when the result comes goes out before it.
struct PeerProgress {
    out: ProgressOut,
    rx: mpsc::Receiver<ProgressNotificationParam>,
}

impl PeerProgress {
    fn start() -> Self {
        let (tx, rx) = mpsc::channel::<ProgressNotificationParam>(PROGRESS_QUEUE);
        let out: ProgressOut = Arc::new(move |token: &Value, p: &Progress| {
            let Ok(token) = serde_json::from_value::<ProgressToken>(token.clone()) else {
                return;
            };
            let mut param = ProgressNotificationParam::new(token, p.progress);
            if let Some(total) = p.total {
                param = param.with_total(total);
            }
            if let Some(message) = &p.message {
                param = param.with_message(message.clone());
            }
            // full: the client is too slow; it loses this progress report (see PROGRESS_QUEUE)
            let _ = tx.try_send(param);
        });
        Self { out, rx }
    }
}

/// What a call sends its client while it runs, from the call's own task (so that rmcp puts it
/// on the call's own response stream): its progress, and the requests its server sends (see
/// [`ask_client`]), answered concurrently.
struct Relay {
    peer: Peer<RoleServer>,
    progress: Option<PeerProgress>,
    asks: mpsc::Receiver<ServerAsk>,
    /// Where an elicitation goes that the client did not declare, and whose call it is.
    elicitations: Elicitations,
    client: Option<String>,
}

impl Relay {
    /// Runs `call`, relaying meanwhile; then sends what progress is still queued (all of it
    /// came before the result: one reader queues both), bounded by [`PROGRESS_DRAIN`]. A
    /// server request still unanswered when the result is in is called off: the client gets
    /// `notifications/cancelled` for it before the result (also bounded by
    /// [`PROGRESS_DRAIN`]), its server is told the call has ended. Not so an isolated
    /// instance's ([`ServerAsk::outlives_call`]): the request is its session's, whatever call
    /// it came during (a filesystem server asking for roots after `roots/list_changed`), so it
    /// is still answered after the result.
    async fn during<T>(mut self, call: impl std::future::Future<Output = T>) -> T {
        use futures_util::StreamExt as _;
        tokio::pin!(call);
        let mut asking = futures_util::stream::FuturesUnordered::new();
        // the call's end: a request of its server still unanswered then is called off with
        // the client before the result goes out (unless it outlives the call: `kept`, which
        // is never cancelled)
        let ended = CancellationToken::new();
        let kept = CancellationToken::new();
        let answer = loop {
            tokio::select! {
                biased;
                answer = &mut call => break answer,
                Some(param) = async {
                    match self.progress.as_mut() {
                        Some(p) => p.rx.recv().await,
                        None => std::future::pending().await,
                    }
                } => {
                    let _ = self.peer.notify_progress(param).await;
                }
                Some(ask) = self.asks.recv() => {
                    asking.push(self.ask(ask, &ended, &kept));
                }
                Some(()) = asking.next(), if !asking.is_empty() => {}
            }
        };
        // asks queued as the call ended are still sent, on the call's stream (before its result)
        while let Ok(ask) = self.asks.try_recv() {
            asking.push(self.ask(ask, &ended, &kept));
        }
        ended.cancel();
        let _ = tokio::time::timeout(PROGRESS_DRAIN, async {
            while asking.next().await.is_some() {}
        })
        .await;
        if !asking.is_empty() {
            // an isolated instance's requests outlive the call: answered after its result
            // (each ends with its answer or the server's bound on it, `ASK_TIMEOUT`)
            tokio::spawn(async move { while asking.next().await.is_some() {} });
        }
        if let Some(p) = self.progress.as_mut() {
            let (rx, peer) = (&mut p.rx, &self.peer);
            let _ = tokio::time::timeout(PROGRESS_DRAIN, async {
                while let Ok(param) = rx.try_recv() {
                    let _ = peer.notify_progress(param).await;
                }
            })
            .await;
        }
        answer
    }

    fn ask(
        &self,
        ask: ServerAsk,
        ended: &CancellationToken,
        kept: &CancellationToken,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let ends = if ask.outlives_call { kept } else { ended };
        ask_client(
            self.peer.clone(),
            ask,
            ends.clone(),
            self.elicitations.clone(),
            self.client.clone(),
        )
    }
}

/// Asks the client what its server asked (under rmcp's id for it) and hands the answer back:
/// a result, the client's error, or an error saying why it could not be asked. A request for
/// a capability the client did not declare is not sent: an elicitation goes to Switchboard's
/// own (`elicitations`), anything else is refused.
async fn ask_client(
    peer: Peer<RoleServer>,
    ask: ServerAsk,
    ended: CancellationToken,
    elicitations: Elicitations,
    client: Option<String>,
) {
    let cancelled = ask.cancelled.clone();
    let declared = peer.peer_info().map(|info| {
        let c = &info.capabilities;
        match ask.method.as_str() {
            "elicitation/create" => c.elicitation.is_some(),
            "sampling/createMessage" => c.sampling.is_some(),
            "roots/list" => c.roots.is_some(),
            _ => true,
        }
    });
    let remote = |code: i64, message: String, data: Option<Value>| RpcError::Remote {
        code,
        message,
        data,
    };
    if declared == Some(false) && crate::elicit::answerable(&ask) {
        return elicitations.take(ask, client.as_deref()).await;
    }
    let reply = if declared == Some(false) {
        Err(remote(
            -32601,
            format!("the client declared no capability for {:?}", ask.method),
            None,
        ))
    } else {
        let request = ServerRequest::CustomRequest(CustomRequest::new(ask.method, ask.params));
        let sent = peer
            .send_cancellable_request(request, PeerRequestOptions::no_options())
            .await;
        let answer = match sent {
            Ok(handle) => {
                let id = handle.id.clone();
                tokio::select! {
                    answer = handle.await_response() => answer,
                    () = either(&cancelled, &ended) => {
                        // the server gave up its request (or the call it came with ended):
                        // the client hears so, under its id
                        let note = CancelledNotification::new(CancelledNotificationParam::new(
                            Some(id),
                            Some("the server cancelled its request".into()),
                        ));
                        let _ = peer.send_notification(note.into()).await;
                        return;
                    }
                }
            }
            Err(e) => Err(e),
        };
        match answer {
            Ok(result) => serde_json::to_value(result)
                .map_err(|e| remote(-32603, format!("unreadable answer: {e}"), None)),
            Err(ServiceError::McpError(e)) => {
                Err(remote(i64::from(e.code.0), e.message.into(), e.data))
            }
            Err(e) => Err(remote(
                -32603,
                format!("the client did not answer: {e}"),
                None,
            )),
        }
    };
    let _ = ask.reply.send(reply);
}

/// Resolves when `a` or `b` is cancelled.
async fn either(a: &CancellationToken, b: &CancellationToken) {
    tokio::select! {
        () = a.cancelled() => {}
        () = b.cancelled() => {}
    }
}

/// A `ServerHandler` method answered by the dispatcher `d` for a request that neither reports
/// progress nor outlives rmcp's `ct` (its context `ctx`); every one but `call_tool`.
macro_rules! answered {
    ($name:ident($params:ty) -> $result:ty, |$d:ident, $ctx:ident, $request:ident| $body:expr) => {
        async fn $name(
            &self,
            $request: $params,
            context: RequestContext<RoleServer>,
        ) -> Result<$result, ErrorData> {
            let ($d, $ctx) = (&self.d, &self.ctx(&context, context.ct.clone(), None));
            $body
        }
    };
}

impl ServerHandler for Handler {
    fn get_info(&self) -> ServerConfig {
        self.d.server_info()
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        typed(self.d.list_tools(caller(&context), cursor(&request))?)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let token = context
            .meta
            .get_progress_token()
            .and_then(|t| serde_json::to_value(t).ok());
        let relay_progress = token.as_ref().map(|_| PeerProgress::start());
        let progress = token.map(|token| ClientProgress {
            token,
            out: relay_progress.as_ref().map(|p| p.out.clone()),
        });
        let (cancel, gone) = call_cancellation(&context);
        let mut ctx = self.ctx(&context, cancel.clone(), progress);
        let (asks_tx, asks) = mpsc::channel(ASK_QUEUE);
        ctx.asks = Some(ClientAsks {
            // a stateless request is a session of its own
            session: ctx
                .session_id
                .clone()
                .unwrap_or_else(|| format!("request {}", ctx.request_id)),
            tx: asks_tx,
        });
        let relay = Relay {
            peer: context.peer.clone(),
            progress: relay_progress,
            asks,
            elicitations: self.d.gateway().elicitations().clone(),
            client: caller(&context).map(|c| c.name.clone()),
        };
        let call = until_gone(self.d.call_tool(&ctx, request), gone, &cancel);
        relay.during(call).await.map(Into::into)
    }

    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let ctx = self.ctx(&context, context.ct.clone(), None);
        self.d.subscribe(&ctx, &request.uri, true).await
    }

    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let ctx = self.ctx(&context, context.ct.clone(), None);
        self.d.subscribe(&ctx, &request.uri, false).await
    }

    async fn complete(
        &self,
        request: CompleteRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, ErrorData> {
        let ctx = self.ctx(&context, context.ct.clone(), None);
        typed(self.d.complete(&ctx, request).await?)
    }

    #[allow(deprecated)] // see the import
    async fn set_level(
        &self,
        request: SetLevelRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let ctx = self.ctx(&context, context.ct.clone(), None);
        let level = serde_json::to_value(request.level)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        self.d.set_level(&ctx, &level).await
    }

    // The rest is the dispatcher's answer for the request's caller, in rmcp's types.
    answered!(
        list_resources(Option<PaginatedRequestParams>) -> ListResourcesResult,
        |d, ctx, request| typed(d.list_resources(ctx, cursor(&request)).await?)
    );
    answered!(
        list_resource_templates(Option<PaginatedRequestParams>) -> ListResourceTemplatesResult,
        |d, ctx, request| typed(d.list_resource_templates(ctx, cursor(&request)).await?)
    );
    answered!(
        read_resource(ReadResourceRequestParams) -> ReadResourceResponse,
        |d, ctx, request| typed::<ReadResourceResult>(d.read_resource(ctx, request.uri).await?)
            .map(Into::into)
    );
    answered!(
        list_prompts(Option<PaginatedRequestParams>) -> ListPromptsResult,
        |d, ctx, request| typed(d.list_prompts(ctx, cursor(&request)).await?)
    );
    answered!(
        get_prompt(GetPromptRequestParams) -> GetPromptResponse,
        |d, ctx, request| typed::<GetPromptResult>(d.get_prompt(ctx, request).await?)
            .map(Into::into)
    );
}
