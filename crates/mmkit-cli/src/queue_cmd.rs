//! `mmkit queue ...`: create, append, tail, stat, check and bench a queue,
//! plus the hidden process roles of `mmkit demo`.

mod bench;
mod demo;
mod mirror;

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use mmkit_queue::{Queue, Reader, Start, WaitPolicy};

use crate::{CliError, CliResult};

/// `mmkit queue ...`.
#[derive(Debug, clap::Subcommand)]
pub enum QueueCommand {
    /// Create an empty queue directory.
    #[command(after_help = "Example:\n  mmkit queue create /tmp/q --segment-size 67108864\n  \
                            mmkit queue create /tmp/q --json")]
    Create {
        /// Queue directory (created; must not hold a queue already).
        dir: PathBuf,
        /// Bytes per segment file (a multiple of 4096; default 64 MiB).
        #[arg(long, value_name = "BYTES")]
        segment_size: Option<u64>,
        /// Largest message in bytes (default 1 MiB).
        #[arg(long, value_name = "BYTES")]
        max_message_size: Option<u32>,
        /// Print what was created as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Append one message per line of stdin (or of --file).
    #[command(after_help = "Example:\n  seq 1 1000000 | mmkit queue append /tmp/q\n  \
                            echo hello | mmkit queue append /tmp/q --print-index")]
    Append {
        /// Queue directory.
        dir: PathBuf,
        /// Print each message's index on its own line once it is committed.
        #[arg(long)]
        print_index: bool,
        /// Read the lines from this file instead of stdin.
        #[arg(long, value_name = "F")]
        file: Option<PathBuf>,
    },
    /// Print messages, one payload per line (or one JSON object per line).
    ///
    /// Without --follow, prints every message committed before it started
    /// and exits 0. It passes claims abandoned by dead producers (turning
    /// them into padding); a claim of a live producer that stays
    /// uncommitted for --claim-timeout makes it print one line naming the
    /// index and the producer's pid, and exit 1.
    #[command(after_help = "Example:\n  mmkit queue tail /tmp/q --from-start\n  \
                            mmkit queue tail /tmp/q --cursor billing --follow --json\n  \
                            mmkit queue tail /tmp/q --claim-timeout 5")]
    Tail {
        /// Queue directory.
        dir: PathBuf,
        /// Start at the oldest message (the default without --cursor).
        #[arg(long, group = "start")]
        from_start: bool,
        /// Start after the last message.
        #[arg(long, group = "start")]
        from_end: bool,
        /// Start at this index.
        #[arg(long, group = "start", value_name = "INDEX")]
        from: Option<u64>,
        /// Resume from, and commit to, this named cursor.
        #[arg(long, value_name = "NAME")]
        cursor: Option<String>,
        /// Keep waiting for new messages instead of stopping at the end.
        #[arg(long)]
        follow: bool,
        /// One JSON object per message: index, timestamp, payload (or
        /// payload_hex), and meta_hex for records with metadata.
        #[arg(long)]
        json: bool,
        /// Without --follow: how long to wait for a live producer's
        /// uncommitted claim before giving up, in seconds.
        #[arg(long, value_name = "SECONDS", default_value = "1", value_parser = parse_seconds)]
        claim_timeout: Duration,
    },
    /// Show a queue's segments, index range and cursors with their lag.
    #[command(after_help = "Example:\n  mmkit queue stat /tmp/q --json")]
    Stat {
        /// Queue directory.
        dir: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Verify every record and its checksum, and report uncommitted claims.
    ///
    /// Claims of live producers are pending (they may still commit); claims
    /// of dead producers are abandoned and recoverable: readers turn them
    /// into padding when they reach them, and --repair does it now. Each is
    /// listed with its segment, index range and producer pid.
    ///
    /// Exit status: 0 when no record is corrupt and no dead producer's
    /// claim is left (pending claims of live producers are fine); 1 when a
    /// record or file is corrupt (or on any error); 3 when dead producers'
    /// claims remain (run again with --repair).
    #[command(after_help = "Example:\n  mmkit queue check /tmp/q && echo clean\n  \
                            mmkit queue check /tmp/q --repair --json")]
    Check {
        /// Queue directory.
        dir: PathBuf,
        /// Turn dead producers' claims into padding.
        #[arg(long)]
        repair: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Publish the queue to a NATS JetStream stream, exactly once, following it.
    ///
    /// A named cursor follows the queue and is committed once the stream
    /// has acknowledged, in order, so the queue keeps every message until
    /// it is in the stream. Each message carries the queue id and index
    /// (Nats-Msg-Id, Mmkit-Queue-Id, Mmkit-Index) and
    /// Nats-Expected-Last-Subject-Sequence: no gap and no duplicate, across
    /// crashes, server restarts and outages longer than the duplicate
    /// window. Reconnects with backoff. A missing stream (without
    /// --create-stream), a permission denied or a message larger than the
    /// server's max_payload stops it with one line and exit status 1.
    #[command(
        after_help = "Example:\n  mmkit queue mirror-out /tmp/q --server nats://127.0.0.1:4222 --stream ORDERS --create-stream\n  \
                            mmkit queue mirror-out /tmp/q --server nats://nats1:4222 --stream EVENTS --subject events.q1 --json"
    )]
    MirrorOut(mirror::OutArgs),
    /// Append a NATS JetStream stream's messages to the queue, exactly once, following it.
    ///
    /// Each record stores its stream sequence (and original queue id and
    /// index) as metadata in the same append, so a restart resumes after
    /// the last record with an ordered consumer: no state on the server.
    /// Messages that came from this very queue are skipped, so a two-way
    /// mirror does not loop. The queue is created if missing.
    #[command(
        after_help = "Example:\n  mmkit queue mirror-in /tmp/copy --server nats://127.0.0.1:4222 --stream ORDERS\n  \
                            mmkit queue mirror-in /tmp/copy --server nats://nats1:4222 --stream EVENTS --subject 'events.>' --once"
    )]
    MirrorIn(mirror::InArgs),
    /// Measure mmkit-queue on this machine (peers: `mmkit-bench queue`).
    #[command(after_help = "Example:\n  mmkit queue bench --secs 1\n  \
                            cargo run --release -p mmkit-bench -- queue   # with the peers")]
    Bench(bench::BenchArgs),
    /// A producer process of `mmkit demo`.
    #[command(hide = true)]
    DemoProducer(demo::ProducerArgs),
    /// A consumer process of `mmkit demo`.
    #[command(hide = true)]
    DemoConsumer(demo::ConsumerArgs),
}

/// Runs a queue command.
pub fn run(cmd: QueueCommand) -> CliResult<()> {
    match cmd {
        QueueCommand::Create { dir, segment_size, max_message_size, json } => {
            create(&dir, segment_size, max_message_size, json)
        }
        QueueCommand::Append { dir, print_index, file } => append(&dir, print_index, file.as_deref()),
        QueueCommand::Tail { dir, from_start, from_end, from, cursor, follow, json, claim_timeout } => {
            let start = match (from_start, from_end, from) {
                (_, _, Some(i)) => Some(Start::Index(i)),
                (_, true, _) => Some(Start::End),
                (true, _, _) => Some(Start::Beginning),
                _ => None,
            };
            let until = if follow { Until::Forever } else { Until::End { claim_timeout } };
            tail(&dir, start, cursor.as_deref(), until, json)
        }
        QueueCommand::Stat { dir, json } => stat(&dir, json),
        QueueCommand::Check { dir, repair, json } => check(&dir, repair, json),
        QueueCommand::MirrorOut(args) => mirror::out(args),
        QueueCommand::MirrorIn(args) => mirror::r#in(args),
        QueueCommand::Bench(args) => bench::run(args),
        QueueCommand::DemoProducer(args) => demo::producer(args),
        QueueCommand::DemoConsumer(args) => demo::consumer(args),
    }
}

/// The queue part of `mmkit demo`, run in `dir`.
pub fn demo(dir: &Path) -> CliResult<()> {
    demo::run(dir)
}

/// Opens an existing queue, with a clear error when `dir` is missing.
fn open(dir: &Path) -> CliResult<Queue> {
    if !dir.exists() {
        return Err(CliError::Usage(format!("{}: no such queue directory", dir.display())));
    }
    Ok(Queue::open(dir)?)
}

fn create(dir: &Path, segment_size: Option<u64>, max_message_size: Option<u32>, json: bool) -> CliResult<()> {
    let mut opts = Queue::options();
    opts.create_new(true);
    if let Some(s) = segment_size {
        opts.segment_size(s);
    }
    if let Some(m) = max_message_size {
        opts.max_message_size(m);
    }
    let q = opts.open(dir)?;
    if json {
        let v = serde_json::json!({ "path": dir, "segment_size": q.segment_size() });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("created {} (segments of {} bytes)", dir.display(), q.segment_size());
    }
    Ok(())
}

/// Messages per `append_batch` at most.
const BATCH: usize = 4096;
/// Bytes per `append_batch` at most.
const BATCH_BYTES: usize = 1 << 20;

/// Appends each line; batches what is already buffered and commits it
/// before blocking on a read, so a slow typist sees each line committed.
fn append(dir: &Path, print_index: bool, file: Option<&Path>) -> CliResult<()> {
    let q = open(dir)?;
    let mut producer = q.producer()?;
    let (input, name): (Box<dyn Read>, PathBuf) = match file {
        Some(f) => (Box::new(File::open(f).map_err(|e| CliError::io("open", f, e))?), f.to_path_buf()),
        None => (Box::new(io::stdin().lock()), PathBuf::from("<stdin>")),
    };
    let mut input = BufReader::with_capacity(1 << 20, input);
    let mut out = BufWriter::with_capacity(1 << 16, io::stdout().lock());
    let mut batch = Batch::default();
    let mut line = Vec::new();
    loop {
        if input.buffer().is_empty() && !batch.is_empty() {
            batch.commit(&mut producer, print_index, &mut out)?;
        }
        line.clear();
        let n = input.read_until(b'\n', &mut line).map_err(|e| CliError::io("read", &name, e))?;
        if n == 0 {
            break;
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        batch.push(&line);
        if batch.is_full() {
            batch.commit(&mut producer, print_index, &mut out)?;
        }
    }
    batch.commit(&mut producer, print_index, &mut out)?;
    Ok(())
}

/// Lines waiting to be appended, packed into one buffer.
#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Batch {
    fn push(&mut self, msg: &[u8]) {
        self.bytes.extend_from_slice(msg);
        self.ends.push(self.bytes.len());
    }

    fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    fn is_full(&self) -> bool {
        self.ends.len() >= BATCH || self.bytes.len() >= BATCH_BYTES
    }

    fn commit(&mut self, p: &mut mmkit_queue::Producer, print: bool, out: &mut impl Write) -> CliResult<()> {
        if self.is_empty() {
            return Ok(());
        }
        let mut msgs = Vec::with_capacity(self.ends.len());
        let mut start = 0;
        for &end in &self.ends {
            msgs.push(&self.bytes[start..end]);
            start = end;
        }
        let indices = p.append_batch(&msgs)?;
        self.bytes.clear();
        self.ends.clear();
        if print {
            for i in indices {
                writeln!(out, "{i}").map_err(CliError::Output)?;
            }
            out.flush().map_err(CliError::Output)?;
        }
        Ok(())
    }
}

/// Where `tail` writes; a closed pipe downstream ends it quietly.
struct Out<W: Write> {
    w: W,
    json: bool,
}

impl<W: Write> Out<W> {
    fn record(&mut self, rec: &Owned) -> io::Result<()> {
        let (index, timestamp, payload, meta) = (rec.index, rec.timestamp, &rec.payload, &rec.meta);
        if !self.json {
            self.w.write_all(payload)?;
            return self.w.write_all(b"\n");
        }
        let mut v = serde_json::json!({ "index": index, "timestamp": timestamp });
        if !meta.is_empty() {
            v["meta_hex"] = hex(meta).into();
        }
        match std::str::from_utf8(payload) {
            Ok(s) => v["payload"] = s.into(),
            Err(_) => v["payload_hex"] = hex(payload).into(),
        }
        serde_json::to_writer(&mut self.w, &v)?;
        self.w.write_all(b"\n")
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn output_error(e: io::Error) -> Option<CliError> {
    (e.kind() != io::ErrorKind::BrokenPipe).then_some(CliError::Output(e))
}

/// Flushes output every this many messages (and whenever the queue is idle).
const FLUSH_EVERY: u64 = 4096;

/// How long `tail` reads.
#[derive(Clone, Copy, Debug)]
enum Until {
    /// Keep waiting for new messages (`--follow`).
    Forever,
    /// Up to the end as it was at the start, waiting at most
    /// `claim_timeout` for a live producer's claim.
    End { claim_timeout: Duration },
}

/// Parses a non-negative number of seconds.
pub(crate) fn parse_seconds(s: &str) -> Result<Duration, String> {
    s.parse::<f64>()
        .ok()
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .ok_or_else(|| format!("{s:?} is not a number of seconds"))
}

fn tail(dir: &Path, start: Option<Start>, cursor: Option<&str>, until: Until, json: bool) -> CliResult<()> {
    let q = open(dir)?;
    let end = match until {
        Until::Forever => None,
        Until::End { claim_timeout } => Some((q.end_index()?, claim_timeout)),
    };
    let mut out = Out { w: BufWriter::with_capacity(1 << 16, io::stdout().lock()), json };
    match cursor {
        Some(name) => {
            let mut c = q.cursor(name)?;
            if let Some(s) = start {
                seek(&q, &mut c, s)?;
            }
            c.set_wait_policy(WaitPolicy::BALANCED);
            follow_loop(&mut c, end, &mut out)
        }
        None => {
            let mut r = q.reader(start.unwrap_or(Start::Beginning))?;
            r.set_wait_policy(WaitPolicy::BALANCED);
            follow_loop(&mut r, end, &mut out)
        }
    }
}

/// A reader that `tail` follows: an anonymous one, or a named cursor that
/// commits its position after the output is flushed (at-least-once).
trait Tailed {
    fn reader(&mut self) -> &mut Reader;
    fn checkpoint(&mut self) -> mmkit_queue::Result<()>;
}

impl Tailed for Reader {
    fn reader(&mut self) -> &mut Reader {
        self
    }
    fn checkpoint(&mut self) -> mmkit_queue::Result<()> {
        Ok(())
    }
}

impl Tailed for mmkit_queue::Cursor {
    fn reader(&mut self) -> &mut Reader {
        self
    }
    fn checkpoint(&mut self) -> mmkit_queue::Result<()> {
        self.commit()
    }
}

/// Moves a reader to where the user asked.
fn seek(q: &Queue, c: &mut Reader, start: Start) -> CliResult<()> {
    let index = match start {
        Start::Beginning => q.first_index()?,
        Start::End => q.end_index()?,
        Start::Index(i) => i,
        Start::Time(ns) => q.seek_time(ns)?,
    };
    Ok(c.seek(index)?)
}

/// A record copied out of the reader.
struct Owned {
    index: u64,
    timestamp: u64,
    payload: Vec<u8>,
    meta: Vec<u8>,
}

fn owned(rec: mmkit_queue::Record<'_>) -> Owned {
    Owned { index: rec.index(), timestamp: rec.timestamp(), payload: rec.to_vec(), meta: rec.meta().to_vec() }
}

/// Reads until `end` (the index, and how long to wait for a live claim
/// before it) or forever, writing each record; flushes and checkpoints
/// after every [`FLUSH_EVERY`] records and whenever it would wait.
fn follow_loop<T: Tailed, W: Write>(
    t: &mut T,
    end: Option<(u64, Duration)>,
    out: &mut Out<W>,
) -> CliResult<()> {
    let mut since_flush = 0u64;
    loop {
        if end.is_some_and(|(end, _)| t.reader().position() >= end) {
            return flush(t, out);
        }
        let next = match t.reader().next()?.map(owned) {
            Some(rec) => Some(rec),
            None => {
                flush(t, out)?;
                since_flush = 0;
                let wait = end.map_or(Duration::from_millis(500), |(_, claim_timeout)| claim_timeout);
                let rec = t.reader().next_timeout(Some(wait))?.map(owned);
                if rec.is_none() {
                    if let Some((end, claim_timeout)) = end {
                        stuck(t.reader(), end, claim_timeout)?;
                    }
                }
                rec
            }
        };
        let Some(rec) = next else { continue };
        if let Err(e) = out.record(&rec) {
            return output_error(e).map_or(Ok(()), Err);
        }
        since_flush += 1;
        if since_flush >= FLUSH_EVERY {
            since_flush = 0;
            flush(t, out)?;
        }
    }
}

/// Flushes the output, then checkpoints the reader (a named cursor commits
/// only what was written out). A closed pipe downstream is not an error.
fn flush<T: Tailed, W: Write>(t: &mut T, out: &mut Out<W>) -> CliResult<()> {
    if let Err(e) = out.w.flush() {
        return output_error(e).map_or(Ok(()), Err);
    }
    Ok(t.checkpoint()?)
}

/// After a wait of `claim_timeout` with nothing read and the end not
/// reached: an error naming the live producer whose claim blocks, if that
/// is what happened. Dead producers' claims are recovered by the reader, so
/// the caller just goes on.
fn stuck(r: &mut Reader, end: u64, claim_timeout: Duration) -> CliResult<()> {
    if r.position() >= end {
        return Ok(());
    }
    match r.pending_claim()? {
        Some(c) if c.alive => Err(CliError::Other(format!(
            "message {} is claimed by producer pid {}, alive, and was not committed within {:?}; \
             stopping before it (messages up to {} are committed)",
            c.index,
            c.pid.map_or_else(|| "?".to_string(), |p| p.to_string()),
            claim_timeout,
            end
        ))),
        _ => Ok(()),
    }
}

fn stat(dir: &Path, json: bool) -> CliResult<()> {
    let q = open(dir)?;
    let s = q.stat()?;
    let mut out = io::stdout().lock();
    if json {
        let v = serde_json::json!({
            "path": dir,
            "segment_size": s.segment_size,
            "max_message_size": s.max_message_size,
            "first_index": s.first_index,
            "end_index": s.end_index,
            "segments": s.segments.iter().map(|g| serde_json::json!({
                "number": g.number, "path": g.path, "bytes": g.bytes,
                "messages": g.messages, "sealed": g.sealed,
            })).collect::<Vec<_>>(),
            "cursors": s.cursors.iter().map(|c| serde_json::json!({
                "name": c.name, "position": c.position, "lag": c.lag,
            })).collect::<Vec<_>>(),
            "groups": s.groups.iter().map(|g| serde_json::json!({
                "name": g.name, "position": g.position, "in_flight": g.in_flight, "lag": g.lag,
            })).collect::<Vec<_>>(),
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?).map_err(CliError::Output)?;
        return Ok(());
    }
    let mut text = format!(
        "queue {}\n  segment size {} bytes, max message {} bytes\n  index range {}..{}\n  segments: {}\n",
        dir.display(),
        s.segment_size,
        s.max_message_size,
        s.first_index,
        s.end_index,
        s.segments.len()
    );
    for g in &s.segments {
        let state = if g.sealed { "sealed" } else { "active" };
        text.push_str(&format!(
            "    #{:<6} {:>10} messages {:>12} bytes  {state}\n",
            g.number, g.messages, g.bytes
        ));
    }
    text.push_str(&format!("  cursors: {}\n", s.cursors.len()));
    for c in &s.cursors {
        text.push_str(&format!("    {:<20} position {:<16} lag {}\n", c.name, c.position, c.lag));
    }
    for g in &s.groups {
        text.push_str(&format!("  group {:<20} position {:<16} lag {}\n", g.name, g.position, g.lag));
    }
    out.write_all(text.as_bytes()).map_err(CliError::Output)
}

fn check(dir: &Path, repair: bool, json: bool) -> CliResult<()> {
    let q = open(dir)?;
    let r = if repair { q.repair()? } else { q.check()? };
    let mut out = io::stdout().lock();
    let text = if json {
        format!("{}\n", serde_json::to_string_pretty(&check_json(dir, &r))?)
    } else {
        check_text(dir, &r)
    };
    out.write_all(text.as_bytes()).map_err(CliError::Output)?;
    if !r.corrupt.is_empty() {
        return Err(CliError::Other(format!("{}: {} corrupt records", dir.display(), r.corrupt.len())));
    }
    let dead: u64 = r.unrepaired().map(|c| c.claims.unwrap_or(1)).sum();
    if dead > 0 {
        return Err(CliError::Finding {
            message: format!(
                "{}: {dead} claims abandoned by dead producers are not recovered yet (run `mmkit queue check --repair`)",
                dir.display()
            ),
            code: 3,
        });
    }
    Ok(())
}

fn check_json(dir: &Path, r: &mmkit_queue::CheckReport) -> serde_json::Value {
    serde_json::json!({
        "path": dir,
        "segments": r.segments, "messages": r.messages, "abandoned": r.abandoned,
        "pending": r.pending, "dead": r.dead, "clean": r.is_clean(),
        "claims": r.claims.iter().map(|c| serde_json::json!({
            "segment": c.segment, "first": c.first, "last": c.last(), "claims": c.claims,
            "pid": c.pid, "alive": c.alive, "repaired": c.repaired,
        })).collect::<Vec<_>>(),
        "corrupt": r.corrupt.iter().map(|c| serde_json::json!({
            "segment": c.segment, "index": c.index, "offset": c.offset, "reason": c.reason,
        })).collect::<Vec<_>>(),
    })
}

fn check_text(dir: &Path, r: &mmkit_queue::CheckReport) -> String {
    let mut text = format!(
        "{}: {} segments, {} messages, {} abandoned claims (padding), {} dead producers' claims, {} pending claims of live producers\n",
        dir.display(),
        r.segments,
        r.messages,
        r.abandoned,
        r.dead,
        r.pending
    );
    for c in &r.claims {
        let range = match (c.claims, c.last()) {
            (Some(1), _) => format!("index {}", c.first),
            (_, Some(last)) => format!("indices {}..={last}", c.first),
            _ => format!("indices from {} (extent not recorded yet)", c.first),
        };
        let pid = c.pid.map_or_else(|| "unknown pid".to_string(), |p| format!("pid {p}"));
        let what = match (c.alive, c.repaired) {
            (true, _) => "pending: producer alive",
            (false, true) => "abandoned: producer dead, repaired",
            (false, false) => "abandoned: producer dead, recoverable with --repair",
        };
        text.push_str(&format!("claim: segment {} {range} ({pid}) {what}\n", c.segment));
    }
    for c in &r.corrupt {
        let index = c.index.map(|i| i.to_string()).unwrap_or_else(|| "?".into());
        text.push_str(&format!(
            "corrupt: segment {} index {index} offset {}: {}\n",
            c.segment, c.offset, c.reason
        ));
    }
    text
}
