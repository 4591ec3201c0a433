//! Turning the crates' errors into Python exceptions.
//!
//! OS errors become `OSError(errno, message)`, which CPython turns into the
//! matching subclass (`FileNotFoundError`, `PermissionError`,
//! `FileExistsError`, `IsADirectoryError`, `BlockingIOError`, ...). Bad
//! arguments become `ValueError`, damaged files `mmkit.CorruptError`, a
//! missing table `KeyError`, a named heap object of another type
//! `TypeError`, a full heap `MemoryError`, a lock this thread already holds
//! `RuntimeError`, and everything else `mmkit.Error`. Every message starts
//! with the Python-level operation and names the path.

use std::io;

use pyo3::exceptions::{
    PyException, PyKeyError, PyMemoryError, PyOSError, PyRuntimeError, PyTypeError, PyValueError,
};
use pyo3::{PyErr, create_exception};

create_exception!(
    mmkit,
    Error,
    PyException,
    "Base class of mmkit's own errors (those that are not an OSError or a ValueError)."
);
create_exception!(
    mmkit,
    CorruptError,
    Error,
    "A file or segment is damaged: a bad header, a checksum mismatch, a file truncated under its mapping."
);

/// Which Python exception an error becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `OSError(errno, ...)`, which CPython maps to its subclass.
    Os(i32),
    /// `ValueError`.
    Value,
    /// `mmkit.CorruptError`.
    Corrupt,
    /// `KeyError`: a name that does not exist (a table).
    Key,
    /// `TypeError`: a named object stored with another type.
    Type,
    /// `MemoryError`: a heap that may not grow any more.
    Memory,
    /// `RuntimeError`: a lock the calling thread already holds.
    Runtime,
    /// `mmkit.Error`.
    Other,
}

/// An error that knows which Python exception it is.
pub(crate) trait Classify: std::fmt::Display {
    fn kind(&self) -> Kind;
}

/// The errno an I/O error stands for, or `ValueError` for invalid input.
fn io_kind(e: &io::Error) -> Kind {
    if let Some(errno) = e.raw_os_error() {
        return Kind::Os(errno);
    }
    match e.kind() {
        io::ErrorKind::NotFound => Kind::Os(libc::ENOENT),
        io::ErrorKind::PermissionDenied => Kind::Os(libc::EACCES),
        io::ErrorKind::AlreadyExists => Kind::Os(libc::EEXIST),
        io::ErrorKind::IsADirectory => Kind::Os(libc::EISDIR),
        io::ErrorKind::NotADirectory => Kind::Os(libc::ENOTDIR),
        io::ErrorKind::WouldBlock => Kind::Os(libc::EAGAIN),
        io::ErrorKind::StorageFull => Kind::Os(libc::ENOSPC),
        io::ErrorKind::InvalidInput => Kind::Value,
        _ => Kind::Other,
    }
}

impl Classify for io::Error {
    fn kind(&self) -> Kind {
        io_kind(self)
    }
}

impl Classify for mmkit_region::Error {
    fn kind(&self) -> Kind {
        use mmkit_region::Error as E;
        match self {
            E::Io { source, .. } | E::NoSpace { source, .. } => io_kind(source),
            E::IsDirectory { .. } => Kind::Os(libc::EISDIR),
            E::OutOfBounds { .. }
            | E::ZeroLength { .. }
            | E::ReadOnly { .. }
            | E::Misaligned { .. }
            | E::InvalidName { .. }
            | E::Invalid { .. } => Kind::Value,
            E::Poisoned { .. } => Kind::Corrupt,
            _ => Kind::Other,
        }
    }
}

impl Classify for mmkit_array::Error {
    fn kind(&self) -> Kind {
        use mmkit_array::Error as E;
        match self {
            E::Region(e) => e.kind(),
            E::Io { source, .. } => io_kind(source),
            E::NotNpy { .. } | E::Header { .. } | E::Truncated { .. } => Kind::Corrupt,
            // flock(LOCK_NB) refused: what fcntl.flock raises, BlockingIOError.
            E::Locked { .. } => Kind::Os(libc::EWOULDBLOCK),
            E::UnsupportedDtype { .. }
            | E::DtypeMismatch { .. }
            | E::Misaligned { .. }
            | E::Shape { .. }
            | E::OutOfBounds { .. }
            | E::BufferLength { .. }
            | E::ReadOnly { .. }
            | E::Unsupported { .. } => Kind::Value,
            _ => Kind::Other,
        }
    }
}

impl Classify for mmkit_queue::Error {
    fn kind(&self) -> Kind {
        use mmkit_queue::Error as E;
        match self {
            E::Io { source, .. } => io_kind(source),
            E::Region { source, .. } => source.kind(),
            E::NotAQueue { .. } => Kind::Os(libc::ENOENT),
            E::AlreadyExists { .. } => Kind::Os(libc::EEXIST),
            E::BadMagic { .. }
            | E::UnsupportedVersion { .. }
            | E::Corrupt { .. }
            | E::CorruptRecord { .. } => Kind::Corrupt,
            E::MessageTooLarge { .. }
            | E::BufferTooSmall { .. }
            | E::InvalidOption(_)
            | E::InvalidName { .. }
            | E::NoSuchIndex { .. }
            | E::Unsupported(_) => Kind::Value,
            _ => Kind::Other,
        }
    }
}

impl Classify for mmkit_sync::Error {
    fn kind(&self) -> Kind {
        use mmkit_sync::Error as E;
        match self {
            E::Region(e) => e.kind(),
            E::Timeout { .. } => Kind::Os(libc::ETIMEDOUT),
            E::WouldDeadlock { .. } => Kind::Runtime,
            E::Misaligned { .. } | E::Inconsistent { .. } => Kind::Corrupt,
            E::Invalid { .. } => Kind::Value,
            _ => Kind::Other,
        }
    }
}

/// A file that is not what was expected: `IsADirectoryError` for a
/// directory, `CorruptError` otherwise.
fn not_a_file_of_ours(path: &std::path::Path) -> Kind {
    if path.is_dir() { Kind::Os(libc::EISDIR) } else { Kind::Corrupt }
}

impl Classify for mmkit_kv::Error {
    fn kind(&self) -> Kind {
        use mmkit_kv::Error as E;
        match self {
            E::Io { source, .. } | E::NoSpace { source, .. } => io_kind(source),
            E::Region { source, .. } => source.kind(),
            E::Sync { source, .. } => source.kind(),
            E::NotADatabase { path, .. } => not_a_file_of_ours(path),
            E::UnsupportedVersion { .. } | E::Corrupt { .. } | E::NoValidCommit { .. } => Kind::Corrupt,
            E::AlreadyExists { .. } => Kind::Os(libc::EEXIST),
            E::NotFound { .. } => Kind::Os(libc::ENOENT),
            E::NoSuchTable { .. } => Kind::Key,
            E::Timeout { .. } => Kind::Os(libc::ETIMEDOUT),
            E::ReadOnly { .. }
            | E::KeyTooLong { .. }
            | E::InvalidName { .. }
            | E::Decode { .. }
            | E::InvalidOption(_) => Kind::Value,
            _ => Kind::Other,
        }
    }
}

impl Classify for mmkit_heap::Error {
    fn kind(&self) -> Kind {
        use mmkit_heap::Error as E;
        match self {
            E::Io { source, .. } => io_kind(source),
            E::Region { source, .. } => source.kind(),
            E::Sync { source, .. } => source.kind(),
            E::NotAHeap { path, .. } => not_a_file_of_ours(path),
            E::AlreadyExists { .. } => Kind::Os(libc::EEXIST),
            E::Incompatible { .. } | E::Corrupt { .. } => Kind::Corrupt,
            E::OutOfMemory { .. } => Kind::Memory,
            E::TypeMismatch { .. } => Kind::Type,
            E::Removed { .. } | E::InvalidName { .. } | E::Invalid { .. } => Kind::Value,
            _ => Kind::Other,
        }
    }
}

/// The exception for `err`, raised by the operation `op` on `path`.
pub(crate) fn raise(op: &str, path: &str, err: &dyn Classify) -> PyErr {
    let text = err.to_string();
    let message = if path.is_empty() || text.contains(path) {
        format!("{op}: {text}")
    } else {
        format!("{op} {path}: {text}")
    };
    exception(err.kind(), message)
}

/// The Python exception of `kind` with `message`.
pub(crate) fn exception(kind: Kind, message: String) -> PyErr {
    match kind {
        Kind::Os(errno) => PyOSError::new_err((errno, message)),
        Kind::Value => PyValueError::new_err(message),
        Kind::Corrupt => CorruptError::new_err(message),
        Kind::Key => PyKeyError::new_err(message),
        Kind::Type => PyTypeError::new_err(message),
        Kind::Memory => PyMemoryError::new_err(message),
        Kind::Runtime => PyRuntimeError::new_err(message),
        Kind::Other => Error::new_err(message),
    }
}

/// Adds the operation and path to a crate error on its way to Python.
pub(crate) trait Context<T> {
    fn context(self, op: &str, path: &str) -> pyo3::PyResult<T>;
}

impl<T, E: Classify> Context<T> for Result<T, E> {
    fn context(self, op: &str, path: &str) -> pyo3::PyResult<T> {
        self.map_err(|e| raise(op, path, &e))
    }
}

/// `ValueError("{op} {path}: {reason}")` for a bad argument.
pub(crate) fn value_error(op: &str, path: &str, reason: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(format!("{op} {path}: {reason}"))
}
