//! File-backed and anonymous mappings.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

use rustix::mm::{self, MapFlags, MprotectFlags, MsyncFlags, ProtFlags};

use crate::access::Access;
use crate::error::{Error, Result};
use crate::sigbus;

/// How a file mapping may be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `PROT_READ`, `MAP_SHARED`: sees other writers' changes, cannot write.
    ReadOnly,
    /// `PROT_READ|PROT_WRITE`, `MAP_SHARED`: writes reach the file and
    /// every other mapping of it.
    ReadWrite,
    /// `PROT_READ|PROT_WRITE`, `MAP_PRIVATE`: copy-on-write; writes stay
    /// in this process and never reach the file (numpy's mode `c`).
    CopyOnWrite,
}

impl Mode {
    fn prot(self) -> ProtFlags {
        match self {
            Mode::ReadOnly => ProtFlags::READ,
            Mode::ReadWrite | Mode::CopyOnWrite => ProtFlags::READ | ProtFlags::WRITE,
        }
    }
    fn share(self) -> MapFlags {
        match self {
            Mode::CopyOnWrite => MapFlags::PRIVATE,
            _ => MapFlags::SHARED,
        }
    }
}

/// Whether an anonymous mapping is shared with children after `fork`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Share {
    /// `MAP_PRIVATE`: a child gets a copy-on-write copy.
    Private,
    /// `MAP_SHARED`: parent and children see the same pages.
    Shared,
}

/// Huge-page policy for a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HugePages {
    /// Ordinary pages.
    #[default]
    Off,
    /// Ask for transparent huge pages with `MADV_HUGEPAGE`; the kernel may
    /// ignore it (see `/sys/kernel/mm/transparent_hugepage/enabled`).
    Transparent,
    /// `MAP_HUGETLB` from the preallocated hugetlb pool (anonymous
    /// mappings only); fails with an error when the pool is empty.
    Explicit,
}

bitflags::bitflags! {
    /// Page protection for [`Mapping::protect`].
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Protection: u32 {
        /// Pages may be read.
        const READ = 1;
        /// Pages may be written.
        const WRITE = 2;
        /// Pages may be executed.
        const EXEC = 4;
    }
}

/// Advice for [`Mapping::advise`] that cannot change what the memory
/// holds. See `madvise(2)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Advice {
    /// `MADV_NORMAL`.
    Normal,
    /// `MADV_RANDOM`: turn off readahead.
    Random,
    /// `MADV_SEQUENTIAL`: aggressive readahead, drop pages behind.
    Sequential,
    /// `MADV_WILLNEED`: start reading ahead now.
    WillNeed,
    /// `MADV_HUGEPAGE`.
    HugePage,
    /// `MADV_NOHUGEPAGE`.
    NoHugePage,
    /// `MADV_DONTFORK`: children do not inherit the range.
    DontFork,
    /// `MADV_DOFORK`: undo `DontFork`.
    DoFork,
    /// `MADV_COLD`: deactivate the pages.
    Cold,
}

impl Advice {
    pub(crate) fn raw(self) -> mm::Advice {
        match self {
            Advice::Normal => mm::Advice::Normal,
            Advice::Random => mm::Advice::Random,
            Advice::Sequential => mm::Advice::Sequential,
            Advice::WillNeed => mm::Advice::WillNeed,
            Advice::HugePage => mm::Advice::LinuxHugepage,
            Advice::NoHugePage => mm::Advice::LinuxNoHugepage,
            Advice::DontFork => mm::Advice::LinuxDontFork,
            Advice::DoFork => mm::Advice::LinuxDoFork,
            Advice::Cold => mm::Advice::LinuxCold,
        }
    }
}

/// Advice that can change what the memory holds, so that a reference into
/// it would see its contents replaced. Only through
/// [`Mapping::advise_unchecked`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UncheckedAdvice {
    /// `MADV_DONTNEED`: on private and anonymous mappings the contents are
    /// thrown away and read back as zeros (or the file's bytes).
    DontNeed,
    /// `MADV_FREE`: the kernel may free the pages lazily.
    Free,
    /// `MADV_REMOVE`: punch a hole in the backing store.
    Remove,
    /// `MADV_PAGEOUT`: reclaim the pages now.
    PageOut,
}

/// Builder for [`Mapping`]s, in the manner of `memmap2::MmapOptions`.
///
/// ```
/// use mmkit_region::{Access, MapOptions, Mode};
/// # let dir = tempfile::tempdir()?;
/// # let path = dir.path().join("f");
/// std::fs::write(&path, b"hello, mapped world")?;
/// let map = MapOptions::new().offset(7).len(6).mode(Mode::ReadOnly).map_path(&path)?;
/// let mut buf = [0u8; 6];
/// map.read_at(0, &mut buf)?;
/// assert_eq!(&buf, b"mapped");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct MapOptions {
    offset: u64,
    len: Option<usize>,
    mode: Mode,
    populate: bool,
    huge: HugePages,
    sigbus_guard: bool,
}

impl Default for MapOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl MapOptions {
    /// Read-only, the whole file, SIGBUS guard on.
    pub fn new() -> Self {
        MapOptions {
            offset: 0,
            len: None,
            mode: Mode::ReadOnly,
            populate: false,
            huge: HugePages::Off,
            sigbus_guard: true,
        }
    }

    /// Byte offset into the file; need not be page-aligned.
    pub fn offset(&mut self, offset: u64) -> &mut Self {
        self.offset = offset;
        self
    }

    /// Number of bytes to map; defaults to the rest of the file. Need not
    /// be a page multiple: only `len` bytes are reachable through the
    /// checked API, although the kernel maps whole pages.
    ///
    /// Tail-page semantics: the bytes of the last page past `len` are still
    /// mapped. Past the end of the *file* they read as zeros and writes to
    /// them never reach the file (the file does not grow); before the end of
    /// the file they are ordinary file bytes. A whole page past the end of
    /// the file raises SIGBUS when touched (see [`crate::sigbus`]).
    pub fn len(&mut self, len: usize) -> &mut Self {
        self.len = Some(len);
        self
    }

    /// The access mode (default [`Mode::ReadOnly`]).
    pub fn mode(&mut self, mode: Mode) -> &mut Self {
        self.mode = mode;
        self
    }

    /// Prefault every page at map time (`MAP_POPULATE`).
    pub fn populate(&mut self, yes: bool) -> &mut Self {
        self.populate = yes;
        self
    }

    /// Huge-page policy.
    pub fn huge(&mut self, huge: HugePages) -> &mut Self {
        self.huge = huge;
        self
    }

    /// Whether a SIGBUS in a file mapping is turned into
    /// [`Error::Poisoned`] (default on; see [`crate::sigbus`]).
    pub fn sigbus_guard(&mut self, yes: bool) -> &mut Self {
        self.sigbus_guard = yes;
        self
    }

    /// Opens `path` as the mode needs and maps it.
    pub fn map_path(&self, path: impl AsRef<Path>) -> Result<Mapping> {
        let path = path.as_ref();
        let file = crate::file::open_for(path, self.mode != Mode::ReadWrite, "open for mapping")?;
        self.map_file_at(&file, Some(path))
    }

    /// Maps an open file. `path` is used in error messages only.
    pub fn map_file(&self, file: &File) -> Result<Mapping> {
        self.map_file_at(file, None)
    }

    /// Maps any file descriptor, naming `path` in errors.
    pub fn map_file_at(&self, fd: impl AsFd, path: Option<&Path>) -> Result<Mapping> {
        let fd = fd.as_fd();
        let perr = || path.map(Path::to_path_buf);
        let stat = crate::file::stat_not_dir(fd, path, "map")?;
        if self.mode == Mode::ReadWrite {
            crate::file::require_fd_writable(fd, path, "map read-write")?;
        }
        let file_len = stat.st_size as u64;
        if self.offset > file_len {
            return Err(Error::OutOfBounds {
                op: "map",
                path: perr(),
                offset: self.offset,
                len: 0,
                size: file_len,
            });
        }
        let len = match self.len {
            Some(len) => len,
            None => usize::try_from(file_len - self.offset).map_err(|_| Error::Invalid {
                op: "map",
                path: perr(),
                reason: "file too large for the address space".into(),
            })?,
        };
        if len == 0 {
            return Err(Error::ZeroLength { op: "map", path: perr() });
        }
        if self.offset.checked_add(len as u64).is_none_or(|end| end > file_len) {
            return Err(Error::OutOfBounds {
                op: "map",
                path: perr(),
                offset: self.offset,
                len: len as u64,
                size: file_len,
            });
        }
        if self.huge == HugePages::Explicit {
            return Err(Error::Invalid {
                op: "map",
                path: perr(),
                reason: "explicit huge pages (MAP_HUGETLB) need an anonymous mapping or a hugetlbfs file"
                    .into(),
            });
        }
        let page = crate::page_size() as u64;
        let aligned = self.offset - self.offset % page;
        let delta = (self.offset - aligned) as usize;
        let map_len = len + delta;
        let mut flags = self.mode.share();
        if self.populate {
            flags |= MapFlags::POPULATE;
        }
        // SAFETY: a fresh mapping at an address the kernel picks cannot
        // alias any Rust object; `fd` is a valid open descriptor and the
        // range was checked against the file's size above.
        let base = unsafe { mm::mmap(std::ptr::null_mut(), map_len, self.mode.prot(), flags, fd, aligned) }
            .map_err(|e| Error::io("mmap", path, e))?;
        let mapping = Mapping::from_raw(base.cast(), map_len, delta, len, self.mode.prot(), path, self.mode);
        mapping.finish(self, true)
    }

    /// Maps `len` bytes of zeroed anonymous memory.
    pub fn map_anonymous(&self, len: usize, share: Share) -> Result<Mapping> {
        if len == 0 {
            return Err(Error::ZeroLength { op: "map anonymous", path: None });
        }
        let mut flags = match share {
            Share::Private => MapFlags::PRIVATE,
            Share::Shared => MapFlags::SHARED,
        };
        if self.populate {
            flags |= MapFlags::POPULATE;
        }
        if self.huge == HugePages::Explicit {
            flags |= MapFlags::HUGETLB;
        }
        let prot = match self.mode {
            Mode::ReadOnly => ProtFlags::READ,
            _ => ProtFlags::READ | ProtFlags::WRITE,
        };
        // SAFETY: a fresh anonymous mapping aliases nothing.
        let base = unsafe { mm::mmap_anonymous(std::ptr::null_mut(), len, prot, flags) }.map_err(|e| {
            if self.huge == HugePages::Explicit && e == rustix::io::Errno::NOMEM {
                Error::Invalid {
                    op: "mmap anonymous (MAP_HUGETLB)",
                    path: None,
                    reason: format!(
                        "not enough free huge pages for {len} bytes in the hugetlb pool; \
                         raise /proc/sys/vm/nr_hugepages or use HugePages::Transparent"
                    ),
                }
            } else {
                Error::io("mmap anonymous", None, e)
            }
        })?;
        let mode = match share {
            Share::Private => Mode::CopyOnWrite,
            Share::Shared => Mode::ReadWrite,
        };
        let mapping = Mapping::from_raw(base.cast(), len, 0, len, prot, None, mode);
        mapping.finish(self, false)
    }
}

/// An owned memory mapping, unmapped on drop.
///
/// A `Mapping` never hands out `&[u8]` in safe code: the bytes may be
/// changed by another process at any time. Use the [`Access`] methods
/// (volatile copies, atomics) or, when you can promise nobody else writes,
/// the `unsafe` [`Mapping::as_slice`].
#[derive(Debug)]
pub struct Mapping {
    /// The page-aligned kernel mapping.
    range: OwnedRange,
    delta: usize,
    len: usize,
    prot: ProtFlags,
    mode: Mode,
    path: Option<PathBuf>,
}

/// A range of address space this crate mapped, with its SIGBUS
/// registration; dropping it deregisters, then unmaps. Shared by
/// [`Mapping`] and [`GrowableFile`](crate::GrowableFile).
#[derive(Debug)]
pub(crate) struct OwnedRange {
    base: NonNull<u8>,
    len: usize,
    guard: Option<sigbus::Guard>,
}

// SAFETY: the range is plain memory owned by this value; all access goes
// through raw pointers with the synchronization the caller provides
// (atomics, volatile copies), so it may move to and be shared between threads.
unsafe impl Send for OwnedRange {}
// SAFETY: see `Send`; `&OwnedRange` only hands out raw pointers.
unsafe impl Sync for OwnedRange {}

impl OwnedRange {
    /// Takes ownership of `len` bytes that `mmap` returned at `base`.
    pub(crate) fn new(base: *mut u8, len: usize) -> OwnedRange {
        // mmap never returns null on success.
        OwnedRange { base: NonNull::new(base).unwrap_or(NonNull::dangling()), len, guard: None }
    }

    /// Registers the whole range with the SIGBUS handler.
    pub(crate) fn guard(&mut self) {
        self.guard = sigbus::register(self.base.as_ptr(), self.len);
    }

    pub(crate) fn base(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub(crate) fn is_poisoned(&self) -> bool {
        self.guard.as_ref().is_some_and(sigbus::Guard::is_poisoned)
    }

    /// [`Error::Poisoned`] once a SIGBUS was caught in the range.
    pub(crate) fn check_poison(&self, op: &'static str, path: Option<&Path>) -> Result<()> {
        if self.is_poisoned() {
            Err(Error::Poisoned { op, path: path.map(Path::to_path_buf) })
        } else {
            Ok(())
        }
    }
}

impl Drop for OwnedRange {
    fn drop(&mut self) {
        // Deregister first so the handler never patches a range that is
        // about to be reused by someone else.
        self.guard.take();
        // SAFETY: we own this mapping and its owner lends out nothing that
        // outlives it.
        let _ = unsafe { mm::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

impl Mapping {
    /// Maps `len` zeroed bytes of anonymous memory (`Share::Shared`
    /// survives `fork`).
    ///
    /// ```
    /// use mmkit_region::{Access, Mapping, Share};
    /// let map = Mapping::anonymous(4096, Share::Shared)?;
    /// map.write_at(10, b"hi")?;
    /// assert_eq!(map.load_u32(8, std::sync::atomic::Ordering::Relaxed)?, u32::from_le_bytes([0, 0, b'h', b'i']));
    /// # Ok::<(), mmkit_region::Error>(())
    /// ```
    pub fn anonymous(len: usize, share: Share) -> Result<Mapping> {
        MapOptions::new().mode(Mode::ReadWrite).map_anonymous(len, share)
    }

    fn from_raw(
        base: *mut u8,
        map_len: usize,
        delta: usize,
        len: usize,
        prot: ProtFlags,
        path: Option<&Path>,
        mode: Mode,
    ) -> Mapping {
        Mapping {
            range: OwnedRange::new(base, map_len),
            delta,
            len,
            prot,
            mode,
            path: path.map(Path::to_path_buf),
        }
    }

    fn finish(mut self, opts: &MapOptions, file_backed: bool) -> Result<Mapping> {
        if opts.huge == HugePages::Transparent {
            self.advise(Advice::HugePage)?;
        }
        if file_backed && opts.sigbus_guard {
            self.range.guard();
        }
        Ok(self)
    }

    /// Number of bytes reachable through the mapping.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: zero-length mappings are refused at creation.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The mode the mapping was made with.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Pointer to the first mapped byte (the requested offset).
    pub fn as_ptr(&self) -> *const u8 {
        self.start()
    }

    /// Mutable pointer to the first mapped byte.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.start()
    }

    fn start(&self) -> *mut u8 {
        self.range.base().wrapping_add(self.delta)
    }

    /// The mapped bytes as a slice.
    ///
    /// # Safety
    ///
    /// No one — this process through another mapping or pointer, or any
    /// other process — may write these bytes, nor truncate the file, while
    /// the slice lives. Otherwise this is a data race: undefined behaviour.
    pub unsafe fn as_slice(&self) -> &[u8] {
        // SAFETY: `len` bytes from `start()` are mapped readable while
        // `&self` lives; the caller promises there are no writers.
        unsafe { std::slice::from_raw_parts(self.start(), self.len) }
    }

    /// The mapped bytes as a mutable slice.
    ///
    /// # Safety
    ///
    /// As for [`Mapping::as_slice`], and the mapping must be writable.
    pub unsafe fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, with exclusive access via `&mut self`
        // and the caller's promise about other processes.
        unsafe { std::slice::from_raw_parts_mut(self.start(), self.len) }
    }

    /// Converts a byte range of the mapping to the page-aligned range the
    /// kernel calls need.
    fn page_range(&self, op: &'static str, offset: usize, len: usize) -> Result<(*mut u8, usize)> {
        // Checked against `len`, not `Access::size`: the kernel calls work
        // on pages whatever their protection.
        if offset.checked_add(len).is_none_or(|end| end > self.len) {
            return Err(Error::OutOfBounds {
                op,
                path: self.path.clone(),
                offset: offset as u64,
                len: len as u64,
                size: self.len as u64,
            });
        }
        let page = crate::page_size();
        let start = self.delta + offset;
        let aligned = start - start % page;
        let end = (start + len).min(self.range.len());
        Ok((self.range.base().wrapping_add(aligned), end - aligned))
    }

    /// Writes dirty pages back to the file and waits (`msync(MS_SYNC)`).
    pub fn flush(&self) -> Result<()> {
        self.flush_range(0, self.len)
    }

    /// Starts write-back of dirty pages without waiting (`MS_ASYNC`).
    pub fn flush_async(&self) -> Result<()> {
        self.flush_async_range(0, self.len)
    }

    /// [`Mapping::flush`] for `len` bytes at `offset`.
    pub fn flush_range(&self, offset: usize, len: usize) -> Result<()> {
        self.msync(offset, len, MsyncFlags::SYNC)
    }

    /// [`Mapping::flush_async`] for `len` bytes at `offset`.
    pub fn flush_async_range(&self, offset: usize, len: usize) -> Result<()> {
        self.msync(offset, len, MsyncFlags::ASYNC)
    }

    fn msync(&self, offset: usize, len: usize, flags: MsyncFlags) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        let (ptr, len) = self.page_range("msync", offset, len)?;
        // SAFETY: the range lies within our own live mapping.
        unsafe { mm::msync(ptr.cast(), len, flags) }
            .map_err(|e| Error::io("msync", self.path.as_deref(), e))?;
        // After poisoning, writes went to anonymous memory: nothing was saved.
        self.check_poison("flush")
    }

    /// Gives the kernel advice about the whole mapping (`madvise(2)`).
    pub fn advise(&self, advice: Advice) -> Result<()> {
        self.advise_range(advice, 0, self.len)
    }

    /// [`Mapping::advise`] for a byte range.
    pub fn advise_range(&self, advice: Advice, offset: usize, len: usize) -> Result<()> {
        self.madvise(advice.raw(), offset, len)
    }

    /// Advice that may replace the mapping's contents.
    ///
    /// # Safety
    ///
    /// No reference obtained from [`Mapping::as_slice`] or a raw pointer
    /// may be relied on to keep its contents: after `DontNeed` on a private
    /// or anonymous mapping the bytes read as zeros (or as the file).
    pub unsafe fn advise_unchecked(&self, advice: UncheckedAdvice, offset: usize, len: usize) -> Result<()> {
        let raw = match advice {
            UncheckedAdvice::DontNeed => mm::Advice::LinuxDontNeed,
            UncheckedAdvice::Free => mm::Advice::LinuxFree,
            UncheckedAdvice::Remove => mm::Advice::LinuxRemove,
            UncheckedAdvice::PageOut => mm::Advice::LinuxPageOut,
        };
        self.madvise(raw, offset, len)
    }

    fn madvise(&self, advice: mm::Advice, offset: usize, len: usize) -> Result<()> {
        let (ptr, len) = self.page_range("madvise", offset, len)?;
        // SAFETY: the range lies within our own live mapping; advice that
        // changes contents is only reachable through the unsafe entry point.
        unsafe { mm::madvise(ptr.cast(), len, advice) }
            .map_err(|e| Error::io("madvise", self.path.as_deref(), e))
    }

    /// Prefaults every page now, so later accesses take no page faults
    /// (`MADV_POPULATE_READ`/`WRITE`, Linux 5.14+; falls back to touching
    /// one byte per page).
    pub fn populate(&self) -> Result<()> {
        // Both ways fault on pages without PROT_READ.
        if !self.readable() {
            return Err(Error::Invalid {
                op: "populate",
                path: self.path.clone(),
                reason: "the mapping is not readable (see Mapping::protect)".into(),
            });
        }
        let advice = if self.prot.contains(ProtFlags::WRITE) && self.mode != Mode::CopyOnWrite {
            mm::Advice::LinuxPopulateWrite
        } else {
            mm::Advice::LinuxPopulateRead
        };
        match self.madvise(advice, 0, self.len) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => self.touch_pages(),
            Err(e) => Err(e),
        }
    }

    fn readable(&self) -> bool {
        self.prot.contains(ProtFlags::READ)
    }

    fn touch_pages(&self) -> Result<()> {
        let page = crate::page_size();
        let mut sum = 0u8;
        let mut off = 0;
        while off < self.range.len() {
            // SAFETY: `off < range.len()`, inside our readable mapping.
            sum = sum.wrapping_add(unsafe { self.range.base().add(off).read_volatile() });
            off += page;
        }
        std::hint::black_box(sum);
        self.check_poison("populate")
    }

    /// Locks the pages in RAM (`mlock(2)`).
    pub fn lock(&self) -> Result<()> {
        // SAFETY: our own live mapping.
        match unsafe { mm::mlock(self.range.base().cast(), self.range.len()) } {
            Ok(()) => Ok(()),
            Err(e)
                if e == rustix::io::Errno::NOMEM
                    || e == rustix::io::Errno::AGAIN
                    || e == rustix::io::Errno::PERM =>
            {
                let limit = rustix::process::getrlimit(rustix::process::Resource::Memlock)
                    .current
                    .unwrap_or(u64::MAX);
                Err(Error::MemlockLimit { op: "mlock", requested: self.range.len() as u64, limit })
            }
            Err(e) => Err(Error::io("mlock", self.path.as_deref(), e)),
        }
    }

    /// Undoes [`Mapping::lock`].
    pub fn unlock(&self) -> Result<()> {
        // SAFETY: our own live mapping.
        unsafe { mm::munlock(self.range.base().cast(), self.range.len()) }
            .map_err(|e| Error::io("munlock", self.path.as_deref(), e))
    }

    /// Changes the protection of the whole mapping (`mprotect(2)`).
    ///
    /// Takes `&mut self` so that no slice from [`Mapping::as_slice`] can be
    /// alive across the change. On failure the mapping keeps its old
    /// protection and stays usable. Without [`Protection::READ`] the
    /// checked [`Access`] methods treat the mapping as empty (they return
    /// [`Error::OutOfBounds`]) instead of faulting.
    pub fn protect(&mut self, prot: Protection) -> Result<()> {
        let mut flags = MprotectFlags::empty();
        let mut raw = ProtFlags::empty();
        if prot.contains(Protection::READ) {
            flags |= MprotectFlags::READ;
            raw |= ProtFlags::READ;
        }
        if prot.contains(Protection::WRITE) {
            if self.mode == Mode::ReadOnly && self.path.is_some() {
                return Err(Error::ReadOnly { op: "mprotect", path: self.path.clone() });
            }
            flags |= MprotectFlags::WRITE;
            raw |= ProtFlags::WRITE;
        }
        if prot.contains(Protection::EXEC) {
            flags |= MprotectFlags::EXEC;
            raw |= ProtFlags::EXEC;
        }
        // SAFETY: our own live mapping; `&mut self` rules out live slices.
        unsafe { mm::mprotect(self.range.base().cast(), self.range.len(), flags) }
            .map_err(|e| Error::io("mprotect", self.path.as_deref(), e))?;
        self.prot = raw;
        Ok(())
    }

    /// The current protection.
    pub fn protection(&self) -> Protection {
        let mut p = Protection::empty();
        if self.prot.contains(ProtFlags::READ) {
            p |= Protection::READ;
        }
        if self.prot.contains(ProtFlags::WRITE) {
            p |= Protection::WRITE;
        }
        if self.prot.contains(ProtFlags::EXEC) {
            p |= Protection::EXEC;
        }
        p
    }

    /// True once a SIGBUS was caught in this mapping.
    pub fn is_poisoned(&self) -> bool {
        self.range.is_poisoned()
    }

    /// The page-aligned start of the underlying kernel mapping, and the
    /// number of bytes from there to the end of the requested range. The
    /// kernel maps whole pages, so the last page may reach further (see
    /// the tail-page notes on [`MapOptions::len`]).
    pub fn raw_parts(&self) -> (*mut u8, usize) {
        (self.range.base(), self.range.len())
    }
}

// SAFETY: `start()..start()+len` stays mapped until `Drop`, which needs
// `&mut self`; writability follows the current protection.
unsafe impl Access for Mapping {
    fn base(&self) -> *mut u8 {
        self.start()
    }
    fn size(&self) -> usize {
        // Without PROT_READ (after `protect`) the checked accessors would
        // fault; an empty range makes them return `OutOfBounds` instead.
        if self.readable() { self.len } else { 0 }
    }
    fn writable(&self) -> bool {
        self.readable() && self.prot.contains(ProtFlags::WRITE)
    }
    fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }
    fn check_poison(&self, op: &'static str) -> Result<()> {
        self.range.check_poison(op, self.path.as_deref())
    }
}
