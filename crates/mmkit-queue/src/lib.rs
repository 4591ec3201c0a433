//! A persistent, cross-process, multi-producer message queue on
//! memory-mapped segment files.
//!
//! A queue is a directory holding a `meta` file and preallocated segment
//! files mapped `MAP_SHARED`. A producer alone on the queue holds a lease
//! and appends with plain stores (no locked instruction, no fence per
//! message); producers in several threads or processes claim space with
//! one atomic `fetch_add` on the active segment's tail. Either way the
//! payload is copied in and published with one Release store; readers
//! follow with one Acquire load and a CRC32C check, and park on a futex
//! when idle (paying, with `membarrier`, for the fence producers skip). A
//! producer killed between claim and commit is detected by liveness (pid
//! plus start time) and its whole claim, whatever its size, turned into
//! one padding frame by the next reader that meets it, on any read path.
//! The format is in `docs/queue-format.md`.
//!
//! ```
//! use mmkit_queue::{Queue, Start};
//! use std::time::Duration;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let queue = Queue::options().create(true).segment_size(1 << 20).open(dir.path().join("q"))?;
//!
//! let mut producer = queue.producer()?;
//! let first = producer.append(b"hello")?;
//! let mut claim = producer.claim(5)?; // zero-copy: fill in place
//! claim.copy_from_slice(b"world");
//! claim.commit()?;
//!
//! let mut reader = queue.reader(Start::Beginning)?;
//! let record = reader.next_timeout(Some(Duration::from_secs(1)))?.expect("a message");
//! assert_eq!((record.index(), record.payload()), (first, &b"hello"[..]));
//!
//! // A named cursor remembers its position across restarts.
//! let mut cursor = queue.cursor("billing")?;
//! while cursor.next()?.is_some() {}
//! cursor.commit()?;
//! assert_eq!(queue.cursor("billing")?.position(), cursor.position());
//! # Ok(())
//! # }
//! ```

mod asyncio;
mod clock;
mod cursor;
mod dropbehind;
mod error;
pub mod format;
#[doc(hidden)]
pub mod fuzzing;
mod group;
mod idle;
mod lease;
mod meta;
mod ops;
mod producer;
mod queue;
mod reader;
mod recovery;
mod recycle;
mod segment;

pub use cursor::{Cursor, CursorInfo};
pub use dropbehind::DEFAULT_CACHE_BEHIND;
pub use error::{Error, Result};
pub use format::{MAX_META, index_segment, index_seq, make_index};
pub use group::GroupMember;
pub use mmkit_sync::WaitPolicy;
pub use ops::{
    CheckReport, ClaimInfo, CorruptInfo, GroupInfo, QueueStat, RecordInfo, RetentionReport, SegmentInfo,
};
pub use producer::{Claim, Producer};
pub use queue::{Durability, OpenOptions, Queue, Retention, Start};
pub use reader::{Copied, PendingClaim, Reader, Record};

/// Runs `work` on a new background thread named `name`; false if the
/// thread could not be created (a thread limit, out of memory), which
/// callers treat as "no help this time" rather than a panic, as
/// `std::thread::spawn` would.
pub(crate) fn background(name: &str, work: impl FnOnce() + Send + 'static) -> bool {
    std::thread::Builder::new().name(name.into()).spawn(work).is_ok()
}

/// Deletes `path` on a background thread when one starts (else here):
/// removing the last name of a segment file frees its blocks, which on a
/// file system mounted with `discard` waits for the device (see
/// `idle::prune`), and the callers are producers and readers at a
/// rollover.
pub(crate) fn remove_later(path: std::path::PathBuf) {
    let p = path.clone();
    if !background("mmkit-close", move || drop(std::fs::remove_file(p))) {
        let _ = std::fs::remove_file(path);
    }
}

/// Whether `path` is gone within 10 s: for files that `remove_later`
/// deletes on a background thread.
#[cfg(test)]
pub(crate) fn gone_soon(path: &std::path::Path) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while path.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    !path.exists()
}
