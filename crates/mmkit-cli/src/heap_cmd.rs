//! `mmkit heap ...`: create, inspect, check and repair shared heaps, plus
//! the heap section of `mmkit demo`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mmkit_heap::{CheckReport, Heap, HeapOptions, HeapStat};

use crate::queue_cmd::parse_seconds;
use crate::region_cmds::parse_size;
use crate::{CliError, CliResult};

/// Where a heap lives: a file, or `--shm NAME`.
#[derive(Debug, clap::Args)]
pub struct Target {
    /// The heap file.
    #[arg(required_unless_present = "shm", conflicts_with = "shm")]
    path: Option<PathBuf>,
    /// A heap in POSIX shared memory (/dev/shm/NAME) instead of a file.
    #[arg(long, value_name = "NAME")]
    shm: Option<String>,
    /// Seconds to wait for a lock that a live process holds before failing
    /// (a dead holder never makes anyone wait); 0 waits while it lives.
    #[arg(long, value_name = "SECONDS", default_value = "10", value_parser = parse_seconds)]
    lock_wait: Duration,
}

impl Target {
    fn open(&self) -> CliResult<Heap> {
        let opts = HeapOptions::new().lock_wait((!self.lock_wait.is_zero()).then_some(self.lock_wait));
        Ok(match (&self.path, &self.shm) {
            (_, Some(name)) => opts.open_shm(name)?,
            (Some(p), None) => opts.open(p)?,
            (None, None) => return Err(CliError::Usage("give a heap file or --shm NAME".into())),
        })
    }
}

/// `mmkit heap ...`.
#[derive(Debug, clap::Subcommand)]
pub enum HeapCommand {
    /// Create a heap file (mode 0600) or a shm heap.
    #[command(after_help = "Examples:\n  mmkit heap create /tmp/app.heap --size 64M\n  \
                            mmkit heap create --shm app-heap --size 1G --max-size 64G --json")]
    Create {
        #[command(flatten)]
        target: Target,
        /// Initial size (suffixes K, M, G).
        #[arg(long, value_parser = parse_size, default_value = "1M")]
        size: u64,
        /// The most it may grow to while in use (reserved address space).
        #[arg(long, value_parser = parse_size, default_value = "64G")]
        max_size: u64,
        /// Print what was created as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Size, used, free, fragmentation, and the named objects.
    #[command(after_help = "Example:\n  mmkit heap stat /tmp/app.heap --json")]
    Stat {
        #[command(flatten)]
        target: Target,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Verify every structure and account for every byte; exit non-zero on
    /// an inconsistency or a leak. --repair reclaims leaks and rebuilds
    /// free lists.
    #[command(after_help = "Examples:\n  mmkit heap check /tmp/app.heap && echo clean\n  \
                            mmkit heap check /tmp/app.heap --repair --json")]
    Check {
        #[command(flatten)]
        target: Target,
        /// Free leaked blocks, rebuild broken free lists and bins.
        #[arg(long)]
        repair: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the named objects.
    #[command(after_help = "Example:\n  mmkit heap ls /tmp/app.heap\n  mmkit heap ls --shm app-heap --json")]
    Ls {
        #[command(flatten)]
        target: Target,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// A worker process of `mmkit demo`.
    #[command(hide = true)]
    DemoWorker {
        /// The heap file.
        path: PathBuf,
        /// Worker number.
        #[arg(long)]
        id: u64,
    },
}

/// Runs a heap command.
pub fn run(cmd: HeapCommand) -> CliResult<()> {
    match cmd {
        HeapCommand::Create { target, size, max_size, json } => create(&target, size, max_size, json),
        HeapCommand::Stat { target, json } => stat(&target, json),
        HeapCommand::Check { target, repair, json } => check(&target, repair, json),
        HeapCommand::Ls { target, json } => ls(&target, json),
        HeapCommand::DemoWorker { path, id } => demo_worker(&path, id),
    }
}

fn out(text: &str) -> CliResult<()> {
    let mut o = std::io::stdout().lock();
    o.write_all(text.as_bytes()).map_err(CliError::Output)
}

fn create(target: &Target, size: u64, max_size: u64, json: bool) -> CliResult<()> {
    let opts = HeapOptions::new().size(size).max_size(max_size);
    let heap = match (&target.path, &target.shm) {
        (_, Some(name)) => opts.create_shm(name)?,
        (Some(p), None) => opts.create(p)?,
        (None, None) => return Err(CliError::Usage("give a heap file or --shm NAME".into())),
    };
    if json {
        let v = serde_json::json!({ "path": heap.path(), "size": heap.size(), "max_size": heap.max_size() });
        return out(&format!("{}\n", serde_json::to_string_pretty(&v)?));
    }
    out(&format!(
        "created {} ({} bytes, growable to {} bytes)\n",
        heap.path().display(),
        heap.size(),
        heap.max_size()
    ))
}

fn stat_json(s: &HeapStat) -> serde_json::Value {
    serde_json::json!({
        "size": s.size, "max_size": s.max_size, "header": s.header, "used": s.used, "free": s.free,
        "overhead": s.overhead, "largest_free": s.largest_free, "fragmentation": s.fragmentation,
        "objects": s.objects.iter().map(|o| serde_json::json!({
            "name": o.info.name, "kind": o.info.kind, "type": o.info.type_name, "offset": o.info.offset,
            "bytes": o.bytes, "len": o.len, "initializing": o.info.initializing,
        })).collect::<Vec<_>>(),
    })
}

fn stat_text(heap: &Heap, s: &HeapStat) -> String {
    let pct = |x: u64| 100.0 * x as f64 / s.size.max(1) as f64;
    let mut t = format!(
        "heap {}\n  size {} bytes (max {})\n  used {} ({:.1}%)  free {} ({:.1}%)  overhead {} + header {}\n  \
         largest free stretch {} bytes, fragmentation {:.1}%\n  objects: {}\n",
        heap.path().display(),
        s.size,
        s.max_size,
        s.used,
        pct(s.used),
        s.free,
        pct(s.free),
        s.overhead,
        s.header,
        s.largest_free,
        s.fragmentation * 100.0,
        s.objects.len()
    );
    for o in &s.objects {
        let len = o.len.map(|n| format!("{n} items")).unwrap_or_default();
        let init = if o.info.initializing { " (initializing)" } else { "" };
        t.push_str(&format!(
            "    {:<24} {:<7} {:>12} bytes {:>14}  {}{init}\n",
            o.info.name, o.info.kind, o.bytes, len, o.info.type_name
        ));
    }
    t
}

fn stat(target: &Target, json: bool) -> CliResult<()> {
    let heap = target.open()?;
    let s = heap.stat()?;
    if json {
        return out(&format!("{}\n", serde_json::to_string_pretty(&stat_json(&s))?));
    }
    out(&stat_text(&heap, &s))
}

fn check(target: &Target, repair: bool, json: bool) -> CliResult<()> {
    let heap = target.open()?;
    let r: CheckReport = heap.check(repair)?;
    if json {
        let v = serde_json::json!({
            "clean": r.is_clean(), "errors": r.errors, "leaked_blocks": r.leaked_blocks,
            "leaked_bytes": r.leaked_bytes, "repairs": r.repairs, "stat": stat_json(&r.stat),
        });
        out(&format!("{}\n", serde_json::to_string_pretty(&v)?))?;
    } else {
        let mut t = format!(
            "{}: {} objects, {} bytes used, {} free; {} leaked blocks ({} bytes)\n",
            heap.path().display(),
            r.stat.objects.len(),
            r.stat.used,
            r.stat.free,
            r.leaked_blocks,
            r.leaked_bytes
        );
        for e in &r.errors {
            t.push_str(&format!("inconsistent: {e}\n"));
        }
        for e in &r.repairs {
            t.push_str(&format!("repaired: {e}\n"));
        }
        out(&t)?;
    }
    if r.is_clean() {
        Ok(())
    } else {
        Err(CliError::Other(format!(
            "{}: {} inconsistencies, {} leaked blocks (mmkit heap check --repair reclaims leaks)",
            heap.path().display(),
            r.errors.len(),
            r.leaked_blocks
        )))
    }
}

fn ls(target: &Target, json: bool) -> CliResult<()> {
    let heap = target.open()?;
    let objects = heap.objects()?;
    if json {
        let v: Vec<_> = objects
            .iter()
            .map(|o| serde_json::json!({ "name": o.name, "kind": o.kind, "type": o.type_name, "offset": o.offset }))
            .collect();
        return out(&format!("{}\n", serde_json::to_string_pretty(&v)?));
    }
    let mut t = String::new();
    for o in &objects {
        t.push_str(&format!("{:<24} {:<7} {}\n", o.name, o.kind, o.type_name));
    }
    out(&t)
}

// ---------------------------------------------------------------- demo

/// A demo worker: inserts keys into the shared map until told to stop,
/// publishing its progress.
fn demo_worker(path: &Path, id: u64) -> CliResult<()> {
    let heap = Heap::open(path)?;
    let map = heap.map::<u64, u64>("demo-map")?;
    let progress = heap.find_or_init(&format!("progress-{id}"), || 0u64)?;
    let stop = heap.find_or_init("stop", || 0u64)?;
    let mut n = 0u64;
    while stop.get()? == 0 {
        for _ in 0..64 {
            map.insert(&(id << 40 | n), &n)?;
            n += 1;
        }
        progress.set(&n)?;
    }
    Ok(())
}

struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn progress(heap: &Heap, id: u64) -> CliResult<u64> {
    Ok(heap.find_or_init(&format!("progress-{id}"), || 0u64)?.get()?)
}

/// The heap part of `mmkit demo`: three processes share a map, one is
/// SIGKILLed mid-insert, the others go on, and `check` accounts for it.
pub fn demo(dir: &Path) -> CliResult<()> {
    println!("\n== shared heap: 3 processes insert into one map; one is killed with SIGKILL mid-insert");
    let path = dir.join("demo.heap");
    let heap = HeapOptions::new().size(1 << 20).max_size(4 << 30).create(&path)?;
    heap.map::<u64, u64>("demo-map")?;
    heap.find_or_init("stop", || 0u64)?;
    let exe = std::env::current_exe().map_err(|e| CliError::io("find own executable", "mmkit", e))?;
    let mut workers = Vec::new();
    for id in 0..3u64 {
        let child = Command::new(&exe)
            .args(["heap", "demo-worker"])
            .arg(&path)
            .args(["--id", &id.to_string()])
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| CliError::io("spawn demo worker", &exe, e))?;
        workers.push(Worker(child));
    }
    let started = Instant::now();
    while progress(&heap, 0)? < 50_000 && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let before: Vec<u64> = (0..3).map(|i| progress(&heap, i)).collect::<CliResult<_>>()?;
    let killed_at = Instant::now();
    let _ = workers[0].0.kill();
    let _ = workers[0].0.wait();
    // How long until each survivor has published progress again, and
    // until this process can insert (it may meet the dead worker's lock).
    let map = heap.map::<u64, u64>("demo-map")?;
    map.insert(&u64::MAX, &1)?;
    let own = killed_at.elapsed();
    let mut resumed = [Duration::ZERO; 3];
    for (id, slot) in resumed.iter_mut().enumerate().skip(1) {
        let seen = progress(&heap, id as u64)?;
        while progress(&heap, id as u64)? == seen && killed_at.elapsed() < Duration::from_secs(5) {
            std::hint::spin_loop();
        }
        *slot = killed_at.elapsed();
    }
    std::thread::sleep(Duration::from_millis(200));
    heap.find_or_init("stop", || 0u64)?.set(&1)?;
    for w in &mut workers[1..] {
        let _ = w.0.wait();
    }
    let after: Vec<u64> = (0..3).map(|i| progress(&heap, i)).collect::<CliResult<_>>()?;
    println!(
        "worker 0 killed after {} inserts; survivors went on: worker 1 {} -> {}, worker 2 {} -> {}",
        before[0], before[1], after[1], before[2], after[2]
    );
    println!(
        "after the kill: this process inserted in {:.2} ms; survivors published progress after {:.2} ms and {:.2} ms",
        own.as_secs_f64() * 1e3,
        resumed[1].as_secs_f64() * 1e3,
        resumed[2].as_secs_f64() * 1e3
    );
    let r = heap.check(false)?;
    println!(
        "check: {} entries, {} inconsistencies, {} leaked blocks ({} bytes) from the killed insert",
        map.len()?,
        r.errors.len(),
        r.leaked_blocks,
        r.leaked_bytes
    );
    let fixed = heap.check(true)?;
    println!(
        "check --repair: clean = {}; segment {} KiB, grown online from 1024 KiB",
        fixed.is_clean(),
        heap.size() >> 10
    );
    Ok(())
}
