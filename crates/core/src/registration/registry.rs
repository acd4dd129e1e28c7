//! Who is registered: projects, their sockets, online/offline, in memory and on disk.
//!
//! The in-memory table is the truth while running (one `std::sync::Mutex`, never held across an
//! `.await`); every change is written through to the [`Store`]. Presence is counted in sockets:
//! a project is online while it has at least one, and keeps at most `max_sockets_per_project`
//! of them, retiring the oldest, because the real client opens a new socket every second and
//! never closes the old ones.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::protocol::{DbOperation, ProjectInfo};
use crate::events::{EventBus, HubEvent};
use crate::store::{ProjectRow, Store, StoreError};

/// Identifies one registration socket for the life of the process.
pub(crate) type ConnId = u64;

/// Cheap handle; clone freely.
#[derive(Debug, Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    projects: Mutex<HashMap<String, Project>>,
    store: Arc<Store>,
    bus: EventBus,
    max_sockets_per_project: usize,
}

#[derive(Debug)]
struct Project {
    row: ProjectRow,
    /// Oldest first.
    sockets: Vec<Attached>,
    /// Whether the store has ever committed this project; one that was never saved is
    /// forgotten again when its first registration fails.
    saved: bool,
}

#[derive(Debug)]
struct Attached {
    conn: ConnId,
    /// Cancelled to make that socket's task say `goodbye{reason:"superseded"}` and close.
    retire: CancellationToken,
}

/// A project as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProjectView {
    pub path: String,
    pub name: String,
    pub db_path: String,
    pub agent: Option<String>,
    pub online: bool,
    pub sockets: u32,
    pub first_seen: String,
    pub last_seen: String,
    pub last_db_operation: Option<serde_json::Value>,
    pub last_db_operation_at: Option<String>,
}

/// A `db_operation` named a project nobody registered.
#[derive(Debug, thiserror::Error)]
#[error("db_operation for {0:?}, which is not registered here; send `register` first")]
pub struct NotRegistered(pub String);

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl Registry {
    /// Starts from the rows the store held (all offline).
    pub fn new(
        store: Arc<Store>,
        rows: Vec<ProjectRow>,
        bus: EventBus,
        max_sockets_per_project: usize,
    ) -> Self {
        let projects = rows
            .into_iter()
            .map(|row| {
                (
                    row.path.clone(),
                    Project {
                        row,
                        sockets: Vec::new(),
                        saved: true,
                    },
                )
            })
            .collect();
        Self {
            inner: Arc::new(Inner {
                projects: Mutex::new(projects),
                store,
                bus,
                max_sockets_per_project: max_sockets_per_project.max(1),
            }),
        }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Attaches socket `conn` to the project at `info.path` (already validated and
    /// canonical). Idempotent per socket and path. Returns once the change is on disk.
    pub async fn register(
        &self,
        conn: ConnId,
        retire: &CancellationToken,
        info: ProjectInfo,
    ) -> Result<(), StoreError> {
        let row = {
            let mut projects = self.inner.projects.lock().expect("registry lock");
            let now = now_ms();
            let project = projects
                .entry(info.path.clone())
                .or_insert_with(|| Project {
                    row: ProjectRow {
                        path: info.path.clone(),
                        name: info.name.clone(),
                        db_path: info.db_path.clone(),
                        agent: info.agent.clone(),
                        first_seen_ms: now,
                        last_seen_ms: now,
                        online: false,
                        sockets: 0,
                        last_db_operation: None,
                        last_db_operation_ms: None,
                    },
                    sockets: Vec::new(),
                    saved: false,
                });
            let was_online = !project.sockets.is_empty();
            project.row.name = info.name;
            project.row.db_path = info.db_path;
            project.row.agent = info.agent;
            project.row.last_seen_ms = now;
            if !project.sockets.iter().any(|s| s.conn == conn) {
                project.sockets.push(Attached {
                    conn,
                    retire: retire.clone(),
                });
            }
            let excess = project
                .sockets
                .len()
                .saturating_sub(self.inner.max_sockets_per_project);
            for old in project.sockets.drain(..excess) {
                old.retire.cancel();
            }
            project.row.online = true;
            project.row.sockets = project.sockets.len() as u32;
            if !was_online {
                self.inner.bus.publish(HubEvent::ProjectOnline {
                    path: project.row.path.clone(),
                    name: project.row.name.clone(),
                    sockets: project.sockets.len(),
                });
            }
            project.row.clone()
        };
        let path = row.path.clone();
        self.inner.store.save(row).await?;
        if let Some(p) = self
            .inner
            .projects
            .lock()
            .expect("registry lock")
            .get_mut(&path)
        {
            p.saved = true;
        }
        Ok(())
    }

    /// Undoes a registration whose save failed: detaches the socket and forgets a project
    /// that was never saved.
    pub(crate) async fn rollback(&self, conn: ConnId, path: &str) {
        self.detach(conn, path).await;
        let mut projects = self.inner.projects.lock().expect("registry lock");
        if projects
            .get(path)
            .is_some_and(|p| !p.saved && p.sockets.is_empty())
        {
            projects.remove(path);
        }
    }

    /// Detaches socket `conn` from `path`; the project goes offline with its last socket.
    /// A socket already retired (superseded) is no longer attached: nothing happens.
    pub(crate) async fn detach(&self, conn: ConnId, path: &str) {
        let row = {
            let mut projects = self.inner.projects.lock().expect("registry lock");
            let Some(project) = projects.get_mut(path) else {
                return;
            };
            let before = project.sockets.len();
            project.sockets.retain(|s| s.conn != conn);
            if project.sockets.len() == before {
                return;
            }
            project.row.sockets = project.sockets.len() as u32;
            project.row.last_seen_ms = now_ms();
            if project.sockets.is_empty() {
                project.row.online = false;
                self.inner.bus.publish(HubEvent::ProjectOffline {
                    path: project.row.path.clone(),
                    name: project.row.name.clone(),
                });
            }
            project.row.clone()
        };
        self.inner.store.save_later(row).await;
    }

    /// Records a `db_operation` for a registered project and publishes it.
    pub async fn db_operation(
        &self,
        project_path: &str,
        op: DbOperation,
    ) -> Result<(), NotRegistered> {
        let key = self.resolve(project_path).await;
        let row = {
            let mut projects = self.inner.projects.lock().expect("registry lock");
            let Some(project) = key.and_then(|k| projects.get_mut(&k)) else {
                return Err(NotRegistered(project_path.to_owned()));
            };
            let now = now_ms();
            project.row.last_seen_ms = now;
            project.row.last_db_operation_ms = Some(now);
            project.row.last_db_operation = serde_json::to_string(&op).ok();
            self.inner.bus.publish(HubEvent::DbOperation {
                project_path: project.row.path.clone(),
                operation: op,
            });
            project.row.clone()
        };
        self.inner.store.save_later(row).await;
        Ok(())
    }

    /// The registry key for a path as a client wrote it: as is, or canonicalized.
    async fn resolve(&self, path: &str) -> Option<String> {
        if self
            .inner
            .projects
            .lock()
            .expect("registry lock")
            .contains_key(path)
        {
            return Some(path.to_owned());
        }
        let canonical = tokio::fs::canonicalize(path).await.ok()?;
        Some(canonical.to_string_lossy().into_owned())
    }

    /// Every project ever registered: online ones first, then most recently seen.
    pub fn projects(&self) -> Vec<ProjectView> {
        let projects = self.inner.projects.lock().expect("registry lock");
        let mut views: Vec<ProjectView> = projects
            .values()
            .map(|p| {
                let r = &p.row;
                ProjectView {
                    path: r.path.clone(),
                    name: r.name.clone(),
                    db_path: r.db_path.clone(),
                    agent: r.agent.clone(),
                    online: !p.sockets.is_empty(),
                    sockets: p.sockets.len() as u32,
                    first_seen: rfc3339(r.first_seen_ms),
                    last_seen: rfc3339(r.last_seen_ms),
                    last_db_operation: r
                        .last_db_operation
                        .as_deref()
                        .and_then(|s| serde_json::from_str(s).ok()),
                    last_db_operation_at: r.last_db_operation_ms.map(rfc3339),
                }
            })
            .collect();
        drop(projects);
        views.sort_by(|a, b| {
            b.online
                .cmp(&a.online)
                .then_with(|| b.last_seen.cmp(&a.last_seen))
                .then_with(|| a.path.cmp(&b.path))
        });
        views
    }

    /// Projects with at least one socket.
    pub(crate) fn online_count(&self) -> usize {
        let projects = self.inner.projects.lock().expect("registry lock");
        projects.values().filter(|p| !p.sockets.is_empty()).count()
    }
}
