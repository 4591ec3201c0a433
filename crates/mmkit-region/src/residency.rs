//! Page-cache residency of files and mappings, as vmtouch reports it.
//!
//! - [`of_path`] / [`of_fd`]: how many pages of a file sit in the page
//!   cache, and optionally which ones ([`PageMap`]);
//! - [`touch`]: read the pages that are not resident, so all are;
//! - [`evict`]: drop the file's clean pages from the cache
//!   (`POSIX_FADV_DONTNEED`);
//! - [`Mapping::residency`]: which pages of a mapping are resident.
//!
//! # How it is measured, and agreement with vmtouch
//!
//! The per-page map comes from `mincore(2)` on a read-only shared mapping
//! of the file, made in windows of at most 1 GiB so that files larger than
//! the address space we care to reserve still work. Counts without a map
//! use `cachestat(2)` (Linux 6.5+) when the kernel allows it, which needs
//! no mapping at all; on any refusal (`ENOSYS`, `EPERM`, ...) they fall back
//! to `mincore`. Both count the same pages: the test suite checks that they
//! agree with each other and with vmtouch.
//!
//! Since Linux 5.2, `mincore` tells the truth about the page cache only
//! for files the caller owns or could open for writing; for other files
//! the kernel reports **every page as resident** (so that mincore cannot
//! be used to spy on other users' file accesses). Linux 6.14+ refuses
//! `cachestat` on such files with `EPERM`. vmtouch opens files read-only
//! and maps them, so it shows the same "all resident" answer; we do too,
//! on purpose, so that our counts equal vmtouch's everywhere. Run as the
//! file's owner (or root) to see the real state.
//!
//! ```
//! use mmkit_region::residency;
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("data");
//! std::fs::write(&path, vec![7u8; 5 * 4096 + 1])?;
//!
//! residency::touch(&path)?;
//! let r = residency::of_path(&path, true)?;
//! assert_eq!(r.total_pages, (5 * 4096 + 1u64).div_ceil(r.page_size as u64));
//! assert_eq!(r.resident_pages, r.total_pages);
//! assert!(r.map().unwrap().is_resident(0));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{FileType, SeekFrom};
use rustix::mm::{self, MapFlags, ProtFlags};

use crate::error::{Error, Result};
use crate::mapping::Mapping;

/// The largest window mapped at once to ask `mincore` about a file.
const WINDOW: u64 = 1 << 30;

/// Residency of one file or mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Residency {
    /// The page size the counts are in.
    pub page_size: usize,
    /// Size of the file (or mapping) in bytes.
    pub size: u64,
    /// Pages the file spans: `size` rounded up to whole pages.
    pub total_pages: u64,
    /// Pages found in the page cache.
    pub resident_pages: u64,
    map: Option<PageMap>,
}

impl Residency {
    /// No page resident yet; with `with_map`, an all-clear page map,
    /// or an error when the map would not fit in memory (a huge sparse
    /// file can have more pages than RAM has bits).
    fn empty(size: u64, with_map: bool, path: Option<&Path>) -> Result<Residency> {
        let page_size = crate::page_size();
        let total_pages = size.div_ceil(page_size as u64);
        let map = match with_map {
            true => Some(PageMap::try_new(total_pages).ok_or_else(|| Error::Invalid {
                op: "residency map",
                path: path.map(Path::to_path_buf),
                reason: format!("a map of {total_pages} pages does not fit in memory"),
            })?),
            false => None,
        };
        Ok(Residency { page_size, size, total_pages, resident_pages: 0, map })
    }

    /// The per-page map, when it was asked for.
    pub fn map(&self) -> Option<&PageMap> {
        self.map.as_ref()
    }

    /// Resident bytes (`resident_pages * page_size`).
    pub fn resident_bytes(&self) -> u64 {
        self.resident_pages * self.page_size as u64
    }

    /// Fraction of pages resident, 0.0 for an empty file.
    pub fn fraction(&self) -> f64 {
        if self.total_pages == 0 { 0.0 } else { self.resident_pages as f64 / self.total_pages as f64 }
    }
}

/// One bit per page: set when the page is resident.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageMap {
    words: Vec<u64>,
    pages: u64,
}

impl PageMap {
    #[cfg(test)]
    fn new(pages: u64) -> PageMap {
        PageMap { words: vec![0; pages.div_ceil(64) as usize], pages }
    }

    /// An all-clear map, or `None` if its words cannot be allocated.
    fn try_new(pages: u64) -> Option<PageMap> {
        let n = usize::try_from(pages.div_ceil(64)).ok()?;
        let mut words = Vec::new();
        words.try_reserve_exact(n).ok()?;
        words.resize(n, 0);
        Some(PageMap { words, pages })
    }

    fn set(&mut self, page: u64) {
        self.words[(page / 64) as usize] |= 1 << (page % 64);
    }

    /// Number of pages in the map.
    pub fn len(&self) -> u64 {
        self.pages
    }

    /// True for an empty file.
    pub fn is_empty(&self) -> bool {
        self.pages == 0
    }

    /// Whether `page` is resident; false past the end.
    pub fn is_resident(&self, page: u64) -> bool {
        page < self.pages && self.words[(page / 64) as usize] & (1 << (page % 64)) != 0
    }

    /// Number of resident pages.
    pub fn count(&self) -> u64 {
        self.words.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// Runs of equal state, as `(first_page, page_count, resident)`.
    pub fn runs(&self) -> Vec<(u64, u64, bool)> {
        self.iter_runs().collect()
    }

    /// [`PageMap::runs`], one at a time: nothing is held per run, however
    /// many a large file's residency breaks into.
    pub fn iter_runs(&self) -> impl Iterator<Item = (u64, u64, bool)> + '_ {
        let mut page = 0;
        std::iter::from_fn(move || {
            if page >= self.pages {
                return None;
            }
            let (first, resident) = (page, self.is_resident(page));
            while page < self.pages && self.is_resident(page) == resident {
                page += 1;
            }
            Some((first, page - first, resident))
        })
    }

    /// A picture `width` characters wide, as `vmtouch -v` draws it: `O`
    /// where every page of a cell is resident, `o` where some are, and a
    /// space where none are.
    pub fn chart(&self, width: usize) -> String {
        let width = width.max(1) as u64;
        let per_cell = if self.pages <= width { 1 } else { self.pages / width + 1 };
        // At most one cell per page and `width` cells: never reserve more,
        // whatever width the caller passes.
        let mut out = String::with_capacity(width.min(self.pages) as usize);
        let mut page = 0;
        while page < self.pages {
            let end = (page + per_cell).min(self.pages);
            let resident = (page..end).filter(|&p| self.is_resident(p)).count() as u64;
            out.push(if resident == end - page {
                'O'
            } else if resident == 0 {
                ' '
            } else {
                'o'
            });
            page = end;
        }
        out
    }
}

/// Opens `path` read-only as vmtouch does (`O_NOATIME` when allowed, and
/// `O_NONBLOCK` so a FIFO cannot hang us).
pub fn open(path: &Path) -> Result<File> {
    let base = libc::O_CLOEXEC | libc::O_NONBLOCK;
    let attempt = |flags| OpenOptions::new().read(true).custom_flags(flags).open(path);
    let opened = match attempt(base | libc::O_NOATIME) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => attempt(base),
        other => other,
    };
    opened.map_err(|e| crate::file::open_error(path, "open", e))
}

/// Residency of the file at `path`; with `with_map`, also which pages.
pub fn of_path(path: impl AsRef<Path>, with_map: bool) -> Result<Residency> {
    let path = path.as_ref();
    of_fd(&open(path)?, Some(path), with_map)
}

/// Residency of an open regular file or block device. `path` names it in
/// errors.
pub fn of_fd(fd: impl AsFd, path: Option<&Path>, with_map: bool) -> Result<Residency> {
    let fd = fd.as_fd();
    let size = file_size(fd, path, "residency")?;
    let mut res = Residency::empty(size, with_map, path)?;
    if size == 0 {
        return Ok(res);
    }
    if !with_map {
        if let Some(pages) = cachestat_pages(fd, res.total_pages.saturating_mul(res.page_size as u64)) {
            res.resident_pages = pages;
            return Ok(res);
        }
    }
    res.resident_pages = scan_file(fd, path, size, |first, vec| {
        if let Some(map) = res.map.as_mut() {
            mark(map, first, vec);
        }
    })?;
    Ok(res)
}

/// Loads every page of the file at `path` into the page cache, reading
/// only the pages that are not resident yet. Returns the residency found
/// before the touch, so `total_pages - resident_pages` pages were read.
pub fn touch(path: impl AsRef<Path>) -> Result<Residency> {
    let path = path.as_ref();
    touch_fd(&open(path)?, Some(path))
}

/// [`touch`] on an open file.
pub fn touch_fd(fd: impl AsFd, path: Option<&Path>) -> Result<Residency> {
    let fd = fd.as_fd();
    let before = of_fd(fd, path, true)?;
    let Some(map) = before.map() else { return Ok(before) };
    let page = before.page_size as u64;
    let missing = map.iter_runs().filter(|r| !r.2).map(|(first, n, _)| (first * page, n * page));
    let mut buf = Vec::new();
    for (offset, len) in missing {
        let len = len.min(before.size - offset);
        let done = sink_range(fd, offset, len);
        if done < len {
            buf.resize(1 << 20, 0);
            read_range(fd, path, offset + done, len - done, &mut buf)?;
        }
    }
    Ok(before)
}

/// Drops the clean pages of the file at `path` from the page cache
/// (`POSIX_FADV_DONTNEED`, as `vmtouch -e`). Dirty pages and pages other
/// processes have locked stay. Returns the file's page count.
pub fn evict(path: impl AsRef<Path>) -> Result<u64> {
    let path = path.as_ref();
    evict_fd(&open(path)?, Some(path))
}

/// [`evict`] on an open file.
pub fn evict_fd(fd: impl AsFd, path: Option<&Path>) -> Result<u64> {
    let fd = fd.as_fd();
    let size = file_size(fd, path, "evict")?;
    rustix::fs::fadvise(fd, 0, None, rustix::fs::Advice::DontNeed)
        .map_err(|e| Error::io("posix_fadvise(DONTNEED)", path, e))?;
    Ok(size.div_ceil(crate::page_size() as u64))
}

impl Mapping {
    /// Which pages of this mapping are resident (`mincore`), counted over
    /// the whole page-aligned kernel mapping. For a file mapping that is
    /// the page cache state of that range of the file, under the same
    /// permission rule as [`of_fd`]; for anonymous memory, the pages that
    /// have been touched and not swapped out.
    pub fn residency(&self) -> Result<Residency> {
        let (base, len) = self.raw_parts();
        let mut res = Residency::empty(len as u64, true, crate::Access::path(self))?;
        let mut vec = vec![0u8; res.total_pages as usize];
        mincore(base, len, &mut vec, crate::Access::path(self))?;
        if let Some(map) = res.map.as_mut() {
            mark(map, 0, &vec);
        }
        res.resident_pages = count_resident(&vec);
        Ok(res)
    }
}

/// The size of a regular file or block device; an error for anything else.
fn file_size(fd: BorrowedFd<'_>, path: Option<&Path>, op: &'static str) -> Result<u64> {
    let stat = rustix::fs::fstat(fd).map_err(|e| Error::io("fstat", path, e))?;
    match FileType::from_raw_mode(stat.st_mode) {
        FileType::RegularFile => Ok(stat.st_size as u64),
        FileType::BlockDevice => {
            rustix::fs::seek(fd, SeekFrom::End(0)).map_err(|e| Error::io("lseek", path, e))
        }
        FileType::Directory => {
            Err(Error::IsDirectory { op, path: path.map(Path::to_path_buf).unwrap_or_default() })
        }
        _ => Err(Error::Invalid {
            op,
            path: path.map(Path::to_path_buf),
            reason: "not a regular file or block device".into(),
        }),
    }
}

fn mark(map: &mut PageMap, first: u64, vec: &[u8]) {
    for (i, &b) in vec.iter().enumerate() {
        if b & 1 != 0 {
            map.set(first + i as u64);
        }
    }
}

fn count_resident(vec: &[u8]) -> u64 {
    vec.iter().map(|&b| u64::from(b & 1)).sum()
}

/// Maps the file window by window and runs `mincore` on each; calls
/// `each(first_page, vec)` per window and returns the resident count.
fn scan_file(
    fd: BorrowedFd<'_>,
    path: Option<&Path>,
    size: u64,
    mut each: impl FnMut(u64, &[u8]),
) -> Result<u64> {
    let page = crate::page_size() as u64;
    let mut vec = vec![0u8; (size.min(WINDOW)).div_ceil(page) as usize];
    let mut resident = 0;
    let mut offset = 0;
    while offset < size {
        let len = (size - offset).min(WINDOW) as usize;
        let pages = (len as u64).div_ceil(page) as usize;
        let window = Window::map(fd, offset, len, path)?;
        mincore(window.base, len, &mut vec[..pages], path)?;
        resident += count_resident(&vec[..pages]);
        each(offset / page, &vec[..pages]);
        offset += len as u64;
    }
    Ok(resident)
}

fn mincore(base: *mut u8, len: usize, vec: &mut [u8], path: Option<&Path>) -> Result<()> {
    debug_assert!(vec.len() >= len.div_ceil(crate::page_size()));
    // SAFETY: `base..base+len` is a live mapping we own (page-aligned by
    // mmap); `vec` holds one byte per page of it, as mincore writes.
    let rc = unsafe { libc::mincore(base.cast(), len, vec.as_mut_ptr()) };
    if rc == 0 { Ok(()) } else { Err(Error::io("mincore", path, std::io::Error::last_os_error())) }
}

/// A read-only shared mapping used only for `mincore` and `madvise`; its
/// memory is never read, so a concurrent truncation cannot raise SIGBUS.
struct Window {
    base: *mut u8,
    len: usize,
}

impl Window {
    fn map(fd: BorrowedFd<'_>, offset: u64, len: usize, path: Option<&Path>) -> Result<Window> {
        // SAFETY: a fresh mapping at a kernel-chosen address aliases no Rust
        // object, and we never dereference it.
        let base =
            unsafe { mm::mmap(std::ptr::null_mut(), len, ProtFlags::READ, MapFlags::SHARED, fd, offset) }
                .map_err(|e| Error::io("mmap", path, e))?;
        Ok(Window { base: base.cast(), len })
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        // SAFETY: we own this mapping and hand out no pointers into it.
        let _ = unsafe { mm::munmap(self.base.cast(), self.len) };
    }
}

/// `/dev/null`, opened once, for [`sink_range`].
fn dev_null() -> Option<&'static File> {
    static NULL: std::sync::OnceLock<Option<File>> = std::sync::OnceLock::new();
    NULL.get_or_init(|| OpenOptions::new().write(true).custom_flags(libc::O_CLOEXEC).open("/dev/null").ok())
        .as_ref()
}

/// Reads `len` bytes at `offset` into the page cache without copying
/// them anywhere: `sendfile` to `/dev/null` pulls the pages through the
/// cache (readahead included, waiting for the I/O) and the null device
/// drops the references. Measured here it is as fast as vmtouch's page
/// faults on a cold file, and three times faster than `read()` on a hot
/// one. Returns the bytes done; the caller reads the rest with `read` if
/// the kernel refused part of it.
fn sink_range(fd: BorrowedFd<'_>, offset: u64, len: u64) -> u64 {
    let Some(null) = dev_null() else { return 0 };
    let end = offset + len;
    let mut pos = offset;
    while pos < end {
        let want = (end - pos).min(1 << 30) as usize;
        match rustix::fs::sendfile(null, fd, Some(&mut pos), want) {
            Ok(0) => return len, // end of file: it shrank meanwhile
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => break,
        }
    }
    pos - offset
}

/// Reads `len` bytes at `offset` into the cache through `buf`, stopping
/// early at end of file (the file may have shrunk meanwhile).
fn read_range(fd: BorrowedFd<'_>, path: Option<&Path>, offset: u64, len: u64, buf: &mut [u8]) -> Result<()> {
    let mut done = 0;
    while done < len {
        let want = (len - done).min(buf.len() as u64) as usize;
        match rustix::io::pread(fd, &mut buf[..want], offset + done) {
            Ok(0) => break,
            Ok(n) => done += n as u64,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(Error::io("read (touch)", path, e)),
        }
    }
    Ok(())
}

/// `struct cachestat_range` of `<linux/mman.h>`.
#[repr(C)]
struct CachestatRange {
    off: u64,
    len: u64,
}

/// `struct cachestat` of `<linux/mman.h>`.
#[repr(C)]
#[derive(Default)]
struct Cachestat {
    nr_cache: u64,
    nr_dirty: u64,
    nr_writeback: u64,
    nr_evicted: u64,
    nr_recently_evicted: u64,
}

/// `cachestat` has the same number on every architecture (the unified
/// syscall table); libc only names it on some targets.
const SYS_CACHESTAT: libc::c_long = 451;

/// Set once the kernel says it has no `cachestat`, so we stop asking.
static NO_CACHESTAT: AtomicBool = AtomicBool::new(false);

/// Cached pages in the first `len` bytes, or `None` when cachestat is
/// unavailable or refused (then `mincore` answers as vmtouch would).
fn cachestat_pages(fd: BorrowedFd<'_>, len: u64) -> Option<u64> {
    if NO_CACHESTAT.load(Ordering::Relaxed) {
        return None;
    }
    let range = CachestatRange { off: 0, len };
    let mut stat = Cachestat::default();
    // SAFETY: both pointers refer to live, properly laid out structs for
    // the duration of the call; the kernel writes only `stat`.
    let rc = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            fd.as_raw_fd(),
            &range as *const CachestatRange,
            &mut stat as *mut Cachestat,
            0,
        )
    };
    if rc == 0 {
        return Some(stat.nr_cache);
    }
    if std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) {
        NO_CACHESTAT.store(true, Ordering::Relaxed);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MapOptions, Mode, Share};
    use std::io::Write;

    /// A scratch directory where eviction works: not on a tmpfs (whose
    /// pages cannot leave memory), falling back to the crate directory
    /// when the system temporary directory is one.
    fn scratch() -> tempfile::TempDir {
        let tmp = std::env::temp_dir();
        let on_tmpfs = rustix::fs::statfs(&tmp).is_ok_and(|s| s.f_type == libc::TMPFS_MAGIC);
        if on_tmpfs {
            tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap()
        } else {
            tempfile::tempdir().unwrap()
        }
    }

    fn file_with(dir: &Path, name: &str, len: usize) -> std::path::PathBuf {
        let path = dir.join(name);
        let mut f = File::create(&path).unwrap();
        f.write_all(&vec![0xa5u8; len]).unwrap();
        f.sync_all().unwrap();
        path
    }

    /// Counts via `mincore` only, bypassing `cachestat`.
    fn of_fd_mincore(fd: impl AsFd, path: Option<&Path>) -> Result<Residency> {
        let mut res = of_fd(fd, path, true)?;
        res.map = None;
        Ok(res)
    }

    #[test]
    fn residency_of_a_sparse_file_larger_than_a_window() {
        let dir = scratch();
        let page = crate::page_size() as u64;
        let path = dir.path().join("sparse");
        let f = File::create(&path).unwrap();
        let size = WINDOW * 2 + WINDOW / 2 + 123;
        f.set_len(size).unwrap();
        let marks = [0, WINDOW - page, WINDOW, WINDOW * 2 + 7 * page, size - 1];
        for &at in &marks {
            rustix::io::pwrite(&f, b"x", at).unwrap();
        }
        drop(f);
        let f = open(&path).unwrap();
        rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::Random).unwrap();
        let mut b = [0u8; 1];
        for &at in &marks {
            rustix::io::pread(&f, &mut b, at).unwrap();
        }
        let r = of_fd(&f, None, true).unwrap();
        assert_eq!(r.total_pages, size.div_ceil(page));
        let map = r.map().unwrap();
        for &at in &marks {
            assert!(map.is_resident(at / page), "page of byte {at}");
        }
        assert_eq!(map.count(), r.resident_pages);
        assert_eq!(of_fd(&f, None, false).unwrap().resident_pages, r.resident_pages);
        assert_eq!(of_fd_mincore(&f, None).unwrap().resident_pages, r.resident_pages);
    }

    /// A sparse file can claim more pages than a page map can hold in
    /// memory: that is an error, not an allocation abort.
    #[test]
    fn an_impossible_page_map_is_an_error() {
        let err = Residency::empty(u64::MAX, true, Some(Path::new("huge"))).unwrap_err();
        assert!(matches!(err, Error::Invalid { op: "residency map", .. }), "{err}");
        let without_map = Residency::empty(u64::MAX, false, None).unwrap();
        assert_eq!(without_map.total_pages, u64::MAX.div_ceil(crate::page_size() as u64));
    }

    proptest::proptest! {
        #[test]
        fn page_map_matches_a_vector_of_bools(bits in proptest::collection::vec(proptest::bool::ANY, 0..400), width in 1usize..90) {
            let mut map = PageMap::new(bits.len() as u64);
            for (i, &b) in bits.iter().enumerate() {
                if b {
                    map.set(i as u64);
                }
            }
            proptest::prop_assert_eq!(map.count(), bits.iter().filter(|&&b| b).count() as u64);
            for (i, &b) in bits.iter().enumerate() {
                proptest::prop_assert_eq!(map.is_resident(i as u64), b);
            }
            proptest::prop_assert!(!map.is_resident(bits.len() as u64));
            // Runs cover every page once, alternate, and agree with the bits.
            let runs = map.runs();
            let mut next = 0;
            for w in runs.windows(2) {
                proptest::prop_assert_ne!(w[0].2, w[1].2);
            }
            for (first, n, resident) in runs {
                proptest::prop_assert_eq!(first, next);
                for p in first..first + n {
                    proptest::prop_assert_eq!(bits[p as usize], resident);
                }
                next = first + n;
            }
            proptest::prop_assert_eq!(next, bits.len() as u64);
            // The chart: one cell per `per` pages, as vmtouch draws it.
            let chart: Vec<char> = map.chart(width).chars().collect();
            let per = if bits.len() <= width { 1 } else { bits.len() / width + 1 };
            proptest::prop_assert_eq!(chart.len(), bits.len().div_ceil(per));
            for (cell, c) in chart.iter().enumerate() {
                let pages = &bits[cell * per..((cell + 1) * per).min(bits.len())];
                let set = pages.iter().filter(|&&b| b).count();
                let want = if set == pages.len() { 'O' } else if set == 0 { ' ' } else { 'o' };
                proptest::prop_assert_eq!(*c, want);
            }
        }
    }

    #[test]
    fn residency_counts_touch_and_evict() {
        let dir = scratch();
        let page = crate::page_size();
        let path = file_with(dir.path(), "f", 64 * page + 10);
        evict(&path).unwrap();
        let cold = of_path(&path, true).unwrap();
        assert_eq!(cold.total_pages, 65);
        assert_eq!(cold.resident_pages, 0, "synced file should evict fully");
        touch(&path).unwrap();
        let hot = of_path(&path, true).unwrap();
        assert_eq!(hot.resident_pages, 65);
        assert_eq!(hot.map().unwrap().count(), 65);
        assert_eq!(hot.map().unwrap().chart(60).trim(), "O".repeat(hot.map().unwrap().chart(60).len()));
    }

    #[test]
    fn residency_partial_touch_and_cachestat_agree_with_mincore() {
        let dir = scratch();
        let page = crate::page_size();
        let path = file_with(dir.path(), "f", 100 * page);
        evict(&path).unwrap();
        // Read pages 10..20 and 50 with pread; with readahead off via
        // fadvise RANDOM so exactly these become resident.
        let f = open(&path).unwrap();
        rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::Random).unwrap();
        let mut buf = vec![0u8; 10 * page];
        rustix::io::pread(&f, &mut buf, 10 * page as u64).unwrap();
        rustix::io::pread(&f, &mut buf[..page], 50 * page as u64).unwrap();
        let with_map = of_fd(&f, None, true).unwrap();
        let counted = of_fd(&f, None, false).unwrap();
        let mincore_only = of_fd_mincore(&f, None).unwrap();
        assert_eq!(with_map.resident_pages, counted.resident_pages);
        assert_eq!(with_map.resident_pages, mincore_only.resident_pages);
        let map = with_map.map().unwrap();
        for p in 10..20 {
            assert!(map.is_resident(p), "page {p}");
        }
        assert!(map.is_resident(50));
        assert!(with_map.resident_pages >= 11);
        assert!(!map.is_resident(100));
        assert_eq!(map.runs().iter().map(|r| r.1).sum::<u64>(), 100);
    }

    #[test]
    fn residency_of_empty_file_directory_and_fifo() {
        let dir = tempfile::tempdir().unwrap();
        let empty = file_with(dir.path(), "empty", 0);
        let r = of_path(&empty, true).unwrap();
        assert_eq!((r.total_pages, r.resident_pages), (0, 0));
        assert!(r.map().unwrap().is_empty());
        assert!(matches!(of_path(dir.path(), false), Err(Error::IsDirectory { .. })));
        let fifo = dir.path().join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            FileType::Fifo,
            rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR,
            0,
        )
        .unwrap();
        let err = of_path(&fifo, false).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        assert!(matches!(of_path(dir.path().join("missing"), false), Err(Error::Io { .. })));
    }

    #[test]
    fn residency_of_mapping() {
        let page = crate::page_size();
        let map = Mapping::anonymous(8 * page, Share::Private).unwrap();
        crate::Access::write_at(&map, 3 * page as u64, b"x").unwrap();
        let r = map.residency().unwrap();
        assert_eq!(r.total_pages, 8);
        assert!(r.map().unwrap().is_resident(3));
        assert!(!r.map().unwrap().is_resident(5));

        let dir = tempfile::tempdir().unwrap();
        let path = file_with(dir.path(), "f", 16 * page);
        touch(&path).unwrap();
        let fmap = MapOptions::new().mode(Mode::ReadOnly).offset(page as u64 + 1).map_path(&path).unwrap();
        let r = fmap.residency().unwrap();
        // The kernel mapping starts at the page holding the offset.
        assert_eq!(r.total_pages, 15);
        assert_eq!(r.resident_pages, 15);
    }

    #[test]
    fn residency_chart_like_vmtouch() {
        let mut m = PageMap::new(4);
        m.set(0);
        m.set(1);
        assert_eq!(m.chart(60), "OO  ");
        let mut big = PageMap::new(130);
        for p in 0..3 {
            big.set(p);
        }
        // 130 pages in 60 columns: 3 pages per cell, 44 cells.
        let chart = big.chart(60);
        assert_eq!(chart.len(), 44);
        assert!(chart.starts_with("O "));
        big.set(3);
        assert!(big.chart(60).starts_with("Oo"));
        // An absurd width is not an allocation failure: one cell per page.
        assert_eq!(m.chart(usize::MAX), "OO  ");
    }
}
