//! Registration server figures, against the real `switchboard` binary in a child process:
//! idle RSS, RSS with N open registration sockets (one project each), and the
//! hello→registered round trip on fresh sockets.
//!
//! `cargo bench -p switchboard-core --bench registration [-- --sockets N --round-trips N]`

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::hub::Running;
use common::{arg, percentile, rss_kib};

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const WAIT: Duration = Duration::from_secs(10);

fn envelope(kind: &str, payload: Value) -> Message {
    Message::text(
        json!({"version":"1.0","type":kind,"payload":payload,
               "timestamp": chrono::Utc::now().to_rfc3339()})
        .to_string(),
    )
}

async fn expect(ws: &mut Ws, kind: &str) {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("reply in time")
            .expect("socket open")
            .expect("frame");
        if let Message::Text(t) = msg {
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["type"] == "ping" {
                continue;
            }
            assert_eq!(v["type"], kind, "{v}");
            return;
        }
    }
}

/// hello → welcome → register → registered on `ws`.
async fn handshake(ws: &mut Ws, project: &Path) {
    ws.send(envelope(
        "hello",
        json!({"entity_type":"mcp_server","capabilities":[]}),
    ))
    .await
    .unwrap();
    expect(ws, "welcome").await;
    ws.send(envelope(
        "register",
        json!({"path": project, "name": project.file_name().unwrap().to_string_lossy(),
               "db_path": project.join("project.db"), "mcp_connected": true, "is_online": true}),
    ))
    .await
    .unwrap();
    expect(ws, "registered").await;
}

fn project_dirs(prefix: &str, n: usize) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-projects");
    (0..n)
        .map(|i| {
            let d = root.join(format!("{prefix}{i:05}"));
            std::fs::create_dir_all(&d).unwrap();
            d.canonicalize().unwrap()
        })
        .collect()
}

/// The gateway on a temp config (tokens in memory: no keychain on a bench machine); returns it
/// with its registration URL.
fn start_gateway(dir: &Path) -> (Running, String) {
    let (gw, url) = common::hub::start_gateway(dir, 0, "");
    let url = url.replace("http://", "ws://").replace("/mcp", "/ws/mcp");
    (gw, url)
}

fn main() {
    let sockets: usize = arg("--sockets", 10_000);
    let round_trips: usize = arg("--round-trips", 2_000);
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let data = tempfile::tempdir().unwrap();
        let (gw, url) = start_gateway(data.path());
        let pid = gw.pid();
        eprintln!("preparing {sockets} project directories…");
        let held_dirs = project_dirs("held-", sockets);
        let rt_dirs = project_dirs("rt-", 50);

        tokio::time::sleep(Duration::from_secs(1)).await;
        let idle = rss_kib(pid);

        eprintln!("opening {sockets} registration sockets…");
        let started = Instant::now();
        let mut held: Vec<Ws> = Vec::with_capacity(sockets);
        for chunk in held_dirs.chunks(100) {
            let opened = futures_util::future::join_all(chunk.iter().map(|dir| {
                let url = url.clone();
                async move {
                    let (mut ws, _) = connect_async(url.as_str()).await.expect("connect");
                    handshake(&mut ws, dir).await;
                    ws
                }
            }))
            .await;
            held.extend(opened);
            if held.len().is_multiple_of(2000) {
                eprintln!("  {} open, gateway RSS {} KiB", held.len(), rss_kib(pid));
            }
        }
        let open_time = started.elapsed();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let loaded = rss_kib(pid);

        eprintln!("measuring {round_trips} hello→registered round trips…");
        let mut times = Vec::with_capacity(round_trips);
        for i in 0..round_trips {
            let (mut ws, _) = connect_async(url.as_str()).await.expect("connect");
            let t0 = Instant::now();
            handshake(&mut ws, &rt_dirs[i % rt_dirs.len()]).await;
            times.push(t0.elapsed());
            let _ = ws.close(None).await;
        }
        times.sort();

        let per_socket = (loaded.saturating_sub(idle)) as f64 * 1024.0 / sockets as f64;
        let mib = |kib: u64| kib as f64 / 1024.0;
        println!();
        println!("registration bench ({sockets} sockets, {round_trips} round trips)");
        println!("| figure | measured | target |");
        println!("|---|---|---|");
        println!("| idle RSS | {:.1} MiB | ≤ 20 MB |", mib(idle));
        println!(
            "| RSS with {sockets} registered sockets | {:.1} MiB | ≤ 150 MB |",
            mib(loaded)
        );
        println!(
            "| per socket (incl. its project) | {:.1} KB | ≤ 13 KB |",
            per_socket / 1000.0
        );
        println!(
            "| time to open and register all | {:.2} s | — |",
            open_time.as_secs_f64()
        );
        println!(
            "| hello→registered p50 | {} µs | — |",
            percentile(&times, 0.50).as_micros()
        );
        println!(
            "| hello→registered p99 | {} µs | ≤ 1000 µs |",
            percentile(&times, 0.99).as_micros()
        );
        println!(
            "| hello→registered max | {} µs | — |",
            times.last().unwrap().as_micros()
        );

        drop(held);
        gw.stop();
    });
}
