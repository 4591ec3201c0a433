//! Page layout: decoding (every offset and length checked) and in-place
//! editing of the writer's dirty pages. See `docs/kv-format.md`.
//!
//! A tree page is slotted: a 16-byte header, an array of 6-byte slots (the
//! entry's `u16` offset and the first four bytes of its key, so a binary
//! search mostly stays inside the slot array) growing up, entries packed
//! from the end of the page down. The
//! checksum of a page covers its header, its slot array and its entry area,
//! never the unused gap between them, and is kept by whoever points at the
//! page (the parent's entry, or the meta page), Merkle style.
//!
//! Pages are 4 KiB, so a copy-on-write commit copies and checksums little.
//! A key too long to sit in a page three times over lives in an overflow
//! run instead: a leaf entry's key together with its value, a branch
//! separator's on its own. Only ties on the slot prefix read such a key.

/// Page size in bytes (format version 3).
pub const PAGE: usize = 4096;
/// Size of a tree page header.
pub(crate) const HEADER: usize = 16;
/// Header of an overflow run: the common header plus the value length.
pub(crate) const OVERFLOW_HEADER: usize = 24;
/// Longest key, in bytes.
pub const MAX_KEY_LEN: usize = 4096;
/// An entry (header, key, inline value, slot) takes at most this much, so a
/// page always holds three and a split always succeeds.
pub(crate) const MAX_ENTRY: usize = (PAGE - HEADER) / 3;
const _: () = assert!(MAX_ENTRY < KLEN_MASK as usize);

pub(crate) const KIND_LEAF: u8 = 1;
pub(crate) const KIND_BRANCH: u8 = 2;
pub(crate) const KIND_OVERFLOW: u8 = 3;

/// Bytes per slot: entry offset (`u16`) and key prefix (4 bytes).
pub(crate) const SLOT: usize = 6;
/// Leaf entry flag (top bit of the key length): the value lives in an
/// overflow run.
pub(crate) const F_OVERFLOW: u16 = 0x8000;
/// Leaf entry flag: the key and then the value live in an overflow run
/// (the key is too long to sit in the leaf).
pub(crate) const F_BIG_KEY: u16 = 0x4000;
/// Branch entry flag (its `flags` field): the separator lives in an
/// overflow run.
pub(crate) const F_BRANCH_RUN: u16 = 1;
const KLEN_MASK: u16 = 0x1fff;
pub(crate) const LEAF_ENTRY: usize = 4;
pub(crate) const BRANCH_ENTRY: usize = 16;
/// Inline size of an overflow reference: page, length, checksum.
pub(crate) const OVERFLOW_REF: usize = 20;

pub(crate) type Bad = &'static str;

#[inline]
pub(crate) fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
#[inline]
pub(crate) fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or_default())
}
#[inline]
pub(crate) fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or_default())
}
#[inline]
fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
#[inline]
fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
#[inline]
fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Where a leaf entry's value is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Val<'a> {
    /// Stored in the leaf.
    Inline(&'a [u8]),
    /// Bytes `skip..` of the payload (`len` bytes) of the overflow run at
    /// `page`: the value alone (`skip` 0), or the value after the key it
    /// shares the run with (`skip` is then the key's length, never 0: such
    /// keys are long).
    Run { page: u64, len: u64, crc: u32, skip: u64 },
}

/// Where an entry's key is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Key<'a> {
    /// Stored in the page.
    Inline(&'a [u8]),
    /// The first `klen` bytes of the payload (`len` bytes) of the overflow
    /// run at `page`.
    Run { page: u64, len: u64, crc: u32, klen: usize },
}

/// Resolves keys stored in overflow runs, and names the page being read
/// in errors: what a search needs beyond the page itself.
pub(crate) trait Keys<'a> {
    /// The bytes of a key in a run.
    fn resolve(&self, key: Key<'a>) -> crate::Result<&'a [u8]>;
    /// A corruption error for the page being read.
    fn bad(&self, reason: Bad) -> crate::Error;
}

/// [`Keys`] for a page on its own (fuzzing and unit tests): keys in
/// overflow runs are errors.
pub(crate) struct NoRuns;

impl<'a> Keys<'a> for NoRuns {
    fn resolve(&self, _: Key<'a>) -> crate::Result<&'a [u8]> {
        Err(self.bad("key in an overflow run (no file to read it from)"))
    }
    fn bad(&self, reason: Bad) -> crate::Error {
        crate::Error::Corrupt {
            path: Default::default(),
            page: 0,
            table: String::new(),
            reason: reason.into(),
        }
    }
}

/// A checked, read-only view of a tree page.
#[derive(Clone, Copy)]
pub(crate) struct Page<'a> {
    pub(crate) b: &'a [u8],
    // Both read once, when the header is checked: other processes can
    // rewrite the bytes, and every slice below is cut with these. Two
    // `u32`s keep `Page` three words, as it was with `count` alone (a
    // fourth word cost about 10% on the small-set benchmark: it is returned and
    // copied on every page access).
    count: u32,
    upper: u32,
}

impl<'a> Page<'a> {
    /// Validates the header: a tree kind, and a slot array that ends at or
    /// before the entry area.
    #[inline]
    pub(crate) fn new(b: &'a [u8]) -> Result<Page<'a>, Bad> {
        if b.len() != PAGE {
            return Err("page has the wrong size");
        }
        if b[0] != KIND_LEAF && b[0] != KIND_BRANCH {
            return Err("not a tree page (bad kind byte)");
        }
        let count = u16_at(b, 2) as usize;
        let upper = u16_at(b, 4) as usize;
        if HEADER + SLOT * count > upper || upper > PAGE {
            return Err("slot array overlaps the entry area");
        }
        Ok(Page { b, count: count as u32, upper: upper as u32 })
    }

    pub(crate) fn is_leaf(&self) -> bool {
        self.b[0] == KIND_LEAF
    }
    pub(crate) fn count(&self) -> usize {
        self.count as usize
    }
    pub(crate) fn upper(&self) -> usize {
        self.upper as usize
    }
    pub(crate) fn txnid(&self) -> u64 {
        u64_at(self.b, 8)
    }
    pub(crate) fn free(&self) -> usize {
        self.upper() - HEADER - SLOT * self.count()
    }

    /// End of the slot array.
    pub(crate) fn lower(&self) -> usize {
        HEADER + SLOT * self.count()
    }

    /// Checksum of the used parts: header and slots, then the entry area.
    pub(crate) fn checksum(&self) -> u32 {
        checksum(self.b, self.lower(), self.upper())
    }

    #[inline]
    fn offset(&self, i: usize) -> Result<usize, Bad> {
        if i >= self.count() {
            return Err("entry index out of range");
        }
        let off = u16_at(self.b, HEADER + SLOT * i) as usize;
        if off < self.upper() || off >= PAGE {
            return Err("entry offset outside the entry area");
        }
        Ok(off)
    }

    /// Where entry `i` starts, without checks beyond the page (for
    /// prefetching: the read itself checks).
    #[inline]
    pub(crate) fn entry_at(&self, i: usize) -> usize {
        let at = HEADER + SLOT * i;
        if i >= self.count() || at + 2 > PAGE { PAGE } else { u16_at(self.b, at) as usize }
    }

    /// The overflow reference at `at` (bounds checked by the caller).
    fn run_ref(&self, at: usize) -> (u64, u64, u32) {
        (u64_at(self.b, at), u64_at(self.b, at + 8), u32_at(self.b, at + 16))
    }

    /// Entry `i` of a leaf: key and value.
    #[inline]
    pub(crate) fn leaf(&self, i: usize) -> Result<(Key<'a>, Val<'a>), Bad> {
        let off = self.offset(i)?;
        let b = self.b;
        if off + LEAF_ENTRY > PAGE {
            return Err("leaf entry header past the page end");
        }
        let word = u16_at(b, off);
        let klen = (word & KLEN_MASK) as usize;
        let vlen = u16_at(b, off + 2) as usize;
        let kstart = off + LEAF_ENTRY;
        if word & F_BIG_KEY != 0 {
            if vlen != OVERFLOW_REF || kstart + OVERFLOW_REF > PAGE {
                return Err("overflow reference of the wrong size");
            }
            let (page, len, crc) = self.run_ref(kstart);
            if (klen as u64) > len || klen == 0 {
                return Err("key longer than its overflow run");
            }
            return Ok((Key::Run { page, len, crc, klen }, Val::Run { page, len, crc, skip: klen as u64 }));
        }
        let vstart = kstart + klen;
        if vstart + vlen > PAGE {
            return Err("leaf entry past the page end");
        }
        let key = Key::Inline(&b[kstart..vstart]);
        if word & F_OVERFLOW != 0 {
            if vlen != OVERFLOW_REF {
                return Err("overflow reference of the wrong size");
            }
            let (page, len, crc) = self.run_ref(vstart);
            return Ok((key, Val::Run { page, len, crc, skip: 0 }));
        }
        Ok((key, Val::Inline(&b[vstart..vstart + vlen])))
    }

    /// The key of entry `i` (leaf or branch): the search path, so it
    /// reads only the key's length and bytes (or its run reference).
    #[inline]
    pub(crate) fn key(&self, i: usize) -> Result<Key<'a>, Bad> {
        let off = self.offset(i)?;
        let (len_at, start, mask) = if self.is_leaf() {
            (off, off + LEAF_ENTRY, KLEN_MASK)
        } else {
            (off + 12, off + BRANCH_ENTRY, u16::MAX)
        };
        if start > PAGE {
            return Err("entry header past the page end");
        }
        let klen = (u16_at(self.b, len_at) & mask) as usize;
        let in_run = if self.is_leaf() {
            u16_at(self.b, off) & F_BIG_KEY != 0
        } else {
            u16_at(self.b, off + 14) & F_BRANCH_RUN != 0
        };
        if in_run {
            if start + OVERFLOW_REF > PAGE {
                return Err("overflow reference past the page end");
            }
            let (page, len, crc) = self.run_ref(start);
            if (klen as u64) > len || klen == 0 {
                return Err("key longer than its overflow run");
            }
            return Ok(Key::Run { page, len, crc, klen });
        }
        let end = start + klen;
        if end > PAGE {
            return Err("key past the page end");
        }
        Ok(Key::Inline(&self.b[start..end]))
    }

    /// The key of entry `i`, resolved.
    #[inline]
    pub(crate) fn key_bytes(&self, i: usize, keys: &impl Keys<'a>) -> crate::Result<&'a [u8]> {
        match self.key(i).map_err(|r| keys.bad(r))? {
            Key::Inline(k) => Ok(k),
            run => keys.resolve(run),
        }
    }

    /// The child page of branch entry `i`.
    #[inline]
    pub(crate) fn child(&self, i: usize) -> Result<u64, Bad> {
        // `branch` checks the whole entry header, not just the child: the
        // writer rewrites child and checksum (`PageMut::set_child`) right
        // after reading it.
        self.branch(i).map(|(child, _)| child)
    }

    /// The branch entries whose checksum is 0, as (index, child): the
    /// writer zeroes the checksum of every entry it points at a page of
    /// its own, so these are the only candidates for sealing (a real
    /// checksum of 0 only costs a look at the dirty set).
    pub(crate) fn unsealed(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        (0..self.count()).filter_map(move |i| {
            let off = u16_at(self.b, HEADER + SLOT * i) as usize;
            let e = self.b.get(off..off + 12)?;
            (u32_at(e, 8) == 0).then(|| (i, u64_at(e, 0)))
        })
    }

    /// Entry `i` of a branch: child page and its checksum (the separator
    /// is [`Page::key`]; entry 0's is ignored: it stands for minus
    /// infinity).
    #[inline]
    pub(crate) fn branch(&self, i: usize) -> Result<(u64, u32), Bad> {
        let off = self.offset(i)?;
        if off + BRANCH_ENTRY > PAGE {
            return Err("branch entry header past the page end");
        }
        Ok((u64_at(self.b, off), u32_at(self.b, off + 8)))
    }

    /// The key prefix stored in slot `i` (the caller checked `i < count`).
    #[inline]
    fn prefix(&self, i: usize) -> u32 {
        let at = HEADER + SLOT * i + 2;
        u32::from_be_bytes([self.b[at], self.b[at + 1], self.b[at + 2], self.b[at + 3]])
    }

    /// The key prefix stored in slot `i`, as stored (for copying).
    fn raw_prefix(&self, i: usize) -> [u8; 4] {
        let at = HEADER + SLOT * i + 2;
        [self.b[at], self.b[at + 1], self.b[at + 2], self.b[at + 3]]
    }

    /// Compares entry `i`'s key with `key` (whose prefix is `kp`): by the
    /// slot's prefix first, the entry itself only on a tie.
    #[inline]
    fn cmp_at(
        &self,
        i: usize,
        key: &[u8],
        kp: u32,
        keys: &impl Keys<'a>,
    ) -> crate::Result<std::cmp::Ordering> {
        match self.prefix(i).cmp(&kp) {
            std::cmp::Ordering::Equal => Ok(cmp_keys(self.key_bytes(i, keys)?, key)),
            other => Ok(other),
        }
    }

    /// Index of the child of a branch to follow for `key`: the last entry
    /// whose separator is at most `key` (entry 0 counts as minus infinity).
    #[inline]
    pub(crate) fn child_index(&self, key: &[u8], keys: &impl Keys<'a>) -> crate::Result<usize> {
        if self.count() == 0 {
            return Err(keys.bad("empty branch page"));
        }
        let kp = key_prefix(key);
        let (mut lo, mut hi) = (1, self.count());
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.cmp_at(mid, key, kp, keys)? != std::cmp::Ordering::Greater {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo - 1)
    }

    /// In a leaf: `Ok(i)` if entry `i` has `key`, else `Err(i)` with the
    /// insertion point.
    #[inline]
    pub(crate) fn search(&self, key: &[u8], keys: &impl Keys<'a>) -> crate::Result<Result<usize, usize>> {
        let kp = key_prefix(key);
        let (mut lo, mut hi) = (0, self.count());
        while lo < hi {
            let mid = (lo + hi) / 2;
            match self.cmp_at(mid, key, kp, keys)? {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Ok(Ok(mid)),
            }
        }
        Ok(Err(lo))
    }

    /// Bytes entry `i` takes, slot included.
    pub(crate) fn entry_size(&self, i: usize) -> Result<usize, Bad> {
        let off = self.offset(i)?;
        if self.is_leaf() {
            let klen = match self.leaf(i)?.0 {
                Key::Inline(k) => k.len(),
                Key::Run { .. } => 0,
            };
            Ok(LEAF_ENTRY + klen + u16_at(self.b, off + 2) as usize + SLOT)
        } else {
            self.branch(i)?;
            let klen = match self.key(i)? {
                Key::Inline(k) => k.len(),
                Key::Run { .. } => OVERFLOW_REF,
            };
            Ok(BRANCH_ENTRY + klen + SLOT)
        }
    }
}

/// CRC32C of `b[..lo]` followed by `b[hi..]`.
pub(crate) fn checksum(b: &[u8], lo: usize, hi: usize) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&b[..lo]), &b[hi..])
}

/// Size a leaf entry takes for `key` and an inline value of `vlen` bytes.
pub(crate) fn leaf_size(klen: usize, vlen: usize) -> usize {
    LEAF_ENTRY + klen + vlen + SLOT
}

/// Whether a leaf key of `klen` bytes sits in the leaf (with its value in
/// an overflow run if need be); longer keys share a run with their value.
pub(crate) fn leaf_key_fits(klen: usize) -> bool {
    leaf_size(klen, OVERFLOW_REF) <= MAX_ENTRY
}

/// Whether a branch separator of `klen` bytes sits in the branch page;
/// longer ones live in an overflow run.
pub(crate) fn branch_key_fits(klen: usize) -> bool {
    BRANCH_ENTRY + klen + SLOT <= MAX_ENTRY
}

/// Size a branch entry takes for a separator of `klen` bytes.
pub(crate) fn branch_size(klen: usize) -> usize {
    BRANCH_ENTRY + if branch_key_fits(klen) { klen } else { OVERFLOW_REF } + SLOT
}

/// The shortest separator for a split between `left` (the last key of the
/// left page) and `right` (the first of the right page): the shortest
/// prefix of `right` above `left`. Every key of the left page is below it
/// and every key of the right page at least it, and short separators keep
/// branch pages wide.
pub(crate) fn separator<'k>(left: &[u8], right: &'k [u8]) -> &'k [u8] {
    let common = left.iter().zip(right).take_while(|(a, b)| a == b).count();
    &right[..(common + 1).min(right.len())]
}

/// Bytewise order of two keys, eight bytes at a time: keys are short, and
/// a call to `memcmp` costs more than the comparison.
#[inline]
pub(crate) fn cmp_keys(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    let n = a.len().min(b.len());
    let mut i = 0;
    while i + 8 <= n {
        let x = u64::from_be_bytes(a[i..i + 8].try_into().unwrap_or_default());
        let y = u64::from_be_bytes(b[i..i + 8].try_into().unwrap_or_default());
        if x != y {
            return x.cmp(&y);
        }
        i += 8;
    }
    a[i..].cmp(&b[i..])
}

/// The first four bytes of `key`, zero-padded, big-endian: comparing two
/// prefixes orders keys correctly except on a tie.
#[inline]
pub(crate) fn key_prefix(key: &[u8]) -> u32 {
    let mut b = [0u8; 4];
    let n = key.len().min(4);
    b[..n].copy_from_slice(&key[..n]);
    u32::from_be_bytes(b)
}

/// Whether a value of `vlen` bytes goes to an overflow run.
pub(crate) fn needs_overflow(klen: usize, vlen: usize) -> bool {
    leaf_size(klen, vlen) > MAX_ENTRY
}

/// Pages an overflow run of `len` value bytes takes. `len` is read from
/// the file, so a corrupt one near `u64::MAX` saturates (a count past
/// any file, which the callers' range checks reject) instead of
/// overflowing.
pub(crate) fn overflow_pages(len: u64) -> u64 {
    len.saturating_add(OVERFLOW_HEADER as u64).div_ceil(PAGE as u64)
}

/// In-place editing of a dirty page. The page was validated by
/// [`Page::new`] when it was read, and every edit keeps it valid.
pub(crate) struct PageMut<'a>(pub(crate) &'a mut [u8]);

impl PageMut<'_> {
    pub(crate) fn init(&mut self, kind: u8, txnid: u64) {
        self.0[..HEADER].fill(0);
        self.0[0] = kind;
        put16(self.0, 4, PAGE as u16);
        put64(self.0, 8, txnid);
    }

    pub(crate) fn view(&self) -> Page<'_> {
        // The page is this writer's, but other processes can write it
        // too: the header is clamped into a shape every method can cut
        // slices with (a page made garbage that way edits into garbage,
        // inside the page).
        let count = (u16_at(self.0, 2) as usize).min((PAGE - HEADER) / SLOT);
        let upper = (u16_at(self.0, 4) as usize).clamp(HEADER + SLOT * count, PAGE);
        Page { b: self.0, count: count as u32, upper: upper as u32 }
    }

    pub(crate) fn set_txnid(&mut self, txnid: u64) {
        put64(self.0, 8, txnid);
    }

    /// Makes room for an entry of `size` bytes (slot excluded) whose key
    /// has the slot prefix `prefix` at index `i`; returns its offset. The
    /// caller checked that it fits, by the sizes the page states: a corrupt
    /// page (entries overlapping, say, so that moving them to a new page
    /// takes more room than they took) is an error here, not a panic.
    fn open_slot(&mut self, i: usize, size: usize, prefix: [u8; 4]) -> Result<usize, Bad> {
        let count = u16_at(self.0, 2) as usize;
        let slots_end = HEADER + SLOT * (count + 1);
        let upper = (u16_at(self.0, 4) as usize)
            .min(PAGE)
            .checked_sub(size)
            .filter(|&u| u >= slots_end && i <= count)
            .ok_or("the page's entries take more room than it has")?;
        let slots = HEADER + SLOT * i;
        self.0.copy_within(slots..HEADER + SLOT * count, slots + SLOT);
        put16(self.0, slots, upper as u16);
        self.0[slots + 2..slots + SLOT].copy_from_slice(&prefix);
        put16(self.0, 2, (count + 1) as u16);
        put16(self.0, 4, upper as u16);
        Ok(upper)
    }

    fn put_ref(&mut self, at: usize, page: u64, len: u64, crc: u32) {
        put64(self.0, at, page);
        put64(self.0, at + 8, len);
        put32(self.0, at + 16, crc);
    }

    /// Inserts a leaf entry for `key` at index `i`. With `Val::Run` and a
    /// non-zero `skip`, the key is in the run (`skip` is its length) and
    /// only the reference is stored.
    pub(crate) fn insert_leaf(&mut self, i: usize, key: &[u8], val: Val<'_>) -> Result<(), Bad> {
        let (word, klen_here, vlen) = match val {
            Val::Inline(v) => (key.len() as u16, key.len(), v.len()),
            Val::Run { skip: 0, .. } => (key.len() as u16 | F_OVERFLOW, key.len(), OVERFLOW_REF),
            Val::Run { .. } => (key.len() as u16 | F_BIG_KEY, 0, OVERFLOW_REF),
        };
        let prefix = key_prefix(key).to_be_bytes();
        let off = self.open_slot(i, LEAF_ENTRY + klen_here + vlen, prefix)?;
        put16(self.0, off, word);
        put16(self.0, off + 2, vlen as u16);
        let k = off + LEAF_ENTRY;
        self.0[k..k + klen_here].copy_from_slice(&key[..klen_here]);
        let v = k + klen_here;
        match val {
            Val::Inline(data) => self.0[v..v + data.len()].copy_from_slice(data),
            Val::Run { page, len, crc, .. } => self.put_ref(v, page, len, crc),
        }
        Ok(())
    }

    /// Replaces the inline value of leaf entry `i` in place when the new
    /// one has the same length; false (nothing changed) otherwise.
    pub(crate) fn overwrite_value(&mut self, i: usize, value: &[u8]) -> bool {
        let view = self.view();
        let Ok((Key::Inline(key), Val::Inline(old))) = view.leaf(i) else { return false };
        if old.len() != value.len() {
            return false;
        }
        let Ok(off) = view.offset(i) else { return false };
        let at = off + LEAF_ENTRY + key.len();
        self.0[at..at + value.len()].copy_from_slice(value);
        true
    }

    /// Inserts a branch entry for `child` at index `i`, with separator
    /// `key`; `run` holds it (page, checksum) when it is too long for the
    /// page.
    pub(crate) fn insert_branch(
        &mut self,
        i: usize,
        child: u64,
        crc: u32,
        key: &[u8],
        run: Option<(u64, u32)>,
    ) -> Result<(), Bad> {
        let here = if run.is_some() { OVERFLOW_REF } else { key.len() };
        let off = self.open_slot(i, BRANCH_ENTRY + here, key_prefix(key).to_be_bytes())?;
        put64(self.0, off, child);
        put32(self.0, off + 8, crc);
        put16(self.0, off + 12, key.len() as u16);
        put16(self.0, off + 14, if run.is_some() { F_BRANCH_RUN } else { 0 });
        let k = off + BRANCH_ENTRY;
        match run {
            Some((page, rcrc)) => self.put_ref(k, page, key.len() as u64, rcrc),
            None => self.0[k..k + key.len()].copy_from_slice(key),
        }
        Ok(())
    }

    /// Points branch entry `i` at `child` with checksum `crc`.
    pub(crate) fn set_child(&mut self, i: usize, child: u64, crc: u32) -> Result<(), Bad> {
        let off = self.view().offset(i)?;
        if off + BRANCH_ENTRY > PAGE {
            return Err("branch entry header past the page end");
        }
        put64(self.0, off, child);
        put32(self.0, off + 8, crc);
        Ok(())
    }

    /// Points the overflow run of entry `i` (its value's, or its key's)
    /// at a copy at `page` with checksum `crc`.
    pub(crate) fn set_run(&mut self, i: usize, page: u64, crc: u32) -> Result<(), Bad> {
        let view = self.view();
        let off = view.offset(i)?;
        let at = if view.is_leaf() {
            match view.leaf(i)? {
                (_, Val::Inline(_)) => return Err("entry has no overflow run"),
                (Key::Run { .. }, _) => off + LEAF_ENTRY,
                (Key::Inline(k), _) => off + LEAF_ENTRY + k.len(),
            }
        } else {
            match view.key(i)? {
                Key::Inline(_) => return Err("entry has no overflow run"),
                Key::Run { .. } => off + BRANCH_ENTRY,
            }
        };
        put64(self.0, at, page);
        put32(self.0, at + 16, crc);
        Ok(())
    }

    /// Removes entry `i`, closing the gap in the entry area.
    pub(crate) fn remove(&mut self, i: usize) -> Result<(), Bad> {
        let view = self.view();
        let size = view.entry_size(i)? - SLOT;
        let off = view.offset(i)?;
        let (count, upper) = (view.count(), view.upper());
        self.0.copy_within(upper..off, upper + size);
        for s in 0..count {
            let at = HEADER + SLOT * s;
            let o = u16_at(self.0, at) as usize;
            if o < off {
                put16(self.0, at, (o + size) as u16);
            }
        }
        let slots = HEADER + SLOT * i;
        self.0.copy_within(slots + SLOT..HEADER + SLOT * count, slots);
        put16(self.0, 2, (count - 1) as u16);
        put16(self.0, 4, (upper + size) as u16);
        Ok(())
    }

    /// Moves entries `from..` of this page, as they are, to the empty page
    /// `to` (overflow runs move with their entries).
    pub(crate) fn move_tail(&mut self, from: usize, to: &mut PageMut<'_>) -> Result<(), Bad> {
        let view = self.view();
        for i in from..view.count() {
            let size = view.entry_size(i)? - SLOT;
            let off = view.offset(i)?;
            let at = to.open_slot(i - from, size, view.raw_prefix(i))?;
            to.0[at..at + size].copy_from_slice(&view.b[off..off + size]);
        }
        for i in (from..view.count()).rev() {
            self.remove(i)?;
        }
        Ok(())
    }

    /// Writes the header of an overflow run of `len` bytes.
    pub(crate) fn init_overflow(&mut self, txnid: u64, len: u64) {
        self.0[..OVERFLOW_HEADER].fill(0);
        self.0[0] = KIND_OVERFLOW;
        put64(self.0, 8, txnid);
        put64(self.0, 16, len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh(kind: u8) -> Vec<u8> {
        let mut b = vec![0u8; PAGE];
        PageMut(&mut b).init(kind, 7);
        b
    }

    #[test]
    fn an_entry_that_does_not_fit_a_corrupt_page_is_an_error() {
        // The header says the entry area starts right after the slots: no
        // room, whatever the caller's own arithmetic concluded.
        let mut b = fresh(KIND_LEAF);
        put16(&mut b, 4, HEADER as u16);
        assert!(PageMut(&mut b).insert_leaf(0, b"key", Val::Inline(b"value")).is_err());
        // An upper past the page end, and a slot index past the entries.
        let mut b = fresh(KIND_LEAF);
        put16(&mut b, 4, u16::MAX);
        PageMut(&mut b).insert_leaf(0, b"a", Val::Inline(b"1")).unwrap();
        assert!(PageMut(&mut b).insert_leaf(5, b"b", Val::Inline(b"2")).is_err());
    }

    #[test]
    fn insert_remove_keeps_order_and_space() {
        let mut b = fresh(KIND_LEAF);
        let mut p = PageMut(&mut b);
        let free0 = p.view().free();
        for (i, k) in ["b", "d", "a", "c"].iter().enumerate() {
            let at = p.view().search(k.as_bytes(), &NoRuns).unwrap().unwrap_err();
            p.insert_leaf(at, k.as_bytes(), Val::Inline(&[i as u8; 3])).unwrap();
        }
        let keys: Vec<_> = (0..4).map(|i| p.view().key(i).unwrap()).collect();
        assert_eq!(keys, [b"a", b"b", b"c", b"d"].map(|k| Key::Inline(&k[..])));
        p.remove(1).unwrap();
        assert_eq!(p.view().leaf(1).unwrap(), (Key::Inline(b"c"), Val::Inline(&[3, 3, 3])));
        for _ in 0..3 {
            p.remove(0).unwrap();
        }
        assert_eq!(p.view().free(), free0);
    }

    proptest::proptest! {
        #[test]
        fn key_order_is_bytewise(a in proptest::collection::vec(0u8..4, 0..20), b in proptest::collection::vec(0u8..4, 0..20)) {
            proptest::prop_assert_eq!(cmp_keys(&a, &b), a.cmp(&b));
            let (pa, pb) = (key_prefix(&a), key_prefix(&b));
            if pa != pb {
                proptest::prop_assert_eq!(pa.cmp(&pb), a.cmp(&b));
            }
        }
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        let mut b = fresh(KIND_LEAF);
        PageMut(&mut b).insert_leaf(0, b"key", Val::Inline(b"value")).unwrap();
        for pos in 0..64 {
            for byte in [0u8, 0x7f, 0xff] {
                let mut c = b.clone();
                c[pos] = byte;
                let Ok(p) = Page::new(&c) else { continue };
                for i in 0..p.count().min(4) {
                    let _ = p.leaf(i);
                    let _ = p.branch(i);
                    let _ = p.entry_size(i);
                }
                let _ = p.search(b"key", &NoRuns);
            }
        }
    }
}
