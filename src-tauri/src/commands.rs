//! Tauri commands: the dashboard's backend seam in the app (the browser version of the
//! dashboard uses the HTTP API instead). Errors are a serializable enum, never strings.

use serde::Serialize;
use serde_json::{Value, json};
use tauri::State;

use crate::Shell;

#[derive(Debug, thiserror::Error, Serialize)]
#[serde(tag = "kind", content = "message", rename_all = "snake_case")]
pub(crate) enum CommandError {
    #[error("the gateway is not running: {0}")]
    GatewayDown(String),
    #[error("{0}")]
    Pairing(String),
    #[error("{0}")]
    TokenStore(String),
}

fn gateway(shell: &Shell) -> Result<&crate::GatewayHandles, CommandError> {
    shell
        .gateway
        .as_ref()
        .ok_or_else(|| CommandError::GatewayDown(shell.startup_error.clone().unwrap_or_default()))
}

/// Whether the gateway runs, and where.
#[tauri::command]
pub(crate) fn status(shell: State<'_, Shell>) -> Value {
    json!({
        "running": shell.gateway.is_some(),
        "url": shell.gateway.as_ref().map(|g| g.url.clone()),
        "error": shell.startup_error,
    })
}

/// The dashboard's credential: the gateway's URL and a token the gateway keeps in memory only.
/// The webview holds it in memory too (never in local storage) and talks to the gateway's
/// HTTP/WebSocket API with it, exactly like the dashboard in a paired browser.
#[tauri::command]
pub(crate) fn dashboard_credential(shell: State<'_, Shell>) -> Result<Value, CommandError> {
    let g = gateway(&shell)?;
    Ok(json!({ "url": g.url, "token": g.webview_token }))
}

/// Servers, projects and clients, as the dashboard shows them.
#[tauri::command]
pub(crate) fn snapshot(shell: State<'_, Shell>) -> Result<Value, CommandError> {
    let g = gateway(&shell)?;
    Ok(json!({
        "health": g.mcp.health(),
        "projects": g.registry.projects(),
        "clients": g.auth.clients(),
    }))
}

/// A new pairing code, shown to the person who will type it into the client.
#[tauri::command]
pub(crate) fn pair_code(
    shell: State<'_, Shell>,
    role: Option<String>,
) -> Result<Value, CommandError> {
    let g = gateway(&shell)?;
    let code = g
        .auth
        .issue_code(role)
        .map_err(|e| CommandError::Pairing(e.to_string()))?;
    Ok(json!({
        "code": code,
        "expires_in_s": g.auth.roles().code_ttl.as_secs(),
        "pair_url": format!("{}/pair", g.url),
    }))
}

/// Revokes a client: its token stops working, its sessions close.
#[tauri::command]
pub(crate) async fn unpair(shell: State<'_, Shell>, name: String) -> Result<bool, CommandError> {
    let g = gateway(&shell)?.clone();
    g.unpairer
        .unpair(&name)
        .await
        .map_err(|e| CommandError::TokenStore(e.to_string()))
}
