//! # mmkit-heap: containers shared between processes
//!
//! A heap in a file or in POSIX shared memory that several processes use
//! at once, growable while they use it, and robust against any of them
//! being killed at any instruction. Boost.Interprocess's job, without its
//! offline-only growth, its segments bricked by a crash inside `allocate`,
//! or its missing format header.
//!
//! - [`Heap`]: the segment. A versioned header (magic, version, layout
//!   fingerprint), an allocator (size classes up to 8 KiB, page runs
//!   beyond), a registry of named objects, and online growth: the address
//!   range is reserved once, the file grows with `fallocate`, and other
//!   processes map the new range the first time they touch it.
//! - [`Heap::find_or_init`], [`Heap::find`], [`Heap::remove`]: named plain
//!   data ([`ShmBox`]); the initializer runs in exactly one process.
//! - [`ShmVec`], [`ShmString`], [`ShmHashMap`] (concurrent; lookups take
//!   no lock), and typed [`Offset`]s with [`Heap::alloc`] for your own
//!   structures.
//!
//! Every multi-step update is a transaction on an undo log owned by a
//! robust mutex: when a process dies holding the lock, the next locker
//! rolls its update back within milliseconds. Every offset and length read
//! from the segment is checked: garbage written by a buggy or hostile
//! process gives errors, never undefined behaviour. `docs/heap-format.md`
//! describes the format and the recovery rules.
//!
//! ```
//! use mmkit_heap::Heap;
//! let dir = tempfile::tempdir()?;
//! let heap = Heap::create(dir.path().join("shared.heap"), 1 << 20)?;
//!
//! let hits = heap.map::<str, u64>("hits")?;
//! hits.insert("/index.html", &1)?;
//! assert_eq!(hits.get("/index.html")?, Some(1));
//!
//! let log = heap.vec::<u64>("log")?;
//! log.push(&42)?;
//!
//! // Another process (here: another handle) sees the same objects.
//! let other = Heap::open(dir.path().join("shared.heap"))?;
//! assert_eq!(other.vec::<u64>("log")?.to_vec()?, [42]);
//! assert!(other.check(false)?.is_clean());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#[cfg(not(target_pointer_width = "64"))]
compile_error!("mmkit-heap supports 64-bit targets only");

mod alloc;
mod boxed;
mod check;
mod crash;
mod error;
#[doc(hidden)]
pub mod fuzzing;
#[doc(hidden)]
pub mod layout;
mod map;
mod offset;
mod registry;
mod segment;
mod types;
mod vec;

pub use alloc::block_size;
pub use boxed::ShmBox;
pub use check::{CheckReport, HeapStat, ObjectStat};
pub use error::{Error, Result};
pub use map::ShmHashMap;
pub use offset::Offset;
pub use registry::{MAX_NAME, Object, ObjectInfo};
pub use segment::{DEFAULT_MAX_SIZE, Heap, HeapOptions};
pub use types::{Bytes, ShmType, TypeDesc, hash_bytes};
pub use vec::{ShmString, ShmVec};
