//! The one error type of `mmkit-kv`.

use std::io;
use std::path::PathBuf;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the key-value store.
///
/// Each variant names the operation and, where there is one, the file, the
/// page and the table involved, so a one-line report says what failed and
/// where.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A system call failed.
    #[error("{op} {}: {source}", .path.display())]
    Io {
        /// The operation, such as `"fdatasync"`.
        op: &'static str,
        /// The file involved.
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
    /// The file is not an mmkit-kv database (or lock file).
    #[error("{}: not an mmkit-kv {kind} file ({reason})", .path.display())]
    NotADatabase {
        /// The file.
        path: PathBuf,
        /// `"database"` or `"lock"`.
        kind: &'static str,
        /// What gave it away.
        reason: String,
    },
    /// The file was written by an incompatible format version.
    #[error("{}: format version {found} is not supported (this build reads version {supported}; {})", .path.display(), if *.found > *.supported { "the file is newer" } else { "the file is older" })]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version in the file.
        found: u32,
        /// The version this build understands.
        supported: u32,
    },
    /// A page failed validation: bad checksum, impossible offset or kind.
    #[error("{}: corrupt page {page} in table {table:?}: {reason}", .path.display())]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// The page number.
        page: u64,
        /// The table the page belongs to (`"(catalog)"` and `"(free)"` for
        /// the internal trees).
        table: String,
        /// What is wrong.
        reason: String,
    },
    /// No meta page holds a commit that verifies.
    #[error("{}: no valid commit found ({reason})", .path.display())]
    NoValidCommit {
        /// The database file.
        path: PathBuf,
        /// What was tried.
        reason: String,
    },
    /// A database already exists where one was to be created.
    #[error("{}: already exists", .path.display())]
    AlreadyExists {
        /// The file.
        path: PathBuf,
    },
    /// The database does not exist and `create` was not asked for.
    #[error("{}: no such database (create it with `create`)", .path.display())]
    NotFound {
        /// The file.
        path: PathBuf,
    },
    /// A write was asked of a database opened read-only.
    #[error("{}: {op}: the database is open read-only", .path.display())]
    ReadOnly {
        /// The operation.
        op: &'static str,
        /// The database file.
        path: PathBuf,
    },
    /// After a power loss, the last commits are only in the redo log, and
    /// this handle is read-only so it cannot replay them.
    #[error("{}: the last commits are in the redo log after a power loss: open the database once for writing to replay them", .path.display())]
    NeedsReplay {
        /// The database file.
        path: PathBuf,
    },
    /// The disk (or quota, or `RLIMIT_FSIZE`) is full; the transaction was
    /// not committed and the database stays at its last commit.
    #[error("{}: {op}: no space to grow the file to {len} bytes: {source}", .path.display())]
    NoSpace {
        /// The operation.
        op: &'static str,
        /// The database file.
        path: PathBuf,
        /// The length that was needed.
        len: u64,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A key is longer than [`MAX_KEY_LEN`](crate::MAX_KEY_LEN) or empty
    /// where that is not allowed.
    #[error("key of {len} bytes is too long (the maximum is {max} bytes)")]
    KeyTooLong {
        /// The key's length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// The table does not exist.
    #[error("no such table {name:?}")]
    NoSuchTable {
        /// The table name.
        name: String,
    },
    /// A table name is too long or empty where not allowed.
    #[error("invalid table name {name:?}: {reason}")]
    InvalidName {
        /// The name.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// Every reader slot of the lock file is taken by a live reader.
    #[error("{}: all {capacity} reader slots are in use", .path.display())]
    ReadersFull {
        /// The lock file.
        path: PathBuf,
        /// The number of slots.
        capacity: usize,
    },
    /// A commit would have grown the file while a reader older than the
    /// configured bound pinned the pages it could otherwise reuse.
    #[error(
        "{}: snapshot {txnid} of process {pid} is {lag} commits old (limit {limit}) and pins freed pages; end that read transaction",
        .path.display()
    )]
    SnapshotTooOld {
        /// The database file.
        path: PathBuf,
        /// The reader's process id.
        pid: u32,
        /// The reader's snapshot.
        txnid: u64,
        /// Commits since that snapshot.
        lag: u64,
        /// The configured bound.
        limit: u64,
    },
    /// A typed value could not be decoded from the stored bytes.
    #[error("cannot decode {ty} from {len} stored bytes: {reason}")]
    Decode {
        /// The type asked for.
        ty: &'static str,
        /// The stored length.
        len: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// A wait gave up.
    #[error("{op}: timed out")]
    Timeout {
        /// The operation.
        op: &'static str,
    },
    /// An option value is out of range.
    #[error("invalid option: {0}")]
    InvalidOption(String),
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: impl Into<io::Error>) -> Error {
        Error::Io { op, path: path.into(), source: source.into() }
    }

    pub(crate) fn region(op: &'static str) -> impl FnOnce(mmkit_region::Error) -> Error {
        move |source| match source {
            mmkit_region::Error::NoSpace { path, len, source, .. } => {
                Error::NoSpace { op, path: path.unwrap_or_default(), len, source }
            }
            source => Error::Region { op, source },
        }
    }

    pub(crate) fn sync(op: &'static str) -> impl FnOnce(mmkit_sync::Error) -> Error {
        move |source| Error::Sync { op, source }
    }

    /// True for errors that mean the file's contents are damaged.
    pub fn is_corruption(&self) -> bool {
        matches!(self, Error::Corrupt { .. } | Error::NoValidCommit { .. } | Error::NotADatabase { .. })
    }
}
