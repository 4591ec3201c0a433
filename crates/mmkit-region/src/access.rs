//! Checked, race-tolerant access to memory that other processes may write.
//!
//! Memory shared with another process can change at any moment, so handing
//! out `&[u8]` over it would let safe code observe a "immutable" slice
//! changing under it. Instead, everything here copies with volatile
//! accesses, or hands out atomics, after checking the range against the
//! mapping's length.

use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::error::{Error, Result};

/// Bounds-checked access to a mapped byte range.
///
/// Implemented by [`Mapping`](crate::Mapping) and
/// [`GrowableFile`](crate::GrowableFile). Implementors supply the raw
/// pointer, the length, writability and the SIGBUS poison check; the
/// provided methods do the rest.
///
/// # Safety
///
/// Implementors promise that `base()` points to `size()` bytes that stay
/// mapped (readable, and writable when `writable()` is true) for as long as
/// `&self` lives.
pub unsafe trait Access {
    /// Pointer to offset 0.
    fn base(&self) -> *mut u8;
    /// Number of accessible bytes.
    fn size(&self) -> usize;
    /// Whether writes are allowed.
    fn writable(&self) -> bool;
    /// The file behind the memory, for error messages.
    fn path(&self) -> Option<&Path>;
    /// Returns [`Error::Poisoned`] when a SIGBUS was caught in this memory.
    fn check_poison(&self, op: &'static str) -> Result<()>;

    /// Checks that `offset..offset+len` lies inside, and returns its start.
    fn checked_ptr(&self, op: &'static str, offset: u64, len: usize) -> Result<*mut u8> {
        let size = self.size() as u64;
        let end = offset.checked_add(len as u64);
        match end {
            Some(end) if end <= size => {
                // The range lies inside `size()`, which fits in `usize`.
                Ok(self.base().wrapping_add(offset as usize))
            }
            _ => Err(Error::OutOfBounds {
                op,
                path: self.path().map(Path::to_path_buf),
                offset,
                len: len as u64,
                size,
            }),
        }
    }

    /// Copies `buf.len()` bytes starting at `offset` into `buf`.
    ///
    /// The copy is volatile: another process may be writing the bytes at
    /// the same time, and the result is then some mix of old and new
    /// bytes, never undefined behaviour. Returns [`Error::Poisoned`] if the
    /// file was truncated under the mapping.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let src = self.checked_ptr("read", offset, buf.len())?;
        // SAFETY: `checked_ptr` proved `src..src+len` is inside the mapping,
        // which the `Access` contract keeps mapped while `&self` lives;
        // `buf` is a distinct, exclusively borrowed Rust allocation.
        unsafe { copy_from_shared(src, buf.as_mut_ptr(), buf.len()) };
        self.check_poison("read")
    }

    /// Copies `data` into the mapping at `offset`.
    fn write_at(&self, offset: u64, data: &[u8]) -> Result<()> {
        self.require_writable("write")?;
        let dst = self.checked_ptr("write", offset, data.len())?;
        // SAFETY: as in `read_at`; the mapping is writable (checked above).
        // `data` could only overlap the mapping if the caller got it from
        // an `unsafe` slice accessor (`Mapping::as_slice`), whose contract
        // forbids writing those bytes while it lives, so no overlapping
        // write happens here without the caller having broken a promise.
        unsafe { copy_to_shared(data.as_ptr(), dst, data.len()) };
        self.check_poison("write")
    }

    /// Fills `len` bytes at `offset` with `byte`.
    fn fill_at(&self, offset: u64, len: usize, byte: u8) -> Result<()> {
        self.require_writable("fill")?;
        let dst = self.checked_ptr("fill", offset, len)?;
        let pattern = usize::from_ne_bytes([byte; WORD]);
        for_each_word(dst, len, |i, whole| {
            // SAFETY: `dst..dst+len` is inside the writable mapping;
            // `for_each_word` passes `whole` only for aligned words that lie
            // entirely inside the range.
            unsafe {
                if whole {
                    dst.add(i).cast::<usize>().write_volatile(pattern);
                } else {
                    dst.add(i).write_volatile(byte);
                }
            }
        });
        self.check_poison("fill")
    }

    /// Returns an error unless the memory is writable.
    fn require_writable(&self, op: &'static str) -> Result<()> {
        if self.writable() {
            Ok(())
        } else {
            Err(Error::ReadOnly { op, path: self.path().map(Path::to_path_buf) })
        }
    }

    /// A shared `AtomicU32` at `offset`, which must be 4-byte aligned.
    ///
    /// The memory must be writable: a store through an atomic over a
    /// read-only mapping would fault. Use [`Access::load_u32`] to read
    /// read-only memory.
    fn atomic_u32(&self, offset: u64) -> Result<&AtomicU32> {
        self.require_writable("atomic_u32")?;
        let ptr = self.aligned_ptr("atomic_u32", offset, 4)?;
        // SAFETY: `ptr` is in bounds, 4-aligned and writable, and stays
        // mapped for the lifetime of `&self`. `AtomicU32` has the size and
        // alignment of `u32`; other processes access the word only through
        // atomics (the layouts in `docs/` say so), and any bit pattern is a
        // valid `u32`.
        Ok(unsafe { AtomicU32::from_ptr(ptr.cast()) })
    }

    /// A shared `AtomicU64` at `offset`, which must be 8-byte aligned.
    fn atomic_u64(&self, offset: u64) -> Result<&AtomicU64> {
        self.require_writable("atomic_u64")?;
        let ptr = self.aligned_ptr("atomic_u64", offset, 8)?;
        // SAFETY: as in `atomic_u32`, with 8-byte size and alignment.
        Ok(unsafe { AtomicU64::from_ptr(ptr.cast()) })
    }

    /// Atomically loads the `u32` at `offset` (4-byte aligned); works on
    /// read-only memory too.
    ///
    /// `Release` and `AcqRel`, which `AtomicU32::load` rejects with a
    /// panic, act as `Acquire` here.
    fn load_u32(&self, offset: u64, order: Ordering) -> Result<u32> {
        let ptr = self.aligned_ptr("load_u32", offset, 4)?;
        // SAFETY: in bounds, aligned, mapped while `&self` lives. On
        // read-only memory `load_with` only does `Relaxed` register-sized
        // loads, the one kind of atomic access Rust allows there (see
        // "Atomic accesses to read-only memory" in `std::sync::atomic`).
        let atomic = unsafe { AtomicU32::from_ptr(ptr.cast()) };
        let v = load_with(self.writable(), order, |o| atomic.load(o));
        self.check_poison("load_u32")?;
        Ok(v)
    }

    /// Atomically loads the `u64` at `offset` (8-byte aligned); works on
    /// read-only memory too. Orderings as in [`Access::load_u32`].
    fn load_u64(&self, offset: u64, order: Ordering) -> Result<u64> {
        let ptr = self.aligned_ptr("load_u64", offset, 8)?;
        // SAFETY: as in `load_u32`; 8 bytes is register-sized because the
        // crate only builds for 64-bit targets (see `lib.rs`).
        let atomic = unsafe { AtomicU64::from_ptr(ptr.cast()) };
        let v = load_with(self.writable(), order, |o| atomic.load(o));
        self.check_poison("load_u64")?;
        Ok(v)
    }

    /// Checks bounds and `align`-alignment of the absolute address.
    fn aligned_ptr(&self, op: &'static str, offset: u64, align: usize) -> Result<*mut u8> {
        let ptr = self.checked_ptr(op, offset, align)?;
        if (ptr as usize) % align != 0 {
            return Err(Error::Misaligned { op, offset, align: align as u64 });
        }
        Ok(ptr)
    }
}

/// Runs `load` with `order`, taking `Release` and `AcqRel` (on which
/// `load` would panic) as `Acquire`. On read-only memory only a `Relaxed` load is
/// allowed, so fences supply the ordering: an acquire fence after a relaxed
/// load synchronizes like an acquire load, and `SeqCst` gets a `SeqCst`
/// fence on both sides, as a store-then-load (Dekker) pattern needs.
fn load_with<T>(writable: bool, order: Ordering, load: impl Fn(Ordering) -> T) -> T {
    let order = match order {
        Ordering::Release | Ordering::AcqRel => Ordering::Acquire,
        other => other,
    };
    if writable {
        return load(order);
    }
    if order == Ordering::SeqCst {
        std::sync::atomic::fence(Ordering::SeqCst);
    }
    let v = load(Ordering::Relaxed);
    if order != Ordering::Relaxed {
        std::sync::atomic::fence(order);
    }
    v
}

const WORD: usize = std::mem::size_of::<usize>();

/// Walks `0..len` in the order a copy touches it, calling `step(i, true)`
/// for each whole word whose address `shared + i` is word-aligned, and
/// `step(i, false)` for each remaining byte (the unaligned head and the
/// short tail).
///
/// Only the shared side needs volatile accesses, and only it is aligned:
/// the private side is plain Rust memory read or written unaligned, so a
/// copy runs in words whatever the two pointers' alignments are. The main
/// loop takes four words per turn because the compiler does not unroll
/// around volatile accesses by itself; that roughly doubles throughput.
#[inline(always)]
fn for_each_word(shared: *const u8, len: usize, mut step: impl FnMut(usize, bool)) {
    let head = (shared as usize).wrapping_neg() % WORD;
    let mut i = 0;
    while i < head.min(len) {
        step(i, false);
        i += 1;
    }
    while i + 4 * WORD <= len {
        step(i, true);
        step(i + WORD, true);
        step(i + 2 * WORD, true);
        step(i + 3 * WORD, true);
        i += 4 * WORD;
    }
    while i + WORD <= len {
        step(i, true);
        i += WORD;
    }
    while i < len {
        step(i, false);
        i += 1;
    }
}

/// Copies `len` bytes out of memory another process may be writing, with
/// aligned volatile loads on the shared side.
///
/// # Safety
///
/// `src` must be readable and `dst` writable for `len` bytes, the two
/// ranges must not overlap, and nothing else may access `dst` meanwhile.
pub(crate) unsafe fn copy_from_shared(src: *const u8, dst: *mut u8, len: usize) {
    for_each_word(src, len, |i, whole| {
        // SAFETY: `i` (plus a word when `whole`) lies inside both ranges
        // per the contract and `for_each_word`; `src + i` is word-aligned
        // when `whole`, the private `dst` side is written unaligned.
        unsafe {
            if whole {
                let v = src.add(i).cast::<usize>().read_volatile();
                dst.add(i).cast::<usize>().write_unaligned(v);
            } else {
                dst.add(i).write(src.add(i).read_volatile());
            }
        }
    });
}

/// Copies `len` bytes into memory another process may be reading or
/// writing, with aligned volatile stores on the shared side.
///
/// # Safety
///
/// `src` must be readable and `dst` writable for `len` bytes, the two
/// ranges must not overlap, and nothing may write `src` meanwhile.
pub(crate) unsafe fn copy_to_shared(src: *const u8, dst: *mut u8, len: usize) {
    for_each_word(dst, len, |i, whole| {
        // SAFETY: as in `copy_from_shared`, with the roles swapped: `dst +
        // i` is word-aligned when `whole`, the private `src` is read
        // unaligned.
        unsafe {
            if whole {
                let v = src.add(i).cast::<usize>().read_unaligned();
                dst.add(i).cast::<usize>().write_volatile(v);
            } else {
                dst.add(i).write_volatile(src.add(i).read());
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every combination of source/destination misalignment and length
    /// (covering head, unrolled body, single words and tail) copies
    /// exactly the requested bytes and nothing around them.
    #[test]
    fn copies_match_a_plain_copy_at_every_alignment() {
        let src: Vec<u8> = (0..200u8).collect();
        for from in 0..WORD {
            for to in 0..WORD {
                for len in 0..(src.len() - 2 * WORD) {
                    let want = &src[from..from + len];
                    let mut out = vec![0xAAu8; len + 2 * WORD];
                    // SAFETY: both ranges are in bounds of distinct vectors.
                    unsafe { copy_from_shared(src.as_ptr().add(from), out.as_mut_ptr().add(to), len) };
                    assert_eq!(&out[to..to + len], want, "from_shared {from} {to} {len}");
                    assert!(out[..to].iter().chain(&out[to + len..]).all(|&b| b == 0xAA));
                    let mut out = vec![0xAAu8; len + 2 * WORD];
                    // SAFETY: as above.
                    unsafe { copy_to_shared(src.as_ptr().add(from), out.as_mut_ptr().add(to), len) };
                    assert_eq!(&out[to..to + len], want, "to_shared {from} {to} {len}");
                    assert!(out[..to].iter().chain(&out[to + len..]).all(|&b| b == 0xAA));
                }
            }
        }
    }

    #[test]
    fn fill_at_touches_exactly_the_range_at_every_alignment() {
        let map = crate::Mapping::anonymous(4096, crate::Share::Private).unwrap();
        for offset in 0..2 * WORD as u64 {
            for len in 0..80 {
                map.fill_at(0, 128, 0).unwrap();
                map.fill_at(offset, len, 0x5A).unwrap();
                let mut out = [0u8; 128];
                map.read_at(0, &mut out).unwrap();
                for (i, &b) in out.iter().enumerate() {
                    let inside = (offset as usize..offset as usize + len).contains(&i);
                    assert_eq!(b, if inside { 0x5A } else { 0 }, "offset {offset} len {len} byte {i}");
                }
            }
        }
    }
}
