//! The HTTP vocabulary every handler shares: [`ApiError`] (`{"error":{"code","message"}}` with
//! a status) and the bearer token of a request. A leaf: it knows no handler and no state, so
//! domain modules (registration, pairing) answer with it without depending on the router.

use axum::Json;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An HTTP error with a stable code: `{"error":{"code","message"}}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub(crate) fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }

    /// 426 with `Upgrade: websocket`: a plain request to a WebSocket route.
    pub(crate) fn upgrade_required(message: &'static str) -> Response {
        let mut r =
            Self::new(StatusCode::UPGRADE_REQUIRED, "upgrade_required", message).into_response();
        r.headers_mut().insert(
            header::UPGRADE,
            axum::http::HeaderValue::from_static("websocket"),
        );
        r
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}

/// The bearer token of a request: `Authorization: Bearer`, else the WebSocket subprotocol
/// `bearer.<token>` (browsers cannot set headers on WebSockets).
pub(crate) fn bearer(headers: &HeaderMap) -> Option<String> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        && let Some(t) = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
    {
        return Some(t.trim().to_owned());
    }
    headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split(',')
                .map(str::trim)
                .find_map(|p| p.strip_prefix("bearer."))
                .map(str::to_owned)
        })
}
