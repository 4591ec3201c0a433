//! The one error type of `mmkit-heap`.

use std::io;
use std::path::PathBuf;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in a shared heap.
///
/// Variants name the operation and, where it matters, the segment's path,
/// so a one-line report says what failed and where.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A system call on the segment's file failed.
    #[error("{op} {}: {source}", .path.display())]
    Io {
        /// The operation, such as `"create heap"`.
        op: &'static str,
        /// The file (for shm, `/dev/shm/<name>`).
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The mapping layer failed (bounds, growth, full disk, SIGBUS).
    #[error("{op}: {source}")]
    Region {
        /// The operation.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: mmkit_region::Error,
    },
    /// The synchronization layer failed.
    #[error("{op}: {source}")]
    Sync {
        /// The operation.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: mmkit_sync::Error,
    },
    /// The file is not an mmkit heap (too short or wrong magic number).
    #[error("{}: not an mmkit heap ({reason})", .path.display())]
    NotAHeap {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: &'static str,
    },
    /// A heap already exists where one was to be created.
    #[error("{}: already exists", .path.display())]
    AlreadyExists {
        /// The file.
        path: PathBuf,
    },
    /// The segment was written by an incompatible format version or layout.
    #[error("{}: heap format {found} is not supported (this build reads version {supported}, layout {layout:#018x})", .path.display())]
    Incompatible {
        /// The file.
        path: PathBuf,
        /// What the header says: version and layout fingerprint.
        found: String,
        /// The version this build understands.
        supported: u32,
        /// This build's layout fingerprint.
        layout: u64,
    },
    /// A structure in the segment is inconsistent: an offset out of
    /// bounds or misaligned, a bad tag, an impossible length. Another
    /// process wrote garbage, or the file is damaged.
    #[error("{}: corrupt heap: {what}", .path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong, and where.
        what: String,
    },
    /// A lock stayed held by a live process for longer than
    /// [`HeapOptions::lock_wait`](crate::HeapOptions::lock_wait) allows,
    /// or a live process kept initializing the object being opened that
    /// long (then `at` is its registry entry).
    /// Nothing was changed; the operation may be retried.
    #[error("{}: the lock at offset {at} is still held by live process {holder} after {waited:?}", .path.display())]
    LockHeld {
        /// The file.
        path: PathBuf,
        /// The lock's offset in the segment.
        at: u64,
        /// The holder's thread id (0 if it let go in the meantime).
        holder: u32,
        /// How long the operation waited.
        waited: std::time::Duration,
    },
    /// The heap cannot grow enough for an allocation.
    #[error("{}: out of memory: {requested} more bytes needed, the heap is {size} bytes and may grow to {max_size}", .path.display())]
    OutOfMemory {
        /// The file.
        path: PathBuf,
        /// Bytes asked for.
        requested: u64,
        /// Current size of the segment.
        size: u64,
        /// The most it may grow to (set at creation).
        max_size: u64,
    },
    /// A named object exists with another type or kind.
    #[error("object {name:?} has type {found}, not {expected}")]
    TypeMismatch {
        /// The object's name.
        name: String,
        /// The type asked for.
        expected: String,
        /// The type stored in the registry.
        found: String,
    },
    /// The object this handle refers to was removed from the heap.
    #[error("object {name:?} was removed from the heap")]
    Removed {
        /// The object's name.
        name: String,
    },
    /// A name is empty, too long, or contains a NUL byte.
    #[error("invalid object name {name:?}: {reason}")]
    InvalidName {
        /// The name.
        name: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// An argument is out of range (size, alignment, index).
    #[error("{op}: {reason}")]
    Invalid {
        /// The operation.
        op: &'static str,
        /// Why.
        reason: String,
    },
}

impl Error {
    pub(crate) fn region(op: &'static str) -> impl FnOnce(mmkit_region::Error) -> Error {
        move |source| Error::Region { op, source }
    }

    pub(crate) fn sync(op: &'static str) -> impl FnOnce(mmkit_sync::Error) -> Error {
        move |source| Error::Sync { op, source }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: impl Into<io::Error>) -> Error {
        Error::Io { op, path: path.into(), source: source.into() }
    }

    /// True for errors that mean the segment holds inconsistent data.
    pub fn is_corrupt(&self) -> bool {
        matches!(self, Error::Corrupt { .. })
    }
}
