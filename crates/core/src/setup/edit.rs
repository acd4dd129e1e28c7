//! Edits of an agent's own config file that keep everything else byte for byte: JSON (and
//! JSON with comments) through jsonc-parser's concrete syntax tree, TOML through toml_edit.
//!
//! Each edit touches one entry `name` of one table (`mcpServers`, `servers`,
//! `context_servers`, `mcp_servers`) and answers `None` when the file already says exactly
//! that, so that running an edit twice writes nothing the second time.

use jsonc_parser::ParseOptions;
use jsonc_parser::cst::{CstInputValue, CstObject, CstRootNode};
use serde_json::{Map, Value};
use toml_edit::{DocumentMut, InlineTable, Item, Table};

/// The syntax of a config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// Strict JSON: a comment or a trailing comma is malformed.
    Json,
    /// JSON with comments and trailing commas (VS Code, Zed): both are kept.
    Jsonc,
    Toml,
}

/// Why a file cannot be edited. The file is left as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    /// Not parseable in its format.
    #[error("{0}")]
    Malformed(String),
    /// Parseable, but the place of the entry holds something else than a table.
    #[error("{0}")]
    Shape(String),
}

fn options(format: Format) -> ParseOptions {
    let loose = format == Format::Jsonc;
    ParseOptions {
        allow_comments: loose,
        allow_loose_object_property_names: false,
        allow_trailing_commas: loose,
        allow_missing_commas: false,
        allow_single_quoted_strings: false,
        allow_hexadecimal_numbers: false,
        allow_unary_plus_numbers: false,
    }
}

fn parse_json(format: Format, text: &str) -> Result<CstRootNode, EditError> {
    // The tree keeps comments whatever the options say: strict JSON is checked strictly.
    if format == Format::Json
        && !text.trim().is_empty()
        && let Err(e) = serde_json::from_str::<Value>(text)
    {
        return Err(EditError::Malformed(format!("is not valid JSON: {e}")));
    }
    let root = CstRootNode::parse(text, &options(format)).map_err(|e| {
        EditError::Malformed(format!(
            "is not valid {}: {e}",
            if format == Format::Jsonc {
                "JSON with comments"
            } else {
                "JSON"
            }
        ))
    })?;
    match root.value() {
        None => Ok(root),
        Some(v) if v.as_object().is_some() => Ok(root),
        Some(_) => Err(EditError::Shape(
            "holds something else than a JSON object at the top".into(),
        )),
    }
}

/// The object at `table` below the root; created on the way when `create`.
fn json_table(
    root: &CstRootNode,
    table: &[&str],
    create: bool,
) -> Result<Option<CstObject>, EditError> {
    let mut obj = match (root.object_value(), create) {
        (Some(o), _) => o,
        (None, true) => root.object_value_or_set(),
        (None, false) => return Ok(None),
    };
    for (depth, key) in table.iter().enumerate() {
        let next = match obj.get(key) {
            Some(prop) => match prop.object_value() {
                Some(o) => o,
                None if prop
                    .value()
                    .is_some_and(|v| v.to_serde_value() == Some(Value::Null)) =>
                {
                    prop.object_value_or_set()
                }
                None => {
                    return Err(EditError::Shape(format!(
                        "has `{}` that is not an object",
                        table[..=depth].join(".")
                    )));
                }
            },
            None if create => obj.object_value_or_set(key),
            None => return Ok(None),
        };
        obj = next;
    }
    Ok(Some(obj))
}

/// Keys of an entry in the order people write them (`type`, then how to start or reach it,
/// then headers); the rest after, sorted.
const KEY_ORDER: [&str; 9] = [
    "type",
    "command",
    "args",
    "env",
    "url",
    "serverUrl",
    "httpUrl",
    "headers",
    "http_headers",
];

fn ordered(o: &Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut fields: Vec<_> = o.iter().collect();
    fields.sort_by_key(|(k, _)| {
        KEY_ORDER
            .iter()
            .position(|p| p == k)
            .unwrap_or(KEY_ORDER.len())
    });
    fields
}

fn to_input(v: &Value) -> CstInputValue {
    match v {
        Value::Null => CstInputValue::Null,
        Value::Bool(b) => CstInputValue::Bool(*b),
        Value::Number(n) => CstInputValue::Number(n.to_string()),
        Value::String(s) => CstInputValue::String(s.clone()),
        Value::Array(a) => CstInputValue::Array(a.iter().map(to_input).collect()),
        Value::Object(o) => CstInputValue::Object(
            ordered(o)
                .into_iter()
                .map(|(k, v)| (k.clone(), to_input(v)))
                .collect(),
        ),
    }
}

/// Text of a file we create: what an edit of nothing gives, ending with a newline.
fn with_final_newline(mut text: String) -> String {
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

/// Every entry of `table` in `text` (empty when the table is missing).
pub(crate) fn entries(
    format: Format,
    text: &str,
    table: &[&str],
) -> Result<Map<String, Value>, EditError> {
    if format == Format::Toml {
        let value = toml_value(text)?;
        let mut at = &value;
        for key in table {
            match at.get(*key) {
                Some(v) => at = v,
                None => return Ok(Map::new()),
            }
        }
        return match at {
            Value::Object(m) => Ok(m.clone()),
            _ => Err(EditError::Shape(format!(
                "has `{}` that is not a table",
                table.join(".")
            ))),
        };
    }
    let root = parse_json(format, text)?;
    let Some(obj) = json_table(&root, table, false)? else {
        return Ok(Map::new());
    };
    Ok(obj
        .properties()
        .into_iter()
        .filter_map(|p| {
            let name = p.name()?.decoded_value().ok()?;
            Some((name, p.value()?.to_serde_value()?))
        })
        .collect())
}

/// Sets entry `name` of `table` to `value`; `Ok(None)` when it already is exactly that.
pub(crate) fn upsert(
    format: Format,
    text: &str,
    table: &[&str],
    name: &str,
    value: &Value,
) -> Result<Option<String>, EditError> {
    if entries(format, text, table)?.get(name) == Some(value) {
        return Ok(None);
    }
    if format == Format::Toml {
        return toml_upsert(text, table, name, value).map(Some);
    }
    let root = parse_json(format, text)?;
    let obj = json_table(&root, table, true)?.expect("created");
    match obj.get(name) {
        Some(prop) => prop.set_value(to_input(value)),
        None => {
            obj.append(name, to_input(value));
        }
    }
    let out = root.to_string();
    Ok(Some(if text.trim().is_empty() {
        with_final_newline(out)
    } else {
        out
    }))
}

/// Removes entry `name` of `table`; `Ok(None)` when there is none.
pub(crate) fn remove(
    format: Format,
    text: &str,
    table: &[&str],
    name: &str,
) -> Result<Option<String>, EditError> {
    if !entries(format, text, table)?.contains_key(name) {
        return Ok(None);
    }
    if format == Format::Toml {
        let mut doc = toml_doc(text)?;
        let mut at: &mut dyn toml_edit::TableLike = doc.as_table_mut();
        for key in table {
            at = at
                .get_mut(key)
                .and_then(Item::as_table_like_mut)
                .ok_or_else(|| EditError::Shape(format!("has `{key}` that is not a table")))?;
        }
        at.remove(name);
        return Ok(Some(doc.to_string()));
    }
    let root = parse_json(format, text)?;
    if let Some(prop) = json_table(&root, table, false)?.and_then(|o| o.get(name)) {
        prop.remove();
    }
    Ok(Some(root.to_string()))
}

fn toml_doc(text: &str) -> Result<DocumentMut, EditError> {
    text.parse::<DocumentMut>()
        .map_err(|e| EditError::Malformed(format!("is not valid TOML: {e}")))
}

fn toml_value(text: &str) -> Result<Value, EditError> {
    let value: toml::Value = toml::from_str(text)
        .map_err(|e| EditError::Malformed(format!("is not valid TOML: {e}")))?;
    serde_json::to_value(value).map_err(|e| EditError::Malformed(e.to_string()))
}

fn toml_inline(v: &Value) -> toml_edit::Value {
    match v {
        Value::Null => toml_edit::Value::from(""),
        Value::Bool(b) => (*b).into(),
        Value::Number(n) => match n.as_i64() {
            Some(i) => i.into(),
            None => n.as_f64().unwrap_or_default().into(),
        },
        Value::String(s) => s.as_str().into(),
        Value::Array(a) => toml_edit::Value::Array(a.iter().map(toml_inline).collect()),
        Value::Object(o) => {
            let mut t = InlineTable::new();
            for (k, v) in o {
                t.insert(k, toml_inline(v));
            }
            toml_edit::Value::InlineTable(t)
        }
    }
}

fn toml_upsert(text: &str, table: &[&str], name: &str, value: &Value) -> Result<String, EditError> {
    let mut doc = toml_doc(text)?;
    let mut at: &mut Table = doc.as_table_mut();
    for key in table {
        if !at.contains_key(key) {
            let mut t = Table::new();
            // `[mcp_servers.switchboard]` alone, without an empty `[mcp_servers]` above it
            t.set_implicit(true);
            at.insert(key, Item::Table(t));
        }
        at = at
            .get_mut(key)
            .and_then(Item::as_table_mut)
            .ok_or_else(|| EditError::Shape(format!("has `{key}` that is not a table")))?;
    }
    let mut entry = Table::new();
    if let Value::Object(fields) = value {
        for (k, v) in ordered(fields) {
            entry.insert(k, Item::Value(toml_inline(v)));
        }
    }
    match at.get_mut(name).and_then(Item::as_table_mut) {
        // keep the entry's place and its comments; replace its keys
        Some(existing) => {
            existing.clear();
            for (k, v) in entry.iter() {
                existing.insert(k, v.clone());
            }
        }
        None => {
            at.insert(name, Item::Table(entry));
        }
    }
    Ok(doc.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_with_comments_keeps_them_and_a_second_edit_changes_nothing() {
        let text = "{\n  // my servers\n  \"servers\": {\n    \"a\": {\"command\": \"x\"}, // a\n  },\n}\n";
        let value = json!({"type": "http", "url": "http://127.0.0.1:1/mcp"});
        let out = upsert(Format::Jsonc, text, &["servers"], "sb", &value)
            .unwrap()
            .unwrap();
        assert!(
            out.contains("// my servers") && out.contains("// a"),
            "{out}"
        );
        assert_eq!(
            entries(Format::Jsonc, &out, &["servers"]).unwrap()["sb"],
            value
        );
        assert_eq!(
            upsert(Format::Jsonc, &out, &["servers"], "sb", &value).unwrap(),
            None
        );
        let back = remove(Format::Jsonc, &out, &["servers"], "sb")
            .unwrap()
            .unwrap();
        assert_eq!(back, text);
    }

    #[test]
    fn strict_json_refuses_comments_and_other_shapes() {
        let err = upsert(Format::Json, "{ // no\n}", &["mcpServers"], "a", &json!({})).unwrap_err();
        assert!(matches!(err, EditError::Malformed(_)), "{err}");
        let err = upsert(Format::Json, "[1]", &["mcpServers"], "a", &json!({})).unwrap_err();
        assert!(matches!(err, EditError::Shape(_)), "{err}");
        let err = upsert(
            Format::Json,
            "{\"mcpServers\": 3}",
            &["mcpServers"],
            "a",
            &json!({}),
        )
        .unwrap_err();
        assert!(err.to_string().contains("mcpServers"), "{err}");
    }

    #[test]
    fn toml_keeps_comments_and_removes_cleanly() {
        let text = "# codex\nmodel = \"o3\"\n\n[mcp_servers.docs]\ncommand = \"docs\" # the docs\n";
        let value =
            json!({"url": "http://127.0.0.1:1/mcp", "http_headers": {"Authorization": "Bearer t"}});
        let out = upsert(Format::Toml, text, &["mcp_servers"], "switchboard", &value)
            .unwrap()
            .unwrap();
        assert!(out.starts_with(text), "{out}");
        assert_eq!(
            upsert(Format::Toml, &out, &["mcp_servers"], "switchboard", &value).unwrap(),
            None
        );
        let back = remove(Format::Toml, &out, &["mcp_servers"], "switchboard")
            .unwrap()
            .unwrap();
        assert_eq!(back, text);
        assert!(matches!(
            upsert(Format::Toml, "a = [", &["mcp_servers"], "x", &value),
            Err(EditError::Malformed(_))
        ));
    }
}
