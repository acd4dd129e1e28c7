//! The transport-independent MCP dispatcher: what the gateway answers to each request.
//!
//! [`Dispatcher`] holds the logic of the methods in the method table (`mcp/method`) (tools with roles, built-in tools, resources of the servers a role grants, prompts) over
//! an [`McpGateway`], and hands each call that reaches a server to the [`CallBook`] (record,
//! progress, replay, the raw pass-through). The rmcp `Handler` behind `/mcp` sessions calls
//! into it with rmcp's typed requests; `/ws` and the `/mcp` fast path hand it raw JSON-RPC
//! through [`Dispatcher::answer`], which answers in the caller's task without any of rmcp's
//! per-session machinery.
//!
//! A per-server endpoint (`/mcp/<server>`, `/ws/<server>`) is the same dispatcher narrowed
//! with [`Dispatcher::only`]: it shows that one server under the server's own tool and prompt
//! names and asks no other. Names are made whole (`<server>__<name>`) as they come in, so
//! roles, routes, telemetry and the call log see exactly what `/mcp` would.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResult, CompleteRequestParams, CompleteResult, ContentBlock,
    CustomResult, DiscoverResult, ErrorCode, ErrorData, GetPromptRequestParams, GetPromptResult,
    Implementation, PaginatedRequestParams, Prompt, ProtocolVersion, ReadResourceRequestParams,
    ReadResourceResult, Resource, ResourceTemplate, ServerCapabilities, ServerConfig, ServerResult,
    Tool, ToolAnnotations,
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
use super::raw::{ToolAnswer, ToolCallIn, for_revision, result_frame};
use super::session::Session;
use crate::auth::{Caller, Roles};
use crate::upstream::{Retry, ServerState, Upstream};

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
    /// The one server a per-server endpoint shows, under its own names; `None`: every
    /// server, as `<server>__<name>`.
    only: Option<Arc<str>>,
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
            only: None,
        }
    }

    /// This dispatcher narrowed to `server`'s endpoint: its tools and prompts under their own
    /// names, its resources, and no other server's anything (no built-in tools either).
    pub(crate) fn only(&self, server: &str) -> Self {
        Self {
            only: Some(Arc::from(server)),
            ..self.clone()
        }
    }

    /// The server this dispatcher is narrowed to, if it is.
    pub(crate) fn server(&self) -> Option<&str> {
        self.only.as_deref()
    }

    /// Whether this dispatcher shows `server` at all.
    fn shows(&self, server: &str) -> bool {
        self.only.as_deref().is_none_or(|only| only == server)
    }

    /// The exposed name (`<server>__<name>`, what roles check) of a tool or prompt the client
    /// named `name`: on a per-server endpoint its server's prefix is added.
    fn exposed<'n>(&self, name: &'n str) -> Cow<'n, str> {
        match &self.only {
            Some(server) => Cow::Owned(names::exposed(server, name)),
            None => Cow::Borrowed(name),
        }
    }

    /// The server and that server's own name of a prompt the client named `name`.
    fn target<'n>(&self, name: &'n str) -> Option<(Upstream, &'n str)> {
        let (server, own) = match &self.only {
            Some(server) => (&**server, name),
            None => names::split(name)?,
        };
        Some((self.gw.upstream(server)?, own))
    }

    /// Where a call of the tool the client named `name` goes.
    pub(crate) fn route<'n>(&self, name: &'n str) -> Option<Route<'n>> {
        let Some(server) = &self.only else {
            return self.gw.route(name);
        };
        let upstream = self.gw.upstream(server)?;
        let replayable = upstream.route(name)?;
        Some(Route {
            exposed: Cow::Owned(names::exposed(server, name)),
            upstream,
            tool: Cow::Borrowed(name),
            replayable,
        })
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
        info.instructions = Some(match &self.only {
            Some(server) => format!(
                "Switchboard's endpoint for the user's MCP server '{server}': its tools, prompts \
                 and resources under their own names."
            ),
            None => "Switchboard aggregates the user's MCP servers: tools are named \
                     <server>__<tool>. switchboard__health_snapshot shows which servers are \
                     running."
                .into(),
        });
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
    /// On a per-server endpoint, only its server.
    fn grants_server(&self, caller: Option<&Caller>, server: &str) -> bool {
        self.shows(server) && caller.is_some_and(|c| self.roles.grants_server(&c.role, server))
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
    /// they came from. Servers that fail are skipped; servers `only` turns away (or this
    /// dispatcher does not show) are never asked.
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
            // an idle on-demand server answers from its last listing
            if !status.is_listed()
                || !status.has_capability(capability)
                || !self.shows(up.name())
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
        let grants = |up: &Upstream| self.grants_server(Some(caller), up.name());
        let offers = |up: &Upstream| {
            up.status()
                .capabilities
                .pointer("/resources/subscribe")
                .and_then(Value::as_bool)
                .unwrap_or(false)
        };
        let listed = self
            .gw
            .resource_listers(uri)
            .iter()
            .filter_map(|s| self.gw.upstream(s))
            .find(grants);
        let up = match listed {
            Some(up) => up,
            // Not listed (a template's URI, or never listed): the one granted server that
            // offers subscriptions, as a client of that server alone would have it.
            None => {
                let offering: Vec<Upstream> = self
                    .gw
                    .upstreams()
                    .into_iter()
                    .filter(|u| grants(u) && u.status().is_listed() && offers(u))
                    .collect();
                match <[Upstream; 1]>::try_from(offering) {
                    Ok([up]) => up,
                    Err(v) => {
                        return Err(error_data(
                            RESOURCE_NOT_FOUND,
                            format!(
                                "no server granted to role '{}' listed '{uri}', and {} granted \
                                 servers offer subscriptions, so which one it belongs to cannot \
                                 be told",
                                caller.role,
                                v.len()
                            ),
                            None,
                        ));
                    }
                }
            }
        };
        let offers = offers(&up);
        if !offers {
            return Err(error_data(
                METHOD_NOT_FOUND,
                format!("server '{}' offers no resource subscriptions", up.name()),
                None,
            ));
        }
        // an isolated server's subscriptions are each its session's own instance's
        let last =
            !on && (up.is_isolated() || !self.gw.sessions().subscribed_elsewhere(uri, &session.id));
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
        session.subscribe_resource(uri, up.name(), on);
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
    ) -> Result<Value, ErrorData> {
        let Some(caller) = ctx.caller else {
            return Err(error_data(UNAUTHENTICATED, "authentication required", None));
        };
        let mut params = serde_json::to_value(&request).unwrap_or(Value::Null);
        let reference = params.get("ref").cloned().unwrap_or(Value::Null);
        let (up, label) = match reference.get("type").and_then(Value::as_str) {
            Some("ref/prompt") => {
                let given = reference["name"].as_str().unwrap_or_default();
                let name = self.exposed(given).into_owned();
                self.allowed(ctx.caller, &name)?;
                let unknown =
                    || error_data(INVALID_PARAMS, format!("unknown prompt '{given}'"), None);
                let (up, prompt) = self.target(given).ok_or_else(unknown)?;
                params["ref"]["name"] = json!(prompt);
                (up, name)
            }
            Some("ref/resource") => {
                let uri = reference["uri"].as_str().unwrap_or_default().to_owned();
                let grants = |up: &Upstream| self.grants_server(Some(caller), up.name());
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
        self.book.request_raw::<CompleteResult>(ctx, &up, ask).await
    }

    /// `logging/setLevel`: the session hears servers' log messages at `level` and above
    /// from now on, and every running server the caller's role grants that logs is told the
    /// level (one that refuses is left as it is: the others still are told). Every server
    /// granted remembers it, and is told when it next starts (an idle on-demand one, one
    /// restarting).
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
            if !self.grants_server(ctx.caller, up.name()) {
                continue;
            }
            up.remember_log_level(level);
            let status = up.status();
            if status.state != ServerState::Running || !status.has_capability("logging") {
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
    ) -> Result<Value, ErrorData> {
        let tools: Vec<(String, Value)> = match &self.only {
            None => {
                // a client's budget shortens names further; its role still sees the full names
                let budget = caller
                    .and_then(|c| c.name_budget)
                    .unwrap_or(super::names::MAX_LEN);
                let mut tools: Vec<(String, Value)> = self
                    .gw
                    .tools_within(budget)
                    .into_iter()
                    .filter(|t| self.allowed(caller, &t.canonical).is_ok())
                    .map(|t| (t.name, t.def))
                    .collect();
                tools.extend(
                    builtin_tools()
                        .into_iter()
                        .filter(|t| self.allowed(caller, &t.name).is_ok())
                        .map(|t| {
                            (
                                t.name.to_string(),
                                serde_json::to_value(t).unwrap_or_default(),
                            )
                        }),
                );
                tools
            }
            // the server's own names, checked as the exposed ones
            Some(server) => self
                .gw
                .tools()
                .into_iter()
                .filter(|t| *t.server == **server && self.allowed(caller, &t.name).is_ok())
                .map(|t| {
                    let mut def = t.def;
                    def["name"] = Value::String(t.original.clone());
                    (t.original, def)
                })
                .collect(),
        };
        let page = self.page(List::Tools, tools, |(name, _)| name, cursor)?;
        Ok(page.into_result("tools", |(_, def)| def))
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
        let raw = |v: Option<Result<Box<RawValue>, serde_json::Error>>| match v {
            Some(Ok(raw)) => Ok(Some(raw)),
            Some(Err(e)) => Err(error_data(
                INVALID_PARAMS,
                format!("Invalid params: {e}"),
                None,
            )),
            None => Ok(None),
        };
        let arguments = raw(request
            .arguments
            .as_ref()
            .map(serde_json::value::to_raw_value))?;
        let input_responses = raw(request
            .input_responses
            .as_ref()
            .map(serde_json::value::to_raw_value))?;
        let request_state = raw(request
            .request_state
            .as_ref()
            .map(serde_json::value::to_raw_value))?;
        let retry = (input_responses.is_some() || request_state.is_some()).then_some(Retry {
            input_responses: input_responses.as_deref(),
            request_state: request_state.as_deref(),
        });
        self.call_tool_raw(ctx, &request.name, arguments.as_deref(), retry, None, false)
            .await
            .map(ToolAnswer::into_typed)
    }

    /// `tools/call` of `name` with the client's `arguments` (a JSON object) as they came.
    /// `route`: where `name` goes, if the caller has looked it up already. `modern`: the
    /// client speaks 2026-07-28 (a server's `input_required` reaches it as it is, and its
    /// `retry` goes to the server as it came).
    async fn call_tool_raw(
        &self,
        ctx: &CallCtx<'_>,
        name: &str,
        arguments: Option<&RawValue>,
        retry: Option<Retry<'_>>,
        route: Option<Route<'_>>,
        modern: bool,
    ) -> Result<ToolAnswer, ErrorData> {
        let exposed = self.exposed(name);
        // the name a client with a shorter budget called, as its full name (the aggregated
        // endpoint only: a server's own endpoint shows the server's names)
        let full;
        let (name, given): (&str, &str) = match ctx.caller.and_then(|c| c.name_budget) {
            Some(budget) if budget < super::names::MAX_LEN && self.only.is_none() => {
                full = self.gw.canonical_name(&exposed, budget);
                (full.as_str(), full.as_str())
            }
            _ => (&exposed, name),
        };
        if let Err(refused) = self.allowed(ctx.caller, name) {
            // refused here: it never reaches a server
            let error = (i64::from(refused.code.0), refused.message.to_string());
            self.book.answered(ctx, name, Err(error));
            return Err(refused);
        }
        if self.only.is_none() && (name == HEALTH_TOOL || name == TELEMETRY_TOOL) {
            return Ok(ToolAnswer::Typed(self.builtin(name, ctx)));
        }
        let route = route
            .filter(|r| r.exposed == name)
            .or_else(|| self.route(given));
        let Some(route) = route else {
            let server = match &self.only {
                Some(server) => Some(&**server),
                None => super::names::split(name).map(|(server, _)| server),
            };
            let message = match (
                server.and_then(|s| self.gw.waiting_for_login(s)),
                &self.only,
            ) {
                (Some(waiting), _) => waiting,
                (None, Some(server)) => {
                    format!("unknown tool '{given}' (server '{server}' has none)")
                }
                (None, None) => format!("unknown tool '{name}'"),
            };
            self.book
                .answered(ctx, name, Err((INVALID_PARAMS, message.clone())));
            return Err(error_data(INVALID_PARAMS, message, None));
        };
        self.book
            .call_tool(ctx, route, arguments, retry, modern)
            .await
    }

    /// The page at `cursor` of the resources of the servers the caller's role grants; the
    /// others are not asked.
    pub(crate) async fn list_resources(
        &self,
        ctx: &CallCtx<'_>,
        cursor: Option<&str>,
    ) -> Result<Value, ErrorData> {
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
            // read as rmcp's type only to check it is one; passed on as the server wrote it
            if let Ok(res) = serde_json::from_value::<Resource>(r.clone()) {
                listed.push((res.uri.clone(), up.name().to_owned()));
                // the first server (by name) lists a URI
                if seen.insert(res.uri.clone()) {
                    all.push((res.uri, r));
                }
            }
        }
        self.gw.learn_resource_owners(listed);
        let page = self.page(List::Resources, all, |(uri, _)| uri, cursor)?;
        Ok(page.into_result("resources", |(_, r)| r))
    }

    /// The page at `cursor` of the resource templates of the servers the caller's role grants.
    pub(crate) async fn list_resource_templates(
        &self,
        ctx: &CallCtx<'_>,
        cursor: Option<&str>,
    ) -> Result<Value, ErrorData> {
        let granted = |up: &Upstream| self.grants_server(ctx.caller, up.name());
        let all: Vec<(String, Value)> = self
            .gather(
                "resources",
                "resources/templates/list",
                "resourceTemplates",
                granted,
                &ctx.cancel,
            )
            .await
            .into_iter()
            .filter_map(|(_, t)| {
                let checked = serde_json::from_value::<ResourceTemplate>(t.clone()).ok()?;
                Some((checked.uri_template, t))
            })
            .collect();
        let page = self.page(List::ResourceTemplates, all, |(uri, _)| uri, cursor)?;
        Ok(page.into_result("resourceTemplates", |(_, t)| t))
    }

    pub(crate) async fn read_resource(
        &self,
        ctx: &CallCtx<'_>,
        uri: String,
    ) -> Result<Value, ErrorData> {
        let Some(caller) = ctx.caller else {
            return Err(error_data(UNAUTHENTICATED, "authentication required", None));
        };
        let grants = |up: &Upstream| self.grants_server(Some(caller), up.name());
        // The servers (still configured, and shown) that listed it: the first one granted
        // owns it.
        let listers: Vec<Upstream> = self
            .gw
            .resource_listers(&uri)
            .iter()
            .filter(|s| self.shows(s))
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
            match self
                .book
                .request_raw::<ReadResourceResult>(ctx, &up, ask)
                .await
            {
                Ok(r) => return Ok(r),
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
    ) -> Result<Value, ErrorData> {
        let mut all = Vec::new();
        for (up, mut p) in self
            .gather("prompts", "prompts/list", "prompts", |_| true, &ctx.cancel)
            .await
        {
            if let Ok(prompt) = serde_json::from_value::<Prompt>(p.clone()) {
                let name = names::exposed(up.name(), &prompt.name);
                if self.allowed(ctx.caller, &name).is_ok() {
                    // a per-server endpoint keeps the server's own name
                    if self.only.is_none() {
                        p["name"] = Value::String(name.clone());
                        all.push((name, p));
                    } else {
                        all.push((prompt.name.to_string(), p));
                    }
                }
            }
        }
        let page = self.page(List::Prompts, all, |(name, _)| name, cursor)?;
        Ok(page.into_result("prompts", |(_, p)| p))
    }

    pub(crate) async fn get_prompt(
        &self,
        ctx: &CallCtx<'_>,
        request: GetPromptRequestParams,
    ) -> Result<Value, ErrorData> {
        let given = request.name;
        let name = self.exposed(&given);
        self.allowed(ctx.caller, &name)?;
        let unknown = || error_data(INVALID_PARAMS, format!("unknown prompt '{given}'"), None);
        let Some((up, prompt)) = self.target(&given) else {
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
        self.book
            .request_raw::<GetPromptResult>(ctx, &up, ask)
            .await
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
            Method::ToolsList => passed(
                self.list_tools(ctx.caller, cursor(req)?.as_deref())?,
                method,
                stateless,
            ),
            Method::ToolsCall => match ToolCallIn::read(req.params.as_deref()) {
                // the usual call: arguments passed on and the result passed back as they came
                Some(p) => match self
                    .call_tool_raw(ctx, &p.name, p.arguments, p.retry, route, stateless)
                    .await?
                {
                    ToolAnswer::Raw(raw) => {
                        return Err(Untyped::Frame(result_frame(&req.id, &raw, stateless)));
                    }
                    // it has its resultType
                    ToolAnswer::InputRequired(raw) => {
                        return Err(Untyped::Frame(result_frame(&req.id, &raw, false)));
                    }
                    ToolAnswer::Typed(r) => ServerResult::CallToolResult(r),
                },
                // anything unusual is read (and refused) exactly as rmcp's types say
                None => {
                    let p = params::<CallToolRequestParams>(req.params_value())?;
                    ServerResult::CallToolResult(self.call_tool(ctx, p).await?)
                }
            },
            Method::ResourcesList => passed(
                self.list_resources(ctx, cursor(req)?.as_deref()).await?,
                method,
                stateless,
            ),
            Method::ResourceTemplatesList => passed(
                self.list_resource_templates(ctx, cursor(req)?.as_deref())
                    .await?,
                method,
                stateless,
            ),
            Method::ResourcesRead => {
                let p = params::<ReadResourceRequestParams>(req.params_value())?;
                passed(self.read_resource(ctx, p.uri).await?, method, stateless)
            }
            Method::PromptsList => passed(
                self.list_prompts(ctx, cursor(req)?.as_deref()).await?,
                method,
                stateless,
            ),
            Method::PromptsGet => {
                let p = params::<GetPromptRequestParams>(req.params_value())?;
                passed(self.get_prompt(ctx, p).await?, method, stateless)
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
                passed(self.complete(ctx, p).await?, method, stateless)
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

/// A result as its servers wrote it (see `raw::for_revision`), as rmcp's untyped result.
fn passed(mut result: Value, method: Method, stateless: bool) -> ServerResult {
    for_revision(&mut result, method.cacheable(), stateless);
    ServerResult::CustomResult(CustomResult(result))
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
