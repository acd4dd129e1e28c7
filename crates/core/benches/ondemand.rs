//! On-demand servers: what a call to an idle one costs, and what idling saves.
//!
//! 1. **Cold vs warm call**, through the real `switchboard` binary (release build, `/mcp`
//!    session): a fixture server `cold` with `start = "on_demand"` and a short
//!    `idle_stop_ms`, and `warm` that always runs. Each round waits until `cold` is idle (its
//!    process gone), then times one call to `cold__echo` (start, handshake, list, call) and
//!    one to `warm__echo`; p50 and max of `--rounds` (20).
//! 2. **RSS with ten real servers** (`--no-rss` skips it): the official reference servers
//!    from npm (`@modelcontextprotocol/server-everything`, `-filesystem`, `-memory`,
//!    `-sequential-thinking`), installed by the bench with `npm install` into
//!    `~/.cache/switchboard/bench-servers` (once), ten `[[servers]]` entries of them. The RSS
//!    of Switchboard alone (no servers), of Switchboard plus its children with all ten
//!    `always` and running, and with all ten `on_demand` and idle (after their listing run),
//!    each read once the RSS has settled (`--settle-s`).
//!    Target: on-demand idle ≤ 1.25× Switchboard alone.
//!
//! `cargo bench -p switchboard-core --bench ondemand [-- --rounds N --no-rss --rss-only
//!  --settle-s S]` (`--settle-s`: how long the RSS may settle before it is read, 20 s)

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::hub::{FIXTURE, Http, echo, pair, start_gateway};
use common::{arg, children, percentile, rss_kib, runtime};

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The npm packages the RSS part runs, and the version they are pinned to.
const PACKAGES: [&str; 4] = [
    "@modelcontextprotocol/server-everything@2026.8.31",
    "@modelcontextprotocol/server-filesystem@2026.8.31",
    "@modelcontextprotocol/server-memory@2026.8.31",
    "@modelcontextprotocol/server-sequential-thinking@2026.8.31",
];

fn main() {
    let rounds: usize = arg("--rounds", 20);
    let rss = !std::env::args().any(|a| a == "--no-rss");
    let cold = !std::env::args().any(|a| a == "--rss-only");
    let settle = Duration::from_secs(arg("--settle-s", 20));
    let rt = runtime();
    if cold {
        rt.block_on(cold_vs_warm(rounds));
    }
    if rss {
        rt.block_on(idle_rss(settle));
    }
}

/// `/api/servers` of the gateway at `url`.
async fn servers(url: &str, token: &str) -> Value {
    reqwest::Client::new()
        .get(url.replace("/mcp", "/api/servers"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Waits (bounded by `within`) until every server but those named in `except` is `state`.
async fn wait_all(url: &str, token: &str, state: &str, except: &[&str], within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let s = servers(url, token).await;
        let list = s["servers"].as_array().unwrap();
        if list
            .iter()
            .filter(|s| !except.contains(&s["name"].as_str().unwrap()))
            .all(|s| s["state"] == state)
        {
            return;
        }
        assert!(Instant::now() < deadline, "servers never all {state}: {s}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One timed `tools/call` of `tool`, checked to have answered.
async fn timed_call(http: &Http, tool: &str) -> Duration {
    let started = Instant::now();
    let v = http.request(echo(tool)).await;
    let took = started.elapsed();
    assert_eq!(v["result"]["content"][0]["text"], "ping", "{v}");
    took
}

async fn cold_vs_warm(rounds: usize) {
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "[[servers]]\nname = \"cold\"\ncommand = \"{FIXTURE}\"\nstart = \"on_demand\"\n\
         idle_stop_ms = 100\n[[servers]]\nname = \"warm\"\ncommand = \"{FIXTURE}\"\n"
    );
    let (gateway, url) = start_gateway(dir.path(), 0, &extra);
    let token = pair(dir.path(), &url).await;
    let http = Http::connect(&url, &token).await;
    wait_all(&url, &token, "running", &["cold"], Duration::from_secs(30)).await;
    let (mut cold, mut warm) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        wait_all(&url, &token, "idle", &["warm"], Duration::from_secs(30)).await;
        // its process is gone too
        let deadline = Instant::now() + Duration::from_secs(10);
        while children(gateway.pid()).len() > 1 {
            assert!(
                Instant::now() < deadline,
                "the idle server's process stayed"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        cold.push(timed_call(&http, "cold__echo").await);
        warm.push(timed_call(&http, "warm__echo").await);
    }
    cold.sort();
    warm.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "on-demand: first call through /mcp, {rounds} rounds (release gateway, fixture server)"
    );
    println!(
        "  idle on-demand server (cold start): p50 {:.1} ms, max {:.1} ms",
        ms(percentile(&cold, 0.5)),
        ms(*cold.last().unwrap())
    );
    println!(
        "  running server:                     p50 {:.3} ms, max {:.3} ms",
        ms(percentile(&warm, 0.5)),
        ms(*warm.last().unwrap())
    );
    gateway.stop();
}

/// Where the reference servers are installed (once): `~/.cache/switchboard/bench-servers`.
fn install_servers() -> PathBuf {
    let home = std::env::var("HOME").unwrap();
    let prefix = Path::new(&home).join(".cache/switchboard/bench-servers");
    let bin = prefix.join("node_modules/.bin");
    let wanted = [
        "mcp-server-everything",
        "mcp-server-filesystem",
        "mcp-server-memory",
        "mcp-server-sequential-thinking",
    ];
    if wanted.iter().all(|b| bin.join(b).exists()) {
        return bin;
    }
    std::fs::create_dir_all(&prefix).unwrap();
    eprintln!("installing the reference servers into {}", prefix.display());
    let status = Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--prefix"])
        .arg(&prefix)
        .args(PACKAGES)
        .status()
        .expect("npm");
    assert!(status.success(), "npm install failed");
    bin
}

/// Ten `[[servers]]` entries of the reference servers, each `start`ed as given.
fn ten_servers(bin: &Path, scratch: &Path, start: &str) -> String {
    let mut cfg = String::new();
    for i in 0..10 {
        let (program, args, env) = match i % 4 {
            0 => (
                "mcp-server-everything",
                vec!["stdio".to_owned()],
                String::new(),
            ),
            1 => {
                let d = scratch.join(format!("fs{i}"));
                std::fs::create_dir_all(&d).unwrap();
                (
                    "mcp-server-filesystem",
                    vec![d.display().to_string()],
                    String::new(),
                )
            }
            2 => (
                "mcp-server-memory",
                vec![],
                format!(
                    "env = {{ MEMORY_FILE_PATH = \"{}\" }}\n",
                    scratch.join(format!("memory{i}.json")).display()
                ),
            ),
            _ => ("mcp-server-sequential-thinking", vec![], String::new()),
        };
        let args: Vec<String> = args.iter().map(|a| format!("{a:?}")).collect();
        cfg.push_str(&format!(
            "[[servers]]\nname = \"ref{i}\"\ncommand = \"{}\"\nargs = [{}]\nstart = \"{start}\"\n{env}",
            bin.join(program).display(),
            args.join(", ")
        ));
    }
    cfg
}

/// RSS of `pid` and of all its descendants, in KiB.
fn tree_rss(pid: u32) -> u64 {
    rss_kib(pid)
        + children(pid)
            .into_iter()
            .map(|c| {
                if std::fs::metadata(format!("/proc/{c}")).is_ok() {
                    tree_rss(c)
                } else {
                    0
                }
            })
            .sum::<u64>()
}

/// The RSS of a gateway with `servers` (config text) once every server is `state`, after the
/// RSS has had `settle` to settle (jemalloc hands freed pages back after its decay time, 10 s
/// by default).
async fn gateway_rss(servers_cfg: &str, state: &str, settle: Duration) -> (u64, u64, usize) {
    let dir = tempfile::tempdir().unwrap();
    let extra = format!("[gateway]\nstart_timeout_ms = 60000\n{servers_cfg}");
    let (gateway, url) = start_gateway(dir.path(), 0, &extra);
    let token = pair(dir.path(), &url).await;
    wait_all(&url, &token, state, &[], Duration::from_secs(120)).await;
    tokio::time::sleep(settle).await;
    let own = rss_kib(gateway.pid());
    let total = tree_rss(gateway.pid());
    let kids = children(gateway.pid()).len();
    gateway.stop();
    (own, total, kids)
}

async fn idle_rss(settle: Duration) {
    let bin = install_servers();
    let scratch = tempfile::tempdir().unwrap();
    let mib = |k: u64| k as f64 / 1024.0;
    let (alone, _, _) = gateway_rss("", "running", settle).await;
    let (own_always, total_always, kids_always) = gateway_rss(
        &ten_servers(&bin, scratch.path(), "always"),
        "running",
        settle,
    )
    .await;
    let (own_idle, total_idle, kids_idle) = gateway_rss(
        &ten_servers(&bin, scratch.path(), "on_demand"),
        "idle",
        settle,
    )
    .await;
    println!("on-demand: RSS with ten reference servers from npm (release gateway)");
    println!(
        "  Switchboard alone, no servers:          {:.1} MiB",
        mib(alone)
    );
    println!(
        "  ten `always`, running:                  {:.1} MiB in all ({kids_always} children; \
         Switchboard itself {:.1} MiB)",
        mib(total_always),
        mib(own_always)
    );
    println!(
        "  ten `on_demand`, idle:                  {:.1} MiB in all ({kids_idle} children; \
         Switchboard itself {:.1} MiB) = {:.2}x Switchboard alone (target <= 1.25x)",
        mib(total_idle),
        mib(own_idle),
        total_idle as f64 / alone as f64
    );
}
