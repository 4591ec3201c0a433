//! Real processes: readers and writers in separate processes, writers
//! SIGKILLed at random points (inside large batches and mid-commit), dead
//! readers reclaimed by liveness, and a full disk. The test binary re-runs
//! itself with `MMKV_ROLE` set to act as a child.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mmkit_kv::{Db, Durability, Error};

const ACCOUNTS: u64 = 64;
const START_BALANCE: u64 = 1000;

/// A child process killed when dropped, so a failing test leaves none behind.
struct Kid {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Kid {
    fn spawn(role: &str, path: &Path, extra: &[(&str, &str)]) -> Kid {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["child_entry", "--exact", "--nocapture", "--test-threads=1"])
            .env("MMKV_ROLE", role)
            .env("MMKV_PATH", path);
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Kid { child, lines }
    }

    /// Waits for a line starting with `prefix`; returns the rest.
    fn expect(&self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                // The harness may print "test child_entry ... " first.
                Ok(l) if l.contains(prefix) => {
                    return l[l.find(prefix).unwrap_or(0) + prefix.len()..].trim().to_string();
                }
                Ok(_) => {}
                Err(e) => panic!("child gave no {prefix:?} line: {e}"),
            }
        }
    }

    fn sigkill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rng(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

fn acct(i: u64) -> [u8; 8] {
    i.to_be_bytes()
}

fn num(b: &[u8]) -> u64 {
    u64::from_le_bytes(b.try_into().expect("an 8-byte number"))
}

/// Entry point of every child process.
#[test]
fn child_entry() {
    let Ok(role) = std::env::var("MMKV_ROLE") else { return };
    let path = PathBuf::from(std::env::var("MMKV_PATH").unwrap());
    let code = match role.as_str() {
        "writer" => run_writer(&path),
        "reader" => run_reader(&path),
        "pin" => run_pin(&path),
        "hold_writer" => run_hold_writer(&path),
        "fsize" => run_fsize(&path),
        "fsize-log" => run_fsize_log(&path),
        "unprivileged" => run_unprivileged(&path),
        _ => 2,
    };
    std::process::exit(code);
}

/// Transfers between accounts, one transaction per batch (sometimes a
/// large one), appending one log entry per commit; prints each committed
/// sequence number once `commit` has returned.
fn run_writer(path: &Path) -> i32 {
    let durability = match std::env::var("MMKV_DURABILITY").as_deref() {
        Ok("immediate") => Durability::Immediate,
        Ok("group") => Durability::Group,
        _ => Durability::Eventual,
    };
    let log_size = std::env::var("MMKV_LOG_SIZE").map_or(mmkit_kv::DEFAULT_LOG_SIZE, |v| v.parse().unwrap());
    let db = Db::options().durability(durability).log_size(log_size).open(path).unwrap();
    let mut seed = (std::process::id() as u64).wrapping_mul(0x9E3779B97F4A7C15) | 1;
    let mut out = std::io::stdout().lock();
    loop {
        let mut w = db.write().unwrap();
        let seq = w.table("meta").unwrap().get("seq").unwrap().map_or(0, num) + 1;
        let batch = if rng(&mut seed) % 8 == 0 { 2000 } else { 1 + rng(&mut seed) % 20 };
        {
            let mut bank = w.table("bank").unwrap();
            for _ in 0..batch {
                let (a, b) = (rng(&mut seed) % ACCOUNTS, rng(&mut seed) % ACCOUNTS);
                let ba = num(bank.get(acct(a)).unwrap().unwrap());
                let amount = rng(&mut seed) % (ba + 1);
                bank.put(acct(a), (ba - amount).to_le_bytes()).unwrap();
                let bb = num(bank.get(acct(b)).unwrap().unwrap());
                bank.put(acct(b), (bb + amount).to_le_bytes()).unwrap();
            }
        }
        w.table("meta").unwrap().put("seq", seq.to_le_bytes()).unwrap();
        // Log values of varied size, some in overflow pages.
        let len = if seq % 5 == 0 { 20_000 } else { (seq % 300) as usize };
        w.table("log").unwrap().put(seq.to_be_bytes(), vec![seq as u8; len]).unwrap();
        w.commit().unwrap();
        writeln!(out, "ACK {seq}").unwrap();
        out.flush().unwrap();
    }
}

/// Checks, in snapshot after snapshot, that the money adds up, that the log
/// holds exactly one entry per commit, and that snapshots never go back.
fn run_reader(path: &Path) -> i32 {
    let db = Db::options().read_only(true).open(path).unwrap();
    let until = Instant::now() + Duration::from_millis(std::env::var("MMKV_MS").unwrap().parse().unwrap());
    let (mut reads, mut last_seq) = (0u64, 0u64);
    while Instant::now() < until {
        let r = db.read().unwrap();
        let bank = r.table("bank").unwrap();
        let total: u64 = bank.iter().map(|e| num(e.unwrap().1)).sum();
        let seq = r.table("meta").unwrap().get("seq").unwrap().map_or(0, num);
        let log = r.table("log").map(|t| t.len()).unwrap_or(0);
        if total != ACCOUNTS * START_BALANCE || log != seq || seq < last_seq || bank.len() != ACCOUNTS {
            eprintln!(
                "reader saw a partial transaction: total {total}, seq {seq} (last {last_seq}), log {log}"
            );
            return 1;
        }
        last_seq = seq;
        reads += 1;
    }
    println!("READS {reads}");
    0
}

fn run_pin(path: &Path) -> i32 {
    let db = Db::options().read_only(true).open(path).unwrap();
    let r = db.read().unwrap();
    println!("PINNED {}", r.txnid());
    std::thread::sleep(Duration::from_secs(60));
    drop(r);
    0
}

fn run_hold_writer(path: &Path) -> i32 {
    let db = Db::open(path).unwrap();
    let mut w = db.write().unwrap();
    w.table("meta").unwrap().put("uncommitted", "x").unwrap();
    println!("HOLDING");
    std::thread::sleep(Duration::from_secs(60));
    0
}

fn init_bank(path: &Path) {
    let db = Db::open(path).unwrap();
    let mut w = db.write().unwrap();
    let mut bank = w.table("bank").unwrap();
    for i in 0..ACCOUNTS {
        bank.put(acct(i), START_BALANCE.to_le_bytes()).unwrap();
    }
    w.table("meta").unwrap().put("seq", 0u64.to_le_bytes()).unwrap();
    w.commit().unwrap();
}

/// The committed state: sequence number, money total, log length.
fn audit(path: &Path) -> (u64, u64, u64) {
    let db = Db::open(path).unwrap();
    let r = db.read().unwrap();
    let total = r.table("bank").unwrap().iter().map(|e| num(e.unwrap().1)).sum();
    let seq = r.table("meta").unwrap().get("seq").unwrap().map_or(0, num);
    let log = r.table("log").map(|t| t.len()).unwrap_or(0);
    drop(r);
    let report = db.check().unwrap();
    assert_eq!(report.leaked_pages, 0, "{report:?}");
    (seq, total, log)
}

fn sigkill_rounds(durability: &str, rounds: usize) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bank.kv");
    init_bank(&path);
    let ms = (rounds * 150 + 500).to_string();
    let readers: Vec<Kid> = (0..2).map(|_| Kid::spawn("reader", &path, &[("MMKV_MS", &ms)])).collect();
    let mut seed = 0x1234_5678_9abc_def1u64;
    for round in 0..rounds {
        let before = audit(&path).0;
        let started = Instant::now();
        let mut w = Kid::spawn("writer", &path, &[("MMKV_DURABILITY", durability)]);
        // The writer starts at once even though its predecessor died
        // holding the writer lock (liveness, not a timeout).
        let first: u64 = w.expect("ACK ", Duration::from_secs(10)).parse().unwrap();
        // `before + 2` when the killed writer had written its whole commit
        // but died before announcing it: the next writer adopts it.
        assert!(
            first == before + 1 || first == before + 2,
            "round {round}: after {before}, first commit {first}"
        );
        assert!(started.elapsed() < Duration::from_secs(5), "writer took {:?} to commit", started.elapsed());
        std::thread::sleep(Duration::from_millis(20 + rng(&mut seed) % 80));
        w.sigkill();
        let mut acked = first;
        // The pipe closes with the process: read everything it printed.
        while let Ok(l) = w.lines.recv_timeout(Duration::from_secs(10)) {
            if let Some(at) = l.find("ACK ") {
                acked = l[at + 4..].trim().parse().unwrap();
            }
        }
        let (seq, total, log) = audit(&path);
        assert!(seq == acked || seq == acked + 1, "round {round}: acked {acked}, database holds {seq}");
        assert_eq!(total, ACCOUNTS * START_BALANCE, "round {round}: money created or lost");
        assert_eq!(log, seq, "round {round}: a commit is partly missing");
    }
    for mut r in readers {
        let reads: u64 = r.expect("READS ", Duration::from_secs(30)).parse().unwrap();
        assert!(reads > 0);
        assert!(r.child.wait().unwrap().success(), "a reader saw a partial transaction");
    }
}

#[test]
fn sigkilled_writers_eventual() {
    sigkill_rounds("eventual", 8);
}

#[test]
fn sigkilled_writers_immediate() {
    sigkill_rounds("immediate", 4);
}

#[test]
fn sigkilled_writers_group() {
    sigkill_rounds("group", 3);
}

/// A writer killed while holding the write transaction: the next one gets
/// the lock within milliseconds and sees none of its changes.
#[test]
fn killed_lock_holder_is_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    init_bank(&path);
    let mut holder = Kid::spawn("hold_writer", &path, &[]);
    holder.expect("HOLDING", Duration::from_secs(10));
    holder.sigkill();
    let db = Db::open(&path).unwrap();
    let t = Instant::now();
    let w = db.write().unwrap();
    assert!(t.elapsed() < Duration::from_secs(2), "takeover took {:?}", t.elapsed());
    drop(w);
    let r = db.read().unwrap();
    assert_eq!(r.table("meta").unwrap().get("uncommitted").unwrap(), None);
}

/// A reader killed inside its read transaction stops pinning pages: the
/// next writer that needs them reclaims its slot by liveness, and the file
/// stops growing.
#[test]
fn dead_reader_stops_pinning_pages() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let db = Db::options().create(true).durability(Durability::Eventual).open(&path).unwrap();
    let big = vec![7u8; 40_000];
    let rewrite = |n: usize| {
        for i in 0..n {
            let mut w = db.write().unwrap();
            w.default_table().unwrap().put("k", &big[..39_000 + i % 1000]).unwrap();
            w.commit().unwrap();
        }
    };
    rewrite(5);
    let mut pin = Kid::spawn("pin", &path, &[]);
    let pinned: u64 = pin.expect("PINNED", Duration::from_secs(10)).parse().unwrap();
    rewrite(50);
    let stat = db.stat().unwrap();
    let oldest = stat.oldest.clone().expect("the pinning reader shows in stat");
    assert_eq!((oldest.txnid, oldest.pid, oldest.alive), (pinned, pin.child.id(), true));
    assert!(oldest.lag >= 50);
    let pinned_pages = stat.pages;
    pin.sigkill();
    rewrite(200);
    let stat = db.stat().unwrap();
    assert!(stat.oldest.is_none(), "dead reader still listed: {:?}", stat.oldest);
    assert!(stat.pages <= pinned_pages + 8, "file kept growing: {} -> {} pages", pinned_pages, stat.pages);
    assert_eq!(db.check().unwrap().leaked_pages, 0);
}

/// A dead reader reaped in the middle of a transaction that had already
/// taken free-tree records into its pool: the scan of the free tree goes
/// on from where it stopped. It restarted from the beginning, took the
/// same records again and handed their pages out twice, and the table
/// lost most of its entries.
#[test]
fn reaping_a_dead_reader_mid_transaction_hands_out_no_page_twice() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let db = Db::options().create(true).durability(Durability::Immediate).open(&path).unwrap();
    let rewrite = |value: u8| {
        let mut w = db.write().unwrap();
        let mut t = w.table("t").unwrap();
        for i in 0u32..20_000 {
            t.put(i.to_be_bytes(), [value; 100]).unwrap();
        }
        w.commit().unwrap();
    };
    // Rewrites leave free records that any transaction may reuse.
    for v in 0..3 {
        rewrite(v);
    }
    let mut pin = Kid::spawn("pin", &path, &[]);
    pin.expect("PINNED", Duration::from_secs(10));
    // Small commits: the pages they free are held by the pinning reader,
    // which falls more than 8 commits behind (so writers check whether it
    // still lives).
    for i in 0u32..10 {
        let mut w = db.write().unwrap();
        w.table("t").unwrap().put((i * 1000).to_be_bytes(), [7u8; 100]).unwrap();
        w.commit().unwrap();
    }
    pin.sigkill();
    // Takes the reusable records, meets the held ones, reaps the dead
    // reader and goes on.
    rewrite(99);
    let r = db.read().unwrap();
    let t = r.table("t").unwrap();
    assert_eq!(t.len(), 20_000);
    assert_eq!(t.iter().filter(|e| e.as_ref().is_ok_and(|(_, v)| *v == [99u8; 100])).count(), 20_000);
    drop(r);
    assert_eq!(db.check().unwrap().leaked_pages, 0);
}

/// A live reader older than `max_snapshot_lag` makes a commit that would
/// grow the file fail, instead of letting the file grow silently.
#[test]
fn snapshot_lag_bound_is_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let db = Db::options()
        .create(true)
        .durability(Durability::Eventual)
        .max_snapshot_lag(Some(10))
        .open(&path)
        .unwrap();
    let r = db.read().unwrap();
    let mut err = None;
    for i in 0..200u32 {
        let mut w = db.write().unwrap();
        let put = w.default_table().unwrap().put("k", vec![i as u8; 20_000]);
        match put.and_then(|_| w.commit()) {
            Ok(_) => {}
            Err(e) => {
                err = Some((i, e));
                break;
            }
        }
    }
    let (i, e) = err.expect("the lag bound stops growth");
    assert!(matches!(e, Error::SnapshotTooOld { limit: 10, .. }), "{e}");
    assert!(i >= 10, "failed after {i} commits");
    assert!(e.to_string().contains(&std::process::id().to_string()));
    drop(r);
    let mut w = db.write().unwrap();
    w.default_table().unwrap().put("k", "small").unwrap();
    w.commit().unwrap();
}

/// Opens `path` under a 4 MiB `RLIMIT_FSIZE` and commits `step(table,
/// n)` for n = 0, 1, ... until a commit fails: returns the database, the
/// commits that succeeded and the error (`None` after 1000 commits).
fn commit_until_full(
    path: &Path,
    mut step: impl FnMut(&mut mmkit_kv::TableMut<'_, '_>, u32) -> mmkit_kv::Result<()>,
) -> (Db, u32, Option<Error>) {
    // SAFETY: setting a signal disposition to SIG_IGN has no memory effects.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    let db = Db::options().create(true).durability(Durability::Immediate).open(path).unwrap();
    let limit = rustix::process::Rlimit { current: Some(4 << 20), maximum: None };
    rustix::process::setrlimit(rustix::process::Resource::Fsize, limit).unwrap();
    for committed in 0..=1000 {
        let mut w = db.write().unwrap();
        if let Err(e) = step(&mut w.table("t").unwrap(), committed).and_then(|_| w.commit()) {
            return (db, committed, Some(e));
        }
    }
    (db, 1001, None)
}

/// Growth hits the file-size limit (a stand-in for a full disk): the commit
/// fails with a clear error and the database stays at its last commit.
fn run_fsize(path: &Path) -> i32 {
    let (db, committed, err) = commit_until_full(path, |t, n| t.put(n.to_be_bytes(), vec![1u8; 100_000]));
    let Some(err) = err else { return 3 };
    eprintln!("full disk after {committed} commits: {err}");
    if !matches!(err, Error::NoSpace { .. }) || !err.to_string().contains("db") {
        return 4;
    }
    let r = db.read().unwrap();
    let t = r.table("t").unwrap();
    if t.len() != committed as u64 || db.check().is_err() {
        return 5;
    }
    println!("COMMITTED {committed}");
    0
}

/// The redo log fills the limit first: the same key rewritten (so the data
/// file reuses its pages) with values the log must copy each time.
fn run_fsize_log(path: &Path) -> i32 {
    let (db, committed, err) = commit_until_full(path, |t, n| {
        t.put("value", vec![n as u8; 100_000])?;
        t.put("seq", n.to_be_bytes())
    });
    let Some(err) = err else { return 3 };
    eprintln!("full log after {committed} commits: {err}");
    if !matches!(err, Error::NoSpace { .. }) || !err.to_string().contains("db-log") {
        return 4;
    }
    let last = committed - 1;
    let r = db.read().unwrap();
    let t = r.table("t").unwrap();
    if t.get("seq").unwrap() != Some(&last.to_be_bytes()[..]) || db.check().is_err() {
        return 5;
    }
    println!("COMMITTED {last}");
    0
}

#[test]
fn a_full_disk_under_the_redo_log_is_an_error_at_commit_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let mut kid = Kid::spawn("fsize-log", &path, &[]);
    let last: u32 = kid.expect("COMMITTED ", Duration::from_secs(30)).parse().unwrap();
    assert!(kid.child.wait().unwrap().success());
    assert!(last > 0);
    // Cold, as after a reboot: the failed commit's meta is gone, the
    // chain ends at the last commit that returned.
    std::fs::remove_file(mmkit_kv::lock_path(&path)).unwrap();
    let db = Db::open(&path).unwrap();
    let r = db.read().unwrap();
    assert_eq!(r.table("t").unwrap().get("seq").unwrap(), Some(&last.to_be_bytes()[..]));
    assert_eq!(r.table("t").unwrap().get("value").unwrap().map(|v| v[0]), Some(last as u8));
    db.check().unwrap();
}

#[test]
fn full_disk_is_an_error_at_commit_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let mut kid = Kid::spawn("fsize", &path, &[]);
    let n: u64 = kid.expect("COMMITTED ", Duration::from_secs(30)).parse().unwrap();
    assert!(kid.child.wait().unwrap().success());
    assert!(n > 0);
    let db = Db::open(&path).unwrap();
    assert_eq!(db.read().unwrap().table("t").unwrap().len(), n);
    // With the limit gone, writing goes on.
    let mut w = db.write().unwrap();
    w.table("t").unwrap().put("more", vec![2u8; 100_000]).unwrap();
    w.commit().unwrap();
}

/// As an unprivileged user: a database it may not read is a clear error;
/// one it may only read opens read-only, and opening it for writing is a
/// clear error.
fn run_unprivileged(path: &Path) -> i32 {
    // SAFETY: plain syscalls without memory arguments.
    unsafe {
        if libc::setgid(65534) != 0 || libc::setuid(65534) != 0 {
            eprintln!("could not drop to uid 65534: {}", std::io::Error::last_os_error());
            return 4;
        }
    }
    let secret = path.with_file_name("secret");
    match Db::open(&secret) {
        Err(e) if e.to_string().contains("Permission denied") => {}
        other => {
            eprintln!("unreadable database: {other:?}");
            return 1;
        }
    }
    match Db::open(path) {
        Err(e) if e.to_string().contains("Permission denied") => {}
        other => {
            eprintln!("read-only file opened for writing: {other:?}");
            return 2;
        }
    }
    let db = Db::options().read_only(true).open(path).unwrap();
    let ok = db.read().unwrap().table("t").unwrap().get("k").unwrap() == Some(&b"v"[..]);
    if !ok || !matches!(db.write(), Err(Error::ReadOnly { .. })) {
        return 3;
    }
    0
}

#[test]
fn permissions_are_clear_errors() {
    use std::os::unix::fs::PermissionsExt;
    if !rustix::process::geteuid().is_root() {
        assert!(std::env::var_os("MMKIT_TEST_NO_SKIP").is_none(), "needs root to switch users");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.path().join("db");
    let secret = dir.path().join("secret");
    for p in [&path, &secret] {
        let db = Db::open(p).unwrap();
        let mut w = db.write().unwrap();
        w.table("t").unwrap().put("k", "v").unwrap();
        w.commit().unwrap();
        std::fs::set_permissions(mmkit_kv::lock_path(p), std::fs::Permissions::from_mode(0o666)).unwrap();
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut kid = Kid::spawn("unprivileged", &path, &[]);
    let status = kid.child.wait().unwrap();
    assert!(status.success(), "unprivileged child: {status:?}");
}

/// An open while another process has the database open and a read
/// transaction running is not alone: it leaves that reader's slot alone
/// (it used to clear every slot when the boot id could not be read) and
/// never resets the lock file under it.
#[test]
fn a_second_open_keeps_the_first_ones_readers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    init_bank(&path);
    let mut pin = Kid::spawn("pin", &path, &[]);
    pin.expect("PINNED", Duration::from_secs(10));
    let db = Db::open(&path).unwrap();
    let stat = db.stat().unwrap();
    assert_eq!(stat.readers, 1);
    assert_eq!(stat.oldest.map(|s| s.pid), Some(pin.child.id()));
    let mut w = db.write().unwrap();
    w.table("meta").unwrap().put("seq", 1u64.to_le_bytes()).unwrap();
    w.commit().unwrap();
    assert_eq!(db.stat().unwrap().oldest.map(|s| s.pid), Some(pin.child.id()), "still pinned");
    pin.sigkill();
}

/// The same with a damaged lock file: its state word no longer says
/// READY while another process has the database open with a reader. The
/// second open recovers under the writer mutex, and used to clear every
/// reader slot on the way, the live reader's too.
#[test]
fn a_damaged_lock_file_keeps_live_readers() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    init_bank(&path);
    let mut pin = Kid::spawn("pin", &path, &[]);
    pin.expect("PINNED", Duration::from_secs(10));
    let lock = std::fs::OpenOptions::new().write(true).open(mmkit_kv::lock_path(&path)).unwrap();
    lock.write_all_at(&0u64.to_le_bytes(), 192).unwrap(); // the state word
    let db = Db::open(&path).unwrap();
    let stat = db.stat().unwrap();
    assert_eq!(stat.readers, 1, "the live reader's slot is kept");
    assert_eq!(stat.oldest.map(|s| s.pid), Some(pin.child.id()));
    let mut w = db.write().unwrap();
    w.table("meta").unwrap().put("seq", 2u64.to_le_bytes()).unwrap();
    w.commit().unwrap();
    assert_eq!(db.stat().unwrap().oldest.map(|s| s.pid), Some(pin.child.id()), "still pinned");
    pin.sigkill();
}

/// The pages the redo log's chain (from offset 0, whole records, txnids
/// in sequence, one base) holds images of, read as kv-format.md describes
/// a record: what a cold open would replay.
fn chain_pages(log: &[u8]) -> Vec<u64> {
    let u64_at = |at: usize| u64::from_le_bytes(log[at..at + 8].try_into().unwrap());
    let (mut at, mut pages, mut prev) = (0usize, Vec::new(), None::<(u64, u64)>);
    while at + 4096 <= log.len() && &log[at + 4..at + 8] == b"mkvl" {
        let (txnid, base) = (u64_at(at + 24), u64_at(at + 32));
        let follows = prev.map_or(txnid == base + 1, |(t, b)| txnid == t + 1 && base == b);
        if !follows {
            break;
        }
        let n = u32::from_le_bytes(log[at + 40..at + 44].try_into().unwrap()) as usize;
        let len = (176 + 8 * n).div_ceil(4096) * 4096 + 4096 * n;
        let whole = log.get(at..at + len).is_some_and(|r| crc32c::crc32c(&r[4..]).to_le_bytes() == r[..4]);
        if !whole {
            break;
        }
        pages.extend((0..n).map(|i| u64_at(at + 176 + 8 * i)));
        at += len;
        prev = Some((txnid, base));
    }
    pages
}

/// A writer SIGKILLed anywhere, then the power goes before the kernel
/// wrote back any page a logged commit wrote (the worst write-back: each
/// such page is zeros on disk). The cold open replays the log and finds
/// every acknowledged commit, whole.
#[test]
fn sigkilled_writer_then_power_loss_replays_the_log() {
    killed_then_power_loss(&mmkit_kv::DEFAULT_LOG_SIZE.to_string(), 1);
}

/// The same with a log of 256 KiB: chains start over every few commits,
/// so kills land in checkpoints too (between the data file's sync and the
/// new chain's first record).
#[test]
fn sigkilled_writer_in_checkpoints_then_power_loss_replays_the_log() {
    killed_then_power_loss("262144", 1);
}

/// Three writer processes take turns at the writer lock, each with its
/// own handle on the log, extending one chain; all are SIGKILLed.
#[test]
fn writers_of_three_processes_share_one_chain() {
    killed_then_power_loss("1048576", 3);
}

/// Writers SIGKILLed at random points, then the power goes before the
/// kernel wrote back any page of the log's chain; the cold open must hold
/// every acknowledged commit (and at most one unacknowledged commit per
/// writer).
fn killed_then_power_loss(log_size: &str, writers: usize) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bank.kv");
    init_bank(&path);
    let mut seed = 0x0DDB_1A5E_5BAD_5EEDu64;
    let mut replayed = 0;
    for round in 0..4 {
        let env = [("MMKV_DURABILITY", "immediate"), ("MMKV_LOG_SIZE", log_size)];
        let mut kids: Vec<Kid> = (0..writers).map(|_| Kid::spawn("writer", &path, &env)).collect();
        let mut acked = 0;
        for w in &mut kids {
            acked = acked.max(w.expect("ACK ", Duration::from_secs(10)).parse().unwrap());
        }
        std::thread::sleep(Duration::from_millis(20 + rng(&mut seed) % 80));
        for w in &mut kids {
            // Still running: no writer crashed (one once died of SIGSEGV
            // here, writing a reused page past its stale mapping).
            assert!(w.child.try_wait().unwrap().is_none(), "round {round}: a writer died on its own");
        }
        kids.iter_mut().for_each(Kid::sigkill);
        for w in &kids {
            while let Ok(l) = w.lines.recv_timeout(Duration::from_secs(10)) {
                if let Some(at) = l.find("ACK ") {
                    acked = acked.max(l[at + 4..].trim().parse().unwrap());
                }
            }
        }
        let mut data = std::fs::read(&path).unwrap();
        let log = std::fs::read(mmkit_kv::log_path(&path)).unwrap();
        let pages = chain_pages(&log);
        replayed += pages.len();
        for p in pages {
            if let Some(page) = data.get_mut(p as usize * 4096..(p as usize + 1) * 4096) {
                page.fill(0);
            }
        }
        let image = dir.path().join(format!("image-{round}"));
        std::fs::write(&image, &data).unwrap();
        std::fs::write(mmkit_kv::log_path(&image), &log).unwrap();
        let (seq, total, entries) = audit(&image);
        let most = acked + writers as u64;
        assert!((acked..=most).contains(&seq), "round {round}: acked {acked}, the image holds {seq}");
        assert_eq!(total, ACCOUNTS * START_BALANCE, "round {round}: money created or lost");
        assert_eq!(entries, seq, "round {round}: a commit is partly missing");
    }
    assert!(replayed > 0, "the writers logged their commits");
}

/// A database that only ever commits Eventual has no redo log file.
#[test]
fn eventual_commits_leave_no_redo_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let db = Db::options().create(true).durability(Durability::Eventual).open(&path).unwrap();
    let mut w = db.write().unwrap();
    w.table("t").unwrap().put("k", "v").unwrap();
    w.commit().unwrap();
    assert!(!mmkit_kv::log_path(&path).exists());
    let mut w = db.write().unwrap();
    w.table("t").unwrap().put("k", "w").unwrap();
    w.commit_with(Durability::Immediate).unwrap();
    assert!(mmkit_kv::log_path(&path).exists(), "the first logged commit creates it");
}

/// Every reader slot left by a reaper that died while freeing it (its
/// token marked as being reaped, top bit set, by a dead process; the dead
/// reader's snapshot still in it): stat lists no reader, writers are not
/// held back by the dead snapshots, and a new reader, finding the table
/// full, has the slots finished and claims one.
#[test]
fn slots_whose_reaper_died_are_no_readers_and_are_freed() {
    use std::os::unix::fs::FileExt;
    const READERS: u64 = 256;
    const READER_SIZE: u64 = 32;
    const HIGH_WATER: u64 = 184;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let db = Db::options().create(true).durability(Durability::Eventual).open(&path).unwrap();
    let commit = || {
        let mut w = db.write().unwrap();
        w.default_table().unwrap().put("k", "v").unwrap();
        w.commit().unwrap()
    };
    let first = commit();
    let mut sleeper = Command::new("sleep").arg("60").spawn().unwrap();
    let dead = mmkit_sync::ProcessToken::of_pid(sleeper.id()).unwrap().to_raw();
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
    let lock = std::fs::OpenOptions::new().write(true).open(mmkit_kv::lock_path(&path)).unwrap();
    let put = |at: u64, v: u64| lock.write_all_at(&v.to_le_bytes(), at).unwrap();
    let forge = |slots: u64| {
        for i in 0..slots {
            put(READERS + i * READER_SIZE, 1 << 63 | dead);
            put(READERS + i * READER_SIZE + 8, first);
        }
        put(HIGH_WATER, slots);
    };

    // A few such slots (the table is not full, so nothing reaps them).
    forge(8);
    let stat = db.stat().unwrap();
    assert_eq!((stat.readers, stat.oldest.is_none()), (0, true), "slots being reaped listed as readers");
    // All of them: the next reader must have them finished.
    forge(mmkit_kv::READER_SLOTS as u64);
    let last = (0..20).fold(first, |_, _| commit());
    let r = db.read().expect("a reader gets a slot once the dead reapers' slots are finished");
    assert_eq!(r.txnid(), last);
    drop(r);
    assert_eq!(db.check().unwrap().leaked_pages, 0);
}
