//! Elicitations Switchboard answers itself (a server asked a client that cannot be asked), on
//! the desktop: each pending one opens a small window of its own (label `elicit-<id>`, the
//! page shows its form) with a notification, and the window closes when the elicitation ends,
//! answered here, in a paired browser, or not at all. A URL-mode one is opened with the system
//! opener only when the person agrees in its window (`open_elicitation_url`): the page never
//! names the URL itself, the shell opens the one the server sent.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::host::WindowSpec;
use crate::notify::Notifier;
use crate::windows::Windows;
use switchboard_core::{EventBus, HubEvent};

/// Labels of elicitation windows start with this (their capability matches it).
pub(crate) const WINDOW_PREFIX: &str = "elicit-";

/// The URLs of pending URL-mode elicitations, by id: what `open_elicitation_url` may open.
/// Bounded by the gateway's own bound on pending elicitations (entries go when they end).
#[derive(Debug, Clone, Default)]
pub(crate) struct Urls(Arc<Mutex<HashMap<String, String>>>);

impl Urls {
    pub(crate) fn get(&self, id: &str) -> Option<String> {
        self.0.lock().expect("urls lock").get(id).cloned()
    }
}

/// Opens a window and notifies for each pending elicitation, closes it when it ends.
pub(crate) fn watch(windows: Windows, bus: EventBus, notifier: Notifier, urls: Urls) {
    let mut events = bus.subscribe();
    tauri::async_runtime::spawn(async move {
        while let Some(ev) = events.recv().await {
            match &ev.event {
                HubEvent::ElicitationPending { elicitation: e } => {
                    if let Some(url) = &e.url {
                        urls.0
                            .lock()
                            .expect("urls lock")
                            .insert(e.id.clone(), url.clone());
                    }
                    notifier
                        .notify_question(&format!("{} asks you something", e.server), &e.message);
                    // notified above, and answerable in a paired browser: a window that
                    // cannot open is only logged
                    let _ = windows.open(window(&e.id));
                }
                HubEvent::ElicitationEnded { id, .. } => {
                    urls.0.lock().expect("urls lock").remove(id);
                    windows.close(&format!("{WINDOW_PREFIX}{id}"));
                }
                _ => {}
            }
        }
    });
}

/// Elicitation `id`'s window, in the window host.
fn window(id: &str) -> WindowSpec {
    WindowSpec {
        label: format!("{WINDOW_PREFIX}{id}"),
        title: "Switchboard: a server asks".into(),
        width: 460.0,
        height: 520.0,
        fixed: false,
        on_top: true,
        center: true,
    }
}

/// Opens `url` with the system's opener (the person agreed to in the elicitation's window).
pub(crate) fn open_url(url: &str) -> std::io::Result<()> {
    #[cfg(target_os = "macos")]
    let mut cmd = std::process::Command::new("open");
    #[cfg(target_os = "windows")]
    let mut cmd = {
        let mut c = std::process::Command::new("rundll32");
        c.arg("url.dll,FileProtocolHandler");
        c
    };
    #[cfg(not(any(target_os = "macos", target_os = "windows")))]
    let mut cmd = std::process::Command::new("xdg-open");
    // the opener returns at once (or hands over to the browser): not waited for, not a zombie
    let mut child = cmd.arg(url).spawn()?;
    std::thread::spawn(move || child.wait());
    Ok(())
}
