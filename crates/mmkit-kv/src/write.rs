//! The write transaction: copy-on-write edits of the trees, page
//! allocation and reuse, and the commit protocol.

use std::ops::{Bound, RangeBounds};
use std::sync::atomic::Ordering;

use mmkit_region::Access;
use mmkit_sync::LockOutcome;

use crate::db::{Db, Durability, Table, TableInfo, check_table_name, now_us};
use crate::error::{Error, Result};
use crate::lock::{
    CommitRef, L_CURRENT, L_DURABLE, L_FLUSHED, L_LOG_BASE, L_LOG_END, L_LOG_HEAD, L_SHRINKS, L_SYNCING,
};
use crate::meta::{FLAG_SYNCED, META_SLOTS, Meta, Root};
use crate::page::{Page, PageMut};
use crate::store::View;
use crate::tree::Cursor;

mod edit;
mod free;

pub(crate) use free::{FreeKey, parse_free_key, parse_record};

pub(crate) const FREE_TABLE: &str = "(free)";
pub(crate) const CATALOG: &str = "(catalog)";
/// Free pages before a commit tries to shrink the file (also at least a
/// quarter of the file).
const AUTO_SHRINK: u64 = 256;
/// How long a Group commit waits for another committer's sync before it
/// syncs by itself.
const GROUP_SYNC_WAIT: std::time::Duration = std::time::Duration::from_secs(1);
#[derive(Clone, Debug)]
struct OpenTable {
    name: String,
    info: TableInfo,
    orig: Option<TableInfo>,
    dropped: bool,
}

/// Buffers the writer keeps between transactions so a small commit
/// allocates nothing.
#[derive(Default)]
pub(crate) struct WriterState {
    dirty: Vec<u64>,
    dirty_list: Vec<u64>,
    /// Pages ready for reuse: from the records in `loaded`, or freed
    /// earlier in this transaction.
    pool: Vec<u64>,
    /// Free-tree records taken into the pool (key, pages): deleted at
    /// commit, and what the pool still holds is written back.
    loaded: Vec<(FreeKey, u64)>,
    pool_after: Option<FreeKey>,
    pool_done: bool,
    /// Pages freed by this transaction, with the commit that wrote them.
    freed: Vec<(u64, u64)>,
    /// A free-tree record being encoded.
    record: Vec<u8>,
    /// Pages to record at commit: class 0, class 1, the pool's leftovers.
    lists: [Vec<u64>; 3],
    tables: Vec<OpenTable>,
    sizes: Vec<usize>,
    /// The path of the tree operation under way.
    path: Vec<(u64, usize)>,
    /// Per tree level, the dirty children of the branch being sealed.
    unsealed: Vec<Vec<(usize, u64)>>,
    reaped: bool,
    /// The reader table's oldest snapshot, once scanned in this
    /// transaction (`None` until then).
    oldest_reader: Option<Option<crate::lock::ReaderSlot>>,
    /// Free-tree size at the last automatic shrink attempt.
    shrink_mark: u64,
    /// The lock file's shrink counter when this process last refreshed
    /// its mapping.
    shrinks_seen: u64,
    /// A redo-log record's header being encoded.
    log_buf: Vec<u8>,
}

impl WriterState {
    fn reset(&mut self) {
        for &p in &self.dirty_list {
            if let Some(w) = self.dirty.get_mut((p / 64) as usize) {
                *w = 0;
            }
        }
        self.dirty_list.clear();
        self.pool.clear();
        self.pool_after = None;
        self.pool_done = false;
        self.loaded.clear();
        self.freed.clear();
        self.lists.iter_mut().for_each(Vec::clear);
        self.tables.clear();
        self.reaped = false;
        self.oldest_reader = None;
    }
}

/// The one write transaction of the database (across all processes).
/// Dropping it without [`commit`](WriteTxn::commit) aborts.
pub struct WriteTxn<'db> {
    db: &'db Db,
    st: std::sync::MutexGuard<'db, WriterState>,
    robust: Option<mmkit_sync::MutexGuard<'db>>,
    base: Meta,
    base_slot: u64,
    txnid: u64,
    next_page: u64,
    catalog: Root,
    free: Root,
    free_count: u64,
    durable: CommitRef,
    syncing: CommitRef,
    sealing: bool,
}

impl std::fmt::Debug for WriteTxn<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteTxn").field("txnid", &self.txnid).finish()
    }
}

impl Drop for WriteTxn<'_> {
    fn drop(&mut self) {
        self.st.reset();
    }
}

impl Db {
    /// Starts the write transaction, waiting for the writer of any other
    /// thread or process to finish. A writer that died holding the lock is
    /// detected by liveness within milliseconds; its unfinished commit is
    /// simply never seen.
    pub fn write(&self) -> Result<WriteTxn<'_>> {
        if !self.store.writable() {
            return Err(Error::ReadOnly { op: "write", path: self.store.path.clone() });
        }
        let st = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let robust = self.lock_writer()?;
        let mut st = st;
        self.refresh_after_shrink(&mut st.shrinks_seen)?;
        let mut cur = self.lock.current();
        // A meta newer than `current` under the writer lock: a dead
        // writer's commit that a locker without `take_over` let by, or a
        // `current` another process lowered. Basing on the older commit
        // would reuse the pages the newer one took from the free tree,
        // which its readers hold. Four word loads; the full check only
        // when one is newer.
        if self.newer_meta_than(cur.txnid())? {
            self.take_over()?;
            cur = self.lock.current();
        }
        let base = Meta::decode(&self.store.meta_bytes(cur.slot())?)
            .ok()
            .filter(|m| m.txnid == cur.txnid())
            .ok_or_else(|| self.store.corrupt(cur.slot(), "(meta)", "current meta does not verify"))?;
        // Another process's commits may have grown the file past this
        // process's mapping; pages below `next_page` that the writer reuses
        // are written through `page_mut`, which maps nothing: map them now
        // (free when nothing was added).
        self.store.ensure_mapped(base.next_page)?;
        Ok(WriteTxn {
            db: self,
            st,
            robust: Some(robust),
            base,
            base_slot: cur.slot(),
            txnid: base.txnid + 1,
            next_page: base.next_page,
            catalog: base.catalog,
            free: base.free,
            free_count: base.free_count,
            durable: self.lock.durable(),
            syncing: self.lock.syncing(),
            sealing: false,
        })
    }

    /// Takes the writer lock; a dead holder's complete commit is
    /// published first ([`take_over`](Self::take_over)), on every path
    /// that takes the lock.
    fn lock_writer(&self) -> Result<mmkit_sync::MutexGuard<'_>> {
        let mutex = self.lock.writer()?;
        match mutex.lock().map_err(Error::sync("lock writer"))? {
            LockOutcome::Acquired(g) => Ok(g),
            LockOutcome::OwnerDied(g) => {
                self.take_over()?;
                g.make_consistent();
                Ok(g)
            }
        }
    }

    /// Whether a meta slot claims a commit newer than `txnid` (its txnid
    /// word, unverified: [`take_over`](Self::take_over) verifies).
    fn newer_meta_than(&self, txnid: u64) -> Result<bool> {
        for slot in 0..crate::meta::META_SLOTS {
            let word = self.store.file.load_u64(slot * crate::PAGE as u64 + 24, Ordering::Relaxed);
            if word.map_err(Error::region("read meta"))? > txnid {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// A writer died: publish the newest complete commit it may have
    /// written but not announced (a meta with a valid checksum is whole:
    /// it is written after every page it points to).
    pub(crate) fn take_over(&self) -> Result<()> {
        let (meta, slot) = self.newest_meta()?;
        if meta.txnid > self.lock.current().txnid() {
            self.lock.word(L_CURRENT).store(CommitRef::new(meta.txnid, slot).0, Ordering::SeqCst);
            self.lock.commits()?.publish(meta.txnid);
        }
        Ok(())
    }

    /// After another handle cut the file, this mapping's idea of its
    /// length is stale: refresh it before writing, or growth would skip
    /// the `fallocate`. Costs one atomic load when nothing was cut.
    fn refresh_after_shrink(&self, seen: &mut u64) -> Result<()> {
        let shrinks = self.lock.word(L_SHRINKS).load(Ordering::Acquire);
        if shrinks != *seen {
            self.store.file.refresh().map_err(Error::region("refresh after shrink"))?;
            *seen = shrinks;
        }
        Ok(())
    }
}

impl<'db> WriteTxn<'db> {
    /// This transaction's commit id.
    pub fn txnid(&self) -> u64 {
        self.txnid
    }

    pub(crate) fn view(&self) -> View<'db> {
        View { store: &self.db.store, next_page: self.next_page, verify: false, prefetch: false }
    }

    pub(crate) fn is_dirty(&self, p: u64) -> bool {
        self.st.dirty.get((p / 64) as usize).is_some_and(|w| w & (1 << (p % 64)) != 0)
    }

    fn mark_dirty(&mut self, p: u64) {
        let w = (p / 64) as usize;
        if self.st.dirty.len() <= w {
            self.st.dirty.resize(w + 1, 0);
        }
        if self.st.dirty[w] & (1 << (p % 64)) == 0 {
            self.st.dirty[w] |= 1 << (p % 64);
            self.st.dirty_list.push(p);
        }
    }

    fn page_mut(&mut self, p: u64) -> PageMut<'_> {
        debug_assert!(self.is_dirty(p));
        // SAFETY: `p` is dirty: allocated by this transaction (the only
        // write transaction, we hold the writer lock), so no snapshot can
        // reach it; it lies below `next_page`, so inside the mapped
        // length (pages below the base's `next_page` were mapped by
        // `Db::write`'s `ensure_mapped`, later ones by `alloc_end`'s
        // growth); and the `&mut self` borrow keeps this the only
        // reference this transaction hands out.
        PageMut(unsafe { self.db.store.page_mut(p, 1) })
    }

    fn page(&self, p: u64, table: &str) -> Result<Page<'db>> {
        self.view().page(p, 0, table, false)
    }

    fn bad(&self, p: u64, table: &str, reason: &'static str) -> Error {
        self.db.store.corrupt(p, table, reason)
    }

    fn open_table(&mut self, name: &str, create: bool) -> Result<usize> {
        check_table_name(name)?;
        if let Some(i) = self.st.tables.iter().position(|t| t.name == name) {
            if self.st.tables[i].dropped {
                if !create {
                    return Err(Error::NoSuchTable { name: name.into() });
                }
                self.st.tables[i].dropped = false;
                self.st.tables[i].info = TableInfo::default();
            }
            return Ok(i);
        }
        let found = crate::tree::get(&self.view(), self.catalog, name.as_bytes(), CATALOG)?;
        let orig = match found {
            Some(b) => Some(
                TableInfo::decode(b)
                    .ok_or_else(|| self.bad(self.catalog.page, CATALOG, "bad table entry"))?,
            ),
            None if create => None,
            None => return Err(Error::NoSuchTable { name: name.into() }),
        };
        self.st.tables.push(OpenTable {
            name: name.into(),
            info: orig.unwrap_or_default(),
            orig,
            dropped: false,
        });
        Ok(self.st.tables.len() - 1)
    }

    /// The table `name` for reading and writing, created if it does not
    /// exist (the creation commits with the transaction).
    pub fn table(&mut self, name: &str) -> Result<TableMut<'_, 'db>> {
        let idx = self.open_table(name, true)?;
        Ok(TableMut { txn: self, idx })
    }

    /// The table `name`, which must exist.
    pub fn existing_table(&mut self, name: &str) -> Result<TableMut<'_, 'db>> {
        let idx = self.open_table(name, false)?;
        Ok(TableMut { txn: self, idx })
    }

    /// The default table.
    pub fn default_table(&mut self) -> Result<TableMut<'_, 'db>> {
        self.table(crate::DEFAULT_TABLE)
    }

    /// Deletes table `name` and all its entries; false if it did not exist.
    pub fn drop_table(&mut self, name: &str) -> Result<bool> {
        let idx = match self.open_table(name, false) {
            Ok(i) => i,
            Err(Error::NoSuchTable { .. }) => return Ok(false),
            Err(e) => return Err(e),
        };
        let t = self.st.tables[idx].clone();
        self.free_tree(t.info.root, &t.name)?;
        let t = &mut self.st.tables[idx];
        t.info = TableInfo::default();
        t.dropped = true;
        Ok(true)
    }

    /// Names of all tables as this transaction sees them.
    pub fn tables(&self) -> Result<Vec<String>> {
        let mut names = Vec::new();
        let mut c = Cursor::new(self.view(), self.catalog, CATALOG);
        let mut ok = c.first()?;
        while ok {
            names.push(String::from_utf8_lossy(c.key()?).into_owned());
            ok = c.next()?;
        }
        for t in self.st.tables.iter() {
            let pos = names.iter().position(|n| *n == t.name);
            match (pos, t.dropped) {
                (Some(i), true) => {
                    names.remove(i);
                }
                (None, false) => names.push(t.name.clone()),
                _ => {}
            }
        }
        names.sort();
        Ok(names)
    }

    /// Commits with the database's default durability; returns the commit
    /// id.
    pub fn commit(self) -> Result<u64> {
        let d = self.db.opts.durability;
        self.commit_with(d)
    }

    /// Commits with durability `d`.
    pub fn commit_with(mut self, d: Durability) -> Result<u64> {
        let txnid = self.finish(d)?;
        let db = self.db;
        let try_shrink = self.free_count >= AUTO_SHRINK.max(self.next_page / 4)
            && self.free_count >= self.st.shrink_mark.saturating_mul(2);
        if try_shrink {
            self.st.shrink_mark = self.free_count;
        }
        self.st.reset();
        self.robust = None;
        drop(self);
        if d == Durability::Group && txnid > 0 {
            db.wait_durable(txnid)?;
        }
        if try_shrink {
            db.cut_tail()?;
        }
        Ok(txnid)
    }

    /// Writes the commit and publishes it, still holding the writer lock.
    /// Returns the commit id (the base's if nothing changed).
    pub(crate) fn finish(&mut self, d: Durability) -> Result<u64> {
        let changed = !self.st.dirty_list.is_empty()
            || !self.st.freed.is_empty()
            || !self.st.loaded.is_empty()
            || self.st.tables.iter().any(|t| t.dropped || t.orig != Some(t.info));
        if !changed {
            return Ok(self.base.txnid);
        }
        self.update_catalog()?;
        self.update_free_tree()?;
        let slot = self.choose_slot();
        let immediate = d == Durability::Immediate;
        let logged = immediate && self.fits_log();
        let durable = if immediate { self.txnid } else { self.durable.txnid() };
        let meta = Meta {
            flags: if immediate && !logged { FLAG_SYNCED } else { 0 },
            txnid: self.txnid,
            durable,
            next_page: self.next_page,
            catalog: self.catalog,
            free: self.free,
            free_count: self.free_count,
            time_us: now_us(),
            id: self.base.id,
        };
        let lock = &self.db.lock;
        let encoded = meta.encode();
        if logged {
            self.db.store.write_meta(slot, &encoded)?;
            if let Err(e) = self.log_commit(slot, encoded) {
                // Not durable, so not a commit: no later open or take-over
                // may find this meta (its slot held none of the commits
                // anyone can still need).
                self.db.store.write_meta(slot, &[0u8; crate::meta::META_LEN])?;
                return Err(e);
            }
        } else {
            if immediate && lock.word(L_FLUSHED).load(Ordering::SeqCst) < self.base.txnid {
                // Earlier commits are not in the data file on disk: their
                // pages must be before a meta that is trusted after a power
                // loss points at them (a SYNCED meta is verified in
                // O(size of its own commit)).
                self.flush_data(self.base.txnid)?;
            }
            self.db.store.write_meta(slot, &encoded)?;
            if immediate {
                if let Err(e) = self.flush_data(self.txnid) {
                    // As with the log: a commit reported failed must not
                    // come back at a later open or take-over.
                    self.db.store.write_meta(slot, &[0u8; crate::meta::META_LEN])?;
                    return Err(e);
                }
            }
        }
        let at = CommitRef::new(self.txnid, slot);
        lock.word(L_CURRENT).store(at.0, Ordering::SeqCst);
        if immediate {
            lock.word(L_DURABLE).fetch_max(at.0, Ordering::SeqCst);
            lock.durable_events()?.publish(self.txnid);
        }
        lock.commits()?.publish(self.txnid);
        Ok(self.txnid)
    }

    /// Whether this commit goes to the redo log: the log is on (its size
    /// above 0), and the record takes at most a quarter of it (a bigger
    /// commit syncs the data file instead: it would need a checkpoint of
    /// its own after a few such records anyway).
    fn fits_log(&self) -> bool {
        let (size, pages) = (self.db.opts.log_size, self.st.dirty_list.len());
        size > 0 && pages <= crate::log::MAX_RECORD_PAGES && crate::log::Record::len(pages) <= size / 4
    }

    /// `fdatasync`s the data file, which then holds every commit up to
    /// `upto` on disk.
    fn flush_data(&self, upto: u64) -> Result<()> {
        self.db.store.sync()?;
        self.db.lock.word(L_FLUSHED).fetch_max(upto, Ordering::SeqCst);
        Ok(())
    }

    /// Makes the commit durable through the redo log: its record goes
    /// after the chain's last one when this commit follows it and there is
    /// room; else a new chain starts at the log's start, once the data file
    /// holds every earlier commit (one more `fdatasync`, at most once per
    /// log's worth of commits, or after commits that were not logged).
    fn log_commit(&mut self, slot: u64, meta: [u8; crate::meta::META_LEN]) -> Result<()> {
        let log = self.db.log_for_writing()?;
        let lock = &self.db.lock;
        let prev = self.base.txnid;
        let mut pages = std::mem::take(&mut self.st.dirty_list);
        pages.sort_unstable();
        let len = crate::log::Record::len(pages.len());
        let mut head = lock.word(L_LOG_HEAD).load(Ordering::SeqCst);
        let mut base = lock.word(L_LOG_BASE).load(Ordering::SeqCst);
        let extends = lock.word(L_LOG_END).load(Ordering::SeqCst) == prev
            && head.checked_add(len).is_some_and(|end| end <= self.db.opts.log_size);
        if !extends {
            lock.word(L_LOG_END).store(0, Ordering::SeqCst);
            if lock.word(L_FLUSHED).load(Ordering::SeqCst) < prev {
                self.flush_data(prev)?;
            }
            (head, base) = (0, prev);
        }
        let rec = crate::log::Record { txnid: self.txnid, base, slot, meta, pages, offset: head };
        let mut buf = std::mem::take(&mut self.st.log_buf);
        let written = log.append(head, &rec, self.base.id, &self.db.store, &mut buf);
        self.st.log_buf = buf;
        self.st.dirty_list = rec.pages;
        let written = written?;
        lock.word(L_LOG_BASE).store(base, Ordering::SeqCst);
        lock.word(L_LOG_HEAD).store(head + written, Ordering::SeqCst);
        lock.word(L_LOG_END).store(self.txnid, Ordering::SeqCst);
        Ok(())
    }

    /// Seals every changed table and writes its root into the catalog.
    fn update_catalog(&mut self) -> Result<()> {
        let mut tables = std::mem::take(&mut self.st.tables);
        let result = (|| {
            for t in tables.iter_mut() {
                let mut catalog = self.catalog;
                if t.dropped {
                    if t.orig.is_some() {
                        self.tree_delete(&mut catalog, t.name.as_bytes(), CATALOG)?;
                    }
                } else if Some(t.info) != t.orig {
                    self.seal(&mut t.info.root, &t.name)?;
                    self.tree_put(&mut catalog, t.name.as_bytes(), &t.info.encode(), CATALOG)?;
                }
                self.catalog = catalog;
            }
            let mut catalog = self.catalog;
            self.seal(&mut catalog, CATALOG)?;
            self.catalog = catalog;
            Ok(())
        })();
        self.st.tables = tables;
        result
    }

    /// A meta slot that holds none of: the last commit, the durable one,
    /// the one being synced.
    fn choose_slot(&self) -> u64 {
        let busy = [
            Some(self.base_slot),
            (self.durable.0 != 0).then(|| self.durable.slot()),
            (self.syncing.0 != 0).then(|| self.syncing.slot()),
        ];
        (0..META_SLOTS).find(|s| !busy.contains(&Some(*s))).unwrap_or((self.base_slot + 1) % META_SLOTS)
    }

    fn info(&self, idx: usize) -> &OpenTable {
        &self.st.tables[idx]
    }
}

impl Db {
    /// Waits until commit `txnid` is on disk, syncing it ourselves if no
    /// other committer is: one `fdatasync` covers every commit made
    /// before it started.
    pub(crate) fn wait_durable(&self, txnid: u64) -> Result<()> {
        let events = self.lock.durable_events()?;
        let started = std::time::Instant::now();
        loop {
            if self.lock.durable().txnid() >= txnid {
                return Ok(());
            }
            let sync = self.lock.sync_mutex()?;
            if let Some(outcome) = sync.try_lock().map_err(Error::sync("lock sync"))? {
                let guard = outcome.into_guard();
                self.sync_round()?;
                guard.make_consistent();
                // Our own `fdatasync` began after our commit was written:
                // it is on disk, whatever `durable` in the lock file says
                // (waiting for that word to pass it spun forever when a
                // peer had lowered `current`).
                return Ok(());
            }
            if started.elapsed() >= GROUP_SYNC_WAIT {
                // The syncer named in the lock file holds on (a forged or
                // stale token naming a live process never lets go): an
                // `fdatasync` of our own makes the commit durable just as
                // well, and costs only the sharing.
                return self.store.sync();
            }
            let _ = events.wait_for(
                txnid,
                &mmkit_sync::WaitPolicy::BALANCED,
                Some(std::time::Duration::from_millis(5)),
            );
        }
    }

    /// One group-commit sync: mark the last commit as being synced (so
    /// writers keep its pages and meta slot), sync, then declare it
    /// durable. Both marks are made under the writer lock.
    fn sync_round(&self) -> Result<()> {
        let target = {
            let _g = self.lock_writer()?;
            let cur = self.lock.current();
            self.lock.word(L_SYNCING).store(cur.0, Ordering::SeqCst);
            cur
        };
        let synced = self.store.sync();
        let g = self.lock_writer()?;
        if synced.is_ok() {
            self.lock.word(L_DURABLE).fetch_max(target.0, Ordering::SeqCst);
            self.lock.word(L_FLUSHED).fetch_max(target.txnid(), Ordering::SeqCst);
        }
        self.lock.word(L_SYNCING).store(0, Ordering::SeqCst);
        drop(g);
        synced?;
        self.lock.durable_events()?.publish(target.txnid());
        Ok(())
    }

    /// Makes every commit so far durable in the data file itself (one
    /// `fdatasync`), and lets the pages that Eventual commits held back be
    /// reused.
    pub fn sync(&self) -> Result<()> {
        let target = self.lock.current().txnid();
        if self.lock.word(L_FLUSHED).load(Ordering::SeqCst) >= target {
            return Ok(());
        }
        self.sync_round()
    }
}

/// A table inside a write transaction.
pub struct TableMut<'t, 'db> {
    txn: &'t mut WriteTxn<'db>,
    idx: usize,
}

impl std::fmt::Debug for TableMut<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableMut").field("name", &self.txn.info(self.idx).name).finish()
    }
}

impl<'db> TableMut<'_, 'db> {
    /// The root, and the name moved out (no allocation per call); give
    /// the name back with [`TableMut::restore`].
    fn parts(&mut self) -> (Root, String) {
        let t = &mut self.txn.st.tables[self.idx];
        (t.info.root, std::mem::take(&mut t.name))
    }

    fn restore(&mut self, root: Root, name: String) -> &mut TableInfo {
        let t = &mut self.txn.st.tables[self.idx];
        t.name = name;
        t.info.root = root;
        &mut t.info
    }

    /// Sets `key` to `value`.
    pub fn put(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<()> {
        let (mut root, name) = self.parts();
        let added = self.txn.tree_put(&mut root, key.as_ref(), value.as_ref(), &name);
        // Saturating: the count comes from the file, which may be garbage.
        let info = self.restore(root, name);
        info.count = info.count.saturating_add(added? as u64);
        Ok(())
    }

    /// Appends `key`, which must sort after every key in the table: the
    /// path for sorted bulk loads, which leaves pages full.
    pub fn append(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<()> {
        if self.view().last()?.is_some_and(|(last, _)| last >= key.as_ref()) {
            return Err(Error::InvalidOption("append: keys must be strictly increasing".into()));
        }
        self.put(key, value)
    }

    /// Deletes `key`; true if it was there.
    pub fn delete(&mut self, key: impl AsRef<[u8]>) -> Result<bool> {
        let (mut root, name) = self.parts();
        let gone = self.txn.tree_delete(&mut root, key.as_ref(), &name);
        let info = self.restore(root, name);
        let gone = gone?;
        info.count = info.count.saturating_sub(gone as u64);
        Ok(gone)
    }

    /// Deletes every key in `range`; returns how many.
    pub fn delete_range<K: AsRef<[u8]>, R: RangeBounds<K>>(&mut self, range: R) -> Result<u64> {
        let own = |b: Bound<&K>| match b {
            Bound::Included(k) => Bound::Included(k.as_ref().to_vec()),
            Bound::Excluded(k) => Bound::Excluded(k.as_ref().to_vec()),
            Bound::Unbounded => Bound::Unbounded,
        };
        let (mut start, end) = (own(range.start_bound()), own(range.end_bound()));
        let mut total = 0;
        loop {
            let keys: Vec<Vec<u8>> = {
                let view = self.view();
                let batch = view.range::<Vec<u8>, _>((start.clone(), end.clone())).take(512);
                batch.map(|r| r.map(|(k, _)| k.to_vec())).collect::<Result<_>>()?
            };
            // Each batch starts past the last one's end, so the loop ends,
            // unless the tree is out of order: then a search may not find
            // the keys a scan yields (nothing is deleted) and the next batch
            // yields them again, forever.
            let after_start = match (&start, keys.first()) {
                (Bound::Excluded(s), Some(k)) => k > s,
                _ => true,
            };
            if !after_start || keys.windows(2).any(|w| w[0] >= w[1]) {
                let t = self.txn.info(self.idx);
                return Err(self.txn.bad(t.info.root.page, &t.name, "keys out of order"));
            }
            let Some(last) = keys.last().cloned() else { return Ok(total) };
            for k in &keys {
                total += self.delete(k)? as u64;
            }
            start = Bound::Excluded(last);
        }
    }

    /// Deletes every entry.
    pub fn clear(&mut self) -> Result<()> {
        let (root, name) = self.parts();
        let freed = self.txn.free_tree(root, &name);
        *self.restore(root, name) = TableInfo::default();
        freed
    }

    /// A read view of the table as this transaction has it now.
    pub fn view(&self) -> Table<'_> {
        let t = self.txn.info(self.idx);
        Table { v: self.txn.view(), info: t.info, name: t.name.as_str().into() }
    }

    /// The value under `key`.
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<&[u8]>> {
        let t = self.txn.info(self.idx);
        crate::tree::get(&self.txn.view(), t.info.root, key.as_ref(), &t.name)
    }

    /// Number of entries.
    pub fn len(&self) -> u64 {
        self.txn.info(self.idx).info.count
    }

    /// True when the table has no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
