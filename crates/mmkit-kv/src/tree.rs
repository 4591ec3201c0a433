//! Reading a B+tree: lookups and cursors over one view.

use crate::error::Result;
use crate::meta::Root;
use crate::page::{Keys, Page, Val};
use crate::store::At;
use crate::store::View;

/// Deeper than any real tree (fan-out at least 3): a longer path means a
/// cycle in a corrupt file.
pub(crate) const MAX_DEPTH: usize = 40;

/// Resolves a leaf value to its bytes.
#[inline]
pub(crate) fn value<'a>(v: &View<'a>, val: Val<'a>, table: &str) -> Result<&'a [u8]> {
    match val {
        Val::Inline(b) => Ok(b),
        Val::Run { page, len, crc, skip } => {
            let run = v.overflow(page, len, crc, table, false)?;
            run.get(skip as usize..)
                .ok_or_else(|| v.store.corrupt(page, table, "key longer than its overflow run"))
        }
    }
}

/// Descends from `root` to the leaf that would hold `key`.
#[inline]
pub(crate) fn find_leaf<'a>(v: &View<'a>, root: Root, key: &[u8], table: &str) -> Result<(u64, Page<'a>)> {
    let (mut pgno, mut crc) = (root.page, root.crc);
    for _ in 0..MAX_DEPTH {
        let page = v.page(pgno, crc, table, false)?;
        if page.is_leaf() {
            return Ok((pgno, page));
        }
        let i = page.child_index(key, &v.at(pgno, table))?;
        (pgno, crc) = page.branch(i).map_err(|r| v.store.corrupt(pgno, table, r))?;
    }
    Err(v.store.corrupt(root.page, table, "tree too deep (a cycle?)"))
}

/// The value stored under `key`.
#[inline]
pub(crate) fn get<'a>(v: &View<'a>, root: Root, key: &[u8], table: &str) -> Result<Option<&'a [u8]>> {
    if root.page == 0 {
        return Ok(None);
    }
    let (pgno, page) = find_leaf(v, root, key, table)?;
    match page.search(key, &v.at(pgno, table))? {
        Ok(i) => {
            let (_, val) = page.leaf(i).map_err(|r| v.store.corrupt(pgno, table, r))?;
            value(v, val, table).map(Some)
        }
        Err(_) => Ok(None),
    }
}

/// Leaf entries a forward cursor asks the CPU to load ahead of reading
/// them: entries sit anywhere in their page, so each is a cache miss of
/// its own, and a scan then waits for several at once instead of one
/// after the other.
const AHEAD: usize = 8;

/// A position in a tree: the path of (page number, page, index) from the
/// root to a leaf entry.
#[derive(Clone)]
pub(crate) struct Cursor<'a> {
    pub(crate) v: View<'a>,
    root: Root,
    table: std::sync::Arc<str>,
    stack: Vec<(u64, Page<'a>, usize)>,
    /// Pages loaded since the cursor was last positioned (`first`,
    /// `last`, `seek`): a walk over a real tree loads each page once, so
    /// more than the snapshot holds means pages referenced twice, and a
    /// few such pages give exponentially many paths (see [`Cursor::load`]).
    loads: u64,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(v: View<'a>, root: Root, table: impl Into<std::sync::Arc<str>>) -> Cursor<'a> {
        Cursor { v, root, table: table.into(), stack: Vec::new(), loads: 0 }
    }

    /// Tree page `pgno`, counted against the walk's budget: a page count
    /// past the snapshot's (plus a path for a seek) is corruption. Without
    /// it, a branch whose entries all point at the next one, 30 levels
    /// deep, made a scan walk 2^30 paths over 31 pages.
    #[inline]
    fn load(&mut self, pgno: u64, crc: u32) -> Result<Page<'a>> {
        self.loads += 1;
        if self.loads > self.v.next_page.saturating_add(MAX_DEPTH as u64) {
            return Err(self.bad(pgno, "the walk visits more pages than the snapshot holds (a cycle?)"));
        }
        self.v.page(pgno, crc, &self.table, false)
    }

    /// Forgets the position (and the pages loaded so far).
    fn reset(&mut self) {
        self.stack.clear();
        self.loads = 0;
    }

    fn bad(&self, pgno: u64, reason: &'static str) -> crate::Error {
        self.v.store.corrupt(pgno, &self.table, reason)
    }

    /// Descends from the page on top of the stack (or the root) taking, at
    /// each branch, the child `pick` chooses.
    fn descend(&mut self, mut pick: impl FnMut(&Page<'a>, &At<'_, 'a>) -> Result<usize>) -> Result<()> {
        if self.stack.is_empty() {
            if self.root.page == 0 {
                return Ok(());
            }
            let page = self.load(self.root.page, self.root.crc)?;
            let i = pick(&page, &self.v.at(self.root.page, &self.table))?;
            self.stack.push((self.root.page, page, i));
        }
        while let Some(&(pgno, page, i)) = self.stack.last() {
            if page.is_leaf() {
                return Ok(());
            }
            if self.stack.len() > MAX_DEPTH {
                return Err(self.bad(pgno, "tree too deep (a cycle?)"));
            }
            let (child, crc) = page.branch(i).map_err(|r| self.bad(pgno, r))?;
            let cpage = self.load(child, crc)?;
            let ci = pick(&cpage, &self.v.at(child, &self.table))?;
            self.stack.push((child, cpage, ci));
        }
        Ok(())
    }

    /// Positions on the first entry.
    pub(crate) fn first(&mut self) -> Result<bool> {
        self.reset();
        self.descend(|_, _| Ok(0))?;
        self.settle_forward()
    }

    /// Positions on the last entry.
    pub(crate) fn last(&mut self) -> Result<bool> {
        self.reset();
        self.descend(|p, _| Ok(p.count().saturating_sub(1)))?;
        self.settle_backward()
    }

    /// Positions on the first entry with a key at least `key`.
    pub(crate) fn seek(&mut self, key: &[u8]) -> Result<bool> {
        self.reset();
        self.descend(|p, at| {
            if p.is_leaf() {
                p.search(key, at).map(|r| r.unwrap_or_else(|i| i))
            } else {
                p.child_index(key, at)
            }
        })?;
        self.settle_forward()
    }

    /// Positions on the last entry with a key at most `key`.
    pub(crate) fn seek_back(&mut self, key: &[u8]) -> Result<bool> {
        if !self.seek(key)? {
            return self.last();
        }
        if self.key()? == key {
            return Ok(true);
        }
        self.prev()
    }

    /// After a descent the leaf index may sit past the end (seek beyond a
    /// leaf's last key, or an empty leaf): move on to a real entry.
    fn settle_forward(&mut self) -> Result<bool> {
        match self.stack.last() {
            None => Ok(false),
            Some(&(_, page, i)) if i < page.count() => {
                self.load_ahead(page, i);
                Ok(true)
            }
            Some(_) => self.next_leaf(),
        }
    }

    /// Having landed on entry `i` of leaf `page` going forward: starts
    /// loading the next few entries and, when they run out within
    /// [`AHEAD`], the next leaf, so a short scan waits for its cache
    /// misses together.
    fn load_ahead(&self, page: Page<'a>, i: usize) {
        if !self.v.prefetch {
            return;
        }
        let end = page.count().min(i + AHEAD);
        for j in i..end {
            crate::store::prefetch_line(page.b, page.entry_at(j));
        }
        if end - i < AHEAD {
            if let [.., (_, parent, pi), _] = self.stack[..] {
                if let Ok(next) = parent.child(pi + 1) {
                    self.v.prefetch_page(next);
                }
            }
        }
    }

    fn settle_backward(&mut self) -> Result<bool> {
        match self.stack.last() {
            None => Ok(false),
            Some(&(_, page, i)) if i < page.count() => Ok(true),
            Some(_) => self.prev_leaf(),
        }
    }

    /// Moves to the next entry; false at the end.
    pub(crate) fn next(&mut self) -> Result<bool> {
        if let Some(top) = self.stack.last_mut() {
            top.2 += 1;
            if top.2 < top.1.count() {
                return Ok(true);
            }
        }
        self.next_leaf()
    }

    /// Moves to the first entry of the next leaf that has one. A loop,
    /// not recursion through `settle_forward`: a corrupt tree of empty
    /// leaves overflowed the stack.
    fn next_leaf(&mut self) -> Result<bool> {
        loop {
            loop {
                self.stack.pop();
                let Some(top) = self.stack.last_mut() else { return Ok(false) };
                top.2 += 1;
                if top.2 < top.1.count() {
                    break;
                }
            }
            self.descend(|_, _| Ok(0))?;
            if let Some(&(_, page, i)) = self.stack.last().filter(|(_, page, i)| *i < page.count()) {
                self.load_ahead(page, i);
                return Ok(true);
            }
        }
    }

    /// Moves to the previous entry; false at the start.
    pub(crate) fn prev(&mut self) -> Result<bool> {
        if let Some(top) = self.stack.last_mut().filter(|top| top.2 > 0) {
            top.2 = (top.2 - 1).min(top.1.count().saturating_sub(1));
            if top.1.count() > 0 {
                return Ok(true);
            }
        }
        self.prev_leaf()
    }

    /// Moves to the last entry of the previous leaf that has one (a
    /// loop, as [`Cursor::next_leaf`]).
    fn prev_leaf(&mut self) -> Result<bool> {
        loop {
            loop {
                self.stack.pop();
                let Some(top) = self.stack.last_mut() else { return Ok(false) };
                if top.2 > 0 && top.1.count() > 0 {
                    top.2 = (top.2 - 1).min(top.1.count() - 1);
                    break;
                }
            }
            self.descend(|p, _| Ok(p.count().saturating_sub(1)))?;
            if self.stack.last().is_some_and(|(_, page, i)| *i < page.count()) {
                return Ok(true);
            }
        }
    }

    /// Key and value at the cursor, the key resolved.
    fn leaf_entry(&self) -> Result<(&'a [u8], Val<'a>)> {
        let &(pgno, page, i) =
            self.stack.last().ok_or_else(|| self.bad(self.root.page, "cursor not positioned"))?;
        let (k, val) = page.leaf(i).map_err(|r| self.bad(pgno, r))?;
        Ok((self.v.at(pgno, &self.table).resolve(k)?, val))
    }

    pub(crate) fn key(&self) -> Result<&'a [u8]> {
        Ok(self.leaf_entry()?.0)
    }

    /// Key and value at the cursor.
    pub(crate) fn entry(&self) -> Result<(&'a [u8], &'a [u8])> {
        let (k, val) = self.leaf_entry()?;
        Ok((k, value(&self.v, val, &self.table)?))
    }
}
