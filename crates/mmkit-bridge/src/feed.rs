//! Mirror-out's reader: a thread that follows the queue with a blocking
//! reader (which parks on the queue's futex when idle, instead of a thread
//! spawn per wait as `next_async` costs) and hands records over in batches.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use mmkit_queue::{Queue, Start, WaitPolicy};
use tokio::sync::mpsc;

/// One record read from the queue.
#[derive(Debug)]
pub(crate) struct Rec {
    pub(crate) index: u64,
    /// The reader's position after it: where the cursor goes once the
    /// record is in the stream.
    pub(crate) next: u64,
    pub(crate) timestamp: u64,
    pub(crate) payload: Bytes,
    pub(crate) meta: Bytes,
}

/// What the thread sends.
pub(crate) enum Item {
    Records(Vec<Rec>),
    /// `--once`: the end index of the start was reached.
    End,
    Failed(mmkit_queue::Error),
}

/// Records handed over at most per batch.
const BATCH: usize = 256;

/// How often an idle reader checks that it is still wanted.
const IDLE_CHECK: Duration = Duration::from_millis(50);

/// The receiving end; dropping it stops the thread.
pub(crate) struct Feed {
    rx: mpsc::Receiver<Item>,
    buf: VecDeque<Rec>,
    ended: bool,
    /// A failure met by [`Feed::peek`], reported by the next read.
    failed: Option<mmkit_queue::Error>,
}

/// What [`Feed::next`] gives.
pub(crate) enum Next {
    Record(Rec),
    End,
}

impl Feed {
    /// Starts reading at `position`; with `end`, stops there.
    pub(crate) fn start(queue: &Queue, position: u64, end: Option<u64>) -> mmkit_queue::Result<Feed> {
        let mut reader = queue.reader(Start::Index(position))?;
        reader.set_wait_policy(WaitPolicy::BALANCED);
        let (tx, rx) = mpsc::channel(16);
        std::thread::Builder::new()
            .name("mmkit-mirror-feed".into())
            .spawn(move || read_loop(reader, end, tx))
            .map_err(|source| mmkit_queue::Error::Io {
                op: "start the mirror's reader thread",
                path: queue.path().to_path_buf(),
                source,
            })?;
        Ok(Feed { rx, buf: VecDeque::new(), ended: false, failed: None })
    }

    /// The next record if one is at hand, without waiting.
    pub(crate) fn try_next(&mut self) -> mmkit_queue::Result<Option<Next>> {
        if self.buf.is_empty()
            && let Some(e) = self.failed.take()
        {
            return Err(e);
        }
        if self.buf.is_empty() && !self.ended {
            match self.rx.try_recv() {
                Ok(item) => self.take(item)?,
                Err(_) => return Ok(None),
            }
        }
        Ok(self.pop())
    }

    /// The record [`Feed::try_next`] would give now, if one is at hand
    /// (a failure of the reader is kept for `try_next` to report).
    pub(crate) fn peek(&mut self) -> Option<&Rec> {
        if self.buf.is_empty() && !self.ended && self.failed.is_none() {
            match self.rx.try_recv() {
                Ok(Item::Failed(e)) => self.failed = Some(e),
                Ok(item) => {
                    let _ = self.take(item);
                }
                Err(_) => {}
            }
        }
        self.buf.front()
    }

    /// The next record, waiting for one.
    pub(crate) async fn next(&mut self) -> mmkit_queue::Result<Next> {
        if self.buf.is_empty()
            && let Some(e) = self.failed.take()
        {
            return Err(e);
        }
        while self.buf.is_empty() && !self.ended {
            match self.rx.recv().await {
                Some(item) => self.take(item)?,
                None => self.ended = true,
            }
        }
        Ok(self.pop().unwrap_or(Next::End))
    }

    fn take(&mut self, item: Item) -> mmkit_queue::Result<()> {
        match item {
            Item::Records(v) => self.buf.extend(v),
            Item::End => self.ended = true,
            Item::Failed(e) => return Err(e),
        }
        Ok(())
    }

    fn pop(&mut self) -> Option<Next> {
        match self.buf.pop_front() {
            Some(r) => Some(Next::Record(r)),
            None if self.ended => Some(Next::End),
            None => None,
        }
    }
}

fn read_loop(mut reader: mmkit_queue::Reader, end: Option<u64>, tx: mpsc::Sender<Item>) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        if end.is_some_and(|e| reader.position() >= e) {
            if !batch.is_empty() {
                let _ = tx.blocking_send(Item::Records(std::mem::take(&mut batch)));
            }
            let _ = tx.blocking_send(Item::End);
            return;
        }
        // Without a batch in hand, wait; with one, only take what is there.
        let got = if batch.is_empty() { reader.next_timeout(Some(IDLE_CHECK)) } else { reader.next() };
        let rec = match got {
            Ok(Some(r)) => Rec {
                index: r.index(),
                next: 0,
                timestamp: r.timestamp(),
                payload: Bytes::copy_from_slice(r.payload()),
                meta: if r.meta().is_empty() { Bytes::new() } else { Bytes::copy_from_slice(r.meta()) },
            },
            Ok(None) if batch.is_empty() => {
                if tx.is_closed() {
                    return;
                }
                continue;
            }
            Ok(None) => {
                if tx.blocking_send(Item::Records(std::mem::take(&mut batch))).is_err() {
                    return;
                }
                continue;
            }
            Err(e) => {
                let _ = tx.blocking_send(Item::Failed(e));
                return;
            }
        };
        batch.push(Rec { next: reader.position(), ..rec });
        if batch.len() >= BATCH && tx.blocking_send(Item::Records(std::mem::take(&mut batch))).is_err() {
            return;
        }
    }
}
