//! Wait and notify on shared memory: [`Notifier`] and [`EventCount`].

use std::hint::spin_loop;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};
use std::thread::yield_now;
use std::time::{Duration, Instant};

use mmkit_region::Access;

use crate::error::{Error, Result};
use crate::futex;
use crate::place::{Placeable, place};
use crate::policy::WaitPolicy;

/// The longest a parked waiter sleeps before re-checking its condition by
/// itself. A notifier that is killed between changing the state and
/// notifying would otherwise leave waiters asleep forever.
pub const MAX_PARK_SLICE: Duration = Duration::from_millis(100);

/// How often a waiter of [`Notifier::park_light`] re-checks its condition
/// when `membarrier` is unavailable to it (a light notify may then be missed).
pub const LIGHT_FALLBACK_SLICE: Duration = Duration::from_millis(1);

/// A futex-based wake-up channel living in shared memory.
///
/// 8 bytes, align 4: `{ seq: u32, waiters: u32 }`, all-zero initially.
/// `waiters` counts parked waiters so that [`Notifier::notify_all`] costs
/// no system call when nobody sleeps; `seq` is the futex word, bumped on
/// every real wake. See `docs/sync-format.md`.
#[repr(C)]
#[derive(Debug, Default)]
pub struct Notifier {
    seq: AtomicU32,
    waiters: AtomicU32,
}

// SAFETY: two atomics, `repr(C)`, any bit pattern valid, zero = initial.
unsafe impl Placeable for Notifier {}

impl Notifier {
    /// Size in shared memory, in bytes.
    pub const SIZE: usize = 8;
    /// Required alignment, in bytes.
    pub const ALIGN: usize = 4;

    /// A fresh notifier, for use outside shared memory.
    pub const fn new() -> Notifier {
        Notifier { seq: AtomicU32::new(0), waiters: AtomicU32::new(0) }
    }

    /// The notifier at `offset` in `mem`. Errors if the memory is
    /// read-only, the range is out of bounds, or the address is not
    /// 4-aligned.
    pub fn at<A: Access + ?Sized>(mem: &A, offset: u64) -> Result<&Notifier> {
        place(mem, offset, "Notifier::at")
    }

    /// Wakes every parked waiter. Makes no system call when nobody is
    /// parked. Call it after making the waiters' condition true.
    #[inline]
    pub fn notify_all(&self) {
        // Pairs with the fence in `park_until`: either we see the waiter's
        // registration, or it sees our state change before sleeping.
        fence(Ordering::SeqCst);
        if self.waiters.load(Ordering::Relaxed) > 0 {
            self.wake(u32::MAX);
        }
    }

    /// Wakes at most one parked waiter; no system call when nobody is
    /// parked.
    #[inline]
    pub fn notify_one(&self) {
        fence(Ordering::SeqCst);
        if self.waiters.load(Ordering::Relaxed) > 0 {
            self.wake(1);
        }
    }

    /// Wakes at most one parked waiter after the caller's own `SeqCst`
    /// read-modify-write made the condition true; skips the fence that
    /// such an operation already implies. Calling it after anything weaker
    /// than a `SeqCst` read-modify-write can lose a wake-up.
    #[inline]
    pub fn notify_one_after_seqcst_rmw(&self) {
        if self.waiters.load(Ordering::SeqCst) > 0 {
            self.wake(1);
        }
    }

    /// Like [`Notifier::notify_one_after_seqcst_rmw`], waking everyone.
    #[inline]
    pub fn notify_all_after_seqcst_rmw(&self) {
        if self.waiters.load(Ordering::SeqCst) > 0 {
            self.wake(u32::MAX);
        }
    }

    /// Wakes every parked waiter, for a caller on a hot path: no fence, only
    /// a compiler barrier (in a process that registered with
    /// [`barrier::register`](crate::barrier::register); a full fence
    /// elsewhere) and a load. Only waiters that park with
    /// [`Notifier::park_light`] are certain to be woken: they pay for the
    /// fence this call skips with a `membarrier` (see [`crate::barrier`]).
    #[inline]
    pub fn notify_all_light(&self) {
        crate::barrier::light();
        if self.waiters.load(Ordering::Relaxed) > 0 {
            self.wake(u32::MAX);
        }
    }

    #[cold]
    fn wake(&self, count: u32) {
        self.seq.fetch_add(1, Ordering::SeqCst);
        futex::wake(&self.seq, count);
    }

    /// How many waiters are parked now (a waiter killed while parked stays
    /// counted, which costs later notifies a system call but nothing else).
    pub fn waiters(&self) -> u32 {
        self.waiters.load(Ordering::Relaxed)
    }

    /// Waits until `ready()` returns true: spins, yields, then parks as
    /// `policy` says. Returns true once `ready()` held, false if `timeout`
    /// elapsed first.
    ///
    /// `ready` must read the shared state with at least `Acquire` loads;
    /// the side that makes it true must then call a notify method. A
    /// notify racing with this waiter going to sleep is never lost.
    pub fn wait_until(
        &self,
        mut ready: impl FnMut() -> bool,
        policy: &WaitPolicy,
        timeout: Option<Duration>,
    ) -> bool {
        if ready() {
            return true;
        }
        let deadline = Deadline::after(timeout);
        for i in 0..policy.spins {
            spin_loop();
            if ready() {
                return true;
            }
            if i % 256 == 255 && deadline.expired() {
                return false;
            }
        }
        for _ in 0..policy.yields {
            yield_now();
            if ready() {
                return true;
            }
            if deadline.expired() {
                return false;
            }
        }
        if policy.park {
            // `park_until` re-checks the condition after each slice; only
            // the deadline ends the wait.
            loop {
                if self.park_until(&mut ready, deadline, Some(MAX_PARK_SLICE), false) {
                    return true;
                }
                if deadline.expired() {
                    return false;
                }
            }
        }
        loop {
            yield_now();
            if ready() {
                return true;
            }
            if deadline.expired() {
                return false;
            }
        }
    }

    /// Parks at once until `ready()` or until `timeout` elapses (`None`:
    /// no limit); returns whether `ready()` held. Unlike
    /// [`Notifier::wait_until`], it does not wake every
    /// [`MAX_PARK_SLICE`] to re-check by itself, so an idle waiter costs
    /// no CPU at all. Use it when a crash of the notifying process cannot
    /// skip the notify (or when the caller has its own way to notice one),
    /// or bound the wait with `timeout`.
    pub fn park(&self, mut ready: impl FnMut() -> bool, timeout: Option<Duration>) -> bool {
        let deadline = Deadline::after(timeout);
        self.park_until(&mut ready, deadline, None, false)
    }

    /// Like [`Notifier::park`], for conditions made true by callers of
    /// [`Notifier::notify_all_light`]: after registering as a waiter it runs
    /// [`barrier::heavy`](crate::barrier::heavy), so the notifier's skipped
    /// fence cannot lose this wake-up. Where `membarrier` fails, the wait
    /// re-checks its condition every millisecond instead ([`LIGHT_FALLBACK_SLICE`]).
    pub fn park_light(&self, mut ready: impl FnMut() -> bool, timeout: Option<Duration>) -> bool {
        let deadline = Deadline::after(timeout);
        // Without membarrier `park_until` gives up after each fallback
        // slice; only `ready()` or the caller's deadline end this wait.
        loop {
            if self.park_until(&mut ready, deadline, None, true) {
                return true;
            }
            if deadline.expired() {
                return false;
            }
        }
    }

    /// Parks until `ready()`, the deadline, or (at most) `slice` elapses
    /// (`None`: no slice);
    /// the caller decides what to do after a slice. `light`: the notifiers
    /// use [`Notifier::notify_all_light`], so this waiter runs the heavy
    /// barrier after registering.
    pub(crate) fn park_until(
        &self,
        ready: &mut impl FnMut() -> bool,
        deadline: Deadline,
        mut slice: Option<Duration>,
        light: bool,
    ) -> bool {
        // Saturating, and `u32::MAX` sticks (see below): a count another
        // process forged to the top must not wrap to 0, which notifiers
        // read as "nobody parked" and skip the wake for good.
        let _ = self.waiters.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |w| Some(w.saturating_add(1)));
        if light && !crate::barrier::heavy() {
            // A light notifier may not see this registration: never sleep
            // long on the strength of it.
            slice = Some(slice.map_or(LIGHT_FALLBACK_SLICE, |s| s.min(LIGHT_FALLBACK_SLICE)));
        }
        fence(Ordering::SeqCst);
        let started = Instant::now();
        let result = loop {
            let seen = self.seq.load(Ordering::SeqCst);
            if ready() {
                break true;
            }
            let in_slice = slice.map(|s| s.saturating_sub(started.elapsed()));
            let left = match (deadline.remaining(), in_slice) {
                (Some(d), Some(s)) => Some(d.min(s)),
                (d, s) => d.or(s),
            };
            if left.is_some_and(|l| l.is_zero()) {
                break false;
            }
            if futex::wait(&self.seq, seen, left).is_err() {
                yield_now();
            }
        };
        // From 0 (a count forged down while we were parked) this wraps to
        // `u32::MAX`, which stays: notifiers then always wake, which costs
        // them a system call and loses nothing.
        let _ = self
            .waiters
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |w| (w != u32::MAX).then(|| w.wrapping_sub(1)));
        result
    }
}

/// An optional point in time after which a wait gives up.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Deadline(pub(crate) Option<Instant>);

impl Deadline {
    pub(crate) fn after(timeout: Option<Duration>) -> Deadline {
        Deadline(timeout.and_then(|t| Instant::now().checked_add(t)))
    }

    pub(crate) fn expired(self) -> bool {
        self.0.is_some_and(|d| Instant::now() >= d)
    }

    /// Time left; `None` means forever.
    pub(crate) fn remaining(self) -> Option<Duration> {
        self.0.map(|d| d.saturating_duration_since(Instant::now()))
    }
}

/// A shared 64-bit counter that waiters can wait on until it reaches a
/// target.
///
/// 16 bytes, align 8: `{ seq: u64, notifier: Notifier }`, all-zero
/// initially. No wake-up is lost: an advance racing with a waiter going to
/// sleep still wakes it.
#[repr(C)]
#[derive(Debug, Default)]
pub struct EventCount {
    seq: AtomicU64,
    notifier: Notifier,
}

// SAFETY: a u64 atomic and a `Notifier`, `repr(C)`, no padding, any bit
// pattern valid, zero = initial.
unsafe impl Placeable for EventCount {}

impl EventCount {
    /// Size in shared memory, in bytes.
    pub const SIZE: usize = 16;
    /// Required alignment, in bytes.
    pub const ALIGN: usize = 8;

    /// A fresh count at 0, for use outside shared memory.
    pub const fn new() -> EventCount {
        EventCount { seq: AtomicU64::new(0), notifier: Notifier::new() }
    }

    /// The event count at `offset` in `mem`. Errors if the memory is
    /// read-only, the range is out of bounds, or the address is not
    /// 8-aligned.
    pub fn at<A: Access + ?Sized>(mem: &A, offset: u64) -> Result<&EventCount> {
        place(mem, offset, "EventCount::at")
    }

    /// The current value (an `Acquire` load).
    #[inline]
    pub fn get(&self) -> u64 {
        self.seq.load(Ordering::Acquire)
    }

    /// Adds `by` (wrapping) and wakes waiters; returns the new value.
    #[inline]
    pub fn advance(&self, by: u64) -> u64 {
        let new = self.seq.fetch_add(by, Ordering::Release).wrapping_add(by);
        self.notifier.notify_all();
        new
    }

    /// Raises the value to `value` unless it is already higher, and wakes
    /// waiters.
    #[inline]
    pub fn publish(&self, value: u64) {
        self.seq.fetch_max(value, Ordering::Release);
        self.notifier.notify_all();
    }

    /// Waits until the value is at least `target`; returns the value seen.
    /// Returns [`Error::Timeout`] if `timeout` elapses first.
    pub fn wait_for(&self, target: u64, policy: &WaitPolicy, timeout: Option<Duration>) -> Result<u64> {
        let mut seen = 0;
        let ready = || {
            seen = self.get();
            seen >= target
        };
        if self.notifier.wait_until(ready, policy, timeout) {
            Ok(seen)
        } else {
            Err(Error::Timeout { op: "EventCount::wait_for", timeout: timeout.unwrap_or_default() })
        }
    }

    /// The notifier inside, for callers that wait on conditions of their own.
    pub fn notifier(&self) -> &Notifier {
        &self.notifier
    }
}
