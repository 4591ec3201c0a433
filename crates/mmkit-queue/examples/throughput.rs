//! Quick throughput and latency check: one producer process, one consumer
//! process, 64-byte messages.
//!
//! `cargo run --release -p mmkit-queue --example throughput -- [MESSAGES] [spin|park|replay|replay-copy|replay-into] [ts]`
//! (`replay`: the consumer starts once the producer is done, and reads the
//! backlog from the page cache; `replay-copy` also copies each payload into
//! a buffer of its own, `replay-into` has `next_into` copy it there; `ts`:
//! records carry timestamps)
//!
//! The full comparison against peers lives in `mmkit-bench`.

use std::process::Command;
use std::time::{Duration, Instant};

use mmkit_queue::{Queue, Start, WaitPolicy};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--produce") {
        return produce(&args[2], args[3].parse()?);
    }
    let n: u64 = args.get(1).map_or(Ok(5_000_000), |s| s.parse())?;
    let mode = args.get(2).map_or("spin", String::as_str);
    let park = mode == "park";
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("q");
    let ts = args.get(3).map(String::as_str) == Some("ts");
    let q = Queue::options().create(true).segment_size(256 << 20).timestamps(ts).open(&path)?;
    let mut reader = q.reader(Start::Beginning)?;
    reader.set_wait_policy(if park { WaitPolicy::BALANCED } else { WaitPolicy::SPIN });
    let mut child = Command::new(std::env::current_exe()?)
        .args(["--produce", path.to_str().ok_or("path")?, &n.to_string()])
        .spawn()?;
    if mode.starts_with("replay") && !child.wait()?.success() {
        return Err("the producer process failed".into());
    }
    let mut got = 0u64;
    let mut start = None;
    let mut sum = 0u64;
    let mut buf = [0u8; 64];
    let wait = Some(Duration::from_secs(30));
    while got < n {
        if mode == "replay-into" {
            let Some(c) = reader.next_into(&mut buf, wait)? else { break };
            sum = sum.wrapping_add(buf[c.len - 1] as u64);
        } else {
            let Some(r) = reader.next_timeout(wait)? else { break };
            if mode == "replay-copy" {
                buf.copy_from_slice(r.payload());
                sum = sum.wrapping_add(buf[63] as u64);
            } else {
                sum = sum.wrapping_add(r.payload()[0] as u64);
            }
        }
        start.get_or_insert_with(Instant::now);
        got += 1;
    }
    let secs = start.map_or(0.0, |s| s.elapsed().as_secs_f64());
    if !child.wait()?.success() {
        return Err(format!("the producer process failed after {got} messages").into());
    }
    println!(
        "{got} messages of 64 B, 1 producer process -> 1 consumer process ({}): {:.2} M msg/s (checksum {sum})",
        match mode {
            "park" => "spin then park",
            "replay" => "reading the backlog",
            "replay-copy" => "reading the backlog into a buffer",
            "replay-into" => "reading the backlog with next_into",
            _ => "spinning",
        },
        got as f64 / secs / 1e6
    );
    Ok(())
}

fn produce(path: &str, n: u64) -> Result<(), Box<dyn std::error::Error>> {
    let q = Queue::open(path)?;
    let mut p = q.producer()?;
    let msg = [7u8; 64];
    for _ in 0..n {
        p.append(&msg)?;
    }
    Ok(())
}
