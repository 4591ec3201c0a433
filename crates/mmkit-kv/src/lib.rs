//! # mmkit-kv: an embedded key-value store that several processes share
//!
//! A copy-on-write B+tree of 4 KiB pages in one file, mapped into every
//! process inside a large reserved address range, so it grows without a
//! mapsize and without remapping. Any number of readers in any number of
//! processes read lock-free from a registered snapshot; one writer at a
//! time commits, behind a robust cross-process mutex whose dead holder is
//! detected by liveness. Every page is checksummed (CRC32C, kept in its
//! parent, Merkle style), the four meta pages too. A durable commit costs
//! one `fdatasync`, of a redo log (`<db>-log`) that receives a sequential
//! copy of the pages the commit wrote, so the data file itself is synced
//! only once per log's worth of commits; a process crash needs no replay,
//! a power loss replays the log. The format is in `docs/kv-format.md`.
//!
//! ```
//! use mmkit_kv::{Db, Durability};
//! # fn main() -> Result<(), mmkit_kv::Error> {
//! # let dir = tempfile::tempdir().unwrap();
//! let db = Db::options().create(true).durability(Durability::Immediate).open(dir.path().join("app.kv"))?;
//!
//! let mut w = db.write()?;
//! let mut users = w.table("users")?;
//! users.put("ada", "lovelace")?;
//! users.put("alan", "turing")?;
//! w.commit()?;
//!
//! let r = db.read()?; // a snapshot: later commits do not change it
//! let users = r.table("users")?;
//! assert_eq!(users.get("ada")?, Some(&b"lovelace"[..])); // zero-copy
//! let names: Vec<_> = users.prefix("a").rev().map(|e| e.map(|(k, _)| k)).collect::<Result<_, _>>()?;
//! assert_eq!(names, [&b"alan"[..], b"ada"]);
//! # Ok(())
//! # }
//! ```

mod db;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod kv;
mod lock;
mod log;
mod meta;
mod ops;
mod page;
mod store;
mod tree;
mod write;

pub use db::{
    DEFAULT_LOG_SIZE, DEFAULT_RESERVE, DEFAULT_TABLE, Db, Durability, Iter, MAX_TABLE_NAME, Options, ReadTxn,
    Table, lock_path, log_path, prefix_end,
};
pub use error::{Error, Result};
pub use kv::{Codec, Kv, KvValue, Pod, Typed};
pub use lock::READER_SLOTS;
pub use meta::FORMAT_VERSION;
pub use ops::{Change, CheckReport, LogChain, Snapshot, Stat, Watch};
pub use page::{MAX_KEY_LEN, PAGE};
pub use write::{TableMut, WriteTxn};
