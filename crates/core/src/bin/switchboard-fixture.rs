//! `switchboard-fixture`: a small stdio MCP server for Switchboard's tests and benches.
//!
//! Newline-delimited JSON-RPC on stdin/stdout, written by hand so that it is fast (the bench's
//! "direct stdio" floor) and can misbehave on purpose. Tools:
//! - `echo {text}`, `add {a,b}`, `pid {}`: fast, read-only (safe to replay)
//! - `slow {steps=10, step_ms=100}`: progress per step, read-only; stops when cancelled
//! - `slow_write {steps, step_ms}`: like `slow` but destructive (never replayed)
//! - `fail {message}`: a tool error (`isError: true`)
//! - `add_tool {name}`: adds an echo tool and sends `notifications/tools/list_changed`
//! - `stderr {text}`: writes a line to stderr
//! - `hang {}`: never answers; when cancelled it says so on stderr (for call timeouts)
//! - `ask {method, params, pad?}`: sends that request to the client (`elicitation/create`,
//!   `sampling/createMessage`, `roots/list`, …; `pad` bytes more in its params) and answers
//!   with the client's whole response (`{"result": …}` or `{"error": …}`) as JSON text
//!   (`cancel_after_ms`: unanswered by then, the fixture cancels its request with
//!   `notifications/cancelled` and answers `cancelled`; `detach: true`: answers `asked` at
//!   once, the response lands in `answers` whenever it comes)
//! - `answers {}`: the responses its `ask`s got, the last 16, oldest first, as JSON (also
//!   those that came after their call had ended)
//! - `client_capabilities {}`: the capabilities the client declared in `initialize`, as JSON
//! - `roots {}`: `{"pid", "roots", "list_changed"}`: the client's last answer to `roots/list`
//!   (asked after `initialize` with `--roots-on-start`, and again on every
//!   `notifications/roots/list_changed`, which `list_changed` counts)
//! - `log {level, message, logger?}`: sends `notifications/message` (the level asked by
//!   `logging/setLevel` is answered by `log_level {}`)
//! - `completion/complete`: answers one value, `<ref name or uri>:<argument>=<value>`
//! - `touch {uri}`: sends `notifications/resources/updated` for `uri` (subscriptions are
//!   answered and logged to stderr: `fixture: resources/subscribe URI`)
//! - `change_lists {}`: sends `notifications/resources/list_changed` and
//!   `notifications/prompts/list_changed`
//!
//! Resources: `fixture://readme` (on every fixture). With `--resource-host HOST` it also lists
//! `fixture://HOST/notes` and the template `fixture://HOST/echo/{text}` (read back as `text`),
//! and logs every `resources/read` to stderr (`fixture: read URI`), so tests can tell whose
//! resources are which and which server a read reached.
//!
//! Lists in pages: `--many N` adds N tools `many_0000`… (echo), N resources `fixture://many/I`
//! and N prompts `many_I`; `--page-size K` answers `tools/list`, `resources/list`,
//! `resources/templates/list` and `prompts/list` K items at a time, with a `nextCursor`;
//! `--repeat-cursor` makes that cursor stop moving after the second page (it points at the
//! second page again), as a broken server's would.
//!
//! Everything MCP can carry, with `--rich` (for fidelity tests: what a client gets through the
//! gateway must be what the server wrote): the tool `rich` (listed with `title`, `icons`,
//! `outputSchema`, `execution`, `_meta`, a JSON Schema 2020-12 input schema with `$defs`, and
//! answering every content type, each with annotations and `_meta`, plus
//! `structuredContent` and `_meta`), `meta_echo {}` (answers the request's own `_meta`), the
//! resources `fixture://rich/text` and `fixture://rich/blob` and the template
//! `fixture://rich/{id}` (all fields; read back with `_meta`), and the prompt `rich` (with
//! `title`, `icons`, titled arguments, and every content type in its messages).
//!
//! Flags: `--name NAME` (serverInfo), `--rich`, `--garbage` (a non-JSON line before every response),
//! `--exit-immediately` (exit 1 at start, for crash-loop tests), `--resource-host HOST`,
//! `--many N`, `--page-size K`, `--repeat-cursor`, `--roots-on-start`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};

struct State {
    out: mpsc::UnboundedSender<String>,
    garbage: bool,
    /// `--resource-host`: this fixture's own resources, under `fixture://HOST/`.
    resource_host: Option<String>,
    extra_tools: Mutex<Vec<String>>,
    /// `--many`: how many `many_…` tools, resources and prompts it lists.
    many: usize,
    /// `--page-size`: lists come in pages of this many items.
    page_size: Option<usize>,
    /// `--repeat-cursor`: the cursor after the second page points at the second page again.
    repeat_cursor: bool,
    /// `--rich`: the tool, resources, template and prompt that carry every field.
    rich: bool,
    /// Requests cancelled by the client (their ids as JSON text).
    cancelled: Mutex<HashSet<String>>,
    /// Requests this server sent the client (`ask`), by id, waiting for the response.
    asked: Mutex<HashMap<String, oneshot::Sender<Value>>>,
    next_ask: AtomicU64,
    /// The last responses to `ask`s (bounded: the oldest goes first).
    answers: Mutex<Vec<Value>>,
    /// What the client declared in `initialize`.
    client_capabilities: Mutex<Value>,
    /// The level of the last `logging/setLevel`.
    log_level: Mutex<Option<String>>,
    /// `--roots-on-start`: `roots/list` is asked as soon as the client has initialized.
    roots_on_start: bool,
    /// The client's last answer to `roots/list` (`null` before one).
    roots: Mutex<Value>,
    /// `notifications/roots/list_changed` received.
    roots_changed: AtomicU64,
}

impl State {
    fn send(&self, msg: Value) {
        if self.garbage {
            let _ = self.out.send("this is not JSON-RPC, it is garbage".into());
        }
        let _ = self.out.send(msg.to_string());
    }

    /// Sends `method` to the client: its id, and where its response will arrive.
    fn ask(&self, method: &Value, params: Value) -> (String, oneshot::Receiver<Value>) {
        let ask_id = format!("fx-ask-{}", self.next_ask.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = oneshot::channel();
        if let Ok(mut asked) = self.asked.lock() {
            asked.insert(ask_id.clone(), tx);
        }
        self.send(json!({"jsonrpc": "2.0", "id": ask_id, "method": method, "params": params}));
        (ask_id, rx)
    }

    /// Asks the client for its roots (in a task of its own) and keeps the answer.
    fn refresh_roots(self: &Arc<Self>) {
        let state = self.clone();
        tokio::spawn(async move {
            let (_, rx) = state.ask(&json!("roots/list"), json!({}));
            if let Ok(Ok(response)) = tokio::time::timeout(Duration::from_secs(30), rx).await
                && let Ok(mut roots) = state.roots.lock()
            {
                *roots = response;
            }
        });
    }

    fn is_cancelled(&self, id: &Value) -> bool {
        self.cancelled
            .lock()
            .map(|c| c.contains(&id.to_string()))
            .unwrap_or(false)
    }
}

fn tool(name: &str, description: &str, props: Value, annotations: Value) -> Value {
    json!({
        "name": name,
        "description": description,
        "inputSchema": {"type": "object", "properties": props},
        "annotations": annotations,
    })
}

fn tools(state: &State) -> Vec<Value> {
    let ro = json!({"readOnlyHint": true});
    let steps = json!({"steps": {"type": "integer"}, "step_ms": {"type": "integer"}});
    let mut list = vec![
        tool(
            "echo",
            "Returns its text",
            json!({"text": {"type": "string"}}),
            ro.clone(),
        ),
        tool(
            "add",
            "Adds a and b",
            json!({"a": {"type": "number"}, "b": {"type": "number"}}),
            ro.clone(),
        ),
        tool("pid", "The server's process id", json!({}), ro.clone()),
        tool(
            "bad_result",
            "Answers with something that is not a tool result",
            json!({}),
            ro.clone(),
        ),
        tool(
            "slow",
            "Counts steps with progress (read-only)",
            steps.clone(),
            ro.clone(),
        ),
        tool(
            "slow_write",
            "Counts steps with progress (destructive: never replay)",
            steps,
            json!({"readOnlyHint": false, "destructiveHint": true, "idempotentHint": false}),
        ),
        tool(
            "fail",
            "Returns a tool error",
            json!({"message": {"type": "string"}}),
            ro.clone(),
        ),
        tool(
            "add_tool",
            "Adds an echo tool named `name`",
            json!({"name": {"type": "string"}}),
            json!({}),
        ),
        tool(
            "stderr",
            "Writes text to stderr",
            json!({"text": {"type": "string"}}),
            ro.clone(),
        ),
        tool(
            "hang",
            "Never answers (until cancelled)",
            json!({}),
            ro.clone(),
        ),
        tool(
            "ask",
            "Sends `method` with `params` to the client and answers with its response",
            json!({"method": {"type": "string"}, "params": {"type": "object"},
                   "cancel_after_ms": {"type": "integer"}}),
            json!({"readOnlyHint": false, "idempotentHint": false}),
        ),
        tool(
            "answers",
            "The responses the last asks got",
            json!({}),
            ro.clone(),
        ),
        tool(
            "roots",
            "The client's last roots/list answer, with the process id",
            json!({}),
            ro.clone(),
        ),
        tool(
            "client_capabilities",
            "The capabilities the client declared",
            json!({}),
            ro.clone(),
        ),
        tool(
            "log",
            "Sends a log message",
            json!({"level": {"type": "string"}, "message": {"type": "string"},
                   "logger": {"type": "string"}}),
            ro.clone(),
        ),
        tool(
            "log_level",
            "The level the client set",
            json!({}),
            ro.clone(),
        ),
        tool(
            "touch",
            "Says the resource `uri` was updated",
            json!({"uri": {"type": "string"}}),
            ro.clone(),
        ),
        tool(
            "change_lists",
            "Says its resources and prompts changed",
            json!({}),
            ro.clone(),
        ),
    ];
    for name in state
        .extra_tools
        .lock()
        .map(|t| t.clone())
        .unwrap_or_default()
    {
        list.push(tool(
            &name,
            "Added at run time; echoes",
            json!({"text": {"type": "string"}}),
            ro.clone(),
        ));
    }
    if state.rich {
        list.extend(rich::tools());
    }
    for i in 0..state.many {
        list.push(tool(
            &many_name(i),
            "One of many; echoes",
            json!({"text": {"type": "string"}}),
            ro.clone(),
        ));
    }
    list
}

fn many_name(i: usize) -> String {
    format!("many_{i:04}")
}

/// The page of `list` (under `field`) that `params.cursor` asks for, with the next page's
/// cursor (`fx-OFFSET`); the whole list without `--page-size`.
fn paged(state: &State, field: &str, list: Vec<Value>, params: &Value) -> Value {
    let Some(k) = state.page_size.map(|k| k.max(1)) else {
        return json!({ field: list });
    };
    let start = params["cursor"]
        .as_str()
        .and_then(|c| c.strip_prefix("fx-"))
        .and_then(|c| c.parse::<usize>().ok())
        .unwrap_or(0)
        .min(list.len());
    let end = (start + k).min(list.len());
    let mut page = json!({ field: list[start..end] });
    if end < list.len() {
        let next = if state.repeat_cursor { k } else { end };
        page["nextCursor"] = json!(format!("fx-{next}"));
    }
    page
}

fn text_result(text: impl Into<String>) -> Value {
    json!({"content": [{"type": "text", "text": text.into()}]})
}

async fn call_tool(state: Arc<State>, id: Value, params: Value) {
    let name = params["name"].as_str().unwrap_or_default().to_owned();
    let args = params.get("arguments").cloned().unwrap_or(json!({}));
    let token = params.pointer("/_meta/progressToken").cloned();
    let result = match name.as_str() {
        "echo" => text_result(args["text"].as_str().unwrap_or_default()),
        "add" => {
            let sum = args["a"].as_f64().unwrap_or(0.0) + args["b"].as_f64().unwrap_or(0.0);
            text_result(sum.to_string())
        }
        "pid" => text_result(std::process::id().to_string()),
        "bad_result" => json!({"content": "not a list of content blocks"}),
        "slow" | "slow_write" => {
            let steps = args["steps"].as_u64().unwrap_or(10);
            let step_ms = args["step_ms"].as_u64().unwrap_or(100);
            for i in 1..=steps {
                tokio::time::sleep(Duration::from_millis(step_ms)).await;
                if state.is_cancelled(&id) {
                    eprintln!("fixture: request {id} cancelled at step {i}");
                    return; // a cancelled request gets no response
                }
                if let Some(token) = &token {
                    state.send(json!({
                        "jsonrpc": "2.0",
                        "method": "notifications/progress",
                        "params": {"progressToken": token, "progress": i, "total": steps,
                                   "message": format!("step {i} of {steps}")},
                    }));
                }
            }
            text_result(format!("done after {steps} steps"))
        }
        "hang" => {
            while !state.is_cancelled(&id) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            eprintln!("fixture: hung request {id} cancelled");
            return; // a cancelled request gets no response
        }
        "fail" => json!({
            "content": [{"type": "text", "text": args["message"].as_str().unwrap_or("failed")}],
            "isError": true,
        }),
        "add_tool" => {
            let new = args["name"].as_str().unwrap_or("extra").to_owned();
            if let Ok(mut t) = state.extra_tools.lock() {
                t.push(new.clone());
            }
            state.send(json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}));
            text_result(format!("added {new}"))
        }
        "stderr" => {
            eprintln!("{}", args["text"].as_str().unwrap_or_default());
            text_result("ok")
        }
        "ask" => {
            let mut params = args.get("params").cloned().unwrap_or(json!({}));
            // `pad`: that many bytes more in params (for tests of oversized requests)
            if let Some(n) = args["pad"].as_u64()
                && let Some(p) = params.as_object_mut()
            {
                p.insert("pad".into(), Value::String("x".repeat(n as usize)));
            }
            let (ask_id, rx) = state.ask(&args["method"], params);
            let wait = args["cancel_after_ms"].as_u64();
            if args["detach"] == true {
                drop(rx); // `answers` records the response
                text_result("asked")
            } else {
                match tokio::time::timeout(Duration::from_millis(wait.unwrap_or(30_000)), rx).await
                {
                    Ok(Ok(response)) => text_result(response.to_string()),
                    Err(_) if wait.is_some() => {
                        if let Ok(mut asked) = state.asked.lock() {
                            asked.remove(&ask_id);
                        }
                        state.send(
                            json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                        "params": {"requestId": ask_id, "reason": "the fixture gave up"}}),
                        );
                        text_result("cancelled")
                    }
                    _ => json!({"content": [{"type": "text", "text": "no answer within 30 s"}],
                            "isError": true}),
                }
            }
        }
        "roots" => text_result(
            json!({
                "pid": std::process::id(),
                "roots": state.roots.lock().map(|r| r.clone()).unwrap_or_default(),
                "list_changed": state.roots_changed.load(Ordering::Relaxed),
            })
            .to_string(),
        ),
        "log" => {
            let mut params = json!({"level": args["level"], "data": args["message"]});
            if let Some(logger) = args.get("logger") {
                params["logger"] = logger.clone();
            }
            state.send(json!({"jsonrpc": "2.0", "method": "notifications/message",
                              "params": params}));
            text_result("logged")
        }
        "log_level" => text_result(
            state
                .log_level
                .lock()
                .ok()
                .and_then(|l| l.clone())
                .unwrap_or_else(|| "none".into()),
        ),
        "touch" => {
            state.send(
                json!({"jsonrpc": "2.0", "method": "notifications/resources/updated",
                              "params": {"uri": args["uri"]}}),
            );
            text_result("touched")
        }
        "change_lists" => {
            state.send(json!({"jsonrpc": "2.0",
                              "method": "notifications/resources/list_changed"}));
            state.send(json!({"jsonrpc": "2.0", "method": "notifications/prompts/list_changed"}));
            text_result("changed")
        }
        "answers" => text_result(
            state
                .answers
                .lock()
                .map(|a| Value::from(a.clone()).to_string())
                .unwrap_or_default(),
        ),
        "rich" if state.rich => rich::result(),
        "meta_echo" if state.rich => {
            let meta = params.get("_meta").cloned().unwrap_or(Value::Null);
            json!({"content": [{"type": "text", "text": meta.to_string()}],
                   "structuredContent": {"meta": meta}})
        }
        "client_capabilities" => text_result(
            state
                .client_capabilities
                .lock()
                .map(|c| c.to_string())
                .unwrap_or_default(),
        ),
        other => {
            let many = other
                .strip_prefix("many_")
                .and_then(|i| i.parse::<usize>().ok())
                .is_some_and(|i| i < state.many && other == many_name(i));
            let extra = many
                || state
                    .extra_tools
                    .lock()
                    .map(|t| t.contains(&other.to_owned()))
                    .unwrap_or(false);
            if extra {
                text_result(args["text"].as_str().unwrap_or_default())
            } else {
                state.send(json!({"jsonrpc": "2.0", "id": id,
                    "error": {"code": -32602, "message": format!("unknown tool {other:?}")}}));
                return;
            }
        }
    };
    state.send(json!({"jsonrpc": "2.0", "id": id, "result": result}));
}

fn handle(state: &Arc<State>, name: &str, msg: Value) {
    let id = msg.get("id").cloned();
    let method = msg["method"].as_str().unwrap_or_default();
    let params = msg.get("params").cloned().unwrap_or(json!({}));
    let reply = |result: Value| {
        if let Some(id) = &id {
            state.send(json!({"jsonrpc": "2.0", "id": id, "result": result}));
        }
    };
    if method.is_empty()
        && let Some(id) = &id
    {
        // a response to one of our `ask`s
        let key = id.as_str().unwrap_or_default().to_owned();
        if let Some(tx) = state.asked.lock().ok().and_then(|mut a| a.remove(&key)) {
            let mut response = msg.clone();
            if let Some(m) = response.as_object_mut() {
                m.remove("jsonrpc");
                m.remove("id");
            }
            if let Ok(mut answers) = state.answers.lock() {
                if answers.len() >= 16 {
                    answers.remove(0);
                }
                answers.push(response.clone());
            }
            let _ = tx.send(response);
        }
        return;
    }
    match method {
        "initialize" => {
            if let Ok(mut c) = state.client_capabilities.lock() {
                *c = params["capabilities"].clone();
            }
            reply(json!({
            "protocolVersion": params["protocolVersion"].as_str().unwrap_or("2025-11-25"),
            "capabilities": {"tools": {"listChanged": true},
                             "resources": {"listChanged": true, "subscribe": true},
                             "prompts": {"listChanged": true}, "logging": {},
                             "completions": {}},
            "serverInfo": {"name": name, "version": "1.0.0"},
            }))
        }
        "notifications/initialized" => {
            if state.roots_on_start {
                state.refresh_roots();
            }
        }
        "notifications/roots/list_changed" => {
            state.roots_changed.fetch_add(1, Ordering::Relaxed);
            state.refresh_roots();
        }
        "notifications/progress" => {}
        "notifications/cancelled" => {
            if let (Some(rid), Ok(mut c)) = (params.get("requestId"), state.cancelled.lock()) {
                c.insert(rid.to_string());
            }
        }
        "ping" => reply(json!({})),
        // what it was asked, as the one completion: `<ref name or uri>:<argument>=<value>`
        "completion/complete" => {
            let r = &params["ref"];
            let target = r["name"].as_str().or(r["uri"].as_str()).unwrap_or_default();
            let arg = &params["argument"];
            let value = format!(
                "{target}:{}={}",
                arg["name"].as_str().unwrap_or_default(),
                arg["value"].as_str().unwrap_or_default()
            );
            reply(json!({"completion": {"values": [value], "total": 1, "hasMore": false}}));
        }
        "resources/subscribe" | "resources/unsubscribe" => {
            eprintln!(
                "fixture: {method} {}",
                params["uri"].as_str().unwrap_or_default()
            );
            reply(json!({}));
        }
        "logging/setLevel" => {
            if let Ok(mut l) = state.log_level.lock() {
                *l = params["level"].as_str().map(str::to_owned);
            }
            reply(json!({}));
        }
        "tools/list" => reply(paged(state, "tools", tools(state), &params)),
        "tools/call" => {
            if let Some(id) = id {
                tokio::spawn(call_tool(state.clone(), id, params));
            }
        }
        "resources/list" => {
            let mut list = vec![
                json!({"uri": "fixture://readme", "name": "readme", "mimeType": "text/plain"}),
            ];
            if let Some(host) = &state.resource_host {
                list.push(
                    json!({"uri": format!("fixture://{host}/notes"), "name": "notes",
                                 "mimeType": "text/plain"}),
                );
            }
            list.extend((0..state.many).map(|i| {
                json!({"uri": format!("fixture://many/{i}"), "name": many_name(i),
                       "mimeType": "text/plain"})
            }));
            if state.rich {
                list.extend(rich::resources());
            }
            reply(paged(state, "resources", list, &params));
        }
        "resources/templates/list" => {
            let list: Vec<Value> = state
                .resource_host
                .iter()
                .map(|host| {
                    json!({"uriTemplate": format!("fixture://{host}/echo/{{text}}"),
                                   "name": "echo", "mimeType": "text/plain"})
                })
                .chain(state.rich.then(rich::template))
                .collect();
            reply(paged(state, "resourceTemplates", list, &params));
        }
        "resources/read" => {
            let uri = params["uri"].as_str().unwrap_or_default();
            let own = |rest: &str| {
                let host = state.resource_host.as_deref()?;
                uri.strip_prefix("fixture://")?
                    .strip_prefix(host)?
                    .strip_prefix('/')?
                    .strip_prefix(rest)
                    .map(str::to_owned)
            };
            if state.resource_host.is_some() {
                eprintln!("fixture: read {uri}");
            }
            let many = uri
                .strip_prefix("fixture://many/")
                .and_then(|i| i.parse::<usize>().ok())
                .filter(|i| *i < state.many);
            let text = if uri == "fixture://readme" {
                Some(format!("{name} fixture readme"))
            } else if let Some(i) = many {
                Some(format!("many resource {i}"))
            } else if own("notes").is_some_and(|r| r.is_empty()) {
                state.resource_host.as_ref().map(|h| format!("{h} notes"))
            } else {
                own("echo/")
            };
            if state.rich
                && let Some(contents) = rich::read(uri)
            {
                reply(contents);
            } else if let Some(text) = text {
                reply(json!({"contents": [{"uri": uri, "mimeType": "text/plain", "text": text}]}));
            } else if let Some(id) = &id {
                state.send(json!({"jsonrpc": "2.0", "id": id,
                    "error": {"code": -32002, "message": format!("no resource {uri}")}}));
            }
        }
        "prompts/list" => {
            let mut list = vec![json!({"name": "greet", "description": "Greets someone",
                "arguments": [{"name": "who", "required": true}]})];
            list.extend(
                (0..state.many)
                    .map(|i| json!({"name": many_name(i), "description": "One of many"})),
            );
            if state.rich {
                list.push(rich::prompt());
            }
            reply(paged(state, "prompts", list, &params));
        }
        "prompts/get" if state.rich && params["name"] == "rich" => {
            reply(rich::prompt_messages(&params["arguments"]));
        }
        "prompts/get" => {
            let who = params
                .pointer("/arguments/who")
                .and_then(Value::as_str)
                .unwrap_or("world");
            reply(
                json!({"messages": [{"role": "user", "content": {"type": "text", "text": format!("Hello, {who}!")}}]}),
            );
        }
        _ => {
            if let Some(id) = &id {
                state.send(json!({"jsonrpc": "2.0", "id": id,
                    "error": {"code": -32601, "message": format!("method {method:?} not found")}}));
            }
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--exit-immediately") {
        eprintln!("fixture: exiting at once as asked");
        std::process::exit(1);
    }
    let name = args
        .iter()
        .position(|a| a == "--name")
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| "switchboard-fixture".into());
    let flag = |name: &str| -> Option<usize> {
        let i = args.iter().position(|a| a == name)?;
        args.get(i + 1)?.parse().ok()
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let state = Arc::new(State {
        out: tx,
        garbage: args.iter().any(|a| a == "--garbage"),
        resource_host: args
            .iter()
            .position(|a| a == "--resource-host")
            .and_then(|i| args.get(i + 1))
            .cloned(),
        extra_tools: Mutex::new(Vec::new()),
        many: flag("--many").unwrap_or(0),
        page_size: flag("--page-size"),
        repeat_cursor: args.iter().any(|a| a == "--repeat-cursor"),
        rich: args.iter().any(|a| a == "--rich"),
        cancelled: Mutex::new(HashSet::new()),
        asked: Mutex::new(HashMap::new()),
        next_ask: AtomicU64::new(0),
        answers: Mutex::new(Vec::new()),
        client_capabilities: Mutex::new(Value::Null),
        log_level: Mutex::new(None),
        roots_on_start: args.iter().any(|a| a == "--roots-on-start"),
        roots: Mutex::new(Value::Null),
        roots_changed: AtomicU64::new(0),
    });
    let writer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        while let Some(line) = rx.recv().await {
            let mut buf = line.into_bytes();
            buf.push(b'\n');
            // batch what is already queued into one write
            while let Ok(more) = rx.try_recv() {
                buf.extend_from_slice(more.as_bytes());
                buf.push(b'\n');
            }
            if stdout.write_all(&buf).await.is_err() || stdout.flush().await.is_err() {
                break;
            }
        }
    });
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(&line) {
            Ok(msg) => handle(&state, &name, msg),
            Err(e) => state.send(json!({"jsonrpc": "2.0", "id": null,
                "error": {"code": -32700, "message": format!("parse error: {e}")}})),
        }
    }
    drop(state);
    let _ = writer.await;
}

/// `--rich`: definitions and answers that use every field MCP has for them, with values that
/// a typed reader could easily rewrite (`priority` 0.7, a `lastModified` with an offset,
/// `size` large, unknown extension fields), to show that nothing is lost or changed in passing.
mod rich {
    use serde_json::{Value, json};

    /// A 1×1 PNG and a tiny WAV header, base64.
    const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";
    const WAV: &str = "UklGRiQAAABXQVZFZm10IBAAAAABAAEAQB8AAIA+AAACABAAZGF0YQAAAAA=";

    fn annotations() -> Value {
        json!({"audience": ["user", "assistant"], "priority": 0.7,
               "lastModified": "2025-01-12T15:00:58.123+02:00"})
    }

    fn icons() -> Value {
        json!([
            {"src": "https://example.com/icon.png", "mimeType": "image/png",
             "sizes": ["48x48", "96x96"], "theme": "light"},
            {"src": format!("data:image/png;base64,{PNG}"), "mimeType": "image/png",
             "sizes": ["any"], "theme": "dark"}
        ])
    }

    fn meta(of: &str) -> Value {
        json!({"example.com/of": of, "example.com/nested": {"n": 1.5, "list": [1, "two", null]}})
    }

    pub(super) fn tools() -> Vec<Value> {
        vec![
            json!({
                "name": "rich",
                "title": "Rich answer",
                "description": "Answers every content type, with annotations and _meta",
                "icons": icons(),
                "inputSchema": {
                    "$schema": "https://json-schema.org/draft/2020-12/schema",
                    "type": "object",
                    "$defs": {"level": {"type": "string", "enum": ["low", "high"]}},
                    "properties": {
                        "level": {"$ref": "#/$defs/level"},
                        "tags": {"type": "array", "prefixItems": [{"type": "string"}],
                                 "unevaluatedItems": false}
                    },
                    "additionalProperties": false
                },
                "outputSchema": {
                    "$schema": "https://json-schema.org/draft/2020-12/schema",
                    "type": "object",
                    "properties": {"ok": {"type": "boolean"}, "ratio": {"type": "number"}},
                    "required": ["ok"]
                },
                "annotations": {"title": "Rich", "readOnlyHint": true, "destructiveHint": false,
                                "idempotentHint": true, "openWorldHint": false},
                "execution": {"taskSupport": "optional"},
                "_meta": meta("tool"),
                "x-extension": {"kept": true}
            }),
            json!({
                "name": "meta_echo",
                "description": "Answers the request's own _meta",
                "inputSchema": {"type": "object"},
                "annotations": {"readOnlyHint": true}
            }),
        ]
    }

    pub(super) fn result() -> Value {
        json!({
            "content": [
                {"type": "text", "text": "every kind of content", "annotations": annotations(),
                 "_meta": meta("text")},
                {"type": "image", "data": PNG, "mimeType": "image/png",
                 "annotations": annotations(), "_meta": meta("image")},
                {"type": "audio", "data": WAV, "mimeType": "audio/wav",
                 "annotations": annotations(), "_meta": meta("audio")},
                {"type": "resource_link", "uri": "fixture://rich/text", "name": "rich-text",
                 "title": "Rich text", "description": "A linked resource",
                 "mimeType": "text/plain", "size": 9007199254740991_u64, "icons": icons(),
                 "annotations": annotations(), "_meta": meta("link")},
                {"type": "resource", "resource": {"uri": "fixture://rich/text",
                 "mimeType": "text/plain", "text": "embedded text", "_meta": meta("embedded")},
                 "annotations": annotations(), "_meta": meta("resource")},
                {"type": "resource", "resource": {"uri": "fixture://rich/blob",
                 "mimeType": "image/png", "blob": PNG}}
            ],
            "structuredContent": {"ok": true, "ratio": 0.1, "big": 12345678901234567890_u64},
            "isError": false,
            "_meta": meta("result")
        })
    }

    pub(super) fn resources() -> Vec<Value> {
        vec![
            json!({"uri": "fixture://rich/text", "name": "rich-text", "title": "Rich text",
                   "description": "Text with every field", "mimeType": "text/plain",
                   "size": 13, "icons": icons(), "annotations": annotations(),
                   "_meta": meta("resource")}),
            json!({"uri": "fixture://rich/blob", "name": "rich-blob", "title": "Rich blob",
                   "mimeType": "image/png", "size": 70}),
        ]
    }

    pub(super) fn template() -> Value {
        json!({"uriTemplate": "fixture://rich/{id}", "name": "rich-item", "title": "Rich item",
               "description": "Any id", "mimeType": "text/plain", "icons": icons(),
               "annotations": annotations(), "_meta": meta("template")})
    }

    pub(super) fn read(uri: &str) -> Option<Value> {
        let contents = match uri {
            "fixture://rich/text" => json!({"uri": uri, "mimeType": "text/plain",
                                            "text": "embedded text", "_meta": meta("contents")}),
            "fixture://rich/blob" => json!({"uri": uri, "mimeType": "image/png", "blob": PNG}),
            _ => {
                let id = uri.strip_prefix("fixture://rich/")?;
                json!({"uri": uri, "mimeType": "text/plain", "text": format!("item {id}")})
            }
        };
        Some(json!({"contents": [contents], "_meta": meta("read")}))
    }

    pub(super) fn prompt() -> Value {
        json!({"name": "rich", "title": "Rich prompt", "description": "Every content type",
               "icons": icons(), "_meta": meta("prompt"),
               "arguments": [{"name": "topic", "title": "Topic", "description": "What about",
                              "required": true},
                             {"name": "tone", "title": "Tone", "required": false}]})
    }

    pub(super) fn prompt_messages(arguments: &Value) -> Value {
        let topic = arguments["topic"].as_str().unwrap_or("nothing");
        json!({
            "description": format!("about {topic}"),
            "messages": [
                {"role": "user", "content": {"type": "text", "text": format!("Tell me of {topic}"),
                 "annotations": annotations(), "_meta": meta("text")}},
                {"role": "assistant", "content": {"type": "image", "data": PNG,
                 "mimeType": "image/png", "annotations": annotations()}},
                {"role": "user", "content": {"type": "audio", "data": WAV,
                 "mimeType": "audio/wav"}},
                {"role": "user", "content": {"type": "resource_link",
                 "uri": "fixture://rich/text", "name": "rich-text", "title": "Rich text",
                 "size": 13, "icons": icons(), "annotations": annotations()}},
                {"role": "user", "content": {"type": "resource", "resource": {
                 "uri": "fixture://rich/text", "mimeType": "text/plain",
                 "text": "embedded text"}, "annotations": annotations(),
                 "_meta": meta("embedded")}}
            ],
            "_meta": meta("get")
        })
    }
}
