//! `ShmHashMap<K, V>`: a concurrent hash map shared between processes.
//!
//! - **Table:** open addressing, 32-byte slots: a control word (state,
//!   24-bit hash tag, 22-bit version, inline lengths) and 24 bytes that
//!   hold the key and value inline when they fit, or the offset of an
//!   out-of-line entry block. A probe reads the home cache line, then the
//!   next lines (keys placed by hash) or lines at a stride set by the tag
//!   (keys placed by value).
//! - **Integer keys are placed by value** (their digits summed pick the
//!   home slot, so keys 0, 1, 2... take slots 0, 1, 2..., as Boost's
//!   identity hash places them), so runs of consecutive keys sit in
//!   consecutive slots; the tag still comes from a mixing hash.
//! - **Reads take no lock and write nothing:** a slot is a seqlock (read
//!   the control word, the payload, the control word again), and the
//!   table descriptor is validated by an epoch. No system call, no shared
//!   write, one cache line per probe.
//! - **Writes** take one of 64 robust stripe locks, chosen by the key's
//!   hash, and claim free slots with compare-and-swap. Each write is a
//!   transaction on the stripe's undo log, so a writer killed anywhere is
//!   rolled back by the next locker of its stripe; a reader that meets a
//!   slot a dead writer left busy locks that stripe to trigger the repair.
//! - **Growth** is incremental: past 3/4 load, a second table is
//!   allocated; inserts go there, and every writer first moves a chunk of
//!   slots from the old table (under the migration lock and every stripe,
//!   one round of locks per chunk). Readers look in the new table, then
//!   the old, and never wait for the move. The old table is freed once
//!   every slot has moved.
//! - **Lookups of fixed-size keys and values** (`u64` to `u64`, ...) read
//!   the key's home cache line (two slots) and match both slots at once,
//!   with no branch on which holds the key, so consecutive lookups overlap
//!   their cache misses; [`ShmHashMap::get_many`] prefetches a group of
//!   keys' lines first.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering, fence};

use mmkit_sync::MutexGuard;

use crate::crash;
use crate::error::{Error, Result};
use crate::layout::{HEADER_SIZE, log_bytes};
use crate::registry::{KIND_MAP, Object, sealed::Sealed};
use crate::segment::{Block, Heap, Inner, Txn};
use crate::types::{Bytes, TypeDesc, fnv, hash_bytes};

/// Bytes of a slot.
pub const SLOT_SIZE: u64 = 32;
/// Number of stripe locks per map.
pub const STRIPES: usize = 64;
const STRIPE_BYTES: u64 = 256;
const STRIPE_BASE: u64 = 512;
/// Bytes of a map's header block.
pub const HEADER_BYTES: u64 = STRIPE_BASE + STRIPE_BYTES * STRIPES as u64;
pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"MMKMAP01");

const M_MAGIC: u64 = 0;
/// 1 if keys are placed by value ([`Bytes::BY_VALUE`]), 0 if by hash.
const M_PLACE: u64 = 8;
const M_EPOCH: u64 = 16;
const M_TABLE: u64 = 24;
const M_CAP: u64 = 32;
const M_NEW_TABLE: u64 = 40;
const M_NEW_CAP: u64 = 48;
const M_CURSOR: u64 = 56;
const M_USED: u64 = 64;
/// The old slot a move is publishing, plus one (0: none); see `move_slot`.
const M_MOVE_FROM: u64 = 72;
/// The new slot that move fills.
const M_MOVE_TO: u64 = 80;
/// Resizes started so far: the parity of the current one marks the slots
/// it moves (see [`ROUND_BIT`]).
const M_ROUND: u64 = 88;
/// Not 0 while every key of the table sits in its home line with a
/// placement below the table's size (keys placed by value only): a table
/// grown in place then keeps every key where lookups in the larger table
/// look first, and the resize moves nothing (see `switch_to`). Set when a
/// resize switches tables; cleared, before the key is published, by any
/// write that places a key anywhere else (see `note_place`).
const M_DENSE: u64 = 96;
const M_LOCK: u64 = 128;
const M_LOG: u64 = 160;
const M_LOG_CAP: u64 = 12;
const S_LOCK: u64 = 0;
const S_LEN: u64 = 32;
/// Slots claimed from empty not yet added to the map's `used` count.
const S_USED: u64 = 40;
const S_LOG: u64 = 48;
const S_LOG_CAP: u64 = 8;
const _: () = assert!(M_LOG + log_bytes(M_LOG_CAP) <= STRIPE_BASE);
const _: () = assert!(S_LOG + log_bytes(S_LOG_CAP) <= STRIPE_BYTES);

/// Smallest table, in slots.
const MIN_CAP: u64 = 16;
/// Largest table, in slots (2^40 slots would be 32 TiB).
const MAX_CAP: u64 = 1 << 36;
/// Slots moved per migration step (one round of stripe locks).
const CHUNK: u64 = 1024;
/// Chunks a resize in place scans per round of locks.
const IN_PLACE_CHUNKS: u64 = 4;
/// Slots a resize samples to choose between growing the table in place
/// and moving every key to a new one.
const STAY_SAMPLE: u64 = 64;
/// Old slots hashed (and their new lines prefetched) before they move.
const MOVE_BATCH: usize = 32;
/// Key plus value bytes stored inline.
const INLINE: usize = 24;
/// Largest out-of-line key plus value.
pub const MAX_ENTRY: u64 = 1 << 30;

// ---- control word
const EMPTY: u64 = 0;
const FULL: u64 = 1;
const TOMB: u64 = 2;
const BUSY: u64 = 3;
const MOVED: u64 = 4;
const INLINE_BIT: u64 = 1 << 3;
/// In a moved slot: the parity of the resize that moved it. A table grown
/// in place keeps the slots earlier resizes marked moved; a lookup in the
/// old table of a later resize takes them for tombstones, not for "moved
/// meanwhile, look again".
const ROUND_BIT: u64 = 1 << 14;
const VER_SHIFT: u32 = 18;
const VER_MASK: u64 = (1 << 22) - 1;
const TAG_SHIFT: u32 = 40;
/// The hash tag's bits in a control word.
const TAG_FIELD: u64 = 0xff_ffff << TAG_SHIFT;
/// The control bits a move copies: inline flag and lengths, and the tag.
const MOVE_KEEP: u64 = INLINE_BIT | 0x3ff << 4 | TAG_FIELD;
/// The control bits a lookup of an inline key matches at once: state,
/// inline flag, both lengths and the hash tag (everything but the version).
const MATCH_MASK: u64 = 7 | MOVE_KEEP;
/// Keys whose slots `get_many` requests from memory together.
const PREFETCH_GROUP: usize = 16;

/// Inline pairs [`ShmHashMap::insert_many`] places under one round of
/// locks: long enough to spread the 65 lock operations thin, short enough
/// that other writers wait at most about 0.1 ms.
const BATCH: usize = 512;

/// Cache lines the inline lookup probes before it hands the key to the
/// general path.
const MAX_INLINE_PROBE: u32 = 32;

/// Low bits of a key's hash that place it (see [`home_slot`]); the bits
/// above are the tag. A key placed by value below 2^40 keeps its value
/// here.
const PLACE_BITS: u64 = (1 << TAG_SHIFT) - 1;

/// Odd: folds a key's bits above the placement bits into them.
const FOLD: u64 = 0x9e37_79b9_7f4a_7c15;

/// The hash of a key: [`hash_bytes`], or for keys placed by value (the
/// integer types, see [`Bytes::BY_VALUE`]) the placement value under the
/// tag of `hash_bytes`: the key's low 40 bits, XORed with the top of its
/// high 24 bits times an odd constant, so keys below 2^40 keep their
/// value (keys 0, 1, 2... take slots 0, 1, 2...) and keys that differ
/// only above bit 40 still get different homes.
#[inline(always)]
fn key_hash(kb: &[u8], by_value: bool) -> u64 {
    let mixed = hash_bytes(kb);
    if !by_value || kb.len() > 8 {
        return mixed;
    }
    (mixed & !PLACE_BITS) | placement(kb)
}

/// The placement bits of a key placed by value (at most 8 bytes), with no
/// tag: all that its home slot depends on.
#[inline(always)]
fn placement(kb: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    let n = kb.len().min(8);
    w[..n].copy_from_slice(&kb[..n]);
    placement_of(u64::from_le_bytes(w))
}

/// [`placement`] of a key given as its little-endian bytes in a word.
#[inline(always)]
fn placement_of(key: u64) -> u64 {
    // The product's top 40 bits depend on every bit of the high part.
    let place = key ^ ((key >> TAG_SHIFT).wrapping_mul(FOLD) >> (64 - TAG_SHIFT));
    place & PLACE_BITS
}

/// The home slot of hash `h` in a table of `mask + 1` = 2^b slots. Keys
/// placed by hash: `h & mask`. Keys placed by value: the placement bits
/// cut into b-bit digits and summed (three digits, the whole 40 bits from
/// tables of 2^14 slots up), so a run of consecutive keys takes
/// consecutive slots, also across a multiple of 2^b (key `i` in slot `i`
/// below 2^b), and keys that share their low bits (multiples of 2^s, s <
/// b) get their bits rotated into distinct homes, where the low bits alone
/// would pile them on one slot in 2^s.
#[inline(always)]
fn home_slot(h: u64, mask: u64, by_value: bool) -> u64 {
    if !by_value {
        return h & mask;
    }
    let b = mask.wrapping_add(1).trailing_zeros() & 63;
    let v = h & PLACE_BITS;
    v.wrapping_add(v >> b).wrapping_add(v >> (2 * b).min(63)) & mask
}

/// The probe sequence of one hash in one table: its home slot and step,
/// computed once for the whole probe.
#[derive(Clone, Copy)]
struct ProbeSeq {
    home: u64,
    /// Slots from one probed line to the next: the next line (2) for keys
    /// placed by hash, whose neighbours are other keys' homes at random;
    /// for keys placed by value an odd number of lines set by the tag, so
    /// a key whose home lies in a run of consecutive keys leaves the run
    /// at once, where a step to the next line would walk it.
    step: u64,
    mask: u64,
}

impl ProbeSeq {
    /// The probe of hash `h` in a table of `mask + 1` slots (a power of
    /// two, at least 2).
    #[inline(always)]
    fn new(h: u64, mask: u64, by_value: bool) -> ProbeSeq {
        let step = if by_value { ((h >> (TAG_SHIFT - 1)) | 1) << 1 } else { 2 };
        ProbeSeq { home: home_slot(h, mask, by_value), step, mask }
    }

    /// The first slot of line `j`: the home line, then a line every
    /// `step` slots. The step is an odd number of lines, so the sequence
    /// visits every line once.
    #[inline(always)]
    fn line(self, j: u64) -> u64 {
        (self.home & !1).wrapping_add(j.wrapping_mul(self.step)) & self.mask
    }

    /// Slot `k`: the two slots of line `k / 2`, the home slot's parity
    /// first. A permutation of the table for `k` in `0..=mask`.
    #[inline(always)]
    fn slot(self, k: u64) -> u64 {
        self.line(k >> 1) | ((k ^ self.home) & 1 & self.mask)
    }
}

/// Masks of the bytes a key of `len` bytes takes in each inline word.
#[inline(always)]
fn inline_masks(len: usize) -> [u64; 3] {
    let mut masks = [0u64; 3];
    for (i, m) in masks.iter_mut().enumerate() {
        let bytes = len.saturating_sub(i * 8).min(8);
        *m = if bytes == 8 { u64::MAX } else { (1u64 << (bytes * 8)) - 1 };
    }
    masks
}

/// Asks the CPU to bring the cache line at `p` in. A hint: it never
/// faults and reads nothing the program sees, whatever the address.
#[inline(always)]
fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `prefetcht0` has no architectural effect (it cannot fault,
    // even on an unmapped address); SSE is part of the x86_64 baseline.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[inline]
fn state(c: u64) -> u64 {
    c & 7
}
#[inline]
fn tag_of(c: u64) -> u64 {
    c >> TAG_SHIFT
}
#[inline]
fn tag_of_hash(h: u64) -> u64 {
    h >> TAG_SHIFT
}
#[inline]
fn stripe_of_tag(tag: u64) -> usize {
    (tag as usize) % STRIPES
}
#[inline]
fn bump(c: u64, new_state: u64) -> u64 {
    let ver = ((c >> VER_SHIFT) + 1) & VER_MASK;
    (c & !(7 | (VER_MASK << VER_SHIFT))) | new_state | ver << VER_SHIFT
}
#[inline]
fn inline_lens(c: u64) -> (usize, usize) {
    (((c >> 4) & 31) as usize, ((c >> 9) & 31) as usize)
}
/// A control word for a full slot: `old` gives the version to bump.
fn full_ctrl(old: u64, tag: u64, inline: Option<(usize, usize)>) -> u64 {
    let ver = ((old >> VER_SHIFT) + 1) & VER_MASK;
    let mut c = FULL | ver << VER_SHIFT | tag << TAG_SHIFT;
    if let Some((k, v)) = inline {
        c |= INLINE_BIT | (k as u64) << 4 | (v as u64) << 9;
    }
    c
}
/// The busy control word a writer of `stripe` puts in a slot it holds.
fn busy_ctrl(old: u64, stripe: usize) -> u64 {
    (old & (VER_MASK << VER_SHIFT)) | BUSY | (stripe as u64) << TAG_SHIFT
}
/// The control word marking full slot `c` moved by resize `round`.
fn moved_ctrl(c: u64, round: u64) -> u64 {
    (bump(c, MOVED) & !ROUND_BIT) | ((round & 1) * ROUND_BIT)
}
/// Whether `c` marks a slot moved by resize `round` (not by an earlier one).
fn moved_by(c: u64, round: u64) -> bool {
    state(c) == MOVED && (c & ROUND_BIT != 0) == (round & 1 == 1)
}

/// The table descriptor, as a reader or writer saw it.
#[derive(Clone, Copy, Debug)]
struct Desc {
    epoch: u64,
    table: u64,
    cap: u64,
    new_table: u64,
    new_cap: u64,
    /// The resize under way (or the last one), see [`M_ROUND`].
    round: u64,
    /// Slots claimed in the insert table (a hint: see [`M_USED`]).
    used: u64,
}

impl Desc {
    fn migrating(&self) -> bool {
        self.new_table != 0
    }

    /// A resize whose new table is the old one grown in place: the old
    /// table's slots are the first `cap` slots of the new one.
    fn in_place(&self) -> bool {
        self.migrating() && self.new_table == self.table
    }

    /// The tables holding keys: both during a resize, but a table grown in
    /// place only once (as the new table, which holds the old one).
    fn tables(&self) -> impl Iterator<Item = (u64, u64)> {
        let old = (!self.in_place()).then_some((self.table, self.cap));
        old.into_iter().chain(self.migrating().then_some((self.new_table, self.new_cap)))
    }
}

/// What a lock-free probe found.
enum Probe<T> {
    Found(T),
    Absent,
    /// The key was moved to the new table meanwhile: look again.
    Moved,
    /// A slot is held by a writer of this stripe.
    Busy(usize),
    /// A slot changed while we read it.
    Torn,
}

/// A key prepared for probing: its hash, tag, and (when it fits inline)
/// its bytes as masked words, so matching an inline slot is three word
/// comparisons.
struct Query<'a> {
    key: &'a [u8],
    hash: u64,
    words: [u64; 3],
    masks: [u64; 3],
}

impl<'a> Query<'a> {
    /// `fixed`: the key type's size, if it has one (the copy into words
    /// then has a constant length instead of a call to `memcpy`).
    #[inline(always)]
    fn with_hash(key: &'a [u8], hash: u64, fixed: Option<usize>) -> Query<'a> {
        let mut words = [0u64; 3];
        let mut masks = [0u64; 3];
        if key.len() <= INLINE {
            words = pack_words(key, &[], fixed.map(|k| (k, 0)));
            masks = inline_masks(key.len());
        }
        Query { key, hash, words, masks }
    }

    /// Whether inline payload `w` (whose key length matched) holds us.
    #[inline(always)]
    fn matches_inline(&self, w: &[u64; 3]) -> bool {
        ((w[0] & self.masks[0]) ^ self.words[0])
            | ((w[1] & self.masks[1]) ^ self.words[1])
            | ((w[2] & self.masks[2]) ^ self.words[2])
            == 0
    }
}

/// A slot found by a writer, with its control word.
#[derive(Clone, Copy)]
struct Hit {
    slot: u64,
    ctrl: u64,
    words: [u64; 3],
}

/// A concurrent hash map shared between processes; keys and values are
/// plain data ([`ShmType`](crate::ShmType)), `str` or `[u8]`.
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let heap = mmkit_heap::Heap::create(dir.path().join("h"), 1 << 20)?;
/// let prices = heap.map::<str, f64>("prices")?;
/// prices.insert("apple", &1.25)?;
/// assert_eq!(prices.get("apple")?, Some(1.25));
/// let ids = heap.map::<u64, [u8]>("blobs")?;
/// ids.insert(&7, b"seven")?;
/// assert_eq!(ids.remove(&7)?, Some(b"seven".to_vec()));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct ShmHashMap<K: Bytes + ?Sized, V: Bytes + ?Sized> {
    heap: Heap,
    off: u64,
    /// The address of the header, checked in bounds when the handle was
    /// made (the mapping never moves or shrinks while `heap` lives). Never
    /// changes; atomic only so the handle stays `Send` and `Sync` without
    /// an `unsafe impl`.
    hdr: AtomicPtr<u8>,
    /// The table the inline lookup last checked.
    cache: DescCache,
    name: String,
    _t: PhantomData<fn(&K, &V)>,
}

/// The table of the last descriptor the inline lookup checked, keyed by
/// the header's epoch: while the epoch stays the same, so do the table
/// and its size (every descriptor change moves the epoch on), and a
/// lookup skips reading and checking them again (a third of its
/// instructions, which is what limits how many lookups the CPU overlaps).
///
/// The entry lives in process memory: an epoch, and the table's address
/// with the log2 of its slot count in the low 6 bits (tables are 64-byte
/// aligned), one word, so a lookup never pairs one table's address with
/// another's size, whatever the fillers did: every table the entry ever
/// held passed `slots()` whole, and the mapping only grows, so no read
/// through the entry leaves the mapping. The epoch says which table:
/// fillers take turns through `lock`, never store an epoch older than
/// the one cached (a filler that read the header before a resize and
/// ran after the next filler must not bring the old table back), and
/// first set `epoch` to [`NO_EPOCH`] (odd, so no lookup takes it), then
/// the table, then the epoch. A lookup reads `epoch`, the table, and
/// `epoch` again: both reads equal means no filler changed the table in
/// between, or only fillers for that same epoch, hence that same table
/// (epochs stored only grow). Only two things can make a lookup use a
/// table that is no longer the map's (wrong answers, never an access
/// outside the mapping): a process writing the shared header's epoch
/// back, or a handle kept to a removed map whose header block
/// `check --repair` freed and a new map reused, once the new map's epoch
/// climbs back to the cached one.
struct DescCache {
    lock: AtomicBool,
    epoch: AtomicU64,
    /// The table's address, tagged with log2 of its slot count.
    table: AtomicPtr<u8>,
}

/// The epoch of an empty or half-filled [`DescCache`].
const NO_EPOCH: u64 = u64::MAX;

impl Default for DescCache {
    fn default() -> Self {
        DescCache {
            lock: AtomicBool::new(false),
            epoch: AtomicU64::new(NO_EPOCH),
            table: AtomicPtr::default(),
        }
    }
}

impl DescCache {
    /// The epoch, slots and mask cached, if the entry is whole.
    #[inline(always)]
    fn get(&self) -> Option<(u64, *mut u8, u64)> {
        let before = self.epoch.load(Ordering::Acquire);
        let t = self.table.load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        let after = self.epoch.load(Ordering::Relaxed);
        let (p, mask) = (t.map_addr(|a| a & !63), (1u64 << (t.addr() & 63)) - 1);
        // Odd: `NO_EPOCH`, an entry never filled or being filled.
        (before == after && before & 1 == 0).then_some((before, p, mask))
    }

    /// The epoch cached (`NO_EPOCH` when none).
    fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Relaxed)
    }

    /// Caches `slots` (64-byte aligned) and its slot count `cap` (a power
    /// of two) for `epoch` (even), unless another thread is filling the
    /// entry right now or it holds a newer epoch.
    fn set(&self, epoch: u64, slots: *mut u8, cap: u64) {
        if self.lock.swap(true, Ordering::Acquire) {
            return;
        }
        let cached = self.epoch.load(Ordering::Relaxed);
        if cached == NO_EPOCH || cached < epoch {
            self.epoch.store(NO_EPOCH, Ordering::Relaxed);
            fence(Ordering::Release);
            self.table.store(slots.map_addr(|a| a | cap.trailing_zeros() as usize), Ordering::Relaxed);
            self.epoch.store(epoch, Ordering::Release);
        }
        self.lock.store(false, Ordering::Release);
    }
}

impl<K: Bytes + ?Sized, V: Bytes + ?Sized> std::fmt::Debug for ShmHashMap<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShmHashMap").field("name", &self.name).field("offset", &self.off).finish()
    }
}

impl<K: Bytes + ?Sized, V: Bytes + ?Sized> Sealed for ShmHashMap<K, V> {}

impl<K: Bytes + ?Sized, V: Bytes + ?Sized> Object for ShmHashMap<K, V> {
    const KIND: u64 = KIND_MAP;
    fn desc() -> TypeDesc {
        let (k, v) = (K::bytes_desc(), V::bytes_desc());
        TypeDesc {
            name: std::any::type_name::<Self>(),
            size: k.size,
            align: v.size,
            fingerprint: fnv(fnv(k.fingerprint, &v.fingerprint.to_le_bytes()), b"map"),
        }
    }
    fn header_layout() -> (u64, u64) {
        (HEADER_BYTES, 64)
    }
    fn attach(heap: &Heap, off: u64, name: &str) -> Result<Self> {
        let hdr = AtomicPtr::new(heap.inner.ptr(off, HEADER_BYTES)?);
        let cache = DescCache::default();
        let m = ShmHashMap { heap: heap.clone(), off, hdr, cache, name: name.to_string(), _t: PhantomData };
        m.check_magic()?;
        m.check_placement()?;
        Ok(m)
    }
}

impl Heap {
    /// The map named `name`, created empty if it does not exist.
    pub fn map<K: Bytes + ?Sized, V: Bytes + ?Sized>(&self, name: &str) -> Result<ShmHashMap<K, V>> {
        self.map_with_capacity(name, 0)
    }

    /// The map named `name`, created with room for `n` entries before its
    /// first resize if it does not exist.
    pub fn map_with_capacity<K: Bytes + ?Sized, V: Bytes + ?Sized>(
        &self,
        name: &str,
        n: usize,
    ) -> Result<ShmHashMap<K, V>> {
        let cap = cap_for(n as u64)?;
        self.object_or_init::<ShmHashMap<K, V>>(name, |heap, off| {
            let inner = &heap.inner;
            let table = inner.alloc_zeroed(cap * SLOT_SIZE, 64)?;
            inner.zero(off, HEADER_BYTES)?;
            inner.store(off + M_TABLE, table)?;
            inner.store(off + M_CAP, cap)?;
            inner.store(off + M_PLACE, u64::from(K::BY_VALUE))?;
            inner.store(off + M_MAGIC, MAGIC)
        })
    }
}

/// Whether a table of `cap` slots, `used` of them claimed, takes `more`
/// keys and stays under 3/4 used (the load that starts a resize).
fn room_for(used: u64, more: u64, cap: u64) -> bool {
    used.saturating_add(more).saturating_mul(4) < cap.saturating_mul(3)
}

/// Slots for `n` entries at most 3/4 full.
fn cap_for(n: u64) -> Result<u64> {
    let want = n.saturating_mul(4).div_ceil(3).max(MIN_CAP);
    match want.checked_next_power_of_two() {
        Some(c) if c <= MAX_CAP => Ok(c),
        _ => Err(Error::Invalid { op: "map capacity", reason: format!("{n} entries is too many") }),
    }
}

/// Slots of the table a resize moves `live` keys of a `cap`-slot table
/// to, with room for `extra` more (`reserve`). Every write during the
/// migration first moves a chunk of the old table, so up to one key per
/// chunk arrives before the last move: a table shrinking after mass
/// removals must hold those too, not only the keys left. `force`: at
/// least double (the table ran out of free slots).
fn resize_cap(live: u64, extra: u64, cap: u64, force: bool) -> Result<u64> {
    let during = cap.div_ceil(CHUNK);
    let keys = live.saturating_add(extra).saturating_add(during);
    let least = if force { cap.saturating_mul(2) } else { 0 };
    Ok(cap_for(keys.saturating_mul(3) / 2 + 1)?.max(least))
}

/// Key and value bytes laid out for storage.
#[derive(Clone, Copy)]
struct Encoded<'a> {
    key: &'a [u8],
    value: &'a [u8],
    hash: u64,
    /// Key then value as slot payload words, when they fit in a slot.
    words: [u64; 3],
}

impl<'a> Encoded<'a> {
    /// `fixed`: the key and value types' sizes, if both have one.
    #[inline(always)]
    fn new(key: &'a [u8], value: &'a [u8], hash: u64, fixed: Option<(usize, usize)>) -> Result<Encoded<'a>> {
        if (key.len() + value.len()) as u64 > MAX_ENTRY || key.len() > u32::MAX as usize {
            return Err(Error::Invalid { op: "map insert", reason: "key and value exceed 1 GiB".into() });
        }
        let words = if key.len() + value.len() <= INLINE { pack_words(key, value, fixed) } else { [0; 3] };
        Ok(Encoded { key, value, hash, words })
    }

    fn inline(&self) -> Option<(usize, usize)> {
        (self.key.len() + self.value.len() <= INLINE).then_some((self.key.len(), self.value.len()))
    }

    /// Bytes of the out-of-line block holding key and value.
    fn entry_len(&self) -> u64 {
        ((self.key.len() + self.value.len()) as u64).max(1)
    }
}

/// Key then value (at most 24 bytes together) as payload words. With
/// `fixed` sizes that match, the copies have constant lengths: a
/// variable-length copy calls `memcpy`, and reading its bytes back as
/// words stalls the CPU's store forwarding, on every insert.
#[inline(always)]
fn pack_words(key: &[u8], value: &[u8], fixed: Option<(usize, usize)>) -> [u64; 3] {
    let mut b = [0u8; INLINE];
    match fixed {
        Some((ks, vs)) if key.len() == ks && value.len() == vs && ks + vs <= INLINE => {
            b[..ks].copy_from_slice(&key[..ks]);
            b[ks..ks + vs].copy_from_slice(&value[..vs]);
        }
        _ => {
            b[..key.len()].copy_from_slice(key);
            b[key.len()..key.len() + value.len()].copy_from_slice(value);
        }
    }
    words_of(&b)
}

/// The value of an inline slot; `None` if the lengths are impossible.
#[inline(always)]
fn decode_inline<V: Bytes + ?Sized>(words: [u64; 3], c: u64) -> Option<V::Owned> {
    let (kl, vl) = inline_lens(c);
    if kl + vl > INLINE {
        return None;
    }
    let b = bytes_of_words(&words);
    V::decode(&b[kl..kl + vl])
}

#[inline]
fn words_of(b: &[u8; INLINE]) -> [u64; 3] {
    let w = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
    [w(0), w(1), w(2)]
}

#[inline]
fn bytes_of_words(w: &[u64; 3]) -> [u8; INLINE] {
    let mut b = [0u8; INLINE];
    for (i, x) in w.iter().enumerate() {
        b[i * 8..i * 8 + 8].copy_from_slice(&x.to_le_bytes());
    }
    b
}

impl<K: Bytes + ?Sized, V: Bytes + ?Sized> ShmHashMap<K, V> {
    /// Key and value sizes when both are fixed and fit in a slot together:
    /// such maps get the inline lookup path.
    const FIXED: Option<(usize, usize)> = match (K::SIZE, V::SIZE) {
        (Some(k), Some(v)) if k + v <= INLINE => Some((k, v)),
        _ => None,
    };

    /// The hash of key bytes `kb` in this map (see [`key_hash`]).
    #[inline(always)]
    fn hash(kb: &[u8]) -> u64 {
        key_hash(kb, K::BY_VALUE)
    }

    /// Key bytes `kb` prepared for probing this map.
    #[inline(always)]
    fn query(kb: &[u8]) -> Query<'_> {
        Self::query_with(kb, Self::hash(kb))
    }

    /// [`query`](Self::query) for a key whose hash `h` is known.
    #[inline(always)]
    fn query_with(kb: &[u8], h: u64) -> Query<'_> {
        Query::with_hash(kb, h, K::SIZE)
    }

    /// A pair to insert into this map.
    #[inline(always)]
    fn encode<'a>(kb: &'a [u8], vb: &'a [u8]) -> Result<Encoded<'a>> {
        Encoded::new(kb, vb, Self::hash(kb), Self::FIXED)
    }

    /// The address of the home line of hash `h` in the table of `cap` slots
    /// at `p`, to prefetch (only a hint: never dereferenced here).
    #[inline(always)]
    fn home_line(p: *mut u8, h: u64, cap: u64) -> *const u8 {
        p.wrapping_add((ProbeSeq::new(h, cap - 1, K::BY_VALUE).line(0) * SLOT_SIZE) as usize)
    }

    fn inner(&self) -> &Inner {
        &self.heap.inner
    }

    #[inline]
    fn check_magic(&self) -> Result<()> {
        if self.inner().block(self.off, 8)?.word(M_MAGIC).load(Ordering::Acquire) != MAGIC {
            return Err(self.removed());
        }
        Ok(())
    }

    /// Refuses a map whose keys are placed another way than `K`'s: the
    /// registry checked `K`'s type, so only a damaged header differs.
    fn check_placement(&self) -> Result<()> {
        let place = self.word(M_PLACE)?.load(Ordering::Relaxed);
        if place != u64::from(K::BY_VALUE) {
            let what = format!(
                "map {:?}: placement word {place}, its key type needs {}",
                self.name,
                u64::from(K::BY_VALUE)
            );
            return Err(self.inner().corrupt(what));
        }
        Ok(())
    }

    #[cold]
    fn removed(&self) -> Error {
        Error::Removed { name: self.name.clone() }
    }

    /// The name the map was found under.
    pub fn name(&self) -> &str {
        &self.name
    }

    #[inline]
    fn word(&self, off: u64) -> Result<&AtomicU64> {
        self.inner().atomic(self.off + off)
    }

    #[inline]
    fn read_desc(&self) -> Result<Desc> {
        desc_at(self.inner(), self.off)
    }

    /// A pointer to `cap` slots at `table`, checked.
    #[inline]
    fn slots(&self, table: u64, cap: u64) -> Result<*mut u8> {
        // One branch: a power of two from 1 to MAX_CAP, a slot-aligned
        // table past the header.
        let bad = (cap.wrapping_sub(1) & cap) | (cap.wrapping_sub(1) & !(MAX_CAP - 1)) | (table % SLOT_SIZE);
        if bad != 0 || table < HEADER_SIZE {
            return Err(self.inner().corrupt(format!("map {:?}: table {table} of {cap} slots", self.name)));
        }
        self.inner().ptr(table, cap * SLOT_SIZE)
    }

    /// Word `w` of slot `i`.
    #[inline]
    fn slot_word(p: *mut u8, i: u64, w: u64) -> &'static AtomicU64 {
        // SAFETY: callers pass `p` from `slots(table, cap)` (directly or
        // through `DescCache`, which holds an address and its `cap` in one
        // word, only ever pairs that `slots` checked together) with
        // `i < cap` and `w < 4`, or a map header's checked address (`hdr`,
        // `ptr(off, n)`) with `i = 0` and `8 * w < n`. So the word lies
        // inside a checked, 8-aligned range of a mapping that never moves
        // or shrinks and outlives the map handle. The 'static lifetime
        // never escapes the calling method, which borrows the heap. These
        // words are only accessed atomically.
        unsafe { AtomicU64::from_ptr(p.add((i * SLOT_SIZE + w * 8) as usize).cast()) }
    }

    // ------------------------------------------------------------- reads

    /// A copy of the value for `key`. Takes no lock and writes nothing to
    /// shared memory, unless it meets the leftovers of a dead writer.
    #[inline]
    pub fn get(&self, key: &K) -> Result<Option<V::Owned>> {
        let kb = key.as_bytes();
        // Keys placed by value are matched whole, without their tag: the
        // inline path needs the full hash only past the home line.
        let h = if K::BY_VALUE { placement(kb) } else { Self::hash(kb) };
        if let Some(found) = Self::FIXED.and_then(|(ks, vs)| self.get_inline(kb, h, ks, vs)) {
            return Ok(found);
        }
        self.get_general(key)
    }

    /// Copies of the values of `keys`, in order. The same as calling
    /// [`get`](Self::get) for each, but the slots of a group of keys are
    /// requested from memory together, so their cache misses overlap
    /// instead of following one another: several times faster than `get`
    /// on a table much larger than the CPU's caches.
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let heap = mmkit_heap::Heap::create(dir.path().join("h"), 1 << 20)?;
    /// let squares = heap.map::<u64, u64>("squares")?;
    /// for k in 0..100 {
    ///     squares.insert(&k, &(k * k))?;
    /// }
    /// assert_eq!(squares.get_many(&[3, 200, 9])?, [Some(9), None, Some(81)]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get_many<Q: std::borrow::Borrow<K>>(&self, keys: &[Q]) -> Result<Vec<Option<V::Owned>>> {
        let mut out = Vec::with_capacity(keys.len());
        // Software pipelining: the lines of the next group are requested
        // before the keys of this one are looked up.
        let hash_group = |g: &[Q], hs: &mut [u64; PREFETCH_GROUP]| {
            for (h, k) in hs.iter_mut().zip(g) {
                *h = Self::hash(k.borrow().as_bytes());
            }
        };
        let mut groups = keys.chunks(PREFETCH_GROUP).peekable();
        let (mut hashes, mut next) = ([0u64; PREFETCH_GROUP], [0u64; PREFETCH_GROUP]);
        if let Some(first) = groups.peek() {
            hash_group(first, &mut next);
            self.prefetch_slots(&next[..first.len()])?;
        }
        while let Some(group) = groups.next() {
            std::mem::swap(&mut hashes, &mut next);
            if let Some(after) = groups.peek() {
                hash_group(after, &mut next);
                self.prefetch_slots(&next[..after.len()])?;
            }
            for (&h, k) in hashes.iter().zip(group) {
                let kb = k.borrow().as_bytes();
                if let Some(found) = Self::FIXED.and_then(|(ks, vs)| self.get_inline(kb, h, ks, vs)) {
                    out.push(found);
                } else {
                    out.push(self.get_general(k.borrow())?);
                }
            }
        }
        Ok(out)
    }

    /// Asks the CPU to load the home cache line of every hash of `hashes` in
    /// the table(s) lookups will probe. Only a hint: a table that changes
    /// meanwhile costs a miss, never a wrong answer.
    fn prefetch_slots(&self, hashes: &[u64]) -> Result<()> {
        let d = self.read_desc()?;
        for (table, cap) in d.tables() {
            let Ok(p) = self.slots(table, cap) else { continue };
            for h in hashes {
                prefetch(Self::home_line(p, *h, cap));
            }
        }
        Ok(())
    }

    /// The lookup of fixed-size keys and values stored inline, while no
    /// resize runs. Probes a cache line at a time: both slots of the line
    /// are read and matched without a branch on which of them holds the
    /// key, so lookups that follow one another overlap their cache misses.
    /// `None` sends the caller to the general path: a resize, a writer at
    /// work, a torn read, a removed map.
    #[inline(always)]
    fn get_inline(&self, kb: &[u8], h: u64, ks: usize, vs: usize) -> Option<Option<V::Owned>> {
        if kb.len() != ks {
            return None;
        }
        let word = |o: u64| Self::slot_word(self.hdr.load(Ordering::Relaxed), 0, o / 8);
        // The table of the cached epoch, without reading the header's epoch
        // first: epochs only grow, so a header still at that epoch once the
        // slot is read (the check below) was at it all along, and a cache
        // left behind by a newer descriptor fails that check (the general
        // path then fills the cache again).
        let (e, p, mask) = match self.cache.get() {
            Some(cached) => cached,
            None => self.fill_cache()?,
        };
        let mut key = [0u8; INLINE];
        key[..ks].copy_from_slice(kb);
        let (kw, km) = (words_of(&key), inline_masks(ks));
        // Keys placed by value are compared whole, so their tag is not
        // matched (`h` may hold their placement alone, see `get`).
        let (match_mask, tag) =
            if K::BY_VALUE { (MATCH_MASK & !TAG_FIELD, 0) } else { (MATCH_MASK, tag_of_hash(h)) };
        let expect = FULL | INLINE_BIT | (ks as u64) << 4 | (vs as u64) << 9 | tag << TAG_SHIFT;
        // Only the payload words the key and value use (a constant): the
        // others are masked out anyway.
        let used = (ks + vs).div_ceil(8) as u64;
        let read = |i: u64| {
            let c = Self::slot_word(p, i, 0).load(Ordering::Acquire);
            let w = |k: u64| if k <= used { Self::slot_word(p, i, k).load(Ordering::Relaxed) } else { 0 };
            (c, [w(1), w(2), w(3)])
        };
        // `&`, not `&&`, and selects, not branches, on which slot holds
        // the key: a branch that depends on the missing line mispredicts
        // half the time and throws away the lookups that follow.
        let hit = |c: u64, w: &[u64; 3]| {
            ((c & match_mask) == expect)
                & (((w[0] ^ kw[0]) & km[0]) | ((w[1] ^ kw[1]) & km[1]) | ((w[2] ^ kw[2]) & km[2]) == 0)
        };
        let pick = |one: bool, a: u64, b: u64| {
            let m = (one as u64).wrapping_neg();
            (a & !m) | (b & m)
        };
        // A constant bound (longer probes, and small tables probed round
        // more than once, go to the general path): no count to compute.
        let mut probe = ProbeSeq::new(h, mask, K::BY_VALUE);
        let mut line = probe.line(0);
        for j in 0..MAX_INLINE_PROBE {
            let ((c0, w0), (c1, w1)) = (read(line), read(line + 1));
            let (hit0, hit1) = (hit(c0, &w0), hit(c1, &w1));
            // One branch on "either slot": the compiler splits `hit0 |
            // hit1` into a branch per slot unless the value is opaque to
            // it, and the per-slot branch mispredicts for every key in its
            // line's other slot (a fifth of them), while this one is
            // predicted right for every key that is there. Measured: 6%
            // more lookups per second.
            if std::hint::black_box(hit0 | hit1) {
                let words = [pick(hit1, w0[0], w1[0]), pick(hit1, w0[1], w1[1]), pick(hit1, w0[2], w1[2])];
                let value = V::decode(&bytes_of_words(&words)[ks..ks + vs])?;
                fence(Ordering::Acquire);
                // Both control words again (no address to compute from
                // which slot matched): a write to either line slot meanwhile
                // sends the key to the general path.
                let again = (Self::slot_word(p, line, 0).load(Ordering::Relaxed) ^ c0)
                    | (Self::slot_word(p, line + 1, 0).load(Ordering::Relaxed) ^ c1);
                let stable = again == 0 && word(M_EPOCH).load(Ordering::Relaxed) == e;
                return stable.then_some(Some(value));
            }
            // A writer may be updating our key in a busy slot.
            let (s0, s1) = (state(c0), state(c1));
            if s0 == BUSY || s1 == BUSY {
                return None;
            }
            // The probe sequence visits both slots of a line before the
            // next line, and nothing is stored past an empty slot.
            if s0 == EMPTY || s1 == EMPTY {
                fence(Ordering::Acquire);
                return (word(M_EPOCH).load(Ordering::Relaxed) == e).then_some(None);
            }
            if K::BY_VALUE && j == 0 {
                // The stride past the home line comes from the tag.
                probe = ProbeSeq::new(Self::hash(kb), mask, true);
            }
            line = line.wrapping_add(probe.step) & mask;
        }
        None
    }

    /// The header's epoch and the table of its descriptor, checked and
    /// cached (see [`check_desc`](Self::check_desc)).
    #[inline(never)]
    fn fill_cache(&self) -> Option<(u64, *mut u8, u64)> {
        let e = Self::slot_word(self.hdr.load(Ordering::Relaxed), 0, M_EPOCH / 8).load(Ordering::Acquire);
        self.check_desc(e).map(|(p, mask)| (e, p, mask))
    }

    /// The table of the descriptor read under `epoch`, checked, and cached
    /// for the next lookups; `None` for the general path (a resize, a
    /// descriptor being changed, a removed or corrupt map).
    fn check_desc(&self, e: u64) -> Option<(*mut u8, u64)> {
        let word = |o: u64| Self::slot_word(self.hdr.load(Ordering::Relaxed), 0, o / 8);
        let magic = word(M_MAGIC).load(Ordering::Relaxed);
        let (table, cap) = (word(M_TABLE).load(Ordering::Relaxed), word(M_CAP).load(Ordering::Relaxed));
        let migrating = word(M_NEW_TABLE).load(Ordering::Relaxed) != 0;
        // The inline path reads two slots per line, and the cache keeps
        // the size in the table address's low 6 bits: a hostile size or
        // alignment goes to the general path.
        if e & 1 != 0 || magic != MAGIC || migrating || cap < 2 || table % 64 != 0 {
            return None;
        }
        let p = self.slots(table, cap).ok()?;
        fence(Ordering::Acquire);
        // Only a descriptor that stayed whole while it was read.
        if word(M_EPOCH).load(Ordering::Relaxed) != e {
            return None;
        }
        self.cache.set(e, p, cap);
        Some((p, cap - 1))
    }

    /// Every lookup the inline path does not serve.
    #[inline(never)]
    fn get_general(&self, key: &K) -> Result<Option<V::Owned>> {
        let q = Self::query(key.as_bytes());
        let hdr = self.inner().ptr(self.off, 128)?;
        let word = |o: u64| Self::slot_word(hdr, 0, o / 8);
        if word(M_MAGIC).load(Ordering::Relaxed) != MAGIC {
            return Err(Error::Removed { name: self.name.clone() });
        }
        let epoch = word(M_EPOCH);
        // The inline path's cache may be behind a descriptor change: bring
        // it up to date for the lookups after this one.
        if Self::FIXED.is_some() && self.cache.epoch() != epoch.load(Ordering::Relaxed) {
            let _ = self.fill_cache();
        }
        let mut retries = 0u32;
        loop {
            let e = epoch.load(Ordering::Acquire);
            if retries > 0 && word(M_MAGIC).load(Ordering::Relaxed) != MAGIC {
                return Err(Error::Removed { name: self.name.clone() });
            }
            let d = Desc {
                epoch: e,
                table: word(M_TABLE).load(Ordering::Relaxed),
                cap: word(M_CAP).load(Ordering::Relaxed),
                new_table: word(M_NEW_TABLE).load(Ordering::Relaxed),
                new_cap: word(M_NEW_CAP).load(Ordering::Relaxed),
                round: word(M_ROUND).load(Ordering::Relaxed),
                used: 0,
            };
            let probed = if e & 1 == 1 {
                Ok(Probe::Torn)
            } else if d.migrating() {
                match self.probe(d.new_table, d.new_cap, &q, None) {
                    Ok(Probe::Absent) => match self.probe(d.table, d.cap, &q, Some(d.round)) {
                        // Moved to the new table after the first probe
                        // passed there (then it is there now), or before
                        // and removed since: the new table answers. Going
                        // round again would meet the same mark until the
                        // resize ends, which only writes move on.
                        Ok(Probe::Moved) => self.probe(d.new_table, d.new_cap, &q, None),
                        other => other,
                    },
                    other => other,
                }
            } else {
                self.probe(d.table, d.cap, &q, None)
            };
            let outcome = match probed {
                Ok(o) => o,
                // A descriptor read while a resize changed it: the epoch
                // tells; only a stable bad descriptor is an error.
                Err(err) if err.is_corrupt() && epoch.load(Ordering::Acquire) != e => Probe::Torn,
                Err(err) => return Err(err),
            };
            let value = match outcome {
                Probe::Found(v) => Some(v),
                Probe::Absent => None,
                Probe::Moved | Probe::Torn => {
                    retries += 1;
                    self.back_off(retries, None, e)?;
                    continue;
                }
                Probe::Busy(stripe) => {
                    retries += 1;
                    self.back_off(retries, Some(stripe), e)?;
                    continue;
                }
            };
            fence(Ordering::Acquire);
            if epoch.load(Ordering::Relaxed) != e {
                retries += 1;
                continue;
            }
            return Ok(value);
        }
    }

    /// True if `key` is in the map.
    pub fn contains_key(&self, key: &K) -> Result<bool> {
        Ok(self.get(key)?.is_some())
    }

    /// Spins, then yields, then repairs: a slot or descriptor that stays
    /// busy belongs to a dead writer, whose stripe (or migration) lock
    /// rolls it back when taken.
    #[cold]
    fn back_off(&self, retries: u32, stripe: Option<usize>, epoch: u64) -> Result<()> {
        if retries < 64 {
            std::hint::spin_loop();
            return Ok(());
        }
        if retries < 128 {
            std::thread::yield_now();
            return Ok(());
        }
        if retries > 10_000 {
            return Err(self.inner().corrupt(format!("map {:?}: a lookup never settles", self.name)));
        }
        match stripe {
            Some(s) => drop(self.lock_stripe_settled(s)?),
            None if epoch & 1 == 1 => drop(self.lock_migration()?),
            None => std::thread::yield_now(),
        }
        Ok(())
    }

    /// Looks the key up in one table without locks. `moved_round`: the
    /// resize under way, when this is its old table; a slot it marked
    /// moved holding the key sends the lookup round again (the key moved
    /// to the new table after the lookup passed there). Anywhere else a
    /// moved slot is a tombstone.
    #[inline(always)]
    fn probe(
        &self,
        table: u64,
        cap: u64,
        q: &Query<'_>,
        moved_round: Option<u64>,
    ) -> Result<Probe<V::Owned>> {
        let p = self.slots(table, cap)?;
        let tag = tag_of_hash(q.hash);
        let probe = ProbeSeq::new(q.hash, cap - 1, K::BY_VALUE);
        for k in 0..cap {
            let i = probe.slot(k);
            let ctrl = Self::slot_word(p, i, 0);
            let c = ctrl.load(Ordering::Acquire);
            match state(c) {
                EMPTY => return Ok(Probe::Absent),
                MOVED if !moved_round.is_some_and(|g| moved_by(c, g)) => {}
                FULL | MOVED if tag_of(c) == tag => {
                    let words = [
                        Self::slot_word(p, i, 1).load(Ordering::Relaxed),
                        Self::slot_word(p, i, 2).load(Ordering::Relaxed),
                        Self::slot_word(p, i, 3).load(Ordering::Relaxed),
                    ];
                    let inline_hit = c & INLINE_BIT != 0 && inline_lens(c).0 == q.key.len();
                    if inline_hit && state(c) == FULL && q.matches_inline(&words) {
                        let value = decode_inline::<V>(words, c);
                        fence(Ordering::Acquire);
                        if ctrl.load(Ordering::Relaxed) != c {
                            return Ok(Probe::Torn);
                        }
                        return Ok(value.map_or(Probe::Torn, Probe::Found));
                    }
                    if c & INLINE_BIT == 0 || (inline_hit && state(c) == MOVED && q.matches_inline(&words)) {
                        match self.probe_slow(ctrl, words, c, q)? {
                            Probe::Absent => {}
                            other => return Ok(other),
                        }
                    }
                }
                BUSY => {
                    // Held by a writer, perhaps for our key: wait for it.
                    return Ok(Probe::Busy(stripe_of_tag(tag_of(c))));
                }
                _ => {}
            }
        }
        Ok(Probe::Absent)
    }

    /// Out-of-line keys and moved slots. `Absent` means "not this slot".
    #[cold]
    #[inline(never)]
    fn probe_slow(
        &self,
        ctrl: &AtomicU64,
        words: [u64; 3],
        c: u64,
        q: &Query<'_>,
    ) -> Result<Probe<V::Owned>> {
        let same = self.key_matches(words, c, q.key)?;
        // Out-of-line values are read before the control word is checked
        // again: their entry may be freed meanwhile.
        let value = if same && state(c) == FULL { self.decode_value(words, c)? } else { None };
        fence(Ordering::Acquire);
        if ctrl.load(Ordering::Relaxed) != c {
            return Ok(Probe::Torn);
        }
        Ok(match (same, state(c), value) {
            (false, _, _) => Probe::Absent,
            (true, MOVED, _) => Probe::Moved,
            (true, _, Some(v)) => Probe::Found(v),
            // Bytes that cannot be a V: garbage, retry.
            (true, _, None) => Probe::Torn,
        })
    }

    /// Whether the slot (`words`, control `c`) holds key `kb`. Out-of-line
    /// keys are read from their entry block, which may be freed and reused
    /// meanwhile: the caller re-checks the control word afterwards.
    #[inline]
    fn key_matches(&self, words: [u64; 3], c: u64, kb: &[u8]) -> Result<bool> {
        if c & INLINE_BIT != 0 {
            let (kl, vl) = inline_lens(c);
            if kl != kb.len() || kl + vl > INLINE {
                return Ok(false);
            }
            let b = bytes_of_words(&words);
            return Ok(&b[..kl] == kb);
        }
        let (entry, kl, vl) = (words[0], words[1] & 0xffff_ffff, words[1] >> 32);
        if kl != kb.len() as u64 || entry < HEADER_SIZE || kl + vl > MAX_ENTRY {
            return Ok(false);
        }
        let mut buf = vec![0u8; kl as usize];
        match self.inner().read_bytes(entry, &mut buf) {
            Ok(()) => Ok(buf == kb),
            // A torn read of a stale slot: the control check decides.
            Err(e) if e.is_corrupt() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Decodes the value of a slot read by `probe`; `None` when the bytes
    /// cannot be a `V` (a torn read: the caller retries).
    fn decode_value(&self, words: [u64; 3], c: u64) -> Result<Option<V::Owned>> {
        if c & INLINE_BIT != 0 {
            let (kl, vl) = inline_lens(c);
            if kl + vl > INLINE {
                return Ok(None);
            }
            let b = bytes_of_words(&words);
            return Ok(V::decode(&b[kl..kl + vl]));
        }
        let (entry, kl, vl) = (words[0], words[1] & 0xffff_ffff, words[1] >> 32);
        // The range is checked before the buffer is allocated: a length
        // read from the slot must not size process memory past the segment.
        if entry < HEADER_SIZE || kl + vl > MAX_ENTRY || self.inner().ptr(entry, kl + vl).is_err() {
            return Ok(None);
        }
        let mut buf = vec![0u8; vl as usize];
        match self.inner().read_bytes(entry + kl, &mut buf) {
            Ok(()) => Ok(V::decode(&buf)),
            Err(e) if e.is_corrupt() => Ok(None),
            Err(e) => Err(e),
        }
    }

    // ------------------------------------------------------------- locks

    fn stripe_base(&self, s: usize) -> u64 {
        self.off + stripe_field(s, 0)
    }

    fn lock_stripe(&self, s: usize) -> Result<MutexGuard<'_>> {
        let b = self.stripe_base(s);
        self.inner().lock(b + S_LOCK, b + S_LOG, S_LOG_CAP)
    }

    /// The migration lock. A dead holder's descriptor changes are rolled
    /// back, and an odd epoch it left is moved on (never back), so a
    /// reader that saw the half-made descriptor retries.
    fn lock_migration(&self) -> Result<MutexGuard<'_>> {
        lock_migration(self.inner(), self.off)
    }

    fn lock_all_stripes(&self) -> Result<Vec<MutexGuard<'_>>> {
        (0..STRIPES).map(|s| self.lock_stripe(s)).collect()
    }

    fn txn(&self, s: usize) -> Txn<'_> {
        let at = stripe_field(s, S_LOG);
        let words = self.hdr.load(Ordering::Relaxed).wrapping_add(at as usize);
        // SAFETY: `hdr` is the address of this map's header block, whose
        // `HEADER_BYTES` were checked mapped (and 8-aligned) when the
        // handle was made; the mapping never moves or shrinks while the
        // heap lives. Stripe `s % STRIPES`'s log lies inside the block
        // (`S_LOG + log_bytes(S_LOG_CAP) <= STRIPE_BYTES`, asserted at
        // compile time), at offset `at` from it.
        unsafe { Txn::with_words(self.inner(), self.off + at, S_LOG_CAP, words) }
    }

    /// Word `at` of this map's header block (a layout offset), through
    /// the address checked when the handle was made: no check per use.
    #[inline(always)]
    fn hdr_word(&self, at: u64) -> &AtomicU64 {
        assert!(at % 8 == 0 && at + 8 <= HEADER_BYTES, "header word {at}");
        Self::slot_word(self.hdr.load(Ordering::Relaxed), 0, at / 8)
    }

    /// Takes stripe `s` and a settled descriptor. When a migrator died
    /// half-way through a descriptor change (odd epoch) or a move (its log
    /// not empty), lets the migration lock roll that back first, never
    /// waiting for that lock while holding a stripe. The migration log is
    /// only written with every stripe held, so whoever holds one stripe
    /// and finds it not empty knows its writer is dead.
    fn lock_stripe_settled(&self, s: usize) -> Result<(MutexGuard<'_>, Desc)> {
        loop {
            let g = self.lock_stripe(s)?;
            // Magic, descriptor, move record and log count: one checked
            // range of the header, on every write.
            let h = self.inner().block(self.off, M_LOG + 8)?;
            if h.word(M_MAGIC).load(Ordering::Acquire) != MAGIC {
                return Err(self.removed());
            }
            let d = desc_in(&h);
            let busy = h.word(M_LOG).load(Ordering::Acquire) | h.word(M_MOVE_FROM).load(Ordering::Acquire);
            if d.epoch & 1 == 0 && busy == 0 {
                return Ok((g, d));
            }
            drop(g);
            let mg = self.lock_migration()?;
            // Only the migration lock's holder writes its log and empties
            // it before letting go, and a dead holder's log was rolled back
            // (its move settled) just now: a log still not empty is
            // garbage, which no lock would ever clear.
            if self.word(M_LOG)?.load(Ordering::Acquire) != 0 {
                return Err(self
                    .inner()
                    .corrupt(format!("map {:?}: migration log not empty under its lock", self.name)));
            }
            drop(mg);
        }
    }

    // ------------------------------------------------------------ writes

    /// Inserts or replaces; returns the previous value.
    pub fn insert(&self, key: &K, value: &V) -> Result<Option<V::Owned>> {
        let e = Self::encode(key.as_bytes(), value.as_bytes())?;
        self.insert_encoded(e)
    }

    fn insert_encoded(&self, e: Encoded<'_>) -> Result<Option<V::Owned>> {
        let q = Self::query_with(e.key, e.hash);
        let s = stripe_of_tag(tag_of_hash(e.hash));
        // The key's home line in the table this handle last checked, so
        // its miss overlaps the locking (a hint: a stale table costs a
        // miss, nothing else).
        if let Some((_, p, mask)) = self.cache.get() {
            prefetch(Self::home_line(p, e.hash, mask + 1));
        }
        let mut helped = false;
        for _ in 0..5 {
            let (g, d) = self.lock_stripe_settled(s)?;
            // Once per insert, and without the stripe (both take every
            // stripe): help a migration by a chunk, or start a resize at
            // 3/4 used.
            if !helped && (d.migrating() || !room_for(d.used, 0, d.cap)) {
                drop(g);
                helped = true;
                if d.migrating() {
                    self.migrate_step()?
                } else {
                    self.start_resize(false, 0)?
                }
                continue;
            }
            if Self::FIXED.is_some() && !d.migrating() && self.cache.epoch() != d.epoch {
                self.check_desc(d.epoch);
            }
            // Out-of-line entries are allocated and freed holding the
            // stripe, which `check` takes too: it never sees one that is
            // allocated but not yet linked, or unlinked but not yet freed.
            let entry = self.new_entry(&e)?;
            crash::point("map.entry");
            let mut freed = None;
            let placed = self.insert_locked((s, &d), &e, &q, entry, &mut freed);
            if let Some(off) = entry.filter(|_| !matches!(placed, Ok(Some(_)))) {
                let _ = self.inner().free(off, e.entry_len(), 8);
            }
            let Some(old) = placed? else {
                drop(g);
                self.start_resize(true, 0)?;
                continue;
            };
            self.free_entry(freed)?;
            drop(g);
            return Ok(old);
        }
        Err(self.inner().corrupt(format!("map {:?}: no free slot even after resizing", self.name)))
    }

    /// Writes `e`'s key and value to a new block when they do not fit in
    /// a slot.
    fn new_entry(&self, e: &Encoded<'_>) -> Result<Option<u64>> {
        if e.inline().is_some() {
            return Ok(None);
        }
        let inner = self.inner();
        let off = inner.alloc(e.entry_len(), 8)?;
        let written =
            inner.write_bytes(off, e.key).and_then(|()| inner.write_bytes(off + e.key.len() as u64, e.value));
        if let Err(err) = written {
            let _ = inner.free(off, e.entry_len(), 8);
            return Err(err);
        }
        Ok(Some(off))
    }

    /// Inserts `e` holding stripe `s` (descriptor `d`), its out-of-line
    /// entry at `entry`: the old value, or `None` when the table has no
    /// free slot; the slot whose out-of-line entry it replaced goes to
    /// `freed` (a parameter: returned, the large value was copied through
    /// the stack on every insert).
    fn insert_locked(
        &self,
        (s, d): (usize, &Desc),
        e: &Encoded<'_>,
        q: &Query<'_>,
        entry: Option<u64>,
        freed: &mut Option<Hit>,
    ) -> Result<Option<Option<V::Owned>>> {
        let mut t = self.txn(s);
        let (target, target_cap) = if d.migrating() { (d.new_table, d.new_cap) } else { (d.table, d.cap) };
        let found_new = self.find_for_write(target, target_cap, q)?;
        if let Some(hit) = found_new.0 {
            let old = self.decode_value(hit.words, hit.ctrl)?;
            self.overwrite(&mut t, s, hit, e, entry)?;
            t.commit()?;
            *freed = (hit.ctrl & INLINE_BIT == 0).then_some(hit);
            return Ok(Some(old));
        }
        // Not in the insert table; during a migration it may still sit
        // in the old one.
        let in_old = if d.migrating() { self.find_for_write(d.table, d.cap, q)?.0 } else { None };
        let Some(old_ctrl) = self.claim_and_fill(&mut t, (target, target_cap), s, e, found_new.1, entry)?
        else {
            return Ok(None);
        };
        let old = match in_old {
            Some(hit) => {
                let old = self.decode_value(hit.words, hit.ctrl)?;
                t.set(hit.slot, moved_ctrl(hit.ctrl, d.round))?;
                old
            }
            None => {
                self.add_to_len(&mut t, s, 1)?;
                None
            }
        };
        t.commit()?;
        if state(old_ctrl) == EMPTY {
            self.count_used(s, target_cap)?;
        }
        *freed = in_old.filter(|h| h.ctrl & INLINE_BIT == 0);
        Ok(Some(old))
    }

    /// Counts one more slot claimed from empty by stripe `s` (held), in a
    /// table of `cap` slots. The shared count takes them in batches of up
    /// to `cap / 4096` per stripe, so a table starts its resize at most
    /// 64 batches (`cap / 64` slots) late, and most inserts skip the
    /// locked add: the stripe's own word is in a line the insert writes
    /// anyway. Not in the transaction: a claim rolled back leaves a
    /// tombstone, which counts as used too.
    #[inline]
    fn count_used(&self, s: usize, cap: u64) -> Result<()> {
        let pending = self.hdr_word(stripe_field(s, S_USED));
        let n = pending.load(Ordering::Relaxed).wrapping_add(1);
        if n < cap / 4096 {
            pending.store(n, Ordering::Relaxed);
            return Ok(());
        }
        pending.store(0, Ordering::Relaxed);
        self.hdr_word(M_USED).fetch_add(n, Ordering::Relaxed);
        Ok(())
    }

    /// Inserts or replaces every pair of `entries`, in order (a key given
    /// twice ends with its later value); returns how many keys were new.
    ///
    /// The same as calling [`insert`](Self::insert) for each pair, but
    /// pairs stored inline (key and value within 24 bytes together) go in
    /// groups of up to 512 that take the map's locks once, and the slots
    /// of a group's keys are requested from memory together, so their
    /// cache misses overlap: several times faster than `insert` for a
    /// bulk load into a table larger than the CPU's caches. Each pair is
    /// still its own transaction: a process killed in the middle leaves
    /// the pairs before it inserted and the rest not, and the next
    /// process to take the lock rolls back the one in progress. Other
    /// writers of the map wait for a group (up to about 0.1 ms on a
    /// table much larger than the caches); readers never wait.
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let heap = mmkit_heap::Heap::create(dir.path().join("h"), 1 << 20)?;
    /// let squares = heap.map::<u64, u64>("squares")?;
    /// let pairs: Vec<(u64, u64)> = (0..1000).map(|k| (k, k * k)).collect();
    /// assert_eq!(squares.insert_many(&pairs)?, 1000);
    /// assert_eq!(squares.insert_many(&[(7u64, 0u64), (5000, 1)])?, 1);
    /// assert_eq!(squares.get(&7)?, Some(0));
    /// assert_eq!(squares.len()?, 1001);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn insert_many<Q: std::borrow::Borrow<K>, W: std::borrow::Borrow<V>>(
        &self,
        entries: &[(Q, W)],
    ) -> Result<usize> {
        // A bulk load into an empty map: one table sized for it, instead
        // of every doubling on the way (as `HashMap::extend` does). Not
        // for a map with keys: the pairs may all be updates. Only a hint:
        // repeated keys may need far less room than the heap has.
        if entries.len() > BATCH && self.is_empty()? {
            match self.reserve(entries.len()) {
                Err(Error::OutOfMemory { .. } | Error::Invalid { .. }) => {}
                other => other?,
            }
        }
        let mut added = 0;
        let mut run = Vec::with_capacity(entries.len().min(BATCH));
        for (k, v) in entries {
            let e = Self::encode(k.borrow().as_bytes(), v.borrow().as_bytes())?;
            if e.inline().is_none() {
                // In order: the run before it goes first.
                added += self.insert_run(&run)?;
                run.clear();
                added += self.insert_encoded(e)?.is_none() as usize;
                continue;
            }
            run.push(e);
            if run.len() == BATCH {
                added += self.insert_run(&run)?;
                run.clear();
            }
        }
        Ok(added + self.insert_run(&run)?)
    }

    /// Inserts a run of inline pairs holding the migration lock and every
    /// stripe, so no other writer is in the table: first makes room for
    /// the whole run (finishing any migration), then places the keys one
    /// transaction each, the lines of the next group of keys requested
    /// while this group is placed. Returns how many keys were new.
    fn insert_run(&self, run: &[Encoded<'_>]) -> Result<usize> {
        if run.is_empty() {
            return Ok(0);
        }
        for _ in 0..4 {
            if !self.make_room(run.len() as u64)? {
                continue;
            }
            let mg = self.lock_migration()?;
            self.check_magic()?;
            let d = self.read_desc()?;
            if d.migrating() {
                continue;
            }
            let stripes = self.lock_all_stripes()?;
            // Replaced out-of-line entries are freed holding the locks, as
            // `check` needs (see `insert_encoded`).
            let placed = self.place_run(run, &d).and_then(|(added, done, replaced)| {
                replaced.into_iter().try_for_each(|hit| self.free_entry(Some(hit)))?;
                Ok((added, done))
            });
            drop(stripes);
            drop(mg);
            let (added, done) = placed?;
            // Only a table filled by tombstones stops a run early: the
            // rest go one by one, which resizes.
            return Ok(added + self.insert_each(&run[done..])?);
        }
        // Other writers kept resizing meanwhile: one by one.
        self.insert_each(run)
    }

    /// Makes room for `additional` more keys now, so that inserting them
    /// starts no resize, as `HashMap::reserve` does: when they would take
    /// the table past 3/4 full, moves every entry to a table sized for
    /// the keys held plus `additional`. For a bulk load of known size, one
    /// resize instead of each doubling on the way (and none of the tables
    /// in between). Readers and writers go on meanwhile; an error (the
    /// heap cannot hold such a table, or `additional` is past the largest
    /// table) changes nothing.
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let heap = mmkit_heap::Heap::create(dir.path().join("h"), 1 << 20)?;
    /// let ids = heap.map::<u64, u64>("ids")?;
    /// ids.reserve(10_000)?;
    /// let cap = ids.capacity()?;
    /// for k in 0..10_000 {
    ///     ids.insert(&k, &k)?;
    /// }
    /// assert_eq!(ids.capacity()?, cap);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn reserve(&self, additional: usize) -> Result<()> {
        for _ in 0..4 {
            if self.make_room(additional as u64)? {
                return Ok(());
            }
        }
        // Other writers kept resizing meanwhile; inserts resize as needed.
        self.finish_migration()
    }

    /// Finishes any migration under way; then, if `n` more keys would
    /// take the table past 3/4 used, starts a resize sized for them and
    /// returns false (call again: the migration is still to do), as it
    /// does when another writer started a resize meanwhile.
    fn make_room(&self, n: u64) -> Result<bool> {
        self.finish_migration()?;
        let d = self.stable_desc()?;
        if d.migrating() {
            return Ok(false);
        }
        if room_for(self.word(M_USED)?.load(Ordering::Relaxed), n, d.cap) {
            return Ok(true);
        }
        // Not forced: another writer may have resized meanwhile.
        self.start_resize(false, n)?;
        Ok(false)
    }

    fn insert_each(&self, run: &[Encoded<'_>]) -> Result<usize> {
        let mut added = 0;
        for e in run {
            added += self.insert_encoded(*e)?.is_none() as usize;
        }
        Ok(added)
    }

    /// Helps a migration under way to its end (a chunk per step).
    fn finish_migration(&self) -> Result<()> {
        let steps = self.read_desc()?.cap / CHUNK + 2;
        for _ in 0..steps {
            if !self.read_desc()?.migrating() {
                break;
            }
            self.migrate_step()?;
        }
        Ok(())
    }

    /// The locked part of [`insert_run`](Self::insert_run): returns the
    /// keys added, the pairs placed (a prefix of `run`), and the slots
    /// whose out-of-line entries were replaced, to free.
    fn place_run(&self, run: &[Encoded<'_>], d: &Desc) -> Result<(usize, usize, Vec<Hit>)> {
        let p = self.slots(d.table, d.cap)?;
        let line_of = |h: u64| Self::home_line(p, h, d.cap);
        run.iter().take(PREFETCH_GROUP).for_each(|e| prefetch(line_of(e.hash)));
        let (mut added, mut claimed_empty, mut replaced) = (0, 0, Vec::new());
        let mut done = 0;
        for (i, e) in run.iter().enumerate() {
            if i % PREFETCH_GROUP == 0 {
                run.iter()
                    .skip(i + PREFETCH_GROUP)
                    .take(PREFETCH_GROUP)
                    .for_each(|e| prefetch(line_of(e.hash)));
            }
            let q = Self::query_with(e.key, e.hash);
            let s = stripe_of_tag(tag_of_hash(e.hash));
            let mut t = self.txn(s);
            let (hit, free) = self.find_for_write(d.table, d.cap, &q)?;
            if let Some(hit) = hit {
                self.overwrite(&mut t, s, hit, e, None)?;
                t.commit()?;
                if hit.ctrl & INLINE_BIT == 0 {
                    replaced.push(hit);
                }
            } else {
                let Some(old) = self.claim_and_fill(&mut t, (d.table, d.cap), s, e, free, None)? else {
                    break;
                };
                self.add_to_len(&mut t, s, 1)?;
                t.commit()?;
                added += 1;
                claimed_empty += (state(old) == EMPTY) as u64;
            }
            done = i + 1;
            crash::point("map.batch");
        }
        self.word(M_USED)?.fetch_add(claimed_empty, Ordering::Relaxed);
        Ok((added, done, replaced))
    }

    /// Replaces the value of a full slot in place: busy, new payload, full.
    fn overwrite(
        &self,
        t: &mut Txn<'_>,
        s: usize,
        hit: Hit,
        e: &Encoded<'_>,
        entry: Option<u64>,
    ) -> Result<()> {
        t.set(hit.slot, busy_ctrl(hit.ctrl, s))?;
        crash::point("map.busy");
        let words = match entry {
            Some(off) => [off, e.key.len() as u64 | (e.value.len() as u64) << 32, 0],
            None => e.words,
        };
        for (k, w) in words.iter().enumerate() {
            t.set(hit.slot + 8 + 8 * k as u64, *w)?;
        }
        crash::point("map.overwrite");
        t.set(hit.slot, full_ctrl(hit.ctrl, tag_of_hash(e.hash), e.inline()))
    }

    /// Claims a free slot for `e` from probe step `from` on and publishes
    /// `e` there (see [`claim_free`](Self::claim_free) and
    /// [`fill`](Self::fill)); returns the slot's previous control word, or
    /// `None` when the table has no free slot.
    fn claim_and_fill(
        &self,
        t: &mut Txn<'_>,
        (table, cap): (u64, u64),
        s: usize,
        e: &Encoded<'_>,
        from: Option<u64>,
        entry: Option<u64>,
    ) -> Result<Option<u64>> {
        let Some((p, i, old)) = self.claim_free(t, table, cap, s, e.hash, from)? else {
            return Ok(None);
        };
        crash::point("map.claimed");
        self.fill(t, (p, table, i), (s, old), e, entry)?;
        crash::point("map.published");
        Ok(Some(old))
    }

    /// Adds `delta` (wrapping: `u64::MAX` takes one away) to stripe `s`'s
    /// count of entries, in transaction `t`.
    fn add_to_len(&self, t: &mut Txn<'_>, s: usize, delta: u64) -> Result<()> {
        let at = stripe_field(s, S_LEN);
        let word = self.hdr_word(at);
        let was = word.load(Ordering::Acquire);
        t.set_at(self.off + at, word, was, was.wrapping_add(delta))
    }

    /// Fills slot `i` of the table at `p` (offset `table`, checked by
    /// `slots`), which stripe `s` claimed from control word `old`, and
    /// publishes it.
    fn fill(
        &self,
        t: &mut Txn<'_>,
        (p, table, i): (*mut u8, u64, u64),
        (s, old): (usize, u64),
        e: &Encoded<'_>,
        entry: Option<u64>,
    ) -> Result<()> {
        let words = match entry {
            Some(off) => [off, e.key.len() as u64 | (e.value.len() as u64) << 32, 0],
            None => e.words,
        };
        // The slot is ours (busy): readers ignore its payload until the
        // control word says full, and a rollback empties it again.
        for (k, w) in words.iter().enumerate() {
            Self::slot_word(p, i, 1 + k as u64).store(*w, Ordering::Release);
        }
        let full = full_ctrl(old, tag_of_hash(e.hash), e.inline());
        t.set_at(table + i * SLOT_SIZE, Self::slot_word(p, i, 0), busy_ctrl(old, s), full)
    }

    /// Probes for `kb` holding its stripe: the full slot holding it, and
    /// the probe step of the first reusable slot seen (a tombstone) or of
    /// the empty slot that ended the probe.
    fn find_for_write(&self, table: u64, cap: u64, q: &Query<'_>) -> Result<(Option<Hit>, Option<u64>)> {
        let p = self.slots(table, cap)?;
        let h = q.hash;
        let tag = tag_of_hash(h);
        let mut free = None;
        let probe = ProbeSeq::new(h, cap - 1, K::BY_VALUE);
        for k in 0..cap {
            let i = probe.slot(k);
            let c = Self::slot_word(p, i, 0).load(Ordering::Acquire);
            match state(c) {
                EMPTY => return Ok((None, free.or(Some(k)))),
                TOMB => {
                    free.get_or_insert(k);
                }
                FULL if tag_of(c) == tag => {
                    let words = [1, 2, 3].map(|w| Self::slot_word(p, i, w).load(Ordering::Acquire));
                    let same = if c & INLINE_BIT != 0 {
                        let kl = inline_lens(c).0;
                        kl == q.key.len() && kl <= INLINE && q.matches_inline(&words)
                    } else {
                        self.key_matches(words, c, q.key)?
                    };
                    if same {
                        return Ok((Some(Hit { slot: table + i * SLOT_SIZE, ctrl: c, words }), None));
                    }
                }
                _ => {}
            }
        }
        Ok((None, free))
    }

    /// Claims a free slot for a key known to be absent, from probe step
    /// `from` of hash `h` on: compare-and-swap to busy, recorded so that a
    /// rollback turns it into a tombstone. Never back into an empty slot:
    /// writers of other stripes may have probed past it while it was busy
    /// and placed keys behind it, which an empty slot would hide. Returns
    /// the table's checked address, the slot and its previous control
    /// word, or `None` when the table has no free slot.
    fn claim_free(
        &self,
        t: &mut Txn<'_>,
        table: u64,
        cap: u64,
        s: usize,
        h: u64,
        from: Option<u64>,
    ) -> Result<Option<(*mut u8, u64, u64)>> {
        let Some(from) = from else { return Ok(None) };
        let p = self.slots(table, cap)?;
        let probe = ProbeSeq::new(h, cap - 1, K::BY_VALUE);
        for k in from..cap {
            let i = probe.slot(k);
            let ctrl = Self::slot_word(p, i, 0);
            let c = ctrl.load(Ordering::Acquire);
            let restore = if state(c) == EMPTY { bump(c, TOMB) } else { c };
            if matches!(state(c), EMPTY | TOMB)
                && t.claim_at(table + i * SLOT_SIZE, ctrl, [c, busy_ctrl(c, s), restore])?
            {
                // Before the key is published (a claim rolled back is a
                // tombstone, which leaves no key anywhere).
                self.note_place(h, k, cap)?;
                return Ok(Some((p, i, c)));
            }
        }
        Ok(None)
    }

    /// Clears [`M_DENSE`] when the key of hash `h`, placed at probe step
    /// `k` of a table of `cap` slots, is not in its home line or has a
    /// placement past the table. Called before the key is published, by a
    /// holder of its stripe: a resize reads the flag holding every stripe.
    #[inline]
    fn note_place(&self, h: u64, k: u64, cap: u64) -> Result<()> {
        if K::BY_VALUE && (k >= 2 || h & PLACE_BITS >= cap) {
            let dense = self.hdr_word(M_DENSE);
            if dense.load(Ordering::Relaxed) != 0 {
                dense.store(0, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Removes `key`; returns its value.
    pub fn remove(&self, key: &K) -> Result<Option<V::Owned>> {
        let q = Self::query(key.as_bytes());
        self.prepare_write(q.hash)?;
        let s = stripe_of_tag(tag_of_hash(q.hash));
        let (g, d) = self.lock_stripe_settled(s)?;
        let mut hit = self.find_for_write(d.table, d.cap, &q)?.0;
        if d.migrating() && hit.is_none() {
            hit = self.find_for_write(d.new_table, d.new_cap, &q)?.0;
        }
        let Some(hit) = hit else { return Ok(None) };
        let old = self.decode_value(hit.words, hit.ctrl)?;
        let mut t = self.txn(s);
        t.set(hit.slot, bump(hit.ctrl, TOMB))?;
        crash::point("map.removed");
        self.add_to_len(&mut t, s, u64::MAX)?;
        t.commit()?;
        // Freed holding the stripe, as `check` needs (see `insert_encoded`).
        self.free_entry((hit.ctrl & INLINE_BIT == 0).then_some(hit))?;
        drop(g);
        Ok(old)
    }

    /// Frees the out-of-line entry of a slot that no longer points at it.
    fn free_entry(&self, hit: Option<Hit>) -> Result<()> {
        if let Some(hit) = hit {
            let (entry, kl, vl) = (hit.words[0], hit.words[1] & 0xffff_ffff, hit.words[1] >> 32);
            self.inner().free(entry, (kl + vl).max(1), 8)?;
        }
        Ok(())
    }

    /// Number of entries (a sum over the stripes; exact when no write
    /// runs meanwhile).
    pub fn len(&self) -> Result<usize> {
        let mut n = 0u64;
        for s in 0..STRIPES {
            n = n.wrapping_add(self.inner().load(self.stripe_base(s) + S_LEN)?);
        }
        Ok(n as usize)
    }

    /// True when the map holds nothing.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Slots in the current table (the new one during a resize).
    pub fn capacity(&self) -> Result<usize> {
        let d = self.stable_desc()?;
        Ok(if d.migrating() { d.new_cap } else { d.cap } as usize)
    }

    /// The descriptor as one consistent set of words, without a lock: read
    /// between two equal, even epochs. A resizer that died half way leaves
    /// the epoch odd; the migration lock settles that.
    fn stable_desc(&self) -> Result<Desc> {
        for _ in 0..100 {
            let d = self.read_desc()?;
            fence(Ordering::Acquire);
            if d.epoch & 1 == 0 && self.word(M_EPOCH)?.load(Ordering::Relaxed) == d.epoch {
                return Ok(d);
            }
            std::thread::yield_now();
        }
        let _g = self.lock_migration()?;
        self.read_desc()
    }

    // ------------------------------------------------------------ resize

    /// Before a write: help an ongoing migration by one chunk, or start
    /// one when the table is 3/4 used.
    /// Also asks the CPU for the home cache line of hash `h` in the table
    /// writes go to, so its miss overlaps the locking before the probe.
    fn prepare_write(&self, h: u64) -> Result<()> {
        let d = self.read_desc()?;
        let (table, cap) = if d.migrating() { (d.new_table, d.new_cap) } else { (d.table, d.cap) };
        if let Ok(p) = self.slots(table, cap) {
            prefetch(Self::home_line(p, h, cap));
        }
        if d.migrating() {
            return self.migrate_step();
        }
        if !room_for(self.word(M_USED)?.load(Ordering::Relaxed), 0, d.cap) {
            self.start_resize(false, 0)?;
        }
        Ok(())
    }

    /// Allocates the new table and switches inserts to it. The table is
    /// allocated and zeroed first; only the switch holds every stripe, so
    /// no writer is inside the old table while it happens.
    /// With `extra`, for that many more keys than the table holds.
    fn start_resize(&self, force: bool, extra: u64) -> Result<()> {
        let mg = self.lock_migration()?;
        self.check_magic()?;
        let d = self.read_desc()?;
        if d.migrating() {
            drop(mg);
            return self.migrate_step();
        }
        if !force && room_for(self.word(M_USED)?.load(Ordering::Relaxed), extra, d.cap) {
            return Ok(());
        }
        // Writers go on until the switch (reusing tombstones, which does
        // not move `used`): the count taken then, under every stripe, is
        // the one that must fit.
        let mut live = self.len()? as u64;
        loop {
            let new_cap = resize_cap(live, extra, d.cap, force)?;
            let inner = self.inner();
            let table = match self.grow_table(&d, new_cap)? {
                true => d.table,
                false => inner.alloc_zeroed(new_cap * SLOT_SIZE, 64)?,
            };
            let switched = self.switch_to(table, new_cap, (d.cap, extra, force));
            // A table grown in place keeps its pages: they are zero, and
            // the next resize starts from them.
            if !matches!(switched, Ok(None)) && table != d.table {
                let _ = inner.free(table, new_cap * SLOT_SIZE, 64);
            }
            // Too small for the keys there now: size again (the count only
            // grows from try to try, up to what the old table holds).
            match switched? {
                None => return Ok(()),
                Some(now) => live = now,
            }
        }
    }

    /// Grows the table of `d` (no resize under way) to `new_cap` slots
    /// where it lies, when the pages after its block are free, and zeroes
    /// the slots added; false, changing nothing, if it cannot. Keys then
    /// move only when their place in the larger table differs (integer
    /// keys below the old size stay where they are), and the heap never
    /// holds both tables. A resizer killed between the allocator's commit
    /// and the switch leaves the block longer than the table: the block
    /// keeps those pages (`check` and `free` use its real size, see
    /// [`table_bytes`]) and the next resize starts from them.
    fn grow_table(&self, d: &Desc, new_cap: u64) -> Result<bool> {
        let inner = self.inner();
        let (bytes, new_bytes) = (d.cap * SLOT_SIZE, new_cap * SLOT_SIZE);
        if new_cap <= d.cap
            || crate::alloc::class_for(bytes, 64).is_some()
            || !self.mostly_stay(d, new_cap)?
        {
            return Ok(false);
        }
        let have = match inner.large_block_len(d.table)? {
            Some(n) if n >= bytes => n,
            _ => return Ok(false),
        };
        let fresh_from = if have >= new_bytes {
            u64::MAX
        } else {
            match inner.grow_block(d.table, have, new_bytes, 64) {
                Ok(Some(at)) => at,
                // No room at the top (the segment at its largest, a full
                // disk): a new table may still fit in a free run. Nothing
                // was written (the segment grows before the transaction's
                // first entry).
                Ok(None) => return Ok(false),
                Err(e) if !e.is_corrupt() => return Ok(false),
                Err(e) => return Err(e),
            }
        };
        crash::point("map.grown");
        // Pages never carved before hold the zeros the file grew with, and
        // are left to fault in when a key first lands there: dense keys
        // touch half of a table grown for them. The rest held other blocks.
        let start = d.table + bytes;
        inner.zero(start, fresh_from.clamp(start, d.table + new_bytes) - start)?;
        Ok(true)
    }

    /// Whether most keys of `d`'s table keep their home line in a table of
    /// `new_cap` slots, judged from a sample of slots spread over it. Only
    /// then does growing in place pay: every key that moves leaves a
    /// moved slot behind, which stays used (a tombstone) in the grown
    /// table. Dense integer keys (0, 1, 2...) stay; keys placed by hash
    /// or spread over the integers mostly move, and go to a new table.
    fn mostly_stay(&self, d: &Desc, new_cap: u64) -> Result<bool> {
        let p = self.slots(d.table, d.cap)?;
        let (mut full, mut stay) = (0u32, 0u32);
        // An odd step: keys at a power-of-two stride (every 64th key
        // placed apart, say) must not be all the sample sees.
        for i in (0..d.cap).step_by((d.cap / STAY_SAMPLE) as usize | 1) {
            let c = Self::slot_word(p, i, 0).load(Ordering::Acquire);
            if state(c) != FULL {
                continue;
            }
            let words = [1, 2, 3].map(|w| Self::slot_word(p, i, w).load(Ordering::Acquire));
            let Ok(h) = self.hash_of_slot(words, c) else { continue };
            full += 1;
            stay += u32::from(home_slot(h, new_cap - 1, K::BY_VALUE) >> 1 == i >> 1);
        }
        Ok(full >= 8 && stay * 8 >= full * 7)
    }

    /// Makes the zeroed `table` of `new_cap` slots the one inserts go to,
    /// holding every stripe; `Some(live)` instead if the keys there now
    /// (`live`) need a larger one. The tuple is the old capacity, the
    /// extra room asked for and `force`, as [`resize_cap`] takes them.
    fn switch_to(
        &self,
        table: u64,
        new_cap: u64,
        (cap, extra, force): (u64, u64, bool),
    ) -> Result<Option<u64>> {
        crash::point("map.resize_alloc");
        let stripes = self.lock_all_stripes()?;
        let now = self.len()? as u64;
        if resize_cap(now, extra, cap, force)? > new_cap {
            return Ok(Some(now));
        }
        let round = self.word(M_ROUND)?.load(Ordering::Relaxed).wrapping_add(1);
        let in_place = table == self.word(M_TABLE)?.load(Ordering::Relaxed);
        if in_place && K::BY_VALUE && self.word(M_DENSE)?.load(Ordering::Acquire) != 0 {
            // Every key keeps its slot in the larger table: no migration.
            self.set_desc(|t| t.set(self.off + M_CAP, new_cap))?;
            return Ok(None);
        }
        self.set_desc(|t| {
            t.set(self.off + M_NEW_TABLE, table)?;
            t.set(self.off + M_NEW_CAP, new_cap)?;
            t.set(self.off + M_CURSOR, 0)?;
            t.set(self.off + M_ROUND, round)?;
            // Until a write places a key elsewhere (the moves included).
            t.set(self.off + M_DENSE, u64::from(K::BY_VALUE))?;
            // A table grown in place keeps its slots, used ones included.
            if in_place { Ok(()) } else { t.set(self.off + M_USED, 0) }
        })?;
        drop(stripes);
        Ok(None)
    }

    /// Changes the descriptor in a transaction on the migration log,
    /// bracketed by an odd epoch so readers retry. Every stripe is held.
    fn set_desc(&self, f: impl FnOnce(&mut Txn<'_>) -> Result<()>) -> Result<()> {
        let epoch = self.word(M_EPOCH)?;
        epoch.fetch_add(1, Ordering::AcqRel);
        let mut t = self.migration_txn();
        f(&mut t)?;
        crash::point("map.desc");
        t.commit()?;
        epoch.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    fn migration_txn(&self) -> Txn<'_> {
        Txn::new(self.inner(), self.off + M_LOG, M_LOG_CAP)
    }

    /// Moves one chunk of the old table, holding every stripe (one round of
    /// locks per chunk rather than one per slot); finishes the migration
    /// after the last chunk.
    fn migrate_step(&self) -> Result<()> {
        let mg = self.lock_migration()?;
        self.check_magic()?;
        let d = self.read_desc()?;
        if !d.migrating() {
            return Ok(());
        }
        if d.in_place() && d.new_cap <= d.cap {
            return Err(self.inner().corrupt(format!("map {:?}: a table grown in place shrank", self.name)));
        }
        let stripes = self.lock_all_stripes()?;
        let cursor = self.word(M_CURSOR)?.load(Ordering::Acquire);
        // Most slots of a table grown in place stay where they are, and a
        // chunk of them is quick: more of them per round of locks.
        let chunk = if d.in_place() { CHUNK * IN_PLACE_CHUNKS } else { CHUNK };
        let end = cursor.saturating_add(chunk).min(d.cap);
        let old = self.slots(d.table, d.cap)?;
        let new = self.slots(d.new_table, d.new_cap)?;
        let mut claimed = 0;
        let record = (self.word(M_MOVE_FROM)?, self.word(M_MOVE_TO)?);
        let mut batch = [(0u64, 0u64); MOVE_BATCH];
        for from in (cursor..end).step_by(MOVE_BATCH) {
            // Hash a batch and ask for the new table's lines first, so the
            // moves' cache misses overlap instead of following each other.
            let mut n = 0;
            for i in from..(from + MOVE_BATCH as u64).min(end) {
                let c = Self::slot_word(old, i, 0).load(Ordering::Acquire);
                if d.in_place() && state(c) == MOVED && !moved_by(c, d.round) {
                    // Marked by an earlier resize: a tombstone from now on,
                    // before a later resize's parity matches it again.
                    Self::slot_word(old, i, 0).store(bump(c & !ROUND_BIT, TOMB), Ordering::Release);
                }
                if state(c) == FULL {
                    let words = [1, 2, 3].map(|w| Self::slot_word(old, i, w).load(Ordering::Acquire));
                    let h = self.hash_of_slot(words, c)?;
                    if d.in_place() {
                        if let Some(k) = Self::in_new_place(new, d.new_cap, i, h) {
                            self.note_place(h, k, d.new_cap)?;
                            continue;
                        }
                    }
                    prefetch(Self::home_line(new, h, d.new_cap));
                    batch[n] = (i, h);
                    n += 1;
                }
            }
            for &(i, h) in &batch[..n] {
                claimed += self.move_slot(&d, (old, new), record, i, h)? as u64;
            }
        }
        // Moves are not logged: a chunk cut short by a crash is moved
        // again from its start, skipping the slots already marked moved.
        record.0.store(0, Ordering::Release);
        self.word(M_CURSOR)?.store(end, Ordering::Release);
        self.word(M_USED)?.fetch_add(claimed, Ordering::Relaxed);
        if end < d.cap {
            return Ok(());
        }
        self.set_desc(|t| {
            t.set(self.off + M_TABLE, d.new_table)?;
            t.set(self.off + M_CAP, d.new_cap)?;
            t.set(self.off + M_NEW_TABLE, 0)?;
            t.set(self.off + M_NEW_CAP, 0)?;
            t.set(self.off + M_CURSOR, 0)
        })?;
        drop(stripes);
        crash::point("map.finished");
        if d.in_place() {
            return Ok(());
        }
        // Readers still probing the old table see the epoch change. Freed
        // holding the migration lock, which `check` takes too.
        let freed = self.inner().free(d.table, table_bytes(self.inner(), d.table, d.cap, false), 64);
        drop(mg);
        freed
    }

    /// Whether the key of hash `h` in slot `i` of a table grown in place
    /// (`new`, `new_cap` slots) is where a lookup in the grown table finds
    /// it: on its probe sequence before any empty slot; `Some` of its
    /// probe step there if so. Slots never become empty again during the
    /// resize, so once found, found until it ends.
    fn in_new_place(new: *mut u8, new_cap: u64, i: u64, h: u64) -> Option<u64> {
        let probe = ProbeSeq::new(h, new_cap - 1, K::BY_VALUE);
        for k in 0..new_cap {
            let j = probe.slot(k);
            if j == i {
                return Some(k);
            }
            if state(Self::slot_word(new, j, 0).load(Ordering::Acquire)) == EMPTY {
                return None;
            }
        }
        None
    }

    /// Moves slot `i` of the old table (`old`) to the new one (`new`);
    /// true if it took an empty slot. Every stripe is held, so no writer
    /// is in either table: the payload goes into a free slot before its
    /// control word says full, and the old slot says moved after that.
    /// Neither write is logged; instead the move is recorded first (`to`,
    /// then `from`: the new slot, then the old one plus one), so that a
    /// mover dying between the two control words, which leaves the key
    /// full in both tables, is settled by the next holder of the
    /// migration lock (`settle_move`). Writers meeting the record set
    /// defer to that lock, as they do for a migration log not empty.
    fn move_slot(
        &self,
        d: &Desc,
        (old, new): (*mut u8, *mut u8),
        (from, to): (&AtomicU64, &AtomicU64),
        i: u64,
        h: u64,
    ) -> Result<bool> {
        // Dead writers' busy slots were rolled back when we took their
        // stripes; one still busy is garbage from a hostile writer.
        let c = Self::slot_word(old, i, 0).load(Ordering::Acquire);
        let words = [1, 2, 3].map(|w| Self::slot_word(old, i, w).load(Ordering::Acquire));
        let probe = ProbeSeq::new(h, d.new_cap - 1, K::BY_VALUE);
        let free = (0..d.new_cap).find_map(|k| {
            let j = probe.slot(k);
            let f = Self::slot_word(new, j, 0).load(Ordering::Acquire);
            matches!(state(f), EMPTY | TOMB).then_some((k, j, f))
        });
        let Some((k, j, f)) = free else {
            return Err(self.inner().corrupt(format!("map {:?}: the new table is full", self.name)));
        };
        self.note_place(h, k, d.new_cap)?;
        for (k, w) in words.iter().enumerate() {
            Self::slot_word(new, j, 1 + k as u64).store(*w, Ordering::Relaxed);
        }
        to.store(j, Ordering::Relaxed);
        from.store(i + 1, Ordering::Release);
        Self::slot_word(new, j, 0).store(full_ctrl(f, 0, None) | (c & MOVE_KEEP), Ordering::Release);
        crash::point("map.moved");
        Self::slot_word(old, i, 0).store(moved_ctrl(c, d.round), Ordering::Release);
        Ok(state(f) == EMPTY)
    }

    /// The full hash of a slot's key, read from the slot or its entry.
    /// A key placed by value is its placement under the tag its control
    /// word holds, which is the top of its hash (and what a move copies).
    #[inline]
    fn hash_of_slot(&self, words: [u64; 3], c: u64) -> Result<u64> {
        if K::BY_VALUE {
            if let Some(key) = slot_key_word(self.inner(), words, c)? {
                return Ok((c & TAG_FIELD) | placement_of(key));
            }
        }
        if c & INLINE_BIT != 0 {
            let (kl, _) = inline_lens(c);
            let b = bytes_of_words(&words);
            // A constant length where the key type has one: no call to
            // `memcpy` and no loop in the hash.
            return Ok(match Self::FIXED {
                Some((ks, _)) if kl == ks => Self::hash(&b[..ks]),
                _ => Self::hash(&b[..kl.min(INLINE)]),
            });
        }
        let (entry, kl) = (words[0], words[1] & 0xffff_ffff);
        if kl > MAX_ENTRY || entry < HEADER_SIZE {
            return Err(self.inner().corrupt(format!("map {:?}: entry {entry} of {kl} bytes", self.name)));
        }
        self.inner().ptr(entry, kl)?;
        let mut key = vec![0u8; kl as usize];
        self.inner().read_bytes(entry, &mut key)?;
        Ok(Self::hash(&key))
    }

    // --------------------------------------------------------- snapshots

    /// Every entry, copied out while all writers are held off (readers go
    /// on meanwhile).
    pub fn entries(&self) -> Result<Vec<(K::Owned, V::Owned)>> {
        self.check_magic()?;
        let _mg = self.lock_migration()?;
        let _stripes = self.lock_all_stripes()?;
        let d = self.read_desc()?;
        let mut out = Vec::new();
        // Each entry is a block of its own, so all of them together fit in
        // the segment: slots that alias one entry (garbage) would
        // otherwise copy it once per slot.
        let (mut copied, limit) = (0u64, self.heap.size());
        for (table, cap) in d.tables() {
            for (_, words, c) in self.full_slots(table, cap)? {
                let (k, v) = self.slot_bytes(words, c)?;
                copied = copied.saturating_add((k.len() + v.len()) as u64);
                if copied > limit {
                    return Err(self
                        .inner()
                        .corrupt(format!("map {:?}: entries hold more than the heap", self.name)));
                }
                match (K::decode(&k), V::decode(&v)) {
                    (Some(k), Some(v)) => out.push((k, v)),
                    _ => return Err(self.inner().corrupt(format!("map {:?}: undecodable entry", self.name))),
                }
            }
        }
        Ok(out)
    }

    fn full_slots(&self, table: u64, cap: u64) -> Result<Vec<(u64, [u64; 3], u64)>> {
        full_slots(self.inner(), table, cap)
    }

    fn slot_bytes(&self, words: [u64; 3], c: u64) -> Result<(Vec<u8>, Vec<u8>)> {
        slot_bytes(self.inner(), words, c)
    }
}

/// Offset in a map's header of word `field` of stripe `s % STRIPES`.
const fn stripe_field(s: usize, field: u64) -> u64 {
    STRIPE_BASE + STRIPE_BYTES * (s % STRIPES) as u64 + field
}

/// The descriptor of the map at `off`.
fn desc_at(inner: &Inner, off: u64) -> Result<Desc> {
    Ok(desc_in(&inner.block(off, M_ROUND + 8)?))
}

/// The descriptor in a map header `h` (through `M_ROUND` at least).
#[inline]
fn desc_in(h: &Block<'_>) -> Desc {
    let load = |at: u64| h.word(at).load(Ordering::Relaxed);
    Desc {
        epoch: h.word(M_EPOCH).load(Ordering::Acquire),
        table: load(M_TABLE),
        cap: load(M_CAP),
        new_table: load(M_NEW_TABLE),
        new_cap: load(M_NEW_CAP),
        round: load(M_ROUND),
        used: load(M_USED),
    }
}

/// The full slots of a table: (offset, payload, control).
fn full_slots(inner: &Inner, table: u64, cap: u64) -> Result<Vec<(u64, [u64; 3], u64)>> {
    if !cap.is_power_of_two() || cap > MAX_CAP || table < HEADER_SIZE || table % SLOT_SIZE != 0 {
        return Err(inner.corrupt(format!("map table {table} of {cap} slots")));
    }
    inner.ptr(table, cap * SLOT_SIZE)?;
    let mut out = Vec::new();
    for i in 0..cap {
        let slot = table + i * SLOT_SIZE;
        let c = inner.load(slot)?;
        if state(c) == FULL {
            out.push((slot, [inner.load(slot + 8)?, inner.load(slot + 16)?, inner.load(slot + 24)?], c));
        }
    }
    Ok(out)
}

/// A slot's key and value bytes.
fn slot_bytes(inner: &Inner, words: [u64; 3], c: u64) -> Result<(Vec<u8>, Vec<u8>)> {
    if c & INLINE_BIT != 0 {
        let (kl, vl) = inline_lens(c);
        if kl + vl > INLINE {
            return Err(inner.corrupt(format!("map slot with inline lengths {kl}+{vl}")));
        }
        let b = bytes_of_words(&words);
        return Ok((b[..kl].to_vec(), b[kl..kl + vl].to_vec()));
    }
    let (entry, kl, vl) = (words[0], words[1] & 0xffff_ffff, words[1] >> 32);
    if entry < HEADER_SIZE || kl + vl > MAX_ENTRY {
        return Err(inner.corrupt(format!("map entry {entry} of {kl}+{vl} bytes")));
    }
    inner.ptr(entry, kl + vl)?;
    let mut k = vec![0u8; kl as usize];
    let mut v = vec![0u8; vl as usize];
    inner.read_bytes(entry, &mut k)?;
    inner.read_bytes(entry + kl, &mut v)?;
    Ok((k, v))
}

/// Bytes of the block holding the table of `cap` slots at `table`: more
/// than its slots when a resize grew it in place and was killed before
/// switching to it (see `grow_table`). `runs_held`: the caller holds the
/// run lock (else this takes it, so a grower killed inside the
/// allocator's transaction is rolled back first).
fn table_bytes(inner: &Inner, table: u64, cap: u64, runs_held: bool) -> u64 {
    let bytes = cap.saturating_mul(SLOT_SIZE);
    if crate::alloc::class_for(bytes, 64).is_some() {
        return bytes;
    }
    let len = if runs_held {
        inner.large_block_len_locked(table)
    } else {
        inner.large_block_len(table).ok().flatten()
    };
    len.filter(|&n| n > bytes).unwrap_or(bytes)
}

/// The tables of the map at `off` that hold keys, read with its locks
/// held (see [`Desc::tables`]).
fn tables_of(inner: &Inner, off: u64) -> Result<Vec<(u64, u64)>> {
    Ok(desc_at(inner, off)?.tables().collect())
}

/// What `check` and `remove` need of a map, with no key or value type:
/// its tables and its out-of-line entries, as (offset, bytes, alignment).
/// The caller holds the run lock.
pub(crate) fn blocks(inner: &Inner, off: u64) -> Result<Vec<(u64, u64, u64)>> {
    if inner.load(off + M_MAGIC)? != MAGIC {
        return Err(inner.corrupt(format!("map at {off}: bad magic")));
    }
    let mut out = Vec::new();
    for (table, cap) in tables_of(inner, off)? {
        for (_, words, c) in full_slots(inner, table, cap)? {
            if c & INLINE_BIT == 0 {
                let (kl, vl) = (words[1] & 0xffff_ffff, words[1] >> 32);
                out.push((words[0], (kl + vl).max(1), 8));
            }
        }
        out.push((table, table_bytes(inner, table, cap, true), 64));
    }
    Ok(out)
}

/// Live entries counted by the stripes, and full slots in the tables
/// (they must agree when no write runs).
pub(crate) fn counts(inner: &Inner, off: u64) -> Result<(u64, u64)> {
    let mut stripes = 0u64;
    for s in 0..STRIPES {
        stripes = stripes.wrapping_add(inner.load(off + stripe_field(s, S_LEN))?);
    }
    let mut full = 0;
    for (table, cap) in tables_of(inner, off)? {
        full += full_slots(inner, table, cap)?.len() as u64;
    }
    Ok((stripes, full))
}

/// The undo logs of the map at `off` that hold entries, as (log offset,
/// count). With every map lock held (dead holders rolled back on the
/// way), a log that is not empty can only be garbage: its writer would
/// have emptied it before letting go.
pub(crate) fn stale_logs(inner: &Inner, off: u64) -> Result<Vec<(u64, u64)>> {
    let stripes = (0..STRIPES).map(|s| off + stripe_field(s, S_LOG));
    let mut stale = Vec::new();
    for log in std::iter::once(off + M_LOG).chain(stripes) {
        let n = inner.load(log)?;
        if n != 0 {
            stale.push((log, n));
        }
    }
    Ok(stale)
}

/// The first slot that contradicts the dense mark of the map at `off`
/// (see [`M_DENSE`]): a key placed by value outside its home line, or
/// with a placement past the table. `None` when the map is not marked,
/// not placed by value, or resizing (the resize's writes keep the mark
/// right as they go). Every map lock held.
pub(crate) fn false_dense(inner: &Inner, off: u64) -> Result<Option<u64>> {
    let d = desc_at(inner, off)?;
    let placed_by_value = inner.load(off + M_PLACE)? == 1;
    if !placed_by_value || inner.load(off + M_DENSE)? == 0 || d.migrating() {
        return Ok(None);
    }
    let (table, cap) = (d.table, d.cap);
    for (slot, words, c) in full_slots(inner, table, cap)? {
        let i = (slot - table) / SLOT_SIZE;
        let v = slot_key_word(inner, words, c)?.map(placement_of);
        if !v.is_some_and(|v| v < cap && home_slot(v, cap - 1, true) >> 1 == i >> 1) {
            return Ok(Some(i));
        }
    }
    Ok(None)
}

/// The key of a full slot as a little-endian word, inline or out of line;
/// `None` for a key longer than 8 bytes (no key placed by value is).
fn slot_key_word(inner: &Inner, words: [u64; 3], c: u64) -> Result<Option<u64>> {
    if c & INLINE_BIT != 0 {
        let (kl, _) = inline_lens(c);
        return Ok((kl <= 8).then(|| words[0] & inline_masks(kl)[0]));
    }
    let (entry, kl) = (words[0], words[1] & 0xffff_ffff);
    if kl > 8 || entry < HEADER_SIZE {
        return Ok(None);
    }
    let mut key = [0u8; 8];
    inner.read_bytes(entry, &mut key[..kl as usize])?;
    Ok(Some(u64::from_le_bytes(key)))
}

/// Clears the dense mark of the map at `off`: its next growth moves the
/// keys that need it. Every map lock held.
pub(crate) fn clear_dense(inner: &Inner, off: u64) -> Result<()> {
    inner.store(off + M_DENSE, 0)
}

/// Marks a removed map: its epoch moves on, so readers that started
/// before retry and see the zeroed magic. Every map lock held.
pub(crate) fn retire(inner: &Inner, off: u64) -> Result<()> {
    inner.atomic(off + M_EPOCH)?.fetch_add(2, Ordering::AcqRel);
    Ok(())
}

/// Takes the migration lock of the map at `off`, and settles what a dead
/// holder left: its log rolled back (by the lock), a descriptor change
/// (an odd epoch) ended, and a move it left half done finished.
fn lock_migration(inner: &Inner, off: u64) -> Result<MutexGuard<'_>> {
    let g = inner.lock(off + M_LOCK, off + M_LOG, M_LOG_CAP)?;
    let epoch = inner.atomic(off + M_EPOCH)?;
    if epoch.load(Ordering::Acquire) & 1 == 1 {
        epoch.fetch_add(1, Ordering::AcqRel);
    }
    settle_move(inner, off)?;
    Ok(g)
}

/// Finishes the move a dead migrator was publishing (its record at
/// `M_MOVE_FROM` / `M_MOVE_TO`): when the new slot already holds the old
/// slot's key (the same copied control bits and payload) and the old slot
/// is still full, the old one is marked moved, so the key is in one table
/// only. Writers leave the tables alone while the record is set, and the
/// migration lock is held: no one else writes either slot meanwhile.
fn settle_move(inner: &Inner, off: u64) -> Result<()> {
    let from = inner.atomic(off + M_MOVE_FROM)?;
    let i = from.load(Ordering::Acquire);
    if i == 0 {
        return Ok(());
    }
    let (i, j) = (i - 1, inner.load(off + M_MOVE_TO)?);
    let (table, cap) = (inner.load(off + M_TABLE)?, inner.load(off + M_CAP)?);
    let (new_table, new_cap) = (inner.load(off + M_NEW_TABLE)?, inner.load(off + M_NEW_CAP)?);
    // Garbage (slots past the largest table, tables in the segment
    // header or off the slot grid) is dropped with the record: this store
    // bypasses the checks of `Txn::set`.
    let table_ok = |t: u64| t >= HEADER_SIZE && t % SLOT_SIZE == 0;
    if table_ok(table) && table_ok(new_table) && i < cap.min(MAX_CAP) && j < new_cap.min(MAX_CAP) {
        let (old_slot, new_slot) = (table.wrapping_add(i * SLOT_SIZE), new_table.wrapping_add(j * SLOT_SIZE));
        let (c, f) = (inner.load(old_slot)?, inner.load(new_slot)?);
        let same = |w: u64| Ok::<_, Error>(inner.load(old_slot + w)? == inner.load(new_slot + w)?);
        if state(c) == FULL
            && state(f) == FULL
            && c & MOVE_KEEP == f & MOVE_KEEP
            && same(8)?
            && same(16)?
            && same(24)?
        {
            inner.store(old_slot, moved_ctrl(c, inner.load(off + M_ROUND)?))?;
        }
    }
    from.store(0, Ordering::Release);
    Ok(())
}

/// Takes every lock of the map at `off` (migration, then stripes), in the
/// order writers use, rolling back dead holders.
pub(crate) fn lock_all(inner: &Inner, off: u64) -> Result<Vec<MutexGuard<'_>>> {
    let mut guards = vec![lock_migration(inner, off)?];
    for s in 0..STRIPES {
        let b = off + stripe_field(s, 0);
        guards.push(inner.lock(b + S_LOCK, b + S_LOG, S_LOG_CAP)?);
    }
    Ok(guards)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every probe sequence visits every slot of the table once, from the
    /// home slot, its line first, for both placements.
    #[test]
    fn the_probe_is_a_permutation_from_the_home_slot() {
        let mut h = 0x9e37_79b9_7f4a_7c15u64;
        for bits in 1..=10 {
            let mask = (1u64 << bits) - 1;
            for _ in 0..50 {
                h = h.rotate_left(17).wrapping_mul(0x2545_f491_4f6c_dd1d).wrapping_add(bits);
                for by_value in [false, true] {
                    let probe = ProbeSeq::new(h, mask, by_value);
                    let seq: Vec<u64> = (0..=mask).map(|k| probe.slot(k)).collect();
                    let home = home_slot(h, mask, by_value);
                    assert_eq!(seq[0], home);
                    assert_eq!(seq[1], home ^ 1);
                    assert_eq!(probe.line(0), home & !1);
                    let mut sorted = seq.clone();
                    sorted.sort_unstable();
                    assert_eq!(sorted, (0..=mask).collect::<Vec<_>>(), "hash {h:#x}, {bits} bits");
                }
                assert_eq!(home_slot(h, mask, false), h & mask);
                assert_eq!(
                    ProbeSeq::new(h, mask, false).line(3),
                    ((h & mask & !1) + 6) & mask,
                    "linear by hash"
                );
            }
        }
    }

    /// Keys 0, 1, 2... keep their order, across a multiple of the table
    /// size too (one slot is skipped there, the digit carry), and keys
    /// that share their low bits get distinct homes.
    #[test]
    fn home_slots_keep_runs_and_spread_strides() {
        let mask = (1u64 << 12) - 1;
        let home = |k: u64| home_slot(key_hash(&k.to_le_bytes(), true), mask, true);
        for i in 0..=mask {
            assert_eq!(home(i), i);
            let base = 5 << 12 | 4000;
            let step = home(base + i + 1).wrapping_sub(home(base + i)) & mask;
            assert!(step == 1 || (step == 2 && (base + i + 1) & mask == 0), "a run across 2^12: {step}");
        }
        // tests/processes.rs relies on this pair sharing a home slot.
        for a in 1..=mask {
            assert_eq!(home(a), home(a - 1 + mask + 1), "{a} and {a} - 1 + cap");
        }
        for shift in 0..12 {
            let mut homes: Vec<u64> = (0..=mask).map(|i| home(i << shift)).collect();
            homes.sort_unstable();
            homes.dedup();
            assert_eq!(homes.len() as u64, mask + 1, "keys i << {shift}");
        }
        for shift in [40, 48, 52] {
            let homes: std::collections::HashSet<u64> = (0..4096u64).map(|i| home(i << shift)).collect();
            assert!(homes.len() > 2000, "keys i << {shift}: {} homes", homes.len());
        }
    }

    /// Integer keys keep their low bits (their home slot) and take the
    /// mixing hash's tag; other keys hash.
    #[test]
    fn integer_keys_are_placed_by_value() {
        for k in [0u64, 1, 2, 12345, PLACE_BITS, PLACE_BITS + 1, u64::MAX] {
            let h = key_hash(&k.to_le_bytes(), true);
            if k <= PLACE_BITS {
                assert_eq!(h & PLACE_BITS, k);
            }
            assert_eq!(h >> TAG_SHIFT, hash_bytes(&k.to_le_bytes()) >> TAG_SHIFT);
            assert_eq!(key_hash(&k.to_le_bytes(), false), hash_bytes(&k.to_le_bytes()));
        }
        assert_eq!(key_hash(&7u32.to_le_bytes(), true) & PLACE_BITS, 7);
        let by_value = [<u64 as Bytes>::BY_VALUE, <i32 as Bytes>::BY_VALUE, <usize as Bytes>::BY_VALUE];
        assert_eq!(by_value, [true; 3]);
        let by_hash = [<f64 as Bytes>::BY_VALUE, <u128 as Bytes>::BY_VALUE, <str as Bytes>::BY_VALUE];
        assert_eq!(by_hash, [false; 3]);
    }

    /// Keys placed by value that share a home slot (`a + j·(cap - 1)`:
    /// their digits sum to `a`) are found past the home line, where the
    /// inline lookup, which starts from the placement alone, takes the
    /// stride from the full hash; absent keys of that home are not.
    #[test]
    fn lookups_past_the_home_line_stride_by_the_full_hash() {
        let dir = tempfile::tempdir().unwrap();
        let heap = crate::Heap::create(dir.path().join("h"), 1 << 20).unwrap();
        let map = heap.map_with_capacity::<u64, u64>("m", 3000).unwrap();
        let cap = map.capacity().unwrap() as u64;
        let same_home = |j: u64| 100 + j * (cap - 1);
        let home = |k: u64| home_slot(key_hash(&k.to_le_bytes(), true), cap - 1, true);
        assert!((0..12).all(|j| home(same_home(j)) == home(100)));
        for j in 0..10 {
            map.insert(&same_home(j), &j).unwrap();
        }
        assert_eq!(map.capacity().unwrap() as u64, cap, "no resize");
        for j in 0..10 {
            assert_eq!(map.get(&same_home(j)).unwrap(), Some(j), "key {j} of the shared home");
        }
        assert_eq!(map.get(&same_home(11)).unwrap(), None);
        assert_eq!(map.get_many(&[same_home(9), same_home(11)]).unwrap(), vec![Some(9), None]);
    }

    /// A filler that read the header before a resize and stores after the
    /// filler of the new table must not bring the old table back (found
    /// in review: a lookup could then pair the new epoch with the old
    /// table); and the table's address and size travel together.
    #[test]
    fn the_descriptor_cache_never_goes_back_to_an_older_epoch() {
        let cache = DescCache::default();
        assert!(cache.get().is_none());
        // Never dereferenced: any 64-byte aligned addresses do.
        let (old, new) =
            (std::ptr::without_provenance_mut::<u8>(64 << 10), std::ptr::without_provenance_mut(128 << 10));
        cache.set(10, new, 1 << 20);
        cache.set(6, old, 16);
        assert_eq!(cache.get(), Some((10, new, (1 << 20) - 1)));
        cache.set(12, old, 16);
        assert_eq!(cache.get(), Some((12, old, 15)));
    }
}
