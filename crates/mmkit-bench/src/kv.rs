//! The `kv` suite: mmkit-kv against LMDB (heed), redb, the `mmkv` crate
//! and fjall, on the workloads of issue 12, all in one run. Data: 1M
//! entries (by default) of 24-byte keys and 150-byte values, after redb's
//! benchmark, scaled for a 2-core VM. Each sequence runs `--reps` times per
//! peer, peers interleaved rep by rep, so machine noise hits all alike.
//!
//! Multi-process reads and "open after kill -9" re-execute this binary with
//! a hidden `child` subcommand.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

type BoxError = Box<dyn std::error::Error>;
type R<T> = Result<T, BoxError>;

/// Options of the `kv` suite.
#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  cargo run --release -p mmkit-bench -- kv\n  \
                        cargo run --release -p mmkit-bench -- kv --only 'small sets' --only lmdb --json")]
pub struct Args {
    #[command(subcommand)]
    role: Option<Role>,
    /// Print one JSON document on stdout (the tables go to stderr).
    #[arg(long)]
    json: bool,
    /// Repetitions of each sequence; the median is reported.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Entries loaded before the other workloads.
    #[arg(long, default_value_t = 1_000_000)]
    entries: u64,
    /// Run only the workloads or peers whose name contains one of these.
    #[arg(long)]
    only: Vec<String>,
    /// Directory for the databases (default: a temporary directory under
    /// the current directory, so fsync figures are the disk's).
    #[arg(long)]
    dir: Option<PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
enum Role {
    /// One reader or victim process of a measurement.
    #[command(hide = true)]
    Child(ChildArgs),
}

#[derive(Debug, clap::Args)]
struct ChildArgs {
    #[arg(long)]
    peer: String,
    #[arg(long)]
    path: PathBuf,
    /// `reader`, `writer` (killed by the parent) or `open`.
    #[arg(long)]
    task: String,
    #[arg(long, default_value_t = 0)]
    n: u64,
    #[arg(long, default_value_t = 0)]
    entries: u64,
}

/// The peers, as named in `--json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peer {
    MmkitKv,
    Lmdb,
    Redb,
    Mmkv,
    Fjall,
}

const PEERS: [Peer; 5] = [Peer::MmkitKv, Peer::Lmdb, Peer::Redb, Peer::Mmkv, Peer::Fjall];

impl Peer {
    fn name(self) -> &'static str {
        match self {
            Peer::MmkitKv => "mmkit-kv",
            Peer::Lmdb => "lmdb",
            Peer::Redb => "redb",
            Peer::Mmkv => "mmkv",
            Peer::Fjall => "fjall",
        }
    }

    fn parse(s: &str) -> R<Peer> {
        PEERS.into_iter().find(|p| p.name() == s).ok_or_else(|| format!("unknown peer {s}").into())
    }
}

const W_BULK: &str = "bulk load";
const W_DURABLE: &str = "individual writes, durable";
const W_NOSYNC: &str = "individual writes, no sync";
const W_BATCH: &str = "batch writes";
const W_READ1: &str = "random reads, 1 thread";
const W_READ2: &str = "random reads, 2 threads";
const W_READP: &str = "random reads, 2 processes";
const W_RANGE: &str = "range reads";
const W_REMOVE: &str = "removals";
const W_SIZE: &str = "file size";
const W_COMPACT: &str = "compaction time";
const W_OPEN: &str = "open after kill -9";
const W_SMALL: &str = "small sets";

const WORKLOADS: [&str; 13] = [
    W_BULK, W_DURABLE, W_NOSYNC, W_BATCH, W_READ1, W_READ2, W_READP, W_RANGE, W_REMOVE, W_SIZE, W_COMPACT,
    W_OPEN, W_SMALL,
];

const DURABLE_COMMITS: u64 = 200;
const NOSYNC_COMMITS: u64 = 5_000;
const BATCHES: u64 = 20;
const BATCH: u64 = 1000;
const RANGES: u64 = 100_000;
const SMALL_SETS: u64 = 1000;

type Key = [u8; 24];

/// Key `i`: a hash first, so insertion in `i` order is random order.
fn key(i: u64) -> Key {
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

/// A random permutation of `0..n` (n > 0), without allocation per step.
fn shuffled(n: u64, seed: u64) -> impl Iterator<Item = u64> {
    // Multiplication by an odd constant modulo a power of two is a
    // bijection; skip what falls past `n`.
    let m = n.next_power_of_two();
    (0..m).map(move |i| (i.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ seed) & (m - 1)).filter(move |&i| i < n)
}

// ------------------------------------------------------------------ stores

/// What an ordered store does in these workloads.
trait Ordered {
    /// One transaction of puts.
    fn write(&mut self, items: &mut dyn Iterator<Item = (Key, [u8; 150])>, durable: bool) -> R<()>;
    /// Gets every key in one read transaction; returns the bytes read.
    fn get_all(&self, keys: &mut dyn Iterator<Item = Key>) -> R<u64>;
    /// Scans `n` entries from each start in one read transaction.
    fn ranges(&self, starts: &mut dyn Iterator<Item = Key>, n: usize) -> R<u64>;
    /// One transaction of removals (durable).
    fn remove(&mut self, keys: &mut dyn Iterator<Item = Key>) -> R<()>;
    /// Bytes on disk.
    fn size(&self) -> R<u64>;
    /// Compacts (to a copy in `dst` when the store works that way); returns
    /// the size after.
    fn compact(&mut self, dst: &Path) -> R<Option<u64>>;
    /// Whether it serves reads from two threads.
    fn shareable(&self) -> Option<&(dyn Ordered + Sync)>;
}

fn dir_size(p: &Path) -> u64 {
    let Ok(meta) = std::fs::metadata(p) else { return 0 };
    if meta.is_file() {
        return meta.len();
    }
    std::fs::read_dir(p).map(|d| d.filter_map(|e| e.ok()).map(|e| dir_size(&e.path())).sum()).unwrap_or(0)
}

mod ours {
    use super::*;
    use mmkit_kv::{Db, Durability};

    pub struct Store {
        pub db: Db,
        pub path: PathBuf,
    }

    pub fn open(path: &Path) -> R<Store> {
        let db = Db::options().create(true).durability(Durability::Immediate).open(path)?;
        Ok(Store { db, path: path.into() })
    }

    impl Ordered for Store {
        fn write(&mut self, items: &mut dyn Iterator<Item = (Key, [u8; 150])>, durable: bool) -> R<()> {
            let mut w = self.db.write()?;
            let mut t = w.table("bench")?;
            for (k, v) in items {
                t.put(k, v)?;
            }
            w.commit_with(if durable { Durability::Immediate } else { Durability::Eventual })?;
            Ok(())
        }
        fn get_all(&self, keys: &mut dyn Iterator<Item = Key>) -> R<u64> {
            let r = self.db.read()?;
            let t = r.table("bench")?;
            let mut n = 0;
            for k in keys {
                n += t.get(k)?.map_or(0, |v| v.len() as u64);
            }
            Ok(n)
        }
        fn ranges(&self, starts: &mut dyn Iterator<Item = Key>, n: usize) -> R<u64> {
            let r = self.db.read()?;
            let t = r.table("bench")?;
            let mut total = 0;
            for s in starts {
                for e in t.range(s..).take(n) {
                    total += e?.1.len() as u64;
                }
            }
            Ok(total)
        }
        fn remove(&mut self, keys: &mut dyn Iterator<Item = Key>) -> R<()> {
            let mut w = self.db.write()?;
            let mut t = w.table("bench")?;
            for k in keys {
                t.delete(k)?;
            }
            w.commit()?;
            Ok(())
        }
        fn size(&self) -> R<u64> {
            Ok(dir_size(&self.path))
        }
        fn compact(&mut self, dst: &Path) -> R<Option<u64>> {
            let out = dst.join("compact.kv");
            self.db.compact_to(&out)?;
            Ok(Some(dir_size(&out)))
        }
        fn shareable(&self) -> Option<&(dyn Ordered + Sync)> {
            Some(self)
        }
    }
}

mod lmdb {
    use super::*;
    use heed::types::Bytes;
    use heed::{CompactionOption, Database, Env, EnvFlags, EnvOpenOptions, FlagSetMode};

    pub struct Store {
        pub env: Env,
        pub db: Database<Bytes, Bytes>,
        pub path: PathBuf,
    }

    pub fn open(path: &Path) -> R<Store> {
        std::fs::create_dir_all(path)?;
        // SAFETY: heed's contract: the directory is only opened through
        // this environment in this process (one per path), and no other
        // program truncates the files under it.
        let env = unsafe { EnvOpenOptions::new().map_size(16 << 30).max_readers(126).open(path)? };
        let mut w = env.write_txn()?;
        let db = env.create_database(&mut w, None)?;
        w.commit()?;
        Ok(Store { env, db, path: path.into() })
    }

    impl Store {
        pub fn set_nosync(&self, on: bool) -> R<()> {
            let mode = if on { FlagSetMode::Enable } else { FlagSetMode::Disable };
            // SAFETY: NO_SYNC only drops durability, which is what the
            // no-sync workload measures; the flag is reset afterwards.
            unsafe { self.env.set_flags(EnvFlags::NO_SYNC, mode)? };
            Ok(())
        }
    }

    impl Ordered for Store {
        fn write(&mut self, items: &mut dyn Iterator<Item = (Key, [u8; 150])>, durable: bool) -> R<()> {
            if !durable {
                self.set_nosync(true)?;
            }
            let mut w = self.env.write_txn()?;
            for (k, v) in items {
                self.db.put(&mut w, &k, &v)?;
            }
            w.commit()?;
            if !durable {
                self.set_nosync(false)?;
            }
            Ok(())
        }
        fn get_all(&self, keys: &mut dyn Iterator<Item = Key>) -> R<u64> {
            let r = self.env.read_txn()?;
            let mut n = 0;
            for k in keys {
                n += self.db.get(&r, &k)?.map_or(0, |v| v.len() as u64);
            }
            Ok(n)
        }
        fn ranges(&self, starts: &mut dyn Iterator<Item = Key>, n: usize) -> R<u64> {
            let r = self.env.read_txn()?;
            let mut total = 0;
            for s in starts {
                for e in self
                    .db
                    .range(&r, &(std::ops::Bound::Included(&s[..]), std::ops::Bound::Unbounded))?
                    .take(n)
                {
                    total += e?.1.len() as u64;
                }
            }
            Ok(total)
        }
        fn remove(&mut self, keys: &mut dyn Iterator<Item = Key>) -> R<()> {
            let mut w = self.env.write_txn()?;
            for k in keys {
                self.db.delete(&mut w, &k)?;
            }
            w.commit()?;
            Ok(())
        }
        fn size(&self) -> R<u64> {
            Ok(dir_size(&self.path.join("data.mdb")))
        }
        fn compact(&mut self, dst: &Path) -> R<Option<u64>> {
            let out = dst.join("compact.mdb");
            self.env.copy_to_path(&out, CompactionOption::Enabled)?;
            Ok(Some(dir_size(&out)))
        }
        fn shareable(&self) -> Option<&(dyn Ordered + Sync)> {
            Some(self)
        }
    }
}

mod redb_peer {
    use super::*;
    use redb::{CompactionMode, Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

    const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("bench");

    pub struct Store {
        pub db: Database,
        pub path: PathBuf,
    }

    pub fn open(path: &Path) -> R<Store> {
        let db = Database::create(path)?;
        Ok(Store { db, path: path.into() })
    }

    impl Ordered for Store {
        fn write(&mut self, items: &mut dyn Iterator<Item = (Key, [u8; 150])>, durable: bool) -> R<()> {
            let mut w = self.db.begin_write()?;
            if !durable {
                w.set_durability(Durability::None)?;
            }
            {
                let mut t = w.open_table(TABLE)?;
                for (k, v) in items {
                    t.insert(&k[..], &v[..])?;
                }
            }
            w.commit()?;
            Ok(())
        }
        fn get_all(&self, keys: &mut dyn Iterator<Item = Key>) -> R<u64> {
            let r = self.db.begin_read()?;
            let t = r.open_table(TABLE)?;
            let mut n = 0;
            for k in keys {
                n += t.get(&k[..])?.map_or(0, |v| v.value().len() as u64);
            }
            Ok(n)
        }
        fn ranges(&self, starts: &mut dyn Iterator<Item = Key>, n: usize) -> R<u64> {
            let r = self.db.begin_read()?;
            let t = r.open_table(TABLE)?;
            let mut total = 0;
            for s in starts {
                for e in t.range(&s[..]..)?.take(n) {
                    total += e?.1.value().len() as u64;
                }
            }
            Ok(total)
        }
        fn remove(&mut self, keys: &mut dyn Iterator<Item = Key>) -> R<()> {
            let w = self.db.begin_write()?;
            {
                let mut t = w.open_table(TABLE)?;
                for k in keys {
                    t.remove(&k[..])?;
                }
            }
            w.commit()?;
            Ok(())
        }
        fn size(&self) -> R<u64> {
            Ok(dir_size(&self.path))
        }
        fn compact(&mut self, _dst: &Path) -> R<Option<u64>> {
            // redb compacts in place.
            self.db.compact(CompactionMode::default())?;
            Ok(Some(dir_size(&self.path)))
        }
        fn shareable(&self) -> Option<&(dyn Ordered + Sync)> {
            Some(self)
        }
    }
}

mod fjall_peer {
    use super::*;
    use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

    pub struct Store {
        pub db: Database,
        pub ks: Keyspace,
        pub path: PathBuf,
    }

    pub fn open(path: &Path) -> R<Store> {
        let db = Database::builder(path).open()?;
        let ks = db.keyspace("bench", KeyspaceCreateOptions::default)?;
        Ok(Store { db, ks, path: path.into() })
    }

    impl Ordered for Store {
        fn write(&mut self, items: &mut dyn Iterator<Item = (Key, [u8; 150])>, durable: bool) -> R<()> {
            let mut b = self.db.batch();
            for (k, v) in items {
                b.insert(&self.ks, k.to_vec(), v.to_vec());
            }
            b.commit()?;
            if durable {
                self.db.persist(PersistMode::SyncAll)?;
            }
            Ok(())
        }
        fn get_all(&self, keys: &mut dyn Iterator<Item = Key>) -> R<u64> {
            let mut n = 0;
            for k in keys {
                n += self.ks.get(k)?.map_or(0, |v| v.len() as u64);
            }
            Ok(n)
        }
        fn ranges(&self, starts: &mut dyn Iterator<Item = Key>, n: usize) -> R<u64> {
            let mut total = 0;
            for s in starts {
                for e in self.ks.range(s..).take(n) {
                    total += e.value()?.len() as u64;
                }
            }
            Ok(total)
        }
        fn remove(&mut self, keys: &mut dyn Iterator<Item = Key>) -> R<()> {
            let mut b = self.db.batch();
            for k in keys {
                b.remove(&self.ks, k.to_vec());
            }
            b.commit()?;
            self.db.persist(PersistMode::SyncAll)?;
            Ok(())
        }
        fn size(&self) -> R<u64> {
            Ok(dir_size(&self.path))
        }
        fn compact(&mut self, _dst: &Path) -> R<Option<u64>> {
            self.ks.major_compact()?;
            Ok(Some(dir_size(&self.path)))
        }
        fn shareable(&self) -> Option<&(dyn Ordered + Sync)> {
            Some(self)
        }
    }
}

fn open_ordered(peer: Peer, path: &Path) -> R<Box<dyn Ordered>> {
    Ok(match peer {
        Peer::MmkitKv => Box::new(ours::open(path)?),
        Peer::Lmdb => Box::new(lmdb::open(path)?),
        Peer::Redb => Box::new(redb_peer::open(path)?),
        Peer::Fjall => Box::new(fjall_peer::open(path)?),
        Peer::Mmkv => return Err("mmkv is not an ordered store".into()),
    })
}

// ------------------------------------------------------------------ results

#[derive(Debug, Clone, Serialize)]
struct Row {
    workload: &'static str,
    peer: &'static str,
    variant: &'static str,
    /// `ops/s` (higher is better), `ns`, `bytes` (lower is better).
    unit: &'static str,
    samples: Vec<f64>,
    median: f64,
    note: &'static str,
}

struct Suite {
    args: Args,
    rows: Vec<Row>,
    root: tempfile::TempDir,
}

fn med(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

impl Suite {
    fn wants(&self, name: &str) -> bool {
        self.args.only.is_empty() || self.args.only.iter().any(|o| name.contains(o.as_str()))
    }

    fn wants_cell(&self, workload: &str, peer: Peer) -> bool {
        if self.args.only.is_empty() {
            return true;
        }
        let w = self.args.only.iter().any(|o| WORKLOADS.iter().any(|x| x.contains(o.as_str())));
        let p = self.args.only.iter().any(|o| PEERS.iter().any(|x| x.name().contains(o.as_str())));
        (!w || self.wants(workload)) && (!p || self.wants(peer.name()))
    }

    fn record(
        &mut self,
        workload: &'static str,
        peer: Peer,
        variant: &'static str,
        unit: &'static str,
        v: f64,
        note: &'static str,
    ) {
        if !self.wants_cell(workload, peer) {
            return;
        }
        match self
            .rows
            .iter_mut()
            .find(|r| r.workload == workload && r.peer == peer.name() && r.variant == variant)
        {
            Some(r) => r.samples.push(v),
            None => self.rows.push(Row {
                workload,
                peer: peer.name(),
                variant,
                unit,
                samples: vec![v],
                median: v,
                note,
            }),
        }
    }

    fn rate(&mut self, workload: &'static str, peer: Peer, ops: u64, took: Duration) {
        self.record(workload, peer, "", "ops/s", ops as f64 / took.as_secs_f64(), "");
    }

    fn dir(&self, name: &str) -> PathBuf {
        let d = self.root.path().join(name);
        let _ = std::fs::remove_dir_all(&d);
        let _ = std::fs::remove_file(&d);
        d
    }
}

/// Times `f`.
fn timed<T>(f: impl FnOnce() -> R<T>) -> R<(T, Duration)> {
    let t = Instant::now();
    let v = f()?;
    Ok((v, t.elapsed()))
}

/// Runs the suite.
pub fn run(args: Args) -> R<()> {
    // The mmkv crate logs every file expansion at info level.
    mmkv::MMKV::set_log_level(mmkv::LogLevel::Error);
    if let Some(Role::Child(c)) = args.role {
        return child(c);
    }
    let parent = args.dir.clone().unwrap_or_else(|| PathBuf::from("."));
    let root = tempfile::Builder::new().prefix(".mmkit-bench-kv").tempdir_in(&parent)?;
    let json = args.json;
    let mut suite = Suite { args, rows: Vec::new(), root };
    let machine = crate::machine::print_header(json);
    let head = format!(
        "mmkit-bench kv: {} entries of 24 B keys and 150 B values, {} reps, in {}\n",
        suite.args.entries,
        suite.args.reps,
        suite.root.path().display()
    );
    emit(json, &head);
    for rep in 0..suite.args.reps {
        for peer in PEERS {
            if !suite.args.only.is_empty()
                && suite.args.only.iter().any(|o| PEERS.iter().any(|x| x.name().contains(o.as_str())))
                && !suite.wants(peer.name())
            {
                continue;
            }
            eprintln!("rep {}/{}: {}", rep + 1, suite.args.reps, peer.name());
            let result =
                if peer == Peer::Mmkv { mmkv_sequence(&mut suite) } else { sequence(&mut suite, peer) };
            if let Err(e) = result {
                eprintln!("{}: {e}", peer.name());
            }
        }
    }
    for r in &mut suite.rows {
        r.median = med(&r.samples);
    }
    emit(json, &render(&suite.rows));
    if json {
        let doc =
            serde_json::json!({ "machine": machine, "entries": suite.args.entries, "rows": suite.rows });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    }
    Ok(())
}

fn emit(json: bool, text: &str) {
    if json {
        eprint!("{text}");
    } else {
        print!("{text}");
        let _ = std::io::stdout().flush();
    }
}

/// The whole sequence on one ordered store.
fn sequence(s: &mut Suite, peer: Peer) -> R<()> {
    let n = s.args.entries;
    let path = s.dir(peer.name());
    let mut store = open_ordered(peer, &path)?;
    // bulk load: one transaction, random order.
    let ((), took) = timed(|| store.write(&mut (0..n).map(|i| (key(i), value(i))), true))?;
    s.rate(W_BULK, peer, n, took);
    s.record(W_SIZE, peer, "after load", "bytes", store.size()? as f64, "");
    // individual writes: new keys, one per commit.
    let ((), took) = timed(|| {
        for j in 0..DURABLE_COMMITS {
            store.write(&mut std::iter::once((key(n + j), value(j))), true)?;
        }
        Ok(())
    })?;
    s.rate(W_DURABLE, peer, DURABLE_COMMITS, took);
    let ((), took) = timed(|| {
        for j in 0..NOSYNC_COMMITS {
            store.write(&mut std::iter::once((key(2 * n + j), value(j))), false)?;
        }
        Ok(())
    })?;
    s.rate(W_NOSYNC, peer, NOSYNC_COMMITS, took);
    let ((), took) = timed(|| {
        for b in 0..BATCHES {
            let base = 3 * n + b * BATCH;
            store.write(&mut (base..base + BATCH).map(|i| (key(i), value(i))), true)?;
        }
        Ok(())
    })?;
    s.rate(W_BATCH, peer, BATCHES * BATCH, took);
    // reads.
    let (bytes, took) = timed(|| store.get_all(&mut shuffled(n, 7).map(key)))?;
    assert_eq!(bytes, n * 150, "{}: reads found every key", peer.name());
    s.rate(W_READ1, peer, n, took);
    if let Some(shared) = store.shareable() {
        let took = two_threads(shared, n)?;
        s.rate(W_READ2, peer, n, took);
    }
    if matches!(peer, Peer::MmkitKv | Peer::Lmdb) && s.wants_cell(W_READP, peer) {
        drop(store);
        let took = two_processes(peer, &path, n)?;
        s.rate(W_READP, peer, n, took);
        store = open_ordered(peer, &path)?;
    }
    let (_, took) = timed(|| store.ranges(&mut shuffled(n, 11).take(RANGES as usize).map(key), 10))?;
    s.rate(W_RANGE, peer, RANGES, took);
    // removals: half the keys, one transaction.
    let ((), took) = timed(|| store.remove(&mut (0..n).step_by(2).map(key)))?;
    s.rate(W_REMOVE, peer, n / 2, took);
    // compaction.
    let cdir = s.dir(&format!("{}-compact", peer.name()));
    std::fs::create_dir_all(&cdir)?;
    let (after, took) = timed(|| store.compact(&cdir))?;
    s.record(W_COMPACT, peer, "", "ns", took.as_nanos() as f64, "");
    if let Some(bytes) = after {
        s.record(W_SIZE, peer, "after compaction", "bytes", bytes as f64, "");
    }
    let _ = std::fs::remove_dir_all(&cdir);
    drop(store);
    // open after kill -9, on the loaded database.
    if s.wants_cell(W_OPEN, peer) {
        let ns = open_after_kill(peer, &path, n)?;
        s.record(W_OPEN, peer, "", "ns", ns as f64, "");
    }
    let _ = std::fs::remove_dir_all(&path);
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(mmkit_kv::lock_path(&path));
    small_sets(s, peer)
}

fn two_threads(store: &(dyn Ordered + Sync), n: u64) -> R<Duration> {
    let t = Instant::now();
    let results: Vec<Result<u64, String>> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..2u64)
            .map(|k| {
                sc.spawn(move || {
                    let mut keys =
                        shuffled(n, 13 + k).skip((k * n / 2) as usize).take((n / 2) as usize).map(key);
                    store.get_all(&mut keys).map_err(|e| e.to_string())
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap_or_else(|_| Err("reader thread panicked".into()))).collect()
    });
    for r in results {
        r?;
    }
    Ok(t.elapsed())
}

fn spawn_child(peer: Peer, path: &Path, task: &str, n: u64, entries: u64) -> R<std::process::Child> {
    Ok(Command::new(std::env::current_exe()?)
        .args(["kv", "child", "--peer", peer.name(), "--task", task])
        .arg("--path")
        .arg(path)
        .args(["--n", &n.to_string(), "--entries", &entries.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?)
}

fn read_line(child: &mut std::process::Child) -> R<String> {
    let out = child.stdout.as_mut().ok_or("child has no stdout")?;
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line)?;
    Ok(line.trim().to_string())
}

/// Two reader processes, each doing half the gets, started together.
fn two_processes(peer: Peer, path: &Path, n: u64) -> R<Duration> {
    let mut kids: Vec<_> = (0..2).map(|k| spawn_child(peer, path, "reader", n / 2, k)).collect::<R<_>>()?;
    for k in &mut kids {
        if read_line(k)? != "ready" {
            return Err("reader did not start".into());
        }
    }
    let t = Instant::now();
    for k in &mut kids {
        writeln!(k.stdin.as_mut().ok_or("no stdin")?, "go")?;
    }
    for k in &mut kids {
        read_line(k)?;
        k.wait()?;
    }
    Ok(t.elapsed())
}

/// A writer process on the loaded store is SIGKILLed mid-stream; a fresh
/// process then opens the store and reads one key. Returns its open time.
fn open_after_kill(peer: Peer, path: &Path, n: u64) -> R<u64> {
    let mut w = spawn_child(peer, path, "writer", 0, n)?;
    if read_line(&mut w)? != "writing" {
        return Err("writer did not start".into());
    }
    std::thread::sleep(Duration::from_millis(150));
    w.kill()?;
    w.wait()?;
    let mut o = spawn_child(peer, path, "open", 0, n)?;
    let ns: u64 = read_line(&mut o)?.parse()?;
    o.wait()?;
    Ok(ns)
}

fn child(c: ChildArgs) -> R<()> {
    let peer = Peer::parse(&c.peer)?;
    let mut out = std::io::stdout().lock();
    match c.task.as_str() {
        "reader" => {
            let store = open_ordered(peer, &c.path)?;
            writeln!(out, "ready")?;
            out.flush()?;
            let mut go = String::new();
            std::io::stdin().read_line(&mut go)?;
            let read = store.get_all(
                &mut shuffled(c.n * 2, 17 + c.entries)
                    .skip((c.entries * c.n) as usize)
                    .take(c.n as usize)
                    .map(key),
            )?;
            writeln!(out, "{read}")?;
        }
        "writer" => {
            let mut store = open_ordered(peer, &c.path)?;
            writeln!(out, "writing")?;
            out.flush()?;
            let mut i = 0u64;
            loop {
                let base = 10 * c.entries + i * 100;
                store.write(&mut (base..base + 100).map(|j| (key(j), value(j))), false)?;
                i += 1;
            }
        }
        "open" => {
            let t = Instant::now();
            let store = open_ordered(peer, &c.path)?;
            store.get_all(&mut std::iter::once(key(1)))?;
            let ns = t.elapsed().as_nanos();
            writeln!(out, "{ns}")?;
        }
        other => return Err(format!("unknown task {other}").into()),
    }
    Ok(())
}

/// 1000 string sets, each its own commit, no sync: the MMKV workload.
/// Reported as the median nanoseconds per set over five rounds.
fn small_sets(s: &mut Suite, peer: Peer) -> R<()> {
    if !s.wants_cell(W_SMALL, peer) {
        return Ok(());
    }
    let path = s.dir(&format!("{}-small", peer.name()));
    let mut rounds = Vec::new();
    match peer {
        Peer::MmkitKv => {
            let kv = mmkit_kv::Kv::open(&path)?;
            for r in 0..5 {
                let ((), took) = timed(|| {
                    for i in 0..SMALL_SETS {
                        kv.set(format!("key{i}"), format!("value {i} {r}"))?;
                    }
                    Ok(())
                })?;
                rounds.push(took);
            }
        }
        Peer::Mmkv => {
            std::fs::create_dir_all(&path)?;
            let kv = mmkv::MMKV::new(path.to_str().ok_or("path")?).map_err(|e| format!("mmkv: {e:?}"))?;
            for r in 0..5 {
                let ((), took) = timed(|| {
                    for i in 0..SMALL_SETS {
                        kv.put(&format!("key{i}"), format!("value {i} {r}"))
                            .map_err(|e| format!("mmkv: {e:?}"))?;
                    }
                    Ok(())
                })?;
                rounds.push(took);
            }
        }
        _ => {
            let mut store = open_ordered(peer, &path)?;
            for r in 0..5u64 {
                let ((), took) = timed(|| {
                    for i in 0..SMALL_SETS {
                        let mut k = [0u8; 24];
                        let text = format!("key{i}");
                        k[..text.len()].copy_from_slice(text.as_bytes());
                        store.write(&mut std::iter::once((k, value(i + r))), false)?;
                    }
                    Ok(())
                })?;
                rounds.push(took);
            }
        }
    }
    let per_set: Vec<f64> = rounds.iter().map(|t| t.as_nanos() as f64 / SMALL_SETS as f64).collect();
    s.record(W_SMALL, peer, "", "ns", med(&per_set), "ns per set");
    let _ = std::fs::remove_dir_all(&path);
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(mmkit_kv::lock_path(&path));
    Ok(())
}

/// mmkv takes part where it has an equivalent: single puts without sync
/// (on an empty store; it keeps every key in a hash map in memory) and the
/// small-sets workload.
fn mmkv_sequence(s: &mut Suite) -> R<()> {
    let peer = Peer::Mmkv;
    if s.wants_cell(W_NOSYNC, peer) {
        let path = s.dir("mmkv");
        std::fs::create_dir_all(&path)?;
        let kv = mmkv::MMKV::new(path.to_str().ok_or("path")?).map_err(|e| format!("mmkv: {e:?}"))?;
        let ((), took) = timed(|| {
            for j in 0..NOSYNC_COMMITS {
                let k = key(j);
                kv.put(&format!("{:x}{:x}", u128::from_be_bytes(k[..16].try_into()?), j), &value(j)[..])
                    .map_err(|e| format!("mmkv: {e:?}"))?;
            }
            Ok(())
        })?;
        s.rate(W_NOSYNC, peer, NOSYNC_COMMITS, took);
        drop(kv);
        let _ = std::fs::remove_dir_all(&path);
    }
    small_sets(s, peer)
}

// ------------------------------------------------------------------ tables

fn fmt(unit: &str, v: f64) -> String {
    match unit {
        "ops/s" if v >= 1e6 => format!("{:.2} M/s", v / 1e6),
        "ops/s" => format!("{:.1} k/s", v / 1e3),
        "bytes" => format!("{:.1} MiB", v / (1 << 20) as f64),
        _ if v >= 1e6 => format!("{:.2} ms", v / 1e6),
        _ => format!("{:.2} µs", v / 1e3),
    }
}

/// Markdown tables, one per workload, with mmkit-kv's advantage (above 1
/// means mmkit-kv is better).
fn render(rows: &[Row]) -> String {
    let mut s = String::new();
    for w in WORKLOADS {
        let mine: Vec<&Row> = rows.iter().filter(|r| r.workload == w).collect();
        if mine.is_empty() {
            continue;
        }
        s.push_str(&format!(
            "\n### {w}\n\n| peer | variant | median | range | mmkit-kv advantage |\n|---|---|---|---|---|\n"
        ));
        for r in &mine {
            let ours = mine.iter().find(|o| o.peer == "mmkit-kv" && o.variant == r.variant).map(|o| o.median);
            let adv = ours.map(|o| if r.unit == "ops/s" { o / r.median } else { r.median / o });
            let lo = r.samples.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = r.samples.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            s.push_str(&format!(
                "| {} | {} | {} | {}–{} | {} |\n",
                r.peer,
                r.variant,
                fmt(r.unit, r.median),
                fmt(r.unit, lo),
                fmt(r.unit, hi),
                adv.map(|a| format!("{a:.2}×")).unwrap_or_default()
            ));
        }
    }
    s
}
