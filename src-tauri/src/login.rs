//! OAuth logins to remote servers from the desktop: the tray's Servers ▸ <server> ▸ Log In… and
//! Log Out, the dashboard's Log in button (the `log_in` command) and the needs-login
//! notification's action all come here. The gateway builds the authorization URL, the person's
//! browser opens it (`$BROWSER` honoured, as by `xdg-open`), and the gateway's own callback
//! completes the login; the outcome is one notification. Every wait is bounded.

use std::time::Duration;

use tauri::{AppHandle, Manager as _};

use crate::Shell;

/// How long a login from the desktop waits for the browser to come back.
const LOGIN_WAIT: Duration = Duration::from_secs(300);

/// Starts a login to `server` and reports how it ended; returns at once.
pub(crate) fn log_in(app: &AppHandle, server: &str) {
    let shell = app.state::<Shell>().inner().clone();
    let Some(g) = shell.gateway.clone() else {
        return;
    };
    let Some(up) = g.mcp.upstream(server) else {
        return;
    };
    let (app, server) = (app.clone(), server.to_owned());
    tauri::async_runtime::spawn(async move {
        let subject = format!("login:{server}");
        let url = match up.login(g.port, Some(LOGIN_WAIT)).await {
            Ok(url) => url,
            Err(e) => {
                tracing::warn!(%server, error = %e, "login could not start");
                shell
                    .notifier
                    .notify(&subject, &format!("Login to '{server}' failed"), &e);
                return;
            }
        };
        if let Err(e) = switchboard_core::browser::open(&url) {
            tracing::warn!(%server, error = %e, "no browser for the login");
            shell.notifier.notify(
                &subject,
                &format!("Open this address to log in to '{server}'"),
                &url,
            );
        }
        let outcome = up.wait_logged_in(LOGIN_WAIT).await;
        // the login's own notification may have been the last one on this subject
        shell.notifier.forget(&subject);
        match outcome {
            Ok(()) => shell.notifier.notify(
                &subject,
                &format!("Logged in to '{server}'"),
                "The server is running.",
            ),
            Err(e) => shell
                .notifier
                .notify(&subject, &format!("Login to '{server}' failed"), &e),
        }
        crate::tray::refresh(&app);
    });
}

/// Forgets `server`'s login (its tokens revoked and deleted); returns at once.
pub(crate) fn log_out(app: &AppHandle, server: &str) {
    let shell = app.state::<Shell>().inner().clone();
    let Some(up) = shell.gateway.as_ref().and_then(|g| g.mcp.upstream(server)) else {
        return;
    };
    let (app, server) = (app.clone(), server.to_owned());
    tauri::async_runtime::spawn(async move {
        if let Err(e) = up.logout().await {
            tracing::warn!(%server, error = %e, "logout failed");
            shell.notifier.notify(
                &format!("logout:{server}"),
                &format!("Logging out of '{server}' failed"),
                &e,
            );
        }
        crate::tray::refresh(&app);
    });
}
