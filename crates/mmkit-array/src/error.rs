//! The one error type of `mmkit-array`.

use std::io;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong with an array or an `.npy` file.
///
/// Each variant names the file (or shared-memory segment) in `src` and,
/// where it helps, the operation, so a one-line report says what failed
/// and on what.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// From the mapping layer (mmap, growth, shared memory, SIGBUS).
    #[error(transparent)]
    Region(#[from] mmkit_region::Error),
    /// A system call of this crate failed.
    #[error("{op} {src}: {source}")]
    Io {
        /// The operation, such as `"open"` or `"write header"`.
        op: &'static str,
        /// The file or segment.
        src: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The file is not an `.npy` file at all (empty, wrong magic, ...).
    #[error("{src}: not an .npy file: {reason}")]
    NotNpy {
        /// The file or segment.
        src: String,
        /// What is wrong.
        reason: String,
    },
    /// The `.npy` header is malformed.
    #[error("{src}: bad .npy header: {reason}")]
    Header {
        /// The file or segment.
        src: String,
        /// What is wrong.
        reason: String,
    },
    /// The header names a dtype this crate cannot map.
    #[error("{src}: unsupported dtype {}: {reason}", crate::header::escape_control(.descr))]
    UnsupportedDtype {
        /// The file or segment.
        src: String,
        /// The dtype as the header spells it (shown with control
        /// characters escaped).
        descr: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// The file's dtype is not the element type asked for.
    #[error("{src}: dtype mismatch: the file holds {found}, the array type is {expected}")]
    DtypeMismatch {
        /// The file or segment.
        src: String,
        /// The dtype of the Rust element type.
        expected: String,
        /// The dtype in the file.
        found: String,
    },
    /// The file holds fewer bytes than the header's shape needs.
    #[error("{src}: truncated: the header's shape needs {needed} bytes but the file holds {size}")]
    Truncated {
        /// The file or segment.
        src: String,
        /// Bytes needed (header plus data).
        needed: u64,
        /// Bytes present.
        size: u64,
    },
    /// The data does not start at an offset aligned for the element type.
    #[error(
        "{src}: data offset {offset} is not aligned to {align} bytes for {dtype}; open with `allow_unaligned(true)` for a copying read path"
    )]
    Misaligned {
        /// The file or segment.
        src: String,
        /// The data offset.
        offset: u64,
        /// The alignment the element type needs.
        align: usize,
        /// The dtype.
        dtype: String,
    },
    /// A shape is unusable (overflows, wrong number of axes, ...).
    #[error("{src}: bad shape {shape:?}: {reason}")]
    Shape {
        /// The file or segment.
        src: String,
        /// The shape involved.
        shape: Vec<usize>,
        /// What is wrong.
        reason: String,
    },
    /// An index lies outside the array.
    #[error("{src}: index {index:?} is out of bounds for shape {shape:?}")]
    OutOfBounds {
        /// The file or segment.
        src: String,
        /// The index asked for.
        index: Vec<usize>,
        /// The array's shape.
        shape: Vec<usize>,
    },
    /// A buffer's length does not match what the operation needs.
    #[error("{src}: {op}: buffer holds {got} elements, {expected} needed")]
    BufferLength {
        /// The file or segment.
        src: String,
        /// The operation.
        op: &'static str,
        /// Elements needed.
        expected: usize,
        /// Elements given.
        got: usize,
    },
    /// A write was asked of an array opened read-only.
    #[error("{op} {src}: the array is read-only (opened with mode r)")]
    ReadOnly {
        /// The operation.
        op: &'static str,
        /// The file or segment.
        src: String,
    },
    /// Another process holds the file's lock.
    #[error("{src}: locked by another process ({reason})")]
    Locked {
        /// The file.
        src: String,
        /// Which lock conflicts.
        reason: &'static str,
    },
    /// The operation cannot be done on this array.
    #[error("{op} {src}: {reason}")]
    Unsupported {
        /// The operation.
        op: &'static str,
        /// The file or segment.
        src: String,
        /// Why not.
        reason: String,
    },
}

impl Error {
    pub(crate) fn io(op: &'static str, src: &str, source: impl Into<io::Error>) -> Self {
        Error::Io { op, src: src.to_string(), source: source.into() }
    }

    pub(crate) fn unsupported(op: &'static str, src: &str, reason: impl Into<String>) -> Self {
        Error::Unsupported { op, src: src.to_string(), reason: reason.into() }
    }
}
