//! Mirror-out: a queue followed on a named cursor and published to a
//! JetStream stream, exactly once (the argument is in `docs/bridge.md`).
//!
//! Every publish carries the stream sequence of the message before it
//! (`Nats-Expected-Last-Subject-Sequence`; pipelined publishes in a stream
//! of the mirror's own carry `Nats-Expected-Last-Sequence`, the same check
//! there and a cheaper one for the server). So the server stores a message
//! only right after its predecessor, whatever was lost, re-sent or delayed
//! on the way, and the subject's messages are always a gap-free,
//! duplicate-free run of the queue's records. Publishes are pipelined when
//! the stream takes only the mirror's subject (its sequences are then
//! predictable); in a stream shared with other subjects, one publish is in
//! flight at a time. Pipelined publishes ask for an acknowledgement only
//! once in [`ACK_EVERY`] and at the end of each burst: since each was
//! stored only right after its predecessor, an acknowledgement at the
//! predicted sequence answers for every publish before it.

use std::collections::VecDeque;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::time::Duration;

use async_nats::jetstream::context::{PublishAckFuture, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::publish::PublishAck;
use async_nats::jetstream::stream::{Config, LastRawMessageErrorKind, StorageType};
use async_nats::jetstream::{self, ErrorCode};
use mmkit_queue::{Cursor, Queue};
use tokio::time::Instant;

use crate::connect::{Backoff, Connection, connect};
use crate::error::{Error, Result};
use crate::feed::{Feed, Next, Rec};
use crate::headers::{self, Expected, Outgoing};
use crate::lock::MirrorLock;
use crate::record::Origin;
use crate::{Event, Progress, Summary, subject};

/// How `--create-stream` creates a missing stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamOptions {
    /// Replicas (1 on a single server; 3 or 5 in a cluster for
    /// durability across machines).
    pub replicas: usize,
    /// How long the server remembers message ids to drop re-sends.
    pub duplicate_window: Duration,
    /// Messages older than this are removed (`None`: kept).
    pub max_age: Option<Duration>,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions { replicas: 1, duplicate_window: Duration::from_secs(120), max_age: None }
    }
}

/// Options of [`MirrorOut`].
#[derive(Clone, Debug)]
pub struct OutOptions {
    /// Server URL (`nats://host:4222`; credentials as `nats://user:pass@host`).
    pub server: String,
    /// The stream.
    pub stream: String,
    /// The subject to publish on (default: the stream's name). It must be
    /// this queue's alone.
    pub subject: Option<String>,
    /// The named cursor that remembers what is mirrored (default
    /// `nats-<stream>`).
    pub cursor: Option<String>,
    /// Create the stream when it is missing, like this.
    pub create: Option<StreamOptions>,
    /// Publishes in flight at most (sent, not yet known to be in the stream).
    pub max_in_flight: usize,
    /// Also publish records that were mirrored into this queue (they keep
    /// their original queue id and index in `Mmkit-Origin-*` headers). Off
    /// by default, so that a two-way mirror does not loop.
    pub include_mirrored: bool,
    /// Skip (and report) a message too large for the server or stream
    /// instead of stopping with an error.
    pub skip_oversized: bool,
    /// Stop once every message appended before the start is in the stream.
    pub once: bool,
    /// How long to wait for an acknowledgement or an API answer.
    pub ack_timeout: Duration,
    /// How often [`Event::Progress`] is reported.
    pub progress_every: Duration,
}

impl OutOptions {
    /// Defaults for mirroring to `stream` on `server`.
    pub fn new(server: impl Into<String>, stream: impl Into<String>) -> OutOptions {
        OutOptions {
            server: server.into(),
            stream: stream.into(),
            subject: None,
            cursor: None,
            create: None,
            max_in_flight: 1024,
            include_mirrored: false,
            skip_oversized: false,
            once: false,
            ack_timeout: Duration::from_secs(5),
            progress_every: Duration::from_secs(1),
        }
    }

    /// The subject published on.
    pub fn subject(&self) -> &str {
        self.subject.as_deref().unwrap_or(&self.stream)
    }

    /// The cursor's name.
    pub fn cursor_name(&self) -> String {
        self.cursor.clone().unwrap_or_else(|| format!("nats-{}", self.stream))
    }
}

/// Mirrors a queue to a JetStream stream. See the crate docs for an example.
pub struct MirrorOut {
    queue: Queue,
    opts: OutOptions,
    subject: String,
    /// The subject as the client takes it (cheap to clone per publish).
    nats_subject: async_nats::Subject,
    queue_hex: String,
    cursor: Cursor,
    _lock: MirrorLock,
    /// Where the cursor goes next: after the last record known to be in
    /// the stream (or skipped) with all before it.
    acked: u64,
    /// The pipelining window: `max_in_flight`, halved when the server
    /// rejects pipelined publishes it should have taken (a clustered
    /// stream's leader may refuse concurrent per-subject checks).
    window: usize,
    /// Clean acknowledgements since the window was last halved.
    clean: u64,
    /// The epoch's size limits: the server's `max_payload` and the
    /// stream's `max_msg_size`.
    limits: (usize, Option<usize>),
    summary: Summary,
}

impl std::fmt::Debug for MirrorOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MirrorOut").field("queue", &self.queue.path()).field("opts", &self.opts).finish()
    }
}

/// How an epoch (one run between two resynchronisations) ended.
enum EpochEnd {
    /// `--once` reached the end, or stop was asked: all settled.
    Finished,
    /// Resynchronise (after a delay when `backoff`).
    Resync { why: String, backoff: bool },
}

/// What the stream looks like after a resynchronisation.
struct Sync {
    position: u64,
    last_seq: u64,
    exclusive: bool,
    max_msg_size: Option<usize>,
}

type AckResult = std::result::Result<PublishAck, async_nats::jetstream::context::PublishError>;

/// Pipelined publishes ask for an acknowledgement once in this many (and
/// at the end of each burst): the expected-sequence chain makes the
/// acknowledgement of one stand for all before it in the epoch
/// (`docs/bridge.md`, "Acknowledgements"), and an acknowledgement is most
/// of what a publish costs the server and the client.
pub const ACK_EVERY: usize = 64;

/// A publish awaiting its acknowledgement, a publish covered by the next
/// one's, or a record skipped on the way.
struct Pending {
    index: u64,
    next: u64,
    /// The index published just before this one in the epoch.
    prev: Option<u64>,
    /// The sequence it should get, when the epoch predicts them.
    predicted: Option<u64>,
    ack: Option<Pin<Box<dyn Future<Output = AckResult> + Send>>>,
    /// Published without asking for an acknowledgement: the next publish
    /// that asks for one answers for it.
    covered: bool,
}

/// The expected-sequence chain of an epoch.
struct Chain {
    /// `Nats-Expected-Last-Subject-Sequence` of the next publish.
    expected: u64,
    /// The sequence the next publish will get, once known (exclusive
    /// streams, after the epoch's first acknowledgement).
    next_seq: Option<u64>,
    exclusive: bool,
    last_published: Option<u64>,
    /// Why the epoch stops publishing, if it does.
    broken: Option<String>,
    /// Whether the break is not worth a delay (a prediction that missed).
    quick: bool,
    /// A publish the server definitely refused (not stored).
    rejected: bool,
    /// Stored after a refused one: `(index before it, its sequence)`, to
    /// check against the stream before calling it a gap.
    suspects: Vec<(u64, u64)>,
    /// An error to stop with once everything in flight is settled.
    fatal: Option<Error>,
}

impl Chain {
    fn limit(&self, window: usize) -> usize {
        if self.exclusive && self.next_seq.is_some() { window } else { 1 }
    }

    fn stop(&mut self, why: String, quick: bool) {
        if self.broken.is_none() {
            self.broken = Some(why);
            self.quick = quick;
        }
    }
}

/// What woke the epoch's loop.
enum Wake {
    Ack(AckResult),
    Feed(mmkit_queue::Result<Next>),
    Alarm,
    Stop,
    Tick,
    Deadline,
}

/// What is on its way: publishes (each awaiting its acknowledgement or
/// covered by a later one's) and, queued behind them in order, records
/// skipped meanwhile.
#[derive(Default)]
struct InFlight {
    q: VecDeque<Pending>,
    /// Publishes in flight, covered ones included.
    publishes: usize,
    /// Entries with an acknowledgement to wait for.
    acks: usize,
    /// Covered publishes since the last one that asked for an
    /// acknowledgement.
    open: usize,
}

impl InFlight {
    fn push(&mut self, p: Pending) {
        let asks = p.ack.is_some();
        self.publishes += (asks || p.covered) as usize;
        self.acks += asks as usize;
        self.open = if p.covered { self.open + 1 } else { 0 };
        self.q.push_back(p);
    }

    fn pop(&mut self) -> Option<Pending> {
        let p = self.q.pop_front()?;
        self.publishes -= (p.ack.is_some() || p.covered) as usize;
        self.acks -= p.ack.is_some() as usize;
        Some(p)
    }

    /// The covered publishes at the front and the publish whose
    /// acknowledgement answers for them.
    fn pop_acked(&mut self) -> (usize, Option<Pending>) {
        let mut covered = 0;
        while let Some(p) = self.pop() {
            if !p.covered {
                return (covered, Some(p));
            }
            covered += 1;
        }
        (covered, None)
    }

    /// Nothing left to hear from the server. Covered publishes can only
    /// remain at the tail when reading stopped between two publishes of a
    /// burst: unknown, as unacknowledged ones are; the next
    /// resynchronisation finds out.
    fn settled(&self) -> bool {
        self.acks == 0
    }

    /// Whether the front entry is a skipped record.
    fn skip_at_front(&self) -> bool {
        self.q.front().is_some_and(|p| p.ack.is_none() && !p.covered)
    }
}

/// The acknowledgement of the first publish that asked for one (covered
/// publishes before it wait with it).
async fn front_ack(inflight: &mut InFlight) -> AckResult {
    match inflight.q.iter_mut().find_map(|p| p.ack.as_mut()) {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

/// A refusal code of JetStream's in a publish error, if it is one.
fn refusal(e: &async_nats::jetstream::context::PublishError) -> Option<ErrorCode> {
    let source = std::error::Error::source(e)?;
    source.downcast_ref::<jetstream::Error>().map(|j| j.error_code())
}

impl MirrorOut {
    /// Prepares to mirror `queue`: checks the options, takes the cursor's
    /// lock (one mirror per cursor) and opens the cursor.
    pub fn new(queue: Queue, opts: OutOptions) -> Result<MirrorOut> {
        let subject = opts.subject().to_string();
        if !subject::is_literal(&subject) {
            return Err(Error::InvalidOption(format!(
                "{subject:?} is not a subject one can publish to (no wildcards, empty tokens or spaces)"
            )));
        }
        if opts.max_in_flight == 0 {
            return Err(Error::InvalidOption("max in flight must be at least 1".into()));
        }
        let name = opts.cursor_name();
        let lock = MirrorLock::acquire(
            queue.path(),
            "mirror-out",
            name.as_bytes(),
            &format!("mirror-out cursor {name} to stream {} subject {subject}", opts.stream),
        )?;
        let cursor =
            queue.cursor(&name).map_err(|e| Error::queue("open the mirror's cursor", queue.path(), e))?;
        Ok(MirrorOut {
            queue_hex: headers::queue_id_hex(queue.id()),
            nats_subject: async_nats::Subject::from(subject.as_str()),
            acked: cursor.committed(),
            window: opts.max_in_flight,
            clean: 0,
            limits: (usize::MAX, None),
            cursor,
            queue,
            subject,
            opts,
            _lock: lock,
            summary: Summary::default(),
        })
    }

    /// Mirrors until `stop` completes (or, with [`OutOptions::once`], until
    /// the queue's end at the start is in the stream), reporting through
    /// `report`. In-flight publishes are settled and the cursor committed
    /// before it returns. Transient failures are retried with backoff;
    /// permanent ones ([`Error::is_permanent`]) are returned.
    pub async fn run(
        &mut self,
        stop: impl Future<Output = ()>,
        report: &mut dyn FnMut(Event),
    ) -> Result<Summary> {
        let end = match self.opts.once {
            true => Some(self.queue.end_index().map_err(|e| self.q("read the end", e))?),
            false => None,
        };
        let mut stop = std::pin::pin!(stop);
        let mut stopping = false;
        let conn = tokio::select! {
            c = connect(&self.opts.server, "mmkit mirror-out", self.opts.ack_timeout, report) => c?,
            _ = &mut stop => return Ok(self.summary.clone()),
        };
        let mut backoff = Backoff::default();
        loop {
            let (why, delay) = match self.epoch(&conn, end, &mut stop, &mut stopping, report).await {
                Ok(EpochEnd::Finished) => {
                    report(self.progress(0));
                    return Ok(self.summary.clone());
                }
                Ok(EpochEnd::Resync { why, backoff: false }) => (why, Duration::ZERO),
                Ok(EpochEnd::Resync { why, backoff: true }) => (why, backoff.next_delay()),
                Err(e) => {
                    let e = conn.explain(e);
                    if e.is_permanent() {
                        return Err(e);
                    }
                    (e.to_string(), backoff.next_delay())
                }
            };
            if delay.is_zero() {
                backoff.reset();
                continue;
            }
            report(Event::Retrying { error: why, delay });
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = &mut stop, if !stopping => return Ok(self.summary.clone()),
            }
        }
    }

    fn q(&self, op: &'static str, e: mmkit_queue::Error) -> Error {
        Error::queue(op, self.queue.path(), e)
    }

    /// One run from a resynchronisation to the next (or to the end).
    async fn epoch<S: Future<Output = ()>>(
        &mut self,
        conn: &Connection,
        end: Option<u64>,
        stop: &mut Pin<&mut S>,
        stopping: &mut bool,
        report: &mut dyn FnMut(Event),
    ) -> Result<EpochEnd> {
        let mut alarms = conn.events.alarms();
        alarms.borrow_and_update();
        let sync = self.resync(conn, report).await?;
        let max_payload = conn.max_payload();
        self.limits = (max_payload, sync.max_msg_size);
        let mut feed = Feed::start(&self.queue, sync.position, end).map_err(|e| self.q("read", e))?;
        let mut chain = Chain {
            expected: sync.last_seq,
            next_seq: None,
            exclusive: sync.exclusive,
            last_published: None,
            broken: None,
            quick: false,
            rejected: false,
            suspects: Vec::new(),
            fatal: None,
        };
        let mut inflight = InFlight::default();
        let mut ending = false;
        let mut tick =
            tokio::time::interval_at(Instant::now() + self.opts.progress_every, self.opts.progress_every);
        let mut deadline: Option<Instant> = None;
        loop {
            self.settle_skips(&mut inflight, &chain);
            if inflight.settled()
                && let Some(e) = chain.fatal.take()
            {
                self.commit()?;
                return Err(e);
            }
            if let Some(why) = chain.broken.clone() {
                if inflight.settled() || deadline.is_some_and(|d| Instant::now() >= d) {
                    self.commit()?;
                    self.check_suspects(conn, &chain).await?;
                    return Ok(EpochEnd::Resync { why, backoff: !chain.quick });
                }
                deadline.get_or_insert(Instant::now() + self.opts.ack_timeout);
            }
            let reading = !*stopping && !ending && chain.broken.is_none() && chain.fatal.is_none();
            // `send` may set `fatal` (an oversized record): nothing after it goes.
            while reading && chain.fatal.is_none() && inflight.publishes < chain.limit(self.window) {
                self.settle_skips(&mut inflight, &chain);
                match feed.try_next().map_err(|e| self.q("read", e))? {
                    Some(Next::Record(r)) => {
                        let more = self.publishes_next(&mut feed);
                        self.send(conn, r, more, &mut chain, &mut inflight, report).await?
                    }
                    Some(Next::End) => {
                        ending = true;
                        break;
                    }
                    None => break,
                }
            }
            if inflight.settled() && (ending || *stopping) && chain.fatal.is_none() {
                self.commit()?;
                return Ok(EpochEnd::Finished);
            }
            self.commit()?;
            self.settle_skips(&mut inflight, &chain);
            let room =
                reading && chain.fatal.is_none() && !ending && inflight.publishes < chain.limit(self.window);
            let waiting = inflight.acks > 0;
            let woke = tokio::select! {
                r = front_ack(&mut inflight), if waiting => Wake::Ack(r),
                n = feed.next(), if room => Wake::Feed(n),
                _ = alarms.changed() => Wake::Alarm,
                _ = stop.as_mut(), if !*stopping => Wake::Stop,
                _ = tick.tick() => Wake::Tick,
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => Wake::Deadline,
            };
            match woke {
                Wake::Ack(r) => {
                    let (covered, p) = inflight.pop_acked();
                    let p = p.expect("an ack came for a publish in flight");
                    self.settle(p, covered, r, &mut chain)?;
                }
                Wake::Feed(n) => match n.map_err(|e| self.q("read", e))? {
                    Next::Record(r) => {
                        let more = self.publishes_next(&mut feed);
                        self.send(conn, r, more, &mut chain, &mut inflight, report).await?
                    }
                    Next::End => ending = true,
                },
                Wake::Alarm => {
                    self.commit()?;
                    // Acks in flight are lost with the connection: their
                    // messages may or may not be in; resynchronising tells.
                    return Err(conn.explain(Error::nats("publish", "connection lost")));
                }
                Wake::Stop => *stopping = true,
                Wake::Tick => report(self.progress(inflight.publishes)),
                Wake::Deadline => chain.stop("acknowledgements did not come".into(), false),
            }
        }
    }

    /// Reads where the stream is, and moves the cursor past what the
    /// stream already holds.
    async fn resync(&mut self, conn: &Connection, report: &mut dyn FnMut(Event)) -> Result<Sync> {
        let stream = self.stream(conn, report).await?;
        let config = &stream.cached_info().config;
        let exclusive = config.subjects.len() == 1
            && config.subjects[0] == self.subject
            && config.sources.as_ref().is_none_or(|s| s.is_empty());
        let max_msg_size = usize::try_from(config.max_message_size).ok().filter(|&m| m > 0);
        let last = match stream.get_last_raw_message_by_subject(&self.subject).await {
            Ok(m) => Some(m),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => None,
            Err(e) => return Err(conn.explain(Error::nats("read the subject's last message", e))),
        };
        let mut position = self.cursor.committed();
        let mut last_seq = 0;
        if let Some(m) = last {
            let foreign = |detail: String| Error::ForeignSubject {
                subject: self.subject.clone(),
                stream: self.opts.stream.clone(),
                detail,
            };
            let Some((id, index)) = headers::publisher(&m.headers) else {
                return Err(foreign(format!(
                    "its last message (sequence {}) was not published by an mmkit mirror; give this queue a subject of its own",
                    m.sequence
                )));
            };
            if id != self.queue.id() {
                return Err(foreign(format!(
                    "its last message (sequence {}) comes from queue {}, not this queue ({}); give each queue a subject of its own",
                    m.sequence,
                    headers::queue_id_hex(id),
                    self.queue_hex
                )));
            }
            let end = self.queue.end_index().map_err(|e| self.q("read the end", e))?;
            if index >= end {
                return Err(Error::QueueBehindStream {
                    stream: self.opts.stream.clone(),
                    path: self.queue.path().to_path_buf(),
                    index,
                    end,
                });
            }
            // Past the cursor: in the stream already, acknowledged or not.
            // Before it: the stream lost acknowledged messages (a server
            // that crashed before they reached its disk, or deleted ones),
            // and the queue still holds them unless retention took them:
            // publish them again.
            position = index + 1;
            last_seq = m.sequence;
        }
        self.acked = position;
        self.commit()?;
        report(Event::Resynced { position, stream_seq: last_seq, pipelined: exclusive });
        Ok(Sync { position, last_seq, exclusive, max_msg_size })
    }

    /// The stream, created if missing and allowed; checked to take the subject.
    async fn stream(
        &self,
        conn: &Connection,
        report: &mut dyn FnMut(Event),
    ) -> Result<jetstream::stream::Stream> {
        let name = &self.opts.stream;
        let stream = match conn.js.get_stream(name).await {
            Ok(s) => s,
            Err(e) if is_not_found(&e) => match &self.opts.create {
                Some(spec) => self.create_stream(conn, spec, report).await?,
                None => {
                    return Err(Error::StreamMissing {
                        stream: name.clone(),
                        url: conn.url.clone(),
                        hint: " (pass --create-stream to create it)",
                    });
                }
            },
            Err(e) => return Err(conn.explain(Error::nats("look up the stream", e))),
        };
        let config = &stream.cached_info().config;
        let unusable = |detail: String| Error::StreamUnusable { stream: name.clone(), detail };
        if config.mirror.is_some() {
            return Err(unusable("is a mirror of another stream and takes no publishes".into()));
        }
        if config.sealed {
            return Err(unusable("is sealed".into()));
        }
        if !config.subjects.iter().any(|p| subject::matches(p, &self.subject)) {
            return Err(unusable(format!(
                "does not take subject {} (its subjects: {})",
                self.subject,
                config.subjects.join(", ")
            )));
        }
        Ok(stream)
    }

    async fn create_stream(
        &self,
        conn: &Connection,
        spec: &StreamOptions,
        report: &mut dyn FnMut(Event),
    ) -> Result<jetstream::stream::Stream> {
        let config = Config {
            name: self.opts.stream.clone(),
            subjects: vec![self.subject.clone()],
            storage: StorageType::File,
            num_replicas: spec.replicas,
            duplicate_window: spec.duplicate_window,
            max_age: spec.max_age.unwrap_or_default(),
            ..Default::default()
        };
        match conn.js.create_stream(config).await {
            Ok(s) => {
                report(Event::StreamCreated { stream: self.opts.stream.clone() });
                Ok(s)
            }
            Err(e) => match e.kind() {
                async_nats::jetstream::context::CreateStreamErrorKind::JetStream(j) => {
                    Err(Error::StreamUnusable {
                        stream: self.opts.stream.clone(),
                        detail: format!("creating it: {j}"),
                    })
                }
                _ => Err(conn.explain(Error::nats("create the stream", e))),
            },
        }
    }

    /// Whether the record the feed holds next, if any, will be published
    /// (not skipped, and small enough even with the longest headers): only
    /// then may the publish before it go without asking for an
    /// acknowledgement, since that next publish will ask or be covered in
    /// turn.
    fn publishes_next(&self, feed: &mut Feed) -> bool {
        let Some(rec) = feed.peek() else { return false };
        let longest = outgoing(&self.queue_hex, self.opts.include_mirrored, rec, Expected::Subject(u64::MAX));
        longest.is_some_and(|out| rec.payload.len() + out.wire_len() <= self.size_limit())
    }

    /// The largest message the server and the stream take.
    fn size_limit(&self) -> usize {
        let (max_payload, max_msg_size) = self.limits;
        max_msg_size.map_or(max_payload, |m| m.min(max_payload))
    }

    /// Publishes a record (or queues its skip), extending the chain. `more`:
    /// the next record will be published right after this one.
    async fn send(
        &mut self,
        conn: &Connection,
        rec: Rec,
        more: bool,
        chain: &mut Chain,
        inflight: &mut InFlight,
        report: &mut dyn FnMut(Event),
    ) -> Result<()> {
        let skip = |inflight: &mut InFlight| {
            inflight.push(Pending {
                index: rec.index,
                next: rec.next,
                prev: None,
                predicted: None,
                ack: None,
                covered: false,
            })
        };
        // Pipelined, in a stream of its own: the stream-wide check.
        let expected = match chain.next_seq {
            Some(_) => Expected::Stream(chain.expected),
            None => Expected::Subject(chain.expected),
        };
        let Some(out) = outgoing(&self.queue_hex, self.opts.include_mirrored, &rec, expected) else {
            self.summary.skipped += 1;
            skip(inflight);
            return Ok(());
        };
        let size = rec.payload.len() + out.wire_len();
        let limit = self.size_limit();
        if size > limit {
            let limit_name =
                if limit == self.limits.0 { "the server's max_payload" } else { "the stream's max_msg_size" };
            if self.opts.skip_oversized {
                report(Event::Skipped {
                    what: format!("index {}", rec.index),
                    reason: format!("{size} bytes, more than {limit} ({limit_name})"),
                });
                self.summary.skipped += 1;
                skip(inflight);
                return Ok(());
            }
            chain.fatal = Some(Error::MessageTooLarge {
                what: format!("index {} of queue {}", rec.index, self.queue.path().display()),
                size,
                limit,
                limit_name,
                hint: " (raise the limit, or pass --skip-oversized; messages are not split into chunks)",
            });
            return Ok(());
        }
        // Pipelined: ask for an acknowledgement at the end of a burst, of a
        // group of ACK_EVERY, and of the window.
        let asks = chain.next_seq.is_none()
            || !more
            || inflight.open + 1 >= ACK_EVERY
            || inflight.publishes + 1 >= chain.limit(self.window);
        let ack = if asks {
            let msg = PublishMessage::build().payload(rec.payload).headers(out.headers());
            let fut: PublishAckFuture = conn
                .js
                .send_publish(self.nats_subject.clone(), msg)
                .await
                .map_err(|e| Error::nats("publish", e))?;
            Some(fut.into_future())
        } else {
            // The same connection's command queue as `send_publish`, so
            // the server reads it in this order.
            conn.client
                .publish_with_headers(self.nats_subject.clone(), out.headers(), rec.payload)
                .await
                .map_err(|e| Error::nats("publish", e))?;
            None
        };
        inflight.push(Pending {
            index: rec.index,
            next: rec.next,
            prev: chain.last_published,
            predicted: chain.next_seq,
            covered: ack.is_none(),
            ack,
        });
        chain.last_published = Some(rec.index);
        if let Some(p) = chain.next_seq {
            chain.expected = p;
            chain.next_seq = Some(p + 1);
        }
        Ok(())
    }

    /// Skipped records at the front: the cursor may pass them.
    fn settle_skips(&mut self, inflight: &mut InFlight, chain: &Chain) {
        while inflight.skip_at_front() {
            let Some(p) = inflight.pop() else { break };
            if chain.broken.is_none() && chain.fatal.is_none() {
                self.acked = p.next;
            }
        }
    }

    /// An acknowledgement (or refusal) for the front publish, which answers
    /// for the `covered` publishes before it.
    fn settle(&mut self, p: Pending, covered: usize, r: AckResult, chain: &mut Chain) -> Result<()> {
        match r {
            Ok(ack) => self.stored(p, covered, ack, chain),
            Err(e) => {
                let definite = matches!(
                    e.kind(),
                    PublishErrorKind::WrongLastSequence | PublishErrorKind::StreamNotFound
                ) || refusal(&e).is_some();
                if refusal(&e) == Some(ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM) && chain.fatal.is_none() {
                    chain.fatal = Some(Error::StreamUnusable {
                        stream: self.opts.stream.clone(),
                        detail: format!("refused index {} as too large: {e}", p.index),
                    });
                }
                if definite {
                    chain.rejected = true;
                }
                // A chain the server broke with the predictions right: the
                // stream refuses pipelined checks; publish fewer at once.
                let unexplained = e.kind() == PublishErrorKind::WrongLastSequence
                    && chain.broken.is_none()
                    && p.prev.is_some();
                if unexplained && p.predicted.is_some() {
                    self.window = (self.window / 2).max(1);
                    self.clean = 0;
                }
                chain.stop(format!("the server did not store index {}: {e}", p.index), false);
                Ok(())
            }
        }
    }

    /// `p` is in the stream at `ack.sequence`. When that is the sequence
    /// the epoch predicted, the chain says the `covered` publishes before
    /// it are in at theirs: `p`'s expected sequence was the stream's last.
    fn stored(&mut self, p: Pending, covered: usize, ack: PublishAck, chain: &mut Chain) -> Result<()> {
        if ack.stream != self.opts.stream {
            return Err(Error::StreamUnusable {
                stream: self.opts.stream.clone(),
                detail: format!("subject {} is stored by stream {} instead", self.subject, ack.stream),
            });
        }
        if chain.rejected {
            chain.suspects.push((p.prev.unwrap_or(u64::MAX), ack.sequence));
            return Ok(());
        }
        if chain.broken.is_some() {
            return Ok(());
        }
        let missed =
            |predicted: u64| format!("index {} got sequence {}, not {predicted}", p.index, ack.sequence);
        if let Some(predicted) = p.predicted
            && predicted != ack.sequence
            && covered > 0
        {
            // The publishes it covers are not known to be in: the
            // resynchronisation finds out.
            chain.stop(missed(predicted), true);
            return Ok(());
        }
        self.acked = p.next;
        self.summary.messages += 1 + covered as u64;
        self.summary.stream_seq = ack.sequence;
        match p.predicted {
            Some(predicted) if predicted != ack.sequence => chain.stop(missed(predicted), true),
            Some(_) => {}
            None => {
                chain.expected = ack.sequence;
                if chain.exclusive {
                    chain.next_seq = Some(ack.sequence + 1);
                }
            }
        }
        self.clean += 1 + covered as u64;
        if self.clean > 64 * self.window as u64 && self.window < self.opts.max_in_flight {
            self.window = (self.window * 2).min(self.opts.max_in_flight);
            self.clean = 0;
        }
        Ok(())
    }

    /// Publishes stored after a refused one are only right if the message
    /// before each, in the stream, is the record published before it (a
    /// delayed copy of the refused record from an earlier connection can
    /// be). Anything else is a gap: someone else publishes there.
    async fn check_suspects(&self, conn: &Connection, chain: &Chain) -> Result<()> {
        if chain.suspects.is_empty() {
            return Ok(());
        }
        let stream =
            conn.js.get_stream(&self.opts.stream).await.map_err(|e| Error::nats("look up the stream", e))?;
        for &(prev, seq) in &chain.suspects {
            let before = match seq.checked_sub(1) {
                // A timeout, a lost connection, or a message deleted or
                // expired since: unknown, not a gap. The error makes the
                // mirror resynchronise, as after any transient failure.
                Some(s) if s > 0 => Some(
                    stream
                        .get_raw_message(s)
                        .await
                        .map_err(|e| Error::nats("read the message before a refused publish", e))?,
                ),
                _ => None,
            };
            let ok =
                before.as_ref().and_then(|m| headers::publisher(&m.headers)) == Some((self.queue.id(), prev));
            if !ok {
                return Err(Error::Gap {
                    stream: self.opts.stream.clone(),
                    detail: format!(
                        "sequence {seq} was stored after the publish of index {prev} was refused, and the message before it is not index {prev}: something else publishes to subject {} or to the stream",
                        self.subject
                    ),
                });
            }
        }
        Ok(())
    }

    /// Moves the cursor to `acked` (a store in the meta file).
    fn commit(&mut self) -> Result<()> {
        // Backwards only after a resynchronisation found messages missing.
        if self.acked != self.cursor.committed() {
            let path = self.queue.path().to_path_buf();
            self.cursor.seek(self.acked).map_err(|e| Error::queue("move the mirror's cursor", &path, e))?;
            self.cursor.commit().map_err(|e| Error::queue("commit the mirror's cursor", &path, e))?;
            self.summary.position = self.acked;
        }
        Ok(())
    }

    fn progress(&self, in_flight: usize) -> Event {
        let name = self.cursor.name();
        let lag =
            self.queue.cursors().ok().and_then(|c| c.into_iter().find(|c| c.name == name)).map(|c| c.lag);
        Event::Progress(Progress {
            messages: self.summary.messages,
            skipped: self.summary.skipped,
            position: self.cursor.committed(),
            lag,
            in_flight,
            stream_seq: self.summary.stream_seq,
            age: None,
        })
    }
}

/// What record `rec` is published with, or `None` for a record mirror-in
/// appended that is not forwarded.
fn outgoing<'a>(
    queue_hex: &'a str,
    include_mirrored: bool,
    rec: &Rec,
    expected: Expected,
) -> Option<Outgoing<'a>> {
    let origin = match Origin::decode(&rec.meta) {
        Ok(Some(_)) if !include_mirrored => return None,
        Ok(Some(o)) => o.first,
        // Not a mirror block: the user's own metadata (not mirrored).
        Ok(None) | Err(_) => None,
    };
    Some(Outgoing { queue_hex, index: rec.index, timestamp: rec.timestamp, origin, expected })
}

fn is_not_found(e: &async_nats::jetstream::context::GetStreamError) -> bool {
    matches!(e.kind(), async_nats::jetstream::context::GetStreamErrorKind::JetStream(j)
        if j.error_code() == ErrorCode::STREAM_NOT_FOUND)
}
