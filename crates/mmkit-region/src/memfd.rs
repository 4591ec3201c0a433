//! Anonymous memory files (`memfd_create(2)`) with seals, for handing
//! shared memory to child processes.
//!
//! A memfd has no name in any directory; it lives as long as a descriptor
//! or mapping refers to it. Seals make promises the kernel enforces for
//! every holder of the descriptor: after [`Seals::SHRINK`] nobody can
//! truncate it, so mappings of it can never SIGBUS.
//!
//! ```
//! use mmkit_region::{Access, Mode, memfd::{Memfd, Seals}};
//! let fd = Memfd::create("example", 8192)?;
//! fd.seal(Seals::SHRINK | Seals::GROW)?;
//! assert!(fd.seals()?.contains(Seals::SHRINK));
//! assert!(fd.set_len(0).is_err()); // sealed: the kernel refuses
//! let map = fd.map(Mode::ReadWrite)?;
//! map.write_at(0, b"shared with children")?;
//! # Ok::<(), mmkit_region::Error>(())
//! ```

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;

use rustix::fs::{MemfdFlags, SealFlags};

use crate::error::{Error, Result};
use crate::mapping::{MapOptions, Mapping, Mode};

/// Longest name `memfd_create` accepts (the kernel prefixes `memfd:`).
pub const NAME_MAX: usize = 249;

bitflags::bitflags! {
    /// File seals (`F_ADD_SEALS`, see `memfd_create(2)`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Seals: u32 {
        /// `F_SEAL_SHRINK`: the size can no longer shrink.
        const SHRINK = 1;
        /// `F_SEAL_GROW`: the size can no longer grow.
        const GROW = 2;
        /// `F_SEAL_WRITE`: the contents can no longer change (fails while a
        /// writable shared mapping exists).
        const WRITE = 4;
        /// `F_SEAL_FUTURE_WRITE`: no new writable mappings or writes, while
        /// existing writable mappings keep working.
        const FUTURE_WRITE = 8;
        /// `F_SEAL_SEAL`: no further seals can be added.
        const SEAL = 16;
    }
}

impl Seals {
    fn to_raw(self) -> SealFlags {
        let mut raw = SealFlags::empty();
        for (ours, theirs) in Self::PAIRS {
            if self.contains(ours) {
                raw |= theirs;
            }
        }
        raw
    }

    fn from_raw(raw: SealFlags) -> Seals {
        let mut ours = Seals::empty();
        for (seal, theirs) in Self::PAIRS {
            if raw.contains(theirs) {
                ours |= seal;
            }
        }
        ours
    }

    const PAIRS: [(Seals, SealFlags); 5] = [
        (Seals::SHRINK, SealFlags::SHRINK),
        (Seals::GROW, SealFlags::GROW),
        (Seals::WRITE, SealFlags::WRITE),
        (Seals::FUTURE_WRITE, SealFlags::FUTURE_WRITE),
        (Seals::SEAL, SealFlags::SEAL),
    ];
}

/// A sealable anonymous memory file.
#[derive(Debug)]
pub struct Memfd {
    fd: OwnedFd,
    label: PathBuf,
}

impl Memfd {
    /// Creates a memfd of `len` bytes (close-on-exec, sealing allowed).
    /// `name` only shows up in `/proc/<pid>/fd` and in error messages.
    pub fn create(name: &str, len: u64) -> Result<Memfd> {
        if name.contains('\0') {
            return Err(Error::InvalidName {
                op: "memfd_create",
                name: name.into(),
                reason: "a name may not contain a NUL byte",
            });
        }
        if name.len() > NAME_MAX {
            return Err(Error::InvalidName {
                op: "memfd_create",
                name: name.into(),
                reason: "longer than 249 bytes",
            });
        }
        let label = PathBuf::from(format!("memfd:{name}"));
        let fd = rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
            .map_err(|e| Error::io("memfd_create", Some(&label), e))?;
        let memfd = Memfd { fd, label };
        memfd.set_len(len)?;
        Ok(memfd)
    }

    /// Adopts a descriptor received from a parent process (or any other
    /// descriptor of a regular memory file). Fails if it is not one.
    pub fn from_fd(fd: OwnedFd) -> Result<Memfd> {
        let label = PathBuf::from("memfd:(inherited)");
        let stat = rustix::fs::fstat(&fd).map_err(|e| Error::io("fstat", Some(&label), e))?;
        if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::RegularFile {
            return Err(Error::Invalid {
                op: "from_fd",
                path: Some(label),
                reason: "not a regular file".into(),
            });
        }
        Ok(Memfd { fd, label })
    }

    /// Adds seals. Fails with a permission error if [`Seals::SEAL`] is
    /// already set, or busy if [`Seals::WRITE`] is asked while a writable
    /// shared mapping exists.
    pub fn seal(&self, seals: Seals) -> Result<()> {
        rustix::fs::fcntl_add_seals(&self.fd, seals.to_raw())
            .map_err(|e| Error::io("add seals", Some(&self.label), e))
    }

    /// The seals in force.
    pub fn seals(&self) -> Result<Seals> {
        rustix::fs::fcntl_get_seals(&self.fd)
            .map(Seals::from_raw)
            .map_err(|e| Error::io("get seals", Some(&self.label), e))
    }

    /// Current size in bytes.
    pub fn len(&self) -> Result<u64> {
        let stat = rustix::fs::fstat(&self.fd).map_err(|e| Error::io("fstat", Some(&self.label), e))?;
        Ok(stat.st_size as u64)
    }

    /// True if the file has no bytes.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Resizes (`ftruncate`); refused by the kernel (`EPERM`) once sealed
    /// against the change.
    pub fn set_len(&self, len: u64) -> Result<()> {
        rustix::fs::ftruncate(&self.fd, len).map_err(|e| Error::io("ftruncate", Some(&self.label), e))
    }

    /// Maps the whole file.
    pub fn map(&self, mode: Mode) -> Result<Mapping> {
        MapOptions::new().mode(mode).map_file_at(&self.fd, Some(&self.label))
    }

    /// The descriptor, borrowed.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Gives up the descriptor.
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }
}

impl AsFd for Memfd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
