//! One mapped segment file and race-free segment creation.

use std::fs::File;
use std::io;
use std::mem::ManuallyDrop;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use mmkit_region::{MapOptions, Mapping, Mode};

use crate::error::{Error, Result};
use crate::format::{
    self, FRAME_ALIGN, FRAME_HEADER, FrameWord, SEG_FINAL_COUNT, SEG_SEALED_AT, SEG_TAIL, SEGMENT_HEADER,
    SegmentHeader, claim_fits, index_slot_offset,
};
use crate::idle::{FileKey, IdleMapping, IdleMappings};

/// The file name of segment `number`.
pub(crate) fn segment_file_name(number: u64) -> String {
    format!("{number:020}.seg")
}

/// Parses a segment file name back into its number.
pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A mapped segment. The mapping lives as long as the `Segment`, so raw
/// pointers derived from `base` stay valid while `&self` is held, even if
/// retention unlinks the file (unlinking never unmaps). When the segment is
/// dropped its mapping goes to the handle's idle mappings (see `idle`).
pub(crate) struct Segment {
    /// The mapping and the open file (for page-cache hints, `prefault`);
    /// taken only by `drop`.
    held: ManuallyDrop<IdleMapping>,
    idle: Arc<IdleMappings>,
    base: *mut u8,
    pub(crate) number: u64,
    pub(crate) capacity: u64,
    pub(crate) header: SegmentHeader,
    pub(crate) path: PathBuf,
    /// Opened through this process's idle mapping of a recycled file (see
    /// `idle`): its pages are in the page cache, and mapped in this process
    /// as far as that mapping touched them (usually all: the file was
    /// filled, and usually zeroed, through it), though not always writable.
    pub(crate) reused: bool,
    /// Offset up to which a prefault helper of this process populated the
    /// page tables writable (see [`Segment::populate_write`]).
    pub(crate) populated: std::sync::atomic::AtomicU64,
}

// SAFETY: all shared-memory access goes through atomics or through byte
// ranges whose ownership the queue protocol assigns to one thread (a
// producer's claimed, uncommitted frame) or that are immutable (committed
// frames); the raw pointer is just the mapping's base address.
unsafe impl Send for Segment {}
// SAFETY: as above.
unsafe impl Sync for Segment {}

impl Drop for Segment {
    fn drop(&mut self) {
        // SAFETY: `held` is taken exactly once, here, and never read again:
        // no other method runs after `drop`.
        let held = unsafe { ManuallyDrop::take(&mut self.held) };
        self.idle.put(held);
    }
}

impl Segment {
    /// Maps segment `number` of the queue in `dir`, through an idle mapping
    /// of the same file if `idle` has one (the file was recycled).
    pub(crate) fn open(dir: &Path, number: u64, capacity: u64, idle: &Arc<IdleMappings>) -> Result<Segment> {
        let path = dir.join(segment_file_name(number));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| Error::io("open segment", &path, e))?;
        let stat = file.metadata().map_err(|e| Error::io("stat segment", &path, e))?;
        let file_len = stat.len();
        let mut head = [0u8; 48];
        if file_len < capacity {
            return Err(Error::corrupt(
                &path,
                format!("segment file is {file_len} bytes, expected {capacity}"),
            ));
        }
        file.read_exact_at(&mut head, 0).map_err(|e| Error::io("read segment header", &path, e))?;
        let header = SegmentHeader::parse(&head, &path, number, capacity, file_len)?;
        let key = FileKey::of(&stat);
        let reused_map = idle.take(key).filter(|h| h.map.len() == capacity as usize);
        let reused = reused_map.is_some();
        let held = match reused_map {
            Some(held) => held,
            None => {
                let map = MapOptions::new()
                    .len(capacity as usize)
                    .mode(Mode::ReadWrite)
                    .map_file_at(&file, Some(&path))
                    .map_err(Error::region("map segment"))?;
                IdleMapping { key, map, file }
            }
        };
        let base = held.map.raw_parts().0;
        let seg = Segment {
            held: ManuallyDrop::new(held),
            idle: idle.clone(),
            base,
            number,
            capacity,
            header,
            path,
            reused,
            populated: std::sync::atomic::AtomicU64::new(0),
        };
        let (count, offset) = format::split_tail(seg.tail().load(Ordering::Acquire));
        if offset < SEGMENT_HEADER || offset % 8 != 0 || count > capacity {
            return Err(Error::corrupt(
                &seg.path,
                format!("tail word (count {count}, offset {offset}) is impossible"),
            ));
        }
        Ok(seg)
    }

    /// Creates segment `number` unless it exists, from a zeroed spare when
    /// `spares` allows and there is one (see `recycle`). Race-free: the file
    /// is prepared under a temporary name, then renamed into place with
    /// `RENAME_NOREPLACE`; a loser of the race gives a spare it took back
    /// (or deletes its file) and uses the winner's. Returns whether this
    /// call prepared a file, and if so whether from a spare.
    pub(crate) fn create(dir: &Path, number: u64, spec: NewSegment) -> Result<Option<bool>> {
        let path = dir.join(segment_file_name(number));
        if path.exists() {
            return Ok(None);
        }
        let tmp = dir.join(format!(".tmp-{number}-{}-{}.seg", std::process::id(), unique()));
        let from_spare = match init_file(dir, &tmp, number, &spec) {
            Ok(from_spare) => from_spare,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        match rename_noreplace(&tmp, &path) {
            Ok(()) => {}
            // Another process or thread created it first.
            Err(rustix::io::Errno::EXIST) => lost_race(dir, tmp, &spec),
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(Error::io("rename new segment into place", &path, e));
            }
        }
        if spec.sync {
            sync_dir(dir)?;
        }
        Ok(Some(from_spare))
    }

    pub(crate) fn mapping(&self) -> &Mapping {
        &self.held.map
    }

    fn atomic64(&self, offset: u64) -> &AtomicU64 {
        debug_assert!(offset % 8 == 0 && offset + 8 <= self.capacity);
        // SAFETY: callers pass constant header offsets (inside the header,
        // which `open` checked fits, since capacity >= MIN_SEGMENT_SIZE) or
        // frame offsets validated by `check_frame`/`claim_fits` to lie in
        // `SEGMENT_HEADER..capacity` and be 8-aligned; the mapping is
        // page-aligned, writable and lives as long as `&self`; other
        // processes touch these words only atomically.
        unsafe { AtomicU64::from_ptr(self.base.add(offset as usize).cast()) }
    }

    /// The tail word: `count << 32 | offset`.
    pub(crate) fn tail(&self) -> &AtomicU64 {
        self.atomic64(SEG_TAIL)
    }

    /// The final message count (`u64::MAX` while open).
    pub(crate) fn final_count(&self) -> &AtomicU64 {
        self.atomic64(SEG_FINAL_COUNT)
    }

    /// Seals the segment after `count` claims (or fewer, if it already
    /// was), and records when, if nobody did before: retention's
    /// `max_age` counts from that time.
    pub(crate) fn seal(&self, count: u64) {
        self.final_count().fetch_min(count, Ordering::SeqCst);
        let _ =
            self.atomic64(SEG_SEALED_AT).compare_exchange(0, now_ns(), Ordering::AcqRel, Ordering::Relaxed);
    }

    /// The state word of the frame at `offset`, or `None` if no frame
    /// header fits there.
    pub(crate) fn frame_word(&self, offset: u64) -> Option<&AtomicU64> {
        let fits = offset.checked_add(FRAME_HEADER).is_some_and(|end| end <= self.capacity);
        if offset < SEGMENT_HEADER || offset % 8 != 0 || !fits {
            return None;
        }
        Some(self.atomic64(offset))
    }

    /// The timestamp word of the frame at `offset` (validated like
    /// [`Segment::frame_word`]).
    pub(crate) fn timestamp_word(&self, offset: u64) -> Option<&AtomicU64> {
        self.frame_word(offset)?;
        Some(self.atomic64(offset + 8))
    }

    /// Index slot `seq`, or `None` if it would overlap the header.
    pub(crate) fn index_slot(&self, seq: u64) -> Option<&AtomicU32> {
        let off = self.capacity.checked_sub(seq.checked_add(1)?.checked_mul(4)?)?;
        if off < SEGMENT_HEADER {
            return None;
        }
        // SAFETY: `off` is 4-aligned (capacity is a multiple of 4096), inside
        // the mapping and past the header; see `atomic64`.
        Some(unsafe { AtomicU32::from_ptr(self.base.add(off as usize).cast()) })
    }

    /// The frames of a run of `count` frames totalling `bytes`, from
    /// sequence `seq` at `offset`, and their index slots, checked against
    /// the segment once ([`claim_fits`]), so that each frame of the run
    /// costs one range check ([`Run::frame`]) instead of one per word. For
    /// a lease holder's run (`Producer::exclusive_run`). `None` if the run
    /// does not fit, or `offset` is not a frame position.
    pub(crate) fn run(&self, seq: u64, count: u64, offset: u64, bytes: u64) -> Option<Run<'_>> {
        let fits = offset >= SEGMENT_HEADER
            && offset % FRAME_ALIGN == 0
            && claim_fits(self.capacity, seq, count, offset, bytes);
        fits.then_some(Run { seg: self, seq, end_seq: seq + count, start: offset, end: offset + bytes })
    }

    /// The one frame `seq` at `offset` with `len` bytes of data, as a run
    /// of one: for a frame of a claim, which `claim_fits` already admitted.
    pub(crate) fn frame(&self, seq: u64, offset: u64, len: u64) -> Option<RunFrame<'_>> {
        self.run(seq, 1, offset, format::frame_size(len))?.frame(seq, offset, len)
    }

    /// Pointer to `len` bytes at `offset`, after a bounds check.
    pub(crate) fn bytes_ptr(&self, offset: u64, len: u64) -> Option<*mut u8> {
        let end = offset.checked_add(len)?;
        if offset < SEGMENT_HEADER || end > self.capacity {
            return None;
        }
        // SAFETY: in bounds of the mapping, checked just above.
        Some(unsafe { self.base.add(offset as usize) })
    }

    /// Hints the CPU to bring the cache line at `offset` into this core's
    /// cache, if the offset is inside the mapping (otherwise nothing).
    #[inline]
    pub(crate) fn prefetch(&self, offset: u64) {
        #[cfg(target_arch = "x86_64")]
        if offset < self.capacity {
            // SAFETY: `offset` is inside the mapping; a prefetch neither
            // reads nor writes memory as far as the program can tell, and
            // never faults.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                    self.base.add(offset as usize).cast::<i8>(),
                )
            };
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = offset;
    }

    /// Decodes the state word at `offset` with Acquire ordering.
    pub(crate) fn load_frame(&self, offset: u64) -> Option<FrameWord> {
        Some(FrameWord::decode(self.frame_word(offset)?.load(Ordering::Acquire)))
    }

    /// Brings `len` bytes at `offset` into the page cache ahead of the
    /// producers, so an append's first touch of a page finds it cached
    /// instead of allocating and zeroing it (for the preallocated,
    /// unwritten blocks of a new segment, bringing a page in allocates it
    /// zeroed and reads nothing). Neither way takes a lock of the
    /// process's address space (as populating a mapping would), so neither
    /// stalls the producers (thread creation and mmap wait for that lock).
    /// Never changes the file's contents. Best effort.
    ///
    /// With `large_folios`, by `sendfile` to `/dev/null`: the kernel reads
    /// the range in through its page cache and discards it, copying
    /// nothing, and that read path brings pages in as large folios (up to
    /// 2 MiB), so the producer's write faults and `page_mkwrite` cost once
    /// per folio. Measured on ext4 (Linux 6.18), per 4 KiB: 480 ns to bring
    /// a page in this way against 900 ns with `POSIX_FADV_WILLNEED`, then
    /// 225 ns against 700 ns for the producer to populate its page tables.
    /// Otherwise, and if `sendfile` fails, by `POSIX_FADV_WILLNEED`, which
    /// allocates 4 KiB pages. Durable queues need those: `msync` writes a
    /// dirty folio whole, and with large folios a sync after 4 KiB of
    /// appends wrote 621 KiB instead of 20 KiB.
    pub(crate) fn prefault(&self, offset: u64, len: u64, large_folios: bool) {
        let end = offset.saturating_add(len).min(self.capacity);
        let mut at = offset;
        if let Some(null) = dev_null().filter(|_| large_folios) {
            while at < end {
                let left = usize::try_from(end - at).unwrap_or(usize::MAX);
                match rustix::fs::sendfile(null, &self.held.file, Some(&mut at), left) {
                    Ok(n) if n > 0 => {}
                    _ => break,
                }
            }
        }
        if let Some(len) = std::num::NonZeroU64::new(end.saturating_sub(at)) {
            let _ = rustix::fs::fadvise(&self.held.file, at, Some(len), rustix::fs::Advice::WillNeed);
        }
    }

    /// Populates this process's page tables for `len` bytes at `offset`,
    /// writable (`MADV_POPULATE_WRITE`): one system call instead of a page
    /// fault per page. Returns the end of the populated range (`offset`
    /// itself if the call failed, e.g. on old kernels).
    pub(crate) fn populate_write(&self, offset: u64, len: u64) -> u64 {
        let page = mmkit_region::page_size() as u64;
        let start = offset / page * page;
        let end = offset.saturating_add(len).div_ceil(page).saturating_mul(page).min(self.capacity);
        if start >= end {
            return offset;
        }
        // SAFETY: `start..end` lies inside this live mapping (clamped to
        // `capacity`, page-aligned); MADV_POPULATE_WRITE only faults pages in
        // and never changes their contents, so concurrent readers and
        // writers of the range are unaffected.
        let r = unsafe {
            rustix::mm::madvise(
                self.base.add(start as usize).cast(),
                (end - start) as usize,
                rustix::mm::Advice::LinuxPopulateWrite,
            )
        };
        if r.is_ok() { end } else { offset }
    }

    /// Whether a SIGBUS hit this mapping (file truncated under us).
    pub(crate) fn poisoned(&self) -> bool {
        self.held.map.is_poisoned()
    }
}

/// The seal time recorded in segment file `path`, segment `number` of a
/// queue with segments of `capacity` bytes (see [`Segment::seal`]), if
/// there is one and it is plausible: not before the segment's creation
/// (from its checked header) and not more than [`SEAL_SKEW_NS`] ahead of
/// this process's clock. The word is shared memory any process can write,
/// and retention deletes by it: a corrupt time in the past would delete a
/// segment sealed a moment ago, one far ahead would keep it for ever. Read
/// with `pread`, not through a mapping: a handle that maps a segment pins
/// it, and retention, the caller, would then delete the segment instead of
/// recycling it.
pub(crate) fn recorded_seal(path: &Path, number: u64, capacity: u64) -> Option<u64> {
    let file = File::open(path).ok()?;
    let mut head = [0u8; 48];
    file.read_exact_at(&mut head, 0).ok()?;
    let header = SegmentHeader::parse(&head, path, number, capacity, file.metadata().ok()?.len()).ok()?;
    let mut word = [0u8; 8];
    file.read_exact_at(&mut word, SEG_SEALED_AT).ok()?;
    let t = u64::from_le_bytes(word);
    (t != 0 && t >= header.created_ns && t <= now_ns().saturating_add(SEAL_SKEW_NS)).then_some(t)
}

/// How far ahead of a reader's clock a recorded seal time may be (clocks
/// step back, and another process may have read its clock a little later).
const SEAL_SKEW_NS: u64 = 3_600_000_000_000;

/// Bytes preallocated per `fallocate` call.
const FALLOCATE_STEP: u64 = 512 << 10;

/// Renames a fully built temporary file onto `path`, failing with `EEXIST`
/// rather than replacing a file another process put there first.
pub(crate) fn rename_noreplace(tmp: &Path, path: &Path) -> rustix::io::Result<()> {
    rustix::fs::renameat_with(rustix::fs::CWD, tmp, rustix::fs::CWD, path, rustix::fs::RenameFlags::NOREPLACE)
}

/// Creates `path` exclusively (mode 0600, never through a symlink): the
/// temporary file that a queue file is built in before its rename.
pub(crate) fn create_exclusive(path: &Path, op: &'static str) -> Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| Error::io(op, path, e))
}

/// How to build a new segment file.
#[derive(Clone, Copy, Debug)]
pub(crate) struct NewSegment {
    pub(crate) capacity: u64,
    pub(crate) flags: u32,
    /// `fsync` the file and the directory.
    pub(crate) sync: bool,
    /// Whether a zeroed spare may be used instead of a fresh file.
    pub(crate) spares: bool,
}

/// Disposes of `tmp`, a segment file built for a name another creator
/// took first. Only its header was written, whether it came from a spare
/// or was made fresh: a spare where spares are used, else deleted off this
/// thread (see `remove_later`).
fn lost_race(dir: &Path, tmp: PathBuf, spec: &NewSegment) {
    if spec.spares {
        crate::recycle::give_back(dir, &tmp, spec.capacity);
    } else {
        crate::remove_later(tmp);
    }
}

/// Builds the segment file at `tmp`; returns whether it was a spare.
fn init_file(dir: &Path, tmp: &Path, number: u64, spec: &NewSegment) -> Result<bool> {
    // A zeroed spare left by retention beats a fresh file: its blocks are
    // written and its pages usually cached (see `recycle`).
    let spare = if spec.spares { crate::recycle::take_spare(dir, tmp, spec.capacity) } else { None };
    let from_spare = spare.is_some();
    let file = match spare {
        Some(file) => file,
        None => {
            let file = create_exclusive(tmp, "create segment")?;
            preallocate(&file, tmp, spec.capacity)?;
            file
        }
    };
    let header = SegmentHeader { number, capacity: spec.capacity, created_ns: now_ns(), flags: spec.flags };
    let w = |off: u64, bytes: &[u8]| -> Result<()> {
        file.write_all_at(bytes, off).map_err(|e| Error::io("write segment header", tmp, e))
    };
    w(0, &header.encode())?;
    w(SEG_TAIL, &SEGMENT_HEADER.to_le_bytes())?;
    w(SEG_FINAL_COUNT, &u64::MAX.to_le_bytes())?;
    if spec.sync {
        file.sync_all().map_err(|e| Error::io("fsync new segment", tmp, e))?;
    }
    Ok(from_spare)
}

fn preallocate(file: &File, tmp: &Path, capacity: u64) -> Result<()> {
    // In steps: on tmpfs `fallocate` allocates and zeroes memory, and one
    // call for a whole segment would keep the kernel busy for tens of
    // milliseconds without a preemption point, delaying the wake-up of
    // readers sharing that CPU. Each step returns to user space.
    let mut done = 0;
    while done < capacity {
        let step = FALLOCATE_STEP.min(capacity - done);
        rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), done, step)
            .map_err(|e| Error::io("preallocate segment", tmp, e))?;
        done += step;
    }
    Ok(())
}

/// `fsync` a directory so a rename or unlink in it is durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io("fsync queue directory", dir, e))
}

/// Nanoseconds since the Unix epoch.
pub(crate) fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Removes temporary files (`.tmp-meta-PID`, `.tmp-N-PID-U.seg`) left by
/// processes that died while building a queue file: the creator's pid is in
/// the name, and a file whose creator is alive (or whose pid was reused) is
/// left alone. Best effort: a queue works with or without the sweep.
pub(crate) fn sweep_stale_temps(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(temp_creator) else { continue };
        let gone = rustix::process::Pid::from_raw(pid)
            .is_some_and(|p| rustix::process::test_kill_process(p) == Err(rustix::io::Errno::SRCH));
        if gone {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// The creator's pid in a temporary file name, if `name` is one.
fn temp_creator(name: &str) -> Option<i32> {
    let rest = name.strip_prefix(".tmp-")?;
    let pid = match rest.strip_prefix("meta-") {
        Some(pid) => pid,
        None => rest.strip_suffix(".seg")?.split('-').nth(1)?,
    };
    pid.parse().ok().filter(|&p| p > 0)
}

/// A name part no other call in this process returns, and (with the time
/// in it) unlikely to match one from an earlier process of the same pid.
/// Two fields, not a mix of both: `counter ^ time` can repeat.
pub(crate) fn unique() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{:016x}{}", now_ns(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Whether an I/O error means "no such file".
pub(crate) fn is_not_found(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
}

/// `/dev/null`, opened once per process for [`Segment::prefault`] (`None`
/// if it cannot be opened).
fn dev_null() -> Option<std::os::fd::BorrowedFd<'static>> {
    static NULL: std::sync::OnceLock<Option<std::os::fd::OwnedFd>> = std::sync::OnceLock::new();
    let null = NULL.get_or_init(|| {
        rustix::fs::open(
            "/dev/null",
            rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .ok()
    });
    null.as_ref().map(std::os::fd::AsFd::as_fd)
}

/// A run of frames checked against its segment once: see [`Segment::run`].
pub(crate) struct Run<'a> {
    seg: &'a Segment,
    /// The run's sequence numbers are `seq..end_seq`.
    seq: u64,
    end_seq: u64,
    /// The run's frames lie in `start..end`.
    start: u64,
    end: u64,
}

/// The words and data of one frame of a [`Run`].
pub(crate) struct RunFrame<'a> {
    pub(crate) state: &'a AtomicU64,
    pub(crate) timestamp: &'a AtomicU64,
    pub(crate) index_slot: &'a AtomicU32,
    /// Where the frame's `len` bytes of data go.
    pub(crate) data: *mut u8,
}

impl<'a> Run<'a> {
    /// Frame `seq` of the run, at `offset`, with `len` bytes of data, if
    /// it lies inside the run.
    #[inline(always)]
    pub(crate) fn frame(&self, seq: u64, offset: u64, len: u64) -> Option<RunFrame<'a>> {
        let inside = seq >= self.seq
            && seq < self.end_seq
            && offset >= self.start
            && offset % FRAME_ALIGN == 0
            && offset.checked_add(FRAME_HEADER + len).is_some_and(|e| e <= self.end);
        if !inside {
            return None;
        }
        let slot = index_slot_offset(self.seg.capacity, seq);
        let base = self.seg.base;
        // SAFETY: `Segment::run` checked that the run's frames (`start..end`,
        // `start >= SEGMENT_HEADER`) and its index slots (from `capacity - 4
        // * end_seq` up) fit inside the mapping without overlapping
        // (`claim_fits`); the check above puts this frame's header and data
        // inside `start..end`, 8-aligned, and its slot among the run's (4-aligned:
        // the capacity is a multiple of 4096). The mapping lives as long as
        // `self.seg`; other processes touch these words only atomically, and
        // the data only once the frame is committed.
        unsafe {
            Some(RunFrame {
                state: AtomicU64::from_ptr(base.add(offset as usize).cast()),
                timestamp: AtomicU64::from_ptr(base.add(offset as usize + 8).cast()),
                index_slot: AtomicU32::from_ptr(base.add(slot as usize).cast()),
                data: base.add((offset + FRAME_HEADER) as usize),
            })
        }
    }
}

#[cfg(test)]
mod temp_tests {
    use super::*;

    /// A creator that made a fresh file and lost the race keeps it as a
    /// zeroed spare where spares are used, and deletes it where not.
    #[test]
    fn a_fresh_file_that_lost_the_race_becomes_a_spare() {
        let dir = tempfile::tempdir().unwrap();
        let capacity = 64 << 10;
        for spares in [true, false] {
            let spec = NewSegment { capacity, flags: 0, sync: false, spares };
            let tmp = dir.path().join(format!(".tmp-5-{}-{spares}.seg", std::process::id()));
            assert!(!init_file(dir.path(), &tmp, 5, &spec).unwrap(), "made fresh");
            lost_race(dir.path(), tmp.clone(), &spec);
            assert!(crate::gone_soon(&tmp), "{tmp:?}");
        }
        let spares = crate::recycle::spares(dir.path());
        assert_eq!(spares.len(), 1);
        let image = std::fs::read(&spares[0]).unwrap();
        assert_eq!(image.len() as u64, capacity);
        assert!(image.iter().all(|&b| b == 0), "a spare is all zero");
    }

    #[test]
    fn temp_names_give_their_creator() {
        assert_eq!(temp_creator(".tmp-meta-42"), Some(42));
        assert_eq!(temp_creator(".tmp-7-4242-123456.seg"), Some(4242));
        assert_eq!(temp_creator("00000000000000000007.seg"), None);
        assert_eq!(temp_creator(".tmp-7-x-1.seg"), None);
        assert_eq!(temp_creator(".tmp-meta-0"), None);
        assert_eq!(temp_creator("meta"), None);
    }

    #[test]
    fn sweep_removes_only_files_of_dead_creators() {
        let dir = tempfile::tempdir().unwrap();
        // A pid above the kernel's maximum (2^22) can never be alive.
        let dead = dir.path().join(".tmp-3-4194305-1.seg");
        let alive = dir.path().join(format!(".tmp-3-{}-1.seg", std::process::id()));
        let dead_meta = dir.path().join(".tmp-meta-4194305");
        let other = dir.path().join("00000000000000000003.seg");
        for p in [&dead, &alive, &dead_meta, &other] {
            std::fs::write(p, b"x").unwrap();
        }
        sweep_stale_temps(dir.path());
        assert!(!dead.exists() && !dead_meta.exists(), "files of dead creators are removed");
        assert!(alive.exists(), "a live creator's file is kept");
        assert!(other.exists(), "segments are never touched");
    }

    #[test]
    fn a_run_hands_out_only_its_own_frames_and_slots() {
        let dir = tempfile::tempdir().unwrap();
        let q = crate::Queue::options().create(true).segment_size(1 << 20).open(dir.path()).unwrap();
        let seg = q.segment(0).unwrap();
        let cap = seg.capacity;
        // Three frames of 16 bytes of data (32 each) from sequence 5.
        let (seq, start, bytes) = (5, SEGMENT_HEADER + 64, 96);
        let run = seg.run(seq, 3, start, bytes).unwrap();
        for k in 0..3 {
            let f = run.frame(seq + k, start + 32 * k, 16).unwrap();
            let base = seg.base as usize;
            assert_eq!(f.state.as_ptr() as usize - base, (start + 32 * k) as usize);
            assert_eq!(f.timestamp.as_ptr() as usize - base, (start + 32 * k + 8) as usize);
            assert_eq!(f.data as usize - base, (start + 32 * k + 16) as usize);
            assert_eq!(f.index_slot.as_ptr() as usize - base, (cap - 4 * (seq + k + 1)) as usize);
        }
        assert!(run.frame(seq + 2, start + 64, 17).is_none(), "data past the run's end");
        assert!(run.frame(seq + 3, start + 96, 0).is_none(), "a sequence past the run");
        assert!(run.frame(seq - 1, start, 0).is_none(), "a sequence before the run");
        assert!(run.frame(seq, start - 8, 0).is_none(), "an offset before the run");
        assert!(run.frame(seq, start + 4, 0).is_none(), "a misaligned offset");
        assert!(run.frame(seq, u64::MAX - 8, 0).is_none(), "an offset that overflows");
        // Runs that do not fit, or start off a frame position, are refused.
        assert!(seg.run(0, 1, 8, 32).is_none(), "inside the header");
        assert!(seg.run(0, 1, start + 4, 32).is_none(), "misaligned");
        assert!(seg.run(0, 1, cap - 32, 32).is_none(), "over the index slots");
        assert!(seg.run(u32::MAX as u64, 1, start, 32).is_none(), "slots below the header");
        // A claim's frame is a run of one: the same words, the same refusals.
        let one = seg.frame(seq, start, 16).unwrap();
        assert_eq!(one.state.as_ptr() as usize - seg.base as usize, start as usize);
        assert_eq!(one.index_slot.as_ptr() as usize - seg.base as usize, (cap - 4 * (seq + 1)) as usize);
        assert!(seg.frame(0, cap - 32, 16).is_none(), "a claim's frame over the index slots");
        assert!(seg.frame(0, start + 4, 16).is_none(), "a misaligned claim");
    }

    #[test]
    fn prefault_caches_the_range_either_way_and_writes_nothing() {
        let page = mmkit_region::page_size() as u64;
        let (from, len) = (64 << 10, 256 << 10);
        // A fresh mapping's `mincore` reports the page cache's state.
        let cached = |path: &Path| {
            let res = MapOptions::new().map_path(path).unwrap().residency().unwrap();
            let map = res.map().unwrap();
            (from / page..(from + len) / page).filter(|&p| map.is_resident(p)).count() as u64
        };
        for large in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let q = crate::Queue::options().create(true).segment_size(1 << 20).open(dir.path()).unwrap();
            let seg = q.segment(0).unwrap();
            // On tmpfs every page is in memory from the start; on disk
            // file systems none of the new segment's body is.
            let before = cached(&seg.path);
            seg.prefault(from, len, large);
            assert_eq!(
                cached(&seg.path),
                len / page,
                "range cached (large folios: {large}; before: {before})"
            );
            let mut body = vec![1u8; len as usize];
            seg.held.file.read_exact_at(&mut body, from).unwrap();
            assert!(body.iter().all(|&b| b == 0), "contents unchanged");
            // A range past the segment's end is clamped, not an error.
            seg.prefault(seg.capacity - page, 1 << 20, large);
        }
    }
}
