//! Handles inherited through `fork()`, and handles bound to a thread.
//!
//! Python programs fork (multiprocessing's default start method on Linux
//! before 3.14), and a child inherits every object of its parent. Some mmkit
//! handles carry the parent's identity in shared memory: a queue producer
//! owns a slot stamped with the parent's process token, a queue handle a
//! pin slot, an appender an `flock` and the file's length. Dropping such a
//! handle in the child would free the parent's slots or truncate rows the
//! parent appended after the fork, and using it would pose as the parent.
//!
//! So these handles live in a [`ProcessLocal`]: a `pthread_atfork` child
//! handler bumps a generation counter, and a handle from an older
//! generation is neither usable nor dropped (it is leaked: its memory is
//! the child's copy, its shared state belongs to the parent).

use std::mem::ManuallyDrop;
use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::ThreadId;

static GENERATION: AtomicU64 = AtomicU64::new(0);
static INSTALL: Once = Once::new();

extern "C" fn after_fork_in_child() {
    // Async-signal-safe: one atomic add.
    GENERATION.fetch_add(1, Ordering::Relaxed);
}

/// Installs the fork handler (once per process; children inherit it).
pub(crate) fn install() {
    INSTALL.call_once(|| {
        // SAFETY: registers a handler that only does an atomic add, which
        // is allowed in a child after fork. rustix has no pthread_atfork.
        // Failure (ENOMEM) would leave inherited handles looking local, as
        // without this module; there is nothing better to do about it.
        let _ = unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
    });
}

fn generation() -> u64 {
    GENERATION.load(Ordering::Relaxed)
}

/// A value that belongs to the process that made it.
pub(crate) struct ProcessLocal<T> {
    value: ManuallyDrop<T>,
    generation: u64,
}

impl<T> ProcessLocal<T> {
    pub(crate) fn new(value: T) -> Self {
        ProcessLocal { value: ManuallyDrop::new(value), generation: generation() }
    }

    /// The value, or `None` in a child forked since it was made.
    pub(crate) fn get(&self) -> Option<&T> {
        (self.generation == generation()).then_some(&*self.value)
    }

    /// [`ProcessLocal::get`], mutably.
    pub(crate) fn get_mut(&mut self) -> Option<&mut T> {
        (self.generation == generation()).then_some(&mut *self.value)
    }
}

impl<T> Drop for ProcessLocal<T> {
    fn drop(&mut self) {
        if self.generation == generation() {
            // SAFETY: dropped exactly once, here; `value` is not used after.
            unsafe { ManuallyDrop::drop(&mut self.value) };
        }
    }
}

/// A value that belongs to the thread that made it, in the process that
/// made it: a key-value write transaction, whose locks (a `std` mutex
/// guard and a robust mutex owned by the thread's token) are that
/// thread's, and `!Send`.
///
/// [`ThreadBound::get_mut`] hands the value out on that thread only, and
/// it is dropped only there: dropped anywhere else, it is leaked.
pub(crate) struct ThreadBound<T> {
    value: ManuallyDrop<T>,
    thread: ThreadId,
    generation: u64,
}

// SAFETY: the value is reached only through `get_mut` and `into_inner`,
// which refuse on every thread but the one that made it (and in a forked
// child, where that thread does not exist), and it is dropped only on that
// thread (leaked elsewhere). So a `!Send`/`!Sync` value is never touched by
// another thread; only this wrapper moves between threads.
unsafe impl<T> Send for ThreadBound<T> {}
// SAFETY: `&ThreadBound` offers nothing but `is_here` and
// `in_this_process`, which read only the wrapper's own fields.
unsafe impl<T> Sync for ThreadBound<T> {}

impl<T> ThreadBound<T> {
    pub(crate) fn new(value: T) -> Self {
        let thread = std::thread::current().id();
        ThreadBound { value: ManuallyDrop::new(value), thread, generation: generation() }
    }

    /// True on the thread (and in the process) that made the value.
    pub(crate) fn is_here(&self) -> bool {
        self.in_this_process() && self.thread == std::thread::current().id()
    }

    /// False in a child forked since the value was made.
    pub(crate) fn in_this_process(&self) -> bool {
        self.generation == generation()
    }

    /// The value, on the thread that made it; `None` on any other.
    pub(crate) fn get_mut(&mut self) -> Option<&mut T> {
        self.is_here().then_some(&mut *self.value)
    }

    /// The value, on the thread that made it; on any other, `Err(self)`.
    pub(crate) fn into_inner(mut self) -> Result<T, Self> {
        if !self.is_here() {
            return Err(self);
        }
        // SAFETY: taken exactly once; `forget` keeps Drop from touching
        // the moved-out value.
        let value = unsafe { ManuallyDrop::take(&mut self.value) };
        std::mem::forget(self);
        Ok(value)
    }
}

impl<T> Drop for ThreadBound<T> {
    fn drop(&mut self) {
        if self.is_here() {
            // SAFETY: dropped exactly once, here, on the owning thread.
            unsafe { ManuallyDrop::drop(&mut self.value) };
        }
    }
}

/// The error for a handle used in a forked child.
pub(crate) fn inherited(op: &str, path: &str, what: &str) -> pyo3::PyErr {
    crate::errors::value_error(
        op,
        path,
        format!("this {what} was opened before fork() in the parent process; open it again in this one"),
    )
}
