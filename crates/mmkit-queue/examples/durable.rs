//! Group-commit throughput and acknowledgement latency: one thread appends
//! 64-byte messages as fast as it can while another waits for durability
//! acknowledgements (pipelined), then a closed-loop run with 8 threads
//! calling `append_durable`.
//!
//! `cargo run --release -p mmkit-queue --example durable -- [MESSAGES]`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mmkit_queue::{Durability, Queue};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: u64 = std::env::args().nth(1).map_or(Ok(2_000_000), |s| s.parse())?;
    let dir = tempfile::tempdir()?;
    let q = Queue::options()
        .create(true)
        .segment_size(256 << 20)
        .timestamps(false)
        .durability(Durability::GroupCommit { interval_us: 500, max_batch: 65536 })
        .open(dir.path().join("q"))?;
    // Pipelined: the appender never waits; an acknowledger waits for the
    // latest index and records how long acknowledgements took.
    let last = Arc::new(AtomicU64::new(u64::MAX));
    let acker = {
        let (q, last) = (q.clone(), last.clone());
        std::thread::spawn(move || -> Result<(u64, Duration), mmkit_queue::Error> {
            let (mut rounds, mut worst) = (0, Duration::ZERO);
            loop {
                let idx = last.load(Ordering::Acquire);
                if idx == u64::MAX - 1 {
                    return Ok((rounds, worst));
                }
                if idx == u64::MAX {
                    std::thread::yield_now();
                    continue;
                }
                let t = Instant::now();
                q.wait_durable(idx, None)?;
                worst = worst.max(t.elapsed());
                rounds += 1;
            }
        })
    };
    let mut p = q.producer()?;
    let msg = [1u8; 64];
    let t = Instant::now();
    for _ in 0..n {
        let i = p.append(&msg)?;
        last.store(i, Ordering::Release);
    }
    let final_idx = last.load(Ordering::Acquire);
    q.wait_durable(final_idx, None)?;
    let secs = t.elapsed().as_secs_f64();
    last.store(u64::MAX - 1, Ordering::Release);
    let (rounds, worst) = acker.join().map_err(|_| "acker panicked")??;
    println!(
        "group commit, pipelined: {n} msgs durable in {secs:.2} s = {:.2} M msg/s ({rounds} flush waits, worst ack {worst:?})",
        n as f64 / secs / 1e6
    );
    // Closed loop: 8 threads, each waits for its own acknowledgement.
    let t = Instant::now();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let q = q.clone();
            std::thread::spawn(move || -> Result<Vec<Duration>, mmkit_queue::Error> {
                let mut p = q.producer()?;
                let mut lat = Vec::new();
                for _ in 0..300 {
                    let s = Instant::now();
                    p.append_durable(&[2u8; 64])?;
                    lat.push(s.elapsed());
                }
                Ok(lat)
            })
        })
        .collect();
    let mut lat = Vec::new();
    for th in threads {
        lat.extend(th.join().map_err(|_| "thread panicked")??);
    }
    lat.sort();
    println!(
        "group commit, 8 threads append_durable: {:.0} msg/s, ack latency p50 {:?} p99 {:?}",
        lat.len() as f64 / t.elapsed().as_secs_f64(),
        lat[lat.len() / 2],
        lat[lat.len() * 99 / 100]
    );
    Ok(())
}
