//! Switchboard's state on disk: SQLite (WAL) in the data dir, written by one thread.
//!
//! Tables: `projects` (the registration server's registry), `calls` (one row per tool call,
//! for the dashboard) and `server_lists` (what each on-demand server listed on its last run,
//! so that its tools are known while it is not running). Async code never touches the connection: it sends whole rows over a
//! bounded channel to the writer thread, which commits them in batches. For projects a full
//! channel makes the sender wait (a register waits for its commit); call rows are telemetry
//! and are dropped, counted, when the writer is behind, so a slow disk never slows a call.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::thread::JoinHandle;

use rusqlite::{Connection, OpenFlags, params};
use tokio::sync::{mpsc, oneshot};

/// The file name inside the data dir.
pub(crate) const FILE_NAME: &str = "registry.db";

/// Jobs waiting for the writer; senders wait when it is full.
const QUEUE: usize = 1024;
/// Rows committed in one transaction at most.
const BATCH: usize = 512;
/// Call rows kept; older ones are deleted as new ones arrive.
const CALLS_KEPT: i64 = 100_000;
/// SQLite's page cache for the one connection, as `PRAGMA cache_size` takes it (negative:
/// KiB). The writer appends call rows and trims the oldest, touching a few pages at each end
/// of two trees; SQLite's default (2,000 KiB, in the C allocator's memory, outside jemalloc)
/// filled up over the first hundred thousand calls and stayed: 1.8 MiB more RSS for good.
const CACHE_KIB: i64 = -512;

/// One tool call as recorded for the dashboard (same fields as a `telemetry.jsonl` line).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CallRow {
    pub ts_unix_ms: i64,
    pub request_id: String,
    pub session_id: Option<String>,
    pub tool_name: String,
    pub server: String,
    pub latency_ms: i64,
    pub replay_attempts: u32,
    pub outcome: String,
    pub error_code: Option<i64>,
    pub error_message: Option<String>,
}

/// One project as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectRow {
    pub path: String,
    pub name: String,
    pub db_path: String,
    pub agent: Option<String>,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub online: bool,
    pub sockets: u32,
    /// JSON of the last `db_operation` (with its project path stripped).
    pub last_db_operation: Option<String>,
    pub last_db_operation_ms: Option<i64>,
}

/// What a server listed on its last run (tools, prompts, resources, as JSON), and the
/// fingerprint of the config it ran with: a listing of another config is not its own.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ListingRow {
    pub server: String,
    pub fingerprint: String,
    pub listing: String,
    pub saved_ms: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the data directory {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("project registry database {path} cannot be opened: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "project registry database {path} is corrupt ({detail}); move it aside and Switchboard \
         will start with an empty registry"
    )]
    Corrupt { path: PathBuf, detail: String },
    #[error("project registry write failed: {0}")]
    Write(String),
    #[error("the project registry writer has stopped")]
    Gone,
}

type Ack = oneshot::Sender<Result<(), String>>;

#[derive(Debug)]
enum Job {
    Save(Box<ProjectRow>, Option<Ack>),
    /// A burst of call rows (the telemetry writer's), committed in one transaction.
    Calls(Vec<CallRow>),
    /// A server's listing, replacing the one before.
    SaveListing(Box<ListingRow>),
    /// Reads a server's listing (the writer owns the connection, so it reads too).
    LoadListing(String, oneshot::Sender<Option<ListingRow>>),
}

/// Handle to the registry database; cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    tx: Mutex<Option<mpsc::Sender<Job>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Call rows dropped because the writer was behind.
    dropped_calls: std::sync::atomic::AtomicU64,
}

fn is_corruption(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt)
    )
}

/// The error for a database that cannot be opened at `path`.
fn failure(path: &Path, source: rusqlite::Error) -> StoreError {
    if is_corruption(&source) {
        StoreError::Corrupt {
            path: path.to_path_buf(),
            detail: source.to_string(),
        }
    } else {
        StoreError::Open {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// How the connection runs: write-ahead log, `NORMAL` syncs, a small page cache.
fn settings(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "cache_size", CACHE_KIB)
}

impl Store {
    /// Opens (or creates) `dir/registry.db`, marks every project offline (nothing is connected
    /// to a process that just started) and returns the rows it holds.
    pub fn open(dir: &Path) -> Result<(Self, Vec<ProjectRow>), StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(FILE_NAME);
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| failure(&path, source))?;
        Self::start(path, conn)
    }

    /// A store that keeps nothing on disk, for tests of what sits above it.
    #[cfg(test)]
    pub(crate) fn in_memory() -> Result<(Self, Vec<ProjectRow>), StoreError> {
        let path = PathBuf::from(":memory:");
        let conn = Connection::open_in_memory().map_err(|source| failure(&path, source))?;
        Self::start(path, conn)
    }

    /// Checks and prepares an open database, loads its rows and starts the writer.
    fn start(path: PathBuf, conn: Connection) -> Result<(Self, Vec<ProjectRow>), StoreError> {
        let fail = |source: rusqlite::Error| failure(&path, source);
        settings(&conn).map_err(fail)?;
        let check: String = conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(fail)?;
        if check != "ok" {
            return Err(StoreError::Corrupt {
                path,
                detail: check,
            });
        }
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS projects (
                path TEXT PRIMARY KEY,
                name TEXT NOT NULL,
                db_path TEXT NOT NULL,
                agent TEXT,
                first_seen_ms INTEGER NOT NULL,
                last_seen_ms INTEGER NOT NULL,
                online INTEGER NOT NULL DEFAULT 0,
                socket_count INTEGER NOT NULL DEFAULT 0,
                last_db_operation TEXT,
                last_db_operation_ms INTEGER
            );
            UPDATE projects SET online = 0, socket_count = 0;
            CREATE TABLE IF NOT EXISTS calls (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                ts_unix_ms INTEGER NOT NULL,
                request_id TEXT NOT NULL,
                session_id TEXT,
                tool_name TEXT NOT NULL,
                server TEXT NOT NULL,
                latency_ms INTEGER NOT NULL,
                replay_attempts INTEGER NOT NULL,
                outcome TEXT NOT NULL,
                error_code INTEGER,
                error_message TEXT
            );
            CREATE INDEX IF NOT EXISTS calls_ts ON calls (ts_unix_ms);
            CREATE TABLE IF NOT EXISTS server_lists (
                server TEXT PRIMARY KEY,
                fingerprint TEXT NOT NULL,
                listing TEXT NOT NULL,
                saved_ms INTEGER NOT NULL
            );",
        )
        .map_err(fail)?;
        let rows = load(&conn).map_err(fail)?;

        let (tx, rx) = mpsc::channel(QUEUE);
        let writer = std::thread::Builder::new()
            .name("registry-writer".into())
            .spawn(move || write_loop(conn, rx))
            .map_err(|source| StoreError::Dir {
                path: path.clone(),
                source,
            })?;
        Ok((
            Self {
                path,
                tx: Mutex::new(Some(tx)),
                writer: Mutex::new(Some(writer)),
                dropped_calls: std::sync::atomic::AtomicU64::new(0),
            },
            rows,
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn sender(&self) -> Option<mpsc::Sender<Job>> {
        self.tx.lock().expect("store lock").clone()
    }

    /// Saves a row and waits until it is committed.
    pub async fn save(&self, row: ProjectRow) -> Result<(), StoreError> {
        let tx = self.sender().ok_or(StoreError::Gone)?;
        let (ack, done) = oneshot::channel();
        tx.send(Job::Save(Box::new(row), Some(ack)))
            .await
            .map_err(|_| StoreError::Gone)?;
        done.await
            .map_err(|_| StoreError::Gone)?
            .map_err(StoreError::Write)
    }

    /// Queues a row without waiting for the commit (presence changes, db operations). A failed
    /// write is logged by the writer.
    pub(crate) async fn save_later(&self, row: ProjectRow) {
        if let Some(tx) = self.sender()
            && tx.send(Job::Save(Box::new(row), None)).await.is_err()
        {
            tracing::warn!("project registry writer has stopped; change not saved");
        }
    }

    /// Queues call rows; never waits. Dropped (and counted) when the writer is behind.
    pub(crate) fn record_calls(&self, rows: Vec<CallRow>) {
        if rows.is_empty() {
            return;
        }
        let Some(tx) = self.sender() else { return };
        if let Err(e) = tx.try_send(Job::Calls(rows)) {
            let lost = match e.into_inner() {
                Job::Calls(rows) => rows.len() as u64,
                _ => 0,
            };
            let n = self
                .dropped_calls
                .fetch_add(lost, std::sync::atomic::Ordering::Relaxed);
            // warned at the first loss and whenever the count passes a power of two
            if n == 0 || (n + lost).ilog2() != n.ilog2() {
                tracing::warn!(
                    dropped = n + lost,
                    "call history writer is behind; rows dropped"
                );
            }
        }
    }

    /// Queues `row` as its server's listing (waits while the queue is full; a failed write is
    /// logged by the writer, and the listing is made again at the server's next run).
    pub(crate) async fn save_listing(&self, row: ListingRow) {
        if let Some(tx) = self.sender()
            && tx.send(Job::SaveListing(Box::new(row))).await.is_err()
        {
            tracing::warn!("registry writer has stopped; server listing not saved");
        }
    }

    /// `server`'s saved listing, if any (`None` too when the writer has stopped or the read
    /// failed, which it logs).
    pub(crate) async fn load_listing(&self, server: &str) -> Option<ListingRow> {
        let tx = self.sender()?;
        let (reply, answer) = oneshot::channel();
        tx.send(Job::LoadListing(server.to_owned(), reply))
            .await
            .ok()?;
        answer.await.ok().flatten()
    }

    pub(crate) fn dropped_calls(&self) -> u64 {
        self.dropped_calls
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Lets the writer finish what is queued and waits for it (bounded by the caller).
    pub async fn close(&self) {
        self.tx.lock().expect("store lock").take();
        let writer = self.writer.lock().expect("store lock").take();
        if let Some(handle) = writer {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }
}

fn load(conn: &Connection) -> rusqlite::Result<Vec<ProjectRow>> {
    let mut stmt = conn.prepare(
        "SELECT path, name, db_path, agent, first_seen_ms, last_seen_ms, online, socket_count,
                last_db_operation, last_db_operation_ms
         FROM projects ORDER BY last_seen_ms DESC",
    )?;
    stmt.query_map([], |r| {
        Ok(ProjectRow {
            path: r.get(0)?,
            name: r.get(1)?,
            db_path: r.get(2)?,
            agent: r.get(3)?,
            first_seen_ms: r.get(4)?,
            last_seen_ms: r.get(5)?,
            online: r.get(6)?,
            sockets: r.get(7)?,
            last_db_operation: r.get(8)?,
            last_db_operation_ms: r.get(9)?,
        })
    })?
    .collect()
}

fn upsert(conn: &Connection, row: &ProjectRow) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO projects (path, name, db_path, agent, first_seen_ms, last_seen_ms, online,
                               socket_count, last_db_operation, last_db_operation_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT(path) DO UPDATE SET
            name = excluded.name, db_path = excluded.db_path, agent = excluded.agent,
            last_seen_ms = excluded.last_seen_ms, online = excluded.online,
            socket_count = excluded.socket_count,
            last_db_operation = excluded.last_db_operation,
            last_db_operation_ms = excluded.last_db_operation_ms",
    )?;
    stmt.execute(params![
        row.path,
        row.name,
        row.db_path,
        row.agent,
        row.first_seen_ms,
        row.last_seen_ms,
        row.online,
        row.sockets,
        row.last_db_operation,
        row.last_db_operation_ms,
    ])?;
    Ok(())
}

fn upsert_listing(conn: &Connection, row: &ListingRow) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO server_lists (server, fingerprint, listing, saved_ms) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(server) DO UPDATE SET fingerprint = excluded.fingerprint,
            listing = excluded.listing, saved_ms = excluded.saved_ms",
    )?;
    stmt.execute(params![
        row.server,
        row.fingerprint,
        row.listing,
        row.saved_ms
    ])?;
    Ok(())
}

fn load_listing(conn: &Connection, server: &str) -> rusqlite::Result<Option<ListingRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT server, fingerprint, listing, saved_ms FROM server_lists WHERE server = ?1",
    )?;
    let mut rows = stmt.query_map([server], |r| {
        Ok(ListingRow {
            server: r.get(0)?,
            fingerprint: r.get(1)?,
            listing: r.get(2)?,
            saved_ms: r.get(3)?,
        })
    })?;
    rows.next().transpose()
}

fn insert_call(conn: &Connection, row: &CallRow) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO calls (ts_unix_ms, request_id, session_id, tool_name, server, latency_ms,
                            replay_attempts, outcome, error_code, error_message)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?;
    stmt.execute(params![
        row.ts_unix_ms,
        row.request_id,
        row.session_id,
        row.tool_name,
        row.server,
        row.latency_ms,
        row.replay_attempts,
        row.outcome,
        row.error_code,
        row.error_message,
    ])?;
    Ok(())
}

fn write_loop(mut conn: Connection, mut rx: mpsc::Receiver<Job>) {
    let mut calls_since_trim = 0usize;
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let mut results = Vec::with_capacity(batch.len());
        // what each LoadListing of the batch read, in order
        let mut loaded: Vec<Option<ListingRow>> = Vec::new();
        let committed = (|| -> rusqlite::Result<()> {
            let tx = conn.transaction()?;
            for job in &batch {
                results.push(match job {
                    Job::Save(row, _) => upsert(&tx, row).map_err(|e| e.to_string()),
                    Job::Calls(rows) => {
                        calls_since_trim += rows.len();
                        // every row is tried; the first failure is reported
                        let mut first_error = Ok(());
                        for row in rows {
                            if let Err(e) = insert_call(&tx, row)
                                && first_error.is_ok()
                            {
                                first_error = Err(e.to_string());
                            }
                        }
                        first_error
                    }
                    Job::SaveListing(row) => upsert_listing(&tx, row).map_err(|e| e.to_string()),
                    Job::LoadListing(server, _) => match load_listing(&tx, server) {
                        Ok(found) => {
                            loaded.push(found);
                            Ok(())
                        }
                        Err(e) => {
                            loaded.push(None);
                            Err(e.to_string())
                        }
                    },
                });
            }
            if calls_since_trim >= 1000 {
                calls_since_trim = 0;
                tx.execute(
                    "DELETE FROM calls WHERE id <= (SELECT MAX(id) FROM calls) - ?1",
                    [CALLS_KEPT],
                )?;
            }
            tx.commit()
        })();
        if let Err(e) = &committed {
            tracing::error!(error = %e, "project registry commit failed");
        }
        let mut loaded = loaded.into_iter();
        for (i, job) in batch.into_iter().enumerate() {
            let result = match (&committed, results.get(i)) {
                (Err(e), _) => Err(e.to_string()),
                (Ok(()), Some(Err(e))) => Err(e.clone()),
                (Ok(()), _) => Ok(()),
            };
            match job {
                Job::Save(row, ack) => {
                    if let Err(e) = &result {
                        tracing::error!(path = %row.path, error = %e, "project registry write failed");
                    }
                    if let Some(ack) = ack {
                        let _ = ack.send(result);
                    }
                }
                Job::Calls(rows) => {
                    if let Err(e) = result {
                        tracing::warn!(rows = rows.len(), error = %e, "call history write failed");
                    }
                }
                Job::SaveListing(row) => {
                    if let Err(e) = result {
                        tracing::warn!(server = %row.server, error = %e, "server listing write failed");
                    }
                }
                Job::LoadListing(server, reply) => {
                    let found = loaded.next().flatten();
                    if let Err(e) = &result {
                        tracing::warn!(%server, error = %e, "server listing read failed");
                    }
                    // read inside a transaction that did not commit: not to be trusted
                    let _ = reply.send(found.filter(|_| result.is_ok()));
                }
            }
        }
    }
    // A clean checkpoint so the WAL does not linger after a graceful exit.
    let _ = conn.pragma_update(None, "wal_checkpoint", "TRUNCATE");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(path: &str) -> ProjectRow {
        ProjectRow {
            path: path.into(),
            name: "p".into(),
            db_path: format!("{path}/db"),
            agent: None,
            first_seen_ms: 1,
            last_seen_ms: 2,
            online: true,
            sockets: 2,
            last_db_operation: None,
            last_db_operation_ms: None,
        }
    }

    #[tokio::test]
    async fn rows_survive_reopen_and_come_back_offline() {
        let dir = tempfile::tempdir().unwrap();
        let (store, rows) = Store::open(dir.path()).unwrap();
        assert!(rows.is_empty());
        store.save(row("/a")).await.unwrap();
        let mut later = row("/a");
        later.first_seen_ms = 99; // first_seen is kept from the first insert
        later.last_seen_ms = 50;
        store.save(later).await.unwrap();
        store.close().await;

        let (_store, rows) = Store::open(dir.path()).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].first_seen_ms, 1);
        assert_eq!(rows[0].last_seen_ms, 50);
        assert!(!rows[0].online);
        assert_eq!(rows[0].sockets, 0);
    }

    #[tokio::test]
    async fn a_server_listing_survives_reopen_and_the_newest_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path()).unwrap();
        assert_eq!(store.load_listing("fx").await, None);
        let listing = |fp: &str, json: &str| ListingRow {
            server: "fx".into(),
            fingerprint: fp.into(),
            listing: json.into(),
            saved_ms: 7,
        };
        store.save_listing(listing("a", "{\"tools\":[]}")).await;
        store.save_listing(listing("b", "{\"tools\":[1]}")).await;
        store.close().await;

        let (store, _) = Store::open(dir.path()).unwrap();
        assert_eq!(
            store.load_listing("fx").await,
            Some(listing("b", "{\"tools\":[1]}"))
        );
        assert_eq!(store.load_listing("other").await, None);
    }

    #[test]
    fn the_connection_keeps_a_small_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join(FILE_NAME)).unwrap();
        settings(&conn).unwrap();
        let pragma = |name: &str| -> String {
            conn.query_row(&format!("PRAGMA {name}"), [], |r| {
                r.get::<_, rusqlite::types::Value>(0)
            })
            .map(|v| format!("{v:?}"))
            .unwrap()
        };
        assert_eq!(pragma("cache_size"), format!("Integer({CACHE_KIB})"));
        assert_eq!(pragma("journal_mode"), "Text(\"wal\")");
        assert_eq!(pragma("synchronous"), "Integer(1)", "NORMAL");
    }

    #[test]
    fn a_corrupt_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), vec![0x5a; 8192]).unwrap();
        let err = Store::open(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
        assert!(
            err.to_string()
                .contains(&*dir.path().join(FILE_NAME).to_string_lossy()),
            "{err}"
        );
    }

    #[test]
    fn an_unusable_directory_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain-file");
        std::fs::write(&file, b"x").unwrap();
        let err = Store::open(&file.join("data")).unwrap_err();
        assert!(err.to_string().contains("plain-file"), "{err}");
    }
}
