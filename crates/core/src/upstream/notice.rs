//! What a server tells its supervisor (list changes), on a queue that cannot grow.
//!
//! A notice only asks the supervisor to refresh something, so one waiting of a kind is as good
//! as many: a notice whose kind is already queued is dropped (the overflow rule). The queue
//! therefore holds at most one notice per kind, whatever the server sends.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::mpsc;

/// A list the server says changed (`notifications/<list>/list_changed`): what the supervisor
/// refreshes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListChanged {
    Tools,
    Resources,
    Prompts,
}

/// How many kinds there are: the queue's capacity.
const KINDS: usize = 3;

impl ListChanged {
    fn index(self) -> usize {
        match self {
            Self::Tools => 0,
            Self::Resources => 1,
            Self::Prompts => 2,
        }
    }
}

/// Which kinds are queued and not yet received.
#[derive(Debug, Default)]
struct Queued([AtomicBool; KINDS]);

/// The connection's end: never waits.
#[derive(Debug)]
pub(crate) struct NoticeSender {
    tx: mpsc::Sender<ListChanged>,
    queued: Arc<Queued>,
}

/// The supervisor's end.
#[derive(Debug)]
pub(crate) struct NoticeReceiver {
    rx: mpsc::Receiver<ListChanged>,
    queued: Arc<Queued>,
}

/// A notice queue of one connection.
pub(crate) fn channel() -> (NoticeSender, NoticeReceiver) {
    // One slot per kind, and a kind is queued at most once: `try_send` never finds it full.
    let (tx, rx) = mpsc::channel(KINDS);
    let queued = Arc::new(Queued::default());
    (
        NoticeSender {
            tx,
            queued: queued.clone(),
        },
        NoticeReceiver { rx, queued },
    )
}

impl NoticeSender {
    /// Queues `notice` unless one of its kind already waits (then it is dropped: the one
    /// waiting asks for the same refresh). Dropped too once the supervisor is gone.
    pub(crate) fn send(&self, notice: ListChanged) {
        let flag = &self.queued.0[notice.index()];
        if !flag.swap(true, Ordering::AcqRel) && self.tx.try_send(notice).is_err() {
            flag.store(false, Ordering::Release);
        }
    }
}

impl NoticeReceiver {
    /// The next notice; `None` once the connection is gone. A notice of the same kind sent
    /// after this returns is queued again (the refresh it asks for starts after it).
    pub(crate) async fn recv(&mut self) -> Option<ListChanged> {
        let notice = self.rx.recv().await?;
        self.queued.0[notice.index()].store(false, Ordering::Release);
        Some(notice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_kind_already_waiting_is_not_queued_again() {
        let (tx, mut rx) = channel();
        for _ in 0..100 {
            tx.send(ListChanged::Tools);
            tx.send(ListChanged::Prompts);
        }
        assert_eq!(rx.recv().await, Some(ListChanged::Tools));
        // received: the next one of that kind is queued again
        tx.send(ListChanged::Tools);
        assert_eq!(rx.recv().await, Some(ListChanged::Prompts));
        assert_eq!(rx.recv().await, Some(ListChanged::Tools));
        drop(tx);
        assert_eq!(rx.recv().await, None);
    }
}
