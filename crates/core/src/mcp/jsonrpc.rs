//! JSON-RPC 2.0 framing for the transports the gateway answers itself (`/ws`, the `/mcp` fast
//! path): reading one message ([`parse`] into [`Incoming`]), peeking at `params._meta` in place
//! ([`MetaPeek`]), writing responses and errors, and the error codes by name.
//!
//! It knows no MCP method: params stay the JSON text they came as until a method reads them.

use rmcp::model::{ErrorCode, ErrorData, ServerResult};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

/// Not JSON (JSON-RPC).
pub(crate) const PARSE_ERROR: i64 = -32700;
/// JSON, but not a JSON-RPC 2.0 request (JSON-RPC).
pub(crate) const INVALID_REQUEST: i64 = -32600;
/// JSON-RPC.
pub(crate) const METHOD_NOT_FOUND: i64 = -32601;
/// JSON-RPC; also an unknown tool or prompt (MCP).
pub(crate) const INVALID_PARAMS: i64 = -32602;
/// JSON-RPC; also a server answer that is not what its method returns.
pub(crate) const INTERNAL_ERROR: i64 = -32603;
/// The client cancelled the request (MCP).
pub(crate) const REQUEST_CANCELLED: i64 = -32800;
/// No paired client behind the request, or it was unpaired.
pub(crate) const UNAUTHENTICATED: i64 = -32001;
/// A resource no server has (MCP).
pub(crate) const RESOURCE_NOT_FOUND: i64 = -32002;
/// A call the caller's role does not allow.
pub(crate) const FORBIDDEN: i64 = -32003;

/// A JSON-RPC error as data.
pub(crate) fn error_data(code: i64, message: impl Into<String>, data: Option<Value>) -> ErrorData {
    ErrorData::new(ErrorCode(code as i32), message.into(), data)
}

/// One incoming JSON-RPC message, classified.
#[derive(Debug)]
pub(crate) enum Incoming {
    Request(Request),
    Notification {
        method: String,
        params: Option<Value>,
    },
    /// A response to something we asked (a server's request passed on to the client).
    Response {
        id: Value,
        result: Option<Box<RawValue>>,
        error: Option<Box<RawValue>>,
    },
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
    result: Option<Box<RawValue>>,
    error: Option<Box<RawValue>>,
}

/// Keeps `"id": null` apart from a missing id.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// Reads one JSON-RPC message: -32700 (id null) if it is not JSON, -32600 if it is JSON but not
/// a JSON-RPC 2.0 message (batches included: one message per frame). Anything but
/// [`Incoming::Invalid`] was read whole, so it is JSON.
pub(crate) fn parse(bytes: &[u8]) -> Incoming {
    let wire: Wire = match serde_json::from_slice(bytes) {
        Ok(w) => w,
        Err(e) if e.is_syntax() || e.is_eof() => {
            return Incoming::Invalid(error_frame(
                Value::Null,
                PARSE_ERROR,
                format!("Parse error: {e}"),
            ));
        }
        Err(e) => {
            return Incoming::Invalid(error_frame(
                Value::Null,
                INVALID_REQUEST,
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
            INVALID_REQUEST,
            "Invalid Request: \"jsonrpc\" must be \"2.0\"",
        ));
    }
    if !id_ok {
        return Incoming::Invalid(error_frame(
            Value::Null,
            INVALID_REQUEST,
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
        (None, Some(id)) if wire.result.is_some() || wire.error.is_some() => Incoming::Response {
            id,
            result: wire.result,
            error: wire.error,
        },
        (None, _) => Incoming::Invalid(error_frame(
            id,
            INVALID_REQUEST,
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

/// A JSON-RPC result response, as written.
#[derive(serde::Serialize)]
struct OutResponse<'a> {
    jsonrpc: &'static str,
    id: &'a Value,
    result: &'a ServerResult,
}

/// A JSON-RPC response around a typed MCP result: with caching hints for a 2026-07-28 client
/// (`stateless`), without `resultType` for older ones. Serialized straight from the typed
/// result, no intermediate JSON tree.
pub(crate) fn result_response(id: &Value, mut result: ServerResult, stateless: bool) -> String {
    if stateless {
        result.fill_missing_cache_hints();
    } else {
        result.strip_result_type_for_legacy_peer();
    }
    let out = OutResponse {
        jsonrpc: "2.0",
        id,
        result: &result,
    };
    serde_json::to_string(&out).unwrap_or_else(|e| {
        error_frame(id.clone(), INTERNAL_ERROR, format!("Internal error: {e}")).to_string()
    })
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
    pub(crate) id: Value,
    pub(crate) method: String,
    pub(crate) params: Option<Box<RawValue>>,
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

    /// What of `params._meta` goes on to the server (see [`passed_meta`]).
    pub(crate) fn passed_meta(&self) -> Option<Map<String, Value>> {
        #[derive(Deserialize)]
        struct Params<'a> {
            #[serde(rename = "_meta", default, borrow)]
            meta: Option<&'a RawValue>,
        }
        let params = self.params.as_deref().filter(|p| is_object(p))?;
        let meta = match serde_json::from_str::<Params<'_>>(params.get()) {
            Ok(p) => serde_json::from_str::<Value>(p.meta?.get()).ok()?,
            // e.g. a key given twice: read as a value tree does (the last one counts)
            Err(_) => serde_json::from_str::<Value>(params.get())
                .ok()?
                .get_mut("_meta")?
                .take(),
        };
        passed_meta(meta)
    }
}

/// The keys of a request's `_meta` that belong to the client's own hop to the gateway and are
/// not passed on: its progress token (the gateway puts its own in, and maps progress back) and
/// the 2026-07-28 lifecycle keys (the gateway's connection to a server has its own).
const HOP_META: [&str; 4] = [
    "progressToken",
    META_VERSION,
    "io.modelcontextprotocol/clientInfo",
    "io.modelcontextprotocol/clientCapabilities",
];

/// What of a client request's `_meta` (an object) reaches the server: everything but
/// [`HOP_META`]; `None` when nothing is left.
pub(crate) fn passed_meta(meta: Value) -> Option<Map<String, Value>> {
    let Value::Object(mut meta) = meta else {
        return None;
    };
    for key in HOP_META {
        meta.remove(key);
    }
    (!meta.is_empty()).then_some(meta)
}

/// `params._meta.progressToken` (a string or a number) and whether `params._meta` names a
/// protocol version, read in place.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct MetaPeek {
    pub(crate) progress_token: Option<Value>,
    pub(crate) has_version: bool,
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

/// For `deserialize_with`: keeps `null` apart from a missing field, as JSON text.
pub(crate) fn present_raw<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<&'de RawValue>, D::Error> {
    <&'de RawValue>::deserialize(d).map(Some)
}

/// Whether JSON text is an object (it is valid JSON already).
pub(crate) fn is_object(raw: &RawValue) -> bool {
    raw.get().trim_start().starts_with('{')
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
            Incoming::Response { .. }
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
}
