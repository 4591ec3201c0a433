//! Whole-file operations: check, stat, compaction, watch.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::db::{Db, Durability, TableInfo, now_us};
use crate::error::{Error, Result};
use crate::lock::{L_FLUSHED, L_LOG_BASE, L_LOG_END, L_LOG_HEAD};
use crate::meta::{META_SLOTS, Meta, Root};
use crate::page::{Key, Keys, PAGE, Val, overflow_pages};
use crate::store::View;
use crate::write::{CATALOG, FREE_TABLE, parse_free_key, parse_record};

/// What `check` found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// The commit checked.
    pub txnid: u64,
    /// Per table: name, entries, pages (tree and overflow).
    pub tables: Vec<(String, u64, u64)>,
    /// Pages the file uses (metas included).
    pub pages: u64,
    /// Pages on the free list.
    pub free_pages: u64,
    /// Pages neither reachable nor free (a leak; zero in a healthy file).
    pub leaked_pages: u64,
}

/// A page to visit: number, expected checksum, depth, and the key range
/// its parent allows.
type Visit = (u64, u32, usize, Option<Vec<u8>>, Option<Vec<u8>>);
/// Watched keys and their values.
type Entries = BTreeMap<Vec<u8>, Vec<u8>>;

/// Walks trees, verifying every checksum against its parent's record and
/// the key order, and marks the pages seen.
struct Walker<'a> {
    v: View<'a>,
    seen: Vec<u64>,
    /// Only expand pages written by this commit or a later one (crash
    /// verification): older pages are checked against their parent's
    /// record, but what they point to is not read.
    since: Option<u64>,
}

impl<'a> Walker<'a> {
    /// The bitmap of pages seen has a bit per page below `next_page`: the
    /// caller checked that count against the file ([`check_extent`]).
    fn new(v: View<'a>, since: Option<u64>) -> Walker<'a> {
        Walker { v, seen: vec![0; (v.next_page as usize).div_ceil(64)], since }
    }

    fn mark(&mut self, p: u64, table: &str) -> Result<()> {
        let (w, b) = ((p / 64) as usize, 1u64 << (p % 64));
        if self.seen.get(w).is_some_and(|x| x & b != 0) {
            return Err(self.v.store.corrupt(p, table, "page is referenced twice"));
        }
        if let Some(x) = self.seen.get_mut(w) {
            *x |= b;
        }
        Ok(())
    }

    /// Marks the pages of an overflow run, already read through
    /// `View::overflow`; returns how many.
    fn mark_run(&mut self, first: u64, len: u64, table: &str) -> Result<u64> {
        // Callers pass runs `View::overflow` has checked, so the range
        // lies inside the snapshot.
        let n = overflow_pages(len);
        for q in first..first + n {
            self.mark(q, table)?;
        }
        Ok(n)
    }

    /// Returns (entries, pages) of the tree at `root`; calls `leaf` on
    /// every leaf entry.
    fn tree(
        &mut self,
        root: Root,
        table: &str,
        mut leaf: impl FnMut(&[u8], &[u8]) -> Result<()>,
    ) -> Result<(u64, u64)> {
        if root.page == 0 {
            return Ok((0, 0));
        }
        let (mut entries, mut pages) = (0, 0);
        let mut stack: Vec<Visit> = vec![(root.page, root.crc, 0, None, None)];
        while let Some((p, crc, depth, lo, hi)) = stack.pop() {
            if depth > crate::tree::MAX_DEPTH {
                return Err(self.v.store.corrupt(p, table, "tree too deep (a cycle?)"));
            }
            let page = self.v.page(p, crc, table, true)?;
            self.mark(p, table)?;
            pages += 1;
            if self.since.is_some_and(|t| page.txnid() < t) {
                continue;
            }
            if page.count() == 0 {
                return Err(self.v.store.corrupt(p, table, "empty page in a tree"));
            }
            let v = self.v;
            let at = v.at(p, table);
            let bad = |r| at.bad(r);
            let mut prev: Option<&[u8]> = None;
            for i in 0..page.count() {
                let kref = page.key(i).map_err(bad)?;
                let key = at.resolve(kref)?;
                if let Key::Run { page: op, len, .. } = kref {
                    pages += self.mark_run(op, len, table)?;
                }
                let first_branch = !page.is_leaf() && i == 0;
                if !first_branch {
                    if prev.is_some_and(|q| q >= key) {
                        return Err(bad("keys out of order"));
                    }
                    if lo.as_deref().is_some_and(|l| key < l) || hi.as_deref().is_some_and(|h| key >= h) {
                        return Err(bad("key outside its parent's range"));
                    }
                    prev = Some(key);
                }
                if page.is_leaf() {
                    entries += 1;
                    let value = match page.leaf(i).map_err(bad)?.1 {
                        Val::Inline(b) => b,
                        Val::Run { page: op, len, crc, skip } => {
                            let b = v.overflow(op, len, crc, table, true)?;
                            if skip == 0 {
                                pages += self.mark_run(op, len, table)?;
                            }
                            b.get(skip as usize..).ok_or_else(|| bad("key longer than its overflow run"))?
                        }
                    };
                    leaf(key, value)?;
                } else {
                    let (child, ccrc) = page.branch(i).map_err(bad)?;
                    let clo = if i == 0 { lo.clone() } else { Some(key.to_vec()) };
                    let chi = if i + 1 < page.count() {
                        Some(page.key_bytes(i + 1, &at)?.to_vec())
                    } else {
                        hi.clone()
                    };
                    stack.push((child, ccrc, depth + 1, clo, chi));
                }
            }
        }
        Ok((entries, pages))
    }
}

/// Fails when commit `meta` counts more pages than the file holds. A
/// commit grows the file before it writes its pages, so a larger count is
/// corruption; and the walkers size their bitmap of pages seen by it, so
/// a corrupt count must not reach them (a count near `u64::MAX` would ask
/// for exabytes).
fn check_extent(db: &Db, meta: &Meta) -> Result<()> {
    let size = db.store.file_size()?;
    let pages = size / PAGE as u64;
    if meta.next_page > pages {
        return Err(db.store.corrupt(
            0,
            "(meta)",
            format!(
                "commit {} counts {} pages, but the file holds only {pages} ({size} bytes)",
                meta.txnid, meta.next_page
            ),
        ));
    }
    Ok(())
}

/// Verifies everything reachable from `meta`: every page's checksum, key
/// order, that no page is used twice, and which pages leaked.
pub(crate) fn check_meta(db: &Db, meta: &Meta) -> Result<CheckReport> {
    check_extent(db, meta)?;
    let v = View { store: &db.store, next_page: meta.next_page, verify: true, prefetch: false };
    db.store.bytes(0, 0)?;
    let mut w = Walker::new(v, None);
    let mut tables = Vec::new();
    let mut infos = Vec::new();
    w.tree(meta.catalog, CATALOG, |k, val| {
        let info = TableInfo::decode(val)
            .ok_or_else(|| db.store.corrupt(meta.catalog.page, CATALOG, "bad table entry"))?;
        infos.push((String::from_utf8_lossy(k).into_owned(), info));
        Ok(())
    })?;
    for (name, info) in infos {
        let (entries, pages) = w.tree(info.root, &name, |_, _| Ok(()))?;
        if entries != info.count {
            return Err(db.store.corrupt(
                info.root.page,
                &name,
                format!("catalog says {} entries, tree has {entries}", info.count),
            ));
        }
        tables.push((name, entries, pages));
    }
    let mut free_pages = Vec::new();
    w.tree(meta.free, FREE_TABLE, |k, v| {
        let bad = || db.store.corrupt(meta.free.page, FREE_TABLE, "bad free-tree record");
        let (_, _, first) = parse_free_key(k).ok_or_else(bad)?;
        free_pages.extend(parse_record(first, v).ok_or_else(bad)?);
        Ok(())
    })?;
    if free_pages.len() as u64 != meta.free_count {
        return Err(db.store.corrupt(meta.free.page, FREE_TABLE, "free count differs from the meta page"));
    }
    for p in free_pages {
        if p < META_SLOTS || p >= meta.next_page {
            return Err(db.store.corrupt(meta.free.page, FREE_TABLE, format!("free page {p} out of range")));
        }
        w.mark(p, FREE_TABLE)?;
    }
    let used: u64 = w.seen.iter().map(|x| x.count_ones() as u64).sum();
    Ok(CheckReport {
        txnid: meta.txnid,
        tables,
        pages: meta.next_page,
        free_pages: meta.free_count,
        leaked_pages: meta.next_page - META_SLOTS - used,
    })
}

/// Verifies the pages commit `meta` wrote: those with its txnid, reached
/// from the roots, plus the checksum of every page they point to. Cost:
/// the size of that commit times the fan-out, not the database.
pub(crate) fn verify_commit(db: &Db, meta: &Meta) -> Result<()> {
    verify_since(db, meta, meta.txnid)
}

/// Verifies the pages of commit `meta` that commits `since` and later
/// wrote, plus the checksum of every page they point to: what a power
/// loss could have left unwritten when commit `since - 1` was on disk.
pub(crate) fn verify_since(db: &Db, meta: &Meta, since: u64) -> Result<()> {
    check_extent(db, meta)?;
    let v = View { store: &db.store, next_page: meta.next_page, verify: true, prefetch: false };
    let mut w = Walker::new(v, Some(since));
    let mut roots = Vec::new();
    w.tree(meta.catalog, CATALOG, |k, val| {
        let info = TableInfo::decode(val)
            .ok_or_else(|| db.store.corrupt(meta.catalog.page, CATALOG, "bad table entry"))?;
        roots.push((String::from_utf8_lossy(k).into_owned(), info.root));
        Ok(())
    })?;
    for (name, root) in roots {
        w.tree(root, &name, |_, _| Ok(()))?;
    }
    w.tree(meta.free, FREE_TABLE, |_, _| Ok(()))?;
    Ok(())
}

impl Db {
    /// Verifies the whole file at the last commit: every checksum, the
    /// key order, entry counts, and that every page is used exactly once.
    pub fn check(&self) -> Result<CheckReport> {
        let txn = self.read()?;
        let meta = txn.meta;
        check_meta(self, &meta)
    }

    /// Statistics: tables, pages, free pages, file size, snapshots.
    pub fn stat(&self) -> Result<Stat> {
        let txn = self.read()?;
        let mut tables = Vec::new();
        for name in txn.tables()? {
            let t = txn.table(&name)?;
            tables.push((name, t.len()));
        }
        let current = txn.txnid();
        drop(txn);
        let now = now_us();
        let oldest = self.lock.oldest_reader().map(|r| Snapshot {
            txnid: r.txnid,
            pid: r.token.pid(),
            alive: r.token.is_alive(),
            age: Duration::from_micros(now.saturating_sub(r.started_us)),
            lag: current.saturating_sub(r.txnid),
        });
        let meta = self.newest_meta()?.0;
        Ok(Stat {
            txnid: current,
            durable: self.lock.durable().txnid(),
            flushed: self.lock.word(L_FLUSHED).load(Ordering::SeqCst),
            log_chain: self.log_chain_words(),
            tables,
            pages: meta.next_page,
            free_pages: meta.free_count,
            page_size: crate::PAGE as u64,
            file_size: self.store.file_size()?,
            readers: self.lock.readers().count(),
            oldest,
        })
    }

    /// The chain's words in the lock file (`None` when no chain is being
    /// extended); read without the writer lock, so a commit under way may
    /// have moved one of them on already.
    fn log_chain_words(&self) -> Option<LogChain> {
        let l = &self.lock;
        let last = l.word(L_LOG_END).load(Ordering::SeqCst);
        (last != 0).then(|| LogChain {
            first: l.word(L_LOG_BASE).load(Ordering::SeqCst).saturating_add(1),
            last,
            bytes: l.word(L_LOG_HEAD).load(Ordering::SeqCst),
        })
    }

    /// Writes a compacted copy of the last commit to `dst` (which must
    /// not exist): full pages, no free pages. Others keep reading and
    /// writing meanwhile; the copy is synced before it appears at `dst`.
    pub fn compact_to(&self, dst: impl AsRef<Path>) -> Result<CheckReport> {
        let dst = dst.as_ref();
        if dst.exists() {
            return Err(Error::AlreadyExists { path: dst.into() });
        }
        let dir = dst.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let tmp = dir.join(format!(
            ".{}.compact-{}",
            dst.file_name().unwrap_or_default().to_string_lossy(),
            std::process::id()
        ));
        let result = self.compact_into(&tmp, dst);
        let _ = std::fs::remove_file(crate::db::lock_path(&tmp));
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    fn compact_into(&self, tmp: &Path, dst: &Path) -> Result<CheckReport> {
        let _ = std::fs::remove_file(tmp);
        let src = self.read()?;
        // One big commit, synced in the data file itself: a redo log beside
        // the temporary name would not follow the rename.
        let out = Db::options().create(true).durability(Durability::Immediate).log_size(0).open(tmp)?;
        let mut w = out.write()?;
        for name in src.tables()? {
            let t = src.table(&name)?;
            let mut d = w.table(&name)?;
            for entry in t.iter() {
                let (k, v) = entry?;
                d.put(k, v)?;
            }
        }
        w.commit()?;
        out.cut_tail_and(true)?;
        out.sync()?;
        let report = out.check()?;
        drop(out);
        rustix::fs::renameat_with(
            rustix::fs::CWD,
            tmp,
            rustix::fs::CWD,
            dst,
            rustix::fs::RenameFlags::NOREPLACE,
        )
        .map_err(|e| {
            if e == rustix::io::Errno::EXIST {
                Error::AlreadyExists { path: dst.into() }
            } else {
                Error::io("rename compacted copy", dst, e)
            }
        })?;
        Ok(report)
    }

    /// Watches `key` in `table` (or every key starting with it when
    /// `prefix`), from the last commit on.
    pub fn watch(&self, table: &str, key: impl AsRef<[u8]>, prefix: bool) -> Result<Watch<'_>> {
        let mut w = Watch {
            db: self,
            table: table.into(),
            key: key.as_ref().to_vec(),
            prefix,
            seen: 0,
            state: BTreeMap::new(),
        };
        let (txnid, state) = w.snapshot()?;
        (w.seen, w.state) = (txnid, state);
        Ok(w)
    }
}

/// The oldest snapshot a reader holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// The commit it sees.
    pub txnid: u64,
    /// The reading process.
    pub pid: u32,
    /// Whether that process still runs (a dead one's slot is reclaimed by
    /// the next writer that needs its pages).
    pub alive: bool,
    /// Time since the read transaction began.
    pub age: Duration,
    /// Commits made since its snapshot.
    pub lag: u64,
}

/// Database statistics.
#[derive(Clone, Debug)]
pub struct Stat {
    /// The last commit.
    pub txnid: u64,
    /// The last commit known to be on disk.
    pub durable: u64,
    /// The last commit on disk in the data file itself (later durable
    /// ones are in the redo log).
    pub flushed: u64,
    /// The redo log's chain (`None` when no chain is being extended).
    pub log_chain: Option<LogChain>,
    /// Tables and their entry counts.
    pub tables: Vec<(String, u64)>,
    /// Pages in use by the file (including free ones).
    pub pages: u64,
    /// Pages on the free list.
    pub free_pages: u64,
    /// Page size in bytes.
    pub page_size: u64,
    /// File size in bytes.
    pub file_size: u64,
    /// Open read transactions.
    pub readers: usize,
    /// The oldest of them.
    pub oldest: Option<Snapshot>,
}

/// The redo log's chain of records, as [`Stat`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogChain {
    /// The first commit the chain holds.
    pub first: u64,
    /// The last commit the chain holds.
    pub last: u64,
    /// Bytes of the log the chain takes.
    pub bytes: u64,
}

/// One change seen by a [`Watch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The commit that made it (the newest commit seen, when several
    /// commits were folded together).
    pub txnid: u64,
    /// The key.
    pub key: Vec<u8>,
    /// The new value; `None` when the key was deleted.
    pub value: Option<Vec<u8>>,
}

/// Waits for commits that change a key or a key prefix: parks on the
/// commit counter in the lock file (no polling), then compares.
pub struct Watch<'db> {
    db: &'db Db,
    table: String,
    key: Vec<u8>,
    prefix: bool,
    seen: u64,
    state: Entries,
}

impl std::fmt::Debug for Watch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch").field("table", &self.table).field("seen", &self.seen).finish()
    }
}

impl Watch<'_> {
    fn snapshot(&self) -> Result<(u64, Entries)> {
        let txn = self.db.read()?;
        let mut state = BTreeMap::new();
        let table = match txn.table(&self.table) {
            Ok(t) => t,
            Err(Error::NoSuchTable { .. }) => return Ok((txn.txnid(), state)),
            Err(e) => return Err(e),
        };
        if self.prefix {
            for e in table.prefix(&self.key) {
                let (k, v) = e?;
                state.insert(k.to_vec(), v.to_vec());
            }
        } else if let Some(v) = table.get(&self.key)? {
            state.insert(self.key.clone(), v.to_vec());
        }
        Ok((txn.txnid(), state))
    }

    /// Waits until a commit changes the watched keys, or `timeout`
    /// elapses (then returns no changes). Several commits that land while
    /// the caller is busy are folded into one list of changes.
    pub fn wait(&mut self, timeout: Option<Duration>) -> Result<Vec<Change>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if self.db.last_commit() > self.seen {
                let (txnid, state) = self.snapshot()?;
                let changes = diff(&self.state, &state, txnid);
                (self.seen, self.state) = (txnid, state);
                if !changes.is_empty() {
                    return Ok(changes);
                }
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left.is_some_and(|l| l.is_zero()) {
                return Ok(Vec::new());
            }
            self.db.wait_for_commit(self.seen, left)?;
        }
    }

    /// The commit the watcher has seen last.
    pub fn seen(&self) -> u64 {
        self.seen
    }
}

fn diff(old: &Entries, new: &Entries, txnid: u64) -> Vec<Change> {
    let mut out = Vec::new();
    for (k, v) in new {
        if old.get(k) != Some(v) {
            out.push(Change { txnid, key: k.clone(), value: Some(v.clone()) });
        }
    }
    for k in old.keys() {
        if !new.contains_key(k) {
            out.push(Change { txnid, key: k.clone(), value: None });
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}
