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
    match opts.open(path) {
        Ok(f) => Ok(f),
        Err(e) if e.raw_os_error() == Some(libc::EISDIR) => {
            Err(Error::IsDirectory { op, path: path.to_path_buf() })
        }
        Err(e) => Err(Error::io(op, Some(path), e)),
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
