//! The one table of the MCP methods the gateway answers itself, and how each is carried: which
//! the `/mcp` fast path may take, which may wait on a server (run alongside a `/ws` socket's
//! other requests), and which param names a stateless request's target. A leaf: the
//! transports read it to decide, then hand the request to the dispatcher once.

/// An MCP method the dispatcher knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    Initialize,
    Ping,
    /// 2026-07-28's opener.
    Discover,
    ToolsList,
    ToolsCall,
    ResourcesList,
    ResourceTemplatesList,
    ResourcesRead,
    PromptsList,
    PromptsGet,
    LoggingSetLevel,
    CompletionComplete,
    ResourcesSubscribe,
    ResourcesUnsubscribe,
}

/// One row of [`METHODS`].
struct Spec {
    method: Method,
    name: &'static str,
    /// The `/mcp` fast path may answer it (the rest stays rmcp's there, as do methods not
    /// listed here).
    fast_path: bool,
    /// It may wait on a server: `/ws` runs it alongside the socket's other requests.
    waits: bool,
    /// The param that names its target, which a stateless request repeats in `Mcp-Name`.
    target: Option<&'static str>,
}

/// The method table, in the order of [`Method`].
#[rustfmt::skip]
const METHODS: [Spec; 14] = [
    //        method                         name                        fast_path waits  target
    Spec::row(Method::Initialize,            "initialize",               false,    false, None),
    Spec::row(Method::Ping,                  "ping",                     true,     false, None),
    Spec::row(Method::Discover,              "server/discover",          false,    false, None),
    Spec::row(Method::ToolsList,             "tools/list",               true,     false, None),
    Spec::row(Method::ToolsCall,             "tools/call",               true,     true,  Some("name")),
    Spec::row(Method::ResourcesList,         "resources/list",           true,     true,  None),
    Spec::row(Method::ResourceTemplatesList, "resources/templates/list", true,     true,  None),
    Spec::row(Method::ResourcesRead,         "resources/read",           true,     true,  Some("uri")),
    Spec::row(Method::PromptsList,           "prompts/list",             true,     true,  None),
    Spec::row(Method::PromptsGet,            "prompts/get",              true,     true,  Some("name")),
    Spec::row(Method::LoggingSetLevel,       "logging/setLevel",         true,     true,  None),
    Spec::row(Method::CompletionComplete,    "completion/complete",      true,     true,  None),
    Spec::row(Method::ResourcesSubscribe,    "resources/subscribe",      true,     true,  Some("uri")),
    Spec::row(Method::ResourcesUnsubscribe,  "resources/unsubscribe",    true,     true,  Some("uri")),
];

impl Spec {
    const fn row(
        method: Method,
        name: &'static str,
        fast_path: bool,
        waits: bool,
        target: Option<&'static str>,
    ) -> Self {
        Self {
            method,
            name,
            fast_path,
            waits,
            target,
        }
    }
}

impl Method {
    pub(crate) fn parse(name: &str) -> Option<Self> {
        METHODS.iter().find(|s| s.name == name).map(|s| s.method)
    }

    fn spec(self) -> &'static Spec {
        &METHODS[self as usize]
    }

    /// Whether the `/mcp` fast path may answer it.
    pub(crate) fn fast_path(self) -> bool {
        self.spec().fast_path
    }

    /// Whether it may wait on a server.
    pub(crate) fn waits(self) -> bool {
        self.spec().waits
    }

    /// Whether its result may be cached, and so carries caching hints from 2026-07-28 on.
    pub(crate) fn cacheable(self) -> bool {
        matches!(
            self,
            Self::ToolsList
                | Self::ResourcesList
                | Self::ResourceTemplatesList
                | Self::ResourcesRead
                | Self::PromptsList
        )
    }

    /// The param naming its target (`name`, `uri`), for methods that have one.
    pub(crate) fn target_param(self) -> Option<&'static str> {
        self.spec().target
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_method_table_is_in_the_order_of_its_enum() {
        for (i, spec) in METHODS.iter().enumerate() {
            assert_eq!(spec.method as usize, i, "{}", spec.name);
            assert_eq!(Method::parse(spec.name), Some(spec.method));
        }
        assert_eq!(Method::parse("tools/cal"), None);
    }
}
