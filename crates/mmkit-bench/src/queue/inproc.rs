//! In-process peers, run as threads: crossbeam-channel (bounded, the ring's
//! capacity) and queue-file (one file, a producer and a consumer thread).

use std::io;
use std::path::Path;

use super::proto::{self, Kind, Msg, Receiver, Report, Sender};
use super::{Peer, Shape};

/// Fan-out sender: one channel per reader.
struct CbSender(Vec<crossbeam_channel::Sender<Msg>>);

impl Sender for CbSender {
    fn send(&mut self, m: &Msg) -> io::Result<()> {
        for tx in &self.0 {
            tx.send(*m).map_err(|_| io::Error::other("channel closed"))?;
        }
        Ok(())
    }
}

/// Spinning (`try_recv` loop) or blocking (`recv`) receiver.
struct CbReceiver {
    rx: crossbeam_channel::Receiver<Msg>,
    park: bool,
}

impl Receiver for CbReceiver {
    fn recv(&mut self, out: &mut Msg) -> io::Result<()> {
        if self.park {
            *out = self.rx.recv().map_err(|_| io::Error::other("channel closed"))?;
            return Ok(());
        }
        loop {
            match self.rx.try_recv() {
                Ok(m) => {
                    *out = m;
                    return Ok(());
                }
                Err(crossbeam_channel::TryRecvError::Empty) => std::hint::spin_loop(),
                Err(_) => return Err(io::Error::other("channel closed")),
            }
        }
    }
}

/// Runs one measurement of an in-process peer.
pub fn run(
    peer: Peer,
    shape: Shape,
    secs: f64,
    dir: &Path,
) -> Result<Vec<Report>, Box<dyn std::error::Error>> {
    match peer {
        Peer::Crossbeam => Ok(crossbeam(shape, secs)?),
        Peer::QueueFile if shape.producers == 1 && shape.readers == 1 && shape.kind != Kind::Recovery => {
            let (tx, rx) = super::persist::queue_file_pair(&dir.join("qf"), false)?;
            Ok(vec![pair(tx, rx, shape, secs)?])
        }
        _ => Err("this peer does not run this workload".into()),
    }
}

fn crossbeam(shape: Shape, secs: f64) -> io::Result<Vec<Report>> {
    let (txs, rxs): (Vec<_>, Vec<_>) =
        (0..shape.readers).map(|_| crossbeam_channel::bounded::<Msg>(1 << 14)).unzip();
    std::thread::scope(|s| {
        let consumers: Vec<_> = rxs
            .into_iter()
            .map(|rx| {
                s.spawn(move || {
                    proto::consume(
                        &mut CbReceiver { rx, park: shape.park },
                        shape.kind,
                        shape.producers,
                        None,
                    )
                })
            })
            .collect();
        for id in 0..shape.producers {
            let mut tx = CbSender(txs.clone());
            s.spawn(move || proto::produce(&mut tx, shape.kind, secs, id));
        }
        drop(txs);
        consumers.into_iter().map(|c| c.join().map_err(|_| io::Error::other("consumer panicked"))?).collect()
    })
}

fn pair<S: Sender + Send, R: Receiver + Send>(
    mut tx: S,
    mut rx: R,
    shape: Shape,
    secs: f64,
) -> io::Result<Report> {
    std::thread::scope(|s| {
        let consumer = s.spawn(move || proto::consume(&mut rx, shape.kind, 1, None));
        let producer = s.spawn(move || proto::produce(&mut tx, shape.kind, secs, 0));
        let rep = consumer.join().map_err(|_| io::Error::other("consumer panicked"))?;
        producer.join().map_err(|_| io::Error::other("producer panicked"))??;
        rep
    })
}
