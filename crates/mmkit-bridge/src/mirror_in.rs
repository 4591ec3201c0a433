//! Mirror-in: a JetStream stream (or the subjects of it a filter takes)
//! consumed into a local queue, exactly once.
//!
//! Each record is appended with a metadata block holding the message's
//! stream sequence (and the queue id and index it was first appended to),
//! in the same append. So the queue itself says how far the mirror got: a
//! restarted mirror reads its last record and starts an ordered consumer
//! just after it. No consumer state is kept on the server.

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use async_nats::jetstream::{self, ErrorCode};
use futures_util::{FutureExt, StreamExt};
use mmkit_queue::{Producer, Queue, Start, index_segment, index_seq, make_index};
use tokio::time::Instant;

use crate::connect::{Backoff, Connection, connect};
use crate::error::{Error, Result};
use crate::headers;
use crate::lock::MirrorLock;
use crate::record::{self, FirstAppend, Origin};
use crate::resume::{Marker, MarkerFile};
use crate::{Event, Progress, Summary, subject};

/// Options of [`MirrorIn`].
#[derive(Clone, Debug)]
pub struct InOptions {
    /// Server URL (`nats://host:4222`; credentials as `nats://user:pass@host`).
    pub server: String,
    /// The stream.
    pub stream: String,
    /// Only the messages of these subjects (a filter; `*` and `>` allowed;
    /// default: the whole stream).
    pub subject: Option<String>,
    /// Skip (and report) a message too large for the local queue instead
    /// of stopping with an error.
    pub skip_oversized: bool,
    /// Stop once every message in the stream at the start is in the queue.
    pub once: bool,
    /// How long to wait for an API answer.
    pub ack_timeout: Duration,
    /// How often [`Event::Progress`] is reported.
    pub progress_every: Duration,
}

impl InOptions {
    /// Defaults for mirroring `stream` on `server`.
    pub fn new(server: impl Into<String>, stream: impl Into<String>) -> InOptions {
        InOptions {
            server: server.into(),
            stream: stream.into(),
            subject: None,
            skip_oversized: false,
            once: false,
            ack_timeout: Duration::from_secs(5),
            progress_every: Duration::from_secs(1),
        }
    }
}

/// Appends a stream's messages to a queue. See the crate docs for an example.
pub struct MirrorIn {
    queue: Queue,
    opts: InOptions,
    source: Vec<u8>,
    producer: Producer,
    /// The stream sequence of the last message appended (0: none).
    last_seq: u64,
    _lock: MirrorLock,
    /// Which stream the queue's records came from, and how far; see
    /// `resume`.
    marker: MarkerFile,
    /// The creation time of the stream the mirror reads (from the marker,
    /// then from the server).
    created: Option<i64>,
    /// With [`InOptions::once`]: the stream's last sequence when the
    /// mirror first looked.
    stop_at: Option<u64>,
    /// The consumer sequence of the last delivery in this epoch.
    consumer_seq: u64,
    /// The queue index of the last record appended, if known (see
    /// `resume`).
    last_index: Option<u64>,
    summary: Summary,
    /// Messages the stream still holds for us, as of the last delivery.
    pending: u64,
    /// When the last appended message was first appended, if known.
    last_stamp: Option<u64>,
}

impl std::fmt::Debug for MirrorIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MirrorIn").field("queue", &self.queue.path()).field("opts", &self.opts).finish()
    }
}

/// Messages appended per batch at most.
const BATCH: usize = 1024;
/// Bytes appended per batch at most.
const BATCH_BYTES: usize = 4 << 20;

/// One delivered message: a record to append (metadata, payload), or
/// nothing when it is skipped.
struct Incoming {
    seq: u64,
    record: Option<(Vec<u8>, bytes::Bytes)>,
    stamp: Option<u64>,
    pending: u64,
}

impl MirrorIn {
    /// Prepares to mirror into `queue`: checks the options, takes the
    /// source's lock (one mirror per stream and filter), registers a
    /// producer and finds where the last run stopped.
    pub fn new(queue: Queue, opts: InOptions) -> Result<MirrorIn> {
        if let Some(s) = &opts.subject
            && !subject::is_valid(s)
        {
            return Err(Error::InvalidOption(format!("{s:?} is not a subject filter")));
        }
        let source = record::source_key(&opts.stream, opts.subject.as_deref());
        if source.len() > record::MAX_SOURCE_LEN {
            return Err(Error::InvalidOption(format!(
                "stream name and subject take {} bytes; at most {} fit in a record's metadata",
                source.len(),
                record::MAX_SOURCE_LEN
            )));
        }
        let about = format!(
            "mirror-in from stream {} subject {}",
            opts.stream,
            opts.subject.as_deref().unwrap_or(">")
        );
        let lock = MirrorLock::acquire(queue.path(), "mirror-in", &source, &about)?;
        // The producer first: it counts a record a killed single producer
        // committed without counting it, which `last_index` must see.
        let producer = queue.producer().map_err(|e| Error::queue("register a producer", queue.path(), e))?;
        let (marker, stored) = MarkerFile::open(crate::resume::path_beside(lock.path()))?;
        // The records are exact. The marker speaks only when none is left
        // and the last record it names lies below the queue's first index:
        // retention deleted it. A queue that lost its last appends in a
        // machine crash (the marker may have reached the disk without
        // them) gets them again from the stream.
        let (last_seq, last_index) = match (resume_point(&queue, &source)?, stored) {
            (Some((seq, index)), _) => (seq, Some(index)),
            (None, Some(m)) => {
                let first = queue
                    .first_index()
                    .map_err(|e| Error::queue("find the first record", queue.path(), e))?;
                if m.last_index.is_none_or(|i| i < first) { (m.last_seq, m.last_index) } else { (0, None) }
            }
            (None, None) => (0, None),
        };
        Ok(MirrorIn {
            queue,
            opts,
            source,
            producer,
            last_seq,
            _lock: lock,
            marker,
            created: stored.map(|m| m.created),
            stop_at: None,
            consumer_seq: 0,
            last_index,
            summary: Summary { stream_seq: last_seq, ..Summary::default() },
            pending: 0,
            last_stamp: None,
        })
    }

    /// The stream sequence of the last message appended so far (0: none).
    pub fn last_sequence(&self) -> u64 {
        self.last_seq
    }

    /// Mirrors until `stop` completes (or, with [`InOptions::once`], until
    /// the stream's messages at the start are in the queue). Transient
    /// failures are retried with backoff; permanent ones are returned.
    pub async fn run(
        &mut self,
        stop: impl Future<Output = ()>,
        report: &mut dyn FnMut(Event),
    ) -> Result<Summary> {
        let mut stop = std::pin::pin!(stop);
        let conn = tokio::select! {
            c = connect(&self.opts.server, "mmkit mirror-in", self.opts.ack_timeout, report) => c?,
            _ = &mut stop => return Ok(self.summary.clone()),
        };
        let mut backoff = Backoff::default();
        loop {
            let before = self.last_seq;
            let why = match self.epoch(&conn, &mut stop, report).await {
                Ok(()) => {
                    report(self.progress());
                    return Ok(self.summary.clone());
                }
                Err(e) => {
                    let e = conn.explain(e);
                    if e.is_permanent() {
                        return Err(e);
                    }
                    e.to_string()
                }
            };
            if self.last_seq != before {
                backoff.reset();
            }
            let delay = backoff.next_delay();
            report(Event::Retrying { error: why, delay });
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = &mut stop => return Ok(self.summary.clone()),
            }
        }
    }

    /// One ordered consumer, from after the last appended message.
    async fn epoch<S: Future<Output = ()>>(
        &mut self,
        conn: &Connection,
        stop: &mut std::pin::Pin<&mut S>,
        report: &mut dyn FnMut(Event),
    ) -> Result<()> {
        let mut alarms = conn.events.alarms();
        alarms.borrow_and_update();
        let stream = match conn.js.get_stream(&self.opts.stream).await {
            Ok(s) => s,
            Err(e) if matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(ref j) if j.error_code() == ErrorCode::STREAM_NOT_FOUND) =>
            {
                return Err(Error::StreamMissing {
                    stream: self.opts.stream.clone(),
                    url: conn.url.clone(),
                    hint: " (mirror-in reads an existing stream; mirror-out --create-stream makes one)",
                });
            }
            Err(e) => return Err(Error::nats("look up the stream", e)),
        };
        let deliver_policy = match self.last_seq {
            0 => DeliverPolicy::All,
            s => DeliverPolicy::ByStartSequence { start_sequence: s + 1 },
        };
        let config = pull::OrderedConfig {
            filter_subject: self.opts.subject.clone().unwrap_or_default(),
            deliver_policy,
            ..Default::default()
        };
        let mut stream = stream;
        let consumer =
            stream.create_consumer(config).await.map_err(|e| Error::nats("create an ordered consumer", e))?;
        // Checked after the consumer exists: a stream created again before
        // that would be read from the old stream's sequence on.
        let info = stream.info().await.map_err(|e| Error::nats("look up the stream", e))?;
        self.check_same_stream(info)?;
        if self.opts.once {
            self.stop_at.get_or_insert(info.state.last_sequence);
        }
        self.consumer_seq = 0;
        self.pending = consumer.cached_info().num_pending;
        report(Event::Resynced { position: self.last_seq, stream_seq: self.last_seq, pipelined: true });
        if self.done() {
            return Ok(());
        }
        let mut messages = consumer.messages().await.map_err(|e| Error::nats("consume", e))?;
        let every = self.opts.progress_every;
        let mut tick = tokio::time::interval_at(Instant::now() + every, every);
        let mut batch: Vec<Incoming> = Vec::new();
        loop {
            let first = tokio::select! {
                m = messages.next() => m,
                _ = alarms.changed() => return Err(Error::nats("consume", "connection lost")),
                _ = stop.as_mut() => return Ok(()),
                _ = tick.tick() => {
                    report(self.progress());
                    continue;
                }
            };
            let mut next = first;
            let mut bytes = 0;
            loop {
                match next {
                    Some(Ok(m)) => {
                        let high = batch.last().map_or(self.last_seq, |i| i.seq);
                        match self.incoming(&m, high, report) {
                            Ok(Some(inc)) if self.stop_at.is_some_and(|s| inc.seq > s) => {
                                // Newer than the stream was at the start.
                                self.append(&mut batch)?;
                                return Ok(());
                            }
                            Ok(Some(inc)) => {
                                bytes += inc.record.as_ref().map_or(0, |r| r.1.len());
                                batch.push(inc);
                            }
                            Ok(None) => {}
                            Err(e) => {
                                // What came before it goes in first.
                                self.append(&mut batch)?;
                                return Err(e);
                            }
                        }
                    }
                    Some(Err(e)) => {
                        self.append(&mut batch)?;
                        return Err(Error::nats("consume", e));
                    }
                    None => {
                        self.append(&mut batch)?;
                        return Err(Error::nats("consume", "the consumer ended"));
                    }
                }
                if batch.len() >= BATCH || bytes >= BATCH_BYTES {
                    break;
                }
                match messages.next().now_or_never() {
                    Some(m) => next = m,
                    None => break,
                }
            }
            self.append(&mut batch)?;
            if self.done() {
                return Ok(());
            }
        }
    }

    /// With [`InOptions::once`]: whether every message the stream held at
    /// the start is in (or nothing more is pending).
    fn done(&self) -> bool {
        self.opts.once && (self.pending == 0 || self.stop_at.is_some_and(|s| self.last_seq >= s))
    }

    /// Refuses a stream that is not the one the queue's records came
    /// from: one deleted and created again numbers its messages from 1,
    /// so resuming after the old stream's last sequence would skip the new
    /// stream's first messages. Records the stream's creation time the
    /// first time.
    fn check_same_stream(&mut self, info: &jetstream::stream::Info) -> Result<()> {
        let created = i64::try_from(info.created.unix_timestamp_nanos()).unwrap_or(i64::MAX);
        let last = info.state.last_sequence;
        let recreated =
            self.last_seq > 0 && (self.created.is_some_and(|c| c != created) || last < self.last_seq);
        if recreated {
            return Err(Error::StreamReset {
                stream: self.opts.stream.clone(),
                path: self.queue.path().to_path_buf(),
                last_seq: self.last_seq,
                stream_last: last,
            });
        }
        if self.created != Some(created) {
            self.marker.store(Marker { created, last_seq: self.last_seq, last_index: self.last_index })?;
            self.created = Some(created);
        }
        Ok(())
    }

    /// What to do with a delivered message: `None` when it is at or before
    /// `high`, the last sequence appended or batched (delivered again after
    /// a consumer was recreated); an entry without a record when it is
    /// skipped (it came from this very queue, or it is too large).
    fn incoming(
        &mut self,
        m: &jetstream::Message,
        high: u64,
        report: &mut dyn FnMut(Event),
    ) -> Result<Option<Incoming>> {
        let info = m.info().map_err(|e| Error::nats("read a message's stream sequence", e))?;
        // The ordered consumer recreates itself after a missed beat, and
        // numbers its deliveries from 1 again: it may now read a stream
        // deleted and created again. A new epoch checks the stream first.
        if info.consumer_sequence != self.consumer_seq + 1 {
            return Err(Error::nats("consume", "the ordered consumer was recreated"));
        }
        self.consumer_seq = info.consumer_sequence;
        let (seq, pending) = (info.stream_sequence, info.pending);
        self.pending = pending;
        if seq <= high {
            return Ok(None);
        }
        let first = headers::first_append(m.message.headers.as_ref());
        let skip = |me: &mut MirrorIn| {
            me.summary.skipped += 1;
            Ok(Some(Incoming { seq, record: None, stamp: None, pending }))
        };
        if first.is_some_and(|f| f.queue_id == self.queue.id()) {
            // Our own record come back (a two-way mirror): the loop stops here.
            return skip(self);
        }
        let mut meta = Vec::with_capacity(record::FIXED_LEN + self.source.len());
        Origin { stream_seq: seq, first, source: self.source.clone() }.encode_into(&mut meta);
        let size = m.message.payload.len() + meta.len() + 4;
        let limit = self.queue.max_message_size();
        if size > limit {
            if self.opts.skip_oversized {
                report(Event::Skipped {
                    what: format!("stream sequence {seq}"),
                    reason: format!(
                        "{size} bytes with metadata, more than the queue's maximum message size {limit}"
                    ),
                });
                return skip(self);
            }
            return Err(Error::MessageTooLarge {
                what: format!("stream sequence {seq} of stream {}", self.opts.stream),
                size,
                limit,
                limit_name: "the queue's maximum message size, with metadata",
                hint: " (create the queue with a larger --max-message-size, or pass --skip-oversized)",
            });
        }
        let stamp = first.map(|f: FirstAppend| f.timestamp).filter(|&t| t != 0);
        Ok(Some(Incoming { seq, record: Some((meta, m.message.payload.clone())), stamp, pending }))
    }

    /// Appends a batch, each record with its metadata, in one call.
    fn append(&mut self, batch: &mut Vec<Incoming>) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let pairs: Vec<(&[u8], &[u8])> =
            batch.iter().filter_map(|i| i.record.as_ref()).map(|(m, p)| (&m[..], &p[..])).collect();
        if !pairs.is_empty() {
            let indices = self
                .producer
                .append_batch_with_meta(&pairs)
                .map_err(|e| Error::queue("append mirrored messages", self.queue.path(), e))?;
            self.last_index = indices.last().copied().or(self.last_index);
        }
        self.summary.messages += pairs.len() as u64;
        if let Some(last) = batch.last() {
            self.last_seq = last.seq;
            self.pending = last.pending;
            self.summary.stream_seq = last.seq;
            if let Some(created) = self.created {
                self.marker.store(Marker { created, last_seq: last.seq, last_index: self.last_index })?;
            }
        }
        self.last_stamp = batch.iter().rev().find_map(|i| i.stamp).or(self.last_stamp);
        batch.clear();
        Ok(())
    }

    fn progress(&self) -> Event {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as u64;
        Event::Progress(Progress {
            messages: self.summary.messages,
            skipped: self.summary.skipped,
            position: self.last_seq,
            lag: Some(self.pending),
            in_flight: 0,
            stream_seq: self.last_seq,
            age: self.last_stamp.map(|t| Duration::from_nanos(now.saturating_sub(t))),
        })
    }
}

/// The stream sequence and queue index of the last record the mirror of
/// `source` appended, if any is left: the newest record whose metadata
/// names the source. Usually the queue's last record; in a queue other
/// producers also append to, a walk back over theirs.
fn resume_point(queue: &Queue, source: &[u8]) -> Result<Option<(u64, u64)>> {
    let err = |op, e| Error::queue(op, queue.path(), e);
    let Some(last) = queue.last_index().map_err(|e| err("find the last record", e))? else {
        return Ok(None);
    };
    let segments = queue.stat().map_err(|e| err("list segments", e))?.segments;
    let mut reader = queue.reader(Start::Beginning).map_err(|e| err("read", e))?;
    for seg in segments.iter().rev().filter(|s| s.number <= index_segment(last)) {
        let top = if seg.number == index_segment(last) { index_seq(last) as u64 + 1 } else { seg.messages };
        for c in (0..top).rev() {
            let index = make_index(seg.number, c as u32);
            reader.seek(index).map_err(|e| err("read", e))?;
            let Some(rec) = reader.next().map_err(|e| err("read", e))? else { continue };
            if rec.index() != index || !rec.meta().starts_with(&record::MAGIC) {
                continue;
            }
            match Origin::decode(rec.meta()) {
                Ok(Some(o)) if o.source == source => return Ok(Some((o.stream_seq, index))),
                Ok(_) => {}
                Err(bad)
                    if Origin::is_from(rec.meta(), source) || rec.meta().get(4) != Some(&record::VERSION) =>
                {
                    return Err(Error::Metadata { path: queue.path().to_path_buf(), index, detail: bad.0 });
                }
                Err(_) => {}
            }
        }
    }
    Ok(None)
}
