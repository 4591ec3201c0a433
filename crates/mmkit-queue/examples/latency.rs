//! One-way latency, producer process to consumer process, at a fixed rate
//! (default 100k msg/s), with the consumer spinning or parking; also the
//! consumer's CPU time, which shows whether parking really idles.
//!
//! `cargo run --release -p mmkit-queue --example latency -- [spin|park|balanced] [RATE] [SECONDS]`

use std::process::Command;
use std::time::{Duration, Instant};

use mmkit_queue::{Queue, Start, WaitPolicy};

fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--produce") {
        return produce(&args[2], args[3].parse()?, args[4].parse()?);
    }
    let park = args.get(1).map(String::as_str) != Some("spin");
    let rate: u64 = args.get(2).map_or(Ok(100_000), |s| s.parse())?;
    let secs: u64 = args.get(3).map_or(Ok(2), |s| s.parse())?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("q");
    let q = Queue::options().create(true).segment_size(256 << 20).open(&path)?;
    let mut reader = q.reader(Start::End)?;
    let balanced = args.get(1).map(String::as_str) == Some("balanced");
    reader.set_wait_policy(if balanced {
        WaitPolicy::BALANCED
    } else if park {
        WaitPolicy::PARK
    } else {
        WaitPolicy::SPIN
    });
    let n = rate * secs;
    let mut child = Command::new(std::env::current_exe()?)
        .args(["--produce", path.to_str().ok_or("path")?, &rate.to_string(), &n.to_string()])
        .spawn()?;
    let cpu0 = cpu_time();
    let wall = Instant::now();
    let mut lat = Vec::with_capacity(n as usize);
    while (lat.len() as u64) < n {
        let Some(r) = reader.next_timeout(Some(Duration::from_secs(10)))? else { break };
        lat.push(now_ns().saturating_sub(r.timestamp()));
    }
    let cpu = cpu_time() - cpu0;
    let wall = wall.elapsed();
    if !child.wait()?.success() || lat.is_empty() {
        return Err(format!("the producer process failed ({} messages arrived)", lat.len()).into());
    }
    lat.sort_unstable();
    let pct = |p: f64| Duration::from_nanos(lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)]);
    println!(
        "{} msgs at {rate}/s, consumer {}: p50 {:?} p99 {:?} p99.9 {:?}; consumer CPU {:.0}% of one core",
        lat.len(),
        if park { "parking" } else { "spinning" },
        pct(0.5),
        pct(0.99),
        pct(0.999),
        cpu.as_secs_f64() / wall.as_secs_f64() * 100.0
    );
    // Idle: nothing is appended; a parked reader should use no CPU.
    let cpu0 = cpu_time();
    let t = Instant::now();
    let _ = reader.next_timeout(Some(Duration::from_millis(500)))?;
    println!(
        "idle 0.5 s: consumer CPU {:.1}%",
        (cpu_time() - cpu0).as_secs_f64() / t.elapsed().as_secs_f64() * 100.0
    );
    Ok(())
}

fn cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

fn produce(path: &str, rate: u64, n: u64) -> Result<(), Box<dyn std::error::Error>> {
    let q = Queue::open(path)?;
    let mut p = q.producer()?;
    let start = Instant::now();
    for i in 0..n {
        let due = start + Duration::from_nanos(i * 1_000_000_000 / rate);
        while Instant::now() < due {
            std::hint::spin_loop();
        }
        p.append(&[0u8; 64])?;
    }
    Ok(())
}
