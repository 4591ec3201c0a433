//! `mmkit array ...`: inspect, create and summarise numpy `.npy` files.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use mmkit_array::{
    ALL_DTYPES, Appendable, Bool, Complex32, Complex64, CreateOptions, DType, Element, Header, MmapArray,
    Mode, OpenOptions, Order, ToF64, Version, escape_control, f16,
};

use crate::{CliError, CliResult};

/// Files at least this large get a progress bar (when stderr is a terminal).
const PROGRESS_MIN: u64 = 64 << 20;

/// `mmkit array ...`.
#[derive(Debug, clap::Subcommand)]
pub enum ArrayCommand {
    /// Show an .npy file's header: shape, dtype, order, version, offsets.
    #[command(after_help = "Examples:\n  mmkit array info points.npy\n  mmkit array info --json points.npy")]
    Info {
        /// The .npy file.
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Create an .npy file of a given dtype and shape (numpy mode w+).
    #[command(after_help = "\
Examples:
  mmkit array create points.npy --dtype f32 --shape 1000,3
  mmkit array create mask.npy --dtype bool --shape 4096 --fill 1
  mmkit array create m.npy --dtype complex128 --shape 8,8 --order f --fill 1.5,-2

dtypes: bool int8 int16 int32 int64 uint8 uint16 uint32 uint64 float16 float32
float64 complex64 complex128, or a descr such as <f4, or a Rust-style name
(i8 ... u64, f16, f32, f64; c64 = complex64, two f32; c128 = complex128).
i8 and u8 are one byte, as in Rust; numpy's code for int64 needs its byte order: <i8.
The result loads with numpy.load(FILE, mmap_mode='r') and numpy.memmap.")]
    Create {
        /// The file to create.
        file: PathBuf,
        /// Element type: numpy's name (float32, complex64...), a descr (<f4) or a Rust name (f32).
        #[arg(long)]
        dtype: String,
        /// Comma-separated dimensions, e.g. 1000,3; empty ("") for a 0-d array.
        #[arg(long, allow_hyphen_values = true)]
        shape: String,
        /// Value for every element (default 0); complex as RE,IM; bool as 0/1/true/false.
        #[arg(long, allow_hyphen_values = true)]
        fill: Option<String>,
        /// Memory order: c (row-major, default) or f (Fortran, column-major).
        #[arg(long, default_value = "c")]
        order: String,
        /// Header version: 1, 2 or 3 (default: 1, or 2 if the header is huge).
        #[arg(long)]
        version: Option<u8>,
        /// Overwrite the file if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Min, max, mean and sum per column of a 2-D array, or of a whole 1-D array.
    #[command(after_help = "\
Examples:
  mmkit array stats points.npy
  mmkit array stats --json points.npy

One sequential pass; a progress bar shows on big files when stderr is a terminal.
NaNs are skipped by min and max and propagate into sum and mean.")]
    Stats {
        /// The .npy file.
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Runs an array command.
pub fn run(cmd: ArrayCommand) -> CliResult<()> {
    match cmd {
        ArrayCommand::Info { file, json } => info(&file, json),
        ArrayCommand::Create { file, dtype, shape, fill, order, version, force } => {
            let spec = CreateSpec::parse(&dtype, &shape, fill.as_deref(), &order, version)?;
            create(&file, &spec, force)
        }
        ArrayCommand::Stats { file, json } => stats(&file, json),
    }
}

fn shape_text(shape: &[usize]) -> String {
    match shape {
        [one] => format!("({one},)"),
        _ => format!("({})", shape.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")),
    }
}

/// Appends a formatted line to a `String` buffer.
macro_rules! outln {
    ($out:expr, $($arg:tt)*) => {{
        $out.push_str(&format!($($arg)*));
        $out.push('\n');
    }};
}

/// Writes `text` to stdout; a closed pipe is an error, not a panic.
fn emit(text: &str) -> CliResult<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()).map_err(CliError::Output)
}

fn print_json(value: &serde_json::Value) -> CliResult<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    emit(&text)
}

fn info(file: &Path, json: bool) -> CliResult<()> {
    let mut out = String::new();
    let header = mmkit_array::read_header(file)?;
    let file_size = std::fs::metadata(file).map_err(|e| CliError::io("stat", file, e))?.len();
    let descr = header.parse_descr();
    let dtype = descr.ok().map(|d| d.dtype);
    let data_bytes = dtype.and_then(|d| header.element_count().and_then(|n| n.checked_mul(d.size())));
    let prefix = if header.version.0 == 1 { 10 } else { 12 };
    if json {
        return print_json(&serde_json::json!({
            "file": file.display().to_string(),
            "version": format!("{}.{}", header.version.0, header.version.1),
            "descr": header.descr,
            "dtype": dtype.map(DType::name),
            "big_endian": descr.ok().map(|d| d.big_endian),
            "shape": header.shape,
            "order": if header.fortran_order { "F" } else { "C" },
            "fortran_order": header.fortran_order,
            "header_len": header.data_offset - prefix,
            "data_offset": header.data_offset,
            "data_bytes": data_bytes,
            "file_size": file_size,
        }));
    }
    // The descr is the file's text, maybe hostile: escape it for the terminal.
    let shown = escape_control(&header.descr);
    let dtype_text = match descr {
        Ok(d) => format!("{shown} ({}{})", d.dtype, if d.big_endian { ", big-endian" } else { "" }),
        Err(e) => format!("{shown} (unsupported: {})", e.reason()),
    };
    outln!(out, "file:        {}", file.display());
    outln!(out, "version:     {}.{}", header.version.0, header.version.1);
    outln!(out, "dtype:       {dtype_text}");
    outln!(out, "shape:       {}", shape_text(&header.shape));
    outln!(out, "order:       {}", if header.fortran_order { "F (column-major)" } else { "C (row-major)" });
    outln!(out, "header size: {} bytes (length field {})", header.data_offset, header.data_offset - prefix);
    outln!(out, "data offset: {}", header.data_offset);
    if let Some(bytes) = data_bytes {
        outln!(out, "data size:   {bytes} bytes");
    }
    outln!(out, "file size:   {file_size} bytes");
    emit(&out)
}

/// A parsed `mmkit array create` request.
struct CreateSpec {
    dtype: DType,
    shape: Vec<usize>,
    fill: Option<String>,
    opts: CreateOptions,
}

impl CreateSpec {
    fn parse(
        dtype: &str,
        shape: &str,
        fill: Option<&str>,
        order: &str,
        version: Option<u8>,
    ) -> CliResult<Self> {
        let dtype = DType::from_name(dtype).ok_or_else(|| {
            let names: Vec<_> = ALL_DTYPES.iter().map(|d| d.name()).collect();
            CliError::Usage(format!(
                "unknown dtype {dtype:?}; use one of {}, or a descr such as <f4",
                names.join(" ")
            ))
        })?;
        let shape = parse_shape(shape)?;
        let order = match order.to_ascii_lowercase().as_str() {
            "c" => Order::C,
            "f" | "fortran" => Order::Fortran,
            other => return Err(CliError::Usage(format!("--order must be c or f, not {other:?}"))),
        };
        let version = match version {
            None => Version::Auto,
            Some(1) => Version::V1,
            Some(2) => Version::V2,
            Some(3) => Version::V3,
            Some(v) => return Err(CliError::Usage(format!("--version must be 1, 2 or 3, not {v}"))),
        };
        let opts = CreateOptions { order, version, ..CreateOptions::default() };
        Ok(CreateSpec { dtype, shape, fill: fill.map(str::to_string), opts })
    }
}

fn parse_shape(text: &str) -> CliResult<Vec<usize>> {
    let trimmed = text.trim().trim_start_matches('(').trim_end_matches(')');
    trimmed
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>().map_err(|_| {
                CliError::Usage(format!("--shape: {s:?} is not a dimension (example: --shape 1000,3)"))
            })
        })
        .collect()
}

/// Elements the CLI can parse from `--fill`.
trait FromText: Element {
    fn from_text(text: &str) -> Option<Self>;
}

macro_rules! from_text_parse {
    ($($t:ty),*) => {
        $(impl FromText for $t {
            fn from_text(text: &str) -> Option<Self> {
                text.trim().parse().ok()
            }
        })*
    };
}

from_text_parse!(i8, i16, i32, i64, u8, u16, u32, u64, f32, f64);

impl FromText for f16 {
    fn from_text(text: &str) -> Option<Self> {
        text.trim().parse::<f64>().ok().map(f16::from_f64)
    }
}

impl FromText for Bool {
    fn from_text(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" => Some(Bool(1)),
            "0" | "false" | "no" => Some(Bool(0)),
            _ => None,
        }
    }
}

fn complex_parts(text: &str) -> Option<(f64, f64)> {
    let mut parts = text.split(',').map(|p| p.trim().parse::<f64>());
    let re = parts.next()?.ok()?;
    let im = match parts.next() {
        Some(p) => p.ok()?,
        None => 0.0,
    };
    parts.next().is_none().then_some((re, im))
}

impl FromText for Complex32 {
    fn from_text(text: &str) -> Option<Self> {
        complex_parts(text).map(|(re, im)| Complex32 { re: re as f32, im: im as f32 })
    }
}

impl FromText for Complex64 {
    fn from_text(text: &str) -> Option<Self> {
        complex_parts(text).map(|(re, im)| Complex64 { re, im })
    }
}

/// Calls `$f::<T>(args)` for the Rust type of a dtype.
macro_rules! with_type {
    ($dtype:expr, $f:ident ( $($arg:expr),* )) => {
        match $dtype {
            DType::Bool => $f::<Bool>($($arg),*),
            DType::I8 => $f::<i8>($($arg),*),
            DType::I16 => $f::<i16>($($arg),*),
            DType::I32 => $f::<i32>($($arg),*),
            DType::I64 => $f::<i64>($($arg),*),
            DType::U8 => $f::<u8>($($arg),*),
            DType::U16 => $f::<u16>($($arg),*),
            DType::U32 => $f::<u32>($($arg),*),
            DType::U64 => $f::<u64>($($arg),*),
            DType::F16 => $f::<f16>($($arg),*),
            DType::F32 => $f::<f32>($($arg),*),
            DType::F64 => $f::<f64>($($arg),*),
            DType::C64 => $f::<Complex32>($($arg),*),
            DType::C128 => $f::<Complex64>($($arg),*),
        }
    };
}

fn create(file: &Path, spec: &CreateSpec, force: bool) -> CliResult<()> {
    let mut out = String::new();
    if !force && file.exists() {
        return Err(CliError::Usage(format!("{} exists; pass --force to overwrite it", file.display())));
    }
    let data_offset = with_type!(spec.dtype, create_typed(file, spec))?;
    outln!(
        out,
        "created {}: {} {} {} order, data at offset {}",
        file.display(),
        spec.dtype,
        shape_text(&spec.shape),
        if spec.opts.order == Order::Fortran { "F" } else { "C" },
        data_offset
    );
    emit(&out)
}

/// Creates the array and returns its data offset.
fn create_typed<T: FromText>(file: &Path, spec: &CreateSpec) -> CliResult<usize> {
    let fill =
        match &spec.fill {
            Some(text) => Some(T::from_text(text).ok_or_else(|| {
                CliError::Usage(format!("--fill {text:?} is not a valid {} value", T::DTYPE))
            })?),
            None => None,
        };
    let mut a = MmapArray::<T>::create_with(file, &spec.shape, &spec.opts)?;
    if let Some(v) = fill.filter(|v| *v != T::zeroed()) {
        a.fill(v)?;
    }
    a.flush()?;
    Ok(a.data_offset())
}

/// Statistics as printed.
struct StatsReport {
    dtype: DType,
    /// The descr as the header spells it (`<f4`, `>f8`...).
    descr: String,
    shape: Vec<usize>,
    columns: Vec<mmkit_array::ColumnStats>,
    seconds: f64,
    bytes: u64,
}

fn stats(file: &Path, json: bool) -> CliResult<()> {
    let mut out = String::new();
    let header = mmkit_array::read_header(file)?;
    let src = file.display().to_string();
    let descr = header.parse_descr().map_err(|e| e.into_error(&src, &header.descr))?;
    let report = match descr.dtype {
        DType::C64 | DType::C128 => {
            let what = format!("{} ({})", descr.dtype, escape_control(&header.descr));
            return Err(CliError::Usage(format!(
                "{src}: stats of complex arrays ({what}) are not supported"
            )));
        }
        DType::Bool => stats_typed::<Bool>(file, &header),
        DType::I8 => stats_typed::<i8>(file, &header),
        DType::I16 => stats_typed::<i16>(file, &header),
        DType::I32 => stats_typed::<i32>(file, &header),
        DType::I64 => stats_typed::<i64>(file, &header),
        DType::U8 => stats_typed::<u8>(file, &header),
        DType::U16 => stats_typed::<u16>(file, &header),
        DType::U32 => stats_typed::<u32>(file, &header),
        DType::U64 => stats_typed::<u64>(file, &header),
        DType::F16 => stats_typed::<f16>(file, &header),
        DType::F32 => stats_typed::<f32>(file, &header),
        DType::F64 => stats_typed::<f64>(file, &header),
    }?;
    if json {
        let columns: Vec<_> = report
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                serde_json::json!({
                    "column": i, "count": c.count, "min": c.min, "max": c.max, "mean": c.mean(), "sum": c.sum,
                })
            })
            .collect();
        return print_json(&serde_json::json!({
            "file": src,
            "dtype": report.dtype.name(),
            "descr": report.descr,
            "shape": report.shape,
            "columns": columns,
            "seconds": report.seconds,
        }));
    }
    outln!(
        out,
        "{src}: {} ({}) {}, {:.1} MB scanned in {:.3} s",
        report.dtype,
        escape_control(&report.descr),
        shape_text(&report.shape),
        report.bytes as f64 / 1e6,
        report.seconds
    );
    outln!(out, "{:>8} {:>12} {:>14} {:>14} {:>14} {:>16}", "column", "count", "min", "max", "mean", "sum");
    for (i, c) in report.columns.iter().enumerate() {
        let label = if report.shape.len() == 1 { "all".to_string() } else { i.to_string() };
        outln!(
            out,
            "{label:>8} {:>12} {:>14} {:>14} {:>14} {:>16}",
            c.count,
            num(c.min),
            num(c.max),
            num(c.mean()),
            num(c.sum)
        );
    }
    emit(&out)
}

/// Compact number formatting: integers exactly, others to 6 significant digits.
fn num(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else if v.is_finite() && (v.abs() >= 1e9 || (v != 0.0 && v.abs() < 1e-4)) {
        format!("{v:.6e}")
    } else if v.is_finite() {
        format!("{v:.6}")
    } else {
        v.to_string()
    }
}

fn stats_typed<T: ToF64>(file: &Path, header: &Header) -> CliResult<StatsReport> {
    // Scans copy, so data at an odd offset (old or foreign writers) is fine.
    let a: MmapArray<T> = OpenOptions::new().allow_unaligned(true).open(file)?;
    let bytes = (a.len() * size_of::<T>()) as u64;
    let bar = (bytes >= PROGRESS_MIN && std::io::stderr().is_terminal()).then(|| {
        let style =
            indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        indicatif::ProgressBar::new(bytes).with_style(style)
    });
    let start = Instant::now();
    let columns = a.column_stats_with(&mut |n| {
        if let Some(bar) = &bar {
            bar.inc(n);
        }
    })?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(StatsReport {
        dtype: T::DTYPE,
        descr: header.descr.clone(),
        shape: header.shape.clone(),
        columns,
        seconds: start.elapsed().as_secs_f64(),
        bytes,
    })
}

/// The array part of `mmkit demo`, run in `dir`: create, write, reopen,
/// statistics, append; prints what it did and measured.
pub fn demo(dir: &Path) -> CliResult<()> {
    let mut out = String::new();
    outln!(out, "\n== arrays (.npy, numpy-compatible)");
    let path = dir.join("points.npy");
    let rows = 1 << 20;
    let t = Instant::now();
    let mut a = MmapArray::<f32>::create(&path, &[rows, 4])?;
    let mut buf = vec![0f32; 4 * 4096];
    for chunk in 0..rows / 4096 {
        for (k, v) in buf.iter_mut().enumerate() {
            let r = chunk * 4096 + k / 4;
            *v = (r % 1000) as f32 + (k % 4) as f32 * 0.25;
        }
        a.write_storage(chunk * 4096 * 4, &buf)?;
    }
    drop(a);
    let created = t.elapsed().as_secs_f64();
    outln!(
        out,
        "created {} as float32 {} and wrote it in {:.0} ms",
        path.display(),
        shape_text(&[rows, 4]),
        created * 1e3
    );
    let t = Instant::now();
    let a = MmapArray::<f32>::open(&path, Mode::ReadOnly)?;
    let stats = a.column_stats()?;
    let secs = t.elapsed().as_secs_f64();
    let mb = (rows * 16) as f64 / 1e6;
    outln!(
        out,
        "reopened read-only; column stats over {mb:.0} MB in {:.1} ms ({:.2} GB/s)",
        secs * 1e3,
        mb / 1e3 / secs
    );
    for (i, c) in stats.iter().enumerate() {
        outln!(out, "  column {i}: min {} max {} mean {:.3}", num(c.min), num(c.max), c.mean());
    }
    let idx: Vec<usize> = (0..100_000).map(|i: usize| i.wrapping_mul(2_654_435_761) % rows).collect();
    let mut rows_out = vec![0f32; idx.len() * 4];
    let t = Instant::now();
    a.gather_rows(&idx, &mut rows_out)?;
    outln!(out, "gathered 100000 random rows in {:.2} ms", t.elapsed().as_secs_f64() * 1e3);
    let log = dir.join("log.npy");
    let t = Instant::now();
    let mut app = Appendable::<f64>::create(&log, &[2])?;
    for i in 0..10_000 {
        app.append(&[i as f64, -(i as f64)])?;
    }
    let n = app.rows();
    app.finish()?;
    outln!(
        out,
        "appended {n} rows one at a time in {:.1} ms; the header's shape is now {}",
        t.elapsed().as_secs_f64() * 1e3,
        shape_text(&mmkit_array::read_header(&log)?.shape)
    );
    emit(&out)
}
