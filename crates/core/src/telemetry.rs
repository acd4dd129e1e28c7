//! Telemetry: every call recorded (a `telemetry.jsonl` line, an SQLite row), counters per
//! server and method, a JSON snapshot for the built-in tools and Prometheus text for
//! `/metrics`.
//!
//! Recording never waits on the disk: lines go through a bounded queue to a writer thread and
//! are dropped (and counted) if it falls behind. [`Telemetry::flush`] hands over what it holds
//! (the gateway does before it closes the store). Handing rows to SQLite less often (every
//! 250 ms, or every other burst) was tried: fewer, larger commits made the gateway bench worse
//! on 2 cores (longer tail, less throughput, more CPU per call with the release build).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use crate::store::{CallRow, Store};

/// The file name inside the data dir.
pub(crate) const FILE_NAME: &str = "telemetry.jsonl";
const QUEUE: usize = 8192;
/// Upper bounds (ms) of the latency histogram buckets.
const BUCKETS_MS: [u64; 12] = [1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000];

/// One finished request through the gateway.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct CallRecord {
    pub event: &'static str,
    pub ts_unix_ms: i64,
    /// The client's JSON-RPC id, as text.
    pub request_id: String,
    /// The tool (for `tools/call`) or resource/prompt named by the client.
    pub tool_name: String,
    pub server: String,
    /// `tools/call`, `resources/read`, `prompts/get`.
    #[serde(skip)]
    pub method: &'static str,
    #[serde(skip)]
    pub session_id: Option<String>,
    pub latency_ms: u64,
    pub replay_attempts: u32,
    /// `ok` or `error`.
    pub outcome: &'static str,
    pub error_code: Option<i64>,
    pub error_message: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Counters {
    pub requests: u64,
    pub successes: u64,
    pub errors: u64,
    pub replays: u64,
    pub latency_ms_sum: u64,
    /// Cumulative counts per bucket of `BUCKETS_MS`, then +Inf.
    #[serde(skip)]
    pub buckets: [u64; BUCKETS_MS.len() + 1],
}

/// Cheap handle; clone freely.
#[derive(Debug, Clone)]
pub(crate) struct Telemetry {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    /// The writer thread's queue: each call, made into its JSON line and SQLite row there (off
    /// the call's path).
    lines: mpsc::Sender<Line>,
    /// By server, then method.
    counters: Mutex<BTreeMap<String, BTreeMap<&'static str, Counters>>>,
    dropped_lines: AtomicU64,
    store: Arc<Store>,
}

impl Telemetry {
    /// Opens `dir/telemetry.jsonl` for appending (created if missing).
    pub(crate) fn open(dir: &Path, store: Arc<Store>) -> std::io::Result<Self> {
        let path = dir.join(FILE_NAME);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        Self::start(path, file, store)
    }

    /// Telemetry that writes its lines nowhere (the rows still go to `store`), for tests.
    #[cfg(test)]
    pub(crate) fn in_memory(store: Arc<Store>) -> std::io::Result<Self> {
        Self::start(PathBuf::from("/dev/null"), std::io::sink(), store)
    }

    fn start(
        path: PathBuf,
        out: impl std::io::Write + Send + 'static,
        store: Arc<Store>,
    ) -> std::io::Result<Self> {
        let (lines, rx) = mpsc::channel(QUEUE);
        let rows = store.clone();
        std::thread::Builder::new()
            .name("telemetry-writer".into())
            .spawn(move || write_lines(out, rx, &rows))?;
        Ok(Self {
            inner: Arc::new(Inner {
                path,
                lines,
                counters: Mutex::new(BTreeMap::new()),
                dropped_lines: AtomicU64::new(0),
                store,
            }),
        })
    }

    /// The database its call rows go to (the gateway keeps on-demand servers' listings
    /// there too).
    pub(crate) fn store(&self) -> &Arc<Store> {
        &self.inner.store
    }

    pub(crate) fn record(&self, rec: CallRecord) {
        {
            let mut counters = self.inner.counters.lock().expect("counters lock");
            // no allocation once the server is known
            let methods = match counters.get_mut(rec.server.as_str()) {
                Some(m) => m,
                None => counters.entry(rec.server.clone()).or_default(),
            };
            let c = methods.entry(rec.method).or_default();
            c.requests += 1;
            if rec.outcome == "ok" {
                c.successes += 1;
            } else {
                c.errors += 1;
            }
            c.replays += u64::from(rec.replay_attempts);
            c.latency_ms_sum += rec.latency_ms;
            let i = BUCKETS_MS
                .iter()
                .position(|b| rec.latency_ms <= *b)
                .unwrap_or(BUCKETS_MS.len());
            for b in &mut c.buckets[i..] {
                *b += 1;
            }
        }
        if self.inner.lines.try_send(Line::Call(rec)).is_err() {
            self.inner.dropped_lines.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Writes out every line recorded so far and hands their rows to the store; answers once
    /// that is done (or the writer is gone). The caller bounds the wait.
    pub(crate) async fn flush(&self) {
        let (done, flushed) = oneshot::channel();
        if self.inner.lines.send(Line::Flush(done)).await.is_ok() {
            let _ = flushed.await;
        }
    }

    /// Counters per server and method, and totals.
    pub(crate) fn snapshot(&self) -> Value {
        let counters = self.inner.counters.lock().expect("counters lock").clone();
        let mut totals = Counters::default();
        let mut methods = Vec::new();
        for (server, method, c) in flat(&counters) {
            totals.requests += c.requests;
            totals.successes += c.successes;
            totals.errors += c.errors;
            totals.replays += c.replays;
            totals.latency_ms_sum += c.latency_ms_sum;
            methods.push(json!({
                "server": server,
                "method": method,
                "requests": c.requests,
                "successes": c.successes,
                "errors": c.errors,
                "replays": c.replays,
                "mean_latency_ms": if c.requests > 0 { c.latency_ms_sum as f64 / c.requests as f64 } else { 0.0 },
            }));
        }
        json!({
            "totals": {
                "requests": totals.requests,
                "successes": totals.successes,
                "errors": totals.errors,
                "replays": totals.replays,
            },
            "methods": methods,
            "dropped_jsonl_lines": self.inner.dropped_lines.load(Ordering::Relaxed),
            "dropped_history_rows": self.inner.store.dropped_calls(),
            "file": self.inner.path,
        })
    }

    /// Prometheus text exposition of the counters.
    pub(crate) fn prometheus(&self, out: &mut String) {
        let counters = self.inner.counters.lock().expect("counters lock").clone();
        let families: [Family; 4] = [
            (
                "switchboard_requests_total",
                "Requests through the gateway",
                |c| c.requests,
            ),
            (
                "switchboard_request_errors_total",
                "Requests that failed",
                |c| c.errors,
            ),
            (
                "switchboard_request_successes_total",
                "Requests that succeeded",
                |c| c.successes,
            ),
            (
                "switchboard_request_replays_total",
                "Requests replayed after a server crash",
                |c| c.replays,
            ),
        ];
        for (name, help, get) in families {
            let _ = writeln!(out, "# HELP {name} {help}.\n# TYPE {name} counter");
            for (server, method, c) in flat(&counters) {
                let _ = writeln!(
                    out,
                    "{name}{{server=\"{}\",method=\"{}\"}} {}",
                    esc(server),
                    esc(method),
                    get(c)
                );
            }
        }
        let name = "switchboard_request_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Latency of requests through the gateway.\n# TYPE {name} histogram"
        );
        for (server, method, c) in flat(&counters) {
            let labels = format!("server=\"{}\",method=\"{}\"", esc(server), esc(method));
            for (i, le) in BUCKETS_MS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "{name}_bucket{{{labels},le=\"{}\"}} {}",
                    *le as f64 / 1000.0,
                    c.buckets[i]
                );
            }
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels},le=\"+Inf\"}} {}",
                c.buckets[BUCKETS_MS.len()]
            );
            let _ = writeln!(
                out,
                "{name}_sum{{{labels}}} {}",
                c.latency_ms_sum as f64 / 1000.0
            );
            let _ = writeln!(out, "{name}_count{{{labels}}} {}", c.requests);
        }
    }
}

/// A counter family: name, help, and which counter it shows.
type Family = (&'static str, &'static str, fn(&Counters) -> u64);

/// Escapes a Prometheus label value.
pub(crate) fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// What the writer thread is sent.
#[derive(Debug)]
enum Line {
    Call(CallRecord),
    /// Write and hand over everything held, then answer.
    Flush(oneshot::Sender<()>),
}

/// How long the writer lets calls gather after the first of a burst: one wake-up, one write and
/// one hand-over to SQLite per burst instead of per call (a wake-up is a context switch on the
/// caller's path).
const COALESCE: std::time::Duration = std::time::Duration::from_millis(10);

/// Appends queued lines, one write per burst (flushed each time), and hands the burst's rows to
/// the store as one job (one transaction).
fn write_lines(file: impl std::io::Write, mut rx: mpsc::Receiver<Line>, store: &Store) {
    use std::io::Write as _;
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, file);
    // one line, made here and reused
    let mut text = Vec::with_capacity(512);
    while let Some(first) = rx.blocking_recv() {
        std::thread::sleep(COALESCE);
        let mut result = Ok(());
        let mut rows = Vec::new();
        let mut flushes = Vec::new();
        for line in std::iter::once(first).chain(std::iter::from_fn(|| rx.try_recv().ok())) {
            let rec = match line {
                Line::Call(rec) => rec,
                Line::Flush(done) => {
                    flushes.push(done);
                    continue;
                }
            };
            text.clear();
            if serde_json::to_writer(&mut text, &rec).is_err() {
                continue;
            }
            text.push(b'\n');
            result = result.and_then(|()| out.write_all(&text));
            rows.push(CallRow {
                ts_unix_ms: rec.ts_unix_ms,
                request_id: rec.request_id,
                session_id: rec.session_id,
                tool_name: rec.tool_name,
                server: rec.server,
                latency_ms: rec.latency_ms as i64,
                replay_attempts: rec.replay_attempts,
                outcome: rec.outcome.to_owned(),
                error_code: rec.error_code,
                error_message: rec.error_message,
            });
        }
        store.record_calls(rows);
        if let Err(e) = result.and_then(|()| out.flush()) {
            tracing::warn!(error = %e, "telemetry.jsonl write failed");
        }
        // what came before a flush has been handed over
        for done in flushes {
            let _ = done.send(());
        }
    }
}

/// Counters as (server, method, counters), in order.
fn flat<'a>(
    counters: &'a BTreeMap<String, BTreeMap<&'static str, Counters>>,
) -> impl Iterator<Item = (&'a String, &'a &'static str, &'a Counters)> {
    counters
        .iter()
        .flat_map(|(server, methods)| methods.iter().map(move |(m, c)| (server, m, c)))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    fn call(n: u64) -> CallRecord {
        CallRecord {
            event: "tool_call",
            ts_unix_ms: 1,
            request_id: n.to_string(),
            tool_name: "fx__echo".into(),
            server: "fx".into(),
            method: "tools/call",
            session_id: None,
            latency_ms: n,
            replay_attempts: 0,
            outcome: "ok",
            error_code: None,
            error_message: None,
        }
    }

    fn stored(dir: &Path) -> i64 {
        let db = rusqlite::Connection::open(dir.join(crate::store::FILE_NAME)).unwrap();
        db.query_row("SELECT COUNT(*) FROM calls", [], |r| r.get(0))
            .unwrap()
    }

    #[tokio::test]
    async fn rows_reach_the_store_in_batches_and_all_of_them_on_flush() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path()).unwrap();
        let store = Arc::new(store);
        let t = Telemetry::open(dir.path(), store.clone()).unwrap();
        // without a flush: handed over with their burst (bounded wait here)
        for n in 0..3 {
            t.record(call(n));
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while stored(dir.path()) < 3 {
            assert!(Instant::now() < deadline, "rows never handed to the store");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // the lines are written at once, rows or not
        let lines = std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
        assert_eq!(lines.lines().count(), 3, "{lines}");
        // a flush hands over what is held now, before its time
        for n in 3..103 {
            t.record(call(n));
        }
        tokio::time::timeout(Duration::from_secs(5), t.flush())
            .await
            .expect("flush answered");
        store.close().await; // commits what it was handed
        assert_eq!(stored(dir.path()), 103);
        let lines = std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
        assert_eq!(lines.lines().count(), 103);
        assert_eq!(t.snapshot()["totals"]["requests"], 103);
    }
}
