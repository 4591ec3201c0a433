//! The queue part of `mmkit demo`: real producer and consumer processes on
//! a temporary queue, one producer SIGKILLed mid-stream, one consumer
//! SIGKILLed and restarted on its named cursor, then an audit.
//!
//! What is counted, exactly:
//! - every producer logs `(seq, index)` of each append that returned (its
//!   acknowledgement) to an ack file, flushed every 4096 acks; a killed
//!   producer's unflushed acks are simply not claimed;
//! - every consumer verifies each payload (magic, producer, sequence,
//!   filler pattern, FNV-1a over the first 56 bytes) and logs
//!   `(index, producer, seq, torn)`; it flushes the log, then commits its
//!   cursor (process, then commit: at-least-once);
//! - **lost**: an acknowledged message that a consumer never received at
//!   its acknowledged index;
//! - **duplicated**: a message received twice by the same consumer, except
//!   a redelivery, after the consumer's restart, of a message its previous
//!   incarnation logged after its last commit (that is the at-least-once
//!   contract, counted separately as "redelivered"; more than a commit
//!   interval's worth of them would mean a lost commit, so they count as
//!   duplicated);
//! - **torn**: a payload that fails verification.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mmkit_queue::{Queue, WaitPolicy};

use crate::{CliError, CliResult};

const MSG: usize = 64;
const MAGIC: &[u8; 4] = b"MMKD";
const STOP: &[u8] = b"STOP";
/// A consumer commits its cursor after this many records (and when idle),
/// so a restart redelivers fewer than this many.
const COMMIT_EVERY: u64 = 8192;

/// A demo producer process.
#[derive(Debug, clap::Args)]
pub struct ProducerArgs {
    /// Queue directory.
    dir: PathBuf,
    /// Producer id.
    #[arg(long)]
    id: u32,
    /// Messages to append as fast as possible.
    #[arg(long)]
    burst: u64,
    /// Then this many seconds at `--rate` messages per second.
    #[arg(long, default_value_t = 0.0)]
    paced_secs: f64,
    /// Paced rate.
    #[arg(long, default_value_t = 20_000)]
    rate: u64,
    /// Where to log acknowledgements.
    #[arg(long)]
    acks: PathBuf,
}

/// A demo consumer process.
#[derive(Debug, clap::Args)]
pub struct ConsumerArgs {
    /// Queue directory.
    dir: PathBuf,
    /// Named cursor to read with.
    #[arg(long)]
    cursor: String,
    /// Where to log what was received.
    #[arg(long)]
    log: PathBuf,
}

fn payload(id: u32, seq: u64, phase: u8) -> [u8; MSG] {
    let mut m = [0u8; MSG];
    m[..4].copy_from_slice(MAGIC);
    m[4..8].copy_from_slice(&id.to_le_bytes());
    m[8..16].copy_from_slice(&seq.to_le_bytes());
    m[16] = phase;
    for (i, b) in m[17..56].iter_mut().enumerate() {
        *b = filler(id, seq, i);
    }
    let sum = fnv(&m[..56]);
    m[56..].copy_from_slice(&sum.to_le_bytes());
    m
}

fn filler(id: u32, seq: u64, i: usize) -> u8 {
    (seq as u8).wrapping_add(i as u8).wrapping_mul(31) ^ id as u8
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

/// `(id, seq, phase)` of an intact payload, `None` if torn.
fn verify(p: &[u8]) -> Option<(u32, u64, u8)> {
    if p.len() != MSG || &p[..4] != MAGIC {
        return None;
    }
    let id = u32::from_le_bytes(p[4..8].try_into().ok()?);
    let seq = u64::from_le_bytes(p[8..16].try_into().ok()?);
    let sum = u64::from_le_bytes(p[56..].try_into().ok()?);
    let pattern = p[17..56].iter().enumerate().all(|(i, &b)| b == filler(id, seq, i));
    (pattern && sum == fnv(&p[..56])).then_some((id, seq, p[16]))
}

fn now_epoch_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

fn create_file(path: &Path) -> CliResult<BufWriter<File>> {
    Ok(BufWriter::with_capacity(1 << 16, File::create(path).map_err(|e| CliError::io("create", path, e))?))
}

/// A producer's acknowledgements: `(seq, index)` pairs, flushed every 4096.
struct AckLog<'a> {
    w: BufWriter<File>,
    path: &'a Path,
    n: u64,
}

impl AckLog<'_> {
    fn push(&mut self, seq: u64, index: u64) -> CliResult<()> {
        let mut rec = [0u8; 16];
        rec[..8].copy_from_slice(&seq.to_le_bytes());
        rec[8..].copy_from_slice(&index.to_le_bytes());
        self.w.write_all(&rec).map_err(|e| CliError::io("write", self.path, e))?;
        self.n += 1;
        if self.n % 4096 == 0 {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> CliResult<()> {
        self.w.flush().map_err(|e| CliError::io("write", self.path, e))
    }
}

/// The producer role: a burst, then a paced phase; acks logged as it goes.
pub fn producer(a: ProducerArgs) -> CliResult<()> {
    let q = Queue::open(&a.dir)?;
    let mut p = q.producer()?;
    let mut acks = AckLog { w: create_file(&a.acks)?, path: &a.acks, n: 0 };
    let start = Instant::now();
    for seq in 0..a.burst {
        let index = p.append(&payload(a.id, seq, 0))?;
        acks.push(seq, index)?;
    }
    let burst_ns = start.elapsed().as_nanos() as u64;
    if a.paced_secs > 0.0 {
        wait_for_consumers(&q)?;
    }
    let interval = Duration::from_nanos(1_000_000_000 / a.rate.max(1));
    let (mut next, end) = (Instant::now(), Instant::now() + Duration::from_secs_f64(a.paced_secs));
    let mut seq = a.burst;
    while next < end {
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let index = p.append(&payload(a.id, seq, 1))?;
        acks.push(seq, index)?;
        seq += 1;
        next += interval;
    }
    acks.flush()?;
    println!("{}", serde_json::json!({ "burst": a.burst, "burst_ns": burst_ns }));
    Ok(())
}

/// Lets the consumers drain the burst (committed lag under 10k, at most
/// 3 s) so the paced phase measures delivery latency, not the backlog.
fn wait_for_consumers(q: &Queue) -> CliResult<()> {
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        let cursors = q.cursors()?;
        if !cursors.is_empty() && cursors.iter().all(|c| c.lag < 10_000) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// The consumer role: verify, log, commit; print latencies at STOP.
pub fn consumer(a: ConsumerArgs) -> CliResult<()> {
    let q = Queue::open(&a.dir)?;
    let mut c = q.cursor(&a.cursor)?;
    c.set_wait_policy(WaitPolicy::BALANCED);
    let mut log = create_file(&a.log)?;
    let mut lat = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut n = 0u64;
    loop {
        let Some(rec) = c.next_timeout(Some(Duration::from_millis(20)))? else {
            // Idle: what was processed is committed (flush the log first).
            log.flush().map_err(|e| CliError::io("write", &a.log, e))?;
            c.commit()?;
            if Instant::now() > deadline {
                return Err(CliError::Other("demo consumer: no STOP within 60 s".into()));
            }
            continue;
        };
        let (index, ts, p) = (rec.index(), rec.timestamp(), rec.payload());
        if p == STOP {
            break;
        }
        let (id, seq, torn) = match verify(p) {
            Some((id, seq, phase)) => {
                if phase == 1 && ts != 0 {
                    lat.push(now_epoch_ns().saturating_sub(ts));
                }
                (id, seq, 0u8)
            }
            None => (u32::MAX, 0, 1u8),
        };
        let mut entry = [0u8; 24];
        entry[..8].copy_from_slice(&index.to_le_bytes());
        entry[8..12].copy_from_slice(&id.to_le_bytes());
        entry[12..20].copy_from_slice(&seq.to_le_bytes());
        entry[20] = torn;
        log.write_all(&entry).map_err(|e| CliError::io("write", &a.log, e))?;
        n += 1;
        if n % COMMIT_EVERY == 0 {
            log.flush().map_err(|e| CliError::io("write", &a.log, e))?;
            c.commit()?;
        }
    }
    log.flush().map_err(|e| CliError::io("write", &a.log, e))?;
    c.commit()?;
    lat.sort_unstable();
    let at = |q: f64| lat.get(((lat.len().max(1) - 1) as f64 * q) as usize).copied().unwrap_or(0);
    println!("{}", serde_json::json!({ "count": n, "p50": at(0.5), "p99": at(0.99), "p999": at(0.999) }));
    Ok(())
}

// ------------------------------------------------------------------ parent

fn spawn(args: &[&str], dir: &Path, extra: &[(&str, &Path)]) -> CliResult<Child> {
    let exe = std::env::current_exe().map_err(|e| CliError::io("find the mmkit binary", "current_exe", e))?;
    let mut cmd = Command::new(&exe);
    cmd.arg("queue").args(args).arg(dir);
    for (flag, path) in extra {
        cmd.arg(flag).arg(path);
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::inherit());
    cmd.spawn().map_err(|e| CliError::io("spawn", exe, e))
}

fn kill9(child: &mut Child) {
    let _ = child.kill(); // SIGKILL
    let _ = child.wait();
}

/// SIGKILLs a child that must still be running: one that already exited
/// failed (it had far more work than it could finish by now).
fn kill9_running(child: &mut Child, what: &str) -> CliResult<()> {
    let exited = child.try_wait().map_err(|e| CliError::io("wait for", what, e))?;
    kill9(child);
    match exited {
        None => Ok(()),
        Some(status) => Err(CliError::Other(format!("demo: {what} exited before its kill ({status})"))),
    }
}

/// Waits for a child with a time limit and returns its stdout.
fn finish(mut child: Child, what: &str, limit: Duration) -> CliResult<serde_json::Value> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => break,
            Ok(Some(status)) => return Err(CliError::Other(format!("demo: {what} failed ({status})"))),
            Ok(None) if Instant::now() > deadline => {
                kill9(&mut child);
                return Err(CliError::Other(format!("demo: {what} did not finish in {limit:?}")));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(CliError::io("wait for", what, e)),
        }
    }
    let mut out = String::new();
    if let Some(mut s) = child.stdout.take() {
        s.read_to_string(&mut out).map_err(|e| CliError::io("read output of", what, e))?;
    }
    Ok(serde_json::from_str(out.trim()).unwrap_or(serde_json::Value::Null))
}

/// Runs the demo on a queue under `dir`.
pub fn run(dir: &Path) -> CliResult<()> {
    let qdir = dir.join("queue");
    Queue::options().create_new(true).segment_size(32 << 20).open(&qdir)?;
    println!("\n== persistent queue: producers and consumers in separate processes, with kill -9");
    println!("queue: {}", qdir.display());
    println!("  3 producer processes, 2 consumer processes on named cursors \"audit\" and \"billing\"");
    let file = |name: &str| dir.join(name);
    let audit = spawn(&["demo-consumer", "--cursor", "audit"], &qdir, &[("--log", &file("audit.log"))])?;
    let mut billing =
        spawn(&["demo-consumer", "--cursor", "billing"], &qdir, &[("--log", &file("billing-1.log"))])?;
    let burst = "300000";
    let mut producers = Vec::new();
    for id in 0..3u32 {
        let (count, paced) = if id == 1 { ("100000000", "0") } else { (burst, "1.0") };
        let args = [
            "demo-producer",
            "--id",
            &id.to_string(),
            "--burst",
            count,
            "--paced-secs",
            paced,
            "--rate",
            "20000",
        ];
        producers.push(spawn(&args, &qdir, &[("--acks", &file(&format!("acks-{id}.bin")))])?);
    }
    let started = Instant::now();
    std::thread::sleep(Duration::from_millis(150));
    kill9_running(&mut producers[1], "producer 1")?;
    println!("  SIGKILLed producer 1 mid-stream after {} ms", started.elapsed().as_millis());
    std::thread::sleep(Duration::from_millis(250));
    kill9_running(&mut billing, "the billing consumer")?;
    let billing =
        spawn(&["demo-consumer", "--cursor", "billing"], &qdir, &[("--log", &file("billing-2.log"))])?;
    println!(
        "  SIGKILLed consumer \"billing\" after {} ms and restarted it on its cursor",
        started.elapsed().as_millis()
    );
    let mut bursts = Vec::new();
    for (id, p) in producers.into_iter().enumerate() {
        if id != 1 {
            bursts.push(finish(p, "a producer", Duration::from_secs(30))?);
        }
    }
    Queue::open(&qdir)?.producer()?.append(STOP)?;
    let audit_out = finish(audit, "the audit consumer", Duration::from_secs(30))?;
    finish(billing, "the billing consumer", Duration::from_secs(30))?;
    report(dir, &bursts, &audit_out)
}

fn read_records(path: &Path, size: usize) -> CliResult<Vec<Vec<u8>>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(CliError::io("read", path, e)),
    };
    Ok(bytes.chunks_exact(size).map(<[u8]>::to_vec).collect())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8).and_then(|s| s.try_into().ok()).map(u64::from_le_bytes).unwrap_or(0)
}

/// The audit's tallies for one consumer.
#[derive(Default)]
struct Tally {
    received: u64,
    lost: u64,
    duplicated: u64,
    torn: u64,
    redelivered: u64,
    disorder: u64,
}

/// Checks one consumer's logs (one per incarnation) against the acks.
fn audit(logs: &[PathBuf], acks: &[Vec<(u64, u64)>]) -> CliResult<Tally> {
    let mut t = Tally::default();
    // (producer, seq) -> (index, incarnation)
    let mut seen: HashMap<(u32, u64), (u64, usize)> = HashMap::new();
    for (inc, log) in logs.iter().enumerate() {
        let mut last_seq: HashMap<u32, u64> = HashMap::new();
        for e in read_records(log, 24)? {
            let (index, seq) = (u64_at(&e, 0), u64_at(&e, 12));
            let id = u32::from_le_bytes([e[8], e[9], e[10], e[11]]);
            if e[20] != 0 {
                t.torn += 1;
                continue;
            }
            t.received += 1;
            if last_seq.get(&id).is_some_and(|&l| seq <= l) {
                t.disorder += 1;
            }
            last_seq.insert(id, seq);
            match seen.insert((id, seq), (index, inc)) {
                None => {}
                Some((i, prev)) if i == index && prev + 1 == inc && t.redelivered < COMMIT_EVERY => {
                    t.redelivered += 1
                }
                Some(_) => t.duplicated += 1,
            }
        }
    }
    for (id, list) in acks.iter().enumerate() {
        for &(seq, index) in list {
            match seen.get(&(id as u32, seq)) {
                Some(&(i, _)) if i == index => {}
                _ => t.lost += 1,
            }
        }
    }
    Ok(t)
}

fn report(dir: &Path, bursts: &[serde_json::Value], audit_out: &serde_json::Value) -> CliResult<()> {
    let acks: Vec<Vec<(u64, u64)>> = (0..3)
        .map(|id| {
            read_records(&dir.join(format!("acks-{id}.bin")), 16)
                .map(|v| v.iter().map(|r| (u64_at(r, 0), u64_at(r, 8))).collect())
        })
        .collect::<CliResult<_>>()?;
    let burst_msgs: u64 = bursts.iter().filter_map(|b| b["burst"].as_u64()).sum();
    let burst_ns = bursts.iter().filter_map(|b| b["burst_ns"].as_u64()).max().unwrap_or(1).max(1);
    println!(
        "  producer 1 had {} acknowledged appends when it died; producers 0 and 2 appended {} messages each",
        acks[1].len(),
        bursts.first().and_then(|b| b["burst"].as_u64()).unwrap_or(0)
    );
    let victim_in_window = acks[1].len() as u64;
    println!(
        "  throughput: {:.2} M msg/s appended (64 B, 3 producer processes, while 2 consumers followed)",
        (burst_msgs + victim_in_window) as f64 * 1e3 / burst_ns as f64
    );
    let us = |k: &str| audit_out[k].as_u64().unwrap_or(0) as f64 / 1e3;
    println!(
        "  latency append -> delivery at 40k msg/s (parking reader): p50 {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs",
        us("p50"),
        us("p99"),
        us("p999")
    );
    let a = audit(&[dir.join("audit.log")], &acks)?;
    let b = audit(&[dir.join("billing-1.log"), dir.join("billing-2.log")], &acks)?;
    println!(
        "  audit received {}, billing received {} (+{} redelivered after its restart: at-least-once)",
        a.received,
        b.received - b.redelivered,
        b.redelivered
    );
    let (lost, dup, torn) = (a.lost + b.lost, a.duplicated + b.duplicated, a.torn + b.torn);
    if a.disorder + b.disorder > 0 {
        println!("  per-producer order broken {} times", a.disorder + b.disorder);
    }
    println!("lost {lost}, duplicated {dup}, torn {torn}");
    if lost + dup + torn + a.disorder + b.disorder > 0 {
        return Err(CliError::Other(
            "demo: the audit found lost, duplicated, torn or reordered messages".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One consumer-log entry, as `consumer` writes it.
    fn entry(index: u64, id: u32, seq: u64, torn: bool) -> Vec<u8> {
        let mut e = vec![0u8; 24];
        e[..8].copy_from_slice(&index.to_le_bytes());
        e[8..12].copy_from_slice(&id.to_le_bytes());
        e[12..20].copy_from_slice(&seq.to_le_bytes());
        e[20] = u8::from(torn);
        e
    }

    #[test]
    fn verify_rejects_any_flipped_byte() {
        let good = payload(2, 77, 1);
        assert_eq!(verify(&good), Some((2, 77, 1)));
        for at in 0..MSG {
            let mut bad = good;
            bad[at] ^= 0x10;
            assert_eq!(verify(&bad), None, "flip at byte {at} not detected");
        }
        assert_eq!(verify(&good[..MSG - 1]), None);
    }

    #[test]
    fn audit_counts_lost_duplicated_torn_and_disorder() {
        let dir = tempfile::tempdir().unwrap();
        let acks = vec![vec![(0, 10), (1, 11), (2, 12)], Vec::new(), Vec::new()];
        // First incarnation: 0 and 1, then a torn record.
        let first = [entry(10, 0, 0, false), entry(11, 0, 1, false), entry(99, 0, 0, true)].concat();
        // Second: 1 redelivered (fine), 1 again (a duplicate, out of order); 2 never arrives.
        let second = [entry(11, 0, 1, false), entry(11, 0, 1, false)].concat();
        let logs = [dir.path().join("a"), dir.path().join("b")];
        std::fs::write(&logs[0], first).unwrap();
        std::fs::write(&logs[1], second).unwrap();
        let t = audit(&logs, &acks).unwrap();
        assert_eq!((t.received, t.lost, t.duplicated, t.torn, t.redelivered, t.disorder), (4, 1, 1, 1, 1, 1));
        // A clean run counts nothing.
        let clean = [entry(10, 0, 0, false), entry(11, 0, 1, false), entry(12, 0, 2, false)].concat();
        std::fs::write(&logs[0], clean).unwrap();
        let t = audit(&logs[..1], &acks).unwrap();
        assert_eq!((t.received, t.lost, t.duplicated, t.torn, t.redelivered, t.disorder), (3, 0, 0, 0, 0, 0));
    }
}
