//! Producer-only speed: how fast one thread appends 64-byte messages, and
//! how fast one thread reads them back.
//!
//! `cargo run --release -p mmkit-queue --example append_only -- [MESSAGES]`

use std::time::Instant;

use mmkit_queue::{Queue, Start};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: u64 = std::env::args().nth(1).map_or(Ok(5_000_000), |s| s.parse())?;
    let dir = tempfile::tempdir()?;
    let q =
        Queue::options().create(true).segment_size(512 << 20).timestamps(false).open(dir.path().join("q"))?;
    let mut p = q.producer()?;
    let msg = [7u8; 64];
    let t = Instant::now();
    for _ in 0..n {
        p.append(&msg)?;
    }
    let w = t.elapsed().as_secs_f64();
    let mut r = q.reader(Start::Beginning)?;
    let t = Instant::now();
    let mut got = 0;
    while r.next()?.is_some() {
        got += 1;
    }
    let rd = t.elapsed().as_secs_f64();
    println!(
        "append: {:.1} ns/msg ({:.2} M/s); read: {:.1} ns/msg ({:.2} M/s), {got} read",
        w * 1e9 / n as f64,
        n as f64 / w / 1e6,
        rd * 1e9 / n as f64,
        n as f64 / rd / 1e6
    );
    Ok(())
}
