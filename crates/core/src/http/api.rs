//! The dashboard's API (behind the token): calls with their payloads, per-tool statistics,
//! server actions (restart, enable, disable, add, import), servers' recent log messages,
//! pairing codes for a signed-in page, clients with their open sessions, and the elicitations
//! Switchboard answers itself.
//!
//! Server changes are written to the config file (comments kept) and applied at once; the
//! config watcher sees the same file and has nothing left to do.

use std::path::PathBuf;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::error::ApiError;
use super::state::{AppState, Hub};
use crate::calls::Filter;
use crate::config::ServerConfig;

/// Why a dashboard request failed; each maps to a status and a stable code.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DashboardError {
    #[error("{0}")]
    BadRequest(String),
    #[error("no server named {0:?}")]
    NoSuchServer(String),
    #[error("no call {0:?} (only the last {max} finished calls are kept)", max = crate::calls::RECENT_MAX)]
    NoSuchCall(String),
    #[error(
        "this gateway runs without a config file, so servers cannot be changed from here; start \
         it with --config <file>"
    )]
    NoConfigFile,
    #[error("the config file {path} cannot be changed: {message}")]
    Config { path: PathBuf, message: String },
    #[error("{0}")]
    Import(#[from] crate::import::ImportError),
    #[error(transparent)]
    Pair(#[from] crate::auth::PairError),
    #[error(transparent)]
    Elicitation(#[from] crate::elicit::AnswerError),
}

impl IntoResponse for DashboardError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Self::NoSuchServer(_) => (StatusCode::NOT_FOUND, "no_such_server"),
            Self::NoSuchCall(_) => (StatusCode::NOT_FOUND, "no_such_call"),
            Self::NoConfigFile => (StatusCode::CONFLICT, "no_config_file"),
            Self::Config { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "config_rejected"),
            Self::Import(crate::import::ImportError::Read { .. }) => {
                (StatusCode::NOT_FOUND, "import_unreadable")
            }
            Self::Import(_) => (StatusCode::UNPROCESSABLE_ENTITY, "import_rejected"),
            Self::Pair(crate::auth::PairError::UnknownRole(_)) => {
                (StatusCode::BAD_REQUEST, "unknown_role")
            }
            Self::Pair(_) => (StatusCode::SERVICE_UNAVAILABLE, "pairing"),
            Self::Elicitation(crate::elicit::AnswerError::Unknown(_)) => {
                (StatusCode::NOT_FOUND, "no_such_elicitation")
            }
            Self::Elicitation(crate::elicit::AnswerError::Invalid(_)) => {
                (StatusCode::BAD_REQUEST, "invalid_answer")
            }
        };
        ApiError::new(status, code, self.to_string()).into_response()
    }
}

/// A JSON body whose rejection is our own error (400 with what was wrong).
#[derive(Debug)]
pub(crate) struct Body<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = DashboardError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Self(v)),
            Err(e) => Err(DashboardError::BadRequest(rejection_text(&e))),
        }
    }
}

fn rejection_text(e: &JsonRejection) -> String {
    format!("the body must be JSON: {}", e.body_text())
}

type Result<T, E = DashboardError> = std::result::Result<T, E>;

/// `GET /api/calls?server&tool&client&outcome&limit`: running calls and finished ones.
pub(crate) async fn calls(
    State(state): State<AppState>,
    Query(filter): Query<Filter>,
) -> axum::Json<Value> {
    let log = state.0.mcp.calls();
    axum::Json(json!({
        "in_flight": log.in_flight(),
        "recent": log.recent(&filter),
    }))
}

/// `GET /api/calls/{id}`: one call with its arguments and result.
pub(crate) async fn call(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<crate::calls::CallView>> {
    state
        .0
        .mcp
        .calls()
        .get(&id)
        .map(axum::Json)
        .ok_or(DashboardError::NoSuchCall(id))
}

/// `GET /api/telemetry`: latency percentiles and error rate per server and tool, and totals.
pub(crate) async fn telemetry(State(state): State<AppState>) -> axum::Json<Value> {
    let mcp = &state.0.mcp;
    let snapshot = mcp.telemetry().snapshot();
    axum::Json(json!({
        "window_calls": crate::calls::RECENT_MAX,
        "tools": mcp.calls().stats(),
        "totals": snapshot["totals"],
    }))
}

/// Reads the config file, changes it with `edit`, writes it and applies its servers.
async fn edit_config(hub: &Hub, edit: impl FnOnce(&str) -> Result<String, String>) -> Result<()> {
    let path = hub
        .config_path
        .clone()
        .ok_or(DashboardError::NoConfigFile)?;
    let _one_at_a_time = hub.config_edit.lock().await;
    let fail = |message: String| DashboardError::Config {
        path: path.clone(),
        message,
    };
    let existing = match tokio::fs::read_to_string(&path).await {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(fail(e.to_string())),
    };
    let text = edit(&existing).map_err(fail)?;
    let config = crate::Config::parse(&text).map_err(fail)?;
    let write_path = path.clone();
    let written = text.clone();
    tokio::task::spawn_blocking(move || crate::import::write_config(&write_path, &written))
        .await
        .map_err(|e| fail(e.to_string()))?
        .map_err(|e| fail(e.to_string()))?;
    hub.mcp.apply(&config.servers);
    Ok(())
}

/// `POST /api/servers/{name}/restart`, `/enable` and `/disable`. Enabling and disabling
/// are written to the config file, so they outlast a restart of the gateway.
pub(crate) async fn server_action(
    State(state): State<AppState>,
    Path((name, action)): Path<(String, String)>,
) -> Result<axum::Json<Value>> {
    let Some(up) = state.0.mcp.upstream(&name) else {
        return Err(DashboardError::NoSuchServer(name));
    };
    let enabled = match action.as_str() {
        "restart" => {
            up.restart();
            return Ok(axum::Json(json!({"server": name, "restarting": true})));
        }
        // The dashboard opens the URL; the login completes at `/oauth/callback`.
        "login" => {
            let url = up
                .login(state.0.guard.port(), None)
                .await
                .map_err(DashboardError::BadRequest)?;
            return Ok(axum::Json(
                json!({"server": name, "authorization_url": url}),
            ));
        }
        "logout" => {
            let had = up.logout().await.map_err(DashboardError::BadRequest)?;
            return Ok(axum::Json(json!({"server": name, "logged_out": had})));
        }
        "enable" => true,
        "disable" => false,
        other => {
            return Err(DashboardError::BadRequest(format!(
                "unknown action {other:?}; use restart, enable, disable, login or logout"
            )));
        }
    };
    edit_config(&state.0, |text| {
        crate::import::set_enabled(text, &name, enabled)
    })
    .await?;
    Ok(axum::Json(json!({"server": name, "enabled": enabled})))
}

/// `GET /oauth/callback`: the browser back from a server's authorization server. The login
/// whose `state` it brings finishes (tokens stored, the server started); any other is refused
/// with nothing stored.
pub(crate) async fn oauth_callback(
    State(state): State<AppState>,
    axum::extract::Query(query): axum::extract::Query<crate::upstream::OAuthCallback>,
) -> axum::response::Response {
    let owner = query.state.as_deref().and_then(|s| {
        state
            .0
            .mcp
            .upstreams()
            .into_iter()
            .find(|up| up.owns_login(s))
    });
    match owner {
        Some(up) => {
            let result = up.finish_login(&query).await;
            crate::upstream::callback_page(up.name(), result)
        }
        None => crate::upstream::callback_page(
            "a server",
            Err(
                "this login is unknown or over (a wrong or stale state); nothing was stored"
                    .to_owned(),
            ),
        ),
    }
}

/// The Add server form.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewServer {
    name: String,
    /// A stdio server's program, or
    #[serde(default)]
    command: String,
    /// a remote server's `http(s)://` or `ws(s)://` URL.
    url: Option<String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: std::collections::BTreeMap<String, String>,
    cwd: Option<PathBuf>,
    /// When it runs: `"always"` or `"on_demand"` (absent: the gateway's `default_start`).
    start: Option<String>,
}

/// `POST /api/servers`: adds a server (stdio or remote) to the config file and starts it.
pub(crate) async fn add_server(
    State(state): State<AppState>,
    Body(new): Body<NewServer>,
) -> Result<(StatusCode, axum::Json<Value>)> {
    let start = match new.start.as_deref().map(str::trim) {
        None => None,
        Some("always") => Some(crate::config::StartMode::Always),
        Some("on_demand") => Some(crate::config::StartMode::OnDemand),
        Some(other) => {
            return Err(DashboardError::BadRequest(format!(
                "start must be \"always\" or \"on_demand\", not {other:?}"
            )));
        }
    };
    let server = ServerConfig {
        name: new.name.trim().to_owned(),
        command: new.command.trim().to_owned(),
        url: new
            .url
            .map(|u| u.trim().to_owned())
            .filter(|u| !u.is_empty()),
        args: new.args,
        env: new.env,
        cwd: new.cwd,
        enabled: true,
        start,
        ..ServerConfig::default()
    };
    server.validate().map_err(DashboardError::BadRequest)?;
    let name = server.name.clone();
    edit_config(&state.0, |text| crate::import::add_server(text, &server)).await?;
    Ok((StatusCode::CREATED, axum::Json(json!({"added": name}))))
}

/// `GET /api/import`: the Claude Desktop and Cursor configs found on this machine.
pub(crate) async fn import_sources() -> axum::Json<Value> {
    let found: Vec<Value> = crate::import::known_client_configs()
        .into_iter()
        .map(|p| json!({"path": p}))
        .collect();
    axum::Json(json!({"sources": found}))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ImportRequest {
    path: PathBuf,
}

/// `POST /api/import {"path"}`: imports a Claude Desktop / Cursor config's servers.
pub(crate) async fn import(
    State(state): State<AppState>,
    Body(req): Body<ImportRequest>,
) -> Result<axum::Json<Value>> {
    let source = req.path;
    let entries = tokio::task::spawn_blocking(move || crate::import::read_client_config(&source))
        .await
        .map_err(|e| DashboardError::BadRequest(e.to_string()))??;
    let mut outcome = crate::import::Outcome::default();
    edit_config(&state.0, |text| {
        let (merged, o) = crate::import::merge(text, &entries)?;
        outcome = o;
        Ok(merged)
    })
    .await?;
    let skipped: Vec<Value> = outcome
        .skipped
        .iter()
        .map(|(name, why)| json!({"name": name, "reason": why}))
        .collect();
    Ok(axum::Json(
        json!({"added": outcome.added, "skipped": skipped}),
    ))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CodeRequest {
    role: Option<String>,
}

/// `POST /api/pair-codes {"role"?}`: a pairing code for the signed-in page to show.
pub(crate) async fn pair_code(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, axum::Json<Value>)> {
    let hub = &state.0;
    let req: CodeRequest = if body.iter().all(u8::is_ascii_whitespace) {
        CodeRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            DashboardError::BadRequest(format!("the body must be JSON {{\"role\"?}}: {e}"))
        })?
    };
    let role = req.role;
    let code = hub.auth.issue_code(role)?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({
            "code": code,
            "expires_in_s": hub.auth.roles().code_ttl.as_secs(),
            "pair_url": format!("http://127.0.0.1:{}/pair", hub.guard.port()),
        })),
    ))
}

/// `GET /api/clients`: paired clients with their open MCP sessions and what their role grants
/// (`grants`: its patterns, the tools it may call, the servers whose resources it may read).
pub(crate) async fn clients(State(state): State<AppState>) -> axum::Json<Value> {
    let hub = &state.0;
    let clients: Vec<Value> = hub
        .auth
        .clients()
        .into_iter()
        .map(|c| {
            let open: Vec<String> = hub.mcp.sessions().ids_of(&c.name);
            let mut v = serde_json::to_value(&c).unwrap_or_default();
            v["open_sessions"] = json!(open);
            v["grants"] = json!(hub.dispatcher.grants(&c.role));
            v
        })
        .collect();
    axum::Json(Value::Array(clients))
}

/// `GET /api/servers/{name}/logs`: the server's recent log messages, oldest first (new ones
/// come as `server_log` events).
pub(crate) async fn server_logs(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<axum::Json<Value>> {
    if state.0.mcp.upstream(&name).is_none() {
        return Err(DashboardError::NoSuchServer(name));
    }
    let logs = state.0.mcp.logbook().recent(&name);
    Ok(axum::Json(json!({"server": name, "logs": logs})))
}

/// `GET /api/elicitations`: the elicitations waiting for the person, oldest first.
pub(crate) async fn elicitations(State(state): State<AppState>) -> axum::Json<Value> {
    axum::Json(json!({"elicitations": state.0.mcp.elicitations().list()}))
}

/// `POST /api/elicitations/{id}` with `{"action": "accept", "content": {…}}`, `decline` or
/// `cancel`: answers it. Content that does not fit the form is refused (400 naming the field)
/// and the elicitation stays pending.
pub(crate) async fn answer_elicitation(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Body(answer): Body<crate::elicit::Answer>,
) -> Result<axum::Json<Value>> {
    state.0.mcp.elicitations().answer(&id, answer)?;
    Ok(axum::Json(json!({"answered": id})))
}
