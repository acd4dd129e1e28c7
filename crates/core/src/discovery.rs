//! The discovery file: `mcp.json` in the data dir, so that local tools find a running gateway
//! without being told its port.
//!
//! Contents: `{"url":"http://127.0.0.1:<port>/mcp","ws_url":"ws://127.0.0.1:<port>/ws",
//! "servers":{"<server>":{"url":".../mcp/<server>","ws_url":".../ws/<server>"}},"pid":<int>,
//! "started_at":"<RFC 3339>"}`: the aggregated endpoints and each configured server's own.
//! It is written once the listener is bound (temp file + rename, mode 0600 on Unix, so a
//! reader never sees half a file), written again when the set of servers changes, and removed
//! at graceful shutdown — but only while it is
//! still ours: a gateway never deletes another gateway's announcement. At startup a file left
//! by a gateway that still answers `/healthz` is kept (that gateway owns it); one left by a
//! gateway that is gone (a crash, `kill -9`) is replaced.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The file's name in the data dir.
pub(crate) const FILE_NAME: &str = "mcp.json";

/// How long the liveness check of a previous owner may take.
const PROBE_TIMEOUT: Duration = Duration::from_millis(1000);

/// What the file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Discovery {
    /// The gateway's Streamable HTTP endpoint.
    pub url: String,
    /// Its MCP over WebSocket endpoint (absent in files of older versions).
    #[serde(default)]
    pub ws_url: String,
    /// Each configured server's own endpoints, by name.
    #[serde(default)]
    pub servers: BTreeMap<String, ServerEndpoints>,
    pub pid: u32,
    pub started_at: String,
}

/// One server's own endpoints (`/mcp/<server>`, `/ws/<server>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerEndpoints {
    pub url: String,
    pub ws_url: String,
}

impl Discovery {
    /// The announcement of this process serving on `addr`.
    pub(crate) fn for_this_process(addr: SocketAddr) -> Self {
        Self {
            url: format!("http://{addr}/mcp"),
            ws_url: format!("ws://{addr}/ws"),
            servers: BTreeMap::new(),
            pid: std::process::id(),
            started_at: crate::now_rfc3339(),
        }
    }

    /// This announcement listing `names`' own endpoints (next to `url`'s).
    pub(crate) fn with_servers(mut self, names: &[String]) -> Self {
        let http = self.url.clone();
        let ws = self.ws_url.clone();
        self.servers = names
            .iter()
            .map(|n| {
                let e = ServerEndpoints {
                    url: format!("{http}/{n}"),
                    ws_url: format!("{ws}/{n}"),
                };
                (n.clone(), e)
            })
            .collect();
        self
    }

    /// Reads the file in `data_dir`; `None` if it is missing or not a discovery file.
    pub fn read(data_dir: &Path) -> Option<Self> {
        Self::read_path(&data_dir.join(FILE_NAME))
    }

    fn read_path(path: &Path) -> Option<Self> {
        let bytes = std::fs::read(path).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

/// The written file; [`Announcement::withdraw`] removes it if it is still ours.
#[derive(Debug)]
pub struct Announcement {
    path: PathBuf,
    ours: Discovery,
}

/// Announces `ours` in `data_dir` unless another live gateway already did. `Ok(None)` when
/// the file was left to that gateway.
pub(crate) async fn announce(
    data_dir: &Path,
    ours: Discovery,
) -> std::io::Result<Option<Announcement>> {
    let path = data_dir.join(FILE_NAME);
    if let Some(previous) = Discovery::read(data_dir)
        && previous.pid != ours.pid
        && previous.url != ours.url
        && is_live(&previous.url).await
    {
        tracing::warn!(path = %path.display(), pid = previous.pid, url = %previous.url,
            "another Switchboard that still answers owns the discovery file; leaving it");
        return Ok(None);
    }
    let json = serde_json::to_vec(&ours).expect("discovery serializes");
    write_atomically(&path, &json)?;
    tracing::info!(path = %path.display(), url = %ours.url, "discovery file written");
    Ok(Some(Announcement { path, ours }))
}

impl Announcement {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the file again listing `names`' own endpoints, unless someone else has replaced
    /// it meanwhile (then it is left alone, as [`withdraw`](Self::withdraw) leaves it).
    pub(crate) fn servers_changed(&mut self, names: &[String]) {
        let next = self.ours.clone().with_servers(names);
        if next == self.ours || Discovery::read_path(&self.path).as_ref() != Some(&self.ours) {
            return;
        }
        let json = serde_json::to_vec(&next).expect("discovery serializes");
        match write_atomically(&self.path, &json) {
            Ok(()) => self.ours = next,
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot rewrite the discovery file");
            }
        }
    }

    /// Removes the file, unless someone else has replaced it meanwhile.
    pub(crate) fn withdraw(self) {
        let current = std::fs::read(&self.path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Discovery>(&b).ok());
        if current.as_ref() != Some(&self.ours) {
            tracing::info!(path = %self.path.display(), "discovery file is no longer ours; left alone");
            return;
        }
        match std::fs::remove_file(&self.path) {
            Ok(()) => tracing::info!(path = %self.path.display(), "discovery file removed"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot remove the discovery file");
            }
        }
    }
}

/// Whether a gateway answers `GET /healthz` next to `mcp_url`. A pid alone says little: pids
/// are reused, and a hung process is not a gateway anyone can use.
async fn is_live(mcp_url: &str) -> bool {
    let Some(base) = mcp_url.strip_suffix("/mcp") else {
        return false;
    };
    let Ok(client) = reqwest::Client::builder().timeout(PROBE_TIMEOUT).build() else {
        return false;
    };
    matches!(
        client.get(format!("{base}/healthz")).send().await,
        Ok(r) if r.status().is_success()
    )
}

/// Temp file in the same directory, flushed, then renamed over `path`.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("json.{}.tmp", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let written = (|| {
        let mut file = options.open(&tmp)?;
        std::io::Write::write_all(&mut file, bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(pid: u32, url: &str) -> Discovery {
        Discovery {
            url: url.into(),
            ws_url: String::new(),
            servers: BTreeMap::new(),
            pid,
            started_at: "2026-01-02T03:04:05.678+00:00".into(),
        }
    }

    #[tokio::test]
    async fn a_dead_owners_file_is_replaced_and_only_our_own_is_withdrawn() {
        let dir = tempfile::tempdir().unwrap();
        // Port 9 on loopback: nothing answers there.
        let stale = sample(1, "http://127.0.0.1:9/mcp");
        std::fs::write(
            dir.path().join(FILE_NAME),
            serde_json::to_vec(&stale).unwrap(),
        )
        .unwrap();
        let ours = Discovery::for_this_process("127.0.0.1:4567".parse().unwrap());
        let ann = announce(dir.path(), ours.clone()).await.unwrap().unwrap();
        assert_eq!(Discovery::read(dir.path()), Some(ours.clone()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(ann.path()).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // No temp file is left next to it.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(FILE_NAME)]);

        // Someone else took over the file: withdrawing leaves theirs.
        let theirs = sample(ours.pid + 1, "http://127.0.0.1:9/mcp");
        std::fs::write(ann.path(), serde_json::to_vec(&theirs).unwrap()).unwrap();
        ann.withdraw();
        assert_eq!(Discovery::read(dir.path()), Some(theirs));

        let ann = announce(dir.path(), ours.clone()).await.unwrap().unwrap();
        ann.withdraw();
        assert!(!dir.path().join(FILE_NAME).exists());
    }

    #[tokio::test]
    async fn a_change_of_servers_rewrites_our_file_and_never_theirs() {
        let dir = tempfile::tempdir().unwrap();
        let ours = Discovery::for_this_process("127.0.0.1:4567".parse().unwrap())
            .with_servers(&["fx".to_owned()]);
        let mut ann = announce(dir.path(), ours).await.unwrap().unwrap();
        let read = Discovery::read(dir.path()).unwrap();
        assert_eq!(read.servers["fx"].url, "http://127.0.0.1:4567/mcp/fx");
        assert_eq!(read.servers["fx"].ws_url, "ws://127.0.0.1:4567/ws/fx");

        ann.servers_changed(&["fx".to_owned(), "fy".to_owned()]);
        let read = Discovery::read(dir.path()).unwrap();
        assert_eq!(read.servers.keys().collect::<Vec<_>>(), ["fx", "fy"]);
        assert_eq!(read.pid, std::process::id());

        let theirs = sample(std::process::id() + 1, "http://127.0.0.1:9/mcp");
        std::fs::write(ann.path(), serde_json::to_vec(&theirs).unwrap()).unwrap();
        ann.servers_changed(&["fz".to_owned()]);
        assert_eq!(
            Discovery::read(dir.path()),
            Some(theirs),
            "not ours: left alone"
        );
        // a file of an older version (no ws_url, no servers) still reads
        std::fs::write(
            ann.path(),
            r#"{"url":"http://127.0.0.1:9/mcp","pid":1,"started_at":"x"}"#,
        )
        .unwrap();
        assert!(Discovery::read(dir.path()).unwrap().servers.is_empty());
    }

    #[tokio::test]
    async fn a_live_owners_file_is_left_alone() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok" }));
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let dir = tempfile::tempdir().unwrap();
        let live = sample(std::process::id() + 1, &format!("http://{addr}/mcp"));
        std::fs::write(
            dir.path().join(FILE_NAME),
            serde_json::to_vec(&live).unwrap(),
        )
        .unwrap();
        let ours = Discovery::for_this_process("127.0.0.1:4567".parse().unwrap());
        assert!(announce(dir.path(), ours).await.unwrap().is_none());
        assert_eq!(Discovery::read(dir.path()), Some(live));
        server.abort();
    }
}
