//! `mmkit queue ...`: create, append, tail, stat, check and bench a queue,
//! plus the hidden process roles of `mmkit demo`.

mod bench;
mod demo;

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
    #[command(after_help = "Example:\n  mmkit queue tail /tmp/q --from-start\n  \
                            mmkit queue tail /tmp/q --cursor billing --follow --json")]
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
        /// One JSON object per message: index, timestamp, payload.
        #[arg(long)]
        json: bool,
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
    /// Verify every record and its checksum; exit non-zero on corruption.
    #[command(after_help = "Example:\n  mmkit queue check /tmp/q && echo clean")]
    Check {
        /// Queue directory.
        dir: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
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
        QueueCommand::Tail { dir, from_start, from_end, from, cursor, follow, json } => {
            let start = match (from_start, from_end, from) {
                (_, _, Some(i)) => Some(Start::Index(i)),
                (_, true, _) => Some(Start::End),
                (true, _, _) => Some(Start::Beginning),
                _ => None,
            };
            tail(&dir, start, cursor.as_deref(), follow, json)
        }
        QueueCommand::Stat { dir, json } => stat(&dir, json),
        QueueCommand::Check { dir, json } => check(&dir, json),
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
    fn record(&mut self, index: u64, timestamp: u64, payload: &[u8]) -> io::Result<()> {
        if !self.json {
            self.w.write_all(payload)?;
            return self.w.write_all(b"\n");
        }
        let mut v = serde_json::json!({ "index": index, "timestamp": timestamp });
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

fn tail(dir: &Path, start: Option<Start>, cursor: Option<&str>, follow: bool, json: bool) -> CliResult<()> {
    let q = open(dir)?;
    let stop_at = if follow { None } else { Some(q.end_index()?) };
    let mut out = Out { w: BufWriter::with_capacity(1 << 16, io::stdout().lock()), json };
    match cursor {
        Some(name) => {
            let mut c = q.cursor(name)?;
            if let Some(s) = start {
                seek(&q, &mut c, s)?;
            }
            c.set_wait_policy(WaitPolicy::BALANCED);
            follow_loop(&mut c, stop_at, &mut out)
        }
        None => {
            let mut r = q.reader(start.unwrap_or(Start::Beginning))?;
            r.set_wait_policy(WaitPolicy::BALANCED);
            follow_loop(&mut r, stop_at, &mut out)
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

type Owned = (u64, u64, Vec<u8>);

fn owned(rec: mmkit_queue::Record<'_>) -> Owned {
    (rec.index(), rec.timestamp(), rec.to_vec())
}

/// Reads until `stop_at` (or forever), writing each record; flushes and
/// checkpoints after every [`FLUSH_EVERY`] records and whenever idle.
fn follow_loop<T: Tailed, W: Write>(t: &mut T, stop_at: Option<u64>, out: &mut Out<W>) -> CliResult<()> {
    let mut since_flush = 0u64;
    loop {
        let done = stop_at.is_some_and(|end| t.reader().position() >= end);
        let ready = if done { None } else { t.reader().next()?.map(owned) };
        let next = match ready {
            Some(rec) => Some(rec),
            None => {
                if let Err(e) = out.w.flush() {
                    return output_error(e).map_or(Ok(()), Err);
                }
                t.checkpoint()?;
                since_flush = 0;
                if stop_at.is_some() {
                    return Ok(());
                }
                t.reader().next_timeout(Some(Duration::from_millis(500)))?.map(owned)
            }
        };
        let Some((index, ts, payload)) = next else { continue };
        if let Err(e) = out.record(index, ts, &payload) {
            return output_error(e).map_or(Ok(()), Err);
        }
        since_flush += 1;
        if since_flush >= FLUSH_EVERY {
            since_flush = 0;
            if let Err(e) = out.w.flush() {
                return output_error(e).map_or(Ok(()), Err);
            }
            t.checkpoint()?;
        }
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

fn check(dir: &Path, json: bool) -> CliResult<()> {
    let q = open(dir)?;
    let r = q.check()?;
    let mut out = io::stdout().lock();
    if json {
        let v = serde_json::json!({
            "segments": r.segments, "messages": r.messages, "abandoned": r.abandoned,
            "pending": r.pending, "clean": r.corrupt.is_empty(),
            "corrupt": r.corrupt.iter().map(|c| serde_json::json!({
                "segment": c.segment, "index": c.index, "offset": c.offset, "reason": c.reason,
            })).collect::<Vec<_>>(),
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?).map_err(CliError::Output)?;
    } else {
        let mut text = format!(
            "{}: {} segments, {} messages, {} abandoned claims, {} pending\n",
            dir.display(),
            r.segments,
            r.messages,
            r.abandoned,
            r.pending
        );
        for c in &r.corrupt {
            let index = c.index.map(|i| i.to_string()).unwrap_or_else(|| "?".into());
            text.push_str(&format!(
                "corrupt: segment {} index {index} offset {}: {}\n",
                c.segment, c.offset, c.reason
            ));
        }
        out.write_all(text.as_bytes()).map_err(CliError::Output)?;
    }
    if r.corrupt.is_empty() {
        Ok(())
    } else {
        Err(CliError::Other(format!("{}: {} corrupt records", dir.display(), r.corrupt.len())))
    }
}
