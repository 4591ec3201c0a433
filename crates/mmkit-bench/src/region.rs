//! The `region` suite: mapping scans, random reads, copies and residency,
//! each against its peers in the same run.
//!
//! ```text
//! cargo run --release -p mmkit-bench -- region
//! ```
//!
//! It needs about 2.5 GiB free in `--dir` (default: the system temporary
//! directory) and deletes what it creates. The `mmkit` binary is built
//! with `cargo build --release -p mmkit-cli` if it is not next to this one.

use std::fs::File;
use std::hint::black_box;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mmkit_cli::copy::{self, Method};
use mmkit_region::{Access, Advice, HugePages, MapOptions, residency};

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

/// A named measurement closure.
type Peer<'a> = (&'a str, Box<dyn Fn() -> BenchResult<()> + 'a>);

/// Options of the `region` suite.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  cargo run --release -p mmkit-bench -- region\n  cargo run --release -p mmkit-bench -- region --runs 3 --size-mb 256"
)]
pub struct Args {
    /// Directory for the test files (must not be a tmpfs for the
    /// eviction rows to mean anything).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Size of the large file, in MiB.
    #[arg(long, default_value_t = 1024)]
    pub size_mb: u64,
    /// Runs per measurement (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Number of small files in the residency tree.
    #[arg(long, default_value_t = 10_000)]
    pub small_files: usize,
    /// Random 4 KiB reads per run.
    #[arg(long, default_value_t = 200_000)]
    pub random_reads: usize,
    /// The `mmkit` binary (default: next to this one, built if missing).
    #[arg(long)]
    pub mmkit: Option<PathBuf>,
    /// Size of the write() calls that create the large file, in KiB. It
    /// decides the page-cache folio size on ext4, which decides whether a
    /// mapping or read() scans faster (try 4).
    #[arg(long, default_value_t = 1024)]
    pub write_kib: usize,
    /// Run only these parts (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Part>,
}

/// The parts of the suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    /// Sequential scans.
    Scan,
    /// Random 4 KiB reads.
    Random,
    /// Copies.
    Copy,
    /// Residency against vmtouch.
    Residency,
}

/// One row of a table.
struct Row {
    name: String,
    median: Duration,
    /// Bytes processed per run, for a throughput column.
    bytes: Option<u64>,
}

struct Table {
    title: String,
    rows: Vec<Row>,
    /// Name of the row the ratios are relative to.
    baseline: String,
}

impl Table {
    fn new(title: &str, baseline: &str) -> Table {
        Table { title: title.into(), rows: Vec::new(), baseline: baseline.into() }
    }

    fn add(&mut self, name: &str, median: Duration, bytes: Option<u64>) {
        eprintln!("  {name}: {:.2} ms", median.as_secs_f64() * 1e3);
        self.rows.push(Row { name: name.into(), median, bytes });
    }

    fn print(&self) {
        let base = self.rows.iter().find(|r| r.name == self.baseline).map(|r| r.median.as_secs_f64());
        println!("\n### {}\n", self.title);
        println!("| peer | median | throughput | speed vs {} |", self.baseline);
        println!("|---|---:|---:|---:|");
        for r in &self.rows {
            let secs = r.median.as_secs_f64();
            let tput =
                r.bytes.map(|b| format!("{:.2} GB/s", b as f64 / secs / 1e9)).unwrap_or_else(|| "—".into());
            let ratio = base.map(|b| format!("{:.2}×", b / secs)).unwrap_or_else(|| "—".into());
            println!("| {} | {} | {} | {} |", r.name, fmt_duration(r.median), tput, ratio);
        }
    }
}

fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 1.0 {
        format!("{s:.3} s")
    } else if s >= 1e-3 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{:.1} µs", s * 1e6)
    }
}

fn no_setup() -> BenchResult<()> {
    Ok(())
}

/// The scan every peer does: the wrapping sum of the little-endian u64
/// words.
fn sum_words(bytes: &[u8]) -> u64 {
    bytes
        .chunks_exact(8)
        .fold(0u64, |acc, w| acc.wrapping_add(u64::from_le_bytes(w.try_into().unwrap_or([0; 8]))))
}

/// Runs the suite and prints its tables.
pub fn run(args: Args) -> BenchResult<()> {
    crate::machine::print_header(false);
    if args.size_mb == 0 {
        return Err("--size-mb must be at least 1".into());
    }
    let parent = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let work = tempfile::Builder::new().prefix("mmkit-bench-region").tempdir_in(&parent)?;
    let mmkit = mmkit_binary(args.mmkit.clone())?;
    let big = work.path().join("big.bin");
    let size = args.size_mb << 20;
    eprintln!("writing {} MiB to {} in {} KiB writes", args.size_mb, big.display(), args.write_kib);
    write_big(&big, size, args.write_kib.max(1) << 10)?;
    let started = Instant::now();
    let want = |p: Part| args.only.is_empty() || args.only.contains(&p);

    let mut tables = Vec::new();
    if want(Part::Scan) {
        tables.push(scan_table(&big, size, args.runs)?);
    }
    if want(Part::Random) {
        tables.push(random_table(&big, size, args.runs, args.random_reads)?);
    }
    if want(Part::Copy) {
        tables.push(copy_table(&big, work.path(), size, args.runs, &mmkit)?);
    }
    if want(Part::Residency) {
        tables.extend(residency_tables(&big, work.path(), &args, &mmkit)?);
    }

    println!(
        "\n## mmkit-bench region ({} MiB file written in {} KiB writes, median of {} runs)",
        args.size_mb, args.write_kib, args.runs
    );
    for t in &tables {
        t.print();
    }
    eprintln!("\nsuite took {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

fn mmkit_binary(given: Option<PathBuf>) -> BenchResult<PathBuf> {
    if let Some(p) = given {
        return Ok(p);
    }
    let exe = std::env::current_exe()?;
    let candidate = exe.with_file_name("mmkit");
    // Under `cargo run` always ask cargo (a no-op when up to date), so a
    // stale binary from an older build is never the one measured.
    let cargo = std::env::var_os("CARGO");
    if cargo.is_some() || !candidate.exists() {
        // The same profile as this binary, so the result lands next to it.
        let profile: &[&str] = if cfg!(debug_assertions) { &[] } else { &["--release"] };
        eprintln!("building the mmkit binary (cargo build {} -p mmkit-cli)", profile.join(" "));
        let cargo = cargo.unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo).arg("build").args(profile).args(["-p", "mmkit-cli"]).status()?;
        if !status.success() || !candidate.exists() {
            return Err(format!(
                "no mmkit binary at {}; build it with `cargo build --release -p mmkit-cli`",
                candidate.display()
            )
            .into());
        }
    }
    Ok(candidate)
}

fn write_big(path: &Path, size: u64, write_size: usize) -> BenchResult<()> {
    let block: Vec<u8> = (0..write_size as u32).map(|i| (i.wrapping_mul(2654435761) >> 11) as u8).collect();
    let mut f = File::create(path)?;
    let mut left = size;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        f.write_all(&block[..n])?;
        left -= n as u64;
    }
    f.sync_all()?;
    Ok(())
}

// ---------------------------------------------------------------- scan

fn scan_table(big: &Path, size: u64, runs: usize) -> BenchResult<Table> {
    eprintln!("sequential scan of a cached {} MiB file", size >> 20);
    residency::touch(big)?;
    let mut t = Table::new(
        &format!(
            "Sequential scan of a cached {} MiB file (map + sum of u64 words + unmap; median of {} runs)",
            size >> 20,
            runs * 3
        ),
        "memmap2",
    );
    let mmkit_scan = |advice: Option<Advice>, populate: bool, huge: HugePages| {
        move || -> BenchResult<()> {
            let map = MapOptions::new().populate(populate).huge(huge).map_path(big)?;
            if let Some(a) = advice {
                map.advise(a)?;
            }
            // SAFETY: the benchmark's own file; nothing writes or truncates
            // it while the slice lives.
            black_box(sum_words(unsafe { map.as_slice() }));
            Ok(())
        }
    };
    let memmap2_scan = || -> BenchResult<()> {
        let file = File::open(big)?;
        // SAFETY: as above, the file is private to the benchmark.
        let map = unsafe { memmap2::Mmap::map(&file)? };
        black_box(sum_words(&map));
        Ok(())
    };
    let read_scan = || -> BenchResult<()> {
        let mut file = File::open(big)?;
        let mut buf = vec![0u8; 1 << 20];
        let mut sum = 0u64;
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            sum = sum.wrapping_add(sum_words(&buf[..n]));
        }
        black_box(sum);
        Ok(())
    };
    // Interleave peers run by run so drift on a shared VM hits all alike.
    let peers: Vec<Peer<'_>> = vec![
        ("memmap2", Box::new(memmap2_scan)),
        ("mmkit mapping", Box::new(mmkit_scan(None, false, HugePages::Off))),
        ("mmkit + Advice::Sequential", Box::new(mmkit_scan(Some(Advice::Sequential), false, HugePages::Off))),
        ("mmkit + populate", Box::new(mmkit_scan(None, true, HugePages::Off))),
        ("mmkit + HugePages::Transparent", Box::new(mmkit_scan(None, false, HugePages::Transparent))),
        ("read(), 1 MiB buffer", Box::new(read_scan)),
    ];
    for (name, d) in interleaved(runs * 3, &no_setup, &peers)? {
        t.add(name, d, Some(size));
    }
    Ok(t)
}

/// Runs each peer once per round, `runs` rounds, and returns the medians.
/// `setup` runs untimed before every timed call (and the warm-up).
fn interleaved<'a>(
    runs: usize,
    setup: &dyn Fn() -> BenchResult<()>,
    peers: &[Peer<'a>],
) -> BenchResult<Vec<(&'a str, Duration)>> {
    let mut times = vec![Vec::new(); peers.len()];
    for (_, f) in peers {
        setup()?;
        f()?; // warm-up
    }
    // Rotate the order every round so that no peer always runs right
    // after the same neighbour.
    for round in 0..runs.max(1) {
        for k in 0..peers.len() {
            let i = (round + k) % peers.len();
            setup()?;
            let t = Instant::now();
            (peers[i].1)()?;
            times[i].push(t.elapsed());
        }
    }
    Ok(peers
        .iter()
        .zip(times)
        .map(|((name, _), mut ts)| {
            ts.sort();
            (*name, ts[ts.len() / 2])
        })
        .collect())
}

// ---------------------------------------------------------------- random reads

fn random_table(big: &Path, size: u64, runs: usize, reads: usize) -> BenchResult<Table> {
    eprintln!("random 4 KiB reads");
    let mut t =
        Table::new(&format!("{reads} random 4 KiB reads from the cached file (copy out + sum)"), "pread");
    let pages = size / 4096;
    let mut x = 0x9e3779b97f4a7c15u64;
    let offsets: Vec<u64> = (0..reads)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % pages) * 4096
        })
        .collect();
    let file = File::open(big)?;
    let map = MapOptions::new().map_path(big)?;
    map.advise(Advice::Random)?;
    let map2 = MapOptions::new().map_path(big)?;
    map2.advise(Advice::Random)?;
    let bytes = Some(reads as u64 * 4096);
    let pread = || -> BenchResult<()> {
        let mut buf = [0u8; 4096];
        let mut sum = 0;
        for &off in &offsets {
            rustix::io::pread(file.as_fd(), &mut buf, off)?;
            sum ^= sum_words(&buf);
        }
        black_box(sum);
        Ok(())
    };
    let mapped_safe = || -> BenchResult<()> {
        let mut buf = [0u8; 4096];
        let mut sum = 0;
        for &off in &offsets {
            map.read_at(off, &mut buf)?;
            sum ^= sum_words(&buf);
        }
        black_box(sum);
        Ok(())
    };
    let mapped_slice = || -> BenchResult<()> {
        let mut buf = [0u8; 4096];
        // SAFETY: the benchmark's own file, never written meanwhile.
        let s = unsafe { map2.as_slice() };
        let mut sum = 0;
        for &off in &offsets {
            let off = off as usize;
            buf.copy_from_slice(&s[off..off + 4096]);
            sum ^= sum_words(&buf);
        }
        black_box(sum);
        Ok(())
    };
    let fresh = || -> BenchResult<()> {
        let m = MapOptions::new().map_path(big)?;
        m.advise(Advice::Random)?;
        let mut buf = [0u8; 4096];
        let mut sum = 0;
        for &off in &offsets {
            m.read_at(off, &mut buf)?;
            sum ^= sum_words(&buf);
        }
        black_box(sum);
        Ok(())
    };
    // The warm-up pass over each reused mapping takes the page faults; the
    // medians reflect mappings whose page tables are already filled, as for
    // a long-lived mapping. Interleaved, as the other tables.
    let peers: Vec<Peer<'_>> = vec![
        ("pread", Box::new(pread)),
        ("mmkit mapping, read_at (safe, volatile copy)", Box::new(mapped_safe)),
        ("mmkit mapping, as_slice copy (unsafe)", Box::new(mapped_slice)),
        ("mmkit fresh mapping each run (faults included)", Box::new(fresh)),
    ];
    for (name, d) in interleaved(runs, &no_setup, &peers)? {
        t.add(name, d, bytes);
    }
    Ok(t)
}

// ---------------------------------------------------------------- copy

fn copy_table(big: &Path, dir: &Path, size: u64, runs: usize, mmkit: &Path) -> BenchResult<Table> {
    eprintln!("copy of {} MiB (hot source)", size >> 20);
    let mut t = Table::new(
        &format!(
            "Copy of a cached {} MiB file to a new file, same filesystem (DST deleted between runs; median of {} runs)",
            size >> 20,
            runs * 2
        ),
        "coreutils cp",
    );
    residency::touch(big)?;
    let dst = dir.join("copy.bin");
    let clean = || -> BenchResult<()> {
        let _ = std::fs::remove_file(&dst);
        rustix::fs::sync();
        Ok(())
    };
    let process = |program: &Path, args: &[&std::ffi::OsStr]| -> BenchResult<()> {
        let status = Command::new(program).args(args).status()?;
        if status.success() { Ok(()) } else { Err(format!("{} failed", program.display()).into()) }
    };
    let lib = |method: Method| {
        let dst = &dst;
        move || -> BenchResult<()> {
            let src = File::open(big)?;
            let out = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(dst)?;
            if method == Method::Mmap {
                out.set_len(size)?;
            }
            copy::copy_range(src.as_fd(), out.as_fd(), 0, size, method, &mut |_| {})?;
            Ok(())
        }
    };
    let cp_path = which("cp").unwrap_or_else(|| PathBuf::from("/bin/cp"));
    let cp_args = [big.as_os_str(), dst.as_os_str()];
    let mmkit_args = [std::ffi::OsStr::new("cp"), big.as_os_str(), dst.as_os_str()];
    let peers: Vec<Peer<'_>> = vec![
        ("coreutils cp", Box::new(|| process(&cp_path, &cp_args))),
        ("mmkit cp (process, default: copy_file_range)", Box::new(|| process(mmkit, &mmkit_args))),
        ("copy_file_range (library)", Box::new(lib(Method::CopyFileRange))),
        ("read/write loop, 1 MiB buffer", Box::new(lib(Method::ReadWrite))),
        ("pure mmap copy (both files mapped)", Box::new(lib(Method::Mmap))),
    ];
    // Copies are short and noisy here: twice the runs.
    for (name, d) in interleaved(runs * 2, &clean, &peers)? {
        t.add(name, d, Some(size));
    }
    clean()?;
    Ok(t)
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(name)).find(|p| p.exists())
}

// ---------------------------------------------------------------- residency

fn residency_tables(big: &Path, dir: &Path, args: &Args, mmkit: &Path) -> BenchResult<Vec<Table>> {
    let Some(vmtouch) = which("vmtouch") else {
        eprintln!("vmtouch not installed: skipping the residency rows (apt-get install vmtouch)");
        return Ok(Vec::new());
    };
    eprintln!("residency: building a tree of {} small files", args.small_files);
    let tree = dir.join("tree");
    make_tree(&tree, args.small_files)?;
    let quiet = |program: &Path, a: &[&std::ffi::OsStr]| -> BenchResult<()> {
        let status = Command::new(program).args(a).stdout(Stdio::null()).stderr(Stdio::null()).status()?;
        if status.success() { Ok(()) } else { Err(format!("{} {:?} failed", program.display(), a).into()) }
    };
    let runs = args.runs.max(5);
    let os = std::ffi::OsStr::new;
    let mb = big.metadata()?.len() >> 20;
    let n = args.small_files;

    residency::touch(big)?;
    let mut one = Table::new(
        &format!("Residency of one cached {mb} MiB file (process run, stdout to /dev/null)"),
        "vmtouch",
    );
    let peers: Vec<Peer<'_>> = vec![
        ("vmtouch", Box::new(|| quiet(&vmtouch, &[big.as_os_str()]))),
        ("mmkit resident", Box::new(|| quiet(mmkit, &[os("resident"), big.as_os_str()]))),
    ];
    for (name, d) in interleaved(runs, &no_setup, &peers)? {
        one.add(name, d, None);
    }

    let mut many = Table::new(
        &format!("Residency of a tree of {n} small files in {} directories", n.div_ceil(100)),
        "vmtouch",
    );
    let peers: Vec<Peer<'_>> = vec![
        ("vmtouch", Box::new(|| quiet(&vmtouch, &[tree.as_os_str()]))),
        ("mmkit resident (a line per file)", Box::new(|| quiet(mmkit, &[os("resident"), tree.as_os_str()]))),
        (
            "mmkit resident --summary",
            Box::new(|| quiet(mmkit, &[os("resident"), os("--summary"), tree.as_os_str()])),
        ),
    ];
    for (name, d) in interleaved(runs, &no_setup, &peers)? {
        many.add(name, d, None);
    }

    // Touch after evict reads from storage.
    let evict = || quiet(mmkit, &[os("resident"), os("--evict"), big.as_os_str()]);
    let mut touch = Table::new(
        &format!("Touch of the {mb} MiB file after evicting it (reads from the virtual disk)"),
        "vmtouch -t",
    );
    let peers: Vec<Peer<'_>> = vec![
        ("vmtouch -t", Box::new(|| quiet(&vmtouch, &[os("-t"), big.as_os_str()]))),
        (
            "mmkit resident --touch",
            Box::new(|| quiet(mmkit, &[os("resident"), os("--touch"), big.as_os_str()])),
        ),
    ];
    for (name, d) in interleaved(runs, &evict, &peers)? {
        touch.add(name, d, Some(mb << 20));
    }
    Ok(vec![one, many, touch])
}

fn make_tree(root: &Path, files: usize) -> BenchResult<()> {
    let per_dir = 100;
    for i in 0..files {
        let sub = root.join(format!("d{:03}", i / per_dir));
        if i % per_dir == 0 {
            std::fs::create_dir_all(&sub)?;
        }
        let len = 1 + (i * 7919) % 16384;
        std::fs::write(sub.join(format!("f{i:05}")), vec![(i % 251) as u8; len])?;
    }
    Ok(())
}
