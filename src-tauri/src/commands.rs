//! The commands the pages call (the backend seam), run in the tray process: the pages live in
//! the window host ([`crate::host`]), which forwards each command here and hands the page the
//! answer. The dashboard talks to the gateway's HTTP/WebSocket API in the app exactly as in a
//! paired browser; the one thing the app gives it is its credential. Errors are a serializable
//! enum, never strings.

use serde::Serialize;
use serde_json::{Value, json};
use tauri::{AppHandle, Manager as _};

use crate::Shell;
use crate::windows::HostCall;

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
    #[error("no command {0:?}")]
    Unknown(String),
    #[error("command {cmd:?} needs a string {arg:?}")]
    BadArgs { cmd: String, arg: &'static str },
}

fn gateway(shell: &Shell) -> Result<&crate::GatewayHandles, CommandError> {
    shell
        .gateway
        .as_ref()
        .ok_or_else(|| CommandError::GatewayDown(shell.startup_error.clone().unwrap_or_default()))
}

/// Answers the pages' commands until the window host side goes (with the app).
pub(crate) async fn serve(app: AppHandle, mut calls: tokio::sync::mpsc::Receiver<HostCall>) {
    while let Some(call) = calls.recv().await {
        let result = run(&app, &call.cmd, &call.args)
            .map_err(|e| serde_json::to_value(e).expect("an error serializes"));
        call.answer(result);
    }
}

/// Runs page command `cmd` with `args`.
pub(crate) fn run(app: &AppHandle, cmd: &str, args: &Value) -> Result<Value, CommandError> {
    let shell = app.state::<Shell>().inner().clone();
    let arg = |name: &'static str| {
        args.get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| CommandError::BadArgs {
                cmd: cmd.to_owned(),
                arg: name,
            })
    };
    match cmd {
        "dashboard_credential" => dashboard_credential(&shell),
        "pair_code" => Ok(serde_json::to_value(pair_code(&shell)?).expect("a view serializes")),
        "new_pair_code" => new_pair_code(app).map(|()| Value::Null),
        "log_in" => log_in(app, &shell, arg("server")?).map(|()| Value::Null),
        "open_elicitation_url" => open_elicitation_url(&shell, arg("id")?).map(|()| Value::Null),
        other => Err(CommandError::Unknown(other.to_owned())),
    }
}

/// The dashboard's credential: the gateway's URL and a token the gateway keeps in memory only.
/// The webview holds it in memory too (never in local storage) and talks to the gateway's
/// HTTP/WebSocket API with it, exactly like the dashboard in a paired browser.
fn dashboard_credential(shell: &Shell) -> Result<Value, CommandError> {
    let g = gateway(shell)?;
    Ok(json!({ "url": g.url, "token": g.webview_token }))
}

/// The pairing code the small window shows (the tray's Pair New Client…), with its state:
/// pending with the milliseconds left, used (by which client), or gone. `null` if none yet.
fn pair_code(shell: &Shell) -> Result<Option<crate::pairing::PairCodeView>, CommandError> {
    gateway(shell)?;
    Ok(crate::pairing::current(shell))
}

/// The dashboard's Log in button for a remote server: the login starts here, the person's
/// browser opens the authorization page, and a notification tells how it ended.
fn log_in(app: &AppHandle, shell: &Shell, server: String) -> Result<(), CommandError> {
    let g = gateway(shell)?;
    if g.mcp.upstream(&server).is_none_or(|up| !up.uses_oauth()) {
        return Err(CommandError::NoLogin(server));
    }
    crate::login::log_in(app, &server);
    Ok(())
}

/// A new code for the pairing window (its "New code" button), as the tray's Pair does.
fn new_pair_code(app: &AppHandle) -> Result<(), CommandError> {
    crate::pairing::pair_new_client(app)
        .map(|_| ())
        .map_err(CommandError::Pairing)
}

/// Opens the page of pending URL-mode elicitation `id` with the system opener: called by its
/// window once the person agreed. The URL is the one the server sent, never the page's.
fn open_elicitation_url(shell: &Shell, id: String) -> Result<(), CommandError> {
    let url = shell
        .elicit_urls
        .get(&id)
        .ok_or(CommandError::NoSuchElicitation(id))?;
    crate::elicit::open_url(&url).map_err(|e| CommandError::Open(e.to_string()))
}
