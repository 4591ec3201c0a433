//! Page allocation, the free tree, and giving space back: which pages a
//! write transaction may write, and how the pages a commit frees are
//! recorded.
//!
//! The free tree holds *records*: all the pages one commit freed (of one
//! class), up to [`RECORD_PAGES`] to a record. A commit therefore deletes
//! the few records it reused and writes one or two new ones, whatever the
//! number of pages, instead of one tree operation per page.

use std::sync::atomic::Ordering;

use super::{FREE_TABLE, WriteTxn};
use crate::error::{Error, Result};
use crate::lock::{L_FLUSHED, L_SHRINKS, ReaderSlot};
use crate::meta::{META_SLOTS, Root};
use crate::page::{HEADER, overflow_pages, u64_at};
use crate::tree::{Cursor, MAX_DEPTH};

/// Key of a free-tree record: class (0: reusable once no snapshot is
/// older than `freed_by`; 1: also held until a commit at or after
/// `freed_by` is durable), the commit that freed the pages (big-endian,
/// so the tree is in order of age), and the record's first page
/// (big-endian; pages are in one record only, so keys are unique).
pub(crate) type FreeKey = [u8; 17];
/// Most pages in one record. Its value, the sorted `u64` page numbers,
/// then always fits inline in a leaf.
pub(crate) const RECORD_PAGES: usize = 128;
/// Commits a snapshot must lag before the writer checks whether its
/// reader is still alive.
const REAP_LAG: u64 = 8;
/// Pages the allocation pool is refilled to (whole records are loaded).
const POOL_TARGET: usize = 64;
/// Pages looked at for a contiguous run before an overflow run goes to
/// the end of the file instead.
const RUN_SEARCH: usize = 1024;

pub(crate) fn free_key(class: u8, freed_by: u64, first: u64) -> FreeKey {
    let mut k = [0u8; 17];
    k[0] = class;
    k[1..9].copy_from_slice(&freed_by.to_be_bytes());
    k[9..].copy_from_slice(&first.to_be_bytes());
    k
}

/// Class, freed_by and first page of a record key.
pub(crate) fn parse_free_key(k: &[u8]) -> Option<(u8, u64, u64)> {
    let k: &FreeKey = k.try_into().ok()?;
    let be = |r: std::ops::Range<usize>| k[r].try_into().ok().map(u64::from_be_bytes);
    Some((k[0], be(1..9)?, be(9..17)?)).filter(|&(class, _, _)| class <= 1)
}

/// The pages of a record whose key names `first`, checked: 1 to
/// [`RECORD_PAGES`] little-endian `u64`s, strictly increasing, starting at
/// `first`. `None` for anything else.
pub(crate) fn parse_record(first: u64, v: &[u8]) -> Option<impl Iterator<Item = u64> + '_> {
    if v.is_empty() || v.len() % 8 != 0 || v.len() / 8 > RECORD_PAGES {
        return None;
    }
    let pages = || v.chunks_exact(8).map(|c| u64_at(c, 0));
    let increasing = pages().zip(pages().skip(1)).all(|(a, b)| a < b);
    (increasing && pages().next() == Some(first)).then(pages)
}

impl WriteTxn<'_> {
    /// The oldest live reader, scanned once per transaction: a reader
    /// that registers later pins the last commit (or a newer one), never
    /// anything older, so the first scan stays a valid lower bound.
    fn oldest_reader(&mut self) -> Option<ReaderSlot> {
        *self.st.oldest_reader.get_or_insert_with(|| self.db.lock.oldest_reader())
    }

    /// The oldest snapshot any live reader or the last commit holds.
    pub(super) fn oldest(&mut self) -> u64 {
        let base = self.base.txnid;
        self.oldest_reader().map_or(base, |r| r.txnid.min(base))
    }

    /// Whether a page freed by `freed_by` with `class` may be written now.
    fn eligible(class: u8, freed_by: u64, oldest: u64, durable: u64) -> bool {
        freed_by <= if class == 0 { oldest } else { oldest.min(durable) }
    }

    /// Refills the pool with whole eligible records from the free tree:
    /// class 0 records freed at or before the oldest snapshot, then class
    /// 1 records also at or before the durable commit. The records are
    /// deleted at commit, and the pages left in the pool written back.
    pub(super) fn load_pool(&mut self) -> Result<()> {
        let (oldest, durable) = (self.oldest(), self.durable.txnid());
        let (mut loaded, mut blocked) = (0, false);
        {
            let mut c = Cursor::new(self.view(), self.free, FREE_TABLE);
            let start = self.st.pool_after.unwrap_or([0; 17]);
            let mut ok = c.seek(&start)?;
            if ok && self.st.pool_after.is_some() && c.key()? == start {
                ok = c.next()?;
            }
            // The scan only moves forward, across calls too (`pool_after`):
            // a key at or before the last one seen is a corrupt tree, and
            // going on would revisit records (the seek past class 0 below
            // landed on the same class 0 record forever).
            let mut prev = self.st.pool_after;
            while ok {
                let (k, v) = c.entry()?;
                let (store, at) = (&self.db.store, self.free.page);
                let bad = || store.corrupt(at, FREE_TABLE, "bad free-tree record");
                let (class, by, first) = parse_free_key(k).ok_or_else(bad)?;
                let key: FreeKey = k.try_into().map_err(|_| bad())?;
                if prev.is_some_and(|p| key <= p) {
                    return Err(store.corrupt(at, FREE_TABLE, "free-tree keys out of order"));
                }
                prev = Some(key);
                if !Self::eligible(class, by, oldest, durable) {
                    blocked |= by > oldest;
                    if class == 0 {
                        ok = c.seek(&[1])?;
                        continue;
                    }
                    break;
                }
                let before = self.st.pool.len();
                for p in parse_record(first, v).ok_or_else(bad)? {
                    if p < META_SLOTS || p >= self.next_page {
                        return Err(store.corrupt(at, FREE_TABLE, "free page number out of range"));
                    }
                    if self.is_dirty(p) {
                        return Err(store.corrupt(at, FREE_TABLE, "free page allocated already"));
                    }
                    self.st.pool.push(p);
                }
                let n = (self.st.pool.len() - before) as u64;
                self.st.loaded.push((key, n));
                self.st.pool_after = Some(key);
                loaded += 1;
                if self.st.pool.len() >= POOL_TARGET {
                    break;
                }
                ok = c.next()?;
            }
        }
        // Lowest first: the end of the file then falls free and is cut.
        self.st.pool.sort_unstable_by(|a, b| b.cmp(a));
        // A page listed twice (by two records, or by one and freed again)
        // would be handed out twice: two writes to one page.
        if self.st.pool.windows(2).any(|w| w[0] == w[1]) {
            let at = self.free.page;
            return Err(self.db.store.corrupt(at, FREE_TABLE, "free page listed twice"));
        }
        if loaded == 0 {
            self.st.pool_done = true;
            if blocked {
                self.unblock_readers()?;
            }
        }
        Ok(())
    }

    /// Freed pages are pinned by an old snapshot: reclaim dead readers'
    /// slots (liveness, once per transaction) and enforce the lag bound.
    fn unblock_readers(&mut self) -> Result<()> {
        let base = self.base.txnid;
        let lag = self.oldest_reader().map_or(0, |r| base.saturating_sub(r.txnid));
        // A reader a few commits behind is normal; only one that stays
        // behind is worth the `/proc` reads of a liveness check.
        if !self.st.reaped && lag >= REAP_LAG {
            self.st.reaped = true;
            if self.db.lock.reap_dead_readers() > 0 {
                self.st.oldest_reader = None;
                self.st.pool_done = false;
                // Go on from where the scan stopped (`pool_after`), not
                // from the start: the records before it are in the pool
                // already, and loading them again handed their pages out
                // twice in one transaction. Class 0 records skipped as
                // blocked wait for the next transaction.
                return self.load_pool();
            }
        }
        if let (Some(limit), Some(r)) = (self.db.opts.max_snapshot_lag, self.oldest_reader()) {
            let lag = base.saturating_sub(r.txnid);
            if lag > limit {
                return Err(Error::SnapshotTooOld {
                    path: self.db.store.path.clone(),
                    pid: r.token.pid(),
                    txnid: r.txnid,
                    lag,
                    limit,
                });
            }
        }
        Ok(())
    }

    /// A page for this transaction to write: reused if possible, else new
    /// at the end of the file.
    pub(super) fn alloc(&mut self) -> Result<u64> {
        loop {
            if let Some(p) = self.st.pool.pop() {
                self.mark_dirty(p);
                return Ok(p);
            }
            if self.sealing || self.st.pool_done {
                return self.alloc_end(1);
            }
            self.load_pool()?;
        }
    }

    /// `n` contiguous pages for an overflow run: reused when the pool holds
    /// such a run (pages freed together are recorded together, so a freed
    /// run is found again), else new at the end of the file.
    pub(super) fn alloc_run(&mut self, n: u64) -> Result<u64> {
        if n == 1 {
            return self.alloc();
        }
        while !self.sealing && !self.st.pool_done && self.st.pool.len() < RUN_SEARCH {
            self.load_pool()?;
        }
        // Sorted high to low, a run is n consecutive numbers.
        self.st.pool.sort_unstable_by(|a, b| b.cmp(a));
        let pool = &self.st.pool;
        let n_us = n as usize;
        // Consecutive pair by pair: the pool holds no page twice (see
        // `load_pool`), and this holds even if it did.
        let consecutive = |i: usize| pool[i..i + n_us].windows(2).all(|w| w[0] == w[1] + 1);
        let found = (0..pool.len().saturating_sub(n_us - 1)).find(|&i| consecutive(i));
        let Some(i) = found else { return self.alloc_end(n) };
        let first = self.st.pool[i + n_us - 1];
        self.st.pool.drain(i..i + n_us);
        for q in first..first + n {
            self.mark_dirty(q);
        }
        Ok(first)
    }

    /// `n` contiguous new pages at the end of the file.
    pub(super) fn alloc_end(&mut self, n: u64) -> Result<u64> {
        let p = self.next_page;
        self.db.store.ensure_pages(p + n)?;
        self.next_page = p + n;
        for q in p..p + n {
            self.mark_dirty(q);
        }
        Ok(p)
    }

    /// Takes `n` pages off the free count: a count below the records the
    /// tree holds (the meta's word is another process's to forge) is a
    /// corruption error, not an underflow.
    fn take_free_count(&mut self, n: u64, at: u64) -> Result<()> {
        self.free_count = self
            .free_count
            .checked_sub(n)
            .ok_or_else(|| self.bad(at, FREE_TABLE, "free count below the free tree's records"))?;
        Ok(())
    }

    /// Releases a page: one written by this transaction is reusable at
    /// once; a committed one goes to the free tree.
    pub(super) fn free_page(&mut self, p: u64, written_by: u64) {
        if written_by == self.txnid && self.is_dirty(p) {
            self.st.pool.push(p);
        } else {
            self.st.freed.push((p, written_by));
        }
    }

    pub(super) fn free_overflow(&mut self, page: u64, len: u64, table: &str) -> Result<()> {
        self.view().overflow(page, len, 0, table, false)?;
        let written_by = u64_at(self.db.store.bytes(page, HEADER)?, 8);
        for q in page..page + overflow_pages(len) {
            self.free_page(q, written_by);
        }
        Ok(())
    }

    /// Records freed pages and deletes the records the pool took, until
    /// the tree's own copy-on-write frees and takes nothing more; then
    /// the pool's leftovers are written back as reusable at once.
    pub(super) fn update_free_tree(&mut self) -> Result<()> {
        // Reusable pages for the free tree's own copies, so they do not
        // pile up at the end of the file (where they would block shrinking).
        if self.st.pool.is_empty() && !self.st.pool_done {
            self.load_pool()?;
        }
        self.sealing = true;
        let mut free = self.free;
        let mut lists = std::mem::take(&mut self.st.lists);
        let settled = self.settle_free_tree(&mut free, &mut lists);
        self.st.lists = lists;
        settled?;
        self.seal(&mut free, FREE_TABLE)?;
        self.free = free;
        Ok(())
    }

    /// The rounds of [`update_free_tree`](Self::update_free_tree). The
    /// deletes come first and the class 1 record (at the end of the tree)
    /// next: the pages their copy-on-write frees then join the class 0
    /// record, written into pages already copied, so a commit writes one
    /// record per class and settles in one pass.
    fn settle_free_tree(&mut self, free: &mut Root, lists: &mut [Vec<u64>; 3]) -> Result<()> {
        let txnid = self.txnid;
        for _ in 0..MAX_DEPTH * 8 {
            if !self.st.loaded.is_empty() {
                let loaded = std::mem::take(&mut self.st.loaded);
                for &(k, n) in &loaded {
                    if self.tree_delete(free, &k, FREE_TABLE)? {
                        self.take_free_count(n, free.page)?;
                    }
                }
                self.st.loaded = loaded;
                self.st.loaded.clear();
            }
            self.sort_freed(lists);
            let [class0, class1, left] = lists;
            if !class1.is_empty() {
                self.merge_held(free, class1)?;
                self.put_records(free, 1, txnid, class1)?;
                class1.clear();
            } else if !class0.is_empty() {
                self.put_records(free, 0, txnid, class0)?;
                class0.clear();
            } else if !self.st.pool.is_empty() {
                // What is written back is out of the pool first, so the
                // writing cannot take it; the lowest pages stay in the
                // pool for the free tree's own copies and splits (taking
                // new pages at the end of the file instead would stop it
                // from ever shrinking), and go back in a later round.
                self.st.pool.sort_unstable_by(|a, b| b.cmp(a));
                let n = self.st.pool.len();
                let reserve = 16 + 8 * n.div_ceil(RECORD_PAGES);
                let keep = if n > 2 * reserve { reserve } else { 0 };
                left.clear();
                left.extend(self.st.pool.drain(..n - keep));
                self.put_records(free, 0, 0, left)?;
            } else {
                return Ok(());
            }
        }
        Err(self.bad(free.page, FREE_TABLE, "the free tree did not settle"))
    }

    /// Takes the newest class 1 record into `held` (deleting it) when it
    /// is still blocked (freed after the durable commit) and the two fit
    /// in one record: they are then written back as one record freed by
    /// this commit, which is reusable no later than the old one would have
    /// been in practice (both wait for the next sync). A stream of
    /// Eventual commits on a big tree frees pages of the durable commit in
    /// every commit; without this it adds a record per commit, and the
    /// free tree grows a level, costing every commit more page copies.
    fn merge_held(&mut self, free: &mut Root, held: &mut Vec<u64>) -> Result<()> {
        let durable = self.durable.txnid().max(self.syncing.txnid());
        let (key, pages) = {
            let mut c = Cursor::new(self.view(), *free, FREE_TABLE);
            if !c.last()? {
                return Ok(());
            }
            let (k, v) = c.entry()?;
            let Some((1, by, first)) = parse_free_key(k) else { return Ok(()) };
            let room = v.len() / 8 + held.len() <= RECORD_PAGES;
            if by <= durable || by >= self.txnid || !room {
                return Ok(());
            }
            let bad = || self.db.store.corrupt(free.page, FREE_TABLE, "bad free-tree record");
            let key: FreeKey = k.try_into().map_err(|_| bad())?;
            let pages: Vec<u64> = parse_record(first, v).ok_or_else(bad)?.collect();
            (key, pages)
        };
        if self.tree_delete(free, &key, FREE_TABLE)? {
            self.take_free_count(pages.len() as u64, free.page)?;
            held.extend(pages);
        }
        Ok(())
    }

    /// Moves the pages freed so far into `lists[0]` (class 0) and
    /// `lists[1]` (class 1: written at or before the durable commit, or
    /// the one being group-synced, and freed after it).
    fn sort_freed(&mut self, lists: &mut [Vec<u64>; 3]) {
        let (d, c, txnid) = (self.durable.txnid(), self.syncing.txnid(), self.txnid);
        let held = |w: u64| (w <= d && d < txnid) || (c != 0 && w <= c && c < txnid);
        for (p, w) in self.st.freed.drain(..) {
            lists[held(w) as usize].push(p);
        }
    }

    /// Writes `pages` as records of `class` freed by `freed_by`.
    fn put_records(&mut self, free: &mut Root, class: u8, freed_by: u64, pages: &mut [u64]) -> Result<()> {
        pages.sort_unstable();
        let mut value = std::mem::take(&mut self.st.record);
        let result = (|| {
            for chunk in pages.chunks(RECORD_PAGES) {
                value.clear();
                for p in chunk {
                    value.extend_from_slice(&p.to_le_bytes());
                }
                self.tree_put(free, &free_key(class, freed_by, chunk[0]), &value, FREE_TABLE)?;
                self.free_count = self.free_count.saturating_add(chunk.len() as u64);
            }
            Ok(())
        })();
        self.st.record = value;
        result
    }

    /// Takes the eligible free pages at the end of the file out of the
    /// free tree and lowers `next_page`; returns how many pages.
    pub(super) fn cut_free_tail(&mut self) -> Result<u64> {
        while !self.st.pool_done {
            self.load_pool()?;
        }
        // Sorted high to low, the tail comes first.
        self.st.pool.sort_unstable_by(|a, b| b.cmp(a));
        let mut end = self.next_page;
        let mut tail = 0;
        while self.st.pool.get(tail).is_some_and(|&p| p + 1 == end) {
            end -= 1;
            tail += 1;
        }
        self.st.pool.drain(..tail);
        let cut = self.next_page - end;
        self.next_page = end;
        Ok(cut)
    }

    /// Moves every live page at or above the line where the used pages
    /// would end if packed into reusable pages below it.
    pub(super) fn relocate_tail(&mut self) -> Result<()> {
        while !self.st.pool_done {
            self.load_pool()?;
        }
        let line = self.next_page.saturating_sub(self.st.pool.len() as u64);
        let mut names = Vec::new();
        {
            let mut c = Cursor::new(self.view(), self.catalog, super::CATALOG);
            let mut ok = c.first()?;
            while ok {
                names.push(String::from_utf8_lossy(c.key()?).into_owned());
                ok = c.next()?;
            }
        }
        // The trees share no page: together they visit fewer pages than
        // the file holds (see `relocate`).
        let mut budget = self.next_page;
        for name in names {
            let idx = self.open_table(&name, false)?;
            let mut root = self.st.tables[idx].info.root;
            self.relocate(&mut root, line, &name, 0, &mut budget)?;
            self.st.tables[idx].info.root = root;
        }
        let mut catalog = self.catalog;
        self.relocate(&mut catalog, line, super::CATALOG, 0, &mut budget)?;
        self.catalog = catalog;
        let mut free = self.free;
        self.relocate(&mut free, line, FREE_TABLE, 0, &mut budget)?;
        self.free = free;
        Ok(())
    }
}

impl crate::db::Db {
    /// Shrinks the file: moves the pages that live in its tail into free
    /// pages lower down (copy-on-write, so readers are undisturbed), then
    /// cuts the free tail once no snapshot can see it. Returns the bytes
    /// cut. A live reader that started before the move keeps the old tail
    /// pinned, and the cut then waits for a later call.
    ///
    /// Commits also cut a free tail by themselves (without moving
    /// anything) once the free list is a quarter of the file.
    pub fn shrink(&self) -> Result<u64> {
        let mut w = self.write()?;
        w.relocate_tail()?;
        let d = self.opts.durability;
        w.finish(d)?;
        drop(w);
        if d != crate::Durability::Immediate {
            self.sync()?;
        }
        self.cut_tail()
    }

    /// Commits a cut of the free tail and truncates the file, under the
    /// writer lock, so no writer is extending it meanwhile.
    pub(crate) fn cut_tail(&self) -> Result<u64> {
        self.cut_tail_and(false)
    }

    /// [`Db::cut_tail`]; with `trim`, also gives back the space growth
    /// preallocated past the last page (used for compacted copies).
    pub(crate) fn cut_tail_and(&self, trim: bool) -> Result<u64> {
        let mut w = self.write()?;
        if w.cut_free_tail()? > 0 {
            let d = self.opts.durability;
            w.finish(d)?;
        } else if !trim {
            return Ok(0);
        }
        let before = self.store.file_size()?;
        let keep = self.store.page_bytes(w.next_page);
        if keep < before {
            // The last commit (the cut) on disk first: the truncate may
            // reach the disk before the meta's write-back otherwise, and
            // after a power cut every meta left would count pages past
            // the file's end.
            let last = self.lock.current().txnid();
            if self.lock.word(L_FLUSHED).load(Ordering::SeqCst) < last {
                w.flush_data(last)?;
            }
            rustix::fs::ftruncate(&self.store.file, keep)
                .map_err(|e| Error::io("shrink (ftruncate)", &self.store.path, e))?;
            self.lock.word(L_SHRINKS).fetch_add(1, Ordering::AcqRel);
            self.store.file.refresh().map_err(Error::region("refresh after shrink"))?;
        }
        drop(w);
        Ok(before.saturating_sub(keep))
    }
}

#[cfg(test)]
mod tests {
    /// A pool holding a page twice (two free-tree records that share it;
    /// `load_pool` refuses that, this test bypasses it): a run over a page
    /// that was never free is not found (the old test, first − last = n −
    /// 1 over sorted entries, took 7..11 with page 8 in use).
    #[test]
    fn a_run_is_consecutive_pair_by_pair() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::Db::options().create(true).open(dir.path().join("db")).unwrap();
        let mut w = db.write().unwrap();
        w.st.pool = vec![10, 9, 9, 7];
        w.st.pool_done = true;
        let first = w.alloc_run(4).unwrap();
        assert!(!(first..first + 4).contains(&8), "run {first}..{} includes page 8", first + 4);
    }

    /// A pool holding the page being copied: `touch` would copy it onto
    /// itself (a shared and a mutable view of one page); it is a
    /// corruption error instead. (A live page handed out for something
    /// else is not detected: the free tree is trusted, see the SAFETY
    /// argument of `Store::bytes`.)
    #[test]
    fn a_page_copied_onto_itself_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::Db::options().create(true).open(dir.path().join("db")).unwrap();
        let mut w = db.write().unwrap();
        w.table("t").unwrap().put("k", "v").unwrap();
        w.commit().unwrap();
        let mut w = db.write().unwrap();
        let root = w.catalog.page;
        w.st.pool = vec![root];
        w.st.pool_done = true;
        assert!(w.touch(root, "catalog").unwrap_err().is_corruption());
    }
}
