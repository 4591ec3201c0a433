//! Times lock-free lookups in one process: `cargo run --release -p
//! mmkit-heap --example lookups -- [keys] [ops] [shift]`. The keys are
//! `i << shift` for i below `keys` (default 0: the keys 0, 1, 2...), to
//! see what keys that share their low bits cost.

use std::time::Instant;

fn main() -> Result<(), mmkit_heap::Error> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<u64>().unwrap_or(0));
    let keys = args.next().filter(|&k| k > 0).unwrap_or(1_000_000);
    let ops = args.next().filter(|&k| k > 0).unwrap_or(10_000_000);
    // 64: keys from a mixing function, in no order at all.
    let shift = args.next().unwrap_or(0).min(64);
    let key = |i: u64| {
        if shift == 64 { (i ^ (i >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9) ^ i << 7 } else { i << shift }
    };
    let name = format!("mmkit-heap-example-{}", std::process::id());
    let heap = mmkit_heap::HeapOptions::new().size(64 << 20).max_size(8 << 30).create_shm(&name)?;
    let map = heap.map::<u64, u64>("map")?;
    let t = Instant::now();
    for k in 0..keys {
        map.insert(&key(k), &(k * 3))?;
    }
    println!("{keys} inserts: {:.2} M/s", keys as f64 / t.elapsed().as_secs_f64() / 1e6);
    let mut s = 88172645463325252u64;
    let mut sum = 0u64;
    let t = Instant::now();
    for _ in 0..ops {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        sum = sum.wrapping_add(map.get(&key(s % keys))?.unwrap_or(0));
    }
    println!("{ops} lookups: {:.2} M/s (sum {sum})", ops as f64 / t.elapsed().as_secs_f64() / 1e6);
    mmkit_heap::Heap::unlink_shm(&name)
}
