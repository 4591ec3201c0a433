//! Copy-on-write edits of a B+tree inside a write transaction: put,
//! delete, splits, freeing, sealing (checksums), relocation.
//!
//! Overflow runs belong to entries, not pages: a copy of a page shares its
//! entries' runs with the original, and a run is freed when its entry is
//! deleted or replaced (a leaf's value, or a key too long for a page), or
//! when its branch entry goes away (a long separator).

use super::WriteTxn;
use crate::error::{Error, Result};
use crate::meta::Root;
use crate::page::{
    Bad, KIND_BRANCH, KIND_LEAF, Key, MAX_KEY_LEN, OVERFLOW_HEADER, OVERFLOW_REF, PageMut, Val,
    branch_key_fits, branch_size, leaf_key_fits, leaf_size, needs_overflow, overflow_pages, separator,
};
use crate::tree::MAX_DEPTH;

/// An entry to insert: a leaf's key and value, or a branch's child and
/// separator (with the overflow run holding it, when it is long).
#[derive(Clone, Copy)]
pub(super) enum Entry<'a> {
    Leaf(&'a [u8], Val<'a>),
    Branch(u64, &'a [u8], Option<(u64, u32)>),
}

impl Entry<'_> {
    fn size(&self) -> usize {
        match *self {
            Entry::Leaf(k, Val::Inline(v)) => leaf_size(k.len(), v.len()),
            Entry::Leaf(k, Val::Run { skip: 0, .. }) => leaf_size(k.len(), OVERFLOW_REF),
            Entry::Leaf(_, Val::Run { .. }) => leaf_size(0, OVERFLOW_REF),
            Entry::Branch(_, k, _) => branch_size(k.len()),
        }
    }
}

impl<'db> WriteTxn<'db> {
    /// Makes page `p` writable in this transaction: returns it if already
    /// dirty, else a dirty copy (and frees the original).
    pub(super) fn touch(&mut self, p: u64, table: &str) -> Result<u64> {
        if self.is_dirty(p) {
            return Ok(p);
        }
        let src = self.page(p, table)?;
        let (lo, hi, written_by) = (src.lower(), src.upper(), src.txnid());
        let n = self.alloc()?;
        if n == p {
            // Only a free tree listing a page in use hands it out here.
            return Err(self.bad(p, table, "the free tree lists a page in use"));
        }
        let txnid = self.txnid;
        let mut dst = self.page_mut(n);
        dst.0[..lo].copy_from_slice(&src.b[..lo]);
        dst.0[hi..].copy_from_slice(&src.b[hi..]);
        dst.set_txnid(txnid);
        self.free_page(p, written_by);
        Ok(n)
    }

    /// Writes `parts`, one after the other, as the payload of a new
    /// overflow run; returns its first page and checksum.
    fn write_run(&mut self, parts: &[&[u8]]) -> Result<(u64, u32)> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let n = overflow_pages(len as u64);
        let p = self.alloc_run(n)?;
        // SAFETY: the run was just allocated (dirty, below `next_page`, so
        // mapped: see `WriteTxn::page_mut`), and no other reference to it
        // exists.
        let run = unsafe { self.db.store.page_mut(p, n as usize) };
        PageMut(run).init_overflow(self.txnid, len as u64);
        let mut at = OVERFLOW_HEADER;
        for part in parts {
            run[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        Ok((p, crc32c::crc32c(&run[..at])))
    }

    /// Frees the overflow run an entry's value (and maybe key) is in.
    fn free_val(&mut self, val: Val<'_>, table: &str) -> Result<()> {
        match val {
            Val::Run { page, len, .. } => self.free_overflow(page, len, table),
            Val::Inline(_) => Ok(()),
        }
    }

    /// Frees the overflow run of branch entry `i` of page `p`, if its
    /// separator is in one.
    fn free_separator(&mut self, p: u64, i: usize, table: &str) -> Result<()> {
        match self.page(p, table)?.key(i).map_err(|r| self.bad(p, table, r))? {
            Key::Run { page, len, .. } => self.free_overflow(page, len, table),
            Key::Inline(_) => Ok(()),
        }
    }

    /// Descends from `root` to the leaf that holds or would hold `key`;
    /// returns it, and fills `path` with the (branch page, child index)
    /// steps. With `touch`, each page on the way is made dirty first
    /// (copy-on-write), and its parent pointed at the copy.
    fn descend(
        &mut self,
        root: &mut Root,
        key: &[u8],
        table: &str,
        touch: bool,
        path: &mut Vec<(u64, usize)>,
    ) -> Result<u64> {
        path.clear();
        let mut pg = root.page;
        if touch {
            pg = self.touch(pg, table)?;
            root.page = pg;
        }
        loop {
            let v = self.view();
            let page = v.page(pg, 0, table, false)?;
            if page.is_leaf() {
                return Ok(pg);
            }
            if path.len() >= MAX_DEPTH {
                return Err(self.bad(pg, table, "tree too deep (a cycle?)"));
            }
            let i = page.child_index(key, &v.at(pg, table))?;
            let child = page.child(i).map_err(|r| self.bad(pg, table, r))?;
            path.push((pg, i));
            if !touch {
                pg = child;
                continue;
            }
            let copy = self.touch(child, table)?;
            if copy != child {
                self.page_mut(pg).set_child(i, copy, 0).map_err(|r| self.bad(pg, table, r))?;
            }
            pg = copy;
        }
    }

    /// Runs `f` with the path buffer the writer keeps between operations
    /// (so an operation allocates nothing).
    fn with_path<T>(&mut self, f: impl FnOnce(&mut Self, &mut Vec<(u64, usize)>) -> Result<T>) -> Result<T> {
        let mut path = std::mem::take(&mut self.st.path);
        let result = f(self, &mut path);
        self.st.path = path;
        result
    }

    /// Inserts or replaces `key`; true if the key is new.
    pub(super) fn tree_put(
        &mut self,
        root: &mut Root,
        key: &[u8],
        value: &[u8],
        table: &str,
    ) -> Result<bool> {
        self.with_path(|t, path| t.put_at(root, key, value, table, path))
    }

    fn put_at(
        &mut self,
        root: &mut Root,
        key: &[u8],
        value: &[u8],
        table: &str,
        path: &mut Vec<(u64, usize)>,
    ) -> Result<bool> {
        if key.len() > MAX_KEY_LEN {
            return Err(Error::KeyTooLong { len: key.len(), max: MAX_KEY_LEN });
        }
        if root.page == 0 {
            let p = self.alloc()?;
            let txnid = self.txnid;
            self.page_mut(p).init(KIND_LEAF, txnid);
            root.page = p;
        }
        let pg = self.descend(root, key, table, true, path)?;
        let v = self.view();
        let found = v.page(pg, 0, table, false)?.search(key, &v.at(pg, table))?;
        if let Ok(i) = found {
            if !needs_overflow(key.len(), value.len()) && self.page_mut(pg).overwrite_value(i, value) {
                return Ok(false);
            }
        }
        let idx = match found {
            Ok(i) => {
                let (_, old) = self.page(pg, table)?.leaf(i).map_err(|r| self.bad(pg, table, r))?;
                self.free_val(old, table)?;
                self.page_mut(pg).remove(i).map_err(|r| self.bad(pg, table, r))?;
                i
            }
            Err(i) => i,
        };
        let val = if !leaf_key_fits(key.len()) {
            let (page, crc) = self.write_run(&[key, value])?;
            Val::Run { page, len: (key.len() + value.len()) as u64, crc, skip: key.len() as u64 }
        } else if needs_overflow(key.len(), value.len()) {
            let (page, crc) = self.write_run(&[value])?;
            Val::Run { page, len: value.len() as u64, crc, skip: 0 }
        } else {
            Val::Inline(value)
        };
        self.insert_entry(root, path, pg, idx, Entry::Leaf(key, val), table)?;
        Ok(found.is_err())
    }

    /// A branch entry for `child` with separator `sep`, writing the
    /// separator to an overflow run when it is too long for a page.
    fn branch_entry<'k>(&mut self, child: u64, sep: &'k [u8]) -> Result<Entry<'k>> {
        let run = if branch_key_fits(sep.len()) { None } else { Some(self.write_run(&[sep])?) };
        Ok(Entry::Branch(child, sep, run))
    }

    /// Inserts `entry` at `idx` of dirty page `pg`, splitting up the path
    /// as needed.
    fn insert_entry(
        &mut self,
        root: &mut Root,
        path: &mut Vec<(u64, usize)>,
        pg: u64,
        idx: usize,
        entry: Entry<'_>,
        table: &str,
    ) -> Result<()> {
        let size = entry.size();
        let (count, free, leaf) = {
            let p = self.page(pg, table)?;
            (p.count(), p.free(), p.is_leaf())
        };
        if free >= size {
            let placed = Self::put_entry(&mut self.page_mut(pg), idx, entry);
            return placed.map_err(|why| self.bad(pg, table, why));
        }
        let appending = idx == count && self.rightmost(path, table)?;
        let s = if appending { count } else { self.split_point(pg, idx, size, table)? };
        let right = self.alloc()?;
        if right == pg {
            return Err(self.bad(pg, table, "the free tree lists a page in use"));
        }
        let txnid = self.txnid;
        self.page_mut(right).init(if leaf { KIND_LEAF } else { KIND_BRANCH }, txnid);
        // SAFETY: `pg` and `right` are distinct dirty pages of this
        // transaction (mapped, as in `WriteTxn::page_mut`), so the two
        // mutable views do not overlap.
        let (mut left_p, mut right_p) =
            unsafe { (PageMut(self.db.store.page_mut(pg, 1)), PageMut(self.db.store.page_mut(right, 1))) };
        if idx < s {
            left_p.move_tail(s - 1, &mut right_p).map_err(|r| self.bad(pg, table, r))?;
            Self::put_entry(&mut left_p, idx, entry).map_err(|r| self.bad(pg, table, r))?;
        } else {
            left_p.move_tail(s, &mut right_p).map_err(|r| self.bad(pg, table, r))?;
            Self::put_entry(&mut right_p, idx - s, entry).map_err(|r| self.bad(pg, table, r))?;
        }
        let sep = self.split_separator(pg, right, leaf, table)?;
        let up = self.branch_entry(right, &sep)?;
        match path.pop() {
            Some((parent, pi)) => self.insert_entry(root, path, parent, pi + 1, up, table),
            None => {
                let r = self.alloc()?;
                let placed = {
                    let mut rp = self.page_mut(r);
                    rp.init(KIND_BRANCH, txnid);
                    rp.insert_branch(0, pg, 0, b"", None).and_then(|()| Self::put_entry(&mut rp, 1, up))
                };
                placed.map_err(|why| self.bad(r, table, why))?;
                root.page = r;
                Ok(())
            }
        }
    }

    /// The separator for the parent after `left` split into `right`: for
    /// leaves the shortest key between the two pages, for branches the
    /// right page's first separator (keys below it may lie anywhere in
    /// the left subtree).
    fn split_separator(&self, left: u64, right: u64, leaf: bool, table: &str) -> Result<Vec<u8>> {
        let v = self.view();
        let r = v.page(right, 0, table, false)?;
        let first = r.key_bytes(0, &v.at(right, table))?;
        if !leaf {
            return Ok(first.to_vec());
        }
        let l = v.page(left, 0, table, false)?;
        let last = l.key_bytes(l.count().saturating_sub(1), &v.at(left, table))?;
        Ok(separator(last, first).to_vec())
    }

    fn put_entry(p: &mut PageMut<'_>, idx: usize, entry: Entry<'_>) -> std::result::Result<(), Bad> {
        match entry {
            Entry::Leaf(k, v) => p.insert_leaf(idx, k, v),
            Entry::Branch(child, k, run) => p.insert_branch(idx, child, 0, k, run),
        }
    }

    /// True when every step of `path` took its page's last child: an
    /// insert past the end there is an append, so the full page is left
    /// full (sorted loads fill pages completely).
    fn rightmost(&self, path: &[(u64, usize)], table: &str) -> Result<bool> {
        for &(p, i) in path {
            if i + 1 != self.page(p, table)?.count() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Split index in the sequence of entries with the new one (size
    /// `size`) at `idx`: the prefix closest to half the bytes. Every entry
    /// is at most a third of a page, so both halves fit.
    fn split_point(&mut self, pg: u64, idx: usize, size: usize, table: &str) -> Result<usize> {
        let page = self.page(pg, table)?;
        let mut sizes = std::mem::take(&mut self.st.sizes);
        sizes.clear();
        for i in 0..page.count() {
            if i == idx {
                sizes.push(size);
            }
            sizes.push(page.entry_size(i).map_err(|r| self.bad(pg, table, r))?);
        }
        if idx == page.count() {
            sizes.push(size);
        }
        let total: usize = sizes.iter().sum();
        let (mut acc, mut best, mut best_gap) = (0usize, 1, usize::MAX);
        for (s, sz) in sizes.iter().enumerate().take(sizes.len() - 1) {
            acc += sz;
            let gap = acc.abs_diff(total / 2);
            if gap < best_gap {
                (best, best_gap) = (s + 1, gap);
            }
        }
        self.st.sizes = sizes;
        Ok(best)
    }

    /// Deletes `key`; true if it was there.
    pub(super) fn tree_delete(&mut self, root: &mut Root, key: &[u8], table: &str) -> Result<bool> {
        if root.page == 0 {
            return Ok(false);
        }
        self.with_path(|t, path| t.delete_at(root, key, table, path))
    }

    fn delete_at(
        &mut self,
        root: &mut Root,
        key: &[u8],
        table: &str,
        path: &mut Vec<(u64, usize)>,
    ) -> Result<bool> {
        let pg = self.descend(root, key, table, false, path)?;
        let v = self.view();
        let Ok(li) = v.page(pg, 0, table, false)?.search(key, &v.at(pg, table))? else {
            return Ok(false);
        };
        let mut cur = self.touch(root.page, table)?;
        root.page = cur;
        for step in path.iter_mut() {
            step.0 = cur;
            let child = self.page(cur, table)?.child(step.1).map_err(|r| self.bad(cur, table, r))?;
            let nc = self.touch(child, table)?;
            if nc != child {
                self.page_mut(cur).set_child(step.1, nc, 0).map_err(|r| self.bad(cur, table, r))?;
            }
            cur = nc;
        }
        let (_, old) = self.page(cur, table)?.leaf(li).map_err(|r| self.bad(cur, table, r))?;
        self.free_val(old, table)?;
        self.page_mut(cur).remove(li).map_err(|r| self.bad(cur, table, r))?;
        if self.page(cur, table)?.count() == 0 {
            self.remove_page(root, path, cur, table)?;
        }
        self.collapse_root(root, table)?;
        Ok(true)
    }

    /// Removes the empty dirty page `pg` from its parent, and parents left
    /// empty in turn.
    fn remove_page(
        &mut self,
        root: &mut Root,
        path: &mut Vec<(u64, usize)>,
        pg: u64,
        table: &str,
    ) -> Result<()> {
        let txnid = self.txnid;
        self.free_page(pg, txnid);
        match path.pop() {
            None => {
                *root = Root::default();
                Ok(())
            }
            Some((parent, i)) => {
                self.free_separator(parent, i, table)?;
                self.page_mut(parent).remove(i).map_err(|r| self.bad(parent, table, r))?;
                if self.page(parent, table)?.count() == 0 {
                    return self.remove_page(root, path, parent, table);
                }
                Ok(())
            }
        }
    }

    /// A root branch with one child is replaced by that child.
    fn collapse_root(&mut self, root: &mut Root, table: &str) -> Result<()> {
        for _ in 0..MAX_DEPTH {
            if root.page == 0 {
                return Ok(());
            }
            let page = self.page(root.page, table)?;
            if page.is_leaf() || page.count() != 1 {
                return Ok(());
            }
            let (child, crc) = page.branch(0).map_err(|r| self.bad(root.page, table, r))?;
            let written_by = page.txnid();
            self.free_separator(root.page, 0, table)?;
            self.free_page(root.page, written_by);
            *root = Root { page: child, crc };
        }
        Ok(())
    }

    /// Frees every page of the tree at `root` (for `clear` and dropping a
    /// table), overflow runs included.
    pub(super) fn free_tree(&mut self, root: Root, table: &str) -> Result<()> {
        if root.page == 0 {
            return Ok(());
        }
        let mut stack = vec![(root.page, 0usize)];
        // A real tree has fewer pages than the file: more visits mean pages
        // referenced twice, and a few such pages give exponentially many
        // paths (and free each page over and over).
        let mut visits = 0u64;
        while let Some((p, depth)) = stack.pop() {
            visits += 1;
            if depth > MAX_DEPTH {
                return Err(self.bad(p, table, "tree too deep (a cycle?)"));
            }
            if visits > self.next_page {
                return Err(self.bad(p, table, "the walk visits more pages than the file holds (a cycle?)"));
            }
            let page = self.page(p, table)?;
            for i in 0..page.count() {
                if page.is_leaf() {
                    let (_, val) = page.leaf(i).map_err(|r| self.bad(p, table, r))?;
                    self.free_val(val, table)?;
                } else {
                    self.free_separator(p, i, table)?;
                    stack.push((page.child(i).map_err(|r| self.bad(p, table, r))?, depth + 1));
                }
            }
            self.free_page(p, page.txnid());
        }
        Ok(())
    }

    /// Computes the checksums of the dirty pages under `root`, children
    /// first, storing each in its parent's entry.
    pub(super) fn seal(&mut self, root: &mut Root, table: &str) -> Result<()> {
        if root.page != 0 && self.is_dirty(root.page) {
            root.crc = self.seal_page(root.page, 0, table)?;
        }
        Ok(())
    }

    fn seal_page(&mut self, p: u64, depth: usize, table: &str) -> Result<u32> {
        if depth > MAX_DEPTH {
            return Err(self.bad(p, table, "tree too deep (a cycle?)"));
        }
        let page = self.page(p, table)?;
        if !page.is_leaf() {
            if self.st.unsealed.len() <= depth {
                self.st.unsealed.resize_with(depth + 1, Vec::new);
            }
            let mut dirty = std::mem::take(&mut self.st.unsealed[depth]);
            dirty.clear();
            dirty.extend(page.unsealed().filter(|&(_, child)| self.is_dirty(child)));
            let sealed = (|| {
                for &(i, child) in &dirty {
                    let crc = self.seal_page(child, depth + 1, table)?;
                    self.page_mut(p).set_child(i, child, crc).map_err(|r| self.bad(p, table, r))?;
                }
                Ok(())
            })();
            self.st.unsealed[depth] = dirty;
            sealed?;
        }
        Ok(self.page(p, table)?.checksum())
    }

    /// Copies the pages of the tree at `root` that sit at or above `line`
    /// (and their overflow runs) to fresh pages. `budget`: pages the walk
    /// may still visit; a real tree visits each of its pages once, so
    /// running out means pages referenced twice (then the walk, and the
    /// copies, were exponential in the depth).
    pub(super) fn relocate(
        &mut self,
        root: &mut Root,
        line: u64,
        table: &str,
        depth: usize,
        budget: &mut u64,
    ) -> Result<()> {
        if root.page == 0 || depth > MAX_DEPTH {
            return Ok(());
        }
        let Some(left) = budget.checked_sub(1) else {
            return Err(self.bad(
                root.page,
                table,
                "the walk visits more pages than the file holds (a cycle?)",
            ));
        };
        *budget = left;
        if root.page >= line {
            root.page = self.touch(root.page, table)?;
        }
        let count = self.page(root.page, table)?.count();
        for i in 0..count {
            let p = root.page;
            let page = self.page(p, table)?;
            let run = if page.is_leaf() {
                match page.leaf(i).map_err(|r| self.bad(p, table, r))?.1 {
                    Val::Run { page, len, crc, .. } => Some((page, len, crc)),
                    Val::Inline(_) => None,
                }
            } else {
                let (child, crc) = page.branch(i).map_err(|r| self.bad(p, table, r))?;
                let mut sub = Root { page: child, crc };
                self.relocate(&mut sub, line, table, depth + 1, budget)?;
                if sub.page != child {
                    root.page = self.touch(root.page, table)?;
                    self.page_mut(root.page)
                        .set_child(i, sub.page, 0)
                        .map_err(|r| self.bad(root.page, table, r))?;
                }
                match self.page(root.page, table)?.key(i).map_err(|r| self.bad(p, table, r))? {
                    Key::Run { page, len, crc, .. } => Some((page, len, crc)),
                    Key::Inline(_) => None,
                }
            };
            if let Some((run, len, crc)) =
                run.filter(|&(run, len, _)| run.saturating_add(overflow_pages(len)) > line)
            {
                let payload = self.view().overflow(run, len, crc, table, true)?.to_vec();
                root.page = self.touch(root.page, table)?;
                self.free_overflow(run, len, table)?;
                let (new, crc) = self.write_run(&[&payload])?;
                let db = self.db;
                self.page_mut(root.page).set_run(i, new, crc).map_err(|r| db.store.corrupt(p, table, r))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::page::separator;

    #[test]
    fn separators_are_the_shortest_prefix_between() {
        assert_eq!(separator(b"apple", b"banana"), b"b");
        assert_eq!(separator(b"abc", b"abd"), b"abd");
        assert_eq!(separator(b"ab", b"abc"), b"abc");
        assert_eq!(separator(b"abcx", b"abd"), b"abd");
        for (l, r) in [(&b"k1"[..], &b"k2"[..]), (b"", b"a"), (b"zz", b"zzz")] {
            let s = separator(l, r);
            assert!(l < s && s <= r, "{l:?} < {s:?} <= {r:?}");
        }
    }
}
