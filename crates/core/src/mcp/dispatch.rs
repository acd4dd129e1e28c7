//! The transport-independent MCP dispatcher: what the gateway answers to each request.
//!
//! [`Dispatcher`] holds the logic of every MCP method the gateway serves (tools with roles,
//! built-in tools, replay, progress, telemetry, resources, prompts). The rmcp
//! [`Handler`](super::Handler) behind `/mcp` sessions calls into it with rmcp's typed
//! requests; `/ws` and the `/mcp` fast path hand it raw JSON-RPC through [`Dispatcher::answer`],
//! which answers in the caller's task without any of rmcp's per-session machinery.

use std::collections::HashMap;
use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResult, ContentBlock, ErrorCode, ErrorData,
    GetPromptRequestParams, GetPromptResult, Implementation, ListPromptsResult,
    ListResourceTemplatesResult, ListResourcesResult, ListToolsResult, Prompt,
    ReadResourceRequestParams, ReadResourceResult, Resource, ResourceTemplate, ResultType,
    ServerCapabilities, ServerConfig, ServerResult, Tool,
};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use super::session::Session;
use super::{
    BUILTIN_SERVER, CallScope, FORBIDDEN, HEALTH_TOOL, McpGateway, ProgressRelay, TELEMETRY_TOOL,
    builtin_tools, error_data, json_result, names, remote_error,
};
use crate::auth::{Caller, Roles};
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
        scope.finish_with(0, None, Some(&value));
        json_result(value)
    }

    pub(crate) async fn call_tool(
        &self,
        ctx: &CallCtx<'_>,
        request: CallToolRequestParams,
    ) -> Result<CallToolResult, ErrorData> {
        let name = request.name.to_string();
        if let Err(refused) = self.allowed(ctx.caller, &name) {
            // refused here: it never reaches a server
            let scope = CallScope::begin(&self.gw, ctx, "tools/call", &name, BUILTIN_SERVER);
            scope.finish(
                0,
                Some((i64::from(refused.code.0), refused.message.to_string())),
            );
            return Err(refused);
        }
        if name == HEALTH_TOOL || name == TELEMETRY_TOOL {
            return Ok(self.builtin(&name, ctx));
        }
        let Some((up, tool)) = self.gw.resolve(&name) else {
            let scope = CallScope::begin(&self.gw, ctx, "tools/call", &name, BUILTIN_SERVER);
            let message = format!("unknown tool '{name}'");
            scope.finish(0, Some((-32602, message.clone())));
            return Err(error_data(-32602, message, None));
        };
        let scope = CallScope::begin(&self.gw, ctx, "tools/call", &name, up.name());
        let replayable = up.is_replayable(&tool.name);
        let mut params = Map::with_capacity(2);
        params.insert("name".into(), Value::String(tool.name.to_string()));
        if let Some(args) = request.arguments {
            params.insert("arguments".into(), Value::Object(args));
        }
        scope.arguments(params.get("arguments").unwrap_or(&Value::Null));
        let relay = ProgressRelay::start(&self.gw, &scope.call_id, &name, ctx);
        let answer = up
            .request(
                "tools/call",
                Value::Object(params),
                &tool.name,
                replayable,
                Some(relay),
                &ctx.cancel,
            )
            .await;
        match answer {
            Ok(a) => match serde_json::from_value::<CallToolResult>(a.result) {
                Ok(mut result) => {
                    // Upstreams speak 2025-11-25, which has no `resultType`; 2026-07-28 clients
                    // require it (it is dropped again for older clients).
                    result.result_type.get_or_insert(ResultType::COMPLETE);
                    let err = (result.is_error == Some(true)).then(|| {
                        let text = result
                            .content
                            .iter()
                            .find_map(|c| c.as_text().map(|t| t.text.clone()))
                            .unwrap_or_else(|| "tool reported an error".into());
                        (0, text)
                    });
                    let shown = serde_json::to_value(&result).unwrap_or(Value::Null);
                    scope.finish_with(a.replay_attempts, err, Some(&shown));
                    Ok(result)
                }
                Err(e) => {
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
                    Err(e) => Ok(CallToolResult::error(vec![ContentBlock::text(
                        e.to_string(),
                    )])),
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
        let id = req.id;
        let result: Result<ServerResult, ErrorData> = match req.method.as_str() {
            "initialize" => {
                let asked = req
                    .params
                    .as_ref()
                    .and_then(|p| p.get("protocolVersion"))
                    .and_then(Value::as_str)
                    .unwrap_or(LATEST_SESSION_VERSION);
                return json!({"jsonrpc": "2.0", "id": id,
                    "result": self.initialize_result(asked, ctx.session.as_deref())})
                .to_string();
            }
            "ping" => Ok(ServerResult::empty(())),
            "tools/list" => Ok(ServerResult::ListToolsResult(
                ListToolsResult::with_all_items(self.list_tools(ctx.caller)),
            )),
            "tools/call" => match params::<CallToolRequestParams>(req.params) {
                Ok(p) => self
                    .call_tool(ctx, p)
                    .await
                    .map(ServerResult::CallToolResult),
                Err(e) => Err(e),
            },
            "resources/list" => Ok(ServerResult::ListResourcesResult(
                ListResourcesResult::with_all_items(self.list_resources(ctx).await),
            )),
            "resources/templates/list" => Ok(ServerResult::ListResourceTemplatesResult(
                ListResourceTemplatesResult::with_all_items(
                    self.list_resource_templates(ctx).await,
                ),
            )),
            "resources/read" => match params::<ReadResourceRequestParams>(req.params) {
                Ok(p) => self
                    .read_resource(ctx, p)
                    .await
                    .map(ServerResult::ReadResourceResult),
                Err(e) => Err(e),
            },
            "prompts/list" => Ok(ServerResult::ListPromptsResult(
                ListPromptsResult::with_all_items(self.list_prompts(ctx).await),
            )),
            "prompts/get" => match params::<GetPromptRequestParams>(req.params) {
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
        // As rmcp's handler does: 2026-07-28 wants caching hints on cacheable results and
        // reports a missing resource as invalid params; older revisions have no `resultType`.
        let stateless = version >= STATELESS_VERSION;
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

/// A JSON-RPC request.
#[derive(Debug)]
pub(crate) struct Request {
    pub id: Value,
    pub method: String,
    pub params: Option<Value>,
}

impl Request {
    /// `params._meta.progressToken`, if the client asked for progress.
    pub(crate) fn progress_token(&self) -> Option<Value> {
        self.params
            .as_ref()?
            .get("_meta")?
            .get("progressToken")
            .filter(|t| t.is_string() || t.is_number())
            .cloned()
    }
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
    params: Option<Value>,
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
            params: wire.params,
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
}
