//! The `bridge` suite: mmkit-bridge's mirrors against JetStream's own
//! publishing from the same client library (async-nats), in the same run,
//! on a throwaway `nats-server -js` (file storage, /tmp).
//!
//! ```text
//! cargo run --release -p mmkit-bench -- bridge
//! cargo run --release -p mmkit-bench -- bridge --json --only lag
//! ```
//!
//! - **mirror-out throughput** (64 B and 1 KiB): a queue filled with
//!   `--messages` messages, mirrored with `MirrorOut` (`--once`, a stream of
//!   its own, so publishes are pipelined, `--window` in flight), timed from
//!   its resynchronisation to the last acknowledgement and cursor commit.
//!   Peers: async-nats publishing the same number of messages of the same
//!   size to a stream with the same window of acknowledgements in flight,
//!   awaited in order ("JetStream async publish"); the same with a
//!   `Nats-Msg-Id` header per message; with mirror-out's headers; and with
//!   mirror-out's headers and, as mirror-out does, an acknowledgement asked
//!   for once in 64 publishes. Each row's note gives the CPU time per
//!   message of the server and of the benchmark's process (the client),
//!   medians over the repetitions, from `/proc`.
//! - **end-to-end lag at `--rate` msg/s**: a producer appends 64 B
//!   messages at that rate; mirror-out publishes them, mirror-in (another
//!   runtime, as a second `mmkit` process would be) appends them to a
//!   second queue, and a reader of that queue takes, for each record, the
//!   time since its original append (the timestamp mirror-in stores in the
//!   record's metadata). Peer: JetStream alone, async-nats publishing at
//!   the same rate and an ordered consumer reading (the transport's floor).
//!
//! Repetitions are interleaved across peers; tables show the median, the
//! range and the ratio to the JetStream peer.

use std::collections::VecDeque;
use std::future::IntoFuture;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, consumer::pull, context::PublishAckFuture, message::PublishMessage};
use bytes::Bytes;
use futures::StreamExt;
use mmkit_bridge::headers::Expected;
use mmkit_bridge::{Event, InOptions, LocalServer, MirrorIn, MirrorOut, Origin, OutOptions, StreamOptions};
use mmkit_queue::{Queue, Start, WaitPolicy};
use serde::Serialize;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Options of the `bridge` suite.
#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  cargo run --release -p mmkit-bench -- bridge\n  \
                        cargo run --release -p mmkit-bench -- bridge --json --only lag")]
pub struct Args {
    /// Print one JSON document on stdout (the tables go to stderr).
    #[arg(long)]
    json: bool,
    /// Repetitions of each measurement; the median is reported.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Messages per throughput measurement.
    #[arg(long, default_value_t = 200_000)]
    messages: u64,
    /// Publishes in flight for mirror-out; acknowledgements awaited at
    /// most for its peers.
    #[arg(long, default_value_t = 1024)]
    window: usize,
    /// Messages per second in the lag measurement.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// Seconds per lag measurement.
    #[arg(long, default_value_t = 3.0)]
    lag_secs: f64,
    /// Run only the workloads or peers whose name contains one of these.
    #[arg(long)]
    only: Vec<String>,
}

/// One table row: a peer on a workload, all repetitions.
#[derive(Debug, Serialize)]
struct Row {
    workload: String,
    peer: &'static str,
    unit: &'static str,
    median: f64,
    min: f64,
    max: f64,
    samples: Vec<f64>,
    /// Throughput rows: CPU time per message of the server, µs (median).
    #[serde(skip_serializing_if = "Option::is_none")]
    server_cpu_us: Option<f64>,
    /// Throughput rows: CPU time per message of the benchmark's process
    /// (the client), µs (median).
    #[serde(skip_serializing_if = "Option::is_none")]
    client_cpu_us: Option<f64>,
    note: String,
}

const MIRROR_OUT: &str = "mmkit mirror-out";
const JS_ASYNC: &str = "JetStream async publish";
const JS_MSG_ID: &str = "JetStream async publish + Nats-Msg-Id";
const JS_HEADERS: &str = "JetStream async publish + mirror-out's headers";
const JS_SPARSE: &str = "JetStream async publish + mirror-out's headers, 1 ack in 64";
const MIRRORS: &str = "mmkit mirror-out → mirror-in";
const JS_ALONE: &str = "JetStream publish → ordered consumer";

/// What one measurement gives: a rate and the CPU time per message of the
/// server and of this process (µs), or lag percentiles (p50, p99, p99.9).
enum Measured {
    Rate(f64, [f64; 2]),
    Lag([f64; 3]),
}

struct Suite {
    args: Args,
    server: LocalServer,
    dir: tempfile::TempDir,
    rows: Vec<Row>,
    runs: u32,
}

/// Runs the suite and prints its tables.
pub fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    run_suite(args).map_err(|e| e as Box<dyn std::error::Error>)
}

fn run_suite(args: Args) -> Result<(), BoxError> {
    if args.reps == 0 || args.messages == 0 || args.window == 0 || args.rate == 0 {
        return Err("--reps, --messages, --window and --rate must be positive".into());
    }
    if !(args.lag_secs.is_finite() && args.lag_secs > 0.0) {
        return Err(format!("--lag-secs {} must be a positive number of seconds", args.lag_secs).into());
    }
    let dir = tempfile::Builder::new().prefix("mmkit-bench-bridge").tempdir()?;
    let server = LocalServer::start(&dir.path().join("nats"))
        .map_err(|e| format!("nats-server: {e} (apt-get install nats-server)"))?;
    let machine = crate::machine::print_header(args.json);
    let mut suite = Suite { args, server, dir, rows: Vec::new(), runs: 0 };
    for size in [64usize, 1024] {
        let workload = format!("mirror-out throughput, {size} B");
        let peers = [MIRROR_OUT, JS_ASYNC, JS_MSG_ID, JS_HEADERS, JS_SPARSE];
        suite.table(&workload, &peers, "msg/s", |s, peer| s.throughput(peer, size))?;
    }
    let workload = format!("end-to-end lag at {} msg/s, 64 B", suite.args.rate);
    suite.table(&workload, &[MIRRORS, JS_ALONE], "µs", |s, peer| s.lag(peer))?;
    if suite.args.json {
        let doc = serde_json::json!({ "machine": machine, "rows": suite.rows });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    }
    Ok(())
}

impl Suite {
    fn wanted(&self, workload: &str, peer: &str) -> bool {
        self.args.only.is_empty()
            || self.args.only.iter().any(|o| workload.contains(o.as_str()) || peer.contains(o.as_str()))
    }

    /// Measures `peers` on `workload`, repetitions interleaved, and prints
    /// the table. A lag workload gives two rows per peer (p50 and p99).
    fn table(
        &mut self,
        workload: &str,
        peers: &[&'static str],
        unit: &'static str,
        mut one: impl FnMut(&mut Self, &'static str) -> Result<Measured, BoxError>,
    ) -> Result<(), BoxError> {
        let peers: Vec<&'static str> = peers.iter().copied().filter(|p| self.wanted(workload, p)).collect();
        if peers.is_empty() {
            return Ok(());
        }
        let mut samples: Vec<Vec<Measured>> = peers.iter().map(|_| Vec::new()).collect();
        let mut notes: Vec<String> = vec![String::new(); peers.len()];
        for _ in 0..self.args.reps {
            for (k, &peer) in peers.iter().enumerate() {
                if notes[k].is_empty() {
                    match one(self, peer) {
                        Ok(m) => samples[k].push(m),
                        Err(e) => notes[k] = format!("failed: {e}"),
                    }
                }
            }
        }
        let first = self.rows.len();
        for (k, &peer) in peers.iter().enumerate() {
            let rates: Vec<f64> = samples[k]
                .iter()
                .filter_map(|m| if let Measured::Rate(r, _) = m { Some(*r) } else { None })
                .collect();
            let cpu = |i: usize| {
                let mut v: Vec<f64> = samples[k]
                    .iter()
                    .filter_map(|m| if let Measured::Rate(_, c) = m { Some(c[i]) } else { None })
                    .collect();
                v.sort_by(f64::total_cmp);
                v.get(v.len() / 2).copied()
            };
            let lags: Vec<[f64; 3]> = samples[k]
                .iter()
                .filter_map(|m| if let Measured::Lag(l) = m { Some(*l) } else { None })
                .collect();
            if !lags.is_empty() {
                for (i, name) in ["p50", "p99", "p99.9"].iter().enumerate() {
                    let v: Vec<f64> = lags.iter().map(|l| l[i]).collect();
                    self.rows.push(row(format!("{workload}, {name}"), peer, unit, v, notes[k].clone()));
                }
            } else {
                let mut r = row(workload.to_string(), peer, unit, rates, notes[k].clone());
                (r.server_cpu_us, r.client_cpu_us) = (cpu(0), cpu(1));
                if let (Some(server), Some(client)) = (r.server_cpu_us, r.client_cpu_us) {
                    r.note = format!("CPU/msg: server {server:.1} µs, client {client:.1} µs");
                }
                self.rows.push(r);
            }
        }
        let text = render(&self.rows[first..]);
        self.say(&format!("\n### {workload}\n\n{text}"));
        Ok(())
    }

    /// Prints on stdout, or on stderr when stdout carries the JSON.
    fn say(&self, text: &str) {
        if self.args.json {
            eprintln!("{text}");
        } else {
            println!("{text}");
            let _ = std::io::stdout().flush();
        }
    }

    fn next_name(&mut self) -> String {
        self.runs += 1;
        format!("B{}", self.runs)
    }

    fn throughput(&mut self, peer: &'static str, size: usize) -> Result<Measured, BoxError> {
        let name = self.next_name();
        let url = self.server.url();
        let (n, window) = (self.args.messages, self.args.window);
        let server = self.server.pid();
        let rate = match peer {
            MIRROR_OUT => {
                let dir = self.dir.path().join(&name);
                let r = mirror_out_rate(&url, &dir, &name, n, size, window, server);
                let _ = std::fs::remove_dir_all(&dir);
                r
            }
            _ => {
                let headers = match peer {
                    JS_MSG_ID => Headers::MsgId,
                    JS_HEADERS => Headers::Mirror,
                    JS_SPARSE => Headers::MirrorSparse,
                    _ => Headers::None,
                };
                let publish = Publish { n, size, window, headers };
                mmkit_bridge::block_on(js_rate(&url, &name, publish, server))?
            }
        };
        delete_stream(&url, &name);
        let (rate, cpu) = rate?;
        Ok(Measured::Rate(rate, cpu))
    }

    fn lag(&mut self, peer: &'static str) -> Result<Measured, BoxError> {
        let name = self.next_name();
        let url = self.server.url();
        let (rate, secs) = (self.args.rate, self.args.lag_secs);
        let lags = match peer {
            MIRRORS => {
                let dir = self.dir.path().join(&name);
                let r = mirrors_lag(&url, &dir, &name, rate, secs);
                let _ = std::fs::remove_dir_all(&dir);
                r
            }
            _ => mmkit_bridge::block_on(js_lag(&url, &name, rate, secs))?,
        };
        delete_stream(&url, &name);
        let mut lags = lags?;
        Ok(Measured::Lag(percentiles(&mut lags)))
    }
}

fn row(workload: String, peer: &'static str, unit: &'static str, mut v: Vec<f64>, note: String) -> Row {
    v.sort_by(f64::total_cmp);
    let median = v.get(v.len() / 2).copied().unwrap_or(f64::NAN);
    let (min, max) = (v.first().copied().unwrap_or(f64::NAN), v.last().copied().unwrap_or(f64::NAN));
    Row { workload, peer, unit, median, min, max, samples: v, server_cpu_us: None, client_cpu_us: None, note }
}

/// A Markdown table of one workload's rows, each with its ratio to the
/// JetStream peer of the workload: row ÷ peer (for rates, the fraction of
/// JetStream's rate; for lags, how many times JetStream's own lag).
fn render(rows: &[Row]) -> String {
    let mut s = String::from(
        "| workload | peer | median | range | ratio to JetStream | note |\n|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let base =
            rows.iter().find(|b| b.workload == r.workload && (b.peer == JS_ASYNC || b.peer == JS_ALONE));
        let ratio = base
            .filter(|b| b.peer != r.peer)
            .map(|b| format!("{:.2}×", r.median / b.median))
            .unwrap_or_default();
        s.push_str(&format!(
            "| {} | {} | {} | {}–{} | {} | {} |\n",
            r.workload,
            r.peer,
            fmt(r.median, r.unit),
            fmt(r.min, r.unit),
            fmt(r.max, r.unit),
            ratio,
            r.note
        ));
    }
    s
}

fn fmt(v: f64, unit: &str) -> String {
    match unit {
        "msg/s" if v >= 1e6 => format!("{:.2} M/s", v / 1e6),
        "msg/s" => format!("{:.1} k/s", v / 1e3),
        _ if v >= 1000.0 => format!("{:.2} ms", v / 1e3),
        _ => format!("{v:.0} µs"),
    }
}

/// p50, p99, p99.9 of `v` (µs).
fn percentiles(v: &mut [f64]) -> [f64; 3] {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v.get(((v.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(f64::NAN);
    [at(0.50), at(0.99), at(0.999)]
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as u64
}

async fn connect_js(url: &str) -> Result<jetstream::Context, BoxError> {
    Ok(jetstream::new(async_nats::connect(url).await?))
}

async fn create_stream(js: &jetstream::Context, name: &str) -> Result<(), BoxError> {
    let config = jetstream::stream::Config {
        name: name.to_string(),
        subjects: vec![name.to_string()],
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    };
    js.create_stream(config).await?;
    Ok(())
}

fn delete_stream(url: &str, name: &str) {
    let _ = mmkit_bridge::block_on(async {
        if let Ok(js) = connect_js(url).await {
            let _ = js.delete_stream(name).await;
        }
    });
}

/// CPU time (user + system) of a process so far, in µs: `pid`, or this
/// process. 0 if `/proc` cannot tell.
fn cpu_us(pid: Option<u32>) -> f64 {
    let path = pid.map_or("/proc/self/stat".to_string(), |p| format!("/proc/{p}/stat"));
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // After the command name's closing parenthesis, utime and stime are
    // the 12th and 13th fields, in clock ticks.
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (ticks(11) + ticks(12)) * 1e6 / hz
}

/// CPU time per message since it started: the server's,
/// this process's.
struct CpuClock {
    server: Option<u32>,
    start: [f64; 2],
}

impl CpuClock {
    fn start(server: Option<u32>) -> CpuClock {
        CpuClock { server, start: [cpu_us(server), cpu_us(None)] }
    }

    fn per_message(&self, n: u64) -> [f64; 2] {
        let now = [cpu_us(self.server), cpu_us(None)];
        [(now[0] - self.start[0]) / n as f64, (now[1] - self.start[1]) / n as f64]
    }
}

/// A queue of `n` messages of `size` bytes, mirrored out once: the rate,
/// and the CPU time per message (server, this process).
fn mirror_out_rate(
    url: &str,
    dir: &Path,
    name: &str,
    n: u64,
    size: usize,
    window: usize,
    server: Option<u32>,
) -> Result<(f64, [f64; 2]), BoxError> {
    let q = Queue::options().create(true).open(dir)?;
    let msg = vec![b'x'; size];
    let mut p = q.producer()?;
    let batch: Vec<&[u8]> = (0..1000).map(|_| &msg[..]).collect();
    let mut left = n;
    while left > 0 {
        let k = left.min(1000) as usize;
        p.append_batch(&batch[..k])?;
        left -= k as u64;
    }
    drop(p);
    let mut opts = OutOptions::new(url, name);
    opts.create = Some(StreamOptions::default());
    opts.once = true;
    opts.max_in_flight = window;
    let mut start = None;
    let mut mirror = MirrorOut::new(q, opts)?;
    let summary = mmkit_bridge::block_on(mirror.run(std::future::pending(), &mut |e| {
        if matches!(e, Event::Resynced { .. }) {
            start.get_or_insert_with(|| (Instant::now(), CpuClock::start(server)));
        }
    }))??;
    let (start, cpu) = start.ok_or("the mirror never started")?;
    let elapsed = start.elapsed();
    if summary.messages != n {
        return Err(format!("mirrored {} of {n} messages", summary.messages).into());
    }
    Ok((n as f64 / elapsed.as_secs_f64(), cpu.per_message(n)))
}

/// What the JetStream peers put in their messages' headers.
#[derive(Clone, Copy, PartialEq)]
enum Headers {
    None,
    MsgId,
    /// What mirror-out sends: the id, the expected last subject sequence
    /// (exact: the stream is fresh and the peer alone on it) and the
    /// `Mmkit-*` headers.
    Mirror,
    /// The same, and an acknowledgement asked for only by the first
    /// publish, one in [`SPARSE_ACKS`] and the last, as mirror-out does in
    /// a stream of its own (the others go as plain NATS publishes).
    MirrorSparse,
}

/// Publishes per acknowledgement for [`Headers::MirrorSparse`]: mirror-out's.
const SPARSE_ACKS: u64 = mmkit_bridge::ACK_EVERY as u64;

/// What a JetStream peer publishes: `n` messages of `size` bytes, `window`
/// acknowledgements in flight at most, with `headers`.
struct Publish {
    n: u64,
    size: usize,
    window: usize,
    headers: Headers,
}

/// async-nats publishing `n` messages with `window` acknowledgements in
/// flight, awaited in order (JetStream's PublishAsync pattern): the rate
/// and the CPU time per message (server, this process).
async fn js_rate(
    url: &str,
    name: &str,
    publish: Publish,
    server: Option<u32>,
) -> Result<(f64, [f64; 2]), BoxError> {
    let Publish { n, size, window, headers } = publish;
    let js = connect_js(url).await?;
    let client = js.client();
    create_stream(&js, name).await?;
    let payload = Bytes::from(vec![b'x'; size]);
    let subject = async_nats::Subject::from(name);
    let queue_hex = mmkit_bridge::headers::queue_id_hex(u128::MAX / 3);
    let mut acks = VecDeque::with_capacity(window);
    let cpu = CpuClock::start(server);
    let start = Instant::now();
    for i in 0..n {
        if acks.len() >= window {
            let ack: std::pin::Pin<Box<_>> = acks.pop_front().ok_or("no ack")?;
            ack.await?;
        }
        let msg = match headers {
            Headers::None => PublishMessage::build().payload(payload.clone()),
            Headers::MsgId => {
                PublishMessage::build().payload(payload.clone()).message_id(format!("{name}:{i}"))
            }
            Headers::Mirror | Headers::MirrorSparse => {
                let out = mmkit_bridge::headers::Outgoing {
                    queue_hex: &queue_hex,
                    index: i,
                    timestamp: now_ns(),
                    origin: None,
                    expected: if i == 0 { Expected::Subject(0) } else { Expected::Stream(i) },
                };
                PublishMessage::build().payload(payload.clone()).headers(out.headers())
            }
        };

        let covered = headers == Headers::MirrorSparse && i > 0 && i % SPARSE_ACKS != 0 && i + 1 < n;
        if covered {
            let m = msg.outbound_message(subject.clone());
            client.publish_with_headers(m.subject, m.headers.unwrap_or_default(), m.payload).await?;
            continue;
        }
        let fut: PublishAckFuture = js.send_publish(subject.clone(), msg).await?;
        acks.push_back(fut.into_future());
    }
    while let Some(ack) = acks.pop_front() {
        ack.await?;
    }
    Ok((n as f64 / start.elapsed().as_secs_f64(), cpu.per_message(n)))
}

/// Appends 64 B messages to `q` at `rate` per second for `secs`, after
/// `warm` messages at once; returns how many it appended.
fn paced_appends(q: &Queue, rate: u64, secs: f64, warm: u64) -> Result<u64, BoxError> {
    let mut p = q.producer()?;
    let msg = [b'm'; 64];
    for _ in 0..warm {
        p.append_with_timestamp(&msg, now_ns())?;
    }
    std::thread::sleep(Duration::from_millis(300));
    let total = (rate as f64 * secs) as u64;
    let start = Instant::now();
    let mut sent = 0;
    while sent < total {
        let due = ((start.elapsed().as_secs_f64() * rate as f64) as u64).min(total);
        while sent < due {
            p.append_with_timestamp(&msg, now_ns())?;
            sent += 1;
        }
        std::thread::sleep(Duration::from_micros(50));
    }
    Ok(warm + total)
}

/// Lag from the append in one queue to the record in the other, through
/// mirror-out, the stream and mirror-in (each on its own runtime).
fn mirrors_lag(url: &str, dir: &Path, name: &str, rate: u64, secs: f64) -> Result<Vec<f64>, BoxError> {
    std::fs::create_dir_all(dir)?;
    let a = Queue::options().create(true).open(dir.join("a"))?;
    let b = Queue::options().create(true).open(dir.join("b"))?;
    mmkit_bridge::block_on(async { create_stream(&connect_js(url).await?, name).await })??;
    let warm = 1000u64;
    let total = warm + (rate as f64 * secs) as u64;
    let (stop_out, stop_out_rx) = tokio::sync::oneshot::channel::<()>();
    let (stop_in, stop_in_rx) = tokio::sync::oneshot::channel::<()>();
    let mut out = MirrorOut::new(a.clone(), OutOptions::new(url, name))?;
    let mut inb = MirrorIn::new(b.clone(), InOptions::new(url, name))?;
    std::thread::scope(|s| -> Result<Vec<f64>, BoxError> {
        let o = s.spawn(move || {
            mmkit_bridge::block_on(out.run(async { stop_out_rx.await.unwrap_or(()) }, &mut |_| {}))
        });
        let i = s.spawn(move || {
            mmkit_bridge::block_on(inb.run(async { stop_in_rx.await.unwrap_or(()) }, &mut |_| {}))
        });
        let reader = s.spawn(move || read_lags(&b, warm, total));
        let appended = paced_appends(&a, rate, secs, warm);
        let lags = reader.join().map_err(|_| "the reader panicked")?;
        let _ = (stop_out.send(()), stop_in.send(()));
        o.join().map_err(|_| "mirror-out panicked")???;
        i.join().map_err(|_| "mirror-in panicked")???;
        appended?;
        lags
    })
}

/// Reads `total` records of the mirrored queue; the lag of each after the
/// first `warm`, in µs, from its original append timestamp.
fn read_lags(b: &Queue, warm: u64, total: u64) -> Result<Vec<f64>, BoxError> {
    let mut r = b.reader(Start::Beginning)?;
    r.set_wait_policy(WaitPolicy::BALANCED);
    let mut lags = Vec::with_capacity(total as usize);
    let mut seen = 0;
    while seen < total {
        let rec = r.next_timeout(Some(Duration::from_secs(20)))?.ok_or("no message within 20 s")?;
        let now = now_ns();
        let origin =
            Origin::decode(rec.meta())?.and_then(|o| o.first).ok_or("a record without its origin")?;
        if seen >= warm {
            lags.push(now.saturating_sub(origin.timestamp) as f64 / 1e3);
        }
        seen += 1;
    }
    Ok(lags)
}

/// The floor: async-nats publishing 64 B messages stamped with their send
/// time at `rate`, and an ordered consumer receiving them.
async fn js_lag(url: &str, name: &str, rate: u64, secs: f64) -> Result<Vec<f64>, BoxError> {
    let js = connect_js(url).await?;
    create_stream(&js, name).await?;
    let consumer_js = connect_js(url).await?;
    let stream = consumer_js.get_stream(name).await?;
    let consumer = stream.create_consumer(pull::OrderedConfig::default()).await?;
    let mut messages = consumer.messages().await?;
    let warm = 1000u64;
    let total = warm + (rate as f64 * secs) as u64;
    let publisher = tokio::spawn({
        let js = js.clone();
        let subject = async_nats::Subject::from(name);
        async move {
            let mut acks = VecDeque::new();
            let start = Instant::now();
            for i in 0..total {
                if i >= warm {
                    let due = start + Duration::from_secs_f64((i - warm) as f64 / rate as f64);
                    tokio::time::sleep_until(due.into()).await;
                }
                let mut msg = [0u8; 64];
                msg[..8].copy_from_slice(&now_ns().to_le_bytes());
                let fut = js
                    .publish(subject.clone(), Bytes::copy_from_slice(&msg))
                    .await
                    .map_err(|e| e.to_string())?;
                acks.push_back(fut.into_future());
                if acks.len() >= 1024
                    && let Some(a) = acks.pop_front()
                {
                    a.await.map_err(|e| e.to_string())?;
                }
            }
            while let Some(a) = acks.pop_front() {
                a.await.map_err(|e| e.to_string())?;
            }
            Ok::<(), String>(())
        }
    });
    let mut lags = Vec::with_capacity(total as usize);
    for i in 0..total {
        let m = tokio::time::timeout(Duration::from_secs(20), messages.next())
            .await?
            .ok_or("consumer ended")??;
        let now = now_ns();
        let sent = u64::from_le_bytes(m.message.payload.get(..8).ok_or("short message")?.try_into()?);
        if i >= warm {
            lags.push(now.saturating_sub(sent) as f64 / 1e3);
        }
    }
    publisher.await.map_err(|e| format!("publisher: {e}"))??;
    Ok(lags)
}
