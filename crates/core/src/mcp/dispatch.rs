//! The transport-independent MCP dispatcher: what the gateway answers to each request.
//!
//! [`Dispatcher`] holds the logic of every MCP method the gateway serves (tools with roles,
//! built-in tools, replay, progress, telemetry, resources, prompts). The rmcp
//! [`Handler`](super::Handler) behind `/mcp` sessions calls into it with rmcp's typed
//! requests; `/ws` and the `/mcp` fast path hand it raw JSON-RPC through [`Dispatcher::answer`],
//! which answers in the caller's task without any of rmcp's per-session machinery.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResult, ContentBlock, DiscoverResult, ErrorCode, ErrorData,
    GetPromptRequestParams, GetPromptResult, Implementation, ListPromptsResult,
    ListResourceTemplatesResult, ListResourcesResult, ListToolsResult, Prompt, ProtocolVersion,
    ReadResourceRequestParams, ReadResourceResult, Resource, ResourceTemplate, ResultType,
    ServerCapabilities, ServerConfig, ServerResult, Tool,
};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use super::session::Session;
use super::{
    BUILTIN_SERVER, CallScope, FORBIDDEN, HEALTH_TOOL, McpGateway, ProgressRelay, TELEMETRY_TOOL,
    builtin_tools, error_data, json_result, names, remote_error,
};
use crate::auth::{Caller, Roles};
use crate::calls::PayloadSrc;
use crate::upstream::{CallError, Progress, ServerState, Upstream};

/// Where progress for the client goes: called with the client's own token, in order, from the
/// upstream's reader. Must not block.
pub(crate) type ProgressOut = Arc<dyn Fn(&Value, &Progress) + Send + Sync>;

/// The client's progress token and where its notifications go.
pub(crate) struct ClientProgress {
    pub token: Value,
    pub out: Option<ProgressOut>,
}

/// Who is asking and for what: everything a method needs besides its parameters.
pub(crate) struct CallCtx<'a> {
    /// `None` fails closed (-32001).
    pub caller: Option<&'a Caller>,
    /// The session id as the client sent it (telemetry, events).
    pub session_id: Option<String>,
    /// The session's progress stream, when it is one we track.
    pub session: Option<Arc<Session>>,
    /// The client's JSON-RPC id, as text.
    pub request_id: String,
    pub progress: Option<ClientProgress>,
    /// The client's cancellation (or its going away).
    pub cancel: CancellationToken,
}

/// The gateway as one MCP server for one set of roles. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    pub(super) gw: McpGateway,
    pub(super) roles: Arc<Roles>,
}

/// Protocol revisions the gateway answers `initialize` with, oldest first.
const VERSIONS: [&str; 5] = [
    "2024-11-05",
    "2025-03-26",
    "2025-06-18",
    "2025-11-25",
    "2026-07-28",
];
/// What `initialize` answers when the client asks for a revision we do not know.
const LATEST_SESSION_VERSION: &str = "2025-11-25";
/// The first revision whose results carry `resultType`.
pub(crate) const STATELESS_VERSION: &str = "2026-07-28";

impl Dispatcher {
    pub(crate) fn new(gw: McpGateway, roles: Arc<Roles>) -> Self {
        Self { gw, roles }
    }

    pub(crate) fn server_info(&self) -> ServerConfig {
        let capabilities = ServerCapabilities::builder()
            .enable_tools()
            .enable_tool_list_changed()
            .enable_resources()
            .enable_prompts()
            .build();
        let mut info = ServerConfig::new(capabilities);
        info.server_info = Implementation::new("switchboard", env!("CARGO_PKG_VERSION"));
        info.instructions = Some(
            "Switchboard aggregates the user's MCP servers: tools are named <server>__<tool>. \
             switchboard__health_snapshot shows which servers are running."
                .into(),
        );
        info
    }

    /// Whether the caller's role allows `name` (fails closed without a caller).
    pub(crate) fn allowed(&self, caller: Option<&Caller>, name: &str) -> Result<(), ErrorData> {
        let Some(c) = caller else {
            return Err(error_data(-32001, "authentication required", None));
        };
        if self.roles.allows(&c.role, name) {
            Ok(())
        } else {
            Err(error_data(
                FORBIDDEN,
                format!("tool '{name}' is not allowed for role '{}'", c.role),
                None,
            ))
        }
    }

    /// A role with an empty (or no) allowlist sees nothing, resources included.
    fn locked_out(&self, caller: Option<&Caller>) -> bool {
        caller.is_none_or(|c| self.roles.roles.get(&c.role).is_none_or(Vec::is_empty))
    }

    /// The `field` items of `method` from every running server that offers `capability`
    /// (first page of each), with the server they came from. Servers that fail are skipped.
    async fn gather(
        &self,
        capability: &str,
        method: &'static str,
        field: &str,
        ct: &CancellationToken,
    ) -> Vec<(Upstream, Value)> {
        let mut items = Vec::new();
        for up in self.gw.upstreams() {
            let status = up.status();
            if status.state != ServerState::Running || !status.has_capability(capability) {
                continue;
            }
            let Ok(page) = up.request(method, json!({}), method, true, None, ct).await else {
                continue;
            };
            if let Some(Value::Array(list)) = page.result.get(field) {
                items.extend(list.iter().map(|v| (up.clone(), v.clone())));
            }
        }
        items
    }

    pub(crate) fn list_tools(&self, caller: Option<&Caller>) -> Vec<Tool> {
        let mut tools: Vec<Tool> = self.gw.tools().into_iter().map(|t| t.tool).collect();
        tools.extend(builtin_tools());
        tools.retain(|t| self.allowed(caller, &t.name).is_ok());
        tools
    }

    fn builtin(&self, name: &str, ctx: &CallCtx<'_>) -> CallToolResult {
        let scope = CallScope::begin(&self.gw, ctx, "tools/call", name, BUILTIN_SERVER);
        let value = if name == HEALTH_TOOL {
            self.gw.health()
        } else {
            self.gw.inner.telemetry.snapshot()
        };
        scope.finish_with(0, None, Some(PayloadSrc::Value(&value)));
        json_result(value)
    }

    /// `tools/call` with rmcp's typed params (the rmcp session handler).
    pub(crate) async fn call_tool(
        &self,
        ctx: &CallCtx<'_>,
        request: CallToolRequestParams,
    ) -> Result<CallToolResult, ErrorData> {
        let arguments = match request
            .arguments
            .as_ref()
            .map(serde_json::value::to_raw_value)
        {
            Some(Ok(raw)) => Some(raw),
            Some(Err(e)) => return Err(error_data(-32602, format!("Invalid params: {e}"), None)),
            None => None,
        };
        self.call_tool_raw(ctx, &request.name, arguments.as_deref())
            .await
            .map(ToolAnswer::into_typed)
    }

    /// `tools/call` of `name` with the client's `arguments` (a JSON object) as they came.
    pub(crate) async fn call_tool_raw(
        &self,
        ctx: &CallCtx<'_>,
        name: &str,
        arguments: Option<&RawValue>,
    ) -> Result<ToolAnswer, ErrorData> {
        if let Err(refused) = self.allowed(ctx.caller, name) {
            // refused here: it never reaches a server
            let scope = CallScope::begin(&self.gw, ctx, "tools/call", name, BUILTIN_SERVER);
            scope.finish(
                0,
                Some((i64::from(refused.code.0), refused.message.to_string())),
            );
            return Err(refused);
        }
        if name == HEALTH_TOOL || name == TELEMETRY_TOOL {
            return Ok(ToolAnswer::Typed(self.builtin(name, ctx)));
        }
        let Some((up, tool, replayable)) = self.gw.route(name) else {
            let scope = CallScope::begin(&self.gw, ctx, "tools/call", name, BUILTIN_SERVER);
            let message = format!("unknown tool '{name}'");
            scope.finish(0, Some((-32602, message.clone())));
            return Err(error_data(-32602, message, None));
        };
        let scope = CallScope::begin(&self.gw, ctx, "tools/call", name, up.name());
        scope.arguments(PayloadSrc::Json(arguments.map_or("null", RawValue::get)));
        let relay = ProgressRelay::start(&self.gw, &scope.call_id, name, ctx);
        let answer = up
            .call_tool(&tool, arguments, replayable, Some(relay), &ctx.cancel)
            .await;
        match answer {
            Ok(a) => match checked_result(a.result) {
                Checked::Plain { raw, error } => {
                    scope.finish_with(
                        a.replay_attempts,
                        error.map(|text| (0, text)),
                        Some(PayloadSrc::Json(raw.get())),
                    );
                    Ok(ToolAnswer::Raw(raw))
                }
                Checked::Typed(mut result) => {
                    // Upstreams speak 2025-11-25, which has no `resultType`; 2026-07-28 clients
                    // require it (it is dropped again for older clients).
                    result.result_type.get_or_insert(ResultType::COMPLETE);
                    let err = (result.is_error == Some(true)).then(|| (0, error_text(&result)));
                    let shown = serde_json::to_value(&result).unwrap_or(Value::Null);
                    scope.finish_with(a.replay_attempts, err, Some(PayloadSrc::Value(&shown)));
                    Ok(ToolAnswer::Typed(result))
                }
                Checked::Invalid(e) => {
                    let message = format!(
                        "server '{}' returned an invalid tool result: {e}",
                        up.name()
                    );
                    scope.finish(a.replay_attempts, Some((-32603, message.clone())));
                    Err(error_data(-32603, message, None))
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

    pub(crate) async fn list_resources(&self, ctx: &CallCtx<'_>) -> Vec<Resource> {
        if self.locked_out(ctx.caller) {
            return Vec::new();
        }
        let mut all = Vec::new();
        let mut owners = HashMap::new();
        for (up, r) in self
            .gather("resources", "resources/list", "resources", &ctx.cancel)
            .await
        {
            if let Ok(res) = serde_json::from_value::<Resource>(r) {
                if owners.contains_key(&res.uri) {
                    continue; // the first server (by name) owns a URI
                }
                owners.insert(res.uri.clone(), up.name().to_owned());
                all.push(res);
            }
        }
        self.gw
            .inner
            .resource_owner
            .lock()
            .expect("owner lock")
            .extend(owners);
        all
    }

    pub(crate) async fn list_resource_templates(&self, ctx: &CallCtx<'_>) -> Vec<ResourceTemplate> {
        self.gather(
            "resources",
            "resources/templates/list",
            "resourceTemplates",
            &ctx.cancel,
        )
        .await
        .into_iter()
        .filter_map(|(_, t)| serde_json::from_value::<ResourceTemplate>(t).ok())
        .collect()
    }

    pub(crate) async fn read_resource(
        &self,
        ctx: &CallCtx<'_>,
        request: ReadResourceRequestParams,
    ) -> Result<ReadResourceResult, ErrorData> {
        let uri = request.uri;
        if self.locked_out(ctx.caller) {
            return Err(error_data(FORBIDDEN, "this role is locked out", None));
        }
        let owner = self
            .gw
            .inner
            .resource_owner
            .lock()
            .expect("owner lock")
            .get(&uri)
            .cloned();
        // Unknown URIs (templates, or never listed) are tried on each server with resources.
        let candidates: Vec<Upstream> = match owner.and_then(|o| self.gw.upstream(&o)) {
            Some(up) => vec![up],
            None => self
                .gw
                .upstreams()
                .into_iter()
                .filter(|u| u.status().has_capability("resources"))
                .collect(),
        };
        let mut last_error = error_data(-32002, format!("resource '{uri}' not found"), None);
        for up in candidates {
            let scope = CallScope::begin(&self.gw, ctx, "resources/read", &uri, up.name());
            let answer = up
                .request(
                    "resources/read",
                    json!({"uri": uri}),
                    &uri,
                    true,
                    None,
                    &ctx.cancel,
                )
                .await;
            match answer {
                Ok(a) => match serde_json::from_value::<ReadResourceResult>(a.result) {
                    Ok(mut r) => {
                        r.result_type.get_or_insert(ResultType::COMPLETE);
                        scope.finish(a.replay_attempts, None);
                        return Ok(r);
                    }
                    Err(e) => {
                        let m = format!("server '{}' returned an invalid resource: {e}", up.name());
                        scope.finish(a.replay_attempts, Some((-32603, m.clone())));
                        last_error = error_data(-32603, m, None);
                    }
                },
                Err(e) => {
                    scope.finish(0, Some((e.code(), e.to_string())));
                    last_error =
                        remote_error(e).unwrap_or_else(|e| error_data(-32603, e.to_string(), None));
                }
            }
        }
        Err(last_error)
    }

    pub(crate) async fn list_prompts(&self, ctx: &CallCtx<'_>) -> Vec<Prompt> {
        let mut all = Vec::new();
        for (up, p) in self
            .gather("prompts", "prompts/list", "prompts", &ctx.cancel)
            .await
        {
            if let Ok(mut prompt) = serde_json::from_value::<Prompt>(p) {
                prompt.name = names::exposed(up.name(), &prompt.name);
                if self.allowed(ctx.caller, &prompt.name).is_ok() {
                    all.push(prompt);
                }
            }
        }
        all
    }

    pub(crate) async fn get_prompt(
        &self,
        ctx: &CallCtx<'_>,
        request: GetPromptRequestParams,
    ) -> Result<GetPromptResult, ErrorData> {
        let name = request.name;
        self.allowed(ctx.caller, &name)?;
        let Some((server, prompt)) = names::split(&name) else {
            return Err(error_data(-32602, format!("unknown prompt '{name}'"), None));
        };
        let Some(up) = self.gw.upstream(server) else {
            return Err(error_data(-32602, format!("unknown prompt '{name}'"), None));
        };
        let scope = CallScope::begin(&self.gw, ctx, "prompts/get", &name, up.name());
        let mut params = json!({"name": prompt});
        if let Some(args) = request.arguments {
            params["arguments"] = serde_json::to_value(args).unwrap_or(Value::Null);
        }
        match up
            .request("prompts/get", params, prompt, true, None, &ctx.cancel)
            .await
        {
            Ok(a) => match serde_json::from_value::<GetPromptResult>(a.result) {
                Ok(mut r) => {
                    r.result_type.get_or_insert(ResultType::COMPLETE);
                    scope.finish(a.replay_attempts, None);
                    Ok(r)
                }
                Err(e) => {
                    let m = format!("server '{}' returned an invalid prompt: {e}", up.name());
                    scope.finish(a.replay_attempts, Some((-32603, m.clone())));
                    Err(error_data(-32603, m, None))
                }
            },
            Err(e) => {
                scope.finish(0, Some((e.code(), e.to_string())));
                Err(remote_error(e).unwrap_or_else(|e| error_data(-32603, e.to_string(), None)))
            }
        }
    }

    /// Answers one JSON-RPC request in the caller's task. `version` is the revision the client
    /// speaks (results carry `resultType` from 2026-07-28 on).
    pub(crate) async fn answer(&self, ctx: &CallCtx<'_>, req: Request, version: &str) -> String {
        // As rmcp's handler does: 2026-07-28 wants caching hints on cacheable results and
        // reports a missing resource as invalid params; older revisions have no `resultType`.
        let stateless = version >= STATELESS_VERSION || req.method == "server/discover";
        let result: Result<ServerResult, ErrorData> = match req.method.as_str() {
            "initialize" => {
                let params = req.params_value();
                let asked = params
                    .as_ref()
                    .and_then(|p| p.get("protocolVersion"))
                    .and_then(Value::as_str)
                    .unwrap_or(LATEST_SESSION_VERSION);
                return json!({"jsonrpc": "2.0", "id": req.id,
                    "result": self.initialize_result(asked, ctx.session.as_deref())})
                .to_string();
            }
            "ping" => Ok(ServerResult::empty(())),
            // 2026-07-28's opener, answered as rmcp answers it on `/mcp`
            "server/discover" => Ok(ServerResult::DiscoverResult(
                DiscoverResult::from_server_info(
                    ProtocolVersion::KNOWN_VERSIONS.to_vec(),
                    self.server_info(),
                ),
            )),
            "tools/list" => Ok(ServerResult::ListToolsResult(
                ListToolsResult::with_all_items(self.list_tools(ctx.caller)),
            )),
            "tools/call" => match ToolCallIn::read(req.params.as_deref()) {
                // the usual call: arguments passed on and the result passed back as they came
                Some(p) => match self.call_tool_raw(ctx, &p.name, p.arguments).await {
                    Ok(ToolAnswer::Raw(raw)) => return result_frame(&req.id, &raw, stateless),
                    Ok(ToolAnswer::Typed(r)) => Ok(ServerResult::CallToolResult(r)),
                    Err(e) => Err(e),
                },
                // anything unusual is read (and refused) exactly as rmcp's types say
                None => match params::<CallToolRequestParams>(req.params_value()) {
                    Ok(p) => self
                        .call_tool(ctx, p)
                        .await
                        .map(ServerResult::CallToolResult),
                    Err(e) => Err(e),
                },
            },
            "resources/list" => Ok(ServerResult::ListResourcesResult(
                ListResourcesResult::with_all_items(self.list_resources(ctx).await),
            )),
            "resources/templates/list" => Ok(ServerResult::ListResourceTemplatesResult(
                ListResourceTemplatesResult::with_all_items(
                    self.list_resource_templates(ctx).await,
                ),
            )),
            "resources/read" => match params::<ReadResourceRequestParams>(req.params_value()) {
                Ok(p) => self
                    .read_resource(ctx, p)
                    .await
                    .map(ServerResult::ReadResourceResult),
                Err(e) => Err(e),
            },
            "prompts/list" => Ok(ServerResult::ListPromptsResult(
                ListPromptsResult::with_all_items(self.list_prompts(ctx).await),
            )),
            "prompts/get" => match params::<GetPromptRequestParams>(req.params_value()) {
                Ok(p) => self
                    .get_prompt(ctx, p)
                    .await
                    .map(ServerResult::GetPromptResult),
                Err(e) => Err(e),
            },
            other => Err(error_data(
                -32601,
                format!("Method not found: {other}"),
                None,
            )),
        };
        let id = req.id;
        match result {
            Ok(mut result) => {
                if stateless {
                    result.fill_missing_cache_hints();
                } else {
                    result.strip_result_type_for_legacy_peer();
                }
                // serialized straight from the typed result, no intermediate JSON tree
                let out = OutResponse {
                    jsonrpc: "2.0",
                    id: &id,
                    result: &result,
                };
                serde_json::to_string(&out).unwrap_or_else(|e| {
                    error_frame(id.clone(), -32603, format!("Internal error: {e}")).to_string()
                })
            }
            Err(mut e) => {
                if stateless && e.code == ErrorCode::RESOURCE_NOT_FOUND {
                    e.code = ErrorCode::INVALID_PARAMS;
                }
                error_response(id, &e).to_string()
            }
        }
    }

    fn initialize_result(&self, asked: &str, session: Option<&Session>) -> Value {
        let version = if VERSIONS.contains(&asked) {
            asked
        } else {
            LATEST_SESSION_VERSION
        };
        let mut v = serde_json::to_value(self.server_info()).unwrap_or_else(|_| json!({}));
        v["protocolVersion"] = json!(version);
        if let Some(s) = session {
            v["_meta"] = json!({"switchboard/sessionId": s.id});
        }
        v
    }

    /// Whether [`answer`](Self::answer) serves `method` (anything else goes to rmcp on `/mcp`).
    pub(crate) fn serves(method: &str) -> bool {
        matches!(
            method,
            "ping"
                | "tools/list"
                | "tools/call"
                | "resources/list"
                | "resources/templates/list"
                | "resources/read"
                | "prompts/list"
                | "prompts/get"
        )
    }
}

fn params<T: serde::de::DeserializeOwned>(p: Option<Value>) -> Result<T, ErrorData> {
    serde_json::from_value(p.unwrap_or_else(|| json!({})))
        .map_err(|e| error_data(-32602, format!("Invalid params: {e}"), None))
}

/// A JSON-RPC result response, as written.
#[derive(serde::Serialize)]
struct OutResponse<'a> {
    jsonrpc: &'static str,
    id: &'a Value,
    result: &'a ServerResult,
}

/// A JSON-RPC error response.
pub(crate) fn error_response(id: Value, e: &ErrorData) -> Value {
    let mut error = Map::with_capacity(3);
    error.insert("code".into(), json!(e.code.0));
    error.insert("message".into(), json!(e.message));
    if let Some(data) = &e.data {
        error.insert("data".into(), data.clone());
    }
    json!({"jsonrpc": "2.0", "id": id, "error": error})
}

/// A JSON-RPC error frame for a message we could not take.
pub(crate) fn error_frame(id: Value, code: i64, message: impl Into<String>) -> Value {
    error_response(id, &error_data(code, message, None))
}

/// A JSON-RPC request. Its params stay the JSON text they came as until a method reads them.
#[derive(Debug)]
pub(crate) struct Request {
    pub id: Value,
    pub method: String,
    pub params: Option<Box<RawValue>>,
}

impl Request {
    /// The params as a JSON value (for methods that are not on the hot path).
    pub(crate) fn params_value(&self) -> Option<Value> {
        serde_json::from_str(self.params.as_ref()?.get()).ok()
    }

    /// What `params._meta` says that routing needs.
    pub(crate) fn meta(&self) -> MetaPeek {
        MetaPeek::read(self.params.as_deref())
    }

    /// `params._meta.progressToken`, if the client asked for progress.
    pub(crate) fn progress_token(&self) -> Option<Value> {
        self.meta().progress_token
    }
}

/// `params._meta.progressToken` (a string or a number) and whether `params._meta` names a
/// protocol version, read in place.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct MetaPeek {
    pub progress_token: Option<Value>,
    pub has_version: bool,
}

impl MetaPeek {
    pub(crate) fn read(params: Option<&RawValue>) -> Self {
        #[derive(Deserialize)]
        struct Params<'a> {
            #[serde(rename = "_meta", default, borrow)]
            meta: Option<&'a RawValue>,
        }
        #[derive(Deserialize)]
        struct Meta {
            #[serde(rename = "progressToken", default)]
            progress_token: Option<Value>,
            #[serde(
                rename = "io.modelcontextprotocol/protocolVersion",
                default,
                deserialize_with = "present_ignored"
            )]
            version: Option<serde::de::IgnoredAny>,
        }
        let Some(params) = params.filter(|p| is_object(p)) else {
            return Self::default();
        };
        let fast = serde_json::from_str::<Params<'_>>(params.get()).and_then(|p| match p.meta {
            Some(m) if is_object(m) => serde_json::from_str::<Meta>(m.get()).map(Some),
            _ => Ok(None),
        });
        match fast {
            Ok(meta) => meta.map_or_else(Self::default, |m| Self {
                progress_token: m.progress_token.filter(|t| t.is_string() || t.is_number()),
                has_version: m.version.is_some(),
            }),
            // e.g. a key given twice: read as a value tree does (the last one counts)
            Err(_) => {
                let value: Option<Value> = serde_json::from_str(params.get()).ok();
                let meta = value.as_ref().and_then(|p| p.get("_meta"));
                Self {
                    progress_token: meta
                        .and_then(|m| m.get("progressToken"))
                        .filter(|t| t.is_string() || t.is_number())
                        .cloned(),
                    has_version: meta.is_some_and(|m| m.get(META_VERSION).is_some()),
                }
            }
        }
    }
}

const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";

fn present_ignored<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<serde::de::IgnoredAny>, D::Error> {
    serde::de::IgnoredAny::deserialize(d).map(Some)
}

fn present_raw<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&'de RawValue>::deserialize(d).map(Some)
}

/// Whether JSON text is an object (it is valid JSON already).
fn is_object(raw: &RawValue) -> bool {
    raw.get().trim_start().starts_with('{')
}

/// `tools/call` params as the usual call has them: a tool name, arguments that are an object,
/// perhaps `_meta` (an object). Anything else is left to rmcp's typed params.
struct ToolCallIn<'a> {
    name: Cow<'a, str>,
    arguments: Option<&'a RawValue>,
}

impl<'a> ToolCallIn<'a> {
    fn read(params: Option<&'a RawValue>) -> Option<Self> {
        #[derive(Deserialize)]
        struct Wire<'a> {
            #[serde(borrow)]
            name: Cow<'a, str>,
            #[serde(default, borrow)]
            arguments: Option<&'a RawValue>,
            #[serde(rename = "_meta", default, borrow, deserialize_with = "present_raw")]
            meta: Option<&'a RawValue>,
            #[serde(
                rename = "inputResponses",
                default,
                borrow,
                deserialize_with = "present_raw"
            )]
            input_responses: Option<&'a RawValue>,
            #[serde(
                rename = "requestState",
                default,
                borrow,
                deserialize_with = "present_raw"
            )]
            request_state: Option<&'a RawValue>,
        }
        let params = params.filter(|p| is_object(p))?;
        let w = serde_json::from_str::<Wire<'a>>(params.get()).ok()?;
        let usual = w.arguments.is_none_or(is_object)
            && w.meta.is_none_or(is_object)
            && w.input_responses.is_none()
            && w.request_state.is_none();
        usual.then_some(Self {
            name: w.name,
            arguments: w.arguments,
        })
    }
}

/// A tool's answer: as the server wrote it, or as built here.
pub(crate) enum ToolAnswer {
    /// A plain result (see [`checked_result`]), passed on as it came, without `resultType`.
    Raw(Box<RawValue>),
    Typed(CallToolResult),
}

impl ToolAnswer {
    fn into_typed(self) -> CallToolResult {
        match self {
            Self::Raw(raw) => {
                let mut r = serde_json::from_str::<CallToolResult>(raw.get()).unwrap_or_else(|e| {
                    // cannot happen: a plain result is a valid one
                    CallToolResult::error(vec![ContentBlock::text(format!(
                        "unreadable tool result: {e}"
                    ))])
                });
                r.result_type.get_or_insert(ResultType::COMPLETE);
                r
            }
            Self::Typed(r) => r,
        }
    }
}

/// What a server's tool result turned out to be.
enum Checked {
    /// Text blocks only: passed on as it came. `error`: its text when `isError` is true.
    Plain {
        raw: Box<RawValue>,
        error: Option<String>,
    },
    /// Valid, but something rmcp's types would write differently: written from those types.
    Typed(CallToolResult),
    /// Not a tool result: why.
    Invalid(String),
}

/// Reads a tool result. A result that rmcp's types would read and write back unchanged (an
/// object with `content`, a list of `{"type":"text","text":…}` blocks, and optionally
/// `isError` as a boolean, `structuredContent`, `_meta` as an object, nothing else) is
/// checked in place and passed on as it came; anything else is read into those types, exactly
/// as before.
fn checked_result(raw: Box<RawValue>) -> Checked {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Plain<'a> {
        #[serde(borrow)]
        content: Vec<TextBlock<'a>>,
        #[serde(rename = "isError", default, deserialize_with = "present_bool")]
        is_error: Option<bool>,
        #[serde(
            rename = "structuredContent",
            default,
            borrow,
            deserialize_with = "present_raw"
        )]
        structured_content: Option<&'a RawValue>,
        #[serde(rename = "_meta", default, borrow, deserialize_with = "present_raw")]
        meta: Option<&'a RawValue>,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct TextBlock<'a> {
        #[serde(rename = "type", borrow)]
        kind: Cow<'a, str>,
        #[serde(borrow)]
        text: Cow<'a, str>,
    }
    fn present_bool<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
        bool::deserialize(d).map(Some)
    }
    if is_object(&raw)
        && let Ok(p) = serde_json::from_str::<Plain<'_>>(raw.get())
        && p.content.iter().all(|b| b.kind == "text")
        && p.meta.is_none_or(is_object)
    {
        let _ = p.structured_content; // any JSON, passed on as it is
        let error = (p.is_error == Some(true)).then(|| {
            p.content.first().map_or_else(
                || "tool reported an error".to_owned(),
                |b| b.text.to_string(),
            )
        });
        return Checked::Plain { raw, error };
    }
    let value = match serde_json::from_str::<Value>(raw.get()) {
        Ok(v) => v,
        Err(e) => return Checked::Invalid(e.to_string()),
    };
    match serde_json::from_value::<CallToolResult>(value) {
        Ok(r) => Checked::Typed(r),
        Err(e) => Checked::Invalid(e.to_string()),
    }
}

/// The text a failed tool call is reported with.
fn error_text(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .find_map(|c| c.as_text().map(|t| t.text.clone()))
        .unwrap_or_else(|| "tool reported an error".into())
}

/// A JSON-RPC response around a plain tool result as it came: the client's own `id`, and
/// `resultType` for 2026-07-28 clients.
fn result_frame(id: &Value, raw: &RawValue, result_type: bool) -> String {
    let raw = raw.get().trim();
    let id = serde_json::to_string(id).unwrap_or_else(|_| "null".into());
    let mut out = String::with_capacity(raw.len() + id.len() + 64);
    out.push_str(r#"{"jsonrpc":"2.0","id":"#);
    out.push_str(&id);
    out.push_str(r#","result":"#);
    match raw.strip_prefix('{') {
        Some(rest) if result_type => {
            out.push_str(r#"{"resultType":"complete""#);
            if !rest.trim_start().starts_with('}') {
                out.push(',');
            }
            out.push_str(rest);
        }
        _ => out.push_str(raw),
    }
    out.push('}');
    out
}

/// One incoming JSON-RPC message, classified.
#[derive(Debug)]
pub(crate) enum Incoming {
    Request(Request),
    Notification {
        method: String,
        params: Option<Value>,
    },
    /// A response to something we asked (we ask nothing over these transports): ignored.
    Response,
    /// Not JSON-RPC: the error frame to answer with.
    Invalid(Value),
}

#[derive(Deserialize)]
struct Wire {
    jsonrpc: Option<String>,
    #[serde(default, deserialize_with = "present")]
    id: Option<Value>,
    method: Option<String>,
    params: Option<Box<RawValue>>,
    result: Option<serde::de::IgnoredAny>,
    error: Option<serde::de::IgnoredAny>,
}

/// Keeps `"id": null` apart from a missing id.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// Reads one JSON-RPC message: -32700 (id null) if it is not JSON, -32600 if it is JSON but not
/// a JSON-RPC 2.0 message (batches included: one message per frame).
pub(crate) fn parse(bytes: &[u8]) -> Incoming {
    let wire: Wire = match serde_json::from_slice(bytes) {
        Ok(w) => w,
        Err(e) if e.is_syntax() || e.is_eof() => {
            return Incoming::Invalid(error_frame(
                Value::Null,
                -32700,
                format!("Parse error: {e}"),
            ));
        }
        Err(e) => {
            return Incoming::Invalid(error_frame(
                Value::Null,
                -32600,
                format!("Invalid Request: not a JSON-RPC 2.0 message ({e})"),
            ));
        }
    };
    let id = wire.id.clone().unwrap_or(Value::Null);
    let id_ok = matches!(&wire.id, None | Some(Value::String(_) | Value::Number(_)));
    if wire.jsonrpc.as_deref() != Some("2.0") {
        let id = if id_ok { id } else { Value::Null };
        return Incoming::Invalid(error_frame(
            id,
            -32600,
            "Invalid Request: \"jsonrpc\" must be \"2.0\"",
        ));
    }
    if !id_ok {
        return Incoming::Invalid(error_frame(
            Value::Null,
            -32600,
            "Invalid Request: \"id\" must be a string or a number",
        ));
    }
    match (wire.method, wire.id) {
        (Some(method), Some(id)) => Incoming::Request(Request {
            id,
            method,
            params: wire.params,
        }),
        (Some(method), None) => Incoming::Notification {
            method,
            params: wire.params.and_then(|p| serde_json::from_str(p.get()).ok()),
        },
        (None, Some(_)) if wire.result.is_some() || wire.error.is_some() => Incoming::Response,
        (None, _) => Incoming::Invalid(error_frame(
            id,
            -32600,
            "Invalid Request: \"method\" is missing",
        )),
    }
}

/// The request id a `notifications/cancelled` names, as text.
pub(crate) fn cancelled_id(params: Option<&Value>) -> Option<String> {
    params?.get("requestId").map(id_text)
}

/// A JSON-RPC id as text (strings unquoted).
pub(crate) fn id_text(id: &Value) -> String {
    match id {
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(i: &Incoming) -> Option<i64> {
        match i {
            Incoming::Invalid(v) => v["error"]["code"].as_i64(),
            _ => None,
        }
    }

    #[test]
    fn classifies_messages() {
        assert_eq!(code(&parse(b"{nope")), Some(-32700));
        assert_eq!(code(&parse(b"")), Some(-32700));
        assert_eq!(code(&parse(b"[1,2]")), Some(-32600));
        assert_eq!(code(&parse(br#"{"id":1,"method":"ping"}"#)), Some(-32600));
        assert_eq!(
            code(&parse(br#"{"jsonrpc":"2.0","id":{},"method":"ping"}"#)),
            Some(-32600)
        );
        assert_eq!(code(&parse(br#"{"jsonrpc":"2.0","id":3}"#)), Some(-32600));
        let Incoming::Invalid(v) = parse(br#"{"jsonrpc":"1.0","id":3,"method":"x"}"#) else {
            panic!()
        };
        assert_eq!(v["id"], 3, "the id is kept when it can be read");
        assert_eq!(
            code(&parse(br#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#)),
            Some(-32600)
        );
        assert!(matches!(
            parse(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#),
            Incoming::Notification { .. }
        ));
        assert!(matches!(
            parse(br#"{"jsonrpc":"2.0","id":"a","result":{}}"#),
            Incoming::Response
        ));
        let Incoming::Request(r) = parse(
            br#"{"jsonrpc":"2.0","id":"x","method":"tools/call","params":{"_meta":{"progressToken":7}}}"#,
        ) else {
            panic!()
        };
        assert_eq!(r.progress_token(), Some(json!(7)));
    }

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_owned()).unwrap()
    }

    #[test]
    fn tool_call_params_are_read_in_place_when_usual() {
        let p = raw(
            r#"{"name":"s0__e\u0063ho","arguments":{"text":"h\u00e9 ☃","n":[1,2]},
            "_meta":{"progressToken":"t","io.modelcontextprotocol/protocolVersion":"2026-07-28"}}"#,
        );
        let t = ToolCallIn::read(Some(&p)).unwrap();
        assert_eq!(t.name, "s0__echo", "escapes in the name are read");
        assert_eq!(
            t.arguments.unwrap().get(),
            r#"{"text":"h\u00e9 ☃","n":[1,2]}"#,
            "arguments are passed on byte for byte"
        );
        let p = raw(r#"{"name":"x","arguments":null}"#);
        let t = ToolCallIn::read(Some(&p)).unwrap();
        assert!(t.arguments.is_none());
        // the unusual goes to rmcp's typed params (and their errors)
        for unusual in [
            r#"{"name":42}"#,
            r#"{"arguments":{}}"#,
            r#"{"name":"x","arguments":[1]}"#,
            r#"{"name":"x","arguments":"a"}"#,
            r#"{"name":"x","_meta":5}"#,
            r#"{"name":"x","_meta":null}"#,
            r#"{"name":"x","requestState":"s"}"#,
            r#"{"name":"x","inputResponses":{}}"#,
            r#"{"name":"x","name":"y"}"#,
            r#"["x"]"#,
        ] {
            assert!(ToolCallIn::read(Some(&raw(unusual))).is_none(), "{unusual}");
        }
        assert!(ToolCallIn::read(None).is_none());
    }

    #[test]
    fn meta_is_peeked_in_place() {
        let peek = |t: &str| MetaPeek::read(Some(&raw(t)));
        assert_eq!(
            peek(r#"{"name":"x","_meta":{"progressToken":"a\"b"}}"#).progress_token,
            Some(json!("a\"b"))
        );
        assert_eq!(
            peek(r#"{"_meta":{"progressToken":12345678901234}}"#).progress_token,
            Some(json!(12345678901234u64))
        );
        for none in [
            r#"{"_meta":{"progressToken":true}}"#,
            r#"{"_meta":{"progressToken":null}}"#,
            r#"{"_meta":{"progressToken":{}}}"#,
            r#"{"_meta":[{"progressToken":1}]}"#,
            r#"[{"_meta":{"progressToken":1}}]"#,
            r#"{"progressToken":1}"#,
        ] {
            assert_eq!(peek(none), MetaPeek::default(), "{none}");
        }
        assert!(peek(r#"{"_meta":{"io.modelcontextprotocol/protocolVersion":null}}"#).has_version);
        assert!(!peek(r#"{"_meta":{}}"#).has_version);
        // a key twice: the last counts, as in a value tree
        let twice = peek(r#"{"_meta":{"progressToken":1},"_meta":{"progressToken":2}}"#);
        assert_eq!(twice.progress_token, Some(json!(2)));
    }

    /// The frame the typed path writes for `result` (what clients got before results were
    /// passed on as they came).
    fn typed_frame(id: &Value, result: &str, stateless: bool) -> Value {
        let mut r: CallToolResult = serde_json::from_str(result).unwrap();
        r.result_type.get_or_insert(ResultType::COMPLETE);
        let mut r = ServerResult::CallToolResult(r);
        if stateless {
            r.fill_missing_cache_hints();
        } else {
            r.strip_result_type_for_legacy_peer();
        }
        let out = OutResponse {
            jsonrpc: "2.0",
            id,
            result: &r,
        };
        serde_json::to_value(&out).unwrap()
    }

    #[test]
    fn plain_results_pass_as_they_came_and_read_as_the_typed_path_wrote_them() {
        let plain = [
            r#"{"content":[{"type":"text","text":"ping"}]}"#,
            r#"{"content":[],"isError":false}"#,
            r#"{"content":[{"type":"text","text":"h\u00e9 \"q\" \\ ☃ 𝄞 \n\t"},{"text":"2","type":"text"}]}"#,
            r#"{ "content" : [ { "type" : "text" , "text" : "spaced" } ] , "structuredContent" : null }"#,
            r#"{"content":[{"type":"text","text":"x"}],"structuredContent":{"a":[1,2.5,"b"]},"_meta":{"k":1}}"#,
        ];
        let ids = [
            json!(7),
            json!("a\"b é"),
            json!(u64::MAX),
            json!(-3),
            json!(""),
        ];
        for text in plain {
            let Checked::Plain { raw: r, error } = checked_result(raw(text)) else {
                panic!("not plain: {text}")
            };
            assert_eq!(r.get(), text, "passed on byte for byte");
            assert!(error.is_none());
            for id in &ids {
                for stateless in [false, true] {
                    let frame = result_frame(id, &r, stateless);
                    let got: Value = serde_json::from_str(&frame).unwrap();
                    assert_eq!(got, typed_frame(id, text, stateless), "{frame}");
                    assert_eq!(&got["id"], id, "the client's id, exactly");
                }
            }
        }
        let big = format!(
            r#"{{"content":[{{"type":"text","text":"{}"}}]}}"#,
            "é\\\"".repeat(100_000)
        );
        let Checked::Plain { raw: r, .. } = checked_result(raw(&big)) else {
            panic!()
        };
        let got: Value = serde_json::from_str(&result_frame(&json!(1), &r, true)).unwrap();
        assert_eq!(got, typed_frame(&json!(1), &big, true));
    }

    #[test]
    fn tool_errors_and_unusual_results() {
        let Checked::Plain { error, .. } = checked_result(raw(
            r#"{"content":[{"type":"text","text":"it broke: \u00e9"},{"type":"text","text":"more"}],"isError":true}"#,
        )) else {
            panic!()
        };
        assert_eq!(error.as_deref(), Some("it broke: é"));
        let Checked::Plain { error, .. } = checked_result(raw(r#"{"content":[],"isError":true}"#))
        else {
            panic!()
        };
        assert_eq!(error.as_deref(), Some("tool reported an error"));
        // valid, but written from rmcp's types as before
        for typed in [
            r#"{"content":[{"type":"image","data":"AA==","mimeType":"image/png"}]}"#,
            r#"{"content":[{"type":"text","text":"x","annotations":{"priority":1}}]}"#,
            r#"{"content":[{"type":"text","text":"x"}],"resultType":"complete"}"#,
            r#"{"content":[{"type":"text","text":"x"}],"extra":1}"#,
            r#"{"content":[{"type":"text","text":"x"}],"isError":null}"#,
            r#"{"content":[{"type":"text","text":"x"}],"_meta":null}"#,
            r#"{"isError":true}"#,
            r#"{"structuredContent":{"a":1}}"#,
        ] {
            assert!(
                matches!(checked_result(raw(typed)), Checked::Typed(_)),
                "{typed}"
            );
        }
        // not tool results: the same reason as reading them into rmcp's types
        for bad in [
            r#"{"content":"not a list of content blocks"}"#,
            r#"{}"#,
            r#"null"#,
            r#"[1]"#,
            r#"{"content":[{"type":"text"}]}"#,
        ] {
            let Checked::Invalid(why) = checked_result(raw(bad)) else {
                panic!("accepted: {bad}")
            };
            let v: Value = serde_json::from_str(bad).unwrap();
            let expected = serde_json::from_value::<CallToolResult>(v).unwrap_err();
            assert_eq!(why, expected.to_string());
        }
    }
}
