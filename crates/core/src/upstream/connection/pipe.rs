//! Writing to a child's stdin without a task hop per message, and in one `write` per burst.
//!
//! A caller whose line finds the pipe idle (nothing queued, the writer task not busy, and no
//! line written in the last [`BURST_GAP`]) writes it itself with one non-blocking `write`,
//! under the lock, so it reaches the child at once and is never torn: the call is synchronous,
//! there is no await for a cancellation to land in. Otherwise the line is appended whole to
//! the queue, and the writer task writes everything queued with one `write`, in order: when
//! the pipe is busy (a partial write, a full pipe, bytes already queued), and when calls come
//! close together. Then the writer first lets the other tasks that are ready run (a
//! [`yield_now`](tokio::task::yield_now), which tokio runs after them), so that the calls of
//! one burst (say, requests that arrived on several sockets at once) reach the server in one
//! `write` and wake it once, not once each. The queue is bounded: past [`QUEUE_CAP`] bytes
//! callers wait for room (and [`PipeOut::offer`], which never waits, reports it full).

use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::unix::pipe;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Bytes waiting for the writer task beyond which callers wait.
const QUEUE_CAP: usize = 4 * 1024 * 1024;

/// A line that comes within this long of the last write is part of a burst: it is gathered
/// with the others of its burst rather than written at once. Sequential calls (one at a time,
/// each waiting for its answer) are further apart than this and are written at once.
const BURST_GAP: Duration = Duration::from_micros(30);

/// The write half of a child's stdin, shared by every caller of that connection.
pub(super) struct PipeOut {
    state: Mutex<State>,
    /// Bytes were queued, or the pipe is being closed: for the writer task.
    wake: Notify,
    /// The queue was taken: for callers waiting for room.
    room: Notify,
}

struct State {
    /// `None` once closed or broken.
    pipe: Option<Arc<pipe::Sender>>,
    /// Whole lines not yet written, in order.
    queue: Vec<u8>,
    /// The writer task holds bytes taken from the queue that are not all written yet.
    busy: bool,
    /// Close once everything queued is written; nothing more is taken.
    closing: bool,
    /// When a line was last written (or handed to the writer task).
    last_write: Option<Instant>,
}

/// What became of a line offered to the pipe.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Offer {
    /// Written, or queued whole behind earlier lines.
    Taken,
    /// The queue is at its cap: wait for room and offer it again.
    Full,
    /// The pipe is closed (or broke): nothing more can be written.
    Closed,
}

impl std::fmt::Debug for PipeOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PipeOut")
    }
}

impl PipeOut {
    /// Takes over `stdin` and starts its writer task on `tasks`, which ends when the pipe is
    /// closed ([`close`](Self::close)), breaks, or `closed` fires.
    pub(super) fn start(
        stdin: tokio::process::ChildStdin,
        closed: CancellationToken,
        tasks: &TaskTracker,
    ) -> io::Result<Arc<Self>> {
        let pipe = pipe::Sender::from_owned_fd(stdin.into_owned_fd()?)?;
        let out = Arc::new(Self {
            state: Mutex::new(State {
                pipe: Some(Arc::new(pipe)),
                queue: Vec::new(),
                busy: false,
                closing: false,
                last_write: None,
            }),
            wake: Notify::new(),
            room: Notify::new(),
        });
        tasks.spawn(write_loop(out.clone(), closed));
        Ok(out)
    }

    /// Offers one whole line (its `\n` included). Never waits.
    pub(super) fn offer(&self, line: &[u8]) -> Offer {
        let mut s = self.state.lock().expect("pipe lock");
        if s.closing {
            return Offer::Closed;
        }
        if s.pipe.is_none() {
            return Offer::Closed;
        }
        let now = Instant::now();
        let burst = s
            .last_write
            .is_some_and(|t| now.saturating_duration_since(t) < BURST_GAP);
        s.last_write = Some(now);
        if s.queue.is_empty() && !s.busy && !burst {
            let tried = match &s.pipe {
                Some(pipe) => pipe.try_write(line),
                None => return Offer::Closed,
            };
            let written = match tried {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                Err(_) => {
                    s.pipe = None;
                    return Offer::Closed;
                }
            };
            if written < line.len() {
                s.queue.extend_from_slice(&line[written..]);
                drop(s);
                self.wake.notify_one();
            }
            return Offer::Taken;
        }
        if s.queue.len() >= QUEUE_CAP {
            return Offer::Full;
        }
        let was_empty = s.queue.is_empty();
        s.queue.extend_from_slice(line);
        drop(s);
        if was_empty {
            self.wake.notify_one();
        }
        Offer::Taken
    }

    /// Offers `line`, waiting while the queue is full. `false` if the pipe is closed.
    pub(super) async fn send(&self, line: &[u8]) -> bool {
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match self.offer(line) {
                Offer::Taken => return true,
                Offer::Closed => return false,
                Offer::Full => room.await,
            }
        }
    }

    /// The polite end: what is queued is written, then stdin is closed.
    pub(super) fn close(&self) {
        self.state.lock().expect("pipe lock").closing = true;
        self.wake.notify_one();
    }
}

async fn write_loop(out: Arc<PipeOut>, closed: CancellationToken) {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let pipe = {
            let mut s = out.state.lock().expect("pipe lock");
            if s.queue.is_empty() {
                s.busy = false;
                if s.closing || s.pipe.is_none() {
                    s.pipe = None;
                    break;
                }
                None
            } else {
                std::mem::swap(&mut buf, &mut s.queue);
                s.busy = true;
                s.pipe.clone()
            }
        };
        let Some(pipe) = pipe else {
            tokio::select! {
                () = out.wake.notified() => {
                    // the rest of this burst first (tokio wakes a yielding task after the
                    // tasks that are ready now)
                    tokio::task::yield_now().await;
                    continue;
                }
                () = closed.cancelled() => break,
            }
        };
        out.room.notify_waiters();
        let written = tokio::select! {
            r = write_all(&pipe, &buf) => r.is_ok(),
            () = closed.cancelled() => false,
        };
        buf.clear();
        if !written {
            break;
        }
    }
    let mut s = out.state.lock().expect("pipe lock");
    s.pipe = None;
    s.queue = Vec::new();
    s.busy = false;
    drop(s);
    out.room.notify_waiters();
}

async fn write_all(pipe: &pipe::Sender, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        pipe.writable().await?;
        match pipe.try_write(buf) {
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
