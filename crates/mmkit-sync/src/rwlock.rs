//! A robust reader-writer lock for shared memory.
//!
//! Readers register their token in one of a fixed number of slots, so a
//! reader that dies is found (and its slot freed) by liveness, exactly
//! like a dead mutex holder. Writers take a single owner word, then wait
//! for the slots to drain. Writers have preference: a waiting writer holds
//! the owner word, which keeps new readers out.

use std::cell::Cell;
use std::fmt;
use std::hint::spin_loop;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use mmkit_region::Access;

use crate::error::{Error, Result};
use crate::mutex::{INCONSISTENT, Outcome, SPINS, dead_for, park_slice, release_word, take_over_dead};
use crate::notifier::{Deadline, Notifier};
use crate::place::{Placeable, place};
use crate::token::ProcessToken;

/// Number of reader slots: at most this many threads hold a read lock at
/// once; more wait for a free slot.
pub const READER_SLOTS: usize = 61;

/// A reader-writer lock in shared memory that survives the death of any
/// holder.
///
/// 512 bytes, align 8, all-zero = unlocked and consistent:
/// `{ writer: u64 (ProcessToken raw, 0 = none), notifier: Notifier,
/// flags: u32 (bit 0 = INCONSISTENT), reserved: u32, readers: [u64; 61] }`.
/// See `docs/sync-format.md`.
///
/// - A dead **reader** is harmless to the data: its slot is freed by the
///   next writer that waits on it.
/// - A dead **writer** may have left the data half-written: the next
///   [`RobustRwLock::write`] returns [`Outcome::OwnerDied`], and
///   readers get [`Error::Inconsistent`] until a writer calls
///   [`WriteGuard::make_consistent`].
///
/// Locks belong to threads. A thread that holds a read lock and asks for
/// the write lock (or the reverse) gets [`Error::WouldDeadlock`]; taking a
/// second read lock while a writer waits deadlocks, as in any
/// writer-preferring lock.
#[repr(C)]
pub struct RobustRwLock {
    writer: AtomicU64,
    notifier: Notifier,
    flags: AtomicU32,
    reserved: AtomicU32,
    readers: [AtomicU64; READER_SLOTS],
}

// SAFETY: atomics only, `repr(C)` without implicit padding
// (8 + 8 + 4 + 4 + 61 * 8 = 512), any bit pattern valid, zero = unlocked.
unsafe impl Placeable for RobustRwLock {}

impl Default for RobustRwLock {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for RobustRwLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RobustRwLock")
            .field("writer", &self.writer())
            .field("readers", &self.reader_count())
            .field("inconsistent", &self.is_inconsistent())
            .finish()
    }
}

/// The result of taking the write lock of a [`RobustRwLock`].
pub type WriteOutcome<'a> = Outcome<WriteGuard<'a>>;

/// Proof of holding the write lock; dropping it unlocks. Not `Send`.
#[must_use = "dropping the guard unlocks at once"]
pub struct WriteGuard<'a> {
    lock: &'a RobustRwLock,
    _not_send: PhantomData<*const ()>,
}

impl fmt::Debug for WriteGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteGuard").field("lock", self.lock).finish()
    }
}

impl WriteGuard<'_> {
    /// Declares the data repaired: readers are let in again and later
    /// writers get [`Outcome::Acquired`].
    pub fn make_consistent(&self) {
        self.lock.flags.fetch_and(!INCONSISTENT, Ordering::Relaxed);
    }
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        // Releases nothing in a forked child: see `release_word`.
        self.lock.unclaim_writer(ProcessToken::current().to_raw());
    }
}

/// Proof of holding a read lock; dropping it unlocks. Not `Send`.
#[must_use = "dropping the guard unlocks at once"]
pub struct ReadGuard<'a> {
    lock: &'a RobustRwLock,
    slot: usize,
    _not_send: PhantomData<*const ()>,
}

impl fmt::Debug for ReadGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadGuard").field("slot", &self.slot).finish()
    }
}

impl Drop for ReadGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        READS_HELD.set(READS_HELD.get().saturating_sub(1));
        // Releases nothing in a forked child: see `release_word`.
        self.lock.release_slot(self.slot, ProcessToken::current().to_raw());
    }
}

thread_local! {
    /// Read guards this thread holds, over all locks: when zero, a writer
    /// need not scan the slots for its own token.
    static READS_HELD: Cell<u32> = const { Cell::new(0) };
}

impl RobustRwLock {
    /// Size in shared memory, in bytes.
    pub const SIZE: usize = 512;
    /// Required alignment, in bytes.
    pub const ALIGN: usize = 8;

    /// A fresh, unlocked lock, for use outside shared memory.
    pub const fn new() -> RobustRwLock {
        RobustRwLock {
            writer: AtomicU64::new(0),
            notifier: Notifier::new(),
            flags: AtomicU32::new(0),
            reserved: AtomicU32::new(0),
            readers: [const { AtomicU64::new(0) }; READER_SLOTS],
        }
    }

    /// The lock at `offset` in `mem`. Errors if the memory is read-only,
    /// the range is out of bounds, or the address is not 8-aligned.
    pub fn at<A: Access + ?Sized>(mem: &A, offset: u64) -> Result<&RobustRwLock> {
        place(mem, offset, "RobustRwLock::at")
    }

    /// The writer holding or waiting for the lock, if any.
    pub fn writer(&self) -> Option<ProcessToken> {
        match self.writer.load(Ordering::Relaxed) {
            0 => None,
            raw => Some(ProcessToken::from_raw(raw)),
        }
    }

    /// How many reader slots are taken now.
    pub fn reader_count(&self) -> usize {
        self.readers.iter().filter(|r| r.load(Ordering::Relaxed) != 0).count()
    }

    /// Whether a writer died and nobody has repaired the data since.
    pub fn is_inconsistent(&self) -> bool {
        self.flags.load(Ordering::Relaxed) & INCONSISTENT != 0
    }

    /// Takes a read lock, waiting for writers. A dead writer is detected
    /// within milliseconds; then this returns [`Error::Inconsistent`] until
    /// a writer repairs the data.
    #[inline]
    pub fn read(&self) -> Result<ReadGuard<'_>> {
        // Fast path: this thread's home slot, no writer, consistent.
        let me = ProcessToken::current().to_raw();
        let slot = (me % READER_SLOTS as u64) as usize;
        if self.readers[slot].compare_exchange(0, me, Ordering::SeqCst, Ordering::Relaxed).is_ok() {
            if self.writer.load(Ordering::SeqCst) == 0 && !self.is_inconsistent() {
                return Ok(self.read_guard(slot));
            }
            self.release_slot(slot, me);
        }
        let op = "RobustRwLock::read";
        self.read_until(op, Deadline::after(None))?.ok_or(Error::Timeout { op, timeout: Duration::MAX })
    }

    #[inline]
    fn read_guard(&self, slot: usize) -> ReadGuard<'_> {
        READS_HELD.set(READS_HELD.get() + 1);
        ReadGuard { lock: self, slot, _not_send: PhantomData }
    }

    /// Takes a read lock, giving up with `Ok(None)` after `timeout`.
    pub fn read_timeout(&self, timeout: Duration) -> Result<Option<ReadGuard<'_>>> {
        self.read_until("RobustRwLock::read_timeout", Deadline::after(Some(timeout)))
    }

    /// Takes a read lock if no writer holds or waits for it.
    pub fn try_read(&self) -> Result<Option<ReadGuard<'_>>> {
        self.read_until("RobustRwLock::try_read", Deadline::after(Some(Duration::ZERO)))
    }

    /// Takes the write lock, waiting for the writer and readers before it.
    pub fn write(&self) -> Result<WriteOutcome<'_>> {
        let op = "RobustRwLock::write";
        self.write_until(op, Deadline::after(None))?.ok_or(Error::Timeout { op, timeout: Duration::MAX })
    }

    /// Takes the write lock, giving up with `Ok(None)` after `timeout`.
    pub fn write_timeout(&self, timeout: Duration) -> Result<Option<WriteOutcome<'_>>> {
        self.write_until("RobustRwLock::write_timeout", Deadline::after(Some(timeout)))
    }

    /// Takes the write lock if it and every reader slot are free (also
    /// takes it over from a dead writer).
    pub fn try_write(&self) -> Result<Option<WriteOutcome<'_>>> {
        self.write_until("RobustRwLock::try_write", Deadline::after(Some(Duration::ZERO)))
    }

    #[cold]
    fn read_until(&self, op: &'static str, deadline: Deadline) -> Result<Option<ReadGuard<'_>>> {
        let me = ProcessToken::current().to_raw();
        if self.writer.load(Ordering::Relaxed) == me {
            return Err(Error::WouldDeadlock { op });
        }
        let mut slices = 0;
        loop {
            if let Some(slot) = self.try_register(me) {
                // SeqCst pairs with the writer's SeqCst claim then slot scan:
                // either it sees our slot, or we see its claim.
                if self.writer.load(Ordering::SeqCst) == 0 {
                    if self.is_inconsistent() {
                        self.release_slot(slot, me);
                        return Err(Error::Inconsistent { op });
                    }
                    return Ok(Some(self.read_guard(slot)));
                }
                self.release_slot(slot, me);
            }
            let mut ready = || self.writer.load(Ordering::SeqCst) == 0 && self.has_free_slot();
            if !self.wait(&mut ready, deadline, &mut slices) {
                self.clear_dead_writer(me);
                if !self.has_free_slot() {
                    self.reap_dead_readers(me);
                }
                if deadline.expired() {
                    return Ok(None);
                }
            }
        }
    }

    fn write_until(&self, op: &'static str, deadline: Deadline) -> Result<Option<WriteOutcome<'_>>> {
        let me = ProcessToken::current().to_raw();
        let holds_read =
            || READS_HELD.get() > 0 && self.readers.iter().any(|r| r.load(Ordering::Relaxed) == me);
        let claimed = self.writer.compare_exchange(0, me, Ordering::SeqCst, Ordering::Relaxed).is_ok();
        if !claimed {
            if holds_read() {
                return Err(Error::WouldDeadlock { op });
            }
            if !self.claim_writer(op, me, deadline)? {
                return Ok(None);
            }
        }
        if holds_read() {
            self.unclaim_writer(me);
            return Err(Error::WouldDeadlock { op });
        }
        let mut slices = 0;
        let mut drained = || self.readers.iter().all(|r| r.load(Ordering::SeqCst) == 0);
        while !drained() {
            if !self.wait(&mut drained, deadline, &mut slices) {
                self.reap_dead_readers(me);
                if deadline.expired() && !drained() {
                    self.unclaim_writer(me);
                    return Ok(None);
                }
            }
        }
        Ok(Some(Outcome::from_flags(&self.flags, WriteGuard { lock: self, _not_send: PhantomData })))
    }

    /// Sets the writer word to `me`, waiting for a live writer or taking
    /// over from a dead one (marking the data inconsistent). False on
    /// timeout.
    fn claim_writer(&self, op: &'static str, me: u64, deadline: Deadline) -> Result<bool> {
        let mut slices = 0;
        loop {
            match self.writer.compare_exchange(0, me, Ordering::SeqCst, Ordering::Relaxed) {
                Ok(_) => return Ok(true),
                Err(current) if current == me => return Err(Error::WouldDeadlock { op }),
                Err(_) => {}
            }
            let mut free = || self.writer.load(Ordering::SeqCst) == 0;
            if !self.wait(&mut free, deadline, &mut slices) {
                let holder = self.writer.load(Ordering::Acquire);
                if take_over_dead(&self.writer, &self.flags, holder, me) {
                    return Ok(true);
                }
                if deadline.expired() {
                    return Ok(false);
                }
            }
        }
    }

    /// Frees the writer word if it holds `me`.
    fn unclaim_writer(&self, me: u64) {
        if release_word(&self.writer, me) {
            self.notifier.notify_all_after_seqcst_rmw();
        }
    }

    /// Spins briefly, then parks for one slice; true if `ready()` held.
    fn wait(&self, ready: &mut impl FnMut() -> bool, deadline: Deadline, slices: &mut u32) -> bool {
        if deadline.expired() {
            return ready();
        }
        for _ in 0..SPINS {
            spin_loop();
            if ready() {
                return true;
            }
        }
        if deadline.expired() {
            return false;
        }
        let ok = self.notifier.park_until(ready, deadline, Some(park_slice(*slices)), false);
        if !ok {
            *slices = slices.saturating_add(1);
        }
        ok
    }

    fn try_register(&self, me: u64) -> Option<usize> {
        // Start at a per-thread slot so that readers rarely collide.
        let start = (me % READER_SLOTS as u64) as usize;
        (0..READER_SLOTS).map(|i| (start + i) % READER_SLOTS).find(|&i| {
            let slot = &self.readers[i];
            slot.load(Ordering::Relaxed) == 0
                && slot.compare_exchange(0, me, Ordering::SeqCst, Ordering::Relaxed).is_ok()
        })
    }

    /// Frees reader slot `slot` if it holds `me`.
    #[inline]
    fn release_slot(&self, slot: usize, me: u64) {
        if release_word(&self.readers[slot], me) {
            self.notifier.notify_all_after_seqcst_rmw();
        }
    }

    fn has_free_slot(&self) -> bool {
        self.readers.iter().any(|r| r.load(Ordering::Relaxed) == 0)
    }

    /// A dead writer cannot finish: take its word over, mark the data
    /// inconsistent, then free the word so that readers are told and a
    /// writer can repair. Only the winner of the takeover sets the flag, so
    /// a stale view of an already replaced writer cannot mark repaired data
    /// inconsistent again; if we die in between, the next taker sets it.
    fn clear_dead_writer(&self, me: u64) {
        let holder = self.writer.load(Ordering::Acquire);
        if take_over_dead(&self.writer, &self.flags, holder, me) {
            self.unclaim_writer(me);
        }
    }

    /// Frees the slots of dead readers; reading changes nothing, so no
    /// repair is needed. A slot holding `me` while this thread holds no
    /// read guard at all is not this thread's either (a forged copy of its
    /// token, which would make its writer wait for itself).
    fn reap_dead_readers(&self, me: u64) {
        let mine_free = READS_HELD.get() == 0;
        for slot in &self.readers {
            let holder = slot.load(Ordering::Acquire);
            let dead = if holder == me { mine_free } else { dead_for(holder, me) };
            if holder != 0
                && dead
                && slot.compare_exchange(holder, 0, Ordering::SeqCst, Ordering::Relaxed).is_ok()
            {
                self.notifier.notify_all_after_seqcst_rmw();
            }
        }
    }
}
