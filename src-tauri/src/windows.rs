//! The tray's side of the window host ([`crate::host`]): opening a window starts the host if
//! none runs, and the host is told to exit once it reports no window and every open sent to
//! it has been handled; it is reaped when its stdout ends. Pages' commands arrive as
//! [`HostCall`]s on a bounded queue that the shell answers ([`crate::commands`]).
//!
//! Messages to a host go through a bounded queue to a writer thread of its own (a host that
//! stops reading cannot stall the tray): when the queue is full the message is dropped and
//! logged. Every host ends with the tray, as its stdin closes.

use std::collections::BTreeSet;
use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::host::{self, FromHost, ToHost, WindowSpec};

/// Messages waiting for a host's writer thread; more are dropped (and logged).
const TO_HOST_QUEUE: usize = 256;
/// Pages' commands waiting for the shell; more are answered "busy" at once.
pub(crate) const CALL_QUEUE: usize = 64;

/// A page's command, to be answered with [`HostCall::answer`].
#[derive(Debug)]
pub(crate) struct HostCall {
    pub(crate) cmd: String,
    pub(crate) args: Value,
    id: u64,
    to: SyncSender<ToHost>,
}

impl HostCall {
    pub(crate) fn answer(self, result: Result<Value, Value>) {
        let _ = self.to.try_send(ToHost::Reply {
            id: self.id,
            result,
        });
    }
}

/// The running host, as the tray knows it.
#[derive(Debug)]
struct Running {
    generation: u64,
    pid: u32,
    to: SyncSender<ToHost>,
    /// The last open sent, and the last the host said it has handled.
    sent: u64,
    handled: u64,
    labels: BTreeSet<String>,
}

#[derive(Debug, Default)]
struct State {
    host: Option<Running>,
    generations: u64,
}

/// The app's windows, in the window host.
#[derive(Debug, Clone)]
pub(crate) struct Windows {
    state: Arc<Mutex<State>>,
    calls: mpsc::Sender<HostCall>,
    /// Whether a host with no window left stays: under WebDriver it must, since the session
    /// that drives the windows lives in it (see [`crate::under_webdriver`]).
    keep_host: bool,
}

impl Windows {
    /// The windows, and the queue of pages' commands the shell is to answer. With `keep_host`
    /// a host stays when its last window closes (for WebDriver); it still ends with the tray.
    pub(crate) fn new(keep_host: bool) -> (Self, mpsc::Receiver<HostCall>) {
        let (calls, rx) = mpsc::channel(CALL_QUEUE);
        let w = Self {
            state: Arc::default(),
            calls,
            keep_host,
        };
        (w, rx)
    }

    /// Shows `window`, starting the host if none runs; says why if it cannot (also logged).
    pub(crate) fn open(&self, window: WindowSpec) -> Result<(), String> {
        let mut state = self.state.lock().expect("windows lock");
        // a host whose queue is gone (it died) is replaced; one more try
        for _ in 0..2 {
            if state.host.is_none() {
                state.generations += 1;
                match self.spawn(state.generations) {
                    Ok(h) => state.host = Some(h),
                    Err(e) => {
                        tracing::error!(error = %e, label = %window.label, "could not start the window host");
                        return Err(format!("the window host could not start: {e}"));
                    }
                }
            }
            let h = state.host.as_mut().expect("a host");
            let seq = h.sent + 1;
            match h.to.try_send(ToHost::Open {
                seq,
                window: window.clone(),
            }) {
                Ok(()) => {
                    h.sent = seq;
                    return Ok(());
                }
                Err(TrySendError::Full(_)) => {
                    tracing::warn!(pid = h.pid, label = %window.label, "the window host is not reading: the window was not opened");
                    return Err(format!("the window host (pid {}) is not answering", h.pid));
                }
                Err(TrySendError::Disconnected(_)) => state.host = None,
            }
        }
        Err("the window host ended twice as it was asked to open the window".into())
    }

    /// Closes window `label` if it is open.
    pub(crate) fn close(&self, label: &str) {
        self.send(ToHost::Close {
            label: label.to_owned(),
        });
    }

    /// Tells window `to`'s page about `event`, if the window is open.
    pub(crate) fn emit(&self, to: &str, event: &str, payload: Value) {
        self.send(ToHost::Emit {
            to: to.to_owned(),
            event: event.to_owned(),
            payload,
        });
    }

    /// The host's pid, if one runs.
    #[cfg(test)]
    fn host_pid(&self) -> Option<u32> {
        let state = self.state.lock().expect("windows lock");
        state.host.as_ref().map(|h| h.pid)
    }

    fn send(&self, msg: ToHost) {
        let state = self.state.lock().expect("windows lock");
        if let Some(h) = &state.host
            && let Err(TrySendError::Full(_)) = h.to.try_send(msg)
        {
            tracing::warn!(
                pid = h.pid,
                "the window host is not reading: a message to it dropped"
            );
        }
    }

    fn spawn(&self, generation: u64) -> std::io::Result<Running> {
        let exe = std::env::current_exe()?;
        self.spawn_command(Command::new(exe).arg(host::ARG), generation)
    }

    fn spawn_command(&self, cmd: &mut Command, generation: u64) -> std::io::Result<Running> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let pid = child.id();
        let (to, queue) = sync_channel::<ToHost>(TO_HOST_QUEUE);
        let mut stdin = child.stdin.take().expect("piped stdin");
        std::thread::Builder::new()
            .name("window-host-writer".into())
            .spawn(move || {
                for msg in queue {
                    let mut line = serde_json::to_string(&msg).expect("a tray message serializes");
                    line.push('\n');
                    if stdin
                        .write_all(line.as_bytes())
                        .and_then(|()| stdin.flush())
                        .is_err()
                    {
                        break;
                    }
                }
                // dropping stdin ends the host
            })?;
        let reader = Reader {
            windows: self.clone(),
            generation,
        };
        std::thread::Builder::new()
            .name("window-host-reader".into())
            .spawn(move || reader.run(child))?;
        tracing::info!(pid, "window host started");
        Ok(Running {
            generation,
            pid,
            to,
            sent: 0,
            handled: 0,
            labels: BTreeSet::new(),
        })
    }
}

/// Reads one host's messages until its stdout ends, then reaps it. It holds no sender of the
/// host's queue: once the tray forgets a host (or is gone), the queue's writer ends and closes
/// the host's stdin, which ends the host.
struct Reader {
    windows: Windows,
    generation: u64,
}

impl Reader {
    fn run(self, mut child: Child) {
        let out = BufReader::new(child.stdout.take().expect("piped stdout"));
        for line in out.lines() {
            let Ok(line) = line else { break };
            match serde_json::from_str::<FromHost>(&line) {
                Ok(FromHost::Windows { seq, labels }) => self.windows_now(seq, labels),
                Ok(FromHost::Call { id, cmd, args }) => self.call(id, cmd, args),
                Err(_) => tracing::debug!(%line, "window host: a line that is not a message"),
            }
        }
        let status = child.wait();
        let mut state = self.windows.state.lock().expect("windows lock");
        if let Some(h) = &state.host
            && h.generation == self.generation
        {
            tracing::warn!(pid = h.pid, ?status, windows = ?h.labels, "the window host ended by itself");
            state.host = None;
        } else {
            tracing::info!(pid = child.id(), ?status, "window host ended");
        }
    }

    fn windows_now(&self, seq: u64, labels: BTreeSet<String>) {
        let mut state = self.windows.state.lock().expect("windows lock");
        let Some(h) = state
            .host
            .as_mut()
            .filter(|h| h.generation == self.generation)
        else {
            return;
        };
        h.handled = seq;
        h.labels = labels;
        if h.labels.is_empty() && h.handled == h.sent && !self.windows.keep_host {
            let h = state.host.take().expect("the host");
            // its queue may be full of a stuck host's messages: then its stdin closes as the
            // queue's last sender goes, which ends it as well
            let _ = h.to.try_send(ToHost::Exit);
        }
    }

    fn call(&self, id: u64, cmd: String, args: Value) {
        let to = {
            let state = self.windows.state.lock().expect("windows lock");
            match state
                .host
                .as_ref()
                .filter(|h| h.generation == self.generation)
            {
                Some(h) => h.to.clone(),
                None => return, // a host on its way out: its pages are closing
            }
        };
        let call = HostCall { cmd, args, id, to };
        if let Err(e) = self.windows.calls.try_send(call) {
            let call = match e {
                mpsc::error::TrySendError::Full(c) | mpsc::error::TrySendError::Closed(c) => c,
            };
            let busy = json!({ "kind": "busy", "message": format!("the tray has {CALL_QUEUE} commands waiting; try again") });
            call.answer(Err(busy));
        }
    }
}

/// The dashboard window's label (its capability depends on it).
pub(crate) const DASHBOARD: &str = "main";

/// The dashboard window.
pub(crate) fn dashboard() -> WindowSpec {
    WindowSpec {
        label: DASHBOARD.into(),
        title: "Switchboard".into(),
        width: 1000.0,
        height: 700.0,
        fixed: false,
        on_top: false,
        center: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
        let end = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < end, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A stand-in host, a real child process (a shell script): it answers each open with the
    /// windows it has, asks one command, and exits on `exit` or when its stdin ends.
    fn fake_host(dir: &std::path::Path) -> Command {
        let script = dir.join("host.sh");
        std::fs::write(
            &script,
            r#"labels=""
while IFS= read -r line; do
  case "$line" in
    *'"t":"open"'*)
      seq=$(printf '%s' "$line" | sed 's/.*"seq":\([0-9]*\).*/\1/')
      label=$(printf '%s' "$line" | sed 's/.*"label":"\([^"]*\)".*/\1/')
      labels="\"$label\""
      printf '{"t":"windows","seq":%s,"labels":[%s]}\n' "$seq" "$labels"
      printf '{"t":"call","id":1,"cmd":"pair_code","args":{}}\n' ;;
    *'"t":"close"'*)
      labels=""
      printf '{"t":"windows","seq":%s,"labels":[]}\n' "$seq" ;;
    *'"t":"reply"'*) printf '%s\n' "$line" > "$(dirname "$0")/reply" ;;
    *'"t":"exit"'*) exit 0 ;;
  esac
done
"#,
        )
        .unwrap();
        let mut c = Command::new("sh");
        c.arg(script);
        c
    }

    /// Starts `cmd` as the host of `windows` (as its first `open` would); returns its pid.
    fn install(windows: &Windows, cmd: &mut Command) -> u32 {
        let host = windows.spawn_command(cmd, 1).unwrap();
        let pid = host.pid;
        let mut s = windows.state.lock().unwrap();
        s.generations = 1;
        s.host = Some(host);
        pid
    }

    #[test]
    fn a_host_starts_with_a_window_answers_calls_and_ends_with_its_last_window() {
        let dir = std::env::temp_dir().join(format!("sb-windows-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (windows, mut calls) = Windows::new(false);
        let pid = install(&windows, &mut fake_host(&dir));
        windows.open(dashboard()).unwrap();
        // the page's command reaches the shell's queue, and its answer the host
        let call = wait_call(&mut calls);
        assert_eq!(call.cmd, "pair_code");
        call.answer(Ok(json!({"code": "123456"})));
        wait_for("the reply at the host", || dir.join("reply").exists());
        let reply = std::fs::read_to_string(dir.join("reply")).unwrap();
        assert_eq!(
            serde_json::from_str::<ToHost>(&reply).unwrap(),
            ToHost::Reply {
                id: 1,
                result: Ok(json!({"code": "123456"}))
            }
        );
        assert_eq!(windows.host_pid(), Some(pid));
        // its last window closing ends it: told to exit, reaped (no zombie left)
        windows.close(DASHBOARD);
        wait_for("the host told to go", || windows.host_pid().is_none());
        wait_for("the host reaped", || {
            !std::path::Path::new(&format!("/proc/{pid}")).exists()
        });
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn under_webdriver_a_host_stays_without_windows_and_ends_with_the_tray() {
        let dir = std::env::temp_dir().join(format!("sb-windows-kept-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (windows, mut calls) = Windows::new(true);
        let pid = install(&windows, &mut fake_host(&dir));
        windows.open(dashboard()).unwrap();
        wait_call(&mut calls).answer(Ok(Value::Null));
        windows.close(DASHBOARD);
        wait_for("the host saying it has no window", || {
            let s = windows.state.lock().unwrap();
            s.host
                .as_ref()
                .is_some_and(|h| h.labels.is_empty() && h.handled == 1)
        });
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(windows.host_pid(), Some(pid), "the host was told to go");
        // the tray going (here: forgetting it) closes the host's stdin: it ends
        drop(windows.state.lock().unwrap().host.take());
        wait_for("the host gone with the tray", || {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
                s.rsplit(')').next().unwrap().trim_start().starts_with('Z')
            })
        });
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_host_that_dies_by_itself_is_forgotten() {
        let (windows, _calls) = Windows::new(false);
        install(&windows, Command::new("sh").args(["-c", "exit 3"]));
        wait_for("the dead host forgotten", || windows.host_pid().is_none());
    }

    fn wait_call(calls: &mut mpsc::Receiver<HostCall>) -> HostCall {
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(c) = calls.try_recv() {
                return c;
            }
            assert!(Instant::now() < end, "no call from the host");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
