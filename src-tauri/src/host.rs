//! The window host: the app's windows (the dashboard, the pairing window, elicitations) live in
//! a child process of their own, this one (`switchboard-app --window-host`), started when a
//! window opens and ended when the last one closes. A webview leaves WebKit behind in the
//! process that made it (its libraries, its network process) for the process's life, so the
//! tray process, which runs for weeks, never makes one: with every window closed the app costs
//! what it costs with none ever opened.
//!
//! The host knows nothing of the gateway. It speaks to the tray process over its stdin and
//! stdout, one JSON message per line ([`ToHost`], [`FromHost`]): it opens, closes and tells
//! windows what the tray asks, forwards every command a page invokes to the tray and gives the
//! page the tray's answer, and reports which windows it has after every change. It exits when
//! the tray says so (its last window closed and no open on its way) or when its stdin ends
//! (the tray is gone).

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead as _, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tauri::{AppHandle, Emitter as _, Manager as _, RunEvent, WebviewUrl, WebviewWindowBuilder};
use tokio::sync::oneshot;

/// The argument that makes `switchboard-app` a window host.
pub(crate) const ARG: &str = "--window-host";

/// How long a page's command waits for the tray's answer.
const CALL_WAIT: Duration = Duration::from_secs(15);

/// A window the tray asks for: its label (the page's view and the window's capability depend
/// on it) and its looks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct WindowSpec {
    pub(crate) label: String,
    pub(crate) title: String,
    pub(crate) width: f64,
    pub(crate) height: f64,
    /// A small fixed-size dialog (not resizable, maximizable or minimizable).
    pub(crate) fixed: bool,
    pub(crate) on_top: bool,
    pub(crate) center: bool,
}

/// What the tray tells the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub(crate) enum ToHost {
    /// Show the window (creating it if it is not there); answered by an [`FromHost::Windows`]
    /// carrying `seq`.
    Open { seq: u64, window: WindowSpec },
    /// Close the window if it is there.
    Close { label: String },
    /// An event for one window's page.
    Emit {
        to: String,
        event: String,
        payload: Value,
    },
    /// The answer to a page's command: `Ok` the command's value, `Err` its error.
    Reply {
        id: u64,
        result: Result<Value, Value>,
    },
    /// Exit now: no window is left and none is on its way.
    Exit,
}

/// What the host tells the tray.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub(crate) enum FromHost {
    /// The windows it has now, after the open numbered `seq` (the last it has handled).
    Windows { seq: u64, labels: BTreeSet<String> },
    /// A page invoked command `cmd` with `args`; answered by a [`ToHost::Reply`] with `id`.
    Call { id: u64, cmd: String, args: Value },
}

/// A command's answer: its value, or its error.
type Answer = Result<Value, Value>;

/// The host's end of the line to the tray.
#[derive(Clone)]
struct Link {
    out: Arc<Mutex<std::io::Stdout>>,
    next: Arc<AtomicU64>,
    /// Commands waiting for the tray's answer; each leaves when answered or after [`CALL_WAIT`].
    waiting: Arc<Mutex<HashMap<u64, oneshot::Sender<Answer>>>>,
    windows: Arc<Mutex<BTreeSet<String>>>,
    last_seq: Arc<AtomicU64>,
}

impl Link {
    fn send(&self, msg: &FromHost) {
        let mut line = serde_json::to_string(msg).expect("a host message serializes");
        line.push('\n');
        let mut out = self.out.lock().expect("stdout lock");
        // a tray that is gone ends this process through stdin; nothing to do here
        let _ = out.write_all(line.as_bytes()).and_then(|()| out.flush());
    }

    fn report(&self) {
        let labels = self.windows.lock().expect("windows lock").clone();
        self.send(&FromHost::Windows {
            seq: self.last_seq.load(Ordering::SeqCst),
            labels,
        });
    }

    /// Asks the tray to run a page's command, bounded by [`CALL_WAIT`].
    async fn call(&self, cmd: &str, args: Value) -> Result<Value, Value> {
        let id = self.next.fetch_add(1, Ordering::SeqCst);
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().expect("waiting lock").insert(id, tx);
        self.send(&FromHost::Call {
            id,
            cmd: cmd.to_owned(),
            args,
        });
        let unanswered = |why: &str| json!({ "kind": "shell_unavailable", "message": format!("the tray did not answer {cmd}: {why}") });
        match tokio::time::timeout(CALL_WAIT, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(unanswered("it is gone")),
            Err(_) => {
                self.waiting.lock().expect("waiting lock").remove(&id);
                Err(unanswered(&format!(
                    "no answer within {} s",
                    CALL_WAIT.as_secs()
                )))
            }
        }
    }
}

#[tauri::command]
async fn dashboard_credential(link: tauri::State<'_, Link>) -> Result<Value, Value> {
    link.call("dashboard_credential", json!({})).await
}

#[tauri::command]
async fn pair_code(link: tauri::State<'_, Link>) -> Result<Value, Value> {
    link.call("pair_code", json!({})).await
}

#[tauri::command]
async fn new_pair_code(link: tauri::State<'_, Link>) -> Result<Value, Value> {
    link.call("new_pair_code", json!({})).await
}

#[tauri::command]
async fn log_in(link: tauri::State<'_, Link>, server: String) -> Result<Value, Value> {
    link.call("log_in", json!({ "server": server })).await
}

#[tauri::command]
async fn open_elicitation_url(link: tauri::State<'_, Link>, id: String) -> Result<Value, Value> {
    link.call("open_elicitation_url", json!({ "id": id })).await
}

fn open(app: &AppHandle, link: &Link, seq: u64, spec: &WindowSpec) {
    if let Some(w) = app.get_webview_window(&spec.label) {
        let _ = w.show();
        let _ = w.unminimize();
        let _ = w.set_focus();
    } else {
        let mut b =
            WebviewWindowBuilder::new(app, &spec.label, WebviewUrl::App("index.html".into()))
                .title(&spec.title)
                .inner_size(spec.width, spec.height)
                .always_on_top(spec.on_top)
                .focused(true);
        if spec.fixed {
            b = b.resizable(false).maximizable(false).minimizable(false);
        }
        if spec.center {
            b = b.center();
        }
        match b.build() {
            Ok(_) => {
                link.windows
                    .lock()
                    .expect("windows lock")
                    .insert(spec.label.clone());
            }
            Err(e) => tracing::error!(label = %spec.label, error = %e, "could not open a window"),
        }
    }
    link.last_seq.store(seq, Ordering::SeqCst);
    link.report();
}

/// Reads the tray's messages until stdin ends, then exits the host.
fn read_tray(app: AppHandle, link: Link) {
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let msg = match serde_json::from_str::<ToHost>(&line) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "window host: not a message from the tray, ignored");
                continue;
            }
        };
        match msg {
            ToHost::Open { seq, window } => open(&app, &link, seq, &window),
            ToHost::Close { label } => {
                if let Some(w) = app.get_webview_window(&label) {
                    let _ = w.close();
                }
            }
            ToHost::Emit { to, event, payload } => {
                let _ = app.emit_to(to.as_str(), &event, payload);
            }
            ToHost::Reply { id, result } => {
                if let Some(tx) = link.waiting.lock().expect("waiting lock").remove(&id) {
                    let _ = tx.send(result);
                }
            }
            ToHost::Exit => break,
        }
    }
    app.exit(0);
}

/// Runs this process as the window host (see the module's documentation), with the app's
/// Tauri `context` (its config and pages).
pub(crate) fn run(context: tauri::Context) {
    switchboard_core::init_logging();
    let link = Link {
        out: Arc::new(Mutex::new(std::io::stdout())),
        next: Arc::new(AtomicU64::new(1)),
        waiting: Arc::default(),
        windows: Arc::default(),
        last_seq: Arc::default(),
    };
    let app = tauri::Builder::default()
        .invoke_handler(tauri::generate_handler![
            dashboard_credential,
            pair_code,
            new_pair_code,
            log_in,
            open_elicitation_url,
        ])
        .manage(link.clone())
        .setup({
            let link = link.clone();
            move |app| {
                let (app, link) = (app.handle().clone(), link);
                std::thread::Builder::new()
                    .name("window-host-stdin".into())
                    .spawn(move || read_tray(app, link))?;
                Ok(())
            }
        })
        .build(context)
        .unwrap_or_else(|e| {
            eprintln!("error: Switchboard's window host could not start: {e}");
            std::process::exit(1);
        });
    app.run(move |_app, event| match event {
        RunEvent::WindowEvent {
            label,
            event: tauri::WindowEvent::Destroyed,
            ..
        } => {
            link.windows.lock().expect("windows lock").remove(&label);
            link.report();
        }
        // the last window closing is not the end: the tray decides (an open may be on its way)
        RunEvent::ExitRequested { api, code, .. } if code.is_none() => api.prevent_exit(),
        _ => {}
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_keep_their_meaning_on_the_line() {
        let msgs = [
            ToHost::Open {
                seq: 3,
                window: WindowSpec {
                    label: "pair".into(),
                    title: "Pair New Client".into(),
                    width: 380.0,
                    height: 280.0,
                    fixed: true,
                    on_top: true,
                    center: true,
                },
            },
            ToHost::Close {
                label: "elicit-7".into(),
            },
            ToHost::Emit {
                to: "pair".into(),
                event: "pair-code".into(),
                payload: json!("123456"),
            },
            ToHost::Reply {
                id: 9,
                result: Err(json!({"kind": "gateway_down", "message": "no"})),
            },
            ToHost::Exit,
        ];
        for m in msgs {
            let line = serde_json::to_string(&m).unwrap();
            assert!(!line.contains('\n'), "{line}");
            assert_eq!(serde_json::from_str::<ToHost>(&line).unwrap(), m);
        }
        let up = FromHost::Windows {
            seq: 2,
            labels: ["main".to_string()].into(),
        };
        let line = serde_json::to_string(&up).unwrap();
        assert_eq!(line, r#"{"t":"windows","seq":2,"labels":["main"]}"#);
        assert_eq!(serde_json::from_str::<FromHost>(&line).unwrap(), up);
    }
}
