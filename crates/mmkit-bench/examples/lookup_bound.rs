//! How fast can a lookup in a 1M-key hash table in shared memory go on
//! this machine, whatever the map does? The bound the heap's `get` is
//! measured against (issue 13: ≥ 20M lookups/s on one core).
//!
//! `cargo run --release -p mmkit-bench --example lookup_bound`
//!
//! Builds a table with the heap's layout in `/dev/shm` (2M slots of 32
//! bytes, two slots per cache line, the control word then the key and the
//! value; 1M u64 keys placed by `mmkit_heap::hash_bytes` and probed line
//! after line: heap format 2, where every key was scattered; format 3
//! places integer keys by value, see docs/benchmarks-heap.md), then times 20M
//! lookups of random keys, drawn as the `heap` suite's `lookups` child
//! draws them (xorshift, then `%` the key count), three ways:
//!
//! - `home line only`: the key's home cache line, matched with selects, no
//!   probe loop and no checks (keys past their home line count as absent);
//! - `probe, no recheck`: the probe loop over lines, one branch on "found
//!   in this line", no second read of anything;
//! - `probe + recheck`: also reads both control words and the table's
//!   epoch again after the value, as a reader of memory that writers
//!   change must (a seqlock), which is the least a safe `get` does.
//!
//! Each prints the median of five rounds. The instructions each lookup
//! keeps in flight limit how many cache misses overlap (the CPU's
//! reorder window), so the three differ by far more than their work does.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering, fence};
use std::time::Instant;

use memmap2::MmapMut;

#[path = "../src/machine.rs"]
mod machine;

const KEYS: u64 = 1_000_000;
const SLOTS: u64 = 2 << 20;
const OPS: u64 = 20_000_000;
/// A full slot holding an inline 8-byte key and 8-byte value; the tag
/// (the hash's top 24 bits) goes above bit 40, as in the heap's format.
const FULL: u64 = 1 | 8 | 8 << 4 | 8 << 9;
const MATCH: u64 = 0x3fff | 0xff_ffff << 40;

/// Word `w` of slot `i`.
fn word(p: *mut u8, i: u64, w: u64) -> &'static AtomicU64 {
    // SAFETY: callers pass `i < SLOTS` (masked) and `w < 4`, so the word
    // lies inside the `SLOTS * 32`-byte mapping, which lives until `main`
    // returns; the mapping is page-aligned, so the word is 8-aligned.
    unsafe { AtomicU64::from_ptr(p.add((i * 32 + w * 8) as usize).cast()) }
}

fn hash(k: u64) -> u64 {
    mmkit_heap::hash_bytes(&k.to_le_bytes())
}

fn rng(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

fn fill(p: *mut u8) {
    for k in 0..KEYS {
        let h = hash(k);
        // The heap's probe order: the home line's two slots (the hash's
        // own first), then the lines after it.
        let slot = (0..SLOTS)
            .map(|step| (h & !1).wrapping_add(step ^ (h & 1)) & (SLOTS - 1))
            .find(|&i| word(p, i, 0).load(Ordering::Relaxed) == 0)
            .unwrap_or(0);
        word(p, slot, 1).store(k, Ordering::Relaxed);
        word(p, slot, 2).store(k.wrapping_mul(3), Ordering::Relaxed);
        word(p, slot, 0).store(FULL | (h >> 40) << 40, Ordering::Release);
    }
}

#[inline(never)]
fn home_line_only(p: *mut u8, keys: u64) -> u64 {
    let mut s = 2_654_435_761u64 + 1;
    let mut sum = 0u64;
    for _ in 0..OPS {
        let k = rng(&mut s) % keys;
        let line = hash(k) & (SLOTS - 1) & !1;
        let (k0, v0) = (word(p, line, 1).load(Ordering::Relaxed), word(p, line, 2).load(Ordering::Relaxed));
        let (k1, v1) =
            (word(p, line + 1, 1).load(Ordering::Relaxed), word(p, line + 1, 2).load(Ordering::Relaxed));
        let v = if k0 == k {
            v0
        } else if k1 == k {
            v1
        } else {
            0
        };
        sum = sum.wrapping_add(v);
    }
    sum
}

#[inline(always)]
fn probe(p: *mut u8, k: u64, epoch: &AtomicU64, recheck: bool) -> Option<u64> {
    let e = epoch.load(Ordering::Acquire);
    let h = hash(k);
    let expect = FULL | (h >> 40) << 40;
    let mut line = h & (SLOTS - 1) & !1;
    for _ in 0..32 {
        let read = |i: u64| {
            let c = word(p, i, 0).load(Ordering::Acquire);
            (c, word(p, i, 1).load(Ordering::Relaxed), word(p, i, 2).load(Ordering::Relaxed))
        };
        let ((c0, k0, v0), (c1, k1, v1)) = (read(line), read(line + 1));
        let hit0 = ((c0 & MATCH) == expect) & (k0 == k);
        let hit1 = ((c1 & MATCH) == expect) & (k1 == k);
        if black_box(hit0 | hit1) {
            let m = (hit1 as u64).wrapping_neg();
            let v = (v0 & !m) | (v1 & m);
            if !recheck {
                return Some(v);
            }
            fence(Ordering::Acquire);
            let again = (word(p, line, 0).load(Ordering::Relaxed) ^ c0)
                | (word(p, line + 1, 0).load(Ordering::Relaxed) ^ c1);
            return (again == 0 && epoch.load(Ordering::Relaxed) == e).then_some(v);
        }
        if c0 & 7 == 0 || c1 & 7 == 0 {
            return None;
        }
        line = (line + 2) & (SLOTS - 1);
    }
    None
}

#[inline(never)]
fn probe_loop(p: *mut u8, keys: u64, recheck: bool) -> u64 {
    let epoch = AtomicU64::new(2);
    let mut s = 2_654_435_761u64 + 1;
    let mut sum = 0u64;
    for _ in 0..OPS {
        let k = rng(&mut s) % keys;
        if let Some(v) = probe(p, k, &epoch, recheck) {
            sum = sum.wrapping_add(v);
        }
    }
    sum
}

fn main() -> std::io::Result<()> {
    machine::print_header(false);
    let path = format!("/dev/shm/mmkit-lookup-bound-{}", std::process::id());
    let file = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&path)?;
    std::fs::remove_file(&path)?;
    file.set_len(SLOTS * 32)?;
    // SAFETY: the file was created here and unlinked at once; no other
    // process can map it, and this process writes it only through `map`.
    let mut map = unsafe { MmapMut::map_mut(&file)? };
    let p = map.as_mut_ptr();
    fill(p);
    // Opaque, so the compiler divides as the benchmark's child must.
    let keys = black_box(KEYS);
    let runs: [(&str, &dyn Fn() -> u64); 3] = [
        ("home line only", &|| home_line_only(p, keys)),
        ("probe, no recheck", &|| probe_loop(p, keys, false)),
        ("probe + recheck", &|| probe_loop(p, keys, true)),
    ];
    for (name, run) in runs {
        let mut rates: Vec<f64> = (0..5)
            .map(|_| {
                let t = Instant::now();
                black_box(run());
                OPS as f64 / t.elapsed().as_secs_f64() / 1e6
            })
            .collect();
        rates.sort_by(f64::total_cmp);
        println!("{name:>18}: {:.2} M/s (rounds {:.2}-{:.2})", rates[2], rates[0], rates[4]);
    }
    Ok(())
}
