//! The stdio transport: a child process speaking newline-delimited JSON-RPC, its stderr kept
//! in the server's bounded tail.
//!
//! The child gets its own process group (a Ctrl+C in the terminal reaches only the gateway,
//! which stops its children itself, in order), is killed if its handle is dropped, and is
//! always reaped. Its pipes are read on the gateway's task tracker; the stderr reader ends
//! when stderr closes or the server is shut down.

use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::connection::{Connection, RpcError};
use super::notice::NoticeSender;
use super::state::Inner;
use crate::config::ServerConfig;

/// A running child.
pub(super) struct Process {
    child: Child,
    conn: Arc<Connection>,
}

/// Spawns `cfg.command` and starts a connection over its stdio; `secret_env` holds the
/// values of `cfg.secret_env`, read just before.
pub(super) fn spawn(
    inner: &Arc<Inner>,
    cfg: &ServerConfig,
    secret_env: &std::collections::BTreeMap<String, String>,
    notices: NoticeSender,
) -> Result<(Process, Arc<Connection>), String> {
    let mut cmd = Command::new(&cfg.command);
    cmd.args(&cfg.args)
        .envs(&cfg.env)
        .envs(secret_env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(cwd) = &cfg.cwd {
        cmd.current_dir(cwd);
    }
    #[cfg(unix)]
    cmd.process_group(0);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {:?}: {e}", cfg.command))?;
    let (Some(stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err("child has no stdio pipes".into());
    };
    let tail = inner.clone();
    // Until stderr closes: a crash's last lines still reach the tail. A grandchild may hold
    // the pipe open past the child, so shutdown ends it too.
    inner.tasks.spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        loop {
            let line = tokio::select! {
                line = lines.next_line() => line,
                () = tail.shutdown.cancelled() => break,
            };
            let Ok(Some(line)) = line else { break };
            tracing::debug!(server = %tail.name, "stderr: {line}");
            tail.push_stderr(line);
        }
    });
    let conn = Connection::start(
        &cfg.name,
        stdin,
        stdout,
        notices,
        &inner.shutdown,
        &inner.tasks,
    );
    Ok((
        Process {
            child,
            conn: conn.clone(),
        },
        conn,
    ))
}

impl Process {
    pub(super) fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Waits for the child to exit.
    pub(super) async fn ended(&mut self) -> String {
        describe_exit(self.child.wait().await)
    }

    /// The handshake failed: the exit status (or a kill if it hangs) and the last stderr line.
    pub(super) async fn abandon(mut self, inner: &Inner, error: RpcError) -> String {
        self.conn.mark_closed();
        let exit = match tokio::time::timeout(Duration::from_millis(500), self.child.wait()).await {
            Ok(status) => describe_exit(status),
            Err(_) => {
                let _ = self.child.kill().await;
                "did not answer initialize".into()
            }
        };
        let last = inner.stderr.lock().expect("stderr lock").back().cloned();
        format!(
            "initialize failed ({error}); the process {exit}{}",
            last.map(|l| format!("; last stderr line: {l}"))
                .unwrap_or_default()
        )
    }

    /// Close stdin, wait for the grace period, then kill. Always reaps the child.
    pub(super) async fn stop(mut self, inner: &Inner) {
        self.conn.close_stdin();
        match tokio::time::timeout(inner.limits.stop_grace(), self.child.wait()).await {
            Ok(status) => {
                tracing::info!(server = %inner.name, "stopped: {}", describe_exit(status));
            }
            Err(_) => {
                tracing::warn!(server = %inner.name, "did not exit after stdin closed; killing it");
                let _ = self.child.kill().await;
            }
        }
        self.conn.mark_closed();
    }
}

fn describe_exit(status: std::io::Result<ExitStatus>) -> String {
    match status {
        Ok(s) => {
            #[cfg(unix)]
            {
                use std::os::unix::process::ExitStatusExt;
                if let Some(sig) = s.signal() {
                    return format!("killed by signal {sig}");
                }
            }
            match s.code() {
                Some(code) => format!("exited with code {code}"),
                None => "exited".into(),
            }
        }
        Err(e) => format!("could not be waited for: {e}"),
    }
}
