//! What one random memory access costs here: the bound on map lookups and
//! inserts in a table much larger than the CPU's caches.
//!
//! `cargo run --release -p mmkit-heap --example memory_latency -- [MiB]` (64 by
//! default, the size of a 1M-key map's table). Reads 8-byte words at
//! random cache lines of a mapping over `/dev/shm` (where the heap
//! benchmarks live; 4 KiB pages unless
//! `/sys/kernel/mm/transparent_hugepage/shmem_enabled` allows huge ones)
//! and of anonymous memory with transparent huge pages: one after another
//! (each address depends on the word read before, as in a lookup that
//! waits for its slot) and independently (addresses known in advance, as
//! in a batch of lookups).

use std::error::Error;
use std::sync::atomic::Ordering;
use std::time::Instant;

use mmkit_region::{Access, HugePages, MapOptions, Mapping, Mode, Share};

fn rng(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

const READS: u64 = 4_000_000;

/// The word at `off` of `map`.
#[inline(always)]
fn read(map: &Mapping, off: u64) -> u64 {
    let (base, len) = map.raw_parts();
    assert!(off % 8 == 0 && off + 8 <= len as u64);
    // SAFETY: `off` is 8-aligned and inside the mapping (asserted), which
    // `map` keeps mapped; no other process has it, and this thread only
    // reads it here, so the plain read races with nothing. (The checked
    // `Access` loads cost a poison check per read, which would hide the
    // overlap of misses measured here.)
    unsafe { std::ptr::read_volatile(base.add(off as usize).cast::<u64>()) }
}

fn measure(name: &str, map: &Mapping) -> Result<(), Box<dyn Error>> {
    let len = map.len() as u64;
    for off in (0..len).step_by(4096) {
        map.atomic_u64(off)?.store(off | 1, Ordering::Relaxed);
    }
    let lines = len / 64;
    let (mut s, mut x) = (1u64, 0u64);
    let t = Instant::now();
    for _ in 0..READS {
        x = read(map, ((rng(&mut s) ^ x) % lines) * 64) & 1;
    }
    let dependent = t.elapsed().as_nanos() as f64 / READS as f64;
    let mut sum = 0u64;
    let t = Instant::now();
    for _ in 0..READS {
        sum = sum.wrapping_add(read(map, (rng(&mut s) % lines) * 64));
    }
    let independent = READS as f64 / t.elapsed().as_secs_f64() / 1e6;
    println!(
        "{name}: one after another {dependent:.0} ns per read; independent {independent:.1} M reads/s ({})",
        sum & x
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    let mib: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(64);
    let len = mib << 20;
    let shmem = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/shmem_enabled");
    println!("shmem_enabled: {}", shmem.unwrap_or_default().trim());
    let path = std::path::Path::new("/dev/shm").join(format!("mmkit-latency-{}", std::process::id()));
    std::fs::File::create(&path)?.set_len(len)?;
    let shm = MapOptions::new().mode(Mode::ReadWrite).map_path(&path);
    std::fs::remove_file(&path)?;
    measure(&format!("/dev/shm, {mib} MiB"), &shm?)?;
    let mut anon = MapOptions::new();
    anon.mode(Mode::ReadWrite);
    let huge = anon.clone().huge(HugePages::Transparent).map_anonymous(len as usize, Share::Private)?;
    measure(&format!("anonymous, transparent huge pages, {mib} MiB"), &huge)?;
    let small = anon.map_anonymous(512 << 10, Share::Private)?;
    measure("anonymous, 512 KiB (in the L2 cache)", &small)?;
    Ok(())
}
