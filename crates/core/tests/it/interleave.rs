//! A property test of one `/ws` socket: random interleavings of requests (fast calls, slow
//! calls with progress, pings, calls whose server asks the client for its roots), the
//! client's answers to those asks, and cancellations, all concurrent on one socket. Whatever
//! the order, every request gets exactly one reply, under its own id (numbers, strings that
//! look like numbers, strings with quotes and escapes), with its own result; each progress
//! report carries the token of a call still running, in increasing order, before that call's
//! reply; nothing arrives for an id never sent. Seeded: a failure names its seed (run one
//! with `SWITCHBOARD_INTERLEAVE_SEED=<n>`).

use std::collections::HashMap;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;
use crate::ws::open;

/// xorshift64*: small, seeded, the same sequence everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What a request expects back.
#[derive(Debug, Clone)]
enum Expect {
    /// A tool result whose text is this.
    Text(String),
    /// `slow`: `done after N steps`, or -32800 if it was cancelled first; progress under
    /// `token`.
    Slow { steps: u64, token: Value },
    /// `ping`: an empty result.
    Empty,
    /// `ask` for `roots/list`: the roots the client answered with.
    Roots(String),
}

/// An id nobody else uses, in one of the shapes clients send.
fn id_for(rng: &mut Rng, n: u64) -> Value {
    match rng.below(4) {
        0 => json!(n),
        1 => json!(format!("{n}")),
        2 => json!(format!("q\"{n}\\\u{e9}")),
        _ => json!(-(n as i64)),
    }
}

/// What has come back on the socket so far.
#[derive(Default)]
struct Seen {
    seed: u64,
    /// Replies by id (as JSON text).
    replies: HashMap<String, Vec<Value>>,
    /// The last progress per token (as JSON text).
    progress: HashMap<String, f64>,
    /// The id each token was sent with.
    token_owner: HashMap<String, String>,
    /// Answers to the server's requests, to send.
    to_send: Vec<Value>,
    /// How many the server asked.
    asks: usize,
}

impl Seen {
    fn handle(&mut self, m: Value) {
        let seed = self.seed;
        if m["method"] == "notifications/progress" {
            let t = m["params"]["progressToken"].to_string();
            let owner = self
                .token_owner
                .get(&t)
                .unwrap_or_else(|| panic!("seed {seed}: progress for a token never sent: {m}"));
            assert!(
                !self.replies.contains_key(owner),
                "seed {seed}: progress after its call's reply: {m}"
            );
            let p = m["params"]["progress"].as_f64().unwrap();
            let last = self.progress.insert(t, p);
            assert!(
                last.is_none_or(|l| p > l),
                "seed {seed}: progress went back: {last:?} then {m}"
            );
        } else if m["method"] == "roots/list" {
            self.asks += 1;
            // the server's request, during an `ask` call: answered with the roots that call
            // named (in its own params)
            let uri = m["params"]["for"]
                .as_str()
                .unwrap_or("file:///none")
                .to_owned();
            self.to_send.push(json!({"jsonrpc": "2.0", "id": m["id"],
                "result": {"roots": [{"uri": uri}]}}));
        } else if m.get("id").is_some() && m.get("method").is_none() {
            self.replies.entry(m["id"].to_string()).or_default().push(m);
        } else if m["method"] == "notifications/cancelled" {
            // the server called off an ask (its call was cancelled): fine
        } else {
            panic!("seed {seed}: unexpected message {m}");
        }
    }
}

async fn one_case(gw: &TestGateway, seed: u64, ops: usize) {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    // how long to read between sends: its own sequence, so that the requests a seed makes do
    // not depend on how many frames timing brought
    let mut pause = Rng(seed.wrapping_mul(0xbf58_476d_1ce4_e5b9) | 1);
    let (mut ws, _) = open(gw, Some(&gw.token), None).await.unwrap();
    let send = |v: Value| Message::text(v.to_string());
    ws.send(send(
        json!({"jsonrpc": "2.0", "id": "init", "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {"roots": {}},
                   "clientInfo": {"name": "interleave", "version": "1"}}}),
    ))
    .await
    .unwrap();
    let mut sent: HashMap<String, (Value, Expect)> = HashMap::new();
    let mut st = Seen {
        seed,
        ..Seen::default()
    };
    let mut cancelled: Vec<String> = Vec::new();
    let mut slow_running: Vec<Value> = Vec::new();
    let key = |id: &Value| id.to_string();
    for n in 1..=ops as u64 {
        let id = id_for(&mut rng, n);
        let (frame, expect) = match rng.below(10) {
            0..=3 => {
                let text = format!("e{n}-{}", rng.below(1000));
                (
                    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                        "params": {"name": "fx__echo", "arguments": {"text": text}}}),
                    Expect::Text(text),
                )
            }
            4..=6 => {
                let steps = 1 + rng.below(4);
                let token = if rng.below(2) == 0 {
                    json!(format!("t{n}"))
                } else {
                    json!(1000 + n)
                };
                st.token_owner.insert(token.to_string(), key(&id));
                slow_running.push(id.clone());
                (
                    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                        "params": {"name": "fx__slow", "arguments": {"steps": steps,
                            "step_ms": 5 + rng.below(20)},
                            "_meta": {"progressToken": token}}}),
                    Expect::Slow { steps, token },
                )
            }
            7 => (
                json!({"jsonrpc": "2.0", "id": id, "method": "ping"}),
                Expect::Empty,
            ),
            _ => {
                let uri = format!("file:///r{n}");
                (
                    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                        "params": {"name": "fx__ask", "arguments": {"method": "roots/list",
                            "params": {"for": uri}}}}),
                    Expect::Roots(uri),
                )
            }
        };
        sent.insert(key(&id), (id.clone(), expect));
        ws.send(send(frame)).await.unwrap();
        // now and then a cancellation of a slow call that may still run
        if rng.below(6) == 0 && !slow_running.is_empty() {
            let victim = slow_running.swap_remove(rng.below(slow_running.len() as u64) as usize);
            cancelled.push(key(&victim));
            ws.send(send(
                json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                "params": {"requestId": victim, "reason": "interleave"}}),
            ))
            .await
            .unwrap();
        }
        // and read whatever is there already, answering the server's asks
        while let Ok(Some(Ok(frame))) =
            tokio::time::timeout(Duration::from_millis(pause.below(3)), ws.next()).await
        {
            if let Message::Text(t) = frame {
                st.handle(serde_json::from_str(&t).unwrap());
            }
        }
        for answer in st.to_send.drain(..) {
            ws.send(send(answer)).await.unwrap();
        }
    }
    // the rest, bounded
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while sent.keys().any(|k| !st.replies.contains_key(k)) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let frame = tokio::time::timeout(left, ws.next()).await;
        let Ok(Some(Ok(frame))) = frame else {
            let missing: Vec<_> = sent
                .keys()
                .filter(|k| !st.replies.contains_key(*k))
                .collect();
            panic!("seed {seed}: no reply in time for {missing:?}");
        };
        if let Message::Text(t) = frame {
            st.handle(serde_json::from_str(&t).unwrap());
        }
        for answer in st.to_send.drain(..) {
            ws.send(send(answer)).await.unwrap();
        }
    }
    let init = st.replies.remove("\"init\"").expect("initialize answered");
    assert_eq!(init.len(), 1);
    for (k, got) in &st.replies {
        let (id, expect) = sent
            .get(k)
            .unwrap_or_else(|| panic!("seed {seed}: a reply for an id never sent: {got:?}"));
        assert_eq!(
            got.len(),
            1,
            "seed {seed}: {} replies for {id}: {got:?}",
            got.len()
        );
        let m = &got[0];
        assert_eq!(
            &m["id"], id,
            "seed {seed}: the id comes back as it was sent"
        );
        let text = m["result"]["content"][0]["text"]
            .as_str()
            .unwrap_or_default();
        match expect {
            Expect::Text(t) => assert_eq!(text, t, "seed {seed}: {m}"),
            Expect::Empty => assert_eq!(m["result"], json!({}), "seed {seed}: {m}"),
            Expect::Roots(uri) => {
                let answered: Value =
                    serde_json::from_str(text).unwrap_or_else(|_| panic!("seed {seed}: {m}"));
                assert_eq!(
                    answered["result"]["roots"][0]["uri"], *uri,
                    "seed {seed}: each ask got its own answer: {m}"
                );
            }
            Expect::Slow { steps, token } => {
                if cancelled.contains(k) && m.get("error").is_some() {
                    assert_eq!(m["error"]["code"], -32800, "seed {seed}: {m}");
                } else {
                    assert_eq!(
                        text,
                        format!("done after {steps} steps"),
                        "seed {seed}: {m}"
                    );
                    let last = st.progress.get(&token.to_string()).copied();
                    assert_eq!(
                        last,
                        Some(*steps as f64),
                        "seed {seed}: every step reported before the reply of {id}"
                    );
                }
            }
        }
    }
    let errors = st
        .replies
        .values()
        .filter(|r| r[0].get("error").is_some())
        .count();
    eprintln!(
        "seed {seed}: {} requests, {} progress tokens, {} cancellations ({errors} ended \
         cancelled), {} asks answered",
        sent.len(),
        st.token_owner.len(),
        cancelled.len(),
        st.asks
    );
    ws.close(None).await.ok();
}

#[tokio::test]
async fn random_interleavings_on_one_socket_reach_each_caller_once_under_its_own_id() {
    let gw = TestGateway::with(|c| c.servers = vec![fixture_server("fx", &[])]).await;
    gw.wait_server("fx", "running").await;
    let seeds: Vec<u64> = match std::env::var("SWITCHBOARD_INTERLEAVE_SEED") {
        Ok(s) => vec![s.parse().expect("a seed is a number")],
        Err(_) => (1..=12).collect(),
    };
    for seed in seeds {
        one_case(&gw, seed, 60).await;
    }
}
