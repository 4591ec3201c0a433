//! A mapped file that grows in place: the base address never moves.
//!
//! [`GrowableFile`] reserves a large virtual range once (an anonymous
//! `PROT_NONE`, `MAP_NORESERVE` mapping that costs no memory), then maps the
//! file over the start of that range with `MAP_FIXED | MAP_SHARED`, one
//! extension at a time as the file grows. Pointers and offsets into the
//! mapping therefore stay valid for the life of the value.
//!
//! Growth uses `fallocate(2)`, so a full disk is reported by
//! [`GrowableFile::grow_to`] as [`Error::NoSpace`] instead of a SIGBUS at
//! some later write into a sparse page. Where the filesystem does not
//! support `fallocate` (`EOPNOTSUPP`), growth falls back to `ftruncate`,
//! which makes a sparse file: then a full disk can still surface later, as
//! a SIGBUS that the [`sigbus`](crate::sigbus) guard turns into
//! [`Error::Poisoned`].
//!
//! Several processes may map the same file. Each keeps the length it knows
//! in an atomic, so checked accesses cost no system call;
//! [`GrowableFile::ensure_len`] and [`GrowableFile::refresh`] look at the
//! file (`fstat`) only when a process needs more than it has mapped.

use std::fs::{File, OpenOptions};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use rustix::fs::FallocateFlags;
use rustix::io::Errno;
use rustix::mm::{self, MapFlags, MsyncFlags, ProtFlags};

use crate::access::Access;
use crate::error::{Error, Result};
use crate::mapping::{Advice, Mode, OwnedRange};

/// A file mapped inside a fixed virtual reservation, growable in place.
///
/// ```
/// use mmkit_region::{Access, GrowableFile};
/// let dir = tempfile::tempdir()?;
/// let file = GrowableFile::create(dir.path().join("log"), 4096, 1 << 30)?;
/// let base = file.base();
/// file.write_at(0, b"head")?;
/// file.grow_to(1 << 20)?; // 1 MiB, same address
/// assert_eq!(file.base(), base);
/// file.write_at((1 << 20) - 4, b"tail")?;
/// assert_eq!(file.len(), 1 << 20);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct GrowableFile {
    file: File,
    path: PathBuf,
    /// The whole reservation, file-backed at its start.
    range: OwnedRange,
    mode: Mode,
    /// Bytes this process may access: the file length it last saw.
    len: AtomicU64,
    /// Page-aligned length of the file-backed prefix of the reservation.
    /// The mutex is also the grow lock.
    mapped: Mutex<usize>,
}

fn round_up(n: usize, page: usize) -> Option<usize> {
    n.checked_add(page - 1).map(|v| v / page * page)
}

impl GrowableFile {
    /// Creates (or truncates, like `File::create`) the file at `path`,
    /// allocates `initial_len` bytes and maps them inside a reservation of
    /// `reserve` bytes (rounded up to a page).
    pub fn create(path: impl AsRef<Path>, initial_len: u64, reserve: usize) -> Result<GrowableFile> {
        Self::create_with(path.as_ref(), initial_len, reserve, false)
    }

    /// Like [`GrowableFile::create`], but fails if the file exists
    /// (`O_EXCL`).
    pub fn create_new(path: impl AsRef<Path>, initial_len: u64, reserve: usize) -> Result<GrowableFile> {
        Self::create_with(path.as_ref(), initial_len, reserve, true)
    }

    fn create_with(path: &Path, initial_len: u64, reserve: usize, exclusive: bool) -> Result<GrowableFile> {
        let reserved = Self::check_reserve(path, reserve, initial_len)?;
        let mut opts = OpenOptions::new();
        opts.read(true).write(true).custom_flags(libc::O_CLOEXEC);
        if exclusive {
            opts.create_new(true);
        } else {
            opts.create(true).truncate(true);
        }
        let file = opts.open(path).map_err(|e| crate::file::open_error(path, "create growable file", e))?;
        let grown = Self::with_file(file, path, Mode::ReadWrite, reserved)?;
        grown.grow_to(initial_len)?;
        Ok(grown)
    }

    /// Opens an existing file and maps all of it inside a reservation of
    /// `reserve` bytes. [`Mode::ReadOnly`] and [`Mode::CopyOnWrite`] open
    /// the file read-only and cannot grow or shrink it, but
    /// [`GrowableFile::refresh`] still maps what other processes add.
    pub fn open(path: impl AsRef<Path>, mode: Mode, reserve: usize) -> Result<GrowableFile> {
        let path = path.as_ref();
        let file = crate::file::open_for(path, mode != Mode::ReadWrite, "open growable file")?;
        let stat = crate::file::stat_not_dir(file.as_fd(), Some(path), "open growable file")?;
        let reserved = Self::check_reserve(path, reserve, stat.st_size as u64)?;
        let grown = Self::with_file(file, path, mode, reserved)?;
        grown.refresh()?;
        Ok(grown)
    }

    fn check_reserve(path: &Path, reserve: usize, len: u64) -> Result<usize> {
        if reserve == 0 {
            return Err(Error::ZeroLength { op: "reserve", path: Some(path.to_path_buf()) });
        }
        let reserved = round_up(reserve, crate::page_size()).ok_or_else(|| Error::Invalid {
            op: "reserve",
            path: Some(path.to_path_buf()),
            reason: format!("reservation of {reserve} bytes overflows the address space"),
        })?;
        if len > reserved as u64 {
            return Err(too_small(path, "reserve", len, reserved));
        }
        Ok(reserved)
    }

    fn with_file(file: File, path: &Path, mode: Mode, reserved: usize) -> Result<GrowableFile> {
        // SAFETY: a fresh anonymous mapping at an address the kernel picks
        // aliases nothing. PROT_NONE + NORESERVE commits no memory.
        let base = unsafe {
            mm::mmap_anonymous(
                std::ptr::null_mut(),
                reserved,
                ProtFlags::empty(),
                MapFlags::PRIVATE | MapFlags::NORESERVE,
            )
        }
        .map_err(|e| Error::io("reserve address range", Some(path), e))?;
        let mut range = OwnedRange::new(base.cast(), reserved);
        range.guard();
        Ok(GrowableFile {
            file,
            path: path.to_path_buf(),
            range,
            mode,
            len: AtomicU64::new(0),
            mapped: Mutex::new(0),
        })
    }

    /// Bytes mapped and accessible now (the file length this process last
    /// saw).
    pub fn len(&self) -> u64 {
        self.len.load(Ordering::Acquire)
    }

    /// True when nothing is mapped yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Size of the virtual reservation; the file can grow up to this.
    pub fn reserved(&self) -> usize {
        self.range.len()
    }

    /// The open file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The path the file was opened with.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The access mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// True once a SIGBUS was caught in the reservation; see
    /// [`crate::sigbus`].
    #[inline]
    pub fn is_poisoned(&self) -> bool {
        self.range.is_poisoned()
    }

    fn lock_mapped(&self) -> MutexGuard<'_, usize> {
        // A panic while holding the lock leaves `mapped` accurate: it is
        // only updated after a successful mmap.
        self.mapped.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn require_growable(&self, op: &'static str) -> Result<()> {
        if self.mode != Mode::ReadWrite {
            return Err(Error::ReadOnly { op, path: Some(self.path.clone()) });
        }
        self.check_poison(op)
    }

    /// Grows the file to `new_len` bytes and maps the extension in place.
    /// A no-op if the file is already mapped that far. Safe to call from
    /// several threads and processes at once: the file never shrinks here.
    ///
    /// Fails with [`Error::NoSpace`] when the disk is full, and with
    /// [`Error::Invalid`] when `new_len` exceeds the reservation.
    pub fn grow_to(&self, new_len: u64) -> Result<()> {
        if new_len <= self.len() {
            return Ok(());
        }
        self.require_growable("grow")?;
        if new_len > self.reserved() as u64 {
            return Err(too_small(&self.path, "grow", new_len, self.reserved()));
        }
        let mut mapped = self.lock_mapped();
        if new_len <= self.len() {
            return Ok(());
        }
        self.allocate(new_len)?;
        self.map_up_to(&mut mapped, new_len)?;
        self.len.store(new_len, Ordering::Release);
        Ok(())
    }

    /// Makes the file at least `new_len` bytes long with real blocks.
    fn allocate(&self, new_len: u64) -> Result<()> {
        let size = self.file_size()?;
        if size >= new_len {
            return Ok(());
        }
        let start = size.min(self.len());
        match rustix::fs::fallocate(&self.file, FallocateFlags::empty(), start, new_len - start) {
            Ok(()) => Ok(()),
            Err(Errno::OPNOTSUPP) => self.truncate_up(new_len),
            Err(e) => Err(self.grow_error(new_len, e)),
        }
    }

    /// Fallback for filesystems without `fallocate`: extends sparsely,
    /// never shrinking a file another process grew meanwhile (the window
    /// between `fstat` and `ftruncate` is the remaining race).
    fn truncate_up(&self, new_len: u64) -> Result<()> {
        if self.file_size()? >= new_len {
            return Ok(());
        }
        rustix::fs::ftruncate(&self.file, new_len).map_err(|e| self.grow_error(new_len, e))
    }

    fn grow_error(&self, new_len: u64, e: Errno) -> Error {
        if e == Errno::NOSPC || e == Errno::DQUOT || e == Errno::FBIG {
            Error::NoSpace { op: "grow", path: Some(self.path.clone()), len: new_len, source: e.into() }
        } else {
            Error::io("grow (fallocate)", Some(&self.path), e)
        }
    }

    fn file_size(&self) -> Result<u64> {
        let stat = rustix::fs::fstat(&self.file).map_err(|e| Error::io("fstat", Some(&self.path), e))?;
        Ok(stat.st_size as u64)
    }

    /// Maps the file over the reservation from `*mapped` up to `len`
    /// (rounded to a page). Caller holds the grow lock.
    fn map_up_to(&self, mapped: &mut usize, len: u64) -> Result<()> {
        let page = crate::page_size();
        let want = round_up(len as usize, page).unwrap_or(self.reserved()).min(self.reserved());
        if want <= *mapped {
            return Ok(());
        }
        let (prot, share) = match self.mode {
            Mode::ReadOnly => (ProtFlags::READ, MapFlags::SHARED),
            Mode::ReadWrite => (ProtFlags::READ | ProtFlags::WRITE, MapFlags::SHARED),
            Mode::CopyOnWrite => (ProtFlags::READ | ProtFlags::WRITE, MapFlags::PRIVATE),
        };
        let at = self.range.base().wrapping_add(*mapped);
        let added = want - *mapped;
        // SAFETY: `at..at+added` lies inside our own reservation
        // (want <= reserved) and is still the PROT_NONE placeholder (or,
        // if the range was poisoned meanwhile, anonymous zero pages past
        // the accessible length), which nobody relies on; MAP_FIXED
        // replaces only that part.
        unsafe { mm::mmap(at.cast(), added, prot, share | MapFlags::FIXED, &self.file, *mapped as u64) }
            .map_err(|e| Error::io("mmap extension", Some(&self.path), e))?;
        *mapped = want;
        self.zero_if_poisoned(at, added)
    }

    /// Puts zero pages back over `len` bytes at `at`, just mapped from the
    /// file, if the range was poisoned before or while they were mapped.
    ///
    /// Why: the SIGBUS handler replaces a poisoned range only once, and
    /// treats every later fault in it as already handled. File pages
    /// mapped after that replacement would fault for ever once the file
    /// is cut again. The handler sets the flag before it remaps, so either
    /// its remap covered our pages or we see the flag here.
    fn zero_if_poisoned(&self, at: *mut u8, len: usize) -> Result<()> {
        if !self.is_poisoned() {
            return Ok(());
        }
        // SAFETY: `at..at+len` lies inside our own reservation and was
        // poisoned, so only zero pages may be there; a thread faulting in
        // it meanwhile retries until they are.
        unsafe { crate::sigbus::replace_with_zeros(at as usize, len) }
            .map_err(|e| Error::io("mmap zero pages over poisoned extension", Some(&self.path), e))?;
        self.check_poison("grow")
    }

    /// Looks at the file's current length and maps whatever other
    /// processes added, up to the reservation. Returns the accessible
    /// length.
    ///
    /// If the file shrank, the accessible length drops too (so checked
    /// accesses fail cleanly), but the pages stay mapped until
    /// [`GrowableFile::shrink_to`]: another thread may be inside them.
    pub fn refresh(&self) -> Result<u64> {
        self.check_poison("refresh")?;
        let mut mapped = self.lock_mapped();
        let visible = self.file_size()?.min(self.reserved() as u64);
        self.map_up_to(&mut mapped, visible)?;
        self.len.store(visible, Ordering::Release);
        Ok(visible)
    }

    /// Makes sure at least `len` bytes are mapped. Free (one atomic load)
    /// when they already are; otherwise refreshes, and fails with
    /// [`Error::OutOfBounds`] if the file is still shorter.
    pub fn ensure_len(&self, len: u64) -> Result<()> {
        if len <= self.len() {
            return Ok(());
        }
        if len > self.reserved() as u64 {
            return Err(too_small(&self.path, "ensure_len", len, self.reserved()));
        }
        let now = self.refresh()?;
        if len > now {
            return Err(Error::OutOfBounds {
                op: "ensure_len",
                path: Some(self.path.clone()),
                offset: 0,
                len,
                size: now,
            });
        }
        Ok(())
    }

    /// Shrinks the file to `new_len` bytes: first puts the reservation
    /// placeholder back over the pages past the new end, then truncates.
    /// A no-op if the file is not longer (judged by the file itself, so a
    /// length another process added is cut too). Other processes that
    /// still map the cut pages get a SIGBUS (caught by their guard) if
    /// they touch them; they should [`refresh`](GrowableFile::refresh)
    /// first.
    pub fn shrink_to(&mut self, new_len: u64) -> Result<()> {
        self.require_growable("shrink")?;
        let size = self.file_size()?;
        if new_len >= self.len() && new_len >= size {
            return Ok(());
        }
        let keep = usize::try_from(new_len).ok().and_then(|n| round_up(n, crate::page_size()));
        let keep = keep.unwrap_or(self.reserved()).min(self.reserved());
        let mapped = self.mapped.get_mut().unwrap_or_else(|e| e.into_inner());
        if keep < *mapped {
            let at = self.range.base().wrapping_add(keep);
            // SAFETY: `&mut self` means no borrow into the mapping is alive;
            // the range is inside our reservation, so MAP_FIXED replaces
            // only our own pages.
            unsafe {
                mm::mmap_anonymous(
                    at.cast(),
                    *mapped - keep,
                    ProtFlags::empty(),
                    MapFlags::PRIVATE | MapFlags::NORESERVE | MapFlags::FIXED,
                )
            }
            .map_err(|e| Error::io("unmap tail", Some(&self.path), e))?;
            *mapped = keep;
        }
        // Never claim more than the file holds, so checked accesses fail
        // cleanly instead of faulting past its end.
        let len = self.len.get_mut();
        *len = (*len).min(new_len).min(size);
        if size <= new_len {
            // Another process already cut the file: never extend it here.
            return Ok(());
        }
        rustix::fs::ftruncate(&self.file, new_len)
            .map_err(|e| Error::io("shrink (ftruncate)", Some(&self.path), e))
    }

    /// Gives the kernel advice about the mapped part of the file
    /// (`madvise(2)`); growth later does not inherit it.
    pub fn advise(&self, advice: Advice) -> Result<()> {
        let mapped = *self.lock_mapped();
        if mapped == 0 {
            return Ok(());
        }
        // SAFETY: `base..base+mapped` is our own file-backed prefix; the
        // advice kinds in `Advice` never change the memory's contents.
        unsafe { mm::madvise(self.range.base().cast(), mapped, advice.raw()) }
            .map_err(|e| Error::io("madvise", Some(&self.path), e))
    }

    /// Brings the pages of `len` bytes at `offset` into this process's page
    /// tables now, writable when the file is open read-write
    /// ([`madvise(2)`](https://man7.org/linux/man-pages/man2/madvise.2.html)
    /// `MADV_POPULATE_WRITE`/`READ`, Linux 5.14+): one system call instead
    /// of a page fault per page, for a range about to be written whole
    /// (about 40% less time than faulting in fresh shared memory page by
    /// page). The contents do not change. On older kernels it does
    /// nothing; a range outside the mapped file is an error.
    pub fn populate_range(&self, offset: u64, len: u64) -> Result<()> {
        let (at, len) = self.page_span("populate", offset, len)?;
        // Not writable for a private copy: that would copy every page.
        let advice = match self.mode {
            Mode::ReadWrite => mm::Advice::LinuxPopulateWrite,
            _ => mm::Advice::LinuxPopulateRead,
        };
        // SAFETY: `page_span` checked the range against the mapped prefix
        // (the kernel rounds the length up to whole pages, which the mapping
        // covers); populating faults pages in and never changes contents.
        match unsafe { mm::madvise(at.cast(), len, advice) } {
            Ok(()) => self.check_poison("populate"),
            Err(Errno::INVAL) => Ok(()),
            Err(e) => Err(Error::io("populate (madvise)", Some(&self.path), e)),
        }
    }

    /// Writes dirty pages back to the file and waits (`msync(MS_SYNC)`).
    pub fn flush(&self) -> Result<()> {
        self.flush_range(0, self.len())
    }

    /// Starts write-back of all dirty pages without waiting.
    pub fn flush_async(&self) -> Result<()> {
        self.msync(0, self.len(), MsyncFlags::ASYNC)
    }

    /// [`GrowableFile::flush`] for `len` bytes at `offset`.
    pub fn flush_range(&self, offset: u64, len: u64) -> Result<()> {
        self.msync(offset, len, MsyncFlags::SYNC)
    }

    fn msync(&self, offset: u64, len: u64, flags: MsyncFlags) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        let (at, len) = self.page_span("msync", offset, len)?;
        // SAFETY: `page_span` checked the range against the mapped prefix.
        unsafe { mm::msync(at.cast(), len, flags) }.map_err(|e| Error::io("msync", Some(&self.path), e))?;
        self.check_poison("msync")
    }

    /// The page-aligned start, and the length from there, of `len` bytes at
    /// `offset`, checked to lie in the mapped file: for the kernel calls that
    /// take whole pages (they round the length up themselves).
    fn page_span(&self, op: &'static str, offset: u64, len: u64) -> Result<(*mut u8, usize)> {
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        self.checked_ptr(op, offset, len)?;
        let start = offset as usize / crate::page_size() * crate::page_size();
        Ok((self.range.base().wrapping_add(start), offset as usize + len - start))
    }
}

fn too_small(path: &Path, op: &'static str, len: u64, reserved: usize) -> Error {
    Error::Invalid {
        op,
        path: Some(path.to_path_buf()),
        reason: format!(
            "{len} bytes do not fit the reserved address range of {reserved} bytes; reserve more"
        ),
    }
}

// SAFETY: `base()..base()+size()` is mapped from the file: `len` only grows
// after the pages are mapped, and pages are only unmapped by `shrink_to`
// (which needs `&mut self`) or `Drop`. A refresh that lowers `len` leaves
// the pages mapped.
unsafe impl Access for GrowableFile {
    fn base(&self) -> *mut u8 {
        self.range.base()
    }
    fn size(&self) -> usize {
        self.len() as usize
    }
    fn writable(&self) -> bool {
        self.mode != Mode::ReadOnly
    }
    fn path(&self) -> Option<&Path> {
        Some(&self.path)
    }
    fn check_poison(&self, op: &'static str) -> Result<()> {
        self.range.check_poison(op, Some(&self.path))
    }
}

impl AsFd for GrowableFile {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.file.as_fd()
    }
}
