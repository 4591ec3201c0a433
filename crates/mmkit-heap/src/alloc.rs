//! The allocator: size classes in 64 KiB slabs for blocks up to 8 KiB
//! (O(1) under one lock per class), and runs of 4 KiB pages for larger
//! blocks and for the slabs themselves (segregated free bins, split and
//! coalesce with boundary tags, under the run allocator's lock). Every
//! update is a transaction on the lock's undo log (`segment::Txn`).

use std::sync::atomic::Ordering;

use crate::crash;
use crate::error::{Error, Result};
use crate::layout::*;
use crate::segment::{Inner, Txn};

/// A run descriptor as read from the segment, not yet trusted.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Run {
    pub off: u64,
    pub kind: u64,
    pub pages: u64,
    pub prev_pages: u64,
    pub info: u64,
}

impl Run {
    pub fn end(&self) -> u64 {
        self.off + self.pages * PAGE
    }
}

fn class_base(c: usize) -> u64 {
    CLASS_BASE + CLASS_STRIDE * c as u64
}

/// The class serving `size` bytes at `align`, or `None` for a large block.
pub(crate) fn class_for(size: u64, align: u64) -> Option<usize> {
    // `align` also comes from registry entries: 0 there is garbage, and
    // means 1 here rather than a division by zero.
    let (size, align) = (size.max(1), align.max(1));
    if size > MAX_SMALL {
        return None;
    }
    let mut c = class_of(size);
    // Blocks of class c sit at multiples of its size past a 64-aligned
    // slab header, so they are aligned to the size's largest power-of-two
    // divisor (up to 64).
    while c < CLASSES && class_size(c) % align != 0 {
        c += 1;
    }
    (c < CLASSES).then_some(c)
}

/// Pages of a large run holding `size` bytes after its descriptor.
/// Saturates: sizes also come from the segment (run descriptors, registry
/// entries), where garbage near `u64::MAX` must give an impossible page
/// count, not an overflow.
pub(crate) fn large_pages(size: u64) -> u64 {
    size.saturating_add(RUN_HEADER).div_ceil(PAGE)
}

/// Whether `run`, read at `off - RUN_HEADER`, is a well-formed large block
/// whose data starts at `off`: of that kind, with the pages its recorded
/// size needs.
pub(crate) fn is_large_block(off: u64, run: &Run) -> bool {
    off >= HEADER_SIZE + RUN_HEADER && run.kind == KIND_LARGE && run.pages == large_pages(run.info)
}

/// Bytes a block of `size` at `align` really takes (its class size, or its
/// run's pages).
pub fn block_size(size: u64, align: u64) -> u64 {
    match class_for(size, align.max(1)) {
        Some(c) => class_size(c),
        None => large_pages(size).saturating_mul(PAGE),
    }
}

impl Inner {
    fn check_align(&self, size: u64, align: u64) -> Result<()> {
        if !align.is_power_of_two() || align > MAX_ALIGN {
            return Err(Error::Invalid {
                op: "alloc",
                reason: format!("alignment {align} is not a power of two up to {MAX_ALIGN}"),
            });
        }
        if size > self.max_size {
            return Err(Error::OutOfMemory {
                path: self.path.clone(),
                requested: size,
                size: self.load(H_SIZE)?,
                max_size: self.max_size,
            });
        }
        Ok(())
    }

    /// Allocates `size` bytes aligned to `align` (a power of two up to 64);
    /// returns the block's offset. The block's contents are unspecified.
    pub(crate) fn alloc(&self, size: u64, align: u64) -> Result<u64> {
        self.check_align(size, align)?;
        match class_for(size, align) {
            Some(c) => self.alloc_small(c),
            None => Ok(self.alloc_run(large_pages(size), 1, KIND_LARGE, size)? + RUN_HEADER),
        }
    }

    /// [`Inner::alloc`], with the block's bytes zero. A large block carved
    /// from space never carved before holds the zeros the file grew with
    /// and is not written again (a hostile process that wrote there, or
    /// lowered the header's mark, makes the block hold garbage, which
    /// every reader checks anyway).
    pub(crate) fn alloc_zeroed(&self, size: u64, align: u64) -> Result<u64> {
        self.check_align(size, align)?;
        let (off, fresh) = match class_for(size, align) {
            Some(c) => (self.alloc_small(c)?, false),
            None => {
                let (at, fresh) = self.alloc_run_fresh(large_pages(size), 1, KIND_LARGE, size)?;
                (at + RUN_HEADER, fresh)
            }
        };
        let zeroed = if fresh { self.populate(off, size) } else { self.zero(off, size) };
        if let Err(e) = zeroed {
            let _ = self.free(off, size, align);
            return Err(e);
        }
        Ok(off)
    }

    /// Frees a block from [`Inner::alloc`] with the same size and
    /// alignment. A block that is not one (a wrong offset or size, a
    /// double free) is refused with a corruption error and nothing changes.
    pub(crate) fn free(&self, off: u64, size: u64, align: u64) -> Result<()> {
        self.check_align(size, align)?;
        match class_for(size, align) {
            Some(c) => self.free_small(c, off),
            None => self.free_run(self.large_block(off, size, "free")?.off, KIND_LARGE),
        }
    }

    /// The run of the large block of `size` bytes at `off`, or a
    /// corruption error naming `op` if there is no such block.
    fn large_block(&self, off: u64, size: u64, op: &str) -> Result<Run> {
        let run = self.read_run(off.wrapping_sub(RUN_HEADER))?;
        if !is_large_block(off, &run) || run.info != size {
            return Err(self.corrupt(format!("{op} of {size} bytes at {off}: not such a block")));
        }
        Ok(run)
    }

    /// Grows the block at `off` from `size` to `new_size` bytes where it
    /// lies, as Boost's `expand_fwd` does: when the pages after its run
    /// are a free run or not carved yet (the top of the heap, growing the
    /// segment if needed). Returns false, changing nothing, when they are
    /// taken, or when either size is one of a size class (no run to
    /// extend). One transaction on the run log: a holder killed inside it
    /// is rolled back; once it commits, the block has `new_size` bytes
    /// (and frees with that size).
    pub(crate) fn grow_in_place(&self, off: u64, size: u64, new_size: u64, align: u64) -> Result<bool> {
        Ok(self.grow_block(off, size, new_size, align)?.is_some())
    }

    /// [`Inner::grow_in_place`], returning on success the offset from
    /// which the block's bytes were never carved before (they hold the
    /// zeros the file grew with; the bytes before it hold whatever they
    /// held).
    pub(crate) fn grow_block(&self, off: u64, size: u64, new_size: u64, align: u64) -> Result<Option<u64>> {
        self.check_align(new_size, align)?;
        if new_size < size || class_for(size, align).is_some() || class_for(new_size, align).is_some() {
            return Ok(None);
        }
        let _g = self.lock_page_heap()?;
        let run = self.large_block(off, size, "growth")?;
        let fresh_from = self.load(PH_ZERO_FROM)?;
        let mut t = Txn::new(self, PH_LOG, PH_LOG_CAP);
        let want = large_pages(new_size);
        if want > run.pages && !self.take_pages_after(&mut t, run, want - run.pages)? {
            return Ok(None);
        }
        t.set(run.off + R_PAGES, want)?;
        t.set(run.off + R_INFO, new_size)?;
        crash::point("run.extend");
        t.commit()?;
        Ok(Some(fresh_from))
    }

    /// The size of the large block at `off`, if one starts there. Takes
    /// the run lock, so a grower killed inside its transaction is rolled
    /// back first.
    pub(crate) fn large_block_len(&self, off: u64) -> Result<Option<u64>> {
        let _g = self.lock_page_heap()?;
        Ok(self.large_block_len_locked(off))
    }

    /// [`Inner::large_block_len`] for a caller that holds the run lock.
    pub(crate) fn large_block_len_locked(&self, off: u64) -> Option<u64> {
        let at = off.checked_sub(RUN_HEADER)?;
        let run = self.read_run(at).ok()?;
        is_large_block(off, &run).then_some(run.info)
    }

    /// Gives `more` pages right after `run` to it: from the uncarved top
    /// when `run` ends at `heap_end`, else from the free run that follows
    /// it (split if longer). False, with nothing recorded, if neither can.
    fn take_pages_after(&self, t: &mut Txn<'_>, run: Run, more: u64) -> Result<bool> {
        let heap_end = self.load(PH_HEAP_END)?;
        let grown = run.pages + more;
        if run.end() >= heap_end {
            if self.load(PH_LAST_RUN)? != run.off {
                return Err(self.corrupt(format!("run {} ends the heap but is not its last run", run.off)));
            }
            let need = run.off + grown * PAGE;
            self.cover(need)?;
            t.set(PH_HEAP_END, need)?;
            if self.load(PH_ZERO_FROM)? < need {
                t.set(PH_ZERO_FROM, need)?;
            }
            return Ok(true);
        }
        let next = self.read_run(run.end())?;
        if next.kind != KIND_FREE || next.prev_pages != run.pages || next.pages < more {
            return Ok(false);
        }
        self.bin_remove(t, next)?;
        let rest = next.pages - more;
        let split = run.off + grown * PAGE;
        if rest > 0 {
            self.put_run(t, split, KIND_FREE, rest, Some(grown), 0)?;
            self.bin_insert(t, split, rest)?;
        }
        if next.end() < heap_end {
            t.set(next.end() + R_PREV_PAGES, if rest > 0 { rest } else { grown })?;
        } else {
            t.set(PH_LAST_RUN, if rest > 0 { split } else { run.off })?;
        }
        Ok(true)
    }

    /// Grows the segment, if needed, so that it holds `need` bytes: by a
    /// quarter at least (1 MiB at least), so that carving a run at a time
    /// does not call `fallocate` every time.
    fn cover(&self, need: u64) -> Result<()> {
        let size = self.load(H_SIZE)?;
        if need > size {
            let want = size.saturating_add((size / 4).max(1 << 20)).max(need).next_multiple_of(SLAB);
            self.grow_locked(want.min(self.max_size).max(need))?;
            crash::point("run.grown");
        }
        Ok(())
    }

    /// Reads the descriptor at `off` and checks what can be checked alone.
    pub(crate) fn read_run(&self, off: u64) -> Result<Run> {
        if off < HEADER_SIZE || off % PAGE != 0 {
            return Err(self.corrupt(format!("run offset {off} is not a page in the heap")));
        }
        let tag = self.load(off + R_TAG)?;
        let run = Run {
            off,
            kind: tag >> 32,
            pages: self.load(off + R_PAGES)?,
            prev_pages: self.load(off + R_PREV_PAGES)?,
            info: self.load(off + R_INFO)?,
        };
        let end = self.load(PH_HEAP_END)?;
        let ok_kind = tag & 0xffff_ffff == RUN_MAGIC && (KIND_FREE..=KIND_LARGE).contains(&run.kind);
        let fits = run.pages > 0 && run.pages <= (end.saturating_sub(off)) / PAGE;
        let prev_ok = run.prev_pages <= (off - HEADER_SIZE) / PAGE;
        if !ok_kind || !fits || !prev_ok {
            return Err(self.corrupt(format!("bad run descriptor at {off}: {run:?}")));
        }
        Ok(run)
    }

    // ------------------------------------------------------------ classes

    /// The slab and block index of `off` in class `c`, all checked.
    pub(crate) fn locate(&self, c: usize, off: u64) -> Result<(u64, u64)> {
        let slab = off & !(SLAB - 1);
        let (h, n) = slab_geometry(c);
        let size = class_size(c);
        let bad = |why: &str| self.corrupt(format!("block {off} of class {size}: {why}"));
        if slab < HEADER_SIZE || off < slab + h {
            return Err(bad("not in a slab's block area"));
        }
        let run = self.read_run(slab)?;
        if run.kind != KIND_SLAB || run.info != c as u64 || run.pages != SLAB / PAGE {
            return Err(bad("its slab belongs to another class"));
        }
        let rel = off - slab - h;
        if rel % size != 0 || rel / size >= n {
            return Err(bad("not a block boundary"));
        }
        Ok((slab, rel / size))
    }

    fn bit(slab: u64, idx: u64) -> (u64, u64) {
        (slab + RUN_HEADER + idx / 64 * 8, 1u64 << (idx % 64))
    }

    /// Whether block `idx` of `slab` is free (clear in the slab's bitmap).
    pub(crate) fn block_is_free(&self, slab: u64, idx: u64) -> Result<bool> {
        let (word, mask) = Self::bit(slab, idx);
        Ok(self.load(word)? & mask == 0)
    }

    fn alloc_small(&self, c: usize) -> Result<u64> {
        let base = class_base(c);
        let _g = self.lock(base + C_LOCK, base + C_LOG, C_LOG_CAP)?;
        let size = class_size(c);
        let head = self.load(base + C_FREE)?;
        if head != 0 {
            match self.pop(c, base, head) {
                Ok(block) => return Ok(block),
                Err(e) if e.is_corrupt() => {
                    // A damaged list is dropped (its blocks stay unusable
                    // until `check --repair` rebuilds the lists from the
                    // bitmaps): the class keeps working.
                    let mut t = Txn::new(self, base + C_LOG, C_LOG_CAP);
                    t.set(base + C_FREE, 0)?;
                    t.commit()?;
                }
                Err(e) => return Err(e),
            }
        }
        let bump = self.load(base + C_BUMP)?;
        let end = self.load(base + C_BUMP_END)?;
        if bump != 0 && bump.checked_add(size).is_some_and(|b| b <= end) && self.locate(c, bump).is_ok() {
            let (slab, idx) = self.locate(c, bump)?;
            let mut t = Txn::new(self, base + C_LOG, C_LOG_CAP);
            match self.set_bit(&mut t, slab, idx, true) {
                Ok(()) => {
                    crash::point("alloc.bump");
                    t.set(base + C_BUMP, bump + size)?;
                    t.commit()?;
                    return Ok(bump);
                }
                // A range over allocated blocks (garbage) is dropped, as a
                // damaged list is: the class goes on with a new slab, and
                // `check --repair` relinks the range's free blocks.
                Err(e) if e.is_corrupt() => {
                    t.set(base + C_BUMP, 0)?;
                    t.set(base + C_BUMP_END, 0)?;
                    t.commit()?;
                }
                Err(e) => return Err(e),
            }
        }
        self.new_slab(c, base)
    }

    fn pop(&self, c: usize, base: u64, head: u64) -> Result<u64> {
        let (slab, idx) = self.locate(c, head)?;
        let next = self.load(head)?;
        let mut t = Txn::new(self, base + C_LOG, C_LOG_CAP);
        self.set_bit(&mut t, slab, idx, true)?;
        crash::point("alloc.pop");
        t.set(base + C_FREE, next)?;
        t.commit()?;
        Ok(head)
    }

    /// Sets (or clears) a block's bit; it must hold the opposite value.
    fn set_bit(&self, t: &mut Txn<'_>, slab: u64, idx: u64, on: bool) -> Result<()> {
        let (word, mask) = Self::bit(slab, idx);
        let w = self.load(word)?;
        if (w & mask != 0) == on {
            let what = if on { "on the free list but allocated" } else { "freed but not allocated" };
            return Err(self.corrupt(format!("block {idx} of slab {slab} is {what}")));
        }
        t.set(word, w ^ mask)
    }

    fn new_slab(&self, c: usize, base: u64) -> Result<u64> {
        let slab = self.alloc_run(SLAB / PAGE, SLAB / PAGE, KIND_SLAB, c as u64)?;
        crash::point("alloc.new_slab");
        let (h, n) = slab_geometry(c);
        let size = class_size(c);
        let mut t = Txn::new(self, base + C_LOG, C_LOG_CAP);
        self.set_bit(&mut t, slab, 0, true)?;
        t.set(base + C_BUMP, slab + h + size)?;
        t.set(base + C_BUMP_END, slab + h + n * size)?;
        t.set(base + C_SLABS, self.load(base + C_SLABS)?.wrapping_add(1))?;
        t.commit()?;
        Ok(slab + h)
    }

    fn free_small(&self, c: usize, off: u64) -> Result<()> {
        let base = class_base(c);
        let _g = self.lock(base + C_LOCK, base + C_LOG, C_LOG_CAP)?;
        let (slab, idx) = self.locate(c, off)?;
        let (word, mask) = Self::bit(slab, idx);
        if self.load(word)? & mask == 0 {
            return Err(self.corrupt(format!("double free of block {off} (class {})", class_size(c))));
        }
        // The block is the caller's to give up: linking it needs no log.
        self.store(off, self.load(base + C_FREE)?)?;
        crash::point("free.link");
        let mut t = Txn::new(self, base + C_LOG, C_LOG_CAP);
        self.set_bit(&mut t, slab, idx, false)?;
        t.set(base + C_FREE, off)?;
        t.commit()
    }

    // --------------------------------------------------------------- runs

    /// Allocates a run of `pages` pages whose start is a multiple of
    /// `align_pages` pages, marks it `kind` with `info`, and returns it.
    pub(crate) fn alloc_run(&self, pages: u64, align_pages: u64, kind: u64, info: u64) -> Result<u64> {
        Ok(self.alloc_run_fresh(pages, align_pages, kind, info)?.0)
    }

    /// [`alloc_run`](Self::alloc_run), and whether the run was carved
    /// from space never carved before (still zero past its descriptor).
    fn alloc_run_fresh(&self, pages: u64, align_pages: u64, kind: u64, info: u64) -> Result<(u64, bool)> {
        let _g = self.lock_page_heap()?;
        let mut t = Txn::new(self, PH_LOG, PH_LOG_CAP);
        let align = align_pages * PAGE;
        let (at, fresh) = match self.find_free(pages, align)? {
            Some((run, at)) => {
                self.take(&mut t, run, at, pages, kind, info)?;
                (at, false)
            }
            None => {
                let zero_from = self.load(PH_ZERO_FROM)?;
                let at = self.carve_top(&mut t, pages, align)?;
                self.put_run(&mut t, at, kind, pages, None, info)?;
                (at, zero_from != 0 && at >= zero_from)
            }
        };
        if kind == KIND_SLAB {
            // A slab is never seen with a stale bitmap: zeroed before the
            // run is marked (the bytes were free, so a rollback loses
            // nothing).
            let (h, _) = slab_geometry(info as usize);
            self.zero(at + RUN_HEADER, h - RUN_HEADER)?;
        }
        t.commit()?;
        Ok((at, fresh))
    }

    fn put_run(
        &self,
        t: &mut Txn<'_>,
        at: u64,
        kind: u64,
        pages: u64,
        prev: Option<u64>,
        info: u64,
    ) -> Result<()> {
        t.set(at + R_TAG, run_tag(kind))?;
        t.set(at + R_PAGES, pages)?;
        if let Some(p) = prev {
            t.set(at + R_PREV_PAGES, p)?;
        }
        t.set(at + R_INFO, info)
    }

    /// First fit among the bins that can hold `pages`, looking at a
    /// bounded number of runs per bin.
    fn find_free(&self, pages: u64, align: u64) -> Result<Option<(Run, u64)>> {
        for b in bin_of(pages)..NBINS {
            let mut r = self.load(PH_BINS + 8 * b as u64)?;
            let mut steps = 0;
            while r != 0 && steps < 32 {
                let run = match self.read_run(r) {
                    Ok(run) if run.kind == KIND_FREE => run,
                    _ => {
                        // A damaged bin is dropped; `check --repair`
                        // rebuilds the bins from the runs. Not logged:
                        // undoing it would only bring the garbage back,
                        // and 64 damaged bins would overflow the log.
                        self.store(PH_BINS + 8 * b as u64, 0)?;
                        break;
                    }
                };
                let at = run.off.next_multiple_of(align);
                if at + pages * PAGE <= run.end() {
                    return Ok(Some((run, at)));
                }
                r = self.load(r + R_NEXT)?;
                steps += 1;
            }
        }
        Ok(None)
    }

    /// Splits free `run` into [free][taken at `at`][free] and marks the
    /// middle.
    fn take(&self, t: &mut Txn<'_>, run: Run, at: u64, pages: u64, kind: u64, info: u64) -> Result<()> {
        self.bin_remove(t, run)?;
        let pre = (at - run.off) / PAGE;
        let post = run.pages - pre - pages;
        if pre > 0 {
            t.set(run.off + R_PAGES, pre)?;
            self.bin_insert(t, run.off, pre)?;
        }
        self.put_run(t, at, kind, pages, Some(if pre > 0 { pre } else { run.prev_pages }), info)?;
        let after = at + pages * PAGE;
        if post > 0 {
            self.put_run(t, after, KIND_FREE, post, Some(pages), 0)?;
            self.bin_insert(t, after, post)?;
        }
        if run.end() < self.load(PH_HEAP_END)? {
            t.set(run.end() + R_PREV_PAGES, if post > 0 { post } else { pages })?;
        } else {
            t.set(PH_LAST_RUN, if post > 0 { after } else { at })?;
        }
        crash::point("run.take");
        Ok(())
    }

    /// Extends the carved part of the heap by an aligned run of `pages`,
    /// growing the segment when needed; returns the run's offset. A gap
    /// left by the alignment becomes a free run.
    fn carve_top(&self, t: &mut Txn<'_>, pages: u64, align: u64) -> Result<u64> {
        let end = self.load(PH_HEAP_END)?;
        let size = self.load(H_SIZE)?;
        // Past `max_size` too: the sums below stay far from overflowing.
        if end < HEADER_SIZE || end % PAGE != 0 || end > size.min(self.max_size) {
            return Err(self.corrupt(format!("heap end {end} is impossible (size {size})")));
        }
        let at = end.next_multiple_of(align);
        let need = at + pages * PAGE;
        self.cover(need)?;
        let last = self.load(PH_LAST_RUN)?;
        let mut prev = if last == 0 { 0 } else { self.read_run(last)?.pages };
        if at > end {
            let gap = (at - end) / PAGE;
            self.put_run(t, end, KIND_FREE, gap, Some(prev), 0)?;
            self.bin_insert(t, end, gap)?;
            prev = gap;
        }
        t.set(at + R_PREV_PAGES, prev)?;
        t.set(PH_LAST_RUN, at)?;
        t.set(PH_HEAP_END, need)?;
        if self.load(PH_ZERO_FROM)? < need {
            t.set(PH_ZERO_FROM, need)?;
        }
        Ok(at)
    }

    /// Returns a run to the free bins, merging it with free neighbours, or
    /// with the uncarved top when it ends there.
    pub(crate) fn free_run(&self, off: u64, kind: u64) -> Result<()> {
        let _g = self.lock_page_heap()?;
        let run = self.read_run(off)?;
        if run.kind != kind {
            return Err(self.corrupt(format!("free of run {off}: it is not allocated as expected")));
        }
        let mut t = Txn::new(self, PH_LOG, PH_LOG_CAP);
        let heap_end = self.load(PH_HEAP_END)?;
        let (mut start, mut pages, mut prev_pages) = (run.off, run.pages, run.prev_pages);
        if run.end() < heap_end {
            let next = self.read_run(run.end())?;
            if next.kind == KIND_FREE && next.prev_pages == run.pages {
                self.bin_remove(&mut t, next)?;
                pages += next.pages;
            }
        }
        if run.prev_pages > 0 {
            let prev = self.read_run(run.off - run.prev_pages * PAGE)?;
            if prev.kind == KIND_FREE && prev.pages == run.prev_pages {
                self.bin_remove(&mut t, prev)?;
                (start, prev_pages) = (prev.off, prev.prev_pages);
                pages += prev.pages;
            }
        }
        crash::point("run.merge");
        let end = start + pages * PAGE;
        if end >= heap_end {
            let last = if prev_pages > 0 { start - prev_pages * PAGE } else { 0 };
            t.set(PH_LAST_RUN, last)?;
            t.set(PH_HEAP_END, start)?;
        } else {
            self.put_run(&mut t, start, KIND_FREE, pages, None, 0)?;
            t.set(end + R_PREV_PAGES, pages)?;
            self.bin_insert(&mut t, start, pages)?;
        }
        t.commit()
    }

    fn bin_insert(&self, t: &mut Txn<'_>, run: u64, pages: u64) -> Result<()> {
        let bin = PH_BINS + 8 * bin_of(pages) as u64;
        let mut head = self.load(bin)?;
        if head != 0 && !self.read_run(head).is_ok_and(|r| r.kind == KIND_FREE) {
            // A damaged bin is dropped, as `find_free` drops one: its runs
            // stay out of reach until `check --repair` rebuilds the bins.
            head = 0;
        }
        t.set(run + R_NEXT, head)?;
        t.set(run + R_PREV, 0)?;
        if head != 0 {
            t.set(head + R_PREV, run)?;
        }
        t.set(bin, run)
    }

    fn bin_remove(&self, t: &mut Txn<'_>, run: Run) -> Result<()> {
        let bin = PH_BINS + 8 * bin_of(run.pages) as u64;
        let next = self.load(run.off + R_NEXT)?;
        let prev = self.load(run.off + R_PREV)?;
        if prev == 0 {
            if self.load(bin)? != run.off {
                return Err(self.corrupt(format!("free run {} is not where its bin says", run.off)));
            }
            t.set(bin, next)?;
        } else {
            if self.read_run(prev)?.kind != KIND_FREE || self.load(prev + R_NEXT)? != run.off {
                return Err(self.corrupt(format!("free run {}: broken bin links", run.off)));
            }
            t.set(prev + R_NEXT, next)?;
        }
        if next != 0 {
            if self.read_run(next)?.kind != KIND_FREE {
                return Err(self.corrupt(format!("free run {}: broken bin links", run.off)));
            }
            t.set(next + R_PREV, prev)?;
        }
        Ok(())
    }

    /// Bytes carved into runs so far.
    pub(crate) fn heap_end(&self) -> Result<u64> {
        Ok(self.atomic(PH_HEAP_END)?.load(Ordering::Acquire))
    }
}
