//! The persistent peers from crates.io: yaque (two processes, one sender and
//! one receiver, as it allows) and queue-file (a single-process ring file:
//! a producer and a consumer thread sharing it behind a mutex, as its users
//! do). Both at their OS-managed durability for the throughput and latency
//! tables (yaque never fsyncs; queue-file with `sync_writes(false)`); the
//! durable table syncs queue-file on every batch.

use std::io;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};

use queue_file::QueueFile;

use super::proto::{MSG, Msg, Receiver, Sender};

/// yaque's producer: one `send` (a write and a flush) per message.
pub struct YaqueSender(yaque::Sender);

/// Opens yaque's sender on `dir`.
pub fn yaque_sender(dir: &Path) -> io::Result<YaqueSender> {
    Ok(YaqueSender(yaque::Sender::open(dir)?))
}

impl Sender for YaqueSender {
    fn send(&mut self, m: &Msg) -> io::Result<()> {
        futures::executor::block_on(self.0.send(m))
    }
}

/// yaque's consumer: `recv` then `commit` per message; it sleeps on inotify.
pub struct YaqueReceiver(yaque::Receiver);

/// Opens yaque's receiver on `dir`.
pub fn yaque_receiver(dir: &Path) -> io::Result<YaqueReceiver> {
    Ok(YaqueReceiver(yaque::Receiver::open(dir)?))
}

impl Receiver for YaqueReceiver {
    fn recv(&mut self, out: &mut Msg) -> io::Result<()> {
        let guard = futures::executor::block_on(self.0.recv())?;
        if guard.len() != MSG {
            return Err(io::Error::other("yaque returned a message of the wrong size"));
        }
        out.copy_from_slice(&guard);
        guard.commit()
    }
}

/// queue-file shared by two threads.
struct Shared {
    file: Mutex<QueueFile>,
    ready: Condvar,
}

/// The producer thread's handle.
pub struct QfSender(Arc<Shared>);
/// The consumer thread's handle.
pub struct QfReceiver(Arc<Shared>);

/// Opens a queue file at `path` with `sync_writes` as given.
pub fn queue_file_pair(path: &Path, sync: bool) -> io::Result<(QfSender, QfReceiver)> {
    let mut qf = QueueFile::open(path).map_err(io::Error::other)?;
    qf.set_sync_writes(sync);
    let shared = Arc::new(Shared { file: Mutex::new(qf), ready: Condvar::new() });
    Ok((QfSender(shared.clone()), QfReceiver(shared)))
}

fn poisoned<T>(_: T) -> io::Error {
    io::Error::other("queue-file mutex poisoned")
}

impl Sender for QfSender {
    fn send(&mut self, m: &Msg) -> io::Result<()> {
        let mut qf = self.0.file.lock().map_err(poisoned)?;
        qf.add(m).map_err(io::Error::other)?;
        drop(qf);
        self.0.ready.notify_one();
        Ok(())
    }
}

impl Receiver for QfReceiver {
    fn recv(&mut self, out: &mut Msg) -> io::Result<()> {
        let mut qf = self.0.file.lock().map_err(poisoned)?;
        let mut buf = Vec::with_capacity(MSG);
        loop {
            if qf.peek_into(&mut buf).map_err(io::Error::other)? {
                break;
            }
            qf = self.0.ready.wait(qf).map_err(poisoned)?;
        }
        qf.remove().map_err(io::Error::other)?;
        if buf.len() != MSG {
            return Err(io::Error::other("queue-file returned a message of the wrong size"));
        }
        out.copy_from_slice(&buf);
        Ok(())
    }
}

/// Durable appends: `add_n` of `batch` messages with `sync_writes` on, for
/// `secs`; returns (messages, elapsed ns, per-message ack latencies in ns).
pub fn queue_file_durable(path: &Path, batch: usize, secs: f64) -> io::Result<(u64, u64, Vec<u64>)> {
    let mut qf = QueueFile::open(path).map_err(io::Error::other)?;
    qf.set_sync_writes(true);
    let msgs: Vec<Msg> = (0..batch).map(|i| super::proto::encode(i as u64, 0, 0)).collect();
    let start = super::proto::now_ns();
    let (mut count, mut lat) = (0u64, Vec::new());
    while super::proto::now_ns() - start < (secs * 1e9) as u64 {
        let t0 = super::proto::now_ns();
        qf.add_n(msgs.iter()).map_err(io::Error::other)?;
        let t1 = super::proto::now_ns();
        // Every message of the batch was submitted at t0 and is durable at t1.
        lat.extend(std::iter::repeat_n(t1 - t0, batch));
        count += batch as u64;
        if qf.size() > 100_000 {
            qf.clear().map_err(io::Error::other)?;
        }
    }
    Ok((count, super::proto::now_ns() - start, lat))
}
