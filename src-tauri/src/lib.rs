//! The desktop shell: Switchboard in the tray. It embeds the core gateway in-process through
//! the same `Gateway::open` + `run` that `switchboard serve` uses, turns hub events into tray
//! state and desktop notifications, and shows the dashboard window.
//!
//! # Layout
//! - `tray.rs`: the tray icon, its menu (ids are `tray/...` constants) and its state.
//! - `notify.rs`: desktop notifications, coalesced per subject and rate-capped.
//! - `pairing.rs`: Pair New Client…, the code and its countdown in a small window.
//! - `elicit.rs`: elicitations Switchboard answers itself, each in a small window of its own.
//! - `host.rs`: the window host, the child process the windows live in (`--window-host`).
//! - `windows.rs`: the tray's side of it: starting it, telling it what to show, ending it.
//! - `commands.rs`: the commands the pages call (the backend seam), forwarded by the host.
//! - `login.rs`: OAuth logins to remote servers (tray, dashboard, notification), in the browser.

mod commands;
mod elicit;
mod host;
mod login;
mod notify;
mod pairing;
mod tray;
mod windows;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchboard_core::{Config, Gateway};
use tauri::{Manager, RunEvent};
use tokio_util::sync::CancellationToken;

/// What the shell keeps about the embedded gateway.
#[derive(Debug, Clone)]
pub(crate) struct Shell {
    /// `None` when the gateway could not start (port taken, no keychain): the tray says so.
    pub(crate) gateway: Option<GatewayHandles>,
    pub(crate) startup_error: Option<String>,
    pub(crate) notifier: notify::Notifier,
    /// Resolves when the gateway has stopped (after Quit).
    pub(crate) stopped: Arc<Mutex<Option<tauri::async_runtime::JoinHandle<()>>>>,
    /// The pairing code the pairing window shows (the last one the tray issued).
    pub(crate) pair_code: Arc<Mutex<Option<String>>>,
    /// Pending URL-mode elicitations' URLs, what their windows may ask to open.
    pub(crate) elicit_urls: elicit::Urls,
    /// The windows, in the window host.
    pub(crate) windows: windows::Windows,
}

/// Cheap handles into the running gateway.
#[derive(Debug, Clone)]
pub(crate) struct GatewayHandles {
    pub(crate) url: String,
    /// The gateway's port: OAuth logins come back to its `/oauth/callback`.
    pub(crate) port: u16,
    pub(crate) auth: switchboard_core::auth::Auth,
    pub(crate) mcp: switchboard_core::mcp::McpGateway,
    pub(crate) unpairer: switchboard_core::server::Unpairer,
    pub(crate) bus: switchboard_core::EventBus,
    /// The agents' Connect and Disconnect (the tray's Pair menu), as the dashboard does them.
    pub(crate) agents: switchboard_core::setup::agents::Agents,
    pub(crate) shutdown: CancellationToken,
    /// The webview's own credential: held in memory by the gateway, never stored.
    pub(crate) webview_token: String,
}

/// The config the app runs with: the platform config file, or the files and address named by
/// `SWITCHBOARD_CONFIG`, `SWITCHBOARD_DATA_DIR` and `SWITCHBOARD_LISTEN` (used by the tests).
fn load_config() -> anyhow::Result<Config> {
    let path = std::env::var_os("SWITCHBOARD_CONFIG").map(std::path::PathBuf::from);
    let mut config = Config::load(path.as_deref())?;
    if let Some(dir) = std::env::var_os("SWITCHBOARD_DATA_DIR") {
        config.data_dir = Some(dir.into());
    }
    if let Ok(listen) = std::env::var("SWITCHBOARD_LISTEN") {
        config.listen = listen.parse()?;
    }
    Ok(config)
}

/// Opens and starts the embedded gateway.
fn start_gateway() -> anyhow::Result<(GatewayHandles, tauri::async_runtime::JoinHandle<()>)> {
    let config = load_config()?;
    let listener = std::net::TcpListener::bind(config.listen).map_err(|e| match e.kind() {
        std::io::ErrorKind::AddrInUse => anyhow::anyhow!(
            "{} is already used by another program, so Switchboard's gateway could not start. \
             Close that program, or choose another address in the config, then restart Switchboard.",
            config.listen
        ),
        _ => anyhow::anyhow!("cannot listen on {}: {e}", config.listen),
    })?;
    listener.set_nonblocking(true)?;
    let shutdown = CancellationToken::new();
    let (handles, gateway) = tauri::async_runtime::block_on(async {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let local = listener.local_addr()?;
        // `open`, not `open_with` a file fallback: the app insists on the OS keychain.
        let gateway = Gateway::open(&config, local, shutdown.clone()).await?;
        let handles = GatewayHandles {
            url: format!("http://{local}"),
            port: local.port(),
            auth: gateway.auth(),
            mcp: gateway.mcp(),
            unpairer: gateway.unpairer(),
            bus: gateway.bus(),
            agents: gateway.agents(),
            shutdown: shutdown.clone(),
            webview_token: gateway.auth().issue_ephemeral("switchboard-app"),
        };
        anyhow::Ok((handles, (gateway, listener)))
    })?;
    let (gateway, listener) = gateway;
    let task = tauri::async_runtime::spawn(async move {
        if let Err(e) = gateway.run(listener).await {
            tracing::error!(error = %e, "gateway stopped with an error");
        }
    });
    tracing::info!(url = %handles.url, "gateway running in the app");
    Ok((handles, task))
}

/// Why the gateway did not start, for the notification and the tray. Without a keychain it
/// says that the app insists on one (it does not fall back to a file as the headless
/// `switchboard serve` does), and what to do.
fn startup_message(e: &anyhow::Error) -> String {
    use switchboard_core::ServeError;
    use switchboard_core::auth::store::TokenStoreError;
    match e.downcast_ref::<ServeError>() {
        Some(ServeError::Tokens {
            error: TokenStoreError::Unavailable(cause),
            ..
        }) => no_keychain_message(cause),
        _ => format!("{e:#}"),
    }
}

fn no_keychain_message(cause: &str) -> String {
    format!(
        "The desktop app keeps paired clients' tokens in the OS keychain only, and there is \
         none: it does not fall back to a file. Start a keychain (gnome-keyring or KWallet on \
         Linux) and restart Switchboard; or set [auth] token_store = \"file\" in the config \
         to keep them in a 0600 file in the data dir. ({cause})"
    )
}

/// Quits: stops the gateway (children included, bounded) and then the app.
pub(crate) fn quit(app: &tauri::AppHandle) {
    let shell = app.state::<Shell>().inner().clone();
    let app = app.clone();
    tauri::async_runtime::spawn(async move {
        if let Some(g) = &shell.gateway {
            g.shutdown.cancel();
        }
        let task = shell.stopped.lock().expect("stopped lock").take();
        if let Some(task) = task {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
        app.exit(0);
    });
}

/// Shows the dashboard window, in the window host: the window exists only while it is open,
/// and the host only while a window is. Closing the last window ends the host and its WebKit
/// processes, so a closed window costs nothing; everything it shows lives in the gateway, and
/// a new window reads it afresh.
pub(crate) fn open_dashboard(app: &tauri::AppHandle) {
    let shell = app.state::<Shell>();
    if let Err(e) = shell.windows.open(windows::dashboard()) {
        shell
            .notifier
            .notify("window", "Switchboard could not open its dashboard", &e);
    }
}

/// The app's Tauri context (its config and embedded pages), for the tray and the window host.
fn context() -> tauri::Context {
    tauri::generate_context!()
}

/// The argument that makes `switchboard-app` the window host.
pub const WINDOW_HOST_ARG: &str = host::ARG;

/// Runs this process as the window host, the child the tray starts to show its windows.
pub fn run_window_host() {
    host::run(context());
}

/// Whether a WebDriver session drives the app (`tauri-driver` sets this): WebKit's
/// automation drives the first webview the app creates, so the dashboard opens at start. The
/// session lives in the window host (the tray process makes no webview), so under WebDriver
/// the host stays when its last window closes; the session would end with it.
pub(crate) fn under_webdriver() -> bool {
    std::env::var("TAURI_WEBVIEW_AUTOMATION").as_deref() == Ok("true")
}

/// On Linux, starts this program again (same pid, arguments and environment) with `GDK_GL=disable`
/// unless `GDK_GL` is set already, and returns only if that cannot be done.
///
/// GTK 3 loads OpenGL as it opens the display, only to choose its visuals: under Mesa that maps
/// the GL driver and LLVM into the tray process for good, ~31 MiB PSS of the ~105 MiB the app
/// costs with its window never opened (`scripts/bench-app`). Without GDK's GL, the dashboard
/// still renders (WebKit draws with its own EGL, and presents without GDK's GL; the desktop
/// test and the bench's screenshot show the same page), and its web process costs less while
/// the window is open. The environment has to say so before GTK starts, and setting it from
/// within needs `unsafe` (another thread may read it), hence the one `exec`. Anyone who wants
/// GDK's GL sets `GDK_GL` themselves (any value, e.g. `GDK_GL=gles`), which is kept.
pub fn without_gdk_gl() {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt as _;
        if std::env::var_os("GDK_GL").is_some() {
            return;
        }
        let Ok(exe) = std::env::current_exe() else {
            return;
        };
        let err = std::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .env("GDK_GL", "disable")
            .exec();
        // only on failure (the binary replaced by an upgrade, say): run as we are
        eprintln!("switchboard-app: could not restart without GDK's GL ({err}); going on with it");
    }
}

/// Builds and runs the app.
pub fn run() {
    switchboard_core::init_logging();

    let app = tauri::Builder::default()
        // Launching it again opens the dashboard of the running one.
        .plugin(tauri_plugin_single_instance::init(|app, _args, _cwd| {
            open_dashboard(app);
        }))
        // Start at Login (XDG autostart entry, LaunchAgent, registry Run key).
        .plugin(tauri_plugin_autostart::init(
            tauri_plugin_autostart::MacosLauncher::LaunchAgent,
            None,
        ))
        .plugin(tauri_plugin_dialog::init())
        .setup(|app| {
            let mute_file = load_config()
                .ok()
                .and_then(|c| c.resolved_data_dir().ok())
                .map(|d| d.join("muted-servers.json"));
            let notifier = notify::Notifier::new(mute_file);
            let (gateway, startup_error, stopped) = match start_gateway() {
                Ok((g, task)) => (Some(g), None, Some(task)),
                Err(e) => {
                    let message = startup_message(&e);
                    tracing::error!(error = %message, "gateway did not start");
                    notifier.notify(
                        "startup",
                        "Switchboard could not start its gateway",
                        &message,
                    );
                    (None, Some(message), None)
                }
            };
            let (windows, calls) = windows::Windows::new(under_webdriver());
            tauri::async_runtime::spawn(commands::serve(app.handle().clone(), calls));
            let shell = Shell {
                gateway,
                startup_error,
                notifier,
                stopped: Arc::new(Mutex::new(stopped)),
                pair_code: Arc::default(),
                elicit_urls: elicit::Urls::default(),
                windows,
            };
            app.manage(shell.clone());
            tray::install(app.handle(), &shell)?;
            if let Some(g) = &shell.gateway {
                notify::watch(app.handle().clone(), g.bus.clone(), shell.notifier.clone());
                elicit::watch(
                    shell.windows.clone(),
                    g.bus.clone(),
                    shell.notifier.clone(),
                    shell.elicit_urls.clone(),
                );
            }
            if under_webdriver() {
                open_dashboard(app.handle());
            }
            Ok(())
        })
        .build(context())
        .unwrap_or_else(|e| {
            eprintln!("error: Switchboard could not start: {e}");
            std::process::exit(1);
        });
    app.run(|_app, event| {
        // The windows live in the window host; should anything make the tray process want
        // to exit without a code, it stays: only Quit (which exits with one) ends a tray app.
        if let RunEvent::ExitRequested { api, code, .. } = event
            && code.is_none()
        {
            api.prevent_exit();
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_keychain_the_app_says_it_insists_on_one() {
        let e = anyhow::Error::new(switchboard_core::ServeError::Tokens {
            store: "OS keychain (Secret Service)".into(),
            error: switchboard_core::auth::store::TokenStoreError::Unavailable(
                "no OS keychain: the Secret Service is not running".into(),
            ),
        });
        let m = startup_message(&e);
        assert!(m.contains("OS keychain only"), "{m}");
        assert!(m.contains("does not fall back to a file"), "{m}");
        assert!(m.contains("token_store = \"file\""), "{m}");
        assert!(m.contains("the Secret Service is not running"), "{m}");
        // anything else is shown as it is
        let other = anyhow::anyhow!("127.0.0.1:11391 is already used");
        assert_eq!(startup_message(&other), "127.0.0.1:11391 is already used");
    }
}
