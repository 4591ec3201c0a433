//! # mmkit-region: the mapping layer of mmkit
//!
//! Safe, complete memory mapping on Linux, built on [`rustix`]:
//!
//! - [`Mapping`]: file ranges (any offset, any length) read-only, shared
//!   read-write or copy-on-write, and anonymous memory, with flush,
//!   advise, lock, populate, protect and huge pages;
//! - [`GrowableFile`]: a file that grows inside one reserved address range,
//!   so pointers into it stay valid, and with `fallocate` so a full disk is
//!   an error at grow time rather than a SIGBUS later;
//! - [`shm`] and [`memfd`]: POSIX named shared memory and sealed memfds;
//! - [`residency`]: which pages of a file sit in the page cache, touch and
//!   evict, as vmtouch does;
//! - [`sigbus`]: a SIGBUS in a registered mapping becomes
//!   [`Error::Poisoned`] instead of killing the process.
//!
//! Memory that another process may write is never exposed as `&[u8]` in
//! safe code: the [`Access`] trait copies in and out with volatile
//! accesses and hands out atomics at checked offsets.
//!
//! `docs/region.md` in the repository describes the mechanisms (tail-page
//! semantics, growth, the SIGBUS handler and its limits, shm naming).
//!
//! ```
//! use mmkit_region::{Access, MapOptions, Mode};
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("data");
//! std::fs::write(&path, vec![0u8; 8192])?;
//!
//! let map = MapOptions::new().mode(Mode::ReadWrite).map_path(&path)?;
//! map.write_at(100, b"persisted")?;
//! map.atomic_u64(8)?.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
//! map.flush()?;
//! drop(map);
//!
//! let bytes = std::fs::read(&path)?;
//! assert_eq!(&bytes[100..109], b"persisted");
//! assert_eq!(bytes[8], 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

// Atomic loads of 8 bytes on read-only memory (`Access::load_u64`) and
// address-range arithmetic assume 64-bit pointers.
#[cfg(not(target_pointer_width = "64"))]
compile_error!("mmkit-region supports 64-bit targets only");

mod access;
mod error;
mod file;
mod growable;
mod mapping;
pub mod memfd;
pub mod residency;
pub mod shm;
pub mod sigbus;

pub use access::Access;
pub use error::{Error, Result};
pub use growable::GrowableFile;
pub use mapping::{Advice, HugePages, MapOptions, Mapping, Mode, Protection, Share, UncheckedAdvice};

/// The system page size in bytes.
pub fn page_size() -> usize {
    rustix::param::page_size()
}
