//! Thin wrappers over the Linux futex system call on shared memory.
//!
//! The futexes are *shared* (not `FUTEX_PRIVATE_FLAG`): the kernel keys them
//! by the backing page, so processes that map the same file or shared
//! memory object at different addresses still meet on the same word.

use std::sync::atomic::AtomicU32;
use std::time::Duration;

use rustix::io::Errno;
use rustix::thread::futex;

use crate::error::{Error, Result};

/// How a [`wait`] ended.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum WaitOutcome {
    /// A wake arrived (or the kernel woke us spuriously): re-check the state.
    Woken,
    /// The timeout elapsed.
    Timeout,
    /// The word did not hold `expected` when the call began.
    ValueChanged,
    /// A signal interrupted the wait.
    Interrupted,
}

/// Sleeps while `word == expected`, for at most `timeout` (relative).
///
/// Returns at once with [`WaitOutcome::ValueChanged`] if the word already
/// differs, which is what makes check-then-sleep race free.
pub fn wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> Result<WaitOutcome> {
    let timespec = timeout.map(to_timespec);
    match futex::wait(word, futex::Flags::empty(), expected, timespec.as_ref()) {
        Ok(()) => Ok(WaitOutcome::Woken),
        Err(Errno::TIMEDOUT) => Ok(WaitOutcome::Timeout),
        Err(Errno::AGAIN) => Ok(WaitOutcome::ValueChanged),
        Err(Errno::INTR) => Ok(WaitOutcome::Interrupted),
        Err(e) => Err(Error::Futex { op: "futex_wait", source: e.into() }),
    }
}

/// Wakes up to `count` waiters on `word`; returns how many were woken.
///
/// A failure is impossible for a valid, mapped word (which `&AtomicU32`
/// guarantees), so it is reported as 0 woken.
pub fn wake(word: &AtomicU32, count: u32) -> usize {
    // The kernel reads the count as a signed int.
    let count = count.min(i32::MAX as u32);
    futex::wake(word, futex::Flags::empty(), count).unwrap_or(0)
}

fn to_timespec(d: Duration) -> futex::Timespec {
    futex::Timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: i64::from(d.subsec_nanos()) as _,
    }
}
