//! Mirrors mmkit queues to NATS JetStream and back, exactly once.
//!
//! - [`MirrorOut`] follows a queue on a named cursor and publishes every
//!   record to a stream. Each publish carries the queue's id and the
//!   record's index (`Nats-Msg-Id` and `Mmkit-*` headers) and
//!   `Nats-Expected-Last-Subject-Sequence`, so that the server stores a
//!   message only right after the one before it: the subject holds the
//!   queue's records with no gap and no duplicate, across crashes of the
//!   mirror, restarts of the server and outages longer than the stream's
//!   duplicate window. The cursor is committed once acknowledgements have
//!   come in, in order, so the queue keeps every message (retention
//!   respects the cursor) until the stream has it.
//! - [`MirrorIn`] consumes a stream into a queue with an ordered consumer,
//!   storing each message's stream sequence (and its original queue id
//!   and index) as metadata in the same append as the payload, so that a
//!   restart resumes after the last record, exactly once, with no
//!   consumer state on the server.
//!
//! The design, the headers, the record metadata format and what "durable"
//! means across machines are in `docs/bridge.md`. The `mmkit queue
//! mirror-out` and `mirror-in` commands are built on this crate.
//!
//! ```
//! use mmkit_bridge::{InOptions, LocalServer, MirrorIn, MirrorOut, OutOptions, StreamOptions, block_on};
//! use mmkit_queue::{Queue, Start};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let server = LocalServer::start(&dir.path().join("nats"))?; // a throwaway nats-server -js
//!
//! let source = Queue::options().create(true).segment_size(1 << 20).open(dir.path().join("a"))?;
//! let mut producer = source.producer()?;
//! producer.append(b"hello")?;
//! producer.append(b"world")?;
//!
//! // Publish the queue to stream ORDERS (created), then stop: --once.
//! let mut out = OutOptions::new(server.url(), "ORDERS");
//! out.create = Some(StreamOptions::default());
//! out.once = true;
//! let sent = block_on(MirrorOut::new(source.clone(), out)?.run(std::future::pending(), &mut |_| {}))??;
//! assert_eq!(sent.messages, 2);
//!
//! // Consume the stream into another queue.
//! let copy = Queue::options().create(true).segment_size(1 << 20).open(dir.path().join("b"))?;
//! let mut inb = InOptions::new(server.url(), "ORDERS");
//! inb.once = true;
//! block_on(MirrorIn::new(copy.clone(), inb)?.run(std::future::pending(), &mut |_| {}))??;
//!
//! let mut reader = copy.reader(Start::Beginning)?;
//! assert_eq!(reader.next()?.map(|r| r.to_vec()), Some(b"hello".to_vec()));
//! let record = reader.next()?.expect("the second message");
//! let origin = mmkit_bridge::Origin::decode(record.meta())?.expect("mirror metadata");
//! assert_eq!((origin.stream_seq, origin.first.map(|f| f.queue_id)), (2, Some(source.id())));
//! # Ok(())
//! # }
//! ```

mod connect;
mod error;
mod feed;
pub mod headers;
mod local_server;
mod lock;
mod mirror_in;
mod mirror_out;
pub mod record;
mod resume;
pub mod subject;

use std::time::Duration;

pub use connect::{connect_options, redact};
pub use error::{Error, Result};
pub use local_server::LocalServer;
pub use lock::MirrorLock;
pub use mirror_in::{InOptions, MirrorIn};
pub use mirror_out::{ACK_EVERY, MirrorOut, OutOptions, StreamOptions};
pub use record::{FirstAppend, Origin};

/// Where the `nats-server` binary is, if it is installed.
pub fn nats_server_binary() -> Option<std::path::PathBuf> {
    local_server::binary()
}

/// What a running mirror reports.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// Connected to the server.
    Connected {
        /// The server URL.
        url: String,
    },
    /// `--create-stream` created the stream.
    StreamCreated {
        /// Its name.
        stream: String,
    },
    /// The mirror (re)started from where the stream and the queue are.
    Resynced {
        /// Mirror-out: the queue index it publishes from. Mirror-in: the
        /// stream sequence of the last message already in the queue.
        position: u64,
        /// The last stream sequence of the mirror's subject (mirror-out)
        /// or appended (mirror-in); 0 for none.
        stream_seq: u64,
        /// Mirror-out: whether publishes are pipelined (the stream takes
        /// only the mirror's subject) or sent one at a time.
        pipelined: bool,
    },
    /// Periodic progress.
    Progress(Progress),
    /// A message was skipped (`--skip-oversized`).
    Skipped {
        /// Which message.
        what: String,
        /// Why.
        reason: String,
    },
    /// A transient failure; the mirror retries after `delay`.
    Retrying {
        /// What failed.
        error: String,
        /// The backoff before the next attempt.
        delay: Duration,
    },
}

/// How far a mirror got.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Progress {
    /// Messages published (mirror-out) or appended (mirror-in) by this run.
    pub messages: u64,
    /// Records skipped by this run: mirrored-in records mirror-out does
    /// not forward, a queue's own messages come back to it, and
    /// `--skip-oversized`.
    pub skipped: u64,
    /// Mirror-out: the cursor's committed position. Mirror-in: the stream
    /// sequence of the last message appended.
    pub position: u64,
    /// Messages still to mirror: the cursor's lag (mirror-out), or the
    /// messages the stream holds beyond the last one delivered (mirror-in).
    pub lag: Option<u64>,
    /// Publishes in flight: sent, not yet known to be in the stream (mirror-out).
    pub in_flight: usize,
    /// The stream sequence of the last message acknowledged or appended.
    pub stream_seq: u64,
    /// Mirror-in: how long ago the last appended message was first
    /// appended to its original queue (its `Mmkit-Timestamp`), if known.
    pub age: Option<Duration>,
}

/// What a mirror did when it returns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Messages published or appended by this run.
    pub messages: u64,
    /// Records skipped by this run (see [`Progress::skipped`]).
    pub skipped: u64,
    /// Mirror-out: the cursor's committed position (0 if this run did not
    /// move it).
    pub position: u64,
    /// The stream sequence of the last message acknowledged or appended.
    pub stream_seq: u64,
}

/// Runs a future to completion on a runtime made for it (two worker
/// threads: the client's connection task and the mirror's loop). Fails
/// only when the runtime cannot be made (no threads or file descriptors).
pub fn block_on<F: std::future::Future>(future: F) -> std::io::Result<F::Output> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    Ok(rt.block_on(future))
}

/// Completes on SIGINT or SIGTERM: pass it as a mirror's `stop` so that it
/// settles what is in flight and commits before exiting.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}
