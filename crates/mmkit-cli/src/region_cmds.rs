//! `mmkit resident`, `mmkit cp`, `mmkit shm`.

use std::collections::HashSet;
use std::ffi::CStr;
use std::io::{IsTerminal, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Instant, UNIX_EPOCH};

use mmkit_region::residency::{self, Residency};
use mmkit_region::shm::{Shm, ShmInfo};
use rustix::fs::{AtFlags, FileType, Mode as FsMode, OFlags};
use serde::Serialize;

use mmkit_cli::copy::{self, CopyOptions, Method};

use crate::{CliError, CliResult};

/// Width of the `--map` picture, as vmtouch draws it.
const CHART_WIDTH: usize = 60;

// ---------------------------------------------------------------- resident

/// Arguments of `mmkit resident`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Counts equal vmtouch's: each file is opened read-only and its pages are
looked up in the page cache (cachestat, or mincore on a mapping). For files
you neither own nor could open for writing, Linux reports every page as
resident (since 5.2); vmtouch shows the same.

Directories are walked; symbolic links are not followed (a warning is
printed) unless --follow-symlinks; each file (inode) is counted once.
Unreadable paths are reported on stderr and the walk goes on; the exit
status is then 1.

Examples:
  mmkit resident /var/lib/db            # per-file and total residency
  mmkit resident --map big.bin          # picture of resident pages
  mmkit resident --touch big.bin        # load it into the cache
  mmkit resident --evict --json logs/   # drop from the cache, JSON report")]
pub struct ResidentArgs {
    /// Files or directories.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Read the pages that are not resident, so that all are (vmtouch -t).
    #[arg(long, short = 't', conflicts_with = "evict")]
    pub touch: bool,
    /// Drop the files' clean pages from the cache (vmtouch -e).
    #[arg(long, short = 'e')]
    pub evict: bool,
    /// Draw each file's resident pages ('O' all, 'o' some, ' ' none), as
    /// vmtouch -v does; with --json, list the resident page ranges.
    #[arg(long, short = 'm')]
    pub map: bool,
    /// Print only the totals, not a line per file.
    #[arg(long, short = 's')]
    pub summary: bool,
    /// Follow symbolic links (vmtouch -f).
    #[arg(long, short = 'f')]
    pub follow_symlinks: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Count,
    Touch,
    Evict,
}

/// One file's result.
#[derive(Debug, Serialize)]
struct FileReport {
    path: String,
    size: u64,
    total_pages: u64,
    resident_pages: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    loaded_pages: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resident_ranges: Option<Vec<(u64, u64)>>,
    #[serde(skip)]
    chart: Option<String>,
}

/// Totals over all paths, in vmtouch's terms.
#[derive(Debug, Default, Serialize)]
struct Totals {
    files: u64,
    directories: u64,
    page_size: usize,
    total_pages: u64,
    resident_pages: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    loaded_pages: Option<u64>,
    errors: u64,
    elapsed_seconds: f64,
}

#[derive(Debug, Serialize)]
struct PathError {
    path: String,
    error: String,
}

/// The walk's state.
struct Walker {
    action: Action,
    with_map: bool,
    want_chart: bool,
    follow: bool,
    seen: HashSet<(u64, u64)>,
    totals: Totals,
    files: Vec<FileReport>,
    errors: Vec<PathError>,
    /// Only one path was named: its own failure is the command's one-line error.
    sole: bool,
    out: std::io::BufWriter<std::io::StdoutLock<'static>>,
    print_lines: bool,
    /// A spinner for --touch and --evict on a terminal (they can be long).
    spinner: Option<indicatif::ProgressBar>,
    json: bool,
}

/// Runs `mmkit resident`.
pub fn resident(args: ResidentArgs) -> CliResult<()> {
    let action = match (args.touch, args.evict) {
        (true, _) => Action::Touch,
        (_, true) => Action::Evict,
        _ => Action::Count,
    };
    let start = Instant::now();
    let print_files = !args.summary;
    let mut walker = Walker {
        action,
        with_map: args.map,
        want_chart: args.map,
        follow: args.follow_symlinks,
        seen: HashSet::new(),
        totals: Totals { page_size: mmkit_region::page_size(), ..Totals::default() },
        files: Vec::new(),
        errors: Vec::new(),
        sole: args.paths.len() == 1,
        out: std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock()),
        print_lines: !args.json && print_files,
        // Not when per-file lines go to the same terminal: they would tangle.
        spinner: (action != Action::Count
            && std::io::stderr().is_terminal()
            && !(!args.json && print_files && std::io::stdout().is_terminal()))
        .then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            bar
        }),
        json: args.json,
    };
    for path in &args.paths {
        walker.top(path)?;
    }
    if let Some(bar) = walker.spinner.take() {
        bar.finish_and_clear();
    }
    let mut totals = std::mem::take(&mut walker.totals);
    totals.elapsed_seconds = start.elapsed().as_secs_f64();
    totals.errors = walker.errors.len() as u64;
    if action == Action::Touch {
        totals.loaded_pages = Some(walker.files.iter().filter_map(|f| f.loaded_pages).sum());
    }
    let out = &mut walker.out;
    if args.json {
        let files = if print_files { std::mem::take(&mut walker.files) } else { Vec::new() };
        let doc = serde_json::json!({
            "action": match action { Action::Count => "count", Action::Touch => "touch", Action::Evict => "evict" },
            "files": files,
            "totals": totals,
            "errors": walker.errors,
        });
        serde_json::to_writer_pretty(&mut *out, &doc)?;
        writeln!(out).map_err(CliError::Output)?;
    } else {
        write_totals(out, action, &totals).map_err(CliError::Output)?;
    }
    out.flush().map_err(CliError::Output)?;
    match walker.errors.len() {
        0 => Ok(()),
        n => Err(CliError::Other(format!("resident: {n} path(s) could not be read (reported above)"))),
    }
}

fn write_totals(out: &mut dyn Write, action: Action, t: &Totals) -> std::io::Result<()> {
    let page = t.page_size as u64;
    writeln!(out, "           Files: {}", t.files)?;
    writeln!(out, "     Directories: {}", t.directories)?;
    match action {
        Action::Touch => writeln!(
            out,
            "   Touched Pages: {} ({}), {} read from storage",
            t.total_pages,
            human(t.total_pages * page),
            t.loaded_pages.unwrap_or(0)
        )?,
        Action::Evict => {
            writeln!(out, "   Evicted Pages: {} ({})", t.total_pages, human(t.total_pages * page))?
        }
        Action::Count => writeln!(
            out,
            "  Resident Pages: {}/{}  {}/{}  {}",
            t.resident_pages,
            t.total_pages,
            human(t.resident_pages * page),
            human(t.total_pages * page),
            percent(t.resident_pages, t.total_pages)
        )?,
    }
    writeln!(out, "         Elapsed: {:.5} seconds", t.elapsed_seconds)
}

fn percent(part: u64, whole: u64) -> String {
    if whole == 0 { String::new() } else { format!("{:.3}%", 100.0 * part as f64 / whole as f64) }
}

/// Sizes as vmtouch prints them (binary units).
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["", "K", "M", "G", "T"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes}") } else { format!("{value:.3}{}", UNITS[unit]) }
}

fn open_flags() -> OFlags {
    OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOATIME
}

/// `openat` read-only as vmtouch opens files; retries without `O_NOATIME`
/// (only the owner may use it).
fn open_at(dir: impl AsFd, name: &CStr, extra: OFlags) -> rustix::io::Result<OwnedFd> {
    let dir = dir.as_fd();
    match rustix::fs::openat(dir, name, open_flags() | extra, FsMode::empty()) {
        Err(rustix::io::Errno::PERM) => {
            rustix::fs::openat(dir, name, (open_flags() - OFlags::NOATIME) | extra, FsMode::empty())
        }
        other => other,
    }
}

impl Walker {
    fn warn(&self, text: &str) {
        if !self.json {
            eprintln!("mmkit: warning: {text}");
        }
    }

    fn fail(&mut self, path: &Path, error: impl std::fmt::Display) {
        let error = error.to_string();
        if !self.json {
            eprintln!("mmkit: {}: {error}", path.display());
        }
        self.errors.push(PathError { path: path.display().to_string(), error });
    }

    /// A path named on the command line.
    fn top(&mut self, path: &Path) -> CliResult<()> {
        let real = if self.follow {
            match std::fs::canonicalize(path) {
                Ok(p) => p,
                Err(e) if self.sole => return Err(CliError::io("resident", path, e)),
                Err(e) => {
                    self.fail(path, e);
                    return Ok(());
                }
            }
        } else {
            path.to_path_buf()
        };
        match rustix::fs::statat(rustix::fs::CWD, &real, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => self.top_resolved(&real, FileType::from_raw_mode(st.st_mode), path.to_path_buf()),
            Err(e) if self.sole => Err(CliError::io("resident", path, e.into())),
            Err(e) => {
                self.fail(path, std::io::Error::from(e));
                Ok(())
            }
        }
    }

    /// One directory entry, of type `kind` (from `d_type` or a stat).
    fn entry(&mut self, dir: impl AsFd, name: &CStr, kind: FileType, path: PathBuf) -> CliResult<()> {
        let dir = dir.as_fd();
        match kind {
            FileType::Directory => self.directory(dir, name, path),
            FileType::RegularFile | FileType::BlockDevice => self.file(dir, name, path),
            // Resolve the link fully and go on from its target.
            FileType::Symlink if self.follow => match std::fs::canonicalize(&path) {
                Ok(real) => match rustix::fs::statat(rustix::fs::CWD, &real, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) => self.top_resolved(&real, FileType::from_raw_mode(st.st_mode), path),
                    Err(e) => {
                        self.fail(&path, std::io::Error::from(e));
                        Ok(())
                    }
                },
                Err(e) => {
                    self.fail(&path, e);
                    Ok(())
                }
            },
            FileType::Symlink => {
                self.warn(&format!("not following symbolic link {}", path.display()));
                Ok(())
            }
            FileType::Unknown => match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => self.entry(dir, name, FileType::from_raw_mode(st.st_mode), path),
                Err(e) => {
                    self.fail(&path, std::io::Error::from(e));
                    Ok(())
                }
            },
            _ => {
                self.warn(&format!("skipping non-regular file: {}", path.display()));
                Ok(())
            }
        }
    }

    fn top_resolved(&mut self, real: &Path, kind: FileType, shown: PathBuf) -> CliResult<()> {
        let (dir, name) = split(real);
        let Ok(name) = std::ffi::CString::new(name.as_os_str().as_encoded_bytes()) else {
            self.fail(&shown, "path contains a NUL byte");
            return Ok(());
        };
        match rustix::fs::open(&dir, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, FsMode::empty()) {
            Ok(fd) => self.entry(fd.as_fd(), &name, kind, shown),
            Err(e) => {
                self.fail(&dir, std::io::Error::from(e));
                Ok(())
            }
        }
    }

    fn first_visit(&mut self, stat: &rustix::fs::Stat) -> bool {
        self.seen.insert((stat.st_dev, stat.st_ino))
    }

    /// Opens `name` under `parent`, or `None` if that fails (recorded) or the
    /// inode was already visited (hard links, bind mounts, followed links).
    fn open_unvisited(
        &mut self,
        parent: impl AsFd,
        name: &CStr,
        extra: OFlags,
        path: &Path,
    ) -> Option<OwnedFd> {
        let opened = open_at(parent, name, extra).and_then(|fd| rustix::fs::fstat(&fd).map(|st| (fd, st)));
        match opened {
            Ok((fd, st)) => self.first_visit(&st).then_some(fd),
            Err(e) => {
                self.fail(path, std::io::Error::from(e));
                None
            }
        }
    }

    fn directory(&mut self, parent: impl AsFd, name: &CStr, path: PathBuf) -> CliResult<()> {
        let Some(fd) = self.open_unvisited(parent, name, OFlags::DIRECTORY, &path) else {
            return Ok(());
        };
        self.totals.directories += 1;
        let dir_fd = match rustix::io::fcntl_dupfd_cloexec(&fd, 0) {
            Ok(d) => d,
            Err(e) => {
                self.fail(&path, std::io::Error::from(e));
                return Ok(());
            }
        };
        let entries = match rustix::fs::Dir::new(dir_fd) {
            Ok(d) => d,
            Err(e) => {
                self.fail(&path, std::io::Error::from(e));
                return Ok(());
            }
        };
        for entry in entries {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    self.fail(&path, std::io::Error::from(e));
                    break;
                }
            };
            let child = entry.file_name();
            if child == c"." || child == c".." {
                continue;
            }
            let child_path =
                path.join(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(child.to_bytes()));
            self.entry(&fd, child, entry.file_type(), child_path)?;
        }
        Ok(())
    }

    fn file(&mut self, dir: impl AsFd, name: &CStr, path: PathBuf) -> CliResult<()> {
        let Some(fd) = self.open_unvisited(dir, name, OFlags::empty(), &path) else {
            return Ok(());
        };
        self.totals.files += 1;
        let result = match self.action {
            Action::Count => residency::of_fd(&fd, Some(&path), self.with_map).map(|r| (r, None)),
            // Report what is resident after the touch, measured, not assumed.
            Action::Touch => residency::touch_fd(&fd, Some(&path)).and_then(|before| {
                let loaded = before.total_pages.saturating_sub(before.resident_pages);
                residency::of_fd(&fd, Some(&path), self.with_map).map(|after| (after, Some(loaded)))
            }),
            Action::Evict => residency::evict_fd(&fd, Some(&path)).and_then(|_| {
                // vmtouch -e reports the pages it asked to evict; we report
                // what is still resident after the eviction as well.
                residency::of_fd(&fd, Some(&path), self.with_map).map(|r| (r, None))
            }),
        };
        match result {
            Ok((res, loaded)) => self.record(path, res, loaded),
            Err(e) => {
                self.fail(&path, e);
                Ok(())
            }
        }
    }

    fn record(&mut self, path: PathBuf, res: Residency, loaded: Option<u64>) -> CliResult<()> {
        self.totals.total_pages += res.total_pages;
        self.totals.resident_pages += res.resident_pages;
        if let Some(bar) = &self.spinner {
            bar.set_message(format!(
                "{} files, {} done",
                self.totals.files,
                human(self.totals.total_pages * self.totals.page_size as u64)
            ));
        }
        let map = if self.want_chart { res.map() } else { None };
        let report = FileReport {
            path: path.display().to_string(),
            size: res.size,
            total_pages: res.total_pages,
            resident_pages: res.resident_pages,
            loaded_pages: loaded,
            resident_ranges: map
                .filter(|_| self.json)
                .map(|m| m.runs().into_iter().filter(|r| r.2).map(|(first, n, _)| (first, n)).collect()),
            chart: map.map(|m| m.chart(CHART_WIDTH)),
        };
        if self.print_lines {
            write_file_line(&mut self.out, &report).map_err(CliError::Output)?;
        } else if self.json {
            self.files.push(report);
        }
        Ok(())
    }
}

fn write_file_line(out: &mut dyn Write, f: &FileReport) -> std::io::Result<()> {
    match &f.chart {
        Some(chart) => {
            writeln!(out, "{}", f.path)?;
            writeln!(out, "[{chart}] {}/{}", f.resident_pages, f.total_pages)
        }
        None => writeln!(
            out,
            "{:>10}/{:<10} {:>8}  {}",
            f.resident_pages,
            f.total_pages,
            percent(f.resident_pages, f.total_pages),
            f.path
        ),
    }
}

/// Splits a path into the directory to open and the last component
/// (`.` and the whole path for a bare name; `/` itself is its own parent).
fn split(path: &Path) -> (PathBuf, PathBuf) {
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => {
            let parent = if parent.as_os_str().is_empty() { Path::new(".") } else { parent };
            (parent.to_path_buf(), PathBuf::from(name))
        }
        // "/", "..", "foo/..": open the path itself relative to itself.
        _ => (path.to_path_buf(), PathBuf::from(".")),
    }
}

// ---------------------------------------------------------------- cp

/// Arguments of `mmkit cp`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
The copy is atomic: the data goes to a temporary file (O_EXCL) in DST's
directory, gets SRC's permission bits (less set-user/group-ID, as cp
does), and is renamed onto DST when
complete; on any error, and on Ctrl-C, SIGTERM or SIGHUP, the temporary
file is removed and DST is untouched.
Holes in a sparse SRC stay holes. Without --fsync the new file is as
durable as after coreutils cp (in the page cache; ext4 flushes it on the
rename); with --fsync it is on disk before the rename and the directory
entry after it.

A progress bar is shown on stderr for files of 256 MiB or more when stderr
is a terminal.

Examples:
  mmkit cp big.bin /data/big.bin
  mmkit cp --method mmap --fsync big.bin backup/
  mmkit cp --json a.bin b.bin")]
pub struct CpArgs {
    /// Source file.
    pub src: PathBuf,
    /// Destination file, or a directory to copy into.
    pub dst: PathBuf,
    /// How to move the bytes (copy-file-range: never slower than coreutils cp here).
    #[arg(long, value_enum, default_value_t = Method::CopyFileRange)]
    pub method: Method,
    /// Make the copy durable before reporting success.
    #[arg(long)]
    pub fsync: bool,
    /// Print a JSON report of what was copied.
    #[arg(long)]
    pub json: bool,
    /// Print what was copied and how fast.
    #[arg(long, short = 'v')]
    pub verbose: bool,
}

/// Files at least this large get a progress bar (on a terminal).
const PROGRESS_MIN: u64 = 256 << 20;

/// Runs `mmkit cp`.
pub fn cp(args: CpArgs) -> CliResult<()> {
    // Ctrl-C (or SIGTERM, SIGHUP) must not leave the temporary file behind.
    copy::remove_temp_file_on_signal()
        .map_err(|e| CliError::Other(format!("cp: installing signal handlers: {e}")))?;
    let bar = std::cell::RefCell::new(None::<indicatif::ProgressBar>);
    let start = Instant::now();
    let report = copy::copy_file(
        &args.src,
        &args.dst,
        CopyOptions { method: args.method, fsync: args.fsync },
        &mut |size| {
            if size >= PROGRESS_MIN && std::io::stderr().is_terminal() {
                let style = indicatif::ProgressStyle::with_template(
                    "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
                *bar.borrow_mut() = Some(indicatif::ProgressBar::new(size).with_style(style));
            }
        },
        &mut |n| {
            if let Some(b) = bar.borrow().as_ref() {
                b.inc(n);
            }
        },
    );
    if let Some(b) = bar.borrow_mut().take() {
        b.finish_and_clear();
    }
    let report = report?;
    let seconds = start.elapsed().as_secs_f64();
    if args.json {
        let doc = serde_json::json!({
            "src": args.src.display().to_string(),
            "dst": report.dst.display().to_string(),
            "bytes": report.bytes,
            "copied_bytes": report.copied,
            // The spelling of --method, e.g. "copy-file-range".
            "method": clap::ValueEnum::to_possible_value(&args.method).map(|v| v.get_name().to_string()),
            "fsync": args.fsync,
            "seconds": seconds,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else if args.verbose {
        println!(
            "copied {} -> {}: {} bytes in {:.3} s ({:.2} GB/s)",
            args.src.display(),
            report.dst.display(),
            report.bytes,
            seconds,
            report.bytes as f64 / seconds.max(1e-9) / 1e9
        );
    }
    Ok(())
}

// ---------------------------------------------------------------- shm

/// `mmkit shm ...`.
#[derive(Debug, clap::Subcommand)]
pub enum ShmCommand {
    /// Create a segment (an error if the name exists).
    #[command(
        after_help = "Examples:\n  mmkit shm create frames --size 64M\n  mmkit shm create /psm_1234 --size 4096 --mode 644 --json"
    )]
    Create {
        /// Segment name, with or without a leading '/'.
        name: String,
        /// Size in bytes, at least 1; suffixes K, M, G, T (powers of 1024).
        #[arg(long, value_parser = parse_size)]
        size: u64,
        /// Permission bits in octal.
        #[arg(long, default_value = "600", value_parser = parse_mode)]
        mode: u32,
        /// Print what was created as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List segments under /dev/shm.
    #[command(after_help = "Examples:\n  mmkit shm list\n  mmkit shm list --json")]
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one segment: size, mode, owner, modification time, residency.
    #[command(after_help = "Examples:\n  mmkit shm inspect frames\n  mmkit shm inspect --json /psm_1234")]
    Inspect {
        /// Segment name.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a segment's name (mappings stay valid until unmapped).
    #[command(after_help = "Example:\n  mmkit shm rm frames")]
    Rm {
        /// Segment names.
        #[arg(required = true)]
        names: Vec<String>,
    },
}

/// Parses `4096`, `64K`, `1M`, `1G`, `2T` (also `KiB`, `k`...).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    if digits.is_empty() {
        return Err(format!("{text:?} is not a size (examples: 4096, 64K, 1M, 1G)"));
    }
    let number: u64 = digits.parse().map_err(|_| format!("{text:?} is too large"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (use K, M, G or T)")),
    };
    number.checked_mul(1 << shift).ok_or_else(|| format!("{text:?} is too large"))
}

fn parse_mode(text: &str) -> Result<u32, String> {
    u32::from_str_radix(text.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("{text:?} is not an octal mode such as 600"))
}

#[derive(Debug, Serialize)]
struct ShmJson {
    name: String,
    path: String,
    size: u64,
    mode: String,
    uid: u32,
    modified_unix: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    resident_pages: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    total_pages: Option<u64>,
}

fn shm_json(info: &ShmInfo) -> ShmJson {
    ShmJson {
        name: info.name.clone(),
        path: format!("{}/{}", mmkit_region::shm::SHM_DIR, info.name),
        size: info.size,
        mode: format!("{:o}", info.mode & 0o7777),
        uid: info.uid,
        modified_unix: info.modified.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0),
        resident_pages: None,
        total_pages: None,
    }
}

/// Runs `mmkit shm`.
pub fn shm(cmd: ShmCommand) -> CliResult<()> {
    match cmd {
        ShmCommand::Create { name, size, mode, json } => {
            let seg = Shm::create_with_mode(&name, size, mode)?;
            if json {
                let doc = serde_json::json!({
                    "name": seg.name(),
                    "path": seg.path(),
                    "size": seg.len(),
                    "mode": format!("{mode:o}"),
                });
                println!("{}", serde_json::to_string_pretty(&doc)?);
            } else {
                println!("created {} ({} bytes, mode {:o})", seg.path().display(), seg.len(), mode);
            }
            Ok(())
        }
        ShmCommand::List { json } => {
            let list: Vec<ShmJson> = Shm::list()?.iter().map(shm_json).collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!("{:<32} {:>14} {:>6} {:>6}", "NAME", "SIZE", "MODE", "UID");
                for s in &list {
                    println!("{:<32} {:>14} {:>6} {:>6}", s.name, s.size, s.mode, s.uid);
                }
            }
            Ok(())
        }
        ShmCommand::Inspect { name, json } => {
            let info = Shm::info(&name)?;
            let mut doc = shm_json(&info);
            if let Ok(res) = residency::of_path(&doc.path, false) {
                doc.resident_pages = Some(res.resident_pages);
                doc.total_pages = Some(res.total_pages);
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&doc)?);
            } else {
                println!("name:      {}", doc.name);
                println!("path:      {}", doc.path);
                println!("size:      {} ({})", doc.size, human(doc.size));
                println!("mode:      {}", doc.mode);
                println!("uid:       {}", doc.uid);
                println!("modified:  {:.3} (unix time)", doc.modified_unix);
                if let (Some(r), Some(t)) = (doc.resident_pages, doc.total_pages) {
                    println!("resident:  {r}/{t} pages");
                }
            }
            Ok(())
        }
        ShmCommand::Rm { names } => {
            for name in &names {
                Shm::unlink(name)?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert!(parse_size("").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("99999999999999999999").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn modes_parse() {
        assert_eq!(parse_mode("600"), Ok(0o600));
        assert_eq!(parse_mode("0o644"), Ok(0o644));
        assert!(parse_mode("999").is_err());
        assert!(parse_mode("17777").is_err());
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(100), "100");
        assert_eq!(human(4096), "4.000K");
        assert_eq!(human(3 << 30), "3.000G");
    }
}
