//! A robust mutex for shared memory: a dead holder is detected by
//! liveness, never by a wall-clock timeout.

use std::fmt;
use std::hint::spin_loop;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use mmkit_region::Access;

use crate::error::{Error, Result};
use crate::notifier::{Deadline, Notifier};
use crate::place::{Placeable, place};
use crate::token::{Liveness, ProcessToken};

/// `flags` bit: a holder died inside its critical section and nobody has
/// called [`MutexGuard::make_consistent`] since.
pub(crate) const INCONSISTENT: u32 = 1;
/// Busy-wait iterations before parking; a typical critical section in
/// shared memory is shorter than this.
pub(crate) const SPINS: u32 = 128;
/// Park slices between liveness checks of the holder: short at first so a
/// dead holder is found within a couple of milliseconds, longer once the
/// lock has been held a while, to keep the `/proc` reads cheap.
const SHORT_SLICE: Duration = Duration::from_millis(1);
const SHORT_SLICES: u32 = 100;
const LONG_SLICE: Duration = Duration::from_millis(2);

/// The park slice after `slices` slices spent waiting for a holder.
pub(crate) fn park_slice(slices: u32) -> Duration {
    if slices < SHORT_SLICES { SHORT_SLICE } else { LONG_SLICE }
}

/// Whether `holder`, a token read from a lock word, is dead as far as the
/// thread `me` can tell: by its liveness, or because it names this very
/// thread under another token (a thread that had this id before, or a
/// forgery, such as one with an unknown start time, which liveness cannot
/// tell from this thread): this thread never holds a lock under a token
/// that is not its own.
pub(crate) fn dead_for(holder: u64, me: u64) -> bool {
    let h = ProcessToken::from_raw(holder);
    (holder != me && h.pid() == ProcessToken::from_raw(me).pid()) || h.liveness() == Liveness::Dead
}

/// If `holder` (read from `word`) is dead, replaces it there by `me` and
/// sets INCONSISTENT in `flags`. At most one caller per dead holder gets
/// true: a dead thread never writes its token again, so only one
/// compare-and-swap away from it can succeed. If the winner dies before
/// setting the flag, its own token is dead and the next taker sets it.
pub(crate) fn take_over_dead(word: &AtomicU64, flags: &AtomicU32, holder: u64, me: u64) -> bool {
    if holder == 0 || !dead_for(holder, me) {
        return false;
    }
    if word.compare_exchange(holder, me, Ordering::SeqCst, Ordering::Relaxed).is_err() {
        return false;
    }
    flags.fetch_or(INCONSISTENT, Ordering::SeqCst);
    true
}

/// A mutex that lives in shared memory and survives the death of its
/// holder.
///
/// 24 bytes, align 8, all-zero = unlocked and consistent:
/// `{ owner: u64 (ProcessToken raw, 0 = free), notifier: Notifier (8 bytes),
/// flags: u32 (bit 0 = INCONSISTENT), reserved: u32 }`. See
/// `docs/sync-format.md`.
///
/// Locking is one compare-and-swap of `owner` from 0 to the calling
/// thread's [`ProcessToken`], so the lock is never held without a recorded
/// owner. A waiter that cannot get the lock parks for a millisecond or a
/// few at a time, and after each slice checks whether the holder is still
/// alive (its thread id exists, is not a zombie, and has the recorded start
/// time). When it is dead, exactly one waiter takes the lock over and gets
/// [`Outcome::OwnerDied`].
///
/// Ownership is per *thread*: a thread that exits while holding the lock
/// counts as dead too. Locking again from the holding thread returns
/// [`Error::WouldDeadlock`].
#[repr(C)]
#[derive(Default)]
pub struct RobustMutex {
    owner: AtomicU64,
    notifier: Notifier,
    flags: AtomicU32,
    reserved: AtomicU32,
}

// SAFETY: atomics only, `repr(C)` without implicit padding (8 + 8 + 4 + 4),
// any bit pattern valid, zero = unlocked and consistent.
unsafe impl Placeable for RobustMutex {}

impl fmt::Debug for RobustMutex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RobustMutex")
            .field("owner", &self.owner())
            .field("inconsistent", &self.is_inconsistent())
            .finish()
    }
}

/// The result of taking a robust lock: [`LockOutcome`] for a
/// [`RobustMutex`], [`WriteOutcome`](crate::WriteOutcome) for the write side
/// of a [`RobustRwLock`](crate::RobustRwLock).
#[must_use = "dropping the outcome unlocks at once"]
#[derive(Debug)]
pub enum Outcome<G> {
    /// The lock was free, or released normally.
    Acquired(G),
    /// The previous holder died while holding the lock (now, or earlier
    /// and nobody has called `make_consistent` on a guard since). The
    /// protected data may be half-updated: repair it, then call the
    /// guard's `make_consistent`. Dropping the guard without doing so
    /// leaves the lock inconsistent, and the next locker gets `OwnerDied`
    /// again.
    OwnerDied(G),
}

impl<G> Outcome<G> {
    /// The guard, whichever way it was obtained.
    pub fn into_guard(self) -> G {
        match self {
            Outcome::Acquired(g) | Outcome::OwnerDied(g) => g,
        }
    }

    /// Whether a previous holder died with the lock held.
    pub fn owner_died(&self) -> bool {
        matches!(self, Outcome::OwnerDied(_))
    }

    /// `OwnerDied` if INCONSISTENT is set in `flags`. Called with the lock
    /// held: the flag was written by a holder before its releasing swap,
    /// which our acquiring compare-and-swap synchronises with.
    pub(crate) fn from_flags(flags: &AtomicU32, guard: G) -> Self {
        if flags.load(Ordering::Relaxed) & INCONSISTENT != 0 {
            Outcome::OwnerDied(guard)
        } else {
            Outcome::Acquired(guard)
        }
    }
}

/// The result of locking a [`RobustMutex`].
pub type LockOutcome<'a> = Outcome<MutexGuard<'a>>;

/// Proof of holding a [`RobustMutex`]; dropping it unlocks.
///
/// Not `Send`: the lock belongs to the thread that took it.
#[must_use = "dropping the guard unlocks the mutex at once"]
pub struct MutexGuard<'a> {
    mutex: &'a RobustMutex,
    _not_send: PhantomData<*const ()>,
}

impl fmt::Debug for MutexGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MutexGuard").field("mutex", self.mutex).finish()
    }
}

impl MutexGuard<'_> {
    /// Declares the protected data repaired: later lockers get
    /// [`Outcome::Acquired`] again.
    pub fn make_consistent(&self) {
        self.mutex.flags.fetch_and(!INCONSISTENT, Ordering::Relaxed);
    }

    /// The mutex this guard holds.
    pub fn mutex(&self) -> &RobustMutex {
        self.mutex
    }
}

impl Drop for MutexGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        if release_word(&self.mutex.owner, ProcessToken::current().to_raw()) {
            self.mutex.notifier.notify_one_after_seqcst_rmw();
        }
    }
}

/// Frees `word` if it still holds `me`; true if it did.
///
/// Why a compare-and-swap and not a plain store: a guard can be dropped
/// by someone who does not own the word. A forked child inherits copies of
/// its parent's guards, but has its own token, so its drops must leave
/// the parent's lock alone; and a holder that was wrongly taken for dead
/// must not free the lock of the one who took it over. A SeqCst success
/// ordering puts the release before the waiter-count read, pairing with a
/// waiter's registration (see `Notifier`).
#[inline]
pub(crate) fn release_word(word: &AtomicU64, me: u64) -> bool {
    word.compare_exchange(me, 0, Ordering::SeqCst, Ordering::Relaxed).is_ok()
}

impl RobustMutex {
    /// Size in shared memory, in bytes.
    pub const SIZE: usize = 24;
    /// Required alignment, in bytes.
    pub const ALIGN: usize = 8;

    /// A fresh, unlocked mutex, for use outside shared memory.
    pub const fn new() -> RobustMutex {
        RobustMutex {
            owner: AtomicU64::new(0),
            notifier: Notifier::new(),
            flags: AtomicU32::new(0),
            reserved: AtomicU32::new(0),
        }
    }

    /// The mutex at `offset` in `mem`. Errors if the memory is read-only,
    /// the range is out of bounds, or the address is not 8-aligned.
    pub fn at<A: Access + ?Sized>(mem: &A, offset: u64) -> Result<&RobustMutex> {
        place(mem, offset, "RobustMutex::at")
    }

    /// Locks, waiting as long as it takes. A dead holder is detected
    /// within a few milliseconds and yields [`Outcome::OwnerDied`].
    #[inline]
    pub fn lock(&self) -> Result<LockOutcome<'_>> {
        let op = "RobustMutex::lock";
        // A match, not `ok_or`: the error value was built and dropped on
        // every lock (a dozen instructions of a hot path).
        match self.lock_for(op, None)? {
            Some(outcome) => Ok(outcome),
            None => Err(Error::Timeout { op, timeout: Duration::MAX }),
        }
    }

    /// Locks if that is possible without waiting. Also takes the lock over
    /// from a dead holder (which costs one read of `/proc`).
    pub fn try_lock(&self) -> Result<Option<LockOutcome<'_>>> {
        let me = ProcessToken::current().to_raw();
        match self.owner.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => Ok(Some(self.acquired())),
            Err(current) if current == me => Err(Error::WouldDeadlock { op: "RobustMutex::try_lock" }),
            Err(current) => Ok(self.take_from_dead(current, me)),
        }
    }

    /// Locks, giving up with `Ok(None)` after `timeout`.
    pub fn lock_timeout(&self, timeout: Duration) -> Result<Option<LockOutcome<'_>>> {
        self.lock_for("RobustMutex::lock_timeout", Some(timeout))
    }

    /// The current holder, if any.
    pub fn owner(&self) -> Option<ProcessToken> {
        match self.owner.load(Ordering::Relaxed) {
            0 => None,
            raw => Some(ProcessToken::from_raw(raw)),
        }
    }

    /// Whether a holder died and the data has not been declared repaired.
    pub fn is_inconsistent(&self) -> bool {
        self.flags.load(Ordering::Relaxed) & INCONSISTENT != 0
    }

    /// One compare-and-swap when the lock is free; the deadline is only
    /// computed on the slow path.
    #[inline]
    fn lock_for(&self, op: &'static str, timeout: Option<Duration>) -> Result<Option<LockOutcome<'_>>> {
        let me = ProcessToken::current().to_raw();
        if self.try_acquire(me) {
            return Ok(Some(self.acquired()));
        }
        self.lock_slow(op, me, Deadline::after(timeout))
    }

    #[inline]
    fn acquired(&self) -> LockOutcome<'_> {
        Outcome::from_flags(&self.flags, MutexGuard { mutex: self, _not_send: PhantomData })
    }

    #[inline]
    fn try_acquire(&self, me: u64) -> bool {
        self.owner.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed).is_ok()
    }

    /// Takes the lock over if `holder` is dead; only one contender can win
    /// the swap from the dead token.
    fn take_from_dead(&self, holder: u64, me: u64) -> Option<LockOutcome<'_>> {
        take_over_dead(&self.owner, &self.flags, holder, me)
            .then(|| Outcome::OwnerDied(MutexGuard { mutex: self, _not_send: PhantomData }))
    }

    #[cold]
    fn lock_slow(&self, op: &'static str, me: u64, deadline: Deadline) -> Result<Option<LockOutcome<'_>>> {
        if self.owner.load(Ordering::Relaxed) == me {
            return Err(Error::WouldDeadlock { op });
        }
        for _ in 0..SPINS {
            spin_loop();
            if self.owner.load(Ordering::Relaxed) == 0 && self.try_acquire(me) {
                return Ok(Some(self.acquired()));
            }
        }
        let mut slices = 0u32;
        loop {
            let mut free = || self.owner.load(Ordering::SeqCst) == 0;
            if !self.notifier.park_until(&mut free, deadline, Some(park_slice(slices)), false) {
                // A whole slice without the lock: is the holder still alive?
                slices = slices.saturating_add(1);
                if let Some(outcome) = self.take_from_dead(self.owner.load(Ordering::Acquire), me) {
                    return Ok(Some(outcome));
                }
            }
            if self.try_acquire(me) {
                return Ok(Some(self.acquired()));
            }
            // Checked after every round, so a lock that keeps changing
            // hands cannot hold a timed waiter past its deadline.
            if deadline.expired() {
                return Ok(None);
            }
        }
    }
}
