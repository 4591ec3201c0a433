//! The redo log (`<db>-log`): how an Immediate commit becomes durable
//! with one sequential write and one `fdatasync` of a small file, instead
//! of a sync of every page it scattered over the data file.
//!
//! A logged commit writes its pages and its meta into the data file as
//! usual (through the page cache, unsynced), then appends a *record* with
//! copies of those pages and that meta to the log, and syncs the log only.
//! Records form a *chain*: the first follows a commit the data file holds
//! on disk (its *base*), each next one follows the previous commit. After
//! a power loss, replaying the chain over the data file rebuilds every
//! logged commit; after a process crash nothing is replayed (the page
//! cache holds everything). The format and the argument are in
//! `docs/kv-format.md`, "The redo log".

use std::fs::{File, OpenOptions};
use std::io::IoSlice;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};
use crate::meta::{META_LEN, META_SLOTS, Meta};
use crate::page::{PAGE, u32_at, u64_at};
use crate::store::Store;

/// Magic bytes at offset 4 of every record.
pub(crate) const LOG_MAGIC: &[u8; 4] = b"mkvl";
/// The record layout's version.
pub(crate) const LOG_VERSION: u32 = 1;
/// Fixed part of a record header; the meta follows, then the page numbers.
const FIXED: usize = 48;
const PAGES_AT: usize = FIXED + META_LEN;
/// The log file is extended (with zeros, so later overwrites need no
/// metadata) this much at a time.
const EXTEND: u64 = 1 << 20;
/// `pwritev` takes at most this many buffers (`IOV_MAX` on Linux).
const IOV_MAX: usize = 1024;
/// The most pages a record holds (1 GiB of images, a 2 MiB header): a
/// bigger commit syncs the data file instead. Readers hold no more than a
/// header and one chunk of images in memory, whatever a damaged or
/// hostile record claims.
pub(crate) const MAX_RECORD_PAGES: usize = 1 << 18;
/// Page images read at a time when checking or replaying a record.
const CHUNK_PAGES: usize = 256;

/// What a record says about its commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Record {
    pub(crate) txnid: u64,
    pub(crate) base: u64,
    pub(crate) slot: u64,
    pub(crate) meta: [u8; META_LEN],
    pub(crate) pages: Vec<u64>,
    /// Where the record starts in the log file.
    pub(crate) offset: u64,
}

impl Record {
    fn header_len(pages: usize) -> u64 {
        ((PAGES_AT + 8 * pages).div_ceil(PAGE) * PAGE) as u64
    }

    /// Bytes a record of `pages` pages takes in the log.
    pub(crate) fn len(pages: usize) -> u64 {
        Self::header_len(pages) + (pages * PAGE) as u64
    }
}

/// The longest valid chain at the start of the log.
#[derive(Debug, Default)]
pub(crate) struct Chain {
    pub(crate) records: Vec<Record>,
}

impl Chain {
    /// The last commit the chain rebuilds (0 when empty).
    pub(crate) fn end(&self) -> u64 {
        self.records.last().map_or(0, |r| r.txnid)
    }
}

/// The open log file.
pub(crate) struct Log {
    file: File,
    pub(crate) path: PathBuf,
    /// The file's length as this process last saw it.
    len: AtomicU64,
}

impl Log {
    /// Opens the log beside a database, if there is one.
    pub(crate) fn open_existing(path: &Path, writable: bool) -> Result<Option<Log>> {
        match Self::open_file(path, writable, false) {
            Ok(log) => Ok(Some(log)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("open redo log", path, e)),
        }
    }

    /// Opens the log beside a database for writing, creating it if need be.
    pub(crate) fn create(path: &Path) -> Result<Log> {
        Self::open_file(path, true, true).map_err(|e| Error::io("create redo log", path, e))
    }

    fn open_file(path: &Path, writable: bool, create: bool) -> std::io::Result<Log> {
        let file = OpenOptions::new()
            .read(true)
            .write(writable)
            .create(create)
            .truncate(false)
            .mode(0o644)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(path)?;
        let len = file.metadata()?.len();
        Ok(Log { file, path: path.to_path_buf(), len: AtomicU64::new(len) })
    }

    /// Writes `rec` (of database `id`) at byte `at` and syncs the log:
    /// the page images are read from the data file's mapping (they are
    /// the writer's own, unchanged since it sealed them). Returns the
    /// record's length. `buf` is scratch space kept between commits.
    pub(crate) fn append(
        &self,
        at: u64,
        rec: &Record,
        id: u64,
        store: &Store,
        buf: &mut Vec<u8>,
    ) -> Result<u64> {
        let header_len = Record::header_len(rec.pages.len()) as usize;
        buf.clear();
        buf.resize(header_len, 0);
        buf[4..8].copy_from_slice(LOG_MAGIC);
        buf[8..12].copy_from_slice(&LOG_VERSION.to_le_bytes());
        buf[12..16].copy_from_slice(&(rec.slot as u32).to_le_bytes());
        buf[16..24].copy_from_slice(&id.to_le_bytes());
        buf[24..32].copy_from_slice(&rec.txnid.to_le_bytes());
        buf[32..40].copy_from_slice(&rec.base.to_le_bytes());
        buf[40..44].copy_from_slice(&(rec.pages.len() as u32).to_le_bytes());
        buf[FIXED..PAGES_AT].copy_from_slice(&rec.meta);
        for (i, p) in rec.pages.iter().enumerate() {
            buf[PAGES_AT + 8 * i..PAGES_AT + 8 * i + 8].copy_from_slice(&p.to_le_bytes());
        }
        // The header's slice goes in first once its checksum is written.
        let mut parts = Vec::with_capacity(rec.pages.len() + 1);
        parts.push(IoSlice::new(&[]));
        let mut crc = crc32c::crc32c(&buf[4..]);
        for &p in &rec.pages {
            let page = store.bytes(p, PAGE)?;
            crc = crc32c::crc32c_append(crc, page);
            parts.push(IoSlice::new(page));
        }
        buf[..4].copy_from_slice(&crc.to_le_bytes());
        parts[0] = IoSlice::new(buf);
        let total = Record::len(rec.pages.len());
        self.extend_to(at + total)?;
        self.write_all_at(&mut parts, at)?;
        rustix::fs::fdatasync(&self.file).map_err(|e| Error::io("fdatasync redo log", &self.path, e))?;
        Ok(total)
    }

    /// Makes the file at least `end` bytes long, writing zeros, so that
    /// the records written there later change no metadata and their
    /// `fdatasync` flushes only their own blocks.
    fn extend_to(&self, end: u64) -> Result<()> {
        if end <= self.len.load(Ordering::Relaxed) {
            return Ok(());
        }
        let len = self.file.metadata().map_err(|e| Error::io("stat redo log", &self.path, e))?.len();
        let target = end.div_ceil(EXTEND) * EXTEND;
        let zeros = vec![0u8; 64 << 10];
        let mut at = len;
        while at < target {
            let n = (target - at).min(zeros.len() as u64) as usize;
            self.write_all_at(&mut [IoSlice::new(&zeros[..n])], at)?;
            at += n as u64;
        }
        self.len.store(target.max(len), Ordering::Relaxed);
        Ok(())
    }

    /// All of `parts` at `at` (see [`pwrite_all`]); a full disk (or quota,
    /// or `RLIMIT_FSIZE`) is `Error::NoSpace`.
    fn write_all_at(&self, parts: &mut [IoSlice<'_>], at: u64) -> Result<()> {
        let end = at + parts.iter().map(|p| p.len() as u64).sum::<u64>();
        pwrite_all(self.file.as_fd(), parts, at).map_err(|e| match e {
            rustix::io::Errno::NOSPC | rustix::io::Errno::FBIG | rustix::io::Errno::DQUOT => {
                Error::NoSpace { op: "write redo log", path: self.path.clone(), len: end, source: e.into() }
            }
            e => Error::io("write redo log", &self.path, e),
        })
    }

    /// Reads the chain at the start of the log: records one after the
    /// other, each whole (its checksum holds), of database `id`, the first
    /// one's `txnid` following its base and each next one's following the
    /// previous one's. Stops at the first record that is not: what follows
    /// is a torn write or an older chain. No record may name a page at or
    /// past `max_page` (the reserved address space: a hostile record
    /// cannot make the replay grow the file past what can be mapped).
    pub(crate) fn read_chain(&self, id: u64, max_page: u64) -> Result<Chain> {
        let len = self.file.metadata().map_err(|e| Error::io("stat redo log", &self.path, e))?.len();
        let mut chain = Chain::default();
        let mut at = 0;
        let mut buf = Vec::new();
        while let Some(rec) = self.read_record(at, len, id, max_page, &mut buf)? {
            let follows = match chain.records.last() {
                None => rec.txnid == rec.base.wrapping_add(1),
                Some(prev) => rec.txnid == prev.txnid.wrapping_add(1) && rec.base == prev.base,
            };
            if !follows {
                break;
            }
            at += Record::len(rec.pages.len());
            chain.records.push(rec);
        }
        Ok(chain)
    }

    /// The record at `at`, if one is there whole and valid.
    fn read_record(
        &self,
        at: u64,
        file_len: u64,
        id: u64,
        max_page: u64,
        buf: &mut Vec<u8>,
    ) -> Result<Option<Record>> {
        if at.saturating_add(PAGE as u64) > file_len {
            return Ok(None);
        }
        buf.resize(PAGE, 0);
        self.read_exact_at(buf, at)?;
        // The count sizes what is read next: bound it before anything else.
        let pages = u32_at(buf, 40) as usize;
        if pages > MAX_RECORD_PAGES || at.saturating_add(Record::len(pages)) > file_len {
            return Ok(None);
        }
        buf.resize(Record::header_len(pages) as usize, 0);
        self.read_exact_at(buf, at)?;
        let Some(rec) = decode_header(buf, at, id, max_page) else { return Ok(None) };
        let mut crc = crc32c::crc32c(&buf[4..]);
        self.each_chunk(&rec, |_, images| {
            crc = crc32c::crc32c_append(crc, images);
            Ok(true)
        })?;
        Ok((crc == u32_at(buf, 0)).then_some(rec))
    }

    /// Calls `f` with each run of at most `CHUNK_PAGES` of `rec`'s page
    /// numbers and their images, in order, while it returns true.
    fn each_chunk(&self, rec: &Record, mut f: impl FnMut(&[u64], &[u8]) -> Result<bool>) -> Result<bool> {
        let mut at = rec.offset + Record::header_len(rec.pages.len());
        let mut images = Vec::new();
        for pages in rec.pages.chunks(CHUNK_PAGES) {
            images.resize(pages.len() * PAGE, 0);
            self.read_exact_at(&mut images, at)?;
            if !f(pages, &images)? {
                return Ok(false);
            }
            at += images.len() as u64;
        }
        Ok(true)
    }

    fn read_exact_at(&self, buf: &mut [u8], at: u64) -> Result<()> {
        use std::os::unix::fs::FileExt;
        self.file.read_exact_at(buf, at).map_err(|e| Error::io("read redo log", &self.path, e))
    }

    /// Whether the data file already holds what replaying the chain would
    /// write: each page's last image in the chain, and the last record's
    /// meta in its slot (a clean shutdown, or write-back that finished
    /// before the power went). Costs a read of the chain, not of the file.
    pub(crate) fn written_back(&self, chain: &Chain, store: &Store) -> Result<bool> {
        let Some(last) = chain.records.last() else { return Ok(true) };
        if store.meta_bytes(last.slot)? != last.meta {
            return Ok(false);
        }
        let mut seen = std::collections::HashSet::new();
        for rec in chain.records.iter().rev() {
            let same = self.each_chunk(rec, |pages, images| {
                Ok(images.chunks_exact(PAGE).zip(pages).all(|(image, &p)| {
                    // A page past the file's end was not written back either.
                    !seen.insert(p) || store.bytes(p, PAGE).is_ok_and(|b| b == image)
                }))
            })?;
            if !same {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Writes the pages and the meta of `rec` into the data file
    /// (`pwrite`, past its end if need be).
    pub(crate) fn replay(&self, rec: &Record, store: &Store) -> Result<()> {
        self.each_chunk(rec, |pages, images| {
            for (image, &p) in images.chunks_exact(PAGE).zip(pages) {
                write_data(store, p * PAGE as u64, image)?;
            }
            Ok(true)
        })?;
        write_data(store, rec.slot * PAGE as u64, &rec.meta)
    }
}

/// `bytes` at byte `at` of the data file, with `pwrite` (past its end if
/// need be: the replay runs before any process maps the new length).
fn write_data(store: &Store, at: u64, bytes: &[u8]) -> Result<()> {
    pwrite_all(store.file.as_fd(), &mut [IoSlice::new(bytes)], at)
        .map_err(|e| Error::io("replay redo log into", &store.path, e))
}

/// `pwritev` of all of `parts` at `at`, in batches of `IOV_MAX`, going on
/// after short writes (`parts` is consumed as it goes).
fn pwrite_all(fd: BorrowedFd<'_>, mut parts: &mut [IoSlice<'_>], mut at: u64) -> rustix::io::Result<()> {
    while !parts.is_empty() {
        let n = rustix::io::pwritev(fd, &parts[..parts.len().min(IOV_MAX)], at)?;
        if n == 0 {
            return Err(rustix::io::Errno::IO);
        }
        at += n as u64;
        IoSlice::advance_slices(&mut parts, n);
    }
    Ok(())
}

/// Parses a record's header (`buf` holds exactly the header; the
/// checksum, which also covers the images, is the caller's to check);
/// `None` if any field is wrong (another database's `id` included), or
/// the meta's `next_page` is past
/// `max_page`. Every count and page number is checked before use: the
/// file is untrusted input.
fn decode_header(buf: &[u8], offset: u64, id: u64, max_page: u64) -> Option<Record> {
    if buf.len() < PAGE || &buf[4..8] != LOG_MAGIC || u32_at(buf, 8) != LOG_VERSION || u64_at(buf, 16) != id {
        return None;
    }
    let pages = u32_at(buf, 40) as usize;
    if pages > MAX_RECORD_PAGES || Record::header_len(pages) != buf.len() as u64 {
        return None;
    }
    let slot = u64::from(u32_at(buf, 12));
    let txnid = u64_at(buf, 24);
    let mut meta = [0u8; META_LEN];
    meta.copy_from_slice(&buf[FIXED..PAGES_AT]);
    let m = Meta::decode(&meta).ok()?;
    if slot >= META_SLOTS || m.txnid != txnid || m.next_page > max_page {
        return None;
    }
    let list: Vec<u64> = (0..pages).map(|i| u64_at(buf, PAGES_AT + 8 * i)).collect();
    let ordered = list.windows(2).all(|w| w[0] < w[1]);
    if !ordered || list.iter().any(|&p| p < META_SLOTS || p >= m.next_page) {
        return None;
    }
    Some(Record { txnid, base: u64_at(buf, 32), slot, meta, pages: list, offset })
}
