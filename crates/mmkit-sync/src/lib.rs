//! Cross-process synchronization inside mappings: futex wait/notify,
//! event counts, a robust mutex, a robust reader-writer lock and process
//! liveness.
//!
//! Every primitive is a small `#[repr(C)]` struct of atomics whose all-zero
//! bytes are its initial state, so a freshly created file or shared memory
//! object is ready to use. Place one with `at(&mapping, offset)`, which
//! checks bounds, alignment and writability. Layouts are documented in
//! `docs/sync-format.md`.
//!
//! Any process may be killed at any instruction: a mutex whose holder died
//! is handed to the next locker as [`Outcome::OwnerDied`], detected by
//! the holder's `(tid, start time)` liveness within milliseconds, never by
//! a wall-clock timeout.
//!
//! ```
//! use mmkit_region::{Mapping, Share};
//! use mmkit_sync::{EventCount, LockOutcome, RobustMutex, WaitPolicy};
//! use std::time::Duration;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let map = Mapping::anonymous(4096, Share::Shared)?;
//! let mutex = RobustMutex::at(&map, 0)?;
//! match mutex.lock()? {
//!     LockOutcome::Acquired(_guard) => { /* critical section */ }
//!     LockOutcome::OwnerDied(guard) => guard.make_consistent(), // repair first
//! }
//!
//! let events = EventCount::at(&map, 64)?;
//! events.advance(1);
//! assert_eq!(events.wait_for(1, &WaitPolicy::BALANCED, Some(Duration::from_secs(1)))?, 1);
//!
//! // Misplaced primitives are errors, not undefined behaviour.
//! assert!(RobustMutex::at(&map, 4).is_err());
//! assert!(RobustMutex::at(&map, 4090).is_err());
//! # Ok(())
//! # }
//! ```

pub mod barrier;
mod error;
pub mod futex;
#[doc(hidden)]
pub mod fuzzing;
mod mutex;
mod notifier;
mod place;
mod policy;
mod rwlock;
mod token;

pub use error::{Error, Result};
pub use futex::WaitOutcome;
pub use mutex::{LockOutcome, MutexGuard, Outcome, RobustMutex};
pub use notifier::{EventCount, LIGHT_FALLBACK_SLICE, MAX_PARK_SLICE, Notifier};
pub use policy::WaitPolicy;
pub use rwlock::{READER_SLOTS, ReadGuard, RobustRwLock, WriteGuard, WriteOutcome};
pub use token::{Liveness, ProcessToken, fork_generation};

#[cfg(test)]
mod layout_tests {
    use super::*;

    #[test]
    fn sizes_and_alignments_match_the_format_doc() {
        assert_eq!(size_of::<Notifier>(), Notifier::SIZE);
        assert_eq!(align_of::<Notifier>(), Notifier::ALIGN);
        assert_eq!(size_of::<EventCount>(), EventCount::SIZE);
        assert_eq!(align_of::<EventCount>(), EventCount::ALIGN);
        assert_eq!(size_of::<RobustMutex>(), RobustMutex::SIZE);
        assert_eq!(align_of::<RobustMutex>(), RobustMutex::ALIGN);
        assert_eq!(size_of::<RobustRwLock>(), RobustRwLock::SIZE);
        assert_eq!(align_of::<RobustRwLock>(), RobustRwLock::ALIGN);
    }
}
