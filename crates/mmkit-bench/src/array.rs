//! The `array` suite: mmkit-array against numpy.memmap on the same file,
//! in the same run.
//!
//! ```text
//! cargo run --release -p mmkit-bench -- array
//! ```
//!
//! - **column sum**: open a 1 GiB C-order f32 array of shape (N, 4) and
//!   sum each column. numpy: `np.load(path, mmap_mode='r').sum(axis=0)`.
//!   mmkit: `MmapArray::<f32>::open(..)?.column_sums()` (a `pread` scan,
//!   f64 accumulators), plus the same scan copying from the mapping
//!   (mode `c`), to show what mmap alone gives.
//! - **random gather**: 1M random row indices (the same ones for both,
//!   written to an `.npy` file), `m[idx]` in numpy against
//!   `gather_rows` in mmkit, on an already open array.
//!
//! Both sides run with the file in the page cache (one warm-up pass
//! each); the medians of `--runs` runs are reported, with ratios.
//! numpy is run as `python3` and times itself; it must be installed
//! (`python3 -m pip install numpy`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use mmkit_array::{MmapArray, Mode};

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

/// Options of the `array` suite.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  cargo run --release -p mmkit-bench -- array\n  cargo run --release -p mmkit-bench -- array --size-mb 256 --runs 3"
)]
pub struct Args {
    /// Directory for the test files (default: the system temporary directory).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Size of the f32 array's data, in MiB.
    #[arg(long, default_value_t = 1024)]
    pub size_mb: usize,
    /// Columns of the array.
    #[arg(long, default_value_t = 4)]
    pub cols: usize,
    /// Rows gathered per run.
    #[arg(long, default_value_t = 1_000_000)]
    pub gather: usize,
    /// Runs per measurement (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
}

/// numpy's side: times itself and prints JSON.
const NUMPY: &str = r#"
import json, sys, time
import numpy as np
path, idx_path, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
def colsum():
    m = np.load(path, mmap_mode='r')
    s = m.sum(axis=0)
    del m
    return s
colsum()  # warm-up: page cache
t = []
for _ in range(runs):
    t0 = time.perf_counter(); s = colsum(); t.append(time.perf_counter() - t0)
m = np.load(path, mmap_mode='r')
idx = np.load(idx_path)
g = []
out = m[idx]  # warm-up: page tables
for _ in range(runs):
    t0 = time.perf_counter(); out = m[idx]; g.append(time.perf_counter() - t0)
print(json.dumps({"colsum": t, "sums": [float(x) for x in s], "gather": g,
                  "gather_check": float(out.astype('f8').sum()), "numpy": np.__version__}))
"#;

/// The exact column sums of the array `write_array` writes.
fn exact_sums(rows: usize, cols: usize) -> Vec<f64> {
    let full = (rows / 1000) as f64 * (999.0 * 1000.0 / 2.0);
    let rest = rows % 1000;
    let part = (rest * rest.saturating_sub(1) / 2) as f64;
    (0..cols).map(|c| full + part + c as f64 * 0.25 * rows as f64).collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Writes the (N, cols) f32 array: element (r, c) = (r % 1000) + c / 4.
fn write_array(path: &Path, rows: usize, cols: usize) -> BenchResult<()> {
    let mut a = MmapArray::<f32>::create(path, &[rows, cols])?;
    let chunk_rows = 1 << 16;
    let mut buf = vec![0f32; chunk_rows * cols];
    let mut r0 = 0;
    while r0 < rows {
        let n = chunk_rows.min(rows - r0);
        for (k, v) in buf[..n * cols].iter_mut().enumerate() {
            *v = ((r0 + k / cols) % 1000) as f32 + (k % cols) as f32 * 0.25;
        }
        a.write_storage(r0 * cols, &buf[..n * cols])?;
        r0 += n;
    }
    a.flush()?;
    Ok(())
}

fn write_indices(path: &Path, n: usize, rows: usize) -> BenchResult<Vec<usize>> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let idx: Vec<usize> = (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % rows as u64) as usize
        })
        .collect();
    let mut a = MmapArray::<i64>::create(path, &[n])?;
    let as_i64: Vec<i64> = idx.iter().map(|&i| i as i64).collect();
    a.write_storage(0, &as_i64)?;
    Ok(idx)
}

fn time_runs(runs: usize, mut f: impl FnMut() -> BenchResult<()>) -> BenchResult<Vec<f64>> {
    f()?; // warm-up
    let mut t = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        f()?;
        t.push(start.elapsed().as_secs_f64());
    }
    Ok(t)
}

/// Runs the suite and prints its table.
pub fn run(args: Args) -> BenchResult<()> {
    crate::machine::print_header(false);
    let dir = match &args.dir {
        Some(d) => tempfile::tempdir_in(d)?,
        None => tempfile::tempdir()?,
    };
    let cols = args.cols.max(1);
    let rows = (args.size_mb << 20) / (4 * cols);
    if rows == 0 {
        return Err(format!("--size-mb {} holds not even one row of {cols} f32", args.size_mb).into());
    }
    // A median needs at least one run.
    let runs = args.runs.max(1);
    let path = dir.path().join("bench.npy");
    let idx_path = dir.path().join("idx.npy");
    eprintln!(
        "writing a {} MiB f32 array of shape ({rows}, {cols}) in {}",
        args.size_mb,
        dir.path().display()
    );
    write_array(&path, rows, cols)?;
    let idx = write_indices(&idx_path, args.gather, rows)?;
    let bytes = (rows * cols * 4) as f64;

    eprintln!("mmkit: column sums");
    let mut sums = Vec::new();
    let mmkit_sum = time_runs(runs, || {
        let a = MmapArray::<f32>::open(&path, Mode::ReadOnly)?;
        sums = a.column_sums()?;
        Ok(())
    })?;
    let mmkit_sum_map = time_runs(runs, || {
        let a = MmapArray::<f32>::open(&path, Mode::CopyOnWrite)?;
        std::hint::black_box(a.column_sums()?);
        Ok(())
    })?;
    eprintln!("mmkit: random gather");
    let a = MmapArray::<f32>::open(&path, Mode::ReadOnly)?;
    let mut check = 0.0;
    let mmkit_gather = time_runs(runs, || {
        let mut out = vec![0f32; idx.len() * cols];
        a.gather_rows(&idx, &mut out)?;
        check = out.iter().map(|&v| f64::from(v)).sum();
        Ok(())
    })?;

    eprintln!("numpy: column sums and random gather");
    let out = Command::new("python3")
        .arg("-c")
        .arg(NUMPY)
        .arg(&path)
        .arg(&idx_path)
        .arg(runs.to_string())
        .output()?;
    if !out.status.success() {
        return Err(format!("numpy side failed: {}", String::from_utf8_lossy(&out.stderr).trim()).into());
    }
    let np: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let times = |k: &str| -> Vec<f64> {
        np[k].as_array().map(|v| v.iter().filter_map(serde_json::Value::as_f64).collect()).unwrap_or_default()
    };
    let (np_sum, np_gather) = (times("colsum"), times("gather"));
    if np_sum.is_empty() || np_gather.is_empty() {
        return Err("numpy side printed no timings".into());
    }
    let np_sums = times("sums");
    let exact = exact_sums(rows, cols);
    let rel_err = |got: &[f64]| {
        got.iter().zip(&exact).map(|(g, e)| ((g - e) / e.abs().max(1.0)).abs()).fold(0.0, f64::max)
    };
    if rel_err(&sums) > 1e-12 {
        return Err(format!("mmkit column sums are wrong: {sums:?}, exact {exact:?}").into());
    }
    if np["gather_check"].as_f64() != Some(check) {
        return Err(format!("gathers disagree: mmkit {check} numpy {}", np["gather_check"]).into());
    }

    let (ms, msm, mg) = (median(mmkit_sum), median(mmkit_sum_map), median(mmkit_gather));
    let (ns, ng) = (median(np_sum), median(np_gather));
    let gbps = |t: f64| bytes / t / 1e9;
    println!(
        "\narray suite: {} MiB f32 array, shape ({rows}, {cols}), C order, in the page cache; numpy {}; medians of {} runs\n",
        args.size_mb,
        np["numpy"].as_str().unwrap_or("?"),
        runs
    );
    println!("| operation | mmkit | numpy.memmap | mmkit speed-up |");
    println!("|---|---|---|---|");
    println!(
        "| column sum (open + sum(axis=0)), pread scan | {:.1} ms ({:.1} GB/s) | {:.1} ms ({:.1} GB/s) | {:.2}× |",
        ms * 1e3,
        gbps(ms),
        ns * 1e3,
        gbps(ns),
        ns / ms
    );
    println!(
        "| column sum, copying from the mapping (mode c) | {:.1} ms ({:.1} GB/s) | {:.1} ms | {:.2}× |",
        msm * 1e3,
        gbps(msm),
        ns * 1e3,
        ns / msm
    );
    println!(
        "| random gather of {} rows (`m[idx]`) | {:.1} ms ({:.0} ns/row) | {:.1} ms ({:.0} ns/row) | {:.2}× |",
        args.gather,
        mg * 1e3,
        mg * 1e9 / args.gather as f64,
        ng * 1e3,
        ng * 1e9 / args.gather as f64,
        ng / mg
    );
    println!(
        "\nLargest relative error of the column sums: mmkit (f64 accumulators) {:.1e}, numpy (float32) {:.1e}.",
        rel_err(&sums),
        rel_err(&np_sums)
    );
    Ok(())
}
