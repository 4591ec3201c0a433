//! What every peer shares: the 64-byte message, the clocks, the producer and
//! consumer loops, and the report a child process prints.

use std::io;

use serde::{Deserialize, Serialize};

/// Message size of every workload.
pub const MSG: usize = 64;
/// One message.
pub type Msg = [u8; MSG];

/// `seq` of the marker a producer sends when it is done.
pub const END: u64 = u64::MAX;
/// `seq` of the marker that starts the idle period of a latency run.
pub const IDLE: u64 = u64::MAX - 1;

/// Messages per second of the latency workloads.
pub const LATENCY_RATE: u64 = 100_000;
/// Length of the idle period whose consumer CPU time is reported.
pub const IDLE_NS: u64 = 1_000_000_000;

/// CLOCK_MONOTONIC in nanoseconds: comparable across processes.
pub fn now_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// CPU time of this process (all threads) in nanoseconds.
pub fn cpu_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// Builds a message: sequence number, send time, producer id, then filler.
pub fn encode(seq: u64, stamp: u64, producer: u32) -> Msg {
    let mut m = [0xA5u8; MSG];
    m[0..8].copy_from_slice(&seq.to_le_bytes());
    m[8..16].copy_from_slice(&stamp.to_le_bytes());
    m[16..20].copy_from_slice(&producer.to_le_bytes());
    m
}

/// Reads back `(seq, stamp, producer)`.
pub fn decode(m: &[u8]) -> (u64, u64, u32) {
    let word = |r: std::ops::Range<usize>| {
        let mut b = [0u8; 8];
        b[..r.len()].copy_from_slice(&m[r]);
        u64::from_le_bytes(b)
    };
    (word(0..8), word(8..16), word(16..20) as u32)
}

/// The producer's side of a peer.
pub trait Sender {
    /// Sends one message (it may sit in a buffer until `flush`).
    fn send(&mut self, m: &Msg) -> io::Result<()>;
    /// Makes everything sent so far visible to the consumer.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
    /// Sends several messages at once (what a peer's batch API does; one
    /// `send` each by default).
    fn send_batch(&mut self, msgs: &[Msg]) -> io::Result<()> {
        msgs.iter().try_for_each(|m| self.send(m))
    }
}

/// Messages per batch in the batched workload.
pub const BATCH: usize = 256;

/// The consumer's side of a peer.
pub trait Receiver {
    /// Blocks (spinning or parking, as the peer was opened) for the next message.
    fn recv(&mut self, out: &mut Msg) -> io::Result<()>;
}

/// The workload a child process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
pub enum Kind {
    /// As fast as possible, for a fixed time.
    Throughput,
    /// At [`LATENCY_RATE`], then an idle second.
    Latency,
    /// At [`LATENCY_RATE`]; one producer SIGKILLs itself mid-stream.
    Recovery,
    /// As fast as possible, handing [`BATCH`] messages over at once.
    Batched,
    /// At [`LATENCY_RATE`]; one producer is SIGKILLed while it holds a
    /// claim of 100 000 frames (a batch it is filling).
    BatchRecovery,
}

impl Kind {
    /// Whether a producer dies mid-stream in this workload.
    pub fn is_recovery(self) -> bool {
        matches!(self, Kind::Recovery | Kind::BatchRecovery)
    }

    /// Whether this workload measures messages per second.
    pub fn is_throughput(self) -> bool {
        matches!(self, Kind::Throughput | Kind::Batched)
    }
}

/// What a consumer child prints as one JSON line.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Report {
    /// Messages received (markers excluded).
    pub count: u64,
    /// From the first message to the last END marker.
    pub elapsed_ns: u64,
    /// Messages out of per-producer order (must be 0).
    pub disorder: u64,
    /// Latency percentiles in ns: p50, p99, p99.9 (latency runs).
    pub latency: Option<[u64; 3]>,
    /// CPU time over wall time during the idle period, in percent.
    pub idle_cpu: Option<f64>,
    /// Recovery runs: ns from the victim's death to the first message sent after it being received.
    pub recovery_ns: Option<u64>,
}

/// Percentiles p50, p99, p99.9 of `v` (sorted in place).
pub fn percentiles(v: &mut [u64]) -> Option<[u64; 3]> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    Some([at(0.50), at(0.99), at(0.999)])
}

/// The durable table's loop: runs `batch_of` (one batch of `batch`
/// messages, acknowledged durable when it returns) for `secs`; returns
/// (messages, elapsed ns, per-message ack latencies in ns).
pub fn durable_batches(
    batch: usize,
    secs: f64,
    mut batch_of: impl FnMut() -> io::Result<()>,
) -> io::Result<(u64, u64, Vec<u64>)> {
    let start = now_ns();
    let (mut count, mut lat) = (0u64, Vec::new());
    while now_ns() - start < (secs * 1e9) as u64 {
        let t0 = now_ns();
        batch_of()?;
        // Every message of the batch was submitted at t0 and is durable now.
        lat.extend(std::iter::repeat_n(now_ns() - t0, batch));
        count += batch as u64;
    }
    Ok((count, now_ns() - start, lat))
}

/// Spins until `deadline` (monotonic ns); the latency producers pace this way
/// because a sleep cannot hit a 10 µs interval.
fn wait_until(deadline: u64) {
    while now_ns() < deadline {
        std::hint::spin_loop();
    }
}

/// The producer loop of every process peer, ending with an END marker.
pub fn produce<S: Sender>(s: &mut S, kind: Kind, secs: f64, id: u32) -> io::Result<()> {
    produce_stream(s, kind, secs, id)?;
    s.send(&encode(END, now_ns(), id))?;
    s.flush()
}

/// The producer loop without the END marker (a recovery victim's); returns
/// the next sequence number.
pub fn produce_stream<S: Sender>(s: &mut S, kind: Kind, secs: f64, id: u32) -> io::Result<u64> {
    let run_ns = (secs * 1e9) as u64;
    let start = now_ns();
    let mut seq = 0u64;
    match kind {
        Kind::Throughput => loop {
            for _ in 0..256 {
                s.send(&encode(seq, 0, id))?;
                seq += 1;
            }
            if now_ns() - start >= run_ns {
                break;
            }
        },
        Kind::Batched => {
            let mut batch = [[0u8; MSG]; BATCH];
            loop {
                for m in &mut batch {
                    *m = encode(seq, 0, id);
                    seq += 1;
                }
                s.send_batch(&batch)?;
                if now_ns() - start >= run_ns {
                    break;
                }
            }
        }
        Kind::Latency | Kind::Recovery | Kind::BatchRecovery => {
            let interval = 1_000_000_000 / LATENCY_RATE;
            let mut next = start;
            while next - start < run_ns {
                wait_until(next);
                s.send(&encode(seq, now_ns(), id))?;
                s.flush()?;
                seq += 1;
                next += interval;
                // After a hiccup, do not burst to catch up: keep the rate.
                let now = now_ns();
                if now > next + 100 * interval {
                    next = now;
                }
            }
            if kind == Kind::Latency {
                s.send(&encode(IDLE, now_ns(), id))?;
                s.flush()?;
                std::thread::sleep(std::time::Duration::from_nanos(IDLE_NS));
            }
        }
    }
    Ok(seq)
}

/// The consumer loop of every process peer: counts, checks per-producer
/// order, records latencies and the idle CPU, until `producers` END markers
/// (a recovery run's victim never sends one: it is not counted there).
pub fn consume<R: Receiver>(
    r: &mut R,
    kind: Kind,
    producers: u32,
    kill_stamp: Option<&std::path::Path>,
) -> io::Result<Report> {
    let mut rep = Report::default();
    let mut next_seq = [0u64; 16];
    let mut lat = Vec::new();
    let mut recv_log: Vec<(u64, u64)> = Vec::new(); // (send stamp, receive time)
    let (mut first, mut ends) = (0u64, 0u32);
    let mut idle = (0u64, 0u64);
    let mut m = [0u8; MSG];
    loop {
        r.recv(&mut m)?;
        let (seq, stamp, id) = decode(&m);
        // Throughput runs read the clock only at the first message and at
        // the END markers: a clock read per message would cost as much as
        // the fastest peers' whole hand-off.
        let timed = !kind.is_throughput() || first == 0 || seq >= IDLE;
        let now = if timed { now_ns() } else { 0 };
        if seq == END {
            ends += 1;
            if kind == Kind::Latency && idle.0 != 0 {
                let (cpu, wall) = (cpu_ns() - idle.0, now - idle.1);
                rep.idle_cpu = Some(100.0 * cpu as f64 / wall.max(1) as f64);
            }
            if ends >= producers {
                rep.elapsed_ns = now.saturating_sub(first);
                break;
            }
            continue;
        }
        if seq == IDLE {
            idle = (cpu_ns(), now);
            continue;
        }
        if first == 0 {
            first = now;
        }
        rep.count += 1;
        let slot = (id as usize).min(next_seq.len() - 1);
        if seq != next_seq[slot] {
            rep.disorder += 1;
        }
        next_seq[slot] = seq + 1;
        match kind {
            Kind::Latency => lat.push(now.saturating_sub(stamp)),
            Kind::Recovery | Kind::BatchRecovery => recv_log.push((stamp, now)),
            Kind::Throughput | Kind::Batched => {}
        }
    }
    rep.latency = percentiles(&mut lat);
    if let Some(path) = kill_stamp {
        rep.recovery_ns = recovery_from_log(&recv_log, path);
    }
    Ok(rep)
}

/// The victim wrote its death time into `path`: the recovery time is when
/// the first message sent after that was received, minus that time.
fn recovery_from_log(log: &[(u64, u64)], path: &std::path::Path) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let killed: u64 = text.trim().parse().ok()?;
    log.iter().filter(|(stamp, _)| *stamp > killed).map(|(_, got)| got.saturating_sub(killed)).min()
}
