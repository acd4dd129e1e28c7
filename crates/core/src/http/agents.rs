//! The dashboard's agents: which are installed and connected (`GET /api/agents`), and its
//! Connect, Disconnect, Adopt and Undo buttons (`POST /api/agents/{id}/{action}`): the
//! operations of [`setup::agents`](crate::setup::agents), which the desktop tray runs too,
//! answered over HTTP.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::error::ApiError;
use super::state::AppState;
use crate::setup::agents::{Action, ActionRequest, AgentError, Listing};
use crate::setup::{Client, SetupError};

impl IntoResponse for AgentError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            Self::Unknown(_) | Self::Action(_) => (StatusCode::NOT_FOUND, "no_such_agent"),
            Self::NoHome => (StatusCode::CONFLICT, "no_home"),
            Self::NoConfigFile => (StatusCode::CONFLICT, "no_config_file"),
            Self::NoBridge => (StatusCode::CONFLICT, "no_bridge"),
            Self::Setup(SetupError::Pairing(_)) => (StatusCode::SERVICE_UNAVAILABLE, "pairing"),
            Self::Setup(_) => (StatusCode::UNPROCESSABLE_ENTITY, "setup_failed"),
        };
        ApiError::new(status, code, self.to_string()).into_response()
    }
}

/// `GET /api/agents`: every agent Switchboard can connect, installed or not.
pub(crate) async fn list(State(state): State<AppState>) -> Result<axum::Json<Listing>, AgentError> {
    state.0.agents().list().await.map(axum::Json)
}

/// `POST /api/agents/{id}/connect|disconnect|adopt|undo`, body `{scope?, name?, role?}`.
pub(crate) async fn action(
    State(state): State<AppState>,
    Path((id, action)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<axum::Json<Value>, Response> {
    let req: ActionRequest = if body.iter().all(u8::is_ascii_whitespace) {
        ActionRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("the body must be JSON {{scope?, name?, role?}}: {e}"),
            )
            .into_response()
        })?
    };
    let client = Client::from_id(&id).ok_or_else(|| AgentError::Unknown(id).into_response())?;
    let action =
        Action::parse(&action).ok_or_else(|| AgentError::Action(action).into_response())?;
    state
        .0
        .agents()
        .act(client, action, req)
        .await
        .map(axum::Json)
        .map_err(IntoResponse::into_response)
}
