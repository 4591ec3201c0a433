//! `mmkit queue tail` and `mmkit queue check` when producers die: tail
//! without --follow prints everything committed before it started, passing
//! dead producers' claims and naming a live one that does not commit; check
//! tells dead claims from live ones (exit 3 for dead ones), and --repair
//! pads them. Real processes: `mmkit queue append` SIGKILLed mid-stream,
//! and this test binary re-run as a child holding a claim.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

mod common;
use common::{mmkit, run, s};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs and requires exit status `code`; returns (stdout, stderr).
fn status(args: &[&str], code: i32) -> (String, String) {
    let out = run(args, b"");
    let (o, e) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(code), "{args:?}: stdout {o} stderr {e}");
    if code != 0 {
        assert_eq!(e.trim_end().lines().count(), 1, "{args:?}: not one line: {e:?}");
    }
    (o, e)
}

fn append(q: &Path, lines: &str) {
    let mut c = mmkit().args(["queue", "append", s(q)]).stdin(Stdio::piped()).spawn().unwrap();
    c.stdin.take().unwrap().write_all(lines.as_bytes()).unwrap();
    assert!(c.wait().unwrap().success());
}

/// A child process killed when dropped.
struct Kid(Child);

impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Entry point of the child role: claims a message in the queue and
/// holds the claim until killed.
#[test]
fn child_entry() {
    let Ok(dir) = std::env::var("MMKIT_CLAIM_HOLDER") else { return };
    let q = mmkit_queue::Queue::open(dir).unwrap();
    let mut p = q.producer().unwrap();
    let mut c = p.claim(32).unwrap();
    c[..4].copy_from_slice(b"torn");
    println!("claimed {}", c.index());
    std::io::stdout().flush().unwrap();
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// A child holding a claim in `q`; returns it and the claimed index.
fn claim_holder(q: &Path) -> (Kid, u64) {
    let mut kid = Kid(std::process::Command::new(std::env::current_exe().unwrap())
        .args(["child_entry", "--exact", "--nocapture", "--test-threads=1"])
        .env("MMKIT_CLAIM_HOLDER", q)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap());
    let mut out = BufReader::new(kid.0.stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "the claim holder ended");
        if let Some(v) = line.trim().split("claimed ").nth(1) {
            return (kid, v.parse().unwrap());
        }
    }
}

#[test]
fn tail_and_check_tell_live_claims_from_dead_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let q = tmp.path().join("q");
    status(&["queue", "create", s(&q), "--segment-size", "1048576"], 0);
    append(&q, "a\nb\n");
    let (holder, claimed) = claim_holder(&q);
    append(&q, "c\n");
    let pid = holder.0.id().to_string();

    // A live producer's claim: tail waits --claim-timeout, then names it.
    let (out, err) = status(&["queue", "tail", s(&q), "--claim-timeout", "0.3"], 1);
    assert_eq!(out, "a\nb\n");
    assert!(err.contains(&claimed.to_string()) && err.contains(&pid), "{err}");
    // check: pending, not abandoned; the queue is clean.
    let (out, _) = status(&["queue", "check", s(&q)], 0);
    assert!(out.contains("pending: producer alive") && out.contains(&pid), "{out}");

    // Dead: check reports it as abandoned and recoverable, exit 3.
    drop(holder);
    let (out, err) = status(&["queue", "check", s(&q)], 3);
    assert!(out.contains(&format!("index {claimed}")) && out.contains("recoverable"), "{out}");
    assert!(out.contains(&pid), "the dead producer's pid is named: {out}");
    assert!(err.contains("--repair"), "{err}");
    let v: serde_json::Value =
        serde_json::from_slice(&run(&["queue", "check", s(&q), "--json"], b"").stdout).unwrap();
    assert_eq!((v["clean"].as_bool(), v["dead"].as_u64()), (Some(false), Some(1)), "{v}");
    assert_eq!(v["claims"][0]["first"].as_u64(), Some(claimed));
    assert_eq!(v["claims"][0]["alive"].as_bool(), Some(false));
    // tail without --follow passes it and prints everything, exit 0.
    let (out, _) = status(&["queue", "tail", s(&q)], 0);
    assert_eq!(out, "a\nb\nc\n");
    // Readers recovered it on the way: clean now.
    let (out, _) = status(&["queue", "check", s(&q)], 0);
    assert!(out.contains("1 abandoned claims"), "{out}");

    // --repair recovers without any reader.
    let (holder, second) = claim_holder(&q);
    append(&q, "d\n");
    drop(holder);
    status(&["queue", "check", s(&q)], 3);
    let (out, _) = status(&["queue", "check", s(&q), "--repair"], 0);
    assert!(out.contains(&format!("index {second}")) && out.contains("repaired"), "{out}");
    let (out, _) = status(&["queue", "check", s(&q)], 0);
    assert!(out.contains("2 abandoned claims") && !out.contains("claim:"), "{out}");
    assert_eq!(status(&["queue", "tail", s(&q)], 0).0, "a\nb\nc\nd\n");
}

#[test]
fn tail_prints_every_acknowledged_line_after_appenders_are_killed_mid_stream() {
    let tmp = tempfile::tempdir().unwrap();
    let q = tmp.path().join("q");
    status(&["queue", "create", s(&q), "--segment-size", "4194304"], 0);
    // Three appenders fed through pipes, printing each committed index.
    let mut kids: Vec<Kid> = (0..3)
        .map(|_| {
            Kid(mmkit()
                .args(["queue", "append", s(&q), "--print-index"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap())
        })
        .collect();
    let mut feeders = Vec::new();
    let mut counters = Vec::new();
    for (k, kid) in kids.iter_mut().enumerate() {
        let mut input = kid.0.stdin.take().unwrap();
        feeders.push(std::thread::spawn(move || {
            for chunk in 0.. {
                let lines: String = (0..2000).map(|j| format!("{k}-{}\n", chunk * 2000 + j)).collect();
                if input.write_all(lines.as_bytes()).is_err() {
                    return;
                }
            }
        }));
        let out = BufReader::new(kid.0.stdout.take().unwrap());
        counters.push(std::thread::spawn(move || out.lines().map_while(Result::ok).count()));
    }
    for (k, kid) in kids.iter_mut().enumerate() {
        std::thread::sleep(Duration::from_millis(40 + 37 * k as u64));
        kid.0.kill().unwrap();
        kid.0.wait().unwrap();
    }
    for f in feeders {
        f.join().unwrap();
    }
    let acked: Vec<usize> = counters.into_iter().map(|c| c.join().unwrap()).collect();
    assert!(acked.iter().sum::<usize>() > 0, "nothing was acknowledged");
    append(&q, "final\n");

    let (out, _) = status(&["queue", "tail", s(&q), "--from-start"], 0);
    let mut next: HashMap<usize, usize> = HashMap::new();
    let mut lines = out.lines().peekable();
    while let Some(line) = lines.next() {
        if lines.peek().is_none() {
            assert_eq!(line, "final");
            break;
        }
        let (k, i) = line.split_once('-').unwrap();
        let (k, i): (usize, usize) = (k.parse().unwrap(), i.parse().unwrap());
        let want = next.entry(k).or_insert(0);
        assert_eq!(i, *want, "appender {k}: out of order, duplicated or with a gap");
        *want += 1;
    }
    for (k, &n) in acked.iter().enumerate() {
        assert!(next.get(&k).copied().unwrap_or(0) >= n, "appender {k}: acknowledged lines missing");
    }
    status(&["queue", "check", s(&q), "--repair"], 0);
    status(&["queue", "check", s(&q)], 0);
}

/// A producer that sealed a segment and moved the active segment on, then
/// died before creating the file: `stat`, `tail` (from either end) and
/// `check` all get past the missing segment, and the next append creates it.
#[test]
fn commands_get_past_a_producer_dead_before_creating_the_next_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let q = tmp.path().join("q");
    status(&["queue", "create", s(&q), "--segment-size", "65536"], 0);
    append(&q, "a\nb\n");
    mmkit_queue::fuzzing::seal_first_segment_and_move_on(&q).unwrap();
    let (stat, _) = status(&["queue", "stat", s(&q), "--json"], 0);
    let stat: serde_json::Value = serde_json::from_str(&stat).unwrap();
    assert_eq!(stat["end_index"], 1u64 << 32, "{stat}");
    assert_eq!(status(&["queue", "tail", s(&q)], 0).0, "a\nb\n");
    assert_eq!(status(&["queue", "tail", s(&q), "--from-end"], 0).0, "");
    status(&["queue", "check", s(&q)], 0);
    append(&q, "c\n");
    assert_eq!(status(&["queue", "tail", s(&q)], 0).0, "a\nb\nc\n");
}
