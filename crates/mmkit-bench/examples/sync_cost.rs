//! What one durable commit's I/O costs on this machine's disk, by the
//! shape of the writes: how many pages, how far apart, and how many
//! `fdatasync` calls. The figures that bound the kv suite's durable rows.
//!
//! `cargo run --release -p mmkit-bench --example sync_cost -- [DIR] [ROUNDS] [DEV] [random]`
//!
//! A 256 MiB file in `DIR` (default `.`) is allocated and written once;
//! then each pattern writes one byte into each of its pages through a
//! shared mapping and calls `fdatasync`, `ROUNDS` times (default 1000),
//! and prints the median and the 10th and 90th percentiles of the time
//! per round. With `DEV` (such as `vda`), it also prints the write
//! requests and KiB the disk saw per round (`/sys/block/DEV/stat`). With
//! `random`, the mapping gets `MADV_RANDOM` before the first writes: the
//! page cache then holds the file in 4 KiB folios, where read-around
//! would build large ones, and a one-byte store makes a whole large folio
//! dirty.

use std::fs::OpenOptions;
use std::time::Instant;

use memmap2::MmapOptions;

#[path = "../src/machine.rs"]
mod machine;

const PAGE: usize = 4096;
const PAGES: usize = 65536;

/// A small xorshift generator: the same patterns in every run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// The pages one round writes, and whether it syncs once after each page
/// but the last (LMDB's data-then-meta order) rather than once at the end.
struct Pattern {
    name: &'static str,
    pages: fn(&mut Rng) -> Vec<usize>,
    sync_each: bool,
}

const PATTERNS: [Pattern; 8] = [
    Pattern { name: "1 page (page 0)", pages: |_| vec![0], sync_each: false },
    Pattern { name: "2 adjacent pages", pages: |_| vec![0, 1], sync_each: false },
    Pattern { name: "2 pages 1 MiB apart", pages: |_| vec![0, 256], sync_each: false },
    Pattern {
        name: "8 pages in a 256 KiB window",
        pages: |r| (0..8).map(|i| if i == 0 { 0 } else { 2 + r.below(62) }).collect(),
        sync_each: false,
    },
    Pattern {
        name: "page 0 and 7 adjacent pages in a 256 KiB window",
        pages: |r| {
            let first = 2 + r.below(55);
            std::iter::once(0).chain(first..first + 7).collect()
        },
        sync_each: false,
    },
    Pattern {
        name: "page 0 and 2 runs of adjacent pages (4 + 3)",
        pages: |r| {
            let (a, b) = (2 + r.below(28), 34 + r.below(28));
            std::iter::once(0).chain(a..a + 4).chain(b..b + 3).collect()
        },
        sync_each: false,
    },
    Pattern {
        name: "8 pages in a 256 KiB window, then 1 more, 2 syncs",
        pages: |r| (0..9).map(|i| if i == 8 { 0 } else { 2 + r.below(62) }).collect(),
        sync_each: true,
    },
    Pattern { name: "1 page anywhere in 256 MiB", pages: |r| vec![r.below(PAGES)], sync_each: false },
];

/// The counters of block device `dev` (Documentation/block/stat.rst):
/// index 4 is write requests, 6 sectors written.
fn disk(dev: &str) -> Option<Vec<u64>> {
    let text = std::fs::read_to_string(format!("/sys/block/{dev}/stat")).ok()?;
    let fields: Option<Vec<u64>> = text.split_whitespace().map(|f| f.parse().ok()).collect();
    fields.filter(|f| f.len() > 6)
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::PathBuf::from(args.get(1).map_or(".", String::as_str));
    let rounds: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1000);
    let dev = args.get(3).filter(|d| *d != "-").cloned();
    let random = args.get(4).is_some_and(|a| a == "random");
    machine::print_header(false);
    let tmp = tempfile::Builder::new().prefix(".sync-cost").tempfile_in(&dir)?;
    let file = OpenOptions::new().read(true).write(true).open(tmp.path())?;
    rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, (PAGES * PAGE) as u64)?;
    // SAFETY: a fresh temporary file that only this process knows of;
    // nothing truncates it while it is mapped.
    let mut map = unsafe { MmapOptions::new().len(PAGES * PAGE).map_mut(&file)? };
    if random {
        map.advise(memmap2::Advice::Random)?;
    }
    for i in (0..map.len()).step_by(PAGE) {
        map[i] = 1;
    }
    rustix::fs::fdatasync(&file)?;
    let how = if random { "MADV_RANDOM" } else { "default readahead" };
    println!("file in {}, {how}, {rounds} rounds per pattern; µs per round: median [p10–p90]", dir.display());
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for p in &PATTERNS {
        let mut times = Vec::with_capacity(rounds);
        let before = dev.as_deref().and_then(disk);
        for round in 0..rounds {
            let pages = (p.pages)(&mut rng);
            let t = Instant::now();
            for (i, &page) in pages.iter().enumerate() {
                map[page * PAGE + 64] = round as u8;
                if p.sync_each && i + 2 == pages.len() {
                    rustix::fs::fdatasync(&file)?;
                }
            }
            rustix::fs::fdatasync(&file)?;
            times.push(t.elapsed().as_secs_f64() * 1e6);
        }
        times.sort_by(f64::total_cmp);
        let at = |q: usize| times[(times.len() - 1) * q / 100];
        let io = match (before, dev.as_deref().and_then(disk)) {
            (Some(a), Some(b)) => {
                let per = |i: usize| (b[i] - a[i]) as f64 / rounds as f64;
                format!("  {:.1} writes, {:.1} KiB", per(4), per(6) / 2.0)
            }
            _ => String::new(),
        };
        println!("{:52} {:7.1} [{:.1}–{:.1}]{io}", p.name, at(50), at(10), at(90));
    }
    Ok(())
}
