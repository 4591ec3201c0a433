//! Profiling harness for the kv write paths: loads a store, then runs one
//! phase in a function of its own (so `perf` and `callgrind
//! --toggle-collect` can isolate it).
//!
//! `cargo run --release -p mmkit-bench --example kvprof -- PEER PHASE [ENTRIES] [N]`
//! PEER: ours | lmdb; PHASE: load | nosync | batch | range | durable |
//! cold | small | kvsmall | redolog (a sketch that prices a redo-log
//! commit: see `phase_redolog`). With `KVPROF_DISK=vda` (a block device), it
//! also prints the disk's write requests, KiB and flushes per operation.
//! With `KVPROF_KEEP` set, the database directory is kept and named.
//!
//! To profile only the phase: `mkfifo /tmp/ctl; KVPROF_CTL=/tmp/ctl perf
//! record -D -1 --control fifo:/tmp/ctl -g -- target/release/examples/kvprof ...`
//! (the harness writes `enable` and `disable` to the fifo around it).

use std::time::Instant;

type R<T> = Result<T, Box<dyn std::error::Error>>;

/// The counters of the block device named by `KVPROF_DISK` (such as
/// `vda`): `/sys/block/DEV/stat`, whose fields are documented in the
/// kernel's Documentation/block/stat.rst.
fn disk() -> Option<Vec<u64>> {
    let dev = std::env::var("KVPROF_DISK").ok()?;
    let text = std::fs::read_to_string(format!("/sys/block/{dev}/stat")).ok()?;
    text.split_whitespace().map(|f| f.parse().ok()).collect()
}

static DISK_AT_START: std::sync::Mutex<Option<Vec<u64>>> = std::sync::Mutex::new(None);

/// CPU seconds (user, system) of this process so far; also notes the
/// disk's counters, for `report`.
fn cpu() -> (f64, f64) {
    if let Ok(mut d) = DISK_AT_START.lock() {
        *d = disk();
    }
    // SAFETY: getrusage writes the struct it is given.
    let u = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    (t(u.ru_utime), t(u.ru_stime))
}

/// Tells `perf record --control` (through the fifo named by `KVPROF_CTL`)
/// to start or stop sampling.
fn perf_ctl(cmd: &str) {
    if let Some(path) = std::env::var_os("KVPROF_CTL") {
        let _ = std::fs::write(path, format!("{cmd}\n"));
    }
}

/// Prints wall and CPU microseconds per operation since `t`/`c0`.
fn report(what: &str, ops: u64, t: Instant, c0: (f64, f64)) {
    perf_ctl("disable");
    let start = DISK_AT_START.lock().ok().and_then(|d| d.clone());
    let c = cpu();
    let per = |s: f64| s * 1e6 / ops as f64;
    eprintln!(
        "{what}: wall {:.2} us/op, cpu user {:.2} + sys {:.2} = {:.2} us/op",
        per(t.elapsed().as_secs_f64()),
        per(c.0 - c0.0),
        per(c.1 - c0.1),
        per(c.0 - c0.0 + c.1 - c0.1)
    );
    if let (Some(a), Some(b)) = (start, disk()) {
        let per = |i: usize| b.get(i).zip(a.get(i)).map_or(0.0, |(b, a)| (b - a) as f64 / ops as f64);
        eprintln!(
            "{what}: disk per op: {:.2} write requests, {:.1} KiB written, {:.2} flushes",
            per(4),
            per(6) / 2.0,
            per(15)
        );
    }
}

fn key(i: u64) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..8].copy_from_slice(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
    k[8..16].copy_from_slice(&i.to_be_bytes());
    k
}

fn value(i: u64) -> [u8; 150] {
    let mut v = [0u8; 150];
    for (j, b) in v.iter_mut().enumerate() {
        *b = (i as u8).wrapping_add(j as u8);
    }
    v
}

trait Store {
    fn write(&mut self, items: &mut dyn Iterator<Item = (Vec<u8>, Vec<u8>)>, durable: bool) -> R<()>;
    /// `n`-entry scans from each start; returns the value bytes seen.
    fn ranges(&self, starts: &mut dyn Iterator<Item = Vec<u8>>, n: usize) -> R<u64>;
    /// Prints the file's page counts (where the store has them).
    fn pages(&self, _when: &str) {}
}

struct Ours(mmkit_kv::Db);
impl Store for Ours {
    fn write(&mut self, items: &mut dyn Iterator<Item = (Vec<u8>, Vec<u8>)>, durable: bool) -> R<()> {
        use mmkit_kv::Durability;
        let mut w = self.0.write()?;
        let mut t = w.table("bench")?;
        for (k, v) in items {
            t.put(k, v)?;
        }
        w.commit_with(if durable { Durability::Immediate } else { Durability::Eventual })?;
        Ok(())
    }
    fn ranges(&self, starts: &mut dyn Iterator<Item = Vec<u8>>, n: usize) -> R<u64> {
        let r = self.0.read()?;
        let t = r.table("bench")?;
        let mut total = 0;
        for s in starts {
            for e in t.range(s..).take(n) {
                total += e?.1.len() as u64;
            }
        }
        Ok(total)
    }
    fn pages(&self, when: &str) {
        if let Ok(s) = self.0.stat() {
            eprintln!("{when}: {} pages, {} free, file {} MiB", s.pages, s.free_pages, s.file_size >> 20);
        }
    }
}

struct Lmdb(heed::Env, heed::Database<heed::types::Bytes, heed::types::Bytes>);
impl Store for Lmdb {
    fn write(&mut self, items: &mut dyn Iterator<Item = (Vec<u8>, Vec<u8>)>, durable: bool) -> R<()> {
        use heed::{EnvFlags, FlagSetMode};
        let mode = if durable { FlagSetMode::Disable } else { FlagSetMode::Enable };
        // SAFETY: NO_SYNC only drops durability.
        unsafe { self.0.set_flags(EnvFlags::NO_SYNC, mode)? };
        let mut w = self.0.write_txn()?;
        for (k, v) in items {
            self.1.put(&mut w, &k, &v)?;
        }
        w.commit()?;
        Ok(())
    }
    fn ranges(&self, starts: &mut dyn Iterator<Item = Vec<u8>>, n: usize) -> R<u64> {
        let r = self.0.read_txn()?;
        let mut total = 0;
        for s in starts {
            let bounds = (std::ops::Bound::Included(&s[..]), std::ops::Bound::Unbounded);
            for e in self.1.range(&r, &bounds)?.take(n) {
                total += e?.1.len() as u64;
            }
        }
        Ok(total)
    }
}

#[inline(never)]
fn phase_ranges(s: &dyn Store, n: u64) -> R<u64> {
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut starts = (0..n).map(|_| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        key(x % 1_000_000).to_vec()
    });
    s.ranges(&mut starts, 10)
}

#[inline(never)]
fn phase_durable(s: &mut dyn Store, base: u64, n: u64) -> R<()> {
    for j in 0..n {
        s.write(&mut std::iter::once((key(base + j).to_vec(), value(j).to_vec())), true)?;
    }
    Ok(())
}

/// Bytes of one record of the redo-log sketch: a durable commit's eight
/// pages, meta included.
const RECORD: u64 = 32 << 10;
/// Records in the sketch's log (64 MiB).
const RECORDS: u64 = 2048;

/// The sketch's log file, written and synced once (untimed), as a log
/// that is reused rather than grown would be.
fn redo_log(dir: &std::path::Path) -> R<std::fs::File> {
    use std::os::unix::fs::FileExt;
    let log = std::fs::File::options()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(dir.join("redo.log"))?;
    let record = vec![0x5au8; RECORD as usize];
    for i in 0..RECORDS {
        log.write_all_at(&record, i * RECORD)?;
    }
    log.sync_all()?;
    Ok(log)
}

/// A sketch of a redo-log commit, to price it: each commit is made
/// without a sync of the database, then one record is written at the
/// head of the log, and only the log is synced. When the log is full
/// (every 2048 commits), one durable commit syncs the database (the
/// checkpoint that would let the log start over); its time is included.
#[inline(never)]
fn phase_redolog(s: &mut dyn Store, log: &std::fs::File, base: u64, n: u64) -> R<()> {
    use std::os::unix::fs::FileExt;
    let record = vec![0xa5u8; RECORD as usize];
    for j in 0..n {
        let item = (key(base + j).to_vec(), value(j).to_vec());
        if j % RECORDS == RECORDS - 1 {
            s.write(&mut std::iter::once(item), true)?;
            continue;
        }
        s.write(&mut std::iter::once(item), false)?;
        log.write_all_at(&record, (j % RECORDS) * RECORD)?;
        rustix::fs::fdatasync(log)?;
    }
    Ok(())
}

#[inline(never)]
fn phase_nosync(s: &mut dyn Store, base: u64, n: u64) -> R<()> {
    for j in 0..n {
        s.write(&mut std::iter::once((key(base + j).to_vec(), value(j).to_vec())), false)?;
    }
    Ok(())
}

#[inline(never)]
fn phase_batch(s: &mut dyn Store, base: u64, n: u64) -> R<()> {
    for b in 0..n {
        let at = base + b * 1000;
        s.write(&mut (at..at + 1000).map(|i| (key(i).to_vec(), value(i).to_vec())), true)?;
    }
    Ok(())
}

#[inline(never)]
fn phase_small(s: &mut dyn Store, n: u64) -> R<()> {
    for r in 0..n {
        for i in 0..1000u64 {
            let k = format!("key{i}").into_bytes();
            let v = format!("value {i} {r}").into_bytes();
            s.write(&mut std::iter::once((k, v)), false)?;
        }
    }
    Ok(())
}

#[inline(never)]
fn phase_kv_small(kv: &mmkit_kv::Kv, n: u64) -> R<()> {
    for r in 0..n {
        for i in 0..1000u64 {
            kv.set(format!("key{i}"), format!("value {i} {r}"))?;
        }
    }
    Ok(())
}

/// Opens (or creates) the store of `peer` in `dir`.
fn open_store(peer: &str, dir: &std::path::Path) -> R<Box<dyn Store>> {
    Ok(match peer {
        "ours" => Box::new(Ours(
            mmkit_kv::Db::options()
                .create(true)
                .durability(mmkit_kv::Durability::Immediate)
                .open(dir.join("db"))?,
        )),
        _ => {
            let p = dir.join("lmdb");
            std::fs::create_dir_all(&p)?;
            // SAFETY: one environment per path in this process.
            let env = unsafe { heed::EnvOpenOptions::new().map_size(16 << 30).open(&p)? };
            let mut w = env.write_txn()?;
            let db = env.create_database(&mut w, None)?;
            w.commit()?;
            Box::new(Lmdb(env, db))
        }
    })
}

/// Drops the page cache of every file in `dir` (nothing may have them
/// mapped): the state after a reboot, or after memory pressure.
fn drop_cache(dir: &std::path::Path) -> R<()> {
    for entry in walk(dir)? {
        let f = std::fs::File::open(&entry)?;
        rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed)?;
    }
    Ok(())
}

fn walk(dir: &std::path::Path) -> R<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            out.extend(walk(&p)?);
        } else {
            out.push(p);
        }
    }
    Ok(out)
}

fn main() -> R<()> {
    let a: Vec<String> = std::env::args().collect();
    let peer = a.get(1).map(String::as_str).unwrap_or("ours");
    let phase = a.get(2).map(String::as_str).unwrap_or("nosync");
    let entries: u64 = a.get(3).map(|s| s.parse()).transpose()?.unwrap_or(1_000_000);
    let n: u64 = a.get(4).map(|s| s.parse()).transpose()?.unwrap_or(5000);
    let dir = tempfile::Builder::new().prefix(".kvprof").tempdir_in(".")?;
    if phase == "kvsmall" {
        let kv = mmkit_kv::Kv::open(dir.path().join("small"))?;
        let (t, c) = (Instant::now(), cpu());
        perf_ctl("enable");
        phase_kv_small(&kv, n)?;
        report(&format!("{peer} kvsmall"), n * 1000, t, c);
        return Ok(());
    }
    let mut store = open_store(peer, dir.path())?;
    if phase == "small" {
        let (t, c) = (Instant::now(), cpu());
        perf_ctl("enable");
        phase_small(store.as_mut(), n)?;
        report(&format!("{peer} small"), n * 1000, t, c);
        return Ok(());
    }
    let t = Instant::now();
    store.write(&mut (0..entries).map(|i| (key(i).to_vec(), value(i).to_vec())), true)?;
    eprintln!("{peer} load: {:.0} k/s", entries as f64 / t.elapsed().as_secs_f64() / 1e3);
    // As in the suite: 200 durable single writes first (timed as the
    // `durable` phase; `durable` then times 200 more after them).
    let (t, c) = (Instant::now(), cpu());
    for j in 0..200 {
        store.write(&mut std::iter::once((key(entries + j).to_vec(), value(j).to_vec())), true)?;
    }
    report(&format!("{peer} durable right after the load"), 200, t, c);
    match phase {
        "nosync" => {
            let (t, c) = (Instant::now(), cpu());
            perf_ctl("enable");
            store.pages("before");
            phase_nosync(store.as_mut(), 2 * entries, n)?;
            report(&format!("{peer} nosync"), n, t, c);
            store.pages("after");
        }
        "range" => {
            let (t, c) = (Instant::now(), cpu());
            perf_ctl("enable");
            phase_ranges(store.as_ref(), n)?;
            report(&format!("{peer} range (10-entry scan)"), n, t, c);
        }
        "durable" => {
            let (t, c) = (Instant::now(), cpu());
            perf_ctl("enable");
            phase_durable(store.as_mut(), 4 * entries, n)?;
            report(&format!("{peer} durable"), n, t, c);
        }
        "redolog" => {
            let log = redo_log(dir.path())?;
            let (t, c) = (Instant::now(), cpu());
            perf_ctl("enable");
            phase_redolog(store.as_mut(), &log, 4 * entries, n)?;
            report(
                &format!("{peer} redo-log sketch (no database sync; 32 KiB to a log, log synced)"),
                n,
                t,
                c,
            );
        }
        "cold" => {
            // Reopen with an empty page cache, read 100,000 random
            // entries (the page cache fills the way readers fill it),
            // then time durable single writes.
            drop(store);
            drop_cache(dir.path())?;
            store = open_store(peer, dir.path())?;
            phase_ranges(store.as_ref(), 100_000)?;
            let (t, c) = (Instant::now(), cpu());
            perf_ctl("enable");
            phase_durable(store.as_mut(), 4 * entries, n)?;
            report(&format!("{peer} durable after a cold reopen and 100,000 reads"), n, t, c);
        }
        "batch" => {
            phase_nosync(store.as_mut(), 2 * entries, 5000)?;
            let (t, c) = (Instant::now(), cpu());
            perf_ctl("enable");
            store.pages("before");
            phase_batch(store.as_mut(), 3 * entries, n)?;
            report(&format!("{peer} batch (per 1000-key commit)"), n, t, c);
            store.pages("after");
        }
        _ => {}
    }
    if std::env::var_os("KVPROF_KEEP").is_some() {
        // Kept for `filefrag -v`, to map the disk's sectors to pages.
        drop(store);
        eprintln!("kept {}", dir.keep().display());
    }
    Ok(())
}
