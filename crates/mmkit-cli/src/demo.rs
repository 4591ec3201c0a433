//! `mmkit demo`: a short tour on a temporary directory, printing what it
//! did and what it measured.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use mmkit_cli::copy::{self, CopyOptions, Method};
use mmkit_region::residency;
use mmkit_region::shm::Shm;
use mmkit_region::{Access, Advice, GrowableFile, MapOptions, Mode};

use crate::{CliError, CliResult};

/// Arguments of `mmkit demo`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  cargo run --release -p mmkit-cli -- demo\n  mmkit demo")]
pub struct DemoArgs {}

/// Size of the file the region tour scans and copies.
const FILE_MB: usize = 256;

/// Runs the demo: the region tour, then the queue and array sections.
pub fn run(_args: DemoArgs) -> CliResult<()> {
    let dir = tempfile::tempdir_in(demo_parent())
        .map_err(|e| CliError::io("create temporary directory", std::env::temp_dir(), e))?;
    let start = Instant::now();
    println!("mmkit demo in {}", dir.path().display());
    region_tour(dir.path())?;
    crate::queue_cmd::demo(dir.path())?;
    crate::array_cmd::demo(dir.path())?;
    crate::heap_cmd::demo(dir.path())?;
    crate::kv_cmd::demo::run(dir.path())?;
    println!("\ndemo finished in {:.1} s", start.elapsed().as_secs_f64());
    Ok(())
}

/// The system temporary directory, unless it is a tmpfs (then eviction
/// shows nothing) and the current directory is not.
fn demo_parent() -> std::path::PathBuf {
    let tmp = std::env::temp_dir();
    let is_tmpfs = |p: &Path| rustix::fs::statfs(p).is_ok_and(|s| s.f_type == libc::TMPFS_MAGIC);
    if is_tmpfs(&tmp) && std::env::current_dir().is_ok_and(|d| !is_tmpfs(&d)) {
        std::env::current_dir().unwrap_or(tmp)
    } else {
        tmp
    }
}

fn section(title: &str) {
    println!("\n== {title}");
    let _ = std::io::stdout().flush();
}

fn gbps(bytes: u64, seconds: f64) -> String {
    format!("{:.2} GB/s", bytes as f64 / seconds.max(1e-9) / 1e9)
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> CliError + 'a {
    move |e| CliError::io(op, path, e)
}

fn region_tour(dir: &Path) -> CliResult<()> {
    let data = dir.join("data.bin");
    write_file(&data)?;
    scan(&data)?;
    residency_tour(&data)?;
    copy_tour(dir, &data)?;
    growable_tour(dir)?;
    shm_tour()?;
    sigbus_tour(dir)
}

fn write_file(path: &Path) -> CliResult<()> {
    section("write a file");
    let t = Instant::now();
    let block: Vec<u8> = (0..1 << 20).map(|i: u32| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let mut f = std::fs::File::create(path).map_err(io("create", path))?;
    for _ in 0..FILE_MB {
        f.write_all(&block).map_err(io("write", path))?;
    }
    f.sync_all().map_err(io("fsync", path))?;
    println!("wrote {FILE_MB} MiB to {} in {:.2} s (with fsync)", path.display(), t.elapsed().as_secs_f64());
    Ok(())
}

fn sum_words(bytes: &[u8]) -> u64 {
    bytes
        .chunks_exact(8)
        .fold(0u64, |acc, w| acc.wrapping_add(u64::from_le_bytes(w.try_into().unwrap_or([0; 8]))))
}

fn scan(path: &Path) -> CliResult<()> {
    section("map it and scan it (sum of u64 words), against read()");
    let size = (FILE_MB as u64) << 20;
    residency::touch(path)?;
    let t = Instant::now();
    let map = MapOptions::new().map_path(path)?;
    map.advise(Advice::Sequential)?;
    // SAFETY: the file is private to this demo's temporary directory and
    // nothing writes or truncates it while the slice lives.
    let mapped_sum = sum_words(unsafe { map.as_slice() });
    drop(map);
    let map_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut f = std::fs::File::open(path).map_err(io("open", path))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut read_sum = 0u64;
    loop {
        let n = std::io::Read::read(&mut f, &mut buf).map_err(io("read", path))?;
        if n == 0 {
            break;
        }
        read_sum = read_sum.wrapping_add(sum_words(&buf[..n]));
    }
    let read_s = t.elapsed().as_secs_f64();
    println!(
        "mapping (map + scan + unmap): {}   read() 1 MiB buffer: {}",
        gbps(size, map_s),
        gbps(size, read_s)
    );
    let faster = if map_s < read_s { "the mapping" } else { "read()" };
    println!("same sum both ways: {}; {faster} was faster this time", mapped_sum == read_sum);
    Ok(())
}

fn residency_tour(path: &Path) -> CliResult<()> {
    section("page-cache residency (what vmtouch shows)");
    let show = |label: &str| -> CliResult<()> {
        let r = residency::of_path(path, true)?;
        let chart = r.map().map(|m| m.chart(40)).unwrap_or_default();
        println!("{label:<14} [{chart}] {}/{} pages", r.resident_pages, r.total_pages);
        Ok(())
    };
    show("hot")?;
    let t = Instant::now();
    residency::evict(path)?;
    let evict_ms = t.elapsed().as_secs_f64() * 1e3;
    show("after evict")?;
    // Load the second quarter only, through a mapping.
    let quarter = (FILE_MB << 20) / 4;
    let map = MapOptions::new().offset(quarter as u64).len(quarter).map_path(path)?;
    map.populate()?;
    drop(map);
    show("quarter read")?;
    let t = Instant::now();
    let before = residency::touch(path)?;
    let touch_s = t.elapsed().as_secs_f64();
    show("after touch")?;
    let loaded = before.total_pages.saturating_sub(before.resident_pages) * before.page_size as u64;
    println!(
        "evict took {evict_ms:.1} ms; touch read {} MiB from disk at {}",
        loaded >> 20,
        gbps(loaded, touch_s)
    );
    let t = Instant::now();
    let r = residency::of_path(path, false)?;
    println!("counting {} pages took {:.0} µs", r.total_pages, t.elapsed().as_secs_f64() * 1e6);
    Ok(())
}

/// Rounds of the copy comparison: each method once per round.
const COPY_ROUNDS: usize = 3;

/// Compares the copy methods as `mmkit-bench region` does, on a smaller
/// file and fewer runs: interleaved in a rotating order, the destination
/// deleted and the disk synced before every run, medians reported.
fn copy_tour(dir: &Path, src: &Path) -> CliResult<()> {
    section("mmkit cp (atomic: temporary file + rename), by method");
    let size = (FILE_MB as u64) << 20;
    let methods = [Method::CopyFileRange, Method::ReadWrite, Method::Mmap];
    let dst = dir.join("copy.bin");
    let mut times = vec![Vec::new(); methods.len()];
    for round in 0..COPY_ROUNDS {
        for k in 0..methods.len() {
            let i = (round + k) % methods.len();
            timed_copy(src, &dst, methods[i], &mut times[i])?;
        }
    }
    std::fs::remove_file(&dst).map_err(io("remove", &dst))?;
    print_copy_medians(&methods, times, size);
    Ok(())
}

fn print_copy_medians(methods: &[Method], times: Vec<Vec<f64>>, size: u64) {
    println!(
        "medians of {COPY_ROUNDS} interleaved runs; hot {FILE_MB} MiB source; destination deleted and synced before each run:"
    );
    let rate = |secs: f64| size as f64 / secs.max(1e-9) / 1e9;
    for (&method, mut t) in methods.iter().zip(times) {
        t.sort_by(f64::total_cmp);
        let default = if method == Method::default() { " (default)" } else { "" };
        let name = format!("{}{default}", method_name(method));
        let (slowest, median, fastest) = (t[t.len() - 1], t[t.len() / 2], t[0]);
        println!("  {name:<27} {}   (runs {:.2}-{:.2})", gbps(size, median), rate(slowest), rate(fastest));
    }
    let load = rustix::system::sysinfo().loads[0] as f64 / 65536.0;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "(load average {load:.1} on {cpus} CPUs; single runs can vary several-fold on a shared machine, \
         so the reference is docs/benchmarks-region.md: 1 GiB, 10 runs, against coreutils cp)"
    );
}

/// One copy to `dst` (removed first, then `sync`, so that writing back an
/// earlier copy does not slow this one), its seconds pushed to `times`.
fn timed_copy(src: &Path, dst: &Path, method: Method, times: &mut Vec<f64>) -> CliResult<()> {
    match std::fs::remove_file(dst) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(CliError::io("remove", dst, e)),
        _ => {}
    }
    rustix::fs::sync();
    let t = Instant::now();
    copy::copy_file(src, dst, CopyOptions { method, fsync: false }, &mut |_| {}, &mut |_| {})?;
    times.push(t.elapsed().as_secs_f64());
    Ok(())
}

/// The name `mmkit cp --method` takes.
fn method_name(method: Method) -> String {
    use clap::ValueEnum;
    method.to_possible_value().map_or_else(|| format!("{method:?}"), |v| v.get_name().to_string())
}

fn growable_tour(dir: &Path) -> CliResult<()> {
    section("GrowableFile: grow without moving the base address");
    let path = dir.join("growable.bin");
    let g = GrowableFile::create(&path, 1 << 20, 1 << 30)?;
    let base = g.base();
    g.write_at(0, b"first bytes")?;
    let t = Instant::now();
    let mut steps = 0;
    for mb in (2..=64).step_by(2) {
        g.grow_to(mb << 20)?;
        steps += 1;
    }
    let grow_us = t.elapsed().as_secs_f64() * 1e6 / steps as f64;
    g.write_at((64 << 20) - 10, b"last bytes")?;
    let mut head = [0u8; 11];
    g.read_at(0, &mut head)?;
    println!(
        "grew 1 MiB -> {} MiB in {steps} steps ({grow_us:.0} µs each, fallocate + map in place); reserved {} MiB",
        g.len() >> 20,
        g.reserved() >> 20
    );
    println!(
        "base before {:p}, after {:p}: {}; first bytes still {:?}",
        base,
        g.base(),
        if base == g.base() { "unchanged" } else { "MOVED" },
        String::from_utf8_lossy(&head)
    );
    Ok(())
}

fn shm_tour() -> CliResult<()> {
    section("named shared memory (/dev/shm, as Python's shared_memory sees it)");
    let name = format!("mmkit-demo-{}", std::process::id());
    let seg = Shm::create(&name, 1 << 20)?;
    // Unlink even when a step fails, so the demo leaves nothing in /dev/shm.
    let shown = shm_steps(&seg);
    let unlinked = Shm::unlink(&name);
    shown?;
    unlinked?;
    println!("unlinked: {}", Shm::info(&name).is_err());
    Ok(())
}

fn shm_steps(seg: &Shm) -> CliResult<()> {
    let name = seg.name();
    let writer = seg.map(Mode::ReadWrite)?;
    writer.write_at(0, b"hello from mmkit")?;
    writer.atomic_u64(64)?.store(42, std::sync::atomic::Ordering::Release);
    let reader = Shm::open(name, Mode::ReadOnly)?.map(Mode::ReadOnly)?;
    let mut text = [0u8; 16];
    reader.read_at(0, &mut text)?;
    let n = reader.load_u64(64, std::sync::atomic::Ordering::Acquire)?;
    let listed = Shm::list()?.into_iter().find(|s| s.name == name);
    let again = Shm::create(name, 4096).is_err();
    println!(
        "created /{name} ({} KiB), wrote through one mapping, read {:?} and {n} through another",
        seg.len() >> 10,
        String::from_utf8_lossy(&text)
    );
    match listed {
        Some(info) => println!("listed with mode {:o}; second create refused: {again}", info.mode & 0o7777),
        None => println!("not listed under /dev/shm (?); second create refused: {again}"),
    }
    Ok(())
}

fn sigbus_tour(dir: &Path) -> CliResult<()> {
    section("SIGBUS: a file truncated under a mapping");
    let path = dir.join("shrinking.bin");
    std::fs::write(&path, vec![1u8; 64 << 10]).map_err(io("write", &path))?;
    let map = MapOptions::new().map_path(&path)?;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_len(0))
        .map_err(io("truncate", &path))?;
    let mut buf = [0u8; 8];
    match map.read_at(32 << 10, &mut buf) {
        Err(e) => println!("read after truncation returned an error instead of killing the process:\n  {e}"),
        Ok(()) => println!("read after truncation returned {buf:?} (no SIGBUS guard?)"),
    }
    Ok(())
}
