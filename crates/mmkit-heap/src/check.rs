//! `stat`, `check` and `check --repair`: walk every run and slab, account
//! for every byte, mark every block reachable from the registry, and
//! reclaim what a dead process leaked.

use std::collections::{BTreeMap, HashSet};

use mmkit_sync::{Liveness, MutexGuard, ProcessToken};

use crate::error::Result;
use crate::layout::*;
use crate::registry::{
    ENTRY_SIZE, INIT, KIND_BOX, KIND_MAP, KIND_STRING, KIND_VEC, ObjectInfo, READY, RETIRED, kind_name,
};
use crate::segment::{Heap, Inner, Txn};

/// Where the bytes of a heap are, as `stat` and `check` report them.
/// `header + used + free + overhead == size`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HeapStat {
    /// Published size of the segment.
    pub size: u64,
    /// The most it may grow to.
    pub max_size: u64,
    /// Bytes of the segment header.
    pub header: u64,
    /// Bytes in allocated blocks (rounded up to their class or pages).
    pub used: u64,
    /// Bytes free: free blocks, free runs, and the part not carved yet.
    pub free: u64,
    /// Slab headers and bitmaps, run descriptors, slab tails.
    pub overhead: u64,
    /// Allocated blocks.
    pub blocks: u64,
    /// The largest free stretch of pages (a free run or the uncarved end).
    pub largest_free: u64,
    /// `1 - largest_free / (free bytes outside slabs)`: 0 when the free
    /// pages are one stretch.
    pub fragmentation: f64,
    /// The named objects and the bytes each one holds.
    pub objects: Vec<ObjectStat>,
}

/// A named object in [`HeapStat`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectStat {
    /// Registry facts.
    pub info: ObjectInfo,
    /// Bytes of its blocks: header, buffer, tables, entries.
    pub bytes: u64,
    /// Elements (vector, string) or entries (map).
    pub len: Option<u64>,
}

/// The result of [`Heap::check`].
#[derive(Clone, Debug, Default)]
pub struct CheckReport {
    /// Where the bytes are (after the repair, when repairing).
    pub stat: HeapStat,
    /// Inconsistencies found; empty when the heap is clean.
    pub errors: Vec<String>,
    /// Allocated blocks no object reaches (a dead process's last
    /// allocation).
    pub leaked_blocks: u64,
    /// Their bytes.
    pub leaked_bytes: u64,
    /// What the repair did.
    pub repairs: Vec<String>,
}

impl CheckReport {
    /// True when nothing is inconsistent and nothing leaked.
    pub fn is_clean(&self) -> bool {
        self.errors.is_empty() && self.leaked_blocks == 0
    }
}

/// One allocated block found by the walk.
#[derive(Clone, Copy, Debug)]
struct Block {
    size: u64,
    class: Option<usize>,
}

#[derive(Default)]
struct Walk {
    stat: HeapStat,
    errors: Vec<String>,
    /// Allocated blocks by offset.
    allocated: BTreeMap<u64, Block>,
    free_runs: Vec<Run>,
    /// Slabs with no allocated block, by class.
    empty_slabs: Vec<(u64, usize)>,
    bins_broken: bool,
    classes_broken: Vec<usize>,
    /// Empty slabs no class can reach: leaked by a dead process.
    orphan_slabs: Vec<u64>,
}

use crate::alloc::Run;

/// A block an object owns: (offset, bytes, alignment).
type BlockRef = (u64, u64, u64);

impl Heap {
    /// Sizes, usage, fragmentation and the named objects. Holds every
    /// lock briefly, so it sees a consistent heap.
    pub fn stat(&self) -> Result<HeapStat> {
        Ok(self.check(false)?.stat)
    }

    /// Verifies every structure: runs and their boundary tags, free bins,
    /// slab bitmaps against free lists, the registry, and every object's
    /// blocks (each must be allocated, none twice). Allocated blocks that
    /// no object reaches are leaks. With `repair`, leaks are freed, broken
    /// free lists and bins are rebuilt, and empty slabs go back to the
    /// page allocator. Dead lock holders are rolled back on the way, as
    /// every locker does.
    ///
    /// Blocks from [`Heap::alloc`] that you keep outside the registry's
    /// objects count as leaks: do not `repair` a heap that holds some.
    pub fn check(&self, repair: bool) -> Result<CheckReport> {
        let inner = &*self.inner;
        let reg = inner.lock(REG_LOCK, REG_LOG, REG_LOG_CAP)?;
        let entries = inner.entries()?;
        let mut guards: Vec<MutexGuard<'_>> = Vec::new();
        let mut errors = Vec::new();
        let mut repairs = Vec::new();
        let mut live_init = false;
        for e in &entries {
            if e.state == INIT
                && e.owner != 0
                && ProcessToken::from_raw(e.owner).liveness() == Liveness::Alive
            {
                live_init = true;
            }
            if e.state != READY {
                continue;
            }
            match lock_object(inner, e.kind, e.object) {
                Ok(mut g) => {
                    guards.append(&mut g);
                    if e.kind == KIND_MAP {
                        report_stale_logs(inner, e, repair, &mut errors, &mut repairs);
                    }
                }
                Err(err) => errors.push(format!("object {:?}: {err}", String::from_utf8_lossy(&e.name))),
            }
        }
        let class_guards = lock_classes(inner)?;
        let ph = inner.lock_page_heap()?;
        let mut walk = walk(inner)?;
        walk.errors.append(&mut errors);
        let mut objects = Vec::new();
        let marked = mark(inner, &entries, &mut walk, &mut objects)?;
        let leaks: Vec<(u64, Block)> =
            walk.allocated.iter().filter(|(off, _)| !marked.contains(off)).map(|(o, b)| (*o, *b)).collect();
        let orphans = walk.orphan_slabs.len() as u64;
        let mut report = CheckReport {
            leaked_blocks: if live_init { 0 } else { leaks.len() as u64 + orphans },
            leaked_bytes: if live_init {
                0
            } else {
                let blocks = leaks.iter().fold(0u64, |sum, (_, b)| sum.saturating_add(b.size));
                blocks.saturating_add(orphans.saturating_mul(SLAB))
            },
            ..CheckReport::default()
        };
        report.repairs = repairs;
        if repair {
            rebuild(inner, &walk, &mut report)?;
        }
        drop(ph);
        drop(class_guards);
        if repair && !live_init {
            for (off, b) in &leaks {
                let freed = match b.class {
                    Some(c) => inner.free(*off, class_size(c), 1),
                    None => inner.free(*off, b.size, 1),
                };
                match freed {
                    Ok(()) => report.repairs.push(format!("freed leaked block {off} ({} bytes)", b.size)),
                    Err(e) => report.errors.push(format!("could not free leaked block {off}: {e}")),
                }
            }
            free_retired(inner, &entries, &mut report)?;
            release_empty_slabs(inner, &mut report)?;
        }
        drop(guards);
        drop(reg);
        if repair {
            // Account again after the repair.
            let again = self.check(false)?;
            report.stat = again.stat;
            report.errors = again.errors;
            report.leaked_blocks = again.leaked_blocks;
            report.leaked_bytes = again.leaked_bytes;
        } else {
            walk.stat.objects = objects;
            report.stat = walk.stat;
            report.errors.append(&mut walk.errors);
        }
        Ok(report)
    }
}

/// Reports the map's undo logs that hold entries under its held locks
/// (garbage: no lock holder, alive or dead, leaves one), or empties them
/// when repairing. Emptying writes nothing but the count: replaying
/// garbage could only spread it. A migration log left so made every
/// writer of the map fail until this repair.
fn report_stale_logs(
    inner: &Inner,
    e: &crate::registry::Entry,
    repair: bool,
    errors: &mut Vec<String>,
    repairs: &mut Vec<String>,
) {
    let name = String::from_utf8_lossy(&e.name);
    let stale = match crate::map::stale_logs(inner, e.object) {
        Ok(stale) => stale,
        Err(err) => return errors.push(format!("object {name:?}: {err}")),
    };
    for (log, n) in stale {
        let what = format!("map {name:?}: the undo log at {log} holds {n} entries under a free lock");
        if !repair {
            errors.push(what);
            continue;
        }
        match inner.store(log, 0) {
            Ok(()) => repairs.push(format!("{what}; emptied it")),
            Err(err) => errors.push(format!("{what}; could not empty it: {err}")),
        }
    }
    // A wrong dense mark would lose keys at the next growth in place.
    match crate::map::false_dense(inner, e.object) {
        Ok(None) => {}
        Ok(Some(slot)) => {
            let what =
                format!("map {name:?}: marked dense, but slot {slot} holds a key away from its home line");
            if !repair {
                return errors.push(what);
            }
            match crate::map::clear_dense(inner, e.object) {
                Ok(()) => repairs.push(format!("{what}; cleared the mark")),
                Err(err) => errors.push(format!("{what}; could not clear the mark: {err}")),
            }
        }
        Err(err) => errors.push(format!("object {name:?}: {err}")),
    }
}

fn lock_classes(inner: &Inner) -> Result<Vec<MutexGuard<'_>>> {
    (0..CLASSES)
        .map(|c| {
            let b = CLASS_BASE + CLASS_STRIDE * c as u64;
            inner.lock(b + C_LOCK, b + C_LOG, C_LOG_CAP)
        })
        .collect()
}

/// Takes the locks of one object, so its blocks hold still.
fn lock_object(inner: &Inner, kind: u64, off: u64) -> Result<Vec<MutexGuard<'_>>> {
    match kind {
        KIND_MAP => crate::map::lock_all(inner, off),
        KIND_VEC | KIND_STRING => Ok(vec![crate::vec::lock_raw(inner, off)?]),
        _ => Ok(Vec::new()),
    }
}

/// Walks every run from the header to the carved end.
fn walk(inner: &Inner) -> Result<Walk> {
    let mut w = Walk::default();
    let size = inner.load(H_SIZE)?;
    let end = inner.heap_end()?;
    w.stat.size = size;
    w.stat.max_size = inner.max_size;
    w.stat.header = HEADER_SIZE;
    if end < HEADER_SIZE || end > size || end % PAGE != 0 {
        return Err(inner.corrupt(format!("heap end {end} is impossible (size {size})")));
    }
    let mut at = HEADER_SIZE;
    let mut prev_pages = 0;
    let mut prev_free = false;
    let mut last = 0;
    while at < end {
        let run = inner.read_run(at)?;
        if run.prev_pages != prev_pages {
            w.errors.push(format!(
                "run {at}: boundary tag says {} pages before, not {prev_pages}",
                run.prev_pages
            ));
        }
        match run.kind {
            KIND_FREE => {
                if prev_free {
                    w.errors.push(format!("free run {at} follows a free run (not coalesced)"));
                }
                w.stat.free += run.pages * PAGE;
                w.stat.largest_free = w.stat.largest_free.max(run.pages * PAGE);
                w.free_runs.push(run);
            }
            KIND_LARGE => {
                // The block is what the run holds; a size that disagrees
                // with the run's pages is garbage (it once overflowed the
                // leak total) and is only reported.
                let mut size = run.info;
                if run.pages != crate::alloc::large_pages(run.info) {
                    w.errors.push(format!("large run {at}: {} pages for {} bytes", run.pages, run.info));
                    size = run.pages * PAGE - RUN_HEADER;
                }
                w.stat.overhead += RUN_HEADER;
                w.stat.used += run.pages * PAGE - RUN_HEADER;
                w.allocated.insert(at + RUN_HEADER, Block { size, class: None });
            }
            _ => walk_slab(inner, &run, &mut w)?,
        }
        prev_free = run.kind == KIND_FREE;
        prev_pages = run.pages;
        last = at;
        at = run.end();
    }
    if inner.load(PH_LAST_RUN)? != last {
        w.errors.push(format!("last run is {last}, the header says {}", inner.load(PH_LAST_RUN)?));
    }
    if prev_free {
        w.errors.push("a free run ends the carved heap (not returned to the top)".into());
    }
    w.stat.free += size - end;
    w.stat.largest_free = w.stat.largest_free.max(size - end);
    check_bins(inner, &mut w)?;
    check_classes(inner, &mut w)?;
    let pages_free: u64 = w.free_runs.iter().map(|r| r.pages * PAGE).sum::<u64>() + (size - end);
    w.stat.fragmentation =
        if pages_free == 0 { 0.0 } else { 1.0 - w.stat.largest_free as f64 / pages_free as f64 };
    Ok(w)
}

fn walk_slab(inner: &Inner, run: &Run, w: &mut Walk) -> Result<()> {
    let c = run.info as usize;
    if c >= CLASSES || run.pages != SLAB / PAGE || run.off % SLAB != 0 {
        w.errors.push(format!("slab {}: class {} with {} pages", run.off, run.info, run.pages));
        w.stat.overhead += run.pages * PAGE;
        return Ok(());
    }
    let (h, n) = slab_geometry(c);
    let size = class_size(c);
    w.stat.overhead += h + (SLAB - h - n * size);
    let mut any = false;
    for i in 0..n {
        let block = run.off + h + i * size;
        if !inner.block_is_free(run.off, i)? {
            any = true;
            w.stat.used += size;
            w.allocated.insert(block, Block { size, class: Some(c) });
        } else {
            w.stat.free += size;
        }
    }
    if !any {
        w.empty_slabs.push((run.off, c));
    }
    Ok(())
}

/// Every free run is in its bin once, and the bins hold nothing else.
fn check_bins(inner: &Inner, w: &mut Walk) -> Result<()> {
    let free: HashSet<u64> = w.free_runs.iter().map(|r| r.off).collect();
    let mut seen = HashSet::new();
    for b in 0..NBINS {
        let mut r = inner.load(PH_BINS + 8 * b as u64)?;
        let mut prev = 0;
        while r != 0 {
            let ok = free.contains(&r)
                && seen.insert(r)
                && inner.read_run(r).is_ok_and(|run| bin_of(run.pages) == b)
                && inner.load(r + R_PREV)? == prev;
            if !ok {
                w.errors.push(format!("bin {b}: run {r} does not belong there (or a cycle)"));
                w.bins_broken = true;
                break;
            }
            prev = r;
            r = inner.load(r + R_NEXT)?;
        }
    }
    if seen.len() != free.len() {
        w.errors.push(format!("{} free runs, {} in the bins", free.len(), seen.len()));
        w.bins_broken = true;
    }
    Ok(())
}

/// Whether `bump..end` is free blocks of one slab of class `c` (what
/// allocation from the range expects).
fn bump_range_free(inner: &Inner, c: usize, bump: u64, end: u64) -> bool {
    let Ok((slab, first)) = inner.locate(c, bump) else { return false };
    let n = (end - bump) / class_size(c);
    let (_, per_slab) = slab_geometry(c);
    first.checked_add(n).is_some_and(|last| last <= per_slab)
        && (first..first + n).all(|i| inner.block_is_free(slab, i).unwrap_or(false))
}

/// Each class's free list and bump range hold exactly its slabs' clear
/// bits. An empty slab that neither holds free-list blocks nor the bump
/// range is an orphan: a process died between taking it from the run
/// allocator and handing it to its class. It counts as a leak.
fn check_classes(inner: &Inner, w: &mut Walk) -> Result<()> {
    let mut in_list: BTreeMap<u64, u64> = BTreeMap::new();
    let mut listed = [0u64; CLASSES];
    let mut bumped = [0u64; CLASSES];
    let mut bump_slab = [u64::MAX; CLASSES];
    for c in 0..CLASSES {
        let base = CLASS_BASE + CLASS_STRIDE * c as u64;
        let size = class_size(c);
        let mut seen = HashSet::new();
        let mut r = inner.load(base + C_FREE)?;
        while r != 0 {
            let ok = seen.len() < (1 << 26)
                && seen.insert(r)
                && inner.locate(c, r).is_ok_and(|(slab, i)| inner.block_is_free(slab, i).unwrap_or(false));
            if !ok {
                w.errors.push(format!("class {size}: free list entry {r} is not a free block (or a cycle)"));
                w.classes_broken.push(c);
                break;
            }
            *in_list.entry(r & !(SLAB - 1)).or_default() += 1;
            listed[c] += 1;
            r = inner.load(r)?;
        }
        let (bump, end) = (inner.load(base + C_BUMP)?, inner.load(base + C_BUMP_END)?);
        if bump != 0 && bump < end {
            if (end - bump) % size != 0 || !bump_range_free(inner, c, bump, end) {
                w.errors.push(format!("class {size}: bump range {bump}..{end} is not free blocks of a slab"));
                w.classes_broken.push(c);
            } else {
                bumped[c] = (end - bump) / size;
                bump_slab[c] = bump & !(SLAB - 1);
            }
        }
    }
    let mut clear_bits = [0u64; CLASSES];
    for (off, c) in slabs(inner)? {
        let (_, n) = slab_geometry(c);
        let mut clear = 0;
        for i in 0..n {
            if inner.block_is_free(off, i)? {
                clear += 1;
            }
        }
        if clear == n && !in_list.contains_key(&off) && bump_slab[c] != off {
            w.orphan_slabs.push(off);
        } else {
            clear_bits[c] += clear;
        }
    }
    for c in 0..CLASSES {
        if !w.classes_broken.contains(&c) && listed[c] + bumped[c] != clear_bits[c] {
            w.errors.push(format!(
                "class {}: {} free blocks, {} reachable for allocation",
                class_size(c),
                clear_bits[c],
                listed[c] + bumped[c]
            ));
            w.classes_broken.push(c);
        }
    }
    Ok(())
}

fn slabs(inner: &Inner) -> Result<Vec<(u64, usize)>> {
    let mut out = Vec::new();
    let end = inner.heap_end()?;
    let mut at = HEADER_SIZE;
    while at < end {
        let run = inner.read_run(at)?;
        if run.kind == KIND_SLAB && (run.info as usize) < CLASSES && run.pages == SLAB / PAGE {
            out.push((at, run.info as usize));
        }
        at = run.end();
    }
    Ok(out)
}

/// Marks the blocks reachable from the registry; every one must be
/// allocated with its size.
fn mark(
    inner: &Inner,
    entries: &[crate::registry::Entry],
    w: &mut Walk,
    objects: &mut Vec<ObjectStat>,
) -> Result<HashSet<u64>> {
    let mut marked = HashSet::new();
    let mut visit = |w: &mut Walk, off: u64, size: u64, align: u64, what: &str| -> u64 {
        let ok = match w.allocated.get(&off) {
            Some(b) => match crate::alloc::class_for(size, align) {
                Some(c) => b.class == Some(c),
                None => b.class.is_none() && b.size == size,
            },
            None => false,
        };
        if !ok {
            w.errors.push(format!("{what}: block {off} of {size} bytes is not allocated as such"));
        } else if !marked.insert(off) {
            w.errors.push(format!("{what}: block {off} is reached twice"));
        }
        crate::alloc::block_size(size, align)
    };
    let (table, cap) = inner.registry_table()?;
    if cap > 0 {
        visit(w, table, cap * ENTRY_SIZE, 64, "registry");
    }
    for e in entries {
        let name = String::from_utf8_lossy(&e.name).into_owned();
        let mut bytes = visit(w, e.object, e.size, e.align, &name);
        let mut len = None;
        if e.state == READY {
            match owned_blocks(inner, e.kind, e.object) {
                Ok((blocks, n)) => {
                    for (off, size, align) in blocks {
                        bytes = bytes.saturating_add(visit(w, off, size, align, &name));
                    }
                    len = n;
                }
                Err(err) => w.errors.push(format!("object {name:?}: {err}")),
            }
        }
        if e.state == RETIRED {
            continue;
        }
        objects.push(ObjectStat {
            info: ObjectInfo {
                name,
                kind: kind_name(e.kind),
                type_name: e.type_name.clone(),
                offset: e.object,
                header_bytes: e.size,
                initializing: e.state != READY,
            },
            bytes,
            len,
        });
    }
    Ok(marked)
}

/// The blocks an object owns besides its header, and its length.
fn owned_blocks(inner: &Inner, kind: u64, off: u64) -> Result<(Vec<BlockRef>, Option<u64>)> {
    match kind {
        KIND_BOX => {
            if inner.load(off)? != crate::boxed::MAGIC {
                return Err(inner.corrupt(format!("box at {off}: bad magic")));
            }
            Ok((Vec::new(), None))
        }
        KIND_VEC | KIND_STRING => {
            if inner.load(off)? != crate::vec::MAGIC {
                return Err(inner.corrupt(format!("vector at {off}: bad magic")));
            }
            let (_, _, s) = crate::vec::read_state(inner, off)?;
            Ok((crate::vec::buffer_block(inner, off)?.into_iter().collect(), Some(s.len)))
        }
        KIND_MAP => {
            let (stripes, full) = crate::map::counts(inner, off)?;
            if stripes != full {
                return Err(
                    inner.corrupt(format!("map at {off}: stripes count {stripes} entries, tables {full}"))
                );
            }
            Ok((crate::map::blocks(inner, off)?, Some(full)))
        }
        _ => Err(inner.corrupt(format!("object at {off} has unknown kind {kind}"))),
    }
}

/// Rebuilds broken free lists and bins from the walk. Class and run locks
/// held.
fn rebuild(inner: &Inner, w: &Walk, report: &mut CheckReport) -> Result<()> {
    let all = if w.classes_broken.is_empty() { Vec::new() } else { slabs(inner)? };
    for &c in &w.classes_broken {
        let mut t = Txn::new(inner, CLASS_BASE + CLASS_STRIDE * c as u64 + C_LOG, C_LOG_CAP);
        relink_class(inner, c, &all, &[], &mut t)?;
        t.commit()?;
        report.repairs.push(format!("rebuilt the free list of class {}", class_size(c)));
    }
    if w.bins_broken {
        for b in 0..NBINS {
            inner.store(PH_BINS + 8 * b as u64, 0)?;
        }
        for r in &w.free_runs {
            let bin = PH_BINS + 8 * bin_of(r.pages) as u64;
            let head = inner.load(bin)?;
            inner.store(r.off + R_NEXT, head)?;
            inner.store(r.off + R_PREV, 0)?;
            if head != 0 {
                inner.store(head + R_PREV, r.off)?;
            }
            inner.store(bin, r.off)?;
        }
        report.repairs.push("rebuilt the free-run bins".into());
    }
    Ok(())
}

/// Links every free block of class `c` (clear in its slab's bitmap)
/// outside the slabs in `skip` into a new free list, in transaction `t`
/// (the class's). The list is built from the bitmaps, never walked: a
/// hostile process may have made it a cycle or aimed it anywhere. The
/// bump range is dropped (its blocks are in the list now): a broken class
/// may have it over allocated blocks. Class and run locks held.
fn relink_class(
    inner: &Inner,
    c: usize,
    slabs: &[(u64, usize)],
    skip: &[u64],
    t: &mut Txn<'_>,
) -> Result<()> {
    let base = CLASS_BASE + CLASS_STRIDE * c as u64;
    let (h, n) = slab_geometry(c);
    let size = class_size(c);
    let mut head = 0u64;
    for &(slab, sc) in slabs {
        if sc != c || skip.contains(&slab) {
            continue;
        }
        for i in 0..n {
            if inner.block_is_free(slab, i)? {
                let block = slab + h + i * size;
                inner.store(block, head)?;
                head = block;
            }
        }
    }
    t.set(base + C_FREE, head)?;
    t.set(base + C_BUMP, 0)?;
    t.set(base + C_BUMP_END, 0)
}

/// Gives slabs with no allocated block back to the page allocator (their
/// blocks leave the class's free list first).
fn release_empty_slabs(inner: &Inner, report: &mut CheckReport) -> Result<()> {
    let class_guards = lock_classes(inner)?;
    let ph = inner.lock_page_heap()?;
    let w = walk(inner)?;
    let mut by_class: BTreeMap<usize, Vec<u64>> = BTreeMap::new();
    for (slab, c) in &w.empty_slabs {
        by_class.entry(*c).or_default().push(*slab);
    }
    let all = if by_class.is_empty() { Vec::new() } else { slabs(inner)? };
    for (c, empties) in &by_class {
        let base = CLASS_BASE + CLASS_STRIDE * *c as u64;
        let mut t = Txn::new(inner, base + C_LOG, C_LOG_CAP);
        relink_class(inner, *c, &all, empties, &mut t)?;
        t.set(base + C_SLABS, inner.load(base + C_SLABS)?.saturating_sub(empties.len() as u64))?;
        t.commit()?;
    }
    drop(ph);
    drop(class_guards);
    for (slab, _) in &w.empty_slabs {
        inner.free_run(*slab, KIND_SLAB)?;
        report.repairs.push(format!("returned empty slab {slab} to the page allocator"));
    }
    Ok(())
}

/// Frees what an object removed from the registry owns. Its header block
/// stays (magic zeroed, entry retired): a process still holding a handle
/// gets `Error::Removed` instead of writing into reused memory.
pub(crate) fn destroy(heap: &Heap, kind: u64, off: u64, ready: bool) -> Result<()> {
    let inner = &*heap.inner;
    if !ready {
        return Ok(());
    }
    let guards = lock_object(inner, kind, off)?;
    // Held while the blocks are read: a map table's size is read from its
    // run (see `map::blocks`).
    let runs = inner.lock_page_heap()?;
    let owned = owned_blocks(inner, kind, off).map(|(b, _)| b).unwrap_or_default();
    drop(runs);
    inner.store(off, 0)?;
    if kind == KIND_MAP {
        crate::map::retire(inner, off)?;
    }
    drop(guards);
    for (b, s, a) in owned {
        inner.free(b, s, a)?;
    }
    Ok(())
}

/// Frees the header blocks of retired entries and frees the entries.
/// Registry lock held, allocator locks not.
fn free_retired(inner: &Inner, entries: &[crate::registry::Entry], report: &mut CheckReport) -> Result<()> {
    for e in entries.iter().filter(|e| e.state == RETIRED) {
        if e.size == 0 || !e.align.is_power_of_two() {
            report.errors.push(format!("retired entry {} has a header of {} bytes", e.at, e.size));
            continue;
        }
        match inner.free(e.object, e.size, e.align) {
            Ok(()) => report
                .repairs
                .push(format!("freed the header of removed object {:?}", String::from_utf8_lossy(&e.name))),
            Err(err) => report.errors.push(format!("could not free a removed header {}: {err}", e.object)),
        }
        let mut t = Txn::new(inner, REG_LOG, REG_LOG_CAP);
        t.set(e.at, crate::registry::FREE)?;
        t.commit()?;
    }
    Ok(())
}
