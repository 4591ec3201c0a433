//! The one error type of `mmkit-queue`.

use std::io;
use std::path::PathBuf;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the queue.
///
/// Each variant names the operation and the file or directory involved, so
/// a one-line report says what failed and where.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A system call failed.
    #[error("{op} {}: {source}", .path.display())]
    Io {
        /// The operation, such as `"create segment"`.
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The mapping layer failed.
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
    /// The directory holds no queue (no `meta` file).
    #[error("{}: not an mmkit queue (no meta file)", .path.display())]
    NotAQueue {
        /// The directory.
        path: PathBuf,
    },
    /// A queue already exists where one was to be created.
    #[error("{}: a queue already exists here", .path.display())]
    AlreadyExists {
        /// The directory.
        path: PathBuf,
    },
    /// The file's magic number is wrong: it is not a queue file.
    #[error("{}: bad magic number (not an mmkit queue {kind} file)", .path.display())]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// `"meta"` or `"segment"`.
        kind: &'static str,
    },
    /// The file was written by a different, incompatible format version.
    #[error("{}: format version {found} is not supported (this build reads version {supported}; {})", .path.display(), if *.found > *.supported { "the file is newer" } else { "the file is older" })]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version in the file.
        found: u32,
        /// The version this build understands.
        supported: u32,
    },
    /// A file's structure is inconsistent (bad header, impossible offset).
    #[error("{}: corrupt queue file: {reason}", .path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// One record failed validation (checksum, length or kind).
    #[error("corrupt record at index {index} (segment {segment}, offset {offset}) in {}: {reason}", .path.display())]
    CorruptRecord {
        /// The record's index.
        index: u64,
        /// The segment number.
        segment: u64,
        /// The frame's byte offset in the segment file.
        offset: u64,
        /// The segment file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A message is larger than the queue's maximum message size.
    #[error("message of {len} bytes exceeds the queue's maximum message size of {max} bytes")]
    MessageTooLarge {
        /// The message length.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// A record's payload does not fit the caller's buffer
    /// ([`crate::Reader::next_into`]); the reader stays at the record.
    #[error("a payload of {len} bytes does not fit a buffer of {capacity} bytes")]
    BufferTooSmall {
        /// The payload's length.
        len: usize,
        /// The buffer's length.
        capacity: usize,
    },
    /// An option value is out of range.
    #[error("invalid option: {0}")]
    InvalidOption(String),
    /// A fixed-size table in the meta file is full.
    #[error("{}: the {table} table is full ({capacity} slots)", .path.display())]
    TableFull {
        /// The meta file.
        path: PathBuf,
        /// Which table: `"producer"`, `"cursor"`, `"group"`, `"group member"`.
        table: &'static str,
        /// Its number of slots.
        capacity: usize,
    },
    /// A cursor or group name is empty, too long, or contains a NUL byte.
    #[error("invalid name {name:?}: {reason}")]
    InvalidName {
        /// The name.
        name: String,
        /// Why it is invalid.
        reason: &'static str,
    },
    /// The index does not exist (before the first retained message, not yet
    /// written, or not a valid index).
    #[error("index {index} is not in the queue ({reason})")]
    NoSuchIndex {
        /// The index asked for.
        index: u64,
        /// Why.
        reason: &'static str,
    },
    /// The message at this index was abandoned by a crashed producer and
    /// replaced with padding.
    #[error("index {index} was abandoned by a crashed producer")]
    Abandoned {
        /// The index.
        index: u64,
    },
    /// The operation needs a durability mode the queue was not opened with.
    #[error("{0}")]
    Unsupported(&'static str),
    /// A producer was used in a process forked from the one that created
    /// it: it would append under its parent's identity (and, holding the
    /// single-producer lease, race its parent with plain stores).
    #[error("{}: this producer was created before a fork(); create a new one in the child", .path.display())]
    ForkedProducer {
        /// The queue directory.
        path: PathBuf,
    },
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: impl Into<io::Error>) -> Error {
        Error::Io { op, path: path.into(), source: source.into() }
    }

    pub(crate) fn region(op: &'static str) -> impl FnOnce(mmkit_region::Error) -> Error {
        move |source| Error::Region { op, source }
    }

    pub(crate) fn sync(op: &'static str) -> impl FnOnce(mmkit_sync::Error) -> Error {
        move |source| Error::Sync { op, source }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, reason: impl Into<String>) -> Error {
        Error::Corrupt { path: path.into(), reason: reason.into() }
    }
}
