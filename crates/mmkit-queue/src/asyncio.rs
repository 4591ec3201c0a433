//! An async read API that does not busy-poll: while a read is pending, a
//! helper thread parks on the queue's futex and wakes the task's `Waker`.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll as TaskPoll, Waker};
use std::time::Duration;

use crate::error::Result;
use crate::format::split_tail;
use crate::queue::Queue;
use crate::reader::{Reader, Record, Step, committed};
use crate::segment::Segment;

/// Longest a helper thread parks on an open claim before waking the task
/// to re-check (the re-check recovers a dead claimant).
const CLAIM_SLICE: Duration = Duration::from_millis(5);

/// Longest a helper thread parks on an idle queue: claims and commits
/// notify, so this only bounds the rare stall described at
/// `reader::PARK_SLICE`.
const IDLE_SLICE: Duration = Duration::from_secs(1);

struct Shared {
    waker: Mutex<Option<Waker>>,
    done: AtomicBool,
}

/// Resolves when the frame at a position changes or a claim appears there
/// (or after a slice), as observed by a helper thread parked on the futex.
struct Parked {
    shared: Arc<Shared>,
    start: Option<(Queue, Arc<Segment>, u64, u64, bool)>,
}

impl Future for Parked {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> TaskPoll<()> {
        if self.shared.done.load(Ordering::Acquire) {
            return TaskPoll::Ready(());
        }
        *self.shared.waker.lock().unwrap_or_else(|p| p.into_inner()) = Some(cx.waker().clone());
        if let Some((queue, seg, seq, offset, claimed)) = self.start.take() {
            let shared = self.shared.clone();
            let started = crate::background("mmkit-async-wait", move || {
                if let (Ok(notifier), Some(word)) = (queue.meta().notifier(), seg.frame_word(offset)) {
                    // Like the blocking wait: an in-progress claim is not a
                    // change worth waking for (waking at once would spawn
                    // helper threads in a loop while a claim is open), and
                    // once a claim exists only its commit is.
                    let ready = || {
                        committed(word.load(Ordering::Acquire))
                            || (!claimed && split_tail(seg.tail().load(Ordering::Acquire)).0 > seq)
                    };
                    notifier.park_light(ready, Some(if claimed { CLAIM_SLICE } else { IDLE_SLICE }));
                }
                shared.done.store(true, Ordering::Release);
                if let Some(w) = shared.waker.lock().unwrap_or_else(|p| p.into_inner()).take() {
                    w.wake();
                }
            });
            // No thread to wait on: ready at once, and the caller polls the
            // queue again (a spurious wake-up, never a hang or a panic).
            if !started {
                self.shared.done.store(true, Ordering::Release);
            }
        }
        if self.shared.done.load(Ordering::Acquire) { TaskPoll::Ready(()) } else { TaskPoll::Pending }
    }
}

impl Reader {
    /// The next message, for async code (any executor, tokio included).
    ///
    /// Never busy-polls: when nothing is committed, a helper thread parks
    /// on the queue's futex and wakes this task when a producer commits
    /// (each wait costs a thread spawn, so blocking `next_timeout` on a
    /// dedicated thread is cheaper for high rates). Cancel-safe; wrap it in
    /// your executor's timeout for a deadline.
    pub async fn next_async(&mut self) -> Result<Record<'_>> {
        loop {
            let (seg, seq, offset, claimed) = match self.step()? {
                Step::Ready(found) => return self.take_found(found),
                Step::Wait { seg, seq, offset, claimed } => (seg, seq, offset, claimed),
            };
            let shared = Arc::new(Shared { waker: Mutex::new(None), done: AtomicBool::new(false) });
            Parked { shared, start: Some((self.queue().clone(), seg, seq, offset, claimed)) }.await;
        }
    }
}
