//! The segment: creation and opening over a file or POSIX shm, the header,
//! checked access to memory other processes share, online growth, and the
//! robust locks with their undo logs.

use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mmkit_region::{Access, GrowableFile, Mode};
use mmkit_sync::{LockOutcome, MutexGuard, RobustMutex};
use rustix::fs::{Mode as FsMode, OFlags, RenameFlags};
use rustix::io::Errno;

use crate::error::{Error, Result};
use crate::layout::*;

/// Default most a heap may grow to: 64 GiB of reserved address space
/// (reserving costs no memory).
pub const DEFAULT_MAX_SIZE: u64 = 64 << 30;

/// How to create or open a heap.
///
/// ```
/// use mmkit_heap::HeapOptions;
/// let dir = tempfile::tempdir()?;
/// let heap = HeapOptions::new().size(1 << 20).max_size(1 << 30).create(dir.path().join("h"))?;
/// assert_eq!(heap.size(), 1 << 20);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct HeapOptions {
    size: u64,
    max_size: u64,
    lock_wait: Option<Duration>,
}

impl Default for HeapOptions {
    fn default() -> Self {
        HeapOptions { size: 1 << 20, max_size: DEFAULT_MAX_SIZE, lock_wait: None }
    }
}

impl HeapOptions {
    /// Defaults: 1 MiB to start, growing up to 64 GiB.
    pub fn new() -> HeapOptions {
        HeapOptions::default()
    }

    /// Initial size in bytes (rounded up to 64 KiB; at least 144 KiB).
    pub fn size(mut self, bytes: u64) -> Self {
        self.size = bytes;
        self
    }

    /// The most the heap may grow to, in bytes. Every process that opens
    /// the heap reserves this much address space (not memory).
    pub fn max_size(mut self, bytes: u64) -> Self {
        self.max_size = bytes;
        self
    }

    /// How long an operation waits for a lock whose holder is alive before
    /// it fails with [`Error::LockHeld`]. The default, `None`, waits as
    /// long as the holder lives, as Boost's `interprocess_mutex` does. A
    /// dead holder never makes anyone wait: it is detected by liveness and
    /// its work rolled back within milliseconds, whatever this says. A
    /// bound turns a stuck holder (stopped in a debugger, or a hostile
    /// process, or a forged lock word in a file naming a live process)
    /// into an error instead of a hang. It also bounds how long
    /// `find_or_init` and the container constructors wait for another
    /// live process to finish initializing an object. Applies to heaps
    /// opened or created through these options.
    pub fn lock_wait(mut self, limit: Option<Duration>) -> Self {
        self.lock_wait = limit;
        self
    }

    /// Opens an existing heap file with these options' lock wait bound
    /// (the size options apply only to creation).
    pub fn open(&self, path: impl AsRef<Path>) -> Result<Heap> {
        open_with(path.as_ref(), self.lock_wait)
    }

    /// Opens an existing heap in POSIX shared memory, as [`open`](Self::open).
    pub fn open_shm(&self, name: &str) -> Result<Heap> {
        self.open(shm_path("open shm heap", name)?)
    }

    fn checked(&self) -> Result<(u64, u64)> {
        let size = self.size.max(MIN_SIZE).div_ceil(SLAB) * SLAB;
        let max = self.max_size.div_ceil(SLAB) * SLAB;
        if max > MAX_MAX_SIZE {
            return Err(Error::Invalid {
                op: "create heap",
                reason: format!("max_size {} exceeds the limit of {MAX_MAX_SIZE} bytes", self.max_size),
            });
        }
        if size > max {
            return Err(Error::Invalid {
                op: "create heap",
                reason: format!("size {size} exceeds max_size {max}"),
            });
        }
        Ok((size, max))
    }

    /// Creates a heap file at `path` with mode 0600; fails if it exists.
    pub fn create(&self, path: impl AsRef<Path>) -> Result<Heap> {
        let (size, max) = self.checked()?;
        create_at(path.as_ref(), size, max)?;
        self.open(path)
    }

    /// Opens the heap at `path`, creating it if it does not exist. Safe
    /// under races: exactly one process creates it.
    pub fn open_or_create(&self, path: impl AsRef<Path>) -> Result<Heap> {
        let path = path.as_ref();
        let (size, max) = self.checked()?;
        for _ in 0..64 {
            match self.open(path) {
                Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
                other => return other,
            }
            match create_at(path, size, max) {
                Ok(()) | Err(Error::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Err(Error::Invalid { op: "open_or_create heap", reason: "the file kept disappearing".into() })
    }

    /// Creates a heap in POSIX shared memory (`/dev/shm/<name>`), mode 0600.
    pub fn create_shm(&self, name: &str) -> Result<Heap> {
        self.create(shm_path("create shm heap", name)?)
    }

    /// Opens or creates a heap in POSIX shared memory.
    pub fn open_or_create_shm(&self, name: &str) -> Result<Heap> {
        self.open_or_create(shm_path("open shm heap", name)?)
    }
}

fn shm_path(op: &'static str, name: &str) -> Result<PathBuf> {
    let bare = mmkit_region::shm::normalize_name(op, name).map_err(Error::region(op))?;
    Ok(Path::new(mmkit_region::shm::SHM_DIR).join(bare))
}

/// Builds the segment under a hidden temporary name and renames it into
/// place without replacing anything, so nobody ever opens a half-made heap.
fn create_at(path: &Path, size: u64, max: u64) -> Result<()> {
    let op = "create heap";
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name =
        path.file_name().ok_or_else(|| Error::Invalid { op, reason: "path has no file name".into() })?;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let tmp = dir.join(format!(
        ".mmkit-tmp-{}-{}-{}",
        name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let flags = OFlags::CREATE | OFlags::EXCL | OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd =
        rustix::fs::open(&tmp, flags, FsMode::from_raw_mode(0o600)).map_err(|e| Error::io(op, path, e))?;
    let built = rustix::fs::fchmod(&fd, FsMode::from_raw_mode(0o600))
        .map_err(|e| Error::io(op, path, e))
        .and_then(|()| {
            drop(fd);
            let file = GrowableFile::open(&tmp, Mode::ReadWrite, max as usize).map_err(Error::region(op))?;
            file.grow_to(size).map_err(Error::region("create heap (allocate)"))?;
            write_header(&file, size, max)
        })
        .and_then(|()| {
            rustix::fs::renameat_with(rustix::fs::CWD, &tmp, rustix::fs::CWD, path, RenameFlags::NOREPLACE)
                .map_err(|e| match e {
                    Errno::EXIST => Error::AlreadyExists { path: path.to_path_buf() },
                    e => Error::io(op, path, e),
                })
        });
    if built.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    built
}

fn write_header(file: &GrowableFile, size: u64, max: u64) -> Result<()> {
    let op = "create heap (header)";
    let created = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    let mut words = [0u8; 64];
    words[..8].copy_from_slice(&MAGIC);
    words[8..12].copy_from_slice(&VERSION.to_le_bytes());
    words[12..16].copy_from_slice(&(HEADER_SIZE as u32).to_le_bytes());
    words[16..24].copy_from_slice(&fingerprint().to_le_bytes());
    words[24..32].copy_from_slice(&max.to_le_bytes());
    words[32..40].copy_from_slice(&size.to_le_bytes());
    words[40..48].copy_from_slice(&created.to_le_bytes());
    file.write_at(0, &words).map_err(Error::region(op))?;
    file.write_at(PH_HEAP_END, &HEADER_SIZE.to_le_bytes()).map_err(Error::region(op))?;
    file.write_at(PH_ZERO_FROM, &HEADER_SIZE.to_le_bytes()).map_err(Error::region(op))
}

fn open_with(path: &Path, lock_wait: Option<Duration>) -> Result<Heap> {
    let max = read_header(path)?;
    let file = GrowableFile::open(path, Mode::ReadWrite, max as usize).map_err(Error::region("open heap"))?;
    let inner = Inner {
        base: file.base(),
        mapped: AtomicU64::new(file.len()),
        file,
        path: path.to_path_buf(),
        max_size: max,
        lock_wait,
    };
    let size = inner.load(H_SIZE)?;
    // A grower publishes a size only after growing the file, so a size
    // ahead of the length measured above means the heap grew meanwhile:
    // measure again. Still short, the header lies.
    let grew =
        size > inner.mapped.load(Ordering::Relaxed) && size <= max && inner.file.ensure_len(size).is_ok();
    if grew {
        inner.mapped.store(inner.file.len(), Ordering::Relaxed);
    }
    if size < MIN_SIZE || size > max || size > inner.mapped.load(Ordering::Relaxed) {
        return Err(inner.corrupt(format!("published size {size} does not match the file")));
    }
    Ok(Heap { inner: Arc::new(inner) })
}

/// A shared heap: a segment mapped in this process. Cheap to clone; all
/// clones and all processes see the same heap.
///
/// ```
/// use mmkit_heap::Heap;
/// let dir = tempfile::tempdir()?;
/// let heap = Heap::create(dir.path().join("heap"), 1 << 20)?;
/// let counter = heap.find_or_init("counter", || 41u64)?;
/// counter.update(|v| v + 1)?;
/// assert_eq!(Heap::open(dir.path().join("heap"))?.find::<u64>("counter")?.unwrap().get()?, 42);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Heap {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Heap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Heap").field("path", &self.inner.path).field("size", &self.size()).finish()
    }
}

pub(crate) struct Inner {
    pub(crate) file: GrowableFile,
    base: *mut u8,
    /// Bytes mapped here (a copy of `file.len()` that inlines).
    mapped: AtomicU64,
    pub(crate) path: PathBuf,
    pub(crate) max_size: u64,
    /// See [`HeapOptions::lock_wait`].
    lock_wait: Option<Duration>,
}

// SAFETY: `base` points into the mapping `file` owns, which stays mapped
// for the life of `Inner` (nothing here shrinks it). Every access through
// it is a bounds-checked atomic or volatile operation on shared memory,
// which is sound from any thread.
unsafe impl Send for Inner {}
// SAFETY: as above; `&Inner` only offers such accesses.
unsafe impl Sync for Inner {}

// SAFETY: `base` starts the mapping `file` owns, whose first `mapped()`
// bytes are mapped read-write (heaps are always opened read-write) for
// the life of `self`; `mapped` only grows. Lets the sync primitives that
// live in the heap be placed with the heap's own cheap bounds check.
unsafe impl Access for Inner {
    fn base(&self) -> *mut u8 {
        self.base
    }
    fn size(&self) -> usize {
        self.mapped() as usize
    }
    fn writable(&self) -> bool {
        true
    }
    fn path(&self) -> Option<&Path> {
        Some(&self.path)
    }
    #[inline]
    fn check_poison(&self, op: &'static str) -> mmkit_region::Result<()> {
        match self.file.is_poisoned() {
            true => Access::check_poison(&self.file, op),
            false => Ok(()),
        }
    }
}

impl Heap {
    /// Creates a heap file of `size` bytes (mode 0600), growable to 64 GiB;
    /// see [`HeapOptions`] for more control. Fails if the file exists.
    pub fn create(path: impl AsRef<Path>, size: u64) -> Result<Heap> {
        HeapOptions::new().size(size).create(path)
    }

    /// Opens an existing heap file.
    pub fn open(path: impl AsRef<Path>) -> Result<Heap> {
        open_with(path.as_ref(), None)
    }

    /// Opens an existing heap in POSIX shared memory.
    pub fn open_shm(name: &str) -> Result<Heap> {
        Heap::open(shm_path("open shm heap", name)?)
    }

    /// Removes a shm heap's name; processes that have it open keep it.
    pub fn unlink_shm(name: &str) -> Result<()> {
        let path = shm_path("unlink shm heap", name)?;
        std::fs::remove_file(&path).map_err(|e| Error::io("unlink shm heap", path, e))
    }

    /// The segment's file (`/dev/shm/<name>` for shm).
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The published size of the segment in bytes.
    pub fn size(&self) -> u64 {
        self.inner.load(H_SIZE).unwrap_or(0)
    }

    /// The most the segment may grow to.
    pub fn max_size(&self) -> u64 {
        self.inner.max_size
    }

    /// Grows the segment to at least `bytes` while other processes keep
    /// using it; they map the new range when they first touch it.
    pub fn grow_to(&self, bytes: u64) -> Result<()> {
        let ph = self.inner.lock_page_heap()?;
        self.inner.grow_locked(bytes.div_ceil(SLAB) * SLAB)?;
        drop(ph);
        Ok(())
    }
}

/// Reads and checks the fixed header fields with a plain read; returns the
/// reservation size.
fn read_header(path: &Path) -> Result<u64> {
    // O_NONBLOCK: a plain open(2) of a FIFO waits for a writer; this one
    // returns at once and the check below refuses it. Reads of a regular
    // file ignore the flag.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(OFlags::NONBLOCK.bits() as i32)
        .open(path)
        .map_err(|e| Error::io("open heap", path, e))?;
    let meta = file.metadata().map_err(|e| Error::io("open heap", path, e))?;
    if !meta.is_file() {
        return Err(Error::NotAHeap { path: path.to_path_buf(), reason: "not a regular file" });
    }
    let mut h = [0u8; 48];
    if meta.len() < HEADER_SIZE || file.read_exact_at(&mut h, 0).is_err() {
        return Err(Error::NotAHeap { path: path.to_path_buf(), reason: "shorter than a heap header" });
    }
    if h[..8] != MAGIC {
        return Err(Error::NotAHeap { path: path.to_path_buf(), reason: "bad magic number" });
    }
    let word = |at: usize| u64::from_le_bytes(h[at..at + 8].try_into().unwrap_or([0; 8]));
    let version = u32::from_le_bytes(h[8..12].try_into().unwrap_or([0; 4]));
    let header = u32::from_le_bytes(h[12..16].try_into().unwrap_or([0; 4]));
    let layout = word(16);
    if version != VERSION || header as u64 != HEADER_SIZE || layout != fingerprint() {
        return Err(Error::Incompatible {
            path: path.to_path_buf(),
            found: format!("version {version}, layout {layout:#018x}"),
            supported: VERSION,
            layout: fingerprint(),
        });
    }
    let max = word(24);
    if !(MIN_SIZE..=MAX_MAX_SIZE).contains(&max) || max % SLAB != 0 {
        return Err(Error::Corrupt {
            path: path.to_path_buf(),
            what: format!("max_size {max} is impossible"),
        });
    }
    Ok(max)
}

impl Inner {
    pub(crate) fn corrupt(&self, what: impl Into<String>) -> Error {
        Error::Corrupt { path: self.path.clone(), what: what.into() }
    }

    /// Bytes of the mapping this process may touch now.
    #[inline]
    pub(crate) fn mapped(&self) -> u64 {
        self.mapped.load(Ordering::Relaxed)
    }

    /// A pointer to `len` bytes at `off`, after checking them against what
    /// is mapped here; maps what other processes added when needed.
    #[inline]
    pub(crate) fn ptr(&self, off: u64, len: u64) -> Result<*mut u8> {
        match off.checked_add(len) {
            // The range lies inside the mapping, which fits in `usize`.
            Some(end) if end <= self.mapped() => Ok(self.base.wrapping_add(off as usize)),
            _ => self.ptr_slow(off, len),
        }
    }

    #[cold]
    fn ptr_slow(&self, off: u64, len: u64) -> Result<*mut u8> {
        let end = off.checked_add(len).filter(|&e| e <= self.max_size).ok_or_else(|| {
            self.corrupt(format!("range {off}+{len} is outside the segment (max {} bytes)", self.max_size))
        })?;
        // Never map past what the header publishes: a garbage offset must
        // not make us chase the file.
        let published = self.atomic_unchecked(H_SIZE).load(Ordering::Acquire);
        if end > published {
            return Err(self.corrupt(format!("range {off}+{len} is past the heap's end ({published} bytes)")));
        }
        self.file.ensure_len(end).map_err(Error::region("map grown heap"))?;
        // `fetch_max`: another thread of this handle may have stored a
        // longer length meanwhile, and `mapped` only grows.
        self.mapped.fetch_max(self.file.len(), Ordering::Relaxed);
        Ok(self.base.wrapping_add(off as usize))
    }

    /// The header word at `off` (inside the first page, always mapped).
    #[inline]
    fn atomic_unchecked(&self, off: u64) -> &AtomicU64 {
        debug_assert!(off % 8 == 0 && off + 8 <= HEADER_SIZE);
        // SAFETY: the file was checked at open to hold the header, so
        // `base + off` (off < HEADER_SIZE, 8-aligned: only constants are
        // passed) is mapped, aligned and writable for the life of `self`.
        // Shared words are only accessed atomically (docs/heap-format.md).
        unsafe { AtomicU64::from_ptr(self.base.add(off as usize).cast()) }
    }

    /// The shared word at `off`, checked for bounds and alignment.
    #[inline]
    pub(crate) fn atomic(&self, off: u64) -> Result<&AtomicU64> {
        if off % 8 != 0 {
            return Err(self.corrupt(format!("offset {off} is not 8-aligned")));
        }
        let p = self.ptr(off, 8)?;
        // SAFETY: `ptr` checked that 8 bytes at `off` are mapped here; the
        // base is page-aligned, so `p` is 8-aligned. The mapping stays for
        // the life of `self`, and shared words are only accessed atomically.
        Ok(unsafe { AtomicU64::from_ptr(p.cast()) })
    }

    #[inline]
    pub(crate) fn load(&self, off: u64) -> Result<u64> {
        Ok(self.atomic(off)?.load(Ordering::Acquire))
    }

    /// Stores outside any undo log: only for memory nobody else can reach
    /// yet (a fresh block) or for monotonic hints.
    #[inline]
    pub(crate) fn store(&self, off: u64, v: u64) -> Result<()> {
        self.atomic(off)?.store(v, Ordering::Release);
        Ok(())
    }

    /// `len` bytes at the 8-aligned offset `off`, checked once, whose
    /// words are then used without further checks.
    #[inline]
    pub(crate) fn block(&self, off: u64, len: u64) -> Result<Block<'_>> {
        if off % 8 != 0 {
            return Err(self.corrupt(format!("offset {off} is not 8-aligned")));
        }
        Ok(Block { p: self.ptr(off, len)?, len, _inner: std::marker::PhantomData })
    }

    /// Copies bytes out of the segment (volatile: they may change meanwhile).
    #[inline]
    pub(crate) fn read_bytes(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        if buf.len() <= SMALL_COPY && (off | buf.len() as u64) % 8 == 0 {
            let b = self.block(off, buf.len() as u64)?;
            for (i, chunk) in buf.chunks_exact_mut(8).enumerate() {
                chunk.copy_from_slice(&b.word(8 * i as u64).load(Ordering::Relaxed).to_le_bytes());
            }
            return Ok(());
        }
        self.read_large(off, buf)
    }

    fn read_large(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        self.ptr(off, buf.len() as u64)?;
        self.file.read_at(off, buf).map_err(Error::region("read heap"))
    }

    /// Copies bytes into the segment.
    #[inline]
    pub(crate) fn write_bytes(&self, off: u64, data: &[u8]) -> Result<()> {
        if data.len() <= SMALL_COPY && (off | data.len() as u64) % 8 == 0 {
            let b = self.block(off, data.len() as u64)?;
            for (i, chunk) in data.chunks_exact(8).enumerate() {
                let w = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
                b.word(8 * i as u64).store(w, Ordering::Relaxed);
            }
            return Ok(());
        }
        self.write_large(off, data)
    }

    fn write_large(&self, off: u64, data: &[u8]) -> Result<()> {
        self.ptr(off, data.len() as u64)?;
        self.file.write_at(off, data).map_err(Error::region("write heap"))
    }

    /// Zeroes `len` bytes.
    pub(crate) fn zero(&self, off: u64, len: u64) -> Result<()> {
        self.populate(off, len)?;
        self.file.fill_at(off, len as usize, 0).map_err(Error::region("zero heap"))
    }

    /// Maps in the pages of a large block (a map's new table), which are
    /// mostly pages this process never touched: one call instead of a
    /// fault per page. Only a hint: a page it left out faults when used.
    pub(crate) fn populate(&self, off: u64, len: u64) -> Result<()> {
        self.ptr(off, len)?;
        if len >= POPULATE_FROM {
            let _ = self.file.populate_range(off, len);
        }
        Ok(())
    }

    /// Grows the file to `size` bytes and publishes it. The caller holds
    /// the run allocator's lock. Idempotent: a crash between the
    /// `fallocate` and the publication leaves a longer file, which the next
    /// grower reuses.
    pub(crate) fn grow_locked(&self, size: u64) -> Result<()> {
        if size > self.max_size {
            return Err(Error::OutOfMemory {
                path: self.path.clone(),
                requested: size.saturating_sub(self.load(H_SIZE)?),
                size: self.load(H_SIZE)?,
                max_size: self.max_size,
            });
        }
        if size <= self.load(H_SIZE)? {
            return Ok(());
        }
        self.file.grow_to(size).map_err(Error::region("grow heap"))?;
        self.mapped.fetch_max(self.file.len(), Ordering::Relaxed);
        self.atomic_unchecked(H_SIZE).fetch_max(size, Ordering::AcqRel);
        Ok(())
    }

    /// Takes the robust mutex at `lock`; when its holder died, rolls back
    /// the holder's unfinished transaction from the undo log at `log`
    /// before anything else sees the data.
    pub(crate) fn lock(&self, lock: u64, log: u64, cap: u64) -> Result<MutexGuard<'_>> {
        self.lock_settling(lock, log, cap, || Ok(()))
    }

    /// [`Inner::lock`], and when the holder died, `settle` after the
    /// rollback: the structure's own roll-forward of a step that is not
    /// in its log. It runs before the lock is marked consistent, so a
    /// settler that dies too leaves the work to the next locker.
    #[inline]
    pub(crate) fn lock_settling(
        &self,
        lock: u64,
        log: u64,
        cap: u64,
        settle: impl FnOnce() -> Result<()>,
    ) -> Result<MutexGuard<'_>> {
        let op = "lock";
        // Maps the lock first if another process grew the heap past what
        // this handle maps: `RobustMutex::at` checks against the mapped
        // length only.
        self.ptr(lock, std::mem::size_of::<RobustMutex>() as u64)?;
        let mutex = RobustMutex::at(self, lock).map_err(Error::sync(op))?;
        crate::crash::point("lock.before");
        match self.wait_for(mutex, lock)? {
            LockOutcome::Acquired(g) => Ok(g),
            LockOutcome::OwnerDied(g) => {
                rollback(self, log, cap)?;
                settle()?;
                g.make_consistent();
                Ok(g)
            }
        }
    }

    /// Locks `mutex` (at offset `at`), within the lock wait bound.
    pub(crate) fn wait_for<'m>(&self, mutex: &'m RobustMutex, at: u64) -> Result<LockOutcome<'m>> {
        let op = "lock";
        let Some(limit) = self.lock_wait else { return mutex.lock().map_err(Error::sync(op)) };
        match mutex.lock_timeout(limit).map_err(Error::sync(op))? {
            Some(outcome) => Ok(outcome),
            None => Err(Error::LockHeld {
                path: self.path.clone(),
                at,
                holder: mutex.owner().map_or(0, |t| t.pid()),
                waited: limit,
            }),
        }
    }

    /// See [`HeapOptions::lock_wait`].
    pub(crate) fn lock_wait(&self) -> Option<Duration> {
        self.lock_wait
    }

    pub(crate) fn lock_page_heap(&self) -> Result<MutexGuard<'_>> {
        self.lock(PH_LOCK, PH_LOG, PH_LOG_CAP)
    }
}

/// Blocks from this size up are populated before they are zeroed.
const POPULATE_FROM: u64 = 256 << 10;

/// Copies up to this many bytes, when whole aligned words, with one atomic
/// per word instead of the volatile byte copy.
const SMALL_COPY: usize = 64;

/// A checked range of the segment (see [`Inner::block`]).
pub(crate) struct Block<'a> {
    p: *mut u8,
    len: u64,
    _inner: std::marker::PhantomData<&'a Inner>,
}

impl<'a> Block<'a> {
    /// The word at byte `at` of the block. `at` comes from this crate's
    /// layout constants, never from shared memory: a wrong one is a bug,
    /// and it panics instead of reaching outside the block.
    #[inline(always)]
    pub(crate) fn word(&self, at: u64) -> &'a AtomicU64 {
        assert!(at % 8 == 0 && at + 8 <= self.len, "word {at} of a {}-byte block", self.len);
        // SAFETY: `Inner::block` checked that `len` bytes at `p` are mapped
        // and that `p` is 8-aligned (an 8-aligned offset from the
        // page-aligned base); `at` is inside and 8-aligned (asserted). The
        // mapping lives as long as the `Inner` borrowed for 'a, and shared
        // words are only accessed atomically.
        unsafe { AtomicU64::from_ptr(self.p.add(at as usize).cast()) }
    }
}

/// Flag in a log entry's target word: a conditional entry, restored only
/// if the word still holds the value the transaction put there (a slot
/// claimed with compare-and-swap, which another writer may have claimed
/// instead if we died before our swap).
const COND: u64 = 1 << 63;

/// Undoes the writes recorded in the log at `log` (newest first), then
/// empties it. Idempotent: dying inside it leaves a log the next holder
/// replays again with the same result.
pub(crate) fn rollback(heap: &Inner, log: u64, cap: u64) -> Result<()> {
    let count = heap.atomic(log)?;
    let n = count.load(Ordering::Acquire);
    if n > cap {
        count.store(0, Ordering::Release);
        return Err(heap.corrupt(format!("undo log at {log} claims {n} entries (capacity {cap})")));
    }
    // Every entry is checked before any is replayed: a log with one
    // entry no holder could have written (its target outside the segment,
    // misaligned, or the magic number) is garbage as a whole, and is
    // dropped like a count past the capacity, so that the next locker
    // gets on (and `check --repair` with it) instead of failing here
    // forever.
    for i in 0..n {
        let target = heap.load(log + 8 + 24 * i)? & !COND;
        if target < 64 || heap.atomic(target).is_err() {
            count.store(0, Ordering::Release);
            return Err(heap.corrupt(format!("undo log at {log}: entry {i} targets {target}; log dropped")));
        }
    }
    for i in (0..n).rev() {
        let e = log + 8 + 24 * i;
        let target = heap.load(e)?;
        let old = heap.load(e + 8)?;
        let word = heap.atomic(target & !COND)?;
        if target & COND != 0 {
            let _ = word.compare_exchange(heap.load(e + 16)?, old, Ordering::AcqRel, Ordering::Relaxed);
        } else {
            word.store(old, Ordering::Release);
        }
    }
    count.store(0, Ordering::Release);
    Ok(())
}

/// A transaction: word writes recorded in an undo log before they happen.
/// Commit empties the log; dropping without commit (an error half-way)
/// rolls back at once, and a crash half-way is rolled back by the next
/// holder of the lock. The caller holds the lock that owns the log.
pub(crate) struct Txn<'h> {
    heap: &'h Inner,
    log: u64,
    cap: u64,
    n: u64,
    done: bool,
    /// The log's words, checked once, at the first entry.
    words: *mut u8,
}

impl<'h> Txn<'h> {
    pub(crate) fn new(heap: &'h Inner, log: u64, cap: u64) -> Txn<'h> {
        Txn { heap, log, cap, n: 0, done: false, words: std::ptr::null_mut() }
    }

    /// [`Txn::new`] with the log's words already checked by the caller,
    /// which spares the check at the first entry.
    ///
    /// # Safety
    ///
    /// `words` must be the address of `log` in `heap`'s mapping, with
    /// `log_bytes(cap)` mapped bytes there, 8-aligned.
    pub(crate) unsafe fn with_words(heap: &'h Inner, log: u64, cap: u64, words: *mut u8) -> Txn<'h> {
        Txn { heap, log, cap, n: 0, done: false, words }
    }

    /// The log's words, checked at the first entry.
    #[inline(always)]
    fn words(&mut self) -> Result<*mut u8> {
        if self.words.is_null() {
            self.resolve()?;
        }
        Ok(self.words)
    }

    #[cold]
    fn full(&self) -> Error {
        self.heap.corrupt(format!("transaction needs more than {} log entries", self.cap))
    }

    #[cold]
    fn resolve(&mut self) -> Result<()> {
        if self.log % 8 != 0 {
            return Err(self.heap.corrupt(format!("undo log at {} is not 8-aligned", self.log)));
        }
        self.words = self.heap.ptr(self.log, crate::layout::log_bytes(self.cap))?;
        Ok(())
    }

    /// Word `i` of the log at `words` (0: the count; then three per entry).
    #[inline(always)]
    fn at(&self, words: *mut u8, i: u64) -> &'h AtomicU64 {
        assert!(i <= 3 * self.cap, "log word {i} of {}", self.cap);
        // SAFETY: `words` was checked by `resolve` (or vouched for by the
        // caller of `with_words`) to start `log_bytes(cap)` = `8 * (1 + 3
        // * cap)` mapped bytes at an 8-aligned offset of the page-aligned
        // mapping, and `i <= 3 * cap` (asserted). The mapping outlives
        // `'h`; log words are only accessed atomically.
        unsafe { AtomicU64::from_ptr(words.add(8 * i as usize).cast()) }
    }

    /// The three words of entry `n` of the log at `words`, bounded once
    /// (not once per word: three checks of a hot path).
    #[inline(always)]
    fn entry(&self, words: *mut u8, n: u64) -> [&'h AtomicU64; 3] {
        assert!(n < self.cap, "log entry {n} of {}", self.cap);
        // SAFETY: as in `at`: the entry's words `1 + 3n` to `3 + 3n` are
        // at most `3 * cap` since `n < cap` (asserted), so they lie in the
        // log that `resolve` checked or the caller of `with_words`
        // vouched for. The mapping outlives `'h`; log words are
        // only accessed atomically.
        let w = |i: u64| unsafe { AtomicU64::from_ptr(words.add(8 * (1 + 3 * n + i) as usize).cast()) };
        [w(0), w(1), w(2)]
    }

    #[inline(always)]
    fn record(&mut self, target: u64, old: u64, cond: u64) -> Result<()> {
        if self.n >= self.cap {
            return Err(self.full());
        }
        // A write after a commit is a new transaction, rolled back if
        // dropped uncommitted.
        self.done = false;
        let p = self.words()?;
        let [t, o, c] = self.entry(p, self.n);
        t.store(target, Ordering::Relaxed);
        o.store(old, Ordering::Relaxed);
        c.store(cond, Ordering::Relaxed);
        self.n += 1;
        // Release: the entry is complete before the count covers it, and
        // the count before the write it protects.
        self.at(p, 0).store(self.n, Ordering::Release);
        Ok(())
    }

    /// Writes `v` at `off`, recording the old value first.
    #[inline(always)]
    pub(crate) fn set(&mut self, off: u64, v: u64) -> Result<()> {
        let word = self.heap.atomic(off)?;
        if off < 64 {
            return Err(self.heap.corrupt("write to the magic number"));
        }
        let old = word.load(Ordering::Acquire);
        if old == v {
            return Ok(());
        }
        self.record(off, old, 0)?;
        word.store(v, Ordering::Release);
        Ok(())
    }

    /// [`Txn::set`] of `word`, which the caller knows holds `was` (it
    /// holds the lock that guards it and wrote or read it last) and took
    /// from a range it checked: the word at `off`, past the magic number
    /// (a rollback restores `off`). No load and no check first.
    #[inline(always)]
    pub(crate) fn set_at(&mut self, off: u64, word: &AtomicU64, was: u64, v: u64) -> Result<()> {
        self.record(off, was, 0)?;
        word.store(v, Ordering::Release);
        Ok(())
    }

    /// Compare-and-swaps `word` (the word at `off`, which the caller took
    /// from a range it checked) from `expect` to `new` (`values`:
    /// expected, new, restored), recorded first as a conditional entry: a
    /// rollback puts `restore` back if the word still holds `new`. Returns
    /// false (and records nothing) if the word did not hold `expect`.
    #[inline(always)]
    pub(crate) fn claim_at(&mut self, off: u64, word: &AtomicU64, values: [u64; 3]) -> Result<bool> {
        let [expect, new, restore] = values;
        self.record(off | COND, restore, new)?;
        if word.compare_exchange(expect, new, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            return Ok(true);
        }
        self.n -= 1;
        let p = self.words()?;
        self.at(p, 0).store(self.n, Ordering::Release);
        Ok(false)
    }

    /// Makes the writes final. Borrows rather than consumes: moving the
    /// transaction into the call copied it through the stack, a
    /// store-forwarding stall on every insert.
    #[inline(always)]
    pub(crate) fn commit(&mut self) -> Result<()> {
        crate::crash::point("txn.commit");
        self.done = true;
        if self.n > 0 {
            let p = self.words()?;
            self.at(p, 0).store(0, Ordering::Release);
            self.n = 0;
        }
        Ok(())
    }
}

impl Drop for Txn<'_> {
    fn drop(&mut self) {
        if !self.done && self.n > 0 {
            let _ = rollback(self.heap, self.log, self.cap);
        }
    }
}
