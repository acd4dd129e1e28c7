//! The dashboard's view of tool calls: those in flight (with their latest progress) and the
//! most recent finished ones, with their arguments and results cut to a size cap.
//!
//! Kept in memory, bounded: [`IN_FLIGHT_MAX`] running calls (the oldest is forgotten when a
//! new one starts beyond it) and [`RECENT_MAX`] finished calls (the oldest goes first). The
//! full history without payloads is the `calls` table in SQLite (see [`crate::store`]).
//!
//! Payloads are kept as the compact JSON text they came as and pretty-printed only when the
//! dashboard asks for the call ([`CallLog::get`]); one over [`PAYLOAD_CAP`] is cut at once.
//!
//! A call's record is reused: the one the finished list lets go of becomes the next call's
//! (its strings refilled in place), so that once the list is full a call allocates nothing
//! here. That keeps the log's memory where it was first allocated: records allocated anew
//! during a burst of sessions sat among the sessions' own allocations and, kept after the
//! sessions ended, held their pages (README, issue 14).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::Value;

/// Finished calls kept for the dashboard.
pub(crate) const RECENT_MAX: usize = 2000;
/// Running calls tracked at once.
pub(crate) const IN_FLIGHT_MAX: usize = 4096;
/// Bytes of JSON kept of a call's arguments and of its result.
pub(crate) const PAYLOAD_CAP: usize = 16 * 1024;

/// A call's arguments or result as kept: the JSON text, cut at [`PAYLOAD_CAP`] bytes.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct Payload {
    pub json: String,
    /// The size of the whole JSON text, before the cut.
    pub bytes: usize,
    pub truncated: bool,
}

/// A call's arguments or result as it comes to the log.
#[derive(Debug, Clone, Copy)]
pub(crate) enum PayloadSrc<'a> {
    /// JSON text (valid JSON, as read off the wire).
    Json(&'a str),
    Value(&'a Value),
}

/// A payload as kept until someone asks: small JSON text as it came, or already cut.
#[derive(Debug, Clone, PartialEq)]
enum Kept {
    Json(String),
    Shown(Payload),
}

/// Spare room a reused string may keep beyond what it holds (a record that once held a big
/// payload does not keep that much for every later call).
const SPARE_BYTES: usize = 1024;

/// `s` becomes `text`, in its own allocation when that fits.
fn refill(s: &mut String, text: &str) {
    s.clear();
    if s.capacity() > text.len() + SPARE_BYTES {
        *s = text.to_owned();
    } else {
        s.push_str(text);
    }
}

/// [`refill`] for an optional string: `None` lets go of it.
fn refill_opt(s: &mut Option<String>, text: Option<&str>) {
    match (s.as_mut(), text) {
        (Some(s), Some(text)) => refill(s, text),
        (None, Some(text)) => *s = Some(text.to_owned()),
        (_, None) => *s = None,
    }
}

impl Kept {
    /// What the log keeps of `src` if it is more than text to copy (pretty-printed or cut):
    /// made outside the log's lock. `None`: `src` is kept as its text ([`Kept::put`]).
    fn prepare(src: PayloadSrc<'_>) -> Option<Self> {
        match src {
            // pretty text is never shorter than compact text: under the cap, it may fit whole
            PayloadSrc::Json(text) if text.len() <= PAYLOAD_CAP => None,
            PayloadSrc::Json(text) => Some(Self::Shown(Payload::of_json(text))),
            PayloadSrc::Value(v) => Some(Self::Shown(Payload::of(v))),
        }
    }

    /// Puts `src` (made [`prepare`](Self::prepare)d as `made`) into `slot`, reusing the
    /// text the slot holds.
    fn put(slot: &mut Option<Self>, src: PayloadSrc<'_>, made: Option<Self>) {
        match (made, src) {
            (Some(kept), _) => *slot = Some(kept),
            (None, PayloadSrc::Json(text)) => match slot {
                Some(Self::Json(s)) => refill(s, text),
                _ => *slot = Some(Self::Json(text.to_owned())),
            },
            (None, PayloadSrc::Value(v)) => *slot = Some(Self::Shown(Payload::of(v))),
        }
    }

    fn shown(&self) -> Payload {
        match self {
            Self::Json(text) => Payload::of_json(text),
            Self::Shown(p) => p.clone(),
        }
    }
}

/// A call's payloads, kept out of sight of lists.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Payloads {
    arguments: KeptSlot,
    result: KeptSlot,
}

/// Where one payload is kept: its text stays when the record is reused for another call
/// (to be refilled), so whether it belongs to this call is said apart.
#[derive(Debug, Clone, Default, PartialEq)]
struct KeptSlot {
    kept: Option<Kept>,
    this_call: bool,
}

impl KeptSlot {
    fn get(&self) -> Option<&Kept> {
        self.kept.as_ref().filter(|_| self.this_call)
    }

    /// Puts `src` (made [`prepare`](Kept::prepare)d as `made`) here, reusing the text held.
    fn put(&mut self, src: PayloadSrc<'_>, made: Option<Kept>) {
        Kept::put(&mut self.kept, src, made);
        self.this_call = true;
    }

    fn clear(&mut self) {
        self.this_call = false;
    }
}

impl Payload {
    /// Pretty-prints JSON text (as [`of`](Self::of) its value).
    pub(crate) fn of_json(text: &str) -> Self {
        match serde_json::from_str::<Value>(text) {
            Ok(v) => Self::of(&v),
            Err(_) => Self::of(&Value::Null),
        }
    }

    pub(crate) fn of(value: &Value) -> Self {
        let mut buf = Vec::with_capacity(256);
        let text = match serde_json::to_writer_pretty(&mut buf, value) {
            Ok(()) => String::from_utf8(buf).unwrap_or_default(),
            Err(_) => String::new(),
        };
        let bytes = text.len();
        if bytes <= PAYLOAD_CAP {
            return Self {
                json: text,
                bytes,
                truncated: false,
            };
        }
        let mut end = PAYLOAD_CAP;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        Self {
            json: text[..end].to_owned(),
            bytes,
            truncated: true,
        }
    }
}

/// One call as the dashboard shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct CallView {
    pub call_id: String,
    pub tool: String,
    pub server: String,
    pub client: Option<String>,
    pub session_id: Option<String>,
    pub started_ms: i64,
    /// Set once finished.
    pub finished_ms: Option<i64>,
    pub latency_ms: Option<u64>,
    /// `running`, `ok` or `error`.
    pub outcome: &'static str,
    pub error: Option<String>,
    pub replay_attempts: u32,
    pub progress: Option<f64>,
    pub total: Option<f64>,
    pub message: Option<String>,
    /// Left out of lists; see [`CallLog::get`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arguments: Option<Payload>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Payload>,
    /// The payloads as kept, shown by [`CallLog::get`].
    #[serde(skip)]
    pub kept: Payloads,
}

/// A call as it starts, for [`CallLog::started`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct NewCall<'a> {
    pub call_id: &'a str,
    pub tool: &'a str,
    pub server: &'a str,
    pub client: Option<&'a str>,
    pub session_id: Option<&'a str>,
    pub started_ms: i64,
}

impl CallView {
    fn blank() -> Self {
        Self {
            call_id: String::new(),
            tool: String::new(),
            server: String::new(),
            client: None,
            session_id: None,
            started_ms: 0,
            finished_ms: None,
            latency_ms: None,
            outcome: "running",
            error: None,
            replay_attempts: 0,
            progress: None,
            total: None,
            message: None,
            arguments: None,
            result: None,
            kept: Payloads::default(),
        }
    }

    /// This record, reused for a call that has just started: its strings refilled in place.
    fn start(&mut self, call: &NewCall<'_>) {
        refill(&mut self.call_id, call.call_id);
        refill(&mut self.tool, call.tool);
        refill(&mut self.server, call.server);
        refill_opt(&mut self.client, call.client);
        refill_opt(&mut self.session_id, call.session_id);
        self.started_ms = call.started_ms;
        self.finished_ms = None;
        self.latency_ms = None;
        self.outcome = "running";
        self.error = None;
        self.replay_attempts = 0;
        self.progress = None;
        self.total = None;
        self.message = None;
        self.arguments = None;
        self.result = None;
        // the payloads' text stays, to be refilled by this call's
        self.kept.arguments.clear();
        self.kept.result.clear();
    }

    fn summary(&self) -> Self {
        Self {
            call_id: self.call_id.clone(),
            tool: self.tool.clone(),
            server: self.server.clone(),
            client: self.client.clone(),
            session_id: self.session_id.clone(),
            message: self.message.clone(),
            error: self.error.clone(),
            arguments: None,
            result: None,
            kept: Payloads::default(),
            ..*self
        }
    }

    /// With its payloads, pretty-printed.
    fn detailed(&self) -> Self {
        Self {
            arguments: self.kept.arguments.get().map(Kept::shown),
            result: self.kept.result.get().map(Kept::shown),
            ..self.summary()
        }
    }
}

/// Which finished calls a list wants (all fields optional; exact matches).
#[derive(Debug, Default, Clone, serde::Deserialize)]
pub(crate) struct Filter {
    pub server: Option<String>,
    pub tool: Option<String>,
    pub client: Option<String>,
    pub outcome: Option<String>,
    pub limit: Option<usize>,
}

impl Filter {
    fn matches(&self, c: &CallView) -> bool {
        let eq = |want: &Option<String>, have: Option<&str>| {
            want.as_deref()
                .is_none_or(|w| w.is_empty() || Some(w) == have)
        };
        eq(&self.server, Some(&c.server))
            && eq(&self.tool, Some(&c.tool))
            && eq(&self.client, c.client.as_deref())
            && eq(&self.outcome, Some(c.outcome))
    }
}

/// Cheap handle; clone freely.
#[derive(Debug, Clone, Default)]
pub(crate) struct CallLog {
    inner: Arc<Mutex<Log>>,
}

#[derive(Debug, Default)]
struct Log {
    /// By call id; ids are `c<n>` in start order, so a map keeps them findable and bounded.
    /// Boxed, here and in `recent`: a map's insert and remove shift its nodes' values, and a
    /// call moves from one to the other without being copied.
    in_flight: BTreeMap<u64, Box<CallView>>,
    /// Newest last.
    recent: VecDeque<Box<CallView>>,
    /// Records of forgotten calls, for the next calls (at most [`SPARE_MAX`]); boxed as in the
    /// lists, so that a record moves between them and here without being copied.
    #[allow(clippy::vec_box)]
    spare: Vec<Box<CallView>>,
}

/// Records kept for reuse beyond those in the lists.
const SPARE_MAX: usize = 64;

impl Log {
    fn forget(&mut self, record: Box<CallView>) {
        if self.spare.len() < SPARE_MAX {
            self.spare.push(record);
        }
    }
}

fn id_num(call_id: &str) -> u64 {
    call_id
        .strip_prefix('c')
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

impl CallLog {
    pub(crate) fn started(&self, call: NewCall<'_>) {
        let mut log = self.inner.lock().expect("call log lock");
        if log.in_flight.len() >= IN_FLIGHT_MAX
            && let Some((_, oldest)) = log.in_flight.pop_first()
        {
            log.forget(oldest);
        }
        let mut record = log
            .spare
            .pop()
            .unwrap_or_else(|| Box::new(CallView::blank()));
        record.start(&call);
        log.in_flight.insert(id_num(call.call_id), record);
    }

    pub(crate) fn arguments(&self, call_id: &str, arguments: PayloadSrc<'_>) {
        let made = Kept::prepare(arguments); // outside the lock
        let mut log = self.inner.lock().expect("call log lock");
        if let Some(c) = log.in_flight.get_mut(&id_num(call_id)) {
            c.kept.arguments.put(arguments, made);
        }
    }

    pub(crate) fn progress(
        &self,
        call_id: &str,
        progress: f64,
        total: Option<f64>,
        message: Option<String>,
    ) {
        let mut log = self.inner.lock().expect("call log lock");
        if let Some(c) = log.in_flight.get_mut(&id_num(call_id)) {
            c.progress = Some(progress);
            c.total = total;
            if message.is_some() {
                c.message = message;
            }
        }
    }

    /// Moves a call to the finished list. `result` is the tool's result (or error) as JSON.
    pub(crate) fn finished(
        &self,
        call_id: &str,
        latency_ms: u64,
        replay_attempts: u32,
        error: Option<String>,
        result: Option<PayloadSrc<'_>>,
    ) {
        let made = result.and_then(Kept::prepare); // outside the lock
        let mut log = self.inner.lock().expect("call log lock");
        let Some(mut c) = log.in_flight.remove(&id_num(call_id)) else {
            return;
        };
        c.finished_ms = Some(c.started_ms + latency_ms as i64);
        c.latency_ms = Some(latency_ms);
        c.outcome = if error.is_some() { "error" } else { "ok" };
        c.error = error;
        c.replay_attempts = replay_attempts;
        match result {
            Some(src) => c.kept.result.put(src, made),
            None => c.kept.result.clear(),
        }
        if log.recent.len() >= RECENT_MAX
            && let Some(oldest) = log.recent.pop_front()
        {
            log.forget(oldest);
        }
        log.recent.push_back(c);
    }

    /// Running calls, oldest first (without payloads).
    /// How many calls are in flight, without copying them.
    pub(crate) fn in_flight_count(&self) -> usize {
        self.inner.lock().expect("call log lock").in_flight.len()
    }

    pub(crate) fn in_flight(&self) -> Vec<CallView> {
        let log = self.inner.lock().expect("call log lock");
        log.in_flight.values().map(|c| c.summary()).collect()
    }

    /// Finished calls matching `filter`, newest first (without payloads).
    pub(crate) fn recent(&self, filter: &Filter) -> Vec<CallView> {
        let limit = filter.limit.unwrap_or(500).min(RECENT_MAX);
        let log = self.inner.lock().expect("call log lock");
        log.recent
            .iter()
            .rev()
            .filter(|c| filter.matches(c))
            .take(limit)
            .map(|c| c.summary())
            .collect()
    }

    /// One call with its arguments and result.
    pub(crate) fn get(&self, call_id: &str) -> Option<CallView> {
        let found = {
            let log = self.inner.lock().expect("call log lock");
            log.in_flight
                .get(&id_num(call_id))
                .or_else(|| log.recent.iter().rev().find(|c| c.call_id == call_id))
                .map(|c| CallView::clone(c))
        };
        found.map(|c| c.detailed()) // pretty-printed outside the lock
    }

    /// Latency percentiles and error rates per server and tool over the kept finished calls.
    pub(crate) fn stats(&self) -> Vec<ToolStats> {
        let log = self.inner.lock().expect("call log lock");
        let mut by: BTreeMap<(String, String), (Vec<u64>, usize)> = BTreeMap::new();
        for c in &log.recent {
            let e = by.entry((c.server.clone(), c.tool.clone())).or_default();
            e.0.push(c.latency_ms.unwrap_or(0));
            e.1 += usize::from(c.outcome == "error");
        }
        by.into_iter()
            .map(|((server, tool), (mut lat, errors))| {
                lat.sort_unstable();
                let pct = |p: f64| {
                    let i = ((lat.len() as f64 - 1.0) * p).round() as usize;
                    lat[i.min(lat.len() - 1)]
                };
                ToolStats {
                    calls: lat.len(),
                    errors,
                    error_rate: errors as f64 / lat.len() as f64,
                    p50_ms: pct(0.5),
                    p90_ms: pct(0.9),
                    p99_ms: pct(0.99),
                    max_ms: lat[lat.len() - 1],
                    server,
                    tool,
                }
            })
            .collect()
    }
}

/// Latency and errors of one tool of one server.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct ToolStats {
    pub server: String,
    pub tool: String,
    pub calls: usize,
    pub errors: usize,
    pub error_rate: f64,
    pub p50_ms: u64,
    pub p90_ms: u64,
    pub p99_ms: u64,
    pub max_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn call<'a>(id: &'a str, tool: &'a str) -> NewCall<'a> {
        NewCall {
            call_id: id,
            tool,
            server: "s",
            client: Some("cli"),
            session_id: None,
            started_ms: 1000,
        }
    }

    #[test]
    fn payloads_are_cut_at_the_cap_on_a_char_boundary() {
        let big = json!({"text": "é".repeat(PAYLOAD_CAP)});
        let p = Payload::of(&big);
        assert!(p.truncated);
        assert!(p.json.len() <= PAYLOAD_CAP && p.json.len() > PAYLOAD_CAP - 4);
        assert!(p.bytes > PAYLOAD_CAP * 2);
        let small = Payload::of(&json!({"a": 1}));
        assert!(!small.truncated);
        assert_eq!(small.bytes, small.json.len());
    }

    #[test]
    fn a_call_moves_from_in_flight_to_recent_with_its_progress_and_result() {
        let log = CallLog::default();
        log.started(call("c1", "slow"));
        log.arguments("c1", PayloadSrc::Value(&json!({"a": 1})));
        log.progress("c1", 2.0, Some(4.0), Some("half".into()));
        let running = log.in_flight();
        assert_eq!(running.len(), 1);
        assert_eq!(running[0].progress, Some(2.0));
        assert_eq!(running[0].message.as_deref(), Some("half"));
        assert!(running[0].arguments.is_none(), "lists leave payloads out");
        log.finished(
            "c1",
            40,
            1,
            None,
            Some(PayloadSrc::Json(r#"{"content":[]}"#)),
        );
        assert!(log.in_flight().is_empty());
        let done = log.get("c1").unwrap();
        assert_eq!(done.outcome, "ok");
        assert_eq!(done.latency_ms, Some(40));
        assert_eq!(done.finished_ms, Some(1040));
        assert_eq!(done.replay_attempts, 1);
        assert!(done.arguments.unwrap().json.contains("\"a\": 1"));
        assert!(done.result.is_some());
    }

    #[test]
    fn raw_json_payloads_are_shown_as_their_values_pretty_printed() {
        let log = CallLog::default();
        log.started(call("c1", "echo"));
        let args = r#"{"text":"h\u00e9 \"quoted\" ☃","n":[1,2.5,-3e2],"z":null}"#;
        log.arguments("c1", PayloadSrc::Json(args));
        let result = r#"{"content":[{"type":"text","text":"ok"}],"isError":false}"#;
        log.finished("c1", 1, 0, None, Some(PayloadSrc::Json(result)));
        let got = log.get("c1").unwrap();
        let value: Value = serde_json::from_str(args).unwrap();
        assert_eq!(got.arguments.unwrap(), Payload::of(&value));
        let value: Value = serde_json::from_str(result).unwrap();
        assert_eq!(got.result.unwrap(), Payload::of(&value));
        assert!(log.recent(&Filter::default())[0].result.is_none());

        // over the cap as compact text: cut at once, exactly as its value would be
        log.started(call("c2", "echo"));
        let big = format!(r#"{{"text":"{}"}}"#, "é\\n".repeat(PAYLOAD_CAP));
        log.arguments("c2", PayloadSrc::Json(&big));
        let shown = log.get("c2").unwrap().arguments.unwrap();
        assert!(shown.truncated);
        assert_eq!(
            shown,
            Payload::of(&serde_json::from_str::<Value>(&big).unwrap())
        );
    }

    #[test]
    fn filters_and_stats() {
        let log = CallLog::default();
        for i in 0..10 {
            let id = format!("c{i}");
            log.started(call(&id, if i % 2 == 0 { "even" } else { "odd" }));
            let error = (i == 9).then(|| "boom".to_owned());
            log.finished(&id, i * 10, 0, error, None);
        }
        let odd = log.recent(&Filter {
            tool: Some("odd".into()),
            ..Filter::default()
        });
        assert_eq!(odd.len(), 5);
        assert_eq!(odd[0].call_id, "c9", "newest first");
        let errors = log.recent(&Filter {
            outcome: Some("error".into()),
            ..Filter::default()
        });
        assert_eq!(errors.len(), 1);
        let stats = log.stats();
        let odd = stats.iter().find(|s| s.tool == "odd").unwrap();
        assert_eq!((odd.calls, odd.errors), (5, 1));
        assert_eq!((odd.p50_ms, odd.max_ms), (50, 90));
        assert!((odd.error_rate - 0.2).abs() < 1e-9);
    }

    #[test]
    fn the_recent_list_is_bounded() {
        let log = CallLog::default();
        for i in 0..(RECENT_MAX + 5) {
            let id = format!("c{i}");
            log.started(call(&id, "t"));
            log.finished(&id, 1, 0, None, None);
        }
        let all = log.recent(&Filter {
            limit: Some(usize::MAX),
            ..Filter::default()
        });
        assert_eq!(all.len(), RECENT_MAX);
        assert!(log.get("c0").is_none());
    }

    #[test]
    fn a_forgotten_call_s_record_and_text_are_the_next_call_s() {
        let log = CallLog::default();
        let args = r#"{"text":"hello"}"#;
        let finish = |i: usize| {
            let id = format!("c{i:05}");
            log.started(NewCall {
                session_id: Some("0123456789abcdef0123456789abcdef"),
                ..call(&id, "t")
            });
            log.arguments(&id, PayloadSrc::Json(args));
            log.finished(&id, 1, 0, None, Some(PayloadSrc::Json(args)));
        };
        for i in 0..RECENT_MAX {
            finish(i);
        }
        let oldest = {
            let log = log.inner.lock().unwrap();
            let c = &log.recent[0];
            (
                &**c as *const CallView,
                c.call_id.as_ptr(),
                c.session_id.as_ref().unwrap().as_ptr(),
            )
        };
        // the list is full: the next call takes the oldest one's place, and the record the
        // oldest let go of is the call after it's
        finish(RECENT_MAX);
        finish(RECENT_MAX + 1);
        let inner = log.inner.lock().unwrap();
        let newest = inner.recent.back().unwrap();
        assert_eq!(newest.call_id, format!("c{:05}", RECENT_MAX + 1));
        assert_eq!(
            &**newest as *const CallView, oldest.0,
            "the record is reused"
        );
        assert_eq!(
            newest.call_id.as_ptr(),
            oldest.1,
            "its strings are refilled in place"
        );
        assert_eq!(newest.session_id.as_ref().unwrap().as_ptr(), oldest.2);
        assert_eq!(inner.recent.len(), RECENT_MAX);
        assert!(inner.spare.len() <= SPARE_MAX);
        drop(inner);
        let got = log.get(&format!("c{:05}", RECENT_MAX + 1)).unwrap();
        assert_eq!(got.outcome, "ok");
        assert_eq!(got.tool, "t");
        assert!(got.arguments.unwrap().json.contains("hello"));
        assert!(log.get("c00000").is_none() && log.get("c00001").is_none());
    }

    #[test]
    fn a_reused_record_keeps_nothing_of_its_last_call() {
        let log = CallLog::default();
        for i in 0..RECENT_MAX + 2 {
            let id = format!("c{i}");
            log.started(NewCall {
                session_id: (i == 0).then_some("s-old"),
                ..call(&id, "t")
            });
            if i == 0 {
                log.arguments(&id, PayloadSrc::Json("[1]"));
                log.progress(&id, 1.0, Some(2.0), Some("half".into()));
                log.finished(
                    &id,
                    5,
                    2,
                    Some("boom".into()),
                    Some(PayloadSrc::Json("[2]")),
                );
            } else {
                log.finished(&id, 1, 0, None, None);
            }
        }
        // c0 was forgotten, its record went to the call after the next
        let c = log.get(&format!("c{}", RECENT_MAX + 1)).unwrap();
        assert_eq!(c.session_id, None);
        assert_eq!(
            (c.progress, c.total, c.message.as_deref()),
            (None, None, None)
        );
        assert_eq!(
            (c.error.as_deref(), c.replay_attempts, c.outcome),
            (None, 0, "ok")
        );
        assert!(c.arguments.is_none() && c.result.is_none());
    }
}
