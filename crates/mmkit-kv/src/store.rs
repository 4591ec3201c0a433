//! The database file, mapped once inside a large reserved address range,
//! and bounds-checked access to its pages.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use mmkit_region::{Access, GrowableFile, Mode};

use crate::error::{Error, Result};
use crate::meta::{META_LEN, META_SLOTS};
use crate::page::{Bad, Key, Keys, OVERFLOW_HEADER, PAGE, Page, u64_at};

/// The mapped data file.
pub(crate) struct Store {
    pub(crate) file: GrowableFile,
    pub(crate) path: PathBuf,
}

impl Store {
    pub(crate) fn open(path: &Path, writable: bool, reserve: usize) -> Result<Store> {
        let mode = if writable { Mode::ReadWrite } else { Mode::ReadOnly };
        let file = GrowableFile::open(path, mode, reserve).map_err(|e| match e {
            mmkit_region::Error::Io { ref source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                Error::NotFound { path: path.to_path_buf() }
            }
            e => Error::region("open database")(e),
        })?;
        Ok(Store { file, path: path.to_path_buf() })
    }

    pub(crate) fn writable(&self) -> bool {
        self.file.mode() == Mode::ReadWrite
    }

    /// `len` bytes at page `pgno`, mapping what other processes added when
    /// needed.
    #[inline]
    pub(crate) fn bytes(&self, pgno: u64, len: usize) -> Result<&[u8]> {
        let off = pgno.checked_mul(PAGE as u64).and_then(|o| o.checked_add(len as u64));
        let Some(end) = off else {
            return Err(self.corrupt(pgno, "", "page number overflows"));
        };
        if end > self.file.len() {
            self.file.ensure_len(end).map_err(Error::region("map database pages"))?;
        }
        // SAFETY: `pgno * PAGE + len <= len()` was just checked, and the
        // `Access` contract of `GrowableFile` keeps those bytes mapped
        // while `&self` lives (it never unmaps before drop). Nothing writes
        // them while the slice lives: the MVCC protocol of
        // `docs/kv-format.md` ("Why zero-copy reads are sound") forbids
        // conforming writers to touch pages a registered snapshot can
        // reach, and the writer of this process only writes pages it
        // allocated in its own open transaction. The limit of this
        // argument: a writer knows which pages are free and which
        // snapshots are registered from shared state, the free tree and
        // the reader table (its slots and high-water mark). A process
        // that forges those (as one that writes pages directly) makes
        // even this process's writer reuse a page a snapshot holds; that
        // is the "process that breaks the protocol" of the document, and
        // the checks that are cheap (a `current` behind a newer meta, a
        // page handed out twice or copied onto itself) are made.
        Ok(unsafe { std::slice::from_raw_parts(self.file.base().add((pgno as usize) * PAGE), len) })
    }

    /// A dirty page for the writer to edit.
    ///
    /// # Safety
    ///
    /// `pgno` must be a page allocated by the caller's open write
    /// transaction (no snapshot can reach it), already inside the mapped
    /// length, and no other reference to it may be alive.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn page_mut(&self, pgno: u64, pages: usize) -> &mut [u8] {
        debug_assert!((pgno as usize + pages) * PAGE <= self.file.len() as usize);
        // SAFETY: per the contract, in bounds and exclusively ours.
        unsafe { std::slice::from_raw_parts_mut(self.file.base().add(pgno as usize * PAGE), pages * PAGE) }
    }

    /// Maps every page below `next_page` that the file holds (other
    /// processes may have grown it); a file shorter than that is corrupt.
    pub(crate) fn ensure_mapped(&self, next_page: u64) -> Result<()> {
        let Some(end) = next_page.checked_mul(PAGE as u64) else {
            return Err(self.corrupt(0, "(meta)", "next page overflows"));
        };
        self.file.ensure_len(end).map_err(Error::region("map database pages"))
    }

    /// Makes sure pages below `next_page` have real blocks behind them;
    /// grows by an eighth of the file at a time (at least 1 MiB) so growth
    /// costs few `fallocate` calls.
    pub(crate) fn ensure_pages(&self, next_page: u64) -> Result<()> {
        let need = next_page * PAGE as u64;
        if need <= self.file.len() {
            return Ok(());
        }
        let len = self.file.len();
        let chunk = (len / 8).max(1 << 20);
        let target = need.max(len + chunk).div_ceil(PAGE as u64) * PAGE as u64;
        let target = target.min(self.file.reserved() as u64).max(need);
        self.file.grow_to(target).map_err(Error::region("grow database"))
    }

    /// Bytes of `pages` pages.
    pub(crate) fn page_bytes(&self, pages: u64) -> u64 {
        pages * PAGE as u64
    }

    pub(crate) fn corrupt(&self, page: u64, table: &str, reason: impl Into<String>) -> Error {
        Error::Corrupt { path: self.path.clone(), page, table: table.into(), reason: reason.into() }
    }

    /// The meta page in `slot`, copied out.
    pub(crate) fn meta_bytes(&self, slot: u64) -> Result<[u8; META_LEN]> {
        let mut b = [0u8; META_LEN];
        if (slot + 1) * PAGE as u64 > self.file.len() {
            self.file.refresh().map_err(Error::region("map meta"))?;
        }
        self.file.read_at(slot * PAGE as u64, &mut b).map_err(Error::region("read meta"))?;
        Ok(b)
    }

    pub(crate) fn write_meta(&self, slot: u64, bytes: &[u8]) -> Result<()> {
        self.file.write_at(slot * PAGE as u64, bytes).map_err(Error::region("write meta"))
    }

    pub(crate) fn sync(&self) -> Result<()> {
        rustix::fs::fdatasync(self.file.as_fd()).map_err(|e| Error::io("fdatasync", &self.path, e))
    }

    pub(crate) fn file_size(&self) -> Result<u64> {
        let st = rustix::fs::fstat(self.file.as_fd()).map_err(|e| Error::io("fstat", &self.path, e))?;
        Ok(st.st_size as u64)
    }
}

/// A consistent view: the pages of one snapshot (or of the writer's open
/// transaction), with every page number checked against its extent.
#[derive(Clone, Copy)]
pub(crate) struct View<'a> {
    pub(crate) store: &'a Store,
    pub(crate) next_page: u64,
    /// Verify each page's checksum against its parent's entry on read.
    pub(crate) verify: bool,
    /// Prefetch each page's slot array (readers: cold pages; the writer
    /// re-reads the same hot pages many times and skips it).
    pub(crate) prefetch: bool,
}

impl<'a> View<'a> {
    fn check_range(&self, pgno: u64, n: u64, table: &str) -> Result<()> {
        if pgno < META_SLOTS || pgno.checked_add(n).is_none_or(|end| end > self.next_page) {
            return Err(self.store.corrupt(
                pgno,
                table,
                format!("page number outside 4..{}", self.next_page),
            ));
        }
        Ok(())
    }

    /// Tree page `pgno`, header validated; its checksum is compared with
    /// `crc` when verification is on (or `force`).
    #[inline]
    pub(crate) fn page(&self, pgno: u64, crc: u32, table: &str, force: bool) -> Result<Page<'a>> {
        self.check_range(pgno, 1, table)?;
        let bytes = self.store.bytes(pgno, PAGE)?;
        if self.prefetch {
            prefetch_slots(bytes);
        }
        let page = Page::new(bytes).map_err(|r| self.store.corrupt(pgno, table, r))?;
        if (self.verify || force) && page.checksum() != crc {
            return Err(self.store.corrupt(pgno, table, "checksum mismatch"));
        }
        Ok(page)
    }

    /// The value bytes of an overflow run.
    pub(crate) fn overflow(
        &self,
        pgno: u64,
        len: u64,
        crc: u32,
        table: &str,
        force: bool,
    ) -> Result<&'a [u8]> {
        let n = crate::page::overflow_pages(len);
        // `len` comes from the entry pointing here: a run longer than the
        // snapshot is corrupt, and is rejected before its byte count is
        // computed (which could overflow).
        let bytes = usize::try_from(n).ok().and_then(|n| n.checked_mul(PAGE));
        let Some(bytes) = bytes.filter(|_| n < self.next_page) else {
            return Err(self.store.corrupt(pgno, table, format!("overflow run length {len} is impossible")));
        };
        self.check_range(pgno, n, table)?;
        let run = self.store.bytes(pgno, bytes)?;
        if run[0] != crate::page::KIND_OVERFLOW || u64_at(run, 16) != len {
            return Err(self.store.corrupt(pgno, table, "bad overflow header"));
        }
        let end = OVERFLOW_HEADER + len as usize;
        if (self.verify || force) && crc32c::crc32c(&run[..end]) != crc {
            let last = pgno + n - 1;
            return Err(self.store.corrupt(
                pgno,
                table,
                format!("overflow checksum mismatch (value in pages {pgno}..={last})"),
            ));
        }
        Ok(&run[OVERFLOW_HEADER..end])
    }
}

/// A page being read, for searches: resolves its keys that live in
/// overflow runs, and names it in errors.
pub(crate) struct At<'v, 'a> {
    pub(crate) v: &'v View<'a>,
    pub(crate) pgno: u64,
    pub(crate) table: &'v str,
}

impl<'a> View<'a> {
    /// Page `pgno` of `table`, for [`Keys`].
    #[inline]
    pub(crate) fn at<'v>(&'v self, pgno: u64, table: &'v str) -> At<'v, 'a> {
        At { v: self, pgno, table }
    }
}

impl<'a> Keys<'a> for At<'_, 'a> {
    fn resolve(&self, key: Key<'a>) -> Result<&'a [u8]> {
        match key {
            Key::Inline(k) => Ok(k),
            Key::Run { page, len, crc, klen } => {
                let run = self.v.overflow(page, len, crc, self.table, false)?;
                run.get(..klen).ok_or_else(|| self.bad("key longer than its overflow run"))
            }
        }
    }
    fn bad(&self, reason: Bad) -> Error {
        self.v.store.corrupt(self.pgno, self.table, reason)
    }
}

impl<'a> View<'a> {
    /// Starts loading the header and slot array of page `pgno`, which a
    /// cursor is about to move to; nothing when the number is out of range
    /// (the move itself reports that).
    #[inline]
    pub(crate) fn prefetch_page(&self, pgno: u64) {
        if !self.prefetch || pgno < META_SLOTS || pgno >= self.next_page {
            return;
        }
        if let Ok(bytes) = self.store.bytes(pgno, PAGE) {
            prefetch_slots(bytes);
        }
    }
}

/// Starts loading the cache line at `at` of `bytes` (nothing past its end).
#[inline(always)]
pub(crate) fn prefetch_line(bytes: &[u8], at: usize) {
    #[cfg(target_arch = "x86_64")]
    if let Some(b) = bytes.get(at..) {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: `sse` is part of the x86_64 baseline; a prefetch never
        // faults and changes no memory, and the address is inside `bytes`.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(b.as_ptr().cast()) };
    }
}

/// Starts loading the header and the start of the slot array of a page
/// about to be searched. A binary search is a chain of dependent loads,
/// each a cache miss on a cold page; fetching the lines it will need in
/// parallel first turns most of those misses into one wait.
#[inline(always)]
fn prefetch_slots(page: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        for line in (0..PREFETCH_BYTES.min(page.len())).step_by(64) {
            // SAFETY: `sse` is part of the x86_64 baseline, so the
            // instruction exists; a prefetch never faults and changes no
            // memory, and the address is inside `page` anyway.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(page[line..].as_ptr().cast()) };
        }
    }
}

/// Bytes prefetched at the start of a page: the header and the slots of a
/// full leaf of small entries.
const PREFETCH_BYTES: usize = 1024;
