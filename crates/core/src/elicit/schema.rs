//! The restricted JSON Schema of an elicitation form (MCP 2025-11-25): a flat object of
//! strings (lengths, `email`/`uri`/`date`/`date-time`), numbers and integers (bounds),
//! booleans, single-select enums (`enum`, or `oneOf` of titled `const`s) and multi-select
//! arrays of them. [`check_schema`] refuses what a form cannot show; [`check_content`] checks
//! an answer against it, naming the first field that does not fit.

use serde_json::{Map, Value};

/// Whether `schema` is one a form can be built from.
pub(super) fn check_schema(schema: &Value) -> Result<(), String> {
    if schema.get("type").and_then(Value::as_str) != Some("object") {
        return Err("requestedSchema must be an object schema".to_owned());
    }
    let empty = Map::new();
    let props = match schema.get("properties") {
        None => &empty,
        Some(Value::Object(p)) => p,
        Some(_) => return Err("requestedSchema.properties must be an object".to_owned()),
    };
    for (name, prop) in props {
        kind(prop).map_err(|e| format!("requestedSchema field {name:?}: {e}"))?;
    }
    Ok(())
}

/// What a field holds.
enum Kind<'a> {
    Text,
    Number {
        integer: bool,
    },
    Boolean,
    /// One of these values.
    OneOf(Vec<&'a str>),
    /// Several of these values.
    ManyOf(Vec<&'a str>),
}

/// The `const`s of `oneOf`/`anyOf` options, or the plain `enum` of `prop`.
fn choices(prop: &Value) -> Option<Vec<&str>> {
    if let Some(options) = prop
        .get("oneOf")
        .or_else(|| prop.get("anyOf"))
        .and_then(Value::as_array)
    {
        return options
            .iter()
            .map(|o| o.get("const").and_then(Value::as_str))
            .collect();
    }
    prop.get("enum")?
        .as_array()?
        .iter()
        .map(Value::as_str)
        .collect()
}

fn kind(prop: &Value) -> Result<Kind<'_>, String> {
    match prop.get("type").and_then(Value::as_str) {
        Some("string") => match choices(prop) {
            Some(c) if !c.is_empty() => Ok(Kind::OneOf(c)),
            Some(_) => Err("an enum needs string values".to_owned()),
            None if prop.get("enum").is_some() || prop.get("oneOf").is_some() => {
                Err("an enum needs string values".to_owned())
            }
            None => Ok(Kind::Text),
        },
        Some("number") => Ok(Kind::Number { integer: false }),
        Some("integer") => Ok(Kind::Number { integer: true }),
        Some("boolean") => Ok(Kind::Boolean),
        Some("array") => match prop.get("items").and_then(choices) {
            Some(c) if !c.is_empty() => Ok(Kind::ManyOf(c)),
            _ => Err("an array must be a multi-select of string values".to_owned()),
        },
        Some(other) => Err(format!("type {other:?} cannot be shown in a form")),
        None => Err("no type".to_owned()),
    }
}

/// Whether `content` answers `schema` (already [`check_schema`]ed): required fields present,
/// no others, each of its type and within its bounds.
pub(super) fn check_content(schema: &Value, content: &Map<String, Value>) -> Result<(), String> {
    let empty = Map::new();
    let props = schema
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    for name in schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if !content.contains_key(name) {
            return Err(format!("field {name:?} is required"));
        }
    }
    for (name, value) in content {
        let prop = props
            .get(name)
            .ok_or_else(|| format!("field {name:?} is not in the requested schema"))?;
        check_field(prop, value).map_err(|e| format!("field {name:?}: {e}"))?;
    }
    Ok(())
}

fn check_field(prop: &Value, value: &Value) -> Result<(), String> {
    let bound = |key: &str| prop.get(key).and_then(Value::as_f64);
    match kind(prop)? {
        Kind::Text => {
            let s = value.as_str().ok_or("must be a string")?;
            let len = s.chars().count() as f64;
            if let Some(min) = bound("minLength")
                && len < min
            {
                return Err(format!("must be at least {min} characters"));
            }
            if let Some(max) = bound("maxLength")
                && len > max
            {
                return Err(format!("must be at most {max} characters"));
            }
            match prop.get("format").and_then(Value::as_str) {
                Some("email") if !is_email(s) => Err("must be an email address".to_owned()),
                Some("uri") if !is_uri(s) => Err("must be a URI".to_owned()),
                Some("date") if chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_err() => {
                    Err("must be a date (YYYY-MM-DD)".to_owned())
                }
                Some("date-time") if chrono::DateTime::parse_from_rfc3339(s).is_err() => {
                    Err("must be a date and time (RFC 3339)".to_owned())
                }
                _ => Ok(()),
            }
        }
        Kind::Number { integer } => {
            let n = value.as_f64().ok_or("must be a number")?;
            if integer && n.fract() != 0.0 {
                return Err("must be a whole number".to_owned());
            }
            if let Some(min) = bound("minimum")
                && n < min
            {
                return Err(format!("must be at least {min}"));
            }
            if let Some(max) = bound("maximum")
                && n > max
            {
                return Err(format!("must be at most {max}"));
            }
            Ok(())
        }
        Kind::Boolean => value
            .is_boolean()
            .then_some(())
            .ok_or_else(|| "must be true or false".to_owned()),
        Kind::OneOf(options) => {
            let s = value.as_str().ok_or("must be one of the options")?;
            if options.contains(&s) {
                Ok(())
            } else {
                Err(format!("{s:?} is not one of {options:?}"))
            }
        }
        Kind::ManyOf(options) => {
            let items = value.as_array().ok_or("must be a list of options")?;
            for item in items {
                let s = item.as_str().ok_or("must be a list of options")?;
                if !options.contains(&s) {
                    return Err(format!("{s:?} is not one of {options:?}"));
                }
            }
            let n = items.len() as f64;
            if let Some(min) = bound("minItems")
                && n < min
            {
                return Err(format!("choose at least {min}"));
            }
            if let Some(max) = bound("maxItems")
                && n > max
            {
                return Err(format!("choose at most {max}"));
            }
            Ok(())
        }
    }
}

/// `local@domain.tld`, loosely: what a form's email field accepts.
fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !s.chars().any(char::is_whitespace)
}

/// `scheme:rest`, with a scheme of letters, digits, `+`, `-`, `.` that starts with a letter.
fn is_uri(s: &str) -> bool {
    let Some((scheme, rest)) = s.split_once(':') else {
        return false;
    };
    scheme
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        && !rest.is_empty()
        && !s.chars().any(char::is_whitespace)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "name": {"type": "string", "minLength": 2, "maxLength": 5},
            "email": {"type": "string", "format": "email"},
            "site": {"type": "string", "format": "uri"},
            "born": {"type": "string", "format": "date"},
            "at": {"type": "string", "format": "date-time"},
            "age": {"type": "integer", "minimum": 0, "maximum": 150},
            "score": {"type": "number", "maximum": 1.5},
            "ok": {"type": "boolean", "default": true},
            "color": {"type": "string", "enum": ["red", "green"]},
            "size": {"type": "string", "oneOf": [{"const": "s", "title": "Small"},
                                                 {"const": "l", "title": "Large"}]},
            "tags": {"type": "array", "minItems": 1, "maxItems": 2,
                     "items": {"type": "string", "enum": ["a", "b", "c"]}},
            "pets": {"type": "array", "items": {"anyOf": [{"const": "cat", "title": "Cat"}]}}
        }, "required": ["name"]})
    }

    fn check(content: Value) -> Result<(), String> {
        check_content(&schema(), content.as_object().unwrap())
    }

    #[test]
    fn every_kind_of_field_is_checked() {
        check_schema(&schema()).unwrap();
        check(
            json!({"name": "Ada", "email": "a@b.io", "site": "https://x.y/z",
                     "born": "1815-12-10", "at": "2026-01-01T10:00:00Z", "age": 36,
                     "score": 1.25, "ok": false, "color": "red", "size": "l",
                     "tags": ["a", "c"], "pets": ["cat"]}),
        )
        .unwrap();
        for (bad, field) in [
            (json!({}), "name"),
            (json!({"name": "A"}), "name"),
            (json!({"name": "Adalovelace"}), "name"),
            (json!({"name": 3}), "name"),
            (json!({"name": "Ada", "email": "nope"}), "email"),
            (json!({"name": "Ada", "site": "not a uri"}), "site"),
            (json!({"name": "Ada", "born": "10/12/1815"}), "born"),
            (json!({"name": "Ada", "at": "tomorrow"}), "at"),
            (json!({"name": "Ada", "age": 36.5}), "age"),
            (json!({"name": "Ada", "age": -1}), "age"),
            (json!({"name": "Ada", "score": 2}), "score"),
            (json!({"name": "Ada", "ok": "yes"}), "ok"),
            (json!({"name": "Ada", "color": "blue"}), "color"),
            (json!({"name": "Ada", "size": "Small"}), "size"),
            (json!({"name": "Ada", "tags": []}), "tags"),
            (json!({"name": "Ada", "tags": ["a", "b", "c"]}), "tags"),
            (json!({"name": "Ada", "tags": ["z"]}), "tags"),
            (json!({"name": "Ada", "extra": 1}), "extra"),
        ] {
            let e = check(bad.clone()).unwrap_err();
            assert!(e.contains(&format!("{field:?}")), "{bad}: {e}");
        }
    }

    #[test]
    fn schemas_a_form_cannot_show_are_refused() {
        for bad in [
            json!({"type": "string"}),
            json!({"type": "object", "properties": {"x": {"type": "object"}}}),
            json!({"type": "object", "properties": {"x": {}}}),
            json!({"type": "object", "properties": {"x": {"type": "array",
                   "items": {"type": "number"}}}}),
            json!({"type": "object", "properties": {"x": {"type": "string", "enum": [1]}}}),
        ] {
            assert!(check_schema(&bad).is_err(), "{bad}");
        }
    }
}
