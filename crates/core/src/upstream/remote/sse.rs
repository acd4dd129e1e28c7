//! Server-Sent Events as a client reads them (the WHATWG event-stream format): lines into
//! events with their `id:` and `data:`, the server's `retry:` noted, comments and non-message
//! events skipped, one event at most [`MAX_MESSAGE`] bytes. Used for the Streamable HTTP
//! transport's response and `GET` streams; resumption is the session's business, not this.

use std::time::Duration;

use futures_util::StreamExt;
use reqwest::Response;

use super::link::{MAX_MESSAGE, error_chain};

/// One dispatched Server-Sent Event.
pub(super) struct SseEvent {
    /// The event's own `id:` field, if it had one.
    pub(super) id: Option<String>,
    /// The `data` of a `message` event; empty for other events and for priming events.
    pub(super) data: Vec<u8>,
}

/// Server-Sent Events from a response body.
pub(super) struct SseReader {
    stream:
        std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buf: Vec<u8>,
    data: Vec<u8>,
    event: String,
    id: Option<String>,
    /// The last `retry:` the server sent: how long it wants us to wait before reconnecting.
    pub(super) retry: Option<Duration>,
}

impl SseReader {
    pub(super) fn new(resp: Response) -> Self {
        Self {
            stream: Box::pin(resp.bytes_stream()),
            buf: Vec::new(),
            data: Vec::new(),
            event: String::new(),
            id: None,
            retry: None,
        }
    }

    /// The next event's data, skipping events without any (priming events, pings).
    pub(super) async fn next_data(&mut self) -> Result<Option<Vec<u8>>, String> {
        loop {
            match self.next().await? {
                Some(e) if e.data.is_empty() => {}
                Some(e) => return Ok(Some(e.data)),
                None => return Ok(None),
            }
        }
    }

    /// The next event with an id or data; `Ok(None)` at the end of the stream.
    pub(super) async fn next(&mut self) -> Result<Option<SseEvent>, String> {
        loop {
            while let Some(end) = self.buf.iter().position(|b| *b == b'\n') {
                let mut line: Vec<u8> = self.buf.drain(..=end).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                if let Some(event) = self.on_line(&line) {
                    return Ok(Some(event));
                }
            }
            if self.buf.len() + self.data.len() > MAX_MESSAGE {
                return Err(format!("an event larger than {MAX_MESSAGE} bytes"));
            }
            match self.stream.next().await {
                Some(Ok(chunk)) => self.buf.extend_from_slice(&chunk),
                Some(Err(e)) => return Err(error_chain(&e)),
                None => return Ok(None),
            }
        }
    }

    /// One line; the event when the line ends one.
    fn on_line(&mut self, line: &[u8]) -> Option<SseEvent> {
        if line.is_empty() {
            let event = std::mem::take(&mut self.event);
            let mut data = std::mem::take(&mut self.data);
            let id = self.id.take();
            let is_message = event.is_empty() || event == "message";
            if !is_message || data.trim_ascii().is_empty() {
                data.clear();
            }
            return (id.is_some() || !data.is_empty()).then_some(SseEvent { id, data });
        }
        if line.starts_with(b":") {
            return None; // a comment (keep-alive)
        }
        let (field, value) = match line.iter().position(|b| *b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &[][..]),
        };
        match field {
            b"data" => {
                if !self.data.is_empty() {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
            }
            b"event" => self.event = String::from_utf8_lossy(value).into_owned(),
            // An id with NUL is ignored (SSE standard); so is one that is not UTF-8, since it
            // could not be sent back in a header.
            b"id" if !value.contains(&0) => {
                if let Ok(id) = std::str::from_utf8(value) {
                    self.id = Some(id.to_owned());
                }
            }
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                if let Some(ms) = std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok())
                {
                    self.retry = Some(Duration::from_millis(ms));
                }
            }
            _ => {}
        }
        None
    }
}
