//! The kv section of `mmkit demo`: a bank in one database file, writer
//! and reader processes, a writer SIGKILLed mid-commit, and an audit
//! computed from the data.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mmkit_kv::{Db, Durability};

use crate::{CliError, CliResult};

const ACCOUNTS: u64 = 32;
const START: u64 = 1000;

/// `mmkit kv demo-writer`.
#[derive(Debug, clap::Args)]
pub struct WriterArgs {
    db: PathBuf,
}

/// `mmkit kv demo-reader`.
#[derive(Debug, clap::Args)]
pub struct ReaderArgs {
    db: PathBuf,
    #[arg(long)]
    millis: u64,
}

fn num(b: Option<&[u8]>) -> u64 {
    b.and_then(|b| b.try_into().ok()).map_or(0, u64::from_le_bytes)
}

/// Transfers money between accounts, one commit per batch (some of 500
/// transfers), logging each commit; prints `ack N` once commit N returned.
pub fn writer(args: WriterArgs) -> CliResult<()> {
    let db = Db::options().durability(Durability::Eventual).open(&args.db)?;
    let mut seed = u64::from(std::process::id()) | 1;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut out = std::io::stdout().lock();
    loop {
        let mut w = db.write()?;
        let seq = num(w.table("meta")?.get("seq")?) + 1;
        let transfers = if next() % 4 == 0 { 500 } else { 1 + next() % 10 };
        let mut bank = w.table("bank")?;
        for _ in 0..transfers {
            let (a, b) = ((next() % ACCOUNTS).to_be_bytes(), (next() % ACCOUNTS).to_be_bytes());
            let ba = num(bank.get(a)?);
            let amount = next() % (ba + 1);
            bank.put(a, (ba - amount).to_le_bytes())?;
            let bb = num(bank.get(b)?);
            bank.put(b, (bb + amount).to_le_bytes())?;
        }
        w.table("meta")?.put("seq", seq.to_le_bytes())?;
        w.table("log")?.put(seq.to_be_bytes(), transfers.to_le_bytes())?;
        w.commit()?;
        writeln!(out, "ack {seq}").and_then(|_| out.flush()).map_err(CliError::Output)?;
    }
}

/// Audits snapshot after snapshot: the money adds up and the log has one
/// entry per commit. Prints `reads N violations M`.
pub fn reader(args: ReaderArgs) -> CliResult<()> {
    let db = Db::options().read_only(true).open(&args.db)?;
    let until = Instant::now() + Duration::from_millis(args.millis);
    let (mut reads, mut bad) = (0u64, 0u64);
    while Instant::now() < until {
        let r = db.read()?;
        let total: u64 =
            r.table("bank")?.iter().map(|e| e.map(|(_, v)| num(Some(v)))).sum::<Result<u64, _>>()?;
        let seq = num(r.table("meta")?.get("seq")?);
        let logged = r.table("log").map(|t| t.len()).unwrap_or(0);
        bad += u64::from(total != ACCOUNTS * START || logged != seq);
        reads += 1;
    }
    println!("reads {reads} violations {bad}");
    Ok(())
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(args: &[&str]) -> CliResult<Proc> {
    let exe = std::env::current_exe().map_err(|e| CliError::io("find own executable", "mmkit", e))?;
    let child = Command::new(&exe)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| CliError::io("spawn", exe, e))?;
    Ok(Proc(child))
}

/// Runs a writer for `ms`, SIGKILLs it, returns its last acknowledged
/// commit.
fn writer_round(db: &str, ms: u64) -> CliResult<u64> {
    let mut w = spawn(&["kv", "demo-writer", db])?;
    let out = w.0.stdout.take().ok_or_else(|| CliError::Other("writer has no stdout".into()))?;
    let lines =
        std::thread::spawn(move || BufReader::new(out).lines().map_while(Result::ok).collect::<Vec<_>>());
    std::thread::sleep(Duration::from_millis(ms));
    // SIGKILL: it is almost always inside a commit.
    let _ = w.0.kill();
    let _ = w.0.wait();
    let acks = lines.join().unwrap_or_default();
    Ok(acks.iter().filter_map(|l| l.strip_prefix("ack ")?.parse().ok()).max().unwrap_or(0))
}

/// The kv section of `mmkit demo`.
pub fn run(dir: &Path) -> CliResult<()> {
    println!("\n== key-value store: writer and reader processes, a writer SIGKILLed mid-commit");
    let path = dir.join("bank.kv");
    let db = Db::options().create(true).open(&path)?;
    {
        let mut w = db.write()?;
        let mut bank = w.table("bank")?;
        for i in 0..ACCOUNTS {
            bank.put(i.to_be_bytes(), START.to_le_bytes())?;
        }
        w.table("meta")?.put("seq", 0u64.to_le_bytes())?;
        w.commit()?;
    }
    let p = path.to_string_lossy().to_string();
    let readers: Vec<Proc> =
        (0..2).map(|_| spawn(&["kv", "demo-reader", &p, "--millis", "1400"])).collect::<Result<_, _>>()?;
    let mut acked = Vec::new();
    for round in 0..3 {
        let t = Instant::now();
        let last = writer_round(&p, 350)?;
        let r = db.read()?;
        let seq = num(r.table("meta")?.get("seq")?);
        println!(
            "writer {}: {last} commits acknowledged, SIGKILLed after {:.0} ms; the database holds {seq} commits",
            round + 1,
            t.elapsed().as_secs_f64() * 1e3
        );
        acked.push((last, seq));
    }
    let mut violations = 0;
    for mut r in readers {
        let out = r.0.stdout.take().ok_or_else(|| CliError::Other("reader has no stdout".into()))?;
        let line = BufReader::new(out).lines().map_while(Result::ok).last().unwrap_or_default();
        let _ = r.0.wait();
        println!("reader process: {line}");
        violations += line.rsplit(' ').next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(1);
    }
    let report = db.check()?;
    let r = db.read()?;
    let total: u64 = r.table("bank")?.iter().map(|e| e.map(|(_, v)| num(Some(v)))).sum::<Result<u64, _>>()?;
    let seq = num(r.table("meta")?.get("seq")?);
    let logged = r.table("log").map(|t| t.len()).unwrap_or(0);
    let lost = acked.iter().filter(|(a, held)| held < a).count();
    println!(
        "audit: money {total} of {} ({}), log {logged} entries for {seq} commits ({}), acknowledged commits lost: {lost}, \
         readers saw partial transactions: {violations}, check: {} pages, {} leaked",
        ACCOUNTS * START,
        if total == ACCOUNTS * START { "ok" } else { "WRONG" },
        if logged == seq { "ok" } else { "WRONG" },
        report.pages,
        report.leaked_pages
    );
    if total != ACCOUNTS * START || logged != seq || lost > 0 || violations > 0 || report.leaked_pages > 0 {
        return Err(CliError::Other("kv demo audit failed".into()));
    }
    Ok(())
}
