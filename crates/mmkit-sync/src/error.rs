//! The crate's error type.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// Result with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `mmkit-sync`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The mapping layer refused: out of bounds, read-only, poisoned, ...
    #[error(transparent)]
    Region(#[from] mmkit_region::Error),
    /// A primitive was placed at an offset that is not suitably aligned.
    #[error("{op}: offset {offset} (address {address:#x}) is not aligned to {align} bytes")]
    Misaligned {
        /// The operation, such as `"RobustMutex::at"`.
        op: &'static str,
        /// The offset inside the mapping.
        offset: u64,
        /// The absolute address it resolves to.
        address: usize,
        /// The alignment the primitive needs.
        align: usize,
    },
    /// A wait gave up because its timeout elapsed.
    #[error("{op}: timed out after {timeout:?}")]
    Timeout {
        /// The operation that waited.
        op: &'static str,
        /// The timeout that elapsed.
        timeout: Duration,
    },
    /// The calling thread already holds the mutex; locking again would
    /// wait forever.
    #[error("{op}: the calling thread already holds this mutex")]
    WouldDeadlock {
        /// The operation.
        op: &'static str,
    },
    /// A writer died holding a [`RobustRwLock`](crate::RobustRwLock) and
    /// nobody has repaired the data since: take the write lock (it reports
    /// `OwnerDied`), repair, and call `make_consistent`.
    #[error("{op}: a writer died holding the lock; take the write lock to repair the data")]
    Inconsistent {
        /// The operation.
        op: &'static str,
    },
    /// A futex system call failed in an unexpected way.
    #[error("{op}: futex failed: {source}")]
    Futex {
        /// The futex operation, `"futex_wait"` or `"futex_wake"`.
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A file under `/proc` could not be read or parsed.
    #[error("{op} {}: {source}", path.display())]
    Proc {
        /// The operation.
        op: &'static str,
        /// The `/proc` file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: io::Error,
    },
    /// A value does not fit the token encoding.
    #[error("{op}: {reason}")]
    Invalid {
        /// The operation.
        op: &'static str,
        /// Why the value was refused.
        reason: String,
    },
}
