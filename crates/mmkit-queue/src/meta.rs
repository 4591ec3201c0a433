//! The mapped `meta` file: header, shared counters and the tables.

use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use mmkit_region::{Access, MapOptions, Mapping, Mode};
use mmkit_sync::{EventCount, MutexGuard, Notifier, RobustMutex};

use crate::error::{Error, Result};
use crate::format::*;

const _: () = assert!(RobustMutex::SIZE <= 64 && META_ADMIN_LOCK % RobustMutex::ALIGN as u64 == 0);

/// The mapped meta file.
pub(crate) struct Meta {
    map: Mapping,
    pub(crate) path: PathBuf,
    pub(crate) header: MetaHeader,
    /// The queue's id (see [`Meta::queue_id`]).
    pub(crate) id: u128,
}

impl Meta {
    /// Creates the meta file in `dir` (temp file + `RENAME_NOREPLACE`).
    pub(crate) fn create(dir: &Path, header: &MetaHeader) -> Result<()> {
        let path = dir.join("meta");
        let tmp = dir.join(format!(".tmp-meta-{}", std::process::id()));
        let made = (|| {
            let file = crate::segment::create_exclusive(&tmp, "create meta")?;
            rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, META_SIZE as u64)
                .map_err(|e| Error::io("preallocate meta", &tmp, e))?;
            file.write_all_at(&header.encode(), 0).map_err(|e| Error::io("write meta", &tmp, e))?;
            file.write_all_at(&encode_queue_id(new_queue_id(&tmp)?), META_QUEUE_ID)
                .map_err(|e| Error::io("write meta", &tmp, e))?;
            file.sync_all().map_err(|e| Error::io("fsync meta", &tmp, e))?;
            crate::segment::rename_noreplace(&tmp, &path).map_err(|e| {
                if e == rustix::io::Errno::EXIST {
                    Error::AlreadyExists { path: dir.into() }
                } else {
                    Error::io("rename meta into place", &path, e)
                }
            })
        })();
        let _ = std::fs::remove_file(&tmp);
        made
    }

    /// Opens and validates the meta file in `dir`.
    pub(crate) fn open(dir: &Path) -> Result<Meta> {
        let path = dir.join("meta");
        let file = match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(if dir.is_dir() {
                    Error::NotAQueue { path: dir.into() }
                } else {
                    Error::io("open queue directory", dir, e)
                });
            }
            Err(e) => return Err(Error::io("open meta", &path, e)),
        };
        let len = file.metadata().map_err(|e| Error::io("stat meta", &path, e))?.len();
        let mut head = vec![0u8; 64.min(len as usize)];
        file.read_exact_at(&mut head, 0).map_err(|e| Error::io("read meta", &path, e))?;
        let header = MetaHeader::parse(&head, &path)?;
        if len < META_SIZE as u64 {
            return Err(Error::corrupt(&path, format!("meta file is {len} bytes, expected {META_SIZE}")));
        }
        let map = MapOptions::new()
            .len(META_SIZE)
            .mode(Mode::ReadWrite)
            .map_file_at(&file, Some(&path))
            .map_err(Error::region("map meta"))?;
        let mut meta = Meta { map, path, header, id: 0 };
        meta.id = meta.queue_id()?;
        Ok(meta)
    }

    /// The queue's id, checked against its CRC.
    pub(crate) fn queue_id(&self) -> Result<u128> {
        let mut b = [0u8; 20];
        self.map.read_at(META_QUEUE_ID, &mut b).map_err(Error::region("read queue id"))?;
        decode_queue_id(&b).ok_or_else(|| Error::corrupt(&self.path, "queue id checksum mismatch"))
    }

    /// The single-producer lease word.
    pub(crate) fn lease(&self) -> Result<&AtomicU64> {
        self.u64_at(META_LEASE)
    }

    /// A `u64` word of the meta file; offsets are compile-time layout
    /// constants inside `META_SIZE`, so failure means a layout bug.
    pub(crate) fn u64_at(&self, offset: u64) -> Result<&AtomicU64> {
        self.map.atomic_u64(offset).map_err(Error::region("meta word"))
    }

    pub(crate) fn u32_at(&self, offset: u64) -> Result<&AtomicU32> {
        self.map.atomic_u32(offset).map_err(Error::region("meta word"))
    }

    pub(crate) fn active(&self) -> Result<&AtomicU64> {
        self.u64_at(META_ACTIVE)
    }

    pub(crate) fn first(&self) -> Result<&AtomicU64> {
        self.u64_at(META_FIRST)
    }

    pub(crate) fn notifier(&self) -> Result<&Notifier> {
        Notifier::at(&self.map, META_NOTIFIER).map_err(Error::sync("meta notifier"))
    }

    pub(crate) fn durable(&self) -> Result<&EventCount> {
        EventCount::at(&self.map, META_DURABLE).map_err(Error::sync("meta durable watermark"))
    }

    /// Takes the admin lock, repairing nothing: every table update is
    /// written so that a half-done one is harmless (a slot is only marked
    /// used after its contents are in place).
    pub(crate) fn admin(&self) -> Result<MutexGuard<'_>> {
        let m = RobustMutex::at(&self.map, META_ADMIN_LOCK).map_err(Error::sync("meta admin lock"))?;
        // A live holder keeps it for microseconds; a corrupt lock word naming
        // some unrelated live process must not hang us for ever.
        let guard = m
            .lock_timeout(std::time::Duration::from_secs(10))
            .map_err(Error::sync("lock meta admin lock"))?
            .ok_or_else(|| Error::corrupt(&self.path, "admin lock held for over 10 s"))?
            .into_guard();
        guard.make_consistent();
        Ok(guard)
    }

    /// The name in a named table slot (a cursor slot or a group header:
    /// state `u32` at +0, 1 = in use; name length `u32` at +4; name bytes
    /// at +16), if the slot is in use and its name valid UTF-8 in range.
    pub(crate) fn slot_name(&self, slot: u64) -> Result<Option<String>> {
        if self.u32_at(slot)?.load(Ordering::Acquire) != 1 {
            return Ok(None);
        }
        let len = self.u32_at(slot + 4)?.load(Ordering::Acquire);
        if len as usize > MAX_NAME_LEN || len == 0 {
            return Ok(None);
        }
        let mut buf = vec![0u8; len as usize];
        if self.map.read_at(slot + 16, &mut buf).is_err() {
            return Ok(None);
        }
        Ok(String::from_utf8(buf).ok())
    }

    /// The slot among `slots` (named-table slots, see [`Meta::slot_name`])
    /// in use under `name`.
    pub(crate) fn find_named(&self, slots: impl Iterator<Item = u64>, name: &str) -> Result<Option<u64>> {
        for slot in slots {
            if self.slot_name(slot)?.as_deref() == Some(name) {
                return Ok(Some(slot));
            }
        }
        Ok(None)
    }

    /// The slot among `slots` named `name`, or else the first free one,
    /// filled under the admin lock: name, its length, the `u64` at +8 set
    /// to `position()`, then `init(slot)`, and only then marked in use, so
    /// a half-done fill is harmless. `None` when every slot is taken.
    pub(crate) fn find_or_fill_named<I: Iterator<Item = u64> + Clone>(
        &self,
        slots: I,
        name: &str,
        position: impl FnOnce() -> Result<u64>,
        init: impl FnOnce(u64) -> Result<()>,
    ) -> Result<Option<u64>> {
        if let Some(slot) = self.find_named(slots.clone(), name)? {
            return Ok(Some(slot));
        }
        let _guard = self.admin()?;
        if let Some(slot) = self.find_named(slots.clone(), name)? {
            return Ok(Some(slot));
        }
        for slot in slots {
            let state = self.u32_at(slot)?;
            if state.load(Ordering::Acquire) == 1 {
                continue;
            }
            self.map.write_at(slot + 16, name.as_bytes()).map_err(Error::region("write name"))?;
            self.u32_at(slot + 4)?.store(name.len() as u32, Ordering::Release);
            self.u64_at(slot + 8)?.store(position()?, Ordering::Release);
            init(slot)?;
            state.store(1, Ordering::Release);
            return Ok(Some(slot));
        }
        Ok(None)
    }

    /// `msync` the whole meta file.
    pub(crate) fn flush(&self) -> Result<()> {
        self.map.flush().map_err(Error::region("msync meta"))
    }

    /// Current active segment number.
    pub(crate) fn active_segment(&self) -> Result<u64> {
        Ok(self.active()?.load(Ordering::Acquire))
    }

    /// Lowest retained segment number.
    pub(crate) fn first_segment(&self) -> Result<u64> {
        Ok(self.first()?.load(Ordering::Acquire))
    }
}

/// 16 random bytes for a new queue's id.
fn new_queue_id(path: &Path) -> Result<u128> {
    let mut b = [0u8; 16];
    let mut filled = 0;
    while filled < b.len() {
        filled += rustix::rand::getrandom(&mut b[filled..], rustix::rand::GetRandomFlags::empty())
            .map_err(|e| Error::io("choose queue id", path, e))?;
    }
    Ok(u128::from_le_bytes(b))
}

/// The id's bytes followed by their CRC32C.
fn encode_queue_id(id: u128) -> [u8; 20] {
    let mut b = [0u8; 20];
    b[..16].copy_from_slice(&id.to_le_bytes());
    let crc = crc32c::crc32c(&b[..16]);
    b[16..].copy_from_slice(&crc.to_le_bytes());
    b
}

/// The id in `b` (as written by `encode_queue_id`), if its CRC matches.
fn decode_queue_id(b: &[u8; 20]) -> Option<u128> {
    let mut id = [0u8; 16];
    id.copy_from_slice(&b[..16]);
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&b[16..]);
    (crc32c::crc32c(&id) == u32::from_le_bytes(crc)).then(|| u128::from_le_bytes(id))
}

/// Validates a cursor or group name.
pub(crate) fn check_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        "empty"
    } else if name.len() > MAX_NAME_LEN {
        "longer than 48 bytes"
    } else if name.contains('\0') {
        "contains a NUL byte"
    } else {
        return Ok(());
    };
    Err(Error::InvalidName { name: name.into(), reason })
}
