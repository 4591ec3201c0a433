//! The `queue` suite: mmkit-queue against a raw shared-memory ring, a Unix
//! socket, a pipe, crossbeam-channel, yaque, queue-file and NATS JetStream,
//! on the workloads of issue 4, all in one run.
//!
//! Producers and consumers are separate processes: this binary re-executes
//! itself with a hidden `child` subcommand. crossbeam-channel and
//! queue-file are in-process by nature and run as threads. Each cell runs
//! `--reps` times for `--secs`; tables show medians, the spread and ratios.

mod inproc;
mod jetstream;
mod mmq;
mod persist;
mod proto;
mod ring;
mod stream;

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use proto::{Kind, Report};

/// Options of the `queue` suite.
#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  cargo run --release -p mmkit-bench -- queue --reps 3 --secs 1\n  \
                        cargo run --release -p mmkit-bench -- queue --only latency --json")]
pub struct Args {
    #[command(subcommand)]
    role: Option<Role>,
    /// Print one JSON document on stdout (the tables go to stderr).
    #[arg(long)]
    json: bool,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 1.0)]
    secs: f64,
    /// Repetitions of each measurement; the median is reported.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Run only the workloads or peers whose name contains one of these.
    #[arg(long)]
    only: Vec<String>,
}

#[derive(Debug, clap::Subcommand)]
enum Role {
    /// One producer or consumer process of a measurement.
    #[command(hide = true)]
    Child(ChildArgs),
}

/// The peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Peer {
    /// mmkit-queue.
    MmkitQueue,
    /// mmkit-queue without record timestamps (`timestamps(false)`), as
    /// the peers have none: what the per-append clock read costs.
    MmkitQueueNoTimestamps,
    /// mmkit-queue with its directory in /dev/shm (no disk page cache).
    MmkitQueueShm,
    /// mmkit-queue on ext4 with retention (a bounded queue whose segments
    /// are recycled), measured in its steady state.
    MmkitQueueBounded,
    /// The raw mmap SPSC ring.
    Ring,
    /// Unix domain socket, SOCK_STREAM.
    Unix,
    /// A pipe (FIFO).
    Pipe,
    /// crossbeam-channel, in one process.
    Crossbeam,
    /// yaque.
    Yaque,
    /// queue-file.
    QueueFile,
    /// NATS JetStream, file storage.
    Nats,
    /// write + fdatasync on a plain file (durable table only).
    RawFile,
}

impl Peer {
    /// One of the mmkit-queue rows (their children run `mmq`).
    fn is_mmkit_queue(self) -> bool {
        matches!(
            self,
            Peer::MmkitQueue | Peer::MmkitQueueNoTimestamps | Peer::MmkitQueueShm | Peer::MmkitQueueBounded
        )
    }

    fn name(self) -> &'static str {
        match self {
            Peer::MmkitQueue => "mmkit-queue",
            Peer::MmkitQueueNoTimestamps => "mmkit-queue, no timestamps",
            Peer::MmkitQueueShm => "mmkit-queue in /dev/shm",
            Peer::MmkitQueueBounded => "mmkit-queue, bounded",
            Peer::Ring => "raw mmap ring",
            Peer::Unix => "unix socket",
            Peer::Pipe => "pipe",
            Peer::Crossbeam => "crossbeam (1 process)",
            Peer::Yaque => "yaque",
            Peer::QueueFile => "queue-file (1 process)",
            Peer::Nats => "NATS JetStream",
            Peer::RawFile => "raw file + fdatasync",
        }
    }

    fn in_process(self) -> bool {
        matches!(self, Peer::Crossbeam | Peer::QueueFile)
    }
}

#[derive(Debug, Clone, clap::Args)]
struct ChildArgs {
    #[arg(long)]
    peer: Peer,
    /// Producer (else consumer).
    #[arg(long)]
    producer: bool,
    #[arg(long)]
    kind: Kind,
    /// Park when idle (else spin).
    #[arg(long)]
    park: bool,
    /// Ring file, socket paths, FIFO paths or queue directory.
    #[arg(long)]
    addr: Vec<PathBuf>,
    #[arg(long, default_value_t = 0)]
    port: u16,
    #[arg(long, default_value = "")]
    name: String,
    #[arg(long, default_value_t = 1.0)]
    secs: f64,
    #[arg(long, default_value_t = 0)]
    id: u32,
    #[arg(long, default_value_t = 1)]
    producers: u32,
    #[arg(long, default_value_t = 1)]
    readers: u32,
    #[arg(long, default_value_t = 0)]
    reader: u32,
    /// Recovery runs: this producer kills itself mid-stream.
    #[arg(long)]
    victim: bool,
    /// Producers that will die without an END marker.
    #[arg(long, default_value_t = 0)]
    victims: u32,
    #[arg(long)]
    kill_stamp: Option<PathBuf>,
}

type BoxError = Box<dyn std::error::Error>;

/// Runs the suite and prints its tables (or, with the hidden `child`
/// subcommand, one process of a measurement).
pub fn run(args: Args) -> Result<(), BoxError> {
    if let Some(Role::Child(c)) = args.role {
        return child(c);
    }
    let machine = crate::machine::print_header(args.json);
    let mut suite = Suite::new(&args)?;
    suite.run_all()?;
    if args.json {
        let doc = serde_json::json!({ "suite": "queue", "machine": machine, "rows": suite.rows });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    }
    Ok(())
}

// ---------------------------------------------------------------- children

fn child(a: ChildArgs) -> Result<(), BoxError> {
    if a.producer {
        child_producer(&a)?;
    } else {
        let rep = child_consumer(&a)?;
        println!("{}", serde_json::to_string(&rep)?);
    }
    Ok(())
}

fn child_producer(a: &ChildArgs) -> io::Result<()> {
    let readers = a.readers as usize;
    match a.peer {
        Peer::Ring => drive(&mut ring::RingSender::open(&a.addr[0], readers, a.park)?, a),
        Peer::Unix => drive(&mut stream::socket_sender(&a.addr)?, a),
        Peer::Pipe => drive(&mut stream::pipe_sender(&a.addr)?, a),
        Peer::Yaque => drive(&mut persist::yaque_sender(&a.addr[0])?, a),
        Peer::Nats => drive(&mut jetstream::sender(a.port, &a.name)?, a),
        p if p.is_mmkit_queue() => mmq::child_producer(a),
        other => Err(io::Error::other(format!("{} has no producer process", other.name()))),
    }
}

/// The producer loop, or the victim's (which kills itself mid-stream).
fn drive<S: proto::Sender>(s: &mut S, a: &ChildArgs) -> io::Result<()> {
    if a.victim {
        proto::produce_stream(s, Kind::Recovery, a.secs / 3.0, a.id)?;
        die(a.kill_stamp.as_deref())
    }
    proto::produce(s, a.kind, a.secs, a.id)
}

/// Writes the time of death, then SIGKILLs this process.
fn die(stamp: Option<&Path>) -> ! {
    if let Some(p) = stamp {
        let _ = std::fs::write(p, proto::now_ns().to_string());
    }
    let _ = rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    std::process::abort()
}

fn child_consumer(a: &ChildArgs) -> io::Result<Report> {
    // The victim of a recovery run never sends its END marker.
    let (kind, n, stamp) = (a.kind, a.producers - a.victims.min(a.producers), a.kill_stamp.as_deref());
    match a.peer {
        Peer::Ring => proto::consume(
            &mut ring::RingReceiver::open(&a.addr[0], a.reader as usize, a.park)?,
            kind,
            n,
            stamp,
        ),
        Peer::Unix => {
            let connections = a.producers as usize;
            proto::consume(&mut stream::socket_receiver(&a.addr[0], connections)?, kind, n, stamp)
        }
        Peer::Pipe => proto::consume(&mut stream::pipe_receiver(&a.addr[0])?, kind, n, stamp),
        Peer::Yaque => proto::consume(&mut persist::yaque_receiver(&a.addr[0])?, kind, n, stamp),
        Peer::Nats => proto::consume(&mut jetstream::receiver(a.port, &a.name)?, kind, n, stamp),
        p if p.is_mmkit_queue() => mmq::child_consumer(a),
        other => Err(io::Error::other(format!("{} has no consumer process", other.name()))),
    }
}

// ------------------------------------------------------------------ parent

/// One measurement's figures.
#[derive(Debug, Clone, Default, Serialize)]
struct Sample {
    /// Messages per second (the slowest reader's, for fan-out).
    msgs_per_sec: Option<f64>,
    /// p50, p99, p99.9 in ns (delivery latency, or ack latency when durable).
    latency_ns: Option<[u64; 3]>,
    /// Consumer CPU during the idle second, percent.
    idle_cpu_pct: Option<f64>,
    /// Recovery after the kill, ns.
    recovery_ns: Option<u64>,
    /// Messages out of per-producer order (must be 0).
    disorder: u64,
}

/// One table row: a peer on a workload, all repetitions.
#[derive(Debug, Serialize)]
struct Row {
    workload: &'static str,
    peer: Peer,
    variant: String,
    note: String,
    samples: Vec<Sample>,
    median: Sample,
}

/// What a workload is.
#[derive(Debug, Clone, Copy)]
struct Shape {
    kind: Kind,
    park: bool,
    producers: u32,
    readers: u32,
}

struct Suite {
    secs: f64,
    reps: usize,
    only: Vec<String>,
    json: bool,
    rows: Vec<Row>,
    tmp: tempfile::TempDir,
    shm: tempfile::TempDir,
    nats: Option<jetstream::Server>,
    nats_note: String,
    runs: u32,
}

impl Suite {
    fn new(args: &Args) -> Result<Suite, BoxError> {
        // Durations are built from it: NaN or a negative value would panic.
        if !(args.secs.is_finite() && args.secs > 0.0) {
            return Err(format!("--secs {} must be a positive number of seconds", args.secs).into());
        }
        // Persistent peers live on the real disk (/tmp is ext4 here), the ring in tmpfs.
        let tmp = tempfile::Builder::new().prefix("mmkit-bench-queue").tempdir()?;
        let shm = tempfile::Builder::new().prefix("mmkit-bench-ring").tempdir_in("/dev/shm")?;
        Ok(Suite {
            secs: args.secs,
            reps: args.reps.max(1),
            only: args.only.clone(),
            json: args.json,
            rows: Vec::new(),
            tmp,
            shm,
            nats: None,
            nats_note: String::new(),
            runs: 0,
        })
    }

    fn wanted(&self, workload: &str, peer: Peer) -> bool {
        self.only.is_empty()
            || self.only.iter().any(|o| workload.contains(o.as_str()) || peer.name().contains(o.as_str()))
    }

    fn run_all(&mut self) -> Result<(), BoxError> {
        self.start_nats();
        let spin = Shape { kind: Kind::Throughput, park: false, producers: 1, readers: 1 };
        let park = Shape { park: true, ..spin };
        let spinners = [
            Peer::MmkitQueue,
            Peer::MmkitQueueNoTimestamps,
            Peer::MmkitQueueShm,
            Peer::MmkitQueueBounded,
            Peer::Ring,
            Peer::Crossbeam,
        ];
        self.table("throughput 1→1 spinning", spin, &spinners)?;
        let all = [
            Peer::MmkitQueue,
            Peer::MmkitQueueShm,
            Peer::Ring,
            Peer::Unix,
            Peer::Pipe,
            Peer::Crossbeam,
            Peer::Yaque,
            Peer::QueueFile,
            Peer::Nats,
        ];
        // The parking table also has the queue without timestamps and the
        // bounded queue, after mmkit's other rows.
        let mut parkers = all.to_vec();
        parkers.insert(1, Peer::MmkitQueueNoTimestamps);
        parkers.insert(3, Peer::MmkitQueueBounded);
        self.table("throughput 1→1 parking", park, &parkers)?;
        let batched = Shape { kind: Kind::Batched, ..park };
        self.table(
            "throughput 1→1, batches of 256",
            batched,
            &[Peer::MmkitQueue, Peer::MmkitQueueBounded, Peer::Unix],
        )?;
        let multi = [Peer::MmkitQueue, Peer::Unix, Peer::Pipe, Peer::Crossbeam, Peer::Nats];
        self.table("throughput 2→1", Shape { producers: 2, ..park }, &multi)?;
        let fan = [Peer::MmkitQueue, Peer::Ring, Peer::Unix, Peer::Pipe, Peer::Crossbeam, Peer::Nats];
        self.table("throughput 1→4 readers", Shape { readers: 4, ..park }, &fan)?;
        let lat_spin = Shape { kind: Kind::Latency, ..spin };
        self.table(
            "latency at 100k msg/s, spinning",
            lat_spin,
            &[Peer::MmkitQueue, Peer::Ring, Peer::Crossbeam],
        )?;
        self.table("latency at 100k msg/s, parking", Shape { park: true, ..lat_spin }, &all)?;
        self.durable_table()?;
        let rec = Shape { kind: Kind::Recovery, park: true, producers: 2, readers: 1 };
        self.table(
            "recovery after a producer's kill -9",
            rec,
            &[Peer::MmkitQueue, Peer::Unix, Peer::Pipe, Peer::Nats],
        )?;
        self.table(
            "recovery after a kill -9 inside a 100 000-frame batch claim",
            Shape { kind: Kind::BatchRecovery, ..rec },
            &[Peer::MmkitQueue],
        )?;
        Ok(())
    }

    fn start_nats(&mut self) {
        let dir = self.tmp.path().join("nats");
        let started = std::fs::create_dir_all(&dir).and_then(|()| jetstream::start(&dir));
        match started {
            Ok(Some(s)) => self.nats = Some(s),
            Ok(None) => self.nats_note = "nats-server is not installed (apt-get install nats-server)".into(),
            Err(e) => self.nats_note = format!("nats-server failed to start: {e}"),
        }
    }

    /// Adds an empty row; a NATS row is marked skipped when there is no server.
    fn push_row(&mut self, workload: &'static str, peer: Peer, variant: String) {
        let note =
            if peer == Peer::Nats && self.nats.is_none() { self.nats_note.clone() } else { String::new() };
        self.rows.push(Row { workload, peer, variant, note, samples: Vec::new(), median: Sample::default() });
    }

    /// Runs every peer of one workload and prints its table.
    fn table(&mut self, workload: &'static str, shape: Shape, peers: &[Peer]) -> Result<(), BoxError> {
        let first = self.rows.len();
        let wanted: Vec<Peer> = peers.iter().copied().filter(|&p| self.wanted(workload, p)).collect();
        for peer in wanted {
            self.push_row(workload, peer, variant(peer, shape.park, shape.kind));
        }
        self.measure(first, |suite, peer| suite.once(peer, shape));
        self.print(workload, first);
        Ok(())
    }

    /// Measures the rows from `first` on, `reps` times each. Repetitions
    /// are interleaved (peer A, B, C, then A, B, C again) so that the noise
    /// of this shared VM falls on all peers alike.
    fn measure(&mut self, first: usize, mut one: impl FnMut(&mut Self, Peer) -> Result<Sample, BoxError>) {
        for _ in 0..self.reps {
            for k in first..self.rows.len() {
                if !self.rows[k].note.is_empty() {
                    continue; // skipped or failed
                }
                match one(self, self.rows[k].peer) {
                    Ok(s) => self.rows[k].samples.push(s),
                    Err(e) => self.rows[k].note = format!("failed: {e}"),
                }
            }
        }
        for row in &mut self.rows[first..] {
            row.median = median(&row.samples);
            if row.samples.iter().any(|s| s.disorder > 0) {
                row.note.push_str(" messages out of order!");
            }
        }
    }

    fn once(&mut self, peer: Peer, shape: Shape) -> Result<Sample, BoxError> {
        self.runs += 1;
        let dir = self.tmp.path().join(format!("run{}", self.runs));
        std::fs::create_dir_all(&dir)?;
        let result = if peer.in_process() {
            inproc::run(peer, shape, self.secs, &dir)
        } else {
            self.processes(peer, shape, &dir)
        };
        let _ = std::fs::remove_dir_all(&dir);
        // The ring files and shm queues live in RAM: drop them after each run.
        if let Ok(entries) = std::fs::read_dir(self.shm.path()) {
            for e in entries.flatten() {
                let _ = std::fs::remove_dir_all(e.path()).or_else(|_| std::fs::remove_file(e.path()));
            }
        }
        let reports = result?;
        Ok(sample(&reports, shape.kind))
    }

    /// Spawns the consumers, then the producers, and collects the reports.
    fn processes(&mut self, peer: Peer, shape: Shape, dir: &Path) -> Result<Vec<Report>, BoxError> {
        let mut base = ChildArgs {
            peer,
            producer: false,
            kind: shape.kind,
            park: shape.park,
            addr: Vec::new(),
            port: 0,
            name: format!("B{}", self.runs),
            secs: self.secs,
            id: 0,
            producers: shape.producers,
            readers: shape.readers,
            reader: 0,
            victim: false,
            victims: 0,
            kill_stamp: None,
        };
        let readers = shape.readers as usize;
        let mut consumer_addr: Vec<Vec<PathBuf>> = vec![Vec::new(); readers];
        match peer {
            Peer::Ring => {
                let path = self.shm.path().join(format!("ring{}", self.runs));
                ring::create(&path)?;
                base.addr = vec![path.clone()];
                consumer_addr.iter_mut().for_each(|a| *a = vec![path.clone()]);
            }
            Peer::Unix | Peer::Pipe => {
                for (k, a) in consumer_addr.iter_mut().enumerate() {
                    let p = dir.join(format!("s{k}"));
                    if peer == Peer::Pipe {
                        stream::make_fifo(&p)?;
                    }
                    base.addr.push(p.clone());
                    *a = vec![p];
                }
            }
            p if p == Peer::Yaque || p.is_mmkit_queue() => {
                let q = match peer {
                    Peer::MmkitQueueShm => self.shm.path().join(format!("q{}", self.runs)),
                    _ => dir.join("q"),
                };
                if peer == Peer::MmkitQueueBounded {
                    mmq::create_bounded(&q)?;
                } else if peer != Peer::Yaque {
                    mmq::create(&q, peer != Peer::MmkitQueueNoTimestamps)?;
                } else {
                    std::fs::create_dir_all(&q)?;
                }
                base.addr = vec![q.clone()];
                consumer_addr.iter_mut().for_each(|a| *a = vec![q.clone()]);
            }
            Peer::Nats => {
                let port = self.nats.as_ref().map(|s| s.port).unwrap_or(0);
                jetstream::create_stream(port, &base.name)?;
                base.port = port;
            }
            _ => return Err("not a process peer".into()),
        }
        let stamp = dir.join("killed-at");
        let mut consumers = Vec::new();
        for (k, addr) in consumer_addr.into_iter().enumerate() {
            let mut c = ChildArgs { reader: k as u32, addr, ..base.clone() };
            if shape.kind.is_recovery() {
                c.kill_stamp = Some(stamp.clone());
                c.victims = 1;
            }
            consumers.push(spawn(&c, true)?);
        }
        let mut producers = Vec::new();
        for id in 0..shape.producers {
            let mut p = ChildArgs { producer: true, id, ..base.clone() };
            if shape.kind.is_recovery() && id == 1 {
                p.victim = true;
                p.kill_stamp = Some(stamp.clone());
            }
            producers.push((p.victim, spawn(&p, false)?));
        }
        let limit = Duration::from_secs_f64(self.secs * 3.0 + 30.0);
        let mut reports = Vec::new();
        let mut failure = None;
        for c in consumers {
            match finish(c, limit) {
                Ok(out) => reports.push(serde_json::from_str(out.trim())?),
                Err(e) => failure = Some(e),
            }
        }
        // The victim of a recovery run is SIGKILLed by design; any other
        // producer that failed makes the measurement fail.
        for (victim, p) in producers {
            let done = finish(p, Duration::from_secs(5));
            if let Err(e) = done
                && !victim
            {
                failure.get_or_insert(e);
            }
        }
        match failure {
            Some(e) => Err(e.into()),
            None => Ok(reports),
        }
    }

    fn durable_table(&mut self) -> Result<(), BoxError> {
        let workload = "durable group commit (64 B, ack = on disk)";
        let first = self.rows.len();
        for peer in [Peer::MmkitQueue, Peer::RawFile, Peer::QueueFile, Peer::Nats] {
            if !self.wanted(workload, peer) {
                continue;
            }
            self.push_row(workload, peer, durable_variant(peer).into());
        }
        self.measure(first, Self::durable_once);
        self.print(workload, first);
        Ok(())
    }

    fn durable_once(&mut self, peer: Peer) -> Result<Sample, BoxError> {
        self.runs += 1;
        let dir = self.tmp.path().join(format!("run{}", self.runs));
        std::fs::create_dir_all(&dir)?;
        let secs = self.secs;
        let result = match peer {
            Peer::MmkitQueue => mmq::durable(&dir.join("q"), DURABLE_BATCH, secs),
            Peer::RawFile => raw_file_durable(&dir.join("f"), DURABLE_BATCH, secs),
            Peer::QueueFile => persist::queue_file_durable(&dir.join("qf"), DURABLE_BATCH, secs),
            Peer::Nats => {
                let port = self.nats.as_ref().map(|s| s.port).unwrap_or(0);
                let name = format!("D{}", self.runs);
                jetstream::create_stream(port, &name).and_then(|()| jetstream::durable(port, &name, secs))
            }
            _ => Err(io::Error::other("no durable mode")),
        };
        let _ = std::fs::remove_dir_all(&dir);
        let (count, ns, mut lat) = result?;
        Ok(Sample {
            msgs_per_sec: Some(count as f64 * 1e9 / ns.max(1) as f64),
            latency_ns: proto::percentiles(&mut lat),
            ..Sample::default()
        })
    }

    /// Prints a workload's table as it completes: on stdout, or on stderr
    /// when stdout carries the JSON document.
    fn print(&self, workload: &str, first: usize) {
        let rows = &self.rows[first..];
        if rows.is_empty() {
            return;
        }
        let text = format!("\n### {workload}\n\n{}", render(rows));
        if self.json {
            let _ = io::stderr().write_all(text.as_bytes());
        } else {
            let mut out = io::stdout().lock();
            let _ = out.write_all(text.as_bytes());
            let _ = out.flush();
        }
    }
}

/// Messages per durability acknowledgement in the durable table.
const DURABLE_BATCH: usize = 1024;

fn variant(peer: Peer, park: bool, kind: Kind) -> String {
    match peer {
        Peer::Unix if kind == Kind::Batched => "BufWriter, 256 writes, blocking read".into(),
        Peer::MmkitQueue | Peer::MmkitQueueBounded if kind == Kind::Batched => {
            "append_batch of 256; spin, then park".into()
        }
        Peer::Unix | Peer::Pipe => "blocking read".into(),
        Peer::Yaque => "inotify wait".into(),
        Peer::QueueFile => "mutex + condvar".into(),
        Peer::Nats => "pipelined acks, push consumer".into(),
        Peer::Crossbeam if park => "recv()".into(),
        Peer::Crossbeam => "try_recv() loop".into(),
        Peer::Ring if park => "spin, then futex".into(),
        Peer::MmkitQueueBounded if park => {
            "16 MiB segments, 64 MiB retained, recycled; spin, then park".into()
        }
        Peer::MmkitQueueBounded => "16 MiB segments, 64 MiB retained, recycled; spin".into(),
        Peer::MmkitQueueNoTimestamps if park => "timestamps(false); spin, then park".into(),
        Peer::MmkitQueueNoTimestamps => "timestamps(false); spin".into(),
        _ if park => "spin, then park".into(),
        _ => "spin".into(),
    }
}

fn durable_variant(peer: Peer) -> &'static str {
    match peer {
        Peer::MmkitQueue => "GroupCommit; append ×1024, wait_durable",
        Peer::RawFile => "write 1024 msgs, fdatasync",
        Peer::QueueFile => "add_n(1024) with sync_writes",
        Peer::Nats => "ack = stored (no fsync per msg in 2.9)",
        _ => "",
    }
}

/// The ceiling of group commit: buffered writes and an fdatasync per batch.
fn raw_file_durable(path: &Path, batch: usize, secs: f64) -> io::Result<(u64, u64, Vec<u64>)> {
    let mut f = std::fs::File::create(path)?;
    let buf: Vec<u8> = (0..batch).flat_map(|i| proto::encode(i as u64, 0, 0)).collect();
    proto::durable_batches(batch, secs, || {
        f.write_all(&buf)?;
        f.sync_data()
    })
}

fn spawn(a: &ChildArgs, capture: bool) -> io::Result<Child> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(["queue", "child", "--peer", peer_arg(a.peer), "--kind", kind_arg(a.kind)]);
    cmd.args(["--secs", &a.secs.to_string(), "--id", &a.id.to_string()]);
    cmd.args(["--producers", &a.producers.to_string(), "--readers", &a.readers.to_string()]);
    cmd.args(["--reader", &a.reader.to_string(), "--port", &a.port.to_string(), "--name", &a.name]);
    cmd.args(["--victims", &a.victims.to_string()]);
    for p in &a.addr {
        cmd.arg("--addr").arg(p);
    }
    if let Some(s) = &a.kill_stamp {
        cmd.arg("--kill-stamp").arg(s);
    }
    for (flag, on) in [("--producer", a.producer), ("--park", a.park), ("--victim", a.victim)] {
        if on {
            cmd.arg(flag);
        }
    }
    cmd.stdin(Stdio::null()).stdout(if capture { Stdio::piped() } else { Stdio::null() });
    cmd.spawn()
}

fn peer_arg(p: Peer) -> &'static str {
    match p {
        Peer::MmkitQueue => "mmkit-queue",
        Peer::MmkitQueueNoTimestamps => "mmkit-queue-no-timestamps",
        Peer::MmkitQueueShm => "mmkit-queue-shm",
        Peer::MmkitQueueBounded => "mmkit-queue-bounded",
        Peer::Ring => "ring",
        Peer::Unix => "unix",
        Peer::Pipe => "pipe",
        Peer::Crossbeam => "crossbeam",
        Peer::Yaque => "yaque",
        Peer::QueueFile => "queue-file",
        Peer::Nats => "nats",
        Peer::RawFile => "raw-file",
    }
}

fn kind_arg(k: Kind) -> &'static str {
    match k {
        Kind::Throughput => "throughput",
        Kind::Latency => "latency",
        Kind::Recovery => "recovery",
        Kind::Batched => "batched",
        Kind::BatchRecovery => "batch-recovery",
    }
}

/// Waits for a child (killing it after `limit`) and returns its stdout.
fn finish(mut child: Child, limit: Duration) -> io::Result<String> {
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other("a child process timed out"));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut out = String::new();
    if let Some(mut s) = child.stdout.take() {
        io::Read::read_to_string(&mut s, &mut out)?;
    }
    if !status.success() {
        return Err(io::Error::other(format!("a child process failed ({status})")));
    }
    Ok(out)
}

/// Turns the consumers' reports into one sample.
fn sample(reports: &[Report], kind: Kind) -> Sample {
    let rate = |r: &Report| r.count as f64 * 1e9 / r.elapsed_ns.max(1) as f64;
    let first = reports.first();
    Sample {
        msgs_per_sec: if kind.is_throughput() {
            reports.iter().map(rate).min_by(f64::total_cmp)
        } else {
            None
        },
        latency_ns: first.and_then(|r| r.latency),
        idle_cpu_pct: first.and_then(|r| r.idle_cpu),
        recovery_ns: first.and_then(|r| r.recovery_ns),
        disorder: reports.iter().map(|r| r.disorder).sum(),
    }
}

fn median(samples: &[Sample]) -> Sample {
    fn mid<T: Copy>(mut v: Vec<T>, cmp: impl Fn(&T, &T) -> std::cmp::Ordering) -> Option<T> {
        v.sort_by(cmp);
        v.get(v.len() / 2).copied()
    }
    let lat = |k: usize| mid(samples.iter().filter_map(|s| s.latency_ns.map(|l| l[k])).collect(), u64::cmp);
    Sample {
        msgs_per_sec: mid(samples.iter().filter_map(|s| s.msgs_per_sec).collect(), f64::total_cmp),
        latency_ns: match (lat(0), lat(1), lat(2)) {
            (Some(a), Some(b), Some(c)) => Some([a, b, c]),
            _ => None,
        },
        idle_cpu_pct: mid(samples.iter().filter_map(|s| s.idle_cpu_pct).collect(), f64::total_cmp),
        recovery_ns: mid(samples.iter().filter_map(|s| s.recovery_ns).collect(), u64::cmp),
        disorder: samples.iter().map(|s| s.disorder).sum(),
    }
}

// ------------------------------------------------------------------ tables

fn fmt_rate(r: f64) -> String {
    if r >= 1e6 { format!("{:.2} M/s", r / 1e6) } else { format!("{:.1} k/s", r / 1e3) }
}

fn fmt_ns(ns: u64) -> String {
    if ns >= 1_000_000 { format!("{:.1} ms", ns as f64 / 1e6) } else { format!("{:.1} µs", ns as f64 / 1e3) }
}

fn spread(samples: &[Sample], f: impl Fn(&Sample) -> Option<f64>) -> Option<(f64, f64)> {
    let v: Vec<f64> = samples.iter().filter_map(f).collect();
    let lo = v.iter().copied().min_by(f64::total_cmp)?;
    let hi = v.iter().copied().max_by(f64::total_cmp)?;
    Some((lo, hi))
}

/// A Markdown table of rows of one workload, with ratios to mmkit-queue.
fn render(rows: &[Row]) -> String {
    let ours = rows.iter().find(|r| r.peer == Peer::MmkitQueue).map(|r| r.median.clone());
    let ring = rows.iter().find(|r| r.peer == Peer::Ring).and_then(|r| r.median.msgs_per_sec);
    let mut s =
        String::from("| peer | variant | median | range | mmkit-queue advantage | peer ÷ ring | note |\n");
    s.push_str("|---|---|---|---|---|---|---|\n");
    for r in rows {
        let m = &r.median;
        let (value, range, ratio) = if let Some(rec) = m.recovery_ns {
            let range = spread(&r.samples, |x| x.recovery_ns.map(|v| v as f64))
                .map(|(a, b)| format!("{}–{}", fmt_ns(a as u64), fmt_ns(b as u64)));
            (fmt_ns(rec), range, None)
        } else if let Some(rate) = m.msgs_per_sec {
            let mut value = fmt_rate(rate);
            if let Some(l) = m.latency_ns {
                value.push_str(&format!("; ack p50 {} p99 {}", fmt_ns(l[0]), fmt_ns(l[1])));
            }
            let range = spread(&r.samples, |x| x.msgs_per_sec)
                .map(|(a, b)| format!("{}–{}", fmt_rate(a), fmt_rate(b)));
            let ratio = ours.as_ref().and_then(|o| o.msgs_per_sec).map(|o| o / rate);
            (value, range, ratio)
        } else if let Some(l) = m.latency_ns {
            let mut value = format!("p50 {} p99 {} p99.9 {}", fmt_ns(l[0]), fmt_ns(l[1]), fmt_ns(l[2]));
            if let Some(c) = m.idle_cpu_pct {
                value.push_str(&format!("; idle CPU {c:.2}%"));
            }
            let range = spread(&r.samples, |x| x.latency_ns.map(|l| l[1] as f64))
                .map(|(a, b)| format!("p99 {}–{}", fmt_ns(a as u64), fmt_ns(b as u64)));
            let ratio = ours.as_ref().and_then(|o| o.latency_ns).map(|o| l[1] as f64 / o[1].max(1) as f64);
            (value, range, ratio)
        } else {
            ("—".into(), None, None)
        };
        let vs_ring = match (m.msgs_per_sec, ring) {
            (Some(v), Some(g)) if m.recovery_ns.is_none() && m.latency_ns.is_none() => {
                format!("{:.2}", v / g)
            }
            _ => String::new(),
        };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            r.peer.name(),
            r.variant,
            value,
            range.unwrap_or_default(),
            ratio.map(|x| format!("{x:.2}×")).unwrap_or_default(),
            vs_ring,
            r.note.trim()
        ));
    }
    s
}
