//! Pair New Client…: the tray issues a one-time code and shows it, with its countdown, in a
//! small window of its own and in a notification. The window asks the shell for the code and
//! its state (`pair_code`), so a window that opens after the code was issued misses nothing,
//! and it is told (`pair-code` event) when the tray or its own button issues a new one.

use serde::Serialize;
use switchboard_core::auth::CodeState;
use tauri::{AppHandle, Manager};

use crate::host::WindowSpec;

use crate::Shell;

/// The pairing window's label (its capability and the page's choice of view depend on it).
pub(crate) const WINDOW: &str = "pair";
const TITLE: &str = "Pair New Client";

/// The code the pairing window shows, and where it stands.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PairCodeView {
    pub(crate) code: String,
    /// Where a client trades it for a token.
    pub(crate) pair_url: String,
    /// A code's whole lifetime, for the countdown's bar.
    pub(crate) ttl_s: u64,
    #[serde(flatten)]
    pub(crate) state: CodeState,
}

/// Issues a code, remembers it as the one on show, notifies, and shows it in the window.
pub(crate) fn pair_new_client(app: &AppHandle) -> Result<String, String> {
    let shell = app.state::<Shell>().inner().clone();
    let g = shell
        .gateway
        .as_ref()
        .ok_or_else(|| "the gateway is not running".to_string())?;
    let code = g.auth.issue_code(None).map_err(|e| e.to_string())?;
    let ttl = g.auth.roles().code_ttl.as_secs();
    *shell.pair_code.lock().expect("pair code lock") = Some(code.clone());
    shell.notifier.notify(
        &format!("pair:{code}"),
        &format!("Pairing code {code}"),
        &format!(
            "Valid {ttl} s. In the client: switchboard connect --pair, or POST {}/pair with this code.",
            g.url
        ),
    );
    // the code is in the notification too: a window that cannot open is only logged
    let _ = shell.windows.open(window());
    shell
        .windows
        .emit(WINDOW, "pair-code", serde_json::Value::String(code.clone()));
    Ok(code)
}

/// The code on show, if any, with its state now.
pub(crate) fn current(shell: &Shell) -> Option<PairCodeView> {
    let g = shell.gateway.as_ref()?;
    let code = shell.pair_code.lock().expect("pair code lock").clone()?;
    Some(PairCodeView {
        state: g.auth.code_state(&code),
        pair_url: format!("{}/pair", g.url),
        ttl_s: g.auth.roles().code_ttl.as_secs(),
        code,
    })
}

/// The pairing window, in the window host.
fn window() -> WindowSpec {
    WindowSpec {
        label: WINDOW.into(),
        title: TITLE.into(),
        width: 380.0,
        height: 280.0,
        fixed: true,
        on_top: true,
        center: true,
    }
}
