//! The raw pass-through of tool calls: the usual `tools/call` is read in place
//! ([`ToolCallIn`]), its arguments go to the server as the client wrote them, and a plain
//! result goes back as the server wrote it ([`checked_result`], [`result_frame`]). Anything
//! unusual is left to rmcp's typed params and results, so answers stay byte for byte what the
//! typed path writes; this only saves reading and writing them again.

use std::borrow::Cow;

use rmcp::model::{CallToolResult, ContentBlock, ResultType};
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use super::jsonrpc::{is_object, present_raw};

/// `tools/call` params as the usual call has them: a tool name, arguments that are an object,
/// perhaps `_meta` (an object). Anything else is left to rmcp's typed params.
pub(crate) struct ToolCallIn<'a> {
    pub(crate) name: Cow<'a, str>,
    pub(crate) arguments: Option<&'a RawValue>,
}

impl<'a> ToolCallIn<'a> {
    pub(crate) fn read(params: Option<&'a RawValue>) -> Option<Self> {
        #[derive(Deserialize)]
        struct Wire<'a> {
            #[serde(borrow)]
            name: Cow<'a, str>,
            #[serde(default, borrow)]
            arguments: Option<&'a RawValue>,
            #[serde(rename = "_meta", default, borrow, deserialize_with = "present_raw")]
            meta: Option<&'a RawValue>,
            #[serde(rename = "inputResponses")]
            #[serde(default, borrow, deserialize_with = "present_raw")]
            input_responses: Option<&'a RawValue>,
            #[serde(rename = "requestState")]
            #[serde(default, borrow, deserialize_with = "present_raw")]
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
    pub(crate) fn into_typed(self) -> CallToolResult {
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
pub(crate) enum Checked {
    /// Text blocks only: passed on as it came. `error`: its text when `isError` is true.
    Plain {
        raw: Box<RawValue>,
        error: Option<String>,
    },
    /// Valid, with more than text: read into rmcp's types (what the call is recorded with), and
    /// passed on as it came unless it has a `resultType` of its own (then written from those
    /// types, so that a client is never sent two).
    Typed {
        raw: Box<RawValue>,
        result: CallToolResult,
    },
    /// Not a tool result: why.
    Invalid(String),
}

/// Reads a tool result. A plain one (an object with `content`, a list of
/// `{"type":"text","text":…}` blocks, and optionally `isError` as a boolean,
/// `structuredContent`, `_meta` as an object, nothing else) is checked in place; anything else
/// is read into rmcp's types to check it is a tool result. Either way what the client gets is
/// what the server wrote: rmcp's types would drop what they do not know.
pub(crate) fn checked_result(raw: Box<RawValue>) -> Checked {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Plain<'a> {
        #[serde(borrow)]
        content: Vec<TextBlock<'a>>,
        #[serde(rename = "isError", default, deserialize_with = "present_bool")]
        is_error: Option<bool>,
        #[serde(rename = "structuredContent")]
        #[serde(default, borrow, deserialize_with = "present_raw")]
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
        Ok(result) => Checked::Typed { raw, result },
        Err(e) => Checked::Invalid(e.to_string()),
    }
}

/// Makes a result as its server wrote it (servers speak 2025-11-25) what the client's
/// revision expects, as rmcp does for its typed results: from 2026-07-28 on (`stateless`) it
/// carries `resultType` (`"complete"` when the server gave none) and, when `cacheable` and
/// complete, the caching hints `ttlMs: 0` and `cacheScope: "private"` unless it has its own;
/// older clients get no `resultType: "complete"`. Nothing else is touched.
pub(crate) fn for_revision(result: &mut Value, cacheable: bool, stateless: bool) {
    let Value::Object(r) = result else {
        return;
    };
    if stateless {
        let kind = r
            .entry("resultType")
            .or_insert_with(|| Value::String("complete".into()));
        if cacheable && kind == "complete" {
            r.entry("ttlMs").or_insert_with(|| Value::from(0));
            r.entry("cacheScope")
                .or_insert_with(|| Value::String("private".into()));
        }
    } else if r.get("resultType").is_some_and(|t| t == "complete") {
        r.remove("resultType");
    }
}

/// The text a failed tool call is reported with.
pub(crate) fn error_text(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .find_map(|c| c.as_text().map(|t| t.text.clone()))
        .unwrap_or_else(|| "tool reported an error".into())
}

/// A JSON-RPC response around a plain tool result as it came: the client's own `id`, and
/// `resultType` for 2026-07-28 clients.
pub(crate) fn result_frame(id: &Value, raw: &RawValue, result_type: bool) -> String {
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

#[cfg(test)]
mod tests {
    use rmcp::model::ServerResult;
    use serde_json::json;

    use super::*;
    use crate::mcp::jsonrpc::result_response;

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

    /// The frame the typed path writes for `result` (what clients got before results were
    /// passed on as they came).
    fn typed_frame(id: &Value, result: &str, stateless: bool) -> Value {
        let mut r: CallToolResult = serde_json::from_str(result).unwrap();
        r.result_type.get_or_insert(ResultType::COMPLETE);
        let frame = result_response(id, ServerResult::CallToolResult(r), stateless);
        serde_json::from_str(&frame).unwrap()
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
        // valid, read into rmcp's types, kept as written
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
            let Checked::Typed { raw: r, .. } = checked_result(raw(typed)) else {
                panic!("{typed}")
            };
            assert_eq!(r.get(), typed, "kept as the server wrote it");
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
