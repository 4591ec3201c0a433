//! Small helpers for opening files the way mappings need them.

use std::fs::{File, OpenOptions};
use std::os::fd::BorrowedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::error::{Error, Result};

/// Opens `path` read-only or read-write, turning `EISDIR` and the like into
/// this crate's errors.
pub(crate) fn open_for(path: &Path, read_only: bool, op: &'static str) -> Result<File> {
    let mut opts = OpenOptions::new();
    opts.read(true).write(!read_only).custom_flags(libc::O_CLOEXEC);
    opts.open(path).map_err(|e| open_error(path, op, e))
}

/// This crate's error for a failed `open` of `path`: `EISDIR` becomes
/// [`Error::IsDirectory`], anything else [`Error::Io`].
pub(crate) fn open_error(path: &Path, op: &'static str, e: std::io::Error) -> Error {
    if e.raw_os_error() == Some(libc::EISDIR) {
        Error::IsDirectory { op, path: path.to_path_buf() }
    } else {
        Error::io(op, Some(path), e)
    }
}

/// Fails with [`Error::ReadOnly`] unless `fd` was opened for writing.
pub(crate) fn require_fd_writable(fd: BorrowedFd<'_>, path: Option<&Path>, op: &'static str) -> Result<()> {
    let flags = rustix::fs::fcntl_getfl(fd).map_err(|e| Error::io("fcntl(F_GETFL)", path, e))?;
    let mode = flags & rustix::fs::OFlags::RWMODE;
    if mode == rustix::fs::OFlags::RDWR || mode == rustix::fs::OFlags::WRONLY {
        Ok(())
    } else {
        Err(Error::ReadOnly { op, path: path.map(Path::to_path_buf) })
    }
}

/// `fstat`s `fd`, refusing a directory (which cannot be mapped) with
/// [`Error::IsDirectory`].
pub(crate) fn stat_not_dir(
    fd: BorrowedFd<'_>,
    path: Option<&Path>,
    op: &'static str,
) -> Result<rustix::fs::Stat> {
    let stat = rustix::fs::fstat(fd).map_err(|e| Error::io("fstat", path, e))?;
    if rustix::fs::FileType::from_raw_mode(stat.st_mode) == rustix::fs::FileType::Directory {
        return Err(Error::IsDirectory { op, path: path.map(Path::to_path_buf).unwrap_or_default() });
    }
    Ok(stat)
}
