//! `mmkit queue bench`: a quick, self-contained measurement of mmkit-queue
//! alone (a producer and a consumer thread on a temporary queue). The full
//! comparison with peers, across processes, is `mmkit-bench queue`.

use std::path::Path;
use std::time::{Duration, Instant};

use mmkit_queue::{Queue, Start, WaitPolicy};

use crate::{CliError, CliResult};

/// Options of `mmkit queue bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 1.0)]
    secs: f64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

const MSG: usize = 64;
const END: u64 = u64::MAX;
const RATE: u64 = 100_000;

/// Runs the quick bench.
pub fn run(args: BenchArgs) -> CliResult<()> {
    if args.secs.is_nan() {
        return Err(CliError::Usage("--secs must be a number of seconds".into()));
    }
    let tmp = tempfile::tempdir()
        .map_err(|e| CliError::io("create temporary directory", std::env::temp_dir(), e))?;
    let secs = args.secs.clamp(0.1, 60.0);
    let mut rows = Vec::new();
    for (name, policy) in [("spinning", WaitPolicy::SPIN), ("parking", WaitPolicy::BALANCED)] {
        let rate = throughput(&tmp.path().join(format!("t-{name}")), policy, secs)?;
        let lat = latency(&tmp.path().join(format!("l-{name}")), policy, secs)?;
        rows.push((name, rate, lat));
    }
    if args.json {
        let v: Vec<_> = rows
            .iter()
            .map(|(n, r, l)| {
                serde_json::json!({"wait": n, "msgs_per_sec": r, "latency_ns": {"p50": l[0], "p99": l[1], "p99_9": l[2]}})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("mmkit-queue, 64 B messages, 1 producer thread -> 1 consumer thread, {secs} s each");
    println!("| wait | throughput | latency at 100k msg/s p50 / p99 / p99.9 |");
    println!("|---|---|---|");
    for (n, r, l) in rows {
        println!("| {n} | {:.2} M msg/s | {:.1} / {:.1} / {:.1} µs |", r / 1e6, us(l[0]), us(l[1]), us(l[2]));
    }
    println!(
        "Peers (raw ring, sockets, pipe, crossbeam, yaque, queue-file, NATS): cargo run --release -p mmkit-bench -- queue"
    );
    Ok(())
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1e3
}

fn msg(seq: u64, stamp: u64) -> [u8; MSG] {
    let mut m = [0u8; MSG];
    m[..8].copy_from_slice(&seq.to_le_bytes());
    m[8..16].copy_from_slice(&stamp.to_le_bytes());
    m
}

fn word(p: &[u8], at: usize) -> u64 {
    p.get(at..at + 8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes).unwrap_or(0)
}

/// Runs `produce` in a thread and `consume` on each record until END.
fn pair(
    dir: &Path,
    policy: WaitPolicy,
    produce: impl FnOnce(&mut mmkit_queue::Producer) -> mmkit_queue::Result<()> + Send,
    mut consume: impl FnMut(&[u8]),
) -> CliResult<()> {
    let q = Queue::options().create(true).segment_size(256 << 20).open(dir)?;
    let mut reader = q.reader(Start::Beginning)?;
    reader.set_wait_policy(policy);
    let mut producer = q.producer()?;
    std::thread::scope(|s| {
        let p = s.spawn(move || -> mmkit_queue::Result<()> {
            produce(&mut producer)?;
            producer.append(&msg(END, 0))?;
            Ok(())
        });
        loop {
            let Some(rec) = reader.next_timeout(Some(Duration::from_secs(10)))? else {
                // A producer that failed sends no END: report its error.
                if p.is_finished() {
                    p.join().map_err(|_| CliError::Other("bench: producer thread panicked".into()))??;
                }
                return Err(CliError::Other("bench: the producer stalled".into()));
            };
            let p = rec.payload();
            if word(p, 0) == END {
                break;
            }
            consume(p);
        }
        p.join().map_err(|_| CliError::Other("bench: producer thread panicked".into()))??;
        Ok(())
    })
}

fn throughput(dir: &Path, policy: WaitPolicy, secs: f64) -> CliResult<f64> {
    let run = Duration::from_secs_f64(secs);
    let (mut count, mut first) = (0u64, None);
    pair(
        dir,
        policy,
        |p| {
            let start = Instant::now();
            let mut seq = 0;
            while start.elapsed() < run {
                for _ in 0..256 {
                    p.append(&msg(seq, 0))?;
                    seq += 1;
                }
            }
            Ok(())
        },
        |_| {
            first.get_or_insert_with(Instant::now);
            count += 1;
        },
    )?;
    let elapsed = first.map(|f| f.elapsed().as_secs_f64()).unwrap_or(1.0);
    Ok(count as f64 / elapsed.max(1e-9))
}

fn latency(dir: &Path, policy: WaitPolicy, secs: f64) -> CliResult<[u64; 3]> {
    let base = Instant::now();
    let run = Duration::from_secs_f64(secs);
    let mut lat = Vec::new();
    pair(
        dir,
        policy,
        |p| {
            let interval = Duration::from_nanos(1_000_000_000 / RATE);
            let mut next = Instant::now();
            let end = next + run;
            let mut seq = 0;
            while next < end {
                while Instant::now() < next {
                    std::hint::spin_loop();
                }
                p.append(&msg(seq, base.elapsed().as_nanos() as u64))?;
                seq += 1;
                next += interval;
            }
            Ok(())
        },
        |p| lat.push((base.elapsed().as_nanos() as u64).saturating_sub(word(p, 8))),
    )?;
    lat.sort_unstable();
    let at = |q: f64| lat.get(((lat.len().max(1) - 1) as f64 * q) as usize).copied().unwrap_or(0);
    Ok([at(0.5), at(0.99), at(0.999)])
}
