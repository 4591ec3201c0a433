//! Asymmetric fences across processes: the rare side pays for the common
//! one.
//!
//! Dekker-style handshakes ("store my flag, then load yours") need a full
//! fence on both sides, and on x86 a full fence (`mfence` or a locked
//! instruction) waits for the store buffer to drain: tens to hundreds of
//! cycles, and more when another core is polling the line just written.
//! When one side runs millions of times a second (a producer checking
//! whether a reader sleeps) and the other rarely (a reader about to park),
//! the frequent side can use a compiler barrier only, provided the rare
//! side makes every CPU running the frequent side execute a full barrier
//! on its behalf: Linux's
//! [`membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)`](https://man7.org/linux/man-pages/man2/membarrier.2.html),
//! which interrupts every CPU currently running a thread of a process that
//! registered with `MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED` (a CPU not
//! running one passes through a context switch, itself a full barrier).
//!
//! The guarantee, for a frequent side `store A; light(); load B` and a rare
//! side `store B; heavy(); load A`: at least one of the loads sees the other
//! side's store. If the frequent side's load of `B` ran before the barrier
//! that `heavy` forced on its CPU, its store to `A` ran earlier still and is
//! visible once `heavy` returns; if it ran after, it sees `B`.
//!
//! [`light`] is a compiler barrier only in a process that [`register`]ed
//! successfully; anywhere else it is a full fence, so a process without
//! `membarrier` (an old kernel, a seccomp filter) stays correct, only
//! slower. [`heavy`] returns false when the system call failed: the caller
//! must then assume the other side may have missed its store, and bound how
//! long it relies on being told (see `Notifier::park_light`).

use std::sync::atomic::{AtomicU8, Ordering, compiler_fence, fence};

use rustix::thread::{MembarrierCommand, membarrier};

const UNKNOWN: u8 = 0;
const REGISTERED: u8 = 1;
const UNAVAILABLE: u8 = 2;

static STATE: AtomicU8 = AtomicU8::new(UNKNOWN);

/// Registers this process for expedited global memory barriers, once;
/// returns whether it is registered. Call it before relying on [`light`]
/// being cheap (it is correct either way).
pub fn register() -> bool {
    match STATE.load(Ordering::Acquire) {
        REGISTERED => return true,
        UNAVAILABLE => return false,
        _ => {}
    }
    // Registering twice is harmless, so racing first calls need no lock.
    let ok = membarrier(MembarrierCommand::RegisterGlobalExpedited).is_ok();
    STATE.store(if ok { REGISTERED } else { UNAVAILABLE }, Ordering::Release);
    ok
}

/// Whether this process registered successfully.
#[inline]
pub fn is_registered() -> bool {
    STATE.load(Ordering::Relaxed) == REGISTERED
}

/// The frequent side's barrier: a compiler barrier in a registered process,
/// a full fence otherwise.
#[inline]
pub fn light() {
    if is_registered() {
        compiler_fence(Ordering::SeqCst);
    } else {
        fence(Ordering::SeqCst);
    }
}

/// The rare side's barrier: a full fence here, then one on every CPU
/// running a registered process. Returns false if the system call failed,
/// in which case only the local fence ran.
pub fn heavy() -> bool {
    fence(Ordering::SeqCst);
    let ok = membarrier(MembarrierCommand::GlobalExpedited).is_ok();
    fence(Ordering::SeqCst);
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_is_remembered_and_heavy_succeeds_where_it_is_available() {
        let first = register();
        assert_eq!(register(), first);
        assert_eq!(is_registered(), first);
        if first {
            assert!(heavy(), "membarrier registered but GLOBAL_EXPEDITED failed");
        }
        light();
    }
}
