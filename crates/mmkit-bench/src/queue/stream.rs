//! Byte-stream peers: a Unix domain socket (SOCK_STREAM) and a pipe (a FIFO).
//!
//! What users do: the producer writes one message at a time through a
//! `BufWriter` and flushes when it is done (latency runs flush every
//! message); the consumer reads through a 64 KiB buffer. Reads block in the
//! kernel, so these peers only have a "parking" variant. Fan-out (1→4) writes
//! every message to each reader's connection; several producers share one
//! FIFO (4 KiB buffers, so each write is atomic) or get one connection each,
//! which the consumer polls.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, poll};

use super::proto::{MSG, Msg, Receiver, Sender};

/// PIPE_BUF: writes of at most this size to a pipe are atomic.
const PIPE_BUF: usize = 4096;

/// Producer side: one buffered writer per reader.
pub struct StreamSender<W: Write> {
    outs: Vec<BufWriter<W>>,
}

impl<W: Write> Sender for StreamSender<W> {
    fn send(&mut self, m: &Msg) -> io::Result<()> {
        for out in &mut self.outs {
            out.write_all(m)?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.outs.iter_mut().try_for_each(|o| o.flush())
    }
}

/// Connects to each socket path, retrying while the consumer starts.
pub fn socket_sender(paths: &[PathBuf]) -> io::Result<StreamSender<UnixStream>> {
    let outs = paths.iter().map(|p| connect(p).map(BufWriter::new)).collect::<io::Result<_>>()?;
    Ok(StreamSender { outs })
}

fn connect(path: &Path) -> io::Result<UnixStream> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match UnixStream::connect(path) {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(1)),
        }
    }
}

/// Opens each FIFO for writing (blocks until its reader opens it).
pub fn pipe_sender(paths: &[PathBuf]) -> io::Result<StreamSender<File>> {
    let outs = paths
        .iter()
        .map(|p| OpenOptions::new().write(true).open(p).map(|f| BufWriter::with_capacity(PIPE_BUF, f)))
        .collect::<io::Result<_>>()?;
    Ok(StreamSender { outs })
}

/// Creates a FIFO at `path`.
pub fn make_fifo(path: &Path) -> io::Result<()> {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )?;
    Ok(())
}

/// A readable byte source with its own buffer.
struct Source<R> {
    inner: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
}

impl<R: Read> Source<R> {
    fn new(inner: R) -> Self {
        Source { inner, buf: vec![0; 64 * 1024], start: 0, end: 0, eof: false }
    }

    fn take(&mut self, out: &mut Msg) -> bool {
        if self.end - self.start < MSG {
            return false;
        }
        out.copy_from_slice(&self.buf[self.start..self.start + MSG]);
        self.start += MSG;
        true
    }

    /// One read(2); blocks if nothing is buffered in the kernel.
    fn fill(&mut self) -> io::Result<()> {
        self.buf.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        let n = self.inner.read(&mut self.buf[self.end..])?;
        if n == 0 {
            self.eof = true;
        }
        self.end += n;
        Ok(())
    }
}

/// Consumer side: one or more sources, polled when there are several.
pub struct StreamReceiver<R> {
    sources: Vec<Source<R>>,
    next: usize,
}

impl<R: Read + AsFd> Receiver for StreamReceiver<R> {
    fn recv(&mut self, out: &mut Msg) -> io::Result<()> {
        loop {
            let n = self.sources.len();
            for i in 0..n {
                let k = (self.next + i) % n;
                if self.sources[k].take(out) {
                    self.next = (k + 1) % n;
                    return Ok(());
                }
            }
            if self.sources.iter().all(|s| s.eof) {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            if n == 1 {
                self.sources[0].fill()?;
                continue;
            }
            let ready = self.poll_ready()?;
            for k in ready {
                self.sources[k].fill()?;
            }
        }
    }
}

impl<R: AsFd> StreamReceiver<R> {
    fn poll_ready(&self) -> io::Result<Vec<usize>> {
        let live: Vec<usize> = (0..self.sources.len()).filter(|&k| !self.sources[k].eof).collect();
        let mut fds: Vec<PollFd<'_>> =
            live.iter().map(|&k| PollFd::new(&self.sources[k].inner, PollFlags::IN)).collect();
        poll(&mut fds, None)?;
        Ok(live.iter().zip(&fds).filter(|(_, f)| !f.revents().is_empty()).map(|(&k, _)| k).collect())
    }
}

/// Binds `path` and accepts `producers` connections.
pub fn socket_receiver(path: &Path, producers: usize) -> io::Result<StreamReceiver<UnixStream>> {
    let listener = UnixListener::bind(path)?;
    let sources = (0..producers.max(1))
        .map(|_| listener.accept().map(|(s, _)| Source::new(s)))
        .collect::<io::Result<_>>()?;
    Ok(StreamReceiver { sources, next: 0 })
}

/// Opens the FIFO at `path` for reading.
pub fn pipe_receiver(path: &Path) -> io::Result<StreamReceiver<File>> {
    let f = File::open(path)?;
    Ok(StreamReceiver { sources: vec![Source::new(f)], next: 0 })
}
