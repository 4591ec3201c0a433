//! # mmkit
//!
//! A toolkit for memory-mapped data. This facade re-exports each layer
//! behind a cargo feature of the same name:
//!
//! - [`region`] (feature `region`): mappings, growable files, named shared
//!   memory, page-cache residency, SIGBUS safety;
//! - `sync` (feature `sync`): futex wait/notify, event counts, robust
//!   mutexes and process liveness inside mappings;
//! - `queue` (feature `queue`): the persistent multi-process queue;
//! - `array` (feature `array`): numpy-compatible typed arrays;
//! - `heap` (feature `heap`): containers shared between processes;
//! - `kv` (feature `kv`): the embedded multi-process key-value store;
//! - `nats` (feature `nats`, not default): queues mirrored to NATS
//!   JetStream and back, exactly once (mmkit-bridge).
//!
//! ```
//! use mmkit::region::{Access, Mapping, Share};
//! let map = Mapping::anonymous(4096, Share::Private)?;
//! map.write_at(0, b"mmkit")?;
//! let mut buf = [0u8; 5];
//! map.read_at(0, &mut buf)?;
//! assert_eq!(&buf, b"mmkit");
//! # Ok::<(), mmkit::region::Error>(())
//! ```

#[cfg(feature = "region")]
pub use mmkit_region as region;

#[cfg(feature = "sync")]
pub use mmkit_sync as sync;

#[cfg(feature = "queue")]
pub use mmkit_queue as queue;

#[cfg(feature = "array")]
pub use mmkit_array as array;

#[cfg(feature = "heap")]
pub use mmkit_heap as heap;

#[cfg(feature = "nats")]
pub use mmkit_bridge as nats;

/// The README's Rust examples, compiled and run as doctests of this crate
/// so that they stay correct.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
#[cfg(feature = "kv")]
pub use mmkit_kv as kv;
