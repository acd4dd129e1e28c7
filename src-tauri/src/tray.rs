//! The tray icon: its state (idle, calls running, a server failed, gateway down) in the icon
//! and the tooltip, and its menu. Menu ids are the `tray/...` constants, matched in one place.
//! Pair ▸ lists the agents found on this computer with Connect or Disconnect, run by the
//! core's [`Agents`] exactly as the dashboard's buttons run them.

use std::collections::{BTreeSet, HashSet};
use std::sync::Mutex;

use switchboard_core::HubEvent;
use switchboard_core::setup::Client;
use switchboard_core::setup::agents::{Action, ActionRequest, Agents};
use switchboard_core::upstream::ServerState;
use tauri::image::Image;
use tauri::menu::{CheckMenuItem, Menu, MenuItem, PredefinedMenuItem, Submenu};
use tauri::tray::TrayIconBuilder;
use tauri::{AppHandle, Manager};
use tauri_plugin_autostart::ManagerExt as _;
use tauri_plugin_dialog::{DialogExt as _, MessageDialogButtons, MessageDialogKind};

use crate::Shell;

pub(crate) const TRAY_ID: &str = "main";
pub(crate) const STATUS: &str = "tray/status";
pub(crate) const OPEN: &str = "tray/open";
pub(crate) const PAIR: &str = "tray/pair";
pub(crate) const PAIR_NEW: &str = "tray/pair/new";
pub(crate) const AGENT_CONNECT: &str = "tray/agent/connect/";
pub(crate) const AGENT_DISCONNECT: &str = "tray/agent/disconnect/";
pub(crate) const PAUSE: &str = "tray/pause-notifications";
pub(crate) const LOGIN: &str = "tray/start-at-login";
pub(crate) const QUIT: &str = "tray/quit";
pub(crate) const UNPAIR: &str = "tray/unpair/";
pub(crate) const RESTART: &str = "tray/restart/";
pub(crate) const MUTE: &str = "tray/mute/";
pub(crate) const LOG_IN: &str = "tray/log-in/";
pub(crate) const LOG_OUT: &str = "tray/log-out/";

const IDLE: &[u8] = include_bytes!("../../icons/tray-idle.png");
const BUSY: &[u8] = include_bytes!("../../icons/tray-busy.png");
const FAILED: &[u8] = include_bytes!("../../icons/tray-failed.png");
const DOWN: &[u8] = include_bytes!("../../icons/tray-down.png");

/// What the icon shows, derived from hub events.
#[derive(Debug, Default)]
struct TrayState {
    calls: HashSet<String>,
    failed: BTreeSet<String>,
}

static STATE: Mutex<Option<TrayState>> = Mutex::new(None);

/// An agent found on this computer, as the Pair menu shows it.
#[derive(Debug, Clone)]
struct FoundAgent {
    client: Client,
    label: &'static str,
    connected: bool,
}

/// The agents the Pair menu lists, as last read (reading them is async: files and token
/// checks, so the menu, which is built synchronously, shows this copy; see [`reload_agents`]).
static AGENTS: Mutex<Vec<FoundAgent>> = Mutex::new(Vec::new());

fn build_menu(app: &AppHandle, shell: &Shell) -> tauri::Result<Menu<tauri::Wry>> {
    let menu = Menu::new(app)?;
    menu.append(&MenuItem::with_id(
        app,
        STATUS,
        status(shell).1,
        false,
        None::<&str>,
    )?)?;
    menu.append(&PredefinedMenuItem::separator(app)?)?;
    menu.append(&MenuItem::with_id(
        app,
        OPEN,
        "Open Dashboard",
        true,
        None::<&str>,
    )?)?;
    let up = shell.gateway.is_some();
    let pair = Submenu::with_id(app, PAIR, "Pair", up)?;
    pair.append(&MenuItem::with_id(
        app,
        PAIR_NEW,
        "New Client…",
        up,
        None::<&str>,
    )?)?;
    let agents = AGENTS.lock().expect("agents lock").clone();
    if !agents.is_empty() {
        pair.append(&PredefinedMenuItem::separator(app)?)?;
    }
    for a in agents {
        let (prefix, verb) = if a.connected {
            (AGENT_DISCONNECT, "Disconnect")
        } else {
            (AGENT_CONNECT, "Connect")
        };
        pair.append(&MenuItem::with_id(
            app,
            format!("{prefix}{}", a.client.id()),
            format!("{verb} {}", a.label),
            up,
            None::<&str>,
        )?)?;
    }
    menu.append(&pair)?;
    let clients = Submenu::with_id(app, "tray/clients", "Paired Clients", up)?;
    let servers = Submenu::with_id(app, "tray/servers", "Servers", up)?;
    if let Some(g) = &shell.gateway {
        let list = g.auth.clients();
        if list.is_empty() {
            clients.append(&MenuItem::with_id(
                app,
                "tray/clients/none",
                "No paired clients",
                false,
                None::<&str>,
            )?)?;
        }
        for c in list {
            let label = format!("{} ({}) — Unpair", c.name, c.role);
            clients.append(&MenuItem::with_id(
                app,
                format!("{UNPAIR}{}", c.name),
                label,
                true,
                None::<&str>,
            )?)?;
        }
        let ups = g.mcp.upstreams();
        if ups.is_empty() {
            servers.append(&MenuItem::with_id(
                app,
                "tray/servers/none",
                "No servers configured",
                false,
                None::<&str>,
            )?)?;
        }
        for up in ups {
            let name = up.name();
            let label = match up.status().state {
                ServerState::Idle => format!("{name}: idle (on demand)"),
                state => format!("{name}: {}", state.as_str()),
            };
            let one = Submenu::with_id(app, format!("tray/server/{name}"), label, true)?;
            one.append(&MenuItem::with_id(
                app,
                format!("{RESTART}{name}"),
                "Restart",
                true,
                None::<&str>,
            )?)?;
            if up.uses_oauth() {
                one.append(&MenuItem::with_id(
                    app,
                    format!("{LOG_IN}{name}"),
                    "Log In…",
                    true,
                    None::<&str>,
                )?)?;
                one.append(&MenuItem::with_id(
                    app,
                    format!("{LOG_OUT}{name}"),
                    "Log Out",
                    true,
                    None::<&str>,
                )?)?;
            }
            one.append(&CheckMenuItem::with_id(
                app,
                format!("{MUTE}{name}"),
                "Mute Notifications",
                true,
                shell.notifier.muted(name),
                None::<&str>,
            )?)?;
            servers.append(&one)?;
        }
    }
    menu.append(&clients)?;
    menu.append(&servers)?;
    menu.append(&CheckMenuItem::with_id(
        app,
        PAUSE,
        "Pause Notifications",
        true,
        shell.notifier.paused(),
        None::<&str>,
    )?)?;
    let at_login = app.autolaunch().is_enabled().unwrap_or(false);
    menu.append(&CheckMenuItem::with_id(
        app,
        LOGIN,
        "Start at Login",
        true,
        at_login,
        None::<&str>,
    )?)?;
    menu.append(&PredefinedMenuItem::separator(app)?)?;
    menu.append(&MenuItem::with_id(app, QUIT, "Quit", true, None::<&str>)?)?;
    Ok(menu)
}

fn on_menu(app: &AppHandle, id: &str) {
    let shell = app.state::<Shell>().inner().clone();
    match id {
        OPEN => crate::open_dashboard(app),
        PAIR_NEW => {
            if let Err(e) = crate::pairing::pair_new_client(app) {
                tracing::error!(error = %e, "no pairing code");
                shell
                    .notifier
                    .notify("pair", "No pairing code could be issued", &e);
            }
        }
        PAUSE => {
            let paused = !shell.notifier.paused();
            shell.notifier.set_paused(paused);
        }
        LOGIN => {
            let auto = app.autolaunch();
            let result = if auto.is_enabled().unwrap_or(false) {
                auto.disable()
            } else {
                auto.enable()
            };
            if let Err(e) = result {
                tracing::error!(error = %e, "could not change Start at Login");
                shell.notifier.notify(
                    "login",
                    "Start at Login could not be changed",
                    &e.to_string(),
                );
            }
            refresh(app);
        }
        QUIT => crate::quit(app),
        _ if id.starts_with(AGENT_CONNECT) => {
            agent_action(app, &id[AGENT_CONNECT.len()..], Action::Connect);
        }
        _ if id.starts_with(AGENT_DISCONNECT) => {
            agent_action(app, &id[AGENT_DISCONNECT.len()..], Action::Disconnect);
        }
        _ if id.starts_with(UNPAIR) => {
            let name = id[UNPAIR.len()..].to_owned();
            if let Some(g) = shell.gateway.clone() {
                confirm_unpair(app, g, name);
            }
        }
        _ if id.starts_with(MUTE) => {
            let server = &id[MUTE.len()..];
            shell
                .notifier
                .set_muted(server, !shell.notifier.muted(server));
            refresh(app);
        }
        _ if id.starts_with(LOG_IN) => crate::login::log_in(app, &id[LOG_IN.len()..]),
        _ if id.starts_with(LOG_OUT) => crate::login::log_out(app, &id[LOG_OUT.len()..]),
        _ if id.starts_with(RESTART) => {
            if let Some(up) = shell
                .gateway
                .as_ref()
                .and_then(|g| g.mcp.upstream(&id[RESTART.len()..]))
            {
                up.restart();
            }
        }
        _ => {}
    }
}

/// Connects or disconnects agent `id` through the core, and says in a notification what it
/// changed or why it could not. The core announces the change (`AgentChanged`), which
/// reloads the menu here and the agents of every open dashboard.
fn agent_action(app: &AppHandle, id: &str, action: Action) {
    let shell = app.state::<Shell>().inner().clone();
    let (Some(g), Some(client)) = (shell.gateway.clone(), Client::from_id(id)) else {
        return;
    };
    tauri::async_runtime::spawn(async move {
        let subject = format!("agent:{}", client.id());
        let verb = match action {
            Action::Connect => "connected",
            _ => "disconnected",
        };
        let outcome = g.agents.act(client, action, ActionRequest::default()).await;
        // the answer to something the person just asked for: never coalesced with the last
        shell.notifier.forget(&subject);
        match outcome {
            Ok(outcome) => {
                let lines: Vec<&str> = outcome["lines"]
                    .as_array()
                    .map(|l| l.iter().filter_map(|v| v.as_str()).collect())
                    .unwrap_or_default();
                shell.notifier.notify(
                    &subject,
                    &format!("{} {verb}", client.label()),
                    &lines.join("\n"),
                );
            }
            Err(e) => {
                tracing::warn!(agent = client.id(), error = %e, "agent action failed");
                shell.notifier.notify(
                    &subject,
                    &format!("{} could not be {verb}", client.label()),
                    &e.to_string(),
                );
            }
        }
    });
}

/// Reads the agents found on this computer again and rebuilds the menu with them; returns
/// at once.
pub(crate) fn reload_agents(app: &AppHandle) {
    let Some(agents) = app
        .state::<Shell>()
        .gateway
        .as_ref()
        .map(|g| g.agents.clone())
    else {
        return;
    };
    let app = app.clone();
    tauri::async_runtime::spawn(async move { read_agents(&app, &agents).await });
}

async fn read_agents(app: &AppHandle, agents: &Agents) {
    match agents.list().await {
        Ok(listing) => {
            let found = listing
                .agents
                .into_iter()
                .filter(|a| a.detected.installed)
                .map(|a| FoundAgent {
                    client: a.detected.client,
                    label: a.detected.label,
                    connected: a.detected.connected,
                })
                .collect();
            *AGENTS.lock().expect("agents lock") = found;
        }
        Err(e) => tracing::warn!(error = %e, "cannot list the agents for the tray"),
    }
    refresh(app);
}

/// Unpairing cuts a client off at once, so the person is asked first.
fn confirm_unpair(app: &AppHandle, g: crate::GatewayHandles, name: String) {
    let app2 = app.clone();
    app.dialog()
        .message(format!(
            "{name} will lose access to Switchboard at once: its token stops working and its \
             open sessions close. It can be paired again later with a new code."
        ))
        .title(format!("Unpair {name}?"))
        .kind(MessageDialogKind::Warning)
        .buttons(MessageDialogButtons::OkCancelCustom(
            "Unpair".into(),
            "Cancel".into(),
        ))
        .show(move |confirmed| {
            if !confirmed {
                tracing::info!(client = %name, "unpair cancelled");
                return;
            }
            tauri::async_runtime::spawn(async move {
                match g.unpairer.unpair(&name).await {
                    Ok(_) => refresh(&app2),
                    Err(e) => {
                        tracing::error!(error = %e, "unpair failed");
                        let shell = app2.state::<Shell>().inner().clone();
                        shell.notifier.notify(
                            "unpair",
                            &format!("{name} could not be unpaired"),
                            &e.to_string(),
                        );
                    }
                }
            });
        });
}

/// The state in words: the first (disabled) line of the menu, and the tooltip where the
/// platform has one (Linux tray hosts show no tooltip).
fn status(shell: &Shell) -> (&'static [u8], String) {
    match &shell.gateway {
        None => (
            DOWN,
            format!(
                "Gateway down: {}",
                shell.startup_error.clone().unwrap_or_default()
            ),
        ),
        Some(g) => {
            let state = STATE.lock().expect("tray lock");
            let (calls, failed) = state
                .as_ref()
                .map(|s| (s.calls.len(), s.failed.iter().cloned().collect::<Vec<_>>()))
                .unwrap_or_default();
            let running = g
                .mcp
                .upstreams()
                .iter()
                .filter(|u| u.status().state == ServerState::Running)
                .count();
            if !failed.is_empty() {
                (FAILED, format!("Server failed: {}", failed.join(", ")))
            } else if calls > 0 {
                (
                    BUSY,
                    format!("{calls} call(s) running, {running} server(s) up"),
                )
            } else {
                (IDLE, format!("Idle, {running} server(s) up"))
            }
        }
    }
}

/// Rebuilds the menu, the icon and the tooltip from the current state.
pub(crate) fn refresh(app: &AppHandle) {
    let Some(tray) = app.tray_by_id(TRAY_ID) else {
        return;
    };
    let shell = app.state::<Shell>().inner().clone();
    if let Ok(menu) = build_menu(app, &shell) {
        let _ = tray.set_menu(Some(menu));
    }
    let (icon, line) = status(&shell);
    let tooltip = format!("Switchboard — {line}");
    if let Ok(img) = Image::from_bytes(icon) {
        let _ = tray.set_icon(Some(img));
    }
    let _ = tray.set_tooltip(Some(tooltip));
}

/// Keeps the tray in step with the hub.
pub(crate) fn on_event(app: &AppHandle, ev: &HubEvent) {
    let changed = {
        let mut guard = STATE.lock().expect("tray lock");
        let s = guard.get_or_insert_with(TrayState::default);
        match ev {
            HubEvent::CallStarted { call_id, .. } => s.calls.insert(call_id.clone()),
            HubEvent::CallFinished { call_id, .. } => s.calls.remove(call_id),
            HubEvent::ServerState { server, state, .. } => {
                if *state == ServerState::Failed {
                    s.failed.insert(server.clone());
                } else {
                    s.failed.remove(server);
                }
                true
            }
            HubEvent::ClientPaired { .. } | HubEvent::ClientUnpaired { .. } => true,
            _ => false,
        }
    };
    match ev {
        // which agents are connected may have changed: read them again (that refreshes)
        HubEvent::AgentChanged { .. }
        | HubEvent::ClientPaired { .. }
        | HubEvent::ClientUnpaired { .. } => reload_agents(app),
        _ if changed => refresh(app),
        _ => {}
    }
}

/// Creates the tray icon with its menu.
pub(crate) fn install(app: &AppHandle, shell: &Shell) -> tauri::Result<()> {
    let menu = build_menu(app, shell)?;
    TrayIconBuilder::with_id(TRAY_ID)
        .icon(Image::from_bytes(if shell.gateway.is_some() {
            IDLE
        } else {
            DOWN
        })?)
        .tooltip("Switchboard")
        .menu(&menu)
        .show_menu_on_left_click(true)
        .on_menu_event(|app, event| on_menu(app, event.id().as_ref()))
        .build(app)?;
    refresh(app);
    reload_agents(app);
    Ok(())
}
