//! IEP v1.0 wire types: the envelope, every message, every error code.
//!
//! Everything that crosses `/ws/mcp` is parsed here, once, into [`ClientMessage`], or rendered
//! here from [`ServerMessage`]. Field names are exactly those of the real client
//! (intent-engine's `ws_client.rs`).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// The version we speak; only the major part is compared.
pub(crate) const PROTOCOL_VERSION: &str = "1.0";
const PROTOCOL_MAJOR: &str = "1";

/// Project announcement, sent flat or as `{"project": {...}}`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct ProjectInfo {
    pub path: String,
    pub name: String,
    pub db_path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    #[serde(default)]
    pub mcp_connected: bool,
    #[serde(default)]
    pub is_online: bool,
}

/// A change a registered server made to its database.
///
/// `operation` and `entity` are open strings: intent-engine sends `create`/`update`/`delete`/
/// `read` on `task`/`event` today, and a newer client may name others. They are recorded and
/// shown as sent; only the shape (types, required fields) is checked.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct DbOperation {
    pub operation: String,
    pub entity: String,
    pub affected_ids: Vec<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct DbOperationPayload {
    #[serde(flatten)]
    op: DbOperation,
    project_path: String,
}

#[derive(Debug, Deserialize)]
struct HelloPayload {
    entity_type: String,
    #[serde(default)]
    capabilities: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RegisterPayload {
    Wrapped { project: ProjectInfo },
    Flat(ProjectInfo),
}

#[derive(Debug, Default, Deserialize)]
struct GoodbyePayload {
    #[serde(default)]
    reason: Option<String>,
}

/// A message from a client, validated.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMessage {
    Hello {
        entity_type: String,
        capabilities: Vec<String>,
    },
    Register(ProjectInfo),
    Ping,
    Pong,
    Goodbye {
        reason: Option<String>,
    },
    DbOperation {
        project_path: String,
        op: DbOperation,
    },
}

/// Error codes of IEP v1.0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    UnsupportedVersion,
    InvalidMessage,
    InvalidPath,
    RegistrationFailed,
    InternalError,
}

impl ErrorCode {
    /// The code as it goes on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnsupportedVersion => "unsupported_version",
            Self::InvalidMessage => "invalid_message",
            Self::InvalidPath => "invalid_path",
            Self::RegistrationFailed => "registration_failed",
            Self::InternalError => "internal_error",
        }
    }
}

/// Why a frame was refused: becomes an `error` message.
#[derive(Debug, Clone, PartialEq)]
pub struct ProtocolError {
    pub code: ErrorCode,
    pub message: String,
    pub details: Option<Value>,
}

impl ProtocolError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            details: None,
        }
    }

    pub(crate) fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidMessage, message)
    }
}

/// A message from the server.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerMessage {
    Welcome { session_id: String },
    Registered { success: bool },
    Ping,
    Pong,
    Goodbye { reason: Option<String> },
    Error(ProtocolError),
}

impl ServerMessage {
    fn kind_and_payload(&self) -> (&'static str, Value) {
        match self {
            Self::Welcome { session_id } => (
                "welcome",
                json!({"session_id": session_id, "capabilities": []}),
            ),
            Self::Registered { success } => ("registered", json!({"success": success})),
            Self::Ping => ("ping", json!({})),
            Self::Pong => ("pong", json!({})),
            Self::Goodbye { reason } => match reason {
                Some(r) => ("goodbye", json!({"reason": r})),
                None => ("goodbye", json!({})),
            },
            Self::Error(e) => {
                let mut p = json!({"code": e.code, "message": e.message});
                if let Some(d) = &e.details {
                    p["details"] = d.clone();
                }
                ("error", p)
            }
        }
    }

    /// The JSON text of this message in its envelope, stamped now.
    pub(crate) fn to_json(&self) -> String {
        self.to_json_at(&crate::now_rfc3339())
    }

    pub(crate) fn to_json_at(&self, timestamp: &str) -> String {
        let (kind, payload) = self.kind_and_payload();
        json!({
            "version": PROTOCOL_VERSION,
            "type": kind,
            "payload": payload,
            "timestamp": timestamp,
        })
        .to_string()
    }
}

fn field<'a>(obj: &'a Map<String, Value>, name: &str) -> Result<&'a Value, ProtocolError> {
    obj.get(name)
        .ok_or_else(|| ProtocolError::invalid(format!("missing field `{name}`")))
}

fn string_field<'a>(obj: &'a Map<String, Value>, name: &str) -> Result<&'a str, ProtocolError> {
    field(obj, name)?
        .as_str()
        .ok_or_else(|| ProtocolError::invalid(format!("field `{name}` must be a string")))
}

fn payload_as<T: serde::de::DeserializeOwned>(
    kind: &str,
    payload: &Value,
) -> Result<T, ProtocolError> {
    T::deserialize(payload)
        .map_err(|e| ProtocolError::invalid(format!("invalid `{kind}` payload: {e}")))
}

/// Parses one text frame. Every failure is an [`ProtocolError`] to send back; none is fatal.
pub fn parse(text: &str) -> Result<ClientMessage, ProtocolError> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| ProtocolError::invalid(format!("malformed JSON: {e}")))?;
    let Value::Object(obj) = value else {
        return Err(ProtocolError::invalid("a message must be a JSON object"));
    };

    // Version first: a future major may change everything else.
    let version = string_field(&obj, "version")?;
    let major = version.split('.').next().unwrap_or_default();
    if major.is_empty() || !major.chars().all(|c| c.is_ascii_digit()) {
        return Err(ProtocolError::invalid(format!(
            "field `version` must look like \"1.0\", got {version:?}"
        )));
    }
    if major != PROTOCOL_MAJOR {
        return Err(ProtocolError::new(
            ErrorCode::UnsupportedVersion,
            format!(
                "protocol version {version} is not supported; this server speaks {PROTOCOL_VERSION}"
            ),
        )
        .with_details(json!({"supported": PROTOCOL_VERSION, "received": version})));
    }

    let kind = string_field(&obj, "type")?;
    let payload = field(&obj, "payload")?;
    if !payload.is_object() {
        return Err(ProtocolError::invalid("field `payload` must be an object"));
    }
    let timestamp = string_field(&obj, "timestamp")?;
    if chrono::DateTime::parse_from_rfc3339(timestamp).is_err() {
        return Err(ProtocolError::invalid(format!(
            "field `timestamp` must be RFC 3339, got {timestamp:?}"
        )));
    }

    match kind {
        "hello" => {
            let p: HelloPayload = payload_as(kind, payload)?;
            Ok(ClientMessage::Hello {
                entity_type: p.entity_type,
                capabilities: p.capabilities.unwrap_or_default(),
            })
        }
        "register" => {
            let info = match payload_as::<RegisterPayload>(kind, payload) {
                Ok(RegisterPayload::Wrapped { project } | RegisterPayload::Flat(project)) => {
                    project
                }
                // untagged enums hide the real cause; ask the flat form for it
                Err(_) => payload_as::<ProjectInfo>(kind, payload)?,
            };
            Ok(ClientMessage::Register(info))
        }
        "ping" => Ok(ClientMessage::Ping),
        "pong" => Ok(ClientMessage::Pong),
        "goodbye" => {
            let p: GoodbyePayload = payload_as(kind, payload)?;
            Ok(ClientMessage::Goodbye { reason: p.reason })
        }
        "db_operation" => {
            let p: DbOperationPayload = payload_as(kind, payload)?;
            Ok(ClientMessage::DbOperation {
                project_path: p.project_path,
                op: p.op,
            })
        }
        "welcome" | "registered" | "error" => Err(ProtocolError::invalid(format!(
            "`{kind}` is sent by the server, not by clients"
        ))),
        other => Err(
            ProtocolError::invalid(format!("unknown message type {other:?}")).with_details(json!({
                "known_types": ["hello", "register", "ping", "pong", "goodbye", "db_operation"]
            })),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TS: &str = "2026-11-22T03:56:58.467791475+00:00";

    fn env(kind: &str, payload: Value) -> String {
        json!({"version":"1.0","type":kind,"payload":payload,"timestamp":TS}).to_string()
    }

    fn code_of(text: &str) -> ErrorCode {
        parse(text).unwrap_err().code
    }

    #[test]
    fn server_messages_have_the_exact_wire_shape() {
        let cases = [
            (
                ServerMessage::Welcome {
                    session_id: "s1".into(),
                },
                json!({"version":"1.0","type":"welcome","payload":{"session_id":"s1","capabilities":[]},"timestamp":TS}),
            ),
            (
                ServerMessage::Registered { success: false },
                json!({"version":"1.0","type":"registered","payload":{"success":false},"timestamp":TS}),
            ),
            (
                ServerMessage::Ping,
                json!({"version":"1.0","type":"ping","payload":{},"timestamp":TS}),
            ),
            (
                ServerMessage::Goodbye {
                    reason: Some("superseded".into()),
                },
                json!({"version":"1.0","type":"goodbye","payload":{"reason":"superseded"},"timestamp":TS}),
            ),
            (
                ServerMessage::Error(ProtocolError::new(ErrorCode::InvalidPath, "nope")),
                json!({"version":"1.0","type":"error","payload":{"code":"invalid_path","message":"nope"},"timestamp":TS}),
            ),
        ];
        for (msg, want) in cases {
            let got: Value = serde_json::from_str(&msg.to_json_at(TS)).unwrap();
            assert_eq!(got, want);
        }
    }

    #[test]
    fn the_real_clients_messages_parse() {
        let hello = env(
            "hello",
            json!({"entity_type":"mcp_server","capabilities":[]}),
        );
        assert_eq!(
            parse(&hello).unwrap(),
            ClientMessage::Hello {
                entity_type: "mcp_server".into(),
                capabilities: vec![]
            }
        );
        let info = json!({"path":"/home/u/p","name":"p","db_path":"/home/u/p/.intent-engine/project.db","agent":"claude-code","mcp_connected":true,"is_online":true});
        let flat = parse(&env("register", info.clone())).unwrap();
        let wrapped = parse(&env("register", json!({ "project": info }))).unwrap();
        assert_eq!(flat, wrapped);
        let ClientMessage::Register(p) = flat else {
            panic!("not a register")
        };
        assert_eq!(p.agent.as_deref(), Some("claude-code"));

        let op = parse(&env(
            "db_operation",
            json!({"operation":"update","entity":"task","affected_ids":[3],"data":{"name":"x"},"project_path":"/home/u/p"}),
        ))
        .unwrap();
        assert!(
            matches!(op, ClientMessage::DbOperation { ref project_path, .. } if project_path == "/home/u/p")
        );
        assert_eq!(parse(&env("pong", json!({}))).unwrap(), ClientMessage::Pong);
        assert_eq!(
            parse(&env("goodbye", json!({}))).unwrap(),
            ClientMessage::Goodbye { reason: None }
        );
    }

    #[test]
    fn bad_frames_get_the_right_code() {
        assert_eq!(code_of("{not json"), ErrorCode::InvalidMessage);
        assert_eq!(code_of("[1,2]"), ErrorCode::InvalidMessage);
        assert_eq!(
            code_of(r#"{"version":"1.0","type":"hello","timestamp":"2026-01-01T00:00:00Z"}"#),
            ErrorCode::InvalidMessage
        );
        assert_eq!(
            code_of(&env("hello", json!({})).replace("1.0", "2.0")),
            ErrorCode::UnsupportedVersion
        );
        // a foreign major is reported even when the rest of the envelope is unknown to us
        assert_eq!(
            code_of(r#"{"version":"3.1","kind":"x"}"#),
            ErrorCode::UnsupportedVersion
        );
        assert_eq!(
            code_of(&env("frobnicate", json!({}))),
            ErrorCode::InvalidMessage
        );
        assert_eq!(
            code_of(&env("welcome", json!({}))),
            ErrorCode::InvalidMessage
        );
        assert_eq!(
            code_of(&env("register", json!({"path":"/x"}))),
            ErrorCode::InvalidMessage
        );
        assert_eq!(
            code_of(&env(
                "db_operation",
                json!({"operation":42,"entity":"task","affected_ids":[],"project_path":"/x"})
            )),
            ErrorCode::InvalidMessage
        );
        assert_eq!(
            code_of(&env("ping", json!({})).replace(TS, "yesterday")),
            ErrorCode::InvalidMessage
        );
    }

    #[test]
    fn db_operation_takes_any_operation_and_entity_and_checks_the_shape() {
        let text = env(
            "db_operation",
            json!({"operation":"archive","entity":"workspace","affected_ids":[1,2],"project_path":"/p"}),
        );
        let ClientMessage::DbOperation { project_path, op } = parse(&text).unwrap() else {
            panic!("not a db_operation")
        };
        assert_eq!(project_path, "/p");
        assert_eq!(
            serde_json::to_value(&op).unwrap(),
            json!({"operation":"archive","entity":"workspace","affected_ids":[1,2]}),
            "recorded as sent"
        );
        for bad in [
            json!({"operation":1,"entity":"task","affected_ids":[],"project_path":"/p"}),
            json!({"operation":"update","entity":null,"affected_ids":[],"project_path":"/p"}),
            json!({"entity":"task","affected_ids":[],"project_path":"/p"}),
            json!({"operation":"update","affected_ids":[],"project_path":"/p"}),
            json!({"operation":"update","entity":"task","affected_ids":[1.5],"project_path":"/p"}),
            json!({"operation":"update","entity":"task","affected_ids":{},"project_path":"/p"}),
            json!({"operation":"update","entity":"task","affected_ids":[],"project_path":3}),
        ] {
            let e = parse(&env("db_operation", bad.clone())).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidMessage, "{bad}");
        }
    }

    #[test]
    fn error_codes_name_themselves_as_serde_does() {
        for code in [
            ErrorCode::UnsupportedVersion,
            ErrorCode::InvalidMessage,
            ErrorCode::InvalidPath,
            ErrorCode::RegistrationFailed,
            ErrorCode::InternalError,
        ] {
            assert_eq!(serde_json::to_value(code).unwrap(), json!(code.as_str()));
        }
    }

    #[test]
    fn minor_versions_are_accepted() {
        let text = env("ping", json!({})).replace("\"1.0\"", "\"1.7\"");
        assert_eq!(parse(&text).unwrap(), ClientMessage::Ping);
    }

    #[test]
    fn errors_for_missing_register_fields_name_the_field() {
        let e = parse(&env("register", json!({"path":"/x","name":"x"}))).unwrap_err();
        assert!(e.message.contains("db_path"), "{}", e.message);
    }
}
