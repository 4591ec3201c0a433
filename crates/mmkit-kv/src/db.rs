//! Opening a database, recovery, and read transactions.

use std::cell::Cell;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use mmkit_sync::LockOutcome;

use crate::error::{Error, Result};
use crate::lock::{
    CommitRef, L_CURRENT, L_DURABLE, L_FLUSHED, L_LOG_END, L_STATE, L_SYNCING, LockFile, STATE_READY, boot_id,
};
use crate::meta::{FLAG_SYNCED, META_LEN, META_SLOTS, Meta, MetaError, Root};
use crate::page::{PAGE, u32_at, u64_at};
use crate::store::{Store, View};
use crate::tree::{self, Cursor};
use crate::write::WriterState;

/// Reader slots a thread first tries to claim, spread by thread id.
const READER_HINTS: usize = 64;

/// The table used when none is named.
pub const DEFAULT_TABLE: &str = "default";
/// Longest table name, in bytes.
pub const MAX_TABLE_NAME: usize = 255;
/// Address space reserved for a database mapping unless told otherwise
/// (1 TiB: costs no memory, only virtual addresses).
pub const DEFAULT_RESERVE: usize = 1 << 40;
/// The redo log's size unless told otherwise: when the next record would
/// not fit, the data file is synced and the log starts over.
pub const DEFAULT_LOG_SIZE: u64 = 64 << 20;

/// When a commit returns, relative to the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Durability {
    /// The commit is on disk when `commit` returns: one `fdatasync`, of
    /// the redo log for a commit of up to a quarter of
    /// [`Options::log_size`], else of the data file. Two when the log's
    /// chain starts over (once per log's worth of commits, and after
    /// [`Eventual`](Durability::Eventual) or Group commits).
    #[default]
    Immediate,
    /// No sync: the commit survives a crash of any process, not a power
    /// loss (then the database opens at its last synced commit).
    Eventual,
    /// Like `Immediate`, but concurrent committers in any thread or process
    /// share one `fdatasync`; each returns once its commit is on disk.
    Group,
}

/// How to open a database.
#[derive(Clone, Debug)]
pub struct Options {
    pub(crate) create: bool,
    pub(crate) read_only: bool,
    pub(crate) durability: Durability,
    pub(crate) reserve: usize,
    pub(crate) verify_reads: bool,
    pub(crate) max_snapshot_lag: Option<u64>,
    pub(crate) log_size: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            create: false,
            read_only: false,
            durability: Durability::Immediate,
            reserve: DEFAULT_RESERVE,
            verify_reads: false,
            max_snapshot_lag: None,
            log_size: DEFAULT_LOG_SIZE,
        }
    }
}

impl Options {
    /// Default options: open an existing database read-write, Immediate
    /// durability.
    pub fn new() -> Options {
        Options::default()
    }
    /// Create the database if it does not exist.
    pub fn create(&mut self, yes: bool) -> &mut Self {
        self.create = yes;
        self
    }
    /// Open for reading only (the data file may then be read-only; the
    /// lock file must still be writable).
    pub fn read_only(&mut self, yes: bool) -> &mut Self {
        self.read_only = yes;
        self
    }
    /// Durability of commits made through this handle.
    pub fn durability(&mut self, d: Durability) -> &mut Self {
        self.durability = d;
        self
    }
    /// Address space to reserve for the mapping: the largest the file can
    /// grow to while this handle is open. Default [`DEFAULT_RESERVE`].
    pub fn reserve(&mut self, bytes: usize) -> &mut Self {
        self.reserve = bytes;
        self
    }
    /// Verify every page's checksum on every read (about 0.25 µs per 4 KiB
    /// page touched); off by default, see `docs/kv-format.md`.
    pub fn verify_reads(&mut self, yes: bool) -> &mut Self {
        self.verify_reads = yes;
        self
    }
    /// Fail a commit with [`Error::SnapshotTooOld`] instead of growing the
    /// file while a reader more than `commits` commits behind pins the
    /// pages it could reuse.
    pub fn max_snapshot_lag(&mut self, commits: Option<u64>) -> &mut Self {
        self.max_snapshot_lag = commits;
        self
    }
    /// Size of the redo log that makes Immediate commits durable with one
    /// sequential write (default [`DEFAULT_LOG_SIZE`]); 0 turns it off, so
    /// every Immediate commit syncs the data file. See
    /// `docs/kv-format.md`, "The redo log".
    pub fn log_size(&mut self, bytes: u64) -> &mut Self {
        self.log_size = bytes;
        self
    }
    /// Opens the database at `path` with these options.
    pub fn open(&self, path: impl AsRef<Path>) -> Result<Db> {
        Db::open_with(path.as_ref(), self)
    }
}

/// An open database: a file of copy-on-write B+trees shared by any number
/// of processes, one writer at a time, readers without locks.
///
/// `Db` is `Send + Sync`: share it between threads by reference or `Arc`.
pub struct Db {
    pub(crate) store: Store,
    pub(crate) lock: LockFile,
    pub(crate) opts: Options,
    pub(crate) writer: Mutex<WriterState>,
    /// The redo log: opened when there is one, created by the first
    /// logged commit otherwise (so a database that never logs has none).
    pub(crate) log: std::sync::OnceLock<crate::log::Log>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("path", &self.store.path).finish()
    }
}

/// The redo log's path for a database at `path`: `<path>-log`.
pub fn log_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push("-log");
    PathBuf::from(s)
}

/// The lock file's path for a database at `path`: `<path>-lock`.
pub fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push("-lock");
    path.with_file_name(name)
}

pub(crate) fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

pub(crate) fn check_table_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_TABLE_NAME {
        return Err(Error::InvalidName { name: name.into(), reason: "table names are 1 to 255 bytes" });
    }
    Ok(())
}

/// A table's entry in the catalog: its root and entry count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct TableInfo {
    pub(crate) root: Root,
    pub(crate) count: u64,
}

impl TableInfo {
    pub(crate) const LEN: usize = 24;
    pub(crate) fn encode(&self) -> [u8; 24] {
        let mut b = [0u8; 24];
        b[..8].copy_from_slice(&self.root.page.to_le_bytes());
        b[8..12].copy_from_slice(&self.root.crc.to_le_bytes());
        b[16..].copy_from_slice(&self.count.to_le_bytes());
        b
    }
    pub(crate) fn decode(b: &[u8]) -> Option<TableInfo> {
        (b.len() == Self::LEN)
            .then(|| TableInfo { root: Root { page: u64_at(b, 0), crc: u32_at(b, 8) }, count: u64_at(b, 16) })
    }
}

impl Db {
    /// Opens the database at `path`, creating it if needed, with default
    /// options (Immediate durability).
    pub fn open(path: impl AsRef<Path>) -> Result<Db> {
        Options::new().create(true).open(path)
    }

    /// Options for opening a database.
    pub fn options() -> Options {
        Options::new()
    }

    fn open_with(path: &Path, opts: &Options) -> Result<Db> {
        if opts.reserve < 1 << 20 {
            return Err(Error::InvalidOption(format!("reserve of {} bytes is below 1 MiB", opts.reserve)));
        }
        match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => {
                return Err(Error::NotADatabase {
                    path: path.into(),
                    kind: "database",
                    reason: "is a directory".into(),
                });
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && opts.create && !opts.read_only => {
                create_file(path)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound { path: path.into() });
            }
            Err(e) => return Err(Error::io("stat database", path, e)),
        }
        let store = Store::open(path, !opts.read_only, opts.reserve)?;
        if store.file.len() < (META_SLOTS * PAGE as u64) {
            return Err(Error::NotADatabase {
                path: path.into(),
                kind: "database",
                reason: format!("{} bytes is shorter than the meta pages", store.file.len()),
            });
        }
        let (lock, alone) = LockFile::open(&lock_path(path))?;
        let log = std::sync::OnceLock::new();
        if let Some(found) = crate::log::Log::open_existing(&log_path(path), !opts.read_only)? {
            let _ = log.set(found);
        }
        let db = Db { store, lock, opts: opts.clone(), writer: Mutex::new(WriterState::default()), log };
        if alone {
            let recovered = db.recover_alone();
            db.lock.share()?;
            recovered?;
        } else {
            db.recover_if_needed()?;
        }
        Ok(db)
    }

    /// The redo log, created if this database has none yet (only a writer
    /// calls this, under the writer lock).
    pub(crate) fn log_for_writing(&self) -> Result<&crate::log::Log> {
        if let Some(log) = self.log.get() {
            return Ok(log);
        }
        let log = crate::log::Log::create(&log_path(&self.store.path))?;
        Ok(self.log.get_or_init(|| log))
    }

    /// The database file's path.
    pub fn path(&self) -> &Path {
        &self.store.path
    }

    /// The durability commits use by default.
    pub fn durability(&self) -> Durability {
        self.opts.durability
    }

    /// The first open (no other open holds the open lock): every token in
    /// the lock file is stale (a crashed process, an earlier boot) or
    /// forged, and no snapshot is in use, so the holders are forgotten. A
    /// warm open (the lock file was last set up in this boot) then trusts
    /// the page cache: it publishes the newest meta with a valid checksum,
    /// which is complete, in case a writer died before announcing it. A
    /// cold open (first since a reboot, an unknown boot, or a fresh lock
    /// file) verifies the newest commit before trusting it.
    fn recover_alone(&self) -> Result<()> {
        let boot = boot_id();
        let warm = self.lock.word(L_STATE).load(Ordering::Acquire) == STATE_READY
            && self.lock.boot() == boot
            && boot != [0, 0];
        self.lock.reset_owners()?;
        self.lock.word(L_SYNCING).store(0, Ordering::SeqCst);
        if warm {
            return self.take_over();
        }
        self.set_up_cold(boot, true)
    }

    /// Not the first open: the first one, holding the open lock
    /// exclusively until it was done, set the lock file up in this boot
    /// (`flock`s do not outlive a boot), so READY is enough, whatever the
    /// boot id reads. Not READY with others holding the open lock means a
    /// damaged lock file: set up under the writer mutex, leaving the reader
    /// slots and the sync marker alone (their holders may be alive, and a
    /// live reader's snapshot must keep its pages).
    fn recover_if_needed(&self) -> Result<()> {
        let ready = |l: &LockFile| l.word(L_STATE).load(Ordering::Acquire) == STATE_READY;
        if ready(&self.lock) {
            return Ok(());
        }
        let writer = self.lock.writer()?;
        let guard = writer.lock().map_err(Error::sync("lock writer for recovery"))?;
        let guard = match guard {
            LockOutcome::Acquired(g) | LockOutcome::OwnerDied(g) => g,
        };
        if !ready(&self.lock) {
            self.set_up_cold(boot_id(), false)?;
        }
        guard.make_consistent();
        Ok(())
    }

    /// Verifies the newest commit that verifies and publishes it. Holders
    /// are not touched here: an opener that is alone has already forgotten
    /// them (`reset_owners`), and one that is not must keep them.
    fn set_up_cold(&self, boot: [u64; 2], alone: bool) -> Result<()> {
        let meta = self.cold_recover(alone)?;
        let at = CommitRef::new(meta.0.txnid, meta.1);
        self.lock.word(L_CURRENT).store(at.0, Ordering::SeqCst);
        self.lock.word(L_DURABLE).store(at.0, Ordering::SeqCst);
        // A writable opener synced the data file at the recovered commit;
        // a read-only one cannot know what is on disk, so the first logged
        // commit will sync the data file before it starts a chain.
        let flushed = if self.store.writable() { meta.0.txnid } else { 0 };
        self.lock.word(L_FLUSHED).store(flushed, Ordering::SeqCst);
        self.lock.word(L_LOG_END).store(0, Ordering::SeqCst);
        self.lock.commits()?.publish(meta.0.txnid);
        self.lock.durable_events()?.publish(meta.0.txnid);
        self.lock.set_boot(boot);
        // A read-only opener cannot wipe the newer metas it rejected:
        // marked READY, the lock file would make the next writable opener
        // warm, and `take_over` would publish the newest of them. It
        // leaves recovery to the next opener instead (not READY: cold, or
        // under the writer mutex while this handle is open).
        let rejected = !self.store.writable() && self.newest_meta()?.0.txnid > meta.0.txnid;
        let state = if rejected { 0 } else { STATE_READY };
        self.lock.word(L_STATE).store(state, Ordering::Release);
        Ok(())
    }

    /// All meta slots that decode, newest first.
    pub(crate) fn metas(&self) -> Result<Vec<(Meta, u64)>> {
        let mut found = Vec::new();
        let mut versions = Vec::new();
        for slot in 0..META_SLOTS {
            match Meta::decode(&self.store.meta_bytes(slot)?) {
                Ok(m) => found.push((m, slot)),
                Err(MetaError::Version(v)) => versions.push(v),
                Err(_) => {}
            }
        }
        if let Some(&v) = versions.first().filter(|_| found.is_empty()) {
            return Err(Error::UnsupportedVersion {
                path: self.store.path.clone(),
                found: v,
                supported: crate::meta::FORMAT_VERSION,
            });
        }
        found.sort_by_key(|(m, _)| std::cmp::Reverse(m.txnid));
        Ok(found)
    }

    /// The newest meta that decodes (warm recovery after a writer died).
    pub(crate) fn newest_meta(&self) -> Result<(Meta, u64)> {
        self.metas()?.into_iter().next().ok_or_else(|| self.no_meta("no meta page has a valid checksum"))
    }

    fn no_meta(&self, reason: &str) -> Error {
        let path = self.store.path.clone();
        let Ok(b) = self.store.meta_bytes(0) else {
            return Error::NoValidCommit { path, reason: reason.into() };
        };
        if (0..META_SLOTS).all(|s| self.store.meta_bytes(s).is_ok_and(|b| &b[8..16] != crate::meta::MAGIC)) {
            let _ = b;
            return Error::NotADatabase {
                path,
                kind: "database",
                reason: "no meta page has the magic bytes".into(),
            };
        }
        Error::NoValidCommit { path, reason: reason.into() }
    }

    /// Picks the newest commit whose pages verify: a synced commit checks
    /// the pages it wrote (O(size of that commit)), an unsynced one the
    /// whole tree. Commits after the redo log's chain come first (the data
    /// file was synced past the chain); then the chain is replayed; then
    /// older commits. Newer metas that fail are wiped so no later open can
    /// pick them. Only an opener that is `alone` replays: a power loss
    /// leaves no process behind, and while others run the page cache holds
    /// every commit (rewriting their pages would race their readers).
    fn cold_recover(&self, alone: bool) -> Result<(Meta, u64)> {
        let metas = self.metas()?;
        let chain = if alone { self.log_chain(&metas)? } else { crate::log::Chain::default() };
        let end = chain.end();
        if let Some(found) = self.first_verified(&metas, |m| m.txnid > end)? {
            return Ok(found);
        }
        if let Some(log) = self.log.get().filter(|_| end != 0) {
            if let Some(found) = self.recover_chain(log, &chain, &metas)? {
                return Ok(found);
            }
        }
        // A replay rewrote slots: read them again.
        let metas = self.metas()?;
        if let Some(found) = self.first_verified(&metas, |_| true)? {
            return Ok(found);
        }
        // Damage that every commit shares (not a torn write): open at the
        // newest commit anyway, so everything else stays readable and the
        // damaged pages are errors naming them, instead of losing the file.
        metas.first().copied().ok_or_else(|| self.no_meta("no meta page has a valid checksum"))
    }

    /// The newest of the `metas` that pass `keep` and verify; the newer
    /// ones (which failed) are wiped.
    fn first_verified(
        &self,
        metas: &[(Meta, u64)],
        keep: impl Fn(&Meta) -> bool,
    ) -> Result<Option<(Meta, u64)>> {
        for (i, &(meta, slot)) in metas.iter().enumerate().filter(|(_, (m, _))| keep(m)) {
            let checked = if meta.flags & FLAG_SYNCED != 0 {
                crate::ops::verify_commit(self, &meta)
            } else {
                crate::ops::check_meta(self, &meta).map(|_| ())
            };
            if checked.is_ok() {
                if self.store.writable() {
                    self.wipe_after(&metas[..i], meta.txnid)?;
                    self.store.sync()?;
                }
                return Ok(Some((meta, slot)));
            }
        }
        Ok(None)
    }

    /// The redo log's chain of records for this database (empty without
    /// a log, or when no meta names the database).
    fn log_chain(&self, metas: &[(Meta, u64)]) -> Result<crate::log::Chain> {
        let (Some(log), Some((newest, _))) = (self.log.get(), metas.first()) else {
            return Ok(crate::log::Chain::default());
        };
        log.read_chain(newest.id, self.store.file.reserved() as u64 / PAGE as u64)
    }

    /// Wipes the slots of the `metas` newer than `txnid` (they did not
    /// verify), so no later open can pick them.
    fn wipe_after(&self, metas: &[(Meta, u64)], txnid: u64) -> Result<()> {
        for &(m, slot) in metas {
            if m.txnid > txnid {
                self.store.write_meta(slot, &[0u8; META_LEN])?;
            }
        }
        Ok(())
    }

    /// The chain's last commit. A writable handle takes it from the data
    /// file if that already holds everything a replay would write (a clean
    /// shutdown: nothing is written), else replays the chain into it: the
    /// newer metas are wiped, every record's pages and meta written in
    /// order, and the file synced; `None` if the last commit does not
    /// verify then (a forged log). A read-only handle cannot replay: it
    /// opens the last commit if the data file holds it by itself.
    fn recover_chain(
        &self,
        log: &crate::log::Log,
        chain: &crate::log::Chain,
        metas: &[(Meta, u64)],
    ) -> Result<Option<(Meta, u64)>> {
        let end = chain.end();
        if !self.store.writable() {
            // The chain's base was on disk, so only the pages the chain's
            // commits wrote can be missing: verifying those the last commit
            // reaches is O(chain), not a check of the whole file (pages
            // that differ from the log may be ones the chain freed again).
            let since = chain.records.first().map_or(end, |r| r.txnid);
            return metas
                .iter()
                .find(|(m, _)| m.txnid == end && crate::ops::verify_since(self, m, since).is_ok())
                .map(|&found| Some(found))
                .ok_or_else(|| Error::NeedsReplay { path: self.store.path.clone() });
        }
        let written_back = log.written_back(chain, &self.store)?;
        self.wipe_after(metas, end)?;
        if !written_back {
            for rec in &chain.records {
                log.replay(rec, &self.store)?;
            }
            self.store.file.refresh().map_err(Error::region("map replayed pages"))?;
        }
        self.store.sync()?;
        Ok(self.verified_end(&self.metas()?, end))
    }

    /// The meta of commit `end` among `metas`, if the pages that commit
    /// wrote verify (every page it reaches is on disk: the chain's base
    /// was, and the chain holds everything after it).
    fn verified_end(&self, metas: &[(Meta, u64)], end: u64) -> Option<(Meta, u64)> {
        let found = metas.iter().find(|(m, _)| m.txnid == end).copied()?;
        crate::ops::verify_commit(self, &found.0).is_ok().then_some(found)
    }

    /// Starts a read transaction: a snapshot of the last commit, held
    /// until the transaction is dropped. Takes no lock.
    pub fn read(&self) -> Result<ReadTxn<'_>> {
        thread_local! { static HINT: Cell<usize> = const { Cell::new(usize::MAX) }; }
        let hint = HINT.with(|h| {
            if h.get() == usize::MAX {
                // Threads start at different slots (no contention on one
                // line), all near the front: the writer scans the table up
                // to its high-water mark on every commit that reuses pages.
                h.set(rustix::thread::gettid().as_raw_nonzero().get() as usize * 7 % READER_HINTS);
            }
            h.get()
        });
        let slot = self.lock.claim_reader(hint)?;
        HINT.with(|h| h.set(slot));
        let started = now_us();
        match self.pin_snapshot(slot, started) {
            Ok(meta) => Ok(ReadTxn { db: self, meta, slot, started_us: started }),
            Err(e) => {
                self.lock.release_reader(slot);
                Err(e)
            }
        }
    }

    /// Registers the current commit in reader slot `slot` and reads its
    /// meta. The re-check after registering closes the race with a writer
    /// that scanned the reader table before our store.
    fn pin_snapshot(&self, slot: usize, started: u64) -> Result<Meta> {
        for _ in 0..1000 {
            let cur = self.lock.current();
            self.lock.set_reader(slot, cur.txnid(), started);
            if self.lock.current() != cur {
                continue;
            }
            let bytes = self.store.meta_bytes(cur.slot())?;
            match Meta::decode(&bytes) {
                Ok(m) if m.txnid == cur.txnid() => return Ok(m),
                // Overwritten after `current` moved on: try the new one.
                _ if self.lock.current() != cur => continue,
                Ok(m) => {
                    return Err(self.store.corrupt(
                        cur.slot(),
                        "(meta)",
                        format!("meta holds commit {} where the lock file says {}", m.txnid, cur.txnid()),
                    ));
                }
                Err(e) => return Err(self.store.corrupt(cur.slot(), "(meta)", format!("{e:?}"))),
            }
        }
        Err(Error::Timeout { op: "pin a snapshot (the writer commits too fast to catch)" })
    }

    /// Waits until a commit newer than `txnid` exists (or `timeout`
    /// elapses); returns the newest commit id. Parks on the commit
    /// counter's notifier in the lock file: no polling.
    ///
    /// The condition is `current`, the last commit, not the counter: the
    /// counter only ever rises, so after a cold open fell back to an
    /// older commit (or with garbage in it) it is ahead of every commit,
    /// and waiting for it returned at once, with a commit that does not
    /// exist, and `Watch::wait` spun.
    pub fn wait_for_commit(&self, txnid: u64, timeout: Option<std::time::Duration>) -> Result<u64> {
        let events = self.lock.commits()?;
        let newer = || self.lock.current().txnid() > txnid;
        events.notifier().wait_until(newer, &mmkit_sync::WaitPolicy::BALANCED, timeout);
        Ok(self.last_commit())
    }

    /// The id of the last commit.
    pub fn last_commit(&self) -> u64 {
        self.lock.current().txnid()
    }
}

/// A random database identity (the redo log's records carry it).
fn new_id() -> u64 {
    let mut b = [0u8; 8];
    let random = rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty()).is_ok_and(|n| n == 8);
    if random {
        u64::from_le_bytes(b)
    } else {
        // No entropy source: the clock and the pid still differ between
        // any two databases a log could be confused with.
        now_us() ^ (u64::from(std::process::id()) << 40)
    }
}

/// Writes a fresh database: four meta slots, the first holding an empty
/// commit. Written to a temporary file, synced, then renamed into place
/// with `RENAME_NOREPLACE`, so a crash never leaves half a database.
fn create_file(path: &Path) -> Result<()> {
    use std::io::Write;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".mmkit-kv-new")
        .tempfile_in(dir)
        .map_err(|e| Error::io("create database", path, e))?;
    let meta = Meta {
        flags: FLAG_SYNCED,
        txnid: 1,
        durable: 1,
        next_page: META_SLOTS,
        catalog: Root::default(),
        free: Root::default(),
        free_count: 0,
        time_us: now_us(),
        id: new_id(),
    };
    let mut image = vec![0u8; META_SLOTS as usize * PAGE];
    image[..META_LEN].copy_from_slice(&meta.encode());
    let file = tmp.as_file_mut();
    file.write_all(&image).map_err(|e| Error::io("write database", path, e))?;
    file.sync_all().map_err(|e| Error::io("fsync database", path, e))?;
    match rustix::fs::renameat_with(
        rustix::fs::CWD,
        tmp.path(),
        rustix::fs::CWD,
        path,
        rustix::fs::RenameFlags::NOREPLACE,
    ) {
        Ok(()) => {
            // The file has its final name: only stop the guard from
            // deleting the temporary one (dropping the path frees it).
            let _ = tmp.into_temp_path().keep();
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
            Ok(())
        }
        // Another process created it first: use theirs.
        Err(rustix::io::Errno::EXIST) => Ok(()),
        Err(e) => Err(Error::io("rename new database into place", path, e)),
    }
}

/// A read transaction: one committed snapshot, stable for its whole life,
/// whatever writers do meanwhile. Values borrowed from it are zero-copy
/// views into the mapping.
pub struct ReadTxn<'db> {
    pub(crate) db: &'db Db,
    pub(crate) meta: Meta,
    slot: usize,
    started_us: u64,
}

impl std::fmt::Debug for ReadTxn<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadTxn").field("txnid", &self.meta.txnid).finish()
    }
}

impl Drop for ReadTxn<'_> {
    fn drop(&mut self) {
        self.db.lock.release_reader(self.slot);
    }
}

impl<'db> ReadTxn<'db> {
    pub(crate) fn view(&self) -> View<'_> {
        View {
            store: &self.db.store,
            next_page: self.meta.next_page,
            verify: self.db.opts.verify_reads,
            prefetch: true,
        }
    }

    /// The commit id of this snapshot.
    pub fn txnid(&self) -> u64 {
        self.meta.txnid
    }

    /// When the snapshot was taken, in microseconds since the Unix epoch.
    pub fn started_us(&self) -> u64 {
        self.started_us
    }

    /// The table named `name`; [`Error::NoSuchTable`] if it does not exist.
    pub fn table(&self, name: &str) -> Result<Table<'_>> {
        check_table_name(name)?;
        let v = self.view();
        let info = tree::get(&v, self.meta.catalog, name.as_bytes(), "(catalog)")?
            .ok_or_else(|| Error::NoSuchTable { name: name.into() })?;
        let info = TableInfo::decode(info)
            .ok_or_else(|| self.db.store.corrupt(self.meta.catalog.page, "(catalog)", "bad table entry"))?;
        Ok(Table { v, info, name: name.into() })
    }

    /// The default table (empty if nothing was written yet).
    pub fn default_table(&self) -> Result<Table<'_>> {
        match self.table(DEFAULT_TABLE) {
            Err(Error::NoSuchTable { .. }) => {
                Ok(Table { v: self.view(), info: TableInfo::default(), name: DEFAULT_TABLE.into() })
            }
            other => other,
        }
    }

    /// Names of all tables, in order.
    pub fn tables(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut c = Cursor::new(self.view(), self.meta.catalog, "(catalog)");
        let mut ok = c.first()?;
        while ok {
            out.push(String::from_utf8_lossy(c.key()?).into_owned());
            ok = c.next()?;
        }
        Ok(out)
    }
}

/// A table inside a read transaction (or a write transaction's view).
pub struct Table<'t> {
    pub(crate) v: View<'t>,
    pub(crate) info: TableInfo,
    pub(crate) name: std::sync::Arc<str>,
}

impl std::fmt::Debug for Table<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table").field("name", &self.name).field("len", &self.info.count).finish()
    }
}

impl<'t> Table<'t> {
    /// The value under `key`, borrowed from the mapping.
    #[inline]
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<&'t [u8]>> {
        tree::get(&self.v, self.info.root, key.as_ref(), &self.name)
    }

    /// Number of entries.
    pub fn len(&self) -> u64 {
        self.info.count
    }

    /// True when the table has no entries.
    pub fn is_empty(&self) -> bool {
        self.info.count == 0
    }

    /// The table's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The first entry.
    pub fn first(&self) -> Result<Option<(&'t [u8], &'t [u8])>> {
        self.iter().next().transpose()
    }

    /// The last entry.
    pub fn last(&self) -> Result<Option<(&'t [u8], &'t [u8])>> {
        self.iter().next_back().transpose()
    }

    /// All entries in key order (reverse with `.rev()`).
    pub fn iter(&self) -> Iter<'t> {
        self.range::<&[u8], _>(..)
    }

    /// Entries whose keys lie in `range`, in key order; double-ended.
    pub fn range<K: AsRef<[u8]>, R: RangeBounds<K>>(&self, range: R) -> Iter<'t> {
        let own = |b: Bound<&K>| match b {
            Bound::Included(k) => Bound::Included(k.as_ref().to_vec()),
            Bound::Excluded(k) => Bound::Excluded(k.as_ref().to_vec()),
            Bound::Unbounded => Bound::Unbounded,
        };
        Iter::new(self.v, self.info.root, self.name.clone(), own(range.start_bound()), own(range.end_bound()))
    }

    /// Entries whose keys start with `prefix`; double-ended.
    pub fn prefix(&self, prefix: impl AsRef<[u8]>) -> Iter<'t> {
        let p = prefix.as_ref().to_vec();
        let end = prefix_end(&p).map_or(Bound::Unbounded, Bound::Excluded);
        Iter::new(self.v, self.info.root, self.name.clone(), Bound::Included(p), end)
    }
}

/// The smallest key greater than every key starting with `prefix` (`None`
/// when every byte is 0xff: then no key is).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// A double-ended iterator over a key range; yields zero-copy
/// `(key, value)` pairs, or an error (once) on corruption.
pub struct Iter<'a> {
    front: Cursor<'a>,
    back: Cursor<'a>,
    start: Bound<Vec<u8>>,
    end: Bound<Vec<u8>>,
    /// 0 = not positioned yet, 1 = positioned, 2 = exhausted.
    front_state: u8,
    back_state: u8,
    /// Keys of the last entries yielded from each end, to stop when they
    /// meet.
    front_key: Option<&'a [u8]>,
    back_key: Option<&'a [u8]>,
}

impl<'a> Iter<'a> {
    fn new(
        v: View<'a>,
        root: Root,
        table: std::sync::Arc<str>,
        start: Bound<Vec<u8>>,
        end: Bound<Vec<u8>>,
    ) -> Iter<'a> {
        let c = Cursor::new(v, root, table);
        Iter {
            front: c.clone(),
            back: c,
            start,
            end,
            front_state: 0,
            back_state: 0,
            front_key: None,
            back_key: None,
        }
    }

    fn before_end(&self, k: &[u8]) -> bool {
        match &self.end {
            Bound::Included(e) => k <= e.as_slice(),
            Bound::Excluded(e) => k < e.as_slice(),
            Bound::Unbounded => true,
        }
    }

    fn after_start(&self, k: &[u8]) -> bool {
        match &self.start {
            Bound::Included(s) => k >= s.as_slice(),
            Bound::Excluded(s) => k > s.as_slice(),
            Bound::Unbounded => true,
        }
    }

    fn step_front(&mut self) -> Result<Option<(&'a [u8], &'a [u8])>> {
        let ok = match self.front_state {
            0 => match &self.start {
                Bound::Unbounded => self.front.first()?,
                Bound::Included(s) => self.front.seek(s)?,
                Bound::Excluded(s) => {
                    let mut ok = self.front.seek(s)?;
                    if ok && self.front.key()? == s.as_slice() {
                        ok = self.front.next()?;
                    }
                    ok
                }
            },
            1 => self.front.next()?,
            _ => false,
        };
        self.front_state = 1;
        if !ok {
            self.front_state = 2;
            return Ok(None);
        }
        let (k, v) = self.front.entry()?;
        if !self.before_end(k) || self.back_key.is_some_and(|b| k >= b) {
            self.front_state = 2;
            return Ok(None);
        }
        self.front_key = Some(k);
        Ok(Some((k, v)))
    }

    fn step_back(&mut self) -> Result<Option<(&'a [u8], &'a [u8])>> {
        let ok = match self.back_state {
            0 => match &self.end {
                Bound::Unbounded => self.back.last()?,
                Bound::Included(e) => self.back.seek_back(e)?,
                Bound::Excluded(e) => {
                    let mut ok = self.back.seek_back(e)?;
                    if ok && self.back.key()? == e.as_slice() {
                        ok = self.back.prev()?;
                    }
                    ok
                }
            },
            1 => self.back.prev()?,
            _ => false,
        };
        self.back_state = 1;
        if !ok {
            self.back_state = 2;
            return Ok(None);
        }
        let (k, v) = self.back.entry()?;
        if !self.after_start(k) || self.front_key.is_some_and(|f| k <= f) {
            self.back_state = 2;
            return Ok(None);
        }
        self.back_key = Some(k);
        Ok(Some((k, v)))
    }
}

impl<'a> Iterator for Iter<'a> {
    type Item = Result<(&'a [u8], &'a [u8])>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.front_state == 2 {
            return None;
        }
        let r = self.step_front();
        if r.is_err() {
            self.front_state = 2;
            self.back_state = 2;
        }
        r.transpose()
    }
}

impl DoubleEndedIterator for Iter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        if self.back_state == 2 {
            return None;
        }
        let r = self.step_back();
        if r.is_err() {
            self.front_state = 2;
            self.back_state = 2;
        }
        r.transpose()
    }
}
