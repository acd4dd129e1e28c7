//! Chaos: 16 `/mcp` clients call `s0__echo` (replayed after a crash) and `s0__slow_write`
//! (never replayed: a call cut by a kill fails) in a loop against the real `switchboard` binary
//! while the bench `kill -9`s the fixture server (the gateway's child, found in `/proc`) every
//! second. What it checks: every call ends within its bound (`restart_wait_ms` + the call
//! timeout), every error names the server, and no child is left behind: no zombies, never more
//! than one live server process, none once the gateway has stopped.
//!
//! The gateway runs with `max_crashes` high (else the server is marked `failed` after five kills
//! and there is nothing left to restart), `backoff_max_ms = 1000` (so it is back every second)
//! and `[gateway] restart_wait_ms`.
//!
//! `cargo bench -p switchboard-core --bench chaos [-- --seconds S --clients N
//!  --call-timeout-ms MS --restart-wait-ms MS]`

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::children;
use common::hub::{FIXTURE, Http, echo, pair, start_gateway, switchboard, wait_tool};

use std::collections::{BTreeMap, HashSet};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// How one call went.
enum Outcome {
    Ok,
    Failed(String),
}

/// The `tools/call` answer as ok, or its error message (a JSON-RPC error, a tool error, or no
/// answer at all).
fn outcome(r: Result<Value, String>) -> Outcome {
    match r {
        Err(e) => Outcome::Failed(format!("no answer: {e}")),
        Ok(v) if v.get("error").is_some() => {
            Outcome::Failed(v["error"]["message"].as_str().unwrap_or("").to_owned())
        }
        Ok(v) if v["result"]["isError"] == true => Outcome::Failed(
            v["result"]["content"][0]["text"]
                .as_str()
                .unwrap_or("")
                .to_owned(),
        ),
        Ok(v) if v["result"]["content"].is_array() => Outcome::Ok,
        Ok(v) => Outcome::Failed(format!("unexpected answer: {v}")),
    }
}

/// Whether `message` names server `s0` other than by echoing the tool's name.
fn names_server(message: &str) -> bool {
    message.replace("s0__echo", "").contains("s0")
}

/// A process's state letter (`R`, `S`, `Z`, …) from `/proc/<pid>/stat`; `None` if it is gone.
fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next())
}

/// Whether `pid` is a fixture server process (and not a zombie).
fn live_fixture(pid: u32) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let first = cmdline.split(|&b| b == 0).next().unwrap_or_default();
    first == FIXTURE.as_bytes() && state(pid).is_some_and(|s| s != 'Z')
}

/// The gateway's children now: the live fixture servers, and how many are zombies.
fn scan(gateway: u32) -> (Vec<u32>, usize) {
    let kids = children(gateway);
    let zombies = kids.iter().filter(|&&p| state(p) == Some('Z')).count();
    (
        kids.into_iter().filter(|&p| live_fixture(p)).collect(),
        zombies,
    )
}

fn main() {
    let secs: u64 = common::arg("--seconds", 60);
    let clients: usize = common::arg("--clients", 16);
    let call_timeout_ms: u64 = common::arg("--call-timeout-ms", 5_000);
    let restart_wait_ms: u64 = common::arg("--restart-wait-ms", 10_000);
    let bound = Duration::from_millis(restart_wait_ms + call_timeout_ms);
    let rt = common::runtime();
    rt.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        eprintln!("gateway under test: {}", switchboard());
        let base = format!(
            "[gateway]\ncall_timeout_ms = {call_timeout_ms}\nmax_crashes = 1000000\n\
             backoff_max_ms = 1000\n"
        );
        let with_wait = format!("{base}restart_wait_ms = {restart_wait_ms}\n");
        let (gw, url) = start_gateway(dir.path(), 1, &with_wait);
        let gw_pid = gw.pid();
        let token = pair(dir.path(), &url).await;
        let probe = Http::connect(&url, &token).await;
        wait_tool(&probe, "s0__echo", 1).await;

        // a client-side limit well past the bound, so that a call that hangs shows as one
        let client = reqwest::Client::builder()
            .timeout(bound + Duration::from_secs(10))
            .build()
            .unwrap();
        let mut sessions = Vec::new();
        for _ in 0..clients {
            sessions.push(Http::connect_with(client.clone(), &url, &token).await);
        }

        eprintln!("{clients} clients calling s0__echo (replayed) and s0__slow_write (never replayed) for {secs} s, the server kill -9'd every second…");
        let end = Instant::now() + Duration::from_secs(secs);
        // (ok, failed, longest, errors by message)
        type Tally = (u64, u64, Duration, BTreeMap<String, u64>);
        let tally: Arc<Mutex<Tally>> = Arc::default();
        let callers: Vec<_> = sessions
            .into_iter()
            .enumerate()
            .map(|(i, http)| {
                let tally = tally.clone();
                // half call a tool that is replayed after a crash, half one that never is (a
                // call cut by a kill fails, and its error must name the server)
                let call = if i % 2 == 0 {
                    echo("s0__echo")
                } else {
                    json!({"jsonrpc": "2.0", "id": 0, "method": "tools/call",
                           "params": {"name": "s0__slow_write",
                                      "arguments": {"steps": 2, "step_ms": 5}}})
                };
                tokio::spawn(async move {
                    while Instant::now() < end {
                        let t0 = Instant::now();
                        let o = outcome(http.try_request(call.clone()).await);
                        let took = t0.elapsed();
                        let mut t = tally.lock().unwrap();
                        t.2 = t.2.max(took);
                        match o {
                            Outcome::Ok => t.0 += 1,
                            Outcome::Failed(m) => {
                                t.1 += 1;
                                *t.3.entry(m).or_default() += 1;
                            }
                        }
                    }
                })
            })
            .collect();

        let mut seen: HashSet<u32> = HashSet::new();
        let (mut kills, mut most_live, mut most_zombies) = (0u64, 0usize, 0usize);
        while Instant::now() < end {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let (live, zombies) = scan(gw_pid);
            most_live = most_live.max(live.len());
            most_zombies = most_zombies.max(zombies);
            for pid in live {
                seen.insert(pid);
                if Command::new("kill")
                    .args(["-9", &pid.to_string()])
                    .status()
                    .is_ok_and(|s| s.success())
                {
                    kills += 1;
                }
            }
        }
        for c in callers {
            c.await.unwrap();
        }

        // the gateway has had time to restart the server and reap the last one killed
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (live, zombies_end) = scan(gw_pid);
        seen.extend(&live);
        let live_end = live.len();
        let stopped = gw.stop();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let left: Vec<u32> = seen.iter().copied().filter(|&p| live_fixture(p)).collect();
        for &p in &left {
            let _ = Command::new("kill").args(["-9", &p.to_string()]).status();
        }

        let (ok, failed, longest, errors) = Arc::try_unwrap(tally).unwrap().into_inner().unwrap();
        let unnamed: Vec<(&String, &u64)> = errors.iter().filter(|(m, _)| !names_server(m)).collect();
        let unnamed_n: u64 = unnamed.iter().map(|(_, n)| **n).sum();
        let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
        println!();
        println!(
            "chaos bench ({clients} clients × {secs} s, call_timeout_ms = {call_timeout_ms}, restart_wait_ms = {}; gateway stopped {})",
            restart_wait_ms,
            match stopped {
                Some(s) if s.success() => "cleanly".to_owned(),
                Some(s) => format!("with {s}"),
                None => "only when killed".to_owned(),
            }
        );
        println!("| figure | measured | target | |");
        println!("|---|---|---|---|");
        println!("| server kill -9s | {kills} | one a second | |");
        println!("| calls ok | {ok} | — | |");
        println!(
            "| calls failed | {failed} ({:.1}%) | — | |",
            100.0 * failed as f64 / (ok + failed).max(1) as f64
        );
        println!(
            "| longest call | {:.0} ms | ≤ {:.0} ms (restart_wait_ms + call timeout) | {} |",
            longest.as_secs_f64() * 1e3,
            bound.as_secs_f64() * 1e3,
            verdict(longest <= bound)
        );
        println!(
            "| errors that do not name the server | {unnamed_n} of {failed} | 0 | {} |",
            verdict(unnamed_n == 0)
        );
        println!(
            "| zombies among the gateway's children at the end (most seen at a 1 s scan) | {zombies_end} ({most_zombies}) | 0 | {} |",
            verdict(zombies_end == 0)
        );
        println!(
            "| live server processes at the end (most seen at a 1 s scan) | {live_end} ({most_live}) | ≤ 1 | {} |",
            verdict(live_end <= 1 && most_live <= 1)
        );
        println!(
            "| server processes left after the gateway stopped | {} | 0 | {} |",
            left.len(),
            verdict(left.is_empty())
        );
        println!();
        println!("| error message (sample of each kind) | calls |");
        println!("|---|---|");
        let mut by_count: Vec<_> = errors.iter().collect();
        by_count.sort_by(|a, b| b.1.cmp(a.1));
        for (m, n) in by_count.iter().take(8) {
            let short: String = m.chars().take(200).collect();
            println!("| {} | {n} |", short.replace('|', "\\|").replace('\n', " "));
        }
        if let Some((m, _)) = unnamed.first() {
            println!();
            println!("sample error that does not name the server: {m}");
        }
    });
}
