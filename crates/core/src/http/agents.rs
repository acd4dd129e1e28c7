//! The dashboard's agents: which are installed and connected (`GET /api/agents`), and its
//! Connect, Disconnect, Adopt and Undo buttons (`POST /api/agents/{id}/{action}`): the same
//! operations as `switchboard setup` and `switchboard adopt`, run by the gateway itself
//! (it pairs in-process and keeps adopted secrets in its own secret store).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::ApiError;
use super::state::{AppState, Hub};
use crate::setup::{self, Client, Options, Pairer, Places, Scope, SetupError, adopt};

/// A setup that could not happen, as the dashboard shows it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AgentError {
    #[error("no agent {0:?}")]
    Unknown(String),
    #[error("unknown action {0:?}; use connect, disconnect, adopt or undo")]
    Action(String),
    #[error("no home directory to find agents in")]
    NoHome,
    #[error(
        "this gateway runs without a config file, so it cannot adopt servers; start it with \
         --config <file>"
    )]
    NoConfigFile,
    #[error(transparent)]
    Setup(#[from] SetupError),
}

impl IntoResponse for AgentError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            Self::Unknown(_) | Self::Action(_) => (StatusCode::NOT_FOUND, "no_such_agent"),
            Self::NoHome => (StatusCode::CONFLICT, "no_home"),
            Self::NoConfigFile => (StatusCode::CONFLICT, "no_config_file"),
            Self::Setup(SetupError::Pairing(_)) => (StatusCode::SERVICE_UNAVAILABLE, "pairing"),
            Self::Setup(_) => (StatusCode::UNPROCESSABLE_ENTITY, "setup_failed"),
        };
        ApiError::new(status, code, self.to_string()).into_response()
    }
}

fn places(hub: &Hub) -> Result<Places, AgentError> {
    match &hub.agents_home {
        Some(home) => Ok(Places::under(home)),
        None => Places::of_this_user().ok_or(AgentError::NoHome),
    }
}

/// `GET /api/agents`: every agent Switchboard can connect, installed or not.
pub(crate) async fn list(State(state): State<AppState>) -> Result<axum::Json<Value>, AgentError> {
    let hub = &state.0;
    let pairer = Pairer::Local(hub.pairing());
    let url = pairer.url()?;
    let agents = setup::detect(&places(hub)?, &pairer, &url).await;
    Ok(axum::Json(json!({"url": url, "agents": agents})))
}

/// The optional body of an action.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ActionRequest {
    #[serde(default)]
    scope: Scope,
    name: Option<String>,
    role: Option<String>,
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
    run(&state.0, &id, &action, req)
        .await
        .map(axum::Json)
        .map_err(IntoResponse::into_response)
}

async fn run(hub: &Hub, id: &str, action: &str, req: ActionRequest) -> Result<Value, AgentError> {
    let client = Client::from_id(id).ok_or_else(|| AgentError::Unknown(id.to_owned()))?;
    let places = places(hub)?;
    let pairer = Pairer::Local(hub.pairing());
    let mut opts = Options {
        scope: req.scope,
        role: req.role,
        ..Options::default()
    };
    if let Some(name) = req.name {
        opts.entry = name;
    }
    let target = || -> Result<adopt::Target, AgentError> {
        Ok(adopt::Target {
            config: hub.config_path.clone().ok_or(AgentError::NoConfigFile)?,
            secrets: hub.mcp.secrets(),
            state_dir: hub.data_dir.clone(),
        })
    };
    let value = match action {
        "connect" => {
            let r = setup::connect(&places, client, &opts, &pairer).await?;
            json!({"report": r, "lines": r.lines(&opts.entry)})
        }
        "disconnect" => {
            let r = setup::disconnect(&places, client, &opts, &pairer).await?;
            json!({"report": r, "lines": r.lines(&opts.entry)})
        }
        "adopt" => {
            let _one_at_a_time = hub.config_edit.lock().await;
            json!({"adopted": adopt::adopt(&places, client, &opts, &pairer, &target()?).await?})
        }
        "undo" => {
            let _one_at_a_time = hub.config_edit.lock().await;
            json!({"undone": adopt::undo(client, &opts, &pairer, &target()?).await?})
        }
        other => return Err(AgentError::Action(other.to_owned())),
    };
    Ok(value)
}
