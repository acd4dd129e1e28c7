//! Tauri commands: the webview's side of the dashboard's backend seam. The dashboard talks to
//! the gateway's HTTP/WebSocket API in the app exactly as in a paired browser; the one thing
//! the app gives it is its credential. Errors are a serializable enum, never strings.

use serde::Serialize;
use serde_json::{Value, json};
use tauri::State;

use crate::Shell;

#[derive(Debug, thiserror::Error, Serialize)]
#[serde(tag = "kind", content = "message", rename_all = "snake_case")]
pub(crate) enum CommandError {
    #[error("the gateway is not running: {0}")]
    GatewayDown(String),
    #[error("no pairing code: {0}")]
    Pairing(String),
    #[error("server {0:?} is not a remote server that logs in with OAuth")]
    NoLogin(String),
    #[error("no pending URL elicitation {0:?}")]
    NoSuchElicitation(String),
    #[error("could not open the page: {0}")]
    Open(String),
}

fn gateway(shell: &Shell) -> Result<&crate::GatewayHandles, CommandError> {
    shell
        .gateway
        .as_ref()
        .ok_or_else(|| CommandError::GatewayDown(shell.startup_error.clone().unwrap_or_default()))
}

/// The dashboard's credential: the gateway's URL and a token the gateway keeps in memory only.
/// The webview holds it in memory too (never in local storage) and talks to the gateway's
/// HTTP/WebSocket API with it, exactly like the dashboard in a paired browser.
#[tauri::command]
pub(crate) fn dashboard_credential(shell: State<'_, Shell>) -> Result<Value, CommandError> {
    let g = gateway(&shell)?;
    Ok(json!({ "url": g.url, "token": g.webview_token }))
}

/// The pairing code the small window shows (the tray's Pair New Client…), with its state:
/// pending with the milliseconds left, used (by which client), or gone. `null` if none yet.
#[tauri::command]
pub(crate) fn pair_code(
    shell: State<'_, Shell>,
) -> Result<Option<crate::pairing::PairCodeView>, CommandError> {
    gateway(&shell)?;
    Ok(crate::pairing::current(&shell))
}

/// The dashboard's Log in button for a remote server: the login starts here, the person's
/// browser opens the authorization page, and a notification tells how it ended.
#[tauri::command]
pub(crate) fn log_in(
    app: tauri::AppHandle,
    shell: State<'_, Shell>,
    server: String,
) -> Result<(), CommandError> {
    let g = gateway(&shell)?;
    if g.mcp.upstream(&server).is_none_or(|up| !up.uses_oauth()) {
        return Err(CommandError::NoLogin(server));
    }
    crate::login::log_in(&app, &server);
    Ok(())
}

/// A new code for the pairing window (its "New code" button), as the tray's Pair does.
#[tauri::command]
pub(crate) fn new_pair_code(app: tauri::AppHandle) -> Result<(), CommandError> {
    crate::pairing::pair_new_client(&app)
        .map(|_| ())
        .map_err(CommandError::Pairing)
}

/// Opens the page of pending URL-mode elicitation `id` with the system opener: called by its
/// window once the person agreed. The URL is the one the server sent, never the page's.
#[tauri::command]
pub(crate) fn open_elicitation_url(
    shell: State<'_, Shell>,
    id: String,
) -> Result<(), CommandError> {
    let url = shell
        .elicit_urls
        .get(&id)
        .ok_or(CommandError::NoSuchElicitation(id))?;
    crate::elicit::open_url(&url).map_err(|e| CommandError::Open(e.to_string()))
}
