//! `mmkit queue ...` end to end, running the real binary.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::Stdio;

mod common;
use common::{fails, mmkit, ok, run, s};

fn new_queue(tmp: &Path) -> PathBuf {
    let dir = tmp.join("q");
    ok(&["queue", "create", dir.to_str().unwrap(), "--segment-size", "1048576"], b"");
    dir
}

#[test]
fn create_append_tail_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let q = new_queue(tmp.path());
    ok(&["queue", "append", s(&q)], b"alpha\nbeta\n\ngamma without newline");
    assert_eq!(ok(&["queue", "tail", s(&q)], b""), "alpha\nbeta\n\ngamma without newline\n");
    assert_eq!(ok(&["queue", "tail", s(&q), "--from-end"], b""), "");

    let json = ok(&["queue", "tail", s(&q), "--json"], b"");
    let rows: Vec<serde_json::Value> = json.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[1]["payload"], "beta");
    assert!(rows[0]["timestamp"].as_u64().unwrap() > 0);
    let second = rows[1]["index"].as_u64().unwrap().to_string();
    assert_eq!(ok(&["queue", "tail", s(&q), "--from", &second], b""), "beta\n\ngamma without newline\n");

    // --file takes the lines from a file.
    let f = tmp.path().join("lines.txt");
    std::fs::write(&f, "delta\nepsilon\n").unwrap();
    ok(&["queue", "append", s(&q), "--file", s(&f)], b"");
    assert!(ok(&["queue", "tail", s(&q)], b"").ends_with("gamma without newline\ndelta\nepsilon\n"));
}

#[test]
fn print_index_prints_each_committed_index() {
    let tmp = tempfile::tempdir().unwrap();
    let q = new_queue(tmp.path());
    let printed = ok(&["queue", "append", s(&q), "--print-index"], b"one\ntwo\nthree\n");
    let indices: Vec<u64> = printed.lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(indices.len(), 3);
    assert!(indices.windows(2).all(|w| w[0] < w[1]));
    let json = ok(&["queue", "tail", s(&q), "--json"], b"");
    let stored: Vec<u64> = json
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["index"].as_u64().unwrap())
        .collect();
    assert_eq!(stored, indices);
}

#[test]
fn many_lines_through_a_pipe_across_segments() {
    let tmp = tempfile::tempdir().unwrap();
    let q = new_queue(tmp.path());
    let n = 200_000;
    let input: String = (1..=n).map(|i| format!("{i}\n")).collect();
    ok(&["queue", "append", s(&q)], input.as_bytes());
    let out = ok(&["queue", "tail", s(&q)], b"");
    assert_eq!(out, input);
    let stat: serde_json::Value =
        serde_json::from_str(&ok(&["queue", "stat", s(&q), "--json"], b"")).unwrap();
    assert!(stat["segments"].as_array().unwrap().len() > 1, "1 MiB segments should have rolled over");
}

#[test]
fn follow_cursor_resumes_after_kill_9() {
    let tmp = tempfile::tempdir().unwrap();
    let q = new_queue(tmp.path());
    let lines = |r: std::ops::RangeInclusive<u32>| r.map(|i| format!("m{i}\n")).collect::<String>();
    ok(&["queue", "append", s(&q)], lines(1..=5000).as_bytes());

    let mut follower = mmkit()
        .args(["queue", "tail", s(&q), "--cursor", "c", "--follow"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(follower.stdout.take().unwrap());
    let mut first = Vec::new();
    for _ in 0..5000 {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        first.push(line.trim_end().to_string());
    }
    // Give it a moment idle (it commits when idle), then SIGKILL it.
    std::thread::sleep(std::time::Duration::from_millis(300));
    follower.kill().unwrap();
    follower.wait().unwrap();
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    first.extend(rest.lines().map(str::to_string));
    assert_eq!(first, (1..=5000).map(|i| format!("m{i}")).collect::<Vec<_>>());

    ok(&["queue", "append", s(&q)], lines(5001..=8000).as_bytes());
    let second = ok(&["queue", "tail", s(&q), "--cursor", "c"], b"");
    let second: Vec<u32> = second.lines().map(|l| l[1..].parse().unwrap()).collect();
    // At-least-once: resumes at or before 5001, and in order to the end.
    assert!(second.first().is_some_and(|&f| f <= 5001), "{:?}", second.first());
    assert_eq!(second.last(), Some(&8000));
    assert!(second.windows(2).all(|w| w[1] == w[0] + 1));
    // Committed: a third run has nothing new.
    assert_eq!(ok(&["queue", "tail", s(&q), "--cursor", "c"], b""), "");
}

#[test]
fn stat_shows_segments_range_and_cursor_lag() {
    let tmp = tempfile::tempdir().unwrap();
    let q = new_queue(tmp.path());
    ok(&["queue", "append", s(&q)], b"a\nb\nc\n");
    ok(&["queue", "tail", s(&q), "--cursor", "reader1"], b"");
    ok(&["queue", "append", s(&q)], b"d\ne\n");
    let v: serde_json::Value = serde_json::from_str(&ok(&["queue", "stat", s(&q), "--json"], b"")).unwrap();
    let cursors = v["cursors"].as_array().unwrap();
    assert_eq!(cursors.len(), 1);
    assert_eq!(cursors[0]["name"], "reader1");
    assert_eq!(cursors[0]["lag"], 2);
    assert!(v["end_index"].as_u64().unwrap() > v["first_index"].as_u64().unwrap());
    let text = ok(&["queue", "stat", s(&q)], b"");
    assert!(text.contains("reader1") && text.contains("segments"), "{text}");
}

#[test]
fn check_reports_a_flipped_byte_and_exits_non_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let q = new_queue(tmp.path());
    ok(&["queue", "append", s(&q)], b"first\nthe-needle-payload\nlast\n");
    assert!(ok(&["queue", "check", s(&q)], b"").contains("3 messages"));

    let seg = std::fs::read_dir(&q)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            let bytes = std::fs::read(p).unwrap();
            bytes.windows(18).any(|w| w == b"the-needle-payload")
        })
        .expect("a segment holding the payload");
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = bytes.windows(18).position(|w| w == b"the-needle-payload").unwrap();
    bytes[at + 4] ^= 0x01;
    std::fs::write(&seg, &bytes).unwrap();

    let err = fails(&["queue", "check", s(&q)]);
    assert!(err.contains("corrupt"), "{err}");
    let out = run(&["queue", "check", s(&q), "--json"], b"");
    assert!(!out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["clean"], false);
    assert_eq!(v["corrupt"].as_array().unwrap().len(), 1);
}

#[test]
fn bad_input_gives_one_line_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing");
    assert!(fails(&["queue", "tail", s(&missing)]).contains("no such"));
    assert!(fails(&["queue", "stat", s(&missing)]).contains("no such"));
    assert!(fails(&["queue", "append", s(&missing)]).contains("no such"));

    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    assert!(fails(&["queue", "tail", s(&empty)]).contains("not an mmkit queue"));
    assert!(fails(&["queue", "check", s(&empty)]).contains("not an mmkit queue"));

    let q = new_queue(tmp.path());
    assert!(fails(&["queue", "create", s(&q)]).contains("already"));
    let other = tmp.path().join("q2");
    let created: serde_json::Value = serde_json::from_str(&ok(
        &["queue", "create", s(&other), "--segment-size", "2097152", "--json"],
        b"",
    ))
    .unwrap();
    assert_eq!(created["path"], s(&other));
    assert_eq!(created["segment_size"], 2097152);
    ok(&["queue", "append", s(&q)], b"x\n");
    assert!(fails(&["queue", "tail", s(&q), "--from", "not-a-number"]).contains("--from"));
    assert!(fails(&["queue", "tail", s(&q), "--from", "99999999999"]).contains("99999999999"));
    assert!(fails(&["queue", "create", s(&tmp.path().join("odd")), "--segment-size", "1000"]).len() > 7);
    let missing_file = tmp.path().join("nope.txt");
    assert!(fails(&["queue", "append", s(&q), "--file", s(&missing_file)]).contains("nope.txt"));
}

#[test]
fn every_queue_command_has_help_with_an_example() {
    for cmd in ["create", "append", "tail", "stat", "check", "bench"] {
        let out = ok(&["queue", cmd, "--help"], b"");
        assert!(out.contains("Example:"), "{cmd}: {out}");
    }
}

#[test]
fn quick_bench_reports_json() {
    let out = ok(&["queue", "bench", "--secs", "0.1", "--json"], b"");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r["msgs_per_sec"].as_f64().unwrap() > 0.0));
}

/// The main job: `mmkit demo` runs producer and consumer processes, kills
/// some, and audits the result for real.
#[test]
fn demo_audits_lost_duplicated_torn() {
    let out = mmkit().arg("demo").stdout(Stdio::piped()).stderr(Stdio::piped()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.lines().any(|l| l == "lost 0, duplicated 0, torn 0"), "{text}");
    assert!(text.contains("SIGKILLed producer 1 mid-stream"), "{text}");
    assert!(text.contains("restarted it on its cursor"), "{text}");
    assert!(text.contains("msg/s") && text.contains("p99"), "{text}");
    // The copy methods are compared as the benchmark compares them.
    assert!(
        text.contains("medians of 3 interleaved runs") && text.contains("copy-file-range (default)"),
        "{text}"
    );
    // "lost 0" means something only if the acknowledged messages arrived:
    // producers 0 and 2 append 300000 each before their paced phase.
    let received = |who: &str| -> u64 {
        let line = text.lines().find(|l| l.contains("audit received")).unwrap_or_else(|| panic!("{text}"));
        let after = line.split(&format!("{who} received ")).nth(1).unwrap_or_else(|| panic!("{line}"));
        after.split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
    };
    assert!(received("audit") >= 600_000, "{text}");
    assert!(received("billing") >= 600_000, "{text}");
}
