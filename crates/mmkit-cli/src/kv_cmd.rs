//! `mmkit kv ...`: the key-value store from the shell.
//!
//! Keys and values on the command line are taken byte for byte. `dump`,
//! `load`, `scan` and `watch` print one `KEY<TAB>VALUE` line per entry with
//! one escaping (see [`escape`]): `\\` for a backslash, `\t`, `\n`, `\r`,
//! and `\xHH` for every byte that is not part of valid UTF-8.

pub(crate) mod demo;

use std::ffi::OsString;
use std::io::{self, BufRead, BufWriter, IsTerminal, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mmkit_kv::{Db, Durability, Error as KvError};

use crate::{CliError, CliResult};

/// `mmkit kv ...`.
#[derive(Debug, clap::Subcommand)]
pub enum KvCommand {
    /// Create a database (and its `-lock` file).
    #[command(after_help = "Example:\n  mmkit kv create /tmp/app.kv")]
    Create {
        /// Database file (must not exist).
        db: PathBuf,
        /// Print what was created as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Set a key (one commit, durable when it returns).
    #[command(
        after_help = "Example:\n  mmkit kv put /tmp/app.kv user:1 ada\n  mmkit kv put /tmp/app.kv --table cfg color blue"
    )]
    Put {
        /// Database file.
        db: PathBuf,
        /// The key, byte for byte.
        key: OsString,
        /// The value, byte for byte.
        value: OsString,
        #[command(flatten)]
        table: TableArg,
    },
    /// Print a key's value and a newline; a missing key exits 1.
    #[command(after_help = "Example:\n  mmkit kv get /tmp/app.kv user:1")]
    Get {
        /// Database file.
        db: PathBuf,
        /// The key.
        key: OsString,
        #[command(flatten)]
        table: TableArg,
    },
    /// Delete a key; a missing key exits 1.
    #[command(after_help = "Example:\n  mmkit kv del /tmp/app.kv user:1")]
    Del {
        /// Database file.
        db: PathBuf,
        /// The key.
        key: OsString,
        #[command(flatten)]
        table: TableArg,
    },
    /// Print entries in key order as `KEY<TAB>VALUE` lines (escaped).
    #[command(after_help = "Example:\n  mmkit kv scan /tmp/app.kv --prefix user: --limit 10\n  \
                            mmkit kv scan /tmp/app.kv --from a --to m --reverse --json")]
    Scan {
        /// Database file.
        db: PathBuf,
        /// Only keys starting with this.
        #[arg(long, value_name = "P")]
        prefix: Option<OsString>,
        /// Start at this key (inclusive).
        #[arg(long, value_name = "K")]
        from: Option<OsString>,
        /// Stop before this key (exclusive).
        #[arg(long, value_name = "K")]
        to: Option<OsString>,
        /// Last key first.
        #[arg(long)]
        reverse: bool,
        /// At most this many entries.
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// One JSON object per line: `{"key": ..., "value": ...}`.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        table: TableArg,
    },
    /// Tables, entries, pages, free pages, file size, oldest snapshot.
    #[command(after_help = "Example:\n  mmkit kv stat /tmp/app.kv --json")]
    Stat {
        /// Database file.
        db: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Verify the whole file; exit non-zero on corruption.
    #[command(after_help = "Example:\n  mmkit kv check /tmp/app.kv && echo clean")]
    Check {
        /// Database file.
        db: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write a compacted copy while others keep reading and writing.
    #[command(after_help = "Example:\n  mmkit kv compact /tmp/app.kv /tmp/app-compact.kv")]
    Compact {
        /// Database file.
        db: PathBuf,
        /// Where to write the copy (must not exist).
        dst: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print changes as they are committed (`put`/`del` lines, escaped).
    #[command(after_help = "Example:\n  mmkit kv watch /tmp/app.kv --prefix user:\n  \
                            mmkit kv watch /tmp/app.kv --key color --table cfg --json")]
    Watch {
        /// Database file.
        db: PathBuf,
        /// Watch keys starting with this (default: every key).
        #[arg(long, value_name = "P", conflicts_with = "key")]
        prefix: Option<OsString>,
        /// Watch this one key.
        #[arg(long, value_name = "K")]
        key: Option<OsString>,
        /// Stop after this many changes.
        #[arg(long, value_name = "N")]
        count: Option<usize>,
        /// Stop after this many seconds without a change.
        #[arg(long, value_name = "SECS")]
        timeout: Option<f64>,
        /// One JSON object per change.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        table: TableArg,
    },
    /// Read `KEY<TAB>VALUE` lines (escaped) from stdin; N lines a commit,
    /// printing the count committed so far after each.
    #[command(after_help = "Example:\n  mmkit kv dump /tmp/a.kv | mmkit kv load /tmp/b.kv --batch 10000")]
    Load {
        /// Database file (created if missing).
        db: PathBuf,
        /// Lines per transaction.
        #[arg(long, default_value_t = 1000, value_name = "N")]
        batch: usize,
        /// When a commit is acknowledged.
        #[arg(long, value_enum, default_value = "immediate")]
        durability: DurabilityArg,
        #[command(flatten)]
        table: TableArg,
    },
    /// Print every entry as a `KEY<TAB>VALUE` line (escaped), the input of
    /// `load`.
    #[command(after_help = "Example:\n  mmkit kv dump /tmp/app.kv > backup.tsv")]
    Dump {
        /// Database file.
        db: PathBuf,
        #[command(flatten)]
        table: TableArg,
    },
    /// A writer process of `mmkit demo`.
    #[command(hide = true)]
    DemoWriter(demo::WriterArgs),
    /// A reader process of `mmkit demo`.
    #[command(hide = true)]
    DemoReader(demo::ReaderArgs),
}

/// The `--table` option every command takes.
#[derive(Debug, clap::Args)]
pub struct TableArg {
    /// Table to use.
    #[arg(long, default_value = mmkit_kv::DEFAULT_TABLE, value_name = "T")]
    table: String,
}

/// `--durability`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum DurabilityArg {
    /// One fdatasync per commit.
    Immediate,
    /// No sync: survives a crash of the process, not a power loss.
    Eventual,
}

/// Runs a kv command.
pub fn run(cmd: KvCommand) -> CliResult<()> {
    match cmd {
        KvCommand::Create { db, json } => create(&db, json),
        KvCommand::Put { db, key, value, table } => put(&db, &table.table, key.as_bytes(), value.as_bytes()),
        KvCommand::Get { db, key, table } => get(&db, &table.table, key.as_bytes()),
        KvCommand::Del { db, key, table } => del(&db, &table.table, key.as_bytes()),
        KvCommand::Scan { db, prefix, from, to, reverse, limit, json, table } => {
            let range = Range { prefix, from, to, reverse, limit: limit.unwrap_or(usize::MAX) };
            scan(&db, &table.table, &range, json)
        }
        KvCommand::Stat { db, json } => stat(&db, json),
        KvCommand::Check { db, json } => check(&db, json),
        KvCommand::Compact { db, dst, json } => compact(&db, &dst, json),
        KvCommand::Watch { db, prefix, key, count, timeout, json, table } => {
            let (k, is_prefix) = match (key, prefix) {
                (Some(k), _) => (k, false),
                (None, p) => (p.unwrap_or_default(), true),
            };
            watch(&db, &table.table, k.as_bytes(), is_prefix, count, timeout, json)
        }
        KvCommand::Load { db, batch, durability, table } => load(&db, &table.table, batch, durability),
        KvCommand::Dump { db, table } => dump(&db, &table.table),
        KvCommand::DemoWriter(args) => demo::writer(args),
        KvCommand::DemoReader(args) => demo::reader(args),
    }
}

/// Opens an existing database.
pub(crate) fn open(path: &Path, durability: Durability) -> CliResult<Db> {
    Ok(Db::options().durability(durability).open(path)?)
}

/// Opens an existing database for reading: read-write when allowed (so a
/// first open after a reboot can recover), else read-only.
fn open_read(path: &Path) -> CliResult<Db> {
    match Db::options().open(path) {
        Err(KvError::Region { source, .. }) if source.io_kind() == Some(io::ErrorKind::PermissionDenied) => {
            Ok(Db::options().read_only(true).open(path)?)
        }
        other => Ok(other?),
    }
}

fn create(path: &Path, json: bool) -> CliResult<()> {
    if path.exists() {
        return Err(KvError::AlreadyExists { path: path.into() }.into());
    }
    let db = Db::options().create(true).open(path)?;
    if json {
        let v = serde_json::json!({ "path": path, "page_size": mmkit_kv::PAGE, "txnid": db.last_commit() });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("created {}", path.display());
    }
    Ok(())
}

fn put(path: &Path, table: &str, key: &[u8], value: &[u8]) -> CliResult<()> {
    let db = open(path, Durability::Immediate)?;
    let mut w = db.write()?;
    w.table(table)?.put(key, value)?;
    w.commit()?;
    Ok(())
}

fn get(path: &Path, table: &str, key: &[u8]) -> CliResult<()> {
    let db = open_read(path)?;
    let r = db.read()?;
    let t = r.table(table)?;
    match t.get(key)? {
        Some(v) => {
            let mut out = io::stdout().lock();
            out.write_all(v).and_then(|_| out.write_all(b"\n")).map_err(CliError::Output)
        }
        None => {
            Err(CliError::Other(format!("{}: no key {:?} in table {table:?}", path.display(), escape(key))))
        }
    }
}

fn del(path: &Path, table: &str, key: &[u8]) -> CliResult<()> {
    let db = open(path, Durability::Immediate)?;
    let mut w = db.write()?;
    if !w.existing_table(table)?.delete(key)? {
        return Err(CliError::Other(format!(
            "{}: no key {:?} in table {table:?}",
            path.display(),
            escape(key)
        )));
    }
    w.commit()?;
    Ok(())
}

struct Range {
    prefix: Option<OsString>,
    from: Option<OsString>,
    to: Option<OsString>,
    reverse: bool,
    limit: usize,
}

fn scan(path: &Path, table: &str, range: &Range, json: bool) -> CliResult<()> {
    use std::ops::Bound;
    let db = open_read(path)?;
    let r = db.read()?;
    let t = r.table(table)?;
    let mut lo = range.from.as_ref().map_or(Bound::Unbounded, |k| Bound::Included(k.as_bytes().to_vec()));
    let mut hi = range.to.as_ref().map_or(Bound::Unbounded, |k| Bound::Excluded(k.as_bytes().to_vec()));
    if let Some(p) = &range.prefix {
        let p = p.as_bytes().to_vec();
        if matches!(&lo, Bound::Included(k) if *k < p) || lo == Bound::Unbounded {
            lo = Bound::Included(p.clone());
        }
        let end = mmkit_kv::prefix_end(&p);
        if let Some(end) = end
            && (matches!(&hi, Bound::Excluded(k) if *k > end) || hi == Bound::Unbounded)
        {
            hi = Bound::Excluded(end);
        }
    }
    let iter = t.range::<Vec<u8>, _>((lo, hi));
    let iter: Box<dyn Iterator<Item = _>> = if range.reverse { Box::new(iter.rev()) } else { Box::new(iter) };
    let prefix = range.prefix.as_ref().map(|p| p.as_bytes().to_vec()).unwrap_or_default();
    let mut out = BufWriter::with_capacity(1 << 16, io::stdout().lock());
    for entry in iter.filter(|e| e.as_ref().map_or(true, |(k, _)| k.starts_with(&prefix))).take(range.limit) {
        let (k, v) = entry?;
        let line = if json { json_entry(k, Some(v), None) } else { tsv(k, v) };
        if let Err(e) = out.write_all(line.as_bytes()) {
            return quiet_pipe(e);
        }
    }
    out.flush().or_else(quiet_pipe)
}

/// A closed pipe downstream (`| head`) ends output quietly.
fn quiet_pipe(e: io::Error) -> CliResult<()> {
    if e.kind() == io::ErrorKind::BrokenPipe { Ok(()) } else { Err(CliError::Output(e)) }
}

/// `{"key": ..., "value": ...}` plus a newline; a key or value that is not
/// UTF-8 is given as `key_hex` / `value_hex` instead.
fn json_entry(k: &[u8], v: Option<&[u8]>, txnid: Option<u64>) -> String {
    let mut obj = serde_json::Map::new();
    if let Some(t) = txnid {
        obj.insert("txnid".into(), t.into());
    }
    let mut field = |name: &str, b: Option<&[u8]>| match b.map(std::str::from_utf8) {
        None => {
            obj.insert(name.into(), serde_json::Value::Null);
        }
        Some(Ok(s)) => {
            obj.insert(name.into(), s.into());
        }
        Some(Err(_)) => {
            let hex: String = b.unwrap_or_default().iter().map(|x| format!("{x:02x}")).collect();
            obj.insert(format!("{name}_hex"), hex.into());
        }
    };
    field("key", Some(k));
    field("value", v);
    format!("{}\n", serde_json::Value::Object(obj))
}

fn tsv(k: &[u8], v: &[u8]) -> String {
    format!("{}\t{}\n", escape(k), escape(v))
}

/// The dump/load escaping: `\\`, `\t`, `\n`, `\r`, and `\xHH` for bytes
/// outside valid UTF-8; everything else as is.
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\t' => out.push_str("\\t"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// Inverse of [`escape`].
pub fn unescape(text: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if text[i] != b'\\' {
            out.push(text[i]);
            i += 1;
            continue;
        }
        match text.get(i + 1) {
            Some(b'\\') => out.push(b'\\'),
            Some(b't') => out.push(b'\t'),
            Some(b'n') => out.push(b'\n'),
            Some(b'r') => out.push(b'\r'),
            Some(b'x') => {
                let hex = text.get(i + 2..i + 4).and_then(|h| std::str::from_utf8(h).ok());
                let byte = hex.and_then(|h| u8::from_str_radix(h, 16).ok()).ok_or("bad \\x escape")?;
                out.push(byte);
                i += 2;
            }
            _ => return Err(format!("unknown escape at byte {i}")),
        }
        i += 2;
    }
    Ok(out)
}

fn stat(path: &Path, json: bool) -> CliResult<()> {
    let db = open_read(path)?;
    let s = db.stat()?;
    let oldest = s.oldest.as_ref().map(|o| {
        serde_json::json!({
            "txnid": o.txnid, "pid": o.pid, "alive": o.alive,
            "age_secs": o.age.as_secs_f64(), "lag_commits": o.lag,
        })
    });
    let chain =
        s.log_chain.map(|c| serde_json::json!({ "first": c.first, "last": c.last, "bytes": c.bytes }));
    if json {
        let tables: Vec<_> =
            s.tables.iter().map(|(n, e)| serde_json::json!({ "name": n, "entries": e })).collect();
        let v = serde_json::json!({
            "path": path, "txnid": s.txnid, "durable_txnid": s.durable, "flushed_txnid": s.flushed,
            "log_chain": chain, "tables": tables,
            "entries": s.tables.iter().map(|t| t.1).sum::<u64>(),
            "pages": s.pages, "free_pages": s.free_pages, "page_size": s.page_size,
            "file_size": s.file_size, "readers": s.readers, "oldest_snapshot": oldest,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "{}: commit {} (durable {}, in the data file {})",
        path.display(),
        s.txnid,
        s.durable,
        s.flushed
    );
    if let Some(c) = s.log_chain {
        println!("  redo log: commits {} to {}, {} bytes", c.first, c.last, c.bytes);
    }
    for (name, entries) in &s.tables {
        println!("  table {name:?}: {entries} entries");
    }
    println!(
        "  pages: {} of {} bytes, {} free; file {} bytes",
        s.pages, s.page_size, s.free_pages, s.file_size
    );
    match &s.oldest {
        Some(o) => println!(
            "  oldest snapshot: commit {} ({} behind), pid {}{}, open {:.1} s; {} readers",
            o.txnid,
            o.lag,
            o.pid,
            if o.alive { "" } else { " (dead, reclaimed at next need)" },
            o.age.as_secs_f64(),
            s.readers
        ),
        None => println!("  no open snapshots"),
    }
    Ok(())
}

fn check(path: &Path, json: bool) -> CliResult<()> {
    let db = open_read(path)?;
    let report = db.check()?;
    if json {
        let tables: Vec<_> = report
            .tables
            .iter()
            .map(|(n, e, p)| serde_json::json!({ "name": n, "entries": e, "pages": p }))
            .collect();
        let v = serde_json::json!({
            "ok": report.leaked_pages == 0, "txnid": report.txnid, "tables": tables,
            "pages": report.pages, "free_pages": report.free_pages, "leaked_pages": report.leaked_pages,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let entries: u64 = report.tables.iter().map(|t| t.1).sum();
        println!(
            "{}: ok, commit {}, {} tables, {entries} entries, {} pages ({} free)",
            path.display(),
            report.txnid,
            report.tables.len(),
            report.pages,
            report.free_pages
        );
    }
    if report.leaked_pages > 0 {
        return Err(CliError::Other(format!(
            "{}: {} pages are neither used nor free",
            path.display(),
            report.leaked_pages
        )));
    }
    Ok(())
}

fn compact(path: &Path, dst: &Path, json: bool) -> CliResult<()> {
    let db = open_read(path)?;
    let before = db.stat()?.file_size;
    let t = std::time::Instant::now();
    let report = db.compact_to(dst)?;
    let after = std::fs::metadata(dst).map_err(|e| CliError::io("stat", dst, e))?.len();
    if json {
        let v = serde_json::json!({
            "path": path, "dst": dst, "bytes_before": before, "bytes_after": after,
            "pages": report.pages, "seconds": t.elapsed().as_secs_f64(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("{} -> {}: {before} -> {after} bytes in {:.2?}", path.display(), dst.display(), t.elapsed());
    }
    Ok(())
}

fn watch(
    path: &Path,
    table: &str,
    key: &[u8],
    prefix: bool,
    count: Option<usize>,
    timeout: Option<f64>,
    json: bool,
) -> CliResult<()> {
    let db = open_read(path)?;
    let mut w = db.watch(table, key, prefix)?;
    let timeout = match timeout {
        Some(t) if !(t.is_finite() && t >= 0.0) => {
            return Err(CliError::Usage(format!("--timeout {t}: not a number of seconds")));
        }
        t => t.map(Duration::from_secs_f64),
    };
    let mut out = io::stdout().lock();
    let mut seen = 0;
    // Ready: changes committed from now on are printed.
    eprintln!("watching {} (commit {})", path.display(), w.seen());
    while count.is_none_or(|c| seen < c) {
        let changes = w.wait(timeout)?;
        if changes.is_empty() {
            break;
        }
        for c in changes.into_iter().take(count.map_or(usize::MAX, |n| n - seen)) {
            let line = match (json, &c.value) {
                (true, v) => json_entry(&c.key, v.as_deref(), Some(c.txnid)),
                (false, Some(v)) => format!("put\t{}", tsv(&c.key, v)),
                (false, None) => format!("del\t{}\n", escape(&c.key)),
            };
            if let Err(e) = out.write_all(line.as_bytes()).and_then(|_| out.flush()) {
                return quiet_pipe(e);
            }
            seen += 1;
        }
    }
    Ok(())
}

fn load(path: &Path, table: &str, batch: usize, durability: DurabilityArg) -> CliResult<()> {
    if batch == 0 {
        return Err(CliError::Usage("--batch must be at least 1".into()));
    }
    let d = match durability {
        DurabilityArg::Immediate => Durability::Immediate,
        DurabilityArg::Eventual => Durability::Eventual,
    };
    let db = Db::options().create(true).durability(d).open(path)?;
    let progress = io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_message("loading");
        bar
    });
    let mut out = io::stdout().lock();
    let mut input = io::stdin().lock();
    let (mut line, mut done, mut lineno) = (Vec::new(), 0u64, 0u64);
    loop {
        let mut w = db.write()?;
        let mut t = w.table(table)?;
        let mut n = 0;
        while n < batch {
            line.clear();
            if input.read_until(b'\n', &mut line).map_err(|e| CliError::io("read", "<stdin>", e))? == 0 {
                break;
            }
            lineno += 1;
            if line.last() == Some(&b'\n') {
                line.pop();
            }
            let tab = line.iter().position(|&b| b == b'\t').ok_or_else(|| {
                CliError::Usage(format!(
                    "line {lineno}: no tab between key and value ({done} lines committed)"
                ))
            })?;
            let bad = |e: String| CliError::Usage(format!("line {lineno}: {e} ({done} lines committed)"));
            let key = unescape(&line[..tab]).map_err(bad)?;
            let value = unescape(&line[tab + 1..]).map_err(bad)?;
            t.put(key, value)
                .map_err(|e| CliError::Usage(format!("line {lineno}: {e} ({done} lines committed)")))?;
            n += 1;
        }
        if n == 0 {
            break;
        }
        w.commit()?;
        done += n as u64;
        // The acknowledgement: everything counted here is committed.
        writeln!(out, "{done}").and_then(|_| out.flush()).map_err(CliError::Output)?;
        if let Some(bar) = &progress {
            bar.set_message(format!("{done} lines committed"));
            bar.tick();
        }
        if n < batch {
            break;
        }
    }
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    Ok(())
}

fn dump(path: &Path, table: &str) -> CliResult<()> {
    let db = open_read(path)?;
    let r = db.read()?;
    let t = r.table(table)?;
    let mut out = BufWriter::with_capacity(1 << 16, io::stdout().lock());
    for e in t.iter() {
        let (k, v) = e?;
        if let Err(e) = out.write_all(tsv(k, v).as_bytes()) {
            return quiet_pipe(e);
        }
    }
    out.flush().or_else(quiet_pipe)
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn escaping_round_trips(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let e = escape(&bytes);
            proptest::prop_assert!(!e.contains('\t') && !e.contains('\n'));
            proptest::prop_assert_eq!(unescape(e.as_bytes()).unwrap(), bytes);
        }
    }

    #[test]
    fn escapes_are_as_documented() {
        assert_eq!(escape(b"a\tb\nc\\d\re\xff"), "a\\tb\\nc\\\\d\\re\\xff");
        assert!(unescape(b"\\q").is_err());
        assert!(unescape(b"\\x4").is_err());
    }
}
