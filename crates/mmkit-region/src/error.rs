//! The one error type of `mmkit-region`.

use std::io;
use std::path::PathBuf;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the mapping layer.
///
/// Every variant names the operation (`op`) and, where there is one, the
/// path or shared-memory name, so a one-line report tells the user what
/// failed and on what.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A system call failed.
    #[error("{op} {}: {source}", display_path(.path))]
    Io {
        /// The operation that failed, such as `"mmap"` or `"open"`.
        op: &'static str,
        /// The file or shared-memory name involved, if any.
        path: Option<PathBuf>,
        /// The underlying OS error.
        #[source]
        source: io::Error,
    },
    /// An offset or length reaches past the end of a file or mapping.
    #[error("{op} {}: range {offset}..{end} is past the end ({size} bytes)", display_path(.path), end = .offset.saturating_add(*.len))]
    OutOfBounds {
        /// The operation.
        op: &'static str,
        /// The file involved, if any.
        path: Option<PathBuf>,
        /// Start of the requested range.
        offset: u64,
        /// Length of the requested range.
        len: u64,
        /// The size it must fit in.
        size: u64,
    },
    /// A zero-length mapping or shared-memory segment was requested; POSIX
    /// forbids empty mappings.
    #[error("{op} {}: the size is zero, and an empty mapping is impossible (POSIX forbids it)", display_path(.path))]
    ZeroLength {
        /// The operation.
        op: &'static str,
        /// The file involved, if any.
        path: Option<PathBuf>,
    },
    /// The path is a directory, which cannot be mapped.
    #[error("{op} {}: is a directory", display_path(&Some(.path.clone())))]
    IsDirectory {
        /// The operation.
        op: &'static str,
        /// The directory.
        path: PathBuf,
    },
    /// A write was asked of a mapping or file opened read-only.
    #[error("{op} {}: mapping is read-only", display_path(.path))]
    ReadOnly {
        /// The operation.
        op: &'static str,
        /// The file involved, if any.
        path: Option<PathBuf>,
    },
    /// An offset is not aligned as the operation requires.
    #[error("{op}: offset {offset} is not aligned to {align}")]
    Misaligned {
        /// The operation.
        op: &'static str,
        /// The offending offset.
        offset: u64,
        /// The required alignment.
        align: u64,
    },
    /// A shared-memory or memfd name is not valid.
    #[error("{op} {name:?}: invalid name: {reason}")]
    InvalidName {
        /// The operation.
        op: &'static str,
        /// The name as given.
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// `mlock` failed because `RLIMIT_MEMLOCK` is too small.
    #[error(
        "{op}: locking {requested} bytes exceeds RLIMIT_MEMLOCK ({limit} bytes); raise it with `ulimit -l` or CAP_IPC_LOCK"
    )]
    MemlockLimit {
        /// The operation.
        op: &'static str,
        /// Bytes asked for.
        requested: u64,
        /// The soft limit in force, in bytes.
        limit: u64,
    },
    /// The file behind this mapping shrank under it and a SIGBUS was
    /// caught: the mapping now reads zeros and its contents are lost.
    #[error("{op} {}: the file was truncated under the mapping (SIGBUS caught); the mapping is poisoned", display_path(.path))]
    Poisoned {
        /// The operation.
        op: &'static str,
        /// The file involved, if any.
        path: Option<PathBuf>,
    },
    /// The file could not be extended: the disk or quota is full, or the
    /// file-size limit (`RLIMIT_FSIZE`) is reached. Reported at grow time,
    /// so a later write through the mapping cannot hit SIGBUS instead.
    #[error("{op} {}: cannot extend the file to {len} bytes: {source}", display_path(.path))]
    NoSpace {
        /// The operation.
        op: &'static str,
        /// The file involved, if any.
        path: Option<PathBuf>,
        /// The length asked for.
        len: u64,
        /// The underlying OS error (`ENOSPC`, `EDQUOT` or `EFBIG`).
        #[source]
        source: io::Error,
    },
    /// A value does not fit the request (a size too large for this
    /// platform, an unsupported option, a reservation too small...).
    #[error("{op} {}: {reason}", display_path(.path))]
    Invalid {
        /// The operation.
        op: &'static str,
        /// The file involved, if any.
        path: Option<PathBuf>,
        /// What is wrong.
        reason: String,
    },
}

fn display_path(path: &Option<PathBuf>) -> String {
    match path {
        Some(p) => p.display().to_string(),
        None => "(anonymous)".to_string(),
    }
}

impl Error {
    /// Wraps an OS error with the operation and path.
    pub fn io(op: &'static str, path: Option<&std::path::Path>, source: impl Into<io::Error>) -> Self {
        Error::Io { op, path: path.map(PathBuf::from), source: source.into() }
    }

    /// The OS error kind, when this is an I/O error.
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            Error::Io { source, .. } | Error::NoSpace { source, .. } => Some(source.kind()),
            _ => None,
        }
    }

    /// The raw OS error number, when this is an I/O error.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Io { source, .. } | Error::NoSpace { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}
