//! The transport-independent MCP dispatcher: what the gateway answers to each request.
//!
//! [`Dispatcher`] holds the logic of the methods in the method table (`mcp/method`) (tools with roles, built-in tools, resources of the servers a role grants, prompts) over
//! an [`McpGateway`], and hands each call that reaches a server to the [`CallBook`] (record,
//! progress, replay, the raw pass-through). The rmcp `Handler` behind `/mcp` sessions calls
//! into it with rmcp's typed requests; `/ws` and the `/mcp` fast path hand it raw JSON-RPC
//! through [`Dispatcher::answer`], which answers in the caller's task without any of rmcp's
//! per-session machinery.

use std::collections::HashSet;
use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResult, CompleteRequestParams, CompleteResult, ContentBlock,
    DiscoverResult, ErrorCode, ErrorData, GetPromptRequestParams, GetPromptResult, Implementation,
    ListPromptsResult, ListResourceTemplatesResult, ListResourcesResult, ListToolsResult,
    PaginatedRequestParams, Prompt, ProtocolVersion, ReadResourceRequestParams, ReadResourceResult,
    Resource, ResourceTemplate, ResultType, ServerCapabilities, ServerConfig, ServerResult, Tool,
    ToolAnnotations,
};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::call::{Ask, CallBook, CallCtx, Route};
use super::gateway::McpGateway;
use super::jsonrpc::{
    FORBIDDEN, INVALID_PARAMS, METHOD_NOT_FOUND, RESOURCE_NOT_FOUND, Request, UNAUTHENTICATED,
    error_data, error_response, result_response,
};
use super::method::Method;
use super::names;
use super::page::{self, List, Page};
use super::raw::{ToolAnswer, ToolCallIn, result_frame};
use super::session::Session;
use crate::auth::{Caller, Roles};
use crate::upstream::{ServerState, Upstream};

/// Built-in tools, answered by the gateway itself.
pub(crate) const HEALTH_TOOL: &str = "switchboard__health_snapshot";
pub(crate) const TELEMETRY_TOOL: &str = "switchboard__telemetry_snapshot";

/// The gateway as one MCP server for one set of roles. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Dispatcher {
    gw: McpGateway,
    /// The gateway's, kept here: every call is recorded in it.
    book: CallBook,
    roles: Arc<Roles>,
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
    /// The dispatcher over `gw` whose callers see what `roles` allow them.
    pub(crate) fn new(gw: McpGateway, roles: Roles) -> Self {
        Self {
            book: gw.book().clone(),
            gw,
            roles: Arc::new(roles),
        }
    }

    /// The gateway it answers for.
    pub(crate) fn gateway(&self) -> &McpGateway {
        &self.gw
    }

    // logging is deprecated from 2026-07-28 on (SEP-2577); 2025-11-25 sessions still use it
    #[allow(deprecated)]
    pub(crate) fn server_info(&self) -> ServerConfig {
        let capabilities = ServerCapabilities::builder()
            .enable_tools()
            .enable_tool_list_changed()
            .enable_resources()
            .enable_resources_list_changed()
            .enable_resources_subscribe()
            .enable_prompts()
            .enable_prompts_list_changed()
            .enable_logging()
            .enable_completions()
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
    fn allowed(&self, caller: Option<&Caller>, name: &str) -> Result<(), ErrorData> {
        let Some(c) = caller else {
            return Err(error_data(UNAUTHENTICATED, "authentication required", None));
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

    /// Whether the caller's role grants `server`'s resources and resource templates
    /// ([`Roles::grants_server`]; nothing without a caller).
    fn grants_server(&self, caller: Option<&Caller>, server: &str) -> bool {
        caller.is_some_and(|c| self.roles.grants_server(&c.role, server))
    }

    /// What `role` grants now: its patterns, the tools it may see and call, and the servers
    /// whose resources it may list and read (the dashboard shows them per client).
    pub(crate) fn grants(&self, role: &str) -> Grants {
        let mut tools: Vec<String> = self.gw.tools().into_iter().map(|t| t.name).collect();
        tools.extend(builtin_tools().into_iter().map(|t| t.name.into_owned()));
        tools.retain(|t| self.roles.allows(role, t));
        tools.sort();
        Grants {
            patterns: self.roles.roles.get(role).cloned().unwrap_or_default(),
            tools,
            resource_servers: self
                .gw
                .upstreams()
                .iter()
                .map(|up| up.name().to_owned())
                .filter(|server| self.roles.grants_server(role, server))
                .collect(),
        }
    }

    /// The `field` items of `method` from every running server that offers `capability` and
    /// passes `only` (every page of each, bounded: see [`Upstream::list`]), with the server
    /// they came from. Servers that fail are skipped; servers `only` turns away are never asked.
    async fn gather(
        &self,
        capability: &str,
        method: &'static str,
        field: &str,
        only: impl Fn(&Upstream) -> bool,
        ct: &CancellationToken,
    ) -> Vec<(Upstream, Value)> {
        let mut items = Vec::new();
        for up in self.gw.upstreams() {
            let status = up.status();
            if status.state != ServerState::Running
                || !status.has_capability(capability)
                || !only(&up)
            {
                continue;
            }
            let Ok(list) = up.list(method, field, ct).await else {
                continue;
            };
            items.extend(list.into_iter().map(|v| (up.clone(), v)));
        }
        items
    }

    /// `resources/subscribe` (`on`) or `resources/unsubscribe` of `uri`: passed to the
    /// server that listed it (granted to the caller; it must offer subscriptions), and the
    /// session hears that server's `notifications/resources/updated` for it from then on. An
    /// unsubscribe reaches the server only once no other session is subscribed.
    pub(crate) async fn subscribe(
        &self,
        ctx: &CallCtx<'_>,
        uri: &str,
        on: bool,
    ) -> Result<(), ErrorData> {
        let Some(caller) = ctx.caller else {
            return Err(error_data(UNAUTHENTICATED, "authentication required", None));
        };
        let Some(session) = &ctx.session else {
            return Err(error_data(
                INVALID_PARAMS,
                "resources/subscribe needs a session to send the updates to",
                None,
            ));
        };
        let up = self
            .gw
            .resource_listers(uri)
            .iter()
            .filter_map(|s| self.gw.upstream(s))
            .find(|up| self.roles.grants_server(&caller.role, up.name()))
            .ok_or_else(|| {
                error_data(
                    RESOURCE_NOT_FOUND,
                    format!("no server granted to role '{}' listed '{uri}'", caller.role),
                    None,
                )
            })?;
        let offers = up
            .status()
            .capabilities
            .pointer("/resources/subscribe")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if !offers {
            return Err(error_data(
                METHOD_NOT_FOUND,
                format!("server '{}' offers no resource subscriptions", up.name()),
                None,
            ));
        }
        let last = !on && !self.gw.sessions().subscribed_elsewhere(uri, &session.id);
        if on || last {
            let method = if on {
                "resources/subscribe"
            } else {
                "resources/unsubscribe"
            };
            let ask = Ask {
                method,
                name: uri,
                target: uri,
                params: json!({"uri": uri}),
                what: "subscription answer",
            };
            self.book.request::<Value>(ctx, &up, ask).await?;
        }
        session.subscribe_resource(uri, on);
        Ok(())
    }

    /// `completion/complete`, routed by its reference: a prompt (`<server>__<prompt>`) to its
    /// server under the server's own name; a resource or template URI to the server that
    /// listed it, else to the one granted server that offers completions. Which server cannot
    /// be told, or one that offers none: an error saying so.
    pub(crate) async fn complete(
        &self,
        ctx: &CallCtx<'_>,
        request: CompleteRequestParams,
    ) -> Result<CompleteResult, ErrorData> {
        let Some(caller) = ctx.caller else {
            return Err(error_data(UNAUTHENTICATED, "authentication required", None));
        };
        let mut params = serde_json::to_value(&request).unwrap_or(Value::Null);
        let reference = params.get("ref").cloned().unwrap_or(Value::Null);
        let (up, label) = match reference.get("type").and_then(Value::as_str) {
            Some("ref/prompt") => {
                let name = reference["name"].as_str().unwrap_or_default().to_owned();
                self.allowed(ctx.caller, &name)?;
                let unknown =
                    || error_data(INVALID_PARAMS, format!("unknown prompt '{name}'"), None);
                let (server, prompt) = names::split(&name).ok_or_else(unknown)?;
                let up = self.gw.upstream(server).ok_or_else(unknown)?;
                params["ref"]["name"] = json!(prompt);
                (up, name)
            }
            Some("ref/resource") => {
                let uri = reference["uri"].as_str().unwrap_or_default().to_owned();
                let grants = |up: &Upstream| self.roles.grants_server(&caller.role, up.name());
                let listed = self
                    .gw
                    .resource_listers(&uri)
                    .iter()
                    .filter_map(|s| self.gw.upstream(s))
                    .find(grants);
                let up = match listed {
                    Some(up) => up,
                    None => {
                        let offering: Vec<Upstream> = self
                            .gw
                            .upstreams()
                            .into_iter()
                            .filter(|u| grants(u) && u.status().has_capability("completions"))
                            .collect();
                        match <[Upstream; 1]>::try_from(offering) {
                            Ok([up]) => up,
                            Err(v) => {
                                return Err(error_data(
                                    INVALID_PARAMS,
                                    format!(
                                        "cannot tell which server '{uri}' belongs to ({} granted \
                                         servers offer completions, and none listed it)",
                                        v.len()
                                    ),
                                    None,
                                ));
                            }
                        }
                    }
                };
                (up, uri)
            }
            other => {
                return Err(error_data(
                    INVALID_PARAMS,
                    format!(
                        "unknown completion reference type {other:?}: ref/prompt or ref/resource"
                    ),
                    None,
                ));
            }
        };
        if !up.status().has_capability("completions") {
            return Err(error_data(
                METHOD_NOT_FOUND,
                format!("server '{}' offers no completions", up.name()),
                None,
            ));
        }
        let ask = Ask {
            method: "completion/complete",
            name: &label,
            target: &label,
            params,
            what: "completion",
        };
        self.book.request::<CompleteResult>(ctx, &up, ask).await
    }

    /// `logging/setLevel`: the session hears servers' log messages at `level` and above
    /// from now on, and every running server the caller's role grants that logs is told the
    /// level (one that refuses is left as it is: the others still are told).
    pub(crate) async fn set_level(&self, ctx: &CallCtx<'_>, level: &str) -> Result<(), ErrorData> {
        let Some(rank) = super::session::level_rank(level) else {
            return Err(error_data(
                INVALID_PARAMS,
                format!(
                    "unknown log level {level:?}: one of debug, info, notice, warning, error, \
                     critical, alert, emergency"
                ),
                None,
            ));
        };
        if ctx.caller.is_none() {
            return Err(error_data(UNAUTHENTICATED, "authentication required", None));
        }
        if let Some(s) = &ctx.session {
            s.set_log_level(rank);
        }
        for up in self.gw.upstreams() {
            let status = up.status();
            if status.state != ServerState::Running
                || !status.has_capability("logging")
                || !self.grants_server(ctx.caller, up.name())
            {
                continue;
            }
            let sent = up
                .request(
                    "logging/setLevel",
                    json!({"level": level}),
                    level,
                    true,
                    None,
                    &ctx.cancel,
                )
                .await;
            if let Err(e) = sent {
                tracing::warn!(server = %up.name(), error = %e, "server refused logging/setLevel");
            }
        }
        Ok(())
    }

    /// The page `cursor` points at of `all`, the caller's whole `list` (see `mcp/page`).
    fn page<T>(
        &self,
        list: List,
        all: Vec<T>,
        key: impl Fn(&T) -> &str,
        cursor: Option<&str>,
    ) -> Result<Page<T>, ErrorData> {
        page::page(list, all, key, cursor, self.gw.page_size())
    }

    /// The page at `cursor` of the tools the caller's role allows.
    pub(crate) fn list_tools(
        &self,
        caller: Option<&Caller>,
        cursor: Option<&str>,
    ) -> Result<ListToolsResult, ErrorData> {
        let mut tools: Vec<Tool> = self.gw.tools().into_iter().map(|t| t.tool).collect();
        tools.extend(builtin_tools());
        tools.retain(|t| self.allowed(caller, &t.name).is_ok());
        let page = self.page(List::Tools, tools, |t| &t.name, cursor)?;
        let mut r = ListToolsResult::with_all_items(page.items);
        r.next_cursor = page.next_cursor;
        Ok(r)
    }

    fn builtin(&self, name: &str, ctx: &CallCtx<'_>) -> CallToolResult {
        let value = if name == HEALTH_TOOL {
            self.gw.health()
        } else {
            self.book.telemetry().snapshot()
        };
        self.book.answered(ctx, name, Ok(&value));
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
            Some(Err(e)) => {
                return Err(error_data(
                    INVALID_PARAMS,
                    format!("Invalid params: {e}"),
                    None,
                ));
            }
            None => None,
        };
        self.call_tool_raw(ctx, &request.name, arguments.as_deref(), None)
            .await
            .map(ToolAnswer::into_typed)
    }

    /// `tools/call` of `name` with the client's `arguments` (a JSON object) as they came.
    /// `route`: where `name` goes, if the caller has looked it up already.
    async fn call_tool_raw(
        &self,
        ctx: &CallCtx<'_>,
        name: &str,
        arguments: Option<&RawValue>,
        route: Option<Route<'_>>,
    ) -> Result<ToolAnswer, ErrorData> {
        if let Err(refused) = self.allowed(ctx.caller, name) {
            // refused here: it never reaches a server
            let error = (i64::from(refused.code.0), refused.message.to_string());
            self.book.answered(ctx, name, Err(error));
            return Err(refused);
        }
        if name == HEALTH_TOOL || name == TELEMETRY_TOOL {
            return Ok(ToolAnswer::Typed(self.builtin(name, ctx)));
        }
        let route = route
            .filter(|r| r.exposed == name)
            .or_else(|| self.gw.route(name));
        let Some(route) = route else {
            let message = self
                .gw
                .waiting_for_login(name)
                .unwrap_or_else(|| format!("unknown tool '{name}'"));
            self.book
                .answered(ctx, name, Err((INVALID_PARAMS, message.clone())));
            return Err(error_data(INVALID_PARAMS, message, None));
        };
        self.book.call_tool(ctx, route, arguments).await
    }

    /// The page at `cursor` of the resources of the servers the caller's role grants; the
    /// others are not asked.
    pub(crate) async fn list_resources(
        &self,
        ctx: &CallCtx<'_>,
        cursor: Option<&str>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let mut all = Vec::new();
        let mut listed = Vec::new();
        let mut seen = HashSet::new();
        let granted = |up: &Upstream| self.grants_server(ctx.caller, up.name());
        for (up, r) in self
            .gather(
                "resources",
                "resources/list",
                "resources",
                granted,
                &ctx.cancel,
            )
            .await
        {
            if let Ok(res) = serde_json::from_value::<Resource>(r) {
                listed.push((res.uri.clone(), up.name().to_owned()));
                // the first server (by name) lists a URI
                if seen.insert(res.uri.clone()) {
                    all.push(res);
                }
            }
        }
        self.gw.learn_resource_owners(listed);
        let page = self.page(List::Resources, all, |r: &Resource| &r.uri, cursor)?;
        let mut r = ListResourcesResult::with_all_items(page.items);
        r.next_cursor = page.next_cursor;
        Ok(r)
    }

    /// The page at `cursor` of the resource templates of the servers the caller's role grants.
    pub(crate) async fn list_resource_templates(
        &self,
        ctx: &CallCtx<'_>,
        cursor: Option<&str>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        let granted = |up: &Upstream| self.grants_server(ctx.caller, up.name());
        let all: Vec<ResourceTemplate> = self
            .gather(
                "resources",
                "resources/templates/list",
                "resourceTemplates",
                granted,
                &ctx.cancel,
            )
            .await
            .into_iter()
            .filter_map(|(_, t)| serde_json::from_value::<ResourceTemplate>(t).ok())
            .collect();
        let page = self.page(List::ResourceTemplates, all, |t| &t.uri_template, cursor)?;
        let mut r = ListResourceTemplatesResult::with_all_items(page.items);
        r.next_cursor = page.next_cursor;
        Ok(r)
    }

    pub(crate) async fn read_resource(
        &self,
        ctx: &CallCtx<'_>,
        uri: String,
    ) -> Result<ReadResourceResult, ErrorData> {
        let Some(caller) = ctx.caller else {
            return Err(error_data(UNAUTHENTICATED, "authentication required", None));
        };
        let grants = |up: &Upstream| self.roles.grants_server(&caller.role, up.name());
        // The servers (still configured) that listed it: the first one granted owns it.
        let listers: Vec<Upstream> = self
            .gw
            .resource_listers(&uri)
            .iter()
            .filter_map(|s| self.gw.upstream(s))
            .collect();
        if let Some(owner) = listers.first()
            && !listers.iter().any(grants)
        {
            return Err(error_data(
                FORBIDDEN,
                format!(
                    "resource '{uri}' belongs to server '{}', which role '{}' does not grant",
                    owner.name(),
                    caller.role
                ),
                None,
            ));
        }
        let candidates: Vec<Upstream> = match listers.into_iter().find(grants) {
            Some(up) => vec![up],
            // Unknown URIs (templates, or never listed) are tried on each granted server with
            // resources, and never on another.
            None => {
                let granted: Vec<Upstream> =
                    self.gw.upstreams().into_iter().filter(grants).collect();
                if granted.is_empty() {
                    return Err(error_data(
                        FORBIDDEN,
                        format!("role '{}' grants no server's resources", caller.role),
                        None,
                    ));
                }
                granted
                    .into_iter()
                    .filter(|u| u.status().has_capability("resources"))
                    .collect()
            }
        };
        let mut last_error = error_data(
            RESOURCE_NOT_FOUND,
            format!("resource '{uri}' not found"),
            None,
        );
        for up in candidates {
            let ask = Ask {
                method: "resources/read",
                name: &uri,
                target: &uri,
                params: json!({"uri": uri}),
                what: "resource",
            };
            match self.book.request::<ReadResourceResult>(ctx, &up, ask).await {
                Ok(mut r) => {
                    r.result_type.get_or_insert(ResultType::COMPLETE);
                    return Ok(r);
                }
                Err(e) => last_error = e,
            }
        }
        Err(last_error)
    }

    /// The page at `cursor` of the prompts the caller's role allows.
    pub(crate) async fn list_prompts(
        &self,
        ctx: &CallCtx<'_>,
        cursor: Option<&str>,
    ) -> Result<ListPromptsResult, ErrorData> {
        let mut all = Vec::new();
        for (up, p) in self
            .gather("prompts", "prompts/list", "prompts", |_| true, &ctx.cancel)
            .await
        {
            if let Ok(mut prompt) = serde_json::from_value::<Prompt>(p) {
                prompt.name = names::exposed(up.name(), &prompt.name);
                if self.allowed(ctx.caller, &prompt.name).is_ok() {
                    all.push(prompt);
                }
            }
        }
        let page = self.page(List::Prompts, all, |p: &Prompt| &p.name, cursor)?;
        let mut r = ListPromptsResult::with_all_items(page.items);
        r.next_cursor = page.next_cursor;
        Ok(r)
    }

    pub(crate) async fn get_prompt(
        &self,
        ctx: &CallCtx<'_>,
        request: GetPromptRequestParams,
    ) -> Result<GetPromptResult, ErrorData> {
        let name = request.name;
        self.allowed(ctx.caller, &name)?;
        let unknown = || error_data(INVALID_PARAMS, format!("unknown prompt '{name}'"), None);
        let Some((server, prompt)) = names::split(&name) else {
            return Err(unknown());
        };
        let Some(up) = self.gw.upstream(server) else {
            return Err(unknown());
        };
        let mut params = json!({"name": prompt});
        if let Some(args) = request.arguments {
            params["arguments"] = serde_json::to_value(args).unwrap_or(Value::Null);
        }
        let ask = Ask {
            method: "prompts/get",
            name: &name,
            target: prompt,
            params,
            what: "prompt",
        };
        let mut r = self.book.request::<GetPromptResult>(ctx, &up, ask).await?;
        r.result_type.get_or_insert(ResultType::COMPLETE);
        Ok(r)
    }

    /// Answers one JSON-RPC request in the caller's task. `version` is the revision the client
    /// speaks (results carry `resultType` from 2026-07-28 on). `route`: where a `tools/call`'s
    /// tool goes, if the caller has looked it up already.
    pub(crate) async fn answer(
        &self,
        ctx: &CallCtx<'_>,
        req: Request,
        version: &str,
        route: Option<Route<'_>>,
    ) -> String {
        let Some(method) = Method::parse(&req.method) else {
            let e = error_data(
                METHOD_NOT_FOUND,
                format!("Method not found: {}", req.method),
                None,
            );
            return error_response(req.id, &e).to_string();
        };
        // As rmcp's handler does: 2026-07-28 wants caching hints on cacheable results and
        // reports a missing resource as invalid params; older revisions have no `resultType`.
        let stateless = version >= STATELESS_VERSION || method == Method::Discover;
        let answer = self.result(method, ctx, &req, route, stateless).await;
        let id = req.id;
        match answer {
            Ok(result) => result_response(&id, result, stateless),
            Err(Untyped::Frame(frame)) => frame,
            Err(Untyped::Error(mut e)) => {
                if stateless && e.code == ErrorCode::RESOURCE_NOT_FOUND {
                    e.code = ErrorCode::INVALID_PARAMS;
                }
                error_response(id, &e).to_string()
            }
        }
    }

    /// What `method` answers to `req`: a typed result, or an error or frame as it is sent.
    async fn result(
        &self,
        method: Method,
        ctx: &CallCtx<'_>,
        req: &Request,
        route: Option<Route<'_>>,
        stateless: bool,
    ) -> Result<ServerResult, Untyped> {
        Ok(match method {
            Method::Initialize => {
                let params = req.params_value();
                let asked = params
                    .as_ref()
                    .and_then(|p| p.get("protocolVersion"))
                    .and_then(Value::as_str)
                    .unwrap_or(LATEST_SESSION_VERSION);
                let frame = json!({"jsonrpc": "2.0", "id": req.id,
                    "result": self.initialize_result(asked, ctx.session.as_deref())});
                return Err(Untyped::Frame(frame.to_string()));
            }
            Method::Ping => ServerResult::empty(()),
            // answered as rmcp answers it on `/mcp`
            Method::Discover => ServerResult::DiscoverResult(DiscoverResult::from_server_info(
                ProtocolVersion::KNOWN_VERSIONS.to_vec(),
                self.server_info(),
            )),
            Method::ToolsList => {
                ServerResult::ListToolsResult(self.list_tools(ctx.caller, cursor(req)?.as_deref())?)
            }
            Method::ToolsCall => match ToolCallIn::read(req.params.as_deref()) {
                // the usual call: arguments passed on and the result passed back as they came
                Some(p) => match self.call_tool_raw(ctx, &p.name, p.arguments, route).await? {
                    ToolAnswer::Raw(raw) => {
                        return Err(Untyped::Frame(result_frame(&req.id, &raw, stateless)));
                    }
                    ToolAnswer::Typed(r) => ServerResult::CallToolResult(r),
                },
                // anything unusual is read (and refused) exactly as rmcp's types say
                None => {
                    let p = params::<CallToolRequestParams>(req.params_value())?;
                    ServerResult::CallToolResult(self.call_tool(ctx, p).await?)
                }
            },
            Method::ResourcesList => ServerResult::ListResourcesResult(
                self.list_resources(ctx, cursor(req)?.as_deref()).await?,
            ),
            Method::ResourceTemplatesList => ServerResult::ListResourceTemplatesResult(
                self.list_resource_templates(ctx, cursor(req)?.as_deref())
                    .await?,
            ),
            Method::ResourcesRead => {
                let p = params::<ReadResourceRequestParams>(req.params_value())?;
                ServerResult::ReadResourceResult(self.read_resource(ctx, p.uri).await?)
            }
            Method::PromptsList => ServerResult::ListPromptsResult(
                self.list_prompts(ctx, cursor(req)?.as_deref()).await?,
            ),
            Method::PromptsGet => {
                let p = params::<GetPromptRequestParams>(req.params_value())?;
                ServerResult::GetPromptResult(self.get_prompt(ctx, p).await?)
            }
            Method::ResourcesSubscribe | Method::ResourcesUnsubscribe => {
                let uri = req
                    .params_value()
                    .and_then(|p| p.get("uri").and_then(Value::as_str).map(str::to_owned))
                    .unwrap_or_default();
                self.subscribe(ctx, &uri, method == Method::ResourcesSubscribe)
                    .await?;
                ServerResult::empty(())
            }
            Method::CompletionComplete => {
                let p = params::<CompleteRequestParams>(req.params_value())?;
                ServerResult::CompleteResult(self.complete(ctx, p).await?)
            }
            Method::LoggingSetLevel => {
                let level = req
                    .params_value()
                    .and_then(|p| p.get("level").and_then(Value::as_str).map(str::to_owned));
                self.set_level(ctx, level.as_deref().unwrap_or_default())
                    .await?;
                ServerResult::empty(())
            }
        })
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
}

/// What a role grants, as the dashboard shows it (`grants` in `GET /api/clients`).
#[derive(Debug, Clone, serde::Serialize, PartialEq)]
pub(crate) struct Grants {
    /// The role's allowlist as configured.
    pub(crate) patterns: Vec<String>,
    /// The tools (of running servers, and built-in) it may see and call, sorted.
    pub(crate) tools: Vec<String>,
    /// The servers whose resources and resource templates it may list and read, by name.
    pub(crate) resource_servers: Vec<String>,
}

/// A method's answer that is not a typed result to write.
enum Untyped {
    Error(ErrorData),
    /// Written already: `initialize`, a tool result passed on as it came.
    Frame(String),
}

impl From<ErrorData> for Untyped {
    fn from(e: ErrorData) -> Self {
        Self::Error(e)
    }
}

fn params<T: serde::de::DeserializeOwned>(p: Option<Value>) -> Result<T, ErrorData> {
    serde_json::from_value(p.unwrap_or_else(|| json!({})))
        .map_err(|e| error_data(INVALID_PARAMS, format!("Invalid params: {e}"), None))
}

/// The `cursor` of a list request (`None` without params, or with `null` ones).
fn cursor(req: &Request) -> Result<Option<String>, ErrorData> {
    match req.params_value() {
        None | Some(Value::Null) => Ok(None),
        p => Ok(params::<PaginatedRequestParams>(p)?.cursor),
    }
}

fn builtin_tools() -> Vec<Tool> {
    let schema: Arc<serde_json::Map<String, Value>> = Arc::new(
        json!({"type": "object", "properties": {}})
            .as_object()
            .cloned()
            .unwrap_or_default(),
    );
    let ro = ToolAnnotations::new().read_only(true);
    let mut health = Tool::new(
        HEALTH_TOOL,
        "Switchboard's health: every supervised MCP server with its state, pid, restarts and tools.",
        schema.clone(),
    );
    health.annotations = Some(ro.clone());
    let mut telemetry = Tool::new(
        TELEMETRY_TOOL,
        "Switchboard's telemetry: requests, successes, errors and replays per server and method.",
        schema,
    );
    telemetry.annotations = Some(ro);
    vec![health, telemetry]
}

fn json_result(value: Value) -> CallToolResult {
    let text = serde_json::to_string_pretty(&value).unwrap_or_default();
    let mut r = CallToolResult::success(vec![ContentBlock::text(text)]);
    r.structured_content = Some(value);
    r
}
