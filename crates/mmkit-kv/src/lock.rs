//! The lock file (`<db>-lock`): the writer mutex, the reader table, the
//! commit and durability counters. Its contents only matter while
//! processes have the database open; all-zero is a valid fresh state.
//!
//! Every open holds a shared `flock` on it for as long as the database is
//! open (the *open lock*). An opener that gets it exclusively is alone:
//! every token in the file is then stale or forged, and it resets them.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use mmkit_region::{Access, MapOptions, Mapping, Mode};
use mmkit_sync::{EventCount, ProcessToken, RobustMutex};
use rustix::fs::FlockOperation;
use rustix::io::Errno;

use crate::error::{Error, Result};

pub(crate) const LOCK_MAGIC: &[u8; 8] = b"mmkvlock";
/// 3: the redo log's chain and the flushed commit (words 208..240);
/// 2: every open holds the open lock (1 had none, so a version 1 process
/// could not be seen by a version 2 first opener).
pub(crate) const LOCK_VERSION: u32 = 3;
pub(crate) const LOCK_SIZE: usize = 65536;
const L_VERSION: usize = 8;
const L_BOOT: usize = 16;
const L_WRITER: usize = 64;
const L_SYNC: usize = 96;
const L_COMMITS: usize = 128;
const L_DURABLE_EV: usize = 144;
pub(crate) const L_CURRENT: usize = 160;
pub(crate) const L_DURABLE: usize = 168;
pub(crate) const L_SYNCING: usize = 176;
const L_HIGH_WATER: usize = 184;
pub(crate) const L_STATE: usize = 192;
pub(crate) const L_SHRINKS: usize = 200;
/// The last commit of the redo log's chain (0: no chain to extend).
pub(crate) const L_LOG_END: usize = 208;
/// Where the chain's next record goes in the log file.
pub(crate) const L_LOG_HEAD: usize = 216;
/// The commit the chain's first record follows (the data file held it).
pub(crate) const L_LOG_BASE: usize = 224;
/// The last commit whose pages, and every earlier commit's, are on disk
/// in the data file.
pub(crate) const L_FLUSHED: usize = 232;
const READERS: usize = 256;
const READER_SIZE: usize = 32;
/// Reader slots in the lock file.
pub const READER_SLOTS: usize = (LOCK_SIZE - READERS) / READER_SIZE;

/// Set in a reader slot's token while a reaper frees it: the rest is the
/// reaper's process token. No real token has it (it would be a start time
/// of 2^41 clock ticks, centuries), and `claim_reader` claims only free
/// (0) slots.
pub(crate) const REAPING: u64 = 1 << 63;

/// `state` once a process has recovered the database in this boot.
pub(crate) const STATE_READY: u64 = 1;

/// A packed commit reference: `txnid << 2 | meta slot`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct CommitRef(pub(crate) u64);

impl CommitRef {
    pub(crate) fn new(txnid: u64, slot: u64) -> CommitRef {
        CommitRef(txnid << 2 | slot)
    }
    pub(crate) fn txnid(self) -> u64 {
        self.0 >> 2
    }
    pub(crate) fn slot(self) -> u64 {
        self.0 & 3
    }
}

/// One reader slot as seen by `stat` and the writer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ReaderSlot {
    pub(crate) token: ProcessToken,
    pub(crate) txnid: u64,
    pub(crate) started_us: u64,
}

/// The mapped lock file.
pub(crate) struct LockFile {
    map: Mapping,
    pub(crate) path: PathBuf,
    /// Holds this open's open lock (closing it lets go).
    file: File,
}

/// Refuses a lock file shorter than [`LOCK_SIZE`] whose first bytes are
/// neither zero (fresh) nor the start of [`LOCK_MAGIC`], before it is
/// extended.
fn check_short_magic(file: &File, len: u64, path: &Path) -> Result<()> {
    let n = (len as usize).min(LOCK_MAGIC.len());
    let mut head = [0u8; 8];
    file.read_exact_at(&mut head[..n], 0).map_err(|e| Error::io("read lock header", path, e))?;
    if head[..n].iter().all(|&b| b == 0) || head[..n] == LOCK_MAGIC[..n] {
        return Ok(());
    }
    Err(Error::NotADatabase { path: path.to_path_buf(), kind: "lock", reason: "bad magic".into() })
}

impl LockFile {
    /// Opens (creating if needed) the lock file beside the database and
    /// takes the open lock: exclusively if no other open holds it (then
    /// the second value is true and the caller must [`share`](Self::share)
    /// once it has reset the file), else shared, waiting while a first
    /// opener resets it.
    pub(crate) fn open(path: &Path) -> Result<(LockFile, bool)> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(path)
            .map_err(|e| Error::io("open lock file", path, e))?;
        let len = file.metadata().map_err(|e| Error::io("stat lock file", path, e))?.len();
        if len < LOCK_SIZE as u64 {
            // Only a file of ours is grown: a foreign one stays as it was.
            check_short_magic(&file, len, path)?;
            // Extending is idempotent, so racing creators agree; the new
            // bytes are zero, every primitive's fresh state.
            file.set_len(LOCK_SIZE as u64).map_err(|e| Error::io("size lock file", path, e))?;
        }
        let map = MapOptions::new()
            .len(LOCK_SIZE)
            .mode(Mode::ReadWrite)
            .map_file_at(&file, Some(path))
            .map_err(Error::region("map lock file"))?;
        let lock = LockFile { map, path: path.to_path_buf(), file };
        let alone = lock.try_alone()?;
        if !alone {
            lock.share()?;
        }
        lock.check_header(alone)?;
        Ok((lock, alone))
    }

    /// Takes the open lock exclusively if nobody else holds it.
    fn try_alone(&self) -> Result<bool> {
        loop {
            match rustix::fs::flock(&self.file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => return Ok(true),
                Err(Errno::WOULDBLOCK) => return Ok(false),
                Err(Errno::INTR) => {}
                Err(e) => return Err(Error::io("flock lock file", &self.path, e)),
            }
        }
    }

    /// Holds the open lock shared: from exclusive, a conversion that lets
    /// go for a moment (`flock(2)`), which is harmless because an opener
    /// does it before it uses the database, so another first opener that
    /// slips in resets nothing in use.
    pub(crate) fn share(&self) -> Result<()> {
        loop {
            match rustix::fs::flock(&self.file, FlockOperation::LockShared) {
                Ok(()) => return Ok(()),
                Err(Errno::INTR) => {}
                Err(e) => return Err(Error::io("flock lock file", &self.path, e)),
            }
        }
    }

    /// Forgets every holder: the writer and sync mutexes (all-zero is
    /// free and consistent) and the reader slots. Only for an opener that
    /// is alone, when every token left is stale or forged.
    pub(crate) fn reset_owners(&self) -> Result<()> {
        for at in [L_WRITER, L_SYNC] {
            self.map.write_at(at as u64, &[0u8; 24]).map_err(Error::region("reset lock file"))?;
        }
        // Only below the high-water mark, where every scan looks: the
        // rest of the table stays untouched (no page faults on an open
        // after a crash). A token a hostile file left above it only ties
        // up its slot.
        let high = (self.word(L_HIGH_WATER).load(Ordering::SeqCst) as usize).min(READER_SLOTS);
        self.clear_slots(high);
        Ok(())
    }

    fn check_header(&self, alone: bool) -> Result<()> {
        let mut head = [0u8; 12];
        self.map.read_at(0, &mut head).map_err(Error::region("read lock header"))?;
        let version = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
        if head[..8] == [0; 8] && version == 0 {
            // Fresh: every creator writes the same bytes.
            self.map.write_at(0, LOCK_MAGIC).map_err(Error::region("write lock header"))?;
            self.map
                .write_at(L_VERSION as u64, &LOCK_VERSION.to_le_bytes())
                .map_err(Error::region("write lock header"))?;
            return Ok(());
        }
        if &head[..8] != LOCK_MAGIC {
            return Err(Error::NotADatabase {
                path: self.path.clone(),
                kind: "lock",
                reason: "bad magic".into(),
            });
        }
        if version < LOCK_VERSION && alone {
            // Nobody has it open: upgrade, and recover as after a reboot.
            self.word(L_STATE).store(0, Ordering::SeqCst);
            return self
                .map
                .write_at(L_VERSION as u64, &LOCK_VERSION.to_le_bytes())
                .map_err(Error::region("write lock header"));
        }
        if version != LOCK_VERSION {
            return Err(Error::UnsupportedVersion {
                path: self.path.clone(),
                found: version,
                supported: LOCK_VERSION,
            });
        }
        Ok(())
    }

    /// The `u64` word at a fixed layout offset.
    pub(crate) fn word(&self, offset: usize) -> &AtomicU64 {
        // SAFETY-free: the offsets are layout constants inside LOCK_SIZE,
        // 8-aligned, and the mapping is read-write, so this cannot fail.
        match self.map.atomic_u64(offset as u64) {
            Ok(w) => w,
            Err(_) => unreachable!("lock layout offset {offset} is inside the mapping and aligned"),
        }
    }

    pub(crate) fn writer(&self) -> Result<&RobustMutex> {
        RobustMutex::at(&self.map, L_WRITER as u64).map_err(Error::sync("writer mutex"))
    }

    pub(crate) fn sync_mutex(&self) -> Result<&RobustMutex> {
        RobustMutex::at(&self.map, L_SYNC as u64).map_err(Error::sync("sync mutex"))
    }

    pub(crate) fn commits(&self) -> Result<&EventCount> {
        EventCount::at(&self.map, L_COMMITS as u64).map_err(Error::sync("commit counter"))
    }

    pub(crate) fn durable_events(&self) -> Result<&EventCount> {
        EventCount::at(&self.map, L_DURABLE_EV as u64).map_err(Error::sync("durable counter"))
    }

    pub(crate) fn current(&self) -> CommitRef {
        CommitRef(self.word(L_CURRENT).load(Ordering::SeqCst))
    }

    pub(crate) fn durable(&self) -> CommitRef {
        CommitRef(self.word(L_DURABLE).load(Ordering::SeqCst))
    }

    pub(crate) fn syncing(&self) -> CommitRef {
        CommitRef(self.word(L_SYNCING).load(Ordering::SeqCst))
    }

    pub(crate) fn boot(&self) -> [u64; 2] {
        [self.word(L_BOOT).load(Ordering::Acquire), self.word(L_BOOT + 8).load(Ordering::Acquire)]
    }

    pub(crate) fn set_boot(&self, boot: [u64; 2]) {
        self.word(L_BOOT).store(boot[0], Ordering::Release);
        self.word(L_BOOT + 8).store(boot[1], Ordering::Release);
    }

    fn slot_word(&self, i: usize, field: usize) -> &AtomicU64 {
        self.word(READERS + i * READER_SIZE + field)
    }

    /// Claims a free reader slot for this process; returns its index.
    pub(crate) fn claim_reader(&self, hint: usize) -> Result<usize> {
        let me = ProcessToken::current_process().to_raw();
        let high = self.word(L_HIGH_WATER).load(Ordering::Acquire) as usize;
        let start = hint % READER_SLOTS;
        for k in 0..READER_SLOTS {
            let i = (start + k) % READER_SLOTS;
            let token = self.slot_word(i, 0);
            if token.load(Ordering::Relaxed) == 0
                && token.compare_exchange(0, me, Ordering::AcqRel, Ordering::Relaxed).is_ok()
            {
                if i >= high {
                    self.word(L_HIGH_WATER).fetch_max(i as u64 + 1, Ordering::AcqRel);
                }
                return Ok(i);
            }
        }
        // Full: give dead processes' slots back, then try once more.
        if self.reap_dead_readers() > 0 {
            return self.claim_reader(hint);
        }
        Err(Error::ReadersFull { path: self.path.clone(), capacity: READER_SLOTS })
    }

    /// Publishes `txnid` as slot `i`'s snapshot (SeqCst: the writer's scan
    /// must see it before it could free what the snapshot uses).
    pub(crate) fn set_reader(&self, i: usize, txnid: u64, started_us: u64) {
        self.slot_word(i, 16).store(started_us, Ordering::Relaxed);
        self.slot_word(i, 8).store(txnid, Ordering::SeqCst);
    }

    pub(crate) fn release_reader(&self, i: usize) {
        self.slot_word(i, 8).store(0, Ordering::Release);
        self.slot_word(i, 0).store(0, Ordering::Release);
    }

    /// Every slot with a snapshot. Slots being reaped are skipped: their
    /// snapshot is a dead reader's (see [`reap_dead_readers`](Self::reap_dead_readers)).
    pub(crate) fn readers(&self) -> impl Iterator<Item = ReaderSlot> + '_ {
        let high = (self.word(L_HIGH_WATER).load(Ordering::SeqCst) as usize).min(READER_SLOTS);
        (0..high).filter_map(move |i| {
            let txnid = self.slot_word(i, 8).load(Ordering::SeqCst);
            let token = self.slot_word(i, 0).load(Ordering::SeqCst);
            (txnid != 0 && token != 0 && token & REAPING == 0).then(|| ReaderSlot {
                token: ProcessToken::from_raw(token),
                txnid,
                started_us: self.slot_word(i, 16).load(Ordering::Relaxed),
            })
        })
    }

    /// The oldest snapshot a live reader holds, if any.
    pub(crate) fn oldest_reader(&self) -> Option<ReaderSlot> {
        self.readers().min_by_key(|r| r.txnid)
    }

    /// Frees the slots of dead processes, and finishes those whose reaper
    /// died; returns how many.
    pub(crate) fn reap_dead_readers(&self) -> usize {
        let high = (self.word(L_HIGH_WATER).load(Ordering::SeqCst) as usize).min(READER_SLOTS);
        (0..high).filter(|&i| self.begin_reap(i).is_some_and(|mark| self.finish_reap(i, mark))).count()
    }

    /// Step 1 of freeing slot `i`: if its owner (or the reaper that was
    /// freeing it) is dead, marks it as being reaped by this process, by
    /// CAS on that exact token; returns the mark. While marked, the slot
    /// is not free (`claim_reader` claims only from 0), so no reader can
    /// claim it before its snapshot is cleared. The mark is the reaping
    /// thread's token, whose liveness is exact (a process token counts
    /// as dead once the main thread exits, while this thread may still
    /// be between the two steps).
    fn begin_reap(&self, i: usize) -> Option<u64> {
        let token = self.slot_word(i, 0).load(Ordering::Acquire);
        if token == 0 || ProcessToken::from_raw(token & !REAPING).is_alive() {
            return None;
        }
        let mark = REAPING | ProcessToken::current().to_raw();
        self.slot_word(i, 0)
            .compare_exchange(token, mark, Ordering::AcqRel, Ordering::Relaxed)
            .ok()
            .map(|_| mark)
    }

    /// Step 2: clears the dead snapshot, then frees the slot. Only this
    /// thread holds `mark` (another reaper takes a slot over only once
    /// this thread is dead), so the stores cannot hit a live reader's
    /// registration; false if the slot was taken over.
    fn finish_reap(&self, i: usize, mark: u64) -> bool {
        self.slot_word(i, 8).store(0, Ordering::SeqCst);
        self.slot_word(i, 0).compare_exchange(mark, 0, Ordering::AcqRel, Ordering::Relaxed).is_ok()
    }

    /// Clears the first `n` reader slots and the high-water mark.
    fn clear_slots(&self, n: usize) {
        for i in 0..n {
            self.slot_word(i, 8).store(0, Ordering::Relaxed);
            self.slot_word(i, 0).store(0, Ordering::Relaxed);
        }
        self.word(L_HIGH_WATER).store(0, Ordering::SeqCst);
    }
}

/// This boot's identity (`/proc/sys/kernel/random/boot_id`), so that a
/// lock file left from before a reboot is recognised: then the page cache
/// is gone and unsynced commits must be verified before they are trusted.
pub(crate) fn boot_id() -> [u64; 2] {
    let text = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let hex: String = text.chars().filter(char::is_ascii_hexdigit).collect();
    let half = |s: &str| u64::from_str_radix(s, 16).unwrap_or(0);
    if hex.len() != 32 {
        // Unknown boot: never matches a stored one, so opens verify.
        return [0, 0];
    }
    [half(&hex[..16]), half(&hex[16..])]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The token of a process that has exited.
    fn dead_token() -> u64 {
        let mut child = std::process::Command::new("sleep").arg("60").spawn().unwrap();
        let token = ProcessToken::of_pid(child.id()).unwrap().to_raw();
        child.kill().unwrap();
        child.wait().unwrap();
        token
    }

    /// A lock file whose slot 0 holds snapshot 3 under `token`.
    fn with_slot0(dir: &Path, token: u64) -> LockFile {
        let (lock, _) = LockFile::open(&dir.join("lock")).unwrap();
        lock.slot_word(0, 0).store(token, Ordering::SeqCst);
        lock.slot_word(0, 8).store(3, Ordering::SeqCst);
        lock.word(L_HIGH_WATER).store(1, Ordering::SeqCst);
        lock
    }

    /// A reaper preempted between marking a dead reader's slot and
    /// clearing its snapshot: a reader looking for a slot meanwhile passes
    /// this one (it is not free), so the reaper's late clear cannot erase
    /// the reader's registration. Clearing the token first let the reader
    /// claim the slot, and the late clear then hid its snapshot from
    /// writers.
    #[test]
    fn a_reader_cannot_claim_a_slot_being_reaped() {
        let dir = tempfile::tempdir().unwrap();
        let lock = with_slot0(dir.path(), dead_token());
        let mark = lock.begin_reap(0).unwrap();
        let i = lock.claim_reader(0).unwrap();
        assert_ne!(i, 0, "claimed a slot being reaped");
        lock.set_reader(i, 7, 1);
        assert!(lock.finish_reap(0, mark));
        assert_eq!(lock.readers().map(|r| r.txnid).collect::<Vec<_>>(), [7]);
        assert_eq!(lock.claim_reader(0).unwrap(), 0, "the reaped slot is free again");
    }

    /// A slot whose reaper died between the steps holds a dead snapshot:
    /// writers ignore it, and the next reaper finishes freeing it. A slot
    /// a live reaper is freeing is left to that reaper.
    #[test]
    fn a_slot_whose_reaper_died_is_freed_by_the_next_reaper() {
        let dir = tempfile::tempdir().unwrap();
        let lock = with_slot0(dir.path(), REAPING | ProcessToken::current_process().to_raw());
        assert_eq!(lock.readers().count(), 0);
        assert_eq!(lock.reap_dead_readers(), 0, "took over a live reaper's slot");
        lock.slot_word(0, 0).store(REAPING | dead_token(), Ordering::SeqCst);
        assert_eq!(lock.reap_dead_readers(), 1);
        assert_eq!(lock.slot_word(0, 0).load(Ordering::SeqCst), 0);
        assert_eq!(lock.slot_word(0, 8).load(Ordering::SeqCst), 0);
    }
}
