//! Offsets and constants of the segment format (`docs/heap-format.md`).
//! Every number here is part of the format; the layout fingerprint in the
//! header hashes them, so a build that changes one refuses old segments.
//! Public for the tests and tools that inspect segments; not a stable API.
#![allow(missing_docs)]

use crate::types::{FNV_SEED, fnv};

/// Magic number at offset 0.
pub const MAGIC: [u8; 8] = *b"MMKHEAP\0";
/// Format version.
pub const VERSION: u32 = 6;
/// Bytes of the header; the heap's runs start here.
pub const HEADER_SIZE: u64 = 16384;
/// Page size of the run allocator.
pub const PAGE: u64 = 4096;
/// Slab size: small blocks live in 64 KiB slabs aligned to 64 KiB.
pub const SLAB: u64 = 65536;
/// Largest size served by a size class.
pub const MAX_SMALL: u64 = 8192;
/// Number of size classes.
pub const CLASSES: usize = 32;
/// Bytes of a run descriptor at the start of every run.
pub const RUN_HEADER: u64 = 64;
/// Largest alignment an allocation may ask for.
pub const MAX_ALIGN: u64 = 64;
/// Smallest segment: the header and one slab.
pub const MIN_SIZE: u64 = HEADER_SIZE + 2 * SLAB;
/// Largest `max_size` accepted: 2^46 bytes (64 TiB of address space).
pub const MAX_MAX_SIZE: u64 = 1 << 46;

// ---- header fields
pub const H_VERSION: u64 = 8;
pub const H_LAYOUT: u64 = 16;
pub const H_MAX_SIZE: u64 = 24;
pub const H_SIZE: u64 = 32;
pub const H_CREATED: u64 = 40;

// ---- run allocator ("page heap")
pub const PH_LOCK: u64 = 128;
pub const PH_HEAP_END: u64 = 160;
pub const PH_LAST_RUN: u64 = 168;
/// Every byte from this offset on was never carved, so it still holds the
/// zeros the file grew with: a run carved there needs no zeroing.
pub const PH_ZERO_FROM: u64 = 176;
pub const PH_BINS: u64 = 192;
pub const NBINS: usize = 64;
pub const PH_LOG: u64 = PH_BINS + 8 * NBINS as u64; // 704
pub const PH_LOG_CAP: u64 = 48;

// ---- registry
pub const REG_LOCK: u64 = 1920;
pub const REG_TABLE: u64 = 1952;
pub const REG_CAP: u64 = 1960;
pub const REG_COUNT: u64 = 1968;
pub const REG_EVENTS: u64 = 1984;
pub const REG_LOG: u64 = 2048;
pub const REG_LOG_CAP: u64 = 8;

// ---- size classes
pub const CLASS_BASE: u64 = 4096;
pub const CLASS_STRIDE: u64 = 192;
pub const C_LOCK: u64 = 0;
pub const C_FREE: u64 = 32;
pub const C_BUMP: u64 = 40;
pub const C_BUMP_END: u64 = 48;
pub const C_SLABS: u64 = 56;
pub const C_LOG: u64 = 64;
pub const C_LOG_CAP: u64 = 5;

/// Bytes an undo log with `cap` entries takes: a count and 24-byte entries.
pub const fn log_bytes(cap: u64) -> u64 {
    8 + 24 * cap
}

const _: () = assert!(PH_LOG + log_bytes(PH_LOG_CAP) <= REG_LOCK);
const _: () = assert!(REG_LOG + log_bytes(REG_LOG_CAP) <= CLASS_BASE);
const _: () = assert!(C_LOG + log_bytes(C_LOG_CAP) <= CLASS_STRIDE);
const _: () = assert!(CLASS_BASE + CLASS_STRIDE * CLASSES as u64 <= HEADER_SIZE);

// ---- run descriptors
pub const RUN_MAGIC: u64 = 0x4e55_524b; // "KRUN"
pub const KIND_FREE: u64 = 1;
pub const KIND_SLAB: u64 = 2;
pub const KIND_LARGE: u64 = 3;
pub const R_TAG: u64 = 0;
pub const R_PAGES: u64 = 8;
pub const R_PREV_PAGES: u64 = 16;
pub const R_INFO: u64 = 24;
pub const R_NEXT: u64 = 32;
pub const R_PREV: u64 = 40;

/// The tag word of a run of `kind`.
pub const fn run_tag(kind: u64) -> u64 {
    RUN_MAGIC | kind << 32
}

/// Block size of class `c`: 16, 32, 48, 64, then four steps per doubling
/// up to 8192.
pub const fn class_size(c: usize) -> u64 {
    if c < 4 {
        return 16 * (c as u64 + 1);
    }
    let e = 6 + (c as u64 - 4) / 4;
    let sub = (c as u64 - 4) % 4;
    (1 << e) + (sub + 1) * (1 << (e - 2))
}

/// The smallest class holding `size` bytes (1..=MAX_SMALL).
#[inline]
pub fn class_of(size: u64) -> usize {
    if size <= 64 {
        return (size.max(1) as usize).div_ceil(16) - 1;
    }
    let s = size - 1;
    let e = 63 - s.leading_zeros() as u64;
    let sub = (s >> (e - 2)) & 3;
    (4 + (e - 6) * 4 + sub) as usize
}

/// Bytes at the start of a slab of class `c` (descriptor and bitmap),
/// and the number of blocks after them.
pub const fn slab_geometry(c: usize) -> (u64, u64) {
    let size = class_size(c);
    let n0 = (SLAB - RUN_HEADER) / size;
    let header = (RUN_HEADER + n0.div_ceil(64) * 8).div_ceil(64) * 64;
    (header, (SLAB - header) / size)
}

/// Free-run bin of a run of `pages` pages: exact up to 32, then one bin
/// per power of two.
pub fn bin_of(pages: u64) -> usize {
    if pages <= 32 {
        return pages.max(1) as usize - 1;
    }
    let log = 63 - pages.leading_zeros() as usize;
    (32 + log - 5).min(NBINS - 1)
}

/// A hash of every constant above: two builds that agree on it agree on
/// the layout.
pub fn fingerprint() -> u64 {
    let mut h = fnv(FNV_SEED, b"mmkit-heap layout 1");
    for v in [
        HEADER_SIZE,
        PAGE,
        SLAB,
        MAX_SMALL,
        CLASSES as u64,
        RUN_HEADER,
        PH_LOCK,
        PH_ZERO_FROM,
        PH_BINS,
        NBINS as u64,
        PH_LOG,
        PH_LOG_CAP,
        REG_LOCK,
        REG_LOG,
        CLASS_BASE,
        CLASS_STRIDE,
        C_LOG_CAP,
        crate::registry::ENTRY_SIZE,
        crate::map::SLOT_SIZE,
        crate::map::STRIPES as u64,
        crate::map::HEADER_BYTES,
        crate::vec::HEADER_BYTES,
        crate::boxed::HEADER_BYTES,
    ] {
        h = fnv(h, &v.to_le_bytes());
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_cover_every_small_size_tightly() {
        assert_eq!(class_size(CLASSES - 1), MAX_SMALL);
        for size in 1..=MAX_SMALL {
            let c = class_of(size);
            assert!(class_size(c) >= size, "{size}");
            assert!(c == 0 || class_size(c - 1) < size, "{size}");
        }
        for c in 0..CLASSES {
            let (h, n) = slab_geometry(c);
            assert!(n >= 7 && h % 64 == 0 && h + n * class_size(c) <= SLAB, "class {c}");
            assert!(RUN_HEADER + n.div_ceil(64) * 8 <= h);
        }
    }

    #[test]
    fn bins_are_monotonic() {
        let mut last = 0;
        for p in 1..100_000 {
            let b = bin_of(p);
            assert!(b >= last && b < NBINS);
            last = b;
        }
    }
}
