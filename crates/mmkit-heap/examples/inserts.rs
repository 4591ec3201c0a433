//! Times inserts of keys 0, 1, 2... into fresh maps in one process, each
//! map growing from its first slots: `cargo run --release -p mmkit-heap
//! --example inserts -- [keys] [rounds] [batched|whole|reserved]`. Small
//! key counts keep the table in the CPU's caches, which isolates the
//! instructions from the misses; `batched` inserts 512 pairs per
//! `insert_many` call, `whole` all of them in one call (which sizes the
//! table once), `reserved` one `insert` per key after a `reserve`, and
//! `fresh` one `insert` per key on a new heap each round, as the
//! benchmark does (the other modes reuse the space of earlier rounds'
//! maps: no fresh pages from the kernel after the first round).

use std::time::Instant;

fn main() -> Result<(), mmkit_heap::Error> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<u64>().unwrap_or(0));
    let keys = args.next().filter(|&k| k > 0).unwrap_or(1_000_000);
    let rounds = args.next().filter(|&k| k > 0).unwrap_or(5);
    let mode = std::env::args().nth(3).unwrap_or_default();
    let whole: Vec<(u64, u64)> =
        if mode == "whole" { (0..keys).map(|k| (k, k * 3)).collect() } else { Vec::new() };
    let name = format!("mmkit-heap-inserts-{}", std::process::id());
    let create = || mmkit_heap::HeapOptions::new().size(64 << 20).max_size(8 << 30).create_shm(&name);
    let mut heap = create()?;
    let mut rates = Vec::new();
    for round in 0..rounds {
        if mode == "fresh" && round > 0 {
            drop(heap);
            mmkit_heap::Heap::unlink_shm(&name)?;
            heap = create()?;
        }
        let map = heap.map::<u64, u64>(&format!("map{round}"))?;
        let t = Instant::now();
        if mode == "whole" {
            map.insert_many(&whole)?;
        } else if mode == "batched" {
            let mut pairs = Vec::with_capacity(512);
            for first in (0..keys).step_by(512) {
                pairs.clear();
                pairs.extend((first..keys.min(first + 512)).map(|k| (k, k * 3)));
                map.insert_many(&pairs)?;
            }
        } else {
            if mode == "reserved" {
                map.reserve(keys as usize)?;
            }
            for k in 0..keys {
                map.insert(&k, &(k * 3))?;
            }
        }
        rates.push(keys as f64 / t.elapsed().as_secs_f64() / 1e6);
        drop(map);
        heap.remove(&format!("map{round}"))?;
    }
    rates.sort_by(f64::total_cmp);
    println!("{keys} inserts, {rounds} rounds: median {:.2} M/s", rates[rates.len() / 2]);
    mmkit_heap::Heap::unlink_shm(&name)
}
