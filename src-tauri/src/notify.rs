//! Desktop notifications (notify-rust): crashes, failures, servers that need a login (with a
//! Log In… action), projects going offline, clients disconnecting, long calls, pairing codes
//! cancelled by wrong tries.
//! Reconnect storms and flapping must give one notification, not hundreds: each subject
//! notifies at most once per [`SUBJECT_QUIET`], and all of them at most [`MAX_PER_MINUTE`].

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchboard_core::{EventBus, HubEvent};

const SUBJECT_QUIET: Duration = Duration::from_secs(60);
const MAX_PER_MINUTE: usize = 10;
/// A call running longer than this shows its progress.
const LONG_CALL: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
struct State {
    paused: bool,
    /// Servers whose crashes, failures and long calls stay silent (saved in `mute_file`).
    muted: BTreeSet<String>,
    last: HashMap<String, Instant>,
    recent: VecDeque<Instant>,
}

/// Cheap handle; clone freely.
#[derive(Debug, Clone, Default)]
pub(crate) struct Notifier {
    state: Arc<Mutex<State>>,
    /// Where the muted servers are kept across restarts (`None`: memory only).
    mute_file: Option<Arc<PathBuf>>,
}

impl Notifier {
    /// A notifier whose per-server mutes live in `mute_file` (a JSON list of server names).
    pub(crate) fn new(mute_file: Option<PathBuf>) -> Self {
        let muted = mute_file
            .as_deref()
            .and_then(|f| std::fs::read(f).ok())
            .and_then(|b| serde_json::from_slice::<BTreeSet<String>>(&b).ok())
            .unwrap_or_default();
        Self {
            state: Arc::new(Mutex::new(State {
                muted,
                ..State::default()
            })),
            mute_file: mute_file.map(Arc::new),
        }
    }

    pub(crate) fn muted(&self, server: &str) -> bool {
        self.state
            .lock()
            .expect("notifier lock")
            .muted
            .contains(server)
    }

    /// Mutes or unmutes a server's notifications, and saves the list.
    pub(crate) fn set_muted(&self, server: &str, muted: bool) {
        let list = {
            let mut s = self.state.lock().expect("notifier lock");
            if muted {
                s.muted.insert(server.to_owned());
            } else {
                s.muted.remove(server);
            }
            s.muted.clone()
        };
        if let Some(file) = &self.mute_file {
            let json = serde_json::to_vec_pretty(&list).unwrap_or_default();
            let tmp = file.with_extension("json.tmp");
            let saved = std::fs::write(&tmp, json).and_then(|()| std::fs::rename(&tmp, &**file));
            if let Err(e) = saved {
                tracing::warn!(error = %e, file = %file.display(), "could not save muted servers");
            }
        }
    }

    pub(crate) fn set_paused(&self, paused: bool) {
        self.state.lock().expect("notifier lock").paused = paused;
    }

    pub(crate) fn paused(&self) -> bool {
        self.state.lock().expect("notifier lock").paused
    }

    /// Whether a notification about `subject` may be shown now (and records it if so).
    fn admit(&self, subject: &str) -> bool {
        let mut s = self.state.lock().expect("notifier lock");
        if s.paused {
            return false;
        }
        let now = Instant::now();
        if s.last
            .get(subject)
            .is_some_and(|t| now.duration_since(*t) < SUBJECT_QUIET)
        {
            return false;
        }
        while s
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > Duration::from_secs(60))
        {
            s.recent.pop_front();
        }
        if s.recent.len() >= MAX_PER_MINUTE {
            return false;
        }
        s.recent.push_back(now);
        s.last.insert(subject.to_owned(), now);
        true
    }

    /// Lets the next notification about `subject` through at once (a login's outcome follows
    /// its own start within the quiet time).
    pub(crate) fn forget(&self, subject: &str) {
        self.state
            .lock()
            .expect("notifier lock")
            .last
            .remove(subject);
    }

    /// Like [`notify`](Self::notify), with one action (`label`): `on_action` runs when the
    /// person clicks it or the notification itself. Where the platform has no actions, the
    /// body says where to find it instead.
    pub(crate) fn notify_with_action(
        &self,
        subject: &str,
        summary: &str,
        body: &str,
        label: &str,
        on_action: impl FnOnce() + Send + 'static,
    ) {
        if self.admit(subject) {
            show_with_action(
                summary.to_owned(),
                body.to_owned(),
                label.to_owned(),
                on_action,
            );
        }
    }

    /// Shows a notification that someone is waiting for an answer (an elicitation), unless
    /// paused: never coalesced or capped, each is a question of its own (the gateway keeps at
    /// most 32 pending).
    pub(crate) fn notify_question(&self, summary: &str, body: &str) {
        if !self.paused() {
            show(summary.to_owned(), body.to_owned(), None);
        }
    }

    /// Shows a notification unless paused, coalesced or over the rate cap.
    pub(crate) fn notify(&self, subject: &str, summary: &str, body: &str) {
        if self.admit(subject) {
            show(summary.to_owned(), body.to_owned(), None);
        }
    }
}

/// Sends one notification off the async runtime, bounded (D-Bus may hang). `replaces` updates
/// an earlier notification in place where the platform allows.
fn show(summary: String, body: String, replaces: Option<u32>) -> Option<u32> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut n = notify_rust::Notification::new();
        n.appname("Switchboard").summary(&summary).body(&body);
        if let Some(id) = replaces {
            n.id(id);
        }
        let _ = tx.send(n.show().map(|h| h.id()));
    });
    match rx.recv_timeout(Duration::from_secs(5)) {
        Ok(Ok(id)) => Some(id),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "notification not shown");
            None
        }
        Err(_) => {
            tracing::warn!("notification service did not answer in 5 s");
            None
        }
    }
}

/// A notification with an action, on its own thread: shown (bounded like [`show`]), then
/// waited on until the person acts or it closes (the notification service ends that wait).
#[cfg(all(unix, not(target_os = "macos")))]
fn show_with_action(
    summary: String,
    body: String,
    label: String,
    on_action: impl FnOnce() + Send + 'static,
) {
    std::thread::spawn(move || {
        let shown = notify_rust::Notification::new()
            .appname("Switchboard")
            .summary(&summary)
            .body(&body)
            .action("default", &label)
            .action("act", &label)
            .show();
        match shown {
            Ok(handle) => handle.wait_for_action(|action| {
                if action == "default" || action == "act" {
                    on_action();
                }
            }),
            Err(e) => tracing::warn!(error = %e, "notification not shown"),
        }
    });
}

#[cfg(not(all(unix, not(target_os = "macos"))))]
fn show_with_action(
    summary: String,
    body: String,
    label: String,
    _on_action: impl FnOnce() + Send + 'static,
) {
    show(summary, format!("{body} ({label} in the tray)"), None);
}

/// What the owner reads when wrong codes cancelled the waiting ones.
fn burned_body(wrong_tries: u32, codes: usize) -> String {
    let which = if codes == 1 {
        "The waiting pairing code was".to_owned()
    } else {
        format!("The {codes} waiting pairing codes were")
    };
    format!(
        "{which} cancelled after {wrong_tries} wrong codes were tried. If that was not you \
         mistyping, a program on this computer is guessing codes. Pair New Client gives a \
         fresh code that works at once."
    )
}

/// A long call being shown: its notification id and when it was last updated.
struct LongCall {
    tool: String,
    started: Instant,
    shown: Option<(u32, Instant)>,
}

/// Whether `server` is a remote endpoint (it reconnects; it does not crash).
fn is_remote(app: &tauri::AppHandle, server: &str) -> bool {
    use tauri::Manager as _;
    app.state::<crate::Shell>()
        .gateway
        .as_ref()
        .and_then(|g| g.mcp.upstream(server))
        .is_some_and(|up| up.config().is_remote())
}

fn shutting_down(app: &tauri::AppHandle) -> bool {
    use tauri::Manager as _;
    app.state::<crate::Shell>()
        .gateway
        .as_ref()
        .is_none_or(|g| g.shutdown.is_cancelled())
}

/// Turns hub events into notifications until the bus closes.
pub(crate) fn watch(app: tauri::AppHandle, bus: EventBus, notifier: Notifier) {
    let mut events = bus.subscribe();
    // The gateway (and its servers) started before this subscription: catch the tray up with
    // what happened meanwhile; every change from here on arrives as an event.
    crate::tray::refresh(&app);
    tauri::async_runtime::spawn(async move {
        let mut calls: HashMap<String, LongCall> = HashMap::new();
        // Open MCP sessions per paired client: a client has disconnected when its last one ends.
        let mut sessions: HashMap<String, usize> = HashMap::new();
        while let Some(ev) = events.recv().await {
            crate::tray::on_event(&app, &ev.event);
            let n = notifier.clone();
            match &ev.event {
                HubEvent::ServerCrashed { server, .. } | HubEvent::ServerState { server, .. }
                    if n.muted(server) => {}
                HubEvent::ServerCrashed { server, reason } => {
                    if is_remote(&app, server) {
                        n.notify(
                            &format!("server:{server}"),
                            &format!("MCP server '{server}' lost its connection"),
                            &format!("{reason}. Switchboard is reconnecting."),
                        );
                    } else {
                        n.notify(
                            &format!("server:{server}"),
                            &format!("MCP server '{server}' crashed"),
                            &format!("{reason}. Switchboard is restarting it."),
                        );
                    }
                }
                HubEvent::ServerState {
                    server,
                    state: switchboard_core::upstream::ServerState::NeedsLogin,
                    reason,
                } => {
                    let (app, name) = (app.clone(), server.clone());
                    n.notify_with_action(
                        &format!("needs-login:{server}"),
                        &format!("MCP server '{server}' needs a login"),
                        reason.as_deref().unwrap_or("it asks for an OAuth login"),
                        "Log In…",
                        move || crate::login::log_in(&app, &name),
                    );
                }
                HubEvent::ServerState {
                    server,
                    state: switchboard_core::upstream::ServerState::Failed,
                    reason,
                } => n.notify(
                    &format!("failed:{server}"),
                    &format!("MCP server '{server}' failed"),
                    reason
                        .as_deref()
                        .unwrap_or("it keeps crashing; restart it from the tray"),
                ),
                HubEvent::SessionOpened { client, .. } => {
                    *sessions.entry(client.clone()).or_default() += 1;
                }
                HubEvent::SessionClosed { client, reason, .. } => {
                    let left = sessions.get_mut(client).map(|open| {
                        *open = open.saturating_sub(1);
                        *open
                    });
                    if left == Some(0) {
                        sessions.remove(client);
                        // Unpairing is the person's own doing, and quitting closes everything.
                        if reason != "client unpaired" && !shutting_down(&app) {
                            n.notify(
                                &format!("client:{client}"),
                                &format!("{client} disconnected"),
                                &format!("Its last MCP session ended ({reason})."),
                            );
                        }
                    }
                }
                HubEvent::PairingCodesBurned { wrong_tries, codes } => n.notify(
                    "pairing:burned",
                    "Pairing codes cancelled after wrong tries",
                    &burned_body(*wrong_tries, *codes),
                ),
                HubEvent::ProjectOffline { path, name } => n.notify(
                    &format!("project:{path}"),
                    &format!("Project '{name}' went offline"),
                    path,
                ),
                HubEvent::CallStarted {
                    call_id,
                    tool,
                    server,
                    ..
                } if !n.muted(server) => {
                    calls.insert(
                        call_id.clone(),
                        LongCall {
                            tool: tool.clone(),
                            started: Instant::now(),
                            shown: None,
                        },
                    );
                }
                HubEvent::CallProgress {
                    call_id,
                    progress,
                    total,
                    message,
                } => {
                    if let Some(c) = calls.get_mut(call_id)
                        && c.started.elapsed() >= LONG_CALL
                        && !n.paused()
                        && c.shown
                            .is_none_or(|(_, at)| at.elapsed() >= Duration::from_secs(2))
                    {
                        let pct =
                            total.map(|t| format!(" ({:.0}%)", 100.0 * progress / t.max(1.0)));
                        let body = format!(
                            "{}{}",
                            message
                                .clone()
                                .unwrap_or_else(|| format!("progress {progress}")),
                            pct.unwrap_or_default()
                        );
                        let summary = format!("{} is running", c.tool);
                        let replaces = c.shown.map(|(id, _)| id);
                        let id = tokio::task::spawn_blocking(move || show(summary, body, replaces))
                            .await
                            .ok()
                            .flatten();
                        if let Some(id) = id {
                            c.shown = Some((id, Instant::now()));
                        }
                    }
                }
                HubEvent::CallFinished {
                    call_id,
                    outcome,
                    latency_ms,
                    error,
                    ..
                } => {
                    if let Some(c) = calls.remove(call_id)
                        && (c.shown.is_some() || c.started.elapsed() >= LONG_CALL)
                        && !n.paused()
                    {
                        let summary = if *outcome == "ok" {
                            format!("{} finished", c.tool)
                        } else {
                            format!("{} failed", c.tool)
                        };
                        let body = error.clone().unwrap_or_else(|| {
                            format!("after {:.1} s", *latency_ms as f64 / 1000.0)
                        });
                        let replaces = c.shown.map(|(id, _)| id);
                        let _ = tokio::task::spawn_blocking(move || show(summary, body, replaces))
                            .await;
                    }
                }
                _ => {}
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_storm_on_one_subject_gives_one_notification_and_the_rate_is_capped() {
        let n = Notifier::new(None);
        assert!(n.admit("project:/a"));
        for _ in 0..50 {
            assert!(!n.admit("project:/a"));
        }
        let admitted = (0..50).filter(|i| n.admit(&format!("s{i}"))).count();
        assert_eq!(admitted, MAX_PER_MINUTE - 1);
        n.set_paused(true);
        assert!(!n.admit("fresh"));
    }

    #[test]
    fn burned_codes_are_explained_to_the_owner() {
        let one = burned_body(5, 1);
        assert!(
            one.starts_with("The waiting pairing code was cancelled after 5 wrong codes"),
            "{one}"
        );
        let two = burned_body(5, 2);
        assert!(two.starts_with("The 2 waiting pairing codes were"), "{two}");
        assert!(two.contains("fresh code that works at once"), "{two}");
    }

    #[test]
    fn mutes_are_saved_and_read_back() {
        let dir = std::env::temp_dir().join(format!("sb-mute-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("muted-servers.json");
        let n = Notifier::new(Some(file.clone()));
        assert!(!n.muted("fx"));
        n.set_muted("fx", true);
        n.set_muted("gh", true);
        n.set_muted("gh", false);
        let again = Notifier::new(Some(file));
        assert!(again.muted("fx") && !again.muted("gh"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
