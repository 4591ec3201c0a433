//! mmkit-queue in the suite, in its default, safe configuration: CRC32C on
//! every record (computed on append, verified on read), private-copy reads,
//! timestamps on, segments on the real disk (ext4) next to the persistent
//! peers' files. Spinning readers use `WaitPolicy::SPIN`, parking readers
//! `WaitPolicy::BALANCED` (spin, yield, then futex).

use std::io;
use std::path::Path;

use mmkit_queue::{Durability, Producer, Queue, Reader, Retention, Start, WaitPolicy, format, index_segment};
use mmkit_region::Access;

use super::proto::{self, Kind, MSG, Msg, Receiver, Report, Sender};
use super::{ChildArgs, Peer, die};

/// Segment size for bench queues: large enough that rollover is rare but real.
const SEGMENT: u64 = 256 << 20;

/// Segment size of the bounded queue: as Aeron's default term buffers.
const BOUNDED_SEGMENT: u64 = 16 << 20;

/// The bounded queue keeps this much: older segments are recycled.
fn bounded_retention() -> Retention {
    Retention { max_total_bytes: Some(4 * BOUNDED_SEGMENT), ..Retention::default() }
}

fn io_err(e: mmkit_queue::Error) -> io::Error {
    io::Error::other(e)
}

/// Creates the queue directory for a run; `timestamps`: whether records
/// carry them (the default).
pub fn create(dir: &Path, timestamps: bool) -> io::Result<()> {
    Queue::options()
        .create_new(true)
        .segment_size(SEGMENT)
        .timestamps(timestamps)
        .open(dir)
        .map_err(io_err)?;
    Ok(())
}

struct MqSender(Producer);

impl Sender for MqSender {
    fn send(&mut self, m: &Msg) -> io::Result<()> {
        self.0.append(m).map_err(io_err)?;
        Ok(())
    }

    fn send_batch(&mut self, msgs: &[Msg]) -> io::Result<()> {
        let refs: Vec<&[u8]> = msgs.iter().map(|m| m.as_slice()).collect();
        self.0.append_batch(&refs).map_err(io_err)?;
        Ok(())
    }
}

/// Creates a bounded queue in its steady state: filled past its retention
/// once, so that retired segments have become spares, as in a queue that
/// has been running for a while. Its consumer reads on a named cursor
/// from the end.
pub fn create_bounded(dir: &Path) -> io::Result<()> {
    let q = Queue::options()
        .create_new(true)
        .segment_size(BOUNDED_SEGMENT)
        .retention(bounded_retention())
        .open(dir)
        .map_err(io_err)?;
    let mut p = q.producer().map_err(io_err)?;
    let msg = [0u8; MSG];
    while index_segment(p.append(&msg).map_err(io_err)?) < 7 {}
    q.apply_retention(&bounded_retention()).map_err(io_err)?;
    let mut c = q.cursor(BOUNDED_CURSOR).map_err(io_err)?;
    c.seek(q.end_index().map_err(io_err)?).map_err(io_err)?;
    c.commit().map_err(io_err)
}

/// The bounded queue's consumer cursor.
const BOUNDED_CURSOR: &str = "bounded";

/// A producer process; the victim of a recovery run dies holding a claim.
pub fn child_producer(a: &ChildArgs) -> io::Result<()> {
    let q = if a.peer == Peer::MmkitQueueBounded {
        Queue::options().retention(bounded_retention()).open(&a.addr[0])
    } else {
        Queue::open(&a.addr[0])
    }
    .map_err(io_err)?;
    let mut s = MqSender(q.producer().map_err(io_err)?);
    if a.victim && a.kind == Kind::BatchRecovery {
        let next = proto::produce_stream(&mut s, Kind::Recovery, a.secs / 3.0, a.id)?;
        die_in_batch(&q, &mut s.0, a, next)
    }
    if a.victim {
        proto::produce_stream(&mut s, Kind::Recovery, a.secs / 3.0, a.id)?;
        let claim = s.0.claim(MSG).map_err(io_err)?;
        // Killed between claim and commit: the worst case for readers.
        std::mem::forget(claim);
        die(a.kill_stamp.as_deref())
    }
    proto::produce(&mut s, a.kind, a.secs, a.id)
}

/// Claims of the batch the victim of a batch-recovery run dies in.
const VICTIM_BATCH: u64 = 100_000;

/// Starts a batch of [`VICTIM_BATCH`] messages and has a helper thread
/// SIGKILL this process as soon as the claim is recorded in the producer
/// table (the batch is then being filled: a prefix may be committed).
fn die_in_batch(q: &Queue, p: &mut Producer, a: &ChildArgs, next_seq: u64) -> ! {
    let meta = q.path().join("meta");
    let stamp = a.kill_stamp.clone();
    std::thread::spawn(move || {
        let map = mmkit_region::MapOptions::new().mode(mmkit_region::Mode::ReadOnly).map_path(&meta);
        let me = mmkit_sync::ProcessToken::current_process().to_raw();
        let holds_batch = |map: &mmkit_region::Mapping| {
            (0..format::PRODUCER_SLOTS as u64).any(|i| {
                let slot = format::PRODUCER_TABLE + i * format::PRODUCER_SLOT_SIZE;
                let word = |f: u64| {
                    map.atomic_u64(slot + f).map_or(0, |w| w.load(std::sync::atomic::Ordering::Acquire))
                };
                word(format::SLOT_TOKEN) == me
                    && word(format::SLOT_STATE) & 3 == format::PRODUCER_CLAIMED
                    && word(format::SLOT_CLAIM) & 0xffff_ffff == VICTIM_BATCH
            })
        };
        if let Ok(map) = map {
            while !holds_batch(&map) {
                std::hint::spin_loop();
            }
        }
        die(stamp.as_deref())
    });
    let start = proto::now_ns();
    let msgs: Vec<Msg> = (0..VICTIM_BATCH).map(|k| proto::encode(next_seq + k, start, a.id)).collect();
    let refs: Vec<&[u8]> = msgs.iter().map(|m| m.as_slice()).collect();
    let _ = p.append_batch(&refs);
    die(a.kill_stamp.as_deref())
}

enum Source {
    Reader(Reader),
    Cursor(mmkit_queue::Cursor, u64),
}

struct MqReceiver {
    source: Source,
}

impl MqReceiver {
    fn reader(&mut self) -> &mut Reader {
        match &mut self.source {
            Source::Reader(r) => r,
            Source::Cursor(c, _) => c,
        }
    }
}

impl Receiver for MqReceiver {
    fn recv(&mut self, out: &mut Msg) -> io::Result<()> {
        loop {
            // Into the caller's buffer, as the stream peers' `read` does.
            if let Some(got) = self.reader().next_into(out, None).map_err(io_err)? {
                if got.len != MSG {
                    return Err(io::Error::other("mmkit-queue returned a message of the wrong size"));
                }
                break;
            }
        }
        if let Source::Cursor(c, n) = &mut self.source {
            *n += 1;
            if *n % 65_536 == 0 {
                c.commit().map_err(io_err)?;
            }
        }
        Ok(())
    }
}

/// A consumer process: an anonymous reader from the start, or with several
/// readers, named cursor `c<k>` (each independent, committed every 64 Ki).
pub fn child_consumer(a: &ChildArgs) -> io::Result<Report> {
    let q = Queue::open(&a.addr[0]).map_err(io_err)?;
    let source = if a.readers > 1 {
        Source::Cursor(q.cursor(&format!("c{}", a.reader)).map_err(io_err)?, 0)
    } else if a.peer == Peer::MmkitQueueBounded {
        // Placed at the end of the warm-up by `create_bounded`, before any
        // producer starts; a named cursor, so that retention never deletes
        // what this consumer has not read yet.
        Source::Cursor(q.cursor(BOUNDED_CURSOR).map_err(io_err)?, 0)
    } else {
        Source::Reader(q.reader(Start::Beginning).map_err(io_err)?)
    };
    let mut r = MqReceiver { source };
    r.reader().set_wait_policy(if a.park { WaitPolicy::BALANCED } else { WaitPolicy::SPIN });
    let ends = a.producers - a.victims.min(a.producers);
    let rep = proto::consume(&mut r, a.kind, ends, a.kill_stamp.as_deref())?;
    if let Source::Cursor(c, _) = &mut r.source {
        c.commit().map_err(io_err)?;
    }
    Ok(rep)
}

/// Durable appends for `secs` in GroupCommit mode: `batch` appends, then
/// `wait_durable` on the last; (messages, elapsed ns, ack latencies).
pub fn durable(dir: &Path, batch: usize, secs: f64) -> io::Result<(u64, u64, Vec<u64>)> {
    let q = Queue::options()
        .create(true)
        .segment_size(SEGMENT)
        .durability(Durability::GroupCommit { interval_us: 50, max_batch: batch as u32 })
        .open(dir)
        .map_err(io_err)?;
    let mut p = q.producer().map_err(io_err)?;
    let msg = proto::encode(0, 0, 0);
    proto::durable_batches(batch, secs, || {
        let mut last = 0;
        for _ in 0..batch {
            last = p.append(&msg).map_err(io_err)?;
        }
        q.wait_durable(last, None).map_err(io_err)?;
        Ok(())
    })
}
